//! JSON Web Encryption (RFC 7516) as ocicrypt's JWE key wrapper uses it
//! through go-jose: the private layer options encrypted with `A256GCM`
//! under a random content key, that key wrapped once per recipient.
//!
//! * Key management (RFC 7518 §4): `RSA-OAEP` (SHA-1), `RSA-OAEP-256`,
//!   `ECDH-ES+A128KW`, `ECDH-ES+A192KW`, `ECDH-ES+A256KW` (Concat KDF with
//!   SHA-256 over the x coordinate, `apu`/`apv` honoured, AES key wrap).
//! * Content encryption: `A128GCM`, `A192GCM`, `A256GCM` on reading;
//!   `A256GCM` on writing, as ocicrypt does. `A*CBC-HS*`, `zip` and `crit`
//!   are refused by name.
//! * Serialization as go-jose's `FullSerialize` writes it: one recipient
//!   gives the Flattened JSON form with `alg` (and `epk`) in the protected
//!   header; several give the General JSON form with per-recipient headers
//!   and go-jose's redundant top-level `encrypted_key` (recipient 0's).
//!   Reading accepts both, with or without that extra field, and refuses a
//!   header parameter given twice across the protected, shared and
//!   per-recipient headers (RFC 7516 §7.2.1).
//!
//! Written from RustCrypto parts (`rsa`, `p256`, `p384`, `aes-kw`,
//! `aes-gcm`, `sha1`, `sha2`) because no crate does General JSON with these
//! algorithms in pure Rust: `josekit` needs OpenSSL, `biscuit` lacks RSA and
//! ECDH key management, `jwt-simple` does compact JWTs only.

use aes_gcm::aead::consts::U12;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::AesGcm;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::error::{jwe, CryptError};
use crate::keys::{PrivateKey, PublicKey, Recipient};

/// The largest JWE read, in bytes.
pub const MAX_JWE: usize = 1 << 20;
/// Most recipients in one JWE.
pub const MAX_RECIPIENTS: usize = 256;

/// A key management algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyAlgorithm {
    /// RSAES-OAEP with SHA-1 and MGF1-SHA-1.
    RsaOaep,
    /// RSAES-OAEP with SHA-256 and MGF1-SHA-256.
    RsaOaep256,
    /// ECDH-ES, then AES-128 key wrap.
    EcdhEsA128Kw,
    /// ECDH-ES, then AES-192 key wrap.
    EcdhEsA192Kw,
    /// ECDH-ES, then AES-256 key wrap.
    EcdhEsA256Kw,
}

impl KeyAlgorithm {
    /// The `alg` value.
    pub fn name(self) -> &'static str {
        match self {
            KeyAlgorithm::RsaOaep => "RSA-OAEP",
            KeyAlgorithm::RsaOaep256 => "RSA-OAEP-256",
            KeyAlgorithm::EcdhEsA128Kw => "ECDH-ES+A128KW",
            KeyAlgorithm::EcdhEsA192Kw => "ECDH-ES+A192KW",
            KeyAlgorithm::EcdhEsA256Kw => "ECDH-ES+A256KW",
        }
    }

    /// Reads an `alg` value, naming what is not supported.
    pub fn parse(alg: &str) -> Result<KeyAlgorithm, CryptError> {
        Ok(match alg {
            "RSA-OAEP" => KeyAlgorithm::RsaOaep,
            "RSA-OAEP-256" => KeyAlgorithm::RsaOaep256,
            "ECDH-ES+A128KW" => KeyAlgorithm::EcdhEsA128Kw,
            "ECDH-ES+A192KW" => KeyAlgorithm::EcdhEsA192Kw,
            "ECDH-ES+A256KW" => KeyAlgorithm::EcdhEsA256Kw,
            other => {
                return Err(jwe(format!(
                    "unsupported alg {other:?} (supported: RSA-OAEP, RSA-OAEP-256, ECDH-ES+A128KW, ECDH-ES+A192KW, \
                     ECDH-ES+A256KW)"
                )))
            }
        })
    }

    /// Whether the algorithm takes an RSA key.
    pub fn is_rsa(self) -> bool {
        matches!(self, KeyAlgorithm::RsaOaep | KeyAlgorithm::RsaOaep256)
    }

    fn kek_len(self) -> usize {
        match self {
            KeyAlgorithm::EcdhEsA128Kw => 16,
            KeyAlgorithm::EcdhEsA192Kw => 24,
            _ => 32,
        }
    }
}

