//! EIP-712 vouchers: the publisher's signature over a cumulative amount paid
//! into one channel, and the checks a provider makes before counting one.
//!
//! The domain binds a voucher to one chain and one contract, the channel id to
//! one channel that never reopens (the contract numbers them), and the type
//! hash to this message type: Raiden's three replay bugs (reused channel ids,
//! cross-chain replay, a balance proof reused as another message) have no
//! opening here.

use alloy::primitives::{Address, Signature, B256, U256};
use alloy::signers::local::PrivateKeySigner;
use alloy::signers::SignerSync;
use alloy::sol_types::{eip712_domain, Eip712Domain, SolStruct};

use crate::price::parse_amount;
use crate::{ChainRef, MarketError};

alloy::sol! {
    /// What the publisher signs.
    struct Voucher {
        bytes32 channelId;
        uint256 cumulativeAmount;
    }
}

/// The EIP-712 domain of the payment contract on its chain.
pub fn domain(chain: &ChainRef) -> Eip712Domain {
    eip712_domain! {
        name: "sealpod",
        version: "1",
        chain_id: chain.chain_id,
        verifying_contract: chain.contract,
    }
}

/// A voucher with its signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedVoucher {
    pub channel_id: B256,
    pub cumulative_amount: U256,
    /// 65 bytes: r, s, v.
    pub signature: Vec<u8>,
}

impl SignedVoucher {
    pub fn sign(
        signer: &PrivateKeySigner,
        chain: &ChainRef,
        channel_id: B256,
        cumulative_amount: U256,
    ) -> SignedVoucher {
        let v = Voucher { channelId: channel_id, cumulativeAmount: cumulative_amount };
        let hash = v.eip712_signing_hash(&domain(chain));
        let sig = signer.sign_hash_sync(&hash).expect("k256 signing does not fail");
        SignedVoucher { channel_id, cumulative_amount, signature: sig.as_bytes().to_vec() }
    }

    /// Who signed it, under `chain`'s domain (a voucher made for another chain
    /// or contract recovers to some other address).
    pub fn signer(&self, chain: &ChainRef) -> Result<Address, MarketError> {
        let sig = Signature::try_from(self.signature.as_slice())
            .map_err(|e| MarketError::Bad { what: "voucher signature", detail: e.to_string() })?;
        let v = Voucher { channelId: self.channel_id, cumulativeAmount: self.cumulative_amount };
        let hash = v.eip712_signing_hash(&domain(chain));
        sig.recover_address_from_prehash(&hash)
            .map_err(|e| MarketError::Bad { what: "voucher signature", detail: e.to_string() })
    }

    pub fn to_proto(&self) -> sealpod_proto::Voucher {
        sealpod_proto::Voucher {
            channel_id: self.channel_id.to_vec(),
            cumulative_amount: self.cumulative_amount.to_string(),
            signature: self.signature.clone(),
        }
    }

    pub fn from_proto(v: &sealpod_proto::Voucher) -> Result<SignedVoucher, MarketError> {
        if v.channel_id.len() != 32 {
            return Err(MarketError::Bad { what: "voucher", detail: "channel id is not 32 bytes".into() });
        }
        if v.signature.len() != 65 {
            return Err(MarketError::Bad { what: "voucher", detail: "signature is not 65 bytes".into() });
        }
        Ok(SignedVoucher {
            channel_id: B256::from_slice(&v.channel_id),
            cumulative_amount: parse_amount(&v.cumulative_amount)?,
            signature: v.signature.clone(),
        })
    }

