//! The layer cipher `AES_256_CTR_HMAC_SHA256`, as ocicrypt's
//! `blockcipher/blockcipher_aes_ctr.go` defines it: AES-256 in CTR mode with
//! the 16-byte nonce as the whole initial counter block (128-bit big-endian
//! counter), and HMAC-SHA256 over the ciphertext keyed with **the same**
//! 32-byte key. The ciphertext is as long as the plaintext; there is no
//! header. The HMAC travels in the public options, the key, the nonce and
//! the plaintext's digest in the private options.
//!
//! Both directions stream: [`EncryptingReader`] and [`DecryptingReader`]
//! hold one key schedule, one HMAC state and one digest state, whatever the
//! layer's size. The decrypting side checks the HMAC and the plaintext's
//! digest at the end of the stream and fails the final read if either does
//! not match: a consumer must read to the end and only then use what it
//! wrote (see the crate documentation).

use std::io::{self, Read};

use aes::cipher::{KeyIvInit, StreamCipher};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256, Sha512};
use zeroize::{Zeroize, Zeroizing};

use crate::error::CryptError;

/// The one cipher ocicrypt defines.
pub const CIPHER: &str = "AES_256_CTR_HMAC_SHA256";

type Aes256Ctr = ctr::Ctr128BE<aes::Aes256>;
type HmacSha256 = Hmac<Sha256>;

/// How much is processed at a time: large enough to amortise the calls,
/// small enough to stay in cache between the three passes over it.
const CHUNK: usize = 64 * 1024;

/// The private layer options: what decrypts and verifies one layer.
/// Zeroized when dropped; `Debug` shows no key.
#[derive(Clone)]
pub struct PrivateOptions {
    /// The AES and HMAC key.
    pub symkey: Zeroizing<[u8; 32]>,
    /// The initial counter block.
    pub nonce: [u8; 16],
    /// The plaintext (compressed layer) digest, `sha256:<hex>` or `sha512:<hex>`.
    pub digest: String,
}

impl std::fmt::Debug for PrivateOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrivateOptions").field("digest", &self.digest).finish_non_exhaustive()
    }
}

/// The public layer options, stored in the clear in `…enc.pubopts`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicOptions {
    /// HMAC-SHA256 of the ciphertext.
    pub hmac: [u8; 32],
}

// The JSON forms, field for field as Go's encoding/json writes ocicrypt's
// structs ([]byte as padded standard base64, map[string][]byte likewise).
#[derive(Serialize, Deserialize)]
struct PrivateJson {
    symkey: String,
    digest: String,
    #[serde(default)]
    cipheroptions: std::collections::BTreeMap<String, String>,
}

#[derive(Serialize, Deserialize)]
struct PublicJson {
    cipher: String,
    hmac: String,
    #[serde(default)]
    cipheroptions: std::collections::BTreeMap<String, String>,
}

/// Most bytes accepted for an options document.
const MAX_OPTIONS_JSON: usize = 64 * 1024;

fn b64(what: &str, text: &str) -> Result<Zeroizing<Vec<u8>>, CryptError> {
    STANDARD.decode(text).map(Zeroizing::new).map_err(|e| CryptError::Options(format!("{what} is not base64: {e}")))
}

impl PrivateOptions {
    /// Fresh random key and nonce for a layer whose plaintext digest is `digest`.
    pub fn generate(digest: &str) -> Result<PrivateOptions, CryptError> {
        check_digest(digest)?;
        let mut symkey = Zeroizing::new([0u8; 32]);
        let mut nonce = [0u8; 16];
        crate::random(symkey.as_mut());
        crate::random(&mut nonce);
        Ok(PrivateOptions { symkey, nonce, digest: digest.to_owned() })
    }

