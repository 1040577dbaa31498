//! ocicrypt images against a real peer, Debian's skopeo (ocicrypt 1.0.3,
//! go-jose 2.6): what skopeo encrypts sealpod decrypts and unpacks, what
//! sealpod encrypts skopeo decrypts, both to the original layer digests;
//! and hostile encrypted images are refused leaving nothing behind.
//! Keys are made with openssl. Tests print `SKIPPED` without the tools.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{have_tool, layer_tar, run, snapshot, write_image, E};
use sealpod_oci::ocicrypt::{parse_private_key, parse_public_key, PrivateKey, Recipient};
use sealpod_oci::{Compression, ImageReference, LayerAction, LayoutWriter, LocalImage, OciError, Transformed};
use serde_json::Value;

struct Keys {
    dir: PathBuf,
}

impl Keys {
    /// RSA-2048 (PKCS#8), EC P-256 (PKCS#8 and SEC1) and EC P-384, by openssl.
    fn make(dir: &Path) -> Keys {
        let sh = |script: &str| run(Command::new("sh").arg("-ec").arg(script).current_dir(dir));
        sh("openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out rsa.pem 2>/dev/null
            openssl pkey -in rsa.pem -pubout -out rsa.pub
            openssl ecparam -name prime256v1 -genkey -noout -out ec.sec1
            openssl pkcs8 -topk8 -nocrypt -in ec.sec1 -out ec.pem
            openssl pkey -in ec.pem -pubout -out ec.pub
            openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-384 -out p384.pem
            openssl pkey -in p384.pem -pubout -out p384.pub");
        Keys { dir: dir.to_owned() }
    }
    fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }
    fn private(&self, name: &str) -> PrivateKey {
        parse_private_key(&fs::read(self.dir.join(name)).unwrap()).unwrap()
    }
    fn recipient(&self, name: &str) -> Recipient {
        parse_public_key(&fs::read(self.dir.join(name)).unwrap()).unwrap()
    }
}

/// A plain image with a plain, a gzip and (if zstd is installed) no zstd
/// layer: skopeo 1.9 (ocicrypt 1.0.3) predates `tar+zstd+encrypted`.
fn plain_image(dir: &Path) -> ImageReference {
    let base = layer_tar(&[
        E::Dir("etc", 0o755),
        E::File("etc/motd", b"sealed\n", 0o644),
        E::File("app", &vec![7u8; 300_000], 0o644),
    ]);
    let top = layer_tar(&[E::File("etc/motd", b"changed\n", 0o644), E::File("etc/extra", b"x", 0o644)]);
    write_image(&dir.join("plain"), "v1", &[(base, Compression::None), (top, Compression::Gzip)])
}

fn layer_digests(layout: &Path, tag: &str) -> Vec<String> {
    let image =
        LocalImage::open(&ImageReference::OciLayout { path: layout.to_owned(), tag: Some(tag.into()) }).unwrap();
    image.layers().iter().map(|l| l.digest().to_string()).collect()
}

fn oci(path: &Path, tag: &str) -> String {
    format!("oci:{}:{tag}", path.display())
}

fn open(path: &Path, tag: &str) -> LocalImage {
    LocalImage::open(&ImageReference::OciLayout { path: path.to_owned(), tag: Some(tag.into()) }).unwrap()
}

fn skopeo(args: &[&str]) {
    run(Command::new("skopeo").args(args));
}

/// A temporary directory with openssl's keys in it, if skopeo and openssl are installed.
fn with_tools(test: &str) -> Option<(tempfile::TempDir, Keys)> {
    if !have_tool("skopeo", test) || !have_tool("openssl", test) {
        return None;
    }
    let tmp = tempfile::tempdir().unwrap();
    let keys = Keys::make(tmp.path());
    Some((tmp, keys))
}

fn encrypt(image: &LocalImage, dst: &Path, to: &[Recipient], keys: &[PrivateKey]) -> Result<Transformed, OciError> {
    image.encrypt_to(&mut LayoutWriter::create(dst).unwrap(), "v1", to, keys, &mut |_, _, _| {})
}

