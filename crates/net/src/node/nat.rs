//! Reachability behind NAT: AutoNAT tells a node whether others can dial it,
//! a node that cannot be dialled listens through circuit relays (v2) and so
//! advertises `/p2p-circuit` addresses on the DHT, and DCUtR upgrades a
//! relayed connection to a direct one by hole punching where the NATs allow.
//!
//! Any sealpod node that listens can serve as a relay for others, within
//! [`RelayLimits`]: a relay only forwards bytes between two peers that each
//! run their own Noise handshake end to end, so it learns who talks to whom
//! and how much, never what.
//!
//! A relayed connection is a fallback: once a direct connection to the same
//! peer is up, the relayed one this node dialled is closed as soon as none of
//! this node's requests travel on it, so later requests and blob transfers
//! take the direct path.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use libp2p::core::ConnectedPoint;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::ConnectionId;
use libp2p::{autonat, dcutr, identify, kad, relay, Multiaddr, PeerId};

use super::SwarmTask;

/// How a node deals with NAT, as a relay user and as a relay.
#[derive(Debug, Clone, Default)]
pub struct NatConfig {
    /// Serve as a circuit relay for other peers, within these limits (a
    /// public node). `None`: relay nobody.
    pub relay_service: Option<RelayLimits>,
    /// Relays (multiaddrs ending in `/p2p/<peer id>`) to listen through
    /// when AutoNAT finds this node unreachable. Bootstrap peers that offer
    /// the relay service are used too.
    pub relays: Vec<Multiaddr>,
    /// Listen through the relays at once instead of waiting for AutoNAT's
    /// verdict (a node known to be behind NAT).
    pub always_relay: bool,
    /// Let AutoNAT confirm private addresses (10/8, 192.168/16, …): for
    /// LANs and test networks. Off, as libp2p has it: only global addresses.
    pub autonat_private: bool,
    /// Addresses others reach this node at, declared rather than probed (a
    /// relay must name at least one in the reservations it grants).
    pub external: Vec<Multiaddr>,
    /// Take no part in hole punching (DCUtR): relayed connections stay relayed.
    pub no_hole_punching: bool,
}

/// What a node serving as a relay gives others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayLimits {
    /// Peers that may hold a reservation (listen through this node) at once.
    pub reservations: usize,
    /// Relayed connections at once, all peers together.
    pub circuits: usize,
    /// Relayed connections one peer may be an end of at once.
    pub circuits_per_peer: usize,
    /// Bytes one relayed connection may carry, both ways together, before
    /// the relay closes it.
    pub circuit_bytes: u64,
    /// How long one relayed connection may last.
    pub circuit_duration: Duration,
}

impl Default for RelayLimits {
    /// Enough to deploy and control pods over a relay (requests are small;
    /// image layers go directly or through the artifact network), small
    /// enough that a public node relays for strangers at a bounded cost.
    fn default() -> Self {
        RelayLimits {
            reservations: 128,
            circuits: 64,
            circuits_per_peer: 8,
            circuit_bytes: 8 << 20,
            circuit_duration: Duration::from_secs(600),
        }
    }
}

/// Whether others can dial this node, as AutoNAT last found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Reachability {
    /// No verdict yet (no probe has finished, or nobody to ask).
    Unknown,
    /// Peers dialled this node back.
    Public,
    /// Peers could not dial this node back: it is behind NAT or a firewall.
    Private,
}

/// The way bytes travel between this node and a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Path {
    /// A connection of the two nodes' own (possibly hole-punched).
    Direct,
    /// Through a circuit relay.
    Relayed,
}

impl std::fmt::Display for Path {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Path::Direct => "direct",
            Path::Relayed => "relayed",
        })
    }
}

/// Whether `addr` goes through a relay.
pub fn is_relayed(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| p == Protocol::P2pCircuit)
}

pub(super) fn relay_config(limits: RelayLimits) -> relay::Config {
    relay::Config {
        max_reservations: limits.reservations,
        max_reservations_per_peer: 2,
        max_circuits: limits.circuits,
        max_circuits_per_peer: limits.circuits_per_peer,
        max_circuit_bytes: limits.circuit_bytes,
        max_circuit_duration: limits.circuit_duration,
        ..relay::Config::default()
    }
}

pub(super) fn autonat_config(private: bool) -> autonat::v1::Config {
    autonat::v1::Config {
        // A provider that starts behind NAT should be reachable through a
        // relay within seconds, not the quarter of a minute libp2p waits.
        boot_delay: Duration::from_secs(1),
        retry_interval: Duration::from_secs(20),
        refresh_interval: Duration::from_secs(300),
        timeout: Duration::from_secs(10),
        throttle_server_period: Duration::from_secs(5),
        only_global_ips: !private,
        ..autonat::v1::Config::default()
    }
}

