//! C2SP signed notes (`c2sp.org/signed-note`): text signed by one or more
//! keys, with Ed25519 signatures (type `0x01`), verifier and signer key
//! strings, and verification against a set of known keys.
//!
//! ```text
//! This is an example message.
//!
//! — example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=
//! ```

use std::fmt;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

/// Largest note accepted, in bytes. The spec asks for at least 16
/// signatures of up to about 5 kB (post-quantum) to fit.
pub const MAX_NOTE_SIZE: usize = 256 * 1024;
/// Most signature lines accepted on one note (the spec's floor is 16).
pub const MAX_SIGNATURES: usize = 100;
/// Signature type byte of plain Ed25519 note signatures.
pub const ED25519_TYPE: u8 = 0x01;

/// The em dash and space that open a signature line.
const SIG_PREFIX: &str = "\u{2014} ";
const SKEY_PREFIX: &str = "PRIVATE+KEY+";

/// A malformed, oversized or unverifiable note.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoteError {
    /// Larger than [`MAX_NOTE_SIZE`].
    #[error("note is {0} bytes; notes of more than {MAX_NOTE_SIZE} bytes are refused")]
    TooLarge(usize),
    /// Not UTF-8.
    #[error("note is not valid UTF-8")]
    NotUtf8,
    /// Contains an ASCII control character other than newline.
    #[error("note contains control character U+{0:04X} (only newline is allowed)")]
    ControlCharacter(u32),
    /// Not `text`, blank line, signature lines, each ending in newline.
    #[error("malformed note: {0}")]
    Malformed(&'static str),
    /// A signature line that is not `— <name> <base64(key ID || signature)>`.
    #[error("malformed signature line {line}: {reason}")]
    BadSignatureLine {
        /// 1-based number of the line in the signature block.
        line: usize,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// More than [`MAX_SIGNATURES`] signature lines.
    #[error("note has more than {MAX_SIGNATURES} signatures")]
    TooManySignatures,
    /// Note text that cannot be signed (empty, no final newline, control
    /// characters).
    #[error("note text cannot be signed: {0}")]
    BadText(&'static str),
    /// A signature from a known key that does not verify: the whole note is
    /// refused.
    #[error("signature by {name} (key ID {key_id:08x}) does not verify: the note was altered or forged")]
    BadSignature {
        /// Key name.
        name: String,
        /// Key ID.
        key_id: u32,
    },
    /// No signature from any known key.
    #[error("note carries no signature from a known key (signed by: {0})")]
    NoKnownSignature(String),
}

/// A malformed key string or key name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Empty, or contains Unicode white space or `+`.
    #[error("key name {0:?} is empty or contains white space or '+'")]
    BadName(String),
    /// Not `name+hash+key` (or `PRIVATE+KEY+name+hash+key`).
    #[error("malformed key string: {0}")]
    Malformed(&'static str),
    /// The key hash is not 8 lowercase hex digits.
    #[error("key hash {0:?} is not 8 lowercase hex digits")]
    BadKeyId(String),
    /// The key hash does not match the key.
    #[error("key hash {given:08x} does not match the key (its hash is {computed:08x})")]
    KeyIdMismatch {
        /// In the string.
        given: u32,
        /// Computed from name, type and key.
        computed: u32,
    },
    /// A signature type other than the one expected.
    #[error("key has signature type 0x{got:02x}, expected 0x{want:02x}")]
    WrongType {
        /// Type byte in the key.
        got: u8,
        /// Type byte expected.
        want: u8,
    },
    /// A signature type this crate does not implement.
    #[error("unsupported key type 0x{0:02x} (supported: 0x01 Ed25519, 0x04 Ed25519 cosignature)")]
    UnsupportedType(u8),
    /// Key material of the wrong length, or not a valid Ed25519 public key.
    #[error("invalid key material: {0}")]
    BadKey(&'static str),
    /// Two verifiers with the same name and key ID.
    #[error("two verifiers named {name} with key ID {key_id:08x}")]
    Duplicate {
        /// Key name.
        name: String,
        /// Key ID.
        key_id: u32,
    },
}

/// Checks a key name: non-empty, no Unicode white space, no `+`.
pub fn check_key_name(name: &str) -> Result<(), KeyError> {
    if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c == '+' || c.is_control()) {
        return Err(KeyError::BadName(name.chars().take(100).collect()));
    }
    Ok(())
}

/// Key ID: `SHA-256(name || 0x0A || type || public key)[:4]`, big-endian
/// (signed-note, "Signatures").
pub fn key_id(name: &str, sig_type: u8, public_key: &[u8]) -> u32 {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update([b'\n', sig_type]);
    h.update(public_key);
    let d = h.finalize();
    u32::from_be_bytes([d[0], d[1], d[2], d[3]])
}

/// One signature line: key name, key ID and the signature bytes (without
/// the key ID).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteSignature {
    /// Key name.
    pub name: String,
    /// Key ID.
    pub key_id: u32,
    /// Signature bytes, as the signature type defines them.
    pub signature: Vec<u8>,
}

impl NoteSignature {
    /// Parses one signature line, without its final newline.
    fn parse_line(line: &str, number: usize) -> Result<NoteSignature, NoteError> {
        let bad = |reason| NoteError::BadSignatureLine { line: number, reason };
        let rest = line.strip_prefix(SIG_PREFIX).ok_or_else(|| bad("does not start with an em dash and a space"))?;
        let (name, b64) = rest.split_once(' ').ok_or_else(|| bad("no space between key name and signature"))?;
        check_key_name(name).map_err(|_| bad("key name is empty or contains white space or '+'"))?;
        let raw = BASE64.decode(b64).map_err(|_| bad("signature is not canonical standard base64"))?;
        let (id, sig) = raw.split_first_chunk::<4>().ok_or_else(|| bad("signature is shorter than its key ID"))?;
        if sig.is_empty() {
            return Err(bad("signature is empty"));
        }
        Ok(NoteSignature { name: name.to_owned(), key_id: u32::from_be_bytes(*id), signature: sig.to_vec() })
    }
}

impl fmt::Display for NoteSignature {
    /// The signature line, with its final newline.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut raw = Vec::with_capacity(4 + self.signature.len());
        raw.extend_from_slice(&self.key_id.to_be_bytes());
        raw.extend_from_slice(&self.signature);
        writeln!(f, "{SIG_PREFIX}{} {}", self.name, BASE64.encode(raw))
    }
}

