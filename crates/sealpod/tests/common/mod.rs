//! Helpers shared by the end-to-end tests: running the CLI, a provider
//! process, the sample image.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const SEALPOD: &str = env!("CARGO_BIN_EXE_sealpod");
pub const SAMPLE: &str = env!("CARGO_BIN_EXE_sealpod-sample");

pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| s.lines().any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0")))
        .unwrap_or(false)
}

pub fn sealpod(home: &Path, args: &[&str]) -> Output {
    Command::new(SEALPOD).arg("--home").arg(home).args(args).output().expect("run sealpod")
}

pub fn ok_json(out: Output) -> Value {
    assert!(
        out.status.success(),
        "sealpod failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

pub struct Provider {
    pub child: Child,
    pub addr: String,
    pub quic_addr: String,
}

impl Provider {
    /// Starts `sealpod provider run` with its state in `dir/provider` and
    /// images from `dir/images`, on loopback TCP `port` and QUIC.
    pub fn start(dir: &Path, port: u16) -> Provider {
        Provider::start_with(dir, port, &[])
    }

    /// [`Provider::start`] with more `provider run` arguments.
    pub fn start_with(dir: &Path, port: u16, extra: &[&str]) -> Provider {
        let ready = dir.join("ready.json");
        let _ = std::fs::remove_file(&ready);
        let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("provider.log")).unwrap();
        let child = Command::new(SEALPOD)
            .args(["provider", "run", "--expose-ip", "127.0.0.1", "--listen"])
            .arg(format!("/ip4/127.0.0.1/tcp/{port}"))
            .args(["--listen", "/ip4/127.0.0.1/udp/0/quic-v1"])
            .arg("--state-dir")
            .arg(dir.join("provider"))
            .arg("--image-root")
            .arg(dir.join("images"))
            .arg("--ready-file")
            .arg(&ready)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let t = Instant::now();
        while !ready.exists() {
            assert!(t.elapsed() < Duration::from_secs(30), "provider did not start: {}", provider_log(dir));
            std::thread::sleep(Duration::from_millis(20));
        }
        let info: Value = serde_json::from_slice(&std::fs::read(&ready).unwrap()).unwrap();
        let addrs: Vec<String> =
            info["addresses"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_owned()).collect();
        let addr = addrs.iter().find(|a| a.contains("/tcp/")).unwrap().clone();
        let quic_addr = addrs.iter().find(|a| a.contains("/quic-v1/")).unwrap().clone();
        Provider { child, addr, quic_addr }
    }

    /// The TCP port it listens on.
    pub fn port(&self) -> u16 {
        self.addr.split("/tcp/").nth(1).and_then(|p| p.split('/').next()).and_then(|p| p.parse().ok()).unwrap()
    }

    pub fn kill_hard(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        // Already gone after kill_hard; nothing to report then.
        let _ = Command::new("kill").arg(self.child.id().to_string()).stderr(Stdio::null()).status();
        let _ = self.child.wait();
    }
}

pub fn provider_log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("provider.log")).unwrap_or_default()
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub fn http_get(addr: &str) -> Result<String, String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").map_err(|e| e.to_string())?;
    let mut r = String::new();
    s.read_to_string(&mut r).map_err(|e| e.to_string())?;
    r.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).ok_or_else(|| format!("bad response {r:?}"))
}

