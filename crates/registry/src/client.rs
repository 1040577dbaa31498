//! A client for the OCI distribution API: pulls manifests and blobs from a
//! registry into a [`Store`] and pushes them from a store to a registry.
//!
//! Used to pull through from an upstream registry (Docker Hub, a CNCF
//! `docker-registry`), to copy an image into the local node's registry, and
//! to fetch a pod image from the local node.
//!
//! What it does:
//!
//! * plain HTTP/1.1 (`hyper`'s connection API over tokio) or HTTPS
//!   (`rustls` with the `ring` provider, the Mozilla roots of
//!   `webpki-roots` plus an optional extra CA); idle connections are kept
//!   and reused; every connect, wait and body chunk is bounded by
//!   [`ClientOptions::timeout`];
//! * anonymous, basic and bearer-token authentication (the Docker token
//!   protocol: on `401` with `WWW-Authenticate: Bearer realm=…` a token is
//!   fetched for the request's scope, cached until it expires, and the
//!   request retried once);
//! * every byte is checked: a manifest asked for by digest must hash to it,
//!   a `Docker-Content-Digest` that disagrees with the content is refused,
//!   blobs stream into a store [`sealpod_store::Writer`] that commits only
//!   content hashing to the requested digest — nothing is stored otherwise,
//!   and no blob is ever held in memory;
//! * blob downloads follow up to five redirects (registries send clients to
//!   object storage); credentials go only to the registry's own origin;
//! * [`pull_into_store`] and [`push_from_store`] copy a whole image or index
//!   (all platforms), bounded in depth, number of descriptors and manifest
//!   bytes held.
//!
//! What it leaves out: chunked (`PATCH`) and resumable uploads (a blob is
//! sent in one `PUT`), cross-repository mounts, range requests and resuming
//! a broken download, the referrers and catalog APIs, digests other than
//! sha256, Docker schema 1 manifests, proxies, HTTP/2, and credential
//! helpers or `~/.docker/config.json` (the caller passes credentials).
//!
//! Specifications: OCI distribution spec v1.1 ("Pulling", "Pushing"), the
//! Docker registry token authentication spec, RFC 9110 (`WWW-Authenticate`,
//! redirects). The token protocol and the challenge parser are written
//! here: the crates that do it (`oci-client`, `reqwest`-based ones) would
//! bring a second HTTP stack and TLS provider.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::future::{poll_fn, Future};
use std::io::{self, Read, Write};
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::SendRequest;
use hyper::http::{header, HeaderMap, HeaderValue, Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use sealpod_store::{
    media_type, DescriptorRef, Digest, ParsedManifest, Reference, RepositoryName, Store, StoreError, Tag,
    MAX_MANIFEST_SIZE,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// Redirects followed for one blob request.
pub const MAX_REDIRECTS: usize = 5;
/// How deep [`pull_into_store`] and [`push_from_store`] follow indexes of
/// indexes (the top manifest is depth 0).
pub const MAX_DEPTH: usize = 4;
/// How many descriptors (configs, layers, child manifests) one copy may
/// visit in all.
pub const MAX_DESCRIPTORS: usize = 10_000;

/// Most manifest bytes one copy holds in memory (the top one and every
/// child), so a hostile index cannot list thousands of 4 MiB children.
pub const MAX_TREE_MANIFEST_BYTES: u64 = 64 * 1024 * 1024;

/// Largest token-server response read.
const MAX_TOKEN_RESPONSE: u64 = 64 * 1024;
/// Largest error body read for its code and message.
const MAX_ERROR_BODY: u64 = 64 * 1024;
/// Most of an unwanted body read to keep its connection; past that it is closed.
const MAX_DRAIN: u64 = 64 * 1024;
/// Size of the chunks a blob is sent in.
const SEND_CHUNK: usize = 256 * 1024;
/// Idle connections kept for reuse.
const MAX_IDLE_CONNECTIONS: usize = 8;
/// Blobs moved at once by [`pull_into_store`] and [`push_from_store`].
const PARALLEL_BLOBS: usize = 3;
/// Tokens whose server gives no lifetime, or a shorter one, are kept this long (as the token spec says).
const MIN_TOKEN_LIFETIME: Duration = Duration::from_secs(60);
const USER_AGENT: &str = concat!("sealpod/", env!("CARGO_PKG_VERSION"));

/// Characters escaped in query values: all but RFC 3986 "unreserved".
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// A user name and password for basic authentication, also sent to a
/// bearer-token server. `Debug` does not show the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user name.
    pub username: String,
    /// The password or access token.
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials").field("username", &self.username).field("password", &"<redacted>").finish()
    }
}

/// How a [`RegistryClient`] connects, authenticates and what it accepts.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// PEM certificates trusted for HTTPS in addition to the Mozilla roots
    /// (a registry with a private CA or a self-signed certificate).
    pub ca_cert_pem: Option<Vec<u8>>,
    /// Whether plain `http://` may be used with hosts that are not loopback
    /// addresses (base, redirects and token servers). Loopback is always
    /// allowed.
    pub allow_insecure_http: bool,
    /// Basic credentials; without them the client is anonymous (and may
    /// still get anonymous bearer tokens).
    pub credentials: Option<Credentials>,
    /// Longest wait for a connection, a response, or the next piece of a
    /// body in either direction.
    pub timeout: Duration,
    /// Largest manifest accepted.
    pub max_manifest_size: u64,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            ca_cert_pem: None,
            allow_insecure_http: false,
            credentials: None,
            timeout: Duration::from_secs(30),
            max_manifest_size: MAX_MANIFEST_SIZE,
        }
    }
}

/// A registry's error, as its status and the first entry of its JSON body
/// (`{"errors":[{"code":…,"message":…}]}`) when it sent one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: u16,
    /// The spec's error code, e.g. `MANIFEST_UNKNOWN`.
    pub code: Option<String>,
    /// The registry's message.
    pub message: Option<String>,
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HTTP {}", self.status)?;
        if let Some(reason) = StatusCode::from_u16(self.status).ok().and_then(|s| s.canonical_reason()) {
            write!(f, " {reason}")?;
        }
        match (&self.code, &self.message) {
            (Some(code), Some(message)) => write!(f, ", {code}: {message}"),
            (Some(code), None) => write!(f, ", {code}"),
            (None, Some(message)) => write!(f, ": {message}"),
            (None, None) => Ok(()),
        }
    }
}

