//! The artifact node: a local OCI registry (`sealpod-registry` over
//! `sealpod-store`) whose missing content comes from peers.
//!
//! Docker, podman and skopeo talk to the registry on localhost. A blob or a
//! manifest (by digest) that the store lacks is looked up on the DHT, fetched
//! over `/apocryph/blob/0.0.1` from a peer that holds it, and written through
//! the store, which verifies it against its digest before anything is served.
//! A manifest is fetched with everything it references. Whatever the node
//! holds it announces on the DHT and serves to other peers.
//!
//! Not here yet: the transparency log (publishing, syncing, and refusing to
//! serve manifests not included in it) and name resolution of tags across
//! peers; pulls across peers are by digest until then.

use std::collections::HashSet;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use sealpod_net::{BlobSource, Multiaddr, Node, NodeConfig as NetConfig, PeerId};
use sealpod_registry::{ContentSource, Registry};
use sealpod_store::{Digest, ParsedManifest, RepositoryName, Store};

/// How an artifact node is set up.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// The content store and the node key.
    pub dir: PathBuf,
    /// Where the registry API listens (keep it on loopback).
    pub registry: SocketAddr,
    /// libp2p listen addresses.
    pub listen: Vec<Multiaddr>,
    /// DHT bootstrap peers.
    pub bootstrap: Vec<Multiaddr>,
    /// Written (JSON: peer id, addresses, registry) once the node serves.
    pub ready_file: Option<PathBuf>,
}

/// What a running node is reachable at.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Ready {
    /// The node's peer id.
    pub peer_id: String,
    /// libp2p addresses, each ending in `/p2p/<peer id>`.
    pub addresses: Vec<String>,
    /// The registry API's address.
    pub registry: SocketAddr,
}

/// Serves blobs to peers straight from the store.
struct StoreBlobs(Store);

impl BlobSource for StoreBlobs {
    fn open(&self, digest: &str, offset: u64) -> std::io::Result<Option<(u64, Box<dyn std::io::Read + Send>)>> {
        let Ok(digest) = digest.parse::<Digest>() else { return Ok(None) };
        if !self.0.contains(&digest).map_err(std::io::Error::other)? {
            return Ok(None);
        }
        let mut reader = self.0.reader(&digest).map_err(std::io::Error::other)?;
        let size = reader.len();
        std::io::copy(&mut std::io::Read::take(&mut reader, offset), &mut std::io::sink())?;
        Ok(Some((size, Box::new(reader))))
    }
}

/// Fetches what the store lacks from the peers that hold it.
#[derive(Clone)]
struct Peers {
    store: Store,
    net: Node,
}

type BoxedBool = Pin<Box<dyn Future<Output = bool> + Send>>;

impl Peers {
    async fn holders(&self, digest: &Digest) -> Vec<PeerId> {
        for _ in 0..10 {
            match self.net.find_blob_providers(&digest.to_string()).await {
                Ok(peers) if !peers.is_empty() => return peers,
                _ => tokio::time::sleep(Duration::from_millis(300)).await,
            }
        }
        Vec::new()
    }

    /// Fetches one blob into the store; true if it is there afterwards.
    async fn blob(&self, digest: Digest) -> bool {
        let store = self.store.clone();
        if tokio::task::spawn_blocking(move || store.contains(&digest)).await.ok().and_then(Result::ok) == Some(true) {
            return true;
        }
        for peer in self.holders(&digest).await {
            let Ok(tmp) = tempfile::NamedTempFile::new_in(self.store.root()) else { return false };
            let Ok(file) = tmp.reopen() else { return false };
            let mut sink = tokio::fs::File::from_std(file);
            match self.net.fetch_blob(peer, &digest.to_string(), 0, 0, &mut sink).await {
                Ok(_) => {
                    let store = self.store.clone();
                    let stored = tokio::task::spawn_blocking(move || {
                        let file = std::fs::File::open(tmp.path())?;
                        store.put_from(file).map_err(std::io::Error::other)
                    })
                    .await;
                    match stored {
                        Ok(Ok(d)) if d == digest => {
                            tracing::info!(%digest, %peer, "fetched blob from peer");
                            let _ = self.net.provide_blob(&digest.to_string()).await;
                            return true;
                        }
                        Ok(Ok(d)) => {
                            // The store verified the bytes; they were something else.
                            tracing::warn!(%digest, got = %d, %peer, "peer sent the wrong content");
                            let store = self.store.clone();
                            let _ = tokio::task::spawn_blocking(move || store.remove_blob(&d)).await;
                        }
                        other => tracing::warn!(%digest, %peer, ?other, "storing fetched blob failed"),
                    }
                }
                Err(e) => tracing::info!(%digest, %peer, error = %e, "fetch failed; trying the next holder"),
            }
        }
        false
    }

