//! Hostile TDX and SGX quotes (with whatever collateral follows) must give an
//! error, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

mod common;

fuzz_target!(|data: &[u8]| {
    common::check(sealpod_attest::Kind::Tdx, data);
    common::check(sealpod_attest::Kind::Sgx, data);
});
