//! Image references in the transport syntax skopeo uses for local images.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::source::{BlobSource, TarIndex};
use crate::OciError;

/// Where a local image lives and which one of possibly several it is.
///
/// The string forms follow skopeo's transports (`containers-transports(5)`):
///
/// | string | meaning |
/// |---|---|
/// | `oci:PATH[:TAG]` | an OCI image layout directory |
/// | `oci-archive:FILE[:TAG]` | a tar of an OCI image layout |
/// | `docker-archive:FILE[:NAME:TAG]` | a `docker save` tar |
/// | `PATH[:TAG]` | detected: a directory with an `oci-layout` file is a layout, a file is an archive (OCI if it holds `oci-layout` and `index.json`, docker if it holds `manifest.json`) |
///
/// As in skopeo, the path ends at the first `:` after the transport, so paths
/// containing `:` cannot be named with a transport prefix. The TAG is matched
/// against the `org.opencontainers.image.ref.name` annotation in `index.json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageReference {
    /// An OCI image layout directory (image-spec `image-layout.md`).
    OciLayout {
        /// The layout directory.
        path: PathBuf,
        /// The `org.opencontainers.image.ref.name` to select, if any.
        tag: Option<String>,
    },
    /// A tar archive of an OCI image layout.
    OciArchive {
        /// The archive file.
        path: PathBuf,
        /// The `org.opencontainers.image.ref.name` to select, if any.
        tag: Option<String>,
    },
    /// A `docker save` archive (`manifest.json` with `Config`, `RepoTags`, `Layers`).
    DockerArchive {
        /// The archive file.
        path: PathBuf,
        /// The `NAME:TAG` to select from `RepoTags`, if any.
        name: Option<String>,
    },
}

impl ImageReference {
    /// Parses `reference`, resolving a relative path against `base`.
    ///
    /// Explicit transports (`oci:`, `oci-archive:`, `docker-archive:`) are
    /// parsed without touching the filesystem. A bare path is inspected to
    /// find out what it is, which reads the directory or the archive headers.
    pub fn parse(reference: &str, base: &Path) -> Result<ImageReference, OciError> {
        let invalid =
            |reason: &str| OciError::InvalidReference { reference: reference.to_owned(), reason: reason.to_owned() };
        let resolve = |p: &str| -> PathBuf {
            let p = Path::new(p);
            if p.is_absolute() {
                p.to_owned()
            } else {
                base.join(p)
            }
        };
        let split = |rest: &str| -> Result<(PathBuf, Option<String>), OciError> {
            let (path, tag) = match rest.split_once(':') {
                Some((p, t)) => (p, Some(t)),
                None => (rest, None),
            };
            if path.is_empty() {
                return Err(invalid("the path is empty"));
            }
            if tag == Some("") {
                return Err(invalid("the tag after ':' is empty"));
            }
            Ok((resolve(path), tag.map(str::to_owned)))
        };

        if let Some(rest) = reference.strip_prefix("oci:") {
            let (path, tag) = split(rest)?;
            return Ok(ImageReference::OciLayout { path, tag });
        }
        if let Some(rest) = reference.strip_prefix("oci-archive:") {
            let (path, tag) = split(rest)?;
            return Ok(ImageReference::OciArchive { path, tag });
        }
        if let Some(rest) = reference.strip_prefix("docker-archive:") {
            let (path, name) = split(rest)?;
            return Ok(ImageReference::DockerArchive { path, name });
        }
        if reference.is_empty() {
            return Err(invalid(
                "expected oci:PATH[:TAG], oci-archive:FILE[:TAG], docker-archive:FILE[:NAME:TAG] or PATH[:TAG]",
            ));
        }

        // A bare path: a string that exists as a whole is the path; otherwise
        // the path ends at the first ':' whose prefix exists, and the rest is
        // the tag (for docker archives NAME:TAG, which contains a ':' itself).
        let (path, tag) = if resolve(reference).exists() {
            (resolve(reference), None)
        } else {
            let found = reference
                .match_indices(':')
                .map(|(i, _)| (&reference[..i], &reference[i + 1..]))
                .find(|(p, _)| !p.is_empty() && resolve(p).exists());
            match found {
                Some((_, "")) => return Err(invalid("the tag after ':' is empty")),
                Some((p, t)) => (resolve(p), Some(t.to_owned())),
                None => {
                    return Err(OciError::NotAnImage {
                        path: resolve(reference),
                        reason: "no such file or directory".into(),
                    })
                }
            }
        };
        detect(path, tag)
    }

    /// The layout directory or archive file.
    pub fn path(&self) -> &Path {
        match self {
            ImageReference::OciLayout { path, .. }
            | ImageReference::OciArchive { path, .. }
            | ImageReference::DockerArchive { path, .. } => path,
        }
    }

    /// The tag (OCI) or `NAME:TAG` (docker archive) selecting the image, if any.
    pub fn tag(&self) -> Option<&str> {
        match self {
            ImageReference::OciLayout { tag, .. } | ImageReference::OciArchive { tag, .. } => tag.as_deref(),
            ImageReference::DockerArchive { name, .. } => name.as_deref(),
        }
    }
}

fn detect(path: PathBuf, tag: Option<String>) -> Result<ImageReference, OciError> {
    if path.is_dir() {
        if path.join("oci-layout").is_file() {
            return Ok(ImageReference::OciLayout { path, tag });
        }
        return Err(OciError::NotAnImage {
            path,
            reason: "a directory without an `oci-layout` file is not an OCI image layout".into(),
        });
    }
    match archive_kind(&path)? {
        ArchiveKind::Oci => Ok(ImageReference::OciArchive { path, tag }),
        ArchiveKind::Docker => Ok(ImageReference::DockerArchive { path, name: tag }),
    }
}

