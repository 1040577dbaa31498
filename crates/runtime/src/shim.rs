//! The per-pod shim: a small supervisor process that owns one pod.
//!
//! The provider starts it (a re-exec of the `sealpod` binary) in a session of
//! its own, so the pod outlives a provider restart. The shim creates the pod's
//! network namespace, mounts each container's root filesystem, starts the
//! containers, captures their output, forwards the pod's ports from the host,
//! restarts containers by policy, reports state in `status.json`, and on
//! SIGTERM tears everything down.
//!
//! Containers are created by a separate short-lived process (`start-container`,
//! another re-exec) because creating one forks, and forking from the shim's
//! multi-threaded runtime is unsafe. The shim is a child subreaper, so each
//! container's init process becomes the shim's child once that helper exits,
//! and the shim alone reaps every child.

use std::collections::HashMap;
use std::fs;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

use crate::logs::{LogWriter, DEFAULT_ROTATE_BYTES};
use crate::netns::{Connector, NetNs};
use crate::scale;
use crate::spec::{disk_path, oci_config, volume_path, ContainerPaths, PodSpec, RestartPolicy, VolumeKind};
use crate::status::{process_start_time, ContainerState, Phase, PodState, RunState};
use crate::storage;
use crate::userns::{self, PodNamespaces};
use crate::RuntimeError;

/// First file descriptor of the host listeners the provider passes to the
/// shim, one per entry of `PodSpec::ports`, in order.
pub const FIRST_LISTENER_FD: i32 = 3;

/// Most connections a pod's port forwards carry at once.
const MAX_FORWARDED_CONNECTIONS: usize = 1024;

/// Runs the shim for the pod in `pod_dir` until it is told to stop. `exe` is
/// the binary to re-exec for `start-container`.
pub fn run_shim(pod_dir: &Path, exe: &Path) -> Result<(), RuntimeError> {
    let spec: PodSpec = serde_json::from_slice(&fs::read(pod_dir.join("spec.json"))?)?;
    // Secret volumes' bytes come on standard input, never from a file.
    let secrets = crate::secrets::receive(std::io::stdin().lock())?;
    nix::sys::prctl::set_child_subreaper(true).map_err(std::io::Error::from)?;
    // Take ownership of the inherited listeners before anything else opens fds.
    let listeners: Vec<crate::HostSocket> = spec
        .ports
        .iter()
        .enumerate()
        .map(|(i, port)| {
            let fd = FIRST_LISTENER_FD + i as i32;
            // SAFETY: the provider placed one socket of the port's protocol at
            // each of these descriptor numbers for this process, and nothing
            // else owns them.
            unsafe {
                if port.udp {
                    crate::HostSocket::Udp(std::net::UdpSocket::from_raw_fd(fd))
                } else {
                    crate::HostSocket::Tcp(std::net::TcpListener::from_raw_fd(fd))
                }
            }
        })
        .collect();

    let mut state = PodState {
        pod_id: spec.pod_id.clone(),
        phase: Phase::Starting,
        containers: spec
            .containers
            .iter()
            .map(|c| ContainerState {
                name: c.name.clone(),
                state: RunState::Created,
                exit_code: None,
                restarts: 0,
                message: String::new(),
                pid: None,
            })
            .collect(),
        message: String::new(),
        shim_pid: std::process::id(),
        shim_start_time: process_start_time(std::process::id()).unwrap_or(0),
        denials: Vec::new(),
        last_wake_us: None,
    };
    state.save(pod_dir)?;

    let prepared = prepare(pod_dir, &spec, &secrets);
    drop(secrets);
    let (netns, userns) = match prepared {
        Ok(ns) => ns,
        Err(e) => {
            state.phase = Phase::Failed;
            state.message = format!("pod setup failed: {e}");
            state.save(pod_dir)?;
            let _ = teardown(pod_dir, &spec);
            return Err(e);
        }
    };
    for c in &spec.containers {
        let paths = ContainerPaths::new(pod_dir, &c.name);
        let user_path = userns.as_ref().map(|f| fd_path(f.as_raw_fd()));
        let net_path = if userns.is_some() { userns::pinned_netns_path(&spec.pod_id) } else { netns.path() };
        // Under a user namespace the containers reach the pod directory
        // through its exposed copy (see `userns::expose_pod_dir`).
        let seen_dir = if userns.is_some() { userns::visible_pod_dir(&spec.pod_id) } else { pod_dir.to_owned() };
        let config = oci_config(&spec, c, &seen_dir, &net_path, user_path.as_deref());
        fs::write(paths.bundle.join("config.json"), serde_json::to_vec_pretty(&config)?)?;
    }
    let connector = netns.connector()?;

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let result = rt.block_on(supervise(pod_dir, exe, &spec, state, listeners, connector));
    drop(netns);
    drop(userns);
    result
}

/// A path to one of this process's descriptors, through which a namespace it
/// holds can be joined.
fn fd_path(fd: i32) -> PathBuf {
    format!("/proc/{}/fd/{fd}", std::process::id()).into()
}

