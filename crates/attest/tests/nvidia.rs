//! The NVIDIA Hopper vectors of `$SEALPOD_TEST_VECTORS` (Confidential
//! Containers Trustee's test data) give the results PROVENANCE.md states,
//! and every other report, chain, nonce or time is refused with the check
//! that caught it. Without the variable these tests say so and pass.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use sealpod_attest::nvidia::{
    parse_cert_chain, parse_report, verify_gpu_chain, verify_gpu_report, GpuError, GpuPolicy, NVIDIA_DEVICE_ROOT_PEM,
};

/// The nonce the Hopper report answers.
const HOPPER_NONCE: &str = "931d8dd0add203ac3d8b4fbde75e115278eefcdceac5b87671a748f32364dfcb";
/// The report data of the CoCo capture: 48 bytes (a SHA-384 digest, as the
/// KBS protocol hashes its runtime data), of which the CoCo attester sends
/// the first 32 as the SPDM nonce (guest-components `NvAttester`; Trustee's
/// verifier truncates the same way).
const COCO_REPORT_DATA: &str =
    "87d8e24ab336adafe228d49e83d745f6dba4ae505372b6a5704820856b343fece279b616efefc2aae21da80cf5581250";
/// The FWID of the case1 signing certificate.
const HOPPER_FWID: &str =
    "f5c384aebb579217a2c66b17ed0f28e6a9b8d639041acd7b4721cec004f7275494ba94bb5cdfdb3055ee051762b1f75d";

fn vectors(test: &str) -> Option<PathBuf> {
    let Some(root) = std::env::var_os("SEALPOD_TEST_VECTORS") else {
        eprintln!("skipped {test}: SEALPOD_TEST_VECTORS is not set (it names the shared/vectors directory)");
        return None;
    };
    let root = PathBuf::from(root).join("nvidia");
    assert!(root.is_dir(), "SEALPOD_TEST_VECTORS lacks nvidia/");
    Some(root)
}

