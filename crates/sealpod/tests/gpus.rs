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

fn vectors() -> Option<std::path::PathBuf> {
    let v = std::env::var_os("SEALPOD_TEST_VECTORS").map(std::path::PathBuf::from);
    if v.is_none() {
        eprintln!("skipped: SEALPOD_TEST_VECTORS is not set");
    }
    v
}

const HOPPER_NONCE: &str = "931d8dd0add203ac3d8b4fbde75e115278eefcdceac5b87671a748f32364dfcb";

#[test]
fn a_hopper_report_verifies_offline_and_a_broken_chain_or_wrong_nonce_is_refused_by_name() {
    let Some(v) = vectors() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let nvidia = v.join("nvidia");
    let report = nvidia.join("hopperAttestationReport.txt");
    let verify = |certs: &str, nonce: &str| {
        sealpod(
            &home,
            &[
                "--json",
                "attest",
                "verify-gpu",
                "--report",
                report.to_str().unwrap(),
                "--certs",
                nvidia.join(certs).to_str().unwrap(),
                "--nonce",
                nonce,
            ],
        )
    };
    let accepted = ok_json(verify("hopper_cert_chain_case1.txt", HOPPER_NONCE));
    let listed: Value =
        serde_json::from_slice(&std::fs::read(nvidia.join("hopperAttestationReport-claims.txt")).unwrap()).unwrap();
    let measured = accepted["measurements"].as_object().unwrap();
    let expected = listed["measurements"]
        .as_array()
        .map_or_else(|| listed["measurements"].as_object().unwrap().len(), |a| a.len());
    assert_eq!(measured.len(), expected, "{accepted}");
    assert_eq!(
        accepted["fwid"],
        "f5c384aebb579217a2c66b17ed0f28e6a9b8d639041acd7b4721cec004f7275494ba94bb5cdfdb3055ee051762b1f75d"
    );

    let said = |o: &std::process::Output| {
        format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
    };
    let wrong = verify("hopper_cert_chain_case1.txt", &"00".repeat(32));
    assert!(!wrong.status.success());
    assert!(said(&wrong).contains("nonce"), "{wrong:?}");
    for broken in ["hopper_cert_chain_case2.txt", "hopper_cert_chain_case3.txt", "hopper_cert_chain_case4.txt"] {
        let out = verify(broken, HOPPER_NONCE);
        assert!(!out.status.success(), "{broken} accepted");
        assert!(said(&out).contains("GPU report refused"), "{out:?}");
    }
}

#[test]
fn a_gpu_report_not_bound_to_the_publishers_nonce_and_key_is_refused_and_a_policy_can_require_one() {
    let Some(v) = vectors() else { return };
    if !is_root() {
        eprintln!("skipped: the provider needs root");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("images")).unwrap();
    let nvidia = v.join("nvidia");
    // A real Hopper report and chain, as an evidence command would print
    // them, but taken for another nonce: replayed evidence.
    let report = std::fs::read_to_string(nvidia.join("hopperAttestationReport.txt")).unwrap();
    let chain = std::fs::read_to_string(nvidia.join("hopper_cert_chain_case1.txt")).unwrap();
    let evidence = serde_json::json!({"gpus": [{"device": "nvidia.com/gpu=0", "report": report.trim(), "certificateChain": chain}]});
    std::fs::write(dir.join("evidence.json"), evidence.to_string()).unwrap();
    let command = dir.join("gpu-evidence.sh");
    std::fs::write(
        &command,
        format!("#!/bin/sh\ntest ${{#1}} -eq 64 || exit 3\ncat {}\n", dir.join("evidence.json").display()),
    )
    .unwrap();
    std::fs::set_permissions(&command, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let provider = Provider::start_with(
        dir,
        free_port(),
        &["--attestor", "insecure-dev", "--gpu-evidence-command", command.to_str().unwrap()],
    );
    let home = dir.join("home");
    let out = sealpod(&home, &["attest", &provider.addr, "--allow-insecure-dev"]);
    assert!(!out.status.success(), "replayed GPU evidence accepted: {}", provider_log(dir));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("GPU attestation") && err.contains("nvidia.com/gpu=0"), "{err}");
    assert!(err.to_lowercase().contains("nonce"), "{err}");
    drop(provider);

    // Without GPU evidence, a policy that requires it refuses the provider.
    let provider = Provider::start_with(dir, free_port(), &["--attestor", "insecure-dev"]);
    let policy = dir.join("policy.toml");
    std::fs::write(&policy, "accept = []\n[gpu]\nrequire = true\n").unwrap();
    let out = sealpod(&home, &["attest", &provider.addr, "--allow-insecure-dev", "--policy", policy.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("requires GPU evidence"), "{out:?}");
    let out = sealpod(&home, &["--json", "attest", &provider.addr, "--allow-insecure-dev"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}
