//! What a pod is, as the runtime sees it, and the OCI runtime configuration
//! (`config.json`) each of its containers runs with.
//!
//! The provider resolves images and turns the wire manifest into a [`PodSpec`];
//! from here on nothing is looked up again, so the shim can rebuild everything
//! from the spec file alone after a restart.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// A pod ready to run: every image resolved and unpacked, every port bound.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PodSpec {
    /// The provider's id for the pod; also names its cgroup and directory.
    pub pod_id: String,
    /// The containers, started in order.
    pub containers: Vec<ContainerSpec>,
    /// What to do when a container's process exits.
    pub restart: RestartPolicy,
    /// The pod's volumes, by name.
    pub volumes: Vec<VolumeSpec>,
    /// Host listeners the shim forwards into the pod's network namespace.
    pub ports: Vec<PortForward>,
    /// Outbound access through the egress proxy; `None`: no way out at all.
    #[serde(default)]
    pub egress: Option<crate::egress::EgressPolicy>,
    /// The host ids the pod's user namespace maps to; claimed by
    /// [`crate::Runtime::create`]. `None` only for pods created before
    /// sealpod had user namespaces, which keep running as they were.
    #[serde(default)]
    pub user_ns: Option<crate::userns::IdRange>,
    /// Size of the pod's own filesystem, which holds its containers' writable
    /// layers and its emptyDir volumes (`ephemeral-storage`); 0: they live on
    /// the provider's filesystem (pods created before sealpod limited disk).
    #[serde(default)]
    pub storage_bytes: u64,
    /// Names the directory holding the pod's secret files on the host, so
    /// that only root (which reads this spec) can find them; set by
    /// [`crate::Runtime::create`].
    #[serde(default)]
    pub secrets_token: String,
    /// Stop the containers when no connection came through the pod's ports
    /// for a while, and start them on the next (`replicas.min == 0`).
    #[serde(default)]
    pub scale_to_zero: Option<crate::scale::ScaleToZero>,
}

/// One container of a pod.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ContainerSpec {
    /// Unique within the pod.
    pub name: String,
    /// The unpacked image, mounted read-only as the overlay's lower layer.
    pub image_rootfs: PathBuf,
    /// Digest of the image manifest, for status and payload-manifest checks.
    pub image_digest: String,
    /// The full argv.
    pub args: Vec<String>,
    /// `NAME=value` entries.
    pub env: Vec<String>,
    /// Absolute path inside the container.
    pub cwd: String,
    /// Numeric user and group the process runs as.
    pub uid: u32,
    /// See `uid`.
    pub gid: u32,
    /// Limits from the requested resources.
    pub limits: Limits,
    /// Volumes mounted into this container.
    pub mounts: Vec<MountSpec>,
    /// Host devices it was given (GPUs); none for most containers.
    #[serde(default, skip_serializing_if = "crate::devices::DeviceAccess::is_empty")]
    pub devices: crate::devices::DeviceAccess,
}

/// cgroup limits for one container.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct Limits {
    /// CPU quota in millicores; 0 for none.
    pub cpu_millicores: u64,
    /// Memory limit in bytes; 0 for none.
    pub memory_bytes: u64,
    /// Maximum number of tasks.
    pub pids: u32,
}

/// When to restart a container whose process has exited.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// On a non-zero exit status or a signal.
    OnFailure,
    /// Whenever it exits.
    Always,
    /// Never.
    Never,
}

/// A pod volume.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct VolumeSpec {
    /// Name that mounts refer to.
    pub name: String,
    /// Where its contents live.
    pub kind: VolumeKind,
}

