//! The pod manifest: the YAML or JSON a user writes to describe a pod, parsed,
//! checked and converted into the normalized wire form, [`sealpod_proto::Pod`].
//!
//! The format follows Apocryph's `spec/MANIFEST.md` (containers with image,
//! command/args, workingDir, env, ports, volumes and resources; replicas; pod
//! volumes), with the Kubernetes spellings it borrows. `docs/manifest.md`
//! describes every field; in short:
//!
//! ```yaml
//! containers:
//!   - name: web
//!     image: ./web.tar
//!     ports: [80, "8443:443"]
//!     resources: {cpu: 500m, memory: 256Mi}
//! ```
//!
//! This crate is the one place where user form becomes wire form: shorthands
//! (`"8080:80"`, `env` as a map, inline volumes, quantities like `1Gi`) are
//! expanded, rules across fields are checked (unique names and ports, volumes
//! that exist), and `secret: {file}` volumes are read from disk. Unknown
//! fields are errors, and every error names the file, the line and column
//! where the deserializer knows them, and the field path
//! (`pod.yaml:12:9: containers[0].resources.cpu: invalid CPU quantity ...`).
//! Parsing never panics and caps the input at [`MAX_MANIFEST_BYTES`].
//!
//! It leaves to others: the wire types and their encoding (`sealpod-proto`),
//! publishing images and replacing the local image reference by a content
//! address (`sealpod-publisher`), and what a provider makes of the pod. Golem
//! payload manifests (GAP-4/GAP-5) will join this crate as a `payload` module.
//!
//! Hand-written here: the quantity grammar (a small, exact subset of
//! Kubernetes' `resource.Quantity`, no crate offers it standalone) and the
//! shell-like word splitter (for precise errors and no comment syntax).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod apocryph;
mod convert;
mod error;
mod locate;
mod pod;
mod quantity;
mod shell;

use std::io::Read;
use std::path::Path;

pub use apocryph::check_hostname;
pub use error::{ManifestError, ManifestErrorKind};
pub use quantity::{parse_bytes, parse_cpu, QuantityError};

use error::FieldPath;
use pod::PodManifest;

/// The largest manifest accepted, in bytes.
pub const MAX_MANIFEST_BYTES: usize = 1 << 20;

/// The largest `secret: {file}` read into a pod, in bytes.
pub const MAX_SECRET_BYTES: u64 = 1 << 20;

/// The syntax a manifest is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// YAML 1.2 (a single document).
    Yaml,
    /// JSON.
    Json,
}

impl Format {
    /// JSON for a `.json` extension (any case), YAML otherwise.
    pub fn from_path(path: &Path) -> Format {
        match path.extension() {
            Some(ext) if ext.eq_ignore_ascii_case("json") => Format::Json,
            _ => Format::Yaml,
        }
    }
}

/// Parses a pod manifest written in `format` and converts it to the wire form.
///
/// `source_name` is what errors call the text (usually its file name).
/// `base_dir` is the directory relative `secret: {file}` paths are resolved
/// against; without one, secret files are refused, so that text from
/// elsewhere cannot make the caller read local files.
pub fn parse_pod_manifest(
    text: &str,
    format: Format,
    source_name: &str,
    base_dir: Option<&Path>,
) -> Result<sealpod_proto::Pod, ManifestError> {
    parse_pod_manifest_for_publisher(text, format, source_name, base_dir).map(|(pod, _)| pod)
}

/// What the manifest asks of the publisher before the pod goes on the wire:
/// fields that never travel.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublisherSide {
    /// The containers (by index) with `privateImage: true`: their images are
    /// encrypted and sent by content address and key.
    pub private_images: Vec<usize>,
    /// What the user should know about how the manifest was read: names
    /// derived for unnamed containers, fields ignored. One line each, with
    /// the field path (`containers[0]: no name given; named web ...`).
    pub notes: Vec<String>,
}

/// [`parse_pod_manifest`], with what the publisher is to do before sending.
pub fn parse_pod_manifest_for_publisher(
    text: &str,
    format: Format,
    source_name: &str,
    base_dir: Option<&Path>,
) -> Result<(sealpod_proto::Pod, PublisherSide), ManifestError> {
    if text.len() > MAX_MANIFEST_BYTES {
        return Err(ManifestError::new(
            source_name,
            ManifestErrorKind::TooLarge { size: text.len() as u64, limit: MAX_MANIFEST_BYTES as u64 },
        ));
    }
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let manifest = deserialize(text, format).map_err(|problem| {
        ManifestError::new(source_name, ManifestErrorKind::Invalid(problem.message)).at(problem.location, &problem.path)
    })?;
    convert::to_wire(manifest, base_dir).map_err(|invalid| {
        let location = locate::locate(text, format, &invalid.path);
        ManifestError::new(source_name, invalid.kind).at(location, &invalid.path)
    })
}

/// Reads the manifest at `path` (JSON if it ends in `.json`, else YAML) and
/// converts it to the wire form; secret files are resolved against the
/// manifest's directory.
pub fn load_pod_manifest(path: &Path) -> Result<sealpod_proto::Pod, ManifestError> {
    load_pod_manifest_for_publisher(path).map(|(pod, _)| pod)
}

