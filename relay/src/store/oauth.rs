//! The OAuth side of the state store (in the `store` crate): registered
//! clients, consents, login sessions, authorization codes, tokens and
//! device authorization requests.

pub use ::store::oauth::*;
