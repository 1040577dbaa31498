//! `sealpod attest`: attest a live provider, or verify evidence files
//! offline; and the attestation flags `deploy` takes.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use sealpod_attest::{Claims, Details, Evidence, Kind, Policy};
use sealpod_publisher::{AttestOptions, Attested};

/// `sealpod attest PROVIDER` or `sealpod attest verify ...`.
#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct AttestCommand {
    /// The provider's multiaddr, ending in /p2p/<peer id>.
    pub provider: Option<String>,
    #[command(flatten)]
    pub options: AttestArgs,
    #[command(subcommand)]
    pub command: Option<AttestSub>,
}

/// Offline work on evidence and policies.
#[derive(Subcommand)]
pub enum AttestSub {
    /// Verify evidence files offline. Exit 0 when accepted.
    Verify(VerifyArgs),
    /// Verify an NVIDIA GPU's SPDM measurement report offline against the
    /// pinned NVIDIA device root. Exit 0 when accepted.
    VerifyGpu(VerifyGpuArgs),
    /// Print the policy in force (the file, or the default) as TOML.
    Policy {
        /// The policy file (default: $SEALPOD_HOME/attestation-policy.toml).
        #[arg(long)]
        policy: Option<PathBuf>,
    },
}

/// The publisher's attestation choices.
#[derive(Args, Clone, Default)]
pub struct AttestArgs {
    /// The attestation policy (TOML; default: $SEALPOD_HOME/attestation-policy.toml
    /// if present, else the built-in default).
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// Accept a provider's INSECURE DEV attestation (a node-key signature, no
    /// TEE). For testing only: nothing protects secrets on such a provider.
    #[arg(long)]
    pub allow_insecure_dev: bool,
}

/// `deploy`'s attestation flags.
#[derive(Args, Clone, Default)]
pub struct DeployAttestArgs {
    #[command(flatten)]
    pub attest: AttestArgs,
    /// Attest the provider even when the pod carries no secret.
    #[arg(long)]
    pub require_attestation: bool,
}

/// `sealpod attest verify`.
#[derive(Args)]
pub struct VerifyArgs {
    /// The evidence's kind.
    #[arg(long, value_parser = ["tdx", "sgx", "snp"])]
    pub kind: String,
    /// The quote or report, raw or hex.
    #[arg(long)]
    pub evidence: PathBuf,
    /// TDX/SGX: the DCAP collateral JSON. SNP: the VCEK or VLEK, then
    /// optionally the ASK (or ASVK) and ARK; DER or PEM, bundles allowed.
    #[arg(long)]
    pub collateral: Vec<PathBuf>,
    /// Verify as of this time (RFC 3339; default: now).
    #[arg(long, value_name = "RFC3339")]
    pub at: Option<String>,
    /// The policy file (default: $SEALPOD_HOME/attestation-policy.toml, else built-in).
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// The report data the evidence must carry (hex, at most 64 bytes, zero-padded).
    #[arg(long, value_name = "HEX")]
    pub report_data: Option<String>,
}

/// `sealpod attest verify-gpu`.
#[derive(Args)]
pub struct VerifyGpuArgs {
    /// The SPDM GET_MEASUREMENTS request and response, raw or hex.
    #[arg(long)]
    pub report: PathBuf,
    /// The device certificate chain (PEM, or DER concatenated), leaf first.
    #[arg(long)]
    pub certs: PathBuf,
    /// The nonce the report must carry (32 bytes, hex).
    #[arg(long, value_name = "HEX")]
    pub nonce: String,
    /// Verify as of this time (RFC 3339; default: now).
    #[arg(long, value_name = "RFC3339")]
    pub at: Option<String>,
    /// The policy file whose [gpu] measurements the report must match
    /// (default: $SEALPOD_HOME/attestation-policy.toml, else none pinned).
    #[arg(long)]
    pub policy: Option<PathBuf>,
}

/// The policy at `path`, or the home's, or the default.
pub fn load_policy(path: Option<&Path>, home: &Path) -> Result<Policy> {
    match path {
        Some(p) => Policy::load(p).map_err(anyhow::Error::msg),
        None => Policy::load_or_default(&home.join("attestation-policy.toml")).map_err(anyhow::Error::msg),
    }
}

impl AttestArgs {
    /// The options the publisher library takes.
    pub fn options(&self, home: &Path, require: bool) -> Result<AttestOptions> {
        Ok(AttestOptions {
            policy: load_policy(self.policy.as_deref(), home)?,
            allow_insecure_dev: self.allow_insecure_dev,
            require,
        })
    }
}

