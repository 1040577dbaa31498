//! Unpacked images, shared read-only by every container that uses them.
//!
//! Each image is unpacked once, into a directory named after its manifest
//! digest, and becomes the lower layer of its containers' overlay root
//! filesystems. Unpacking goes to a temporary directory that is renamed into
//! place only when complete, so a crash never leaves half an image to be used.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use sealpod_oci::{ImageConfig, ImageReference, LocalImage, OciError};
use sealpod_registry::client::{pull_into_store, ClientOptions, RegistryClient};
use sealpod_store::{Digest, ParsedManifest, Reference, RepositoryName, Store};

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

/// An image a cluster's nodes pull from the provider's registry.
#[derive(Debug, Clone)]
pub struct ServedImage {
    /// `sha256:<hex>` of the image manifest.
    pub digest: String,
    /// The manifest's bytes, for the payload manifest's check.
    pub manifest: Vec<u8>,
}

/// The repository the provider's registry serves images to its cluster under.
pub const SERVED_REPOSITORY: &str = "sealpod/images";

/// Most bytes one private image may unpack to (compression bombs).
pub const MAX_UNPACKED_BYTES: u64 = 32 << 30;

/// How a wire `DecryptionKey` holding an ocicrypt JWE private key in PEM
/// (PKCS#8, PKCS#1 or SEC1) is labelled.
pub const KEY_KIND_JWE_PEM: &str = "ocicrypt-jwe-private-pem";

/// The prefix of an image on the artifact network in a pod manifest:
/// `sealpod://team/app:1.0` (through the log) or `sealpod://team/app@sha256:…`.
pub const NETWORK_SCHEME: &str = "sealpod://";

/// Where images are resolved from and unpacked to.
pub struct ImageStore {
    dir: PathBuf,
    /// Directories local image references may point into.
    allowed_roots: Vec<PathBuf>,
    /// The local artifact node's registry address, for network images.
    artifact_node: Option<String>,
    /// Serializes unpacking so two pods asking for one image unpack it once.
    unpacking: Mutex<()>,
}

/// Why an image could not be made ready.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The reference points outside the directories the provider serves images from.
    #[error("image {0:?} is outside the provider's image directories")]
    NotAllowed(String),
    /// An encrypted image cannot be handed to a cluster's nodes.
    #[error("image {0:?} is encrypted; a provider with the Kubernetes backend cannot keep its plaintext off the nodes' disks, so it runs no encrypted image")]
    Encrypted(String),
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
    /// The image is on the artifact network, and this provider has no node.
    #[error("image {0:?} is on the artifact network, but this provider runs no artifact node (--artifact-node)")]
    NoArtifactNode(String),
    /// The artifact node could not provide the image (not in the log,
    /// unreachable, content refused).
    #[error("image {reference:?} from the artifact node: {reason}")]
    Network {
        /// The reference as given.
        reference: String,
        /// What the node or the check said.
        reason: String,
    },
}

impl ImageStore {
    /// A store under `dir`, resolving local references inside `allowed_roots`.
    pub fn new(dir: &Path, allowed_roots: Vec<PathBuf>) -> std::io::Result<ImageStore> {
        std::fs::create_dir_all(dir)?;
        let allowed_roots = allowed_roots.iter().map(|r| r.canonicalize()).collect::<Result<_, _>>()?;
        Ok(ImageStore { dir: dir.to_owned(), allowed_roots, artifact_node: None, unpacking: Mutex::new(()) })
    }

    /// Fetches network images through the artifact node whose registry
    /// listens at `addr` (on loopback).
    pub fn with_artifact_node(mut self, addr: Option<String>) -> ImageStore {
        self.artifact_node = addr;
        self
    }

    /// Fetches an image from the artifact node into the provider's content
    /// store (every blob verified against its digest as it arrives; the node
    /// serves only images its log includes), lays it out as an OCI layout
    /// of hard links, and unpacks it like a local image.
    ///
    /// `reference` is `sealpod://NAME:TAG` or `sealpod://NAME@DIGEST`, or a
    /// bare `sha256:` digest (a wire `ContentAddress`), which the node's log
    /// maps to its repository.
    pub fn prepare_network(&self, reference: &str) -> Result<UnpackedImage, ImageError> {
        let target = reference.to_owned();
        let image =
            self.fetch_image(reference, move |node, store| async move { fetch(&node, &target, &store).await })?;
        self.unpack(image, reference)
    }

