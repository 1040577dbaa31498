//! Image layer encryption in the ocicrypt format (containers/ocicrypt,
//! as Debian's skopeo 1.9 and containerd's imgcrypt write and read it),
//! both ways:
//!
//! * [`cipher`]: the layer cipher `AES_256_CTR_HMAC_SHA256`, streaming,
//!   with the private and public option documents;
//! * [`jwe`]: the private options wrapped per recipient in JWE JSON
//!   (RSA-OAEP, RSA-OAEP-256, ECDH-ES+A128/192/256KW; A256GCM), Flattened
//!   and General, as go-jose writes them;
//! * [`keys`]: recipient public keys and private keys in the forms openssl
//!   and ocicrypt use (PEM, DER, PKCS#8, PKCS#1, SEC1, JWK);
//! * [`layer`]: the `+encrypted` media types and the
//!   `org.opencontainers.image.enc.*` annotations, including adding
//!   recipients to an encrypted layer without touching its data.
//!
//! **Verified before use.** The HMAC and the plaintext's digest are known
//! only at the end of a layer. [`cipher::DecryptingReader`] fails its last
//! read when either does not match; callers (`sealpod-oci`) write what it
//! yields only to places that are discarded unless that last read
//! succeeds: a staging root filesystem, or a temporary blob file that is
//! renamed to its digest afterwards.
//!
//! **Keys** live in memory only: private options and keys zeroize on drop,
//! print no key bytes in `Debug`, and no error message carries them.
//!
//! What it leaves to others: image layouts, manifests and unpacking
//! (`sealpod-oci`), where keys come from and go to (`sealpod-publisher`,
//! `sealpod-provider`). Not supported: the `pkcs7`, `pgp`, `pkcs11` and
//! `provider.*` key wrappers (a layer wrapped only for them is refused by
//! name) and password-protected private keys.
//!
//! Hand-written here: the JWE layer, from RustCrypto parts (`rsa`, `p256`,
//! `p384`, `aes-kw`, `aes-gcm`, `sha1`, `sha2`), because no crate does JWE
//! General JSON with these algorithms in pure Rust (`josekit` needs
//! OpenSSL, `biscuit` has no RSA-OAEP or ECDH-ES key management,
//! `jwt-simple` only compact JWTs); and the Concat KDF (a dozen lines,
//! checked against RFC 7518 Appendix C).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod cipher;
mod error;
pub mod jwe;
pub mod keys;
pub mod layer;

pub use cipher::{DecryptingReader, EncryptingReader, PrivateOptions, PublicOptions, Verdict};
pub use error::CryptError;
pub use keys::{parse_private_key, parse_public_key, PrivateKey, PublicKey, Recipient};
pub use layer::LayerKey;

/// Fills `buf` from the operating system's generator.
pub(crate) fn random(buf: &mut [u8]) {
    use rand_core::RngCore;
    rand_core::OsRng.fill_bytes(buf);
}
