//! Producing evidence on the provider: Linux configfs-tsm
//! (`/sys/kernel/config/tsm/report`, kernel 6.7+) for TDX quotes and SNP
//! reports, or the insecure dev statement.
//!
//! The configfs-tsm protocol (Documentation/ABI/testing/configfs-tsm-report):
//! make a directory under the report root, check `provider`, write 64 bytes
//! to `inblob`, read `outblob` (the quote or report) and `auxblob` (SNP: the
//! host's certificate table, when it provides one), and compare `generation`
//! before and after: if another writer touched the entry in between, the
//! blob may answer someone else's `inblob`, and it is thrown away.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use libp2p_identity::Keypair;

use crate::{AttestError, Evidence, Kind};

/// Where the kernel exposes configfs-tsm reports.
pub const DEFAULT_TSM_ROOT: &str = "/sys/kernel/config/tsm/report";

/// How the provider answers `/apocryph/attest/0.0.1`.
pub enum Attestor {
    /// No attestation: requests are answered "unavailable".
    None,
    /// The node key signs the binding. No hardware guarantee.
    InsecureDev(Keypair),
    /// A TEE through configfs-tsm.
    Tsm(TsmAttestor),
}

impl std::fmt::Debug for Attestor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Attestor::None => f.write_str("none"),
            Attestor::InsecureDev(_) => f.write_str("insecure-dev"),
            Attestor::Tsm(t) => write!(f, "{} via {}", t.kind, t.root.display()),
        }
    }
}

impl Attestor {
    /// The attestor a provider asked for: `auto` (configfs-tsm when the
    /// machine has it, else none), `tdx`, `snp`, `insecure-dev` or `none`.
    /// `collateral` is what the provider ships with its evidence: the DCAP
    /// collateral JSON for TDX, or the VCEK (PEM or DER, optionally followed
    /// by ASK and ARK) for SNP hosts that do not fill `auxblob`.
    pub fn configure(
        mode: &str,
        tsm_root: &Path,
        collateral: Option<&Path>,
        node_key: &Keypair,
    ) -> Result<Attestor, AttestError> {
        let tsm = |expect: Option<Kind>| -> Result<Attestor, AttestError> {
            let t = TsmAttestor::open(tsm_root, collateral)?;
            if let Some(k) = expect {
                if t.kind != k {
                    return Err(AttestError::WrongKind { expected: k.to_string(), found: t.kind.to_string() });
                }
            }
            Ok(Attestor::Tsm(t))
        };
        match mode {
            "none" => Ok(Attestor::None),
            "insecure-dev" | "dev" => Ok(Attestor::InsecureDev(node_key.clone())),
            "tdx" => tsm(Some(Kind::Tdx)),
            "snp" => tsm(Some(Kind::Snp)),
            "auto" if tsm_root.is_dir() => match tsm(None) {
                Ok(a) => Ok(a),
                Err(e) => {
                    tracing::warn!(error = %e, "configfs-tsm is present but gives no evidence; no attestor");
                    Ok(Attestor::None)
                }
            },
            "auto" => Ok(Attestor::None),
            other => Err(AttestError::Source {
                path: "--attestor".into(),
                reason: format!("unknown attestor {other:?}: expected auto, tdx, snp, insecure-dev or none"),
            }),
        }
    }

    /// The kind of evidence this attestor produces, if any.
    pub fn kind(&self) -> Option<Kind> {
        match self {
            Attestor::None => None,
            Attestor::InsecureDev(_) => Some(Kind::InsecureDev),
            Attestor::Tsm(t) => Some(t.kind),
        }
    }

    /// Evidence whose report data is `report_data`.
    pub fn evidence(&self, report_data: &[u8; 64]) -> Result<Evidence, AttestError> {
        match self {
            Attestor::None => Err(AttestError::Source { path: "attestor".into(), reason: "none configured".into() }),
            Attestor::InsecureDev(key) => crate::dev::attest(key, report_data),
            Attestor::Tsm(t) => t.evidence(report_data),
        }
    }
}

