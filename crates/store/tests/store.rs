//! Behaviour of the content store on a real file system.

use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sealpod_store::{media_type, Digest, GcOptions, Reference, RepositoryName, Store, StoreError, Tag};

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("store")).unwrap();
    (dir, store)
}

/// Every file under `dir`, relative.
fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path().strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

fn repo(name: &str) -> RepositoryName {
    name.parse().unwrap()
}

fn tag(t: &str) -> Tag {
    t.parse().unwrap()
}

fn descriptor(mt: &str, data: &[u8]) -> String {
    format!(r#"{{"mediaType":"{mt}","digest":"{}","size":{}}}"#, Digest::of(data), data.len())
}

fn image_manifest(config: &[u8], layers: &[&[u8]]) -> Vec<u8> {
    let layers: Vec<String> =
        layers.iter().map(|l| descriptor("application/vnd.oci.image.layer.v1.tar+gzip", l)).collect();
    format!(
        r#"{{"schemaVersion":2,"mediaType":"{}","config":{},"layers":[{}]}}"#,
        media_type::OCI_MANIFEST,
        descriptor("application/vnd.oci.image.config.v1+json", config),
        layers.join(",")
    )
    .into_bytes()
}

fn no_gc_grace() -> GcOptions {
    GcOptions { grace_period: Duration::ZERO, stale_after: Duration::ZERO }
}

#[test]
fn blob_round_trips_and_is_named_by_its_digest() {
    let (_d, store) = store();
    let digest = store.put(b"hello").unwrap();
    assert_eq!(digest, Digest::of(b"hello"));
    assert_eq!(store.blob_size(&digest).unwrap(), Some(5));
    let mut back = Vec::new();
    store.reader(&digest).unwrap().read_to_end(&mut back).unwrap();
    assert_eq!(back, b"hello");
    store.verify(&digest).unwrap();
    assert!(store.root().join("blobs/sha256").join(digest.hex()).is_file());
}

#[test]
fn dropping_a_writer_mid_way_leaves_nothing() {
    let (_d, store) = store();
    let data = vec![7u8; 1 << 20];
    let mut w = store.writer_expecting(Digest::of(&data), Some(data.len() as u64)).unwrap();
    w.write_all(&data[..data.len() / 2]).unwrap();
    drop(w);
    assert_eq!(files_under(&store.root().join("blobs")), Vec::<String>::new());
    assert_eq!(store.blob_size(&Digest::of(&data)).unwrap(), None);
}

/// Run in a child process by the test below: writes half a blob, then dies
/// without unwinding, as a killed process would.
#[test]
fn crash_helper_writes_half_a_blob_then_aborts() {
    let Some(root) = std::env::var_os("SEALPOD_STORE_CRASH_ROOT") else { return };
    let store = Store::open(root).unwrap();
    let mut w = store.writer_expecting(Digest::of(b"the whole blob"), None).unwrap();
    w.write_all(b"the whole").unwrap();
    w.flush().unwrap();
    std::process::abort();
}

#[test]
fn a_crashed_write_is_never_visible_under_a_digest_and_gc_removes_it() {
    let (_d, store) = store();
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_helper_writes_half_a_blob_then_aborts", "--test-threads=1", "--quiet"])
        .env("SEALPOD_STORE_CRASH_ROOT", store.root())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(!status.success(), "the helper must have crashed");
    let left = files_under(&store.root().join("blobs"));
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(left[0].starts_with("sha256/.tmp-"), "{left:?}");
    assert_eq!(store.blob_size(&Digest::of(b"the whole blob")).unwrap(), None);

    let report = store.gc(&GcOptions { stale_after: Duration::from_secs(3600), ..no_gc_grace() }).unwrap();
    assert_eq!(report.temp_files_removed, 0, "a young temporary file may still be written");
    let report = store.gc(&no_gc_grace()).unwrap();
    assert_eq!(report.temp_files_removed, 1);
    assert_eq!(files_under(&store.root().join("blobs")), Vec::<String>::new());
}

#[test]
fn gc_leaves_the_temporary_file_of_a_live_writer_alone() {
    let (_d, store) = store();
    let mut w = store.writer().unwrap();
    w.write_all(b"slow").unwrap();
    assert_eq!(store.gc(&no_gc_grace()).unwrap().temp_files_removed, 0);
    w.write_all(b" writer").unwrap();
    assert_eq!(w.commit().unwrap(), Digest::of(b"slow writer"));
}

#[test]
fn writer_refuses_to_commit_content_with_another_digest_or_size() {
    let (_d, store) = store();
    let mut w = store.writer_expecting(Digest::of(b"expected"), None).unwrap();
    w.write_all(b"something else").unwrap();
    assert!(matches!(w.commit(), Err(StoreError::DigestMismatch { .. })));

    let mut w = store.writer_expecting(Digest::of(b"abc"), Some(4)).unwrap();
    w.write_all(b"abc").unwrap();
    assert!(matches!(w.commit(), Err(StoreError::SizeMismatch { expected: 4, actual: 3 })));

    let mut w = store.writer_expecting(Digest::of(b"abc"), Some(3)).unwrap();
    let err = w.write_all(b"abcd").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidData);
    drop(w);
    assert_eq!(files_under(&store.root().join("blobs")), Vec::<String>::new());
}

