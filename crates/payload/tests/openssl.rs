//! The seed's signing procedure, run with the real `openssl` command line:
//! a CA, an app author's certificate signed by it, a manifest base64-encoded
//! and signed with `openssl dgst -sha256 -sign`, the CA imported into a
//! keystore. Then every way it must fail, and interoperability both ways.

mod common;

use common::{days, manifest_json, now, rfc3339, Openssl};
use sealpod_payload::{
    encode_manifest, sign, verify, DecidingRule, Keystore, ManifestError, MatchMode, Mode, TrustSettings, VerifyError,
};

/// A CA, an author certificate it issued (RSA-2048), a signed manifest.
struct Seed {
    ssl: Openssl,
    manifest: String,
    signature: Vec<u8>,
    certificate: Vec<u8>,
    keystore: Keystore,
}

fn valid_manifest_json(comp: &str) -> String {
    manifest_json(&rfc3339(now() - days(1)), &rfc3339(now() + days(30)), comp)
}

fn seed() -> Seed {
    let ssl = Openssl::new();
    ssl.ca("ca", "/O=Seal Test/CN=Seal Test CA", &["-newkey", "rsa:2048"], &[]);
    ssl.rsa_key("author.key");
    let csr = ssl.csr("author.key", "/O=Seal Test/CN=App Author");
    ssl.issue(&csr, "ca", "author.pem", None);
    ssl.write("manifest.json", valid_manifest_json(""));
    let manifest = ssl.base64("manifest.json", "manifest.b64");
    let signature = ssl.dgst_sign("sha256", "author.key", "manifest.b64");
    let keystore = Keystore::from_certificates(&ssl.read("ca.pem")).unwrap();
    let certificate = ssl.read("author.pem");
    Seed { ssl, manifest, signature, certificate, keystore }
}

impl Seed {
    fn verify(&self) -> Result<sealpod_payload::VerifiedManifest, VerifyError> {
        verify(&self.manifest, &self.signature, "sha256", &self.certificate, &self.keystore, now())
    }
}

#[test]
fn accepts_manifest_signed_with_openssl_by_an_author_the_ca_vouches_for() {
    let s = seed();
    let verified = s.verify().unwrap();
    assert_eq!(verified.manifest.metadata.as_ref().unwrap().name, "seal test");
    let chain = &verified.signer.chain;
    assert_eq!(chain.len(), 2);
    assert!(chain[0].subject.contains("App Author"), "{}", chain[0].subject);
    assert!(chain[1].subject.contains("Seal Test CA"));
    assert_eq!(verified.signer.trust_anchor, 1);
    assert_eq!(chain[0].id.len(), 128);

    // The same certificate as DER works too.
    s.ssl.run(&["x509", "-in", "author.pem", "-outform", "DER", "-out", "author.der"]);
    let der = s.ssl.read("author.der");
    assert!(verify(&s.manifest, &s.signature, "sha256", &der, &s.keystore, now()).is_ok());
}

#[test]
fn accepts_the_certificate_base64_encoded_as_golems_procedure_hands_it_over() {
    let s = seed();
    // `base64 author.crt.pem --wrap=0 > author.crt.pem.base64`, and the
    // same of the DER form, wrapped as coreutils does by default.
    s.ssl.run(&["x509", "-in", "author.pem", "-outform", "DER", "-out", "author.der"]);
    for (input, wrap) in [("author.pem", "--wrap=0"), ("author.der", "--wrap=76")] {
        let out = std::process::Command::new("base64").arg(s.ssl.path(input)).arg(wrap).output().unwrap();
        assert!(out.status.success());
        let verified = verify(&s.manifest, &s.signature, "sha256", &out.stdout, &s.keystore, now())
            .unwrap_or_else(|e| panic!("{input} in base64: {e}"));
        assert!(verified.signer.chain[0].subject.contains("App Author"));
    }
    // Base64 of something that is no certificate is still refused by name.
    let err = verify(&s.manifest, &s.signature, "sha256", b"aGVsbG8K", &s.keystore, now()).unwrap_err();
    assert!(err.to_string().contains("not a valid X.509 certificate"), "{err}");
}