/// What went wrong talking to a registry. Messages name the request
/// (method and URL, without its query), the repository or digest, and the
/// registry's status and error code where there is one.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The base address is not `http(s)://host[:port]`.
    #[error("{base:?} is not a registry address ({reason}); use http://host:port or https://host[:port]")]
    InvalidBase {
        /// What was given.
        base: String,
        /// What is wrong with it.
        reason: String,
    },
    /// `ClientOptions::ca_cert_pem` holds no usable certificate.
    #[error("the extra CA certificate is not usable: {0}; pass PEM-encoded certificates")]
    InvalidCaCert(String),
    /// Plain HTTP to a host that is not on loopback, without permission.
    #[error("refusing plain http to {url}: it is not a loopback address; use https, or set ClientOptions::allow_insecure_http")]
    InsecureHttp {
        /// The address refused.
        url: String,
    },
    /// An argument cannot be sent (e.g. a media type with control characters).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The TCP connection failed.
    #[error("{request}: cannot connect: {source}")]
    Connect {
        /// Method and URL.
        request: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The TLS handshake failed, typically an untrusted certificate.
    #[error("{request}: TLS handshake failed: {source}; if the registry uses a private CA, pass it in ClientOptions::ca_cert_pem")]
    Tls {
        /// Method and URL.
        request: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The HTTP exchange failed (connection reset, malformed response, …).
    #[error("{request}: {source}")]
    Http {
        /// Method and URL.
        request: String,
        /// The underlying error.
        #[source]
        source: hyper::Error,
    },
    /// Nothing moved for [`ClientOptions::timeout`].
    #[error("{request}: no progress for {after:?}")]
    Timeout {
        /// Method and URL.
        request: String,
        /// The timeout.
        after: Duration,
    },
    /// `404`: no such repository, manifest or blob.
    #[error("{request}: not found ({error})")]
    NotFound {
        /// Method and URL.
        request: String,
        /// Status, code and message.
        error: ApiError,
    },
    /// `401` or `403` after authentication was tried.
    #[error("{request}: access denied ({error}); check the credentials and that they grant this repository")]
    Denied {
        /// Method and URL.
        request: String,
        /// Status, code and message.
        error: ApiError,
    },
    /// Any other unexpected status.
    #[error("{request}: unexpected response ({error})")]
    Status {
        /// Method and URL.
        request: String,
        /// Status, code and message.
        error: ApiError,
    },
    /// A body is longer than allowed.
    #[error("{request}: the {what} is larger than the limit of {limit} bytes")]
    TooLarge {
        /// Method and URL.
        request: String,
        /// What was too large, e.g. "manifest".
        what: &'static str,
        /// The limit.
        limit: u64,
    },
    /// Content does not hash to the digest it was asked for by; it was refused
    /// and nothing was stored.
    #[error("{request}: the content hashes to {actual}, not to the requested {expected}; refused")]
    DigestMismatch {
        /// Method and URL.
        request: String,
        /// The digest asked for.
        expected: Digest,
        /// What the content hashes to.
        actual: Digest,
    },
    /// Content is not the size its descriptor or `Content-Length` says.
    #[error("{request}: the {what} is {actual} bytes, not the expected {expected}")]
    SizeMismatch {
        /// Method and URL.
        request: String,
        /// What was measured, e.g. "blob".
        what: &'static str,
        /// The announced size.
        expected: u64,
        /// The real size.
        actual: u64,
    },
    /// The registry answered something that breaks the protocol.
    #[error("{request}: {reason}")]
    BadResponse {
        /// Method and URL.
        request: String,
        /// What is wrong.
        reason: String,
    },
    /// More than [`MAX_REDIRECTS`] redirects.
    #[error("{request}: more than {MAX_REDIRECTS} redirects")]
    TooManyRedirects {
        /// Method and URL.
        request: String,
    },
    /// The bearer-token server refused or answered nonsense.
    #[error("getting a token from {request}: {reason}")]
    Token {
        /// Method and URL of the token request.
        request: String,
        /// What went wrong.
        reason: String,
    },
    /// A manifest of the image being copied is unusable or exceeds a limit.
    #[error("manifest {digest} of {repository}: {reason}")]
    Manifest {
        /// The repository it came from or goes to.
        repository: String,
        /// The manifest's digest.
        digest: Digest,
        /// What is wrong.
        reason: String,
    },
    /// The local store failed (or holds a corrupt blob).
    #[error("local store: {0}")]
    Store(#[from] StoreError),
}

impl ClientError {
    /// The registry's HTTP status, for errors that come from one.
    pub fn status(&self) -> Option<u16> {
        self.api_error().map(|e| e.status)
    }

    /// The registry's error code (e.g. `BLOB_UNKNOWN`), if it sent one.
    pub fn code(&self) -> Option<&str> {
        self.api_error().and_then(|e| e.code.as_deref())
    }

    fn api_error(&self) -> Option<&ApiError> {
        match self {
            ClientError::NotFound { error, .. }
            | ClientError::Denied { error, .. }
            | ClientError::Status { error, .. } => Some(error),
            _ => None,
        }
    }
}

/// The client's result type.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// A manifest as fetched, verified against its digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedManifest {
    /// The bytes exactly as served.
    pub bytes: Vec<u8>,
    /// The media type: the `Content-Type` the registry sent, or the
    /// document's `mediaType` when the header is missing or generic.
    pub media_type: String,
    /// The SHA-256 of `bytes`.
    pub digest: Digest,
}

/// A client for one registry. Cheap to clone; clones share connections
/// and tokens.
#[derive(Clone)]
pub struct RegistryClient {
    inner: Arc<Inner>,
}

struct Inner {
    base: Origin,
    options: ClientOptions,
    tls: Arc<rustls::ClientConfig>,
    auth: Mutex<AuthState>,
    idle: Mutex<Vec<Connection>>,
}

impl fmt::Debug for RegistryClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryClient")
            .field("base", &self.inner.base.url())
            .field("options", &self.inner.options)
            .finish()
    }
}

impl RegistryClient {
    /// A client for the registry at `base` (`http://127.0.0.1:5000` or
    /// `https://host[:port]`, no path).
    pub fn new(base: &str, options: ClientOptions) -> Result<RegistryClient> {
        let invalid = |reason: String| ClientError::InvalidBase { base: base.chars().take(200).collect(), reason };
        let target = Target::parse(base.trim_end_matches('/')).map_err(invalid)?;
        if target.path != "/" {
            return Err(invalid("a path or query after the host is not supported".into()));
        }
        let tls = tls_config(options.ca_cert_pem.as_deref())?;
        let client = RegistryClient {
            inner: Arc::new(Inner {
                base: target.origin,
                options,
                tls,
                auth: Mutex::new(AuthState::default()),
                idle: Mutex::new(Vec::new()),
            }),
        };
        client.check_plain_http(&client.inner.base)?;
        Ok(client)
    }

    /// The registry's address, e.g. `https://registry-1.docker.io`.
    pub fn base_url(&self) -> String {
        self.inner.base.url()
    }

    /// `GET /v2/`: whether the registry speaks the API (and accepts the
    /// credentials, if it asks for any).
    pub async fn ping(&self) -> Result<()> {
        let ex = self.send(Call::new(Method::GET, self.target("/v2/"), None)).await?;
        if ex.status == StatusCode::OK {
            self.finish(ex).await;
            Ok(())
        } else {
            Err(self.fail(ex).await)
        }
    }

    /// Fetches manifest `reference` (a tag or a digest) of `repo`.
    ///
    /// Accepts OCI and Docker v2 manifests and indexes, at most
    /// [`ClientOptions::max_manifest_size`] bytes. A manifest asked for by
    /// digest must hash to it, and a `Docker-Content-Digest` header must
    /// agree with the content.
    pub async fn get_manifest(&self, repo: &RepositoryName, reference: &Reference) -> Result<FetchedManifest> {
        let mut call = Call::new(Method::GET, self.target(&format!("/v2/{repo}/manifests/{reference}")), pull(repo));
        call.headers.insert(header::ACCEPT, HeaderValue::from_str(&media_type::ALL.join(", ")).expect("ASCII"));
        let mut ex = self.send(call).await?;
        if ex.status != StatusCode::OK {
            return Err(self.fail(ex).await);
        }
        let limit = self.inner.options.max_manifest_size;
        if content_length(&ex.headers).is_some_and(|len| len > limit) {
            return Err(ClientError::TooLarge { request: ex.request, what: "manifest", limit });
        }
        let bytes = ex.read_to_end(self.inner.options.timeout, limit, "manifest").await?;
        let digest = Digest::of(&bytes);
        if let Reference::Digest(expected) = reference {
            if *expected != digest {
                return Err(ClientError::DigestMismatch { request: ex.request, expected: *expected, actual: digest });
            }
        }
        check_digest_header(&ex, digest, "manifest")?;
        let media_type = manifest_media_type(ex.header(header::CONTENT_TYPE), &bytes);
        self.checkin(ex);
        Ok(FetchedManifest { bytes, media_type, digest })
    }

    /// `HEAD` of blob `digest` in `repo`: its size, or `None` if the
    /// registry does not have it.
    pub async fn head_blob(&self, repo: &RepositoryName, digest: &Digest) -> Result<Option<u64>> {
        self.head_blob_in_scope(repo, digest, pull(repo)).await
    }

    /// [`RegistryClient::head_blob`] with the token scope of the operation
    /// it is part of, so a push needs one token, not two.
    async fn head_blob_in_scope(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
        scope: Option<String>,
    ) -> Result<Option<u64>> {
        let mut call = Call::new(Method::HEAD, self.target(&format!("/v2/{repo}/blobs/{digest}")), scope);
        call.follow_redirects = true;
        let ex = self.send(call).await?;
        match ex.status {
            StatusCode::OK => {
                let size = content_length(&ex.headers).ok_or_else(|| ClientError::BadResponse {
                    request: ex.request.clone(),
                    reason: "the blob's HEAD response has no Content-Length".into(),
                })?;
                self.finish(ex).await;
                Ok(Some(size))
            }
            StatusCode::NOT_FOUND => {
                self.finish(ex).await;
                Ok(None)
            }
            _ => Err(self.fail(ex).await),
        }
    }

