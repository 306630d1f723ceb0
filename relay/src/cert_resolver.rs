//! The certificate the relay serves, swappable while it runs.
//!
//! Both TLS front doors (HTTPS and the TLS tunnel on TCP, the QUIC tunnel on
//! UDP) resolve their certificate here at every handshake, so a swapped
//! certificate is what the next handshake gets; connections already made
//! (agents' tunnels, clients' keep-alive connections) are not touched.
//! Whatever obtains certificates (files reloaded on SIGHUP, ACME renewal)
//! calls [`CertResolver::swap`].

use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign;

use crate::certs::CertifiedKey;
use crate::error::RelayError;

/// Hands every TLS handshake the current certificate.
#[derive(Debug)]
pub struct CertResolver {
    current: ArcSwap<sign::CertifiedKey>,
}

impl CertResolver {
    /// A resolver serving `key` until the next [`swap`](Self::swap).
    pub fn new(key: CertifiedKey) -> Result<Arc<CertResolver>, RelayError> {
        Ok(Arc::new(CertResolver {
            current: ArcSwap::from_pointee(signing(key)?),
        }))
    }

    /// Serves `key` from the next handshake on. A key that does not match
    /// its certificate is refused and the current one stays.
    pub fn swap(&self, key: CertifiedKey) -> Result<(), RelayError> {
        self.current.store(Arc::new(signing(key)?));
        Ok(())
    }

    /// The leaf certificate served now (DER).
    pub fn leaf(&self) -> Option<rustls_pki_types::CertificateDer<'static>> {
        self.current.load().cert.first().cloned()
    }

    /// A server configuration offering `alpn` whose certificate comes from
    /// this resolver.
    pub fn server_config(
        self: &Arc<Self>,
        alpn: &[&[u8]],
    ) -> Result<rustls::ServerConfig, RelayError> {
        let mut cfg = rustls::ServerConfig::builder_with_provider(tunnel::tls::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| RelayError::TlsCertificate(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(cfg)
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<sign::CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// The rustls form of a chain and its key, checked to belong together.
fn signing(key: CertifiedKey) -> Result<sign::CertifiedKey, RelayError> {
    sign::CertifiedKey::from_der(key.chain, key.key, &tunnel::tls::provider())
        .map_err(|e| RelayError::TlsCertificate(format!("certificate and key do not fit: {e}")))
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
    use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

    fn key(name: &str) -> (CertifiedKey, Vec<u8>) {
        let k = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec![name.to_owned()])
            .expect("params")
            .self_signed(&k)
            .expect("cert");
        let der = cert.der().to_vec();
        (
            CertifiedKey {
                chain: vec![cert.der().clone()],
                key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(k.serialize_der())),
            },
            der,
        )
    }

    #[test]
    fn a_swap_changes_the_served_certificate() {
        let (first, first_der) = key("a.example");
        let (second, second_der) = key("b.example");
        let r = CertResolver::new(first).expect("resolver");
        assert_eq!(r.leaf().expect("leaf").as_ref(), first_der.as_slice());
        r.swap(second).expect("swap");
        assert_eq!(r.leaf().expect("leaf").as_ref(), second_der.as_slice());
    }

    #[test]
    fn a_key_of_another_certificate_is_refused_and_the_old_one_stays() {
        let (first, first_der) = key("a.example");
        let (second, _) = key("b.example");
        let (third, _) = key("c.example");
        let r = CertResolver::new(first).expect("resolver");
        let mismatched = CertifiedKey {
            chain: second.chain,
            key: third.key,
        };
        let err = r.swap(mismatched).expect_err("mismatch refused");
        assert!(err.to_string().contains("do not fit"), "{err}");
        assert_eq!(r.leaf().expect("leaf").as_ref(), first_der.as_slice());
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