/// The storage behind a volume.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case")]
pub enum VolumeKind {
    /// A directory on the pod's disk, deleted with the pod.
    EmptyDir,
    /// A filesystem of at most this many bytes of its own (an emptyDir with
    /// a `sizeLimit`), itself stored on the pod's disk.
    LimitedDir {
        /// Size limit.
        size_bytes: u64,
    },
    /// A filesystem of exactly this size of its own, kept outside the pod's
    /// disk so that it outlives container restarts, scaling to zero and
    /// updates; deleted with the pod (Apocryph's `type: volume`).
    Persistent {
        /// Size limit.
        size_bytes: u64,
    },
    /// A tmpfs of at most this many bytes (0: the kernel's default).
    Memory {
        /// Size limit.
        size_bytes: u64,
    },
    /// One read-only file on the pod's secret tmpfs; its bytes reach the
    /// shim through a pipe and never this spec.
    Secret {
        /// The file's name inside the volume.
        file_name: String,
    },
}

/// A volume mounted into a container.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MountSpec {
    /// The pod volume's name.
    pub volume: String,
    /// Absolute path inside the container.
    pub path: String,
    /// Mounted read-only.
    pub read_only: bool,
}

/// A host listener forwarded to a port inside the pod.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PortForward {
    /// Address the host listener is bound to.
    pub host: std::net::SocketAddr,
    /// Port inside the pod's network namespace.
    pub target_port: u16,
    /// The container that declared the port.
    pub container: String,
    /// A UDP port (datagrams relayed per client address); TCP otherwise.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub udp: bool,
}

/// The host socket behind a [`PortForward`]: a TCP listener or a UDP socket.
#[derive(Debug)]
pub enum HostSocket {
    /// Accepts the connections forwarded into the pod.
    Tcp(std::net::TcpListener),
    /// Receives the datagrams relayed into the pod.
    Udp(std::net::UdpSocket),
}

impl HostSocket {
    /// Binds `addr` with the port's protocol.
    pub fn bind(addr: std::net::SocketAddr, udp: bool) -> std::io::Result<HostSocket> {
        Ok(if udp {
            HostSocket::Udp(std::net::UdpSocket::bind(addr)?)
        } else {
            HostSocket::Tcp(std::net::TcpListener::bind(addr)?)
        })
    }

    /// The address bound.
    pub fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        match self {
            HostSocket::Tcp(l) => l.local_addr(),
            HostSocket::Udp(s) => s.local_addr(),
        }
    }

    /// Another handle to the same socket.
    pub fn try_clone(&self) -> std::io::Result<HostSocket> {
        Ok(match self {
            HostSocket::Tcp(l) => HostSocket::Tcp(l.try_clone()?),
            HostSocket::Udp(s) => HostSocket::Udp(s.try_clone()?),
        })
    }
}

impl std::os::fd::AsFd for HostSocket {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        match self {
            HostSocket::Tcp(l) => l.as_fd(),
            HostSocket::Udp(s) => s.as_fd(),
        }
    }
}

/// The per-container paths of a pod directory.
#[derive(Debug, Clone)]
pub struct ContainerPaths {
    /// OCI bundle: holds `config.json`.
    pub bundle: PathBuf,
    /// The overlay mount point the container sees as `/`.
    pub rootfs: PathBuf,
    /// The overlay's writable layer.
    pub upper: PathBuf,
    /// The overlay's work directory.
    pub work: PathBuf,
    /// Where the image is id-mapped into the pod's user namespace while the
    /// overlay is mounted over it.
    pub lower: PathBuf,
}

impl ContainerPaths {
    /// Paths of container `name` in pod directory `pod_dir`.
    pub fn new(pod_dir: &Path, name: &str) -> Self {
        let base = pod_dir.join("containers").join(name);
        let writable = disk_path(pod_dir).join("containers").join(name);
        ContainerPaths {
            rootfs: base.join("rootfs"),
            upper: writable.join("upper"),
            work: writable.join("work"),
            lower: base.join("lower"),
            bundle: base,
        }
    }
}

/// The cgroup of a pod, relative to each hierarchy's root.
pub fn pod_cgroup(pod_id: &str) -> String {
    format!("/sealpod/{pod_id}")
}

/// The capabilities a container keeps: the set Docker and Podman grant by
/// default, which excludes everything that reaches the host (SYS_ADMIN,
/// NET_ADMIN, SYS_MODULE, SYS_PTRACE…).
const CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Default number of tasks a container may run when the manifest says nothing.
pub const DEFAULT_PIDS: u32 = 1024;

