//! Files of the trust settings: atomic writes, and a cheap fingerprint of
//! what is on disk so a running provider can tell when to re-read.

use std::fs;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// An error about one file of the trust settings.
#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", path.display())]
pub struct FileError {
    /// The file.
    pub path: PathBuf,
    /// What happened.
    #[source]
    pub source: io::Error,
}

pub(crate) fn file_error(path: &Path) -> impl FnOnce(io::Error) -> FileError + '_ {
    move |source| FileError { path: path.to_path_buf(), source }
}

/// Writes `contents` to `path` so that a reader sees the old file or the
/// new one, never a part: a temporary file in the same directory, synced,
/// then renamed over `path`, then the directory synced.
pub(crate) fn write_atomic(path: &Path, contents: &[u8]) -> Result<(), FileError> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(file_error(dir))?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed)));
    let result = (|| {
        let mut file = fs::File::create(&tmp)?;
        file.write_all(contents)?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        if let Ok(dir) = fs::File::open(dir) {
            // Not every file system syncs directories; the rename is done either way.
            let _ = dir.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(file_error(path))
}

/// Removes `path`, then syncs its directory.
pub(crate) fn remove_file(path: &Path) -> Result<(), FileError> {
    fs::remove_file(path).map_err(file_error(path))?;
    if let Some(dir) = path.parent().and_then(|d| fs::File::open(d).ok()) {
        let _ = dir.sync_all();
    }
    Ok(())
}

/// Whether a directory entry is a temporary or hidden file to skip.
pub(crate) fn is_hidden(path: &Path) -> bool {
    path.file_name().is_none_or(|n| n.to_string_lossy().starts_with('.'))
}

/// What identifies a file's version: size, modification time and inode
/// (an atomic rename changes the inode even within one mtime tick).
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileStamp {
    path: PathBuf,
    len: u64,
    modified: Option<std::time::SystemTime>,
    inode: u64,
}

/// A fingerprint of the trust settings on disk.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Stamp(Vec<FileStamp>);

fn file_stamp(path: &Path) -> Option<FileStamp> {
    let meta = fs::metadata(path).ok()?;
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&meta);
    #[cfg(not(unix))]
    let inode = 0;
    Some(FileStamp { path: path.to_path_buf(), len: meta.len(), modified: meta.modified().ok(), inode })
}

impl Stamp {
    /// Fingerprints `files` and every non-hidden entry of `dirs` (and the
    /// directories themselves). Missing files count as missing.
    pub(crate) fn take(files: &[PathBuf], dirs: &[PathBuf]) -> Stamp {
        let mut stamps: Vec<FileStamp> = files.iter().filter_map(|f| file_stamp(f)).collect();
        for dir in dirs {
            stamps.extend(file_stamp(dir));
            if let Ok(entries) = fs::read_dir(dir) {
                let mut paths: Vec<PathBuf> =
                    entries.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| !is_hidden(p)).collect();
                paths.sort();
                stamps.extend(paths.iter().filter_map(|p| file_stamp(p)));
            }
        }
        Stamp(stamps)
    }
}
