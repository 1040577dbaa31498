//! The witness's rule: a log may only grow. A new checkpoint is accepted
//! only if it is for the same log, is at least as large as the last one
//! trusted, and a consistency proof shows it extends it ("refuse a log that
//! forks"). [`Witness`] adds checking the log's signature, remembering the
//! latest trusted checkpoint, and cosigning.

use crate::checkpoint::{Checkpoint, CheckpointError};
use crate::cosignature::{CosignatureError, CosignatureSigner};
use crate::hash::{Hash, EMPTY_ROOT};
use crate::note::{NoteSignature, VerifierSet};
use crate::proof::{verify_consistency, ProofError};

/// Why a new checkpoint was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WitnessError {
    /// The new checkpoint is for another log.
    #[error("checkpoint is for log {got:?}, not {trusted:?}")]
    OriginMismatch {
        /// Origin of the trusted checkpoint.
        trusted: String,
        /// Origin of the new one.
        got: String,
    },
    /// The new checkpoint is smaller than the trusted one: the log rolled back.
    #[error("log {origin} shrank from {old} to {new} leaves: refusing a rolled-back log")]
    RolledBack {
        /// The log.
        origin: String,
        /// Trusted size.
        old: u64,
        /// New size.
        new: u64,
    },
    /// Two different roots for the same size, or a proof that does not show
    /// the new tree extends the trusted one: the log forked.
    #[error("log {origin} forked: size {new_size} is not consistent with trusted size {old_size} ({reason})")]
    Fork {
        /// The log.
        origin: String,
        /// Trusted size.
        old_size: u64,
        /// New size.
        new_size: u64,
        /// The proof failure or root mismatch.
        reason: String,
    },
    /// A proof was given where none is needed (equal sizes, or from the
    /// empty tree): refused rather than ignored.
    #[error("expected an empty consistency proof from size {old_size} to {new_size}, got {len} hashes")]
    UnexpectedProof {
        /// Trusted size.
        old_size: u64,
        /// New size.
        new_size: u64,
        /// Hashes given.
        len: usize,
    },
    /// The signed checkpoint does not parse or is not signed by the log.
    #[error("checkpoint refused: {0}")]
    Checkpoint(#[from] CheckpointError),
    /// The cosignature could not be made.
    #[error(transparent)]
    Cosignature(#[from] CosignatureError),
}

/// Accepts `new` as a successor of the trusted `old` only if it is for the
/// same log and `proof` shows that it extends it (RFC 9162 §2.1.4.2). Equal
/// sizes need equal roots and an empty proof; from the empty tree anything
/// non-forking follows, with an empty proof.
pub fn check_consistent_update(old: &Checkpoint, new: &Checkpoint, proof: &[Hash]) -> Result<(), WitnessError> {
    if old.origin != new.origin {
        return Err(WitnessError::OriginMismatch { trusted: old.origin.clone(), got: new.origin.clone() });
    }
    let fork = |reason: String| WitnessError::Fork {
        origin: new.origin.clone(),
        old_size: old.size,
        new_size: new.size,
        reason,
    };
    if new.size < old.size {
        return Err(WitnessError::RolledBack { origin: new.origin.clone(), old: old.size, new: new.size });
    }
    if (old.size == 0 || old.size == new.size) && !proof.is_empty() {
        return Err(WitnessError::UnexpectedProof { old_size: old.size, new_size: new.size, len: proof.len() });
    }
    if old.size == 0 {
        if old.root != EMPTY_ROOT {
            return Err(fork("the trusted empty tree has a root other than SHA-256 of nothing".into()));
        }
        if new.size == 0 && new.root != EMPTY_ROOT {
            return Err(fork("an empty tree with a root other than SHA-256 of nothing".into()));
        }
        return Ok(());
    }
    verify_consistency(old.size, new.size, proof, &old.root, &new.root).map_err(|e: ProofError| fork(e.to_string()))
}

/// A witness of one log: it holds the latest checkpoint it trusts and moves
/// forward only along consistency proofs, optionally cosigning each
/// checkpoint it accepts.
#[derive(Debug)]
pub struct Witness {
    log_keys: VerifierSet,
    trusted: Checkpoint,
    cosigner: Option<CosignatureSigner>,
}

impl Witness {
    /// A witness trusting `trusted` (for a new log, [`Checkpoint::empty`]) and
    /// the log's signature keys.
    pub fn new(log_keys: VerifierSet, trusted: Checkpoint) -> Self {
        Witness { log_keys, trusted, cosigner: None }
    }

    /// Cosigns every checkpoint accepted from now on.
    pub fn with_cosigner(mut self, cosigner: CosignatureSigner) -> Self {
        self.cosigner = Some(cosigner);
        self
    }

    /// The latest checkpoint trusted.
    pub fn trusted(&self) -> &Checkpoint {
        &self.trusted
    }

    /// Checks a signed checkpoint from the log (signature by one of the
    /// log's keys, same origin, consistent with the trusted checkpoint by
    /// `proof`) and, if it passes, trusts it. Returns the cosignature line
    /// when the witness has a cosigner, made at `now_unix`. On any error the
    /// trusted checkpoint is unchanged.
    pub fn update(
        &mut self,
        signed_checkpoint: &[u8],
        proof: &[Hash],
        now_unix: u64,
    ) -> Result<Option<NoteSignature>, WitnessError> {
        let (new, note) = Checkpoint::open(signed_checkpoint, &self.trusted.origin, &self.log_keys)?;
        check_consistent_update(&self.trusted, &new, proof)?;
        let cosignature = match &self.cosigner {
            Some(c) => Some(c.cosign(note.text(), now_unix)?),
            None => None,
        };
        self.trusted = new;
        Ok(cosignature)
    }
}