    /// Fetches a manifest, everything it references, and records it in `repo`.
    fn manifest(&self, repo: RepositoryName, digest: Digest) -> BoxedBool {
        let this = self.clone();
        Box::pin(async move {
            if !this.blob(digest).await {
                return false;
            }
            let store = this.store.clone();
            let parsed = tokio::task::spawn_blocking(move || {
                let bytes = store.read_to_vec(&digest, sealpod_store::MAX_MANIFEST_SIZE)?;
                let parsed = ParsedManifest::parse(&bytes, None)?;
                Ok::<_, sealpod_store::StoreError>((bytes, parsed))
            })
            .await;
            let Ok(Ok((bytes, parsed))) = parsed else {
                tracing::warn!(%digest, "fetched content is not a manifest");
                return false;
            };
            for child in parsed.manifests.iter().filter(|d| !d.external) {
                if !this.manifest(repo.clone(), child.digest).await {
                    return false;
                }
            }
            for blob in parsed.blobs.iter().filter(|d| !d.external) {
                if !this.blob(blob.digest).await {
                    return false;
                }
            }
            let store = this.store.clone();
            let media_type = parsed.media_type.clone();
            let recorded =
                tokio::task::spawn_blocking(move || store.put_manifest(&repo, None, Some(&media_type), &bytes)).await;
            matches!(recorded, Ok(Ok(_)))
        })
    }
}

impl ContentSource for Peers {
    fn fetch_blob(&self, digest: Digest) -> BoxedBool {
        let this = self.clone();
        Box::pin(async move { this.blob(digest).await })
    }

    fn fetch_manifest(&self, repository: RepositoryName, digest: Digest) -> BoxedBool {
        self.manifest(repository, digest)
    }
}

/// Digests to announce for manifests recorded since the last call: each new
/// manifest and what it references. `seen` remembers the manifests already
/// handled, so each is read and parsed once.
fn newly_held(store: &Store, seen: &mut HashSet<Digest>) -> Vec<Digest> {
    let mut out = Vec::new();
    for repo in store.repositories().unwrap_or_default() {
        for m in store.manifests(&repo).unwrap_or_default() {
            if !seen.insert(m) {
                continue;
            }
            out.push(m);
            if let Ok(bytes) = store.read_to_vec(&m, sealpod_store::MAX_MANIFEST_SIZE) {
                if let Ok(parsed) = ParsedManifest::parse(&bytes, None) {
                    out.extend(parsed.blobs.iter().chain(&parsed.manifests).filter(|d| !d.external).map(|d| d.digest));
                }
            }
        }
    }
    out
}

/// Runs the node until the process is told to stop.
pub async fn run(config: NodeConfig) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.dir)?;
    let store = Store::open(config.dir.join("store"))?;
    let keypair = sealpod_net::load_or_create_keypair(&config.dir.join("node.key"))?;
    let mut net_config = NetConfig::client(keypair);
    net_config.listen = config.listen.clone();
    net_config.bootstrap = config.bootstrap.clone();
    let (net, _inbound) = Node::start(net_config).await?;
    net.serve_blobs(Arc::new(StoreBlobs(store.clone())));

    // Announce what is held, now and as pushes add to it.
    let (announce_store, announce_net) = (store.clone(), net.clone());
    tokio::spawn(async move {
        let mut seen = HashSet::new();
        let mut announced = HashSet::new();
        loop {
            let s = announce_store.clone();
            let (fresh, back) = tokio::task::spawn_blocking(move || {
                let fresh = newly_held(&s, &mut seen);
                (fresh, seen)
            })
            .await
            .unwrap_or_default();
            seen = back;
            for d in fresh {
                if announced.insert(d) {
                    let _ = announce_net.provide_blob(&d.to_string()).await;
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });

    let listener = tokio::net::TcpListener::bind(config.registry).await?;
    let registry_addr = listener.local_addr()?;
    let ready = Ready {
        peer_id: net.peer_id().to_string(),
        addresses: net.listen_addrs().await.iter().map(|a| format!("{a}/p2p/{}", net.peer_id())).collect(),
        registry: registry_addr,
    };
    tracing::info!(registry = %registry_addr, peer = %ready.peer_id, "artifact node serving");
    if let Some(path) = &config.ready_file {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec(&ready)?)?;
        std::fs::rename(&tmp, path)?;
    }
    let registry = Registry::new(store.clone()).content_source(Peers { store, net });
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = registry.serve(listener) => r?,
        _ = tokio::signal::ctrl_c() => {}
        _ = sigterm.recv() => {}
    }
    Ok(())
}
