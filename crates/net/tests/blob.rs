//! Blob exchange between real nodes over loopback.

use std::collections::HashMap;
use std::io::Cursor;
use std::sync::Arc;
use std::time::Duration;

use sealpod_net::{BlobError, BlobSource, Multiaddr, Node, NodeConfig};
use sha2::{Digest, Sha256};

struct Blobs(HashMap<String, Vec<u8>>);

impl BlobSource for Blobs {
    fn open(&self, digest: &str, offset: u64) -> std::io::Result<Option<(u64, Box<dyn std::io::Read + Send>)>> {
        Ok(self.0.get(digest).map(|b| {
            let mut c = Cursor::new(b.clone());
            c.set_position(offset);
            (b.len() as u64, Box::new(c) as Box<dyn std::io::Read + Send>)
        }))
    }
}

fn digest_of(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

fn blob(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

async fn server(blobs: Vec<Vec<u8>>, bootstrap: Vec<Multiaddr>) -> (Node, Multiaddr) {
    let mut cfg = NodeConfig::client(sealpod_net::Keypair::generate_ed25519());
    cfg.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
    cfg.serve = true;
    cfg.bootstrap = bootstrap;
    let (node, inbound) = Node::start(cfg).await.unwrap();
    std::mem::forget(inbound);
    let map = blobs.into_iter().map(|b| (digest_of(&b), b)).collect();
    node.serve_blobs(Arc::new(Blobs(map)));
    let addr = format!("{}/p2p/{}", node.listen_addrs().await[0], node.peer_id()).parse().unwrap();
    (node, addr)
}

async fn client(bootstrap: Vec<Multiaddr>) -> Node {
    let mut cfg = NodeConfig::client(sealpod_net::Keypair::generate_ed25519());
    cfg.bootstrap = bootstrap;
    Node::start(cfg).await.unwrap().0
}

#[tokio::test]
async fn blob_streams_whole_and_by_range_and_unknown_ones_are_refused() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let data = blob(5 << 20, 7);
        let digest = digest_of(&data);
        let (srv, addr) = server(vec![data.clone()], vec![]).await;
        let c = client(vec![]).await;
        let peer = c.dial(&addr).await.unwrap();
        assert_eq!(peer, srv.peer_id());

        let mut whole = Vec::new();
        let (size, n) = c.fetch_blob(peer, &digest, 0, 0, &mut whole).await.unwrap();
        assert_eq!((size, n), (data.len() as u64, data.len() as u64));
        assert_eq!(digest_of(&whole), digest);

        // A range, as a resumed or parallel download asks for it.
        let mut part = Vec::new();
        let (_, n) = c.fetch_blob(peer, &digest, 1_000_000, 12_345, &mut part).await.unwrap();
        assert_eq!(n, 12_345);
        assert_eq!(part, data[1_000_000..1_012_345]);

        let unknown = digest_of(b"nobody has this");
        match c.fetch_blob(peer, &unknown, 0, 0, &mut Vec::new()).await {
            Err(BlobError::Refused { error, .. }) => assert_eq!(error.code, sealpod_proto::ErrorCode::NotFound as i32),
            other => panic!("{other:?}"),
        }
        match c.fetch_blob(peer, "sha256:../../etc/passwd", 0, 0, &mut Vec::new()).await {
            Err(BlobError::Refused { error, .. }) => {
                assert_eq!(error.code, sealpod_proto::ErrorCode::InvalidRequest as i32)
            }
            other => panic!("{other:?}"),
        }
        match c.fetch_blob(peer, &digest, data.len() as u64 + 1, 0, &mut Vec::new()).await {
            Err(BlobError::Refused { .. }) => {}
            other => panic!("{other:?}"),
        }
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn blob_is_found_on_the_dht_and_fetched_from_two_peers_at_once() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let data = blob(3 << 20, 3);
        let digest = digest_of(&data);
        let (a, a_addr) = server(vec![data.clone()], vec![]).await;
        let (b, _) = server(vec![data.clone()], vec![a_addr.clone()]).await;
        a.provide_blob(&digest).await.unwrap();
        b.provide_blob(&digest).await.unwrap();
        let c = client(vec![a_addr]).await;
        let mut holders = Vec::new();
        for _ in 0..50 {
            holders = c.find_blob_providers(&digest).await.unwrap_or_default();
            if holders.len() >= 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        holders.sort();
        let mut want = vec![a.peer_id(), b.peer_id()];
        want.sort();
        assert_eq!(holders, want);

        // Half from each holder, concurrently; together they are the blob.
        let half = data.len() as u64 / 2;
        let (mut first, mut second) = (Vec::new(), Vec::new());
        let (r1, r2) = tokio::join!(
            c.fetch_blob(holders[0], &digest, 0, half, &mut first),
            c.fetch_blob(holders[1], &digest, half, 0, &mut second)
        );
        r1.unwrap();
        r2.unwrap();
        first.extend(second);
        assert_eq!(digest_of(&first), digest);
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_ranges_of_one_blob_stream_from_one_peer_at_once() {
    let _ = tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).try_init();
    tokio::time::timeout(Duration::from_secs(60), async {
        let data = blob(32 << 20, 3);
        let digest = digest_of(&data);
        let (_srv, addr) = server(vec![data.clone()], vec![]).await;
        let c = client(vec![]).await;
        let peer = c.dial(&addr).await.unwrap();
        for round in 0..3 {
            let quarter = (data.len() / 4) as u64;
            let parts = (0..4u64).map(|i| {
                let (c, digest) = (c.clone(), digest.clone());
                async move {
                    let mut part = Vec::new();
                    c.fetch_blob(peer, &digest, i * quarter, quarter, &mut part).await.map(|_| part)
                }
            });
            let parts = futures::future::join_all(parts).await;
            let whole: Vec<u8> = parts
                .into_iter()
                .enumerate()
                .flat_map(|(i, p)| p.unwrap_or_else(|e| panic!("round {round}, range {i}: {e}")))
                .collect();
            assert!(whole == data, "round {round}: the ranges do not make up the blob");
        }
    })
    .await
    .unwrap();
}
