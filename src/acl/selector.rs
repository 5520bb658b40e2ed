//! One ACL selector: the commands, keys and channels a set of rules allows, and the check of a
//! call against it. A user has a root selector (its plain rules) and any number of `(…)`
//! selectors; a call is allowed when one of them allows all of it (Redis 7.0's model).

use super::error::RuleError;
use super::glob;
use crate::protocol::acl_catalog::{category_bit, Catalog, CatalogEntry, COMMAND_BITS};
use crate::protocol::keyspec::{KEY_READ, KEY_WRITE};
use bytes::Bytes;
use std::collections::BTreeMap;

/// One bit per command id ([`crate::protocol::acl_catalog::command_id`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bitmap([u64; COMMAND_BITS / 64]);

impl Bitmap {
    /// No command.
    pub const EMPTY: Bitmap = Bitmap([0; COMMAND_BITS / 64]);
    /// Every command, and the future-commands bit.
    pub const FULL: Bitmap = Bitmap([u64::MAX; COMMAND_BITS / 64]);

    /// Whether `id`'s bit is set (no id: never).
    pub fn get(&self, id: Option<u16>) -> bool {
        id.is_some_and(|id| self.0[usize::from(id) / 64] & (1 << (id % 64)) != 0)
    }

    /// Sets or clears `id`'s bit.
    pub fn set(&mut self, id: Option<u16>, on: bool) {
        if let Some(id) = id {
            let (word, bit) = (usize::from(id) / 64, 1u64 << (id % 64));
            match on {
                true => self.0[word] |= bit,
                false => self.0[word] &= !bit,
            }
        }
    }
}

/// A key pattern with the access it grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPattern {
    /// [`KEY_READ`] and/or [`KEY_WRITE`].
    pub access: u8,
    /// Redis glob.
    pub pattern: Vec<u8>,
}

impl KeyPattern {
    /// As Redis writes it: `~p`, `%R~p` or `%W~p`.
    pub fn describe(&self) -> String {
        let prefix = match self.access {
            a if a == KEY_READ => "%R~",
            a if a == KEY_WRITE => "%W~",
            _ => "~",
        };
        format!("{prefix}{}", String::from_utf8_lossy(&self.pattern))
    }
}

/// What one selector allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    /// The user's root selector (its rules outside parentheses).
    pub root: bool,
    /// `allkeys` / `~*`.
    pub all_keys: bool,
    /// `allchannels` / `&*`.
    pub all_channels: bool,
    /// `allcommands` / `+@all`, not narrowed since.
    pub all_commands: bool,
    /// Allowed commands.
    pub commands: Bitmap,
    /// `+select|0`: first arguments allowed of otherwise denied commands, by command id.
    pub first_args: BTreeMap<u16, Vec<String>>,
    /// Key patterns, in the order given.
    pub keys: Vec<KeyPattern>,
    /// Channel patterns, in the order given.
    pub channels: Vec<Vec<u8>>,
}

impl Selector {
    /// A selector that allows nothing.
    pub fn new(root: bool) -> Selector {
        Selector {
            root,
            all_keys: false,
            all_channels: false,
            all_commands: false,
            commands: Bitmap::EMPTY,
            first_args: BTreeMap::new(),
            keys: Vec::new(),
            channels: Vec::new(),
        }
    }

    /// Allows nothing but everything: the `default` user's selector.
    pub fn unrestricted(&self) -> bool {
        self.all_commands && self.all_keys && self.all_channels
    }

