//! The one error type of this crate.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong while reading, verifying, unpacking or
/// building an image.
///
/// Blob-related variants carry a `blob` string that names the blob the way a
/// person would look for it, e.g. `manifest sha256:3012…` or
/// `layer 2 (sha256:7ce6…)`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OciError {
    /// A filesystem operation failed.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What we were doing, e.g. "reading", "creating directory".
        action: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// An image reference string could not be understood.
    #[error("invalid image reference {reference:?}: {reason}")]
    InvalidReference {
        /// The reference as given.
        reference: String,
        /// Why it was rejected, and what the accepted forms are.
        reason: String,
    },

    /// The path exists but holds neither an OCI layout nor a known archive.
    #[error("{} is not a container image: {reason}", path.display())]
    NotAnImage {
        /// The path that was inspected.
        path: PathBuf,
        /// What was missing.
        reason: String,
    },

    /// The archive is compressed as a whole; only plain tar archives are read.
    #[error("{} is a compressed archive; decompress it first (e.g. `gunzip`), sealpod reads plain tar archives", path.display())]
    CompressedArchive {
        /// The archive.
        path: PathBuf,
    },

    /// No image in the index carries the requested tag.
    #[error("no image tagged {tag:?} in {}; available: {}", path.display(), list_or_none(available))]
    TagNotFound {
        /// The tag (or docker name) asked for.
        tag: String,
        /// The layout or archive searched.
        path: PathBuf,
        /// The tags that exist.
        available: Vec<String>,
    },

    /// Several images match and nothing says which one is meant.
    #[error("{} holds several images ({}); name one with :TAG", path.display(), list_or_none(available))]
    AmbiguousImage {
        /// The layout or archive searched.
        path: PathBuf,
        /// The tags (or digests) of the candidates.
        available: Vec<String>,
    },

    /// A multi-platform index has no manifest for the wanted platform.
    #[error("no manifest for platform {wanted} in {blob}; available: {}", list_or_none(available))]
    NoMatchingPlatform {
        /// The platform asked for, e.g. `linux/amd64`.
        wanted: String,
        /// The index searched.
        blob: String,
        /// Platforms present in the index.
        available: Vec<String>,
    },

    /// A JSON document (index, manifest, config) is not valid for its schema.
    #[error("malformed {blob}: {source}")]
    MalformedJson {
        /// The document.
        blob: String,
        /// The parser's complaint.
        #[source]
        source: serde_json::Error,
    },

    /// A document parsed but breaks a rule of the spec.
    #[error("invalid {blob}: {reason}")]
    InvalidDocument {
        /// The document.
        blob: String,
        /// The rule that was broken.
        reason: String,
    },

    /// A blob is larger than we are willing to hold in memory.
    #[error("{blob} is {size} bytes, more than the limit of {limit} bytes")]
    BlobTooLarge {
        /// The blob.
        blob: String,
        /// Its declared or actual size.
        size: u64,
        /// The limit.
        limit: u64,
    },

    /// A blob named by a descriptor is not present.
    #[error("{blob} is missing (looked for {location})")]
    BlobMissing {
        /// The blob.
        blob: String,
        /// Where it should have been.
        location: String,
    },

    /// A blob does not have the size its descriptor declares.
    #[error("{blob} has size {actual}, but its descriptor says {expected}")]
    SizeMismatch {
        /// The blob.
        blob: String,
        /// Declared size.
        expected: u64,
        /// Size found (a lower bound when reading stopped early).
        actual: u64,
    },

    /// A blob's content does not hash to its descriptor's digest.
    #[error(
        "{blob} has digest {actual}, but its descriptor says {expected}; the content is corrupt or was tampered with"
    )]
    DigestMismatch {
        /// The blob.
        blob: String,
        /// Declared digest.
        expected: String,
        /// Digest of the bytes read.
        actual: String,
    },

    /// A digest uses an algorithm we do not implement (only sha256 and sha512).
    #[error("{blob}: unsupported digest algorithm in {digest:?} (supported: sha256, sha512)")]
    UnsupportedDigest {
        /// The blob.
        blob: String,
        /// The digest string.
        digest: String,
    },

    /// A blob's media type is not one this crate can consume.
    #[error("{blob}: unsupported media type {media_type:?}{}", hint_for_media_type(media_type))]
    UnsupportedMediaType {
        /// The blob.
        blob: String,
        /// The media type.
        media_type: String,
    },

    /// The unpack destination already has content.
    #[error("unpack destination {} is not empty; unpack into an empty or new directory", path.display())]
    DestinationNotEmpty {
        /// The destination.
        path: PathBuf,
    },

    /// A layer entry tries to leave the root filesystem or is otherwise unsafe.
    #[error("{layer}: refusing entry {path:?}: {reason}")]
    UnsafePath {
        /// The layer.
        layer: String,
        /// The entry path as written in the tar.
        path: String,
        /// Why it was refused.
        reason: String,
    },

    /// A layer could not be decompressed, parsed or applied.
    #[error("{layer}: {context}: {source}")]
    Layer {
        /// The layer.
        layer: String,
        /// The entry or step that failed.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// An encrypted layer's keys or options could not be read.
    #[error("{layer}: {source}")]
    Crypt {
        /// The layer.
        layer: String,
        /// What the ocicrypt layer said.
        #[source]
        source: sealpod_ocicrypt::CryptError,
    },

    /// An encrypted layer failed its HMAC or plaintext digest check.
    #[error("{layer}: decryption refused: {reason}")]
    Decryption {
        /// The layer.
        layer: String,
        /// Which check failed.
        reason: String,
    },

    /// An encrypted layer was to be read without any key.
    #[error("{layer} is encrypted (ocicrypt); a private key of one of its recipients is needed")]
    KeyNeeded {
        /// The layer.
        layer: String,
    },

    /// `ldd` could not be run or its output not understood.
    #[error("cannot list shared libraries of {}: {reason}", binary.display())]
    Ldd {
        /// The binary.
        binary: PathBuf,
        /// What went wrong.
        reason: String,
    },

    /// A shared library a binary needs is not installed.
    #[error("{} needs {library}, which the dynamic loader cannot find; install it or build the binary statically", binary.display())]
    MissingLibrary {
        /// The binary.
        binary: PathBuf,
        /// The library soname.
        library: String,
    },
}

impl OciError {
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        OciError::Io { action, path: path.into(), source }
    }
}

fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "none".to_owned()
    } else {
        items.join(", ")
    }
}

fn hint_for_media_type(media_type: &str) -> &'static str {
    if media_type.contains("+encrypted") {
        " (sealpod decrypts ocicrypt layers of the OCI tar, tar+gzip and tar+zstd types only)"
    } else {
        ""
    }
}
