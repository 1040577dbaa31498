//! Verification time of one piece of evidence: a TDX quote with its DCAP
//! collateral, an SNP report with its VCEK and an NVIDIA Hopper GPU report
//! with its chain (the vectors of `$SEALPOD_TEST_VECTORS`), next to the
//! insecure dev statement (one Ed25519 signature) as the floor.

use std::time::{Duration, SystemTime};

use criterion::{criterion_group, criterion_main, Criterion};
use libp2p_identity::Keypair;
use sealpod_attest::nvidia::{verify_gpu_chain, verify_gpu_report, GpuPolicy};
use sealpod_attest::{report_data, verify, Evidence, Expectation, Kind, Policy, Roots};

fn at(unix: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(unix)
}

fn bench(c: &mut Criterion) {
    let policy = Policy::default();
    let roots = Roots::pinned();
    let key = Keypair::generate_ed25519();
    let public = key.public().encode_protobuf();
    let data = report_data(&public, &[1; 32]);
    let dev = sealpod_attest::dev::attest(&key, &data).unwrap();
    let expect = Expectation {
        report_data: Some(&data),
        provider_public_key: Some(&public),
        now: SystemTime::now(),
        allow_insecure_dev: true,
    };
    c.bench_function("verify insecure-dev statement", |b| b.iter(|| verify(&dev, &expect, &policy, &roots).unwrap()));

    let Some(v) = std::env::var_os("SEALPOD_TEST_VECTORS").map(std::path::PathBuf::from) else {
        eprintln!("SEALPOD_TEST_VECTORS unset: TDX, SNP and GPU verification not measured");
        return;
    };
    let tdx = Evidence {
        kind: Kind::Tdx,
        report: std::fs::read(v.join("tdx/tdx_quote")).unwrap(),
        collateral: vec![std::fs::read(v.join("tdx/tdx_quote_collateral.json")).unwrap()],
    };
    // 2025-07-01, inside the collateral's window.
    let offline = |now| Expectation { report_data: None, provider_public_key: None, now, allow_insecure_dev: false };
    let tdx_expect = offline(at(1_751_328_000));
    c.bench_function("verify TDX quote v4 + DCAP collateral", |b| {
        b.iter(|| verify(&tdx, &tdx_expect, &policy, &roots).unwrap())
    });
    let hex_text = std::fs::read_to_string(v.join("snp/report_milan.hex")).unwrap();
    let snp = Evidence {
        kind: Kind::Snp,
        report: hex::decode(hex_text.split_whitespace().collect::<String>()).unwrap(),
        collateral: vec![std::fs::read(v.join("snp/vcek_milan.der")).unwrap()],
    };
    // 2026-01-01, inside the VCEK's validity.
    let snp_expect = offline(at(1_767_225_600));
    c.bench_function("verify SNP report + VCEK (Milan)", |b| {
        b.iter(|| verify(&snp, &snp_expect, &policy, &roots).unwrap())
    });

    let gpu_report = std::fs::read_to_string(v.join("nvidia/hopperAttestationReport.txt")).unwrap();
    let gpu_report = hex::decode(gpu_report.trim()).unwrap();
    let gpu_chain = std::fs::read(v.join("nvidia/hopper_cert_chain_case1.txt")).unwrap();
    let gpu_nonce: [u8; 32] =
        hex::decode("931d8dd0add203ac3d8b4fbde75e115278eefcdceac5b87671a748f32364dfcb").unwrap().try_into().unwrap();
    let gpu_policy = GpuPolicy::default();
    let gpu_now = at(1_751_328_000);
    c.bench_function("verify NVIDIA Hopper GPU report + chain", |b| {
        b.iter(|| verify_gpu_report(&gpu_report, &gpu_chain, &gpu_nonce, gpu_now, &gpu_policy).unwrap())
    });
    let signer = verify_gpu_chain(&gpu_chain, gpu_now).unwrap();
    c.bench_function("verify NVIDIA Hopper GPU report (chain verified once)", |b| {
        b.iter(|| signer.verify_report(&gpu_report, &gpu_nonce, &gpu_policy).unwrap())
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
