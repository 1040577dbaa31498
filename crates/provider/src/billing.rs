//! Billing a pod paid through a channel: its account (meter, prices, best
//! voucher, what was claimed), the decisions taken at every tick (bill,
//! suspend after the grace period, delete after the retention time), and the
//! wire view. Chain calls and cgroups are the caller's: this module decides.
//!
//! What a lapse does, and why: past the grace period the pod is *suspended*,
//! its processes frozen (cgroup freezer), its volumes, rootfs and ports kept,
//! its meter stopped. A voucher that covers the bill thaws it, with nothing
//! lost. Past the retention time it is deleted like any pod. Akash's users
//! complained that exhausted deployments were closed outright; Golem's that
//! agreements died on a missed note. Here a late payment loses nothing until
//! the retention time is over.

use std::collections::BTreeMap;

use sealpod_market::{bill, Address, Bill, ChainRef, Meter, PriceList, SignedVoucher, B256, U256};
use serde::{Deserialize, Serialize};

/// One pod's account, persisted after every change.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Account {
    pub pod_id: String,
    pub chain: ChainRef,
    pub channel_id: B256,
    pub publisher: Address,
    /// The deposit as last read from the chain.
    pub deposit: U256,
    /// The offer's prices, by resource name.
    pub prices: BTreeMap<String, String>,
    pub grace_seconds: u64,
    pub meter: Meter,
    /// The highest voucher so far.
    pub voucher: Option<StoredVoucher>,
    /// Paid out on chain so far.
    pub claimed: U256,
    /// Unix seconds the bill first exceeded the voucher, while it does.
    pub unpaid_since: Option<u64>,
    /// Unix seconds the pod was suspended, while it is.
    pub suspended_at: Option<u64>,
    /// The last claim's failure, until one succeeds.
    pub claim_error: Option<String>,
    /// The pod is gone; the account stays until everything is claimed.
    pub ended: bool,
    /// Why the pod ended, when billing ended it.
    pub end_reason: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredVoucher {
    pub amount: U256,
    pub signature: Vec<u8>,
}

/// What a tick decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    None,
    Suspend,
    Delete,
}

impl Account {
    pub fn price_list(&self) -> PriceList {
        PriceList::from_map(&self.prices).expect("stored from a verified offer")
    }

    pub fn bill(&self) -> Bill {
        Bill::of(&self.meter, &self.price_list())
    }

    pub fn vouchered(&self) -> U256 {
        self.voucher.as_ref().map(|v| v.amount).unwrap_or(U256::ZERO)
    }

    pub fn signed_voucher(&self) -> Option<SignedVoucher> {
        self.voucher.as_ref().map(|v| SignedVoucher {
            channel_id: self.channel_id,
            cumulative_amount: v.amount,
            signature: v.signature.clone(),
        })
    }

    /// Whether there is something to claim on chain.
    pub fn claimable(&self) -> bool {
        self.vouchered().min(self.deposit) > self.claimed
    }

    /// Advances the meter to `now` and decides what the lapse rules ask for.
    pub fn tick(&mut self, now_ms: u64, usage: Option<sealpod_market::Usage>, retention_seconds: u64) -> Action {
        if self.ended {
            return Action::None;
        }
        let now = now_ms / 1000;
        self.meter.advance(now_ms, usage);
        if let Some(at) = self.suspended_at {
            return if now.saturating_sub(at) >= retention_seconds { Action::Delete } else { Action::None };
        }
        if self.bill().total > self.vouchered() {
            let since = *self.unpaid_since.get_or_insert(now);
            if now.saturating_sub(since) >= self.grace_seconds {
                return Action::Suspend;
            }
        } else {
            self.unpaid_since = None;
        }
        Action::None
    }

    /// Records a suspension at `now_ms`, with the pod's usage read once it
    /// was frozen (the CPU it used up to then is billed): the meter stops.
    pub fn suspended(&mut self, now_ms: u64, usage: Option<sealpod_market::Usage>) {
        self.meter.pause(now_ms, usage);
        self.suspended_at = Some(now_ms / 1000);
    }

    /// Takes a voucher that [`SignedVoucher::check`] accepted; returns whether
    /// a suspended pod is now paid up and may resume.
    pub fn accept(&mut self, v: &SignedVoucher, now_ms: u64) -> bool {
        self.voucher = Some(StoredVoucher { amount: v.cumulative_amount, signature: v.signature.clone() });
        if self.bill().total <= self.vouchered() {
            self.unpaid_since = None;
            if self.suspended_at.take().is_some() {
                self.meter.resume(now_ms);
                return true;
            }
        }
        false
    }

