//! Bounded labels for client commands: the command group of the latency histogram and the
//! result kind of an answer.

/// How a command was served; the `group` label of the latency histogram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandGroup {
    /// One node, read-only.
    Read,
    /// One node, may write.
    Write,
    /// Split by slot over several nodes and joined.
    MultiKey,
    /// Sent to every master.
    FanOut,
    /// Answered by the proxy itself.
    Local,
    /// Refused or invalid (unknown command, wrong arity, CROSSSLOT…).
    Rejected,
    /// Transactions, blocking commands and WAIT: their time includes waiting for data or
    /// for the client, so they are kept apart from the latency of plain commands.
    Pinned,
}

impl CommandGroup {
    /// Every group, for creating the series up front; in declaration order, so that
    /// `group as usize` indexes it.
    pub const ALL: [CommandGroup; 7] = [
        CommandGroup::Read,
        CommandGroup::Write,
        CommandGroup::MultiKey,
        CommandGroup::FanOut,
        CommandGroup::Local,
        CommandGroup::Rejected,
        CommandGroup::Pinned,
    ];

    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            CommandGroup::Read => "read",
            CommandGroup::Write => "write",
            CommandGroup::MultiKey => "multi_key",
            CommandGroup::FanOut => "fan_out",
            CommandGroup::Local => "local",
            CommandGroup::Rejected => "rejected",
            CommandGroup::Pinned => "pinned",
        }
    }
}

/// Error prefixes that get their own `result` label; anything else is `other_error`.
const KINDS: &[&str] = &[
    "ERR",
    "WRONGTYPE",
    "CROSSSLOT",
    "TRYAGAIN",
    "CLUSTERDOWN",
    "MOVED",
    "ASK",
    "NOSCRIPT",
    "BUSYKEY",
    "OOM",
    "NOAUTH",
    "NOPERM",
    "READONLY",
    "LOADING",
    "EXECABORT",
    "BUSY",
    "MASTERDOWN",
    "NOPROTO",
];

/// `ok` for any reply that is not an error, else the error's kind in lower case.
pub fn error_kind(reply: &[u8]) -> &'static str {
    if reply.first() != Some(&b'-') {
        return "ok";
    }
    let word = reply[1..]
        .split(|&b| b == b' ' || b == b'\r')
        .next()
        .unwrap_or(b"");
    const LOWER: &[&str] = &[
        "err",
        "wrongtype",
        "crossslot",
        "tryagain",
        "clusterdown",
        "moved",
        "ask",
        "noscript",
        "busykey",
        "oom",
        "noauth",
        "noperm",
        "readonly",
        "loading",
        "execabort",
        "busy",
        "masterdown",
        "noproto",
    ];
    KINDS
        .iter()
        .position(|k| k.as_bytes() == word)
        .map(|i| LOWER[i])
        .unwrap_or("other_error")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_is_indexed_by_discriminant() {
        for (index, group) in CommandGroup::ALL.iter().enumerate() {
            assert_eq!(*group as usize, index, "{}", group.label());
        }
    }

    #[test]
    fn kinds_are_bounded() {
        assert_eq!(error_kind(b"+OK\r\n"), "ok");
        assert_eq!(error_kind(b"$-1\r\n"), "ok");
        assert_eq!(error_kind(b"-ERR no\r\n"), "err");
        assert_eq!(error_kind(b"-WRONGTYPE Operation\r\n"), "wrongtype");
        assert_eq!(error_kind(b"-MYMODULE boom\r\n"), "other_error");
    }
}
