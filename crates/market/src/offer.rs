//! The provider's terms (from its config file) and the offers it signs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use alloy::primitives::Address;
use libp2p_identity::{Keypair, PeerId, PublicKey};
use prost::Message;
use sealpod_proto::{GpuOffer, Offer, TeeKind};
use serde::Deserialize;

use crate::{ChainRef, MarketError, PriceList};

const OFFER_CONTEXT: &[u8] = b"sealpod-offer-v1\0";

/// What a provider sells at, on which chain, and how patient it is.
#[derive(Debug, Clone)]
pub struct MarketTerms {
    /// The JSON-RPC endpoint claims are sent to (the provider's own view).
    pub rpc: String,
    pub chain: ChainRef,
    /// Where claims pay out.
    pub payout: Address,
    /// The key that sends claim transactions (needs gas, not the payout).
    pub claim_key: Option<PathBuf>,
    pub prices: PriceList,
    pub offer_validity_seconds: u64,
    pub grace_seconds: u64,
    pub min_unlock_seconds: u64,
    pub claim_interval_seconds: u64,
    pub bill_interval_seconds: u64,
    /// How long a suspended pod is kept for a late payment before deletion.
    pub retention_seconds: u64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct TermsFile {
    chain: ChainFile,
    payout: String,
    #[serde(default)]
    claim_key: Option<PathBuf>,
    prices: BTreeMap<String, serde_yaml_ng::Value>,
    #[serde(default = "default_validity")]
    offer_validity_seconds: u64,
    #[serde(default = "default_grace")]
    grace_seconds: u64,
    #[serde(default = "default_unlock")]
    min_unlock_seconds: u64,
    #[serde(default = "default_claim")]
    claim_interval_seconds: u64,
    #[serde(default = "default_bill")]
    bill_interval_seconds: u64,
    #[serde(default = "default_retention")]
    retention_seconds: u64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ChainFile {
    rpc: String,
    chain_id: u64,
    contract: String,
    token: String,
}

fn default_validity() -> u64 {
    300
}
fn default_grace() -> u64 {
    60
}
fn default_unlock() -> u64 {
    3600
}
fn default_claim() -> u64 {
    300
}
fn default_bill() -> u64 {
    5
}
fn default_retention() -> u64 {
    3600
}

impl MarketTerms {
    /// Reads a provider's market file (YAML or JSON); see docs/market.md.
    pub fn load(path: &Path) -> Result<MarketTerms, MarketError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| MarketError::Bad { what: "market file", detail: format!("{}: {e}", path.display()) })?;
        MarketTerms::parse(&text).map_err(|e| match e {
            MarketError::Bad { what, detail } => {
                MarketError::Bad { what, detail: format!("{}: {detail}", path.display()) }
            }
            other => other,
        })
    }

    pub fn parse(text: &str) -> Result<MarketTerms, MarketError> {
        if text.len() > 1 << 20 {
            return Err(MarketError::Bad { what: "market file", detail: "larger than 1 MiB".into() });
        }
        let f: TermsFile = serde_yaml_ng::from_str(text)
            .map_err(|e| MarketError::Bad { what: "market file", detail: e.to_string() })?;
        // Prices may be written as numbers or strings; big ones must be strings.
        let mut prices = BTreeMap::new();
        for (k, v) in f.prices {
            let s = match v {
                serde_yaml_ng::Value::String(s) => s,
                serde_yaml_ng::Value::Number(n) if n.is_u64() => n.to_string(),
                other => {
                    return Err(MarketError::Bad {
                        what: "market file",
                        detail: format!("price of {k}: {other:?} is not a non-negative integer (quote large ones)"),
                    })
                }
            };
            prices.insert(k, s);
        }
        let chain = ChainRef {
            chain_id: f.chain.chain_id,
            contract: parse_address("chain.contract", &f.chain.contract)?,
            token: parse_address("chain.token", &f.chain.token)?,
        };
        if f.grace_seconds >= f.min_unlock_seconds {
            return Err(MarketError::Bad {
                what: "market file",
                detail: format!(
                    "minUnlockSeconds ({}) must exceed graceSeconds ({}): the provider needs time to claim after a pod lapses",
                    f.min_unlock_seconds, f.grace_seconds
                ),
            });
        }
        if f.offer_validity_seconds == 0 || f.bill_interval_seconds == 0 || f.claim_interval_seconds == 0 {
            return Err(MarketError::Bad {
                what: "market file",
                detail: "intervals and validity must be above 0".into(),
            });
        }
        Ok(MarketTerms {
            rpc: f.chain.rpc,
            chain,
            payout: parse_address("payout", &f.payout)?,
            claim_key: f.claim_key,
            prices: PriceList::from_map(&prices)?,
            offer_validity_seconds: f.offer_validity_seconds,
            grace_seconds: f.grace_seconds,
            min_unlock_seconds: f.min_unlock_seconds,
            claim_interval_seconds: f.claim_interval_seconds,
            bill_interval_seconds: f.bill_interval_seconds,
            retention_seconds: f.retention_seconds,
        })
    }

