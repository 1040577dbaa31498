//! NAT flags shared by the nodes that listen (`provider run`, `node run`,
//! `relay run`): relays to listen through, the relay service for others,
//! and AutoNAT. See docs/nat.md.

use std::time::Duration;

use anyhow::{bail, Result};
use clap::Args;
use sealpod_net::{NatConfig, RelayLimits};

#[derive(Args, Clone, Debug)]
pub struct NatArgs {
    /// A circuit relay to listen through when AutoNAT finds this node
    /// unreachable (a multiaddr ending in /p2p/<peer id>; repeatable).
    /// Bootstrap peers that relay are used too.
    #[arg(long = "relay", value_name = "MULTIADDR")]
    pub relays: Vec<String>,
    /// Listen through the relays at once, without waiting for AutoNAT (a
    /// node known to sit behind NAT).
    #[arg(long)]
    pub always_relay: bool,
    /// Relay for nobody. By default a node that listens relays for peers
    /// behind NAT, within the --relay-max-* limits.
    #[arg(long)]
    pub no_relay_service: bool,
    /// Relay service: peers that may listen through this node at once.
    #[arg(long, value_name = "N", default_value_t = RelayLimits::default().reservations)]
    pub relay_max_reservations: usize,
    /// Relay service: relayed connections at once.
    #[arg(long, value_name = "N", default_value_t = RelayLimits::default().circuits)]
    pub relay_max_circuits: usize,
    /// Relay service: bytes one relayed connection may carry before it is closed.
    #[arg(long, value_name = "BYTES", default_value_t = RelayLimits::default().circuit_bytes)]
    pub relay_circuit_bytes: u64,
    /// Relay service: seconds one relayed connection may last.
    #[arg(long, value_name = "SECONDS", default_value_t = RelayLimits::default().circuit_duration.as_secs())]
    pub relay_circuit_seconds: u64,
    /// Let AutoNAT count private addresses (10/8, 172.16/12, 192.168/16) as
    /// reachable: for LANs and test networks. Off: only global addresses.
    #[arg(long)]
    pub autonat_private: bool,
    /// An address peers reach this node at (repeatable): declared, where
    /// AutoNAT would otherwise have to confirm it. A relay hands these to the
    /// peers that listen through it.
    #[arg(long = "external-address", value_name = "MULTIADDR")]
    pub external: Vec<String>,
}

impl NatArgs {
    pub fn config(&self) -> Result<NatConfig> {
        if self.relay_max_circuits == 0 || self.relay_circuit_seconds == 0 || self.relay_circuit_bytes == 0 {
            bail!("--relay-max-circuits, --relay-circuit-bytes and --relay-circuit-seconds must be above 0 (--no-relay-service turns the relay off)");
        }
        let relays = crate::parse_addrs(&self.relays)?;
        for r in &relays {
            if sealpod_net::split_peer_id(r).1.is_none() {
                bail!("--relay {r}: end the address with /p2p/<the relay's peer id>");
            }
        }
        if self.always_relay && relays.is_empty() {
            tracing::warn!("--always-relay without --relay: only bootstrap peers that relay will be used");
        }
        let relay_service = (!self.no_relay_service).then(|| RelayLimits {
            reservations: self.relay_max_reservations,
            circuits: self.relay_max_circuits,
            circuits_per_peer: RelayLimits::default().circuits_per_peer.min(self.relay_max_circuits),
            circuit_bytes: self.relay_circuit_bytes,
            circuit_duration: Duration::from_secs(self.relay_circuit_seconds),
        });
        Ok(NatConfig {
            relay_service,
            relays,
            always_relay: self.always_relay,
            autonat_private: self.autonat_private,
            external: crate::parse_addrs(&self.external)?,
            no_hole_punching: false,
        })
    }
}
