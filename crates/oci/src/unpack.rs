//! Applying layer tars to a root filesystem (image-spec `layer.md`).
//!
//! The `tar` crate parses the stream and writes regular files and symlinks
//! (it removes an existing file first and creates the new one with
//! `O_EXCL`, sets ownership before mode so setuid bits survive, and handles
//! sparse files). Everything that decides *where* an entry goes is done here,
//! because `tar::Entry::unpack_in` resolves a parent directory by following
//! symlinks on the host, which both refuses legitimate images (a layer that
//! writes `lib/x` where a lower layer made `lib -> /usr/lib`) and would not
//! know about whiteouts:
//!
//! * Entry paths are made relative; any `..` component is refused.
//! * Parent directories are resolved *inside* the root, like a chroot would
//!   (`securejoin`): a symlink in the parent chain is followed, but an absolute
//!   target is taken relative to the root and `..` stops at the root. The last
//!   component is never followed: an existing entry there is replaced.
//! * `.wh.NAME` deletes NAME, `.wh..wh..opq` empties its directory, both only
//!   of content from lower layers: paths written by the same layer survive,
//!   whatever order the entries come in.
//! * Hard link targets are resolved the same way and must already exist.
//! * Directory modes, owners and mtimes are applied after the last layer,
//!   deepest first, through `O_NOFOLLOW` handles, so later writes into a
//!   directory neither change its mtime nor are blocked by its mode.
//! * Block and character devices are skipped with a warning (the container
//!   runtime provides `/dev`); FIFOs are created.

use std::collections::{HashMap, HashSet, VecDeque};
use std::ffi::{OsStr, OsString};
use std::fs::{self, OpenOptions};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use filetime::FileTime;
use tar::EntryType;

use crate::OciError;

const WHITEOUT_PREFIX: &[u8] = b".wh.";
const OPAQUE_WHITEOUT: &[u8] = b".wh..wh..opq";
const XATTR_PAX_PREFIX: &str = "SCHILY.xattr.";
/// As Linux's `MAXSYMLINKS`.
const MAX_SYMLINK_HOPS: usize = 40;

/// Applies one uncompressed layer tar to `dest`, an existing directory that
/// holds the layers below it (or nothing).
///
/// This is the building block of [`LocalImage::unpack`](crate::LocalImage::unpack),
/// which also verifies and decompresses; use this directly only for a tar
/// whose integrity you have established otherwise. Directory metadata is
/// applied at the end of this call. On error `dest` is left half-written.
pub fn apply_layer<R: Read>(layer_tar: R, dest: &Path) -> Result<(), OciError> {
    let mut unpacker = Unpacker::new(dest);
    unpacker.apply(layer_tar, "layer")?;
    unpacker.finish()
}

#[derive(Debug, Clone, Copy)]
struct DirMeta {
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: Option<FileTime>,
}

/// Applies a sequence of layers to one root.
pub(crate) struct Unpacker {
    root: PathBuf,
    is_root: bool,
    /// Metadata for directories, applied by [`Unpacker::finish`]; keyed by
    /// the path relative to `root`.
    dirs: HashMap<PathBuf, DirMeta>,
}

/// Per-layer state: what this layer itself has written (relative paths), so
/// that its whiteouts only remove what lies below it.
struct LayerState<'a> {
    name: &'a str,
    written: HashSet<PathBuf>,
}

impl Unpacker {
    pub(crate) fn new(root: &Path) -> Self {
        Unpacker { root: root.to_owned(), is_root: nix::unistd::geteuid().is_root(), dirs: HashMap::new() }
    }

