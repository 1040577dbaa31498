//! AMD SEV-SNP attestation reports, verified against AMD's pinned ARK, ASK and
//! ASVK for Milan, Genoa and Turin.
//!
//! `sev` parses the report and checks the RSA-PSS signatures ARK → ASK (or
//! ASVK) → VCEK (or VLEK). This module adds what `sev` leaves to its callers,
//! as Confidential Containers Trustee does: the report signature over the raw
//! bytes (`sev` re-encodes the parsed report, which would let a flipped
//! reserved bit through), the VCEK's TCB and hardware-id extensions against
//! the report, certificate validity at `now`, and every policy rule.

use std::time::SystemTime;

use der::{Decode, DecodePem, Encode};
use serde::Serialize;
use sev::certs::snp::{Certificate as SevCertificate, Verifiable};
use sev::firmware::guest::AttestationReport;
use sev::parser::ByteParser;

use crate::policy::{Policy, SnpTcb};
use crate::{check_reference, unix_seconds, AttestError, Claims, Details, Evidence};

/// Size of an attestation report (versions 2 to 5).
pub const REPORT_LEN: usize = 0x4a0;
/// The signed part of a report.
const SIGNED_LEN: usize = 0x2a0;

/// What a verified SNP report says, hex-encoded where bytes.
#[derive(Debug, Clone, Serialize)]
pub struct SnpClaims {
    /// Report format version.
    pub version: u32,
    /// The processor generation whose AMD keys signed it.
    pub generation: String,
    /// Which key signed it: `vcek` (per chip) or `vlek` (per cloud provider).
    pub signer: String,
    /// The launch measurement.
    pub measurement: String,
    /// Data the host supplied at launch.
    pub host_data: String,
    /// The guest's family id.
    pub family_id: String,
    /// The guest's image id.
    pub image_id: String,
    /// The chip's unique id.
    pub chip_id: String,
    /// The VM privilege level the report was requested at.
    pub vmpl: u32,
    /// The guest policy as launched.
    pub guest_policy: String,
    /// Whether the guest policy allows debugging.
    pub debug: bool,
    /// Whether the guest policy allows a migration agent.
    pub migrate_ma: bool,
    /// The TCB the VCEK certifies.
    pub reported_tcb: SnpTcb,
    /// The TCB the platform committed to (no rollback below it).
    pub committed_tcb: SnpTcb,
    /// The guest's security version.
    pub guest_svn: u32,
}

/// One processor generation's pinned AMD certificates.
struct AmdRoots {
    generation: &'static str,
    ark: x509_cert::Certificate,
    ask: x509_cert::Certificate,
    asvk: x509_cert::Certificate,
}

const PINNED: [(&str, &[u8]); 3] = [
    ("Milan", include_bytes!("../roots/milan_ask_ark_asvk.pem")),
    ("Genoa", include_bytes!("../roots/genoa_ask_ark_asvk.pem")),
    ("Turin", include_bytes!("../roots/turin_ask_ark_asvk.pem")),
];

/// The pinned certificates, parsed once, with each ARK's self-signature and
/// its signatures over the ASK and ASVK checked once.
fn pinned_roots() -> &'static [AmdRoots] {
    static ROOTS: std::sync::OnceLock<Vec<AmdRoots>> = std::sync::OnceLock::new();
    ROOTS.get_or_init(|| {
        let roots = parse_pinned();
        for r in &roots {
            assert!(
                signs(&r.ark, &r.ark) && signs(&r.ark, &r.ask) && signs(&r.ark, &r.asvk),
                "pinned {} AMD chain does not verify",
                r.generation
            );
        }
        roots
    })
}

fn parse_pinned() -> Vec<AmdRoots> {
    PINNED
        .iter()
        .map(|(generation, pem)| {
            let certs = x509_cert::Certificate::load_pem_chain(pem).expect("pinned AMD certificates parse");
            let [ask, ark, asvk]: [x509_cert::Certificate; 3] =
                certs.try_into().expect("pinned AMD bundle holds ASK, ARK, ASVK");
            AmdRoots { generation, ark, ask, asvk }
        })
        .collect()
}