    /// The JSON ocicrypt wraps for recipients.
    pub fn to_json(&self) -> Zeroizing<Vec<u8>> {
        let mut doc = PrivateJson {
            symkey: STANDARD.encode(self.symkey.as_ref()),
            digest: self.digest.clone(),
            cipheroptions: [("nonce".to_owned(), STANDARD.encode(self.nonce))].into(),
        };
        let out = serde_json::to_vec(&doc).expect("plain struct serializes");
        doc.symkey.zeroize();
        Zeroizing::new(out)
    }

    /// Parses (and checks) the JSON an unwrapped key holds.
    pub fn from_json(bytes: &[u8]) -> Result<PrivateOptions, CryptError> {
        if bytes.len() > MAX_OPTIONS_JSON {
            return Err(CryptError::Options(format!("private options of {} bytes", bytes.len())));
        }
        let mut doc: PrivateJson =
            serde_json::from_slice(bytes).map_err(|e| CryptError::Options(format!("private options: {e}")))?;
        let key = b64("symkey", &doc.symkey);
        doc.symkey.zeroize();
        let key = key?;
        let symkey: [u8; 32] = key.as_slice().try_into().map_err(|_| {
            CryptError::Options(format!("symkey is {} bytes, AES_256_CTR_HMAC_SHA256 needs 32", key.len()))
        })?;
        let symkey = Zeroizing::new(symkey);
        let nonce = doc.cipheroptions.get("nonce").ok_or_else(|| CryptError::Options("no nonce".into()))?;
        let nonce = b64("nonce", nonce)?;
        let nonce: [u8; 16] = nonce
            .as_slice()
            .try_into()
            .map_err(|_| CryptError::Options(format!("nonce is {} bytes, not 16", nonce.len())))?;
        check_digest(&doc.digest)?;
        Ok(PrivateOptions { symkey, nonce, digest: doc.digest })
    }
}

impl PublicOptions {
    /// The JSON of `…enc.pubopts` (before base64).
    pub fn to_json(&self) -> Vec<u8> {
        let doc =
            PublicJson { cipher: CIPHER.into(), hmac: STANDARD.encode(self.hmac), cipheroptions: Default::default() };
        serde_json::to_vec(&doc).expect("plain struct serializes")
    }

    /// Parses `…enc.pubopts` JSON, refusing any cipher but [`CIPHER`].
    pub fn from_json(bytes: &[u8]) -> Result<PublicOptions, CryptError> {
        if bytes.len() > MAX_OPTIONS_JSON {
            return Err(CryptError::Options(format!("public options of {} bytes", bytes.len())));
        }
        let doc: PublicJson =
            serde_json::from_slice(bytes).map_err(|e| CryptError::Options(format!("public options: {e}")))?;
        if doc.cipher != CIPHER {
            return Err(CryptError::Options(format!("unsupported cipher {:?} (only {CIPHER})", doc.cipher)));
        }
        let hmac = b64("hmac", &doc.hmac)?;
        let hmac: [u8; 32] = hmac
            .as_slice()
            .try_into()
            .map_err(|_| CryptError::Options(format!("hmac is {} bytes, not 32", hmac.len())))?;
        Ok(PublicOptions { hmac })
    }
}

/// `sha256:<64 hex>` or `sha512:<128 hex>`, lower case.
fn check_digest(digest: &str) -> Result<(), CryptError> {
    let ok = match digest.split_once(':') {
        Some(("sha256", hex)) => hex.len() == 64,
        Some(("sha512", hex)) => hex.len() == 128,
        _ => false,
    } && digest
        .split_once(':')
        .is_some_and(|(_, h)| h.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
    if ok {
        Ok(())
    } else {
        Err(CryptError::Options(format!("digest {digest:?} is not sha256:<hex> or sha512:<hex>")))
    }
}

/// A running digest of the algorithm a descriptor names.
#[derive(Clone)]
enum Hasher {
    Sha256(Sha256),
    Sha512(Sha512),
}

impl Hasher {
    fn for_digest(digest: &str) -> Hasher {
        if digest.starts_with("sha512:") {
            Hasher::Sha512(Sha512::new())
        } else {
            Hasher::Sha256(Sha256::new())
        }
    }
    fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(data),
            Hasher::Sha512(h) => h.update(data),
        }
    }
    fn finish(self) -> String {
        match self {
            Hasher::Sha256(h) => format!("sha256:{}", hex::encode(h.finalize())),
            Hasher::Sha512(h) => format!("sha512:{}", hex::encode(h.finalize())),
        }
    }
}