/// Runs `sealpod attest`.
pub fn run(cmd: AttestCommand, home: &Path, json: bool) -> Result<()> {
    match cmd.command {
        Some(AttestSub::Verify(args)) => verify(args, home, json),
        Some(AttestSub::VerifyGpu(args)) => verify_gpu(args, home, json),
        Some(AttestSub::Policy { policy }) => {
            let policy = load_policy(policy.as_deref(), home)?;
            print!("{}", policy.to_toml());
            Ok(())
        }
        None => {
            let Some(provider) = cmd.provider else {
                bail!("name a provider (a multiaddr ending in /p2p/<peer id>), or use `sealpod attest verify`");
            };
            let addr: sealpod_net::Multiaddr =
                provider.parse().with_context(|| format!("{provider:?} is not a multiaddr"))?;
            let options = cmd.options.options(home, true)?;
            crate::runtime()?.block_on(async {
                let publisher = sealpod_publisher::Publisher::open(home, vec![], false).await?;
                let attested = publisher.attest(&addr, &options).await?;
                print_attested(&attested, json)
            })
        }
    }
}

/// Prints a live attestation; shouts when it was the insecure dev kind.
pub fn print_attested(a: &Attested, json: bool) -> Result<()> {
    if json {
        let mut v = serde_json::to_value(&a.claims)?;
        v["accepted"] = true.into();
        v["provider"] = a.provider.clone().into();
        v["nonce"] = a.nonce.clone().into();
        if !a.gpus.is_empty() {
            v["gpus"] = serde_json::to_value(&a.gpus)?;
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("provider {} attested ({}), bound to nonce {}", a.provider, a.claims.kind, a.nonce);
        print!("{}", claims_text(&a.claims));
        for g in &a.gpus {
            println!("GPU {} attested: signed by {}", g.device, g.claims.signer);
            print!("{}", gpu_text(&g.claims));
        }
    }
    warn_if_insecure(&a.claims);
    Ok(())
}

/// The loud warning for the insecure dev kind, on standard error.
pub fn warn_if_insecure(claims: &Claims) {
    if claims.kind == Kind::InsecureDev {
        eprintln!(
            "WARNING: INSECURE DEV attestation accepted because --allow-insecure-dev was given.\n\
             WARNING: the provider proved only that it holds its node key; no TEE protects this pod or its secrets."
        );
    }
}

/// Claims as indented lines.
pub fn claims_text(c: &Claims) -> String {
    let mut out = format!("  kind          {}\n  report_data   {}\n", c.kind, c.report_data);
    let mut line = |k: &str, v: &str| out.push_str(&format!("  {k:<13} {v}\n"));
    match &c.details {
        Details::Tdx(t) => {
            line("mr_td", &t.mr_td);
            line("rtmr0", &t.rtmr0);
            line("rtmr1", &t.rtmr1);
            line("rtmr2", &t.rtmr2);
            line("rtmr3", &t.rtmr3);
            line("mr_seam", &t.mr_seam);
            line("xfam", &t.xfam);
            line("td_attributes", &t.td_attributes);
            line("tcb_status", &t.tcb.tcb_status);
            line("advisories", &t.tcb.advisory_ids.join(", "));
            line(
                "collateral",
                &format!("issued {}, next update {}", t.tcb.tcb_info_issue_date, t.tcb.tcb_info_next_update),
            );
        }
        Details::Sgx(s) => {
            line("mr_enclave", &s.mr_enclave);
            line("mr_signer", &s.mr_signer);
            line("isv", &format!("prod {} svn {}", s.isv_prod_id, s.isv_svn));
            line("tcb_status", &s.tcb.tcb_status);
            line("advisories", &s.tcb.advisory_ids.join(", "));
        }
        Details::Snp(s) => {
            line("measurement", &s.measurement);
            line("host_data", &s.host_data);
            line("chip_id", &s.chip_id);
            line("signer", &format!("{} ({})", s.signer, s.generation));
            line("vmpl", &s.vmpl.to_string());
            line("guest_policy", &format!("{} debug={}", s.guest_policy, s.debug));
            let t = &s.reported_tcb;
            line(
                "reported_tcb",
                &format!("bl={} tee={} snp={} ucode={} fmc={}", t.bootloader, t.tee, t.snp, t.microcode, t.fmc),
            );
        }
        Details::InsecureDev(d) => {
            line("INSECURE", &d.accepted_because);
        }
    }
    for n in &c.notes {
        out.push_str(&format!("  note: {n}\n"));
    }
    out
}

fn read_bounded(path: &Path, limit: usize) -> Result<Vec<u8>> {
    let meta = std::fs::metadata(path).with_context(|| path.display().to_string())?;
    if meta.len() > limit as u64 {
        bail!("{}: {} bytes, more than the {limit} allowed", path.display(), meta.len());
    }
    std::fs::read(path).with_context(|| path.display().to_string())
}

/// Raw bytes, or hex text decoded.
fn raw_or_hex(bytes: Vec<u8>) -> Vec<u8> {
    let text: Vec<u8> = bytes.iter().copied().filter(|b| !b.is_ascii_whitespace()).collect();
    if !text.is_empty() && text.len().is_multiple_of(2) && text.iter().all(|b| b.is_ascii_hexdigit()) {
        if let Ok(decoded) = hex::decode(&text) {
            return decoded;
        }
    }
    bytes
}

fn verify_gpu(args: VerifyGpuArgs, home: &Path, json: bool) -> Result<()> {
    use sealpod_attest::nvidia;
    let report = raw_or_hex(read_bounded(&args.report, 2 * nvidia::MAX_REPORT_LEN + 64)?);
    let certs = read_bounded(&args.certs, nvidia::MAX_CHAIN_LEN)?;
    let nonce: [u8; 32] = hex::decode(args.nonce.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .context("--nonce must be 32 bytes of hex (64 digits)")?;
    let now = at_or_now(args.at.as_deref())?;
    let policy = load_policy(args.policy.as_deref(), home)?.gpu.to_policy().map_err(anyhow::Error::msg)?;
    let claims = nvidia::verify_gpu_report(&report, &certs, &nonce, now, &policy)
        .map_err(|e| anyhow::anyhow!("GPU report refused: {e}"))?;
    if json {
        let mut v = serde_json::to_value(&claims)?;
        v["accepted"] = true.into();
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("GPU report accepted: signed by {} (FWID {})", claims.signer, hex::encode(&claims.fwid));
        print!("{}", gpu_text(&claims));
    }
    Ok(())
}

fn gpu_text(claims: &sealpod_attest::nvidia::GpuClaims) -> String {
    let mut out = String::new();
    if let Some(v) = &claims.driver_version {
        out += &format!("  driver {v}\n");
    }
    if let Some(v) = &claims.vbios_version {
        out += &format!("  VBIOS {v}\n");
    }
    out += &format!("  {} measurements (SPDM 1.{})\n", claims.measurements.len(), claims.spdm_version & 0x0f);
    out
}

fn at_or_now(at: Option<&str>) -> Result<std::time::SystemTime> {
    Ok(match at {
        Some(t) => {
            let t = chrono::DateTime::parse_from_rfc3339(t).with_context(|| format!("--at {t:?} is not RFC 3339"))?;
            std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(t.timestamp().max(0) as u64)
        }
        None => std::time::SystemTime::now(),
    })
}

fn verify(args: VerifyArgs, home: &Path, json: bool) -> Result<()> {
    let kind: Kind = args.kind.parse().map_err(anyhow::Error::msg)?;
    let report = raw_or_hex(read_bounded(&args.evidence, 2 * sealpod_attest::MAX_REPORT + 64)?);
    let mut collateral = Vec::new();
    for path in &args.collateral {
        let bytes = read_bounded(path, sealpod_attest::MAX_COLLATERAL)?;
        match kind {
            Kind::Snp => collateral.extend(
                sealpod_attest::tsm::split_certificates(&bytes)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?,
            ),
            _ => collateral.push(bytes),
        }
    }
    let now = at_or_now(args.at.as_deref())?;
    let expected = match &args.report_data {
        Some(h) => {
            let b = hex::decode(h.trim()).with_context(|| "--report-data is not hex")?;
            if b.len() > 64 {
                bail!("--report-data is {} bytes; report data is 64", b.len());
            }
            let mut padded = [0u8; 64];
            padded[..b.len()].copy_from_slice(&b);
            Some(padded)
        }
        None => None,
    };
    let own_policy = args.policy.is_some() || home.join("attestation-policy.toml").exists();
    let mut policy = load_policy(args.policy.as_deref(), home)?;
    if !own_policy {
        // Inspecting a file without a policy asks "is this genuine evidence
        // of this kind?": the kind is accepted and every TCB status but
        // Revoked is reported rather than refused. Deploys keep the strict
        // default (UpToDate only).
        if !policy.accept.contains(&kind) {
            policy.accept.push(kind);
        }
        let all = [
            "UpToDate",
            "SWHardeningNeeded",
            "ConfigurationNeeded",
            "ConfigurationAndSWHardeningNeeded",
            "OutOfDate",
            "OutOfDateConfigurationNeeded",
            "TDRelaunchAdvised",
            "TDRelaunchAdvisedConfigurationNeeded",
        ];
        policy.tdx.dcap.accepted_tcb_status = all.map(String::from).to_vec();
        policy.sgx.dcap.accepted_tcb_status = all.map(String::from).to_vec();
    }
    let evidence = Evidence { kind, report, collateral };
    let expect = sealpod_attest::Expectation {
        report_data: expected.as_ref(),
        provider_public_key: None,
        now,
        allow_insecure_dev: false,
    };
    match sealpod_attest::verify(&evidence, &expect, &policy, &sealpod_attest::Roots::pinned()) {
        Ok(mut claims) => {
            if !own_policy {
                claims.notes.push(
                    "no policy given: any TCB status but Revoked is reported, not refused; deploys require UpToDate \
                     unless a policy lists more"
                        .into(),
                );
            }
            if json {
                let mut v = serde_json::to_value(&claims)?;
                v["accepted"] = true.into();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!("{}: accepted", args.evidence.display());
                print!("{}", claims_text(&claims));
                if expected.is_none() {
                    println!("  note: no --report-data given: the binding was not checked");
                }
            }
            Ok(())
        }
        Err(e) => {
            if json {
                println!("{}", serde_json::json!({"accepted": false, "error": e.to_string()}));
            } else {
                eprintln!("sealpod: {}: refused: {e}", args.evidence.display());
            }
            std::process::exit(1);
        }
    }
}
