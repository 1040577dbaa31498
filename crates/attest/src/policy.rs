//! The publisher's attestation policy: which TEEs, which measurements, which
//! TCB, how old the collateral may be. A TOML file the publisher keeps
//! (default `$SEALPOD_HOME/attestation-policy.toml`).
//!
//! Every list of reference values means "one of these"; an empty list means
//! "any", and the verified claims carry a note saying so, so a publisher sees
//! exactly what it did not pin.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::{AttestError, Kind};

/// The policy. `Policy::default()` is what a publisher without a policy file
/// gets: TDX and SNP accepted, debug forbidden, TDX TCB `UpToDate` only,
/// collateral at most 30 days old, SNP at VMPL 0; no measurement pinned.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    /// TEE kinds accepted. The insecure dev kind is never accepted here, only
    /// by the publisher's explicit `--allow-insecure-dev`.
    pub accept: Vec<Kind>,
    /// Accept evidence from a debuggable TD, enclave or guest. Never in production.
    pub allow_debug: bool,
    /// Attest before every deploy, not only those that carry a secret.
    pub require_attestation: bool,
    /// Intel TDX rules.
    pub tdx: TdxPolicy,
    /// Intel SGX rules.
    pub sgx: SgxPolicy,
    /// AMD SEV-SNP rules.
    pub snp: SnpPolicy,
    /// NVIDIA GPU rules.
    pub gpu: GpuRules,
}

/// What the publisher asks of a provider's GPUs.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct GpuRules {
    /// Refuse a provider that sends no GPU evidence (a pod asking for GPUs
    /// then runs only on attested ones).
    pub require: bool,
    /// Reference measurements by SPDM block index ("1" = "hex…"); every one
    /// listed must be present and equal in each GPU's report.
    pub measurements: std::collections::BTreeMap<String, String>,
}

impl GpuRules {
    /// The reference values as the verifier takes them.
    pub fn to_policy(&self) -> Result<crate::nvidia::GpuPolicy, String> {
        let mut measurements = std::collections::BTreeMap::new();
        for (index, value) in &self.measurements {
            let i: u8 =
                index.parse().map_err(|_| format!("gpu.measurements: {index:?} is not a block index (0-255)"))?;
            let v = hex::decode(value.trim_start_matches("0x"))
                .map_err(|e| format!("gpu.measurements.{index}: not hex: {e}"))?;
            measurements.insert(i, v);
        }
        Ok(crate::nvidia::GpuPolicy { measurements })
    }
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            accept: vec![Kind::Tdx, Kind::Snp],
            allow_debug: false,
            require_attestation: false,
            tdx: TdxPolicy::default(),
            sgx: SgxPolicy::default(),
            snp: SnpPolicy::default(),
            gpu: GpuRules::default(),
        }
    }
}

/// DCAP collateral and TCB rules shared by TDX and SGX.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DcapRules {
    /// TCB statuses accepted (Intel's names: `UpToDate`, `SWHardeningNeeded`,
    /// `ConfigurationNeeded`, `ConfigurationAndSWHardeningNeeded`,
    /// `OutOfDate`, `OutOfDateConfigurationNeeded`, `TDRelaunchAdvised`...).
    /// `Revoked` is refused whatever this says.
    pub accepted_tcb_status: Vec<String>,
    /// Advisory ids (e.g. `INTEL-SA-00615`) refused even when the status is accepted.
    pub rejected_advisories: Vec<String>,
    /// The oldest TCB evaluation data number accepted (0: any). Raising it
    /// refuses collateral from before an Intel TCB recovery.
    pub min_tcb_eval_data_number: u32,
    /// Most days since the TCB info and QE identity were issued.
    pub max_collateral_age_days: u64,
    /// Accepted platform identities (PPID, hex); empty: any. The answer to
    /// relay attacks for publishers who know their provider's machines.
    pub ppids: Vec<String>,
}

impl Default for DcapRules {
    fn default() -> DcapRules {
        DcapRules {
            accepted_tcb_status: vec!["UpToDate".into()],
            rejected_advisories: Vec::new(),
            min_tcb_eval_data_number: 0,
            max_collateral_age_days: 30,
            ppids: Vec::new(),
        }
    }
}

