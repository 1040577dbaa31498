//! Hostile and broken input: every failure is a typed error, never a panic,
//! and nothing unverified is used.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::{blob_path, layer_tar, write_image, E};
use sealpod_oci::oci_spec::image::{Descriptor, MediaType};
use sealpod_oci::{
    sha256_digest, Compression, ImageReference, LayoutWriter, LocalImage, OciError, Platform, MAX_JSON_SIZE,
};
use serde_json::json;

const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// A valid one-layer layout; returns (layout path, reference).
fn valid_layout(dir: &Path) -> (PathBuf, ImageReference) {
    let layout = dir.join("layout");
    let tar = layer_tar(&[E::File("f", b"content", 0o644)]);
    let reference = write_image(&layout, "t", &[(tar, Compression::Gzip)]);
    (layout, reference)
}

fn index_json(layout: &Path) -> serde_json::Value {
    serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap()
}

fn set_index(layout: &Path, index: &serde_json::Value) {
    fs::write(layout.join("index.json"), serde_json::to_vec(index).unwrap()).unwrap();
}

fn manifest_json(layout: &Path) -> serde_json::Value {
    let digest = index_json(layout)["manifests"][0]["digest"].as_str().unwrap().to_owned();
    serde_json::from_slice(&fs::read(blob_path(layout, &digest)).unwrap()).unwrap()
}

/// Stores `manifest` as a blob and points the only index entry at it.
fn replace_manifest(layout: &Path, manifest: &serde_json::Value) {
    let bytes = serde_json::to_vec(manifest).unwrap();
    let desc = LayoutWriter::create(layout).unwrap().write_blob(MANIFEST, &bytes).unwrap();
    let mut index = index_json(layout);
    index["manifests"][0]["digest"] = json!(desc.digest().to_string());
    index["manifests"][0]["size"] = json!(desc.size());
    set_index(layout, &index);
}

fn open_err(reference: &ImageReference) -> OciError {
    LocalImage::open(reference).expect_err("opening must fail")
}

#[test]
fn malformed_index_json_is_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let (layout, reference) = valid_layout(dir.path());
    for bad in [
        &b"{not json"[..],
        b"",
        b"[]",
        b"{\"schemaVersion\":2}",
        b"{\"schemaVersion\":2,\"manifests\":[{\"digest\":7}]}",
    ] {
        fs::write(layout.join("index.json"), bad).unwrap();
        match open_err(&reference) {
            OciError::MalformedJson { blob, .. } => assert_eq!(blob, "index.json"),
            other => panic!("{:?}: {other}", String::from_utf8_lossy(bad)),
        }
    }
    set_index(&layout, &json!({"schemaVersion": 1, "manifests": []}));
    assert!(matches!(open_err(&reference), OciError::InvalidDocument { .. }));
}

#[test]
fn malformed_manifest_json_names_the_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let (layout, reference) = valid_layout(dir.path());
    let desc = LayoutWriter::create(&layout).unwrap().write_blob(MANIFEST, b"{\"layers\": 5}").unwrap();
    let mut index = index_json(&layout);
    index["manifests"][0]["digest"] = json!(desc.digest().to_string());
    index["manifests"][0]["size"] = json!(desc.size());
    set_index(&layout, &index);
    let err = open_err(&reference);
    assert!(matches!(&err, OciError::MalformedJson { blob, .. } if blob.starts_with("manifest sha256:")), "{err}");
}

#[test]
fn oversized_blobs_are_refused_before_reading() {
    let dir = tempfile::tempdir().unwrap();
    let (layout, reference) = valid_layout(dir.path());
    let mut index = index_json(&layout);
    index["manifests"][0]["size"] = json!(MAX_JSON_SIZE + 1);
    set_index(&layout, &index);
    assert!(matches!(open_err(&reference), OciError::BlobTooLarge { .. }));

    let mut manifest = manifest_json(&layout);
    manifest["config"]["size"] = json!(u64::MAX);
    replace_manifest(&layout, &manifest);
    let err = open_err(&reference);
    assert!(matches!(&err, OciError::BlobTooLarge { blob, .. } if blob.starts_with("config")), "{err}");

    let huge = vec![b' '; MAX_JSON_SIZE as usize + 10];
    fs::write(layout.join("index.json"), huge).unwrap();
    assert!(matches!(open_err(&reference), OciError::BlobTooLarge { .. }));
}

#[test]
fn missing_blobs_are_reported_with_their_location() {
    let dir = tempfile::tempdir().unwrap();
    let (layout, reference) = valid_layout(dir.path());
    let image = LocalImage::open(&reference).unwrap();
    let layer = image.layers()[0].digest().to_string();
    fs::remove_file(blob_path(&layout, &layer)).unwrap();
    let err = open_err(&reference);
    assert!(matches!(&err, OciError::BlobMissing { blob, .. } if blob.contains("layer 1")), "{err}");

    let manifest = index_json(&layout)["manifests"][0]["digest"].as_str().unwrap().to_owned();
    fs::remove_file(blob_path(&layout, &manifest)).unwrap();
    let err = open_err(&reference);
    assert!(matches!(&err, OciError::BlobMissing { location, .. } if location.contains("blobs/sha256")), "{err}");
}