#[test]
fn concurrent_writers_of_the_same_blob_all_succeed_with_one_copy() {
    let (_d, store) = store();
    let data: Arc<Vec<u8>> = Arc::new((0..4_000_000u32).map(|i| (i % 251) as u8).collect());
    let digest = Digest::of(&data);
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            let data = data.clone();
            std::thread::spawn(move || {
                let mut w = store.writer_expecting(digest, Some(data.len() as u64)).unwrap();
                for chunk in data.chunks(65_536) {
                    w.write_all(chunk).unwrap();
                }
                w.commit().unwrap()
            })
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), digest);
    }
    assert_eq!(files_under(&store.root().join("blobs")), vec![format!("sha256/{}", digest.hex())]);
    store.verify(&digest).unwrap();
}

#[test]
fn corrupted_blob_on_disk_is_detected_on_read() {
    let (_d, store) = store();
    let data = vec![1u8; 300_000];
    let digest = store.put(&data).unwrap();
    let path = store.root().join("blobs/sha256").join(digest.hex());
    let mut bytes = fs::read(&path).unwrap();
    bytes[123_456] ^= 0xff;
    fs::write(&path, &bytes).unwrap();

    let mut sink = Vec::new();
    let err = store.reader(&digest).unwrap().read_to_end(&mut sink).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidData);
    assert!(err.to_string().contains("corrupt"), "{err}");
    match store.verify(&digest) {
        Err(StoreError::Corrupt { digest: d, actual }) => {
            assert_eq!(d, digest);
            assert_eq!(actual, Digest::of(&bytes));
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert!(matches!(store.read_to_vec(&digest, 1 << 20), Err(StoreError::Corrupt { .. })));
    assert!(store.remove_blob(&digest).unwrap());
    assert!(matches!(store.reader(&digest), Err(StoreError::BlobUnknown(_))));
}

#[test]
fn manifest_is_refused_until_its_blobs_are_stored() {
    let (_d, store) = store();
    let manifest = image_manifest(b"config", &[b"layer"]);
    let web = repo("team/app/web");
    match store.put_manifest(&web, Some(&tag("v1")), Some(media_type::OCI_MANIFEST), &manifest) {
        Err(StoreError::ManifestBlobUnknown(missing)) => {
            assert_eq!(missing, vec![Digest::of(b"config"), Digest::of(b"layer")])
        }
        other => panic!("expected ManifestBlobUnknown, got {other:?}"),
    }
    store.put(b"config").unwrap();
    store.put(b"layer").unwrap();
    let stored = store.put_manifest(&web, Some(&tag("v1")), Some(media_type::OCI_MANIFEST), &manifest).unwrap();
    assert_eq!(stored.digest, Digest::of(&manifest));
    assert_eq!(store.manifest(&web, &Reference::Tag(tag("v1"))).unwrap(), stored);
    assert_eq!(store.manifest(&web, &Reference::Digest(stored.digest)).unwrap(), stored);
    assert_eq!(store.read_manifest(&stored.digest).unwrap(), manifest);
    assert_eq!(store.repositories().unwrap(), vec![web.clone()]);
    assert!(matches!(store.manifest(&repo("team/other"), &Reference::Tag(tag("v1"))), Err(StoreError::NameUnknown(_))));
    assert!(matches!(store.manifest(&web, &Reference::Tag(tag("v2"))), Err(StoreError::ManifestUnknown { .. })));
}

#[test]
fn a_mirror_records_a_manifest_ahead_of_its_layers_but_still_checks_what_is_stored() {
    let (_d, store) = store();
    let manifest = image_manifest(b"config", &[b"layer"]);
    let web = repo("team/app/web");
    store.put(b"config").unwrap();
    let stored =
        store.put_manifest_ahead_of_content(&web, Some(&tag("v1")), Some(media_type::OCI_MANIFEST), &manifest).unwrap();
    assert_eq!(store.manifest(&web, &Reference::Tag(tag("v1"))).unwrap(), stored);
    assert!(matches!(store.reader(&Digest::of(b"layer")), Err(StoreError::BlobUnknown(_))));
    // A stored blob whose size contradicts the descriptor is still refused.
    let liar = String::from_utf8(manifest).unwrap().replace("\"size\":6", "\"size\":7");
    assert!(matches!(
        store.put_manifest_ahead_of_content(&web, None, Some(media_type::OCI_MANIFEST), liar.as_bytes()),
        Err(StoreError::ManifestInvalid(_))
    ));
}

#[test]
fn a_follower_reads_what_a_writer_has_written_so_far() {
    use std::os::unix::fs::FileExt;
    let (_d, store) = store();
    let mut writer = store.writer_expecting(Digest::of(b"hello world"), Some(11)).unwrap();
    let follower = writer.follower().unwrap();
    writer.write_all(b"hello").unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(follower.read_at(&mut buf, 0).unwrap(), 5);
    assert_eq!(&buf[..5], b"hello");
    writer.write_all(b" world").unwrap();
    assert_eq!(follower.read_at(&mut buf, 5).unwrap(), 6);
    assert_eq!(&buf[..6], b" world");
    assert_eq!(writer.commit().unwrap(), Digest::of(b"hello world"));
    // The handle stays valid across the rename into place.
    assert_eq!(follower.read_at(&mut buf, 0).unwrap(), 11);
}

#[test]
fn pieces_written_out_of_order_commit_once_absorbed_in_order() {
    let (_d, store) = store();
    let blob: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let mut writer = store.writer_expecting(Digest::of(&blob), Some(blob.len() as u64)).unwrap();
    let pieces = writer.pieces(blob.len() as u64).unwrap();
    // The tail arrives first, from another peer; the head streams in.
    pieces.write_at(200_000, &blob[200_000..]).unwrap();
    writer.write_all(&blob[..100_000]).unwrap();
    pieces.write_at(100_000, &blob[100_000..200_000]).unwrap();
    assert!(pieces.write_at(299_999, b"xy").is_err(), "a piece past the end was accepted");
    writer.absorb(200_000).unwrap();
    assert_eq!(writer.written(), 300_000);
    assert_eq!(writer.commit().unwrap(), Digest::of(&blob));
    assert_eq!(store.read_to_vec(&Digest::of(&blob), 1 << 20).unwrap(), blob);
}

#[test]
fn a_piece_beyond_what_was_absorbed_keeps_a_blob_from_committing() {
    let (_d, store) = store();
    let mut writer = store.writer_expecting(Digest::of(b"abc"), None).unwrap();
    writer.pieces(10).unwrap().write_at(5, b"zz").unwrap();
    writer.write_all(b"abc").unwrap();
    assert!(matches!(writer.commit(), Err(StoreError::SizeMismatch { .. })));
    assert!(!store.contains(&Digest::of(b"abc")).unwrap());
}

#[test]
fn manifest_whose_descriptor_lies_about_a_size_is_refused() {
    let (_d, store) = store();
    store.put(b"config").unwrap();
    let lying = format!(
        r#"{{"schemaVersion":2,"config":{{"mediaType":"x","digest":"{}","size":99}},"layers":[]}}"#,
        Digest::of(b"config")
    );
    assert!(matches!(
        store.put_manifest(&repo("a"), None, None, lying.as_bytes()),
        Err(StoreError::ManifestInvalid(_))
    ));
}

#[test]
fn tags_are_listed_in_order_and_deleting_a_manifest_removes_its_tags() {
    let (_d, store) = store();
    let r = repo("lib/x");
    store.put(b"c").unwrap();
    let m = image_manifest(b"c", &[]);
    for t in ["v2", "latest", "v10", "A"] {
        store.put_manifest(&r, Some(&tag(t)), None, &m).unwrap();
    }
    let tags: Vec<String> = store.tags(&r).unwrap().iter().map(|t| t.to_string()).collect();
    assert_eq!(tags, ["A", "latest", "v10", "v2"]);
    store.delete_manifest(&r, &Digest::of(&m)).unwrap();
    assert!(store.tags(&r).unwrap().is_empty());
    assert!(matches!(store.manifest(&r, &Reference::Digest(Digest::of(&m))), Err(StoreError::ManifestUnknown { .. })));
}

#[test]
fn gc_keeps_referenced_blobs_and_drops_unreferenced_ones() {
    let (_d, store) = store();
    let r = repo("team/app");
    for b in [&b"config-amd64"[..], b"config-arm64", b"layer-shared", b"layer-arm", b"stray", b"old-config"] {
        store.put(b).unwrap();
    }
    let amd64 = image_manifest(b"config-amd64", &[b"layer-shared"]);
    let arm64 = image_manifest(b"config-arm64", &[b"layer-shared", b"layer-arm"]);
    store.put_manifest(&r, None, None, &amd64).unwrap();
    store.put_manifest(&r, None, None, &arm64).unwrap();
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"{}","manifests":[{},{}]}}"#,
        media_type::OCI_INDEX,
        descriptor(media_type::OCI_MANIFEST, &amd64),
        descriptor(media_type::OCI_MANIFEST, &arm64)
    );
    store.put_manifest(&r, Some(&tag("multi")), None, index.as_bytes()).unwrap();
    let old = image_manifest(b"old-config", &[b"layer-shared"]);
    store.put_manifest(&repo("other"), Some(&tag("old")), None, &old).unwrap();

    // Young unreferenced blobs survive: their manifest may still be coming.
    let report = store.gc(&GcOptions::default()).unwrap();
    assert!(report.blobs_removed.is_empty());
    assert!(store.contains(&Digest::of(b"stray")).unwrap());

    let report = store.gc(&no_gc_grace()).unwrap();
    assert_eq!(report.blobs_removed, vec![Digest::of(b"stray")]);
    assert_eq!(report.bytes_freed, 5);

    // Deleting the old image frees only what nothing else references.
    store.delete_manifest(&repo("other"), &Digest::of(&old)).unwrap();
    let mut removed = store.gc(&no_gc_grace()).unwrap().blobs_removed;
    removed.sort();
    let mut expected = vec![Digest::of(b"old-config"), Digest::of(&old)];
    expected.sort();
    assert_eq!(removed, expected);
    for kept in [&b"config-amd64"[..], b"config-arm64", b"layer-shared", b"layer-arm", &amd64, &arm64, index.as_bytes()]
    {
        store.verify(&Digest::of(kept)).unwrap();
    }
}

