use super::*;
use sealpod_tlog::{leaf_hash, parse_entry_bundle, verify_inclusion};

fn signer() -> Ed25519Signer {
    Ed25519Signer::generate("sealpod.test/log").unwrap()
}

fn open(dir: &Path, signer: &Ed25519Signer, authority: bool) -> ImageLog {
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

fn entry(image: &str, n: u8) -> LogEntry {
    LogEntry {
        image: image.into(),
        manifest_digest: format!("sha256:{}", hex::encode([n; 32])),
        publisher_key: vec![8, 1, 18, 32, n],
        time_unix: 1_700_000_000 + u64::from(n),
    }
}

/// Brings `mirror` up to `source`'s checkpoint the way the node does.
fn sync(mirror: &ImageLog, source: &ImageLog) -> Result<Examined, LogError> {
    let note = source.signed_checkpoint().unwrap();
    let examined = mirror.examine(&note, "source")?;
    if let Examined::Newer { from, to } = examined {
        let proof = source.consistency_proof(from, to).unwrap();
        let mut entries = Vec::new();
        while (entries.len() as u64) < to - from {
            entries.extend(source.entries(from + entries.len() as u64, 256).unwrap());
        }
        mirror.extend(&note, &proof, &entries, "source")?;
    }
    Ok(examined)
}

#[test]
fn authority_publishes_and_a_reopened_log_keeps_every_entry() {
    let dir = tempfile::tempdir().unwrap();
    let key = signer();
    let log = open(dir.path(), &key, true);
    assert_eq!(log.checkpoint().size, 0);
    assert!(log.signed_checkpoint().is_some(), "an authority signs the empty log");
    let a = log.publish(&entry("team/app:1", 1)).unwrap();
    let b = log.publish(&entry("team/app:2", 2)).unwrap();
    let again = log.publish(&entry("team/app:2", 2)).unwrap();
    assert_eq!((a.index, b.index, again.index), (0, 1, 1), "republishing the same digest is a no-op");
    log.publish(&entry("team/app:1", 3)).unwrap();
    drop(log);

    let log = open(dir.path(), &key, true);
    assert_eq!(log.checkpoint().size, 3);
    assert_eq!(log.lookup("team/app:1").unwrap().manifest_digest, entry("x:y", 3).manifest_digest);
    assert_eq!(log.history("team/app:1").len(), 2);
    assert_eq!(log.find_digest("team/app", &entry("x:y", 2).manifest_digest).unwrap().index, 1);
    assert!(log.find_digest("other/app", &entry("x:y", 2).manifest_digest).is_none());
    assert_eq!(log.digests_of("team/app").len(), 3);
}

#[test]
fn a_second_process_cannot_open_the_same_log() {
    let dir = tempfile::tempdir().unwrap();
    let key = signer();
    let _log = open(dir.path(), &key, true);
    let second = ImageLog::open(ImageLogConfig {
        dir: dir.path().to_owned(),
        log_key: key.verifier().vkey(),
        signer: None,
        witnesses: Vec::new(),
        cosigner: None,
        witness_quorum: 0,
    });
    assert!(matches!(second, Err(LogError::Locked(_))));
}

#[test]
fn a_mirror_syncs_only_what_is_new_and_proves_inclusion() {
    let (a, m) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let key = signer();
    let authority = open(a.path(), &key, true);
    let mirror = open(m.path(), &key, false);
    assert!(mirror.signed_checkpoint().is_none());
    for n in 0..300u16 {
        authority.publish(&entry(&format!("team/app:{n}"), (n % 250) as u8)).unwrap();
    }
    assert_eq!(sync(&mirror, &authority).unwrap(), Examined::Newer { from: 0, to: 300 });
    authority.publish(&entry("team/app:new", 251)).unwrap();
    assert_eq!(sync(&mirror, &authority).unwrap(), Examined::Newer { from: 300, to: 301 });
    assert_eq!(sync(&mirror, &authority).unwrap(), Examined::Same { new_cosignatures: 0 });
    assert_eq!(mirror.checkpoint(), authority.checkpoint());

    let proof = mirror.prove("team/app:new").unwrap();
    assert_eq!(proof.entry.index, 300);
    let hashes: Vec<Hash> =
        proof.proof.iter().map(|h| hex::decode(h).unwrap().try_into().unwrap()).collect::<Vec<Hash>>();
    let leaf: Hash = hex::decode(&proof.leaf_hash).unwrap().try_into().unwrap();
    verify_inclusion(300, 301, &leaf, &hashes, &mirror.checkpoint().root).unwrap();

    // A reopened mirror trusts what it synced.
    drop(mirror);
    let mirror = open(m.path(), &key, false);
    assert_eq!(mirror.checkpoint().size, 301);
    assert!(matches!(mirror.publish(&entry("x:y", 1)), Err(LogError::NotAuthority(_))));
}

#[test]
fn a_checkpoint_signed_by_another_key_is_refused() {
    let (a, m) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let impostor = signer();
    let fake = open(a.path(), &impostor, true);
    fake.publish(&entry("team/app:1", 1)).unwrap();
    let mirror = open(m.path(), &signer(), false);
    let err = mirror.examine(&fake.signed_checkpoint().unwrap(), "impostor").unwrap_err();
    assert!(matches!(err, LogError::BadCheckpoint { .. }), "{err}");
    assert_eq!(mirror.checkpoint().size, 0);
}

#[test]
fn tampered_entries_are_refused_and_nothing_is_stored() {
    let (a, m) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let key = signer();
    let authority = open(a.path(), &key, true);
    let mirror = open(m.path(), &key, false);
    authority.publish(&entry("team/app:1", 1)).unwrap();
    authority.publish(&entry("team/app:2", 2)).unwrap();
    let note = authority.signed_checkpoint().unwrap();
    let proof = authority.consistency_proof(0, 2).unwrap();
    let mut entries = authority.entries(0, 2).unwrap();
    entries[1] = entry("team/app:2", 9).encode().unwrap();
    let err = mirror.extend(&note, &proof, &entries, "liar").unwrap_err();
    assert!(matches!(err, LogError::BadEntries { .. }), "{err}");
    let err = mirror.extend(&note, &proof, &entries[..1], "short").unwrap_err();
    assert!(matches!(err, LogError::Stale { .. }), "{err}");
    assert_eq!(mirror.checkpoint().size, 0);
    assert!(mirror.lookup("team/app:2").is_none());
    assert!(mirror.status().forks.is_empty(), "a lying peer is not a fork");
}

#[test]
fn a_forked_log_is_refused_reported_and_remembered() {
    let (a, b, m) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let key = signer();
    let honest = open(a.path(), &key, true);
    let forked = open(b.path(), &key, true);
    let mirror = open(m.path(), &key, false);
    honest.publish(&entry("team/app:1", 1)).unwrap();
    honest.publish(&entry("team/app:2", 2)).unwrap();
    forked.publish(&entry("team/app:1", 1)).unwrap();
    forked.publish(&entry("team/app:2", 66)).unwrap();
    sync(&mirror, &honest).unwrap();

    // Same size, other root: proven from what the mirror holds.
    let Err(LogError::Fork(report)) = sync(&mirror, &forked) else { panic!("fork not seen") };
    assert!(report.proven);
    assert_eq!((report.trusted_size, report.forked_size), (2, 2));
    assert!(report.evidence.exists());

    // Larger, but not an extension: the consistency proof fails.
    forked.publish(&entry("team/app:3", 3)).unwrap();
    let Err(LogError::Fork(report)) = sync(&mirror, &forked) else { panic!("fork not seen") };
    assert!(!report.proven);
    assert_eq!(report.forked_size, 3);
    assert_eq!(mirror.checkpoint(), honest.checkpoint(), "the trusted checkpoint is unchanged");
    assert_eq!(mirror.lookup("team/app:2").unwrap().manifest_digest, entry("x:y", 2).manifest_digest);

    // The honest log still moves the mirror forward, and the reports stay.
    honest.publish(&entry("team/app:3", 4)).unwrap();
    sync(&mirror, &honest).unwrap();
    drop(mirror);
    let mirror = open(m.path(), &key, false);
    assert_eq!(mirror.checkpoint().size, 3);
    assert_eq!(mirror.status().forks.len(), 2);
}

#[test]
fn witnesses_cosign_what_they_accept_and_the_authority_keeps_valid_cosignatures() {
    let (a, w) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let key = signer();
    let witness_key = CosignatureSigner::generate("witness.test").unwrap();
    let stranger = CosignatureSigner::generate("stranger.test").unwrap();
    let authority = ImageLog::open(ImageLogConfig {
        dir: a.path().to_owned(),
        log_key: key.verifier().vkey(),
        signer: Some(key.clone()),
        witnesses: vec![witness_key.verifier()],
        cosigner: None,
        witness_quorum: 0,
    })
    .unwrap();
    let witness = ImageLog::open(ImageLogConfig {
        dir: w.path().to_owned(),
        log_key: key.verifier().vkey(),
        signer: None,
        witnesses: Vec::new(),
        cosigner: Some(witness_key.clone()),
        witness_quorum: 0,
    })
    .unwrap();
    authority.publish(&entry("team/app:1", 1)).unwrap();
    sync(&witness, &authority).unwrap();
    let cosigned = witness.signed_checkpoint().unwrap();
    assert_eq!(witness.status().cosigners.len(), 1);

    // A stranger's cosignature is not kept; the witness's is, once.
    let mut with_stranger = Note::parse(&cosigned).unwrap();
    with_stranger.add_signature(stranger.cosign(with_stranger.text(), 5).unwrap()).unwrap();
    assert_eq!(authority.add_cosignatures(&with_stranger.to_bytes()).unwrap(), 1);
    assert_eq!(authority.add_cosignatures(&cosigned).unwrap(), 0);
    let status = authority.status();
    assert_eq!(status.cosigners.len(), 1);
    assert_eq!(status.cosigners[0].name, "witness.test");
    assert!(!status.checkpoint.unwrap().contains("stranger.test"));

    // Cosignatures for another checkpoint are refused.
    authority.publish(&entry("team/app:2", 2)).unwrap();
    assert!(matches!(authority.add_cosignatures(&cosigned), Err(LogError::NotCurrent(2))));
}

#[test]
fn entries_past_the_checkpoint_after_a_crash_are_dropped_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let key = signer();
    let log = open(dir.path(), &key, true);
    log.publish(&entry("team/app:1", 1)).unwrap();
    drop(log);
    // A commit interrupted after the entry and hash were written, before the
    // checkpoint: a whole record plus a torn one.
    let extra = entry("team/app:2", 2).encode().unwrap();
    let mut f = std::fs::OpenOptions::new().append(true).open(dir.path().join("entries")).unwrap();
    f.write_all(&(extra.len() as u16).to_be_bytes()).unwrap();
    f.write_all(&extra).unwrap();
    f.write_all(&[0, 40, 1]).unwrap();
    let mut hashes = FileStore::open(dir.path().join("tree")).unwrap();
    hashes.push(0, &leaf_hash(&extra)).unwrap();
    drop((f, hashes));

    let log = open(dir.path(), &key, true);
    assert_eq!(log.checkpoint().size, 1);
    assert!(log.lookup("team/app:2").is_none());
    assert_eq!(log.publish(&entry("team/app:2", 3)).unwrap().index, 1);
}

