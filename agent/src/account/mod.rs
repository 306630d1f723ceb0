//! The agent's account at a relay: `agent login` (the device grant,
//! [`login`]) and the credential it keeps ([`credentials`]); `agent share`
//! ([`share`]); both through the relay's HTTP API ([`relay_api`]).

pub mod credentials;
pub mod login;
pub mod relay_api;
pub mod share;
