//! TEE attestation for sealpod: evidence, its verification, the publisher's
//! policy, and the binding of evidence to the libp2p identity that answers.
//!
//! **What it trusts.** Only roots compiled in: Intel's SGX/TDX root CA (as
//! shipped by `dcap-qvl`) and AMD's ARK, ASK and ASVK certificates for Milan,
//! Genoa and Turin (`sev` ships ARK and ASK; the ASVKs, which sign VLEKs, are
//! pinned here from AMD's KDS as Confidential Containers Trustee pins them),
//! and NVIDIA's device identity root for GPU evidence ([`nvidia`], pinned as
//! NVIDIA's nvtrust and Trustee pin it).
//! A verification time is always passed in explicitly, never read inside.
//!
//! **What it does not trust.** Anything the provider supplies: the quote or
//! report, DCAP collateral, the VCEK/VLEK and any chain that comes with it.
//! Supplied ASK/ARK certificates must be byte-equal to the pinned ones.
//!
//! **The binding.** Evidence is accepted only if its 64-byte report data is
//! [`report_data`]: `SHA-512("apocryph-attest-v1" || provider public key
//! (libp2p protobuf encoding) || nonce)`. The nonce is the publisher's, fresh
//! per request, so evidence for another key, another nonce or an old nonce is
//! refused.
//!
//! **What it leaves to others.** Transport (`sealpod-net`), when to attest and
//! what to send afterwards (`sealpod-publisher`), answering requests
//! (`sealpod-provider`). The DCAP quote format and its collateral checks are
//! `dcap-qvl`'s; SNP report parsing and the ARK→ASK→VEK signatures are
//! `sev`'s. This crate adds what those leave to their callers: the binding,
//! the report signature over the raw bytes, VCEK extension checks, certificate
//! validity, and every policy rule.

pub mod dev;
mod error;
pub mod nvidia;
pub mod policy;
pub mod snp;
pub mod tdx;
pub mod tsm;

use std::fmt;
use std::str::FromStr;
use std::time::SystemTime;

use serde::Serialize;
use sha2::{Digest, Sha512};

pub use error::AttestError;
pub use policy::Policy;

/// The domain separator hashed in front of every binding.
pub const BINDING_DOMAIN: &[u8] = b"apocryph-attest-v1";

/// Length of the publisher's nonce.
pub const NONCE_LEN: usize = 32;

/// Largest quote or report accepted (a TDX v5 quote with its PCK chain is
/// about 8 KiB).
pub const MAX_REPORT: usize = 64 * 1024;

/// Largest single collateral item (DCAP collateral JSON with CRLs is tens of KiB).
pub const MAX_COLLATERAL: usize = 512 * 1024;

/// Most collateral items.
pub const MAX_COLLATERAL_ITEMS: usize = 8;

/// The report data that binds evidence to a provider key and a nonce.
pub fn report_data(provider_public_key: &[u8], nonce: &[u8]) -> [u8; 64] {
    let mut h = Sha512::new();
    h.update(BINDING_DOMAIN);
    h.update(provider_public_key);
    h.update(nonce);
    h.finalize().into()
}

/// Domain separation of the GPU nonce from CPU report data.
pub const GPU_BINDING_DOMAIN: &[u8] = b"apocryph-attest-gpu-v1";

/// The 32-byte SPDM nonce a provider's GPU report must carry: SHA-256 of
/// the domain, the provider's public key (protobuf) and the publisher's nonce,
/// so the report is bound to the same key and request as the CPU's evidence
/// (SPDM nonces are 32 bytes; the CPU's 64-byte report data cannot be reused).
pub fn gpu_nonce(provider_public_key: &[u8], nonce: &[u8]) -> [u8; 32] {
    use sha2::Sha256;
    let mut h = Sha256::new();
    h.update(GPU_BINDING_DOMAIN);
    h.update(provider_public_key);
    h.update(nonce);
    h.finalize().into()
}

/// The kinds of evidence sealpod knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// A signature by the node key: no hardware guarantee at all.
    InsecureDev,
    /// An Intel TDX quote (v4 or v5) with DCAP collateral.
    Tdx,
    /// An AMD SEV-SNP attestation report with its VCEK or VLEK.
    Snp,
    /// An Intel SGX quote (v3) with DCAP collateral.
    Sgx,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::InsecureDev => "insecure-dev",
            Kind::Tdx => "tdx",
            Kind::Snp => "snp",
            Kind::Sgx => "sgx",
        })
    }
}

