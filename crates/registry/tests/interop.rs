//! Real clients (skopeo, podman) and the CNCF registry against ours.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;

#[test]
fn skopeo_pushes_and_pulls_an_image_unchanged() {
    if !have("skopeo") {
        println!("skipping: skopeo is not installed (apt-get install skopeo)");
        return;
    }
    let registry = TestRegistry::start();
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("layout");
    let digest = build_image(work.path(), &layout, "v1", "push");
    let remote = format!("docker://{}/team/app/web:v1", registry.host());

    run(skopeo().args(["copy", "--dest-tls-verify=false", &format!("oci:{}:v1", arg(&layout)), &remote]));

    let inspect = run(skopeo().args(["inspect", "--tls-verify=false", &remote]));
    let inspected: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert_eq!(inspected["Digest"], digest.as_str());
    assert_eq!(inspected["RepoTags"], serde_json::json!(["v1"]));
    let raw = run(skopeo().args(["inspect", "--raw", "--tls-verify=false", &remote]));
    assert_eq!(sha256_hex(&raw.stdout), digest);

    let out = work.path().join("out");
    run(skopeo().args(["copy", "--src-tls-verify=false", &remote, &format!("oci:{}:pulled", arg(&out))]));
    let index: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("index.json")).unwrap()).unwrap();
    assert_eq!(index["manifests"][0]["digest"], digest.as_str());

    run(skopeo().args([
        "copy",
        "--dest-tls-verify=false",
        &format!("oci:{}:v1", arg(&layout)),
        &format!("docker://{}/team/app/web:latest", registry.host()),
    ]));
    let tags =
        run(skopeo().args(["list-tags", "--tls-verify=false", &format!("docker://{}/team/app/web", registry.host())]));
    let tags: serde_json::Value = serde_json::from_slice(&tags.stdout).unwrap();
    assert_eq!(tags["Tags"], serde_json::json!(["latest", "v1"]));
}

/// Builds a two-platform OCI index in `layout` under `tag`: the host's image
/// and the same layer under an arm64 config. Returns the index digest.
fn build_multi_arch(work: &Path, layout: &Path, tag: &str) -> String {
    let built = sealpod_oci::ImageBuilder::new()
        .file(write_file(work, "hello", b"multi-arch hello\n"), "/hello")
        .entrypoint(["/hello"])
        .write_layout(layout, "host")
        .unwrap();
    let blob = |d: &str| std::fs::read(layout.join("blobs/sha256").join(d.trim_start_matches("sha256:"))).unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(&blob(&built.manifest_digest)).unwrap();
    let mut config: serde_json::Value =
        serde_json::from_slice(&blob(manifest["config"]["digest"].as_str().unwrap())).unwrap();
    let host_arch = config["architecture"].as_str().unwrap().to_owned();
    let other_arch = if host_arch == "arm64" { "amd64" } else { "arm64" };
    config["architecture"] = other_arch.into();
    let mut writer = sealpod_oci::LayoutWriter::create(layout).unwrap();
    let other = writer.add_image(&serde_json::to_vec(&config).unwrap(), vec![built.layer.clone()], "other").unwrap();
    let entry = |digest: String, size: u64, arch: &str| {
        serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digest, "size": size,
            "platform": {"architecture": arch, "os": "linux"}
        })
    };
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            entry(built.manifest_digest.clone(), built.manifest.size(), &host_arch),
            entry(other.digest().to_string(), other.size(), other_arch),
        ]
    });
    let bytes = serde_json::to_vec(&index).unwrap();
    let desc = writer.write_blob("application/vnd.oci.image.index.v1+json", &bytes).unwrap();
    writer.tag(desc, tag).unwrap();
    sha256_hex(&bytes)
}

fn write_file(dir: &Path, name: &str, content: &[u8]) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, content).unwrap();
    p
}

