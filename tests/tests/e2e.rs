//! End-to-end tests: one test binary (faster to link), one module per theme.

#[path = "e2e/forwarding.rs"]
mod forwarding;
#[path = "e2e/transports.rs"]
mod transports;
