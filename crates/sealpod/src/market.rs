//! `sealpod chain`, `channel`, `providers`, `pay` and `provider earnings`: the
//! market from the command line. The work is in `sealpod-market` and
//! `sealpod-publisher`; this is arguments and output.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use sealpod_market::keys::PrivateKeySigner;
use sealpod_market::{Address, ChainClient, ChainRef, B256, U256};
use serde::{Deserialize, Serialize};

/// Where the chain is and who the publisher is on it.
#[derive(Args, Clone, Debug)]
pub struct ChainArgs {
    /// JSON-RPC endpoint (default: from $SEALPOD_HOME/chain.json, else http://127.0.0.1:8545).
    #[arg(long, env = "SEALPOD_RPC")]
    pub rpc: Option<String>,
    /// The publisher's chain key (hex). Default: $SEALPOD_HOME/chain.key,
    /// created on first use (fund it before opening channels).
    #[arg(long, env = "SEALPOD_CHAIN_KEY", hide_env_values = true)]
    pub chain_key: Option<String>,
}

/// A chain's coordinates, kept by `sealpod chain deploy` (or written by hand).
#[derive(Serialize, Deserialize, Debug, Clone)]
#[serde(rename_all = "camelCase")]
pub struct ChainFile {
    pub rpc: String,
    #[serde(flatten)]
    pub chain: ChainRef,
}

impl ChainArgs {
    pub fn key(&self, home: &Path) -> Result<PrivateKeySigner> {
        Ok(match &self.chain_key {
            Some(k) => sealpod_market::keys::parse(k)?,
            None => sealpod_market::keys::load_or_create(&home.join("chain.key"))?,
        })
    }

    pub fn file(&self, home: &Path) -> Option<ChainFile> {
        std::fs::read(home.join("chain.json")).ok().and_then(|b| serde_json::from_slice(&b).ok())
    }

    pub fn rpc(&self, home: &Path) -> String {
        self.rpc.clone().or_else(|| self.file(home).map(|f| f.rpc)).unwrap_or_else(|| "http://127.0.0.1:8545".into())
    }

    async fn client(&self, home: &Path) -> Result<ChainClient> {
        let file = self.file(home).with_context(|| {
            format!("no {}: run `sealpod chain deploy` or write it", home.join("chain.json").display())
        })?;
        Ok(ChainClient::connect(&self.rpc(home), self.key(home)?, file.chain).await?)
    }
}

#[derive(Subcommand)]
pub enum ChainCommand {
    /// Deploy the payment contract and a test token on a development chain
    /// (anvil), mint test tokens, and remember them in $SEALPOD_HOME/chain.json.
    Deploy {
        #[command(flatten)]
        chain: ChainArgs,
        /// The deployer's key (default: anvil's first development key).
        #[arg(long)]
        deployer_key: Option<String>,
        /// Test tokens to mint to each --to address (and to this publisher).
        #[arg(long, default_value = "1000000000000000000000")]
        mint: String,
        /// Addresses to mint to.
        #[arg(long)]
        to: Vec<String>,
    },
    /// This publisher's chain address, its token balance and the chain in use.
    Whoami {
        #[command(flatten)]
        chain: ChainArgs,
    },
}

#[derive(Subcommand)]
pub enum ChannelCommand {
    /// Open a channel to a provider's payout address.
    Open {
        /// The provider's payout address (from its offer: `sealpod providers`).
        #[arg(long)]
        to: String,
        /// Token base units to deposit.
        #[arg(long)]
        deposit: String,
        /// Seconds the provider has to claim after an unlock starts.
        #[arg(long, default_value_t = 3600)]
        unlock_delay: u64,
        #[command(flatten)]
        chain: ChainArgs,
    },
    /// Show a channel as the contract stores it.
    Show {
        id: String,
        #[command(flatten)]
        chain: ChainArgs,
    },
    /// Add funds (and cancel a pending unlock).
    TopUp {
        id: String,
        amount: String,
        #[command(flatten)]
        chain: ChainArgs,
    },
    /// Start the unlock delay, after which `withdraw` returns the rest.
    Unlock {
        id: String,
        #[command(flatten)]
        chain: ChainArgs,
    },
    /// After the unlock delay: take back what the provider has not claimed,
    /// and close the channel.
    Withdraw {
        id: String,
        #[command(flatten)]
        chain: ChainArgs,
    },
}