#[test]
fn accepts_a_keystore_kept_in_a_directory() {
    let s = seed();
    let dir = tempfile::tempdir().unwrap();
    let mut settings = TrustSettings::load(dir.path()).unwrap();
    let added = settings.add_certificates(&s.ssl.read("ca.pem"), now()).unwrap();
    assert_eq!(added.added.len(), 1);
    let reloaded = TrustSettings::load(dir.path()).unwrap();
    let verified = verify(&s.manifest, &s.signature, "sha256", &s.certificate, &reloaded.keystore, now()).unwrap();
    assert_eq!(verified.signer.chain[1].id, added.added[0].id);
}

#[test]
fn rejects_tampered_manifest() {
    let mut s = seed();
    // Another document under the same signature.
    let other = valid_manifest_json("").replace("registry.example.org", "evil.example.org");
    s.manifest = encode_manifest(other.as_bytes());
    assert_eq!(s.verify().unwrap_err(), VerifyError::BadSignature);
    // One character changed, still valid base64.
    let s2 = seed();
    let mut text = s2.manifest.clone().into_bytes();
    text[10] = if text[10] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(text).unwrap();
    let err = verify(&tampered, &s2.signature, "sha256", &s2.certificate, &s2.keystore, now()).unwrap_err();
    assert_eq!(err, VerifyError::BadSignature);
    // A trailing newline is a different text too: the signature is over the exact bytes.
    let newline = format!("{}\n", s2.manifest);
    let err = verify(&newline, &s2.signature, "sha256", &s2.certificate, &s2.keystore, now()).unwrap_err();
    assert_eq!(err, VerifyError::BadSignature);
}

#[test]
fn rejects_tampered_signature() {
    let mut s = seed();
    s.signature[100] ^= 0x01;
    assert_eq!(s.verify().unwrap_err(), VerifyError::BadSignature);
    s.signature.truncate(255);
    assert!(matches!(s.verify().unwrap_err(), VerifyError::MalformedSignature { .. }));
    s.signature.clear();
    assert!(matches!(s.verify().unwrap_err(), VerifyError::MalformedSignature { .. }));
}

#[test]
fn rejects_certificate_from_another_ca() {
    let mut s = seed();
    s.ssl.ca("other", "/O=Elsewhere/CN=Other CA", &["-newkey", "rsa:2048"], &[]);
    s.ssl.rsa_key("mallory.key");
    let csr = s.ssl.csr("mallory.key", "/O=Elsewhere/CN=Mallory");
    s.ssl.issue(&csr, "other", "mallory.pem", None);
    s.signature = s.ssl.dgst_sign("sha256", "mallory.key", "manifest.b64");
    s.certificate = s.ssl.read("mallory.pem");
    assert!(matches!(s.verify().unwrap_err(), VerifyError::UntrustedIssuer { .. }));
    // Sending the other CA along does not help: it is not in the keystore.
    let mut chain = s.ssl.read("mallory.pem");
    chain.extend(s.ssl.read("other.pem"));
    s.certificate = chain;
    let err = s.verify().unwrap_err();
    assert!(matches!(&err, VerifyError::UntrustedRoot { subject } if subject.contains("Other CA")), "{err}");
}

#[test]
fn rejects_certificate_from_a_ca_that_only_shares_the_trusted_name() {
    let mut s = seed();
    s.ssl.ca("impostor", "/O=Seal Test/CN=Seal Test CA", &["-newkey", "rsa:2048"], &[]);
    s.ssl.rsa_key("mallory.key");
    let csr = s.ssl.csr("mallory.key", "/O=Seal Test/CN=App Author");
    s.ssl.issue(&csr, "impostor", "mallory.pem", None);
    s.signature = s.ssl.dgst_sign("sha256", "mallory.key", "manifest.b64");
    s.certificate = s.ssl.read("mallory.pem");
    assert!(matches!(s.verify().unwrap_err(), VerifyError::CertificateSignature { .. }));
}

