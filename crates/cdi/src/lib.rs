//! The Container Device Interface (CNCF CDI, spec v0.3.0 to v1.x) as sealpod
//! uses it: the device specs operators already have (`/etc/cdi`,
//! `/var/run/cdi`, YAML or JSON, as `nvidia-ctk cdi generate` writes them),
//! loaded into a [`Registry`] of qualified device names (`nvidia.com/gpu=0`),
//! and resolved into the [`Edits`] a container needs: device nodes with their
//! type and numbers read from the host, mounts, environment, hooks, groups.
//! Where no spec names NVIDIA GPUs but the driver's nodes exist, [`nvidia`]
//! discovers them, and reads each GPU's model from the driver.
//!
//! **Why not the `container-device-interface` crate.** The CNCF's Rust port
//! validates through `jsonschema` (with an HTTP client among its default
//! dependencies), builds a cdylib and two binaries, and drags clap and anyhow
//! into a library; a spec is a few hundred lines of YAML, so the parsing and
//! the checks the specification asks for are written here, with bounds on
//! every input and a fuzz target.
//!
//! **What it leaves to others.** Which device goes to which pod
//! (`sealpod-provider`'s allocation), and applying the edits to an OCI runtime
//! configuration, with a device-cgroup rule for exactly the nodes given
//! (`sealpod-runtime`). A spec file is operator configuration, as trusted as
//! the provider's flags: its hooks run as root.

pub mod nvidia;
pub mod spec;

use std::collections::BTreeMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use serde::Serialize;

pub use spec::{parse_qualified, ContainerEdits, DeviceNode, Hook, Mount, Spec};

/// Largest spec file read.
pub const MAX_SPEC_BYTES: usize = 1 << 20;
/// Spec files read from one directory at most.
pub const MAX_SPECS_PER_DIR: usize = 256;

/// The directories the CDI specification names, lowest priority first: a
/// device in `/var/run/cdi` (generated at boot) overrides one of the same
/// name in `/etc/cdi`.
pub const DEFAULT_SPEC_DIRS: &[&str] = &["/etc/cdi", "/var/run/cdi"];

/// What can go wrong with specs and devices.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CdiError {
    /// A spec, or a device name, breaks the specification or sealpod's bounds.
    #[error("invalid CDI spec: {0}")]
    Invalid(String),
    /// No loaded spec has the device.
    #[error("no CDI spec has the device {0}")]
    UnknownDevice(String),
    /// A device node's host file is missing or is not a device.
    #[error("device node {path}: {why}")]
    Node {
        /// The host path.
        path: String,
        /// Why.
        why: String,
    },
}

/// A spec file that could not be used, and why; the other files still are.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SpecProblem {
    /// The file.
    pub path: PathBuf,
    /// What is wrong with it.
    pub error: String,
}

/// One device a loaded spec describes.
#[derive(Debug, Clone, PartialEq)]
pub struct RegisteredDevice {
    /// `vendor/class`.
    pub kind: String,
    /// The name within the kind.
    pub name: String,
    /// The file it came from (`None` for discovered devices).
    pub source: Option<PathBuf>,
    /// The spec-wide edits, applied once however many of its devices a
    /// container gets.
    pub spec_edits: ContainerEdits,
    /// The device's own edits.
    pub edits: ContainerEdits,
}

impl RegisteredDevice {
    /// `vendor/class=name`.
    pub fn qualified(&self) -> String {
        format!("{}={}", self.kind, self.name)
    }
}

/// Every device the spec directories describe, by qualified name.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    devices: BTreeMap<String, RegisteredDevice>,
    /// Files that were skipped, and devices named twice at one priority.
    pub problems: Vec<SpecProblem>,
}

