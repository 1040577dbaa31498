use std::io;
use std::path::PathBuf;

use crate::Digest;

/// What went wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file-system operation failed.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What the store was doing, e.g. "renaming".
        action: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// No blob with this digest is stored.
    #[error("blob {0} is not in the store")]
    BlobUnknown(Digest),
    /// A stored blob's bytes no longer hash to its name.
    #[error("blob {digest} is corrupt on disk (its content hashes to {actual}); remove it and fetch it again")]
    Corrupt {
        /// The blob's name.
        digest: Digest,
        /// What its content hashes to now.
        actual: Digest,
    },
    /// Written content does not hash to the digest the writer was promised.
    #[error("the content hashes to {actual}, not to the expected {expected}")]
    DigestMismatch {
        /// The digest the caller announced.
        expected: Digest,
        /// The digest of what arrived.
        actual: Digest,
    },
    /// Written content is not as long as announced.
    #[error("the content is {actual} bytes long, not the expected {expected}")]
    SizeMismatch {
        /// The size the caller announced.
        expected: u64,
        /// The size of what arrived.
        actual: u64,
    },
    /// Content is longer than a limit.
    #[error("{what} is larger than the limit of {limit} bytes")]
    TooLarge {
        /// What was too large, e.g. "manifest".
        what: &'static str,
        /// The limit in bytes.
        limit: u64,
    },
    /// No such upload (finished, cancelled, expired, another repository's, or never started).
    #[error("upload {0} is unknown: start a new one")]
    UploadUnknown(String),
    /// Another writer (maybe another process) holds this upload.
    #[error("upload {0} is being written by someone else; retry when that request has finished")]
    UploadBusy(String),
    /// The manifest is not a valid OCI or Docker v2 manifest or index.
    #[error("invalid manifest: {0}")]
    ManifestInvalid(String),
    /// The manifest names blobs or child manifests the store does not hold.
    #[error("the manifest references {} blob(s) not in the store, first {}: push them before the manifest", .0.len(), .0[0])]
    ManifestBlobUnknown(Vec<Digest>),
    /// The repository holds no such manifest (or tag).
    #[error("repository {repository} has no manifest {reference}")]
    ManifestUnknown {
        /// The repository asked.
        repository: String,
        /// The tag or digest asked.
        reference: String,
    },
    /// The repository does not exist.
    #[error("repository {0} is unknown")]
    NameUnknown(String),
}

impl StoreError {
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> StoreError {
        StoreError::Io { action, path: path.into(), source }
    }
}
