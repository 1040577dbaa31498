//! Signed payload manifests end to end: certificates made with the `openssl`
//! CLI, a provider that trusts their CA, a pod held to what its manifest
//! allows (exec commands and outbound URLs). Needs root and openssl.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{is_root, ok_json as json, sealpod, Provider, SAMPLE, SEALPOD};
use serde_json::Value;

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("spawn");
    assert!(out.status.success(), "{:?} failed: {}", cmd, String::from_utf8_lossy(&out.stderr));
    out
}

fn openssl(dir: &Path, args: &[&str]) {
    run(Command::new("openssl").current_dir(dir).args(args));
}

/// An HTTP server on `ip` that answers every request with `text`.
fn outside_server(ip: &str, text: &'static str) -> u16 {
    let l = TcpListener::bind((ip, 0)).unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = write!(s, "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}", text.len());
        }
    });
    port
}

fn make_ca(dir: &Path, name: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.pem"),
            "-days",
            "30",
            "-subj",
            &format!("/CN={name}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
}

fn make_author(dir: &Path, name: &str, ca: &str) {
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            &format!("/CN={name}"),
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-out",
            &format!("{name}.pem"),
            "-days",
            "30",
        ],
    );
}

#[test]
fn signed_manifest_limits_exec_and_outbound_urls() {
    if !is_root() || Command::new("openssl").arg("version").output().is_err() {
        eprintln!("skipped: needs root and openssl");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let state = dir.join("provider");
    let state_arg = state.to_str().unwrap();

    // The image, and the digest the manifest must name.
    let built = json(
        Command::new(SEALPOD)
            .args(["--json", "image", "from-binary", SAMPLE, "--tag", "v1", "--out"])
            .arg(dir.join("images/sample"))
            .output()
            .unwrap(),
    );
    let digest = built["digest"].as_str().unwrap().to_owned();

    // Certificates, the seed's way.
    make_ca(dir, "ca");
    make_author(dir, "author", "ca");
    make_ca(dir, "other-ca");
    make_author(dir, "stranger", "other-ca");

    // Two servers "outside" the provider: one allowed, one not.
    let allowed_port = outside_server("127.0.0.2", "outside says hi");
    let other_port = outside_server("127.0.0.3", "you should not see this");

    let manifest = serde_json::json!({
        "version": "0.1.0",
        "createdAt": "2025-01-01T00:00:00Z",
        "expiresAt": "2100-01-01T00:00:00Z",
        "metadata": {"name": "e2e", "description": "sealpod payload test", "version": "0.1.0"},
        "payload": [{"platform": {"arch": "x86_64", "os": "linux"}, "urls": ["http://example.invalid/sample"], "hash": digest}],
        "compManifest": {
            "version": "0.1.0",
            "script": {"commands": ["run /app/sealpod-sample fetch .*"], "match": "regex"},
            "net": {"inet": {"out": {"protocols": ["http"], "urls": [format!("http://127.0.0.2:{allowed_port}")]}}}
        }
    });
    std::fs::write(dir.join("manifest.json"), serde_json::to_vec_pretty(&manifest).unwrap()).unwrap();
    let b64 = run(Command::new("base64").args(["-w0"]).arg(dir.join("manifest.json"))).stdout;
    std::fs::write(dir.join("manifest.b64"), &b64).unwrap();
    openssl(dir, &["dgst", "-sha256", "-sign", "author.key", "-out", "manifest.sig", "manifest.b64"]);
    openssl(dir, &["dgst", "-sha256", "-sign", "stranger.key", "-out", "stranger.sig", "manifest.b64"]);

    // The provider trusts `ca` and lets whitelisted hosts out.
    let home = dir.join("pub");
    json(sealpod(
        &home,
        &["--json", "keystore", "add", dir.join("ca.pem").to_str().unwrap(), "--state-dir", state_arg],
    ));
    json(sealpod(&home, &["--json", "whitelist", "add", "127.0.0.2", "--state-dir", state_arg]));
    json(sealpod(&home, &["--json", "rule", "set", "outbound", "enable", "--state-dir", state_arg]));
    json(sealpod(
        &home,
        &["--json", "rule", "set", "outbound", "everyone", "--mode", "whitelist", "--state-dir", state_arg],
    ));

    let port = common::free_port();
    let provider = Provider::start(dir, port);
    let addr = provider.addr.clone();

    let image = format!("oci:{}:v1", dir.join("images/sample").display());
    std::fs::write(
        dir.join("pod.yaml"),
        format!(
            "containers:\n  - name: app\n    image: {image}\n    args: [fetch, --url, \"http://127.0.0.2:{allowed_port}/\", --interval-ms, \"300\"]\n"
        ),
    )
    .unwrap();
    let deploy = |sig: &str, cert: &str| {
        sealpod(
            &home,
            &[
                "--json",
                "deploy",
                dir.join("pod.yaml").to_str().unwrap(),
                "--provider",
                &addr,
                "--payload-manifest",
                dir.join("manifest.b64").to_str().unwrap(),
                "--signature",
                dir.join(sig).to_str().unwrap(),
                "--cert",
                dir.join(cert).to_str().unwrap(),
            ],
        )
    };

    // A signature by a certificate of another CA is refused, with the reason.
    let out = deploy("stranger.sig", "stranger.pem");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("payload manifest rejected"), "{err}");
    // A signature that does not match the certificate is refused.
    let out = deploy("stranger.sig", "author.pem");
    assert!(!out.status.success());

    // The genuine one is accepted.
    let deployed = json(deploy("manifest.sig", "author.pem"));
    let pod_id = deployed["status"]["podId"].as_str().unwrap().to_owned();

    // Through the egress proxy the pod reaches the allowed URL.
    let t = Instant::now();
    loop {
        let out = sealpod(&home, &["logs", &pod_id]);
        let log = String::from_utf8_lossy(&out.stdout).into_owned();
        if log.contains("fetched: outside says hi") {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(30), "pod never reached the allowed URL: {log}");
        std::thread::sleep(Duration::from_millis(200));
    }

    // An allowed exec runs; it cannot reach the other server, nor go around the proxy.
    let fetch = |url: &str, extra: &[&str]| {
        let mut args =
            vec!["--json", "exec", &pod_id, "--", "/app/sealpod-sample", "fetch", "--url", url, "--count", "1"];
        args.extend_from_slice(extra);
        json_exit(sealpod(&home, &args))
    };
    let (code, output) = fetch(&format!("http://127.0.0.2:{allowed_port}/"), &[]);
    assert_eq!(code, 0, "{output}");
    let (code, output) = fetch(&format!("http://127.0.0.3:{other_port}/"), &[]);
    assert_eq!(code, 1, "{output}");
    assert!(output.contains("403"), "{output}");
    let (code, output) = fetch(&format!("http://127.0.0.1:{port}/"), &[]);
    assert_eq!(code, 1, "reached the provider's own port: {output}");
    let (code, output) = fetch(&format!("http://127.0.0.2:{allowed_port}/"), &["--direct"]);
    assert_eq!(code, 1, "went around the proxy: {output}");
    assert!(!output.contains("outside says hi"));

    // An exec outside the manifest's script is refused.
    let out = sealpod(&home, &["exec", &pod_id, "--", "/app/sealpod-sample", "exit", "--code", "0"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("exec refused"), "{}", String::from_utf8_lossy(&out.stderr));

    // Denials are visible to the publisher.
    let status = json(sealpod(&home, &["--json", "status", &pod_id]));
    let denials: Vec<String> =
        status["denials"].as_array().unwrap().iter().map(|d| format!("{} {}", d["kind"], d["detail"])).collect();
    assert!(denials.iter().any(|d| d.contains("egress") && d.contains("127.0.0.3")), "{denials:?}");
    assert!(denials.iter().any(|d| d.contains("exec") && d.contains("exit")), "{denials:?}");

    // Trust settings changed while the provider runs take effect at once.
    json(sealpod(&home, &["--json", "rule", "set", "outbound", "disable", "--state-dir", state_arg]));
    let out = deploy("manifest.sig", "author.pem");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("outbound"), "{err}");

    assert!(sealpod(&home, &["delete", &pod_id]).status.success());
}

