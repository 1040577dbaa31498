//! Blob exchange throughput: 64 MiB over `/apocryph/blob/0.0.1` (TCP, Noise,
//! Yamux) next to the same bytes over a plain loopback TCP connection, in the
//! same run.
//!
//! `cargo bench -p sealpod-net --bench blob`

use std::io::Cursor;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sealpod_net::{BlobSource, Node, NodeConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SIZE: usize = 64 << 20;

struct One(String, Arc<Vec<u8>>);

/// The blob, shared rather than copied for each request.
struct Shared(Arc<Vec<u8>>);

impl AsRef<[u8]> for Shared {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl BlobSource for One {
    fn open(&self, digest: &str, offset: u64) -> std::io::Result<Option<(u64, Box<dyn std::io::Read + Send>)>> {
        if digest != self.0 {
            return Ok(None);
        }
        let mut c = Cursor::new(Shared(self.1.clone()));
        c.set_position(offset);
        Ok(Some((self.1.len() as u64, Box::new(c))))
    }
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let data = Arc::new(vec![42u8; SIZE]);
    let digest = format!("sha256:{}", "ab".repeat(32));
    let (client, peer, tcp) = rt.block_on(async {
        let mut cfg = NodeConfig::client(sealpod_net::Keypair::generate_ed25519());
        cfg.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
        let (server, inbound) = Node::start(cfg).await.unwrap();
        std::mem::forget(inbound);
        server.serve_blobs(Arc::new(One(digest.clone(), data.clone())));
        let addr = format!("{}/p2p/{}", server.listen_addrs().await[0], server.peer_id()).parse().unwrap();
        let (client, inbound) =
            Node::start(NodeConfig::client(sealpod_net::Keypair::generate_ed25519())).await.unwrap();
        std::mem::forget(inbound);
        let peer = client.dial(&addr).await.unwrap();
        std::mem::forget(server);

        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tcp = l.local_addr().unwrap();
        let d = data.clone();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = l.accept().await.unwrap();
                let d = d.clone();
                tokio::spawn(async move {
                    let _ = s.write_all(&d).await;
                });
            }
        });
        (client, peer, tcp)
    });
    let mut group = c.benchmark_group("blob");
    group.throughput(Throughput::Bytes(SIZE as u64));
    group.sample_size(10);
    group.bench_function("libp2p_blob_protocol", |b| {
        b.iter(|| {
            rt.block_on(async {
                let mut sink = tokio::io::sink();
                let (_, n) = client.fetch_blob(peer, &digest, 0, 0, &mut sink).await.unwrap();
                assert_eq!(n as usize, SIZE);
            })
        })
    });
    group.bench_function("libp2p_blob_protocol_4_streams", |b| {
        b.iter(|| {
            rt.block_on(async {
                let quarter = (SIZE / 4) as u64;
                let parts = (0..4u64).map(|i| {
                    let (client, digest) = (client.clone(), digest.clone());
                    async move {
                        let mut sink = tokio::io::sink();
                        client.fetch_blob(peer, &digest, i * quarter, quarter, &mut sink).await.unwrap().1
                    }
                });
                let n: u64 = futures::future::join_all(parts).await.into_iter().sum();
                assert_eq!(n as usize, SIZE);
            })
        })
    });
    group.bench_function("plain_tcp", |b| {
        b.iter(|| {
            rt.block_on(async {
                let mut s = tokio::net::TcpStream::connect(tcp).await.unwrap();
                let mut buf = vec![0u8; 256 * 1024];
                let mut total = 0;
                loop {
                    let n = s.read(&mut buf).await.unwrap();
                    if n == 0 {
                        break;
                    }
                    total += n;
                }
                assert_eq!(total, SIZE);
            })
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