/// A content encryption algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Enc {
    A128Gcm,
    A192Gcm,
    A256Gcm,
}

impl Enc {
    fn parse(enc: &str) -> Result<Enc, CryptError> {
        Ok(match enc {
            "A128GCM" => Enc::A128Gcm,
            "A192GCM" => Enc::A192Gcm,
            "A256GCM" => Enc::A256Gcm,
            other => return Err(jwe(format!("unsupported enc {other:?} (supported: A128GCM, A192GCM, A256GCM)"))),
        })
    }

    fn key_len(self) -> usize {
        match self {
            Enc::A128Gcm => 16,
            Enc::A192Gcm => 24,
            Enc::A256Gcm => 32,
        }
    }

    /// Decrypts `ciphertext || tag`.
    fn open(self, cek: &[u8], iv: &[u8], msg: &[u8], aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, ()> {
        fn run<C: KeyInit + Aead>(cek: &[u8], iv: &[u8], msg: &[u8], aad: &[u8]) -> Result<Vec<u8>, ()> {
            let c = C::new_from_slice(cek).map_err(drop)?;
            c.decrypt(iv.into(), Payload { msg, aad }).map_err(drop)
        }
        if iv.len() != 12 {
            return Err(());
        }
        match self {
            Enc::A128Gcm => run::<AesGcm<aes::Aes128, U12>>(cek, iv, msg, aad),
            Enc::A192Gcm => run::<AesGcm<aes::Aes192, U12>>(cek, iv, msg, aad),
            Enc::A256Gcm => run::<AesGcm<aes::Aes256, U12>>(cek, iv, msg, aad),
        }
        .map(Zeroizing::new)
    }
}

/// An ephemeral EC public key in a header (`epk`).
#[derive(Serialize, Deserialize)]
struct EpkJwk {
    kty: String,
    crv: String,
    x: String,
    y: String,
}

/// A recipient's header as go-jose writes it (keys in sorted order).
#[derive(Serialize)]
struct WrittenHeader<'a> {
    alg: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    enc: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    epk: Option<EpkJwk>,
}

#[derive(Serialize)]
struct WrittenRecipient<'a> {
    header: WrittenHeader<'a>,
    encrypted_key: String,
}

#[derive(Serialize)]
struct Written<'a> {
    protected: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    recipients: Option<Vec<WrittenRecipient<'a>>>,
    encrypted_key: String,
    iv: String,
    ciphertext: String,
    tag: String,
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Concat KDF (NIST SP 800-56A §5.8.1) with SHA-256 as RFC 7518 §4.6.2
/// parameterises it.
fn concat_kdf(z: &[u8], alg: &str, apu: &[u8], apv: &[u8], len: usize) -> Zeroizing<Vec<u8>> {
    let mut other = Vec::new();
    for part in [alg.as_bytes(), apu, apv] {
        other.extend_from_slice(&(part.len() as u32).to_be_bytes());
        other.extend_from_slice(part);
    }
    other.extend_from_slice(&((len * 8) as u32).to_be_bytes());
    let mut out = Zeroizing::new(Vec::with_capacity(len + 32));
    let mut counter = 1u32;
    while out.len() < len {
        let mut h = Sha256::new();
        h.update(counter.to_be_bytes());
        h.update(z);
        h.update(&other);
        out.extend_from_slice(&h.finalize());
        counter += 1;
    }
    out.truncate(len);
    out
}

fn kw_wrap(kek: &[u8], cek: &[u8]) -> Result<Vec<u8>, CryptError> {
    let fail = |e: aes_kw::Error| jwe(format!("AES key wrap: {e}"));
    match kek.len() {
        16 => aes_kw::KekAes128::new(kek.into()).wrap_vec(cek).map_err(fail),
        24 => aes_kw::KekAes192::new(kek.into()).wrap_vec(cek).map_err(fail),
        _ => aes_kw::KekAes256::new(kek.into()).wrap_vec(cek).map_err(fail),
    }
}

