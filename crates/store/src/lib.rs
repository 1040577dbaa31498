//! sealpod's content store: blobs on disk, named by their SHA-256 digest,
//! and the repositories, tags and manifests that keep them alive.
//!
//! What it does:
//!
//! * stores blobs under `blobs/sha256/<hex>` — written through a [`Writer`]
//!   that hashes while bytes arrive and commits by an atomic rename of a
//!   uniquely named temporary file in the same directory, after `fsync`, only
//!   if the digest (and size) match; a crash or a dropped writer never leaves
//!   a partial blob under a digest name;
//! * reads them through a [`Reader`] that hashes while bytes leave and turns
//!   a mismatch into an `InvalidData` error at the end, plus
//!   [`Store::verify`] for a full check — never a whole blob in memory;
//! * keeps resumable [`Upload`]s (`uploads/<id>/`) that survive a restart
//!   and are committed under their digest at the end;
//! * records per-repository manifests and tags
//!   (`repositories/<name>/_manifests/{revisions,tags}`), validating that a
//!   manifest is an OCI or Docker v2 manifest or index whose blobs are all
//!   present;
//! * garbage-collects ([`Store::gc`]) by mark and sweep: every manifest
//!   recorded in a repository is a root; what its config, layers and child
//!   manifests reach is kept, other blobs older than a grace period are
//!   removed, as are temporary files and uploads left behind long ago.
//!
//! Several threads and processes may use one store at once. Blob names are
//! final once visible; committing a blob or manifest takes a shared
//! `flock` on `gc.lock` and gc takes it exclusively, so gc never sweeps a
//! blob between a manifest's existence check and its recording. The grace
//! period covers blobs pushed before the manifest that will reference
//! them. An open [`Upload`] holds an exclusive lock on its data.
//!
//! What it leaves to others: HTTP (the `registry` crate speaks the OCI
//! distribution API over this store), peer-to-peer transfer (`net`), trust
//! decisions (`tlog`), layer unpacking and full document types (`oci`,
//! `oci-spec`). Only SHA-256 digests are stored.
//!
//! Specifications: OCI image-spec v1.1 (`descriptor.md` digests,
//! `manifest.md`, `image-index.md`), Docker image manifest v2 schema 2,
//! and the name, tag and digest grammars of the OCI distribution spec.
//! Hand-written here: the name grammar (a few lines, no regex engine) and
//! the descriptor walk; hashing is RustCrypto's `sha2`, locking `rustix`.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod blob;
mod digest;
mod error;
mod gc;
mod lock;
mod manifest;
mod name;
mod repo;
mod upload;

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

pub use blob::{PieceWriter, Reader, Writer};
pub use digest::{Digest, DigestError, SHA256};
pub use error::StoreError;
pub use gc::{GcOptions, GcReport};
pub use manifest::{media_type, DescriptorRef, ParsedManifest, MAX_MANIFEST_SIZE};
pub use name::{NameError, Reference, RepositoryName, Tag, MAX_NAME_LEN, MAX_TAG_LEN, PRIVATE_REPOSITORY};
pub use repo::StoredManifest;
pub use upload::{Upload, UploadId, UploadMark};

use lock::FileLock;

const COPY_BUFFER: usize = 256 * 1024;

/// A content store rooted at one directory. Cheap to clone; clones share
/// the directory.
#[derive(Debug, Clone)]
pub struct Store {
    root: Arc<PathBuf>,
}

impl Store {
    /// Opens the store at `root`, creating its directories as needed.
    pub fn open(root: impl Into<PathBuf>) -> Result<Store, StoreError> {
        let store = Store { root: Arc::new(root.into()) };
        for dir in [store.blob_dir(), store.root.join("uploads"), store.root.join("repositories")] {
            fs::create_dir_all(&dir).map_err(|e| StoreError::io("creating", &dir, e))?;
        }
        Ok(store)
    }

