//! The entries file: every log entry, in order, each as a big-endian `u16`
//! length and the entry's canonical encoding (the same framing as a C2SP
//! entry bundle). Appended only; a torn record at the end (a crash during
//! an append) is cut off on open.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::LogError;

/// The entries file and the offset of every record in it.
#[derive(Debug)]
pub(crate) struct EntryFile {
    path: PathBuf,
    file: File,
    /// Offset of record `i`; one more element holds the end of the file.
    offsets: Vec<u64>,
}

impl EntryFile {
    /// Opens (creating if needed) the file and indexes it, dropping a torn
    /// final record.
    pub(crate) fn open(path: &Path) -> Result<EntryFile, LogError> {
        let io = |e| LogError::io(path, e);
        let mut file = OpenOptions::new().read(true).append(true).create(true).open(path).map_err(io)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io)?;
        let mut offsets = vec![0u64];
        let mut at = 0usize;
        while let Some(len) = bytes.get(at..at + 2) {
            let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
            if at + 2 + len > bytes.len() {
                break;
            }
            at += 2 + len;
            offsets.push(at as u64);
        }
        if at != bytes.len() {
            tracing::warn!(path = %path.display(), torn = bytes.len() - at, "dropping a torn entry record");
            file.set_len(at as u64).map_err(io)?;
        }
        Ok(EntryFile { path: path.to_owned(), file, offsets })
    }

    /// Number of records.
    pub(crate) fn len(&self) -> u64 {
        self.offsets.len() as u64 - 1
    }

    /// Drops records past `len` (ones no checkpoint covers).
    pub(crate) fn truncate(&mut self, len: u64) -> Result<(), LogError> {
        if len >= self.len() {
            return Ok(());
        }
        self.offsets.truncate(len as usize + 1);
        let end = *self.offsets.last().unwrap_or(&0);
        self.file.set_len(end).map_err(|e| LogError::io(&self.path, e))?;
        self.file.sync_all().map_err(|e| LogError::io(&self.path, e))
    }

    /// Appends records and makes them durable.
    pub(crate) fn append(&mut self, entries: &[Vec<u8>]) -> Result<(), LogError> {
        let mut buf = Vec::new();
        let mut end = *self.offsets.last().unwrap_or(&0);
        let mut new_offsets = Vec::with_capacity(entries.len());
        for e in entries {
            let len = u16::try_from(e.len()).map_err(|_| LogError::Corrupt(format!("entry of {} bytes", e.len())))?;
            buf.extend_from_slice(&len.to_be_bytes());
            buf.extend_from_slice(e);
            end += 2 + e.len() as u64;
            new_offsets.push(end);
        }
        let io = |e| LogError::io(&self.path, e);
        self.file.write_all(&buf).map_err(io)?;
        self.file.sync_data().map_err(io)?;
        self.offsets.extend(new_offsets);
        Ok(())
    }

    /// Record `index`.
    pub(crate) fn get(&self, index: u64) -> Result<Vec<u8>, LogError> {
        let i = usize::try_from(index).ok().filter(|&i| i + 1 < self.offsets.len());
        let Some(i) = i else { return Err(LogError::Corrupt(format!("entry {index} is not stored"))) };
        let (start, end) = (self.offsets[i] + 2, self.offsets[i + 1]);
        let mut out = vec![0u8; (end - start) as usize];
        self.file.read_exact_at(&mut out, start).map_err(|e| LogError::io(&self.path, e))?;
        Ok(out)
    }
}