/// Reference values for TDX: each one of the listed hex values, or any.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TdxPolicy {
    /// The TD's initial measurement.
    pub mr_td: Vec<String>,
    /// Runtime measurement register 0 (firmware).
    pub rtmr0: Vec<String>,
    /// RTMR1 (kernel).
    pub rtmr1: Vec<String>,
    /// RTMR2 (kernel command line, initrd).
    pub rtmr2: Vec<String>,
    /// RTMR3 (runtime).
    pub rtmr3: Vec<String>,
    /// The TDX module's measurement.
    pub mr_seam: Vec<String>,
    /// The TD's extended features (8 bytes).
    pub xfam: Vec<String>,
    /// The TD's attributes (8 bytes).
    pub td_attributes: Vec<String>,
    /// Collateral and TCB.
    #[serde(flatten)]
    pub dcap: DcapRules,
}

/// Reference values for SGX enclaves.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SgxPolicy {
    /// The enclave's measurement.
    pub mr_enclave: Vec<String>,
    /// The enclave signer's key hash.
    pub mr_signer: Vec<String>,
    /// Collateral and TCB.
    #[serde(flatten)]
    pub dcap: DcapRules,
}

/// Reference values and minimums for SEV-SNP.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SnpPolicy {
    /// The launch measurement.
    pub measurement: Vec<String>,
    /// Data the host supplied at launch (32 bytes).
    pub host_data: Vec<String>,
    /// The guest's family id (16 bytes).
    pub family_id: Vec<String>,
    /// The guest's image id (16 bytes).
    pub image_id: Vec<String>,
    /// Highest VMPL accepted (0 is the most privileged level, where the
    /// guest kernel runs without an SVSM).
    pub max_vmpl: u32,
    /// Accept a guest whose policy allows a migration agent.
    pub allow_migrate_ma: bool,
    /// Minimum TCB, component by component, compared with both the
    /// reported and the committed TCB.
    pub min_tcb: SnpTcb,
    /// Accepted chip ids (64 bytes, hex); empty: any. Pins physical machines:
    /// the answer to relay attacks.
    pub chip_ids: Vec<String>,
    /// Accept reports signed by a VLEK (cloud provider key) as well as a VCEK.
    pub allow_vlek: bool,
}

impl Default for SnpPolicy {
    fn default() -> SnpPolicy {
        SnpPolicy {
            measurement: Vec::new(),
            host_data: Vec::new(),
            family_id: Vec::new(),
            image_id: Vec::new(),
            max_vmpl: 0,
            allow_migrate_ma: false,
            min_tcb: SnpTcb::default(),
            chip_ids: Vec::new(),
            allow_vlek: true,
        }
    }
}

/// SEV-SNP TCB components (security patch levels).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct SnpTcb {
    /// PSP bootloader SPL.
    pub bootloader: u8,
    /// PSP OS (TEE) SPL.
    pub tee: u8,
    /// SNP firmware SPL.
    pub snp: u8,
    /// Microcode SPL.
    pub microcode: u8,
    /// FMC SPL (Turin and later).
    pub fmc: u8,
}

/// Largest policy file read.
const MAX_POLICY_BYTES: u64 = 1 << 20;

impl Policy {
    /// Parses a policy from TOML.
    pub fn from_toml(text: &str) -> Result<Policy, String> {
        let policy: Policy = toml::from_str(text).map_err(|e| e.to_string())?;
        policy.validate()?;
        Ok(policy)
    }

