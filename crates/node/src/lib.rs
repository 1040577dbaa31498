//! The artifact node: a local OCI registry (`sealpod-registry` over
//! `sealpod-store`) that serves only images recorded in a transparency log,
//! with content that may come from peers.
//!
//! Docker, podman and skopeo talk to the registry on localhost.
//!
//! * **Log.** The node keeps a full copy of one image log
//!   (`sealpod-imagelog`). Tags resolve through it: `name:tag` is the digest
//!   the log's latest entry for it names. A manifest is served only if the
//!   log includes its digest under that repository (or it is a platform
//!   manifest of an included index); anything else gets `403 DENIED` naming
//!   the reason. The node holding the log's signing key (the authority)
//!   publishes every tagged push; the others sync from peers over
//!   `/apocryph/log/0.0.1` (`logsync`), refusing forks. Tiles and a JSON
//!   view are served over HTTP beside the registry (`http`).
//! * **Content.** A blob or manifest the store lacks is looked up on the
//!   DHT, fetched over `/apocryph/blob/0.0.1` from a peer that holds it and
//!   written through the store, which verifies it before anything is served
//!   (`peers`). An authority may also pull through from an upstream
//!   registry. Whatever the node holds it announces and serves to peers.
//!
//! What it leaves to others: the formats and proofs (`tlog`), storage and
//! verification (`store`), the HTTP API (`registry`), transport (`net`).

mod http;
mod logsync;
mod peers;

use std::collections::HashSet;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use sealpod_imagelog::{ImageLog, ImageLogConfig};
use sealpod_net::{Multiaddr, Node, NodeConfig as NetConfig};
use sealpod_registry::client::{pull_into_store, ClientOptions, RegistryClient};
use sealpod_registry::{ArrivingBlob, ContentSource, PullDenied, Registry};
use sealpod_store::{Digest, ParsedManifest, Reference, RepositoryName, Store, StoredManifest, Tag};
use sealpod_tlog::{CosignatureSigner, CosignatureVerifier, Ed25519Signer, LogEntry};

pub use logsync::dht_key as log_dht_key;

use peers::{BoxedBool, Peers, StoreBlobs};

/// Which log a node keeps and what it does in it.
#[derive(Debug, Clone)]
pub struct LogSettings {
    /// The log's public key (C2SP vkey); its name is the log's origin.
    pub log_key: String,
    /// The log's signing key (C2SP skey), on the authority only.
    pub signing_key: Option<String>,
    /// Witnesses whose cosignatures are checked and kept (vkeys).
    pub witnesses: Vec<String>,
    /// This node's witness key (skey of a cosignature key): it cosigns
    /// every checkpoint it accepts.
    pub witness_key: Option<String>,
    /// On the authority, publish every manifest pushed by tag.
    pub publish_on_push: bool,
    /// Serve an entry only once a checkpoint covering it carries
    /// cosignatures from this many of `witnesses` (0: the log key alone).
    pub witness_quorum: usize,
}

/// How an artifact node is set up.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// The content store, the log and the node key.
    pub dir: PathBuf,
    /// Where the registry API listens (keep it on loopback).
    pub registry: SocketAddr,
    /// libp2p listen addresses.
    pub listen: Vec<Multiaddr>,
    /// DHT bootstrap peers.
    pub bootstrap: Vec<Multiaddr>,
    /// Written (JSON: peer id, addresses, registry) once the node serves.
    pub ready_file: Option<PathBuf>,
    /// AutoNAT, relays (as a user and as a relay) and hole punching.
    pub nat: sealpod_net::NatConfig,
    /// The log; `None` makes a plain registry that serves whatever is
    /// stored, unchecked.
    pub log: Option<LogSettings>,
    /// How often to ask peers for a newer checkpoint.
    pub sync_period: Duration,
    /// On the authority: a registry to pull through from when a tag is not
    /// in the log yet (base URL, e.g. `https://registry.example`); what it
    /// fetches is verified, stored and published.
    pub upstream: Option<(String, ClientOptions)>,
}