/// Creates the pod's namespaces (user namespace, when the spec maps ids, and
/// network namespace), volumes and container root filesystems.
fn prepare(
    pod_dir: &Path,
    spec: &PodSpec,
    secrets: &[crate::secrets::Secret],
) -> Result<(NetNs, Option<fs::File>), RuntimeError> {
    let (netns, userns) = match &spec.user_ns {
        Some(range) => {
            let ns = PodNamespaces::create(range)
                .map_err(|e| RuntimeError::Setup(format!("the pod's user namespace: {e}")))?;
            userns::pin_netns(&spec.pod_id, &ns.net)?;
            (ns.net, Some(ns.user))
        }
        None => (NetNs::create()?, None),
    };
    fs::write(pod_dir.join("hosts"), format!("127.0.0.1\tlocalhost {0}\n::1\tlocalhost {0}\n", spec.pod_id))?;
    fs::write(pod_dir.join("hostname"), format!("{}\n", spec.pod_id))?;
    let secret_volumes: Vec<(String, String)> = spec
        .volumes
        .iter()
        .filter_map(|v| match &v.kind {
            VolumeKind::Secret { file_name } => Some((v.name.clone(), file_name.clone())),
            _ => None,
        })
        .collect();
    crate::secrets::mount_pod_secrets(&spec.pod_id, &spec.secrets_token, &secret_volumes, secrets)?;
    let disk = disk_path(pod_dir);
    if spec.storage_bytes > 0 && !is_mount_point(&disk) {
        storage::mount_limited(&pod_dir.join("disk.img"), &disk, spec.storage_bytes, (0, 0))?;
    }
    // The pod's root owns its writable directories.
    let root = spec.user_ns.map_or((0, 0), |r| (r.host_base, r.host_base));
    for v in &spec.volumes {
        let path = volume_path(pod_dir, &v.name);
        match v.kind {
            VolumeKind::Secret { .. } => continue,
            VolumeKind::Memory { size_bytes } => {
                fs::create_dir_all(&path)?;
                let mut opts = if size_bytes > 0 { format!("size={size_bytes},mode=0777") } else { "mode=0777".into() };
                opts.push_str(&format!(",uid={},gid={}", root.0, root.1));
                mount("tmpfs", &path, "tmpfs", &opts)?;
            }
            _ if is_mount_point(&path) => continue,
            VolumeKind::LimitedDir { size_bytes } => {
                let image = disk.join("volumes").join(format!(".{}.img", v.name));
                storage::mount_limited(&image, &path, size_bytes, root)?;
            }
            VolumeKind::Persistent { size_bytes } => {
                let image = crate::spec::persistent_image_path(pod_dir, &v.name);
                storage::mount_persistent(&image, &path, size_bytes, root)?;
            }
            VolumeKind::EmptyDir => {
                fs::create_dir_all(&path)?;
                std::os::unix::fs::chown(&path, Some(root.0), Some(root.1))?;
            }
        }
    }
    for c in &spec.containers {
        let p = ContainerPaths::new(pod_dir, &c.name);
        for d in [&p.rootfs, &p.upper, &p.work] {
            fs::create_dir_all(d)?;
        }
        if is_mount_point(&p.rootfs) {
            continue;
        }
        let lower = match (&spec.user_ns, &userns) {
            (Some(range), Some(user)) => {
                fs::create_dir_all(&p.lower)?;
                userns::idmapped_bind(&c.image_rootfs, &p.lower, user)
                    .map_err(|e| RuntimeError::Setup(e.to_string()))?;
                userns::match_image_root(&p.upper, &c.image_rootfs, range)?;
                p.lower.clone()
            }
            _ => c.image_rootfs.clone(),
        };
        let opts = format!("lowerdir={},upperdir={},workdir={}", lower.display(), p.upper.display(), p.work.display());
        let mounted = mount("overlay", &p.rootfs, "overlay", &opts);
        if lower == p.lower {
            // The overlay holds its own clone of the id-mapped layer.
            let _ = nix::mount::umount2(&p.lower, nix::mount::MntFlags::MNT_DETACH);
        }
        mounted?;
    }
    if userns.is_some() {
        userns::expose_pod_dir(&spec.pod_id, pod_dir)?;
    }
    Ok((netns, userns))
}

fn mount(source: &str, target: &Path, fstype: &str, data: &str) -> Result<(), RuntimeError> {
    use nix::mount::MsFlags;
    nix::mount::mount(Some(source), target, Some(fstype), MsFlags::MS_NOSUID | MsFlags::MS_NODEV, Some(data))
        .map_err(|e| RuntimeError::Setup(format!("mount {fstype} on {}: {e}", target.display())))
}

/// Whether something is mounted exactly at `path`.
pub fn is_mount_point(path: &Path) -> bool {
    mounts_under(path).iter().any(|m| m == path)
}

/// Mount points at or below `path`, from /proc/self/mountinfo.
pub fn mounts_under(path: &Path) -> Vec<PathBuf> {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    info.lines().filter_map(|l| l.split(' ').nth(4)).map(unescape_mountinfo).filter(|p| p.starts_with(path)).collect()
}

fn unescape_mountinfo(s: &str) -> PathBuf {
    // mountinfo escapes space, tab, newline and backslash as \ooo.
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    PathBuf::from(<std::ffi::OsString as std::os::unix::ffi::OsStringExt>::from_vec(out))
}

