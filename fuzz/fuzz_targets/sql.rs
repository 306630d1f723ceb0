//! Fuzz target `sql`: see `policy::fuzz::sql` for what is checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    policy::fuzz::sql(data);
});
