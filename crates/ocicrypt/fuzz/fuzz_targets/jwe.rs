//! The JWE parser (Flattened and General JSON) with a fixed P-256 and a
//! fixed RSA key: any input is refused with an error or opened, never a
//! panic; a real JWE for the key, mutated, is in the corpus' reach because
//! the first input byte chooses whether the rest is wrapped in one.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use sealpod_ocicrypt::keys::{PrivateKey, Recipient};

fn keys() -> &'static (Vec<PrivateKey>, String) {
    static KEYS: OnceLock<(Vec<PrivateKey>, String)> = OnceLock::new();
    KEYS.get_or_init(|| {
        let ec = PrivateKey::generate_p256();
        let r = Recipient::to(ec.public_key());
        let sample = sealpod_ocicrypt::jwe::seal(b"{\"symkey\":\"\"}", &[r]).unwrap();
        (vec![ec], sample)
    })
}

fuzz_target!(|data: &[u8]| {
    let (keys, sample) = keys();
    let _ = sealpod_ocicrypt::jwe::open(data, keys);
    // The same bytes spliced into a real JWE's fields.
    if let Ok(text) = std::str::from_utf8(data) {
        let spliced = sample.replacen("\"iv\":\"", &format!("\"iv\":\"{text}"), 1);
        let _ = sealpod_ocicrypt::jwe::open(spliced.as_bytes(), keys);
    }
});
