//! The provider's trust settings on disk: keystore, whitelist and rules, as
//! the CLI changes them and a running provider re-reads them.

mod common;

use std::collections::HashMap;

use common::{now, Openssl};
use sealpod_payload::{Keystore, MatchMode, Mode, TrustError, TrustSettings};

/// Self-signed CA certificates, all with one EC key (fast to make).
fn cas(ssl: &Openssl, count: usize) -> Vec<Vec<u8>> {
    ssl.ec_key("ca.key", "prime256v1");
    (0..count)
        .map(|i| {
            let out = format!("ca{i}.pem");
            let subject = format!("/O=Seal Test/CN=CA {i}");
            ssl.run(&[
                "req",
                "-x509",
                "-key",
                "ca.key",
                "-out",
                &out,
                "-days",
                "30",
                "-subj",
                &subject,
                "-addext",
                "basicConstraints=critical,CA:TRUE",
            ]);
            ssl.read(&out)
        })
        .collect()
}

fn files(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

#[test]
fn starts_with_defaults_in_an_empty_directory() {
    let dir = tempfile::tempdir().unwrap();
    let settings = TrustSettings::load(dir.path()).unwrap();
    assert!(settings.keystore.is_empty());
    assert!(settings.whitelist.entries().is_empty());
    assert!(settings.rules.outbound.enabled);
    assert_eq!(settings.rules.outbound.everyone, Mode::Whitelist);
    assert!(!settings.changed_on_disk());
    assert!(files(dir.path()).is_empty(), "loading writes nothing");
}

#[test]
fn keystore_adds_lists_and_removes_by_unique_id_prefix() {
    let ssl = Openssl::new();
    let certs = cas(&ssl, 2);
    let dir = tempfile::tempdir().unwrap();
    let mut settings = TrustSettings::load(dir.path()).unwrap();
    let mut chain = certs[0].clone();
    chain.extend(&certs[1]);
    let added = settings.add_certificates(&chain, now()).unwrap();
    assert_eq!(added.added.len(), 2);
    let again = settings.add_certificates(&certs[0], now()).unwrap();
    assert!(again.added.is_empty());
    assert_eq!(again.already_present.len(), 1);
    let keystore_files = files(&dir.path().join("keystore"));
    assert_eq!(keystore_files.len(), 2);
    assert!(keystore_files.iter().all(|f| f.len() == 128 + 4 && f.ends_with(".pem")), "{keystore_files:?}");

    let listed: Vec<_> = TrustSettings::load(dir.path()).unwrap().keystore.list().cloned().collect();
    assert_eq!(listed.len(), 2);
    assert!(listed[0].subject.starts_with("O=Seal Test, CN=CA "), "{}", listed[0].subject);
    assert!(listed.iter().all(|c| c.is_ca && std::time::SystemTime::from(c.not_after) > now()));

    let id = added.added[1].id.clone();
    let removed = settings.remove_certificate(&id[..10].to_uppercase()).unwrap();
    assert_eq!(removed.id, id);
    assert_eq!(files(&dir.path().join("keystore")).len(), 1);
    assert_eq!(TrustSettings::load(dir.path()).unwrap().keystore.len(), 1);
    assert!(matches!(settings.remove_certificate(&id[..10]), Err(TrustError::UnknownId { .. })));
    assert!(matches!(settings.remove_certificate("not-hex"), Err(TrustError::InvalidId { .. })));
}

#[test]
fn keystore_refuses_an_ambiguous_id_prefix() {
    let ssl = Openssl::new();
    // Seventeen certificates: two of them must share their first hex digit.
    let mut keystore = Keystore::new();
    let mut by_digit: HashMap<char, usize> = HashMap::new();
    for cert in cas(&ssl, 17) {
        let added = keystore.add(&cert, now()).unwrap();
        *by_digit.entry(added.added[0].id.chars().next().unwrap()).or_default() += 1;
    }
    let (digit, _) = by_digit.iter().find(|(_, n)| **n > 1).unwrap();
    match keystore.find(&digit.to_string()) {
        Err(TrustError::AmbiguousId { candidates, .. }) => {
            assert!(candidates.len() > 1);
            assert!(candidates[0].contains("CN=CA"), "{candidates:?}");
        }
        other => panic!("{other:?}"),
    }
    let err = keystore.remove(&digit.to_string()).unwrap_err();
    assert!(err.to_string().contains("ambiguous"), "{err}");
    assert_eq!(keystore.len(), 17);
}

#[test]
fn keystore_reads_files_dropped_in_by_hand_and_skips_strays() {
    let ssl = Openssl::new();
    let certs = cas(&ssl, 3);
    let dir = tempfile::tempdir().unwrap();
    let keystore_dir = dir.path().join("keystore");
    std::fs::create_dir_all(&keystore_dir).unwrap();
    let mut bundle = certs[0].clone();
    bundle.extend(&certs[1]);
    std::fs::write(keystore_dir.join("bundle.crt"), &bundle).unwrap();
    ssl.run(&["x509", "-in", "ca2.pem", "-outform", "DER", "-out", "ca2.der"]);
    std::fs::write(keystore_dir.join("root.der"), ssl.read("ca2.der")).unwrap();
    std::fs::write(keystore_dir.join("README.txt"), "not a certificate").unwrap();
    std::fs::write(keystore_dir.join(".hidden"), "ignored").unwrap();

    let mut settings = TrustSettings::load(dir.path()).unwrap();
    assert_eq!(settings.keystore.len(), 3);
    assert_eq!(settings.keystore.skipped().len(), 1);
    assert!(settings.keystore.skipped()[0].path.ends_with("README.txt"));

    // Removing one certificate of the bundle rewrites the bundle with the other.
    let first = settings.keystore.list().next().unwrap().id.clone();
    settings.remove_certificate(&first).unwrap();
    let rest = Keystore::open(&keystore_dir).unwrap();
    assert_eq!(rest.len(), 2);
    assert!(!rest.contains(&first));
    assert!(keystore_dir.join("bundle.crt").exists());
}

#[test]
fn keystore_refuses_an_expired_certificate() {
    let ssl = Openssl::new();
    let certs = cas(&ssl, 1);
    let dir = tempfile::tempdir().unwrap();
    let mut settings = TrustSettings::load(dir.path()).unwrap();
    let err = settings.add_certificates(&certs[0], now() + common::days(31)).unwrap_err();
    assert!(matches!(err, TrustError::ExpiredCertificate { .. }), "{err}");
    assert!(!dir.path().join("keystore").exists() || files(&dir.path().join("keystore")).is_empty());
    let err = settings.add_certificates(b"garbage", now()).unwrap_err();
    assert!(matches!(err, TrustError::Certificate(_)), "{err}");
}

#[test]
fn whitelist_and_rules_persist_in_yagnas_formats() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = TrustSettings::load(dir.path()).unwrap();
    assert!(settings.add_whitelist("api.example.org", MatchMode::Strict).unwrap());
    assert!(!settings.add_whitelist("API.example.org", MatchMode::Strict).unwrap());
    assert!(settings.add_whitelist(r"(.*\.)?ipfs\.io", MatchMode::Regex).unwrap());
    assert!(matches!(settings.add_whitelist("([", MatchMode::Regex), Err(TrustError::InvalidPattern { .. })));
    settings.set_everyone(Mode::All).unwrap();
    settings.set_outbound_enabled(false).unwrap();

    let whitelist: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("whitelist.json")).unwrap()).unwrap();
    assert_eq!(whitelist["patterns"][0]["domain"], "api.example.org");
    assert_eq!(whitelist["patterns"][0]["match"], "strict");
    assert_eq!(whitelist["patterns"][1]["match"], "regex");
    let rules: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("rules.json")).unwrap()).unwrap();
    assert_eq!(rules["outbound"]["enabled"], false);
    assert_eq!(rules["outbound"]["everyone"], "all");

    let reloaded = TrustSettings::load(dir.path()).unwrap();
    assert!(reloaded.whitelist.allows("api.example.org"));
    assert!(reloaded.whitelist.allows("gateway.ipfs.io"));
    assert!(!reloaded.whitelist.allows("ipfs.io.example"));
    assert!(!reloaded.rules.outbound.enabled);

    let removed = settings.remove_whitelist("api.example.org").unwrap();
    assert_eq!(removed.match_mode, MatchMode::Strict);
    assert!(matches!(settings.remove_whitelist("api.example.org"), Err(TrustError::UnknownPattern(_))));
    let leftovers: Vec<String> = files(dir.path()).into_iter().filter(|f| f.starts_with('.')).collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

