//! The publisher's side: deploying pods to providers and controlling them.
//!
//! A [`Publisher`] is a libp2p client with a persistent identity (the pods it
//! deploys belong to that identity) and a local record of which provider runs
//! which of its pods, so that `status`, `logs` and `delete` need only a pod id.
//!
//! Before anything secret leaves this machine, the provider is attested on
//! the same libp2p connection the secret then travels on: a fresh nonce, the
//! provider's evidence bound to its peer key and that nonce, verified against
//! the publisher's policy ([`AttestOptions`]). A pod that carries a secret
//! volume is never sent to a provider whose evidence failed.
//!
//! It leaves parsing manifests to `sealpod-manifest` (it takes the wire
//! [`Pod`]), transport to `sealpod-net`, verification to `sealpod-attest`,
//! and presentation to the CLI.

// A provider's error travels whole to the CLI once per command; boxing it
// would buy nothing.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sealpod_net::{Multiaddr, Node, NodeConfig, NodeError, PeerId};
use sealpod_proto::{
    pod_control_request::Op, pod_control_response::Result as ControlResult, CapacityRequest, DeleteRequest, ExecOutput,
    ExecOutputRequest, ExecRequest, LogChunk, LogsRequest, Pod, PodControlRequest, PodStatus, ProvisionPodRequest,
    StatusRequest, UpdateRequest,
};
use serde::{Deserialize, Serialize};

pub mod payment;
pub use payment::{PaymentPlan, PodPayment, Quote};

/// What can go wrong for a publisher.
#[derive(Debug, thiserror::Error)]
pub enum PublisherError {
    /// The network failed.
    #[error(transparent)]
    Net(#[from] NodeError),
    /// The provider answered with an error.
    #[error("provider {peer} refused: {error}")]
    Remote {
        /// The provider.
        peer: PeerId,
        /// Its error.
        error: sealpod_proto::Error,
    },
    /// The provider's answer lacked what it should hold.
    #[error("provider {0} sent an incomplete answer")]
    Incomplete(PeerId),
    /// No record of the pod here.
    #[error("no pod {0} in this publisher's records; `sealpod pods` lists them")]
    UnknownPod(String),
    /// Discovery found nobody suitable.
    #[error("no provider found{0}; pass --provider MULTIADDR, --bootstrap, or run on a LAN with one")]
    NoProvider(String),
    /// Local state could not be read or written.
    #[error("publisher state {path}: {reason}")]
    State {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A provider address without its peer id.
    #[error("provider address {0} must end in /p2p/<peer id>")]
    AddressWithoutPeer(Multiaddr),
    /// An offer, a channel or a voucher could not be made or used.
    #[error("payment: {0}")]
    Market(String),
    /// The provider's attestation failed: nothing secret was sent.
    #[error("attestation of provider {peer} failed, nothing secret was sent: {error}")]
    Attestation {
        /// The provider.
        peer: PeerId,
        /// The failed check.
        error: sealpod_attest::AttestError,
    },
    /// A GPU of the provider failed attestation, or none was attested when
    /// the policy requires it.
    #[error("GPU attestation of provider {peer} failed ({device}), nothing secret was sent: {message}")]
    GpuAttestation {
        /// The provider.
        peer: PeerId,
        /// The device, as the provider named it.
        device: String,
        /// The failed check.
        message: String,
    },
    /// The provider could not attest at all.
    #[error("provider {peer} cannot attest, nothing secret was sent: {message}")]
    NoAttestation {
        /// The provider.
        peer: PeerId,
        /// What it said.
        message: String,
    },
}

/// When and how to attest a provider.
#[derive(Debug, Clone, Default)]
pub struct AttestOptions {
    /// The publisher's policy.
    pub policy: sealpod_attest::Policy,
    /// Accept the insecure dev kind (a node-key signature, no TEE).
    pub allow_insecure_dev: bool,
    /// Attest even when the pod carries no secret.
    pub require: bool,
}

/// A verified attestation and what it was bound to.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Attested {
    /// The provider.
    pub provider: String,
    /// The nonce this publisher sent, hex.
    pub nonce: String,
    /// What the evidence says.
    pub claims: sealpod_attest::Claims,
    /// Each GPU's verified claims (NVIDIA confidential computing), if any.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub gpus: Vec<AttestedGpu>,
}

/// A GPU whose SPDM report verified, bound to the same nonce and key.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AttestedGpu {
    /// The device, as the provider named it.
    pub device: String,
    /// What its report says.
    pub claims: sealpod_attest::nvidia::GpuClaims,
}