fn decrypt(image: &LocalImage, dst: &Path, keys: &[PrivateKey]) -> Result<Transformed, OciError> {
    image.decrypt_to(&mut LayoutWriter::create(dst).unwrap(), "v1", keys, &mut |_, _, _| {})
}

/// A fresh P-256 key and itself as a recipient.
fn fresh_key() -> (PrivateKey, Recipient) {
    let key = PrivateKey::generate_p256();
    let recipient = Recipient::to(key.public_key());
    (key, recipient)
}

#[test]
fn what_skopeo_encrypts_sealpod_decrypts_and_unpacks_to_the_same_tree() {
    let Some((tmp, keys)) = with_tools("skopeo_encrypts") else { return };
    let dir = tmp.path();
    let plain = plain_image(dir);
    let plain_layers = layer_digests(&dir.join("plain"), "v1");
    let reference = snapshot(
        &{
            let d = dir.join("plain-root");
            LocalImage::open(&plain).unwrap().unpack(&d).unwrap();
            d
        },
        false,
    );

    for (name, recipients, decrypt_with) in [
        ("ec", vec!["ec.pub"], vec!["ec.pem", "ec.sec1"]),
        ("rsa", vec!["rsa.pub"], vec!["rsa.pem"]),
        ("two", vec!["rsa.pub", "ec.pub"], vec!["rsa.pem", "ec.pem"]),
    ] {
        let enc = dir.join(format!("enc-{name}"));
        let mut args = vec!["copy".to_owned()];
        for r in &recipients {
            args.push("--encryption-key".into());
            args.push(format!("jwe:{}", keys.path(r)));
        }
        args.push(oci(&dir.join("plain"), "v1"));
        args.push(oci(&enc, "v1"));
        run(Command::new("skopeo").args(&args));
        let encrypted = open(&enc, "v1");
        assert!(encrypted.is_encrypted());
        assert!(encrypted.layers().iter().all(|l| l.media_type().to_string().ends_with("+encrypted")));

        for key in decrypt_with {
            let k = keys.private(key);
            // Decrypted into a layout: the original layer digests, media types restored.
            let out = dir.join(format!("dec-{name}-{key}"));
            let t = decrypt(&encrypted, &out, std::slice::from_ref(&k)).unwrap();
            assert!(t.layers.iter().all(|l| l.action == LayerAction::Decrypted));
            assert_eq!(layer_digests(&out, "v1"), plain_layers, "{name} with {key}");
            // Unpacked straight from the encrypted image: the same tree.
            let root = dir.join(format!("root-{name}-{key}"));
            encrypted.unpack_with_keys(&root, &[k]).unwrap();
            assert_eq!(snapshot(&root, false), reference, "{name} with {key}");
        }
        // A key that is no recipient: a named refusal.
        let err = encrypted.unpack_with_keys(&dir.join(format!("nope-{name}")), &[PrivateKey::generate_p256()]);
        assert!(matches!(err, Err(OciError::Crypt { .. })), "{err:?}");
        let err = encrypted.unpack(&dir.join(format!("nokey-{name}"))).unwrap_err();
        assert!(err.to_string().contains("private key"), "{err}");
    }
}

#[test]
fn what_sealpod_encrypts_skopeo_decrypts_to_the_original_layers() {
    let Some((tmp, keys)) = with_tools("sealpod_encrypts") else { return };
    let dir = tmp.path();
    let plain = LocalImage::open(&plain_image(dir)).unwrap();
    let plain_layers = layer_digests(&dir.join("plain"), "v1");

    for (name, recipients, decrypt_with) in [
        ("ec", vec!["ec.pub"], vec!["ec.pem"]),
        ("p384", vec!["p384.pub"], vec!["p384.pem"]),
        ("rsa", vec!["rsa.pub"], vec!["rsa.pem"]),
        ("three", vec!["rsa.pub", "ec.pub", "p384.pub"], vec!["rsa.pem", "ec.pem", "p384.pem"]),
    ] {
        let enc = dir.join(format!("enc-{name}"));
        let rs: Vec<Recipient> = recipients.iter().map(|r| keys.recipient(r)).collect();
        let t = encrypt(&plain, &enc, &rs, &[]).unwrap();
        assert!(t.layers.iter().all(|l| l.action == LayerAction::Encrypted));
        for key in decrypt_with {
            let out = dir.join(format!("dec-{name}-{key}"));
            skopeo(&["copy", "--decryption-key", &keys.path(key), &oci(&enc, "v1"), &oci(&out, "v1")]);
            assert_eq!(layer_digests(&out, "v1"), plain_layers, "{name} decrypted by skopeo with {key}");
        }
    }
}