fn read(dir: &Path, name: &str) -> Vec<u8> {
    std::fs::read(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn read_hex(dir: &Path, name: &str) -> Vec<u8> {
    hex::decode(String::from_utf8(read(dir, name)).unwrap().trim()).unwrap()
}

fn nonce(hex_text: &str) -> [u8; 32] {
    hex::decode(hex_text).unwrap()[..32].try_into().unwrap()
}

/// 2025-07-01, inside every certificate's validity.
fn now() -> SystemTime {
    at(1_751_328_000)
}

fn at(unix: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(unix)
}

struct Vector {
    report: Vec<u8>,
    chain: Vec<u8>,
    nonce: [u8; 32],
}

fn hopper(dir: &Path) -> Vector {
    Vector {
        report: read_hex(dir, "hopperAttestationReport.txt"),
        chain: read(dir, "hopper_cert_chain_case1.txt"),
        nonce: nonce(HOPPER_NONCE),
    }
}

fn coco(dir: &Path) -> Vector {
    Vector {
        report: read_hex(dir, "hopper_coco_report1.txt"),
        chain: read(dir, "hopper_coco_certs1.txt"),
        nonce: nonce(COCO_REPORT_DATA),
    }
}

fn verify(v: &Vector, chain: &[u8], policy: &GpuPolicy) -> Result<sealpod_attest::nvidia::GpuClaims, GpuError> {
    verify_gpu_report(&v.report, chain, &v.nonce, now(), policy)
}

fn der_chain(pem_text: &[u8]) -> Vec<u8> {
    pem::parse_many(pem_text).unwrap().iter().flat_map(|p| p.contents().to_vec()).collect()
}

/// The claims file's measurements, by index.
fn listed_measurements(dir: &Path) -> (BTreeMap<u8, Vec<u8>>, serde_json::Value) {
    let json: serde_json::Value = serde_json::from_slice(&read(dir, "hopperAttestationReport-claims.txt")).unwrap();
    let measurements = json["measurements"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.parse().unwrap(), hex::decode(v.as_str().unwrap()).unwrap()))
        .collect();
    (measurements, json)
}

#[test]
fn hopper_report_verifies_with_its_nonce_and_chain_yielding_the_listed_measurements_and_fwid() {
    let Some(dir) =
        vectors("hopper_report_verifies_with_its_nonce_and_chain_yielding_the_listed_measurements_and_fwid")
    else {
        return;
    };
    let v = hopper(&dir);
    let claims = verify(&v, &v.chain, &GpuPolicy::default()).unwrap();
    let (listed, json) = listed_measurements(&dir);
    assert_eq!(listed.len(), 64);
    assert_eq!(claims.measurements, listed);
    assert_eq!(hex::encode(&claims.fwid), HOPPER_FWID);
    assert_eq!(claims.spdm_version, 0x11);
    assert!(claims.signer.contains("GH100 A01 GSP FMC LF"), "{}", claims.signer);

    // Every text field of the claims file's opaque data ("config"), as NVIDIA names them.
    let config = json["config"].as_object().unwrap();
    for (name, value) in config {
        if let Some(text) = value.as_str() {
            assert_eq!(claims.opaque.get(name).map(String::as_str), Some(text), "opaque field {name}");
        }
    }
    assert_eq!(claims.driver_version.as_deref(), Some("550.90.07"));
    assert_eq!(claims.vbios_version.as_deref(), Some("96.00.9f.00.01"));

    let out = serde_json::to_value(&claims).unwrap();
    assert_eq!(out["fwid"], HOPPER_FWID);
    assert_eq!(out["measurements"]["2"], json["measurements"]["2"]);
}

#[test]
fn hopper_report_verifies_against_a_policy_listing_every_measurement() {
    let Some(dir) = vectors("hopper_report_verifies_against_a_policy_listing_every_measurement") else { return };
    let v = hopper(&dir);
    let policy = GpuPolicy { measurements: listed_measurements(&dir).0 };
    verify(&v, &v.chain, &policy).unwrap();
}

#[test]
fn coco_report_verifies_with_the_first_32_bytes_of_its_report_data_as_nonce() {
    let Some(dir) = vectors("coco_report_verifies_with_the_first_32_bytes_of_its_report_data_as_nonce") else {
        return;
    };
    let v = coco(&dir);
    let claims = verify(&v, &v.chain, &GpuPolicy::default()).unwrap();
    assert_eq!(claims.measurements.len(), 64);
    assert_eq!(claims.driver_version.as_deref(), Some("580.95.05"));
    assert_eq!(claims.opaque.get("fwid").map(String::as_str), Some(hex::encode(&claims.fwid).as_str()));
    // The last 16 bytes of the report data are not in the evidence at all.
    let mut tail_as_nonce = [0u8; 32];
    tail_as_nonce.copy_from_slice(&hex::decode(COCO_REPORT_DATA).unwrap()[16..]);
    let err = verify_gpu_report(&v.report, &v.chain, &tail_as_nonce, now(), &GpuPolicy::default()).unwrap_err();
    assert!(matches!(err, GpuError::Nonce { .. }), "{err}");
}

#[test]
fn chain_as_concatenated_der_verifies_like_pem() {
    let Some(dir) = vectors("chain_as_concatenated_der_verifies_like_pem") else { return };
    let v = hopper(&dir);
    let claims = verify(&v, &der_chain(&v.chain), &GpuPolicy::default()).unwrap();
    assert_eq!(hex::encode(&claims.fwid), HOPPER_FWID);
}

#[test]
fn chain_of_only_the_root_is_refused() {
    let Some(dir) = vectors("chain_of_only_the_root_is_refused") else { return };
    let v = hopper(&dir);
    let err = verify(&v, &read(&dir, "hopper_cert_chain_case2.txt"), &GpuPolicy::default()).unwrap_err();
    assert!(matches!(err, GpuError::ChainTooShort { found: 1 }), "{err}");
}

#[test]
fn chain_missing_an_intermediate_is_refused() {
    let Some(dir) = vectors("chain_missing_an_intermediate_is_refused") else { return };
    let v = hopper(&dir);
    let err = verify(&v, &read(&dir, "hopper_cert_chain_case3.txt"), &GpuPolicy::default()).unwrap_err();
    assert!(matches!(err, GpuError::BrokenLink { index: 1, .. }), "{err}");
    assert!(err.to_string().contains("GSP BROM") && err.to_string().contains("GH100 Identity"), "{err}");
}

#[test]
fn chain_missing_the_signing_certificate_is_refused_for_want_of_a_fwid() {
    let Some(dir) = vectors("chain_missing_the_signing_certificate_is_refused_for_want_of_a_fwid") else { return };
    let v = hopper(&dir);
    let err = verify(&v, &read(&dir, "hopper_cert_chain_case4.txt"), &GpuPolicy::default()).unwrap_err();
    assert!(matches!(err, GpuError::NoFwid { .. }), "{err}");
}

#[test]
fn chain_ending_at_another_root_or_out_of_order_is_refused() {
    let Some(dir) = vectors("chain_ending_at_another_root_or_out_of_order_is_refused") else { return };
    let v = hopper(&dir);
    let mut certs: Vec<Vec<u8>> = pem::parse_many(&v.chain).unwrap().iter().map(|p| p.contents().to_vec()).collect();
    certs.reverse();
    let err = verify(&v, &certs.concat(), &GpuPolicy::default()).unwrap_err();
    assert!(matches!(err, GpuError::UntrustedRoot { .. }), "{err}");
    certs.reverse();
    *certs.last_mut().unwrap() = sealpod_attest::INTEL_ROOT_CA_DER.to_vec();
    let err = verify(&v, &certs.concat(), &GpuPolicy::default()).unwrap_err();
    assert!(matches!(err, GpuError::UntrustedRoot { .. }), "{err}");
}

#[test]
fn report_with_another_gpus_chain_is_refused() {
    let Some(dir) = vectors("report_with_another_gpus_chain_is_refused") else { return };
    let v = hopper(&dir);
    let err = verify(&v, &coco(&dir).chain, &GpuPolicy::default()).unwrap_err();
    assert!(matches!(err, GpuError::FwidMismatch { .. }), "{err}");
}

#[test]
fn wrong_nonce_is_refused() {
    let Some(dir) = vectors("wrong_nonce_is_refused") else { return };
    let mut v = hopper(&dir);
    v.nonce[31] ^= 1;
    let err = verify(&v, &v.chain, &GpuPolicy::default()).unwrap_err();
    assert!(matches!(err, GpuError::Nonce { .. }), "{err}");
    assert!(err.to_string().contains(HOPPER_NONCE), "{err}");
}

#[test]
fn measurement_differing_from_the_policy_is_refused_naming_its_index() {
    let Some(dir) = vectors("measurement_differing_from_the_policy_is_refused_naming_its_index") else { return };
    let v = hopper(&dir);
    let mut policy = GpuPolicy { measurements: listed_measurements(&dir).0 };
    policy.measurements.get_mut(&12).unwrap()[0] ^= 0x80;
    let err = verify(&v, &v.chain, &policy).unwrap_err();
    assert!(matches!(err, GpuError::MeasurementMismatch { index: 12, .. }), "{err}");
    assert!(err.to_string().starts_with("policy measurement 12:"), "{err}");

    let policy = GpuPolicy { measurements: BTreeMap::from([(65, vec![0; 48])]) };
    let err = verify(&v, &v.chain, &policy).unwrap_err();
    assert!(matches!(err, GpuError::MeasurementMissing { index: 65, .. }), "{err}");
}

#[test]
fn every_flipped_bit_in_the_signed_part_or_the_signature_is_refused() {
    let Some(dir) = vectors("every_flipped_bit_in_the_signed_part_or_the_signature_is_refused") else { return };
    let v = hopper(&dir);
    let signer = verify_gpu_chain(&v.chain, now()).unwrap();
    let policy = GpuPolicy::default();
    signer.verify_report(&v.report, &v.nonce, &policy).unwrap();
    let signed_len = parse_report(&v.report).unwrap().signed_len;
    assert_eq!(signed_len + 96, v.report.len());

    // The chain is verified once; each flipped report costs one ECDSA
    // verification, spread over the cores.
    let bits = v.report.len() * 8;
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let accepted: Vec<usize> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let (signer, v, policy) = (&signer, &v, &policy);
                s.spawn(move || {
                    let mut report = v.report.clone();
                    let mut accepted = Vec::new();
                    for bit in (t..bits).step_by(threads) {
                        report[bit / 8] ^= 1 << (bit % 8);
                        if signer.verify_report(&report, &v.nonce, policy).is_ok() {
                            accepted.push(bit);
                        }
                        report[bit / 8] ^= 1 << (bit % 8);
                    }
                    accepted
                })
            })
            .collect();
        workers.into_iter().flat_map(|w| w.join().unwrap()).collect()
    });
    assert!(accepted.is_empty(), "flipped bits accepted: {accepted:?}");
}

