//! Certificates through ACME (RFC 8555), validated with TLS-ALPN-01 (RFC 8737)
//! on the relay's own port: nothing else needs to listen.
//!
//! State in `<state-dir>/acme/`: `account.json` (the account's key and URL,
//! mode 0600), `cert.pem` (the chain) and `key.pem` (mode 0600).
//!
//! At start, a stored certificate for the domain that has not expired is
//! served at once. Without one, the relay serves a temporary self-signed
//! certificate (clients see an untrusted certificate, agents refuse it) until
//! the CA has issued the real one, usually within seconds.
//!
//! A certificate is renewed once a third of its lifetime remains (30 days of
//! Let's Encrypt's 90). A failed attempt is retried with exponential backoff
//! (from 30 s, capped at 1 h, jittered) while the old certificate keeps being
//! served; every attempt and outcome is logged.
//!
//! Nodes of a cluster (`--database-url`) share all of it through the
//! database instead: see [`crate::tls::acme_cluster`].

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, BodyWrapper, ChallengeType, HttpClient,
    Identifier, NewAccount, NewOrder, OrderStatus, RetryPolicy,
};
use rcgen::{CertificateParams, CustomExtension, DistinguishedName, DnType, KeyPair};
use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tunnel::backoff::Backoff;

use crate::error::RelayError;
use crate::tls::resolver::{certified_key, CertResolver};

/// Certificates through ACME (TLS-ALPN-01 on the relay's own port).
#[derive(Debug, Clone)]
pub struct AcmeConfig {
    /// The DNS name the certificate is for (it must resolve to this relay).
    pub domain: String,
    /// The account's contact address (the CA's expiry and policy mail).
    pub email: String,
    /// The CA's directory URL.
    pub directory: String,
    /// PEM CA certificates to trust for the directory (a private CA such as
    /// a test server), besides the public web PKI.
    pub directory_ca: Option<PathBuf>,
    /// FOR TESTS: renew this long after a certificate is obtained or loaded,
    /// instead of when a third of its lifetime remains.
    pub renew_after: Option<Duration>,
}

impl AcmeConfig {
    /// Let's Encrypt's production directory.
    pub const LETS_ENCRYPT: &'static str = "https://acme-v02.api.letsencrypt.org/directory";
}

