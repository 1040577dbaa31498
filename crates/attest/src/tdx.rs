//! Intel TDX (quote v4, v5) and SGX (quote v3) evidence, verified with
//! `dcap-qvl` against DCAP collateral the provider supplies and a pinned root.
//!
//! `dcap-qvl` checks the quote signature, the QE report, the PCK chain, CRLs,
//! the TCB info and QE identity signatures and their validity at `now`, and
//! finds the TCB level. Every policy decision (status, advisories, age,
//! debug, measurements) is made here, so a refusal names the policy rule.

use std::time::SystemTime;

use dcap_qvl::quote::Report;
use dcap_qvl::{QuoteCollateralV3, QuotePolicy, TcbStatus};
use serde::Serialize;

use crate::policy::{check_age, DcapRules, Policy};
use crate::{check_reference, unix_seconds, AttestError, Claims, Details, Evidence, Kind, Roots};

/// What a verified TDX quote says, hex-encoded.
#[derive(Debug, Clone, Serialize)]
pub struct TdxClaims {
    /// The quote's version (4 or 5).
    pub quote_version: u16,
    /// The TD's initial measurement.
    pub mr_td: String,
    /// Runtime measurement registers 0 to 3.
    pub rtmr0: String,
    /// RTMR1.
    pub rtmr1: String,
    /// RTMR2.
    pub rtmr2: String,
    /// RTMR3.
    pub rtmr3: String,
    /// The TDX module's measurement.
    pub mr_seam: String,
    /// The TDX module signer.
    pub mr_signer_seam: String,
    /// Extended features.
    pub xfam: String,
    /// TD attributes.
    pub td_attributes: String,
    /// Whether the TD is debuggable (TUD bit set).
    pub debug: bool,
    /// The owner-defined configuration id.
    pub mr_config_id: String,
    /// The TD owner.
    pub mr_owner: String,
    /// The owner's configuration.
    pub mr_owner_config: String,
    /// TEE TCB SVN.
    pub tee_tcb_svn: String,
    /// The DCAP verdict.
    #[serde(flatten)]
    pub tcb: DcapVerdict,
}

/// What a verified SGX quote says.
#[derive(Debug, Clone, Serialize)]
pub struct SgxClaims {
    /// The quote's version.
    pub quote_version: u16,
    /// The enclave's measurement.
    pub mr_enclave: String,
    /// The signer's key hash.
    pub mr_signer: String,
    /// Product id.
    pub isv_prod_id: u16,
    /// Security version.
    pub isv_svn: u16,
    /// Enclave attributes.
    pub attributes: String,
    /// Whether the enclave is debuggable.
    pub debug: bool,
    /// The DCAP verdict.
    #[serde(flatten)]
    pub tcb: DcapVerdict,
}

/// The platform's TCB as DCAP judged it.
#[derive(Debug, Clone, Serialize)]
pub struct DcapVerdict {
    /// Intel's TCB status for the platform.
    pub tcb_status: String,
    /// Advisories that apply.
    pub advisory_ids: Vec<String>,
    /// The TCB evaluation data number of the TCB info.
    pub tcb_eval_data_number: u32,
    /// The date of the matched TCB level.
    pub tcb_date: String,
    /// The platform's FMSPC.
    pub fmspc: String,
    /// The platform's PPID (from the PCK certificate).
    pub ppid: String,
    /// When the TCB info was issued.
    pub tcb_info_issue_date: String,
    /// When the TCB info must next be updated.
    pub tcb_info_next_update: String,
}

/// Parses DCAP collateral from its JSON form (the `QuoteCollateralV3`
/// fields, byte fields hex, as PCCS clients and `dcap-qvl` write it).
pub fn parse_collateral(bytes: &[u8]) -> Result<QuoteCollateralV3, AttestError> {
    if bytes.len() > crate::MAX_COLLATERAL {
        return Err(AttestError::TooLarge { what: "collateral", size: bytes.len(), limit: crate::MAX_COLLATERAL });
    }
    serde_json::from_slice(bytes).map_err(|e| AttestError::malformed("DCAP collateral JSON", e))
}

