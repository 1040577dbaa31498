//! Why GPU evidence was refused: one variant per check, each naming what it saw.

/// Why an NVIDIA GPU attestation report was not accepted. The message of each
/// variant starts with the check that failed.
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    /// Input larger than any genuine report or certificate chain.
    #[error("size: {what} is {size}, more than the {limit} allowed")]
    TooLarge {
        /// Which structure.
        what: &'static str,
        /// Its size (bytes, or certificates for a chain).
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The bytes are not an SPDM GET_MEASUREMENTS exchange as NVIDIA sends
    /// it, or a certificate does not parse.
    #[error("parse {what}: {reason}")]
    Malformed {
        /// Which structure or field.
        what: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The chain holds fewer than the signing certificate and the root.
    #[error(
        "certificate chain: {found} certificate(s); a GPU chain runs from the attestation signing certificate up \
         to the NVIDIA device identity root, so it needs at least two (send the whole chain the driver returns)"
    )]
    ChainTooShort {
        /// How many certificates arrived.
        found: usize,
    },
    /// The last certificate is not the pinned NVIDIA device identity root.
    #[error(
        "certificate chain: it ends at {subject}, not at the pinned NVIDIA device identity root (a chain from \
         another root, or certificates out of order: leaf first, root last)"
    )]
    UntrustedRoot {
        /// The last certificate's subject.
        subject: String,
    },
    /// A certificate is not signed by the one after it.
    #[error(
        "certificate chain: certificate {index} ({subject}) is not issued by certificate {} ({issuer}): {reason} \
         (is an intermediate certificate missing?)",
        index + 1
    )]
    BrokenLink {
        /// Position of the certificate, the leaf being 0.
        index: usize,
        /// Its subject.
        subject: String,
        /// The subject of the certificate after it.
        issuer: String,
        /// Which part of the link failed.
        reason: String,
    },
    /// A certificate may not play the part it has in the chain.
    #[error("certificate chain: certificate {index} ({subject}) cannot be used here: {reason}")]
    CertificateUse {
        /// Position of the certificate, the leaf being 0.
        index: usize,
        /// Its subject.
        subject: String,
        /// What forbids it.
        reason: String,
    },
    /// A certificate is not valid at the verification time.
    #[error("certificate validity: {subject} is valid {not_before} to {not_after}, not at {now}")]
    CertificateTime {
        /// The certificate.
        subject: String,
        /// Start of validity.
        not_before: String,
        /// End of validity.
        not_after: String,
        /// The verification time.
        now: String,
    },
    /// The leaf carries no FWID: it is not the GPU's attestation signing
    /// certificate.
    #[error(
        "certificate chain: the leaf {subject} has no FWID extension (2.23.133.5.4.1), so it is not the GPU's \
         attestation signing certificate (is the signing certificate missing from the chain?)"
    )]
    NoFwid {
        /// The leaf's subject.
        subject: String,
    },
    /// The FWID in the report's opaque data is not the signing certificate's.
    #[error("fwid: the report says the firmware is {report}, the signing certificate certifies {certificate}")]
    FwidMismatch {
        /// The report's FWID, hex.
        report: String,
        /// The certificate's FWID, hex.
        certificate: String,
    },
    /// The report is not signed by the leaf certificate's key.
    #[error("report signature: {0}")]
    Signature(String),
    /// The request's nonce is not the one the caller expects.
    #[error(
        "nonce: the report answers nonce {found}, expected {expected} (evidence for another request, or a replay)"
    )]
    Nonce {
        /// The expected nonce, hex.
        expected: String,
        /// The nonce in the signed request, hex.
        found: String,
    },
    /// The policy names a measurement index the report does not carry.
    #[error("policy measurement {index}: the report carries no measurement {index} (it carries {carried})")]
    MeasurementMissing {
        /// The index.
        index: u8,
        /// The indices the report carries.
        carried: String,
    },
    /// A measurement differs from the policy's reference value.
    #[error("policy measurement {index}: evidence has {found}, policy wants {expected}")]
    MeasurementMismatch {
        /// The index.
        index: u8,
        /// The measured value, hex.
        found: String,
        /// The reference value, hex.
        expected: String,
    },
}

impl GpuError {
    pub(crate) fn malformed(what: &'static str, reason: impl std::fmt::Display) -> GpuError {
        GpuError::Malformed { what, reason: reason.to_string() }
    }
}