fn json_exit(out: Output) -> (i32, String) {
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)));
    (v["exit_code"].as_i64().unwrap() as i32, v["output"].as_str().unwrap().to_owned())
}

#[test]
fn cli_signature_verifies_with_openssl_and_mismatched_cert_is_caught() {
    if Command::new("openssl").arg("version").output().is_err() {
        eprintln!("skipped: needs openssl");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    make_ca(dir, "ca");
    make_author(dir, "author", "ca");
    make_author(dir, "other", "ca");
    let manifest = serde_json::json!({
        "version": "0.1.0", "createdAt": "2025-01-01T00:00:00Z", "expiresAt": "2100-01-01T00:00:00Z",
        "metadata": {"name": "cli", "version": "0.1.0"},
        "payload": [{"platform": {"arch": "x86_64", "os": "linux"}, "urls": ["http://example.invalid/i"], "hash": format!("sha256:{}", "ab".repeat(32))}],
        "compManifest": {"version": "0.1.0", "script": {"commands": ["run /bin/date"], "match": "strict"}}
    });
    std::fs::write(dir.join("m.json"), serde_json::to_vec(&manifest).unwrap()).unwrap();
    let home = dir.join("h");
    let signed = json(sealpod(
        &home,
        &[
            "--json",
            "manifest",
            "sign",
            dir.join("m.json").to_str().unwrap(),
            "--key",
            dir.join("author.key").to_str().unwrap(),
            "--cert",
            dir.join("author.pem").to_str().unwrap(),
        ],
    ));
    let b64 = signed["manifest_base64"].as_str().unwrap().to_owned();
    let sig = signed["signature"].as_str().unwrap().to_owned();

    // openssl accepts our signature.
    openssl(dir, &["x509", "-in", "author.pem", "-pubkey", "-noout", "-out", "author.pub"]);
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(["dgst", "-sha256", "-verify", "author.pub", "-signature", &sig, &b64])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("Verified OK"), "{out:?}");

    // `manifest verify` with a keystore holding the CA.
    let trust = dir.join("trust");
    json(sealpod(
        &home,
        &["--json", "keystore", "add", dir.join("ca.pem").to_str().unwrap(), "--trust-dir", trust.to_str().unwrap()],
    ));
    let v = json(sealpod(
        &home,
        &[
            "--json",
            "manifest",
            "verify",
            "--payload-manifest",
            &b64,
            "--signature",
            &sig,
            "--cert",
            dir.join("author.pem").to_str().unwrap(),
            "--trust-dir",
            trust.to_str().unwrap(),
        ],
    ));
    assert_eq!(v["valid"], true);
    assert_eq!(v["decision"]["accepted"], true, "{v}");

    // yagna's rule syntax: an audited-payload rule for an imported certificate.
    let t = trust.to_str().unwrap();
    json(sealpod(
        &home,
        &[
            "--json",
            "rule",
            "set",
            "outbound",
            "audited-payload",
            "import-cert",
            dir.join("author.pem").to_str().unwrap(),
            "--mode",
            "all",
            "--trust-dir",
            t,
        ],
    ));
    let rules = json(sealpod(&home, &["--json", "rule", "list", "--trust-dir", t]));
    let audited = rules["outbound"]["audited-payload"].as_object().expect("audited_payload rules");
    assert_eq!(audited.len(), 1, "{rules}");
    let (id, rule) = audited.iter().next().unwrap();
    assert_eq!(rule["mode"], "all", "{rules}");
    let prefix = &id[..12];
    json(sealpod(
        &home,
        &[
            "--json",
            "rule",
            "set",
            "outbound",
            "audited-payload",
            "cert-id",
            prefix,
            "--mode",
            "none",
            "--trust-dir",
            t,
        ],
    ));
    let rules = json(sealpod(&home, &["--json", "rule", "list", "--trust-dir", t]));
    assert_eq!(rules["outbound"]["audited-payload"][id]["mode"], "none", "{rules}");

    // Signing with one key while naming another's certificate is caught.
    let out = sealpod(
        &home,
        &[
            "manifest",
            "sign",
            dir.join("m.json").to_str().unwrap(),
            "--key",
            dir.join("author.key").to_str().unwrap(),
            "--cert",
            dir.join("other.pem").to_str().unwrap(),
        ],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("key and certificate differ"));
}