#[test]
fn adding_a_recipient_rewraps_keys_and_leaves_layer_bytes_alone() {
    let Some((tmp, keys)) = with_tools("adding_a_recipient") else { return };
    let dir = tmp.path();
    plain_image(dir);
    let enc = dir.join("enc");
    skopeo(&[
        "copy",
        "--encryption-key",
        &format!("jwe:{}", keys.path("rsa.pub")),
        &oci(&dir.join("plain"), "v1"),
        &oci(&enc, "v1"),
    ]);
    let before = layer_digests(&enc, "v1");

    let more = dir.join("more");
    let encrypted = open(&enc, "v1");
    let no_key = encrypt(&encrypted, &more, &[keys.recipient("ec.pub")], &[]);
    assert!(matches!(no_key, Err(OciError::KeyNeeded { .. })), "{no_key:?}");
    let t = encrypt(&encrypted, &more, &[keys.recipient("ec.pub")], &[keys.private("rsa.pem")]).unwrap();
    assert!(t.layers.iter().all(|l| l.action == LayerAction::Rewrapped && l.from == l.to));
    assert_eq!(layer_digests(&more, "v1"), before);
    // The old and the new recipient can both decrypt, with skopeo.
    for key in ["rsa.pem", "ec.pem"] {
        let out = dir.join(format!("dec-{key}"));
        skopeo(&["copy", "--decryption-key", &keys.path(key), &oci(&more, "v1"), &oci(&out, "v1")]);
        assert_eq!(layer_digests(&out, "v1"), layer_digests(&dir.join("plain"), "v1"));
    }
}

/// Rewrites layer `index` of the image in `layout` with `edit` applied to
/// its blob bytes and its descriptor, keeping the layout consistent (new
/// digests all the way up), as a hostile publisher or mirror could.
fn tamper(layout: &Path, tag: &str, index: usize, edit: impl FnOnce(&mut Vec<u8>, &mut Value)) {
    let image = open(layout, tag);
    let mut manifest: Value = serde_json::from_slice(image.manifest_bytes()).unwrap();
    let desc = &mut manifest["layers"][index];
    let path = common::blob_path(layout, desc["digest"].as_str().unwrap());
    let mut bytes = fs::read(&path).unwrap();
    edit(&mut bytes, desc);
    let w = LayoutWriter::create(layout).unwrap();
    let new = w.write_blob("x", &bytes).unwrap();
    desc["digest"] = new.digest().to_string().into();
    desc["size"] = bytes.len().into();
    let config = image.config_bytes().to_vec();
    let layers: Vec<sealpod_oci::oci_spec::image::Descriptor> =
        serde_json::from_value(manifest["layers"].clone()).unwrap();
    let mut w = LayoutWriter::create(layout).unwrap();
    w.add_image(&config, layers, tag).unwrap();
}

fn leftovers(layout: &Path) -> Vec<String> {
    fs::read_dir(layout.join("blobs/sha256")).map_or(vec![], |d| {
        d.filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with('.'))
            .collect()
    })
}