/// What a running node is reachable at.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Ready {
    /// The node's peer id.
    pub peer_id: String,
    /// libp2p addresses, each ending in `/p2p/<peer id>`.
    pub addresses: Vec<String>,
    /// The registry API's address.
    pub registry: SocketAddr,
    /// The log's origin, if the node keeps one.
    pub log_origin: Option<String>,
}

/// Serves a manifest only if the log includes it.
#[derive(Clone)]
struct LogPolicy {
    log: ImageLog,
    store: Store,
}

impl LogPolicy {
    /// Whether a witnessed entry of the log publishes `digest` under
    /// `repository` (see `ImageLog::witnessed_size`).
    fn included(&self, repository: &RepositoryName, digest: &Digest) -> bool {
        let repo = repository.as_str();
        let witnessed = self.log.witnessed_size();
        let published = |d: &str| self.log.find_digest(repo, d).is_some_and(|e| e.index < witnessed);
        if published(&digest.to_string()) {
            return true;
        }
        // A platform manifest is included through the index that lists it.
        self.log.digests_of(repo).iter().filter(|d| published(d)).filter_map(|d| d.parse::<Digest>().ok()).any(
            |index| {
                self.store
                    .read_to_vec(&index, sealpod_store::MAX_MANIFEST_SIZE)
                    .ok()
                    .and_then(|b| ParsedManifest::parse(&b, None).ok())
                    .is_some_and(|p| p.manifests.iter().any(|m| m.digest == *digest))
            },
        )
    }
}

impl LogPolicy {
    /// A private image needs no log entry: its digest came to the asker
    /// over an authenticated connection, and its content is unreadable
    /// without the key that came with it. So that this is no way around the
    /// log for public images, the rule holds only for manifests asked for
    /// by digest whose every layer is ocicrypt-encrypted.
    fn check_private(&self, reference: &Reference, digest: &Digest) -> Result<(), PullDenied> {
        let deny = |reason: String| {
            tracing::info!(%reason, "private pull refused");
            Err(PullDenied { reason })
        };
        if let Reference::Tag(tag) = reference {
            return deny(format!(
                "{}:{tag}: private images are addressed by digest only",
                sealpod_store::PRIVATE_REPOSITORY
            ));
        }
        match encrypted_layers(&self.store, digest) {
            Ok(()) => Ok(()),
            Err(why) => deny(format!("manifest {digest} in {}: {why}", sealpod_store::PRIVATE_REPOSITORY)),
        }
    }
}

/// Whether `digest` is an image manifest whose layers are all encrypted.
fn encrypted_layers(store: &Store, digest: &Digest) -> Result<(), String> {
    #[derive(serde::Deserialize)]
    struct Layer {
        #[serde(rename = "mediaType")]
        media_type: String,
    }
    #[derive(serde::Deserialize)]
    struct Manifest {
        #[serde(default)]
        layers: Vec<Layer>,
    }
    let bytes = store.read_to_vec(digest, sealpod_store::MAX_MANIFEST_SIZE).map_err(|e| e.to_string())?;
    let m: Manifest = serde_json::from_slice(&bytes).map_err(|e| format!("not an image manifest: {e}"))?;
    if m.layers.is_empty() {
        return Err("has no layers; only encrypted images are served without a log entry".into());
    }
    if let Some(plain) = m.layers.iter().find(|l| !l.media_type.ends_with("+encrypted")) {
        return Err(format!(
            "has a plain layer ({}); only encrypted images are served without a log entry",
            plain.media_type
        ));
    }
    Ok(())
}

