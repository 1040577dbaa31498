//! A Kubernetes cluster as a provider's backend.
//!
//! The provider admits a pod as always (ownership, payment, payload manifest,
//! capacity); with this backend it then hands the pod to a cluster instead
//! of running it itself: [`mapping`] turns the wire pod into objects (a
//! namespace per pod, one Deployment with every container in one pod
//! template, a NodePort Service, a NetworkPolicy, Secrets and claims), and
//! [`Cluster`] creates them through the API server, reads back the pod's
//! state, NodePorts, logs and exec output, finds the pods again after a
//! provider restart (the provider's record is an annotation on the
//! namespace), reports capacity from the nodes' allocatable resources, and
//! deletes a pod by deleting its namespace.
//!
//! What it leaves to others: admission, images (the provider resolves and
//! verifies them and serves them to the nodes from its own registry), the
//! wire protocol, and the cluster itself: enforcing NetworkPolicies takes a
//! CNI plugin that does, confidential pods a RuntimeClass the CoCo operator
//! installs. The mapping and its limits are in `docs/kubernetes.md`.
//!
//! Transport: `kube` with rustls over ring, no OpenSSL; exec over
//! WebSocket.

pub mod cluster;
pub mod exec;
pub mod mapping;
pub mod quantity;
pub mod state;

pub use cluster::{Binding, Capacity, Cluster, ClusterOptions, FoundPod};
pub use exec::Slice;
pub use mapping::{map, Egress, ExposedPort, MapError, MapOptions, Objects, Plan};
pub use state::{ContainerRun, ContainerView, Phase, PodView};

/// What went wrong talking to the cluster.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    /// The kubeconfig could not be read or used.
    #[error("kubeconfig: {0}")]
    Config(String),
    /// The API server refused or failed a request.
    #[error("Kubernetes API: {0}")]
    Api(#[from] kube::Error),
    /// Reading a log or an exec's output failed.
    #[error("Kubernetes API stream: {0}")]
    Io(#[from] std::io::Error),
    /// The API server did not answer in time.
    #[error("the Kubernetes API server did not {0} in time")]
    Timeout(&'static str),
    /// No such pod in the cluster.
    #[error("no such pod in the cluster: {0}")]
    NotFound(String),
    /// The container is not running, so nothing can run in it.
    #[error("{0}")]
    NotRunning(String),
    /// Too much is going on.
    #[error("busy: {0}")]
    Busy(String),
    /// No node has an address publishers could reach NodePorts at.
    #[error("no Ready node has an ExternalIP or InternalIP; set --k8s-node-address")]
    NoNodeAddress,
}
