//! Opening one image from a layout or archive, verifying every blob on the
//! way, and unpacking it.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io::{self, Read};
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;

use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest};
use serde::{Deserialize, Serialize};

use crate::compression::{decoder, layer_encoding, Compression, LayerEncoding};
use crate::digest::{sha256_digest, BlobDigest, Verdict, VerifyingReader};
use crate::reference::{archive_kind_of, normalize_docker_name, ArchiveKind, ImageReference};
use crate::source::{read_up_to, BlobSource, TarIndex};
use crate::unpack::{is_empty_dir, Unpacker};
use crate::OciError;

/// The largest JSON document (index, manifest, config, `manifest.json`,
/// `oci-layout`) we read into memory. Real ones are a few KiB; the limit
/// keeps a hostile layout from exhausting memory.
pub const MAX_JSON_SIZE: u64 = 4 * 1024 * 1024;

/// How deep image indexes may nest (an index pointing at an index …).
const MAX_INDEX_DEPTH: usize = 4;

/// Annotation naming a manifest in `index.json` (image-spec `annotations.md`).
pub const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";
/// Annotation containerd and Docker 25+ add with the full image name.
const CONTAINERD_NAME_ANNOTATION: &str = "io.containerd.image.name";

pub(crate) const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub(crate) const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub(crate) const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// An operating system and CPU architecture, in Go's `GOOS`/`GOARCH` names
/// as image indexes use them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    /// `linux`, …
    pub os: String,
    /// `amd64`, `arm64`, …
    pub architecture: String,
    /// `v8`, `v7`, … if it matters.
    pub variant: Option<String>,
}

impl Platform {
    /// The platform this process runs on.
    pub fn host() -> Platform {
        let architecture = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
            "loongarch64" => "loong64",
            other => other,
        };
        Platform { os: std::env::consts::OS.to_owned(), architecture: architecture.to_owned(), variant: None }
    }

    fn matches(&self, p: &oci_spec::image::Platform) -> bool {
        p.os().to_string() == self.os
            && p.architecture().to_string() == self.architecture
            && match (&self.variant, p.variant()) {
                (Some(want), Some(have)) => want == have,
                _ => true,
            }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// What a runtime needs from an image's configuration (image-spec
/// `config.md` § `config`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageConfig {
    /// `Entrypoint`.
    pub entrypoint: Vec<String>,
    /// `Cmd`: arguments to the entrypoint, or the command if there is none.
    pub cmd: Vec<String>,
    /// `Env`, each `KEY=VALUE`.
    pub env: Vec<String>,
    /// `WorkingDir`, if set and not empty.
    pub working_dir: Option<String>,
    /// `User` (`uid`, `uid:gid`, `name`, …), if set and not empty.
    pub user: Option<String>,
    /// `ExposedPorts` keys such as `8080/tcp`, sorted.
    pub exposed_ports: Vec<String>,
    /// `Labels`.
    pub labels: BTreeMap<String, String>,
    /// `os`.
    pub os: String,
    /// `architecture`.
    pub architecture: String,
}

impl ImageConfig {
    fn from_spec(c: &ImageConfiguration) -> ImageConfig {
        let cfg = c.config().clone().unwrap_or_default();
        let non_empty = |s: &Option<String>| s.clone().filter(|s| !s.is_empty());
        let mut exposed_ports = cfg.exposed_ports().clone().unwrap_or_default();
        exposed_ports.sort();
        ImageConfig {
            entrypoint: cfg.entrypoint().clone().unwrap_or_default(),
            cmd: cfg.cmd().clone().unwrap_or_default(),
            env: cfg.env().clone().unwrap_or_default(),
            working_dir: non_empty(cfg.working_dir()),
            user: non_empty(cfg.user()),
            exposed_ports,
            labels: cfg.labels().clone().unwrap_or_default().into_iter().collect(),
            os: c.os().to_string(),
            architecture: c.architecture().to_string(),
        }
    }
}

/// How to read and check one layer.
#[derive(Debug, Clone)]
pub(crate) struct LayerPlan {
    /// Human name for errors: `layer 2 of 3 (sha256:…)`.
    pub(crate) name: String,
    /// Path inside the layout or archive.
    pub(crate) location: String,
    pub(crate) digest: BlobDigest,
    pub(crate) size: u64,
    pub(crate) encoding: LayerEncoding,
    /// The uncompressed digest from the config, checked too when it differs
    /// from `digest`.
    pub(crate) diff_id: Option<BlobDigest>,
    /// `docker save` archives address layers by their uncompressed digest:
    /// `digest` and `size` then describe the decompressed tar.
    pub(crate) digest_of_decoded: bool,
    /// The descriptor's annotations, for an ocicrypt layer (`+encrypted`):
    /// its wrapped keys and public options.
    pub(crate) encrypted: Option<std::collections::HashMap<String, String>>,
}