pub(crate) enum ArchiveKind {
    Oci,
    Docker,
}

/// Tells an OCI archive from a `docker save` archive by its members. Docker 25
/// and later write both kinds of metadata; the OCI form is preferred since it
/// carries a real manifest digest.
pub(crate) fn archive_kind(path: &Path) -> Result<ArchiveKind, OciError> {
    let source = BlobSource::Tar(Arc::new(TarIndex::build(path)?));
    archive_kind_of(&source)
}

pub(crate) fn archive_kind_of(source: &BlobSource) -> Result<ArchiveKind, OciError> {
    if source.exists("oci-layout") && source.exists("index.json") {
        Ok(ArchiveKind::Oci)
    } else if source.exists("manifest.json") {
        Ok(ArchiveKind::Docker)
    } else {
        Err(OciError::NotAnImage {
            path: source.path().to_owned(),
            reason: "the archive has neither `oci-layout` + `index.json` (OCI) nor `manifest.json` (docker save)"
                .into(),
        })
    }
}

impl fmt::Display for ImageReference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (transport, tag) = match self {
            ImageReference::OciLayout { tag, .. } => ("oci", tag),
            ImageReference::OciArchive { tag, .. } => ("oci-archive", tag),
            ImageReference::DockerArchive { name, .. } => ("docker-archive", name),
        };
        write!(f, "{transport}:{}", self.path().display())?;
        if let Some(tag) = tag {
            write!(f, ":{tag}")?;
        }
        Ok(())
    }
}

/// Normalises a docker image name the way the docker CLI does, so that
/// `busybox`, `busybox:latest` and `docker.io/library/busybox:latest` compare
/// equal. Digest references (`@sha256:…`) are left as they are.
pub(crate) fn normalize_docker_name(name: &str) -> String {
    let (repo, suffix) = match name.find('@') {
        Some(i) => (&name[..i], name[i..].to_owned()),
        None => {
            let last_slash = name.rfind('/').map_or(0, |i| i + 1);
            match name[last_slash..].rfind(':') {
                Some(i) => (&name[..last_slash + i], name[last_slash + i..].to_owned()),
                None => (name, ":latest".to_owned()),
            }
        }
    };
    let repo = match repo.split_once('/') {
        None => format!("docker.io/library/{repo}"),
        Some((first, rest)) if first.contains('.') || first.contains(':') || first == "localhost" => {
            let domain = if first == "index.docker.io" { "docker.io" } else { first };
            if domain == "docker.io" && !rest.contains('/') {
                format!("docker.io/library/{rest}")
            } else {
                format!("{domain}/{rest}")
            }
        }
        Some(_) => format!("docker.io/{repo}"),
    };
    format!("{repo}{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_explicit_transports_without_touching_disk() {
        let base = Path::new("/base");
        assert_eq!(
            ImageReference::parse("oci:img:v1", base).unwrap(),
            ImageReference::OciLayout { path: "/base/img".into(), tag: Some("v1".into()) }
        );
        assert_eq!(
            ImageReference::parse("oci-archive:/x/a.tar", base).unwrap(),
            ImageReference::OciArchive { path: "/x/a.tar".into(), tag: None }
        );
        assert_eq!(
            ImageReference::parse("docker-archive:a.tar:localhost:5000/foo:v2", base).unwrap(),
            ImageReference::DockerArchive { path: "/base/a.tar".into(), name: Some("localhost:5000/foo:v2".into()) }
        );
        assert_eq!(ImageReference::parse("oci:img:v1", base).unwrap().to_string(), "oci:/base/img:v1");
    }

    #[test]
    fn rejects_empty_paths_and_tags() {
        let base = Path::new("/base");
        for bad in ["oci:", "oci::tag", "oci:x:", "docker-archive:", ""] {
            assert!(matches!(ImageReference::parse(bad, base), Err(OciError::InvalidReference { .. })), "{bad:?}");
        }
    }

    #[test]
    fn detects_bare_layout_directory_and_tag() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("lay")).unwrap();
        std::fs::write(dir.path().join("lay/oci-layout"), "{}").unwrap();
        assert_eq!(
            ImageReference::parse("lay:t1", dir.path()).unwrap(),
            ImageReference::OciLayout { path: dir.path().join("lay"), tag: Some("t1".into()) }
        );
        std::fs::create_dir(dir.path().join("plain")).unwrap();
        assert!(matches!(ImageReference::parse("plain", dir.path()), Err(OciError::NotAnImage { .. })));
        assert!(matches!(ImageReference::parse("nothing:here", dir.path()), Err(OciError::NotAnImage { .. })));
    }

    #[test]
    fn normalizes_docker_names_like_the_docker_cli() {
        let n = normalize_docker_name;
        assert_eq!(n("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(n("foo/bar:v1"), "docker.io/foo/bar:v1");
        assert_eq!(n("docker.io/foo/bar:v1"), "docker.io/foo/bar:v1");
        assert_eq!(n("index.docker.io/busybox"), "docker.io/library/busybox:latest");
        assert_eq!(n("localhost:5000/x"), "localhost:5000/x:latest");
        assert_eq!(n("quay.io/a/b:c"), "quay.io/a/b:c");
    }
}