#[test]
fn rejects_expired_certificate() {
    let mut s = seed();
    // Issued with openssl ca and dates in the past.
    s.ssl.issue_with_dates("author.key.csr", "ca", "expired.pem", "20000101000000Z", "20010101000000Z");
    s.certificate = s.ssl.read("expired.pem");
    let err = s.verify().unwrap_err();
    assert!(matches!(&err, VerifyError::CertificateExpired { subject, .. } if subject.contains("App Author")), "{err}");
    // And the good certificate, checked a year and a day from now.
    let s = seed();
    let later = now() + days(367);
    let err = verify(&s.manifest, &s.signature, "sha256", &s.certificate, &s.keystore, later).unwrap_err();
    assert!(matches!(err, VerifyError::CertificateExpired { .. }), "{err}");
}

#[test]
fn rejects_not_yet_valid_certificate() {
    let mut s = seed();
    s.ssl.issue_with_dates("author.key.csr", "ca", "future.pem", "21000101000000Z", "21010101000000Z");
    s.certificate = s.ssl.read("future.pem");
    let err = s.verify().unwrap_err();
    assert!(matches!(err, VerifyError::CertificateNotYetValid { .. }), "{err}");
    let s = seed();
    let earlier = now() - days(2);
    let err = verify(&s.manifest, &s.signature, "sha256", &s.certificate, &s.keystore, earlier).unwrap_err();
    assert!(matches!(err, VerifyError::CertificateNotYetValid { .. }), "{err}");
}

#[test]
fn rejects_expired_manifest() {
    let s = seed();
    s.ssl.write("old.json", manifest_json(&rfc3339(now() - days(10)), &rfc3339(now() - days(1)), ""));
    let manifest = s.ssl.base64("old.json", "old.b64");
    let sig = s.ssl.dgst_sign("sha256", "author.key", "old.b64");
    let err = verify(&manifest, &sig, "sha256", &s.certificate, &s.keystore, now()).unwrap_err();
    assert!(matches!(err, VerifyError::ManifestExpired { .. }), "{err}");
}

#[test]
fn rejects_manifest_created_in_the_future() {
    let s = seed();
    s.ssl.write("future.json", manifest_json(&rfc3339(now() + days(1)), &rfc3339(now() + days(10)), ""));
    let manifest = s.ssl.base64("future.json", "future.b64");
    let sig = s.ssl.dgst_sign("sha256", "author.key", "future.b64");
    let err = verify(&manifest, &sig, "sha256", &s.certificate, &s.keystore, now()).unwrap_err();
    assert!(matches!(err, VerifyError::ManifestNotYetValid { .. }), "{err}");
    // A minute of clock skew is tolerated.
    s.ssl.write(
        "skew.json",
        manifest_json(&rfc3339(now() + std::time::Duration::from_secs(60)), &rfc3339(now() + days(10)), ""),
    );
    let manifest = s.ssl.base64("skew.json", "skew.b64");
    let sig = s.ssl.dgst_sign("sha256", "author.key", "skew.b64");
    assert!(verify(&manifest, &sig, "sha256", &s.certificate, &s.keystore, now()).is_ok());
}

#[test]
fn rejects_wrong_digest_name() {
    let s = seed();
    for name in ["md5", "sha1", "sha-256", "", "sha999"] {
        let err = verify(&s.manifest, &s.signature, name, &s.certificate, &s.keystore, now()).unwrap_err();
        assert!(matches!(err, VerifyError::UnknownDigest(_)), "{name}: {err}");
    }
    // A known digest, but not the one used to sign.
    let err = verify(&s.manifest, &s.signature, "sha512", &s.certificate, &s.keystore, now()).unwrap_err();
    assert_eq!(err, VerifyError::BadSignature);
    // Digest names are case-insensitive, as OpenSSL's are.
    assert!(verify(&s.manifest, &s.signature, "SHA256", &s.certificate, &s.keystore, now()).is_ok());
}

