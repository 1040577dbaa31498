//! The OCI distribution API over sealpod's content store, so docker,
//! podman and skopeo pull from and push to a node unchanged.
//!
//! What it serves (details, limits and what is missing in
//! `docs/registry.md`):
//!
//! * `GET /v2/` — the API version check;
//! * `GET`/`HEAD` manifests by tag or digest and blobs by digest, with
//!   `Docker-Content-Digest`, `Content-Length` and the manifest's own media
//!   type (OCI and Docker v2 manifests and indexes); blobs stream from disk
//!   and are verified while sent — a blob found corrupt aborts its response;
//! * pushes: monolithic (`POST …/blobs/uploads/?digest=`), chunked (`POST`,
//!   `PATCH` with or without `Content-Range`, `PUT ?digest=`), upload status
//!   and cancel, cross-repository mount, manifest `PUT` (validated, at most
//!   4 MiB, every referenced blob present);
//! * `GET …/tags/list` with `n`/`last` pagination; `DELETE` of manifests and
//!   tags when enabled.
//!
//! Repository names have any number of components and are checked against
//! the spec's grammar before they touch the file system. Every request
//! body, header read and idle transfer is bounded ([`RegistryOptions`]).
//! Errors use the spec's JSON form and codes. A [`PullPolicy`] decides
//! whether a manifest may be served; the default allows all, and the node
//! plugs in its transparency-log check there.
//!
//! The [`client`] module is the other side: a distribution client (HTTP or
//! HTTPS, basic and bearer-token authentication) that pulls images from a
//! registry into a store and pushes them from a store, verifying every
//! digest.
//!
//! What it leaves to others: storage, verification and garbage collection
//! (`sealpod-store`), fetching from peers (`net`), trust (`tlog`), TLS and
//! authentication when serving (it is meant for a loopback address), the
//! referrers and catalog APIs, range requests.
//!
//! Specification: OCI distribution spec v1.1 ("Pulling", "Pushing",
//! "Content discovery", "Content management", "Error codes"), and the
//! Docker registry API v2 headers (`Docker-Content-Digest`,
//! `Docker-Upload-UUID`, `Docker-Distribution-API-Version`). Routing and
//! responses are `axum`'s, connections `hyper`'s; the path grammar and the
//! handlers are written here, as no maintained crate serves the
//! distribution API as a library.
//!
//! ```no_run
//! # async fn run() -> std::io::Result<()> {
//! use sealpod_registry::{Registry, RegistryOptions};
//! use sealpod_store::Store;
//!
//! let store = Store::open("/var/lib/sealpod/store").expect("store");
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:5000").await?;
//! // skopeo copy oci:layout:tag docker://127.0.0.1:5000/team/app:v1 --dest-tls-verify=false
//! Registry::new(store)
//!     .options(RegistryOptions::default())
//!     .pull_policy(|_: &_, _: &_, _: &_| Ok(()))
//!     .serve(listener)
//!     .await
//! # }
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod body;
pub mod client;
mod error;
mod handlers;
mod route;
mod uploads;

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use sealpod_store::{Reference, RepositoryName, Store, StoredManifest, Tag};
use tokio::net::TcpListener;

pub use error::{ErrorCode, RegistryError};
pub use route::{parse_digest, parse_endpoint, parse_query, percent_decode, query_value, ContentRange, Endpoint};
pub use sealpod_store::{Digest, MAX_MANIFEST_SIZE};

/// Limits and switches of a [`Registry`].
#[derive(Debug, Clone)]
pub struct RegistryOptions {
    /// Largest manifest accepted by `PUT` (at most [`MAX_MANIFEST_SIZE`]).
    pub max_manifest_size: u64,
    /// Largest body of one upload request (`POST`, `PATCH` or `PUT`); it is
    /// streamed to disk, never held in memory.
    pub max_chunk_size: u64,
    /// Largest blob accepted.
    pub max_blob_size: u64,
    /// Longest wait for the next piece of a request or response body.
    pub idle_timeout: Duration,
    /// Longest wait for a request's headers.
    pub header_read_timeout: Duration,
    /// Connections served at once; further ones wait to be accepted.
    pub max_connections: usize,
    /// Uploads held open in memory at once.
    pub max_open_uploads: usize,
    /// Largest page of `tags/list` (also when the client asks for none).
    pub max_tags_page: usize,
    /// Whether `DELETE` of manifests and tags is allowed.
    pub allow_delete: bool,
    /// Serves pulls only: every push, upload and delete is `403 DENIED`
    /// (a provider serving its pods' images to its cluster's nodes).
    pub read_only: bool,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        RegistryOptions {
            max_manifest_size: MAX_MANIFEST_SIZE,
            max_chunk_size: 64 << 30,
            max_blob_size: 64 << 30,
            idle_timeout: Duration::from_secs(60),
            header_read_timeout: Duration::from_secs(30),
            max_connections: 512,
            max_open_uploads: 256,
            max_tags_page: 1000,
            allow_delete: false,
            read_only: false,
        }
    }
}

