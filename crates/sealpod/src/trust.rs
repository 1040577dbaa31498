//! Commands for payload manifests and the provider's trust settings:
//! `manifest sign|verify`, `keystore`, `whitelist`, `rule`.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use sealpod_payload::{MatchMode, Mode, TrustSettings};

/// Where a provider keeps its trust settings.
#[derive(Args, Clone)]
pub struct TrustDir {
    /// The provider's state directory; settings live in its `trust/`.
    #[arg(long, default_value = "/var/lib/sealpod")]
    state_dir: PathBuf,
    /// The trust directory itself (overrides --state-dir).
    #[arg(long)]
    trust_dir: Option<PathBuf>,
}

impl TrustDir {
    /// The directory.
    pub fn path(&self) -> PathBuf {
        self.trust_dir.clone().unwrap_or_else(|| self.state_dir.join("trust"))
    }

    fn load(&self) -> Result<TrustSettings> {
        let dir = self.path();
        TrustSettings::load(&dir).with_context(|| format!("trust settings in {}", dir.display()))
    }
}

#[derive(Subcommand)]
pub enum KeystoreCommand {
    /// List trusted certificates.
    List(TrustDir),
    /// Add the certificates of a DER, PEM or PEM-chain file (or of its base64 text).
    Add {
        /// The certificate file.
        file: PathBuf,
        #[command(flatten)]
        dir: TrustDir,
    },
    /// Remove a certificate by a unique prefix of its id.
    Remove {
        /// Id prefix.
        id: String,
        #[command(flatten)]
        dir: TrustDir,
    },
}

#[derive(Subcommand)]
pub enum WhitelistCommand {
    /// List whitelisted domain patterns.
    List(TrustDir),
    /// Whitelist a domain pattern (matched against a URL's host).
    Add {
        /// The pattern.
        pattern: String,
        /// Treat the pattern as a regular expression (default: exact match).
        #[arg(long)]
        regex: bool,
        #[command(flatten)]
        dir: TrustDir,
    },
    /// Remove a pattern (by the pattern or its id).
    Remove {
        /// Pattern or id.
        pattern: String,
        #[command(flatten)]
        dir: TrustDir,
    },
}

#[derive(Subcommand)]
pub enum RuleCommand {
    /// Show the outbound rules.
    List(TrustDir),
    /// Change an outbound rule.
    Set {
        #[command(subcommand)]
        rule: RuleSet,
    },
}

#[derive(Subcommand)]
pub enum RuleSet {
    /// `outbound enable|disable`, `outbound everyone --mode M`,
    /// `outbound audited-payload (--cert-id ID | --import-cert FILE) --mode M`.
    Outbound {
        #[command(subcommand)]
        what: Outbound,
    },
}

#[derive(Subcommand)]
pub enum Outbound {
    /// Allow outbound access at all (then the rules below decide).
    Enable(TrustDir),
    /// Refuse every manifest that asks for outbound access.
    Disable(TrustDir),
    /// The rule for every signed manifest.
    Everyone {
        /// all, none or whitelist.
        #[arg(long)]
        mode: Mode,
        #[command(flatten)]
        dir: TrustDir,
    },
    /// The rule for manifests signed under one certificate (yagna's syntax:
    /// `audited-payload import-cert FILE --mode M` or `audited-payload cert-id ID --mode M`).
    AuditedPayload {
        #[command(subcommand)]
        cert: AuditedCert,
    },
}

#[derive(Subcommand)]
pub enum AuditedCert {
    /// Import a certificate file into the keystore and set the rule for it.
    ImportCert {
        /// DER, PEM or PEM chain, or its base64 text; the rule applies to its leaf.
        file: PathBuf,
        #[command(flatten)]
        rule: AuditedRule,
    },
    /// Set the rule for a certificate already in the keystore.
    CertId {
        /// Unique prefix of its id.
        id: String,
        #[command(flatten)]
        rule: AuditedRule,
    },
}

#[derive(Args)]
pub struct AuditedRule {
    /// all, none or whitelist.
    #[arg(long)]
    mode: Mode,
    /// A note for the operator.
    #[arg(long, default_value = "")]
    description: String,
    #[command(flatten)]
    dir: TrustDir,
}

#[derive(Args)]
pub struct SignArgs {
    /// The manifest JSON.
    manifest: PathBuf,
    /// The author's private key (PEM: RSA, EC P-256/P-384, Ed25519).
    #[arg(long)]
    key: PathBuf,
    /// The author's certificate: checked to hold the key's public half, so a
    /// mismatched pair is caught here rather than by a provider.
    #[arg(long)]
    cert: Option<PathBuf>,
    /// The digest: sha256, sha384, sha512, sha3-256…
    #[arg(long, default_value = "sha256")]
    digest: String,
    /// Where to write `<manifest>.base64` and `<manifest>.base64.sig`
    /// (default: beside the manifest).
    #[arg(long)]
    out_dir: Option<PathBuf>,
}

