//! Free loopback ports for the servers a test starts.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, TcpListener};
use std::sync::Mutex;

/// Ports handed out in this process. The kernel may offer a port again once its probe
/// socket is closed, before the server meant for it has bound it; remembering them keeps
/// two servers of one test from being given the same port.
static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// A TCP port on 127.0.0.1 that nothing listens on right now and that this process has
/// not handed out before.
pub fn free_port() -> u16 {
    for _ in 0..1_000 {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|listener| listener.local_addr())
            .map(|addr| addr.port())
            .expect("cannot bind a probe socket on 127.0.0.1");
        let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|p| p.into_inner());
        if handed_out.insert(port) {
            return port;
        }
    }
    panic!("no free loopback port found after 1000 tries");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_not_handed_out_twice() {
        let ports: BTreeSet<u16> = (0..200).map(|_| free_port()).collect();
        assert_eq!(ports.len(), 200);
        for port in ports {
            TcpListener::bind((Ipv4Addr::LOCALHOST, port)).expect("a handed-out port is bindable");
        }
    }
}
