//! GPUs through CDI, end to end without a GPU: a CDI spec written here for
//! real character devices made here (the kernel's fuse and btrfs-control devices
//! under other names, which no container may open by default), a provider reading
//! it, pods that ask for `nvidia.com/gpu` and see exactly their device, a
//! request over what is free refused naming what is, the allocation kept
//! across a provider restart and freed on delete, and a pod without the
//! request unable to reach the device. Also UDP ports, end to end. Needs root.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// Device numbers of the stand-in GPUs: /dev/fuse and /dev/btrfs-control,
/// harmless to open (their operations need a mount or privileges a pod lacks),
/// and outside the default device-cgroup list, so that opening them from a
/// container shows the provider's per-device rule at work.
const GPU0: (u32, u32) = (10, 229);
const GPU1: (u32, u32) = (10, 234);

fn mknod(path: &Path, (major, minor): (u32, u32)) {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: mknod and chmod with a NUL-terminated path.
    unsafe {
        assert_eq!(libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(major, minor)), 0, "mknod");
        assert_eq!(libc::chmod(c.as_ptr(), 0o666), 0);
    }
}

fn write_cdi(dir: &Path) -> std::path::PathBuf {
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

fn manifest(dir: &Path, name: &str, gpus: u32, port: u16) -> std::path::PathBuf {
    let image = format!("oci:{}:v1", dir.join("images/sample").display());
    let resources = if gpus > 0 { format!("\n    resources: {{nvidia.com/gpu: {gpus}}}") } else { String::new() };
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &path,
        format!(
            "containers:\n  - name: main\n    image: {image}\n    args: [serve, --port, \"8080\"]\n    ports: [\"{port}:8080\"]{resources}\n"
        ),
    )
    .unwrap();
    path
}

fn deploy(home: &Path, manifest: &Path, provider: &Provider) -> Result<String, String> {
    let out = sealpod(home, &["--json", "deploy", manifest.to_str().unwrap(), "--provider", &provider.addr]);
    if !out.status.success() {
        return Err(format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)));
    }
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    Ok(v["status"]["podId"].as_str().unwrap().to_owned())
}

