//! A network between the agent and the relay that the test can change: a
//! TCP and UDP forwarder on one loopback port.
//!
//! * [`Network::change_udp_path`] moves the UDP traffic to a new outbound
//!   socket (a new source port), which is what the relay sees when a laptop
//!   moves from Wi-Fi to a hotspot, or a NAT rebinds: QUIC must migrate.
//! * [`Network::freeze_tcp`] stops every TCP connection open now from
//!   carrying bytes, without closing it (the Wi-Fi is gone, no FIN, no RST);
//!   new connections work.
//! * Built with `udp: false`, UDP is dropped (a network that blocks it), so
//!   the agent falls back to TCP.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

/// A running forwarder; its tasks end when it is dropped.
pub struct Network {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

struct Shared {
    relay: SocketAddr,
    udp: bool,
    /// TCP connections accepted before this generation are frozen.
    frozen_before: AtomicU64,
    generation: AtomicU64,
    /// The agent's address as seen on the listening UDP socket.
    agent: Mutex<Option<SocketAddr>>,
    /// Where datagrams towards the relay go out now.
    outbound: Mutex<Arc<UdpSocket>>,
    listen_udp: Arc<UdpSocket>,
    /// Datagrams the relay sent back on each outbound path, newest last.
    pub replies: Mutex<Vec<Arc<AtomicU64>>>,
    closed: AtomicBool,
}

impl Network {
    /// A forwarder to `relay` on a fresh 127.0.0.1 port (TCP and UDP).
    pub async fn start(relay: SocketAddr, udp: bool) -> Network {
        // The same port number for both protocols, as the relay has.
        let (listen_udp, tcp) = loop {
            let u = UdpSocket::bind("127.0.0.1:0").await.expect("bind udp");
            let port = u.local_addr().expect("addr").port();
            if let Ok(t) = TcpListener::bind(("127.0.0.1", port)).await {
                break (u, t);
            }
        };
        let addr = tcp.local_addr().expect("addr");
        let outbound = Arc::new(UdpSocket::bind("127.0.0.1:0").await.expect("bind udp"));
        let shared = Arc::new(Shared {
            relay,
            udp,
            frozen_before: AtomicU64::new(0),
            generation: AtomicU64::new(0),
            agent: Mutex::new(None),
            outbound: Mutex::new(outbound.clone()),
            listen_udp: Arc::new(listen_udp),
            replies: Mutex::new(Vec::new()),
            closed: AtomicBool::new(false),
        });
        let mut tasks = vec![
            tokio::spawn(accept_tcp(tcp, shared.clone())),
            tokio::spawn(agent_to_relay(shared.clone())),
        ];
        tasks.push(tokio::spawn(relay_to_agent(shared.clone(), outbound)));
        Network {
            addr,
            shared,
            tasks,
        }
    }

    /// The relay URL to give the agent.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// Sends the agent's datagrams from a new source port from now on.
    pub async fn change_udp_path(&mut self) {
        let fresh = Arc::new(UdpSocket::bind("127.0.0.1:0").await.expect("bind udp"));
        *self.shared.outbound.lock().expect("lock") = fresh.clone();
        self.tasks
            .push(tokio::spawn(relay_to_agent(self.shared.clone(), fresh)));
    }

    /// Datagrams the relay sent on the newest UDP path.
    pub fn replies_on_newest_path(&self) -> u64 {
        self.shared
            .replies
            .lock()
            .expect("lock")
            .last()
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// Every TCP connection open now stops carrying bytes (and stays open).
    pub fn freeze_tcp(&self) {
        let now = self.shared.generation.load(Ordering::SeqCst);
        self.shared.frozen_before.store(now, Ordering::SeqCst);
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::SeqCst);
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn agent_to_relay(shared: Arc<Shared>) {
    let mut buf = vec![0u8; 65_536];
    loop {
        let Ok((n, from)) = shared.listen_udp.recv_from(&mut buf).await else {
            return;
        };
        if !shared.udp {
            continue;
        }
        *shared.agent.lock().expect("lock") = Some(from);
        let out = shared.outbound.lock().expect("lock").clone();
        let _ = out.send_to(&buf[..n], shared.relay).await;
    }
}

async fn relay_to_agent(shared: Arc<Shared>, socket: Arc<UdpSocket>) {
    let count = Arc::new(AtomicU64::new(0));
    shared.replies.lock().expect("lock").push(count.clone());
    let mut buf = vec![0u8; 65_536];
    loop {
        let Ok((n, _)) = socket.recv_from(&mut buf).await else {
            return;
        };
        count.fetch_add(1, Ordering::Relaxed);
        let agent = *shared.agent.lock().expect("lock");
        if let Some(agent) = agent {
            let _ = shared.listen_udp.send_to(&buf[..n], agent).await;
        }
    }
}

async fn accept_tcp(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((agent, _)) = listener.accept().await else {
            return;
        };
        let generation = shared.generation.fetch_add(1, Ordering::SeqCst) + 1;
        let shared = shared.clone();
        tokio::spawn(async move {
            let Ok(relay) = TcpStream::connect(shared.relay).await else {
                return;
            };
            let _ = agent.set_nodelay(true);
            let _ = relay.set_nodelay(true);
            let (ar, aw) = agent.into_split();
            let (rr, rw) = relay.into_split();
            let up = tokio::spawn(pipe(ar, rw, shared.clone(), generation));
            let down = tokio::spawn(pipe(rr, aw, shared.clone(), generation));
            let _ = tokio::join!(up, down);
        });
    }
}

/// Copies bytes until EOF, or until the connection is frozen: then holds
/// both ends open, carrying nothing, until the network is dropped.
async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    shared: Arc<Shared>,
    generation: u64,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let frozen = || generation <= shared.frozen_before.load(Ordering::SeqCst);
        if frozen() {
            break;
        }
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => {
                let _ = to.shutdown().await;
                return;
            }
            Ok(n) => n,
        };
        if frozen() {
            break;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
    // Frozen: keep the sockets (no FIN, no RST) until the test ends.
    while !shared.closed.load(Ordering::SeqCst) {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    drop((from, to));
}
