//! A log as the node will run it: entries appended to a file-backed tree,
//! checkpoints signed by the log, a witness that checks consistency and
//! cosigns, a client that checks inclusion — and the failures each must catch.

use sealpod_tlog::tile::parse_tile_hashes;
use sealpod_tlog::{
    check_consistent_update, leaf_hash, node_hash, verify_consistency, verify_inclusion, Checkpoint, CosignatureSigner,
    Ed25519Signer, FileStore, Hash, HashStore, LogEntry, MemoryStore, Note, TileId, TileLevel, Tree, VerifierSet,
    Witness, WitnessError, EMPTY_ROOT,
};

const ORIGIN: &str = "sealpod.example/log";

fn entry(i: u64) -> LogEntry {
    LogEntry {
        image: format!("registry.example/app{i}:v{i}"),
        manifest_digest: format!("sha256:{:064x}", i),
        publisher_key: vec![8, 1, 18, 32, (i % 256) as u8],
        time_unix: 1_700_000_000 + i,
    }
}

fn signed_checkpoint<S: HashStore>(tree: &Tree<S>, log: &Ed25519Signer) -> Vec<u8> {
    let mut note = Checkpoint::new(ORIGIN, tree.size(), tree.root().unwrap()).unwrap().to_note().unwrap();
    note.sign(log).unwrap();
    note.to_bytes()
}

#[test]
fn publish_witness_and_prove_inclusion() {
    let dir = tempfile::tempdir().unwrap();
    let mut tree = Tree::open(FileStore::open(dir.path()).unwrap()).unwrap();
    let log = Ed25519Signer::generate(ORIGIN).unwrap();
    let log_keys = || VerifierSet::new().with(log.verifier()).unwrap();
    let witness_key = CosignatureSigner::generate("witness.example/w1").unwrap();
    let mut witness = Witness::new(log_keys(), Checkpoint::empty(ORIGIN).unwrap()).with_cosigner(witness_key.clone());

    // First checkpoint: from the empty tree, no proof.
    for i in 0..5 {
        tree.append(&entry(i).encode().unwrap()).unwrap();
    }
    tree.sync().unwrap();
    let first = signed_checkpoint(&tree, &log);
    let cosig = witness.update(&first, &[], 1_700_000_100).unwrap().expect("witness cosigns");
    assert_eq!(witness.trusted().size, 5);

    // The log grows; the witness needs the consistency proof from 5.
    for i in 5..37 {
        tree.append(&entry(i).encode().unwrap()).unwrap();
    }
    let second = signed_checkpoint(&tree, &log);
    assert!(witness.update(&second, &[], 1_700_000_200).is_err(), "no proof, no update");
    assert_eq!(witness.trusted().size, 5, "a refused update changes nothing");
    let proof = tree.consistency_proof(5, 37).unwrap();
    let cosig2 = witness.update(&second, &proof, 1_700_000_200).unwrap().unwrap();
    assert_eq!(witness.trusted().size, 37);

    // A client that trusts the log and the witness checks the cosigned
    // checkpoint and then an entry's inclusion.
    let mut note = Note::parse(&second).unwrap();
    note.add_signature(cosig2).unwrap();
    let client_keys = log_keys().with(witness_key.verifier()).unwrap();
    let (checkpoint, opened) = Checkpoint::open(&note.to_bytes(), ORIGIN, &client_keys).unwrap();
    assert_eq!(opened.verify(&client_keys).unwrap().len(), 2);
    let e = entry(17).encode().unwrap();
    let incl = tree.inclusion_proof(17, checkpoint.size).unwrap();
    verify_inclusion(17, checkpoint.size, &leaf_hash(&e), &incl, &checkpoint.root).unwrap();
    // A different entry at that index is not included.
    let forged = LogEntry { manifest_digest: format!("sha256:{:064x}", 999), ..entry(17) };
    assert!(verify_inclusion(17, checkpoint.size, &forged.leaf_hash().unwrap(), &incl, &checkpoint.root).is_err());

    // The first cosignature is over the first checkpoint, not the second.
    let first_note = Note::parse(&first).unwrap();
    assert_eq!(
        witness_key.verifier().verify_cosignature(first_note.text().as_bytes(), &cosig.signature),
        Some(1_700_000_100)
    );
    assert_eq!(witness_key.verifier().verify_cosignature(note.text().as_bytes(), &cosig.signature), None);
}

