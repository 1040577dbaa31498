//! Prices per resource-second, in the payment token's base units.

use std::collections::BTreeMap;

use alloy::primitives::U256;
use sealpod_proto::Price;

use crate::{MarketError, Resource};

/// A price for every [`Resource`]; there is no way to build one that lacks any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriceList {
    prices: [U256; Resource::ALL.len()],
}

impl PriceList {
    /// From `name -> decimal amount` (a config file's `prices:` map). Every
    /// resource must be named, unknown names are refused.
    pub fn from_map(map: &BTreeMap<String, String>) -> Result<PriceList, MarketError> {
        let mut prices: [Option<U256>; Resource::ALL.len()] = Default::default();
        for (name, amount) in map {
            let r = Resource::parse(name)?;
            prices[r.index()] = Some(parse_amount(amount)?);
        }
        let mut out = [U256::ZERO; Resource::ALL.len()];
        for r in Resource::ALL {
            out[r.index()] = prices[r.index()].ok_or(MarketError::MissingPrice(r.name()))?;
        }
        Ok(PriceList { prices: out })
    }

    /// From an offer's price list; the same rules as [`PriceList::from_map`].
    pub fn from_proto(prices: &[Price]) -> Result<PriceList, MarketError> {
        let mut map = BTreeMap::new();
        for p in prices {
            if map.insert(p.resource.clone(), p.amount_per_second.clone()).is_some() {
                return Err(MarketError::Bad { what: "price list", detail: format!("{} priced twice", p.resource) });
            }
        }
        PriceList::from_map(&map)
    }

    pub fn to_proto(&self) -> Vec<Price> {
        Resource::ALL
            .iter()
            .map(|r| Price { resource: r.name().to_owned(), amount_per_second: self.get(*r).to_string() })
            .collect()
    }

    /// Token base units per unit-second of `r`.
    pub fn get(&self, r: Resource) -> U256 {
        self.prices[r.index()]
    }

    pub fn iter(&self) -> impl Iterator<Item = (Resource, U256)> + '_ {
        Resource::ALL.iter().map(|r| (*r, self.get(*r)))
    }
}

/// A non-negative decimal integer of token base units (no sign, no exponent,
/// at most 78 digits: U256).
pub fn parse_amount(s: &str) -> Result<U256, MarketError> {
    let t = s.trim();
    if t.is_empty() || t.len() > 78 || !t.bytes().all(|b| b.is_ascii_digit()) {
        return Err(MarketError::BadAmount(s.chars().take(80).collect()));
    }
    U256::from_str_radix(t, 10).map_err(|_| MarketError::BadAmount(s.chars().take(80).collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full() -> BTreeMap<String, String> {
        Resource::ALL.iter().map(|r| (r.name().to_owned(), "7".to_owned())).collect()
    }

    #[test]
    fn a_price_list_names_every_resource_or_is_refused() {
        let list = PriceList::from_map(&full()).unwrap();
        for r in Resource::ALL {
            assert_eq!(list.get(r), U256::from(7));
        }
        for r in Resource::ALL {
            let mut m = full();
            m.remove(r.name());
            let e = PriceList::from_map(&m).unwrap_err().to_string();
            assert!(e.contains(r.name()), "{e}");
        }
    }

    #[test]
    fn apocryphs_ram_is_refused_with_a_hint_not_silently_unbilled() {
        let mut m = full();
        m.remove("memory");
        m.insert("ram".into(), "500".into());
        let e = PriceList::from_map(&m).unwrap_err().to_string();
        assert!(e.contains("did you mean \"memory\""), "{e}");
    }

    #[test]
    fn amounts_are_plain_decimal_integers() {
        assert_eq!(parse_amount("0").unwrap(), U256::ZERO);
        assert_eq!(parse_amount("200000000000").unwrap(), U256::from(200_000_000_000u64));
        for bad in ["", "-1", "1.5", "1e9", "0x10", " ", &"9".repeat(79)] {
            assert!(parse_amount(bad).is_err(), "{bad:?}");
        }
        // U256::MAX has 78 digits; one more than it overflows.
        assert!(parse_amount(&U256::MAX.to_string()).is_ok());
        assert!(parse_amount("115792089237316195423570985008687907853269984665640564039457584007913129639936").is_err());
    }

    #[test]
    fn proto_round_trip_and_duplicates_refused() {
        let list = PriceList::from_map(&full()).unwrap();
        assert_eq!(PriceList::from_proto(&list.to_proto()).unwrap(), list);
        let mut dup = list.to_proto();
        dup.push(dup[0].clone());
        assert!(PriceList::from_proto(&dup).is_err());
    }
}
