//! The pod's state as its shim reports it, in `status.json`.

use std::io;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// What the shim last wrote about its pod.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PodState {
    /// The pod.
    pub pod_id: String,
    /// Where the pod is in its life.
    pub phase: Phase,
    /// One entry per container, in spec order.
    pub containers: Vec<ContainerState>,
    /// Why the pod is in its phase, when that needs saying.
    pub message: String,
    /// The shim process.
    pub shim_pid: u32,
    /// The shim's start time in clock ticks since boot, so a recycled pid is
    /// never mistaken for the shim.
    pub shim_start_time: u64,
    /// Recent refusals (egress), newest last.
    #[serde(default)]
    pub denials: Vec<DenialRecord>,
    /// The last wake of a pod that scales to zero: microseconds from the
    /// connection that woke it to its port accepting, i.e. the containers'
    /// own start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_wake_us: Option<u64>,
}

/// Something the pod tried and was refused.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DenialRecord {
    /// When, in seconds since the Unix epoch.
    pub unix_seconds: u64,
    /// `egress` or `exec`.
    pub kind: String,
    /// What was refused and why.
    pub detail: String,
}

/// Pod phases.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Setting up or starting containers.
    Starting,
    /// Every container has been started (some may be restarting).
    Running,
    /// Every container exited successfully and none will restart.
    Succeeded,
    /// A container failed and will not restart, or setup failed.
    Failed,
    /// Its containers are stopped until a connection to one of its ports
    /// starts them (a pod with `replicas.min == 0` that was idle).
    ScaledToZero,
    /// Being torn down.
    Stopping,
    /// Torn down; nothing of it is left.
    Deleted,
}

/// One container's state.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ContainerState {
    /// Container name.
    pub name: String,
    /// What it is doing.
    pub state: RunState,
    /// Exit code of the last run (128 + signal number when killed).
    pub exit_code: Option<i32>,
    /// How often it was restarted.
    pub restarts: u32,
    /// What went wrong, if anything.
    pub message: String,
    /// The container's init process, while it runs.
    pub pid: Option<i32>,
}

/// Container run states.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum RunState {
    /// Being created.
    Created,
    /// Its process runs.
    Running,
    /// Exited, waiting to be restarted.
    Restarting,
    /// Exited for good.
    Exited,
}

impl PodState {
    /// Writes the state atomically (temporary file, then rename).
    pub fn save(&self, pod_dir: &Path) -> io::Result<()> {
        let tmp = pod_dir.join("status.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(self)?)?;
        std::fs::rename(tmp, pod_dir.join("status.json"))
    }

    /// Reads the last state written.
    pub fn load(pod_dir: &Path) -> io::Result<PodState> {
        let bytes = std::fs::read(pod_dir.join("status.json"))?;
        serde_json::from_slice(&bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }
}

/// Start time of process `pid` in clock ticks since boot, if it exists.
pub fn process_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: fields resume after
    // the last ')'. starttime is field 22, the 20th after the name.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Whether the process that was `pid` with this start time still runs.
pub fn process_alive(pid: u32, start_time: u64) -> bool {
    process_start_time(pid) == Some(start_time) && !is_zombie(pid)
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rfind(')').map(|i| s[i + 1..].trim_start().starts_with('Z')))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_alive_and_a_wrong_start_time_is_not() {
        let me = std::process::id();
        let t = process_start_time(me).unwrap();
        assert!(process_alive(me, t));
        assert!(!process_alive(me, t + 1));
    }
}