#[test]
fn rejects_truncated_base64() {
    let s = seed();
    // Cut in transit: the signature no longer matches.
    let cut = &s.manifest[..s.manifest.len() - 5];
    let err = verify(cut, &s.signature, "sha256", &s.certificate, &s.keystore, now()).unwrap_err();
    assert_eq!(err, VerifyError::BadSignature);
    // Cut before signing: the signature matches, the text does not decode.
    s.ssl.write("cut.b64", cut);
    let sig = s.ssl.dgst_sign("sha256", "author.key", "cut.b64");
    let err = verify(cut, &sig, "sha256", &s.certificate, &s.keystore, now()).unwrap_err();
    assert!(matches!(err, VerifyError::Manifest(ManifestError::Base64 { .. })), "{err}");
    let cut4 = &s.manifest[..s.manifest.len() - 8];
    s.ssl.write("cut4.b64", cut4);
    let sig = s.ssl.dgst_sign("sha256", "author.key", "cut4.b64");
    let err = verify(cut4, &sig, "sha256", &s.certificate, &s.keystore, now()).unwrap_err();
    assert!(matches!(err, VerifyError::Manifest(ManifestError::Json { .. })), "{err}");
}

#[test]
fn rejects_without_certificate_or_trusted_keystore() {
    let s = seed();
    let err = verify(&s.manifest, &s.signature, "sha256", b"", &s.keystore, now()).unwrap_err();
    assert_eq!(err, VerifyError::NoCertificate);
    let err = verify(&s.manifest, &s.signature, "sha256", &s.certificate, &Keystore::new(), now()).unwrap_err();
    assert_eq!(err, VerifyError::EmptyKeystore);
    let err = verify(&s.manifest, &s.signature, "sha256", b"not a certificate", &s.keystore, now()).unwrap_err();
    assert!(matches!(err, VerifyError::Certificate(_)), "{err}");
}

fn intermediate(s: &Seed, name: &str, ext: &str) {
    s.ssl.rsa_key(&format!("{name}.key"));
    let csr = s.ssl.csr(&format!("{name}.key"), &format!("/O=Seal Test/CN={name}"));
    s.ssl.issue(&csr, "ca", &format!("{name}.pem"), Some(ext));
}

#[test]
fn follows_a_chain_through_an_intermediate() {
    let mut s = seed();
    intermediate(&s, "Inter", "basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign");
    let csr = s.ssl.csr("author.key", "/O=Seal Test/CN=Chained Author");
    s.ssl.issue(&csr, "Inter", "chained.pem", Some("keyUsage=critical,digitalSignature"));
    // Leaf alone, root in the keystore: the intermediate is missing.
    s.certificate = s.ssl.read("chained.pem");
    assert!(matches!(s.verify().unwrap_err(), VerifyError::UntrustedIssuer { .. }));
    // Leaf + intermediate, as a PEM chain.
    let mut chain = s.ssl.read("chained.pem");
    chain.extend(s.ssl.read("Inter.pem"));
    s.certificate = chain;
    let verified = s.verify().unwrap();
    assert_eq!(verified.signer.chain.len(), 3);
    assert_eq!(verified.signer.trust_anchor, 2);
    // Leaf alone, the intermediate trusted: the chain still climbs to the root for rules.
    let mut both = s.ssl.read("Inter.pem");
    both.extend(s.ssl.read("ca.pem"));
    s.keystore = Keystore::from_certificates(&both).unwrap();
    s.certificate = s.ssl.read("chained.pem");
    let verified = s.verify().unwrap();
    assert_eq!(verified.signer.chain.len(), 3);
    assert_eq!(verified.signer.trust_anchor, 1);
    // Only the intermediate trusted: enough.
    s.keystore = Keystore::from_certificates(&s.ssl.read("Inter.pem")).unwrap();
    let verified = s.verify().unwrap();
    assert_eq!(verified.signer.chain.len(), 2);
}