/// A key that verifies note signatures of one type.
pub trait NoteVerifier: Send + Sync {
    /// Key name.
    fn name(&self) -> &str;
    /// Key ID.
    fn key_id(&self) -> u32;
    /// Whether `signature` (without the key ID) is valid for `text`.
    fn verify(&self, text: &[u8], signature: &[u8]) -> bool;
}

/// A key that signs notes.
pub trait NoteSigner {
    /// Key name.
    fn name(&self) -> &str;
    /// Key ID.
    fn key_id(&self) -> u32;
    /// Signature over `text` (without the key ID).
    fn sign(&self, text: &[u8]) -> Vec<u8>;
}

/// The keys a verifier knows, looked up by name and key ID.
#[derive(Default)]
pub struct VerifierSet {
    verifiers: Vec<Box<dyn NoteVerifier>>,
}

impl fmt::Debug for VerifierSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.verifiers.iter().map(|v| format!("{}+{:08x}", v.name(), v.key_id()))).finish()
    }
}

impl VerifierSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a known key; two keys with the same name and ID are refused.
    pub fn insert(&mut self, verifier: Box<dyn NoteVerifier>) -> Result<(), KeyError> {
        if self.get(verifier.name(), verifier.key_id()).is_some() {
            return Err(KeyError::Duplicate { name: verifier.name().to_owned(), key_id: verifier.key_id() });
        }
        self.verifiers.push(verifier);
        Ok(())
    }

    /// Adds a known key (builder style).
    pub fn with(mut self, verifier: impl NoteVerifier + 'static) -> Result<Self, KeyError> {
        self.insert(Box::new(verifier))?;
        Ok(self)
    }

    /// The key with this name and ID.
    pub fn get(&self, name: &str, key_id: u32) -> Option<&dyn NoteVerifier> {
        self.verifiers.iter().find(|v| v.name() == name && v.key_id() == key_id).map(|v| v.as_ref())
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.verifiers.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.verifiers.is_empty()
    }
}