#[test]
fn upload_resumes_after_the_writer_went_away() {
    let (_d, store) = store();
    let data: Vec<u8> = (0..1_000_000u32).map(|i| (i * 7) as u8).collect();
    let mut up = store.start_upload("team/app").unwrap();
    let id = up.id().clone();
    up.write_all(&data[..400_000]).unwrap();
    drop(up);

    assert!(matches!(store.resume_upload(&id, "team/other"), Err(StoreError::UploadUnknown(_))));
    let mut up = store.resume_upload(&id, "team/app").unwrap();
    assert_eq!(up.size(), 400_000);
    up.write_all(&data[400_000..]).unwrap();
    assert_eq!(up.commit(&Digest::of(&data)).unwrap(), Digest::of(&data));
    store.verify(&Digest::of(&data)).unwrap();
    assert!(matches!(store.resume_upload(&id, "team/app"), Err(StoreError::UploadUnknown(_))));
    assert!(files_under(&store.root().join("uploads")).is_empty());
}

#[test]
fn upload_rolls_back_a_failed_chunk() {
    let (_d, store) = store();
    let mut up = store.start_upload("r").unwrap();
    up.write_all(b"good ").unwrap();
    let mark = up.mark();
    up.write_all(b"garbage from a request that failed").unwrap();
    up.rollback(mark).unwrap();
    up.write_all(b"data").unwrap();
    assert_eq!(up.commit(&Digest::of(b"good data")).unwrap(), Digest::of(b"good data"));
}