    /// Applies the entries of `reader` (an uncompressed tar) up to its
    /// end-of-archive marker. Does not read past it.
    pub(crate) fn apply<R: Read>(&mut self, reader: R, layer: &str) -> Result<(), OciError> {
        let mut archive = tar::Archive::new(reader);
        archive.set_preserve_permissions(true);
        // Set below, exactly: the tar crate turns mtime 0 into 1.
        archive.set_preserve_mtime(false);
        archive.set_preserve_ownerships(self.is_root);
        archive.set_unpack_xattrs(false);
        archive.set_overwrite(true);
        let mut state = LayerState { name: layer, written: HashSet::new() };
        let entries = archive.entries().map_err(|e| layer_error(layer, "reading the layer", e))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| layer_error(layer, "reading the layer", e))?;
            self.apply_entry(&mut entry, &mut state)?;
        }
        Ok(())
    }

    fn apply_entry<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        state: &mut LayerState<'_>,
    ) -> Result<(), OciError> {
        let layer = state.name;
        let raw_path = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let kind = entry.header().entry_type();
        if matches!(
            kind,
            EntryType::XGlobalHeader | EntryType::XHeader | EntryType::GNULongName | EntryType::GNULongLink
        ) {
            return Ok(());
        }
        let path = entry.path().map_err(|e| layer_error(layer, &format!("entry {raw_path:?}"), e))?;
        let mut comps = relative_components(&path).map_err(|reason| OciError::UnsafePath {
            layer: layer.to_owned(),
            path: raw_path.clone(),
            reason,
        })?;
        let Some(name) = comps.pop() else {
            // The root directory itself; its metadata belongs to whoever
            // provides the root (the runtime), as with containerd.
            return Ok(());
        };

        if name.as_bytes().starts_with(WHITEOUT_PREFIX) {
            let Some(dir) = self.resolve_dir(&comps, false, state, &raw_path)? else {
                return Ok(()); // nothing below to hide
            };
            if name.as_bytes() == OPAQUE_WHITEOUT {
                self.clear_lower(&dir, state)?;
            } else if name.as_bytes().starts_with(b".wh..wh.") {
                // aufs bookkeeping (`.wh..wh.plnk`, …): not part of the image.
            } else {
                let victim = OsStr::from_bytes(&name.as_bytes()[WHITEOUT_PREFIX.len()..]);
                // `.wh.`, `.wh..` and `.wh...` would name the directory
                // itself or its parent, possibly the parent of the root.
                if victim.is_empty() || victim == "." || victim == ".." {
                    return Err(unsafe_path(layer, &raw_path, "whiteout of `.` or `..`"));
                }
                self.whiteout(&dir.join(victim), state)?;
            }
            return Ok(());
        }

        let dir = self.resolve_dir(&comps, true, state, &raw_path)?.unwrap_or_default();
        let rel = dir.join(&name);
        let abs = self.root.join(&rel);
        let ctx = |what: &str| format!("{what} {raw_path:?}");
        let header = entry.header().clone();
        let header = &header;
        let xattrs = pax_xattrs(entry);

        match kind {
            EntryType::Directory => {
                match fs::symlink_metadata(&abs) {
                    Ok(m) if m.is_dir() => {}
                    Ok(_) => {
                        self.remove(&rel)?;
                        fs::create_dir(&abs).map_err(|e| layer_error(layer, &ctx("creating directory"), e))?;
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        fs::create_dir(&abs).map_err(|e| layer_error(layer, &ctx("creating directory"), e))?;
                    }
                    Err(e) => return Err(layer_error(layer, &ctx("inspecting"), e)),
                }
                let meta = DirMeta {
                    mode: header.mode().unwrap_or(0o755) & 0o7777,
                    uid: header.uid().unwrap_or(0),
                    gid: header.gid().unwrap_or(0),
                    mtime: mtime_of(header),
                };
                self.dirs.insert(rel.clone(), meta);
                set_xattrs(&abs, &xattrs);
            }
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                self.remove(&rel)?;
                let unpacked = entry.unpack(&abs).map_err(|e| layer_error(layer, &ctx("writing"), e))?;
                if let (tar::Unpacked::File(file), Some(t)) = (unpacked, mtime_of(header)) {
                    filetime::set_file_handle_times(&file, Some(t), Some(t))
                        .map_err(|e| layer_error(layer, &ctx("setting mtime of"), e))?;
                }
                set_xattrs(&abs, &xattrs);
            }
            EntryType::Symlink => {
                self.remove(&rel)?;
                entry.unpack(&abs).map_err(|e| layer_error(layer, &ctx("creating symlink"), e))?;
                if let Some(t) = mtime_of(header) {
                    filetime::set_symlink_file_times(&abs, t, t)
                        .map_err(|e| layer_error(layer, &ctx("setting mtime of"), e))?;
                }
            }
            EntryType::Link => {
                let target = entry
                    .link_name()
                    .map_err(|e| layer_error(layer, &ctx("reading link of"), e))?
                    .ok_or_else(|| unsafe_path(layer, &raw_path, "hard link without a target"))?;
                let target_rel = self.resolve_link_target(&target, state, &raw_path)?;
                if target_rel == rel {
                    return Ok(());
                }
                self.remove(&rel)?;
                fs::hard_link(self.root.join(&target_rel), &abs)
                    .map_err(|e| layer_error(layer, &ctx("hard linking"), e))?;
            }
            EntryType::Fifo => {
                self.remove(&rel)?;
                let mode = header.mode().unwrap_or(0o644) & 0o7777;
                nix::unistd::mkfifo(&abs, nix::sys::stat::Mode::from_bits_truncate(mode & 0o777))
                    .map_err(|e| layer_error(layer, &ctx("creating fifo"), e.into()))?;
                if self.is_root {
                    let (uid, gid) = owner(header);
                    std::os::unix::fs::lchown(&abs, Some(uid), Some(gid))
                        .map_err(|e| layer_error(layer, &ctx("chown"), e))?;
                }
                fs::set_permissions(&abs, fs::Permissions::from_mode(mode))
                    .map_err(|e| layer_error(layer, &ctx("chmod"), e))?;
                if let Some(t) = mtime_of(header) {
                    filetime::set_symlink_file_times(&abs, t, t)
                        .map_err(|e| layer_error(layer, &ctx("setting mtime of"), e))?;
                }
            }
            EntryType::Char | EntryType::Block => {
                tracing::warn!(layer, path = %raw_path, "skipping device node; the runtime provides /dev");
                return Ok(());
            }
            other => {
                tracing::warn!(layer, path = %raw_path, kind = ?other, "skipping tar entry of unsupported type");
                return Ok(());
            }
        }
        state.written.insert(rel);
        Ok(())
    }

    /// Resolves the directory `comps` (relative to the root) the way a
    /// process chrooted into the root would see it, returning its physical
    /// path relative to the root. Missing directories are created when
    /// `create`, otherwise `None` is returned.
    fn resolve_dir(
        &self,
        comps: &[OsString],
        create: bool,
        state: &mut LayerState<'_>,
        raw_path: &str,
    ) -> Result<Option<PathBuf>, OciError> {
        let layer = state.name;
        let mut resolved: Vec<OsString> = Vec::new();
        let mut queue: VecDeque<OsString> = comps.iter().cloned().collect();
        let mut hops = 0;
        while let Some(c) = queue.pop_front() {
            if c.is_empty() || c == "." {
                continue;
            }
            if c == ".." {
                resolved.pop();
                continue;
            }
            let rel: PathBuf = resolved.iter().chain(std::iter::once(&c)).collect();
            let abs = self.root.join(&rel);
            match fs::symlink_metadata(&abs) {
                Ok(m) if m.is_dir() => resolved.push(c),
                Ok(m) if m.file_type().is_symlink() => {
                    hops += 1;
                    if hops > MAX_SYMLINK_HOPS {
                        return Err(unsafe_path(layer, raw_path, "too many levels of symbolic links"));
                    }
                    let target = fs::read_link(&abs)
                        .map_err(|e| layer_error(layer, &format!("reading link {}", rel.display()), e))?;
                    if target.is_absolute() {
                        resolved.clear();
                    }
                    for (i, part) in symlink_components(&target).into_iter().enumerate() {
                        queue.insert(i, part);
                    }
                }
                Ok(_) if create => {
                    return Err(unsafe_path(
                        layer,
                        raw_path,
                        &format!("its parent {} is not a directory", rel.display()),
                    ))
                }
                Ok(_) => return Ok(None),
                Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
                    fs::create_dir(&abs)
                        .map_err(|e| layer_error(layer, &format!("creating directory {}", rel.display()), e))?;
                    state.written.insert(rel);
                    resolved.push(c);
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(layer_error(layer, &format!("inspecting {}", rel.display()), e)),
            }
        }
        Ok(Some(resolved.into_iter().collect()))
    }

    fn resolve_link_target(
        &self,
        target: &Path,
        state: &mut LayerState<'_>,
        raw_path: &str,
    ) -> Result<PathBuf, OciError> {
        let layer = state.name;
        let mut comps = relative_components(target)
            .map_err(|reason| unsafe_path(layer, raw_path, &format!("hard link target: {reason}")))?;
        let name = comps.pop().ok_or_else(|| unsafe_path(layer, raw_path, "hard link to the root directory"))?;
        let missing = || unsafe_path(layer, raw_path, &format!("hard link target {} does not exist", target.display()));
        let dir = self.resolve_dir(&comps, false, state, raw_path)?.ok_or_else(missing)?;
        let rel = dir.join(name);
        match fs::symlink_metadata(self.root.join(&rel)) {
            Ok(m) if m.is_dir() => Err(unsafe_path(layer, raw_path, "hard link to a directory")),
            Ok(_) => Ok(rel),
            Err(_) => Err(missing()),
        }
    }

    /// Deletes `rel` if it comes from a lower layer; if this layer wrote it
    /// and it is a directory, deletes the lower-layer content inside it.
    fn whiteout(&mut self, rel: &Path, state: &LayerState<'_>) -> Result<(), OciError> {
        let meta = match fs::symlink_metadata(self.root.join(rel)) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(layer_error(state.name, &format!("inspecting {}", rel.display()), e)),
        };
        if !state.written.contains(rel) {
            self.remove(rel)?;
        } else if meta.is_dir() {
            self.clear_lower(rel, state)?;
        }
        Ok(())
    }

    /// Opaque whiteout: removes everything below `dir` not written by this layer.
    fn clear_lower(&mut self, dir: &Path, state: &LayerState<'_>) -> Result<(), OciError> {
        let abs = self.root.join(dir);
        let children =
            fs::read_dir(&abs).map_err(|e| layer_error(state.name, &format!("listing {}", dir.display()), e))?;
        for child in children {
            let child = child.map_err(|e| layer_error(state.name, &format!("listing {}", dir.display()), e))?;
            self.whiteout(&dir.join(child.file_name()), state)?;
        }
        Ok(())
    }

    /// Removes whatever is at `rel` without following symlinks.
    fn remove(&mut self, rel: &Path) -> Result<(), OciError> {
        let abs = self.root.join(rel);
        let result = match fs::symlink_metadata(&abs) {
            Ok(m) if m.is_dir() => {
                self.dirs.retain(|p, _| !p.starts_with(rel));
                fs::remove_dir_all(&abs)
            }
            Ok(_) => fs::remove_file(&abs),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        };
        result.map_err(|e| OciError::io("removing", abs, e))
    }

    /// Applies directory metadata, deepest first.
    pub(crate) fn finish(self) -> Result<(), OciError> {
        let mut dirs: Vec<_> = self.dirs.into_iter().collect();
        dirs.sort_by_key(|(p, _)| std::cmp::Reverse(p.components().count()));
        for (rel, meta) in dirs {
            if !is_plain_dir_chain(&self.root, &rel) {
                continue;
            }
            let abs = self.root.join(&rel);
            let dir = OpenOptions::new()
                .read(true)
                .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_DIRECTORY)
                .open(&abs)
                .map_err(|e| OciError::io("opening directory", &abs, e))?;
            if self.is_root {
                let (uid, gid) = (clamp_id(meta.uid), clamp_id(meta.gid));
                std::os::unix::fs::fchown(&dir, Some(uid), Some(gid))
                    .map_err(|e| OciError::io("changing owner of", &abs, e))?;
            }
            dir.set_permissions(fs::Permissions::from_mode(meta.mode))
                .map_err(|e| OciError::io("changing mode of", &abs, e))?;
            if let Some(t) = meta.mtime {
                filetime::set_file_handle_times(&dir, Some(t), Some(t))
                    .map_err(|e| OciError::io("setting mtime of", &abs, e))?;
            }
        }
        Ok(())
    }
}

