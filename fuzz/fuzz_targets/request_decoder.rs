//! Client bytes into the request decoder (see `slotproxy::fuzzing::request_decoder`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| slotproxy::fuzzing::request_decoder(data));
