//! NVIDIA Hopper GPU attestation reports, verified locally against the pinned
//! NVIDIA device identity root.
//!
//! A Hopper GPU in confidential-computing mode answers an SPDM 1.1
//! GET_MEASUREMENTS request (DMTF DSP0274 1.1.1) with its measurements,
//! signed by a key its firmware holds; the driver returns the request and
//! the response together as the attestation report (libspdm's "standard
//! all-measurements report"), and the key's certificate chain as PEM. This module follows NVIDIA's local GPU
//! verifier (nvtrust) and Confidential Containers Trustee's local NVIDIA
//! verifier; the parsing and the checks are written here, on RustCrypto's
//! `p384` and `x509-cert`, because no crate does them.
//!
//! **What it trusts.** Only the NVIDIA device identity root compiled in
//! ([`NVIDIA_DEVICE_ROOT_PEM`]). The report, the chain and everything in them
//! come from the provider and are checked.
//!
//! **What it checks**, each refusal a [`GpuError`] variant naming the check:
//! 1. the report's size and structure: a GET_MEASUREMENTS request that asks
//!    for a signature, then a MEASUREMENTS response whose measurement record
//!    (DMTF blocks), nonce, opaque data and 96-byte signature fill it exactly;
//! 2. the chain: leaf first, ending at the pinned root, each certificate
//!    issued and signed (ECDSA P-384/SHA-384) by the next, each a CA where it
//!    issues, no unknown critical extension, all valid at `now`; the leaf is
//!    the attestation signing certificate, carrying the FWID (TCG DICE
//!    TcbInfo, 2.23.133.5.4.1), and where the report's opaque data names a
//!    FWID it is the leaf's;
//! 3. the signature: ECDSA P-384 over SHA-384 of the request and the response
//!    up to the signature, by the leaf's key;
//! 4. the nonce: the request's nonce is the caller's;
//! 5. the policy: every measurement it lists is present and equal.
//!
//! **What it leaves to callers.** Deriving the 32-byte nonce (for sealpod,
//! from the publisher's nonce and the provider key, as the CPU evidence's
//! report data is) and keeping it fresh; the CPU evidence the GPU sits
//! behind. The SPDM nonce is 32 bytes and nothing longer fits: Confidential
//! Containers' attester sends the first 32 bytes of its 48-byte report data
//! (a SHA-384 digest) and Trustee truncates the same way, so the other 16
//! bytes are in no evidence. A caller binding a longer value should hash it
//! down to 32 bytes rather than truncate it. NVIDIA's online checks are out of scope: no RIM (reference
//! integrity manifest) is fetched, so reference values come from the
//! caller's [`GpuPolicy`], and no OCSP or CRL is consulted, so a revoked
//! certificate goes unnoticed. Only Hopper's format is handled (SPDM 1.1, P-384,
//! FWID in 2.23.133.5.4.1); Blackwell and NVSwitch evidence are not.

mod chain;
mod error;
mod spdm;

use std::collections::BTreeMap;
use std::time::SystemTime;

use p384::ecdsa::signature::Verifier;
use serde::Serialize;

pub use chain::{
    parse_cert_chain, ChainCertificate, GpuSigner, FWID_LEN, MAX_CHAIN_CERTS, MAX_CHAIN_LEN, NVIDIA_DEVICE_ROOT_PEM,
};
pub use error::GpuError;
pub use spdm::{parse_report, GpuReport, OpaqueData, REQUEST_LEN, SIGNATURE_LEN, SPDM_NONCE_LEN, SPDM_VERSION_1_1};

/// Largest report accepted (a Hopper report is about 4 KiB).
pub const MAX_REPORT_LEN: usize = 64 * 1024;

/// Reference values a GPU's measurements must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GpuPolicy {
    /// Expected measurement values by index; indices not listed are not
    /// checked, and an empty map checks none.
    pub measurements: BTreeMap<u8, Vec<u8>>,
}

/// What a verified GPU report says, for the publisher to see (`--json`
/// prints it with bytes as hex).
#[derive(Debug, Clone, Serialize)]
pub struct GpuClaims {
    /// The SPDM version of the exchange (0x11: 1.1).
    pub spdm_version: u8,
    /// The FWID the signing certificate certifies: a digest of the firmware
    /// that holds the signing key.
    #[serde(serialize_with = "hex_bytes")]
    pub fwid: Vec<u8>,
    /// Every measurement, by index.
    #[serde(serialize_with = "hex_map")]
    pub measurements: BTreeMap<u8, Vec<u8>>,
    /// The driver version from the opaque data.
    pub driver_version: Option<String>,
    /// The VBIOS version from the opaque data.
    pub vbios_version: Option<String>,
    /// Every opaque data field, by NVIDIA's names.
    pub opaque: BTreeMap<String, String>,
    /// The GPU's own nonce in the response.
    #[serde(serialize_with = "hex_bytes")]
    pub responder_nonce: Vec<u8>,
    /// The signing certificate's subject.
    pub signer: String,
}

