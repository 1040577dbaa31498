//! Golem Computation Payload Manifests (GAP-5, with GAP-4's `compManifest`):
//! the signed statement of what a workload is and what it may do.
//!
//! What this crate does:
//!
//! * reads a manifest — base64 text as it travels ([`decode_manifest`]) or
//!   JSON ([`parse_manifest_json`]) — checked against the JSON Schema in
//!   `schema/computation-payload-manifest.schema.json` and then field by
//!   field, every error naming the field (`compManifest.script.commands[2]`);
//! * signs it for a publisher ([`sign`]), producing what `openssl dgst
//!   -sha256 -sign` produces, and verifies it for a provider ([`verify`]):
//!   the signature over the exact base64 text, the author's X.509 chain up to
//!   a certificate in the provider's [`Keystore`], every certificate's validity
//!   at the given time, and the manifest's own `createdAt`/`expiresAt`;
//! * ties the manifest to an image ([`check_image_digest`], [`digest_matches`]);
//! * keeps the provider's trust settings — keystore, domain [`Whitelist`],
//!   outbound [`Rules`] — in a directory ([`TrustSettings`]), and decides
//!   whether a manifest's outbound access is accepted, in Golem's order
//!   ([`TrustSettings::decide`]), saying which rule decided and why;
//! * answers the runtime's questions while a pod runs: may it execute this
//!   command ([`exec_allowed`]), may it reach this host ([`url_allowed`]).
//!
//! What it leaves to others: executing commands and proxying connections
//! (the runtime and its egress proxy), command-line wiring (the `sealpod`
//! binary), transport of the manifest with the pod (the provisioning
//! protocol). It has no network access and no clock of its own: every check
//! that depends on time takes `now`.
//!
//! Specifications: Golem GAP-5 (payload manifest) and GAP-4 (computation
//! manifest) in golemfactory/golem-architecture, the published JSON Schema
//! (`computation-payload-manifest.schema.json`), and yagna's behaviour where
//! the GAPs are silent; RFC 5280 for certificate paths, RFC 3339 for times.
//! `docs/payload-manifest.md` describes the format, the signing procedure with
//! `openssl`, and every deliberate difference from yagna.
//!
//! Written here rather than taken from a crate: certificate path building
//! and checking (`rustls-webpki` is made for TLS usages and needs `ring` or
//! `aws-lc-rs`, as does `x509-parser`'s own `verify` feature), built only from
//! `x509-parser`'s parsing and RustCrypto's signature primitives; no
//! cryptographic primitive is implemented here. The schema validator is
//! `boon`, chosen over `jsonschema` for its far smaller dependency tree (no
//! HTTP client, no TLS).
//!
//! Nothing in this crate panics on input, and every input has a size limit
//! ([`MAX_MANIFEST_BYTES`], [`x509::MAX_CERTIFICATE_INPUT_BYTES`],
//! [`MAX_SIGNATURE_BYTES`], ...).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod crypto;
pub mod digest;
mod enforce;
pub mod keystore;
pub mod manifest;
pub mod rules;
mod schema;
mod sign;
mod store;
pub mod trust;
mod verify;
pub mod whitelist;
pub mod x509;

pub use crypto::MIN_RSA_BITS;
pub use digest::{
    check_image_bytes, check_image_digest, digest_matches, DigestAlgorithm, HashError, ImageDigestError, PayloadHash,
    UnknownDigest,
};
pub use enforce::{exec_allowed, transfer_allowed, url_allowed, Denied};
pub use keystore::{AddedCertificates, Keystore, SkippedFile};
pub use manifest::{
    decode_manifest, encode_manifest, parse_manifest_json, CommandKind, CompManifest, Inet, InetOut, ManifestError,
    MatchMode, Metadata, Net, OutboundAccess, Payload, PayloadManifest, Platform, Script, ScriptCommand,
    MAX_MANIFEST_BASE64_BYTES, MAX_MANIFEST_BYTES,
};
pub use rules::{decide, CertRule, DecidingRule, Decision, Mode, OutboundRules, Rules};
pub use schema::SCHEMA_JSON;
pub use sign::{sign, SignError};
pub use store::FileError;
pub use trust::{TrustError, TrustSettings};
pub use verify::{
    check_validity_period, decode_signature_base64, verify, verify_signature, VerifiedManifest, VerifiedSigner,
    VerifyError, CREATED_AT_TOLERANCE, MAX_SIGNATURE_BYTES,
};
pub use whitelist::{Whitelist, WhitelistEntry};
pub use x509::{certificate_id, split_certificates, CertificateError, CertificateInfo};
