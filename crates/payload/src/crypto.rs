//! Public and private keys, and the signature operations on them. Nothing
//! here is cryptography written by hand: RSA is RustCrypto's `rsa` (PKCS#1
//! v1.5), ECDSA is `p256`/`p384`, Ed25519 is `ed25519-dalek`. This module
//! only picks the primitive that a key and an algorithm identifier call for.

use ed25519_dalek::Signer as _;
use p256::ecdsa::signature::hazmat::{PrehashSigner as _, PrehashVerifier as _};
use pkcs8::der::Decode as _;
use rsa::pkcs1::{DecodeRsaPrivateKey as _, DecodeRsaPublicKey as _};
use rsa::pkcs8::DecodePrivateKey as _;
use rsa::traits::PublicKeyParts as _;
use rsa::Pkcs1v15Sign;
use x509_parser::x509::{AlgorithmIdentifier, SubjectPublicKeyInfo};

use crate::digest::DigestAlgorithm;

/// The smallest RSA modulus accepted, in bits. (The `rsa` crate refuses
/// public keys over 4096 bits, which bounds the cost of a verification.)
pub const MIN_RSA_BITS: usize = 2048;

const OID_RSA: &str = "1.2.840.113549.1.1.1";
const OID_EC: &str = "1.2.840.10045.2.1";
const OID_P256: &str = "1.2.840.10045.3.1.7";
const OID_P384: &str = "1.3.132.0.34";
const OID_ED25519: &str = "1.3.101.112";

/// The kind of a key, for messages and for matching with algorithms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyKind {
    Rsa,
    Ecdsa,
    Ed25519,
}

/// A public key from a certificate.
#[derive(Debug, Clone)]
pub(crate) enum PublicKey {
    Rsa(rsa::RsaPublicKey),
    P256(p256::ecdsa::VerifyingKey),
    P384(p384::ecdsa::VerifyingKey),
    Ed25519(ed25519_dalek::VerifyingKey),
}

/// Why a signature does not verify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SignatureFailure {
    /// Well-formed, but not made by this key over this message.
    Mismatch,
    /// Not even a well-formed signature for this key type.
    Malformed(String),
}

impl PublicKey {
    /// Reads a certificate's SubjectPublicKeyInfo.
    pub(crate) fn from_spki(spki: &SubjectPublicKeyInfo<'_>) -> Result<PublicKey, String> {
        let bits = spki.subject_public_key.data.as_ref();
        match spki.algorithm.algorithm.to_id_string().as_str() {
            OID_RSA => {
                let key = rsa::RsaPublicKey::from_pkcs1_der(bits).map_err(|e| format!("malformed RSA key: {e}"))?;
                if key.size() * 8 < MIN_RSA_BITS {
                    return Err(format!("RSA key of {} bits is too small (minimum {MIN_RSA_BITS})", key.size() * 8));
                }
                Ok(PublicKey::Rsa(key))
            }
            OID_EC => {
                let curve = spki
                    .algorithm
                    .parameters
                    .as_ref()
                    .and_then(|p| p.as_oid().ok())
                    .map(|oid| oid.to_id_string())
                    .unwrap_or_default();
                match curve.as_str() {
                    OID_P256 => p256::ecdsa::VerifyingKey::from_sec1_bytes(bits)
                        .map(PublicKey::P256)
                        .map_err(|_| "malformed P-256 key".to_string()),
                    OID_P384 => p384::ecdsa::VerifyingKey::from_sec1_bytes(bits)
                        .map(PublicKey::P384)
                        .map_err(|_| "malformed P-384 key".to_string()),
                    other => Err(format!("unsupported elliptic curve {other} (P-256 and P-384 are supported)")),
                }
            }
            OID_ED25519 => {
                let bytes: &[u8; 32] = bits.try_into().map_err(|_| "malformed Ed25519 key".to_string())?;
                ed25519_dalek::VerifyingKey::from_bytes(bytes)
                    .map(PublicKey::Ed25519)
                    .map_err(|_| "malformed Ed25519 key".to_string())
            }
            other => Err(format!("unsupported public key algorithm {other} (RSA, ECDSA P-256/P-384 and Ed25519 are)")),
        }
    }

    pub(crate) fn kind(&self) -> KeyKind {
        match self {
            PublicKey::Rsa(_) => KeyKind::Rsa,
            PublicKey::P256(_) | PublicKey::P384(_) => KeyKind::Ecdsa,
            PublicKey::Ed25519(_) => KeyKind::Ed25519,
        }
    }

