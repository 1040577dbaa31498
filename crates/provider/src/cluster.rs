//! The Kubernetes backend (`--backend k8s`): pods admitted here run in a
//! cluster instead of the embedded runtime.
//!
//! Admission keeps its checks (ownership, per-publisher limit, payload
//! manifest, capacity), then the images are made pullable from the
//! provider's own read-only registry, the pod is mapped to objects
//! (`sealpod-kube`) and created; the record is kept both in the provider's
//! database and on the pod's namespace, so that a provider that lost its
//! state re-attaches from the cluster itself. Status, logs, exec and delete
//! go through the API server.

use std::future::Future;
use std::time::{Duration, Instant};

use sealpod_kube::{Cluster, ClusterOptions, Egress, MapError, Plan};
use sealpod_net::PeerId;
use sealpod_proto::{
    image::Source, pod_control_request::Op, pod_control_response::Result as ControlResult, Error, ErrorCode, LogChunk,
    PodList, PodPhase, PodStatus, ProvisionPodRequest, Resources,
};
use sealpod_runtime::{ContainerState, Phase, PodState, RunState};

use crate::images::{NETWORK_SCHEME, SERVED_REPOSITORY};
use crate::store::{Exposed, PodRecord};
use crate::{internal, new_pod_id, now, status, Provider};

/// The Kubernetes backend's settings.
#[derive(Debug, Clone)]
pub struct KubeSettings {
    /// How the cluster is reached and what every pod gets.
    pub cluster: ClusterOptions,
    /// Where the provider's registry listens for the nodes' pulls.
    pub registry_listen: std::net::SocketAddr,
    /// How nodes name that registry in image references (`host:port`).
    pub registry_host: String,
}

/// How long provisioning waits for a cluster pod to run before answering
/// with its state so far.
const CLUSTER_START_WAIT: Duration = Duration::from_secs(120);

/// How long a capacity reading is reused.
const CAPACITY_TTL: Duration = Duration::from_secs(2);

fn kube_error(e: sealpod_kube::KubeError) -> Error {
    use sealpod_kube::KubeError as K;
    let code = match &e {
        K::NotFound(_) => ErrorCode::NotFound,
        K::NotRunning(_) => ErrorCode::InvalidRequest,
        K::Busy(_) => ErrorCode::ResourceExhausted,
        _ => ErrorCode::Unavailable,
    };
    Error::new(code, e.to_string())
}

fn map_error(e: MapError) -> Error {
    Error { code: ErrorCode::InvalidRequest as i32, message: e.message, field: e.field }
}

/// The provider's view of a cluster pod, in the runtime's terms.
fn state_of(pod_id: &str, view: &sealpod_kube::PodView) -> PodState {
    use sealpod_kube::{ContainerRun, Phase as K};
    PodState {
        pod_id: pod_id.to_owned(),
        phase: match view.phase {
            K::Starting => Phase::Starting,
            K::Running => Phase::Running,
            K::Failed => Phase::Failed,
        },
        containers: view
            .containers
            .iter()
            .map(|c| ContainerState {
                name: c.name.clone(),
                state: match c.state {
                    ContainerRun::Waiting => RunState::Created,
                    ContainerRun::Running => RunState::Running,
                    ContainerRun::Restarting => RunState::Restarting,
                    ContainerRun::Exited => RunState::Exited,
                },
                exit_code: c.exit_code,
                restarts: c.restarts,
                message: c.message.clone(),
                pid: None,
            })
            .collect(),
        message: view.message.clone(),
        shim_pid: 0,
        shim_start_time: 0,
        denials: Vec::new(),
        last_wake_us: None,
    }
}

impl Provider {
    /// The cluster, when the provider runs with the Kubernetes backend.
    pub(crate) fn cluster(&self) -> Option<&Cluster> {
        self.cluster.get()
    }

    /// Runs a cluster call from a request handler's blocking thread.
    fn block<F: Future>(&self, f: F) -> F::Output {
        let handle = self.handle.get().expect("the provider serves before it handles requests");
        handle.block_on(f)
    }

