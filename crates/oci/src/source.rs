//! Where blobs come from: a directory (an OCI layout) or a plain tar archive
//! (an OCI archive or a `docker save` archive).
//!
//! Archives are not extracted. Opening one scans its headers once (seeking
//! over file data) and remembers where each member's data starts; a blob is
//! then read by seeking into the archive. This costs one small index in
//! memory and no scratch disk, and works for archives of any size. The price
//! is that the archive must be an uncompressed tar: a `.tar.gz` is refused
//! with [`OciError::CompressedArchive`].

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::OciError;

/// Archives describing images have few members; a hostile archive with
/// millions of tiny members must not make the index unbounded.
const MAX_ARCHIVE_ENTRIES: usize = 100_000;
/// Longest archive member name we index.
const MAX_MEMBER_NAME: usize = 4096;
/// How many links we follow when resolving an archive member.
const MAX_LINK_HOPS: usize = 16;

/// A readable blob: the stream and the number of bytes stored.
pub(crate) type BlobStream = (Box<dyn Read + Send>, u64);

#[derive(Debug, Clone)]
pub(crate) enum BlobSource {
    Dir(PathBuf),
    Tar(Arc<TarIndex>),
}

impl BlobSource {
    /// Opens `rel` (a `/`-separated path inside the layout or archive), or
    /// `None` if there is no such regular file.
    pub(crate) fn open(&self, rel: &str) -> Result<Option<BlobStream>, OciError> {
        match self {
            BlobSource::Dir(root) => {
                let path = root.join(rel);
                let file = match File::open(&path) {
                    Ok(f) => f,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                    Err(e) => return Err(OciError::io("opening", path, e)),
                };
                let meta = file.metadata().map_err(|e| OciError::io("inspecting", &path, e))?;
                if !meta.is_file() {
                    return Ok(None);
                }
                Ok(Some((Box::new(file), meta.len())))
            }
            BlobSource::Tar(index) => index.open(rel),
        }
    }

    /// Whether `rel` names a regular file.
    pub(crate) fn exists(&self, rel: &str) -> bool {
        match self {
            BlobSource::Dir(root) => root.join(rel).is_file(),
            BlobSource::Tar(index) => index.lookup(rel).is_some(),
        }
    }

    /// Human description of where `rel` lives, for error messages.
    pub(crate) fn describe(&self, rel: &str) -> String {
        match self {
            BlobSource::Dir(root) => root.join(rel).display().to_string(),
            BlobSource::Tar(index) => format!("{} in {}", rel, index.path.display()),
        }
    }

    /// The layout directory or archive file.
    pub(crate) fn path(&self) -> &Path {
        match self {
            BlobSource::Dir(root) => root,
            BlobSource::Tar(index) => &index.path,
        }
    }
}

#[derive(Debug, Clone)]
enum Member {
    File { offset: u64, size: u64 },
    Link(String),
}

/// Where each member of a tar archive is.
#[derive(Debug)]
pub(crate) struct TarIndex {
    path: PathBuf,
    members: HashMap<String, Member>,
}

