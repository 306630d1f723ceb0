//! The relay's TLS certificate: from files, or self-signed for development.
//!
//! `--self-signed` keeps a local CA in the state dir (`ca.pem`, `ca.key`) and
//! issues a fresh server certificate from it at every start, for the names the
//! relay answers to. Agents and clients trust `ca.pem`; it survives restarts.
//!
//! Nodes of a cluster (`--database-url`) share one CA kept in the database
//! ([`self_signed_shared`]): the first node to start creates it, every node
//! issues its server certificate from it and writes its certificate (not
//! its key) to its state dir's `ca.pem`.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::error::RelayError;

/// A certificate chain and its key, ready for rustls.
pub struct CertifiedKey {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

/// Loads a certificate chain and key from PEM files.
pub fn from_files(cert: &Path, key: &Path) -> Result<CertifiedKey, RelayError> {
    Ok(CertifiedKey {
        chain: tunnel::tls::load_certs(cert)?,
        key: tunnel::tls::load_key(key)?,
    })
}

fn ca_params() -> Result<CertificateParams, RelayError> {
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(cert_err)?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "Drawbridge relay local CA");
    dn.push(DnType::OrganizationName, "Drawbridge (self-signed)");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(params)
}

/// Where the self-signed CA lives.
pub fn ca_path(state_dir: &Path) -> PathBuf {
    state_dir.join("ca.pem")
}

/// Ensures a local CA exists in `state_dir` and issues a server certificate
/// for `names` (DNS names or IP addresses).
pub fn self_signed(state_dir: &Path, names: &[String]) -> Result<CertifiedKey, RelayError> {
    std::fs::create_dir_all(state_dir).map_err(|source| RelayError::File {
        what: "cannot create state dir",
        path: state_dir.to_path_buf(),
        source,
    })?;
    let ca_key_path = state_dir.join("ca.key");
    let ca_cert_path = ca_path(state_dir);
    let params = ca_params()?;
    let ca_key = match (read_opt(&ca_key_path)?, ca_cert_path.exists()) {
        (Some(pem), true) => KeyPair::from_pem(&pem).map_err(cert_err)?,
        _ => {
            let key = KeyPair::generate().map_err(cert_err)?;
            let cert = params.self_signed(&key).map_err(cert_err)?;
            write_private(&ca_key_path, key.serialize_pem().as_bytes())?;
            write_file(&ca_cert_path, cert.pem().as_bytes())?;
            tracing::info!(ca = %ca_cert_path.display(), "created a local certificate authority");
            key
        }
    };
    let ca_der = tunnel::tls::load_certs(&ca_cert_path)?;
    issue(params, ca_key, ca_der, names)
}

/// The name of the shared CA in the database: its certificate then its key,
/// PEM.
const CA_SECRET: &str = "ca";

/// As [`self_signed`], for a node of a cluster: the CA is the one in the
/// database (`store`), created there by the first node to start (atomically:
/// nodes starting together end with one CA; a state dir that has a CA
/// already offers that one). Its certificate is written to `state_dir`'s
/// `ca.pem` for agents, clients and peers to trust; its key stays in the
/// database (a state dir `ca.key` of another CA is removed, so that it is
/// never paired with this `ca.pem`).
pub async fn self_signed_shared(
    store: &dyn ::store::Store,
    state_dir: &Path,
    names: &[String],
) -> Result<CertifiedKey, RelayError> {
    std::fs::create_dir_all(state_dir).map_err(|source| RelayError::File {
        what: "cannot create state dir",
        path: state_dir.to_path_buf(),
        source,
    })?;
    let ca_key_path = state_dir.join("ca.key");
    let ca_cert_path = ca_path(state_dir);
    let params = ca_params()?;
    let local = match (read_opt(&ca_key_path)?, read_opt(&ca_cert_path)?) {
        (Some(key), Some(cert)) => Some(format!("{cert}{key}")),
        _ => None,
    };
    let offered = match &local {
        Some(pair) => pair.clone(),
        None => {
            let key = KeyPair::generate().map_err(cert_err)?;
            let cert = params.self_signed(&key).map_err(cert_err)?;
            format!("{}{}", cert.pem(), key.serialize_pem())
        }
    };
    let stored = store.create_secret(CA_SECRET, &offered).await?;
    if stored == offered {
        tracing::info!("stored this node's certificate authority in the database");
    }
    let (cert_pem, key_pem) = split_pair(&stored)?;
    let ca_key = KeyPair::from_pem(key_pem).map_err(cert_err)?;
    if local.as_deref().is_some_and(|l| l != stored) {
        std::fs::remove_file(&ca_key_path).map_err(|source| RelayError::File {
            what: "cannot remove",
            path: ca_key_path.clone(),
            source,
        })?;
    }
    if read_opt(&ca_cert_path)?.as_deref() != Some(cert_pem) {
        write_file(&ca_cert_path, cert_pem.as_bytes())?;
    }
    let ca_der = tunnel::tls::load_certs(&ca_cert_path)?;
    issue(params, ca_key, ca_der, names)
}

/// A stored CA (its certificate then its key, PEM) as its two parts.
fn split_pair(pair: &str) -> Result<(&str, &str), RelayError> {
    let at = pair.find("-----BEGIN PRIVATE KEY-----").ok_or_else(|| {
        RelayError::Certificate("the certificate authority in the database has no key".into())
    })?;
    Ok(pair.split_at(at))
}

/// A server certificate for `names` (and the loopback names), issued by the
/// CA of `params` and `ca_key`, chained to `ca_der`.
fn issue(
    params: CertificateParams,
    ca_key: KeyPair,
    ca_der: Vec<CertificateDer<'static>>,
    names: &[String],
) -> Result<CertifiedKey, RelayError> {
    let issuer = Issuer::new(params, ca_key);

    let mut sans: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
    for n in names {
        if !sans.contains(n) {
            sans.push(n.clone());
        }
    }
    let mut leaf = CertificateParams::new(sans).map_err(cert_err)?;
    let mut dn = DistinguishedName::new();
    dn.push(
        DnType::CommonName,
        names.first().map(String::as_str).unwrap_or("localhost"),
    );
    leaf.distinguished_name = dn;
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let leaf_key = KeyPair::generate().map_err(cert_err)?;
    let cert = leaf.signed_by(&leaf_key, &issuer).map_err(cert_err)?;
    let mut chain = vec![cert.der().clone()];
    chain.extend(ca_der);
    Ok(CertifiedKey {
        chain,
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
    })
}

/// Whether `host` is an IP literal (for SANs and SNI decisions).
pub fn is_ip(host: &str) -> bool {
    host.trim_matches(['[', ']']).parse::<IpAddr>().is_ok()
}

fn read_opt(path: &Path) -> Result<Option<String>, RelayError> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(RelayError::File {
            what: "cannot read",
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn write_file(path: &Path, data: &[u8]) -> Result<(), RelayError> {
    std::fs::write(path, data).map_err(|source| RelayError::File {
        what: "cannot write",
        path: path.to_path_buf(),
        source,
    })
}

fn write_private(path: &Path, data: &[u8]) -> Result<(), RelayError> {
    write_file(path, data)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(
            |source| RelayError::File {
                what: "cannot restrict permissions of",
                path: path.to_path_buf(),
                source,
            },
        )?;
    }
    Ok(())
}

fn cert_err(e: rcgen::Error) -> RelayError {
    RelayError::Certificate(e.to_string())
}
