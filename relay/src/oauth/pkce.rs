//! PKCE (RFC 7636), S256 only.

use base64::Engine as _;
use ring::digest;

/// Whether `challenge` has the shape of an S256 challenge: 43 characters of
/// base64url (a SHA-256 without padding).
pub fn valid_challenge(challenge: &str) -> bool {
    challenge.len() == 43
        && challenge
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Whether `verifier` is well formed (43 to 128 unreserved characters) and
/// hashes to `challenge`.
pub fn verify(verifier: &str, challenge: &str) -> bool {
    let well_formed = (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
    well_formed && super::ct_eq(s256(verifier).as_bytes(), challenge.as_bytes())
}

/// BASE64URL(SHA256(verifier)), unpadded.
pub fn s256(verifier: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(digest::digest(&digest::SHA256, verifier.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rfc_7636_example_verifies() {
        // RFC 7636 Appendix B.
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
        assert_eq!(s256(verifier), challenge);
        assert!(valid_challenge(challenge));
        assert!(verify(verifier, challenge));
    }

    #[test]
    fn wrong_or_malformed_verifiers_fail() {
        let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
        assert!(!verify(
            "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXK",
            challenge
        ));
        // Too short, even if it were to hash right.
        let short = "abc";
        assert!(!verify(short, &s256(short)));
        // A character outside the unreserved set.
        let odd = format!("{}+", "a".repeat(50));
        assert!(!verify(&odd, &s256(&odd)));
        // The plain method's "challenge" (the verifier itself) is not S256.
        let v = "a".repeat(43);
        assert!(!verify(&v, &v));
        assert!(!valid_challenge("short"));
        assert!(!valid_challenge(&format!("{}=", "a".repeat(42))));
    }
}
