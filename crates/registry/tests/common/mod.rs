//! A registry on a loopback port for tests, real client processes, and a
//! raw HTTP/1.1 client that sends exactly what a test says.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use sealpod_registry::{Registry, RegistryOptions};
use sealpod_store::Store;

/// Our registry, served from a runtime on its own thread.
pub struct TestRegistry {
    pub addr: SocketAddr,
    pub store: Store,
    pub dir: tempfile::TempDir,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestRegistry {
    pub fn start() -> TestRegistry {
        TestRegistry::start_with(|r| r)
    }

    pub fn with_options(options: RegistryOptions) -> TestRegistry {
        TestRegistry::start_with(move |r| r.options(options))
    }

    pub fn start_with(configure: impl FnOnce(Registry) -> Registry + Send + 'static) -> TestRegistry {
        TestRegistry::start_in(tempfile::tempdir().unwrap(), configure)
    }

    /// Serves the store kept in `dir` (e.g. one a stopped registry left).
    pub fn start_in(
        dir: tempfile::TempDir,
        configure: impl FnOnce(Registry) -> Registry + Send + 'static,
    ) -> TestRegistry {
        let store = Store::open(dir.path().join("store")).unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let registry = configure(Registry::new(store.clone()));
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                registry
                    .serve_with_shutdown(listener, async {
                        let _ = rx.await;
                    })
                    .await
                    .unwrap();
            });
        });
        TestRegistry { addr, store, dir, shutdown: Some(tx), thread: Some(thread) }
    }

    /// Stops serving and hands back the directory with the store.
    pub fn stop(mut self) -> tempfile::TempDir {
        self.shut_down();
        std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap())
    }

    fn shut_down(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    /// `127.0.0.1:PORT`
    pub fn host(&self) -> String {
        self.addr.to_string()
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        self.shut_down();
    }
}

/// Whether `tool` is on PATH.
pub fn have(tool: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs a command with a deadline; panics with its output if it fails.
pub fn run(cmd: &mut Command) -> Output {
    let out = run_unchecked(cmd, Duration::from_secs(180));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn run_unchecked(cmd: &mut Command, deadline: Duration) -> Output {
    let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let start = Instant::now();
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out_thread = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stdout.read_to_end(&mut v);
        v
    });
    let err_thread = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stderr.read_to_end(&mut v);
        v
    });
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > deadline {
            let _ = child.kill();
            panic!("{cmd:?} did not finish within {deadline:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output { status, stdout: out_thread.join().unwrap(), stderr: err_thread.join().unwrap() }
}

/// skopeo with no user configuration getting in the way.
pub fn skopeo() -> Command {
    let mut c = Command::new("skopeo");
    c.arg("--insecure-policy");
    c
}

/// Builds a small image (a few files, one layer) into `layout` under `tag`;
/// returns the manifest digest.
pub fn build_image(workdir: &Path, layout: &Path, tag: &str, salt: &str) -> String {
    let tree = workdir.join(format!("tree-{salt}"));
    std::fs::create_dir_all(tree.join("etc")).unwrap();
    std::fs::write(tree.join("etc/hello.txt"), format!("hello from {salt}\n")).unwrap();
    std::fs::write(tree.join("data.bin"), (0..200_000u32).map(|i| (i % 253) as u8).collect::<Vec<_>>()).unwrap();
    std::fs::write(tree.join("README"), "a test image\n").unwrap();
    let built = sealpod_oci::ImageBuilder::new()
        .tree(&tree, "/")
        .entrypoint(["/bin/true"])
        .env("SALT", salt)
        .write_layout(layout, tag)
        .unwrap();
    built.manifest_digest
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    sealpod_store::Digest::of(bytes).to_string()
}

/// A response as it came over the wire.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }

    /// The first error code of a spec error body.
    pub fn error_code(&self) -> String {
        self.json()["errors"][0]["code"].as_str().unwrap_or("").to_owned()
    }
}

/// Sends one request on a fresh connection, exactly as given (the path is
/// not normalised or escaped), and reads the whole response.
pub fn raw_request(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> RawResponse {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    let mut has_length = false;
    for (k, v) in headers {
        has_length |= k.eq_ignore_ascii_case("content-length") || k.eq_ignore_ascii_case("transfer-encoding");
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !has_length && (!body.is_empty() || matches!(method, "PUT" | "POST" | "PATCH")) {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let _ = s.write_all(body);
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    parse_response(&raw, method == "HEAD")
}

pub fn parse_response(raw: &[u8], head: bool) -> RawResponse {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or_else(|| {
        panic!("no complete response head in {:?}", String::from_utf8_lossy(raw));
    });
    let head_text = String::from_utf8_lossy(&raw[..end]).to_string();
    let mut lines = head_text.split("\r\n");
    let status: u16 = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers: Vec<(String, String)> =
        lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned())).collect();
    let rest = &raw[end + 4..];
    let chunked = headers.iter().any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let body = if head {
        Vec::new()
    } else if chunked {
        let mut out = Vec::new();
        let mut i = 0;
        loop {
            let line_end = i + rest[i..].windows(2).position(|w| w == b"\r\n").unwrap();
            let size = usize::from_str_radix(std::str::from_utf8(&rest[i..line_end]).unwrap().trim(), 16).unwrap();
            i = line_end + 2;
            if size == 0 {
                break;
            }
            out.extend_from_slice(&rest[i..i + size]);
            i += size + 2;
        }
        out
    } else {
        rest.to_vec()
    };
    RawResponse { status, headers, body }
}

/// The path of a temporary directory's child, as a string for command lines.
pub fn arg(p: &Path) -> String {
    p.display().to_string()
}

pub fn join(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}

/// The CNCF distribution registry (Debian's `docker-registry`) on a loopback port.
pub struct CncfRegistry {
    child: Child,
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl CncfRegistry {
    /// Starts one, or `None` if it is not installed or does not come up.
    pub fn start() -> Option<CncfRegistry> {
        CncfRegistry::start_with_env(&[])
    }

    /// Starts one with extra configuration in its environment (e.g.
    /// `REGISTRY_HTTP_TLS_CERTIFICATE` and `REGISTRY_HTTP_TLS_KEY` to serve HTTPS).
    pub fn start_with_env(env: &[(&str, String)]) -> Option<CncfRegistry> {
        if !have("docker-registry") {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let registry = CncfRegistry { child, addr, _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(registry.addr).is_err() {
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(registry)
    }
}

impl Drop for CncfRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