    /// Connects to the cluster, serves the nodes' registry and re-attaches
    /// the pods the cluster holds.
    pub(crate) async fn start_cluster(&self, settings: &KubeSettings) -> anyhow::Result<()> {
        let mut options = settings.cluster.clone();
        if let Some(k) = self.keypair.get() {
            options.map.provider = k.public().to_peer_id().to_string();
        }
        let cluster = Cluster::connect(options)
            .await
            .map_err(|e| anyhow::anyhow!("--kubeconfig {}: {e}", settings.cluster.kubeconfig.display()))?;
        if let Some(class) = &settings.cluster.map.runtime_class {
            if !cluster.runtime_class_exists(class).await.unwrap_or(false) {
                tracing::warn!(%class, "the cluster has no such RuntimeClass; pods will not start until it has");
            }
        }
        let store = self.images.content_store()?;
        let listener = tokio::net::TcpListener::bind(settings.registry_listen).await.map_err(|e| {
            anyhow::anyhow!("the registry for the cluster cannot listen on {}: {e}", settings.registry_listen)
        })?;
        let bound = listener.local_addr()?;
        std::fs::write(self.config.state_dir.join("registry.addr"), bound.to_string())?;
        let registry = sealpod_registry::Registry::new(store)
            .options(sealpod_registry::RegistryOptions { read_only: true, ..Default::default() });
        tokio::spawn(async move {
            if let Err(e) = registry.serve(listener).await {
                tracing::error!(error = %e, "the registry for the cluster stopped");
            }
        });
        tracing::info!(registry = %bound, nodes_pull_from = %settings.registry_host, "serving pods' images to the cluster");
        let _ = self.cluster.set(cluster);
        self.reattach_cluster().await
    }

    /// Makes the provider's records agree with the cluster: records of pods
    /// the cluster no longer holds go, pods whose record only the cluster
    /// has come back, and namespaces without a record (a crash during
    /// provisioning) are deleted.
    async fn reattach_cluster(&self) -> anyhow::Result<()> {
        let cluster = self.cluster().expect("connected");
        let found = cluster.found().await?;
        for r in self.store.all()? {
            if !found.iter().any(|f| f.pod_id == r.pod_id && !f.terminating) {
                tracing::warn!(pod = %r.pod_id, "the cluster no longer holds the pod; forgetting it");
                self.store.remove(&r.pod_id)?;
            }
        }
        for f in found.iter().filter(|f| !f.terminating) {
            if self.store.get(&f.pod_id)?.is_some() {
                tracing::info!(pod = %f.pod_id, "re-attached pod in the cluster");
                continue;
            }
            match f.record.as_deref().map(serde_json::from_str::<PodRecord>) {
                Some(Ok(record)) if record.pod_id == f.pod_id => {
                    tracing::info!(pod = %f.pod_id, "restored the pod's record from the cluster");
                    self.store.put(&record)?;
                }
                _ => {
                    tracing::warn!(pod = %f.pod_id, "removing a cluster pod without a record (interrupted provisioning)");
                    cluster.delete(&f.pod_id).await?;
                }
            }
        }
        Ok(())
    }

