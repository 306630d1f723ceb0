//! ACME for the nodes of a cluster (several relays on one database): one
//! node at a time orders, every node serves.
//!
//! * **The lease** (`leases` row `acme`): a node whose certificate is due
//!   (none yet, or a third of its lifetime left) takes it, renews it every
//!   [`LEASE_RENEW`] while it orders, and gives it up when done. A node that
//!   dies holding it stops renewing it: after [`LEASE_TTL`] another node
//!   takes it and orders again. After a failed attempt its holder keeps it
//!   until its retry (30 s, doubling up to 1 h), so that the back-off holds
//!   for the whole cluster.
//! * **The challenges** (`secrets` rows `acme/challenge/<domain>`: the
//!   SHA-256 of the key authorization, hex): every node makes its own
//!   TLS-ALPN-01 answer from it, so the CA may validate on any node (the
//!   holder, whose reading waits while it orders, answers from what it set
//!   itself). It tells the CA it is ready only after [`SYNC_INTERVAL`]
//!   twice.
//! * **The account and the certificate** (`secrets` rows `acme/account`,
//!   JSON, and `acme/cert`: the chain then the key, PEM): every node reads
//!   the certificate every [`SYNC_INTERVAL`] and serves a new one to new
//!   connections.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use rustls_pki_types::PrivateKeyDer;
use tokio_util::sync::CancellationToken;
use tunnel::backoff::Backoff;

use crate::error::RelayError;
use crate::metrics::Metrics;
use crate::tls::acme::{
    chain, challenge_certificate, leaf_validity, parse_chain, Acme, AcmeError, Validity,
    ATTEMPT_TIMEOUT,
};
use crate::tls::resolver::certified_key;

/// The lease of ordering.
const LEASE: &str = "acme";
/// How long a lease lasts unless renewed.
const LEASE_TTL: Duration = Duration::from_secs(10);
/// How often its holder renews it.
const LEASE_RENEW: Duration = Duration::from_secs(2);
/// How often every node reads the certificate and the challenges.
const SYNC_INTERVAL: Duration = Duration::from_secs(1);
const ACCOUNT: &str = "acme/account";
const CERT: &str = "acme/cert";
const CHALLENGE_PREFIX: &str = "acme/challenge/";

/// What a node of a cluster orders and serves with: the cluster's
/// database, and its own metrics.
#[derive(Clone)]
pub(crate) struct Shared {
    store: std::sync::Arc<dyn ::store::Store>,
    metrics: std::sync::Arc<Metrics>,
}

fn store(state: &Shared) -> &dyn ::store::Store {
    &*state.store
}

/// Publishes the TLS-ALPN-01 answer for `domain` to every node, and waits
/// until they have read it.
pub(crate) async fn put_challenge(
    state: &Shared,
    domain: &str,
    digest: &[u8],
) -> Result<(), RelayError> {
    let name = format!("{CHALLENGE_PREFIX}{}", domain.to_ascii_lowercase());
    store(state).put_secret(&name, &hex::encode(digest)).await?;
    tokio::time::sleep(SYNC_INTERVAL * 2).await;
    Ok(())
}

pub(crate) async fn remove_challenge(state: &Shared, domain: &str) -> Result<(), RelayError> {
    let name = format!("{CHALLENGE_PREFIX}{}", domain.to_ascii_lowercase());
    store(state).remove_secret(&name).await?;
    Ok(())
}

pub(crate) async fn account(state: &Shared) -> Result<Option<String>, RelayError> {
    Ok(store(state).secret(ACCOUNT).await?)
}

pub(crate) async fn put_account(state: &Shared, json: &[u8]) -> Result<(), RelayError> {
    let text = String::from_utf8_lossy(json);
    store(state).put_secret(ACCOUNT, &text).await?;
    Ok(())
}

