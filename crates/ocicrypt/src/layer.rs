//! What ocicrypt puts on a layer descriptor: the `+encrypted` media types,
//! `org.opencontainers.image.enc.keys.jwe` (one or more base64 JWEs joined
//! by commas, each wrapping the private options for some recipients) and
//! `org.opencontainers.image.enc.pubopts` (base64 public options), as
//! ocicrypt's `encryption.go` and `spec/spec.go` define them.

use std::collections::HashMap;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use crate::cipher::{PrivateOptions, PublicOptions};
use crate::error::CryptError;
use crate::keys::{PrivateKey, Recipient};

/// Wrapped private options for JWE recipients.
pub const ANNOTATION_JWE: &str = "org.opencontainers.image.enc.keys.jwe";
/// The public options.
pub const ANNOTATION_PUBOPTS: &str = "org.opencontainers.image.enc.pubopts";
/// Every ocicrypt annotation starts so.
pub const ANNOTATION_PREFIX: &str = "org.opencontainers.image.enc.";
/// What an encrypted layer's media type ends with.
pub const ENCRYPTED_SUFFIX: &str = "+encrypted";
/// Most JWEs joined in one annotation.
pub const MAX_WRAPPED: usize = 64;

/// The layer media types ocicrypt encrypts (image-spec layers, plain,
/// gzip and zstd, and their non-distributable forms).
const ENCRYPTABLE: &[&str] = &[
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
];

/// Whether a layer of this media type is encrypted.
pub fn is_encrypted(media_type: &str) -> bool {
    media_type.ends_with(ENCRYPTED_SUFFIX)
}

/// The `+encrypted` form of an OCI layer media type.
pub fn encrypted_media_type(media_type: &str) -> Result<String, CryptError> {
    if is_encrypted(media_type) {
        return Err(CryptError::MediaType(media_type.into(), "is already encrypted"));
    }
    if ENCRYPTABLE.contains(&media_type) {
        Ok(format!("{media_type}{ENCRYPTED_SUFFIX}"))
    } else {
        Err(CryptError::MediaType(media_type.into(), "is not an OCI layer type ocicrypt encrypts"))
    }
}

/// The media type an encrypted layer had before encryption.
pub fn decrypted_media_type(media_type: &str) -> Result<&str, CryptError> {
    match media_type.strip_suffix(ENCRYPTED_SUFFIX) {
        Some(plain) if ENCRYPTABLE.contains(&plain) => Ok(plain),
        Some(_) => Err(CryptError::MediaType(media_type.into(), "is not an encrypted layer type sealpod can read")),
        None => Err(CryptError::MediaType(media_type.into(), "is not encrypted")),
    }
}

/// The annotations without ocicrypt's (for a decrypted descriptor).
pub fn without_crypt_annotations(annotations: &HashMap<String, String>) -> HashMap<String, String> {
    annotations.iter().filter(|(k, _)| !k.starts_with(ANNOTATION_PREFIX)).map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// A layer's options, unwrapped.
#[derive(Debug, Clone)]
pub struct LayerKey {
    /// Key, nonce and plaintext digest.
    pub private: PrivateOptions,
    /// The HMAC.
    pub public: PublicOptions,
}

/// Unwraps a layer's options with the first of `keys` that is a recipient.
pub fn unwrap_layer(annotations: &HashMap<String, String>, keys: &[PrivateKey]) -> Result<LayerKey, CryptError> {
    let Some(wrapped) = annotations.get(ANNOTATION_JWE).filter(|v| !v.is_empty()) else {
        let others: Vec<&str> =
            annotations.keys().filter_map(|k| k.strip_prefix("org.opencontainers.image.enc.keys.")).collect();
        if !others.is_empty() {
            return Err(CryptError::Annotation {
                name: ANNOTATION_JWE,
                reason: format!(
                    "absent; the layer is wrapped only for {} recipients, which sealpod does not read",
                    others.join(", ")
                ),
            });
        }
        return Err(CryptError::MissingAnnotation(ANNOTATION_JWE));
    };
    let public = public_options(annotations)?;
    let entries: Vec<&str> = wrapped.split(',').collect();
    if entries.len() > MAX_WRAPPED {
        return Err(CryptError::Annotation { name: ANNOTATION_JWE, reason: format!("{} JWEs joined", entries.len()) });
    }
    let mut errors = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        let jwe = STANDARD.decode(entry).map_err(|e| CryptError::Annotation {
            name: ANNOTATION_JWE,
            reason: format!("entry {i} is not base64: {e}"),
        })?;
        match crate::jwe::open(&jwe, keys) {
            Ok(json) => {
                let private = PrivateOptions::from_json(&json)?;
                return Ok(LayerKey { private, public });
            }
            Err(CryptError::NoRecipient { tried, .. }) => errors.push(tried),
            Err(e) => return Err(e),
        }
    }
    Err(CryptError::NoRecipient { keys: keys.len(), tried: errors.join("; ") })
}

