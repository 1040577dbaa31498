//! Building small single-layer images from host files.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use oci_spec::image::Descriptor;
use serde::Serialize;

use crate::compression::Compression;
use crate::digest::HashingWriter;
use crate::image::Platform;
use crate::layout::{BlobWriter, LayoutWriter};
use crate::{ImageReference, OciError};

/// Every entry of a built layer gets this mtime (the Unix epoch), so that the
/// same input always gives the same digest.
const FIXED_MTIME: u64 = 0;

/// Builds an OCI image with one layer from host files and a runtime config,
/// and writes it into an image layout.
///
/// The result is deterministic: entries are sorted by path, owned by
/// `0:0`, stamped with a fixed mtime, and the gzip header carries no
/// timestamp or name, so the same files and config give the same manifest
/// digest. File modes (including setuid bits) are kept. Hard links in a
/// tree are stored as separate files.
#[derive(Debug, Clone)]
pub struct ImageBuilder {
    sources: Vec<Source>,
    entrypoint: Vec<String>,
    cmd: Vec<String>,
    env: Vec<String>,
    working_dir: Option<String>,
    user: Option<String>,
    exposed_ports: Vec<String>,
    compression: Compression,
}

#[derive(Debug, Clone)]
enum Source {
    Tree { host: PathBuf, at: PathBuf },
    File { host: PathBuf, at: PathBuf },
}

/// What [`ImageBuilder::write_layout`] wrote.
#[derive(Debug, Clone)]
pub struct BuiltImage {
    /// `oci:LAYOUT:TAG` for the new image.
    pub reference: ImageReference,
    /// `sha256:<hex>` of the manifest.
    pub manifest_digest: String,
    /// The manifest's descriptor as listed in `index.json`.
    pub manifest: Descriptor,
    /// The layer's descriptor.
    pub layer: Descriptor,
}

#[derive(Debug)]
enum Node {
    Dir { mode: u32 },
    File { host: PathBuf, mode: u32 },
    Symlink { target: PathBuf },
}

impl Default for ImageBuilder {
    fn default() -> Self {
        ImageBuilder::new()
    }
}

impl ImageBuilder {
    /// An empty image with a gzip layer.
    pub fn new() -> ImageBuilder {
        ImageBuilder {
            sources: Vec::new(),
            entrypoint: Vec::new(),
            cmd: Vec::new(),
            env: Vec::new(),
            working_dir: None,
            user: None,
            exposed_ports: Vec::new(),
            compression: Compression::Gzip,
        }
    }

    /// Adds the contents of the host directory `host_dir` at `in_image`
    /// (`/` for the image root). Symlinks are stored as symlinks;
    /// sockets and devices are skipped.
    pub fn tree(mut self, host_dir: impl Into<PathBuf>, in_image: impl Into<PathBuf>) -> Self {
        self.sources.push(Source::Tree { host: host_dir.into(), at: in_image.into() });
        self
    }

    /// Adds the host file `host` (symlinks followed) at the absolute path
    /// `in_image`. Missing parent directories are created with mode 0755.
    pub fn file(mut self, host: impl Into<PathBuf>, in_image: impl Into<PathBuf>) -> Self {
        self.sources.push(Source::File { host: host.into(), at: in_image.into() });
        self
    }

    /// Adds several `(host, in_image)` files, as from [`binary_rootfs_files`].
    pub fn files(mut self, files: impl IntoIterator<Item = (PathBuf, PathBuf)>) -> Self {
        for (host, at) in files {
            self = self.file(host, at);
        }
        self
    }

    /// Sets `Entrypoint`.
    pub fn entrypoint<S: Into<String>>(mut self, argv: impl IntoIterator<Item = S>) -> Self {
        self.entrypoint = argv.into_iter().map(Into::into).collect();
        self
    }

    /// Sets `Cmd`.
    pub fn cmd<S: Into<String>>(mut self, argv: impl IntoIterator<Item = S>) -> Self {
        self.cmd = argv.into_iter().map(Into::into).collect();
        self
    }

