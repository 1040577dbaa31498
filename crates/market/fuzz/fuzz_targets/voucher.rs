//! A voucher from a publisher: protobuf bytes, parsing, signature recovery and
//! the provider's checks.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use sealpod_market::{Address, ChainRef, SignedVoucher, U256};

fuzz_target!(|data: &[u8]| {
    let Ok(v) = sealpod_proto::Voucher::decode(data) else { return };
    let Ok(v) = SignedVoucher::from_proto(&v) else { return };
    let chain = ChainRef { chain_id: 31337, contract: Address::repeat_byte(1), token: Address::repeat_byte(2) };
    let _ = v.check(&chain, v.channel_id, Address::repeat_byte(3), U256::from(5), U256::MAX);
});
