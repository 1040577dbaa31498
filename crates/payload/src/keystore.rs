//! The provider's keystore: the certificates it trusts to vouch for app
//! authors. On disk it is a directory of certificate files; every regular,
//! non-hidden file in it is read (DER, PEM or PEM bundles), so an operator
//! may also drop files in by hand. Certificates added through [`Keystore::add`]
//! are written one per file, `<id>.pem`.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::store::{self, file_error};
use crate::trust::TrustError;
use crate::x509::{self, certificate_id, CertificateError, CertificateInfo};

/// The largest certificate file read or imported, in bytes.
pub const MAX_KEYSTORE_FILE_BYTES: usize = 1024 * 1024;

/// The most certificates read from one file or one import.
pub const MAX_KEYSTORE_FILE_CERTIFICATES: usize = 512;

#[derive(Debug, Clone)]
struct StoredCertificate {
    der: Vec<u8>,
    subject_raw: Vec<u8>,
    info: CertificateInfo,
    file: Option<PathBuf>,
}

/// A file of the keystore directory that could not be read, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedFile {
    /// The file.
    pub path: PathBuf,
    /// Why it was skipped.
    pub reason: String,
}

/// What [`Keystore::add`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddedCertificates {
    /// Newly trusted certificates.
    pub added: Vec<CertificateInfo>,
    /// Certificates that were in the keystore already.
    pub already_present: Vec<CertificateInfo>,
    /// The certificates of the input that issued none of the others (the
    /// leaves of an imported chain; all of them for a bundle of roots).
    pub leaves: Vec<CertificateInfo>,
}

/// Trusted certificates: an in-memory snapshot, optionally backed by a directory.
#[derive(Debug, Clone, Default)]
pub struct Keystore {
    dir: Option<PathBuf>,
    certs: Vec<StoredCertificate>,
    skipped: Vec<SkippedFile>,
}

/// Splits keystore input, with the keystore's (larger) limits.
fn split(input: &[u8]) -> Result<Vec<Vec<u8>>, CertificateError> {
    if input.len() > MAX_KEYSTORE_FILE_BYTES {
        return Err(CertificateError::TooLarge { size: input.len(), limit: MAX_KEYSTORE_FILE_BYTES });
    }
    x509::split_certificates_limited(input, MAX_KEYSTORE_FILE_CERTIFICATES)
}

fn stored(der: Vec<u8>, file: Option<PathBuf>) -> Result<StoredCertificate, CertificateError> {
    let cert = x509::parse_der(&der).map_err(|message| CertificateError::Der { index: 0, message })?;
    let info = CertificateInfo::of(&cert, &der);
    let subject_raw = cert.subject().as_raw().to_vec();
    Ok(StoredCertificate { der, subject_raw, info, file })
}

fn to_pem(der: &[u8]) -> String {
    pem::encode(&pem::Pem::new("CERTIFICATE", der.to_vec()))
}

impl Keystore {
    /// An empty keystore that lives in memory only.
    pub fn new() -> Keystore {
        Keystore::default()
    }

    /// An in-memory keystore holding the certificates of `input` (DER, PEM or
    /// a PEM bundle), whatever their validity: checks happen at verification.
    pub fn from_certificates(input: &[u8]) -> Result<Keystore, CertificateError> {
        let mut keystore = Keystore::new();
        for der in split(input)? {
            if !keystore.contains(&certificate_id(&der)) {
                keystore.certs.push(stored(der, None)?);
            }
        }
        Ok(keystore)
    }

