//! Certificates of relay nodes on one PostgreSQL database: one self-signed
//! CA for the whole cluster, created by whichever node starts first; and
//! ACME against pebble with one node ordering under a lease, the
//! TLS-ALPN-01 challenge answered by another node, every node serving the
//! certificate, and a lease holder killed mid-order.
//!
//! Pebble validates `localhost` on one port only: that port is a proxy
//! here ([`ValidationRouter`]) that holds pebble's validation connection
//! until the test has seen which node holds the lease, then forwards it to
//! a node the test picks (never the holder), so that the challenge lands on
//! a node that did not order.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use e2e::pebble::Pebble;
use e2e::{RelayProc, TempDir};
use rustls_pki_types::{CertificateDer, ServerName};

/// The certificate chain the relay on `port` serves for `name`, verified
/// against `root` alone.
async fn served_chain(port: u16, name: &str, root: &Path) -> Vec<CertificateDer<'static>> {
    try_served_chain(port, name, root)
        .await
        .expect("the served chain verifies against the root")
}

/// As [`served_chain`]; an error if it does not verify.
async fn try_served_chain(
    port: u16,
    name: &str,
    root: &Path,
) -> Result<Vec<CertificateDer<'static>>, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in tunnel::tls::load_certs(root).expect("root") {
        roots.add(cert).expect("add root");
    }
    let mut config = rustls::ClientConfig::builder_with_provider(tunnel::tls::provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect to the relay");
    let name = ServerName::try_from(name.to_owned()).expect("name");
    let tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    Ok(tls
        .get_ref()
        .1
        .peer_certificates()
        .expect("certificates")
        .iter()
        .map(|c| c.clone().into_owned())
        .collect())
}

/// Three nodes starting at once on an empty database, each with its own
/// (empty) state dir, end with one CA: every node's `ca.pem` is the same,
/// every node's certificate verifies against it, no node keeps a CA key in
/// its state dir, and a node started later (or restarted) gets it too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_starting_together_share_one_self_signed_ca() {
    let url = e2e::postgres::shared().create_database().await;
    let args = ["--database-url", url.as_str()];
    let start = || RelayProc::start_with(Arc::new(TempDir::new("relay")), "127.0.0.1:0", &args);
    let (a, b, c) = tokio::join!(start(), start(), start());
    let later = start().await;
    let nodes = [a, b, c, later];
    let root = std::fs::read(&nodes[0].ca).expect("ca.pem");
    for node in &nodes {
        assert_eq!(std::fs::read(&node.ca).expect("ca.pem"), root);
        assert!(
            !node.state.path().join("ca.key").exists(),
            "the CA's key stays in the database"
        );
        let chain = served_chain(node.addr.port(), "localhost", &nodes[0].ca).await;
        assert_eq!(chain.len(), 2, "leaf and CA");
    }
    // Each node issued its own leaf from the one CA.
    let mut leaves = std::collections::HashSet::new();
    for node in &nodes {
        leaves.insert(served_chain(node.addr.port(), "127.0.0.1", &nodes[0].ca).await[0].clone());
    }
    assert_eq!(leaves.len(), nodes.len());
    let [first, ..] = nodes;
    let restarted = first.restart().await;
    assert_eq!(std::fs::read(&restarted.ca).expect("ca.pem"), root);
    served_chain(restarted.addr.port(), "localhost", &restarted.ca).await;
}

/// The port pebble validates on: holds each connection while `held`, then
/// forwards it to one of `targets` (round robin), recording which.
struct ValidationRouter {
    port: u16,
    targets: Arc<Mutex<Vec<SocketAddr>>>,
    held: tokio::sync::watch::Sender<bool>,
    arrived: Arc<AtomicUsize>,
    served_by: Arc<Mutex<Vec<SocketAddr>>>,
}

