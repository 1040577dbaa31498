//! What can go wrong in the market, by name.

use alloy::primitives::{Address, B256, U256};

#[derive(Debug, thiserror::Error)]
pub enum MarketError {
    #[error("unknown resource {name:?}{hint}; priced resources are: cpu, memory, gpu, external-ip, cpu-time")]
    UnknownResource { name: String, hint: String },
    #[error("no price for {0}: every billable resource needs one (0 to give it away)")]
    MissingPrice(&'static str),
    #[error("bad amount {0:?}: expected a non-negative decimal integer of token base units")]
    BadAmount(String),
    #[error("bad {what}: {detail}")]
    Bad { what: &'static str, detail: String },
    #[error("the offer is not signed by this provider")]
    OfferSignature,
    #[error("the offer expired {0} s ago; ask for a fresh one")]
    OfferExpired(u64),
    #[error("the offer was altered: {0}")]
    OfferAltered(String),
    #[error("the payment channel is on {what} {got}, the offer is for {want}")]
    WrongChain { what: &'static str, got: String, want: String },
    #[error("the voucher is for channel {got}, not {want}")]
    VoucherChannel { got: B256, want: B256 },
    #[error("the voucher is not signed by the channel's publisher {publisher} (recovered {recovered})")]
    VoucherSignature { publisher: Address, recovered: String },
    #[error("the voucher for {amount} is not above the previous one for {previous}")]
    VoucherNotHigher { amount: U256, previous: U256 },
    #[error("the voucher for {amount} is above the channel's deposit of {deposit}; top the channel up first")]
    VoucherAboveDeposit { amount: U256, deposit: U256 },
    #[error("chain: {0}")]
    Chain(String),
    #[error("chain: {what} timed out after {seconds} s")]
    ChainTimeout { what: String, seconds: u64 },
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}
