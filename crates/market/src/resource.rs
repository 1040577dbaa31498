//! The billable resources: the one list the offer, the meter and the bill share.

use crate::MarketError;

/// Something a pod is billed for. Adding a variant here forces a price for it
/// (a [`crate::PriceList`] without one does not parse) and a meter for it
/// ([`crate::Meter`] matches exhaustively).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Resource {
    /// CPU reserved, per core-second.
    Cpu,
    /// Memory reserved, per GiB-second.
    Memory,
    /// GPUs reserved, per device-second.
    Gpu,
    /// External IP addresses reserved, per address-second.
    ExternalIp,
    /// CPU time used (user + system, from the pod's cgroup), per core-second.
    CpuTime,
}

impl Resource {
    pub const ALL: [Resource; 5] =
        [Resource::Cpu, Resource::Memory, Resource::Gpu, Resource::ExternalIp, Resource::CpuTime];

    /// The name on the wire and in config files.
    pub fn name(self) -> &'static str {
        match self {
            Resource::Cpu => "cpu",
            Resource::Memory => "memory",
            Resource::Gpu => "gpu",
            Resource::ExternalIp => "external-ip",
            Resource::CpuTime => "cpu-time",
        }
    }

    /// What one priced unit is.
    pub fn unit(self) -> &'static str {
        match self {
            Resource::Cpu => "core-second reserved",
            Resource::Memory => "GiB-second reserved",
            Resource::Gpu => "device-second reserved",
            Resource::ExternalIp => "address-second reserved",
            Resource::CpuTime => "core-second used",
        }
    }

    /// How many of the meter's base quantities make one priced unit: the meter
    /// counts millicore-milliseconds, byte-milliseconds, device-milliseconds,
    /// address-milliseconds and CPU microseconds.
    pub fn scale(self) -> u128 {
        match self {
            Resource::Cpu => 1_000 * 1_000,
            Resource::Memory => (1u128 << 30) * 1_000,
            Resource::Gpu | Resource::ExternalIp => 1_000,
            Resource::CpuTime => 1_000_000,
        }
    }

    pub fn index(self) -> usize {
        Resource::ALL.iter().position(|r| *r == self).expect("in ALL")
    }

    /// Parses a name, with a hint for the names other systems use.
    pub fn parse(name: &str) -> Result<Resource, MarketError> {
        if let Some(r) = Resource::ALL.iter().find(|r| r.name() == name) {
            return Ok(*r);
        }
        let hint = match name.to_ascii_lowercase().as_str() {
            "ram" | "mem" | "memory-gib" => " (did you mean \"memory\"?)",
            "cpus" | "cores" | "vcpu" | "millicores" => " (did you mean \"cpu\"?)",
            "gpus" => " (did you mean \"gpu\"?)",
            "ip" | "ips" | "external-ips" | "external_ip" => " (did you mean \"external-ip\"?)",
            "cpu_time" | "cputime" | "usage" => " (did you mean \"cpu-time\"?)",
            _ => "",
        };
        Err(MarketError::UnknownResource { name: name.to_owned(), hint: hint.to_owned() })
    }
}

impl std::fmt::Display for Resource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// `q / scale` as a decimal with up to six fractional digits (truncated).
pub fn decimal(q: u128, scale: u128) -> String {
    let whole = q / scale;
    let frac = ((q % scale) * 1_000_000) / scale;
    if frac == 0 {
        whole.to_string()
    } else {
        let s = format!("{whole}.{frac:06}");
        s.trim_end_matches('0').to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_other_systems_names_get_a_hint() {
        for r in Resource::ALL {
            assert_eq!(Resource::parse(r.name()).unwrap(), r);
            assert_eq!(Resource::ALL[r.index()], r);
        }
        let e = Resource::parse("ram").unwrap_err().to_string();
        assert!(e.contains("did you mean \"memory\""), "{e}");
        assert!(Resource::parse("bandwidth").is_err());
    }

    #[test]
    fn decimals_are_truncated_to_micro_units() {
        assert_eq!(decimal(1_500_000, 1_000_000), "1.5");
        assert_eq!(decimal(3_000_000, 1_000_000), "3");
        assert_eq!(decimal(1, 1_000_000), "0.000001");
        assert_eq!(decimal(1, 10_000_000), "0");
    }
}
