//! The log between nodes: answering `/apocryph/log/0.0.1` from the local
//! copy, and pulling what is new from peers that hold the same log.
//!
//! Every node that keeps a log announces the DHT key derived from its
//! origin, and every few seconds asks the holders it finds (and its
//! bootstrap peers) for their checkpoint. A larger one is fetched with the
//! entries in between and handed to [`ImageLog::extend`], which accepts it
//! only if the entries hash to the signed root; forks are refused and
//! recorded there. A witness sends its cosignature back to the peer it
//! synced from.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use sealpod_imagelog::{Examined, ImageLog, LogError};
use sealpod_net::{Node, PeerId, Responder};
use sealpod_proto::{
    limits, log_request, Error, ErrorCode, LogCheckpointRequest, LogConsistencyRequest, LogCosignRequest,
    LogEntriesRequest, LogRequest, LogResponse,
};
use sealpod_tlog::{Hash, Note};
use sha2::{Digest as _, Sha256};
use tokio::sync::Mutex;

/// The DHT key holders of log `origin` announce: the sha2-256 multihash of
/// `/sealpod/log/<origin>`.
pub fn dht_key(origin: &str) -> Vec<u8> {
    let mut key = vec![0x12, 0x20];
    key.extend(Sha256::digest(format!("/sealpod/log/{origin}").as_bytes()));
    key
}

fn error(code: ErrorCode, message: impl Into<String>) -> LogResponse {
    LogResponse { error: Some(Error::new(code, message)), ..Default::default() }
}

/// Answers one log request from the local copy.
pub(crate) async fn answer(log: ImageLog, peer: PeerId, request: LogRequest, responder: Responder<LogResponse>) {
    let response = tokio::task::spawn_blocking(move || {
        if request.origin != log.origin() {
            return error(
                ErrorCode::NotFound,
                format!("this node keeps log {:?}, not {:?}", log.origin(), request.origin),
            );
        }
        let refused = |e: LogError| error(ErrorCode::InvalidRequest, e.to_string());
        match request.request {
            Some(log_request::Request::Checkpoint(_)) => match log.signed_checkpoint() {
                Some(note) => LogResponse { checkpoint: note, ..Default::default() },
                None => error(ErrorCode::NotFound, "this node has not synced the log yet"),
            },
            Some(log_request::Request::Entries(r)) => {
                let count = u64::from(r.count.min(limits::TLOG_MAX_ENTRIES));
                match log.entries(r.start, count) {
                    Ok(entries) => LogResponse { entries, ..Default::default() },
                    Err(e) => refused(e),
                }
            }
            Some(log_request::Request::Consistency(r)) => match log.consistency_proof(r.old_size, r.new_size) {
                Ok(proof) => LogResponse { proof: proof.iter().map(|h| h.to_vec()).collect(), ..Default::default() },
                Err(e) => refused(e),
            },
            Some(log_request::Request::Cosign(r)) => match log.add_cosignatures(&r.checkpoint) {
                Ok(added) => {
                    if added > 0 {
                        tracing::info!(%peer, added, "kept cosignatures from a witness");
                    }
                    LogResponse { cosignatures_added: added as u32, ..Default::default() }
                }
                Err(e) => refused(e),
            },
            None => error(ErrorCode::InvalidRequest, "empty log request"),
        }
    })
    .await
    .unwrap_or_else(|e| error(ErrorCode::Internal, format!("log worker failed: {e}")));
    responder.respond(response);
}

/// Pulls the log from peers.
#[derive(Clone)]
pub(crate) struct Syncer {
    pub(crate) log: ImageLog,
    pub(crate) net: Node,
    /// Peers asked besides those found on the DHT (the bootstrap peers).
    pub(crate) known: Vec<PeerId>,
    /// One round at a time: a pull by tag may start one while the timer
    /// does too.
    pub(crate) round: Arc<Mutex<()>>,
}

fn fail(peer: PeerId, what: &str, r: &LogResponse) -> Option<String> {
    r.error.as_ref().map(|e| format!("{peer} refused {what}: {}", e.message))
}

impl Syncer {
    fn request(&self, request: log_request::Request) -> LogRequest {
        LogRequest { origin: self.log.origin().to_owned(), request: Some(request) }
    }