/// Why an attempt to obtain a certificate failed.
#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    #[error(transparent)]
    Protocol(#[from] instant_acme::Error),
    #[error(transparent)]
    Local(#[from] RelayError),
    #[error("the CA offers no tls-alpn-01 challenge for {0} (the relay validates only that way)")]
    NoTlsAlpnChallenge(String),
    #[error("the authorization for {domain} is {status:?}")]
    Authorization {
        domain: String,
        status: AuthorizationStatus,
    },
    #[error("the order became invalid: {0}")]
    Invalid(String),
    #[error("no answer from the CA within {0:?}")]
    Timeout(Duration),
}

/// When a certificate stops being valid, and when it was put into service.
#[derive(Debug, Clone)]
pub struct Validity {
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    /// The serial number, hex (for logs).
    pub serial: String,
    /// When this relay obtained or loaded it.
    pub in_service_since: SystemTime,
}

/// What the relay serves at start.
pub struct Initial {
    pub key: CertifiedKey,
    /// The stored certificate's validity, or `None` for a temporary one.
    pub stored: Option<Validity>,
}

/// The certificate to serve at start: the stored one when it is for the
/// domain and has not expired, else a temporary self-signed one.
pub fn initial_certificate(config: &AcmeConfig, state_dir: &Path) -> Result<Initial, RelayError> {
    let dir = acme_dir(state_dir);
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    if cert.exists() && key.exists() {
        match load_stored(&cert, &key, &config.domain) {
            Ok((key, validity)) if validity.not_after > SystemTime::now() => {
                tracing::info!(
                    domain = %config.domain,
                    serial = %validity.serial,
                    expires = %humantime::format_rfc3339_seconds(validity.not_after),
                    "ACME: serving the stored certificate"
                );
                return Ok(Initial {
                    key,
                    stored: Some(validity),
                });
            }
            Ok(_) => {
                tracing::warn!(cert = %cert.display(), "ACME: the stored certificate has expired")
            }
            Err(e) => {
                tracing::warn!(cert = %cert.display(), error = %e, "ACME: the stored certificate is not usable")
            }
        }
    }
    tracing::info!(
        domain = %config.domain,
        "ACME: no certificate yet; serving a temporary self-signed one until the CA issues it"
    );
    Ok(Initial {
        key: temporary_certificate(&config.domain)?,
        stored: None,
    })
}

/// Obtains and renews the certificate, swapping it into `resolver`.
pub struct Acme {
    pub(crate) config: AcmeConfig,
    dir: PathBuf,
    pub(crate) resolver: Arc<CertResolver>,
    /// A node of a cluster: the account, the challenges and the certificate
    /// are in the database, not in `dir`.
    pub(crate) shared: Option<crate::tls::acme_cluster::Shared>,
}

impl Acme {
    pub fn new(config: AcmeConfig, state_dir: &Path, resolver: Arc<CertResolver>) -> Self {
        Acme {
            config,
            dir: acme_dir(state_dir),
            resolver,
            shared: None,
        }
    }

    /// Renews `current` when due (obtains one at once if `None`), forever,
    /// until `shutdown`.
    pub async fn run(self, mut current: Option<Validity>, shutdown: CancellationToken) {
        loop {
            if let Some(v) = &current {
                let due = self.renew_at(v);
                tracing::info!(
                    domain = %self.config.domain,
                    serial = %v.serial,
                    renew_at = %humantime::format_rfc3339_seconds(due),
                    "ACME: next renewal"
                );
                let wait = due
                    .duration_since(SystemTime::now())
                    .unwrap_or(Duration::ZERO);
                tokio::select! {
                    _ = sleep_long(wait) => {}
                    _ = shutdown.cancelled() => return,
                }
            }
            let mut backoff = Backoff::new(Duration::from_secs(30), Duration::from_secs(3600));
            let mut attempt = 1u32;
            loop {
                tracing::info!(
                    domain = %self.config.domain,
                    directory = %self.config.directory,
                    attempt,
                    "ACME: requesting a certificate"
                );
                let outcome = tokio::select! {
                    o = tokio::time::timeout(ATTEMPT_TIMEOUT, self.obtain()) => o,
                    _ = shutdown.cancelled() => return,
                };
                self.resolver.remove_challenge(&self.config.domain);
                match outcome.unwrap_or(Err(AcmeError::Timeout(ATTEMPT_TIMEOUT))) {
                    Ok((key, validity)) => {
                        self.resolver.swap(key);
                        tracing::info!(
                            domain = %self.config.domain,
                            serial = %validity.serial,
                            expires = %humantime::format_rfc3339_seconds(validity.not_after),
                            "ACME: certificate obtained; now serving it"
                        );
                        current = Some(validity);
                        break;
                    }
                    Err(e) => {
                        let retry_in = backoff.next_delay();
                        tracing::warn!(
                            domain = %self.config.domain,
                            attempt,
                            error = %chain(&e),
                            retry_in = %humantime::format_duration(Duration::from_secs(retry_in.as_secs().max(1))),
                            "ACME: could not obtain a certificate; still serving the previous one"
                        );
                        tokio::select! {
                            _ = tokio::time::sleep(retry_in) => {}
                            _ = shutdown.cancelled() => return,
                        }
                        attempt = attempt.saturating_add(1);
                    }
                }
            }
        }
    }

    /// When to renew: a third of the lifetime before expiry (or, in tests,
    /// a fixed time after it went into service).
    pub(crate) fn renew_at(&self, v: &Validity) -> SystemTime {
        if let Some(after) = self.config.renew_after {
            return v.in_service_since + after;
        }
        let lifetime = v
            .not_after
            .duration_since(v.not_before)
            .unwrap_or(Duration::ZERO);
        v.not_after - lifetime / 3
    }

    /// One complete issuance: account, order, TLS-ALPN-01, CSR, certificate.
    pub(crate) async fn obtain(&self) -> Result<(CertifiedKey, Validity), AcmeError> {
        let domain = self.config.domain.as_str();
        let account = self.account().await?;
        let identifiers = [Identifier::Dns(domain.to_owned())];
        let mut order = account.new_order(&NewOrder::new(&identifiers)).await?;
        let mut authorizations = order.authorizations();
        while let Some(authz) = authorizations.next().await {
            let mut authz = authz?;
            match authz.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                status => {
                    return Err(AcmeError::Authorization {
                        domain: domain.to_owned(),
                        status,
                    })
                }
            }
            let mut challenge = authz
                .challenge(ChallengeType::TlsAlpn01)
                .ok_or_else(|| AcmeError::NoTlsAlpnChallenge(domain.to_owned()))?;
            let digest = challenge.key_authorization().digest();
            self.resolver
                .set_challenge(domain, challenge_certificate(domain, digest.as_ref())?);
            if let Some(state) = &self.shared {
                // Every other node answers it too.
                crate::tls::acme_cluster::put_challenge(state, domain, digest.as_ref()).await?;
            }
            challenge.set_ready().await?;
        }
        let polling = RetryPolicy::new()
            .initial_delay(Duration::from_millis(500))
            .timeout(Duration::from_secs(120));
        let status = order.poll_ready(&polling).await?;
        self.resolver.remove_challenge(domain);
        if let Some(state) = &self.shared {
            crate::tls::acme_cluster::remove_challenge(state, domain).await?;
        }
        if status != OrderStatus::Ready {
            let mut reasons = Vec::new();
            let mut authorizations = order.authorizations();
            while let Some(Ok(mut authz)) = authorizations.next().await {
                if let Ok(state) = authz.refresh().await {
                    reasons.extend(
                        state
                            .challenges
                            .iter()
                            .filter_map(|c| c.error.as_ref().map(|p| p.to_string())),
                    );
                }
            }
            return Err(AcmeError::Invalid(if reasons.is_empty() {
                format!("{status:?}")
            } else {
                reasons.join("; ")
            }));
        }

        let key = KeyPair::generate().map_err(cert_err)?;
        let mut params = CertificateParams::new(vec![domain.to_owned()]).map_err(cert_err)?;
        params.distinguished_name = DistinguishedName::new();
        let csr = params.serialize_request(&key).map_err(cert_err)?;
        order.finalize_csr(csr.der()).await?;
        let chain_pem = order.poll_certificate(&polling).await?;
        let key_pem = key.serialize_pem();

        let chain = parse_chain(chain_pem.as_bytes())?;
        let validity = leaf_validity(&chain[0], domain)?;
        let served = certified_key(
            chain,
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )?;
        if let Some(state) = &self.shared {
            crate::tls::acme_cluster::put_certificate(state, &chain_pem, &key_pem).await?;
            return Ok((served, validity));
        }
        create_dir_private(&self.dir)?;
        write_atomic(&self.dir.join("key.pem"), key_pem.as_bytes())?;
        write_atomic(&self.dir.join("cert.pem"), chain_pem.as_bytes())?;
        Ok((served, validity))
    }

    /// The stored account for this directory, or a new one.
    async fn account(&self) -> Result<Account, AcmeError> {
        let path = self.dir.join("account.json");
        let stored = match &self.shared {
            Some(state) => crate::tls::acme_cluster::account(state).await?,
            None => std::fs::read_to_string(&path).ok(),
        };
        if let Some(text) = stored {
            match serde_json::from_str::<StoredAccount>(&text) {
                Ok(stored) if stored.directory == self.config.directory => {
                    return Ok(Account::builder_with_http(self.http()?)
                        .from_credentials(stored.credentials)
                        .await?);
                }
                Ok(_) => tracing::info!(
                    directory = %self.config.directory,
                    "ACME: the stored account is for another directory; creating one"
                ),
                Err(e) => tracing::warn!(
                    path = %path.display(),
                    error = %e,
                    "ACME: the stored account is unreadable; creating one"
                ),
            }
        }
        let contact = format!("mailto:{}", self.config.email);
        let (account, credentials) = Account::builder_with_http(self.http()?)
            .create(
                &NewAccount {
                    contact: &[&contact],
                    terms_of_service_agreed: true,
                    only_return_existing: false,
                },
                self.config.directory.clone(),
                None,
            )
            .await?;
        let stored = StoredAccount {
            directory: self.config.directory.clone(),
            credentials,
        };
        let json = serde_json::to_vec_pretty(&stored)
            .map_err(|e| RelayError::Certificate(format!("ACME account: {e}")))?;
        if let Some(state) = &self.shared {
            crate::tls::acme_cluster::put_account(state, &json).await?;
            tracing::info!(id = %account.id(), "ACME: account created (in the database)");
            return Ok(account);
        }
        create_dir_private(&self.dir)?;
        write_atomic(&path, &json)?;
        tracing::info!(id = %account.id(), path = %path.display(), "ACME: account created");
        Ok(account)
    }

    /// An HTTPS client trusting the public web PKI and `--acme-directory-ca`.
    fn http(&self) -> Result<Box<dyn HttpClient>, RelayError> {
        let tls = tunnel::tls::client_config(self.config.directory_ca.as_deref(), &[])?;
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .enable_http2()
            .build();
        let client: hyper_util::client::legacy::Client<_, BodyWrapper<Bytes>> =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build(https);
        Ok(Box::new(client))
    }
}

