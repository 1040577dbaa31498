//! The TDX, SGX and SNP vectors of `$SEALPOD_TEST_VECTORS` (dcap-qvl's
//! samples, virtee/sev's and Trustee's test data) give the results
//! PROVENANCE.md states. Without the variable these tests say so and pass.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use sealpod_attest::{verify, AttestError, Details, Evidence, Expectation, Kind, Policy, Roots};

fn vectors(test: &str) -> Option<PathBuf> {
    let Some(root) = std::env::var_os("SEALPOD_TEST_VECTORS") else {
        eprintln!("skipped {test}: SEALPOD_TEST_VECTORS is not set (it names the shared/vectors directory)");
        return None;
    };
    let root = PathBuf::from(root);
    assert!(root.join("tdx").is_dir() && root.join("snp").is_dir(), "SEALPOD_TEST_VECTORS lacks tdx/ or snp/");
    Some(root)
}

fn at(rfc3339: &str) -> SystemTime {
    let t = chrono::DateTime::parse_from_rfc3339(rfc3339).unwrap().timestamp() as u64;
    SystemTime::UNIX_EPOCH + Duration::from_secs(t)
}

fn read(root: &std::path::Path, path: &str) -> Vec<u8> {
    std::fs::read(root.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn check(evidence: &Evidence, now: SystemTime, policy: &Policy) -> Result<sealpod_attest::Claims, AttestError> {
    let expect = Expectation { report_data: None, provider_public_key: None, now, allow_insecure_dev: false };
    verify(evidence, &expect, policy, &Roots::pinned())
}

fn tdx(root: &std::path::Path, name: &str) -> Evidence {
    Evidence {
        kind: Kind::Tdx,
        report: read(root, &format!("tdx/{name}")),
        collateral: vec![read(root, &format!("tdx/{name}_collateral.json"))],
    }
}

const TDX_NOW: &str = "2025-07-01T00:00:00Z";

#[test]
fn tdx_quote_verifies_up_to_date_inside_its_collateral_window() {
    let Some(root) = vectors("tdx_quote_verifies_up_to_date_inside_its_collateral_window") else { return };
    let claims = check(&tdx(&root, "tdx_quote"), at(TDX_NOW), &Policy::default()).unwrap();
    let Details::Tdx(t) = &claims.details else { panic!("not TDX claims: {claims:?}") };
    assert_eq!(t.tcb.tcb_status, "UpToDate");
    assert_eq!(t.mr_td.len(), 96);
    assert_eq!(claims.report_data.len(), 128);
    let json = serde_json::to_value(&claims).unwrap();
    assert_eq!(json["kind"], "tdx");
    assert!(json["mr_td"].is_string() && json["report_data"].is_string());
}

#[test]
fn tdx_quote_is_refused_after_its_collateral_next_update() {
    let Some(root) = vectors("tdx_quote_is_refused_after_its_collateral_next_update") else { return };
    let err = check(&tdx(&root, "tdx_quote"), at("2025-07-31T00:00:00Z"), &Policy::default()).unwrap_err();
    assert!(matches!(err, AttestError::Signature(_)), "{err}");
    assert!(err.to_string().to_lowercase().contains("expired"), "{err}");
}

#[test]
fn tdx_policy_pins_mr_td() {
    let Some(root) = vectors("tdx_policy_pins_mr_td") else { return };
    let ev = tdx(&root, "tdx_quote");
    let good = check(&ev, at(TDX_NOW), &Policy::default()).unwrap();
    let Details::Tdx(t) = &good.details else { panic!() };
    let mut policy = Policy::default();
    policy.tdx.mr_td = vec![t.mr_td.clone()];
    let pinned = check(&ev, at(TDX_NOW), &policy).unwrap();
    assert!(!pinned.notes.iter().any(|n| n.contains("tdx.mr_td")), "{:?}", pinned.notes);
    policy.tdx.mr_td = vec!["00".repeat(48)];
    let err = check(&ev, at(TDX_NOW), &policy).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("tdx.mr_td") && text.contains(&t.mr_td) && text.contains(&"00".repeat(48)), "{text}");
}

#[test]
fn tdx_collateral_older_than_the_policy_allows_is_refused() {
    let Some(root) = vectors("tdx_collateral_older_than_the_policy_allows_is_refused") else { return };
    let mut policy = Policy::default();
    policy.tdx.dcap.max_collateral_age_days = 7;
    let err = check(&tdx(&root, "tdx_quote"), at(TDX_NOW), &policy).unwrap_err();
    assert!(err.to_string().contains("tdx.max_collateral_age_days"), "{err}");
}

#[test]
fn tdx_quote_with_an_out_of_date_platform_is_refused() {
    let Some(root) = vectors("tdx_quote_with_an_out_of_date_platform_is_refused") else { return };
    let err = check(&tdx(&root, "tdx_quote_outdated"), at("2026-03-02T00:00:00Z"), &Policy::default()).unwrap_err();
    eprintln!("{err}");
}

#[test]
fn sgx_quote_needs_its_status_listed_and_reports_its_advisories() {
    let Some(root) = vectors("sgx_quote_needs_its_status_listed_and_reports_its_advisories") else { return };
    let ev = Evidence { kind: Kind::Sgx, ..tdx(&root, "sgx_quote") };
    let now = at("2025-07-01T00:00:00Z");
    let mut policy = Policy::default();
    let err = check(&ev, now, &policy).unwrap_err();
    assert!(matches!(err, AttestError::KindNotAccepted(Kind::Sgx, _)), "{err}");
    policy.accept.push(Kind::Sgx);
    let err = check(&ev, now, &policy).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("sgx.accepted_tcb_status") && text.contains("ConfigurationAndSWHardeningNeeded"), "{text}");
    policy.sgx.dcap.accepted_tcb_status.push("ConfigurationAndSWHardeningNeeded".into());
    let claims = check(&ev, now, &policy).unwrap();
    let Details::Sgx(s) = &claims.details else { panic!("{claims:?}") };
    assert_eq!(s.tcb.tcb_status, "ConfigurationAndSWHardeningNeeded");
    for a in ["INTEL-SA-00289", "INTEL-SA-00615"] {
        assert!(s.tcb.advisory_ids.iter().any(|x| x == a), "{:?}", s.tcb.advisory_ids);
    }
    policy.sgx.dcap.rejected_advisories.push("INTEL-SA-00615".into());
    assert!(check(&ev, now, &policy).unwrap_err().to_string().contains("sgx.rejected_advisories"));
}