impl FromStr for Kind {
    type Err = String;
    fn from_str(s: &str) -> Result<Kind, String> {
        match s.to_ascii_lowercase().as_str() {
            "insecure-dev" | "insecure_dev" | "dev" => Ok(Kind::InsecureDev),
            "tdx" => Ok(Kind::Tdx),
            "snp" | "sev-snp" => Ok(Kind::Snp),
            "sgx" => Ok(Kind::Sgx),
            other => Err(format!("unknown TEE kind {other:?}: expected tdx, snp, sgx or insecure-dev")),
        }
    }
}

impl Kind {
    /// The wire enum.
    pub fn to_proto(self) -> sealpod_proto::TeeKind {
        match self {
            Kind::InsecureDev => sealpod_proto::TeeKind::InsecureDev,
            Kind::Tdx => sealpod_proto::TeeKind::Tdx,
            Kind::Snp => sealpod_proto::TeeKind::Snp,
            Kind::Sgx => sealpod_proto::TeeKind::Sgx,
        }
    }

    /// From the wire enum's number.
    pub fn from_proto(value: i32) -> Result<Kind, AttestError> {
        match sealpod_proto::TeeKind::try_from(value) {
            Ok(sealpod_proto::TeeKind::InsecureDev) => Ok(Kind::InsecureDev),
            Ok(sealpod_proto::TeeKind::Tdx) => Ok(Kind::Tdx),
            Ok(sealpod_proto::TeeKind::Snp) => Ok(Kind::Snp),
            Ok(sealpod_proto::TeeKind::Sgx) => Ok(Kind::Sgx),
            _ => Err(AttestError::WrongKind { expected: "a known TEE kind".into(), found: format!("kind {value}") }),
        }
    }
}

/// Evidence as it travels: the raw quote or report and what verifies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evidence {
    /// Which TEE produced it.
    pub kind: Kind,
    /// The quote (TDX, SGX), the attestation report (SNP), or the signed
    /// statement (insecure dev).
    pub report: Vec<u8>,
    /// TDX/SGX: the DCAP collateral JSON. SNP: the VCEK or VLEK, then
    /// optionally the ASK (or ASVK) and the ARK, each DER. Insecure dev: the
    /// node key's signature.
    pub collateral: Vec<Vec<u8>>,
}

impl Evidence {
    /// From the wire form, with the size limits applied before anything is parsed.
    pub fn from_proto(e: &sealpod_proto::Evidence) -> Result<Evidence, AttestError> {
        let kind = Kind::from_proto(e.kind)?;
        let evidence = Evidence { kind, report: e.report.clone(), collateral: e.collateral.clone() };
        evidence.check_sizes()?;
        Ok(evidence)
    }

    /// The wire form.
    pub fn to_proto(&self) -> sealpod_proto::Evidence {
        sealpod_proto::Evidence {
            kind: self.kind.to_proto() as i32,
            report: self.report.clone(),
            collateral: self.collateral.clone(),
        }
    }

    fn check_sizes(&self) -> Result<(), AttestError> {
        if self.report.len() > MAX_REPORT {
            return Err(AttestError::TooLarge { what: "report", size: self.report.len(), limit: MAX_REPORT });
        }
        if self.collateral.len() > MAX_COLLATERAL_ITEMS {
            return Err(AttestError::TooLarge {
                what: "collateral list",
                size: self.collateral.len(),
                limit: MAX_COLLATERAL_ITEMS,
            });
        }
        for c in &self.collateral {
            if c.len() > MAX_COLLATERAL {
                return Err(AttestError::TooLarge { what: "collateral item", size: c.len(), limit: MAX_COLLATERAL });
            }
        }
        Ok(())
    }
}

/// What verified evidence says, for the publisher to see and keep.
#[derive(Debug, Clone, Serialize)]
pub struct Claims {
    /// The TEE kind.
    pub kind: Kind,
    /// The 64 bytes of report data, hex.
    pub report_data: String,
    /// The kind's measurements and TCB, flattened into this object.
    #[serde(flatten)]
    pub details: Details,
    /// What the publisher should know: rules with no reference values, the
    /// insecure dev kind, statuses accepted by an explicit list.
    pub notes: Vec<String>,
}

