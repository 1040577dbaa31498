//! The GPUs a provider sells: its inventory (CDI specs, or NVIDIA nodes
//! discovered where no spec names them), which pod holds each, and picking
//! free ones for a pod.
//!
//! Each device goes to one container of one pod at a time. Who holds what is
//! not stored apart: it is read from the running pods' specs, which name the
//! devices they were given, so a provider restart finds the allocation as it
//! was and a deleted pod's devices are free again at once.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use sealpod_cdi::{nvidia, RegisteredDevice, Registry};
use sealpod_proto::{Error, ErrorCode, GpuOffer};
use sealpod_runtime::devices::{DeviceAccess, DeviceNodeSpec, HookSpec, HostMount};
use serde::Serialize;

/// Where the provider looks for GPUs.
#[derive(Debug, Clone)]
pub struct GpuSettings {
    /// CDI spec directories, lowest priority first.
    pub cdi_dirs: Vec<PathBuf>,
    /// The CDI kind sold as `nvidia.com/gpu` in manifests.
    pub kind: String,
    /// Where `/dev/nvidia*` are looked for when no spec names the kind.
    pub dev_root: PathBuf,
    /// Where the driver's `/proc/driver/nvidia` is.
    pub proc_root: PathBuf,
    /// Sell no GPUs, whatever the machine has.
    pub disabled: bool,
    /// Prints the confidential GPUs' evidence for a nonce (see [`gpu_evidence`]);
    /// `None`: attestation answers carry CPU evidence only.
    pub evidence_command: Option<PathBuf>,
}

impl Default for GpuSettings {
    fn default() -> Self {
        GpuSettings {
            cdi_dirs: sealpod_cdi::DEFAULT_SPEC_DIRS.iter().map(PathBuf::from).collect(),
            kind: nvidia::GPU_KIND.into(),
            dev_root: "/dev".into(),
            proc_root: "/proc".into(),
            disabled: false,
            evidence_command: None,
        }
    }
}

/// One GPU of the inventory.
#[derive(Debug, Clone, Serialize)]
pub struct Gpu {
    /// Qualified CDI name, `nvidia.com/gpu=0`.
    pub device: String,
    /// As the driver names it, when known.
    pub model: Option<String>,
    /// Memory in bytes, when known.
    pub memory_bytes: Option<u64>,
    /// `GPU-…`, when known.
    pub uuid: Option<String>,
    /// The CDI spec file, or `None` when discovered.
    pub spec: Option<PathBuf>,
    /// Device nodes it gives a container.
    pub nodes: Vec<String>,
}

/// The GPUs on sale and where they came from.
#[derive(Debug, Clone, Default)]
pub struct GpuInventory {
    registry: Registry,
    /// In natural order of their names.
    pub gpus: Vec<Gpu>,
    /// How they were found: `cdi`, `discovered` or `none`.
    pub source: &'static str,
    /// Spec files skipped, devices not sold (aliases, `all`), and why.
    pub notes: Vec<String>,
}

