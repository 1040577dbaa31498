//! The swarm task and the handle that talks to it.

mod nat;

use nat::PathReport;
pub use nat::{is_relayed, NatConfig, Path, Reachability, RelayLimits};

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use libp2p::core::ConnectedPoint;
use libp2p::identity::Keypair;
use libp2p::kad::{self, GetProvidersOk, QueryId, QueryResult};
use libp2p::request_response::{self, OutboundRequestId, ProtocolSupport, ResponseChannel};
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::swarm::{ConnectionId, NetworkBehaviour, SwarmEvent};
use libp2p::{
    autonat, dcutr, identify, mdns, noise, ping, relay, tcp, yamux, Multiaddr, PeerId, StreamProtocol, Swarm,
};
use sealpod_proto::{
    limits, protocol, AttestRequest, AttestResponse, CapacityRequest, CapacityResponse, Error, ErrorCode, LogRequest,
    LogResponse, PodControlRequest, PodControlResponse, ProvisionPodRequest, ProvisionPodResponse,
};
use tokio::sync::{mpsc, oneshot};

use crate::codec::{FrameError, ProtoCodec};

/// How a node is set up.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// The node's identity.
    pub keypair: Keypair,
    /// Addresses to listen on; empty for a client that only dials.
    pub listen: Vec<Multiaddr>,
    /// Peers to join the DHT through, each with a `/p2p/<peer id>` suffix.
    pub bootstrap: Vec<Multiaddr>,
    /// Discover peers on the local network with mDNS.
    pub mdns: bool,
    /// Answer the Apocryph protocols (a provider). A client only asks.
    pub serve: bool,
    /// Advertise this node as a provider on the DHT.
    pub advertise: bool,
    /// Answer `/apocryph/log/0.0.1` (an artifact node). Requests arrive as
    /// [`InboundRequest::Log`].
    pub serve_log: bool,
    /// Timeout for attest and capacity requests.
    pub request_timeout: Duration,
    /// Timeout for provisioning and pod control, which include unpacking
    /// images and starting containers on the provider (a deploy, an update).
    pub provision_timeout: Duration,
    /// What one peer, and all peers together, may hold of this node.
    pub limits: PeerLimits,
    /// AutoNAT, relays and hole punching.
    pub nat: NatConfig,
    /// Never answer DHT queries, even while listening: a publisher listens
    /// only so that peers behind NAT can punch a hole to it. Otherwise a
    /// node that listens (a provider, an artifact node) serves the DHT.
    pub dht_client: bool,
}

/// Bounds on what peers may hold of a node, so that a flood of connections,
/// streams or requests is refused early and costs bounded memory while
/// well-behaved peers are still served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerLimits {
    /// Connections one peer may have open at once.
    pub connections_per_peer: u32,
    /// Inbound connections established at once, all peers together.
    pub incoming_connections: u32,
    /// Inbound connections still in their handshake, all together; each is
    /// dropped if it does not finish within ten seconds.
    pub pending_incoming: u32,
    /// Request streams one connection may have open at once, per protocol.
    pub streams_per_connection: usize,
    /// Requests of one peer being handled at once; more are answered
    /// `UNAVAILABLE` at once without reaching the provider.
    pub requests_per_peer: usize,
    /// Bytes of request bodies held at once, all peers together.
    pub inbound_bytes: usize,
}

impl Default for PeerLimits {
    fn default() -> Self {
        PeerLimits {
            connections_per_peer: 4,
            incoming_connections: 512,
            pending_incoming: 1024,
            streams_per_connection: 16,
            requests_per_peer: 8,
            inbound_bytes: 64 << 20,
        }
    }
}

impl NodeConfig {
    /// A client that dials out and listens nowhere.
    pub fn client(keypair: Keypair) -> Self {
        NodeConfig {
            keypair,
            listen: Vec::new(),
            bootstrap: Vec::new(),
            mdns: false,
            serve: false,
            advertise: false,
            serve_log: false,
            request_timeout: Duration::from_secs(30),
            provision_timeout: Duration::from_secs(300),
            limits: PeerLimits::default(),
            nat: NatConfig::default(),
            dht_client: false,
        }
    }
}

/// Why a network operation failed.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// Setting up transports or listeners failed.
    #[error("network setup: {0}")]
    Setup(String),
    /// The peer could not be reached.
    #[error("could not connect to {addr}: {reason}")]
    Dial {
        /// The address dialed.
        addr: String,
        /// What the transport said.
        reason: String,
    },
    /// The request was sent but no valid response came back.
    #[error("request to {peer} failed: {reason}")]
    Request {
        /// The peer asked.
        peer: PeerId,
        /// What went wrong (timeout, unsupported protocol, closed stream…).
        reason: String,
    },
    /// A DHT lookup failed.
    #[error("DHT lookup failed: {0}")]
    Discovery(String),
    /// The node's background task has stopped.
    #[error("the network node has shut down")]
    Shutdown,
}

/// Answers one inbound request. Dropping it without answering sends the peer
/// an internal error.
pub struct Responder<T> {
    tx: oneshot::Sender<T>,
}

impl<T> Responder<T> {
    /// Sends the response to the peer.
    pub fn respond(self, response: T) {
        let _ = self.tx.send(response);
    }
}

// One value per request through a channel: its size does not matter.
#[allow(clippy::large_enum_variant)]
/// A request from a peer, already decoded and within limits. The peer id is the
/// one authenticated by the connection's Noise handshake.
pub enum InboundRequest {
    /// `/apocryph/attest/0.0.1`
    Attest {
        /// Who asks.
        peer: PeerId,
        /// What was asked.
        request: AttestRequest,
        /// Where the answer goes.
        responder: Responder<AttestResponse>,
    },
    /// `/apocryph/provisioning-capacity/0.0.1`
    Capacity {
        /// Who asks.
        peer: PeerId,
        /// What was asked.
        request: CapacityRequest,
        /// Where the answer goes.
        responder: Responder<CapacityResponse>,
    },
    /// `/apocryph/provision-pod/0.0.1`
    Provision {
        /// Who asks.
        peer: PeerId,
        /// What was asked.
        request: ProvisionPodRequest,
        /// Where the answer goes.
        responder: Responder<ProvisionPodResponse>,
    },
    /// `/apocryph/pod-control/0.0.1`
    Control {
        /// Who asks.
        peer: PeerId,
        /// What was asked.
        request: PodControlRequest,
        /// Where the answer goes.
        responder: Responder<PodControlResponse>,
    },
    /// `/apocryph/log/0.0.1`
    Log {
        /// Who asks.
        peer: PeerId,
        /// What was asked.
        request: LogRequest,
        /// Where the answer goes.
        responder: Responder<LogResponse>,
    },
}

