//! Blob GET throughput on loopback, side by side in one run: our registry
//! (verifying while it sends), the CNCF distribution registry (Debian's
//! `docker-registry`) holding the same blob, and a bare HTTP responder that
//! copies the file to the socket (the ceiling).
//!
//! `cargo bench -p sealpod-registry --bench blob_get`; `BLOB_MB` sets the
//! blob size (default 64).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sealpod_registry::Registry;
use sealpod_store::{Digest, Store};

/// GETs `path` on a fresh connection and drains the body; returns its length.
fn get(addr: SocketAddr, path: &str, buf: &mut [u8]) -> u64 {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut total = 0u64;
    loop {
        let n = s.read(buf).unwrap();
        if n == 0 {
            return total;
        }
        total += n as u64;
    }
}

#[path = "../tests/common/mod.rs"]
mod common;

/// The CNCF registry holding `blob`, pushed with a monolithic upload.
fn start_cncf(blob: &[u8], digest: &Digest) -> Option<common::CncfRegistry> {
    let cncf = common::CncfRegistry::start()?;
    let r = common::raw_request(cncf.addr, "POST", "/v2/bench/blob/blobs/uploads/", &[], b"");
    assert_eq!(r.status, 202, "{r:?}");
    let location = r.header("Location").unwrap().to_owned();
    let path = location.split_once(&cncf.addr.to_string()).map_or(location.as_str(), |(_, p)| p).to_owned();
    let sep = if path.contains('?') { '&' } else { '?' };
    let r = common::raw_request(cncf.addr, "PUT", &format!("{path}{sep}digest={digest}"), &[], blob);
    assert_eq!(r.status, 201, "{r:?}");
    Some(cncf)
}

/// Answers every connection with the file, copied by the kernel where it can.
fn start_bare(path: std::path::PathBuf, len: u64) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut req = Vec::new();
            let mut byte = [0u8; 1];
            while !req.ends_with(b"\r\n\r\n") && req.len() < 8192 && stream.read(&mut byte).is_ok_and(|n| n == 1) {
                req.push(byte[0]);
            }
            let _ = write!(stream, "HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n");
            let mut file = std::fs::File::open(&path).unwrap();
            let _ = std::io::copy(&mut file, &mut stream);
            let _ = stream.shutdown(std::net::Shutdown::Write);
        }
    });
    addr
}

fn blob_get(c: &mut Criterion) {
    let mb: usize = std::env::var("BLOB_MB").ok().and_then(|v| v.parse().ok()).unwrap_or(64);
    let mut state = 0x2545F4914F6CDD1Du64;
    let blob: Vec<u8> = (0..mb * 1024 * 1024)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("store")).unwrap();
    let digest = store.put(&blob).unwrap();
    let path = format!("/v2/bench/blob/blobs/{digest}");

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let ours = listener.local_addr().unwrap();
    let registry = Registry::new(store.clone());
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(async move {
            registry.serve(tokio::net::TcpListener::from_std(listener).unwrap()).await.unwrap();
        });
    });
    while TcpStream::connect(ours).is_err() {
        std::thread::sleep(Duration::from_millis(10));
    }
    let cncf = start_cncf(&blob, &digest);
    if cncf.is_none() {
        eprintln!("docker-registry is not installed or did not start: comparing with the bare responder only");
    }
    let bare = start_bare(store.root().join("blobs/sha256").join(digest.hex()), blob.len() as u64);
    let mut hash_group = c.benchmark_group(format!("sha256_{mb}MiB"));
    hash_group.throughput(Throughput::Bytes(blob.len() as u64));
    hash_group.sample_size(10).measurement_time(Duration::from_secs(5));
    hash_group.bench_function("in-memory", |b| b.iter(|| Digest::of(&blob)));
    hash_group.finish();
    drop(blob);

    let mut buf = vec![0u8; 256 * 1024];
    let mut group = c.benchmark_group(format!("blob_get_{mb}MiB"));
    group.throughput(Throughput::Bytes((mb * 1024 * 1024) as u64));
    group.sample_size(10).warm_up_time(Duration::from_secs(2)).measurement_time(Duration::from_secs(10));
    let expected = (mb * 1024 * 1024) as u64;
    group.bench_function("sealpod-registry", |b| b.iter(|| assert!(get(ours, &path, &mut buf) > expected)));
    if let Some(cncf) = &cncf {
        group.bench_function("docker-registry", |b| b.iter(|| assert!(get(cncf.addr, &path, &mut buf) > expected)));
    }
    group.bench_function("bare-sendfile", |b| b.iter(|| assert!(get(bare, "/", &mut buf) > expected)));
    group.finish();
}

criterion_group!(benches, blob_get);
criterion_main!(benches);