    /// The pod's billing as the wire shows it.
    pub fn to_proto(&self) -> sealpod_proto::Billing {
        let bill = self.bill();
        let stop_at = match (self.suspended_at, self.unpaid_since) {
            (Some(at), _) => at,
            (None, Some(since)) => since + self.grace_seconds,
            _ => 0,
        };
        sealpod_proto::Billing {
            channel_id: self.channel_id.to_vec(),
            billed: bill.total.to_string(),
            vouchered: self.vouchered().to_string(),
            claimed: self.claimed.to_string(),
            deposit: self.deposit.to_string(),
            rate_per_second: bill::rate_per_second(&self.meter.reservation, &self.price_list(), false).to_string(),
            lines: bill.to_proto(),
            used_cpu_microseconds: self.meter.usage.cpu_usec,
            peak_memory_bytes: self.meter.usage.peak_memory_bytes,
            metered_seconds: self.meter.metered_ms / 1000,
            as_of_unix_seconds: self.meter.last_ms / 1000,
            unpaid_since_unix_seconds: self.unpaid_since.unwrap_or(0),
            stop_at_unix_seconds: stop_at,
            claim_error: self.claim_error.clone().unwrap_or_default(),
            grace_seconds: self.grace_seconds,
        }
    }
}

#[cfg(test)]
mod tests {
    use sealpod_market::{Reservation, Resource};

    use super::*;

    fn account(grace: u64) -> Account {
        let prices = Resource::ALL.iter().map(|r| (r.name().to_owned(), "1000".to_owned())).collect();
        Account {
            pod_id: "p1".into(),
            chain: ChainRef { chain_id: 1, contract: Address::ZERO, token: Address::ZERO },
            channel_id: B256::ZERO,
            publisher: Address::ZERO,
            deposit: U256::from(1_000_000),
            prices,
            grace_seconds: grace,
            meter: Meter::start(Reservation { cpu_millicores: 1000, ..Default::default() }, 0),
            voucher: None,
            claimed: U256::ZERO,
            unpaid_since: None,
            suspended_at: None,
            claim_error: None,
            ended: false,
            end_reason: None,
        }
    }

    fn voucher(amount: u64) -> SignedVoucher {
        SignedVoucher { channel_id: B256::ZERO, cumulative_amount: U256::from(amount), signature: vec![1; 65] }
    }

    #[test]
    fn a_pod_that_stops_being_paid_is_suspended_after_the_grace_period_and_deleted_after_retention() {
        let mut a = account(10);
        a.accept(&voucher(5_000), 0); // 5 s of one core at 1000/s
        assert_eq!(a.tick(5_000, None, 60), Action::None);
        assert_eq!(a.tick(6_000, None, 60), Action::None);
        assert_eq!(a.unpaid_since, Some(6));
        assert_eq!(a.tick(15_000, None, 60), Action::None);
        assert_eq!(a.tick(16_000, None, 60), Action::Suspend);
        a.suspended(16_000, None);
        let billed = a.bill().total;
        assert_eq!(a.tick(50_000, None, 60), Action::None);
        assert_eq!(a.bill().total, billed, "a suspended pod is not billed");
        assert_eq!(a.tick(76_000, None, 60), Action::Delete);
    }

    #[test]
    fn a_late_voucher_that_covers_the_bill_resumes_a_suspended_pod() {
        let mut a = account(0);
        a.tick(3_000, None, 600);
        assert_eq!(a.tick(3_000, None, 600), Action::Suspend);
        a.suspended(3_000, None);
        assert!(!a.accept(&voucher(2_000), 100_000), "not enough");
        assert!(a.accept(&voucher(3_000), 100_000));
        assert_eq!(a.suspended_at, None);
        // The clock restarts at the resume, not at the suspension.
        a.tick(101_000, None, 600);
        assert_eq!(a.bill().total, U256::from(4_000));
    }

    #[test]
    fn the_claimable_amount_is_capped_by_the_deposit() {
        let mut a = account(0);
        assert!(!a.claimable());
        a.accept(&voucher(2_000_000), 0);
        assert!(a.claimable());
        a.claimed = U256::from(1_000_000);
        assert!(!a.claimable());
    }
}
