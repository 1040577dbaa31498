//! Hostile DCAP collateral JSON must give an error, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = sealpod_attest::tdx::parse_collateral(data);
});
