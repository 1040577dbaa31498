//! Feeds arbitrary bytes to the CDI spec parser as YAML and as JSON, the
//! qualified-name parser and the driver's `information` parser: none may
//! panic, overflow the stack or hang. Resolving a parsed spec's device nodes
//! is left out: it stats host paths the input names.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for json in [false, true] {
        if let Ok(spec) = sealpod_cdi::Spec::parse(data, json) {
            // What a valid spec yields is checked again without a panic.
            assert!(spec.validate().is_ok());
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = sealpod_cdi::parse_qualified(text);
        let _ = sealpod_cdi::nvidia::parse_information(text);
    }
});
