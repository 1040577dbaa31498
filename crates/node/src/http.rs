//! The log over HTTP, beside the registry API: the C2SP `tlog-tiles` layout
//! under `/tlog/` (`checkpoint`, `tile/<L>/<N>`, `tile/entries/<N>`), and a
//! JSON view for `sealpod log` under `/sealpod/v1/log`.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use sealpod_imagelog::ImageLog;
use serde_json::json;

fn reply(status: StatusCode, content_type: &str, body: impl Into<Body>) -> Response {
    let mut r = Response::new(body.into());
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, content_type.parse().expect("static content type"));
    r
}

fn json_reply(status: StatusCode, value: &serde_json::Value) -> Response {
    reply(status, "application/json", serde_json::to_vec_pretty(value).unwrap_or_default())
}

fn not_found(message: String) -> Response {
    json_reply(StatusCode::NOT_FOUND, &json!({ "error": message }))
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    tokio::task::spawn_blocking(f).await.ok()
}

async fn checkpoint(State(log): State<ImageLog>) -> Response {
    match blocking(move || log.signed_checkpoint()).await.flatten() {
        Some(note) => {
            let mut r = reply(StatusCode::OK, "text/plain; charset=utf-8", note);
            r.headers_mut().insert(header::CACHE_CONTROL, "no-cache".parse().expect("static"));
            r
        }
        None => not_found("this node has not synced the log yet".into()),
    }
}

async fn tile(State(log): State<ImageLog>, Path(rest): Path<String>) -> Response {
    let path = format!("tile/{rest}");
    let full = !path.contains(".p/");
    match blocking(move || log.tile(&path)).await {
        Some(Ok(bytes)) => {
            let mut r = reply(StatusCode::OK, "application/octet-stream", bytes);
            if full {
                // A full tile never changes (tlog-tiles).
                r.headers_mut()
                    .insert(header::CACHE_CONTROL, "public, max-age=31536000, immutable".parse().expect("static"));
            }
            r
        }
        Some(Err(e)) => not_found(e.to_string()),
        None => reply(StatusCode::INTERNAL_SERVER_ERROR, "text/plain", "worker failed"),
    }
}

async fn status(State(log): State<ImageLog>) -> Response {
    match blocking(move || log.status()).await {
        Some(s) => json_reply(StatusCode::OK, &serde_json::to_value(s).unwrap_or_default()),
        None => reply(StatusCode::INTERNAL_SERVER_ERROR, "text/plain", "worker failed"),
    }
}

/// `GET /sealpod/v1/log/images/<name>:<tag>`: the image's entries and the
/// inclusion proof of the latest in the trusted checkpoint.
async fn image(State(log): State<ImageLog>, Path(image): Path<String>) -> Response {
    let found = blocking(move || {
        let history = log.history(&image);
        let proof = log.prove(&image);
        (image, history, proof, log.status())
    })
    .await;
    match found {
        Some((image, history, Some(inclusion), status)) => json_reply(
            StatusCode::OK,
            &json!({
                "image": image,
                "origin": status.origin,
                "log_key": status.log_key,
                "history": history,
                "inclusion": inclusion,
                "cosigners": status.cosigners,
            }),
        ),
        Some((image, _, None, status)) => {
            not_found(format!("{image} is not in log {} (size {})", status.origin, status.size))
        }
        None => reply(StatusCode::INTERNAL_SERVER_ERROR, "text/plain", "worker failed"),
    }
}

/// `GET /sealpod/v1/log/digests/<digest>`: the entries publishing it.
async fn digest(State(log): State<ImageLog>, Path(digest): Path<String>) -> Response {
    let found = blocking(move || (log.entries_for_digest(&digest), digest, log.origin().to_owned())).await;
    match found {
        Some((entries, _, _)) if !entries.is_empty() => {
            json_reply(StatusCode::OK, &serde_json::to_value(entries).unwrap_or_default())
        }
        Some((_, digest, origin)) => not_found(format!("{digest} is not in log {origin}")),
        None => reply(StatusCode::INTERNAL_SERVER_ERROR, "text/plain", "worker failed"),
    }
}

/// The routes, over `log`.
pub(crate) fn routes(log: ImageLog) -> Router {
    Router::new()
        .route("/tlog/checkpoint", get(checkpoint))
        .route("/tlog/tile/{*rest}", get(tile))
        .route("/sealpod/v1/log", get(status))
        .route("/sealpod/v1/log/images/{*image}", get(image))
        .route("/sealpod/v1/log/digests/{digest}", get(digest))
        .with_state(log)
}
