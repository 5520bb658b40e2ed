//! Where a command's keys are, as the cluster itself describes it.
//!
//! Redis 7 publishes *key specs* in the `COMMAND` reply: where to start looking (an argument
//! index or a keyword such as `STREAMS`) and how to find the keys from there (a range, or a
//! count argument like EVAL's `numkeys`). Interpreting them the way Redis does (`db.c`,
//! `getKeysUsingKeySpecs`) routes every command the cluster knows, including ones this proxy
//! was never told about. Where a spec is incomplete the caller asks the cluster with
//! `COMMAND GETKEYS`; it never guesses.

use bytes::Bytes;
use redis_protocol::resp2::types::{BytesFrame, Resp2Frame};

/// Where key search starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BeginSearch {
    /// At a fixed argument index.
    Index(usize),
    /// After a keyword, searched from `startfrom` (negative: from the end backwards).
    Keyword {
        /// The keyword, e.g. `STREAMS`.
        keyword: Vec<u8>,
        /// Where the search starts.
        startfrom: i64,
    },
    /// Not describable; ask the cluster.
    Unknown,
}

/// How keys are found from the start position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FindKeys {
    /// A run of keys: `lastkey` relative to the start (negative: from the end), every
    /// `keystep`-th argument, `limit` dividing the remaining arguments.
    Range {
        /// Last key index relative to the start, or counted from the end if negative.
        lastkey: i64,
        /// Distance between keys.
        keystep: usize,
        /// If non-zero, only 1/limit of the remaining arguments are keys.
        limit: i64,
    },
    /// The number of keys is given by an argument.
    KeyNum {
        /// Index of the count argument, relative to the start.
        keynumidx: usize,
        /// Index of the first key, relative to the start.
        firstkey: usize,
        /// Distance between keys.
        keystep: usize,
    },
    /// Not describable; ask the cluster.
    Unknown,
}

/// One key spec of a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySpec {
    /// Search start.
    pub begin: BeginSearch,
    /// Key finding rule.
    pub find: FindKeys,
    /// Redis says this spec may miss keys (e.g. SORT … STORE).
    pub incomplete: bool,
    /// Flagged `not_key`: found like a key (and routed by it) but not a key for ACLs.
    pub not_key: bool,
    /// What ACLs require of the key: [`KEY_READ`], [`KEY_WRITE`] or both (neither: any
    /// pattern will do, as for EXISTS).
    pub access: u8,
    /// Flagged `variable_flags`: the access depends on the arguments (SET … GET, BITFIELD).
    pub variable: bool,
}

/// The answer to "where are the keys of this call?".
#[derive(Debug, PartialEq, Eq)]
pub enum KeyPositions {
    /// Argument indices of the keys, in order (may be empty).
    Known(Vec<usize>),
    /// The specs cannot tell; ask the cluster with `COMMAND GETKEYS`.
    AskCluster,
}

/// Legacy key description (first, last, step), used by servers older than Redis 7.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LegacyKeys {
    /// First key index (0: no keys).
    pub first: i64,
    /// Last key index (negative: from the end).
    pub last: i64,
    /// Step between keys.
    pub step: i64,
}

/// Computes key positions from specs (Redis 7) or the legacy triple.
pub fn key_positions(
    specs: &[KeySpec],
    legacy: LegacyKeys,
    movable: bool,
    args: &[Bytes],
) -> KeyPositions {
    if specs.is_empty() {
        if movable {
            return KeyPositions::AskCluster;
        }
        return KeyPositions::Known(legacy_positions(legacy, args.len()));
    }
    let mut keys = Vec::new();
    for spec in specs {
        match spec_positions(spec, args) {
            Some(found) => keys.extend(found.keys),
            None => return KeyPositions::AskCluster,
        }
    }
    KeyPositions::Known(keys)
}

/// ACL key access: the key is read (`access`).
pub const KEY_READ: u8 = 1;
/// ACL key access: the key is written (`insert`, `delete`, `update`).
pub const KEY_WRITE: u8 = 2;

/// Key positions with their ACL access, inline for the usual few keys (no allocation).
pub type AclKeys = smallvec::SmallVec<[(usize, u8); 4]>;

