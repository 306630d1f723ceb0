//! Fuzz target `jsonrpc`: see `policy::fuzz::jsonrpc` for what is checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    policy::fuzz::jsonrpc(data);
});