/// The public options of an encrypted layer.
pub fn public_options(annotations: &HashMap<String, String>) -> Result<PublicOptions, CryptError> {
    let b64 = annotations.get(ANNOTATION_PUBOPTS).ok_or(CryptError::MissingAnnotation(ANNOTATION_PUBOPTS))?;
    let json = STANDARD
        .decode(b64)
        .map_err(|e| CryptError::Annotation { name: ANNOTATION_PUBOPTS, reason: format!("not base64: {e}") })?;
    PublicOptions::from_json(&json)
}

/// The annotations to set on a layer encrypted with `key` for
/// `recipients`. `existing` is the layer's current `…keys.jwe` value when
/// recipients are added to an encrypted layer: the new JWE is appended to
/// it, as ocicrypt's `preWrapKeys` does, and the layer data is untouched.
pub fn wrap_layer(
    key: &LayerKey,
    recipients: &[Recipient],
    existing: Option<&str>,
) -> Result<Vec<(String, String)>, CryptError> {
    let jwe = crate::jwe::seal(&key.private.to_json(), recipients)?;
    let encoded = STANDARD.encode(jwe);
    let wrapped = match existing.filter(|e| !e.is_empty()) {
        Some(e) => format!("{e},{encoded}"),
        None => encoded,
    };
    Ok(vec![
        (ANNOTATION_JWE.to_owned(), wrapped),
        (ANNOTATION_PUBOPTS.to_owned(), STANDARD.encode(key.public.to_json())),
    ])
}