/// What both directions carry along a layer: the key stream, the HMAC of
/// the ciphertext and the digest of the plaintext.
struct LayerStream {
    cipher: Aes256Ctr,
    /// Both taken at the end.
    ends: Option<(HmacSha256, Hasher)>,
    /// The plaintext digest the private options name.
    digest: String,
}

impl LayerStream {
    fn new(opts: &PrivateOptions) -> LayerStream {
        let mac = <HmacSha256 as Mac>::new_from_slice(opts.symkey.as_ref()).expect("HMAC takes any key length");
        LayerStream {
            cipher: Aes256Ctr::new(opts.symkey.as_ref().into(), (&opts.nonce).into()),
            ends: Some((mac, Hasher::for_digest(&opts.digest))),
            digest: opts.digest.clone(),
        }
    }

    /// Reads at most one chunk from `inner` into `buf`.
    fn read_chunk(inner: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
        let want = buf.len().min(CHUNK);
        inner.read(&mut buf[..want])
    }

    /// Plaintext in, ciphertext out, in place.
    fn encrypt(&mut self, chunk: &mut [u8]) {
        if let Some((mac, hasher)) = self.ends.as_mut() {
            hasher.update(chunk);
            self.cipher.apply_keystream(chunk);
            mac.update(chunk);
        }
    }

    /// Ciphertext in, plaintext out, in place.
    fn decrypt(&mut self, chunk: &mut [u8]) {
        if let Some((mac, hasher)) = self.ends.as_mut() {
            mac.update(chunk);
            self.cipher.apply_keystream(chunk);
            hasher.update(chunk);
        }
    }

    /// The HMAC state and the plaintext digest, once; `None` afterwards.
    fn finish(&mut self) -> Option<(HmacSha256, String)> {
        self.ends.take().map(|(mac, hasher)| (mac, hasher.finish()))
    }
}

/// Reads plaintext from `inner` and yields ciphertext. The plaintext's
/// digest is checked against `opts.digest` at the end (so a source blob that
/// is not what its descriptor says fails here too); then
/// [`EncryptingReader::public_options`] gives the HMAC.
pub struct EncryptingReader<R> {
    inner: R,
    stream: LayerStream,
    public: Option<PublicOptions>,
    failed: Option<String>,
}

impl<R: Read> EncryptingReader<R> {
    /// Encrypts `inner` with `opts`.
    pub fn new(inner: R, opts: &PrivateOptions) -> Self {
        EncryptingReader { inner, stream: LayerStream::new(opts), public: None, failed: None }
    }

    /// The public options, once the whole plaintext was read and matched its digest.
    pub fn public_options(&self) -> Option<&PublicOptions> {
        self.public.as_ref()
    }
}

impl<R: Read> Read for EncryptingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(reason) = &self.failed {
            return Err(io::Error::new(io::ErrorKind::InvalidData, reason.clone()));
        }
        if buf.is_empty() || self.public.is_some() {
            return Ok(0);
        }
        let n = LayerStream::read_chunk(&mut self.inner, buf)?;
        if n > 0 {
            self.stream.encrypt(&mut buf[..n]);
            return Ok(n);
        }
        let (mac, actual) = self.stream.finish().expect("finished once: `public` or `failed` is set after");
        if actual != self.stream.digest {
            let reason = format!("the layer read is {actual}, not {} as its descriptor says", self.stream.digest);
            self.failed = Some(reason.clone());
            return Err(io::Error::new(io::ErrorKind::InvalidData, reason));
        }
        self.public = Some(PublicOptions { hmac: mac.finalize().into_bytes().into() });
        Ok(0)
    }
}

