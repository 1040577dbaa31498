//! NVIDIA GPUs as the driver shows them: `/proc/driver/nvidia/gpus/*/information`
//! (model, UUID, PCI bus, the minor number of `/dev/nvidiaN`), and device
//! nodes discovered where no CDI spec names the GPUs.
//!
//! A discovered GPU gets its own node and the driver's control nodes, nothing
//! more: the user-space driver (libcuda, nvidia-smi) must then come with the
//! image. `nvidia-ctk cdi generate` writes a spec that also mounts the host's
//! driver libraries, and sealpod uses it whenever it exists.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use crate::{ContainerEdits, DeviceNode, RegisteredDevice};

/// The kind NVIDIA's CDI specs and Kubernetes' device plugin use.
pub const GPU_KIND: &str = "nvidia.com/gpu";

/// Nodes every NVIDIA GPU container needs besides its own `/dev/nvidiaN`.
const CONTROL_NODES: &[&str] = &["nvidiactl", "nvidia-uvm", "nvidia-uvm-tools", "nvidia-modeset"];

/// Largest `information` file read.
const MAX_INFO_BYTES: u64 = 64 << 10;

/// One GPU as the driver describes it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct GpuInfo {
    /// The minor number of its `/dev/nvidiaN`.
    pub minor: u32,
    /// `NVIDIA H100 80GB HBM3`.
    pub model: Option<String>,
    /// `GPU-…`.
    pub uuid: Option<String>,
    /// PCI address, `0000:00:1e.0`.
    pub bus: Option<String>,
}

/// The GPUs the driver lists under `proc_root/driver/nvidia/gpus`, by minor.
pub fn driver_gpus(proc_root: &Path) -> BTreeMap<u32, GpuInfo> {
    let mut gpus = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(proc_root.join("driver/nvidia/gpus")) else {
        return gpus;
    };
    for entry in entries.flatten().take(256) {
        let path = entry.path().join("information");
        let Ok(meta) = std::fs::metadata(&path) else { continue };
        // procfs files report size 0; bound the read instead.
        if meta.len() > MAX_INFO_BYTES {
            continue;
        }
        let Ok(text) = read_bounded(&path) else { continue };
        if let Some(info) = parse_information(&text) {
            gpus.insert(info.minor, info);
        }
    }
    gpus
}

fn read_bounded(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)?.take(MAX_INFO_BYTES).read_to_string(&mut text)?;
    Ok(text)
}

/// Parses one `information` file; `None` without a `Device Minor` line.
pub fn parse_information(text: &str) -> Option<GpuInfo> {
    let mut info = GpuInfo::default();
    let mut minor = None;
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else { continue };
        let value = value.trim();
        match key.trim() {
            "Model" => info.model = Some(value.to_owned()),
            "GPU UUID" => info.uuid = Some(value.to_owned()),
            "Bus Location" => info.bus = Some(value.to_owned()),
            "Device Minor" => minor = value.parse().ok(),
            _ => {}
        }
    }
    info.minor = minor?;
    Some(info)
}

/// GPUs found as `/dev/nvidiaN` character devices under `dev_root`, each a
/// device of [`GPU_KIND`] named by its minor number, with the driver's
/// control nodes that exist.
pub fn discover(dev_root: &Path) -> Vec<RegisteredDevice> {
    let mut minors: Vec<u32> = match std::fs::read_dir(dev_root) {
        Ok(entries) => {
            entries.flatten().filter_map(|e| e.file_name().to_str()?.strip_prefix("nvidia")?.parse().ok()).collect()
        }
        Err(_) => return Vec::new(),
    };
    minors.sort_unstable();
    let node = |name: &str| DeviceNode {
        path: format!("/dev/{name}"),
        host_path: Some(dev_root.join(name).display().to_string()),
        kind: None,
        major: None,
        minor: None,
        file_mode: None,
        permissions: None,
        uid: None,
        gid: None,
    };
    let control = ContainerEdits {
        device_nodes: CONTROL_NODES.iter().filter(|n| dev_root.join(n).exists()).map(|n| node(n)).collect(),
        ..ContainerEdits::default()
    };
    minors
        .into_iter()
        .map(|minor| RegisteredDevice {
            kind: GPU_KIND.into(),
            name: minor.to_string(),
            source: None,
            spec_edits: control.clone(),
            edits: ContainerEdits { device_nodes: vec![node(&format!("nvidia{minor}"))], ..ContainerEdits::default() },
        })
        .collect()
}

/// The minor number of the `/dev/nvidiaN` node a device gives, which names
/// its GPU in the driver's `information` files.
pub fn gpu_minor(device: &RegisteredDevice) -> Option<u32> {
    device.edits.device_nodes.iter().find_map(|n| n.path.strip_prefix("/dev/nvidia")?.parse().ok())
}
