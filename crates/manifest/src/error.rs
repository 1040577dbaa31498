//! The error every manifest function returns, and the field paths it names.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// A manifest that could not be read, parsed or converted, with where the
/// problem is: the file, the line and column when known, and the field path
/// (`containers[1].ports[0].targetPort`).
///
/// Displays as `pod.yaml:12:9: containers[0].resources.cpu: invalid CPU
/// quantity "12x": expected millicores like 500m or cores like 0.5`.
#[derive(Debug)]
pub struct ManifestError {
    source_name: String,
    location: Option<(usize, usize)>,
    field: String,
    kind: ManifestErrorKind,
}

/// What went wrong, without the location; see [`ManifestError`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestErrorKind {
    /// The manifest file could not be read.
    #[error("cannot read the manifest: {0}")]
    Read(#[source] io::Error),
    /// The manifest is larger than [`crate::MAX_MANIFEST_BYTES`].
    #[error("the manifest is {size} bytes, more than the limit of {limit}; is this the right file?")]
    TooLarge {
        /// The manifest's size in bytes.
        size: u64,
        /// The limit it exceeds.
        limit: u64,
    },
    /// The text is not valid YAML or JSON, does not have the manifest's shape
    /// (unknown or missing field, wrong type, bad value), or breaks a rule
    /// across fields (duplicate port, undefined volume).
    #[error("{0}")]
    Invalid(String),
    /// A `secret: {file: ...}` could not be read.
    #[error("cannot read secret file {}: {source}", path.display())]
    SecretFile {
        /// The file, after resolving it against the manifest's directory.
        path: PathBuf,
        /// Why it could not be read.
        #[source]
        source: io::Error,
    },
    /// A `secret: {file: ...}` is larger than [`crate::MAX_SECRET_BYTES`].
    #[error("secret file {} is larger than the limit of {limit} bytes", path.display())]
    SecretTooLarge {
        /// The file, after resolving it against the manifest's directory.
        path: PathBuf,
        /// The limit it exceeds.
        limit: u64,
    },
}

impl ManifestError {
    pub(crate) fn new(source_name: &str, kind: ManifestErrorKind) -> Self {
        ManifestError { source_name: source_name.to_owned(), location: None, field: String::new(), kind }
    }

    pub(crate) fn at(mut self, location: Option<(usize, usize)>, field: &FieldPath) -> Self {
        self.location = location;
        self.field = field.to_string();
        self
    }

    /// The file name (or whatever name the caller gave the text).
    pub fn source_name(&self) -> &str {
        &self.source_name
    }

    /// The 1-based line, when known.
    pub fn line(&self) -> Option<usize> {
        self.location.map(|(line, _)| line)
    }

    /// The 1-based column, when known.
    pub fn column(&self) -> Option<usize> {
        self.location.map(|(_, column)| column)
    }

    /// The path of the offending field, like `containers[0].env.HOME`; empty
    /// when the problem is not about one field.
    pub fn field(&self) -> &str {
        &self.field
    }

    /// What went wrong.
    pub fn kind(&self) -> &ManifestErrorKind {
        &self.kind
    }
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source_name)?;
        if let Some((line, column)) = self.location {
            write!(f, ":{line}:{column}")?;
        }
        f.write_str(": ")?;
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        fmt::Display::fmt(&self.kind, f)
    }
}

impl std::error::Error for ManifestError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        // The kind's text is already part of our Display; only its cause is news.
        std::error::Error::source(&self.kind)
    }
}

/// One step of a [`FieldPath`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Segment {
    Key(String),
    Index(usize),
}

/// A path into the document, displayed like `containers[1].ports[0]`; the
/// same notation `serde_path_to_error` uses, so that errors found during and
/// after deserialization read alike.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct FieldPath(pub(crate) Vec<Segment>);

impl FieldPath {
    pub(crate) fn key(&self, key: &str) -> FieldPath {
        let mut path = self.clone();
        path.0.push(Segment::Key(key.to_owned()));
        path
    }

    pub(crate) fn index(&self, index: usize) -> FieldPath {
        let mut path = self.clone();
        path.0.push(Segment::Index(index));
        path
    }

    pub(crate) fn from_serde(path: &serde_path_to_error::Path) -> FieldPath {
        use serde_path_to_error::Segment as S;
        FieldPath(
            path.iter()
                .map(|segment| match segment {
                    S::Seq { index } => Segment::Index(*index),
                    S::Map { key } => Segment::Key(key.clone()),
                    S::Enum { variant } => Segment::Key(variant.clone()),
                    S::Unknown => Segment::Key("?".to_owned()),
                })
                .collect(),
        )
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, segment) in self.0.iter().enumerate() {
            match segment {
                Segment::Index(index) => write!(f, "[{index}]")?,
                Segment::Key(key) if i == 0 => f.write_str(key)?,
                Segment::Key(key) => write!(f, ".{key}")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_path_displays_like_serde_path_to_error() {
        let path = FieldPath::default().key("containers").index(1).key("ports").index(0).key("targetPort");
        assert_eq!(path.to_string(), "containers[1].ports[0].targetPort");
        assert_eq!(FieldPath::default().to_string(), "");
    }

    #[test]
    fn display_names_file_line_column_and_field() {
        let err = ManifestError::new("pod.yaml", ManifestErrorKind::Invalid("bad".into()))
            .at(Some((12, 9)), &FieldPath::default().key("replicas"));
        assert_eq!(err.to_string(), "pod.yaml:12:9: replicas: bad");
        let err = ManifestError::new("pod.yaml", ManifestErrorKind::Invalid("bad".into()));
        assert_eq!(err.to_string(), "pod.yaml: bad");
    }
}