pub fn eventually<T>(what: &str, mut f: impl FnMut() -> Result<T, String>) -> T {
    let t = Instant::now();
    loop {
        match f() {
            Ok(v) => return v,
            Err(e) if t.elapsed() > Duration::from_secs(30) => panic!("{what}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

pub fn socket_of(multiaddr: &str) -> String {
    let p: Vec<&str> = multiaddr.split('/').collect();
    format!("{}:{}", p[2], p[4])
}

pub fn build_sample_image(dir: &Path) {
    let out = Command::new(SEALPOD)
        .args(["image", "from-binary", SAMPLE, "--tag", "v1", "--out"])
        .arg(dir.join("images/sample"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// A temporary directory with the sample image built and a provider running,
/// and the publisher home `dir/<publisher>`; `None` (test skipped) unless root.
pub fn fixture(publisher: &str) -> Option<(tempfile::TempDir, Provider, PathBuf)> {
    fixture_with(publisher, &[])
}

/// As [`fixture`], with extra `provider run` arguments.
pub fn fixture_with(publisher: &str, extra: &[&str]) -> Option<(tempfile::TempDir, Provider, PathBuf)> {
    if !is_root() {
        eprintln!("skipped: running pods needs root");
        return None;
    }
    let tmp = tempfile::tempdir().unwrap();
    build_sample_image(tmp.path());
    let provider = Provider::start_with(tmp.path(), free_port(), extra);
    let home = tmp.path().join(publisher);
    Some((tmp, provider, home))
}

/// The `p`th percentile of `v` (for the harness-less benches).
pub fn percentile(mut v: Vec<f64>, p: usize) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[(v.len() * p / 100).min(v.len() - 1)]
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Device numbers of the stand-in GPUs: /dev/fuse and /dev/btrfs-control,
/// harmless to open (their operations need a mount or privileges a pod lacks),
/// and outside the default device-cgroup list, so that opening them from a
/// container shows the provider's per-device rule at work.
pub const GPU0: (u32, u32) = (10, 229);
pub const GPU1: (u32, u32) = (10, 234);

pub fn mknod(path: &Path, (major, minor): (u32, u32)) {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: mknod and chmod with a NUL-terminated path.
    unsafe {
        assert_eq!(libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(major, minor)), 0, "mknod");
        assert_eq!(libc::chmod(c.as_ptr(), 0o666), 0);
    }
}

/// Two stand-in GPUs (character devices under `dir/dev`) and a CDI spec
/// naming them `nvidia.com/gpu=0` and `=1` in `dir/cdi`, which it returns.
pub fn write_cdi(dir: &Path) -> std::path::PathBuf {
    let dev = dir.join("dev");
    std::fs::create_dir_all(&dev).unwrap();
    mknod(&dev.join("gpu0"), GPU0);
    mknod(&dev.join("gpu1"), GPU1);
    let cdi = dir.join("cdi");
    std::fs::create_dir_all(&cdi).unwrap();
    std::fs::write(
        cdi.join("test-gpus.yaml"),
        format!(
            "cdiVersion: 0.6.0\nkind: nvidia.com/gpu\ncontainerEdits:\n  env: [SEALPOD_CDI_TEST=from-the-spec]\n\
             devices:\n\
             - name: \"0\"\n  containerEdits:\n    deviceNodes: [{{path: /dev/nvidia0, hostPath: {0}/gpu0}}]\n\
             - name: \"1\"\n  containerEdits:\n    deviceNodes: [{{path: /dev/nvidia1, hostPath: {0}/gpu1, permissions: rw}}]\n",
            dev.display()
        ),
    )
    .unwrap();
    cdi
}

/// The two-container sample pod (a web server on `host_port`, 0 for any,
/// and a client fetching from it over the pod's loopback, sharing an emptyDir),
/// with `extra` manifest lines appended; returns the manifest's path.
pub fn write_pod_with_port(dir: &Path, name: &str, host_port: u16, extra: &str) -> PathBuf {
    let image = format!("oci:{}:v1", dir.join("images/sample").display());
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &path,
        format!(
            r#"containers:
  - name: web
    image: {image}
    args: [serve, --port, "8080", --text, "{name} says hi"]
    ports: ["{host_port}:8080"]
    resources: {{cpu: 200m, memory: 64Mi}}
    volumeMounts:
      - name: scratch
        mountPath: /scratch
  - name: client
    image: {image}
    args: [fetch, --url, "http://127.0.0.1:8080/", --interval-ms, "300"]
    env: {{GREETING: hello}}
    resources: {{cpu: 100m, memory: 32Mi}}
volumes:
  - name: scratch
    emptyDir: {{}}
{extra}"#
        ),
    )
    .unwrap();
    path
}

/// Checks exec on a pod written by [`write_pod_with_port`]: the client
/// container fetches the web container's `text` over the pod's loopback, and
/// a command's exit code (5) and output come back; returns the JSON answer of
/// the second exec.
pub fn exec_reaches_the_pod(home: &Path, pod_id: &str, text: &str) -> Value {
    let fetch = [
        "exec",
        pod_id,
        "--container",
        "client",
        "--",
        "/app/sealpod-sample",
        "fetch",
        "--url",
        "http://127.0.0.1:8080/",
        "--count",
        "1",
    ];
    let out = sealpod(home, &fetch);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains(&format!("fetched: {text}")), "{stdout}");
    let out = sealpod(home, &["--json", "exec", pod_id, "--", "/app/sealpod-sample", "exit", "--code", "5"]);
    assert_eq!(out.status.code(), Some(5), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["output"].as_str().unwrap().contains("exiting with 5"), "{v}");
    v
}

/// A harness-less bench's arguments, or `None` when cargo runs it for
/// anything but `cargo bench` (`--list`, `--test`, a plain `cargo test`).
pub fn bench_args() -> Option<Vec<String>> {
    let args: Vec<String> = std::env::args().collect();
    let benching = args.iter().any(|a| a == "--bench") && !args.iter().any(|a| a == "--list" || a == "--test");
    benching.then_some(args)
}

/// The value after `name` in `args`, or `default` when absent or unparsable.
pub fn flag<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}
