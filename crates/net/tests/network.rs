//! The node over real loopback sockets: authenticated requests and responses,
//! identity-checked dials, hostile frames answered instead of dropped, and DHT
//! discovery through bootstrap peers.

use std::future::Future;
use std::io;
use std::marker::PhantomData;
use std::time::Duration;

use futures::{AsyncRead, AsyncWrite, AsyncWriteExt, StreamExt};
use libp2p::request_response::{self, OutboundFailure, ProtocolSupport};
use libp2p::swarm::SwarmEvent;
use libp2p::{noise, tcp, yamux, StreamProtocol, Swarm};
use prost::Message;
use sealpod_net::codec::{encode_frame, read_frame};
use sealpod_net::{InboundRequest, Keypair, Multiaddr, Node, NodeConfig, NodeError, PeerId};
use sealpod_proto::pod_control_request::Op;
use sealpod_proto::pod_control_response::Result as ControlResult;
use sealpod_proto::{
    limits, protocol, ErrorCode, PodControlRequest, PodControlResponse, PodStatus, ProvisionPodRequest,
    ProvisionPodResponse, StatusRequest,
};
use tokio::sync::mpsc;
use tokio::time::timeout;

/// Upper bound for any one test; a hang fails instead of blocking the suite.
const TEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Upper bound for a DHT lookup to succeed, retries included.
const DISCOVERY_TIMEOUT: Duration = Duration::from_secs(20);

fn loopback() -> Multiaddr {
    "/ip4/127.0.0.1/tcp/0".parse().unwrap()
}

fn server_config() -> NodeConfig {
    NodeConfig { listen: vec![loopback()], serve: true, ..NodeConfig::client(Keypair::generate_ed25519()) }
}

/// The node's first listen address with its `/p2p/<id>` suffix, as a user
/// would pass it to `dial` or `bootstrap`.
async fn dial_addr(node: &Node) -> Multiaddr {
    let addr = node.listen_addrs().await.into_iter().next().expect("a listening node has an address");
    addr.with_p2p(node.peer_id()).unwrap()
}

async fn start_server(config: NodeConfig) -> (Node, mpsc::Receiver<InboundRequest>, Multiaddr) {
    let (node, inbound) = Node::start(config).await.expect("server starts");
    let addr = dial_addr(&node).await;
    (node, inbound, addr)
}

async fn start_client() -> Node {
    let (node, _) = Node::start(NodeConfig::client(Keypair::generate_ed25519())).await.expect("client starts");
    node
}

fn status_request(pod_id: &str) -> PodControlRequest {
    PodControlRequest { op: Some(Op::Status(StatusRequest { pod_id: pod_id.into() })) }
}

fn status_of(pod_id: &str) -> PodStatus {
    PodStatus { pod_id: pod_id.into(), ..Default::default() }
}

/// A provider that answers every control request with the status of the pod
/// asked about, and every provisioning request with a pod named as requested.
fn serve_echo(mut inbound: mpsc::Receiver<InboundRequest>) {
    tokio::spawn(async move {
        while let Some(request) = inbound.recv().await {
            match request {
                InboundRequest::Control { request, responder, .. } => {
                    let pod_id = match request.op {
                        Some(Op::Status(s)) => s.pod_id,
                        _ => String::new(),
                    };
                    responder.respond(PodControlResponse { result: Some(ControlResult::Status(status_of(&pod_id))) });
                }
                InboundRequest::Provision { request, responder, .. } => responder.respond(ProvisionPodResponse {
                    error: None,
                    status: Some(PodStatus { name: request.name, ..Default::default() }),
                }),
                // Not exercised here; dropping answers with an internal error.
                InboundRequest::Attest { .. } | InboundRequest::Capacity { .. } | InboundRequest::Log { .. } => {}
            }
        }
    });
}

async fn bounded<F: Future>(f: F) -> F::Output {
    timeout(TEST_TIMEOUT, f).await.expect("test timed out")
}

#[tokio::test]
async fn server_sees_clients_authenticated_peer_id_and_client_gets_response() {
    bounded(async {
        let (_server, mut inbound, addr) = start_server(server_config()).await;
        let client = start_client().await;
        let client_id = client.peer_id();

        let server_side = tokio::spawn(async move {
            let Some(InboundRequest::Control { peer, request, responder }) = inbound.recv().await else {
                panic!("expected a control request");
            };
            responder.respond(PodControlResponse { result: Some(ControlResult::Status(status_of("pod-1"))) });
            (peer, request)
        });

        let server_id = client.dial(&addr).await.expect("dial succeeds");
        let response = client.control(server_id, status_request("pod-1")).await.expect("request succeeds");

        let (peer, request) = server_side.await.unwrap();
        assert_eq!(peer, client_id, "server must see the client's peer id");
        assert_eq!(request, status_request("pod-1"));
        assert_eq!(response.result, Some(ControlResult::Status(status_of("pod-1"))));
    })
    .await;
}