/// The first object key that appears twice at one level of a JSON
/// document, if any. serde (and Go's encoding/json) keep the last of two
/// duplicates silently; a manifest whose annotations say two things is
/// refused instead.
pub fn duplicate_json_key(json: &[u8]) -> Option<String> {
    use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
    use std::cell::RefCell;

    thread_local!(static FOUND: RefCell<Option<String>> = const { RefCell::new(None) });

    struct Check;
    impl<'de> Deserialize<'de> for Check {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Check, D::Error> {
            d.deserialize_any(CheckVisitor)
        }
    }
    struct CheckVisitor;
    impl<'de> Visitor<'de> for CheckVisitor {
        type Value = Check;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("JSON")
        }
        fn visit_bool<E>(self, _: bool) -> Result<Check, E> {
            Ok(Check)
        }
        fn visit_i64<E>(self, _: i64) -> Result<Check, E> {
            Ok(Check)
        }
        fn visit_u64<E>(self, _: u64) -> Result<Check, E> {
            Ok(Check)
        }
        fn visit_f64<E>(self, _: f64) -> Result<Check, E> {
            Ok(Check)
        }
        fn visit_str<E>(self, _: &str) -> Result<Check, E> {
            Ok(Check)
        }
        fn visit_unit<E>(self) -> Result<Check, E> {
            Ok(Check)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Check, A::Error> {
            while seq.next_element::<Check>()?.is_some() {}
            Ok(Check)
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Check, A::Error> {
            let mut seen = std::collections::HashSet::new();
            while let Some(k) = map.next_key::<String>()? {
                if !seen.insert(k.clone()) {
                    FOUND.with(|f| *f.borrow_mut() = Some(k.clone()));
                    return Err(de::Error::custom("duplicate key"));
                }
                map.next_value::<Check>()?;
            }
            Ok(Check)
        }
    }
    FOUND.with(|f| *f.borrow_mut() = None);
    let _ = serde_json::from_slice::<Check>(json);
    FOUND.with(|f| f.borrow_mut().take())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types_gain_and_lose_the_suffix() {
        let gz = "application/vnd.oci.image.layer.v1.tar+gzip";
        let enc = encrypted_media_type(gz).unwrap();
        assert_eq!(enc, "application/vnd.oci.image.layer.v1.tar+gzip+encrypted");
        assert_eq!(decrypted_media_type(&enc).unwrap(), gz);
        assert!(encrypted_media_type(&enc).is_err());
        assert!(encrypted_media_type("application/vnd.docker.image.rootfs.diff.tar.gzip").is_err());
        assert!(decrypted_media_type("application/wasm+encrypted").is_err());
    }

    #[test]
    fn adding_recipients_appends_and_either_key_unwraps() {
        let digest = format!("sha256:{}", "a".repeat(64));
        let key =
            LayerKey { private: PrivateOptions::generate(&digest).unwrap(), public: PublicOptions { hmac: [1; 32] } };
        let a = PrivateKey::generate_p256();
        let b = PrivateKey::generate_p256();
        let to = |k: &PrivateKey| Recipient::to(k.public_key());
        let first: HashMap<_, _> = wrap_layer(&key, &[to(&a)], None).unwrap().into_iter().collect();
        let second: HashMap<_, _> =
            wrap_layer(&key, &[to(&b)], first.get(ANNOTATION_JWE).map(String::as_str)).unwrap().into_iter().collect();
        assert_eq!(second[ANNOTATION_JWE].matches(',').count(), 1);
        for k in [a, b] {
            let got = unwrap_layer(&second, &[k]).unwrap();
            assert_eq!(*got.private.symkey, *key.private.symkey);
            assert_eq!(got.public, key.public);
        }
        let err = unwrap_layer(&second, &[PrivateKey::generate_p256()]).unwrap_err();
        assert!(matches!(err, CryptError::NoRecipient { .. }));
    }

    #[test]
    fn missing_or_foreign_annotations_are_named() {
        let k = PrivateKey::generate_p256();
        let err = unwrap_layer(&HashMap::new(), &[k.clone()]).unwrap_err().to_string();
        assert!(err.contains(ANNOTATION_JWE), "{err}");
        let pkcs7: HashMap<_, _> = [("org.opencontainers.image.enc.keys.pkcs7".to_owned(), "x".to_owned())].into();
        let err = unwrap_layer(&pkcs7, &[k.clone()]).unwrap_err().to_string();
        assert!(err.contains("pkcs7"), "{err}");
        let no_pub: HashMap<_, _> = [(ANNOTATION_JWE.to_owned(), "eA==".to_owned())].into();
        let err = unwrap_layer(&no_pub, &[k]).unwrap_err().to_string();
        assert!(err.contains(ANNOTATION_PUBOPTS), "{err}");
    }

    #[test]
    fn duplicate_keys_are_found_at_any_depth() {
        assert_eq!(duplicate_json_key(br#"{"a":1,"b":{"c":1,"c":2}}"#).as_deref(), Some("c"));
        assert_eq!(duplicate_json_key(br#"{"a":[{"x":1},{"x":1}]}"#), None);
        assert_eq!(duplicate_json_key(br#"{"a":1,"a":1}"#).as_deref(), Some("a"));
    }
}