/// Whether a wire pod carries anything secret: a secret volume, or an
/// image decryption key.
pub fn carries_secrets(pod: &Pod) -> bool {
    let image_key = pod.containers.iter().any(|c| {
        matches!(
            c.image.as_ref().and_then(|i| i.source.as_ref()),
            Some(sealpod_proto::image::Source::Content(sealpod_proto::ContentAddress { key: Some(_), .. }))
        )
    });
    image_key || pod.volumes.iter().any(|v| matches!(v.kind, Some(sealpod_proto::volume::Kind::Secret(_))))
}

/// Where a deployed pod runs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PodRef {
    /// The provider's id for the pod.
    pub pod_id: String,
    /// The label given at deployment.
    pub name: String,
    /// The provider's peer id.
    pub provider: String,
    /// Addresses the provider was reached at.
    pub provider_addrs: Vec<String>,
    /// The channel the pod is paid through, when the provider charges.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment: Option<PodPayment>,
}

/// Which provider to deploy to.
#[derive(Debug, Clone)]
pub enum Target {
    /// A known address ending in `/p2p/<peer id>`.
    Address(Multiaddr),
    /// The first provider found on the DHT or by mDNS with room for the pod.
    Discover,
}

/// The environment variable naming where a publisher listens (comma-separated
/// multiaddrs, or `none`): a provider behind NAT that the publisher reached
/// through a relay dials these to upgrade to a direct connection (DCUtR).
/// `none` turns hole punching off: relayed connections stay relayed.
pub const HOLE_PUNCH_LISTEN_ENV: &str = "SEALPOD_HOLE_PUNCH_LISTEN";

/// Where a publisher listens unless told otherwise: any free port, TCP and
/// QUIC. Its dials then leave from these ports, so the addresses peers
/// observe are ones a hole punch can meet.
pub const DEFAULT_HOLE_PUNCH_LISTEN: &str = "/ip4/0.0.0.0/tcp/0,/ip4/0.0.0.0/udp/0/quic-v1";

fn hole_punch_listen() -> Result<Vec<Multiaddr>, PublisherError> {
    let value = std::env::var(HOLE_PUNCH_LISTEN_ENV).unwrap_or_else(|_| DEFAULT_HOLE_PUNCH_LISTEN.to_owned());
    if value.trim() == "none" || value.trim().is_empty() {
        return Ok(Vec::new());
    }
    value
        .split(',')
        .map(|a| {
            a.trim()
                .parse()
                .map_err(|e| PublisherError::Net(NodeError::Setup(format!("{HOLE_PUNCH_LISTEN_ENV}: {a:?}: {e}"))))
        })
        .collect()
}

/// How long a publisher that reached a provider through a relay waits for
/// hole punching before sending on the relayed connection.
/// (A punch takes two round trips and a dial; a publisher learns of no
/// failure, so this bounds what a symmetric NAT costs each command.)
const HOLE_PUNCH_WAIT: Duration = Duration::from_secs(2);

/// A publisher identity with its local records.
pub struct Publisher {
    home: PathBuf,
    node: Node,
}

