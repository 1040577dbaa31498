//! `sealpod node run`, `sealpod log …`: the artifact node and its image log
//! from the command line.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use sealpod_registry::client::{pull_into_store, push_from_store, ClientOptions, Credentials, RegistryClient};
use sealpod_store::{Digest, Reference, RepositoryName, Store, Tag};
use sealpod_tlog::{
    leaf_hash, verify_inclusion, Checkpoint, CosignatureSigner, Ed25519Signer, Ed25519Verifier, Hash, LogEntry,
    NoteVerifier, VerifierSet,
};
use serde_json::Value;

#[derive(Args)]
pub struct NodeRunArgs {
    /// Where the content store, the log and the node key live.
    #[arg(long, default_value = "/var/lib/sealpod/node")]
    dir: PathBuf,
    /// Registry API address (keep it on loopback: it has no authentication).
    #[arg(long, default_value = "127.0.0.1:5000")]
    registry: std::net::SocketAddr,
    /// libp2p listen addresses.
    #[arg(long, default_values_t = ["/ip4/0.0.0.0/tcp/4002".to_string()])]
    listen: Vec<String>,
    /// DHT bootstrap peers.
    #[arg(long)]
    bootstrap: Vec<String>,
    #[command(flatten)]
    nat: crate::nat_args::NatArgs,
    /// Write the node's peer id, addresses and registry address here (JSON).
    #[arg(long)]
    ready_file: Option<PathBuf>,
    /// The image log to keep and enforce: its public key (vkey), or @FILE.
    #[arg(long, value_name = "VKEY|@FILE")]
    log_key: Option<String>,
    /// The log's signing key file: this node is the log's authority and
    /// publishes what is pushed to it by tag.
    #[arg(long, value_name = "FILE")]
    log_signing_key: Option<PathBuf>,
    /// A witness whose cosignatures are checked and kept (vkey or @FILE).
    #[arg(long = "witness", value_name = "VKEY|@FILE")]
    witnesses: Vec<String>,
    /// This node's witness key file: it cosigns each checkpoint it accepts.
    #[arg(long, value_name = "FILE")]
    witness_key: Option<PathBuf>,
    /// Serve an image only once a checkpoint that includes it is cosigned
    /// by this many of the --witness keys (0: the log key's signature is
    /// enough). Guards against an authority showing this node a view of
    /// the log it shows nobody else.
    #[arg(long, default_value_t = 0, value_name = "N")]
    witness_quorum: usize,
    /// On the authority, do not publish tagged pushes.
    #[arg(long)]
    no_publish_on_push: bool,
    /// Run as a plain registry with no log: serve whatever is stored,
    /// unchecked.
    #[arg(long, conflicts_with_all = ["log_key", "log_signing_key"])]
    no_log: bool,
    /// How often to ask peers for a newer checkpoint, in milliseconds.
    #[arg(long, default_value_t = 2000)]
    sync_period_ms: u64,
    /// On the authority: pull tags the log lacks through from this registry
    /// (e.g. https://registry.example) and publish them.
    #[command(flatten)]
    upstream: UpstreamArgs,
}

#[derive(Args)]
pub struct UpstreamArgs {
    /// On the authority: pull tags the log lacks through from this registry
    /// (https://host[:port], or http:// with --upstream-insecure) and publish
    /// what it fetched.
    #[arg(long, value_name = "URL")]
    upstream: Option<String>,
    /// Extra CA certificate (PEM) trusted for the upstream's HTTPS.
    #[arg(long, value_name = "FILE", requires = "upstream")]
    upstream_ca: Option<PathBuf>,
    /// Allow plain HTTP to a non-loopback upstream.
    #[arg(long, requires = "upstream")]
    upstream_insecure: bool,
    /// Upstream credentials as USER:PASSWORD (basic, and for bearer tokens).
    #[arg(long, env = "SEALPOD_UPSTREAM_CREDENTIALS", hide_env_values = true, requires = "upstream")]
    upstream_credentials: Option<String>,
}

fn client_options(ca: Option<&Path>, insecure: bool, credentials: Option<&str>) -> Result<ClientOptions> {
    let mut options = ClientOptions { allow_insecure_http: insecure, ..ClientOptions::default() };
    if let Some(ca) = ca {
        options.ca_cert_pem = Some(std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?);
    }
    if let Some(c) = credentials {
        let (username, password) = c.split_once(':').context("credentials must be USER:PASSWORD")?;
        options.credentials = Some(Credentials { username: username.into(), password: password.into() });
    }
    Ok(options)
}

