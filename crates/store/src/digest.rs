//! `sha256:<hex>` content digests (OCI image-spec `descriptor.md`, "Digests").

use std::fmt;
use std::str::FromStr;

use sha2::{Digest as _, Sha256};

/// The algorithm every digest in the store uses.
pub const SHA256: &str = "sha256";

/// A SHA-256 content digest, written `sha256:<64 lowercase hex digits>`.
///
/// Only SHA-256 is stored: the OCI spec lets registries refuse other
/// algorithms, and one algorithm keeps one name per blob.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    bytes: [u8; 32],
}

/// Why a string is not a digest the store accepts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    /// Not `algorithm:encoded` as the OCI grammar has it.
    #[error("{0:?} is not a digest: expected sha256:<64 lowercase hex digits>")]
    Malformed(String),
    /// Well-formed, but an algorithm other than sha256.
    #[error("digest algorithm {0:?} is not supported: use sha256")]
    UnsupportedAlgorithm(String),
}

impl Digest {
    /// The digest with these raw SHA-256 bytes.
    pub fn from_sha256(bytes: [u8; 32]) -> Digest {
        Digest { bytes }
    }

    /// The digest of `data`.
    pub fn of(data: &[u8]) -> Digest {
        Digest::from_sha256(Sha256::digest(data).into())
    }

    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.bytes
    }

    /// The 64 lowercase hex digits after `sha256:`; also the blob's file name.
    pub fn hex(&self) -> String {
        hex::encode(self.bytes)
    }

    /// Parses the 64 hex digits alone (a blob's file name).
    pub fn from_hex(hex_digits: &str) -> Option<Digest> {
        if hex_digits.len() != 64 || !hex_digits.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return None;
        }
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(hex_digits, &mut bytes).ok()?;
        Some(Digest { bytes })
    }
}

/// `algorithm ::= component ([+._-] component)*`, `component ::= [a-z0-9]+`.
fn is_algorithm(s: &str) -> bool {
    !s.is_empty()
        && s.split(['+', '.', '_', '-'])
            .all(|c| !c.is_empty() && c.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()))
}

/// `encoded ::= [a-zA-Z0-9=_-]+`.
fn is_encoded(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'=' | b'_' | b'-'))
}

impl FromStr for Digest {
    type Err = DigestError;

    fn from_str(s: &str) -> Result<Digest, DigestError> {
        let malformed = || DigestError::Malformed(s.chars().take(100).collect());
        let (algorithm, encoded) = s.split_once(':').ok_or_else(malformed)?;
        if !is_algorithm(algorithm) || !is_encoded(encoded) {
            return Err(malformed());
        }
        if algorithm != SHA256 {
            return Err(DigestError::UnsupportedAlgorithm(algorithm.chars().take(100).collect()));
        }
        Digest::from_hex(encoded).ok_or_else(malformed)
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SHA256}:{}", self.hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn digest_of_empty_input_is_the_well_known_one() {
        assert_eq!(Digest::of(b"").to_string(), EMPTY);
        assert_eq!(EMPTY.parse::<Digest>().unwrap(), Digest::of(b""));
    }

    #[test]
    fn rejects_malformed_and_foreign_digests() {
        for bad in [
            "",
            "sha256",
            "sha256:",
            ":abc",
            "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b85",
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b8555",
            "sha256:../../etc/passwd",
            "SHA256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        ] {
            assert!(matches!(bad.parse::<Digest>(), Err(DigestError::Malformed(_))), "{bad}");
        }
        assert_eq!("sha512:abcd".parse::<Digest>(), Err(DigestError::UnsupportedAlgorithm("sha512".into())));
    }
}
