//! C2SP tlog-cosignature v1 with Ed25519 (`c2sp.org/tlog-cosignature`): a
//! witness's timestamped statement that a checkpoint is the largest
//! consistent tree it has seen for the log.
//!
//! The note signature (signature type `0x04`) is `timestamp (u64 big-endian)
//! || Ed25519 signature` over
//!
//! ```text
//! cosignature/v1
//! time <timestamp>
//! <checkpoint note text>
//! ```

use std::fmt;

use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};

use crate::note::{
    check_key_name, ed25519_verify, format_key_string, format_signer_key, generate_signing_key, key_id,
    parse_key_string, parse_signer_key, verifying_key, KeyError, NoteSignature, NoteVerifier,
};

/// Signature type byte of Ed25519 cosignatures.
pub const COSIGNATURE_TYPE: u8 = 0x04;
/// Largest timestamp a cosignature may carry, `2^63 - 1`.
pub const MAX_TIMESTAMP: u64 = i64::MAX as u64;

/// A cosignature that cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CosignatureError {
    /// Timestamps above `2^63 - 1` are not allowed.
    #[error("timestamp {0} is above 2^63 - 1")]
    TimestampTooLarge(u64),
}

/// The message an Ed25519 v1 cosignature signs.
pub fn cosigned_message(timestamp: u64, checkpoint_text: &str) -> Vec<u8> {
    let mut m = format!("cosignature/v1\ntime {timestamp}\n").into_bytes();
    m.extend_from_slice(checkpoint_text.as_bytes());
    m
}

/// The timestamp of a cosignature's signature bytes (without key ID), if
/// they have the right length and an allowed timestamp.
pub fn cosignature_timestamp(signature: &[u8]) -> Option<u64> {
    if signature.len() != 8 + 64 {
        return None;
    }
    let ts = u64::from_be_bytes(signature[..8].try_into().ok()?);
    (ts <= MAX_TIMESTAMP).then_some(ts)
}

/// A witness's cosigning key.
#[derive(Clone)]
pub struct CosignatureSigner {
    name: String,
    key: SigningKey,
    id: u32,
}

impl fmt::Debug for CosignatureSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CosignatureSigner({}+{:08x})", self.name, self.id)
    }
}

impl CosignatureSigner {
    /// A cosigner named `name` (a schema-less URL, say) with this key.
    pub fn new(name: &str, key: SigningKey) -> Result<Self, KeyError> {
        check_key_name(name)?;
        let id = key_id(name, COSIGNATURE_TYPE, key.verifying_key().as_bytes());
        Ok(CosignatureSigner { name: name.to_owned(), key, id })
    }

    /// A cosigner with a fresh key from the operating system's random source.
    pub fn generate(name: &str) -> Result<Self, KeyError> {
        Self::new(name, generate_signing_key())
    }

    /// Parses `PRIVATE+KEY+name+hash+base64(0x04||seed)`.
    pub fn from_skey(skey: &str) -> Result<Self, KeyError> {
        let (name, key) = parse_signer_key(skey, COSIGNATURE_TYPE)?;
        Self::new(&name, key)
    }

    /// The signer key string (secret).
    pub fn skey(&self) -> String {
        format_signer_key(&self.name, COSIGNATURE_TYPE, &self.key)
    }

    /// The matching verifier.
    pub fn verifier(&self) -> CosignatureVerifier {
        CosignatureVerifier { name: self.name.clone(), key: self.key.verifying_key(), id: self.id }
    }

    /// Cosigns checkpoint note text at `timestamp` (seconds since the Unix
    /// epoch), giving the signature line to add to the checkpoint's note.
    /// The caller must have checked the checkpoint's consistency first (see
    /// [`crate::Witness`]).
    pub fn cosign(&self, checkpoint_text: &str, timestamp: u64) -> Result<NoteSignature, CosignatureError> {
        if timestamp > MAX_TIMESTAMP {
            return Err(CosignatureError::TimestampTooLarge(timestamp));
        }
        let sig = self.key.sign(&cosigned_message(timestamp, checkpoint_text));
        let mut signature = timestamp.to_be_bytes().to_vec();
        signature.extend_from_slice(&sig.to_bytes());
        Ok(NoteSignature { name: self.name.clone(), key_id: self.id, signature })
    }
}

/// A witness's public key, verifying its cosignatures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CosignatureVerifier {
    name: String,
    key: VerifyingKey,
    id: u32,
}

impl CosignatureVerifier {
    /// A verifier for cosigner `name` with this public key.
    pub fn new(name: &str, key: VerifyingKey) -> Result<Self, KeyError> {
        check_key_name(name)?;
        Ok(CosignatureVerifier { name: name.to_owned(), id: key_id(name, COSIGNATURE_TYPE, key.as_bytes()), key })
    }

    /// Parses the vkey form `name+hash+base64(0x04||public key)`.
    pub fn from_vkey(vkey: &str) -> Result<Self, KeyError> {
        let (name, sig_type, key) = parse_key_string(vkey)?;
        if sig_type != COSIGNATURE_TYPE {
            return Err(KeyError::WrongType { got: sig_type, want: COSIGNATURE_TYPE });
        }
        let id = key_id(&name, COSIGNATURE_TYPE, &key);
        Ok(CosignatureVerifier { name, key: verifying_key(&key)?, id })
    }