/// Issue and next-update dates of a signed TCB info or QE identity JSON.
fn issue_window(json: &str, what: &'static str) -> Result<(u64, u64), AttestError> {
    let v: serde_json::Value = serde_json::from_str(json).map_err(|e| AttestError::malformed(what, e))?;
    let date = |field: &str| -> Result<u64, AttestError> {
        let s =
            v.get(field).and_then(|s| s.as_str()).ok_or_else(|| AttestError::malformed(what, format!("no {field}")))?;
        chrono::DateTime::parse_from_rfc3339(s)
            .map(|t| t.timestamp().max(0) as u64)
            .map_err(|e| AttestError::malformed(what, format!("{field} {s:?}: {e}")))
    };
    Ok((date("issueDate")?, date("nextUpdate")?))
}

pub(crate) fn verify(
    evidence: &Evidence,
    now: SystemTime,
    policy: &Policy,
    roots: &Roots,
) -> Result<Claims, AttestError> {
    let collateral_bytes = evidence
        .collateral
        .first()
        .ok_or_else(|| AttestError::MissingCollateral("DCAP collateral JSON is required as collateral[0]".into()))?;
    let collateral = parse_collateral(collateral_bytes)?;
    let (tcb_issue, tcb_next) = issue_window(&collateral.tcb_info, "TCB info")?;
    let (qe_issue, _) = issue_window(&collateral.qe_identity, "QE identity")?;
    let quote = dcap_qvl::quote::Quote::parse(&evidence.report).map_err(|e| AttestError::malformed("quote", e))?;
    let found_kind = if quote.report.is_sgx() { Kind::Sgx } else { Kind::Tdx };
    if found_kind != evidence.kind {
        return Err(AttestError::WrongKind { expected: evidence.kind.to_string(), found: found_kind.to_string() });
    }
    let now_unix = unix_seconds(now);
    // Debug is a policy decision, made below with the rule's name.
    let verifier = dcap_qvl::verify::QuoteVerifier::new(roots.intel_root_der.clone()).allow_debug(true);
    let claims = verifier
        .verify_with_policy(&evidence.report, collateral, now_unix, &QuotePolicy::claims_only(now_unix))
        .map_err(|e| AttestError::Signature(format!("{e:#}")))?;

    let (rules, prefix) = match found_kind {
        Kind::Sgx => (&policy.sgx.dcap, "sgx"),
        _ => (&policy.tdx.dcap, "tdx"),
    };
    let mut notes = Vec::new();
    let verdict = DcapVerdict {
        tcb_status: claims.tcb.status.to_string(),
        advisory_ids: claims.tcb.advisory_ids.clone(),
        tcb_eval_data_number: claims.tcb.eval_data_number,
        tcb_date: claims.platform.tcb_level.tcb_date.clone(),
        fmspc: hex::encode(claims.platform.pck.fmspc),
        ppid: hex::encode(&claims.platform.pck.ppid),
        tcb_info_issue_date: crate::rfc3339(tcb_issue),
        tcb_info_next_update: crate::rfc3339(tcb_next),
    };
    check_dcap_rules(prefix, rules, &verdict, claims.tcb.status, tcb_issue.min(qe_issue), now_unix, &mut notes)?;

    let report_data;
    let details = match &claims.report {
        Report::SgxEnclave(r) => {
            report_data = r.report_data;
            let debug = r.attributes[0] & 0x02 != 0;
            if debug && !policy.allow_debug {
                return Err(AttestError::policy("allow_debug", "a debug enclave (ATTRIBUTES.DEBUG set)", "debug off"));
            }
            check_reference("sgx.mr_enclave", &r.mr_enclave, &policy.sgx.mr_enclave, &mut notes)?;
            check_reference("sgx.mr_signer", &r.mr_signer, &policy.sgx.mr_signer, &mut notes)?;
            Details::Sgx(SgxClaims {
                quote_version: claims.header.version,
                mr_enclave: hex::encode(r.mr_enclave),
                mr_signer: hex::encode(r.mr_signer),
                isv_prod_id: r.isv_prod_id,
                isv_svn: r.isv_svn,
                attributes: hex::encode(r.attributes),
                debug,
                tcb: verdict,
            })
        }
        other => {
            let r = other.as_td10().ok_or_else(|| AttestError::malformed("quote", "no TD report in a TDX quote"))?;
            report_data = r.report_data;
            // TUD, bits 7:0 of TD attributes: any bit set makes the TD untrusted.
            let debug = r.td_attributes[0] != 0;
            if debug && !policy.allow_debug {
                return Err(AttestError::policy(
                    "allow_debug",
                    format!("a debuggable TD (TD attributes {})", hex::encode(r.td_attributes)),
                    "debug off",
                ));
            }
            let t = &policy.tdx;
            check_reference("tdx.mr_td", &r.mr_td, &t.mr_td, &mut notes)?;
            check_reference("tdx.rtmr0", &r.rt_mr0, &t.rtmr0, &mut notes)?;
            check_reference("tdx.rtmr1", &r.rt_mr1, &t.rtmr1, &mut notes)?;
            check_reference("tdx.rtmr2", &r.rt_mr2, &t.rtmr2, &mut notes)?;
            check_reference("tdx.rtmr3", &r.rt_mr3, &t.rtmr3, &mut notes)?;
            check_reference("tdx.mr_seam", &r.mr_seam, &t.mr_seam, &mut notes)?;
            check_reference("tdx.xfam", &r.xfam, &t.xfam, &mut notes)?;
            check_reference("tdx.td_attributes", &r.td_attributes, &t.td_attributes, &mut notes)?;
            Details::Tdx(TdxClaims {
                quote_version: claims.header.version,
                mr_td: hex::encode(r.mr_td),
                rtmr0: hex::encode(r.rt_mr0),
                rtmr1: hex::encode(r.rt_mr1),
                rtmr2: hex::encode(r.rt_mr2),
                rtmr3: hex::encode(r.rt_mr3),
                mr_seam: hex::encode(r.mr_seam),
                mr_signer_seam: hex::encode(r.mr_signer_seam),
                xfam: hex::encode(r.xfam),
                td_attributes: hex::encode(r.td_attributes),
                debug,
                mr_config_id: hex::encode(r.mr_config_id),
                mr_owner: hex::encode(r.mr_owner),
                mr_owner_config: hex::encode(r.mr_owner_config),
                tee_tcb_svn: hex::encode(r.tee_tcb_svn),
                tcb: verdict,
            })
        }
    };
    Ok(Claims { kind: found_kind, report_data: hex::encode(report_data), details, notes })
}

