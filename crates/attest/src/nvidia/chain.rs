//! The GPU's certificate chain, from the attestation signing certificate
//! (leaf, first) up to the NVIDIA device identity root (last), checked
//! against the pinned root with ECDSA P-384/SHA-384 signatures over the raw
//! to-be-signed bytes, validity at the verification time, CA constraints and
//! critical extensions (RFC 5280 §6.1, without policies, name constraints
//! or revocation).

use std::sync::OnceLock;

use der::asn1::{ObjectIdentifier, UintRef};
use der::{Decode, Reader, SliceReader};
use p384::ecdsa::signature::Verifier;
use p384::ecdsa::{Signature, VerifyingKey};
use x509_cert::ext::pkix::{BasicConstraints, KeyUsage};
use x509_cert::Certificate;

use super::GpuError;

/// The NVIDIA device identity root ("NVIDIA Device Identity CA"), PEM, as
/// NVIDIA's nvtrust verifier and Confidential Containers Trustee pin it.
pub const NVIDIA_DEVICE_ROOT_PEM: &str = include_str!("../../roots/nvidia_device_root.pem");

/// Most certificates accepted in a chain (Hopper sends five).
pub const MAX_CHAIN_CERTS: usize = 8;
/// Largest chain accepted, PEM or DER (Hopper's is under 5 KiB of PEM).
pub const MAX_CHAIN_LEN: usize = 64 * 1024;

const ECDSA_WITH_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.3");
const EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const SECP384R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
const BASIC_CONSTRAINTS: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.19");
const KEY_USAGE: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.15");
/// TCG DICE TcbInfo, in which NVIDIA's signing certificates carry the FWID.
const TCG_DICE_TCB_INFO: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.23.133.5.4.1");
/// Length of a FWID (a SHA-384 digest).
pub const FWID_LEN: usize = 48;

/// One certificate with the DER it arrived as, whose to-be-signed part is
/// what its issuer signed.
#[derive(Debug, Clone)]
pub struct ChainCertificate {
    /// The certificate's DER.
    pub der: Vec<u8>,
    /// The parsed certificate.
    pub cert: Certificate,
}

impl ChainCertificate {
    fn subject(&self) -> String {
        self.cert.tbs_certificate.subject.to_string()
    }
}

/// A GPU's attestation signing key, its certificate chain verified up to
/// the pinned root: what [`verify_gpu_chain`](super::verify_gpu_chain)
/// returns, to verify that GPU's reports with.
#[derive(Debug, Clone)]
pub struct GpuSigner {
    pub(super) key: VerifyingKey,
    pub(super) fwid: [u8; FWID_LEN],
    pub(super) subject: String,
}

impl GpuSigner {
    /// The FWID the signing certificate certifies.
    pub fn fwid(&self) -> &[u8; FWID_LEN] {
        &self.fwid
    }

    /// The signing certificate's subject.
    pub fn subject(&self) -> &str {
        &self.subject
    }
}

fn pinned_root_der() -> &'static [u8] {
    static ROOT: OnceLock<Vec<u8>> = OnceLock::new();
    ROOT.get_or_init(|| pem::parse(NVIDIA_DEVICE_ROOT_PEM).expect("pinned NVIDIA root is PEM").into_contents())
}

/// Parses a chain given as PEM text (what the driver returns and the
/// vectors hold) or as concatenated DER certificates, leaf first.
pub fn parse_cert_chain(bytes: &[u8]) -> Result<Vec<ChainCertificate>, GpuError> {
    if bytes.len() > MAX_CHAIN_LEN {
        return Err(GpuError::TooLarge { what: "certificate chain (bytes)", size: bytes.len(), limit: MAX_CHAIN_LEN });
    }
    let ders: Vec<Vec<u8>> = if bytes.trim_ascii_start().starts_with(b"-----BEGIN") {
        let blocks = pem::parse_many(bytes).map_err(|e| GpuError::malformed("certificate chain PEM", e))?;
        // parse_many passes over a block that never ends; a truncated chain
        // should say so rather than come out a certificate short.
        let begins = bytes.windows(10).filter(|w| *w == b"-----BEGIN").count();
        if begins != blocks.len() {
            return Err(GpuError::malformed(
                "certificate chain PEM",
                format!("{begins} BEGIN lines but {} complete blocks", blocks.len()),
            ));
        }
        if let Some(other) = blocks.iter().find(|p| p.tag() != "CERTIFICATE") {
            return Err(GpuError::malformed("certificate chain PEM", format!("a {} block", other.tag())));
        }
        blocks.into_iter().map(pem::Pem::into_contents).collect()
    } else {
        split_der(bytes)?
    };
    if ders.len() > MAX_CHAIN_CERTS {
        return Err(GpuError::TooLarge {
            what: "certificate chain (certificates)",
            size: ders.len(),
            limit: MAX_CHAIN_CERTS,
        });
    }
    ders.into_iter()
        .map(|der| {
            let cert = Certificate::from_der(&der).map_err(|e| GpuError::malformed("certificate", e))?;
            Ok(ChainCertificate { der, cert })
        })
        .collect()
}