#[test]
fn wrong_sizes_are_size_mismatches() {
    let dir = tempfile::tempdir().unwrap();
    let (layout, reference) = valid_layout(dir.path());
    let mut index = index_json(&layout);
    let size = index["manifests"][0]["size"].as_u64().unwrap();
    index["manifests"][0]["size"] = json!(size - 1);
    set_index(&layout, &index);
    assert!(matches!(
        open_err(&reference),
        OciError::SizeMismatch { expected, actual, .. } if expected == size - 1 && actual == size
    ));

    let (layout, reference) = valid_layout(&dir.path().join("2"));
    let mut manifest = manifest_json(&layout);
    let size = manifest["layers"][0]["size"].as_u64().unwrap();
    manifest["layers"][0]["size"] = json!(size + 100);
    replace_manifest(&layout, &manifest);
    assert!(matches!(open_err(&reference), OciError::SizeMismatch { .. }));
}

#[test]
fn tampered_manifest_and_config_are_digest_mismatches() {
    let dir = tempfile::tempdir().unwrap();
    let (layout, reference) = valid_layout(dir.path());
    let manifest_digest = index_json(&layout)["manifests"][0]["digest"].as_str().unwrap().to_owned();
    let config_digest = manifest_json(&layout)["config"]["digest"].as_str().unwrap().to_owned();

    let config_path = blob_path(&layout, &config_digest);
    let original = fs::read(&config_path).unwrap();
    let tampered = String::from_utf8(original.clone()).unwrap().replace("PATH=/bin", "PATH=/tmp");
    fs::write(&config_path, tampered).unwrap();
    let err = open_err(&reference);
    assert!(matches!(&err, OciError::DigestMismatch { blob, .. } if blob.starts_with("config")), "{err}");
    fs::write(&config_path, original).unwrap();

    let path = blob_path(&layout, &manifest_digest);
    let mut bytes = fs::read(&path).unwrap();
    assert!(bytes.starts_with(b"{\"schemaVersion\":2"));
    bytes[17] = b'3'; // same size, different content
    fs::write(&path, bytes).unwrap();
    let err = open_err(&reference);
    assert!(
        matches!(&err, OciError::DigestMismatch { blob, expected, .. }
        if blob.starts_with("manifest") && *expected == manifest_digest),
        "{err}"
    );
}

#[test]
fn digests_that_could_escape_the_layout_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let (layout, reference) = valid_layout(dir.path());
    for digest in ["sha256:../../../../etc/passwd", "sha256:/etc/passwd", "../sha256:ab"] {
        let mut index = index_json(&layout);
        index["manifests"][0]["digest"] = json!(digest);
        set_index(&layout, &index);
        let err = open_err(&reference);
        assert!(
            matches!(
                err,
                OciError::MalformedJson { .. } | OciError::InvalidDocument { .. } | OciError::UnsupportedDigest { .. }
            ),
            "{digest}: {err}"
        );
    }
    let mut index = index_json(&layout);
    index["manifests"][0]["digest"] = json!(format!("blake3:{}", "a".repeat(64)));
    set_index(&layout, &index);
    assert!(matches!(open_err(&reference), OciError::UnsupportedDigest { .. }));
}

#[test]
fn encrypted_layers_need_a_key_and_unknown_encrypted_types_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (layout, reference) = valid_layout(dir.path());
    let mut manifest = manifest_json(&layout);
    manifest["layers"][0]["mediaType"] = json!("application/vnd.oci.image.layer.v1.tar+gzip+encrypted");
    replace_manifest(&layout, &manifest);
    let image = LocalImage::open(&reference).unwrap();
    assert!(image.is_encrypted());
    let err = image.unpack(&dir.path().join("root")).unwrap_err();
    assert!(matches!(err, OciError::KeyNeeded { .. }), "{err}");
    assert!(!dir.path().join("root").exists(), "nothing is created before the keys are unwrapped");

    manifest["layers"][0]["mediaType"] = json!("application/wasm+encrypted");
    replace_manifest(&layout, &manifest);
    let err = open_err(&reference);
    assert!(matches!(err, OciError::Crypt { .. }), "{err}");
    assert!(err.to_string().contains("application/wasm+encrypted"), "{err}");
}