#[test]
fn sgx_quote_sent_as_tdx_is_the_wrong_kind() {
    let Some(root) = vectors("sgx_quote_sent_as_tdx_is_the_wrong_kind") else { return };
    let err = check(&tdx(&root, "sgx_quote"), at(TDX_NOW), &Policy::default()).unwrap_err();
    assert!(matches!(err, AttestError::WrongKind { .. }), "{err}");
}

#[test]
fn tdx_collateral_of_another_platform_is_refused() {
    let Some(root) = vectors("tdx_collateral_of_another_platform_is_refused") else { return };
    let mut ev = tdx(&root, "tdx_quote");
    ev.collateral = vec![read(&root, "tdx/sgx_quote_collateral.json")];
    assert!(check(&ev, at(TDX_NOW), &Policy::default()).is_err());
}

#[test]
fn every_flipped_bit_in_the_signed_part_of_a_tdx_quote_is_refused() {
    let Some(root) = vectors("every_flipped_bit_in_the_signed_part_of_a_tdx_quote_is_refused") else { return };
    let ev = tdx(&root, "tdx_quote");
    // Header (48) and TD report (584), then, past the (unsigned) length of
    // the signature data, the quote signature (64) and the attestation key
    // (64) that the QE report binds.
    for byte in (0..632).chain(636..764) {
        for bit in 0..8 {
            let mut bad = ev.clone();
            bad.report[byte] ^= 1 << bit;
            assert!(check(&bad, at(TDX_NOW), &Policy::default()).is_err(), "bit {bit} of byte {byte} went unnoticed");
        }
    }
}

