//! Token secrets: generation, format and hashing (in the `store` crate).

pub use ::store::token::*;
