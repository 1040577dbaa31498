//! The cluster side: creating a pod's objects, reading back its state, its
//! NodePorts and the cluster's capacity, and removing it.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Event, Namespace, Node, PersistentVolumeClaim, Pod as KubePod, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, PropagationPolicy};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::Client;

use crate::mapping::{
    namespace_of, ExposedPort, MapOptions, Objects, MANAGED_BY, MANAGER, POD_LABEL, PROVIDER_LABEL, RECORD_ANNOTATION,
    WORKLOAD,
};
use crate::state::PodView;
use crate::KubeError;

/// How the provider reaches its cluster and what it asks of it.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// The kubeconfig file (its current context is used unless `context`).
    pub kubeconfig: PathBuf,
    pub context: Option<String>,
    /// The address publishers reach NodePorts at; without it, a Ready
    /// node's ExternalIP, else its InternalIP.
    pub node_address: Option<IpAddr>,
    /// How pods become objects.
    pub map: MapOptions,
    /// Longest one API call may take.
    pub timeout: Duration,
}

/// An exposed port and the NodePort the cluster gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    pub port: ExposedPort,
    pub node_port: u16,
}

/// What the cluster can still take, from its nodes' allocatable resources.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Capacity {
    /// Ready, schedulable nodes.
    pub nodes: u32,
    pub allocatable_cpu_millicores: u64,
    pub allocatable_memory_bytes: u64,
    /// Requested by pods that sealpod did not make (sealpod's own are
    /// counted by the provider from its records, so none is counted twice
    /// while the scheduler catches up).
    pub others_cpu_millicores: u64,
    pub others_memory_bytes: u64,
}

/// A sealpod pod found in the cluster.
#[derive(Debug, Clone)]
pub struct FoundPod {
    pub pod_id: String,
    /// The provider's record, from the namespace's annotation.
    pub record: Option<String>,
    /// Whether the namespace is being deleted.
    pub terminating: bool,
}

/// A connected cluster.
#[derive(Clone)]
pub struct Cluster {
    pub(crate) client: Client,
    pub(crate) options: ClusterOptions,
    pub(crate) execs: std::sync::Arc<crate::exec::Sessions>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster").field("kubeconfig", &self.options.kubeconfig).finish()
    }
}

