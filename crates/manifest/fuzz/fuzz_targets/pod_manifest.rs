//! Feeds arbitrary text to the pod manifest parser in both formats, and to the
//! quantity parsers: none of them may panic, overflow the stack or hang.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sealpod_manifest::{parse_bytes, parse_cpu, parse_pod_manifest, Format};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for format in [Format::Yaml, Format::Json] {
        // No base directory: secret files are refused, so the fuzzer never
        // reads the local file system.
        let _ = parse_pod_manifest(text, format, "fuzz", None);
    }
    let _ = parse_cpu(text);
    let _ = parse_bytes(text);
});