fn read_secret(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(text.trim().to_owned())
}

fn key_arg(value: &str) -> Result<String> {
    match value.strip_prefix('@') {
        Some(path) => Ok(std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?.trim().to_owned()),
        None => Ok(value.trim().to_owned()),
    }
}

pub fn node_run(args: NodeRunArgs) -> Result<()> {
    let signing_key = args.log_signing_key.as_deref().map(read_secret).transpose()?;
    let log_key = match (&args.log_key, &signing_key) {
        (Some(v), _) => Some(key_arg(v)?),
        (None, Some(skey)) => {
            Some(Ed25519Signer::from_skey(skey).map_err(|e| anyhow::anyhow!("log signing key: {e}"))?.verifier().vkey())
        }
        (None, None) if args.no_log => None,
        (None, None) => bail!(
            "name the image log to enforce with --log-key VKEY (or --log-signing-key FILE on its authority); \
             --no-log runs a plain registry that serves anything stored"
        ),
    };
    let log = match log_key {
        Some(log_key) => Some(sealpod_node::LogSettings {
            log_key,
            signing_key,
            witnesses: args.witnesses.iter().map(|w| key_arg(w)).collect::<Result<_>>()?,
            witness_key: args.witness_key.as_deref().map(read_secret).transpose()?,
            publish_on_push: !args.no_publish_on_push,
            witness_quorum: args.witness_quorum,
        }),
        None => None,
    };
    let config = sealpod_node::NodeConfig {
        dir: args.dir,
        registry: args.registry,
        listen: crate::parse_addrs(&args.listen)?,
        bootstrap: crate::parse_addrs(&args.bootstrap)?,
        ready_file: args.ready_file,
        nat: args.nat.config()?,
        log,
        sync_period: Duration::from_millis(args.sync_period_ms.max(100)),
        upstream: match &args.upstream.upstream {
            Some(url) => Some((
                url.clone(),
                client_options(
                    args.upstream.upstream_ca.as_deref(),
                    args.upstream.upstream_insecure,
                    args.upstream.upstream_credentials.as_deref(),
                )?,
            )),
            None => None,
        },
    };
    crate::runtime()?.block_on(sealpod_node::run(config))
}

#[derive(Subcommand)]
pub enum LogCommand {
    /// Make a log signing key (or, with --witness, a witness key).
    Keygen {
        /// The key's name; for a log, its origin (e.g. "example.org/images").
        #[arg(long)]
        name: String,
        /// Where to write the secret key (mode 0600); the public key goes
        /// beside it with `.pub` appended.
        #[arg(long)]
        out: PathBuf,
        /// Make a witness (cosignature) key instead.
        #[arg(long)]
        witness: bool,
    },
    /// Show the checkpoint a node trusts, its cosigners and any forks seen.
    Checkpoint(NodeArg),
    /// Show the log's entries for an image (name:tag).
    Inspect {
        /// `name:tag`, as pulled from the node (e.g. team/app:1.0).
        image: String,
        #[command(flatten)]
        node: NodeArg,
    },
    /// Check that an image is in the log: verify the checkpoint's signature
    /// and the entry's inclusion proof here, and print both.
    Verify {
        /// `name:tag`.
        image: String,
        /// The log's public key (vkey or @FILE) to check the checkpoint
        /// against; without it, the key the node reports is used.
        #[arg(long, value_name = "VKEY|@FILE")]
        log_key: Option<String>,
        #[command(flatten)]
        node: NodeArg,
    },
}

#[derive(Args)]
pub struct NodeArg {
    /// The artifact node's registry address.
    #[arg(long, env = "SEALPOD_NODE", default_value = "127.0.0.1:5000")]
    node: String,
}

/// A GET to the node's loopback HTTP API; bounded in time and size.
fn node_get(node: &str, path: &str) -> Result<(u16, Vec<u8>)> {
    local_get(node, path).context("is `sealpod node run` running?")
}

/// A GET to a local HTTP API (a node's, a provider's metrics); bounded in
/// time and size.
pub(crate) fn local_get(host: &str, path: &str) -> Result<(u16, Vec<u8>)> {
    const LIMIT: u64 = 16 << 20;
    let host = host.trim().trim_start_matches("http://").trim_end_matches('/');
    let addr = host.to_socket_addrs().with_context(|| format!("address {host:?}"))?.next().context("no address")?;
    let mut stream =
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).with_context(|| format!("connecting to {host}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nAccept: application/json\r\n\r\n")?;
    let mut raw = Vec::new();
    stream.take(LIMIT).read_to_end(&mut raw)?;
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").context("the response has no header end")?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let status: u16 = head.split(' ').nth(1).and_then(|s| s.parse().ok()).context("the response has no status")?;
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        bail!("{host} answered chunked; expected a sized body");
    }
    Ok((status, raw[split + 4..].to_vec()))
}