/// How long one issuance may take in all.
pub(crate) const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Serialize, Deserialize)]
struct StoredAccount {
    directory: String,
    credentials: AccountCredentials,
}

fn acme_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("acme")
}

/// `tokio::time::sleep` for durations beyond its range (months).
async fn sleep_long(d: Duration) {
    let cap = Duration::from_secs(86_400 * 365);
    tokio::time::sleep(d.min(cap)).await;
}

/// The TLS-ALPN-01 answer for `domain`: a self-signed certificate with the
/// critical acmeIdentifier extension holding SHA-256(key authorization).
pub(crate) fn challenge_certificate(
    domain: &str,
    digest: &[u8],
) -> Result<CertifiedKey, RelayError> {
    let key = KeyPair::generate().map_err(cert_err)?;
    let mut params = CertificateParams::new(vec![domain.to_owned()]).map_err(cert_err)?;
    params.distinguished_name = DistinguishedName::new();
    params.custom_extensions = vec![CustomExtension::new_acme_identifier(digest)];
    let cert = params.self_signed(&key).map_err(cert_err)?;
    // Not through `certified_key`: its key check parses the certificate
    // with webpki, which refuses the critical acmeIdentifier extension.
    let signer = tunnel::tls::provider()
        .key_provider
        .load_private_key(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            key.serialize_der(),
        )))
        .map_err(|e| RelayError::Certificate(format!("challenge key: {e}")))?;
    Ok(CertifiedKey::new(vec![cert.der().clone()], signer))
}

