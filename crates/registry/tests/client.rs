//! The distribution client against real registries (ours, the CNCF
//! `docker-registry` over HTTP and HTTPS) and against tiny scripted servers
//! that lie, redirect or demand tokens.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use sealpod_registry::client::{
    pull_into_store, push_from_store, ClientError, ClientOptions, Credentials, RegistryClient,
};
use sealpod_store::{media_type, Digest, Reference, RepositoryName, Store, Tag};
use serde_json::{json, Value};

fn repo(name: &str) -> RepositoryName {
    name.parse().unwrap()
}

fn tag(name: &str) -> Tag {
    name.parse().unwrap()
}

fn by_tag(name: &str) -> Reference {
    Reference::Tag(tag(name))
}

fn client_for(base: &str) -> RegistryClient {
    RegistryClient::new(base, ClientOptions::default()).unwrap()
}

fn fresh_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("store")).unwrap();
    (dir, store)
}

/// Builds a small real image (gzip layer, OCI config) and records it in
/// `store` as `repo` (tagged if `tag` is given); returns its manifest digest.
fn image_into_store(store: &Store, repo: &RepositoryName, tag: Option<&Tag>, work: &Path, salt: &str) -> Digest {
    let layout = work.join(format!("layout-{salt}"));
    let digest: Digest = build_image(work, &layout, "v1", salt).parse().unwrap();
    for entry in std::fs::read_dir(layout.join("blobs/sha256")).unwrap() {
        store.put(&std::fs::read(entry.unwrap().path()).unwrap()).unwrap();
    }
    let manifest = store.read_manifest(&digest).unwrap();
    store.put_manifest(repo, tag, None, &manifest).unwrap();
    digest
}

/// Records a two-platform OCI index in `store`: a real image for the host's
/// architecture and the same layer under another architecture's config.
/// Returns the index digest and its two children.
fn multi_arch_into_store(store: &Store, repo: &RepositoryName, tag: &Tag, work: &Path) -> (Digest, [Digest; 2]) {
    let host = image_into_store(store, repo, None, work, "multi");
    let mut manifest: Value = serde_json::from_slice(&store.read_manifest(&host).unwrap()).unwrap();
    let config_digest: Digest = manifest["config"]["digest"].as_str().unwrap().parse().unwrap();
    let mut config: Value = serde_json::from_slice(&store.read_to_vec(&config_digest, 1 << 20).unwrap()).unwrap();
    let host_arch = config["architecture"].as_str().unwrap().to_owned();
    let other_arch = if host_arch == "arm64" { "amd64" } else { "arm64" };
    config["architecture"] = other_arch.into();
    let other_config = serde_json::to_vec(&config).unwrap();
    manifest["config"]["digest"] = store.put(&other_config).unwrap().to_string().into();
    manifest["config"]["size"] = other_config.len().into();
    let other_manifest = serde_json::to_vec(&manifest).unwrap();
    let other = store.put_manifest(repo, None, None, &other_manifest).unwrap().digest;
    let host_size = store.blob_size(&host).unwrap().unwrap();
    let entry = |digest: Digest, size: u64, arch: &str| {
        json!({
            "mediaType": media_type::OCI_MANIFEST, "digest": digest.to_string(), "size": size,
            "platform": {"architecture": arch, "os": "linux"}
        })
    };
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": media_type::OCI_INDEX,
        "manifests": [entry(host, host_size, &host_arch), entry(other, other_manifest.len() as u64, other_arch)],
    }))
    .unwrap();
    let index = store.put_manifest(repo, Some(tag), Some(media_type::OCI_INDEX), &index).unwrap().digest;
    (index, [host, other])
}

/// Every blob a manifest reaches (itself, children, configs, layers), recursively.
fn reachable(store: &Store, digest: Digest) -> Vec<Digest> {
    let parsed = sealpod_store::ParsedManifest::parse(&store.read_manifest(&digest).unwrap(), None).unwrap();
    let mut out = vec![digest];
    out.extend(parsed.blobs.iter().map(|d| d.digest));
    for child in &parsed.manifests {
        out.extend(reachable(store, child.digest));
    }
    out
}

/// Asserts `to` holds everything `digest` reaches in `from`, byte for byte.
fn assert_same_content(from: &Store, to: &Store, digest: Digest) {
    for d in reachable(from, digest) {
        to.verify(&d).unwrap_or_else(|e| panic!("{d} in the destination store: {e}"));
        assert_eq!(from.blob_size(&d).unwrap(), to.blob_size(&d).unwrap(), "{d}");
    }
}

