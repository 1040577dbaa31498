//! Content digests (OCI image-spec `descriptor.md` § Digests) and readers
//! that verify a blob's size and digest while it streams through.

use std::io::{self, Read, Write};
use std::sync::{Arc, Mutex};

use sha2::{Digest as _, Sha256, Sha512};

use crate::OciError;

/// A digest algorithm this crate can verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Algorithm {
    Sha256,
    Sha512,
}

impl Algorithm {
    fn name(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }
}

/// A validated `algorithm:hex` digest. Validation matters beyond correctness:
/// the hex part becomes a file name under `blobs/`, so it must never contain
/// a path separator or `..`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BlobDigest {
    algorithm: Algorithm,
    hex: String,
}

impl BlobDigest {
    /// Parses a digest string, naming `blob` in the error.
    pub(crate) fn parse(blob: &str, digest: &str) -> Result<Self, OciError> {
        let unsupported = || OciError::UnsupportedDigest { blob: blob.to_owned(), digest: digest.to_owned() };
        let (alg, hex) = digest.split_once(':').ok_or_else(unsupported)?;
        let algorithm = match alg {
            "sha256" => Algorithm::Sha256,
            "sha512" => Algorithm::Sha512,
            _ => return Err(unsupported()),
        };
        let valid_hex =
            hex.len() == algorithm.hex_len() && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !valid_hex {
            return Err(OciError::InvalidDocument {
                blob: blob.to_owned(),
                reason: format!(
                    "digest {digest:?} is not {alg}: followed by {} lowercase hex digits",
                    algorithm.hex_len()
                ),
            });
        }
        Ok(BlobDigest { algorithm, hex: hex.to_owned() })
    }

    /// The path of this blob inside an OCI layout (`image-layout.md` § Blobs).
    pub(crate) fn layout_path(&self) -> String {
        format!("blobs/{}/{}", self.algorithm.name(), self.hex)
    }

    pub(crate) fn hasher(&self) -> Hasher {
        Hasher::new(self.algorithm)
    }
}

impl std::fmt::Display for BlobDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.algorithm.name(), self.hex)
    }
}

/// An incremental hash of either supported algorithm.
#[derive(Clone)]
pub(crate) enum Hasher {
    Sha256(Sha256),
    Sha512(Sha512),
}

impl Hasher {
    pub(crate) fn new(algorithm: Algorithm) -> Self {
        match algorithm {
            Algorithm::Sha256 => Hasher::Sha256(Sha256::new()),
            Algorithm::Sha512 => Hasher::Sha512(Sha512::new()),
        }
    }

    pub(crate) fn sha256() -> Self {
        Hasher::new(Algorithm::Sha256)
    }

    pub(crate) fn update(&mut self, bytes: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(bytes),
            Hasher::Sha512(h) => h.update(bytes),
        }
    }

    /// `algorithm:hex` of everything hashed so far.
    pub(crate) fn finish(self) -> String {
        match self {
            Hasher::Sha256(h) => format!("sha256:{}", hex::encode(h.finalize())),
            Hasher::Sha512(h) => format!("sha512:{}", hex::encode(h.finalize())),
        }
    }
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    let mut h = Hasher::sha256();
    h.update(bytes);
    h.finish()
}

/// What a [`VerifyingReader`] concluded, shared with whoever drives it so that
/// a mismatch can be reported as such even when a decompressor or the tar
/// parser above it wraps the I/O error into something vaguer.
#[derive(Clone, Default)]
pub(crate) struct Verdict(Arc<Mutex<VerdictState>>);

#[derive(Clone, Default)]
enum VerdictState {
    #[default]
    Pending,
    Verified,
    Failed(Mismatch),
}

#[derive(Clone, Debug)]
enum Mismatch {
    Size { expected: u64, actual: u64 },
    Digest { expected: String, actual: String },
}

impl Verdict {
    fn set(&self, state: VerdictState) {
        // A poisoned lock only means another thread panicked mid-update of a
        // plain enum; the value is still meaningful.
        let mut guard = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *guard = state;
    }

    fn get(&self) -> VerdictState {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The mismatch found so far, as an error naming `blob`.
    pub(crate) fn failure(&self, blob: &str) -> Option<OciError> {
        match self.get() {
            VerdictState::Failed(m) => Some(m.into_error(blob)),
            _ => None,
        }
    }

    /// Whether the whole blob was read and matched.
    pub(crate) fn is_verified(&self) -> bool {
        matches!(self.get(), VerdictState::Verified)
    }
}

impl Mismatch {
    fn into_error(self, blob: &str) -> OciError {
        match self {
            Mismatch::Size { expected, actual } => OciError::SizeMismatch { blob: blob.to_owned(), expected, actual },
            Mismatch::Digest { expected, actual } => {
                OciError::DigestMismatch { blob: blob.to_owned(), expected, actual }
            }
        }
    }
}

/// Hashes and counts the bytes of a blob as they are read; at end of input
/// checks them against the expected size and digest. A mismatch turns into
/// an [`io::Error`] of kind `InvalidData` whose inner error is the
/// [`OciError`], and is also recorded in the shared [`Verdict`].
pub(crate) struct VerifyingReader<R> {
    inner: R,
    blob: String,
    expected_digest: String,
    expected_size: Option<u64>,
    hasher: Option<Hasher>,
    count: u64,
    verdict: Verdict,
}

impl<R: Read> VerifyingReader<R> {
    pub(crate) fn new(inner: R, blob: String, digest: &BlobDigest, size: Option<u64>) -> Self {
        VerifyingReader {
            inner,
            blob,
            expected_digest: digest.to_string(),
            expected_size: size,
            hasher: Some(digest.hasher()),
            count: 0,
            verdict: Verdict::default(),
        }
    }