/// A signed note: text ending in a newline, and its signatures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    text: String,
    signatures: Vec<NoteSignature>,
}

/// Checks the character rules of signed-note: UTF-8 (given), no ASCII
/// control characters but newline.
fn check_chars(s: &str) -> Result<(), NoteError> {
    match s.chars().find(|&c| c < '\u{20}' && c != '\n') {
        Some(c) => Err(NoteError::ControlCharacter(c as u32)),
        None => Ok(()),
    }
}

impl Note {
    /// An unsigned note with this text, which must be non-empty, end in a
    /// newline and contain no control characters other than newline.
    pub fn new(text: impl Into<String>) -> Result<Note, NoteError> {
        let text = text.into();
        if !text.ends_with('\n') {
            return Err(NoteError::BadText("text must end with a newline"));
        }
        if text.len() > MAX_NOTE_SIZE {
            return Err(NoteError::TooLarge(text.len()));
        }
        check_chars(&text)?;
        Ok(Note { text, signatures: Vec::new() })
    }

    /// Parses a signed note. Its text is everything up to the last blank
    /// line; after it come one or more signature lines. Nothing is verified.
    pub fn parse(bytes: &[u8]) -> Result<Note, NoteError> {
        if bytes.len() > MAX_NOTE_SIZE {
            return Err(NoteError::TooLarge(bytes.len()));
        }
        let s = std::str::from_utf8(bytes).map_err(|_| NoteError::NotUtf8)?;
        check_chars(s)?;
        if !s.ends_with('\n') {
            return Err(NoteError::Malformed("does not end with a newline"));
        }
        let split = s.rfind("\n\n").ok_or(NoteError::Malformed("no blank line between text and signatures"))?;
        let (text, block) = (&s[..split + 1], &s[split + 2..]);
        if block.is_empty() {
            return Err(NoteError::Malformed("no signature lines after the blank line"));
        }
        let mut signatures = Vec::new();
        for (i, line) in block[..block.len() - 1].split('\n').enumerate() {
            if i == MAX_SIGNATURES {
                return Err(NoteError::TooManySignatures);
            }
            signatures.push(NoteSignature::parse_line(line, i + 1)?);
        }
        Ok(Note { text: text.to_owned(), signatures })
    }

    /// The note text, with its final newline.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The signatures, in order.
    pub fn signatures(&self) -> &[NoteSignature] {
        &self.signatures
    }

    /// Adds a signature made elsewhere (a cosignature, say).
    pub fn add_signature(&mut self, signature: NoteSignature) -> Result<(), NoteError> {
        if self.signatures.len() >= MAX_SIGNATURES {
            return Err(NoteError::TooManySignatures);
        }
        self.signatures.push(signature);
        Ok(())
    }

    /// Signs the text with `signer` and adds the signature.
    pub fn sign(&mut self, signer: &dyn NoteSigner) -> Result<(), NoteError> {
        let signature = signer.sign(self.text.as_bytes());
        self.add_signature(NoteSignature { name: signer.name().to_owned(), key_id: signer.key_id(), signature })
    }

    /// The note as it travels: text, blank line, signature lines.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.to_string().into_bytes()
    }

    /// Verifies the note against known keys (signed-note, "Signatures"):
    /// signatures from unknown keys are ignored, a known key's signature that
    /// fails refuses the whole note, and at least one known key must have
    /// signed. Returns the verified signatures, one per key.
    pub fn verify(&self, known: &VerifierSet) -> Result<Vec<&NoteSignature>, NoteError> {
        let mut verified: Vec<&NoteSignature> = Vec::new();
        for sig in &self.signatures {
            let Some(v) = known.get(&sig.name, sig.key_id) else { continue };
            if !v.verify(self.text.as_bytes(), &sig.signature) {
                return Err(NoteError::BadSignature { name: sig.name.clone(), key_id: sig.key_id });
            }
            if !verified.iter().any(|s| s.name == sig.name && s.key_id == sig.key_id) {
                verified.push(sig);
            }
        }
        if verified.is_empty() {
            let signers: Vec<String> = self.signatures.iter().map(|s| format!("{}+{:08x}", s.name, s.key_id)).collect();
            return Err(NoteError::NoKnownSignature(signers.join(", ")));
        }
        Ok(verified)
    }
}

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.text)?;
        for s in &self.signatures {
            write!(f, "{s}")?;
        }
        Ok(())
    }
}

