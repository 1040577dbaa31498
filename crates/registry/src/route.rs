//! Parsing request paths, queries and `Content-Range` — everything a client
//! controls before a handler runs. None of it panics; every refusal is a
//! [`RegistryError`] with the spec's code. Fuzzed in `crates/registry/fuzz`.

use sealpod_store::{Digest, RepositoryName};
use serde_json::json;

use crate::error::{ErrorCode, RegistryError};

/// What a request path addresses (distribution spec, "Endpoints").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `/v2/`
    Base,
    /// `/v2/<name>/manifests/<reference>`; the reference is checked by the
    /// handler, as the right error depends on the method.
    Manifest {
        /// The repository.
        name: RepositoryName,
        /// A tag or digest, percent-decoded, not yet validated.
        reference: String,
    },
    /// `/v2/<name>/blobs/<digest>`
    Blob {
        /// The repository.
        name: RepositoryName,
        /// The blob's digest.
        digest: Digest,
    },
    /// `/v2/<name>/blobs/uploads/`
    UploadStart {
        /// The repository.
        name: RepositoryName,
    },
    /// `/v2/<name>/blobs/uploads/<id>`
    Upload {
        /// The repository.
        name: RepositoryName,
        /// The upload id, percent-decoded, not yet validated.
        id: String,
    },
    /// `/v2/<name>/tags/list`
    TagsList {
        /// The repository.
        name: RepositoryName,
    },
}

/// Longest request path looked at.
const MAX_PATH: usize = 2048;

/// Parses a request path (still percent-encoded, without the query).
///
/// Names have any number of components, so the path is read from its end:
/// the last one or two segments say which endpoint it is and everything
/// before them is the name.
pub fn parse_endpoint(path: &str) -> Result<Endpoint, RegistryError> {
    let not_found = || {
        RegistryError::new(ErrorCode::Unsupported, "no such endpoint: the API lives under /v2/")
            .status(axum::http::StatusCode::NOT_FOUND)
    };
    if path.len() > MAX_PATH {
        return Err(RegistryError::new(ErrorCode::NameInvalid, "request path too long"));
    }
    let rest = match path.strip_prefix("/v2") {
        Some("") | Some("/") => return Ok(Endpoint::Base),
        Some(r) => r.strip_prefix('/').ok_or_else(not_found)?,
        None => return Err(not_found()),
    };
    let segments = rest.split('/').map(percent_decode).collect::<Option<Vec<String>>>().ok_or_else(|| {
        RegistryError::new(ErrorCode::NameInvalid, "the path has a malformed percent-escape or is not UTF-8")
    })?;
    if segments.iter().any(|s| s.contains('/')) {
        return Err(RegistryError::new(
            ErrorCode::NameInvalid,
            "an escaped '/' (%2F) is not allowed in a path segment",
        ));
    }
    let n = segments.len();
    if n < 3 {
        return Err(not_found());
    }
    let seg = |i: usize| segments[i].as_str();
    let name = |count: usize| parse_name(&segments[..count]);
    if seg(n - 2) == "tags" && seg(n - 1) == "list" {
        return Ok(Endpoint::TagsList { name: name(n - 2)? });
    }
    if n >= 4 && seg(n - 3) == "blobs" && seg(n - 2) == "uploads" {
        let name = name(n - 3)?;
        return Ok(if seg(n - 1).is_empty() {
            Endpoint::UploadStart { name }
        } else {
            Endpoint::Upload { name, id: segments[n - 1].clone() }
        });
    }
    if seg(n - 2) == "blobs" && seg(n - 1) == "uploads" {
        return Ok(Endpoint::UploadStart { name: name(n - 2)? });
    }
    if seg(n - 2) == "blobs" {
        let name = name(n - 2)?;
        let digest = parse_digest(seg(n - 1))?;
        return Ok(Endpoint::Blob { name, digest });
    }
    if seg(n - 2) == "manifests" {
        return Ok(Endpoint::Manifest { name: name(n - 2)?, reference: segments[n - 1].clone() });
    }
    Err(not_found())
}

fn parse_name(components: &[String]) -> Result<RepositoryName, RegistryError> {
    let joined = components.join("/");
    joined.parse().map_err(|e: sealpod_store::NameError| {
        RegistryError::new(ErrorCode::NameInvalid, e.to_string()).detail(json!({"name": truncate(&joined)}))
    })
}

/// Parses a digest from a path or query, refusing with `DIGEST_INVALID`.
pub fn parse_digest(s: &str) -> Result<Digest, RegistryError> {
    s.parse().map_err(|e: sealpod_store::DigestError| {
        RegistryError::new(ErrorCode::DigestInvalid, e.to_string()).detail(json!({"digest": truncate(s)}))
    })
}

fn truncate(s: &str) -> String {
    s.chars().take(256).collect()
}

/// Decodes `%XX` escapes; `None` for a malformed escape or non-UTF-8 result.
pub fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hi = (*b.get(i + 1)? as char).to_digit(16)?;
            let lo = (*b.get(i + 2)? as char).to_digit(16)?;
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The query's `key=value` pairs, decoded (`+` is a space, as in forms).
/// Pairs that do not decode are skipped.
pub fn parse_query(query: Option<&str>) -> Vec<(String, String)> {
    let Some(query) = query else { return Vec::new() };
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .take(32)
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            Some((percent_decode(&k.replace('+', " "))?, percent_decode(&v.replace('+', " "))?))
        })
        .collect()
}

