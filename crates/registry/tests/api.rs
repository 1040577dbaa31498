//! The distribution API spoken over a raw socket: the happy paths the real
//! clients rely on, and hostile or broken input, each refused with the
//! spec's error code while the registry keeps serving.

mod common;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;

use common::*;
use sealpod_registry::{Digest, PullDenied, RegistryOptions};
use sealpod_store::RepositoryName;
use serde_json::json;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

fn digest(bytes: &[u8]) -> String {
    sha256_hex(bytes)
}

fn push_blob(addr: SocketAddr, name: &str, blob: &[u8]) {
    let r = raw_request(addr, "POST", &format!("/v2/{name}/blobs/uploads/?digest={}", digest(blob)), &[], blob);
    assert_eq!(r.status, 201, "{:?}", String::from_utf8_lossy(&r.body));
}

fn manifest_for(config: &[u8], layers: &[&[u8]], media_type: &str) -> Vec<u8> {
    let d = |mt: &str, b: &[u8]| json!({"mediaType": mt, "digest": digest(b), "size": b.len()});
    serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": d("application/vnd.oci.image.config.v1+json", config),
        "layers": layers.iter().map(|l| d("application/vnd.oci.image.layer.v1.tar", l)).collect::<Vec<_>>(),
    }))
    .unwrap()
}

/// Pushes a one-layer image and returns its manifest.
fn push_image(addr: SocketAddr, name: &str, tag: &str) -> Vec<u8> {
    let (config, layer) = (format!("{{\"config\":\"{name}\"}}").into_bytes(), format!("layer of {name}").into_bytes());
    push_blob(addr, name, &config);
    push_blob(addr, name, &layer);
    let manifest = manifest_for(&config, &[&layer], OCI_MANIFEST);
    let r =
        raw_request(addr, "PUT", &format!("/v2/{name}/manifests/{tag}"), &[("Content-Type", OCI_MANIFEST)], &manifest);
    assert_eq!(r.status, 201, "{:?}", String::from_utf8_lossy(&r.body));
    manifest
}

fn assert_error(r: &RawResponse, status: u16, code: &str) {
    assert_eq!(r.status, status, "body: {}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.error_code(), code, "body: {}", String::from_utf8_lossy(&r.body));
    assert!(r.json()["errors"][0]["message"].as_str().is_some_and(|m| !m.is_empty()));
}

fn still_serving(addr: SocketAddr) {
    let r = raw_request(addr, "GET", "/v2/", &[], b"");
    assert_eq!(r.status, 200);
}

fn start_upload(addr: SocketAddr, name: &str) -> String {
    let r = raw_request(addr, "POST", &format!("/v2/{name}/blobs/uploads/"), &[], b"");
    assert_eq!(r.status, 202);
    assert_eq!(r.header("range"), Some("0-0"));
    assert!(r.header("docker-upload-uuid").is_some());
    r.header("location").unwrap().to_owned()
}

#[test]
fn base_endpoint_announces_the_api_version() {
    let reg = TestRegistry::start();
    for path in ["/v2/", "/v2"] {
        let r = raw_request(reg.addr, "GET", path, &[], b"");
        assert_eq!(r.status, 200);
        assert_eq!(r.header("docker-distribution-api-version"), Some("registry/2.0"));
        assert_eq!(r.json(), json!({}));
    }
}

#[test]
fn manifests_and_blobs_are_served_with_digest_length_and_type_by_tag_and_digest() {
    let reg = TestRegistry::start();
    let manifest = push_image(reg.addr, "team/app/web", "v1");
    let md = digest(&manifest);
    for reference in ["v1", md.as_str()] {
        let path = format!("/v2/team/app/web/manifests/{reference}");
        let get = raw_request(reg.addr, "GET", &path, &[("Accept", OCI_MANIFEST)], b"");
        assert_eq!(get.status, 200);
        assert_eq!(get.body, manifest);
        assert_eq!(get.header("content-type"), Some(OCI_MANIFEST));
        assert_eq!(get.header("docker-content-digest"), Some(md.as_str()));
        let head = raw_request(reg.addr, "HEAD", &path, &[], b"");
        assert_eq!(head.status, 200);
        assert_eq!(head.header("content-length"), Some(manifest.len().to_string().as_str()));
        assert_eq!(head.header("docker-content-digest"), Some(md.as_str()));
    }
    let layer = b"layer of team/app/web";
    let path = format!("/v2/team/app/web/blobs/{}", digest(layer));
    let get = raw_request(reg.addr, "GET", &path, &[], b"");
    assert_eq!((get.status, get.body.as_slice()), (200, &layer[..]));
    assert_eq!(get.header("content-length"), Some(layer.len().to_string().as_str()));
    assert_eq!(get.header("docker-content-digest"), Some(digest(layer).as_str()));
    let head = raw_request(reg.addr, "HEAD", &path, &[], b"");
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), Some(layer.len().to_string().as_str()));
    // Percent-encoded ':' as some clients send it.
    let encoded = path.replace(':', "%3A");
    assert_eq!(raw_request(reg.addr, "GET", &encoded, &[], b"").body, layer);
}