fn amount(s: &str) -> Result<U256> {
    Ok(sealpod_market::price::parse_amount(s)?)
}

fn channel_id(s: &str) -> Result<B256> {
    s.parse::<B256>().with_context(|| format!("{s:?} is not a channel id (0x and 64 hex digits)"))
}

fn print<T: Serialize>(json: bool, value: &T, text: impl FnOnce() -> String) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(value)?);
    } else {
        println!("{}", text());
    }
    Ok(())
}

pub async fn chain(command: ChainCommand, home: &Path, json: bool) -> Result<()> {
    match command {
        ChainCommand::Deploy { chain, deployer_key, mint, to } => {
            let deployer = match deployer_key {
                Some(k) => sealpod_market::keys::parse(&k)?,
                None => sealpod_market::devchain::dev_key(0),
            };
            let rpc = chain.rpc(home);
            let mut recipients: Vec<Address> =
                to.iter().map(|a| a.parse().with_context(|| format!("--to {a:?}"))).collect::<Result<_>>()?;
            recipients.push(chain.key(home)?.address());
            let chain_ref = ChainClient::deploy_dev(&rpc, deployer, &recipients, amount(&mint)?).await?;
            let file = ChainFile { rpc, chain: chain_ref };
            std::fs::create_dir_all(home)?;
            std::fs::write(home.join("chain.json"), serde_json::to_vec_pretty(&file)?)?;
            print(json, &file, || {
                format!(
                    "deployed on chain {}: payment contract {}, test token {}\nminted {mint} to {} address(es); saved to {}",
                    chain_ref.chain_id,
                    chain_ref.contract,
                    chain_ref.token,
                    recipients.len(),
                    home.join("chain.json").display()
                )
            })
        }
        ChainCommand::Whoami { chain } => {
            let key = chain.key(home)?;
            let client = chain.client(home).await?;
            let balance = client.balance(key.address()).await?;
            let v =
                serde_json::json!({"address": key.address(), "balance": balance.to_string(), "chain": client.chain});
            print(json, &v, || {
                format!(
                    "{} holds {balance} of token {} on chain {}",
                    key.address(),
                    client.chain.token,
                    client.chain.chain_id
                )
            })
        }
    }
}

pub async fn channel(command: ChannelCommand, home: &Path, json: bool) -> Result<()> {
    match command {
        ChannelCommand::Open { to, deposit, unlock_delay, chain } => {
            let client = chain.client(home).await?;
            let to: Address = to.parse().with_context(|| format!("--to {to:?} is not an address"))?;
            let pod = B256::from(rand::random::<[u8; 32]>());
            let id = client.open(to, pod, amount(&deposit)?, unlock_delay).await?;
            let info = client.channel(id).await?;
            print(json, &info, || format!("opened channel {id}: {deposit} deposited for {to}"))
        }
        ChannelCommand::Show { id, chain } => {
            let info = chain.client(home).await?.channel(channel_id(&id)?).await?;
            print(json, &info, || {
                format!(
                    "channel {}\n  publisher {}\n  provider  {}\n  token     {}\n  deposited {}\n  claimed   {}\n  unlock    {}\n  {}",
                    info.id,
                    info.publisher,
                    info.provider,
                    info.token,
                    info.deposited,
                    info.claimed,
                    if info.unlock_at == 0 { format!("not started (delay {} s)", info.unlock_delay) } else { format!("withdrawable from unix time {}", info.unlock_at) },
                    if info.closed { "closed" } else { "open" }
                )
            })
        }
        ChannelCommand::TopUp { id, amount: a, chain } => {
            let client = chain.client(home).await?;
            let id = channel_id(&id)?;
            client.top_up(id, amount(&a)?).await?;
            let info = client.channel(id).await?;
            print(json, &info, || format!("channel {id} now holds {} ({} claimed)", info.deposited, info.claimed))
        }
        ChannelCommand::Unlock { id, chain } => {
            let at = chain.client(home).await?.start_unlock(channel_id(&id)?).await?;
            print(json, &serde_json::json!({"unlockAt": at}), || {
                format!("unlock started: withdraw from unix time {at}")
            })
        }
        ChannelCommand::Withdraw { id, chain } => {
            let client = chain.client(home).await?;
            let id = channel_id(&id)?;
            let back = client.withdraw(id).await?;
            let info = client.channel(id).await?;
            print(json, &serde_json::json!({"refunded": back.to_string(), "channel": info}), || {
                format!("withdrew {back}; the provider claimed {}; channel {id} is closed", info.claimed)
            })
        }
    }
}

