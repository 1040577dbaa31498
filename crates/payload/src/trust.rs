//! The provider's trust settings in one directory, and the snapshot a
//! running provider holds:
//!
//! ```text
//! <dir>/keystore/        trusted certificates, one or more per file
//! <dir>/whitelist.json   {"patterns": [{"domain": ..., "match": "strict"|"regex"}]}
//! <dir>/rules.json       {"outbound": {"enabled", "everyone", "audited-payload", "partner"}}
//! ```
//!
//! Every write is atomic (temporary file, then rename). A provider re-reads
//! when [`TrustSettings::changed_on_disk`] says a file changed, which costs a
//! few `stat` calls.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use chrono::{DateTime, Utc};

use crate::keystore::{resolve_prefix, AddedCertificates, Keystore};
use crate::manifest::{MatchMode, PayloadManifest};
use crate::rules::{self, CertRule, Decision, Mode, Rules};
use crate::store::{self, file_error, FileError, Stamp};
use crate::verify::{VerifiedManifest, VerifiedSigner};
use crate::whitelist::{Whitelist, WhitelistEntry, WhitelistFile};
use crate::x509::{CertificateError, CertificateInfo};

/// The keystore directory's name inside the settings directory.
pub const KEYSTORE_DIR: &str = "keystore";
/// The whitelist file's name.
pub const WHITELIST_FILE: &str = "whitelist.json";
/// The rules file's name.
pub const RULES_FILE: &str = "rules.json";

/// The largest settings file read, in bytes.
const MAX_SETTINGS_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// What went wrong with the trust settings.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    /// A file could not be read or written.
    #[error(transparent)]
    File(#[from] FileError),
    /// A settings file does not parse.
    #[error("{}: {message}", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// Where and what (`outbound.everyone: unknown variant ...`).
        message: String,
    },
    /// Certificate input does not parse.
    #[error(transparent)]
    Certificate(#[from] CertificateError),
    /// An expired certificate was offered to the keystore.
    #[error("certificate `{subject}` expired at {not_after}: an expired certificate cannot be trusted")]
    ExpiredCertificate {
        /// The certificate.
        subject: String,
        /// Its notAfter.
        not_after: DateTime<Utc>,
    },
    /// No id starts with the prefix.
    #[error("no certificate id starts with `{prefix}` (`sealpod keystore list` shows the ids)")]
    UnknownId {
        /// The prefix, lower case.
        prefix: String,
    },
    /// More than one id starts with the prefix.
    #[error("`{prefix}` is ambiguous, it starts {}: give more digits", candidates.join(", "))]
    AmbiguousId {
        /// The prefix, lower case.
        prefix: String,
        /// What it matches.
        candidates: Vec<String>,
    },
    /// The prefix is empty or not hexadecimal.
    #[error("`{prefix}` is not the start of a certificate id: ids are hexadecimal")]
    InvalidId {
        /// The prefix as given.
        prefix: String,
    },
    /// A whitelist pattern is empty, too long or not a valid regular expression.
    #[error("whitelist pattern `{pattern}`: {message}")]
    InvalidPattern {
        /// The pattern.
        pattern: String,
        /// What is wrong.
        message: String,
    },
    /// No whitelist entry has this pattern or id.
    #[error("no whitelist entry `{0}` (`sealpod whitelist list` shows them)")]
    UnknownPattern(String),
}

/// The provider's trust settings: keystore, whitelist and rules.
#[derive(Debug, Clone, Default)]
pub struct TrustSettings {
    dir: Option<PathBuf>,
    /// Trusted certificates.
    pub keystore: Keystore,
    /// Domain whitelist.
    pub whitelist: Whitelist,
    /// Outbound rules.
    pub rules: Rules,
    stamp: Stamp,
}

fn read_settings_file(path: &Path) -> Result<Option<Vec<u8>>, TrustError> {
    match fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(file_error(path)(e).into()),
        Ok(meta) if meta.len() > MAX_SETTINGS_FILE_BYTES => {
            return Err(TrustError::Malformed {
                path: path.to_path_buf(),
                message: format!("larger than {MAX_SETTINGS_FILE_BYTES} bytes"),
            });
        }
        Ok(_) => {}
    }
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(file_error(path)(e).into()),
    }
}