#[test]
fn layer_count_must_match_config_diff_ids() {
    let dir = tempfile::tempdir().unwrap();
    let (layout, reference) = valid_layout(dir.path());
    let mut manifest = manifest_json(&layout);
    let layer = manifest["layers"][0].clone();
    manifest["layers"] = json!([layer.clone(), layer]);
    replace_manifest(&layout, &manifest);
    assert!(matches!(open_err(&reference), OciError::InvalidDocument { .. }));
}

#[test]
fn manifest_posing_as_another_media_type_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let (layout, reference) = valid_layout(dir.path());
    let mut manifest = manifest_json(&layout);
    manifest["mediaType"] = json!(INDEX);
    replace_manifest(&layout, &manifest);
    assert!(matches!(open_err(&reference), OciError::InvalidDocument { .. }));
}

#[test]
fn tags_select_images_and_unknown_or_missing_tags_say_what_exists() {
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    let a = write_image(&layout, "a", &[(layer_tar(&[E::File("a", b"a", 0o644)]), Compression::Gzip)]);
    write_image(&layout, "b", &[(layer_tar(&[E::File("b", b"b", 0o644)]), Compression::Gzip)]);
    assert!(LocalImage::open(&a).is_ok());

    let err = open_err(&ImageReference::OciLayout { path: layout.clone(), tag: Some("c".into()) });
    assert!(matches!(&err, OciError::TagNotFound { available, .. } if available.len() == 2), "{err}");
    let err = open_err(&ImageReference::OciLayout { path: layout.clone(), tag: None });
    assert!(matches!(&err, OciError::AmbiguousImage { available, .. } if available.len() == 2), "{err}");
    assert!(err.to_string().contains(":TAG"), "{err}");
}

/// Writes an image index blob listing `manifests` and tags it.
fn tag_index(layout: &Path, manifests: Vec<serde_json::Value>, tag: &str) -> Descriptor {
    let bytes = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": INDEX, "manifests": manifests})).unwrap();
    let mut w = LayoutWriter::create(layout).unwrap();
    let desc = w.write_blob(INDEX, &bytes).unwrap();
    w.tag(desc.clone(), tag).unwrap();
    desc
}

fn descriptor_json(d: &Descriptor, arch: &str) -> serde_json::Value {
    json!({
        "mediaType": d.media_type().to_string(),
        "digest": d.digest().to_string(),
        "size": d.size(),
        "platform": {"os": "linux", "architecture": arch},
    })
}

#[test]
fn multi_platform_index_resolves_to_the_host_platform() {
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    write_image(&layout, "host", &[(layer_tar(&[E::File("which", b"host", 0o644)]), Compression::Gzip)]);
    write_image(&layout, "other", &[(layer_tar(&[E::File("which", b"other", 0o644)]), Compression::Gzip)]);
    let index = index_json(&layout);
    let find = |tag: &str| -> Descriptor {
        let d = index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["annotations"]["org.opencontainers.image.ref.name"] == tag)
            .unwrap();
        Descriptor::new(
            MediaType::ImageManifest,
            d["size"].as_u64().unwrap(),
            d["digest"].as_str().unwrap().parse::<sealpod_oci::oci_spec::image::Digest>().unwrap(),
        )
    };
    let (host, other) = (find("host"), find("other"));
    let host_arch = Platform::host().architecture;
    let other_arch = if host_arch == "arm64" { "amd64" } else { "arm64" };
    tag_index(&layout, vec![descriptor_json(&other, other_arch), descriptor_json(&host, &host_arch)], "multi");

    let reference = ImageReference::OciLayout { path: layout.clone(), tag: Some("multi".into()) };
    assert_eq!(LocalImage::open(&reference).unwrap().manifest_digest(), host.digest().to_string());
    let wanted = Platform { os: "linux".into(), architecture: other_arch.into(), variant: None };
    assert_eq!(
        LocalImage::open_for_platform(&reference, &wanted).unwrap().manifest_digest(),
        other.digest().to_string()
    );
    let nowhere = Platform { os: "linux".into(), architecture: "s390x".into(), variant: None };
    let err = LocalImage::open_for_platform(&reference, &nowhere).unwrap_err();
    assert!(matches!(&err, OciError::NoMatchingPlatform { available, .. } if available.len() == 2), "{err}");
}

#[test]
fn deeply_nested_indexes_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (layout, _) = valid_layout(dir.path());
    let first = &index_json(&layout)["manifests"][0];
    let mut inner = json!({"mediaType": MANIFEST, "digest": first["digest"], "size": first["size"]});
    for level in 0..6 {
        let d = tag_index(&layout, vec![inner.clone()], &format!("level{level}"));
        inner = json!({"mediaType": INDEX, "digest": d.digest().to_string(), "size": d.size()});
    }
    assert!(LocalImage::open(&ImageReference::OciLayout { path: layout.clone(), tag: Some("level2".into()) }).is_ok());
    let err = open_err(&ImageReference::OciLayout { path: layout, tag: Some("level5".into()) });
    assert!(matches!(&err, OciError::InvalidDocument { reason, .. } if reason.contains("nest")), "{err}");
}

