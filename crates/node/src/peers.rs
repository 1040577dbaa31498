//! Content from peers: blobs and manifests the store lacks are found on the
//! DHT and fetched over `/apocryph/blob/0.0.1`, then written through the
//! store, which verifies them.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use sealpod_net::{BlobSource, Node, PeerId};
use sealpod_store::{Digest, ParsedManifest, RepositoryName, Store};

/// Serves blobs to peers straight from the store.
pub(crate) struct StoreBlobs(pub(crate) Store);

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
pub(crate) struct Peers {
    pub(crate) store: Store,
    pub(crate) net: Node,
}

pub(crate) type BoxedBool = Pin<Box<dyn Future<Output = bool> + Send>>;

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
    pub(crate) async fn blob(&self, digest: Digest) -> bool {
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
    pub(crate) fn manifest(&self, repo: RepositoryName, digest: Digest) -> BoxedBool {
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