impl Publisher {
    /// Starts a client node with the identity kept in `home`.
    pub async fn open(home: &Path, bootstrap: Vec<Multiaddr>, mdns: bool) -> Result<Publisher, PublisherError> {
        let key = sealpod_net::load_or_create_keypair(&home.join("publisher.key"))
            .map_err(|e| PublisherError::State { path: home.join("publisher.key"), reason: e.to_string() })?;
        let mut config = NodeConfig::client(key);
        config.bootstrap = bootstrap;
        config.mdns = mdns;
        config.listen = hole_punch_listen()?;
        // Not listening, it could only punch towards peers that are
        // reachable anyway; `none` means: stay on the relay.
        config.nat.no_hole_punching = config.listen.is_empty();
        // It listens for hole punching only: it serves nothing, DHT included.
        config.dht_client = true;
        config.nat.relay_service = None;
        let (node, _) = Node::start(config).await?;
        Ok(Publisher { home: home.to_owned(), node })
    }

    /// The path the last answer from `peer` came on: direct, or through a
    /// relay (a provider behind NAT that hole punching could not reach).
    pub async fn path_to(&self, peer: PeerId) -> Option<sealpod_net::Path> {
        self.node.response_path(peer).await
    }

    /// The path the last answer about `pod_id` came on.
    pub async fn path_to_pod(&self, pod_id: &str) -> Option<sealpod_net::Path> {
        let provider = self.records().ok()?.get(pod_id)?.provider.parse().ok()?;
        self.path_to(provider).await
    }

    /// This publisher's peer id: the owner of the pods it deploys.
    pub fn peer_id(&self) -> PeerId {
        self.node.peer_id()
    }

    /// Asks a connected provider what it has free for `request`.
    pub async fn capacity(
        &self,
        peer: PeerId,
        request: CapacityRequest,
    ) -> Result<sealpod_proto::CapacityResponse, PublisherError> {
        Ok(self.node.capacity(peer, request).await?)
    }

    /// Asks `peer` for evidence bound to `nonce`, unverified.
    pub async fn evidence(&self, peer: PeerId, nonce: &[u8]) -> Result<sealpod_attest::Evidence, PublisherError> {
        Ok(self.all_evidence(peer, nonce).await?.0)
    }

    /// The CPU's evidence and each GPU's, unverified.
    pub async fn all_evidence(
        &self,
        peer: PeerId,
        nonce: &[u8],
    ) -> Result<(sealpod_attest::Evidence, Vec<sealpod_proto::GpuEvidence>), PublisherError> {
        let response = self.node.attest(peer, sealpod_proto::AttestRequest { nonce: nonce.to_vec() }).await?;
        if let Some(error) = response.error {
            return Err(PublisherError::NoAttestation { peer, message: error.message });
        }
        let evidence = response.evidence.ok_or(PublisherError::Incomplete(peer))?;
        let evidence = sealpod_attest::Evidence::from_proto(&evidence)
            .map_err(|error| PublisherError::Attestation { peer, error })?;
        Ok((evidence, response.gpus))
    }

    /// Attests a connected provider with a fresh nonce and verifies its
    /// evidence against `options`.
    pub async fn attest_peer(&self, peer: PeerId, options: &AttestOptions) -> Result<Attested, PublisherError> {
        let nonce: [u8; sealpod_attest::NONCE_LEN] = rand::random();
        let (evidence, gpus) = self.all_evidence(peer, &nonce).await?;
        let now = std::time::SystemTime::now();
        let claims = verify_for(peer, &nonce, &evidence, options, now)
            .map_err(|error| PublisherError::Attestation { peer, error })?;
        let gpus = verify_gpus(peer, &nonce, &gpus, &options.policy.gpu, now)?;
        Ok(Attested { provider: peer.to_string(), nonce: hex::encode(nonce), claims, gpus })
    }

    /// Dials a provider and attests it.
    pub async fn attest(&self, addr: &Multiaddr, options: &AttestOptions) -> Result<Attested, PublisherError> {
        let (_, Some(_)) = sealpod_net::split_peer_id(addr) else {
            return Err(PublisherError::AddressWithoutPeer(addr.clone()));
        };
        let peer = self.node.dial(addr).await?;
        self.attest_peer(peer, options).await
    }

