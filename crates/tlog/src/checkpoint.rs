//! C2SP tlog-checkpoint (`c2sp.org/tlog-checkpoint`): the note text that
//! commits a log to a tree size and root hash.
//!
//! ```text
//! example.com/behind-the-sofa
//! 20852163
//! CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=
//! ```

use std::fmt;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;

use crate::hash::{Hash, EMPTY_ROOT};
use crate::note::{Note, NoteError, VerifierSet};

/// A checkpoint that cannot be parsed, or does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    /// The note around it is malformed or does not verify.
    #[error(transparent)]
    Note(#[from] NoteError),
    /// Fewer than three lines, no final newline, or an empty line.
    #[error("malformed checkpoint: {0}")]
    Malformed(&'static str),
    /// The tree size line is not a decimal without leading zeroes that fits
    /// in 64 bits.
    #[error("checkpoint tree size {0:?} is not a decimal number without leading zeroes")]
    BadSize(String),
    /// The root hash line is not the canonical base64 of 32 bytes.
    #[error("checkpoint root hash {0:?} is not the standard base64 of 32 bytes")]
    BadRoot(String),
    /// The checkpoint names another log than the one expected.
    #[error("checkpoint is for log {got:?}, expected {want:?}")]
    WrongOrigin {
        /// Origin in the checkpoint.
        got: String,
        /// Origin expected.
        want: String,
    },
}

/// A log's tree head: origin, size and root hash, and any extension lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log's identity (first line), e.g. `example.com/log42`.
    pub origin: String,
    /// Number of leaves.
    pub size: u64,
    /// RFC 6962 root hash at that size.
    pub root: Hash,
    /// Opaque extension lines (not recommended by the spec; never empty).
    pub extensions: Vec<String>,
}

fn cut(s: &str) -> String {
    s.chars().take(100).collect()
}

impl Checkpoint {
    /// A checkpoint without extension lines.
    pub fn new(origin: impl Into<String>, size: u64, root: Hash) -> Result<Self, CheckpointError> {
        let c = Checkpoint { origin: origin.into(), size, root, extensions: Vec::new() };
        c.validate()?;
        Ok(c)
    }

    /// The checkpoint of the empty tree of a log, a starting point to trust.
    pub fn empty(origin: impl Into<String>) -> Result<Self, CheckpointError> {
        Self::new(origin, 0, EMPTY_ROOT)
    }

    fn validate(&self) -> Result<(), CheckpointError> {
        for line in std::iter::once(&self.origin).chain(&self.extensions) {
            if line.is_empty() {
                return Err(CheckpointError::Malformed("origin and extension lines must be non-empty"));
            }
            if line.chars().any(|c| c < '\u{20}') {
                return Err(CheckpointError::Malformed(
                    "origin and extension lines must not contain control characters",
                ));
            }
        }
        Ok(())
    }

    /// Parses checkpoint note text (without signatures). The rules of
    /// tlog-checkpoint "Note text": at least three non-empty lines, each
    /// ending in newline; a non-empty origin; the size in decimal with no
    /// leading zeroes; the root in standard base64 (canonical, 32 bytes).
    pub fn parse(text: &str) -> Result<Self, CheckpointError> {
        if text.len() > crate::note::MAX_NOTE_SIZE {
            return Err(CheckpointError::Note(NoteError::TooLarge(text.len())));
        }
        let body = text.strip_suffix('\n').ok_or(CheckpointError::Malformed("does not end with a newline"))?;
        let lines: Vec<&str> = body.split('\n').collect();
        if lines.len() < 3 {
            return Err(CheckpointError::Malformed("fewer than three lines"));
        }
        if lines.iter().any(|l| l.is_empty()) {
            return Err(CheckpointError::Malformed("empty line"));
        }
        let size_line = lines[1];
        let size_ok =
            size_line.bytes().all(|b| b.is_ascii_digit()) && (size_line == "0" || !size_line.starts_with('0'));
        let size = size_line
            .parse::<u64>()
            .ok()
            .filter(|_| size_ok)
            .ok_or_else(|| CheckpointError::BadSize(cut(size_line)))?;
        let root = BASE64
            .decode(lines[2])
            .ok()
            .and_then(|r| Hash::try_from(r.as_slice()).ok())
            .ok_or_else(|| CheckpointError::BadRoot(cut(lines[2])))?;
        let c = Checkpoint {
            origin: lines[0].to_owned(),
            size,
            root,
            extensions: lines[3..].iter().map(|s| (*s).to_owned()).collect(),
        };
        c.validate()?;
        Ok(c)
    }

    /// The note text: origin, size, base64 root, extension lines, each
    /// followed by a newline.
    pub fn to_text(&self) -> String {
        self.to_string()
    }

