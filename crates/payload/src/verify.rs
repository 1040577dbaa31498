//! Verifying a signed manifest: the signature by the app author's key over
//! the exact base64 text, the author's certificate chain up to a certificate
//! in the provider's keystore, and the manifest's own validity period.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use chrono::{DateTime, Utc};

use crate::digest::{DigestAlgorithm, UnknownDigest};
use crate::keystore::Keystore;
use crate::manifest::{decode_manifest, ManifestError, PayloadManifest, MAX_MANIFEST_BASE64_BYTES};
use crate::x509::{self, CertificateError, CertificateInfo};

/// How far in the future `createdAt` may be and still be accepted: room for
/// the publisher's and the provider's clocks to disagree a little.
pub const CREATED_AT_TOLERANCE: Duration = Duration::from_secs(300);

/// The largest signature accepted, in bytes (RSA-4096 is 512).
pub const MAX_SIGNATURE_BYTES: usize = 1024;

/// Why a manifest, or a signature, is not accepted. Each variant says what
/// failed; none of them is retried with a weaker check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The signature algorithm (digest) name is not known.
    #[error("{0}")]
    UnknownDigest(#[from] UnknownDigest),
    /// No certificate was sent with the signature.
    #[error("no certificate was sent with the signature: the app author's certificate is required")]
    NoCertificate,
    /// The certificate input does not parse.
    #[error("the app author's certificate: {0}")]
    Certificate(#[from] CertificateError),
    /// The keystore holds no certificate, so nothing can be trusted.
    #[error("the keystore is empty: import the certificate of a CA you trust (`sealpod keystore add CA.pem`)")]
    EmptyKeystore,
    /// The chain ends at a self-signed certificate that is not in the keystore.
    #[error("certificate chain ends at `{subject}`, a root that is not in the keystore")]
    UntrustedRoot {
        /// The untrusted root's subject.
        subject: String,
    },
    /// The issuer of a certificate on the chain is neither in the keystore nor sent with it.
    #[error(
        "certificate `{subject}` is issued by `{issuer}`, which is neither in the keystore nor sent with it: \
         the chain does not lead to a trusted certificate"
    )]
    UntrustedIssuer {
        /// The certificate whose issuer is missing.
        subject: String,
        /// The missing issuer's name.
        issuer: String,
    },
    /// A certificate's signature does not verify with its issuer's key.
    #[error("the signature on certificate `{subject}` does not verify with the key of `{issuer}`")]
    CertificateSignature {
        /// The certificate.
        subject: String,
        /// Its issuer.
        issuer: String,
    },
    /// A certificate on the chain has expired.
    #[error("certificate `{subject}` expired at {not_after}")]
    CertificateExpired {
        /// The certificate.
        subject: String,
        /// Its notAfter.
        not_after: DateTime<Utc>,
    },
    /// A certificate on the chain is not valid yet.
    #[error("certificate `{subject}` is not valid before {not_before}")]
    CertificateNotYetValid {
        /// The certificate.
        subject: String,
        /// Its notBefore.
        not_before: DateTime<Utc>,
    },
    /// An issuer on the chain is not a CA (basicConstraints `CA:TRUE`).
    #[error(
        "certificate `{subject}` issues other certificates but is not a CA (basicConstraints CA:TRUE is required)"
    )]
    NotCa {
        /// The certificate.
        subject: String,
    },
    /// An issuer's pathLenConstraint is exceeded.
    #[error("certificate `{subject}` allows at most {limit} intermediate CA certificates below it")]
    PathLength {
        /// The certificate.
        subject: String,
        /// Its pathLenConstraint.
        limit: u32,
    },
    /// A certificate's keyUsage does not allow its role on the chain.
    #[error("certificate `{subject}` has a keyUsage without {needed}")]
    KeyUsage {
        /// The certificate.
        subject: String,
        /// The usage it lacks.
        needed: &'static str,
    },
    /// A certificate uses an algorithm or extension this crate does not handle.
    #[error("certificate `{subject}` is not supported: {reason}")]
    UnsupportedCertificate {
        /// The certificate.
        subject: String,
        /// What is not supported.
        reason: String,
    },
    /// The chain is longer than [`crate::x509::MAX_CHAIN_CERTIFICATES`] before reaching a trusted certificate.
    #[error("certificate chain is longer than {limit} certificates")]
    ChainTooLong {
        /// The limit.
        limit: usize,
    },
    /// The signature is not the author's over this text: the manifest or the
    /// signature was altered, or another key signed it.
    #[error(
        "the signature does not match: the manifest or the signature was altered, the signature algorithm is not \
         the one used to sign, or another key signed it"
    )]
    BadSignature,
    /// The signature is not even well-formed for the author's key type.
    #[error("the signature is malformed: {reason}")]
    MalformedSignature {
        /// What is wrong with it.
        reason: String,
    },
    /// The manifest itself does not read (after its signature verified).
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// `expiresAt` has passed.
    #[error("the payload manifest expired at {expires_at}")]
    ManifestExpired {
        /// Its expiresAt.
        expires_at: DateTime<Utc>,
    },
    /// `createdAt` is in the future.
    #[error("the payload manifest was created in the future ({created_at}); check the clocks")]
    ManifestNotYetValid {
        /// Its createdAt.
        created_at: DateTime<Utc>,
    },
}

/// Whose signature verified: the author's certificate chain, leaf first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedSigner {
    /// The chain, leaf first, as verified. `chain[trust_anchor]` and maybe
    /// certificates above it are in the keystore.
    pub chain: Vec<CertificateInfo>,
    /// Index in `chain` of the first keystore certificate.
    pub trust_anchor: usize,
    /// The digest the signature used.
    pub digest: DigestAlgorithm,
}