/// Builds the OCI runtime configuration for one container.
///
/// `netns` is a path to the pod's network namespace and `userns` to its user
/// namespace, which every container of the pod joins; everything else (mount,
/// PID, IPC, UTS, cgroup) is the container's own, created inside the pod's
/// user namespace.
pub fn oci_config(pod: &PodSpec, c: &ContainerSpec, pod_dir: &Path, netns: &Path, userns: Option<&Path>) -> Value {
    let caps: Vec<&str> = CAPABILITIES.to_vec();
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]}),
        json!({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "mode=1777"]}),
        json!({"destination": "/etc/hosts", "type": "bind", "source": pod_dir.join("hosts"), "options": ["rbind", "ro", "nosuid", "nodev", "noexec"]}),
        json!({"destination": "/etc/hostname", "type": "bind", "source": pod_dir.join("hostname"), "options": ["rbind", "ro", "nosuid", "nodev", "noexec"]}),
    ];
    for m in &c.mounts {
        let Some(volume) = pod.volumes.iter().find(|v| v.name == m.volume) else {
            continue;
        };
        if let VolumeKind::Secret { file_name } = &volume.kind {
            // The mount path names the file itself, read-only whatever was asked.
            mounts.push(json!({
                "destination": m.path,
                "type": "bind",
                "source": crate::secrets::secret_file(&pod.pod_id, &pod.secrets_token, &m.volume, file_name),
                "options": ["rbind", "ro", "nosuid", "nodev", "noexec"],
            }));
            continue;
        }
        let mut options = vec!["rbind", "nosuid", "nodev"];
        if m.read_only {
            options.push("ro");
        }
        mounts.push(json!({
            "destination": m.path,
            "type": "bind",
            "source": volume_path(pod_dir, &m.volume),
            "options": options,
        }));
    }
    let mut resources = json!({
        "devices": [{"allow": false, "access": "rwm"}],
        "pids": {"limit": if c.limits.pids == 0 { DEFAULT_PIDS } else { c.limits.pids }},
    });
    if c.limits.memory_bytes > 0 {
        resources["memory"] = json!({"limit": c.limits.memory_bytes, "swap": c.limits.memory_bytes});
    }
    if c.limits.cpu_millicores > 0 {
        let period: u64 = 100_000;
        resources["cpu"] = json!({"quota": c.limits.cpu_millicores * period / 1000, "period": period});
    }
    let mut namespaces = vec![
        json!({"type": "pid"}),
        json!({"type": "ipc"}),
        json!({"type": "uts"}),
        json!({"type": "mount"}),
        json!({"type": "cgroup"}),
        json!({"type": "network", "path": netns}),
    ];
    if let Some(userns) = userns {
        namespaces.insert(0, json!({"type": "user", "path": userns}));
    }
    let mut config = json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": c.uid, "gid": c.gid},
            "args": c.args,
            "env": c.env,
            "cwd": c.cwd,
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": nofile(), "soft": nofile()}],
            "noNewPrivileges": true,
        },
        "root": {"path": ContainerPaths::new(pod_dir, &c.name).rootfs, "readonly": false},
        "hostname": pod.pod_id,
        "mounts": mounts,
        "linux": {
            "namespaces": namespaces,
            "cgroupsPath": format!("{}/{}", pod_cgroup(&pod.pod_id), c.name),
            "resources": resources,
            "maskedPaths": [
                "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware",
                "/proc/scsi", "/sys/devices/virtual/powercap",
            ],
            "readonlyPaths": [
                "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
            ],
        },
    });
    crate::devices::apply(&mut config, &c.devices);
    config
}

/// The open-file limit containers get: 65536, or the provider's own hard limit
/// if lower (raising it would need privileges the sandbox may not grant).
fn nofile() -> u64 {
    let hard =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).map(|(_, h)| h).unwrap_or(1024);
    hard.min(65536)
}

/// Where a pod volume's contents live on the host.
pub fn volume_path(pod_dir: &Path, name: &str) -> PathBuf {
    disk_path(pod_dir).join("volumes").join(name)
}

