//! The provider service: answers the Apocryph protocols, admits pods, runs them
//! through the runtime, and lets only their owners control them.
//!
//! Data flows in one direction: a request arrives from `sealpod-net` with the
//! authenticated peer id of its sender; [`admission`] checks it and prepares
//! images and ports; `sealpod-runtime` starts the pod's shim; the [`store`]
//! remembers the pod and its owner so that a restarted provider re-attaches
//! every running pod.
//!
//! Attestation (`/apocryph/attest/0.0.1`) is answered by the configured
//! [`sealpod_attest::tsm::Attestor`]: configfs-tsm evidence in a TDX or SNP
//! guest, the insecure dev statement, or "unavailable". Secret volumes'
//! bytes pass through this process only in memory, on their way to the
//! pod's shim.
//!
//! A provider with market terms (`--market FILE`, see docs/market.md) answers
//! capacity requests with an offer signed by its node key, admits only pods
//! bought under a live offer and paid through a channel it checked on chain,
//! meters them, suspends those whose vouchers lapse, and claims on chain
//! (`market`, decisions in [`billing`]).

pub mod admission;
pub mod billing;
mod cluster;
mod copies;
pub mod gateway;
pub mod gpus;
pub mod images;
mod market;
mod metrics;
pub mod store;
mod update;

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use sealpod_net::{InboundRequest, Multiaddr, Node, NodeConfig, PeerId};
use sealpod_payload::TrustSettings;
use sealpod_proto::{
    pod_control_request::Op, pod_control_response::Result as ControlResult, AttestResponse, CapacityRequest,
    CapacityResponse, ContainerStatus, Error, ErrorCode, ExposedAddress, LogChunk, PodControlRequest,
    PodControlResponse, PodList, PodPhase, PodStatus, ProvisionPodRequest, ProvisionPodResponse, Resources,
};
use sealpod_runtime::{PodState, RunState, Runtime};

pub use crate::cluster::KubeSettings;
use crate::images::ImageStore;
use crate::store::{Exposed, PodRecord, PodStore};

/// How a provider is set up.
#[derive(Debug, Clone)]
pub struct ProviderConfig {
    /// Where pods, images, the database and the node key live.
    pub state_dir: PathBuf,
    /// libp2p listen addresses.
    pub listen: Vec<Multiaddr>,
    /// DHT bootstrap peers.
    pub bootstrap: Vec<Multiaddr>,
    /// Announce and discover on the LAN with mDNS.
    pub mdns: bool,
    /// AutoNAT, relays (as a user and as a relay) and hole punching.
    pub nat: sealpod_net::NatConfig,
    /// Host address pods' ports are exposed on.
    pub expose_ip: IpAddr,
    /// Directories that local image references may point into.
    pub image_roots: Vec<PathBuf>,
    /// The local artifact node's registry address (`host:port` on
    /// loopback), for `sealpod://` and content-addressed images.
    pub artifact_node: Option<String>,
    /// The `sealpod` binary, re-executed for shims.
    pub shim_exe: PathBuf,
    /// What the provider sells.
    pub capacity: Capacity,
    /// Written (as JSON: peer id and addresses) once the node listens.
    pub ready_file: Option<PathBuf>,
    /// Keystore, whitelist and outbound rules for payload manifests.
    pub trust_dir: PathBuf,
    /// The attestor: `auto`, `tdx`, `snp`, `insecure-dev` or `none`.
    pub attestor: String,
    /// The configfs-tsm report directory.
    pub tsm_root: PathBuf,
    /// What is shipped with the evidence: DCAP collateral JSON (TDX) or the
    /// VCEK chain (SNP hosts that leave `auxblob` empty).
    pub attestor_collateral: Option<PathBuf>,
    /// Prices, chain and payout; `None` gives pods away.
    pub market: Option<sealpod_market::MarketTerms>,
    /// Where `/metrics` and `/earnings` are served (loopback); the address
    /// bound is written to `STATE_DIR/metrics.addr`. `None`: not served.
    pub metrics: Option<std::net::SocketAddr>,
    /// What peers may hold of the node (connections, streams, requests).
    pub peer_limits: sealpod_net::PeerLimits,
    /// Pods one publisher may have on this provider at once.
    pub pods_per_publisher: usize,
    /// Where the HTTP entry point listens (pods' `port` + `host`); the
    /// address bound is written to `STATE_DIR/http.addr`. `None`: not served,
    /// and pods with an HTTP port are refused.
    pub http: Option<std::net::SocketAddr>,
    /// Hostname suffixes pods may claim; empty: any hostname.
    pub http_host_suffixes: Vec<String>,
    /// Limits of the HTTP entry point.
    pub gateway_limits: gateway::GatewayLimits,
    /// How long a pod with `replicas.min == 0` may go without a connection
    /// before its containers stop.
    pub scale_down_after: std::time::Duration,
    /// Run pods in a Kubernetes cluster instead of the embedded runtime.
    pub kube: Option<KubeSettings>,
    /// Where the GPUs sold are found (CDI specs, NVIDIA nodes).
    pub gpus: gpus::GpuSettings,
}

/// How long an idle pod with `replicas.min == 0` keeps running by default.
pub const DEFAULT_SCALE_DOWN_AFTER: std::time::Duration = std::time::Duration::from_secs(300);

/// Pods one publisher may have at once unless the operator says otherwise.
pub const DEFAULT_PODS_PER_PUBLISHER: usize = 32;

/// Resources the provider offers in total.
#[derive(Debug, Clone, Copy)]
pub struct Capacity {
    /// CPU, in millicores.
    pub cpu_millicores: u64,
    /// Memory, in bytes.
    pub memory_bytes: u64,
}

