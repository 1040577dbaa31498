//! The payment contract's own tests, against a real anvil: the Solidity in
//! `contracts/src`, compiled by solc-js, driven through the same alloy client
//! the provider and the publisher use.

use std::time::Duration;

use alloy::primitives::{Address, B256, U256};
use alloy::providers::Provider;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::SolStruct;
use sealpod_market::devchain::{dev_key, Anvil};
use sealpod_market::{ChainClient, ChainRef, MarketError, SignedVoucher};

/// anvil, or a skip when it is not installed and CI did not ask for it.
fn anvil() -> Option<Anvil> {
    if Anvil::find().is_none() && std::env::var_os("SEALPOD_REQUIRE_ANVIL").is_none() {
        eprintln!("skipped: anvil not installed (npm ci)");
        return None;
    }
    Some(Anvil::spawn().expect("start anvil"))
}

struct World {
    _anvil: Anvil,
    url: String,
    chain: ChainRef,
    publisher: PrivateKeySigner,
    provider: PrivateKeySigner,
}

const MINTED: u64 = 1_000_000;

async fn world() -> Option<World> {
    let anvil = anvil()?;
    let publisher = dev_key(1);
    let provider = dev_key(2);
    let chain = ChainClient::deploy_dev(&anvil.url, dev_key(0), &[publisher.address()], U256::from(MINTED))
        .await
        .expect("deploy");
    Some(World { url: anvil.url.clone(), _anvil: anvil, chain, publisher, provider })
}

impl World {
    async fn as_(&self, key: &PrivateKeySigner) -> ChainClient {
        ChainClient::connect(&self.url, key.clone(), self.chain).await.unwrap()
    }
    fn voucher(&self, id: B256, amount: u64) -> SignedVoucher {
        SignedVoucher::sign(&self.publisher, &self.chain, id, U256::from(amount))
    }
}

async fn advance_chain_time(client: &ChainClient, seconds: u64) {
    let _: serde_json::Value = client.rpc().raw_request("evm_increaseTime".into(), (seconds,)).await.unwrap();
    let _: serde_json::Value = client.rpc().raw_request("evm_mine".into(), ()).await.unwrap();
}

fn reverted_with(e: MarketError, name: &str) {
    let s = e.to_string();
    assert!(s.contains(name), "expected a revert naming {name}, got: {s}");
}

#[tokio::test]
async fn the_contract_signs_the_same_eip712_digest_as_the_rust_voucher() {
    let Some(w) = world().await else { return };
    let client = w.as_(&w.publisher).await;
    let id = B256::repeat_byte(0xab);
    let amount = U256::from(123_456u64);
    let contract = sealpod_market::chain::SealpodChannels::new(w.chain.contract, client.rpc().clone());
    let on_chain = contract.voucherDigest(id, amount).call().await.unwrap();
    let v = sealpod_market::voucher::Voucher { channelId: id, cumulativeAmount: amount };
    assert_eq!(on_chain, v.eip712_signing_hash(&sealpod_market::voucher::domain(&w.chain)));
}

#[tokio::test]
async fn a_deposit_is_claimed_with_a_voucher_and_replays_pay_nothing() {
    let Some(w) = world().await else { return };
    let publisher = w.as_(&w.publisher).await;
    let provider = w.as_(&w.provider).await;
    let id = publisher.open(w.provider.address(), B256::repeat_byte(1), U256::from(1_000), 600).await.unwrap();
    let c = publisher.channel(id).await.unwrap();
    assert_eq!(
        (c.publisher, c.provider, c.deposited, c.claimed),
        (w.publisher.address(), w.provider.address(), U256::from(1_000), U256::ZERO)
    );
    assert_eq!(publisher.balance(w.publisher.address()).await.unwrap(), U256::from(MINTED - 1_000));

    assert_eq!(provider.claim(&w.voucher(id, 300)).await.unwrap(), U256::from(300));
    assert_eq!(provider.balance(w.provider.address()).await.unwrap(), U256::from(300));
    // The same voucher again, and a lower one, pay nothing.
    reverted_with(provider.claim(&w.voucher(id, 300)).await.unwrap_err(), "NothingToClaim");
    reverted_with(provider.claim(&w.voucher(id, 200)).await.unwrap_err(), "NothingToClaim");
    // Cumulative: the next voucher pays only the difference.
    assert_eq!(provider.claim(&w.voucher(id, 450)).await.unwrap(), U256::from(150));
    // Anyone may submit a claim; the tokens go to the channel's provider.
    assert_eq!(publisher.claim(&w.voucher(id, 500)).await.unwrap(), U256::from(50));
    assert_eq!(provider.balance(w.provider.address()).await.unwrap(), U256::from(500));
    assert_eq!(provider.channel(id).await.unwrap().claimed, U256::from(500));
}

