//! The entries of sealpod's log: which manifest digest a publisher published
//! under an image name and tag, and when.
//!
//! Encoding, version 1 (all integers big-endian):
//!
//! ```text
//! u8   version = 0x01
//! u16  length of image,            image (UTF-8, "name:tag")
//! u16  length of manifest digest,  manifest digest (ASCII, "sha256:<64 hex>")
//! u16  length of publisher key,    publisher key (libp2p public key protobuf)
//! u64  time (seconds since the Unix epoch)
//! ```
//!
//! Every variable field is length-prefixed and the decoder refuses trailing
//! bytes, unknown versions and fields that break the rules below, so each
//! entry has exactly one encoding and each encoding one entry. An encoded
//! entry is at most 7,318 bytes, well within an entry bundle's 16-bit
//! length prefix. The leaf hash is RFC 6962's `SHA-256(0x00 || encoding)`.

use crate::hash::{leaf_hash, Hash};

/// Version byte of the current encoding.
pub const ENTRY_VERSION: u8 = 1;
/// Longest image reference, in bytes.
pub const MAX_IMAGE_LEN: usize = 1024;
/// Longest publisher key, in bytes (an RSA-4096 libp2p key is about 550).
pub const MAX_PUBLISHER_KEY_LEN: usize = 6 * 1024;

/// An entry that breaks the rules, or bytes that are not an entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    /// The bytes end before the entry does.
    #[error("log entry is truncated in {0}")]
    Truncated(&'static str),
    /// Bytes follow the entry.
    #[error("log entry has {0} trailing bytes")]
    TrailingBytes(usize),
    /// A version this code does not know.
    #[error("log entry version {0} is not supported (this build reads version 1)")]
    UnknownVersion(u8),
    /// The image is not `name:tag` or is too long.
    #[error("image {0:?} is not name:tag (printable, no white space, at most 1024 bytes)")]
    BadImage(String),
    /// The digest is not `sha256:` + 64 or `sha512:` + 128 lowercase hex digits.
    #[error("manifest digest {0:?} is not sha256:<64 hex> or sha512:<128 hex>")]
    BadDigest(String),
    /// The publisher key is empty or too long.
    #[error("publisher key is {0} bytes; it must be 1 to 6144 bytes")]
    BadPublisherKey(usize),
}

/// One published image.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LogEntry {
    /// Image name and tag, `registry.example/team/app:1.2`.
    pub image: String,
    /// Digest of the image manifest, `sha256:…`.
    pub manifest_digest: String,
    /// The publisher's libp2p public key, protobuf-encoded.
    pub publisher_key: Vec<u8>,
    /// Publication time, seconds since the Unix epoch.
    pub time_unix: u64,
}

fn check_image(image: &str) -> Result<(), EntryError> {
    let bad = || EntryError::BadImage(image.chars().take(100).collect());
    if image.is_empty() || image.len() > MAX_IMAGE_LEN || image.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad());
    }
    // The tag follows the last ':' after the last '/' (a ':' before it is a
    // registry port).
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.split_once(':') {
        Some((name, tag)) if !name.is_empty() && !tag.is_empty() && !tag.contains(':') => Ok(()),
        _ => Err(bad()),
    }
}

fn check_digest(digest: &str) -> Result<(), EntryError> {
    let hex_len = match digest.split_once(':') {
        Some(("sha256", hex)) => (hex, 64),
        Some(("sha512", hex)) => (hex, 128),
        _ => return Err(EntryError::BadDigest(digest.chars().take(150).collect())),
    };
    let (hex, len) = hex_len;
    if hex.len() != len || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(EntryError::BadDigest(digest.chars().take(150).collect()));
    }
    Ok(())
}

impl LogEntry {
    /// Checks the rules of each field.
    pub fn validate(&self) -> Result<(), EntryError> {
        check_image(&self.image)?;
        check_digest(&self.manifest_digest)?;
        if self.publisher_key.is_empty() || self.publisher_key.len() > MAX_PUBLISHER_KEY_LEN {
            return Err(EntryError::BadPublisherKey(self.publisher_key.len()));
        }
        Ok(())
    }

    /// The canonical encoding (version 1).
    pub fn encode(&self) -> Result<Vec<u8>, EntryError> {
        self.validate()?;
        let mut out =
            Vec::with_capacity(1 + 6 + 8 + self.image.len() + self.manifest_digest.len() + self.publisher_key.len());
        out.push(ENTRY_VERSION);
        for field in [self.image.as_bytes(), self.manifest_digest.as_bytes(), &self.publisher_key] {
            // Lengths are bounded by validate().
            out.extend_from_slice(&(field.len() as u16).to_be_bytes());
            out.extend_from_slice(field);
        }
        out.extend_from_slice(&self.time_unix.to_be_bytes());
        Ok(out)
    }

