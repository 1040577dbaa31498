//! Advisory `flock(2)` locks. Each guard opens its own file description, so
//! the locks exclude threads of one process as well as other processes, and
//! the kernel drops them when a process dies.

use std::fs::{File, OpenOptions};
use std::path::Path;

use rustix::fs::{flock, FlockOperation};

use crate::StoreError;

/// Held while the lock is; dropping it unlocks.
#[derive(Debug)]
pub(crate) struct FileLock {
    _file: File,
}

impl FileLock {
    pub(crate) fn shared(path: &Path) -> Result<FileLock, StoreError> {
        Self::acquire(path, FlockOperation::LockShared)
    }

    pub(crate) fn exclusive(path: &Path) -> Result<FileLock, StoreError> {
        Self::acquire(path, FlockOperation::LockExclusive)
    }

    fn acquire(path: &Path, op: FlockOperation) -> Result<FileLock, StoreError> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(|e| StoreError::io("opening lock file", path, e))?;
        flock(&file, op).map_err(|e| StoreError::io("locking", path, e.into()))?;
        Ok(FileLock { _file: file })
    }
}

/// Takes an exclusive lock on an open file without waiting; `false` if
/// someone else holds it.
pub(crate) fn try_lock_exclusive(file: &File) -> std::io::Result<bool> {
    match flock(file, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(true),
        Err(e) if e == rustix::io::Errno::WOULDBLOCK => Ok(false),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_second_open_file_cannot_take_a_held_lock() {
        let f = tempfile::NamedTempFile::new().unwrap();
        assert!(super::try_lock_exclusive(f.as_file()).unwrap());
        let g = std::fs::File::open(f.path()).unwrap();
        assert!(!super::try_lock_exclusive(&g).unwrap());
    }
}
