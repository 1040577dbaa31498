//! Pods on the provider: real containers, isolated from each other and from
//! the host.
//!
//! A pod is a set of containers sharing one network namespace that holds
//! nothing but a loopback interface: the pod can reach its own ports and
//! nothing else. Each container runs through youki's `libcontainer` (embedded,
//! no external runtime needed) with its own mount, PID, IPC, UTS and cgroup
//! namespaces, an overlay root filesystem over the unpacked image, and cgroup
//! limits from its requested resources.
//!
//! Every pod is owned by a shim process ([`shim`]) that outlives the provider,
//! so running pods survive a provider restart; [`Runtime`] is the provider's
//! handle on those shims: create, inspect, read logs, delete.
//!
//! This crate does not fetch, verify or decrypt images (the provider hands it
//! an unpacked root filesystem per image) and does not decide who may do what
//! with a pod (the provider does). It follows the OCI runtime specification for
//! the container configuration.

pub mod cgroup;
pub mod devices;
pub mod egress;
pub mod logs;
pub mod netns;
mod pod;
pub mod scale;
pub mod seccomp;
pub mod secrets;
pub mod shim;
pub mod spec;
pub mod status;
pub mod storage;
mod udp;
pub mod userns;

pub use devices::DeviceAccess;
pub use egress::{AllowedUrl, EgressPolicy};
pub use pod::Runtime;
pub use secrets::Secret;
pub use spec::{
    ContainerSpec, HostSocket, Limits, MountSpec, PodSpec, PortForward, RestartPolicy, VolumeKind, VolumeSpec,
};
pub use status::{ContainerState, DenialRecord, Phase, PodState, RunState};

/// What went wrong in the runtime.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// A file or system call failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// A state file could not be read or written as JSON.
    #[error("pod state file: {0}")]
    Json(#[from] serde_json::Error),
    /// The pod's namespaces, mounts or volumes could not be set up.
    #[error("pod setup: {0}")]
    Setup(String),
    /// libcontainer refused or failed.
    #[error("container: {0}")]
    Container(String),
    /// No pod with this id.
    #[error("no such pod: {0}")]
    NotFound(String),
    /// The shim did not report in time.
    #[error("the pod's shim did not {0} in time")]
    Timeout(&'static str),
    /// Some of a pod could not be removed; the rest was.
    #[error("teardown left something behind: {0}")]
    Teardown(String),
}