/// One image, resolved to a single manifest, with its manifest and config
/// read and verified. Layers are verified as [`LocalImage::unpack`] streams
/// them.
pub struct LocalImage {
    pub(crate) reference: ImageReference,
    pub(crate) source: BlobSource,
    pub(crate) manifest_digest: String,
    pub(crate) manifest_bytes: Vec<u8>,
    pub(crate) manifest: ImageManifest,
    pub(crate) config_bytes: Vec<u8>,
    pub(crate) config: ImageConfig,
    pub(crate) layers: Vec<LayerPlan>,
    /// Most bytes all layers may decompress to (compression bombs).
    pub(crate) unpack_limit: Option<u64>,
}

impl fmt::Debug for LocalImage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalImage")
            .field("reference", &self.reference)
            .field("manifest_digest", &self.manifest_digest)
            .field("config", &self.config)
            .field("layers", &self.layers.len())
            .finish()
    }
}

impl LocalImage {
    /// Opens the image `reference` names, choosing the host's platform in a
    /// multi-platform index. See [`LocalImage::open_for_platform`].
    pub fn open(reference: &ImageReference) -> Result<LocalImage, OciError> {
        LocalImage::open_for_platform(reference, &Platform::host())
    }

    /// Opens the image `reference` names.
    ///
    /// Selection in `index.json`: the descriptors whose
    /// `org.opencontainers.image.ref.name` is the tag (or, for Docker 25+
    /// archives, whose `io.containerd.image.name` is that name); without a
    /// tag, all of them. One candidate is taken; among several, the one for
    /// `platform`. An image index found on the way is resolved to its
    /// manifest for `platform`.
    ///
    /// Every document read (index, manifest, config) is checked against its
    /// descriptor's size and digest and must be at most [`MAX_JSON_SIZE`].
    /// Layers are checked for presence and size here, for content during
    /// [`LocalImage::unpack`].
    pub fn open_for_platform(reference: &ImageReference, platform: &Platform) -> Result<LocalImage, OciError> {
        match reference {
            ImageReference::OciLayout { path, tag } => {
                if !path.is_dir() {
                    return Err(OciError::NotAnImage { path: path.clone(), reason: "no such directory".into() });
                }
                let source = BlobSource::Dir(path.clone());
                open_oci(reference, source, tag.as_deref(), platform)
            }
            ImageReference::OciArchive { path, tag } => {
                let source = BlobSource::Tar(Arc::new(TarIndex::build(path)?));
                open_oci(reference, source, tag.as_deref(), platform)
            }
            ImageReference::DockerArchive { path, name } => {
                let source = BlobSource::Tar(Arc::new(TarIndex::build(path)?));
                if let ArchiveKind::Oci = archive_kind_of(&source)? {
                    if !source.exists("manifest.json") {
                        return Err(OciError::NotAnImage {
                            path: path.clone(),
                            reason: "this is an OCI archive, not a docker archive; use oci-archive:".into(),
                        });
                    }
                }
                open_docker(reference, source, name.as_deref())
            }
        }
    }

    /// The reference this image was opened from.
    pub fn reference(&self) -> &ImageReference {
        &self.reference
    }

    /// `sha256:<hex>` of the manifest bytes as stored. For a `docker save`
    /// archive, which stores no manifest, it is the digest of the Docker
    /// schema 2 manifest that skopeo synthesises for the same archive (layers
    /// addressed by their uncompressed digest), so both tools agree.
    pub fn manifest_digest(&self) -> &str {
        &self.manifest_digest
    }

    /// The image manifest.
    pub fn manifest(&self) -> &ImageManifest {
        &self.manifest
    }

    /// The manifest bytes whose digest is [`LocalImage::manifest_digest`].
    pub fn manifest_bytes(&self) -> &[u8] {
        &self.manifest_bytes
    }

    /// The runtime-relevant part of the image configuration.
    pub fn config(&self) -> &ImageConfig {
        &self.config
    }

    /// The verified configuration blob, as stored.
    pub fn config_bytes(&self) -> &[u8] {
        &self.config_bytes
    }

    /// The layer descriptors, base layer first.
    pub fn layers(&self) -> &[Descriptor] {
        self.manifest.layers()
    }

    /// The stored bytes of layer `index` (as the manifest addresses them),
    /// for copying the image elsewhere; not verified here: the reader checks
    /// them against the manifest's digest (a content store does).
    pub fn layer_blob(&self, index: usize) -> Result<(Box<dyn Read + Send>, u64), OciError> {
        let plan = self.layers.get(index).ok_or_else(|| OciError::NotAnImage {
            path: self.reference.path().to_owned(),
            reason: format!("the image has no layer {index}"),
        })?;
        let (raw, size) = self.open_blob(&plan.location, &plan.name)?;
        Ok((raw, size))
    }