#[tokio::test]
async fn forged_and_foreign_vouchers_are_refused_on_chain() {
    let Some(w) = world().await else { return };
    let publisher = w.as_(&w.publisher).await;
    let provider = w.as_(&w.provider).await;
    let id = publisher.open(w.provider.address(), B256::repeat_byte(2), U256::from(1_000), 600).await.unwrap();

    let stranger = PrivateKeySigner::random();
    let forged = SignedVoucher::sign(&stranger, &w.chain, id, U256::from(100));
    reverted_with(provider.claim(&forged).await.unwrap_err(), "BadVoucherSignature");
    // Signed by the publisher, but for another chain or another contract.
    for other in [ChainRef { chain_id: 1, ..w.chain }, ChainRef { contract: Address::repeat_byte(9), ..w.chain }] {
        let foreign = SignedVoucher::sign(&w.publisher, &other, id, U256::from(100));
        reverted_with(provider.claim(&foreign).await.unwrap_err(), "BadVoucherSignature");
    }
    // A good voucher for another channel says nothing about this one.
    let other_id = publisher.open(w.provider.address(), B256::repeat_byte(3), U256::from(10), 600).await.unwrap();
    let mut moved = w.voucher(other_id, 5);
    moved.channel_id = id;
    reverted_with(provider.claim(&moved).await.unwrap_err(), "BadVoucherSignature");
    let unknown = w.voucher(B256::repeat_byte(0xee), 5);
    reverted_with(provider.claim(&unknown).await.unwrap_err(), "UnknownChannel");
    assert_eq!(provider.balance(w.provider.address()).await.unwrap(), U256::ZERO);
}

#[tokio::test]
async fn a_voucher_above_the_deposit_pays_the_deposit_and_a_top_up_the_rest() {
    let Some(w) = world().await else { return };
    let publisher = w.as_(&w.publisher).await;
    let provider = w.as_(&w.provider).await;
    let id = publisher.open(w.provider.address(), B256::repeat_byte(4), U256::from(100), 600).await.unwrap();
    let v = w.voucher(id, 250);
    assert_eq!(provider.claim(&v).await.unwrap(), U256::from(100));
    publisher.top_up(id, U256::from(500)).await.unwrap();
    assert_eq!(provider.claim(&v).await.unwrap(), U256::from(150));
    let c = provider.channel(id).await.unwrap();
    assert_eq!((c.deposited, c.claimed), (U256::from(600), U256::from(250)));
}

#[tokio::test]
async fn the_rest_comes_back_only_after_the_unlock_delay_and_the_books_balance() {
    let Some(w) = world().await else { return };
    let publisher = w.as_(&w.publisher).await;
    let provider = w.as_(&w.provider).await;
    let id = publisher.open(w.provider.address(), B256::repeat_byte(5), U256::from(1_000), 600).await.unwrap();
    provider.claim(&w.voucher(id, 100)).await.unwrap();

    reverted_with(publisher.withdraw(id).await.unwrap_err(), "StillLocked");
    reverted_with(provider.start_unlock(id).await.unwrap_err(), "NotPublisher");
    let unlock_at = publisher.start_unlock(id).await.unwrap();
    assert!(unlock_at >= publisher.now().await.unwrap() + 599);
    // A top-up cancels a pending unlock.
    publisher.top_up(id, U256::from(1)).await.unwrap();
    assert_eq!(publisher.channel(id).await.unwrap().unlock_at, 0);
    publisher.start_unlock(id).await.unwrap();
    advance_chain_time(&publisher, 300).await;
    reverted_with(publisher.withdraw(id).await.unwrap_err(), "StillLocked");
    // The provider still has time to claim its latest voucher.
    provider.claim(&w.voucher(id, 400)).await.unwrap();
    advance_chain_time(&publisher, 301).await;
    assert_eq!(publisher.withdraw(id).await.unwrap(), U256::from(601));

    let paid = provider.balance(w.provider.address()).await.unwrap();
    let back = publisher.balance(w.publisher.address()).await.unwrap() - U256::from(MINTED - 1_001);
    assert_eq!(paid + back, U256::from(1_001), "deposit = claimed + returned");
    assert!(publisher.channel(id).await.unwrap().closed);
    reverted_with(provider.claim(&w.voucher(id, 900)).await.unwrap_err(), "ChannelClosed");
    reverted_with(publisher.top_up(id, U256::from(1)).await.unwrap_err(), "ChannelClosed");
}