fn parse_json<T: serde::de::DeserializeOwned>(path: &Path, bytes: &[u8]) -> Result<T, TrustError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(&mut de).map_err(|e| TrustError::Malformed {
        path: path.to_path_buf(),
        message: format!("{}: {}", e.path(), e.inner()),
    })
}

fn pretty<T: serde::Serialize>(value: &T) -> Vec<u8> {
    let mut text = serde_json::to_vec_pretty(value).unwrap_or_default();
    text.push(b'\n');
    text
}

impl TrustSettings {
    /// Settings that live in memory only (nothing is written).
    pub fn in_memory(keystore: Keystore, whitelist: Whitelist, rules: Rules) -> TrustSettings {
        TrustSettings { dir: None, keystore, whitelist, rules, stamp: Stamp::default() }
    }

    /// Reads the settings in `dir`. Missing files mean defaults: an empty
    /// keystore, an empty whitelist, yagna's default rules.
    pub fn load(dir: &Path) -> Result<TrustSettings, TrustError> {
        // Fingerprint first: a change while reading shows up as a change later.
        let stamp = Self::stamp_of(dir);
        let keystore = Keystore::open(&dir.join(KEYSTORE_DIR))?;
        let whitelist_path = dir.join(WHITELIST_FILE);
        let whitelist = match read_settings_file(&whitelist_path)? {
            Some(bytes) => {
                let file: WhitelistFile = parse_json(&whitelist_path, &bytes)?;
                Whitelist::from_entries(file.patterns)
                    .map_err(|e| TrustError::Malformed { path: whitelist_path.clone(), message: e.to_string() })?
            }
            None => Whitelist::new(),
        };
        let rules_path = dir.join(RULES_FILE);
        let rules = match read_settings_file(&rules_path)? {
            Some(bytes) => parse_json(&rules_path, &bytes)?,
            None => Rules::default(),
        };
        Ok(TrustSettings { dir: Some(dir.to_path_buf()), keystore, whitelist, rules, stamp })
    }

    fn stamp_of(dir: &Path) -> Stamp {
        Stamp::take(&[dir.join(WHITELIST_FILE), dir.join(RULES_FILE)], &[dir.join(KEYSTORE_DIR)])
    }

    /// The settings directory, if any.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// Whether the files changed since this snapshot was read or last written
    /// through it (size, modification time or inode of any of them, or a
    /// keystore file added or removed).
    pub fn changed_on_disk(&self) -> bool {
        self.dir.as_ref().is_some_and(|dir| Self::stamp_of(dir) != self.stamp)
    }

