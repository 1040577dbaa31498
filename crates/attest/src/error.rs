//! Why evidence was refused: one variant per check, each naming what it saw.

use crate::Kind;

/// Why attestation evidence was not accepted. Every variant names the check
/// that failed, so a refusal tells the publisher which rule to look at.
#[derive(Debug, thiserror::Error)]
pub enum AttestError {
    /// The evidence is of a kind this verifier does not handle, or the
    /// caller asked for another kind.
    #[error("kind: expected {expected}, the evidence is {found}")]
    WrongKind {
        /// What was asked for.
        expected: String,
        /// What arrived.
        found: String,
    },
    /// The publisher's policy does not accept this TEE kind.
    #[error("policy.accept: TEE kind {0} is not accepted (the policy accepts {1})")]
    KindNotAccepted(Kind, String),
    /// An insecure dev attestation without the publisher's explicit opt-in.
    #[error(
        "kind: the provider offers only INSECURE DEV attestation (a signature by its node key, no hardware \
         guarantee); pass --allow-insecure-dev to accept it for testing"
    )]
    InsecureDevRefused,
    /// The bytes could not be parsed as the kind's format.
    #[error("parse {what}: {reason}")]
    Malformed {
        /// Which structure (quote, report, collateral, certificate).
        what: &'static str,
        /// What the parser said.
        reason: String,
    },
    /// Input larger than any genuine evidence.
    #[error("size: {what} is {size} bytes, more than the {limit} allowed")]
    TooLarge {
        /// Which structure.
        what: &'static str,
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// Something the verification needs was not supplied.
    #[error("collateral: {0}")]
    MissingCollateral(String),
    /// A signature or certificate chain failed, or collateral is out of its
    /// validity window (the vendor library's own words follow).
    #[error("verification: {0}")]
    Signature(String),
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
    /// The evidence's report data is not the binding this publisher expects:
    /// evidence for another key, another nonce or an old nonce.
    #[error("binding: report_data is {found}, expected {expected} (evidence for another key or nonce, or a replay)")]
    Binding {
        /// What the binding demands, hex.
        expected: String,
        /// What the evidence carries, hex.
        found: String,
    },
    /// A value in the evidence breaks a rule of the publisher's policy.
    #[error("policy {rule}: evidence has {found}, policy wants {wanted}")]
    Policy {
        /// The rule, as a dotted path in the policy file.
        rule: String,
        /// What the evidence carries.
        found: String,
        /// What the policy accepts.
        wanted: String,
    },
    /// A platform TEE interface failed while producing evidence.
    #[error("evidence source {path}: {reason}")]
    Source {
        /// The file or directory.
        path: String,
        /// What went wrong.
        reason: String,
    },
}

impl AttestError {
    pub(crate) fn malformed(what: &'static str, reason: impl std::fmt::Display) -> AttestError {
        AttestError::Malformed { what, reason: reason.to_string() }
    }

    pub(crate) fn policy(rule: &str, found: impl std::fmt::Display, wanted: impl std::fmt::Display) -> AttestError {
        AttestError::Policy { rule: rule.to_owned(), found: found.to_string(), wanted: wanted.to_string() }
    }
}