fn node_json(node: &str, path: &str) -> Result<Value> {
    let (status, body) = node_get(node, path)?;
    let value: Value = serde_json::from_slice(&body)
        .with_context(|| format!("the node answered {status} with no JSON: {}", String::from_utf8_lossy(&body)))?;
    if status != 200 {
        bail!("{}", value["error"].as_str().unwrap_or("the node refused"));
    }
    Ok(value)
}

pub(crate) fn write_secret(path: &Path, text: &str) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {} (it must not exist yet)", path.display()))?;
    writeln!(f, "{text}")?;
    f.sync_all()?;
    Ok(())
}

fn hash_hex(s: &str) -> Result<Hash> {
    let bytes = hex::decode(s).context("hash is not hex")?;
    bytes.try_into().map_err(|_| anyhow::anyhow!("hash is not 32 bytes"))
}

pub fn log(command: LogCommand, json: bool) -> Result<()> {
    match command {
        LogCommand::Keygen { name, out, witness } => {
            let (skey, vkey) = if witness {
                let k = CosignatureSigner::generate(&name).map_err(|e| anyhow::anyhow!("{e}"))?;
                (k.skey(), k.verifier().vkey())
            } else {
                let k = Ed25519Signer::generate(&name).map_err(|e| anyhow::anyhow!("{e}"))?;
                (k.skey(), k.verifier().vkey())
            };
            write_secret(&out, &skey)?;
            let public = PathBuf::from(format!("{}.pub", out.display()));
            std::fs::write(&public, format!("{vkey}\n"))?;
            if json {
                println!("{}", serde_json::json!({"secret_key": out, "public_key": public, "vkey": vkey}));
            } else {
                println!("{vkey}");
                eprintln!("secret key in {} (keep it there); public key in {}", out.display(), public.display());
            }
            Ok(())
        }
        LogCommand::Checkpoint(NodeArg { node }) => {
            let status = node_json(&node, "/sealpod/v1/log")?;
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
                return Ok(());
            }
            println!("log       {}", status["origin"].as_str().unwrap_or(""));
            println!("key       {}", status["log_key"].as_str().unwrap_or(""));
            println!("role      {}", if status["authority"] == true { "authority (publishes)" } else { "mirror" });
            println!("size      {}", status["size"]);
            println!("root      {}", status["root"].as_str().unwrap_or(""));
            for c in status["cosigners"].as_array().into_iter().flatten() {
                println!("cosigned  {} at {}", c["name"].as_str().unwrap_or(""), c["time_unix"]);
            }
            if status["witness_quorum"].as_u64().is_some_and(|q| q > 0) {
                println!(
                    "witnessed {} of {} entries (quorum: {} witness cosignatures)",
                    status["witnessed_size"], status["size"], status["witness_quorum"]
                );
            }
            for f in status["forks"].as_array().into_iter().flatten() {
                println!(
                    "FORK      size {} root {} from {} ({}; evidence {})",
                    f["forked_size"],
                    f["forked_root"].as_str().unwrap_or(""),
                    f["peer"].as_str().unwrap_or(""),
                    f["reason"].as_str().unwrap_or(""),
                    f["evidence"].as_str().unwrap_or("")
                );
            }
            if let Some(c) = status["checkpoint"].as_str() {
                println!("\n{c}");
            }
            Ok(())
        }
        LogCommand::Inspect { image, node } => {
            let found = node_json(&node.node, &format!("/sealpod/v1/log/images/{image}"))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&found["history"])?);
                return Ok(());
            }
            for e in found["history"].as_array().into_iter().flatten() {
                println!(
                    "#{:<6} {} {} published {} by key {}…",
                    e["index"],
                    e["image"].as_str().unwrap_or(""),
                    e["manifest_digest"].as_str().unwrap_or(""),
                    e["time_unix"],
                    &e["publisher_key"].as_str().unwrap_or("")
                        [..16.min(e["publisher_key"].as_str().unwrap_or("").len())]
                );
            }
            Ok(())
        }
        LogCommand::Verify { image, log_key, node } => {
            let found = node_json(&node.node, &format!("/sealpod/v1/log/images/{image}"))?;
            let reported = found["log_key"].as_str().unwrap_or_default().to_owned();
            let vkey = match &log_key {
                Some(k) => key_arg(k)?,
                None => reported.clone(),
            };
            let verifier = Ed25519Verifier::from_vkey(&vkey).map_err(|e| anyhow::anyhow!("log key: {e}"))?;
            let origin = verifier.name().to_owned();
            let keys = VerifierSet::new().with(verifier).map_err(|e| anyhow::anyhow!("{e}"))?;
            let inclusion = &found["inclusion"];
            let note = inclusion["checkpoint"].as_str().context("no checkpoint in the node's answer")?;
            let (checkpoint, _) = Checkpoint::open(note.as_bytes(), &origin, &keys)
                .map_err(|e| anyhow::anyhow!("the checkpoint does not verify with the log key: {e}"))?;
            let e = &inclusion["entry"];
            let entry = LogEntry {
                image: e["image"].as_str().unwrap_or_default().to_owned(),
                manifest_digest: e["manifest_digest"].as_str().unwrap_or_default().to_owned(),
                publisher_key: hex::decode(e["publisher_key"].as_str().unwrap_or_default())?,
                time_unix: e["time_unix"].as_u64().unwrap_or_default(),
            };
            if entry.image != image {
                bail!("the node answered for {:?}, not {image:?}", entry.image);
            }
            let leaf = leaf_hash(&entry.encode()?);
            if hex::encode(leaf) != inclusion["leaf_hash"].as_str().unwrap_or_default() {
                bail!("the entry does not hash to the leaf hash the node gave");
            }
            let index = e["index"].as_u64().context("no index")?;
            let size = inclusion["tree_size"].as_u64().context("no tree size")?;
            if size != checkpoint.size {
                bail!("the proof is for size {size}, the checkpoint for {}", checkpoint.size);
            }
            let proof: Vec<Hash> = inclusion["proof"]
                .as_array()
                .context("no proof")?
                .iter()
                .map(|h| hash_hex(h.as_str().unwrap_or_default()))
                .collect::<Result<_>>()?;
            verify_inclusion(index, size, &leaf, &proof, &checkpoint.root)
                .map_err(|e| anyhow::anyhow!("the inclusion proof does not verify: {e}"))?;
            let key_source = if log_key.is_some() { "the key given" } else { "the key the node reports" };
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({
                        "verified": true,
                        "image": image,
                        "manifest_digest": entry.manifest_digest,
                        "index": index,
                        "tree_size": size,
                        "leaf_hash": hex::encode(leaf),
                        "proof": inclusion["proof"],
                        "checkpoint": note,
                        "log_key": vkey,
                        "log_key_source": if log_key.is_some() { "given" } else { "node" },
                    }))?
                );
            } else {
                println!("{image} -> {} is entry #{index} of {origin}", entry.manifest_digest);
                println!("inclusion proof (leaf {} in a tree of {size}):", hex::encode(leaf));
                for h in &proof {
                    println!("  {}", hex::encode(h));
                }
                println!("checkpoint, signature verified with {key_source}:\n{note}");
                println!("verified");
            }
            Ok(())
        }
    }
}

