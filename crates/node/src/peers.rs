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
    ///
    /// The bytes stream straight into a store writer, which hashes them as
    /// they arrive and commits only if they match the digest. A transfer
    /// that breaks off resumes where it stopped, from the next holder (or
    /// the same one again), so nothing already received is fetched twice.
    pub(crate) async fn blob(&self, digest: Digest) -> bool {
        let store = self.store.clone();
        if tokio::task::spawn_blocking(move || store.contains(&digest)).await.ok().and_then(Result::ok) == Some(true) {
            return true;
        }
        let holders = self.holders(&digest).await;
        if holders.is_empty() {
            return false;
        }
        let store = self.store.clone();
        let Ok(Ok(writer)) = tokio::task::spawn_blocking(move || store.writer_expecting(digest, None)).await else {
            return false;
        };
        let mut sink = BlockingSink(Some(writer));
        let mut size = None;
        // Each holder gets two tries, so one dropped connection to the only
        // holder is survived.
        let attempts = holders.iter().chain(holders.iter()).copied();
        for peer in attempts {
            let offset = sink.written();
            if size.is_some_and(|s| offset >= s) {
                break;
            }
            match self.net.fetch_blob(peer, &digest.to_string(), offset, 0, &mut sink).await {
                Ok((total, _)) => {
                    size = Some(total);
                    if sink.written() >= total {
                        break;
                    }
                }
                Err(e) => {
                    tracing::info!(%digest, %peer, offset, error = %e, "fetch broke off; resuming from the next holder")
                }
            }
        }
        let (Some(size), Some(writer)) = (size, sink.0.take()) else { return false };
        if writer.written() != size {
            return false;
        }
        let committed = tokio::task::spawn_blocking(move || writer.commit()).await;
        match committed {
            Ok(Ok(_)) => {
                tracing::info!(%digest, size, "fetched blob from peer");
                let _ = self.net.provide_blob(&digest.to_string()).await;
                true
            }
            Ok(Err(e)) => {
                // The store verified the bytes: they were something else.
                tracing::warn!(%digest, error = %e, "peer sent the wrong content; nothing stored");
                false
            }
            Err(e) => {
                tracing::warn!(%digest, error = %e, "storing fetched blob failed");
                false
            }
        }
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

/// A store writer as an async sink. Each write is a short buffered file
/// write plus hashing, done in place on the runtime's worker (the runtime is
/// multi-threaded), which spares a copy through a channel.
struct BlockingSink(Option<sealpod_store::Writer>);

impl BlockingSink {
    fn written(&self) -> u64 {
        self.0.as_ref().map_or(0, sealpod_store::Writer::written)
    }
}

impl tokio::io::AsyncWrite for BlockingSink {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let Some(writer) = self.0.as_mut() else {
            return std::task::Poll::Ready(Err(std::io::Error::other("sink closed")));
        };
        std::task::Poll::Ready(tokio::task::block_in_place(|| std::io::Write::write(writer, buf)))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}