    /// Applies the layers in order to `dest`, which must not exist or be an
    /// empty directory.
    ///
    /// Each layer is streamed from its blob through its decompressor into
    /// the filesystem; its digest and size are checked as the bytes go by
    /// and at its end (as is its uncompressed `diff_id`). A mismatch is
    /// reported as [`OciError::DigestMismatch`] or
    /// [`OciError::SizeMismatch`] — but only after earlier bytes of that
    /// layer were written, so on any error the caller must discard `dest`.
    /// See the [`unpack`](crate::unpack) module for the layer semantics.
    pub fn unpack(&self, dest: &Path) -> Result<(), OciError> {
        self.unpack_with_keys(dest, &[])
    }

    /// Like [`LocalImage::unpack`], decrypting ocicrypt layers with the
    /// first of `keys` that each layer is wrapped for. An encrypted layer's
    /// HMAC and plaintext digest are known only at its end, so, as for every
    /// layer, `dest` must be discarded on any error.
    pub fn unpack_with_keys(&self, dest: &Path, keys: &[sealpod_ocicrypt::PrivateKey]) -> Result<(), OciError> {
        // Every layer key is unwrapped before anything is written.
        let layer_keys = self.layer_keys(keys)?;
        prepare_destination(dest)?;
        let mut unpacker = Unpacker::new(dest);
        let budget = Rc::new(std::cell::Cell::new(self.unpack_limit.unwrap_or(u64::MAX)));
        for (plan, key) in self.layers.iter().zip(&layer_keys) {
            self.apply_layer(plan, key.as_ref(), &mut unpacker, &budget)?;
        }
        unpacker.finish()
    }

    /// Caps what unpacking may write: the layers' decompressed tar streams,
    /// together, may be at most `bytes` long. Beyond it unpacking fails (a
    /// compression bomb, or an image larger than the caller allows).
    pub fn with_unpack_limit(mut self, bytes: u64) -> LocalImage {
        self.unpack_limit = Some(bytes);
        self
    }

    /// Whether any layer is encrypted.
    pub fn is_encrypted(&self) -> bool {
        self.layers.iter().any(|l| l.encrypted.is_some())
    }

    /// The unwrapped key of each encrypted layer (`None` for plain ones).
    pub(crate) fn layer_keys(
        &self,
        keys: &[sealpod_ocicrypt::PrivateKey],
    ) -> Result<Vec<Option<sealpod_ocicrypt::LayerKey>>, OciError> {
        self.layers
            .iter()
            .map(|plan| match &plan.encrypted {
                None => Ok(None),
                Some(_) if keys.is_empty() => Err(OciError::KeyNeeded { layer: plan.name.clone() }),
                Some(annotations) => sealpod_ocicrypt::layer::unwrap_layer(annotations, keys)
                    .map(Some)
                    .map_err(|source| OciError::Crypt { layer: plan.name.clone(), source }),
            })
            .collect()
    }