/// A signed payload manifest as given on the command line.
#[derive(Args, Clone)]
pub struct PayloadArgs {
    /// The manifest: JSON (`.json`, base64-encoded here exactly as
    /// `base64 -w0` would) or the base64 text that was signed.
    #[arg(long = "payload-manifest", requires_all = ["signature", "cert"])]
    pub payload_manifest: Option<PathBuf>,
    /// The signature: raw, as `openssl dgst -sign` writes it, or base64.
    #[arg(long = "signature", alias = "sig")]
    pub signature: Option<PathBuf>,
    /// The author's certificate: DER, PEM or PEM chain, or any of them in base64 (as `base64 author.crt.pem --wrap=0` writes it).
    #[arg(long = "cert")]
    pub cert: Option<PathBuf>,
    /// The digest the signature was made with.
    #[arg(long, default_value = "sha256")]
    pub signature_algorithm: String,
}

impl PayloadArgs {
    /// The wire form, if a manifest was given.
    pub fn load(&self) -> Result<Option<sealpod_proto::PayloadManifest>> {
        let (Some(m), Some(s), Some(c)) = (&self.payload_manifest, &self.signature, &self.cert) else {
            return Ok(None);
        };
        Ok(Some(sealpod_proto::PayloadManifest {
            manifest_base64: manifest_base64(m)?,
            signature: read_signature(s)?,
            signature_algorithm: self.signature_algorithm.clone(),
            certificate: std::fs::read(c).with_context(|| format!("reading {}", c.display()))?,
        }))
    }
}

fn manifest_base64(path: &Path) -> Result<String> {
    use base64::Engine;
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("json")) {
        Ok(base64::engine::general_purpose::STANDARD.encode(bytes))
    } else {
        String::from_utf8(bytes).with_context(|| format!("{} is not base64 text", path.display()))
    }
}

fn read_signature(path: &Path) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    // yagna ships signatures base64-encoded; openssl writes them raw.
    if let Ok(text) = std::str::from_utf8(&bytes) {
        if let Ok(decoded) = sealpod_payload::decode_signature_base64(text.trim()) {
            return Ok(decoded);
        }
    }
    Ok(bytes)
}

fn print<T: serde::Serialize>(json: bool, value: &T, text: impl FnOnce() -> String) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(value)?);
    } else {
        print!("{}", text());
    }
    Ok(())
}

pub fn sign(args: SignArgs, json: bool) -> Result<()> {
    let text = manifest_base64(&args.manifest)?;
    sealpod_payload::decode_manifest(&text)
        .with_context(|| format!("{} is not a valid payload manifest", args.manifest.display()))?;
    let key = std::fs::read_to_string(&args.key).with_context(|| format!("reading {}", args.key.display()))?;
    let signature = sealpod_payload::sign(&text, &key, &args.digest)?;
    if let Some(cert) = &args.cert {
        let pem = std::fs::read(cert).with_context(|| format!("reading {}", cert.display()))?;
        // The certificate vouches for itself here: only the key pairing is checked.
        let keystore = sealpod_payload::Keystore::from_certificates(&pem)?;
        sealpod_payload::verify_signature(
            text.as_bytes(),
            &signature,
            &args.digest,
            &pem,
            &keystore,
            SystemTime::now(),
        )
        .with_context(|| {
            format!("the signature does not verify with {}: key and certificate differ?", cert.display())
        })?;
    }
    let dir = args.out_dir.clone().unwrap_or_else(|| args.manifest.parent().map(Path::to_owned).unwrap_or_default());
    let name = args.manifest.file_name().context("manifest has no file name")?.to_string_lossy().into_owned();
    let b64 = dir.join(format!("{name}.base64"));
    let sig = dir.join(format!("{name}.base64.sig"));
    std::fs::write(&b64, &text)?;
    std::fs::write(&sig, &signature)?;
    print(json, &serde_json::json!({"manifest_base64": b64, "signature": sig, "digest": args.digest}), || {
        format!("signed: {} (signature {}, {})\n", b64.display(), sig.display(), args.digest)
    })
}

pub fn verify(payload: PayloadArgs, dir: TrustDir, json: bool) -> Result<()> {
    let Some(pm) = payload.load()? else { bail!("--payload-manifest, --signature and --cert are required") };
    let trust = dir.load()?;
    let verified = sealpod_payload::verify(
        &pm.manifest_base64,
        &pm.signature,
        &pm.signature_algorithm,
        &pm.certificate,
        &trust.keystore,
        SystemTime::now(),
    )?;
    let decision = trust.decide_verified(&verified);
    let chain: Vec<_> = verified.signer.chain.iter().collect();
    print(json, &serde_json::json!({"valid": true, "chain": chain, "decision": decision}), || {
        let mut out = String::from("signature valid\n");
        for c in &chain {
            out += &format!("  {} {}\n", &c.id[..16.min(c.id.len())], c.subject);
        }
        out += &format!("outbound: {} ({})\n", if decision.accepted { "accepted" } else { "refused" }, decision.reason);
        out
    })
}

