//! Feeds arbitrary bytes to the manifest reader, as JSON and as base64 text,
//! and asks the enforcement helpers about whatever parses: nothing may panic,
//! overflow the stack or hang.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sealpod_payload::{check_image_bytes, decode_manifest, parse_manifest_json, PayloadManifest};

fn exercise(manifest: &PayloadManifest, data: &[u8]) {
    let argv = vec!["/bin/sh".to_string(), String::from_utf8_lossy(data).into_owned()];
    let _ = manifest.exec_allowed(&argv);
    let _ = manifest.url_allowed("https", "example.org", 443);
    let _ = check_image_bytes(manifest, data);
    let _ = parse_manifest_json(manifest.to_json().as_bytes());
}

fuzz_target!(|data: &[u8]| {
    if let Ok(manifest) = parse_manifest_json(data) {
        exercise(&manifest, data);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(manifest) = decode_manifest(text) {
            exercise(&manifest, data);
        }
    }
});
