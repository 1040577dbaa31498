//! Container images on local disk: reading them from OCI image layouts and
//! archives, verifying every byte against its digest, unpacking their layers
//! into a root filesystem, and building small images.
//!
//! * [`ImageReference`] parses `oci:PATH[:TAG]`, `oci-archive:FILE[:TAG]`,
//!   `docker-archive:FILE[:NAME:TAG]` and bare paths (detected).
//! * [`LocalImage`] resolves a reference to one image manifest (by tag, then
//!   by platform), reads index, manifest and config with size limits and
//!   digest checks, and [`LocalImage::unpack`]s the layers, streaming, with
//!   whiteouts, and without ever writing outside the destination.
//! * [`ImageBuilder`] and [`LayoutWriter`] write OCI layouts
//!   deterministically; [`binary_rootfs_files`] lists what a dynamically
//!   linked binary needs to run in an empty root (for `sealpod demo` and tests).
//!
//! What it leaves to others: no registry HTTP (the `registry` crate), no
//! peer-to-peer transfer (`net`), no content store or garbage collection, no
//! signature or transparency-log checks (`tlog`), and no image encryption
//! yet — ocicrypt layers (`…+encrypted`) are refused with a clear error and
//! will be handled in this crate later.
//!
//! Specifications followed:
//! * OCI image-spec v1.1: `image-layout.md` (layout directory, `oci-layout`,
//!   `index.json`, `blobs/<alg>/<hex>`), `image-index.md`, `manifest.md`,
//!   `descriptor.md` (sha256 and sha512 digests, sizes), `config.md`,
//!   `layer.md` (changesets, whiteouts, opaque whiteouts), `annotations.md`
//!   (`org.opencontainers.image.ref.name`).
//! * Docker's `docker save` archive format (`manifest.json` with `Config`,
//!   `RepoTags`, `Layers`) and image manifest v2 schema 2 media types.
//! * skopeo's transport syntax (`containers-transports(5)`) for references.
//!
//! Archives (`oci-archive:`, `docker-archive:`) are not extracted: opening
//! one scans its tar headers once, remembers where each member's data
//! starts, and reads blobs by seeking into the file. No scratch space is
//! needed and nothing unverified lands on disk; the price is that the
//! archive must be a plain tar (a `.tar.gz` is refused with
//! [`OciError::CompressedArchive`]).
//!
//! Hand-written here because no maintained crate does it: layer application
//! with whiteouts and root-confined path resolution (the [`unpack`] module)
//! and the archive index. The document types come from `oci-spec`, tar
//! parsing from `tar`, decompression from `flate2` and `ruzstd` (pure Rust).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod build;
mod compression;
pub mod crypt;
mod digest;
mod error;
mod image;
mod layout;
mod reference;
mod source;
pub mod unpack;

pub use build::{binary_rootfs_files, BuiltImage, ImageBuilder};
pub use compression::Compression;
pub use crypt::{LayerAction, LayerChange, Transformed};
pub use digest::sha256_digest;
pub use error::OciError;
pub use image::{ImageConfig, LocalImage, Platform, MAX_JSON_SIZE, REF_NAME_ANNOTATION};
pub use layout::LayoutWriter;
pub use reference::ImageReference;
pub use unpack::apply_layer;

/// The `oci-spec` crate this API uses for descriptors and manifests, so
/// callers name the same types.
pub use oci_spec;
/// The ocicrypt crate this API takes keys and recipients from.
pub use sealpod_ocicrypt as ocicrypt;