    pub(crate) fn verdict(&self) -> Verdict {
        self.verdict.clone()
    }

    fn fail(&mut self, mismatch: Mismatch) -> io::Error {
        self.hasher = None;
        self.verdict.set(VerdictState::Failed(mismatch.clone()));
        io::Error::new(io::ErrorKind::InvalidData, mismatch.into_error(&self.blob))
    }
}

impl<R: Read> Read for VerifyingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(err) = self.verdict.failure(&self.blob) {
            return Err(io::Error::new(io::ErrorKind::InvalidData, err));
        }
        let Some(hasher) = self.hasher.as_mut() else {
            return Ok(0); // already verified
        };
        let n = self.inner.read(buf)?;
        if n == 0 {
            if let Some(expected) = self.expected_size {
                if self.count != expected {
                    return Err(self.fail(Mismatch::Size { expected, actual: self.count }));
                }
            }
            let actual = self.hasher.take().map(Hasher::finish).unwrap_or_default();
            if actual != self.expected_digest {
                let expected = self.expected_digest.clone();
                return Err(self.fail(Mismatch::Digest { expected, actual }));
            }
            self.verdict.set(VerdictState::Verified);
            return Ok(0);
        }
        hasher.update(&buf[..n]);
        self.count += n as u64;
        if let Some(expected) = self.expected_size {
            if self.count > expected {
                return Err(self.fail(Mismatch::Size { expected, actual: self.count }));
            }
        }
        Ok(n)
    }
}

/// Passes writes through while hashing and counting them.
pub(crate) struct HashingWriter<W> {
    pub(crate) inner: W,
    /// `None` when what is written was verified against its digest already.
    hasher: Option<Hasher>,
    count: u64,
}

impl<W: Write> HashingWriter<W> {
    pub(crate) fn new(inner: W) -> Self {
        HashingWriter { inner, hasher: Some(Hasher::sha256()), count: 0 }
    }

    /// Counts without hashing.
    pub(crate) fn counting(inner: W) -> Self {
        HashingWriter { inner, hasher: None, count: 0 }
    }

    /// The inner writer, the `sha256:` digest (empty when only counting)
    /// and the byte count.
    pub(crate) fn finish(self) -> (W, String, u64) {
        (self.inner, self.hasher.map(Hasher::finish).unwrap_or_default(), self.count)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        if let Some(h) = self.hasher.as_mut() {
            h.update(&buf[..n]);
        }
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Digs an [`OciError`] out of an I/O error produced somewhere above a
    /// [`VerifyingReader`].
    fn oci_error_in(err: &io::Error) -> Option<&OciError> {
        let mut cur: &(dyn std::error::Error + 'static) = err.get_ref()?;
        loop {
            if let Some(e) = cur.downcast_ref::<OciError>() {
                return Some(e);
            }
            cur = cur.source()?;
        }
    }

    const EMPTY_SHA256: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn rejects_digest_that_could_escape_blobs_dir() {
        let err = BlobDigest::parse("x", "sha256:../../../../etc/passwd").unwrap_err();
        assert!(matches!(err, OciError::InvalidDocument { .. }), "{err}");
        let err = BlobDigest::parse("x", "md5:abcd").unwrap_err();
        assert!(matches!(err, OciError::UnsupportedDigest { .. }), "{err}");
        let upper = EMPTY_SHA256.to_uppercase().replace("SHA256", "sha256");
        assert!(BlobDigest::parse("x", &upper).is_err());
    }

    #[test]
    fn verifying_reader_accepts_matching_blob() {
        let d = BlobDigest::parse("x", EMPTY_SHA256).unwrap();
        let mut r = VerifyingReader::new(&b""[..], "x".into(), &d, Some(0));
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        assert!(r.verdict().is_verified());
    }

    #[test]
    fn verifying_reader_reports_typed_mismatches() {
        let d = BlobDigest::parse("x", EMPTY_SHA256).unwrap();
        let mut r = VerifyingReader::new(&b"abc"[..], "blob x".into(), &d, Some(3));
        let err = r.read_to_end(&mut Vec::new()).unwrap_err();
        assert!(matches!(oci_error_in(&err), Some(OciError::DigestMismatch { .. })));
        assert!(r.verdict().failure("blob x").is_some());

        let mut r = VerifyingReader::new(&b"abc"[..], "blob x".into(), &d, Some(2));
        let err = r.read_to_end(&mut Vec::new()).unwrap_err();
        assert!(matches!(oci_error_in(&err), Some(OciError::SizeMismatch { .. })));
    }
}
