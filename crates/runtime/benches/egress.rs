//! Throughput through the egress proxy (an HTTPS-style CONNECT tunnel) next to
//! a direct connection to the same loopback server, in the same run.
//!
//! `cargo bench -p sealpod-runtime --bench egress`

use std::net::SocketAddr;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sealpod_runtime::egress::{serve, AllowedUrl, EgressPolicy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const PAYLOAD: usize = 64 << 20;

/// A server that sends PAYLOAD bytes to every connection, after reading one
/// request line.
async fn source() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        let block = vec![7u8; 1 << 20];
        loop {
            let (mut c, _) = l.accept().await.unwrap();
            let block = block.clone();
            tokio::spawn(async move {
                let mut b = [0u8; 64];
                let _ = c.read(&mut b).await;
                for _ in 0..PAYLOAD / block.len() {
                    if c.write_all(&block).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

async fn drain(mut c: TcpStream) -> usize {
    c.write_all(b"GO\r\n").await.unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0;
    loop {
        let n = c.read(&mut buf).await.unwrap();
        if n == 0 {
            return total;
        }
        total += n;
    }
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (server, proxy) = rt.block_on(async {
        let server = source().await;
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = l.local_addr().unwrap();
        let policy = EgressPolicy {
            proxy_port: 0,
            allow: vec![AllowedUrl { scheme: "https".into(), host: "127.0.0.1".into(), port: server.port() }],
            unrestricted: false,
            deny: vec![],
            deny_file: None,
        };
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        std::mem::forget(_rx);
        tokio::spawn(serve(l, Arc::new(policy), tx));
        (server, proxy)
    });
    let mut group = c.benchmark_group("egress");
    group.throughput(Throughput::Bytes(PAYLOAD as u64));
    group.sample_size(10);
    group.bench_function("direct", |b| {
        b.iter(|| rt.block_on(async { assert_eq!(drain(TcpStream::connect(server).await.unwrap()).await, PAYLOAD) }))
    });
    group.bench_function("through_proxy", |b| {
        b.iter(|| {
            rt.block_on(async {
                let mut c = TcpStream::connect(proxy).await.unwrap();
                c.write_all(format!("CONNECT 127.0.0.1:{} HTTP/1.1\r\n\r\n", server.port()).as_bytes()).await.unwrap();
                let mut head = [0u8; 39];
                c.read_exact(&mut head).await.unwrap();
                assert!(head.starts_with(b"HTTP/1.1 200"));
                assert_eq!(drain(c).await, PAYLOAD);
            })
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
