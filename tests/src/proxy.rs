//! A TCP proxy that cuts one client off from a server while others stay connected.
//!
//! Killing ZooKeeper disconnects every client at once. To test what one process does
//! while it alone is partitioned (its peers keep writing), point that process at a
//! [`TcpProxy`] and [`block`](TcpProxy::block) it, or [`freeze`](TcpProxy::freeze) its
//! connections so that neither side hears from the other (a silent partition).

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

#[derive(Debug)]
struct State {
    blocked: bool,
    /// Cancelled to cut every connection open now; replaced by a fresh token.
    connections: CancellationToken,
    /// Cancelled to freeze every connection open now; replaced by a fresh token.
    frozen: CancellationToken,
}

/// Forwards connections from a loopback port to `target` until blocked or dropped.
#[derive(Debug)]
pub struct TcpProxy {
    address: SocketAddr,
    state: Arc<Mutex<State>>,
    shutdown: CancellationToken,
}

impl TcpProxy {
    /// Listens on a free loopback port and forwards to `target`. Must be called inside a
    /// Tokio runtime; the proxy runs as tasks of that runtime.
    pub async fn start(target: SocketAddr) -> TcpProxy {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("cannot bind the proxy's port");
        let address = listener
            .local_addr()
            .expect("a bound listener has an address");
        let state = Arc::new(Mutex::new(State {
            blocked: false,
            connections: CancellationToken::new(),
            frozen: CancellationToken::new(),
        }));
        let shutdown = CancellationToken::new();
        tokio::spawn(accept_loop(
            listener,
            target,
            state.clone(),
            shutdown.clone(),
        ));
        TcpProxy {
            address,
            state,
            shutdown,
        }
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// `127.0.0.1:<port>` of the proxy, to use as a connect string.
    pub fn connect_string(&self) -> String {
        self.address.to_string()
    }

    /// Closes every forwarded connection and closes new ones at once, as a partition
    /// that the client notices.
    pub fn block(&self) {
        let mut state = self.lock();
        state.blocked = true;
        state.connections.cancel();
        state.connections = CancellationToken::new();
    }

    /// Closes every connection open now (frozen ones too); new ones are forwarded.
    pub fn cut(&self) {
        let mut state = self.lock();
        state.connections.cancel();
        state.connections = CancellationToken::new();
    }

    /// Stops moving bytes on every connection open now, in both directions, while
    /// keeping it open: neither end learns anything, not even that the other closed.
    /// New connections are forwarded as usual. [`cut`](Self::cut) ends frozen ones.
    pub fn freeze(&self) {
        let mut state = self.lock();
        state.frozen.cancel();
        state.frozen = CancellationToken::new();
    }

    /// Forwards new connections again.
    pub fn unblock(&self) {
        self.lock().blocked = false;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.shutdown.cancel();
        self.lock().connections.cancel();
    }
}

async fn accept_loop(
    listener: TcpListener,
    target: SocketAddr,
    state: Arc<Mutex<State>>,
    shutdown: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((client, _)) = accepted else { continue };
        let (cut, freeze) = {
            let state = state.lock().unwrap_or_else(|p| p.into_inner());
            if state.blocked {
                // Dropping the socket closes it: the client sees the connection end.
                continue;
            }
            (state.connections.clone(), state.frozen.clone())
        };
        tokio::spawn(forward(client, target, cut, freeze));
    }
}

async fn forward(
    mut client: TcpStream,
    target: SocketAddr,
    cut: CancellationToken,
    freeze: CancellationToken,
) {
    let Ok(mut server) = TcpStream::connect(target).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    tokio::select! {
        _ = cut.cancelled() => {}
        // Both sockets stay open and unread until cut.
        _ = freeze.cancelled() => cut.cancelled().await,
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
    }
}
