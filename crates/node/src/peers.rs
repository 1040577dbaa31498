//! Content from peers: blobs and manifests the store lacks are found on the
//! DHT and fetched over `/apocryph/blob/0.0.1`, then written through the
//! store, which verifies them.
//!
//! A blob is fetched once however many clients ask for it: each fetch is a
//! [`Transfer`] that registry responses can follow while it runs, reading
//! the store's temporary file up to the verified-so-far front and getting
//! the end only once the whole blob matched its digest. A large blob held
//! by several peers comes in pieces from up to [`MAX_PEERS`] of them at
//! once; a single holder streams it in order, resuming where a broken
//! stream stopped.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::os::unix::fs::FileExt;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use sealpod_net::{BlobSource, Node, PeerId};
use sealpod_registry::ArrivingBlob;
use sealpod_store::{Digest, ParsedManifest, RepositoryName, Store};
use tokio::sync::{mpsc, watch};

/// Most peers one blob is fetched from at once.
pub(crate) const MAX_PEERS: usize = 4;
/// Blobs smaller than this come from one peer: below it, the extra streams
/// cost more than they save.
const PIECE: u64 = 16 << 20;
/// How much of the contiguous front is hashed in one go when pieces
/// arrive out of order.
const ABSORB_AT_ONCE: u64 = 1 << 20;
/// Blobs of one manifest fetched at once ahead of the client's requests.
const PREFETCH: usize = 4;
/// Longest a response waits for a fetch to make progress.
const FOLLOW_IDLE: Duration = Duration::from_secs(120);
/// A follower waits for this much new data (or the end) before it hands
/// bytes on, so responses go out in chunks, not in network-sized crumbs.
const FOLLOW_CHUNK: u64 = 256 * 1024;

/// Serves blobs to peers straight from the store.
pub(crate) struct StoreBlobs(pub(crate) Store);

impl BlobSource for StoreBlobs {
    fn open(&self, digest: &str, offset: u64) -> std::io::Result<Option<(u64, Box<dyn std::io::Read + Send>)>> {
        let Ok(digest) = digest.parse::<Digest>() else { return Ok(None) };
        if !self.0.contains(&digest).map_err(std::io::Error::other)? {
            return Ok(None);
        }
        if offset == 0 {
            // The whole blob (or its first piece): checked as it leaves, so
            // a blob corrupted on this disk is cut off here too.
            let reader = self.0.reader(&digest).map_err(std::io::Error::other)?;
            return Ok(Some((reader.len(), Box::new(reader))));
        }
        // A later piece: hashing all that precedes it to check it would
        // cost as much as sending it; the receiver checks the whole.
        let (size, file) = self.0.unverified_range(&digest, offset).map_err(std::io::Error::other)?;
        Ok(Some((size, Box::new(file))))
    }
}

/// How far one fetch has got.
#[derive(Debug, Clone, Default)]
struct Progress {
    /// The blob's size, once a peer (or the manifest) has told it.
    size: Option<u64>,
    /// Bytes from the start that are in the store's temporary file and
    /// hashed: what a follower may read.
    front: u64,
    /// `None` while running; then whether the blob is in the store.
    outcome: Option<Result<(), String>>,
    /// The bytes in the followed file did not match: followers fail, and
    /// new requests wait for the outcome and read the store.
    abandoned: bool,
}

/// One blob being fetched, shared by everyone waiting for it.
struct Transfer {
    progress: watch::Sender<Progress>,
    /// The temporary file the bytes go to, once it exists.
    file: OnceLock<std::fs::File>,
}

impl Transfer {
    fn update(&self, f: impl FnOnce(&mut Progress)) {
        self.progress.send_modify(f);
    }

    async fn finished(&self) -> bool {
        let mut rx = self.progress.subscribe();
        let done = rx.wait_for(|p| p.outcome.is_some()).await;
        done.is_ok_and(|p| matches!(p.outcome, Some(Ok(()))))
    }
}

/// Fetches what the store lacks from the peers that hold it.
#[derive(Clone)]
pub(crate) struct Peers {
    store: Store,
    net: Node,
    transfers: Arc<Mutex<HashMap<Digest, Arc<Transfer>>>>,
}

pub(crate) type BoxedBool = Pin<Box<dyn Future<Output = bool> + Send>>;