#[tokio::test]
async fn a_reopened_channel_has_a_new_id_and_old_vouchers_pay_nothing_there() {
    let Some(w) = world().await else { return };
    let publisher = w.as_(&w.publisher).await;
    let provider = w.as_(&w.provider).await;
    let pod = B256::repeat_byte(6);
    let first = publisher.open(w.provider.address(), pod, U256::from(100), 1).await.unwrap();
    let old = w.voucher(first, 80);
    provider.claim(&old).await.unwrap();
    publisher.start_unlock(first).await.unwrap();
    advance_chain_time(&publisher, 2).await;
    publisher.withdraw(first).await.unwrap();

    // Same publisher, provider, pod and token: Apocryph would have reused the
    // slot with its payout counter at zero, and the old voucher would pay again.
    let second = publisher.open(w.provider.address(), pod, U256::from(100), 1).await.unwrap();
    assert_ne!(first, second);
    reverted_with(provider.claim(&old).await.unwrap_err(), "ChannelClosed");
    let mut replay = old.clone();
    replay.channel_id = second;
    reverted_with(provider.claim(&replay).await.unwrap_err(), "BadVoucherSignature");
    assert_eq!(provider.balance(w.provider.address()).await.unwrap(), U256::from(80));
}

#[tokio::test]
async fn a_chain_that_is_down_or_silent_is_an_error_not_a_hang() {
    let chain = ChainRef { chain_id: 31337, contract: Address::repeat_byte(1), token: Address::repeat_byte(2) };
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let e = ChainClient::connect_with(&format!("http://127.0.0.1:{port}"), dev_key(0), chain, Duration::from_secs(5))
        .await
        .err()
        .expect("nothing listens");
    assert!(matches!(e, MarketError::Chain(_)), "{e}");

    // Accepts connections and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let e = ChainClient::connect_with(&format!("http://{addr}"), dev_key(0), chain, Duration::from_millis(500))
        .await
        .err()
        .expect("nothing answers");
    assert!(matches!(e, MarketError::ChainTimeout { .. }), "{e}");
}

#[tokio::test]
async fn connecting_checks_the_chain_id_and_that_the_contract_exists() {
    let Some(w) = world().await else { return };
    let e = ChainClient::connect(&w.url, dev_key(1), ChainRef { chain_id: 5, ..w.chain }).await.err().unwrap();
    assert!(matches!(e, MarketError::WrongChain { .. }), "{e}");
    let e = ChainClient::connect(&w.url, dev_key(1), ChainRef { contract: Address::repeat_byte(3), ..w.chain })
        .await
        .err()
        .unwrap();
    assert!(e.to_string().contains("no contract"), "{e}");
}

#[test]
fn the_committed_bytecode_is_what_the_pinned_compiler_makes_of_the_source() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    if !root.join("node_modules/solc").is_dir() {
        assert!(std::env::var_os("SEALPOD_REQUIRE_ANVIL").is_none(), "npm ci did not install solc");
        eprintln!("skipped: solc-js not installed (npm ci)");
        return;
    }
    let out = std::process::Command::new("node")
        .arg("contracts/build.js")
        .arg("--check")
        .current_dir(&root)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}
