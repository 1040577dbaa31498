//! Recipient public keys and private keys, read the ways ocicrypt's
//! `utils.ParsePublicKey` / `ParsePrivateKey` and openssl write them:
//!
//! * public: PEM `PUBLIC KEY` (SPKI), PEM `RSA PUBLIC KEY` (PKCS#1), DER
//!   SPKI, or a JWK (whose `alg` chooses the key management algorithm);
//! * private: PEM `PRIVATE KEY` (PKCS#8), `RSA PRIVATE KEY` (PKCS#1),
//!   `EC PRIVATE KEY` (SEC1, with or without openssl's `EC PARAMETERS`
//!   block before it), their DER forms, or a JWK with `d`.
//!
//! RSA (2048 bits and more) and EC P-256 and P-384. Password-protected keys
//! are refused with a message saying how to remove the password. Private
//! keys zeroize their memory when dropped (the `rsa`, `p256` and `p384`
//! types do) and never print their bytes.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey};
use rsa::pkcs1::{DecodeRsaPrivateKey, DecodeRsaPublicKey};
use rsa::traits::PublicKeyParts;
use zeroize::Zeroizing;

use crate::error::{key, CryptError};
use crate::jwe::KeyAlgorithm;

/// The largest key file read, in bytes.
pub const MAX_KEY_FILE: usize = 64 * 1024;
/// RSA keys shorter than this are refused.
pub const MIN_RSA_BITS: usize = 2048;

/// A public key a layer key can be wrapped to.
#[derive(Clone, Debug, PartialEq)]
pub enum PublicKey {
    /// RSA, for RSA-OAEP or RSA-OAEP-256.
    Rsa(rsa::RsaPublicKey),
    /// EC P-256, for ECDH-ES+A*KW.
    P256(p256::PublicKey),
    /// EC P-384, for ECDH-ES+A*KW.
    P384(p384::PublicKey),
}

/// A private key that may unwrap layer keys. Zeroized on drop.
#[derive(Clone)]
pub enum PrivateKey {
    /// RSA.
    Rsa(rsa::RsaPrivateKey),
    /// EC P-256.
    P256(p256::SecretKey),
    /// EC P-384.
    P384(p384::SecretKey),
}

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PrivateKey({})", self.describe())
    }
}

/// A recipient: a public key and the key management algorithm for it.
#[derive(Clone, Debug)]
pub struct Recipient {
    /// The key.
    pub key: PublicKey,
    /// How the content key is wrapped to it.
    pub algorithm: KeyAlgorithm,
}

impl Recipient {
    /// `key`, with the algorithm ocicrypt uses for it by default.
    pub fn to(key: PublicKey) -> Recipient {
        let algorithm = key.default_algorithm();
        Recipient { key, algorithm }
    }
}

impl PublicKey {
    /// What kind of key this is, e.g. `RSA-3072` or `EC P-256`.
    pub fn describe(&self) -> String {
        match self {
            PublicKey::Rsa(k) => format!("RSA-{}", k.size() * 8),
            PublicKey::P256(_) => "EC P-256".into(),
            PublicKey::P384(_) => "EC P-384".into(),
        }
    }

    /// The algorithm ocicrypt uses for this key when nothing chooses one:
    /// RSA-OAEP for RSA, ECDH-ES+A256KW for EC.
    pub fn default_algorithm(&self) -> KeyAlgorithm {
        match self {
            PublicKey::Rsa(_) => KeyAlgorithm::RsaOaep,
            _ => KeyAlgorithm::EcdhEsA256Kw,
        }
    }
}

impl PrivateKey {
    /// A fresh EC P-256 key (what sealpod uses for its own deployments).
    pub fn generate_p256() -> PrivateKey {
        PrivateKey::P256(p256::SecretKey::random(&mut rand_core::OsRng))
    }

    /// The matching public key.
    pub fn public_key(&self) -> PublicKey {
        match self {
            PrivateKey::Rsa(k) => PublicKey::Rsa(k.to_public_key()),
            PrivateKey::P256(k) => PublicKey::P256(k.public_key()),
            PrivateKey::P384(k) => PublicKey::P384(k.public_key()),
        }
    }

    /// What kind of key this is.
    pub fn describe(&self) -> String {
        self.public_key().describe()
    }

    /// PKCS#8 PEM, in zeroizing memory.
    pub fn to_pkcs8_pem(&self) -> Result<Zeroizing<String>, CryptError> {
        let der = match self {
            PrivateKey::Rsa(k) => k.to_pkcs8_der(),
            PrivateKey::P256(k) => k.to_pkcs8_der(),
            PrivateKey::P384(k) => k.to_pkcs8_der(),
        }
        .map_err(|e| key(format!("encoding the private key: {e}")))?;
        let block = pem::Pem::new("PRIVATE KEY", der.as_bytes().to_vec());
        let text = Zeroizing::new(pem::encode(&block));
        // `Pem` keeps a copy of the DER: clear it before it is freed.
        let mut contents = block.into_contents();
        zeroize::Zeroize::zeroize(&mut contents);
        Ok(text)
    }