#[derive(Args)]
pub struct ImagePushArgs {
    /// What to publish: an OCI layout (DIR or oci:DIR[:TAG]), an
    /// oci-archive:FILE[:TAG], a docker-archive:FILE[:NAME], or an image in
    /// another registry (docker://HOST/NAME:TAG or @DIGEST).
    src: String,
    /// The name and tag to publish it under (e.g. team/app:1.0).
    name: String,
    #[command(flatten)]
    node: NodeArg,
    /// Trust this CA certificate (PEM) for a docker:// source's HTTPS.
    #[arg(long, value_name = "FILE")]
    src_ca: Option<PathBuf>,
    /// Allow plain HTTP to a non-loopback docker:// source.
    #[arg(long)]
    src_insecure: bool,
    /// Credentials for a docker:// source, USER:PASSWORD.
    #[arg(long, env = "SEALPOD_SRC_CREDENTIALS", hide_env_values = true)]
    src_credentials: Option<String>,
}

/// `name:tag` as a repository name and a tag.
fn name_and_tag(image: &str) -> Result<(RepositoryName, Tag)> {
    let (name, tag) = sealpod_imagelog::split_image(image).with_context(|| format!("{image:?} has no :tag"))?;
    let name = name.parse().map_err(|e| anyhow::anyhow!("{image:?}: {e}"))?;
    let tag = tag.parse().map_err(|e| anyhow::anyhow!("{image:?}: {e}"))?;
    Ok((name, tag))
}

