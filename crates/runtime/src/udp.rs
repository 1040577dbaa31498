//! UDP ports: datagrams from each client address relayed into the pod's
//! network namespace through a socket of their own, and the pod's answers
//! sent back to that client from the host port.
//!
//! UDP has no connections, so a "session" is a client address and ends after
//! [`IDLE`] without a datagram either way. Sessions, the datagrams queued
//! for one and their sizes are bounded: a flood costs bounded memory, and
//! datagrams over a bound are dropped as a congested network would.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use crate::netns::Connector;
use crate::scale;

/// A session ends after this long without a datagram either way.
pub const IDLE: Duration = Duration::from_secs(60);
/// Client addresses relayed at once, per port.
pub const MAX_SESSIONS: usize = 256;
/// Datagrams waiting for one session's socket; more are dropped.
const QUEUE: usize = 8;
/// The largest UDP payload over IPv4.
const MAX_DATAGRAM: usize = 65_507;

/// Asks the pod to run (scale to zero); resolves to whether it had to be
/// started, or `None` when it could not be.
pub(crate) type Wake = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Option<bool>> + Send>> + Send + Sync>;

/// How a UDP port's sessions are accounted for.
#[derive(Clone)]
pub(crate) struct Relay {
    /// Open sessions and idle time, for scaling to zero.
    pub activity: Arc<scale::Activity>,
    /// For pods that scale to zero.
    pub wake: Option<Wake>,
}

/// Relays datagrams between `host` and `127.0.0.1:target_port` in the pod
/// until the shim stops.
pub(crate) async fn relay(host: UdpSocket, target_port: u16, connector: Connector, relay: Relay) {
    let host = Arc::new(host);
    let mut sessions: HashMap<SocketAddr, (u64, mpsc::Sender<Vec<u8>>)> = HashMap::new();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<(SocketAddr, u64)>();
    let mut next_id = 0u64;
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        tokio::select! {
            Some((client, id)) = done_rx.recv() => {
                if sessions.get(&client).is_some_and(|(current, _)| *current == id) {
                    sessions.remove(&client);
                }
            }
            received = host.recv_from(&mut buf) => {
                let Ok((n, client)) = received else { continue };
                let datagram = buf[..n].to_vec();
                if let Some((_, tx)) = sessions.get(&client) {
                    match tx.try_send(datagram) {
                        Ok(()) | Err(mpsc::error::TrySendError::Full(_)) => continue,
                        Err(mpsc::error::TrySendError::Closed(d)) => {
                            sessions.remove(&client);
                            start(&mut sessions, &mut next_id, client, d, &host, target_port, &connector, &relay, &done_tx);
                        }
                    }
                } else if sessions.len() < MAX_SESSIONS {
                    start(&mut sessions, &mut next_id, client, datagram, &host, target_port, &connector, &relay, &done_tx);
                }
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn start(
    sessions: &mut HashMap<SocketAddr, (u64, mpsc::Sender<Vec<u8>>)>,
    next_id: &mut u64,
    client: SocketAddr,
    first: Vec<u8>,
    host: &Arc<UdpSocket>,
    target_port: u16,
    connector: &Connector,
    relay: &Relay,
    done: &mpsc::UnboundedSender<(SocketAddr, u64)>,
) {
    let (tx, rx) = mpsc::channel(QUEUE);
    let _ = tx.try_send(first);
    *next_id += 1;
    sessions.insert(client, (*next_id, tx));
    let (host, connector, relay, done, id) = (host.clone(), connector.clone(), relay.clone(), done.clone(), *next_id);
    tokio::spawn(async move {
        session(host, client, rx, target_port, connector, relay).await;
        let _ = done.send((client, id));
    });
}

async fn session(
    host: Arc<UdpSocket>,
    client: SocketAddr,
    mut from_client: mpsc::Receiver<Vec<u8>>,
    target_port: u16,
    connector: Connector,
    relay: Relay,
) {
    let _open = relay.activity.begin();
    if let Some(wake) = &relay.wake {
        if wake().await.is_none() {
            return;
        }
    }
    let Ok(inner) = connector.udp(target_port) else { return };
    if inner.set_nonblocking(true).is_err() {
        return;
    }
    let Ok(inner) = UdpSocket::from_std(inner) else { return };
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        tokio::select! {
            datagram = from_client.recv() => match datagram {
                Some(d) => {
                    // Refused (nothing listens yet) or dropped: UDP's own failures.
                    let _ = inner.send(&d).await;
                }
                None => return,
            },
            answer = inner.recv(&mut buf) => {
                // An error here is the ICMP "port unreachable" of an earlier
                // datagram: the client's next one may find the pod listening.
                if let Ok(n) = answer {
                    let _ = host.send_to(&buf[..n], client).await;
                }
            }
            _ = tokio::time::sleep(IDLE) => return,
        }
    }
}
