//! Certificates through ACME, end to end against pebble (the ACME test
//! server): issuance validated by TLS-ALPN-01 on the relay's own port, an
//! agent and a client through the issued certificate, renewal without
//! dropping tunnels, and the stored certificate served at the next start.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use e2e::pebble::{free_tcp_udp_port, Pebble};
use e2e::{AgentProc, HttpsClient, RelayProc, TempDir, Upstream};
use rustls_pki_types::{CertificateDer, ServerName};

const DOMAIN: &str = "localhost";

/// The certificate chain the relay on `port` serves for `DOMAIN`, verified
/// against `root` alone (not the public web PKI).
async fn served_chain(port: u16, root: &Path) -> Vec<CertificateDer<'static>> {
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
    let name = ServerName::try_from(DOMAIN).expect("name");
    let tls = connector
        .connect(name, tcp)
        .await
        .expect("the served chain verifies against pebble's root");
    tls.get_ref()
        .1
        .peer_certificates()
        .expect("certificates")
        .iter()
        .map(|c| c.clone().into_owned())
        .collect()
}

/// (serial, DNS names, issuer) of a chain's leaf.
fn describe(chain: &[CertificateDer<'_>]) -> (String, Vec<String>, String) {
    let (_, leaf) = x509_parser::parse_x509_certificate(&chain[0]).expect("parse leaf");
    let names = leaf
        .subject_alternative_name()
        .expect("SAN")
        .expect("a SAN extension")
        .value
        .general_names
        .iter()
        .filter_map(|n| match n {
            x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_string()),
            _ => None,
        })
        .collect();
    (
        leaf.raw_serial_as_string(),
        names,
        leaf.issuer().to_string(),
    )
}

/// The leaf the relay on `port` serves for `DOMAIN`, not verified.
async fn served_leaf_unverified(port: u16) -> CertificateDer<'static> {
    #[derive(Debug)]
    struct Anything(Arc<rustls::crypto::CryptoProvider>);
    impl rustls::client::danger::ServerCertVerifier for Anything {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: rustls_pki_types::UnixTime,
        ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            let algs = &self.0.signature_verification_algorithms;
            rustls::crypto::verify_tls12_signature(message, cert, dss, algs)
        }
        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            let algs = &self.0.signature_verification_algorithms;
            rustls::crypto::verify_tls13_signature(message, cert, dss, algs)
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }
    let provider = tunnel::tls::provider();
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Anything(provider)))
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect to the relay");
    let tls = connector
        .connect(ServerName::try_from(DOMAIN).expect("name"), tcp)
        .await
        .expect("TLS handshake");
    tls.get_ref().1.peer_certificates().expect("certificates")[0]
        .clone()
        .into_owned()
}

fn acme_args(pebble: &Pebble) -> Vec<String> {
    [
        "--acme-domain",
        DOMAIN,
        "--acme-email",
        "ops@example.com",
        "--acme-directory",
        &pebble.directory,
        "--acme-directory-ca",
        &pebble.tls_ca.display().to_string(),
    ]
    .map(str::to_owned)
    .to_vec()
}