#[test]
fn docker_v2_manifests_keep_their_media_type() {
    let reg = TestRegistry::start();
    push_blob(reg.addr, "d", b"cfg");
    let manifest = manifest_for(b"cfg", &[], DOCKER_MANIFEST);
    let r = raw_request(reg.addr, "PUT", "/v2/d/manifests/x", &[("Content-Type", DOCKER_MANIFEST)], &manifest);
    assert_eq!(r.status, 201);
    let get = raw_request(reg.addr, "GET", "/v2/d/manifests/x", &[], b"");
    assert_eq!(get.header("content-type"), Some(DOCKER_MANIFEST));
}

#[test]
fn chunked_upload_with_content_range_and_status() {
    let reg = TestRegistry::start();
    let location = start_upload(reg.addr, "team/chunks");
    let r = raw_request(reg.addr, "PATCH", &location, &[("Content-Range", "0-4")], b"hello");
    assert_eq!(r.status, 202);
    assert_eq!(r.header("range"), Some("0-4"));
    // Without Content-Range, a streamed chunk is appended.
    let r = raw_request(reg.addr, "PATCH", &location, &[("Transfer-Encoding", "chunked")], b"1\r\n \r\n0\r\n\r\n");
    assert_eq!(r.status, 202);
    assert_eq!(r.header("range"), Some("0-5"));
    let status = raw_request(reg.addr, "GET", &location, &[], b"");
    assert_eq!(status.status, 204);
    assert_eq!(status.header("range"), Some("0-5"));
    let blob = b"hello world";
    let r = raw_request(
        reg.addr,
        "PUT",
        &format!("{location}?digest={}", digest(blob)),
        &[("Content-Range", "6-10")],
        b"world",
    );
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("location"), Some(format!("/v2/team/chunks/blobs/{}", digest(blob)).as_str()));
    assert_eq!(r.header("docker-content-digest"), Some(digest(blob).as_str()));
    assert_eq!(raw_request(reg.addr, "GET", r.header("location").unwrap(), &[], b"").body, blob);
    assert_error(&raw_request(reg.addr, "GET", &location, &[], b""), 404, "BLOB_UPLOAD_UNKNOWN");
}

#[test]
fn upload_resumes_after_a_registry_restart() {
    let first = TestRegistry::start();
    let location = start_upload(first.addr, "team/r");
    assert_eq!(raw_request(first.addr, "PATCH", &location, &[], b"before ").status, 202);
    let dir = first.stop();

    let second = TestRegistry::start_in(dir, |r| r);
    assert_eq!(raw_request(second.addr, "GET", &location, &[], b"").header("range"), Some("0-6"));
    let r = raw_request(second.addr, "PATCH", &location, &[("Content-Range", "7-11")], b"after");
    assert_eq!(r.header("range"), Some("0-11"));
    let r = raw_request(second.addr, "PUT", &format!("{location}?digest={}", digest(b"before after")), &[], b"");
    assert_eq!(r.status, 201);
}