/// Reads a certificate as DER, or PEM when it looks like PEM.
pub fn parse_certificate(bytes: &[u8], what: &'static str) -> Result<x509_cert::Certificate, AttestError> {
    let trimmed = bytes.trim_ascii_start();
    if trimmed.starts_with(b"-----BEGIN") {
        x509_cert::Certificate::from_pem(trimmed).map_err(|e| AttestError::malformed(what, e))
    } else {
        x509_cert::Certificate::from_der(bytes).map_err(|e| AttestError::malformed(what, e))
    }
}

fn der(cert: &x509_cert::Certificate) -> Vec<u8> {
    cert.to_der().unwrap_or_default()
}

fn sev_cert(cert: &x509_cert::Certificate) -> SevCertificate {
    SevCertificate::from(cert.clone())
}

fn signs(signer: &x509_cert::Certificate, signee: &x509_cert::Certificate) -> bool {
    (&sev_cert(signer), &sev_cert(signee)).verify().is_ok()
}

fn check_validity(cert: &x509_cert::Certificate, now: u64) -> Result<(), AttestError> {
    let v = &cert.tbs_certificate.validity;
    let nb = v.not_before.to_unix_duration().as_secs();
    let na = v.not_after.to_unix_duration().as_secs();
    if now < nb || now > na {
        return Err(AttestError::CertificateTime {
            subject: cert.tbs_certificate.subject.to_string(),
            not_before: crate::rfc3339(nb),
            not_after: crate::rfc3339(na),
            now: crate::rfc3339(now),
        });
    }
    Ok(())
}

const OID_BL_SPL: &str = "1.3.6.1.4.1.3704.1.3.1";
const OID_TEE_SPL: &str = "1.3.6.1.4.1.3704.1.3.2";
const OID_SNP_SPL: &str = "1.3.6.1.4.1.3704.1.3.3";
const OID_UCODE_SPL: &str = "1.3.6.1.4.1.3704.1.3.8";
const OID_FMC_SPL: &str = "1.3.6.1.4.1.3704.1.3.9";
const OID_HW_ID: &str = "1.3.6.1.4.1.3704.1.4";

fn extension<'a>(cert: &'a x509_cert::Certificate, oid: &str) -> Option<&'a [u8]> {
    cert.tbs_certificate
        .extensions
        .as_ref()?
        .iter()
        .find(|e| e.extn_id.to_string() == oid)
        .map(|e| e.extn_value.as_bytes())
}

/// An SPL extension: a DER INTEGER that fits a byte.
fn spl(cert: &x509_cert::Certificate, oid: &str, name: &str) -> Result<u8, AttestError> {
    let raw = extension(cert, oid)
        .ok_or_else(|| AttestError::malformed("VEK certificate", format!("no {name} extension ({oid})")))?;
    let int = der::asn1::Int::from_der(raw)
        .map_err(|e| AttestError::malformed("VEK certificate", format!("{name} extension: {e}")))?;
    let bytes = int.as_bytes();
    let trimmed: Vec<u8> = bytes.iter().copied().skip_while(|b| *b == 0).collect();
    match trimmed.as_slice() {
        [] => Ok(0),
        [v] => Ok(*v),
        _ => Err(AttestError::malformed("VEK certificate", format!("{name} extension is not a byte"))),
    }
}

/// The hardware id: raw 64 bytes (older VCEKs), or a DER OCTET STRING (64
/// bytes, or 8 on Turin).
fn hw_id(cert: &x509_cert::Certificate) -> Result<Vec<u8>, AttestError> {
    let raw = extension(cert, OID_HW_ID)
        .ok_or_else(|| AttestError::malformed("VCEK certificate", "no hwID extension (1.3.6.1.4.1.3704.1.4)"))?;
    if raw.len() == 64 {
        return Ok(raw.to_vec());
    }
    der::asn1::OctetString::from_der(raw)
        .map(|o| o.as_bytes().to_vec())
        .map_err(|e| AttestError::malformed("VCEK certificate", format!("hwID extension: {e}")))
}

