//! Resumable uploads: data appended across several requests (or process
//! restarts), committed under its digest at the end.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::str::FromStr;

use rand::RngCore;
use sha2::{Digest as _, Sha256};

use crate::lock::try_lock_exclusive;
use crate::{Digest, Store, StoreError};

const DATA: &str = "data";
const SCOPE: &str = "scope";

/// An upload's id: 32 lowercase hex digits (128 random bits), so it cannot
/// be guessed and is always a safe file name.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UploadId(String);

impl UploadId {
    pub(crate) fn random() -> UploadId {
        let mut bytes = [0u8; 16];
        rand::thread_rng().fill_bytes(&mut bytes);
        UploadId(hex::encode(bytes))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for UploadId {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<UploadId, StoreError> {
        if s.len() == 32 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            Ok(UploadId(s.to_owned()))
        } else {
            Err(StoreError::UploadUnknown(s.chars().take(64).collect()))
        }
    }
}

impl fmt::Display for UploadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for UploadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

/// A blob being uploaded in pieces.
///
/// Lives in `uploads/<id>/` as the data received so far and the scope (for a
/// registry, the repository) it was started for. The open `Upload` holds an
/// exclusive lock on its data, so one writer at a time appends, across
/// processes too. A SHA-256 state cannot be saved, so
/// [`Store::resume_upload`] re-hashes the data from the start; while the
/// `Upload` stays open, bytes are hashed once, as they arrive.
#[derive(Debug)]
pub struct Upload {
    store: Store,
    id: UploadId,
    dir: PathBuf,
    file: File,
    hasher: Sha256,
    size: u64,
}

/// A point to roll an [`Upload`] back to, e.g. when a request that appends
/// a chunk fails half-way.
#[derive(Debug, Clone)]
pub struct UploadMark {
    hasher: Sha256,
    size: u64,
}

impl Upload {
    pub(crate) fn start(store: &Store, scope: &str) -> Result<Upload, StoreError> {
        let id = UploadId::random();
        let dir = store.upload_dir(&id);
        // Keeps gc away until the data file exists and is locked.
        let _gc = store.lock_shared()?;
        fs::create_dir_all(&dir).map_err(|e| StoreError::io("creating", &dir, e))?;
        let scope_path = dir.join(SCOPE);
        fs::write(&scope_path, scope).map_err(|e| StoreError::io("writing", &scope_path, e))?;
        let data = dir.join(DATA);
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .read(true)
            .open(&data)
            .map_err(|e| StoreError::io("creating", &data, e))?;
        if !try_lock_exclusive(&file).map_err(|e| StoreError::io("locking", &data, e))? {
            return Err(StoreError::UploadBusy(id.to_string()));
        }
        Ok(Upload { store: store.clone(), id, dir, file, hasher: Sha256::new(), size: 0 })
    }

    pub(crate) fn resume(store: &Store, id: &UploadId, scope: &str) -> Result<Upload, StoreError> {
        let dir = store.upload_dir(id);
        let unknown = || StoreError::UploadUnknown(id.to_string());
        let scope_path = dir.join(SCOPE);
        match fs::read(&scope_path) {
            Ok(s) if s == scope.as_bytes() => {}
            Ok(_) => return Err(unknown()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(unknown()),
            Err(e) => return Err(StoreError::io("reading", &scope_path, e)),
        }
        let data = dir.join(DATA);
        let mut file = match OpenOptions::new().append(true).read(true).open(&data) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(unknown()),
            Err(e) => return Err(StoreError::io("opening", &data, e)),
        };
        if !try_lock_exclusive(&file).map_err(|e| StoreError::io("locking", &data, e))? {
            return Err(StoreError::UploadBusy(id.to_string()));
        }
        // The lock is ours, but gc or a commit may have removed the upload
        // between open and lock.
        if !data.exists() {
            return Err(unknown());
        }
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 256 * 1024];
        let mut size = 0u64;
        file.seek(SeekFrom::Start(0)).map_err(|e| StoreError::io("seeking", &data, e))?;
        loop {
            let n = file.read(&mut buf).map_err(|e| StoreError::io("reading", &data, e))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            size += n as u64;
        }
        Ok(Upload { store: store.clone(), id: id.clone(), dir, file, hasher, size })
    }

    /// The upload's id.
    pub fn id(&self) -> &UploadId {
        &self.id
    }

    /// Bytes received so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Remembers the current size and hash state.
    pub fn mark(&self) -> UploadMark {
        UploadMark { hasher: self.hasher.clone(), size: self.size }
    }

    /// Forgets everything appended since `mark`.
    pub fn rollback(&mut self, mark: UploadMark) -> Result<(), StoreError> {
        let data = self.dir.join(DATA);
        self.file.set_len(mark.size).map_err(|e| StoreError::io("truncating", &data, e))?;
        self.hasher = mark.hasher;
        self.size = mark.size;
        Ok(())
    }

    /// Verifies the data against `expected` and stores it as that blob.
    ///
    /// The upload ends either way: on [`StoreError::DigestMismatch`] its data
    /// is deleted, as the client has to start again anyway.
    pub fn commit(self, expected: &Digest) -> Result<Digest, StoreError> {
        let actual = Digest::from_sha256(self.hasher.clone().finalize().into());
        if actual != *expected {
            self.cancel()?;
            return Err(StoreError::DigestMismatch { expected: *expected, actual });
        }
        let data = self.dir.join(DATA);
        self.file.sync_all().map_err(|e| StoreError::io("syncing", &data, e))?;
        self.store
            .install(&actual, |target| fs::rename(&data, target).map_err(|e| StoreError::io("renaming", &data, e)))?;
        self.cancel()?;
        Ok(actual)
    }

    /// Deletes the upload and its data.
    pub fn cancel(self) -> Result<(), StoreError> {
        match fs::remove_dir_all(&self.dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::io("removing", &self.dir, e)),
        }
    }
}

impl Write for Upload {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}