#[test]
fn tiles_and_entry_bundles_are_served_within_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let key = signer();
    let log = open(dir.path(), &key, true);
    for n in 0..5u8 {
        log.publish(&entry(&format!("team/app:{n}"), n)).unwrap();
    }
    let bundle = log.tile("tile/entries/000.p/5").unwrap();
    let parsed = parse_entry_bundle(&bundle).unwrap();
    assert_eq!(parsed.len(), 5);
    assert_eq!(LogEntry::decode(parsed[4]).unwrap().image, "team/app:4");
    let hashes = log.tile("tile/0/000.p/5").unwrap();
    assert_eq!(&hashes[..32], &leaf_hash(parsed[0]));
    assert!(matches!(log.tile("tile/0/000.p/6"), Err(LogError::OutOfRange(_))));
    assert!(matches!(log.tile("tile/entries/000"), Err(LogError::OutOfRange(_))));
    assert!(log.tile("../etc/passwd").is_err());
}

#[test]
fn image_repository_strips_the_tag_but_not_a_registry_port() {
    assert_eq!(image_repository("team/app:1"), "team/app");
    assert_eq!(image_repository("localhost:5000/team/app:1"), "localhost:5000/team/app");
    assert_eq!(image_repository("app"), "app");
}

#[test]
fn with_a_quorum_entries_count_as_witnessed_only_once_a_checkpoint_is_cosigned() {
    let (a, w, m) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let key = signer();
    let witness_key = CosignatureSigner::generate("witness.test").unwrap();
    let config = |dir: &Path, signer: Option<Ed25519Signer>, cosigner: Option<CosignatureSigner>, quorum: usize| {
        ImageLogConfig {
            dir: dir.to_owned(),
            log_key: key.verifier().vkey(),
            signer,
            witnesses: if quorum > 0 { vec![witness_key.verifier()] } else { Vec::new() },
            cosigner,
            witness_quorum: quorum,
        }
    };
    let authority = ImageLog::open(config(a.path(), Some(key.clone()), None, 0)).unwrap();
    let witness = ImageLog::open(config(w.path(), None, Some(witness_key.clone()), 0)).unwrap();
    let mirror = ImageLog::open(config(m.path(), None, None, 1)).unwrap();
    assert_eq!((authority.witnessed_size(), mirror.witness_quorum()), (0, 1));

    authority.publish(&entry("team/app:1", 1)).unwrap();
    assert_eq!(authority.witnessed_size(), 1, "without a quorum every trusted entry counts");
    sync(&mirror, &authority).unwrap();
    assert_eq!((mirror.checkpoint().size, mirror.witnessed_size()), (1, 0));

    // The witness's cosignature brings the mirror's quorum.
    sync(&witness, &authority).unwrap();
    assert_eq!(mirror.add_cosignatures(&witness.signed_checkpoint().unwrap()).unwrap(), 1);
    assert_eq!(mirror.witnessed_size(), 1);
    assert_eq!(mirror.status().witnessed_size, 1);

    // A newer, uncosigned checkpoint does not move it, and a restart keeps it.
    authority.publish(&entry("team/app:2", 2)).unwrap();
    sync(&mirror, &authority).unwrap();
    assert_eq!((mirror.checkpoint().size, mirror.witnessed_size()), (2, 1));
    drop(mirror);
    let mirror = ImageLog::open(config(m.path(), None, None, 1)).unwrap();
    assert_eq!((mirror.checkpoint().size, mirror.witnessed_size()), (2, 1));

    // A quorum the given witnesses cannot meet is refused at open.
    let mut impossible = config(&m.path().join("unused"), None, None, 1);
    impossible.witness_quorum = 2;
    assert!(matches!(ImageLog::open(impossible), Err(LogError::Key(_))));
}