    /// An offer valid from `now` for the configured time, signed by `key`.
    pub fn offer(&self, key: &Keypair, tee: TeeKind, now: u64) -> Offer {
        self.offer_with_gpus(key, tee, None, now)
    }

    /// [`MarketTerms::offer`] for a provider that sells GPUs too.
    pub fn offer_with_gpus(&self, key: &Keypair, tee: TeeKind, gpus: Option<GpuOffer>, now: u64) -> Offer {
        let mut offer = Offer {
            prices: self.prices.to_proto(),
            expires_unix_seconds: now + self.offer_validity_seconds,
            payment_address: self.payout.to_string(),
            chain_id: self.chain.chain_id,
            token: self.chain.token.to_string(),
            contract: self.chain.contract.to_string(),
            min_unlock_seconds: self.min_unlock_seconds,
            grace_seconds: self.grace_seconds,
            tee: tee as i32,
            issued_unix_seconds: now,
            provider: key.public().to_peer_id().to_bytes(),
            gpus,
            signature: Vec::new(),
        };
        offer.signature = key.sign(&signing_bytes(&offer)).expect("ed25519 signing does not fail");
        offer
    }
}

/// An offer whose signature, provider and expiry were checked.
#[derive(Debug, Clone)]
pub struct VerifiedOffer {
    pub provider: PeerId,
    pub prices: PriceList,
    pub chain: ChainRef,
    pub payout: Address,
    pub expires_unix_seconds: u64,
    pub min_unlock_seconds: u64,
    pub grace_seconds: u64,
    pub tee: TeeKind,
    /// The GPUs offered, as signed.
    pub gpus: Option<GpuOffer>,
}

/// Checks that `offer` is signed by `provider`'s node key, unaltered, and not
/// expired at `now`.
pub fn verify(offer: &Offer, provider: &PeerId, now: u64) -> Result<VerifiedOffer, MarketError> {
    let claimed = PeerId::from_bytes(&offer.provider)
        .map_err(|_| MarketError::OfferAltered("its provider field is not a peer id".into()))?;
    if &claimed != provider {
        return Err(MarketError::OfferAltered(format!("it names provider {claimed}, not {provider}")));
    }
    let key = public_key_of(provider).ok_or(MarketError::OfferSignature)?;
    if offer.signature.len() > 256 || !key.verify(&signing_bytes(offer), &offer.signature) {
        return Err(MarketError::OfferSignature);
    }
    if now > offer.expires_unix_seconds {
        return Err(MarketError::OfferExpired(now - offer.expires_unix_seconds));
    }
    Ok(VerifiedOffer {
        provider: *provider,
        prices: PriceList::from_proto(&offer.prices)?,
        chain: ChainRef {
            chain_id: offer.chain_id,
            contract: parse_address("offer contract", &offer.contract)?,
            token: parse_address("offer token", &offer.token)?,
        },
        payout: parse_address("offer payment address", &offer.payment_address)?,
        expires_unix_seconds: offer.expires_unix_seconds,
        min_unlock_seconds: offer.min_unlock_seconds,
        grace_seconds: offer.grace_seconds,
        tee: TeeKind::try_from(offer.tee).unwrap_or(TeeKind::Unspecified),
        gpus: offer.gpus.clone(),
    })
}

