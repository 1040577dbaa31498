//! The market: what a provider charges, what a pod has cost, and how it is paid.
//!
//! - [`resource`]: the one list of billable resources. The offer, the meter and
//!   the bill all index by it, so nothing can be metered without a price (the
//!   bug that left Apocryph's RAM unbilled: "memory" metered, "ram" priced).
//! - [`price`]: prices per resource-second, as the operator configures them.
//! - [`offer`]: the provider's signed offer (node key, expiry, chain, contract,
//!   token, payout address) and its verification.
//! - [`meter`] and [`bill`]: reservations integrated over wall-clock time,
//!   used CPU time from the cgroup, and the cumulative bill.
//! - [`voucher`]: EIP-712 vouchers for a cumulative amount, signed by the
//!   publisher's chain key, and the checks a provider makes before it counts one.
//! - [`chain`]: the payment-channel contract (`contracts/src`) over JSON-RPC
//!   with alloy: deploy on a dev chain, open, top up, claim, unlock, withdraw.
//!
//! Left to others: when to bill, suspend and claim (the provider), when to pay
//! (the publisher and the CLI), and moving messages (`sealpod-net`).

pub mod bill;
pub mod chain;
pub mod devchain;
pub mod error;
pub mod keys;
pub mod meter;
pub mod offer;
pub mod price;
pub mod resource;
pub mod voucher;

pub use alloy::primitives::{Address, B256, U256};
pub use bill::{Bill, BillLine};
pub use chain::{ChainClient, ChainRef, ChannelInfo};
pub use error::MarketError;
pub use meter::{Meter, Reservation, Usage};
pub use offer::{MarketTerms, VerifiedOffer};
pub use price::PriceList;
pub use resource::Resource;
pub use voucher::SignedVoucher;
