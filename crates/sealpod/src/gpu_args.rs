//! The provider's GPU flags, and `sealpod provider gpus`: the inventory, and
//! which pod holds each GPU.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use sealpod_provider::gpus::{GpuInventory, GpuSettings};

#[derive(Args, Clone, Debug)]
pub struct GpuArgs {
    /// A directory of CDI specs (repeatable; later ones override earlier
    /// ones). Default: /etc/cdi, then /var/run/cdi, as the CDI specification
    /// says. `nvidia-ctk cdi generate` writes NVIDIA's.
    #[arg(long, value_name = "DIR")]
    pub cdi_dir: Vec<PathBuf>,
    /// The CDI kind manifests' `nvidia.com/gpu` is served from.
    #[arg(long, value_name = "VENDOR/CLASS", default_value = sealpod_cdi::nvidia::GPU_KIND)]
    pub gpu_kind: String,
    /// Sell no GPUs, whatever the machine has.
    #[arg(long)]
    pub no_gpus: bool,
    /// Adds confidential GPUs' evidence to attestation answers: run with the
    /// bound nonce (64 hex digits) as its argument, it prints
    /// {"gpus": [{"device", "report" (hex SPDM), "certificateChain" (PEM)}]}
    /// (see docs/gpus.md).
    #[arg(long, value_name = "PROGRAM")]
    pub gpu_evidence_command: Option<PathBuf>,
}

impl GpuArgs {
    pub fn settings(&self) -> Result<GpuSettings> {
        sealpod_cdi::spec::check_kind(&self.gpu_kind).map_err(|e| anyhow::anyhow!("--gpu-kind: {e}"))?;
        let mut settings = GpuSettings {
            kind: self.gpu_kind.clone(),
            disabled: self.no_gpus,
            evidence_command: self.gpu_evidence_command.clone(),
            ..GpuSettings::default()
        };
        if !self.cdi_dir.is_empty() {
            settings.cdi_dirs = self.cdi_dir.clone();
        }
        Ok(settings)
    }
}

#[derive(Args)]
pub struct GpusArgs {
    /// The provider's state directory, whose pods hold the GPUs.
    #[arg(long, default_value = "/var/lib/sealpod")]
    state_dir: PathBuf,
    #[command(flatten)]
    gpus: GpuArgs,
}

/// `sealpod provider gpus`: what the provider sells and who holds it.
pub fn list(args: GpusArgs, json: bool) -> Result<()> {
    let settings = args.gpus.settings()?;
    let inventory = GpuInventory::load(&settings);
    let held = held_by_pods(&args.state_dir);
    if json {
        let gpus: Vec<serde_json::Value> = inventory
            .gpus
            .iter()
            .map(|g| {
                let mut v = serde_json::to_value(g).unwrap_or_default();
                v["pod"] = serde_json::json!(held.get(&g.device));
                v
            })
            .collect();
        let out = serde_json::json!({
            "kind": settings.kind,
            "source": inventory.source,
            "gpus": gpus,
            "free": inventory.free(&held).len(),
            "notes": inventory.notes,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    if inventory.gpus.is_empty() {
        println!("no GPUs to sell as {} (CDI specs in {})", settings.kind, dirs(&settings));
    } else {
        let how = if inventory.source == "cdi" { "from CDI specs" } else { "discovered" };
        println!("{} GPU(s) as {}, {how}, {} free:", inventory.gpus.len(), settings.kind, inventory.free(&held).len());
        for g in &inventory.gpus {
            let memory = g.memory_bytes.map(|m| format!(", {} GiB", m >> 30)).unwrap_or_default();
            let holder = held.get(&g.device).map_or("free".to_string(), |p| format!("held by pod {p}"));
            println!(
                "  {}  {}{memory}  [{}]  {holder}",
                g.device,
                g.model.as_deref().unwrap_or("model unknown"),
                g.nodes.join(" ")
            );
        }
    }
    for note in &inventory.notes {
        println!("note: {note}");
    }
    Ok(())
}

fn dirs(settings: &GpuSettings) -> String {
    settings.cdi_dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", ")
}

/// Which pod holds each device, from the pods' specs in the state directory
/// (read as the provider does, without starting one).
fn held_by_pods(state_dir: &std::path::Path) -> BTreeMap<String, String> {
    let mut held = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(state_dir.join("pods")) else { return held };
    for entry in entries.flatten().take(65536) {
        let Ok(bytes) = std::fs::read(entry.path().join("spec.json")) else { continue };
        let Ok(spec) = serde_json::from_slice::<sealpod_runtime::PodSpec>(&bytes) else { continue };
        for c in &spec.containers {
            for name in &c.devices.names {
                held.insert(name.clone(), spec.pod_id.clone());
            }
        }
    }
    held
}
