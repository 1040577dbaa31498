//! The publisher's side of the market: reading offers, opening the channel a
//! pod is paid through, and signing vouchers for it.

use sealpod_market::keys::PrivateKeySigner;
use sealpod_market::{bill, offer, ChainClient, ChainRef, Reservation, SignedVoucher, VerifiedOffer, B256, U256};
use sealpod_net::PeerId;
use sealpod_proto::{CapacityRequest, Resources};
use serde::{Deserialize, Serialize};

use crate::{Publisher, PublisherError};

/// How to pay for a deployment.
#[derive(Clone)]
pub struct PaymentPlan {
    /// The JSON-RPC endpoint of the offer's chain.
    pub rpc: String,
    /// The publisher's chain key: opens the channel, signs vouchers.
    pub key: PrivateKeySigner,
    /// Deposited into a new channel.
    pub deposit: U256,
    /// Paid ahead with the first voucher, at the pod's worst-case rate.
    pub prepay_seconds: u64,
    /// The channel's unlock delay; at least what the offer demands.
    pub unlock_delay: Option<u64>,
}

/// What the publisher keeps about a paid pod.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PodPayment {
    pub rpc: String,
    pub chain: ChainRef,
    pub channel_id: B256,
    /// The chain address that opened the channel and signs its vouchers.
    pub publisher: sealpod_market::Address,
    pub deposit: U256,
    /// The highest voucher signed so far.
    pub vouchered: U256,
    /// Token units per second with every reserved core busy.
    pub worst_rate: U256,
}

/// An offer that was verified, with what it asks for this pod.
#[derive(Debug, Clone)]
pub struct Quote {
    pub provider: PeerId,
    pub offer: sealpod_proto::Offer,
    pub verified: VerifiedOffer,
    pub available: bool,
    pub free: Resources,
    /// Token units per second for the request while reserved.
    pub rate: U256,
    /// Including CPU time with every reserved core busy.
    pub worst_rate: U256,
}

impl Publisher {
    /// Asks a connected provider for its offer for `request` and verifies it
    /// (signed by that very peer, unexpired). `Ok(None)`: it sells nothing.
    pub async fn quote(
        &self,
        peer: PeerId,
        request: CapacityRequest,
        reservation: &Reservation,
    ) -> Result<Option<Quote>, PublisherError> {
        let response = self.node.capacity(peer, request).await?;
        if let Some(error) = response.error {
            return Err(PublisherError::Remote { peer, error });
        }
        let Some(o) = response.offer else { return Ok(None) };
        let verified = offer::verify(&o, &peer, now()).map_err(|e| PublisherError::Market(e.to_string()))?;
        Ok(Some(Quote {
            provider: peer,
            rate: bill::rate_per_second(reservation, &verified.prices, false),
            worst_rate: bill::rate_per_second(reservation, &verified.prices, true),
            offer: o,
            verified,
            available: response.available,
            free: response.free.unwrap_or_default(),
        }))
    }

    /// Opens a channel for `quote` and signs the first voucher.
    pub(crate) async fn open_for(
        &self,
        quote: &Quote,
        plan: &PaymentPlan,
    ) -> Result<(sealpod_proto::PaymentChannel, SignedVoucher, PodPayment), PublisherError> {
        let market = |e: sealpod_market::MarketError| PublisherError::Market(e.to_string());
        let chain = quote.verified.chain;
        let client = ChainClient::connect(&plan.rpc, plan.key.clone(), chain).await.map_err(market)?;
        let unlock = plan.unlock_delay.unwrap_or(0).max(quote.verified.min_unlock_seconds);
        let pod_key = B256::from(rand::random::<[u8; 32]>());
        let channel_id = client.open(quote.verified.payout, pod_key, plan.deposit, unlock).await.map_err(market)?;
        let first = (quote.worst_rate * U256::from(plan.prepay_seconds)).min(plan.deposit).max(U256::from(1));
        let voucher = SignedVoucher::sign(&plan.key, &chain, channel_id, first);
        let channel = sealpod_proto::PaymentChannel {
            chain_id: chain.chain_id,
            contract_address: chain.contract.to_vec(),
            publisher_address: plan.key.address().to_vec(),
            provider_address: quote.verified.payout.to_vec(),
            channel_id: channel_id.to_vec(),
            token_address: chain.token.to_vec(),
        };
        let record = PodPayment {
            rpc: plan.rpc.clone(),
            chain,
            channel_id,
            publisher: plan.key.address(),
            deposit: plan.deposit,
            vouchered: first,
            worst_rate: quote.worst_rate,
        };
        Ok((channel, voucher, record))
    }

