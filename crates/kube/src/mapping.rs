//! The wire pod as cluster objects (the table in `docs/kubernetes.md`).
//!
//! Pure: no cluster is needed to build or test the mapping. One pod becomes
//! a namespace of its own holding one Deployment (all containers in one pod
//! template, so they share localhost as on the embedded runtime), a NodePort
//! Service for the exposed ports, a NetworkPolicy, and the Secrets and
//! PersistentVolumeClaims its volumes need.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, HostAlias, KeyToPath, Namespace,
    PersistentVolumeClaim, PersistentVolumeClaimSpec, PersistentVolumeClaimVolumeSource, PodSpec, PodTemplateSpec,
    ResourceRequirements, SeccompProfile, Secret, SecretVolumeSource, SecurityContext, Service, ServicePort,
    ServiceSpec, Volume, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::ByteString;
use sealpod_proto::{volume, Pod, Protocol, RestartPolicy};

/// The label every object of a sealpod pod carries: the pod id.
pub const POD_LABEL: &str = "sealpod.dev/pod";
/// The label naming the provider (its peer id) that made an object, so that
/// providers sharing a cluster leave each other's pods alone.
pub const PROVIDER_LABEL: &str = "sealpod.dev/provider";
/// The label that marks what sealpod manages.
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Its value.
pub const MANAGER: &str = "sealpod";
/// The namespace annotation holding the provider's record of the pod (JSON),
/// from which a provider re-attaches after losing its own state.
pub const RECORD_ANNOTATION: &str = "sealpod.dev/record";
/// The name of the pod's Deployment and Service in its namespace.
pub const WORKLOAD: &str = "pod";
/// The NodePort range of a default API server.
pub const NODE_PORTS: std::ops::RangeInclusive<u32> = 30000..=32767;

/// The namespace of a pod.
pub fn namespace_of(pod_id: &str) -> String {
    format!("sealpod-{pod_id}")
}

/// What egress a pod's payload manifest grants, as far as a NetworkPolicy
/// can say it (by address, not by URL).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Egress {
    /// No outbound connection at all (the default).
    None,
    /// Any public address, and DNS; never private ranges (the cluster,
    /// the nodes, cloud metadata).
    Public,
}

/// The operator's choices that shape every pod.
#[derive(Debug, Clone, Default)]
pub struct MapOptions {
    /// `runtimeClassName` of every pod (e.g. `kata-qemu-tdx`).
    pub runtime_class: Option<String>,
    /// The StorageClass persistent volumes are claimed from; without one,
    /// pods with persistent volumes are refused.
    pub storage_class: Option<String>,
    /// Whether secret volumes may become Kubernetes Secrets (stored in etcd,
    /// readable by the cluster's administrators).
    pub allow_secrets: bool,
    /// Seconds a container gets between SIGTERM and SIGKILL.
    pub grace_seconds: i64,
    /// The value of [`PROVIDER_LABEL`] (a label value: at most 63
    /// characters of letters, digits, `-`, `_` and `.`).
    pub provider: String,
}

/// One pod to map.
pub struct Plan<'a> {
    /// The provider's pod id (`p` and 16 hex digits).
    pub pod_id: &'a str,
    /// The wire pod.
    pub pod: &'a Pod,
    /// For each container, the image reference the nodes pull (by digest).
    pub images: Vec<String>,
    /// How many copies of the pod run.
    pub replicas: u32,
    /// Its outbound access.
    pub egress: Egress,
}

/// A port the Service exposes, in the order of the Service's ports.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ExposedPort {
    /// The Service port's name (`p0`, `p1`, …).
    pub name: String,
    /// The container that listens.
    pub container: String,
    /// The port it listens on.
    pub container_port: u16,
    /// TCP or UDP.
    pub udp: bool,
}

/// The objects of one pod, in the order they are created.
#[derive(Debug, Clone)]
pub struct Objects {
    pub namespace: Namespace,
    pub secrets: Vec<Secret>,
    pub claims: Vec<PersistentVolumeClaim>,
    pub network_policy: NetworkPolicy,
    pub deployment: Deployment,
    /// Absent when no port is exposed.
    pub service: Option<Service>,
    /// The Service's ports.
    pub exposed: Vec<ExposedPort>,
}

/// Why a pod cannot be mapped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct MapError {
    /// The wire field at fault.
    pub field: String,
    pub message: String,
}

fn refuse(field: impl Into<String>, message: impl Into<String>) -> MapError {
    MapError { field: field.into(), message: message.into() }
}