fn kw_unwrap(kek: &[u8], wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptError> {
    let fail = |_| jwe("AES key unwrap failed: not this recipient's key, or the wrapped key was altered");
    match kek.len() {
        16 => aes_kw::KekAes128::new(kek.into()).unwrap_vec(wrapped),
        24 => aes_kw::KekAes192::new(kek.into()).unwrap_vec(wrapped),
        _ => aes_kw::KekAes256::new(kek.into()).unwrap_vec(wrapped),
    }
    .map(Zeroizing::new)
    .map_err(fail)
}

fn random_bytes(n: usize) -> Zeroizing<Vec<u8>> {
    let mut v = Zeroizing::new(vec![0u8; n]);
    crate::random(&mut v);
    v
}

/// Wraps `cek` for one recipient: the encrypted key and the header
/// parameters (`epk`) the recipient needs.
fn wrap_for(recipient: &Recipient, cek: &[u8]) -> Result<(Vec<u8>, Option<EpkJwk>), CryptError> {
    let alg = recipient.algorithm;
    let mismatch = || jwe(format!("alg {} cannot wrap to a {} key", alg.name(), recipient.key.describe()));
    match (&recipient.key, alg) {
        (PublicKey::Rsa(k), KeyAlgorithm::RsaOaep) => k
            .encrypt(&mut rand_core::OsRng, rsa::Oaep::new::<sha1::Sha1>(), cek)
            .map(|c| (c, None))
            .map_err(|e| jwe(format!("RSA-OAEP: {e}"))),
        (PublicKey::Rsa(k), KeyAlgorithm::RsaOaep256) => k
            .encrypt(&mut rand_core::OsRng, rsa::Oaep::new::<Sha256>(), cek)
            .map(|c| (c, None))
            .map_err(|e| jwe(format!("RSA-OAEP-256: {e}"))),
        (PublicKey::Rsa(_), _) => Err(mismatch()),
        (_, a) if a.is_rsa() => Err(mismatch()),
        (PublicKey::P256(k), _) => {
            let eph = p256::ecdh::EphemeralSecret::random(&mut rand_core::OsRng);
            let z = eph.diffie_hellman(k);
            let point = p256::EncodedPoint::from(eph.public_key());
            let kek = concat_kdf(z.raw_secret_bytes(), alg.name(), &[], &[], alg.kek_len());
            let epk = epk("P-256", point.x(), point.y());
            Ok((kw_wrap(&kek, cek)?, Some(epk)))
        }
        (PublicKey::P384(k), _) => {
            let eph = p384::ecdh::EphemeralSecret::random(&mut rand_core::OsRng);
            let z = eph.diffie_hellman(k);
            let point = p384::EncodedPoint::from(eph.public_key());
            let kek = concat_kdf(z.raw_secret_bytes(), alg.name(), &[], &[], alg.kek_len());
            let epk = epk("P-384", point.x(), point.y());
            Ok((kw_wrap(&kek, cek)?, Some(epk)))
        }
    }
}

fn epk(crv: &str, x: Option<&impl AsRef<[u8]>>, y: Option<&impl AsRef<[u8]>>) -> EpkJwk {
    EpkJwk {
        kty: "EC".into(),
        crv: crv.into(),
        x: x.map(|v| b64(v.as_ref())).unwrap_or_default(),
        y: y.map(|v| b64(v.as_ref())).unwrap_or_default(),
    }
}

/// Encrypts `plaintext` to every recipient, as go-jose's `FullSerialize`
/// writes it (see the module docs).
pub fn seal(plaintext: &[u8], recipients: &[Recipient]) -> Result<String, CryptError> {
    if recipients.is_empty() {
        return Err(jwe("no recipients"));
    }
    if recipients.len() > MAX_RECIPIENTS {
        return Err(jwe(format!("{} recipients, at most {MAX_RECIPIENTS}", recipients.len())));
    }
    let cek = random_bytes(32);
    let iv = random_bytes(12);
    let mut headers = Vec::with_capacity(recipients.len());
    let mut keys = Vec::with_capacity(recipients.len());
    for r in recipients {
        let (key, epk) = wrap_for(r, &cek)?;
        headers.push(WrittenHeader { alg: r.algorithm.name(), enc: None, epk });
        keys.push(b64(&key));
    }
    let single = recipients.len() == 1;
    let protected = if single {
        // go-jose moves a lone recipient's header into the protected one.
        let mut h = headers.pop().expect("one recipient");
        h.enc = Some("A256GCM");
        serde_json::to_vec(&h)
    } else {
        serde_json::to_vec(&serde_json::json!({"enc": "A256GCM"}))
    }
    .expect("headers serialize");
    let protected = b64(&protected);
    let cipher = AesGcm::<aes::Aes256, U12>::new_from_slice(&cek).expect("32-byte key");
    let mut sealed = cipher
        .encrypt(iv.as_slice().into(), Payload { msg: plaintext, aad: protected.as_bytes() })
        .map_err(|_| jwe("A256GCM encryption failed"))?;
    let tag = sealed.split_off(sealed.len() - 16);
    let first = keys[0].clone();
    let recipients = (!single).then(|| {
        headers
            .into_iter()
            .zip(keys)
            .map(|(header, encrypted_key)| WrittenRecipient { header, encrypted_key })
            .collect()
    });
    let written =
        Written { protected, recipients, encrypted_key: first, iv: b64(&iv), ciphertext: b64(&sealed), tag: b64(&tag) };
    Ok(serde_json::to_string(&written).expect("JWE serializes"))
}

// ---------------------------------------------------------------------------
// Reading.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRecipient {
    header: Option<Map<String, Value>>,
    encrypted_key: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    protected: Option<String>,
    unprotected: Option<Map<String, Value>>,
    header: Option<Map<String, Value>>,
    recipients: Option<Vec<RawRecipient>>,
    aad: Option<String>,
    encrypted_key: Option<String>,
    iv: String,
    ciphertext: String,
    tag: String,
}