/// Where the pod's own filesystem is mounted (a plain directory for a pod
/// without a storage limit).
/// Where the image of persistent volume `name` of the pod lives.
pub fn persistent_image_path(pod_dir: &Path, name: &str) -> PathBuf {
    pod_dir.join("persistent").join(format!("{name}.img"))
}

pub fn disk_path(pod_dir: &Path) -> PathBuf {
    pod_dir.join("disk")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> PodSpec {
        PodSpec {
            pod_id: "p1".into(),
            containers: vec![ContainerSpec {
                name: "web".into(),
                image_rootfs: "/img".into(),
                image_digest: "sha256:00".into(),
                args: vec!["/bin/serve".into()],
                env: vec!["A=1".into()],
                cwd: "/".into(),
                uid: 0,
                gid: 0,
                limits: Limits { cpu_millicores: 500, memory_bytes: 64 << 20, pids: 0 },
                mounts: vec![MountSpec { volume: "data".into(), path: "/data".into(), read_only: true }],
                devices: Default::default(),
            }],
            restart: RestartPolicy::OnFailure,
            volumes: vec![VolumeSpec { name: "data".into(), kind: VolumeKind::EmptyDir }],
            ports: vec![],
            egress: None,
            user_ns: None,
            storage_bytes: 0,
            secrets_token: String::new(),
            scale_to_zero: None,
        }
    }

    #[test]
    fn config_turns_requested_resources_into_cgroup_limits() {
        let p = pod();
        let cfg = oci_config(&p, &p.containers[0], Path::new("/pods/p1"), Path::new("/proc/1/fd/5"), None);
        assert_eq!(cfg["linux"]["resources"]["cpu"]["quota"], 50_000);
        assert_eq!(cfg["linux"]["resources"]["memory"]["limit"], 64u64 << 20);
        assert_eq!(cfg["linux"]["resources"]["pids"]["limit"], DEFAULT_PIDS);
        assert_eq!(cfg["linux"]["cgroupsPath"], "/sealpod/p1/web");
    }

    #[test]
    fn containers_share_the_pod_network_namespace_only() {
        let p = pod();
        let cfg = oci_config(&p, &p.containers[0], Path::new("/pods/p1"), Path::new("/proc/1/fd/5"), None);
        let ns = cfg["linux"]["namespaces"].as_array().unwrap();
        let with_path: Vec<_> = ns.iter().filter(|n| n.get("path").is_some()).collect();
        assert_eq!(with_path.len(), 1);
        assert_eq!(with_path[0]["type"], "network");
        assert_eq!(ns.len(), 6);
    }

    #[test]
    fn containers_join_the_pod_user_namespace_first() {
        let p = pod();
        let cfg = oci_config(&p, &p.containers[0], Path::new("/pods/p1"), Path::new("/n"), Some(Path::new("/u")));
        let ns = cfg["linux"]["namespaces"].as_array().unwrap();
        assert_eq!(ns[0], json!({"type": "user", "path": "/u"}));
        assert_eq!(ns.len(), 7);
    }

    #[test]
    fn config_drops_host_reaching_capabilities() {
        let p = pod();
        let cfg = oci_config(&p, &p.containers[0], Path::new("/pods/p1"), Path::new("/x"), None);
        let caps = cfg["process"]["capabilities"]["bounding"].as_array().unwrap();
        assert!(!caps.iter().any(|c| c == "CAP_SYS_ADMIN" || c == "CAP_NET_ADMIN"));
        assert_eq!(cfg["process"]["noNewPrivileges"], true);
    }

    #[test]
    fn volume_mounts_are_bind_mounts_from_the_pod_directory() {
        let p = pod();
        let cfg = oci_config(&p, &p.containers[0], Path::new("/pods/p1"), Path::new("/x"), None);
        let m = cfg["mounts"].as_array().unwrap().iter().find(|m| m["destination"] == "/data").unwrap();
        assert_eq!(m["source"], "/pods/p1/disk/volumes/data");
        assert!(m["options"].as_array().unwrap().iter().any(|o| o == "ro"));
    }
}
