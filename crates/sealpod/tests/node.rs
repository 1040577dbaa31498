//! Artifact nodes as separate processes, talking over libp2p on loopback,
//! with skopeo and podman as the registry clients. Node A holds the log's
//! signing key; B and C only hold its public key and sync the log from peers.
//! Needs skopeo (and podman for the podman pull).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{SAMPLE, SEALPOD};
use serde_json::Value;

struct NodeProcess {
    child: Child,
    ready: Value,
    name: String,
    log_file: PathBuf,
}

impl NodeProcess {
    fn registry(&self) -> String {
        self.ready["registry"].as_str().unwrap().to_owned()
    }
    fn addr(&self) -> String {
        self.ready["addresses"][0].as_str().unwrap().to_owned()
    }
    fn output(&self) -> String {
        std::fs::read_to_string(&self.log_file).unwrap_or_default()
    }
    fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_node(dir: &Path, name: &str, bootstrap: &[String], log_args: &[String]) -> NodeProcess {
    start_node_on(dir, name, "/ip4/127.0.0.1/tcp/0", bootstrap, log_args)
}

fn start_node_on(dir: &Path, name: &str, listen: &str, bootstrap: &[String], log_args: &[String]) -> NodeProcess {
    let ready = dir.join(format!("{name}.ready"));
    let _ = std::fs::remove_file(&ready);
    let log_file = dir.join(format!("{name}.log"));
    let log = std::fs::OpenOptions::new().create(true).append(true).open(&log_file).unwrap();
    let mut cmd = Command::new(SEALPOD);
    cmd.args(["node", "run", "--registry", "127.0.0.1:0", "--listen", listen, "--dir"])
        .arg(dir.join(name))
        .arg("--ready-file")
        .arg(&ready)
        .args(["--sync-period-ms", "500"])
        .args(log_args);
    for b in bootstrap {
        cmd.args(["--bootstrap", b]);
    }
    let child = cmd.stdin(Stdio::null()).stdout(log.try_clone().unwrap()).stderr(log).spawn().unwrap();
    let mut node = NodeProcess { child, ready: Value::Null, name: name.into(), log_file };
    let t = Instant::now();
    while !ready.exists() {
        if let Ok(Some(status)) = node.child.try_wait() {
            panic!("node {name} exited with {status}: {}", node.output());
        }
        assert!(t.elapsed() < Duration::from_secs(30), "node {name} did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    node.ready = serde_json::from_slice(&std::fs::read(&ready).unwrap()).unwrap();
    node
}

fn skopeo(args: &[&str]) -> Output {
    Command::new("skopeo").args(args).output().unwrap()
}

fn sealpod(args: &[&str]) -> Output {
    Command::new(SEALPOD).args(args).output().unwrap()
}

fn ok(out: Output, what: &str) -> Output {
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn json(out: Output, what: &str) -> Value {
    let out = ok(out, what);
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{what}: not JSON ({e})"))
}

fn have_skopeo() -> bool {
    Command::new("skopeo").arg("--version").output().is_ok_and(|o| o.status.success())
}

/// An OCI layout of the sample binary with `salt` appended, so each salt
/// gives an image of its own.
fn sample_image(dir: &Path, salt: &str) -> PathBuf {
    let bin_dir = dir.join(format!("bin-{salt}"));
    std::fs::create_dir_all(&bin_dir).unwrap();
    let bin = bin_dir.join("sealpod-sample");
    let mut bytes = std::fs::read(SAMPLE).unwrap();
    bytes.extend_from_slice(salt.as_bytes());
    std::fs::write(&bin, bytes).unwrap();
    std::fs::set_permissions(&bin, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    layout_of(&bin, &dir.join(format!("layout-{salt}")))
}

/// `sealpod image from-binary FILE`, tagged v1, into `layout`.
fn layout_of(file: &Path, layout: &Path) -> PathBuf {
    ok(
        Command::new(SEALPOD)
            .args(["image", "from-binary"])
            .arg(file)
            .args(["--tag", "v1", "--out"])
            .arg(layout)
            .output()
            .unwrap(),
        "image from-binary",
    );
    layout.to_owned()
}

fn push(layout: &Path, registry: &str, image: &str) -> Output {
    let src = format!("oci:{}:v1", layout.display());
    skopeo(&["copy", "--dest-tls-verify=false", &src, &format!("docker://{registry}/{image}")])
}

/// Pulls into a fresh OCI layout, retrying while the log and DHT records
/// travel; returns the last attempt.
fn pull_until(registry: &str, image: &str, out: &Path, within: Duration) -> Output {
    let t = Instant::now();
    loop {
        let _ = std::fs::remove_dir_all(out);
        let pull = skopeo(&[
            "copy",
            "--src-tls-verify=false",
            &format!("docker://{registry}/{image}"),
            &format!("oci:{}:x", out.display()),
        ]);
        if pull.status.success() || t.elapsed() > within {
            return pull;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn inspect_digest(registry: &str, image: &str) -> String {
    let out = ok(skopeo(&["inspect", "--tls-verify=false", &format!("docker://{registry}/{image}")]), "skopeo inspect");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["Digest"].as_str().unwrap().to_owned()
}

fn keygen(dir: &Path, name: &str, witness: bool) -> (PathBuf, String) {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let key = dir.join(format!("key-{n}.key"));
    let mut args = vec!["log", "keygen", "--name", name, "--out"];
    let key_str = key.to_str().unwrap().to_owned();
    args.push(&key_str);
    if witness {
        args.push("--witness");
    }
    let out = ok(sealpod(&args), "log keygen");
    (key, String::from_utf8(out.stdout).unwrap().trim().to_owned())
}

fn checkpoint(node: &NodeProcess) -> Value {
    json(sealpod(&["--json", "log", "checkpoint", "--node", &node.registry()]), "log checkpoint")
}

fn wait_for(what: &str, within: Duration, mut cond: impl FnMut() -> bool) {
    let t = Instant::now();
    while !cond() {
        assert!(t.elapsed() < within, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn blob_files(store: &Path) -> Vec<String> {
    walk(store).iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect()
}

#[test]
fn image_published_on_the_authority_is_pulled_by_tag_from_a_mirror_over_libp2p() {
    if !have_skopeo() {
        eprintln!("skipped: needs skopeo");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (log_key, vkey) = keygen(dir, "sealpod.test/images", false);
    let layout = sample_image(dir, "one");

    let a = start_node(dir, "a", &[], &["--log-signing-key".into(), log_key.display().to_string()]);
    let b = start_node(dir, "b", &[a.addr()], &["--log-key".into(), vkey.clone()]);

    ok(push(&layout, &a.registry(), "team/sample:v1"), "push to the authority");
    let digest = inspect_digest(&a.registry(), "team/sample:v1");

    // B held nothing: the tag came from the log, the content from A.
    let pulled = pull_until(&b.registry(), "team/sample:v1", &dir.join("pulled"), Duration::from_secs(45));
    assert!(pulled.status.success(), "pull from B: {}\nB: {}", String::from_utf8_lossy(&pulled.stderr), b.output());
    assert_eq!(inspect_digest(&b.registry(), "team/sample:v1"), digest);
    assert!(b.output().contains("fetched blob from peer"), "{}", b.output());
    assert!(b.output().contains("synced the log"), "{}", b.output());

    // The mirror proves the entry with the log's key.
    let verified = json(
        sealpod(&["--json", "log", "verify", "team/sample:v1", "--node", &b.registry(), "--log-key", &vkey]),
        "log verify",
    );
    assert_eq!(verified["verified"], true);
    assert_eq!(verified["manifest_digest"], digest.as_str());
    let history = json(sealpod(&["--json", "log", "inspect", "team/sample:v1", "--node", &b.registry()]), "inspect");
    assert_eq!(history.as_array().unwrap().len(), 1);
    let cp = checkpoint(&b);
    assert_eq!((cp["size"].as_u64(), cp["authority"].as_bool()), (Some(1), Some(false)));

    // Verifying with another key fails, and says why.
    let (_, other) = keygen(dir, "sealpod.test/images", false);
    let wrong = sealpod(&["log", "verify", "team/sample:v1", "--node", &b.registry(), "--log-key", &other]);
    assert!(!wrong.status.success());
    assert!(
        String::from_utf8_lossy(&wrong.stderr).contains("does not verify"),
        "{}",
        String::from_utf8_lossy(&wrong.stderr)
    );

    // A mirror does not publish: a tagged push is refused with the reason.
    let refused = push(&layout, &b.registry(), "team/other:v1");
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("only mirrors log"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );

    // Content pushed by digest but never published is stored, not served.
    let other_layout = sample_image(dir, "unpublished");
    let src = format!("oci:{}:v1", other_layout.display());
    let unpublished =
        ok(Command::new("skopeo").args(["inspect", &src]).output().unwrap(), "inspect the unpublished layout");
    let unpublished: Value = serde_json::from_slice(&unpublished.stdout).unwrap();
    let udigest = unpublished["Digest"].as_str().unwrap();
    ok(
        skopeo(&["copy", "--dest-tls-verify=false", &src, &format!("docker://{}/team/other@{udigest}", b.registry())]),
        "push by digest",
    );
    let denied = skopeo(&["inspect", "--tls-verify=false", &format!("docker://{}/team/other@{udigest}", b.registry())]);
    assert!(!denied.status.success());
    let err = String::from_utf8_lossy(&denied.stderr);
    assert!(err.contains("not included in the trusted log"), "{err}");

    // Asking a mirror for a digest A holds but never published brings the
    // manifest (so the refusal can say why) but none of its layers.
    let hidden_layout = sample_image(dir, "hidden");
    let src = format!("oci:{}:v1", hidden_layout.display());
    let hidden: Value =
        serde_json::from_slice(&ok(Command::new("skopeo").args(["inspect", &src]).output().unwrap(), "inspect").stdout)
            .unwrap();
    let (hdigest, hlayer) = (hidden["Digest"].as_str().unwrap(), hidden["Layers"][0].as_str().unwrap());
    ok(
        skopeo(&["copy", "--dest-tls-verify=false", &src, &format!("docker://{}/team/hidden@{hdigest}", a.registry())]),
        "push by digest to A",
    );
    std::thread::sleep(Duration::from_secs(2)); // A announces what it holds
    let denied =
        skopeo(&["inspect", "--tls-verify=false", &format!("docker://{}/team/hidden@{hdigest}", b.registry())]);
    assert!(!denied.status.success());
    let err = String::from_utf8_lossy(&denied.stderr);
    assert!(err.contains("not included in the trusted log"), "{err}");
    std::thread::sleep(Duration::from_secs(1));
    let hlayer = hlayer.trim_start_matches("sha256:").to_owned();
    assert!(!blob_files(&dir.join("b/store")).contains(&hlayer), "B fetched the layer of an unpublished image");

    // podman pulls the published image from the mirror.
    if Command::new("podman").arg("--version").output().is_ok_and(|o| o.status.success()) && common::is_root() {
        let image = format!("{}/team/sample:v1", b.registry());
        let pulled = Command::new("podman").args(["pull", "--tls-verify=false", &image]).output().unwrap();
        assert!(pulled.status.success(), "podman pull: {}", String::from_utf8_lossy(&pulled.stderr));
        let _ = Command::new("podman").args(["rmi", "-f", &image]).output();
    }
}

#[test]
fn three_nodes_publish_pull_cosign_and_refuse_tampered_blobs_and_forks() {
    if !have_skopeo() {
        eprintln!("skipped: needs skopeo");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (log_key, vkey) = keygen(dir, "sealpod.test/three", false);
    let (witness_key, witness_vkey) = keygen(dir, "witness-b.test", true);
    let authority_args =
        vec!["--log-signing-key".to_string(), log_key.display().to_string(), "--witness".into(), witness_vkey.clone()];

    // A keeps its port across the restart below, so its peers find it again.
    let a_listen = format!("/ip4/127.0.0.1/tcp/{}", common::free_port());
    let a = start_node_on(dir, "a", &a_listen, &[], &authority_args);
    let b = start_node(
        dir,
        "b",
        &[a.addr()],
        &["--log-key".into(), vkey.clone(), "--witness-key".into(), witness_key.display().to_string()],
    );
    // C serves only what B has witnessed.
    let c = start_node(
        dir,
        "c",
        &[b.addr()],
        &["--log-key".into(), vkey.clone(), "--witness".into(), witness_vkey, "--witness-quorum".into(), "1".into()],
    );
    // D wants a witness that never cosigns anything.
    let (_, absent_vkey) = keygen(dir, "witness-absent.test", true);
    let d = start_node(
        dir,
        "d",
        &[a.addr()],
        &["--log-key".into(), vkey.clone(), "--witness".into(), absent_vkey, "--witness-quorum".into(), "1".into()],
    );

    // Publish on A, pull on C (which only knows B).
    let one = sample_image(dir, "one");
    ok(push(&one, &a.registry(), "team/app:1"), "publish team/app:1");
    let digest = inspect_digest(&a.registry(), "team/app:1");
    let pulled = pull_until(&c.registry(), "team/app:1", &dir.join("pulled-1"), Duration::from_secs(60));
    assert!(pulled.status.success(), "pull on C: {}\nC: {}", String::from_utf8_lossy(&pulled.stderr), c.output());
    assert_eq!(inspect_digest(&c.registry(), "team/app:1"), digest);
    assert_eq!(checkpoint(&c)["witnessed_size"], 1);

    // D holds the entry too, but no checkpoint its witness cosigned covers
    // it: refused, saying so.
    wait_for("D to sync", Duration::from_secs(30), || checkpoint(&d)["size"] == 1);
    assert_eq!(checkpoint(&d)["witnessed_size"], 0);
    let unwitnessed = skopeo(&["inspect", "--tls-verify=false", &format!("docker://{}/team/app:1", d.registry())]);
    assert!(!unwitnessed.status.success());
    let err = String::from_utf8_lossy(&unwitnessed.stderr);
    assert!(err.contains("which no checkpoint cosigned by 1 witness(es) covers yet"), "{err}");
    d.stop();

    // B, a witness, cosigned the checkpoint and A kept the cosignature.
    wait_for("B's cosignature on A", Duration::from_secs(30), || {
        checkpoint(&a)["cosigners"].as_array().is_some_and(|c| c.iter().any(|s| s["name"] == "witness-b.test"))
    });

    // Tamper with a layer on A: C refuses it and stores nothing of it.
    let backup = dir.join("a-log-backup");
    copy_dir(&dir.join("a/log"), &backup);
    let two = sample_image(dir, "two");
    ok(push(&two, &a.registry(), "team/app:2"), "publish team/app:2");
    let raw = ok(
        skopeo(&["inspect", "--raw", "--tls-verify=false", &format!("docker://{}/team/app:2", a.registry())]),
        "raw",
    );
    let manifest: Value = serde_json::from_slice(&raw.stdout).unwrap();
    let layer = manifest["layers"][0]["digest"].as_str().unwrap().trim_start_matches("sha256:").to_owned();
    let stored: Vec<PathBuf> =
        walk(&dir.join("a/store")).into_iter().filter(|p| p.file_name().unwrap().to_string_lossy() == layer).collect();
    assert_eq!(stored.len(), 1, "A holds the layer once");
    let mut bytes = std::fs::read(&stored[0]).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&stored[0], bytes).unwrap();
    wait_for("C to sync entry 2", Duration::from_secs(30), || checkpoint(&c)["size"] == 2);
    let refused = skopeo(&[
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{}/team/app:2", c.registry()),
        &format!("oci:{}:x", dir.join("pulled-2").display()),
    ]);
    assert!(!refused.status.success(), "a tampered layer was served");
    assert!(!blob_files(&dir.join("c/store")).contains(&layer), "C stored the tampered layer");

    // Fork A's log: restore the backup taken at size 1 and publish another
    // image, so A signs a different tree of size 2.
    a.stop();
    std::fs::remove_dir_all(dir.join("a/log")).unwrap();
    copy_dir(&backup, &dir.join("a/log"));
    let a = start_node_on(dir, "a", &a_listen, &[b.addr()], &authority_args);
    let three = sample_image(dir, "three");
    ok(push(&three, &a.registry(), "team/app:3"), "publish team/app:3 on the forked log");
    assert_eq!(checkpoint(&a)["size"], 2);
    for node in [&b, &c] {
        wait_for(&format!("{} to refuse the fork", node.name), Duration::from_secs(60), || {
            checkpoint(node)["forks"].as_array().is_some_and(|f| !f.is_empty())
        });
        let cp = checkpoint(node);
        assert_eq!(cp["size"], 2, "{} moved to the forked log", node.name);
        assert_eq!(cp["forks"][0]["proven"], true);
    }
    // The forked entry is not served by the mirrors; the honest one still is.
    let denied = skopeo(&["inspect", "--tls-verify=false", &format!("docker://{}/team/app:3", b.registry())]);
    assert!(!denied.status.success());
    assert_eq!(inspect_digest(&b.registry(), "team/app:1"), digest);
    assert!(b.output().contains("LOG FORK"), "{}", b.output());
}

fn walk(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out
}

fn copy_dir(from: &Path, to: &Path) {
    let out = Command::new("cp").arg("-a").arg(from).arg(to).output().unwrap();
    assert!(out.status.success(), "cp: {}", String::from_utf8_lossy(&out.stderr));
}

/// Debian's CNCF `docker-registry` on a loopback port.
struct Upstream {
    child: Child,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Upstream {
    fn start() -> Option<Upstream> {
        let dir = tempfile::tempdir().unwrap();
        let addr = format!("127.0.0.1:{}", common::free_port());
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let up = Upstream { child, addr, _dir: dir };
        let t = Instant::now();
        while std::net::TcpStream::connect(&up.addr).is_err() {
            if t.elapsed() > Duration::from_secs(20) {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(up)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_authority_pulls_through_from_an_upstream_registry_and_image_push_publishes() {
    if !have_skopeo() {
        eprintln!("skipped: needs skopeo");
        return;
    }
    let Some(upstream) = Upstream::start() else {
        eprintln!("skipped: needs docker-registry");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (log_key, vkey) = keygen(dir, "sealpod.test/upstream", false);
    let layout = sample_image(dir, "upstream");
    ok(push(&layout, &upstream.addr, "library/sample:3"), "push to the upstream registry");
    let upstream_digest = inspect_digest(&upstream.addr, "library/sample:3");

    let a = start_node(
        dir,
        "a",
        &[],
        &[
            "--log-signing-key".into(),
            log_key.display().to_string(),
            "--upstream".into(),
            format!("http://{}", upstream.addr),
        ],
    );
    let b = start_node(dir, "b", &[a.addr()], &["--log-key".into(), vkey.clone()]);

    // A tag the log lacks: A fetches it from upstream, verifies, publishes.
    assert_eq!(inspect_digest(&a.registry(), "library/sample:3"), upstream_digest);
    assert!(a.output().contains("pulled through and published"), "{}", a.output());
    // A tag upstream lacks too is a clear miss.
    let missing = skopeo(&["inspect", "--tls-verify=false", &format!("docker://{}/library/nothing:1", a.registry())]);
    assert!(!missing.status.success());
    // The mirror serves what A pulled through, by the log.
    let pulled = pull_until(&b.registry(), "library/sample:3", &dir.join("pulled"), Duration::from_secs(45));
    assert!(pulled.status.success(), "pull from B: {}\nB: {}", String::from_utf8_lossy(&pulled.stderr), b.output());

    // `sealpod image push` from another registry and from a local layout.
    let pushed = json(
        sealpod(&[
            "--json",
            "image",
            "push",
            &format!("docker://{}/library/sample:3", upstream.addr),
            "team/copied:1",
            "--node",
            &a.registry(),
        ]),
        "image push docker://",
    );
    assert_eq!(pushed["digest"], upstream_digest.as_str());
    let local = sample_image(dir, "local");
    let pushed_local = json(
        sealpod(&[
            "--json",
            "image",
            "push",
            &format!("oci:{}:v1", local.display()),
            "team/local:1",
            "--node",
            &a.registry(),
        ]),
        "image push oci:",
    );
    assert_eq!(pushed_local["index"], 2, "entries 0 and 1 are the pull-through and the copy");
    assert_eq!(inspect_digest(&a.registry(), "team/local:1"), pushed_local["digest"].as_str().unwrap());
    let pulled = pull_until(&b.registry(), "team/local:1", &dir.join("pulled-local"), Duration::from_secs(45));
    assert!(pulled.status.success(), "pull from B: {}", String::from_utf8_lossy(&pulled.stderr));

    // A bad source is a clear error, and nothing is published.
    let bad = sealpod(&["image", "push", "/nonexistent/layout", "team/bad:1", "--node", &a.registry()]);
    assert!(!bad.status.success());
    assert_eq!(checkpoint(&a)["size"], 3);
}

#[test]
fn a_provider_runs_a_pod_whose_image_it_fetched_through_its_artifact_node() {
    if !have_skopeo() || !common::is_root() {
        eprintln!("skipped: needs skopeo and root");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (log_key, vkey) = keygen(dir, "sealpod.test/pods", false);
    let a = start_node(dir, "a", &[], &["--log-signing-key".into(), log_key.display().to_string()]);
    // The provider's own node is a mirror: the image reaches it over libp2p.
    let m = start_node(dir, "m", &[a.addr()], &["--log-key".into(), vkey]);
    let layout = sample_image(dir, "pod");
    let published = json(
        sealpod(&[
            "--json",
            "image",
            "push",
            &format!("oci:{}:v1", layout.display()),
            "team/web:1",
            "--node",
            &a.registry(),
        ]),
        "image push",
    );
    std::fs::create_dir_all(dir.join("images")).unwrap();
    let provider = common::Provider::start_with(dir, common::free_port(), &["--artifact-node", &m.registry()]);
    let home = dir.join("publisher");

    let pod = dir.join("pod.yaml");
    std::fs::write(
        &pod,
        "containers:\n  - name: web\n    image: sealpod://team/web:1\n    args: [serve, --port, \"8080\", --text, \"from the network\"]\n    ports: [\"0:8080\"]\n",
    )
    .unwrap();
    let deployed = common::ok_json(common::sealpod(
        &home,
        &["--json", "deploy", pod.to_str().unwrap(), "--provider", &provider.addr],
    ));
    assert_eq!(deployed["status"]["phase"], "POD_PHASE_RUNNING", "{deployed}");
    let exposed = common::socket_of(deployed["status"]["addresses"][0]["multiaddr"].as_str().unwrap());
    let page = common::eventually("page from the network image", || common::http_get(&exposed));
    assert!(page.starts_with("from the network"), "{page}");
    assert!(m.output().contains("fetched blob from peer"), "{}", m.output());

    // By content address too.
    let by_digest = dir.join("by-digest.yaml");
    let digest = published["digest"].as_str().unwrap();
    std::fs::write(
        &by_digest,
        format!(
            "containers:\n  - name: web\n    image: sealpod://team/web@{digest}\n    args: [serve, --port, \"8081\"]\n"
        ),
    )
    .unwrap();
    let second = common::ok_json(common::sealpod(
        &home,
        &["--json", "deploy", by_digest.to_str().unwrap(), "--provider", &provider.addr],
    ));
    assert_eq!(second["status"]["phase"], "POD_PHASE_RUNNING", "{second}");

    // An image the log does not have is refused with the node's reason.
    let unknown = dir.join("unknown.yaml");
    std::fs::write(&unknown, "containers:\n  - name: web\n    image: sealpod://team/nothing:1\n").unwrap();
    let out = common::sealpod(&home, &["deploy", unknown.to_str().unwrap(), "--provider", &provider.addr]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("containers[0].image") && err.contains("artifact node"), "{err}");

    for d in [&deployed, &second] {
        let id = d["status"]["podId"].as_str().unwrap();
        assert!(common::sealpod(&home, &["delete", id]).status.success());
    }
}

/// An OCI layout whose one layer holds `mib` MiB of random bytes (gzip
/// leaves them as large as they are).
fn large_image(dir: &Path, mib: usize) -> PathBuf {
    let bin_dir = dir.join("bin-large");
    std::fs::create_dir_all(&bin_dir).unwrap();
    let file = bin_dir.join("payload");
    let mut bytes = vec![0u8; mib << 20];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for chunk in bytes.chunks_mut(8) {
        // xorshift: incompressible enough, and no extra dependency.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    std::fs::write(&file, bytes).unwrap();
    layout_of(&file, &dir.join("layout-large"))
}

#[test]
fn a_large_layer_comes_in_pieces_from_every_holder_streams_to_the_client_and_survives_a_bad_holder() {
    if !have_skopeo() {
        eprintln!("skipped: needs skopeo");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (log_key, vkey) = keygen(dir, "sealpod.test/pieces", false);
    let layout = large_image(dir, 48);
    let a = start_node(dir, "a", &[], &["--log-signing-key".into(), log_key.display().to_string()]);
    let b = start_node(dir, "b", &[a.addr()], &["--log-key".into(), vkey.clone()]);
    ok(push(&layout, &a.registry(), "big/app:1"), "publish big/app:1");
    let digest = inspect_digest(&a.registry(), "big/app:1");

    // B has one holder to fetch from, and serves skopeo as the bytes come.
    let pulled = pull_until(&b.registry(), "big/app:1", &dir.join("pulled-b"), Duration::from_secs(45));
    assert!(pulled.status.success(), "pull from B: {}\nB: {}", String::from_utf8_lossy(&pulled.stderr), b.output());
    assert!(b.output().contains("serving a blob to a client while it arrives"), "{}", b.output());

    // C finds A and B holding the layer and takes pieces from both.
    let vkey_d = vkey.clone();
    let c = start_node(dir, "c", &[a.addr(), b.addr()], &["--log-key".into(), vkey]);
    let pulled = pull_until(&c.registry(), "big/app:1", &dir.join("pulled-c"), Duration::from_secs(45));
    assert!(pulled.status.success(), "pull from C: {}\nC: {}", String::from_utf8_lossy(&pulled.stderr), c.output());
    assert_eq!(inspect_digest(&c.registry(), "big/app:1"), digest);
    let log = c.output();
    let line = log.lines().find(|l| l.contains("came in pieces from several peers")).unwrap_or_else(|| panic!("{log}"));
    for node in [&a, &b] {
        let peer = node.ready["peer_id"].as_str().unwrap();
        let sent = line
            .split(&format!("{peer}="))
            .nth(1)
            .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|n| n.parse::<u64>().ok());
        assert!(sent.is_some_and(|n| n > 0), "{} sent nothing to C: {line}", node.name);
    }
    // The layer skopeo wrote (and checked) is the one C now holds.
    let layer = walk(&dir.join("pulled-c"))
        .into_iter()
        .find(|p| std::fs::metadata(p).is_ok_and(|m| m.len() > 40 << 20))
        .expect("no large layer in C's pull");
    let name = layer.file_name().unwrap().to_string_lossy().into_owned();
    assert!(blob_files(&dir.join("c/store")).contains(&name), "C does not hold layer {name}");

    // B's copy goes bad on disk, a byte in every MiB, so any piece B sends
    // is wrong. D, finding A and B, gets a mismatch from the pieces, asks
    // each holder alone, and ends up with A's good copy.
    c.stop();
    let on_b =
        walk(&dir.join("b/store")).into_iter().find(|p| p.file_name().unwrap().to_string_lossy() == name).unwrap();
    let mut bytes = std::fs::read(&on_b).unwrap();
    for i in (0..bytes.len()).step_by(1 << 20) {
        bytes[i] ^= 0x55;
    }
    std::fs::write(&on_b, bytes).unwrap();
    let d = start_node(dir, "d", &[a.addr(), b.addr()], &["--log-key".into(), vkey_d]);
    let pulled = pull_until(&d.registry(), "big/app:1", &dir.join("pulled-d"), Duration::from_secs(60));
    assert!(pulled.status.success(), "pull from D: {}\nD: {}", String::from_utf8_lossy(&pulled.stderr), d.output());
    let log = d.output();
    assert!(log.contains("what the peers sent is not the blob"), "{log}");
    assert!(log.contains("fetched blob from one holder after a mismatch"), "{log}");
    assert!(blob_files(&dir.join("d/store")).contains(&name), "D does not hold the good layer");
}

/// The status line of a GET to a node's HTTP API.
fn http_status(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.lines().next().unwrap_or_default().to_owned()
}

/// Every file under `root` whose bytes contain `needle`.
fn files_containing(root: &Path, needle: &[u8]) -> Vec<PathBuf> {
    walk(root)
        .into_iter()
        .filter(|p| p.is_file() && !p.is_symlink())
        .filter(|p| std::fs::read(p).is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle)))
        .collect()
}

#[test]
fn a_private_image_goes_encrypted_over_the_network_and_its_key_only_to_an_attested_provider() {
    if !have_skopeo() || !common::is_root() {
        eprintln!("skipped: needs skopeo and root");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (log_key, vkey) = keygen(dir, "sealpod.test/private", false);
    // The publisher's node (the log's authority here) and the provider's own.
    let a = start_node(dir, "a", &[], &["--log-signing-key".into(), log_key.display().to_string()]);
    let m = start_node(dir, "m", &[a.addr()], &["--log-key".into(), vkey]);
    let layout = sample_image(dir, "private");
    std::fs::create_dir_all(dir.join("images")).unwrap();
    let provider_dir = dir.join("p1");
    std::fs::create_dir_all(provider_dir.join("images")).unwrap();
    let provider = common::Provider::start_with(
        &provider_dir,
        common::free_port(),
        &["--artifact-node", &m.registry(), "--attestor", "insecure-dev"],
    );
    let home = dir.join("publisher");
    let pod = dir.join("pod.yaml");
    std::fs::write(
        &pod,
        format!(
            "containers:\n  - name: web\n    image: oci:{}:v1\n    args: [serve, --port, \"8080\", --text, \"private page\"]\n    ports: [\"0:8080\"]\n",
            layout.display()
        ),
    )
    .unwrap();
    let publisher_node = a.registry();
    let deploy = |provider: &str, extra: &[&str]| {
        let mut args = vec!["--json", "deploy", pod.to_str().unwrap(), "--provider", provider, "--encrypt-images"];
        args.extend_from_slice(&["--node", &publisher_node]);
        args.extend_from_slice(extra);
        common::sealpod(&home, &args)
    };
    let deployed = common::ok_json(deploy(&provider.addr, &["--allow-insecure-dev"]));
    assert_eq!(deployed["status"]["phase"], "POD_PHASE_RUNNING", "{deployed}");
    assert_eq!(deployed["attestation"]["claims"]["kind"], "insecure-dev", "{deployed}");
    let private = &deployed["private_images"][0];
    let digest = private["digest"].as_str().unwrap();
    assert_ne!(digest, private["plain_digest"].as_str().unwrap());
    let exposed = common::socket_of(deployed["status"]["addresses"][0]["multiaddr"].as_str().unwrap());
    let page = common::eventually("page from the private image", || common::http_get(&exposed));
    assert!(page.starts_with("private page"), "{page}");
    assert!(m.output().contains("fetched blob from peer"), "{}", m.output());

    // The node the provider uses holds only ciphertext, and its log has no
    // entry for the image: its digest is not in the log.
    let status = http_status(&m.registry(), &format!("/sealpod/v1/log/digests/{digest}"));
    assert!(!status.contains(" 200 "), "a private image must not be in the log: {status}");
    // The key never reached the provider's disk or logs.
    let key_dir = std::fs::read_dir(home.join("private-images")).unwrap().next().unwrap().unwrap().path();
    let key_pem = std::fs::read_to_string(key_dir.join("key.pem")).unwrap();
    let key_b64 = key_pem.lines().filter(|l| !l.starts_with("-----")).collect::<String>();
    for needle in [key_b64.as_bytes(), &key_b64.as_bytes()[..40]] {
        let hits = files_containing(&provider_dir, needle);
        assert!(hits.is_empty(), "key bytes found in {hits:?}");
    }
    // A content address the network does not have: refused naming it, the
    // key used for nothing, nothing left on disk, the provider still serving.
    let missing = format!("sha256:{}", "ab".repeat(32));
    let err = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let publisher = sealpod_publisher::Publisher::open(&dir.join("publisher-raw"), vec![], false).await.unwrap();
        let mut wire = sealpod_manifest::load_pod_manifest(&pod).unwrap();
        wire.containers[0].image = Some(sealpod_proto::Image {
            source: Some(sealpod_proto::image::Source::Content(sealpod_proto::ContentAddress {
                digest: missing.clone(),
                cid: vec![],
                key: Some(sealpod_proto::DecryptionKey {
                    kind: "ocicrypt-jwe-private-pem".into(),
                    data: key_pem.as_bytes().to_vec(),
                }),
            })),
        });
        let options = sealpod_publisher::AttestOptions { allow_insecure_dev: true, ..Default::default() };
        let target = sealpod_publisher::Target::Address(provider.addr.parse().unwrap());
        publisher.deploy(wire, "missing", target, None, &options).await.unwrap_err().to_string()
    });
    assert!(err.contains(&missing) && err.contains("artifact node"), "{err}");
    let private_dir = provider_dir.join("provider/images/private");
    let pods_with_images = std::fs::read_dir(&private_dir).unwrap().count();
    assert_eq!(pods_with_images, 1, "only the running pod has a decrypted image");

    // The same image deploys again from the same encrypted copy, asked for
    // in the manifest this time (`privateImage: true`) instead of the flag.
    let pod_field = dir.join("pod-field.yaml");
    let text = std::fs::read_to_string(&pod).unwrap();
    std::fs::write(&pod_field, text.replace("    args:", "    privateImage: true\n    args:")).unwrap();
    let again = common::ok_json(common::sealpod(
        &home,
        &[
            "--json",
            "deploy",
            pod_field.to_str().unwrap(),
            "--provider",
            &provider.addr,
            "--node",
            &publisher_node,
            "--allow-insecure-dev",
        ],
    ));
    assert_eq!(again["private_images"][0]["reused"], true, "{again}");
    assert_eq!(again["private_images"][0]["digest"], digest);

    // A provider that cannot attest gets no key, and the deploy says why.
    let plain_dir = dir.join("p2");
    std::fs::create_dir_all(plain_dir.join("images")).unwrap();
    let unattested = common::Provider::start_with(
        &plain_dir,
        common::free_port(),
        &["--artifact-node", &m.registry(), "--attestor", "none"],
    );
    let out = deploy(&unattested.addr, &["--allow-insecure-dev"]);
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success() && said.contains("nothing secret was sent"), "{said}");
    assert!(files_containing(&plain_dir, key_b64.as_bytes()).is_empty());
    assert!(
        !plain_dir.join("provider/images/private").exists()
            || walk(&plain_dir.join("provider/images/private")).is_empty()
    );

    // Deleting the pods removes their decrypted root filesystems.
    for d in [&deployed, &again] {
        let id = d["status"]["podId"].as_str().unwrap();
        assert!(common::sealpod(&home, &["delete", id]).status.success());
        assert!(!provider_dir.join("provider/images/private").join(id).exists());
    }
}

/// The layer digests of `oci:DIR:TAG`.
fn layers_of(layout: &Path, tag: &str) -> Vec<String> {
    let out = ok(skopeo(&["inspect", &format!("oci:{}:{tag}", layout.display())]), "skopeo inspect");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["Layers"].as_array().unwrap().iter().map(|l| l.as_str().unwrap().to_owned()).collect()
}

#[test]
fn an_encrypted_image_pushed_into_one_node_comes_out_of_another_with_skopeo_unchanged() {
    if !have_skopeo() {
        eprintln!("skipped: needs skopeo");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let keys = Command::new("sh")
        .arg("-ec")
        .arg("openssl ecparam -name prime256v1 -genkey -noout | openssl pkcs8 -topk8 -nocrypt -out ec.pem; openssl pkey -in ec.pem -pubout -out ec.pub")
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(keys.status.success(), "{}", String::from_utf8_lossy(&keys.stderr));
    let (log_key, vkey) = keygen(dir, "sealpod.test/encrypted", false);
    let a = start_node(dir, "a", &[], &["--log-signing-key".into(), log_key.display().to_string()]);
    let b = start_node(dir, "b", &[a.addr()], &["--log-key".into(), vkey]);
    let plain = sample_image(dir, "encrypted");
    let enc = dir.join("enc");
    let encrypted = json(
        sealpod(&[
            "--json",
            "image",
            "encrypt",
            &format!("oci:{}:v1", plain.display()),
            &format!("oci:{}:v1", enc.display()),
            "--recipient",
            &format!("jwe:{}", dir.join("ec.pub").display()),
        ]),
        "image encrypt",
    );
    let digest = encrypted["manifest_digest"].as_str().unwrap().to_owned();
    ok(push(&enc, &a.registry(), "team/secret:1"), "skopeo push of the encrypted image");

    // By name, through the log, from the mirror: the same bytes.
    let out = dir.join("pulled");
    ok(pull_until(&b.registry(), "team/secret:1", &out, Duration::from_secs(30)), "skopeo pull from the mirror");
    assert_eq!(inspect_digest(&b.registry(), "team/secret:1"), digest);
    assert_eq!(layers_of(&out, "x"), layers_of(&enc, "v1"));
    // By digest from the mirror's private repository: no log entry needed.
    let by_digest = dir.join("by-digest");
    ok(pull_until(&b.registry(), &format!("private@{digest}"), &by_digest, Duration::from_secs(30)), "private pull");
    assert_eq!(layers_of(&by_digest, "x"), layers_of(&enc, "v1"));
    // And it decrypts, with skopeo and with sealpod, to the original layers.
    let dec = dir.join("dec");
    let key = dir.join("ec.pem").display().to_string();
    ok(
        skopeo(&[
            "copy",
            "--decryption-key",
            &key,
            &format!("oci:{}:x", out.display()),
            &format!("oci:{}:d", dec.display()),
        ]),
        "skopeo decrypt",
    );
    assert_eq!(layers_of(&dec, "d"), layers_of(&plain, "v1"));
    let dec2 = dir.join("dec2");
    ok(
        sealpod(&[
            "image",
            "decrypt",
            &format!("oci:{}:x", by_digest.display()),
            &format!("oci:{}:d", dec2.display()),
            "--key",
            &key,
        ]),
        "sealpod image decrypt",
    );
    assert_eq!(layers_of(&dec2, "d"), layers_of(&plain, "v1"));

    // A plain image is no private image: refused by digest without a log entry.
    ok(push(&plain, &a.registry(), "team/plain:1"), "skopeo push of the plain image");
    let plain_digest = inspect_digest(&a.registry(), "team/plain:1");
    let refused =
        skopeo(&["inspect", "--tls-verify=false", &format!("docker://{}/private@{plain_digest}", b.registry())]);
    assert!(!refused.status.success(), "a plain image was served from the private repository");
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("plain layer") || b.output().contains("plain layer"),
        "{}\n{}",
        String::from_utf8_lossy(&refused.stderr),
        b.output()
    );
}
