//! Producing evidence: the configfs-tsm file protocol against a directory
//! that behaves like configfs (a thread plays the kernel), and the insecure
//! dev attestor's binding.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use libp2p_identity::Keypair;
use sealpod_attest::tsm::{Attestor, TsmAttestor};
use sealpod_attest::{report_data, verify, AttestError, Expectation, Kind, Policy, Roots};

/// Plays the kernel's part for every entry made under `root`: fills
/// `provider` and `generation` at once, and answers a written `inblob` with
/// an `outblob` of `prefix || inblob`, bumping `generation` by `bump`.
fn fake_configfs(root: &Path, provider: &'static str, bump: u64, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    fake_configfs_answering(root, provider, bump, stop, None)
}

/// As [`fake_configfs`], answering with `fixed` instead when given.
fn fake_configfs_answering(
    root: &Path,
    provider: &'static str,
    bump: u64,
    stop: Arc<AtomicBool>,
    fixed: Option<Vec<u8>>,
) -> std::thread::JoinHandle<()> {
    let root = root.to_owned();
    std::thread::spawn(move || {
        let mut seen = std::collections::HashSet::<PathBuf>::new();
        let mut answered = std::collections::HashSet::<PathBuf>::new();
        while !stop.load(Ordering::Relaxed) {
            for e in std::fs::read_dir(&root).unwrap().flatten() {
                let d = e.path();
                if seen.insert(d.clone()) {
                    std::fs::write(d.join("provider"), format!("{provider}\n")).unwrap();
                    std::fs::write(d.join("generation"), "0\n").unwrap();
                }
                if !answered.contains(&d) {
                    if let Ok(inblob) = std::fs::read(d.join("inblob")) {
                        if inblob.len() == 64 {
                            answered.insert(d.clone());
                            std::fs::write(d.join("generation"), format!("{bump}\n")).unwrap();
                            let out = fixed.clone().unwrap_or_else(|| {
                                let mut out = b"QUOTE:".to_vec();
                                out.extend(&inblob);
                                out
                            });
                            std::fs::write(d.join("outblob"), out).unwrap();
                        }
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    })
}

#[test]
fn tsm_report_carries_the_binding_and_the_entry_is_removed() {
    let root = tempfile::tempdir().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let kernel = fake_configfs(root.path(), "tdx_guest", 1, stop.clone());
    let attestor = TsmAttestor::open(root.path(), None).unwrap();
    let data = report_data(b"key", b"nonce");
    let evidence = attestor.evidence(&data).unwrap();
    assert_eq!(evidence.kind, Kind::Tdx);
    assert_eq!(&evidence.report[..6], b"QUOTE:");
    assert_eq!(&evidence.report[6..], &data[..]);
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 0, "report entries left behind");
    stop.store(true, Ordering::Relaxed);
    kernel.join().unwrap();
}

#[test]
fn tsm_report_raced_by_another_writer_is_discarded() {
    let root = tempfile::tempdir().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    // Generation jumps by two: someone else wrote between our write and read.
    let kernel = fake_configfs(root.path(), "sev_guest", 2, stop.clone());
    let attestor = TsmAttestor::open(root.path(), None).unwrap();
    let err = attestor.evidence(&[1; 64]).expect_err("raced report accepted");
    assert!(err.to_string().contains("raced"), "{err}");
    stop.store(true, Ordering::Relaxed);
    kernel.join().unwrap();
}

#[test]
fn tsm_attestor_refuses_another_tee_than_asked_and_a_missing_root() {
    let root = tempfile::tempdir().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let kernel = fake_configfs(root.path(), "sev_guest", 1, stop.clone());
    let key = Keypair::generate_ed25519();
    let err = Attestor::configure("tdx", root.path(), None, &key).expect_err("SNP host taken for TDX");
    assert!(matches!(err, AttestError::WrongKind { .. }), "{err}");
    assert_eq!(Attestor::configure("auto", root.path(), None, &key).unwrap().kind(), Some(Kind::Snp));
    stop.store(true, Ordering::Relaxed);
    kernel.join().unwrap();
    let missing = root.path().join("absent");
    assert_eq!(Attestor::configure("auto", &missing, None, &key).unwrap().kind(), None);
    assert!(Attestor::configure("snp", &missing, None, &key).is_err());
    assert!(Attestor::configure("sgx-please", &missing, None, &key).is_err());
}

fn dev_expect<'a>(data: &'a [u8; 64], key: &'a [u8], allow: bool) -> Expectation<'a> {
    Expectation {
        report_data: Some(data),
        provider_public_key: Some(key),
        now: SystemTime::now(),
        allow_insecure_dev: allow,
    }
}

#[test]
fn dev_evidence_verifies_only_with_opt_in_for_its_key_and_nonce() {
    let key = Keypair::generate_ed25519();
    let public = key.public().encode_protobuf();
    let data = report_data(&public, &[9; 32]);
    let evidence =
        Attestor::configure("insecure-dev", Path::new("/nonexistent"), None, &key).unwrap().evidence(&data).unwrap();
    let claims = verify(&evidence, &dev_expect(&data, &public, true), &Policy::default(), &Roots::pinned()).unwrap();
    assert_eq!(claims.kind, Kind::InsecureDev);
    assert!(claims.notes.iter().any(|n| n.contains("INSECURE")));
    let err = verify(&evidence, &dev_expect(&data, &public, false), &Policy::default(), &Roots::pinned()).unwrap_err();
    assert!(matches!(err, AttestError::InsecureDevRefused));
    // Another key (a relaying provider) or another nonce: refused.
    let other = Keypair::generate_ed25519().public().encode_protobuf();
    let other_data = report_data(&other, &[9; 32]);
    assert!(verify(&evidence, &dev_expect(&other_data, &other, true), &Policy::default(), &Roots::pinned()).is_err());
    let new_nonce = report_data(&public, &[10; 32]);
    let err =
        verify(&evidence, &dev_expect(&new_nonce, &public, true), &Policy::default(), &Roots::pinned()).unwrap_err();
    assert!(matches!(err, AttestError::Binding { .. }), "{err}");
    // A flipped bit anywhere in the statement or signature: refused.
    for i in 0..evidence.report.len() {
        let mut bad = evidence.clone();
        bad.report[i] ^= 1;
        assert!(verify(&bad, &dev_expect(&data, &public, true), &Policy::default(), &Roots::pinned()).is_err());
    }
    for i in 0..evidence.collateral[0].len() {
        let mut bad = evidence.clone();
        bad.collateral[0][i] ^= 0x80;
        assert!(verify(&bad, &dev_expect(&data, &public, true), &Policy::default(), &Roots::pinned()).is_err());
    }
}

#[test]
fn binding_is_sha512_of_domain_key_and_nonce() {
    use sha2::Digest;
    let mut h = sha2::Sha512::new();
    h.update(b"apocryph-attest-v1");
    h.update(b"KEY");
    h.update(b"NONCE");
    let want: [u8; 64] = h.finalize().into();
    assert_eq!(report_data(b"KEY", b"NONCE"), want);
}

#[test]
fn snp_certificate_table_is_split_into_vek_ask_ark() {
    // Three entries (VCEK, ASK, ARK) and the terminator, data after.
    let guids = [
        "63da758d-e664-4564-adc5-f4b93be8accd",
        "4ab7b379-bbac-4fe4-a02f-05aef327c782",
        "c0b406a4-a803-4952-9743-3fb6014cd0ae",
    ];
    let mut table = Vec::new();
    let data_at = 24 * 4;
    for (i, g) in guids.iter().enumerate() {
        let b = hex::decode(g.replace('-', "")).unwrap();
        let mut le: Vec<u8> = Vec::new();
        le.extend(b[0..4].iter().rev());
        le.extend(b[4..6].iter().rev());
        le.extend(b[6..8].iter().rev());
        le.extend(&b[8..16]);
        table.extend(le);
        table.extend(((data_at + i * 4) as u32).to_le_bytes());
        table.extend(4u32.to_le_bytes());
    }
    table.extend([0u8; 24]);
    table.extend(b"VCEKASK_ARK_");
    let certs = sealpod_attest::snp::certs_from_table(&table).unwrap();
    assert_eq!(certs, vec![b"VCEK".to_vec(), b"ASK_".to_vec(), b"ARK_".to_vec()]);
    assert!(sealpod_attest::snp::certs_from_table(&table[..30]).is_err());
    let mut outside = table.clone();
    outside[16..20].copy_from_slice(&10_000u32.to_le_bytes());
    assert!(sealpod_attest::snp::certs_from_table(&outside).is_err());
}

#[test]
fn tdx_collateral_comes_from_the_pccs_cache_directory_by_fmspc() {
    let Some(v) = std::env::var_os("SEALPOD_TEST_VECTORS").map(PathBuf::from) else {
        eprintln!("skipped: SEALPOD_TEST_VECTORS is not set");
        return;
    };
    let quote = std::fs::read(v.join("tdx/tdx_quote")).unwrap();
    let collateral = std::fs::read(v.join("tdx/tdx_quote_collateral.json")).unwrap();
    let fmspc =
        hex::encode_upper(dcap_qvl::intel::quote_fmspc(&dcap_qvl::quote::Quote::parse(&quote).unwrap()).unwrap());
    let root = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    std::fs::write(cache.path().join(format!("{fmspc}.json")), &collateral).unwrap();
    std::fs::write(cache.path().join("00906EA10000.json"), b"{}").unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let kernel = fake_configfs_answering(root.path(), "tdx_guest", 1, stop.clone(), Some(quote.clone()));
    let attestor = TsmAttestor::open(root.path(), Some(cache.path())).unwrap();
    let evidence = attestor.evidence(&[0; 64]).unwrap();
    assert_eq!(evidence.collateral, vec![collateral]);
    // The vector verifies with what the provider shipped, inside its window.
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_751_328_000);
    let expect = Expectation { report_data: None, provider_public_key: None, now, allow_insecure_dev: false };
    verify(&evidence, &expect, &Policy::default(), &Roots::pinned()).unwrap();
    // No file for this platform: the error names the FMSPC.
    std::fs::remove_file(cache.path().join(format!("{fmspc}.json"))).unwrap();
    let err = attestor.evidence(&[0; 64]).expect_err("quote without its collateral");
    assert!(err.to_string().contains(&fmspc) || err.to_string().contains("DCAP collateral"), "{err}");
    stop.store(true, Ordering::Relaxed);
    kernel.join().unwrap();
}