enum Event {
    Restart(usize),
    Denied(&'static str, String),
    Exec(ExecRequest, tokio::sync::oneshot::Sender<Result<(), String>>),
    /// A connection arrived: the pod is to run, and the sender told once
    /// its containers have started.
    Wake(tokio::sync::oneshot::Sender<bool>),
    /// The grace period of the stop with this number is over.
    KillStopped(u64),
    /// A woken pod's port accepted its first connection, this long after
    /// the connection came.
    Woke(Duration),
}

/// A request on the shim's control socket: run a command in a container.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct ExecRequest {
    /// Names the exec's output files.
    pub exec_id: String,
    /// The container to run in.
    pub container: String,
    /// The command.
    pub argv: Vec<String>,
}

/// Most denials kept in the pod's status.
const MAX_DENIALS: usize = 20;

/// A pipe whose read end is copied into `dir/<name>.log` by a thread; when the
/// last write end closes the thread writes `dir/<name>.eof`. `None` rotation
/// means the default size.
fn log_pipe(dir: &Path, name: &str, rotate: Option<u64>) -> Result<OwnedFd, RuntimeError> {
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(std::io::Error::from)?;
    let mut writer = LogWriter::open(dir, name, rotate.unwrap_or(DEFAULT_ROTATE_BYTES))?;
    let eof = dir.join(format!("{name}.eof"));
    std::thread::Builder::new().name(format!("log-{name}")).spawn(move || {
        let mut file = fs::File::from(read);
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match std::io::Read::read(&mut file, &mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if let Err(e) = writer.append(&buf[..n]) {
                        eprintln!("log write failed: {e}");
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        let _ = fs::write(eof, b"");
    })?;
    Ok(write)
}

/// Accepts exec requests, one JSON line each, answered with one JSON line.
async fn serve_control(listener: tokio::net::UnixListener, events: mpsc::UnboundedSender<Event>) {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    loop {
        let Ok((conn, _)) = listener.accept().await else { continue };
        let events = events.clone();
        tokio::spawn(async move {
            let (read, mut write) = conn.into_split();
            let mut line = String::new();
            let mut reader = BufReader::new(read.take(64 * 1024));
            let reply = match reader.read_line(&mut line).await {
                Ok(_) => match serde_json::from_str::<ExecRequest>(&line) {
                    Ok(req) => {
                        let (tx, rx) = tokio::sync::oneshot::channel();
                        let _ = events.send(Event::Exec(req, tx));
                        rx.await.unwrap_or_else(|_| Err("shim is stopping".into()))
                    }
                    Err(e) => Err(format!("bad control request: {e}")),
                },
                Err(e) => Err(e.to_string()),
            };
            let json = match reply {
                Ok(()) => serde_json::json!({"ok": true}),
                Err(e) => serde_json::json!({"error": e}),
            };
            let _ = write.write_all(format!("{json}\n").as_bytes()).await;
        });
    }
}

struct Supervisor<'a> {
    pod_dir: &'a Path,
    exe: &'a Path,
    spec: &'a PodSpec,
    state: PodState,
    /// Write ends of each container's log pipe, kept for restarts.
    log_pipes: Vec<OwnedFd>,
    /// Helper pid -> what it starts.
    helpers: HashMap<i32, Helper>,
    /// Exec process pid -> exec id.
    execs: HashMap<i32, String>,
    /// Exits of processes not yet claimed (an init that exits before its
    /// helper does).
    unclaimed: HashMap<i32, i32>,
    events: mpsc::UnboundedSender<Event>,
    /// Scaled to zero: the containers are stopped (or stopping) until a
    /// connection wakes the pod.
    asleep: bool,
    /// Containers signalled to stop for scaling to zero, not yet exited.
    stopping: std::collections::HashSet<usize>,
    /// Stops so far; numbers each stop's grace timer.
    stops: u64,
    /// Connections waiting for the pod's containers to start.
    wakers: Vec<tokio::sync::oneshot::Sender<bool>>,
    /// The containers were started for the waiting connections (so they
    /// may need a moment before they listen).
    woke: bool,
}

async fn supervise(
    pod_dir: &Path,
    exe: &Path,
    spec: &PodSpec,
    state: PodState,
    listeners: Vec<crate::HostSocket>,
    connector: Connector,
) -> Result<(), RuntimeError> {
    let mut sigchld = signal(SignalKind::child())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let (events_tx, mut events) = mpsc::unbounded_channel();

    let mut log_pipes = Vec::new();
    for c in &spec.containers {
        log_pipes.push(log_pipe(&pod_dir.join("logs"), &c.name, None)?);
    }

    if let Some(policy) = &spec.egress {
        let listener = connector.listen(policy.proxy_port)?;
        listener.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let (tx, mut rx) = mpsc::unbounded_channel();
        tokio::spawn(crate::egress::serve(listener, Arc::new(policy.clone()), tx));
        let events = events_tx.clone();
        tokio::spawn(async move {
            while let Some(reason) = rx.recv().await {
                let _ = events.send(Event::Denied("egress", reason));
            }
        });
    }
    let control = tokio::net::UnixListener::bind(pod_dir.join("control.sock"))?;
    tokio::spawn(serve_control(control, events_tx.clone()));

    let connections = Arc::new(tokio::sync::Semaphore::new(MAX_FORWARDED_CONNECTIONS));
    let activity = scale::Activity::new();
    let waker = spec.scale_to_zero.map(|_| events_tx.clone());
    let started = std::time::Instant::now();
    for (listener, forward) in listeners.into_iter().zip(&spec.ports) {
        match listener {
            crate::HostSocket::Tcp(listener) => {
                listener.set_nonblocking(true)?;
                let listener = tokio::net::TcpListener::from_std(listener)?;
                let through = Through {
                    connections: connections.clone(),
                    activity: activity.clone(),
                    waker: waker.clone(),
                    started,
                };
                tokio::spawn(forward_port(listener, forward.target_port, connector.clone(), through));
            }
            crate::HostSocket::Udp(socket) => {
                socket.set_nonblocking(true)?;
                let socket = tokio::net::UdpSocket::from_std(socket)?;
                let wake = waker.clone().map(|waker| -> crate::udp::Wake {
                    Arc::new(move || {
                        let waker = waker.clone();
                        Box::pin(async move {
                            let (tx, rx) = tokio::sync::oneshot::channel();
                            waker.send(Event::Wake(tx)).ok()?;
                            rx.await.ok()
                        })
                    })
                });
                let relay = crate::udp::Relay { activity: activity.clone(), wake };
                tokio::spawn(crate::udp::relay(socket, forward.target_port, connector.clone(), relay));
            }
        }
    }

    let mut sup = Supervisor {
        pod_dir,
        exe,
        spec,
        state,
        log_pipes,
        helpers: HashMap::new(),
        execs: HashMap::new(),
        unclaimed: HashMap::new(),
        events: events_tx,
        asleep: spec.scale_to_zero.is_some(),
        stopping: std::collections::HashSet::new(),
        stops: 0,
        wakers: Vec::new(),
        woke: false,
    };
    if sup.asleep {
        // Scaled to zero from the start: the first connection starts it.
        for c in &mut sup.state.containers {
            c.state = RunState::Exited;
            c.message = SCALED_DOWN.into();
        }
    } else {
        for i in 0..spec.containers.len() {
            sup.start(i);
        }
    }
    sup.save();
    let mut idle_check = tokio::time::interval(Duration::from_millis(250));
    idle_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);

    loop {
        tokio::select! {
            _ = sigchld.recv() => sup.reap(),
            Some(event) = events.recv() => match event {
                Event::Denied(kind, detail) => {
                    eprintln!("denied {kind}: {detail}");
                    sup.state.denials.push(crate::status::DenialRecord { unix_seconds: now(), kind: kind.into(), detail });
                    let excess = sup.state.denials.len().saturating_sub(MAX_DENIALS);
                    sup.state.denials.drain(..excess);
                    sup.save();
                }
                Event::Exec(req, reply) => {
                    let _ = reply.send(sup.exec(req));
                }
                Event::Restart(i) => {
                    if sup.state.containers[i].state == RunState::Restarting && !sup.asleep {
                        sup.state.containers[i].restarts += 1;
                        sup.start(i);
                        sup.save();
                    }
                }
                Event::Wake(reply) => {
                    activity.reset();
                    sup.wake(reply);
                    sup.save();
                }
                Event::KillStopped(stop) => sup.kill_stopped(stop),
                Event::Woke(took) => {
                    sup.state.last_wake_us = Some(took.as_micros() as u64);
                    sup.save();
                }
            },
            _ = idle_check.tick(), if spec.scale_to_zero.is_some() && !sup.asleep => {
                let idle = spec.scale_to_zero.map(|s| Duration::from_millis(s.idle_ms)).unwrap_or(Duration::MAX);
                if activity.idle_for().is_some_and(|for_| for_ >= idle) && sup.helpers.is_empty() {
                    sup.sleep();
                    sup.save();
                }
            }
            _ = sigterm.recv() => break,
            _ = sigint.recv() => break,
        }
    }
    sup.state.phase = Phase::Stopping;
    sup.save();
    let result = tokio::task::block_in_place(|| teardown(pod_dir, spec));
    // Reap whatever the teardown killed.
    while let Ok(status) = waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
        if matches!(status, WaitStatus::StillAlive) {
            break;
        }
    }
    sup.state.phase = if result.is_ok() { Phase::Deleted } else { Phase::Failed };
    if let Err(e) = &result {
        sup.state.message = format!("teardown incomplete: {e}");
    }
    for c in &mut sup.state.containers {
        c.pid = None;
        if c.state != RunState::Exited {
            c.state = RunState::Exited;
        }
    }
    sup.save();
    result
}