fn tcb_of(t: &sev::firmware::host::TcbVersion) -> SnpTcb {
    SnpTcb { bootloader: t.bootloader, tee: t.tee, snp: t.snp, microcode: t.microcode, fmc: t.fmc.unwrap_or(0) }
}

/// Verifies the report's ECDSA P-384 signature over its raw signed bytes.
fn verify_report_signature(raw: &[u8], vek: &x509_cert::Certificate) -> Result<(), AttestError> {
    use p384::ecdsa::signature::Verifier;
    let sig_algo = u32::from_le_bytes([raw[0x34], raw[0x35], raw[0x36], raw[0x37]]);
    if sig_algo != 1 {
        return Err(AttestError::Signature(format!(
            "signature algorithm {sig_algo}, expected 1 (ECDSA P-384 with SHA-384)"
        )));
    }
    let sig = &raw[SIGNED_LEN..];
    let (r, rest) = sig.split_at(72);
    let (s, reserved) = rest.split_at(72);
    // The scalars are 48 bytes little-endian in 72-byte fields; anything in
    // the padding or the reserved tail is not a signature we made.
    if r[48..].iter().chain(&s[48..]).chain(reserved).any(|b| *b != 0) {
        return Err(AttestError::Signature("non-zero bytes in the signature's padding or reserved area".into()));
    }
    let mut be = [0u8; 96];
    for i in 0..48 {
        be[i] = r[47 - i];
        be[48 + i] = s[47 - i];
    }
    let signature = p384::ecdsa::Signature::from_slice(&be)
        .map_err(|e| AttestError::Signature(format!("report signature is not a valid P-384 signature: {e}")))?;
    let key_bytes = vek.tbs_certificate.subject_public_key_info.subject_public_key.raw_bytes();
    let key = p384::ecdsa::VerifyingKey::from_sec1_bytes(key_bytes)
        .map_err(|e| AttestError::malformed("VEK certificate", format!("not a P-384 key: {e}")))?;
    key.verify(&raw[..SIGNED_LEN], &signature)
        .map_err(|_| AttestError::Signature("the VEK did not sign this attestation report".into()))
}

/// Parses a report, raw or hex.
pub fn parse_report(raw: &[u8]) -> Result<AttestationReport, AttestError> {
    if raw.len() != REPORT_LEN {
        return Err(AttestError::malformed("SNP report", format!("{} bytes, expected {REPORT_LEN}", raw.len())));
    }
    let version = u32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]);
    if !(2..=5).contains(&version) {
        return Err(AttestError::malformed("SNP report", format!("version {version}, expected 2 to 5")));
    }
    AttestationReport::from_bytes(raw).map_err(|e| AttestError::malformed("SNP report", e))
}