/// A response type that can carry an error, so that the node can answer a
/// request it could not decode instead of silently closing the stream.
trait ErrorResponse: Sized {
    fn from_error(e: Error) -> Self;
}

impl ErrorResponse for AttestResponse {
    fn from_error(e: Error) -> Self {
        AttestResponse { error: Some(e), evidence: None, gpus: Vec::new() }
    }
}
impl ErrorResponse for CapacityResponse {
    fn from_error(e: Error) -> Self {
        CapacityResponse { error: Some(e), ..Default::default() }
    }
}
impl ErrorResponse for ProvisionPodResponse {
    fn from_error(e: Error) -> Self {
        ProvisionPodResponse { error: Some(e), status: None }
    }
}
impl ErrorResponse for LogResponse {
    fn from_error(e: Error) -> Self {
        LogResponse { error: Some(e), ..Default::default() }
    }
}
impl ErrorResponse for PodControlResponse {
    fn from_error(e: Error) -> Self {
        PodControlResponse { result: Some(sealpod_proto::pod_control_response::Result::Error(e)) }
    }
}

/// A request as the codec hands it over: decoded, or the reason it was not.
type Decoded<T> = Result<T, FrameError>;
type Rr<Req, Resp> = request_response::Behaviour<ProtoCodec<Req, Resp>>;

#[derive(NetworkBehaviour)]
struct Behaviour {
    limits: libp2p::connection_limits::Behaviour,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    kad: kad::Behaviour<kad::store::MemoryStore>,
    mdns: Toggle<mdns::tokio::Behaviour>,
    attest: Rr<AttestRequest, AttestResponse>,
    capacity: Rr<CapacityRequest, CapacityResponse>,
    provision: Rr<ProvisionPodRequest, ProvisionPodResponse>,
    control: Rr<PodControlRequest, PodControlResponse>,
    log: Rr<LogRequest, LogResponse>,
    stream: libp2p_stream::Behaviour,
    relay_client: relay::client::Behaviour,
    relay: Toggle<relay::Behaviour>,
    dcutr: Toggle<dcutr::Behaviour>,
    autonat: autonat::v1::Behaviour,
}

type Reply<T> = oneshot::Sender<Result<T, NodeError>>;

#[allow(clippy::large_enum_variant)]
enum Command {
    Dial { addr: Multiaddr, peer: Option<PeerId>, reply: Reply<PeerId> },
    Attest { peer: PeerId, request: AttestRequest, reply: Reply<AttestResponse> },
    Capacity { peer: PeerId, request: CapacityRequest, reply: Reply<CapacityResponse> },
    Provision { peer: PeerId, request: ProvisionPodRequest, reply: Reply<ProvisionPodResponse> },
    Control { peer: PeerId, request: PodControlRequest, reply: Reply<PodControlResponse> },
    Log { peer: PeerId, request: LogRequest, reply: Reply<LogResponse> },
    FindProviders { key: Vec<u8>, reply: Reply<Vec<PeerId>> },
    Provide { key: Vec<u8> },
    AddAddress { peer: PeerId, addr: Multiaddr },
    ListenAddrs { reply: oneshot::Sender<Vec<Multiaddr>> },
    PeerAddr { peer: PeerId, reply: oneshot::Sender<Option<Multiaddr>> },
    Reachability { reply: oneshot::Sender<Reachability> },
    Path { peer: PeerId, reply: oneshot::Sender<PathReport> },
}

/// A running libp2p node. Cheap to clone; the swarm stops when every handle and
/// the inbound receiver are dropped.
#[derive(Clone)]
pub struct Node {
    peer_id: PeerId,
    commands: mpsc::Sender<Command>,
    streams: libp2p_stream::Control,
}

