//! Node bytes into the reply scanner (see `slotproxy::fuzzing::reply_scanner`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| slotproxy::fuzzing::reply_scanner(data));