/// How to pay at deploy time.
#[derive(Args, Clone, Debug)]
pub struct DeployPayArgs {
    /// Open a payment channel with this deposit (token base units) to a
    /// provider that charges, and pay through it.
    #[arg(long)]
    pub deposit: Option<String>,
    /// Prepay this long with the first voucher (e.g. 90s, 10m, 1h).
    #[arg(long, default_value = "10m")]
    pub prepay: String,
    /// The channel's unlock delay in seconds (at least the offer's minimum).
    #[arg(long)]
    pub unlock_delay: Option<u64>,
    #[command(flatten)]
    pub chain: ChainArgs,
}

impl DeployPayArgs {
    pub fn plan(&self, home: &Path) -> Result<Option<sealpod_publisher::PaymentPlan>> {
        let Some(deposit) = &self.deposit else { return Ok(None) };
        Ok(Some(sealpod_publisher::PaymentPlan {
            rpc: self.chain.rpc(home),
            key: self.chain.key(home)?,
            deposit: amount(deposit)?,
            prepay_seconds: seconds(&self.prepay)?,
            unlock_delay: self.unlock_delay,
        }))
    }
}

/// `90`, `90s`, `10m`, `2h`, `1d`.
pub fn seconds(s: &str) -> Result<u64> {
    let t = s.trim();
    let (num, mult) = match t.chars().last() {
        Some('s') => (&t[..t.len() - 1], 1),
        Some('m') => (&t[..t.len() - 1], 60),
        Some('h') => (&t[..t.len() - 1], 3600),
        Some('d') => (&t[..t.len() - 1], 86_400),
        _ => (t, 1),
    };
    let n: u64 = num.parse().with_context(|| format!("{s:?} is not a duration (like 90s, 10m, 1h)"))?;
    n.checked_mul(mult).context("duration too long")
}

/// `sealpod pay`.
#[derive(Args)]
pub struct PayArgs {
    /// The pod id.
    pub pod: String,
    /// Pay the bill so far and this much time ahead at the pod's worst-case
    /// rate (e.g. 1h).
    #[arg(long = "for", value_name = "DURATION", conflicts_with = "amount")]
    pub ahead: Option<String>,
    /// Raise the cumulative voucher to exactly this amount.
    #[arg(long)]
    pub amount: Option<String>,
    /// Stay online and answer the provider's bill: read it every
    /// `--interval` and pay again (the bill plus `--for` ahead) whenever less
    /// than half of `--for` is left covered. Stops when the pod is gone.
    #[arg(long, requires = "ahead", conflicts_with = "amount")]
    pub follow: bool,
    /// How often `--follow` reads the bill.
    #[arg(long, default_value = "5s")]
    pub interval: String,
    #[command(flatten)]
    pub chain: ChainArgs,
}

/// The channel a pod is paid through, from the publisher's records.
fn pod_payment(publisher: &sealpod_publisher::Publisher, pod: &str) -> Result<sealpod_publisher::PodPayment> {
    let record = publisher
        .pods()?
        .into_iter()
        .find(|p| p.pod_id == pod)
        .with_context(|| format!("no pod {pod} in this publisher's records"))?;
    record.payment.context("this pod is not paid through a channel")
}

