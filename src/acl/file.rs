//! Users as text, in Redis' ACL file format (`user <name> <rules…>`, one per line): what
//! `ACL SAVE` writes, `ACL LOAD` and `[auth] aclfile` read, and what the proxies of a fleet
//! share through the cluster. Passwords appear only as `#<sha256>`.

use super::describe;
use super::error::RuleError;
use super::store::Users;
use super::user::{merge_selector_args, valid_name, User};
use crate::protocol::acl_catalog::Catalog;
use std::sync::Arc;

/// The users as ACL file lines, sorted by name, each ending in a newline.
pub fn to_text(users: &Users, catalog: &Catalog) -> String {
    users
        .by_name
        .values()
        .map(|u| format!("user {} {}\n", u.name, describe::user(u, catalog)))
        .collect()
}

/// How strictly rules naming unknown commands are taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strictness {
    /// Every rule must apply (an operator's file: a typo must not silently widen or narrow).
    Strict,
    /// Rules naming commands this proxy's cluster does not have are skipped (text another
    /// proxy wrote, whose servers may know more commands).
    SkipUnknownCommands,
}

/// Reads ACL file text. `source` names the file in messages. Errors are Redis' messages, all
/// of them in one line, ending with Redis' "no change" warning. A file without a `default`
/// user gives none: the caller decides what `default` is then.
pub fn parse(
    text: &str,
    source: &str,
    catalog: &Catalog,
    strictness: Strictness,
) -> Result<Users, String> {
    let mut users = Users::default();
    let mut errors = String::new();
    for (index, line) in text.split('\n').enumerate() {
        let number = index + 1;
        let line = line.trim_matches(|c| matches!(c, ' ' | '\t' | '\r' | '\n'));
        if line.is_empty() {
            continue;
        }
        let words: Vec<&str> = line.split(' ').filter(|w| !w.is_empty()).collect();
        if words.len() < 2 || words[0] != "user" {
            errors.push_str(&format!(
                "{source}:{number} should start with user keyword followed by the username. "
            ));
            continue;
        }
        let name = words[1];
        if !valid_name(name.as_bytes()) {
            errors.push_str(&format!(
                "'{source}:{number}: username '{name}' contains invalid characters. "
            ));
            continue;
        }
        if users.by_name.contains_key(name) {
            errors.push_str(&format!(
                "WARNING: Duplicate user '{name}' found on line {number}. "
            ));
            continue;
        }
        let rules: Vec<&[u8]> = words[2..].iter().map(|w| w.as_bytes()).collect();
        let Ok(rules) = merge_selector_args(&rules) else {
            errors.push_str(&format!(
                "{source}:{number}: Unmatched parenthesis in selector definition."
            ));
            continue;
        };
        let mut user = User::new(name);
        let mut reported = false;
        for rule in &rules {
            match user.apply(rule, catalog) {
                Ok(()) => {}
                Err(RuleError::UnknownCommand) if strictness == Strictness::SkipUnknownCommands => {
                }
                Err(RuleError::UnknownCommand) => errors.push_str(&format!(
                    "{source}:{number}: Error in applying operation '{}': {}. ",
                    String::from_utf8_lossy(rule),
                    RuleError::UnknownCommand
                )),
                Err(error) if !reported => {
                    errors.push_str(&format!("{source}:{number}: {error}. "));
                    reported = true;
                }
                Err(_) => {}
            }
        }
        users.by_name.insert(name.to_string(), Arc::new(user));
    }
    if !errors.is_empty() {
        errors.push_str(
            "WARNING: ACL errors detected, no change to the previously active ACL rules was performed",
        );
        return Err(errors);
    }
    Ok(users)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_redis_errors() {
        let none = Catalog::default();
        let text = "user app on #2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881 ~app:* resetchannels -@all\n\nuser default on nopass ~* &* +@all\n";
        let users = parse(text, "users.acl", &none, Strictness::Strict).unwrap();
        assert!(users.by_name["app"].accepts(b"x"));
        assert_eq!(to_text(&users, &none), text.replace("\n\n", "\n"));
        let bad = parse(
            "user a on\nnope\nuser a off\nuser b +nosuch\n",
            "f",
            &none,
            Strictness::Strict,
        )
        .unwrap_err();
        assert!(bad.starts_with("f:2 should start with user keyword followed by the username. WARNING: Duplicate user 'a' found on line 3. f:4: Error in applying operation '+nosuch': Unknown command or category name in ACL. WARNING: ACL errors"), "{bad}");
        let lenient = parse(
            "user b on +nosuch\n",
            "f",
            &none,
            Strictness::SkipUnknownCommands,
        );
        assert!(lenient.unwrap().by_name.contains_key("b"));
    }
}
