//! Errors in the distribution spec's JSON form ("Error Codes").

use axum::body::Body;
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use sealpod_store::StoreError;
use serde_json::{json, Value};

/// The error codes of the OCI distribution spec, plus `UNKNOWN` for
/// failures of the registry itself (as the CNCF registry reports them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// Blob unknown to registry.
    BlobUnknown,
    /// Blob upload invalid.
    BlobUploadInvalid,
    /// Blob upload unknown to registry.
    BlobUploadUnknown,
    /// Provided digest did not match uploaded content.
    DigestInvalid,
    /// Manifest references a manifest or blob unknown to registry.
    ManifestBlobUnknown,
    /// Manifest invalid.
    ManifestInvalid,
    /// Manifest unknown to registry.
    ManifestUnknown,
    /// Invalid repository name.
    NameInvalid,
    /// Repository name not known to registry.
    NameUnknown,
    /// Provided length did not match content length.
    SizeInvalid,
    /// Requested access to the resource is denied.
    Denied,
    /// The operation is unsupported.
    Unsupported,
    /// Too many requests.
    TooManyRequests,
    /// The registry failed (an I/O error, a corrupt blob).
    Unknown,
}

impl ErrorCode {
    /// The code as it appears in error bodies, e.g. `BLOB_UNKNOWN`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BlobUnknown => "BLOB_UNKNOWN",
            ErrorCode::BlobUploadInvalid => "BLOB_UPLOAD_INVALID",
            ErrorCode::BlobUploadUnknown => "BLOB_UPLOAD_UNKNOWN",
            ErrorCode::DigestInvalid => "DIGEST_INVALID",
            ErrorCode::ManifestBlobUnknown => "MANIFEST_BLOB_UNKNOWN",
            ErrorCode::ManifestInvalid => "MANIFEST_INVALID",
            ErrorCode::ManifestUnknown => "MANIFEST_UNKNOWN",
            ErrorCode::NameInvalid => "NAME_INVALID",
            ErrorCode::NameUnknown => "NAME_UNKNOWN",
            ErrorCode::SizeInvalid => "SIZE_INVALID",
            ErrorCode::Denied => "DENIED",
            ErrorCode::Unsupported => "UNSUPPORTED",
            ErrorCode::TooManyRequests => "TOOMANYREQUESTS",
            ErrorCode::Unknown => "UNKNOWN",
        }
    }

    /// The status the spec pairs with the code.
    pub fn status(self) -> StatusCode {
        match self {
            ErrorCode::BlobUnknown
            | ErrorCode::BlobUploadUnknown
            | ErrorCode::ManifestUnknown
            | ErrorCode::NameUnknown => StatusCode::NOT_FOUND,
            ErrorCode::BlobUploadInvalid
            | ErrorCode::DigestInvalid
            | ErrorCode::ManifestBlobUnknown
            | ErrorCode::ManifestInvalid
            | ErrorCode::NameInvalid
            | ErrorCode::SizeInvalid => StatusCode::BAD_REQUEST,
            ErrorCode::Denied => StatusCode::FORBIDDEN,
            ErrorCode::Unsupported => StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::Unknown => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// A failed request: a spec error code, a status, a message saying what to
/// do, and optional detail.
#[derive(Debug)]
pub struct RegistryError {
    /// The spec's code.
    pub code: ErrorCode,
    /// The HTTP status (usually [`ErrorCode::status`]).
    pub status: StatusCode,
    /// A message for a person.
    pub message: String,
    /// Structured detail, if any.
    pub detail: Option<Value>,
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl RegistryError {
    /// An error with the code's usual status.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> RegistryError {
        RegistryError { code, status: code.status(), message: message.into(), detail: None, headers: Vec::new() }
    }

    pub(crate) fn status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    pub(crate) fn detail(mut self, detail: Value) -> Self {
        self.detail = Some(detail);
        self
    }

    pub(crate) fn header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    pub(crate) fn internal(message: impl Into<String>) -> RegistryError {
        RegistryError::new(ErrorCode::Unknown, message)
    }

    /// The JSON body: `{"errors":[{"code":…,"message":…,"detail":…}]}`.
    pub fn body(&self) -> Value {
        let mut e = json!({"code": self.code.as_str(), "message": self.message});
        if let Some(d) = &self.detail {
            e["detail"] = d.clone();
        }
        json!({ "errors": [e] })
    }
}

impl From<StoreError> for RegistryError {
    fn from(e: StoreError) -> RegistryError {
        let message = e.to_string();
        match e {
            StoreError::BlobUnknown(d) => {
                RegistryError::new(ErrorCode::BlobUnknown, message).detail(json!({"digest": d.to_string()}))
            }
            StoreError::DigestMismatch { expected, actual } => RegistryError::new(ErrorCode::DigestInvalid, message)
                .detail(json!({"expected": expected.to_string(), "actual": actual.to_string()})),
            StoreError::SizeMismatch { .. } => RegistryError::new(ErrorCode::SizeInvalid, message),
            StoreError::TooLarge { limit, .. } => RegistryError::new(ErrorCode::SizeInvalid, message)
                .status(StatusCode::PAYLOAD_TOO_LARGE)
                .detail(json!({"limit": limit})),
            StoreError::UploadUnknown(_) => RegistryError::new(ErrorCode::BlobUploadUnknown, message),
            StoreError::UploadBusy(_) => {
                RegistryError::new(ErrorCode::BlobUploadInvalid, message).status(StatusCode::CONFLICT)
            }
            StoreError::ManifestInvalid(_) => RegistryError::new(ErrorCode::ManifestInvalid, message),
            StoreError::ManifestBlobUnknown(missing) => RegistryError::new(ErrorCode::ManifestBlobUnknown, message)
                .detail(json!({"missing": missing.iter().map(|d| d.to_string()).collect::<Vec<_>>()})),
            StoreError::ManifestUnknown { .. } => RegistryError::new(ErrorCode::ManifestUnknown, message),
            StoreError::NameUnknown(_) => RegistryError::new(ErrorCode::NameUnknown, message),
            StoreError::Corrupt { .. } | StoreError::Io { .. } => {
                tracing::error!(error = %message, "store failure");
                RegistryError::internal(message)
            }
        }
    }
}

impl IntoResponse for RegistryError {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self.body()).unwrap_or_default();
        let mut response = Response::new(Body::from(body));
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        for (name, value) in self.headers {
            headers.insert(name, value);
        }
        response
    }
}
