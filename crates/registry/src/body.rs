//! Moving bytes between async HTTP bodies and the store's blocking files,
//! a bounded chunk at a time.

use std::io::{self, Read, Write};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::mpsc;

/// Size of the chunks a blob is sent in.
const SEND_CHUNK: usize = 256 * 1024;

/// Why a request body could not be stored.
#[derive(Debug)]
pub(crate) enum BodyError {
    /// More than the limit arrived.
    TooLarge,
    /// The client sent nothing for the idle timeout.
    Timeout,
    /// The connection failed or the client aborted.
    Client(String),
    /// Writing to the store failed.
    Write(io::Error),
}

/// Streams `body` into `sink` on a blocking thread, refusing more than
/// `limit` bytes and waiting at most `idle` for each chunk. Gives the sink
/// back, so an upload can be rolled back or kept.
pub(crate) async fn body_into<W: Write + Send + 'static>(
    sink: W,
    body: Body,
    limit: u64,
    idle: Duration,
) -> Result<(W, Result<u64, BodyError>), tokio::task::JoinError> {
    let (tx, mut rx) = mpsc::channel::<Bytes>(8);
    let writer = tokio::task::spawn_blocking(move || {
        let mut sink = sink;
        let mut result = Ok(());
        while let Some(chunk) = rx.blocking_recv() {
            if let Err(e) = sink.write_all(&chunk) {
                result = Err(e);
                break;
            }
        }
        if result.is_ok() {
            result = sink.flush();
        }
        (sink, result)
    });
    let mut stream = body.into_data_stream();
    let mut total = 0u64;
    let mut failure = None;
    loop {
        match tokio::time::timeout(idle, stream.next()).await {
            Err(_) => failure = Some(BodyError::Timeout),
            Ok(None) => {}
            Ok(Some(Err(e))) => failure = Some(BodyError::Client(e.to_string())),
            Ok(Some(Ok(bytes))) => {
                total += bytes.len() as u64;
                if total > limit {
                    failure = Some(BodyError::TooLarge);
                } else if tx.send(bytes).await.is_ok() {
                    continue;
                }
            }
        }
        break;
    }
    drop(tx);
    let (sink, written) = writer.await?;
    let result = match (failure, written) {
        (Some(f), _) => Err(f),
        (None, Err(e)) => Err(BodyError::Write(e)),
        (None, Ok(())) => Ok(total),
    };
    Ok((sink, result))
}

/// A response body that streams `reader` from a blocking thread.
///
/// One chunk is held back until the next read succeeds, and the last one
/// until the reader reports the end. A store [`sealpod_store::Reader`]
/// reports a digest mismatch instead of the end, so for a corrupt blob the
/// client never receives the last bytes: the response is cut short and the
/// client sees a broken transfer, never complete-looking wrong content. A
/// client that stops reading for `idle` is dropped.
pub(crate) fn stream_reader<R: Read + Send + 'static>(reader: R, idle: Duration) -> Body {
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(4);
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let mut reader = reader;
        let mut held: Option<Bytes> = None;
        let send = |item: io::Result<Bytes>| -> bool {
            matches!(handle.block_on(tokio::time::timeout(idle, tx.send(item))), Ok(Ok(())))
        };
        loop {
            let mut buf = vec![0u8; SEND_CHUNK];
            match reader.read(&mut buf) {
                Ok(0) => {
                    if let Some(last) = held.take() {
                        send(Ok(last));
                    }
                    return;
                }
                Ok(n) => {
                    buf.truncate(n);
                    if let Some(previous) = held.replace(Bytes::from(buf)) {
                        if !send(Ok(previous)) {
                            return;
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::error!(error = %e, "aborting a blob response");
                    send(Err(e));
                    return;
                }
            }
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });
    Body::from_stream(stream)
}

/// Reads a small body (a manifest) into memory, refusing more than `limit`
/// bytes and waiting at most `idle` for each chunk.
pub(crate) async fn read_limited(body: Body, limit: u64, idle: Duration) -> Result<Vec<u8>, BodyError> {
    let mut stream = body.into_data_stream();
    let mut bytes = Vec::new();
    loop {
        match tokio::time::timeout(idle, stream.next()).await {
            Err(_) => return Err(BodyError::Timeout),
            Ok(None) => return Ok(bytes),
            Ok(Some(Err(e))) => return Err(BodyError::Client(e.to_string())),
            Ok(Some(Ok(chunk))) => {
                if (bytes.len() + chunk.len()) as u64 > limit {
                    return Err(BodyError::TooLarge);
                }
                bytes.extend_from_slice(&chunk);
            }
        }
    }
}