    /// Applies one selector rule (Redis' `ACLSetSelector`).
    pub fn apply(&mut self, op: &[u8], catalog: &Catalog) -> Result<(), RuleError> {
        let is = |word: &str| op.eq_ignore_ascii_case(word.as_bytes());
        if is("allkeys") || op == b"~*" {
            self.all_keys = true;
            self.keys.clear();
        } else if is("resetkeys") {
            self.all_keys = false;
            self.keys.clear();
        } else if is("allchannels") || op == b"&*" {
            self.all_channels = true;
            self.channels.clear();
        } else if is("resetchannels") {
            self.all_channels = false;
            self.channels.clear();
        } else if is("allcommands") || is("+@all") {
            self.commands = Bitmap::FULL;
            self.all_commands = true;
            self.first_args.clear();
        } else if is("nocommands") || is("-@all") {
            self.commands = Bitmap::EMPTY;
            self.all_commands = false;
            self.first_args.clear();
        } else if op.first() == Some(&b'~') || op.first() == Some(&b'%') {
            self.add_key_pattern(op)?;
        } else if op.first() == Some(&b'&') {
            if self.all_channels {
                return Err(RuleError::ChannelAfterAll);
            }
            let pattern = &op[1..];
            if has_spaces(pattern) {
                return Err(RuleError::Syntax);
            }
            if !self.channels.iter().any(|c| c == pattern) {
                self.channels.push(pattern.to_vec());
            }
            self.all_channels = false;
        } else if op.first() == Some(&b'+') && op.get(1) != Some(&b'@') {
            self.allow_command(&String::from_utf8_lossy(&op[1..]), catalog)?;
        } else if op.first() == Some(&b'-') && op.get(1) != Some(&b'@') {
            let entry = catalog
                .find(&String::from_utf8_lossy(&op[1..]))
                .ok_or(RuleError::UnknownCommand)?;
            self.change(catalog, entry, false);
        } else if matches!(op.first(), Some(b'+' | b'-')) {
            let bit = category_bit(&String::from_utf8_lossy(&op[2..]))
                .ok_or(RuleError::UnknownCommand)?;
            self.change_category(catalog, bit, op[0] == b'+');
        } else {
            return Err(RuleError::Syntax);
        }
        Ok(())
    }

    fn add_key_pattern(&mut self, op: &[u8]) -> Result<(), RuleError> {
        if self.all_keys {
            return Err(RuleError::KeyAfterAll);
        }
        let (mut access, mut offset) = (0u8, 1);
        if op[0] == b'%' {
            loop {
                match op.get(offset).map(u8::to_ascii_uppercase) {
                    Some(b'R') if access & KEY_READ == 0 => access |= KEY_READ,
                    Some(b'W') if access & KEY_WRITE == 0 => access |= KEY_WRITE,
                    Some(b'~') => {
                        offset += 1;
                        break;
                    }
                    // A `%` rule that never reaches `~` takes the rest as its pattern.
                    None => break,
                    Some(_) => return Err(RuleError::Syntax),
                }
                offset += 1;
            }
        } else {
            access = KEY_READ | KEY_WRITE;
        }
        let pattern = &op[offset.min(op.len())..];
        if has_spaces(pattern) {
            return Err(RuleError::Syntax);
        }
        match self.keys.iter_mut().find(|k| k.pattern == pattern) {
            Some(existing) => existing.access |= access,
            None => self.keys.push(KeyPattern {
                access,
                pattern: pattern.to_vec(),
            }),
        }
        self.all_keys = false;
        Ok(())
    }

    /// `+cmd`, `+cmd|sub` or `+cmd|first-arg`.
    fn allow_command(&mut self, name: &str, catalog: &Catalog) -> Result<(), RuleError> {
        let Some((container, sub)) = name.rsplit_once('|') else {
            let entry = catalog.find(name).ok_or(RuleError::UnknownCommand)?;
            self.change(catalog, entry, true);
            return Ok(());
        };
        let entry = catalog.find(container).ok_or(RuleError::UnknownCommand)?;
        if entry.parent.is_some() {
            return Err(RuleError::FirstArgOfSubcommand);
        }
        if sub.is_empty() {
            return Err(RuleError::Syntax);
        }
        if !entry.subcommands.is_empty() {
            let sub = catalog.find(name).ok_or(RuleError::UnknownCommand)?;
            self.change(catalog, sub, true);
            return Ok(());
        }
        // SELECT|0, DEBUG|OBJECT: a first argument of a command without subcommands.
        if let Some(id) = entry.id {
            let args = self.first_args.entry(id).or_default();
            if !args.iter().any(|a| a.eq_ignore_ascii_case(sub)) {
                args.push(sub.to_string());
            }
        }
        Ok(())
    }