#[tokio::test]
async fn dial_refuses_server_that_is_not_the_expected_peer() {
    bounded(async {
        let (server, _inbound, addr) = start_server(server_config()).await;
        let someone_else = Keypair::generate_ed25519().public().to_peer_id();
        let (bare, _) = sealpod_net::split_peer_id(&addr);
        let wrong = bare.clone().with_p2p(someone_else).unwrap();

        let client = start_client().await;
        match client.dial(&wrong).await {
            Err(NodeError::Dial { addr, reason }) => {
                assert!(addr.contains(&bare.to_string()), "{addr}");
                // libp2p names the identity it actually found there.
                assert!(
                    reason.to_lowercase().contains("peer id") && reason.contains(&server.peer_id().to_string()),
                    "reason should name the identity mismatch: {reason}"
                );
            }
            other => panic!("expected a dial error, got {other:?}"),
        }
    })
    .await;
}

#[tokio::test]
async fn dropped_responder_yields_internal_error_response() {
    bounded(async {
        let (_server, mut inbound, addr) = start_server(server_config()).await;
        tokio::spawn(async move {
            while let Some(request) = inbound.recv().await {
                drop(request);
            }
        });
        let client = start_client().await;
        let server_id = client.dial(&addr).await.unwrap();

        let response =
            client.control(server_id, status_request("pod-1")).await.expect("an error response, not a failed request");
        let Some(ControlResult::Error(error)) = response.result else {
            panic!("expected an error response, got {response:?}");
        };
        assert_eq!(error.code(), ErrorCode::Internal);
    })
    .await;
}

#[tokio::test]
async fn request_held_by_server_times_out_instead_of_hanging() {
    bounded(async {
        let (_server, mut inbound, addr) = start_server(server_config()).await;
        // Keeps every responder alive without answering.
        let (held_tx, mut held_rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(request) = inbound.recv().await {
                let _ = held_tx.send(request);
            }
        });
        let (client, _) = Node::start(NodeConfig {
            request_timeout: Duration::from_secs(1),
            // Pod control (an update fetches images) waits as long as provisioning.
            provision_timeout: Duration::from_secs(1),
            ..NodeConfig::client(Keypair::generate_ed25519())
        })
        .await
        .unwrap();
        let server_id = client.dial(&addr).await.unwrap();

        let result = client.control(server_id, status_request("pod-1")).await;
        assert!(matches!(result, Err(NodeError::Request { peer, .. }) if peer == server_id), "{result:?}");
        assert!(held_rx.try_recv().is_ok(), "the server did get the request");
    })
    .await;
}

/// A request-response codec for a test client that writes whatever bytes it is
/// given, so it can send frames the real codec would never produce.
struct RawFrames<Resp> {
    response_limit: usize,
    _response: PhantomData<fn() -> Resp>,
}

impl<Resp> Clone for RawFrames<Resp> {
    fn clone(&self) -> Self {
        RawFrames { response_limit: self.response_limit, _response: PhantomData }
    }
}

impl<Resp> request_response::Codec for RawFrames<Resp>
where
    Resp: Message + Default + Send + 'static,
{
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Resp;

    async fn read_request<T>(&mut self, _: &StreamProtocol, _: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        Err(io::Error::other("the raw client serves nothing"))
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Resp>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_frame(io, self.response_limit).await
    }

    async fn write_request<T>(&mut self, _: &StreamProtocol, io: &mut T, bytes: Vec<u8>) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        io.write_all(&bytes).await?;
        io.flush().await
    }

    async fn write_response<T>(&mut self, _: &StreamProtocol, _: &mut T, _: Resp) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        Err(io::Error::other("the raw client serves nothing"))
    }
}

/// A libp2p peer, connected to one server, that sends raw bytes on one protocol.
struct RawClient<Resp: Message + Default + Send + 'static> {
    swarm: Swarm<request_response::Behaviour<RawFrames<Resp>>>,
    server: PeerId,
}

