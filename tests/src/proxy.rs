//! A TCP proxy for peer fault tests. It listens on `127.0.0.1:0`, forwards every
//! connection to one upstream address (a node's federation listener) byte for byte,
//! and misbehaves on demand: a [`Fault`] can be switched on, changed or healed at any
//! moment, and applies to open connections as well as new ones. TLS passes through it
//! untouched (it sees only ciphertext), so the nodes still prove who is at each end.
//!
//! It bounds itself: at most [`MAX_CONNECTIONS`] connections at once, one fixed buffer
//! per direction, waits only as long as the fault says, and every task it started ends
//! when the [`Proxy`] is dropped.

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{
        TcpListener, TcpStream,
        tcp::{ReadHalf, WriteHalf},
    },
    sync::watch,
    task::{JoinHandle, JoinSet},
};

/// Most connections the proxy holds at once; further ones are closed on accept.
pub const MAX_CONNECTIONS: usize = 64;

/// Bytes read at once from either side.
const CHUNK: usize = 16 * 1024;

/// How the proxy misbehaves.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Fault {
    /// None: bytes pass as they come.
    #[default]
    Healthy,
    /// Every chunk, each way, is passed on this much later.
    Latency(Duration),
    /// Nothing is passed on, on open connections or new ones (which are accepted and
    /// connected upstream); once the fault changes, they go on where they stopped.
    Stall,
    /// A connection is closed with a TCP reset (`SO_LINGER` 0) once it has passed on
    /// this many bytes, both ways together, counted from when the fault was set (or from
    /// the connection's start, if later): a reset in the middle of a call.
    ResetAfter(u64),
    /// New connections are accepted and then never read, answered or passed on, like
    /// a hung host; open ones pass nothing on. When the fault changes, the unanswered
    /// connections are closed and the open ones go on.
    Unanswered,
}

impl Fault {
    /// Whether open connections hold their bytes.
    fn holds(self) -> bool {
        matches!(self, Fault::Stall | Fault::Unanswered)
    }
}

/// The current fault, and how many times a fault was set (a reset's byte count
/// starts again with each).
#[derive(Clone, Copy, Debug)]
struct Setting {
    fault: Fault,
    generation: u64,
}

/// A running proxy. Dropping it stops it and closes its connections.
#[derive(Debug)]
pub struct Proxy {
    addr: SocketAddr,
    setting: watch::Sender<Setting>,
    accepted: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl Proxy {
    /// Starts a healthy proxy to `upstream` on a free loopback port.
    pub async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let (setting, rx) = watch::channel(Setting {
            fault: Fault::Healthy,
            generation: 0,
        });
        let accepted = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn(serve(listener, upstream, rx, accepted.clone()));
        Proxy {
            addr,
            setting,
            accepted,
            task,
        }
    }

    /// The address to call instead of the upstream.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The proxy as a peer endpoint in a node's configuration.
    pub fn endpoint(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// Switches to `fault`, for open connections and new ones.
    pub fn set(&self, fault: Fault) {
        self.setting.send_modify(|s| {
            s.fault = fault;
            s.generation += 1;
        });
    }

    /// Ends any fault.
    pub fn heal(&self) {
        self.set(Fault::Healthy);
    }

    /// Connections accepted so far: proof that calls went through the proxy.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // Aborting the accept loop drops its set of connection tasks, which aborts them.
        self.task.abort();
    }
}