/// An amount from a pod's billing (empty when absent: zero).
fn billed(s: &str) -> Result<U256> {
    if s.is_empty() {
        return Ok(U256::ZERO);
    }
    Ok(sealpod_market::price::parse_amount(s)?)
}

pub async fn pay(args: PayArgs, publisher: &sealpod_publisher::Publisher, home: &Path, json: bool) -> Result<()> {
    if args.follow {
        return follow(args, publisher, home, json).await;
    }
    let payment = pod_payment(publisher, &args.pod)?;
    let target = match (&args.amount, &args.ahead) {
        (Some(a), _) => amount(a)?,
        (None, ahead) => {
            let status = publisher.status(&args.pod).await?;
            let so_far = billed(&status.billing.unwrap_or_default().billed)?;
            let ahead = seconds(ahead.as_deref().unwrap_or("0s"))?;
            so_far.max(payment.vouchered) + payment.worst_rate * U256::from(ahead)
        }
    };
    let status = publisher.pay(&args.pod, &args.chain.key(home)?, target).await?;
    let billing = status.billing.clone().unwrap_or_default();
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "pod": args.pod, "voucher": target.to_string(), "status": status,
            }))?
        );
    } else {
        println!(
            "paid pod {} up to {target}: billed {}, deposit {}, phase {:?}",
            args.pod,
            billing.billed,
            billing.deposit,
            sealpod_proto::PodPhase::try_from(status.phase).unwrap_or_default()
        );
    }
    Ok(())
}

async fn follow(args: PayArgs, publisher: &sealpod_publisher::Publisher, home: &Path, json: bool) -> Result<()> {
    let ahead = seconds(args.ahead.as_deref().unwrap_or("0s"))?;
    let interval = std::time::Duration::from_secs(seconds(&args.interval)?.max(1));
    let key = args.chain.key(home)?;
    loop {
        let payment = pod_payment(publisher, &args.pod)?;
        let status = match publisher.status(&args.pod).await {
            Ok(s) => s,
            Err(e) if e.to_string().contains("no pod") => {
                println!("pod {} is gone; stopped following", args.pod);
                return Ok(());
            }
            Err(e) => {
                eprintln!("sealpod: reading the bill failed ({e}); retrying");
                tokio::time::sleep(interval).await;
                continue;
            }
        };
        let b = status.billing.clone().unwrap_or_default();
        let so_far = billed(&b.billed).unwrap_or(U256::ZERO);
        let covered = payment.vouchered.max(billed(&b.vouchered).unwrap_or(U256::ZERO));
        let half = payment.worst_rate * U256::from(ahead / 2);
        if covered < so_far + half {
            let target = so_far + payment.worst_rate * U256::from(ahead);
            match publisher.pay(&args.pod, &key, target).await {
                Ok(_) if json => println!(
                    "{}",
                    serde_json::json!({"pod": args.pod, "billed": so_far.to_string(), "voucher": target.to_string()})
                ),
                Ok(_) => println!("bill {so_far}: paid up to {target}"),
                Err(e) => eprintln!("sealpod: paying failed ({e}); retrying"),
            }
        }
        tokio::time::sleep(interval).await;
    }
}

