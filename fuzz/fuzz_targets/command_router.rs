//! Client bytes through lookup, key positions and the multi-key split (see
//! `slotproxy::fuzzing::command_router`). The command table is a real node's `COMMAND` reply
//! when `SLOTPROXY_FUZZ_COMMANDS` names a file holding it (fuzz/run.sh saves one), else a
//! small built-in table.
#![no_main]

use slotproxy::protocol::command::CommandTable;
use std::sync::OnceLock;

fn table() -> &'static CommandTable {
    static TABLE: OnceLock<CommandTable> = OnceLock::new();
    TABLE.get_or_init(|| {
        let raw = std::env::var_os("SLOTPROXY_FUZZ_COMMANDS").and_then(|p| std::fs::read(p).ok());
        slotproxy::fuzzing::command_table(raw.as_deref())
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| slotproxy::fuzzing::command_router(table(), data));
