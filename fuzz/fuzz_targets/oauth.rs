//! Fuzz target `oauth`: see `relay::fuzz::oauth` for what is checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    relay::fuzz::oauth(data);
});