/// Splits concatenated DER into one TLV per certificate.
fn split_der(bytes: &[u8]) -> Result<Vec<Vec<u8>>, GpuError> {
    let malformed = |e: der::Error| GpuError::malformed("certificate chain DER", e);
    let mut reader = SliceReader::new(bytes).map_err(malformed)?;
    let mut out = Vec::new();
    while !reader.is_finished() {
        if out.len() == MAX_CHAIN_CERTS {
            return Err(GpuError::TooLarge {
                what: "certificate chain (certificates)",
                size: out.len() + 1,
                limit: MAX_CHAIN_CERTS,
            });
        }
        out.push(reader.tlv_bytes().map_err(malformed)?.to_vec());
    }
    Ok(out)
}

/// The to-be-signed bytes exactly as they arrived.
fn tbs_bytes(der: &[u8]) -> Result<&[u8], der::Error> {
    let mut reader = SliceReader::new(der)?;
    der::Header::decode(&mut reader)?;
    reader.tlv_bytes()
}

/// The certificate's P-384 public key.
fn p384_key(c: &ChainCertificate) -> Result<VerifyingKey, String> {
    let spki = &c.cert.tbs_certificate.subject_public_key_info;
    let curve = spki.algorithm.parameters.as_ref().and_then(|p| p.decode_as::<ObjectIdentifier>().ok());
    if spki.algorithm.oid != EC_PUBLIC_KEY || curve != Some(SECP384R1) {
        return Err(format!("its key is {} on {curve:?}, not an EC key on P-384", spki.algorithm.oid));
    }
    VerifyingKey::from_sec1_bytes(spki.subject_public_key.raw_bytes()).map_err(|e| format!("its P-384 key: {e}"))
}

/// An ECDSA-Sig-Value (SEQUENCE of two INTEGERs) as a P-384 signature.
fn ecdsa_signature(der: &[u8]) -> Result<Signature, String> {
    let (r, s) = SliceReader::new(der)
        .and_then(|mut reader| {
            let rs = reader.sequence(|seq| Ok((UintRef::decode(seq)?, UintRef::decode(seq)?)))?;
            reader.finish(rs)
        })
        .map_err(|e| format!("signature is not an ECDSA-Sig-Value: {e}"))?;
    let (r, s) = (r.as_bytes(), s.as_bytes());
    if r.len() > 48 || s.len() > 48 {
        return Err("signature scalars longer than P-384's".into());
    }
    let mut raw = [0u8; 96];
    raw[48 - r.len()..48].copy_from_slice(r);
    raw[96 - s.len()..].copy_from_slice(s);
    Signature::from_slice(&raw).map_err(|e| format!("signature is not a valid P-384 signature: {e}"))
}

fn extension<'a>(c: &'a ChainCertificate, oid: &ObjectIdentifier) -> Result<Option<&'a [u8]>, String> {
    let mut found = c.cert.tbs_certificate.extensions.iter().flatten().filter(|e| e.extn_id == *oid);
    let first = found.next().map(|e| e.extn_value.as_bytes());
    if found.next().is_some() {
        return Err(format!("extension {oid} appears twice"));
    }
    Ok(first)
}

/// Checks that `issuer` issued `child`: names, the issuer's CA rights and the
/// signature over the child's raw to-be-signed bytes.
fn check_link(child: &ChainCertificate, issuer: &ChainCertificate) -> Result<(), String> {
    if child.cert.tbs_certificate.issuer != issuer.cert.tbs_certificate.subject {
        return Err(format!("its issuer is {}", child.cert.tbs_certificate.issuer));
    }
    let algorithm = &child.cert.signature_algorithm;
    if algorithm.oid != ECDSA_WITH_SHA384 || child.cert.tbs_certificate.signature != *algorithm {
        return Err(format!("signature algorithm {}, expected ecdsa-with-SHA384", algorithm.oid));
    }
    let key = p384_key(issuer).map_err(|e| format!("the issuer's key: {e}"))?;
    let signature = ecdsa_signature(child.cert.signature.raw_bytes())?;
    let tbs = tbs_bytes(&child.der).map_err(|e| format!("to-be-signed bytes: {e}"))?;
    key.verify(tbs, &signature).map_err(|_| "the signature does not verify".to_owned())
}