impl Peers {
    pub(crate) fn new(store: Store, net: Node) -> Peers {
        Peers { store, net, transfers: Arc::default() }
    }

    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    /// Holders of `digest` on the DHT, asking up to `tries` times (records
    /// of something published a moment ago may still be travelling).
    async fn holders(&self, digest: &Digest, tries: usize) -> Vec<PeerId> {
        for _ in 0..tries {
            match self.net.find_blob_providers(&digest.to_string()).await {
                // A holder reached directly goes first: a relay would carry
                // the blob slowly, if its limits let it through at all.
                Ok(peers) if !peers.is_empty() => return self.net.rank_by_path(peers).await,
                _ => tokio::time::sleep(Duration::from_millis(300)).await,
            }
        }
        Vec::new()
    }

    /// The running fetch of `digest`, started if there is none. `size` is
    /// what a manifest says the blob holds, if known.
    fn transfer(&self, digest: Digest, size: Option<u64>) -> Arc<Transfer> {
        let mut transfers = self.transfers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = transfers.get(&digest) {
            return t.clone();
        }
        let transfer = Arc::new(Transfer {
            progress: watch::channel(Progress { size, ..Progress::default() }).0,
            file: OnceLock::new(),
        });
        transfers.insert(digest, transfer.clone());
        let (this, t) = (self.clone(), transfer.clone());
        tokio::spawn(async move {
            let outcome = this.fetch(digest, &t).await;
            match &outcome {
                Ok(()) => {}
                Err(e) => tracing::warn!(%digest, error = %e, "fetching a blob from peers failed; nothing stored"),
            }
            t.update(|p| p.outcome = Some(outcome));
            this.transfers.lock().unwrap_or_else(|e| e.into_inner()).remove(&digest);
        });
        transfer
    }

    /// Fetches one blob into the store; true if it is there afterwards.
    pub(crate) async fn blob(&self, digest: Digest) -> bool {
        self.transfer(digest, None).finished().await
    }

    /// Like [`Peers::blob`], but only if one DHT lookup finds a holder or a
    /// fetch is already running: for a `HEAD`, which clients also send
    /// before pushing a blob the network does not have, and should not
    /// wait seconds for that answer.
    pub(crate) async fn blob_if_announced(&self, digest: Digest) -> bool {
        let running = self.transfers.lock().unwrap_or_else(|e| e.into_inner()).get(&digest).cloned();
        if let Some(t) = running {
            return t.finished().await;
        }
        if self.holders(&digest, 1).await.is_empty() {
            return false;
        }
        self.blob(digest).await
    }

    /// Starts fetching `digest` (or joins the running fetch) and returns
    /// its bytes as they arrive; `None` if it turned out to be stored
    /// already, or the fetch failed before any byte came.
    pub(crate) async fn stream(&self, digest: Digest) -> Option<ArrivingBlob> {
        let transfer = self.transfer(digest, None);
        let mut rx = transfer.progress.subscribe();
        let size = {
            let p = rx
                .wait_for(|p| {
                    p.outcome.is_some() || (!p.abandoned && p.size.is_some() && transfer.file.get().is_some())
                })
                .await;
            let p = p.ok()?;
            if p.outcome.is_some() {
                // Stored already (the store serves it) or failed.
                return None;
            }
            p.size?
        };
        let file = transfer.file.get()?.try_clone().ok()?;
        tracing::info!(%digest, size, "serving a blob to a client while it arrives from peers");
        let reader = Follower { rx, file, position: 0, runtime: tokio::runtime::Handle::current() };
        Some(ArrivingBlob { size, reader: Box::new(reader) })
    }