    /// Asks every known holder once; returns whether the trusted log grew.
    pub(crate) async fn round(&self) -> bool {
        let _one = self.round.lock().await;
        let before = self.log.checkpoint().size;
        let mut peers: HashSet<PeerId> = self.known.iter().copied().collect();
        if let Ok(found) = self.net.find_key_providers(dht_key(self.log.origin())).await {
            peers.extend(found);
        }
        peers.remove(&self.net.peer_id());
        for peer in peers {
            if let Err(e) = self.sync_from(peer).await {
                tracing::debug!(%peer, error = %e, "log sync");
            }
        }
        self.log.checkpoint().size > before
    }

    async fn sync_from(&self, peer: PeerId) -> Result<(), String> {
        let ask = |r| self.net.log(peer, self.request(r));
        let r = ask(log_request::Request::Checkpoint(LogCheckpointRequest {})).await.map_err(|e| e.to_string())?;
        if let Some(e) = fail(peer, "the checkpoint", &r) {
            return Err(e);
        }
        let note = r.checkpoint;
        let (log, n, p) = (self.log.clone(), note.clone(), peer.to_string());
        let examined = tokio::task::spawn_blocking(move || log.examine(&n, &p)).await.map_err(|e| e.to_string())?;
        let (from, to) = match examined {
            Ok(Examined::Newer { from, to }) => (from, to),
            Ok(Examined::Same { .. }) => return self.cosign_back(peer, &note).await,
            Ok(Examined::Older) => return Ok(()),
            Err(e @ LogError::Fork(_)) => {
                tracing::error!(%peer, error = %e, "refused a forked checkpoint");
                return Err(e.to_string());
            }
            Err(e) => {
                tracing::warn!(%peer, error = %e, "refused a checkpoint");
                return Err(e.to_string());
            }
        };
        let proof: Vec<Hash> = if from == 0 {
            Vec::new()
        } else {
            let r = ask(log_request::Request::Consistency(LogConsistencyRequest { old_size: from, new_size: to }))
                .await
                .map_err(|e| e.to_string())?;
            if let Some(e) = fail(peer, "a consistency proof", &r) {
                return Err(e);
            }
            r.proof
                .iter()
                .map(|h| <Hash>::try_from(h.as_slice()).map_err(|_| format!("{peer} sent a hash of {} bytes", h.len())))
                .collect::<Result<_, _>>()?
        };
        let mut entries: Vec<Vec<u8>> = Vec::new();
        while (entries.len() as u64) < to - from {
            let start = from + entries.len() as u64;
            let count = (to - start).min(u64::from(limits::TLOG_MAX_ENTRIES)) as u32;
            let r = ask(log_request::Request::Entries(LogEntriesRequest { start, count }))
                .await
                .map_err(|e| e.to_string())?;
            if let Some(e) = fail(peer, "entries", &r) {
                return Err(e);
            }
            if r.entries.is_empty() || r.entries.len() > count as usize {
                return Err(format!("{peer} sent {} entries for {count} asked", r.entries.len()));
            }
            entries.extend(r.entries);
        }
        let (log, n, p) = (self.log.clone(), note.clone(), peer.to_string());
        let stored = tokio::task::spawn_blocking(move || log.extend(&n, &proof, &entries, &p))
            .await
            .map_err(|e| e.to_string())?;
        match stored {
            Ok(_) => {
                tracing::info!(%peer, from, to, "synced the log");
                self.cosign_back(peer, &note).await
            }
            Err(e) => {
                tracing::warn!(%peer, error = %e, "refused a log update");
                Err(e.to_string())
            }
        }
    }

    /// A witness hands its cosignature to a peer whose note lacks it.
    async fn cosign_back(&self, peer: PeerId, peer_note: &[u8]) -> Result<(), String> {
        let Some(ours) = self.log.signed_checkpoint() else { return Ok(()) };
        let (Ok(theirs), Ok(mine)) = (Note::parse(peer_note), Note::parse(&ours)) else { return Ok(()) };
        if theirs.text() != mine.text() {
            return Ok(());
        }
        let missing = mine.signatures().iter().any(|s| !theirs.signatures().contains(s));
        if !missing {
            return Ok(());
        }
        let r = self
            .net
            .log(peer, self.request(log_request::Request::Cosign(LogCosignRequest { checkpoint: ours })))
            .await
            .map_err(|e| e.to_string())?;
        if r.cosignatures_added > 0 {
            tracing::info!(%peer, added = r.cosignatures_added, "peer kept cosignatures");
        }
        Ok(())
    }

    /// Runs rounds forever, every `period`.
    pub(crate) async fn run(self, period: Duration) {
        loop {
            self.round().await;
            tokio::time::sleep(period).await;
        }
    }
}