fn obtained(relay: &RelayProc) -> usize {
    relay
        .proc
        .stderr
        .lock()
        .expect("lock")
        .iter()
        .filter(|l| l.contains("ACME: certificate obtained"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_obtains_serves_and_renews_a_certificate_from_pebble() {
    let port = free_tcp_udp_port();
    let pebble = Pebble::start(port).await;
    let (root_pem, intermediate_pem) = pebble.issuer_pem().await;
    // Outlives pebble: the restarted relay is checked against it.
    let roots_dir = TempDir::new("pebble-root");
    let root = roots_dir.path().join("pebble-root.pem");
    std::fs::write(&root, &root_pem).expect("write root");

    let state = Arc::new(TempDir::new("relay-acme"));
    let acme_args = acme_args(&pebble);
    let acme: Vec<&str> = acme_args.iter().map(String::as_str).collect();
    let listen = format!("127.0.0.1:{port}");
    let mut with_renewal = acme.clone();
    with_renewal.extend(["--acme-renew-after", "4s"]);
    let relay =
        RelayProc::start_tls(state.clone(), &listen, &with_renewal, root.clone(), &[]).await;

    // Issued by pebble's CA, for the domain.
    assert!(
        relay
            .proc
            .wait_stderr("ACME: certificate obtained", Duration::from_secs(60))
            .await,
        "no certificate; relay stderr:\n{}",
        relay.proc.stderr_text()
    );
    let chain = served_chain(port, &root).await;
    let (first_serial, names, issuer) = describe(&chain);
    assert_eq!(names, [DOMAIN]);
    assert!(issuer.contains("Pebble Intermediate"), "{issuer}");
    let (_, intermediate) =
        x509_parser::pem::parse_x509_pem(intermediate_pem.as_bytes()).expect("intermediate PEM");
    assert_eq!(
        chain[1].as_ref(),
        intermediate.contents,
        "served intermediate"
    );

    // The account and certificate are kept in the state dir, keys owner-only.
    let acme_dir = state.path().join("acme");
    for (file, mode) in [
        ("account.json", 0o600),
        ("key.pem", 0o600),
        ("cert.pem", 0o600),
    ] {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(acme_dir.join(file)).expect(file);
        assert_eq!(meta.permissions().mode() & 0o777, mode, "{file}");
    }

    // An agent (one per transport) and a client through the ACME certificate.
    let upstream = Upstream::start("acme").await;
    let agent_token = relay.token("alice@example.com", false);
    let client_token = relay.token("alice@example.com", true);
    let relay_url = format!("https://{DOMAIN}:{port}");
    let mut agents = Vec::new();
    for (route, transport) in [("viatcp", "tcp"), ("viaquic", "quic")] {
        let mut agent = AgentProc::spawn_at(
            &relay_url,
            &relay,
            &agent_token,
            route,
            &["--http", &upstream.url(), "--plain-http"],
            transport,
            &[],
        );
        let url = agent.wait_live().await;
        assert_eq!(url, format!("{relay_url}/mcp/{route}"));
        agents.push(agent);
    }
    let client = HttpsClient::new(&root, false);
    for agent in &agents {
        let a = client
            .get(&format!("{}/echo/a", agent.url), Some(&client_token))
            .await;
        assert_eq!(a.status, 200, "{}", a.text());
    }

    // Renewal: a new certificate is served, the tunnels stay up.
    let renewed_by = tokio::time::Instant::now() + Duration::from_secs(60);
    let second_serial = loop {
        let (serial, names, _) = describe(&served_chain(port, &root).await);
        if serial != first_serial {
            assert_eq!(names, [DOMAIN]);
            break serial;
        }
        assert!(
            tokio::time::Instant::now() < renewed_by,
            "not renewed within 60 s; relay stderr:\n{}",
            relay.proc.stderr_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(obtained(&relay) >= 2);
    for agent in &agents {
        let a = client
            .get(&format!("{}/echo/b", agent.url), Some(&client_token))
            .await;
        assert_eq!(a.status, 200, "{}", a.text());
        let lives = agent
            .proc
            .stdout
            .lock()
            .expect("lock")
            .iter()
            .filter(|l| l.contains("is live at"))
            .count();
        assert_eq!(
            lives,
            1,
            "the agent reconnected:\n{}",
            agent.proc.stderr_text()
        );
    }
    assert_ne!(second_serial, first_serial);
    drop(agents);

    // Next start: the stored certificate is served at once, pebble or not.
    let mut relay = relay;
    relay.proc.signal("TERM");
    relay.proc.wait_exit(Duration::from_secs(20)).await;
    drop(pebble);
    let stored = tunnel::tls::load_certs(&acme_dir.join("cert.pem")).expect("stored chain");
    let (stored_serial, _, _) = describe(&stored);
    let relay = RelayProc::start_tls(state.clone(), &listen, &acme, root.clone(), &[]).await;
    let (served_serial, _, _) = describe(&served_chain(port, &root).await);
    assert_eq!(served_serial, stored_serial);
    assert!(
        relay
            .proc
            .wait_stderr(
                "ACME: serving the stored certificate",
                Duration::from_secs(5)
            )
            .await
    );
    assert_eq!(obtained(&relay), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn until_the_ca_answers_a_temporary_certificate_is_served_and_issuance_retried() {
    let port = free_tcp_udp_port();
    // Configured but not started: its directory refuses connections.
    let mut pebble = Pebble::new(port);
    let state = Arc::new(TempDir::new("relay-acme-retry"));
    let args = acme_args(&pebble);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let relay = RelayProc::start_tls(
        state.clone(),
        &format!("127.0.0.1:{port}"),
        &args,
        pebble.tls_ca.clone(),
        &[],
    )
    .await;
    assert!(
        relay
            .proc
            .wait_stderr(
                "ACME: could not obtain a certificate; still serving the previous one",
                Duration::from_secs(30)
            )
            .await,
        "{}",
        relay.proc.stderr_text()
    );
    // Meanwhile: a temporary self-signed certificate for the domain.
    let temporary = served_leaf_unverified(port).await;
    let (_, names, issuer) = describe(std::slice::from_ref(&temporary));
    assert_eq!(names, [DOMAIN]);
    assert!(issuer.contains("temporary"), "{issuer}");
    assert!(!state.path().join("acme/cert.pem").exists());

    // The CA comes up; the retry (after 15-30 s: backoff from 30 s, with
    // jitter) obtains the certificate.
    pebble.run().await;
    let (root_pem, _) = pebble.issuer_pem().await;
    let root = pebble.dir.path().join("pebble-root.pem");
    std::fs::write(&root, &root_pem).expect("write root");
    assert!(
        relay
            .proc
            .wait_stderr("ACME: certificate obtained", Duration::from_secs(60))
            .await,
        "{}",
        relay.proc.stderr_text()
    );
    let (_, names, issuer) = describe(&served_chain(port, &root).await);
    assert_eq!(names, [DOMAIN]);
    assert!(issuer.contains("Pebble Intermediate"), "{issuer}");
}