    /// Deploys `pod` and records where it runs.
    /// With a signed payload manifest, the provider holds the pod to it.
    /// A pod with a secret volume (or `attest.require`) goes only to a
    /// provider that passed attestation on this connection just before.
    pub async fn deploy(
        &self,
        pod: Pod,
        name: &str,
        target: Target,
        payload_manifest: Option<sealpod_proto::PayloadManifest>,
        attest: &AttestOptions,
    ) -> Result<(PodRef, PodStatus, Option<Attested>), PublisherError> {
        self.deploy_paid(pod, name, target, payload_manifest, attest, None).await
    }

    /// [`Publisher::deploy`], paying through a new channel when `payment` is
    /// given: the provider's offer is fetched and verified, the pod goes only
    /// under it, and the channel is opened after attestation, just before
    /// the pod is handed over.
    pub async fn deploy_paid(
        &self,
        pod: Pod,
        name: &str,
        target: Target,
        payload_manifest: Option<sealpod_proto::PayloadManifest>,
        attest: &AttestOptions,
        payment: Option<&PaymentPlan>,
    ) -> Result<(PodRef, PodStatus, Option<Attested>), PublisherError> {
        let (peer, addrs) = match target {
            Target::Address(addr) => {
                let (_, Some(_)) = sealpod_net::split_peer_id(&addr) else {
                    return Err(PublisherError::AddressWithoutPeer(addr));
                };
                (self.node.dial(&addr).await?, vec![addr.to_string()])
            }
            Target::Discover => {
                let peer = self.discover(&pod).await?;
                // Remember how it was reached, so later commands need no discovery.
                let addrs = self
                    .node
                    .peer_addr(peer)
                    .await
                    .map(|a| format!("{}/p2p/{peer}", sealpod_net::split_peer_id(&a).0))
                    .into_iter()
                    .collect();
                (peer, addrs)
            }
        };
        // A provider behind NAT answers through a relay first; hole punching
        // may give a direct path within a round trip or two, and the pod (and
        // all that follows) is better sent on it.
        self.node.prefer_direct(peer, HOLE_PUNCH_WAIT).await;
        let attested = if must_attest(&pod, attest) { Some(self.attest_peer(peer, attest).await?) } else { None };
        let mut request = ProvisionPodRequest { payload_manifest, name: name.to_owned(), ..Default::default() };
        let mut pod_payment = None;
        if let Some(plan) = payment {
            let reservation = sealpod_market::Reservation::of_pod(&pod);
            let ask = CapacityRequest { resources: Some(sealpod_proto::total_resources(&pod)), ..Default::default() };
            let quote = self.quote(peer, ask, &reservation).await?.ok_or_else(|| {
                PublisherError::Market(format!("provider {peer} makes no offer: it does not sell (drop --deposit)"))
            })?;
            let (channel, voucher, record) = self.open_for(&quote, plan).await?;
            tracing::info!(channel = %record.channel_id, "payment channel opened");
            request.offer = Some(quote.offer);
            request.payment = Some(channel);
            request.voucher = Some(voucher.to_proto());
            pod_payment = Some(record);
        }
        request.pod = Some(pod);
        let response = self.node.provision(peer, request).await?;
        if let Some(error) = response.error {
            if let Some(p) = &pod_payment {
                tracing::warn!(channel = %p.channel_id, "the provider refused the pod; the channel stays open: `sealpod channel unlock` then `withdraw` returns the deposit");
                return Err(PublisherError::Market(format!(
                    "provider {peer} refused: {error}; channel {} was opened: `sealpod channel unlock {}` and, after its delay, `sealpod channel withdraw {}` return the deposit",
                    p.channel_id, p.channel_id, p.channel_id
                )));
            }
            return Err(PublisherError::Remote { peer, error });
        }
        let status = response.status.ok_or(PublisherError::Incomplete(peer))?;
        let pod_ref = PodRef {
            pod_id: status.pod_id.clone(),
            name: name.to_owned(),
            provider: peer.to_string(),
            provider_addrs: addrs,
            payment: pod_payment,
        };
        let mut records = self.records()?;
        records.insert(pod_ref.pod_id.clone(), pod_ref.clone());
        self.save_records(&records)?;
        Ok((pod_ref, status, attested))
    }