/// A configfs-tsm report root and what the provider ships with its evidence.
pub struct TsmAttestor {
    root: PathBuf,
    kind: Kind,
    collateral: Collateral,
}

/// Where the collateral shipped with each quote comes from.
enum Collateral {
    /// The same items every time (a DCAP collateral file, an SNP chain), or none.
    Fixed(Vec<Vec<u8>>),
    /// A PCCS cache directory: `<FMSPC>.json` per platform, read for each
    /// quote so the operator's refresh job takes effect at once.
    TdxDirectory(PathBuf),
}

static ENTRY: AtomicU64 = AtomicU64::new(0);

/// How long a report entry may take to show its attributes or blobs (the
/// kernel fills them at once; a slow TEE service in a paravisor may not).
const WAIT: Duration = Duration::from_secs(5);

fn source(path: &Path, reason: impl std::fmt::Display) -> AttestError {
    AttestError::Source { path: path.display().to_string(), reason: reason.to_string() }
}

impl TsmAttestor {
    /// Opens the report root, finds the TEE kind with a probe entry, and
    /// loads the collateral file.
    pub fn open(root: &Path, collateral: Option<&Path>) -> Result<TsmAttestor, AttestError> {
        if !root.is_dir() {
            return Err(source(
                root,
                "no configfs-tsm report directory (is this a TDX or SNP guest with kernel 6.7+?)",
            ));
        }
        let entry = Entry::create(root)?;
        let kind = entry.kind()?;
        drop(entry);
        let collateral = match collateral {
            None => Collateral::Fixed(Vec::new()),
            Some(path) if path.is_dir() && kind == Kind::Tdx => Collateral::TdxDirectory(path.to_owned()),
            Some(path) => Collateral::Fixed({
                let bytes = std::fs::read(path).map_err(|e| source(path, e))?;
                match kind {
                    Kind::Tdx | Kind::Sgx => {
                        crate::tdx::parse_collateral(&bytes).map_err(|e| source(path, e))?;
                        vec![bytes]
                    }
                    _ => split_certificates(&bytes).map_err(|e| source(path, e))?,
                }
            }),
        };
        if kind == Kind::Tdx && matches!(&collateral, Collateral::Fixed(c) if c.is_empty()) {
            tracing::warn!("TDX attestor without --attestor-collateral: publishers cannot verify quotes offline");
        }
        Ok(TsmAttestor { root: root.to_owned(), kind, collateral })
    }

    /// One report for `report_data`.
    pub fn evidence(&self, report_data: &[u8; 64]) -> Result<Evidence, AttestError> {
        let entry = Entry::create(&self.root)?;
        let kind = entry.kind()?;
        if kind != self.kind {
            return Err(source(&entry.dir, format!("provider changed from {} to {kind}", self.kind)));
        }
        let before = entry.generation()?;
        entry.write("inblob", report_data)?;
        let report = entry.read_blob("outblob", true)?;
        let aux = entry.read_blob("auxblob", false).unwrap_or_default();
        let after = entry.generation()?;
        if after != before + 1 {
            return Err(source(
                &entry.dir,
                format!("generation went from {before} to {after}: another writer raced this report, discarded"),
            ));
        }
        let collateral = match (&self.collateral, kind) {
            (_, Kind::Snp) if !aux.is_empty() => crate::snp::certs_from_table(&aux)?,
            (Collateral::TdxDirectory(dir), _) => vec![collateral_for_quote(dir, &report)?],
            (Collateral::Fixed(items), _) => items.clone(),
        };
        Ok(Evidence { kind, report, collateral })
    }
}