pub fn keystore(cmd: KeystoreCommand, json: bool) -> Result<()> {
    match cmd {
        KeystoreCommand::List(dir) => {
            let trust = dir.load()?;
            let certs: Vec<_> = trust.keystore.list().collect();
            print(json, &certs, || {
                let mut out = String::new();
                if certs.is_empty() {
                    out += "the keystore is empty\n";
                }
                for c in &certs {
                    out += &format!("{}  {}  (until {})\n", &c.id[..16.min(c.id.len())], c.subject, c.not_after);
                }
                out
            })
        }
        KeystoreCommand::Add { file, dir } => {
            let mut trust = dir.load()?;
            let input = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let added = trust.add_certificates(&input, SystemTime::now())?;
            print(json, &added.added, || {
                added.added.iter().map(|c| format!("added {}  {}\n", &c.id[..16.min(c.id.len())], c.subject)).collect()
            })
        }
        KeystoreCommand::Remove { id, dir } => {
            let mut trust = dir.load()?;
            let removed = trust.remove_certificate(&id)?;
            print(json, &removed, || format!("removed {}  {}\n", removed.id, removed.subject))
        }
    }
}

pub fn whitelist(cmd: WhitelistCommand, json: bool) -> Result<()> {
    match cmd {
        WhitelistCommand::List(dir) => {
            let trust = dir.load()?;
            let entries = trust.whitelist.entries();
            print(json, &entries, || {
                entries.iter().map(|e| format!("{}  {}  {:?}\n", e.id(), e.domain, e.match_mode)).collect()
            })
        }
        WhitelistCommand::Add { pattern, regex, dir } => {
            let mut trust = dir.load()?;
            let mode = if regex { MatchMode::Regex } else { MatchMode::Strict };
            let added = trust.add_whitelist(&pattern, mode)?;
            print(json, &serde_json::json!({"pattern": pattern, "added": added}), || {
                if added {
                    format!("whitelisted {pattern}\n")
                } else {
                    format!("{pattern} was already whitelisted\n")
                }
            })
        }
        WhitelistCommand::Remove { pattern, dir } => {
            let mut trust = dir.load()?;
            let removed = trust.remove_whitelist(&pattern)?;
            print(json, &removed, || format!("removed {}\n", removed.domain))
        }
    }
}

pub fn rule(cmd: RuleCommand, json: bool) -> Result<()> {
    match cmd {
        RuleCommand::List(dir) => {
            let trust = dir.load()?;
            let rules = &trust.rules;
            print(json, rules, || {
                let o = &rules.outbound;
                let mut out = format!(
                    "outbound: {}\n  everyone: {:?}\n",
                    if o.enabled { "enabled" } else { "disabled" },
                    o.everyone
                );
                for (id, r) in &o.audited_payload {
                    out += &format!("  audited-payload {}: {:?} {}\n", &id[..16.min(id.len())], r.mode, r.description);
                }
                out
            })
        }
        RuleCommand::Set { rule: RuleSet::Outbound { what } } => {
            let (_, what_done) = match what {
                Outbound::Enable(dir) => {
                    let mut t = dir.load()?;
                    t.set_outbound_enabled(true)?;
                    (t, "outbound access enabled".to_string())
                }
                Outbound::Disable(dir) => {
                    let mut t = dir.load()?;
                    t.set_outbound_enabled(false)?;
                    (t, "outbound access disabled".to_string())
                }
                Outbound::Everyone { mode, dir } => {
                    let mut t = dir.load()?;
                    t.set_everyone(mode)?;
                    (t, format!("everyone: {mode:?}"))
                }
                Outbound::AuditedPayload { cert: AuditedCert::CertId { id, rule } } => {
                    let mut t = rule.dir.load()?;
                    let cert = t.set_audited_payload(&id, rule.mode, &rule.description)?;
                    (t, format!("audited-payload {:?} for {}", rule.mode, cert.id))
                }
                Outbound::AuditedPayload { cert: AuditedCert::ImportCert { file, rule } } => {
                    let mut t = rule.dir.load()?;
                    let input = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
                    let ids: Vec<String> = t
                        .set_audited_payload_import(&input, rule.mode, &rule.description, SystemTime::now())?
                        .into_iter()
                        .map(|c| c.id)
                        .collect();
                    (t, format!("audited-payload {:?} for {}", rule.mode, ids.join(", ")))
                }
            };
            print(json, &serde_json::json!({"done": what_done}), || format!("{what_done}\n"))
        }
    }
}