    /// What the cluster can still take for sealpod: its nodes' allocatable
    /// resources, less what other workloads request and what this
    /// provider's pods reserve.
    pub(crate) fn cluster_free(&self) -> Resources {
        let Some(cluster) = self.cluster() else { return Resources::default() };
        let cached = *self.cluster_capacity.lock().unwrap_or_else(|p| p.into_inner());
        let capacity = match cached {
            Some((at, c)) if at.elapsed() < CAPACITY_TTL => c,
            _ => match self.block(cluster.capacity()) {
                Ok(c) => {
                    *self.cluster_capacity.lock().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), c));
                    c
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the cluster's capacity");
                    return Resources::default();
                }
            },
        };
        let (cpu, mem) = self.reserved();
        Resources {
            cpu_millicores: capacity
                .allocatable_cpu_millicores
                .saturating_sub(capacity.others_cpu_millicores)
                .saturating_sub(cpu),
            memory_bytes: capacity
                .allocatable_memory_bytes
                .saturating_sub(capacity.others_memory_bytes)
                .saturating_sub(mem),
            ..Default::default()
        }
    }

    /// Provisions an admitted-so-far pod into the cluster.
    pub(crate) fn provision_on_cluster(
        &self,
        peer: PeerId,
        pod: &sealpod_proto::Pod,
        request: &ProvisionPodRequest,
        verified: Option<&sealpod_payload::VerifiedManifest>,
        egress: Option<&sealpod_runtime::EgressPolicy>,
    ) -> Result<PodStatus, Error> {
        let cluster = self.cluster().expect("the cluster backend is connected");
        let settings = self.config.kube.as_ref().expect("the cluster backend is configured");
        if request.payment.is_some() || self.terms().is_some() {
            return Err(Error::new(
                ErrorCode::Unavailable,
                "this provider runs pods in a Kubernetes cluster, where it does not meter them yet: it takes no payment",
            ));
        }
        let egress = match egress {
            None => Egress::None,
            Some(p) if p.unrestricted => Egress::Public,
            Some(_) => {
                return Err(Error {
                    code: ErrorCode::PermissionDenied as i32,
                    message: "this provider's cluster enforces outbound access by address (NetworkPolicy), not by \
                              URL, so it cannot keep a payload manifest's URL list"
                        .into(),
                    field: "payload_manifest".into(),
                })
            }
        };
        let copies = sealpod_proto::copies(pod);
        if copies > crate::copies::MAX_COPIES {
            return Err(Error {
                code: ErrorCode::InvalidRequest as i32,
                message: format!("at most {} copies of a pod run here", crate::copies::MAX_COPIES),
                field: "pod.replicas.max".into(),
            });
        }
        if copies > 1 && pod.volumes.iter().any(|v| matches!(v.kind, Some(sealpod_proto::volume::Kind::Persistent(_))))
        {
            return Err(Error {
                code: ErrorCode::InvalidRequest as i32,
                message: "a pod with a persistent volume runs as one copy".into(),
                field: "pod.replicas.max".into(),
            });
        }
        let want = sealpod_proto::total_resources(pod);
        let _guard = self.admitting.lock().unwrap_or_else(|p| p.into_inner());
        self.check_pods_per_publisher(&peer)?;
        let free = self.cluster_free();
        if want.cpu_millicores > free.cpu_millicores || want.memory_bytes > free.memory_bytes {
            return Err(Error::new(
                ErrorCode::ResourceExhausted,
                format!(
                    "not enough capacity in the cluster: asked {}m CPU and {} bytes of memory, {}m and {} bytes are free",
                    want.cpu_millicores, want.memory_bytes, free.cpu_millicores, free.memory_bytes
                ),
            ));
        }
        let mut images = Vec::with_capacity(pod.containers.len());
        for (i, c) in pod.containers.iter().enumerate() {
            let field = format!("pod.containers[{i}].image");
            let served = match c.image.as_ref().and_then(|i| i.source.as_ref()) {
                Some(Source::Reference(r)) => self.images.serve(r, r.starts_with(NETWORK_SCHEME)),
                Some(Source::Content(content)) if content.key.is_some() => {
                    Err(crate::images::ImageError::Encrypted(content.digest.clone()))
                }
                Some(Source::Content(content)) => self.images.serve(&content.digest, true),
                None => {
                    return Err(Error {
                        code: ErrorCode::InvalidRequest as i32,
                        message: "container has no image".into(),
                        field,
                    })
                }
            }
            .map_err(|e| Error {
                code: match e {
                    crate::images::ImageError::Encrypted(_) => ErrorCode::InvalidRequest,
                    crate::images::ImageError::NoArtifactNode(_) => ErrorCode::Unavailable,
                    _ => ErrorCode::NotFound,
                } as i32,
                message: e.to_string(),
                field: field.clone(),
            })?;
            if let Some(v) = verified {
                let by_digest = sealpod_payload::check_image_digest(&v.manifest, &served.digest);
                let by_bytes = sealpod_payload::check_image_bytes(&v.manifest, &served.manifest);
                by_digest.or(by_bytes).map_err(|e| Error {
                    code: ErrorCode::PermissionDenied as i32,
                    message: format!("payload manifest does not cover container {}: {e}", c.name),
                    field: field.clone(),
                })?;
            }
            images.push(format!("{}/{SERVED_REPOSITORY}@{}", settings.registry_host, served.digest));
        }
        let pod_id = new_pod_id();
        let plan = Plan { pod_id: &pod_id, pod, images, replicas: copies.max(1), egress };
        let objects = sealpod_kube::map(&plan, &cluster.options().map).map_err(map_error)?;
        let bindings = self.block(cluster.create(&pod_id, &objects)).map_err(kube_error)?;
        let recorded = (|| {
            let ip = self.block(cluster.node_address()).map_err(kube_error)?;
            let record = PodRecord {
                pod_id: pod_id.clone(),
                name: request.name.chars().take(128).collect(),
                owner: peer.to_string(),
                created_unix_seconds: now(),
                exposed: bindings
                    .iter()
                    .map(|b| Exposed {
                        host: std::net::SocketAddr::new(ip, b.node_port),
                        container: b.port.container.clone(),
                        container_port: b.port.container_port,
                        udp: b.port.udp,
                    })
                    .collect(),
                cpu_millicores: want.cpu_millicores,
                memory_bytes: want.memory_bytes,
                payload_manifest_base64: request.payload_manifest.as_ref().map(|pm| pm.manifest_base64.clone()),
                denials: Vec::new(),
                http: None,
                copies,
            };
            let json = serde_json::to_string(&record).map_err(internal)?;
            self.block(cluster.annotate(&pod_id, &json)).map_err(kube_error)?;
            self.store.put(&record).map_err(internal)?;
            Ok::<_, Error>(record)
        })();
        let record = match recorded {
            Ok(r) => r,
            Err(e) => {
                let _ = self.block(cluster.delete(&pod_id));
                return Err(e);
            }
        };
        // Answered once the pod runs, as the embedded runtime does; a pod
        // that cannot start (an image the nodes cannot pull, a bad
        // configuration) is removed and the reason returned.
        let started = Instant::now();
        loop {
            let view = self.block(cluster.view(&pod_id)).map_err(kube_error)?;
            match view.phase {
                sealpod_kube::Phase::Running => break,
                sealpod_kube::Phase::Failed => {
                    tracing::warn!(pod = %pod_id, reason = %view.message, "the cluster could not start the pod");
                    let _ = self.block(cluster.delete(&pod_id));
                    let _ = self.store.remove(&pod_id);
                    return Err(Error::new(ErrorCode::Internal, format!("starting the pod failed: {}", view.message)));
                }
                sealpod_kube::Phase::Starting if started.elapsed() > CLUSTER_START_WAIT => {
                    tracing::info!(pod = %pod_id, "answering before the pod runs: {}", view.message);
                    break;
                }
                sealpod_kube::Phase::Starting => std::thread::sleep(Duration::from_millis(100)),
            }
        }
        tracing::info!(pod = %pod_id, owner = %peer, namespace = %sealpod_kube::mapping::namespace_of(&pod_id), "provisioned pod in the cluster");
        self.cluster_status(&record)
    }

    /// The wire status of a pod in the cluster.
    fn cluster_status(&self, record: &PodRecord) -> Result<PodStatus, Error> {
        let cluster = self.cluster().expect("connected");
        let view = self.block(cluster.view(&record.pod_id)).map_err(kube_error)?;
        let mut s = status(record, &state_of(&record.pod_id, &view));
        s.replicas = view.replicas;
        s.replicas_running = view.replicas_ready;
        Ok(s)
    }

    /// Pod control for pods in the cluster.
    pub(crate) fn cluster_control(&self, peer: PeerId, op: Op) -> Result<ControlResult, Error> {
        let cluster = self.cluster().expect("connected");
        match op {
            Op::Status(s) => {
                let record = self.owned(&peer, &s.pod_id)?;
                Ok(ControlResult::Status(self.cluster_status(&record)?))
            }
            Op::List(_) => {
                let pods = self.records_of(&peer)?.into_iter().filter_map(|r| self.cluster_status(&r).ok()).collect();
                Ok(ControlResult::List(PodList { pods }))
            }
            Op::Logs(l) => {
                let record = self.owned(&peer, &l.pod_id)?;
                let view = self.block(cluster.view(&record.pod_id)).map_err(kube_error)?;
                let container = if l.container.is_empty() {
                    view.containers.first().map(|c| c.name.clone()).unwrap_or_default()
                } else {
                    l.container.clone()
                };
                if !view.containers.iter().any(|c| c.name == container) {
                    return Err(Error {
                        code: ErrorCode::NotFound as i32,
                        message: format!("pod {} has no container {container:?}", record.pod_id),
                        field: "container".into(),
                    });
                }
                let max = l.max_bytes.clamp(1, sealpod_proto::limits::LOG_CHUNK) as usize;
                let slice = self.block(cluster.log(&record.pod_id, &container, l.offset, max)).map_err(kube_error)?;
                // A Deployment's containers restart, so its log never ends
                // while the pod exists.
                Ok(ControlResult::Logs(LogChunk {
                    data: slice.data,
                    offset: slice.offset,
                    next_offset: slice.next_offset,
                    finished: false,
                }))
            }
            Op::Exec(x) => {
                let record = self.owned(&peer, &x.pod_id)?;
                if x.argv.is_empty() || x.argv.len() > 4096 || x.argv.iter().any(|a| a.contains('\0')) {
                    return Err(Error {
                        code: ErrorCode::InvalidRequest as i32,
                        message: "the command must be 1 to 4096 arguments without NUL bytes".into(),
                        field: "argv".into(),
                    });
                }
                let container = if x.container.is_empty() {
                    let view = self.block(cluster.view(&record.pod_id)).map_err(kube_error)?;
                    view.containers.first().map(|c| c.name.clone()).unwrap_or_default()
                } else {
                    x.container.clone()
                };
                self.exec_allowed(&record, &x.argv)?;
                let exec_id = self
                    .block(cluster.exec(&record.pod_id, &container, x.argv))
                    .map_err(|e| Error { field: "container".into(), ..kube_error(e) })?;
                tracing::info!(pod = %record.pod_id, %exec_id, "exec started in the cluster");
                Ok(ControlResult::ExecStarted(sealpod_proto::ExecStarted { exec_id }))
            }
            Op::ExecOutput(o) => {
                let record = self.owned(&peer, &o.pod_id)?;
                let max = o.max_bytes.clamp(1, sealpod_proto::limits::LOG_CHUNK) as usize;
                let (slice, exit) = cluster
                    .exec_output(&record.pod_id, &o.exec_id, o.offset, max)
                    .map_err(|e| Error { field: "exec_id".into(), ..kube_error(e) })?;
                let finished = exit.is_some() && slice.data.len() < max;
                Ok(ControlResult::ExecOutput(sealpod_proto::ExecOutput {
                    data: slice.data,
                    offset: slice.offset,
                    next_offset: slice.next_offset,
                    finished,
                    exit_code: if finished { exit.unwrap_or(0) } else { 0 },
                }))
            }
            Op::Delete(d) => {
                let record = self.owned(&peer, &d.pod_id)?;
                let last = self.cluster_status(&record).ok();
                self.block(cluster.delete(&record.pod_id)).map_err(kube_error)?;
                self.store.remove(&record.pod_id).map_err(internal)?;
                tracing::info!(pod = %record.pod_id, "deleted pod from the cluster");
                let mut s = last.unwrap_or_default();
                s.pod_id = record.pod_id.clone();
                s.name = record.name.clone();
                s.phase = PodPhase::Deleted as i32;
                s.addresses.clear();
                Ok(ControlResult::Deleted(s))
            }
            Op::Pay(_) => Err(Error::new(ErrorCode::Unavailable, "this provider takes no payment for cluster pods")),
            Op::Update(_) => Err(Error::new(
                ErrorCode::Unavailable,
                "updating a pod in place is not supported on the Kubernetes backend yet; delete and deploy again",
            )),
        }
    }
}
