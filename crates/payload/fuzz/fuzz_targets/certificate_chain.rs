//! Feeds arbitrary bytes to the certificate reader and the chain builder, as
//! the certificate sent and as the keystore at once, so that chains of
//! fuzzer-made certificates are walked: nothing may panic or loop.

#![no_main]

use std::time::{Duration, SystemTime};

use libfuzzer_sys::fuzz_target;
use sealpod_payload::{split_certificates, verify_signature, CertificateInfo, Keystore};

fuzz_target!(|data: &[u8]| {
    let _ = CertificateInfo::from_der(data);
    let _ = split_certificates(data);
    if let Ok(keystore) = Keystore::from_certificates(data) {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_750_000_000);
        for signature in [&[0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01][..], &[7u8; 64][..], &[1u8; 256][..]] {
            let _ = verify_signature(b"manifest", signature, "sha256", data, &keystore, now);
        }
    }
});
