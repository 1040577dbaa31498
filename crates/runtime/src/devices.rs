//! Host devices a container was given (GPUs and other CDI devices), and how
//! they enter its OCI configuration.
//!
//! Each node is bind-mounted from the host (a container in a user namespace
//! cannot `mknod`, and a bind keeps the host node's owner and mode), and the
//! container's device cgroup admits exactly that node's numbers with the
//! access the spec gives; every other device stays denied. Which devices a
//! container gets, and the reading of CDI specs, are the provider's.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// What a container gets of the host's devices.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct DeviceAccess {
    /// The devices, by qualified CDI name (`nvidia.com/gpu=0`): what the pod
    /// holds, for status and allocation after a restart.
    pub names: Vec<String>,
    /// Device nodes.
    pub nodes: Vec<DeviceNodeSpec>,
    /// Host paths mounted into the container (driver libraries).
    pub mounts: Vec<HostMount>,
    /// OCI hooks.
    pub hooks: Vec<HookSpec>,
    /// Groups added to the container's process.
    pub additional_gids: Vec<u32>,
}

impl DeviceAccess {
    /// Whether the container gets nothing.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty() && self.nodes.is_empty() && self.mounts.is_empty() && self.hooks.is_empty()
    }
}

/// A device node.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DeviceNodeSpec {
    /// Path in the container.
    pub path: String,
    /// Path on the host.
    pub host_path: String,
    /// `c` or `b`.
    pub kind: char,
    /// Device numbers.
    pub major: i64,
    /// See `major`.
    pub minor: i64,
    /// Device-cgroup access, a subset of `rwm`.
    pub permissions: String,
}

/// A host path mounted into the container.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct HostMount {
    /// Source on the host.
    pub host_path: String,
    /// Destination in the container.
    pub container_path: String,
    /// Mount options.
    pub options: Vec<String>,
    /// Filesystem type; a bind mount when `None`.
    pub fs_type: Option<String>,
}

/// An OCI hook.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct HookSpec {
    /// The hook point (`createContainer`…).
    pub when: String,
    /// The program.
    pub path: String,
    /// Its argv.
    pub args: Vec<String>,
    /// Its environment.
    pub env: Vec<String>,
    /// Seconds before it is killed.
    pub timeout: Option<u32>,
}

/// Adds `access` to an OCI configuration built by [`crate::spec::oci_config`].
pub fn apply(config: &mut Value, access: &DeviceAccess) {
    for node in &access.nodes {
        // No `nodev`: the node must stay usable; nosuid and noexec still hold.
        push(
            config,
            &["mounts"],
            json!({
                "destination": node.path,
                "type": "bind",
                "source": node.host_path,
                "options": ["bind", "nosuid", "noexec"],
            }),
        );
        push(
            config,
            &["linux", "resources", "devices"],
            json!({
                "allow": true,
                "type": node.kind.to_string(),
                "major": node.major,
                "minor": node.minor,
                "access": node.permissions,
            }),
        );
    }
    for m in &access.mounts {
        let bind = m.fs_type.as_deref().is_none_or(|t| t == "bind");
        let mut options = m.options.clone();
        if bind && !options.iter().any(|o| o == "bind" || o == "rbind") {
            options.push("rbind".into());
        }
        push(
            config,
            &["mounts"],
            json!({
                "destination": m.container_path,
                "type": m.fs_type.clone().unwrap_or_else(|| "bind".into()),
                "source": m.host_path,
                "options": options,
            }),
        );
    }
    for h in &access.hooks {
        let mut hook = json!({"path": h.path, "args": h.args, "env": h.env});
        if let Some(t) = h.timeout {
            hook["timeout"] = json!(t);
        }
        push(config, &["hooks", &h.when], hook);
    }
    if !access.additional_gids.is_empty() {
        config["process"]["user"]["additionalGids"] = json!(access.additional_gids);
    }
}

fn push(config: &mut Value, path: &[&str], item: Value) {
    let mut at = config;
    for key in path {
        if at.get(*key).is_none() {
            at[*key] = json!({});
        }
        at = &mut at[*key];
    }
    if !at.is_array() {
        *at = json!([]);
    }
    if let Some(list) = at.as_array_mut() {
        list.push(item);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gpu() -> DeviceAccess {
        DeviceAccess {
            names: vec!["nvidia.com/gpu=0".into()],
            nodes: vec![DeviceNodeSpec {
                path: "/dev/nvidia0".into(),
                host_path: "/dev/nvidia0".into(),
                kind: 'c',
                major: 195,
                minor: 0,
                permissions: "rw".into(),
            }],
            mounts: vec![HostMount {
                host_path: "/usr/lib/libcuda.so.1".into(),
                container_path: "/usr/lib/libcuda.so.1".into(),
                options: vec!["ro".into(), "nosuid".into()],
                fs_type: None,
            }],
            hooks: vec![HookSpec {
                when: "createContainer".into(),
                path: "/usr/bin/nvidia-ctk".into(),
                args: vec!["nvidia-ctk".into(), "hook".into()],
                env: vec![],
                timeout: Some(5),
            }],
            additional_gids: vec![44],
        }
    }

    #[test]
    fn a_device_is_bind_mounted_and_admitted_by_its_numbers_only() {
        let mut config = json!({
            "process": {"user": {"uid": 0, "gid": 0}},
            "mounts": [],
            "linux": {"resources": {"devices": [{"allow": false, "access": "rwm"}]}},
        });
        apply(&mut config, &gpu());
        let rules = config["linux"]["resources"]["devices"].as_array().unwrap();
        assert_eq!(rules[0], json!({"allow": false, "access": "rwm"}));
        assert_eq!(rules[1], json!({"allow": true, "type": "c", "major": 195, "minor": 0, "access": "rw"}));
        let mounts = config["mounts"].as_array().unwrap();
        assert_eq!(mounts[0]["source"], "/dev/nvidia0");
        assert!(!mounts[0]["options"].as_array().unwrap().iter().any(|o| o == "nodev"));
        assert_eq!(mounts[1]["options"], json!(["ro", "nosuid", "rbind"]));
        assert_eq!(config["hooks"]["createContainer"][0]["timeout"], 5);
        assert_eq!(config["process"]["user"]["additionalGids"], json!([44]));
    }
}