#[test]
fn wrong_content_range_is_refused_and_the_upload_kept_intact() {
    let reg = TestRegistry::start();
    let location = start_upload(reg.addr, "r");
    assert_eq!(raw_request(reg.addr, "PATCH", &location, &[("Content-Range", "0-2")], b"abc").status, 202);
    // Out of order: starts at 0 again.
    let r = raw_request(reg.addr, "PATCH", &location, &[("Content-Range", "0-2")], b"abc");
    assert_error(&r, 416, "BLOB_UPLOAD_INVALID");
    assert_eq!(r.header("range"), Some("0-2"));
    assert!(r.header("location").is_some());
    for bad in ["garbage", "5-3", "-1", "3-", "3-99999999999999999999999"] {
        assert_error(
            &raw_request(reg.addr, "PATCH", &location, &[("Content-Range", bad)], b"x"),
            416,
            "BLOB_UPLOAD_INVALID",
        );
    }
    // The range promises 4 bytes, the body has 3.
    let r = raw_request(reg.addr, "PATCH", &location, &[("Content-Range", "3-6"), ("Content-Length", "3")], b"def");
    assert_error(&r, 400, "BLOB_UPLOAD_INVALID");
    let r = raw_request(
        reg.addr,
        "PATCH",
        &location,
        &[("Content-Range", "3-6"), ("Transfer-Encoding", "chunked")],
        b"3\r\ndef\r\n0\r\n\r\n",
    );
    assert_error(&r, 400, "BLOB_UPLOAD_INVALID");
    let status = raw_request(reg.addr, "GET", &location, &[], b"");
    assert_eq!(status.header("range"), Some("0-2"), "failed chunks leave nothing behind");
    let r = raw_request(reg.addr, "PUT", &format!("{location}?digest={}", digest(b"abcdef")), &[], b"def");
    assert_eq!(r.status, 201);
}

#[test]
fn unknown_and_foreign_upload_ids_are_blob_upload_unknown() {
    let reg = TestRegistry::start();
    let ours = start_upload(reg.addr, "mine");
    let id = ours.rsplit('/').next().unwrap().to_owned();
    for (method, path) in [
        ("GET", "/v2/mine/blobs/uploads/0123456789abcdef0123456789abcdef".to_owned()),
        ("PATCH", "/v2/mine/blobs/uploads/not-an-id".to_owned()),
        ("DELETE", "/v2/mine/blobs/uploads/..".to_owned()),
        ("PUT", format!("/v2/mine/blobs/uploads/ABC?digest={}", digest(b""))),
        ("GET", format!("/v2/theirs/blobs/uploads/{id}")),
        ("PATCH", format!("/v2/theirs/blobs/uploads/{id}")),
    ] {
        assert_error(&raw_request(reg.addr, method, &path, &[], b""), 404, "BLOB_UPLOAD_UNKNOWN");
    }
    // The foreign attempts did not disturb the real one.
    assert_eq!(raw_request(reg.addr, "GET", &ours, &[], b"").status, 204);
    assert_eq!(raw_request(reg.addr, "DELETE", &ours, &[], b"").status, 204);
    assert_error(&raw_request(reg.addr, "GET", &ours, &[], b""), 404, "BLOB_UPLOAD_UNKNOWN");
}

