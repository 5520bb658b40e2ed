//! Named points in the migration engine where a test can freeze the proxy, to SIGKILL it at an
//! exact step of a slot move (tests/migration_kill.rs).
//!
//! Only builds with `--features failpoints` have them; everywhere else [`fires`] is a constant
//! `false` and the points compile to nothing. In such a build, `FAILPOINTS=<name>=1*return`
//! (the [`fail`](https://docs.rs/fail) crate's syntax) makes the first pass through `<name>`
//! stop the task there: the migration worker hangs at that step, the rest of the proxy keeps
//! serving, and a warning names the point so that the test knows when to kill.

/// Every failpoint of the migration executor, in the order a slot move passes them.
pub const MIGRATION_STEPS: [&str; 7] = [
    "migration::after_importing",
    "migration::after_migrating",
    "migration::mid_migrate",
    "migration::before_target_node",
    "migration::mid_target_node",
    "migration::after_target_node",
    "migration::after_source_node",
];

/// True when the failpoint `name` is configured to fire now.
#[cfg(feature = "failpoints")]
pub fn fires(name: &str) -> bool {
    fail::fail_point!(name, |_| true);
    false
}

/// True when the failpoint `name` is configured to fire now (never, in this build).
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn fires(_name: &str) -> bool {
    false
}

/// Stops the calling task for good at `name` when that failpoint fires; returns at once
/// otherwise.
pub async fn freeze_at(name: &str) {
    if fires(name) {
        tracing::warn!(failpoint = name, "failpoint reached: this task stops here");
        std::future::pending::<()>().await;
    }
}

/// Reads `FAILPOINTS` from the environment; the returned guard keeps them configured.
#[cfg(feature = "failpoints")]
pub fn setup() -> fail::FailScenario<'static> {
    fail::FailScenario::setup()
}