/// Reads a local image into `store` under `repo`; returns its manifest digest.
pub(crate) fn load_local(src: &str, store: &Store, repo: &RepositoryName) -> Result<Digest> {
    let reference = sealpod_oci::ImageReference::parse(src, &std::env::current_dir()?)
        .with_context(|| format!("{src:?} is not an image reference"))?;
    let image = sealpod_oci::LocalImage::open(&reference).with_context(|| format!("opening {src}"))?;
    store.put(image.config_bytes())?;
    for (i, layer) in image.layers().iter().enumerate() {
        let digest: Digest = layer.digest().to_string().parse().map_err(|e| anyhow::anyhow!("layer {i}: {e}"))?;
        if store.contains(&digest)? {
            continue;
        }
        let (mut raw, size) = image.layer_blob(i)?;
        let mut writer = store.writer_expecting(digest, Some(size))?;
        std::io::copy(&mut raw, &mut writer)?;
        writer.commit().with_context(|| format!("layer {i} of {src}"))?;
    }
    let media_type = image.manifest().media_type().as_ref().map(|m| m.to_string());
    let stored = store.put_manifest(repo, None, media_type.as_deref(), image.manifest_bytes())?;
    Ok(stored.digest)
}

pub fn image_push(args: ImagePushArgs, json: bool) -> Result<()> {
    let (repo, tag) = name_and_tag(&args.name)?;
    let staging = tempfile::tempdir().context("staging directory")?;
    let store = Store::open(staging.path().join("store"))?;
    let node_url = format!("http://{}", args.node.node.trim_start_matches("http://"));
    let rt = crate::runtime()?;
    let digest = rt.block_on(async {
        let digest = match args.src.strip_prefix("docker://") {
            Some(rest) => {
                let (host, path) = rest.split_once('/').context("docker://HOST/NAME:TAG")?;
                let (src_repo, reference) = match path.split_once('@') {
                    Some((name, digest)) => {
                        (name.to_owned(), Reference::Digest(digest.parse().map_err(|e| anyhow::anyhow!("{e}"))?))
                    }
                    None => {
                        let (n, t) = name_and_tag(path)?;
                        (n.to_string(), Reference::Tag(t))
                    }
                };
                let src_repo: RepositoryName = src_repo.parse().map_err(|e| anyhow::anyhow!("{e}"))?;
                let scheme = if args.src_insecure || host.starts_with("127.") || host.starts_with("localhost") {
                    "http"
                } else {
                    "https"
                };
                let options =
                    client_options(args.src_ca.as_deref(), args.src_insecure, args.src_credentials.as_deref())?;
                let client = RegistryClient::new(&format!("{scheme}://{host}"), options)?;
                pull_into_store(&client, &src_repo, &reference, &store, &repo, None)
                    .await
                    .with_context(|| format!("pulling {}", args.src))?
            }
            None => {
                let (src, store, repo) = (args.src.clone(), store.clone(), repo.clone());
                tokio::task::spawn_blocking(move || load_local(&src, &store, &repo)).await??
            }
        };
        let node = RegistryClient::new(&node_url, ClientOptions::default())?;
        push_from_store(&store, &digest, &node, &repo, Some(&tag))
            .await
            .with_context(|| format!("pushing to the node at {node_url}"))?;
        anyhow::Ok(digest)
    })?;
    let image = format!("{repo}:{tag}");
    let found = node_json(&args.node.node, &format!("/sealpod/v1/log/images/{image}"))
        .context("the node stored the image but does not show it in its log")?;
    let entry = &found["inclusion"]["entry"];
    if entry["manifest_digest"].as_str() != Some(&digest.to_string()) {
        bail!("the node's log maps {image} to {}, not to the pushed {digest}", entry["manifest_digest"]);
    }
    if json {
        println!(
            "{}",
            serde_json::json!({
                "image": image,
                "digest": digest.to_string(),
                "index": entry["index"],
                "tree_size": found["inclusion"]["tree_size"],
                "origin": found["origin"],
            })
        );
    } else {
        println!(
            "published {image} {digest} as entry #{} of {} (size {})",
            entry["index"],
            found["origin"].as_str().unwrap_or(""),
            found["inclusion"]["tree_size"]
        );
    }
    Ok(())
}