impl sealpod_registry::PullPolicy for LogPolicy {
    fn check_manifest(
        &self,
        repository: &RepositoryName,
        reference: &Reference,
        manifest: &StoredManifest,
    ) -> Result<(), PullDenied> {
        if repository.as_str() == sealpod_store::PRIVATE_REPOSITORY {
            return self.check_private(reference, &manifest.digest);
        }
        if self.included(repository, &manifest.digest) {
            return Ok(());
        }
        let c = self.log.checkpoint();
        let witnessed = self.log.witnessed_size();
        let mut reason = match self.log.find_digest(repository.as_str(), &manifest.digest.to_string()) {
            Some(e) if e.index >= witnessed => format!(
                "manifest {} of {repository} is entry {} of log {}, which no checkpoint cosigned by {} witness(es) \
                 covers yet (witnessed up to size {witnessed} of {})",
                manifest.digest,
                e.index,
                c.origin,
                self.log.witness_quorum(),
                c.size
            ),
            _ => format!(
                "manifest {} of {repository} is not included in the trusted log {} (size {})",
                manifest.digest, c.origin, c.size
            ),
        };
        if let Reference::Tag(tag) = reference {
            reason.push_str(&format!("; the log has no entry for {repository}:{tag}"));
        }
        let forks = self.log.status().forks.len();
        if forks > 0 {
            reason.push_str(&format!("; {forks} fork(s) of the log were refused, see `sealpod log checkpoint`"));
        }
        tracing::info!(%reason, "pull refused");
        Err(PullDenied { reason })
    }
}

/// Where the registry's missing content and tags come from.
#[derive(Clone)]
struct Source {
    peers: Peers,
    /// The log's pull policy, if the node keeps a log.
    policy: Option<LogPolicy>,
    syncer: Option<logsync::Syncer>,
    upstream: Option<RegistryClient>,
    publisher_key: Vec<u8>,
}

impl Source {
    /// Pulls `repository:tag` from the upstream registry into the store and
    /// publishes it (authority only).
    async fn pull_through(&self, log: &ImageLog, repository: &RepositoryName, tag: &Tag) -> Option<Digest> {
        let client = self.upstream.as_ref()?;
        let store = self.peers.store().clone();
        let pulled =
            pull_into_store(client, repository, &Reference::Tag(tag.clone()), &store, repository, Some(tag)).await;
        let digest = match pulled {
            Ok(d) => d,
            Err(e) => {
                tracing::info!(%repository, %tag, upstream = %client.base_url(), error = %e, "pull-through failed");
                return None;
            }
        };
        let entry = LogEntry {
            image: format!("{repository}:{tag}"),
            manifest_digest: digest.to_string(),
            publisher_key: self.publisher_key.clone(),
            time_unix: now_unix(),
        };
        let log = log.clone();
        match tokio::task::spawn_blocking(move || log.publish(&entry)).await {
            Ok(Ok(e)) => {
                tracing::info!(%repository, %tag, %digest, index = e.index, upstream = %client.base_url(), "pulled through and published");
                Some(digest)
            }
            other => {
                tracing::warn!(%repository, %tag, ?other, "pulled through but could not publish");
                None
            }
        }
    }
}

impl ContentSource for Source {
    fn fetch_blob(&self, digest: Digest) -> BoxedBool {
        // Asked for a HEAD only (a GET streams): see `blob_if_announced`.
        let peers = self.peers.clone();
        Box::pin(async move { peers.blob_if_announced(digest).await })
    }

    fn stream_blob(&self, digest: Digest) -> Pin<Box<dyn Future<Output = Option<ArrivingBlob>> + Send>> {
        let peers = self.peers.clone();
        Box::pin(async move { peers.stream(digest).await })
    }

    fn fetch_manifest(&self, repository: RepositoryName, digest: Digest) -> BoxedBool {
        let this = self.clone();
        Box::pin(async move {
            // The manifest itself is fetched either way, so that a refusal
            // can say why; its layers only if the log includes it, so that
            // asking for any digest cannot make the node download anything.
            let prefetch = match this.policy.clone() {
                // Asked for by digest: its layers are wanted (and the pull
                // policy refuses the manifest unless they are encrypted).
                Some(_) if repository.as_str() == sealpod_store::PRIVATE_REPOSITORY => true,
                Some(policy) => {
                    let (r, d) = (repository.clone(), digest);
                    tokio::task::spawn_blocking(move || policy.included(&r, &d)).await.unwrap_or(false)
                }
                None => true,
            };
            this.peers.manifest(repository, digest, prefetch).await
        })
    }