impl Registry {
    /// Loads `*.json`, `*.yaml` and `*.yml` files from `dirs`, lowest priority
    /// first; a missing directory is no error. A device named in two files of
    /// one directory is a conflict and neither is used (as the CDI reference
    /// implementation does); a later directory overrides an earlier one.
    pub fn load(dirs: &[PathBuf]) -> Registry {
        let mut registry = Registry::default();
        for dir in dirs {
            let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
                Ok(entries) => entries
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("json" | "yaml" | "yml")))
                    .collect(),
                Err(_) => continue,
            };
            files.sort();
            if files.len() > MAX_SPECS_PER_DIR {
                registry.problems.push(SpecProblem {
                    path: dir.clone(),
                    error: format!("{} spec files; only the first {MAX_SPECS_PER_DIR} are read", files.len()),
                });
                files.truncate(MAX_SPECS_PER_DIR);
            }
            let mut this_dir: BTreeMap<String, RegisteredDevice> = BTreeMap::new();
            let mut conflicts = Vec::new();
            for file in files {
                let spec = match read_spec(&file) {
                    Ok(spec) => spec,
                    Err(e) => {
                        registry.problems.push(SpecProblem { path: file, error: e.to_string() });
                        continue;
                    }
                };
                for device in &spec.devices {
                    let registered = RegisteredDevice {
                        kind: spec.kind.clone(),
                        name: device.name.clone(),
                        source: Some(file.clone()),
                        spec_edits: spec.container_edits.clone(),
                        edits: device.container_edits.clone(),
                    };
                    let qualified = registered.qualified();
                    if let Some(other) = this_dir.insert(qualified.clone(), registered) {
                        conflicts.push((qualified, other.source, file.clone()));
                    }
                }
            }
            for (qualified, first, second) in conflicts {
                this_dir.remove(&qualified);
                registry.problems.push(SpecProblem {
                    path: second,
                    error: format!(
                        "device {qualified} is also in {}; neither is used",
                        first.map(|p| p.display().to_string()).unwrap_or_default()
                    ),
                });
            }
            registry.devices.extend(this_dir);
        }
        registry
    }

    /// Adds a device found another way (see [`nvidia::discover`]), unless a
    /// spec already names it.
    pub fn add_discovered(&mut self, device: RegisteredDevice) {
        self.devices.entry(device.qualified()).or_insert(device);
    }

    /// The devices of one kind, in natural order of their names (`2` before `10`).
    pub fn of_kind(&self, kind: &str) -> Vec<&RegisteredDevice> {
        let mut found: Vec<&RegisteredDevice> = self.devices.values().filter(|d| d.kind == kind).collect();
        found.sort_by_key(|d| natural(&d.name));
        found
    }

    /// Every device.
    pub fn all(&self) -> impl Iterator<Item = &RegisteredDevice> {
        self.devices.values()
    }

    /// The device with this qualified name.
    pub fn get(&self, qualified: &str) -> Option<&RegisteredDevice> {
        self.devices.get(qualified)
    }

    /// The edits a container using `devices` (qualified names) gets, each
    /// device node resolved against the host.
    pub fn edits(&self, devices: &[String]) -> Result<Edits, CdiError> {
        let mut merged = ContainerEdits::default();
        let mut seen_specs = Vec::new();
        for qualified in devices {
            parse_qualified(qualified)?;
            let device = self.get(qualified).ok_or_else(|| CdiError::UnknownDevice(qualified.clone()))?;
            if device.source.is_none() || !seen_specs.contains(&device.source) {
                merged.append(&device.spec_edits);
                seen_specs.push(device.source.clone());
            }
            merged.append(&device.edits);
        }
        Edits::resolve(&merged)
    }
}

fn read_spec(path: &Path) -> Result<Spec, CdiError> {
    let meta = std::fs::metadata(path).map_err(|e| CdiError::Invalid(e.to_string()))?;
    if meta.len() > MAX_SPEC_BYTES as u64 {
        return Err(CdiError::Invalid(format!("the file is {} bytes; at most {MAX_SPEC_BYTES}", meta.len())));
    }
    let bytes = std::fs::read(path).map_err(|e| CdiError::Invalid(e.to_string()))?;
    Spec::parse(&bytes, path.extension().is_some_and(|e| e == "json"))
}