#[test]
fn bad_digests_are_digest_invalid() {
    let reg = TestRegistry::start();
    for path in [
        "/v2/a/blobs/sha256:xyz",
        "/v2/a/blobs/sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
        "/v2/a/blobs/md5:d41d8cd98f00b204e9800998ecf8427e",
        "/v2/a/blobs/sha256:..",
        "/v2/a/manifests/sha256:1234",
    ] {
        assert_error(&raw_request(reg.addr, "GET", path, &[], b""), 400, "DIGEST_INVALID");
    }
    assert_error(
        &raw_request(reg.addr, "POST", "/v2/a/blobs/uploads/?digest=sha256:nope", &[], b"x"),
        400,
        "DIGEST_INVALID",
    );
    // Monolithic push whose content does not match: nothing is stored.
    let r =
        raw_request(reg.addr, "POST", &format!("/v2/a/blobs/uploads/?digest={}", digest(b"other")), &[], b"content");
    assert_error(&r, 400, "DIGEST_INVALID");
    assert!(!reg.store.contains(&sealpod_store::Digest::of(b"content")).unwrap());
    // Finishing without or with a wrong digest.
    let location = start_upload(reg.addr, "a");
    assert_error(&raw_request(reg.addr, "PUT", &location, &[], b""), 400, "DIGEST_INVALID");
    assert_error(
        &raw_request(reg.addr, "PUT", &format!("{location}?digest=sha256:12"), &[], b""),
        400,
        "DIGEST_INVALID",
    );
    assert_eq!(
        raw_request(reg.addr, "GET", &location, &[], b"").status,
        204,
        "a malformed digest does not end the upload"
    );
    let r = raw_request(reg.addr, "PUT", &format!("{location}?digest={}", digest(b"x")), &[], b"y");
    assert_error(&r, 400, "DIGEST_INVALID");
    assert!(!reg.store.contains(&sealpod_store::Digest::of(b"y")).unwrap());
    still_serving(reg.addr);
}

#[test]
fn unknown_names_blobs_and_manifests_are_404_with_their_codes() {
    let reg = TestRegistry::start();
    push_image(reg.addr, "known", "v1");
    let unknown_blob = format!("/v2/known/blobs/{}", digest(b"never pushed"));
    assert_error(&raw_request(reg.addr, "GET", &unknown_blob, &[], b""), 404, "BLOB_UNKNOWN");
    let head = raw_request(reg.addr, "HEAD", &unknown_blob, &[], b"");
    assert_eq!((head.status, head.body.len()), (404, 0));
    assert_error(&raw_request(reg.addr, "GET", "/v2/unknown/manifests/v1", &[], b""), 404, "NAME_UNKNOWN");
    assert_error(&raw_request(reg.addr, "GET", "/v2/known/manifests/v2", &[], b""), 404, "MANIFEST_UNKNOWN");
    assert_error(&raw_request(reg.addr, "GET", "/v2/known/manifests/.bad", &[], b""), 404, "MANIFEST_UNKNOWN");
    let other = format!("/v2/known/manifests/{}", digest(b"no manifest"));
    assert_error(&raw_request(reg.addr, "GET", &other, &[], b""), 404, "MANIFEST_UNKNOWN");
    assert_error(&raw_request(reg.addr, "GET", "/v2/unknown/tags/list", &[], b""), 404, "NAME_UNKNOWN");
    assert_eq!(raw_request(reg.addr, "GET", "/v3/", &[], b"").status, 404);
    assert_error(&raw_request(reg.addr, "POST", "/v2/known/manifests/v1", &[], b""), 405, "UNSUPPORTED");
}

#[test]
fn path_traversal_in_names_is_name_invalid_and_touches_nothing() {
    let reg = TestRegistry::start();
    let before = std::fs::read_dir(reg.dir.path()).unwrap().count();
    for path in [
        "/v2/../../etc/manifests/latest",
        "/v2/a/../../../tmp/manifests/latest",
        "/v2/%2e%2e/%2e%2e/tmp/manifests/latest",
        "/v2/a%2F..%2F..%2Fb/manifests/latest",
        "/v2/./a/manifests/latest",
        "/v2/a//b/manifests/latest",
        "/v2/a/_manifests/manifests/latest",
        "/v2/UPPER/manifests/latest",
        "/v2/a%00b/manifests/latest",
        "/v2/a/%ff/manifests/latest",
        "/v2/a/blobs/sha256:..%2F..%2Fetc%2Fpasswd",
        "/v2/a/blobs/uploads/..%2F..%2Fgc.lock",
    ] {
        for method in ["GET", "PUT"] {
            let r = raw_request(reg.addr, method, path, &[("Content-Type", OCI_MANIFEST)], b"{}");
            assert_error(&r, 400, "NAME_INVALID");
        }
    }
    let long = format!("/v2/{}/manifests/latest", "a".repeat(300));
    assert_error(&raw_request(reg.addr, "GET", &long, &[], b""), 400, "NAME_INVALID");
    assert_eq!(std::fs::read_dir(reg.dir.path()).unwrap().count(), before);
    assert!(reg.store.repositories().unwrap().is_empty());
    still_serving(reg.addr);
}

