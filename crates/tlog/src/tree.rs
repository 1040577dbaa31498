//! An append-only RFC 6962 Merkle tree that answers for every size it has
//! had: roots, inclusion proofs and consistency proofs (RFC 9162 §2.1.1,
//! §2.1.3.1, §2.1.4.1), and tiles (C2SP tlog-tiles).
//!
//! Costs, for a tree of `n` leaves: appending is amortised O(1) hashes and
//! store writes (at most `log2 n`); a root at any size is O(log n) reads and
//! hashes; an inclusion or consistency proof is O(log² n); a tile is 256
//! reads. Storage is below `2n` hashes (see [`crate::store`]).

use crate::hash::{leaf_hash, node_hash, Hash, EMPTY_ROOT};
use crate::store::{HashStore, MemoryStore, StoreError, MAX_LEVELS};
use crate::tile::{TileId, TileLevel, TILE_HEIGHT, TILE_WIDTH};

/// Why the tree could not answer or grow.
#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    /// A size larger than the tree was asked for.
    #[error("the tree has {size} leaves; size {requested} does not exist yet")]
    SizeBeyondTree {
        /// The size asked for.
        requested: u64,
        /// The tree's size.
        size: u64,
    },
    /// A leaf index not below the tree size in question.
    #[error("leaf index {index} is not in a tree of size {size}")]
    IndexOutOfRange {
        /// The index asked for.
        index: u64,
        /// The tree size in question.
        size: u64,
    },
    /// A consistency proof was asked for from a larger to a smaller tree.
    #[error("no consistency proof from size {size1} to the smaller size {size2}")]
    SizeDecreased {
        /// The first size.
        size1: u64,
        /// The second size.
        size2: u64,
    },
    /// A consistency proof from the empty tree was asked for (verifiers
    /// reject it: it proves nothing).
    #[error("a consistency proof from the empty tree proves nothing and is not produced")]
    FromEmptyTree,
    /// A tile that the tree does not (yet) contain.
    #[error("tile {tile} is not contained in a tree of {size} leaves")]
    TileBeyondTree {
        /// The tile's path.
        tile: String,
        /// The tree's size.
        size: u64,
    },
    /// An entry bundle was passed where a hash tile is needed.
    #[error("{0} is an entry bundle: the tree holds hashes, not entries")]
    NotAHashTile(String),
    /// The tree holds `u64::MAX` leaves.
    #[error("the tree is full")]
    Full,
    /// The store below failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The largest power of two strictly below `n` (`n >= 2`), the split point of
/// RFC 9162 §2.1.1.
fn split_point(n: u64) -> u64 {
    1 << (63 - (n - 1).leading_zeros())
}

/// An append-only Merkle tree over a [`HashStore`].
#[derive(Debug)]
pub struct Tree<S = MemoryStore> {
    store: S,
    size: u64,
}

impl Tree<MemoryStore> {
    /// An empty tree in memory.
    pub fn new() -> Self {
        Tree { store: MemoryStore::new(), size: 0 }
    }
}

impl Default for Tree<MemoryStore> {
    fn default() -> Self {
        Self::new()
    }
}

impl<S: HashStore> Tree<S> {
    /// A tree over an existing store. Its size is the number of leaf hashes
    /// stored; parent hashes missing after an interrupted append are
    /// recomputed, extra ones dropped.
    pub fn open(mut store: S) -> Result<Self, TreeError> {
        let size = store.level_len(0);
        for level in 1..MAX_LEVELS as u8 {
            let want = size >> level;
            let have = store.level_len(level);
            if have > want {
                store.truncate(level, want)?;
            }
            for j in have..want {
                let parent = node_hash(&store.get(level - 1, 2 * j)?, &store.get(level - 1, 2 * j + 1)?);
                store.push(level, &parent)?;
            }
        }
        Ok(Tree { store, size })
    }

    /// Number of leaves.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The store underneath.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Makes every append so far durable (see [`HashStore::sync`]); do this
    /// before signing a checkpoint for the new size.
    pub fn sync(&mut self) -> Result<(), TreeError> {
        Ok(self.store.sync()?)
    }

    /// Appends an entry (its leaf hash, RFC 6962 §2.1) and returns its index.
    pub fn append(&mut self, entry: &[u8]) -> Result<u64, TreeError> {
        self.append_leaf_hash(leaf_hash(entry))
    }