fn unb64(field: &str, value: &str) -> Result<Vec<u8>, CryptError> {
    URL_SAFE_NO_PAD.decode(value).map_err(|e| jwe(format!("{field} is not base64url: {e}")))
}

/// The protected, shared and per-recipient headers merged, refusing a
/// parameter that appears in more than one.
fn merge(parts: &[Option<&Map<String, Value>>]) -> Result<Map<String, Value>, CryptError> {
    let mut out = Map::new();
    for part in parts.iter().flatten() {
        for (k, v) in part.iter() {
            if out.insert(k.clone(), v.clone()).is_some() {
                return Err(jwe(format!("header parameter {k:?} is given more than once")));
            }
        }
    }
    Ok(out)
}

fn header_str<'a>(h: &'a Map<String, Value>, name: &str) -> Result<Option<&'a str>, CryptError> {
    match h.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(jwe(format!("header parameter {name:?} is not a string"))),
    }
}

/// One recipient, ready to try keys on.
struct Wrapped {
    alg: KeyAlgorithm,
    encrypted_key: Vec<u8>,
    epk: Option<EpkJwk>,
    apu: Vec<u8>,
    apv: Vec<u8>,
}

fn unwrap_with(w: &Wrapped, key: &PrivateKey) -> Result<Zeroizing<Vec<u8>>, CryptError> {
    let shared = |crv: &str, size: usize| -> Result<Vec<u8>, CryptError> {
        let epk = w.epk.as_ref().ok_or_else(|| jwe(format!("{} without epk", w.alg.name())))?;
        if epk.kty != "EC" || epk.crv != crv {
            return Err(jwe(format!("epk is {} {}, the key is {crv}", epk.kty, epk.crv)));
        }
        let (x, y) = (unb64("epk.x", &epk.x)?, unb64("epk.y", &epk.y)?);
        if x.len() != size || y.len() != size {
            return Err(jwe(format!("epk coordinates must be {size} bytes")));
        }
        Ok([&[4u8][..], &x, &y].concat())
    };
    let kek = |z: &[u8]| concat_kdf(z, w.alg.name(), &w.apu, &w.apv, w.alg.kek_len());
    match (key, w.alg) {
        (PrivateKey::Rsa(k), KeyAlgorithm::RsaOaep) => k
            .decrypt_blinded(&mut rand_core::OsRng, rsa::Oaep::new::<sha1::Sha1>(), &w.encrypted_key)
            .map(Zeroizing::new)
            .map_err(|_| jwe("RSA-OAEP decryption failed: not this recipient's key")),
        (PrivateKey::Rsa(k), KeyAlgorithm::RsaOaep256) => k
            .decrypt_blinded(&mut rand_core::OsRng, rsa::Oaep::new::<Sha256>(), &w.encrypted_key)
            .map(Zeroizing::new)
            .map_err(|_| jwe("RSA-OAEP-256 decryption failed: not this recipient's key")),
        (PrivateKey::P256(k), a) if !a.is_rsa() => {
            // `from_sec1_bytes` checks the point is on the curve (no
            // invalid-curve attack on our key).
            let p = p256::PublicKey::from_sec1_bytes(&shared("P-256", 32)?)
                .map_err(|_| jwe("epk is not a point on P-256"))?;
            let z = p256::ecdh::diffie_hellman(k.to_nonzero_scalar(), p.as_affine());
            kw_unwrap(&kek(z.raw_secret_bytes()), &w.encrypted_key)
        }
        (PrivateKey::P384(k), a) if !a.is_rsa() => {
            let p = p384::PublicKey::from_sec1_bytes(&shared("P-384", 48)?)
                .map_err(|_| jwe("epk is not a point on P-384"))?;
            let z = p384::ecdh::diffie_hellman(k.to_nonzero_scalar(), p.as_affine());
            kw_unwrap(&kek(z.raw_secret_bytes()), &w.encrypted_key)
        }
        (k, a) => Err(jwe(format!("alg {} does not take a {} key", a.name(), k.describe()))),
    }
}