/// Whether a certificate may issue others: a CA by basic constraints, with
/// keyCertSign where it states key usage.
fn check_issuer_rights(c: &ChainCertificate) -> Result<(), String> {
    let constraints = extension(c, &BASIC_CONSTRAINTS)?
        .map(BasicConstraints::from_der)
        .transpose()
        .map_err(|e| format!("basic constraints: {e}"))?;
    if !constraints.is_some_and(|b| b.ca) {
        return Err("it issues a certificate but is not a CA (basic constraints)".into());
    }
    let usage = extension(c, &KEY_USAGE)?.map(KeyUsage::from_der).transpose().map_err(|e| format!("key usage: {e}"))?;
    if usage.is_some_and(|u| !u.key_cert_sign()) {
        return Err("it issues a certificate but its key usage lacks keyCertSign".into());
    }
    Ok(())
}

/// RFC 5280 §4.2: a certificate with a critical extension the verifier does
/// not process must be refused.
fn check_critical(c: &ChainCertificate) -> Result<(), String> {
    let known = [BASIC_CONSTRAINTS, KEY_USAGE];
    match c.cert.tbs_certificate.extensions.iter().flatten().find(|e| e.critical && !known.contains(&e.extn_id)) {
        Some(e) => Err(format!("unknown critical extension {}", e.extn_id)),
        None => Ok(()),
    }
}

fn check_validity(c: &ChainCertificate, now: u64) -> Result<(), GpuError> {
    let v = &c.cert.tbs_certificate.validity;
    let not_before = v.not_before.to_unix_duration().as_secs();
    let not_after = v.not_after.to_unix_duration().as_secs();
    if now < not_before || now > not_after {
        return Err(GpuError::CertificateTime {
            subject: c.subject(),
            not_before: crate::rfc3339(not_before),
            not_after: crate::rfc3339(not_after),
            now: crate::rfc3339(now),
        });
    }
    Ok(())
}

/// The FWID in the leaf's TCG DICE TcbInfo extension: NVIDIA's extension
/// ends with the FWID's digest, an OCTET STRING of 48 bytes.
fn fwid(leaf: &ChainCertificate) -> Result<[u8; FWID_LEN], GpuError> {
    let use_error = |reason: String| GpuError::CertificateUse { index: 0, subject: leaf.subject(), reason };
    let value = extension(leaf, &TCG_DICE_TCB_INFO).map_err(use_error)?;
    let value = value.ok_or_else(|| GpuError::NoFwid { subject: leaf.subject() })?;
    let split = value.len().checked_sub(FWID_LEN + 2).ok_or_else(|| {
        GpuError::malformed("signing certificate FWID", format!("TcbInfo extension of {} bytes", value.len()))
    })?;
    let (header, digest) = value[split..].split_at(2);
    if header != [0x04, FWID_LEN as u8] {
        return Err(GpuError::malformed(
            "signing certificate FWID",
            "the TcbInfo extension does not end with a 48-byte digest",
        ));
    }
    let mut out = [0; FWID_LEN];
    out.copy_from_slice(digest);
    Ok(out)
}

/// Verifies a chain, leaf first, up to the pinned root at `now` (Unix
/// seconds), and returns the leaf's key and FWID.
pub(super) fn verify_chain(chain: &[ChainCertificate], now: u64) -> Result<GpuSigner, GpuError> {
    let (Some(leaf), Some(root)) = (chain.first(), chain.last()) else {
        return Err(GpuError::ChainTooShort { found: 0 });
    };
    if chain.len() < 2 {
        return Err(GpuError::ChainTooShort { found: chain.len() });
    }
    if root.der != pinned_root_der() {
        return Err(GpuError::UntrustedRoot { subject: root.subject() });
    }
    for (index, c) in chain.iter().enumerate() {
        let use_error = |reason| GpuError::CertificateUse { index, subject: c.subject(), reason };
        check_critical(c).map_err(use_error)?;
        if index > 0 {
            check_issuer_rights(c).map_err(use_error)?;
        }
        check_validity(c, now)?;
    }
    for (index, pair) in chain.windows(2).enumerate() {
        check_link(&pair[0], &pair[1]).map_err(|reason| GpuError::BrokenLink {
            index,
            subject: pair[0].subject(),
            issuer: pair[1].subject(),
            reason,
        })?;
    }
    let fwid = fwid(leaf)?;
    let leaf_use = |reason| GpuError::CertificateUse { index: 0, subject: leaf.subject(), reason };
    let usage = extension(leaf, &KEY_USAGE)
        .map_err(leaf_use)?
        .map(KeyUsage::from_der)
        .transpose()
        .map_err(|e| leaf_use(format!("key usage: {e}")))?;
    if usage.is_some_and(|u| !u.digital_signature()) {
        return Err(leaf_use("it signs the report but its key usage lacks digitalSignature".into()));
    }
    let key = p384_key(leaf).map_err(leaf_use)?;
    Ok(GpuSigner { key, fwid, subject: leaf.subject() })
}