impl Capacity {
    /// What this machine has.
    pub fn of_host() -> Capacity {
        let cpus = std::thread::available_parallelism().map(|n| n.get() as u64).unwrap_or(1);
        let memory = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines()
                    .find(|l| l.starts_with("MemTotal:"))
                    .and_then(|l| l.split_whitespace().nth(1).and_then(|k| k.parse::<u64>().ok()))
            })
            .map(|kib| kib * 1024)
            .unwrap_or(0);
        Capacity { cpu_millicores: cpus * 1000, memory_bytes: memory }
    }
}

/// The provider's state shared by request handlers.
pub struct Provider {
    config: ProviderConfig,
    runtime: Runtime,
    store: PodStore,
    images: ImageStore,
    /// Held while admitting, so concurrent requests cannot overcommit.
    admitting: Mutex<()>,
    /// Trust settings, re-read when their files change.
    trust: Mutex<TrustSettings>,
    /// The node's own sockets, which no pod may reach.
    own_sockets: std::sync::OnceLock<Vec<std::net::SocketAddr>>,
    /// The attestor and the node's public key (protobuf), set once the node key is loaded.
    attestor: std::sync::OnceLock<(sealpod_attest::tsm::Attestor, Vec<u8>)>,
    /// The node key, which signs offers.
    keypair: std::sync::OnceLock<sealpod_net::Keypair>,
    /// The runtime, for chain calls from blocking request handlers.
    handle: std::sync::OnceLock<tokio::runtime::Handle>,
    /// Held while an account is read, changed and written back.
    billing_lock: Mutex<()>,
    counters: metrics::Counters,
    /// Hostnames claimed by pods, for the HTTP entry point.
    routes: Arc<gateway::Routes>,
    /// Where the HTTP entry point listens, once bound.
    http_addr: std::sync::OnceLock<std::net::SocketAddr>,
    /// The cluster, with the Kubernetes backend, once connected.
    cluster: std::sync::OnceLock<sealpod_kube::Cluster>,
    /// The cluster's capacity as last read.
    cluster_capacity: Mutex<Option<(std::time::Instant, sealpod_kube::Capacity)>>,
    /// The GPUs sold, read at start.
    gpus: gpus::GpuInventory,
}

/// What the provider's node is reachable at.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Ready {
    /// The provider's peer id.
    pub peer_id: String,
    /// Full addresses, each ending in `/p2p/<peer id>`.
    pub addresses: Vec<String>,
}

impl Provider {
    /// Opens the provider's state and re-attaches the pods it was running.
    pub fn open(config: ProviderConfig) -> anyhow::Result<Provider> {
        std::fs::create_dir_all(&config.state_dir)?;
        let runtime = Runtime::new(&config.state_dir, &config.shim_exe)?;
        let store = PodStore::open(&config.state_dir.join("provider.redb"))?;
        let images = ImageStore::new(&config.state_dir.join("images"), config.image_roots.clone())?
            .with_artifact_node(config.artifact_node.clone());
        let trust = TrustSettings::load(&config.trust_dir)?;
        let routes = Arc::new(gateway::Routes::new(&config.http_host_suffixes));
        let gpus = gpus::GpuInventory::load(&config.gpus);
        for note in &gpus.notes {
            tracing::warn!("GPUs: {note}");
        }
        if !gpus.gpus.is_empty() {
            tracing::info!(count = gpus.gpus.len(), source = gpus.source, kind = %config.gpus.kind, "selling GPUs");
        }
        let provider = Provider {
            config,
            runtime,
            store,
            images,
            admitting: Mutex::new(()),
            trust: Mutex::new(trust),
            own_sockets: std::sync::OnceLock::new(),
            attestor: std::sync::OnceLock::new(),
            keypair: std::sync::OnceLock::new(),
            handle: std::sync::OnceLock::new(),
            billing_lock: Mutex::new(()),
            counters: metrics::Counters::default(),
            routes,
            http_addr: std::sync::OnceLock::new(),
            cluster: std::sync::OnceLock::new(),
            cluster_capacity: Mutex::new(None),
            gpus,
        };
        // Cluster pods are re-attached from the cluster once connected.
        if provider.config.kube.is_none() {
            provider.reattach()?;
        }
        Ok(provider)
    }

    fn reattach(&self) -> anyhow::Result<()> {
        let records = self.store.all()?;
        for r in &records {
            match self.runtime.state(&r.pod_id) {
                Ok(s) if self.runtime.is_running(&r.pod_id) => {
                    tracing::info!(pod = %r.pod_id, phase = ?s.phase, "re-attached pod");
                }
                Ok(s) => {
                    tracing::warn!(pod = %r.pod_id, message = %s.message, "pod's shim is gone")
                }
                Err(e) => {
                    tracing::warn!(pod = %r.pod_id, error = %e, "forgetting pod without state");
                    self.store.remove(&r.pod_id)?;
                }
            }
        }
        for r in &records {
            if let Some(http) = &r.http {
                let scales = self.runtime.spec(&r.pod_id).is_ok_and(|s| s.scale_to_zero.is_some());
                let route = copies::route(&r.pod_id, http, scales);
                if let Err(e) = self.routes.claim(&http.host, route) {
                    tracing::warn!(pod = %r.pod_id, error = %e, "HTTP route not restored");
                }
            }
        }
        // A pod directory without a record is what a crash during provisioning
        // leaves behind: nobody can control it, so it goes.
        for id in self.runtime.pod_ids() {
            if !records.iter().any(|r| copies::is_copy_of(&id, r)) {
                tracing::warn!(pod = %id, "removing pod left from an interrupted provisioning");
                if let Err(e) = self.runtime.delete(&id) {
                    tracing::error!(pod = %id, error = %e, "could not remove orphaned pod");
                }
            }
        }
        // Decrypted images of pods that are gone (a crash between unpacking
        // and recording) go too.
        for id in self.images.private_pods() {
            if !records.iter().any(|r| r.pod_id == id) {
                self.images.forget_private(&id);
            }
        }
        Ok(())
    }

