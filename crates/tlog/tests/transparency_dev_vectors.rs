//! transparency-dev/merkle's proof test data (`$SEALPOD_TEST_VECTORS/tlog`,
//! see `shared/vectors/PROVENANCE.md`): every `wantErr: false` case must
//! verify and every `wantErr: true` case must be refused.
//!
//! Without `SEALPOD_TEST_VECTORS` these tests say so and pass; with it set,
//! missing or unreadable files are a failure.

use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use sealpod_tlog::{verify_consistency_bytes, verify_inclusion_bytes};
use serde::Deserialize;

fn vector_dir(test: &str, sub: &str) -> Option<PathBuf> {
    let Some(root) = std::env::var_os("SEALPOD_TEST_VECTORS") else {
        eprintln!("skipped {test}: SEALPOD_TEST_VECTORS is not set (it names the shared/vectors directory)");
        return None;
    };
    let dir = PathBuf::from(root).join("tlog").join(sub);
    assert!(dir.is_dir(), "SEALPOD_TEST_VECTORS is set but {} is missing", dir.display());
    Some(dir)
}

/// Every `.json` file below `dir`, at any depth (most are `*/*.json`,
/// `inclusion/additional/*/*.json` are one level deeper), sorted.
fn json_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for f in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let f = f.unwrap().path();
            if f.is_dir() {
                dirs.push(f);
            } else if f.extension().is_some_and(|e| e == "json") {
                files.push(f);
            }
        }
    }
    files.sort();
    files
}

fn b64(s: &str) -> Vec<u8> {
    BASE64.decode(s).unwrap_or_else(|e| panic!("vector field {s:?} is not base64: {e}"))
}

fn b64s(v: &Option<Vec<String>>) -> Vec<Vec<u8>> {
    v.iter().flatten().map(|s| b64(s)).collect()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct InclusionProbe {
    leaf_idx: u64,
    tree_size: u64,
    root: String,
    leaf_hash: String,
    proof: Option<Vec<String>>,
    desc: String,
    want_err: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConsistencyProbe {
    size1: u64,
    size2: u64,
    root1: String,
    root2: String,
    proof: Option<Vec<String>>,
    desc: String,
    #[serde(rename = "wantErr")]
    want_err: bool,
}

#[test]
fn inclusion_vectors() {
    let Some(dir) = vector_dir("inclusion_vectors", "inclusion") else { return };
    let files = json_files(&dir);
    assert!(!files.is_empty(), "no inclusion vectors in {}", dir.display());
    let (mut accepted, mut rejected) = (0, 0);
    for f in &files {
        let p: InclusionProbe =
            serde_json::from_slice(&std::fs::read(f).unwrap()).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        let result =
            verify_inclusion_bytes(p.leaf_idx, p.tree_size, &b64(&p.leaf_hash), &b64s(&p.proof), &b64(&p.root));
        match (p.want_err, result) {
            (false, Ok(())) => accepted += 1,
            (true, Err(_)) => rejected += 1,
            (false, Err(e)) => panic!("{} ({}): valid proof refused: {e}", f.display(), p.desc),
            (true, Ok(())) => panic!("{} ({}): invalid proof accepted", f.display(), p.desc),
        }
    }
    eprintln!("inclusion vectors: {} files, {accepted} accepted, {rejected} rejected", files.len());
}

#[test]
fn consistency_vectors() {
    let Some(dir) = vector_dir("consistency_vectors", "consistency") else { return };
    let files = json_files(&dir);
    assert!(!files.is_empty(), "no consistency vectors in {}", dir.display());
    let (mut accepted, mut rejected) = (0, 0);
    for f in &files {
        let p: ConsistencyProbe =
            serde_json::from_slice(&std::fs::read(f).unwrap()).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        let result = verify_consistency_bytes(p.size1, p.size2, &b64s(&p.proof), &b64(&p.root1), &b64(&p.root2));
        match (p.want_err, result) {
            (false, Ok(())) => accepted += 1,
            (true, Err(_)) => rejected += 1,
            (false, Err(e)) => panic!("{} ({}): valid proof refused: {e}", f.display(), p.desc),
            (true, Ok(())) => panic!("{} ({}): invalid proof accepted", f.display(), p.desc),
        }
    }
    eprintln!("consistency vectors: {} files, {accepted} accepted, {rejected} rejected", files.len());
}