#[test]
fn an_open_upload_cannot_be_resumed_by_a_second_writer() {
    let (_d, store) = store();
    let up = store.start_upload("r").unwrap();
    assert!(matches!(store.resume_upload(up.id(), "r"), Err(StoreError::UploadBusy(_))));
    let id = up.id().clone();
    drop(up);
    store.resume_upload(&id, "r").unwrap();
}

#[test]
fn upload_with_the_wrong_digest_is_discarded() {
    let (_d, store) = store();
    let mut up = store.start_upload("r").unwrap();
    let id = up.id().clone();
    up.write_all(b"abc").unwrap();
    assert!(matches!(up.commit(&Digest::of(b"xyz")), Err(StoreError::DigestMismatch { .. })));
    assert!(!store.contains(&Digest::of(b"abc")).unwrap());
    assert!(matches!(store.resume_upload(&id, "r"), Err(StoreError::UploadUnknown(_))));
}

#[test]
fn gc_removes_abandoned_uploads_but_not_open_ones() {
    let (_d, store) = store();
    let mut abandoned = store.start_upload("r").unwrap();
    abandoned.write_all(b"x").unwrap();
    let abandoned_id = abandoned.id().clone();
    drop(abandoned);
    let open = store.start_upload("r").unwrap();
    let report = store.gc(&no_gc_grace()).unwrap();
    assert_eq!(report.uploads_removed, 1);
    assert!(matches!(store.resume_upload(&abandoned_id, "r"), Err(StoreError::UploadUnknown(_))));
    assert_eq!(open.size(), 0);
    open.commit(&Digest::of(b"")).unwrap();
}