    /// Downloads blob `digest` of `repo` into `store`, streaming: the store
    /// commits it only if it hashes to `digest` (and is as long as the
    /// registry announced); otherwise nothing is stored and the error says
    /// why. Follows redirects to other hosts (without credentials).
    pub async fn blob_into_store(&self, repo: &RepositoryName, digest: &Digest, store: &Store) -> Result<()> {
        self.fetch_blob(repo, *digest, None, store).await
    }

    async fn fetch_blob(&self, repo: &RepositoryName, digest: Digest, size: Option<u64>, store: &Store) -> Result<()> {
        let mut call = Call::new(Method::GET, self.target(&format!("/v2/{repo}/blobs/{digest}")), pull(repo));
        call.follow_redirects = true;
        let mut ex = self.send(call).await?;
        if ex.status != StatusCode::OK {
            return Err(self.fail(ex).await);
        }
        let size = match (size, content_length(&ex.headers)) {
            (Some(expected), Some(actual)) if expected != actual => {
                return Err(ClientError::SizeMismatch { request: ex.request, what: "blob", expected, actual });
            }
            (Some(s), _) | (None, Some(s)) => Some(s),
            (None, None) => None,
        };

        enum Piece {
            Data(Bytes),
            End,
        }
        let (tx, mut rx) = mpsc::channel::<Piece>(8);
        let sink = store.clone();
        let writer = tokio::task::spawn_blocking(move || -> Result<Option<Digest>, StoreError> {
            let mut w = sink.writer_expecting(digest, size)?;
            while let Some(piece) = rx.blocking_recv() {
                match piece {
                    Piece::Data(chunk) => w.write_all(&chunk).map_err(|e| write_error(&sink, e, size))?,
                    Piece::End => return w.commit().map(Some),
                }
            }
            // The download failed: dropping the writer removes what was written.
            Ok(None)
        });
        let idle = self.inner.options.timeout;
        let received = loop {
            match ex.chunk(idle).await {
                Ok(Some(chunk)) => {
                    if tx.send(Piece::Data(chunk)).await.is_err() {
                        break Ok(()); // the writer failed; its error follows
                    }
                }
                Ok(None) => {
                    let _ = tx.send(Piece::End).await;
                    break Ok(());
                }
                Err(e) => break Err(e),
            }
        };
        drop(tx);
        let written = writer.await.map_err(|e| StoreError::Io {
            action: "writing a blob into",
            path: store.root().to_owned(),
            source: io::Error::other(e),
        })?;
        received?;
        match written {
            Ok(Some(_)) => {
                tracing::debug!(%repo, %digest, "blob stored");
                self.checkin(ex);
                Ok(())
            }
            Ok(None) => {
                Err(ClientError::BadResponse { request: ex.request, reason: "the blob download stopped".into() })
            }
            Err(StoreError::DigestMismatch { expected, actual }) => {
                Err(ClientError::DigestMismatch { request: ex.request, expected, actual })
            }
            Err(StoreError::SizeMismatch { expected, actual }) => {
                Err(ClientError::SizeMismatch { request: ex.request, what: "blob", expected, actual })
            }
            Err(StoreError::TooLarge { limit, .. }) => {
                Err(ClientError::TooLarge { request: ex.request, what: "blob", limit })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Uploads blob `digest` from `store` to `repo`, unless the registry
    /// already has it: `POST …/blobs/uploads/`, then one `PUT` of the whole
    /// blob with `?digest=`, streamed from disk.
    pub async fn push_blob_from_store(&self, repo: &RepositoryName, digest: &Digest, store: &Store) -> Result<()> {
        let size = store.blob_size(digest)?.ok_or(StoreError::BlobUnknown(*digest))?;
        if self.head_blob_in_scope(repo, digest, push(repo)).await? == Some(size) {
            tracing::debug!(%repo, %digest, "blob already in the registry");
            return Ok(());
        }
        let start = self.target(&format!("/v2/{repo}/blobs/uploads/"));
        let mut call = Call::new(Method::POST, start.clone(), push(repo));
        call.headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        let ex = self.send(call).await?;
        if ex.status != StatusCode::ACCEPTED {
            return Err(self.fail(ex).await);
        }
        let location = ex.header(header::LOCATION).map(str::to_owned).ok_or_else(|| ClientError::BadResponse {
            request: ex.request.clone(),
            reason: "the upload was started without a Location".into(),
        })?;
        let upload = start
            .join(&location)
            .map_err(|reason| ClientError::BadResponse { request: ex.request.clone(), reason })?
            .with_query("digest", &digest.to_string());
        self.finish(ex).await;
        self.check_plain_http(&upload.origin)?;

        let mut call = Call::new(Method::PUT, upload, push(repo));
        call.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
        call.headers.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
        call.payload = Payload::Blob { store: store.clone(), digest: *digest };
        let ex = self.send(call).await?;
        if !ex.status.is_success() {
            return Err(self.fail(ex).await);
        }
        check_digest_header(&ex, *digest, "blob")?;
        self.finish(ex).await;
        tracing::debug!(%repo, %digest, size, "blob pushed");
        Ok(())
    }

    /// Uploads a manifest as `reference` (a tag, or its own digest) of
    /// `repo` and returns its digest. Everything it references must be in
    /// the repository already.
    pub async fn put_manifest(
        &self,
        repo: &RepositoryName,
        reference: &Reference,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<Digest> {
        let digest = Digest::of(bytes);
        let target = self.target(&format!("/v2/{repo}/manifests/{reference}"));
        if let Reference::Digest(expected) = reference {
            if *expected != digest {
                let request = describe(&Method::PUT, &target);
                return Err(ClientError::DigestMismatch { request, expected: *expected, actual: digest });
            }
        }
        let content_type = HeaderValue::from_str(media_type)
            .map_err(|_| ClientError::InvalidRequest(format!("media type {media_type:?} is not a header value")))?;
        let mut call = Call::new(Method::PUT, target, push(repo));
        call.headers.insert(header::CONTENT_TYPE, content_type);
        call.headers.insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
        call.payload = Payload::Bytes(Bytes::copy_from_slice(bytes));
        let ex = self.send(call).await?;
        if !ex.status.is_success() {
            return Err(self.fail(ex).await);
        }
        check_digest_header(&ex, digest, "manifest")?;
        self.finish(ex).await;
        tracing::debug!(%repo, %reference, %digest, "manifest pushed");
        Ok(digest)
    }

    fn target(&self, path: &str) -> Target {
        Target { origin: self.inner.base.clone(), path: path.to_owned() }
    }

    fn check_plain_http(&self, origin: &Origin) -> Result<()> {
        if origin.https || origin.is_loopback() || self.inner.options.allow_insecure_http {
            Ok(())
        } else {
            Err(ClientError::InsecureHttp { url: origin.url() })
        }
    }

    /// Sends `call`, authenticating against the registry and following
    /// redirects as the call allows.
    async fn send(&self, call: Call) -> Result<Exchange> {
        let mut target = call.target.clone();
        let mut redirects = 0;
        let mut auth_retried = false;
        loop {
            let on_registry = target.origin == self.inner.base;
            let mut headers = call.headers.clone();
            let mut sent_basic = false;
            if on_registry {
                if let Some(value) = self.authorization(call.scope.as_deref()).await? {
                    sent_basic = value.as_bytes().starts_with(b"Basic ");
                    headers.insert(header::AUTHORIZATION, value);
                }
            }
            let ex = self.exchange(&call.method, &target, &headers, &call.payload).await?;
            if ex.status == StatusCode::UNAUTHORIZED && on_registry && !auth_retried {
                auth_retried = true;
                if let Some(plan) = self.plan_auth(&ex.headers, sent_basic) {
                    let request = ex.request.clone();
                    self.finish(ex).await;
                    self.apply_auth(plan, call.scope.as_deref(), &request).await?;
                    continue;
                }
                return Err(self.fail(ex).await);
            }
            if call.follow_redirects
                && matches!(ex.status.as_u16(), 301 | 302 | 303 | 307 | 308)
                && ex.headers.contains_key(header::LOCATION)
            {
                redirects += 1;
                if redirects > MAX_REDIRECTS {
                    return Err(ClientError::TooManyRedirects { request: describe(&call.method, &call.target) });
                }
                let location = ex.header(header::LOCATION).unwrap_or_default().to_owned();
                let next = target
                    .join(&location)
                    .map_err(|reason| ClientError::BadResponse { request: ex.request.clone(), reason })?;
                self.check_plain_http(&next.origin)?;
                tracing::debug!(from = %ex.request, to = %next.display(), "following a redirect");
                self.finish(ex).await;
                target = next;
                continue;
            }
            return Ok(ex);
        }
    }

    /// The `Authorization` value for a request to the registry in `scope`,
    /// fetching a bearer token first if the registry is known to want one.
    async fn authorization(&self, scope: Option<&str>) -> Result<Option<HeaderValue>> {
        let key = scope.unwrap_or("");
        let (bearer, basic) = {
            let state = self.inner.auth.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(token) = state.tokens.get(key).filter(|t| t.expires > Instant::now()) {
                return Ok(Some(token.value.clone()));
            }
            (state.bearer.clone(), state.basic)
        };
        if let Some(challenge) = bearer {
            let token = self.fetch_token(&challenge, scope).await?;
            let value = token.value.clone();
            self.inner.auth.lock().unwrap_or_else(|p| p.into_inner()).remember(key, token);
            return Ok(Some(value));
        }
        Ok(if basic { self.inner.options.credentials.as_ref().map(basic_authorization) } else { None })
    }

    /// What to do about a `401`: fetch a bearer token, send basic
    /// credentials, or nothing (the error stands).
    fn plan_auth(&self, headers: &HeaderMap, sent_basic: bool) -> Option<AuthPlan> {
        let challenges: Vec<Challenge> = headers
            .get_all(header::WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(parse_challenges)
            .collect();
        if let Some(bearer) = challenges.iter().find(|c| c.scheme.eq_ignore_ascii_case("bearer")) {
            if let Some(realm) = bearer.param("realm") {
                return Some(AuthPlan::Bearer {
                    challenge: BearerChallenge {
                        realm: realm.to_owned(),
                        service: bearer.param("service").map(str::to_owned),
                    },
                    scope: bearer.param("scope").map(str::to_owned),
                });
            }
        }
        let basic = challenges.iter().any(|c| c.scheme.eq_ignore_ascii_case("basic"));
        (basic && !sent_basic && self.inner.options.credentials.is_some()).then_some(AuthPlan::Basic)
    }

    async fn apply_auth(&self, plan: AuthPlan, scope: Option<&str>, request: &str) -> Result<()> {
        match plan {
            AuthPlan::Basic => {
                tracing::debug!(%request, "registry asks for basic authentication");
                self.inner.auth.lock().unwrap_or_else(|p| p.into_inner()).basic = true;
            }
            AuthPlan::Bearer { challenge, scope: wanted } => {
                tracing::debug!(%request, realm = %challenge.realm, "registry asks for a bearer token");
                // The scope the registry names is what it will check; ours
                // is the cache key, as the next request asks by ours.
                let token = self.fetch_token(&challenge, wanted.as_deref().or(scope)).await?;
                let mut state = self.inner.auth.lock().unwrap_or_else(|p| p.into_inner());
                state.bearer = Some(challenge);
                state.remember(scope.unwrap_or(""), token);
            }
        }
        Ok(())
    }

    /// The token dance: `GET realm?service=…&scope=…`, with the basic
    /// credentials if there are any; the answer is `token` or `access_token`.
    async fn fetch_token(&self, challenge: &BearerChallenge, scope: Option<&str>) -> Result<CachedToken> {
        let mut url = challenge.realm.clone();
        let mut separator = if url.contains('?') { '&' } else { '?' };
        for (key, value) in [("service", challenge.service.as_deref()), ("scope", scope)] {
            if let Some(value) = value {
                url.push(separator);
                url.push_str(key);
                url.push('=');
                url.extend(utf8_percent_encode(value, QUERY_VALUE));
                separator = '&';
            }
        }
        let token_error = |request: String, reason: String| ClientError::Token { request, reason };
        let target = Target::parse(&url).map_err(|reason| token_error(challenge.realm.clone(), reason))?;
        self.check_plain_http(&target.origin)?;
        let mut headers = HeaderMap::new();
        if let Some(credentials) = &self.inner.options.credentials {
            headers.insert(header::AUTHORIZATION, basic_authorization(credentials));
        }
        let mut ex = self.exchange(&Method::GET, &target, &headers, &Payload::Empty).await?;
        if ex.status != StatusCode::OK {
            let request = ex.request.clone();
            let reason = match self.fail(ex).await.api_error() {
                Some(e) => format!("the token server answered {e}"),
                None => "the token server failed".into(),
            };
            return Err(token_error(request, reason));
        }
        let body = ex.read_to_end(self.inner.options.timeout, MAX_TOKEN_RESPONSE, "token response").await?;
        let request = ex.request.clone();
        self.checkin(ex);
        let json: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| token_error(request.clone(), format!("the answer is not JSON: {e}")))?;
        let token = json
            .get("token")
            .or_else(|| json.get("access_token"))
            .and_then(|t| t.as_str())
            .filter(|t| !t.is_empty())
            .ok_or_else(|| token_error(request.clone(), "the answer has no token or access_token".into()))?;
        let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| token_error(request.clone(), "the token is not a valid header value".into()))?;
        value.set_sensitive(true);
        let lifetime = json
            .get("expires_in")
            .and_then(|e| e.as_u64())
            .map(Duration::from_secs)
            .unwrap_or(MIN_TOKEN_LIFETIME)
            .max(MIN_TOKEN_LIFETIME);
        // A little early, so a token does not expire on its way.
        let expires = Instant::now() + lifetime - Duration::from_secs(5);
        Ok(CachedToken { value, expires })
    }

    /// One request and its response head, on a pooled or new connection.
    async fn exchange(
        &self,
        method: &Method,
        target: &Target,
        headers: &HeaderMap,
        payload: &Payload,
    ) -> Result<Exchange> {
        let request = describe(method, target);
        let timeout = self.inner.options.timeout;
        let (mut sender, mut reused) = match self.checkout(&target.origin).await {
            Some(sender) => (sender, true),
            None => (self.connect(&target.origin, &request).await?, false),
        };
        loop {
            let (body, progress, local_failure) = payload.open()?;
            let mut http = Request::new(body);
            *http.method_mut() = method.clone();
            *http.uri_mut() = target
                .path
                .parse()
                .map_err(|e| ClientError::InvalidRequest(format!("{request}: the path is not a valid URI: {e}")))?;
            *http.headers_mut() = headers.clone();
            let host = HeaderValue::from_str(&target.origin.authority())
                .map_err(|_| ClientError::InvalidRequest(format!("{request}: the host is not a header value")))?;
            http.headers_mut().insert(header::HOST, host);
            http.headers_mut().insert(header::USER_AGENT, HeaderValue::from_static(USER_AGENT));
            let response = idle_timeout(sender.send_request(http), timeout, progress.as_deref()).await;
            match response {
                Ok(Ok(response)) => {
                    let (parts, body) = response.into_parts();
                    tracing::trace!(%request, status = %parts.status, "response");
                    return Ok(Exchange {
                        request,
                        status: parts.status,
                        headers: parts.headers,
                        body,
                        ended: false,
                        connection: Some(Connection { origin: target.origin.clone(), sender }),
                    });
                }
                Ok(Err(e)) => {
                    if let Some(local) = local_failure.and_then(|f| f.lock().unwrap_or_else(|p| p.into_inner()).take())
                    {
                        return Err(local.into());
                    }
                    if reused {
                        // An idle connection the server closed meanwhile: try once on a new one.
                        tracing::debug!(%request, error = %e, "reused connection failed; reconnecting");
                        reused = false;
                        sender = self.connect(&target.origin, &request).await?;
                        continue;
                    }
                    return Err(ClientError::Http { request, source: e });
                }
                Err(_) => return Err(ClientError::Timeout { request, after: timeout }),
            }
        }
    }

    async fn connect(&self, origin: &Origin, request: &str) -> Result<SendRequest<RequestBody>> {
        let timeout = self.inner.options.timeout;
        let timed_out = || ClientError::Timeout { request: request.to_owned(), after: timeout };
        let tcp = tokio::time::timeout(timeout, TcpStream::connect((origin.host.as_str(), origin.port)))
            .await
            .map_err(|_| timed_out())?
            .map_err(|source| ClientError::Connect { request: request.to_owned(), source })?;
        let _ = tcp.set_nodelay(true);
        let stream: Box<dyn Stream> = if origin.https {
            let name = ServerName::try_from(origin.host.clone()).map_err(|e| ClientError::Tls {
                request: request.to_owned(),
                source: io::Error::new(io::ErrorKind::InvalidInput, e),
            })?;
            let connector = tokio_rustls::TlsConnector::from(self.inner.tls.clone());
            let tls = tokio::time::timeout(timeout, connector.connect(name, tcp))
                .await
                .map_err(|_| timed_out())?
                .map_err(|source| ClientError::Tls { request: request.to_owned(), source })?;
            Box::new(tls)
        } else {
            Box::new(tcp)
        };
        let (mut sender, connection) = tokio::time::timeout(
            timeout,
            hyper::client::conn::http1::Builder::new().max_buf_size(256 * 1024).handshake(TokioIo::new(stream)),
        )
        .await
        .map_err(|_| timed_out())?
        .map_err(|source| ClientError::Http { request: request.to_owned(), source })?;
        let peer = origin.authority();
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(%peer, error = %e, "registry connection ended with an error");
            }
        });
        tokio::time::timeout(timeout, sender.ready())
            .await
            .map_err(|_| timed_out())?
            .map_err(|source| ClientError::Http { request: request.to_owned(), source })?;
        Ok(sender)
    }

