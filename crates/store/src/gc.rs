//! Mark and sweep: manifests recorded in repositories are the roots.

use std::collections::HashSet;
use std::fs::{self, OpenOptions};
use std::io;
use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::blob::TEMP_PREFIX;
use crate::lock::{try_lock_exclusive, FileLock};
use crate::manifest::ParsedManifest;
use crate::repo::list_dir;
use crate::{Digest, Reference, Store, StoreError};

/// How careful [`Store::gc`] is with young files.
#[derive(Debug, Clone)]
pub struct GcOptions {
    /// Unreferenced blobs younger than this stay: they may belong to a push
    /// whose manifest has not arrived yet.
    pub grace_period: Duration,
    /// Temporary files and uploads untouched for this long are removed.
    pub stale_after: Duration,
}

impl Default for GcOptions {
    fn default() -> Self {
        GcOptions { grace_period: Duration::from_secs(60 * 60), stale_after: Duration::from_secs(24 * 60 * 60) }
    }
}

/// What [`Store::gc`] did.
#[derive(Debug, Clone, Default)]
pub struct GcReport {
    /// Blobs reachable from a root.
    pub blobs_kept: usize,
    /// Blobs removed.
    pub blobs_removed: Vec<Digest>,
    /// Bytes those blobs took.
    pub bytes_freed: u64,
    /// Temporary files removed (interrupted writes).
    pub temp_files_removed: usize,
    /// Abandoned uploads removed.
    pub uploads_removed: usize,
    /// Root or child manifests that could not be read or parsed; what they
    /// reference could not be marked, and may have been removed if old.
    pub unreadable_manifests: Vec<Digest>,
}

impl Store {
    /// Removes blobs no manifest in any repository reaches, and leftovers
    /// of interrupted writes and abandoned uploads.
    ///
    /// Holds the store's lock exclusively for the whole run: writers keep
    /// writing, but their commits wait until gc is done.
    pub fn gc(&self, options: &GcOptions) -> Result<GcReport, StoreError> {
        let _lock = FileLock::exclusive(&self.lock_path())?;
        let now = SystemTime::now();
        let older_than = |path: &Path, age: Duration| -> Result<bool, StoreError> {
            match fs::symlink_metadata(path).and_then(|m| m.modified()) {
                Ok(t) => Ok(now.duration_since(t).unwrap_or_default() >= age),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
                Err(e) => Err(StoreError::io("reading metadata of", path, e)),
            }
        };
        let mut report = GcReport::default();

        // Mark.
        let mut marked: HashSet<Digest> = HashSet::new();
        let mut queue: Vec<(Digest, Option<String>)> = Vec::new();
        for repo in self.repositories()? {
            for digest in self.manifests(&repo)? {
                let media_type = self.manifest(&repo, &Reference::Digest(digest)).ok().map(|m| m.media_type);
                queue.push((digest, media_type));
            }
            for tag in self.tags(&repo)? {
                if let Some(digest) = self.resolve_tag(&repo, &tag)? {
                    queue.push((digest, None));
                }
            }
        }
        while let Some((digest, media_type)) = queue.pop() {
            if !marked.insert(digest) {
                continue;
            }
            let parsed = self.read_manifest(&digest).and_then(|b| ParsedManifest::parse(&b, media_type.as_deref()));
            match parsed {
                Ok(p) => {
                    marked.extend(p.blobs.iter().map(|d| d.digest));
                    queue.extend(p.manifests.iter().map(|d| (d.digest, None)));
                }
                Err(e) => {
                    tracing::warn!(%digest, error = %e, "gc: cannot follow the references of a manifest");
                    report.unreadable_manifests.push(digest);
                }
            }
        }

        // Sweep blobs and interrupted writes.
        let blob_dir = self.blob_dir();
        for name in list_dir(&blob_dir)? {
            let path = blob_dir.join(&name);
            if let Some(digest) = Digest::from_hex(&name) {
                if marked.contains(&digest) {
                    report.blobs_kept += 1;
                } else if older_than(&path, options.grace_period)? {
                    let size = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                    if remove_file(&path)? {
                        report.blobs_removed.push(digest);
                        report.bytes_freed += size;
                    }
                } else {
                    report.blobs_kept += 1;
                }
            } else if name.starts_with(TEMP_PREFIX)
                && older_than(&path, options.stale_after)?
                && remove_unlocked(&path)?
            {
                report.temp_files_removed += 1;
            }
        }
        report.temp_files_removed += self.sweep_repository_temp_files(&older_than, options.stale_after)?;

        // Sweep abandoned uploads, unless someone holds them open.
        let uploads = self.root().join("uploads");
        for name in list_dir(&uploads)? {
            let dir = uploads.join(&name);
            let data = dir.join("data");
            let stale = if data.exists() {
                older_than(&data, options.stale_after)?
            } else {
                older_than(&dir, options.stale_after)?
            };
            if !stale {
                continue;
            }
            if let Ok(file) = OpenOptions::new().read(true).open(&data) {
                if !try_lock_exclusive(&file).map_err(|e| StoreError::io("locking", &data, e))? {
                    continue;
                }
            }
            match fs::remove_dir_all(&dir) {
                Ok(()) => report.uploads_removed += 1,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(StoreError::io("removing", dir, e)),
            }
        }
        tracing::info!(
            kept = report.blobs_kept,
            removed = report.blobs_removed.len(),
            bytes_freed = report.bytes_freed,
            temp_files = report.temp_files_removed,
            uploads = report.uploads_removed,
            "gc done"
        );
        Ok(report)
    }

    /// Interrupted tag and revision writes leave `.tmp-` files in repository directories.
    fn sweep_repository_temp_files(
        &self,
        older_than: &dyn Fn(&Path, Duration) -> Result<bool, StoreError>,
        age: Duration,
    ) -> Result<usize, StoreError> {
        let mut removed = 0;
        let mut stack = vec![self.root().join("repositories")];
        while let Some(dir) = stack.pop() {
            for name in list_dir(&dir)? {
                let path = dir.join(&name);
                let meta = match fs::symlink_metadata(&path) {
                    Ok(m) => m,
                    Err(_) => continue,
                };
                if meta.is_dir() {
                    stack.push(path);
                } else if name.starts_with(TEMP_PREFIX) && older_than(&path, age)? && remove_unlocked(&path)? {
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }
}

/// Removes a temporary file unless its writer still holds it.
fn remove_unlocked(path: &Path) -> Result<bool, StoreError> {
    match OpenOptions::new().read(true).open(path) {
        Ok(file) => {
            if !try_lock_exclusive(&file).map_err(|e| StoreError::io("locking", path, e))? {
                return Ok(false);
            }
            remove_file(path)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(StoreError::io("opening", path, e)),
    }
}

fn remove_file(path: &Path) -> Result<bool, StoreError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(StoreError::io("removing", path, e)),
    }
}
