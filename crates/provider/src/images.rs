//! Unpacked images, shared read-only by every container that uses them.
//!
//! Each image is unpacked once, into a directory named after its manifest
//! digest, and becomes the lower layer of its containers' overlay root
//! filesystems. Unpacking goes to a temporary directory that is renamed into
//! place only when complete, so a crash never leaves half an image to be used.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use sealpod_oci::{ImageConfig, ImageReference, LocalImage, OciError};

/// An image ready to run.
#[derive(Debug, Clone)]
pub struct UnpackedImage {
    /// `sha256:<hex>` of the image manifest.
    pub digest: String,
    /// The root filesystem.
    pub rootfs: PathBuf,
    /// The image's default process settings.
    pub config: ImageConfig,
    /// The image manifest as stored, for digests other than sha256.
    pub manifest: Vec<u8>,
}

/// Where images are resolved from and unpacked to.
pub struct ImageStore {
    dir: PathBuf,
    /// Directories local image references may point into.
    allowed_roots: Vec<PathBuf>,
    /// Serializes unpacking so two pods asking for one image unpack it once.
    unpacking: Mutex<()>,
}

/// Why an image could not be made ready.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The reference points outside the directories the provider serves images from.
    #[error("image {0:?} is outside the provider's image directories")]
    NotAllowed(String),
    /// The provider accepts no local references at all.
    #[error("this provider accepts no local image references (its operator set no --image-root)")]
    NoRoots,
    /// Reading, verifying or unpacking failed.
    #[error("image {reference:?}: {source}")]
    Oci {
        /// The reference as given.
        reference: String,
        /// What went wrong.
        source: OciError,
    },
    /// Filesystem trouble in the store itself.
    #[error("image store: {0}")]
    Io(#[from] std::io::Error),
}

impl ImageStore {
    /// A store under `dir`, resolving local references inside `allowed_roots`.
    pub fn new(dir: &Path, allowed_roots: Vec<PathBuf>) -> std::io::Result<ImageStore> {
        std::fs::create_dir_all(dir)?;
        let allowed_roots = allowed_roots.iter().map(|r| r.canonicalize()).collect::<Result<_, _>>()?;
        Ok(ImageStore { dir: dir.to_owned(), allowed_roots, unpacking: Mutex::new(()) })
    }

    /// Resolves a local reference, verifies the image and unpacks it if it is
    /// not unpacked yet.
    pub fn prepare(&self, reference: &str) -> Result<UnpackedImage, ImageError> {
        if self.allowed_roots.is_empty() {
            return Err(ImageError::NoRoots);
        }
        let oci = |source| ImageError::Oci { reference: reference.to_owned(), source };
        let parsed = ImageReference::parse(reference, Path::new("/")).map_err(oci)?;
        let path = parsed
            .path()
            .canonicalize()
            .map_err(|e| oci(OciError::Io { action: "resolving", path: parsed.path().to_owned(), source: e }))?;
        if !self.allowed_roots.iter().any(|root| path.starts_with(root)) {
            return Err(ImageError::NotAllowed(reference.to_owned()));
        }
        let image = LocalImage::open(&parsed).map_err(oci)?;
        let digest = image.manifest_digest().to_owned();
        let hex = digest.trim_start_matches("sha256:");
        let rootfs = self.dir.join(hex).join("rootfs");
        let _guard = self.unpacking.lock().unwrap_or_else(|p| p.into_inner());
        if !rootfs.exists() {
            let tmp = self.dir.join(format!(".{hex}.partial"));
            let _ = std::fs::remove_dir_all(&tmp);
            std::fs::create_dir_all(&tmp)?;
            image.unpack(&tmp.join("rootfs")).map_err(oci)?;
            std::fs::create_dir_all(self.dir.join(hex))?;
            std::fs::rename(tmp.join("rootfs"), &rootfs)?;
            let _ = std::fs::remove_dir_all(&tmp);
        }
        Ok(UnpackedImage { digest, rootfs, config: image.config().clone(), manifest: image.manifest_bytes().to_vec() })
    }
}
