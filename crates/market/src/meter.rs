//! Metering: reservations integrated over wall-clock time, and CPU time used.
//!
//! Integrating is what Apocryph did not do: it multiplied the number of
//! Prometheus samples by 60, so a missed scrape was free time and a doubled
//! one was billed twice. Here every advance adds `reserved × elapsed ms`
//! exactly, whenever it runs, and a pause (a suspended pod) stops the clock.

use serde::{Deserialize, Serialize};

use crate::Resource;

/// What a pod holds while it runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    pub cpu_millicores: u64,
    pub memory_bytes: u64,
    pub gpus: u64,
    pub external_ips: u64,
}

impl Reservation {
    /// What a request for `resources` reserves (external IPs are not yet
    /// reservable, so none).
    pub fn of_resources(r: &sealpod_proto::Resources) -> Reservation {
        Reservation {
            cpu_millicores: r.cpu_millicores,
            memory_bytes: r.memory_bytes,
            gpus: r.gpus as u64,
            external_ips: 0,
        }
    }

    /// What a wire pod reserves: the sum over its containers.
    pub fn of_pod(pod: &sealpod_proto::Pod) -> Reservation {
        Reservation::of_resources(&sealpod_proto::total_resources(pod))
    }

    /// Base quantity per millisecond reserved (see [`Resource::scale`]); 0 for
    /// what is measured rather than reserved.
    pub fn per_ms(&self, r: Resource) -> u128 {
        match r {
            Resource::Cpu => self.cpu_millicores as u128,
            Resource::Memory => self.memory_bytes as u128,
            Resource::Gpu => self.gpus as u128,
            Resource::ExternalIp => self.external_ips as u128,
            Resource::CpuTime => 0,
        }
    }

    /// The most used-resource base quantity one millisecond can add: all
    /// reserved cores busy. Used to size a prepayment.
    pub fn max_used_per_ms(&self, r: Resource) -> u128 {
        match r {
            // millicores × 1 ms = µs of CPU time.
            Resource::CpuTime => self.cpu_millicores as u128,
            _ => 0,
        }
    }
}

/// Counters read from a pod's cgroups.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Cumulative CPU time (user + system) of all the pod's processes.
    pub cpu_usec: u64,
    /// The highest memory use seen.
    pub peak_memory_bytes: u64,
}

/// One pod's meter; persisted by the provider after every advance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meter {
    pub reservation: Reservation,
    /// Base quantities so far, indexed by [`Resource::index`].
    quantities: Vec<u128>,
    /// Unix milliseconds of the last advance.
    pub last_ms: u64,
    /// Milliseconds metered while running.
    pub metered_ms: u64,
    pub running: bool,
    /// The cgroup's CPU counter at the last advance (it starts again from 0
    /// when the cgroup is recreated).
    last_cpu_usec: u64,
    pub usage: Usage,
}

impl Meter {
    /// A running meter from `now_ms`.
    pub fn start(reservation: Reservation, now_ms: u64) -> Meter {
        Meter {
            reservation,
            quantities: vec![0; Resource::ALL.len()],
            last_ms: now_ms,
            metered_ms: 0,
            running: true,
            last_cpu_usec: 0,
            usage: Usage::default(),
        }
    }

    /// Adds what was reserved since the last advance (if running) and the CPU
    /// time used since the last reading. A clock that went backwards adds
    /// nothing.
    pub fn advance(&mut self, now_ms: u64, reading: Option<Usage>) {
        let elapsed = now_ms.saturating_sub(self.last_ms);
        if self.running && elapsed > 0 {
            for r in Resource::ALL {
                let q = &mut self.quantities[r.index()];
                *q = q.saturating_add(self.reservation.per_ms(r).saturating_mul(elapsed as u128));
            }
            self.metered_ms = self.metered_ms.saturating_add(elapsed);
        }
        self.last_ms = self.last_ms.max(now_ms);
        if let Some(u) = reading {
            let used = if u.cpu_usec >= self.last_cpu_usec { u.cpu_usec - self.last_cpu_usec } else { u.cpu_usec };
            self.last_cpu_usec = u.cpu_usec;
            // A paused (suspended) pod is billed nothing: whatever CPU its
            // processes used was read when it was paused.
            let used = if self.running { used } else { 0 };
            let q = &mut self.quantities[Resource::CpuTime.index()];
            *q = q.saturating_add(used as u128);
            self.usage.cpu_usec = self.usage.cpu_usec.saturating_add(used);
            self.usage.peak_memory_bytes = self.usage.peak_memory_bytes.max(u.peak_memory_bytes);
        }
    }