    /// Verifies `signature` over `message`. RSA signatures are PKCS#1 v1.5
    /// over `digest(message)`; ECDSA signatures are DER over the digest (any
    /// digest with any curve, truncated as FIPS 186 says); Ed25519 signs the
    /// message itself (PureEdDSA) and ignores `digest`.
    pub(crate) fn verify(
        &self,
        digest: DigestAlgorithm,
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), SignatureFailure> {
        match self {
            PublicKey::Rsa(key) => {
                if signature.len() != key.size() {
                    return Err(SignatureFailure::Malformed(format!(
                        "an RSA-{} signature is {} bytes, this one is {}",
                        key.size() * 8,
                        key.size(),
                        signature.len()
                    )));
                }
                key.verify(pkcs1v15(digest), &digest.digest(message), signature).map_err(|_| SignatureFailure::Mismatch)
            }
            PublicKey::P256(key) => {
                let sig = p256::ecdsa::Signature::from_der(signature)
                    .map_err(|_| SignatureFailure::Malformed("not a DER ECDSA P-256 signature".into()))?;
                key.verify_prehash(&digest.digest(message), &sig).map_err(|_| SignatureFailure::Mismatch)
            }
            PublicKey::P384(key) => {
                let sig = p384::ecdsa::Signature::from_der(signature)
                    .map_err(|_| SignatureFailure::Malformed("not a DER ECDSA P-384 signature".into()))?;
                key.verify_prehash(&digest.digest(message), &sig).map_err(|_| SignatureFailure::Mismatch)
            }
            PublicKey::Ed25519(key) => {
                let bytes: &[u8; 64] = signature
                    .try_into()
                    .map_err(|_| SignatureFailure::Malformed("an Ed25519 signature is 64 bytes".into()))?;
                key.verify_strict(message, &ed25519_dalek::Signature::from_bytes(bytes))
                    .map_err(|_| SignatureFailure::Mismatch)
            }
        }
    }
}

fn pkcs1v15(digest: DigestAlgorithm) -> Pkcs1v15Sign {
    match digest {
        DigestAlgorithm::Sha224 => Pkcs1v15Sign::new::<sha2::Sha224>(),
        DigestAlgorithm::Sha256 => Pkcs1v15Sign::new::<sha2::Sha256>(),
        DigestAlgorithm::Sha384 => Pkcs1v15Sign::new::<sha2::Sha384>(),
        DigestAlgorithm::Sha512 => Pkcs1v15Sign::new::<sha2::Sha512>(),
        DigestAlgorithm::Sha3_224 => Pkcs1v15Sign::new::<sha3::Sha3_224>(),
        DigestAlgorithm::Sha3_256 => Pkcs1v15Sign::new::<sha3::Sha3_256>(),
        DigestAlgorithm::Sha3_384 => Pkcs1v15Sign::new::<sha3::Sha3_384>(),
        DigestAlgorithm::Sha3_512 => Pkcs1v15Sign::new::<sha3::Sha3_512>(),
    }
}

/// What a certificate's `signatureAlgorithm` asks for: a key kind and a digest.
pub(crate) fn certificate_signature_scheme(
    algorithm: &AlgorithmIdentifier<'_>,
) -> Result<(KeyKind, DigestAlgorithm), String> {
    use DigestAlgorithm::*;
    let oid = algorithm.algorithm.to_id_string();
    Ok(match oid.as_str() {
        "1.2.840.113549.1.1.14" => (KeyKind::Rsa, Sha224),
        "1.2.840.113549.1.1.11" => (KeyKind::Rsa, Sha256),
        "1.2.840.113549.1.1.12" => (KeyKind::Rsa, Sha384),
        "1.2.840.113549.1.1.13" => (KeyKind::Rsa, Sha512),
        "2.16.840.1.101.3.4.3.13" => (KeyKind::Rsa, Sha3_224),
        "2.16.840.1.101.3.4.3.14" => (KeyKind::Rsa, Sha3_256),
        "2.16.840.1.101.3.4.3.15" => (KeyKind::Rsa, Sha3_384),
        "2.16.840.1.101.3.4.3.16" => (KeyKind::Rsa, Sha3_512),
        "1.2.840.10045.4.3.1" => (KeyKind::Ecdsa, Sha224),
        "1.2.840.10045.4.3.2" => (KeyKind::Ecdsa, Sha256),
        "1.2.840.10045.4.3.3" => (KeyKind::Ecdsa, Sha384),
        "1.2.840.10045.4.3.4" => (KeyKind::Ecdsa, Sha512),
        "2.16.840.1.101.3.4.3.9" => (KeyKind::Ecdsa, Sha3_224),
        "2.16.840.1.101.3.4.3.10" => (KeyKind::Ecdsa, Sha3_256),
        "2.16.840.1.101.3.4.3.11" => (KeyKind::Ecdsa, Sha3_384),
        "2.16.840.1.101.3.4.3.12" => (KeyKind::Ecdsa, Sha3_512),
        // The digest is not used by Ed25519; any value does.
        OID_ED25519 => (KeyKind::Ed25519, Sha512),
        "1.2.840.113549.1.1.5" | "1.2.840.10045.4.1" => {
            return Err("SHA-1 signatures are not accepted".into());
        }
        "1.2.840.113549.1.1.10" => return Err("RSASSA-PSS signatures are not supported".into()),
        other => return Err(format!("unsupported signature algorithm {other}")),
    })
}