/// [`load_pod_manifest`], with what the publisher is to do before sending.
pub fn load_pod_manifest_for_publisher(path: &Path) -> Result<(sealpod_proto::Pod, PublisherSide), ManifestError> {
    let source_name = path.display().to_string();
    let read_error = |err| ManifestError::new(&source_name, ManifestErrorKind::Read(err));
    let file = std::fs::File::open(path).map_err(read_error)?;
    let mut bytes = Vec::new();
    file.take(MAX_MANIFEST_BYTES as u64 + 1).read_to_end(&mut bytes).map_err(read_error)?;
    if bytes.len() > MAX_MANIFEST_BYTES {
        let size = std::fs::metadata(path).map_or(bytes.len() as u64, |m| m.len());
        return Err(ManifestError::new(
            &source_name,
            ManifestErrorKind::TooLarge { size, limit: MAX_MANIFEST_BYTES as u64 },
        ));
    }
    let text = String::from_utf8(bytes).map_err(|err| {
        read_error(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("not UTF-8 text (invalid byte at offset {})", err.utf8_error().valid_up_to()),
        ))
    })?;
    // `pod.yaml` has the parent "", which joins as the current directory
    // without adding a `./` to paths in messages.
    let base_dir = path.parent().unwrap_or(Path::new(""));
    parse_pod_manifest_for_publisher(&text, Format::from_path(path), &source_name, Some(base_dir))
}

/// A deserialization error, taken apart.
struct Problem {
    path: FieldPath,
    location: Option<(usize, usize)>,
    message: String,
}

fn deserialize(text: &str, format: Format) -> Result<PodManifest, Problem> {
    match format {
        Format::Json => {
            let mut deserializer = serde_json::Deserializer::from_str(text);
            let manifest = serde_path_to_error::deserialize(&mut deserializer)
                .map_err(|err| json_problem(FieldPath::from_serde(err.path()), err.inner()))?;
            deserializer.end().map_err(|err| json_problem(FieldPath::default(), &err))?;
            Ok(manifest)
        }
        Format::Yaml => {
            if yaml_flow_work(text) > MAX_YAML_FLOW_WORK {
                return Err(Problem {
                    path: FieldPath::default(),
                    location: None,
                    message: "the YAML has too many nested or repeated flow collections ([...] and {...}) \
                              to parse safely; write them in block style, or move large contents into a secret file"
                        .to_owned(),
                });
            }
            if text.trim().is_empty() {
                return Err(Problem {
                    path: FieldPath::default(),
                    location: None,
                    message: "the manifest is empty; it needs at least containers:".to_owned(),
                });
            }
            serde_path_to_error::deserialize(serde_yaml_ng::Deserializer::from_str(text))
                .map_err(|err| yaml_problem(FieldPath::from_serde(err.path()), err.inner()))
        }
    }
}

/// The most [`yaml_flow_work`] a YAML manifest may need: about a third of a
/// second of libyaml's time in a release build.
const MAX_YAML_FLOW_WORK: u64 = 1 << 28;

/// An upper bound on libyaml's work for flow collections, computed in one
/// cheap pass before handing it the text.
///
/// libyaml keeps one entry per open flow collection (`[` or `{`) and walks
/// all of them for every token, so deeply nested flow collections cost it
/// time quadratic in the input: a megabyte of `[` takes minutes. Telling
/// which brackets are real would need a YAML scanner of our own, so this
/// over-counts instead: every `[` and `{` counts as still open (so the depth
/// is never underestimated), and every place a token could start counts as a
/// token. The sum over those places of the depth bound is at least what
/// libyaml will do; ordinary manifests stay far below the limit.
fn yaml_flow_work(text: &str) -> u64 {
    let mut open: u64 = 0;
    let mut work: u64 = 0;
    let mut previous_alphanumeric = false;
    for byte in text.bytes() {
        if byte == b'[' || byte == b'{' {
            open += 1;
        }
        // A token can only start with an alphanumeric character right after a
        // character that is not one: scalars, anchors and tags swallow runs.
        let alphanumeric = byte.is_ascii_alphanumeric();
        let inside_a_run = alphanumeric && previous_alphanumeric;
        if !(byte.is_ascii_whitespace() || inside_a_run) {
            work = work.saturating_add(open);
        }
        previous_alphanumeric = alphanumeric;
    }
    work
}

fn json_problem(path: FieldPath, err: &serde_json::Error) -> Problem {
    let mut message = err.to_string();
    let location = (err.line() > 0).then(|| (err.line(), err.column()));
    if let Some((line, column)) = location {
        message = message.replacen(&format!(" at line {line} column {column}"), "", 1);
    }
    Problem { path, location, message }
}

fn yaml_problem(path: FieldPath, err: &serde_yaml_ng::Error) -> Problem {
    let mut message = err.to_string();
    let location = err.location().map(|at| (at.line(), at.column()));
    if let Some((line, column)) = location {
        message = message.replacen(&format!(" at line {line} column {column}"), "", 1);
    }
    // serde_yaml_ng puts its own path (the same notation, maybe shorter) in
    // front of the message; ours is more precise and printed separately.
    for len in (1..=path.0.len()).rev() {
        let prefix = format!("{}: ", FieldPath(path.0[..len].to_vec()));
        if let Some(rest) = message.strip_prefix(&prefix) {
            message = rest.to_owned();
            break;
        }
    }
    Problem { path, location, message }
}

#[cfg(test)]
mod apocryph_tests;
#[cfg(test)]
mod tests;
