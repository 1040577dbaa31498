//! Whatever a peer answers during a log sync (a checkpoint note, a proof,
//! entries) must be judged without a panic, and must never move the mirror
//! to a checkpoint its key did not sign.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use sealpod_imagelog::{ImageLog, ImageLogConfig};
use sealpod_tlog::{Ed25519Signer, Hash};

struct Fixture {
    mirror: ImageLog,
    _dir: tempfile::TempDir,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let key = Ed25519Signer::generate("fuzz.test/log").unwrap();
        let mirror = ImageLog::open(ImageLogConfig {
            dir: dir.path().to_owned(),
            log_key: key.verifier().vkey(),
            signer: None,
            witnesses: Vec::new(),
            cosigner: None,
            witness_quorum: 0,
        })
        .unwrap();
        Fixture { mirror, _dir: dir }
    })
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    // Layout: u16 note length, note, u8 proof hashes, hashes, then entries
    // each as u16 length + bytes.
    let Some((len, rest)) = data.split_first_chunk::<2>() else { return };
    let len = usize::from(u16::from_be_bytes(*len)).min(rest.len());
    let (note, mut rest) = rest.split_at(len);
    let _ = f.mirror.examine(note, "fuzz");
    let _ = f.mirror.add_cosignatures(note);
    let Some((&n, r)) = rest.split_first() else { return };
    rest = r;
    let mut proof: Vec<Hash> = Vec::new();
    for _ in 0..n {
        let Some((h, r)) = rest.split_first_chunk::<32>() else { break };
        proof.push(*h);
        rest = r;
    }
    let mut entries = Vec::new();
    while let Some((len, r)) = rest.split_first_chunk::<2>() {
        let len = usize::from(u16::from_be_bytes(*len)).min(r.len());
        entries.push(r[..len].to_vec());
        rest = &r[len..];
    }
    let _ = f.mirror.extend(note, &proof, &entries, "fuzz");
    // No key signed anything here: the mirror must still be empty.
    assert_eq!(f.mirror.checkpoint().size, 0);
});
