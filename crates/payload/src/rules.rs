//! Outbound rules and the accept/reject decision, in Golem's order.
//!
//! The file format is yagna's `rules.json`:
//! `{"outbound": {"enabled": true, "everyone": "whitelist",
//! "audited-payload": {"<cert id>": {"mode": "all", "description": ""}}, "partner": {}}}`.
//! `partner` rules (Golem node descriptors) are read and written back but
//! never match: sealpod has no node descriptors.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use url::Url;

use crate::manifest::{OutboundAccess, PayloadManifest};
use crate::verify::VerifiedSigner;
use crate::whitelist::Whitelist;

/// What an outbound rule allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Any outbound access the manifest asks for.
    All,
    /// None.
    None,
    /// URLs whose hosts are all on the whitelist (never unrestricted access).
    Whitelist,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::All => "all",
            Mode::None => "none",
            Mode::Whitelist => "whitelist",
        })
    }
}

impl std::str::FromStr for Mode {
    type Err = String;

    fn from_str(s: &str) -> Result<Mode, String> {
        match s.to_ascii_lowercase().as_str() {
            "all" => Ok(Mode::All),
            "none" => Ok(Mode::None),
            "whitelist" => Ok(Mode::Whitelist),
            _ => Err(format!("unknown mode `{s}`: expected all, none or whitelist")),
        }
    }
}

/// A rule for one certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertRule {
    /// What it allows.
    pub mode: Mode,
    /// Free text, for the operator.
    #[serde(default)]
    pub description: String,
}

/// The `outbound` section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct OutboundRules {
    /// Whether outbound access is possible at all.
    pub enabled: bool,
    /// The rule for any requestor, signed or not.
    pub everyone: Mode,
    /// Rules for manifests signed by a chain that contains the certificate with this id.
    #[serde(default)]
    pub audited_payload: BTreeMap<String, CertRule>,
    /// Golem partner rules: kept, never matched.
    #[serde(default)]
    pub partner: BTreeMap<String, CertRule>,
}

/// The provider's rules (yagna's defaults: outbound enabled, `everyone` whitelist).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rules {
    /// Outbound network access.
    pub outbound: OutboundRules,
}

impl Default for Rules {
    fn default() -> Rules {
        Rules {
            outbound: OutboundRules {
                enabled: true,
                everyone: Mode::Whitelist,
                audited_payload: BTreeMap::new(),
                partner: BTreeMap::new(),
            },
        }
    }
}

/// The rule that decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "rule", rename_all = "kebab-case")]
pub enum DecidingRule {
    /// The manifest asks for no outbound access: nothing to decide.
    NoOutboundRequested,
    /// Outbound access is disabled on this provider.
    OutboundDisabled,
    /// The `everyone` rule.
    Everyone {
        /// Its mode.
        mode: Mode,
    },
    /// The `audited-payload` rule for a certificate on the signer's chain.
    AuditedPayload {
        /// The certificate's id.
        certificate_id: String,
        /// The rule's mode.
        mode: Mode,
    },
}

/// Whether a manifest's outbound access is accepted, which rule decided, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// Accepted or not.
    pub accepted: bool,
    /// The deciding rule: for a rejection by both rules, the `audited-payload`
    /// rule if one applied to the chain, else `everyone`.
    pub rule: DecidingRule,
    /// One sentence per rule consulted, for the operator and the publisher.
    pub reason: String,
}

fn hosts(urls: &[Url]) -> Vec<String> {
    urls.iter().map(|u| u.host_str().unwrap_or_default().to_string()).collect()
}

/// What `mode` makes of `access`: `Ok` with why it allows, `Err` with why not.
fn check_mode(mode: Mode, access: OutboundAccess<'_>, whitelist: &Whitelist) -> Result<String, String> {
    match (mode, access) {
        (Mode::All, _) => Ok("allows any outbound access".into()),
        (Mode::None, _) => Err("allows no outbound access".into()),
        (Mode::Whitelist, OutboundAccess::Unrestricted) => {
            Err("the manifest asks for unrestricted outbound access, which a whitelist cannot allow".into())
        }
        (Mode::Whitelist, OutboundAccess::Urls(urls)) => {
            let refused: Vec<String> = hosts(urls).into_iter().filter(|h| !whitelist.allows(h)).collect();
            match refused.as_slice() {
                [] => Ok("every requested host is whitelisted".into()),
                [one] => Err(format!("host {one} is not whitelisted")),
                many => Err(format!("hosts {} are not whitelisted", many.join(", "))),
            }
        }
        (Mode::Whitelist, OutboundAccess::None) => Ok("nothing is requested".into()),
    }
}

