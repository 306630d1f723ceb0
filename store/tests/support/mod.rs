//! Helpers of the store's tests.

pub mod postgres;