    fn apply_layer(
        &self,
        plan: &LayerPlan,
        key: Option<&sealpod_ocicrypt::LayerKey>,
        unpacker: &mut Unpacker,
        budget: &Rc<std::cell::Cell<u64>>,
    ) -> Result<(), OciError> {
        let layer_error = |context: &str, source: io::Error| OciError::Layer {
            layer: plan.name.clone(),
            context: context.to_owned(),
            source,
        };
        let (raw, stored) = self.open_blob(&plan.location, &plan.name)?;
        if !plan.digest_of_decoded && stored != plan.size {
            return Err(OciError::SizeMismatch { blob: plan.name.clone(), expected: plan.size, actual: stored });
        }

        // `stored_bytes` is kept so that, when decoding or unpacking fails,
        // the rest of the blob can still be read and its digest checked: a
        // tampered layer is then reported as tampered, not as whatever the
        // decompressor or tar parser tripped over.
        let mut checks: Vec<(Verdict, String)> = Vec::new();
        let mut decrypting = None;
        let (top, mut stored_bytes): (Box<dyn Read>, Option<SharedReader>) = if plan.digest_of_decoded {
            let decoded = decoder(raw, LayerEncoding::Sniff).map_err(|e| layer_error("decompressing", e))?;
            let v = VerifyingReader::new(decoded, plan.name.clone(), &plan.digest, Some(plan.size));
            checks.push((v.verdict(), plan.name.clone()));
            (Box::new(v), None)
        } else {
            let v = VerifyingReader::new(raw, plan.name.clone(), &plan.digest, Some(plan.size));
            checks.push((v.verdict(), plan.name.clone()));
            let shared = match key {
                Some(key) => {
                    let d = Shared::new(sealpod_ocicrypt::DecryptingReader::new(v, &key.private, &key.public));
                    decrypting = Some(d.clone());
                    Shared::new(Box::new(d) as Box<dyn Read>)
                }
                None => Shared::new(Box::new(v) as Box<dyn Read>),
            };
            let decoded = decoder(shared.clone(), plan.encoding).map_err(|e| layer_error("decompressing", e))?;
            // A plain tar's diff_id is the digest of the blob itself (for an
            // encrypted one, of its plaintext, which decryption checks):
            // hashing it again would check nothing new.
            let blob_digest = key.map_or_else(|| plan.digest.to_string(), |k| k.private.digest.clone());
            let top: Box<dyn Read> = match &plan.diff_id {
                Some(diff_id)
                    if !(plan.encoding == LayerEncoding::Known(Compression::None)
                        && diff_id.to_string() == blob_digest) =>
                {
                    let blob = format!("uncompressed {} (diff_id in config)", plan.name);
                    let v = VerifyingReader::new(decoded, blob.clone(), diff_id, None);
                    checks.push((v.verdict(), blob));
                    Box::new(v)
                }
                _ => decoded,
            };
            (top, Some(shared))
        };

        let limit = self.unpack_limit.unwrap_or(u64::MAX);
        let mut top = Budgeted { inner: top, budget: Rc::clone(budget), limit };
        let result = unpacker.apply(&mut top, &plan.name).and_then(|()| {
            io::copy(&mut top, &mut io::sink()).map(drop).map_err(|e| layer_error("reading past the end of the tar", e))
        });
        if let Err(err) = result {
            let _ = match stored_bytes.as_mut() {
                Some(stored_bytes) => io::copy(stored_bytes, &mut io::sink()),
                None => io::copy(&mut top, &mut io::sink()),
            };
            if let Some(mismatch) = checks.iter().find_map(|(v, blob)| v.failure(blob)) {
                return Err(mismatch);
            }
            if let Some(failed) = decrypting.as_ref().and_then(|d| decryption_failure(d, &plan.name)) {
                return Err(failed);
            }
            if budget.get() == 0 {
                return Err(layer_error("decompressing", io::Error::new(io::ErrorKind::InvalidData, bomb(limit))));
            }
            return Err(err);
        }
        if let Some(d) = &decrypting {
            if let Some(failed) = decryption_failure(d, &plan.name) {
                return Err(failed);
            }
        }
        for (verdict, blob) in &checks {
            if let Some(mismatch) = verdict.failure(blob) {
                return Err(mismatch);
            }
            if !verdict.is_verified() {
                return Err(layer_error(
                    "verifying",
                    io::Error::new(io::ErrorKind::UnexpectedEof, format!("{blob} was not read to its end")),
                ));
            }
        }
        Ok(())
    }

    pub(crate) fn open_blob(&self, location: &str, blob: &str) -> Result<(Box<dyn Read + Send>, u64), OciError> {
        self.source
            .open(location)?
            .ok_or_else(|| OciError::BlobMissing { blob: blob.to_owned(), location: self.source.describe(location) })
    }
}

type SharedReader = Shared<Box<dyn Read>>;

fn bomb(limit: u64) -> String {
    format!("the image decompresses to more than the {limit} bytes allowed (a compression bomb?)")
}

/// Counts decompressed bytes against what all layers may write together.
struct Budgeted<R> {
    inner: R,
    budget: Rc<std::cell::Cell<u64>>,
    limit: u64,
}

impl<R: Read> Read for Budgeted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let left = self.budget.get();
        if n as u64 > left {
            self.budget.set(0);
            return Err(io::Error::new(io::ErrorKind::InvalidData, bomb(self.limit)));
        }
        self.budget.set(left - n as u64);
        Ok(n)
    }
}

/// Why a decrypting stream failed its end checks (or never reached its end).
fn decryption_failure<R: Read>(d: &Shared<sealpod_ocicrypt::DecryptingReader<R>>, layer: &str) -> Option<OciError> {
    match d.0.borrow().verdict() {
        sealpod_ocicrypt::Verdict::Verified => None,
        sealpod_ocicrypt::Verdict::Failed(reason) => {
            Some(OciError::Decryption { layer: layer.to_owned(), reason: reason.clone() })
        }
        sealpod_ocicrypt::Verdict::Pending => Some(OciError::Decryption {
            layer: layer.to_owned(),
            reason: "the encrypted layer was not read to its end, so it is unverified".into(),
        }),
    }
}

/// A reader shared between a decoder that consumes it and the code that
/// drains it after a failure.
struct Shared<R>(Rc<RefCell<R>>);

impl<R> Shared<R> {
    fn new(inner: R) -> Self {
        Shared(Rc::new(RefCell::new(inner)))
    }
}

impl<R> Clone for Shared<R> {
    fn clone(&self) -> Self {
        Shared(Rc::clone(&self.0))
    }
}

impl<R: Read> Read for Shared<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.borrow_mut().read(buf)
    }
}

fn prepare_destination(dest: &Path) -> Result<(), OciError> {
    match fs::metadata(dest) {
        Ok(m) if m.is_dir() => {
            if !is_empty_dir(dest).map_err(|e| OciError::io("listing", dest, e))? {
                return Err(OciError::DestinationNotEmpty { path: dest.to_owned() });
            }
            Ok(())
        }
        Ok(_) => Err(OciError::DestinationNotEmpty { path: dest.to_owned() }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::create_dir_all(dest).map_err(|e| OciError::io("creating directory", dest, e))
        }
        Err(e) => Err(OciError::io("inspecting", dest, e)),
    }
}

