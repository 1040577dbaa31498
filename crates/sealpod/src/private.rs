//! `sealpod deploy --encrypt-images`: the publisher's side of a private
//! image. Each container's local image is encrypted (ocicrypt, JWE to a
//! fresh EC P-256 key) or the encrypted copy made before for the same image
//! is reused; the encrypted image is pushed by digest, with no name and no
//! log entry, to the publisher's artifact node, which announces it on the
//! DHT; the container's image becomes the content address plus the key.
//! The key travels only after the provider has attested (see
//! `sealpod_publisher::carries_secrets`).
//!
//! The encrypted copy and its key are kept under
//! `$SEALPOD_HOME/private-images/<plain manifest hex>/` (`layout/`, and
//! `key.pem` readable by the owner only), so a redeploy of the same image
//! does not encrypt and upload it again.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use sealpod_oci::ocicrypt::{self, PrivateKey, Recipient};
use sealpod_oci::{ImageReference, LayoutWriter, LocalImage};
use sealpod_proto::{image::Source, ContentAddress, DecryptionKey, Pod};
use sealpod_registry::client::{push_from_store, ClientOptions, RegistryClient};
use sealpod_store::{RepositoryName, Store, PRIVATE_REPOSITORY};
use serde::Serialize;
use zeroize::Zeroizing;

/// The key kind the provider reads (`sealpod_provider::images::KEY_KIND_JWE_PEM`).
const KEY_KIND: &str = "ocicrypt-jwe-private-pem";

/// One image made private.
#[derive(Debug, Clone, Serialize)]
pub struct PrivateImage {
    /// The container.
    pub container: String,
    /// The local reference it was given as.
    pub source: String,
    /// The plain image's manifest digest.
    pub plain_digest: String,
    /// The encrypted image's manifest digest: what the provider fetches.
    pub digest: String,
    /// Whether the encrypted copy from an earlier deploy was reused.
    pub reused: bool,
}

/// An encrypted copy and its key, as kept in the publisher's home.
struct Sealed {
    layout: PathBuf,
    digest: String,
    key: Zeroizing<String>,
    reused: bool,
}

fn seal(home: &Path, image: &LocalImage) -> Result<Sealed> {
    let plain = image.manifest_digest().trim_start_matches("sha256:").to_owned();
    let dir = home.join("private-images").join(&plain);
    let (layout, key_file, digest_file) = (dir.join("layout"), dir.join("key.pem"), dir.join("digest"));
    if let (Ok(key), Ok(digest)) = (std::fs::read(&key_file), std::fs::read_to_string(&digest_file)) {
        let key = Zeroizing::new(String::from_utf8(key).context("key.pem is not text")?);
        // The key must still parse and the layout still open to the digest.
        ocicrypt::parse_private_key(key.as_bytes()).with_context(|| format!("{}", key_file.display()))?;
        let reopened =
            LocalImage::open(&ImageReference::OciLayout { path: layout.clone(), tag: Some("private".into()) });
        if reopened.is_ok_and(|i| i.manifest_digest() == digest.trim()) {
            return Ok(Sealed { layout, digest: digest.trim().to_owned(), key, reused: true });
        }
    }
    let staging = home.join("private-images").join(format!(".{plain}.partial"));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging)?;
    restrict(&staging, 0o700)?;
    let key = PrivateKey::generate_p256();
    let recipient = Recipient::to(key.public_key());
    let mut out = LayoutWriter::create(&staging.join("layout"))?;
    let encrypted = image.encrypt_to(&mut out, "private", &[recipient], &[], &mut |_, _, _| {})?;
    let pem = key.to_pkcs8_pem()?;
    crate::artifacts::write_secret(&staging.join("key.pem"), pem.trim_end())?;
    std::fs::write(staging.join("digest"), &encrypted.manifest_digest)?;
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::rename(&staging, &dir)?;
    Ok(Sealed { layout, digest: encrypted.manifest_digest, key: pem, reused: false })
}

fn restrict(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// Pushes the encrypted layout to the node by digest only.
async fn publish(layout: &Path, digest: &str, node: &str) -> Result<()> {
    let staging = tempfile::tempdir()?;
    let store = Store::open(staging.path().join("store"))?;
    let repo: RepositoryName = PRIVATE_REPOSITORY.parse().map_err(|e| anyhow::anyhow!("{e}"))?;
    let src = format!("oci:{}:private", layout.display());
    let (s, r) = (store.clone(), repo.clone());
    let loaded = tokio::task::spawn_blocking(move || crate::artifacts::load_local(&src, &s, &r)).await??;
    if loaded.to_string() != digest {
        bail!("the encrypted copy under {} is {loaded}, not {digest}", layout.display());
    }
    let url = format!("http://{}", node.trim_start_matches("http://"));
    let client = RegistryClient::new(&url, ClientOptions::default())?;
    push_from_store(&store, &loaded, &client, &repo, None)
        .await
        .with_context(|| format!("pushing the encrypted image to the artifact node at {node}"))?;
    Ok(())
}

/// Makes the images of the containers `which` (indexes) of `pod` private
/// (see the module docs). Local references are resolved against `base`
/// (the manifest's directory).
pub async fn make_private(
    pod: &mut Pod,
    which: &[usize],
    home: &Path,
    base: &Path,
    node: &str,
) -> Result<Vec<PrivateImage>> {
    let mut done = Vec::new();
    for (i, c) in pod.containers.iter_mut().enumerate().filter(|(i, _)| which.contains(i)) {
        let Some(Source::Reference(reference)) = c.image.as_ref().and_then(|i| i.source.clone()) else {
            bail!("containers[{i}]: a private image must be a local image reference");
        };
        if reference.starts_with("sealpod://") {
            bail!(
                "containers[{i}].image {reference}: a published image is public; a private image is a local one \
                 (oci:DIR:TAG, archives)"
            );
        }
        let parsed = ImageReference::parse(&reference, base).with_context(|| format!("containers[{i}].image"))?;
        let (home, parsed2) = (home.to_owned(), parsed.clone());
        let (sealed, plain_digest) = tokio::task::spawn_blocking(move || -> Result<(Sealed, String)> {
            let image = LocalImage::open(&parsed2)?;
            let plain = image.manifest_digest().to_owned();
            Ok((seal(&home, &image)?, plain))
        })
        .await?
        .with_context(|| format!("encrypting containers[{i}].image {reference}"))?;
        publish(&sealed.layout, &sealed.digest, node).await?;
        c.image = Some(sealpod_proto::Image {
            source: Some(Source::Content(ContentAddress {
                digest: sealed.digest.clone(),
                cid: Vec::new(),
                key: Some(DecryptionKey { kind: KEY_KIND.into(), data: sealed.key.as_bytes().to_vec() }),
            })),
        });
        done.push(PrivateImage {
            container: c.name.clone(),
            source: reference,
            plain_digest,
            digest: sealed.digest,
            reused: sealed.reused,
        });
    }
    Ok(done)
}

/// The deploy flags for private images.
#[derive(clap::Args)]
pub struct PrivateArgs {
    /// Encrypt every container image (ocicrypt, a fresh key per image, kept
    /// in $SEALPOD_HOME/private-images), publish it by digest through the
    /// artifact node (--node), and send the provider the digest and the key,
    /// only after it attested. (`privateImage: true` in the manifest does
    /// this for one container.)
    #[arg(long)]
    pub encrypt_images: bool,
    /// The publisher's artifact node (registry address) that serves private
    /// images to the provider's node.
    #[arg(long, env = "SEALPOD_NODE", default_value = "127.0.0.1:5000")]
    pub node: String,
}