/// Components of an entry path below the root: leading `/` and `.` dropped,
/// `..` refused.
fn relative_components(path: &Path) -> Result<Vec<OsString>, String> {
    let mut out = Vec::new();
    for c in path.components() {
        match c {
            Component::Prefix(_) | Component::RootDir | Component::CurDir => {}
            Component::ParentDir => return Err("path contains `..`".to_owned()),
            Component::Normal(s) => out.push(s.to_owned()),
        }
    }
    Ok(out)
}

fn symlink_components(target: &Path) -> Vec<OsString> {
    target
        .components()
        .filter_map(|c| match c {
            Component::ParentDir => Some(OsString::from("..")),
            Component::Normal(s) => Some(s.to_owned()),
            _ => None,
        })
        .collect()
}

/// Whether every component of `root/rel` is a real directory (no symlink
/// was put in place of one after the directory was recorded).
fn is_plain_dir_chain(root: &Path, rel: &Path) -> bool {
    let mut cur = root.to_owned();
    for c in rel.components() {
        cur.push(c);
        match fs::symlink_metadata(&cur) {
            Ok(m) if m.is_dir() => {}
            _ => return false,
        }
    }
    true
}

fn pax_xattrs<R: Read>(entry: &mut tar::Entry<'_, R>) -> Vec<(OsString, Vec<u8>)> {
    let Ok(Some(exts)) = entry.pax_extensions() else {
        return Vec::new();
    };
    exts.filter_map(Result::ok)
        .filter_map(|ext| {
            let key = ext.key().ok()?.strip_prefix(XATTR_PAX_PREFIX)?;
            Some((OsString::from(key), ext.value_bytes().to_vec()))
        })
        .collect()
}

