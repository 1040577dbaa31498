// Shared by the targets: split the input into a report and collateral, and
// verify it the way a publisher does, at a fixed time.
use std::time::{Duration, SystemTime};

use sealpod_attest::{verify, Evidence, Expectation, Kind, Policy, Roots};

pub fn check(kind: Kind, data: &[u8]) {
    if data.len() < 2 {
        return;
    }
    let split = (u16::from_le_bytes([data[0], data[1]]) as usize).min(data.len() - 2);
    let (report, rest) = data[2..].split_at(split);
    let collateral = if rest.is_empty() { vec![] } else { rest.split(|b| *b == 0xff).map(<[u8]>::to_vec).collect() };
    let evidence = Evidence { kind, report: report.to_vec(), collateral };
    let mut policy = Policy::default();
    policy.accept.push(Kind::Sgx);
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_751_328_000);
    let expect = Expectation { report_data: None, provider_public_key: None, now, allow_insecure_dev: false };
    let _ = verify(&evidence, &expect, &policy, &Roots::pinned());
}
