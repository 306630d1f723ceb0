//! Pebble, Let's Encrypt's ACME test server (Debian package `pebble`), on
//! loopback ports picked at run time, serving its directory with a TLS
//! certificate from a CA made here.

use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose};

use crate::procs::Proc;
use crate::{HttpsClient, TempDir};

/// Pebble, configured; running once [`Pebble::run`] returned (killed on drop).
pub struct Pebble {
    pub proc: Option<Proc>,
    /// The ACME directory URL.
    pub directory: String,
    /// The CA of pebble's own HTTPS certificate (for `--acme-directory-ca`).
    pub tls_ca: PathBuf,
    config: PathBuf,
    ports: [u16; 2],
    management: String,
    pub dir: TempDir,
}

impl Pebble {
    /// Starts pebble validating TLS-ALPN-01 challenges on `tls_port` (the
    /// relay's port), and waits until it answers.
    pub async fn start(tls_port: u16) -> Pebble {
        let mut pebble = Pebble::new(tls_port);
        pebble.run().await;
        pebble
    }

    /// Configures pebble (ports, TLS certificate) without starting it.
    pub fn new(tls_port: u16) -> Pebble {
        let dir = TempDir::new("pebble");
        let tls_ca = dir.path().join("pebble-tls-ca.pem");
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        write_tls_certificate(&tls_ca, &cert, &key);
        let (listen, management, http) = (free_port(), free_port(), free_port());
        let config = serde_json::json!({
            "pebble": {
                "listenAddress": format!("127.0.0.1:{listen}"),
                "managementListenAddress": format!("127.0.0.1:{management}"),
                "certificate": cert,
                "privateKey": key,
                "httpPort": http,
                "tlsPort": tls_port,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": false,
            }
        });
        let config_path = dir.path().join("pebble-config.json");
        std::fs::write(&config_path, config.to_string()).expect("write pebble config");
        Pebble {
            proc: None,
            directory: format!("https://127.0.0.1:{listen}/dir"),
            tls_ca,
            config: config_path,
            ports: [listen, management],
            management: format!("https://127.0.0.1:{management}"),
            dir,
        }
    }

    /// Starts pebble and waits until it answers.
    pub async fn run(&mut self) {
        let proc = Proc::spawn(
            "pebble",
            &binary(),
            &["-config".into(), self.config.display().to_string()],
            &[
                // Validate at once, every time (no random sleeps, no reuse of
                // earlier authorizations), and no spurious badNonce errors.
                ("PEBBLE_VA_NOSLEEP", "1"),
                ("PEBBLE_AUTHZREUSE", "0"),
                ("PEBBLE_WFE_NONCEREJECT", "0"),
            ],
        );
        for port in self.ports {
            wait_listening(port, &proc).await;
        }
        self.proc = Some(proc);
    }

    /// The root and intermediate of the CA pebble issues from (PEM), from
    /// its management API. Pebble makes a new CA at every start.
    pub async fn issuer_pem(&self) -> (String, String) {
        let client = HttpsClient::new(&self.tls_ca, false);
        let mut out = Vec::new();
        for path in ["/roots/0", "/intermediates/0"] {
            let a = client
                .get(&format!("{}{path}", self.management), None)
                .await;
            assert_eq!(a.status, 200, "pebble {path}: {}", a.text());
            out.push(a.text());
        }
        let intermediate = out.pop().expect("intermediate");
        let root = out.pop().expect("root");
        (root, intermediate)
    }
}

fn binary() -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("pebble"))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!("pebble is not installed: `apt-get install pebble` (scripts/test.sh does)")
    })
}

/// A loopback TCP port free now (bound, then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a free port")
        .port()
}

/// A loopback port free now on both TCP and UDP (for a relay with QUIC).
pub fn free_tcp_udp_port() -> u16 {
    for _ in 0..50 {
        let port = free_port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no port free on both TCP and UDP")
}

async fn wait_listening(port: u16, proc: &Proc) {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "pebble is not listening on 127.0.0.1:{port} after 10 s; stderr:\n{}",
        proc.stderr_text()
    );
}

/// A CA (written to `ca`) and a certificate it issued for 127.0.0.1 and
/// localhost (`cert`, `key`), for pebble's HTTPS.
fn write_tls_certificate(ca: &Path, cert: &Path, key: &Path) {
    let ca_key = KeyPair::generate().expect("key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca_params.self_signed(&ca_key).expect("CA certificate");
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf_key = KeyPair::generate().expect("key");
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .expect("params")
        .signed_by(&leaf_key, &issuer)
        .expect("certificate");
    std::fs::write(ca, ca_cert.pem()).expect("write CA");
    std::fs::write(cert, leaf.pem()).expect("write certificate");
    std::fs::write(key, leaf_key.serialize_pem()).expect("write key");
}