#[test]
fn oversized_manifest_is_size_invalid() {
    let reg = TestRegistry::start();
    let big = vec![b' '; 4 * 1024 * 1024 + 1];
    let r = raw_request(reg.addr, "PUT", "/v2/a/manifests/big", &[("Content-Type", OCI_MANIFEST)], &big);
    assert_error(&r, 413, "SIZE_INVALID");
    // The same without a Content-Length: refused while it streams in.
    let mut chunked = format!("{:x}\r\n", big.len()).into_bytes();
    chunked.extend_from_slice(&big);
    chunked.extend_from_slice(b"\r\n0\r\n\r\n");
    let r = raw_request(
        reg.addr,
        "PUT",
        "/v2/a/manifests/big",
        &[("Content-Type", OCI_MANIFEST), ("Transfer-Encoding", "chunked")],
        &chunked,
    );
    assert_error(&r, 413, "SIZE_INVALID");
    still_serving(reg.addr);
}

#[test]
fn invalid_manifests_are_refused_with_their_reason() {
    let reg = TestRegistry::start();
    let put = |body: &[u8], ct: &str, reference: &str| {
        raw_request(reg.addr, "PUT", &format!("/v2/a/manifests/{reference}"), &[("Content-Type", ct)], body)
    };
    assert_error(&put(b"not json", OCI_MANIFEST, "v1"), 400, "MANIFEST_INVALID");
    assert_error(
        &put(br#"{"schemaVersion":1,"name":"a","tag":"v1","fsLayers":[]}"#, OCI_MANIFEST, "v1"),
        400,
        "MANIFEST_INVALID",
    );
    let manifest = manifest_for(b"cfg", &[b"layer"], OCI_MANIFEST);
    assert_error(&put(&manifest, DOCKER_MANIFEST, "v1"), 400, "MANIFEST_INVALID");
    assert_error(&put(&manifest, OCI_MANIFEST, "bad:tag:"), 400, "DIGEST_INVALID");
    assert_error(&put(&manifest, OCI_MANIFEST, ".hidden"), 400, "MANIFEST_INVALID");
    let r = put(&manifest, OCI_MANIFEST, "v1");
    assert_error(&r, 400, "MANIFEST_BLOB_UNKNOWN");
    assert_eq!(r.json()["errors"][0]["detail"]["missing"], json!([digest(b"cfg"), digest(b"layer")]));
    push_blob(reg.addr, "a", b"cfg");
    push_blob(reg.addr, "a", b"layer");
    assert_error(&put(&manifest, OCI_MANIFEST, &digest(b"something else")), 400, "DIGEST_INVALID");
    let r = put(&manifest, OCI_MANIFEST, &digest(&manifest));
    assert_eq!(r.status, 201);
    assert_eq!(r.header("location"), Some(format!("/v2/a/manifests/{}", digest(&manifest)).as_str()));
}

#[test]
fn oversized_upload_chunks_are_size_invalid_and_rolled_back() {
    let reg =
        TestRegistry::with_options(RegistryOptions { max_chunk_size: 1024, max_blob_size: 1500, ..Default::default() });
    let big = vec![7u8; 1025];
    let r = raw_request(reg.addr, "POST", &format!("/v2/a/blobs/uploads/?digest={}", digest(&big)), &[], &big);
    assert_error(&r, 413, "SIZE_INVALID");
    let location = start_upload(reg.addr, "a");
    assert_error(&raw_request(reg.addr, "PATCH", &location, &[], &big), 413, "SIZE_INVALID");
    let mut chunked = format!("{:x}\r\n", big.len()).into_bytes();
    chunked.extend_from_slice(&big);
    chunked.extend_from_slice(b"\r\n0\r\n\r\n");
    let r = raw_request(reg.addr, "PATCH", &location, &[("Transfer-Encoding", "chunked")], &chunked);
    assert_error(&r, 413, "SIZE_INVALID");
    assert_eq!(raw_request(reg.addr, "GET", &location, &[], b"").header("range"), Some("0-0"));
    assert_eq!(raw_request(reg.addr, "PATCH", &location, &[], &[1u8; 1000]).status, 202);
    // The blob limit counts what the upload already holds.
    assert_error(&raw_request(reg.addr, "PATCH", &location, &[], &[1u8; 600]), 413, "SIZE_INVALID");
    assert_eq!(raw_request(reg.addr, "GET", &location, &[], b"").header("range"), Some("0-999"));
}

#[test]
fn tags_are_listed_in_pages() {
    let reg = TestRegistry::start();
    let manifest = push_image(reg.addr, "lib/paged", "v1");
    for tag in ["a", "b", "c", "d"] {
        let r = raw_request(
            reg.addr,
            "PUT",
            &format!("/v2/lib/paged/manifests/{tag}"),
            &[("Content-Type", OCI_MANIFEST)],
            &manifest,
        );
        assert_eq!(r.status, 201);
    }
    let all = raw_request(reg.addr, "GET", "/v2/lib/paged/tags/list", &[], b"");
    assert_eq!(all.json(), json!({"name": "lib/paged", "tags": ["a", "b", "c", "d", "v1"]}));
    assert_eq!(all.header("link"), None);
    let page = raw_request(reg.addr, "GET", "/v2/lib/paged/tags/list?n=2", &[], b"");
    assert_eq!(page.json()["tags"], json!(["a", "b"]));
    assert_eq!(page.header("link"), Some("</v2/lib/paged/tags/list?n=2&last=b>; rel=\"next\""));
    let next = raw_request(reg.addr, "GET", "/v2/lib/paged/tags/list?n=2&last=b", &[], b"");
    assert_eq!(next.json()["tags"], json!(["c", "d"]));
    let rest = raw_request(reg.addr, "GET", "/v2/lib/paged/tags/list?n=2&last=d", &[], b"");
    assert_eq!(rest.json()["tags"], json!(["v1"]));
    assert_eq!(rest.header("link"), None);
    assert_eq!(raw_request(reg.addr, "GET", "/v2/lib/paged/tags/list?n=0", &[], b"").json()["tags"], json!([]));
    assert_eq!(raw_request(reg.addr, "GET", "/v2/lib/paged/tags/list?n=-1", &[], b"").status, 400);
}

#[test]
fn cross_repository_mount_finds_an_existing_blob() {
    let reg = TestRegistry::start();
    push_blob(reg.addr, "source", b"shared layer");
    let path = format!("/v2/target/blobs/uploads/?mount={}&from=source", digest(b"shared layer"));
    let r = raw_request(reg.addr, "POST", &path, &[], b"");
    assert_eq!(r.status, 201);
    assert_eq!(r.header("location"), Some(format!("/v2/target/blobs/{}", digest(b"shared layer")).as_str()));
    // An unknown blob falls back to a new upload.
    let path = format!("/v2/target/blobs/uploads/?mount={}&from=source", digest(b"absent"));
    assert_eq!(raw_request(reg.addr, "POST", &path, &[], b"").status, 202);
}

#[test]
fn pull_policy_can_refuse_a_manifest() {
    let reg = TestRegistry::start_with(|r| {
        r.pull_policy(|repo: &sealpod_store::RepositoryName, _: &_, _: &_| {
            if repo.as_str() == "untrusted" {
                Err(PullDenied { reason: "not included in the trusted log".into() })
            } else {
                Ok(())
            }
        })
    });
    push_image(reg.addr, "untrusted", "v1");
    push_image(reg.addr, "trusted", "v1");
    for method in ["GET", "HEAD"] {
        let r = raw_request(reg.addr, method, "/v2/untrusted/manifests/v1", &[], b"");
        assert_eq!(r.status, 403);
        if method == "GET" {
            assert_error(&r, 403, "DENIED");
            assert!(r.json()["errors"][0]["message"].as_str().unwrap().contains("trusted log"));
        }
    }
    assert_eq!(raw_request(reg.addr, "GET", "/v2/trusted/manifests/v1", &[], b"").status, 200);
}

#[test]
fn delete_is_refused_unless_enabled() {
    let reg = TestRegistry::start();
    let manifest = push_image(reg.addr, "a", "v1");
    assert_error(&raw_request(reg.addr, "DELETE", "/v2/a/manifests/v1", &[], b""), 405, "UNSUPPORTED");
    let blob = format!("/v2/a/blobs/{}", digest(b"layer of a"));
    assert_error(&raw_request(reg.addr, "DELETE", &blob, &[], b""), 405, "UNSUPPORTED");

    let reg = TestRegistry::with_options(RegistryOptions { allow_delete: true, ..Default::default() });
    let manifest2 = push_image(reg.addr, "a", "v1");
    assert_eq!(manifest, manifest2);
    assert_eq!(raw_request(reg.addr, "DELETE", "/v2/a/manifests/v1", &[], b"").status, 202);
    assert_error(&raw_request(reg.addr, "GET", "/v2/a/manifests/v1", &[], b""), 404, "MANIFEST_UNKNOWN");
    let by_digest = format!("/v2/a/manifests/{}", digest(&manifest));
    assert_eq!(raw_request(reg.addr, "GET", &by_digest, &[], b"").status, 200, "deleting a tag keeps the manifest");
    assert_eq!(raw_request(reg.addr, "DELETE", &by_digest, &[], b"").status, 202);
    assert_error(&raw_request(reg.addr, "GET", &by_digest, &[], b""), 404, "MANIFEST_UNKNOWN");
}

#[test]
fn a_read_only_registry_serves_pulls_and_refuses_every_write() {
    let reg = TestRegistry::start();
    let manifest = push_image(reg.addr, "a", "v1");
    // The same store, served read-only (a provider serving its cluster).
    let options = RegistryOptions { read_only: true, allow_delete: true, ..Default::default() };
    let ro = TestRegistry::start_in(reg.stop(), move |r| r.options(options));
    let got = raw_request(ro.addr, "GET", "/v2/a/manifests/v1", &[], b"");
    assert_eq!(got.status, 200);
    assert_eq!(got.body, manifest);
    assert_eq!(raw_request(ro.addr, "HEAD", "/v2/a/manifests/v1", &[], b"").status, 200);
    for (method, path) in [
        ("POST", "/v2/b/blobs/uploads/".to_owned()),
        ("PUT", "/v2/a/manifests/v2".to_owned()),
        ("DELETE", "/v2/a/manifests/v1".to_owned()),
        ("PATCH", "/v2/a/blobs/uploads/x".to_owned()),
    ] {
        assert_error(&raw_request(ro.addr, method, &path, &[], b"{}"), 403, "DENIED");
    }
    assert_eq!(raw_request(ro.addr, "GET", "/v2/a/manifests/v1", &[], b"").status, 200, "nothing was removed");
}

#[test]
fn a_blob_corrupted_on_disk_is_never_served_complete() {
    let reg = TestRegistry::start();
    let blob: Vec<u8> = (0..1_000_000u32).map(|i| (i % 249) as u8).collect();
    push_blob(reg.addr, "a", &blob);
    let path = reg.store.root().join("blobs/sha256").join(digest(&blob).trim_start_matches("sha256:"));
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[10] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    let r = raw_request(reg.addr, "GET", &format!("/v2/a/blobs/{}", digest(&blob)), &[], b"");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("1000000"));
    assert!(r.body.len() < blob.len(), "the transfer was cut short ({} bytes)", r.body.len());
    still_serving(reg.addr);
}