    /// Serves requests until the process is told to stop. Pods keep running.
    pub async fn serve(self: Arc<Self>) -> anyhow::Result<()> {
        let keypair = sealpod_net::load_or_create_keypair(&self.config.state_dir.join("node.key"))?;
        let attestor = sealpod_attest::tsm::Attestor::configure(
            &self.config.attestor,
            &self.config.tsm_root,
            self.config.attestor_collateral.as_deref(),
            &keypair,
        )
        .map_err(|e| anyhow::anyhow!("--attestor {}: {e}", self.config.attestor))?;
        match attestor.kind() {
            Some(sealpod_attest::Kind::InsecureDev) => tracing::warn!(
                "attestor: INSECURE DEV (a node-key signature, no TEE); publishers accept it only with --allow-insecure-dev"
            ),
            Some(kind) => tracing::info!(%kind, "attestor: {attestor:?}"),
            None => tracing::info!("attestor: none; attestation requests are answered unavailable"),
        }
        let _ = self.attestor.set((attestor, keypair.public().encode_protobuf()));
        let _ = self.keypair.set(keypair.clone());
        let _ = self.handle.set(tokio::runtime::Handle::current());
        if let Some(settings) = self.config.kube.clone() {
            self.start_cluster(&settings).await?;
        }
        if let Some(addr) = self.config.metrics {
            let listener = tokio::net::TcpListener::bind(addr).await?;
            let bound = listener.local_addr()?;
            std::fs::write(self.config.state_dir.join("metrics.addr"), bound.to_string())?;
            tracing::info!("metrics on http://{bound}/metrics, earnings on http://{bound}/earnings");
            tokio::spawn(self.clone().serve_metrics(listener));
        }
        if let Some(addr) = self.config.http {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| anyhow::anyhow!("the HTTP entry point cannot listen on {addr}: {e}"))?;
            let bound = listener.local_addr()?;
            std::fs::write(self.config.state_dir.join("http.addr"), bound.to_string())?;
            let _ = self.http_addr.set(bound);
            tracing::info!("HTTP entry point on http://{bound} (pods by Host header)");
            tokio::spawn(gateway::serve(listener, self.routes.clone(), self.config.gateway_limits.clone()));
        }
        if let Some(terms) = self.terms() {
            tracing::info!(chain = terms.chain.chain_id, contract = %terms.chain.contract, payout = %terms.payout, "selling; offers signed by the node key");
            tokio::spawn(self.clone().run_billing());
        }
        let mut node_config = NodeConfig::client(keypair);
        node_config.listen = self.config.listen.clone();
        node_config.bootstrap = self.config.bootstrap.clone();
        node_config.mdns = self.config.mdns;
        node_config.nat = self.config.nat.clone();
        node_config.serve = true;
        node_config.advertise = true;
        node_config.limits = self.config.peer_limits;
        let (node, mut inbound) = Node::start(node_config).await?;
        let ready = Ready {
            peer_id: node.peer_id().to_string(),
            addresses: node.listen_addrs().await.iter().map(|a| format!("{a}/p2p/{}", node.peer_id())).collect(),
        };
        for a in &ready.addresses {
            tracing::info!("listening on {a}");
        }
        let _ = self.own_sockets.set(node.listen_addrs().await.iter().filter_map(socket_of).collect());
        self.update_deny_file();
        if let Some(path) = &self.config.ready_file {
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, serde_json::to_vec(&ready)?)?;
            std::fs::rename(&tmp, path)?;
        }
        let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        loop {
            tokio::select! {
                request = inbound.recv() => match request {
                    Some(request) => {
                        let this = self.clone();
                        tokio::task::spawn_blocking(move || this.handle(request));
                    }
                    None => break,
                },
                _ = tokio::signal::ctrl_c() => break,
                _ = sigterm.recv() => break,
            }
        }
        tracing::info!("provider stopping; pods keep running");
        drop(node);
        Ok(())
    }

    fn handle(&self, request: InboundRequest) {
        match request {
            InboundRequest::Attest { peer, request, responder } => {
                metrics::bump(&self.counters.attestations);
                let response = match self.attest(&request) {
                    Ok((evidence, gpus)) => AttestResponse { error: None, evidence: Some(evidence), gpus },
                    Err(error) => {
                        tracing::info!(%peer, %error, "attestation not given");
                        AttestResponse { error: Some(error), evidence: None, gpus: Vec::new() }
                    }
                };
                responder.respond(response);
            }
            InboundRequest::Capacity { request, responder, .. } => {
                metrics::bump(&self.counters.capacity_requests);
                responder.respond(self.capacity(&request))
            }
            InboundRequest::Provision { peer, request, responder } => {
                let response = match self.provision(peer, request) {
                    Ok(status) => {
                        metrics::bump(&self.counters.provisioned);
                        ProvisionPodResponse { error: None, status: Some(status) }
                    }
                    Err(error) => {
                        metrics::bump(&self.counters.refused);
                        tracing::info!(%peer, %error, "refused provisioning");
                        ProvisionPodResponse { error: Some(error), status: None }
                    }
                };
                responder.respond(response);
            }
            InboundRequest::Control { peer, request, responder } => {
                let result = self.control(peer, request).unwrap_or_else(ControlResult::Error);
                responder.respond(PodControlResponse { result: Some(result) });
            }
            InboundRequest::Log { responder, .. } => responder.respond(sealpod_proto::LogResponse {
                error: Some(Error::new(
                    ErrorCode::Unavailable,
                    "this provider keeps no image log; ask an artifact node",
                )),
                ..Default::default()
            }),
        }
    }

    /// Evidence binding this node's key to the publisher's nonce: the CPU's,
    /// and each confidential GPU's when an evidence command is configured.
    fn attest(
        &self,
        request: &sealpod_proto::AttestRequest,
    ) -> Result<(sealpod_proto::Evidence, Vec<sealpod_proto::GpuEvidence>), Error> {
        use sealpod_attest::tsm::Attestor;
        let Some((attestor, public_key)) = self.attestor.get() else {
            return Err(Error::new(ErrorCode::Unavailable, "the provider is still starting"));
        };
        if matches!(attestor, Attestor::None) {
            return Err(Error::new(ErrorCode::Unavailable, "this provider has no TEE attestor configured"));
        }
        if request.nonce.len() != sealpod_attest::NONCE_LEN {
            return Err(Error {
                code: ErrorCode::InvalidRequest as i32,
                message: format!("the nonce must be {} bytes, not {}", sealpod_attest::NONCE_LEN, request.nonce.len()),
                field: "nonce".into(),
            });
        }
        let report_data = sealpod_attest::report_data(public_key, &request.nonce);
        let evidence = attestor.evidence(&report_data).map_err(|e| {
            tracing::error!(error = %e, "producing attestation evidence failed");
            Error::new(ErrorCode::Internal, format!("producing evidence failed: {e}"))
        })?;
        let gpus = match &self.config.gpus.evidence_command {
            Some(command) => {
                let nonce = sealpod_attest::gpu_nonce(public_key, &request.nonce);
                gpus::gpu_evidence(command, &nonce).map_err(|e| {
                    tracing::error!(error = %e, "producing GPU evidence failed");
                    Error::new(ErrorCode::Internal, format!("producing GPU evidence failed: {e}"))
                })?
            }
            None => Vec::new(),
        };
        Ok((evidence.to_proto(), gpus))
    }

    /// Whether the pod's HTTP hostname, if it has one, may be served here:
    /// an entry point runs, the operator allows the name, and no other pod
    /// has it (`own`: the hostname the pod being updated holds already).
    fn check_http_host(&self, pod: &sealpod_proto::Pod, own: Option<&str>) -> Result<(), Error> {
        let Some(port) = pod.containers.iter().flat_map(|c| &c.ports).find(|p| !p.http_host.is_empty()) else {
            return Ok(());
        };
        if self.config.http.is_none() {
            return Err(Error::new(
                ErrorCode::Unavailable,
                "this provider runs no HTTP entry point, so it cannot serve a pod's HTTP port (port + host)",
            ));
        }
        if own == Some(port.http_host.as_str()) {
            return Ok(());
        }
        self.routes.check(&port.http_host).map_err(|e| Error {
            code: match e {
                gateway::ClaimError::Taken { .. } => ErrorCode::Conflict,
                gateway::ClaimError::NotAllowed { .. } => ErrorCode::PermissionDenied,
            } as i32,
            message: e.to_string(),
            field: "pod.containers.ports.http_host".into(),
        })
    }

    fn reserved(&self) -> (u64, u64) {
        self.store.all().unwrap_or_default().iter().fold((0, 0), |(c, m), r| (c + r.cpu_millicores, m + r.memory_bytes))
    }

    fn free(&self) -> Resources {
        if self.cluster().is_some() {
            return self.cluster_free();
        }
        let (cpu, mem) = self.reserved();
        Resources {
            cpu_millicores: self.config.capacity.cpu_millicores.saturating_sub(cpu),
            memory_bytes: self.config.capacity.memory_bytes.saturating_sub(mem),
            gpus: self.gpus.free(&self.held_gpus(None)).len() as u32,
            ..Default::default()
        }
    }

    /// Which pod holds each GPU, read from the pods' specs; `except`'s
    /// count as free (a pod being updated gives its own back).
    pub(crate) fn held_gpus(&self, except: Option<&str>) -> std::collections::BTreeMap<String, String> {
        let mut held = std::collections::BTreeMap::new();
        if self.gpus.gpus.is_empty() {
            return held;
        }
        for id in self.runtime.pod_ids() {
            if Some(id.as_str()) == except {
                continue;
            }
            let Ok(spec) = self.runtime.spec(&id) else { continue };
            for c in &spec.containers {
                for name in &c.devices.names {
                    held.insert(name.clone(), id.clone());
                }
            }
        }
        held
    }

    /// The GPU inventory and who holds each, for `sealpod provider gpus`.
    pub fn gpu_inventory(&self) -> (&gpus::GpuInventory, std::collections::BTreeMap<String, String>) {
        (&self.gpus, self.held_gpus(None))
    }

    fn capacity(&self, request: &CapacityRequest) -> CapacityResponse {
        let free = self.free();
        let want = request.resources.unwrap_or_default();
        let available = want.cpu_millicores <= free.cpu_millicores
            && want.memory_bytes <= free.memory_bytes
            && want.gpus <= free.gpus
            && request.external_ips == 0;
        let gpus = self.gpus.offer(&self.config.gpus.kind);
        CapacityResponse { error: None, available, free: Some(free), offer: self.offer(), gpus }
    }

    fn provision(&self, peer: PeerId, mut request: ProvisionPodRequest) -> Result<PodStatus, Error> {
        let mut pod = request.pod.take().ok_or_else(|| Error {
            code: ErrorCode::InvalidRequest as i32,
            message: "the request carries no pod".into(),
            field: "pod".into(),
        })?;
        let result = self.provision_pod(peer, &mut pod, &request);
        // Whatever happened (refused early for payment, capacity or a bad
        // manifest, or admitted), the request's secrets and image keys go now.
        wipe_secrets(&mut pod);
        result
    }

    fn provision_pod(
        &self,
        peer: PeerId,
        pod: &mut sealpod_proto::Pod,
        request: &ProvisionPodRequest,
    ) -> Result<PodStatus, Error> {
        let pod = &*pod;
        let verified = match &request.payload_manifest {
            Some(pm) => Some(self.verify_payload(pm)?),
            None => None,
        };
        let egress = verified.as_ref().and_then(|v| self.egress_policy(&v.manifest));
        if self.cluster().is_some() {
            return self.provision_on_cluster(peer, pod, request, verified.as_ref(), egress.as_ref());
        }
        let want = sealpod_proto::total_resources(pod);
        let (cpu, memory) = (want.cpu_millicores, want.memory_bytes);
        let pod_id = new_pod_id();
        // Payment is checked before the admission lock: it may wait on the
        // chain, and other publishers should not wait with it.
        let account = self.admit_payment(&pod_id, pod, request)?;
        let _guard = self.admitting.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(a) = &account {
            // Checked again under the lock: two requests racing with one channel.
            if self.accounts().iter().any(|x| x.channel_id == a.channel_id) {
                return Err(Error {
                    code: ErrorCode::PaymentRequired as i32,
                    message: format!("channel {} already pays for another pod", a.channel_id),
                    field: "payment.channel_id".into(),
                });
            }
        }
        self.check_pods_per_publisher(&peer)?;
        self.check_http_host(pod, None)?;
        let free = self.free();
        if cpu > free.cpu_millicores || memory > free.memory_bytes {
            return Err(Error::new(
                ErrorCode::ResourceExhausted,
                format!(
                    "not enough capacity: asked {cpu}m CPU and {memory} bytes of memory, {}m and {} bytes are free",
                    free.cpu_millicores, free.memory_bytes
                ),
            ));
        }
        let n = sealpod_proto::copies(pod);
        let held_gpus = self.held_gpus(None);
        let mut gpu_pick = gpus::GpuPick::new(&self.gpus, &held_gpus);
        let admitted = admission::admit(
            &pod_id,
            pod,
            &self.images,
            self.config.expose_ip,
            egress,
            self.config.scale_down_after,
            &[],
            &mut gpu_pick,
        );
        if admitted.is_err() {
            self.images.forget_private(&pod_id);
        }
        let mut admitted = admitted?;
        if let Some(v) = &verified {
            covers(v, &admitted)?;
        }
        copies::check(&pod_id, &admitted.spec, n, account.is_some())?;
        let listeners = admitted.listeners()?;
        let more = copies::more(&admitted.spec, &listeners, admitted.http.as_ref().map(|h| h.backend), n)?;
        let record = PodRecord {
            pod_id: pod_id.clone(),
            name: request.name.chars().take(128).collect(),
            owner: peer.to_string(),
            created_unix_seconds: now(),
            exposed: admitted
                .spec
                .ports
                .iter()
                .map(|p| Exposed {
                    host: p.host,
                    container: p.container.clone(),
                    container_port: p.target_port,
                    udp: p.udp,
                })
                .collect(),
            cpu_millicores: cpu,
            memory_bytes: memory,
            payload_manifest_base64: request.payload_manifest.as_ref().map(|pm| pm.manifest_base64.clone()),
            denials: Vec::new(),
            http: admitted.http.as_ref().map(|h| store::HttpRoute {
                host: h.host.clone(),
                backend: h.backend,
                container: h.container.clone(),
                container_port: h.container_port,
                copy_backends: more.iter().filter_map(|c| c.backend).collect(),
            }),
            copies: n,
        };
        // Recorded before the shim starts: a crash in between leaves a record
        // that re-attachment resolves, never a pod nobody knows of.
        self.store.put(&record).map_err(internal)?;
        if let Some(a) = &account {
            self.save_account(a);
        }
        self.update_deny_file();
        let secrets = if more.is_empty() { Vec::new() } else { admitted.secrets.clone() };
        let started = self
            .runtime
            .create(&admitted.spec, listeners, admitted.secrets)
            .map_err(|e| e.to_string())
            .and_then(|state| self.start_copies(more, &secrets).map(|()| state).map_err(|e| e.message));
        drop(secrets);
        match started {
            Ok(state) => {
                if let Some(http) = &record.http {
                    // Checked above under the same admission lock, so it is free.
                    let route = copies::route(&pod_id, http, admitted.spec.scale_to_zero.is_some());
                    self.routes.claim(&http.host, route).map_err(|e| Error::new(ErrorCode::Conflict, e.to_string()))?;
                }
                tracing::info!(pod = %pod_id, owner = %peer, phase = ?state.phase, "provisioned pod");
                Ok(self.pod_status(&record, &state))
            }
            Err(e) => {
                tracing::warn!(pod = %pod_id, error = %e, "provisioning failed");
                self.delete_more_copies(&record);
                let _ = self.runtime.delete(&pod_id);
                let _ = self.store.remove(&pod_id);
                let _ = self.store.remove_account(&pod_id);
                self.images.forget_private(&pod_id);
                Err(Error::new(ErrorCode::Internal, format!("starting the pod failed: {e}")))
            }
        }
    }

    /// The records of the pods `peer` owns.
    pub(crate) fn records_of(&self, peer: &PeerId) -> Result<Vec<PodRecord>, Error> {
        let me = peer.to_string();
        Ok(self.store.all().map_err(internal)?.into_iter().filter(|r| r.owner == me).collect())
    }

    /// Refuses a publisher that already has as many pods here as it may.
    fn check_pods_per_publisher(&self, peer: &PeerId) -> Result<(), Error> {
        let held = self.records_of(peer).map(|r| r.len()).unwrap_or(0);
        if held >= self.config.pods_per_publisher {
            return Err(Error::new(
                ErrorCode::ResourceExhausted,
                format!(
                    "this provider runs at most {} pods per publisher and you have {held}; delete one first",
                    self.config.pods_per_publisher
                ),
            ));
        }
        Ok(())
    }

    /// Whether the pod's rules let its owner run `argv`. A pod without a
    /// payload manifest lets its owner run anything. Refusals are recorded in
    /// the pod's status.
    fn exec_allowed(&self, record: &PodRecord, argv: &[String]) -> Result<(), Error> {
        let Some(text) = &record.payload_manifest_base64 else { return Ok(()) };
        let manifest = sealpod_payload::decode_manifest(text).map_err(internal)?;
        let Err(denied) = manifest.exec_allowed(argv) else { return Ok(()) };
        let detail = format!("{}: {}", denied.command, denied.reason);
        tracing::warn!(pod = %record.pod_id, %detail, "exec refused by the payload manifest");
        let mut updated = record.clone();
        updated.denials.push(sealpod_runtime::DenialRecord {
            unix_seconds: now(),
            kind: "exec".into(),
            detail: detail.clone(),
        });
        let excess = updated.denials.len().saturating_sub(20);
        updated.denials.drain(..excess);
        let _ = self.store.put(&updated);
        Err(Error {
            code: ErrorCode::PermissionDenied as i32,
            message: format!("exec refused by the pod's payload manifest: {detail}"),
            field: "argv".into(),
        })
    }

    /// Verifies a payload manifest against the trust settings and decides on
    /// its outbound access.
    fn verify_payload(&self, pm: &sealpod_proto::PayloadManifest) -> Result<sealpod_payload::VerifiedManifest, Error> {
        let denied = |message: String| Error {
            code: ErrorCode::PermissionDenied as i32,
            message,
            field: "payload_manifest".into(),
        };
        let mut trust = self.trust.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = trust.reload_if_changed() {
            tracing::error!(error = %e, "cannot re-read trust settings; keeping the previous ones");
        }
        let algorithm = if pm.signature_algorithm.is_empty() { "sha256" } else { pm.signature_algorithm.as_str() };
        let verified = sealpod_payload::verify(
            &pm.manifest_base64,
            &pm.signature,
            algorithm,
            &pm.certificate,
            &trust.keystore,
            std::time::SystemTime::now(),
        )
        .map_err(|e| denied(format!("payload manifest rejected: {e}")))?;
        let decision = trust.decide_verified(&verified);
        if !decision.accepted {
            return Err(denied(format!("payload manifest's outbound access refused: {}", decision.reason)));
        }
        tracing::info!(reason = %decision.reason, "payload manifest accepted");
        Ok(verified)
    }

    /// Where the sockets no pod may reach are listed for the shims.
    fn deny_file(&self) -> PathBuf {
        self.config.state_dir.join("egress-deny.json")
    }

    /// The sockets no pod may reach: the node's own and every pod's exposed ports.
    fn deny_list(&self) -> Vec<std::net::SocketAddr> {
        let mut deny: Vec<std::net::SocketAddr> = self.own_sockets.get().cloned().unwrap_or_default();
        for r in self.store.all().unwrap_or_default() {
            deny.extend(r.exposed.iter().map(|e| e.host));
        }
        deny
    }

    /// Rewrites the deny file from [`Provider::deny_list`].
    fn update_deny_file(&self) {
        let deny = self.deny_list();
        if let Err(e) = sealpod_runtime::egress::write_deny_file(&self.deny_file(), &deny) {
            tracing::error!(error = %e, "cannot write the egress deny list");
        }
    }

    /// The egress proxy's policy for a manifest, or `None` when it asks for
    /// no outbound access (the pod then has no way out at all).
    fn egress_policy(&self, manifest: &sealpod_payload::PayloadManifest) -> Option<sealpod_runtime::EgressPolicy> {
        use sealpod_payload::OutboundAccess;
        let comp = manifest.comp_manifest.as_ref()?;
        let out = comp.inet_out()?;
        let deny = self.deny_list();
        let proxy_scheme = |scheme: &str| match scheme {
            "http" | "ws" => Some("http"),
            "https" | "wss" => Some("https"),
            _ => None,
        };
        let mut policy = sealpod_runtime::EgressPolicy {
            proxy_port: 3128,
            allow: Vec::new(),
            unrestricted: false,
            deny,
            deny_file: Some(self.deny_file()),
        };
        match comp.outbound_access() {
            OutboundAccess::None => return None,
            OutboundAccess::Unrestricted => policy.unrestricted = true,
            OutboundAccess::Urls(urls) => {
                for url in urls {
                    let allowed_scheme = out.protocols.is_empty() || out.protocols.iter().any(|p| p == url.scheme());
                    let (Some(scheme), Some(host), Some(port), true) =
                        (proxy_scheme(url.scheme()), url.host_str(), url.port_or_known_default(), allowed_scheme)
                    else {
                        continue;
                    };
                    let host = host.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
                    policy.allow.push(sealpod_runtime::AllowedUrl { scheme: scheme.into(), host, port });
                }
            }
        }
        Some(policy)
    }

    /// The record of a pod the caller owns.
    fn owned(&self, peer: &PeerId, pod_id: &str) -> Result<PodRecord, Error> {
        match self.store.get(pod_id).map_err(internal)? {
            Some(r) if r.owner == peer.to_string() => Ok(r),
            Some(_) => {
                tracing::warn!(%peer, pod = %pod_id, "refused control of a pod the peer does not own");
                Err(Error::new(
                    ErrorCode::PermissionDenied,
                    format!(
                        "pod {pod_id} belongs to another publisher; only the peer that deployed a pod may control it"
                    ),
                ))
            }
            None => Err(Error::new(ErrorCode::NotFound, format!("no pod {pod_id} on this provider"))),
        }
    }

    fn control(&self, peer: PeerId, request: PodControlRequest) -> Result<ControlResult, Error> {
        if self.cluster().is_some() {
            let op = request.op.ok_or_else(|| Error::new(ErrorCode::InvalidRequest, "empty control request"))?;
            return self.cluster_control(peer, op);
        }
        match request.op {
            Some(Op::Status(s)) => {
                let record = self.owned(&peer, &s.pod_id)?;
                let state = self.runtime.state(&record.pod_id).map_err(internal)?;
                Ok(ControlResult::Status(self.pod_status(&record, &state)))
            }
            Some(Op::List(_)) => {
                let pods = self
                    .records_of(&peer)?
                    .into_iter()
                    .filter_map(|r| self.runtime.state(&r.pod_id).ok().map(|s| self.pod_status(&r, &s)))
                    .collect();
                Ok(ControlResult::List(PodList { pods }))
            }
            Some(Op::Logs(l)) => {
                let record = self.owned(&peer, &l.pod_id)?;
                let state = self.runtime.state(&record.pod_id).map_err(internal)?;
                let container = if l.container.is_empty() {
                    state.containers.first().map(|c| c.name.clone()).unwrap_or_default()
                } else {
                    l.container.clone()
                };
                let Some(cs) = state.containers.iter().find(|c| c.name == container) else {
                    return Err(Error {
                        code: ErrorCode::NotFound as i32,
                        message: format!("pod {} has no container {container:?}", record.pod_id),
                        field: "container".into(),
                    });
                };
                let max = l.max_bytes.clamp(1, sealpod_proto::limits::LOG_CHUNK) as usize;
                let slice = self.runtime.read_log(&record.pod_id, &container, l.offset, max).map_err(internal)?;
                let done = cs.state == RunState::Exited || !self.runtime.is_running(&record.pod_id);
                let finished = done && slice.data.len() < max;
                Ok(ControlResult::Logs(LogChunk {
                    data: slice.data,
                    offset: slice.offset,
                    next_offset: slice.next_offset,
                    finished,
                }))
            }
            Some(Op::Exec(x)) => {
                let record = self.owned(&peer, &x.pod_id)?;
                let state = self.runtime.state(&record.pod_id).map_err(internal)?;
                let container = if x.container.is_empty() {
                    state.containers.first().map(|c| c.name.clone()).unwrap_or_default()
                } else {
                    x.container.clone()
                };
                if x.argv.is_empty() || x.argv.len() > 4096 || x.argv.iter().any(|a| a.contains('\0')) {
                    return Err(Error {
                        code: ErrorCode::InvalidRequest as i32,
                        message: "the command must be 1 to 4096 arguments without NUL bytes".into(),
                        field: "argv".into(),
                    });
                }
                self.exec_allowed(&record, &x.argv)?;
                let exec_id = self.runtime.exec(&record.pod_id, &container, x.argv).map_err(|e| Error {
                    code: ErrorCode::InvalidRequest as i32,
                    message: e.to_string(),
                    field: "container".into(),
                })?;
                tracing::info!(pod = %record.pod_id, %exec_id, "exec started");
                Ok(ControlResult::ExecStarted(sealpod_proto::ExecStarted { exec_id }))
            }
            Some(Op::ExecOutput(o)) => {
                let record = self.owned(&peer, &o.pod_id)?;
                let max = o.max_bytes.clamp(1, sealpod_proto::limits::LOG_CHUNK) as usize;
                let (slice, exit) =
                    self.runtime.exec_output(&record.pod_id, &o.exec_id, o.offset, max).map_err(|e| Error {
                        code: ErrorCode::NotFound as i32,
                        message: e.to_string(),
                        field: "exec_id".into(),
                    })?;
                let finished = exit.is_some() && slice.data.len() < max;
                Ok(ControlResult::ExecOutput(sealpod_proto::ExecOutput {
                    data: slice.data,
                    offset: slice.offset,
                    next_offset: slice.next_offset,
                    finished,
                    exit_code: if finished { exit.unwrap_or(0) } else { 0 },
                }))
            }
            Some(Op::Delete(d)) => {
                let record = self.owned(&peer, &d.pod_id)?;
                let mut last = self.runtime.state(&record.pod_id).ok();
                // A suspended pod is thawed so that its processes can be killed.
                let _ = sealpod_runtime::cgroup::freeze(&record.pod_id, false);
                self.delete_more_copies(&record);
                self.runtime.delete(&record.pod_id).map_err(internal)?;
                self.routes.release(&record.pod_id);
                self.store.remove(&record.pod_id).map_err(internal)?;
                self.images.forget_private(&record.pod_id);
                self.update_deny_file();
                self.end_account(&record.pod_id, "deleted by its owner");
                tracing::info!(pod = %record.pod_id, "deleted pod");
                let mut s = last.take().map(|s| self.pod_status(&record, &s)).unwrap_or_default();
                s.pod_id = record.pod_id.clone();
                s.phase = PodPhase::Deleted as i32;
                s.addresses.clear();
                Ok(ControlResult::Deleted(s))
            }
            Some(Op::Pay(p)) => Ok(ControlResult::Paid(self.pay(&peer, p)?)),
            Some(Op::Update(u)) => Ok(ControlResult::Updated(self.update(peer, u)?)),
            None => Err(Error::new(ErrorCode::InvalidRequest, "empty control request")),
        }
    }
}

