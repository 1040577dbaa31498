//! Just enough of OCI image manifests and indexes (image-spec v1.1
//! `manifest.md`, `image-index.md`) and Docker's v2 schema 2 manifests and
//! manifest lists to validate a push and to find what a manifest keeps
//! alive. Full document types are `oci-spec`'s business; this reads only
//! the descriptors.

use serde::Deserialize;

use crate::{Digest, StoreError};

/// Largest manifest the store accepts (the limit distribution uses).
pub const MAX_MANIFEST_SIZE: u64 = 4 * 1024 * 1024;

/// Media types of the manifests the store understands.
pub mod media_type {
    /// OCI image manifest.
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    /// OCI image index (multi-platform).
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    /// Docker image manifest v2 schema 2.
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    /// Docker manifest list (multi-platform).
    pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
    /// Every manifest media type the store accepts.
    pub const ALL: [&str; 4] = [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST];

    /// Whether this media type is a list of manifests rather than an image.
    pub fn is_index(media_type: &str) -> bool {
        media_type == OCI_INDEX || media_type == DOCKER_MANIFEST_LIST
    }
}

/// A content descriptor as far as the store cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescriptorRef {
    /// The referenced content's digest.
    pub digest: Digest,
    /// Its size in bytes, as the manifest claims.
    pub size: u64,
    /// Whether the manifest says the blob may be fetched from elsewhere
    /// (`urls`, "non-distributable" layers), so it need not be pushed.
    pub external: bool,
}

