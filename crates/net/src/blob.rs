//! `/apocryph/blob/0.0.1`: content-addressed blobs between peers, streamed.
//!
//! A stream carries one [`BlobRequest`] frame, one [`BlobResponse`] frame and
//! then the raw bytes of the range asked for, so a blob never has to fit in
//! memory on either side. Peers find who holds a blob through DHT provider
//! records keyed by the digest's multihash (sha2-256, as in a CIDv1 raw).
//!
//! This module moves bytes and checks framing. It does not verify that the
//! bytes match the digest: the caller writes them into a store that does, so
//! that a range fetched from one peer and the rest from another are checked
//! as one blob.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::{PeerId, StreamProtocol};
use sealpod_proto::{limits, BlobRequest, BlobResponse, Error, ErrorCode};

use crate::codec::{read_frame, write_frame};

/// Size of the pieces a blob is received in.
const CHUNK: usize = 256 * 1024;
/// Size of the reads a blob is sent in: each is one hop to a blocking
/// thread and back.
const SEND_READ: usize = 1024 * 1024;
/// Longest a peer may take to send the request, or to accept a chunk.
const IDLE: Duration = Duration::from_secs(30);
/// Most blob streams served at once.
const MAX_CONCURRENT: usize = 32;

/// Where a node serves blobs from.
pub trait BlobSource: Send + Sync + 'static {
    /// The blob's total size and a reader positioned at `offset`, or `None`
    /// when the blob is not held here. Called from a blocking thread.
    fn open(&self, digest: &str, offset: u64) -> io::Result<Option<(u64, Box<dyn io::Read + Send>)>>;
}

/// Why a fetch failed.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// The stream could not be opened (peer unreachable, protocol unsupported).
    #[error("cannot open a blob stream to {peer}: {reason}")]
    Open {
        /// The peer.
        peer: PeerId,
        /// Why.
        reason: String,
    },
    /// The peer answered with an error.
    #[error("{peer} refused: {error}")]
    Refused {
        /// The peer.
        peer: PeerId,
        /// Its answer.
        error: Error,
    },
    /// The peer broke the protocol or the stream broke.
    #[error("blob transfer from {peer} failed: {reason}")]
    Transfer {
        /// The peer.
        peer: PeerId,
        /// What went wrong.
        reason: String,
    },
    /// Writing the received bytes failed.
    #[error("writing the blob: {0}")]
    Sink(io::Error),
}

/// The DHT key for a blob: the multihash (sha2-256) of its digest.
pub fn dht_key(digest: &str) -> Option<Vec<u8>> {
    let hex = digest.strip_prefix("sha256:")?;
    let bytes = hex::decode(hex).ok().filter(|b| b.len() == 32)?;
    let mut key = vec![0x12, 0x20];
    key.extend(bytes);
    Some(key)
}

fn valid_digest(digest: &str) -> bool {
    dht_key(digest).is_some()
        && digest.len() == 71
        && digest[7..].bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

/// Serves blobs from `source` on every incoming blob stream until the node
/// stops.
pub async fn serve(mut control: libp2p_stream::Control, source: Arc<dyn BlobSource>) -> io::Result<()> {
    let mut incoming = control
        .accept(StreamProtocol::new(sealpod_proto::protocol::BLOB))
        .map_err(|e| io::Error::other(e.to_string()))?;
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT));
    while let Some((peer, stream)) = incoming.next().await {
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "too many blob streams; dropping one");
            continue;
        };
        let source = source.clone();
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(e) = serve_one(stream, source).await {
                tracing::debug!(%peer, error = %e, "blob stream ended");
            }
        });
    }
    Ok(())
}