    /// Appends a leaf hash and returns its index.
    pub fn append_leaf_hash(&mut self, leaf: Hash) -> Result<u64, TreeError> {
        let index = self.size;
        if index == u64::MAX {
            return Err(TreeError::Full);
        }
        self.store.push(0, &leaf)?;
        // Every odd index completes a subtree twice as large as its own.
        let (mut hash, mut i, mut level) = (leaf, index, 0u8);
        while i & 1 == 1 {
            hash = node_hash(&self.store.get(level, i - 1)?, &hash);
            level += 1;
            i >>= 1;
            self.store.push(level, &hash)?;
        }
        self.size += 1;
        Ok(index)
    }

    /// Leaf hash number `index`.
    pub fn leaf_hash(&self, index: u64) -> Result<Hash, TreeError> {
        if index >= self.size {
            return Err(TreeError::IndexOutOfRange { index, size: self.size });
        }
        Ok(self.store.get(0, index)?)
    }

    /// Root hash of the tree as it is.
    pub fn root(&self) -> Result<Hash, TreeError> {
        self.root_at(self.size)
    }

    /// Root hash of the tree as it was at `size` leaves, RFC 9162 §2.1.1.
    pub fn root_at(&self, size: u64) -> Result<Hash, TreeError> {
        self.check_size(size)?;
        self.range_hash(0, size)
    }

    /// Merkle tree hash of leaves `start..end` (`MTH(D[start:end])`, RFC 9162
    /// §2.1.1): stored when the range is an aligned power of two, otherwise
    /// split at the largest power of two below its length.
    fn range_hash(&self, start: u64, end: u64) -> Result<Hash, TreeError> {
        let n = end - start;
        if n == 0 {
            return Ok(EMPTY_ROOT);
        }
        if n.is_power_of_two() && start.is_multiple_of(n) {
            let level = n.trailing_zeros() as u8;
            return Ok(self.store.get(level, start >> level)?);
        }
        let k = split_point(n);
        Ok(node_hash(&self.range_hash(start, start + k)?, &self.range_hash(start + k, end)?))
    }

    /// Root hash the tree would have after appending `leaves`, without
    /// storing anything: a syncing node checks fetched entries against a
    /// signed checkpoint before it commits them.
    pub fn root_after_appending(&self, leaves: &[Hash]) -> Result<Hash, TreeError> {
        // The tree's compact range: one perfect subtree per set bit of the
        // size, largest (leftmost) first.
        let mut range: Vec<(u8, Hash)> = Vec::with_capacity(64);
        let mut start = 0u64;
        for level in (0..64u8).rev() {
            if (self.size >> level) & 1 == 1 {
                range.push((level, self.store.get(level, start >> level)?));
                start += 1 << level;
            }
        }
        for leaf in leaves {
            let (mut level, mut hash) = (0u8, *leaf);
            while let Some(&(l, left)) = range.last() {
                if l != level {
                    break;
                }
                range.pop();
                hash = node_hash(&left, &hash);
                level += 1;
            }
            range.push((level, hash));
        }
        // RFC 9162 splits at the largest power of two, so the root folds the
        // range from the right.
        let mut subtrees = range.into_iter().rev();
        let Some((_, mut root)) = subtrees.next() else { return Ok(EMPTY_ROOT) };
        for (_, left) in subtrees {
            root = node_hash(&left, &root);
        }
        Ok(root)
    }

    fn check_size(&self, size: u64) -> Result<(), TreeError> {
        if size > self.size {
            return Err(TreeError::SizeBeyondTree { requested: size, size: self.size });
        }
        Ok(())
    }