    /// Signs a voucher raising what `pod_id`'s channel has paid to `amount`
    /// (cumulative) and hands it to the provider.
    pub async fn pay(
        &self,
        pod_id: &str,
        key: &PrivateKeySigner,
        amount: U256,
    ) -> Result<sealpod_proto::PodStatus, PublisherError> {
        let mut records = self.records()?;
        let r = records.get(pod_id).ok_or_else(|| PublisherError::UnknownPod(pod_id.to_owned()))?;
        let payment = r
            .payment
            .clone()
            .ok_or_else(|| PublisherError::Market(format!("pod {pod_id} is not paid through a channel")))?;
        if key.address() != payment.publisher {
            return Err(PublisherError::Market(format!(
                "pod {pod_id}'s channel was opened by {}, and only its key signs vouchers that count; this key is {} (pass --chain-key)",
                payment.publisher,
                key.address()
            )));
        }
        let voucher = SignedVoucher::sign(key, &payment.chain, payment.channel_id, amount);
        let op = sealpod_proto::pod_control_request::Op::Pay(sealpod_proto::PayRequest {
            pod_id: pod_id.to_owned(),
            voucher: Some(voucher.to_proto()),
        });
        let status = match self.control(pod_id, op).await? {
            sealpod_proto::pod_control_response::Result::Paid(s) => s,
            _ => return Err(PublisherError::Market("unexpected answer to a payment".into())),
        };
        if let Some(rec) = records.get_mut(pod_id).and_then(|r| r.payment.as_mut()) {
            rec.vouchered = rec.vouchered.max(amount);
        }
        self.save_records(&records)?;
        Ok(status)
    }
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl Publisher {
    /// Asks providers (`addrs`, or those found on the DHT or by mDNS) for
    /// offers for `want`, keeps those that fit (room, TEE kind, price) and
    /// sorts them cheapest first. Returns the quotes with the addresses
    /// they were reached at, and why the others were skipped.
    pub async fn list_offers(
        &self,
        addrs: &[sealpod_net::Multiaddr],
        want: Resources,
        tee: Option<sealpod_proto::TeeKind>,
        max_rate: Option<U256>,
    ) -> Result<(Vec<(Quote, Vec<String>)>, Vec<String>), PublisherError> {
        let mut peers = Vec::new();
        let mut skipped = Vec::new();
        if addrs.is_empty() {
            for _ in 0..10 {
                peers = self.node.find_providers().await.unwrap_or_default().into_iter().map(|p| (p, None)).collect();
                if !peers.is_empty() {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            }
        } else {
            for a in addrs {
                match self.node.dial(a).await {
                    Ok(p) => peers.push((p, Some(a.to_string()))),
                    Err(e) => skipped.push(format!("{a}: {e}")),
                }
            }
        }
        let reservation = Reservation::of_resources(&want);
        let mut out = Vec::new();
        for (peer, addr) in peers {
            let request =
                CapacityRequest { resources: Some(want), tee: tee.unwrap_or_default() as i32, ..Default::default() };
            match self.quote(peer, request, &reservation).await {
                Ok(Some(q)) => {
                    if !q.available {
                        skipped.push(format!("{peer}: no room for the request"));
                    } else if tee.is_some_and(|t| t != q.verified.tee) {
                        skipped.push(format!("{peer}: advertises TEE {:?}", q.verified.tee));
                    } else if max_rate.is_some_and(|m| q.rate > m) {
                        skipped.push(format!("{peer}: {} per second is above --max-price", q.rate));
                    } else {
                        let addrs = match addr {
                            Some(a) => vec![a],
                            None => {
                                self.node.peer_addr(peer).await.map(|a| format!("{a}/p2p/{peer}")).into_iter().collect()
                            }
                        };
                        out.push((q, addrs));
                    }
                }
                Ok(None) => skipped.push(format!("{peer}: makes no offer (it does not sell)")),
                Err(e) => skipped.push(format!("{peer}: {e}")),
            }
        }
        out.sort_by(|(a, _), (b, _)| a.rate.cmp(&b.rate).then(a.worst_rate.cmp(&b.worst_rate)));
        Ok((out, skipped))
    }
}