fn exec(home: &Path, pod: &str, argv: &[&str]) -> (Option<i32>, String) {
    let mut args = vec!["exec", pod, "--"];
    args.extend_from_slice(argv);
    let out = sealpod(home, &args);
    (out.status.code(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

fn inventory(dir: &Path, cdi: &Path) -> Value {
    ok_json(sealpod(
        &dir.join("home"),
        &[
            "--json",
            "provider",
            "gpus",
            "--state-dir",
            dir.join("provider").to_str().unwrap(),
            "--cdi-dir",
            cdi.to_str().unwrap(),
        ],
    ))
}

fn holder(inv: &Value, device: &str) -> Option<String> {
    inv["gpus"].as_array().unwrap().iter().find(|g| g["device"] == device).unwrap()["pod"].as_str().map(Into::into)
}

#[test]
fn pods_get_exactly_their_gpus_exclusively_across_a_restart_and_delete_frees_them() {
    if !is_root() {
        eprintln!("skipped: running pods needs root");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    build_sample_image(dir);
    let cdi = write_cdi(dir);
    let cdi_arg = cdi.to_str().unwrap().to_owned();
    let provider = Provider::start_with(dir, free_port(), &["--cdi-dir", &cdi_arg]);
    let home = dir.join("home");

    let inv = inventory(dir, &cdi);
    assert_eq!(inv["source"], "cdi");
    assert_eq!(inv["free"], 2);
    let devices: Vec<&str> = inv["gpus"].as_array().unwrap().iter().map(|g| g["device"].as_str().unwrap()).collect();
    assert_eq!(devices, ["nvidia.com/gpu=0", "nvidia.com/gpu=1"]);

    // A pod with one GPU sees that node only, can open it, and has the spec's environment.
    let port_a = free_port();
    let a = deploy(&home, &manifest(dir, "a", 1, port_a), &provider).unwrap();
    let (code, listing) = exec(&home, &a, &["/app/sealpod-sample", "ls", "/dev"]);
    assert_eq!(code, Some(0), "{listing}");
    assert!(listing.lines().any(|l| l == "nvidia0"), "{listing}");
    assert!(!listing.contains("nvidia1"), "{listing}");
    let (code, opened) = exec(&home, &a, &["/app/sealpod-sample", "open", "/dev/nvidia0"]);
    assert_eq!(code, Some(0), "the pod cannot open its own GPU: {opened}");
    eventually("the pod answers", || http_get(&format!("127.0.0.1:{port_a}")));
    let (_, environ) = exec(&home, &a, &["/app/sealpod-sample", "cat", "/proc/1/environ"]);
    assert!(environ.contains("SEALPOD_CDI_TEST=from-the-spec"), "{environ}");
    assert_eq!(holder(&inventory(dir, &cdi), "nvidia.com/gpu=0").as_deref(), Some(a.as_str()));
    // On a cgroup v1 host, the container's device list admits its GPU's
    // numbers and not the other's.
    if let Ok(list) = std::fs::read_to_string(format!("/sys/fs/cgroup/devices/sealpod/{a}/main/devices.list")) {
        assert!(list.lines().any(|l| l == format!("c {}:{} rwm", GPU0.0, GPU0.1)), "{list}");
        assert!(!list.contains(&format!("{}:{} ", GPU1.0, GPU1.1)), "{list}");
    }

    // More than is free is refused, naming what is free.
    let refused = deploy(&home, &manifest(dir, "b", 2, free_port()), &provider).unwrap_err();
    assert!(refused.contains("not enough GPUs"), "{refused}");
    assert!(refused.contains("nvidia.com/gpu=1"), "{refused}");

    // A pod without the request has no node, cannot make one, and cannot
    // reach the host's node by its path.
    let c = deploy(&home, &manifest(dir, "c", 0, free_port()), &provider).unwrap();
    let (_, listing) = exec(&home, &c, &["/app/sealpod-sample", "ls", "/dev"]);
    assert!(!listing.contains("nvidia"), "{listing}");
    let mknod = format!("{}:{}", GPU0.0, GPU0.1);
    let (code, out) = exec(&home, &c, &["/app/sealpod-sample", "open", "/tmp/stolen-gpu", "--mknod", &mknod]);
    assert_ne!(code, Some(0), "a pod without GPUs opened one: {out}");
    let host_path = dir.join("dev/gpu0");
    let (code, out) = exec(&home, &c, &["/app/sealpod-sample", "open", host_path.to_str().unwrap()]);
    assert_ne!(code, Some(0), "a pod without GPUs reached the host node: {out}");

    // The allocation survives a provider restart: the second GPU still goes
    // to the next pod, never the first pod's.
    let port = provider.port();
    provider.kill_hard();
    let provider = Provider::start_with(dir, port, &["--cdi-dir", &cdi_arg]);
    assert_eq!(holder(&inventory(dir, &cdi), "nvidia.com/gpu=0").as_deref(), Some(a.as_str()));
    let d = deploy(&home, &manifest(dir, "d", 1, free_port()), &provider).unwrap();
    let (_, listing) = exec(&home, &d, &["/app/sealpod-sample", "ls", "/dev"]);
    assert!(listing.lines().any(|l| l == "nvidia1") && !listing.contains("nvidia0"), "{listing}");
    let refused = deploy(&home, &manifest(dir, "e", 1, free_port()), &provider).unwrap_err();
    assert!(refused.contains("0 of this provider's 2 are free (none)"), "{refused}");

    // Delete frees the device at once.
    for pod in [&a, &c, &d] {
        let out = sealpod(&home, &["delete", pod]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    assert_eq!(inventory(dir, &cdi)["free"], 2);
    let both = deploy(&home, &manifest(dir, "f", 2, free_port()), &provider).unwrap();
    let (_, listing) = exec(&home, &both, &["/app/sealpod-sample", "ls", "/dev"]);
    assert!(listing.contains("nvidia0") && listing.contains("nvidia1"), "{listing}");
    // The spec gave the second device read-write access only: its cgroup
    // rule still lets it open read-write.
    let (code, out) = exec(&home, &both, &["/app/sealpod-sample", "open", "/dev/nvidia1"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(sealpod(&home, &["delete", &both]).status.success());
    drop(provider);
}

fn udp_exchange(socket: &std::net::UdpSocket, to: &str, text: &str) -> Result<String, String> {
    socket.send_to(text.as_bytes(), to).map_err(|e| e.to_string())?;
    let mut buf = [0u8; 2048];
    let (n, _) = socket.recv_from(&mut buf).map_err(|e| e.to_string())?;
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}

#[test]
fn a_udp_port_echoes_each_client_its_own_datagrams() {
    let Some((tmp, provider, home)) = fixture("udp") else { return };
    let dir = tmp.path();
    let port = {
        // A free UDP port on loopback.
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap().port()
    };
    let image = format!("oci:{}:v1", dir.join("images/sample").display());
    let manifest = dir.join("udp.yaml");
    std::fs::write(
        &manifest,
        format!(
            "containers:\n  - name: echo\n    image: {image}\n    args: [udp-echo, --port, \"9000\"]\n    ports: [\"{port}:9000/udp\"]\n"
        ),
    )
    .unwrap();
    let deployed =
        ok_json(sealpod(&home, &["--json", "deploy", manifest.to_str().unwrap(), "--provider", &provider.addr]));
    let pod = deployed["status"]["podId"].as_str().unwrap().to_owned();
    let address = deployed["status"]["addresses"][0].clone();
    assert_eq!(address["multiaddr"], format!("/ip4/127.0.0.1/udp/{port}"), "{deployed}");
    assert_eq!(address["protocol"], "PROTOCOL_UDP", "{deployed}");

    let to = format!("127.0.0.1:{port}");
    let clients: Vec<std::net::UdpSocket> = (0..2)
        .map(|_| {
            let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            s.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
            s
        })
        .collect();
    // The first datagrams may come before the container listens; UDP
    // clients retry, and so does this one.
    let t = Instant::now();
    let first = eventually("the UDP echo answers", || udp_exchange(&clients[0], &to, "one"));
    assert_eq!(first, "echo: one");
    eprintln!("first UDP answer after {:?}", t.elapsed());
    for i in 0..20 {
        for (c, client) in clients.iter().enumerate() {
            let text = format!("client {c} datagram {i}");
            let answer = eventually("an answer", || udp_exchange(client, &to, &text));
            assert_eq!(answer, format!("echo: {text}"));
        }
    }
    assert!(sealpod(&home, &["delete", &pod]).status.success());
    // The port is the provider's again: nothing answers.
    let late = udp_exchange(&clients[0], &to, "after delete");
    assert!(late.is_err(), "answered after delete: {late:?}");
}
