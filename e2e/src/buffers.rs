//! What a data path may legitimately hold of a body nobody reads, so bounded-buffering tests
//! derive their limit from the path instead of trusting a figure that holds on one machine.
//!
//! The tests pin the socket buffers of the sockets they own (clients, apps) and read back what the
//! kernel granted; the product bounds its own (the proxy's every TCP socket, czctl's to the local
//! app), so they count at [`BOUNDED_SOCKET`], whatever the host's autotuning would allow.

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// The socket buffer size tests ask for on the sockets they own (the kernel doubles it for its
/// bookkeeping; [`Pinned::held`] reports what it granted).
pub const PINNED_REQUEST: u32 = 64 * 1024;

/// Size of each chunk of the tests' bulk bodies.
pub const CHUNK: usize = 64 * 1024;

/// Most of a body one HTTP/1 connection buffers in user space per direction: hyper's default
/// `max_buf_size` (8 KiB + 100 × 4 KiB), plus one chunk in hand while the buffer drains.
pub const HYPER_BUFFER: u64 = 8192 + 4096 * 100 + CHUNK as u64;

/// What one direction of a socket the product bounds may hold: the kernel grants twice the size
/// asked for ([`cz_forward::DEFAULT_SOCKET_BUFFER`], both ends' default).
pub const BOUNDED_SOCKET: u64 = 2 * cz_forward::DEFAULT_SOCKET_BUFFER as u64;

/// How far a socket's send queue may pass its SO_SNDBUF: the kernel admits a write while the
/// queue is below the limit, and one write may queue a whole 64 KiB segment.
pub const SEND_OVERSHOOT: u64 = 64 * 1024;

/// What a pass-through connection holds in user space per direction: tokio's copy buffer.
pub const COPY_BUFFER: u64 = 8 * 1024;

/// The tunnel's flow-control window per stream (`cz_shared::tls`): a QUIC sender may have at most
/// this much of one stream unread by the receiving side.
pub const QUIC_STREAM_WINDOW: u64 = 2 * 1024 * 1024;

/// What a tunnel stream's frame reader holds after taking bytes out of QUIC (`READ_SIZE` 64 KiB,
/// at most twice while a frame header straddles reads).
pub const FRAME_READER_BUFFER: u64 = 2 * 64 * 1024;

/// Socket buffer sizes the kernel granted a socket whose buffers were pinned.
#[derive(Debug, Clone, Copy)]
pub struct Pinned {
    /// Bytes it may hold received but unread (SO_RCVBUF as granted).
    pub receive: u64,
    /// Bytes it may hold written but unsent (SO_SNDBUF as granted).
    pub send: u64,
}

impl Pinned {
    /// Both directions: an upper bound on what the socket holds of a stream, whichever way it flows.
    pub fn held(&self) -> u64 {
        self.receive + self.send
    }
}

/// What the kernel grants a socket pinned by these helpers (the same for every one of them).
pub fn pinned() -> Pinned {
    pinned_socket().1
}

fn pinned_socket() -> (TcpSocket, Pinned) {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .set_recv_buffer_size(PINNED_REQUEST)
        .expect("SO_RCVBUF");
    socket
        .set_send_buffer_size(PINNED_REQUEST)
        .expect("SO_SNDBUF");
    let pinned = Pinned {
        receive: u64::from(socket.recv_buffer_size().expect("SO_RCVBUF")),
        send: u64::from(socket.send_buffer_size().expect("SO_SNDBUF")),
    };
    (socket, pinned)
}

/// A listener on 127.0.0.1 whose accepted connections inherit pinned socket buffers (Linux copies
/// SO_RCVBUF/SO_SNDBUF, and the lock against autotuning, from the listener).
pub fn pinned_listener() -> (TcpListener, Pinned) {
    let (socket, pinned) = pinned_socket();
    socket
        .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .expect("bind");
    (socket.listen(1024).expect("listen"), pinned)
}

/// A connection to `addr` with pinned socket buffers.
pub async fn pinned_connect(addr: SocketAddr) -> (TcpStream, Pinned) {
    let (socket, pinned) = pinned_socket();
    (socket.connect(addr).await.expect("connect"), pinned)
}

/// The most a path may hold of a body nobody reads, as a sum of named parts, so a failure says
/// which figures the limit came from.
#[derive(Debug, Default)]
pub struct Allowance(Vec<(&'static str, u64)>);

impl Allowance {
    /// Adds what one part of the path may hold.
    pub fn plus(mut self, part: &'static str, bytes: u64) -> Self {
        self.0.push((part, bytes));
        self
    }

    /// The whole allowance.
    pub fn total(&self) -> u64 {
        self.0.iter().map(|(_, bytes)| bytes).sum()
    }
}

impl std::fmt::Display for Allowance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (part, bytes) in &self.0 {
            writeln!(f, "  {bytes:>10}  {part}")?;
        }
        write!(f, "  {:>10}  in all", self.total())
    }
}