fn hex_bytes<S: serde::Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex::encode(bytes))
}

fn hex_map<S: serde::Serializer>(map: &BTreeMap<u8, Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
    s.collect_map(map.iter().map(|(k, v)| (k, hex::encode(v))))
}

/// Verifies an NVIDIA Hopper attestation report (the SPDM request and
/// response as the driver returns them) with its certificate chain (PEM or
/// concatenated DER, leaf first) against the pinned root, the expected
/// nonce, the verification time and the policy.
pub fn verify_gpu_report(
    report: &[u8],
    cert_chain: &[u8],
    nonce: &[u8; SPDM_NONCE_LEN],
    now: SystemTime,
    policy: &GpuPolicy,
) -> Result<GpuClaims, GpuError> {
    // Malformed reports are refused before any signature work.
    let parsed = parse_report(report)?;
    let signer = verify_gpu_chain(cert_chain, now)?;
    signer.check(report, parsed, nonce, policy)
}

/// Verifies a GPU's certificate chain (PEM or concatenated DER, leaf first)
/// up to the pinned root at `now`, for [`GpuSigner::verify_report`]: a
/// GPU's chain stays the same from one report to the next.
pub fn verify_gpu_chain(cert_chain: &[u8], now: SystemTime) -> Result<GpuSigner, GpuError> {
    let chain = parse_cert_chain(cert_chain)?;
    chain::verify_chain(&chain, crate::unix_seconds(now))
}

impl GpuSigner {
    /// Verifies a report this GPU signed: its structure, the FWID, the
    /// signature, the nonce and the policy (checks 1 and 3 to 5 of the
    /// module documentation; the chain was check 2).
    pub fn verify_report(
        &self,
        report: &[u8],
        nonce: &[u8; SPDM_NONCE_LEN],
        policy: &GpuPolicy,
    ) -> Result<GpuClaims, GpuError> {
        self.check(report, parse_report(report)?, nonce, policy)
    }

    fn check(
        &self,
        report: &[u8],
        parsed: GpuReport,
        nonce: &[u8; SPDM_NONCE_LEN],
        policy: &GpuPolicy,
    ) -> Result<GpuClaims, GpuError> {
        if let Some(reported) = parsed.opaque.fwid() {
            if reported != self.fwid {
                return Err(GpuError::FwidMismatch {
                    report: hex::encode(reported),
                    certificate: hex::encode(self.fwid),
                });
            }
        }

        let signature = p384::ecdsa::Signature::from_slice(&parsed.signature)
            .map_err(|e| GpuError::Signature(format!("not a valid P-384 signature: {e}")))?;
        // parse_report measured signed_len inside this report.
        let signed = report.get(..parsed.signed_len).unwrap_or_default();
        self.key
            .verify(signed, &signature)
            .map_err(|_| GpuError::Signature(format!("{} did not sign this report", self.subject)))?;

        if parsed.nonce != *nonce {
            return Err(GpuError::Nonce { expected: hex::encode(nonce), found: hex::encode(parsed.nonce) });
        }

        for (index, expected) in &policy.measurements {
            let Some(found) = parsed.measurements.get(index) else {
                let carried: Vec<String> = parsed.measurements.keys().map(u8::to_string).collect();
                return Err(GpuError::MeasurementMissing { index: *index, carried: carried.join(", ") });
            };
            if found != expected {
                return Err(GpuError::MeasurementMismatch {
                    index: *index,
                    found: hex::encode(found),
                    expected: hex::encode(expected),
                });
            }
        }

        Ok(GpuClaims {
            spdm_version: parsed.spdm_version,
            fwid: self.fwid.to_vec(),
            driver_version: parsed.opaque.driver_version(),
            vbios_version: parsed.opaque.vbios_version(),
            opaque: parsed.opaque.named(),
            measurements: parsed.measurements,
            responder_nonce: parsed.responder_nonce.to_vec(),
            signer: self.subject.clone(),
        })
    }
}