/// Decides whether `manifest`'s outbound access is accepted, in Golem's order:
///
/// 1. no outbound access requested: accept;
/// 2. outbound disabled: reject;
/// 3. the `everyone` rule allows it: accept;
/// 4. the `audited-payload` rule for the certificate closest to the leaf on
///    the verified chain that has one allows it: accept (yagna: "rule set for
///    certificate closest to leaf takes precedence");
/// 5. otherwise reject, naming each rule's refusal.
///
/// `signer` is the verified signer (`None` for an unsigned manifest, or one
/// whose signature did not verify: then only `everyone` can accept it).
pub fn decide(
    rules: &Rules,
    whitelist: &Whitelist,
    manifest: &PayloadManifest,
    signer: Option<&VerifiedSigner>,
) -> Decision {
    let access = manifest.outbound_access();
    if access == OutboundAccess::None {
        return Decision {
            accepted: true,
            rule: DecidingRule::NoOutboundRequested,
            reason: "the manifest asks for no outbound access".into(),
        };
    }
    let outbound = &rules.outbound;
    if !outbound.enabled {
        return Decision {
            accepted: false,
            rule: DecidingRule::OutboundDisabled,
            reason: "outbound access is disabled on this provider (`sealpod rule set outbound enable` turns it on)"
                .into(),
        };
    }
    let everyone = DecidingRule::Everyone { mode: outbound.everyone };
    let everyone_refusal = match check_mode(outbound.everyone, access, whitelist) {
        Ok(why) => {
            return Decision {
                accepted: true,
                rule: everyone,
                reason: format!("outbound rule `everyone` (mode {}) allows it: {why}", outbound.everyone),
            };
        }
        Err(why) => format!("outbound rule `everyone` (mode {}) refused: {why}", outbound.everyone),
    };
    let Some(signer) = signer else {
        return Decision {
            accepted: false,
            rule: everyone,
            reason: format!(
                "{everyone_refusal}; outbound rule `audited-payload` refused: the manifest is not signed by a \
                 trusted certificate"
            ),
        };
    };
    let applicable = signer.chain.iter().find_map(|cert| outbound.audited_payload.get(&cert.id).map(|r| (cert, r)));
    let Some((cert, rule)) = applicable else {
        let subjects: Vec<&str> = signer.chain.iter().map(|c| c.subject.as_str()).collect();
        return Decision {
            accepted: false,
            rule: everyone,
            reason: format!(
                "{everyone_refusal}; outbound rule `audited-payload` refused: no rule for any certificate on the \
                 signer's chain ({})",
                subjects.join(" <- ")
            ),
        };
    };
    let audited = DecidingRule::AuditedPayload { certificate_id: cert.id.clone(), mode: rule.mode };
    let name = format!("outbound rule `audited-payload` for certificate {} ({})", cert.short_id(), cert.subject);
    match check_mode(rule.mode, access, whitelist) {
        Ok(why) => {
            Decision { accepted: true, rule: audited, reason: format!("{name} (mode {}) allows it: {why}", rule.mode) }
        }
        Err(why) => Decision {
            accepted: false,
            rule: audited,
            reason: format!("{everyone_refusal}; {name} (mode {}) refused: {why}", rule.mode),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::DigestAlgorithm;
    use crate::manifest::{parse_manifest_json, MatchMode};
    use crate::x509::CertificateInfo;

    fn manifest(out: &str) -> PayloadManifest {
        let net = if out.is_empty() { String::new() } else { format!(r#", "net": {{"inet": {{"out": {out}}}}}"#) };
        let json = format!(
            r#"{{"version": "0.1.0", "createdAt": "2024-01-01T00:00:00Z", "expiresAt": "2100-01-01T00:00:00Z",
               "payload": [{{"urls": [], "hash": "sha256:{}"}}], "compManifest": {{"version": "0.1.0"{net}}}}}"#,
            "00".repeat(32)
        );
        parse_manifest_json(json.as_bytes()).unwrap()
    }

    fn urls(hosts: &[&str]) -> PayloadManifest {
        let list: Vec<String> = hosts.iter().map(|h| format!("\"https://{h}/x\"")).collect();
        manifest(&format!(r#"{{"urls": [{}]}}"#, list.join(", ")))
    }

    fn unrestricted() -> PayloadManifest {
        manifest(r#"{"unrestricted": {"urls": true}}"#)
    }

    fn cert(id: &str, subject: &str) -> CertificateInfo {
        CertificateInfo {
            id: id.repeat(128 / id.len()),
            subject: subject.into(),
            issuer: String::new(),
            not_before: chrono::DateTime::<chrono::Utc>::MIN_UTC,
            not_after: chrono::DateTime::<chrono::Utc>::MAX_UTC,
            is_ca: false,
        }
    }

    /// leaf (aa..) <- inter (bb..) <- root (cc..)
    fn signer() -> VerifiedSigner {
        VerifiedSigner {
            chain: vec![cert("aa", "CN=Leaf"), cert("bb", "CN=Inter"), cert("cc", "CN=Root")],
            trust_anchor: 2,
            digest: DigestAlgorithm::Sha256,
        }
    }

    fn rules(enabled: bool, everyone: Mode, audited: &[(&str, Mode)]) -> Rules {
        let mut rules = Rules::default();
        rules.outbound.enabled = enabled;
        rules.outbound.everyone = everyone;
        for (id, mode) in audited {
            rules.outbound.audited_payload.insert(id.repeat(64), CertRule { mode: *mode, description: String::new() });
        }
        rules
    }

    fn whitelist(strict: &[&str], regex: &[&str]) -> Whitelist {
        let mut w = Whitelist::new();
        for p in strict {
            w.add(p, MatchMode::Strict).unwrap();
        }
        for p in regex {
            w.add(p, MatchMode::Regex).unwrap();
        }
        w
    }

    #[test]
    fn accepts_a_manifest_that_asks_for_no_outbound_access_whatever_the_rules() {
        for m in [manifest(""), manifest(r#"{"urls": []}"#)] {
            let d = decide(&rules(false, Mode::None, &[]), &Whitelist::new(), &m, None);
            assert!(d.accepted);
            assert_eq!(d.rule, DecidingRule::NoOutboundRequested);
        }
    }

    #[test]
    fn rejects_everything_when_outbound_is_disabled() {
        let r = rules(false, Mode::All, &[("a", Mode::All)]);
        for m in [urls(&["a.example"]), unrestricted()] {
            let d = decide(&r, &Whitelist::new(), &m, Some(&signer()));
            assert!(!d.accepted);
            assert_eq!(d.rule, DecidingRule::OutboundDisabled);
            assert!(d.reason.contains("disabled"));
        }
    }

    #[test]
    fn everyone_all_accepts_urls_and_unrestricted_access() {
        for m in [urls(&["a.example"]), unrestricted()] {
            let d = decide(&rules(true, Mode::All, &[]), &Whitelist::new(), &m, None);
            assert!(d.accepted);
            assert_eq!(d.rule, DecidingRule::Everyone { mode: Mode::All });
        }
    }

    #[test]
    fn everyone_none_refuses_and_says_so() {
        let d = decide(&rules(true, Mode::None, &[]), &Whitelist::new(), &urls(&["a.example"]), None);
        assert!(!d.accepted);
        assert_eq!(d.rule, DecidingRule::Everyone { mode: Mode::None });
        assert!(d.reason.starts_with("outbound rule `everyone` (mode none) refused"), "{}", d.reason);
        assert!(d.reason.contains("not signed"), "{}", d.reason);
    }

    #[test]
    fn everyone_whitelist_needs_every_host_whitelisted() {
        let r = rules(true, Mode::Whitelist, &[]);
        let w = whitelist(&["a.example"], &[r"(.*\.)?b\.example"]);
        let d = decide(&r, &w, &urls(&["a.example", "api.b.example", "b.example"]), None);
        assert!(d.accepted, "{}", d.reason);
        let d = decide(&r, &w, &urls(&["a.example", "example.org"]), None);
        assert!(!d.accepted);
        assert!(
            d.reason.contains("outbound rule `everyone` (mode whitelist) refused: host example.org is not whitelisted"),
            "{}",
            d.reason
        );
        let d = decide(&r, &w, &urls(&["www.a.example", "c.example"]), None);
        assert!(d.reason.contains("hosts www.a.example, c.example are not whitelisted"), "{}", d.reason);
        let d = decide(&r, &whitelist(&[], &[".*"]), &unrestricted(), None);
        assert!(!d.accepted);
        assert!(d.reason.contains("unrestricted"), "{}", d.reason);
    }

    #[test]
    fn audited_payload_rule_for_a_chain_certificate_accepts() {
        for id in ["aa", "bb", "cc"] {
            let r = rules(true, Mode::None, &[(id, Mode::All)]);
            let d = decide(&r, &Whitelist::new(), &unrestricted(), Some(&signer()));
            assert!(d.accepted, "{id}: {}", d.reason);
            assert_eq!(d.rule, DecidingRule::AuditedPayload { certificate_id: id.repeat(64), mode: Mode::All });
        }
    }

    #[test]
    fn audited_payload_rule_needs_a_verified_signer() {
        let r = rules(true, Mode::None, &[("aa", Mode::All)]);
        let d = decide(&r, &Whitelist::new(), &urls(&["a.example"]), None);
        assert!(!d.accepted);
        assert_eq!(d.rule, DecidingRule::Everyone { mode: Mode::None });
    }

    #[test]
    fn audited_payload_without_a_rule_for_the_chain_refuses() {
        let r = rules(true, Mode::None, &[("dd", Mode::All)]);
        let d = decide(&r, &Whitelist::new(), &urls(&["a.example"]), Some(&signer()));
        assert!(!d.accepted);
        assert_eq!(d.rule, DecidingRule::Everyone { mode: Mode::None });
        assert!(d
            .reason
            .contains("no rule for any certificate on the signer's chain (CN=Leaf <- CN=Inter <- CN=Root)"));
    }

    #[test]
    fn the_rule_closest_to_the_leaf_decides() {
        let r = rules(true, Mode::None, &[("bb", Mode::None), ("cc", Mode::All)]);
        let d = decide(&r, &Whitelist::new(), &urls(&["a.example"]), Some(&signer()));
        assert!(!d.accepted);
        assert_eq!(d.rule, DecidingRule::AuditedPayload { certificate_id: "bb".repeat(64), mode: Mode::None });
        assert!(
            d.reason.contains(
                "outbound rule `audited-payload` for certificate bbbbbbbbbbbbbbbb (CN=Inter) (mode none) refused"
            ),
            "{}",
            d.reason
        );
        let r = rules(true, Mode::None, &[("aa", Mode::All), ("cc", Mode::None)]);
        assert!(decide(&r, &Whitelist::new(), &urls(&["a.example"]), Some(&signer())).accepted);
    }

    #[test]
    fn audited_payload_whitelist_mode_uses_the_whitelist() {
        let r = rules(true, Mode::None, &[("cc", Mode::Whitelist)]);
        let w = whitelist(&["a.example"], &[]);
        assert!(decide(&r, &w, &urls(&["a.example"]), Some(&signer())).accepted);
        let d = decide(&r, &w, &urls(&["b.example"]), Some(&signer()));
        assert!(!d.accepted);
        assert!(d.reason.contains("(mode whitelist) refused: host b.example is not whitelisted"), "{}", d.reason);
        assert!(!decide(&r, &w, &unrestricted(), Some(&signer())).accepted);
    }

    #[test]
    fn everyone_accepting_wins_over_a_refusing_audited_rule() {
        let r = rules(true, Mode::Whitelist, &[("aa", Mode::None)]);
        let w = whitelist(&["a.example"], &[]);
        let d = decide(&r, &w, &urls(&["a.example"]), Some(&signer()));
        assert!(d.accepted);
        assert_eq!(d.rule, DecidingRule::Everyone { mode: Mode::Whitelist });
    }

    #[test]
    fn rules_file_uses_yagnas_names() {
        let json = serde_json::to_value(rules(true, Mode::Whitelist, &[("aa", Mode::All)])).unwrap();
        assert_eq!(json["outbound"]["everyone"], "whitelist");
        assert_eq!(json["outbound"]["audited-payload"]["aa".repeat(64)]["mode"], "all");
        let back: Rules = serde_json::from_value(json).unwrap();
        assert_eq!(back.outbound.audited_payload.len(), 1);
        assert_eq!("Whitelist".parse::<Mode>(), Ok(Mode::Whitelist));
        assert!("some".parse::<Mode>().is_err());
    }
}