#[test]
fn gc_running_alongside_pushes_never_breaks_a_recorded_manifest() {
    let (_d, store) = store();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let gc = {
        let (store, stop) = (store.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut runs = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                // A short grace period: blobs pushed just before their manifest survive.
                store.gc(&GcOptions { grace_period: Duration::from_secs(5), stale_after: Duration::ZERO }).unwrap();
                std::thread::sleep(Duration::from_millis(5));
                runs += 1;
            }
            runs
        })
    };
    let pushers: Vec<_> = (0..3)
        .map(|p| {
            let store = store.clone();
            std::thread::spawn(move || {
                for i in 0..40 {
                    let config = format!("config {p} {i}");
                    let layer = format!("layer {p} {i}");
                    store.put(config.as_bytes()).unwrap();
                    store.put(layer.as_bytes()).unwrap();
                    let m = image_manifest(config.as_bytes(), &[layer.as_bytes()]);
                    store.put_manifest(&repo(&format!("p{p}")), Some(&tag(&format!("t{i}"))), None, &m).unwrap();
                    if i % 2 == 0 {
                        store.put(format!("garbage {p} {i}").as_bytes()).unwrap();
                    }
                }
            })
        })
        .collect();
    for p in pushers {
        p.join().unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(gc.join().unwrap() > 0);
    for p in 0..3 {
        let r = repo(&format!("p{p}"));
        assert_eq!(store.tags(&r).unwrap().len(), 40);
        for t in store.tags(&r).unwrap() {
            let m = store.manifest(&r, &Reference::Tag(t)).unwrap();
            store.verify(&m.digest).unwrap();
        }
    }
    let report = store.gc(&no_gc_grace()).unwrap();
    assert_eq!(report.blobs_removed.len(), 60, "only the garbage goes");
    assert_eq!(report.blobs_kept, 3 * 40 * 3);
}