// ---------------------------------------------------------------------------
// OCI layouts and archives (image-spec `image-layout.md`, `image-index.md`,
// `manifest.md`, `config.md`).

#[derive(Deserialize)]
struct LayoutFile {
    #[serde(rename = "imageLayoutVersion")]
    version: String,
}

fn open_oci(
    reference: &ImageReference,
    source: BlobSource,
    tag: Option<&str>,
    platform: &Platform,
) -> Result<LocalImage, OciError> {
    let not_a_layout = |what: &str| OciError::NotAnImage {
        path: source.path().to_owned(),
        reason: format!("no `{what}` file; not an OCI image layout"),
    };
    let layout_bytes = read_small(&source, "oci-layout")?.ok_or_else(|| not_a_layout("oci-layout"))?;
    let layout: LayoutFile = parse_json("oci-layout", &layout_bytes)?;
    if !layout.version.starts_with("1.") {
        return Err(OciError::InvalidDocument {
            blob: "oci-layout".into(),
            reason: format!("imageLayoutVersion {:?} is not 1.x", layout.version),
        });
    }
    let index_bytes = read_small(&source, "index.json")?.ok_or_else(|| not_a_layout("index.json"))?;
    let index: ImageIndex = parse_json("index.json", &index_bytes)?;
    check_schema_version("index.json", index.schema_version())?;

    let mut desc = select_tagged(&index, tag, &source, platform)?;
    let mut depth = 0;
    while is_index(&desc) {
        depth += 1;
        let blob = format!("image index {}", desc.digest());
        if depth > MAX_INDEX_DEPTH {
            return Err(OciError::InvalidDocument {
                blob,
                reason: format!("image indexes nest more than {MAX_INDEX_DEPTH} deep"),
            });
        }
        let bytes = read_json_blob(&source, &desc, &blob)?;
        let nested: ImageIndex = parse_json(&blob, &bytes)?;
        check_schema_version(&blob, nested.schema_version())?;
        check_embedded_media_type(&blob, &desc, nested.media_type().as_ref().map(|m| m.to_string()))?;
        desc = select_platform(&nested, platform, &blob)?;
    }
    if !is_manifest(&desc) {
        return Err(OciError::UnsupportedMediaType {
            blob: format!("descriptor {}", desc.digest()),
            media_type: desc.media_type().to_string(),
        });
    }

    let blob = format!("manifest {}", desc.digest());
    let manifest_bytes = read_json_blob(&source, &desc, &blob)?;
    let manifest: ImageManifest = parse_json(&blob, &manifest_bytes)?;
    check_schema_version(&blob, manifest.schema_version())?;
    check_embedded_media_type(&blob, &desc, manifest.media_type().as_ref().map(|m| m.to_string()))?;

    let config_desc = manifest.config();
    let config_media_type = config_desc.media_type().to_string();
    let config_blob = format!("config {}", config_desc.digest());
    if config_media_type != OCI_CONFIG && config_media_type != DOCKER_CONFIG {
        return Err(OciError::UnsupportedMediaType { blob: config_blob, media_type: config_media_type });
    }
    let config_bytes = read_json_blob(&source, config_desc, &config_blob)?;
    let config: ImageConfiguration = parse_json(&config_blob, &config_bytes)?;
    let diff_ids = parse_diff_ids(&config, manifest.layers().len(), &config_blob)?;

    let count = manifest.layers().len();
    let mut layers = Vec::with_capacity(count);
    for (i, (d, diff_id)) in manifest.layers().iter().zip(diff_ids).enumerate() {
        let name = format!("layer {} of {count} ({})", i + 1, d.digest());
        let media_type = d.media_type().to_string();
        let encrypted = sealpod_ocicrypt::layer::is_encrypted(&media_type);
        let plain_type = if encrypted {
            sealpod_ocicrypt::layer::decrypted_media_type(&media_type)
                .map_err(|source| OciError::Crypt { layer: name.clone(), source })?
        } else {
            &media_type
        };
        let encoding = layer_encoding(plain_type)
            .ok_or_else(|| OciError::UnsupportedMediaType { blob: name.clone(), media_type: media_type.clone() })?;
        let digest = BlobDigest::parse(&name, d.digest().as_ref())?;
        let location = digest.layout_path();
        let (_, stored) = source
            .open(&location)?
            .ok_or_else(|| OciError::BlobMissing { blob: name.clone(), location: source.describe(&location) })?;
        if stored != d.size() {
            return Err(OciError::SizeMismatch { blob: name, expected: d.size(), actual: stored });
        }
        layers.push(LayerPlan {
            name,
            location,
            digest,
            size: d.size(),
            encoding,
            diff_id: Some(diff_id),
            digest_of_decoded: false,
            encrypted: encrypted.then(|| d.annotations().clone().unwrap_or_default()),
        });
    }
    // Two parsers that keep different ones of a duplicated key would see
    // different keys or options; an encrypted image must say one thing.
    if layers.iter().any(|l| l.encrypted.is_some()) {
        if let Some(key) = sealpod_ocicrypt::layer::duplicate_json_key(&manifest_bytes) {
            return Err(OciError::InvalidDocument { blob, reason: format!("key {key:?} appears twice in one object") });
        }
    }

    Ok(LocalImage {
        reference: reference.clone(),
        source,
        manifest_digest: desc.digest().to_string(),
        manifest_bytes,
        manifest,
        config: ImageConfig::from_spec(&config),
        config_bytes,
        layers,
        unpack_limit: None,
    })
}

