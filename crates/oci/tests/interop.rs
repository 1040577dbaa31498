//! Interoperability with real peers: skopeo and umoci. Each test prints
//! `SKIPPED …` and passes when its tool is not installed
//! (`apt-get install skopeo umoci`).

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use std::process::Command;

use common::{have_tool, layer_tar, run, snapshot, write_image, E};
use sealpod_oci::{binary_rootfs_files, BuiltImage, Compression, ImageBuilder, ImageReference, LocalImage};

/// Our image: a small tree plus `/bin/true` and its libraries.
fn build_ours(dir: &Path) -> BuiltImage {
    let src = dir.join("src");
    fs::create_dir_all(src.join("srv/www")).unwrap();
    fs::write(src.join("srv/www/index.html"), b"<h1>sealpod</h1>\n").unwrap();
    fs::write(src.join("srv/run.sh"), b"#!/bin/sh\necho run\n").unwrap();
    fs::set_permissions(src.join("srv/run.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    symlink("/srv/www/index.html", src.join("srv/index")).unwrap();
    ImageBuilder::new()
        .tree(&src, "/")
        .files(binary_rootfs_files(Path::new("/bin/true")).unwrap())
        .entrypoint(["/bin/true"])
        .env("MODE", "interop")
        .write_layout(&dir.join("ours"), "v1")
        .unwrap()
}

fn unpack_snapshot(reference: &ImageReference, dest: &Path) -> BTreeMap<String, String> {
    let image = LocalImage::open(reference).unwrap_or_else(|e| panic!("opening {reference}: {e}"));
    image.unpack(dest).unwrap_or_else(|e| panic!("unpacking {reference}: {e}"));
    snapshot(dest, true)
}

#[test]
fn skopeo_inspect_reads_our_layout() {
    if !have_tool("skopeo", "skopeo_inspect_reads_our_layout") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let built = build_ours(dir.path());
    let layout = dir.path().join("ours");
    let out = run(Command::new("skopeo").arg("inspect").arg(format!("oci:{}:v1", layout.display())));
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["Digest"], built.manifest_digest.as_str());
    assert_eq!(json["Layers"], serde_json::json!([built.layer.digest().to_string()]));
    assert_eq!(json["Env"], serde_json::json!(["MODE=interop"]));

    let raw =
        Command::new("skopeo").args(["inspect", "--raw"]).arg(format!("oci:{}:v1", layout.display())).output().unwrap();
    let image = LocalImage::open(&built.reference).unwrap();
    assert_eq!(raw.stdout, image.manifest_bytes());
}

#[test]
fn skopeo_copies_of_our_layout_unpack_to_the_same_tree() {
    if !have_tool("skopeo", "skopeo_copies_of_our_layout_unpack_to_the_same_tree") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let built = build_ours(dir.path());
    let ours = unpack_snapshot(&built.reference, &dir.path().join("rootfs-ours"));
    let source = format!("oci:{}:v1", dir.path().join("ours").display());

    // Plain copy, then a copy recompressed with zstd.
    let theirs = dir.path().join("theirs");
    run(Command::new("skopeo").args(["copy", "-q", &source]).arg(format!("oci:{}:copied", theirs.display())));
    let reference = ImageReference::parse("oci:theirs:copied", dir.path()).unwrap();
    assert_eq!(unpack_snapshot(&reference, &dir.path().join("rootfs-theirs")), ours);

    let zst = dir.path().join("zst");
    run(Command::new("skopeo")
        .args(["copy", "-q", "--dest-compress-format", "zstd", &source])
        .arg(format!("oci:{}:z", zst.display())));
    let reference = ImageReference::parse("zst:z", dir.path()).unwrap();
    let image = LocalImage::open(&reference).unwrap();
    assert_eq!(image.layers()[0].media_type().to_string(), "application/vnd.oci.image.layer.v1.tar+zstd");
    assert_eq!(unpack_snapshot(&reference, &dir.path().join("rootfs-zst")), ours);
}

#[test]
fn skopeo_archives_open_with_the_same_digest_and_tree() {
    if !have_tool("skopeo", "skopeo_archives_open_with_the_same_digest_and_tree") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let built = build_ours(dir.path());
    let ours = unpack_snapshot(&built.reference, &dir.path().join("rootfs-ours"));
    let source = format!("oci:{}:v1", dir.path().join("ours").display());
    let skopeo_digest = |reference: &str| -> String {
        let out = run(Command::new("skopeo").args(["inspect", reference]));
        let json: serde_json::Value = serde_json::from_str(&out).unwrap();
        json["Digest"].as_str().unwrap().to_owned()
    };

    let docker = dir.path().join("docker.tar");
    let docker_ref = format!("docker-archive:{}:sealpod/test:v1", docker.display());
    run(Command::new("skopeo").args(["copy", "-q", &source, &docker_ref]));
    for (n, text) in [
        docker_ref.as_str(),
        "docker.tar",
        "docker.tar:sealpod/test:v1",
        "docker-archive:docker.tar:docker.io/sealpod/test:v1",
    ]
    .into_iter()
    .enumerate()
    {
        let reference = ImageReference::parse(text, dir.path()).unwrap();
        assert!(matches!(reference, ImageReference::DockerArchive { .. }), "{text}");
        let image = LocalImage::open(&reference).unwrap();
        assert_eq!(image.manifest_digest(), skopeo_digest(&docker_ref), "{text}");
        assert_eq!(image.config().env, ["MODE=interop"]);
        assert_eq!(unpack_snapshot(&reference, &dir.path().join(format!("rootfs-docker{n}"))), ours);
    }
    let missing = ImageReference::parse("docker-archive:docker.tar:other:v1", dir.path()).unwrap();
    assert!(matches!(LocalImage::open(&missing), Err(sealpod_oci::OciError::TagNotFound { .. })));

    let archive = dir.path().join("oci.tar");
    let archive_ref = format!("oci-archive:{}:v1", archive.display());
    run(Command::new("skopeo").args(["copy", "-q", &source, &archive_ref]));
    for (n, text) in [archive_ref.as_str(), "oci.tar:v1", "oci.tar"].into_iter().enumerate() {
        let reference = ImageReference::parse(text, dir.path()).unwrap();
        assert!(matches!(reference, ImageReference::OciArchive { .. }), "{text}");
        let image = LocalImage::open(&reference).unwrap();
        assert_eq!(image.manifest_digest(), skopeo_digest(&archive_ref), "{text}");
        assert_eq!(unpack_snapshot(&reference, &dir.path().join(format!("rootfs-oci{n}"))), ours);
    }
}

/// A multi-layer image exercising whiteouts, opaque directories, links and
/// modes, for comparison with umoci's unpacker.
fn layered_fixture(layout: &Path) -> ImageReference {
    let l1 = layer_tar(&[
        E::Dir("etc", 0o755),
        E::File("etc/a", b"a", 0o644),
        E::File("etc/b", b"b", 0o600),
        E::Dir("opaque", 0o755),
        E::File("opaque/old", b"old", 0o644),
        E::Dir("usr", 0o755),
        E::Dir("usr/lib", 0o755),
        E::File("usr/lib/libx.so", b"lib", 0o755),
        E::Symlink("lib", "usr/lib"),
        E::File("bin/tool", b"tool", 0o4755),
        E::Hardlink("bin/tool2", "bin/tool"),
    ]);
    let l2 = layer_tar(&[
        E::File("etc/.wh.a", b"", 0o644),
        E::Dir("opaque", 0o750),
        E::File("opaque/.wh..wh..opq", b"", 0o644),
        E::File("opaque/new", b"new", 0o644),
        E::Dir("tmp", 0o1777),
        E::Symlink("etc/abs", "/etc/b"),
    ]);
    let l3 = layer_tar(&[E::File("etc/b", b"b2", 0o640), E::File("bin/.wh.tool2", b"", 0o644)]);
    write_image(layout, "layers", &[(l1, Compression::Gzip), (l2, Compression::Gzip), (l3, Compression::None)])
}

#[test]
fn umoci_unpack_gives_the_same_tree_as_ours() {
    if !have_tool("umoci", "umoci_unpack_gives_the_same_tree_as_ours") {
        return;
    }
    if !common::is_root() {
        eprintln!("SKIPPED umoci_unpack_gives_the_same_tree_as_ours: umoci unpack needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let built = build_ours(dir.path());
    let layered = layered_fixture(&dir.path().join("layered"));
    for (n, (reference, image_arg)) in [
        (built.reference.clone(), format!("{}:v1", dir.path().join("ours").display())),
        (layered, format!("{}:layers", dir.path().join("layered").display())),
    ]
    .into_iter()
    .enumerate()
    {
        let ours = unpack_snapshot(&reference, &dir.path().join(format!("rootfs{n}")));
        let bundle = dir.path().join(format!("bundle{n}"));
        run(Command::new("umoci").args(["unpack", "--image", &image_arg]).arg(&bundle));
        let theirs = snapshot(&bundle.join("rootfs"), true);
        assert_eq!(ours, theirs, "our unpack differs from umoci's for {image_arg}");
    }
}