impl ValidationRouter {
    async fn start() -> ValidationRouter {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let (held, held_rx) = tokio::sync::watch::channel(true);
        let router = ValidationRouter {
            port,
            targets: Arc::default(),
            held,
            arrived: Arc::default(),
            served_by: Arc::default(),
        };
        let (targets, arrived, served_by) = (
            router.targets.clone(),
            router.arrived.clone(),
            router.served_by.clone(),
        );
        let next = Arc::new(AtomicUsize::new(0));
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                arrived.fetch_add(1, Ordering::SeqCst);
                let (mut held, targets, served_by, next) = (
                    held_rx.clone(),
                    targets.clone(),
                    served_by.clone(),
                    next.clone(),
                );
                tokio::spawn(async move {
                    if held.wait_for(|h| !*h).await.is_err() {
                        return;
                    }
                    let list = targets.lock().expect("lock").clone();
                    if list.is_empty() {
                        return;
                    }
                    let target = list[next.fetch_add(1, Ordering::SeqCst) % list.len()];
                    served_by.lock().expect("lock").push(target);
                    if let Ok(mut out) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                    }
                });
            }
        });
        router
    }

    /// Waits until pebble has tried to validate (the holder is mid-order).
    async fn wait_arrival(&self, within: Duration) {
        let start = Instant::now();
        while self.arrived.load(Ordering::SeqCst) == 0 {
            assert!(
                start.elapsed() < within,
                "pebble did not validate within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Forwards validations to `targets` from now on.
    fn release_to(&self, targets: Vec<SocketAddr>) {
        *self.targets.lock().expect("lock") = targets;
        let _ = self.held.send(false);
    }
}

const DOMAIN: &str = "localhost";

fn logged(relay: &RelayProc, needle: &str) -> bool {
    relay
        .proc
        .stderr
        .lock()
        .expect("lock")
        .iter()
        .any(|l| l.contains(needle))
}

const HOLDS: &str = "ACME: this node holds the lease";

/// Pebble (validating on `router`'s port), its root in a file, and
/// `n` ACME nodes on one fresh database.
async fn acme_cluster(
    router: &ValidationRouter,
    n: usize,
) -> (Pebble, TempDir, std::path::PathBuf, Vec<RelayProc>) {
    let pebble = Pebble::start(router.port).await;
    let (root_pem, _) = pebble.issuer_pem().await;
    let roots = TempDir::new("pebble-root");
    let root = roots.path().join("pebble-root.pem");
    std::fs::write(&root, &root_pem).expect("write root");
    let url = e2e::postgres::shared().create_database().await;
    let ca = pebble.tls_ca.display().to_string();
    let acme = [
        "--acme-domain",
        DOMAIN,
        "--acme-email",
        "ops@example.com",
        "--acme-directory",
        pebble.directory.as_str(),
        "--acme-directory-ca",
        ca.as_str(),
    ];
    let mut nodes = Vec::new();
    for _ in 0..n {
        let state = Arc::new(TempDir::new("relay-acme"));
        nodes.push(
            RelayProc::start_tls(
                state,
                "127.0.0.1:0",
                &acme,
                root.clone(),
                &["--database-url", url.as_str()],
            )
            .await,
        );
    }
    (pebble, roots, root, nodes)
}

/// Waits until every node of `nodes` serves one leaf that verifies against
/// `root`; returns it.
async fn one_certificate(nodes: &[&RelayProc], root: &Path, within: Duration) -> Vec<u8> {
    let start = Instant::now();
    loop {
        let mut leaves = Vec::new();
        for node in nodes {
            if let Ok(chain) = try_served_chain(node.addr.port(), DOMAIN, root).await {
                leaves.push(chain[0].to_vec());
            }
        }
        if leaves.len() == nodes.len() && leaves.iter().all(|l| *l == leaves[0]) {
            return leaves.remove(0);
        }
        if start.elapsed() > within {
            let logs: Vec<String> = nodes.iter().map(|n| n.proc.stderr_text()).collect();
            panic!(
                "the nodes do not serve one certificate from pebble after {within:?}; \
                 {} of {} verify; stderr:\n{}",
                leaves.len(),
                nodes.len(),
                logs.join("\n----\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Three nodes with ACME on one database: one orders (the lease holder),
/// pebble's TLS-ALPN-01 validation is answered by the other nodes (the
/// challenge is in the database), and within seconds every node serves the
/// one certificate pebble issued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acme_nodes_order_once_and_all_serve_the_certificate() {
    let router = ValidationRouter::start().await;
    let (_pebble, _roots, root, nodes) = acme_cluster(&router, 3).await;
    router.wait_arrival(Duration::from_secs(60)).await;
    let holders: Vec<usize> = (0..nodes.len())
        .filter(|&i| logged(&nodes[i], HOLDS))
        .collect();
    assert_eq!(holders.len(), 1, "one lease holder: {holders:?}");
    let holder = holders[0];
    let others: Vec<SocketAddr> = (0..nodes.len())
        .filter(|&i| i != holder)
        .map(|i| nodes[i].addr)
        .collect();
    router.release_to(others.clone());
    let all: Vec<&RelayProc> = nodes.iter().collect();
    one_certificate(&all, &root, Duration::from_secs(60)).await;
    assert!(logged(&nodes[holder], "ACME: certificate obtained"));
    let served_by = router.served_by.lock().expect("lock").clone();
    assert!(!served_by.is_empty());
    assert!(
        served_by.iter().all(|a| others.contains(a)),
        "validated on {served_by:?}, not the holder {}",
        nodes[holder].addr
    );
    for (i, node) in nodes.iter().enumerate() {
        if i != holder {
            assert!(!logged(node, HOLDS), "node {i} ordered too");
        }
    }
}

/// The lease holder is SIGKILLed while pebble validates its order: another
/// node takes the lease once it expires, orders again, and the surviving
/// nodes end up serving one certificate from pebble.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acme_survives_the_lease_holder_killed_mid_order() {
    let router = ValidationRouter::start().await;
    let (_pebble, _roots, root, mut nodes) = acme_cluster(&router, 3).await;
    router.wait_arrival(Duration::from_secs(60)).await;
    let holder = (0..nodes.len())
        .find(|&i| logged(&nodes[i], HOLDS))
        .expect("a lease holder");
    nodes[holder].proc.signal("KILL");
    let mut dead = nodes.remove(holder);
    let _ = dead.proc.wait_exit(Duration::from_secs(10)).await;
    assert!(!logged(&dead, "ACME: certificate obtained"));
    router.release_to(nodes.iter().map(|n| n.addr).collect());
    let survivors: Vec<&RelayProc> = nodes.iter().collect();
    one_certificate(&survivors, &root, Duration::from_secs(90)).await;
    assert!(
        nodes
            .iter()
            .any(|n| logged(n, "ACME: certificate obtained")),
        "a survivor ordered it"
    );
}