fn parse_diff_ids(config: &ImageConfiguration, layer_count: usize, blob: &str) -> Result<Vec<BlobDigest>, OciError> {
    let diff_ids = config.rootfs().diff_ids();
    if diff_ids.len() != layer_count {
        return Err(OciError::InvalidDocument {
            blob: blob.to_owned(),
            reason: format!("rootfs.diff_ids lists {} layers but the manifest has {layer_count}", diff_ids.len()),
        });
    }
    diff_ids.iter().map(|d| BlobDigest::parse(blob, d)).collect()
}

fn ref_name(d: &Descriptor) -> Option<&str> {
    annotation(d, REF_NAME_ANNOTATION)
}

fn annotation<'a>(d: &'a Descriptor, key: &str) -> Option<&'a str> {
    d.annotations().as_ref()?.get(key).map(String::as_str)
}

fn is_index(d: &Descriptor) -> bool {
    let mt = d.media_type().to_string();
    mt == OCI_INDEX || mt == DOCKER_LIST
}

fn is_manifest(d: &Descriptor) -> bool {
    let mt = d.media_type().to_string();
    mt == OCI_MANIFEST || mt == DOCKER_MANIFEST
}

fn select_tagged(
    index: &ImageIndex,
    tag: Option<&str>,
    source: &BlobSource,
    platform: &Platform,
) -> Result<Descriptor, OciError> {
    let all = index.manifests();
    let mut tags: Vec<String> = all.iter().filter_map(ref_name).map(str::to_owned).collect();
    tags.dedup();
    let candidates: Vec<&Descriptor> = match tag {
        Some(tag) => all
            .iter()
            .filter(|d| {
                ref_name(d) == Some(tag)
                    || annotation(d, CONTAINERD_NAME_ANNOTATION)
                        .is_some_and(|n| normalize_docker_name(n) == normalize_docker_name(tag))
            })
            .collect(),
        None => all.iter().collect(),
    };
    match (candidates.as_slice(), tag) {
        ([], Some(tag)) => {
            Err(OciError::TagNotFound { tag: tag.to_owned(), path: source.path().to_owned(), available: tags })
        }
        ([], None) => Err(OciError::InvalidDocument { blob: "index.json".into(), reason: "it lists no images".into() }),
        ([one], _) => Ok((*one).clone()),
        (many, _) => pick_platform(many, platform).cloned().ok_or_else(|| OciError::AmbiguousImage {
            path: source.path().to_owned(),
            available: if tags.is_empty() { many.iter().map(|d| d.digest().to_string()).collect() } else { tags },
        }),
    }
}

fn pick_platform<'a>(candidates: &[&'a Descriptor], platform: &Platform) -> Option<&'a Descriptor> {
    candidates.iter().find(|d| d.platform().as_ref().is_some_and(|p| platform.matches(p))).copied()
}

fn select_platform(index: &ImageIndex, platform: &Platform, blob: &str) -> Result<Descriptor, OciError> {
    let images: Vec<&Descriptor> = index.manifests().iter().filter(|d| is_manifest(d) || is_index(d)).collect();
    if let Some(d) = pick_platform(&images, platform) {
        return Ok(d.clone());
    }
    if let [only] = images.as_slice() {
        if only.platform().is_none() {
            return Ok((*only).clone());
        }
    }
    Err(OciError::NoMatchingPlatform {
        wanted: platform.to_string(),
        blob: blob.to_owned(),
        available: images
            .iter()
            .filter_map(|d| d.platform().as_ref())
            .map(|p| format!("{}/{}", p.os(), p.architecture()))
            .collect(),
    })
}

fn check_schema_version(blob: &str, version: u32) -> Result<(), OciError> {
    if version != 2 {
        return Err(OciError::InvalidDocument {
            blob: blob.to_owned(),
            reason: format!("schemaVersion is {version}, expected 2"),
        });
    }
    Ok(())
}

