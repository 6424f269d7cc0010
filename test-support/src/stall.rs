//! A TCP proxy on 127.0.0.1 in front of a service that turns slow on command: it forwards
//! both ways until [`StallProxy::stall`], then holds every byte and accepts new connections
//! without answering them, as an object store that stops responding does (an overloaded
//! gateway, a half-dead load balancer). Stopped, with its connections closed, when dropped.
//! For tests and the fault campaign: the service behind it is never touched.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The proxy's state, shared with its threads.
#[derive(Default)]
struct Shared {
    stalled: AtomicBool,
    stopped: AtomicBool,
    /// Every socket it holds, closed at the end.
    sockets: Mutex<Vec<TcpStream>>,
}

/// A proxy to one upstream address.
pub struct StallProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl StallProxy {
    /// Listens on a free 127.0.0.1 port and forwards to `upstream`.
    pub fn start(upstream: SocketAddr) -> StallProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a port for the stall proxy");
        let addr = listener.local_addr().expect("the stall proxy's address");
        let shared = Arc::new(Shared::default());
        let accepting = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("stall-proxy".into())
            .spawn(move || accept(listener, upstream, &accepting))
            .expect("start the stall proxy");
        StallProxy { addr, shared }
    }

    /// A proxy to an `http://IP:PORT` endpoint (the S3 test service's).
    pub fn to_endpoint(endpoint: &str) -> StallProxy {
        let upstream = endpoint
            .strip_prefix("http://")
            .and_then(|a| a.trim_end_matches('/').parse().ok())
            .unwrap_or_else(|| panic!("{endpoint} is not http://IP:PORT"));
        StallProxy::start(upstream)
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// From now on nothing passes, either way, on old or new connections.
    pub fn stall(&self) {
        self.shared.stalled.store(true, Ordering::SeqCst);
    }
}

impl Drop for StallProxy {
    fn drop(&mut self) {
        self.shared.stopped.store(true, Ordering::SeqCst);
        // Wakes the accept loop, which then sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Ok(sockets) = self.shared.sockets.lock() {
            for socket in sockets.iter() {
                let _ = socket.shutdown(Shutdown::Both);
            }
        }
    }
}

fn accept(listener: TcpListener, upstream: SocketAddr, shared: &Arc<Shared>) {
    for client in listener.incoming() {
        if shared.stopped.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = client else { continue };
        keep(shared, &client);
        if shared.stalled.load(Ordering::SeqCst) {
            // Accepted, never answered: held open until the proxy stops.
            continue;
        }
        let Ok(server) = TcpStream::connect_timeout(&upstream, Duration::from_secs(5)) else {
            let _ = client.shutdown(Shutdown::Both);
            continue;
        };
        keep(shared, &server);
        for (from, to) in [(&client, &server), (&server, &client)] {
            let (Ok(from), Ok(to)) = (from.try_clone(), to.try_clone()) else {
                continue;
            };
            let shared = Arc::clone(shared);
            let _ = std::thread::Builder::new()
                .name("stall-pump".into())
                .spawn(move || pump(from, to, &shared));
        }
    }
}

fn keep(shared: &Shared, socket: &TcpStream) {
    if let (Ok(mut sockets), Ok(copy)) = (shared.sockets.lock(), socket.try_clone()) {
        sockets.push(copy);
    }
}

/// Copies `from` to `to` until either ends. Once stalled it holds what it read, an end of
/// stream included: a server closing an idle connection must not tell the client anything.
fn pump(mut from: TcpStream, mut to: TcpStream, shared: &Shared) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = from.read(&mut buf).unwrap_or(0);
        if !hold(shared) {
            return;
        }
        if n == 0 || to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

/// Waits while the proxy is stalled; false once it stops.
fn hold(shared: &Shared) -> bool {
    while shared.stalled.load(Ordering::SeqCst) {
        if shared.stopped.load(Ordering::SeqCst) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    !shared.stopped.load(Ordering::SeqCst)
}