/// `sealpod providers`.
#[derive(Args)]
pub struct ProvidersArgs {
    /// CPU the pod needs (cores, e.g. 1 or 500m).
    #[arg(long, default_value = "100m")]
    pub cpu: String,
    /// Memory the pod needs (e.g. 512Mi).
    #[arg(long, default_value = "64Mi")]
    pub memory: String,
    /// GPUs the pod needs.
    #[arg(long, default_value_t = 0)]
    pub gpu: u32,
    /// Only providers advertising this TEE: tdx, snp, sgx or insecure-dev.
    #[arg(long)]
    pub tee: Option<String>,
    /// Only offers at or below this many token units per second for the request.
    #[arg(long)]
    pub max_price: Option<String>,
    /// Ask only these providers (multiaddrs ending in /p2p/<peer id>), repeatable.
    #[arg(long = "provider")]
    pub providers: Vec<String>,
    /// DHT bootstrap peers.
    #[arg(long)]
    pub bootstrap: Vec<String>,
    /// Look for providers on the LAN with mDNS.
    #[arg(long)]
    pub mdns: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Listed {
    pub provider: String,
    pub addresses: Vec<String>,
    pub available: bool,
    pub tee: String,
    pub rate_per_second: String,
    pub worst_rate_per_second: String,
    pub chain_id: u64,
    pub contract: String,
    pub token: String,
    pub payout: String,
    pub grace_seconds: u64,
    pub min_unlock_seconds: u64,
    pub expires_unix_seconds: u64,
    pub prices: std::collections::BTreeMap<String, String>,
    /// The GPUs the offer sells (count, model, memory, CDI kind), as signed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gpus: Option<serde_json::Value>,
}

pub async fn providers(args: ProvidersArgs, home: &Path, json: bool) -> Result<()> {
    let resources = sealpod_proto::Resources {
        cpu_millicores: sealpod_manifest::parse_cpu(&args.cpu).map_err(|e| anyhow::anyhow!("--cpu: {e}"))?,
        memory_bytes: sealpod_manifest::parse_bytes(&args.memory).map_err(|e| anyhow::anyhow!("--memory: {e}"))?,
        gpus: args.gpu,
        ..Default::default()
    };
    let tee_filter = match args.tee.as_deref() {
        None => None,
        Some(t) => Some(t.parse::<sealpod_attest::Kind>().map_err(|e| anyhow::anyhow!("--tee {t}: {e}"))?.to_proto()),
    };
    let max_price = args.max_price.as_deref().map(amount).transpose()?;
    let bootstrap = crate::parse_addrs(&args.bootstrap)?;
    let addrs = crate::parse_addrs(&args.providers)?;
    let publisher = sealpod_publisher::Publisher::open(home, bootstrap, args.mdns).await?;
    let (listed, problems) = publisher.list_offers(&addrs, resources, tee_filter, max_price).await?;
    if json {
        let rows: Vec<Listed> = listed.iter().map(listed_row).collect();
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({"providers": rows, "skipped": problems}))?);
        return Ok(());
    }
    if listed.is_empty() {
        println!("no provider fits");
    }
    for (q, addrs) in &listed {
        println!(
            "{}  {} tokens/s ({} with all CPU busy)  tee {}  {}  chain {} token {}",
            q.provider,
            q.rate,
            q.worst_rate,
            tee_name(q.verified.tee),
            if q.available { "available" } else { "full" },
            q.verified.chain.chain_id,
            q.verified.chain.token
        );
        if let Some(g) = &q.verified.gpus {
            let model = if g.model.is_empty() { "model unknown" } else { g.model.as_str() };
            println!("    {} GPU(s): {model} ({})", g.count, g.kind);
        }
        for a in addrs {
            println!("    {a}");
        }
    }
    for p in &problems {
        eprintln!("skipped: {p}");
    }
    Ok(())
}

fn tee_name(t: sealpod_proto::TeeKind) -> String {
    sealpod_attest::Kind::from_proto(t as i32).map(|k| k.to_string()).unwrap_or_else(|_| "none".into())
}

fn listed_row((q, addrs): &(sealpod_publisher::Quote, Vec<String>)) -> Listed {
    Listed {
        provider: q.provider.to_string(),
        addresses: addrs.clone(),
        available: q.available,
        tee: tee_name(q.verified.tee),
        rate_per_second: q.rate.to_string(),
        worst_rate_per_second: q.worst_rate.to_string(),
        chain_id: q.verified.chain.chain_id,
        contract: q.verified.chain.contract.to_string(),
        token: q.verified.chain.token.to_string(),
        payout: q.verified.payout.to_string(),
        grace_seconds: q.verified.grace_seconds,
        min_unlock_seconds: q.verified.min_unlock_seconds,
        expires_unix_seconds: q.verified.expires_unix_seconds,
        prices: q.verified.prices.iter().map(|(r, p)| (r.name().to_owned(), p.to_string())).collect(),
        gpus: q.verified.gpus.as_ref().map(
            |g| serde_json::json!({"count": g.count, "model": g.model, "memoryBytes": g.memory_bytes, "kind": g.kind}),
        ),
    }
}