/// Splits `name+hash+base64(type||key)` and checks name, hash format and
/// the hash against the key; returns name, type and key material.
pub(crate) fn parse_key_string(s: &str) -> Result<(String, u8, Vec<u8>), KeyError> {
    // Base64 has '+' in its alphabet: only the first two '+' separate.
    let mut parts = s.splitn(3, '+');
    let (Some(name), Some(hash), Some(b64)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(KeyError::Malformed("expected name+hash+base64"));
    };
    check_key_name(name)?;
    if hash.len() != 8 || !hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(KeyError::BadKeyId(hash.chars().take(20).collect()));
    }
    let given = u32::from_str_radix(hash, 16).map_err(|_| KeyError::BadKeyId(hash.into()))?;
    let raw = BASE64.decode(b64).map_err(|_| KeyError::Malformed("key is not canonical standard base64"))?;
    let (&sig_type, key) = raw.split_first().ok_or(KeyError::Malformed("empty key"))?;
    let computed = key_id(name, sig_type, key);
    if given != computed {
        return Err(KeyError::KeyIdMismatch { given, computed });
    }
    Ok((name.to_owned(), sig_type, key.to_vec()))
}

/// Formats `name+hash+base64(type||key)`.
pub(crate) fn format_key_string(name: &str, sig_type: u8, key: &[u8]) -> String {
    let mut raw = vec![sig_type];
    raw.extend_from_slice(key);
    format!("{name}+{:08x}+{}", key_id(name, sig_type, key), BASE64.encode(raw))
}

/// Parses a signer key string `PRIVATE+KEY+name+hash+base64(type||seed)`,
/// returning name, type and a signing key.
pub(crate) fn parse_signer_key(s: &str, want_type: u8) -> Result<(String, SigningKey), KeyError> {
    let rest = s.strip_prefix(SKEY_PREFIX).ok_or(KeyError::Malformed("signer key does not start with PRIVATE+KEY+"))?;
    let mut parts = rest.splitn(3, '+');
    let (Some(name), Some(hash), Some(b64)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(KeyError::Malformed("expected PRIVATE+KEY+name+hash+base64"));
    };
    check_key_name(name)?;
    if hash.len() != 8 || !hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(KeyError::BadKeyId(hash.chars().take(20).collect()));
    }
    let given = u32::from_str_radix(hash, 16).map_err(|_| KeyError::BadKeyId(hash.into()))?;
    let raw = BASE64.decode(b64).map_err(|_| KeyError::Malformed("key is not canonical standard base64"))?;
    let (&sig_type, seed) = raw.split_first().ok_or(KeyError::Malformed("empty key"))?;
    if sig_type != want_type {
        return Err(KeyError::WrongType { got: sig_type, want: want_type });
    }
    let seed: [u8; 32] = seed.try_into().map_err(|_| KeyError::BadKey("an Ed25519 seed is 32 bytes"))?;
    let key = SigningKey::from_bytes(&seed);
    // The hash is over the public key, as in the verifier key.
    let computed = key_id(name, sig_type, key.verifying_key().as_bytes());
    if given != computed {
        return Err(KeyError::KeyIdMismatch { given, computed });
    }
    Ok((name.to_owned(), key))
}

/// Formats `PRIVATE+KEY+name+hash+base64(type||seed)`.
pub(crate) fn format_signer_key(name: &str, sig_type: u8, key: &SigningKey) -> String {
    let mut raw = vec![sig_type];
    raw.extend_from_slice(key.as_bytes());
    let id = key_id(name, sig_type, key.verifying_key().as_bytes());
    format!("{SKEY_PREFIX}{name}+{id:08x}+{}", BASE64.encode(raw))
}

