//! Manifest validation on a push: any bytes with any Content-Type must be
//! accepted or refused with `ManifestInvalid`/`TooLarge`, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sealpod_store::{ParsedManifest, StoreError};

fuzz_target!(|data: &[u8]| {
    let (content_type, body) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (std::str::from_utf8(&data[..i]).ok(), &data[i + 1..]),
        None => (None, data),
    };
    match ParsedManifest::parse(body, content_type) {
        Ok(m) => assert!(sealpod_store::media_type::ALL.contains(&m.media_type.as_str())),
        Err(StoreError::ManifestInvalid(_) | StoreError::TooLarge { .. }) => {}
        Err(e) => panic!("unexpected error kind: {e}"),
    }
});