impl Supervisor<'_> {
    fn save(&mut self) {
        self.state.phase = self.phase();
        if let Err(e) = self.state.save(self.pod_dir) {
            eprintln!("cannot write pod status: {e}");
        }
    }

    fn phase(&self) -> Phase {
        let cs = &self.state.containers;
        // Scaled to zero once the stopped containers have exited; until then
        // they still run.
        if self.asleep && self.stopping.is_empty() {
            return Phase::ScaledToZero;
        }
        if cs.iter().all(|c| c.state == RunState::Exited) {
            if cs.iter().all(|c| c.exit_code == Some(0)) {
                Phase::Succeeded
            } else {
                Phase::Failed
            }
        } else if cs.iter().any(|c| c.state == RunState::Created) {
            Phase::Starting
        } else {
            Phase::Running
        }
    }

    /// Launches the helper that creates and starts container `i`.
    fn start(&mut self, i: usize) {
        let c = &self.spec.containers[i];
        let paths = ContainerPaths::new(self.pod_dir, &c.name);
        let pid_file = paths.bundle.join("init.pid");
        let _ = fs::remove_file(&pid_file);
        let out = self.log_pipes[i].try_clone();
        let err = self.log_pipes[i].try_clone();
        let spawned = match (out, err) {
            (Ok(out), Ok(err)) => Command::new(self.exe)
                .arg("start-container")
                .arg("--root")
                .arg(self.pod_dir.join("state"))
                .arg("--id")
                .arg(&c.name)
                .arg("--bundle")
                .arg(&paths.bundle)
                .arg("--pid-file")
                .arg(&pid_file)
                .stdin(Stdio::null())
                .stdout(Stdio::from(out))
                .stderr(Stdio::from(err))
                .spawn(),
            (Err(e), _) | (_, Err(e)) => Err(e),
        };
        let cs = &mut self.state.containers[i];
        match spawned {
            Ok(child) => {
                self.helpers.insert(child.id() as i32, Helper::Start(i));
                cs.state = RunState::Created;
                cs.message.clear();
                // The child handle is dropped on purpose: this process reaps
                // every child itself in `reap`.
                drop(child);
            }
            Err(e) => {
                cs.message = format!("cannot launch start-container: {e}");
                self.exited(i, 127);
            }
        }
    }

    fn reap(&mut self) {
        loop {
            let (pid, code) = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid.as_raw(), code),
                Ok(WaitStatus::Signaled(pid, sig, _)) => (pid.as_raw(), 128 + sig as i32),
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => continue,
            };
            if let Some(helper) = self.helpers.remove(&pid) {
                match helper {
                    Helper::Start(i) => self.helper_done(i, code),
                    Helper::Exec(id) => self.exec_helper_done(id, code),
                }
            } else if let Some(id) = self.execs.remove(&pid) {
                write_exit(&self.pod_dir.join("execs"), &id, code);
            } else if let Some(i) = self.state.containers.iter().position(|c| c.pid == Some(pid)) {
                self.exited(i, code);
            } else {
                self.unclaimed.insert(pid, code);
            }
        }
        self.save();
    }

    /// Launches the helper that runs a command in a running container.
    fn exec(&mut self, req: ExecRequest) -> Result<(), String> {
        let ok_id = !req.exec_id.is_empty()
            && req.exec_id.len() <= 64
            && req.exec_id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !ok_id {
            return Err("invalid exec id".into());
        }
        let Some(i) = self.spec.containers.iter().position(|c| c.name == req.container) else {
            return Err(format!("no container {:?}", req.container));
        };
        if self.state.containers[i].state != RunState::Running {
            return Err(format!("container {} is not running", req.container));
        }
        if req.argv.is_empty() {
            return Err("empty command".into());
        }
        let dir = self.pod_dir.join("execs");
        fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        forget_old_execs(&dir, MAX_FINISHED_EXECS);
        let out = log_pipe(&dir, &req.exec_id, None).map_err(|e| e.to_string())?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let child = Command::new(self.exe)
            .arg("exec-container")
            .arg("--root")
            .arg(self.pod_dir.join("state"))
            .arg("--id")
            .arg(&req.container)
            .arg("--pid-file")
            .arg(dir.join(format!("{}.pid", req.exec_id)))
            .arg("--")
            .args(&req.argv)
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .map_err(|e| format!("cannot launch exec-container: {e}"))?;
        self.helpers.insert(child.id() as i32, Helper::Exec(req.exec_id));
        Ok(())
    }

    fn exec_helper_done(&mut self, id: String, code: i32) {
        let dir = self.pod_dir.join("execs");
        let pid = fs::read_to_string(dir.join(format!("{id}.pid"))).ok().and_then(|s| s.trim().parse::<i32>().ok());
        match (code, pid) {
            (0, Some(pid)) => match self.unclaimed.remove(&pid) {
                Some(code) => write_exit(&dir, &id, code),
                None => {
                    self.execs.insert(pid, id);
                }
            },
            _ => write_exit(&dir, &id, if code == 0 { 127 } else { code }),
        }
    }

    fn helper_done(&mut self, i: usize, code: i32) {
        self.helper_result(i, code);
        self.release_wakers();
    }

    fn helper_result(&mut self, i: usize, code: i32) {
        let name = self.spec.containers[i].name.clone();
        let pid_file = ContainerPaths::new(self.pod_dir, &name).bundle.join("init.pid");
        let pid = fs::read_to_string(&pid_file).ok().and_then(|s| s.trim().parse::<i32>().ok());
        match (code, pid) {
            (0, Some(pid)) => {
                let c = &mut self.state.containers[i];
                c.state = RunState::Running;
                c.pid = Some(pid);
                c.message.clear();
                if let Some(code) = self.unclaimed.remove(&pid) {
                    self.exited(i, code);
                }
            }
            _ => {
                self.state.containers[i].message =
                    format!("container failed to start (start-container exited with {code}); see its logs");
                self.exited(i, 127);
            }
        }
    }

    /// Container `i`'s process ended with `code`: restart it or let it rest.
    fn exited(&mut self, i: usize, code: i32) {
        if self.stopping.remove(&i) {
            // Stopped on purpose, to scale to zero: no restart, and a wake
            // that came meanwhile starts it now.
            let c = &mut self.state.containers[i];
            c.pid = None;
            c.exit_code = Some(code);
            c.state = RunState::Exited;
            c.message = SCALED_DOWN.into();
            if !self.asleep {
                self.start(i);
            }
            return;
        }
        let restart = match self.spec.restart {
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => code != 0,
            RestartPolicy::Never => false,
        };
        let c = &mut self.state.containers[i];
        c.pid = None;
        c.exit_code = Some(code);
        if restart {
            c.state = RunState::Restarting;
            // Exponential back-off: 0.5 s, 1 s, 2 s … capped at 30 s.
            let delay =
                Duration::from_millis(500u64.saturating_mul(1 << c.restarts.min(6))).min(Duration::from_secs(30));
            let events = self.events.clone();
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let _ = events.send(Event::Restart(i));
            });
        } else {
            c.state = RunState::Exited;
        }
    }
}