/// Whether `name` is an RFC 1123 label (what Kubernetes names containers by).
pub fn is_dns_label(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

fn selector(pod_id: &str) -> BTreeMap<String, String> {
    BTreeMap::from([(POD_LABEL.to_owned(), pod_id.to_owned())])
}

fn labels(pod_id: &str, options: &MapOptions) -> BTreeMap<String, String> {
    let mut l = selector(pod_id);
    l.insert(MANAGED_BY.to_owned(), MANAGER.to_owned());
    if !options.provider.is_empty() {
        l.insert(PROVIDER_LABEL.to_owned(), options.provider.clone());
    }
    l
}

fn meta(name: &str, namespace: &str, pod_id: &str, options: &MapOptions) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: Some(namespace.to_owned()),
        labels: Some(labels(pod_id, options)),
        ..Default::default()
    }
}

/// Maps a pod; see the module's documentation.
pub fn map(plan: &Plan<'_>, options: &MapOptions) -> Result<Objects, MapError> {
    let pod = plan.pod;
    let ns = namespace_of(plan.pod_id);
    if pod.containers.is_empty() {
        return Err(refuse("pod.containers", "the pod has no containers"));
    }
    if plan.images.len() != pod.containers.len() {
        return Err(refuse("pod.containers", "an image is missing for a container"));
    }
    if pod.restart_policy == RestartPolicy::Never as i32 {
        return Err(refuse(
            "pod.restart_policy",
            "the Kubernetes backend runs pods as Deployments, which restart every container that exits; \
             RESTART_POLICY_NEVER cannot be kept",
        ));
    }
    let (volumes, secrets, claims) = volumes(plan, options, &ns)?;
    let mut containers = Vec::with_capacity(pod.containers.len());
    let mut exposed = Vec::new();
    let mut service_ports = Vec::new();
    let mut open_ports = Vec::new();
    for (i, c) in pod.containers.iter().enumerate() {
        let field = |f: &str| format!("pod.containers[{i}].{f}");
        if !is_dns_label(&c.name) {
            return Err(refuse(
                field("name"),
                format!(
                    "container name {:?} is not a DNS label (lowercase letters, digits and '-', at most 63)",
                    c.name
                ),
            ));
        }
        let mut ports = Vec::new();
        for (j, p) in c.ports.iter().enumerate() {
            let target = u16::try_from(p.target_port)
                .ok()
                .filter(|t| *t > 0)
                .ok_or_else(|| refuse(field(&format!("ports[{j}].target_port")), "a port is 1 to 65535"))?;
            let udp = p.protocol == Protocol::Udp as i32;
            let protocol = if udp { "UDP" } else { "TCP" };
            ports.push(ContainerPort {
                container_port: i32::from(target),
                protocol: Some(protocol.into()),
                ..Default::default()
            });
            if !p.http_host.is_empty() {
                return Err(refuse(
                    field(&format!("ports[{j}].http_host")),
                    "the Kubernetes backend has no HTTP entry point yet; expose the port instead",
                ));
            }
            if p.pod_only {
                continue;
            }
            let name = format!("p{}", exposed.len());
            let node_port = NODE_PORTS.contains(&p.port).then_some(p.port as i32);
            service_ports.push(ServicePort {
                name: Some(name.clone()),
                port: i32::from(target),
                target_port: Some(IntOrString::Int(i32::from(target))),
                node_port,
                protocol: Some(protocol.into()),
                ..Default::default()
            });
            open_ports.push(NetworkPolicyPort {
                port: Some(IntOrString::Int(i32::from(target))),
                protocol: Some(protocol.into()),
                ..Default::default()
            });
            exposed.push(ExposedPort { name, container: c.name.clone(), container_port: target, udp });
        }
        let mounts = c
            .volume_mounts
            .iter()
            .enumerate()
            .map(|(j, m)| {
                let index = pod.volumes.iter().position(|v| v.name == m.name).ok_or_else(|| {
                    refuse(field(&format!("volume_mounts[{j}].name")), format!("no volume {:?}", m.name))
                })?;
                let secret = matches!(pod.volumes[index].kind, Some(volume::Kind::Secret(_)));
                Ok(VolumeMount {
                    name: format!("v{index}"),
                    mount_path: m.mount_path.clone(),
                    read_only: Some(m.read_only || secret),
                    ..Default::default()
                })
            })
            .collect::<Result<Vec<_>, MapError>>()?;
        containers.push(Container {
            name: c.name.clone(),
            image: Some(plan.images[i].clone()),
            image_pull_policy: Some("IfNotPresent".into()),
            command: (!c.command.is_empty()).then(|| c.command.clone()),
            args: (!c.args.is_empty()).then(|| c.args.clone()),
            working_dir: (!c.working_dir.is_empty()).then(|| c.working_dir.clone()),
            env: (!c.env.is_empty()).then(|| {
                c.env
                    .iter()
                    .map(|e| EnvVar { name: e.name.clone(), value: Some(e.value.clone()), ..Default::default() })
                    .collect()
            }),
            ports: (!ports.is_empty()).then_some(ports),
            volume_mounts: (!mounts.is_empty()).then_some(mounts),
            resources: Some(resources(c.resources.as_ref())),
            security_context: Some(SecurityContext {
                allow_privilege_escalation: Some(false),
                privileged: Some(false),
                capabilities: Some(Capabilities { drop: Some(vec!["NET_RAW".into()]), add: None }),
                seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".into(), localhost_profile: None }),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    let selector = selector(plan.pod_id);
    let template = PodTemplateSpec {
        metadata: Some(ObjectMeta { labels: Some(labels(plan.pod_id, options)), ..Default::default() }),
        spec: Some(PodSpec {
            containers,
            volumes: (!volumes.is_empty()).then_some(volumes),
            runtime_class_name: options.runtime_class.clone(),
            automount_service_account_token: Some(false),
            enable_service_links: Some(false),
            termination_grace_period_seconds: Some(options.grace_seconds),
            // Containers reach each other by name, as Apocryph's do.
            host_aliases: Some(vec![HostAlias {
                ip: "127.0.0.1".into(),
                hostnames: Some(pod.containers.iter().map(|c| c.name.clone()).collect()),
            }]),
            restart_policy: Some("Always".into()),
            ..Default::default()
        }),
    };
    let deployment = Deployment {
        metadata: meta(WORKLOAD, &ns, plan.pod_id, options),
        spec: Some(DeploymentSpec {
            replicas: Some(plan.replicas.max(1) as i32),
            selector: LabelSelector { match_labels: Some(selector.clone()), ..Default::default() },
            // Never two generations side by side: the pod's resources are
            // reserved once.
            strategy: Some(DeploymentStrategy { type_: Some("Recreate".into()), rolling_update: None }),
            template,
            ..Default::default()
        }),
        ..Default::default()
    };
    let service = (!service_ports.is_empty()).then(|| Service {
        metadata: meta(WORKLOAD, &ns, plan.pod_id, options),
        spec: Some(ServiceSpec {
            type_: Some("NodePort".into()),
            selector: Some(selector.clone()),
            ports: Some(service_ports),
            ..Default::default()
        }),
        ..Default::default()
    });
    let namespace = Namespace {
        metadata: ObjectMeta {
            name: Some(ns.clone()),
            labels: Some(labels(plan.pod_id, options)),
            ..Default::default()
        },
        ..Default::default()
    };
    Ok(Objects {
        namespace,
        secrets,
        claims,
        network_policy: network_policy(plan, options, &ns, open_ports),
        deployment,
        service,
        exposed,
    })
}

fn quantity(n: u64) -> Quantity {
    Quantity(n.to_string())
}

/// Requests equal limits: what is sold is reserved (Guaranteed QoS).
fn resources(r: Option<&sealpod_proto::Resources>) -> ResourceRequirements {
    let mut amounts = BTreeMap::new();
    if let Some(r) = r {
        if r.cpu_millicores > 0 {
            amounts.insert("cpu".to_owned(), Quantity(format!("{}m", r.cpu_millicores)));
        }
        if r.memory_bytes > 0 {
            amounts.insert("memory".to_owned(), quantity(r.memory_bytes));
        }
        if r.ephemeral_storage_bytes > 0 {
            amounts.insert("ephemeral-storage".to_owned(), quantity(r.ephemeral_storage_bytes));
        }
    }
    let mut limits = amounts.clone();
    if let Some(r) = r.filter(|r| r.gpus > 0) {
        // Extended resources are limits only.
        limits.insert("nvidia.com/gpu".to_owned(), quantity(u64::from(r.gpus)));
    }
    ResourceRequirements {
        requests: (!amounts.is_empty()).then_some(amounts),
        limits: (!limits.is_empty()).then_some(limits),
        ..Default::default()
    }
}

type Volumes = (Vec<Volume>, Vec<Secret>, Vec<PersistentVolumeClaim>);

fn volumes(plan: &Plan<'_>, options: &MapOptions, ns: &str) -> Result<Volumes, MapError> {
    let (mut volumes, mut secrets, mut claims) = (Vec::new(), Vec::new(), Vec::new());
    for (i, v) in plan.pod.volumes.iter().enumerate() {
        let field = format!("pod.volumes[{i}]");
        let name = format!("v{i}");
        let mut volume = Volume { name: name.clone(), ..Default::default() };
        match &v.kind {
            Some(volume::Kind::EmptyDir(e)) => {
                volume.empty_dir = Some(EmptyDirVolumeSource {
                    medium: e.memory.then(|| "Memory".into()),
                    size_limit: (e.size_limit_bytes > 0).then(|| quantity(e.size_limit_bytes)),
                });
            }
            Some(volume::Kind::Persistent(p)) => {
                let Some(class) = &options.storage_class else {
                    return Err(refuse(
                        field,
                        "this provider's cluster has no storage class for persistent volumes (--k8s-storage-class)",
                    ));
                };
                if p.size_bytes == 0 {
                    return Err(refuse(field, "a persistent volume needs a size"));
                }
                claims.push(PersistentVolumeClaim {
                    metadata: meta(&name, ns, plan.pod_id, options),
                    spec: Some(PersistentVolumeClaimSpec {
                        access_modes: Some(vec!["ReadWriteOnce".into()]),
                        storage_class_name: Some(class.clone()),
                        resources: Some(VolumeResourceRequirements {
                            requests: Some(BTreeMap::from([("storage".to_owned(), quantity(p.size_bytes))])),
                            limits: None,
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                });
                volume.persistent_volume_claim =
                    Some(PersistentVolumeClaimVolumeSource { claim_name: name.clone(), read_only: None });
            }
            Some(volume::Kind::Secret(s)) => {
                if !options.allow_secrets {
                    return Err(refuse(
                        field,
                        "this provider keeps no secrets in its cluster: a Kubernetes Secret is stored in etcd and \
                         readable by the cluster's administrators (the operator allows it with --k8s-allow-secrets)",
                    ));
                }
                let file = if s.file_name.is_empty() { v.name.clone() } else { s.file_name.clone() };
                secrets.push(Secret {
                    metadata: meta(&name, ns, plan.pod_id, options),
                    data: Some(BTreeMap::from([(file.clone(), ByteString(s.contents.clone()))])),
                    type_: Some("Opaque".into()),
                    ..Default::default()
                });
                volume.secret = Some(SecretVolumeSource {
                    secret_name: Some(name.clone()),
                    items: Some(vec![KeyToPath { key: file.clone(), path: file, mode: Some(0o400) }]),
                    default_mode: Some(0o400),
                    optional: Some(false),
                });
            }
            None => return Err(refuse(field, format!("volume {:?} has no kind", v.name))),
        }
        volumes.push(volume);
    }
    Ok((volumes, secrets, claims))
}

/// Inbound: the pod's own copies, and anyone on the exposed ports. Outbound:
/// nothing, or public addresses and DNS.
fn network_policy(
    plan: &Plan<'_>,
    options: &MapOptions,
    ns: &str,
    open_ports: Vec<NetworkPolicyPort>,
) -> NetworkPolicy {
    let mut ingress = vec![NetworkPolicyIngressRule {
        from: Some(vec![NetworkPolicyPeer { pod_selector: Some(LabelSelector::default()), ..Default::default() }]),
        ports: None,
    }];
    if !open_ports.is_empty() {
        ingress.push(NetworkPolicyIngressRule { from: None, ports: Some(open_ports) });
    }
    let egress = match plan.egress {
        Egress::None => Vec::new(),
        Egress::Public => {
            let private =
                ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16", "100.64.0.0/10", "127.0.0.0/8"];
            let dns = ["UDP", "TCP"].map(|p| NetworkPolicyPort {
                port: Some(IntOrString::Int(53)),
                protocol: Some(p.into()),
                ..Default::default()
            });
            vec![
                NetworkPolicyEgressRule {
                    to: Some(vec![NetworkPolicyPeer {
                        ip_block: Some(IPBlock {
                            cidr: "0.0.0.0/0".into(),
                            except: Some(private.iter().map(|s| (*s).to_owned()).collect()),
                        }),
                        ..Default::default()
                    }]),
                    ports: None,
                },
                NetworkPolicyEgressRule { to: None, ports: Some(dns.to_vec()) },
            ]
        }
    };
    NetworkPolicy {
        metadata: meta(WORKLOAD, ns, plan.pod_id, options),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector::default()),
            policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
            ingress: Some(ingress),
            egress: Some(egress),
        }),
    }
}

#[cfg(test)]
mod tests;