impl GpuInventory {
    /// Reads the CDI specs, or discovers NVIDIA nodes when none names the kind.
    pub fn load(settings: &GpuSettings) -> GpuInventory {
        if settings.disabled {
            return GpuInventory { source: "none", ..GpuInventory::default() };
        }
        let mut registry = Registry::load(&settings.cdi_dirs);
        let mut notes: Vec<String> =
            registry.problems.iter().map(|p| format!("{}: {}", p.path.display(), p.error)).collect();
        let mut source = "cdi";
        if registry.of_kind(&settings.kind).is_empty() && settings.kind == nvidia::GPU_KIND {
            let found = nvidia::discover(&settings.dev_root);
            if !found.is_empty() {
                source = "discovered";
                notes.push(format!(
                    "no CDI spec names {}: {} GPU(s) discovered under {}, device nodes only (the driver's \
                     libraries must come with the image; `nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml` \
                     writes a spec that mounts them)",
                    settings.kind,
                    found.len(),
                    settings.dev_root.display()
                ));
            }
            for d in found {
                registry.add_discovered(d);
            }
        }
        let driver = nvidia::driver_gpus(&settings.proc_root);
        let memory = nvidia_smi_memory();
        let mut gpus = Vec::new();
        let mut claimed_nodes: BTreeSet<String> = BTreeSet::new();
        for d in registry.of_kind(&settings.kind) {
            let own: Vec<String> = d.edits.device_nodes.iter().map(|n| n.path.clone()).collect();
            if d.name == "all" || own.is_empty() || own.iter().any(|n| claimed_nodes.contains(n)) {
                notes.push(format!(
                    "{} is not sold on its own: its device nodes are another device's, or it has none",
                    d.qualified()
                ));
                continue;
            }
            claimed_nodes.extend(own.iter().cloned());
            let info = nvidia::gpu_minor(d).and_then(|m| driver.get(&m));
            gpus.push(Gpu {
                device: d.qualified(),
                model: info.and_then(|i| i.model.clone()),
                memory_bytes: info.and_then(|i| i.bus.as_deref()).and_then(|b| memory.get(&normalize_bus(b)).copied()),
                uuid: info.and_then(|i| i.uuid.clone()),
                spec: d.source.clone(),
                nodes: own,
            });
        }
        if gpus.is_empty() {
            source = "none";
        }
        GpuInventory { registry, gpus, source, notes }
    }

    /// What capacity answers and offers say of the GPUs; `None` without any.
    pub fn offer(&self, kind: &str) -> Option<GpuOffer> {
        if self.gpus.is_empty() {
            return None;
        }
        let models: BTreeSet<&str> = self.gpus.iter().filter_map(|g| g.model.as_deref()).collect();
        let memory: BTreeSet<u64> = self.gpus.iter().filter_map(|g| g.memory_bytes).collect();
        Some(GpuOffer {
            count: self.gpus.len() as u32,
            model: models.into_iter().collect::<Vec<_>>().join(", "),
            memory_bytes: memory.into_iter().min().unwrap_or(0),
            kind: kind.into(),
        })
    }

    /// The devices not in `held`, in inventory order.
    pub fn free<'a>(&'a self, held: &BTreeMap<String, String>) -> Vec<&'a Gpu> {
        self.gpus.iter().filter(|g| !held.contains_key(&g.device)).collect()
    }

    /// What a container given `devices` gets, read from their specs now.
    pub fn access(&self, devices: &[String]) -> Result<DeviceAccess, Error> {
        let edits = self
            .registry
            .edits(devices)
            .map_err(|e| Error::new(ErrorCode::Internal, format!("the provider's GPU devices: {e}")))?;
        Ok(DeviceAccess {
            names: devices.to_vec(),
            nodes: edits
                .nodes
                .into_iter()
                .map(|n| DeviceNodeSpec {
                    path: n.path,
                    host_path: n.host_path,
                    kind: n.kind,
                    major: n.major,
                    minor: n.minor,
                    permissions: n.permissions,
                })
                .collect(),
            mounts: edits
                .mounts
                .into_iter()
                .map(|m| HostMount {
                    host_path: m.host_path,
                    container_path: m.container_path,
                    options: m.options,
                    fs_type: m.kind,
                })
                .collect(),
            hooks: edits
                .hooks
                .into_iter()
                .map(|h| HookSpec { when: h.hook_name, path: h.path, args: h.args, env: h.env, timeout: h.timeout })
                .collect(),
            additional_gids: edits.additional_gids,
        })
    }

    /// The environment entries a container given `devices` gets.
    pub fn env(&self, devices: &[String]) -> Vec<String> {
        self.registry.edits(devices).map(|e| e.env).unwrap_or_default()
    }

    /// The device as registered, for `sealpod provider gpus`.
    pub fn registered(&self, device: &str) -> Option<&RegisteredDevice> {
        self.registry.get(device)
    }
}

/// Takes free GPUs for the containers of one pod.
pub struct GpuPick<'a> {
    inventory: &'a GpuInventory,
    free: Vec<String>,
    free_before: Vec<String>,
    asked: u32,
}