impl Supervisor<'_> {
    /// Starts the containers of a pod scaled to zero; `reply` is told once
    /// they have started (at once when they run).
    fn wake(&mut self, reply: tokio::sync::oneshot::Sender<bool>) {
        self.wakers.push(reply);
        if self.asleep {
            self.asleep = false;
            self.woke = true;
            // A connection came while the containers were stopping: they are
            // killed now rather than after their grace, to start again sooner.
            let stop = self.stops;
            self.kill_stopped(stop);
            for i in 0..self.spec.containers.len() {
                // One still stopping is started when it has exited.
                if !self.stopping.contains(&i) && self.state.containers[i].pid.is_none() {
                    self.start(i);
                }
            }
        }
        self.release_wakers();
    }

    /// Tells the waiting connections once no container is starting.
    fn release_wakers(&mut self) {
        let starting =
            !self.stopping.is_empty() || self.state.containers.iter().any(|c| matches!(c.state, RunState::Created));
        if !starting {
            for reply in self.wakers.drain(..) {
                let _ = reply.send(self.woke);
            }
            self.woke = false;
        }
    }

    /// Stops every container (SIGTERM, then SIGKILL after a grace period):
    /// the pod has been idle long enough.
    fn sleep(&mut self) {
        self.asleep = true;
        self.stops += 1;
        for (i, c) in self.state.containers.iter_mut().enumerate() {
            match c.pid {
                Some(pid) => {
                    self.stopping.insert(i);
                    let _ = nix::sys::signal::kill(Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM);
                }
                None => {
                    c.state = RunState::Exited;
                    c.message = SCALED_DOWN.into();
                }
            }
        }
        eprintln!("scaled to zero after {} ms without a connection", self.spec.scale_to_zero.map_or(0, |s| s.idle_ms));
        let (events, stop) = (self.events.clone(), self.stops);
        tokio::spawn(async move {
            tokio::time::sleep(scale::STOP_GRACE).await;
            let _ = events.send(Event::KillStopped(stop));
        });
    }

    /// Kills what a stop left running once its grace period is over. (A
    /// container's init that ignores SIGTERM, as a process without a handler
    /// does as pid 1, ends here.)
    fn kill_stopped(&mut self, stop: u64) {
        if stop != self.stops {
            return;
        }
        for &i in &self.stopping {
            if let Some(pid) = self.state.containers[i].pid {
                let _ = nix::sys::signal::kill(Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            }
        }
    }
}

