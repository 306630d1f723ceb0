//! A TCP forwarder that can freeze: while frozen it carries no byte in
//! either direction, on the connections open and on new ones, but closes
//! none (a database cut off without a FIN or RST); resumed, it carries on
//! where it stopped.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A running forwarder to one address; its tasks end when it is dropped.
pub struct FreezingProxy {
    pub addr: SocketAddr,
    frozen: Arc<watch::Sender<bool>>,
    accept: tokio::task::JoinHandle<()>,
}

impl FreezingProxy {
    /// Forwards a fresh 127.0.0.1 port to `target`.
    pub async fn start(target: SocketAddr) -> FreezingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let frozen = Arc::new(watch::channel(false).0);
        let f = frozen.clone();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let f = f.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(target).await else {
                        return;
                    };
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    let up = tokio::spawn(pump(cr, sw, f.subscribe()));
                    let down = tokio::spawn(pump(sr, cw, f.subscribe()));
                    let _ = tokio::join!(up, down);
                });
            }
        });
        FreezingProxy {
            addr,
            frozen,
            accept,
        }
    }

    /// Stops carrying bytes (connections stay open).
    pub fn freeze(&self) {
        self.frozen.send_replace(true);
    }

    /// Carries bytes again.
    pub fn resume(&self) {
        self.frozen.send_replace(false);
    }
}

impl Drop for FreezingProxy {
    fn drop(&mut self) {
        self.accept.abort();
        // The pumps end as their sockets close, or with this sender.
        self.frozen.send_replace(false);
    }
}

/// Copies `from` to `to`, holding each chunk while frozen.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut frozen: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        // Nothing is read while frozen either: the sender's bytes wait in
        // the kernel's buffers, as on a dead link.
        if frozen.wait_for(|f| !*f).await.is_err() {
            return;
        }
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if frozen.wait_for(|f| !*f).await.is_err() {
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
