//! `sealpod image encrypt` and `sealpod image decrypt`: ocicrypt images in
//! OCI layouts, as `skopeo copy --encryption-key jwe:…` and
//! `--decryption-key …` make and read them.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use sealpod_oci::ocicrypt::{self, PrivateKey, Recipient};
use sealpod_oci::{ImageReference, LayoutWriter, LocalImage, Transformed};
use zeroize::Zeroizing;

#[derive(Args)]
pub struct EncryptArgs {
    /// The image to encrypt: oci:DIR[:TAG], oci-archive:FILE[:TAG],
    /// docker-archive:FILE[:NAME:TAG] or a path.
    src: String,
    /// Where to write it: oci:DIR[:TAG] (TAG defaults to the source's, or latest).
    dst: String,
    /// A recipient's public key, jwe:FILE (PEM, DER or JWK; RSA, EC P-256 or
    /// P-384). Repeatable.
    #[arg(long = "recipient", value_name = "jwe:FILE", required = true)]
    recipients: Vec<String>,
    /// A private key of a current recipient, to add recipients to an image
    /// that is already encrypted (its layers are not re-encrypted).
    #[arg(long = "key", value_name = "FILE")]
    keys: Vec<PathBuf>,
}

#[derive(Args)]
pub struct DecryptArgs {
    /// The encrypted image: oci:DIR[:TAG], oci-archive:FILE[:TAG] or a path.
    src: String,
    /// Where to write the decrypted image: oci:DIR[:TAG].
    dst: String,
    /// A private key (PEM PKCS#8, PKCS#1 or SEC1, DER, or JWK). Repeatable;
    /// each layer uses the first that is one of its recipients.
    #[arg(long = "key", value_name = "FILE", required = true)]
    keys: Vec<PathBuf>,
}

/// Reads a key file into memory that is cleared afterwards.
fn read_key_file(path: &Path) -> Result<Zeroizing<Vec<u8>>> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut bytes = Zeroizing::new(Vec::new());
    file.take(ocicrypt::keys::MAX_KEY_FILE as u64 + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("reading {}", path.display()))?;
    Ok(bytes)
}

pub fn private_keys(paths: &[PathBuf]) -> Result<Vec<PrivateKey>> {
    paths
        .iter()
        .map(|p| ocicrypt::parse_private_key(&read_key_file(p)?).with_context(|| format!("{}", p.display())))
        .collect()
}

fn recipients(specs: &[String]) -> Result<Vec<Recipient>> {
    specs
        .iter()
        .map(|spec| {
            let path = match spec.split_once(':') {
                Some(("jwe", path)) => path,
                Some((scheme @ ("pkcs7" | "pgp" | "pkcs11" | "provider"), _)) => {
                    bail!("--recipient {spec}: {scheme}: recipients are not supported; use jwe:PUBLIC-KEY-FILE")
                }
                _ => spec.as_str(),
            };
            let bytes = read_key_file(Path::new(path))?;
            ocicrypt::parse_public_key(&bytes).with_context(|| format!("--recipient {spec}"))
        })
        .collect()
}

/// `oci:DIR[:TAG]` or a directory: where to write and under which tag.
fn destination(dst: &str, src: &LocalImage) -> Result<(PathBuf, String)> {
    let cwd = std::env::current_dir()?;
    let (path, tag) = match ImageReference::parse(dst, &cwd) {
        Ok(ImageReference::OciLayout { path, tag }) => (path, tag),
        Ok(_) => bail!("{dst}: only OCI layouts are written (oci:DIR[:TAG])"),
        // A directory that does not exist yet.
        Err(_) if !dst.contains(':') => (cwd.join(dst), None),
        Err(e) => return Err(e).with_context(|| format!("destination {dst}")),
    };
    let tag = tag.or_else(|| src.reference().tag().map(str::to_owned)).unwrap_or_else(|| "latest".into());
    Ok((path, tag))
}

fn open_source(src: &str) -> Result<LocalImage> {
    let reference = ImageReference::parse(src, &std::env::current_dir()?)
        .with_context(|| format!("{src:?} is not an image reference"))?;
    LocalImage::open(&reference).with_context(|| format!("opening {src}"))
}

fn report(verb: &str, src: &str, dst: &Path, result: &Transformed, json: bool) {
    if json {
        let value = serde_json::json!({
            "source": src,
            "destination": format!("oci:{}:{}", dst.display(), result.tag),
            "manifest_digest": result.manifest_digest,
            "tag": result.tag,
            "layers": result.layers,
        });
        println!("{value}");
        return;
    }
    println!("{verb} {src} -> oci:{}:{}  {}", dst.display(), result.tag, result.manifest_digest);
    for (i, l) in result.layers.iter().enumerate() {
        println!("  layer {}: {:?} {} -> {} ({}, {} bytes)", i + 1, l.action, l.from, l.to, l.media_type, l.size);
    }
}

fn progress(json: bool) -> impl FnMut(usize, &str, u64) {
    move |_, name, size| {
        if !json {
            eprintln!("  {name}: {:.1} MiB …", size as f64 / (1 << 20) as f64);
        }
    }
}

pub fn encrypt(args: EncryptArgs, json: bool) -> Result<()> {
    let recipients = recipients(&args.recipients)?;
    let keys = private_keys(&args.keys)?;
    let image = open_source(&args.src)?;
    let (dir, tag) = destination(&args.dst, &image)?;
    let mut out = LayoutWriter::create(&dir)?;
    let result = image
        .encrypt_to(&mut out, &tag, &recipients, &keys, &mut progress(json))
        .with_context(|| format!("encrypting {}", args.src))?;
    report("encrypted", &args.src, &dir, &result, json);
    Ok(())
}

pub fn decrypt(args: DecryptArgs, json: bool) -> Result<()> {
    let keys = private_keys(&args.keys)?;
    let image = open_source(&args.src)?;
    if !image.is_encrypted() {
        bail!("{} has no encrypted layer", args.src);
    }
    let (dir, tag) = destination(&args.dst, &image)?;
    let mut out = LayoutWriter::create(&dir)?;
    let result = image
        .decrypt_to(&mut out, &tag, &keys, &mut progress(json))
        .with_context(|| format!("decrypting {}", args.src))?;
    report("decrypted", &args.src, &dir, &result, json);
    Ok(())
}