/// The keys of a call with the access each spec declares, as ACL checks need them (specs
/// flagged `not_key`, such as a shard channel, are left out); `None` where the specs cannot
/// tell. Without specs (servers before Redis 7) every key counts as read and written.
pub fn acl_keys(
    specs: &[KeySpec],
    legacy: LegacyKeys,
    movable: bool,
    args: &[Bytes],
) -> Option<AclKeys> {
    if specs.is_empty() {
        if movable {
            return None;
        }
        let all = KEY_READ | KEY_WRITE;
        return Some(
            legacy_positions(legacy, args.len())
                .into_iter()
                .map(|p| (p, all))
                .collect(),
        );
    }
    let mut keys = AclKeys::new();
    for spec in specs.iter().filter(|s| !s.not_key) {
        let access = match spec.variable {
            true => variable_access(args).unwrap_or(spec.access),
            false => spec.access,
        };
        let found = spec_positions(spec, args)?;
        if !found.in_bounds {
            // Redis' getKeysUsingKeySpecs: a syntax error yields no keys at all (the node
            // rejects the call; ACL has nothing to check).
            return Some(AclKeys::new());
        }
        keys.extend(found.keys.into_iter().map(|p| (p, access)));
    }
    Some(keys)
}

/// The access of the commands whose key flags depend on their arguments (Redis 7.0's
/// `setGetKeys` and `bitfieldGetKeys`): SET writes only, unless it has GET; BITFIELD only
/// reads when all its operations are GETs.
fn variable_access(args: &[Bytes]) -> Option<u8> {
    let name = args.first()?;
    if name.eq_ignore_ascii_case(b"set") {
        let get = args.iter().skip(3).any(|a| a.eq_ignore_ascii_case(b"get"));
        return Some(if get { KEY_READ | KEY_WRITE } else { KEY_WRITE });
    }
    if name.eq_ignore_ascii_case(b"bitfield") {
        let mut i = 2;
        let mut read_only = true;
        while i < args.len() {
            let op = &args[i];
            if op.eq_ignore_ascii_case(b"get") {
                i += 3;
            } else if op.eq_ignore_ascii_case(b"set") || op.eq_ignore_ascii_case(b"incrby") {
                read_only = false;
                i += 4;
            } else {
                i += 2;
            }
        }
        return Some(if read_only {
            KEY_READ
        } else {
            KEY_READ | KEY_WRITE
        });
    }
    None
}

/// The keys one spec finds.
struct SpecKeys {
    /// Argument indices, those inside the call only.
    keys: Vec<usize>,
    /// False where the spec points outside the call or its key count is invalid: a syntax
    /// error the node will reject.
    in_bounds: bool,
}

/// The argument indices one spec finds; `None`: the spec cannot tell.
fn spec_positions(spec: &KeySpec, args: &[Bytes]) -> Option<SpecKeys> {
    let argc = args.len() as i64;
    let mut keys = Vec::new();
    if spec.incomplete {
        return None;
    }
    let none = |in_bounds| {
        Some(SpecKeys {
            keys: Vec::new(),
            in_bounds,
        })
    };
    let first = match &spec.begin {
        BeginSearch::Index(i) => *i as i64,
        BeginSearch::Keyword { keyword, startfrom } => {
            match find_keyword(args, keyword, *startfrom) {
                Some(i) => i + 1,
                None => return none(true),
            }
        }
        BeginSearch::Unknown => return None,
    };
    let (first, last, step) = match &spec.find {
        FindKeys::Range {
            lastkey,
            keystep,
            limit,
        } => {
            let last = if *lastkey >= 0 {
                first + lastkey
            } else if *limit <= 1 {
                argc + lastkey
            } else {
                first + ((argc - first) / limit + lastkey)
            };
            (first, last, *keystep as i64)
        }
        FindKeys::KeyNum {
            keynumidx,
            firstkey,
            keystep,
        } => {
            let at = first + *keynumidx as i64;
            let numkeys = args
                .get(at as usize)
                .and_then(|a| super::parse_i64(a))
                .filter(|&n| n >= 0);
            // An invalid count: the node will reject the command; route it keyless.
            let Some(numkeys) = numkeys else {
                return none(false);
            };
            let first = first + *firstkey as i64;
            (first, first + numkeys - 1, *keystep as i64)
        }
        FindKeys::Unknown => return None,
    };
    let in_bounds = last < argc && first < argc && last >= first;
    let mut i = first;
    while i <= last && step > 0 {
        if i < 1 || i >= argc {
            break;
        }
        keys.push(i as usize);
        i += step;
    }
    Some(SpecKeys { keys, in_bounds })
}