/// A private key for [`crate::sign`].
pub(crate) enum PrivateKey {
    Rsa(Box<rsa::RsaPrivateKey>),
    P256(p256::ecdsa::SigningKey),
    P384(p384::ecdsa::SigningKey),
    Ed25519(ed25519_dalek::SigningKey),
}

/// Why a private key cannot be read.
pub(crate) fn parse_private_key_pem(text: &str) -> Result<PrivateKey, String> {
    let blocks = pem::parse_many(text).map_err(|e| format!("malformed PEM: {e}"))?;
    // `openssl ecparam -genkey` writes an `EC PARAMETERS` block first.
    let Some(block) = blocks.iter().find(|b| b.tag().ends_with("PRIVATE KEY")) else {
        return Err("no `PRIVATE KEY` PEM block found".into());
    };
    let encrypted = block.headers().get("Proc-Type").is_some_and(|v| v.contains("ENCRYPTED"));
    if encrypted || block.tag() == "ENCRYPTED PRIVATE KEY" {
        return Err("the key is encrypted: decrypt it first (`openssl pkey -in key.pem -out plain.pem`)".into());
    }
    let der = block.contents();
    match block.tag() {
        "RSA PRIVATE KEY" => rsa::RsaPrivateKey::from_pkcs1_der(der)
            .map(|k| PrivateKey::Rsa(Box::new(k)))
            .map_err(|e| format!("malformed RSA private key: {e}")),
        "EC PRIVATE KEY" => p256::SecretKey::from_sec1_der(der)
            .map(|k| PrivateKey::P256(k.into()))
            .or_else(|_| p384::SecretKey::from_sec1_der(der).map(|k| PrivateKey::P384(k.into())))
            .map_err(|_| "malformed EC private key, or a curve other than P-256 and P-384".to_string()),
        "PRIVATE KEY" => parse_pkcs8(der),
        other => Err(format!("unsupported PEM block `{other}`")),
    }
}

fn parse_pkcs8(der: &[u8]) -> Result<PrivateKey, String> {
    let info = pkcs8::PrivateKeyInfo::from_der(der).map_err(|e| format!("malformed PKCS#8 key: {e}"))?;
    match info.algorithm.oid.to_string().as_str() {
        OID_RSA => rsa::RsaPrivateKey::from_pkcs8_der(der)
            .map(|k| PrivateKey::Rsa(Box::new(k)))
            .map_err(|e| format!("malformed RSA private key: {e}")),
        OID_EC => {
            let curve = info.algorithm.parameters_oid().map(|o| o.to_string()).unwrap_or_default();
            match curve.as_str() {
                OID_P256 => p256::SecretKey::from_pkcs8_der(der)
                    .map(|k| PrivateKey::P256(k.into()))
                    .map_err(|e| format!("malformed P-256 key: {e}")),
                OID_P384 => p384::SecretKey::from_pkcs8_der(der)
                    .map(|k| PrivateKey::P384(k.into()))
                    .map_err(|e| format!("malformed P-384 key: {e}")),
                other => Err(format!("unsupported elliptic curve {other} (P-256 and P-384 are supported)")),
            }
        }
        OID_ED25519 => {
            // RFC 8410: the private key is an OCTET STRING inside the OCTET STRING.
            let seed = pkcs8::der::asn1::OctetStringRef::from_der(info.private_key)
                .map_err(|e| format!("malformed Ed25519 key: {e}"))?;
            let seed: &[u8; 32] = seed.as_bytes().try_into().map_err(|_| "malformed Ed25519 key".to_string())?;
            Ok(PrivateKey::Ed25519(ed25519_dalek::SigningKey::from_bytes(seed)))
        }
        other => Err(format!("unsupported private key algorithm {other} (RSA, ECDSA P-256/P-384 and Ed25519 are)")),
    }
}

impl PrivateKey {
    /// Signs as `openssl dgst -<digest> -sign` does (Ed25519: as `openssl
    /// pkeyutl -sign -rawin`, without a digest).
    pub(crate) fn sign(&self, digest: DigestAlgorithm, message: &[u8]) -> Result<Vec<u8>, String> {
        match self {
            PrivateKey::Rsa(key) => {
                // Blinded: `sign_with_rng` hides the private exponent's timing.
                let mut rng = rsa::rand_core::OsRng;
                key.sign_with_rng(&mut rng, pkcs1v15(digest), &digest.digest(message)).map_err(|e| e.to_string())
            }
            PrivateKey::P256(key) => {
                let sig: p256::ecdsa::Signature =
                    key.sign_prehash(&digest.digest(message)).map_err(|e| e.to_string())?;
                Ok(sig.to_der().as_bytes().to_vec())
            }
            PrivateKey::P384(key) => {
                let sig: p384::ecdsa::Signature =
                    key.sign_prehash(&digest.digest(message)).map_err(|e| e.to_string())?;
                Ok(sig.to_der().as_bytes().to_vec())
            }
            PrivateKey::Ed25519(key) => Ok(key.sign(message).to_bytes().to_vec()),
        }
    }
}
