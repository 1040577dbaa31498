//! The node key, kept on disk so a node's peer id survives restarts.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use libp2p::identity::Keypair;

/// Why the node key could not be loaded or created.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// Reading or writing the key file failed.
    #[error("node key {path}: {source}")]
    Io {
        /// The key file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file exists but does not hold a protobuf-encoded libp2p keypair.
    #[error("node key {path} is not a valid libp2p keypair ({reason}); move it away to create a new identity")]
    Invalid {
        /// The key file.
        path: PathBuf,
        /// What the decoder said.
        reason: String,
    },
}

/// Loads the Ed25519 node key at `path`, or creates one (mode 0600, written to a
/// temporary file and renamed so a crash never leaves half a key).
pub fn load_or_create_keypair(path: &Path) -> Result<Keypair, IdentityError> {
    let io_err = |source| IdentityError::Io { path: path.to_owned(), source };
    match std::fs::read(path) {
        Ok(bytes) => Keypair::from_protobuf_encoding(&bytes)
            .map_err(|e| IdentityError::Invalid { path: path.to_owned(), reason: e.to_string() }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = Keypair::generate_ed25519();
            let bytes = key.to_protobuf_encoding().expect("ed25519 keys always encode");
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(io_err)?;
            }
            let tmp = path.with_extension("tmp");
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(io_err)?;
            f.write_all(&bytes).and_then(|_| f.sync_all()).map_err(io_err)?;
            std::fs::rename(&tmp, path).map_err(io_err)?;
            Ok(key)
        }
        Err(e) => Err(io_err(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_key_persists_across_loads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/node.key");
        let a = load_or_create_keypair(&path).unwrap();
        let b = load_or_create_keypair(&path).unwrap();
        assert_eq!(a.public().to_peer_id(), b.public().to_peer_id());
        let mode = std::fs::metadata(&path).unwrap().permissions();
        assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777, 0o600);
    }

    #[test]
    fn corrupt_node_key_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.key");
        std::fs::write(&path, b"garbage").unwrap();
        let err = load_or_create_keypair(&path).unwrap_err();
        assert!(err.to_string().contains("not a valid libp2p keypair"), "{err}");
    }
}
