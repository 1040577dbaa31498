//! X.509 certificates: reading DER, PEM and PEM chains, and building and
//! checking the chain from an app author's certificate to a certificate the
//! provider trusts. Parsing is `x509-parser`'s; signatures are checked with
//! RustCrypto's signature primitives over the raw `tbsCertificate` bytes.
//!
//! The checks follow RFC 5280 §6 where it matters for code signing, and no
//! further: signatures, validity periods, basicConstraints `CA:TRUE` and
//! pathLenConstraint on every issuer, keyCertSign on issuers and
//! digitalSignature (or nonRepudiation) on the leaf when keyUsage is present,
//! and refusal of critical extensions that are not understood and of name
//! constraints. Revocation (CRLs, OCSP), policy processing and extended key
//! usage are not checked.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sha2::Digest as _;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::ParsedExtension;
use x509_parser::prelude::FromDer as _;

use crate::crypto::{certificate_signature_scheme, PublicKey, SignatureFailure};
use crate::keystore::Keystore;
use crate::verify::VerifyError;

/// The largest certificate input accepted (one DER or a PEM chain), in bytes.
pub const MAX_CERTIFICATE_INPUT_BYTES: usize = 256 * 1024;

/// The most certificates accepted in one input, and on one chain.
pub const MAX_CHAIN_CERTIFICATES: usize = 8;

/// Certificate input that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertificateError {
    /// Nothing, or PEM without a `CERTIFICATE` block.
    #[error("no certificate found (expected DER, or PEM with a `BEGIN CERTIFICATE` block)")]
    Empty,
    /// Over [`MAX_CERTIFICATE_INPUT_BYTES`].
    #[error("certificate input is {size} bytes, more than the limit of {limit}")]
    TooLarge {
        /// The size seen.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// Over [`MAX_CHAIN_CERTIFICATES`].
    #[error("more than {limit} certificates in one input")]
    TooMany {
        /// The limit.
        limit: usize,
    },
    /// Text that looks like PEM but does not parse.
    #[error("malformed PEM: {0}")]
    Pem(String),
    /// A block that is not a DER X.509 certificate.
    #[error("certificate #{index} (counting from 0, leaf first) is not a valid X.509 certificate: {message}")]
    Der {
        /// Position in the input.
        index: usize,
        /// What the parser said.
        message: String,
    },
}

/// What a certificate is, for listings and for a verified chain.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct CertificateInfo {
    /// Hex SHA-512 of the DER encoding (the id Golem's keystore uses too).
    pub id: String,
    /// Subject distinguished name (`C=PL, O=Foo Co, CN=Foo Co`).
    pub subject: String,
    /// Issuer distinguished name.
    pub issuer: String,
    /// Start of the validity period.
    pub not_before: DateTime<Utc>,
    /// End of the validity period.
    pub not_after: DateTime<Utc>,
    /// Whether basicConstraints says `CA:TRUE`.
    pub is_ca: bool,
}

impl CertificateInfo {
    /// Reads one DER certificate.
    pub fn from_der(der: &[u8]) -> Result<CertificateInfo, CertificateError> {
        let cert = parse_der(der).map_err(|message| CertificateError::Der { index: 0, message })?;
        Ok(CertificateInfo::of(&cert, der))
    }

    pub(crate) fn of(cert: &X509Certificate<'_>, der: &[u8]) -> CertificateInfo {
        CertificateInfo {
            id: certificate_id(der),
            subject: cert.subject().to_string(),
            issuer: cert.issuer().to_string(),
            not_before: time(cert.validity().not_before.timestamp()),
            not_after: time(cert.validity().not_after.timestamp()),
            is_ca: is_ca(cert),
        }
    }

    /// The first 16 hex digits of the id, enough to tell certificates apart in a listing.
    pub fn short_id(&self) -> &str {
        self.id.get(..16).unwrap_or(&self.id)
    }
}

fn time(unix: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(unix, 0).unwrap_or(if unix < 0 {
        DateTime::<Utc>::MIN_UTC
    } else {
        DateTime::<Utc>::MAX_UTC
    })
}

fn is_ca(cert: &X509Certificate<'_>) -> bool {
    matches!(cert.basic_constraints(), Ok(Some(bc)) if bc.value.ca)
}

/// Hex SHA-512 of a certificate's DER encoding.
pub fn certificate_id(der: &[u8]) -> String {
    hex::encode(sha2::Sha512::digest(der))
}