pub(crate) fn verify(evidence: &Evidence, now: SystemTime, policy: &Policy) -> Result<Claims, AttestError> {
    let raw = &evidence.report;
    let report = parse_report(raw)?;
    let now_unix = unix_seconds(now);
    let vek_bytes = evidence.collateral.first().ok_or_else(|| {
        AttestError::MissingCollateral("the VCEK or VLEK certificate is required as collateral[0]".into())
    })?;
    let vek = parse_certificate(vek_bytes, "VEK certificate")?;
    let is_vlek = match report.key_info.signing_key() {
        0 => false,
        1 => true,
        other => return Err(AttestError::Signature(format!("report signed by key type {other}, not a VCEK or VLEK"))),
    };
    if is_vlek && !policy.snp.allow_vlek {
        return Err(AttestError::policy("snp.allow_vlek", "a VLEK-signed report", "VCEK only"));
    }

    // Which generation's AMD keys sign this VEK. Reports from version 3 name
    // the CPU family; every pinned generation is tried, which is as safe
    // because every one of them is AMD's.
    let roots = pinned_roots();
    let signer_of = |r: &AmdRoots| if is_vlek { r.asvk.clone() } else { r.ask.clone() };
    let root = roots.iter().find(|r| signs(&signer_of(r), &vek)).ok_or_else(|| {
        AttestError::Signature(format!(
            "the {} is not signed by AMD's pinned {} for Milan, Genoa or Turin",
            if is_vlek { "VLEK" } else { "VCEK" },
            if is_vlek { "ASVK" } else { "ASK" }
        ))
    })?;
    let intermediate = signer_of(root);
    // A supplied chain must be AMD's own, in order: ASK (or ASVK), then ARK.
    let expected = [(&intermediate, if is_vlek { "ASVK" } else { "ASK" }), (&root.ark, "ARK")];
    for (i, extra) in evidence.collateral.iter().skip(1).enumerate() {
        let cert = parse_certificate(extra, "certificate chain")?;
        let Some((pinned, name)) = expected.get(i) else {
            return Err(AttestError::malformed("certificate chain", "more than VEK, ASK and ARK"));
        };
        if der(&cert) != der(pinned) {
            return Err(AttestError::Signature(format!(
                "collateral[{}] ({}) is not AMD's pinned {} {name}: certificates out of order or from another root",
                i + 1,
                cert.tbs_certificate.subject,
                root.generation
            )));
        }
    }
    for cert in [&vek, &intermediate, &root.ark] {
        check_validity(cert, now_unix)?;
    }
    verify_report_signature(raw, &vek)?;

    // What the VEK certifies must be what the report says.
    let reported = tcb_of(&report.reported_tcb);
    let certified = [
        ("bootloader", spl(&vek, OID_BL_SPL, "blSPL")?, reported.bootloader),
        ("tee", spl(&vek, OID_TEE_SPL, "teeSPL")?, reported.tee),
        ("snp", spl(&vek, OID_SNP_SPL, "snpSPL")?, reported.snp),
        ("microcode", spl(&vek, OID_UCODE_SPL, "ucodeSPL")?, reported.microcode),
    ];
    for (name, cert_value, report_value) in certified {
        if cert_value != report_value {
            return Err(AttestError::Signature(format!(
                "reported TCB {name} is {report_value} but the VEK certifies {cert_value}"
            )));
        }
    }
    if root.generation == "Turin" {
        let fmc = spl(&vek, OID_FMC_SPL, "fmcSPL")?;
        if fmc != reported.fmc {
            return Err(AttestError::Signature(format!(
                "reported TCB fmc is {} but the VEK certifies {fmc}",
                reported.fmc
            )));
        }
    }
    if !is_vlek {
        let hw = hw_id(&vek)?;
        if hw.is_empty() || hw.len() > 64 || report.chip_id[..hw.len()] != hw[..] {
            return Err(AttestError::Signature(format!(
                "chip id {} is not the VCEK's hardware id {}",
                hex::encode(report.chip_id),
                hex::encode(&hw)
            )));
        }
    }

    let mut notes = Vec::new();
    let p = &policy.snp;
    let debug = report.policy.debug_allowed();
    if debug && !policy.allow_debug {
        return Err(AttestError::policy("allow_debug", "a guest policy that allows debugging", "debug off"));
    }
    if report.policy.migrate_ma_allowed() && !p.allow_migrate_ma {
        return Err(AttestError::policy(
            "snp.allow_migrate_ma",
            "a guest policy that allows a migration agent",
            "none",
        ));
    }
    if report.vmpl > p.max_vmpl {
        return Err(AttestError::policy("snp.max_vmpl", report.vmpl, format!("at most {}", p.max_vmpl)));
    }
    let committed = tcb_of(&report.committed_tcb);
    for (which, tcb) in [("reported", reported), ("committed", committed)] {
        let parts = [
            ("bootloader", tcb.bootloader, p.min_tcb.bootloader),
            ("tee", tcb.tee, p.min_tcb.tee),
            ("snp", tcb.snp, p.min_tcb.snp),
            ("microcode", tcb.microcode, p.min_tcb.microcode),
            ("fmc", tcb.fmc, p.min_tcb.fmc),
        ];
        for (name, have, min) in parts {
            if have < min {
                return Err(AttestError::policy(
                    &format!("snp.min_tcb.{name}"),
                    format!("{which} TCB {name} {have}"),
                    format!("at least {min}"),
                ));
            }
        }
    }
    if p.min_tcb == SnpTcb::default() {
        notes.push("policy sets no minimum SNP TCB: any patch level accepted".into());
    }
    check_reference("snp.measurement", &report.measurement, &p.measurement, &mut notes)?;
    check_reference("snp.host_data", &report.host_data, &p.host_data, &mut notes)?;
    if !p.family_id.is_empty() {
        check_reference("snp.family_id", &report.family_id, &p.family_id, &mut notes)?;
    }
    if !p.image_id.is_empty() {
        check_reference("snp.image_id", &report.image_id, &p.image_id, &mut notes)?;
    }
    if !p.chip_ids.is_empty() {
        check_reference("snp.chip_ids", &report.chip_id, &p.chip_ids, &mut notes)?;
    }
    let claims = SnpClaims {
        version: report.version,
        generation: root.generation.to_owned(),
        signer: if is_vlek { "vlek" } else { "vcek" }.into(),
        measurement: hex::encode(report.measurement),
        host_data: hex::encode(report.host_data),
        family_id: hex::encode(report.family_id),
        image_id: hex::encode(report.image_id),
        chip_id: hex::encode(report.chip_id),
        vmpl: report.vmpl,
        guest_policy: format!("{:#x}", u64::from(report.policy)),
        debug,
        migrate_ma: report.policy.migrate_ma_allowed(),
        reported_tcb: reported,
        committed_tcb: committed,
        guest_svn: report.guest_svn,
    };
    Ok(Claims {
        kind: crate::Kind::Snp,
        report_data: hex::encode(report.report_data),
        details: Details::Snp(claims),
        notes,
    })
}

