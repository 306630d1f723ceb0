//! The relay's TLS certificate, swappable while serving.
//!
//! Every TLS endpoint of the relay (HTTPS and the TLS tunnel on TCP, the QUIC
//! tunnel on UDP) asks this resolver for the certificate of each handshake.
//! [`CertResolver::swap`] replaces it: new connections get the new one at
//! once, established connections (agents' tunnels included) keep theirs.
//!
//! It also answers ACME TLS-ALPN-01 validation (RFC 8737): a ClientHello
//! offering ALPN `acme-tls/1` gets the challenge certificate pending for the
//! name it asks for, or no certificate at all (the handshake fails).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::RelayError;

/// The ALPN protocol of ACME TLS-ALPN-01 validation (RFC 8737).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// The certificate the relay serves, and ACME challenge certificates.
#[derive(Debug)]
pub struct CertResolver {
    current: ArcSwap<CertifiedKey>,
    /// Lower-case DNS name → its TLS-ALPN-01 challenge certificate.
    challenges: Mutex<HashMap<String, Arc<CertifiedKey>>>,
}

impl CertResolver {
    pub fn new(key: CertifiedKey) -> Self {
        CertResolver {
            current: ArcSwap::from_pointee(key),
            challenges: Mutex::new(HashMap::new()),
        }
    }

    /// Serves `key` from the next handshake on.
    pub fn swap(&self, key: CertifiedKey) {
        self.current.store(Arc::new(key));
    }

    /// The certificate served now.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current.load_full()
    }

    /// Answers `acme-tls/1` handshakes for `name` with `key` until removed.
    pub fn set_challenge(&self, name: &str, key: CertifiedKey) {
        self.lock_challenges()
            .insert(name.to_ascii_lowercase(), Arc::new(key));
    }

    pub fn remove_challenge(&self, name: &str) {
        self.lock_challenges().remove(&name.to_ascii_lowercase());
    }

    fn lock_challenges(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<CertifiedKey>>> {
        // A panic while holding the lock leaves a plain map behind: usable.
        self.challenges
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let acme = hello
            .alpn()
            .is_some_and(|mut protocols| protocols.any(|p| p == ACME_TLS_ALPN));
        if acme {
            let name = hello.server_name()?.to_ascii_lowercase();
            return self.lock_challenges().get(&name).cloned();
        }
        Some(self.current.load_full())
    }
}

/// A chain and key, checked to fit each other, ready to serve.
pub fn certified_key(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<CertifiedKey, RelayError> {
    CertifiedKey::from_der(chain, key, &tunnel::tls::provider())
        .map_err(|e| RelayError::Certificate(format!("certificate and key do not fit: {e}")))
}

/// When a DER certificate expires (its notAfter), in Unix seconds.
pub fn not_after(der: &[u8]) -> Result<i64, RelayError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| RelayError::TlsCertificate(format!("cannot read the certificate: {e}")))?;
    Ok(cert.validity().not_after.timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, KeyPair};
    use rustls_pki_types::PrivatePkcs8KeyDer;

    fn key_for(name: &str) -> CertifiedKey {
        let key = KeyPair::generate().expect("key");
        let cert = CertificateParams::new(vec![name.to_owned()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        certified_key(
            vec![cert.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .expect("fits")
    }

    #[test]
    fn swap_replaces_the_served_certificate() {
        let first = key_for("a.example");
        let first_der = first.cert[0].clone();
        let resolver = CertResolver::new(first);
        assert_eq!(resolver.current().cert[0], first_der);
        let second = key_for("a.example");
        let second_der = second.cert[0].clone();
        resolver.swap(second);
        assert_eq!(resolver.current().cert[0], second_der);
    }

    #[test]
    fn a_key_that_does_not_fit_its_certificate_is_refused() {
        let a = key_for("a.example");
        let b = KeyPair::generate().expect("key");
        let err = certified_key(
            a.cert.clone(),
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(b.serialize_der())),
        )
        .expect_err("mismatch");
        assert!(err.to_string().contains("do not fit"), "{err}");
    }

    #[test]
    fn expiry_is_read_from_the_certificate() {
        let k = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(vec!["x".to_owned()]).expect("params");
        params.not_after = rcgen::date_time_ymd(2031, 5, 17);
        let cert = params.self_signed(&k).expect("cert");
        // 2031-05-17T00:00:00Z
        assert_eq!(not_after(cert.der()).expect("parsed"), 1_936_742_400);
    }
}