#[test]
fn tampered_encrypted_layers_are_refused_by_name_and_leave_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let plain = LocalImage::open(&plain_image(dir)).unwrap();
    let (key, recipient) = fresh_key();
    let enc = dir.join("enc");
    encrypt(&plain, &enc, &[recipient], &[]).unwrap();
    let plain_digest = layer_digests(&dir.join("plain"), "v1")[0].clone();

    let cases: Vec<(&str, Box<dyn FnOnce(&mut Vec<u8>, &mut Value)>, &str)> = vec![
        ("flip", Box::new(|b: &mut Vec<u8>, _: &mut Value| b[1000] ^= 1), "HMAC"),
        ("truncate", Box::new(|b: &mut Vec<u8>, _: &mut Value| b.truncate(b.len() - 1)), "HMAC"),
        (
            "no pubopts",
            Box::new(|_: &mut Vec<u8>, d: &mut Value| {
                d["annotations"].as_object_mut().unwrap().remove("org.opencontainers.image.enc.pubopts");
            }),
            "org.opencontainers.image.enc.pubopts",
        ),
        (
            "bad jwe",
            Box::new(|_: &mut Vec<u8>, d: &mut Value| {
                d["annotations"]["org.opencontainers.image.enc.keys.jwe"] = "e30=".into()
            }),
            "JWE",
        ),
    ];
    for (name, edit, why) in cases {
        let copy = dir.join(format!("t-{}", name.replace(' ', "-")));
        run(Command::new("cp").arg("-a").arg(&enc).arg(&copy));
        tamper(&copy, "v1", 0, edit);
        let image = open(&copy, "v1");
        let out = dir.join(format!("out-{}", name.replace(' ', "-")));
        let err = decrypt(&image, &out, &[key.clone()]).unwrap_err();
        assert!(err.to_string().contains(why), "{name}: {err}");
        assert!(!common::blob_path(&out, &plain_digest).exists(), "{name}: a decrypted blob was kept");
        assert!(leftovers(&out).is_empty(), "{name}: {:?}", leftovers(&out));
        let err =
            image.unpack_with_keys(&dir.join(format!("root-{}", name.replace(' ', "-"))), &[key.clone()]).unwrap_err();
        assert!(err.to_string().contains(why), "{name}: {err}");
    }
}

#[test]
fn a_compression_bomb_inside_an_encrypted_layer_stops_at_the_limit() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // 64 MiB of zeros: a gzip of about 64 KiB.
    let bomb = layer_tar(&[E::File("zeros", &vec![0u8; 64 << 20], 0o644)]);
    let plain = LocalImage::open(&write_image(&dir.join("plain"), "v1", &[(bomb, Compression::Gzip)])).unwrap();
    let (key, recipient) = fresh_key();
    let enc = dir.join("enc");
    encrypt(&plain, &enc, &[recipient], &[]).unwrap();
    let image = open(&enc, "v1").with_unpack_limit(8 << 20);
    let err = image.unpack_with_keys(&dir.join("root"), &[key]).unwrap_err();
    assert!(err.to_string().contains("compression bomb"), "{err}");
}

#[test]
fn duplicated_annotations_in_an_encrypted_manifest_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let plain = LocalImage::open(&plain_image(dir)).unwrap();
    let (_, recipient) = fresh_key();
    let enc = dir.join("enc");
    let t = encrypt(&plain, &enc, &[recipient], &[]).unwrap();
    // The manifest text with the pubopts annotation written twice.
    let path = common::blob_path(&enc, &t.manifest_digest);
    let text = fs::read_to_string(&path).unwrap();
    let dup = text.replacen(
        "\"org.opencontainers.image.enc.pubopts\"",
        "\"org.opencontainers.image.enc.pubopts\":\"e30=\",\"org.opencontainers.image.enc.pubopts\"",
        1,
    );
    let w = LayoutWriter::create(&enc).unwrap();
    let desc = w.write_blob("application/vnd.oci.image.manifest.v1+json", dup.as_bytes()).unwrap();
    let mut w = LayoutWriter::create(&enc).unwrap();
    w.tag(desc, "dup").unwrap();
    let err = LocalImage::open(&ImageReference::OciLayout { path: enc, tag: Some("dup".into()) }).unwrap_err();
    assert!(err.to_string().contains("appears twice"), "{err}");
}