async fn serve(
    listener: TcpListener,
    upstream: SocketAddr,
    rx: watch::Receiver<Setting>,
    accepted: Arc<AtomicU64>,
) {
    let mut connections = JoinSet::new();
    loop {
        let client = match listener.accept().await {
            Ok((client, _)) => client,
            Err(_) => {
                // Out of descriptors or a connection gone before it was accepted.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        while connections.try_join_next().is_some() {}
        if connections.len() >= MAX_CONNECTIONS {
            continue;
        }
        accepted.fetch_add(1, Ordering::Relaxed);
        connections.spawn(connection(client, upstream, rx.clone()));
    }
}

/// How one direction of a connection ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    /// Its sender closed it; the other direction may go on.
    Eof,
    /// A read or write failed, or the proxy stopped: close the connection.
    Broken,
    /// The fault's byte count ran out: reset the connection.
    Reset,
}

/// Bytes one connection passed on under a reset fault.
#[derive(Debug, Default)]
struct Budget {
    generation: u64,
    used: u64,
}

impl Budget {
    /// How many of `n` bytes may still pass under a limit of `limit` set at `generation`.
    fn take(&mut self, generation: u64, limit: u64, n: usize) -> usize {
        if self.generation != generation {
            self.generation = generation;
            self.used = 0;
        }
        let allowed = limit.saturating_sub(self.used).min(n as u64);
        self.used += allowed;
        allowed as usize
    }
}

async fn connection(client: TcpStream, upstream: SocketAddr, mut rx: watch::Receiver<Setting>) {
    let mut client = client;
    if rx.borrow().fault == Fault::Unanswered {
        // Hold it, read nothing, until the fault changes or the proxy stops; then close.
        let _ = rx.wait_for(|s| s.fault != Fault::Unanswered).await;
        return;
    }
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let budget = Mutex::new(Budget::default());
    let end = {
        let (mut client_read, mut client_write) = client.split();
        let (mut server_read, mut server_write) = server.split();
        let up = pump(&mut client_read, &mut server_write, rx.clone(), &budget);
        let down = pump(&mut server_read, &mut client_write, rx.clone(), &budget);
        tokio::pin!(up, down);
        let (mut up_done, mut down_done) = (false, false);
        loop {
            let end = tokio::select! {
                end = &mut up, if !up_done => { up_done = true; end }
                end = &mut down, if !down_done => { down_done = true; end }
            };
            if end != End::Eof || (up_done && down_done) {
                break end;
            }
        }
    };
    if end == End::Reset {
        let _ = client.set_zero_linger();
        let _ = server.set_zero_linger();
    }
}

/// Passes bytes from `from` to `to` under the current fault until either side closes.
async fn pump(
    from: &mut ReadHalf<'_>,
    to: &mut WriteHalf<'_>,
    mut rx: watch::Receiver<Setting>,
    budget: &Mutex<Budget>,
) -> End {
    let mut buf = vec![0u8; CHUNK];
    loop {
        // While the link holds, read nothing: the bytes wait in the kernel's buffers.
        if rx.wait_for(|s| !s.fault.holds()).await.is_err() {
            return End::Broken;
        }
        let n = match from.read(&mut buf).await {
            Ok(0) => {
                let _ = to.shutdown().await;
                return End::Eof;
            }
            Ok(n) => n,
            Err(_) => return End::Broken,
        };
        // A chunk read just before a stall waits for its end.
        let setting = match rx.wait_for(|s| !s.fault.holds()).await {
            Ok(s) => *s,
            Err(_) => return End::Broken,
        };
        match setting.fault {
            Fault::Latency(delay) => tokio::time::sleep(delay).await,
            Fault::ResetAfter(limit) => {
                let allowed = budget.lock().unwrap_or_else(PoisonError::into_inner).take(
                    setting.generation,
                    limit,
                    n,
                );
                if allowed < n {
                    let _ = to.write_all(&buf[..allowed]).await;
                    return End::Reset;
                }
            }
            Fault::Healthy | Fault::Stall | Fault::Unanswered => {}
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return End::Broken;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server on loopback; ends when its listener task is aborted.
    async fn echo() -> (SocketAddr, JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            let mut set = JoinSet::new();
            while let Ok((mut s, _)) = listener.accept().await {
                set.spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        (addr, task)
    }

    async fn round_trip(stream: &mut TcpStream, bytes: &[u8]) -> std::io::Result<Vec<u8>> {
        stream.write_all(bytes).await?;
        let mut back = vec![0u8; bytes.len()];
        stream.read_exact(&mut back).await?;
        Ok(back)
    }

    #[tokio::test]
    async fn passes_bytes_holds_them_in_a_stall_and_resets_after_the_budget() {
        let (upstream, echo_task) = echo().await;
        let proxy = Proxy::start(upstream).await;
        let mut s = TcpStream::connect(proxy.addr()).await.expect("connect");
        assert_eq!(round_trip(&mut s, b"hello").await.expect("echo"), b"hello");

        proxy.set(Fault::Stall);
        s.write_all(b"held").await.expect("write");
        let mut back = [0u8; 4];
        let early = tokio::time::timeout(Duration::from_millis(200), s.read_exact(&mut back)).await;
        assert!(early.is_err(), "nothing passes during a stall");
        proxy.heal();
        s.read_exact(&mut back).await.expect("after the stall");
        assert_eq!(&back, b"held");

        // 10 bytes both ways: the 6-byte message goes up whole, 4 of its echo come back.
        proxy.set(Fault::ResetAfter(10));
        let cut = round_trip(&mut s, b"abcdef").await;
        assert!(cut.is_err(), "{cut:?}");
        assert_eq!(proxy.accepted(), 1);
        drop(proxy);
        echo_task.abort();
    }

    #[tokio::test]
    async fn an_unanswered_connection_gets_nothing_and_closes_on_heal() {
        let (upstream, echo_task) = echo().await;
        let proxy = Proxy::start(upstream).await;
        proxy.set(Fault::Unanswered);
        let mut s = TcpStream::connect(proxy.addr()).await.expect("accepted");
        s.write_all(b"ping").await.expect("write");
        let mut back = [0u8; 4];
        let early = tokio::time::timeout(Duration::from_millis(200), s.read_exact(&mut back)).await;
        assert!(early.is_err(), "no answer");
        proxy.heal();
        let closed = s.read(&mut back).await;
        assert!(matches!(closed, Ok(0) | Err(_)), "{closed:?}");
        echo_task.abort();
    }
}