/// What a node knows of its way to one peer.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct PathReport {
    /// The best open path.
    pub path: Option<Path>,
    /// The path the latest response came on.
    pub response: Option<Path>,
    /// Hole punching failed, or is off.
    pub punch_failed: bool,
    /// A relayed connection this node dialled is still open.
    pub relayed_open: bool,
}

/// What a node knows about paths and relays.
#[derive(Default)]
pub(super) struct NatState {
    pub(super) reachability: Option<Reachability>,
    pub(super) always_relay: bool,
    /// Relays to listen through, by peer, with the address to reach each.
    candidates: HashMap<PeerId, Multiaddr>,
    /// Bootstrap peers, which become relay candidates once they say they relay.
    bootstrap: HashMap<PeerId, Multiaddr>,
    /// Relays this node listens through (or is asking to).
    listening_via: HashSet<PeerId>,
    /// When listening through a relay last failed: it is not asked again
    /// for a while (a bootstrap peer may not relay at all).
    failed: HashMap<PeerId, std::time::Instant>,
    /// Open connections per peer and the path of each; `true` when this
    /// node dialled it.
    connections: HashMap<PeerId, HashMap<ConnectionId, (Path, bool)>>,
    /// The path the last response from each peer arrived on.
    pub(super) response_path: HashMap<PeerId, Path>,
    /// Peers with both paths open, whose relayed connections this node
    /// dialled and closes once its requests are off them.
    retire: HashSet<PeerId>,
    /// Peers whose last hole punch failed.
    pub(super) punch_failed: HashSet<PeerId>,
    pub(super) no_hole_punching: bool,
}

impl NatState {
    pub(super) fn new(config: &NatConfig, bootstrap: &[Multiaddr]) -> NatState {
        let mut state = NatState {
            always_relay: config.always_relay,
            no_hole_punching: config.no_hole_punching,
            ..NatState::default()
        };
        for addr in &config.relays {
            if let (_, Some(peer)) = crate::split_peer_id(addr) {
                state.candidates.insert(peer, addr.clone());
            }
        }
        for addr in bootstrap {
            if let (_, Some(peer)) = crate::split_peer_id(addr) {
                state.bootstrap.insert(peer, addr.clone());
            }
        }
        state
    }

    /// The best open path to `peer`.
    pub(super) fn path(&self, peer: &PeerId) -> Option<Path> {
        self.connections.get(peer)?.values().map(|(p, _)| *p).min()
    }

    /// Whether a relayed connection this node dialled to `peer` is open.
    pub(super) fn dialled_relayed(&self, peer: &PeerId) -> bool {
        self.connections.get(peer).is_some_and(|c| c.values().any(|(p, d)| *p == Path::Relayed && *d))
    }

    /// The path of one open connection.
    pub(super) fn connection(&self, peer: PeerId, id: ConnectionId) -> Option<Path> {
        self.connections.get(&peer)?.get(&id).map(|(p, _)| *p)
    }

    fn wants_relay(&self) -> bool {
        self.always_relay || self.reachability == Some(Reachability::Private)
    }
}

impl SwarmTask {
    /// Starts listening through relay candidates not yet used, up to two,
    /// when this node needs them.
    pub(super) fn use_relays(&mut self) {
        if !self.nat.wants_relay() {
            return;
        }
        let wanted = 2usize.saturating_sub(self.nat.listening_via.len());
        // Configured relays first, then bootstrap peers (known to relay, or
        // tried to find out).
        let fresh: Vec<(PeerId, Multiaddr)> = self
            .nat
            .candidates
            .iter()
            .chain(self.nat.bootstrap.iter().filter(|(p, _)| !self.nat.candidates.contains_key(p)))
            .filter(|(peer, _)| !self.nat.listening_via.contains(peer))
            .filter(|(peer, _)| self.nat.failed.get(peer).is_none_or(|t| t.elapsed() > Duration::from_secs(30)))
            .take(wanted)
            .map(|(p, a)| (*p, a.clone()))
            .collect();
        for (relay, addr) in fresh {
            let circuit = addr.with(Protocol::P2pCircuit);
            match self.swarm.listen_on(circuit.clone()) {
                Ok(id) => {
                    tracing::info!(%relay, "listening through relay {circuit}");
                    self.nat.listening_via.insert(relay);
                    self.relay_listeners.insert(id, relay);
                }
                Err(e) => tracing::warn!(%relay, error = %e, "cannot listen through relay"),
            }
        }
    }

    /// A relay listener closed: its relay may be tried again later.
    pub(super) fn relay_listener_closed(&mut self, id: libp2p::core::transport::ListenerId, failed: bool) {
        if let Some(relay) = self.relay_listeners.remove(&id) {
            tracing::info!(%relay, failed, "no longer listening through relay");
            self.nat.listening_via.remove(&relay);
            if failed {
                self.nat.failed.insert(relay, std::time::Instant::now());
            }
        }
    }