    fn resolve_tag(
        &self,
        repository: RepositoryName,
        tag: Tag,
    ) -> Pin<Box<dyn Future<Output = Option<Digest>> + Send>> {
        let this = self.clone();
        Box::pin(async move {
            let syncer = this.syncer.clone()?;
            let image = format!("{repository}:{tag}");
            // The latest witnessed entry for the tag; if none is witnessed
            // yet, the latest entry, which the pull policy then refuses
            // with the reason.
            let lookup = |log: &ImageLog| {
                let witnessed = log.witnessed_size();
                let history = log.history(&image);
                let chosen = history.iter().rev().find(|e| e.index < witnessed).or(history.last());
                chosen.and_then(|e| e.manifest_digest.parse::<Digest>().ok())
            };
            if let Some(d) = lookup(&syncer.log) {
                return Some(d);
            }
            if syncer.log.is_authority() {
                return this.pull_through(&syncer.log, &repository, &tag).await;
            }
            // Perhaps published a moment ago: ask the peers now, briefly.
            let _ = tokio::time::timeout(Duration::from_secs(10), syncer.round()).await;
            lookup(&syncer.log)
        })
    }
}

fn now_unix() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn open_log(dir: &std::path::Path, settings: &LogSettings) -> anyhow::Result<ImageLog> {
    let signer = match &settings.signing_key {
        Some(skey) => Some(Ed25519Signer::from_skey(skey.trim()).map_err(|e| anyhow::anyhow!("log signing key: {e}"))?),
        None => None,
    };
    let cosigner = match &settings.witness_key {
        Some(skey) => Some(CosignatureSigner::from_skey(skey.trim()).map_err(|e| anyhow::anyhow!("witness key: {e}"))?),
        None => None,
    };
    let witnesses = settings
        .witnesses
        .iter()
        .map(|v| CosignatureVerifier::from_vkey(v.trim()).map_err(|e| anyhow::anyhow!("witness {v:?}: {e}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(ImageLog::open(ImageLogConfig {
        dir: dir.join("log"),
        log_key: settings.log_key.trim().to_owned(),
        signer,
        witnesses,
        cosigner,
        witness_quorum: settings.witness_quorum,
    })?)
}

/// Digests to announce for manifests recorded since the last call: each new
/// manifest and what it references. `seen` remembers the manifests already
/// handled, so each is read and parsed once.
fn newly_held(store: &Store, seen: &mut HashSet<Digest>) -> Vec<Digest> {
    let mut out = Vec::new();
    for repo in store.repositories().unwrap_or_default() {
        for m in store.manifests(&repo).unwrap_or_default() {
            if !seen.insert(m) {
                continue;
            }
            out.push(m);
            if let Ok(bytes) = store.read_to_vec(&m, sealpod_store::MAX_MANIFEST_SIZE) {
                if let Ok(parsed) = ParsedManifest::parse(&bytes, None) {
                    // A mirror records manifests ahead of their content;
                    // what arrives later is announced by the fetch itself.
                    out.extend(
                        parsed
                            .blobs
                            .iter()
                            .chain(&parsed.manifests)
                            .filter(|d| !d.external && store.contains(&d.digest).unwrap_or(false))
                            .map(|d| d.digest),
                    );
                }
            }
        }
    }
    out
}