/// Splits an SNP certificate table (the `auxblob` of a configfs-tsm report,
/// GHCB specification §4.1.8.1) into the VEK, ASK and ARK, as DER, in the
/// order [`Evidence::collateral`] wants them.
pub fn certs_from_table(table: &[u8]) -> Result<Vec<Vec<u8>>, AttestError> {
    // Canonical GUID text of each entry kind (GHCB specification, table 8).
    const VCEK: &str = "63da758de6644564adc5f4b93be8accd";
    const VLEK: &str = "a8074bc2a25a483eaae639c045a0b8a1";
    const ASK: &str = "4ab7b379bbac4fe4a02f05aef327c782";
    const ARK: &str = "c0b406a4a803495297433fb6014cd0ae";
    // The table stores GUIDs in the EFI layout: the first three fields little-endian.
    let guid_of = |e: &[u8]| -> String {
        let mut g = Vec::with_capacity(16);
        g.extend(e[0..4].iter().rev());
        g.extend(e[4..6].iter().rev());
        g.extend(e[6..8].iter().rev());
        g.extend(&e[8..16]);
        hex::encode(g)
    };
    let mut entries = Vec::new();
    let mut at = 0;
    loop {
        let e = table.get(at..at + 24).ok_or_else(|| AttestError::malformed("SNP certificate table", "truncated"))?;
        if e.iter().all(|b| *b == 0) {
            break;
        }
        let offset = u32::from_le_bytes([e[16], e[17], e[18], e[19]]) as usize;
        let len = u32::from_le_bytes([e[20], e[21], e[22], e[23]]) as usize;
        let data = offset
            .checked_add(len)
            .and_then(|end| table.get(offset..end))
            .ok_or_else(|| AttestError::malformed("SNP certificate table", "entry outside the table"))?;
        entries.push((guid_of(e), data.to_vec()));
        at += 24;
        if entries.len() > 16 {
            return Err(AttestError::malformed("SNP certificate table", "more than 16 entries"));
        }
    }
    let find = |guid: &str| entries.iter().find(|(g, _)| g == guid).map(|(_, d)| d.clone());
    let vek = find(VCEK)
        .or_else(|| find(VLEK))
        .ok_or_else(|| AttestError::MissingCollateral("the certificate table holds no VCEK or VLEK".into()))?;
    let mut out = vec![vek];
    if let Some(ask) = find(ASK) {
        out.push(ask);
        if let Some(ark) = find(ARK) {
            out.push(ark);
        }
    }
    Ok(out)
}
