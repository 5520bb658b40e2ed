//! Slot lists as operators write them: `"0-99,200,300-310"`.

use crate::cluster::SLOT_COUNT;

/// Why a slot list is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RangeError {
    /// `"1,,2"`.
    #[error("empty item in slot list {0:?}")]
    EmptyItem(String),
    /// `"9-3"`.
    #[error("slot range {0:?} runs backwards")]
    Backwards(String),
    /// Not a slot number.
    #[error("slot {0:?} is out of range (0-16383)")]
    OutOfRange(String),
}

/// Parses a slot list; every slot must be in `0..16384`. Duplicates are removed.
pub fn parse(text: &str) -> Result<Vec<u16>, RangeError> {
    let mut slots = Vec::new();
    for part in text.split(',').map(str::trim) {
        if part.is_empty() {
            return Err(RangeError::EmptyItem(text.into()));
        }
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (one(a.trim())?, one(b.trim())?),
            None => (one(part)?, one(part)?),
        };
        if a > b {
            return Err(RangeError::Backwards(part.into()));
        }
        slots.extend(a..=b);
    }
    slots.sort_unstable();
    slots.dedup();
    Ok(slots)
}

fn one(s: &str) -> Result<u16, RangeError> {
    s.parse::<u32>()
        .ok()
        .filter(|&v| (v as usize) < SLOT_COUNT)
        .map(|v| v as u16)
        .ok_or_else(|| RangeError::OutOfRange(s.into()))
}

/// Formats sorted slots compactly: `[0,1,2,5]` → `"0-2,5"`.
pub fn format(slots: &[u16]) -> String {
    let mut sorted = slots.to_vec();
    sorted.sort_unstable();
    let mut out = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i];
        let mut end = start;
        while i + 1 < sorted.len() && sorted[i + 1] == end + 1 {
            i += 1;
            end = sorted[i];
        }
        out.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        i += 1;
    }
    out.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let slots = parse("5, 0-2,2,16383").unwrap();
        assert_eq!(slots, vec![0, 1, 2, 5, 16383]);
        assert_eq!(format(&slots), "0-2,5,16383");
    }

    #[test]
    fn rejects_bad_lists() {
        assert!(parse("16384").is_err());
        assert!(parse("5-1").is_err());
        assert!(parse("a").is_err());
        assert!(parse("1,,2").is_err());
        assert!(parse("-1").is_err());
    }
}