impl Cluster {
    /// Reads the kubeconfig and checks that the API server answers.
    pub async fn connect(options: ClusterOptions) -> Result<Cluster, KubeError> {
        // Fails only when a provider is installed already, which is as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let kubeconfig = Kubeconfig::read_from(&options.kubeconfig)
            .map_err(|e| KubeError::Config(format!("{}: {e}", options.kubeconfig.display())))?;
        let kc_options = KubeConfigOptions { context: options.context.clone(), ..Default::default() };
        let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &kc_options)
            .await
            .map_err(|e| KubeError::Config(format!("{}: {e}", options.kubeconfig.display())))?;
        config.connect_timeout = Some(options.timeout);
        config.read_timeout = Some(options.timeout);
        config.write_timeout = Some(options.timeout);
        let client = Client::try_from(config).map_err(|e| KubeError::Config(e.to_string()))?;
        let version = tokio::time::timeout(options.timeout, client.apiserver_version())
            .await
            .map_err(|_| KubeError::Timeout("reach the API server"))??;
        tracing::info!(version = %version.git_version, "connected to the Kubernetes API server");
        Ok(Cluster { client, options, execs: Default::default() })
    }

    pub(crate) fn api<K>(&self, pod_id: &str) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &namespace_of(pod_id))
    }

    /// Creates a pod's objects, namespace first; on failure removes what
    /// was made. Returns the NodePorts its exposed ports got.
    pub async fn create(&self, pod_id: &str, objects: &Objects) -> Result<Vec<Binding>, KubeError> {
        let pp = PostParams::default();
        Api::<Namespace>::all(self.client.clone()).create(&pp, &objects.namespace).await?;
        let made = async {
            for s in &objects.secrets {
                self.api::<Secret>(pod_id).create(&pp, s).await?;
            }
            for c in &objects.claims {
                self.api::<PersistentVolumeClaim>(pod_id).create(&pp, c).await?;
            }
            self.api::<NetworkPolicy>(pod_id).create(&pp, &objects.network_policy).await?;
            let service = match &objects.service {
                Some(s) => Some(self.api::<Service>(pod_id).create(&pp, s).await?),
                None => None,
            };
            self.api::<Deployment>(pod_id).create(&pp, &objects.deployment).await?;
            Ok::<_, KubeError>(bindings(service.as_ref(), &objects.exposed))
        }
        .await;
        if made.is_err() {
            if let Err(e) = self.delete(pod_id).await {
                tracing::error!(pod = %pod_id, error = %e, "could not remove a half-made pod");
            }
        }
        made
    }

    /// Stores the provider's record of the pod on its namespace.
    pub async fn annotate(&self, pod_id: &str, record: &str) -> Result<(), KubeError> {
        let patch = serde_json::json!({"metadata": {"annotations": {RECORD_ANNOTATION: record}}});
        Api::<Namespace>::all(self.client.clone())
            .patch(&namespace_of(pod_id), &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        Ok(())
    }

    /// The NodePorts of a pod's exposed ports.
    pub async fn bindings(&self, pod_id: &str, exposed: &[ExposedPort]) -> Result<Vec<Binding>, KubeError> {
        let service = self.api::<Service>(pod_id).get_opt(WORKLOAD).await?;
        Ok(bindings(service.as_ref(), exposed))
    }

    /// Where publishers reach NodePorts.
    pub async fn node_address(&self) -> Result<IpAddr, KubeError> {
        if let Some(a) = self.options.node_address {
            return Ok(a);
        }
        let nodes = Api::<Node>::all(self.client.clone()).list(&ListParams::default()).await?;
        let mut best: Option<(u8, IpAddr)> = None;
        for n in nodes.items.iter().filter(|n| node_ready(n)) {
            for a in n.status.as_ref().and_then(|s| s.addresses.as_ref()).into_iter().flatten() {
                let rank = match a.type_.as_str() {
                    "ExternalIP" => 0,
                    "InternalIP" => 1,
                    _ => continue,
                };
                if let Ok(ip) = a.address.parse::<IpAddr>() {
                    if best.is_none_or(|(r, _)| rank < r) {
                        best = Some((rank, ip));
                    }
                }
            }
        }
        best.map(|(_, ip)| ip).ok_or(KubeError::NoNodeAddress)
    }

    /// The pod's Deployment and its pods, as a view the provider reports.
    pub async fn view(&self, pod_id: &str) -> Result<PodView, KubeError> {
        let deployment = self
            .api::<Deployment>(pod_id)
            .get_opt(WORKLOAD)
            .await?
            .ok_or_else(|| KubeError::NotFound(pod_id.to_owned()))?;
        let pods = self.pods_of(pod_id).await?;
        let mut view = crate::state::view(&deployment, &pods);
        if view.phase == crate::state::Phase::Starting && view.message.is_empty() {
            if let Some(name) = &view.pod_name {
                // A pod stuck before its containers exist (no sandbox, no
                // volume) says why only in its events.
                view.message = self.last_warning(pod_id, name).await.unwrap_or_default();
            }
        }
        Ok(view)
    }

    /// The newest Warning event of a cluster pod, bounded.
    async fn last_warning(&self, pod_id: &str, name: &str) -> Option<String> {
        let lp = ListParams::default().fields(&format!("involvedObject.name={name},type=Warning"));
        let events = self.api::<Event>(pod_id).list(&lp).await.ok()?;
        let e = events.items.into_iter().max_by_key(|e| e.last_timestamp.as_ref().map(|t| t.0))?;
        let text = format!("{}: {}", e.reason.unwrap_or_default(), e.message.unwrap_or_default());
        Some(text.chars().take(512).collect())
    }

    pub(crate) async fn pods_of(&self, pod_id: &str) -> Result<Vec<KubePod>, KubeError> {
        let lp = ListParams::default().labels(&format!("{POD_LABEL}={pod_id}"));
        Ok(self.api::<KubePod>(pod_id).list(&lp).await?.items)
    }

    /// Deletes the pod's namespace and so everything in it. The cluster
    /// finishes in the background (containers get their grace period).
    pub async fn delete(&self, pod_id: &str) -> Result<(), KubeError> {
        let dp = DeleteParams { propagation_policy: Some(PropagationPolicy::Background), ..Default::default() };
        match Api::<Namespace>::all(self.client.clone()).delete(&namespace_of(pod_id), &dp).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Whether the pod's namespace still exists (a deleted one lingers
    /// while its containers stop).
    pub async fn exists(&self, pod_id: &str) -> Result<bool, KubeError> {
        Ok(Api::<Namespace>::all(self.client.clone()).get_opt(&namespace_of(pod_id)).await?.is_some())
    }

    /// The sealpod pods in the cluster, with the records stored on them.
    pub async fn found(&self) -> Result<Vec<FoundPod>, KubeError> {
        let lp = ListParams::default().labels(&self.ours());
        let namespaces = Api::<Namespace>::all(self.client.clone()).list(&lp).await?;
        Ok(namespaces
            .items
            .into_iter()
            .filter_map(|ns| {
                let pod_id = ns.metadata.labels.as_ref()?.get(POD_LABEL)?.clone();
                let record = ns.metadata.annotations.as_ref().and_then(|a| a.get(RECORD_ANNOTATION)).cloned();
                let terminating = ns.metadata.deletion_timestamp.is_some();
                Some(FoundPod { pod_id, record, terminating })
            })
            .collect())
    }

    /// The cluster's allocatable resources and what others' pods request.
    pub async fn capacity(&self) -> Result<Capacity, KubeError> {
        let nodes = Api::<Node>::all(self.client.clone()).list(&ListParams::default()).await?;
        let mut c = Capacity::default();
        let mut usable = Vec::new();
        for n in nodes.items.iter().filter(|n| node_ready(n)) {
            let Some(alloc) = n.status.as_ref().and_then(|s| s.allocatable.as_ref()) else { continue };
            c.nodes += 1;
            c.allocatable_cpu_millicores += alloc.get("cpu").and_then(|q| crate::quantity::millis(&q.0)).unwrap_or(0);
            c.allocatable_memory_bytes += alloc.get("memory").and_then(|q| crate::quantity::units(&q.0)).unwrap_or(0);
            usable.extend(n.metadata.name.clone());
        }
        let pods = Api::<KubePod>::all(self.client.clone())
            .list(&ListParams::default().fields("status.phase!=Succeeded,status.phase!=Failed"))
            .await?;
        for p in &pods.items {
            let ours = p.metadata.labels.as_ref().is_some_and(|l| {
                l.get(MANAGED_BY).is_some_and(|v| v == MANAGER)
                    && l.get(PROVIDER_LABEL).is_some_and(|v| *v == self.options.map.provider)
            });
            let spec = p.spec.as_ref();
            let on_usable = spec.and_then(|s| s.node_name.as_ref()).is_none_or(|n| usable.contains(n));
            if ours || !on_usable {
                continue;
            }
            for container in spec.map(|s| s.containers.as_slice()).unwrap_or_default() {
                let requests = container.resources.as_ref().and_then(|r| r.requests.as_ref());
                let get = |k: &str| requests.and_then(|r| r.get(k)).map(|q| q.0.clone());
                c.others_cpu_millicores += get("cpu").and_then(|q| crate::quantity::millis(&q)).unwrap_or(0);
                c.others_memory_bytes += get("memory").and_then(|q| crate::quantity::units(&q)).unwrap_or(0);
            }
        }
        Ok(c)
    }

    /// The label selector of this provider's objects.
    fn ours(&self) -> String {
        format!("{MANAGED_BY}={MANAGER},{PROVIDER_LABEL}={}", self.options.map.provider)
    }

    /// The options the cluster was connected with.
    pub fn options(&self) -> &ClusterOptions {
        &self.options
    }

    /// Ensures a RuntimeClass exists check: whether `name` is known to the
    /// cluster (confidential runtime classes come from the CoCo operator).
    pub async fn runtime_class_exists(&self, name: &str) -> Result<bool, KubeError> {
        let api: Api<k8s_openapi::api::node::v1::RuntimeClass> = Api::all(self.client.clone());
        Ok(api.get_opt(name).await?.is_some())
    }
}

fn node_ready(n: &Node) -> bool {
    let unschedulable = n.spec.as_ref().and_then(|s| s.unschedulable).unwrap_or(false);
    let ready = n
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    ready && !unschedulable
}

fn bindings(service: Option<&Service>, exposed: &[ExposedPort]) -> Vec<Binding> {
    let ports = service.and_then(|s| s.spec.as_ref()).and_then(|s| s.ports.as_ref());
    exposed
        .iter()
        .filter_map(|e| {
            let p = ports?.iter().find(|p| p.name.as_deref() == Some(e.name.as_str()))?;
            Some(Binding { port: e.clone(), node_port: u16::try_from(p.node_port?).ok()? })
        })
        .collect()
}
