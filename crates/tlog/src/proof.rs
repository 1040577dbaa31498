//! Verification of inclusion and consistency proofs, RFC 9162 §2.1.3.2 and
//! §2.1.4.2 (the same proofs as RFC 6962 §2.1.1 and §2.1.2).
//!
//! Each verifier first checks the sizes and that the proof has exactly the
//! number of hashes a proof for those sizes has, so a truncated or padded
//! proof is reported as such rather than as a root mismatch; then it runs the
//! RFC's algorithm step for step. Nothing here panics on any input.

use crate::hash::{hash_from_slice, node_hash, Hash};

/// Why a proof was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// The leaf index is not below the tree size (this includes every index
    /// in an empty tree).
    #[error("leaf index {index} is not in a tree of size {size}")]
    IndexOutOfRange {
        /// The leaf index given.
        index: u64,
        /// The tree size given.
        size: u64,
    },
    /// The second tree is smaller than the first: a log never shrinks.
    #[error("tree size {size2} is smaller than the earlier size {size1}: a log never shrinks")]
    SizeDecreased {
        /// The earlier size.
        size1: u64,
        /// The later size.
        size2: u64,
    },
    /// A consistency proof from the empty tree proves nothing; a verifier
    /// that trusts only the empty tree trusts nothing yet.
    #[error("a consistency proof from the empty tree proves nothing: start from a non-empty tree")]
    FromEmptyTree,
    /// The proof does not have the number of hashes a proof for these sizes has.
    #[error("proof has {got} hashes, a proof for these tree sizes has exactly {want}")]
    WrongLength {
        /// Hashes in the proof given.
        got: usize,
        /// Hashes a correct proof has.
        want: usize,
    },
    /// A byte string that must be a SHA-256 hash has another length.
    #[error("{what} is {len} bytes long, a SHA-256 hash is 32")]
    BadHashLength {
        /// Which input: "leaf hash", "root", "proof hash 3", ...
        what: String,
        /// Its length.
        len: usize,
    },
    /// The proof does not lead to the expected root hash.
    #[error("the proof does not lead to the expected {which} root hash")]
    RootMismatch {
        /// "tree" for an inclusion proof, "first" or "second" for a
        /// consistency proof.
        which: &'static str,
    },
}

/// Number of hashes in the inclusion proof of leaf `index` in a tree of
/// `size` leaves (`index < size`): the proof's path below the point where it
/// meets the right border of the tree, plus the border hashes above.
pub fn inclusion_proof_len(index: u64, size: u64) -> usize {
    let (inner, border) = decompose_inclusion(index, size);
    inner + border
}

/// Number of hashes in the consistency proof from `size1` to `size2`
/// leaves (`0 < size1 < size2`); zero when `size1 == size2`.
pub fn consistency_proof_len(size1: u64, size2: u64) -> usize {
    if size1 == 0 || size1 >= size2 {
        return 0;
    }
    let (inner, border) = decompose_inclusion(size1 - 1, size2);
    let shift = size1.trailing_zeros() as usize;
    // The proof starts with the hash of the subtree of 2^shift leaves ending
    // at size1, unless size1 is that very subtree (then the verifier has it).
    let start = usize::from(!size1.is_power_of_two());
    start + inner.saturating_sub(shift) + border
}

/// Splits the path from leaf `index` to the root of a tree of `size` leaves at
/// the level where it joins the path of the last leaf: the hashes below (inner)
/// and those on the right border above.
fn decompose_inclusion(index: u64, size: u64) -> (usize, usize) {
    let inner = (64 - (index ^ size.wrapping_sub(1)).leading_zeros()) as usize;
    let border = index.checked_shr(inner as u32).unwrap_or(0).count_ones() as usize;
    (inner, border)
}

