//! One handler per endpoint and method (distribution spec, "Endpoints").

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use sealpod_store::{Digest, Reference, RepositoryName, Store, Tag, Upload};
use serde_json::json;

use crate::body::{body_into, read_limited, stream_reader, BodyError};
use crate::error::{ErrorCode, RegistryError};
use crate::route::{parse_digest, parse_endpoint, parse_query, query_value, ContentRange, Endpoint};
use crate::uploads::OpenUploads;
use crate::{PullPolicy, RegistryOptions};

const DOCKER_CONTENT_DIGEST: HeaderName = HeaderName::from_static("docker-content-digest");
const DOCKER_UPLOAD_UUID: HeaderName = HeaderName::from_static("docker-upload-uuid");
const API_VERSION: HeaderName = HeaderName::from_static("docker-distribution-api-version");

struct Shared {
    store: Store,
    options: RegistryOptions,
    policy: Arc<dyn PullPolicy>,
    source: Arc<dyn crate::ContentSource>,
    push_hook: Option<Arc<dyn crate::PushHook>>,
    uploads: OpenUploads,
}

type Result<T, E = RegistryError> = std::result::Result<T, E>;

pub(crate) fn router(
    store: Store,
    mut options: RegistryOptions,
    policy: Arc<dyn PullPolicy>,
    source: Arc<dyn crate::ContentSource>,
    push_hook: Option<Arc<dyn crate::PushHook>>,
) -> Router {
    options.max_manifest_size = options.max_manifest_size.min(sealpod_store::MAX_MANIFEST_SIZE);
    let uploads = OpenUploads::new(options.max_open_uploads);
    let shared = Arc::new(Shared { store, options, policy, source, push_hook, uploads });
    Router::new().fallback(dispatch).with_state(shared)
}

async fn dispatch(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let mut response = match handle(&shared, request).await {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(%method, %path, code = e.code.as_str(), message = %e.message, "request refused");
            e.into_response()
        }
    };
    response.headers_mut().insert(API_VERSION, HeaderValue::from_static("registry/2.0"));
    if method == Method::HEAD {
        *response.body_mut() = Body::empty();
    }
    response
}

async fn handle(s: &Arc<Shared>, request: Request) -> Result<Response> {
    let (parts, body) = request.into_parts();
    let endpoint = parse_endpoint(parts.uri.path())?;
    let query = parse_query(parts.uri.query());
    let head = parts.method == Method::HEAD;
    let headers = &parts.headers;
    if s.options.read_only && !matches!(parts.method, Method::GET | Method::HEAD) {
        return Err(RegistryError::new(ErrorCode::Denied, "this registry serves pulls only"));
    }
    match (endpoint, parts.method.clone()) {
        (Endpoint::Base, Method::GET | Method::HEAD) => {
            Ok(([(header::CONTENT_TYPE, "application/json")], "{}").into_response())
        }
        (Endpoint::Manifest { name, reference }, Method::GET | Method::HEAD) => {
            get_manifest(s, name, &reference, head).await
        }
        (Endpoint::Manifest { name, reference }, Method::PUT) => put_manifest(s, name, &reference, headers, body).await,
        (Endpoint::Manifest { name, reference }, Method::DELETE) => delete_manifest(s, name, &reference).await,
        (Endpoint::Blob { digest, .. }, Method::GET | Method::HEAD) => get_blob(s, digest, head).await,
        (Endpoint::UploadStart { name }, Method::POST) => start_upload(s, name, &query, headers, body).await,
        (Endpoint::Upload { name, id }, Method::GET) => {
            let guard = s.uploads.lock(&s.store, &name, &id).await?;
            let size = guard.upload.as_ref().map_or(0, Upload::size);
            Ok(upload_response(StatusCode::NO_CONTENT, &name, &guard.id.to_string(), size))
        }
        (Endpoint::Upload { name, id }, Method::PATCH) => patch_upload(s, name, &id, headers, body).await,
        (Endpoint::Upload { name, id }, Method::PUT) => finish_upload(s, name, &id, &query, headers, body).await,
        (Endpoint::Upload { name, id }, Method::DELETE) => cancel_upload(s, name, &id).await,
        (Endpoint::TagsList { name }, Method::GET | Method::HEAD) => tags_list(s, name, &query).await,
        (Endpoint::Blob { .. }, Method::DELETE) => Err(RegistryError::new(
            ErrorCode::Unsupported,
            "blobs are shared between repositories and removed by garbage collection; delete the manifest instead",
        )),
        (_, method) => Err(RegistryError::new(ErrorCode::Unsupported, format!("{method} is not allowed here"))),
    }
}