    /// What a provider checks before it counts a voucher for `channel`: its
    /// channel, its signer (the channel's publisher, under this chain and
    /// contract), that it raises the previous one, and that the deposit covers
    /// it. A voucher that passes can be claimed on chain.
    pub fn check(
        &self,
        chain: &ChainRef,
        channel_id: B256,
        publisher: Address,
        previous: U256,
        deposit: U256,
    ) -> Result<(), MarketError> {
        if self.channel_id != channel_id {
            return Err(MarketError::VoucherChannel { got: self.channel_id, want: channel_id });
        }
        match self.signer(chain) {
            Ok(a) if a == publisher => {}
            Ok(a) => return Err(MarketError::VoucherSignature { publisher, recovered: a.to_string() }),
            Err(e) => return Err(MarketError::VoucherSignature { publisher, recovered: e.to_string() }),
        }
        if self.cumulative_amount <= previous {
            return Err(MarketError::VoucherNotHigher { amount: self.cumulative_amount, previous });
        }
        if self.cumulative_amount > deposit {
            return Err(MarketError::VoucherAboveDeposit { amount: self.cumulative_amount, deposit });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain() -> ChainRef {
        ChainRef {
            chain_id: 31337,
            contract: "0x5FbDB2315678afecb367f032d93F642f64180aa3".parse().unwrap(),
            token: "0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512".parse().unwrap(),
        }
    }

    #[test]
    fn a_voucher_checks_only_for_its_channel_signer_chain_and_contract() {
        let publisher = PrivateKeySigner::random();
        let id = B256::repeat_byte(7);
        let v = SignedVoucher::sign(&publisher, &chain(), id, U256::from(100));
        let ok =
            |v: &SignedVoucher, c: &ChainRef| v.check(c, id, publisher.address(), U256::from(50), U256::from(1000));
        ok(&v, &chain()).unwrap();

        let e = v.check(&chain(), B256::repeat_byte(8), publisher.address(), U256::ZERO, U256::from(1000));
        assert!(matches!(e, Err(MarketError::VoucherChannel { .. })));
        let stranger = PrivateKeySigner::random();
        let forged = SignedVoucher::sign(&stranger, &chain(), id, U256::from(100));
        assert!(matches!(ok(&forged, &chain()), Err(MarketError::VoucherSignature { .. })));
        let mut other_chain = chain();
        other_chain.chain_id = 1;
        assert!(matches!(ok(&v, &other_chain), Err(MarketError::VoucherSignature { .. })));
        let mut other_contract = chain();
        other_contract.contract = Address::repeat_byte(1);
        assert!(matches!(ok(&v, &other_contract), Err(MarketError::VoucherSignature { .. })));
        let mut raised = v.clone();
        raised.cumulative_amount = U256::from(101);
        assert!(matches!(ok(&raised, &chain()), Err(MarketError::VoucherSignature { .. })));
    }

    #[test]
    fn a_voucher_must_raise_the_previous_one_and_stay_within_the_deposit() {
        let publisher = PrivateKeySigner::random();
        let id = B256::repeat_byte(7);
        let v = SignedVoucher::sign(&publisher, &chain(), id, U256::from(100));
        let e = v.check(&chain(), id, publisher.address(), U256::from(100), U256::from(1000)).unwrap_err();
        assert!(matches!(e, MarketError::VoucherNotHigher { .. }), "{e}");
        let e = v.check(&chain(), id, publisher.address(), U256::from(10), U256::from(99)).unwrap_err();
        assert!(matches!(e, MarketError::VoucherAboveDeposit { .. }), "{e}");
    }

    #[test]
    fn a_voucher_survives_the_wire_and_malformed_ones_are_refused() {
        let publisher = PrivateKeySigner::random();
        let v = SignedVoucher::sign(&publisher, &chain(), B256::repeat_byte(1), U256::from(5));
        assert_eq!(SignedVoucher::from_proto(&v.to_proto()).unwrap(), v);
        let mut p = v.to_proto();
        p.signature.pop();
        assert!(SignedVoucher::from_proto(&p).is_err());
        let mut p = v.to_proto();
        p.cumulative_amount = "-5".into();
        assert!(SignedVoucher::from_proto(&p).is_err());
        let mut p = v.to_proto();
        p.channel_id = vec![0; 31];
        assert!(SignedVoucher::from_proto(&p).is_err());
        let mut garbage = v.clone();
        garbage.signature = vec![0xff; 65];
        assert!(garbage.signer(&chain()).is_err());
    }
}
