//! Digest algorithms: the ones a manifest signature may name (`openssl dgst
//! -sha256`, `-sha3-256`, ...) and the ones a `payload[].hash` may use, with
//! the checks that tie a manifest to the image a pod runs.

use std::fmt;
use std::str::FromStr;

use sha2::Digest as _;

use crate::manifest::PayloadManifest;

/// A message digest, by the name OpenSSL gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DigestAlgorithm {
    /// SHA-224 (FIPS 180-4).
    Sha224,
    /// SHA-256 (FIPS 180-4).
    Sha256,
    /// SHA-384 (FIPS 180-4).
    Sha384,
    /// SHA-512 (FIPS 180-4).
    Sha512,
    /// SHA3-224 (FIPS 202).
    Sha3_224,
    /// SHA3-256 (FIPS 202).
    Sha3_256,
    /// SHA3-384 (FIPS 202).
    Sha3_384,
    /// SHA3-512 (FIPS 202).
    Sha3_512,
}

/// The digest name is not one this crate knows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown digest `{name}`: expected one of sha224, sha256, sha384, sha512, sha3-224, sha3-256, sha3-384, sha3-512"
)]
pub struct UnknownDigest {
    /// The name as given.
    pub name: String,
}

impl DigestAlgorithm {
    /// Every supported algorithm.
    pub const ALL: [DigestAlgorithm; 8] = [
        DigestAlgorithm::Sha224,
        DigestAlgorithm::Sha256,
        DigestAlgorithm::Sha384,
        DigestAlgorithm::Sha512,
        DigestAlgorithm::Sha3_224,
        DigestAlgorithm::Sha3_256,
        DigestAlgorithm::Sha3_384,
        DigestAlgorithm::Sha3_512,
    ];

    /// The canonical lower-case name, as `openssl dgst -<name>` spells it.
    pub fn name(self) -> &'static str {
        match self {
            DigestAlgorithm::Sha224 => "sha224",
            DigestAlgorithm::Sha256 => "sha256",
            DigestAlgorithm::Sha384 => "sha384",
            DigestAlgorithm::Sha512 => "sha512",
            DigestAlgorithm::Sha3_224 => "sha3-224",
            DigestAlgorithm::Sha3_256 => "sha3-256",
            DigestAlgorithm::Sha3_384 => "sha3-384",
            DigestAlgorithm::Sha3_512 => "sha3-512",
        }
    }

    /// Parses a name case-insensitively (`sha256`, `SHA256`, `sha3-256`).
    pub fn from_name(name: &str) -> Result<DigestAlgorithm, UnknownDigest> {
        DigestAlgorithm::ALL
            .into_iter()
            .find(|alg| alg.name().eq_ignore_ascii_case(name))
            .ok_or_else(|| UnknownDigest { name: name.chars().take(64).collect() })
    }

    /// The length of the digest in bytes.
    pub fn output_len(self) -> usize {
        match self {
            DigestAlgorithm::Sha224 | DigestAlgorithm::Sha3_224 => 28,
            DigestAlgorithm::Sha256 | DigestAlgorithm::Sha3_256 => 32,
            DigestAlgorithm::Sha384 | DigestAlgorithm::Sha3_384 => 48,
            DigestAlgorithm::Sha512 | DigestAlgorithm::Sha3_512 => 64,
        }
    }

    /// The digest of `data`.
    pub fn digest(self, data: &[u8]) -> Vec<u8> {
        match self {
            DigestAlgorithm::Sha224 => sha2::Sha224::digest(data).to_vec(),
            DigestAlgorithm::Sha256 => sha2::Sha256::digest(data).to_vec(),
            DigestAlgorithm::Sha384 => sha2::Sha384::digest(data).to_vec(),
            DigestAlgorithm::Sha512 => sha2::Sha512::digest(data).to_vec(),
            DigestAlgorithm::Sha3_224 => sha3::Sha3_224::digest(data).to_vec(),
            DigestAlgorithm::Sha3_256 => sha3::Sha3_256::digest(data).to_vec(),
            DigestAlgorithm::Sha3_384 => sha3::Sha3_384::digest(data).to_vec(),
            DigestAlgorithm::Sha3_512 => sha3::Sha3_512::digest(data).to_vec(),
        }
    }
}

impl fmt::Display for DigestAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for DigestAlgorithm {
    type Err = UnknownDigest;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DigestAlgorithm::from_name(s)
    }
}

/// A `payload[].hash` value, `algo:hex`.
///
/// Accepted algorithm names: those of [`DigestAlgorithm`], and `sha3` alone,
/// whose width follows from the length of the hex digest (Golem's own
/// examples write `sha3:` with 56 hex digits, that is SHA3-224).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PayloadHash {
    algorithm: DigestAlgorithm,
    digest: Vec<u8>,
}