    /// Pulls an image through the artifact node with `pull` (on a thread of
    /// its own with a small runtime: the provider's request loop is async,
    /// and unpacking blocks anyway), lays it out from the content store and
    /// opens it.
    fn fetch_image<F, Fut>(&self, reference: &str, pull: F) -> Result<LocalImage, ImageError>
    where
        F: FnOnce(String, Store) -> Fut + Send,
        Fut: std::future::Future<Output = std::io::Result<Digest>>,
    {
        let node = self.artifact_node.clone().ok_or_else(|| ImageError::NoArtifactNode(reference.to_owned()))?;
        let fail = |reason: String| ImageError::Network { reference: reference.to_owned(), reason };
        let store = Store::open(self.dir.join("store")).map_err(|e| fail(e.to_string()))?;
        let fetch_store = store.clone();
        let digest = std::thread::scope(|scope| {
            scope
                .spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
                    rt.block_on(pull(node, fetch_store))
                })
                .join()
                .map_err(|_| std::io::Error::other("image fetch thread panicked"))?
        })
        .map_err(|e: std::io::Error| fail(e.to_string()))?;
        let layout = self.layout_of(&store, &digest).map_err(|e| fail(e.to_string()))?;
        LocalImage::open(&ImageReference::OciLayout { path: layout, tag: None })
            .map_err(|source| ImageError::Oci { reference: reference.to_owned(), source })
    }

    /// Fetches a private (encrypted) image by its digest through the
    /// artifact node and decrypts it, streaming, into a root filesystem of
    /// this pod's own: decrypted content is never shared between pods nor
    /// cached by digest, so a pod that holds no key never gets another
    /// pod's plaintext. The encrypted blobs are kept in the content store
    /// (they are ciphertext). The rootfs appears only once every layer's
    /// digest, HMAC and diff_id checked out; a failure removes what was
    /// written. `key` is used and dropped (zeroized) by the caller.
    pub fn prepare_private(
        &self,
        digest: &str,
        key: &sealpod_oci::ocicrypt::PrivateKey,
        pod_id: &str,
        container: &str,
    ) -> Result<UnpackedImage, ImageError> {
        let fail = |reason: String| ImageError::Network { reference: digest.to_owned(), reason };
        let oci = |source| ImageError::Oci { reference: digest.to_owned(), source };
        let parsed: Digest = digest.parse().map_err(|e: sealpod_store::DigestError| fail(e.to_string()))?;
        let image = self
            .fetch_image(digest, move |node, store| async move {
                let private = sealpod_store::PRIVATE_REPOSITORY.parse().map_err(std::io::Error::other)?;
                pull(&node, private, Reference::Digest(parsed), &store).await
            })?
            .with_unpack_limit(MAX_UNPACKED_BYTES);
        if !image.is_encrypted() {
            return Err(fail("an image sent with a decryption key must be encrypted; this one is not".into()));
        }
        // Containers of one pod that run the same image share its rootfs
        // (read-only, below each container's own upper layer): one key
        // holder, one decryption.
        let dir = self.private_dir(pod_id).join(parsed.hex());
        let rootfs = dir.join("rootfs");
        let unpacked = |rootfs: PathBuf| UnpackedImage {
            digest: image.manifest_digest().to_owned(),
            rootfs,
            config: image.config().clone(),
            manifest: image.manifest_bytes().to_vec(),
        };
        if rootfs.is_dir() {
            tracing::debug!(pod = %pod_id, %container, "sharing the pod's decrypted image");
            return Ok(unpacked(rootfs));
        }
        let staging = dir.join(".partial");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        if let Err(e) = image.unpack_with_keys(&staging, std::slice::from_ref(key)) {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(oci(e));
        }
        std::fs::rename(&staging, &rootfs)?;
        Ok(unpacked(rootfs))
    }

    fn private_dir(&self, pod_id: &str) -> PathBuf {
        self.dir.join("private").join(pod_id)
    }

    /// The pods that have decrypted images here.
    pub fn private_pods(&self) -> Vec<String> {
        std::fs::read_dir(self.dir.join("private"))
            .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default()
    }

    /// Removes the decrypted root filesystems of a pod that is gone.
    pub fn forget_private(&self, pod_id: &str) {
        let dir = self.private_dir(pod_id);
        if dir.exists() {
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                tracing::warn!(pod = %pod_id, error = %e, "could not remove the pod's decrypted images");
            }
        }
    }

    /// An OCI layout under `dir/layouts/<hex>` holding `digest` and what it
    /// references, as hard links into the content store.
    fn layout_of(&self, store: &Store, digest: &Digest) -> std::io::Result<PathBuf> {
        let layout = self.dir.join("layouts").join(digest.hex());
        if layout.join("index.json").exists() {
            return Ok(layout);
        }
        let tmp = self.dir.join("layouts").join(format!(".{}.partial", digest.hex()));
        let _ = std::fs::remove_dir_all(&tmp);
        let blobs = tmp.join("blobs/sha256");
        std::fs::create_dir_all(&blobs)?;
        let bytes = store.read_to_vec(digest, sealpod_store::MAX_MANIFEST_SIZE).map_err(std::io::Error::other)?;
        let top = ParsedManifest::parse(&bytes, None).map_err(std::io::Error::other)?;
        let mut pending = vec![*digest];
        let mut linked = std::collections::HashSet::new();
        while let Some(d) = pending.pop() {
            if !linked.insert(d) {
                continue;
            }
            if !store.contains(&d).map_err(std::io::Error::other)? {
                // A platform this host does not run may be absent.
                continue;
            }
            std::fs::hard_link(store.root().join("blobs/sha256").join(d.hex()), blobs.join(d.hex()))?;
            if let Ok(b) = store.read_to_vec(&d, sealpod_store::MAX_MANIFEST_SIZE) {
                if let Ok(m) = ParsedManifest::parse(&b, None) {
                    pending.extend(m.manifests.iter().chain(&m.blobs).filter(|x| !x.external).map(|x| x.digest));
                }
            }
        }
        std::fs::write(tmp.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#)?;
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [{"mediaType": top.media_type, "digest": digest.to_string(), "size": bytes.len()}],
        });
        std::fs::write(tmp.join("index.json"), serde_json::to_vec(&index)?)?;
        std::fs::rename(&tmp, &layout)?;
        Ok(layout)
    }

    /// Resolves a local reference, verifies the image and unpacks it if it is
    /// not unpacked yet.
    pub fn prepare(&self, reference: &str) -> Result<UnpackedImage, ImageError> {
        let image = self.open_local(reference)?;
        self.unpack(image, reference)
    }

    /// Makes an image pullable by a cluster's nodes from the provider's
    /// registry, which serves the content store: a network image is fetched
    /// through the artifact node (so its log was checked), a local one is
    /// copied in with every blob checked against its digest. Either is
    /// recorded under [`SERVED_REPOSITORY`] by the digest of the manifest for
    /// this platform. Encrypted images are refused: the nodes would store
    /// their plaintext.
    pub fn serve(&self, reference: &str, network: bool) -> Result<ServedImage, ImageError> {
        let fail = |reason: String| ImageError::Network { reference: reference.to_owned(), reason };
        let image = if network {
            let target = reference.to_owned();
            self.fetch_image(reference, move |node, store| async move { fetch(&node, &target, &store).await })?
        } else {
            self.open_local(reference)?
        };
        if image.is_encrypted() {
            return Err(ImageError::Encrypted(reference.to_owned()));
        }
        let store = Store::open(self.dir.join("store")).map_err(|e| fail(e.to_string()))?;
        let oci = |source| ImageError::Oci { reference: reference.to_owned(), source };
        let config_digest: Digest = image
            .manifest()
            .config()
            .digest()
            .to_string()
            .parse()
            .map_err(|e: sealpod_store::DigestError| fail(e.to_string()))?;
        if !store.contains(&config_digest).map_err(|e| fail(e.to_string()))? {
            let d = store.put(image.config_bytes()).map_err(|e| fail(e.to_string()))?;
            if d != config_digest {
                return Err(fail(format!("the config blob is {d}, not {config_digest} as the manifest says")));
            }
        }
        for (i, layer) in image.layers().iter().enumerate() {
            let want: Digest =
                layer.digest().to_string().parse().map_err(|e: sealpod_store::DigestError| fail(e.to_string()))?;
            if store.contains(&want).map_err(|e| fail(e.to_string()))? {
                continue;
            }
            let (raw, size) = image.layer_blob(i).map_err(oci)?;
            let mut w = store.writer_expecting(want, Some(size)).map_err(|e| fail(e.to_string()))?;
            std::io::copy(&mut std::io::Read::take(raw, size.saturating_add(1)), &mut w)?;
            w.commit().map_err(|e| fail(format!("layer {i}: {e}")))?;
        }
        let repo: RepositoryName =
            SERVED_REPOSITORY.parse().map_err(|e: sealpod_store::NameError| fail(e.to_string()))?;
        store.put_manifest(&repo, None, None, image.manifest_bytes()).map_err(|e| fail(e.to_string()))?;
        Ok(ServedImage { digest: image.manifest_digest().to_owned(), manifest: image.manifest_bytes().to_vec() })
    }

    /// The content store the provider's registry serves.
    pub fn content_store(&self) -> std::io::Result<Store> {
        Store::open(self.dir.join("store")).map_err(std::io::Error::other)
    }

    /// Opens a local reference inside the allowed directories, verified.
    fn open_local(&self, reference: &str) -> Result<LocalImage, ImageError> {
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
        LocalImage::open(&parsed).map_err(oci)
    }

    /// Unpacks a verified image once per manifest digest.
    fn unpack(&self, image: LocalImage, reference: &str) -> Result<UnpackedImage, ImageError> {
        let oci = |source| ImageError::Oci { reference: reference.to_owned(), source };
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

/// Resolves `reference` through the node and pulls it into `store`.
async fn fetch(node: &str, reference: &str, store: &Store) -> std::io::Result<Digest> {
    let err = |e: String| std::io::Error::other(e);
    let (repo, reference) = match reference.strip_prefix(NETWORK_SCHEME) {
        Some(rest) => {
            let (name, reference) = match rest.split_once('@') {
                Some((name, digest)) => (
                    name,
                    Reference::Digest(digest.parse().map_err(|e: sealpod_store::DigestError| err(e.to_string()))?),
                ),
                None => {
                    let (name, tag) = sealpod_imagelog::split_image(rest)
                        .ok_or_else(|| err(format!("{rest:?} has no :tag or @digest")))?;
                    (name, Reference::Tag(tag.parse().map_err(|e: sealpod_store::NameError| err(e.to_string()))?))
                }
            };
            (name.to_owned(), reference)
        }
        None => {
            // A bare content address: the node's log says where it was published.
            let digest: Digest = reference.parse().map_err(|e: sealpod_store::DigestError| err(e.to_string()))?;
            let repo = repository_of(node, &digest).await.map_err(err)?;
            (repo, Reference::Digest(digest))
        }
    };
    let repo: RepositoryName = repo.parse().map_err(|e: sealpod_store::NameError| err(e.to_string()))?;
    pull(node, repo, reference, store).await
}

/// Pulls `repo` at `reference` through the node into `store`.
async fn pull(node: &str, repo: RepositoryName, reference: Reference, store: &Store) -> std::io::Result<Digest> {
    let err = |e: String| std::io::Error::other(e);
    let client =
        RegistryClient::new(&format!("http://{node}"), ClientOptions::default()).map_err(|e| err(e.to_string()))?;
    pull_into_store(&client, &repo, &reference, store, &repo, None).await.map_err(|e| err(e.to_string()))
}

/// Asks the node's log which repository published `digest`.
async fn repository_of(node: &str, digest: &Digest) -> Result<String, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::time::timeout(std::time::Duration::from_secs(5), tokio::net::TcpStream::connect(node))
        .await
        .map_err(|_| format!("the artifact node at {node} does not answer"))?
        .map_err(|e| format!("the artifact node at {node}: {e}"))?;
    let request = format!("GET /sealpod/v1/log/digests/{digest} HTTP/1.1\r\nHost: {node}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(30), (&mut stream).take(1 << 20).read_to_end(&mut raw))
        .await
        .map_err(|_| "the artifact node did not answer in time".to_owned())?
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").ok_or("malformed answer from the artifact node")?;
    let value: serde_json::Value = serde_json::from_str(body).map_err(|e| format!("artifact node: {e}"))?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(value["error"].as_str().unwrap_or("the artifact node refused").to_owned());
    }
    let image = value[0]["image"].as_str().ok_or("no log entry for the digest")?;
    Ok(sealpod_imagelog::image_repository(image).to_owned())
}