pub(crate) fn verifying_key(key: &[u8]) -> Result<VerifyingKey, KeyError> {
    let bytes: [u8; 32] = key.try_into().map_err(|_| KeyError::BadKey("an Ed25519 public key is 32 bytes"))?;
    VerifyingKey::from_bytes(&bytes).map_err(|_| KeyError::BadKey("not a valid Ed25519 public key"))
}

pub(crate) fn generate_signing_key() -> SigningKey {
    use rand::RngCore as _;
    let mut seed = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut seed);
    SigningKey::from_bytes(&seed)
}

/// Strict Ed25519 verification (RFC 8032, and no small-order keys or
/// non-canonical encodings).
pub(crate) fn ed25519_verify(key: &VerifyingKey, msg: &[u8], signature: &[u8]) -> bool {
    match ed25519_dalek::Signature::from_slice(signature) {
        Ok(sig) => key.verify_strict(msg, &sig).is_ok(),
        Err(_) => false,
    }
}

/// An Ed25519 note verifier (signature type `0x01`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ed25519Verifier {
    name: String,
    key: VerifyingKey,
    id: u32,
}

impl Ed25519Verifier {
    /// A verifier for `name` and this public key.
    pub fn new(name: &str, key: VerifyingKey) -> Result<Self, KeyError> {
        check_key_name(name)?;
        Ok(Ed25519Verifier { name: name.to_owned(), id: key_id(name, ED25519_TYPE, key.as_bytes()), key })
    }

    /// Parses a verifier key string, `name+hash+base64(0x01||public key)`.
    pub fn from_vkey(vkey: &str) -> Result<Self, KeyError> {
        let (name, sig_type, key) = parse_key_string(vkey)?;
        if sig_type != ED25519_TYPE {
            return Err(KeyError::WrongType { got: sig_type, want: ED25519_TYPE });
        }
        let id = key_id(&name, ED25519_TYPE, &key);
        Ok(Ed25519Verifier { name, key: verifying_key(&key)?, id })
    }

    /// The verifier key string.
    pub fn vkey(&self) -> String {
        format_key_string(&self.name, ED25519_TYPE, self.key.as_bytes())
    }

    /// The public key.
    pub fn public_key(&self) -> &VerifyingKey {
        &self.key
    }
}

impl NoteVerifier for Ed25519Verifier {
    fn name(&self) -> &str {
        &self.name
    }
    fn key_id(&self) -> u32 {
        self.id
    }
    fn verify(&self, text: &[u8], signature: &[u8]) -> bool {
        ed25519_verify(&self.key, text, signature)
    }
}

/// An Ed25519 note signer (signature type `0x01`).
#[derive(Clone)]
pub struct Ed25519Signer {
    name: String,
    key: SigningKey,
    id: u32,
}

impl fmt::Debug for Ed25519Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Ed25519Signer({}+{:08x})", self.name, self.id)
    }
}

impl Ed25519Signer {
    /// A signer for `name` with this private key.
    pub fn new(name: &str, key: SigningKey) -> Result<Self, KeyError> {
        check_key_name(name)?;
        let id = key_id(name, ED25519_TYPE, key.verifying_key().as_bytes());
        Ok(Ed25519Signer { name: name.to_owned(), key, id })
    }

    /// A signer for `name` with a fresh key from the operating system's
    /// random source.
    pub fn generate(name: &str) -> Result<Self, KeyError> {
        Self::new(name, generate_signing_key())
    }

    /// Parses a signer key string, `PRIVATE+KEY+name+hash+base64(0x01||seed)`.
    pub fn from_skey(skey: &str) -> Result<Self, KeyError> {
        let (name, key) = parse_signer_key(skey, ED25519_TYPE)?;
        Self::new(&name, key)
    }

    /// The signer key string (secret: store it like a private key).
    pub fn skey(&self) -> String {
        format_signer_key(&self.name, ED25519_TYPE, &self.key)
    }

    /// The matching verifier.
    pub fn verifier(&self) -> Ed25519Verifier {
        Ed25519Verifier { name: self.name.clone(), key: self.key.verifying_key(), id: self.id }
    }
}

impl NoteSigner for Ed25519Signer {
    fn name(&self) -> &str {
        &self.name
    }
    fn key_id(&self) -> u32 {
        self.id
    }
    fn sign(&self, text: &[u8]) -> Vec<u8> {
        self.key.sign(text).to_bytes().to_vec()
    }
}

