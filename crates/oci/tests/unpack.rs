//! Layer semantics of `LocalImage::unpack`, with hand-built layers.

mod common;

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use common::{blob_path, is_root, layer_tar, write_image, E, MTIME};
use sealpod_oci::{apply_layer, Compression, LocalImage, OciError};

/// Builds an image of `layers` (gzip) and unpacks it into `dir/rootfs`.
fn unpack_layers(dir: &Path, layers: &[Vec<u8>]) -> Result<std::path::PathBuf, OciError> {
    let layers: Vec<_> = layers.iter().map(|l| (l.clone(), Compression::Gzip)).collect();
    let reference = write_image(&dir.join("layout"), "t", &layers);
    let image = LocalImage::open(&reference)?;
    let rootfs = dir.join("rootfs");
    image.unpack(&rootfs)?;
    Ok(rootfs)
}

#[test]
fn whiteout_removes_file_from_lower_layer() {
    let dir = tempfile::tempdir().unwrap();
    let lower = layer_tar(&[
        E::Dir("etc", 0o755),
        E::File("etc/a", b"a", 0o644),
        E::File("etc/b", b"b", 0o644),
        E::Dir("gone", 0o755),
        E::File("gone/deep", b"x", 0o644),
    ]);
    let upper = layer_tar(&[E::File("etc/.wh.a", b"", 0o644), E::File(".wh.gone", b"", 0o644)]);
    let root = unpack_layers(dir.path(), &[lower, upper]).unwrap();
    assert!(!root.join("etc/a").exists());
    assert!(!root.join("etc/.wh.a").exists(), "whiteout markers are not written");
    assert_eq!(fs::read(root.join("etc/b")).unwrap(), b"b");
    assert!(!root.join("gone").exists());
}

#[test]
fn whiteout_does_not_remove_what_the_same_layer_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let layer = layer_tar(&[E::File("x", b"mine", 0o644), E::File(".wh.x", b"", 0o644)]);
    let root = unpack_layers(dir.path(), &[layer]).unwrap();
    assert_eq!(fs::read(root.join("x")).unwrap(), b"mine");
}

#[test]
fn opaque_whiteout_empties_directory_of_lower_content_only() {
    let dir = tempfile::tempdir().unwrap();
    let lower = layer_tar(&[
        E::Dir("d", 0o755),
        E::File("d/old", b"old", 0o644),
        E::Dir("d/sub", 0o755),
        E::File("d/sub/old2", b"old", 0o644),
        E::File("keep", b"k", 0o644),
    ]);
    // The opaque marker comes *after* an entry of the same layer and before
    // a re-declared subdirectory: both orders must work.
    let upper = layer_tar(&[
        E::Dir("d", 0o755),
        E::File("d/new", b"new", 0o644),
        E::File("d/.wh..wh..opq", b"", 0o644),
        E::Dir("d/sub", 0o755),
        E::File("d/sub/new2", b"new", 0o644),
    ]);
    let root = unpack_layers(dir.path(), &[lower, upper]).unwrap();
    assert_eq!(fs::read(root.join("d/new")).unwrap(), b"new");
    assert_eq!(fs::read(root.join("d/sub/new2")).unwrap(), b"new");
    assert!(!root.join("d/old").exists());
    assert!(!root.join("d/sub/old2").exists());
    assert!(!root.join("d/.wh..wh..opq").exists());
    assert_eq!(fs::read(root.join("keep")).unwrap(), b"k");
}

#[test]
fn symlink_to_host_etc_is_kept_but_never_followed_when_writing() {
    let dir = tempfile::tempdir().unwrap();
    let passwd_before = fs::read("/etc/passwd").unwrap();
    let lower = layer_tar(&[E::Symlink("link", "/etc")]);
    let upper = layer_tar(&[E::File("link/passwd", b"pwned\n", 0o644)]);
    let root = unpack_layers(dir.path(), &[lower, upper]).unwrap();

    assert_eq!(fs::read("/etc/passwd").unwrap(), passwd_before, "host file untouched");
    assert_eq!(fs::read_link(root.join("link")).unwrap(), Path::new("/etc"));
    // Resolved as inside a chroot: /etc of the image.
    assert_eq!(fs::read(root.join("etc/passwd")).unwrap(), b"pwned\n");
}