pub(crate) async fn put_certificate(
    state: &Shared,
    chain_pem: &str,
    key_pem: &str,
) -> Result<(), RelayError> {
    store(state)
        .put_secret(CERT, &format!("{chain_pem}\n{key_pem}"))
        .await?;
    Ok(())
}

/// The certificate in the database, for `domain`: what to serve and its
/// validity.
async fn stored_certificate(
    state: &Shared,
    domain: &str,
) -> Result<Option<(String, rustls::sign::CertifiedKey, Validity)>, RelayError> {
    let Some(pair) = store(state).secret(CERT).await? else {
        return Ok(None);
    };
    let at = pair.find("-----BEGIN PRIVATE KEY-----").ok_or_else(|| {
        RelayError::Certificate("the ACME certificate in the database has no key".into())
    })?;
    let (chain_pem, key_pem) = pair.split_at(at);
    let chain = parse_chain(chain_pem.as_bytes())?;
    let validity = leaf_validity(&chain[0], domain)?;
    let mut reader = key_pem.as_bytes();
    let key = rustls_pemfile::private_key(&mut reader)
        .map_err(|e| RelayError::Certificate(format!("the ACME key in the database: {e}")))?
        .ok_or_else(|| RelayError::Certificate("no ACME key in the database".into()))?;
    let key: PrivateKeyDer<'static> = key;
    Ok(Some((pair.clone(), certified_key(chain, key)?, validity)))
}

impl Acme {
    /// A node of a cluster: account, challenges and certificate in
    /// `store`, the cluster's database.
    pub fn shared(
        mut self,
        store: std::sync::Arc<dyn ::store::Store>,
        metrics: std::sync::Arc<Metrics>,
    ) -> Self {
        self.shared = Some(Shared { store, metrics });
        self
    }

