//! Signed notes and checkpoints from arbitrary bytes: parsing and
//! verification must never panic, and whatever parses must print back to the
//! same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sealpod_tlog::{parse_verifier_key, Checkpoint, Ed25519Verifier, Note, VerifierSet};

const SPEC_VKEY: &str = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k";

fuzz_target!(|data: &[u8]| {
    let known = VerifierSet::new().with(Ed25519Verifier::from_vkey(SPEC_VKEY).unwrap()).unwrap();
    if let Ok(note) = Note::parse(data) {
        assert_eq!(note.to_bytes(), data, "a parsed note prints back to its bytes");
        let _ = note.verify(&known);
        if let Ok(c) = Checkpoint::parse(note.text()) {
            assert_eq!(c.to_text(), note.text(), "a parsed checkpoint prints back to its text");
        }
    }
    let _ = Checkpoint::open(data, "example.com/foo", &known);
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(c) = Checkpoint::parse(s) {
            assert_eq!(c.to_text(), s);
        }
        if let Ok(v) = parse_verifier_key(s) {
            let _ = v.verify(data, data);
        }
    }
});