/// Runs store work on a blocking thread.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| RegistryError::internal(format!("worker failed: {e}")))?
}

fn value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

fn content_length(headers: &HeaderMap) -> Result<Option<u64>> {
    match headers.get(header::CONTENT_LENGTH) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .map(Some)
            .ok_or_else(|| RegistryError::new(ErrorCode::SizeInvalid, "Content-Length is not a number")),
    }
}

fn too_large(limit: u64) -> RegistryError {
    RegistryError::new(ErrorCode::SizeInvalid, format!("the request body is larger than the limit of {limit} bytes"))
        .status(StatusCode::PAYLOAD_TOO_LARGE)
        .detail(json!({ "limit": limit }))
}

fn body_error(e: BodyError, limit: u64) -> RegistryError {
    match e {
        BodyError::TooLarge => too_large(limit),
        BodyError::Timeout => RegistryError::new(ErrorCode::BlobUploadInvalid, "the client stopped sending; retry")
            .status(StatusCode::REQUEST_TIMEOUT),
        BodyError::Client(m) => {
            RegistryError::new(ErrorCode::BlobUploadInvalid, format!("reading the request body failed: {m}"))
        }
        BodyError::Write(e) => RegistryError::internal(format!("storing the request body failed: {e}")),
    }
}

fn digest_headers(response: &mut Response, digest: &Digest) {
    response.headers_mut().insert(DOCKER_CONTENT_DIGEST, value(&digest.to_string()));
}

fn created(location: String, digest: &Digest) -> Response {
    let mut r = StatusCode::CREATED.into_response();
    r.headers_mut().insert(header::LOCATION, value(&location));
    digest_headers(&mut r, digest);
    r
}

/// The `Range` header of an upload: inclusive offsets of what was received.
fn range_value(size: u64) -> HeaderValue {
    value(&format!("0-{}", size.saturating_sub(1)))
}

fn upload_location(name: &RepositoryName, id: &str) -> String {
    format!("/v2/{name}/blobs/uploads/{id}")
}

fn upload_response(status: StatusCode, name: &RepositoryName, id: &str, size: u64) -> Response {
    let mut r = status.into_response();
    let h = r.headers_mut();
    h.insert(header::LOCATION, value(&upload_location(name, id)));
    h.insert(header::RANGE, range_value(size));
    h.insert(DOCKER_UPLOAD_UUID, value(id));
    r
}

async fn get_manifest(s: &Arc<Shared>, name: RepositoryName, reference: &str, head: bool) -> Result<Response> {
    let reference: Reference = reference.parse().map_err(|e: sealpod_store::NameError| match e {
        sealpod_store::NameError::InvalidDigest(_) => RegistryError::new(ErrorCode::DigestInvalid, e.to_string()),
        _ => RegistryError::new(ErrorCode::ManifestUnknown, e.to_string()),
    })?;
    // A source that resolves tags (the log) decides what a tag means.
    let mut lookup = reference.clone();
    if let Reference::Tag(tag) = &reference {
        if let Some(digest) = s.source.resolve_tag(name.clone(), tag.clone()).await {
            lookup = Reference::Digest(digest);
        }
    }
    if let Reference::Digest(digest) = &lookup {
        let (store, n, d) = (s.store.clone(), name.clone(), *digest);
        let known = blocking(move || Ok(store.manifest(&n, &Reference::Digest(d)).is_ok())).await?;
        if !known {
            s.source.fetch_manifest(name.clone(), *digest).await;
        }
    }
    let shared = s.clone();
    let (manifest, bytes) = blocking(move || {
        let manifest = shared.store.manifest(&name, &lookup)?;
        shared.policy.check_manifest(&name, &reference, &manifest).map_err(|d| {
            RegistryError::new(ErrorCode::Denied, d.reason).detail(json!({"digest": manifest.digest.to_string()}))
        })?;
        let bytes = if head { None } else { Some(shared.store.read_manifest(&manifest.digest)?) };
        Ok((manifest, bytes))
    })
    .await?;
    let mut r = Response::new(bytes.map(Body::from).unwrap_or_default());
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, value(&manifest.media_type));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(manifest.size));
    h.insert(header::ETAG, value(&format!("\"{}\"", manifest.digest)));
    digest_headers(&mut r, &manifest.digest);
    Ok(r)
}

