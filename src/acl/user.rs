//! One ACL user: its flags, password hashes and selectors, changed rule by rule with Redis'
//! `ACL SETUSER` language. Passwords are kept only as SHA-256 hex digests, as Redis keeps them.

use super::error::RuleError;
#[cfg(test)]
use super::selector::Bitmap;
use super::selector::{has_spaces, Call, Denial, Selector};
use crate::protocol::acl_catalog::Catalog;
use sha2::{Digest, Sha256};

/// `sanitize-payload` / `skip-sanitize-payload` (kept for `ACL LIST`; RESTORE payloads are
/// checked by the nodes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sanitize {
    /// `sanitize-payload`
    Sanitize,
    /// `skip-sanitize-payload`
    Skip,
}

/// One user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// The user name.
    pub name: String,
    /// `on`: may log in.
    pub enabled: bool,
    /// `nopass`: any password logs in.
    pub nopass: bool,
    /// Payload sanitizing flag, when one was given.
    pub sanitize: Option<Sanitize>,
    /// SHA-256 hex digests of the passwords, in the order added.
    pub passwords: Vec<String>,
    /// The root selector first, then the `(…)` selectors in the order added.
    pub selectors: Vec<Selector>,
}

impl User {
    /// A new user as `ACL SETUSER name` makes it: off, no password, no permissions.
    pub fn new(name: &str) -> User {
        User {
            name: name.to_string(),
            enabled: false,
            nopass: false,
            sanitize: None,
            passwords: Vec::new(),
            selectors: vec![Selector::new(true)],
        }
    }

    /// Redis' `default` user as it starts: `on nopass ~* &* +@all`.
    pub fn default_user(catalog: &Catalog) -> User {
        let mut user = User::new("default");
        for rule in ["+@all", "~*", "&*", "on", "nopass"] {
            let applied = user.apply(rule.as_bytes(), catalog);
            debug_assert!(applied.is_ok());
        }
        user
    }

    /// The root selector.
    pub fn root(&self) -> &Selector {
        &self.selectors[0]
    }

    fn root_mut(&mut self) -> &mut Selector {
        &mut self.selectors[0]
    }

    /// May run anything on any key and channel: the permission check can be skipped.
    pub fn unrestricted(&self) -> bool {
        self.root().unrestricted()
    }

    /// Applies one rule (Redis' `ACLSetUser`).
    pub fn apply(&mut self, op: &[u8], catalog: &Catalog) -> Result<(), RuleError> {
        let is = |word: &str| op.eq_ignore_ascii_case(word.as_bytes());
        if op.is_empty() {
            return Ok(());
        } else if is("on") {
            self.enabled = true;
        } else if is("off") {
            self.enabled = false;
        } else if is("skip-sanitize-payload") {
            self.sanitize = Some(Sanitize::Skip);
        } else if is("sanitize-payload") {
            self.sanitize = Some(Sanitize::Sanitize);
        } else if is("nopass") {
            self.nopass = true;
            self.passwords.clear();
        } else if is("resetpass") {
            self.nopass = false;
            self.passwords.clear();
        } else if op[0] == b'>' || op[0] == b'#' {
            let hash = match op[0] {
                b'>' => hash_password(&op[1..]),
                _ => valid_hash(&op[1..])?,
            };
            if !self.passwords.contains(&hash) {
                self.passwords.push(hash);
            }
            self.nopass = false;
        } else if op[0] == b'<' || op[0] == b'!' {
            let hash = match op[0] {
                b'<' => hash_password(&op[1..]),
                _ => valid_hash(&op[1..])?,
            };
            let at = self.passwords.iter().position(|p| *p == hash);
            self.passwords.remove(at.ok_or(RuleError::NoSuchPassword)?);
        } else if op[0] == b'(' && op[op.len() - 1] == b')' {
            let mut selector = Selector::new(false);
            let inner = &op[1..op.len() - 1];
            for rule in inner.split(|b| b.is_ascii_whitespace()) {
                if !rule.is_empty() {
                    selector.apply(rule, catalog)?;
                }
            }
            self.selectors.push(selector);
        } else if is("clearselectors") {
            self.selectors.truncate(1);
        } else if is("reset") {
            self.nopass = false;
            self.passwords.clear();
            let root = self.root_mut();
            root.all_keys = false;
            root.keys.clear();
            root.all_channels = false;
            root.channels.clear();
            self.enabled = false;
            self.sanitize = Some(Sanitize::Sanitize);
            self.selectors.truncate(1);
            self.root_mut().apply(b"-@all", catalog)?;
        } else {
            self.root_mut().apply(op, catalog)?;
        }
        Ok(())
    }