impl Node {
    /// Starts the swarm on the current tokio runtime. Returns once every listen
    /// address is bound, with the stream of inbound requests (empty unless
    /// `config.serve`).
    pub async fn start(config: NodeConfig) -> Result<(Node, mpsc::Receiver<InboundRequest>), NodeError> {
        let peer_id = config.keypair.public().to_peer_id();
        let mut swarm = build_swarm(&config)?;
        let mut pending_listeners = HashSet::new();
        for addr in &config.listen {
            let id = swarm.listen_on(addr.clone()).map_err(|e| NodeError::Setup(format!("listen on {addr}: {e}")))?;
            pending_listeners.insert(id);
        }
        let mut listen_addrs = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !pending_listeners.is_empty() {
            let event = tokio::time::timeout_at(deadline, swarm.select_next_some())
                .await
                .map_err(|_| NodeError::Setup("timed out binding listen addresses".into()))?;
            match event {
                SwarmEvent::NewListenAddr { listener_id, address } => {
                    pending_listeners.remove(&listener_id);
                    listen_addrs.push(address);
                }
                SwarmEvent::ListenerError { error, .. } | SwarmEvent::ListenerClosed { reason: Err(error), .. } => {
                    return Err(NodeError::Setup(format!("listener failed: {error}")));
                }
                _ => {}
            }
        }
        for addr in &config.bootstrap {
            let (bare, peer) = crate::split_peer_id(addr);
            let Some(peer) = peer else {
                return Err(NodeError::Setup(format!("bootstrap address {addr} lacks a /p2p/<peer id> suffix")));
            };
            swarm.behaviour_mut().kad.add_address(&peer, bare);
        }
        if !config.bootstrap.is_empty() {
            let _ = swarm.behaviour_mut().kad.bootstrap();
        }
        if config.advertise {
            swarm
                .behaviour_mut()
                .kad
                .start_providing(kad::RecordKey::new(&crate::PROVIDER_DHT_KEY))
                .map_err(|e| NodeError::Setup(format!("DHT provider record: {e}")))?;
        }
        let streams = swarm.behaviour().stream.new_control();
        let (cmd_tx, cmd_rx) = mpsc::channel(64);
        let (in_tx, in_rx) = mpsc::channel(INBOUND_QUEUE + INBOUND_RESERVE);
        let task = SwarmTask {
            swarm,
            commands: cmd_rx,
            inbound: in_tx,
            advertise: config.advertise,
            listen_addrs,
            nat: nat::NatState::new(&config.nat, &config.bootstrap),
            relay_listeners: HashMap::new(),
            dials: HashMap::new(),
            dialed: HashMap::new(),
            attest: HashMap::new(),
            capacity: HashMap::new(),
            provision: HashMap::new(),
            control: HashMap::new(),
            log: HashMap::new(),
            provider_queries: HashMap::new(),
            replies: FuturesUnordered::new(),
            in_flight: HashMap::new(),
            requests_per_peer: config.limits.requests_per_peer,
        };
        let mut task = task;
        for addr in &config.nat.external {
            task.swarm.add_external_address(addr.clone());
        }
        task.use_relays();
        tokio::spawn(task.run());
        Ok((Node { peer_id, commands: cmd_tx, streams }, in_rx))
    }

    /// This node's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// The addresses the node listens on.
    pub async fn listen_addrs(&self) -> Vec<Multiaddr> {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Command::ListenAddrs { reply: tx }).await.is_err() {
            return Vec::new();
        }
        rx.await.unwrap_or_default()
    }

    /// Connects to `addr`. If it ends in `/p2p/<peer id>`, the remote must prove
    /// that identity. Returns the authenticated peer id.
    pub async fn dial(&self, addr: &Multiaddr) -> Result<PeerId, NodeError> {
        let (bare, peer) = crate::split_peer_id(addr);
        let ask = |reply| Command::Dial { addr: bare.clone(), peer, reply };
        let result = tokio::time::timeout(Duration::from_secs(20), self.ask(ask)).await;
        result.unwrap_or_else(|_| Err(NodeError::Dial { addr: addr.to_string(), reason: "timed out".into() }))
    }

    /// The address this node last reached `peer` at by dialing, if any.
    pub async fn peer_addr(&self, peer: PeerId) -> Option<Multiaddr> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(Command::PeerAddr { peer, reply: tx }).await.ok()?;
        rx.await.ok().flatten()
    }

    /// Whether peers can dial this node, as AutoNAT last found.
    pub async fn reachability(&self) -> Reachability {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Command::Reachability { reply: tx }).await.is_err() {
            return Reachability::Unknown;
        }
        rx.await.unwrap_or(Reachability::Unknown)
    }

    /// The best path open to `peer` now (direct before relayed), if any.
    pub async fn connection_path(&self, peer: PeerId) -> Option<Path> {
        self.paths(peer).await.path
    }

    /// The path the last response from `peer` arrived on, if any did.
    pub async fn response_path(&self, peer: PeerId) -> Option<Path> {
        self.paths(peer).await.response
    }

    /// When `peer` is reached only through a relay, waits up to `timeout`
    /// for hole punching to open a direct connection, so that what follows
    /// (a deploy, say) takes it. Returns the path to use.
    pub async fn prefer_direct(&self, peer: PeerId, timeout: Duration) -> Option<Path> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let report = self.paths(peer).await;
            // Direct, and the relayed connection this node dialled already
            // closed: requests can no longer go out on it.
            let settled = report.path == Some(Path::Direct) && !report.relayed_open;
            if settled || report.path.is_none() || report.punch_failed || tokio::time::Instant::now() >= deadline {
                return report.path;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    async fn paths(&self, peer: PeerId) -> PathReport {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Command::Path { peer, reply: tx }).await.is_err() {
            return PathReport::default();
        }
        rx.await.unwrap_or_default()
    }

    /// `peers` in the order to fetch from: those reached directly first, then
    /// those not connected (a dial may well go direct), those reachable only
    /// through a relay last.
    pub async fn rank_by_path(&self, peers: Vec<PeerId>) -> Vec<PeerId> {
        let mut ranked = Vec::with_capacity(peers.len());
        for peer in peers {
            let rank = match self.connection_path(peer).await {
                Some(Path::Direct) => 0,
                None => 1,
                Some(Path::Relayed) => 2,
            };
            ranked.push((rank, peer));
        }
        ranked.sort_by_key(|(rank, _)| *rank);
        ranked.into_iter().map(|(_, p)| p).collect()
    }

    /// Remembers an address for a peer, for later requests.
    pub async fn add_address(&self, peer: PeerId, addr: Multiaddr) {
        let _ = self.commands.send(Command::AddAddress { peer, addr }).await;
    }

    /// Asks `peer` for attestation evidence.
    pub async fn attest(&self, peer: PeerId, request: AttestRequest) -> Result<AttestResponse, NodeError> {
        self.ask(|reply| Command::Attest { peer, request, reply }).await
    }

    /// Asks `peer` what it would offer for some resources.
    pub async fn capacity(&self, peer: PeerId, request: CapacityRequest) -> Result<CapacityResponse, NodeError> {
        self.ask(|reply| Command::Capacity { peer, request, reply }).await
    }

    /// Asks `peer` to provision a pod.
    pub async fn provision(
        &self,
        peer: PeerId,
        request: ProvisionPodRequest,
    ) -> Result<ProvisionPodResponse, NodeError> {
        self.ask(|reply| Command::Provision { peer, request, reply }).await
    }

    /// Sends a pod-control request to `peer`.
    pub async fn control(&self, peer: PeerId, request: PodControlRequest) -> Result<PodControlResponse, NodeError> {
        self.ask(|reply| Command::Control { peer, request, reply }).await
    }

    /// Sends a log request to `peer`.
    pub async fn log(&self, peer: PeerId, request: LogRequest) -> Result<LogResponse, NodeError> {
        self.ask(|reply| Command::Log { peer, request, reply }).await
    }

    /// Announces on the DHT that this node holds what `key` names (a log,
    /// say); other nodes find it with [`Node::find_key_providers`].
    pub async fn provide_key(&self, key: Vec<u8>) -> Result<(), NodeError> {
        self.commands.send(Command::Provide { key }).await.map_err(|_| NodeError::Shutdown)
    }

    /// Peers that announced `key`.
    pub async fn find_key_providers(&self, key: Vec<u8>) -> Result<Vec<PeerId>, NodeError> {
        self.ask(|reply| Command::FindProviders { key, reply }).await
    }

    /// Looks up providers advertised on the DHT (and found by mDNS).
    pub async fn find_providers(&self) -> Result<Vec<PeerId>, NodeError> {
        self.ask(|reply| Command::FindProviders { key: crate::PROVIDER_DHT_KEY.to_vec(), reply }).await
    }

    /// Serves blobs held by `source` to any peer that asks, until the node stops.
    pub fn serve_blobs(&self, source: std::sync::Arc<dyn crate::blob::BlobSource>) {
        let control = self.streams.clone();
        tokio::spawn(async move {
            if let Err(e) = crate::blob::serve(control, source).await {
                tracing::error!(error = %e, "blob service stopped");
            }
        });
    }

    /// Announces on the DHT that this node holds blob `digest`.
    pub async fn provide_blob(&self, digest: &str) -> Result<(), NodeError> {
        let key = crate::blob::dht_key(digest)
            .ok_or_else(|| NodeError::Discovery(format!("{digest:?} is not a sha256 digest")))?;
        self.commands.send(Command::Provide { key }).await.map_err(|_| NodeError::Shutdown)
    }

    /// Peers that announced holding blob `digest`.
    pub async fn find_blob_providers(&self, digest: &str) -> Result<Vec<PeerId>, NodeError> {
        let key = crate::blob::dht_key(digest)
            .ok_or_else(|| NodeError::Discovery(format!("{digest:?} is not a sha256 digest")))?;
        self.ask(|reply| Command::FindProviders { key, reply }).await
    }

    /// Fetches `length` bytes (0: to the end) of blob `digest` from `peer`,
    /// starting at `offset`, into `sink` ([`Node::open_blob`], then
    /// [`crate::blob::IncomingBlob::copy_to`]). Returns the blob's total
    /// size and the bytes written; the bytes are not verified here.
    pub async fn fetch_blob<W: tokio::io::AsyncWrite + Unpin>(
        &self,
        peer: PeerId,
        digest: &str,
        offset: u64,
        length: u64,
        sink: &mut W,
    ) -> Result<(u64, u64), crate::blob::BlobError> {
        let incoming = self.open_blob(peer, digest, offset, length).await?;
        let size = incoming.size;
        Ok((size, incoming.copy_to(sink).await?))
    }

    /// Asks `peer` for a range of blob `digest` and returns once it has
    /// agreed (see [`crate::blob::open`]), so the caller learns the blob's
    /// size before the bytes flow.
    pub async fn open_blob(
        &self,
        peer: PeerId,
        digest: &str,
        offset: u64,
        length: u64,
    ) -> Result<crate::blob::IncomingBlob, crate::blob::BlobError> {
        let mut control = self.streams.clone();
        let mut pause = Duration::from_millis(25);
        for _ in 0..4 {
            match crate::blob::open(&mut control, peer, digest, offset, length).await {
                // The stream closed before any answer: libp2p-stream drops an
                // inbound stream when the peer's accept loop is momentarily
                // busy (its queue holds one), which bursts of piece requests
                // hit. Asking again shortly after gets through.
                Err(crate::blob::BlobError::Transfer { .. }) => {
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                }
                other => return other,
            }
        }
        crate::blob::open(&mut control, peer, digest, offset, length).await
    }

    async fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, NodeError> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(make(tx)).await.map_err(|_| NodeError::Shutdown)?;
        rx.await.map_err(|_| NodeError::Shutdown)?
    }
}