#[test]
fn relative_symlink_cannot_climb_out_of_the_root() {
    let dir = tempfile::tempdir().unwrap();
    let outside = dir.path().join("outside");
    fs::create_dir(&outside).unwrap();
    // rootfs is dir/rootfs, so ../outside would be a real directory.
    let layer = layer_tar(&[E::Symlink("up", "../../../../outside"), E::File("up/escaped", b"x", 0o644)]);
    let root = unpack_layers(dir.path(), &[layer]).unwrap();
    assert!(!outside.join("escaped").exists());
    assert!(root.join("outside/escaped").is_file());
}

#[test]
fn existing_symlink_is_replaced_not_written_through() {
    let dir = tempfile::tempdir().unwrap();
    let victim = dir.path().join("victim");
    fs::write(&victim, b"precious").unwrap();
    let lower = layer_tar(&[E::Symlink("f", victim.to_str().unwrap())]);
    let upper = layer_tar(&[E::File("f", b"new", 0o644)]);
    let root = unpack_layers(dir.path(), &[lower, upper]).unwrap();
    assert_eq!(fs::read(&victim).unwrap(), b"precious");
    assert!(fs::symlink_metadata(root.join("f")).unwrap().is_file());
    assert_eq!(fs::read(root.join("f")).unwrap(), b"new");
}

#[test]
fn whiteout_through_symlink_does_not_delete_host_files() {
    let dir = tempfile::tempdir().unwrap();
    let host_dir = dir.path().join("host");
    fs::create_dir(&host_dir).unwrap();
    fs::write(host_dir.join("victim"), b"x").unwrap();
    let lower = layer_tar(&[E::Symlink("link", host_dir.to_str().unwrap())]);
    let upper = layer_tar(&[E::File("link/.wh.victim", b"", 0o644), E::File("link/.wh..wh..opq", b"", 0o644)]);
    unpack_layers(dir.path(), &[lower, upper]).unwrap();
    assert!(host_dir.join("victim").exists());
}

#[test]
fn parent_dir_entries_are_rejected() {
    for name in [&b"../evil"[..], b"a/../../evil", b"./../evil"] {
        let dir = tempfile::tempdir().unwrap();
        let layer = layer_tar(&[E::Raw(name, b"x")]);
        let err = unpack_layers(dir.path(), &[layer]).unwrap_err();
        assert!(matches!(err, OciError::UnsafePath { .. }), "{err}");
        assert!(!dir.path().join("evil").exists());
    }
}

#[test]
fn whiteouts_of_dot_and_dotdot_are_rejected() {
    for name in ["a/.wh..", ".wh..", ".wh.", "a/.wh..."] {
        let dir = tempfile::tempdir().unwrap();
        // Deep, so that a wrong `..` would still hit something we watch.
        let base = dir.path().join("x/y");
        fs::create_dir_all(&base).unwrap();
        fs::write(dir.path().join("x/sentinel"), b"").unwrap();
        let lower = layer_tar(&[E::File("a/keep", b"k", 0o644)]);
        let upper = layer_tar(&[E::File(name, b"", 0o644)]);
        let err = unpack_layers(&base, &[lower, upper]).unwrap_err();
        assert!(matches!(err, OciError::UnsafePath { .. }), "{name}: {err}");
        assert!(dir.path().join("x/sentinel").exists(), "{name}");
        assert!(base.join("rootfs/a/keep").exists(), "{name}");
    }
}

#[test]
fn absolute_entry_paths_are_made_relative() {
    let dir = tempfile::tempdir().unwrap();
    let layer = layer_tar(&[E::Raw(b"/abs/file", b"x")]);
    let root = unpack_layers(dir.path(), &[layer]).unwrap();
    assert_eq!(fs::read(root.join("abs/file")).unwrap(), b"x");
}

#[test]
fn hardlink_inside_dest_shares_the_inode() {
    let dir = tempfile::tempdir().unwrap();
    let layer = layer_tar(&[
        E::File("bin/busybox", b"multi-call", 0o755),
        E::Hardlink("bin/sh", "bin/busybox"),
        E::Hardlink("bin/ls", "/bin/busybox"),
    ]);
    let root = unpack_layers(dir.path(), &[layer]).unwrap();
    let a = fs::metadata(root.join("bin/busybox")).unwrap();
    let b = fs::metadata(root.join("bin/sh")).unwrap();
    let c = fs::metadata(root.join("bin/ls")).unwrap();
    assert_eq!(a.ino(), b.ino());
    assert_eq!(a.ino(), c.ino());
    assert_eq!(a.nlink(), 3);
}