#[test]
fn rejects_an_issuer_that_is_not_a_ca() {
    let mut s = seed();
    intermediate(&s, "NotCa", "basicConstraints=critical,CA:FALSE");
    let csr = s.ssl.csr("author.key", "/O=Seal Test/CN=Under Not CA");
    s.ssl.issue(&csr, "NotCa", "leaf.pem", None);
    let mut chain = s.ssl.read("leaf.pem");
    chain.extend(s.ssl.read("NotCa.pem"));
    s.certificate = chain;
    assert!(matches!(s.verify().unwrap_err(), VerifyError::NotCa { .. }));
}

#[test]
fn enforces_path_length_constraints() {
    let mut s = seed();
    s.ssl.ca(
        "ca",
        "/O=Seal Test/CN=Strict Root",
        &["-newkey", "rsa:2048"],
        &["-addext", "basicConstraints=critical,CA:TRUE,pathlen:0"],
    );
    s.keystore = Keystore::from_certificates(&s.ssl.read("ca.pem")).unwrap();
    intermediate(&s, "Inter", "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign");
    let csr = s.ssl.csr("author.key", "/O=Seal Test/CN=Too Deep");
    s.ssl.issue(&csr, "Inter", "deep.pem", None);
    let mut chain = s.ssl.read("deep.pem");
    chain.extend(s.ssl.read("Inter.pem"));
    s.certificate = chain;
    assert!(matches!(s.verify().unwrap_err(), VerifyError::PathLength { limit: 0, .. }));
}

#[test]
fn rejects_a_leaf_whose_key_usage_forbids_signing() {
    let mut s = seed();
    let csr = s.ssl.csr("author.key", "/O=Seal Test/CN=Encipher Only");
    s.ssl.issue(&csr, "ca", "enc.pem", Some("keyUsage=critical,keyEncipherment"));
    s.certificate = s.ssl.read("enc.pem");
    assert!(matches!(s.verify().unwrap_err(), VerifyError::KeyUsage { .. }));
}

fn ec_author(s: &Seed, curve: &str, digest: &str) -> (String, Vec<u8>, Vec<u8>) {
    let key = format!("{curve}.key");
    s.ssl.ec_key(&key, curve);
    let csr = s.ssl.csr(&key, &format!("/O=Seal Test/CN=EC {curve}"));
    let cert = format!("{curve}.pem");
    s.ssl.issue(&csr, "ca", &cert, None);
    let sig = s.ssl.dgst_sign(digest, &key, "manifest.b64");
    (key, sig, s.ssl.read(&cert))
}

#[test]
fn accepts_ecdsa_p256_and_p384_signatures_with_any_sha2_digest() {
    let s = seed();
    for (curve, digest) in [
        ("prime256v1", "sha256"),
        ("prime256v1", "sha384"),
        ("prime256v1", "sha512"),
        ("secp384r1", "sha384"),
        ("secp384r1", "sha256"),
        ("secp384r1", "sha512"),
        ("prime256v1", "sha3-256"),
    ] {
        let (_, sig, cert) = ec_author(&s, curve, digest);
        let verified = verify(&s.manifest, &sig, digest, &cert, &s.keystore, now());
        assert!(verified.is_ok(), "{curve} {digest}: {:?}", verified.err());
        let wrong = if digest == "sha256" { "sha384" } else { "sha256" };
        let err = verify(&s.manifest, &sig, wrong, &cert, &s.keystore, now()).unwrap_err();
        assert_eq!(err, VerifyError::BadSignature, "{curve} {digest}");
    }
}