/// Parses a verifier key string of any supported type: Ed25519 (`0x01`) or
/// Ed25519 cosignature (`0x04`).
pub fn parse_verifier_key(vkey: &str) -> Result<Box<dyn NoteVerifier>, KeyError> {
    let (_, sig_type, _) = parse_key_string(vkey)?;
    match sig_type {
        ED25519_TYPE => Ok(Box::new(Ed25519Verifier::from_vkey(vkey)?)),
        crate::cosignature::COSIGNATURE_TYPE => Ok(Box::new(crate::cosignature::CosignatureVerifier::from_vkey(vkey)?)),
        other => Err(KeyError::UnsupportedType(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of c2sp.org/signed-note.
    const SPEC_VKEY: &str = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k";
    const SPEC_NOTE: &str = "This is an example message.\n\n\u{2014} example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n";

    fn spec_verifiers() -> VerifierSet {
        VerifierSet::new().with(Ed25519Verifier::from_vkey(SPEC_VKEY).unwrap()).unwrap()
    }

    #[test]
    fn verifies_the_c2sp_signed_note_example() {
        let note = Note::parse(SPEC_NOTE.as_bytes()).unwrap();
        assert_eq!(note.text(), "This is an example message.\n");
        let verified = note.verify(&spec_verifiers()).unwrap();
        assert_eq!(verified.len(), 1);
        assert_eq!(verified[0].name, "example.com/foo");
        assert_eq!(verified[0].key_id, 0x530d903a);
        assert_eq!(note.to_string(), SPEC_NOTE);
        assert_eq!(Ed25519Verifier::from_vkey(SPEC_VKEY).unwrap().vkey(), SPEC_VKEY);
    }

    #[test]
    fn rejects_the_example_with_altered_text() {
        let altered = SPEC_NOTE.replace("example message", "example massage");
        let err = Note::parse(altered.as_bytes()).unwrap().verify(&spec_verifiers()).unwrap_err();
        assert_eq!(err, NoteError::BadSignature { name: "example.com/foo".into(), key_id: 0x530d903a });
    }

    #[test]
    fn unknown_signatures_are_ignored_but_one_known_is_required() {
        let other = Ed25519Signer::generate("example.com/foo").unwrap();
        let mut note = Note::parse(SPEC_NOTE.as_bytes()).unwrap();
        note.sign(&other).unwrap();
        // Same name, other key ID: ignored.
        assert_eq!(note.verify(&spec_verifiers()).unwrap().len(), 1);
        // Nothing known.
        let stranger = VerifierSet::new().with(Ed25519Signer::generate("x.example").unwrap().verifier()).unwrap();
        assert!(matches!(note.verify(&stranger), Err(NoteError::NoKnownSignature(_))));
        assert!(matches!(note.verify(&VerifierSet::new()), Err(NoteError::NoKnownSignature(_))));
    }

    #[test]
    fn a_known_key_with_a_bad_signature_refuses_the_note() {
        let signer = Ed25519Signer::generate("log.example/a").unwrap();
        let mut note = Note::new("hello\n").unwrap();
        note.sign(&signer).unwrap();
        note.signatures[0].signature[0] ^= 1;
        let known = VerifierSet::new().with(signer.verifier()).unwrap();
        assert!(matches!(note.verify(&known), Err(NoteError::BadSignature { .. })));
        note.signatures[0].signature.truncate(10);
        assert!(matches!(note.verify(&known), Err(NoteError::BadSignature { .. })));
    }

    #[test]
    fn sign_parse_verify_round_trip_with_several_signers() {
        let a = Ed25519Signer::generate("a.example").unwrap();
        let b = Ed25519Signer::generate("b.example").unwrap();
        let mut note = Note::new("line one\n\nline three after a blank line\n").unwrap();
        note.sign(&a).unwrap();
        note.sign(&b).unwrap();
        let bytes = note.to_bytes();
        let parsed = Note::parse(&bytes).unwrap();
        assert_eq!(parsed, note);
        let known = VerifierSet::new().with(a.verifier()).unwrap().with(b.verifier()).unwrap();
        assert_eq!(parsed.verify(&known).unwrap().len(), 2);
    }

    #[test]
    fn key_strings_round_trip() {
        let s = Ed25519Signer::generate("example.com/log").unwrap();
        let again = Ed25519Signer::from_skey(&s.skey()).unwrap();
        assert_eq!(again.verifier(), s.verifier());
        assert!(s.skey().starts_with("PRIVATE+KEY+example.com/log+"));
        let v = Ed25519Verifier::from_vkey(&s.verifier().vkey()).unwrap();
        assert_eq!(v, s.verifier());
        assert_eq!(parse_verifier_key(&v.vkey()).unwrap().key_id(), v.key_id());
    }

    #[test]
    fn rejects_malformed_key_strings() {
        let good = SPEC_VKEY;
        for (bad, why) in [
            ("", "empty"),
            ("example.com/foo+530d903a", "two parts"),
            ("example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k+x", "a fourth part"),
            ("example.com/foo+530D903A+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k", "uppercase hash"),
            ("example.com/foo+530d903b+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k", "wrong hash"),
            ("example.com/fo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k", "other name"),
            ("example.com/foo+530d903+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k", "short hash"),
            ("+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k", "empty name"),
            ("example .com+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k", "space in name"),
            ("example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2", "bad base64"),
            ("example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k=", "bad padding"),
        ] {
            assert!(Ed25519Verifier::from_vkey(bad).is_err(), "{why}: {bad:?}");
        }
        assert!(Ed25519Verifier::from_vkey(good).is_ok());
        let s = Ed25519Signer::generate("a").unwrap();
        let skey = s.skey();
        assert!(Ed25519Signer::from_skey(&skey.replacen("PRIVATE+KEY+", "", 1)).is_err());
        assert!(Ed25519Signer::from_skey(&skey.replacen("+a+", "+b+", 1)).is_err());
        assert!(Ed25519Verifier::from_vkey(&skey).is_err());
    }

    #[test]
    fn rejects_malformed_notes() {
        let sig = "\u{2014} example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=";
        let cases: Vec<(String, &str)> = vec![
            (String::new(), "empty"),
            ("text\n".into(), "no signatures"),
            ("text\n\n".into(), "blank line but no signatures"),
            (format!("text\n\n{sig}"), "no final newline"),
            (format!("text\n{sig}\n"), "no blank line"),
            (format!("text\n\n{sig}\n\n"), "trailing blank line"),
            (format!("te\txt\n\n{sig}\n"), "tab"),
            (format!("text\r\n\n{sig}\n"), "carriage return"),
            ("text\n\n- example.com/foo AAAAAAAA\n".into(), "hyphen instead of em dash"),
            ("text\n\n\u{2014}example.com/foo AAAAAAAA\n".into(), "no space after dash"),
            ("text\n\n\u{2014} example.com/foo\n".into(), "no signature"),
            ("text\n\n\u{2014}  AAAAAAAA\n".into(), "empty name"),
            ("text\n\n\u{2014} a+b AAAAAAAA\n".into(), "plus in name"),
            ("text\n\n\u{2014} a AAAA\n".into(), "signature shorter than key id"),
            ("text\n\n\u{2014} a AAAAAA==\n".into(), "key id only"),
            ("text\n\n\u{2014} a AAAAAAAA \n".into(), "trailing space"),
            ("text\n\n\u{2014} a AAAAAAA\n".into(), "bad base64"),
            ("text\n\n\u{2014} a AAAAAAB=\n".into(), "non-canonical base64"),
            (format!("text\n\n{}", format!("{sig}\n").repeat(MAX_SIGNATURES + 1)), "too many signatures"),
            (format!("{}\n\n{sig}\n", "a".repeat(MAX_NOTE_SIZE)), "too large"),
        ];
        for (note, why) in cases {
            assert!(Note::parse(note.as_bytes()).is_err(), "accepted {why}");
        }
        assert_eq!(Note::parse(b"\xff\n\n"), Err(NoteError::NotUtf8));
        assert!(Note::new("no newline").is_err());
        assert!(Note::new("bell\u{7}\n").is_err());
        assert!(Note::new("").is_err());
    }
}
