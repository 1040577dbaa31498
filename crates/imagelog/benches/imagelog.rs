//! The durable image log, each figure next to its obvious alternative in the
//! same run: publishing (one fsync'd append and a signed checkpoint per call)
//! against a bare `write` + `sync_data` of the same bytes; a mirror's sync
//! (`extend` with 256 entries) against the same bare append; and, in a log of
//! 1,000,000 entries, inclusion proofs from the on-disk tree against the
//! in-memory `sealpod_tlog::Tree`, their verification, and checkpoint
//! signature verification.
//!
//! Under `-- --test` the large log has 10,000 entries, so the smoke run stays
//! quick.

use std::fs::{File, OpenOptions};
use std::hint::black_box;
use std::io::Write;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use sealpod_imagelog::{ImageLog, ImageLogConfig};
use sealpod_tlog::{
    leaf_hash, verify_inclusion, Checkpoint, Ed25519Signer, Hash, LogEntry, NoteVerifier, Tree, VerifierSet,
};

const ORIGIN: &str = "bench.sealpod/images";
/// The sync path's batch: one C2SP entry bundle.
const SYNC_BATCH: u64 = 256;

fn test_mode() -> bool {
    std::env::args().any(|a| a == "--test")
}

/// Entry `i`: its own tag, a distinct digest, an Ed25519 libp2p key.
fn entry(i: u64) -> LogEntry {
    let mut publisher_key = vec![8, 1, 18, 32];
    publisher_key.extend_from_slice(&[7u8; 32]);
    LogEntry {
        image: format!("bench/app:{i}"),
        manifest_digest: format!("sha256:{i:064x}"),
        publisher_key,
        time_unix: 1_790_000_000 + i,
    }
}

fn open(dir: &std::path::Path, signer: &Ed25519Signer, authority: bool) -> ImageLog {
    ImageLog::open(ImageLogConfig {
        dir: dir.to_owned(),
        log_key: signer.verifier().vkey(),
        signer: authority.then(|| signer.clone()),
        witnesses: Vec::new(),
        cosigner: None,
        witness_quorum: 0,
    })
    .unwrap()
}

/// The log's authority, played in memory: it hands a mirror what the node's
/// sync would fetch from a peer (signed checkpoint, consistency proof,
/// entries).
struct Authority {
    signer: Ed25519Signer,
    tree: Tree,
}

struct Update {
    note: Vec<u8>,
    proof: Vec<Hash>,
    entries: Vec<Vec<u8>>,
}

impl Authority {
    fn new(signer: &Ed25519Signer) -> Authority {
        Authority { signer: signer.clone(), tree: Tree::new() }
    }

    fn next(&mut self, count: u64) -> Update {
        let old = self.tree.size();
        let entries: Vec<Vec<u8>> = (old..old + count).map(|i| entry(i).encode().unwrap()).collect();
        for e in &entries {
            self.tree.append(e).unwrap();
        }
        let new = self.tree.size();
        let proof = if old == 0 { Vec::new() } else { self.tree.consistency_proof(old, new).unwrap() };
        let mut note = Checkpoint::new(ORIGIN, new, self.tree.root().unwrap()).unwrap().to_note().unwrap();
        note.sign(&self.signer).unwrap();
        Update { note: note.to_bytes(), proof, entries }
    }
}

/// The bytes the entries file gets for these entries (u16 length + entry).
fn framed(entries: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        out.extend_from_slice(&(e.len() as u16).to_be_bytes());
        out.extend_from_slice(e);
    }
    out
}

fn append_file(dir: &std::path::Path) -> File {
    OpenOptions::new().create(true).append(true).open(dir.join("plain")).unwrap()
}

fn publish(c: &mut Criterion) {
    let signer = Ed25519Signer::generate(ORIGIN).unwrap();
    let mut group = c.benchmark_group("publish");
    group.throughput(Throughput::Elements(1));

    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), &signer, true);
    let mut i = 0u64;
    group.bench_function("ImageLog::publish (append, fsync, sign, store checkpoint)", |b| {
        b.iter(|| {
            i += 1;
            log.publish(black_box(&entry(i))).unwrap()
        })
    });

    let plain = tempfile::tempdir().unwrap();
    let mut file = append_file(plain.path());
    let mut i = 0u64;
    group.bench_function("File write + sync_data of the same bytes", |b| {
        b.iter(|| {
            i += 1;
            file.write_all(&framed(&[entry(i).encode().unwrap()])).unwrap();
            file.sync_data().unwrap();
        })
    });
    group.finish();
}