    /// Adds `KEY=VALUE` to `Env`.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push(format!("{key}={value}"));
        self
    }

    /// Sets `WorkingDir`.
    pub fn working_dir(mut self, dir: impl Into<String>) -> Self {
        self.working_dir = Some(dir.into());
        self
    }

    /// Sets `User`.
    pub fn user(mut self, user: impl Into<String>) -> Self {
        self.user = Some(user.into());
        self
    }

    /// Adds an `ExposedPorts` entry such as `8080/tcp`.
    pub fn expose(mut self, port: impl Into<String>) -> Self {
        self.exposed_ports.push(port.into());
        self
    }

    /// Chooses the layer compression: [`Compression::Gzip`] (default) or
    /// [`Compression::None`]. Zstd is read but not written.
    pub fn compression(mut self, compression: Compression) -> Self {
        self.compression = compression;
        self
    }

    /// Writes the image into the layout at `layout_dir` (created if needed;
    /// other images in it are kept) under `tag`.
    pub fn write_layout(&self, layout_dir: &Path, tag: &str) -> Result<BuiltImage, OciError> {
        if self.compression == Compression::Zstd {
            return Err(OciError::UnsupportedMediaType {
                blob: "new layer".into(),
                media_type: Compression::Zstd.oci_media_type().into(),
            });
        }
        let nodes = self.collect_nodes()?;
        let mut layout = LayoutWriter::create(layout_dir)?;

        let BlobWriter { dir, file } = layout.blob_writer()?;
        let (layer, diff_id) = match self.compression {
            Compression::Gzip => {
                // No name and mtime 0 in the gzip header, for determinism.
                let gz = flate2::GzBuilder::new().mtime(0).write(file, flate2::Compression::default());
                let (gz, diff_id, _) = write_tar(&nodes, HashingWriter::new(gz))?.finish();
                let file = gz.finish().map_err(|e| OciError::io("writing layer in", layout_dir, e))?;
                let blob = BlobWriter { dir, file };
                (blob.commit(Compression::Gzip.oci_media_type())?, diff_id)
            }
            _ => {
                let file = write_tar(&nodes, file)?;
                let layer = BlobWriter { dir, file }.commit(Compression::None.oci_media_type())?;
                let diff_id = layer.digest().to_string();
                (layer, diff_id)
            }
        };

        let config = self.config_json(&diff_id)?;
        let manifest = layout.add_image(&config, vec![layer.clone()], tag)?;
        Ok(BuiltImage {
            reference: ImageReference::OciLayout { path: layout_dir.to_owned(), tag: Some(tag.to_owned()) },
            manifest_digest: manifest.digest().to_string(),
            manifest,
            layer,
        })
    }

    fn collect_nodes(&self) -> Result<BTreeMap<PathBuf, Node>, OciError> {
        let mut nodes = BTreeMap::new();
        for source in &self.sources {
            match source {
                Source::Tree { host, at } => {
                    let at = image_path(at)?;
                    if !at.as_os_str().is_empty() {
                        let meta = fs::metadata(host).map_err(|e| OciError::io("reading", host, e))?;
                        nodes.insert(at.clone(), Node::Dir { mode: mode_of(&meta) });
                    }
                    walk_tree(host, &at, &mut nodes)?;
                }
                Source::File { host, at } => {
                    let at = image_path(at)?;
                    let meta = fs::metadata(host).map_err(|e| OciError::io("reading", host, e))?;
                    if !meta.is_file() {
                        return Err(OciError::io(
                            "adding",
                            host,
                            io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"),
                        ));
                    }
                    nodes.insert(at, Node::File { host: host.clone(), mode: mode_of(&meta) });
                }
            }
        }
        let paths: Vec<PathBuf> = nodes.keys().cloned().collect();
        for path in paths {
            for ancestor in path.ancestors().skip(1) {
                if ancestor.as_os_str().is_empty() {
                    break;
                }
                nodes.entry(ancestor.to_owned()).or_insert(Node::Dir { mode: 0o755 });
            }
        }
        Ok(nodes)
    }

    fn config_json(&self, diff_id: &str) -> Result<Vec<u8>, OciError> {
        let platform = Platform::host();
        let doc = ConfigDocument {
            architecture: platform.architecture,
            os: platform.os,
            config: RuntimeConfig {
                user: self.user.clone(),
                exposed_ports: self.exposed_ports.iter().map(|p| (p.clone(), EmptyObject {})).collect(),
                env: self.env.clone(),
                entrypoint: self.entrypoint.clone(),
                cmd: self.cmd.clone(),
                working_dir: self.working_dir.clone(),
            },
            rootfs: RootFs { kind: "layers", diff_ids: vec![diff_id.to_owned()] },
        };
        serde_json::to_vec(&doc).map_err(|source| OciError::MalformedJson { blob: "new config".into(), source })
    }
}

