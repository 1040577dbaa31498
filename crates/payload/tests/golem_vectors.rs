//! yagna's own test data (`$SEALPOD_TEST_VECTORS/golem`, see
//! `shared/vectors/PROVENANCE.md`): signatures made by Golem's tooling must
//! verify here with the same certificates, and fail without them.
//!
//! Without `SEALPOD_TEST_VECTORS` these tests say so and pass; with it set,
//! missing files are a failure.

use std::collections::HashMap;
use std::io::Read as _;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use sealpod_payload::{
    decode_signature_base64, encode_manifest, exec_allowed, parse_manifest_json, transfer_allowed, url_allowed, verify,
    verify_signature, DecidingRule, Keystore, MatchMode, Mode, OutboundAccess, TrustError, TrustSettings, VerifyError,
};

struct Vectors {
    dir: PathBuf,
    certs: HashMap<String, Vec<u8>>,
}

fn vectors(test: &str) -> Option<Vectors> {
    let Some(root) = std::env::var_os("SEALPOD_TEST_VECTORS") else {
        eprintln!("skipped {test}: SEALPOD_TEST_VECTORS is not set (it names the shared/vectors directory)");
        return None;
    };
    let dir = PathBuf::from(root).join("golem");
    let tar_bytes = std::fs::read(dir.join("certificates.tar"))
        .unwrap_or_else(|e| panic!("SEALPOD_TEST_VECTORS is set but {}/certificates.tar: {e}", dir.display()));
    let mut certs = HashMap::new();
    let mut archive = tar::Archive::new(tar_bytes.as_slice());
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().to_string_lossy().into_owned();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).unwrap();
        certs.insert(name, bytes);
    }
    Some(Vectors { dir, certs })
}

impl Vectors {
    fn file(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.dir.join(name)).unwrap_or_else(|e| panic!("{}/{name}: {e}", self.dir.display()))
    }

    fn text(&self, name: &str) -> String {
        String::from_utf8(self.file(name)).unwrap()
    }

    fn cert(&self, name: &str) -> &[u8] {
        self.certs.get(name).unwrap_or_else(|| panic!("certificates.tar lacks {name}"))
    }

    fn keystore(&self, names: &[&str]) -> Keystore {
        let mut pem = Vec::new();
        for name in names {
            pem.extend_from_slice(self.cert(name));
        }
        Keystore::from_certificates(&pem).unwrap()
    }

    /// `data.json.base64` and its signature by foo_req.
    fn data(&self) -> (Vec<u8>, Vec<u8>) {
        let data = self.file("data.json.base64");
        let sig = decode_signature_base64(&self.text("data.json.base64.foo_req_sign.sha256.base64")).unwrap();
        (data, sig)
    }
}

/// A fixed time inside every foo certificate's validity (2022 to 2122).
fn when() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_750_000_000)
}

#[test]
fn yagna_signed_data_verifies_with_the_foo_ca_chain() {
    let Some(v) = vectors("yagna_signed_data_verifies_with_the_foo_ca_chain") else { return };
    let (data, sig) = v.data();
    assert_eq!(data.len(), 28);
    let keystore = v.keystore(&["foo_ca-chain.cert.pem"]);
    let signer = verify_signature(&data, &sig, "sha256", v.cert("foo_req.cert.pem"), &keystore, when()).unwrap();
    assert_eq!(signer.chain.len(), 3);
    assert!(signer.leaf().unwrap().subject.contains("CN=Foo Req"), "{:?}", signer.leaf());
    assert_eq!(signer.trust_anchor, 1);
    // With only the root trusted, the intermediate must come with the leaf, in either order.
    let root_only = v.keystore(&["foo_ca.cert.pem"]);
    let err = verify_signature(&data, &sig, "sha256", v.cert("foo_req.cert.pem"), &root_only, when()).unwrap_err();
    assert!(matches!(err, VerifyError::UntrustedIssuer { .. }), "{err}");
    let chain = v.cert("foo_inter_req-chain.cert.pem");
    let signer = verify_signature(&data, &sig, "sha256", chain, &root_only, when()).unwrap();
    assert_eq!(signer.chain.len(), 3);
    assert_eq!(signer.trust_anchor, 2);
}

