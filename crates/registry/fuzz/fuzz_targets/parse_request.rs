//! Everything a client controls before a handler runs: the path (names of
//! any depth, references, digests, upload ids), the query and
//! `Content-Range`. None of it may panic, and whatever parses must be safe
//! to use as a path below the store.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sealpod_registry::{parse_endpoint, parse_query, percent_decode, query_value, ContentRange, Endpoint};
use sealpod_store::{Reference, RepositoryName, Tag, UploadId};

fn safe_component(c: &str) -> bool {
    !c.is_empty() && c != "." && c != ".." && !c.contains(['/', '\\', '\0'])
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (path, query) = text.split_once('?').map_or((text, None), |(p, q)| (p, Some(q)));
    match parse_endpoint(path) {
        Ok(Endpoint::Manifest { name, reference }) => {
            check_name(&name);
            if let Ok(Reference::Tag(t)) = reference.parse::<Reference>() {
                assert!(safe_component(t.as_str()) && !t.as_str().starts_with('.'));
            }
        }
        Ok(Endpoint::Upload { name, id }) => {
            check_name(&name);
            if let Ok(id) = id.parse::<UploadId>() {
                assert!(safe_component(id.as_str()));
            }
        }
        Ok(Endpoint::Blob { name, digest }) => {
            check_name(&name);
            assert_eq!(digest.to_string().parse::<sealpod_store::Digest>().ok(), Some(digest));
        }
        Ok(Endpoint::UploadStart { name } | Endpoint::TagsList { name }) => check_name(&name),
        Ok(Endpoint::Base) => {}
        Err(e) => assert!(!e.message.is_empty()),
    }
    let pairs = parse_query(query);
    let _ = query_value(&pairs, "digest");
    let _ = percent_decode(text);
    if let Some(r) = ContentRange::parse(text) {
        assert!(r.end >= r.start && r.len() >= 1);
    }
    if let Ok(tag) = text.parse::<Tag>() {
        assert!(safe_component(tag.as_str()));
    }
});

fn check_name(name: &RepositoryName) {
    assert!(name.components().all(|c| safe_component(c) && !c.starts_with(['.', '_', '-'])));
    assert_eq!(name.as_str().parse::<RepositoryName>().as_ref(), Ok(name));
}