/// What a stopped container of a pod scaled to zero says.
const SCALED_DOWN: &str = "stopped: the pod scaled to zero; the next connection starts it";

/// How a forwarded connection is accounted for.
struct Through {
    /// Connections forwarded at once, all ports together.
    connections: Arc<tokio::sync::Semaphore>,
    /// Open connections and idle time, for scaling to zero.
    activity: Arc<scale::Activity>,
    /// For pods that scale to zero: where to ask for the pod to run.
    waker: Option<mpsc::UnboundedSender<Event>>,
    /// When the shim started the containers: a connection that comes before
    /// they listen (a new pod, or one just updated) waits for them rather
    /// than being closed.
    started: std::time::Instant,
}

/// What a helper process was launched for.
enum Helper {
    /// Starting container `i`.
    Start(usize),
    /// Running an exec with this id.
    Exec(String),
}

/// Finished execs whose output is kept for `exec` to read; older ones go,
/// so a pod that execs without end cannot fill the provider's disk.
const MAX_FINISHED_EXECS: usize = 32;

/// Removes the files of all but the `keep` most recent finished execs.
fn forget_old_execs(dir: &Path, keep: usize) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    let mut finished: Vec<(std::time::SystemTime, String)> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let id = name.strip_suffix(".exit")?.to_owned();
            Some((e.metadata().and_then(|m| m.modified()).ok()?, id))
        })
        .collect();
    if finished.len() <= keep {
        return;
    }
    finished.sort();
    for (_, id) in &finished[..finished.len() - keep] {
        for suffix in ["log", "log.1", "log.base", "eof", "exit", "pid"] {
            let _ = fs::remove_file(dir.join(format!("{id}.{suffix}")));
        }
    }
}

