//! Where a [`Tree`](crate::Tree) keeps its hashes: a small trait, an
//! in-memory store and an append-only file store. Not a storage engine: no
//! entries, no indexes, no concurrency beyond one writer.
//!
//! Level `k` holds, in order, the hash of every complete subtree of `2^k`
//! leaves aligned on a multiple of `2^k`: level 0 holds the leaf hashes, and a
//! tree of `n` leaves has `n >> k` hashes at level `k`. A tree of `n` leaves
//! thus stores fewer than `2n` hashes, and every Merkle tree hash it needs is
//! either stored or combines at most `log2 n` stored ones.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::hash::{Hash, HASH_SIZE};

/// Number of levels a tree of up to `u64::MAX` leaves can have.
pub const MAX_LEVELS: usize = 64;

/// A failure of the store underneath a tree.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// A hash was asked for that the store does not hold: the tree and its
    /// store disagree, which means the store was changed underneath the tree.
    #[error("the store has no hash at level {level} index {index}")]
    Missing {
        /// Level asked for.
        level: u8,
        /// Index asked for.
        index: u64,
    },
    /// Level number outside `0..64`.
    #[error("level {0} does not exist: a tree has at most 64 levels")]
    BadLevel(u8),
}

/// Append-only storage of the hashes of complete subtrees, level by level
/// (see the module documentation for the layout).
pub trait HashStore {
    /// Number of hashes stored at `level`.
    fn level_len(&self, level: u8) -> u64;
    /// Hash `index` of `level`.
    fn get(&self, level: u8, index: u64) -> Result<Hash, StoreError>;
    /// Appends a hash at the end of `level`.
    fn push(&mut self, level: u8, hash: &Hash) -> Result<(), StoreError>;
    /// Drops hashes past `len` at `level` (used only to repair a store after
    /// an interrupted append).
    fn truncate(&mut self, level: u8, len: u64) -> Result<(), StoreError>;
    /// Makes everything pushed so far durable. A no-op in memory.
    fn sync(&mut self) -> Result<(), StoreError> {
        Ok(())
    }
}

fn check_level(level: u8) -> Result<usize, StoreError> {
    let l = usize::from(level);
    if l < MAX_LEVELS {
        Ok(l)
    } else {
        Err(StoreError::BadLevel(level))
    }
}

/// Hashes kept in memory: about 64 bytes per leaf.
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    levels: Vec<Vec<Hash>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

impl HashStore for MemoryStore {
    fn level_len(&self, level: u8) -> u64 {
        self.levels.get(usize::from(level)).map_or(0, |l| l.len() as u64)
    }

    fn get(&self, level: u8, index: u64) -> Result<Hash, StoreError> {
        usize::try_from(index)
            .ok()
            .and_then(|i| self.levels.get(usize::from(level))?.get(i))
            .copied()
            .ok_or(StoreError::Missing { level, index })
    }

    fn push(&mut self, level: u8, hash: &Hash) -> Result<(), StoreError> {
        let l = check_level(level)?;
        if self.levels.len() <= l {
            self.levels.resize_with(l + 1, Vec::new);
        }
        self.levels[l].push(*hash);
        Ok(())
    }

    fn truncate(&mut self, level: u8, len: u64) -> Result<(), StoreError> {
        if let Some(l) = self.levels.get_mut(usize::from(level)) {
            l.truncate(usize::try_from(len).unwrap_or(usize::MAX));
        }
        Ok(())
    }
}

/// Hashes kept in a directory, one append-only file of concatenated 32-byte
/// hashes per level (`level-00.hashes`, `level-01.hashes`, ...). Unix only
/// (reads use positioned `pread`).
///
/// Appends are buffered by the operating system until [`HashStore::sync`].
/// A crash can leave a partly written hash at the end of a file, or a parent
/// hash not yet written; [`FileStore::open`] drops the partial hash and
/// [`Tree::open`](crate::Tree::open) recomputes missing parents, so a reopened
/// tree is always a valid tree of the leaves that were fully written.
#[derive(Debug)]
pub struct FileStore {
    dir: PathBuf,
    files: Vec<File>,
    lens: Vec<u64>,
    /// Levels written since the last sync: only those are synced, about
    /// two per appended leaf rather than every level of the tree.
    dirty: Vec<bool>,
    /// A level file was created since the last sync, so the directory
    /// entry must be made durable too.
    dir_dirty: bool,
}

