//! What a CDI device and a UDP port cost, each beside the obvious
//! alternative, in one run on loopback:
//!
//! - deploy of a pod given one CDI device (a stand-in GPU: a character device
//!   and a spec naming it) against the same pod without it, alternating,
//!   whole `sealpod deploy` commands, median and p90;
//! - UDP round trips through a pod's exposed UDP port (the shim's relay into
//!   the pod's network namespace, to the sample's echo) against round trips to
//!   the same echo code running on the host, median and p99, and datagrams
//!   per second for one client sending one at a time.
//!
//! Needs root (containers): `cargo bench -p sealpod --bench devices_udp`
//! (optional: `-- --rounds N --datagrams N`).

#[path = "../tests/common/mod.rs"]
mod common;

use std::net::UdpSocket;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{ms, percentile};

fn main() {
    let Some(args) = common::bench_args() else { return };
    if !common::is_root() {
        eprintln!("devices_udp: skipped (running pods needs root)");
        return;
    }
    let rounds = common::flag(&args, "--rounds", 10usize);
    let datagrams = common::flag(&args, "--datagrams", 5000usize);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    common::build_sample_image(dir);
    let cdi = common::write_cdi(dir);
    let provider = common::Provider::start_with(dir, common::free_port(), &["--cdi-dir", cdi.to_str().unwrap()]);
    let home = dir.join("home");

    let (mut with, mut without) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        for (gpus, times) in [(1, &mut with), (0, &mut without)] {
            let manifest = write_manifest(dir, gpus);
            let t = Instant::now();
            let pod = deploy(&home, &manifest, &provider);
            times.push(ms(t.elapsed()));
            assert!(common::sealpod(&home, &["delete", &pod]).status.success());
        }
    }
    println!(
        "deploy with one CDI device: p50 {:.1} ms, p90 {:.1} ms ({rounds} rounds)",
        percentile(with.clone(), 50),
        percentile(with, 90)
    );
    println!(
        "deploy without a device:    p50 {:.1} ms, p90 {:.1} ms",
        percentile(without.clone(), 50),
        percentile(without, 90)
    );

    // The same echo, on the host and in a pod.
    let host_echo = UdpSocket::bind("127.0.0.1:0").unwrap();
    let host_addr = host_echo.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 65_536];
        loop {
            let Ok((n, from)) = host_echo.recv_from(&mut buf) else { continue };
            let mut answer = b"echo: ".to_vec();
            answer.extend_from_slice(&buf[..n]);
            let _ = host_echo.send_to(&answer, from);
        }
    });
    let port = UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let image = format!("oci:{}:v1", dir.join("images/sample").display());
    let manifest = dir.join("udp.yaml");
    std::fs::write(
        &manifest,
        format!("containers:\n  - name: echo\n    image: {image}\n    args: [udp-echo, --port, \"9000\"]\n    ports: [\"{port}:9000/udp\"]\n"),
    )
    .unwrap();
    let pod = deploy(&home, &manifest, &provider);
    let pod_addr = format!("127.0.0.1:{port}");
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    common::eventually("the pod's UDP echo answers", || round_trip(&client, &pod_addr).map(|_| ()));
    for (name, to) in [("host echo (no relay)", host_addr.to_string()), ("pod UDP port (relay)", pod_addr.clone())] {
        let mut times = Vec::with_capacity(datagrams);
        let t = Instant::now();
        for _ in 0..datagrams {
            times.push(round_trip(&client, &to).expect("an answer"));
        }
        let rate = datagrams as f64 / t.elapsed().as_secs_f64();
        println!(
            "UDP round trip, {name}: p50 {:.1} µs, p99 {:.1} µs, {rate:.0} round trips/s ({datagrams} datagrams of 64 bytes)",
            percentile(times.clone(), 50),
            percentile(times, 99)
        );
    }
    assert!(common::sealpod(&home, &["delete", &pod]).status.success());
}

fn round_trip(client: &UdpSocket, to: &str) -> Result<f64, String> {
    let payload = [7u8; 64];
    let mut buf = [0u8; 256];
    let t = Instant::now();
    client.send_to(&payload, to).map_err(|e| e.to_string())?;
    let (n, _) = client.recv_from(&mut buf).map_err(|e| e.to_string())?;
    if n != payload.len() + 6 {
        return Err(format!("{n}-byte answer"));
    }
    Ok(t.elapsed().as_secs_f64() * 1e6)
}

fn write_manifest(dir: &Path, gpus: u32) -> std::path::PathBuf {
    let image = format!("oci:{}:v1", dir.join("images/sample").display());
    let resources = if gpus > 0 { "\n    resources: {nvidia.com/gpu: 1}" } else { "" };
    let path = dir.join(format!("pod-{gpus}.yaml"));
    std::fs::write(
        &path,
        format!("containers:\n  - name: main\n    image: {image}\n    args: [serve, --port, \"8080\"]{resources}\n"),
    )
    .unwrap();
    path
}

fn deploy(home: &Path, manifest: &Path, provider: &common::Provider) -> String {
    let v = common::ok_json(common::sealpod(
        home,
        &["--json", "deploy", manifest.to_str().unwrap(), "--provider", &provider.addr],
    ));
    v["status"]["podId"].as_str().unwrap().to_owned()
}
