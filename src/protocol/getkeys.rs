//! Redis' own key finders for the commands whose key specs are flagged `incomplete`.
//!
//! MIGRATE's keys sit at argument 3, or after a `KEYS` keyword whose place depends on the
//! `AUTH`/`AUTH2` options before it; SORT's destination follows its last `STORE`. Key specs
//! cannot express either, so Redis finds them with `migrateGetKeys` / `sortGetKeys`, and an
//! ACL check (`ACL DRYRUN`, every command a restricted user sends) must find the same keys to
//! allow and deny what Redis does. Routing never needs these: it asks the cluster.

use bytes::Bytes;

use super::keyspec::{AclKeys, KEY_READ, KEY_WRITE};

/// The keys with their ACL access of a command Redis finds with its own key finder, or `None`
/// for any other command.
pub fn incomplete_spec_keys(args: &[Bytes]) -> Option<AclKeys> {
    let name = args.first()?;
    if name.eq_ignore_ascii_case(b"migrate") {
        return Some(migrate_keys(args));
    }
    if name.eq_ignore_ascii_case(b"sort") {
        return Some(sort_keys(args));
    }
    None
}

/// `MIGRATE host port key|"" db timeout [COPY] [REPLACE] [AUTH pw] [AUTH2 user pw] [KEYS k…]`:
/// the key at 3, or, when it is empty, every argument after the first `KEYS` past the options
/// (the keys are read and deleted at the source).
fn migrate_keys(args: &[Bytes]) -> AclKeys {
    let access = KEY_READ | KEY_WRITE;
    let mut keys = AclKeys::new();
    if args.len() < 6 {
        return keys;
    }
    if !args[3].is_empty() {
        keys.push((3, access));
        return keys;
    }
    let mut i = 6;
    while i < args.len() {
        let arg = &args[i];
        if arg.eq_ignore_ascii_case(b"auth") {
            i += 1;
        } else if arg.eq_ignore_ascii_case(b"auth2") {
            i += 2;
        } else if arg.eq_ignore_ascii_case(b"keys") {
            keys.extend((i + 1..args.len()).map(|p| (p, access)));
            break;
        }
        i += 1;
    }
    keys
}

/// `SORT key [BY p] [LIMIT o c] [GET p…] [ASC|DESC] [ALPHA] [STORE dest]`: the key (read) and
/// the destination of the last `STORE` (written). Option arguments are skipped so that a
/// pattern named `store` is not taken for the keyword.
fn sort_keys(args: &[Bytes]) -> AclKeys {
    let mut keys = AclKeys::new();
    if args.len() < 2 {
        return keys;
    }
    keys.push((1, KEY_READ));
    let mut store = None;
    let mut i = 2;
    while i < args.len() {
        let arg = &args[i];
        if arg.eq_ignore_ascii_case(b"limit") {
            i += 2;
        } else if arg.eq_ignore_ascii_case(b"get") || arg.eq_ignore_ascii_case(b"by") {
            i += 1;
        } else if arg.eq_ignore_ascii_case(b"store") && i + 1 < args.len() {
            store = Some(i + 1);
            i += 1;
        }
        i += 1;
    }
    if let Some(at) = store {
        keys.push((at, KEY_WRITE));
    }
    keys
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::request::words as args;

    /// `""` in `line` stands for an empty argument.
    fn positions(line: &str) -> Vec<(usize, u8)> {
        let args: Vec<Bytes> = args(line)
            .into_iter()
            .map(|a| if &a[..] == b"\"\"" { Bytes::new() } else { a })
            .collect();
        incomplete_spec_keys(&args)
            .map(|k| k.into_vec())
            .unwrap_or_default()
    }

    const RW: u8 = KEY_READ | KEY_WRITE;

    #[test]
    fn migrate_single_key_and_keys_list() {
        assert_eq!(positions("MIGRATE h p k 0 500"), vec![(3, RW)]);
        assert_eq!(
            positions("MIGRATE h p \"\" 0 500 KEYS a b"),
            vec![(7, RW), (8, RW)]
        );
        assert_eq!(
            positions("MIGRATE h p \"\" 0 5 AUTH KEYS KEYS a"),
            vec![(9, RW)]
        );
        assert_eq!(
            positions("MIGRATE h p \"\" 0 5 AUTH2 KEYS 1 KEYS a"),
            vec![(10, RW)]
        );
        assert_eq!(
            positions("MIGRATE h p \"\" 0 5 AUTH2 USER KEYS KEYS a"),
            vec![(10, RW)]
        );
        assert_eq!(positions("MIGRATE h p"), vec![]);
    }

    #[test]
    fn sort_store_is_the_last_one() {
        assert_eq!(positions("SORT k"), vec![(1, KEY_READ)]);
        assert_eq!(
            positions("SORT k STORE a STORE b"),
            vec![(1, KEY_READ), (5, KEY_WRITE)]
        );
        assert_eq!(positions("SORT k BY store GET store"), vec![(1, KEY_READ)]);
        assert_eq!(positions("GET k"), vec![]);
    }
}