fn build_swarm(config: &NodeConfig) -> Result<Swarm<Behaviour>, NodeError> {
    let support = if config.serve { ProtocolSupport::Full } else { ProtocolSupport::Outbound };
    let request_timeout = config.request_timeout;
    let provision_timeout = config.provision_timeout;
    let mdns_enabled = config.mdns;
    let log_support = if config.serve_log { ProtocolSupport::Full } else { ProtocolSupport::Outbound };
    let server_mode = !config.dht_client && (config.serve || !config.listen.is_empty());
    let relay_service = config.nat.relay_service;
    let autonat_private = config.nat.autonat_private;
    let no_hole_punching = config.nat.no_hole_punching;
    let peer_limits = config.limits;
    let budget = crate::codec::InboundBudget::new(peer_limits.inbound_bytes);
    fn rr<Req, Resp>(
        name: &'static str,
        support: ProtocolSupport,
        (req, resp): (usize, usize),
        timeout: Duration,
        limits: &PeerLimits,
        budget: &std::sync::Arc<crate::codec::InboundBudget>,
    ) -> Rr<Req, Resp>
    where
        Req: prost::Message + Default + Send + 'static,
        Resp: prost::Message + Default + Send + 'static,
    {
        request_response::Behaviour::with_codec(
            ProtoCodec::new(req, resp).with_budget(budget.clone()),
            [(StreamProtocol::new(name), support)],
            request_response::Config::default()
                .with_request_timeout(timeout)
                .with_max_concurrent_streams(limits.streams_per_connection),
        )
    }
    let connection_limits = libp2p::connection_limits::ConnectionLimits::default()
        .with_max_established_per_peer(Some(peer_limits.connections_per_peer))
        .with_max_established_incoming(Some(peer_limits.incoming_connections))
        .with_max_pending_incoming(Some(peer_limits.pending_incoming));
    let yamux_config = move || {
        let mut c = yamux::Config::default();
        // Request protocols are bounded above; this bounds the rest (kad,
        // identify, blob streams) per connection.
        c.set_max_num_streams(8 * peer_limits.streams_per_connection);
        c
    };
    let swarm = libp2p::SwarmBuilder::with_existing_identity(config.keypair.clone())
        .with_tokio()
        .with_tcp(tcp::Config::default().nodelay(true), noise::Config::new, yamux_config)
        .map_err(|e| NodeError::Setup(e.to_string()))?
        .with_quic()
        .with_relay_client(noise::Config::new, yamux_config)
        .map_err(|e| NodeError::Setup(e.to_string()))?
        .with_behaviour(|key, relay_client| {
            let peer_id = key.public().to_peer_id();
            let mut kad_config = kad::Config::new(StreamProtocol::new(crate::KAD_PROTOCOL));
            kad_config.set_query_timeout(Duration::from_secs(15));
            let mut kad = kad::Behaviour::with_config(peer_id, kad::store::MemoryStore::new(peer_id), kad_config);
            // Loopback and LAN nodes never get a confirmed external address, so
            // kad's automatic mode would leave a provider unable to answer DHT
            // queries: a node that listens serves.
            kad.set_mode(Some(if server_mode { kad::Mode::Server } else { kad::Mode::Client }));
            let mdns =
                if mdns_enabled { Some(mdns::tokio::Behaviour::new(mdns::Config::default(), peer_id)?) } else { None };
            Ok(Behaviour {
                limits: libp2p::connection_limits::Behaviour::new(connection_limits),
                identify: identify::Behaviour::new(identify::Config::new("/sealpod/0.1.0".into(), key.public())),
                ping: ping::Behaviour::default(),
                kad,
                mdns: Toggle::from(mdns),
                attest: rr(
                    protocol::ATTEST,
                    support.clone(),
                    (limits::ATTEST_REQUEST, limits::ATTEST_RESPONSE),
                    request_timeout,
                    &peer_limits,
                    &budget,
                ),
                capacity: rr(
                    protocol::PROVISIONING_CAPACITY,
                    support.clone(),
                    (limits::CAPACITY, limits::CAPACITY),
                    request_timeout,
                    &peer_limits,
                    &budget,
                ),
                provision: rr(
                    protocol::PROVISION_POD,
                    support.clone(),
                    (limits::PROVISION_REQUEST, limits::PROVISION_RESPONSE),
                    provision_timeout,
                    &peer_limits,
                    &budget,
                ),
                control: rr(
                    protocol::POD_CONTROL,
                    support,
                    (limits::CONTROL_REQUEST, limits::CONTROL_RESPONSE),
                    // An update fetches and unpacks images, as provisioning does.
                    provision_timeout,
                    &peer_limits,
                    &budget,
                ),
                log: rr(
                    protocol::LOG,
                    log_support,
                    (limits::TLOG_REQUEST, limits::TLOG_RESPONSE),
                    request_timeout,
                    &peer_limits,
                    &budget,
                ),
                stream: libp2p_stream::Behaviour::new(),
                relay_client,
                relay: Toggle::from(relay_service.map(|l| relay::Behaviour::new(peer_id, nat::relay_config(l)))),
                dcutr: Toggle::from((!no_hole_punching).then(|| dcutr::Behaviour::new(peer_id))),
                autonat: autonat::v1::Behaviour::new(peer_id, nat::autonat_config(autonat_private)),
            })
        })
        .map_err(|e| NodeError::Setup(e.to_string()))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build();
    Ok(swarm)
}