/// A source that streams one blob from memory, ending with `Ok(0)` if it
/// "verified", or an error if it did not.
struct Streaming {
    blob: Vec<u8>,
    verified: bool,
}

struct Arriving {
    bytes: std::io::Cursor<Vec<u8>>,
    verified: bool,
}

impl std::io::Read for Arriving {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.bytes.read(buf)?;
        if n == 0 && !self.verified {
            return Err(std::io::Error::other("what the peers sent is not the blob"));
        }
        Ok(n)
    }
}

impl sealpod_registry::ContentSource for Streaming {
    fn fetch_blob(&self, _: Digest) -> Pin<Box<dyn Future<Output = bool> + Send>> {
        Box::pin(async { false })
    }
    fn stream_blob(&self, d: Digest) -> Pin<Box<dyn Future<Output = Option<sealpod_registry::ArrivingBlob>> + Send>> {
        let found = (d == Digest::of(&self.blob)).then(|| sealpod_registry::ArrivingBlob {
            size: self.blob.len() as u64,
            reader: Box::new(Arriving { bytes: std::io::Cursor::new(self.blob.clone()), verified: self.verified }),
        });
        Box::pin(async move { found })
    }
    fn fetch_manifest(&self, _: RepositoryName, _: Digest) -> Pin<Box<dyn Future<Output = bool> + Send>> {
        Box::pin(async { false })
    }
}