#[test]
fn accepts_many_ecdsa_signatures_whatever_their_s_value() {
    // OpenSSL's ECDSA nonces are random, so about half of these have a high S.
    let s = seed();
    let (key, _, cert) = ec_author(&s, "prime256v1", "sha256");
    for _ in 0..12 {
        let sig = s.ssl.dgst_sign("sha256", &key, "manifest.b64");
        assert!(verify(&s.manifest, &sig, "sha256", &cert, &s.keystore, now()).is_ok());
    }
}

#[test]
fn accepts_certificates_signed_by_ecdsa_and_ed25519_cas() {
    let s = seed();
    for (name, newkey) in [
        ("ecca", vec!["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-384", "-sha384"]),
        ("edca", vec!["-newkey", "ed25519"]),
    ] {
        s.ssl.ca(name, &format!("/O=Seal Test/CN={name}"), &newkey, &[]);
        let csr = s.ssl.csr("author.key", &format!("/O=Seal Test/CN=Author under {name}"));
        let cert = format!("under-{name}.pem");
        s.ssl.issue(&csr, name, &cert, None);
        let keystore = Keystore::from_certificates(&s.ssl.read(&format!("{name}.pem"))).unwrap();
        let verified = verify(&s.manifest, &s.signature, "sha256", &s.ssl.read(&cert), &keystore, now());
        assert!(verified.is_ok(), "{name}: {:?}", verified.err());
    }
}

#[test]
fn accepts_ed25519_signatures_made_with_pkeyutl() {
    let s = seed();
    s.ssl.ed25519_key("ed.key");
    let csr = s.ssl.csr("ed.key", "/O=Seal Test/CN=Ed Author");
    s.ssl.issue(&csr, "ca", "ed.pem", None);
    let sig = s.ssl.pkeyutl_sign("ed.key", "manifest.b64");
    assert_eq!(sig.len(), 64);
    let cert = s.ssl.read("ed.pem");
    assert!(verify(&s.manifest, &sig, "sha256", &cert, &s.keystore, now()).is_ok());
    let mut bad = sig.clone();
    bad[0] ^= 1;
    assert_eq!(verify(&s.manifest, &bad, "sha256", &cert, &s.keystore, now()).unwrap_err(), VerifyError::BadSignature);
    // Our own signature is byte-identical: Ed25519 is deterministic.
    let ours = sign(&s.manifest, &s.ssl.read_string("ed.key"), "sha256").unwrap();
    assert_eq!(ours, sig);
}

/// Our `sign` output checked by `openssl dgst -verify` (or `pkeyutl -verify`).
fn openssl_verifies(s: &Seed, key: &str, digest: &str, ed25519: bool) {
    let ours = sign(&s.manifest, &s.ssl.read_string(key), digest).unwrap();
    s.ssl.write("ours.sig", &ours);
    s.ssl.run(&["pkey", "-in", key, "-pubout", "-out", "pub.pem"]);
    let (ok, out) = if ed25519 {
        s.ssl.try_run(&[
            "pkeyutl",
            "-verify",
            "-rawin",
            "-pubin",
            "-inkey",
            "pub.pem",
            "-sigfile",
            "ours.sig",
            "-in",
            "manifest.b64",
        ])
    } else {
        let flag = format!("-{digest}");
        s.ssl.try_run(&["dgst", &flag, "-verify", "pub.pem", "-signature", "ours.sig", "manifest.b64"])
    };
    assert!(
        ok && (out.contains("Verified OK") || out.contains("Signature Verified Successfully")),
        "{key} {digest}: {out}"
    );
}