/// Extended attributes are best effort: a filesystem without xattr support,
/// or `trusted.*` when not root, must not fail the whole image.
fn set_xattrs(path: &Path, xattrs: &[(OsString, Vec<u8>)]) {
    for (key, value) in xattrs {
        if let Err(e) = xattr::set(path, key, value) {
            tracing::warn!(path = %path.display(), key = ?key, error = %e, "cannot set extended attribute");
        }
    }
}

fn mtime_of(header: &tar::Header) -> Option<FileTime> {
    let mtime = i64::try_from(header.mtime().ok()?).ok()?;
    Some(FileTime::from_unix_time(mtime, 0))
}

fn owner(header: &tar::Header) -> (u32, u32) {
    (clamp_id(header.uid().unwrap_or(0)), clamp_id(header.gid().unwrap_or(0)))
}

/// Ids that do not fit a `uid_t` map to the overflow id, as the kernel does.
fn clamp_id(id: u64) -> u32 {
    u32::try_from(id).unwrap_or(65534)
}

fn layer_error(layer: &str, context: &str, source: io::Error) -> OciError {
    OciError::Layer { layer: layer.to_owned(), context: context.to_owned(), source }
}

fn unsafe_path(layer: &str, path: &str, reason: &str) -> OciError {
    OciError::UnsafePath { layer: layer.to_owned(), path: path.to_owned(), reason: reason.to_owned() }
}

/// Whether `dir` exists and has no entries.
pub(crate) fn is_empty_dir(dir: &Path) -> io::Result<bool> {
    Ok(fs::read_dir(dir)?.next().is_none())
}
