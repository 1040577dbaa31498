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

    /// A second handle on the file being written, for reading the bytes
    /// while they arrive (a registry serving a blob that is still coming in
    /// from a peer). Use positional reads (`FileExt::read_at`): the handle
    /// shares the writer's file offset. What it reads is not verified yet;
    /// whoever sends it on must wait for [`Writer::commit`] before sending
    /// the end.
    pub fn follower(&self) -> io::Result<File> {
        self.file.as_file().try_clone()
    }

    /// A handle that writes pieces of the blob at their offsets, out of
    /// order and from several tasks at once (a blob fetched from several
    /// peers in parallel). Pieces are not hashed when written: the writer
    /// takes them in with [`Writer::absorb`] once everything before them is
    /// in. Writes past `size` are refused.
    pub fn pieces(&self, size: u64) -> io::Result<PieceWriter> {
        Ok(PieceWriter { file: self.file.as_file().try_clone()?, size })
    }

    /// Hashes the next `len` bytes, already written at the current end by a
    /// [`PieceWriter`], and counts them as written.
    pub fn absorb(&mut self, len: u64) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        if let Some(limit) = self.expected_size {
            if self.written + len > limit {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("more than the announced {limit} bytes of blob content"),
                ));
            }
        }
        let mut buf = vec![0u8; (len as usize).min(ABSORB_CHUNK)];
        let end = self.written + len;
        while self.written < end {
            let want = ((end - self.written) as usize).min(buf.len());
            let n = self.file.as_file().read_at(&mut buf[..want], self.written)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("no piece written at offset {}", self.written),
                ));
            }
            self.hasher.update(&buf[..n]);
            self.written += n as u64;
        }
        Ok(())
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
        let on_disk =
            self.file.as_file().metadata().map_err(|e| StoreError::io("reading metadata of", &tmp_path, e))?;
        if on_disk.len() != self.written {
            // Pieces past what was hashed: the blob is not what was verified.
            return Err(StoreError::SizeMismatch { expected: self.written, actual: on_disk.len() });
        }
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
        // Positional, so that pieces absorbed in between do not matter.
        let n = std::os::unix::fs::FileExt::write_at(self.file.as_file(), buf, self.written)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// Size of the reads [`Writer::absorb`] hashes in.
const ABSORB_CHUNK: usize = 1 << 20;

/// Writes pieces of a blob at their offsets (see [`Writer::pieces`]).
#[derive(Debug)]
pub struct PieceWriter {
    file: File,
    size: u64,
}

impl PieceWriter {
    /// Writes `buf` at `offset`.
    pub fn write_at(&self, offset: u64, buf: &[u8]) -> io::Result<()> {
        if offset.checked_add(buf.len() as u64).is_none_or(|end| end > self.size) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("a piece at {offset}+{} runs past the blob's {} bytes", buf.len(), self.size),
            ));
        }
        std::os::unix::fs::FileExt::write_all_at(&self.file, buf, offset)
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