#[test]
fn bytes_after_the_signature_are_refused_unless_a_single_zero() {
    let Some(dir) = vectors("bytes_after_the_signature_are_refused_unless_a_single_zero") else { return };
    let v = hopper(&dir);
    for (tail, ok) in [(&[0u8][..], true), (&[0, 0][..], false), (&[1][..], false), (&[0x80][..], false)] {
        let report = [&v.report[..], tail].concat();
        let result = verify_gpu_report(&report, &v.chain, &v.nonce, now(), &GpuPolicy::default());
        assert_eq!(result.is_ok(), ok, "tail {tail:?}: {result:?}");
        if !ok {
            assert!(matches!(result, Err(GpuError::Malformed { .. })));
        }
    }
}

#[test]
fn verification_time_outside_the_chains_validity_is_refused() {
    let Some(dir) = vectors("verification_time_outside_the_chains_validity_is_refused") else { return };
    let v = hopper(&dir);
    // 2021-06-01: before the provisioner CA (2022-03-01) and the root (2021-11-05).
    // 10000-01-01: after every certificate's 9999-12-31.
    for t in [1_622_505_600, 253_402_300_800] {
        let err = verify_gpu_report(&v.report, &v.chain, &v.nonce, at(t), &GpuPolicy::default()).unwrap_err();
        assert!(matches!(err, GpuError::CertificateTime { .. }), "{err}");
    }
}

