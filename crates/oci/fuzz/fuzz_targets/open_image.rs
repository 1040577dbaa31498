//! Arbitrary bytes as the documents of an OCI layout (or as an archive):
//! opening and unpacking must never panic.

#![no_main]

use std::fs;
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use sealpod_oci::{sha256_digest, ImageReference, LocalImage};

const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const CONFIG: &str = "application/vnd.oci.image.config.v1+json";

/// Stores `bytes` as a blob of `layout` and returns a descriptor for it.
fn blob(layout: &Path, media_type: &str, bytes: &[u8]) -> String {
    let digest = sha256_digest(bytes);
    let path = layout
        .join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"));
    fs::write(path, bytes).expect("blob");
    format!(
        r#"{{"mediaType":"{media_type}","digest":"{digest}","size":{}}}"#,
        bytes.len()
    )
}

fn index_of(manifest: &str) -> String {
    format!(r#"{{"schemaVersion":2,"manifests":[{manifest}]}}"#)
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, input)) = data.split_first() else {
        return;
    };
    let dir = tempfile::tempdir().expect("temporary directory");
    let layout = dir.path().join("layout");
    fs::create_dir_all(layout.join("blobs/sha256")).expect("layout");
    fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .expect("oci-layout");

    let reference = match mode % 4 {
        0 => {
            fs::write(layout.join("index.json"), input).expect("index");
            ImageReference::OciLayout {
                path: layout,
                tag: None,
            }
        }
        1 => {
            let manifest = blob(&layout, MANIFEST, input);
            fs::write(layout.join("index.json"), index_of(&manifest)).expect("index");
            ImageReference::OciLayout {
                path: layout,
                tag: None,
            }
        }
        2 => {
            let config = blob(&layout, CONFIG, input);
            let manifest = format!(r#"{{"schemaVersion":2,"config":{config},"layers":[]}}"#);
            let manifest = blob(&layout, MANIFEST, manifest.as_bytes());
            fs::write(layout.join("index.json"), index_of(&manifest)).expect("index");
            ImageReference::OciLayout {
                path: layout,
                tag: None,
            }
        }
        _ => {
            let archive = dir.path().join("image.tar");
            fs::write(&archive, input).expect("archive");
            match ImageReference::parse("image.tar", dir.path()) {
                Ok(reference) => reference,
                Err(_) => return,
            }
        }
    };
    if let Ok(image) = LocalImage::open(&reference) {
        let _ = image.config();
        let _ = image.unpack(&dir.path().join("rootfs"));
    }
});
