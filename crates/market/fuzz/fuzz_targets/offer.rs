//! An offer from a stranger: protobuf bytes, then the signature, expiry and
//! field checks a publisher and a provider make.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Ok(offer) = sealpod_proto::Offer::decode(data) else { return };
    let fixed = || libp2p_identity::Keypair::ed25519_from_bytes([7u8; 32]).expect("32 bytes").public().to_peer_id();
    let peer = libp2p_identity::PeerId::from_bytes(&offer.provider).unwrap_or_else(|_| fixed());
    let _ = sealpod_market::offer::verify(&offer, &peer, 1_800_000_000);
    let _ = sealpod_market::PriceList::from_proto(&offer.prices);
});
