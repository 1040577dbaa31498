//! What a pod's cgroups say about it, and freezing it: for metering (CPU time
//! used, peak memory) and for suspending a pod whose payment lapsed. Works on
//! the cgroup v2 unified tree and on v1 controllers (cpuacct, memory, freezer).

use std::fs;
use std::path::{Path, PathBuf};

use crate::spec::pod_cgroup;

const ROOT: &str = "/sys/fs/cgroup";

/// Counters of one pod's cgroup.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CgroupUsage {
    /// CPU time of every process of the pod, user plus system.
    pub cpu_usec: u64,
    /// The pod's memory high-water mark (where the kernel keeps one), else
    /// its current use.
    pub memory_peak_bytes: u64,
}

fn unified(pod_id: &str) -> Option<PathBuf> {
    let p = Path::new(ROOT).join(pod_cgroup(pod_id).trim_start_matches('/'));
    p.join("cgroup.controllers").exists().then_some(p)
}

fn v1(controller: &str, pod_id: &str) -> PathBuf {
    Path::new(ROOT).join(controller).join(pod_cgroup(pod_id).trim_start_matches('/'))
}

fn read_u64(path: &Path) -> Option<u64> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The pod's counters, or `None` when its cgroup is gone.
pub fn usage(pod_id: &str) -> Option<CgroupUsage> {
    if let Some(dir) = unified(pod_id) {
        let stat = fs::read_to_string(dir.join("cpu.stat")).ok()?;
        let cpu_usec =
            stat.lines().find_map(|l| l.strip_prefix("usage_usec ").and_then(|v| v.trim().parse().ok())).unwrap_or(0);
        let memory_peak_bytes =
            read_u64(&dir.join("memory.peak")).or_else(|| read_u64(&dir.join("memory.current"))).unwrap_or(0);
        return Some(CgroupUsage { cpu_usec, memory_peak_bytes });
    }
    let cpu_ns = read_u64(&v1("cpuacct", pod_id).join("cpuacct.usage"))
        .or_else(|| read_u64(&v1("cpu,cpuacct", pod_id).join("cpuacct.usage")))?;
    let mem = v1("memory", pod_id);
    let memory_peak_bytes = read_u64(&mem.join("memory.max_usage_in_bytes"))
        .or_else(|| read_u64(&mem.join("memory.usage_in_bytes")))
        .unwrap_or(0);
    Some(CgroupUsage { cpu_usec: cpu_ns / 1_000, memory_peak_bytes })
}

/// Freezes (or thaws) every process of the pod: they keep their memory and
/// sockets but get no CPU. The shim sees nothing exit, so restarts nothing.
pub fn freeze(pod_id: &str, frozen: bool) -> std::io::Result<()> {
    if let Some(dir) = unified(pod_id) {
        return fs::write(dir.join("cgroup.freeze"), if frozen { "1" } else { "0" });
    }
    let dir = v1("freezer", pod_id);
    if !dir.exists() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("no freezer cgroup for pod {pod_id} at {}", dir.display()),
        ));
    }
    fs::write(dir.join("freezer.state"), if frozen { "FROZEN" } else { "THAWED" })
}

/// Whether the pod is frozen.
pub fn is_frozen(pod_id: &str) -> bool {
    if let Some(dir) = unified(pod_id) {
        return fs::read_to_string(dir.join("cgroup.freeze")).map(|s| s.trim() == "1").unwrap_or(false);
    }
    fs::read_to_string(v1("freezer", pod_id).join("freezer.state")).map(|s| s.trim() == "FROZEN").unwrap_or(false)
}