    /// An idle connection to `origin` that is still open, if any.
    async fn checkout(&self, origin: &Origin) -> Option<SendRequest<RequestBody>> {
        loop {
            let mut sender = {
                let mut idle = self.inner.idle.lock().unwrap_or_else(|p| p.into_inner());
                let position = idle.iter().rposition(|c| c.origin == *origin)?;
                idle.swap_remove(position).sender
            };
            if sender.is_closed() {
                continue;
            }
            // Its last response was read to the end, so it is ready at once
            // unless the server has closed it.
            if let Ok(Ok(())) = tokio::time::timeout(Duration::from_secs(1), sender.ready()).await {
                return Some(sender);
            }
        }
    }

    /// Keeps the connection of an exchange whose body was read to the end.
    fn checkin(&self, ex: Exchange) {
        if let (true, Some(connection)) = (ex.ended, ex.connection) {
            if connection.sender.is_closed() {
                return;
            }
            let mut idle = self.inner.idle.lock().unwrap_or_else(|p| p.into_inner());
            idle.retain(|c| !c.sender.is_closed());
            if idle.len() < MAX_IDLE_CONNECTIONS {
                idle.push(connection);
            }
        }
    }

    /// Reads what is left of a small body so the connection can be reused.
    async fn finish(&self, mut ex: Exchange) {
        let idle = self.inner.options.timeout;
        if ex.read_to_end(idle, MAX_DRAIN, "response").await.is_ok() {
            self.checkin(ex);
        }
    }

