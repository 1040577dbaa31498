//! A provider under a crowd of hostile peers on loopback: 1,000 concurrent
//! connections that send garbage, send a protocol header and stall, or say
//! nothing, plus real libp2p peers flooding requests past their per-peer
//! limit, while a real publisher deploys and deletes a pod. The publisher's
//! operations succeed, the provider's memory stays bounded (the figure is
//! printed), and it serves normally afterwards. Bounded in count and time.
//! Needs root (it runs a pod); skipped otherwise.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

/// Resident and peak resident memory of a process, in KiB.
fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Opens `n` raw connections that each behave as `kind` says, and keeps them
/// open until `stop`; returns the threads holding them.
fn raw_crowd(port: u16, n: usize, kind: &'static str, stop: Arc<AtomicBool>) -> Vec<std::thread::JoinHandle<()>> {
    (0..n)
        .map(|i| {
            let stop = stop.clone();
            std::thread::Builder::new()
                .stack_size(64 * 1024)
                .spawn(move || {
                    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else { return };
                    let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
                    match kind {
                        "garbage" => {
                            let junk: Vec<u8> =
                                (0..4096u32).map(|j| (j.wrapping_mul(2654435761) >> (i % 24)) as u8).collect();
                            let _ = s.write_all(&junk);
                        }
                        // A multistream-select header, then a byte every so often.
                        "slow" => {
                            let _ = s.write_all(b"\x13/multistream/1.0.0\n");
                        }
                        // An announced frame far larger than any limit.
                        "oversized" => {
                            let _ = s.write_all(b"\x13/multistream/1.0.0\n\x07/noise\n\xff\xff");
                        }
                        _ => {}
                    }
                    let mut buf = [0u8; 512];
                    while !stop.load(Ordering::Relaxed) {
                        if kind == "slow" && s.write_all(b"x").is_err() {
                            break;
                        }
                        match s.read(&mut buf) {
                            Ok(0) => break,
                            Ok(_) => {}
                            Err(e)
                                if e.kind() == std::io::ErrorKind::WouldBlock
                                    || e.kind() == std::io::ErrorKind::TimedOut => {}
                            Err(_) => break,
                        }
                    }
                })
                .expect("spawn")
        })
        .collect()
}

#[test]
fn a_publisher_is_served_while_a_thousand_hostile_connections_and_request_floods_hit_the_provider() {
    let Some((tmp, provider, home)) = fixture("patient") else { return };
    let dir = tmp.path();
    let pid = provider.child.id();
    let port = provider.port();
    let (rss_before, _) = memory_kib(pid);

    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    threads.extend(raw_crowd(port, 400, "garbage", stop.clone()));
    threads.extend(raw_crowd(port, 300, "slow", stop.clone()));
    threads.extend(raw_crowd(port, 300, "oversized", stop.clone()));

    // Real peers, each firing far more concurrent requests than it may.
    let busy = Arc::new(AtomicUsize::new(0));
    let answered = Arc::new(AtomicUsize::new(0));
    let flood = {
        let (stop, busy, answered) = (stop.clone(), busy.clone(), answered.clone());
        let addr: sealpod_net::Multiaddr = provider.addr.parse().unwrap();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            rt.block_on(async move {
                let mut peers = Vec::new();
                for _ in 0..20 {
                    let (node, _) = sealpod_net::Node::start(sealpod_net::NodeConfig::client(
                        sealpod_net::Keypair::generate_ed25519(),
                    ))
                    .await
                    .unwrap();
                    if let Ok(peer) = node.dial(&addr).await {
                        peers.push((node, peer));
                    }
                }
                while !stop.load(Ordering::Relaxed) {
                    let mut asks = Vec::new();
                    for (node, peer) in &peers {
                        for _ in 0..32 {
                            let (node, peer) = (node.clone(), *peer);
                            asks.push(tokio::spawn(async move {
                                node.capacity(peer, sealpod_proto::CapacityRequest::default()).await
                            }));
                        }
                    }
                    for a in asks {
                        match a.await {
                            Ok(Ok(r)) if r.error.as_ref().is_some_and(|e| e.message.contains("too many requests")) => {
                                busy.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(Ok(_)) => {
                                answered.fetch_add(1, Ordering::Relaxed);
                            }
                            _ => {}
                        }
                    }
                }
            });
        })
    };
    std::thread::sleep(Duration::from_secs(1));

    // The real publisher, meanwhile.
    let manifest = dir.join("web.yaml");
    let web_port = free_port();
    std::fs::write(
        &manifest,
        format!(
            "containers:\n  - name: web\n    image: oci:{}:v1\n    args: [serve, --port, \"8080\", --text, calm]\n    ports: [\"{web_port}:8080\"]\n",
            dir.join("images/sample").display()
        ),
    )
    .unwrap();
    let t = Instant::now();
    let deployed =
        ok_json(sealpod(&home, &["--json", "deploy", manifest.to_str().unwrap(), "--provider", &provider.addr]));
    let deploy_time = t.elapsed();
    let pod = deployed["status"]["podId"].as_str().unwrap().to_owned();
    assert!(eventually("the pod answers", || http_get(&format!("127.0.0.1:{web_port}"))).contains("calm"));
    let status = ok_json(sealpod(&home, &["--json", "status", &pod]));
    assert_eq!(status["phase"], "POD_PHASE_RUNNING");
    let (_, peak_during) = memory_kib(pid);
    let out = sealpod(&home, &["delete", &pod]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    flood.join().unwrap();
    let (rss_after, peak) = memory_kib(pid);
    eprintln!(
        "provider memory: {} KiB before, peak {} KiB (peak {} KiB by the end of the publisher's work), {} KiB after; \
         deploy under load took {:?}; flood: {} answered, {} refused over the per-peer limit",
        rss_before,
        peak,
        peak_during,
        rss_after,
        deploy_time,
        answered.load(Ordering::Relaxed),
        busy.load(Ordering::Relaxed)
    );
    assert!(busy.load(Ordering::Relaxed) > 0, "no request was refused over the per-peer limit");
    assert!(peak < 512 * 1024, "the provider grew to {peak} KiB under the crowd");

    // Afterwards it serves as before.
    let again =
        ok_json(sealpod(&home, &["--json", "deploy", manifest.to_str().unwrap(), "--provider", &provider.addr]));
    let pod = again["status"]["podId"].as_str().unwrap().to_owned();
    assert!(sealpod(&home, &["delete", &pod]).status.success());
}