/// Computes the root that an inclusion proof leads to, RFC 9162 §2.1.3.2.
pub fn root_from_inclusion_proof(index: u64, size: u64, leaf_hash: &Hash, proof: &[Hash]) -> Result<Hash, ProofError> {
    // Step 1.
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let want = inclusion_proof_len(index, size);
    if proof.len() != want {
        return Err(ProofError::WrongLength { got: proof.len(), want });
    }
    // Steps 2 and 3.
    let (mut fn_, mut sn) = (index, size - 1);
    let mut r = *leaf_hash;
    // Step 4.
    for p in proof {
        if sn == 0 {
            return Err(ProofError::WrongLength { got: proof.len(), want });
        }
        if fn_ & 1 == 1 || fn_ == sn {
            r = node_hash(p, &r);
            while fn_ & 1 == 0 && fn_ != 0 {
                fn_ >>= 1;
                sn >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    // Step 5 (the root comparison is the caller's).
    if sn != 0 {
        return Err(ProofError::WrongLength { got: proof.len(), want });
    }
    Ok(r)
}

/// Verifies that `leaf_hash` is leaf `index` of the tree of `size` leaves with
/// root `root`, RFC 9162 §2.1.3.2.
pub fn verify_inclusion(
    index: u64,
    size: u64,
    leaf_hash: &Hash,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    if root_from_inclusion_proof(index, size, leaf_hash, proof)? == *root {
        Ok(())
    } else {
        Err(ProofError::RootMismatch { which: "tree" })
    }
}

/// Verifies that the tree of `size2` leaves with root `root2` extends the tree
/// of `size1` leaves with root `root1`, RFC 9162 §2.1.4.2.
///
/// Beyond the RFC's algorithm (which covers `0 < size1 < size2`): equal sizes
/// are consistent when the proof is empty and the roots are equal; a smaller
/// `size2` and an empty first tree are rejected.
pub fn verify_consistency(
    size1: u64,
    size2: u64,
    proof: &[Hash],
    root1: &Hash,
    root2: &Hash,
) -> Result<(), ProofError> {
    check_consistency_sizes(size1, size2)?;
    if size1 == size2 {
        if !proof.is_empty() {
            return Err(ProofError::WrongLength { got: proof.len(), want: 0 });
        }
        return if root1 == root2 { Ok(()) } else { Err(ProofError::RootMismatch { which: "second" }) };
    }
    let want = consistency_proof_len(size1, size2);
    // Step 1 (an empty proof) is covered: `want` is at least 1 here.
    if proof.len() != want {
        return Err(ProofError::WrongLength { got: proof.len(), want });
    }
    // Step 2: a power-of-two first tree is itself the first node of the path.
    let (seed, rest) = if size1.is_power_of_two() {
        (*root1, proof)
    } else {
        match proof.split_first() {
            Some((first, rest)) => (*first, rest),
            None => return Err(ProofError::WrongLength { got: 0, want }),
        }
    };
    // Steps 3 and 4.
    let (mut fn_, mut sn) = (size1 - 1, size2 - 1);
    while fn_ & 1 == 1 {
        fn_ >>= 1;
        sn >>= 1;
    }
    // Step 5.
    let (mut fr, mut sr) = (seed, seed);
    // Step 6.
    for c in rest {
        if sn == 0 {
            return Err(ProofError::WrongLength { got: proof.len(), want });
        }
        if fn_ & 1 == 1 || fn_ == sn {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while fn_ & 1 == 0 && fn_ != 0 {
                fn_ >>= 1;
                sn >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    // Step 7.
    if sn != 0 {
        return Err(ProofError::WrongLength { got: proof.len(), want });
    }
    if fr != *root1 {
        return Err(ProofError::RootMismatch { which: "first" });
    }
    if sr != *root2 {
        return Err(ProofError::RootMismatch { which: "second" });
    }
    Ok(())
}

fn check_consistency_sizes(size1: u64, size2: u64) -> Result<(), ProofError> {
    if size1 > size2 {
        return Err(ProofError::SizeDecreased { size1, size2 });
    }
    if size1 == 0 {
        return Err(ProofError::FromEmptyTree);
    }
    Ok(())
}

fn to_hash(what: impl FnOnce() -> String, bytes: &[u8]) -> Result<Hash, ProofError> {
    hash_from_slice(bytes).ok_or_else(|| ProofError::BadHashLength { what: what(), len: bytes.len() })
}

fn to_hashes<B: AsRef<[u8]>>(proof: &[B]) -> Result<Vec<Hash>, ProofError> {
    proof.iter().enumerate().map(|(i, b)| to_hash(|| format!("proof hash {i}"), b.as_ref())).collect()
}

/// [`verify_inclusion`] on untrusted byte strings, as they come off the wire:
/// every hash must be exactly 32 bytes.
pub fn verify_inclusion_bytes<B: AsRef<[u8]>>(
    index: u64,
    size: u64,
    leaf_hash: &[u8],
    proof: &[B],
    root: &[u8],
) -> Result<(), ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let leaf = to_hash(|| "leaf hash".into(), leaf_hash)?;
    let root = to_hash(|| "root".into(), root)?;
    verify_inclusion(index, size, &leaf, &to_hashes(proof)?, &root)
}

/// [`verify_consistency`] on untrusted byte strings, as they come off the
/// wire: every hash that enters a computation must be exactly 32 bytes.
///
/// When the sizes are equal nothing is hashed, and (as in
/// transparency-dev/merkle) the roots are compared as byte strings.
pub fn verify_consistency_bytes<B: AsRef<[u8]>>(
    size1: u64,
    size2: u64,
    proof: &[B],
    root1: &[u8],
    root2: &[u8],
) -> Result<(), ProofError> {
    check_consistency_sizes(size1, size2)?;
    if size1 == size2 {
        if !proof.is_empty() {
            return Err(ProofError::WrongLength { got: proof.len(), want: 0 });
        }
        return if root1 == root2 { Ok(()) } else { Err(ProofError::RootMismatch { which: "second" }) };
    }
    let r1 = to_hash(|| "first root".into(), root1)?;
    let r2 = to_hash(|| "second root".into(), root2)?;
    verify_consistency(size1, size2, &to_hashes(proof)?, &r1, &r2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::leaf_hash;

    #[test]
    fn single_leaf_tree_needs_no_proof() {
        let l = leaf_hash(b"x");
        verify_inclusion(0, 1, &l, &[], &l).unwrap();
        assert_eq!(verify_inclusion(0, 1, &l, &[l], &l), Err(ProofError::WrongLength { got: 1, want: 0 }));
    }

    #[test]
    fn rejects_index_at_or_beyond_size() {
        let l = leaf_hash(b"x");
        assert_eq!(verify_inclusion(1, 1, &l, &[], &l), Err(ProofError::IndexOutOfRange { index: 1, size: 1 }));
        assert_eq!(verify_inclusion(0, 0, &l, &[], &l), Err(ProofError::IndexOutOfRange { index: 0, size: 0 }));
        assert!(verify_inclusion(u64::MAX, u64::MAX, &l, &[], &l).is_err());
    }

    #[test]
    fn huge_sizes_do_not_overflow() {
        let l = leaf_hash(b"x");
        for (i, n) in [(0, u64::MAX), (u64::MAX - 1, u64::MAX), (0, (1 << 63) + 1), (1 << 63, (1 << 63) + 1)] {
            let want = inclusion_proof_len(i, n);
            assert!(want <= 64);
            assert!(matches!(verify_inclusion(i, n, &l, &vec![l; want], &l), Err(ProofError::RootMismatch { .. })));
        }
        for (m, n) in [(1, u64::MAX), (u64::MAX - 1, u64::MAX), (1 << 63, u64::MAX)] {
            let want = consistency_proof_len(m, n);
            assert!(want <= 65);
            assert!(verify_consistency(m, n, &vec![l; want], &l, &l).is_err());
        }
    }

    #[test]
    fn rejects_shrinking_and_empty_first_tree() {
        let l = leaf_hash(b"x");
        assert_eq!(verify_consistency(2, 1, &[], &l, &l), Err(ProofError::SizeDecreased { size1: 2, size2: 1 }));
        assert_eq!(verify_consistency(0, 1, &[], &l, &l), Err(ProofError::FromEmptyTree));
        assert_eq!(verify_consistency(0, 0, &[], &l, &l), Err(ProofError::FromEmptyTree));
    }

    #[test]
    fn bytes_variants_check_lengths() {
        let l = leaf_hash(b"x");
        let err = verify_inclusion_bytes(0, 1, &l[..31], &[] as &[&[u8]], &l).unwrap_err();
        assert_eq!(err, ProofError::BadHashLength { what: "leaf hash".into(), len: 31 });
        let err = verify_inclusion_bytes(0, 2, &l, &[&l[..], &[]], &l).unwrap_err();
        assert_eq!(err, ProofError::BadHashLength { what: "proof hash 1".into(), len: 0 });
        let err = verify_consistency_bytes(1, 2, &[&l[..]], &l, b"short").unwrap_err();
        assert_eq!(err, ProofError::BadHashLength { what: "second root".into(), len: 5 });
    }
}
