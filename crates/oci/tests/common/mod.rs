//! Helpers shared by the integration tests: hand-built layer tars, layouts
//! made of them, and filesystem snapshots for comparing unpacked trees.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use sealpod_oci::oci_spec::image::Descriptor;
use sealpod_oci::{sha256_digest, Compression, ImageReference, LayoutWriter, Platform};

pub const MTIME: u64 = 1_600_000_000;

/// One entry of a hand-built layer.
pub enum E<'a> {
    Dir(&'a str, u32),
    File(&'a str, &'a [u8], u32),
    Owned(&'a str, &'a [u8], u32, u64, u64),
    Symlink(&'a str, &'a str),
    Hardlink(&'a str, &'a str),
    Fifo(&'a str),
    CharDevice(&'a str),
    /// A regular file whose name is written into the header as is, bypassing
    /// the `tar` crate's own refusal of `..` and absolute paths.
    Raw(&'a [u8], &'a [u8]),
}

pub fn layer_tar(entries: &[E]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        h.set_mtime(MTIME);
        h.set_uid(0);
        h.set_gid(0);
        match e {
            E::Dir(p, mode) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(*mode);
                h.set_size(0);
                b.append_data(&mut h, p, &[][..]).unwrap();
            }
            E::File(p, data, mode) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(*mode);
                h.set_size(data.len() as u64);
                b.append_data(&mut h, p, *data).unwrap();
            }
            E::Owned(p, data, mode, uid, gid) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(*mode);
                h.set_uid(*uid);
                h.set_gid(*gid);
                h.set_size(data.len() as u64);
                b.append_data(&mut h, p, *data).unwrap();
            }
            E::Symlink(p, target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                h.set_size(0);
                b.append_link(&mut h, p, target).unwrap();
            }
            E::Hardlink(p, target) => {
                h.set_entry_type(tar::EntryType::Link);
                h.set_mode(0o644);
                h.set_size(0);
                b.append_link(&mut h, p, target).unwrap();
            }
            E::Fifo(p) => {
                h.set_entry_type(tar::EntryType::Fifo);
                h.set_mode(0o640);
                h.set_size(0);
                b.append_data(&mut h, p, &[][..]).unwrap();
            }
            E::CharDevice(p) => {
                h.set_entry_type(tar::EntryType::Char);
                h.set_mode(0o666);
                h.set_size(0);
                h.set_device_major(1).unwrap();
                h.set_device_minor(3).unwrap();
                b.append_data(&mut h, p, &[][..]).unwrap();
            }
            E::Raw(name, data) => {
                h.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name);
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(0o644);
                h.set_size(data.len() as u64);
                h.set_cksum();
                b.append(&h, *data).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// Compresses with the `zstd` command, if it is installed.
pub fn zstd(bytes: &[u8]) -> Option<Vec<u8>> {
    let mut child = Command::new("zstd")
        .args(["-q", "-c"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .ok()?;
    let mut stdin = child.stdin.take()?;
    let input = bytes.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let mut out = Vec::new();
    child.stdout.take()?.read_to_end(&mut out).ok()?;
    writer.join().ok()?.ok()?;
    child.wait().ok()?.success().then_some(out)
}

pub fn compress(tar: &[u8], c: Compression) -> Vec<u8> {
    match c {
        Compression::None => tar.to_vec(),
        Compression::Gzip => gzip(tar),
        Compression::Zstd => zstd(tar).expect("zstd command"),
    }
}

/// A minimal OCI config for `diff_ids`.
pub fn config_json(diff_ids: &[String]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "architecture": Platform::host().architecture,
        "os": "linux",
        "config": {"Env": ["PATH=/bin"], "Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .unwrap()
}

/// Writes an image of `layers` (tar bytes, compression) into `layout`.
pub fn write_image(layout: &Path, tag: &str, layers: &[(Vec<u8>, Compression)]) -> ImageReference {
    let mut w = LayoutWriter::create(layout).unwrap();
    let mut descs: Vec<Descriptor> = Vec::new();
    let mut diff_ids = Vec::new();
    for (tar, c) in layers {
        diff_ids.push(sha256_digest(tar));
        descs.push(w.write_blob(c.oci_media_type(), &compress(tar, *c)).unwrap());
    }
    w.add_image(&config_json(&diff_ids), descs, tag).unwrap();
    ImageReference::OciLayout { path: layout.to_owned(), tag: Some(tag.to_owned()) }
}

/// The file of a blob in a layout.
pub fn blob_path(layout: &Path, digest: &str) -> PathBuf {
    layout.join("blobs/sha256").join(digest.trim_start_matches("sha256:"))
}

/// Everything about a tree that an unpacker is responsible for:
/// path -> "kind mode uid:gid content-or-target".
pub fn snapshot(root: &Path, with_mtimes: bool) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    walk(root, root, with_mtimes, &mut out);
    out
}

fn walk(root: &Path, dir: &Path, with_mtimes: bool, out: &mut BTreeMap<String, String>) {
    let mut entries: Vec<_> = fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    entries.sort();
    for path in entries {
        let m = fs::symlink_metadata(&path).unwrap();
        let rel = path.strip_prefix(root).unwrap().display().to_string();
        let ft = m.file_type();
        let what = if ft.is_symlink() {
            format!("link -> {}", fs::read_link(&path).unwrap().display())
        } else if ft.is_dir() {
            "dir".to_owned()
        } else if ft.is_file() {
            format!("file {}", sha256_digest(&fs::read(&path).unwrap()))
        } else {
            "special".to_owned()
        };
        let mode = if ft.is_symlink() { 0 } else { m.mode() & 0o7777 };
        let mtime = if with_mtimes && !ft.is_symlink() { format!(" @{}", m.mtime()) } else { String::new() };
        out.insert(rel, format!("{what} {mode:o} {}:{}{mtime}", m.uid(), m.gid()));
        if ft.is_dir() {
            walk(root, &path, with_mtimes, out);
        }
    }
}

/// Whether `tool` can be run; prints why a test is skipped if not.
pub fn have_tool(tool: &str, test: &str) -> bool {
    let ok = Command::new(tool).arg("--version").output().map(|o| o.status.success()).unwrap_or(false);
    if !ok {
        eprintln!("SKIPPED {test}: `{tool}` is not installed (apt-get install {tool})");
    }
    ok
}

pub fn is_root() -> bool {
    nix_euid() == 0
}

fn nix_euid() -> u32 {
    fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(u32::MAX)
}

/// Runs a command, panicking with its output if it fails; returns stdout.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
