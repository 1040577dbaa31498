//! Proof verification on arbitrary sizes and hashes must never panic, and a
//! proof produced by a tree must verify while any change to it must not.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sealpod_tlog::{verify_consistency, verify_consistency_bytes, verify_inclusion, verify_inclusion_bytes, Tree};

fn u64_at(data: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    for (i, x) in data.iter().skip(at).take(8).enumerate() {
        b[i] = *x;
    }
    u64::from_le_bytes(b)
}

fuzz_target!(|data: &[u8]| {
    if data.is_empty() {
        return;
    }
    let (a, b) = (u64_at(data, 1), u64_at(data, 9));
    let rest = data.get(17..).unwrap_or_default();
    let chunks: Vec<&[u8]> = rest.chunks(32).collect();
    match data[0] % 3 {
        // Raw bytes: arbitrary lengths, sizes up to u64::MAX.
        0 => {
            let (first, proof) = chunks.split_first().map_or((&[][..], &[][..]), |(f, p)| (*f, p));
            let root = proof.last().copied().unwrap_or_default();
            let _ = verify_inclusion_bytes(a, b, first, proof, root);
            let _ = verify_consistency_bytes(a, b, proof, first, root);
        }
        // Real proofs from a small tree, then one flipped bit.
        _ => {
            let n = b % 200 + 1;
            let mut tree = Tree::new();
            for i in 0..n {
                tree.append(&i.to_le_bytes()).unwrap();
            }
            let root = tree.root().unwrap();
            let flip = rest.first().copied().unwrap_or(0) as usize;
            if data[0] % 3 == 1 {
                let i = a % n;
                let leaf = tree.leaf_hash(i).unwrap();
                let mut proof = tree.inclusion_proof(i, n).unwrap();
                verify_inclusion(i, n, &leaf, &proof, &root).unwrap();
                if !proof.is_empty() {
                    let k = flip % proof.len();
                    proof[k][flip % 32] ^= 1 << (flip % 8);
                    assert!(verify_inclusion(i, n, &leaf, &proof, &root).is_err());
                }
            } else {
                let m = a % n + 1;
                let old = tree.root_at(m).unwrap();
                let mut proof = tree.consistency_proof(m, n).unwrap();
                verify_consistency(m, n, &proof, &old, &root).unwrap();
                if !proof.is_empty() {
                    let k = flip % proof.len();
                    proof[k][flip % 32] ^= 1 << (flip % 8);
                    assert!(verify_consistency(m, n, &proof, &old, &root).is_err());
                }
            }
        }
    }
});