    /// Fetches `digest` into the store, from as many holders as help.
    async fn fetch(&self, digest: Digest, transfer: &Transfer) -> Result<(), String> {
        let store = self.store.clone();
        if tokio::task::spawn_blocking(move || store.contains(&digest)).await.ok().and_then(Result::ok) == Some(true) {
            return Ok(());
        }
        let holders = self.holders(&digest, 10).await;
        if holders.is_empty() {
            return Err("no peer announces holding it".into());
        }
        let writer = self.writer(digest, transfer).await?;
        let _ = transfer.file.set(writer.follower().map_err(|e| e.to_string())?);
        transfer.update(|_| {});
        let writer = if holders.len() > 1 {
            self.in_pieces(digest, &holders, writer, transfer).await?
        } else {
            self.in_order(digest, &holders, writer, transfer).await?
        };
        let size = writer.written();
        match commit(writer).await? {
            Ok(_) => tracing::info!(%digest, size, peers = holders.len().min(MAX_PEERS), "fetched blob from peers"),
            Err(e) if holders.len() > 1 => {
                // Some holder sent wrong bytes, and pieces do not say which.
                // Clients following this attempt are cut off; the blob is
                // fetched again from one holder at a time, so one bad peer
                // cannot keep it from everyone.
                tracing::warn!(%digest, error = %e, "what the peers sent is not the blob; asking each holder alone");
                transfer.update(|p| p.abandoned = true);
                self.one_by_one(digest, &holders, transfer).await?;
            }
            Err(e) => return Err(format!("what {} sent is not {digest}: {e}", holders[0])),
        }
        let _ = self.net.provide_blob(&digest.to_string()).await;
        Ok(())
    }

