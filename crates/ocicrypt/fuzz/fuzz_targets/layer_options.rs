//! The private and public layer options and the annotation parser.
#![no_main]

use std::collections::HashMap;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = sealpod_ocicrypt::PrivateOptions::from_json(data);
    let _ = sealpod_ocicrypt::PublicOptions::from_json(data);
    let _ = sealpod_ocicrypt::layer::duplicate_json_key(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let (jwe, pubopts) = text.split_once('\n').unwrap_or((text, ""));
        let annotations: HashMap<String, String> = [
            (sealpod_ocicrypt::layer::ANNOTATION_JWE.to_owned(), jwe.to_owned()),
            (sealpod_ocicrypt::layer::ANNOTATION_PUBOPTS.to_owned(), pubopts.to_owned()),
        ]
        .into();
        let _ = sealpod_ocicrypt::layer::unwrap_layer(&annotations, &[sealpod_ocicrypt::PrivateKey::generate_p256()]);
        let _ = sealpod_ocicrypt::layer::decrypted_media_type(text);
    }
});