/// What a [`DecryptingReader`] concluded at the end of its stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Not at the end yet: nothing read so far may be used.
    Pending,
    /// The HMAC and the plaintext digest matched.
    Verified,
    /// The stream failed its checks.
    Failed(String),
}

/// Reads ciphertext from `inner` and yields plaintext, checking at the end
/// that the ciphertext's HMAC is the one in the public options and the
/// plaintext's digest the one in the private options. The read that reaches
/// the end fails if either does not match; until then [`Verdict::Pending`]
/// means the plaintext handed out is unverified and must not be used.
pub struct DecryptingReader<R> {
    inner: R,
    stream: LayerStream,
    expected_hmac: [u8; 32],
    verdict: Verdict,
}

impl<R: Read> DecryptingReader<R> {
    /// Decrypts `inner` with the layer's options.
    pub fn new(inner: R, private: &PrivateOptions, public: &PublicOptions) -> Self {
        DecryptingReader {
            inner,
            stream: LayerStream::new(private),
            expected_hmac: public.hmac,
            verdict: Verdict::Pending,
        }
    }

    /// Whether the stream was read to its end and checked out.
    pub fn verdict(&self) -> &Verdict {
        &self.verdict
    }

    fn conclude(&mut self) -> Verdict {
        let Some((mac, digest)) = self.stream.finish() else { return self.verdict.clone() };
        self.verdict = if mac.verify_slice(&self.expected_hmac).is_err() {
            Verdict::Failed(
                "the layer's HMAC does not match: the encrypted layer was altered, or its public options do not \
                 belong to it"
                    .into(),
            )
        } else if digest != self.stream.digest {
            Verdict::Failed(format!(
                "the decrypted layer is {digest}, not {} as its private options say: wrong or tampered key data",
                self.stream.digest
            ))
        } else {
            Verdict::Verified
        };
        self.verdict.clone()
    }
}

