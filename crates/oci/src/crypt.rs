//! Encrypting and decrypting whole images into OCI layouts, in the
//! ocicrypt format (see `sealpod-ocicrypt`), as `skopeo copy
//! --encryption-key jwe:…` / `--decryption-key …` do:
//!
//! * encrypting a plain layer streams it through AES-256-CTR into a new
//!   blob with a fresh key, and wraps the key for the recipients;
//! * encrypting an already encrypted layer only adds recipients: the key is
//!   unwrapped with a given private key, wrapped anew for the new
//!   recipients, and appended to the annotation; the layer's bytes are
//!   copied unchanged;
//! * decrypting streams each encrypted layer into a temporary blob file
//!   that becomes `blobs/sha256/<digest>` only once the layer's digest, its
//!   HMAC and the plaintext digest checked out; a failure leaves nothing.
//!
//! The config is copied as it is (ocicrypt does not encrypt it: labels, env
//! and `diff_ids` stay readable). Docker media types become OCI ones.

use std::collections::HashMap;
use std::io::Read;

use oci_spec::image::Descriptor;
use sealpod_ocicrypt::layer::{self as crypt_layer, LayerKey, ANNOTATION_JWE};
use sealpod_ocicrypt::{EncryptingReader, PrivateKey, PrivateOptions, Recipient};
use serde::Serialize;

use crate::compression::{Compression, LayerEncoding};
use crate::digest::VerifyingReader;
use crate::image::{LayerPlan, LocalImage};
use crate::{LayoutWriter, OciError};

/// What was done to one layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LayerAction {
    /// A plain layer was encrypted.
    Encrypted,
    /// An encrypted layer got more recipients; its bytes are unchanged.
    Rewrapped,
    /// An encrypted layer was decrypted.
    Decrypted,
    /// Copied as it was.
    Copied,
}

/// One layer of a transformed image.
#[derive(Debug, Clone, Serialize)]
pub struct LayerChange {
    /// The layer's digest in the source.
    pub from: String,
    /// Its digest in the result.
    pub to: String,
    /// Its media type in the result.
    pub media_type: String,
    /// Its size in bytes.
    pub size: u64,
    /// What was done.
    pub action: LayerAction,
}

/// An image written by [`LocalImage::encrypt_to`] or [`LocalImage::decrypt_to`].
#[derive(Debug, Clone, Serialize)]
pub struct Transformed {
    /// The new manifest's digest.
    pub manifest_digest: String,
    /// The tag it got in the layout.
    pub tag: String,
    /// Each layer, base first.
    pub layers: Vec<LayerChange>,
}

impl LocalImage {
    /// Writes this image, encrypted for `recipients`, into `out` under `tag`.
    /// Layers already encrypted get the new recipients added, which needs
    /// one of their recipients' private keys in `keys`. `progress` is called
    /// with each layer's index before it is processed.
    pub fn encrypt_to(
        &self,
        out: &mut LayoutWriter,
        tag: &str,
        recipients: &[Recipient],
        keys: &[PrivateKey],
        progress: &mut dyn FnMut(usize, &str, u64),
    ) -> Result<Transformed, OciError> {
        if recipients.is_empty() {
            return Err(OciError::InvalidReference {
                reference: tag.to_owned(),
                reason: "encrypting needs at least one recipient".into(),
            });
        }
        let existing = if self.is_encrypted() { self.layer_keys(keys)? } else { vec![None; self.layers.len()] };
        let mut layers = Vec::with_capacity(self.layers.len());
        let mut changes = Vec::with_capacity(self.layers.len());
        for (i, ((plan, original), key)) in self.layers.iter().zip(self.manifest.layers()).zip(&existing).enumerate() {
            progress(i, &plan.name, plan.size);
            let (desc, action) = match (key, &plan.encrypted) {
                (Some(key), Some(annotations)) => {
                    (self.rewrap(plan, original, key, annotations, recipients, out)?, LayerAction::Rewrapped)
                }
                _ => (self.encrypt_layer(plan, original, recipients, out)?, LayerAction::Encrypted),
            };
            changes.push(change(plan, &desc, action));
            layers.push(desc);
        }
        let manifest = out.add_image(&self.config_bytes, layers, tag)?;
        Ok(Transformed { manifest_digest: manifest.digest().to_string(), tag: tag.to_owned(), layers: changes })
    }