#[test]
fn truncated_garbage_and_oversized_quotes_get_typed_errors() {
    let Some(root) = vectors("truncated_garbage_and_oversized_quotes_get_typed_errors") else { return };
    let ev = tdx(&root, "tdx_quote");
    for len in [0, 1, 47, 48, 100, 631, 632, 700, 1000, 4000] {
        let mut bad = ev.clone();
        bad.report.truncate(len);
        assert!(check(&bad, at(TDX_NOW), &Policy::default()).is_err(), "truncated to {len}");
    }
    let mut bad = ev.clone();
    bad.report = (0..5000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    assert!(check(&bad, at(TDX_NOW), &Policy::default()).is_err());
    bad.report = vec![0; sealpod_attest::MAX_REPORT + 1];
    assert!(matches!(check(&bad, at(TDX_NOW), &Policy::default()), Err(AttestError::TooLarge { .. })));
    let mut bad = ev.clone();
    bad.collateral = vec![b"{\"not\": \"collateral\"}".to_vec()];
    assert!(matches!(check(&bad, at(TDX_NOW), &Policy::default()), Err(AttestError::Malformed { .. })));
    bad.collateral.clear();
    assert!(matches!(check(&bad, at(TDX_NOW), &Policy::default()), Err(AttestError::MissingCollateral(_))));
}

// ---- SEV-SNP ----

const SNP_NOW: &str = "2026-01-01T00:00:00Z";

fn milan(root: &std::path::Path) -> Evidence {
    let hex_text = String::from_utf8(read(root, "snp/report_milan.hex")).unwrap();
    let report = hex::decode(hex_text.split_whitespace().collect::<String>()).unwrap();
    Evidence { kind: Kind::Snp, report, collateral: vec![read(root, "snp/vcek_milan.der")] }
}

fn chain(root: &std::path::Path, name: &str) -> Vec<Vec<u8>> {
    sealpod_attest::tsm::split_certificates(&read(root, name)).unwrap()
}

#[test]
fn snp_milan_report_verifies_with_its_vcek_alone_and_with_amds_chain() {
    let Some(root) = vectors("snp_milan_report_verifies_with_its_vcek_alone_and_with_amds_chain") else { return };
    let ev = milan(&root);
    let claims = check(&ev, at(SNP_NOW), &Policy::default()).unwrap();
    let Details::Snp(s) = &claims.details else { panic!("{claims:?}") };
    assert_eq!(s.generation, "Milan");
    assert_eq!(s.signer, "vcek");
    assert_eq!(s.measurement.len(), 96);
    let json = serde_json::to_value(&claims).unwrap();
    assert!(json["measurement"].is_string() && json["report_data"].is_string());

    let mut with_chain = ev.clone();
    with_chain.collateral.extend(chain(&root, "snp/cert_chain_milan"));
    assert_eq!(with_chain.collateral.len(), 3);
    check(&with_chain, at(SNP_NOW), &Policy::default()).unwrap();
}

#[test]
fn snp_chain_out_of_order_or_from_another_generation_is_refused() {
    let Some(root) = vectors("snp_chain_out_of_order_or_from_another_generation_is_refused") else { return };
    let mut ev = milan(&root);
    let mut c = chain(&root, "snp/cert_chain_milan");
    c.reverse();
    ev.collateral.extend(c);
    let err = check(&ev, at(SNP_NOW), &Policy::default()).unwrap_err();
    assert!(err.to_string().contains("out of order"), "{err}");
    let mut ev = milan(&root);
    ev.collateral.extend(chain(&root, "snp/cert_chain_turin"));
    assert!(check(&ev, at(SNP_NOW), &Policy::default()).is_err());
    let mut ev = milan(&root);
    ev.collateral = vec![read(&root, "snp/vcek_turin.der")];
    assert!(check(&ev, at(SNP_NOW), &Policy::default()).is_err());
}

#[test]
fn snp_vcek_outside_its_validity_is_refused() {
    let Some(root) = vectors("snp_vcek_outside_its_validity_is_refused") else { return };
    let err = check(&milan(&root), at("2031-01-01T00:00:00Z"), &Policy::default()).unwrap_err();
    assert!(matches!(err, AttestError::CertificateTime { .. }), "{err}");
    let err = check(&milan(&root), at("2020-01-01T00:00:00Z"), &Policy::default()).unwrap_err();
    assert!(matches!(err, AttestError::CertificateTime { .. }), "{err}");
}

#[test]
fn every_flipped_bit_of_an_snp_reports_signed_part_and_signature_is_refused() {
    let Some(root) = vectors("every_flipped_bit_of_an_snp_reports_signed_part_and_signature_is_refused") else {
        return;
    };
    let ev = milan(&root);
    // Every bit of the signed body (0x000..0x2a0) and of the signature's
    // scalars; one rotating bit of each byte of the scalars' padding and the
    // reserved tail, which must be zero (one check covers them all).
    let all_bits =
        |byte: usize| byte < 0x2a0 || (0x2a0..0x2a0 + 48).contains(&byte) || (0x2e8..0x2e8 + 48).contains(&byte);
    for byte in 0..ev.report.len() {
        let bits: Vec<u8> = if all_bits(byte) { (0..8).collect() } else { vec![(byte % 8) as u8] };
        for bit in bits {
            let mut bad = ev.clone();
            bad.report[byte] ^= 1 << bit;
            assert!(
                check(&bad, at(SNP_NOW), &Policy::default()).is_err(),
                "bit {bit} of byte {byte:#x} went unnoticed"
            );
        }
    }
}

#[test]
fn snp_policy_rules_name_the_rule_and_both_values() {
    let Some(root) = vectors("snp_policy_rules_name_the_rule_and_both_values") else { return };
    let ev = milan(&root);
    let claims = check(&ev, at(SNP_NOW), &Policy::default()).unwrap();
    let Details::Snp(s) = &claims.details else { panic!() };
    let mut p = Policy::default();
    p.snp.measurement = vec!["ab".repeat(48)];
    let text = check(&ev, at(SNP_NOW), &p).unwrap_err().to_string();
    assert!(
        text.contains("snp.measurement") && text.contains(&s.measurement) && text.contains(&"ab".repeat(48)),
        "{text}"
    );
    let mut p = Policy::default();
    p.snp.measurement = vec![s.measurement.clone()];
    p.snp.chip_ids = vec![s.chip_id.clone()];
    check(&ev, at(SNP_NOW), &p).unwrap();
    p.snp.chip_ids = vec!["11".repeat(64)];
    assert!(check(&ev, at(SNP_NOW), &p).unwrap_err().to_string().contains("snp.chip_ids"));
    let mut p = Policy::default();
    p.snp.min_tcb.snp = s.reported_tcb.snp.saturating_add(1);
    assert!(check(&ev, at(SNP_NOW), &p).unwrap_err().to_string().contains("snp.min_tcb.snp"));
    let p = Policy { accept: vec![Kind::Tdx], ..Policy::default() };
    assert!(matches!(check(&ev, at(SNP_NOW), &p), Err(AttestError::KindNotAccepted(Kind::Snp, _))));
}

#[test]
fn trustee_vcek_and_vlek_reports_verify_and_the_invalid_vceks_are_refused() {
    // Trustee's VLEK is valid 2024-12-10 to 2025-12-10.
    const SNP_NOW: &str = "2025-06-01T00:00:00Z";
    let Some(root) = vectors("trustee_vcek_and_vlek_reports_verify_and_the_invalid_vceks_are_refused") else { return };
    let report = read(&root, "snp/trustee/test-report.bin");
    let ev = Evidence {
        kind: Kind::Snp,
        report: report.clone(),
        collateral: vec![read(&root, "snp/trustee/test-vcek.der")],
    };
    let claims = check(&ev, at(SNP_NOW), &Policy::default()).unwrap();
    eprintln!("{}", serde_json::to_string(&claims).unwrap());
    let vlek = Evidence {
        kind: Kind::Snp,
        report: read(&root, "snp/trustee/test-vlek-report.bin"),
        collateral: vec![read(&root, "snp/trustee/test-vlek.der")],
    };
    // Trustee's VLEK report was taken at VMPL 1 (under an SVSM).
    let err = check(&vlek, at(SNP_NOW), &Policy::default()).unwrap_err().to_string();
    assert!(err.contains("snp.max_vmpl") && err.contains("1"), "{err}");
    let mut p = Policy::default();
    p.snp.max_vmpl = 1;
    let claims = check(&vlek, at(SNP_NOW), &p).unwrap();
    let Details::Snp(s) = &claims.details else { panic!() };
    assert_eq!(s.signer, "vlek");
    p.snp.allow_vlek = false;
    assert!(check(&vlek, at(SNP_NOW), &p).unwrap_err().to_string().contains("snp.allow_vlek"));
    for bad in ["test-vcek-invalid-legacy.der", "test-vcek-invalid-new.der"] {
        let ev = Evidence {
            kind: Kind::Snp,
            report: report.clone(),
            collateral: vec![read(&root, &format!("snp/trustee/{bad}"))],
        };
        let err = check(&ev, at(SNP_NOW), &Policy::default()).unwrap_err();
        eprintln!("{bad}: {err}");
    }
    // Trustee's own negative cases: the signature, and the reported TCB against the VCEK.
    for offset in [42usize, 384] {
        let mut bad = ev.clone();
        bad.report[offset] = bad.report[offset].wrapping_add(1);
        assert!(check(&bad, at(SNP_NOW), &Policy::default()).is_err(), "byte {offset}");
    }
}

#[test]
fn snp_reports_of_the_wrong_size_or_garbage_get_typed_errors() {
    let Some(root) = vectors("snp_reports_of_the_wrong_size_or_garbage_get_typed_errors") else { return };
    let ev = milan(&root);
    for len in [0, 4, 0x2a0, 0x49f] {
        let mut bad = ev.clone();
        bad.report.truncate(len);
        assert!(matches!(check(&bad, at(SNP_NOW), &Policy::default()), Err(AttestError::Malformed { .. })));
    }
    let mut bad = ev.clone();
    bad.collateral = vec![b"garbage".to_vec()];
    assert!(matches!(check(&bad, at(SNP_NOW), &Policy::default()), Err(AttestError::Malformed { .. })));
    let mut bad = ev.clone();
    bad.report = vec![0xff; 0x4a0];
    assert!(check(&bad, at(SNP_NOW), &Policy::default()).is_err());
}