    /// A fresh store writer for `digest`, expecting the size the transfer
    /// knows, if any.
    async fn writer(&self, digest: Digest, transfer: &Transfer) -> Result<sealpod_store::Writer, String> {
        let (store, size_hint) = (self.store.clone(), transfer.progress.borrow().size);
        tokio::task::spawn_blocking(move || store.writer_expecting(digest, size_hint))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())
    }

    /// The whole blob from each holder in turn, each into a fresh writer,
    /// until one matches; names the holders whose content did not.
    async fn one_by_one(&self, digest: Digest, holders: &[PeerId], transfer: &Transfer) -> Result<(), String> {
        for &peer in holders {
            let writer = self.writer(digest, transfer).await?;
            let writer = match self.in_order(digest, &[peer], writer, transfer).await {
                Ok(w) => w,
                Err(e) => {
                    tracing::info!(%digest, %peer, error = %e, "holder could not send the blob");
                    continue;
                }
            };
            match commit(writer).await? {
                Ok(_) => {
                    tracing::info!(%digest, %peer, "fetched blob from one holder after a mismatch");
                    return Ok(());
                }
                Err(e) => tracing::warn!(%digest, %peer, error = %e, "holder sent content that is not the blob"),
            }
        }
        Err(format!("no holder of {digest} sent content that matches it"))
    }

    /// One stream after another into the writer, each resuming where the
    /// last broke off; every holder gets two tries, so one dropped
    /// connection to the only holder is survived.
    async fn in_order(
        &self,
        digest: Digest,
        holders: &[PeerId],
        writer: sealpod_store::Writer,
        transfer: &Transfer,
    ) -> Result<sealpod_store::Writer, String> {
        let mut sink = FollowedSink { writer, transfer };
        let mut last_error = String::new();
        for peer in holders.iter().chain(holders).copied() {
            let offset = sink.writer.written();
            let incoming = match self.net.open_blob(peer, &digest.to_string(), offset, 0).await {
                Ok(incoming) => incoming,
                Err(e) => {
                    last_error = e.to_string();
                    continue;
                }
            };
            let size = incoming.size;
            if transfer.progress.borrow().size.is_some_and(|s| s != size) {
                last_error =
                    format!("{peer} announced {size} bytes, not the {:?} expected", transfer.progress.borrow().size);
                continue;
            }
            transfer.update(|p| p.size = Some(size));
            match incoming.copy_to(&mut sink).await {
                Ok(_) if sink.writer.written() == size => return Ok(sink.writer),
                Ok(_) => last_error = format!("{peer} sent {} of {size} bytes", sink.writer.written()),
                Err(e) => {
                    tracing::info!(%digest, %peer, offset, error = %e, "fetch broke off; resuming from the next holder");
                    last_error = e.to_string();
                }
            }
        }
        Err(last_error)
    }

    /// Pieces of [`PIECE`] bytes fetched from several holders at once and
    /// written at their offsets; the writer hashes them in order as the
    /// front fills up, and a follower sees that front move.
    async fn in_pieces(
        &self,
        digest: Digest,
        holders: &[PeerId],
        mut writer: sealpod_store::Writer,
        transfer: &Transfer,
    ) -> Result<sealpod_store::Writer, String> {
        // The size, from the first holder that answers a request for the
        // first piece; that stream then carries the first piece. Each holder
        // gets two tries: a connection being replaced fails one stream.
        let mut first = None;
        let mut silent = Vec::new();
        for &peer in holders.iter().chain(holders) {
            match self.net.open_blob(peer, &digest.to_string(), 0, PIECE).await {
                Ok(incoming) => {
                    first = Some((peer, incoming));
                    break;
                }
                Err(e) => {
                    tracing::info!(%digest, %peer, error = %e, "holder did not answer");
                    silent.push(peer);
                }
            }
        }
        let Some((first_peer, first)) = first else { return Err("no holder answered".into()) };
        let size = first.size;
        let mut first = Some(first);
        if transfer.progress.borrow().size.is_some_and(|s| s != size) {
            return Err(format!("{first_peer} announced {size} bytes, not the size the manifest gives"));
        }
        transfer.update(|p| p.size = Some(size));
        if size <= PIECE {
            // Small: the first stream is the whole blob; if it breaks, the
            // rest comes in order from whoever has it.
            let mut sink = FollowedSink { writer, transfer };
            match first.take().expect("just set").copy_to(&mut sink).await {
                Ok(_) if sink.writer.written() == size => return Ok(sink.writer),
                Ok(_) => {}
                Err(e) => tracing::info!(%digest, peer = %first_peer, error = %e, "fetch broke off; resuming"),
            }
            return self.in_order(digest, holders, sink.writer, transfer).await;
        }
        let pieces_writer = Arc::new(writer.pieces(size).map_err(|e| e.to_string())?);
        let count = size.div_ceil(PIECE);
        // Each piece: how much of it is in (at its start, contiguously).
        let mut received = vec![0u64; count as usize];
        let queue: Arc<Mutex<VecDeque<(u64, u64)>>> =
            Arc::new(Mutex::new((1..count).map(|i| (i * PIECE, ((i + 1) * PIECE).min(size))).collect()));
        let (events, mut arrived) = mpsc::unbounded_channel::<Arrived>();
        let mut workers = tokio::task::JoinSet::new();
        // The holder that answered first, then the others; those that did
        // not answer last, in case they come back. A worker whose holder
        // fails moves on to the next unused one.
        let mut order: VecDeque<PeerId> = holders.iter().copied().filter(|p| !silent.contains(p)).collect();
        order.extend(holders.iter().copied().filter(|p| silent.contains(p) && *p != first_peer));
        order.retain(|p| *p != first_peer);
        order.push_front(first_peer);
        let spare = Arc::new(Mutex::new(order));
        for _ in 0..MAX_PEERS {
            let Some(peer) = spare.lock().unwrap_or_else(|e| e.into_inner()).pop_front() else { break };
            let worker = Worker {
                net: self.net.clone(),
                digest,
                peer,
                spare: spare.clone(),
                queue: queue.clone(),
                pieces: pieces_writer.clone(),
                events: events.clone(),
            };
            // The holder that answered starts on the stream it has open.
            let opened = if peer == first_peer { first.take().map(|f| (0, PIECE, f)) } else { None };
            workers.spawn(worker.run(opened));
        }
        drop(events);
        let mut from: HashMap<PeerId, u64> = HashMap::new();
        while writer.written() < size {
            match arrived.recv().await {
                Some(Arrived::Bytes { offset, len, peer }) => {
                    *from.entry(peer).or_insert(0u64) += len;
                    let piece = (offset / PIECE) as usize;
                    let start = piece as u64 * PIECE;
                    received[piece] = received[piece].max(offset + len - start);
                }
                Some(Arrived::Failed { start, end, peer, error }) => {
                    // Another worker picks the rest of that piece up.
                    let piece = (start / PIECE) as usize;
                    let resume = piece as u64 * PIECE + received[piece];
                    tracing::info!(%digest, %peer, resume, error = %error, "piece broke off; another holder takes it");
                    if resume < end {
                        queue.lock().unwrap_or_else(|e| e.into_inner()).push_front((resume, end));
                    }
                }
                None => return Err(format!("every holder failed with {} of {size} bytes verified", writer.written())),
            }
            // Take in whatever is now contiguous with the front.
            let mut front = writer.written();
            while front < size {
                let piece = (front / PIECE) as usize;
                let available = piece as u64 * PIECE + received[piece];
                if available <= front {
                    break;
                }
                front = available;
            }
            // Hashed a megabyte or so at a time: the bytes are read back
            // from the page cache, in place on this worker thread.
            let more = front - writer.written();
            if more >= ABSORB_AT_ONCE || (more > 0 && front == size) {
                tokio::task::block_in_place(|| writer.absorb(more)).map_err(|e| e.to_string())?;
                transfer.update(|p| p.front = front);
            }
        }
        workers.abort_all();
        let sources: Vec<String> = from.iter().map(|(peer, n)| format!("{peer}={n}")).collect();
        tracing::info!(%digest, size, sources = %sources.join(","), "blob came in pieces from several peers");
        Ok(writer)
    }

    /// Fetches a manifest, records it in `repo` and starts fetching what it
    /// references, without waiting for that: a client pulling the image
    /// asks for the blobs next and follows their transfers. Child manifests
    /// of an index are fetched when asked for, so a pull of one platform
    /// does not bring all of them. `prefetch` false records the manifest
    /// but leaves its blobs until they are asked for.
    pub(crate) fn manifest(&self, repo: RepositoryName, digest: Digest, prefetch: bool) -> BoxedBool {
        let this = self.clone();
        Box::pin(async move {
            if !this.blob(digest).await {
                return false;
            }
            let store = this.store.clone();
            let parsed = tokio::task::spawn_blocking(move || {
                let bytes = store.read_to_vec(&digest, sealpod_store::MAX_MANIFEST_SIZE)?;
                let parsed = ParsedManifest::parse(&bytes, None)?;
                let recorded = store.put_manifest_ahead_of_content(&repo, None, Some(&parsed.media_type), &bytes)?;
                Ok::<_, sealpod_store::StoreError>((parsed, recorded))
            })
            .await;
            let parsed = match parsed {
                Ok(Ok((parsed, _))) => parsed,
                Ok(Err(e)) => {
                    tracing::warn!(%digest, error = %e, "fetched content is not a manifest that can be recorded");
                    return false;
                }
                Err(_) => return false,
            };
            if !prefetch {
                return true;
            }
            let wanted: Vec<(Digest, u64)> =
                parsed.blobs.iter().filter(|d| !d.external).map(|d| (d.digest, d.size)).collect();
            let prefetch = this.clone();
            tokio::spawn(async move {
                let slots = Arc::new(tokio::sync::Semaphore::new(PREFETCH));
                let mut all = tokio::task::JoinSet::new();
                for (d, size) in wanted {
                    let (p, slots) = (prefetch.clone(), slots.clone());
                    all.spawn(async move {
                        let _slot = slots.acquire_owned().await;
                        p.transfer(d, Some(size)).finished().await
                    });
                }
                while all.join_next().await.is_some() {}
            });
            true
        })
    }
}