    /// The public key as SPKI PEM, as `openssl pkey -pubout` writes it.
    pub fn public_key_pem(&self) -> Result<String, CryptError> {
        use pkcs8::EncodePublicKey;
        let der = match self.public_key() {
            PublicKey::Rsa(k) => k.to_public_key_der(),
            PublicKey::P256(k) => k.to_public_key_der(),
            PublicKey::P384(k) => k.to_public_key_der(),
        }
        .map_err(|e| key(format!("encoding the public key: {e}")))?;
        Ok(pem::encode(&pem::Pem::new("PUBLIC KEY", der.as_bytes().to_vec())))
    }
}

fn check_rsa_size(bits: usize) -> Result<(), CryptError> {
    if bits < MIN_RSA_BITS {
        return Err(key(format!("RSA key of {bits} bits: at least {MIN_RSA_BITS} are required")));
    }
    Ok(())
}

fn public_from_spki(der: &[u8]) -> Result<PublicKey, CryptError> {
    if let Ok(k) = rsa::RsaPublicKey::from_public_key_der(der) {
        check_rsa_size(k.size() * 8)?;
        return Ok(PublicKey::Rsa(k));
    }
    if let Ok(k) = p256::PublicKey::from_public_key_der(der) {
        return Ok(PublicKey::P256(k));
    }
    if let Ok(k) = p384::PublicKey::from_public_key_der(der) {
        return Ok(PublicKey::P384(k));
    }
    Err(key("not an RSA, EC P-256 or EC P-384 public key (SPKI)"))
}

/// The PEM blocks of `bytes`, if it is PEM text.
fn pem_blocks(bytes: &[u8]) -> Option<Vec<pem::Pem>> {
    let text = std::str::from_utf8(bytes).ok()?;
    if !text.contains("-----BEGIN ") {
        return None;
    }
    pem::parse_many(text).ok().filter(|b| !b.is_empty())
}

/// Reads a recipient's public key (PEM, DER or JWK; see the module docs).
pub fn parse_public_key(bytes: &[u8]) -> Result<Recipient, CryptError> {
    if bytes.len() > MAX_KEY_FILE {
        return Err(key(format!("a key file of {} bytes (at most {MAX_KEY_FILE})", bytes.len())));
    }
    let trimmed = trim_ascii(bytes);
    if trimmed.starts_with(b"{") {
        return jwk_public(trimmed);
    }
    let public = match pem_blocks(bytes) {
        Some(blocks) => {
            let block =
                blocks.iter().find(|b| b.tag() != "EC PARAMETERS").ok_or_else(|| key("the PEM file holds no key"))?;
            match block.tag() {
                "PUBLIC KEY" => public_from_spki(block.contents())?,
                "RSA PUBLIC KEY" => {
                    let k = rsa::RsaPublicKey::from_pkcs1_der(block.contents())
                        .map_err(|e| key(format!("RSA PUBLIC KEY: {e}")))?;
                    check_rsa_size(k.size() * 8)?;
                    PublicKey::Rsa(k)
                }
                "CERTIFICATE" => {
                    return Err(key("a certificate is a pkcs7: recipient, which sealpod does not support; give the \
                         public key (openssl x509 -pubkey -noout)"))
                }
                t if t.contains("PRIVATE KEY") => {
                    return Err(key(format!("this is a private key ({t}); a recipient is a public key")))
                }
                t => return Err(key(format!("PEM block {t:?} is not a public key"))),
            }
        }
        None => public_from_spki(bytes)?,
    };
    Ok(Recipient::to(public))
}