/// The first value of `key` in a parsed query.
pub fn query_value<'q>(query: &'q [(String, String)], key: &str) -> Option<&'q str> {
    query.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// An upload chunk's `Content-Range: <start>-<end>` (inclusive byte
/// offsets, as the spec writes it for `PATCH`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContentRange {
    /// Offset of the chunk's first byte.
    pub start: u64,
    /// Offset of its last byte.
    pub end: u64,
}

impl ContentRange {
    /// Parses `<start>-<end>`, optionally written `bytes <start>-<end>/<total|*>`
    /// as some clients send it. `None` if malformed or `end < start`.
    pub fn parse(s: &str) -> Option<ContentRange> {
        let s = s.trim();
        let s = s.strip_prefix("bytes ").or_else(|| s.strip_prefix("bytes=")).unwrap_or(s);
        let s = match s.split_once('/') {
            Some((range, total))
                if total == "*" || (!total.is_empty() && total.bytes().all(|b| b.is_ascii_digit())) =>
            {
                range
            }
            Some(_) => return None,
            None => s,
        };
        let (start, end) = s.split_once('-')?;
        let number = |t: &str| -> Option<u64> {
            if t.is_empty() || t.len() > 19 || !t.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            t.parse().ok()
        };
        let (start, end) = (number(start)?, number(end)?);
        (end >= start).then_some(ContentRange { start, end })
    }

    /// How many bytes the range covers.
    pub fn len(&self) -> u64 {
        self.end - self.start + 1
    }

    /// Always false: a range covers at least one byte.
    pub fn is_empty(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> RepositoryName {
        s.parse().unwrap()
    }

    #[test]
    fn names_with_several_components_are_read_from_the_end() {
        let d = Digest::of(b"x");
        assert_eq!(parse_endpoint("/v2/").unwrap(), Endpoint::Base);
        assert_eq!(parse_endpoint("/v2").unwrap(), Endpoint::Base);
        assert_eq!(
            parse_endpoint("/v2/team/app/web/manifests/v1").unwrap(),
            Endpoint::Manifest { name: name("team/app/web"), reference: "v1".into() }
        );
        assert_eq!(
            parse_endpoint(&format!("/v2/a/manifests/b/blobs/{}", d.to_string().replace(':', "%3A"))).unwrap(),
            Endpoint::Blob { name: name("a/manifests/b"), digest: d }
        );
        assert_eq!(parse_endpoint("/v2/a/b/blobs/uploads/").unwrap(), Endpoint::UploadStart { name: name("a/b") });
        assert_eq!(parse_endpoint("/v2/a/b/blobs/uploads").unwrap(), Endpoint::UploadStart { name: name("a/b") });
        assert_eq!(
            parse_endpoint("/v2/a/blobs/blobs/uploads/abc").unwrap(),
            Endpoint::Upload { name: name("a/blobs"), id: "abc".into() }
        );
        assert_eq!(parse_endpoint("/v2/x/y/tags/list").unwrap(), Endpoint::TagsList { name: name("x/y") });
    }

    #[test]
    fn path_tricks_are_invalid_names() {
        for p in [
            "/v2/../etc/manifests/latest",
            "/v2/a/../../b/manifests/latest",
            "/v2/a/%2e%2e/b/manifests/latest",
            "/v2/a%2fb/manifests/latest",
            "/v2//a/manifests/latest",
            "/v2/A/manifests/latest",
            "/v2/a/%zz/manifests/latest",
            "/v2/a/%ff/manifests/latest",
        ] {
            assert_eq!(parse_endpoint(p).unwrap_err().code, ErrorCode::NameInvalid, "{p}");
        }
        assert_eq!(parse_endpoint("/v2/a/blobs/sha256:zz").unwrap_err().code, ErrorCode::DigestInvalid);
        assert_eq!(parse_endpoint("/v3/a/blobs/x").unwrap_err().status, axum::http::StatusCode::NOT_FOUND);
        assert_eq!(parse_endpoint("/v2/a/whatever").unwrap_err().status, axum::http::StatusCode::NOT_FOUND);
    }

    #[test]
    fn content_range_is_inclusive_and_strict() {
        assert_eq!(ContentRange::parse("0-99"), Some(ContentRange { start: 0, end: 99 }));
        assert_eq!(ContentRange::parse("bytes 5-5/*").map(|r| r.len()), Some(1));
        for bad in ["", "-", "5-4", "a-b", "1-", "-1", " 1 - 2", "1-2-3", "0-99999999999999999999", "+1-2", "1-2/x"] {
            assert_eq!(ContentRange::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn queries_are_decoded() {
        let q = parse_query(Some("digest=sha256%3Aab&n=10&last=&x"));
        assert_eq!(query_value(&q, "digest"), Some("sha256:ab"));
        assert_eq!(query_value(&q, "n"), Some("10"));
        assert_eq!(query_value(&q, "last"), Some(""));
        assert_eq!(query_value(&q, "x"), Some(""));
        assert_eq!(query_value(&q, "y"), None);
    }
}
