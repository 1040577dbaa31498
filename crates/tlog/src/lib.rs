//! The pure parts of sealpod's transparency log: Merkle tree math, proofs,
//! and the text and byte formats a log, its clients and its witnesses
//! exchange.
//!
//! What is here:
//!
//! * RFC 6962 hashing and a Merkle tree ([`Tree`]) that appends leaves and
//!   produces roots, inclusion and consistency proofs for any size it has
//!   had, over a [`HashStore`] kept in memory ([`MemoryStore`]) or in
//!   append-only files ([`FileStore`]);
//! * proof verification ([`verify_inclusion`], [`verify_consistency`] and
//!   their `_bytes` forms for untrusted input) that refuses every malformed
//!   proof with a typed [`ProofError`] and never panics;
//! * C2SP signed notes ([`Note`]) with Ed25519 keys and their key strings,
//!   checkpoints ([`Checkpoint`]), witness cosignatures
//!   ([`CosignatureSigner`], [`CosignatureVerifier`]) and tiles ([`TileId`],
//!   [`Tree::tile_bytes`], entry bundles);
//! * sealpod's log entry ([`LogEntry`]) and its canonical encoding;
//! * the witness rule: accept a new checkpoint only if it consistently
//!   extends the trusted one ([`check_consistent_update`], [`Witness`]).
//!
//! What is not: no transport (no HTTP, no libp2p, no tile server), no
//! storage engine (no entry storage, no indexes, no locking between
//! processes), no clock (times are passed in), no policy on which logs or
//! witnesses to trust. The node that serves, syncs and publishes builds on
//! this crate.
//!
//! Specifications: RFC 6962 §2.1 and RFC 9162 §2.1 (hashing, proofs and
//! their verification algorithms, cited per function), C2SP `signed-note`,
//! `tlog-checkpoint`, `tlog-cosignature` (Ed25519, v1) and `tlog-tiles`.
//! `docs/transparency-log.md` describes the formats and rules as sealpod
//! uses them.
//!
//! Written here rather than taken from a crate: cloudflare/azul's
//! `signed_note` and `tlog_tiles` implement the same C2SP formats, but build
//! on ed25519-dalek 2 and base64 0.21 while this workspace is on
//! ed25519-dalek 3 and base64 0.22, and bring transport-level types; the
//! code here is small, and its limits and errors are ours. Cryptographic
//! primitives come from RustCrypto (`sha2`) and `ed25519-dalek`.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod checkpoint;
pub mod cosignature;
pub mod entry;
pub mod hash;
pub mod note;
pub mod proof;
pub mod store;
pub mod tile;
pub mod tree;
pub mod witness;

pub use checkpoint::{Checkpoint, CheckpointError};
pub use cosignature::{CosignatureError, CosignatureSigner, CosignatureVerifier, COSIGNATURE_TYPE};
pub use entry::{EntryError, LogEntry};
pub use hash::{leaf_hash, node_hash, Hash, EMPTY_ROOT, HASH_SIZE};
pub use note::{
    parse_verifier_key, Ed25519Signer, Ed25519Verifier, KeyError, Note, NoteError, NoteSignature, NoteSigner,
    NoteVerifier, VerifierSet,
};
pub use proof::{
    consistency_proof_len, inclusion_proof_len, root_from_inclusion_proof, verify_consistency,
    verify_consistency_bytes, verify_inclusion, verify_inclusion_bytes, ProofError,
};
pub use store::{FileStore, HashStore, MemoryStore, StoreError};
pub use tile::{
    encode_entry_bundle, new_tiles, parse_entry_bundle, parse_tile_hashes, tiles_for_size, TileError, TileId, TileLevel,
};
pub use tree::{Tree, TreeError};
pub use witness::{check_consistent_update, Witness, WitnessError};