    /// Writes this image with every encrypted layer decrypted into `out`
    /// under `tag`; a layer for none of whose recipients `keys` holds the
    /// private key is an error.
    pub fn decrypt_to(
        &self,
        out: &mut LayoutWriter,
        tag: &str,
        keys: &[PrivateKey],
        progress: &mut dyn FnMut(usize, &str, u64),
    ) -> Result<Transformed, OciError> {
        let layer_keys = self.layer_keys(keys)?;
        let mut layers = Vec::with_capacity(self.layers.len());
        let mut changes = Vec::with_capacity(self.layers.len());
        for (i, ((plan, original), key)) in self.layers.iter().zip(self.manifest.layers()).zip(&layer_keys).enumerate()
        {
            progress(i, &plan.name, plan.size);
            let (desc, action) = match key {
                Some(key) => (self.decrypt_layer(plan, original, key, out)?, LayerAction::Decrypted),
                None => (self.copy_layer(plan, original, out)?, LayerAction::Copied),
            };
            changes.push(change(plan, &desc, action));
            layers.push(desc);
        }
        let manifest = out.add_image(&self.config_bytes, layers, tag)?;
        Ok(Transformed { manifest_digest: manifest.digest().to_string(), tag: tag.to_owned(), layers: changes })
    }

    fn encrypt_layer(
        &self,
        plan: &LayerPlan,
        original: &Descriptor,
        recipients: &[Recipient],
        out: &LayoutWriter,
    ) -> Result<Descriptor, OciError> {
        let plain_type = self.oci_layer_type(plan)?;
        let media_type = crypt_layer::encrypted_media_type(plain_type)
            .map_err(|source| OciError::Crypt { layer: plan.name.clone(), source })?;
        let private = PrivateOptions::generate(&plan.digest.to_string())
            .map_err(|source| OciError::Crypt { layer: plan.name.clone(), source })?;
        let (raw, _) = self.open_blob(&plan.location, &plan.name)?;
        // The plaintext's digest is checked by the encrypting reader itself.
        let mut encrypting = EncryptingReader::new(raw, &private);
        let mut desc = out.write_blob_from(&media_type, &mut encrypting).map_err(|e| layer_io(plan, e))?;
        let public = encrypting.public_options().cloned().ok_or_else(|| OciError::Decryption {
            layer: plan.name.clone(),
            reason: "the layer was not read to its end".into(),
        })?;
        let key = LayerKey { private, public };
        let wrapped = crypt_layer::wrap_layer(&key, recipients, None)
            .map_err(|source| OciError::Crypt { layer: plan.name.clone(), source })?;
        let mut annotations =
            crypt_layer::without_crypt_annotations(&original.annotations().clone().unwrap_or_default());
        annotations.extend(wrapped);
        desc.set_annotations(Some(annotations));
        Ok(desc)
    }

    fn rewrap(
        &self,
        plan: &LayerPlan,
        original: &Descriptor,
        key: &LayerKey,
        annotations: &HashMap<String, String>,
        recipients: &[Recipient],
        out: &LayoutWriter,
    ) -> Result<Descriptor, OciError> {
        let mut desc = self.copy_layer(plan, original, out)?;
        let wrapped = crypt_layer::wrap_layer(key, recipients, annotations.get(ANNOTATION_JWE).map(String::as_str))
            .map_err(|source| OciError::Crypt { layer: plan.name.clone(), source })?;
        let mut annotations = annotations.clone();
        annotations.extend(wrapped);
        desc.set_annotations(Some(annotations));
        Ok(desc)
    }

