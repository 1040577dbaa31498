//! The wire formats of the Apocryph protocol family, as prost types.
//!
//! The `.proto` files in the repository's `proto/` folder are the only source of
//! truth; this crate compiles them at build time (with protox, no system
//! `protoc`) and re-exports the generated types, plus the protocol names and the
//! size limits every peer applies before decoding a frame.
//!
//! It leaves framing and transport to `sealpod-net`, and the conversion from the
//! user's pod manifest to [`Pod`] to `sealpod-manifest`.

#[allow(clippy::all, missing_docs)]
mod generated {
    include!(concat!(env!("OUT_DIR"), "/apocryph.v0.rs"));
    include!(concat!(env!("OUT_DIR"), "/apocryph.v0.serde.rs"));
}

pub use generated::*;
pub use prost::Message;

/// libp2p protocol names. The three seed protocols keep Apocryph's exact ids.
pub mod protocol {
    /// TEE attestation bound to the stream's authenticated endpoint.
    pub const ATTEST: &str = "/apocryph/attest/0.0.1";
    /// Capacity inquiry and priced offer.
    pub const PROVISIONING_CAPACITY: &str = "/apocryph/provisioning-capacity/0.0.1";
    /// Deploying a pod.
    pub const PROVISION_POD: &str = "/apocryph/provision-pod/0.0.1";
    /// sealpod's extension: status, logs, delete, list, exec.
    pub const POD_CONTROL: &str = "/apocryph/pod-control/0.0.1";
    /// sealpod's extension: content-addressed blobs, streamed.
    pub const BLOB: &str = "/apocryph/blob/0.0.1";
    /// sealpod's extension: syncing the image transparency log.
    pub const LOG: &str = "/apocryph/log/0.0.1";
}

/// Largest frame, in bytes, a peer accepts on each protocol. Checked against the
/// length prefix before a byte of the body is read.
pub mod limits {
    /// Attestation requests are a nonce; responses carry quotes and collateral.
    pub const ATTEST_REQUEST: usize = 1024;
    /// DCAP collateral with its certificate chains is tens of KiB.
    pub const ATTEST_RESPONSE: usize = 1 << 20;
    /// Capacity requests and offers are small.
    pub const CAPACITY: usize = 64 * 1024;
    /// A pod manifest may carry inline secrets and a payload manifest.
    pub const PROVISION_REQUEST: usize = 4 << 20;
    /// Status replies.
    pub const PROVISION_RESPONSE: usize = 256 * 1024;
    /// Control requests are ids and offsets, or an update, which carries a
    /// pod manifest as a provisioning request does.
    pub const CONTROL_REQUEST: usize = PROVISION_REQUEST;
    /// Log chunks are capped at [`LOG_CHUNK`] plus framing.
    pub const CONTROL_RESPONSE: usize = 2 << 20;
    /// Blob request and response frames (the blob bytes follow unframed).
    pub const BLOB_FRAME: usize = 4096;
    /// The largest log chunk a provider sends in one response.
    pub const LOG_CHUNK: u32 = 1 << 20;
    /// Log requests: a range, sizes, or a checkpoint note with cosignatures.
    pub const TLOG_REQUEST: usize = 64 * 1024;
    /// Log responses: up to [`TLOG_MAX_ENTRIES`] entries of at most 7,318
    /// bytes each, or a proof, or a checkpoint note.
    pub const TLOG_RESPONSE: usize = 2 << 20;
    /// Most entries asked for or sent in one log response.
    pub const TLOG_MAX_ENTRIES: u32 = 256;
}

impl Error {
    /// An error with a code and a message, about no particular field.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Error { code: code as i32, message: message.into(), field: String::new() }
    }
}

/// What a pod asks for in total: the sum of its containers' resources,
/// times the copies it may run ([`copies`]), all of which are reserved.
pub fn total_resources(pod: &Pod) -> Resources {
    let one = pod.containers.iter().filter_map(|c| c.resources.as_ref()).fold(Resources::default(), |a, r| Resources {
        cpu_millicores: a.cpu_millicores.saturating_add(r.cpu_millicores),
        memory_bytes: a.memory_bytes.saturating_add(r.memory_bytes),
        gpus: a.gpus.saturating_add(r.gpus),
        ephemeral_storage_bytes: a.ephemeral_storage_bytes.saturating_add(r.ephemeral_storage_bytes),
        pids: a.pids.saturating_add(r.pids),
    });
    let n = copies(pod);
    Resources {
        cpu_millicores: one.cpu_millicores.saturating_mul(u64::from(n)),
        memory_bytes: one.memory_bytes.saturating_mul(u64::from(n)),
        gpus: one.gpus.saturating_mul(n),
        ephemeral_storage_bytes: one.ephemeral_storage_bytes.saturating_mul(u64::from(n)),
        pids: one.pids.saturating_mul(n),
    }
}

/// How many copies of the pod run: `replicas.max` (at least 1).
pub fn copies(pod: &Pod) -> u32 {
    pod.replicas.map_or(1, |r| r.max.max(r.min).max(1))
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let code = ErrorCode::try_from(self.code).unwrap_or(ErrorCode::Unspecified);
        write!(f, "{}: {}", code.as_str_name().trim_start_matches("ERROR_CODE_").to_lowercase(), self.message)?;
        if !self.field.is_empty() {
            write!(f, " (field {})", self.field)?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {}

/// Checks the hostname of a pod's HTTP port ([`Port::http_host`]) as a
/// `Host` header would carry it (no port, no trailing dot) and returns it
/// lowercase; the error says what is wrong.
pub fn check_hostname(text: &str) -> Result<String, String> {
    let host = text.to_ascii_lowercase();
    if host.is_empty() || host.len() > 253 {
        return Err("a hostname has 1 to 253 characters".into());
    }
    if host.contains(':') {
        return Err("give the hostname alone, without a port or scheme".into());
    }
    for label in host.split('.') {
        let ok = (1..=63).contains(&label.len())
            && label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return Err("use dot-separated labels of 1 to 63 letters, digits and '-', \
                        each starting and ending with a letter or digit"
                .into());
        }
    }
    Ok(host)
}