    /// Finds a provider with room for `pod`.
    async fn discover(&self, pod: &Pod) -> Result<PeerId, PublisherError> {
        let want = sealpod_proto::total_resources(pod);
        let mut candidates = Vec::new();
        for _ in 0..10 {
            candidates = self.node.find_providers().await.unwrap_or_default();
            if !candidates.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        for peer in candidates {
            let request = CapacityRequest { resources: Some(want), ..Default::default() };
            match self.node.capacity(peer, request).await {
                Ok(r) if r.available => return Ok(peer),
                Ok(_) => tracing::info!(%peer, "provider lacks capacity"),
                Err(e) => tracing::info!(%peer, error = %e, "provider did not answer"),
            }
        }
        Err(PublisherError::NoProvider(String::new()))
    }

    /// Where `pod_id` runs, dialing its provider.
    async fn reach(&self, pod_id: &str) -> Result<PeerId, PublisherError> {
        let records = self.records()?;
        let r = records.get(pod_id).ok_or_else(|| PublisherError::UnknownPod(pod_id.to_owned()))?;
        let peer: PeerId = r.provider.parse().map_err(|_| PublisherError::State {
            path: self.home.join("pods.json"),
            reason: format!("bad provider id for {pod_id}"),
        })?;
        let mut last = None;
        for addr in &r.provider_addrs {
            if let Ok(addr) = addr.parse::<Multiaddr>() {
                match self.node.dial(&addr).await {
                    Ok(_) => {
                        self.node.prefer_direct(peer, HOLE_PUNCH_WAIT).await;
                        return Ok(peer);
                    }
                    Err(e) => last = Some(e),
                }
            }
        }
        match last {
            Some(e) => Err(e.into()),
            // Found through the DHT: let the node find its addresses again.
            None => Ok(peer),
        }
    }

    pub(crate) async fn control(&self, pod_id: &str, op: Op) -> Result<ControlResult, PublisherError> {
        let peer = self.reach(pod_id).await?;
        let response = self.node.control(peer, PodControlRequest { op: Some(op) }).await?;
        match response.result {
            Some(ControlResult::Error(error)) => Err(PublisherError::Remote { peer, error }),
            Some(result) => Ok(result),
            None => Err(PublisherError::Incomplete(peer)),
        }
    }

    /// The pod's status.
    pub async fn status(&self, pod_id: &str) -> Result<PodStatus, PublisherError> {
        match self.control(pod_id, Op::Status(StatusRequest { pod_id: pod_id.to_owned() })).await? {
            ControlResult::Status(s) => Ok(s),
            _ => Err(PublisherError::Incomplete(self.reach(pod_id).await?)),
        }
    }

    /// A chunk of a container's log from `offset`.
    pub async fn logs(&self, pod_id: &str, container: &str, offset: u64) -> Result<LogChunk, PublisherError> {
        let request = LogsRequest {
            pod_id: pod_id.to_owned(),
            container: container.to_owned(),
            offset,
            max_bytes: sealpod_proto::limits::LOG_CHUNK,
        };
        match self.control(pod_id, Op::Logs(request)).await? {
            ControlResult::Logs(chunk) => Ok(chunk),
            _ => Err(PublisherError::Incomplete(self.reach(pod_id).await?)),
        }
    }

    /// Starts a command in a container of the pod; returns the exec id whose
    /// output [`Publisher::exec_output`] reads.
    pub async fn exec(&self, pod_id: &str, container: &str, argv: Vec<String>) -> Result<String, PublisherError> {
        let request = ExecRequest { pod_id: pod_id.to_owned(), container: container.to_owned(), argv };
        match self.control(pod_id, Op::Exec(request)).await? {
            ControlResult::ExecStarted(s) => Ok(s.exec_id),
            _ => Err(PublisherError::Incomplete(self.reach(pod_id).await?)),
        }
    }

    /// A chunk of an exec's output from `offset`.
    pub async fn exec_output(&self, pod_id: &str, exec_id: &str, offset: u64) -> Result<ExecOutput, PublisherError> {
        let request = ExecOutputRequest {
            pod_id: pod_id.to_owned(),
            exec_id: exec_id.to_owned(),
            offset,
            max_bytes: sealpod_proto::limits::LOG_CHUNK,
        };
        match self.control(pod_id, Op::ExecOutput(request)).await? {
            ControlResult::ExecOutput(o) => Ok(o),
            _ => Err(PublisherError::Incomplete(self.reach(pod_id).await?)),
        }
    }

    /// Replaces the containers of a deployed pod with those of `pod`,
    /// keeping its id, hostname, ports and persistent volumes. A pod
    /// carrying secrets (or `attest.require`) goes only to a provider that
    /// passed attestation on this connection just before, as on deploy.
    pub async fn update(
        &self,
        pod_id: &str,
        pod: Pod,
        payload_manifest: Option<sealpod_proto::PayloadManifest>,
        attest: &AttestOptions,
    ) -> Result<(PodStatus, Option<Attested>), PublisherError> {
        let peer = self.reach(pod_id).await?;
        let attested = if must_attest(&pod, attest) { Some(self.attest_peer(peer, attest).await?) } else { None };
        let request = UpdateRequest { pod_id: pod_id.to_owned(), pod: Some(pod), payload_manifest };
        match self.control(pod_id, Op::Update(request)).await? {
            ControlResult::Updated(s) => Ok((s, attested)),
            _ => Err(PublisherError::Incomplete(peer)),
        }
    }

    /// Deletes the pod and forgets it.
    pub async fn delete(&self, pod_id: &str) -> Result<PodStatus, PublisherError> {
        let result = self.control(pod_id, Op::Delete(DeleteRequest { pod_id: pod_id.to_owned() })).await;
        let forget = match &result {
            Ok(_) => true,
            // The provider no longer knows it: nothing left to delete.
            Err(PublisherError::Remote { error, .. }) => error.code == sealpod_proto::ErrorCode::NotFound as i32,
            Err(_) => false,
        };
        if forget {
            let mut records = self.records()?;
            records.remove(pod_id);
            self.save_records(&records)?;
        }
        match result? {
            ControlResult::Deleted(s) => Ok(s),
            _ => Err(PublisherError::Incomplete(self.reach(pod_id).await?)),
        }
    }

    /// The pods this publisher has deployed, as recorded locally.
    pub fn pods(&self) -> Result<Vec<PodRef>, PublisherError> {
        Ok(self.records()?.into_values().collect())
    }

    /// Asks the provider of a recorded pod for it, as another identity would:
    /// sends a control request for `pod_id` to the provider at `addr`.
    pub async fn control_at(&self, addr: &Multiaddr, op: Op) -> Result<ControlResult, PublisherError> {
        let peer = self.node.dial(addr).await?;
        let response = self.node.control(peer, PodControlRequest { op: Some(op) }).await?;
        match response.result {
            Some(ControlResult::Error(error)) => Err(PublisherError::Remote { peer, error }),
            Some(result) => Ok(result),
            None => Err(PublisherError::Incomplete(peer)),
        }
    }

    pub(crate) fn records(&self) -> Result<BTreeMap<String, PodRef>, PublisherError> {
        let path = self.home.join("pods.json");
        match std::fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes).map_err(|e| PublisherError::State { path, reason: e.to_string() })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
            Err(e) => Err(PublisherError::State { path, reason: e.to_string() }),
        }
    }

    pub(crate) fn save_records(&self, records: &BTreeMap<String, PodRef>) -> Result<(), PublisherError> {
        let path = self.home.join("pods.json");
        let state = |e: std::io::Error| PublisherError::State { path: path.clone(), reason: e.to_string() };
        std::fs::create_dir_all(&self.home).map_err(state)?;
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(records).expect("records serialize")).map_err(state)?;
        std::fs::rename(&tmp, &path).map_err(state)
    }
}