#[test]
fn witness_refuses_a_forked_log() {
    let log = Ed25519Signer::generate(ORIGIN).unwrap();
    let keys = VerifierSet::new().with(log.verifier()).unwrap();
    let mut honest = Tree::new();
    let mut forked = Tree::new();
    for i in 0..10 {
        honest.append(&entry(i).encode().unwrap()).unwrap();
        // The fork rewrites entry 3.
        forked.append(&entry(if i == 3 { 1000 } else { i }).encode().unwrap()).unwrap();
    }
    let mut witness = Witness::new(keys, Checkpoint::empty(ORIGIN).unwrap());
    witness.update(&signed_checkpoint(&honest, &log), &[], 0).unwrap();
    for i in 10..20 {
        forked.append(&entry(i).encode().unwrap()).unwrap();
    }
    // Whatever proof the forked log offers, it cannot extend size 10.
    let fork_proof = forked.consistency_proof(10, 20).unwrap();
    let err = witness.update(&signed_checkpoint(&forked, &log), &fork_proof, 0).unwrap_err();
    assert!(matches!(err, WitnessError::Fork { old_size: 10, new_size: 20, .. }), "{err}");
    // Same size, other root.
    let mut same_size = Tree::new();
    for i in 0..10 {
        same_size.append(&entry(i + 1).encode().unwrap()).unwrap();
    }
    let err = witness.update(&signed_checkpoint(&same_size, &log), &[], 0).unwrap_err();
    assert!(matches!(err, WitnessError::Fork { .. }), "{err}");
    assert_eq!(witness.trusted().root, honest.root().unwrap());
}

#[test]
fn witness_refuses_rollback_other_logs_and_unsigned_checkpoints() {
    let log = Ed25519Signer::generate(ORIGIN).unwrap();
    let mut tree = Tree::new();
    for i in 0..8 {
        tree.append(&entry(i).encode().unwrap()).unwrap();
    }
    let old = Checkpoint::new(ORIGIN, 8, tree.root().unwrap()).unwrap();
    let smaller = Checkpoint::new(ORIGIN, 4, tree.root_at(4).unwrap()).unwrap();
    assert!(matches!(check_consistent_update(&old, &smaller, &[]), Err(WitnessError::RolledBack { .. })));
    let other = Checkpoint::new("other.example/log", 8, tree.root().unwrap()).unwrap();
    assert!(matches!(check_consistent_update(&old, &other, &[]), Err(WitnessError::OriginMismatch { .. })));
    assert!(check_consistent_update(&old, &old, &[]).is_ok());
    assert!(matches!(check_consistent_update(&old, &old, &[[0; 32]]), Err(WitnessError::UnexpectedProof { .. })));
    let empty = Checkpoint::empty(ORIGIN).unwrap();
    assert!(check_consistent_update(&empty, &old, &[]).is_ok());
    assert!(matches!(check_consistent_update(&empty, &old, &[[0; 32]]), Err(WitnessError::UnexpectedProof { .. })));
    let bogus_empty = Checkpoint::new(ORIGIN, 0, [1; 32]).unwrap();
    assert!(matches!(check_consistent_update(&bogus_empty, &old, &[]), Err(WitnessError::Fork { .. })));

    // Signed by someone else than the log.
    let impostor = Ed25519Signer::generate(ORIGIN).unwrap();
    let mut witness = Witness::new(VerifierSet::new().with(log.verifier()).unwrap(), empty);
    assert!(matches!(witness.update(&signed_checkpoint(&tree, &impostor), &[], 0), Err(WitnessError::Checkpoint(_))));
    assert_eq!(witness.trusted().size, 0);
}

#[test]
fn every_consistency_proof_between_sizes_of_a_file_backed_tree_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let mut tree = Tree::open(FileStore::open(dir.path()).unwrap()).unwrap();
    let mut mem = Tree::new();
    for i in 0..40u64 {
        tree.append(&i.to_be_bytes()).unwrap();
        mem.append(&i.to_be_bytes()).unwrap();
    }
    let roots: Vec<Hash> = (0..=40).map(|n| tree.root_at(n).unwrap()).collect();
    for n in 1..=40 {
        assert_eq!(roots[n as usize], mem.root_at(n).unwrap());
        for m in 1..=n {
            let p = tree.consistency_proof(m, n).unwrap();
            assert_eq!(p, mem.consistency_proof(m, n).unwrap());
            verify_consistency(m, n, &p, &roots[m as usize], &roots[n as usize]).unwrap();
        }
        for i in 0..n {
            let p = tree.inclusion_proof(i, n).unwrap();
            verify_inclusion(i, n, &leaf_hash(&i.to_be_bytes()), &p, &roots[n as usize]).unwrap();
        }
    }
}