/// What the relay serves until the CA has issued a certificate.
fn temporary_certificate(domain: &str) -> Result<CertifiedKey, RelayError> {
    let key = KeyPair::generate().map_err(cert_err)?;
    let mut params = CertificateParams::new(vec![domain.to_owned()]).map_err(cert_err)?;
    let mut dn = DistinguishedName::new();
    dn.push(
        DnType::CommonName,
        "Drawbridge relay: temporary certificate, waiting for ACME",
    );
    params.distinguished_name = dn;
    let cert = params.self_signed(&key).map_err(cert_err)?;
    certified_key(
        vec![cert.der().clone()],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    )
}

fn load_stored(
    cert: &Path,
    key: &Path,
    domain: &str,
) -> Result<(CertifiedKey, Validity), RelayError> {
    let chain = tunnel::tls::load_certs(cert)?;
    let validity = leaf_validity(&chain[0], domain)?;
    Ok((certified_key(chain, tunnel::tls::load_key(key)?)?, validity))
}

pub(crate) fn parse_chain(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, RelayError> {
    let mut reader = pem;
    let chain: Vec<_> = rustls_pemfile::certs(&mut reader)
        .collect::<Result<_, _>>()
        .map_err(|e| RelayError::Certificate(format!("the CA's certificate chain: {e}")))?;
    if chain.is_empty() {
        return Err(RelayError::Certificate(
            "the CA sent no certificate".to_owned(),
        ));
    }
    Ok(chain)
}

/// The leaf's validity; an error unless it names `domain`.
pub fn leaf_validity(leaf: &CertificateDer<'_>, domain: &str) -> Result<Validity, RelayError> {
    let (_, cert) = x509_parser::parse_x509_certificate(leaf)
        .map_err(|e| RelayError::Certificate(format!("unreadable certificate: {e}")))?;
    let names: Vec<String> = match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_ascii_lowercase()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    if !names.contains(&domain.to_ascii_lowercase()) {
        return Err(RelayError::Certificate(format!(
            "the certificate is for {names:?}, not {domain}"
        )));
    }
    let time = |t: x509_parser::time::ASN1Time| {
        UNIX_EPOCH + Duration::from_secs(u64::try_from(t.timestamp()).unwrap_or(0))
    };
    Ok(Validity {
        not_before: time(cert.validity().not_before),
        not_after: time(cert.validity().not_after),
        serial: hex::encode(cert.raw_serial()),
        in_service_since: SystemTime::now(),
    })
}

fn create_dir_private(dir: &Path) -> Result<(), RelayError> {
    let err = |source| RelayError::File {
        what: "cannot create",
        path: dir.to_path_buf(),
        source,
    };
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(err)
}

/// Writes `data` to `path` through a temporary file (mode 0600) and a rename,
/// so that a crash never leaves half a key.
fn write_atomic(path: &Path, data: &[u8]) -> Result<(), RelayError> {
    use std::io::Write as _;
    let tmp = path.with_extension("tmp");
    let err = |what, source| RelayError::File {
        what,
        path: path.to_path_buf(),
        source,
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&tmp).map_err(|e| err("cannot write", e))?;
    file.write_all(data)
        .and_then(|()| file.sync_all())
        .map_err(|e| err("cannot write", e))?;
    std::fs::rename(&tmp, path).map_err(|e| err("cannot replace", e))
}

/// An error and its causes, one line ("client error (Connect): tcp connect
/// error: Connection refused").
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

fn cert_err(e: rcgen::Error) -> RelayError {
    RelayError::Certificate(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(renew_after: Option<Duration>) -> AcmeConfig {
        AcmeConfig {
            domain: "relay.example".into(),
            email: "ops@example.com".into(),
            directory: AcmeConfig::LETS_ENCRYPT.into(),
            directory_ca: None,
            renew_after,
        }
    }

    fn validity(days: u64) -> Validity {
        let not_before = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        Validity {
            not_before,
            not_after: not_before + Duration::from_secs(days * 86_400),
            serial: "01".into(),
            in_service_since: not_before + Duration::from_secs(3600),
        }
    }

    fn acme(renew_after: Option<Duration>) -> Acme {
        let resolver = Arc::new(CertResolver::new(
            temporary_certificate("relay.example").expect("cert"),
        ));
        Acme::new(config(renew_after), Path::new("/nonexistent"), resolver)
    }

    #[test]
    fn renews_when_a_third_of_the_lifetime_remains() {
        let v = validity(90);
        assert_eq!(
            acme(None).renew_at(&v),
            v.not_after - Duration::from_secs(30 * 86_400)
        );
    }

    #[test]
    fn the_test_override_counts_from_going_into_service() {
        let v = validity(90);
        assert_eq!(
            acme(Some(Duration::from_secs(5))).renew_at(&v),
            v.in_service_since + Duration::from_secs(5)
        );
    }

    #[test]
    fn the_temporary_certificate_names_the_domain() {
        let key = temporary_certificate("relay.example").expect("cert");
        leaf_validity(&key.cert[0], "relay.example").expect("for the domain");
        let err = leaf_validity(&key.cert[0], "other.example").expect_err("not for another");
        assert!(err.to_string().contains("not other.example"), "{err}");
    }

    #[test]
    fn the_challenge_certificate_carries_the_critical_acme_identifier() {
        let digest = [7u8; 32];
        let key = challenge_certificate("relay.example", &digest).expect("cert");
        let (_, cert) = x509_parser::parse_x509_certificate(&key.cert[0]).expect("parse");
        let ext = cert
            .extensions()
            .iter()
            .find(|e| e.oid.to_id_string() == "1.3.6.1.5.5.7.1.31")
            .expect("acmeIdentifier extension");
        assert!(ext.critical);
        // DER OCTET STRING of the 32-byte digest.
        assert_eq!(ext.value[..2], [0x04, 32]);
        assert_eq!(ext.value[2..], digest);
    }

    #[test]
    fn keys_are_written_owner_only() {
        let dir = std::env::temp_dir().join(format!("drawbridge-acme-unit-{}", std::process::id()));
        create_dir_private(&dir).expect("dir");
        let path = dir.join("key.pem");
        write_atomic(&path, b"secret").expect("write");
        write_atomic(&path, b"secret, replaced").expect("replace");
        assert_eq!(std::fs::read(&path).expect("read"), b"secret, replaced");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