/// Reads a private key (PEM, DER or JWK; see the module docs).
pub fn parse_private_key(bytes: &[u8]) -> Result<PrivateKey, CryptError> {
    if bytes.len() > MAX_KEY_FILE {
        return Err(key(format!("a key file of {} bytes (at most {MAX_KEY_FILE})", bytes.len())));
    }
    let trimmed = trim_ascii(bytes);
    if trimmed.starts_with(b"{") {
        return jwk_private(trimmed);
    }
    let Some(blocks) = pem_blocks(bytes) else { return private_from_der(bytes) };
    let block = blocks.iter().find(|b| b.tag() != "EC PARAMETERS").ok_or_else(|| key("the PEM file holds no key"))?;
    if block.tag() == "ENCRYPTED PRIVATE KEY"
        || block.headers().get("Proc-Type").is_some_and(|v| v.contains("ENCRYPTED"))
    {
        return Err(key("the private key is password-protected, which sealpod does not support; remove the password \
             (openssl pkcs8 -topk8 -nocrypt -in KEY -out KEY.plain)"));
    }
    let der = Zeroizing::new(block.contents().to_vec());
    let parsed = match block.tag() {
        "PRIVATE KEY" => pkcs8_private(&der),
        "RSA PRIVATE KEY" => rsa::RsaPrivateKey::from_pkcs1_der(&der)
            .map_err(|e| key(format!("RSA PRIVATE KEY: {e}")))
            .and_then(rsa_private),
        "EC PRIVATE KEY" => sec1_private(&der),
        t if t.contains("PUBLIC KEY") => {
            Err(key(format!("this is a public key ({t}); decrypting needs the private key")))
        }
        t => Err(key(format!("PEM block {t:?} is not a private key"))),
    };
    // `blocks` holds copies of the key's DER: clear them.
    for b in blocks {
        let mut c = b.into_contents();
        zeroize::Zeroize::zeroize(&mut c);
    }
    parsed
}

fn rsa_private(k: rsa::RsaPrivateKey) -> Result<PrivateKey, CryptError> {
    check_rsa_size(k.size() * 8)?;
    k.validate().map_err(|e| key(format!("RSA private key: {e}")))?;
    Ok(PrivateKey::Rsa(k))
}

fn pkcs8_private(der: &[u8]) -> Result<PrivateKey, CryptError> {
    if let Ok(k) = rsa::RsaPrivateKey::from_pkcs8_der(der) {
        return rsa_private(k);
    }
    if let Ok(k) = p256::SecretKey::from_pkcs8_der(der) {
        return Ok(PrivateKey::P256(k));
    }
    if let Ok(k) = p384::SecretKey::from_pkcs8_der(der) {
        return Ok(PrivateKey::P384(k));
    }
    Err(key("PRIVATE KEY: not an RSA, EC P-256 or EC P-384 key (PKCS#8)"))
}

fn sec1_private(der: &[u8]) -> Result<PrivateKey, CryptError> {
    if let Ok(k) = p256::SecretKey::from_sec1_der(der) {
        return Ok(PrivateKey::P256(k));
    }
    if let Ok(k) = p384::SecretKey::from_sec1_der(der) {
        return Ok(PrivateKey::P384(k));
    }
    Err(key("EC PRIVATE KEY: not a P-256 or P-384 key (SEC1)"))
}

fn private_from_der(der: &[u8]) -> Result<PrivateKey, CryptError> {
    pkcs8_private(der)
        .or_else(|_| rsa::RsaPrivateKey::from_pkcs1_der(der).map_err(|e| key(e.to_string())).and_then(rsa_private))
        .or_else(|_| sec1_private(der))
        .map_err(|_| key("not a PEM or DER private key (PKCS#8, PKCS#1 or SEC1) nor a JWK"))
}

fn trim_ascii(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(bytes.len());
    let end = bytes.iter().rposition(|b| !b.is_ascii_whitespace()).map_or(start, |e| e + 1);
    &bytes[start..end]
}

// ---------------------------------------------------------------------------
// JWK (RFC 7517/7518), the form ocicrypt also accepts for recipients.

#[derive(serde::Deserialize)]
struct Jwk {
    kty: String,
    crv: Option<String>,
    x: Option<String>,
    y: Option<String>,
    n: Option<String>,
    e: Option<String>,
    d: Option<String>,
    alg: Option<String>,
}

fn b64url(field: &str, value: &Option<String>) -> Result<Zeroizing<Vec<u8>>, CryptError> {
    let v = value.as_deref().ok_or_else(|| key(format!("JWK has no {field:?}")))?;
    URL_SAFE_NO_PAD.decode(v).map(Zeroizing::new).map_err(|e| key(format!("JWK {field:?} is not base64url: {e}")))
}

/// An uncompressed SEC1 point from JWK coordinates of `size` bytes each.
fn ec_point(jwk: &Jwk, size: usize) -> Result<Vec<u8>, CryptError> {
    let (x, y) = (b64url("x", &jwk.x)?, b64url("y", &jwk.y)?);
    if x.len() != size || y.len() != size {
        return Err(key(format!("JWK coordinates must be {size} bytes each")));
    }
    Ok([&[4u8][..], &x, &y].concat())
}

fn parse_jwk(bytes: &[u8]) -> Result<Jwk, CryptError> {
    serde_json::from_slice(bytes).map_err(|e| key(format!("JWK: {e}")))
}