impl<'a> GpuPick<'a> {
    /// Picks from the devices `held` does not list.
    pub fn new(inventory: &'a GpuInventory, held: &BTreeMap<String, String>) -> GpuPick<'a> {
        let free: Vec<String> = inventory.free(held).iter().map(|g| g.device.clone()).collect();
        GpuPick { inventory, free_before: free.clone(), free, asked: 0 }
    }

    /// The environment entries a container given `devices` gets.
    pub fn env(&self, devices: &[String]) -> Vec<String> {
        if devices.is_empty() {
            return Vec::new();
        }
        self.inventory.env(devices)
    }

    /// `n` distinct free GPUs for one container, or a refusal that says what
    /// is free.
    pub fn take(&mut self, n: u32, field: &str) -> Result<DeviceAccess, Error> {
        if n == 0 {
            return Ok(DeviceAccess::default());
        }
        self.asked += n;
        if self.inventory.gpus.is_empty() {
            return Err(Error {
                code: ErrorCode::ResourceExhausted as i32,
                message: "this provider has no GPUs".into(),
                field: field.into(),
            });
        }
        if (n as usize) > self.free.len() {
            let free = if self.free_before.is_empty() { "none".to_string() } else { self.free_before.join(", ") };
            return Err(Error {
                code: ErrorCode::ResourceExhausted as i32,
                message: format!(
                    "not enough GPUs: the pod asks {} in all, {} of this provider's {} are free ({free})",
                    self.asked,
                    self.free_before.len(),
                    self.inventory.gpus.len()
                ),
                field: field.into(),
            });
        }
        let taken: Vec<String> = self.free.drain(..n as usize).collect();
        let mut access = self.inventory.access(&taken)?;
        access.names = taken;
        Ok(access)
    }
}

/// Longest a GPU evidence command may run.
const EVIDENCE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// Largest answer read from it.
const MAX_EVIDENCE_BYTES: u64 = 1 << 20;

/// Each confidential GPU's evidence for `nonce`, from the operator's
/// command: it gets the nonce as 64 hex digits (its one argument) and prints
/// `{"gpus": [{"device": …, "report": HEX, "certificateChain": PEM}]}`, as
/// NVIDIA's attestation tools give them (`nvmlDeviceGetConfComputeGpuAttestationReport`
/// with the nonce, and `nvmlDeviceGetConfComputeGpuCertificate`).
pub fn gpu_evidence(command: &std::path::Path, nonce: &[u8; 32]) -> Result<Vec<sealpod_proto::GpuEvidence>, String> {
    use std::io::Read;
    let mut child = std::process::Command::new(command)
        .arg(nonce.iter().map(|b| format!("{b:02x}")).collect::<String>())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("{}: {e}", command.display()))?;
    let mut stdout = child.stdout.take().ok_or("no stdout")?;
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = (&mut stdout).take(MAX_EVIDENCE_BYTES + 1).read_to_end(&mut out);
        out
    });
    let deadline = std::time::Instant::now() + EVIDENCE_TIMEOUT;
    let status = loop {
        match child.try_wait().map_err(|e| e.to_string())? {
            Some(status) => break status,
            None if std::time::Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{} took longer than {EVIDENCE_TIMEOUT:?}", command.display()));
            }
            None => std::thread::sleep(std::time::Duration::from_millis(5)),
        }
    };
    let out = reader.join().map_err(|_| "reading the command's output failed")?;
    if !status.success() {
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = (&mut e).take(4096).read_to_string(&mut err);
        }
        return Err(format!("{} failed ({status}): {}", command.display(), err.trim()));
    }
    if out.len() as u64 > MAX_EVIDENCE_BYTES {
        return Err(format!("{} printed more than {MAX_EVIDENCE_BYTES} bytes", command.display()));
    }
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Answer {
        gpus: Vec<One>,
    }
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct One {
        device: String,
        report: String,
        certificate_chain: String,
    }
    let answer: Answer = serde_json::from_slice(&out).map_err(|e| format!("{}: {e}", command.display()))?;
    answer
        .gpus
        .into_iter()
        .map(|g| {
            Ok(sealpod_proto::GpuEvidence {
                report: hex::decode(g.report.trim()).map_err(|e| format!("{}: report: {e}", g.device))?,
                certificate_chain: g.certificate_chain.into_bytes(),
                device: g.device,
            })
        })
        .collect()
}