/// The measured values of one kind of evidence, hex-encoded.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
// One per attestation, moved a few times: the size difference costs nothing.
#[allow(clippy::large_enum_variant)]
pub enum Details {
    /// An Intel TDX quote.
    Tdx(tdx::TdxClaims),
    /// An Intel SGX quote.
    Sgx(tdx::SgxClaims),
    /// An AMD SEV-SNP report.
    Snp(snp::SnpClaims),
    /// The insecure dev statement.
    InsecureDev(dev::DevClaims),
}

/// The trust anchors verification runs against. Production code uses
/// [`Roots::pinned`]; tests swap in a root of their own and nothing else.
#[derive(Debug, Clone)]
pub struct Roots {
    /// Intel's SGX/TDX root CA, DER.
    pub intel_root_der: Vec<u8>,
}

impl Roots {
    /// The vendor roots compiled into this crate.
    pub fn pinned() -> Roots {
        Roots { intel_root_der: INTEL_ROOT_CA_DER.to_vec() }
    }
}

/// What the caller knows about the session the evidence arrived on.
#[derive(Debug, Clone, Copy)]
pub struct Expectation<'a> {
    /// The report data the evidence must carry; `None` skips the binding
    /// (offline inspection of evidence files only).
    pub report_data: Option<&'a [u8; 64]>,
    /// The provider's libp2p public key (protobuf), needed for insecure dev
    /// evidence, which its node key signs.
    pub provider_public_key: Option<&'a [u8]>,
    /// The verification time.
    pub now: SystemTime,
    /// The publisher opted in to insecure dev evidence.
    pub allow_insecure_dev: bool,
}

/// Verifies evidence against the roots, the binding and the policy.
pub fn verify(
    evidence: &Evidence,
    expect: &Expectation<'_>,
    policy: &Policy,
    roots: &Roots,
) -> Result<Claims, AttestError> {
    evidence.check_sizes()?;
    if evidence.kind == Kind::InsecureDev {
        if !expect.allow_insecure_dev {
            return Err(AttestError::InsecureDevRefused);
        }
    } else if !policy.accept.contains(&evidence.kind) {
        let accepted: Vec<String> = policy.accept.iter().map(|k| k.to_string()).collect();
        return Err(AttestError::KindNotAccepted(evidence.kind, accepted.join(", ")));
    }
    let claims = match evidence.kind {
        Kind::Tdx | Kind::Sgx => tdx::verify(evidence, expect.now, policy, roots)?,
        Kind::Snp => snp::verify(evidence, expect.now, policy)?,
        Kind::InsecureDev => dev::verify(evidence, expect.provider_public_key)?,
    };
    if let Some(expected) = expect.report_data {
        let expected = hex::encode(expected);
        if claims.report_data != expected {
            return Err(AttestError::Binding { expected, found: claims.report_data });
        }
    }
    Ok(claims)
}

pub(crate) fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

pub(crate) fn rfc3339(unix: u64) -> String {
    chrono::DateTime::from_timestamp(unix as i64, 0)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| format!("@{unix}"))
}

/// Whether `value` is allowed by a list of hex reference values (any value
/// when the list is empty, with a note saying so).
pub(crate) fn check_reference(
    rule: &str,
    value: &[u8],
    accepted: &[String],
    notes: &mut Vec<String>,
) -> Result<(), AttestError> {
    if accepted.is_empty() {
        notes.push(format!("policy lists no reference value for {rule}: any value accepted"));
        return Ok(());
    }
    let found = hex::encode(value);
    if accepted.iter().any(|a| a.trim().eq_ignore_ascii_case(&found)) {
        Ok(())
    } else {
        Err(AttestError::policy(rule, found, format!("one of [{}]", accepted.join(", "))))
    }
}

/// Intel's SGX/TDX root CA ("Intel SGX Root CA"), DER, the same bytes
/// `dcap-qvl` embeds.
pub const INTEL_ROOT_CA_DER: &[u8] = include_bytes!("../roots/intel_sgx_root_ca.der");
