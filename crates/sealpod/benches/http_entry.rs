//! The provider's HTTP entry point next to the pod's own public port, in one
//! run: the same container, the same requests (`GET /`, a new connection
//! each, as the sample server closes them), from the same number of client
//! threads; requests per second and latency percentiles.
//!
//! Needs root (it runs a pod): `cargo bench -p sealpod --bench http_entry`
//! (release build). Optional: `-- --seconds N --clients N --wakes N`.
//! Then the cold start of a pod scaled to zero, woken through the entry point.

#[path = "../tests/common/mod.rs"]
mod common;

use common::{ms, percentile};

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn main() {
    let Some(args) = common::bench_args() else { return };
    if !common::is_root() {
        eprintln!("http_entry: skipped (needs root)");
        return;
    }
    let (seconds, clients) = (common::flag(&args, "--seconds", 5u64), common::flag(&args, "--clients", 16usize));
    let Some((tmp, provider, home)) = common::fixture("bench") else { return };
    let dir = tmp.path();
    let public = common::free_port();
    let pod =
        deploy_sample(dir, &home, &provider, &format!("    ports: [\"{public}:8080\"]\n    host: bench.test\n"), "");
    let entry = std::fs::read_to_string(dir.join("provider/http.addr")).unwrap();
    let direct = format!("127.0.0.1:{public}");
    common::eventually("the pod", || request(&direct, "bench.test").map_err(|e| e.to_string()));
    common::eventually("the entry point", || request(&entry, "bench.test").map_err(|e| e.to_string()));

    // Alternated, so that drift of the machine hits both alike.
    let mut results: Vec<(&str, Run)> = Vec::new();
    for round in 0..2 {
        for (name, addr) in [("pod's public port (direct)", &direct), ("HTTP entry point (by Host)", &entry)] {
            let run = load(addr, clients, Duration::from_secs(seconds));
            eprintln!("round {round}: {name}: {:.0} req/s", run.rate());
            results.push((name, run));
        }
    }
    let merged = |name: &str| {
        let mut all = Run::default();
        for (n, r) in &results {
            if *n == name {
                all.latencies.extend_from_slice(&r.latencies);
                all.elapsed += r.elapsed;
                all.errors += r.errors;
            }
        }
        all
    };
    let (d, e) = (merged("pod's public port (direct)"), merged("HTTP entry point (by Host)"));
    println!("{clients} client threads, {seconds} s per run, 2 runs each, alternated; release build\n");
    println!("| path | requests/s | p50 | p99 | errors |");
    println!("|---|---|---|---|---|");
    for (name, run) in [("pod's public port (direct)", &d), ("HTTP entry point (by Host)", &e)] {
        println!(
            "| {name} | {:.0} | {:.2} ms | {:.2} ms | {} |",
            run.rate(),
            percentile(run.latencies.clone(), 50),
            percentile(run.latencies.clone(), 99),
            run.errors
        );
    }
    println!("\nentry point / direct: {:.2}x requests per second", e.rate() / d.rate());
    let _ = common::sealpod(&home, &["delete", &pod]);
    drop(provider);
    drop(tmp);
    cold_starts(common::flag(&args, "--wakes", 5usize));
}

/// A pod with `replicas.min 0`, woken `wakes` times by a request through
/// the entry point: the first response's latency, next to the containers'
/// own start (the shim's time from the connection to the port accepting).
fn cold_starts(wakes: usize) {
    let Some((tmp, provider, home)) = common::fixture_with("bench", &["--scale-down-after", "1"]) else { return };
    let dir = tmp.path();
    let pod = deploy_sample(dir, &home, &provider, "    host: zero.test\n", "replicas: {min: 0, max: 1}\n");
    let entry = std::fs::read_to_string(dir.join("provider/http.addr")).unwrap();
    let state = dir.join("provider/pods").join(&pod).join("status.json");
    let (mut first, mut own) = (Vec::new(), Vec::new());
    for i in 0..wakes {
        common::eventually("scaled to zero", || {
            let phase = common::ok_json(common::sealpod(&home, &["--json", "status", &pod]))["phase"].clone();
            if phase == "POD_PHASE_SCALED_TO_ZERO" {
                Ok(())
            } else {
                Err(phase.to_string())
            }
        });
        let t = Instant::now();
        request(&entry, "zero.test").expect("the cold request is answered");
        let total = ms(t.elapsed());
        let state: serde_json::Value = serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
        let start = state["last_wake_us"].as_f64().map_or(f64::NAN, |us| us / 1000.0);
        eprintln!("wake {i}: first response {total:.1} ms, containers' own start {start:.1} ms");
        first.push(total);
        own.push(start);
    }
    let beyond: Vec<f64> = first.iter().zip(&own).map(|(a, b)| a - b).collect();
    println!("\ncold start of a scaled-to-zero pod through the entry point, {wakes} wakes:\n");
    println!("| | p50 | max |");
    println!("|---|---|---|");
    for (name, v) in [
        ("first response", &first),
        ("containers' own start (connection to port accepting)", &own),
        ("beyond the containers' own start", &beyond),
    ] {
        let max = v.iter().cloned().fold(f64::MIN, f64::max);
        println!("| {name} | {:.1} ms | {max:.1} ms |", percentile(v.clone(), 50));
    }
    let _ = common::sealpod(&home, &["delete", &pod]);
    drop(provider);
}

/// Deploys the sample server (HTTP port 8080) with `container` lines added
/// to its container and `top` lines to the pod; returns the pod id.
fn deploy_sample(
    dir: &std::path::Path,
    home: &std::path::Path,
    provider: &common::Provider,
    container: &str,
    top: &str,
) -> String {
    let manifest = dir.join("pod.yaml");
    std::fs::write(
        &manifest,
        format!(
            "containers:\n  - name: web\n    image: oci:{}:v1\n    args: [serve, --port, \"8080\", --text, hi]\n    port: 8080\n{container}    resources: {{cpu: 1, memory: 128Mi}}\n{top}",
            dir.join("images/sample").display()
        ),
    )
    .unwrap();
    let deployed = common::ok_json(common::sealpod(
        home,
        &["--json", "deploy", manifest.to_str().unwrap(), "--provider", &provider.addr],
    ));
    deployed["status"]["podId"].as_str().unwrap().to_owned()
}

#[derive(Default)]
struct Run {
    latencies: Vec<f64>,
    elapsed: Duration,
    errors: u64,
}

impl Run {
    fn rate(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

fn request(addr: &str, host: &str) -> std::io::Result<()> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.set_nodelay(true)?;
    write!(s, "GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")?;
    let mut response = Vec::with_capacity(256);
    s.read_to_end(&mut response)?;
    if response.starts_with(b"HTTP/1.1 200") {
        Ok(())
    } else {
        Err(std::io::Error::other(String::from_utf8_lossy(&response).into_owned()))
    }
}

/// `clients` threads requesting as fast as they are answered for `length`.
fn load(addr: &str, clients: usize, length: Duration) -> Run {
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let (addr, stop) = (addr.to_owned(), stop.clone());
            std::thread::spawn(move || {
                let mut run = Run::default();
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    match request(&addr, "bench.test") {
                        Ok(()) => run.latencies.push(ms(t.elapsed())),
                        Err(_) => run.errors += 1,
                    }
                }
                run
            })
        })
        .collect();
    std::thread::sleep(length);
    stop.store(true, Ordering::Relaxed);
    let mut all = Run::default();
    for t in threads {
        let run = t.join().unwrap();
        all.latencies.extend(run.latencies);
        all.errors += run.errors;
    }
    all.elapsed = started.elapsed();
    all
}