#[test]
fn our_signatures_verify_with_openssl() {
    let s = seed();
    openssl_verifies(&s, "author.key", "sha256", false);
    openssl_verifies(&s, "author.key", "sha512", false);
    openssl_verifies(&s, "author.key", "sha3-256", false);
    s.ssl.ec_key("p256.key", "prime256v1");
    openssl_verifies(&s, "p256.key", "sha256", false);
    openssl_verifies(&s, "p256.key", "sha384", false);
    s.ssl.ec_key("p384.key", "secp384r1");
    openssl_verifies(&s, "p384.key", "sha384", false);
    s.ssl.run(&["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", "pkcs8-rsa.key"]);
    openssl_verifies(&s, "pkcs8-rsa.key", "sha256", false);
    s.ssl.run(&["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", "pkcs8-ec.key"]);
    openssl_verifies(&s, "pkcs8-ec.key", "sha256", false);
    s.ssl.ed25519_key("ed.key");
    openssl_verifies(&s, "ed.key", "sha256", true);
}

#[test]
fn our_signatures_verify_with_our_verifier() {
    let s = seed();
    let ours = sign(&s.manifest, &s.ssl.read_string("author.key"), "sha384").unwrap();
    assert!(verify(&s.manifest, &ours, "sha384", &s.certificate, &s.keystore, now()).is_ok());
    // RSA PKCS#1 v1.5 is deterministic: byte-identical to openssl's.
    assert_eq!(sign(&s.manifest, &s.ssl.read_string("author.key"), "sha256").unwrap(), s.signature);
}

#[test]
fn refuses_to_sign_with_an_encrypted_or_unknown_key() {
    let s = seed();
    s.ssl.run(&["genpkey", "-algorithm", "RSA", "-aes256", "-pass", "pass:secret", "-out", "enc.key"]);
    let err = sign(&s.manifest, &s.ssl.read_string("enc.key"), "sha256").unwrap_err();
    assert!(err.to_string().contains("encrypted"), "{err}");
    s.ssl.run(&["genrsa", "-traditional", "-aes256", "-passout", "pass:secret", "-out", "enc-trad.key", "2048"]);
    let err = sign(&s.manifest, &s.ssl.read_string("enc-trad.key"), "sha256").unwrap_err();
    assert!(err.to_string().contains("encrypted"), "{err}");
    assert!(sign(&s.manifest, "no key here", "sha256").is_err());
    assert!(sign(&s.manifest, &s.ssl.read_string("author.key"), "md5").is_err());
}

#[test]
fn decides_outbound_access_for_a_verified_manifest() {
    let s = seed();
    let comp = r#",
  "compManifest": {"version": "0.1.0",
    "net": {"inet": {"out": {"protocols": ["https"], "urls": ["https://api.example.org"]}}}}"#;
    s.ssl.write("out.json", valid_manifest_json(comp));
    let manifest = s.ssl.base64("out.json", "out.b64");
    let sig = s.ssl.dgst_sign("sha256", "author.key", "out.b64");
    let verified = verify(&manifest, &sig, "sha256", &s.certificate, &s.keystore, now()).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let mut settings = TrustSettings::load(dir.path()).unwrap();
    let decision = settings.decide_verified(&verified);
    assert!(!decision.accepted);
    assert_eq!(decision.rule, DecidingRule::Everyone { mode: Mode::Whitelist });
    assert!(decision.reason.contains("host api.example.org is not whitelisted"), "{}", decision.reason);

    settings.add_whitelist("api.example.org", MatchMode::Strict).unwrap();
    assert!(settings.decide_verified(&verified).accepted);

    settings.remove_whitelist("api.example.org").unwrap();
    let ca = settings.set_audited_payload_import(&s.ssl.read("ca.pem"), Mode::All, "our CA", now()).unwrap();
    assert_eq!(ca.len(), 1);
    let decision = settings.decide_verified(&verified);
    assert!(decision.accepted, "{}", decision.reason);
    assert_eq!(decision.rule, DecidingRule::AuditedPayload { certificate_id: ca[0].id.clone(), mode: Mode::All });

    // The same verdict after a reload from disk.
    let reloaded = TrustSettings::load(dir.path()).unwrap();
    assert!(reloaded.decide_verified(&verified).accepted);
}

