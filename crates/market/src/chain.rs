//! The payment-channel contract over JSON-RPC.
//!
//! The contract's ABI and bytecode come from `contracts/out/*.json`, compiled
//! from `contracts/src` with the pinned solc-js (`node contracts/build.js`);
//! CI checks that recompiling gives the same bytes. Every call has a timeout:
//! a node that is down or slow is an error to report, never a hang.

use std::future::IntoFuture;
use std::time::Duration;

use alloy::network::EthereumWallet;
use alloy::primitives::{Address, B256, U256};
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::signers::local::PrivateKeySigner;
use serde::{Deserialize, Serialize};

use crate::{MarketError, SignedVoucher};

alloy::sol!(
    #[sol(rpc)]
    #[derive(Debug)]
    SealpodChannels,
    "../../contracts/out/SealpodChannels.json"
);
alloy::sol!(
    #[sol(rpc)]
    #[derive(Debug)]
    SealpodTestToken,
    "../../contracts/out/SealpodTestToken.json"
);

/// Which chain, payment contract and token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChainRef {
    pub chain_id: u64,
    pub contract: Address,
    pub token: Address,
}

/// A channel as the contract stores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChannelInfo {
    pub id: B256,
    pub publisher: Address,
    pub provider: Address,
    pub token: Address,
    pub pod_id: B256,
    pub deposited: U256,
    pub claimed: U256,
    pub unlock_delay: u64,
    /// Unix seconds the publisher may withdraw at; 0 while no unlock is pending.
    pub unlock_at: u64,
    pub closed: bool,
}

/// A connection to the chain with a key that signs transactions.
pub struct ChainClient {
    provider: DynProvider,
    address: Address,
    pub chain: ChainRef,
    timeout: Duration,
}

/// How long one JSON-RPC interaction (a call, or a transaction until its
/// receipt) may take.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

fn connect_http(rpc: &str, key: PrivateKeySigner) -> Result<DynProvider, MarketError> {
    let url = rpc.parse().map_err(|e| MarketError::Bad { what: "RPC URL", detail: format!("{rpc:?}: {e}") })?;
    // The nonce is asked of the node for every transaction: a cached one goes
    // out of step after a transaction that failed before it was sent (a
    // refused claim), and the next one then waits for a gap that never fills.
    Ok(ProviderBuilder::default()
        .with_gas_estimation()
        .with_simple_nonce_management()
        .fetch_chain_id()
        .wallet(EthereumWallet::from(key))
        .connect_http(url)
        .erased())
}

async fn within<T, E: std::fmt::Display>(
    what: &str,
    timeout: Duration,
    fut: impl IntoFuture<Output = Result<T, E>>,
) -> Result<T, MarketError> {
    match tokio::time::timeout(timeout, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(MarketError::Chain(format!("{what}: {}", explain(&e.to_string())))),
        Err(_) => Err(MarketError::ChainTimeout { what: what.to_owned(), seconds: timeout.as_secs() }),
    }
}

/// Names the contract's custom errors, which JSON-RPC reports as hex.
fn explain(message: &str) -> String {
    use alloy::sol_types::SolInterface;
    for (start, _) in message.match_indices("0x") {
        let hex_part: String = message[start + 2..].chars().take_while(|c| c.is_ascii_hexdigit()).collect();
        if let Ok(bytes) = hex::decode(&hex_part) {
            if let Ok(e) = SealpodChannels::SealpodChannelsErrors::abi_decode(&bytes) {
                return format!("reverted: {e:?}");
            }
        }
    }
    message.to_owned()
}

impl ChainClient {
    /// Connects, checks that the node is on `chain.chain_id` and that the
    /// payment contract has code there.
    pub async fn connect(rpc: &str, key: PrivateKeySigner, chain: ChainRef) -> Result<ChainClient, MarketError> {
        ChainClient::connect_with(rpc, key, chain, DEFAULT_TIMEOUT).await
    }