/// Parses one DER certificate, refusing trailing bytes.
pub(crate) fn parse_der(der: &[u8]) -> Result<X509Certificate<'_>, String> {
    match X509Certificate::from_der(der) {
        Ok((rest, _)) if !rest.is_empty() => Err(format!("{} bytes after the certificate", rest.len())),
        Ok((_, cert)) => Ok(cert),
        Err(e) => Err(e.to_string()),
    }
}

/// Splits certificate input into DER certificates, in input order: one DER
/// certificate, or PEM with one or more `CERTIFICATE` blocks (other blocks,
/// such as keys, are skipped). Every certificate must parse.
pub fn split_certificates(input: &[u8]) -> Result<Vec<Vec<u8>>, CertificateError> {
    if input.len() > MAX_CERTIFICATE_INPUT_BYTES {
        return Err(CertificateError::TooLarge { size: input.len(), limit: MAX_CERTIFICATE_INPUT_BYTES });
    }
    split_certificates_limited(input, MAX_CHAIN_CERTIFICATES)
}

/// [`split_certificates`] with another limit on the number of certificates.
///
/// Base64 text of any of the accepted forms is read too: Golem's procedure
/// hands the author's certificate around as `base64 author.crt.pem
/// --wrap=0`, and DER certificates never consist of base64 characters only.
pub(crate) fn split_certificates_limited(input: &[u8], limit: usize) -> Result<Vec<Vec<u8>>, CertificateError> {
    match base64_text(input) {
        Some(decoded) => split_plain_certificates(&decoded, limit),
        None => split_plain_certificates(input, limit),
    }
}

/// The bytes of `input` if it is base64 text (standard alphabet, padded or
/// not, line breaks allowed), not PEM, DER or empty.
fn base64_text(input: &[u8]) -> Option<Vec<u8>> {
    use base64::Engine as _;
    let text: Vec<u8> = input.iter().copied().filter(|b| !b.is_ascii_whitespace()).collect();
    let base64_alphabet = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=');
    if text.is_empty() || !text.iter().all(base64_alphabet) {
        return None;
    }
    let unpadded: &[u8] = text.strip_suffix(b"==").or_else(|| text.strip_suffix(b"=")).unwrap_or(&text);
    base64::engine::general_purpose::STANDARD_NO_PAD.decode(unpadded).ok()
}

fn split_plain_certificates(input: &[u8], limit: usize) -> Result<Vec<Vec<u8>>, CertificateError> {
    let looks_like_pem = input.windows(11).any(|w| w == b"-----BEGIN ");
    let ders: Vec<Vec<u8>> = if looks_like_pem {
        let blocks = pem::parse_many(input).map_err(|e| CertificateError::Pem(e.to_string()))?;
        blocks
            .into_iter()
            .filter(|b| matches!(b.tag(), "CERTIFICATE" | "X509 CERTIFICATE"))
            .map(pem::Pem::into_contents)
            .collect()
    } else if input.iter().all(u8::is_ascii_whitespace) {
        Vec::new()
    } else {
        vec![input.to_vec()]
    };
    if ders.is_empty() {
        return Err(CertificateError::Empty);
    }
    if ders.len() > limit {
        return Err(CertificateError::TooMany { limit });
    }
    for (index, der) in ders.iter().enumerate() {
        parse_der(der).map_err(|message| CertificateError::Der { index, message })?;
    }
    Ok(ders)
}

/// Moves the leaf of a sent chain to the front: the one certificate that
/// issued none of the others. Chains come leaf first by convention, but
/// yagna's own test files have both orders; when no single leaf stands out
/// (unrelated certificates), the order is left as sent.
pub(crate) fn leaf_first(mut certs: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    let names: Vec<Option<(Vec<u8>, Vec<u8>)>> = certs
        .iter()
        .map(|der| parse_der(der).ok().map(|c| (c.subject().as_raw().to_vec(), c.issuer().as_raw().to_vec())))
        .collect();
    let issued_none = |i: usize| {
        let Some((subject, _)) = &names[i] else { return false };
        !names.iter().enumerate().any(|(j, other)| {
            j != i
                && other
                    .as_ref()
                    .is_some_and(|(other_subject, other_issuer)| other_issuer == subject && other_subject != subject)
        })
    };
    let leaves: Vec<usize> = (0..certs.len()).filter(|&i| issued_none(i)).collect();
    if let [leaf] = leaves.as_slice() {
        let leaf = certs.remove(*leaf);
        certs.insert(0, leaf);
    }
    certs
}

/// A certificate on a verified chain.
pub(crate) struct Link {
    pub der: Vec<u8>,
    pub in_keystore: bool,
}