    /// Reads the keystore directory `dir` (a missing directory is an empty
    /// keystore). Files that do not hold certificates are skipped and listed
    /// in [`Keystore::skipped`], so one stray file does not stop a provider.
    pub fn open(dir: &Path) -> Result<Keystore, TrustError> {
        let mut keystore = Keystore { dir: Some(dir.to_path_buf()), ..Keystore::default() };
        let entries = match fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(keystore),
            Err(e) => return Err(file_error(dir)(e).into()),
        };
        let mut paths: Vec<PathBuf> =
            entries.map(|e| e.map(|e| e.path())).collect::<Result<_, _>>().map_err(file_error(dir))?;
        paths.retain(|p| !store::is_hidden(p) && p.is_file());
        paths.sort();
        for path in paths {
            let read = fs::metadata(&path)
                .map_err(|e| e.to_string())
                .and_then(|m| {
                    if m.len() > MAX_KEYSTORE_FILE_BYTES as u64 {
                        Err(format!("larger than {MAX_KEYSTORE_FILE_BYTES} bytes"))
                    } else {
                        fs::read(&path).map_err(|e| e.to_string())
                    }
                })
                .and_then(|bytes| split(&bytes).map_err(|e| e.to_string()));
            match read {
                Ok(ders) => {
                    for der in ders {
                        if keystore.contains(&certificate_id(&der)) {
                            continue;
                        }
                        match stored(der, Some(path.clone())) {
                            Ok(cert) => keystore.certs.push(cert),
                            Err(e) => keystore.skipped.push(SkippedFile { path: path.clone(), reason: e.to_string() }),
                        }
                    }
                }
                Err(reason) => keystore.skipped.push(SkippedFile { path, reason }),
            }
        }
        Ok(keystore)
    }

    /// The directory behind this keystore, if any.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// Whether no certificate is trusted.
    pub fn is_empty(&self) -> bool {
        self.certs.is_empty()
    }

    /// The number of trusted certificates.
    pub fn len(&self) -> usize {
        self.certs.len()
    }

    /// The trusted certificates, in the order they were read.
    pub fn list(&self) -> impl Iterator<Item = &CertificateInfo> {
        self.certs.iter().map(|c| &c.info)
    }

    /// Files of the directory that were not read.
    pub fn skipped(&self) -> &[SkippedFile] {
        &self.skipped
    }

    /// Whether the certificate with this full id is trusted.
    pub fn contains(&self, id: &str) -> bool {
        self.certs.iter().any(|c| c.info.id == id)
    }

    /// The DER of a trusted certificate, by full id.
    pub fn certificate_der(&self, id: &str) -> Option<&[u8]> {
        self.certs.iter().find(|c| c.info.id == id).map(|c| c.der.as_slice())
    }

    /// Trusted certificates whose subject is `name` (raw DER), candidates to
    /// have issued a certificate whose issuer is `name`.
    pub(crate) fn issuers_of<'a>(&'a self, name: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.certs.iter().filter(move |c| c.subject_raw == name).map(|c| c.der.as_slice())
    }

    /// The one certificate whose id starts with `prefix` (hex, any case).
    pub fn find(&self, prefix: &str) -> Result<&CertificateInfo, TrustError> {
        let id = resolve_prefix(prefix, self.certs.iter().map(|c| (c.info.id.as_str(), c.info.subject.as_str())))?;
        self.certs.iter().map(|c| &c.info).find(|i| i.id == id).ok_or(TrustError::UnknownId { prefix: id })
    }

    /// Adds the certificates of `input` (DER, PEM, or a PEM chain or bundle)
    /// and, for a keystore with a directory, writes each new one to
    /// `<id>.pem`. An input with an expired certificate (at `now`) is refused
    /// whole; duplicates are reported, not added twice.
    pub fn add(&mut self, input: &[u8], now: SystemTime) -> Result<AddedCertificates, TrustError> {
        let ders = split(input)?;
        let mut parsed = Vec::with_capacity(ders.len());
        for der in ders {
            let cert = stored(der, None)?;
            if SystemTime::from(cert.info.not_after) < now {
                return Err(TrustError::ExpiredCertificate {
                    subject: cert.info.subject.clone(),
                    not_after: cert.info.not_after,
                });
            }
            parsed.push(cert);
        }
        let leaves = leaves_of(&parsed);
        let mut outcome = AddedCertificates { leaves, ..AddedCertificates::default() };
        for mut cert in parsed {
            if self.contains(&cert.info.id) || outcome.added.iter().any(|a| a.id == cert.info.id) {
                outcome.already_present.push(cert.info);
                continue;
            }
            if let Some(dir) = &self.dir {
                let path = dir.join(format!("{}.pem", cert.info.id));
                store::write_atomic(&path, to_pem(&cert.der).as_bytes())?;
                cert.file = Some(path);
            }
            outcome.added.push(cert.info.clone());
            self.certs.push(cert);
        }
        Ok(outcome)
    }

    /// Removes the certificate whose id starts with `prefix` (unique), and
    /// for a keystore with a directory, from its file: the file is deleted if
    /// it held nothing else, or rewritten (as PEM) without it.
    pub fn remove(&mut self, prefix: &str) -> Result<CertificateInfo, TrustError> {
        let info = self.find(prefix)?.clone();
        let files: Vec<PathBuf> =
            self.certs.iter().filter(|c| c.info.id == info.id).filter_map(|c| c.file.clone()).collect();
        for file in files {
            let bytes = fs::read(&file).map_err(file_error(&file))?;
            let rest: Vec<Vec<u8>> =
                split(&bytes).unwrap_or_default().into_iter().filter(|der| certificate_id(der) != info.id).collect();
            if rest.is_empty() {
                store::remove_file(&file)?;
            } else {
                let text: String = rest.iter().map(|der| to_pem(der)).collect();
                store::write_atomic(&file, text.as_bytes())?;
            }
        }
        self.certs.retain(|c| c.info.id != info.id);
        Ok(info)
    }
}