    /// The error for an unexpected response, with the registry's code and message.
    async fn fail(&self, mut ex: Exchange) -> ClientError {
        let idle = self.inner.options.timeout;
        let body = ex.read_to_end(idle, MAX_ERROR_BODY, "error body").await.unwrap_or_default();
        let (code, message) = error_entry(&body);
        let error = ApiError { status: ex.status.as_u16(), code, message };
        let request = ex.request.clone();
        self.checkin(ex);
        match error.status {
            404 => ClientError::NotFound { request, error },
            401 | 403 => ClientError::Denied { request, error },
            _ => ClientError::Status { request, error },
        }
    }
}

/// Copies manifest `reference` of `src_repo` from the registry into `store`,
/// recorded in `dst_repo` (and tagged `dst_tag`, if given), with everything
/// it references: for an index, every child manifest (all platforms), for
/// each image its config and layers. Blobs already stored are not fetched;
/// descriptors with `urls` (non-distributable layers) are skipped. Child
/// manifests are recorded by digest before their parents. Returns the
/// digest of the top manifest.
pub async fn pull_into_store(
    client: &RegistryClient,
    src_repo: &RepositoryName,
    reference: &Reference,
    store: &Store,
    dst_repo: &RepositoryName,
    dst_tag: Option<&Tag>,
) -> Result<Digest> {
    let top = client.get_manifest(src_repo, reference).await?;
    let top = ManifestNode::parse(src_repo, top.bytes, Some(&top.media_type))?;
    let tree = ManifestTree::collect(src_repo, top, |d: DescriptorRef| async move {
        let fetched = client.get_manifest(src_repo, &Reference::Digest(d.digest)).await?;
        ManifestNode::parse(src_repo, fetched.bytes, Some(&fetched.media_type))
    })
    .await?;
    let mut missing = Vec::new();
    for blob in &tree.blobs {
        if !store.contains(&blob.digest)? {
            missing.push(blob.clone());
        }
    }
    tracing::info!(
        repository = %src_repo, %reference, manifests = tree.nodes.len(),
        blobs = tree.blobs.len(), missing = missing.len(), "pulling"
    );
    futures::stream::iter(missing)
        .map(|d| client.fetch_blob(src_repo, d.digest, Some(d.size), store))
        .buffer_unordered(PARALLEL_BLOBS)
        .try_collect::<Vec<()>>()
        .await?;
    for digest in tree.post_order() {
        let node = &tree.nodes[&digest];
        let tag = if digest == tree.top { dst_tag.cloned() } else { None };
        let (sink, repo, bytes, media_type) =
            (store.clone(), dst_repo.clone(), node.bytes.clone(), node.parsed.media_type.clone());
        tokio::task::spawn_blocking(move || sink.put_manifest(&repo, tag.as_ref(), Some(&media_type), &bytes))
            .await
            .map_err(|e| StoreError::Io {
            action: "recording a manifest in",
            path: store.root().to_owned(),
            source: io::Error::other(e),
        })??;
    }
    Ok(tree.top)
}

/// Copies manifest `src` from `store` to `dst_repo` of the registry,
/// tagged `dst_tag` (or by digest): blobs first (those the registry lacks),
/// then child manifests by digest, then the top manifest. The reverse of
/// [`pull_into_store`], with the same limits. Returns `src`.
pub async fn push_from_store(
    store: &Store,
    src: &Digest,
    client: &RegistryClient,
    dst_repo: &RepositoryName,
    dst_tag: Option<&Tag>,
) -> Result<Digest> {
    let read = |digest: Digest| {
        let store = store.clone();
        async move {
            let bytes = tokio::task::spawn_blocking(move || store.read_manifest(&digest)).await.map_err(|e| {
                StoreError::Io {
                    action: "reading manifest",
                    path: digest.to_string().into(),
                    source: io::Error::other(e),
                }
            })??;
            ManifestNode::parse(dst_repo, bytes, None)
        }
    };
    let top = read(*src).await?;
    let tree = ManifestTree::collect(dst_repo, top, |d: DescriptorRef| read(d.digest)).await?;
    tracing::info!(
        repository = %dst_repo, digest = %src, manifests = tree.nodes.len(),
        blobs = tree.blobs.len(), "pushing"
    );
    futures::stream::iter(&tree.blobs)
        .map(|d| client.push_blob_from_store(dst_repo, &d.digest, store))
        .buffer_unordered(PARALLEL_BLOBS)
        .try_collect::<Vec<()>>()
        .await?;
    for digest in tree.post_order() {
        let node = &tree.nodes[&digest];
        let reference = match dst_tag {
            Some(tag) if digest == tree.top => Reference::Tag(tag.clone()),
            _ => Reference::Digest(digest),
        };
        client.put_manifest(dst_repo, &reference, &node.parsed.media_type, &node.bytes).await?;
    }
    Ok(tree.top)
}

/// One manifest of an image being copied.
struct ManifestNode {
    digest: Digest,
    bytes: Vec<u8>,
    parsed: ParsedManifest,
}