    /// Allows or denies a command and its subcommands (Redis' `ACLChangeSelectorPerm`).
    pub fn change(&mut self, catalog: &Catalog, entry: &CatalogEntry, allow: bool) {
        self.set_bit(entry.id, allow);
        if let Some(id) = entry.id {
            self.first_args.remove(&id);
        }
        for sub in catalog.subcommands(entry) {
            self.set_bit(sub.id, allow);
        }
    }

    fn set_bit(&mut self, id: Option<u16>, allow: bool) {
        self.commands.set(id, allow);
        if !allow {
            self.all_commands = false;
        }
    }

    /// `+@category` / `-@category`: every command (and subcommand) of the category.
    pub fn change_category(&mut self, catalog: &Catalog, bit: u32, allow: bool) {
        for command in catalog.commands() {
            if command.module {
                continue;
            }
            if command.categories & bit != 0 {
                self.change(catalog, command, allow);
            }
            for sub in catalog.subcommands(command) {
                if sub.categories & bit != 0 {
                    self.change(catalog, sub, allow);
                }
            }
        }
    }

    /// Checks one call against this selector.
    pub fn check(&self, call: &Call<'_>) -> Result<(), Denial> {
        if !self.all_commands && !call.command.no_auth && !self.commands.get(call.command.id) {
            let allowed_arg = call
                .command
                .id
                .and_then(|id| self.first_args.get(&id))
                .and_then(|args| {
                    let at = if call.command.parent.is_some() { 2 } else { 1 };
                    let given = call.args.get(at)?;
                    args.iter()
                        .any(|a| a.as_bytes().eq_ignore_ascii_case(given))
                        .then_some(())
                });
            if allowed_arg.is_none() {
                return Err(Denial::Command);
            }
        }
        if !self.all_keys {
            for &(position, access) in &call.keys {
                let key = &call.args[position];
                let granted = self.keys.iter().any(|pattern| {
                    pattern.access & access == access && glob::matches(&pattern.pattern, key)
                });
                if !granted {
                    return Err(Denial::Key(position));
                }
            }
        }
        if !self.all_channels {
            for &(position, is_pattern) in &call.channels {
                let channel = &call.args[position];
                let granted = self.channels.iter().any(|allowed| match is_pattern {
                    true => allowed == channel,
                    false => glob::matches(allowed, channel),
                });
                if !granted {
                    return Err(Denial::Channel(position));
                }
            }
        }
        Ok(())
    }
}

/// A call to check: the command, its arguments, its keys and channels.
#[derive(Debug)]
pub struct Call<'a> {
    /// The command (or subcommand) called.
    pub command: &'a CatalogEntry,
    /// All arguments, the name included.
    pub args: &'a [Bytes],
    /// Key positions with the access each needs.
    pub keys: crate::protocol::keyspec::AclKeys,
    /// Channel positions, and whether each is a pattern (PSUBSCRIBE).
    pub channels: Vec<(usize, bool)>,
}

/// Why a call was denied, with the argument at fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    /// The command itself.
    Command,
    /// The key at this argument index.
    Key(usize),
    /// The channel at this argument index.
    Channel(usize),
}

impl Denial {
    /// Redis' ranking when several selectors deny (command < key < channel), then the
    /// argument's index.
    pub fn rank(self) -> (u8, usize) {
        match self {
            Denial::Command => (1, 0),
            Denial::Key(at) => (2, at),
            Denial::Channel(at) => (4, at),
        }
    }
}

/// The channels a Pub/Sub call names, by argument index, as Redis' ACL checks them
/// (unsubscribing needs no permission).
pub fn channels_of(command: &str, argc: usize) -> Vec<(usize, bool)> {
    match command {
        "publish" | "spublish" if argc > 1 => vec![(1, false)],
        "subscribe" | "ssubscribe" => (1..argc).map(|i| (i, false)).collect(),
        "psubscribe" => (1..argc).map(|i| (i, true)).collect(),
        _ => Vec::new(),
    }
}

/// Spaces and NUL bytes are not allowed in user names and patterns.
pub fn has_spaces(text: &[u8]) -> bool {
    text.iter()
        .any(|&b| b.is_ascii_whitespace() || b == 0 || b == 0x0b)
}
