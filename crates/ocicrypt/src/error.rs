//! Typed errors. None of them carries key material: a message may name an
//! algorithm, a size or an annotation, never a key's bytes.

/// Why keys could not be read, wrapped or unwrapped, or a layer could not be
/// encrypted or decrypted.
#[derive(Debug, thiserror::Error)]
pub enum CryptError {
    /// A key file could not be understood.
    #[error("key: {0}")]
    Key(String),
    /// A JWE could not be parsed or uses what is not supported.
    #[error("JWE: {0}")]
    Jwe(String),
    /// None of the given private keys is a recipient of the layer.
    #[error("none of the {keys} private key(s) given can unwrap the layer key ({tried})")]
    NoRecipient {
        /// How many keys were tried.
        keys: usize,
        /// What each wrapped key said, joined.
        tried: String,
    },
    /// The layer carries no wrapped keys this crate can read.
    #[error("missing annotation {0}: the layer is not encrypted for a JWE recipient")]
    MissingAnnotation(&'static str),
    /// An annotation is malformed.
    #[error("annotation {name}: {reason}")]
    Annotation {
        /// The annotation.
        name: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The layer options (private or public) are malformed or unsupported.
    #[error("layer options: {0}")]
    Options(String),
    /// The media type cannot be encrypted or decrypted.
    #[error("media type {0:?}: {1}")]
    MediaType(String, &'static str),
}

pub(crate) fn jwe(msg: impl Into<String>) -> CryptError {
    CryptError::Jwe(msg.into())
}

pub(crate) fn key(msg: impl Into<String>) -> CryptError {
    CryptError::Key(msg.into())
}