impl ManifestNode {
    fn parse(repo: &RepositoryName, bytes: Vec<u8>, media_type: Option<&str>) -> Result<ManifestNode> {
        let digest = Digest::of(&bytes);
        let parsed = ParsedManifest::parse(&bytes, media_type).map_err(|e| ClientError::Manifest {
            repository: repo.to_string(),
            digest,
            reason: e.to_string(),
        })?;
        Ok(ManifestNode { digest, bytes, parsed })
    }
}

/// A manifest and everything it reaches: child manifests and blobs.
struct ManifestTree {
    top: Digest,
    nodes: HashMap<Digest, ManifestNode>,
    /// Configs and layers to copy, each once, external ones left out.
    blobs: Vec<DescriptorRef>,
}

impl ManifestTree {
    /// Walks breadth-first from `top`, loading child manifests with `load`,
    /// within [`MAX_DEPTH`], [`MAX_DESCRIPTORS`] and [`MAX_TREE_MANIFEST_BYTES`].
    async fn collect<F, Fut>(repo: &RepositoryName, top: ManifestNode, mut load: F) -> Result<ManifestTree>
    where
        F: FnMut(DescriptorRef) -> Fut,
        Fut: Future<Output = Result<ManifestNode>>,
    {
        let limit =
            |digest: Digest, reason: String| ClientError::Manifest { repository: repo.to_string(), digest, reason };
        let mut tree = ManifestTree { top: top.digest, nodes: HashMap::new(), blobs: Vec::new() };
        let mut seen = HashSet::from([top.digest]);
        let mut visited = 0usize;
        let mut held = top.bytes.len() as u64;
        let mut queue = VecDeque::from([(top, 0usize)]);
        while let Some((node, depth)) = queue.pop_front() {
            visited += node.parsed.blobs.len() + node.parsed.manifests.len();
            if visited > MAX_DESCRIPTORS {
                return Err(limit(
                    node.digest,
                    format!("the image references more than {MAX_DESCRIPTORS} descriptors"),
                ));
            }
            for child in node.parsed.manifests.iter().filter(|d| !d.external) {
                if !seen.insert(child.digest) {
                    continue;
                }
                if depth + 1 > MAX_DEPTH {
                    return Err(limit(node.digest, format!("indexes are nested deeper than {MAX_DEPTH}")));
                }
                held += child.size;
                if held > MAX_TREE_MANIFEST_BYTES {
                    return Err(limit(
                        node.digest,
                        format!("its manifests add up to more than {MAX_TREE_MANIFEST_BYTES} bytes"),
                    ));
                }
                let loaded = load(child.clone()).await?;
                if loaded.bytes.len() as u64 != child.size {
                    return Err(limit(
                        child.digest,
                        format!("it is {} bytes, its descriptor says {}", loaded.bytes.len(), child.size),
                    ));
                }
                queue.push_back((loaded, depth + 1));
            }
            for blob in node.parsed.blobs.iter().filter(|d| !d.external) {
                if seen.insert(blob.digest) {
                    tree.blobs.push(blob.clone());
                }
            }
            tree.nodes.insert(node.digest, node);
        }
        Ok(tree)
    }

    /// Every manifest, children before the indexes that list them; the top last.
    fn post_order(&self) -> Vec<Digest> {
        fn visit(tree: &ManifestTree, digest: Digest, done: &mut HashSet<Digest>, out: &mut Vec<Digest>) {
            let Some(node) = tree.nodes.get(&digest) else { return };
            if !done.insert(digest) {
                return;
            }
            for child in &node.parsed.manifests {
                visit(tree, child.digest, done, out);
            }
            out.push(digest);
        }
        let mut out = Vec::with_capacity(self.nodes.len());
        visit(self, self.top, &mut HashSet::new(), &mut out);
        out
    }
}

fn pull(repo: &RepositoryName) -> Option<String> {
    Some(format!("repository:{repo}:pull"))
}

fn push(repo: &RepositoryName) -> Option<String> {
    Some(format!("repository:{repo}:pull,push"))
}

fn basic_authorization(credentials: &Credentials) -> HeaderValue {
    let encoded =
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", credentials.username, credentials.password));
    let mut value = HeaderValue::from_str(&format!("Basic {encoded}")).expect("base64 is a valid header value");
    value.set_sensitive(true);
    value
}

fn tls_config(extra_ca_pem: Option<&[u8]>) -> Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    if let Some(pem) = extra_ca_pem {
        let mut added = 0;
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|e| ClientError::InvalidCaCert(e.to_string()))?;
            roots.add(cert).map_err(|e| ClientError::InvalidCaCert(e.to_string()))?;
            added += 1;
        }
        if added == 0 {
            return Err(ClientError::InvalidCaCert("no CERTIFICATE block found".into()));
        }
    }
    // The ring provider explicitly: a build with other crates may also enable aws-lc-rs.
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::InvalidCaCert(format!("TLS setup failed: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// `Content-Length`, if present and a number.
fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(header::CONTENT_LENGTH)?.to_str().ok()?.trim().parse().ok()
}

/// Refuses a response whose `Docker-Content-Digest` names other content.
/// Digests of other algorithms cannot be checked and are ignored.
fn check_digest_header(ex: &Exchange, digest: Digest, what: &str) -> Result<()> {
    let Some(value) = ex.header("docker-content-digest") else { return Ok(()) };
    match value.trim().parse::<Digest>() {
        Ok(announced) if announced != digest => Err(ClientError::BadResponse {
            request: ex.request.clone(),
            reason: format!("the registry says the {what} is {announced}, but it is {digest}"),
        }),
        _ => Ok(()),
    }
}

/// The media type without parameters, lowercased.
fn essence(content_type: &str) -> String {
    content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase()
}

/// The `Content-Type`, unless missing or generic; then the document's
/// `mediaType`, else what its shape says (`manifests` → OCI index).
fn manifest_media_type(content_type: Option<&str>, bytes: &[u8]) -> String {
    if let Some(declared) = content_type
        .map(essence)
        .filter(|t| !matches!(t.as_str(), "" | "application/json" | "application/octet-stream" | "text/plain"))
    {
        return declared;
    }
    let document: Option<serde_json::Value> = serde_json::from_slice(bytes).ok();
    if let Some(field) = document.as_ref().and_then(|d| d.get("mediaType")).and_then(|m| m.as_str()) {
        return essence(field);
    }
    if document.as_ref().is_some_and(|d| d.get("manifests").is_some()) {
        media_type::OCI_INDEX.to_owned()
    } else {
        media_type::OCI_MANIFEST.to_owned()
    }
}

/// The first `code` and `message` of a spec error body.
fn error_entry(body: &[u8]) -> (Option<String>, Option<String>) {
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(body) else { return (None, None) };
    let first = &json["errors"][0];
    let text = |v: &serde_json::Value| v.as_str().filter(|s| !s.is_empty()).map(|s| s.chars().take(500).collect());
    (text(&first["code"]), text(&first["message"]))
}

/// A writer's I/O error as a store error; "more than announced" as `TooLarge`.
fn write_error(store: &Store, e: io::Error, size: Option<u64>) -> StoreError {
    match size {
        Some(limit) if e.kind() == io::ErrorKind::InvalidData => StoreError::TooLarge { what: "blob", limit },
        _ => StoreError::Io { action: "writing a blob into", path: store.root().to_owned(), source: e },
    }
}

/// Waits for `fut`, failing when `idle` passes without it finishing and
/// without `progress` (bytes of a request body sent) moving.
async fn idle_timeout<F: Future>(fut: F, idle: Duration, progress: Option<&AtomicU64>) -> Result<F::Output, ()> {
    tokio::pin!(fut);
    let mut last = progress.map(|p| p.load(Ordering::Relaxed));
    loop {
        tokio::select! {
            out = &mut fut => return Ok(out),
            () = tokio::time::sleep(idle) => {
                let now = progress.map(|p| p.load(Ordering::Relaxed));
                if now == last {
                    return Err(());
                }
                last = now;
            }
        }
    }
}

/// `METHOD scheme://host[:port]/path`, without the query (upload states
/// and signed storage URLs have no place in error messages).
fn describe(method: &Method, target: &Target) -> String {
    format!("{method} {}", target.display())
}

/// Where requests go: scheme, host and port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Origin {
    https: bool,
    /// Without the brackets of an IPv6 literal.
    host: String,
    port: u16,
}