#[test]
fn truncated_or_garbage_input_gives_errors_not_panics() {
    let Some(dir) = vectors("truncated_or_garbage_input_gives_errors_not_panics") else { return };
    let v = hopper(&dir);
    let policy = GpuPolicy::default();
    for len in 0..v.report.len() {
        let err = verify_gpu_report(&v.report[..len], &v.chain, &v.nonce, now(), &policy).unwrap_err();
        assert!(matches!(err, GpuError::Malformed { .. }), "truncated to {len}: {err}");
    }
    // Cut inside the second certificate: refused as cut, not as a short chain.
    let err = verify(&v, &v.chain[..2000], &policy).unwrap_err();
    assert!(matches!(err, GpuError::Malformed { what: "certificate chain PEM", .. }), "{err}");
    let der = der_chain(&v.chain);
    for chain in [&v.chain, &der] {
        for len in 0..chain.len() {
            assert!(verify(&v, &chain[..len], &policy).is_err(), "chain truncated to {len} accepted");
        }
    }

    // Lengths that claim more than there is.
    let mut huge = v.report.clone();
    huge[37 + 5..37 + 8].copy_from_slice(&[0xff, 0xff, 0xff]);
    assert!(matches!(parse_report(&huge), Err(GpuError::Malformed { .. })));
    let oversized = vec![0u8; sealpod_attest::nvidia::MAX_REPORT_LEN + 1];
    assert!(matches!(parse_report(&oversized), Err(GpuError::TooLarge { .. })));
    let oversized = vec![b'-'; sealpod_attest::nvidia::MAX_CHAIN_LEN + 1];
    assert!(matches!(parse_cert_chain(&oversized), Err(GpuError::TooLarge { .. })));

    // Pseudo-random bytes, alone and behind a valid request header.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state as u8
    };
    for len in [0, 1, 36, 37, 45, 200, 4117, 9000] {
        let garbage: Vec<u8> = (0..len).map(|_| next()).collect();
        assert!(parse_report(&garbage).is_err());
        assert!(verify(&v, &garbage, &policy).is_err());
        let behind_header = [&v.report[..45], &garbage[..]].concat();
        assert!(parse_report(&behind_header).is_err());
    }
}

#[test]
fn pinned_root_is_the_vectors_nvidia_device_root() {
    let Some(dir) = vectors("pinned_root_is_the_vectors_nvidia_device_root") else { return };
    let pinned = pem::parse(NVIDIA_DEVICE_ROOT_PEM).unwrap();
    let vector = pem::parse(read(&dir, "nvidia_device_root.pem")).unwrap();
    assert_eq!(pinned.contents(), vector.contents());
}