/// Verifies `evidence` as the answer of `peer` to `nonce`: the binding to the
/// peer's public key (recovered from its Ed25519 peer id) and the nonce, the
/// vendor roots, and the policy.
pub fn verify_for(
    peer: PeerId,
    nonce: &[u8],
    evidence: &sealpod_attest::Evidence,
    options: &AttestOptions,
    now: std::time::SystemTime,
) -> Result<sealpod_attest::Claims, sealpod_attest::AttestError> {
    let key = provider_public_key(&peer).ok_or_else(|| sealpod_attest::AttestError::Malformed {
        what: "provider peer id",
        reason: "does not embed its public key (only Ed25519 peer ids do)".into(),
    })?;
    let report_data = sealpod_attest::report_data(&key, nonce);
    let expect = sealpod_attest::Expectation {
        report_data: Some(&report_data),
        provider_public_key: Some(&key),
        now,
        allow_insecure_dev: options.allow_insecure_dev,
    };
    sealpod_attest::verify(evidence, &expect, &options.policy, &sealpod_attest::Roots::pinned())
}

/// Whether `pod` goes only to a provider attested just before: when asked,
/// when the policy says so, when it carries a secret, or when it asks for
/// GPUs and the policy requires attested ones.
fn must_attest(pod: &Pod, attest: &AttestOptions) -> bool {
    attest.require
        || attest.policy.require_attestation
        || carries_secrets(pod)
        || (attest.policy.gpu.require && sealpod_proto::total_resources(pod).gpus > 0)
}