impl Origin {
    fn default_port(&self) -> u16 {
        if self.https {
            443
        } else {
            80
        }
    }

    /// `host[:port]` as the `Host` header has it.
    fn authority(&self) -> String {
        let host = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        if self.port == self.default_port() {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }

    fn url(&self) -> String {
        format!("{}://{}", if self.https { "https" } else { "http" }, self.authority())
    }

    fn is_loopback(&self) -> bool {
        self.host.eq_ignore_ascii_case("localhost") || self.host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
    }
}

/// An origin and a path with its query (`/v2/…?…`).
#[derive(Debug, Clone)]
struct Target {
    origin: Origin,
    path: String,
}

impl Target {
    /// Parses an absolute `http`/`https` URL.
    fn parse(url: &str) -> Result<Target, String> {
        let uri: hyper::http::Uri = url.parse().map_err(|e| format!("not a URL: {e}"))?;
        let https = match uri.scheme_str().map(str::to_ascii_lowercase).as_deref() {
            Some("https") => true,
            Some("http") => false,
            Some(other) => return Err(format!("scheme {other:?} is not http or https")),
            None => return Err("the URL has no scheme".into()),
        };
        let authority = uri.authority().ok_or("the URL has no host")?;
        if authority.as_str().contains('@') {
            return Err("user information in URLs is not supported; use ClientOptions::credentials".into());
        }
        let host = authority.host().trim_start_matches('[').trim_end_matches(']').to_owned();
        if host.is_empty() {
            return Err("the URL has no host".into());
        }
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        let path = match uri.path_and_query().map(|p| p.as_str()) {
            None | Some("") => "/".to_owned(),
            Some(p) if p.starts_with('?') => format!("/{p}"),
            Some(p) => p.to_owned(),
        };
        Ok(Target { origin: Origin { https, host, port }, path })
    }

    /// Resolves a `Location` against this target (RFC 3986 §5.2, without
    /// dot-segment removal, which registries do not need).
    fn join(&self, location: &str) -> Result<Target, String> {
        let location = location.trim();
        let lower = location.to_ascii_lowercase();
        if lower.starts_with("http://") || lower.starts_with("https://") {
            return Target::parse(location);
        }
        let scheme = if self.origin.https { "https" } else { "http" };
        if let Some(rest) = location.strip_prefix("//") {
            return Target::parse(&format!("{scheme}://{rest}"));
        }
        let path = if location.starts_with('/') {
            location.to_owned()
        } else {
            let current = self.path.split('?').next().unwrap_or("/");
            let directory = &current[..current.rfind('/').map_or(0, |i| i + 1)];
            format!("{directory}{location}")
        };
        let resolved = Target::parse(&format!("{}{path}", self.origin.url()))?;
        Ok(Target { origin: self.origin.clone(), path: resolved.path })
    }

    fn with_query(mut self, key: &str, value: &str) -> Target {
        self.path.push(if self.path.contains('?') { '&' } else { '?' });
        self.path.push_str(key);
        self.path.push('=');
        self.path.extend(utf8_percent_encode(value, QUERY_VALUE));
        self
    }

    fn display(&self) -> String {
        format!("{}{}", self.origin.url(), self.path.split('?').next().unwrap_or(""))
    }
}

/// What to send, to whom, and how to authenticate.
struct Call {
    method: Method,
    target: Target,
    headers: HeaderMap,
    payload: Payload,
    /// The token scope (`repository:<name>:pull`); `None` for `/v2/`.
    scope: Option<String>,
    follow_redirects: bool,
}

impl Call {
    fn new(method: Method, target: Target, scope: Option<String>) -> Call {
        Call { method, target, headers: HeaderMap::new(), payload: Payload::Empty, scope, follow_redirects: false }
    }
}

/// A request body that can be produced again for a retry.
#[derive(Clone)]
enum Payload {
    Empty,
    Bytes(Bytes),
    /// A stored blob, streamed from a blocking thread.
    Blob {
        store: Store,
        digest: Digest,
    },
}

/// Where a blob sender leaves the store's error when reading fails.
type LocalFailure = Arc<Mutex<Option<StoreError>>>;

impl Payload {
    fn open(&self) -> Result<(RequestBody, Option<Arc<AtomicU64>>, Option<LocalFailure>)> {
        match self {
            Payload::Empty => Ok((RequestBody::Full(None), None, None)),
            Payload::Bytes(b) => Ok((RequestBody::Full(Some(b.clone())), None, None)),
            Payload::Blob { store, digest } => {
                let mut reader = store.reader(digest)?;
                let len = reader.len();
                let progress = Arc::new(AtomicU64::new(0));
                let failure: LocalFailure = Arc::new(Mutex::new(None));
                let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(4);
                let (slot, store, digest) = (failure.clone(), store.clone(), *digest);
                tokio::task::spawn_blocking(move || loop {
                    let mut buf = vec![0u8; SEND_CHUNK];
                    match reader.read(&mut buf) {
                        Ok(0) => return,
                        Ok(n) => {
                            buf.truncate(n);
                            if tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
                                return;
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => {
                            let message = e.to_string();
                            *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(reader_error(&store, digest, e));
                            let _ = tx.blocking_send(Err(io::Error::other(message)));
                            return;
                        }
                    }
                });
                Ok((RequestBody::Channel { rx, len, progress: progress.clone() }, Some(progress), Some(failure)))
            }
        }
    }
}

/// A store reader's error back as the store's typed one.
fn reader_error(store: &Store, digest: Digest, e: io::Error) -> StoreError {
    if let Some(StoreError::Corrupt { actual, .. }) = e.get_ref().and_then(|i| i.downcast_ref::<StoreError>()) {
        return StoreError::Corrupt { digest, actual: *actual };
    }
    StoreError::Io { action: "reading blob from", path: store.root().join(digest.to_string()), source: e }
}

/// The bodies this client sends.
enum RequestBody {
    Full(Option<Bytes>),
    /// Chunks from a blocking reader; `progress` counts bytes taken for sending.
    Channel {
        rx: mpsc::Receiver<io::Result<Bytes>>,
        len: u64,
        progress: Arc<AtomicU64>,
    },
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<io::Result<Frame<Bytes>>>> {
        match self.get_mut() {
            RequestBody::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            RequestBody::Channel { rx, progress, .. } => rx.poll_recv(cx).map(|item| {
                item.map(|chunk| {
                    chunk.map(|b| {
                        progress.fetch_add(b.len() as u64, Ordering::Relaxed);
                        Frame::data(b)
                    })
                })
            }),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, RequestBody::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            RequestBody::Channel { len, .. } => SizeHint::with_exact(*len),
        }
    }
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

struct Connection {
    origin: Origin,
    sender: SendRequest<RequestBody>,
}

/// A response whose body is still to be read.
struct Exchange {
    request: String,
    status: StatusCode,
    headers: HeaderMap,
    body: Incoming,
    /// Whether the body was read to its end (so the connection may be reused).
    ended: bool,
    connection: Option<Connection>,
}

impl Exchange {
    fn header(&self, name: impl header::AsHeaderName) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The next piece of the body, `None` at its end.
    async fn chunk(&mut self, idle: Duration) -> Result<Option<Bytes>> {
        loop {
            let frame = tokio::time::timeout(idle, poll_fn(|cx| Pin::new(&mut self.body).poll_frame(cx)))
                .await
                .map_err(|_| ClientError::Timeout { request: self.request.clone(), after: idle })?;
            match frame {
                None => {
                    self.ended = true;
                    return Ok(None);
                }
                Some(Err(source)) => return Err(ClientError::Http { request: self.request.clone(), source }),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        if !data.is_empty() {
                            return Ok(Some(data));
                        }
                    }
                }
            }
        }
    }