fn jwk_public(bytes: &[u8]) -> Result<Recipient, CryptError> {
    let jwk = parse_jwk(bytes)?;
    let public = match (jwk.kty.as_str(), jwk.crv.as_deref()) {
        ("RSA", _) => {
            let n = rsa::BigUint::from_bytes_be(&b64url("n", &jwk.n)?);
            let e = rsa::BigUint::from_bytes_be(&b64url("e", &jwk.e)?);
            let k = rsa::RsaPublicKey::new(n, e).map_err(|e| key(format!("JWK RSA key: {e}")))?;
            check_rsa_size(k.size() * 8)?;
            PublicKey::Rsa(k)
        }
        ("EC", Some("P-256")) => PublicKey::P256(
            p256::PublicKey::from_sec1_bytes(&ec_point(&jwk, 32)?).map_err(|_| key("JWK: not a P-256 point"))?,
        ),
        ("EC", Some("P-384")) => PublicKey::P384(
            p384::PublicKey::from_sec1_bytes(&ec_point(&jwk, 48)?).map_err(|_| key("JWK: not a P-384 point"))?,
        ),
        (kty, crv) => return Err(key(format!("JWK kty {kty:?} crv {crv:?}: only RSA, EC P-256 and EC P-384"))),
    };
    let algorithm = match jwk.alg.as_deref() {
        None | Some("") => public.default_algorithm(),
        Some(alg) => {
            let a = KeyAlgorithm::parse(alg)?;
            if a.is_rsa() != matches!(public, PublicKey::Rsa(_)) {
                return Err(key(format!("JWK alg {alg} does not fit a {} key", public.describe())));
            }
            a
        }
    };
    Ok(Recipient { key: public, algorithm })
}

fn jwk_private(bytes: &[u8]) -> Result<PrivateKey, CryptError> {
    let jwk = parse_jwk(bytes)?;
    let d = b64url("d", &jwk.d)?;
    match (jwk.kty.as_str(), jwk.crv.as_deref()) {
        ("EC", Some("P-256")) => {
            p256::SecretKey::from_slice(&d).map(PrivateKey::P256).map_err(|_| key("JWK: not a P-256 private key"))
        }
        ("EC", Some("P-384")) => {
            p384::SecretKey::from_slice(&d).map(PrivateKey::P384).map_err(|_| key("JWK: not a P-384 private key"))
        }
        (kty, crv) => Err(key(format!("JWK private key kty {kty:?} crv {crv:?}: only EC P-256 and P-384 as JWK"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_round_trip_through_pem() {
        let k = PrivateKey::generate_p256();
        let pem = k.to_pkcs8_pem().unwrap();
        let back = parse_private_key(pem.as_bytes()).unwrap();
        assert_eq!(back.public_key(), k.public_key());
        let recipient = parse_public_key(k.public_key_pem().unwrap().as_bytes()).unwrap();
        assert_eq!(recipient.key, k.public_key());
        assert_eq!(recipient.algorithm, KeyAlgorithm::EcdhEsA256Kw);
        assert!(!format!("{back:?}").contains(pem.lines().nth(1).unwrap()));
    }

    #[test]
    fn wrong_kinds_of_file_say_what_they_are() {
        let k = PrivateKey::generate_p256();
        let err = parse_public_key(k.to_pkcs8_pem().unwrap().as_bytes()).unwrap_err().to_string();
        assert!(err.contains("private key"), "{err}");
        let err = parse_private_key(k.public_key_pem().unwrap().as_bytes()).unwrap_err().to_string();
        assert!(err.contains("public key"), "{err}");
        let enc = "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n";
        let err = parse_private_key(enc.as_bytes()).unwrap_err().to_string();
        assert!(err.contains("password"), "{err}");
        assert!(parse_private_key(b"garbage").is_err());
        assert!(parse_public_key(&[0u8; MAX_KEY_FILE + 1]).is_err());
    }

    #[test]
    fn jwk_alg_chooses_the_algorithm() {
        let k = PrivateKey::generate_p256();
        let PublicKey::P256(p) = k.public_key() else { unreachable!() };
        let point = p.to_sec1_bytes();
        let (x, y) = (URL_SAFE_NO_PAD.encode(&point[1..33]), URL_SAFE_NO_PAD.encode(&point[33..]));
        let jwk = format!(r#"{{"kty":"EC","crv":"P-256","x":"{x}","y":"{y}","alg":"ECDH-ES+A128KW"}}"#);
        assert_eq!(parse_public_key(jwk.as_bytes()).unwrap().algorithm, KeyAlgorithm::EcdhEsA128Kw);
        let bad = format!(r#"{{"kty":"EC","crv":"P-256","x":"{x}","y":"{y}","alg":"RSA-OAEP"}}"#);
        assert!(parse_public_key(bad.as_bytes()).is_err());
    }
}