    /// Reads a policy file.
    pub fn load(path: &Path) -> Result<Policy, String> {
        let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
        if meta.len() > MAX_POLICY_BYTES {
            return Err(format!("{}: larger than {MAX_POLICY_BYTES} bytes", path.display()));
        }
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Policy::from_toml(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The file at `path` if it exists, else the default policy.
    pub fn load_or_default(path: &Path) -> Result<Policy, String> {
        if path.exists() {
            Policy::load(path)
        } else {
            Ok(Policy::default())
        }
    }

    /// The policy as TOML, for `sealpod attest policy` and documentation.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_default()
    }

    fn validate(&self) -> Result<(), String> {
        self.gpu.to_policy()?;
        if self.accept.contains(&Kind::InsecureDev) {
            return Err("accept: insecure-dev cannot be accepted by a policy file; it takes the publisher's \
                        explicit --allow-insecure-dev"
                .into());
        }
        let hex_lists: [(&str, &[String], usize); 17] = [
            ("tdx.mr_td", &self.tdx.mr_td, 48),
            ("tdx.rtmr0", &self.tdx.rtmr0, 48),
            ("tdx.rtmr1", &self.tdx.rtmr1, 48),
            ("tdx.rtmr2", &self.tdx.rtmr2, 48),
            ("tdx.rtmr3", &self.tdx.rtmr3, 48),
            ("tdx.mr_seam", &self.tdx.mr_seam, 48),
            ("tdx.xfam", &self.tdx.xfam, 8),
            ("tdx.td_attributes", &self.tdx.td_attributes, 8),
            ("tdx.ppids", &self.tdx.dcap.ppids, 16),
            ("sgx.mr_enclave", &self.sgx.mr_enclave, 32),
            ("sgx.mr_signer", &self.sgx.mr_signer, 32),
            ("sgx.ppids", &self.sgx.dcap.ppids, 16),
            ("snp.measurement", &self.snp.measurement, 48),
            ("snp.host_data", &self.snp.host_data, 32),
            ("snp.family_id", &self.snp.family_id, 16),
            ("snp.image_id", &self.snp.image_id, 16),
            ("snp.chip_ids", &self.snp.chip_ids, 64),
        ];
        for (rule, values, len) in hex_lists {
            for v in values {
                match hex::decode(v.trim()) {
                    Ok(b) if b.len() == len => {}
                    Ok(b) => return Err(format!("{rule}: {v:?} is {} bytes, expected {len}", b.len())),
                    Err(e) => return Err(format!("{rule}: {v:?} is not hex: {e}")),
                }
            }
        }
        for (rule, statuses) in [
            ("tdx.accepted_tcb_status", &self.tdx.dcap.accepted_tcb_status),
            ("sgx.accepted_tcb_status", &self.sgx.dcap.accepted_tcb_status),
        ] {
            for s in statuses {
                let parsed: Result<dcap_qvl::TcbStatus, _> =
                    serde_json::from_value(serde_json::Value::String(s.clone()));
                match parsed {
                    Ok(dcap_qvl::TcbStatus::Revoked) => {
                        return Err(format!("{rule}: Revoked can never be accepted"));
                    }
                    Ok(_) => {}
                    Err(_) => return Err(format!("{rule}: unknown TCB status {s:?}")),
                }
            }
        }
        Ok(())
    }
}

/// Checks that none of the collateral is older than the policy allows.
pub(crate) fn check_age(rule: &str, issued_unix: u64, now_unix: u64, max_days: u64) -> Result<(), AttestError> {
    let age = now_unix.saturating_sub(issued_unix);
    if age > max_days.saturating_mul(86_400) {
        return Err(AttestError::policy(
            rule,
            format!(
                "issued {} ({} days before {})",
                crate::rfc3339(issued_unix),
                age / 86_400,
                crate::rfc3339(now_unix)
            ),
            format!("at most {max_days} days old"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_policy_round_trips_through_toml() {
        let p = Policy::default();
        assert_eq!(Policy::from_toml(&p.to_toml()).unwrap(), p);
    }

    #[test]
    fn refuses_insecure_dev_in_a_policy_file() {
        let err = Policy::from_toml("accept = [\"tdx\", \"insecure-dev\"]").unwrap_err();
        assert!(err.contains("--allow-insecure-dev"), "{err}");
    }

    #[test]
    fn refuses_reference_values_of_the_wrong_length() {
        let err = Policy::from_toml("[tdx]\nmr_td = [\"abcd\"]").unwrap_err();
        assert!(err.contains("tdx.mr_td") && err.contains("expected 48"), "{err}");
    }

    #[test]
    fn refuses_revoked_and_unknown_statuses() {
        assert!(Policy::from_toml("[tdx]\naccepted_tcb_status = [\"Revoked\"]").unwrap_err().contains("never"));
        assert!(Policy::from_toml("[sgx]\naccepted_tcb_status = [\"Fine\"]").unwrap_err().contains("unknown"));
    }

    #[test]
    fn refuses_unknown_fields() {
        assert!(Policy::from_toml("[tdx]\nmrtd = []").is_err());
    }

    #[test]
    fn partial_file_keeps_the_other_defaults() {
        let p = Policy::from_toml("[snp]\nmax_vmpl = 2\n").unwrap();
        assert_eq!(p.snp.max_vmpl, 2);
        assert_eq!(p.tdx.dcap.accepted_tcb_status, vec!["UpToDate".to_string()]);
        assert_eq!(p.accept, vec![Kind::Tdx, Kind::Snp]);
    }
}