impl Provider {
    /// The wire status of a pod, with its HTTP route and its billing.
    fn pod_status(&self, record: &PodRecord, state: &PodState) -> PodStatus {
        let mut status = status(record, state);
        status.replicas = record.copies.max(1);
        status.replicas_running = self.copies_running(record);
        if let (Some(http), Some(entry)) = (&record.http, self.http_addr.get()) {
            status.addresses.push(ExposedAddress {
                multiaddr: socket_multiaddr(*entry),
                container_name: http.container.clone(),
                container_port: u32::from(http.container_port),
                protocol: sealpod_proto::Protocol::Tcp as i32,
                http_host: http.host.clone(),
            });
        }
        self.with_billing(status)
    }

    /// Removes a pod the provider itself decided to end (unpaid).
    fn remove_pod(&self, pod_id: &str) {
        if let Ok(Some(record)) = self.store.get(pod_id) {
            self.delete_more_copies(&record);
        }
        if let Err(e) = self.runtime.delete(pod_id) {
            tracing::error!(pod = %pod_id, error = %e, "could not delete pod");
        }
        self.routes.release(pod_id);
        let _ = self.store.remove(pod_id);
        self.images.forget_private(pod_id);
        self.update_deny_file();
    }
}

/// Checks that a payload manifest speaks for every image of the pod: it
/// speaks for the images it names, and for no other.
fn covers(verified: &sealpod_payload::VerifiedManifest, admitted: &admission::Admitted) -> Result<(), Error> {
    for (i, c) in admitted.spec.containers.iter().enumerate() {
        // sha256 names the image by its digest; other algorithms
        // (sha3-256 and friends) by the manifest bytes it covers.
        let by_digest = sealpod_payload::check_image_digest(&verified.manifest, &c.image_digest);
        let by_bytes = sealpod_payload::check_image_bytes(&verified.manifest, &admitted.image_manifests[i]);
        by_digest.or(by_bytes).map_err(|e| Error {
            code: ErrorCode::PermissionDenied as i32,
            message: format!("payload manifest does not cover container {}: {e}", c.name),
            field: format!("pod.containers[{i}].image"),
        })?;
    }
    Ok(())
}