/// Most GPUs one answer may carry (an HGX board has eight).
const MAX_GPU_EVIDENCE: usize = 16;

/// Verifies every GPU's report against the pinned NVIDIA root, the nonce
/// bound to `peer`'s key and `nonce`, and `rules`; refuses an answer without
/// GPU evidence when `rules.require` says so.
pub fn verify_gpus(
    peer: PeerId,
    nonce: &[u8],
    gpus: &[sealpod_proto::GpuEvidence],
    rules: &sealpod_attest::policy::GpuRules,
    now: std::time::SystemTime,
) -> Result<Vec<AttestedGpu>, PublisherError> {
    let fail = |device: &str, message: String| PublisherError::GpuAttestation { peer, device: device.into(), message };
    if gpus.is_empty() {
        return if rules.require {
            Err(fail("none", "the policy requires GPU evidence and the provider sent none".into()))
        } else {
            Ok(Vec::new())
        };
    }
    if gpus.len() > MAX_GPU_EVIDENCE {
        return Err(fail("all", format!("{} GPU reports; at most {MAX_GPU_EVIDENCE}", gpus.len())));
    }
    let key = provider_public_key(&peer).ok_or_else(|| fail("all", "the peer id embeds no public key".into()))?;
    let expected = sealpod_attest::gpu_nonce(&key, nonce);
    let policy = rules.to_policy().map_err(|m| fail("all", m))?;
    gpus.iter()
        .map(|g| {
            let device: String = g.device.chars().take(128).collect();
            let claims =
                sealpod_attest::nvidia::verify_gpu_report(&g.report, &g.certificate_chain, &expected, now, &policy)
                    .map_err(|e| fail(&device, e.to_string()))?;
            Ok(AttestedGpu { device, claims })
        })
        .collect()
}

/// The protobuf public key inside an identity-hashed (Ed25519) peer id.
pub fn provider_public_key(peer: &PeerId) -> Option<Vec<u8>> {
    let mh = peer.as_ref();
    (mh.code() == 0).then(|| mh.digest().to_vec())
}