impl<Resp: Message + Default + Send + 'static> RawClient<Resp> {
    async fn connect(addr: &Multiaddr, protocol: &'static str, response_limit: usize) -> Self {
        let codec = RawFrames { response_limit, _response: PhantomData };
        let mut swarm = libp2p::SwarmBuilder::with_new_identity()
            .with_tokio()
            .with_tcp(tcp::Config::default().nodelay(true), noise::Config::new, yamux::Config::default)
            .unwrap()
            .with_behaviour(|_| {
                request_response::Behaviour::with_codec(
                    codec,
                    [(StreamProtocol::new(protocol), ProtocolSupport::Outbound)],
                    request_response::Config::default().with_request_timeout(Duration::from_secs(10)),
                )
            })
            .unwrap()
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
            .build();
        let (_, server) = sealpod_net::split_peer_id(addr);
        let server = server.expect("address with /p2p/");
        swarm.dial(addr.clone()).unwrap();
        loop {
            match swarm.select_next_some().await {
                SwarmEvent::ConnectionEstablished { peer_id, .. } if peer_id == server => break,
                SwarmEvent::OutgoingConnectionError { error, .. } => {
                    panic!("raw client could not connect: {error}")
                }
                _ => {}
            }
        }
        RawClient { swarm, server }
    }

    /// Sends `bytes` as the whole request stream and waits for the outcome.
    async fn send(&mut self, bytes: Vec<u8>) -> Result<Resp, OutboundFailure> {
        let id = self.swarm.behaviour_mut().send_request(&self.server, bytes);
        loop {
            if let SwarmEvent::Behaviour(event) = self.swarm.select_next_some().await {
                match event {
                    request_response::Event::Message {
                        message: request_response::Message::Response { request_id, response },
                        ..
                    } if request_id == id => return Ok(response),
                    request_response::Event::OutboundFailure { request_id, error, .. } if request_id == id => {
                        return Err(error)
                    }
                    _ => {}
                }
            }
        }
    }
}

fn varint(n: u64) -> Vec<u8> {
    let mut buf = Vec::new();
    prost::encoding::encode_varint(n, &mut buf);
    buf
}

/// A field-1 tag with wire type 7, which does not exist: no message decodes it.
const GARBAGE_BODY: [u8; 4] = [0x0f, 0xff, 0xff, 0xff];

fn provision_request(name: &str) -> ProvisionPodRequest {
    ProvisionPodRequest { name: name.into(), ..Default::default() }
}

async fn provision_client(addr: &Multiaddr) -> RawClient<ProvisionPodResponse> {
    RawClient::connect(addr, protocol::PROVISION_POD, limits::PROVISION_RESPONSE).await
}

async fn control_client(addr: &Multiaddr) -> RawClient<PodControlResponse> {
    RawClient::connect(addr, protocol::POD_CONTROL, limits::CONTROL_RESPONSE).await
}

/// The provisioning error a refused frame must be answered with.
fn expect_provision_refusal(response: ProvisionPodResponse, mentions: &str) {
    let error = response.error.expect("an error response");
    assert_eq!(error.code(), ErrorCode::InvalidRequest, "{error}");
    assert!(error.message.contains(mentions), "{error}");
    assert!(response.status.is_none());
}

fn expect_control_refusal(response: PodControlResponse, mentions: &str) {
    let Some(ControlResult::Error(error)) = response.result else {
        panic!("expected an error response, got {response:?}");
    };
    assert_eq!(error.code(), ErrorCode::InvalidRequest, "{error}");
    assert!(error.message.contains(mentions), "{error}");
}

async fn provision_still_served(client: &mut RawClient<ProvisionPodResponse>, name: &str) {
    let response = client.send(encode_frame(&provision_request(name))).await.expect("a valid request is answered");
    assert_eq!(response.error, None);
    assert_eq!(response.status.map(|s| s.name).as_deref(), Some(name));
}

async fn control_still_served(client: &mut RawClient<PodControlResponse>, pod_id: &str) {
    let response = client.send(encode_frame(&status_request(pod_id))).await.expect("a valid request is answered");
    assert_eq!(response.result, Some(ControlResult::Status(status_of(pod_id))));
}

#[tokio::test]
async fn oversized_provision_frame_gets_error_response_and_server_keeps_serving() {
    bounded(async {
        let (_server, inbound, addr) = start_server(server_config()).await;
        serve_echo(inbound);
        let mut client = provision_client(&addr).await;

        // Announces 100 MiB, sends a few bytes of it: refused from the prefix.
        let mut frame = varint(100 << 20);
        frame.extend_from_slice(&[0u8; 64]);
        let response = client.send(frame).await.expect("an error response");
        expect_provision_refusal(response, "exceeds the limit");

        // Just over the limit is refused too.
        let frame = varint(limits::PROVISION_REQUEST as u64 + 1);
        let response = client.send(frame).await.expect("an error response");
        expect_provision_refusal(response, "exceeds the limit");

        provision_still_served(&mut client, "after-oversized").await;
    })
    .await;
}