    fn decrypt_layer(
        &self,
        plan: &LayerPlan,
        original: &Descriptor,
        key: &LayerKey,
        out: &LayoutWriter,
    ) -> Result<Descriptor, OciError> {
        let media_type = crypt_layer::decrypted_media_type(&original.media_type().to_string())
            .map_err(|source| OciError::Crypt { layer: plan.name.clone(), source })?
            .to_owned();
        let (raw, _) = self.open_blob(&plan.location, &plan.name)?;
        let verifying = VerifyingReader::new(raw, plan.name.clone(), &plan.digest, Some(plan.size));
        let verdict = verifying.verdict();
        let mut decrypting = sealpod_ocicrypt::DecryptingReader::new(verifying, &key.private, &key.public);
        // The blob file becomes visible only if the copy reached the end,
        // where the HMAC and plaintext digest checks fail the last read; a
        // sha256 plaintext digest is then the blob's name, unhashed again.
        let written = if key.private.digest.starts_with("sha256:") {
            out.write_verified_blob(&media_type, &key.private.digest, &mut decrypting)
        } else {
            out.write_blob_from(&media_type, &mut decrypting)
        };
        if let Some(mismatch) = verdict.failure(&plan.name) {
            return Err(mismatch);
        }
        if let sealpod_ocicrypt::Verdict::Failed(reason) = decrypting.verdict() {
            return Err(OciError::Decryption { layer: plan.name.clone(), reason: reason.clone() });
        }
        let mut desc = written.map_err(|e| layer_io(plan, e))?;
        desc.set_annotations(non_empty(crypt_layer::without_crypt_annotations(
            &original.annotations().clone().unwrap_or_default(),
        )));
        Ok(desc)
    }

    fn copy_layer(&self, plan: &LayerPlan, original: &Descriptor, out: &LayoutWriter) -> Result<Descriptor, OciError> {
        let media_type = if plan.encrypted.is_some() {
            original.media_type().to_string()
        } else {
            self.oci_layer_type(plan)?.to_owned()
        };
        let (raw, _) = self.open_blob(&plan.location, &plan.name)?;
        let verifying = VerifyingReader::new(raw, plan.name.clone(), &plan.digest, Some(plan.size));
        let verdict = verifying.verdict();
        let written = out.write_blob_from(&media_type, verifying);
        if let Some(mismatch) = verdict.failure(&plan.name) {
            return Err(mismatch);
        }
        let mut desc = written.map_err(|e| layer_io(plan, e))?;
        desc.set_annotations(original.annotations().clone());
        Ok(desc)
    }

    /// The OCI media type of a plain layer (Docker types are sniffed, as
    /// their labels are unreliable).
    fn oci_layer_type(&self, plan: &LayerPlan) -> Result<&'static str, OciError> {
        let compression = match plan.encoding {
            LayerEncoding::Known(c) => c,
            LayerEncoding::Sniff => {
                let (mut raw, _) = self.open_blob(&plan.location, &plan.name)?;
                let mut head = [0u8; 4];
                let n = raw.read(&mut head).map_err(|e| OciError::Layer {
                    layer: plan.name.clone(),
                    context: "reading".into(),
                    source: e,
                })?;
                Compression::sniff(&head[..n])
            }
        };
        if plan.digest_of_decoded && compression != Compression::None {
            return Err(OciError::UnsupportedMediaType {
                blob: plan.name.clone(),
                media_type: "a compressed layer of a docker archive (convert it with `skopeo copy docker-archive:… \
                             oci:…` first)"
                    .into(),
            });
        }
        Ok(compression.oci_media_type())
    }
}

fn change(plan: &LayerPlan, desc: &Descriptor, action: LayerAction) -> LayerChange {
    LayerChange {
        from: plan.digest.to_string(),
        to: desc.digest().to_string(),
        media_type: desc.media_type().to_string(),
        size: desc.size(),
        action,
    }
}

fn layer_io(plan: &LayerPlan, source: OciError) -> OciError {
    match source {
        OciError::Io { source, .. } => {
            OciError::Layer { layer: plan.name.clone(), context: "writing the result".into(), source }
        }
        other => other,
    }
}

fn non_empty(map: HashMap<String, String>) -> Option<HashMap<String, String>> {
    (!map.is_empty()).then_some(map)
}