impl<R: Read> Read for DecryptingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &self.verdict {
            Verdict::Failed(reason) => return Err(io::Error::new(io::ErrorKind::InvalidData, reason.clone())),
            Verdict::Verified => return Ok(0),
            Verdict::Pending => {}
        }
        if buf.is_empty() {
            return Ok(0);
        }
        let n = LayerStream::read_chunk(&mut self.inner, buf)?;
        if n > 0 {
            self.stream.decrypt(&mut buf[..n]);
            return Ok(n);
        }
        match self.conclude() {
            Verdict::Failed(reason) => Err(io::Error::new(io::ErrorKind::InvalidData, reason)),
            _ => Ok(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts_for(data: &[u8]) -> PrivateOptions {
        PrivateOptions::generate(&format!("sha256:{}", hex::encode(Sha256::digest(data)))).unwrap()
    }

    fn encrypt(data: &[u8], opts: &PrivateOptions) -> (Vec<u8>, PublicOptions) {
        let mut r = EncryptingReader::new(data, opts);
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        (out, r.public_options().unwrap().clone())
    }

    #[test]
    fn round_trip_keeps_size_and_verifies() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let opts = opts_for(&data);
        let (ct, public) = encrypt(&data, &opts);
        assert_eq!(ct.len(), data.len());
        assert_ne!(ct, data);
        let mut d = DecryptingReader::new(&ct[..], &opts, &public);
        let mut pt = Vec::new();
        d.read_to_end(&mut pt).unwrap();
        assert_eq!(pt, data);
        assert_eq!(d.verdict(), &Verdict::Verified);
    }

    #[test]
    fn matches_the_go_construction() {
        // CTR over the whole 16-byte counter block, HMAC over the
        // ciphertext with the AES key: computed independently here.
        let opts = PrivateOptions {
            symkey: Zeroizing::new([7u8; 32]),
            nonce: [0xff; 16],
            digest: format!("sha256:{}", hex::encode(Sha256::digest(b"0123456789abcdef0123456789"))),
        };
        let (ct, public) = encrypt(b"0123456789abcdef0123456789", &opts);
        use aes::cipher::{BlockEncrypt, KeyInit};
        let aes = aes::Aes256::new((&[7u8; 32]).into());
        let mut expected = Vec::new();
        for (i, block) in b"0123456789abcdef0123456789".chunks(16).enumerate() {
            // All-ones nonce: the counter wraps to zero for the second block.
            let mut ctr = aes::Block::from(if i == 0 { [0xff; 16] } else { [0; 16] });
            aes.encrypt_block(&mut ctr);
            expected.extend(block.iter().zip(ctr.iter()).map(|(a, b)| a ^ b));
        }
        assert_eq!(ct, expected);
        let mut m = <HmacSha256 as Mac>::new_from_slice(&[7u8; 32]).unwrap();
        m.update(&ct);
        assert_eq!(public.hmac, <[u8; 32]>::from(m.finalize().into_bytes()));
    }

    #[test]
    fn a_flipped_ciphertext_bit_fails_the_last_read() {
        let data = vec![42u8; 100_000];
        let opts = opts_for(&data);
        let (mut ct, public) = encrypt(&data, &opts);
        ct[50_000] ^= 1;
        let mut d = DecryptingReader::new(&ct[..], &opts, &public);
        let err = d.read_to_end(&mut Vec::new()).unwrap_err();
        assert!(err.to_string().contains("HMAC"), "{err}");
        assert!(matches!(d.verdict(), Verdict::Failed(_)));
    }

    #[test]
    fn a_wrong_digest_in_the_private_options_fails() {
        let data = b"layer".to_vec();
        let opts = opts_for(&data);
        let (ct, public) = encrypt(&data, &opts);
        let mut other = opts.clone();
        other.digest = format!("sha256:{}", "0".repeat(64));
        let err = DecryptingReader::new(&ct[..], &other, &public).read_to_end(&mut Vec::new()).unwrap_err();
        assert!(err.to_string().contains("not sha256:000"), "{err}");
    }

    #[test]
    fn encrypting_a_blob_that_is_not_its_digest_fails() {
        let opts = opts_for(b"one");
        let err = EncryptingReader::new(&b"two"[..], &opts).read_to_end(&mut Vec::new()).unwrap_err();
        assert!(err.to_string().contains("descriptor"), "{err}");
    }

    #[test]
    fn options_round_trip_and_bad_options_are_refused() {
        let opts = opts_for(b"x");
        let back = PrivateOptions::from_json(&opts.to_json()).unwrap();
        assert_eq!(*back.symkey, *opts.symkey);
        assert_eq!(back.nonce, opts.nonce);
        let public = PublicOptions { hmac: [3; 32] };
        assert_eq!(PublicOptions::from_json(&public.to_json()).unwrap(), public);
        for (bad, why) in [
            (r#"{"symkey":"AAAA","digest":"sha256:00","cipheroptions":{"nonce":"AAAAAAAAAAAAAAAAAAAAAA=="}}"#, "32"),
            (r#"{"symkey":"!!","digest":"x","cipheroptions":{}}"#, "base64"),
            (r#"{"digest":"x"}"#, "symkey"),
        ] {
            let err = PrivateOptions::from_json(bad.as_bytes()).unwrap_err().to_string();
            assert!(err.contains(why), "{bad}: {err}");
        }
        let err = PublicOptions::from_json(br#"{"cipher":"AES_128_GCM","hmac":""}"#).unwrap_err().to_string();
        assert!(err.contains("unsupported cipher"), "{err}");
    }
}