/// A hash that is not `algo:hex` with a known algorithm and the right length.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HashError {
    /// No `:` between the algorithm and the digest.
    #[error("expected `algorithm:hex-digest`, for example `sha256:e3b0c442...`")]
    Format,
    /// The algorithm is not supported.
    #[error("unknown hash algorithm `{0}`: expected sha224, sha256, sha384, sha512, sha3 or sha3-224/256/384/512")]
    UnknownAlgorithm(String),
    /// The digest is not hexadecimal.
    #[error("the digest is not hexadecimal")]
    NotHex,
    /// The digest has the wrong length for its algorithm.
    #[error("a {algorithm} digest has {expected} hex digits, this one has {actual}")]
    Length {
        /// The algorithm named.
        algorithm: String,
        /// Hex digits expected.
        expected: usize,
        /// Hex digits found.
        actual: usize,
    },
}

impl PayloadHash {
    /// Parses `algo:hex`.
    pub fn parse(text: &str) -> Result<PayloadHash, HashError> {
        let (name, hex_digits) = text.split_once(':').ok_or(HashError::Format)?;
        let algorithm = if name.eq_ignore_ascii_case("sha3") {
            match hex_digits.len() {
                56 => DigestAlgorithm::Sha3_224,
                64 => DigestAlgorithm::Sha3_256,
                96 => DigestAlgorithm::Sha3_384,
                128 => DigestAlgorithm::Sha3_512,
                actual => return Err(HashError::Length { algorithm: "sha3".into(), expected: 56, actual }),
            }
        } else {
            DigestAlgorithm::from_name(name)
                .map_err(|_| HashError::UnknownAlgorithm(name.chars().take(32).collect()))?
        };
        if !hex_digits.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(HashError::NotHex);
        }
        if hex_digits.len() != algorithm.output_len() * 2 {
            return Err(HashError::Length {
                algorithm: algorithm.name().into(),
                expected: algorithm.output_len() * 2,
                actual: hex_digits.len(),
            });
        }
        let digest = hex::decode(hex_digits).map_err(|_| HashError::NotHex)?;
        Ok(PayloadHash { algorithm, digest })
    }

    /// Hashes `bytes` with `algorithm`.
    pub fn of(algorithm: DigestAlgorithm, bytes: &[u8]) -> PayloadHash {
        PayloadHash { algorithm, digest: algorithm.digest(bytes) }
    }

    /// The algorithm.
    pub fn algorithm(&self) -> DigestAlgorithm {
        self.algorithm
    }

    /// The digest bytes.
    pub fn digest(&self) -> &[u8] {
        &self.digest
    }

    /// Whether `bytes` hash to this value.
    pub fn matches(&self, bytes: &[u8]) -> bool {
        self.algorithm.digest(bytes) == self.digest
    }
}

impl fmt::Display for PayloadHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm, hex::encode(&self.digest))
    }
}

impl FromStr for PayloadHash {
    type Err = HashError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PayloadHash::parse(s)
    }
}

impl serde::Serialize for PayloadHash {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Whether `bytes` hash to `hash` (`algo:hex`, as in `payload[].hash`).
/// A malformed `hash` matches nothing.
pub fn digest_matches(hash: &str, bytes: &[u8]) -> bool {
    PayloadHash::parse(hash).is_ok_and(|hash| hash.matches(bytes))
}

/// Why an image is not the one a manifest names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageDigestError {
    /// The image digest itself is malformed.
    #[error("image digest `{digest}` is malformed: {source}")]
    InvalidImageDigest {
        /// The digest as given.
        digest: String,
        /// What is wrong with it.
        source: HashError,
    },
    /// No `payload[].hash` uses the image digest's algorithm, so they cannot be compared.
    #[error(
        "the manifest's payload hashes ({manifest_hashes}) use no {algorithm} digest, so the image digest cannot be \
         compared with them; check the image manifest bytes with `check_image_bytes` instead"
    )]
    NoComparableHash {
        /// The image digest's algorithm.
        algorithm: DigestAlgorithm,
        /// The manifest's hashes, comma-separated.
        manifest_hashes: String,
    },
    /// The image is not one the manifest names.
    #[error("image {image} is not named by the payload manifest, which allows {manifest_hashes}")]
    Mismatch {
        /// The image's digest (or the hashes computed over its bytes).
        image: String,
        /// The manifest's hashes, comma-separated.
        manifest_hashes: String,
    },
}

fn listed(manifest: &PayloadManifest) -> String {
    manifest.payload.iter().map(|p| p.hash.to_string()).collect::<Vec<_>>().join(", ")
}