/// `sealpod provider earnings`: asks the running provider's local endpoint.
#[derive(Args)]
pub struct EarningsArgs {
    /// The provider's state directory (where it wrote metrics.addr).
    #[arg(long, default_value = "/var/lib/sealpod")]
    pub state_dir: PathBuf,
}

pub fn earnings(args: EarningsArgs, json: bool) -> Result<()> {
    let addr_file = args.state_dir.join("metrics.addr");
    let addr = std::fs::read_to_string(&addr_file)
        .with_context(|| format!("{}: is the provider running with --market?", addr_file.display()))?;
    let (status, body) = crate::artifacts::local_get(&addr, "/earnings")
        .with_context(|| format!("{}: is the provider still running?", addr_file.display()))?;
    if status != 200 {
        bail!("the provider's /earnings answered {status}");
    }
    let v: serde_json::Value = serde_json::from_slice(&body).context("the provider's /earnings is not JSON")?;
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!("{:<20} {:>14} {:>14} {:>14}  state", "pod", "billed", "vouchered", "claimed");
    for p in v["pods"].as_array().into_iter().flatten() {
        println!(
            "{:<20} {:>14} {:>14} {:>14}  {}",
            p["pod"].as_str().unwrap_or(""),
            p["billed"].as_str().unwrap_or(""),
            p["vouchered"].as_str().unwrap_or(""),
            p["claimed"].as_str().unwrap_or(""),
            p["state"].as_str().unwrap_or("")
        );
    }
    let t = &v["total"];
    println!(
        "{:<20} {:>14} {:>14} {:>14}",
        "total",
        t["billed"].as_str().unwrap_or(""),
        t["vouchered"].as_str().unwrap_or(""),
        t["claimed"].as_str().unwrap_or("")
    );
    Ok(())
}

/// The demo's local chain: anvil, the contracts, and the provider's market file.
pub struct DemoChain {
    pub anvil: sealpod_market::devchain::Anvil,
    pub chain: ChainRef,
    pub file: PathBuf,
}

const DEMO_DEPOSIT: u64 = 1_000_000_000;

impl DemoChain {
    pub fn plan(&self) -> sealpod_publisher::PaymentPlan {
        sealpod_publisher::PaymentPlan {
            rpc: self.anvil.url.clone(),
            key: sealpod_market::devchain::dev_key(1),
            deposit: U256::from(DEMO_DEPOSIT),
            prepay_seconds: 60,
            unlock_delay: None,
        }
    }
}

/// Starts anvil and deploys the contracts when anvil is installed.
pub fn demo_chain(dir: &Path) -> Result<Option<DemoChain>> {
    use sealpod_market::devchain::{dev_key, Anvil, DEV_KEYS};
    if Anvil::find().is_none() {
        return Ok(None);
    }
    let anvil = Anvil::spawn()?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let chain = rt.block_on(ChainClient::deploy_dev(
        &anvil.url,
        dev_key(0),
        &[dev_key(1).address()],
        U256::from(10 * DEMO_DEPOSIT),
    ))?;
    let claim_key = dir.join("provider-claim.key");
    std::fs::write(&claim_key, DEV_KEYS[2])?;
    let file = dir.join("market.yaml");
    std::fs::write(
        &file,
        format!(
            "chain:\n  rpc: {}\n  chainId: {}\n  contract: \"{}\"\n  token: \"{}\"\npayout: \"{}\"\nclaimKey: {}\nprices:\n  cpu: 1000000\n  memory: 2000\n  gpu: 0\n  external-ip: 0\n  cpu-time: 1000\ngraceSeconds: 30\nminUnlockSeconds: 60\nbillIntervalSeconds: 1\nclaimIntervalSeconds: 2\n",
            anvil.url,
            chain.chain_id,
            chain.contract,
            chain.token,
            dev_key(3).address(),
            claim_key.display()
        ),
    )?;
    Ok(Some(DemoChain { anvil, chain, file }))
}