impl VerifiedSigner {
    /// The author's (leaf) certificate (`None` only for a hand-made, empty chain).
    pub fn leaf(&self) -> Option<&CertificateInfo> {
        self.chain.first()
    }
}

/// A manifest whose signature, chain and validity period all checked out.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedManifest {
    /// The manifest.
    pub manifest: PayloadManifest,
    /// Who signed it.
    pub signer: VerifiedSigner,
}

fn unix_seconds(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_secs()).unwrap_or(i64::MAX),
        Err(before) => i64::try_from(before.duration().as_secs()).map(|s| -s).unwrap_or(i64::MIN),
    }
}

/// Verifies a signature over arbitrary `data` by the certificate's key, and
/// the certificate chain against `keystore` at time `now`.
///
/// * `signature`: raw bytes, as `openssl dgst -sign` writes them (PKCS#1
///   v1.5 for RSA, DER for ECDSA, 64 bytes for Ed25519).
/// * `signature_algorithm`: the digest name, `sha256` and the others of
///   [`DigestAlgorithm`]. Ed25519 signs without a separate digest; the name
///   must still be a known one.
/// * `certificate`: the author's certificate, DER or PEM, optionally followed
///   (PEM) by the intermediates above it. The leaf is the certificate that
///   issued none of the others, so the order does not matter.
///
/// The chain is checked before the signature, so that a certificate problem
/// is reported as such even when the signature is also wrong.
pub fn verify_signature(
    data: &[u8],
    signature: &[u8],
    signature_algorithm: &str,
    certificate: &[u8],
    keystore: &Keystore,
    now: SystemTime,
) -> Result<VerifiedSigner, VerifyError> {
    let digest = DigestAlgorithm::from_name(signature_algorithm)?;
    if signature.is_empty() || signature.len() > MAX_SIGNATURE_BYTES {
        return Err(VerifyError::MalformedSignature {
            reason: format!("{} bytes (expected 1 to {MAX_SIGNATURE_BYTES})", signature.len()),
        });
    }
    let certs = match x509::split_certificates(certificate) {
        Err(CertificateError::Empty) => return Err(VerifyError::NoCertificate),
        other => x509::leaf_first(other?),
    };
    if keystore.is_empty() {
        return Err(VerifyError::EmptyKeystore);
    }
    let (leaf, extra) = certs.split_first().ok_or(VerifyError::NoCertificate)?;
    let chain = x509::build_chain(leaf, extra, keystore, unix_seconds(now))?;
    x509::leaf_key(leaf)?.verify(digest, data, signature).map_err(x509::signature_failure)?;
    let trust_anchor = chain.iter().position(|l| l.in_keystore).unwrap_or(0);
    let chain = chain.iter().map(|link| CertificateInfo::from_der(&link.der)).collect::<Result<Vec<_>, _>>()?;
    Ok(VerifiedSigner { chain, trust_anchor, digest })
}

/// Verifies a signed payload manifest as a provider receives it.
///
/// The signature must be over `manifest_base64` exactly as given (the bytes
/// of the text, whitespace included); the chain must lead to a keystore
/// certificate, every certificate valid at `now`; then the manifest must
/// read, with `expiresAt` after `now` and `createdAt` no later than `now`
/// plus [`CREATED_AT_TOLERANCE`] (yagna checks neither).
pub fn verify(
    manifest_base64: &str,
    signature: &[u8],
    signature_algorithm: &str,
    certificate: &[u8],
    keystore: &Keystore,
    now: SystemTime,
) -> Result<VerifiedManifest, VerifyError> {
    if manifest_base64.len() > MAX_MANIFEST_BASE64_BYTES {
        return Err(ManifestError::TooLarge { size: manifest_base64.len(), limit: MAX_MANIFEST_BASE64_BYTES }.into());
    }
    let signer =
        verify_signature(manifest_base64.as_bytes(), signature, signature_algorithm, certificate, keystore, now)?;
    let manifest = decode_manifest(manifest_base64)?;
    check_validity_period(&manifest, now)?;
    Ok(VerifiedManifest { manifest, signer })
}

/// `expiresAt` must be after `now`, `createdAt` not after `now` (plus
/// [`CREATED_AT_TOLERANCE`]).
pub fn check_validity_period(manifest: &PayloadManifest, now: SystemTime) -> Result<(), VerifyError> {
    let now = unix_seconds(now);
    if manifest.expires_at.timestamp() <= now {
        return Err(VerifyError::ManifestExpired { expires_at: manifest.expires_at });
    }
    let tolerance = CREATED_AT_TOLERANCE.as_secs() as i64;
    if manifest.created_at.timestamp() > now.saturating_add(tolerance) {
        return Err(VerifyError::ManifestNotYetValid { created_at: manifest.created_at });
    }
    Ok(())
}

/// Decodes a signature sent as base64 text (Golem sends
/// `golem.srv.comp.payload.sig` that way); surrounding whitespace is ignored.
pub fn decode_signature_base64(text: &str) -> Result<Vec<u8>, VerifyError> {
    let text = text.trim_matches(|c: char| c.is_ascii_whitespace());
    if text.len() > MAX_SIGNATURE_BYTES * 2 {
        return Err(VerifyError::MalformedSignature { reason: "base64 signature too long".into() });
    }
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| VerifyError::MalformedSignature { reason: format!("not valid base64: {e}") })
}