/// Builds the chain from `leaf` up, with issuers taken from the keystore and
/// from `extra` (the rest of the chain the author sent), and checks it.
///
/// The chain is trusted once it reaches any keystore certificate (a root or
/// an intermediate). Every certificate up to that one must pass every check.
/// Issuers above it are appended while they verify, so that rules can name a
/// root as well as an intermediate; the first one that does not pass ends
/// the chain without failing it.
pub(crate) fn build_chain(
    leaf: &[u8],
    extra: &[Vec<u8>],
    keystore: &Keystore,
    now: i64,
) -> Result<Vec<Link>, VerifyError> {
    let leaf_cert = parse_der(leaf).map_err(|message| CertificateError::Der { index: 0, message })?;
    check_common(&leaf_cert, now)?;
    check_leaf_key_usage(&leaf_cert)?;
    let mut chain = vec![Link { der: leaf.to_vec(), in_keystore: keystore.contains(&certificate_id(leaf)) }];
    let mut anchored = chain[0].in_keystore;
    while let Some(current_der) = chain.last().map(|l| l.der.clone()) {
        let current = parse_der(&current_der).map_err(|message| CertificateError::Der { index: 0, message })?;
        if current.subject().as_raw() == current.issuer().as_raw() {
            // A trusted root's self-signature proves nothing (RFC 5280 §6.1
            // does not check it); an untrusted one ends the chain untrusted.
            if anchored {
                break;
            }
            if is_self_signed(&current) {
                return Err(VerifyError::UntrustedRoot { subject: current.subject().to_string() });
            }
        }
        if chain.len() >= MAX_CHAIN_CERTIFICATES {
            if anchored {
                break;
            }
            return Err(VerifyError::ChainTooLong { limit: MAX_CHAIN_CERTIFICATES });
        }
        let on_chain: Vec<String> = chain.iter().map(|l| certificate_id(&l.der)).collect();
        let candidates = keystore
            .issuers_of(current.issuer().as_raw())
            .map(|der| (der, true))
            .chain(extra.iter().map(|der| (der.as_slice(), false)))
            .filter(|(der, _)| !on_chain.contains(&certificate_id(der)));
        let mut found = None;
        let mut failure = None;
        for (der, in_keystore) in candidates {
            let Ok(candidate) = parse_der(der) else { continue };
            if candidate.subject().as_raw() != current.issuer().as_raw() {
                continue;
            }
            match verify_certificate_signature(&current, &candidate) {
                Ok(()) => {
                    found = Some((der.to_vec(), in_keystore));
                    break;
                }
                Err(e) => failure = Some(e),
            }
        }
        let Some((issuer_der, in_keystore)) = found else {
            if anchored {
                break;
            }
            if let Some(failure) = failure {
                return Err(failure);
            }
            return Err(VerifyError::UntrustedIssuer {
                subject: current.subject().to_string(),
                issuer: current.issuer().to_string(),
            });
        };
        let issuer = parse_der(&issuer_der).map_err(|message| CertificateError::Der { index: 0, message })?;
        let checked = check_common(&issuer, now).and_then(|()| check_issuer(&issuer, chain.len() - 1));
        match checked {
            Ok(()) => {}
            Err(_) if anchored => break,
            Err(e) => return Err(e),
        }
        anchored |= in_keystore;
        chain.push(Link { der: issuer_der, in_keystore });
    }
    Ok(chain)
}

/// Verifies `child`'s signature with `issuer`'s key.
fn verify_certificate_signature(child: &X509Certificate<'_>, issuer: &X509Certificate<'_>) -> Result<(), VerifyError> {
    let subject = || child.subject().to_string();
    if child.signature_algorithm.algorithm != child.tbs_certificate.signature.algorithm {
        return Err(VerifyError::UnsupportedCertificate {
            subject: subject(),
            reason: "signatureAlgorithm differs from the one inside tbsCertificate".into(),
        });
    }
    let (kind, digest) = certificate_signature_scheme(&child.signature_algorithm)
        .map_err(|reason| VerifyError::UnsupportedCertificate { subject: subject(), reason })?;
    let key = PublicKey::from_spki(issuer.public_key())
        .map_err(|reason| VerifyError::UnsupportedCertificate { subject: issuer.subject().to_string(), reason })?;
    if key.kind() != kind || child.signature_value.unused_bits != 0 {
        return Err(VerifyError::CertificateSignature { subject: subject(), issuer: issuer.subject().to_string() });
    }
    key.verify(digest, child.tbs_certificate.as_ref(), child.signature_value.data.as_ref())
        .map_err(|_| VerifyError::CertificateSignature { subject: subject(), issuer: issuer.subject().to_string() })
}

