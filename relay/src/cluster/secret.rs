//! The secret the nodes of a cluster share (`--cluster-secret-file`).

use std::path::Path;

use crate::RelayError;

/// The least length of a cluster secret, in bytes.
pub const MIN_LEN: usize = 32;

/// The cluster's shared secret, as an HMAC-SHA256 key.
pub struct ClusterSecret {
    pub(crate) key: ring::hmac::Key,
}

impl ClusterSecret {
    /// Reads the secret from `path` (surrounding whitespace ignored).
    pub fn load(path: &Path) -> Result<ClusterSecret, RelayError> {
        let text = std::fs::read(path).map_err(|source| RelayError::File {
            what: "cannot read the cluster secret",
            path: path.to_path_buf(),
            source,
        })?;
        let secret = text.trim_ascii();
        if secret.len() < MIN_LEN {
            return Err(RelayError::Config(format!(
                "the cluster secret in {} has {} bytes; it needs at least {MIN_LEN} (e.g. `openssl rand -hex 32`)",
                path.display(),
                secret.len()
            )));
        }
        Ok(ClusterSecret {
            key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret),
        })
    }
}

/// The request header that carries a forwarded request's signature:
/// `t=UNIX_SECONDS; node=NODE_ID; sig=HEX`.
pub const SIGNATURE_HEADER: &str = "drawbridge-forwarded";
/// How long a signature is valid (either way of the clock).
pub const VALIDITY_SECS: i64 = 30;

/// Why a forwarded request's signature is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the forwarding signature is malformed")]
    Malformed,
    #[error("the forwarding signature is {0} s away from this node's clock")]
    Expired(i64),
    #[error("the forwarding signature does not verify")]
    Forged,
}

/// A verified forwarding signature: who forwarded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forwarded {
    pub node: String,
}

impl ClusterSecret {
    /// The signature header's value for a request `method path` forwarded
    /// by `node` at `now` (Unix seconds) from client `client`.
    pub fn sign(&self, method: &str, path: &str, node: &str, client: &str, now: i64) -> String {
        let tag = ring::hmac::sign(&self.key, &signed_text(method, path, node, client, now));
        format!("t={now}; node={node}; sig={}", hex::encode(tag.as_ref()))
    }

    /// Checks a signature header's `value` for a request `method path`
    /// from `client` at `now`.
    pub fn verify(
        &self,
        value: &str,
        method: &str,
        path: &str,
        client: &str,
        now: i64,
    ) -> Result<Forwarded, SignatureError> {
        let (mut t, mut node, mut sig) = (None, None, None);
        for part in value.split(';') {
            match part.trim().split_once('=') {
                Some(("t", v)) => t = v.parse::<i64>().ok(),
                Some(("node", v)) => node = Some(v),
                Some(("sig", v)) => sig = hex::decode(v).ok(),
                _ => return Err(SignatureError::Malformed),
            }
        }
        let (Some(t), Some(node), Some(sig)) = (t, node, sig) else {
            return Err(SignatureError::Malformed);
        };
        if (now - t).abs() > VALIDITY_SECS {
            return Err(SignatureError::Expired(now - t));
        }
        ring::hmac::verify(&self.key, &signed_text(method, path, node, client, t), &sig)
            .map_err(|_| SignatureError::Forged)?;
        Ok(Forwarded {
            node: node.to_owned(),
        })
    }
}

/// What a forwarding signature covers (one field a line; none may hold a
/// line break: a method, a request target, a node id, an address).
fn signed_text(method: &str, path: &str, node: &str, client: &str, t: i64) -> Vec<u8> {
    format!("drawbridge-forwarded/1\n{method}\n{path}\n{node}\n{client}\n{t}").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(text: &str) -> ClusterSecret {
        ClusterSecret {
            key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, text.as_bytes()),
        }
    }

    #[test]
    fn a_signature_verifies_only_for_what_it_signed_while_fresh() {
        let s = secret("0123456789abcdef0123456789abcdef");
        let v = s.sign("POST", "/mcp/db", "n1", "192.0.2.1", 1000);
        assert_eq!(
            s.verify(&v, "POST", "/mcp/db", "192.0.2.1", 1010),
            Ok(Forwarded { node: "n1".into() })
        );
        for (method, path, client) in [
            ("GET", "/mcp/db", "192.0.2.1"),
            ("POST", "/mcp/other", "192.0.2.1"),
            ("POST", "/mcp/db", "192.0.2.2"),
        ] {
            assert_eq!(
                s.verify(&v, method, path, client, 1000),
                Err(SignatureError::Forged)
            );
        }
        assert_eq!(
            s.verify(&v, "POST", "/mcp/db", "192.0.2.1", 1000 + VALIDITY_SECS + 1),
            Err(SignatureError::Expired(VALIDITY_SECS + 1))
        );
        // Another cluster's secret, a changed node or time, garbage.
        let other = secret("another secret of thirty-two bytes");
        assert_eq!(
            other.verify(&v, "POST", "/mcp/db", "192.0.2.1", 1000),
            Err(SignatureError::Forged)
        );
        let moved = v.replace("node=n1", "node=n2");
        assert_eq!(
            s.verify(&moved, "POST", "/mcp/db", "192.0.2.1", 1000),
            Err(SignatureError::Forged)
        );
        let later = v.replace("t=1000", "t=1001");
        assert_eq!(
            s.verify(&later, "POST", "/mcp/db", "192.0.2.1", 1000),
            Err(SignatureError::Forged)
        );
        for bad in [
            "",
            "t=1000",
            "sig=zz; t=1; node=n1",
            "x=1; t=1000; node=n1; sig=00",
        ] {
            assert_eq!(
                s.verify(bad, "POST", "/mcp/db", "192.0.2.1", 1000),
                Err(SignatureError::Malformed),
                "{bad}"
            );
        }
    }
}
