//! Attestation end to end: provider processes answering
//! `/apocryph/attest/0.0.1`, publishers verifying before a secret leaves, the
//! secret reaching the container and nothing else; and `sealpod attest
//! verify` on the TDX and SNP vectors.

mod common;

use std::path::Path;

use common::*;

fn secret_pod(dir: &Path, secret_file: &Path) -> std::path::PathBuf {
    let image = format!("oci:{}:v1", dir.join("images/sample").display());
    let path = dir.join("secret-pod.yaml");
    std::fs::write(
        &path,
        format!(
            r#"containers:
  - name: web
    image: {image}
    args: [serve, --port, "8080", --text, "has a secret"]
    resources: {{cpu: 100m, memory: 32Mi}}
    volumeMounts:
      - {{name: token, mountPath: /run/secrets/token}}
volumes:
  - name: token
    secret: {{file: {}}}
"#,
            secret_file.display()
        ),
    )
    .unwrap();
    path
}

/// Every regular file under `dir` (not following links), read whole.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let Ok(t) = e.file_type() else { continue };
            if t.is_dir() {
                stack.push(e.path());
            } else if t.is_file() {
                if let Ok(bytes) = std::fs::read(e.path()) {
                    if bytes.windows(needle.len()).any(|w| w == needle) {
                        found.push(e.path().display().to_string());
                    }
                }
            }
        }
    }
    found
}

fn exec_cat(home: &Path, pod: &str, path: &str) -> String {
    let out = sealpod(home, &["exec", pod, "--container", "web", "--", "/app/sealpod-sample", "cat", path]);
    assert!(out.status.success(), "exec failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn secret_volume_goes_only_to_an_attested_provider_and_never_to_its_disk_or_logs() {
    let Some((tmp, provider, home)) = fixture_with("alice", &["--attestor", "insecure-dev"]) else { return };
    let dir = tmp.path();
    let port = provider.port();
    let secret = format!("s3cret-{}", hex::encode(rand_bytes()));
    let secret_file = dir.join("token.txt");
    std::fs::write(&secret_file, &secret).unwrap();
    let manifest = secret_pod(dir, &secret_file);

    // Without the opt-in, the dev attestor is refused and nothing is sent.
    let out = sealpod(&home, &["deploy", manifest.to_str().unwrap(), "--provider", &provider.addr]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--allow-insecure-dev") && err.contains("nothing secret was sent"), "{err}");
    let pods = std::fs::read_dir(dir.join("provider/pods")).map(|d| d.count()).unwrap_or(0);
    assert_eq!(pods, 0, "a pod was created for a refused attestation");

    // With it, the deploy attests, warns loudly, and the container reads the secret.
    let out = sealpod(
        &home,
        &["--json", "deploy", manifest.to_str().unwrap(), "--provider", &provider.addr, "--allow-insecure-dev"],
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("WARNING: INSECURE DEV"), "{out:?}");
    let deployed = ok_json(out);
    assert_eq!(deployed["attestation"]["claims"]["kind"], "insecure-dev", "{deployed}");
    let pod_id = deployed["status"]["podId"].as_str().unwrap().to_owned();

    // Its bytes are nowhere in the provider's state directory or its log.
    let leaks = files_containing(&dir.join("provider"), secret.as_bytes());
    assert!(leaks.is_empty(), "secret found in {leaks:?}");
    assert!(!provider_log(dir).contains(&secret), "secret in the provider's log");
    // The container reads it. (From here on the exec's output, which the
    // owner asked for, is kept with the pod like any command's output.)
    assert_eq!(exec_cat(&home, &pod_id, "/run/secrets/token"), secret);
    let tmpfs = std::path::PathBuf::from("/run/sealpod/secrets").join(&pod_id);
    assert!(tmpfs.is_dir(), "no secret tmpfs at {}", tmpfs.display());

    // A provider restart keeps the running pod's secret (the shim's tmpfs holds it).
    provider.kill_hard();
    let provider = Provider::start_with(dir, port, &["--attestor", "insecure-dev"]);
    assert_eq!(exec_cat(&home, &pod_id, "/run/secrets/token"), secret);
    let leaks = files_containing(&dir.join("provider"), secret.as_bytes());
    assert!(leaks.iter().all(|l| l.contains("/execs/")), "secret found in {leaks:?}");

    // Delete takes the tmpfs with it.
    ok_json(sealpod(&home, &["--json", "delete", &pod_id]));
    assert!(!tmpfs.exists(), "secret tmpfs left at {}", tmpfs.display());
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&pod_id), "mounts left: {mounts}");
    drop(provider);
}

