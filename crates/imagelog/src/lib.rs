//! The image transparency log as one node keeps it.
//!
//! Every node holds a full copy of one log: the entries (which manifest
//! digest was published under which `name:tag`, by whom, when), their
//! RFC 6962 tree, and the latest checkpoint it trusts, signed by the log's
//! key and perhaps cosigned by witnesses. The node that holds the log's
//! signing key (the authority) [publishes](ImageLog::publish); every other
//! node moves forward only by [`ImageLog::examine`] and
//! [`ImageLog::extend`], which accept a peer's checkpoint only if the log's
//! key signed it and it extends the trusted tree: the fetched entries must
//! hash to exactly the signed root on top of the entries already held. A
//! checkpoint that contradicts the trusted one is a fork: it is refused,
//! and the evidence (both signed notes) is kept and reported.
//!
//! What it does not do: talk to peers (the node asks them and hands the
//! answers here), decide which log to trust (the caller passes its key),
//! serve HTTP (it produces tiles and proofs; the node serves them), or
//! store images (that is `sealpod-store`).
//!
//! On disk, in the log's directory: `entries` (see `entries.rs`), `tree/`
//! (a [`sealpod_tlog::FileStore`]), `checkpoint` (the signed note) and
//! `forks.json` with `forks/` (evidence). A commit appends entries, then
//! tree hashes, each made durable, then replaces the checkpoint; on open,
//! anything past the checkpoint is dropped, so a crash never leaves
//! entries that no signed checkpoint covers. One process at a time holds
//! a directory (an exclusive `flock`).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod entries;

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use sealpod_tlog::{
    check_consistent_update, encode_entry_bundle, Checkpoint, CosignatureSigner, CosignatureVerifier, Ed25519Signer,
    Ed25519Verifier, FileStore, Hash, HashStore, LogEntry, Note, NoteSignature, NoteVerifier, TileId, TileLevel, Tree,
    VerifierSet, WitnessError,
};
use serde::Serialize;

use entries::EntryFile;

/// Most entries handed over in one [`ImageLog::entries`] call (one C2SP
/// entry bundle).
pub const MAX_ENTRIES_PER_CALL: u64 = 256;

/// What went wrong; each says which log, size or peer it is about.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// A file of the log could not be read or written.
    #[error("log file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The files on disk contradict each other.
    #[error("log storage is damaged: {0}")]
    Corrupt(String),
    /// Another process holds the log directory.
    #[error("log directory {0} is in use by another process")]
    Locked(PathBuf),
    /// A key string does not parse.
    #[error("log key: {0}")]
    Key(String),
    /// This node does not hold the log's signing key.
    #[error("this node cannot publish: it does not hold the signing key of log {0}")]
    NotAuthority(String),
    /// An entry to publish breaks the entry rules.
    #[error("log entry refused: {0}")]
    BadEntry(#[from] sealpod_tlog::EntryError),
    /// A checkpoint from a peer is not signed by the log's key, is for
    /// another log, or does not parse.
    #[error("checkpoint from {peer} refused: {reason}")]
    BadCheckpoint {
        /// Who sent it.
        peer: String,
        /// What is wrong.
        reason: String,
    },
    /// The log's key signed a checkpoint that contradicts the trusted one.
    #[error("{0}")]
    Fork(Box<ForkReport>),
    /// A peer's entries do not hash to the root its checkpoint signs, while
    /// its consistency proof holds: the peer, not the log, misbehaves.
    #[error("entries from {peer} for sizes {from}..{to} do not match the signed root: {reason}")]
    BadEntries {
        /// Who sent them.
        peer: String,
        /// First index sent.
        from: u64,
        /// Size the checkpoint signs.
        to: u64,
        /// What is wrong.
        reason: String,
    },
    /// The trusted checkpoint moved while a peer's update was fetched.
    #[error("the trusted log moved to size {now} while entries from {from} were fetched; fetch again")]
    Stale {
        /// The size the update started from.
        from: u64,
        /// The trusted size now.
        now: u64,
    },
    /// A proof or tile was asked for beyond the trusted size.
    #[error("{0}")]
    OutOfRange(String),
    /// Cosignatures were offered for a checkpoint this node does not hold.
    #[error("cosignatures are for a checkpoint this node does not hold (it holds size {0})")]
    NotCurrent(u64),
}

impl LogError {
    fn io(path: &Path, source: std::io::Error) -> LogError {
        LogError::Io { path: path.to_owned(), source }
    }
}