/// A response on its way back to a peer once the provider has produced it.
enum OutgoingResponse {
    Attest(Option<AttestResponse>, ResponseChannel<AttestResponse>),
    Capacity(Option<CapacityResponse>, ResponseChannel<CapacityResponse>),
    Provision(Option<ProvisionPodResponse>, ResponseChannel<ProvisionPodResponse>),
    Control(Option<PodControlResponse>, ResponseChannel<PodControlResponse>),
    Log(Option<LogResponse>, ResponseChannel<LogResponse>),
}

struct SwarmTask {
    swarm: Swarm<Behaviour>,
    commands: mpsc::Receiver<Command>,
    inbound: mpsc::Sender<InboundRequest>,
    advertise: bool,
    listen_addrs: Vec<Multiaddr>,
    nat: nat::NatState,
    /// Listeners through relays, and the relay of each.
    relay_listeners: HashMap<libp2p::core::transport::ListenerId, PeerId>,
    dials: HashMap<ConnectionId, (Multiaddr, Reply<PeerId>)>,
    /// Where each peer was last reached by dialing.
    /// Hole-punched connections are left out: their addresses are NAT
    /// mappings that do not outlive the connection.
    /// The last few, newest last.
    dialed: HashMap<PeerId, Vec<(ConnectionId, Multiaddr)>>,
    attest: HashMap<OutboundRequestId, (PeerId, Reply<AttestResponse>)>,
    capacity: HashMap<OutboundRequestId, (PeerId, Reply<CapacityResponse>)>,
    provision: HashMap<OutboundRequestId, (PeerId, Reply<ProvisionPodResponse>)>,
    control: HashMap<OutboundRequestId, (PeerId, Reply<PodControlResponse>)>,
    log: HashMap<OutboundRequestId, (PeerId, Reply<LogResponse>)>,
    provider_queries: HashMap<QueryId, (HashSet<PeerId>, Reply<Vec<PeerId>>)>,
    /// Responses on their way, each with the peer whose in-flight count it
    /// holds (none for an answer given at once).
    replies: FuturesUnordered<BoxFuture<'static, (Option<PeerId>, OutgoingResponse)>>,
    /// Requests each peer has with the provider now.
    in_flight: HashMap<PeerId, usize>,
    requests_per_peer: usize,
}