    pub async fn connect_with(
        rpc: &str,
        key: PrivateKeySigner,
        chain: ChainRef,
        timeout: Duration,
    ) -> Result<ChainClient, MarketError> {
        let address = key.address();
        let provider = connect_http(rpc, key)?;
        let id = within("eth_chainId", timeout, provider.get_chain_id()).await?;
        if id != chain.chain_id {
            return Err(MarketError::WrongChain {
                what: "chain id",
                got: id.to_string(),
                want: chain.chain_id.to_string(),
            });
        }
        let code = within("eth_getCode", timeout, provider.get_code_at(chain.contract)).await?;
        if code.is_empty() {
            return Err(MarketError::Chain(format!(
                "no contract at {} on chain {}: deploy it (sealpod chain deploy) or fix the address",
                chain.contract, chain.chain_id
            )));
        }
        Ok(ChainClient { provider, address, chain, timeout })
    }

    /// Deploys a test token and the channel contract on a development chain,
    /// mints `mint` tokens to each of `to`, and returns where they are.
    pub async fn deploy_dev(
        rpc: &str,
        key: PrivateKeySigner,
        to: &[Address],
        mint: U256,
    ) -> Result<ChainRef, MarketError> {
        let provider = connect_http(rpc, key)?;
        let t = DEFAULT_TIMEOUT;
        let chain_id = within("eth_chainId", t, provider.get_chain_id()).await?;
        let token = within("deploy token", t, SealpodTestToken::deploy(provider.clone())).await?;
        let channels = within("deploy channels", t, SealpodChannels::deploy(provider.clone())).await?;
        for a in to {
            let pending = within("mint", t, token.mint(*a, mint).send()).await?;
            within("mint receipt", t, pending.get_receipt()).await?;
        }
        Ok(ChainRef { chain_id, contract: *channels.address(), token: *token.address() })
    }

    /// The address transactions are sent from.
    pub fn address(&self) -> Address {
        self.address
    }

    fn channels(&self) -> SealpodChannels::SealpodChannelsInstance<DynProvider> {
        SealpodChannels::new(self.chain.contract, self.provider.clone())
    }

    fn token(&self) -> SealpodTestToken::SealpodTestTokenInstance<DynProvider> {
        // Only the ERC-20 functions are used on a real token.
        SealpodTestToken::new(self.chain.token, self.provider.clone())
    }

    /// The token balance of `who`.
    pub async fn balance(&self, who: Address) -> Result<U256, MarketError> {
        within("balanceOf", self.timeout, self.token().balanceOf(who).call()).await
    }

    /// Mints test tokens (development chains only: a real token refuses).
    pub async fn mint(&self, to: Address, amount: U256) -> Result<(), MarketError> {
        let pending = within("mint", self.timeout, self.token().mint(to, amount).send()).await?;
        self.confirm("mint", pending).await.map(|_| ())
    }

    async fn confirm(
        &self,
        what: &str,
        pending: alloy::providers::PendingTransactionBuilder<alloy::network::Ethereum>,
    ) -> Result<alloy::rpc::types::TransactionReceipt, MarketError> {
        let receipt = within(what, self.timeout, pending.get_receipt()).await?;
        if !receipt.status() {
            return Err(MarketError::Chain(format!("{what}: transaction {} reverted", receipt.transaction_hash)));
        }
        Ok(receipt)
    }

    async fn approve(&self, amount: U256) -> Result<(), MarketError> {
        let pending = within("approve", self.timeout, self.token().approve(self.chain.contract, amount).send()).await?;
        self.confirm("approve", pending).await.map(|_| ())
    }

    /// Opens a channel to `provider` for `pod_id` with `amount` deposited;
    /// returns its id.
    pub async fn open(
        &self,
        provider: Address,
        pod_id: B256,
        amount: U256,
        unlock_delay: u64,
    ) -> Result<B256, MarketError> {
        self.approve(amount).await?;
        let channels = self.channels();
        let call = channels.open(provider, self.chain.token, pod_id, amount, unlock_delay);
        let pending = within("open", self.timeout, call.send()).await?;
        let receipt = self.confirm("open", pending).await?;
        receipt
            .decoded_log::<SealpodChannels::ChannelOpened>()
            .map(|log| log.data.channelId)
            .ok_or_else(|| MarketError::Chain("open: no ChannelOpened event in the receipt".into()))
    }