/// A small deterministic stand-in for the fuzz targets in `fuzz/`, run on
/// every test pass: mutated certificates, chains and manifests must give
/// errors, never panics.
#[test]
fn survives_mutated_manifests_and_certificates() {
    let s = seed();
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut mutate = |input: &[u8]| {
        let mut out = input.to_vec();
        for _ in 0..1 + next() % 4 {
            let r = next() as usize;
            match r % 4 {
                0 if !out.is_empty() => {
                    let i = r / 4 % out.len();
                    out[i] ^= 1 << (r / 64 % 8);
                }
                1 if !out.is_empty() => {
                    let i = r / 4 % out.len();
                    out.truncate(i);
                }
                2 => {
                    let i = r / 4 % (out.len() + 1);
                    out.insert(i, (r >> 32) as u8);
                }
                _ if !out.is_empty() => {
                    let i = r / 4 % out.len();
                    out.remove(i);
                }
                _ => {}
            }
        }
        out
    };
    s.ssl.run(&["x509", "-in", "author.pem", "-outform", "DER", "-out", "author.der"]);
    let der = s.ssl.read("author.der");
    let mut chain = s.certificate.clone();
    chain.extend(s.ssl.read("ca.pem"));
    let json = sealpod_payload::parse_manifest_json(valid_manifest_json(
        r#", "compManifest": {"version": "0.1.0", "script": {"match": "regex", "commands": ["run .*", "{\"run\": {\"args\": [\"a\"], \"env\": {\"A\": \"b\"}}}"]},
           "net": {"inet": {"out": {"urls": ["https://a.example:8443/x"]}}}}"#,
    ).as_bytes())
    .unwrap()
    .to_json();
    for round in 0..400 {
        for input in [&der, &chain] {
            let mutated = mutate(input);
            let _ = sealpod_payload::split_certificates(&mutated);
            if let Ok(keystore) = Keystore::from_certificates(&mutated) {
                let _ = verify(&s.manifest, &s.signature, "sha256", &mutated, &keystore, now());
            }
            if round % 4 == 0 {
                let _ = verify(&s.manifest, &s.signature, "sha256", &mutated, &s.keystore, now());
            }
        }
        let mutated = mutate(json.as_bytes());
        if let Ok(m) = sealpod_payload::parse_manifest_json(&mutated) {
            let _ = m.exec_allowed(&["/bin/true".to_string()]);
            let _ = m.url_allowed("https", "a.example", 8443);
        }
        let text = mutate(s.manifest.as_bytes());
        if let Ok(text) = String::from_utf8(text) {
            let _ = sealpod_payload::decode_manifest(&text);
        }
    }
}

#[test]
fn rejects_a_certificate_signed_with_sha1() {
    let mut s = seed();
    let csr = "author.key.csr";
    s.ssl.run(&["x509", "-req", "-sha1", "-in", csr, "-CA", "ca.pem", "-CAkey", "ca.key", "-out", "sha1.pem"]);
    s.certificate = s.ssl.read("sha1.pem");
    let err = s.verify().unwrap_err();
    assert!(matches!(&err, VerifyError::UnsupportedCertificate { reason, .. } if reason.contains("SHA-1")), "{err}");
}

#[test]
fn rejects_name_constraints_it_cannot_enforce() {
    let mut s = seed();
    intermediate(
        &s,
        "Constrained",
        "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign\nnameConstraints=critical,permitted;DNS:example.org",
    );
    let csr = s.ssl.csr("author.key", "/O=Seal Test/CN=Constrained Author");
    s.ssl.issue(&csr, "Constrained", "constrained.pem", None);
    let mut chain = s.ssl.read("constrained.pem");
    chain.extend(s.ssl.read("Constrained.pem"));
    s.certificate = chain;
    let err = s.verify().unwrap_err();
    assert!(
        matches!(&err, VerifyError::UnsupportedCertificate { reason, .. } if reason.contains("name constraints")),
        "{err}"
    );
}