/// The OCI config, written with our own types: `oci_spec`'s keeps
/// `ExposedPorts` in a `HashMap`, whose order (and so the digest) would vary
/// from run to run.
#[derive(Serialize)]
struct ConfigDocument {
    architecture: String,
    os: String,
    config: RuntimeConfig,
    rootfs: RootFs,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct RuntimeConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    exposed_ports: BTreeMap<String, EmptyObject>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    env: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    entrypoint: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    cmd: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    working_dir: Option<String>,
}

#[derive(Serialize)]
struct EmptyObject {}

#[derive(Serialize)]
struct RootFs {
    #[serde(rename = "type")]
    kind: &'static str,
    diff_ids: Vec<String>,
}

/// An in-image path as a relative path without `.`/`..`.
fn image_path(p: &Path) -> Result<PathBuf, OciError> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Prefix(_) | Component::RootDir | Component::CurDir => {}
            Component::ParentDir => {
                return Err(OciError::UnsafePath {
                    layer: "new layer".into(),
                    path: p.display().to_string(),
                    reason: "path in the image contains `..`".into(),
                })
            }
            Component::Normal(s) => out.push(s),
        }
    }
    Ok(out)
}

fn mode_of(meta: &fs::Metadata) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & 0o7777
}

fn walk_tree(host: &Path, at: &Path, nodes: &mut BTreeMap<PathBuf, Node>) -> Result<(), OciError> {
    let entries = fs::read_dir(host).map_err(|e| OciError::io("listing", host, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| OciError::io("listing", host, e))?;
        let host_path = entry.path();
        let image_path = at.join(entry.file_name());
        let meta = fs::symlink_metadata(&host_path).map_err(|e| OciError::io("reading", &host_path, e))?;
        let ft = meta.file_type();
        if ft.is_symlink() {
            let target = fs::read_link(&host_path).map_err(|e| OciError::io("reading", &host_path, e))?;
            nodes.insert(image_path, Node::Symlink { target });
        } else if ft.is_dir() {
            nodes.insert(image_path.clone(), Node::Dir { mode: mode_of(&meta) });
            walk_tree(&host_path, &image_path, nodes)?;
        } else if ft.is_file() {
            nodes.insert(image_path, Node::File { host: host_path, mode: mode_of(&meta) });
        } else {
            tracing::warn!(path = %host_path.display(), "skipping special file");
        }
    }
    Ok(())
}

fn write_tar<W: Write>(nodes: &BTreeMap<PathBuf, Node>, out: W) -> Result<W, OciError> {
    let tar_err = |path: &Path, e: io::Error| OciError::io("adding to layer", path, e);
    let mut builder = tar::Builder::new(out);
    builder.mode(tar::HeaderMode::Complete);
    for (path, node) in nodes {
        let mut header = tar::Header::new_gnu();
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(FIXED_MTIME);
        match node {
            Node::Dir { mode } => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(*mode);
                header.set_size(0);
                builder.append_data(&mut header, path, io::empty()).map_err(|e| tar_err(path, e))?;
            }
            Node::File { host, mode } => {
                let file = fs::File::open(host).map_err(|e| OciError::io("opening", host, e))?;
                let len = file.metadata().map_err(|e| OciError::io("reading", host, e))?.len();
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(*mode);
                header.set_size(len);
                builder.append_data(&mut header, path, file).map_err(|e| tar_err(host, e))?;
            }
            Node::Symlink { target } => {
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_mode(0o777);
                header.set_size(0);
                builder.append_link(&mut header, path, target).map_err(|e| tar_err(path, e))?;
            }
        }
    }
    builder.into_inner().map_err(|e| tar_err(Path::new("layer"), e))
}