    /// Until `shutdown`: serves the cluster's certificate (and its
    /// challenges) as the database holds them, and orders one under the
    /// lease when it is due.
    pub async fn run_shared(self, shutdown: CancellationToken) {
        let Some(state) = self.shared.clone() else {
            return;
        };
        let holder = format!("{}-{}", std::process::id(), store::token::random_hex(8));
        let domain = self.config.domain.clone();
        let mut served: Option<String> = None;
        let mut current: Option<Validity> = None;
        let mut challenges: HashMap<String, String> = HashMap::new();
        let mut backoff = Backoff::new(Duration::from_secs(30), Duration::from_secs(3600));
        let mut retry_at = SystemTime::UNIX_EPOCH;
        let mut tick = tokio::time::interval(SYNC_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.cancelled() => return,
            }
            self.sync(&state, &domain, &mut served, &mut current, &mut challenges)
                .await;
            let due = current
                .as_ref()
                .is_none_or(|v| self.renew_at(v) <= SystemTime::now());
            if !due || SystemTime::now() < retry_at {
                continue;
            }
            match store(&state)
                .take_lease(LEASE, &holder, LEASE_TTL.as_millis() as i64)
                .await
            {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "ACME: cannot take the lease");
                    continue;
                }
            }
            // Another node may have just obtained one.
            self.sync(&state, &domain, &mut served, &mut current, &mut challenges)
                .await;
            if current
                .as_ref()
                .is_some_and(|v| self.renew_at(v) > SystemTime::now())
            {
                let _ = store(&state).release_lease(LEASE, &holder).await;
                continue;
            }
            tracing::info!(
                domain = %domain,
                directory = %self.config.directory,
                holder = %holder,
                "ACME: this node holds the lease; requesting a certificate"
            );
            let outcome = tokio::select! {
                o = self.obtain_holding(&state, &holder) => o,
                _ = shutdown.cancelled() => return,
            };
            match outcome {
                Ok(validity) => {
                    let _ = store(&state).release_lease(LEASE, &holder).await;
                    tracing::info!(
                        domain = %domain,
                        serial = %validity.serial,
                        expires = %humantime::format_rfc3339_seconds(validity.not_after),
                        "ACME: certificate obtained; stored for every node"
                    );
                    backoff = Backoff::new(Duration::from_secs(30), Duration::from_secs(3600));
                    self.sync(&state, &domain, &mut served, &mut current, &mut challenges)
                        .await;
                }
                Err(e) => {
                    let retry_in = backoff.next_delay();
                    tracing::warn!(
                        domain = %domain,
                        error = %chain(&e),
                        retry_in = %humantime::format_duration(Duration::from_secs(retry_in.as_secs().max(1))),
                        "ACME: could not obtain a certificate; still serving the previous one"
                    );
                    retry_at = SystemTime::now() + retry_in;
                    // The back-off is the cluster's: the lease is kept (not
                    // renewed) until the retry, so no other node orders
                    // meanwhile; it expires then even if this node dies.
                    let _ = store(&state)
                        .take_lease(LEASE, &holder, retry_in.as_millis() as i64)
                        .await;
                }
            }
        }
    }

    /// One issuance, renewing the lease meanwhile; fails if the lease is
    /// lost (another node took it: this one was too slow to renew).
    async fn obtain_holding(&self, state: &Shared, holder: &str) -> Result<Validity, AcmeError> {
        let order = tokio::time::timeout(ATTEMPT_TIMEOUT, self.obtain());
        tokio::pin!(order);
        let mut renew = tokio::time::interval(LEASE_RENEW);
        renew.tick().await;
        loop {
            tokio::select! {
                o = &mut order => {
                    return o
                        .unwrap_or(Err(AcmeError::Timeout(ATTEMPT_TIMEOUT)))
                        .map(|(_, v)| v);
                }
                _ = renew.tick() => {
                    let kept = store(state)
                        .take_lease(LEASE, holder, LEASE_TTL.as_millis() as i64)
                        .await
                        .map_err(RelayError::from)?;
                    if !kept {
                        return Err(AcmeError::Invalid("the lease was lost to another node".into()));
                    }
                }
            }
        }
    }

    /// Serves the database's certificate if it changed, and answers the
    /// challenges it holds.
    async fn sync(
        &self,
        state: &Shared,
        domain: &str,
        served: &mut Option<String>,
        current: &mut Option<Validity>,
        challenges: &mut HashMap<String, String>,
    ) {
        match stored_certificate(state, domain).await {
            Ok(Some((pair, key, validity))) if served.as_ref() != Some(&pair) => {
                if validity.not_after > SystemTime::now() {
                    self.resolver.swap(key);
                    state.metrics.set_certificate_expiry(
                        validity
                            .not_after
                            .duration_since(SystemTime::UNIX_EPOCH)
                            .map_or(0, |d| d.as_secs() as i64),
                    );
                    tracing::info!(
                        domain = %domain,
                        serial = %validity.serial,
                        "ACME: serving the cluster's certificate"
                    );
                    *current = Some(validity);
                }
                *served = Some(pair);
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "ACME: cannot read the cluster's certificate"),
        }
        match store(state).secrets_with_prefix(CHALLENGE_PREFIX).await {
            Ok(rows) => {
                let mut now = HashMap::new();
                for (name, digest) in rows {
                    let Some(host) = name.strip_prefix(CHALLENGE_PREFIX) else {
                        continue;
                    };
                    now.insert(host.to_owned(), digest.clone());
                    if challenges.get(host) == Some(&digest) {
                        continue;
                    }
                    match hex::decode(&digest)
                        .map_err(|e| RelayError::Certificate(e.to_string()))
                        .and_then(|d| challenge_certificate(host, &d))
                    {
                        Ok(key) => self.resolver.set_challenge(host, key),
                        Err(e) => tracing::warn!(error = %e, "ACME: unusable challenge"),
                    }
                }
                for gone in challenges.keys().filter(|h| !now.contains_key(*h)) {
                    self.resolver.remove_challenge(gone);
                }
                *challenges = now;
            }
            Err(e) => tracing::warn!(error = %e, "ACME: cannot read the challenges"),
        }
    }
}