impl FileStore {
    /// Opens (creating if needed) the store in directory `dir`.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, StoreError> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|source| StoreError::Io { path: dir.clone(), source })?;
        let mut store = FileStore { dir, files: Vec::new(), lens: Vec::new(), dirty: Vec::new(), dir_dirty: false };
        for level in 0..MAX_LEVELS as u8 {
            let path = store.path(level);
            if !path.exists() {
                break;
            }
            store.open_level(level)?;
        }
        Ok(store)
    }

    /// The directory the store lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, level: u8) -> PathBuf {
        self.dir.join(format!("level-{level:02}.hashes"))
    }

    fn open_level(&mut self, level: u8) -> Result<(), StoreError> {
        let path = self.path(level);
        let io = |source| StoreError::Io { path: path.clone(), source };
        let created = !path.exists();
        let file = OpenOptions::new().read(true).append(true).create(true).open(&path).map_err(io)?;
        let bytes = file.metadata().map_err(io)?.len();
        let whole = bytes / HASH_SIZE as u64;
        if bytes % HASH_SIZE as u64 != 0 {
            // The tail of an interrupted append.
            file.set_len(whole * HASH_SIZE as u64).map_err(io)?;
        }
        self.files.push(file);
        self.lens.push(whole);
        self.dirty.push(bytes % HASH_SIZE as u64 != 0);
        self.dir_dirty |= created;
        Ok(())
    }
}

impl HashStore for FileStore {
    fn level_len(&self, level: u8) -> u64 {
        self.lens.get(usize::from(level)).copied().unwrap_or(0)
    }

    fn get(&self, level: u8, index: u64) -> Result<Hash, StoreError> {
        let l = usize::from(level);
        if index >= self.level_len(level) {
            return Err(StoreError::Missing { level, index });
        }
        let mut hash = [0u8; HASH_SIZE];
        self.files[l]
            .read_exact_at(&mut hash, index * HASH_SIZE as u64)
            .map_err(|source| StoreError::Io { path: self.path(level), source })?;
        Ok(hash)
    }

    fn push(&mut self, level: u8, hash: &Hash) -> Result<(), StoreError> {
        let l = check_level(level)?;
        while self.files.len() <= l {
            self.open_level(self.files.len() as u8)?;
        }
        self.files[l].write_all(hash).map_err(|source| StoreError::Io { path: self.path(level), source })?;
        self.lens[l] += 1;
        self.dirty[l] = true;
        Ok(())
    }

    fn truncate(&mut self, level: u8, len: u64) -> Result<(), StoreError> {
        let l = usize::from(level);
        if l < self.files.len() && len < self.lens[l] {
            self.files[l]
                .set_len(len * HASH_SIZE as u64)
                .map_err(|source| StoreError::Io { path: self.path(level), source })?;
            self.lens[l] = len;
            self.dirty[l] = true;
        }
        Ok(())
    }

    fn sync(&mut self) -> Result<(), StoreError> {
        for (l, f) in self.files.iter().enumerate() {
            if self.dirty[l] {
                f.sync_data().map_err(|source| StoreError::Io { path: self.path(l as u8), source })?;
                self.dirty[l] = false;
            }
        }
        if self.dir_dirty {
            let dir = File::open(&self.dir).map_err(|source| StoreError::Io { path: self.dir.clone(), source })?;
            dir.sync_all().map_err(|source| StoreError::Io { path: self.dir.clone(), source })?;
            self.dir_dirty = false;
        }
        Ok(())
    }
}