/// Zeroizes a request's secret volume contents and image keys: the admitted
/// copies are the only ones left once admission is over.
fn wipe_secrets(pod: &mut sealpod_proto::Pod) {
    for v in &mut pod.volumes {
        if let Some(sealpod_proto::volume::Kind::Secret(s)) = &mut v.kind {
            zeroize::Zeroize::zeroize(&mut s.contents);
        }
    }
    for c in &mut pod.containers {
        if let Some(sealpod_proto::image::Source::Content(content)) = c.image.as_mut().and_then(|i| i.source.as_mut()) {
            if let Some(key) = &mut content.key {
                zeroize::Zeroize::zeroize(&mut key.data);
            }
        }
    }
}

fn socket_of(addr: &Multiaddr) -> Option<std::net::SocketAddr> {
    use sealpod_net::multiaddr::Protocol as P;
    let mut ip = None;
    for p in addr.iter() {
        match p {
            P::Ip4(a) => ip = Some(IpAddr::V4(a)),
            P::Ip6(a) => ip = Some(IpAddr::V6(a)),
            P::Tcp(port) | P::Udp(port) => return ip.map(|ip| std::net::SocketAddr::new(ip, port)),
            _ => {}
        }
    }
    None
}

pub(crate) fn internal(e: impl std::fmt::Display) -> Error {
    Error::new(ErrorCode::Internal, e.to_string())
}