    /// Whether `password` logs this user in.
    pub fn accepts(&self, password: &[u8]) -> bool {
        if !self.enabled {
            return false;
        }
        if self.nopass {
            return true;
        }
        let hash = hash_password(password);
        self.passwords
            .iter()
            .any(|p| constant_time_eq(p.as_bytes(), hash.as_bytes()))
    }

    /// Checks a call against every selector: allowed when one allows it; otherwise the
    /// denial Redis would report (the worst kind, then the last argument).
    pub fn check(&self, call: &Call<'_>) -> Result<(), Denial> {
        let mut relevant = Denial::Command;
        for selector in &self.selectors {
            match selector.check(call) {
                Ok(()) => return Ok(()),
                Err(denial) if denial.rank() > relevant.rank() => relevant = denial,
                Err(_) => {}
            }
        }
        Err(relevant)
    }
}

/// A user name is valid: no spaces or NUL bytes.
pub fn valid_name(name: &[u8]) -> bool {
    !has_spaces(name)
}

/// SHA-256 of a password, as lowercase hex (what `ACL GETUSER` shows and `#` takes).
pub fn hash_password(password: &[u8]) -> String {
    let digest = Sha256::digest(password);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn valid_hash(hash: &[u8]) -> Result<String, RuleError> {
    let ok = hash.len() == 64 && hash.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    match ok {
        true => Ok(String::from_utf8_lossy(hash).into_owned()),
        false => Err(RuleError::BadHash),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Joins a selector spread over several arguments (`(~a` `+get)`) into one, as Redis does;
/// `Err(index)` names the argument whose parenthesis is never closed.
pub fn merge_selector_args(args: &[&[u8]]) -> Result<Vec<Vec<u8>>, usize> {
    let mut merged = Vec::with_capacity(args.len());
    let mut open: Option<(usize, Vec<u8>)> = None;
    for (i, &op) in args.iter().enumerate() {
        if let Some((_, selector)) = open.as_mut() {
            selector.push(b' ');
            selector.extend_from_slice(op);
            if op.last() == Some(&b')') {
                merged.push(open.take().map(|(_, s)| s).unwrap_or_default());
            }
            continue;
        }
        if op.first() == Some(&b'(') && op.last() != Some(&b')') {
            open = Some((i, op.to_vec()));
            continue;
        }
        merged.push(op.to_vec());
    }
    match open {
        Some((at, _)) => Err(at),
        None => Ok(merged),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_kept_as_hashes_and_checked() {
        let none = Catalog::default();
        let mut user = User::new("u");
        assert!(!user.accepts(b"pw"), "a new user is off");
        user.apply(b"on", &none).unwrap();
        user.apply(b">pw", &none).unwrap();
        assert!(user.accepts(b"pw") && !user.accepts(b"other"));
        assert_eq!(user.passwords, vec![hash_password(b"pw")]);
        assert_eq!(user.apply(b"<nope", &none), Err(RuleError::NoSuchPassword));
        assert_eq!(user.apply(b"#abc", &none), Err(RuleError::BadHash));
        user.apply(b"nopass", &none).unwrap();
        assert!(user.accepts(b"anything") && user.passwords.is_empty());
        user.apply(b"reset", &none).unwrap();
        assert!(!user.enabled && !user.nopass && user.root().commands == Bitmap::EMPTY);
    }

    #[test]
    fn selectors_spread_over_arguments_are_joined() {
        let args: [&[u8]; 4] = [b"on", b"(~a", b"+get)", b"(~b)"];
        let merged = merge_selector_args(&args).unwrap();
        assert_eq!(
            merged,
            vec![b"on".to_vec(), b"(~a +get)".to_vec(), b"(~b)".to_vec()]
        );
        let open: [&[u8]; 2] = [b"on", b"(~a"];
        assert_eq!(merge_selector_args(&open), Err(1));
    }
}
