//! Repository names, tags and references, validated by the grammar of the
//! OCI distribution spec ("Pulling manifests"). A valid name or tag is also a
//! safe relative path: no empty, `.` or `..` component, no other separator.

use std::fmt;
use std::str::FromStr;

use crate::Digest;

/// Longest repository name accepted. The spec asks clients to keep names
/// (with the registry's host) under 256 characters.
pub const MAX_NAME_LEN: usize = 255;

/// The repository private (encrypted) images live in on the artifact
/// network: addressed by digest only, never tagged, never in the log.
pub const PRIVATE_REPOSITORY: &str = "private";

/// Longest tag: one leading character and at most 127 more.
pub const MAX_TAG_LEN: usize = 128;

/// A repository name such as `team/app/web`:
/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepositoryName(String);

/// A tag: `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(String);

/// What a manifest is asked for by: a tag or a digest.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub enum Reference {
    /// A mutable name pointing at a manifest.
    Tag(Tag),
    /// The manifest's own content digest.
    Digest(Digest),
}

/// Why a string is not a valid name, tag or reference.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The repository name breaks the spec's grammar or length limit.
    #[error("{0:?} is not a repository name: use lowercase path components like team/app, separated by '/', each [a-z0-9] with single '.', '_', '__' or '-' runs between")]
    InvalidName(String),
    /// The tag breaks the spec's grammar or length limit.
    #[error("{0:?} is not a tag: use up to 128 characters from [A-Za-z0-9._-], not starting with '.' or '-'")]
    InvalidTag(String),
    /// The reference contains ':' but is not a valid digest.
    #[error(transparent)]
    InvalidDigest(#[from] crate::DigestError),
}

fn shorten(s: &str) -> String {
    s.chars().take(300).collect()
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn is_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    let mut i = 0;
    loop {
        let start = i;
        while i < b.len() && alnum(b[i]) {
            i += 1;
        }
        if i == start {
            return false;
        }
        if i == b.len() {
            return true;
        }
        let sep_start = i;
        match b[i] {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if i < b.len() && b[i] == b'_' {
                    i += 1;
                }
            }
            b'-' => {
                while i < b.len() && b[i] == b'-' {
                    i += 1;
                }
            }
            _ => return false,
        }
        debug_assert!(i > sep_start);
    }
}

impl RepositoryName {
    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The `/`-separated components, each a safe directory name.
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }
}

impl FromStr for RepositoryName {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, NameError> {
        if s.is_empty() || s.len() > MAX_NAME_LEN || !s.split('/').all(is_path_component) {
            return Err(NameError::InvalidName(shorten(s)));
        }
        Ok(RepositoryName(s.to_owned()))
    }
}

impl Tag {
    /// The tag as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Tag {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, NameError> {
        let b = s.as_bytes();
        let ok = !b.is_empty()
            && b.len() <= MAX_TAG_LEN
            && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
            && b.iter().all(|&x| x.is_ascii_alphanumeric() || matches!(x, b'_' | b'.' | b'-'));
        if !ok {
            return Err(NameError::InvalidTag(shorten(s)));
        }
        Ok(Tag(s.to_owned()))
    }
}

impl FromStr for Reference {
    type Err = NameError;

    /// A reference with a ':' is a digest, anything else a tag (tags have no ':').
    fn from_str(s: &str) -> Result<Self, NameError> {
        if s.contains(':') {
            Ok(Reference::Digest(s.parse()?))
        } else {
            Ok(Reference::Tag(s.parse()?))
        }
    }
}

macro_rules! display_as_str {
    ($t:ty) => {
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }
    };
}
display_as_str!(RepositoryName);
display_as_str!(Tag);

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Tag(t) => t.fmt(f),
            Reference::Digest(d) => d.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_names_of_several_components() {
        for good in ["a", "team/app/web", "a.b_c__d---e/f0", "library/ubuntu", "0/1/2/3"] {
            assert_eq!(good.parse::<RepositoryName>().unwrap().as_str(), good);
        }
    }

    #[test]
    fn rejects_names_with_path_tricks_or_bad_separators() {
        for bad in [
            "",
            "..",
            "../etc",
            "a/../b",
            "a/./b",
            ".a",
            "a.",
            "/a",
            "a/",
            "a//b",
            "A",
            "a b",
            "a___b",
            "a.-b",
            "a_-b",
            "a\\b",
            "a/.hidden",
            "a%2fb",
            "_a",
            "-a",
        ] {
            assert!(bad.parse::<RepositoryName>().is_err(), "{bad:?}");
        }
        assert!("a".repeat(MAX_NAME_LEN + 1).parse::<RepositoryName>().is_err());
        assert!("a".repeat(MAX_NAME_LEN).parse::<RepositoryName>().is_ok());
    }

    #[test]
    fn tags_follow_the_spec_grammar() {
        for good in ["latest", "v1.2.3", "_x", "A-b_c.d", &"t".repeat(MAX_TAG_LEN)] {
            assert!(good.parse::<Tag>().is_ok(), "{good}");
        }
        for bad in ["", ".x", "-x", "a/b", "a:b", "..", &"t".repeat(MAX_TAG_LEN + 1)] {
            assert!(bad.parse::<Tag>().is_err(), "{bad}");
        }
    }

    #[test]
    fn references_with_a_colon_are_digests() {
        let d = Digest::of(b"x");
        assert_eq!(d.to_string().parse::<Reference>().unwrap(), Reference::Digest(d));
        assert!(matches!("v1".parse::<Reference>().unwrap(), Reference::Tag(_)));
        assert!(matches!("sha256:zz".parse::<Reference>(), Err(NameError::InvalidDigest(_))));
    }
}
