//! Proof verification in a million-leaf log, and appending 100,000 leaves.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use sealpod_tlog::{leaf_hash, verify_consistency, verify_inclusion, FileStore, Tree};

const MILLION: u64 = 1_000_000;

fn million_leaf_tree() -> Tree {
    let mut tree = Tree::new();
    for i in 0..MILLION {
        tree.append(&i.to_be_bytes()).unwrap();
    }
    tree
}

fn proofs(c: &mut Criterion) {
    let tree = million_leaf_tree();
    let root = tree.root().unwrap();
    let index: u64 = 123_456;
    let leaf = leaf_hash(&index.to_be_bytes());
    let proof = tree.inclusion_proof(index, MILLION).unwrap();
    c.bench_function("verify_inclusion/1M leaves", |b| {
        b.iter(|| verify_inclusion(black_box(index), MILLION, &leaf, black_box(&proof), &root).unwrap())
    });
    let old_root = tree.root_at(654_321).unwrap();
    let cproof = tree.consistency_proof(654_321, MILLION).unwrap();
    c.bench_function("verify_consistency/654321 -> 1M", |b| {
        b.iter(|| verify_consistency(654_321, MILLION, black_box(&cproof), &old_root, &root).unwrap())
    });
    c.bench_function("inclusion_proof/1M leaves (generate)", |b| {
        b.iter(|| tree.inclusion_proof(black_box(index), MILLION).unwrap())
    });
}

fn appends(c: &mut Criterion) {
    let mut group = c.benchmark_group("append");
    group.sample_size(10);
    group.bench_function("100k leaves, memory", |b| {
        b.iter(|| {
            let mut tree = Tree::new();
            for i in 0..100_000u64 {
                tree.append(&i.to_be_bytes()).unwrap();
            }
            tree.root().unwrap()
        })
    });
    group.bench_function("100k leaves, files (one sync at the end)", |b| {
        b.iter_batched(
            || tempfile::tempdir().unwrap(),
            |dir| {
                let mut tree = Tree::open(FileStore::open(dir.path()).unwrap()).unwrap();
                for i in 0..100_000u64 {
                    tree.append(&i.to_be_bytes()).unwrap();
                }
                tree.sync().unwrap();
                tree.root().unwrap()
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group!(benches, proofs, appends);
criterion_main!(benches);
