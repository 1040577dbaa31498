//! Writing OCI image layouts (image-spec `image-layout.md`).

use std::collections::HashMap;
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use oci_spec::image::{Descriptor, ImageIndex, ImageIndexBuilder, ImageManifestBuilder, MediaType};

use crate::digest::HashingWriter;
use crate::image::{MAX_JSON_SIZE, OCI_CONFIG, OCI_MANIFEST, REF_NAME_ANNOTATION};
use crate::OciError;

const OCI_LAYOUT_CONTENT: &str = r#"{"imageLayoutVersion":"1.0.0"}"#;

/// Writes blobs, manifests and tags into an OCI image layout directory,
/// creating it if needed and keeping the images already in it.
///
/// Blobs are written to a temporary file next to their destination, hashed
/// on the way, and renamed into `blobs/sha256/<hex>`; `index.json` is
/// replaced atomically. Only SHA-256 is written.
#[derive(Debug)]
pub struct LayoutWriter {
    root: PathBuf,
    index: ImageIndex,
}

impl LayoutWriter {
    /// Opens the layout at `root`, creating the directory, `oci-layout`,
    /// `blobs/sha256/` and an empty `index.json` as needed.
    pub fn create(root: &Path) -> Result<LayoutWriter, OciError> {
        let blobs = root.join("blobs").join("sha256");
        fs::create_dir_all(&blobs).map_err(|e| OciError::io("creating directory", &blobs, e))?;
        let layout_file = root.join("oci-layout");
        if !layout_file.exists() {
            fs::write(&layout_file, OCI_LAYOUT_CONTENT).map_err(|e| OciError::io("writing", &layout_file, e))?;
        }
        let index_path = root.join("index.json");
        let index = match fs::File::open(&index_path) {
            Ok(f) => {
                let mut bytes = Vec::new();
                f.take(MAX_JSON_SIZE + 1)
                    .read_to_end(&mut bytes)
                    .map_err(|e| OciError::io("reading", &index_path, e))?;
                if bytes.len() as u64 > MAX_JSON_SIZE {
                    return Err(OciError::BlobTooLarge {
                        blob: "index.json".into(),
                        size: bytes.len() as u64,
                        limit: MAX_JSON_SIZE,
                    });
                }
                serde_json::from_slice(&bytes)
                    .map_err(|source| OciError::MalformedJson { blob: "index.json".into(), source })?
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => empty_index()?,
            Err(e) => return Err(OciError::io("opening", &index_path, e)),
        };
        let writer = LayoutWriter { root: root.to_owned(), index };
        writer.write_index()?;
        Ok(writer)
    }

    /// The layout directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Stores `bytes` as a blob and returns its descriptor.
    pub fn write_blob(&self, media_type: &str, bytes: &[u8]) -> Result<Descriptor, OciError> {
        self.write_blob_from(media_type, bytes)
    }

    /// Stores everything `reader` yields as a blob, streaming.
    pub fn write_blob_from(&self, media_type: &str, mut reader: impl Read) -> Result<Descriptor, OciError> {
        let mut w = self.blob_writer()?;
        io::copy(&mut reader, &mut w.file).map_err(|e| OciError::io("writing blob in", &self.root, e))?;
        w.commit(media_type)
    }

    /// Stores what `reader` yields as the blob `digest` (`sha256:`) without
    /// hashing it again: for a reader that fails its last read unless its
    /// bytes are `digest` (a decrypting reader checks the plaintext digest).
    /// Nothing appears under `blobs/` unless the reader reached its end.
    pub(crate) fn write_verified_blob(
        &self,
        media_type: &str,
        digest: &str,
        mut reader: impl Read,
    ) -> Result<Descriptor, OciError> {
        let mut w = self.blob_writer()?;
        w.file = HashingWriter::counting(w.file.inner);
        io::copy(&mut reader, &mut w.file).map_err(|e| OciError::io("writing blob in", &self.root, e))?;
        w.commit_as(media_type, digest)
    }

    pub(crate) fn blob_writer(&self) -> Result<BlobWriter, OciError> {
        let dir = self.root.join("blobs").join("sha256");
        let tmp = tempfile::Builder::new()
            .prefix(".tmp-blob-")
            .tempfile_in(&dir)
            .map_err(|e| OciError::io("creating a temporary file in", &dir, e))?;
        Ok(BlobWriter { dir, file: HashingWriter::new(tmp) })
    }

    /// Writes `config` (an OCI image config document) and a manifest naming
    /// it and `layers`, and tags the manifest `tag`. Returns the manifest's
    /// descriptor.
    pub fn add_image(&mut self, config: &[u8], layers: Vec<Descriptor>, tag: &str) -> Result<Descriptor, OciError> {
        let config = self.write_blob(OCI_CONFIG, config)?;
        let manifest = ImageManifestBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageManifest)
            .config(config)
            .layers(layers)
            .build()
            .map_err(|e| invalid("manifest", e.to_string()))?;
        let bytes = serde_json::to_vec(&manifest)
            .map_err(|source| OciError::MalformedJson { blob: "manifest".into(), source })?;
        let desc = self.write_blob(OCI_MANIFEST, &bytes)?;
        self.tag(desc.clone(), tag)?;
        Ok(desc)
    }

