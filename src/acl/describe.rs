//! Users written back as rules: `ACL LIST` lines, `ACL GETUSER` fields and the ACL file.
//!
//! Redis 7.0 keeps a bitmap, not the rules given, and describes it by a greedy fit: start from
//! `+@all` or `-@all`, add the category that best matches the remaining difference while one
//! matches more than it misses, then name single commands. Doing the same over the same
//! command table gives the same text a Redis server gives for the same rules.

use super::selector::{Bitmap, Selector};
use super::user::{Sanitize, User};
use crate::protocol::acl_catalog::{Catalog, CatalogEntry, CATEGORIES, FUTURE_COMMANDS_BIT};

/// The command rules of a selector (`+@all -@string +incr`).
pub fn command_rules(selector: &Selector, catalog: &Catalog) -> String {
    let mut rules: Vec<String> = Vec::new();
    let additive = !selector.commands.get(Some(FUTURE_COMMANDS_BIT));
    // `fake` follows the rules as they are written; `temp` has the bits still to explain.
    let mut fake = Selector::new(false);
    match additive {
        true => rules.push("-@all".into()),
        false => {
            rules.push("+@all".into());
            fake.commands = Bitmap::FULL;
        }
    }
    let mut temp = Selector::new(false);
    temp.commands = selector.commands.clone();
    let walk = catalog.walk();
    let mut applied = [false; CATEGORIES.len()];
    loop {
        let mut best: Option<usize> = None;
        let (mut min_diff, mut max_same) = (u64::MAX, 0u64);
        for (i, _) in CATEGORIES.iter().enumerate() {
            if applied[i] {
                continue;
            }
            let (on, off) = count(&temp.commands, &walk, 1 << i);
            let (diff, same) = if additive { (off, on) } else { (on, off) };
            if same > diff && (diff < min_diff || (diff == min_diff && same > max_same)) {
                best = Some(i);
                min_diff = diff;
                max_same = same;
            }
        }
        let Some(best) = best else { break };
        fake.change_category(catalog, 1 << best, additive);
        temp.change_category(catalog, 1 << best, !additive);
        rules.push(format!(
            "{}@{}",
            if additive { '+' } else { '-' },
            CATEGORIES[best]
        ));
        applied[best] = true;
    }
    for command in catalog.commands() {
        single(selector, &mut fake, catalog, command, &mut rules);
        for sub in catalog.subcommands(command) {
            single(selector, &mut fake, catalog, sub, &mut rules);
        }
    }
    rules.join(" ")
}

/// The single-command rule that makes `fake` agree with `selector` on `entry`, and the
/// entry's allowed first arguments.
fn single(
    selector: &Selector,
    fake: &mut Selector,
    catalog: &Catalog,
    entry: &CatalogEntry,
    rules: &mut Vec<String>,
) {
    let user_bit = selector.commands.get(entry.id);
    if user_bit != fake.commands.get(entry.id) {
        rules.push(format!(
            "{}{}",
            if user_bit { '+' } else { '-' },
            entry.name
        ));
        fake.change(catalog, entry, user_bit);
    }
    if !user_bit {
        if let Some(args) = entry.id.and_then(|id| selector.first_args.get(&id)) {
            for arg in args {
                rules.push(format!("+{}|{arg}", entry.name));
            }
        }
    }
}

fn count(bits: &Bitmap, walk: &[&CatalogEntry], category: u32) -> (u64, u64) {
    let (mut on, mut off) = (0, 0);
    for entry in walk.iter().filter(|e| e.categories & category != 0) {
        match bits.get(entry.id) {
            true => on += 1,
            false => off += 1,
        }
    }
    (on, off)
}

/// The key patterns as `ACL GETUSER` shows them (`~*`, or each pattern).
pub fn keys(selector: &Selector) -> String {
    match selector.all_keys {
        true => "~*".into(),
        false => selector
            .keys
            .iter()
            .map(|k| k.describe())
            .collect::<Vec<_>>()
            .join(" "),
    }
}

/// The channel patterns as `ACL GETUSER` shows them.
pub fn channels(selector: &Selector) -> String {
    match selector.all_channels {
        true => "&*".into(),
        false => selector
            .channels
            .iter()
            .map(|c| format!("&{}", String::from_utf8_lossy(c)))
            .collect::<Vec<_>>()
            .join(" "),
    }
}

/// One selector as rules: keys, channels, commands.
pub fn selector(selector: &Selector, catalog: &Catalog) -> String {
    let mut out = String::new();
    if selector.all_keys {
        out.push_str("~* ");
    } else {
        for key in &selector.keys {
            out.push_str(&key.describe());
            out.push(' ');
        }
    }
    if selector.all_channels {
        out.push_str("&* ");
    } else {
        out.push_str("resetchannels ");
        for channel in &selector.channels {
            out.push('&');
            out.push_str(&String::from_utf8_lossy(channel));
            out.push(' ');
        }
    }
    out.push_str(&command_rules(selector, catalog));
    out
}

/// The user's flags in Redis' order (`on`/`off`, `nopass`, sanitize).
pub fn flags(user: &User) -> Vec<&'static str> {
    let mut flags = vec![if user.enabled { "on" } else { "off" }];
    if user.nopass {
        flags.push("nopass");
    }
    match user.sanitize {
        Some(Sanitize::Skip) => flags.push("skip-sanitize-payload"),
        Some(Sanitize::Sanitize) => flags.push("sanitize-payload"),
        None => {}
    }
    flags
}

/// The user as rules, as `ACL LIST` shows it after `user <name> `.
pub fn user(user: &User, catalog: &Catalog) -> String {
    let mut out = String::new();
    for flag in flags(user) {
        out.push_str(flag);
        out.push(' ');
    }
    for password in &user.passwords {
        out.push('#');
        out.push_str(password);
        out.push(' ');
    }
    for s in &user.selectors {
        match s.root {
            true => out.push_str(&selector(s, catalog)),
            false => out.push_str(&format!(" ({})", selector(s, catalog))),
        }
    }
    out
}