pub async fn demo_show_offer(
    publisher: &sealpod_publisher::Publisher,
    addr: &str,
    pod: &sealpod_proto::Pod,
    json: bool,
) -> Result<()> {
    let resources = sealpod_proto::total_resources(pod);
    let (listed, skipped) = publisher.list_offers(&[addr.parse()?], resources, None, None).await?;
    let (q, _) =
        listed.first().with_context(|| format!("the provider made no usable offer: {}", skipped.join("; ")))?;
    if !json {
        println!(
            "   the provider's signed offer (node key, expires at unix time {}):",
            q.verified.expires_unix_seconds
        );
        for (r, p) in q.verified.prices.iter() {
            println!("     {:<12} {p} per {}", r.name(), r.unit());
        }
        println!(
            "   for this pod: {} tokens/s reserved ({} with every core busy); paid to {} on chain {}",
            q.rate, q.worst_rate, q.verified.payout, q.verified.chain.chain_id
        );
        println!("   opening a channel with {DEMO_DEPOSIT} tokens and prepaying 60 s with a first voucher");
    }
    Ok(())
}

pub async fn demo_pay(
    publisher: &sealpod_publisher::Publisher,
    pod_id: &str,
    m: &DemoChain,
    json: bool,
) -> Result<serde_json::Value> {
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let status = publisher.status(pod_id).await?;
    let b = status.billing.clone().context("a paid pod has billing")?;
    let rate = billed(&b.rate_per_second)?;
    let target = billed(&b.billed)?.max(billed(&b.vouchered)?) + rate * U256::from(30);
    let after = publisher.pay(pod_id, &m.plan().key, target).await?;
    let a = after.billing.unwrap_or_default();
    if !json {
        println!(
            "   the running bill after {} s: {} tokens ({} lines); voucher raised to {}",
            b.metered_seconds,
            b.billed,
            b.lines.len(),
            a.vouchered
        );
    }
    Ok(
        serde_json::json!({"billed": b.billed, "vouchered": a.vouchered, "channel": format!("0x{}", hex::encode(&b.channel_id))}),
    )
}

pub async fn demo_settle(
    m: &DemoChain,
    p: &sealpod_publisher::PodPayment,
    vouchered: U256,
    json: bool,
) -> Result<serde_json::Value> {
    let client = ChainClient::connect(&m.anvil.url, sealpod_market::devchain::dev_key(1), m.chain).await?;
    // The provider claims an ended pod's last voucher at its next tick.
    let t0 = std::time::Instant::now();
    let mut info = client.channel(p.channel_id).await?;
    while info.claimed < vouchered.min(info.deposited) {
        if t0.elapsed() > std::time::Duration::from_secs(30) {
            bail!("the provider did not claim its last voucher ({vouchered}) within 30 s; claimed {}", info.claimed);
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        info = client.channel(p.channel_id).await?;
    }
    client.start_unlock(p.channel_id).await?;
    client.dev_increase_time(info.unlock_delay + 1).await?;
    let refunded = client.withdraw(p.channel_id).await?;
    let provider_balance = client.balance(sealpod_market::devchain::dev_key(3).address()).await?;
    if !json {
        println!(
            "   settled on chain: the provider claimed {} (its payout holds {provider_balance}), the publisher withdrew {refunded} after the unlock delay; {} + {refunded} = {} deposited",
            info.claimed, info.claimed, info.deposited
        );
    }
    if info.claimed + refunded != info.deposited {
        bail!("the books do not balance: claimed {} + refunded {refunded} != deposit {}", info.claimed, info.deposited);
    }
    Ok(
        serde_json::json!({"claimed": info.claimed.to_string(), "refunded": refunded.to_string(), "deposit": info.deposited.to_string()}),
    )
}