    /// Opens a signed checkpoint: parses the note, verifies it against the
    /// log's keys (at least one must have signed; see [`Note::verify`]),
    /// parses the checkpoint and checks that its origin is `origin`.
    pub fn open(note: &[u8], origin: &str, log_keys: &VerifierSet) -> Result<(Checkpoint, Note), CheckpointError> {
        let note = Note::parse(note)?;
        note.verify(log_keys)?;
        let checkpoint = Checkpoint::parse(note.text())?;
        if checkpoint.origin != origin {
            return Err(CheckpointError::WrongOrigin { got: checkpoint.origin, want: origin.to_owned() });
        }
        Ok((checkpoint, note))
    }

    /// An unsigned note holding this checkpoint, to be signed by the log.
    pub fn to_note(&self) -> Result<Note, CheckpointError> {
        self.validate()?;
        Ok(Note::new(self.to_text())?)
    }
}

impl fmt::Display for Checkpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}\n{}\n{}", self.origin, self.size, BASE64.encode(self.root))?;
        for e in &self.extensions {
            writeln!(f, "{e}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::note::Ed25519Signer;

    const SPEC_TEXT: &str = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n";

    #[test]
    fn parses_the_spec_example() {
        let c = Checkpoint::parse(SPEC_TEXT).unwrap();
        assert_eq!(c.origin, "example.com/behind-the-sofa");
        assert_eq!(c.size, 20852163);
        assert_eq!(c.to_text(), SPEC_TEXT);
        assert!(c.extensions.is_empty());
    }

    #[test]
    fn extension_lines_round_trip() {
        let text = format!("{SPEC_TEXT}ext one\next two\n");
        let c = Checkpoint::parse(&text).unwrap();
        assert_eq!(c.extensions, vec!["ext one", "ext two"]);
        assert_eq!(c.to_text(), text);
    }

    #[test]
    fn rejects_malformed_checkpoints() {
        let root = "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=";
        for (text, why) in [
            (String::new(), "empty"),
            ("o\n1\n".to_string(), "two lines"),
            (format!("o\n1\n{root}"), "no final newline"),
            (format!("\n1\n{root}\n"), "empty origin"),
            (format!("o\n\n{root}\n"), "empty size"),
            (format!("o\n01\n{root}\n"), "leading zero"),
            (format!("o\n00\n{root}\n"), "double zero"),
            (format!("o\n+1\n{root}\n"), "plus sign"),
            (format!("o\n-1\n{root}\n"), "negative"),
            (format!("o\n 1\n{root}\n"), "space"),
            (format!("o\n18446744073709551616\n{root}\n"), "overflow"),
            (format!("o\n0x10\n{root}\n"), "hex"),
            ("o\n1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I\n".to_string(), "unpadded"),
            ("o\n1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2J=\n".to_string(), "non-canonical"),
            ("o\n1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jx\n".to_string(), "short root"),
            ("o\n1\nCsUYapGGPo4dkMgIAUqom_Xajj7h2fB2MPA3j2jxq2I=\n".to_string(), "url-safe base64"),
            (format!("o\n1\n{root}\n\n"), "empty extension line"),
            (format!("o\n1\n{root}\next\n\n"), "empty last extension line"),
        ] {
            assert!(Checkpoint::parse(&text).is_err(), "accepted {why}: {text:?}");
        }
        assert!(Checkpoint::parse(&format!("o\n0\n{root}\n")).is_ok());
        assert!(Checkpoint::parse(&format!("o\n18446744073709551615\n{root}\n")).is_ok());
    }

    #[test]
    fn opens_a_signed_checkpoint_only_for_its_log() {
        let log = Ed25519Signer::generate("example.com/log").unwrap();
        let c = Checkpoint::new("example.com/log", 3, [9; 32]).unwrap();
        let mut note = c.to_note().unwrap();
        note.sign(&log).unwrap();
        let keys = VerifierSet::new().with(log.verifier()).unwrap();
        let (opened, _) = Checkpoint::open(&note.to_bytes(), "example.com/log", &keys).unwrap();
        assert_eq!(opened, c);
        assert!(matches!(
            Checkpoint::open(&note.to_bytes(), "example.com/other", &keys),
            Err(CheckpointError::WrongOrigin { .. })
        ));
        // A tampered root no longer verifies.
        let tampered =
            String::from_utf8(note.to_bytes()).unwrap().replace(&BASE64.encode([9u8; 32]), &BASE64.encode([8u8; 32]));
        assert!(matches!(
            Checkpoint::open(tampered.as_bytes(), "example.com/log", &keys),
            Err(CheckpointError::Note(NoteError::BadSignature { .. }))
        ));
        // Another log's key does not open it.
        let other = VerifierSet::new().with(Ed25519Signer::generate("example.com/log").unwrap().verifier()).unwrap();
        assert!(matches!(
            Checkpoint::open(&note.to_bytes(), "example.com/log", &other),
            Err(CheckpointError::Note(NoteError::NoKnownSignature(_)))
        ));
    }

    #[test]
    fn refuses_to_build_unparseable_checkpoints() {
        assert!(Checkpoint::new("", 0, [0; 32]).is_err());
        assert!(Checkpoint::new("a\nb", 0, [0; 32]).is_err());
        let mut c = Checkpoint::empty("o").unwrap();
        c.extensions.push(String::new());
        assert!(c.to_note().is_err());
    }
}
