//! Keys for tests: in one slot, spread over slots, written and checked in bulk.

/// Keys `prefix:0..n` that all hash to one slot (hash tag), and that slot.
pub fn keys_in_one_slot(tag: &str, n: usize) -> (u16, Vec<String>) {
    let slot = slotproxy::cluster::key_slot(tag.as_bytes());
    (slot, (0..n).map(|i| format!("{{{tag}}}:{i}")).collect())
}

/// Keys (no hash tags) spread over `slots`, `per_slot` in each.
pub fn keys_for_slots(slots: std::ops::RangeInclusive<u16>, per_slot: usize) -> Vec<String> {
    keys_for_slots_named("mk", slots, per_slot)
}

/// Keys `prefix:N` (no hash tags) spread over `slots`, `per_slot` in each.
pub fn keys_for_slots_named(
    prefix: &str,
    slots: std::ops::RangeInclusive<u16>,
    per_slot: usize,
) -> Vec<String> {
    let mut counts = std::collections::HashMap::<u16, usize>::new();
    let mut keys = Vec::new();
    let want = (slots.end() - slots.start() + 1) as usize * per_slot;
    let mut n = 0u64;
    while keys.len() < want && n < 50_000_000 {
        let key = format!("{prefix}:{n}");
        let slot = slotproxy::cluster::key_slot(key.as_bytes());
        if slots.contains(&slot) {
            let c = counts.entry(slot).or_default();
            if *c < per_slot {
                *c += 1;
                keys.push(key);
            }
        }
        n += 1;
    }
    keys
}

/// Writes `key → "val-" + key` for every key, pipelined.
pub fn write_keys(con: &mut redis::Connection, keys: &[String]) {
    for chunk in keys.chunks(500) {
        let mut pipe = redis::pipe();
        for k in chunk {
            pipe.cmd("SET").arg(k).arg(format!("val-{k}")).ignore();
        }
        pipe.query::<()>(con).expect("write keys");
    }
}

/// Asserts every key reads back as written by [`write_keys`].
pub fn check_keys(con: &mut redis::Connection, keys: &[String]) {
    for chunk in keys.chunks(500) {
        let values: Vec<Option<String>> = redis::cmd("MGET").arg(chunk).query(con).expect("MGET");
        for (k, v) in chunk.iter().zip(values) {
            assert_eq!(v, Some(format!("val-{k}")), "key {k}");
        }
    }
}