/// image-spec: a document's own `mediaType` must match its descriptor, so an
/// index cannot be passed off as a manifest or the other way round.
fn check_embedded_media_type(blob: &str, desc: &Descriptor, embedded: Option<String>) -> Result<(), OciError> {
    match embedded {
        Some(mt) if mt != desc.media_type().to_string() => Err(OciError::InvalidDocument {
            blob: blob.to_owned(),
            reason: format!("its mediaType {mt:?} differs from its descriptor's {:?}", desc.media_type().to_string()),
        }),
        _ => Ok(()),
    }
}

/// Reads a file that is not content-addressed (`index.json`, `oci-layout`,
/// `manifest.json`), refusing more than [`MAX_JSON_SIZE`] bytes.
fn read_small(source: &BlobSource, rel: &str) -> Result<Option<Vec<u8>>, OciError> {
    let Some((reader, stored)) = source.open(rel)? else {
        return Ok(None);
    };
    if stored > MAX_JSON_SIZE {
        return Err(OciError::BlobTooLarge { blob: rel.to_owned(), size: stored, limit: MAX_JSON_SIZE });
    }
    let mut bytes = Vec::new();
    reader
        .take(MAX_JSON_SIZE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| OciError::io("reading", source.describe(rel), e))?;
    if bytes.len() as u64 > MAX_JSON_SIZE {
        return Err(OciError::BlobTooLarge { blob: rel.to_owned(), size: bytes.len() as u64, limit: MAX_JSON_SIZE });
    }
    Ok(Some(bytes))
}

/// Reads a JSON blob named by `desc`, verifying size and digest.
fn read_json_blob(source: &BlobSource, desc: &Descriptor, blob: &str) -> Result<Vec<u8>, OciError> {
    if desc.size() > MAX_JSON_SIZE {
        return Err(OciError::BlobTooLarge { blob: blob.to_owned(), size: desc.size(), limit: MAX_JSON_SIZE });
    }
    let digest = BlobDigest::parse(blob, desc.digest().as_ref())?;
    let location = digest.layout_path();
    let (reader, stored) = source
        .open(&location)?
        .ok_or_else(|| OciError::BlobMissing { blob: blob.to_owned(), location: source.describe(&location) })?;
    if stored != desc.size() {
        return Err(OciError::SizeMismatch { blob: blob.to_owned(), expected: desc.size(), actual: stored });
    }
    let mut verifier = VerifyingReader::new(reader, blob.to_owned(), &digest, Some(desc.size()));
    let verdict = verifier.verdict();
    let mut bytes = Vec::with_capacity(desc.size() as usize);
    if let Err(e) = verifier.read_to_end(&mut bytes) {
        return Err(verdict.failure(blob).unwrap_or_else(|| OciError::io("reading", source.describe(&location), e)));
    }
    Ok(bytes)
}

fn parse_json<T: for<'de> Deserialize<'de>>(blob: &str, bytes: &[u8]) -> Result<T, OciError> {
    serde_json::from_slice(bytes).map_err(|source| OciError::MalformedJson { blob: blob.to_owned(), source })
}

