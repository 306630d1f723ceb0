//! TLS configuration shared by both transports (ring is the one crypto provider).

use std::path::Path;
use std::sync::Arc;

use rustls::crypto::ring;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::TunnelError;

/// The crypto provider every TLS and QUIC endpoint in Drawbridge uses.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(ring::default_provider())
}

/// Reads a PEM certificate chain.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TunnelError> {
    let pem = std::fs::read(path).map_err(|source| TunnelError::File {
        path: path.display().to_string(),
        source,
    })?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|source| TunnelError::File {
            path: path.display().to_string(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TunnelError::NoPem {
            what: "certificate",
            path: path.display().to_string(),
        });
    }
    Ok(certs)
}

/// Reads a PEM private key (PKCS#8, PKCS#1 or SEC1).
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TunnelError> {
    let pem = std::fs::read(path).map_err(|source| TunnelError::File {
        path: path.display().to_string(),
        source,
    })?;
    rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|source| TunnelError::File {
            path: path.display().to_string(),
            source,
        })?
        .ok_or_else(|| TunnelError::NoPem {
            what: "private key",
            path: path.display().to_string(),
        })
}

/// A server configuration offering `alpn` protocols, in preference order.
pub fn server_config(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    alpn: &[&[u8]],
) -> Result<rustls::ServerConfig, TunnelError> {
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TunnelError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TunnelError::Tls(format!("certificate and key do not fit: {e}")))?;
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(cfg)
}

/// A server configuration whose certificate `resolver` picks per handshake
/// (a certificate that can be swapped while serving), offering `alpn`.
pub fn server_config_with_resolver(
    resolver: Arc<dyn rustls::server::ResolvesServerCert>,
    alpn: &[&[u8]],
) -> Result<rustls::ServerConfig, TunnelError> {
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TunnelError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(cfg)
}

/// A client configuration that trusts the public web PKI and, if given, the
/// CA certificates in `extra_ca` (for a self-signed or private relay).
pub fn client_config(
    extra_ca: Option<&Path>,
    alpn: &[&[u8]],
) -> Result<rustls::ClientConfig, TunnelError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = extra_ca {
        for cert in load_certs(path)? {
            roots
                .add(cert)
                .map_err(|e| TunnelError::Tls(format!("bad CA in {}: {e}", path.display())))?;
        }
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TunnelError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(cfg)
}