async fn serve_one(mut stream: libp2p::Stream, source: Arc<dyn BlobSource>) -> io::Result<()> {
    let request: BlobRequest = tokio::time::timeout(IDLE, read_frame(&mut stream, limits::BLOB_FRAME))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "request timed out"))??;
    let refuse = |code, message: String| BlobResponse { error: Some(Error::new(code, message)), ..Default::default() };
    if !valid_digest(&request.digest) {
        let r = refuse(ErrorCode::InvalidRequest, format!("{:?} is not a sha256 digest", request.digest));
        return write_frame(&mut stream, &r, limits::BLOB_FRAME).await;
    }
    let digest = request.digest.clone();
    let offset = request.offset;
    let opened = tokio::task::spawn_blocking({
        let source = source.clone();
        move || source.open(&digest, offset)
    })
    .await
    .map_err(io::Error::other)?;
    let (size, mut reader) = match opened {
        Ok(Some(found)) => found,
        Ok(None) => {
            let r = refuse(ErrorCode::NotFound, format!("{} is not held here", request.digest));
            return write_frame(&mut stream, &r, limits::BLOB_FRAME).await;
        }
        Err(e) => {
            return write_frame(&mut stream, &refuse(ErrorCode::Internal, e.to_string()), limits::BLOB_FRAME).await
        }
    };
    if offset > size {
        let r = refuse(ErrorCode::InvalidRequest, format!("offset {offset} is past the end ({size} bytes)"));
        return write_frame(&mut stream, &r, limits::BLOB_FRAME).await;
    }
    let available = size - offset;
    let length = if request.length == 0 { available } else { request.length.min(available) };
    write_frame(&mut stream, &BlobResponse { error: None, size, offset, length }, limits::BLOB_FRAME).await?;
    let mut left = length;
    // One buffer for the whole stream, handed to the blocking thread and
    // back: a fresh allocation per chunk costs page faults and zeroing.
    let mut buf = vec![0u8; SEND_READ];
    while left > 0 {
        let want = (left as usize).min(SEND_READ);
        let (r, b, read) = tokio::task::spawn_blocking(move || {
            let result = reader.read_exact(&mut buf[..want]);
            (reader, buf, result)
        })
        .await
        .map_err(io::Error::other)?;
        (reader, buf) = (r, b);
        read?;
        tokio::time::timeout(IDLE, stream.write_all(&buf[..want]))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "peer stopped reading"))??;
        left -= want as u64;
    }
    stream.close().await
}

/// A blob range a peer has agreed to send: its answer is in, the bytes
/// follow on the stream.
pub struct IncomingBlob {
    peer: PeerId,
    stream: libp2p::Stream,
    /// The blob's total size, as the peer announced it.
    pub size: u64,
    /// Where the range starts.
    pub offset: u64,
    /// How many bytes the range holds.
    pub length: u64,
}

/// Asks `peer` for `length` bytes (0: to the end) of blob `digest`,
/// starting at `offset`, and checks its answer.
pub async fn open(
    control: &mut libp2p_stream::Control,
    peer: PeerId,
    digest: &str,
    offset: u64,
    length: u64,
) -> Result<IncomingBlob, BlobError> {
    let transfer = |reason: String| BlobError::Transfer { peer, reason };
    let mut stream = control
        .open_stream(peer, StreamProtocol::new(sealpod_proto::protocol::BLOB))
        .await
        .map_err(|e| BlobError::Open { peer, reason: e.to_string() })?;
    let request = BlobRequest { digest: digest.to_owned(), offset, length };
    write_frame(&mut stream, &request, limits::BLOB_FRAME).await.map_err(|e| transfer(e.to_string()))?;
    let response: BlobResponse = tokio::time::timeout(IDLE, read_frame(&mut stream, limits::BLOB_FRAME))
        .await
        .map_err(|_| transfer("no response".into()))?
        .map_err(|e| transfer(e.to_string()))?;
    if let Some(error) = response.error {
        return Err(BlobError::Refused { peer, error });
    }
    if response.offset != offset
        || (length != 0 && response.length > length)
        || offset.checked_add(response.length).is_none_or(|end| end > response.size)
    {
        return Err(transfer(format!(
            "answered range {}+{} of {} for {offset}+{length}",
            response.offset, response.length, response.size
        )));
    }
    Ok(IncomingBlob { peer, stream, size: response.size, offset, length: response.length })
}

impl IncomingBlob {
    /// Copies the range into `sink`, chunk by chunk; returns the bytes
    /// written (the range's length).
    pub async fn copy_to<W>(mut self, sink: &mut W) -> Result<u64, BlobError>
    where
        W: tokio::io::AsyncWrite + Unpin,
    {
        use tokio::io::AsyncWriteExt as _;
        let peer = self.peer;
        let transfer = |reason: String| BlobError::Transfer { peer, reason };
        let mut left = self.length;
        let mut buf = vec![0u8; CHUNK];
        while left > 0 {
            let want = (left as usize).min(CHUNK);
            let n = tokio::time::timeout(IDLE, self.stream.read(&mut buf[..want]))
                .await
                .map_err(|_| transfer("stalled".into()))?
                .map_err(|e| transfer(e.to_string()))?;
            if n == 0 {
                return Err(transfer(format!("stream ended with {left} bytes missing")));
            }
            sink.write_all(&buf[..n]).await.map_err(BlobError::Sink)?;
            left -= n as u64;
        }
        sink.flush().await.map_err(BlobError::Sink)?;
        Ok(self.length)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dht_key_is_the_sha256_multihash() {
        let d = format!("sha256:{}", "ab".repeat(32));
        let k = dht_key(&d).unwrap();
        assert_eq!(&k[..2], &[0x12, 0x20]);
        assert_eq!(k.len(), 34);
        assert!(dht_key("sha256:abc").is_none());
        assert!(dht_key("md5:00").is_none());
        assert!(!valid_digest(&format!("sha256:{}", "AB".repeat(32))));
    }
}