/// Requests waiting for the provider that any peer's may fill.
const INBOUND_QUEUE: usize = 64;
/// Queue room kept for a peer's first request in flight: a peer with nothing
/// in flight is refused only when this too is full, so many peers each holding
/// their per-peer limit (a Sybil crowd) cannot lock out an honest publisher.
const INBOUND_RESERVE: usize = 192;

/// Where an inbound request goes: the provider's queue, and the per-peer
/// in-flight count that bounds how much of it one peer may hold.
struct Gate<'a> {
    inbound: &'a mpsc::Sender<InboundRequest>,
    in_flight: &'a mut HashMap<PeerId, usize>,
    requests_per_peer: usize,
}

/// Hands an inbound request to the provider, or answers it with an error at
/// once when it could not be decoded, when its peer already has as many
/// requests in flight as it may, or when the provider's queue is full.
fn accept<Req, Resp: ErrorResponse + Send + 'static>(
    peer: PeerId,
    request: Decoded<Req>,
    channel: ResponseChannel<Resp>,
    wrap_request: impl FnOnce(PeerId, Req, Responder<Resp>) -> InboundRequest,
    wrap_response: fn(Option<Resp>, ResponseChannel<Resp>) -> OutgoingResponse,
    gate: Gate<'_>,
) -> BoxFuture<'static, (Option<PeerId>, OutgoingResponse)> {
    let (code, message): (ErrorCode, String) = match request {
        Err(FrameError::Busy) => (ErrorCode::Unavailable, "provider is receiving too much at once; try again".into()),
        Err(e) => {
            tracing::info!(%peer, error = %e, "refused malformed request");
            (ErrorCode::InvalidRequest, format!("malformed request: {e}"))
        }
        Ok(request) => {
            let count = gate.in_flight.entry(peer).or_default();
            if *count >= gate.requests_per_peer {
                tracing::debug!(%peer, "refused a request over the per-peer limit");
                let limit = gate.requests_per_peer;
                (ErrorCode::Unavailable, format!("too many requests in flight from this peer (at most {limit})"))
            } else if *count > 0 && gate.inbound.capacity() <= INBOUND_RESERVE {
                // The shared part of the queue is full; what is left is kept for
                // peers with nothing in flight, so a crowd of busy peers cannot
                // starve a newcomer.
                (ErrorCode::Unavailable, "provider is busy; try again".into())
            } else {
                let (tx, rx) = oneshot::channel();
                if gate.inbound.try_send(wrap_request(peer, request, Responder { tx })).is_ok() {
                    *count += 1;
                    return async move { (Some(peer), wrap_response(rx.await.ok(), channel)) }.boxed();
                }
                (ErrorCode::Unavailable, "provider is busy; try again".into())
            }
        }
    };
    let resp = Resp::from_error(Error::new(code, message));
    async move { (None, wrap_response(Some(resp), channel)) }.boxed()
}

fn internal_error<Resp: ErrorResponse>(r: Option<Resp>) -> Resp {
    r.unwrap_or_else(|| Resp::from_error(Error::new(ErrorCode::Internal, "the provider dropped the request")))
}

