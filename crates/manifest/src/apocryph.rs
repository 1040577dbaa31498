//! Apocryph's spellings (`spec/MANIFEST.md` of comrade-coop/apocryph) that
//! sealpod's own form does not have: the `type`/`version` header, a
//! container's HTTP `port` + `host`, volumes written as `type: volume |
//! emptyDir | secret` with `resources.storage` and `source`, and names derived
//! for unnamed containers.
//!
//! Values are checked here while deserializing (so errors carry positions);
//! what they mean on the wire is decided in `convert`.

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use std::fmt;

use crate::pod::{checked_str, quoted, Bytes};

/// The only manifest type read: Apocryph's.
pub(crate) const MANIFEST_TYPE: &str = "trustedpods";

/// The only manifest version read.
pub(crate) const MANIFEST_VERSION: &str = "1.0";

/// `type: trustedpods`: the manifest says it is Apocryph's, which also gives
/// ports Apocryph's meaning (see `docs/manifest.md`).
#[derive(Debug)]
pub(crate) struct ManifestType;

impl<'de> Deserialize<'de> for ManifestType {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        checked_str(deserializer, "trustedpods", |text| {
            if text == MANIFEST_TYPE {
                Ok(ManifestType)
            } else {
                Err(format!(
                    "unknown manifest type {}: sealpod reads pod manifests of type {MANIFEST_TYPE} \
                     (Apocryph's), or none",
                    quoted(text)
                ))
            }
        })
    }
}

/// `version: "1.0"` (or `1.0`, `1`, as YAML may read it).
#[derive(Debug)]
pub(crate) struct ManifestVersion;

impl<'de> Deserialize<'de> for ManifestVersion {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct VersionVisitor;
        fn refuse<E: de::Error>(written: &str) -> E {
            E::custom(format_args!(
                "manifest version {written} is not supported: this sealpod reads version {MANIFEST_VERSION}"
            ))
        }
        impl Visitor<'_> for VersionVisitor {
            type Value = ManifestVersion;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                write!(f, "the manifest version, \"{MANIFEST_VERSION}\"")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<ManifestVersion, E> {
                match text {
                    "1.0" | "1" => Ok(ManifestVersion),
                    _ => Err(refuse(&quoted(text))),
                }
            }
            fn visit_f64<E: de::Error>(self, n: f64) -> Result<ManifestVersion, E> {
                if n == 1.0 {
                    Ok(ManifestVersion)
                } else {
                    Err(refuse(&n.to_string()))
                }
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<ManifestVersion, E> {
                if n == 1 {
                    Ok(ManifestVersion)
                } else {
                    Err(refuse(&n.to_string()))
                }
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<ManifestVersion, E> {
                Err(refuse(&n.to_string()))
            }
        }
        deserializer.deserialize_any(VersionVisitor)
    }
}

/// The hostname an HTTP port is served under: a DNS name, kept lowercase.
#[derive(Debug, Clone)]
pub(crate) struct HttpHost(pub String);

impl<'de> Deserialize<'de> for HttpHost {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        checked_str(deserializer, "a hostname like app.example.com", |text| {
            check_hostname(text).map(HttpHost).map_err(|problem| format!("invalid host {}: {problem}", quoted(text)))
        })
    }
}

pub use sealpod_proto::check_hostname;

/// `type:` of an Apocryph volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", expecting = "volume, emptyDir or secret")]
pub(crate) enum VolumeType {
    Volume,
    EmptyDir,
    Secret,
}

/// `resources:` of an Apocryph volume.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a map with storage, like {storage: 8Gi}")]
pub(crate) struct VolumeResources {
    pub storage: Option<Bytes>,
}

/// A container name made from its image reference, for a container written
/// without one: the last path component without tag, digest or archive
/// extension, as a DNS label (`./images/web-app.tar` → `web-app`,
/// `registry/team/API:1.2` → `api`); `container` when nothing is left.
pub(crate) fn name_from_image(image: &str) -> String {
    let mut rest = image;
    for scheme in ["oci-archive:", "docker-archive:", "oci:", "docker://", "network:"] {
        if let Some(stripped) = rest.strip_prefix(scheme) {
            rest = stripped;
        }
    }
    let rest = rest.split('@').next().unwrap_or_default();
    let last = rest.trim_end_matches('/').rsplit('/').next().unwrap_or_default();
    let without_tag = last.split(':').next().unwrap_or_default();
    let mut stem = without_tag;
    for ext in [".tar.gz", ".tgz", ".tar", ".oci"] {
        if let Some(s) = stem.strip_suffix(ext) {
            stem = s;
        }
    }
    let mut name = String::new();
    for c in stem.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            name.push(c);
        } else if !name.is_empty() && !name.ends_with('-') {
            name.push('-');
        }
    }
    // Room for a `-N` suffix when the name is taken.
    name.truncate(56);
    let name = name.trim_end_matches('-').to_owned();
    if name.is_empty() {
        "container".to_owned()
    } else {
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_derived_from_images_are_dns_labels() {
        assert_eq!(name_from_image("localregistryname:tag"), "localregistryname");
        assert_eq!(name_from_image("./images/web-app.tar"), "web-app");
        assert_eq!(name_from_image("oci-archive:./Build/My_App.tar:1.0"), "my-app");
        assert_eq!(name_from_image("docker://registry:5000/team/API:1.2"), "api");
        assert_eq!(name_from_image("./layout@sha256:abcd"), "layout");
        assert_eq!(name_from_image("./__/"), "container");
        assert_eq!(name_from_image(&"x".repeat(100)).len(), 56);
    }

    #[test]
    fn hostnames_are_lowercased_and_checked() {
        assert_eq!(check_hostname("Example.COM").unwrap(), "example.com");
        assert_eq!(check_hostname("localhost").unwrap(), "localhost");
        for bad in ["", "example.com:80", "http://x", "-a.com", "a..b", "a_b.com", &"a".repeat(64)] {
            assert!(check_hostname(bad).is_err(), "{bad}");
        }
    }
}