#[test]
fn a_running_provider_sees_changes_made_by_another_process() {
    let ssl = Openssl::new();
    let certs = cas(&ssl, 1);
    let dir = tempfile::tempdir().unwrap();
    let mut provider = TrustSettings::load(dir.path()).unwrap();
    let mut cli = TrustSettings::load(dir.path()).unwrap();

    cli.add_whitelist("a.example", MatchMode::Strict).unwrap();
    assert!(provider.changed_on_disk());
    assert!(provider.reload_if_changed().unwrap());
    assert!(provider.whitelist.allows("a.example"));
    assert!(!provider.reload_if_changed().unwrap());

    cli.set_everyone(Mode::None).unwrap();
    assert!(provider.reload_if_changed().unwrap());
    assert_eq!(provider.rules.outbound.everyone, Mode::None);

    cli.add_certificates(&certs[0], now()).unwrap();
    assert!(provider.reload_if_changed().unwrap());
    assert_eq!(provider.keystore.len(), 1);

    // A process does not see its own writes as changes.
    assert!(!cli.changed_on_disk());
}

#[test]
fn audited_payload_rules_follow_keystore_ids() {
    let ssl = Openssl::new();
    let certs = cas(&ssl, 2);
    let dir = tempfile::tempdir().unwrap();
    let mut settings = TrustSettings::load(dir.path()).unwrap();
    let leaves = settings.set_audited_payload_import(&certs[0], Mode::All, "imported", now()).unwrap();
    assert_eq!(leaves.len(), 1);
    assert_eq!(settings.rules.outbound.audited_payload[&leaves[0].id].description, "imported");

    let added = settings.add_certificates(&certs[1], now()).unwrap();
    let id = added.added[0].id.clone();
    let cert = settings.set_audited_payload(&id[..8], Mode::Whitelist, "").unwrap();
    assert_eq!(cert.id, id);
    assert!(matches!(
        settings.set_audited_payload("ffffffffffffffffff", Mode::All, ""),
        Err(TrustError::UnknownId { .. })
    ));
    assert_eq!(TrustSettings::load(dir.path()).unwrap().rules.outbound.audited_payload.len(), 2);

    assert_eq!(settings.remove_audited_payload(&id[..8]).unwrap(), id);
    // Removing a certificate removes its rule.
    settings.remove_certificate(&leaves[0].id).unwrap();
    assert!(TrustSettings::load(dir.path()).unwrap().rules.outbound.audited_payload.is_empty());
}

#[test]
fn malformed_settings_files_name_the_file_and_field() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("rules.json"), r#"{"outbound": {"enabled": true, "everyone": "sometimes"}}"#)
        .unwrap();
    let err = TrustSettings::load(dir.path()).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("rules.json") && text.contains("outbound.everyone"), "{text}");

    std::fs::write(dir.path().join("rules.json"), r#"{"outbound": {"enabled": true, "everyone": "all"}}"#).unwrap();
    std::fs::write(dir.path().join("whitelist.json"), r#"{"patterns": [{"domain": "(", "match": "regex"}]}"#).unwrap();
    let text = TrustSettings::load(dir.path()).unwrap_err().to_string();
    assert!(text.contains("whitelist.json") && text.contains("`(`"), "{text}");
    // yagna's default match for a pattern without one is regex.
    std::fs::write(dir.path().join("whitelist.json"), r#"{"patterns": [{"domain": ".*\\.example"}]}"#).unwrap();
    let settings = TrustSettings::load(dir.path()).unwrap();
    assert!(settings.whitelist.allows("a.example"));
}