impl SwarmTask {
    async fn run(mut self) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                _ = tick.tick() => {
                    self.retire_relayed();
                    self.use_relays();
                }
                command = self.commands.recv() => match command {
                    Some(command) => self.on_command(command),
                    None if self.inbound.is_closed() => return,
                    None => {
                        // No more handles, but a server keeps serving until its
                        // inbound receiver is dropped.
                        self.commands = mpsc::channel(1).1;
                    }
                },
                Some((peer, reply)) = self.replies.next(), if !self.replies.is_empty() => {
                    if let Some(peer) = peer {
                        if let Some(n) = self.in_flight.get_mut(&peer) {
                            *n -= 1;
                            if *n == 0 {
                                self.in_flight.remove(&peer);
                            }
                        }
                    }
                    self.send_reply(reply)
                }
            }
        }
    }

    fn send_reply(&mut self, reply: OutgoingResponse) {
        let b = self.swarm.behaviour_mut();
        // A failure here means the peer went away; nothing to tell anyone.
        let _ = match reply {
            OutgoingResponse::Attest(r, ch) => b.attest.send_response(ch, internal_error(r)).is_ok(),
            OutgoingResponse::Capacity(r, ch) => b.capacity.send_response(ch, internal_error(r)).is_ok(),
            OutgoingResponse::Provision(r, ch) => b.provision.send_response(ch, internal_error(r)).is_ok(),
            OutgoingResponse::Control(r, ch) => b.control.send_response(ch, internal_error(r)).is_ok(),
            OutgoingResponse::Log(r, ch) => b.log.send_response(ch, internal_error(r)).is_ok(),
        };
    }

    fn on_command(&mut self, command: Command) {
        let b = self.swarm.behaviour_mut();
        match command {
            Command::Dial { addr, peer, reply } => {
                if let Some(peer) = peer.filter(|p| self.swarm.is_connected(p)) {
                    let _ = reply.send(Ok(peer));
                    return;
                }
                let opts = match peer {
                    Some(peer) => DialOpts::peer_id(peer).addresses(vec![addr.clone()]).build(),
                    None => DialOpts::unknown_peer_id().address(addr.clone()).build(),
                };
                let id = opts.connection_id();
                match self.swarm.dial(opts) {
                    Ok(()) => {
                        self.dials.insert(id, (addr, reply));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(NodeError::Dial { addr: addr.to_string(), reason: e.to_string() }));
                    }
                }
            }
            Command::Attest { peer, request, reply } => {
                let id = b.attest.send_request(&peer, Ok(request));
                self.attest.insert(id, (peer, reply));
            }
            Command::Capacity { peer, request, reply } => {
                let id = b.capacity.send_request(&peer, Ok(request));
                self.capacity.insert(id, (peer, reply));
            }
            Command::Provision { peer, request, reply } => {
                let id = b.provision.send_request(&peer, Ok(request));
                self.provision.insert(id, (peer, reply));
            }
            Command::Control { peer, request, reply } => {
                let id = b.control.send_request(&peer, Ok(request));
                self.control.insert(id, (peer, reply));
            }
            Command::Log { peer, request, reply } => {
                let id = b.log.send_request(&peer, Ok(request));
                self.log.insert(id, (peer, reply));
            }
            Command::Provide { key } => {
                if let Err(e) = b.kad.start_providing(kad::RecordKey::new(&key)) {
                    tracing::warn!(error = %e, "cannot record a DHT provider entry");
                }
            }
            Command::FindProviders { key, reply } => {
                let id = b.kad.get_providers(kad::RecordKey::new(&key));
                self.provider_queries.insert(id, (HashSet::new(), reply));
            }
            Command::AddAddress { peer, addr } => {
                b.kad.add_address(&peer, addr);
            }
            Command::ListenAddrs { reply } => {
                let _ = reply.send(self.listen_addrs.clone());
            }
            Command::PeerAddr { peer, reply } => {
                let _ = reply.send(self.dialed.get(&peer).and_then(|d| d.last()).map(|(_, a)| a.clone()));
            }
            Command::Reachability { reply } => {
                let _ = reply.send(self.nat.reachability.unwrap_or(Reachability::Unknown));
            }
            Command::Path { peer, reply } => {
                let _ = reply.send(PathReport {
                    path: self.nat.path(&peer),
                    response: self.nat.response_path.get(&peer).copied(),
                    punch_failed: self.nat.punch_failed.contains(&peer) || self.nat.no_hole_punching,
                    relayed_open: self.nat.dialled_relayed(&peer),
                });
            }
        }
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr { address, .. } => self.listen_addrs.push(address),
            SwarmEvent::ExpiredListenAddr { address, .. } => self.listen_addrs.retain(|a| a != &address),
            SwarmEvent::ListenerClosed { listener_id, reason, .. } => {
                if let Err(e) = &reason {
                    tracing::debug!(error = %e, "listener closed");
                }
                self.relay_listener_closed(listener_id, reason.is_err())
            }
            SwarmEvent::ConnectionClosed { peer_id, connection_id, .. } => {
                self.connection_closed(peer_id, connection_id)
            }
            SwarmEvent::ConnectionEstablished { peer_id, connection_id, endpoint, .. } => {
                self.connection_opened(peer_id, connection_id, &endpoint);
                if let ConnectedPoint::Dialer { address, .. } = &endpoint {
                    let dialed = self.dialed.entry(peer_id).or_default();
                    dialed.retain(|(_, a)| a != address);
                    dialed.push((connection_id, address.clone()));
                    if dialed.len() > 4 {
                        dialed.remove(0);
                    }
                }
                if let Some((_, reply)) = self.dials.remove(&connection_id) {
                    if let ConnectedPoint::Dialer { address, .. } = &endpoint {
                        self.swarm.behaviour_mut().kad.add_address(&peer_id, address.clone());
                    }
                    let _ = reply.send(Ok(peer_id));
                }
            }
            SwarmEvent::OutgoingConnectionError { connection_id, error, .. } => {
                if let Some((addr, reply)) = self.dials.remove(&connection_id) {
                    let _ = reply.send(Err(NodeError::Dial { addr: addr.to_string(), reason: error.to_string() }));
                }
            }
            SwarmEvent::Behaviour(event) => self.on_behaviour_event(event),
            _ => {}
        }
    }

    fn on_behaviour_event(&mut self, event: BehaviourEvent) {
        use request_response::{Event, Message};
        match event {
            BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. }) => {
                self.on_identify(peer_id, &info);
                let kad_protocol = StreamProtocol::new(crate::KAD_PROTOCOL);
                if info.protocols.contains(&kad_protocol) {
                    for addr in info.listen_addrs {
                        self.swarm.behaviour_mut().kad.add_address(&peer_id, addr);
                    }
                }
            }
            BehaviourEvent::Autonat(event) => self.on_autonat(event),
            BehaviourEvent::RelayClient(event) => self.on_relay_client(event),
            BehaviourEvent::Dcutr(event) => self.on_dcutr(event),
            BehaviourEvent::Mdns(mdns::Event::Discovered(found)) => {
                for (peer, addr) in found {
                    self.swarm.behaviour_mut().kad.add_address(&peer, addr);
                }
            }
            BehaviourEvent::Kad(kad::Event::RoutingUpdated { is_new_peer: true, .. }) if self.advertise => {
                // Re-announce as the routing table grows, so a provider that
                // started alone becomes findable once it has neighbours.
                let _ = self.swarm.behaviour_mut().kad.start_providing(kad::RecordKey::new(&crate::PROVIDER_DHT_KEY));
            }
            BehaviourEvent::Kad(kad::Event::OutboundQueryProgressed {
                id,
                result: QueryResult::GetProviders(result),
                step,
                ..
            }) => {
                let Some((found, _)) = self.provider_queries.get_mut(&id) else {
                    return;
                };
                match result {
                    Ok(GetProvidersOk::FoundProviders { providers, .. }) => found.extend(providers),
                    Ok(GetProvidersOk::FinishedWithNoAdditionalRecord { .. }) => {}
                    Err(e) if found.is_empty() => {
                        if let Some((_, reply)) = self.provider_queries.remove(&id) {
                            let _ = reply.send(Err(NodeError::Discovery(e.to_string())));
                        }
                        return;
                    }
                    Err(_) => {}
                }
                if step.last {
                    if let Some((found, reply)) = self.provider_queries.remove(&id) {
                        let _ = reply.send(Ok(found.into_iter().collect()));
                    }
                }
            }
            BehaviourEvent::Attest(event) => match event {
                Event::Message { peer, message: Message::Request { request, channel, .. }, .. } => {
                    let f = accept(
                        peer,
                        request,
                        channel,
                        |peer, request, responder| InboundRequest::Attest { peer, request, responder },
                        OutgoingResponse::Attest,
                        Gate {
                            inbound: &self.inbound,
                            in_flight: &mut self.in_flight,
                            requests_per_peer: self.requests_per_peer,
                        },
                    );
                    self.replies.push(f);
                }
                Event::Message { peer, connection_id, message: Message::Response { request_id, response } } => {
                    self.record_response_path(peer, connection_id);
                    finish(&mut self.attest, request_id, Ok(response))
                }
                Event::OutboundFailure { request_id, error, .. } => finish(&mut self.attest, request_id, Err(error)),
                Event::InboundFailure { peer, error, .. } => {
                    tracing::debug!(%peer, %error, "attest inbound failure")
                }
                Event::ResponseSent { .. } => {}
            },
            BehaviourEvent::Capacity(event) => match event {
                Event::Message { peer, message: Message::Request { request, channel, .. }, .. } => {
                    let f = accept(
                        peer,
                        request,
                        channel,
                        |peer, request, responder| InboundRequest::Capacity { peer, request, responder },
                        OutgoingResponse::Capacity,
                        Gate {
                            inbound: &self.inbound,
                            in_flight: &mut self.in_flight,
                            requests_per_peer: self.requests_per_peer,
                        },
                    );
                    self.replies.push(f);
                }
                Event::Message { peer, connection_id, message: Message::Response { request_id, response } } => {
                    self.record_response_path(peer, connection_id);
                    finish(&mut self.capacity, request_id, Ok(response))
                }
                Event::OutboundFailure { request_id, error, .. } => finish(&mut self.capacity, request_id, Err(error)),
                Event::InboundFailure { peer, error, .. } => {
                    tracing::debug!(%peer, %error, "capacity inbound failure")
                }
                Event::ResponseSent { .. } => {}
            },
            BehaviourEvent::Provision(event) => match event {
                Event::Message { peer, message: Message::Request { request, channel, .. }, .. } => {
                    let f = accept(
                        peer,
                        request,
                        channel,
                        |peer, request, responder| InboundRequest::Provision { peer, request, responder },
                        OutgoingResponse::Provision,
                        Gate {
                            inbound: &self.inbound,
                            in_flight: &mut self.in_flight,
                            requests_per_peer: self.requests_per_peer,
                        },
                    );
                    self.replies.push(f);
                }
                Event::Message { peer, connection_id, message: Message::Response { request_id, response } } => {
                    self.record_response_path(peer, connection_id);
                    finish(&mut self.provision, request_id, Ok(response))
                }
                Event::OutboundFailure { request_id, error, .. } => finish(&mut self.provision, request_id, Err(error)),
                Event::InboundFailure { peer, error, .. } => {
                    tracing::debug!(%peer, %error, "provision inbound failure")
                }
                Event::ResponseSent { .. } => {}
            },
            BehaviourEvent::Control(event) => match event {
                Event::Message { peer, message: Message::Request { request, channel, .. }, .. } => {
                    let f = accept(
                        peer,
                        request,
                        channel,
                        |peer, request, responder| InboundRequest::Control { peer, request, responder },
                        OutgoingResponse::Control,
                        Gate {
                            inbound: &self.inbound,
                            in_flight: &mut self.in_flight,
                            requests_per_peer: self.requests_per_peer,
                        },
                    );
                    self.replies.push(f);
                }
                Event::Message { peer, connection_id, message: Message::Response { request_id, response } } => {
                    self.record_response_path(peer, connection_id);
                    finish(&mut self.control, request_id, Ok(response))
                }
                Event::OutboundFailure { request_id, error, .. } => finish(&mut self.control, request_id, Err(error)),
                Event::InboundFailure { peer, error, .. } => {
                    tracing::debug!(%peer, %error, "control inbound failure")
                }
                Event::ResponseSent { .. } => {}
            },
            BehaviourEvent::Log(event) => match event {
                Event::Message { peer, message: Message::Request { request, channel, .. }, .. } => {
                    let f = accept(
                        peer,
                        request,
                        channel,
                        |peer, request, responder| InboundRequest::Log { peer, request, responder },
                        OutgoingResponse::Log,
                        Gate {
                            inbound: &self.inbound,
                            in_flight: &mut self.in_flight,
                            requests_per_peer: self.requests_per_peer,
                        },
                    );
                    self.replies.push(f);
                }
                Event::Message { peer, connection_id, message: Message::Response { request_id, response } } => {
                    self.record_response_path(peer, connection_id);
                    finish(&mut self.log, request_id, Ok(response))
                }
                Event::OutboundFailure { request_id, error, .. } => finish(&mut self.log, request_id, Err(error)),
                Event::InboundFailure { peer, error, .. } => {
                    tracing::debug!(%peer, %error, "log inbound failure")
                }
                Event::ResponseSent { .. } => {}
            },
            _ => {}
        }
    }
}

