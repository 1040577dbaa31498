//! Key files: PEM, DER and JWK, public and private.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = sealpod_ocicrypt::parse_public_key(data);
    let _ = sealpod_ocicrypt::parse_private_key(data);
});