fn rand_bytes() -> [u8; 16] {
    let mut b = [0u8; 16];
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    for (i, x) in b.iter_mut().enumerate() {
        *x = (t >> (i % 16 * 8)) as u8 ^ (std::process::id() as u8).wrapping_mul(i as u8 + 1);
    }
    b
}

#[test]
fn a_provider_without_an_attestor_gets_no_secret() {
    let Some((tmp, provider, home)) = fixture("alice") else { return };
    let dir = tmp.path();
    let secret_file = dir.join("token.txt");
    std::fs::write(&secret_file, "never-sent-7c1d").unwrap();
    let manifest = secret_pod(dir, &secret_file);
    let out =
        sealpod(&home, &["deploy", manifest.to_str().unwrap(), "--provider", &provider.addr, "--allow-insecure-dev"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot attest") && err.contains("nothing secret was sent"), "{err}");
    assert_eq!(std::fs::read_dir(dir.join("provider/pods")).map(|d| d.count()).unwrap_or(0), 0);
    assert!(files_containing(&dir.join("provider"), b"never-sent-7c1d").is_empty());
    // And `sealpod attest` says why.
    let out = sealpod(&home, &["attest", &provider.addr]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no TEE attestor"), "{out:?}");
}

#[test]
fn attest_command_prints_the_binding_and_refuses_dev_evidence_without_the_flag() {
    if !is_root() {
        eprintln!("skipped: running a provider needs root");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tmp.path().join("images")).unwrap();
    let provider = Provider::start_with(tmp.path(), free_port(), &["--attestor", "insecure-dev"]);
    let home = tmp.path().join("p");
    let out = sealpod(&home, &["attest", &provider.addr]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--allow-insecure-dev"), "{out:?}");
    let out = sealpod(&home, &["--json", "attest", &provider.addr, "--allow-insecure-dev"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("INSECURE DEV"));
    let v = ok_json(out);
    assert_eq!(v["kind"], "insecure-dev");
    assert_eq!(v["accepted"], true);
    assert_eq!(v["report_data"].as_str().unwrap().len(), 128);
    assert_eq!(v["nonce"].as_str().unwrap().len(), 64);
}

#[test]
fn evidence_replayed_by_another_provider_or_for_another_nonce_is_refused() {
    if !is_root() {
        eprintln!("skipped: running a provider needs root");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (da, db) = (tmp.path().join("a"), tmp.path().join("b"));
    std::fs::create_dir_all(da.join("images")).unwrap();
    std::fs::create_dir_all(db.join("images")).unwrap();
    let a = Provider::start_with(&da, free_port(), &["--attestor", "insecure-dev"]);
    let b = Provider::start_with(&db, free_port(), &["--attestor", "insecure-dev"]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        use sealpod_publisher::{verify_for, AttestOptions, Publisher};
        let publisher = Publisher::open(&tmp.path().join("pub"), vec![], false).await.unwrap();
        let options = AttestOptions { allow_insecure_dev: true, ..Default::default() };
        let addr_a: sealpod_net::Multiaddr = a.addr.parse().unwrap();
        let addr_b: sealpod_net::Multiaddr = b.addr.parse().unwrap();
        let peer_a = publisher.attest(&addr_a, &options).await.unwrap().provider.parse().unwrap();
        let peer_b = publisher.attest(&addr_b, &options).await.unwrap().provider.parse().unwrap();
        let nonce = [7u8; 32];
        let captured = publisher.evidence(peer_a, &nonce).await.unwrap();
        let now = std::time::SystemTime::now();
        verify_for(peer_a, &nonce, &captured, &options, now).expect("A's own answer verifies");
        // B hands over A's evidence for the same nonce: bound to A's key, refused.
        let err = verify_for(peer_b, &nonce, &captured, &options, now).unwrap_err();
        assert!(err.to_string().contains("binding") || err.to_string().contains("did not sign"), "{err}");
        // A's old answer for a new nonce: refused.
        let err = verify_for(peer_a, &[8u8; 32], &captured, &options, now).unwrap_err();
        assert!(err.to_string().contains("binding"), "{err}");
        // Without the opt-in the dev kind is refused outright.
        let err = verify_for(peer_a, &nonce, &captured, &AttestOptions::default(), now).unwrap_err();
        assert!(err.to_string().contains("--allow-insecure-dev"), "{err}");
    });
}

// ---- offline verification of the vectors ----

fn vectors() -> Option<std::path::PathBuf> {
    match std::env::var_os("SEALPOD_TEST_VECTORS") {
        Some(v) => Some(v.into()),
        None => {
            eprintln!("skipped: SEALPOD_TEST_VECTORS is not set");
            None
        }
    }
}

#[test]
fn attest_verify_accepts_the_tdx_vector_in_its_window_and_refuses_it_after() {
    let Some(v) = vectors() else { return };
    let home = tempfile::tempdir().unwrap();
    let quote = v.join("tdx/tdx_quote");
    let coll = v.join("tdx/tdx_quote_collateral.json");
    let args = |at: &str| {
        vec![
            "--json".to_string(),
            "attest".into(),
            "verify".into(),
            "--kind".into(),
            "tdx".into(),
            "--evidence".into(),
            quote.display().to_string(),
            "--collateral".into(),
            coll.display().to_string(),
            "--at".into(),
            at.into(),
        ]
    };
    let a = args("2025-07-01T00:00:00Z");
    let out = sealpod(home.path(), &a.iter().map(String::as_str).collect::<Vec<_>>());
    let claims = ok_json(out);
    assert_eq!(claims["kind"], "tdx");
    assert_eq!(claims["mr_td"].as_str().unwrap().len(), 96);
    assert_eq!(claims["tcb_status"], "UpToDate");
    // The right report data passes, any other fails.
    let rd = claims["report_data"].as_str().unwrap().to_owned();
    let mut with_rd = a.clone();
    with_rd.extend(["--report-data".to_string(), rd]);
    assert!(sealpod(home.path(), &with_rd.iter().map(String::as_str).collect::<Vec<_>>()).status.success());
    let mut wrong = a.clone();
    wrong.extend(["--report-data".to_string(), "00".repeat(64)]);
    let out = sealpod(home.path(), &wrong.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("binding"), "{out:?}");

    let late = args("2025-08-01T00:00:00Z");
    let out = sealpod(home.path(), &late.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(!out.status.success(), "accepted after nextUpdate");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["accepted"], false);
}

/// `sealpod attest verify` of the Milan report with its VCEK and the chain `chain`.
fn snp_verify(home: &Path, v: &Path, chain: &str, extra: &[&str]) -> std::process::Output {
    let (report, vcek, chain) =
        (v.join("snp/report_milan.hex"), v.join("snp/vcek_milan.der"), v.join("snp").join(chain));
    let mut args = vec!["attest", "verify", "--kind", "snp", "--evidence", report.to_str().unwrap()];
    args.extend(["--collateral", vcek.to_str().unwrap(), "--collateral", chain.to_str().unwrap()]);
    args.extend(extra);
    sealpod(home, &args)
}

#[test]
fn attest_verify_accepts_the_snp_vector_with_its_chain_in_pem() {
    let Some(v) = vectors() else { return };
    let home = tempfile::tempdir().unwrap();
    let out = snp_verify(home.path(), &v, "cert_chain_milan", &["--json", "--at", "2026-01-01T00:00:00Z"]);
    let claims = ok_json(out);
    assert_eq!(claims["kind"], "snp");
    assert_eq!(claims["measurement"].as_str().unwrap().len(), 96);
    // The Turin chain is another root: refused, with a non-zero exit.
    let out = snp_verify(home.path(), &v, "cert_chain_turin", &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("refused"), "{out:?}");
}

#[test]
fn attest_verify_reports_the_sgx_vectors_status_and_a_policy_can_refuse_it() {
    let Some(v) = vectors() else { return };
    let home = tempfile::tempdir().unwrap();
    let quote = v.join("tdx/sgx_quote");
    let coll = v.join("tdx/sgx_quote_collateral.json");
    let base = [
        "--json",
        "attest",
        "verify",
        "--kind",
        "sgx",
        "--evidence",
        quote.to_str().unwrap(),
        "--collateral",
        coll.to_str().unwrap(),
        "--at",
        "2025-07-01T00:00:00Z",
    ];
    let claims = ok_json(sealpod(home.path(), &base));
    assert_eq!(claims["tcb_status"], "ConfigurationAndSWHardeningNeeded");
    let advisories = claims["advisory_ids"].to_string();
    assert!(advisories.contains("INTEL-SA-00289") && advisories.contains("INTEL-SA-00615"), "{advisories}");
    // A policy that wants UpToDate refuses it, naming the rule.
    let policy = home.path().join("strict.toml");
    std::fs::write(&policy, "accept = [\"sgx\"]\n").unwrap();
    let mut strict = base.to_vec();
    let p = policy.to_str().unwrap();
    strict.extend(["--policy", p]);
    let out = sealpod(home.path(), &strict);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("sgx.accepted_tcb_status"), "{out:?}");
}