#[test]
fn hardlink_through_symlink_cannot_reach_host_files() {
    let dir = tempfile::tempdir().unwrap();
    let lower = layer_tar(&[E::Symlink("link", "/etc")]);
    let upper = layer_tar(&[E::Hardlink("stolen", "link/passwd")]);
    let err = unpack_layers(dir.path(), &[lower, upper]).unwrap_err();
    assert!(matches!(err, OciError::UnsafePath { .. }), "{err}");
    assert!(!dir.path().join("rootfs/stolen").exists());

    let dir = tempfile::tempdir().unwrap();
    let layer = layer_tar(&[E::Hardlink("stolen", "../../etc/passwd")]);
    let err = unpack_layers(dir.path(), &[layer]).unwrap_err();
    assert!(matches!(err, OciError::UnsafePath { .. }), "{err}");
}

#[test]
fn modes_including_setuid_and_mtimes_are_preserved() {
    let dir = tempfile::tempdir().unwrap();
    let layer = layer_tar(&[
        E::Dir("private", 0o700),
        E::File("private/secret", b"s", 0o600),
        E::File("bin/su", b"su", 0o4755),
        E::Dir("tmp", 0o1777),
        E::File("ro", b"r", 0o444),
    ]);
    let root = unpack_layers(dir.path(), &[layer]).unwrap();
    let mode = |p: &str| fs::symlink_metadata(root.join(p)).unwrap().mode() & 0o7777;
    assert_eq!(mode("private"), 0o700);
    assert_eq!(mode("private/secret"), 0o600);
    assert_eq!(mode("bin/su"), 0o4755);
    assert_eq!(mode("tmp"), 0o1777);
    assert_eq!(mode("ro"), 0o444);
    // Directory mtimes survive files being written into them afterwards.
    let mtime = |p: &str| fs::symlink_metadata(root.join(p)).unwrap().mtime() as u64;
    assert_eq!(mtime("private"), MTIME);
    assert_eq!(mtime("private/secret"), MTIME);
}

#[test]
fn ownership_is_preserved_when_root() {
    if !is_root() {
        eprintln!("SKIPPED ownership_is_preserved_when_root: not running as root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let layer = layer_tar(&[E::Owned("home/u/file", b"x", 0o4750, 1234, 5678)]);
    let root = unpack_layers(dir.path(), &[layer]).unwrap();
    let m = fs::metadata(root.join("home/u/file")).unwrap();
    assert_eq!((m.uid(), m.gid()), (1234, 5678));
    assert_eq!(m.mode() & 0o7777, 0o4750, "chown must not clear setuid");
}

#[test]
fn fifos_are_created_and_devices_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let layer = layer_tar(&[E::Fifo("run/pipe"), E::CharDevice("dev/null")]);
    let root = unpack_layers(dir.path(), &[layer]).unwrap();
    assert!(fs::symlink_metadata(root.join("run/pipe")).unwrap().file_type().is_fifo());
    assert!(!root.join("dev/null").exists());
}

#[test]
fn later_layer_replaces_directory_with_file_and_back() {
    let dir = tempfile::tempdir().unwrap();
    let l1 = layer_tar(&[E::Dir("x", 0o755), E::File("x/inner", b"i", 0o644), E::File("y", b"y", 0o644)]);
    let l2 = layer_tar(&[E::File("x", b"now a file", 0o644), E::Dir("y", 0o750)]);
    let root = unpack_layers(dir.path(), &[l1, l2]).unwrap();
    assert_eq!(fs::read(root.join("x")).unwrap(), b"now a file");
    assert!(root.join("y").is_dir());
    assert_eq!(fs::metadata(root.join("y")).unwrap().mode() & 0o777, 0o750);
}

#[test]
fn digest_mismatch_is_detected_while_streaming() {
    for compression in [Compression::Gzip, Compression::None] {
        let dir = tempfile::tempdir().unwrap();
        let layout = dir.path().join("layout");
        let layer = layer_tar(&[E::File("f", &[7u8; 10_000], 0o644)]);
        let reference = write_image(&layout, "t", &[(layer, compression)]);
        let image = LocalImage::open(&reference).unwrap();
        let blob = blob_path(&layout, image.layers()[0].digest().as_ref());
        let mut bytes = fs::read(&blob).unwrap();
        // Flip a byte inside the file data (same size, still a valid tar).
        let i = if compression == Compression::None { 600 } else { bytes.len() / 2 };
        bytes[i] ^= 0x01;
        fs::write(&blob, &bytes).unwrap();

        let err = image.unpack(&dir.path().join("rootfs")).unwrap_err();
        match &err {
            OciError::DigestMismatch { blob, .. } => {
                assert!(blob.contains("layer 1 of 1"), "{err}")
            }
            other => panic!("expected a digest mismatch, got {other}"),
        }
    }
}

#[test]
fn truncated_gzip_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    let tar = layer_tar(&[E::File("f", &[1u8; 50_000], 0o644)]);
    let gz = common::gzip(&tar);
    let truncated = &gz[..gz.len() / 2];
    // The descriptor matches the truncated bytes: only the decoder can tell.
    let mut w = sealpod_oci::LayoutWriter::create(&layout).unwrap();
    let desc = w.write_blob(Compression::Gzip.oci_media_type(), truncated).unwrap();
    w.add_image(&common::config_json(&[sealpod_oci::sha256_digest(&tar)]), vec![desc], "t").unwrap();
    let reference = sealpod_oci::ImageReference::OciLayout { path: layout, tag: None };
    let err = LocalImage::open(&reference).unwrap().unpack(&dir.path().join("rootfs")).unwrap_err();
    assert!(matches!(err, OciError::Layer { .. }), "{err}");
}