    /// Inclusion proof of leaf `index` in the tree at `size` leaves
    /// (`PATH(m, D[n])`, RFC 9162 §2.1.3.1), leaf to root.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, TreeError> {
        self.check_size(size)?;
        if index >= size {
            return Err(TreeError::IndexOutOfRange { index, size });
        }
        let mut proof = Vec::with_capacity(64);
        self.path(index, 0, size, &mut proof)?;
        Ok(proof)
    }

    /// `PATH(m, D[start:end])`.
    fn path(&self, m: u64, start: u64, end: u64, out: &mut Vec<Hash>) -> Result<(), TreeError> {
        let n = end - start;
        if n <= 1 {
            return Ok(());
        }
        let k = split_point(n);
        if m < k {
            self.path(m, start, start + k, out)?;
            out.push(self.range_hash(start + k, end)?);
        } else {
            self.path(m - k, start + k, end, out)?;
            out.push(self.range_hash(start, start + k)?);
        }
        Ok(())
    }

    /// Consistency proof from the tree at `size1` leaves to the tree at
    /// `size2` (`PROOF(m, D[n])`, RFC 9162 §2.1.4.1); empty when the sizes
    /// are equal.
    pub fn consistency_proof(&self, size1: u64, size2: u64) -> Result<Vec<Hash>, TreeError> {
        self.check_size(size2)?;
        if size1 > size2 {
            return Err(TreeError::SizeDecreased { size1, size2 });
        }
        if size1 == 0 {
            return Err(TreeError::FromEmptyTree);
        }
        let mut proof = Vec::with_capacity(65);
        self.subproof(size1, 0, size2, true, &mut proof)?;
        Ok(proof)
    }

    /// `SUBPROOF(m, D[start:end], b)`.
    fn subproof(&self, m: u64, start: u64, end: u64, b: bool, out: &mut Vec<Hash>) -> Result<(), TreeError> {
        let n = end - start;
        if m == n {
            if !b {
                out.push(self.range_hash(start, end)?);
            }
            return Ok(());
        }
        let k = split_point(n);
        if m <= k {
            self.subproof(m, start, start + k, b, out)?;
            out.push(self.range_hash(start + k, end)?);
        } else {
            self.subproof(m - k, start + k, end, false, out)?;
            out.push(self.range_hash(start, start + k)?);
        }
        Ok(())
    }

    /// The hashes of a tile, concatenated as served (C2SP tlog-tiles): hash
    /// `i` of tile `N` at level `L` is `MTH(D[(N*256+i) * 256^L : (N*256+i+1) * 256^L])`,
    /// which is stored at tree level `8L`.
    pub fn tile_bytes(&self, tile: &TileId) -> Result<Vec<u8>, TreeError> {
        let TileLevel::Hashes(level) = tile.level else {
            return Err(TreeError::NotAHashTile(tile.path()));
        };
        let beyond = || TreeError::TileBeyondTree { tile: tile.path(), size: self.size };
        let tree_level = u32::from(level) * TILE_HEIGHT;
        if tree_level >= MAX_LEVELS as u32 {
            return Err(beyond());
        }
        let first = tile.index.checked_mul(TILE_WIDTH).ok_or_else(beyond)?;
        let end = first.checked_add(u64::from(tile.width)).ok_or_else(beyond)?;
        if end > self.size >> tree_level {
            return Err(beyond());
        }
        let mut out = Vec::with_capacity(usize::from(tile.width) * 32);
        for i in first..end {
            out.extend_from_slice(&self.store.get(tree_level as u8, i)?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proof::{consistency_proof_len, inclusion_proof_len, verify_consistency, verify_inclusion};

    /// `MTH` straight from the RFC's recursive definition, over all leaves.
    fn reference_root(leaves: &[Hash]) -> Hash {
        match leaves.len() {
            0 => EMPTY_ROOT,
            1 => leaves[0],
            n => {
                let k = split_point(n as u64) as usize;
                node_hash(&reference_root(&leaves[..k]), &reference_root(&leaves[k..]))
            }
        }
    }

    #[test]
    fn root_after_appending_matches_appending_for_every_split() {
        let leaves: Vec<Hash> = (0..70u32).map(|i| leaf_hash(&i.to_be_bytes())).collect();
        for base in 0..leaves.len() {
            let mut t = Tree::new();
            for l in &leaves[..base] {
                t.append_leaf_hash(*l).unwrap();
            }
            for end in base..leaves.len() {
                let predicted = t.root_after_appending(&leaves[base..end]).unwrap();
                assert_eq!(predicted, reference_root(&leaves[..end]), "base {base} end {end}");
            }
            assert_eq!(t.size(), base as u64, "nothing stored");
        }
    }

    fn tree_of(n: u64) -> (Tree, Vec<Hash>) {
        let mut t = Tree::new();
        let mut leaves = Vec::new();
        for i in 0..n {
            let e = format!("entry {i}");
            leaves.push(leaf_hash(e.as_bytes()));
            assert_eq!(t.append(e.as_bytes()).unwrap(), i);
        }
        (t, leaves)
    }

    #[test]
    fn roots_match_the_rfc_definition_at_every_size() {
        let (t, leaves) = tree_of(70);
        for n in 0..=70 {
            assert_eq!(t.root_at(n).unwrap(), reference_root(&leaves[..n as usize]), "size {n}");
        }
        assert!(matches!(t.root_at(71), Err(TreeError::SizeBeyondTree { requested: 71, size: 70 })));
    }

    #[test]
    fn rfc6962_reference_roots() {
        // The eight leaves of the RFC 6962 test data (transparency-dev/merkle
        // testonly), and the roots of their first 1..=8.
        let leaves: [&[u8]; 8] = [
            b"",
            &[0x00],
            &[0x10],
            &[0x20, 0x21],
            &[0x30, 0x31],
            &[0x40, 0x41, 0x42, 0x43],
            &[0x50, 0x51, 0x52, 0x53, 0x54, 0x55, 0x56, 0x57],
            &[0x60, 0x61, 0x62, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69, 0x6a, 0x6b, 0x6c, 0x6d, 0x6e, 0x6f],
        ];
        let roots = [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
            "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
            "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
            "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
            "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
        ];
        let mut t = Tree::new();
        for (entry, root) in leaves.iter().zip(roots) {
            t.append(entry).unwrap();
            assert_eq!(hex::encode(t.root().unwrap()), root, "size {}", t.size());
        }
    }

    #[test]
    fn every_inclusion_proof_up_to_64_leaves_verifies() {
        let (t, leaves) = tree_of(64);
        for n in 1..=64 {
            let root = t.root_at(n).unwrap();
            for i in 0..n {
                let proof = t.inclusion_proof(i, n).unwrap();
                assert_eq!(proof.len(), inclusion_proof_len(i, n));
                verify_inclusion(i, n, &leaves[i as usize], &proof, &root).unwrap();
                // The same proof must not verify another leaf, or this leaf at
                // another index. (It may verify for another size: the root,
                // not the proof, commits to the size, and the checkpoint
                // carrying the root names the size.)
                if n > 1 {
                    let j = (i + 1) % n;
                    assert!(verify_inclusion(i, n, &leaves[j as usize], &proof, &root).is_err());
                    assert!(verify_inclusion(j, n, &leaves[i as usize], &proof, &root).is_err());
                }
            }
        }
    }

    #[test]
    fn every_consistency_proof_up_to_64_leaves_verifies() {
        let (t, _) = tree_of(64);
        let roots: Vec<Hash> = (0..=64).map(|n| t.root_at(n).unwrap()).collect();
        for n in 1..=64u64 {
            for m in 1..=n {
                let proof = t.consistency_proof(m, n).unwrap();
                assert_eq!(proof.len(), consistency_proof_len(m, n), "m={m} n={n}");
                verify_consistency(m, n, &proof, &roots[m as usize], &roots[n as usize]).unwrap();
                if m < n {
                    // A fork: another root for the old size must be refused.
                    let forked = node_hash(&roots[m as usize], &roots[m as usize]);
                    assert!(verify_consistency(m, n, &proof, &forked, &roots[n as usize]).is_err());
                    assert!(verify_consistency(m, n, &proof, &roots[m as usize], &forked).is_err());
                }
            }
        }
    }

    #[test]
    fn proofs_for_sizes_the_tree_does_not_have_are_refused() {
        let (t, _) = tree_of(5);
        assert!(matches!(t.inclusion_proof(5, 5), Err(TreeError::IndexOutOfRange { .. })));
        assert!(matches!(t.inclusion_proof(0, 6), Err(TreeError::SizeBeyondTree { .. })));
        assert!(matches!(t.consistency_proof(0, 5), Err(TreeError::FromEmptyTree)));
        assert!(matches!(t.consistency_proof(4, 3), Err(TreeError::SizeDecreased { .. })));
        assert!(matches!(t.consistency_proof(3, 6), Err(TreeError::SizeBeyondTree { .. })));
        assert!(t.consistency_proof(5, 5).unwrap().is_empty());
        assert!(matches!(t.leaf_hash(5), Err(TreeError::IndexOutOfRange { .. })));
    }
}
