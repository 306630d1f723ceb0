//! Fuzz target `frames`: see `protocol::fuzz::frames` for what is checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    protocol::fuzz::frames(data);
});