#[test]
fn truncated_blob_file_is_a_size_mismatch() {
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    let reference = write_image(&layout, "t", &[(layer_tar(&[E::File("f", b"abc", 0o644)]), Compression::Gzip)]);
    let digest = LocalImage::open(&reference).unwrap().layers()[0].digest().to_string();
    let blob = blob_path(&layout, &digest);
    let bytes = fs::read(&blob).unwrap();
    fs::write(&blob, &bytes[..bytes.len() - 5]).unwrap();
    let err = LocalImage::open(&reference).unwrap_err();
    assert!(matches!(err, OciError::SizeMismatch { .. }), "{err}");
}

#[test]
fn uncompressed_digest_must_match_config_diff_id() {
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    let tar = layer_tar(&[E::File("f", b"abc", 0o644)]);
    let mut w = sealpod_oci::LayoutWriter::create(&layout).unwrap();
    let desc = w.write_blob(Compression::Gzip.oci_media_type(), &common::gzip(&tar)).unwrap();
    let wrong = sealpod_oci::sha256_digest(b"something else");
    w.add_image(&common::config_json(&[wrong]), vec![desc], "t").unwrap();
    let reference = sealpod_oci::ImageReference::OciLayout { path: layout, tag: None };
    let err = LocalImage::open(&reference).unwrap().unpack(&dir.path().join("rootfs")).unwrap_err();
    match err {
        OciError::DigestMismatch { blob, .. } => assert!(blob.contains("diff_id"), "{blob}"),
        other => panic!("expected a diff_id mismatch, got {other}"),
    }
}

#[test]
fn zstd_layers_unpack() {
    let tar = layer_tar(&[E::File("z/hello", b"zstd!", 0o644)]);
    if common::zstd(&tar).is_none() {
        eprintln!("SKIPPED zstd_layers_unpack: `zstd` is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let reference = write_image(&dir.path().join("layout"), "t", &[(tar, Compression::Zstd)]);
    let root = dir.path().join("rootfs");
    LocalImage::open(&reference).unwrap().unpack(&root).unwrap();
    assert_eq!(fs::read(root.join("z/hello")).unwrap(), b"zstd!");
}

#[test]
fn unpack_refuses_a_non_empty_destination() {
    let dir = tempfile::tempdir().unwrap();
    let reference =
        write_image(&dir.path().join("layout"), "t", &[(layer_tar(&[E::File("f", b"", 0o644)]), Compression::Gzip)]);
    let dest = dir.path().join("rootfs");
    fs::create_dir(&dest).unwrap();
    fs::write(dest.join("already"), b"").unwrap();
    let err = LocalImage::open(&reference).unwrap().unpack(&dest).unwrap_err();
    assert!(matches!(err, OciError::DestinationNotEmpty { .. }), "{err}");
}

#[test]
fn arbitrary_bytes_as_layer_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let valid = layer_tar(&[E::File("a/b", b"x", 0o644), E::Symlink("l", "/a"), E::Hardlink("h", "a/b")]);
    let mut inputs: Vec<Vec<u8>> = vec![Vec::new(), vec![0; 1024], vec![0xff; 700], valid.clone()];
    // Corrupt every header field in turn.
    for i in (0..512).step_by(7) {
        let mut v = valid.clone();
        v[i] ^= 0x5a;
        inputs.push(v);
    }
    for (n, input) in inputs.iter().enumerate() {
        let dest = dir.path().join(format!("r{n}"));
        fs::create_dir(&dest).unwrap();
        let _ = apply_layer(&input[..], &dest);
    }
}