    /// Stops the clock (a suspended pod costs nothing).
    pub fn pause(&mut self, now_ms: u64, reading: Option<Usage>) {
        self.advance(now_ms, reading);
        self.running = false;
    }

    /// Starts the clock again from `now_ms`.
    pub fn resume(&mut self, now_ms: u64) {
        self.last_ms = self.last_ms.max(now_ms);
        self.running = true;
    }

    /// The base quantity of `r` so far.
    pub fn quantity(&self, r: Resource) -> u128 {
        self.quantities.get(r.index()).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res() -> Reservation {
        Reservation { cpu_millicores: 500, memory_bytes: 1 << 30, gpus: 1, external_ips: 0 }
    }

    #[test]
    fn reservations_integrate_over_wall_clock_time_however_often_it_is_read() {
        let mut once = Meter::start(res(), 1_000);
        once.advance(61_000, None);
        let mut often = Meter::start(res(), 1_000);
        for t in (1_000..=61_000).step_by(7_919) {
            often.advance(t, None);
        }
        often.advance(61_000, None);
        assert_eq!(once, often);
        assert_eq!(once.quantity(Resource::Cpu), 500 * 60_000);
        assert_eq!(once.quantity(Resource::Memory), (1u128 << 30) * 60_000);
        assert_eq!(once.quantity(Resource::Gpu), 60_000);
        assert_eq!(once.metered_ms, 60_000);
    }

    #[test]
    fn a_paused_meter_bills_no_cpu_time_read_after_the_pause() {
        let mut m = Meter::start(res(), 0);
        m.advance(1_000, Some(Usage { cpu_usec: 100, peak_memory_bytes: 0 }));
        m.pause(2_000, Some(Usage { cpu_usec: 300, peak_memory_bytes: 0 }));
        let at_pause = m.quantity(Resource::CpuTime);
        assert_eq!(at_pause, 300);
        m.advance(3_000, Some(Usage { cpu_usec: 301, peak_memory_bytes: 0 }));
        assert_eq!(m.quantity(Resource::CpuTime), at_pause);
        m.resume(4_000);
        m.advance(5_000, Some(Usage { cpu_usec: 351, peak_memory_bytes: 0 }));
        assert_eq!(m.quantity(Resource::CpuTime), at_pause + 50);
    }

    #[test]
    fn a_paused_meter_adds_nothing_and_a_backwards_clock_adds_nothing() {
        let mut m = Meter::start(res(), 0);
        m.advance(10_000, None);
        m.pause(20_000, None);
        m.advance(90_000, None);
        m.advance(50_000, None);
        assert_eq!(m.metered_ms, 20_000);
        m.resume(100_000);
        m.advance(101_000, None);
        assert_eq!(m.metered_ms, 21_000);
        assert_eq!(m.quantity(Resource::Cpu), 500 * 21_000);
    }

    #[test]
    fn cpu_time_counts_deltas_and_survives_a_counter_reset() {
        let mut m = Meter::start(res(), 0);
        m.advance(1, Some(Usage { cpu_usec: 400, peak_memory_bytes: 10 }));
        m.advance(2, Some(Usage { cpu_usec: 1_000, peak_memory_bytes: 30 }));
        // The cgroup was recreated: its counter starts again.
        m.advance(3, Some(Usage { cpu_usec: 50, peak_memory_bytes: 20 }));
        assert_eq!(m.quantity(Resource::CpuTime), 1_050);
        assert_eq!(m.usage, Usage { cpu_usec: 1_050, peak_memory_bytes: 30 });
    }
}
