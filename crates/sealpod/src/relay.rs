//! `sealpod relay run`: a public node that only relays and serves the DHT,
//! for providers behind NAT to listen through and for everyone to bootstrap
//! from. Providers and artifact nodes relay too (unless told not to); this
//! is the node to run where there is nothing else to run.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use sealpod_net::{Node, NodeConfig};

#[derive(Subcommand)]
pub enum RelayCommand {
    /// Relay for peers behind NAT (circuit relay v2) and serve the DHT
    /// and AutoNAT, until interrupted.
    Run(RelayRunArgs),
}

#[derive(Args)]
pub struct RelayRunArgs {
    /// libp2p listen addresses (reachable from the peers it relays for; unless
    /// unspecified, they are also what it tells them to use: see --external-address).
    #[arg(long, default_values_t = ["/ip4/0.0.0.0/tcp/4003".to_string(), "/ip4/0.0.0.0/udp/4003/quic-v1".to_string()])]
    listen: Vec<String>,
    /// DHT bootstrap peers (multiaddrs ending in /p2p/<peer id>).
    #[arg(long)]
    bootstrap: Vec<String>,
    /// The node key (created if missing).
    #[arg(long, default_value = "/var/lib/sealpod/relay.key")]
    key: PathBuf,
    /// Write the peer id and addresses here (JSON) once it listens.
    #[arg(long)]
    ready_file: Option<PathBuf>,
    #[command(flatten)]
    nat: crate::nat_args::NatArgs,
}

fn is_unspecified(addr: &sealpod_net::Multiaddr) -> bool {
    use sealpod_net::multiaddr::Protocol;
    addr.iter().any(|p| match p {
        Protocol::Ip4(ip) => ip.is_unspecified(),
        Protocol::Ip6(ip) => ip.is_unspecified(),
        _ => false,
    })
}

pub fn run(command: RelayCommand, json: bool) -> Result<()> {
    let RelayCommand::Run(args) = command;
    let mut nat = args.nat.config()?;
    if nat.relay_service.is_none() {
        anyhow::bail!("--no-relay-service: a relay that relays for nobody has nothing to do");
    }
    // A relay is public by definition: it never listens through another.
    nat.relays.clear();
    nat.always_relay = false;
    if let Some(dir) = args.key.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let keypair = sealpod_net::load_or_create_keypair(&args.key)?;
    crate::runtime()?.block_on(async move {
        let mut config = NodeConfig::client(keypair);
        config.listen = crate::parse_addrs(&args.listen)?;
        config.bootstrap = crate::parse_addrs(&args.bootstrap)?;
        // A relay is public: the addresses it listens on (unless
        // unspecified) are where peers reach it.
        if nat.external.is_empty() {
            nat.external = config.listen.iter().filter(|a| !is_unspecified(a)).cloned().collect();
        }
        config.nat = nat;
        let (node, _inbound) = Node::start(config).await?;
        let ready = serde_json::json!({
            "peer_id": node.peer_id().to_string(),
            "addresses": node.listen_addrs().await.iter().map(|a| format!("{a}/p2p/{}", node.peer_id())).collect::<Vec<_>>(),
        });
        if json {
            println!("{ready}");
        } else {
            for a in ready["addresses"].as_array().into_iter().flatten() {
                println!("relaying on {}", a.as_str().unwrap_or_default());
            }
        }
        if let Some(path) = &args.ready_file {
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, serde_json::to_vec(&ready)?)?;
            std::fs::rename(&tmp, path)?;
        }
        tokio::signal::ctrl_c().await?;
        drop(node);
        Ok(())
    })
}