/// Verifies and stores what `writer` holds, on a blocking thread. The outer
/// error is the thread's; the inner one is the store's verdict.
async fn commit(writer: sealpod_store::Writer) -> Result<Result<Digest, sealpod_store::StoreError>, String> {
    tokio::task::spawn_blocking(move || writer.commit()).await.map_err(|e| e.to_string())
}

/// What a piece worker reports.
enum Arrived {
    /// `len` bytes from `peer` were written at `offset`.
    Bytes { offset: u64, len: u64, peer: PeerId },
    /// The piece `start..end` broke off.
    Failed { start: u64, end: u64, peer: PeerId, error: String },
}

/// Fetches pieces from one holder until none are left; after two failures
/// it moves on to a holder no worker has tried yet.
struct Worker {
    net: Node,
    digest: Digest,
    peer: PeerId,
    spare: Arc<Mutex<VecDeque<PeerId>>>,
    queue: Arc<Mutex<VecDeque<(u64, u64)>>>,
    pieces: Arc<sealpod_store::PieceWriter>,
    events: mpsc::UnboundedSender<Arrived>,
}

impl Worker {
    async fn run(mut self, mut opened: Option<(u64, u64, sealpod_net::IncomingBlob)>) {
        let mut failures = 0;
        loop {
            let (start, end, incoming) = match opened.take() {
                Some(o) => o,
                None => {
                    let next = self.queue.lock().unwrap_or_else(|e| e.into_inner()).pop_front();
                    let Some((start, end)) = next else {
                        // Nothing left to start, but a piece another holder
                        // is on may break off and come back: wait until the
                        // blob is done (the receiver goes away).
                        if self.events.is_closed() {
                            return;
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    };
                    match self.net.open_blob(self.peer, &self.digest.to_string(), start, end - start).await {
                        Ok(incoming) => (start, end, incoming),
                        Err(e) => {
                            let _ =
                                self.events.send(Arrived::Failed { start, end, peer: self.peer, error: e.to_string() });
                            failures += 1;
                            if failures >= 2 {
                                if !self.next_holder() {
                                    return;
                                }
                                failures = 0;
                            }
                            continue;
                        }
                    }
                }
            };
            if incoming.length != end - start {
                let error = format!("answered {} bytes for a piece of {}", incoming.length, end - start);
                let _ = self.events.send(Arrived::Failed { start, end, peer: self.peer, error });
                if !self.next_holder() {
                    return;
                }
                continue;
            }
            let mut sink = PieceSink { peer: self.peer, pieces: &self.pieces, offset: start, events: &self.events };
            if let Err(e) = incoming.copy_to(&mut sink).await {
                let _ = self.events.send(Arrived::Failed { start, end, peer: self.peer, error: e.to_string() });
                failures += 1;
                if failures >= 2 {
                    if !self.next_holder() {
                        return;
                    }
                    failures = 0;
                }
            }
        }
    }

    /// Switches to a holder no worker has used yet; false if none is left.
    fn next_holder(&mut self) -> bool {
        match self.spare.lock().unwrap_or_else(|e| e.into_inner()).pop_front() {
            Some(peer) => {
                self.peer = peer;
                true
            }
            None => false,
        }
    }
}

/// Writes a piece's bytes at their offsets and reports each write.
struct PieceSink<'a> {
    peer: PeerId,
    pieces: &'a sealpod_store::PieceWriter,
    offset: u64,
    events: &'a mpsc::UnboundedSender<Arrived>,
}

