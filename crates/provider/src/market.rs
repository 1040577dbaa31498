//! The provider's side of the market: signed offers on the capacity protocol,
//! payment checks at provisioning, vouchers, and the billing loop that meters,
//! suspends lapsed pods and claims on chain. Decisions are in [`crate::billing`];
//! this module does the I/O around them.

use std::sync::Arc;
use std::time::Duration;

use sealpod_market::{offer, ChainClient, MarketError, MarketTerms, Reservation, SignedVoucher, B256};
use sealpod_proto::{Error, ErrorCode, Offer, PayRequest, Pod, PodStatus, ProvisionPodRequest};

use crate::billing::{Account, Action};
use crate::Provider;

fn refused(field: &str, e: impl std::fmt::Display) -> Error {
    Error { code: ErrorCode::PaymentRequired as i32, message: e.to_string(), field: field.into() }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

impl Provider {
    pub(crate) fn terms(&self) -> Option<&MarketTerms> {
        self.config.market.as_ref()
    }

    /// A fresh offer signed by the node key, when the provider sells.
    pub(crate) fn offer(&self) -> Option<Offer> {
        let terms = self.terms()?;
        let keypair = self.keypair.get()?;
        let tee = self
            .attestor
            .get()
            .and_then(|(a, _)| a.kind())
            .map(|k| k.to_proto())
            .unwrap_or(sealpod_proto::TeeKind::Unspecified);
        let gpus = self.gpus.offer(&self.config.gpus.kind);
        Some(terms.offer_with_gpus(keypair, tee, gpus, crate::now()))
    }

    fn chain_key(&self) -> Result<sealpod_market::keys::PrivateKeySigner, MarketError> {
        match self.terms().and_then(|t| t.claim_key.clone()) {
            Some(path) => sealpod_market::keys::load(&path),
            None => sealpod_market::keys::load_or_create(&self.config.state_dir.join("chain.key")),
        }
    }

    async fn chain(&self) -> Result<ChainClient, MarketError> {
        let terms = self.terms().ok_or_else(|| MarketError::Chain("this provider does not sell".into()))?;
        ChainClient::connect(&terms.rpc, self.chain_key()?, terms.chain).await
    }

    /// Runs `f` on the provider's runtime from a blocking request handler.
    fn block_on<T>(&self, f: impl std::future::Future<Output = T>) -> T {
        self.handle.get().expect("serving").block_on(f)
    }

    /// Checks what pays for a pod: the offer it is bought under (ours,
    /// unaltered, unexpired), the channel (on the offer's chain, contract and
    /// token, paying our payout address, open, with an unlock delay we
    /// accept, funding no other pod) and a first voucher if there is one.
    pub(crate) fn admit_payment(
        &self,
        pod_id: &str,
        pod: &Pod,
        request: &ProvisionPodRequest,
    ) -> Result<Option<Account>, Error> {
        let Some(terms) = self.terms() else { return Ok(None) };
        let me = self
            .keypair
            .get()
            .map(|k| k.public().to_peer_id())
            .ok_or_else(|| Error::new(ErrorCode::Unavailable, "the provider is still starting"))?;
        let Some(o) = &request.offer else {
            return Err(refused(
                "offer",
                "this provider charges: ask for its offer (provisioning-capacity) and send it with a payment channel",
            ));
        };
        let verified = offer::verify(o, &me, crate::now()).map_err(|e| refused("offer", e))?;
        let Some(payment) = &request.payment else {
            return Err(refused("payment", "this provider charges: open a payment channel and send it"));
        };
        let hex0x = |b: &[u8]| format!("0x{}", hex::encode(b));
        if payment.chain_id != verified.chain.chain_id {
            return Err(refused(
                "payment.chain_id",
                MarketError::WrongChain {
                    what: "chain",
                    got: payment.chain_id.to_string(),
                    want: verified.chain.chain_id.to_string(),
                },
            ));
        }
        if payment.contract_address.as_slice() != verified.chain.contract.as_slice() {
            return Err(refused(
                "payment.contract_address",
                MarketError::WrongChain {
                    what: "contract",
                    got: hex0x(&payment.contract_address),
                    want: verified.chain.contract.to_string(),
                },
            ));
        }
        if payment.token_address.as_slice() != verified.chain.token.as_slice() {
            return Err(refused(
                "payment.token_address",
                MarketError::WrongChain {
                    what: "token",
                    got: hex0x(&payment.token_address),
                    want: verified.chain.token.to_string(),
                },
            ));
        }
        if payment.channel_id.len() != 32 {
            return Err(refused("payment.channel_id", "a channel id is 32 bytes"));
        }
        let channel_id = B256::from_slice(&payment.channel_id);
        if self.accounts().iter().any(|a| a.channel_id == channel_id) {
            return Err(refused("payment.channel_id", format!("channel {channel_id} already pays for another pod")));
        }
        let info = self
            .block_on(async { self.chain().await?.channel(channel_id).await })
            .map_err(|e| Error::new(ErrorCode::Unavailable, format!("cannot check the payment channel: {e}")))?;
        let problem = if info.closed {
            Some("is closed".to_string())
        } else if info.provider != terms.payout {
            Some(format!("pays {}, not this provider's payout address {}", info.provider, terms.payout))
        } else if info.token != verified.chain.token {
            Some(format!("is in token {}, not {}", info.token, verified.chain.token))
        } else if info.unlock_at != 0 {
            Some("is being unlocked by its publisher".to_string())
        } else if info.unlock_delay < verified.min_unlock_seconds {
            Some(format!(
                "has an unlock delay of {} s; this provider needs at least {} s to claim before a withdrawal",
                info.unlock_delay, verified.min_unlock_seconds
            ))
        } else if info.deposited.is_zero() {
            Some("has no deposit".to_string())
        } else {
            None
        };
        if let Some(p) = problem {
            return Err(refused("payment.channel_id", format!("channel {channel_id} {p}")));
        }
        let reservation = Reservation::of_pod(pod);
        let mut account = Account {
            pod_id: pod_id.to_owned(),
            chain: verified.chain,
            channel_id,
            publisher: info.publisher,
            deposit: info.deposited,
            prices: verified.prices.iter().map(|(r, p)| (r.name().to_owned(), p.to_string())).collect(),
            grace_seconds: verified.grace_seconds,
            meter: sealpod_market::Meter::start(reservation, now_ms()),
            voucher: None,
            claimed: info.claimed,
            unpaid_since: None,
            suspended_at: None,
            claim_error: None,
            ended: false,
            end_reason: None,
        };
        if let Some(v) = &request.voucher {
            let v = SignedVoucher::from_proto(v).map_err(|e| refused("voucher", e))?;
            v.check(&account.chain, channel_id, info.publisher, info.claimed, info.deposited)
                .map_err(|e| refused("voucher", e))?;
            account.accept(&v, now_ms());
        }
        Ok(Some(account))
    }

    pub(crate) fn accounts(&self) -> Vec<Account> {
        self.store.accounts().unwrap_or_default().iter().filter_map(|b| serde_json::from_slice(b).ok()).collect()
    }

    pub(crate) fn account(&self, pod_id: &str) -> Option<Account> {
        // By key: status and list ask for every pod, and must not read every account each time.
        self.store.account(pod_id).ok().flatten().and_then(|b| serde_json::from_slice(&b).ok())
    }

    pub(crate) fn save_account(&self, a: &Account) {
        match serde_json::to_vec(a) {
            Ok(b) => {
                if let Err(e) = self.store.put_account(&a.pod_id, &b) {
                    tracing::error!(pod = %a.pod_id, error = %e, "could not save billing account");
                }
            }
            Err(e) => tracing::error!(pod = %a.pod_id, error = %e, "could not serialize billing account"),
        }
    }

    /// Adds billing to a pod's status (and says when it is suspended).
    pub(crate) fn with_billing(&self, mut s: PodStatus) -> PodStatus {
        if let Some(a) = self.account(&s.pod_id) {
            let retention = self.terms().map(|t| t.retention_seconds).unwrap_or(0);
            if let Some(at) = a.suspended_at {
                s.phase = sealpod_proto::PodPhase::Suspended as i32;
                s.message = format!(
                    "suspended: the bill ({}) passed the vouchers ({}) for more than the {} s grace period; a voucher covering the bill resumes it until {} (then it is deleted)",
                    a.bill().total,
                    a.vouchered(),
                    a.grace_seconds,
                    at + retention
                );
            }
            s.billing = Some(a.to_proto());
        }
        s
    }

    /// A voucher from the pod's owner.
    pub(crate) fn pay(&self, peer: &sealpod_net::PeerId, request: PayRequest) -> Result<PodStatus, Error> {
        let record = self.owned(peer, &request.pod_id)?;
        let _guard = self.billing_lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut account = self
            .account(&record.pod_id)
            .ok_or_else(|| refused("pod_id", format!("pod {} is not paid through a channel", record.pod_id)))?;
        let v = request.voucher.as_ref().ok_or_else(|| refused("voucher", "no voucher"))?;
        let v = SignedVoucher::from_proto(v).map_err(|e| refused("voucher", e))?;
        if v.cumulative_amount > account.deposit {
            // Perhaps topped up since: ask the chain before refusing.
            if let Ok(info) = self.block_on(async { self.chain().await?.channel(account.channel_id).await }) {
                account.deposit = info.deposited;
                account.claimed = account.claimed.max(info.claimed);
            }
        }
        v.check(&account.chain, account.channel_id, account.publisher, account.vouchered(), account.deposit).map_err(
            |e| {
                crate::metrics::bump(&self.counters.vouchers_refused);
                refused("voucher", e)
            },
        )?;
        crate::metrics::bump(&self.counters.vouchers);
        let now = now_ms();
        account.meter.advance(now, self.usage(&record.pod_id));
        if account.accept(&v, now) {
            match sealpod_runtime::cgroup::freeze(&record.pod_id, false) {
                Ok(()) => tracing::info!(pod = %record.pod_id, "payment arrived: pod resumed"),
                Err(e) => tracing::error!(pod = %record.pod_id, error = %e, "could not thaw pod"),
            }
        }
        self.save_account(&account);
        tracing::info!(pod = %record.pod_id, amount = %v.cumulative_amount, "voucher accepted");
        let state = self.runtime.state(&record.pod_id).map_err(crate::internal)?;
        Ok(self.with_billing(crate::status(&record, &state)))
    }

    fn usage(&self, pod_id: &str) -> Option<sealpod_market::Usage> {
        sealpod_runtime::cgroup::usage(pod_id)
            .map(|u| sealpod_market::Usage { cpu_usec: u.cpu_usec, peak_memory_bytes: u.memory_peak_bytes })
    }

    /// A pod's account after its pod was deleted: billed to the end, claimed
    /// as soon as possible, removed once everything is claimed.
    pub(crate) fn end_account(&self, pod_id: &str, reason: &str) {
        let _guard = self.billing_lock.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(mut a) = self.account(pod_id) {
            a.meter.pause(now_ms(), self.usage(pod_id));
            a.ended = true;
            a.end_reason = Some(reason.to_owned());
            self.save_account(&a);
        }
    }

    /// One billing pass: meter every pod, suspend or delete lapsed ones.
    fn bill_pass(&self) {
        let retention = self.terms().map(|t| t.retention_seconds).unwrap_or(0);
        let mut deletes = Vec::new();
        {
            let _guard = self.billing_lock.lock().unwrap_or_else(|p| p.into_inner());
            for mut a in self.accounts().into_iter().filter(|a| !a.ended) {
                let now = now_ms();
                match a.tick(now, self.usage(&a.pod_id), retention) {
                    Action::None => {}
                    Action::Suspend => match sealpod_runtime::cgroup::freeze(&a.pod_id, true) {
                        Ok(()) => {
                            a.suspended(now, self.usage(&a.pod_id));
                            crate::metrics::bump(&self.counters.suspensions);
                            tracing::warn!(pod = %a.pod_id, billed = %a.bill().total, vouchered = %a.vouchered(), "payment lapsed past the grace period: pod suspended");
                        }
                        Err(e) => tracing::error!(pod = %a.pod_id, error = %e, "could not suspend lapsed pod"),
                    },
                    Action::Delete => deletes.push(a.pod_id.clone()),
                }
                self.save_account(&a);
            }
        }
        for pod_id in deletes {
            tracing::warn!(pod = %pod_id, "unpaid past the retention time: deleting pod");
            let _ = sealpod_runtime::cgroup::freeze(&pod_id, false);
            self.remove_pod(&pod_id);
            self.end_account(&pod_id, "deleted: unpaid past the retention time");
        }
    }

    /// Claims every account that has something to claim (all of them when
    /// `all`; otherwise only ended ones and those whose channel is unlocking).
    async fn claim_pass(&self, all: bool) {
        // Between claim intervals only ended pods are claimed at once; an
        // unlocking channel is noticed at the next interval, well within the
        // unlock delay the offer demands.
        let candidates: Vec<Account> =
            self.accounts().into_iter().filter(|a| a.claimable() && (all || a.ended)).collect();
        if candidates.is_empty() {
            return;
        }
        let client = match self.chain().await {
            Ok(c) => c,
            Err(e) => {
                let _guard = self.billing_lock.lock().unwrap_or_else(|p| p.into_inner());
                for mut a in self.accounts().into_iter().filter(|a| a.claimable()) {
                    a.claim_error = Some(format!("chain unreachable, claim queued: {e}"));
                    self.save_account(&a);
                }
                tracing::warn!(error = %e, "chain unreachable: claims stay queued; pods keep running");
                return;
            }
        };
        for a in candidates {
            let info = client.channel(a.channel_id).await;
            let outcome = match (a.signed_voucher(), a.claimable()) {
                (Some(v), true) => Some(client.claim(&v).await),
                _ => None,
            };
            let _guard = self.billing_lock.lock().unwrap_or_else(|p| p.into_inner());
            let Some(mut fresh) = self.account(&a.pod_id) else { continue };
            if let Ok(info) = &info {
                fresh.deposit = fresh.deposit.max(info.deposited);
                fresh.claimed = fresh.claimed.max(info.claimed);
                if info.closed {
                    // Withdrawn by the publisher: nothing more can be claimed,
                    // so stop retrying (the unlock delay was the time to claim).
                    fresh.deposit = fresh.claimed;
                    fresh.claim_error = Some("channel closed by its publisher after the unlock delay".into());
                }
            }
            match outcome {
                Some(Ok(paid)) => {
                    fresh.claimed += paid;
                    crate::metrics::bump(&self.counters.claims);
                    fresh.claim_error = None;
                    tracing::info!(pod = %a.pod_id, %paid, claimed = %fresh.claimed, "claimed on chain");
                }
                Some(Err(e)) => {
                    tracing::warn!(pod = %a.pod_id, error = %e, "claim failed; it will be retried");
                    fresh.claim_error = Some(e.to_string());
                    crate::metrics::bump(&self.counters.claims_failed);
                }
                None => {}
            }
            if fresh.ended && !fresh.claimable() {
                tracing::info!(pod = %a.pod_id, claimed = %fresh.claimed, "account settled");
            }
            self.save_account(&fresh);
        }
    }

    /// Meters, suspends and claims until the process ends.
    pub(crate) async fn run_billing(self: Arc<Self>) {
        let Some(terms) = self.terms().cloned() else { return };
        let mut bill_tick = tokio::time::interval(Duration::from_secs(terms.bill_interval_seconds));
        let mut claim_tick = tokio::time::interval(Duration::from_secs(terms.claim_interval_seconds));
        claim_tick.tick().await;
        loop {
            tokio::select! {
                _ = bill_tick.tick() => {
                    let this = self.clone();
                    let _ = tokio::task::spawn_blocking(move || this.bill_pass()).await;
                    // Ended pods and unlocking channels are claimed at once.
                    self.claim_pass(false).await;
                }
                _ = claim_tick.tick() => self.claim_pass(true).await,
            }
        }
    }
}
