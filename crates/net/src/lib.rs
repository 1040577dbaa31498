//! The sealpod libp2p node: transports, discovery and the Apocryph
//! request-response protocols.
//!
//! A [`Node`] owns a libp2p swarm (TCP and QUIC, Noise, Yamux, Identify,
//! Kademlia, mDNS) running on a background task. Callers use it through a handle:
//! publishers send requests and await responses; providers receive
//! [`InboundRequest`]s and answer each through its [`Responder`]. Every protocol
//! frames its messages with [`codec`] (length-delimited protobuf with a size limit
//! per direction) and every request has a timeout.
//!
//! This crate knows nothing of pods, images or payments: it moves the messages of
//! `sealpod-proto` between authenticated peers and reports who sent them. The
//! provider decides what a request means; the publisher decides what to ask.

pub mod blob;
pub mod codec;
mod identity;
mod node;

pub use blob::{BlobError, BlobSource, IncomingBlob};
pub use identity::{load_or_create_keypair, IdentityError};
pub use libp2p::{identity::Keypair, multiaddr, Multiaddr, PeerId};
pub use node::{
    is_relayed, InboundRequest, NatConfig, Node, NodeConfig, NodeError, Path, PeerLimits, Reachability, RelayLimits,
    Responder,
};

/// The DHT key under which providers advertise themselves.
pub const PROVIDER_DHT_KEY: &[u8] = b"/apocryph/providers/v0";

/// Kademlia protocol of the sealpod DHT. A protocol of its own rather than
/// `/ipfs/kad/1.0.0`, so sealpod peers form their own DHT instead of polluting
/// (and being flooded by) the public IPFS one.
pub const KAD_PROTOCOL: &str = "/apocryph/kad/1.0.0";

/// Splits a trailing `/p2p/<peer id>` off an address, if present.
pub fn split_peer_id(addr: &Multiaddr) -> (Multiaddr, Option<PeerId>) {
    let mut addr = addr.clone();
    match addr.iter().last() {
        Some(libp2p::multiaddr::Protocol::P2p(peer)) => {
            addr.pop();
            (addr, Some(peer))
        }
        _ => (addr, None),
    }
}