fn legacy_positions(legacy: LegacyKeys, argc: usize) -> Vec<usize> {
    if legacy.first <= 0 || legacy.step <= 0 {
        return Vec::new();
    }
    let argc = argc as i64;
    let last = if legacy.last < 0 {
        argc + legacy.last
    } else {
        legacy.last
    };
    let mut out = Vec::new();
    let mut i = legacy.first;
    while i <= last && i < argc {
        out.push(i as usize);
        i += legacy.step;
    }
    out
}

/// Redis' keyword search: from `startfrom` towards the end (or the start, if negative), not
/// looking at the end index itself.
fn find_keyword(args: &[Bytes], keyword: &[u8], startfrom: i64) -> Option<i64> {
    let argc = args.len() as i64;
    let start = if startfrom > 0 {
        startfrom
    } else {
        argc + startfrom
    };
    let end = if startfrom > 0 { argc - 1 } else { 1 };
    let mut i = start;
    while i != end {
        if i >= argc || i < 1 {
            break;
        }
        if args[i as usize].eq_ignore_ascii_case(keyword) {
            return Some(i);
        }
        i += if start <= end { 1 } else { -1 };
    }
    None
}

/// Reads the key specs element of one `COMMAND` entry.
pub fn parse_specs(frame: &BytesFrame) -> Vec<KeySpec> {
    let BytesFrame::Array(specs) = frame else {
        return Vec::new();
    };
    specs.iter().map(parse_spec).collect()
}

fn parse_spec(frame: &BytesFrame) -> KeySpec {
    let fields = FieldMap::new(frame);
    let flags: Vec<String> = match fields.get("flags") {
        Some(BytesFrame::Array(flags)) => flags
            .iter()
            .filter_map(|f| f.as_str())
            .map(|f| f.to_ascii_lowercase())
            .collect(),
        _ => Vec::new(),
    };
    let flag = |name: &str| flags.iter().any(|f| f == name);
    let incomplete = flag("incomplete");
    let mut access = 0;
    if flag("access") {
        access |= KEY_READ;
    }
    if flag("insert") || flag("delete") || flag("update") {
        access |= KEY_WRITE;
    }
    let begin = fields.get("begin_search").map(FieldMap::new);
    let begin = match begin
        .as_ref()
        .map(|b| (b.str("type"), b.get("spec").map(FieldMap::new)))
    {
        Some((Some("index"), Some(spec))) => match spec.int("index") {
            Some(i) if i >= 0 => BeginSearch::Index(i as usize),
            _ => BeginSearch::Unknown,
        },
        Some((Some("keyword"), Some(spec))) => match (spec.str("keyword"), spec.int("startfrom")) {
            (Some(k), Some(s)) => BeginSearch::Keyword {
                keyword: k.as_bytes().to_vec(),
                startfrom: s,
            },
            _ => BeginSearch::Unknown,
        },
        _ => BeginSearch::Unknown,
    };
    let find = fields.get("find_keys").map(FieldMap::new);
    let find = match find
        .as_ref()
        .map(|f| (f.str("type"), f.get("spec").map(FieldMap::new)))
    {
        Some((Some("range"), Some(spec))) => {
            match (spec.int("lastkey"), spec.int("keystep"), spec.int("limit")) {
                (Some(lastkey), Some(keystep), Some(limit)) if keystep > 0 => FindKeys::Range {
                    lastkey,
                    keystep: keystep as usize,
                    limit,
                },
                _ => FindKeys::Unknown,
            }
        }
        Some((Some("keynum"), Some(spec))) => {
            match (
                spec.int("keynumidx"),
                spec.int("firstkey"),
                spec.int("keystep"),
            ) {
                (Some(a), Some(b), Some(c)) if a >= 0 && b >= 0 && c > 0 => FindKeys::KeyNum {
                    keynumidx: a as usize,
                    firstkey: b as usize,
                    keystep: c as usize,
                },
                _ => FindKeys::Unknown,
            }
        }
        _ => FindKeys::Unknown,
    };
    KeySpec {
        begin,
        find,
        incomplete,
        not_key: flag("not_key"),
        access,
        variable: flag("variable_flags"),
    }
}

/// A flat RESP2 `[name, value, name, value, …]` array read as a map.
pub struct FieldMap<'a>(Vec<(&'a str, &'a BytesFrame)>);

impl<'a> FieldMap<'a> {
    /// Reads the pairs of `frame` (empty if it is not an array).
    pub fn new(frame: &'a BytesFrame) -> Self {
        let mut pairs = Vec::new();
        if let BytesFrame::Array(items) = frame {
            for pair in items.chunks(2) {
                if let [k, v] = pair {
                    if let Some(k) = k.as_str() {
                        pairs.push((k, v));
                    }
                }
            }
        }
        FieldMap(pairs)
    }

