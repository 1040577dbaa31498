//! One CDI spec file as the CDI specification (v0.3.0 to v1.x) writes it, and
//! the checks a spec must pass before any of its edits reach a container.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::{CdiError, MAX_SPEC_BYTES};

/// Devices a spec may describe; `nvidia-ctk` writes one per GPU and MIG
/// slice, so real specs hold a few dozen.
pub const MAX_DEVICES_PER_SPEC: usize = 4096;

/// A CDI spec: one vendor's devices of one class.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Spec {
    /// The CDI version the file follows, `0.3.0` to `1.x`.
    pub cdi_version: String,
    /// `vendor/class`, such as `nvidia.com/gpu`.
    pub kind: String,
    /// Free-form annotations (not interpreted).
    #[serde(default)]
    pub annotations: std::collections::BTreeMap<String, String>,
    /// The devices.
    #[serde(default)]
    pub devices: Vec<Device>,
    /// Edits every container gets that uses any device of this spec.
    #[serde(default)]
    pub container_edits: ContainerEdits,
}

/// One device of a spec.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Device {
    /// Unique within the spec (`0`, `GPU-1d2c…`, `all`).
    pub name: String,
    /// Free-form annotations (not interpreted).
    #[serde(default)]
    pub annotations: std::collections::BTreeMap<String, String>,
    /// What a container using it gets.
    #[serde(default)]
    pub container_edits: ContainerEdits,
}

/// What a device (or a spec) changes in a container.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ContainerEdits {
    /// `NAME=value` entries added to the environment.
    #[serde(default)]
    pub env: Vec<String>,
    /// Device nodes created in the container.
    #[serde(default)]
    pub device_nodes: Vec<DeviceNode>,
    /// Host paths bind-mounted into the container (driver libraries, sockets).
    #[serde(default)]
    pub mounts: Vec<Mount>,
    /// Programs the runtime runs at points of the container's life.
    #[serde(default)]
    pub hooks: Vec<Hook>,
    /// Groups the container's process is added to.
    #[serde(default, rename = "additionalGIDs")]
    pub additional_gids: Vec<u32>,
    /// Network devices moved into the container (CDI 1.0): refused, since a
    /// pod's network is the provider's to shape.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub net_devices: Vec<serde_json::Value>,
    /// Intel RDT class (accepted, not applied: sealpod sets no RDT).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intel_rdt: Option<serde_json::Value>,
}

/// A device node.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DeviceNode {
    /// Path inside the container.
    pub path: String,
    /// Path on the host; `path` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_path: Option<String>,
    /// `c`, `b`, `u` or `p`; read from the host node when absent.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Read from the host node when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub major: Option<i64>,
    /// Read from the host node when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minor: Option<i64>,
    /// Mode of the node (not applied: the host node is bind-mounted as it is).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_mode: Option<u32>,
    /// Device-cgroup access, a subset of `rwm`; `rwm` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permissions: Option<String>,
    /// Owner (not applied, as `file_mode`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// Group (not applied, as `file_mode`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
}

/// A mount.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Mount {
    /// Source on the host.
    pub host_path: String,
    /// Destination in the container.
    pub container_path: String,
    /// Mount options (`ro`, `nosuid`, `bind`…).
    #[serde(default)]
    pub options: Vec<String>,
    /// Filesystem type; a bind mount when absent.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

/// An OCI hook.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Hook {
    /// When it runs: `prestart`, `createRuntime`, `createContainer`,
    /// `startContainer`, `poststart` or `poststop`.
    pub hook_name: String,
    /// Absolute path of the program.
    pub path: String,
    /// Its argv (the first is its name).
    #[serde(default)]
    pub args: Vec<String>,
    /// Its environment.
    #[serde(default)]
    pub env: Vec<String>,
    /// Seconds before it is killed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u32>,
}

/// The hook points the OCI runtime specification defines.
pub const HOOK_NAMES: &[&str] =
    &["prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"];

impl Spec {
    /// Parses a spec from JSON (`.json`) or YAML (anything else), then checks it.
    pub fn parse(bytes: &[u8], json: bool) -> Result<Spec, CdiError> {
        if bytes.len() > MAX_SPEC_BYTES {
            return Err(CdiError::Invalid(format!("the spec is {} bytes; at most {MAX_SPEC_BYTES}", bytes.len())));
        }
        let spec: Spec = if json {
            serde_json::from_slice(bytes).map_err(|e| CdiError::Invalid(e.to_string()))?
        } else {
            serde_yaml_ng::from_slice(bytes).map_err(|e| CdiError::Invalid(e.to_string()))?
        };
        spec.validate()?;
        Ok(spec)
    }

    /// The checks of the CDI specification, plus sealpod's bounds.
    pub fn validate(&self) -> Result<(), CdiError> {
        check_version(&self.cdi_version)?;
        check_kind(&self.kind)?;
        if self.devices.is_empty() {
            return Err(CdiError::Invalid("the spec has no devices".into()));
        }
        if self.devices.len() > MAX_DEVICES_PER_SPEC {
            return Err(CdiError::Invalid(format!("more than {MAX_DEVICES_PER_SPEC} devices")));
        }
        self.container_edits.validate("containerEdits")?;
        let mut names = HashSet::new();
        for (i, d) in self.devices.iter().enumerate() {
            check_device_name(&d.name).map_err(|m| CdiError::Invalid(format!("devices[{i}].name: {m}")))?;
            if !names.insert(d.name.as_str()) {
                return Err(CdiError::Invalid(format!("devices[{i}]: device {:?} is named twice", d.name)));
            }
            d.container_edits.validate(&format!("devices[{i}].containerEdits"))?;
            if d.container_edits.is_empty() {
                return Err(CdiError::Invalid(format!("devices[{i}] ({}) edits nothing", d.name)));
            }
        }
        Ok(())
    }
}