impl SwarmTask {
    fn record_response_path(&mut self, peer: PeerId, connection: ConnectionId) {
        if let Some(path) = self.nat_path_of(peer, connection) {
            self.nat.response_path.insert(peer, path);
        }
    }

    fn nat_path_of(&self, peer: PeerId, connection: ConnectionId) -> Option<Path> {
        self.nat.connection(peer, connection)
    }

    /// Peers with a request of this node's in flight.
    fn outbound_peers(&self) -> HashSet<PeerId> {
        let mut peers = HashSet::new();
        peers.extend(self.attest.values().map(|(p, _)| *p));
        peers.extend(self.capacity.values().map(|(p, _)| *p));
        peers.extend(self.provision.values().map(|(p, _)| *p));
        peers.extend(self.control.values().map(|(p, _)| *p));
        peers.extend(self.log.values().map(|(p, _)| *p));
        peers
    }
}

fn finish<T>(
    pending: &mut HashMap<OutboundRequestId, (PeerId, Reply<T>)>,
    id: OutboundRequestId,
    result: Result<T, request_response::OutboundFailure>,
) {
    if let Some((peer, reply)) = pending.remove(&id) {
        let _ = reply.send(result.map_err(|e| NodeError::Request { peer, reason: e.to_string() }));
    }
}