    /// Decodes and checks an entry; the inverse of [`LogEntry::encode`].
    pub fn decode(bytes: &[u8]) -> Result<LogEntry, EntryError> {
        let (&version, mut rest) = bytes.split_first().ok_or(EntryError::Truncated("version"))?;
        if version != ENTRY_VERSION {
            return Err(EntryError::UnknownVersion(version));
        }
        let mut field = |what: &'static str| -> Result<&[u8], EntryError> {
            let (len, r) = rest.split_first_chunk::<2>().ok_or(EntryError::Truncated(what))?;
            let len = usize::from(u16::from_be_bytes(*len));
            if r.len() < len {
                return Err(EntryError::Truncated(what));
            }
            let (f, r) = r.split_at(len);
            rest = r;
            Ok(f)
        };
        let image = field("image")?;
        let digest = field("manifest digest")?;
        let publisher_key = field("publisher key")?.to_vec();
        let image = String::from_utf8(image.to_vec())
            .map_err(|_| EntryError::BadImage(String::from_utf8_lossy(image).chars().take(100).collect()))?;
        let manifest_digest = String::from_utf8(digest.to_vec())
            .map_err(|_| EntryError::BadDigest(String::from_utf8_lossy(digest).chars().take(150).collect()))?;
        let (time, trailing) = rest.split_first_chunk::<8>().ok_or(EntryError::Truncated("time"))?;
        if !trailing.is_empty() {
            return Err(EntryError::TrailingBytes(trailing.len()));
        }
        let entry = LogEntry { image, manifest_digest, publisher_key, time_unix: u64::from_be_bytes(*time) };
        entry.validate()?;
        Ok(entry)
    }

    /// The entry's RFC 6962 leaf hash.
    pub fn leaf_hash(&self) -> Result<Hash, EntryError> {
        Ok(leaf_hash(&self.encode()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> LogEntry {
        LogEntry {
            image: "localhost:5000/team/app:1.2".into(),
            manifest_digest: format!("sha256:{}", "ab".repeat(32)),
            publisher_key: vec![8, 1, 18, 32, 7, 7, 7],
            time_unix: 1_700_000_000,
        }
    }

    #[test]
    fn encoding_is_length_prefixed_and_round_trips() {
        let e = entry();
        let bytes = e.encode().unwrap();
        assert_eq!(bytes[0], 1);
        assert_eq!(&bytes[1..3], &(e.image.len() as u16).to_be_bytes());
        assert_eq!(&bytes[bytes.len() - 8..], &1_700_000_000u64.to_be_bytes());
        assert_eq!(LogEntry::decode(&bytes).unwrap(), e);
        assert_eq!(e.leaf_hash().unwrap(), leaf_hash(&bytes));
    }

    #[test]
    fn worst_case_entry_fits_an_entry_bundle() {
        let e = LogEntry {
            image: format!("{}:t", "a".repeat(MAX_IMAGE_LEN - 2)),
            manifest_digest: format!("sha512:{}", "0".repeat(128)),
            publisher_key: vec![1; MAX_PUBLISHER_KEY_LEN],
            time_unix: u64::MAX,
        };
        let len = e.encode().unwrap().len();
        assert_eq!(len, 7318);
        assert!(len <= usize::from(u16::MAX));
    }

    #[test]
    fn rejects_bad_fields() {
        for image in ["", "app", "app:", ":tag", "a b:c", "host:5000/app", "app:1:2", "app:\u{7f}"] {
            let e = LogEntry { image: image.into(), ..entry() };
            assert!(matches!(e.encode(), Err(EntryError::BadImage(_))), "{image:?}");
        }
        for digest in
            ["", "sha256:", "sha256:AB", &format!("sha256:{}", "AB".repeat(32)), &format!("md5:{}", "a".repeat(32))]
        {
            let e = LogEntry { manifest_digest: digest.into(), ..entry() };
            assert!(matches!(e.encode(), Err(EntryError::BadDigest(_))), "{digest:?}");
        }
        let e = LogEntry { publisher_key: vec![], ..entry() };
        assert_eq!(e.encode(), Err(EntryError::BadPublisherKey(0)));
    }

    #[test]
    fn rejects_malformed_encodings() {
        let bytes = entry().encode().unwrap();
        assert_eq!(LogEntry::decode(&[]), Err(EntryError::Truncated("version")));
        let mut v2 = bytes.clone();
        v2[0] = 2;
        assert_eq!(LogEntry::decode(&v2), Err(EntryError::UnknownVersion(2)));
        for cut in 1..bytes.len() {
            assert!(matches!(LogEntry::decode(&bytes[..cut]), Err(EntryError::Truncated(_))), "cut at {cut}");
        }
        let mut long = bytes.clone();
        long.push(0);
        assert_eq!(LogEntry::decode(&long), Err(EntryError::TrailingBytes(1)));
        // A length prefix that runs past the end.
        let mut over = bytes.clone();
        over[1] = 0xff;
        assert!(LogEntry::decode(&over).is_err());
    }
}