/// Splits a name into text and number runs so that `gpu2` sorts before `gpu10`.
fn natural(name: &str) -> Vec<(String, u64)> {
    let mut parts = Vec::new();
    let mut text = String::new();
    let mut digits = String::new();
    for c in name.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
        } else {
            if !digits.is_empty() {
                parts.push((std::mem::take(&mut text), digits.parse().unwrap_or(u64::MAX)));
                digits.clear();
            }
            text.push(c);
        }
    }
    parts.push((text, if digits.is_empty() { 0 } else { digits.parse().unwrap_or(u64::MAX) }));
    parts
}

/// Edits ready to apply: every device node with its type and numbers.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Edits {
    /// `NAME=value`, later entries winning.
    pub env: Vec<String>,
    /// Device nodes, each once.
    pub nodes: Vec<ResolvedNode>,
    /// Mounts, in order.
    pub mounts: Vec<Mount>,
    /// Hooks, in order.
    pub hooks: Vec<Hook>,
    /// Extra groups, each once.
    pub additional_gids: Vec<u32>,
}

/// A device node whose host file was checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResolvedNode {
    /// Path in the container.
    pub path: String,
    /// Path on the host.
    pub host_path: String,
    /// `c` or `b` (FIFOs and unbuffered nodes are refused: nothing a device
    /// cgroup could admit).
    pub kind: char,
    /// Device numbers, as the host node has them.
    pub major: i64,
    /// See `major`.
    pub minor: i64,
    /// Device-cgroup access: a subset of `rwm`.
    pub permissions: String,
}

impl Edits {
    /// Resolves each node against the host: the file must exist and be a
    /// character or block device; numbers and type the spec gives must
    /// match it, so that the cgroup rule admits exactly the node mounted.
    pub fn resolve(edits: &ContainerEdits) -> Result<Edits, CdiError> {
        let mut out = Edits { mounts: edits.mounts.clone(), hooks: edits.hooks.clone(), ..Edits::default() };
        for e in &edits.env {
            let key = e.split_once('=').map_or(e.as_str(), |(k, _)| k);
            out.env.retain(|x| x.split_once('=').map(|(k, _)| k) != Some(key));
            out.env.push(e.clone());
        }
        for node in &edits.device_nodes {
            let resolved = resolve_node(node)?;
            if !out.nodes.iter().any(|n| n.path == resolved.path) {
                out.nodes.push(resolved);
            }
        }
        for gid in &edits.additional_gids {
            if !out.additional_gids.contains(gid) {
                out.additional_gids.push(*gid);
            }
        }
        Ok(out)
    }
}

fn resolve_node(node: &DeviceNode) -> Result<ResolvedNode, CdiError> {
    let host = node.host_path.clone().unwrap_or_else(|| node.path.clone());
    let fail = |why: String| CdiError::Node { path: host.clone(), why };
    let meta = std::fs::metadata(&host).map_err(|e| fail(e.to_string()))?;
    let ft = meta.file_type();
    let kind = if ft.is_char_device() {
        'c'
    } else if ft.is_block_device() {
        'b'
    } else {
        return Err(fail("not a character or block device".into()));
    };
    let (major, minor) = dev_numbers(meta.rdev());
    if let Some(want) = node.kind.as_deref() {
        let want_kind = if want == "u" { 'c' } else { want.chars().next().unwrap_or('?') };
        if want_kind != kind {
            return Err(fail(format!("the spec says type {want}, the host node is {kind}")));
        }
    }
    if node.major.is_some_and(|m| m != major) || node.minor.is_some_and(|m| m != minor) {
        return Err(fail(format!(
            "the spec says {}:{}, the host node is {major}:{minor}",
            node.major.unwrap_or(major),
            node.minor.unwrap_or(minor)
        )));
    }
    Ok(ResolvedNode {
        path: node.path.clone(),
        host_path: host,
        kind,
        major,
        minor,
        permissions: node.permissions.clone().unwrap_or_else(|| "rwm".into()),
    })
}

/// glibc's `major()` and `minor()` of a `dev_t`.
pub fn dev_numbers(dev: u64) -> (i64, i64) {
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    (major as i64, minor as i64)
}

#[cfg(test)]
mod tests;