    /// The rest of the body, refusing more than `limit` bytes.
    async fn read_to_end(&mut self, idle: Duration, limit: u64, what: &'static str) -> Result<Vec<u8>> {
        let mut bytes = Vec::new();
        while let Some(chunk) = self.chunk(idle).await? {
            if (bytes.len() + chunk.len()) as u64 > limit {
                return Err(ClientError::TooLarge { request: self.request.clone(), what, limit });
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(bytes)
    }
}

#[derive(Default)]
struct AuthState {
    /// Where tokens come from, once the registry asked for one.
    bearer: Option<BearerChallenge>,
    /// Whether the registry asked for basic credentials.
    basic: bool,
    /// Tokens by the scope they were fetched for.
    tokens: HashMap<String, CachedToken>,
}

impl AuthState {
    fn remember(&mut self, scope: &str, token: CachedToken) {
        let now = Instant::now();
        self.tokens.retain(|_, t| t.expires > now);
        if self.tokens.len() < 256 {
            self.tokens.insert(scope.to_owned(), token);
        }
    }
}

#[derive(Debug, Clone)]
struct BearerChallenge {
    realm: String,
    service: Option<String>,
}

#[derive(Clone)]
struct CachedToken {
    value: HeaderValue,
    expires: Instant,
}

enum AuthPlan {
    Basic,
    Bearer { challenge: BearerChallenge, scope: Option<String> },
}

/// One challenge of a `WWW-Authenticate` header.
#[derive(Debug, PartialEq, Eq)]
struct Challenge {
    scheme: String,
    params: Vec<(String, String)>,
}

impl Challenge {
    fn param(&self, name: &str) -> Option<&str> {
        self.params.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// Parses `WWW-Authenticate` (RFC 9110 §11.6.1): challenges separated by
/// commas, each a scheme and `name=value` parameters with quoted or bare
/// values. A bare word not followed by `=` starts the next challenge.
/// Token68 credentials are skipped. Never fails; nonsense yields little.
fn parse_challenges(header: &str) -> Vec<Challenge> {
    let bytes = header.as_bytes();
    let is_token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    let mut challenges: Vec<Challenge> = Vec::new();
    let mut i = 0;
    loop {
        while i < bytes.len() && (bytes[i] == b',' || bytes[i].is_ascii_whitespace()) {
            i += 1;
        }
        if i >= bytes.len() {
            return challenges;
        }
        let start = i;
        while i < bytes.len() && is_token(bytes[i]) {
            i += 1;
        }
        if i == start {
            i += 1; // not a token: skip the byte
            continue;
        }
        let word = header[start..i].to_owned();
        let mut j = i;
        while j < bytes.len() && bytes[j] == b' ' {
            j += 1;
        }
        if j < bytes.len() && bytes[j] == b'=' && !matches!(bytes.get(j + 1), Some(b'=') | None) {
            i = j + 1;
            while i < bytes.len() && bytes[i] == b' ' {
                i += 1;
            }
            let value = if bytes.get(i) == Some(&b'"') {
                i += 1;
                let mut value = String::new();
                let mut chars = header[i..].char_indices();
                let mut end = header.len();
                while let Some((k, c)) = chars.next() {
                    match c {
                        '"' => {
                            end = i + k + 1;
                            break;
                        }
                        '\\' => {
                            if let Some((_, escaped)) = chars.next() {
                                value.push(escaped);
                            }
                        }
                        c => value.push(c),
                    }
                }
                i = end;
                value
            } else {
                let value_start = i;
                while i < bytes.len() && bytes[i] != b',' && !bytes[i].is_ascii_whitespace() {
                    i += 1;
                }
                header[value_start..i].to_owned()
            };
            if let Some(current) = challenges.last_mut() {
                current.params.push((word, value));
            }
        } else if j < bytes.len() && bytes[j] == b'=' {
            // token68 padding ("abc==") — skip the run of '='.
            i = j;
            while i < bytes.len() && bytes[i] == b'=' {
                i += 1;
            }
        } else {
            challenges.push(Challenge { scheme: word, params: Vec::new() });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bearer_challenges_with_quoted_commas() {
        let c = parse_challenges(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#,
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].scheme, "Bearer");
        assert_eq!(c[0].param("realm"), Some("https://auth.example/token"));
        assert_eq!(c[0].param("service"), Some("registry.example"));
        assert_eq!(c[0].param("scope"), Some("repository:a/b:pull,push"));
    }

    #[test]
    fn parses_several_challenges_and_bare_values() {
        let c = parse_challenges(r#"Basic realm="x", Bearer realm=https://t/token, service = "s\"q""#);
        assert_eq!(c.iter().map(|c| c.scheme.as_str()).collect::<Vec<_>>(), ["Basic", "Bearer"]);
        assert_eq!(c[1].param("realm"), Some("https://t/token"));
        assert_eq!(c[1].param("service"), Some("s\"q"));
    }

    #[test]
    fn survives_nonsense_challenges() {
        for nonsense in ["", ",,,", "=", "\"", "Bearer realm=\"unterminated", "Negotiate abc==, Basic", "é=é"] {
            let _ = parse_challenges(nonsense);
        }
        let c = parse_challenges("Negotiate abc==, Basic");
        assert_eq!(c.iter().map(|c| c.scheme.as_str()).collect::<Vec<_>>(), ["Negotiate", "Basic"]);
    }

    #[test]
    fn resolves_locations_against_the_request() {
        let base = Target::parse("https://reg.example:5000/v2/a/blobs/uploads/?x=1").unwrap();
        let abs = base.join("/v2/a/blobs/uploads/u1?_state=s").unwrap();
        assert_eq!((abs.origin.clone(), abs.path.as_str()), (base.origin.clone(), "/v2/a/blobs/uploads/u1?_state=s"));
        let rel = base.join("u2").unwrap();
        assert_eq!(rel.path, "/v2/a/blobs/uploads/u2");
        let other = base.join("https://storage.example/b?sig=1").unwrap();
        assert_eq!(
            (other.origin.host.as_str(), other.origin.port, other.path.as_str()),
            ("storage.example", 443, "/b?sig=1")
        );
        let scheme_relative = base.join("//cdn.example/c").unwrap();
        assert!(scheme_relative.origin.https);
        assert_eq!(scheme_relative.display(), "https://cdn.example/c");
        assert_eq!(base.clone().with_query("digest", "sha256:ab").path, "/v2/a/blobs/uploads/?x=1&digest=sha256%3Aab");
    }

    #[test]
    fn parses_bases_and_refuses_odd_ones() {
        let t = Target::parse("http://[::1]:5000").unwrap();
        assert_eq!((t.origin.host.as_str(), t.origin.port, t.path.as_str()), ("::1", 5000, "/"));
        assert!(t.origin.is_loopback());
        assert_eq!(t.origin.authority(), "[::1]:5000");
        assert_eq!(Target::parse("https://h").unwrap().origin.authority(), "h");
        for bad in ["ftp://h", "h:5000", "http://user:pw@h", "http://", "/v2/"] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
        assert!(matches!(
            RegistryClient::new("http://registry.example", ClientOptions::default()),
            Err(ClientError::InsecureHttp { .. })
        ));
        assert!(matches!(
            RegistryClient::new("https://registry.example/sub", ClientOptions::default()),
            Err(ClientError::InvalidBase { .. })
        ));
        assert!(RegistryClient::new("http://localhost:5000/", ClientOptions::default()).is_ok());
        let options = ClientOptions { ca_cert_pem: Some(b"not pem".to_vec()), ..ClientOptions::default() };
        assert!(matches!(RegistryClient::new("https://h", options), Err(ClientError::InvalidCaCert(_))));
    }

    #[test]
    fn media_type_falls_back_on_the_document() {
        assert_eq!(
            manifest_media_type(Some("application/vnd.oci.image.index.v1+json; x=y"), b"{}"),
            media_type::OCI_INDEX
        );
        let docker = format!(r#"{{"mediaType":"{}"}}"#, media_type::DOCKER_MANIFEST);
        assert_eq!(manifest_media_type(Some("application/json"), docker.as_bytes()), media_type::DOCKER_MANIFEST);
        assert_eq!(manifest_media_type(None, br#"{"manifests":[]}"#), media_type::OCI_INDEX);
        assert_eq!(manifest_media_type(None, b"{}"), media_type::OCI_MANIFEST);
    }

    #[test]
    fn credentials_are_not_shown_by_debug() {
        let c = Credentials { username: "u".into(), password: "hunter2".into() };
        assert!(!format!("{c:?}").contains("hunter2"));
        let options = ClientOptions { credentials: Some(c), ..ClientOptions::default() };
        assert!(!format!("{options:?}").contains("hunter2"));
    }
}
