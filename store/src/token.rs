//! Token secrets: generation, format and hashing.
//!
//! A token is `dbat_` (agent) or `dbct_` (client) followed by 64 hex digits of
//! randomness (256 bits). The distinctive prefixes let secret scanners find
//! leaked tokens. Only the SHA-256 of a token is stored: the secret has full
//! entropy, so a slow password hash would add nothing.

use std::fmt;

use ring::digest;
use ring::rand::{SecureRandom, SystemRandom};

/// What a token lets its holder do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// Connects an agent and serves routes.
    Agent,
    /// Calls routes as a client (a personal access token).
    Client,
}

impl TokenKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenKind::Agent => "agent",
            TokenKind::Client => "client",
        }
    }

    pub fn parse(s: &str) -> Option<TokenKind> {
        match s {
            "agent" => Some(TokenKind::Agent),
            "client" => Some(TokenKind::Client),
            _ => None,
        }
    }

    fn prefix(self) -> &'static str {
        match self {
            TokenKind::Agent => "dbat_",
            TokenKind::Client => "dbct_",
        }
    }
}

impl fmt::Display for TokenKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A token secret. `Debug` never shows it.
pub struct Secret(String);

impl Secret {
    /// Generates a new secret of the given kind.
    pub fn generate(kind: TokenKind) -> Secret {
        Secret(format!("{}{}", kind.prefix(), random_hex(32)))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// The kind a presented token claims by its prefix, if it looks like one of ours.
pub fn claimed_kind(presented: &str) -> Option<TokenKind> {
    let (kind, rest) = if let Some(rest) = presented.strip_prefix("dbat_") {
        (TokenKind::Agent, rest)
    } else if let Some(rest) = presented.strip_prefix("dbct_") {
        (TokenKind::Client, rest)
    } else {
        return None;
    };
    (rest.len() == 64 && rest.bytes().all(|b| b.is_ascii_hexdigit())).then_some(kind)
}

/// The stored form of a token.
pub fn hash(presented: &str) -> Vec<u8> {
    digest::digest(&digest::SHA256, presented.as_bytes())
        .as_ref()
        .to_vec()
}

/// `n` random bytes as lowercase hex.
pub fn random_hex(n: usize) -> String {
    let mut buf = vec![0u8; n];
    // The system RNG does not fail on supported platforms; if it ever did,
    // continuing with zeros would mint guessable credentials, so stop.
    if SystemRandom::new().fill(&mut buf).is_err() {
        panic!("the system random number generator failed");
    }
    hex::encode(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_are_recognised_and_distinct() {
        let a = Secret::generate(TokenKind::Agent);
        let c = Secret::generate(TokenKind::Client);
        assert_eq!(claimed_kind(a.expose()), Some(TokenKind::Agent));
        assert_eq!(claimed_kind(c.expose()), Some(TokenKind::Client));
        assert_ne!(hash(a.expose()), hash(c.expose()));
        assert_eq!(format!("{a:?}"), "Secret(***)");
    }

    #[test]
    fn malformed_tokens_are_not_recognised() {
        for bad in [
            "",
            "dbat_",
            "dbat_xyz",
            "Bearer dbat_00",
            &format!("dbxx_{}", "0".repeat(64)),
        ] {
            assert_eq!(claimed_kind(bad), None, "{bad}");
        }
    }
}