/// Runs the node until the process is told to stop.
pub async fn run(config: NodeConfig) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.dir)?;
    let store = Store::open(config.dir.join("store"))?;
    let log = match &config.log {
        Some(settings) => Some(open_log(&config.dir, settings)?),
        None => {
            tracing::warn!("no log configured: this node serves every stored manifest, unchecked");
            None
        }
    };
    let keypair = sealpod_net::load_or_create_keypair(&config.dir.join("node.key"))?;
    let publisher_key = keypair.public().encode_protobuf();
    let mut net_config = NetConfig::client(keypair);
    net_config.listen = config.listen.clone();
    net_config.bootstrap = config.bootstrap.clone();
    net_config.serve_log = log.is_some();
    net_config.nat = config.nat.clone();
    let (net, mut inbound) = Node::start(net_config).await?;
    net.serve_blobs(Arc::new(StoreBlobs(store.clone())));

    let syncer = log.as_ref().map(|log| logsync::Syncer {
        log: log.clone(),
        net: net.clone(),
        known: config.bootstrap.iter().filter_map(|a| sealpod_net::split_peer_id(a).1).collect(),
        round: Arc::default(),
    });
    if let Some(log) = &log {
        let answering = log.clone();
        tokio::spawn(async move {
            while let Some(request) = inbound.recv().await {
                if let sealpod_net::InboundRequest::Log { peer, request, responder } = request {
                    tokio::spawn(logsync::answer(answering.clone(), peer, request, responder));
                }
            }
        });
        let (net, key) = (net.clone(), log_dht_key(log.origin()));
        tokio::spawn(async move {
            // Re-announced now and then, as the routing table grows.
            loop {
                let _ = net.provide_key(key.clone()).await;
                tokio::time::sleep(Duration::from_secs(30)).await;
            }
        });
        // The authority is the log: it never takes entries from peers (they
        // could only be its own, from before a restore; see docs).
        if let Some(s) = syncer.clone().filter(|_| !log.is_authority()) {
            tokio::spawn(s.run(config.sync_period));
        }
        let s = log.status();
        tracing::info!(origin = %s.origin, size = s.size, authority = s.authority, "keeping the image log");
    } else {
        drop(inbound);
    }

    // Announce what is held, now and as pushes add to it.
    let (announce_store, announce_net) = (store.clone(), net.clone());
    tokio::spawn(async move {
        let mut seen = HashSet::new();
        let mut announced = HashSet::new();
        loop {
            let s = announce_store.clone();
            let (fresh, back) = tokio::task::spawn_blocking(move || {
                let fresh = newly_held(&s, &mut seen);
                (fresh, seen)
            })
            .await
            .unwrap_or_default();
            seen = back;
            for d in fresh {
                if announced.insert(d) {
                    let _ = announce_net.provide_blob(&d.to_string()).await;
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });

    let listener = tokio::net::TcpListener::bind(config.registry).await?;
    let registry_addr = listener.local_addr()?;
    let ready = Ready {
        peer_id: net.peer_id().to_string(),
        addresses: net.listen_addrs().await.iter().map(|a| format!("{a}/p2p/{}", net.peer_id())).collect(),
        registry: registry_addr,
        log_origin: log.as_ref().map(|l| l.origin().to_owned()),
    };
    tracing::info!(registry = %registry_addr, peer = %ready.peer_id, "artifact node serving");
    if let Some(path) = &config.ready_file {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec(&ready)?)?;
        std::fs::rename(&tmp, path)?;
    }
    let upstream = match &config.upstream {
        Some((url, options)) if log.as_ref().is_some_and(ImageLog::is_authority) => {
            tracing::info!(%url, "pulling through from upstream");
            Some(RegistryClient::new(url, options.clone())?)
        }
        Some(_) => anyhow::bail!("--upstream needs the log's signing key: only the authority publishes what it pulls"),
        None => None,
    };
    let source = Source {
        peers: Peers::new(store.clone(), net),
        policy: log.clone().map(|log| LogPolicy { log, store: store.clone() }),
        syncer,
        upstream,
        publisher_key: publisher_key.clone(),
    };
    let mut registry = Registry::new(store.clone()).content_source(source);
    if let Some(log) = log {
        registry = registry.pull_policy(LogPolicy { log: log.clone(), store }).routes(http::routes(log.clone()));
        let publish = config.log.as_ref().is_some_and(|s| s.publish_on_push) && log.is_authority();
        registry = registry.push_hook(move |repo: &RepositoryName, tag: Option<&Tag>, m: &StoredManifest| {
            let Some(tag) = tag else { return Ok(()) };
            if !log.is_authority() {
                return Err(format!(
                    "this node only mirrors log {}; push {repo}:{tag} to the log's authority node to publish it",
                    log.origin()
                ));
            }
            if !publish {
                return Ok(());
            }
            let entry = LogEntry {
                image: format!("{repo}:{tag}"),
                manifest_digest: m.digest.to_string(),
                publisher_key: publisher_key.clone(),
                time_unix: now_unix(),
            };
            log.publish(&entry).map(|_| ()).map_err(|e| e.to_string())
        });
    }
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = registry.serve(listener) => r?,
        _ = tokio::signal::ctrl_c() => {}
        _ = sigterm.recv() => {}
    }
    Ok(())
}