impl ContainerEdits {
    /// Whether applying these edits changes nothing.
    pub fn is_empty(&self) -> bool {
        self.env.is_empty()
            && self.device_nodes.is_empty()
            && self.mounts.is_empty()
            && self.hooks.is_empty()
            && self.additional_gids.is_empty()
    }

    /// Adds `other`'s edits after these.
    pub fn append(&mut self, other: &ContainerEdits) {
        self.env.extend(other.env.iter().cloned());
        self.device_nodes.extend(other.device_nodes.iter().cloned());
        self.mounts.extend(other.mounts.iter().cloned());
        self.hooks.extend(other.hooks.iter().cloned());
        self.additional_gids.extend(other.additional_gids.iter().copied());
    }

    fn validate(&self, at: &str) -> Result<(), CdiError> {
        let bad = |what: String| CdiError::Invalid(format!("{at}.{what}"));
        if !self.net_devices.is_empty() {
            return Err(bad("netDevices: network devices are not supported by sealpod".into()));
        }
        for (i, e) in self.env.iter().enumerate() {
            if e.split_once('=').is_none_or(|(k, _)| k.is_empty()) || e.contains('\0') {
                return Err(bad(format!("env[{i}]: {e:?} is not NAME=value")));
            }
        }
        for (i, n) in self.device_nodes.iter().enumerate() {
            if !absolute(&n.path) || n.host_path.as_deref().is_some_and(|p| !absolute(p)) {
                return Err(bad(format!("deviceNodes[{i}]: paths must be absolute and free of '..'")));
            }
            if let Some(kind) = &n.kind {
                if !["c", "b", "u", "p"].contains(&kind.as_str()) {
                    return Err(bad(format!("deviceNodes[{i}].type: {kind:?} is not c, b, u or p")));
                }
            }
            if let Some(p) = &n.permissions {
                if p.is_empty() || !p.chars().all(|c| "rwm".contains(c)) {
                    return Err(bad(format!("deviceNodes[{i}].permissions: {p:?} is not a subset of rwm")));
                }
            }
            if n.major.is_some_and(|m| !(0..=4095).contains(&m)) || n.minor.is_some_and(|m| !(0..=0xfffff).contains(&m))
            {
                return Err(bad(format!("deviceNodes[{i}]: major or minor out of range")));
            }
        }
        for (i, m) in self.mounts.iter().enumerate() {
            if !absolute(&m.host_path) || !absolute(&m.container_path) {
                return Err(bad(format!("mounts[{i}]: paths must be absolute and free of '..'")));
            }
        }
        for (i, h) in self.hooks.iter().enumerate() {
            if !HOOK_NAMES.contains(&h.hook_name.as_str()) {
                return Err(bad(format!("hooks[{i}].hookName: {:?} is not an OCI hook", h.hook_name)));
            }
            if !absolute(&h.path) {
                return Err(bad(format!("hooks[{i}].path: must be absolute")));
            }
        }
        Ok(())
    }
}

fn absolute(path: &str) -> bool {
    path.starts_with('/') && !path.contains('\0') && !path.split('/').any(|s| s == "..")
}

/// Versions 0.3.0 to 1.x; fields of later versions that sealpod does not
/// know are ignored, as the CDI reference implementation does.
fn check_version(v: &str) -> Result<(), CdiError> {
    let mut parts = v.split('.').map(|p| p.parse::<u32>());
    let (Some(Ok(major)), Some(Ok(minor))) = (parts.next(), parts.next()) else {
        return Err(CdiError::Invalid(format!("cdiVersion {v:?} is not a version")));
    };
    if (major == 0 && minor >= 3) || major == 1 {
        Ok(())
    } else {
        Err(CdiError::Invalid(format!("cdiVersion {v} is not supported (0.3.0 to 1.x)")))
    }
}

/// `vendor/class`: the vendor a domain-like name, the class a plain name.
pub fn check_kind(kind: &str) -> Result<(), CdiError> {
    let bad = |why: &str| CdiError::Invalid(format!("kind {kind:?}: {why}"));
    let (vendor, class) = kind.split_once('/').ok_or_else(|| bad("must be vendor/class"))?;
    if !plain_name(vendor, "-_.") {
        return Err(bad("the vendor must be letters, digits, '-', '_' and '.', starting and ending alphanumeric"));
    }
    if !plain_name(class, "-_.") {
        return Err(bad("the class must be letters, digits, '-', '_' and '.', starting and ending alphanumeric"));
    }
    Ok(())
}

fn check_device_name(name: &str) -> Result<(), String> {
    if plain_name(name, "-_.:") {
        Ok(())
    } else {
        Err(format!("{name:?} must be letters, digits, '-', '_', '.' and ':', starting and ending alphanumeric"))
    }
}

fn plain_name(s: &str, extra: &str) -> bool {
    let alnum = |c: char| c.is_ascii_alphanumeric();
    s.len() <= 253 && s.starts_with(alnum) && s.ends_with(alnum) && s.chars().all(|c| alnum(c) || extra.contains(c))
}

/// Splits `vendor/class=name` into its kind and name.
pub fn parse_qualified(device: &str) -> Result<(&str, &str), CdiError> {
    let (kind, name) = device
        .split_once('=')
        .ok_or_else(|| CdiError::Invalid(format!("{device:?} is not a qualified device name (vendor/class=name)")))?;
    check_kind(kind)?;
    check_device_name(name).map_err(CdiError::Invalid)?;
    Ok((kind, name))
}
