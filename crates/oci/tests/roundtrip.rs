//! Build an image from host files, open it, unpack it, run it.

mod common;

use std::fs;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use sealpod_oci::{binary_rootfs_files, Compression, ImageBuilder, ImageReference, LocalImage};

/// A tree with a file, a subdirectory, a symlink and a setuid file, plus
/// `/bin/true` and `/bin/echo` with their shared libraries.
fn demo_builder(src: &Path) -> ImageBuilder {
    fs::create_dir_all(src.join("etc/app")).unwrap();
    fs::write(src.join("etc/app/hello.txt"), b"hello from the image\n").unwrap();
    fs::write(src.join("etc/app/suid"), b"#!/bin/true\n").unwrap();
    fs::set_permissions(src.join("etc/app/suid"), fs::Permissions::from_mode(0o4755)).unwrap();
    symlink("app/hello.txt", src.join("etc/greeting")).unwrap();

    let mut files = binary_rootfs_files(Path::new("/bin/true")).unwrap();
    files.extend(binary_rootfs_files(Path::new("/bin/echo")).unwrap());
    ImageBuilder::new()
        .tree(src, "/")
        .files(files)
        .entrypoint(["/bin/echo"])
        .cmd(["hello"])
        .env("PATH", "/bin")
        .working_dir("/etc/app")
        .expose("8080/tcp")
}

#[test]
fn binary_rootfs_files_lists_the_loader_and_libc() {
    let files = binary_rootfs_files(Path::new("/bin/true")).unwrap();
    assert_eq!(files[0].1, PathBuf::from("/bin/true"));
    let in_image: Vec<_> = files.iter().map(|(_, at)| at.display().to_string()).collect();
    assert!(in_image.iter().any(|p| p.contains("libc.so")), "{in_image:?}");
    assert!(in_image.iter().any(|p| p.contains("ld-linux")), "{in_image:?}");
    for (host, _) in &files {
        assert!(fs::symlink_metadata(host).unwrap().is_file(), "{} must be resolved", host.display());
    }
}

#[test]
fn built_image_round_trips_and_runs_under_chroot() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let layout = dir.path().join("layout");
    let built = demo_builder(&src).write_layout(&layout, "v1").unwrap();

    let reference = ImageReference::parse("layout:v1", dir.path()).unwrap();
    assert_eq!(reference, built.reference);
    let image = LocalImage::open(&reference).unwrap();
    assert_eq!(image.manifest_digest(), built.manifest_digest);
    assert_eq!(image.layers().len(), 1);
    let config = image.config();
    assert_eq!(config.entrypoint, ["/bin/echo"]);
    assert_eq!(config.cmd, ["hello"]);
    assert_eq!(config.env, ["PATH=/bin"]);
    assert_eq!(config.working_dir.as_deref(), Some("/etc/app"));
    assert_eq!(config.exposed_ports, ["8080/tcp"]);

    let rootfs = dir.path().join("rootfs");
    image.unpack(&rootfs).unwrap();
    assert_eq!(fs::read(rootfs.join("etc/app/hello.txt")).unwrap(), b"hello from the image\n");
    assert_eq!(fs::read_link(rootfs.join("etc/greeting")).unwrap(), Path::new("app/hello.txt"));
    assert_eq!(fs::metadata(rootfs.join("etc/app/suid")).unwrap().mode() & 0o7777, 0o4755);
    assert!(rootfs.join("bin/true").is_file());

    if !common::is_root() {
        eprintln!("SKIPPED the chroot part of built_image_round_trips_and_runs_under_chroot: not root");
        return;
    }
    let status = Command::new("chroot").arg(&rootfs).arg("/bin/true").status().unwrap();
    assert!(status.success(), "/bin/true failed in the unpacked image");
    let out = common::run(Command::new("chroot").arg(&rootfs).args(["/bin/echo", "hello", "chroot"]));
    assert_eq!(out, "hello chroot\n");
}

#[test]
fn building_twice_gives_the_same_digest() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let a = demo_builder(&src).write_layout(&dir.path().join("a"), "t").unwrap();
    let b = demo_builder(&dir.path().join("src2")).write_layout(&dir.path().join("b"), "t").unwrap();
    assert_eq!(a.manifest_digest, b.manifest_digest);
    assert_eq!(a.layer.digest(), b.layer.digest());
}

#[test]
fn uncompressed_layers_and_several_tags_in_one_layout() {
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    fs::write(dir.path().join("one"), b"1").unwrap();
    fs::write(dir.path().join("two"), b"2").unwrap();
    let one = ImageBuilder::new()
        .file(dir.path().join("one"), "/data/n")
        .compression(Compression::None)
        .write_layout(&layout, "one")
        .unwrap();
    let two = ImageBuilder::new().file(dir.path().join("two"), "/data/n").write_layout(&layout, "two").unwrap();
    assert_eq!(one.layer.media_type().to_string(), "application/vnd.oci.image.layer.v1.tar");
    for (tag, built, content) in [("one", &one, b"1"), ("two", &two, b"2")] {
        let reference = ImageReference::parse(&format!("oci:layout:{tag}"), dir.path()).unwrap();
        let image = LocalImage::open(&reference).unwrap();
        assert_eq!(image.manifest_digest(), built.manifest_digest);
        let rootfs = dir.path().join(format!("rootfs-{tag}"));
        image.unpack(&rootfs).unwrap();
        assert_eq!(fs::read(rootfs.join("data/n")).unwrap(), content);
    }
    // Re-tagging replaces the old entry instead of adding a second one.
    ImageBuilder::new().file(dir.path().join("two"), "/x").write_layout(&layout, "one").unwrap();
    let index: serde_json::Value = serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
    assert_eq!(index["manifests"].as_array().unwrap().len(), 2);
}
