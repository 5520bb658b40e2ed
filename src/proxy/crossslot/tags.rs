//! A hash tag for every slot: temporary keys of a cross-slot command are named
//! `{tag}…` so that they land in the slot the command runs in.

use crate::cluster::slot::SLOTS;
use std::sync::OnceLock;

const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";

/// The shortest tag (over `[a-zA-Z0-9]`, 1 to 4 characters) of each slot.
fn table() -> &'static [String] {
    static TABLE: OnceLock<Vec<String>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut tags = vec![String::new(); SLOTS as usize];
        let mut missing = SLOTS as usize;
        let mut word = Vec::with_capacity(4);
        'lengths: for len in 1..=4usize {
            let total = ALPHABET.len().pow(len as u32);
            for n in 0..total {
                word.clear();
                let mut rest = n;
                for _ in 0..len {
                    word.push(ALPHABET[rest % ALPHABET.len()]);
                    rest /= ALPHABET.len();
                }
                let slot = crc16::State::<crc16::XMODEM>::calculate(&word) % SLOTS;
                let tag = &mut tags[slot as usize];
                if tag.is_empty() {
                    *tag = String::from_utf8_lossy(&word).into_owned();
                    missing -= 1;
                    if missing == 0 {
                        break 'lengths;
                    }
                }
            }
        }
        tags
    })
}

/// A string whose `{…}` hash tag puts a key in `slot`.
pub fn tag(slot: u16) -> &'static str {
    &table()[usize::from(slot % SLOTS)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::key_slot;

    #[test]
    fn every_slot_has_a_short_tag() {
        for slot in 0..SLOTS {
            let tag = tag(slot);
            assert!(!tag.is_empty() && tag.len() <= 4, "slot {slot}: {tag:?}");
            assert_eq!(key_slot(format!("{{{tag}}}x").as_bytes()), slot);
        }
    }
}