/// The DCAP collateral for a quote's platform from a PCCS cache directory:
/// `<FMSPC>.json` (either case), or the directory's only `.json` file.
fn collateral_for_quote(dir: &Path, quote: &[u8]) -> Result<Vec<u8>, AttestError> {
    let parsed = dcap_qvl::quote::Quote::parse(quote).map_err(|e| AttestError::malformed("quote", e))?;
    let fmspc =
        dcap_qvl::intel::quote_fmspc(&parsed).map_err(|e| AttestError::malformed("quote PCK certificate", e))?;
    let fmspc = hex::encode_upper(fmspc);
    let mut candidates = vec![dir.join(format!("{fmspc}.json")), dir.join(format!("{}.json", fmspc.to_lowercase()))];
    let jsons: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| source(dir, e))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    if jsons.len() == 1 {
        candidates.push(jsons[0].clone());
    }
    let path = candidates
        .into_iter()
        .find(|p| p.is_file())
        .ok_or_else(|| source(dir, format!("no DCAP collateral for FMSPC {fmspc} ({fmspc}.json)")))?;
    let meta = std::fs::metadata(&path).map_err(|e| source(&path, e))?;
    if meta.len() > crate::MAX_COLLATERAL as u64 {
        return Err(source(&path, format!("larger than {} bytes", crate::MAX_COLLATERAL)));
    }
    let bytes = std::fs::read(&path).map_err(|e| source(&path, e))?;
    crate::tdx::parse_collateral(&bytes).map_err(|e| source(&path, e))?;
    Ok(bytes)
}

/// One report entry, removed when dropped.
struct Entry {
    dir: PathBuf,
}

impl Entry {
    fn create(root: &Path) -> Result<Entry, AttestError> {
        let n = ENTRY.fetch_add(1, Ordering::Relaxed);
        let dir = root.join(format!("sealpod-{}-{n}", std::process::id()));
        std::fs::create_dir(&dir).map_err(|e| source(&dir, e))?;
        Ok(Entry { dir })
    }

    fn wait_for(&self, name: &str, nonempty: bool) -> Result<Vec<u8>, AttestError> {
        let path = self.dir.join(name);
        let start = Instant::now();
        loop {
            match std::fs::read(&path) {
                Ok(b) if !nonempty || !b.is_empty() => return Ok(b),
                Ok(_) | Err(_) if start.elapsed() < WAIT => std::thread::sleep(Duration::from_millis(5)),
                Ok(_) => return Err(source(&path, "empty")),
                Err(e) => return Err(source(&path, e)),
            }
        }
    }

    fn kind(&self) -> Result<Kind, AttestError> {
        let provider = self.wait_for("provider", true)?;
        match String::from_utf8_lossy(&provider).trim() {
            "tdx_guest" => Ok(Kind::Tdx),
            "sev_guest" => Ok(Kind::Snp),
            other => Err(source(&self.dir.join("provider"), format!("unsupported TSM provider {other:?}"))),
        }
    }

    fn generation(&self) -> Result<u64, AttestError> {
        let path = self.dir.join("generation");
        let text = self.wait_for("generation", true)?;
        String::from_utf8_lossy(&text).trim().parse().map_err(|e| source(&path, format!("not a number: {e}")))
    }

    fn write(&self, name: &str, data: &[u8]) -> Result<(), AttestError> {
        let path = self.dir.join(name);
        std::fs::write(&path, data).map_err(|e| source(&path, e))
    }

    fn read_blob(&self, name: &str, required: bool) -> Result<Vec<u8>, AttestError> {
        let blob = self.wait_for(name, required)?;
        if blob.len() > crate::MAX_REPORT.max(crate::MAX_COLLATERAL) {
            return Err(AttestError::TooLarge { what: "TSM blob", size: blob.len(), limit: crate::MAX_COLLATERAL });
        }
        Ok(blob)
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        // configfs removes an entry with rmdir alone; a plain directory (the
        // tests' stand-in) needs its files removed first.
        if std::fs::remove_dir(&self.dir).is_err() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Splits a PEM bundle into DER certificates, or takes one DER certificate.
pub fn split_certificates(bytes: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    if bytes.trim_ascii_start().starts_with(b"-----BEGIN") {
        let pems = pem::parse_many(bytes).map_err(|e| e.to_string())?;
        let certs: Vec<Vec<u8>> =
            pems.into_iter().filter(|p| p.tag() == "CERTIFICATE").map(|p| p.into_contents()).collect();
        if certs.is_empty() {
            return Err("no CERTIFICATE in the PEM file".into());
        }
        Ok(certs)
    } else {
        Ok(vec![bytes.to_vec()])
    }
}