fn tree_error(e: sealpod_tlog::TreeError) -> LogError {
    LogError::Corrupt(e.to_string())
}

/// Evidence that the log forked: the checkpoint trusted and a signed one
/// that contradicts it.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct ForkReport {
    /// The log.
    pub origin: String,
    /// When it was noticed (seconds since the Unix epoch).
    pub detected_unix: u64,
    /// Who served the contradicting checkpoint.
    pub peer: String,
    /// Size and root (hex) trusted.
    pub trusted_size: u64,
    /// Root trusted.
    pub trusted_root: String,
    /// Size and root (hex) of the contradicting checkpoint.
    pub forked_size: u64,
    /// Its root.
    pub forked_root: String,
    /// Whether the contradiction is proven from held entries (same size or
    /// smaller with another root) or rests on a failed consistency proof.
    pub proven: bool,
    /// What contradicts what.
    pub reason: String,
    /// File holding the contradicting signed note.
    pub evidence: PathBuf,
}

impl std::fmt::Display for ForkReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "log {} forked: {} served a checkpoint of size {} (root {}) that contradicts the trusted size {} (root {}): {}",
            self.origin,
            self.peer,
            self.forked_size,
            &self.forked_root[..16.min(self.forked_root.len())],
            self.trusted_size,
            &self.trusted_root[..16.min(self.trusted_root.len())],
            self.reason
        )
    }
}

/// How a node takes part in a log.
pub struct ImageLogConfig {
    /// Where the log lives.
    pub dir: PathBuf,
    /// The log's public key (C2SP vkey); its name is the log's origin.
    pub log_key: String,
    /// The signing key, on the authority only.
    pub signer: Option<Ed25519Signer>,
    /// Witnesses whose cosignatures are checked, kept and reported.
    pub witnesses: Vec<CosignatureVerifier>,
    /// This node's witness key: it cosigns every checkpoint it accepts.
    pub cosigner: Option<CosignatureSigner>,
    /// How many of `witnesses` must have cosigned a checkpoint before its
    /// entries count as witnessed ([`ImageLog::witnessed_size`]); 0 trusts
    /// the log key's signature alone.
    pub witness_quorum: usize,
}

/// What a peer's checkpoint means for the trusted log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Examined {
    /// Same size and root; `new_cosignatures` cosignatures were added.
    Same {
        /// Cosignatures newly learned.
        new_cosignatures: usize,
    },
    /// An older state of the same log (consistent with what is held).
    Older,
    /// Larger: fetch entries `from..to` and a consistency proof, then
    /// [`ImageLog::extend`].
    Newer {
        /// Trusted size, the first entry to fetch.
        from: u64,
        /// The checkpoint's size.
        to: u64,
    },
}

/// A published or synced entry, by index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IndexedEntry {
    /// Index in the log.
    pub index: u64,
    /// `name:tag`.
    pub image: String,
    /// `sha256:…`.
    pub manifest_digest: String,
    /// The publisher's libp2p public key (protobuf), hex.
    pub publisher_key: String,
    /// Seconds since the Unix epoch.
    pub time_unix: u64,
}

impl IndexedEntry {
    fn new(index: u64, e: &LogEntry) -> IndexedEntry {
        IndexedEntry {
            index,
            image: e.image.clone(),
            manifest_digest: e.manifest_digest.clone(),
            publisher_key: hex::encode(&e.publisher_key),
            time_unix: e.time_unix,
        }
    }
}

/// A cosignature on the trusted checkpoint.
#[derive(Debug, Clone, Serialize)]
pub struct Cosigner {
    /// Witness key name.
    pub name: String,
    /// When it cosigned (seconds since the Unix epoch).
    pub time_unix: u64,
}

/// The log as this node holds it.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// The log's origin (its key name).
    pub origin: String,
    /// The log's public key.
    pub log_key: String,
    /// Whether this node holds the signing key.
    pub authority: bool,
    /// Trusted size.
    pub size: u64,
    /// Trusted root, hex.
    pub root: String,
    /// The signed checkpoint, as text with its signature lines (absent for
    /// a log not yet synced).
    pub checkpoint: Option<String>,
    /// Valid cosignatures on it from known witnesses.
    pub cosigners: Vec<Cosigner>,
    /// Cosignatures from distinct known witnesses a checkpoint needs before
    /// its entries are served (0: none).
    pub witness_quorum: usize,
    /// The largest size at which a checkpoint reached the quorum: entries
    /// below it are witnessed. Equals `size` when the quorum is 0.
    pub witnessed_size: u64,
    /// Forks noticed, oldest first.
    pub forks: Vec<ForkReport>,
}

