//! Runs the real `openssl` command line in a temporary directory, the way a
//! publisher following the docs would.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

pub struct Openssl {
    pub dir: tempfile::TempDir,
}

impl Openssl {
    pub fn new() -> Openssl {
        let version = Command::new("openssl").arg("version").output();
        assert!(
            version.is_ok_and(|o| o.status.success()),
            "these tests need the openssl command line (Debian: apt-get install openssl)"
        );
        Openssl { dir: tempfile::tempdir().unwrap() }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Runs `openssl args...` in the directory; panics with its stderr on failure.
    pub fn run(&self, args: &[&str]) -> String {
        let output = Command::new("openssl").args(args).current_dir(self.dir.path()).output().unwrap();
        assert!(
            output.status.success(),
            "openssl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Runs `openssl args...`, returning whether it succeeded and its stdout.
    pub fn try_run(&self, args: &[&str]) -> (bool, String) {
        let output = Command::new("openssl").args(args).current_dir(self.dir.path()).output().unwrap();
        (output.status.success(), String::from_utf8_lossy(&output.stdout).into_owned())
    }

    pub fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.path(name)).unwrap()
    }

    pub fn read_string(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).unwrap()
    }

    pub fn write(&self, name: &str, contents: impl AsRef<[u8]>) {
        std::fs::write(self.path(name), contents).unwrap()
    }

    /// A self-signed CA: `openssl req -x509 -newkey <key> ... -addext basicConstraints=critical,CA:TRUE`.
    pub fn ca(&self, name: &str, subject: &str, newkey: &[&str], extra: &[&str]) {
        let key = format!("{name}.key");
        let cert = format!("{name}.pem");
        let mut args = vec!["req", "-x509"];
        args.extend_from_slice(newkey);
        args.extend_from_slice(&[
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &cert,
            "-days",
            "3650",
            "-subj",
            subject,
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
        ]);
        if extra.is_empty() {
            args.extend_from_slice(&["-addext", "basicConstraints=critical,CA:TRUE"]);
        }
        args.extend_from_slice(extra);
        self.run(&args);
    }

    /// A certificate request for an existing key.
    pub fn csr(&self, key: &str, subject: &str) -> String {
        let csr = format!("{key}.csr");
        self.run(&["req", "-new", "-key", key, "-out", &csr, "-subj", subject]);
        csr
    }

    /// `openssl x509 -req -CA ...`: signs `csr` with CA `ca` (files `ca.pem`,
    /// `ca.key`), with an optional extension file section.
    pub fn issue(&self, csr: &str, ca: &str, out: &str, extfile: Option<&str>) {
        let ca_cert = format!("{ca}.pem");
        let ca_key = format!("{ca}.key");
        let mut args =
            vec!["x509", "-req", "-in", csr, "-CA", &ca_cert, "-CAkey", &ca_key, "-CAcreateserial", "-out", out];
        args.extend_from_slice(&["-days", "365"]);
        if let Some(ext) = extfile {
            self.write("ext.cnf", format!("[ext]\n{ext}\n"));
            args.extend_from_slice(&["-extfile", "ext.cnf", "-extensions", "ext"]);
        }
        self.run(&args);
    }

    /// `openssl ca` with explicit dates (`YYYYMMDDHHMMSSZ`), for certificates
    /// that are expired or not yet valid today.
    pub fn issue_with_dates(&self, csr: &str, ca: &str, out: &str, start: &str, end: &str) {
        std::fs::create_dir_all(self.path("db")).unwrap();
        self.write("db/index.txt", "");
        self.write("db/serial", "1000\n");
        self.write(
            "ca.cnf",
            "[ca]\ndefault_ca = test\n[test]\ndatabase = db/index.txt\nnew_certs_dir = db\nserial = db/serial\n\
             default_md = sha256\npolicy = any\nunique_subject = no\n[any]\ncommonName = supplied\n",
        );
        let ca_cert = format!("{ca}.pem");
        let ca_key = format!("{ca}.key");
        self.run(&[
            "ca",
            "-batch",
            "-config",
            "ca.cnf",
            "-cert",
            &ca_cert,
            "-keyfile",
            &ca_key,
            "-in",
            csr,
            "-out",
            out,
            "-startdate",
            start,
            "-enddate",
            end,
            "-notext",
        ]);
    }

    /// An RSA-2048 key in the traditional format `openssl genrsa` used to write.
    pub fn rsa_key(&self, name: &str) {
        self.run(&["genrsa", "-traditional", "-out", name, "2048"]);
    }

    /// An EC key as `openssl ecparam -genkey` writes it (EC PARAMETERS + EC PRIVATE KEY).
    pub fn ec_key(&self, name: &str, curve: &str) {
        self.run(&["ecparam", "-name", curve, "-genkey", "-out", name]);
    }

    pub fn ed25519_key(&self, name: &str) {
        self.run(&["genpkey", "-algorithm", "ed25519", "-out", name]);
    }

    /// base64 without line wrapping, as the manifest travels.
    pub fn base64(&self, input: &str, output: &str) -> String {
        self.run(&["base64", "-A", "-in", input, "-out", output]);
        self.read_string(output)
    }

    /// `openssl dgst -<digest> -sign key -out sig file`.
    pub fn dgst_sign(&self, digest: &str, key: &str, file: &str) -> Vec<u8> {
        let flag = format!("-{digest}");
        self.run(&["dgst", &flag, "-sign", key, "-out", "sig.bin", file]);
        self.read("sig.bin")
    }

    /// `openssl pkeyutl -sign -rawin` (Ed25519).
    pub fn pkeyutl_sign(&self, key: &str, file: &str) -> Vec<u8> {
        self.run(&["pkeyutl", "-sign", "-rawin", "-inkey", key, "-in", file, "-out", "sig.bin"]);
        self.read("sig.bin")
    }
}

pub fn days(n: u64) -> Duration {
    Duration::from_secs(n * 24 * 3600)
}

pub fn now() -> SystemTime {
    SystemTime::now()
}

/// A manifest document with the given times and compManifest body.
pub fn manifest_json(created: &str, expires: &str, comp: &str) -> String {
    format!(
        r#"{{
  "version": "0.1.0",
  "createdAt": "{created}",
  "expiresAt": "{expires}",
  "metadata": {{"name": "seal test", "version": "1.0.0", "authors": ["Test <test@example.org>"]}},
  "payload": [{{"platform": {{"arch": "x86_64", "os": "linux"}},
               "urls": ["https://registry.example.org/app"],
               "hash": "sha256:{}"}}]{comp}
}}"#,
        "5a".repeat(32)
    )
}

pub fn rfc3339(time: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(time).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}
