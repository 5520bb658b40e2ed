//! Why an ACL rule was not applied.

/// Why a rule was not applied; the texts are Redis'.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    /// `+foo`, `-@bar`: no such command or category.
    #[error("Unknown command or category name in ACL")]
    UnknownCommand,
    /// Not a rule, or a pattern with spaces.
    #[error("Syntax error")]
    Syntax,
    /// A key pattern after `allkeys`.
    #[error("Adding a pattern after the * pattern (or the 'allkeys' flag) is not valid and does not have any effect. Try 'resetkeys' to start with an empty list of patterns")]
    KeyAfterAll,
    /// A channel pattern after `allchannels`.
    #[error("Adding a pattern after the * pattern (or the 'allchannels' flag) is not valid and does not have any effect. Try 'resetchannels' to start with an empty list of channels")]
    ChannelAfterAll,
    /// `<pass` / `!hash` of a password the user does not have.
    #[error("The password you are trying to remove from the user does not exist")]
    NoSuchPassword,
    /// `#hash` / `!hash` that is not 64 lowercase hex digits.
    #[error("The password hash must be exactly 64 characters and contain only lowercase hexadecimal characters")]
    BadHash,
    /// `+config|get|x`.
    #[error("Allowing first-arg of a subcommand is not supported")]
    FirstArgOfSubcommand,
}