impl TarIndex {
    /// Scans the archive at `path`.
    pub(crate) fn build(path: &Path) -> Result<TarIndex, OciError> {
        let mut file = File::open(path).map_err(|e| OciError::io("opening", path, e))?;
        let mut magic = [0u8; 6];
        let n = read_up_to(&mut file, &mut magic).map_err(|e| OciError::io("reading", path, e))?;
        if is_compressed(&magic[..n]) {
            return Err(OciError::CompressedArchive { path: path.to_owned() });
        }
        file.seek(SeekFrom::Start(0)).map_err(|e| OciError::io("reading", path, e))?;

        let not_tar = |e: io::Error| OciError::NotAnImage {
            path: path.to_owned(),
            reason: format!("not a readable tar archive: {e}"),
        };
        let mut archive = tar::Archive::new(file);
        let mut members = HashMap::new();
        for entry in archive.entries_with_seek().map_err(not_tar)? {
            let entry = entry.map_err(not_tar)?;
            if members.len() >= MAX_ARCHIVE_ENTRIES {
                return Err(OciError::NotAnImage {
                    path: path.to_owned(),
                    reason: format!("more than {MAX_ARCHIVE_ENTRIES} archive members"),
                });
            }
            let raw = entry.path_bytes();
            if raw.len() > MAX_MEMBER_NAME {
                continue;
            }
            let Some(name) = std::str::from_utf8(&raw).ok().and_then(normalize) else {
                continue;
            };
            let kind = entry.header().entry_type();
            let member = if kind.is_file() || kind.is_contiguous() {
                Member::File { offset: entry.raw_file_position(), size: entry.size() }
            } else if kind.is_symlink() || kind.is_hard_link() {
                let Some(target) = entry.link_name_bytes() else {
                    continue;
                };
                let Ok(target) = String::from_utf8(target.into_owned()) else {
                    continue;
                };
                // Symlinks are relative to the member's directory, hard links
                // to the archive root.
                let resolved = if kind.is_symlink() && !target.starts_with('/') {
                    match name.rsplit_once('/') {
                        Some((dir, _)) => normalize(&format!("{dir}/{target}")),
                        None => normalize(&target),
                    }
                } else {
                    normalize(&target)
                };
                match resolved {
                    Some(t) => Member::Link(t),
                    None => continue,
                }
            } else {
                continue;
            };
            members.insert(name, member);
        }
        Ok(TarIndex { path: path.to_owned(), members })
    }

    fn lookup(&self, rel: &str) -> Option<(u64, u64)> {
        let mut name = normalize(rel)?;
        for _ in 0..MAX_LINK_HOPS {
            match self.members.get(&name)? {
                Member::File { offset, size } => return Some((*offset, *size)),
                Member::Link(target) => name = target.clone(),
            }
        }
        None
    }

    fn open(&self, rel: &str) -> Result<Option<BlobStream>, OciError> {
        let Some((offset, size)) = self.lookup(rel) else {
            return Ok(None);
        };
        let mut file = File::open(&self.path).map_err(|e| OciError::io("opening", &self.path, e))?;
        file.seek(SeekFrom::Start(offset)).map_err(|e| OciError::io("reading", &self.path, e))?;
        Ok(Some((Box::new(file.take(size)), size)))
    }
}

/// Lexically normalises an archive member name: no leading `/` or `./`, no
/// empty or `.` components, `..` applied. `None` if it climbs above the root.
fn normalize(name: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for part in name.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            p => parts.push(p),
        }
    }
    if parts.is_empty() {
        None
    } else {
        Some(parts.join("/"))
    }
}

/// Reads until `buf` is full or the input ends.
pub(crate) fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Magic numbers of gzip, zstd, xz and bzip2.
fn is_compressed(head: &[u8]) -> bool {
    head.starts_with(&[0x1f, 0x8b])
        || head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd])
        || head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0])
        || head.starts_with(b"BZh")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_member_names() {
        assert_eq!(normalize("./blobs//sha256/x").as_deref(), Some("blobs/sha256/x"));
        assert_eq!(normalize("/a/b/../c").as_deref(), Some("a/c"));
        assert_eq!(normalize("../etc"), None);
        assert_eq!(normalize("./"), None);
    }

    #[test]
    fn follows_docker_save_layer_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.tar");
        let mut b = tar::Builder::new(File::create(&path).unwrap());
        let mut h = tar::Header::new_gnu();
        h.set_size(5);
        h.set_mode(0o644);
        b.append_data(&mut h, "abc.tar", &b"hello"[..]).unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        b.append_link(&mut h, "id/layer.tar", "../abc.tar").unwrap();
        b.into_inner().unwrap();

        let src = BlobSource::Tar(Arc::new(TarIndex::build(&path).unwrap()));
        let (mut r, size) = src.open("id/layer.tar").unwrap().unwrap();
        let mut s = String::new();
        r.read_to_string(&mut s).unwrap();
        assert_eq!((s.as_str(), size), ("hello", 5));
        assert!(src.open("missing").unwrap().is_none());
    }
}