#[test]
fn a_blob_still_arriving_is_streamed_and_its_end_sent_only_once_verified() {
    let blob: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    let path = format!("/v2/a/blobs/{}", digest(&blob));
    let (b, verified) = (blob.clone(), true);
    let reg = TestRegistry::start_with(move |r| r.content_source(Streaming { blob: b, verified }));
    let r = raw_request(reg.addr, "GET", &path, &[], b"");
    assert_eq!((r.status, r.header("content-length")), (200, Some("1000000")));
    assert_eq!(r.header("docker-content-digest"), Some(digest(&blob).as_str()));
    assert_eq!(r.body, blob);

    let b = blob.clone();
    let reg = TestRegistry::start_with(move |r| r.content_source(Streaming { blob: b, verified: false }));
    let r = raw_request(reg.addr, "GET", &path, &[], b"");
    assert_eq!(r.status, 200);
    assert!(r.body.len() < blob.len(), "content that did not verify was sent whole ({} bytes)", r.body.len());
    // Another blob is not the source's to stream: unknown, as before.
    assert_error(
        &raw_request(reg.addr, "GET", &format!("/v2/a/blobs/{}", digest(b"x")), &[], b""),
        404,
        "BLOB_UNKNOWN",
    );
    still_serving(reg.addr);
}