    /// The value of field `name`.
    pub fn get(&self, name: &str) -> Option<&'a BytesFrame> {
        self.0
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    }

    /// A string field.
    pub fn str(&self, name: &str) -> Option<&'a str> {
        self.get(name).and_then(|v| v.as_str())
    }

    /// An integer field (integer or numeric string).
    pub fn int(&self, name: &str) -> Option<i64> {
        match self.get(name)? {
            BytesFrame::Integer(i) => Some(*i),
            other => other.as_str()?.parse().ok(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::request::words as args;

    fn range(begin: usize, lastkey: i64, keystep: usize, limit: i64) -> KeySpec {
        KeySpec {
            begin: BeginSearch::Index(begin),
            find: FindKeys::Range {
                lastkey,
                keystep,
                limit,
            },
            incomplete: false,
            not_key: false,
            access: 0,
            variable: false,
        }
    }

    fn known(specs: &[KeySpec], a: &str) -> Vec<usize> {
        match key_positions(specs, LegacyKeys::default(), false, &args(a)) {
            KeyPositions::Known(k) => k,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn get_and_mset() {
        assert_eq!(known(&[range(1, 0, 1, 0)], "GET k"), vec![1]);
        assert_eq!(known(&[range(1, -1, 2, 0)], "MSET a 1 b 2"), vec![1, 3]);
        assert_eq!(known(&[range(1, -1, 1, 0)], "DEL a b c"), vec![1, 2, 3]);
    }

    /// EVAL's spec: `numkeys` at 2, the keys after it.
    fn eval_spec(access: u8) -> KeySpec {
        KeySpec {
            begin: BeginSearch::Index(2),
            find: FindKeys::KeyNum {
                keynumidx: 0,
                firstkey: 1,
                keystep: 1,
            },
            incomplete: false,
            not_key: false,
            access,
            variable: false,
        }
    }

    #[test]
    fn eval_numkeys() {
        let spec = eval_spec(0);
        assert_eq!(
            known(std::slice::from_ref(&spec), "EVAL s 2 a b x"),
            vec![3, 4]
        );
        assert_eq!(
            known(std::slice::from_ref(&spec), "EVAL s 0 x"),
            Vec::<usize>::new()
        );
        assert_eq!(known(&[spec], "EVAL s zz"), Vec::<usize>::new());
    }

    #[test]
    fn acl_finds_no_keys_in_a_syntax_error() {
        let spec = eval_spec(KEY_READ | KEY_WRITE);
        let keys = |line: &str| {
            acl_keys(
                std::slice::from_ref(&spec),
                LegacyKeys::default(),
                false,
                &args(line),
            )
            .map(|k| k.into_vec())
        };
        assert_eq!(keys("EVAL s 1 a"), Some(vec![(3, KEY_READ | KEY_WRITE)]));
        // More keys than arguments, and no keys: Redis checks nothing, the node says why.
        assert_eq!(keys("EVAL s 3 a b"), Some(vec![]));
        assert_eq!(keys("EVAL s 0 a"), Some(vec![]));
    }

    #[test]
    fn xread_streams_keyword() {
        let spec = KeySpec {
            begin: BeginSearch::Keyword {
                keyword: b"STREAMS".to_vec(),
                startfrom: 1,
            },
            find: FindKeys::Range {
                lastkey: -1,
                keystep: 1,
                limit: 2,
            },
            incomplete: false,
            not_key: false,
            access: 0,
            variable: false,
        };
        assert_eq!(known(&[spec], "XREAD COUNT 2 STREAMS a b 0 0"), vec![4, 5]);
    }

    #[test]
    fn incomplete_asks_cluster() {
        let mut spec = range(1, 0, 1, 0);
        spec.incomplete = true;
        let got = key_positions(
            &[spec],
            LegacyKeys::default(),
            true,
            &args("SORT k STORE d"),
        );
        assert_eq!(got, KeyPositions::AskCluster);
    }

    #[test]
    fn legacy_triple() {
        let legacy = LegacyKeys {
            first: 1,
            last: -1,
            step: 2,
        };
        let got = key_positions(&[], legacy, false, &args("MSET a 1 b 2"));
        assert_eq!(got, KeyPositions::Known(vec![1, 3]));
    }
}
