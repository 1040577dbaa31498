//! RFC 6962 §2.1 / RFC 9162 §2.1.1 hashing: domain-separated SHA-256 for
//! leaves and interior nodes.

use sha2::{Digest, Sha256};

/// Size of every hash in the tree (SHA-256).
pub const HASH_SIZE: usize = 32;

/// A SHA-256 Merkle tree hash: a leaf hash, an interior node or a root.
pub type Hash = [u8; HASH_SIZE];

/// Root of the empty tree, `SHA-256()` (RFC 9162 §2.1.1: `MTH({}) = HASH()`).
pub const EMPTY_ROOT: Hash = [
    0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9, 0x24, 0x27, 0xae, 0x41,
    0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52, 0xb8, 0x55,
];

/// Leaf hash of an entry, `SHA-256(0x00 || data)` (RFC 6962 §2.1, RFC 9162 §2.1.1).
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0x00]);
    h.update(data);
    h.finalize().into()
}

/// Interior node hash, `SHA-256(0x01 || left || right)` (RFC 6962 §2.1, RFC 9162 §2.1.1).
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([0x01]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// Reads a hash from untrusted bytes, which must be exactly [`HASH_SIZE`] long.
pub fn hash_from_slice(bytes: &[u8]) -> Option<Hash> {
    bytes.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_root_is_sha256_of_nothing() {
        assert_eq!(EMPTY_ROOT, <[u8; 32]>::from(Sha256::digest([])));
    }

    #[test]
    fn leaf_and_node_hashes_are_domain_separated() {
        // RFC 6962 test vector: the leaf hash of the empty string.
        assert_eq!(hex::encode(leaf_hash(b"")), "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d");
        let l = leaf_hash(b"a");
        assert_ne!(node_hash(&l, &l), leaf_hash(&[l, l].concat()));
    }

    #[test]
    fn hash_from_slice_checks_length() {
        assert!(hash_from_slice(&[0; 31]).is_none());
        assert!(hash_from_slice(&[0; 33]).is_none());
        assert_eq!(hash_from_slice(&[7; 32]), Some([7; 32]));
    }
}