impl tokio::io::AsyncWrite for PieceSink<'_> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        // A page-cache write, done in place on the multi-threaded runtime.
        let written = tokio::task::block_in_place(|| self.pieces.write_at(self.offset, buf));
        if written.is_ok() {
            let _ = self.events.send(Arrived::Bytes { offset: self.offset, len: buf.len() as u64, peer: self.peer });
            self.offset += buf.len() as u64;
        }
        std::task::Poll::Ready(written.map(|()| buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

/// A store writer as an async sink that moves the transfer's front with
/// each write. Each write is a short file write plus hashing, done in place
/// on the runtime's worker (the runtime is multi-threaded), which spares a
/// copy through a channel.
struct FollowedSink<'a> {
    writer: sealpod_store::Writer,
    transfer: &'a Transfer,
}

impl tokio::io::AsyncWrite for FollowedSink<'_> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let this = &mut *self;
        let written = tokio::task::block_in_place(|| std::io::Write::write(&mut this.writer, buf));
        let front = this.writer.written();
        this.transfer.update(|p| p.front = front);
        std::task::Poll::Ready(written)
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

/// Reads a transfer's temporary file up to its verified front, from a
/// blocking thread; reports the end only after the blob was verified and
/// stored, and fails if the fetch did.
struct Follower {
    rx: watch::Receiver<Progress>,
    file: std::fs::File,
    position: u64,
    runtime: tokio::runtime::Handle,
}

impl std::io::Read for Follower {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let (front, outcome) = {
                let p = self.rx.borrow_and_update();
                if p.abandoned {
                    return Err(std::io::Error::other("what the peers sent did not match the digest"));
                }
                (p.front, p.outcome.clone())
            };
            let ready = front.saturating_sub(self.position);
            if ready >= FOLLOW_CHUNK.min(buf.len() as u64) || (ready > 0 && outcome.is_some()) {
                let want = (ready as usize).min(buf.len());
                let n = self.file.read_at(&mut buf[..want], self.position)?;
                self.position += n as u64;
                return Ok(n);
            }
            match outcome {
                Some(Ok(())) if ready == 0 => return Ok(0),
                Some(Err(e)) => return Err(std::io::Error::other(e)),
                _ => {}
            }
            let changed = self.runtime.block_on(tokio::time::timeout(FOLLOW_IDLE, self.rx.changed()));
            match changed {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(std::io::Error::other("the fetch went away")),
                Err(_) => return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "the fetch stalled")),
            }
        }
    }
}