/// What a valid manifest is and what it points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedManifest {
    /// One of [`media_type::ALL`].
    pub media_type: String,
    /// Config and layers (images) — plain blobs.
    pub blobs: Vec<DescriptorRef>,
    /// Child manifests (indexes).
    pub manifests: Vec<DescriptorRef>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawManifest {
    schema_version: Option<u64>,
    media_type: Option<String>,
    config: Option<RawDescriptor>,
    layers: Option<Vec<RawDescriptor>>,
    manifests: Option<Vec<RawDescriptor>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawDescriptor {
    media_type: Option<String>,
    digest: String,
    size: u64,
    #[serde(default)]
    urls: Vec<String>,
}

fn invalid(msg: impl Into<String>) -> StoreError {
    StoreError::ManifestInvalid(msg.into())
}

/// The media type without parameters (`; charset=utf-8`), lowercased.
fn essence(content_type: &str) -> String {
    content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase()
}

impl ParsedManifest {
    /// Validates `bytes` as a manifest sent with `content_type` (the HTTP
    /// `Content-Type`, if any) and lists its references.
    ///
    /// The media type is the document's `mediaType` field, else the content
    /// type, else inferred (`manifests` → OCI index, `config` → OCI image);
    /// field and header must agree when both are given. Schema 1 manifests
    /// are refused.
    pub fn parse(bytes: &[u8], content_type: Option<&str>) -> Result<ParsedManifest, StoreError> {
        if bytes.len() as u64 > MAX_MANIFEST_SIZE {
            return Err(StoreError::TooLarge { what: "manifest", limit: MAX_MANIFEST_SIZE });
        }
        let raw: RawManifest =
            serde_json::from_slice(bytes).map_err(|e| invalid(format!("not a JSON manifest: {e}")))?;
        match raw.schema_version {
            Some(2) => {}
            Some(1) => return Err(invalid("schema 1 manifests are not supported; push a schema 2 or OCI manifest")),
            Some(v) => return Err(invalid(format!("schemaVersion {v} is not supported; expected 2"))),
            None => return Err(invalid("schemaVersion is missing")),
        }
        let declared = content_type
            .map(essence)
            .filter(|t| !t.is_empty() && t != "application/json" && t != "application/octet-stream");
        let field = raw.media_type.as_deref().map(essence);
        if let (Some(d), Some(f)) = (&declared, &field) {
            if d != f {
                return Err(invalid(format!("Content-Type {d} does not match the manifest's mediaType {f}")));
            }
        }
        let media_type = match field.or(declared) {
            Some(t) => t,
            None if raw.manifests.is_some() => media_type::OCI_INDEX.to_owned(),
            None => media_type::OCI_MANIFEST.to_owned(),
        };
        if !media_type::ALL.contains(&media_type.as_str()) {
            return Err(invalid(format!(
                "media type {media_type} is not a manifest type this registry stores (OCI or Docker v2 manifest or index)"
            )));
        }
        let mut parsed = ParsedManifest { media_type, blobs: Vec::new(), manifests: Vec::new() };
        if media_type::is_index(&parsed.media_type) {
            if raw.config.is_some() || raw.layers.is_some() {
                return Err(invalid("an index has no config or layers"));
            }
            let manifests = raw.manifests.ok_or_else(|| invalid("an index needs a manifests array"))?;
            for d in manifests {
                parsed.manifests.push(descriptor(d, "manifests")?);
            }
        } else {
            if raw.manifests.is_some() {
                return Err(invalid("an image manifest has no manifests array"));
            }
            let config = raw.config.ok_or_else(|| invalid("an image manifest needs a config"))?;
            parsed.blobs.push(descriptor(config, "config")?);
            for d in raw.layers.ok_or_else(|| invalid("an image manifest needs a layers array"))? {
                parsed.blobs.push(descriptor(d, "layers")?);
            }
        }
        Ok(parsed)
    }
}

fn descriptor(raw: RawDescriptor, field: &str) -> Result<DescriptorRef, StoreError> {
    let digest = raw.digest.parse().map_err(|e| invalid(format!("{field}: {e}")))?;
    if raw.media_type.as_deref().is_none_or(str::is_empty) {
        return Err(invalid(format!("{field}: descriptor {digest} has no mediaType")));
    }
    Ok(DescriptorRef { digest, size: raw.size, external: !raw.urls.is_empty() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(mt: &str, data: &[u8]) -> String {
        format!(r#"{{"mediaType":"{mt}","digest":"{}","size":{}}}"#, Digest::of(data), data.len())
    }

    #[test]
    fn reads_config_and_layers_of_an_oci_manifest() {
        let m = format!(
            r#"{{"schemaVersion":2,"config":{},"layers":[{}]}}"#,
            desc("application/vnd.oci.image.config.v1+json", b"c"),
            desc("application/vnd.oci.image.layer.v1.tar+gzip", b"l")
        );
        let p = ParsedManifest::parse(m.as_bytes(), Some(media_type::OCI_MANIFEST)).unwrap();
        assert_eq!(p.media_type, media_type::OCI_MANIFEST);
        assert_eq!(p.blobs.iter().map(|d| d.digest).collect::<Vec<_>>(), vec![Digest::of(b"c"), Digest::of(b"l")]);
        assert!(p.manifests.is_empty());
    }

    #[test]
    fn infers_an_index_and_lists_its_children() {
        let m = format!(r#"{{"schemaVersion":2,"manifests":[{}]}}"#, desc(media_type::OCI_MANIFEST, b"m"));
        let p = ParsedManifest::parse(m.as_bytes(), None).unwrap();
        assert_eq!(p.media_type, media_type::OCI_INDEX);
        assert_eq!(p.manifests[0].digest, Digest::of(b"m"));
    }

    #[test]
    fn rejects_invalid_manifests() {
        let layer = desc("x", b"l");
        for (bad, ct) in [
            ("not json".to_owned(), None),
            (r#"{"schemaVersion":1,"fsLayers":[]}"#.to_owned(), None),
            (r#"{"config":{}}"#.to_owned(), None),
            (format!(r#"{{"schemaVersion":2,"layers":[{layer}]}}"#), None),
            (
                format!(r#"{{"schemaVersion":2,"mediaType":"{}","manifests":[]}}"#, media_type::OCI_INDEX),
                Some(media_type::OCI_MANIFEST),
            ),
            (r#"{"schemaVersion":2,"mediaType":"text/plain","manifests":[]}"#.to_owned(), None),
            (r#"{"schemaVersion":2,"manifests":[{"mediaType":"x","digest":"sha256:00","size":1}]}"#.to_owned(), None),
            (r#"{"schemaVersion":2,"manifests":[{"mediaType":"x","digest":"md5:00","size":1}]}"#.to_owned(), None),
            (r#"{"schemaVersion":2,"manifests":[{"mediaType":"x","digest":"sha256:00","size":-1}]}"#.to_owned(), None),
        ] {
            assert!(matches!(ParsedManifest::parse(bad.as_bytes(), ct), Err(StoreError::ManifestInvalid(_))), "{bad}");
        }
    }
}