fn is_self_signed(cert: &X509Certificate<'_>) -> bool {
    cert.subject().as_raw() == cert.issuer().as_raw() && verify_certificate_signature(cert, cert).is_ok()
}

/// Validity period and extensions, for every certificate on the chain.
fn check_common(cert: &X509Certificate<'_>, now: i64) -> Result<(), VerifyError> {
    let validity = cert.validity();
    if now < validity.not_before.timestamp() {
        return Err(VerifyError::CertificateNotYetValid {
            subject: cert.subject().to_string(),
            not_before: time(validity.not_before.timestamp()),
        });
    }
    if now > validity.not_after.timestamp() {
        return Err(VerifyError::CertificateExpired {
            subject: cert.subject().to_string(),
            not_after: time(validity.not_after.timestamp()),
        });
    }
    for ext in cert.extensions() {
        let understood = match ext.parsed_extension() {
            ParsedExtension::NameConstraints(_) => {
                return Err(VerifyError::UnsupportedCertificate {
                    subject: cert.subject().to_string(),
                    reason: "name constraints are not supported".into(),
                });
            }
            ParsedExtension::BasicConstraints(_)
            | ParsedExtension::KeyUsage(_)
            | ParsedExtension::ExtendedKeyUsage(_)
            | ParsedExtension::SubjectAlternativeName(_)
            | ParsedExtension::SubjectKeyIdentifier(_)
            | ParsedExtension::AuthorityKeyIdentifier(_)
            | ParsedExtension::CertificatePolicies(_) => true,
            _ => false,
        };
        if ext.critical && !understood {
            return Err(VerifyError::UnsupportedCertificate {
                subject: cert.subject().to_string(),
                reason: format!("unsupported critical extension {}", ext.oid.to_id_string()),
            });
        }
    }
    Ok(())
}

fn check_leaf_key_usage(cert: &X509Certificate<'_>) -> Result<(), VerifyError> {
    match cert.key_usage() {
        Ok(Some(ku)) if !(ku.value.digital_signature() || ku.value.non_repudiation()) => {
            Err(VerifyError::KeyUsage { subject: cert.subject().to_string(), needed: "digitalSignature" })
        }
        Ok(_) => Ok(()),
        Err(e) => Err(VerifyError::UnsupportedCertificate {
            subject: cert.subject().to_string(),
            reason: format!("malformed keyUsage: {e}"),
        }),
    }
}

/// What an issuer must be: a CA allowed to sign certificates, with room for
/// the `intermediates_below` CA certificates between it and the leaf.
fn check_issuer(cert: &X509Certificate<'_>, intermediates_below: usize) -> Result<(), VerifyError> {
    let subject = || cert.subject().to_string();
    match cert.basic_constraints() {
        Ok(Some(bc)) if bc.value.ca => {
            if let Some(limit) = bc.value.path_len_constraint {
                if intermediates_below > limit as usize {
                    return Err(VerifyError::PathLength { subject: subject(), limit });
                }
            }
        }
        Ok(_) => return Err(VerifyError::NotCa { subject: subject() }),
        Err(e) => {
            return Err(VerifyError::UnsupportedCertificate {
                subject: subject(),
                reason: format!("malformed basicConstraints: {e}"),
            });
        }
    }
    match cert.key_usage() {
        Ok(Some(ku)) if !ku.value.key_cert_sign() => {
            Err(VerifyError::KeyUsage { subject: subject(), needed: "keyCertSign" })
        }
        Ok(_) => Ok(()),
        Err(e) => {
            Err(VerifyError::UnsupportedCertificate { subject: subject(), reason: format!("malformed keyUsage: {e}") })
        }
    }
}

/// The leaf's public key, for the manifest signature.
pub(crate) fn leaf_key(leaf: &[u8]) -> Result<PublicKey, VerifyError> {
    let cert = parse_der(leaf).map_err(|message| CertificateError::Der { index: 0, message })?;
    PublicKey::from_spki(cert.public_key())
        .map_err(|reason| VerifyError::UnsupportedCertificate { subject: cert.subject().to_string(), reason })
}

pub(crate) fn signature_failure(failure: SignatureFailure) -> VerifyError {
    match failure {
        SignatureFailure::Mismatch => VerifyError::BadSignature,
        SignatureFailure::Malformed(reason) => VerifyError::MalformedSignature { reason },
    }
}