fn signing_bytes(offer: &Offer) -> Vec<u8> {
    let mut unsigned = offer.clone();
    unsigned.signature.clear();
    let mut out = OFFER_CONTEXT.to_vec();
    out.extend(unsigned.encode_to_vec());
    out
}

/// The public key inside an identity-hashed peer id (ed25519 keys are).
fn public_key_of(peer: &PeerId) -> Option<PublicKey> {
    let mh = peer.as_ref();
    if mh.code() != 0 {
        return None;
    }
    PublicKey::try_decode_protobuf(mh.digest()).ok()
}

pub fn parse_address(what: &'static str, s: &str) -> Result<Address, MarketError> {
    s.trim().parse::<Address>().map_err(|e| MarketError::Bad { what, detail: format!("{s:?}: {e}") })
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const TERMS: &str = r#"
chain:
  rpc: http://127.0.0.1:8545
  chainId: 31337
  contract: "0x5FbDB2315678afecb367f032d93F642f64180aa3"
  token: "0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512"
payout: "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
prices:
  cpu: 1000
  memory: "500"
  gpu: 0
  external-ip: 0
  cpu-time: 10
graceSeconds: 30
"#;

    #[test]
    fn a_signed_offer_verifies_and_any_change_is_caught() {
        let terms = MarketTerms::parse(TERMS).unwrap();
        let key = Keypair::generate_ed25519();
        let me = key.public().to_peer_id();
        let offer = terms.offer(&key, TeeKind::Tdx, 1_000);
        let v = verify(&offer, &me, 1_100).unwrap();
        assert_eq!(v.prices, terms.prices);
        assert_eq!(v.chain, terms.chain);
        assert_eq!(v.grace_seconds, 30);
        assert_eq!(v.tee, TeeKind::Tdx);

        let mut cheaper = offer.clone();
        cheaper.prices[0].amount_per_second = "1".into();
        assert!(matches!(verify(&cheaper, &me, 1_100), Err(MarketError::OfferSignature)));
        let mut longer = offer.clone();
        longer.expires_unix_seconds += 1;
        assert!(matches!(verify(&longer, &me, 1_100), Err(MarketError::OfferSignature)));

        let other = Keypair::generate_ed25519();
        let e = verify(&offer, &other.public().to_peer_id(), 1_100).unwrap_err();
        assert!(matches!(e, MarketError::OfferAltered(_)), "{e}");
        // Re-signed by someone else but still naming this provider.
        let mut forged = offer.clone();
        forged.signature = other.sign(&signing_bytes(&forged)).unwrap();
        assert!(matches!(verify(&forged, &me, 1_100), Err(MarketError::OfferSignature)));
    }

    #[test]
    fn an_offer_replayed_after_expiry_is_refused() {
        let terms = MarketTerms::parse(TERMS).unwrap();
        let key = Keypair::generate_ed25519();
        let offer = terms.offer(&key, TeeKind::Unspecified, 1_000);
        let e = verify(&offer, &key.public().to_peer_id(), 1_000 + 300 + 5).unwrap_err();
        assert!(matches!(e, MarketError::OfferExpired(5)), "{e}");
    }

    #[test]
    fn a_market_file_with_a_gap_or_a_typo_is_refused_by_name() {
        let no_gpu = TERMS.replace("  gpu: 0\n", "");
        assert!(MarketTerms::parse(&no_gpu).unwrap_err().to_string().contains("no price for gpu"));
        let ram = TERMS.replace("memory: \"500\"", "ram: 500");
        assert!(MarketTerms::parse(&ram).unwrap_err().to_string().contains("did you mean \"memory\""));
        let short = TERMS.replace("graceSeconds: 30", "graceSeconds: 30\nminUnlockSeconds: 10");
        assert!(MarketTerms::parse(&short).unwrap_err().to_string().contains("minUnlockSeconds"));
        let typo = TERMS.replace("graceSeconds", "graceSecs");
        assert!(MarketTerms::parse(&typo).is_err());
        let neg = TERMS.replace("cpu: 1000", "cpu: -1");
        assert!(MarketTerms::parse(&neg).is_err());
    }
}