    /// The vkey string.
    pub fn vkey(&self) -> String {
        format_key_string(&self.name, COSIGNATURE_TYPE, self.key.as_bytes())
    }

    /// Verifies a cosignature (without key ID) over checkpoint note text and
    /// returns its timestamp.
    pub fn verify_cosignature(&self, checkpoint_text: &[u8], signature: &[u8]) -> Option<u64> {
        let ts = cosignature_timestamp(signature)?;
        let mut msg = format!("cosignature/v1\ntime {ts}\n").into_bytes();
        msg.extend_from_slice(checkpoint_text);
        ed25519_verify(&self.key, &msg, &signature[8..]).then_some(ts)
    }
}

impl NoteVerifier for CosignatureVerifier {
    fn name(&self) -> &str {
        &self.name
    }
    fn key_id(&self) -> u32 {
        self.id
    }
    fn verify(&self, text: &[u8], signature: &[u8]) -> bool {
        self.verify_cosignature(text, signature).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::note::{Ed25519Signer, Note, NoteError, VerifierSet};
    use crate::Checkpoint;

    fn signed_checkpoint() -> (Note, Ed25519Signer) {
        let log = Ed25519Signer::generate("example.com/log").unwrap();
        let mut note = Checkpoint::new("example.com/log", 10, [3; 32]).unwrap().to_note().unwrap();
        note.sign(&log).unwrap();
        (note, log)
    }

    #[test]
    fn cosignature_round_trip() {
        let (mut note, log) = signed_checkpoint();
        let w = CosignatureSigner::generate("witness.example/w1").unwrap();
        let line = w.cosign(note.text(), 1_679_315_147).unwrap();
        assert_eq!(line.signature.len(), 72);
        assert_eq!(&line.signature[..8], &1_679_315_147u64.to_be_bytes());
        note.add_signature(line.clone()).unwrap();
        let parsed = Note::parse(&note.to_bytes()).unwrap();
        let known = VerifierSet::new().with(log.verifier()).unwrap().with(w.verifier()).unwrap();
        assert_eq!(parsed.verify(&known).unwrap().len(), 2);
        assert_eq!(w.verifier().verify_cosignature(note.text().as_bytes(), &line.signature), Some(1_679_315_147));
        // Keys round-trip.
        assert_eq!(CosignatureSigner::from_skey(&w.skey()).unwrap().verifier(), w.verifier());
        assert_eq!(CosignatureVerifier::from_vkey(&w.verifier().vkey()).unwrap(), w.verifier());
        assert_eq!(crate::note::parse_verifier_key(&w.verifier().vkey()).unwrap().key_id(), w.verifier().key_id());
    }

    #[test]
    fn key_id_uses_the_cosignature_type_byte() {
        let w = CosignatureSigner::generate("w").unwrap();
        let pk = w.verifier().key.to_bytes();
        assert_eq!(w.verifier().key_id(), key_id("w", 0x04, &pk));
        assert_ne!(w.verifier().key_id(), key_id("w", 0x01, &pk));
        // An Ed25519 (0x01) vkey is not a cosignature key, and vice versa.
        let plain = crate::note::Ed25519Verifier::new("w", w.verifier().key).unwrap();
        assert!(matches!(CosignatureVerifier::from_vkey(&plain.vkey()), Err(KeyError::WrongType { .. })));
        assert!(crate::note::Ed25519Verifier::from_vkey(&w.verifier().vkey()).is_err());
    }

    #[test]
    fn rejects_tampered_or_replayed_cosignatures() {
        let (note, _) = signed_checkpoint();
        let w = CosignatureSigner::generate("w").unwrap();
        let v = w.verifier();
        let line = w.cosign(note.text(), 100).unwrap();
        let text = note.text().as_bytes();
        // Another timestamp in the signature.
        let mut sig = line.signature.clone();
        sig[7] ^= 1;
        assert_eq!(v.verify_cosignature(text, &sig), None);
        // Another checkpoint.
        let other = Checkpoint::new("example.com/log", 11, [3; 32]).unwrap().to_text();
        assert_eq!(v.verify_cosignature(other.as_bytes(), &line.signature), None);
        // Wrong lengths, and a timestamp above 2^63-1.
        assert_eq!(v.verify_cosignature(text, &line.signature[..71]), None);
        let mut big = line.signature.clone();
        big[0] = 0x80;
        assert_eq!(v.verify_cosignature(text, &big), None);
        assert!(w.cosign(note.text(), 1 << 63).is_err());
        // A plain Ed25519 signature by the same key is not a cosignature.
        let mut n = Note::new(note.text()).unwrap();
        n.add_signature(NoteSignature {
            name: "w".into(),
            key_id: v.key_id(),
            signature: line.signature[8..].to_vec(),
        })
        .unwrap();
        let known = VerifierSet::new().with(v).unwrap();
        assert!(matches!(n.verify(&known), Err(NoteError::BadSignature { .. })));
    }
}