pub(crate) fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn new_pod_id() -> String {
    let bytes: [u8; 8] = rand::random();
    format!("p{}", hex::encode(bytes))
}

/// The wire status of a pod.
pub fn status(record: &PodRecord, state: &PodState) -> PodStatus {
    use sealpod_runtime::Phase;
    let phase = match state.phase {
        Phase::Starting => PodPhase::Starting,
        Phase::Running => PodPhase::Running,
        Phase::Succeeded => PodPhase::Succeeded,
        Phase::Failed => PodPhase::Failed,
        Phase::ScaledToZero => PodPhase::ScaledToZero,
        Phase::Stopping | Phase::Deleted => PodPhase::Deleted,
    };
    PodStatus {
        pod_id: record.pod_id.clone(),
        name: record.name.clone(),
        phase: phase as i32,
        containers: state
            .containers
            .iter()
            .map(|c| ContainerStatus {
                name: c.name.clone(),
                state: match c.state {
                    RunState::Created => sealpod_proto::ContainerState::Created,
                    RunState::Running => sealpod_proto::ContainerState::Running,
                    RunState::Restarting => sealpod_proto::ContainerState::Restarting,
                    RunState::Exited => sealpod_proto::ContainerState::Exited,
                } as i32,
                exit_code: c.exit_code.unwrap_or(0),
                restarts: c.restarts,
                message: c.message.clone(),
            })
            .collect(),
        addresses: record
            .exposed
            .iter()
            .map(|e| ExposedAddress {
                multiaddr: if e.udp { udp_multiaddr(e.host) } else { socket_multiaddr(e.host) },
                container_name: e.container.clone(),
                container_port: e.container_port as u32,
                protocol: if e.udp { sealpod_proto::Protocol::Udp } else { sealpod_proto::Protocol::Tcp } as i32,
                http_host: String::new(),
            })
            .collect(),
        created_unix_seconds: record.created_unix_seconds,
        message: state.message.clone(),
        denials: record
            .denials
            .iter()
            .chain(&state.denials)
            .map(|d| sealpod_proto::Denial {
                unix_seconds: d.unix_seconds,
                kind: d.kind.clone(),
                detail: d.detail.clone(),
            })
            .collect(),
        billing: None,
        replicas: record.copies.max(1),
        replicas_running: 0,
    }
}

fn socket_multiaddr(addr: std::net::SocketAddr) -> String {
    match addr.ip() {
        IpAddr::V4(ip) => format!("/ip4/{ip}/tcp/{}", addr.port()),
        IpAddr::V6(ip) => format!("/ip6/{ip}/tcp/{}", addr.port()),
    }
}

fn udp_multiaddr(addr: std::net::SocketAddr) -> String {
    socket_multiaddr(addr).replacen("/tcp/", "/udp/", 1)
}

/// Keeps `Arc` in the public signature readable.
pub type SharedProvider = Arc<Provider>;