fn write_exit(dir: &Path, id: &str, code: i32) {
    let tmp = dir.join(format!("{id}.exit.tmp"));
    if fs::write(&tmp, code.to_string()).is_ok() {
        let _ = fs::rename(tmp, dir.join(format!("{id}.exit")));
    }
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

async fn forward_port(listener: tokio::net::TcpListener, target_port: u16, connector: Connector, through: Through) {
    let through = Arc::new(through);
    loop {
        let Ok((mut inbound, _)) = listener.accept().await else {
            continue;
        };
        let Ok(permit) = through.connections.clone().try_acquire_owned() else {
            // Over the limit: refuse by closing rather than queueing forever.
            continue;
        };
        let (connector, through) = (connector.clone(), through.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let _open = through.activity.begin();
            let came = std::time::Instant::now();
            let woken = match &through.waker {
                Some(waker) => {
                    let (tx, rx) = tokio::sync::oneshot::channel();
                    if waker.send(Event::Wake(tx)).is_err() {
                        return;
                    }
                    match rx.await {
                        Ok(woken) => woken,
                        Err(_) => return,
                    }
                }
                None => false,
            };
            // A container just woken or started needs a moment before it listens.
            let patience =
                if woken { scale::WAKE_TIMEOUT } else { scale::WAKE_TIMEOUT.saturating_sub(through.started.elapsed()) };
            let outbound = scale::connect_when_listening(patience, move || connector.connect(target_port)).await;
            let Ok(outbound) = outbound else { return };
            if let (true, Some(waker)) = (woken, &through.waker) {
                let _ = waker.send(Event::Woke(came.elapsed()));
            }
            if outbound.set_nonblocking(true).is_err() {
                return;
            }
            let Ok(mut outbound) = tokio::net::TcpStream::from_std(outbound) else {
                return;
            };
            let _ = inbound.set_nodelay(true);
            let _ = outbound.set_nodelay(true);
            let _ = tokio::io::copy_bidirectional_with_sizes(&mut inbound, &mut outbound, 64 * 1024, 64 * 1024).await;
        });
    }
}

/// Removes every trace of a running pod: its containers (killed), their
/// cgroups, the root filesystem and volume mounts. Safe to run again, and
/// safe to run from a process other than the shim (when the shim is gone).
pub fn teardown(pod_dir: &Path, spec: &PodSpec) -> Result<(), RuntimeError> {
    use libcontainer::container::Container;
    use libcontainer::signal::Signal;
    let root = pod_dir.join("state");
    let mut problems = Vec::new();
    let mut loaded = Vec::new();
    for c in &spec.containers {
        let dir = root.join(&c.name);
        if !dir.exists() {
            continue;
        }
        match Container::load(dir) {
            Ok(mut container) => {
                let _ = container.kill(Signal::try_from("SIGTERM").expect("SIGTERM is a signal"), true);
                loaded.push(container);
            }
            Err(e) => problems.push(format!("{}: {e}", c.name)),
        }
    }
    // Give processes a moment to exit on SIGTERM before SIGKILL.
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while std::time::Instant::now() < deadline
        && loaded.iter_mut().any(|c| c.refresh_status().is_ok() && c.pid().is_some_and(|p| pid_alive(p.as_raw())))
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    for mut c in loaded {
        if let Err(e) = c.delete(true) {
            problems.push(format!("{}: {e}", c.id()));
        }
    }
    // The containers' view of the pod directory first, then root
    // filesystems, volumes and the pod's disk under them (deepest first);
    // the layout of pods from older versions included.
    userns::hide_pod_dir(&spec.pod_id, &mut problems);
    unmount_all(pod_dir, &mut problems);
    crate::secrets::unmount_pod_secrets(&spec.pod_id, &mut problems);
    userns::unpin_netns(&spec.pod_id, &mut problems);
    remove_pod_cgroups(&spec.pod_id, &mut problems);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(RuntimeError::Teardown(problems.join("; ")))
    }
}

fn pid_alive(pid: i32) -> bool {
    nix::sys::signal::kill(Pid::from_raw(pid), None).is_ok()
        && !fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| s.rfind(')').is_some_and(|i| s[i + 1..].trim_start().starts_with('Z')))
            .unwrap_or(true)
}

fn unmount_all(path: &Path, problems: &mut Vec<String>) {
    let mut mounts = mounts_under(path);
    // Deepest first.
    mounts.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    for m in mounts {
        if let Err(e) = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH) {
            problems.push(format!("unmount {}: {e}", m.display()));
        }
    }
}

