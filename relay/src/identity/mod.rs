//! Who signs in, as the authorization server's shared state holds it: the
//! clients (registration metadata and redirect-URI rules, [`clients`];
//! client ID metadata documents, [`cimd`], fetched behind the [`ssrf`]
//! guard), local accounts ([`accounts`]) and their password checks
//! ([`password_checks`]), and the upstream identity providers, OpenID
//! Connect or GitHub ([`upstream`], [`upstream_oidc`], [`github`],
//! [`upstream_http`]), with their pending sign-ins. The endpoints that use
//! them are in `oauth`.

pub mod accounts;
pub mod cimd;
pub mod clients;
pub mod github;
pub mod password_checks;
pub mod ssrf;
pub mod upstream;
pub mod upstream_http;
pub mod upstream_oidc;

/// Compares two secrets in constant time.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_whole() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
    }
}