fn extend(c: &mut Criterion) {
    let signer = Ed25519Signer::generate(ORIGIN).unwrap();
    let mut group = c.benchmark_group("extend");
    group.throughput(Throughput::Elements(SYNC_BATCH));

    let dir = tempfile::tempdir().unwrap();
    let mirror = open(dir.path(), &signer, false);
    let mut authority = Authority::new(&signer);
    group.bench_function("ImageLog::extend, 256 entries (verify, append, fsync, store checkpoint)", |b| {
        b.iter_batched(
            || authority.next(SYNC_BATCH),
            |u| mirror.extend(&u.note, &u.proof, &u.entries, "bench").unwrap(),
            BatchSize::PerIteration,
        )
    });

    let plain = tempfile::tempdir().unwrap();
    let mut file = append_file(plain.path());
    let mut next = 0u64;
    group.bench_function("File write + sync_data of the same 256 entries", |b| {
        b.iter_batched(
            || {
                next += SYNC_BATCH;
                framed(&(next - SYNC_BATCH..next).map(|i| entry(i).encode().unwrap()).collect::<Vec<_>>())
            },
            |bytes| {
                file.write_all(&bytes).unwrap();
                file.sync_data().unwrap();
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

fn decode_hash(hex_hash: &str) -> Hash {
    hex::decode(hex_hash).unwrap().try_into().unwrap()
}

fn large_log(c: &mut Criterion) {
    let (size, batch) = if test_mode() { (10_000u64, 1_000u64) } else { (1_000_000u64, 10_000u64) };
    let signer = Ed25519Signer::generate(ORIGIN).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mirror = open(dir.path(), &signer, false);
    let mut authority = Authority::new(&signer);
    let started = std::time::Instant::now();
    while authority.tree.size() < size {
        let u = authority.next(batch);
        mirror.extend(&u.note, &u.proof, &u.entries, "bench").unwrap();
    }
    eprintln!("built a log of {size} entries through ImageLog::extend in {:.1?}", started.elapsed());
    let checkpoint = mirror.checkpoint();
    assert_eq!(checkpoint.size, size);
    let note = mirror.signed_checkpoint().unwrap();
    let image = format!("bench/app:{}", size * 123 / 1000);
    let memory = &authority.tree;

    let label = if size == 1_000_000 { "1M entries".to_owned() } else { format!("{size} entries") };
    let mut group = c.benchmark_group(format!("log of {label}"));
    group.bench_function("ImageLog::prove (on-disk tree, lookup, hex, note)", |b| {
        b.iter(|| mirror.prove(black_box(&image)).unwrap())
    });
    group.bench_function("Tree::inclusion_proof (in memory)", |b| {
        let index = size * 123 / 1000;
        b.iter(|| memory.inclusion_proof(black_box(index), size).unwrap())
    });

    let inclusion = mirror.prove(&image).unwrap();
    assert_eq!(inclusion.tree_size, size);
    let leaf = decode_hash(&inclusion.leaf_hash);
    assert_eq!(leaf, leaf_hash(&entry(inclusion.entry.index).encode().unwrap()));
    group.bench_function("verify_inclusion of ImageLog::prove's proof (with hex decoding)", |b| {
        b.iter(|| {
            let proof: Vec<Hash> = inclusion.proof.iter().map(|h| decode_hash(h)).collect();
            verify_inclusion(inclusion.entry.index, inclusion.tree_size, &leaf, &proof, &checkpoint.root).unwrap()
        })
    });
    let memory_proof = memory.inclusion_proof(inclusion.entry.index, size).unwrap();
    group.bench_function("verify_inclusion of the in-memory Tree's proof", |b| {
        b.iter(|| {
            verify_inclusion(black_box(inclusion.entry.index), size, &leaf, black_box(&memory_proof), &checkpoint.root)
                .unwrap()
        })
    });

    let keys = VerifierSet::new().with(signer.verifier()).unwrap();
    group.bench_function("Checkpoint::open (parse, Ed25519 verify, origin)", |b| {
        b.iter(|| Checkpoint::open(black_box(&note), ORIGIN, &keys).unwrap())
    });
    let parsed = sealpod_tlog::Note::parse(&note).unwrap();
    let sig = &parsed.signatures()[0];
    let verifier = signer.verifier();
    group.bench_function("Ed25519 signature verification alone", |b| {
        b.iter(|| assert!(verifier.verify(black_box(parsed.text().as_bytes()), &sig.signature)))
    });
    group.finish();
}

criterion_group!(benches, publish, extend, large_log);
criterion_main!(benches);