#[test]
fn garbage_requests_get_answers_not_panics() {
    let reg = TestRegistry::start();
    for (method, path) in [
        ("GET", "/"),
        ("GET", "/v2/a"),
        ("GET", "/v2/a/blobs"),
        ("GET", "/v2/a/blobs/"),
        ("GET", "/v2/a/manifests/"),
        ("GET", "/v2/tags/list"),
        ("POST", "/v2/a/blobs/uploads/?mount=sha256:zz&from=../x"),
        ("GET", "/v2/a/tags/list?n=99999999999999999999999"),
        ("OPTIONS", "/v2/a/manifests/v1"),
        ("GET", "/v2/%"),
    ] {
        let r = raw_request(reg.addr, method, path, &[], b"");
        assert!((400..500).contains(&r.status), "{method} {path}: {}", r.status);
    }
    still_serving(reg.addr);
}

#[test]
fn slow_clients_are_cut_off_and_their_chunk_rolled_back() {
    use std::io::{Read, Write};
    use std::time::{Duration, Instant};
    let reg = TestRegistry::with_options(RegistryOptions {
        header_read_timeout: Duration::from_millis(300),
        idle_timeout: Duration::from_millis(300),
        ..Default::default()
    });
    // Headers that never end.
    let mut s = std::net::TcpStream::connect(reg.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n").unwrap();
    let started = Instant::now();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    assert!(started.elapsed() < Duration::from_secs(5), "the connection was closed by the registry");

    // A chunk that stops half-way.
    let location = start_upload(reg.addr, "slow");
    assert_eq!(raw_request(reg.addr, "PATCH", &location, &[], b"kept").status, 202);
    let mut s = std::net::TcpStream::connect(reg.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "PATCH {location} HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\npartial").unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let r = parse_response(&raw, false);
    assert_error(&r, 408, "BLOB_UPLOAD_INVALID");
    assert_eq!(raw_request(reg.addr, "GET", &location, &[], b"").header("range"), Some("0-3"));
    still_serving(reg.addr);
}