    /// Lists `manifest` in `index.json` under `tag`, replacing whatever had
    /// that tag before.
    pub fn tag(&mut self, mut manifest: Descriptor, tag: &str) -> Result<(), OciError> {
        if tag.is_empty() {
            return Err(invalid("tag", "the tag is empty".into()));
        }
        let mut annotations = manifest.annotations().clone().unwrap_or_default();
        annotations.insert(REF_NAME_ANNOTATION.to_owned(), tag.to_owned());
        manifest.set_annotations(Some(annotations));
        let mut manifests: Vec<Descriptor> = self
            .index
            .manifests()
            .iter()
            .filter(|d| {
                d.annotations()
                    .as_ref()
                    .and_then(|a: &HashMap<String, String>| a.get(REF_NAME_ANNOTATION))
                    .map(String::as_str)
                    != Some(tag)
            })
            .cloned()
            .collect();
        manifests.push(manifest);
        self.index.set_manifests(manifests);
        self.write_index()
    }

    fn write_index(&self) -> Result<(), OciError> {
        let bytes = serde_json::to_vec(&self.index)
            .map_err(|source| OciError::MalformedJson { blob: "index.json".into(), source })?;
        let path = self.root.join("index.json");
        let mut tmp = tempfile::Builder::new()
            .prefix(".tmp-index-")
            .tempfile_in(&self.root)
            .map_err(|e| OciError::io("creating a temporary file in", &self.root, e))?;
        tmp.write_all(&bytes).map_err(|e| OciError::io("writing", &path, e))?;
        set_readable(tmp.as_file()).map_err(|e| OciError::io("writing", &path, e))?;
        tmp.persist(&path).map_err(|e| OciError::io("writing", &path, e.error))?;
        Ok(())
    }
}

/// A blob being written: bytes go to a temporary file and are hashed.
pub(crate) struct BlobWriter {
    pub(crate) dir: PathBuf,
    pub(crate) file: HashingWriter<tempfile::NamedTempFile>,
}

impl BlobWriter {
    /// Moves the blob to its content address.
    pub(crate) fn commit(self, media_type: &str) -> Result<Descriptor, OciError> {
        let (tmp, digest, size) = self.file.finish();
        Self::persist(&self.dir, tmp, media_type, &digest, size)
    }

    /// Moves the blob to `digest`, which the caller verified.
    pub(crate) fn commit_as(self, media_type: &str, digest: &str) -> Result<Descriptor, OciError> {
        let (tmp, _, size) = self.file.finish();
        Self::persist(&self.dir, tmp, media_type, digest, size)
    }

    fn persist(
        dir: &Path,
        mut tmp: tempfile::NamedTempFile,
        media_type: &str,
        digest: &str,
        size: u64,
    ) -> Result<Descriptor, OciError> {
        tmp.flush().map_err(|e| OciError::io("writing blob in", dir, e))?;
        set_readable(tmp.as_file()).map_err(|e| OciError::io("writing blob in", dir, e))?;
        let hex = digest.strip_prefix("sha256:").ok_or_else(|| invalid("blob", format!("{digest} is not sha256")))?;
        let path = dir.join(hex);
        tmp.persist(&path).map_err(|e| OciError::io("writing", &path, e.error))?;
        let digest: oci_spec::image::Digest =
            digest.parse().map_err(|e: oci_spec::OciSpecError| invalid("blob", e.to_string()))?;
        Ok(Descriptor::new(MediaType::from(media_type), size, digest))
    }
}

/// Temporary files are created `0600`; blobs are meant to be shared.
fn set_readable(f: &fs::File) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    f.set_permissions(fs::Permissions::from_mode(0o644))
}

fn empty_index() -> Result<ImageIndex, OciError> {
    ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(Vec::<Descriptor>::new())
        .build()
        .map_err(|e| invalid("index.json", e.to_string()))
}

fn invalid(blob: &str, reason: String) -> OciError {
    OciError::InvalidDocument { blob: blob.to_owned(), reason }
}