/// Why a [`PullPolicy`] refused to serve a manifest; the client gets
/// `403 DENIED` with the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullDenied {
    /// Said to the client, e.g. "not included in the trusted log".
    pub reason: String,
}

/// Decides whether a manifest may be served (`GET` and `HEAD`).
///
/// Called on a blocking thread for every manifest request after the
/// manifest was found; it should answer from local state (e.g. a synced
/// transparency log), not wait on the network.
pub trait PullPolicy: Send + Sync + 'static {
    /// `Ok(())` to serve `manifest`, asked for as `reference` in `repository`.
    fn check_manifest(
        &self,
        repository: &RepositoryName,
        reference: &Reference,
        manifest: &StoredManifest,
    ) -> Result<(), PullDenied>;
}

/// A blob on its way into the store, readable as it arrives.
pub struct ArrivingBlob {
    /// Its size in bytes, as the response announces it.
    pub size: u64,
    /// Yields the bytes as they arrive. It must report the end (`Ok(0)`)
    /// only once the whole blob has been verified against its digest, and
    /// fail otherwise: the registry holds the last chunk back until then,
    /// so a client never receives complete-looking wrong content.
    pub reader: Box<dyn std::io::Read + Send>,
}

/// Where content missing from the store may come from (the peer-to-peer
/// network). Each call tries to make the content present in the store and
/// says whether it did; the registry then serves it from the store, which
/// verifies it, like anything else.
pub trait ContentSource: Send + Sync + 'static {
    /// Makes blob `digest` present.
    fn fetch_blob(&self, digest: Digest) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send>>;
    /// Starts making blob `digest` present and gives its bytes as they
    /// arrive, so a large blob reaches the client while it is still being
    /// fetched; `None` when it cannot be streamed, after which the registry
    /// serves whatever the store then holds. The default waits for
    /// [`ContentSource::fetch_blob`].
    fn stream_blob(
        &self,
        digest: Digest,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Option<ArrivingBlob>> + Send>> {
        let fetched = self.fetch_blob(digest);
        Box::pin(async move {
            fetched.await;
            None
        })
    }
    /// Makes manifest `digest` present and recorded in `repository`. The
    /// blobs and child manifests it references may still be arriving when
    /// it returns (see [`ContentSource::stream_blob`]); a source that
    /// cannot stream makes them present first.
    fn fetch_manifest(
        &self,
        repository: RepositoryName,
        digest: Digest,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send>>;
    /// The digest `repository:tag` stands for, when the source knows better
    /// than the local tags (a transparency log does); `None` falls back to
    /// the store's own tag. Asked on every pull by tag.
    fn resolve_tag(
        &self,
        _repository: RepositoryName,
        _tag: Tag,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Option<Digest>> + Send>> {
        Box::pin(async { None })
    }
}

/// Told about every manifest pushed, after it is stored; an error reaches
/// the pushing client as `DENIED` with the reason (the manifest stays
/// stored but, say, unpublished).
pub trait PushHook: Send + Sync + 'static {
    /// `manifest` was stored in `repository`, tagged `tag` if pushed by tag.
    fn manifest_pushed(
        &self,
        repository: &RepositoryName,
        tag: Option<&Tag>,
        manifest: &StoredManifest,
    ) -> Result<(), String>;
}

impl<F> PushHook for F
where
    F: Fn(&RepositoryName, Option<&Tag>, &StoredManifest) -> Result<(), String> + Send + Sync + 'static,
{
    fn manifest_pushed(&self, r: &RepositoryName, tag: Option<&Tag>, m: &StoredManifest) -> Result<(), String> {
        self(r, tag, m)
    }
}

/// No source: what is not stored is unknown.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoSource;

impl ContentSource for NoSource {
    fn fetch_blob(&self, _: Digest) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send>> {
        Box::pin(async { false })
    }
    fn fetch_manifest(
        &self,
        _: RepositoryName,
        _: Digest,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send>> {
        Box::pin(async { false })
    }
}

/// Serves everything stored.
#[derive(Debug, Clone, Copy, Default)]
pub struct AllowAll;

impl PullPolicy for AllowAll {
    fn check_manifest(&self, _: &RepositoryName, _: &Reference, _: &StoredManifest) -> Result<(), PullDenied> {
        Ok(())
    }
}

impl<F> PullPolicy for F
where
    F: Fn(&RepositoryName, &Reference, &StoredManifest) -> Result<(), PullDenied> + Send + Sync + 'static,
{
    fn check_manifest(&self, r: &RepositoryName, reference: &Reference, m: &StoredManifest) -> Result<(), PullDenied> {
        self(r, reference, m)
    }
}

/// Builds the registry's HTTP service over a [`Store`].
pub struct Registry {
    store: Store,
    options: RegistryOptions,
    policy: Arc<dyn PullPolicy>,
    source: Arc<dyn ContentSource>,
    push_hook: Option<Arc<dyn PushHook>>,
    extra: Option<Router>,
}

impl Registry {
    /// A registry over `store` with default options that serves everything.
    pub fn new(store: Store) -> Registry {
        Registry {
            store,
            options: RegistryOptions::default(),
            policy: Arc::new(AllowAll),
            source: Arc::new(NoSource),
            push_hook: None,
            extra: None,
        }
    }

    /// Replaces the options.
    pub fn options(mut self, options: RegistryOptions) -> Registry {
        self.options = options;
        self
    }

    /// Replaces the pull policy.
    pub fn pull_policy(mut self, policy: impl PullPolicy) -> Registry {
        self.policy = Arc::new(policy);
        self
    }

    /// Where to look for content the store lacks.
    pub fn content_source(mut self, source: impl ContentSource) -> Registry {
        self.source = Arc::new(source);
        self
    }

    /// Called after every manifest push.
    pub fn push_hook(mut self, hook: impl PushHook) -> Registry {
        self.push_hook = Some(Arc::new(hook));
        self
    }

    /// More routes served beside the API (they must not start with `/v2/`),
    /// under the same connection limits and timeouts.
    pub fn routes(mut self, routes: Router) -> Registry {
        self.extra = Some(routes);
        self
    }

    /// The `axum` router, for embedding in a larger server. Connection
    /// limits and header timeouts are [`Registry::serve`]'s; an embedder
    /// must provide its own.
    pub fn router(self) -> Router {
        let api = handlers::router(self.store, self.options, self.policy, self.source, self.push_hook);
        match self.extra {
            Some(extra) => extra.merge(api),
            None => api,
        }
    }

    /// Serves on `listener` until an accept error that is not transient.
    pub async fn serve(self, listener: TcpListener) -> io::Result<()> {
        self.serve_with_shutdown(listener, std::future::pending()).await
    }

    /// Serves on `listener` until `shutdown` completes; then stops
    /// accepting (connections in progress finish on their own).
    pub async fn serve_with_shutdown(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> io::Result<()> {
        let options = self.options.clone();
        let router = self.router();
        let permits = Arc::new(tokio::sync::Semaphore::new(options.max_connections.max(1)));
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(%addr, "registry listening");
        }
        tokio::pin!(shutdown);
        loop {
            let permit = tokio::select! {
                p = permits.clone().acquire_owned() => p.map_err(io::Error::other)?,
                () = &mut shutdown => return Ok(()),
            };
            let (stream, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) if is_transient(&e) => {
                        tracing::warn!(error = %e, "accept failed; retrying");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                    Err(e) => return Err(e),
                },
                () = &mut shutdown => return Ok(()),
            };
            let _ = stream.set_nodelay(true);
            let service = TowerToHyperService::new(router.clone());
            let header_timeout = options.header_read_timeout;
            tokio::spawn(async move {
                let connection = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(header_timeout)
                    .max_buf_size(64 * 1024)
                    .serve_connection(TokioIo::new(stream), service);
                if let Err(e) = connection.await {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                drop(permit);
            });
        }
    }
}

fn is_transient(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset | io::ErrorKind::Interrupted)
        || e.raw_os_error().is_some_and(|code| code == 24 || code == 23) // EMFILE, ENFILE
}

/// Serves the registry API for `store` on `listener` with `options`, allowing
/// every pull. The short form of [`Registry::serve`].
pub async fn serve(listener: TcpListener, store: Store, options: RegistryOptions) -> io::Result<()> {
    Registry::new(store).options(options).serve(listener).await
}