/// The files a dynamically linked `binary` needs to run in an otherwise
/// empty root filesystem: `(host path, path in image)` pairs, the binary
/// first, then every shared library `ldd` lists, including the dynamic
/// loader (`/lib64/ld-linux-x86-64.so.2` on x86-64).
///
/// The binary goes to its own absolute path (`binary` made absolute, not
/// resolved), each library to the path `ldd` prints, which is where the
/// loader will look. Host paths are resolved through symlinks, so the image
/// gets real file content under the name the loader asks for. A static
/// binary gives just itself.
///
/// `ldd` may run the binary's dynamic loader; use it only on binaries you
/// trust.
pub fn binary_rootfs_files(binary: &Path) -> Result<Vec<(PathBuf, PathBuf)>, OciError> {
    let ldd_error = |reason: String| OciError::Ldd { binary: binary.to_owned(), reason };
    let absolute = if binary.is_absolute() {
        binary.to_owned()
    } else {
        std::env::current_dir().map_err(|e| OciError::io("finding the current directory for", binary, e))?.join(binary)
    };
    let in_image: PathBuf = Path::new("/").join(image_path(&absolute)?);
    let host = fs::canonicalize(binary).map_err(|e| OciError::io("resolving", binary, e))?;
    let mut files = vec![(host.clone(), in_image.clone())];

    let output = Command::new("ldd")
        .arg(&host)
        .env("LC_ALL", "C")
        .output()
        .map_err(|e| ldd_error(format!("cannot run ldd: {e}; install libc-bin (Debian) or glibc")))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    if is_static(&stdout) || is_static(&stderr) {
        return Ok(files);
    }
    if !output.status.success() {
        return Err(ldd_error(format!("ldd failed ({}): {}", output.status, stderr.trim())));
    }
    for line in parse_ldd(&stdout) {
        let library = match line {
            LddLine::Found(path) => path,
            LddLine::Missing(soname) => {
                return Err(OciError::MissingLibrary { binary: binary.to_owned(), library: soname })
            }
        };
        let host = fs::canonicalize(&library).map_err(|e| OciError::io("resolving", &library, e))?;
        if !files.iter().any(|(_, at)| *at == library) {
            files.push((host, library));
        }
    }
    Ok(files)
}

fn is_static(text: &str) -> bool {
    text.contains("not a dynamic executable") || text.contains("statically linked")
}

#[derive(Debug, PartialEq, Eq)]
enum LddLine {
    Found(PathBuf),
    Missing(String),
}

/// Parses glibc `ldd` output:
///
/// ```text
///     linux-vdso.so.1 (0x00007ffc...)
///     libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f...)
///     libfoo.so.1 => not found
///     /lib64/ld-linux-x86-64.so.2 (0x00007f...)
/// ```
fn parse_ldd(stdout: &str) -> Vec<LddLine> {
    let strip_address = |s: &str| -> String {
        match s.rfind(" (0x") {
            Some(i) => s[..i].trim().to_owned(),
            None => s.trim().to_owned(),
        }
    };
    let mut out = Vec::new();
    for line in stdout.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Some((soname, rest)) = line.split_once("=>") {
            let rest = rest.trim();
            if rest.starts_with("not found") {
                out.push(LddLine::Missing(soname.trim().to_owned()));
                continue;
            }
            let path = strip_address(rest);
            if path.starts_with('/') {
                out.push(LddLine::Found(PathBuf::from(path)));
            }
        } else {
            let path = strip_address(line);
            if path.starts_with('/') {
                out.push(LddLine::Found(PathBuf::from(path)));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ldd_output_with_loader_vdso_and_missing_library() {
        let out = "\tlinux-vdso.so.1 (0x00007ffd5a5f2000)\n\
                   \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f1c8a000000)\n\
                   \tlibgone.so.2 => not found\n\
                   \t/lib64/ld-linux-x86-64.so.2 (0x00007f1c8a3f0000)\n";
        assert_eq!(
            parse_ldd(out),
            vec![
                LddLine::Found("/lib/x86_64-linux-gnu/libc.so.6".into()),
                LddLine::Missing("libgone.so.2".into()),
                LddLine::Found("/lib64/ld-linux-x86-64.so.2".into()),
            ]
        );
    }

    #[test]
    fn recognises_static_binaries() {
        assert!(is_static("\tnot a dynamic executable\n"));
        assert!(is_static("\tstatically linked\n"));
        assert!(!is_static("\tlibc.so.6 => /lib/libc.so.6 (0x1)\n"));
    }

    #[test]
    fn refuses_parent_components_in_image_paths() {
        assert!(image_path(Path::new("/a/../b")).is_err());
        assert_eq!(image_path(Path::new("/usr/./bin")).unwrap(), PathBuf::from("usr/bin"));
    }
}
