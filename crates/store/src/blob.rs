//! Writing blobs (hashed as they arrive, committed by an atomic rename) and
//! reading them (hashed as they leave, a mismatch reported at the end).

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;

use sha2::{Digest as _, Sha256};
use tempfile::NamedTempFile;

use crate::lock::FileLock;
use crate::{Digest, Store, StoreError};

/// Prefix of the temporary files blobs are written to before they are
/// renamed to their digest. Never a valid digest file name.
pub(crate) const TEMP_PREFIX: &str = ".tmp-";

/// Creates a uniquely named temporary file in `dir` and locks it, so that
/// gc leaves it alone however old it gets while its writer lives. The
/// caller holds the store's shared lock (`_gc`), so gc cannot look at the
/// file between its creation and its locking.
pub(crate) fn locked_temp_file(dir: &Path, _gc: &FileLock) -> Result<NamedTempFile, StoreError> {
    let file = tempfile::Builder::new()
        .prefix(TEMP_PREFIX)
        .tempfile_in(dir)
        .map_err(|e| StoreError::io("creating a temporary file in", dir, e))?;
    crate::lock::try_lock_exclusive(file.as_file())
        .map_err(|e| StoreError::io("locking", file.path().to_owned(), e))?;
    Ok(file)
}

/// Streams one blob into the store.
///
/// Bytes go to a uniquely named temporary file next to the final one and
/// into a SHA-256 state as they arrive. [`Writer::commit`] checks the digest
/// and size, fsyncs, and renames the file to its digest, so a blob is either
/// complete under its name or absent. Dropping a writer without committing
/// deletes the temporary file; a crash leaves it under its temporary name,
/// where [`Store::gc`] finds it later.
#[derive(Debug)]
pub struct Writer {
    store: Store,
    file: NamedTempFile,
    hasher: Sha256,
    written: u64,
    expected_digest: Option<Digest>,
    expected_size: Option<u64>,
}

impl Writer {
    pub(crate) fn new(
        store: Store,
        expected_digest: Option<Digest>,
        expected_size: Option<u64>,
    ) -> Result<Writer, StoreError> {
        let file = locked_temp_file(&store.blob_dir(), &store.lock_shared()?)?;
        Ok(Writer { store, file, hasher: Sha256::new(), written: 0, expected_digest, expected_size })
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Verifies what was written and makes it visible under its digest.
    ///
    /// Fails with [`StoreError::DigestMismatch`] or [`StoreError::SizeMismatch`]
    /// if the content is not what was announced; nothing is stored then. If
    /// the blob is already stored (another writer was faster), the
    /// temporary file is dropped and the existing blob kept.
    pub fn commit(self) -> Result<Digest, StoreError> {
        let actual = Digest::from_sha256(self.hasher.finalize().into());
        if let Some(expected) = self.expected_size {
            if expected != self.written {
                return Err(StoreError::SizeMismatch { expected, actual: self.written });
            }
        }
        if let Some(expected) = self.expected_digest {
            if expected != actual {
                return Err(StoreError::DigestMismatch { expected, actual });
            }
        }
        let tmp_path = self.file.path().to_owned();
        self.file.as_file().sync_all().map_err(|e| StoreError::io("syncing", &tmp_path, e))?;
        let store = self.store;
        let file = self.file;
        store.install(&actual, |target| {
            file.persist(target).map(drop).map_err(|e| StoreError::io("renaming", &tmp_path, e.error))
        })?;
        Ok(actual)
    }
}

impl Write for Writer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(limit) = self.expected_size {
            if self.written + buf.len() as u64 > limit {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("more than the announced {limit} bytes of blob content"),
                ));
            }
        }
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// Reads one stored blob, hashing as it goes.
///
/// When the end of the file is reached and the content does not hash to the
/// blob's digest, `read` fails with an [`io::ErrorKind::InvalidData`] error
/// wrapping [`StoreError::Corrupt`] instead of reporting the end, so a
/// consumer that reads to the end never mistakes a corrupt blob for a good
/// one. Whoever sends bytes before the end (a registry streaming a
/// response) must abort the transfer on that error.
#[derive(Debug)]
pub struct Reader {
    file: File,
    hasher: Sha256,
    digest: Digest,
    len: u64,
    checked: bool,
}

impl Reader {
    pub(crate) fn open(path: &Path, digest: Digest) -> Result<Reader, StoreError> {
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(StoreError::BlobUnknown(digest)),
            Err(e) => return Err(StoreError::io("opening", path, e)),
        };
        let len = file.metadata().map_err(|e| StoreError::io("reading metadata of", path, e))?.len();
        Ok(Reader { file, hasher: Sha256::new(), digest, len, checked: false })
    }

    /// The blob's size in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the blob is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The digest being verified.
    pub fn digest(&self) -> Digest {
        self.digest
    }
}

impl Read for Reader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read(buf)?;
        if n > 0 {
            self.hasher.update(&buf[..n]);
        } else if !buf.is_empty() && !self.checked {
            self.checked = true;
            let actual = Digest::from_sha256(std::mem::take(&mut self.hasher).finalize().into());
            if actual != self.digest {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    StoreError::Corrupt { digest: self.digest, actual },
                ));
            }
        }
        Ok(n)
    }
}
