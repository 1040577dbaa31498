//! The provider's domain whitelist: host patterns that the `whitelist` mode
//! of an outbound rule lets a manifest reach. Stored as yagna stores it,
//! `{"patterns": [{"domain": "example.org", "match": "strict"}]}`.

use regex::Regex;
use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use crate::manifest::MatchMode;
use crate::trust::TrustError;

/// The longest pattern accepted.
pub const MAX_PATTERN_LEN: usize = 1024;

/// One whitelist entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WhitelistEntry {
    /// A host name (strict) or a regular expression over host names (regex).
    pub domain: String,
    /// How `domain` is compared with a host. yagna's default, `regex`, when absent.
    #[serde(rename = "match", default = "regex_mode")]
    pub match_mode: MatchMode,
}

fn regex_mode() -> MatchMode {
    MatchMode::Regex
}

impl WhitelistEntry {
    /// A short stable id for the entry: the first 8 hex digits of the
    /// SHA-256 of its pattern.
    pub fn id(&self) -> String {
        hex::encode(&sha2::Sha256::digest(self.domain.as_bytes())[..4])
    }
}

/// The whitelist, with its regular expressions compiled.
#[derive(Debug, Clone, Default)]
pub struct Whitelist {
    entries: Vec<WhitelistEntry>,
    compiled: Vec<Option<Regex>>,
}

#[derive(Serialize, Deserialize, Default)]
pub(crate) struct WhitelistFile {
    #[serde(default)]
    pub patterns: Vec<WhitelistEntry>,
}

/// Host names compare in lower case and without a trailing dot.
pub(crate) fn normalize_host(host: &str) -> String {
    host.trim_end_matches('.').to_ascii_lowercase()
}

fn compile(entry: &WhitelistEntry) -> Result<Option<Regex>, TrustError> {
    let invalid = |message: String| TrustError::InvalidPattern { pattern: entry.domain.clone(), message };
    if entry.domain.trim().is_empty() {
        return Err(invalid("empty pattern".into()));
    }
    if entry.domain.len() > MAX_PATTERN_LEN {
        return Err(invalid(format!("longer than {MAX_PATTERN_LEN} bytes")));
    }
    match entry.match_mode {
        MatchMode::Strict => Ok(None),
        MatchMode::Regex => crate::manifest::anchored_regex(&format!("(?i){}", entry.domain))
            .map(Some)
            .map_err(|e| invalid(e.to_string())),
    }
}

impl Whitelist {
    /// An empty whitelist.
    pub fn new() -> Whitelist {
        Whitelist::default()
    }

    pub(crate) fn from_entries(entries: Vec<WhitelistEntry>) -> Result<Whitelist, TrustError> {
        let mut whitelist = Whitelist::new();
        for entry in entries {
            whitelist.add(&entry.domain, entry.match_mode)?;
        }
        Ok(whitelist)
    }

    pub(crate) fn to_file(&self) -> WhitelistFile {
        WhitelistFile { patterns: self.entries.clone() }
    }

    /// The entries, in the order they were added.
    pub fn entries(&self) -> &[WhitelistEntry] {
        &self.entries
    }

    /// Adds a pattern; `Ok(false)` if the same pattern with the same mode is
    /// there already. Regular expressions must compile.
    pub fn add(&mut self, pattern: &str, match_mode: MatchMode) -> Result<bool, TrustError> {
        let domain = match match_mode {
            MatchMode::Strict => normalize_host(pattern.trim()),
            MatchMode::Regex => pattern.to_string(),
        };
        let entry = WhitelistEntry { domain, match_mode };
        if self.entries.contains(&entry) {
            return Ok(false);
        }
        let regex = compile(&entry)?;
        self.entries.push(entry);
        self.compiled.push(regex);
        Ok(true)
    }

    /// Removes the entry whose pattern is `pattern_or_id` exactly, or whose
    /// [`WhitelistEntry::id`] starts with it (uniquely).
    pub fn remove(&mut self, pattern_or_id: &str) -> Result<WhitelistEntry, TrustError> {
        let by_pattern = self.entries.iter().position(|e| e.domain == pattern_or_id);
        let index = match by_pattern {
            Some(i) => i,
            None => {
                let wanted = pattern_or_id.to_ascii_lowercase();
                let hits: Vec<usize> = if wanted.is_empty() {
                    Vec::new()
                } else {
                    (0..self.entries.len()).filter(|&i| self.entries[i].id().starts_with(&wanted)).collect()
                };
                match hits.as_slice() {
                    [i] => *i,
                    [] => return Err(TrustError::UnknownPattern(pattern_or_id.chars().take(140).collect())),
                    many => {
                        return Err(TrustError::AmbiguousId {
                            prefix: wanted,
                            candidates: many.iter().map(|&i| self.entries[i].domain.clone()).collect(),
                        });
                    }
                }
            }
        };
        self.compiled.remove(index);
        Ok(self.entries.remove(index))
    }

    /// The first entry that matches `host`: strict entries by equality, regex
    /// entries by a case-insensitive match of the whole host name.
    pub fn matching(&self, host: &str) -> Option<&WhitelistEntry> {
        let host = normalize_host(host);
        self.entries.iter().zip(&self.compiled).find_map(|(entry, regex)| {
            let hit = match regex {
                Some(regex) => regex.is_match(&host),
                None => entry.domain == host,
            };
            hit.then_some(entry)
        })
    }

    /// Whether some entry matches `host`.
    pub fn allows(&self, host: &str) -> bool {
        self.matching(host).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_entries_match_the_host_exactly_ignoring_case() {
        let mut w = Whitelist::new();
        assert!(w.add("Example.ORG.", MatchMode::Strict).unwrap());
        assert!(!w.add("example.org", MatchMode::Strict).unwrap());
        assert!(w.allows("example.org"));
        assert!(w.allows("EXAMPLE.org."));
        assert!(!w.allows("www.example.org"));
        assert!(!w.allows("example.org.evil.test"));
    }

    #[test]
    fn regex_entries_must_match_the_whole_host() {
        let mut w = Whitelist::new();
        w.add(r"(.*\.)?ipfs\.io", MatchMode::Regex).unwrap();
        assert!(w.allows("ipfs.io"));
        assert!(w.allows("dweb.IPFS.io"));
        assert!(!w.allows("ipfs.io.evil.test"));
        assert!(!w.allows("notipfs.io"));
        assert!(matches!(w.add("(", MatchMode::Regex), Err(TrustError::InvalidPattern { .. })));
        assert!(matches!(w.add(".*)|(x", MatchMode::Regex), Err(TrustError::InvalidPattern { .. })));
    }

    #[test]
    fn removes_by_pattern_or_id() {
        let mut w = Whitelist::new();
        w.add("a.example", MatchMode::Strict).unwrap();
        w.add("b.example", MatchMode::Strict).unwrap();
        let id = w.entries()[1].id();
        assert_eq!(w.remove(&id[..6]).unwrap().domain, "b.example");
        assert_eq!(w.remove("a.example").unwrap().domain, "a.example");
        assert!(matches!(w.remove("a.example"), Err(TrustError::UnknownPattern(_))));
    }
}
