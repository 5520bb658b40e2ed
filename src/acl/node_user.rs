//! A proxy user's rights as rules for a node user, so that a script the user runs is checked
//! by the node itself, `redis.call` by `redis.call`, with the same rules the proxy enforces
//! on the user's own commands.
//!
//! The node user gets the user's selectors (commands, keys, channels), plus `ASKING` (the
//! proxy's redirect handling needs it). The keys the proxies keep their own state in must
//! stay out of reach: a key pattern `*` becomes the patterns of every key but those (see
//! [`everything_but`]); any other pattern that matches one of them cannot be narrowed in
//! Redis' glob language, so such a user gets no node user and its scripts are refused.

use super::describe;
use super::glob;
use super::selector::{KeyPattern, Selector};
use super::user::User;
use crate::protocol::acl_catalog::Catalog;
use crate::protocol::keyspec::{KEY_READ, KEY_WRITE};
use std::collections::BTreeSet;

/// The rules (one `ACL SETUSER` argument each, after the user's name) for a node user with
/// `user`'s rights, never touching `reserved`; or the pattern that makes that impossible.
pub fn rules(user: &User, catalog: &Catalog, reserved: &[&str]) -> Result<Vec<String>, String> {
    let mut out = vec!["reset".to_string(), "on".to_string()];
    for selector in &user.selectors {
        let mut words = selector_rules(selector, catalog, reserved)?;
        match selector.root {
            true => {
                words.push("+asking".into());
                out.extend(words);
            }
            false => out.push(format!("({})", words.join(" "))),
        }
    }
    Ok(out)
}

fn selector_rules(
    selector: &Selector,
    catalog: &Catalog,
    reserved: &[&str],
) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let all = KeyPattern {
        access: KEY_READ | KEY_WRITE,
        pattern: b"*".to_vec(),
    };
    let patterns = match selector.all_keys {
        true => std::slice::from_ref(&all),
        false => &selector.keys[..],
    };
    for key in patterns {
        let hits = reserved
            .iter()
            .any(|r| glob::matches(&key.pattern, r.as_bytes()));
        if !hits {
            words.push(key.describe());
            continue;
        }
        if key.pattern != b"*" {
            return Err(key.describe());
        }
        let prefix = &key.describe()[..key.describe().len() - 1];
        for narrowed in everything_but(reserved) {
            words.push(format!("{prefix}{narrowed}"));
        }
    }
    match selector.all_channels {
        true => words.push("allchannels".into()),
        false => {
            words.push("resetchannels".into());
            for channel in &selector.channels {
                words.push(format!("&{}", String::from_utf8_lossy(channel)));
            }
        }
    }
    words.extend(
        describe::command_rules(selector, catalog)
            .split_whitespace()
            .map(str::to_string),
    );
    Ok(words)
}

/// Glob patterns that together match every string except those in `excluded`.
///
/// For each prefix `p` of an excluded string: `p` itself unless it is excluded, and `p`
/// followed by any character no excluded string continues `p` with (`p[^…]*`, or `p?*`
/// when none continues it). Every other string's longest such prefix is followed by one of
/// those characters, or is the whole string.
pub fn everything_but(excluded: &[&str]) -> Vec<String> {
    let prefixes: BTreeSet<&[u8]> = excluded
        .iter()
        .flat_map(|e| (0..=e.len()).map(move |n| &e.as_bytes()[..n]))
        .collect();
    let mut out = Vec::new();
    for prefix in prefixes {
        let next: BTreeSet<u8> = excluded
            .iter()
            .filter_map(|e| e.as_bytes().strip_prefix(prefix)?.first().copied())
            .collect();
        let escaped = escape(prefix);
        if !excluded.iter().any(|e| e.as_bytes() == prefix) {
            out.push(escaped.clone());
        }
        match next.is_empty() {
            true => out.push(format!("{escaped}?*")),
            false => {
                let set: Vec<u8> = next.into_iter().collect();
                out.push(format!("{escaped}[^{}]*", escape(&set)));
            }
        }
    }
    out
}

/// `text` with every character but letters and digits escaped for Redis' glob.
fn escape(text: &[u8]) -> String {
    let mut out = String::new();
    for &c in text {
        if !c.is_ascii_alphanumeric() {
            out.push('\\');
        }
        out.push(c as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const RESERVED: [&str; 2] = ["slotproxy:acl", "slotproxy:migration-lease"];

    #[test]
    fn everything_but_the_reserved_keys() {
        let patterns = everything_but(&RESERVED);
        let matched = |key: &str| {
            patterns
                .iter()
                .any(|p| glob::matches(p.as_bytes(), key.as_bytes()))
        };
        for key in RESERVED {
            assert!(!matched(key), "{key} is matched");
        }
        let others = [
            "",
            "s",
            "slotproxy",
            "slotproxy:",
            "slotproxy:ac",
            "slotproxy:acl2",
            "slotproxy:aclx:y",
            "slotproxy:migration",
            "slotproxy:migration-leasex",
            "slotproxy:m",
            "slotproxy:other",
            "slotproxyx",
            "x",
            "user:1",
            "[*]",
            "\\",
        ];
        for key in others {
            assert!(matched(key), "{key:?} is not matched");
        }
    }

    #[test]
    fn node_rules_keep_the_user_s_rights() {
        let catalog = Catalog::default();
        let mut user = User::new("bob");
        for rule in ["on", ">pw", "~x*", "%R~r*", "resetchannels", "&news"] {
            user.apply(rule.as_bytes(), &catalog).expect("rule");
        }
        let rules = rules(&user, &catalog, &RESERVED).expect("rules");
        assert_eq!(rules[..2], ["reset", "on"]);
        for word in ["~x*", "%R~r*", "resetchannels", "&news", "+asking"] {
            assert!(rules.iter().any(|r| r == word), "{word} in {rules:?}");
        }
        assert!(!rules.iter().any(|r| r.contains("pw")), "{rules:?}");

        let mut all = User::new("carol");
        all.apply(b"allkeys", &catalog).expect("rule");
        let rules = super::rules(&all, &catalog, &RESERVED).expect("rules");
        assert!(!rules.iter().any(|r| r == "~*"), "{rules:?}");
        assert!(rules.iter().any(|r| r == "~[^s]*"), "{rules:?}");

        let mut near = User::new("dave");
        near.apply(b"~slot*", &catalog).expect("rule");
        assert_eq!(
            super::rules(&near, &catalog, &RESERVED),
            Err("~slot*".to_string())
        );
    }
}