#[test]
fn things_that_are_not_images_are_named_as_such() {
    let dir = tempfile::tempdir().unwrap();
    let gz = dir.path().join("image.tar.gz");
    fs::write(&gz, common::gzip(b"whatever")).unwrap();
    assert!(matches!(ImageReference::parse("image.tar.gz", dir.path()), Err(OciError::CompressedArchive { .. })));
    let junk = dir.path().join("junk");
    fs::write(&junk, vec![0x42; 3000]).unwrap();
    assert!(matches!(ImageReference::parse("junk", dir.path()), Err(OciError::NotAnImage { .. })));
    let plain_tar = dir.path().join("plain.tar");
    fs::write(&plain_tar, layer_tar(&[E::File("hello", b"x", 0o644)])).unwrap();
    assert!(matches!(ImageReference::parse("plain.tar", dir.path()), Err(OciError::NotAnImage { .. })));
    let reference = ImageReference::OciLayout { path: dir.path().join("nope"), tag: None };
    assert!(matches!(open_err(&reference), OciError::NotAnImage { .. }));
    let reference = ImageReference::OciArchive { path: junk, tag: None };
    assert!(matches!(open_err(&reference), OciError::NotAnImage { .. }));
}

/// A hand-made `docker save` archive of one layer.
fn docker_archive(path: &Path, config_name: Option<&str>, config: &[u8], layer: &[u8], manifest: Option<&[u8]>) {
    let config_name = config_name
        .map(str::to_owned)
        .unwrap_or_else(|| format!("{}.json", sha256_digest(config).trim_start_matches("sha256:")));
    let default_manifest = serde_json::to_vec(&json!([
        {"Config": config_name, "RepoTags": ["example.com/app:v1"], "Layers": ["abc/layer.tar"]}
    ]))
    .unwrap();
    let manifest = manifest.unwrap_or(&default_manifest);
    let mut b = tar::Builder::new(fs::File::create(path).unwrap());
    for (name, data) in [(config_name.as_str(), config), ("abc/layer.tar", layer), ("manifest.json", manifest)] {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, name, data).unwrap();
    }
    b.into_inner().unwrap();
}

#[test]
fn docker_archives_are_verified_too() {
    let dir = tempfile::tempdir().unwrap();
    let layer = layer_tar(&[E::File("app", b"app", 0o755)]);
    let config = common::config_json(&[sha256_digest(&layer)]);
    let path = dir.path().join("d.tar");

    docker_archive(&path, None, &config, &layer, None);
    let reference = ImageReference::parse("d.tar:example.com/app:v1", dir.path()).unwrap();
    let image = LocalImage::open(&reference).unwrap();
    image.unpack(&dir.path().join("ok")).unwrap();
    assert_eq!(fs::read(dir.path().join("ok/app")).unwrap(), b"app");

    // `docker save` never compresses, other tools might: sniffed, and
    // verified after decompression.
    docker_archive(&path, None, &config, &common::gzip(&layer), None);
    let image = LocalImage::open(&reference).unwrap();
    assert_eq!(image.layers()[0].size(), layer.len() as u64);
    image.unpack(&dir.path().join("gz")).unwrap();
    assert_eq!(fs::read(dir.path().join("gz/app")).unwrap(), b"app");

    // A layer whose bytes do not match the config's diff_id.
    let mut evil = layer.clone();
    evil[513] ^= 1; // inside the file data
    docker_archive(&path, None, &config, &evil, None);
    let err = LocalImage::open(&reference).unwrap().unpack(&dir.path().join("bad")).unwrap_err();
    assert!(matches!(err, OciError::DigestMismatch { .. }), "{err}");

    // A config that is not what its name promises.
    let name = format!("{}.json", "0".repeat(64));
    docker_archive(&path, Some(&name), &config, &layer, None);
    assert!(matches!(open_err(&reference), OciError::DigestMismatch { .. }));

    docker_archive(&path, None, &config, &layer, Some(b"{\"nope\":1}"));
    assert!(matches!(open_err(&reference), OciError::MalformedJson { .. }));
}

#[test]
fn archive_members_are_read_in_place_with_limits() {
    // An OCI archive whose index.json is larger than the JSON limit.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("o.tar");
    let mut b = tar::Builder::new(fs::File::create(&path).unwrap());
    for (name, data) in [
        ("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec()),
        ("index.json", vec![b' '; MAX_JSON_SIZE as usize + 1]),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, name, &data[..]).unwrap();
    }
    b.into_inner().unwrap();
    let reference = ImageReference::parse("o.tar", dir.path()).unwrap();
    assert!(matches!(reference, ImageReference::OciArchive { .. }));
    assert!(matches!(open_err(&reference), OciError::BlobTooLarge { .. }));
}