/// Decrypts a JWE (Flattened or General JSON) with the first of `keys`
/// that is one of its recipients.
pub fn open(input: &[u8], keys: &[PrivateKey]) -> Result<Zeroizing<Vec<u8>>, CryptError> {
    if input.len() > MAX_JWE {
        return Err(jwe(format!("{} bytes, at most {MAX_JWE}", input.len())));
    }
    if keys.is_empty() {
        return Err(jwe("no private keys given"));
    }
    let raw: Raw = serde_json::from_slice(input).map_err(|e| jwe(format!("not a JWE in JSON form: {e}")))?;
    let protected_b64 = raw.protected.clone().unwrap_or_default();
    let protected: Option<Map<String, Value>> = match &raw.protected {
        Some(p) => Some(
            serde_json::from_slice(&unb64("protected", p)?)
                .map_err(|e| jwe(format!("protected header is not a JSON object: {e}")))?,
        ),
        None => None,
    };
    let recipients = match (&raw.recipients, &raw.header) {
        (Some(_), Some(_)) => return Err(jwe("both \"recipients\" and a flattened \"header\"")),
        (Some(list), None) => {
            if list.is_empty() || list.len() > MAX_RECIPIENTS {
                return Err(jwe(format!("{} recipients (1 to {MAX_RECIPIENTS})", list.len())));
            }
            // go-jose also writes recipient 0's key at the top: tolerated
            // when it is just that.
            if let Some(top) = &raw.encrypted_key {
                if list[0].encrypted_key.as_ref() != Some(top) {
                    return Err(jwe("top-level encrypted_key differs from the first recipient's"));
                }
            }
            list.iter().map(|r| (r.header.as_ref(), r.encrypted_key.clone())).collect::<Vec<_>>()
        }
        (None, header) => vec![(header.as_ref(), raw.encrypted_key.clone())],
    };

    let mut enc = None;
    let mut wrapped = Vec::with_capacity(recipients.len());
    for (i, (header, key)) in recipients.into_iter().enumerate() {
        let h = merge(&[protected.as_ref(), raw.unprotected.as_ref(), header])?;
        for refused in ["zip", "crit"] {
            if h.contains_key(refused) {
                return Err(jwe(format!("header parameter {refused:?} is not supported")));
            }
        }
        let this_enc = Enc::parse(header_str(&h, "enc")?.ok_or_else(|| jwe("no \"enc\""))?)?;
        if enc.is_some_and(|e| e != this_enc) {
            return Err(jwe("recipients disagree on \"enc\""));
        }
        enc = Some(this_enc);
        let alg =
            KeyAlgorithm::parse(header_str(&h, "alg")?.ok_or_else(|| jwe(format!("recipient {i} has no \"alg\"")))?)?;
        let epk = match h.get("epk") {
            Some(v) => Some(serde_json::from_value(v.clone()).map_err(|e| jwe(format!("epk: {e}")))?),
            None => None,
        };
        let opt = |name: &str| -> Result<Vec<u8>, CryptError> {
            header_str(&h, name)?.map(|v| unb64(name, v)).transpose().map(Option::unwrap_or_default)
        };
        let encrypted_key = unb64("encrypted_key", key.as_deref().unwrap_or_default())?;
        wrapped.push(Wrapped { alg, encrypted_key, epk, apu: opt("apu")?, apv: opt("apv")? });
    }
    let enc = enc.expect("at least one recipient");

    let mut aad = protected_b64.into_bytes();
    if let Some(extra) = &raw.aad {
        aad.push(b'.');
        aad.extend_from_slice(extra.as_bytes());
    }
    let iv = unb64("iv", &raw.iv)?;
    let mut msg = unb64("ciphertext", &raw.ciphertext)?;
    let tag = unb64("tag", &raw.tag)?;
    if tag.len() != 16 {
        return Err(jwe(format!("tag of {} bytes, GCM needs 16", tag.len())));
    }
    if iv.len() != 12 {
        return Err(jwe(format!("iv of {} bytes, GCM needs 12", iv.len())));
    }
    msg.extend_from_slice(&tag);

    let mut tried = Vec::new();
    for w in &wrapped {
        for key in keys {
            if w.alg.is_rsa() != matches!(key, PrivateKey::Rsa(_)) {
                continue;
            }
            match unwrap_with(w, key) {
                Ok(cek) => {
                    if cek.len() != enc.key_len() {
                        return Err(jwe(format!(
                            "the unwrapped content key is {} bytes, {:?} needs {}",
                            cek.len(),
                            enc,
                            enc.key_len()
                        )));
                    }
                    return enc
                        .open(&cek, &iv, &msg, &aad)
                        .map_err(|()| jwe("authentication tag mismatch: the JWE was altered after it was made"));
                }
                Err(e) => tried.push(format!("{} with {}: {e}", w.alg.name(), key.describe())),
            }
        }
    }
    let algs: Vec<&str> = wrapped.iter().map(|w| w.alg.name()).collect();
    Err(CryptError::NoRecipient {
        keys: keys.len(),
        tried: if tried.is_empty() {
            format!("the recipients use {}, which none of the keys fits", algs.join(", "))
        } else {
            tried.join("; ")
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::parse_public_key;

    fn recipient(k: &PrivateKey, alg: KeyAlgorithm) -> Recipient {
        Recipient { key: k.public_key(), algorithm: alg }
    }

    #[test]
    fn flattened_for_one_recipient_general_for_two() {
        let a = PrivateKey::generate_p256();
        let b = PrivateKey::P384(p384::SecretKey::random(&mut rand_core::OsRng));
        let one = seal(b"opts", &[recipient(&a, KeyAlgorithm::EcdhEsA256Kw)]).unwrap();
        let v: Value = serde_json::from_str(&one).unwrap();
        assert!(v.get("recipients").is_none() && v.get("header").is_none());
        let p: Value = serde_json::from_slice(&unb64("", v["protected"].as_str().unwrap()).unwrap()).unwrap();
        assert_eq!(p["alg"], "ECDH-ES+A256KW");
        assert_eq!(p["enc"], "A256GCM");
        assert_eq!(p["epk"]["crv"], "P-256");
        assert_eq!(&*open(one.as_bytes(), &[a.clone()]).unwrap(), b"opts");

        let two =
            seal(b"opts", &[recipient(&a, KeyAlgorithm::EcdhEsA256Kw), recipient(&b, KeyAlgorithm::EcdhEsA128Kw)])
                .unwrap();
        let v: Value = serde_json::from_str(&two).unwrap();
        assert_eq!(v["recipients"].as_array().unwrap().len(), 2);
        assert_eq!(v["encrypted_key"], v["recipients"][0]["encrypted_key"]);
        assert_eq!(&*open(two.as_bytes(), &[b.clone()]).unwrap(), b"opts");
        assert_eq!(&*open(two.as_bytes(), &[a]).unwrap(), b"opts");
    }

    #[test]
    fn a_stranger_key_is_no_recipient() {
        let a = PrivateKey::generate_p256();
        let sealed = seal(b"opts", &[recipient(&a, KeyAlgorithm::EcdhEsA256Kw)]).unwrap();
        let err = open(sealed.as_bytes(), &[PrivateKey::generate_p256()]).unwrap_err();
        assert!(matches!(err, CryptError::NoRecipient { .. }), "{err}");
    }

    #[test]
    fn tampering_is_refused_by_name() {
        let a = PrivateKey::generate_p256();
        let sealed = seal(b"opts", &[recipient(&a, KeyAlgorithm::EcdhEsA256Kw)]).unwrap();
        let mut v: Value = serde_json::from_str(&sealed).unwrap();
        let mut ct = unb64("", v["ciphertext"].as_str().unwrap()).unwrap();
        ct[0] ^= 1;
        v["ciphertext"] = b64(&ct).into();
        let err = open(v.to_string().as_bytes(), &[a.clone()]).unwrap_err().to_string();
        assert!(err.contains("tag mismatch"), "{err}");

        let mut v: Value = serde_json::from_str(&sealed).unwrap();
        v["header"] = serde_json::json!({"alg": "dir"});
        let err = open(v.to_string().as_bytes(), &[a.clone()]).unwrap_err().to_string();
        assert!(err.contains("more than once"), "{err}");

        for (field, value, why) in [
            ("protected", b64(br#"{"alg":"A128KW","enc":"A256GCM"}"#), "unsupported alg"),
            ("protected", b64(br#"{"alg":"RSA-OAEP","enc":"A128CBC-HS256"}"#), "unsupported enc"),
            ("protected", b64(br#"{"alg":"RSA-OAEP","enc":"A256GCM","zip":"DEF"}"#), "zip"),
            ("tag", b64(&[0; 8]), "tag of 8"),
        ] {
            let mut v: Value = serde_json::from_str(&sealed).unwrap();
            v[field] = value.into();
            let err = open(v.to_string().as_bytes(), &[a.clone()]).unwrap_err().to_string();
            assert!(err.contains(why), "{field}: {err}");
        }
        assert!(open(b"{}", &[a.clone()]).is_err());
        assert!(open(&vec![b' '; MAX_JWE + 1], &[a]).is_err());
    }

    #[test]
    fn concat_kdf_matches_rfc7518_appendix_c() {
        // RFC 7518 Appendix C: ECDH-ES with A128GCM, apu "Alice", apv "Bob".
        let z = [
            158, 86, 217, 29, 129, 113, 53, 211, 114, 131, 66, 131, 191, 132, 38, 156, 251, 49, 110, 163, 218, 128,
            106, 72, 246, 218, 167, 121, 140, 254, 144, 196,
        ];
        let k = concat_kdf(&z, "A128GCM", b"Alice", b"Bob", 16);
        assert_eq!(b64(&k), "VqqN6vgjbSBcIijNcacQGg");
    }

    #[test]
    fn a_content_key_of_the_wrong_size_is_refused() {
        let k = PrivateKey::Rsa(rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 2048).unwrap());
        let r = Recipient::to(k.public_key());
        let sealed = seal(b"opts", std::slice::from_ref(&r)).unwrap();
        let mut v: Value = serde_json::from_str(&sealed).unwrap();
        // A 16-byte key where A256GCM needs 32, wrapped properly.
        let (short, _) = wrap_for(&r, &[7u8; 16]).unwrap();
        v["encrypted_key"] = b64(&short).into();
        let err = open(v.to_string().as_bytes(), &[k]).unwrap_err().to_string();
        assert!(err.contains("16 bytes") && err.contains("needs 32"), "{err}");
    }

    #[test]
    fn rsa_oaep_both_hashes_round_trip() {
        let k = PrivateKey::Rsa(rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 2048).unwrap());
        let pem = k.public_key_pem().unwrap();
        let mut r = parse_public_key(pem.as_bytes()).unwrap();
        assert_eq!(r.algorithm, KeyAlgorithm::RsaOaep);
        for alg in [KeyAlgorithm::RsaOaep, KeyAlgorithm::RsaOaep256] {
            r.algorithm = alg;
            let sealed = seal(b"opts", std::slice::from_ref(&r)).unwrap();
            assert_eq!(&*open(sealed.as_bytes(), &[k.clone()]).unwrap(), b"opts");
        }
    }
}
