//! Hostile NVIDIA GPU attestation reports and certificate chains (PEM or
//! DER) must give an error, never a panic.
#![no_main]
use std::time::{Duration, SystemTime};

use libfuzzer_sys::fuzz_target;
use sealpod_attest::nvidia::{parse_cert_chain, parse_report, verify_gpu_report, GpuPolicy};

fuzz_target!(|data: &[u8]| {
    let _ = parse_report(data);
    let _ = parse_cert_chain(data);
    if data.len() < 2 {
        return;
    }
    // Split into a report and a chain, as common.rs does for the CPU kinds.
    let split = (u16::from_le_bytes([data[0], data[1]]) as usize).min(data.len() - 2);
    let (report, chain) = data[2..].split_at(split);
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_751_328_000);
    let _ = verify_gpu_report(report, chain, &[0; 32], now, &GpuPolicy::default());
});