    pub async fn top_up(&self, id: B256, amount: U256) -> Result<(), MarketError> {
        self.approve(amount).await?;
        let pending = within("topUp", self.timeout, self.channels().topUp(id, amount).send()).await?;
        self.confirm("topUp", pending).await.map(|_| ())
    }

    /// Claims `voucher` for the channel's provider; returns what it paid.
    pub async fn claim(&self, voucher: &SignedVoucher) -> Result<U256, MarketError> {
        let channels = self.channels();
        let call = channels.claim(voucher.channel_id, voucher.cumulative_amount, voucher.signature.clone().into());
        let pending = within("claim", self.timeout, call.send()).await?;
        let receipt = self.confirm("claim", pending).await?;
        Ok(receipt.decoded_log::<SealpodChannels::Claimed>().map(|l| l.data.amount).unwrap_or(U256::ZERO))
    }

    /// Starts the unlock timer; returns when the rest may be withdrawn.
    pub async fn start_unlock(&self, id: B256) -> Result<u64, MarketError> {
        let pending = within("startUnlock", self.timeout, self.channels().startUnlock(id).send()).await?;
        let receipt = self.confirm("startUnlock", pending).await?;
        Ok(receipt.decoded_log::<SealpodChannels::UnlockStarted>().map(|l| l.data.unlockAt).unwrap_or(0))
    }

    /// Withdraws the unclaimed rest after the unlock delay and closes the
    /// channel; returns what came back.
    pub async fn withdraw(&self, id: B256) -> Result<U256, MarketError> {
        let pending = within("withdraw", self.timeout, self.channels().withdraw(id).send()).await?;
        let receipt = self.confirm("withdraw", pending).await?;
        Ok(receipt.decoded_log::<SealpodChannels::Withdrawn>().map(|l| l.data.refunded).unwrap_or(U256::ZERO))
    }

    /// The channel as stored; an unknown id is an error.
    pub async fn channel(&self, id: B256) -> Result<ChannelInfo, MarketError> {
        let c = within("channel", self.timeout, self.channels().channel(id).call()).await?;
        if c.publisher == Address::ZERO {
            return Err(MarketError::Chain(format!("no channel {id} in contract {}", self.chain.contract)));
        }
        Ok(ChannelInfo {
            id,
            publisher: c.publisher,
            provider: c.provider,
            token: c.token,
            pod_id: c.podId,
            deposited: c.deposited,
            claimed: c.claimed,
            unlock_delay: c.unlockDelay,
            unlock_at: c.unlockAt,
            closed: c.closed,
        })
    }

    /// The chain's latest block time (a dev chain's clock can run ahead).
    pub async fn now(&self) -> Result<u64, MarketError> {
        let block = within(
            "eth_getBlockByNumber",
            self.timeout,
            self.provider.get_block_by_number(alloy::eips::BlockNumberOrTag::Latest),
        )
        .await?;
        block.map(|b| b.header.timestamp).ok_or_else(|| MarketError::Chain("no latest block".into()))
    }

    /// Moves a development chain's clock forward and mines a block (anvil's
    /// `evm_increaseTime`); real chains refuse.
    pub async fn dev_increase_time(&self, seconds: u64) -> Result<(), MarketError> {
        let p = &self.provider;
        within(
            "evm_increaseTime",
            self.timeout,
            p.raw_request::<_, serde_json::Value>("evm_increaseTime".into(), (seconds,)),
        )
        .await?;
        within("evm_mine", self.timeout, p.raw_request::<_, serde_json::Value>("evm_mine".into(), ())).await?;
        Ok(())
    }

    /// The underlying provider, for tests that move a dev chain's clock.
    pub fn rpc(&self) -> &DynProvider {
        &self.provider
    }
}