/// The TCB and collateral rules, each refusal naming its rule.
pub(crate) fn check_dcap_rules(
    prefix: &str,
    rules: &DcapRules,
    verdict: &DcapVerdict,
    status: TcbStatus,
    issued: u64,
    now: u64,
    notes: &mut Vec<String>,
) -> Result<(), AttestError> {
    if status == TcbStatus::Revoked {
        return Err(AttestError::policy(&format!("{prefix}.accepted_tcb_status"), "Revoked", "never Revoked"));
    }
    if !rules.accepted_tcb_status.iter().any(|s| s == &verdict.tcb_status) {
        return Err(AttestError::policy(
            &format!("{prefix}.accepted_tcb_status"),
            &verdict.tcb_status,
            format!("one of [{}]", rules.accepted_tcb_status.join(", ")),
        ));
    }
    if verdict.tcb_status != "UpToDate" {
        notes.push(format!("TCB status {} accepted by the policy's explicit list", verdict.tcb_status));
    }
    if let Some(a) =
        verdict.advisory_ids.iter().find(|a| rules.rejected_advisories.iter().any(|r| r.eq_ignore_ascii_case(a)))
    {
        return Err(AttestError::policy(
            &format!("{prefix}.rejected_advisories"),
            format!("advisory {a}"),
            format!("none of [{}]", rules.rejected_advisories.join(", ")),
        ));
    }
    if verdict.tcb_eval_data_number < rules.min_tcb_eval_data_number {
        return Err(AttestError::policy(
            &format!("{prefix}.min_tcb_eval_data_number"),
            verdict.tcb_eval_data_number,
            format!("at least {}", rules.min_tcb_eval_data_number),
        ));
    }
    check_age(&format!("{prefix}.max_collateral_age_days"), issued, now, rules.max_collateral_age_days)?;
    if !rules.ppids.is_empty() && !rules.ppids.iter().any(|p| p.trim().eq_ignore_ascii_case(&verdict.ppid)) {
        return Err(AttestError::policy(
            &format!("{prefix}.ppids"),
            &verdict.ppid,
            format!("one of [{}]", rules.ppids.join(", ")),
        ));
    }
    Ok(())
}
