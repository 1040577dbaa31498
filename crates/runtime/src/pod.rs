//! The provider's handle on its pods' shims.

use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::logs::{read_log, LogSlice};
use crate::shim::{mounts_under, teardown, FIRST_LISTENER_FD};
use crate::spec::PodSpec;
use crate::status::{process_alive, Phase, PodState, RunState};
use crate::RuntimeError;

/// Pods under one state directory, each owned by a shim process.
#[derive(Debug, Clone)]
pub struct Runtime {
    pods_dir: PathBuf,
    shim_exe: PathBuf,
}

impl Runtime {
    /// A runtime keeping pods under `state_dir/pods`, re-executing `shim_exe`
    /// (the `sealpod` binary) for shims and container starts.
    pub fn new(state_dir: &Path, shim_exe: &Path) -> Result<Runtime, RuntimeError> {
        let pods_dir = state_dir.join("pods");
        std::fs::create_dir_all(&pods_dir)?;
        Ok(Runtime { pods_dir, shim_exe: shim_exe.to_owned() })
    }

    /// The directory of pod `pod_id`.
    pub fn pod_dir(&self, pod_id: &str) -> PathBuf {
        self.pods_dir.join(pod_id)
    }

    /// Starts a shim for `spec`, handing it `listeners` (one per entry of
    /// `spec.ports`), and waits until every container was started once, or
    /// something failed. Returns the pod's state at that point.
    /// Secret volumes' bytes go to the shim through its standard input.
    pub fn create(
        &self,
        spec: &PodSpec,
        listeners: Vec<crate::HostSocket>,
        secrets: Vec<crate::Secret>,
    ) -> Result<PodState, RuntimeError> {
        assert_eq!(listeners.len(), spec.ports.len(), "one listener per port forward");
        for (l, p) in listeners.iter().zip(&spec.ports) {
            if matches!(l, crate::HostSocket::Udp(_)) != p.udp {
                return Err(RuntimeError::Setup(format!("port {}: the socket's protocol is not the port's", p.host)));
            }
        }
        let dir = self.pod_dir(&spec.pod_id);
        std::fs::create_dir_all(&dir)?;
        // Containers traverse the pod directory (for /etc/hosts) as
        // unprivileged ids; nobody but root lists it.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o711))?;
        let mut spec = spec.clone();
        if spec.user_ns.is_none() {
            spec.user_ns = Some(crate::userns::claim(&dir)?);
        }
        if spec.secrets_token.is_empty() {
            let token: [u8; 16] = rand::random();
            spec.secrets_token = token.iter().map(|b| format!("{b:02x}")).collect();
        }
        let spec = &spec;
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(dir.join("spec.json"))?
            .write_all(&serde_json::to_vec_pretty(spec)?)?;
        let log = std::fs::File::create(dir.join("shim.log"))?;
        // Move the listeners above the range they must land in, so that the
        // dup2 calls in the child never clobber one another.
        let high: Vec<OwnedFd> = listeners
            .iter()
            .map(|l| {
                nix::fcntl::fcntl(l, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(64))
                    // SAFETY: F_DUPFD_CLOEXEC returned a new descriptor we now own.
                    .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) })
                    .map_err(std::io::Error::from)
            })
            .collect::<Result<_, _>>()?;
        let raw: Vec<i32> = high.iter().map(|fd| fd.as_raw_fd()).collect();
        let mut cmd = Command::new(&self.shim_exe);
        cmd.arg("shim").arg("--pod-dir").arg(&dir).stdin(Stdio::piped()).stdout(log.try_clone()?).stderr(log);
        // SAFETY: only async-signal-safe calls (setsid, dup2) run between fork
        // and exec.
        unsafe {
            cmd.pre_exec(move || {
                nix::unistd::setsid().map_err(std::io::Error::from)?;
                for (i, fd) in raw.iter().enumerate() {
                    if libc::dup2(*fd, FIRST_LISTENER_FD + i as i32) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn()?;
        drop(high);
        drop(listeners);
        if let Some(stdin) = child.stdin.take() {
            // The shim reads this first; a shim that died early is reported below.
            if let Err(e) = crate::secrets::send(stdin, &secrets) {
                tracing::warn!(pod = %spec.pod_id, error = %e, "could not hand secrets to the shim");
            }
        }
        drop(secrets);
        // Reaped by a thread of its own so an exited shim never lingers as a
        // zombie of a long-running provider. If the provider goes first, the
        // shim is re-parented to init, which reaps it.
        let shim_pid = child.id();
        let mut child = child;
        std::thread::spawn(move || child.wait());
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(state) = PodState::load(&dir) {
                if state.shim_pid == shim_pid && state_settled(&state) {
                    return Ok(state);
                }
            }
            if Instant::now() > deadline {
                return Err(RuntimeError::Timeout("start the pod"));
            }
            if !pid_running(shim_pid) {
                let log = std::fs::read_to_string(dir.join("shim.log")).unwrap_or_default();
                return Err(RuntimeError::Setup(format!("the pod's shim exited: {}", log.trim())));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The spec the pod runs.
    pub fn spec(&self, pod_id: &str) -> Result<PodSpec, RuntimeError> {
        let bytes = std::fs::read(self.pod_dir(pod_id).join("spec.json")).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => RuntimeError::NotFound(pod_id.to_owned()),
            _ => RuntimeError::Io(e),
        })?;
        Ok(serde_json::from_slice(&bytes)?)
    }

    /// The pod's current state. A shim that died without tearing down is
    /// reported as a failed pod.
    pub fn state(&self, pod_id: &str) -> Result<PodState, RuntimeError> {
        let dir = self.pod_dir(pod_id);
        let mut state = PodState::load(&dir).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => RuntimeError::NotFound(pod_id.to_owned()),
            _ => RuntimeError::Io(e),
        })?;
        if !matches!(state.phase, Phase::Deleted) && !process_alive(state.shim_pid, state.shim_start_time) {
            state.phase = Phase::Failed;
            state.message = "the pod's shim is gone; delete the pod to clean up".into();
        }
        Ok(state)
    }

    /// Whether the pod's shim is running.
    pub fn is_running(&self, pod_id: &str) -> bool {
        PodState::load(&self.pod_dir(pod_id)).is_ok_and(|s| process_alive(s.shim_pid, s.shim_start_time))
    }

    /// Reads a slice of a container's log.
    pub fn read_log(&self, pod_id: &str, container: &str, offset: u64, max: usize) -> Result<LogSlice, RuntimeError> {
        Ok(read_log(&self.pod_dir(pod_id).join("logs"), container, offset, max)?)
    }

    /// Stops and removes the pod: asks its shim to tear down (or does it here if
    /// the shim is gone), then deletes the pod directory.
    pub fn delete(&self, pod_id: &str) -> Result<(), RuntimeError> {
        let dir = self.pod_dir(pod_id);
        if !dir.exists() {
            return Err(RuntimeError::NotFound(pod_id.to_owned()));
        }
        let spec = self.stop(&dir);
        // Its processes are gone: the ids can go to the next pod.
        if let Some(range) = spec.ok().and_then(|s| s.user_ns) {
            crate::userns::release(&range, &dir);
        }
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }

    /// Stops the pod's shim (SIGTERM, SIGKILL after 20 s) and makes sure its
    /// teardown is complete; returns the spec it ran.
    fn stop(&self, dir: &Path) -> Result<PodSpec, RuntimeError> {
        if let Ok(state) = PodState::load(dir) {
            if process_alive(state.shim_pid, state.shim_start_time) {
                let pid = nix::unistd::Pid::from_raw(state.shim_pid as i32);
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
                let deadline = Instant::now() + Duration::from_secs(20);
                while process_alive(state.shim_pid, state.shim_start_time) && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(5));
                }
                if process_alive(state.shim_pid, state.shim_start_time) {
                    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
                }
            }
        }
        // Whatever the shim did or did not do, make sure nothing is left.
        let spec = std::fs::read(dir.join("spec.json"))
            .map_err(RuntimeError::from)
            .and_then(|b| serde_json::from_slice::<PodSpec>(&b).map_err(RuntimeError::from));
        if let Ok(spec) = &spec {
            teardown(dir, spec)?;
        }
        let left = mounts_under(dir);
        if !left.is_empty() {
            return Err(RuntimeError::Teardown(format!("mounts still present: {left:?}")));
        }
        spec
    }

    /// The first half of an update: stops the pod's containers and its shim
    /// and removes what belonged to them (root filesystems, writable layers,
    /// ephemeral volumes), keeping what outlives them: the pod's id range,
    /// its persistent volumes and its logs. Returns the spec that ran, for
    /// [`Runtime::create`] to start again should the new one fail.
    ///
    /// The second half is [`Runtime::create`] with the new spec, whose
    /// `user_ns` and `secrets_token` are to be the returned spec's.
    pub fn stop_for_update(&self, pod_id: &str) -> Result<PodSpec, RuntimeError> {
        let dir = self.pod_dir(pod_id);
        if !dir.exists() {
            return Err(RuntimeError::NotFound(pod_id.to_owned()));
        }
        let spec = self.stop(&dir)?;
        for gone in ["containers", "state", "disk", "execs"] {
            match std::fs::remove_dir_all(dir.join(gone)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
                _ => {}
            }
        }
        for gone in ["disk.img", "status.json", "control.sock"] {
            let _ = std::fs::remove_file(dir.join(gone));
        }
        Ok(spec)
    }

    /// Starts `argv` in a running container of the pod; its output is read
    /// with [`Runtime::exec_output`] under the returned id.
    pub fn exec(&self, pod_id: &str, container: &str, argv: Vec<String>) -> Result<String, RuntimeError> {
        use std::io::{BufRead, Write};
        let bytes: [u8; 8] = rand::random();
        let exec_id = format!("x{}", bytes.iter().map(|b| format!("{b:02x}")).collect::<String>());
        let request = crate::shim::ExecRequest { exec_id: exec_id.clone(), container: container.to_owned(), argv };
        let sock = self.pod_dir(pod_id).join("control.sock");
        let mut conn = std::os::unix::net::UnixStream::connect(&sock)
            .map_err(|e| RuntimeError::Container(format!("the pod's shim does not answer: {e}")))?;
        conn.set_read_timeout(Some(Duration::from_secs(30)))?;
        conn.write_all(format!("{}\n", serde_json::to_string(&request)?).as_bytes())?;
        let mut line = String::new();
        std::io::BufReader::new(std::io::Read::take(conn, 64 * 1024)).read_line(&mut line)?;
        let reply: serde_json::Value = serde_json::from_str(&line)?;
        match reply.get("error").and_then(|e| e.as_str()) {
            Some(e) => Err(RuntimeError::Container(e.to_owned())),
            None => Ok(exec_id),
        }
    }

    /// Output of an exec from `offset`, and its exit code once it has exited
    /// and all its output was captured.
    pub fn exec_output(
        &self,
        pod_id: &str,
        exec_id: &str,
        offset: u64,
        max: usize,
    ) -> Result<(LogSlice, Option<i32>), RuntimeError> {
        if exec_id.is_empty() || !exec_id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(RuntimeError::NotFound(exec_id.to_owned()));
        }
        let dir = self.pod_dir(pod_id).join("execs");
        if !dir.join(format!("{exec_id}.log")).exists() {
            return Err(RuntimeError::NotFound(exec_id.to_owned()));
        }
        // Read the exit status first: once it and the end of output are both
        // there, nothing more will be written.
        let exit =
            std::fs::read_to_string(dir.join(format!("{exec_id}.exit"))).ok().and_then(|s| s.trim().parse().ok());
        let done = exit.is_some() && dir.join(format!("{exec_id}.eof")).exists();
        let slice = read_log(&dir, exec_id, offset, max)?;
        Ok((slice, if done { exit } else { None }))
    }

    /// Ids of the pods present on disk.
    pub fn pod_ids(&self) -> Vec<String> {
        std::fs::read_dir(&self.pods_dir)
            .map(|entries| entries.flatten().filter_map(|e| e.file_name().into_string().ok()).collect())
            .unwrap_or_default()
    }
}

/// Whether the shim has finished its first start of every container.
fn state_settled(state: &PodState) -> bool {
    match state.phase {
        Phase::Starting => false,
        Phase::Running => state.containers.iter().all(|c| c.state != RunState::Created),
        _ => true,
    }
}

fn pid_running(pid: u32) -> bool {
    crate::status::process_start_time(pid).is_some()
}