#[test]
fn file_store_survives_reopening_and_an_interrupted_append() {
    let dir = tempfile::tempdir().unwrap();
    let root = {
        let mut tree = Tree::open(FileStore::open(dir.path()).unwrap()).unwrap();
        for i in 0..1000u64 {
            tree.append(&i.to_be_bytes()).unwrap();
        }
        tree.sync().unwrap();
        tree.root().unwrap()
    };
    let reopened = Tree::open(FileStore::open(dir.path()).unwrap()).unwrap();
    assert_eq!((reopened.size(), reopened.root().unwrap()), (1000, root));
    drop(reopened);

    // A crash after leaf 1000 and half of leaf 1001 reached the disk, before
    // any parent hash was written.
    let leaf_1000 = leaf_hash(&1000u64.to_be_bytes());
    let level0 = dir.path().join("level-00.hashes");
    let mut bytes = std::fs::read(&level0).unwrap();
    bytes.extend_from_slice(&leaf_1000);
    bytes.extend_from_slice(&[0xab; 16]);
    std::fs::write(&level0, bytes).unwrap();
    // And level 3 lost its last hash as well.
    let level3 = dir.path().join("level-03.hashes");
    let l3 = std::fs::read(&level3).unwrap();
    std::fs::write(&level3, &l3[..l3.len() - 32]).unwrap();

    let mut repaired = Tree::open(FileStore::open(dir.path()).unwrap()).unwrap();
    assert_eq!(repaired.size(), 1001);
    assert_eq!(repaired.root_at(1000).unwrap(), root);
    let mut mem = Tree::new();
    for i in 0..1002u64 {
        mem.append(&i.to_be_bytes()).unwrap();
    }
    repaired.append(&1001u64.to_be_bytes()).unwrap();
    assert_eq!(repaired.root().unwrap(), mem.root().unwrap());
    for level in 0..12u8 {
        assert_eq!(repaired.store().level_len(level), 1002 >> level, "level {level}");
    }
}

#[test]
fn tiles_hold_the_hashes_of_full_subtrees() {
    let n: u64 = 256 * 3 + 17;
    let mut tree = Tree::open(MemoryStore::new()).unwrap();
    for i in 0..n {
        tree.append(&i.to_be_bytes()).unwrap();
    }
    let tiles = sealpod_tlog::tiles_for_size(n);
    assert_eq!(
        tiles,
        vec![
            TileId::full(0, 0),
            TileId::full(0, 1),
            TileId::full(0, 2),
            TileId { level: TileLevel::Hashes(0), index: 3, width: 17 },
            TileId { level: TileLevel::Hashes(1), index: 0, width: 3 },
        ]
    );
    let level1 = parse_tile_hashes(&tree.tile_bytes(&tiles[4]).unwrap(), 3).unwrap();
    for (i, tile) in tiles[..3].iter().enumerate() {
        let leaves = parse_tile_hashes(&tree.tile_bytes(tile).unwrap(), 256).unwrap();
        for (j, h) in leaves.iter().enumerate() {
            assert_eq!(*h, leaf_hash(&((i * 256 + j) as u64).to_be_bytes()));
        }
        // A tile is a subtree of height 8: hashing its 256 hashes pairwise
        // gives the hash one tile level up.
        let mut level = leaves;
        while level.len() > 1 {
            level = level.chunks(2).map(|p| node_hash(&p[0], &p[1])).collect();
        }
        assert_eq!(level[0], level1[i]);
    }
    let partial = parse_tile_hashes(&tree.tile_bytes(&tiles[3]).unwrap(), 17).unwrap();
    assert_eq!(partial[16], leaf_hash(&(n - 1).to_be_bytes()));
    // Tiles the tree does not have yet, and entry bundles, are refused.
    for t in [
        TileId::full(0, 3),
        TileId { level: TileLevel::Hashes(0), index: 3, width: 18 },
        TileId::full(1, 0),
        TileId::full(2, 0),
        TileId::full(63, u64::MAX),
        TileId { level: TileLevel::Entries, index: 0, width: 256 },
    ] {
        assert!(tree.tile_bytes(&t).is_err(), "{t}");
    }
    assert_eq!(Tree::new().root().unwrap(), EMPTY_ROOT);
}
