//! Hostile SNP reports, certificates and certificate tables (a configfs-tsm
//! `auxblob`) must give an error, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

mod common;

fuzz_target!(|data: &[u8]| {
    common::check(sealpod_attest::Kind::Snp, data);
    let _ = sealpod_attest::snp::certs_from_table(data);
    let _ = sealpod_attest::snp::parse_report(data);
});
