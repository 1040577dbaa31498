//! Captured container output, kept in size-bounded files.
//!
//! A container's combined stdout and stderr is one byte stream. The shim appends
//! it to `<name>.log`; when that reaches the size limit it becomes `<name>.log.1`
//! (replacing the previous one) and a new file starts. Readers address bytes by
//! their offset in the whole stream since the pod started, so a follower that
//! asks again from where it stopped neither misses nor repeats bytes while they
//! are retained. `<name>.log.base` holds the stream offset of the current file's
//! first byte.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Default size at which a log file is rotated.
pub const DEFAULT_ROTATE_BYTES: u64 = 8 << 20;

fn paths(dir: &Path, name: &str) -> (PathBuf, PathBuf, PathBuf) {
    (dir.join(format!("{name}.log")), dir.join(format!("{name}.log.1")), dir.join(format!("{name}.log.base")))
}

fn read_base(path: &Path) -> u64 {
    fs::read_to_string(path).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0)
}

/// Appends a container's output, rotating by size.
pub struct LogWriter {
    dir: PathBuf,
    name: String,
    file: File,
    /// Bytes in the current file.
    len: u64,
    /// Stream offset of the current file's first byte.
    base: u64,
    rotate_bytes: u64,
}

impl LogWriter {
    /// Opens (or continues) the log of container `name` in `dir`.
    pub fn open(dir: &Path, name: &str, rotate_bytes: u64) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        // Logs are the tenant's: no other host user reads them.
        fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
        let (current, _, base) = paths(dir, name);
        let file = OpenOptions::new().create(true).append(true).open(&current)?;
        let len = file.metadata()?.len();
        Ok(LogWriter { dir: dir.to_owned(), name: name.to_owned(), file, len, base: read_base(&base), rotate_bytes })
    }

    /// Appends bytes, rotating first if they would overflow the current file.
    pub fn append(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            if self.len >= self.rotate_bytes {
                self.rotate()?;
            }
            let room = (self.rotate_bytes - self.len).max(1) as usize;
            let n = room.min(data.len());
            self.file.write_all(&data[..n])?;
            self.len += n as u64;
            data = &data[n..];
        }
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        let (current, old, base) = paths(&self.dir, &self.name);
        fs::rename(&current, &old)?;
        self.base += self.len;
        let tmp = base.with_extension("tmp");
        fs::write(&tmp, self.base.to_string())?;
        fs::rename(&tmp, &base)?;
        self.file = OpenOptions::new().create(true).append(true).open(&current)?;
        self.len = 0;
        Ok(())
    }
}

/// A slice of a log stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSlice {
    /// Stream offset of `data[0]`.
    pub offset: u64,
    /// The bytes.
    pub data: Vec<u8>,
    /// Offset to ask for next.
    pub next_offset: u64,
}

/// Reads at most `max` bytes of container `name`'s log from stream offset
/// `offset`. Bytes rotated away are skipped: the slice then starts later than
/// asked, and says so in its `offset`.
pub fn read_log(dir: &Path, name: &str, offset: u64, max: usize) -> io::Result<LogSlice> {
    let (current, old, base_path) = paths(dir, name);
    // The base can move under us while the writer rotates; read it, read, and
    // retry once if it changed.
    for _ in 0..3 {
        let base = read_base(&base_path);
        let old_len = fs::metadata(&old).map(|m| m.len()).unwrap_or(0);
        let oldest = base.saturating_sub(old_len);
        let start = offset.max(oldest);
        let mut data = Vec::new();
        if start < base {
            read_range(&old, start - oldest, max, &mut data)?;
        }
        if data.len() < max && start + data.len() as u64 >= base {
            let from = start + data.len() as u64 - base;
            read_range(&current, from, max - data.len(), &mut data)?;
        }
        if read_base(&base_path) == base {
            let next_offset = start + data.len() as u64;
            return Ok(LogSlice { offset: start, data, next_offset });
        }
    }
    Err(io::Error::other("log rotated repeatedly while reading; try again"))
}

fn read_range(path: &Path, from: u64, max: usize, out: &mut Vec<u8>) -> io::Result<()> {
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    f.seek(SeekFrom::Start(from))?;
    f.take(max as u64).read_to_end(out)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_follows_the_stream_across_rotations() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = LogWriter::open(dir.path(), "web", 10).unwrap();
        w.append(b"0123456789abcdefghij").unwrap(); // fills .log, rotates, fills again
        w.append(b"KLM").unwrap();
        // The first 10 bytes are gone (two rotations kept only one old file).
        let s = read_log(dir.path(), "web", 0, 100).unwrap();
        assert_eq!(s.offset, 10);
        assert_eq!(s.data, b"abcdefghijKLM");
        assert_eq!(s.next_offset, 23);
        let s = read_log(dir.path(), "web", 15, 4).unwrap();
        assert_eq!(s.data, b"fghi");
        let s = read_log(dir.path(), "web", 23, 100).unwrap();
        assert!(s.data.is_empty());
        assert_eq!(s.next_offset, 23);
    }

    #[test]
    fn writer_continues_where_a_previous_shim_stopped() {
        let dir = tempfile::tempdir().unwrap();
        LogWriter::open(dir.path(), "a", 100).unwrap().append(b"hello ").unwrap();
        LogWriter::open(dir.path(), "a", 100).unwrap().append(b"world").unwrap();
        assert_eq!(read_log(dir.path(), "a", 0, 100).unwrap().data, b"hello world");
    }

    #[test]
    fn reading_a_log_that_does_not_exist_yet_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        let s = read_log(dir.path(), "none", 0, 10).unwrap();
        assert!(s.data.is_empty());
    }
}