    /// The store's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    pub(crate) fn blob_dir(&self) -> PathBuf {
        self.root.join("blobs").join(SHA256)
    }

    fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.blob_dir().join(digest.hex())
    }

    pub(crate) fn upload_dir(&self, id: &UploadId) -> PathBuf {
        self.root.join("uploads").join(id.as_str())
    }

    fn lock_path(&self) -> PathBuf {
        self.root.join("gc.lock")
    }

    pub(crate) fn lock_shared(&self) -> Result<FileLock, StoreError> {
        FileLock::shared(&self.lock_path())
    }

    /// Makes a verified file visible as blob `digest`, unless it is already
    /// there (then `put` is not called and the existing blob's mtime is
    /// refreshed so gc's grace period starts again).
    pub(crate) fn install(
        &self,
        digest: &Digest,
        put: impl FnOnce(&Path) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let _lock = self.lock_shared()?;
        self.install_locked(digest, put)
    }

    fn install_locked(
        &self,
        digest: &Digest,
        put: impl FnOnce(&Path) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let target = self.blob_path(digest);
        match File::options().append(true).open(&target) {
            Ok(existing) => {
                existing.set_modified(SystemTime::now()).map_err(|e| StoreError::io("touching", &target, e))?;
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                put(&target)?;
                sync_dir(&self.blob_dir())
            }
            Err(e) => Err(StoreError::io("opening", &target, e)),
        }
    }

    /// The size of blob `digest`, or `None` if it is not stored.
    pub fn blob_size(&self, digest: &Digest) -> Result<Option<u64>, StoreError> {
        let path = self.blob_path(digest);
        match fs::metadata(&path) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::io("reading metadata of", path, e)),
        }
    }

    /// Whether blob `digest` is stored.
    pub fn contains(&self, digest: &Digest) -> Result<bool, StoreError> {
        Ok(self.blob_size(digest)?.is_some())
    }

    /// Opens blob `digest` for reading, verified as it is read.
    pub fn reader(&self, digest: &Digest) -> Result<Reader, StoreError> {
        Reader::open(&self.blob_path(digest), *digest)
    }

    /// Blob `digest`'s size and its file positioned at `offset`, *not*
    /// verified: a range cannot be checked against the digest of the whole.
    /// Only for sending a range to a receiver that verifies the whole blob
    /// (a peer fetching it in pieces); everything else uses
    /// [`Store::reader`].
    pub fn unverified_range(&self, digest: &Digest, offset: u64) -> Result<(u64, std::fs::File), StoreError> {
        use std::io::Seek as _;
        let path = self.blob_path(digest);
        let mut file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(StoreError::BlobUnknown(*digest)),
            Err(e) => return Err(StoreError::io("opening", path, e)),
        };
        let size = file.metadata().map_err(|e| StoreError::io("reading metadata of", &path, e))?.len();
        file.seek(io::SeekFrom::Start(offset.min(size))).map_err(|e| StoreError::io("seeking in", &path, e))?;
        Ok((size, file))
    }

    /// A writer for a blob whose digest is known only at the end.
    pub fn writer(&self) -> Result<Writer, StoreError> {
        Writer::new(self.clone(), None, None)
    }

    /// A writer that commits only content hashing to `digest` (and, if
    /// given, exactly `size` bytes long; more is refused while writing).
    pub fn writer_expecting(&self, digest: Digest, size: Option<u64>) -> Result<Writer, StoreError> {
        Writer::new(self.clone(), Some(digest), size)
    }

    /// Stores `bytes` as a blob.
    pub fn put(&self, bytes: &[u8]) -> Result<Digest, StoreError> {
        let mut w = self.writer()?;
        w.write_all(bytes).map_err(|e| StoreError::io("writing blob in", self.blob_dir(), e))?;
        w.commit()
    }

    /// Reads a whole blob of at most `limit` bytes, verified.
    pub fn read_to_vec(&self, digest: &Digest, limit: u64) -> Result<Vec<u8>, StoreError> {
        let reader = self.reader(digest)?;
        if reader.len() > limit {
            return Err(StoreError::TooLarge { what: "blob", limit });
        }
        let mut bytes = Vec::with_capacity(reader.len() as usize);
        reader.take(limit + 1).read_to_end(&mut bytes).map_err(|e| self.read_error(digest, e))?;
        if bytes.len() as u64 > limit {
            return Err(StoreError::TooLarge { what: "blob", limit });
        }
        Ok(bytes)
    }

    /// Reads blob `digest` in full and checks that it hashes to its name.
    pub fn verify(&self, digest: &Digest) -> Result<(), StoreError> {
        let mut reader = self.reader(digest)?;
        io::copy(&mut reader, &mut io::sink()).map_err(|e| self.read_error(digest, e))?;
        Ok(())
    }

    /// Turns a [`Reader`]'s io error back into the typed one.
    fn read_error(&self, digest: &Digest, e: io::Error) -> StoreError {
        if e.kind() == io::ErrorKind::InvalidData {
            if let Some(StoreError::Corrupt { digest, actual }) =
                e.get_ref().and_then(|i| i.downcast_ref::<StoreError>())
            {
                return StoreError::Corrupt { digest: *digest, actual: *actual };
            }
        }
        StoreError::io("reading", self.blob_path(digest), e)
    }

    /// Removes blob `digest` (e.g. after [`Store::verify`] found it corrupt).
    /// Returns whether it was there.
    pub fn remove_blob(&self, digest: &Digest) -> Result<bool, StoreError> {
        let _lock = self.lock_shared()?;
        let path = self.blob_path(digest);
        match fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(StoreError::io("removing", path, e)),
        }
    }

    /// Starts a resumable upload on behalf of `scope` (a registry passes the
    /// repository name); only the same scope can resume it.
    pub fn start_upload(&self, scope: &str) -> Result<Upload, StoreError> {
        Upload::start(self, scope)
    }

    /// Reopens upload `id`, re-hashing the data received so far.
    pub fn resume_upload(&self, id: &UploadId, scope: &str) -> Result<Upload, StoreError> {
        Upload::resume(self, id, scope)
    }

    /// Streams everything `reader` yields into the store.
    pub fn put_from(&self, mut reader: impl Read) -> Result<Digest, StoreError> {
        let mut w = self.writer()?;
        let mut buf = vec![0u8; COPY_BUFFER];
        loop {
            let n = reader.read(&mut buf).map_err(|e| StoreError::io("reading input for", self.blob_dir(), e))?;
            if n == 0 {
                break;
            }
            w.write_all(&buf[..n]).map_err(|e| StoreError::io("writing blob in", self.blob_dir(), e))?;
        }
        w.commit()
    }
}

/// Writes `bytes` to `path` atomically: a temporary file beside it, fsync,
/// rename, fsync of the directory.
/// The caller holds the store's shared lock.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8], gc: &FileLock) -> Result<(), StoreError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(|e| StoreError::io("creating", dir, e))?;
    let mut tmp = blob::locked_temp_file(dir, gc)?;
    tmp.write_all(bytes).map_err(|e| StoreError::io("writing", tmp.path().to_owned(), e))?;
    tmp.as_file().sync_all().map_err(|e| StoreError::io("syncing", tmp.path().to_owned(), e))?;
    tmp.persist(path).map_err(|e| StoreError::io("renaming", path, e.error))?;
    sync_dir(dir)
}

/// Makes a rename in `dir` durable.
fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| StoreError::io("syncing directory", dir, e))
}