/// An inclusion proof of one entry in the trusted checkpoint.
#[derive(Debug, Clone, Serialize)]
pub struct Inclusion {
    /// The entry.
    pub entry: IndexedEntry,
    /// Its RFC 6962 leaf hash, hex.
    pub leaf_hash: String,
    /// Tree size the proof is for (the checkpoint's).
    pub tree_size: u64,
    /// Proof hashes, leaf to root, hex.
    pub proof: Vec<String>,
    /// The signed checkpoint the proof leads to.
    pub checkpoint: String,
}

struct State {
    tree: Tree<FileStore>,
    entries: EntryFile,
    trusted: Checkpoint,
    note: Option<Note>,
    /// Entry indexes by image (`name:tag`) and by manifest digest.
    by_image: HashMap<String, Vec<u64>>,
    by_digest: HashMap<String, Vec<u64>>,
    forks: Vec<ForkReport>,
    /// See [`ImageLog::witnessed_size`].
    witnessed: u64,
}

/// One node's copy of the log. Cheap to clone; all clones share state.
#[derive(Clone)]
pub struct ImageLog {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    origin: String,
    log_key: Ed25519Verifier,
    signer: Option<Ed25519Signer>,
    witnesses: Vec<CosignatureVerifier>,
    cosigner: Option<CosignatureSigner>,
    witness_quorum: usize,
    state: Mutex<State>,
    _lock: nix::fcntl::Flock<File>,
}

/// Splits `name:tag` into name and tag: the tag follows the last ':' after
/// the last '/' (a ':' before it is a registry port). `None` without a tag.
pub fn split_image(image: &str) -> Option<(&str, &str)> {
    let slash = image.rfind('/').map_or(0, |i| i + 1);
    let colon = slash + image[slash..].rfind(':')?;
    Some((&image[..colon], &image[colon + 1..]))
}

/// The repository part of `name:tag` (all of it when there is no tag).
pub fn image_repository(image: &str) -> &str {
    split_image(image).map_or(image, |(name, _)| name)
}

fn now_unix() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), LogError> {
    let io = |e| LogError::io(path, e);
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp).map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)?;
    if let Some(dir) = path.parent() {
        File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
    }
    Ok(())
}

impl ImageLog {
    /// Opens (creating if needed) the log in `config.dir`. An authority
    /// with an empty log signs the empty checkpoint.
    pub fn open(config: ImageLogConfig) -> Result<ImageLog, LogError> {
        if config.witness_quorum > config.witnesses.len() + usize::from(config.cosigner.is_some()) {
            return Err(LogError::Key(format!(
                "a quorum of {} witnesses cannot be met by the {} witness keys given",
                config.witness_quorum,
                config.witnesses.len()
            )));
        }
        let dir = config.dir;
        std::fs::create_dir_all(&dir).map_err(|e| LogError::io(&dir, e))?;
        let lock_path = dir.join("lock");
        let lock = File::create(&lock_path).map_err(|e| LogError::io(&lock_path, e))?;
        let lock = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusiveNonblock)
            .map_err(|_| LogError::Locked(dir.clone()))?;

        let log_key = Ed25519Verifier::from_vkey(&config.log_key).map_err(|e| LogError::Key(e.to_string()))?;
        if let Some(signer) = &config.signer {
            if signer.verifier().vkey() != log_key.vkey() {
                return Err(LogError::Key("the signing key does not belong to the log key".into()));
            }
        }
        let origin = log_key.name().to_owned();
        let mut witnesses = config.witnesses;
        if let Some(c) = &config.cosigner {
            if !witnesses.iter().any(|w| w.vkey() == c.verifier().vkey()) {
                witnesses.push(c.verifier());
            }
        }