/// `0000:00:1e.0` from nvidia-smi's `00000000:00:1E.0`, as the driver's
/// `information` files write it.
fn normalize_bus(bus: &str) -> String {
    let lower = bus.trim().to_ascii_lowercase();
    match lower.split_once(':') {
        Some((domain, rest)) if domain.len() > 4 => format!("{}:{rest}", &domain[domain.len() - 4..]),
        _ => lower,
    }
}

/// Each GPU's memory by PCI address, from `nvidia-smi` when it is installed
/// (the driver's procfs files do not say).
fn nvidia_smi_memory() -> BTreeMap<String, u64> {
    let output = std::process::Command::new("nvidia-smi")
        .args(["--query-gpu=pci.bus_id,memory.total", "--format=csv,noheader,nounits"])
        .stderr(std::process::Stdio::null())
        .output();
    let Ok(output) = output else { return BTreeMap::new() };
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .take(256)
        .filter_map(|l| {
            let (bus, mib) = l.split_once(',')?;
            Some((normalize_bus(bus), mib.trim().parse::<u64>().ok()? << 20))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nvidia_smi_bus_ids_match_the_drivers() {
        assert_eq!(normalize_bus("00000000:00:1E.0"), "0000:00:1e.0");
        assert_eq!(normalize_bus("0000:3b:00.0"), "0000:3b:00.0");
    }

    #[test]
    fn aliases_and_all_are_not_sold_twice_and_a_pick_names_what_is_free() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(
            tmp.path().join("gpu.yaml"),
            "cdiVersion: 0.5.0\nkind: nvidia.com/gpu\ndevices:\n\
             - name: \"0\"\n  containerEdits:\n    deviceNodes: [{path: /dev/nvidia0, hostPath: /dev/null}]\n\
             - name: \"1\"\n  containerEdits:\n    deviceNodes: [{path: /dev/nvidia1, hostPath: /dev/zero}]\n\
             - name: GPU-aaaa\n  containerEdits:\n    deviceNodes: [{path: /dev/nvidia0, hostPath: /dev/null}]\n\
             - name: all\n  containerEdits:\n    deviceNodes: [{path: /dev/nvidia0, hostPath: /dev/null}]\n",
        )
        .unwrap();
        let settings = GpuSettings {
            cdi_dirs: vec![tmp.path().into()],
            proc_root: tmp.path().join("proc"),
            dev_root: tmp.path().join("dev"),
            ..GpuSettings::default()
        };
        let inventory = GpuInventory::load(&settings);
        let names: Vec<&str> = inventory.gpus.iter().map(|g| g.device.as_str()).collect();
        assert_eq!(names, ["nvidia.com/gpu=0", "nvidia.com/gpu=1"]);
        assert_eq!(inventory.notes.len(), 2, "{:?}", inventory.notes);
        assert_eq!(inventory.offer("nvidia.com/gpu").unwrap().count, 2);

        let held = BTreeMap::from([("nvidia.com/gpu=0".to_string(), "pod-a".to_string())]);
        let mut pick = GpuPick::new(&inventory, &held);
        let got = pick.take(1, "c0").unwrap();
        assert_eq!(got.names, ["nvidia.com/gpu=1"]);
        assert_eq!(got.nodes[0].path, "/dev/nvidia1");
        let e = pick.take(1, "c1").unwrap_err();
        assert!(
            e.message.contains("asks 2 in all, 1 of this provider's 2 are free (nvidia.com/gpu=1)"),
            "{}",
            e.message
        );
    }
}