#[tokio::test]
async fn oversized_control_frame_gets_error_response_and_server_keeps_serving() {
    bounded(async {
        let (_server, inbound, addr) = start_server(server_config()).await;
        serve_echo(inbound);
        let mut client = control_client(&addr).await;

        let frame = varint(limits::CONTROL_REQUEST as u64 + 1);
        let response = client.send(frame).await.expect("an error response");
        expect_control_refusal(response, "exceeds the limit");

        control_still_served(&mut client, "pod-after-oversized").await;
    })
    .await;
}

#[tokio::test]
async fn garbage_protobuf_body_gets_error_response_and_server_keeps_serving() {
    bounded(async {
        let (_server, inbound, addr) = start_server(server_config()).await;
        serve_echo(inbound);

        let mut frame = varint(GARBAGE_BODY.len() as u64);
        frame.extend_from_slice(&GARBAGE_BODY);

        let mut provision = provision_client(&addr).await;
        let response = provision.send(frame.clone()).await.expect("a response");
        expect_provision_refusal(response, "malformed");
        provision_still_served(&mut provision, "after-garbage").await;

        let mut control = control_client(&addr).await;
        let response = control.send(frame).await.expect("a response");
        expect_control_refusal(response, "malformed");
        control_still_served(&mut control, "pod-after-garbage").await;
    })
    .await;
}

#[tokio::test]
async fn malformed_length_prefix_gets_error_response_and_server_keeps_serving() {
    bounded(async {
        let (_server, inbound, addr) = start_server(server_config()).await;
        serve_echo(inbound);
        let mut client = provision_client(&addr).await;

        // Eleven continuation bytes: no varint is that long.
        let response = client.send(vec![0xff; 11]).await.expect("a response");
        expect_provision_refusal(response, "malformed length prefix");

        provision_still_served(&mut client, "after-bad-prefix").await;
    })
    .await;
}

#[tokio::test]
async fn truncated_frame_is_refused_and_server_keeps_serving() {
    bounded(async {
        let (_server, inbound, addr) = start_server(server_config()).await;
        serve_echo(inbound);
        let mut client = provision_client(&addr).await;

        // The stream ends 10 bytes into a 100-byte frame: there is nothing
        // complete to answer, so the request fails on the client's side.
        let mut frame = varint(100);
        frame.extend_from_slice(&[0u8; 10]);
        assert!(client.send(frame).await.is_err());

        // An empty stream ends before the prefix.
        assert!(client.send(Vec::new()).await.is_err());

        provision_still_served(&mut client, "after-truncated").await;
        // And a fresh connection is served as well.
        let mut fresh = provision_client(&addr).await;
        provision_still_served(&mut fresh, "fresh-after-truncated").await;
    })
    .await;
}

/// Asks `node` for providers until `provider` is among them.
async fn find_provider(node: &Node, provider: PeerId) {
    let search = async {
        loop {
            match node.find_providers().await {
                Ok(found) if found.contains(&provider) => return,
                Ok(_) | Err(NodeError::Discovery(_)) => {}
                Err(e) => panic!("lookup failed: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    };
    timeout(DISCOVERY_TIMEOUT, search).await.unwrap_or_else(|_| panic!("{provider} was not found on the DHT"));
}

#[tokio::test]
async fn client_finds_provider_it_bootstraps_from() {
    bounded(async {
        let (provider, _inbound, provider_addr) = start_server(NodeConfig { advertise: true, ..server_config() }).await;
        let (client, _) = Node::start(NodeConfig {
            bootstrap: vec![provider_addr],
            ..NodeConfig::client(Keypair::generate_ed25519())
        })
        .await
        .unwrap();

        find_provider(&client, provider.peer_id()).await;
    })
    .await;
}

#[tokio::test]
async fn client_finds_provider_through_shared_bootstrap_node() {
    bounded(async {
        let (bootstrap, _, bootstrap_addr) = start_server(NodeConfig { serve: false, ..server_config() }).await;
        let (provider, inbound, _) =
            start_server(NodeConfig { advertise: true, bootstrap: vec![bootstrap_addr.clone()], ..server_config() })
                .await;
        serve_echo(inbound);
        let (client, _) = Node::start(NodeConfig {
            bootstrap: vec![bootstrap_addr],
            ..NodeConfig::client(Keypair::generate_ed25519())
        })
        .await
        .unwrap();

        find_provider(&client, provider.peer_id()).await;
        assert_ne!(provider.peer_id(), bootstrap.peer_id());

        // Found by peer id alone, the provider must be reachable: that is how
        // a publisher goes on to ask it for capacity.
        let response = client
            .control(provider.peer_id(), status_request("pod-found"))
            .await
            .expect("the provider found on the DHT answers");
        assert_eq!(response.result, Some(ControlResult::Status(status_of("pod-found"))));
    })
    .await;
}
