//! What the market costs, on loopback, side by side in one run:
//!   * EIP-712 vouchers signed and checked per second (what a provider does for
//!     every payment) next to an on-chain claim on anvil (the obvious
//!     alternative: settling every payment on chain);
//!   * a deploy of a one-container pod to a free provider next to the same
//!     deploy to a selling provider (offer fetched and verified, channel
//!     opened on anvil with approve + open, first voucher), each deleted after.
//!
//! Needs root (it runs pods) and anvil (`npm ci`):
//! `cargo bench -p sealpod --bench paid_deploy`.

#[path = "../tests/common/mod.rs"]
mod common;

use common::{ms, percentile};

use std::path::Path;
use std::time::Instant;

use sealpod_market::devchain::{dev_key, Anvil, DEV_KEYS};
use sealpod_market::{ChainClient, SignedVoucher, B256, U256};
use sealpod_publisher::{AttestOptions, PaymentPlan, Publisher, Target};

fn main() {
    if common::bench_args().is_none() {
        return;
    }
    if !common::is_root() || Anvil::find().is_none() {
        eprintln!("paid_deploy: skipped (needs root and anvil)");
        return;
    }
    let anvil = Anvil::spawn().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    common::build_sample_image(dir);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let chain = rt
        .block_on(ChainClient::deploy_dev(&anvil.url, dev_key(0), &[dev_key(1).address()], U256::from(u64::MAX)))
        .unwrap();
    std::fs::write(dir.join("claim.key"), DEV_KEYS[2]).unwrap();
    let market = dir.join("market.yaml");
    std::fs::write(
        &market,
        format!(
            "chain:\n  rpc: {}\n  chainId: {}\n  contract: \"{}\"\n  token: \"{}\"\npayout: \"{}\"\nclaimKey: {}\nprices: {{cpu: 1000, memory: 10, gpu: 0, external-ip: 0, cpu-time: 1}}\nminUnlockSeconds: 600\n",
            anvil.url, chain.chain_id, chain.contract, chain.token, dev_key(3).address(), dir.join("claim.key").display()
        ),
    )
    .unwrap();
    let free_dir = dir.join("free");
    let paid_dir = dir.join("paid");
    for d in [&free_dir, &paid_dir] {
        std::fs::create_dir_all(d.join("images")).unwrap();
        common::build_sample_image(d);
    }
    let free = common::Provider::start_with(&free_dir, common::free_port(), &[]);
    let paid = common::Provider::start_with(&paid_dir, common::free_port(), &["--market", market.to_str().unwrap()]);
    let result =
        rt.block_on(run(dir, &anvil.url, chain, free.addr.parse().unwrap(), paid.addr.parse().unwrap(), &paid_dir));
    drop((free, paid));
    result.unwrap();
}

async fn run(
    dir: &Path,
    rpc: &str,
    chain: sealpod_market::ChainRef,
    free: sealpod_net::Multiaddr,
    paid: sealpod_net::Multiaddr,
    paid_dir: &Path,
) -> anyhow::Result<()> {
    // Vouchers: sign, then check as the provider does (recover and compare).
    let key = dev_key(1);
    let id = B256::repeat_byte(7);
    let n = 2_000;
    let t = Instant::now();
    let vouchers: Vec<SignedVoucher> = (1..=n).map(|i| SignedVoucher::sign(&key, &chain, id, U256::from(i))).collect();
    let sign = t.elapsed();
    let t = Instant::now();
    for (i, v) in vouchers.iter().enumerate() {
        v.check(&chain, id, key.address(), U256::from(i), U256::from(u64::MAX))?;
    }
    let check = t.elapsed();

    // The alternative: a claim on chain for every payment.
    let publisher_chain = ChainClient::connect(rpc, key.clone(), chain).await?;
    let provider_chain = ChainClient::connect(rpc, dev_key(2), chain).await?;
    let channel = publisher_chain.open(dev_key(3).address(), id, U256::from(1_000_000), 600).await?;
    let mut claims = Vec::new();
    for i in 1..=30u64 {
        let v = SignedVoucher::sign(&key, &chain, channel, U256::from(i));
        let t = Instant::now();
        provider_chain.claim(&v).await?;
        claims.push(ms(t.elapsed()));
    }

    let publisher = Publisher::open(&dir.join("publisher"), vec![], false).await?;
    let image_for = |d: &Path| format!("oci:{}:v1", d.join("images/sample").display());
    let pod_for = |d: &Path| {
        let text = format!(
            "containers:\n  - name: web\n    image: {}\n    args: [serve, --port, \"8080\"]\n    resources: {{cpu: 100m, memory: 32Mi}}\n",
            image_for(d)
        );
        sealpod_manifest::parse_pod_manifest(&text, sealpod_manifest::Format::Yaml, "bench", None)
    };
    let free_pod = pod_for(&dir.join("free"))?;
    let paid_pod = pod_for(paid_dir)?;
    let plan = PaymentPlan {
        rpc: rpc.to_owned(),
        key,
        deposit: U256::from(1_000_000u64),
        prepay_seconds: 60,
        unlock_delay: None,
    };
    let none = AttestOptions::default();
    let (mut plain, mut funded) = (Vec::new(), Vec::new());
    for i in 0..12 {
        let t = Instant::now();
        let (r, _, _) =
            publisher.deploy(free_pod.clone(), &format!("f{i}"), Target::Address(free.clone()), None, &none).await?;
        plain.push(ms(t.elapsed()));
        publisher.delete(&r.pod_id).await?;
        let t = Instant::now();
        let (r, _, _) = publisher
            .deploy_paid(paid_pod.clone(), &format!("p{i}"), Target::Address(paid.clone()), None, &none, Some(&plan))
            .await?;
        funded.push(ms(t.elapsed()));
        publisher.delete(&r.pod_id).await?;
    }
    println!("| measurement, loopback | result |");
    println!("|---|---|");
    println!("| vouchers signed (EIP-712, k256), {n} | {:.0} per second |", n as f64 / sign.as_secs_f64());
    println!(
        "| vouchers checked (recover + channel, amount, deposit), {n} | {:.0} per second |",
        n as f64 / check.as_secs_f64()
    );
    println!(
        "| on-chain claim per payment (anvil, until the receipt), {} | {:.0} per second (median {:.1} ms) |",
        claims.len(),
        1000.0 / percentile(claims.clone(), 50),
        percentile(claims.clone(), 50)
    );
    let row = |name: &str, v: &Vec<f64>| {
        println!(
            "| {name} ({} runs) | median {:.1} ms, p90 {:.1} ms |",
            v.len(),
            percentile(v.clone(), 50),
            percentile(v.clone(), 90)
        )
    };
    row("deploy to a free provider", &plain);
    row("deploy to a selling provider (offer, approve + open on anvil, voucher)", &funded);
    Ok(())
}
