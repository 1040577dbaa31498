//! A provider's market file (YAML or JSON).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = sealpod_market::MarketTerms::parse(text);
    }
});