    /// Re-reads the settings if [`TrustSettings::changed_on_disk`]; `Ok(true)`
    /// if it did. On an error the snapshot is left as it was.
    pub fn reload_if_changed(&mut self) -> Result<bool, TrustError> {
        match &self.dir {
            Some(dir) if self.changed_on_disk() => {
                *self = TrustSettings::load(&dir.clone())?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    fn save_whitelist(&mut self) -> Result<(), TrustError> {
        if let Some(dir) = &self.dir {
            store::write_atomic(&dir.join(WHITELIST_FILE), &pretty(&self.whitelist.to_file()))?;
            self.stamp = Self::stamp_of(dir);
        }
        Ok(())
    }

    fn save_rules(&mut self) -> Result<(), TrustError> {
        if let Some(dir) = &self.dir {
            store::write_atomic(&dir.join(RULES_FILE), &pretty(&self.rules))?;
            self.stamp = Self::stamp_of(dir);
        }
        Ok(())
    }

    fn restamp(&mut self) {
        if let Some(dir) = &self.dir {
            self.stamp = Self::stamp_of(dir);
        }
    }

    /// `keystore add`: trusts the certificates of `input`, see [`Keystore::add`].
    pub fn add_certificates(&mut self, input: &[u8], now: SystemTime) -> Result<AddedCertificates, TrustError> {
        let added = self.keystore.add(input, now);
        self.restamp();
        added
    }

    /// `keystore remove`: by unique id prefix. The certificate's
    /// audited-payload rule, if any, goes too.
    pub fn remove_certificate(&mut self, id_prefix: &str) -> Result<CertificateInfo, TrustError> {
        let removed = self.keystore.remove(id_prefix);
        self.restamp();
        let removed = removed?;
        if self.rules.outbound.audited_payload.remove(&removed.id).is_some() {
            self.save_rules()?;
        }
        Ok(removed)
    }

    /// `whitelist add`; `Ok(false)` if already there.
    pub fn add_whitelist(&mut self, pattern: &str, match_mode: MatchMode) -> Result<bool, TrustError> {
        let added = self.whitelist.add(pattern, match_mode)?;
        if added {
            self.save_whitelist()?;
        }
        Ok(added)
    }

    /// `whitelist remove`, by pattern or entry id prefix.
    pub fn remove_whitelist(&mut self, pattern_or_id: &str) -> Result<WhitelistEntry, TrustError> {
        let removed = self.whitelist.remove(pattern_or_id)?;
        self.save_whitelist()?;
        Ok(removed)
    }

    /// `rule set outbound enable|disable`.
    pub fn set_outbound_enabled(&mut self, enabled: bool) -> Result<(), TrustError> {
        self.rules.outbound.enabled = enabled;
        self.save_rules()
    }

    /// `rule set outbound everyone --mode M`.
    pub fn set_everyone(&mut self, mode: Mode) -> Result<(), TrustError> {
        self.rules.outbound.everyone = mode;
        self.save_rules()
    }

    /// `rule set outbound audited-payload import-cert FILE --mode M`: adds the
    /// certificates of `input` to the keystore and sets the rule for the
    /// leaves of the input (the certificates that issued none of the others).
    pub fn set_audited_payload_import(
        &mut self,
        input: &[u8],
        mode: Mode,
        description: &str,
        now: SystemTime,
    ) -> Result<Vec<CertificateInfo>, TrustError> {
        let added = self.add_certificates(input, now)?;
        for leaf in &added.leaves {
            self.rules
                .outbound
                .audited_payload
                .insert(leaf.id.clone(), CertRule { mode, description: description.to_string() });
        }
        self.save_rules()?;
        Ok(added.leaves)
    }

    /// `rule set outbound audited-payload cert-id PREFIX --mode M`: the
    /// certificate must be in the keystore.
    pub fn set_audited_payload(
        &mut self,
        id_prefix: &str,
        mode: Mode,
        description: &str,
    ) -> Result<CertificateInfo, TrustError> {
        let cert = self.keystore.find(id_prefix)?.clone();
        self.rules
            .outbound
            .audited_payload
            .insert(cert.id.clone(), CertRule { mode, description: description.to_string() });
        self.save_rules()?;
        Ok(cert)
    }

    /// Removes the audited-payload rule whose certificate id starts with
    /// `id_prefix` (uniquely); returns the full id.
    pub fn remove_audited_payload(&mut self, id_prefix: &str) -> Result<String, TrustError> {
        let ids: Vec<String> = self.rules.outbound.audited_payload.keys().cloned().collect();
        let id = resolve_prefix(id_prefix, ids.iter().map(|id| (id.as_str(), "audited-payload rule")))?;
        self.rules.outbound.audited_payload.remove(&id);
        self.save_rules()?;
        Ok(id)
    }

    /// Whether the manifest's outbound access is accepted; see [`rules::decide`].
    pub fn decide(&self, manifest: &PayloadManifest, signer: Option<&VerifiedSigner>) -> Decision {
        rules::decide(&self.rules, &self.whitelist, manifest, signer)
    }

    /// [`TrustSettings::decide`] for a verified manifest.
    pub fn decide_verified(&self, verified: &VerifiedManifest) -> Decision {
        self.decide(&verified.manifest, Some(&verified.signer))
    }
}