/// The certificates of an import that issued none of the others.
fn leaves_of(certs: &[StoredCertificate]) -> Vec<CertificateInfo> {
    certs
        .iter()
        .filter(|issuer| {
            !certs.iter().any(|other| {
                other.info.id != issuer.info.id
                    && x509::parse_der(&other.der).is_ok_and(|o| o.issuer().as_raw() == issuer.subject_raw.as_slice())
            })
        })
        .map(|c| c.info.clone())
        .collect()
}

/// Resolves a certificate id prefix among `(id, subject)` pairs: hex digits,
/// any case, matching exactly one id.
pub(crate) fn resolve_prefix<'a>(
    prefix: &str,
    ids: impl Iterator<Item = (&'a str, &'a str)>,
) -> Result<String, TrustError> {
    let wanted = prefix.trim().to_ascii_lowercase();
    if wanted.is_empty() || !wanted.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(TrustError::InvalidId { prefix: prefix.chars().take(140).collect() });
    }
    let mut matches: Vec<(&str, &str)> = ids.filter(|(id, _)| id.starts_with(&wanted)).collect();
    matches.dedup_by(|a, b| a.0 == b.0);
    match matches.as_slice() {
        [] => Err(TrustError::UnknownId { prefix: wanted }),
        [(id, _)] => Ok(id.to_string()),
        many => Err(TrustError::AmbiguousId {
            prefix: wanted,
            candidates: many
                .iter()
                .map(|(id, subject)| format!("{} ({subject})", id.chars().take(16).collect::<String>()))
                .collect(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_unique_ambiguous_and_unknown_prefixes() {
        let ids = [("ab12", "CN=A"), ("ab34", "CN=B"), ("cd56", "CN=C")];
        assert_eq!(resolve_prefix("AB1", ids.into_iter()).unwrap(), "ab12");
        assert_eq!(resolve_prefix("c", ids.into_iter()).unwrap(), "cd56");
        match resolve_prefix("ab", ids.into_iter()) {
            Err(TrustError::AmbiguousId { prefix, candidates }) => {
                assert_eq!(prefix, "ab");
                assert_eq!(candidates, ["ab12 (CN=A)", "ab34 (CN=B)"]);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(resolve_prefix("ef", ids.into_iter()), Err(TrustError::UnknownId { .. })));
        assert!(matches!(resolve_prefix("", ids.into_iter()), Err(TrustError::InvalidId { .. })));
        assert!(matches!(resolve_prefix("xyz", ids.into_iter()), Err(TrustError::InvalidId { .. })));
    }
}