/// Checks that the image a pod runs, known by its digest (`sha256:<hex>`,
/// the OCI digest of its image manifest), is one that `payload[].hash` names.
pub fn check_image_digest(manifest: &PayloadManifest, image_digest: &str) -> Result<(), ImageDigestError> {
    let image = PayloadHash::parse(image_digest).map_err(|source| ImageDigestError::InvalidImageDigest {
        digest: image_digest.chars().take(200).collect(),
        source,
    })?;
    if manifest.payload.iter().any(|p| p.hash == image) {
        return Ok(());
    }
    if !manifest.payload.iter().any(|p| p.hash.algorithm() == image.algorithm()) {
        return Err(ImageDigestError::NoComparableHash {
            algorithm: image.algorithm(),
            manifest_hashes: listed(manifest),
        });
    }
    Err(ImageDigestError::Mismatch { image: image.to_string(), manifest_hashes: listed(manifest) })
}

/// Checks that `bytes` (the image's OCI manifest, whose sha256 is the image
/// digest) hash to one of `payload[].hash`, each with its own algorithm:
/// the way to check a manifest that names its payload by a SHA-3 digest.
pub fn check_image_bytes(manifest: &PayloadManifest, bytes: &[u8]) -> Result<(), ImageDigestError> {
    if manifest.payload.iter().any(|p| p.hash.matches(bytes)) {
        return Ok(());
    }
    Err(ImageDigestError::Mismatch {
        image: PayloadHash::of(DigestAlgorithm::Sha256, bytes).to_string(),
        manifest_hashes: listed(manifest),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_case_insensitively() {
        for alg in DigestAlgorithm::ALL {
            assert_eq!(DigestAlgorithm::from_name(alg.name()).unwrap(), alg);
            assert_eq!(DigestAlgorithm::from_name(&alg.name().to_uppercase()).unwrap(), alg);
            assert_eq!(alg.digest(b"x").len(), alg.output_len());
        }
        assert!(DigestAlgorithm::from_name("md5").is_err());
        assert!(DigestAlgorithm::from_name("sha1").is_err());
    }

    #[test]
    fn sha3_without_width_takes_it_from_the_digest_length() {
        let hash = PayloadHash::parse("sha3:e5f5ddfd649525dbe25d93d9ed51d1bdd0849933d9a5720adb4b5810").unwrap();
        assert_eq!(hash.algorithm(), DigestAlgorithm::Sha3_224);
        let empty = "sha3-256:a7ffc6f8bf1ed76651c14756a061d662f580ff4de43b49fa82d80a4b80f8434a";
        assert!(digest_matches(empty, b""));
        assert!(digest_matches(&empty.replace("sha3-256", "sha3"), b""));
        assert!(!digest_matches(empty, b"x"));
    }

    #[test]
    fn rejects_malformed_hashes() {
        assert_eq!(PayloadHash::parse("deadbeef"), Err(HashError::Format));
        assert!(matches!(PayloadHash::parse("md5:00"), Err(HashError::UnknownAlgorithm(_))));
        assert!(matches!(PayloadHash::parse("sha256:zz"), Err(HashError::NotHex)));
        assert!(matches!(PayloadHash::parse("sha256:00"), Err(HashError::Length { expected: 64, .. })));
        assert!(matches!(PayloadHash::parse("sha3:00"), Err(HashError::Length { .. })));
        assert!(!digest_matches("nonsense", b""));
    }

    fn manifest(hashes: &[String]) -> PayloadManifest {
        let payload: Vec<String> = hashes.iter().map(|h| format!(r#"{{"urls": [], "hash": "{h}"}}"#)).collect();
        let json = format!(
            r#"{{"version": "0.1.0", "createdAt": "2024-01-01T00:00:00Z", "expiresAt": "2100-01-01T00:00:00Z",
               "payload": [{}]}}"#,
            payload.join(", ")
        );
        crate::manifest::parse_manifest_json(json.as_bytes()).unwrap()
    }

    #[test]
    fn ties_the_manifest_to_the_image_digest() {
        let image = b"{\"schemaVersion\": 2}";
        let sha256 = PayloadHash::of(DigestAlgorithm::Sha256, image).to_string();
        let other = PayloadHash::of(DigestAlgorithm::Sha256, b"other").to_string();
        let m = manifest(&[other.clone(), sha256.clone()]);
        assert_eq!(check_image_digest(&m, &sha256), Ok(()));
        assert_eq!(check_image_digest(&m, &sha256.to_uppercase().replace("SHA256", "sha256")), Ok(()));
        let m = manifest(std::slice::from_ref(&other));
        assert!(matches!(check_image_digest(&m, &sha256), Err(ImageDigestError::Mismatch { .. })));
        assert!(matches!(check_image_digest(&m, "sha256:00"), Err(ImageDigestError::InvalidImageDigest { .. })));
        let sha3 = PayloadHash::of(DigestAlgorithm::Sha3_224, image).to_string().replace("sha3-224", "sha3");
        let m = manifest(&[sha3]);
        let err = check_image_digest(&m, &sha256).unwrap_err();
        assert!(matches!(err, ImageDigestError::NoComparableHash { .. }), "{err}");
        assert_eq!(check_image_bytes(&m, image), Ok(()));
        assert!(check_image_bytes(&m, b"tampered").is_err());
    }
}
