//! Helpers of the store's tests.

/// The throwaway PostgreSQL server, shared with the end-to-end tests: one
/// file, included rather than depended on (the e2e crate depends on the
/// relay, which depends on this crate).
#[path = "../../../tests/src/postgres.rs"]
pub mod postgres;