async fn put_manifest(
    s: &Arc<Shared>,
    name: RepositoryName,
    reference: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response> {
    let limit = s.options.max_manifest_size;
    let reference: Reference = reference.parse().map_err(|e: sealpod_store::NameError| match e {
        sealpod_store::NameError::InvalidDigest(_) => RegistryError::new(ErrorCode::DigestInvalid, e.to_string()),
        _ => RegistryError::new(ErrorCode::ManifestInvalid, e.to_string()),
    })?;
    if content_length(headers)?.is_some_and(|n| n > limit) {
        return Err(too_large(limit));
    }
    let bytes = read_limited(body, limit, s.options.idle_timeout).await.map_err(|e| body_error(e, limit))?;
    let tag = match &reference {
        Reference::Tag(t) => Some(t.clone()),
        Reference::Digest(expected) => {
            let actual = Digest::of(&bytes);
            if actual != *expected {
                return Err(RegistryError::new(
                    ErrorCode::DigestInvalid,
                    format!("the manifest hashes to {actual}, not to {expected} named in the URL"),
                ));
            }
            None
        }
    };
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let shared = s.clone();
    let location_name = name.clone();
    let stored = blocking(move || {
        let stored = shared.store.put_manifest(&name, tag.as_ref(), content_type.as_deref(), &bytes)?;
        if let Some(hook) = &shared.push_hook {
            hook.manifest_pushed(&name, tag.as_ref(), &stored).map_err(|reason| {
                RegistryError::new(ErrorCode::Denied, format!("the manifest is stored but was refused: {reason}"))
                    .detail(json!({"digest": stored.digest.to_string()}))
            })?;
        }
        Ok(stored)
    })
    .await?;
    tracing::info!(repository = %location_name, %reference, digest = %stored.digest, "manifest pushed");
    Ok(created(format!("/v2/{location_name}/manifests/{}", stored.digest), &stored.digest))
}

async fn delete_manifest(s: &Arc<Shared>, name: RepositoryName, reference: &str) -> Result<Response> {
    if !s.options.allow_delete {
        return Err(RegistryError::new(ErrorCode::Unsupported, "deleting is disabled on this registry"));
    }
    let reference: Reference = reference.parse().map_err(|e: sealpod_store::NameError| match e {
        sealpod_store::NameError::InvalidDigest(_) => RegistryError::new(ErrorCode::DigestInvalid, e.to_string()),
        _ => RegistryError::new(ErrorCode::ManifestUnknown, e.to_string()),
    })?;
    let store = s.store.clone();
    blocking(move || {
        match &reference {
            Reference::Tag(t) => store.delete_tag(&name, t)?,
            Reference::Digest(d) => store.delete_manifest(&name, d)?,
        }
        Ok(())
    })
    .await?;
    Ok(StatusCode::ACCEPTED.into_response())
}

async fn get_blob(s: &Arc<Shared>, digest: Digest, head: bool) -> Result<Response> {
    let store = s.store.clone();
    if !blocking(move || Ok(store.contains(&digest)?)).await? {
        if head {
            s.source.fetch_blob(digest).await;
        } else if let Some(arriving) = s.source.stream_blob(digest).await {
            tracing::debug!(%digest, size = arriving.size, "serving a blob while it arrives");
            return Ok(blob_response(digest, arriving.size, stream_reader(arriving.reader, s.options.idle_timeout)));
        }
    }
    let store = s.store.clone();
    let (size, reader) = blocking(move || {
        if head {
            let size = store.blob_size(&digest)?.ok_or(sealpod_store::StoreError::BlobUnknown(digest))?;
            Ok((size, None))
        } else {
            let reader = store.reader(&digest)?;
            Ok((reader.len(), Some(reader)))
        }
    })
    .await?;
    let body = reader.map(|r| stream_reader(r, s.options.idle_timeout)).unwrap_or_default();
    Ok(blob_response(digest, size, body))
}

fn blob_response(digest: Digest, size: u64, body: Body) -> Response {
    let mut r = Response::new(body);
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    h.insert(header::ETAG, value(&format!("\"{digest}\"")));
    digest_headers(&mut r, &digest);
    r
}

async fn start_upload(
    s: &Arc<Shared>,
    name: RepositoryName,
    query: &[(String, String)],
    headers: &HeaderMap,
    body: Body,
) -> Result<Response> {
    if let Some(mount) = query_value(query, "mount") {
        let digest = parse_digest(mount)?;
        let store = s.store.clone();
        if blocking(move || Ok(store.contains(&digest)?)).await? {
            // Blobs are shared by all repositories: a mount is a lookup.
            return Ok(created(format!("/v2/{name}/blobs/{digest}"), &digest));
        }
    }
    let length = content_length(headers)?;
    if let Some(digest) = query_value(query, "digest") {
        let digest = parse_digest(digest)?;
        let limit = s.options.max_chunk_size.min(s.options.max_blob_size);
        if length.is_some_and(|n| n > limit) {
            return Err(too_large(limit));
        }
        let store = s.store.clone();
        let writer = blocking(move || Ok(store.writer_expecting(digest, length)?)).await?;
        let (writer, written) = body_into(writer, body, limit, s.options.idle_timeout)
            .await
            .map_err(|e| RegistryError::internal(format!("worker failed: {e}")))?;
        written.map_err(|e| body_error(e, limit))?;
        let committed = blocking(move || Ok(writer.commit()?)).await?;
        tracing::info!(repository = %name, digest = %committed, "blob pushed");
        return Ok(created(format!("/v2/{name}/blobs/{committed}"), &committed));
    }
    let (store, scope) = (s.store.clone(), name.to_string());
    let mut slot = Some(blocking(move || Ok(store.start_upload(&scope)?)).await?);
    if let Err(e) = append(s, &mut slot, headers, None, body).await {
        if let Some(upload) = slot {
            let _ = blocking(move || Ok(upload.cancel()?)).await;
        }
        return Err(e);
    }
    let upload = slot.ok_or_else(empty_slot)?;
    let size = upload.size();
    let id = s.uploads.insert(&name, upload)?;
    Ok(upload_response(StatusCode::ACCEPTED, &name, id.as_str(), size))
}

fn empty_slot() -> RegistryError {
    RegistryError::internal("upload slot is empty")
}

/// Appends a request body to the upload in `slot`. On failure the chunk is
/// rolled back and the upload stays in the slot; if even that fails the
/// slot is left empty, and the next request resumes the upload from disk.
async fn append(
    s: &Arc<Shared>,
    slot: &mut Option<Upload>,
    headers: &HeaderMap,
    range: Option<ContentRange>,
    body: Body,
) -> Result<()> {
    let start = slot.as_ref().ok_or_else(empty_slot)?.size();
    let length = content_length(headers)?;
    if let (Some(range), Some(length)) = (range, length) {
        if range.len() != length {
            return Err(RegistryError::new(
                ErrorCode::BlobUploadInvalid,
                format!("Content-Range covers {} bytes but Content-Length is {length}", range.len()),
            ));
        }
    }
    let limit = s.options.max_chunk_size.min(s.options.max_blob_size.saturating_sub(start));
    if length.is_some_and(|n| n > limit) {
        return Err(too_large(limit));
    }
    let upload = slot.take().ok_or_else(empty_slot)?;
    let mark = upload.mark();
    let (mut upload, written) = body_into(upload, body, limit, s.options.idle_timeout)
        .await
        .map_err(|e| RegistryError::internal(format!("worker failed: {e}")))?;
    let expected = range.map(|r| r.len()).or(length);
    let failure = match written {
        Err(e) => Some(body_error(e, limit)),
        Ok(n) if expected.is_some_and(|e| e != n) => Some(RegistryError::new(
            ErrorCode::BlobUploadInvalid,
            format!("the chunk has {n} bytes, not the {} announced", expected.unwrap_or_default()),
        )),
        Ok(_) => None,
    };
    if let Some(e) = failure {
        upload.rollback(mark)?;
        *slot = Some(upload);
        return Err(e);
    }
    *slot = Some(upload);
    Ok(())
}

async fn patch_upload(
    s: &Arc<Shared>,
    name: RepositoryName,
    id: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response> {
    let mut guard = s.uploads.lock(&s.store, &name, id).await?;
    let id = guard.id.to_string();
    let size = guard.upload.as_ref().map_or(0, Upload::size);
    let range = match headers.get(header::CONTENT_RANGE) {
        None => None,
        Some(v) => {
            let range = v.to_str().ok().and_then(ContentRange::parse).ok_or_else(|| {
                RegistryError::new(ErrorCode::BlobUploadInvalid, "Content-Range must be <start>-<end>")
                    .status(StatusCode::RANGE_NOT_SATISFIABLE)
            })?;
            if range.start != size {
                return Err(RegistryError::new(
                    ErrorCode::BlobUploadInvalid,
                    format!(
                        "the chunk starts at {} but {size} bytes were received; send from offset {size}",
                        range.start
                    ),
                )
                .status(StatusCode::RANGE_NOT_SATISFIABLE)
                .header(header::LOCATION, value(&upload_location(&name, &id)))
                .header(header::RANGE, range_value(size))
                .header(DOCKER_UPLOAD_UUID, value(&id)));
            }
            Some(range)
        }
    };
    let result = append(s, &mut guard.upload, headers, range, body).await;
    if guard.upload.is_none() {
        s.uploads.forget(&guard.id);
    }
    result?;
    let size = guard.upload.as_ref().map_or(0, Upload::size);
    Ok(upload_response(StatusCode::ACCEPTED, &name, &id, size))
}

async fn finish_upload(
    s: &Arc<Shared>,
    name: RepositoryName,
    id: &str,
    query: &[(String, String)],
    headers: &HeaderMap,
    body: Body,
) -> Result<Response> {
    let digest = query_value(query, "digest")
        .ok_or_else(|| RegistryError::new(ErrorCode::DigestInvalid, "finishing an upload needs ?digest=sha256:…"))
        .and_then(parse_digest)?;
    let mut guard = s.uploads.lock(&s.store, &name, id).await?;
    let range = match headers.get(header::CONTENT_RANGE) {
        None => None,
        Some(v) => Some(v.to_str().ok().and_then(ContentRange::parse).ok_or_else(|| {
            RegistryError::new(ErrorCode::BlobUploadInvalid, "Content-Range must be <start>-<end>")
                .status(StatusCode::RANGE_NOT_SATISFIABLE)
        })?),
    };
    let size = guard.upload.as_ref().map_or(0, Upload::size);
    if range.is_some_and(|r| r.start != size) {
        return Err(RegistryError::new(ErrorCode::BlobUploadInvalid, format!("the final chunk must start at {size}"))
            .status(StatusCode::RANGE_NOT_SATISFIABLE));
    }
    let appended = append(s, &mut guard.upload, headers, range, body).await;
    if let Err(e) = appended {
        if guard.upload.is_none() {
            s.uploads.forget(&guard.id);
        }
        return Err(e);
    }
    let upload = guard.upload.take().ok_or_else(empty_slot)?;
    s.uploads.forget(&guard.id);
    let committed = blocking(move || Ok(upload.commit(&digest)?)).await?;
    tracing::info!(repository = %name, digest = %committed, "blob pushed");
    Ok(created(format!("/v2/{name}/blobs/{committed}"), &committed))
}

async fn cancel_upload(s: &Arc<Shared>, name: RepositoryName, id: &str) -> Result<Response> {
    let mut guard = s.uploads.lock(&s.store, &name, id).await?;
    let upload = guard.upload.take();
    s.uploads.forget(&guard.id);
    if let Some(upload) = upload {
        blocking(move || Ok(upload.cancel()?)).await?;
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn tags_list(s: &Arc<Shared>, name: RepositoryName, query: &[(String, String)]) -> Result<Response> {
    let max = s.options.max_tags_page;
    let n = match query_value(query, "n") {
        None | Some("") => max,
        Some(v) => v.parse::<usize>().map_err(|_| {
            RegistryError::new(ErrorCode::Unsupported, "n must be a non-negative integer")
                .status(StatusCode::BAD_REQUEST)
        })?,
    }
    .min(max);
    let last = query_value(query, "last").unwrap_or("").to_owned();
    let store = s.store.clone();
    let list_name = name.clone();
    let tags: Vec<Tag> = blocking(move || Ok(store.tags(&list_name)?)).await?;
    let after: Vec<&str> = tags.iter().map(Tag::as_str).filter(|t| *t > last.as_str()).collect();
    let page = &after[..n.min(after.len())];
    let mut r = (
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_vec(&json!({ "name": name.as_str(), "tags": page })).unwrap_or_default(),
    )
        .into_response();
    if let (true, Some(last)) = (after.len() > page.len() && n > 0, page.last()) {
        r.headers_mut().insert(header::LINK, value(&format!("</v2/{name}/tags/list?n={n}&last={last}>; rel=\"next\"")));
    }
    Ok(r)
}
