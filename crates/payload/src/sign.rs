//! Signing a manifest, for publishers: the same bytes `openssl dgst
//! -<digest> -sign key.pem` writes over the base64 text.

use crate::crypto::parse_private_key_pem;
use crate::digest::{DigestAlgorithm, UnknownDigest};

/// Why a manifest could not be signed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    /// The digest name is not known.
    #[error("{0}")]
    UnknownDigest(#[from] UnknownDigest),
    /// The private key cannot be read.
    #[error("cannot read the private key: {0}")]
    Key(String),
    /// The signing primitive failed.
    #[error("signing failed: {0}")]
    Signing(String),
}

/// Signs `manifest_base64` (the exact text that will travel) with the private
/// key in `key_pem`, hashing with `digest` (`sha256`, ...).
///
/// Keys: RSA (`RSA PRIVATE KEY` as `openssl genrsa` writes, or PKCS#8
/// `PRIVATE KEY`), ECDSA P-256 and P-384 (`EC PRIVATE KEY` as `openssl ecparam
/// -genkey` writes, an `EC PARAMETERS` block before it is skipped, or PKCS#8),
/// Ed25519 (PKCS#8, as `openssl genpkey -algorithm ed25519` writes).
/// Encrypted keys are refused: decrypt them with `openssl pkey` first.
///
/// Output: PKCS#1 v1.5 for RSA (blinded), DER `ECDSA-Sig-Value` for ECDSA
/// (deterministic, RFC 6979), the 64-byte signature for Ed25519, which signs
/// the text itself and ignores `digest` (as `openssl pkeyutl -sign -rawin`).
pub fn sign(manifest_base64: &str, key_pem: &str, digest: &str) -> Result<Vec<u8>, SignError> {
    let digest = DigestAlgorithm::from_name(digest)?;
    let key = parse_private_key_pem(key_pem).map_err(SignError::Key)?;
    key.sign(digest, manifest_base64.as_bytes()).map_err(SignError::Signing)
}