/// Removes the pod's cgroup in every hierarchy (cgroup v1 controllers or the
/// v2 unified tree). The containers' own cgroups were removed by delete.
fn remove_pod_cgroups(pod_id: &str, problems: &mut Vec<String>) {
    let rel = crate::spec::pod_cgroup(pod_id);
    let rel = rel.trim_start_matches('/');
    let Ok(entries) = fs::read_dir("/sys/fs/cgroup") else {
        return;
    };
    let mut dirs = vec![Path::new("/sys/fs/cgroup").join(rel)];
    for e in entries.flatten() {
        dirs.push(e.path().join(rel));
    }
    for dir in dirs {
        if !dir.is_dir() {
            continue;
        }
        // Leftover child cgroups first (a container whose delete failed).
        if let Ok(children) = fs::read_dir(&dir) {
            for child in children.flatten() {
                if child.path().is_dir() {
                    let _ = fs::remove_dir(child.path());
                }
            }
        }
        if let Err(e) = fs::remove_dir(&dir) {
            problems.push(format!("remove cgroup {}: {e}", dir.display()));
        }
    }
}

/// The `start-container` helper: creates and starts one container with
/// libcontainer, then exits, leaving the container's init process to the shim.
/// Runs in a fresh single-threaded process.
pub fn start_container(root: &Path, id: &str, bundle: &Path, pid_file: &Path) -> Result<(), RuntimeError> {
    use libcontainer::container::builder::ContainerBuilder;
    use libcontainer::container::Container;
    use libcontainer::syscall::syscall::SyscallType;
    let previous = root.join(id);
    if previous.exists() {
        // A restart: the exited container must go before its id can be reused.
        Container::load(previous)
            .and_then(|mut c| c.delete(true))
            .map_err(|e| RuntimeError::Container(format!("removing the previous run: {e}")))?;
    }
    let profile = crate::seccomp::Profile::default_for_containers().map_err(|e| RuntimeError::Setup(e.to_string()))?;
    let mut container = ContainerBuilder::new(id.to_owned(), SyscallType::default())
        .with_executor(crate::seccomp::SeccompExecutor::new(profile))
        .with_root_path(root)
        .and_then(|b| b.with_pid_file(Some(pid_file)))
        .and_then(|b| b.validate_id())
        .map_err(|e| RuntimeError::Container(e.to_string()))?
        .as_init(bundle)
        .with_systemd(false)
        .with_detach(true)
        .build()
        .map_err(|e| RuntimeError::Container(format!("create: {e}")))?;
    container.start().map_err(|e| RuntimeError::Container(format!("start: {e}")))?;
    Ok(())
}

/// The `exec-container` helper: runs `argv` in running container `id` with the
/// container's environment and working directory, then exits, leaving the new
/// process to the shim. Runs in a fresh single-threaded process.
pub fn exec_container(root: &Path, id: &str, pid_file: &Path, argv: Vec<String>) -> Result<(), RuntimeError> {
    use libcontainer::container::builder::ContainerBuilder;
    use libcontainer::container::Container;
    use libcontainer::syscall::syscall::SyscallType;
    let container = Container::load(root.join(id)).map_err(|e| RuntimeError::Container(e.to_string()))?;
    let config: serde_json::Value = serde_json::from_slice(&fs::read(container.bundle().join("config.json"))?)?;
    let env: HashMap<String, String> = config["process"]["env"]
        .as_array()
        .map(|a| {
            a.iter().filter_map(|e| e.as_str()?.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned()))).collect()
        })
        .unwrap_or_default();
    let cwd = config["process"]["cwd"].as_str().map(PathBuf::from);
    let profile = crate::seccomp::Profile::default_for_containers().map_err(|e| RuntimeError::Setup(e.to_string()))?;
    ContainerBuilder::new(id.to_owned(), SyscallType::default())
        .with_executor(crate::seccomp::SeccompExecutor::new(profile))
        .with_root_path(root)
        .and_then(|b| b.with_pid_file(Some(pid_file)))
        .map_err(|e| RuntimeError::Container(e.to_string()))?
        .as_tenant()
        .with_container_args(argv)
        .with_env(env)
        .with_cwd(cwd)
        .with_no_new_privs(true)
        .with_detach(true)
        .build()
        .map_err(|e| RuntimeError::Container(format!("exec: {e}")))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_most_recent_finished_execs_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..5 {
            let id = format!("x{i}");
            fs::write(dir.path().join(format!("{id}.log")), b"out").unwrap();
            fs::write(dir.path().join(format!("{id}.exit")), b"0").unwrap();
            std::thread::sleep(Duration::from_millis(5));
        }
        // A running exec has no exit file yet and is never removed.
        fs::write(dir.path().join("xrun.log"), b"out").unwrap();
        forget_old_execs(dir.path(), 2);
        let mut left: Vec<String> =
            fs::read_dir(dir.path()).unwrap().flatten().map(|e| e.file_name().into_string().unwrap()).collect();
        left.sort();
        assert_eq!(left, ["x3.exit", "x3.log", "x4.exit", "x4.log", "xrun.log"]);
    }
}