    pub(super) fn on_identify(&mut self, peer: PeerId, info: &identify::Info) {
        if info.protocols.contains(&relay::HOP_PROTOCOL_NAME) {
            if let Some(addr) = self.nat.bootstrap.get(&peer).cloned() {
                self.nat.candidates.entry(peer).or_insert(addr);
                self.use_relays();
            }
        }
    }

    pub(super) fn on_autonat(&mut self, event: autonat::v1::Event) {
        if let autonat::v1::Event::StatusChanged { new, .. } = event {
            let reachability = match new {
                autonat::v1::NatStatus::Public(addr) => {
                    tracing::info!("AutoNAT: reachable at {addr}");
                    Reachability::Public
                }
                autonat::v1::NatStatus::Private => {
                    tracing::info!("AutoNAT: not reachable from outside; listening through relays");
                    Reachability::Private
                }
                autonat::v1::NatStatus::Unknown => Reachability::Unknown,
            };
            self.nat.reachability = Some(reachability);
            self.use_relays();
        }
    }

    pub(super) fn on_relay_client(&mut self, event: relay::client::Event) {
        match event {
            relay::client::Event::ReservationReqAccepted { relay_peer_id, renewal: false, .. } => {
                tracing::info!(relay = %relay_peer_id, "relay reservation accepted");
                // Announce again, so that provider records on the DHT carry
                // the relayed address that was just confirmed.
                let keys: Vec<kad::RecordKey> = {
                    use kad::store::RecordStore;
                    self.swarm.behaviour_mut().kad.store_mut().provided().map(|r| r.key.clone()).collect()
                };
                for key in keys {
                    let _ = self.swarm.behaviour_mut().kad.start_providing(key);
                }
            }
            relay::client::Event::InboundCircuitEstablished { src_peer_id, .. } => {
                tracing::debug!(peer = %src_peer_id, "relayed connection in");
            }
            _ => {}
        }
    }

    pub(super) fn on_dcutr(&mut self, event: dcutr::Event) {
        match event.result {
            Ok(connection) => {
                self.nat.punch_failed.remove(&event.remote_peer_id);
                tracing::info!(peer = %event.remote_peer_id, "hole punched: direct connection");
                // Its address is a NAT mapping: keep the way the peer was
                // reached before (its relayed address) for later dials.
                if let Some(dialed) = self.dialed.get_mut(&event.remote_peer_id) {
                    dialed.retain(|(id, _)| *id != connection);
                }
            }
            Err(e) => {
                tracing::info!(peer = %event.remote_peer_id, error = %e, "hole punching failed; staying relayed");
                self.nat.punch_failed.insert(event.remote_peer_id);
            }
        }
    }

    pub(super) fn connection_opened(&mut self, peer: PeerId, id: ConnectionId, endpoint: &ConnectedPoint) {
        let path = if endpoint.is_relayed() { Path::Relayed } else { Path::Direct };
        let dialled = endpoint.is_dialer();
        if path == Path::Relayed {
            self.nat.punch_failed.remove(&peer);
        }
        let conns = self.nat.connections.entry(peer).or_default();
        conns.insert(id, (path, dialled));
        let direct = conns.values().any(|(p, _)| *p == Path::Direct);
        let ours_relayed = conns.values().any(|(p, d)| *p == Path::Relayed && *d);
        if direct && ours_relayed {
            self.nat.retire.insert(peer);
            self.retire_relayed();
        }
    }

    pub(super) fn connection_closed(&mut self, peer: PeerId, id: ConnectionId) {
        if let Some(conns) = self.nat.connections.get_mut(&peer) {
            conns.remove(&id);
            if conns.is_empty() {
                self.nat.connections.remove(&peer);
                self.nat.retire.remove(&peer);
            }
        }
    }

    /// Closes the relayed connections this node dialled to peers it also
    /// reaches directly, once none of its requests to them is in flight.
    pub(super) fn retire_relayed(&mut self) {
        let busy: HashSet<PeerId> = self.outbound_peers();
        let ready: Vec<PeerId> = self.nat.retire.iter().filter(|p| !busy.contains(p)).copied().collect();
        for peer in ready {
            self.nat.retire.remove(&peer);
            let relayed: Vec<ConnectionId> = self
                .nat
                .connections
                .get(&peer)
                .map(|c| c.iter().filter(|(_, (p, d))| *p == Path::Relayed && *d).map(|(id, _)| *id).collect())
                .unwrap_or_default();
            for id in relayed {
                tracing::debug!(%peer, "closing the relayed connection: a direct one is up");
                self.swarm.close_connection(id);
            }
        }
    }
}