/// Blob files in a store, temporary ones included.
fn blob_files(store: &Store) -> Vec<String> {
    std::fs::read_dir(store.root().join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_to_the_cncf_registry_and_pulls_back_unchanged() {
    let Some(theirs) = CncfRegistry::start() else {
        println!("skipping: docker-registry is not installed or did not start (apt-get install docker-registry)");
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let (_src_dir, src) = fresh_store();
    let local = repo("local/app");
    let single = image_into_store(&src, &local, None, work.path(), "cncf");
    let (index, children) = multi_arch_into_store(&src, &local, &tag("multi"), work.path());

    let client = client_for(&format!("http://{}", theirs.addr));
    client.ping().await.unwrap();
    let remote = repo("team/x/app");
    assert_eq!(push_from_store(&src, &single, &client, &remote, Some(&tag("v1"))).await.unwrap(), single);
    assert_eq!(push_from_store(&src, &index, &client, &remote, Some(&tag("multi"))).await.unwrap(), index);
    // Pushing again finds every blob present and only re-puts the manifest.
    push_from_store(&src, &single, &client, &remote, Some(&tag("v1"))).await.unwrap();

    let fetched = client.get_manifest(&remote, &by_tag("multi")).await.unwrap();
    assert_eq!((fetched.digest, fetched.media_type.as_str()), (index, media_type::OCI_INDEX));

    let (_dst_dir, dst) = fresh_store();
    let back = repo("back/app");
    let pulled = pull_into_store(&client, &remote, &by_tag("v1"), &dst, &back, Some(&tag("v1"))).await.unwrap();
    assert_eq!(pulled, single);
    assert_eq!(dst.resolve_tag(&back, &tag("v1")).unwrap(), Some(single));
    assert_same_content(&src, &dst, single);

    let pulled = pull_into_store(&client, &remote, &by_tag("multi"), &dst, &back, Some(&tag("multi"))).await.unwrap();
    assert_eq!(pulled, index);
    assert_eq!(dst.resolve_tag(&back, &tag("multi")).unwrap(), Some(index));
    assert_same_content(&src, &dst, index);
    let recorded = dst.manifests(&back).unwrap();
    for d in [single, index, children[0], children[1]] {
        assert!(recorded.contains(&d), "{d} recorded in {back}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulls_an_image_from_our_registry_by_tag_and_by_digest() {
    let ours = TestRegistry::start();
    let work = tempfile::tempdir().unwrap();
    let upstream = repo("team/app/web");
    let digest = image_into_store(&ours.store, &upstream, Some(&tag("v1")), work.path(), "ours");
    let client = client_for(&format!("http://{}", ours.host()));

    let (_dir, dst) = fresh_store();
    let local = repo("mirror/web");
    let pulled = pull_into_store(&client, &upstream, &by_tag("v1"), &dst, &local, Some(&tag("v1"))).await.unwrap();
    assert_eq!(pulled, digest);
    assert_eq!(dst.resolve_tag(&local, &tag("v1")).unwrap(), Some(digest));
    assert_eq!(dst.manifest(&local, &by_tag("v1")).unwrap().media_type, media_type::OCI_MANIFEST);
    assert_same_content(&ours.store, &dst, digest);

    let (_dir2, dst2) = fresh_store();
    let by_digest = Reference::Digest(digest);
    assert_eq!(pull_into_store(&client, &upstream, &by_digest, &dst2, &local, None).await.unwrap(), digest);
    assert_eq!(dst2.manifests(&local).unwrap(), vec![digest]);
    assert!(dst2.tags(&local).unwrap().is_empty());

    let layer = reachable(&ours.store, digest)[2];
    assert_eq!(client.head_blob(&upstream, &layer).await.unwrap(), ours.store.blob_size(&layer).unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_a_multi_arch_index_with_every_platform_to_our_registry_and_back() {
    let ours = TestRegistry::start();
    let work = tempfile::tempdir().unwrap();
    let (_src_dir, src) = fresh_store();
    let (index, children) = multi_arch_into_store(&src, &repo("local/multi"), &tag("all"), work.path());
    let client = client_for(&format!("http://{}", ours.host()));
    let remote = repo("library/multi");

    push_from_store(&src, &index, &client, &remote, Some(&tag("v2"))).await.unwrap();
    assert_eq!(ours.store.resolve_tag(&remote, &tag("v2")).unwrap(), Some(index));
    assert_same_content(&src, &ours.store, index);
    for child in children {
        let fetched = client.get_manifest(&remote, &Reference::Digest(child)).await.unwrap();
        assert_eq!((fetched.digest, fetched.media_type.as_str()), (child, media_type::OCI_MANIFEST));
    }

    let (_dst_dir, dst) = fresh_store();
    let back = repo("back/multi");
    assert_eq!(pull_into_store(&client, &remote, &by_tag("v2"), &dst, &back, Some(&tag("v2"))).await.unwrap(), index);
    let mut recorded = dst.manifests(&back).unwrap();
    recorded.sort();
    let mut expected = vec![index, children[0], children[1]];
    expected.sort();
    assert_eq!(recorded, expected);
    assert_eq!(dst.manifest(&back, &by_tag("v2")).unwrap().media_type, media_type::OCI_INDEX);
    assert_same_content(&src, &dst, index);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_content_is_a_typed_not_found_with_the_registry_code() {
    let ours = TestRegistry::start();
    let work = tempfile::tempdir().unwrap();
    let app = repo("team/app");
    image_into_store(&ours.store, &app, Some(&tag("v1")), work.path(), "nf");
    let client = client_for(&format!("http://{}", ours.host()));

    let err = client.get_manifest(&app, &by_tag("nope")).await.unwrap_err();
    assert!(matches!(err, ClientError::NotFound { .. }), "{err}");
    assert_eq!((err.status(), err.code()), (Some(404), Some("MANIFEST_UNKNOWN")));
    let message = err.to_string();
    assert!(message.contains(&format!("GET http://{}/v2/team/app/manifests/nope", ours.host())), "{message}");
    assert!(message.contains("MANIFEST_UNKNOWN"), "{message}");

    let err = client.get_manifest(&repo("no/such/repo"), &by_tag("v1")).await.unwrap_err();
    assert_eq!((err.status(), err.code()), (Some(404), Some("NAME_UNKNOWN")), "{err}");

    let absent = Digest::of(b"never pushed");
    assert_eq!(client.head_blob(&app, &absent).await.unwrap(), None);
    let (_dir, dst) = fresh_store();
    let err = client.blob_into_store(&app, &absent, &dst).await.unwrap_err();
    assert!(matches!(err, ClientError::NotFound { .. }), "{err}");
    assert_eq!(err.code(), Some("BLOB_UNKNOWN"));
    assert!(err.to_string().contains(&absent.to_string()), "{err}");
    assert!(blob_files(&dst).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_a_manifest_over_the_size_limit() {
    let ours = TestRegistry::start();
    let work = tempfile::tempdir().unwrap();
    let app = repo("team/app");
    let digest = image_into_store(&ours.store, &app, Some(&tag("v1")), work.path(), "big");
    let size = ours.store.blob_size(&digest).unwrap().unwrap();
    let small = ClientOptions { max_manifest_size: size - 1, ..ClientOptions::default() };
    let client = RegistryClient::new(&format!("http://{}", ours.host()), small).unwrap();
    let err = client.get_manifest(&app, &by_tag("v1")).await.unwrap_err();
    assert!(matches!(err, ClientError::TooLarge { what: "manifest", limit, .. } if limit == size - 1), "{err}");

    // A server that announces no length is cut off once the limit is passed.
    let server =
        FakeServer::start(|_| Reply::chunked(200, vec![b' '; 10_000]).header("Content-Type", media_type::OCI_MANIFEST));
    let limited = ClientOptions { max_manifest_size: 4096, ..ClientOptions::default() };
    let client = RegistryClient::new(&server.base(), limited).unwrap();
    let err = client.get_manifest(&app, &by_tag("v1")).await.unwrap_err();
    assert!(matches!(err, ClientError::TooLarge { what: "manifest", limit: 4096, .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_a_blob_whose_bytes_do_not_match_its_digest_and_stores_nothing() {
    let good = b"the real layer".to_vec();
    let digest = Digest::of(&good);
    let forged = b"a forged layer".to_vec();
    assert_eq!(good.len(), forged.len());
    let served = forged.clone();
    let server = FakeServer::start(move |_| Reply::new(200, served.clone()));
    let client = client_for(&server.base());
    let (_dir, store) = fresh_store();

    let err = client.blob_into_store(&repo("team/app"), &digest, &store).await.unwrap_err();
    match &err {
        ClientError::DigestMismatch { expected, actual, .. } => {
            assert_eq!((*expected, *actual), (digest, Digest::of(&forged)))
        }
        other => panic!("expected a digest mismatch, got {other}"),
    }
    assert!(err.to_string().contains(&format!("/v2/team/app/blobs/{digest}")), "{err}");
    assert!(!store.contains(&digest).unwrap());
    assert!(blob_files(&store).is_empty(), "left behind: {:?}", blob_files(&store));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_with_a_forged_layer_records_no_manifest() {
    let config = br#"{"architecture":"amd64","os":"linux"}"#.to_vec();
    let layer = b"layer bytes".to_vec();
    let desc = |mt: &str, b: &[u8]| json!({"mediaType": mt, "digest": Digest::of(b).to_string(), "size": b.len()});
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": media_type::OCI_MANIFEST,
        "config": desc("application/vnd.oci.image.config.v1+json", &config),
        "layers": [desc("application/vnd.oci.image.layer.v1.tar", &layer)],
    }))
    .unwrap();
    let (config_path, layer_path) =
        (format!("/v2/team/app/blobs/{}", Digest::of(&config)), format!("/v2/team/app/blobs/{}", Digest::of(&layer)));
    let served_manifest = manifest.clone();
    let served_config = config.clone();
    let server = FakeServer::start(move |r| match r.path.as_str() {
        "/v2/team/app/manifests/v1" => {
            Reply::new(200, served_manifest.clone()).header("Content-Type", media_type::OCI_MANIFEST)
        }
        p if p == config_path => Reply::new(200, served_config.clone()),
        p if p == layer_path => Reply::new(200, b"LAYER BYTES".to_vec()),
        _ => Reply::new(404, b"{}".to_vec()),
    });
    let client = client_for(&server.base());
    let (_dir, store) = fresh_store();
    let dst = repo("mirror/app");

    let err =
        pull_into_store(&client, &repo("team/app"), &by_tag("v1"), &store, &dst, Some(&tag("v1"))).await.unwrap_err();
    assert!(matches!(err, ClientError::DigestMismatch { expected, .. } if expected == Digest::of(&layer)), "{err}");
    assert!(!store.contains(&Digest::of(&layer)).unwrap());
    assert!(!store.contains(&Digest::of(&manifest)).unwrap());
    assert!(store.manifests(&dst).unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_found_corrupt_by_our_registry_is_not_stored() {
    let ours = TestRegistry::start();
    let work = tempfile::tempdir().unwrap();
    let app = repo("team/app");
    let digest = image_into_store(&ours.store, &app, Some(&tag("v1")), work.path(), "rot");
    let layer = reachable(&ours.store, digest)[2];
    let path = ours.store.root().join("blobs/sha256").join(layer.hex());
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();

    let client = client_for(&format!("http://{}", ours.host()));
    let (_dir, dst) = fresh_store();
    let err = pull_into_store(&client, &app, &by_tag("v1"), &dst, &app, None).await.unwrap_err();
    // Our registry cuts the transfer short rather than finish a corrupt blob.
    assert!(matches!(err, ClientError::Http { .. } | ClientError::DigestMismatch { .. }), "{err}");
    assert!(!dst.contains(&layer).unwrap());
    assert!(dst.manifests(&app).unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_manifests_that_do_not_hash_to_what_was_asked_or_announced() {
    let real = br#"{"schemaVersion":2,"manifests":[]}"#.to_vec();
    let claimed = Digest::of(b"some other manifest");
    let served = real.clone();
    let server = FakeServer::start(move |r| {
        let reply = Reply::new(200, served.clone()).header("Content-Type", media_type::OCI_INDEX);
        if r.path.ends_with("/liar") {
            reply.header("Docker-Content-Digest", &claimed.to_string())
        } else {
            reply
        }
    });
    let client = client_for(&server.base());
    let app = repo("team/app");

    let err = client.get_manifest(&app, &Reference::Digest(claimed)).await.unwrap_err();
    assert!(
        matches!(err, ClientError::DigestMismatch { expected, actual, .. } if expected == claimed && actual == Digest::of(&real)),
        "{err}"
    );
    let err = client.get_manifest(&app, &by_tag("liar")).await.unwrap_err();
    assert!(matches!(err, ClientError::BadResponse { .. }), "{err}");
    assert!(err.to_string().contains(&claimed.to_string()), "{err}");
    let ok = client.get_manifest(&app, &by_tag("honest")).await.unwrap();
    assert_eq!((ok.digest, ok.media_type.as_str(), ok.bytes), (Digest::of(&real), media_type::OCI_INDEX, real));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_and_pulls_over_https_trusting_an_extra_ca() {
    if !have("openssl") {
        println!("skipping: the openssl CLI is not installed");
        return;
    }
    let certs = tempfile::tempdir().unwrap();
    let (ca, cert, key) = make_certificates(certs.path());
    let Some(theirs) = CncfRegistry::start_with_env(&[
        ("REGISTRY_HTTP_TLS_CERTIFICATE", arg(&cert)),
        ("REGISTRY_HTTP_TLS_KEY", arg(&key)),
    ]) else {
        println!("skipping: docker-registry is not installed or did not start (apt-get install docker-registry)");
        return;
    };
    let base = format!("https://{}", theirs.addr);

    let untrusting = client_for(&base);
    let err = untrusting.ping().await.unwrap_err();
    assert!(matches!(err, ClientError::Tls { .. }), "{err}");

    let options = ClientOptions { ca_cert_pem: Some(std::fs::read(&ca).unwrap()), ..ClientOptions::default() };
    let client = RegistryClient::new(&base, options).unwrap();
    client.ping().await.unwrap();
    let work = tempfile::tempdir().unwrap();
    let (_src_dir, src) = fresh_store();
    let digest = image_into_store(&src, &repo("local/tls"), None, work.path(), "tls");
    let remote = repo("secure/app");
    push_from_store(&src, &digest, &client, &remote, Some(&tag("v1"))).await.unwrap();
    let (_dst_dir, dst) = fresh_store();
    let pulled = pull_into_store(&client, &remote, &by_tag("v1"), &dst, &remote, Some(&tag("v1"))).await.unwrap();
    assert_eq!(pulled, digest);
    assert_same_content(&src, &dst, digest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetches_a_bearer_token_for_the_scope_and_reuses_it() {
    let token_log = Arc::new(Mutex::new(Vec::<Seen>::new()));
    let log = token_log.clone();
    let tokens = FakeServer::start(move |r| {
        log.lock().unwrap().push(r.clone());
        // base64("user:secret")
        if r.header("authorization") == Some("Basic dXNlcjpzZWNyZXQ=") {
            Reply::new(200, br#"{"access_token":"good-token","expires_in":300}"#.to_vec())
        } else {
            Reply::new(401, br#"{"details":"wrong password"}"#.to_vec())
        }
    });
    let realm = format!("{}/token", tokens.base());
    let manifest = br#"{"schemaVersion":2,"manifests":[]}"#.to_vec();
    let served = manifest.clone();
    let registry = FakeServer::start(move |r| {
        if r.header("authorization") != Some("Bearer good-token") {
            let scope = if r.path == "/v2/" { String::new() } else { ",scope=\"repository:team/app:pull\"".into() };
            return Reply::new(
                401,
                br#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#.to_vec(),
            )
            .header("WWW-Authenticate", &format!("Bearer realm=\"{realm}\",service=\"fake\"{scope}"));
        }
        match r.path.as_str() {
            "/v2/" => Reply::new(200, b"{}".to_vec()),
            "/v2/team/app/manifests/v1" => {
                Reply::new(200, served.clone()).header("Content-Type", media_type::OCI_INDEX)
            }
            _ => Reply::new(404, b"{}".to_vec()),
        }
    });

    let credentials = Credentials { username: "user".into(), password: "secret".into() };
    let options = ClientOptions { credentials: Some(credentials), ..ClientOptions::default() };
    let client = RegistryClient::new(&registry.base(), options).unwrap();
    client.ping().await.unwrap();
    for _ in 0..2 {
        let fetched = client.get_manifest(&repo("team/app"), &by_tag("v1")).await.unwrap();
        assert_eq!(fetched.bytes, manifest);
    }
    let asked: Vec<String> = token_log.lock().unwrap().iter().map(|r| r.path.clone()).collect();
    assert_eq!(asked, ["/token?service=fake", "/token?service=fake&scope=repository%3Ateam%2Fapp%3Apull"]);

    let wrong = Credentials { username: "user".into(), password: "wrong".into() };
    let options = ClientOptions { credentials: Some(wrong), ..ClientOptions::default() };
    let client = RegistryClient::new(&registry.base(), options).unwrap();
    let err = client.get_manifest(&repo("team/app"), &by_tag("v1")).await.unwrap_err();
    assert!(matches!(err, ClientError::Token { .. }), "{err}");
    assert!(err.to_string().contains("401"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_basic_credentials_when_asked_and_reports_a_refusal() {
    let server = FakeServer::start(|r| {
        // base64("user:secret")
        if r.header("authorization") == Some("Basic dXNlcjpzZWNyZXQ=") {
            Reply::new(200, b"{}".to_vec())
        } else {
            Reply::new(401, br#"{"errors":[{"code":"UNAUTHORIZED","message":"who are you"}]}"#.to_vec())
                .header("WWW-Authenticate", "Basic realm=\"fake\"")
        }
    });
    let with = |password: &str| ClientOptions {
        credentials: Some(Credentials { username: "user".into(), password: password.into() }),
        ..ClientOptions::default()
    };
    RegistryClient::new(&server.base(), with("secret")).unwrap().ping().await.unwrap();
    for client in [client_for(&server.base()), RegistryClient::new(&server.base(), with("nope")).unwrap()] {
        let err = client.ping().await.unwrap_err();
        assert!(matches!(err, ClientError::Denied { .. }), "{err}");
        assert_eq!((err.status(), err.code()), (Some(401), Some("UNAUTHORIZED")));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follows_blob_redirects_to_storage_without_sending_credentials() {
    let blob = vec![7u8; 300_000];
    let digest = Digest::of(&blob);
    let storage_log = Arc::new(Mutex::new(Vec::<Seen>::new()));
    let log = storage_log.clone();
    let served = blob.clone();
    let storage = FakeServer::start(move |r| {
        log.lock().unwrap().push(r.clone());
        Reply::new(200, served.clone())
    });
    let target = format!("{}/bucket/object?signature=s3cr3t", storage.base());
    let registry = FakeServer::start(move |r| {
        if r.header("authorization").is_none() {
            Reply::new(401, Vec::new()).header("WWW-Authenticate", "Basic realm=\"fake\"")
        } else {
            Reply::new(307, Vec::new()).header("Location", &target)
        }
    });
    let options = ClientOptions {
        credentials: Some(Credentials { username: "user".into(), password: "secret".into() }),
        ..ClientOptions::default()
    };
    let client = RegistryClient::new(&registry.base(), options).unwrap();
    let (_dir, store) = fresh_store();
    client.blob_into_store(&repo("team/app"), &digest, &store).await.unwrap();
    store.verify(&digest).unwrap();
    let seen = storage_log.lock().unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, "/bucket/object?signature=s3cr3t");
    assert_eq!(seen[0].header("authorization"), None, "credentials leaked to the storage host");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gives_up_after_five_redirects() {
    let hops = Arc::new(Mutex::new(0usize));
    let counter = hops.clone();
    let server = FakeServer::start(move |r| {
        *counter.lock().unwrap() += 1;
        Reply::new(302, Vec::new()).header("Location", &format!("{}/again", r.path))
    });
    let client = client_for(&server.base());
    let (_dir, store) = fresh_store();
    let err = client.blob_into_store(&repo("a"), &Digest::of(b"x"), &store).await.unwrap_err();
    assert!(matches!(err, ClientError::TooManyRedirects { .. }), "{err}");
    assert_eq!(*hops.lock().unwrap(), 6);
    assert!(blob_files(&store).is_empty());
}

/// A CA and a server certificate for 127.0.0.1 signed by it, made with the
/// `openssl` CLI. Returns (CA certificate, server certificate, server key).
fn make_certificates(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let p = |name: &str| dir.join(name);
    let openssl = |args: &[&str]| {
        run(std::process::Command::new("openssl").args(args).current_dir(dir));
    };
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    openssl(
        &[
            &["req", "-x509"][..],
            &ec,
            &["-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=sealpod test CA"],
        ]
        .concat(),
    );
    openssl(&[&["req"][..], &ec, &["-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1"]].concat());
    std::fs::write(
        p("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-set_serial",
        "2",
        "-days",
        "2",
        "-extfile",
        "server.ext",
        "-out",
        "server.pem",
    ]);
    (p("ca.pem"), p("server.pem"), p("server.key"))
}

/// A request as a scripted server saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    /// Path and query, as sent.
    path: String,
    headers: Vec<(String, String)>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// What a scripted server answers.
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    chunked: bool,
}

impl Reply {
    fn new(status: u16, body: Vec<u8>) -> Reply {
        Reply { status, headers: Vec::new(), body, chunked: false }
    }

    /// Sent with `Transfer-Encoding: chunked`, so no length is announced.
    fn chunked(status: u16, body: Vec<u8>) -> Reply {
        Reply { chunked: true, ..Reply::new(status, body) }
    }

    fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }
}

/// An HTTP/1.1 server on a loopback port that answers each request with
/// what a closure says, one request per connection.
struct FakeServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl FakeServer {
    fn start(handler: impl Fn(&Seen) -> Reply + Send + Sync + 'static) -> FakeServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let handler = Arc::new(handler);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                let handler = handler.clone();
                std::thread::spawn(move || serve_one(stream, &*handler));
            }
        });
        FakeServer { addr, stop }
    }

    fn base(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
    }
}

fn serve_one(mut stream: TcpStream, handler: &dyn Fn(&Seen) -> Reply) {
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break end;
        }
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
        }
    };
    let head = String::from_utf8_lossy(&raw[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or("").split(' ');
    let (method, path) = (first.next().unwrap_or("").to_owned(), first.next().unwrap_or("").to_owned());
    let headers: Vec<(String, String)> =
        lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned())).collect();
    let seen = Seen { method, path, headers };
    // Read (and ignore) a request body so the client is not cut off mid-send.
    let length: usize = seen.header("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
    let mut have = raw.len() - head_end - 4;
    while have < length {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => have += n,
        }
    }
    let reply = handler(&seen);
    let mut out = format!("HTTP/1.1 {} Fake\r\nConnection: close\r\n", reply.status);
    for (k, v) in &reply.headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    let head_only = seen.method == "HEAD";
    if reply.chunked {
        out.push_str("Transfer-Encoding: chunked\r\n\r\n");
        let _ = stream.write_all(out.as_bytes());
        for chunk in reply.body.chunks(1000) {
            let _ = stream.write_all(format!("{:x}\r\n", chunk.len()).as_bytes());
            let _ = stream.write_all(chunk);
            let _ = stream.write_all(b"\r\n");
        }
        let _ = stream.write_all(b"0\r\n\r\n");
    } else {
        out.push_str(&format!("Content-Length: {}\r\n\r\n", reply.body.len()));
        let _ = stream.write_all(out.as_bytes());
        if !head_only {
            let _ = stream.write_all(&reply.body);
        }
    }
    let _ = stream.flush();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_indexes_nested_deeper_than_the_limit() {
    // index(0) -> index(1) -> ... -> index(6), the last one empty.
    let mut served = std::collections::HashMap::new();
    let mut child: Option<(Digest, usize)> = None;
    for _ in 0..=6 {
        let manifests: Vec<Value> = child
            .iter()
            .map(|(d, size)| json!({"mediaType": media_type::OCI_INDEX, "digest": d.to_string(), "size": size}))
            .collect();
        let bytes = serde_json::to_vec(
            &json!({"schemaVersion": 2, "mediaType": media_type::OCI_INDEX, "manifests": manifests}),
        )
        .unwrap();
        let digest = Digest::of(&bytes);
        served.insert(format!("/v2/deep/manifests/{digest}"), bytes.clone());
        child = Some((digest, bytes.len()));
    }
    let (top, _) = child.unwrap();
    let server = FakeServer::start(move |r| match served.get(&r.path) {
        Some(bytes) => Reply::new(200, bytes.clone()).header("Content-Type", media_type::OCI_INDEX),
        None => Reply::new(404, Vec::new()),
    });
    let client = client_for(&server.base());
    let (_dir, store) = fresh_store();
    let deep = repo("deep");
    let err = pull_into_store(&client, &deep, &Reference::Digest(top), &store, &deep, None).await.unwrap_err();
    assert!(matches!(err, ClientError::Manifest { .. }), "{err}");
    assert!(err.to_string().contains("nested deeper than 4"), "{err}");
    assert!(store.manifests(&deep).unwrap().is_empty());
}
