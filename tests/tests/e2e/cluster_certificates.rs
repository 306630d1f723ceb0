//! Certificates of relay nodes on one PostgreSQL database: one self-signed
//! CA for the whole cluster, created by whichever node starts first.

use std::path::Path;
use std::sync::Arc;

use e2e::{RelayProc, TempDir};
use rustls_pki_types::{CertificateDer, ServerName};

/// The certificate chain the relay on `port` serves for `name`, verified
/// against `root` alone.
async fn served_chain(port: u16, name: &str, root: &Path) -> Vec<CertificateDer<'static>> {
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
        .expect("the served chain verifies against the root");
    tls.get_ref()
        .1
        .peer_certificates()
        .expect("certificates")
        .iter()
        .map(|c| c.clone().into_owned())
        .collect()
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