#[test]
fn yagna_signed_data_is_rejected_without_a_trusted_chain() {
    let Some(v) = vectors("yagna_signed_data_is_rejected_without_a_trusted_chain") else { return };
    let (data, sig) = v.data();
    let leaf = v.cert("foo_req.cert.pem");
    let err = verify_signature(&data, &sig, "sha256", leaf, &Keystore::new(), when()).unwrap_err();
    assert_eq!(err, VerifyError::EmptyKeystore);
    let unrelated = v.keystore(&["dummy_inter.cert.pem"]);
    let err = verify_signature(&data, &sig, "sha256", leaf, &unrelated, when()).unwrap_err();
    assert!(matches!(err, VerifyError::UntrustedIssuer { .. }), "{err}");
    let keystore = v.keystore(&["foo_ca-chain.cert.pem"]);
    let err = verify_signature(&data, &sig, "sha256", b"", &keystore, when()).unwrap_err();
    assert_eq!(err, VerifyError::NoCertificate);
    let mut tampered = data.clone();
    tampered[5] ^= 1;
    let err = verify_signature(&tampered, &sig, "sha256", leaf, &keystore, when()).unwrap_err();
    assert_eq!(err, VerifyError::BadSignature);
}

fn outbound(v: &Vectors) -> sealpod_payload::VerifiedManifest {
    let manifest = encode_manifest(&v.file("outbound_manifest.json"));
    let sig = decode_signature_base64(&v.text("outbound_signature.sha256.base64")).unwrap();
    let keystore = v.keystore(&["foo_ca-chain.cert.pem"]);
    verify(&manifest, &sig, "sha256", &v.file("outbound_certificate.cert"), &keystore, when()).unwrap()
}

fn argv(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| w.to_string()).collect()
}

#[test]
fn yagna_outbound_manifest_verifies_and_its_commands_are_enforced() {
    let Some(v) = vectors("yagna_outbound_manifest_verifies_and_its_commands_are_enforced") else { return };
    let verified = outbound(&v);
    let m = &verified.manifest;
    assert_eq!(m.metadata.as_ref().unwrap().name, "External API call example");
    assert_eq!(m.payload[0].hash.algorithm(), sealpod_payload::DigestAlgorithm::Sha3_224);
    let comp = m.comp_manifest.as_ref().unwrap();
    assert_eq!(comp.script.as_ref().unwrap().default_match, MatchMode::Regex);

    assert!(exec_allowed(comp, &argv(&["/usr/bin/curl", "-s", "https://api.coingecko.com/api/v3/ping"])).is_ok());
    assert!(exec_allowed(comp, &argv(&["/bin/bash", "/golem/work/request.sh"])).is_ok());
    assert!(exec_allowed(comp, &argv(&["rm", "-rf", "/"])).is_err());
    assert!(exec_allowed(comp, &argv(&["/bin/sh", "-c", "wget https://evil.example"])).is_err());
    assert!(transfer_allowed(comp, "container:/golem/output/output.txt", "file:///tmp/output.txt").is_ok());
    assert!(transfer_allowed(comp, "container:/etc/shadow", "file:///tmp/shadow").is_err());

    assert!(url_allowed(comp, "https", "api.coingecko.com", 443));
    assert!(url_allowed(comp, "https", "httpbin.org", 443));
    assert!(!url_allowed(comp, "http", "httpbin.org", 80));
    assert!(!url_allowed(comp, "https", "example.org", 443));
    assert!(!url_allowed(comp, "https", "httpbin.org", 8443));
}

#[test]
fn yagna_outbound_manifest_is_rejected_when_altered_or_expired() {
    let Some(v) = vectors("yagna_outbound_manifest_is_rejected_when_altered_or_expired") else { return };
    let sig = decode_signature_base64(&v.text("outbound_signature.sha256.base64")).unwrap();
    let keystore = v.keystore(&["foo_ca-chain.cert.pem"]);
    let cert = v.file("outbound_certificate.cert");
    let altered = String::from_utf8(v.file("outbound_manifest.json")).unwrap().replace("httpbin.org", "evil.example");
    let err = verify(&encode_manifest(altered.as_bytes()), &sig, "sha256", &cert, &keystore, when()).unwrap_err();
    assert_eq!(err, VerifyError::BadSignature);
    // expiresAt is 2100-01-01T00:01:00Z: yagna ignores it, sealpod does not.
    let manifest = encode_manifest(&v.file("outbound_manifest.json"));
    let after = SystemTime::UNIX_EPOCH + Duration::from_secs(4_102_444_861);
    let err = verify(&manifest, &sig, "sha256", &cert, &keystore, after).unwrap_err();
    assert!(matches!(err, VerifyError::ManifestExpired { .. }), "{err}");
}

