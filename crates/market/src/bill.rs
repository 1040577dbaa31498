//! The cumulative bill: the meter's quantities times the offer's prices.

use alloy::primitives::U256;

use crate::resource::decimal;
use crate::{Meter, PriceList, Reservation, Resource};

/// Everything a pod has cost since it started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bill {
    pub lines: Vec<BillLine>,
    pub total: U256,
}

/// One resource's share. `amount = floor(quantity × unit_price / scale)`, so
/// anyone with the meter's numbers and the offer can check it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BillLine {
    pub resource: Resource,
    /// In the meter's base units.
    pub quantity: u128,
    pub unit_price: U256,
    pub amount: U256,
}

impl Bill {
    pub fn of(meter: &Meter, prices: &PriceList) -> Bill {
        let mut total = U256::ZERO;
        let lines = Resource::ALL
            .iter()
            .map(|&r| {
                let quantity = meter.quantity(r);
                let unit_price = prices.get(r);
                let amount = U256::from(quantity).saturating_mul(unit_price) / U256::from(r.scale());
                total = total.saturating_add(amount);
                BillLine { resource: r, quantity, unit_price, amount }
            })
            .collect();
        Bill { lines, total }
    }

    pub fn to_proto(&self) -> Vec<sealpod_proto::BillLine> {
        self.lines
            .iter()
            .map(|l| sealpod_proto::BillLine {
                resource: l.resource.name().to_owned(),
                quantity: decimal(l.quantity, l.resource.scale()),
                unit_price: l.unit_price.to_string(),
                amount: l.amount.to_string(),
            })
            .collect()
    }
}

/// Token units per second a reservation costs while it runs; with
/// `worst_case`, also its CPU time with every reserved core busy.
pub fn rate_per_second(reservation: &Reservation, prices: &PriceList, worst_case: bool) -> U256 {
    Resource::ALL.iter().fold(U256::ZERO, |acc, &r| {
        let mut per_ms = reservation.per_ms(r);
        if worst_case {
            per_ms += reservation.max_used_per_ms(r);
        }
        // Per second, rounded up, so a prepayment never falls a unit short.
        let num = U256::from(per_ms * 1_000).saturating_mul(prices.get(r));
        let scale = U256::from(r.scale());
        acc.saturating_add(num.div_ceil(scale))
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::Usage;

    fn prices(cpu: u64, memory: u64, gpu: u64, ip: u64, cpu_time: u64) -> PriceList {
        let m: BTreeMap<String, String> =
            [("cpu", cpu), ("memory", memory), ("gpu", gpu), ("external-ip", ip), ("cpu-time", cpu_time)]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_string()))
                .collect();
        PriceList::from_map(&m).unwrap()
    }

    #[test]
    fn every_metered_resource_is_priced_and_billed() {
        // The guard against Apocryph's "memory"/"ram" split: a meter that has
        // counted some of everything yields a non-zero line for every resource,
        // each from its own price.
        let res = Reservation { cpu_millicores: 1500, memory_bytes: 3 << 30, gpus: 2, external_ips: 1 };
        let mut m = Meter::start(res, 0);
        m.advance(10_000, Some(Usage { cpu_usec: 4_000_000, peak_memory_bytes: 1 }));
        for r in Resource::ALL {
            assert!(m.quantity(r) > 0, "{r} was not metered");
        }
        let p = prices(1_000, 2_000, 3_000, 4_000, 5_000);
        let bill = Bill::of(&m, &p);
        assert_eq!(bill.lines.len(), Resource::ALL.len());
        let amount = |r: Resource| bill.lines.iter().find(|l| l.resource == r).unwrap().amount;
        assert_eq!(amount(Resource::Cpu), U256::from(1_000u64 * 15)); // 1.5 cores × 10 s
        assert_eq!(amount(Resource::Memory), U256::from(2_000u64 * 30)); // 3 GiB × 10 s
        assert_eq!(amount(Resource::Gpu), U256::from(3_000u64 * 20));
        assert_eq!(amount(Resource::ExternalIp), U256::from(4_000u64 * 10));
        assert_eq!(amount(Resource::CpuTime), U256::from(5_000u64 * 4));
        assert_eq!(bill.total, U256::from(15_000u64 + 60_000 + 60_000 + 40_000 + 20_000));
        for r in Resource::ALL {
            let mut zero = Resource::ALL.map(|_| 1_000u64);
            zero[r.index()] = 0;
            let without = Bill::of(&m, &prices(zero[0], zero[1], zero[2], zero[3], zero[4]));
            assert!(without.total < Bill::of(&m, &prices(1_000, 1_000, 1_000, 1_000, 1_000)).total, "{r}");
        }
    }

    #[test]
    fn the_rate_covers_what_a_second_bills() {
        let res = Reservation { cpu_millicores: 250, memory_bytes: 512 << 20, gpus: 0, external_ips: 0 };
        let p = prices(1_000_003, 777_777, 9, 9, 123_457);
        let mut m = Meter::start(res, 0);
        m.advance(1_000, Some(Usage { cpu_usec: 250_000, peak_memory_bytes: 0 }));
        let billed = Bill::of(&m, &p).total;
        assert!(rate_per_second(&res, &p, true) >= billed);
        assert!(rate_per_second(&res, &p, false) <= billed + U256::from(2));
    }
}
