//! UDP sockets for QUIC, with raised buffers.
//!
//! Default socket buffers (about 200 KiB on Linux) drop packets at QUIC's
//! rates. We ask for more, and report what the OS actually granted so that an
//! operator can raise `net.core.rmem_max`/`wmem_max` when it is too little.

use std::net::{SocketAddr, UdpSocket};

use socket2::{Domain, Protocol, Socket, Type};

/// What we asked for per direction.
pub const WANTED_BUFFER: usize = 8 * 1024 * 1024;

/// What the OS granted.
#[derive(Debug, Clone, Copy)]
pub struct BufferSizes {
    pub recv: usize,
    pub send: usize,
}

impl BufferSizes {
    /// Whether the OS granted less than half of what we asked for (Linux
    /// reports twice the configured value, hence the comparison).
    pub fn is_low(&self) -> bool {
        self.recv < WANTED_BUFFER / 2 || self.send < WANTED_BUFFER / 2
    }
}

/// Binds a non-blocking UDP socket at `addr` with large buffers.
pub fn bind(addr: SocketAddr) -> std::io::Result<(UdpSocket, BufferSizes)> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        let _ = socket.set_only_v6(false);
    }
    let _ = socket.set_recv_buffer_size(WANTED_BUFFER);
    let _ = socket.set_send_buffer_size(WANTED_BUFFER);
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    let sizes = BufferSizes {
        recv: socket.recv_buffer_size().unwrap_or(0),
        send: socket.send_buffer_size().unwrap_or(0),
    };
    Ok((socket.into(), sizes))
}