#[test]
fn yagna_outbound_manifest_is_decided_by_whitelist_or_audited_payload_rule() {
    let Some(v) = vectors("yagna_outbound_manifest_is_decided_by_whitelist_or_audited_payload_rule") else { return };
    let verified = outbound(&v);
    let dir = tempfile::tempdir().unwrap();
    let mut settings = TrustSettings::load(dir.path()).unwrap();
    settings.add_certificates(v.cert("foo_ca-chain.cert.pem"), when()).unwrap();
    settings.add_whitelist("api.coingecko.com", MatchMode::Strict).unwrap();
    let decision = settings.decide_verified(&verified);
    assert!(!decision.accepted);
    assert!(decision.reason.contains("host httpbin.org is not whitelisted"), "{}", decision.reason);
    settings.add_whitelist(r"(.*\.)?httpbin\.org", MatchMode::Regex).unwrap();
    assert!(settings.decide_verified(&verified).accepted);

    settings.set_everyone(Mode::None).unwrap();
    let inter = verified.signer.chain[1].id.clone();
    settings.set_audited_payload(&inter[..12], Mode::All, "Foo Inter").unwrap();
    let decision = settings.decide_verified(&verified);
    assert!(decision.accepted, "{}", decision.reason);
    assert_eq!(decision.rule, DecidingRule::AuditedPayload { certificate_id: inter, mode: Mode::All });
}

#[test]
fn yagna_unrestricted_manifest_asks_for_any_https_url() {
    let Some(v) = vectors("yagna_unrestricted_manifest_asks_for_any_https_url") else { return };
    let m = parse_manifest_json(&v.file("outbound_manifest_unrestricted.json")).unwrap();
    assert_eq!(m.outbound_access(), OutboundAccess::Unrestricted);
    assert!(m.url_allowed("https", "anything.example", 443));
    assert!(!m.url_allowed("http", "anything.example", 80));
    // Unrestricted access is never allowed by a whitelist.
    let mut settings = TrustSettings::default();
    settings.whitelist.add(".*", MatchMode::Regex).unwrap();
    let decision = settings.decide(&m, None);
    assert!(!decision.accepted);
    assert!(decision.reason.contains("unrestricted"), "{}", decision.reason);
}

#[test]
fn yagna_expired_and_not_yet_valid_certificates_are_rejected() {
    let Some(v) = vectors("yagna_expired_and_not_yet_valid_certificates_are_rejected") else { return };
    let (data, sig) = v.data();
    let expired = v.cert("expired.pem");
    let err = Keystore::new().add(expired, when()).unwrap_err();
    assert!(matches!(err, TrustError::ExpiredCertificate { .. }), "{err}");
    let keystore = v.keystore(&["expired.pem"]);
    let err = verify_signature(&data, &sig, "sha256", expired, &keystore, when()).unwrap_err();
    assert!(matches!(err, VerifyError::CertificateExpired { .. }), "{err}");

    let not_yet = v.cert("not_yet_valid.pem");
    let keystore = v.keystore(&["not_yet_valid.pem"]);
    let err = verify_signature(&data, &sig, "sha256", not_yet, &keystore, when()).unwrap_err();
    assert!(matches!(err, VerifyError::CertificateNotYetValid { .. }), "{err}");
}

#[test]
fn golem_manifests_validate_against_the_schema_file() {
    let Some(v) = vectors("golem_manifests_validate_against_the_schema_file") else { return };
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/schema/computation-payload-manifest.schema.json");
    let schema: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let mut compiler = boon::Compiler::new();
    compiler.add_resource("urn:test:schema", schema).unwrap();
    let mut schemas = boon::Schemas::new();
    let index = compiler.compile("urn:test:schema", &mut schemas).unwrap();
    for name in ["outbound_manifest.json", "outbound_manifest_unrestricted.json"] {
        let doc: serde_json::Value = serde_json::from_slice(&v.file(name)).unwrap();
        if let Err(e) = schemas.validate(&doc, index) {
            panic!("{name}: {e}");
        }
    }
    // data.json is signed data, not a manifest.
    let data = sealpod_payload::decode_manifest(&v.text("data.json.base64")).unwrap_err();
    assert!(data.to_string().contains("version"), "{data}");
}