#[test]
fn skopeo_copies_a_multi_arch_index_with_all_its_images() {
    if !have("skopeo") {
        println!("skipping: skopeo is not installed (apt-get install skopeo)");
        return;
    }
    let registry = TestRegistry::start();
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("layout");
    let index_digest = build_multi_arch(work.path(), &layout, "multi");
    let remote = format!("docker://{}/library/multi:v1", registry.host());

    run(skopeo().args(["copy", "--all", "--dest-tls-verify=false", &format!("oci:{}:multi", arg(&layout)), &remote]));

    let raw = run(skopeo().args(["inspect", "--raw", "--tls-verify=false", &remote]));
    assert_eq!(sha256_hex(&raw.stdout), index_digest);
    let index: serde_json::Value = serde_json::from_slice(&raw.stdout).unwrap();
    assert_eq!(index["manifests"].as_array().unwrap().len(), 2);
    let head = raw_request(registry.addr, "HEAD", "/v2/library/multi/manifests/v1", &[], b"");
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-type"), Some("application/vnd.oci.image.index.v1+json"));
    assert_eq!(head.header("docker-content-digest"), Some(index_digest.as_str()));

    let out = work.path().join("out");
    run(skopeo().args(["copy", "--all", "--src-tls-verify=false", &remote, &format!("oci:{}:back", arg(&out))]));
    let out_index: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("index.json")).unwrap()).unwrap();
    assert_eq!(out_index["manifests"][0]["digest"], index_digest.as_str());
    for child in index["manifests"].as_array().unwrap() {
        let hex = child["digest"].as_str().unwrap().trim_start_matches("sha256:");
        assert!(out.join("blobs/sha256").join(hex).is_file(), "child {hex} was pulled");
    }
}

#[test]
fn podman_pulls_from_the_registry() {
    if !have("podman") || !have("skopeo") {
        println!("skipping: podman or skopeo is not installed (apt-get install podman skopeo)");
        return;
    }
    let registry = TestRegistry::start();
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("layout");
    let digest = build_image(work.path(), &layout, "v1", "podman");
    let image = format!("{}/team/podman/app:v1", registry.host());
    run(skopeo().args([
        "copy",
        "--dest-tls-verify=false",
        &format!("oci:{}:v1", arg(&layout)),
        &format!("docker://{image}"),
    ]));

    let podman = |args: &[&str]| {
        let mut c = Command::new("podman");
        c.args(["--root", &arg(&work.path().join("root")), "--runroot", &arg(&work.path().join("run"))])
            .args(["--storage-driver", "vfs", "--cgroup-manager", "cgroupfs", "--events-backend", "none"])
            .args(args);
        c
    };
    let pulled = run_unchecked(&mut podman(&["pull", "--tls-verify=false", &image]), Duration::from_secs(180));
    if !pulled.status.success() {
        let stderr = String::from_utf8_lossy(&pulled.stderr);
        // Podman needs a working storage setup; in some sandboxes it has none.
        // A failure that names our registry is ours, though.
        if stderr.contains(&registry.host()) {
            panic!("podman pull failed talking to the registry: {stderr}");
        }
        println!("skipping: podman cannot run here: {stderr}");
        return;
    }
    let inspect = run(&mut podman(&["image", "inspect", "--format", "{{.Digest}}", &image]));
    assert_eq!(String::from_utf8_lossy(&inspect.stdout).trim(), digest);
}

#[test]
fn images_copy_between_ours_and_the_cncf_registry_both_ways() {
    if !have("skopeo") {
        println!("skipping: skopeo is not installed (apt-get install skopeo)");
        return;
    }
    let Some(theirs) = CncfRegistry::start() else {
        println!("skipping: docker-registry is not installed or did not start (apt-get install docker-registry)");
        return;
    };
    let ours = TestRegistry::start();
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("layout");
    let single = build_image(work.path(), &layout, "v1", "cncf");
    let multi = build_multi_arch(work.path(), &layout, "multi");
    let tls = ["--src-tls-verify=false", "--dest-tls-verify=false"];

    for (tag, digest) in [("v1", &single), ("multi", &multi)] {
        let ours_ref = format!("docker://{}/team/x/img:{tag}", ours.host());
        let theirs_ref = format!("docker://{}/team/x/img:{tag}", theirs.addr);
        let back_ref = format!("docker://{}/team/back/img:{tag}", ours.host());
        run(skopeo().args([
            "copy",
            "--all",
            "--dest-tls-verify=false",
            &format!("oci:{}:{tag}", arg(&layout)),
            &ours_ref,
        ]));
        run(skopeo().args(["copy", "--all"]).args(tls).args([&ours_ref, &theirs_ref]));
        run(skopeo().args(["copy", "--all"]).args(tls).args([&theirs_ref, &back_ref]));
        for r in [&theirs_ref, &back_ref] {
            let raw = run(skopeo().args(["inspect", "--raw", "--tls-verify=false", r]));
            assert_eq!(&sha256_hex(&raw.stdout), digest, "{r}");
        }
    }
}