// ---------------------------------------------------------------------------
// `docker save` archives: `manifest.json` is a list of
// `{"Config": path, "RepoTags": [..], "Layers": [path, ..]}`; layers are
// (usually uncompressed) tars addressed by the diff_ids in the config.

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerArchiveImage {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// Docker image manifest v2 schema 2, with fields in the order skopeo
/// writes them so that the synthesised bytes (and digest) match its own.
#[derive(Serialize)]
struct Schema2Manifest {
    #[serde(rename = "schemaVersion")]
    schema_version: u32,
    #[serde(rename = "mediaType")]
    media_type: &'static str,
    config: Schema2Descriptor,
    layers: Vec<Schema2Descriptor>,
}

#[derive(Serialize)]
struct Schema2Descriptor {
    #[serde(rename = "mediaType")]
    media_type: &'static str,
    size: u64,
    digest: String,
}

fn open_docker(reference: &ImageReference, source: BlobSource, name: Option<&str>) -> Result<LocalImage, OciError> {
    let bytes = read_small(&source, "manifest.json")?.ok_or_else(|| OciError::NotAnImage {
        path: source.path().to_owned(),
        reason: "no `manifest.json`; not a docker save archive".into(),
    })?;
    let images: Vec<DockerArchiveImage> = parse_json("manifest.json", &bytes)?;
    let all_tags: Vec<String> = images.iter().flat_map(|i| i.repo_tags.iter().flatten().cloned()).collect();
    let image = match name {
        Some(name) => {
            let wanted = normalize_docker_name(name);
            images
                .iter()
                .find(|i| i.repo_tags.iter().flatten().any(|t| normalize_docker_name(t) == wanted))
                .ok_or_else(|| OciError::TagNotFound {
                    tag: name.to_owned(),
                    path: source.path().to_owned(),
                    available: all_tags.clone(),
                })?
        }
        None => match images.as_slice() {
            [one] => one,
            [] => {
                return Err(OciError::InvalidDocument {
                    blob: "manifest.json".into(),
                    reason: "it lists no images".into(),
                })
            }
            _ => return Err(OciError::AmbiguousImage { path: source.path().to_owned(), available: all_tags }),
        },
    };

    let config_blob = format!("config {}", image.config);
    let config_bytes = read_small(&source, &image.config)?
        .ok_or_else(|| OciError::BlobMissing { blob: config_blob.clone(), location: source.describe(&image.config) })?;
    let config_digest = sha256_digest(&config_bytes);
    if let Some(named) = digest_in_member_name(&image.config) {
        if named != config_digest {
            return Err(OciError::DigestMismatch { blob: config_blob, expected: named, actual: config_digest });
        }
    }
    let config: ImageConfiguration = parse_json(&config_blob, &config_bytes)?;
    let diff_ids = parse_diff_ids(&config, image.layers.len(), &config_blob)?;

    let count = image.layers.len();
    let mut layers = Vec::with_capacity(count);
    let mut descriptors = Vec::with_capacity(count);
    for (i, (location, diff_id)) in image.layers.iter().zip(diff_ids).enumerate() {
        let name = format!("layer {} of {count} ({diff_id}, {location})", i + 1);
        let (mut reader, stored) = source
            .open(location)?
            .ok_or_else(|| OciError::BlobMissing { blob: name.clone(), location: source.describe(location) })?;
        let mut head = [0u8; 4];
        let n =
            read_up_to(&mut reader, &mut head).map_err(|e| OciError::io("reading", source.describe(location), e))?;
        // skopeo describes a compressed layer by its uncompressed size too;
        // finding it takes one pass, but `docker save` never compresses.
        let size = match Compression::sniff(&head[..n]) {
            Compression::None => stored,
            _ => {
                let (reader, _) = source
                    .open(location)?
                    .ok_or_else(|| OciError::BlobMissing { blob: name.clone(), location: source.describe(location) })?;
                let mut decoded = decoder(reader, LayerEncoding::Sniff).map_err(|e| layer_err(&name, e))?;
                io::copy(&mut decoded, &mut io::sink()).map_err(|e| layer_err(&name, e))?
            }
        };
        descriptors.push(Schema2Descriptor { media_type: DOCKER_LAYER, size, digest: diff_id.to_string() });
        layers.push(LayerPlan {
            name,
            location: location.clone(),
            digest: diff_id,
            size,
            encoding: LayerEncoding::Sniff,
            diff_id: None,
            digest_of_decoded: true,
            encrypted: None,
        });
    }

    let synthesized = Schema2Manifest {
        schema_version: 2,
        media_type: DOCKER_MANIFEST,
        config: Schema2Descriptor { media_type: DOCKER_CONFIG, size: config_bytes.len() as u64, digest: config_digest },
        layers: descriptors,
    };
    let manifest_bytes = serde_json::to_vec(&synthesized)
        .map_err(|source| OciError::MalformedJson { blob: "synthesised manifest".into(), source })?;
    let manifest: ImageManifest = parse_json("synthesised manifest", &manifest_bytes)?;
    Ok(LocalImage {
        reference: reference.clone(),
        source,
        manifest_digest: sha256_digest(&manifest_bytes),
        manifest_bytes,
        manifest,
        config: ImageConfig::from_spec(&config),
        config_bytes,
        layers,
        unpack_limit: None,
    })
}

fn layer_err(name: &str, source: io::Error) -> OciError {
    OciError::Layer { layer: name.to_owned(), context: "decompressing".into(), source }
}

/// `docker save` names the config `<hex>.json` (or, since Docker 25,
/// `blobs/sha256/<hex>`): the name promises a digest, which we hold it to.
fn digest_in_member_name(member: &str) -> Option<String> {
    let is_hex = |s: &str| s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    let file = member.rsplit('/').next()?;
    let hex = file.strip_suffix(".json").unwrap_or(file);
    let in_blobs = member.trim_start_matches("./").starts_with("blobs/sha256/");
    (is_hex(hex) && (in_blobs || file.ends_with(".json"))).then(|| format!("sha256:{hex}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_digest_promised_by_docker_config_name() {
        let hex = "3c42c91f7209803fddd79c02bec69bbd3ab5392131e961267957d93e9337e7de";
        assert_eq!(digest_in_member_name(&format!("{hex}.json")), Some(format!("sha256:{hex}")));
        assert_eq!(digest_in_member_name(&format!("blobs/sha256/{hex}")), Some(format!("sha256:{hex}")));
        assert_eq!(digest_in_member_name("config.json"), None);
        assert_eq!(digest_in_member_name(hex), None);
    }

    #[test]
    fn images_can_move_between_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<LocalImage>();
        assert_send_sync::<OciError>();
    }

    #[test]
    fn host_platform_uses_go_names() {
        let p = Platform::host();
        assert_eq!(p.os, "linux");
        assert_ne!(p.architecture, "x86_64");
    }
}