        let checkpoint_path = dir.join("checkpoint");
        let (trusted, note) = match std::fs::read(&checkpoint_path) {
            Ok(bytes) => {
                let set = VerifierSet::new().with(log_key.clone()).map_err(|e| LogError::Key(e.to_string()))?;
                let (c, n) = Checkpoint::open(&bytes, &origin, &set)
                    .map_err(|e| LogError::Corrupt(format!("stored checkpoint: {e}")))?;
                (c, Some(n))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                (Checkpoint::empty(origin.clone()).map_err(|e| LogError::Key(e.to_string()))?, None)
            }
            Err(e) => return Err(LogError::io(&checkpoint_path, e)),
        };
        let mut entries = EntryFile::open(&dir.join("entries"))?;
        let mut hashes = FileStore::open(dir.join("tree")).map_err(|e| LogError::Corrupt(e.to_string()))?;
        if entries.len() < trusted.size || hashes.level_len(0) < trusted.size {
            return Err(LogError::Corrupt(format!(
                "the checkpoint covers {} entries but {} entries and {} leaf hashes are stored",
                trusted.size,
                entries.len(),
                hashes.level_len(0)
            )));
        }
        // Whatever an interrupted commit left past the checkpoint goes.
        entries.truncate(trusted.size)?;
        if hashes.level_len(0) > trusted.size {
            hashes.truncate(0, trusted.size).map_err(|e| LogError::Corrupt(e.to_string()))?;
        }
        let tree = Tree::open(hashes).map_err(tree_error)?;
        if tree.root().map_err(tree_error)? != trusted.root {
            return Err(LogError::Corrupt(format!(
                "the stored tree does not have the checkpoint's root at size {}",
                trusted.size
            )));
        }
        let forks: Vec<ForkReport> = match std::fs::read(dir.join("forks.json")) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| LogError::Corrupt(format!("forks.json: {e}")))?,
            Err(_) => Vec::new(),
        };
        // What was witnessed survives a restart even if the current
        // checkpoint has not gathered its cosignatures yet.
        let witnessed = std::fs::read_to_string(dir.join("witnessed"))
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(0)
            .min(trusted.size);
        let mut state = State {
            tree,
            entries,
            trusted,
            note,
            by_image: HashMap::new(),
            by_digest: HashMap::new(),
            forks,
            witnessed,
        };
        for i in 0..state.trusted.size {
            let e =
                LogEntry::decode(&state.entries.get(i)?).map_err(|e| LogError::Corrupt(format!("entry {i}: {e}")))?;
            state.index(i, &e);
        }
        let log = ImageLog {
            inner: Arc::new(Inner {
                dir,
                origin,
                log_key,
                signer: config.signer,
                witnesses,
                cosigner: config.cosigner,
                witness_quorum: config.witness_quorum,
                state: Mutex::new(state),
                _lock: lock,
            }),
        };
        if log.inner.signer.is_some() && log.state().note.is_none() {
            let mut state = log.state();
            log.sign_and_store(&mut state)?;
        }
        log.note_witnessing(&mut log.state())?;
        Ok(log)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn log_keys(&self) -> VerifierSet {
        // An Ed25519 verifier's name is checked when it is made.
        VerifierSet::new().with(self.inner.log_key.clone()).unwrap_or_default()
    }

    /// The log's origin.
    pub fn origin(&self) -> &str {
        &self.inner.origin
    }

    /// The log's public key.
    pub fn log_key(&self) -> String {
        self.inner.log_key.vkey()
    }

    /// Whether this node can publish.
    pub fn is_authority(&self) -> bool {
        self.inner.signer.is_some()
    }

    /// The trusted checkpoint.
    pub fn checkpoint(&self) -> Checkpoint {
        self.state().trusted.clone()
    }

    /// The trusted checkpoint as a signed note (with cosignatures), or
    /// `None` before the first sync.
    pub fn signed_checkpoint(&self) -> Option<Vec<u8>> {
        self.state().note.as_ref().map(Note::to_bytes)
    }

    /// Where the log lives.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Signs a checkpoint for the tree as it is and stores it.
    fn sign_and_store(&self, state: &mut State) -> Result<(), LogError> {
        let signer = self.inner.signer.as_ref().ok_or_else(|| LogError::NotAuthority(self.inner.origin.clone()))?;
        let root = state.tree.root().map_err(tree_error)?;
        let checkpoint = Checkpoint::new(self.inner.origin.clone(), state.tree.size(), root)
            .map_err(|e| LogError::Corrupt(e.to_string()))?;
        let mut note = checkpoint.to_note().map_err(|e| LogError::Corrupt(e.to_string()))?;
        note.sign(signer).map_err(|e| LogError::Corrupt(e.to_string()))?;
        if let Some(c) = &self.inner.cosigner {
            let sig = c.cosign(note.text(), now_unix()).map_err(|e| LogError::Corrupt(e.to_string()))?;
            note.add_signature(sig).map_err(|e| LogError::Corrupt(e.to_string()))?;
        }
        write_atomic(&self.inner.dir.join("checkpoint"), &note.to_bytes())?;
        state.trusted = checkpoint;
        state.note = Some(note);
        self.note_witnessing(state)
    }

    /// Valid cosignatures on `note` from distinct known witnesses.
    fn cosigners_of(&self, note: &Note) -> Vec<Cosigner> {
        let mut out: Vec<Cosigner> = Vec::new();
        for s in note.signatures() {
            let Some(w) = self.inner.witnesses.iter().find(|w| w.name() == s.name && w.key_id() == s.key_id) else {
                continue;
            };
            let Some(time_unix) = w.verify_cosignature(note.text().as_bytes(), &s.signature) else { continue };
            if !out.iter().any(|c| c.name == s.name) {
                out.push(Cosigner { name: s.name.clone(), time_unix });
            }
        }
        out
    }

    /// Moves the witnessed size up to the trusted checkpoint once that has
    /// its quorum of cosignatures, and keeps it on disk.
    fn note_witnessing(&self, state: &mut State) -> Result<(), LogError> {
        let size = state.trusted.size;
        let met = self.inner.witness_quorum == 0
            || state.note.as_ref().is_some_and(|n| self.cosigners_of(n).len() >= self.inner.witness_quorum);
        if met && size > state.witnessed {
            if self.inner.witness_quorum > 0 {
                write_atomic(&self.inner.dir.join("witnessed"), size.to_string().as_bytes())?;
                tracing::info!(origin = %self.inner.origin, size, quorum = self.inner.witness_quorum, "checkpoint witnessed");
            }
            state.witnessed = size;
        }
        Ok(())
    }

    /// Entries below this index are witnessed: a checkpoint at least this
    /// large carried cosignatures from the quorum of known witnesses (with
    /// no quorum, every trusted entry is). A node serves only these.
    pub fn witnessed_size(&self) -> u64 {
        self.state().witnessed
    }

    /// Cosignatures from distinct known witnesses a checkpoint needs.
    pub fn witness_quorum(&self) -> usize {
        self.inner.witness_quorum
    }

    /// Appends an entry (authority only) and signs a new checkpoint.
    /// Publishing the digest the image already points at is a no-op that
    /// returns the existing entry.
    pub fn publish(&self, entry: &LogEntry) -> Result<IndexedEntry, LogError> {
        if self.inner.signer.is_none() {
            return Err(LogError::NotAuthority(self.inner.origin.clone()));
        }
        let bytes = entry.encode()?;
        let mut state = self.state();
        if let Some(&last) = state.by_image.get(&entry.image).and_then(|v| v.last()) {
            let current = LogEntry::decode(&state.entries.get(last)?).map_err(|e| LogError::Corrupt(e.to_string()))?;
            if current.manifest_digest == entry.manifest_digest {
                return Ok(IndexedEntry::new(last, &current));
            }
        }
        let index = state.trusted.size;
        state.entries.append(std::slice::from_ref(&bytes))?;
        state.tree.append(&bytes).map_err(tree_error)?;
        state.tree.sync().map_err(tree_error)?;
        if let Err(e) = self.sign_and_store(&mut state) {
            // Nothing was promised; drop the uncommitted tail on next open.
            tracing::error!(error = %e, "could not store the new checkpoint");
            return Err(e);
        }
        state.index(index, entry);
        tracing::info!(origin = %self.inner.origin, index, image = %entry.image, digest = %entry.manifest_digest, "published");
        Ok(IndexedEntry::new(index, entry))
    }

    /// Judges a signed checkpoint a peer serves. Forks are recorded and
    /// returned as [`LogError::Fork`].
    pub fn examine(&self, signed: &[u8], peer: &str) -> Result<Examined, LogError> {
        let (theirs, note) = Checkpoint::open(signed, &self.inner.origin, &self.log_keys())
            .map_err(|e| LogError::BadCheckpoint { peer: peer.to_owned(), reason: e.to_string() })?;
        let mut state = self.state();
        let trusted = state.trusted.clone();
        if theirs.size > trusted.size {
            return Ok(Examined::Newer { from: trusted.size, to: theirs.size });
        }
        let ours = state.tree.root_at(theirs.size).map_err(tree_error)?;
        if ours != theirs.root {
            let reason = if theirs.size == trusted.size {
                "same size, different root".to_owned()
            } else {
                format!("its root differs from the held tree's root at size {}", theirs.size)
            };
            return Err(self.record_fork(&mut state, &note, &theirs, peer, true, reason));
        }
        if theirs.size < trusted.size {
            return Ok(Examined::Older);
        }
        let added = self.merge_cosignatures(&mut state, &note)?;
        Ok(Examined::Same { new_cosignatures: added })
    }

    /// Accepts a peer's larger checkpoint, given a consistency proof from
    /// the trusted size and entries `trusted.size..checkpoint.size`. The
    /// entries must hash to the signed root on top of the held tree. On
    /// success the entries are stored and the checkpoint trusted; a witness
    /// adds its cosignature. Returns the note as now stored.
    pub fn extend(&self, signed: &[u8], proof: &[Hash], entries: &[Vec<u8>], peer: &str) -> Result<Vec<u8>, LogError> {
        let (theirs, note) = Checkpoint::open(signed, &self.inner.origin, &self.log_keys())
            .map_err(|e| LogError::BadCheckpoint { peer: peer.to_owned(), reason: e.to_string() })?;
        let mut state = self.state();
        let trusted = state.trusted.clone();
        let from = theirs.size.saturating_sub(entries.len() as u64);
        if from != trusted.size || theirs.size <= trusted.size {
            return Err(LogError::Stale { from, now: trusted.size });
        }
        let bad_entries =
            |reason: String| LogError::BadEntries { peer: peer.to_owned(), from, to: theirs.size, reason };
        let mut leaves = Vec::with_capacity(entries.len());
        let mut decoded = Vec::with_capacity(entries.len());
        for (i, bytes) in entries.iter().enumerate() {
            let e = LogEntry::decode(bytes).map_err(|e| bad_entries(format!("entry {}: {e}", from + i as u64)))?;
            leaves.push(sealpod_tlog::leaf_hash(bytes));
            decoded.push(e);
        }
        let root = state.tree.root_after_appending(&leaves).map_err(tree_error)?;
        if root != theirs.root {
            // Either the entries are wrong or the log forked; the proof tells.
            return Err(match check_consistent_update(&trusted, &theirs, proof) {
                Ok(()) => bad_entries("they hash to another root".into()),
                Err(WitnessError::Fork { reason, .. }) => {
                    self.record_fork(&mut state, &note, &theirs, peer, false, format!("consistency proof: {reason}"))
                }
                Err(e) => bad_entries(e.to_string()),
            });
        }
        state.entries.append(entries)?;
        for leaf in &leaves {
            state.tree.append_leaf_hash(*leaf).map_err(tree_error)?;
        }
        state.tree.sync().map_err(tree_error)?;
        let mut kept = self.verified_note(&note);
        if let Some(c) = &self.inner.cosigner {
            let sig = c.cosign(kept.text(), now_unix()).map_err(|e| LogError::Corrupt(e.to_string()))?;
            kept.add_signature(sig).map_err(|e| LogError::Corrupt(e.to_string()))?;
        }
        write_atomic(&self.inner.dir.join("checkpoint"), &kept.to_bytes())?;
        for (i, e) in decoded.iter().enumerate() {
            state.index(from + i as u64, e);
        }
        state.trusted = theirs;
        let bytes = kept.to_bytes();
        state.note = Some(kept);
        tracing::info!(origin = %self.inner.origin, size = state.trusted.size, %peer, "log extended");
        self.note_witnessing(&mut state)?;
        Ok(bytes)
    }

    /// The note with only the signatures this node can check: the log's
    /// and known witnesses'.
    fn verified_note(&self, note: &Note) -> Note {
        let mut kept = Note::new(note.text()).expect("text of a parsed note");
        for sig in note.signatures() {
            if self.signature_valid(note.text(), sig) && !kept.signatures().contains(sig) {
                let _ = kept.add_signature(sig.clone());
            }
        }
        kept
    }

    fn signature_valid(&self, text: &str, sig: &NoteSignature) -> bool {
        let log = &self.inner.log_key;
        if sig.name == log.name() && sig.key_id == log.key_id() {
            return log.verify(text.as_bytes(), &sig.signature);
        }
        self.inner
            .witnesses
            .iter()
            .any(|w| w.name() == sig.name && w.key_id() == sig.key_id && w.verify(text.as_bytes(), &sig.signature))
    }

    fn merge_cosignatures(&self, state: &mut State, note: &Note) -> Result<usize, LogError> {
        let Some(current) = state.note.as_mut() else { return Ok(0) };
        if current.text() != note.text() {
            return Err(LogError::NotCurrent(state.trusted.size));
        }
        let mut added = 0;
        for sig in note.signatures() {
            let known = current.signatures().iter().any(|s| s.name == sig.name && s.key_id == sig.key_id);
            if !known && self.signature_valid(note.text(), sig) && current.add_signature(sig.clone()).is_ok() {
                added += 1;
            }
        }
        if added > 0 {
            write_atomic(&self.inner.dir.join("checkpoint"), &current.to_bytes())?;
            self.note_witnessing(state)?;
        }
        Ok(added)
    }

    /// Adds valid cosignatures from known witnesses to the trusted
    /// checkpoint; `signed` must be a note of exactly that checkpoint.
    /// Returns how many were new.
    pub fn add_cosignatures(&self, signed: &[u8]) -> Result<usize, LogError> {
        let note = Note::parse(signed)
            .map_err(|e| LogError::BadCheckpoint { peer: "witness".into(), reason: e.to_string() })?;
        let mut state = self.state();
        self.merge_cosignatures(&mut state, &note)
    }

    fn record_fork(
        &self,
        state: &mut State,
        note: &Note,
        theirs: &Checkpoint,
        peer: &str,
        proven: bool,
        reason: String,
    ) -> LogError {
        let forks_dir = self.inner.dir.join("forks");
        let evidence =
            forks_dir.join(format!("{}-size{}-{}.note", now_unix(), theirs.size, &hex::encode(theirs.root)[..16]));
        let report = ForkReport {
            origin: self.inner.origin.clone(),
            detected_unix: now_unix(),
            peer: peer.to_owned(),
            trusted_size: state.trusted.size,
            trusted_root: hex::encode(state.trusted.root),
            forked_size: theirs.size,
            forked_root: hex::encode(theirs.root),
            proven,
            reason,
            evidence: evidence.clone(),
        };
        let already =
            state.forks.iter().any(|f| f.forked_root == report.forked_root && f.forked_size == report.forked_size);
        if !already {
            tracing::error!(%report, "LOG FORK: refusing the checkpoint and keeping the evidence");
            let _ = std::fs::create_dir_all(&forks_dir);
            let _ = write_atomic(&evidence, &note.to_bytes());
            state.forks.push(report.clone());
            if let Ok(json) = serde_json::to_vec_pretty(&state.forks) {
                let _ = write_atomic(&self.inner.dir.join("forks.json"), &json);
            }
        }
        LogError::Fork(Box::new(report))
    }

    /// Entries `start..start+count` (at most [`MAX_ENTRIES_PER_CALL`]),
    /// within the trusted size.
    pub fn entries(&self, start: u64, count: u64) -> Result<Vec<Vec<u8>>, LogError> {
        let state = self.state();
        let end = start.saturating_add(count.min(MAX_ENTRIES_PER_CALL)).min(state.trusted.size);
        if start >= state.trusted.size && count > 0 {
            return Err(LogError::OutOfRange(format!("entry {start} is beyond the log's size {}", state.trusted.size)));
        }
        (start..end).map(|i| state.entries.get(i)).collect()
    }

    /// Consistency proof between two sizes up to the trusted one.
    pub fn consistency_proof(&self, old: u64, new: u64) -> Result<Vec<Hash>, LogError> {
        let state = self.state();
        if new > state.trusted.size || old > new {
            return Err(LogError::OutOfRange(format!(
                "no consistency proof from {old} to {new} in a log of size {}",
                state.trusted.size
            )));
        }
        if old == 0 || old == new {
            // Nothing to prove: every tree extends the empty one and itself.
            return Ok(Vec::new());
        }
        state.tree.consistency_proof(old, new).map_err(|e| LogError::OutOfRange(e.to_string()))
    }

    /// Inclusion proof of entry `index` at `size`.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, LogError> {
        let state = self.state();
        if size > state.trusted.size {
            return Err(LogError::OutOfRange(format!("size {size} is beyond the log's size {}", state.trusted.size)));
        }
        state.tree.inclusion_proof(index, size).map_err(|e| LogError::OutOfRange(e.to_string()))
    }

    /// The latest entry for `name:tag`.
    pub fn lookup(&self, image: &str) -> Option<IndexedEntry> {
        self.history(image).pop()
    }

    /// Every entry for `name:tag`, oldest first.
    pub fn history(&self, image: &str) -> Vec<IndexedEntry> {
        let state = self.state();
        let Some(indexes) = state.by_image.get(image) else { return Vec::new() };
        indexes
            .iter()
            .filter_map(|&i| {
                state.entries.get(i).ok().and_then(|b| LogEntry::decode(&b).ok()).map(|e| IndexedEntry::new(i, &e))
            })
            .collect()
    }

    /// The first entry publishing `digest` under repository `repository`.
    pub fn find_digest(&self, repository: &str, digest: &str) -> Option<IndexedEntry> {
        let state = self.state();
        let indexes = state.by_digest.get(digest)?;
        indexes.iter().find_map(|&i| {
            let e = LogEntry::decode(&state.entries.get(i).ok()?).ok()?;
            (image_repository(&e.image) == repository).then(|| IndexedEntry::new(i, &e))
        })
    }

    /// Every entry publishing `digest`, oldest first.
    pub fn entries_for_digest(&self, digest: &str) -> Vec<IndexedEntry> {
        let state = self.state();
        let Some(indexes) = state.by_digest.get(digest) else { return Vec::new() };
        indexes
            .iter()
            .filter_map(|&i| {
                state.entries.get(i).ok().and_then(|b| LogEntry::decode(&b).ok()).map(|e| IndexedEntry::new(i, &e))
            })
            .collect()
    }

    /// Digests published under `repository`, for any tag.
    pub fn digests_of(&self, repository: &str) -> Vec<String> {
        let state = self.state();
        let mut out: Vec<String> = state
            .by_image
            .iter()
            .filter(|(image, _)| image_repository(image) == repository)
            .flat_map(|(_, idx)| idx.iter().filter_map(|&i| state.entries.get(i).ok()))
            .filter_map(|b| LogEntry::decode(&b).ok().map(|e| e.manifest_digest))
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// The inclusion proof of the latest entry for `name:tag` in the
    /// trusted checkpoint.
    pub fn prove(&self, image: &str) -> Option<Inclusion> {
        let entry = self.lookup(image)?;
        let state = self.state();
        let note = state.note.as_ref()?;
        let size = state.trusted.size;
        let proof = state.tree.inclusion_proof(entry.index, size).ok()?;
        let leaf = state.tree.leaf_hash(entry.index).ok()?;
        Some(Inclusion {
            entry,
            leaf_hash: hex::encode(leaf),
            tree_size: size,
            proof: proof.iter().map(hex::encode).collect(),
            checkpoint: note.to_string(),
        })
    }

    /// A C2SP tile or entry bundle of the trusted tree, by its path
    /// (`tile/0/000`, `tile/entries/001.p/5`, …).
    pub fn tile(&self, path: &str) -> Result<Vec<u8>, LogError> {
        let tile = TileId::parse(path).map_err(|e| LogError::OutOfRange(e.to_string()))?;
        let state = self.state();
        match tile.level {
            TileLevel::Hashes(_) => state.tree.tile_bytes(&tile).map_err(|e| LogError::OutOfRange(e.to_string())),
            TileLevel::Entries => {
                let start = tile.index.checked_mul(256).ok_or_else(|| LogError::OutOfRange(path.into()))?;
                let end = start + u64::from(tile.width);
                if end > state.trusted.size {
                    return Err(LogError::OutOfRange(format!(
                        "{path} is beyond the log's size {}",
                        state.trusted.size
                    )));
                }
                let entries = (start..end).map(|i| state.entries.get(i)).collect::<Result<Vec<_>, _>>()?;
                encode_entry_bundle(&entries).map_err(|e| LogError::Corrupt(e.to_string()))
            }
        }
    }

    /// What this node holds.
    pub fn status(&self) -> Status {
        let state = self.state();
        let cosigners = state.note.as_ref().map(|n| self.cosigners_of(n)).unwrap_or_default();
        Status {
            origin: self.inner.origin.clone(),
            log_key: self.inner.log_key.vkey(),
            authority: self.inner.signer.is_some(),
            size: state.trusted.size,
            root: hex::encode(state.trusted.root),
            checkpoint: state.note.as_ref().map(Note::to_string),
            cosigners,
            witness_quorum: self.inner.witness_quorum,
            witnessed_size: state.witnessed,
            forks: state.forks.clone(),
        }
    }
}

impl State {
    fn index(&mut self, i: u64, e: &LogEntry) {
        self.by_image.entry(e.image.clone()).or_default().push(i);
        self.by_digest.entry(e.manifest_digest.clone()).or_default().push(i);
    }
}

#[cfg(test)]
mod tests;
