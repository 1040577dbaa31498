//! The insecure dev attestor, for machines without a TEE: the node key signs
//! the report data. It proves only that the answer comes from the holder of
//! the provider's key — which the libp2p connection already proves — and
//! nothing about the machine. It exists so the whole flow can be exercised
//! anywhere, and a publisher accepts it only with `--allow-insecure-dev`.

use libp2p_identity::{Keypair, PublicKey};
use serde::Serialize;

use crate::{AttestError, Claims, Details, Evidence, Kind};

/// The statement's prefix, so a node-key signature over it can never be
/// mistaken for a signature over anything else the node signs.
pub const MAGIC: &[u8] = b"sealpod-insecure-dev-attestation-v1\0";

/// What an insecure dev statement says.
#[derive(Debug, Clone, Serialize)]
pub struct DevClaims {
    /// Always true: nothing about the machine is proven.
    pub insecure: bool,
    /// Why it was accepted.
    pub accepted_because: String,
}

/// Signs `report_data` with the node key.
pub fn attest(key: &Keypair, report_data: &[u8; 64]) -> Result<Evidence, AttestError> {
    let mut report = MAGIC.to_vec();
    report.extend_from_slice(report_data);
    let signature =
        key.sign(&report).map_err(|e| AttestError::Source { path: "node key".into(), reason: e.to_string() })?;
    Ok(Evidence { kind: Kind::InsecureDev, report, collateral: vec![signature] })
}

pub(crate) fn verify(evidence: &Evidence, provider_public_key: Option<&[u8]>) -> Result<Claims, AttestError> {
    let key = provider_public_key.ok_or_else(|| {
        AttestError::MissingCollateral("insecure dev evidence verifies only against a live provider's key".into())
    })?;
    let key = PublicKey::try_decode_protobuf(key).map_err(|e| AttestError::malformed("provider public key", e))?;
    let data = evidence
        .report
        .strip_prefix(MAGIC)
        .filter(|d| d.len() == 64)
        .ok_or_else(|| AttestError::malformed("insecure dev statement", "wrong prefix or length"))?;
    let signature = evidence
        .collateral
        .first()
        .ok_or_else(|| AttestError::MissingCollateral("insecure dev evidence carries no signature".into()))?;
    if !key.verify(&evidence.report, signature) {
        return Err(AttestError::Signature("the provider's node key did not sign this insecure dev statement".into()));
    }
    Ok(Claims {
        kind: Kind::InsecureDev,
        report_data: hex::encode(data),
        details: Details::InsecureDev(DevClaims {
            insecure: true,
            accepted_because: "the publisher passed --allow-insecure-dev".into(),
        }),
        notes: vec!["INSECURE: a signature by the provider's node key; no TEE, no measurement, no hardware root".into()],
    })
}
