//! Repositories: which manifests each holds (its revisions) and its tags.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::manifest::{ParsedManifest, MAX_MANIFEST_SIZE};
use crate::{write_atomic, Digest, Reference, RepositoryName, Store, StoreError, Tag, SHA256};

/// A manifest recorded in a repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredManifest {
    /// The manifest's digest.
    pub digest: Digest,
    /// Its media type (one of [`crate::media_type::ALL`]).
    pub media_type: String,
    /// Its size in bytes.
    pub size: u64,
}

const MANIFESTS: &str = "_manifests";

impl Store {
    fn repo_dir(&self, repo: &RepositoryName) -> PathBuf {
        let mut dir = self.root().join("repositories");
        dir.extend(repo.components());
        dir
    }

    fn revision_path(&self, repo: &RepositoryName, digest: &Digest) -> PathBuf {
        self.repo_dir(repo).join(MANIFESTS).join("revisions").join(SHA256).join(digest.hex())
    }

    fn tag_path(&self, repo: &RepositoryName, tag: &Tag) -> PathBuf {
        self.repo_dir(repo).join(MANIFESTS).join("tags").join(tag.as_str())
    }

    fn repo_exists(&self, repo: &RepositoryName) -> bool {
        self.repo_dir(repo).join(MANIFESTS).is_dir()
    }

    /// Validates and stores a manifest in `repo`, tagging it `tag` if given.
    ///
    /// `content_type` is the media type the client declared. Every config,
    /// layer and child manifest it references must already be stored (with
    /// the size the manifest claims), except descriptors with `urls`;
    /// otherwise [`StoreError::ManifestBlobUnknown`] lists the missing ones.
    pub fn put_manifest(
        &self,
        repo: &RepositoryName,
        tag: Option<&Tag>,
        content_type: Option<&str>,
        bytes: &[u8],
    ) -> Result<StoredManifest, StoreError> {
        self.record_manifest(repo, tag, content_type, bytes, false)
    }

    /// Stores a manifest in `repo` whose referenced content is still
    /// arriving: a mirror that fetches layers from peers while a client
    /// already pulls them. Whatever is already stored is checked as in
    /// [`Store::put_manifest`]; missing blobs and child manifests are
    /// allowed, and a reader asking for one gets [`StoreError::BlobUnknown`]
    /// until it arrives. Never use it for content a client pushes.
    pub fn put_manifest_ahead_of_content(
        &self,
        repo: &RepositoryName,
        tag: Option<&Tag>,
        content_type: Option<&str>,
        bytes: &[u8],
    ) -> Result<StoredManifest, StoreError> {
        self.record_manifest(repo, tag, content_type, bytes, true)
    }

    fn record_manifest(
        &self,
        repo: &RepositoryName,
        tag: Option<&Tag>,
        content_type: Option<&str>,
        bytes: &[u8],
        content_may_be_missing: bool,
    ) -> Result<StoredManifest, StoreError> {
        let parsed = ParsedManifest::parse(bytes, content_type)?;
        let digest = Digest::of(bytes);
        // Held until the manifest is recorded, so gc cannot sweep what was
        // just found present.
        let lock = self.lock_shared()?;
        let mut missing = Vec::new();
        for d in parsed.blobs.iter().chain(&parsed.manifests) {
            match self.blob_size(&d.digest)? {
                Some(size) if size == d.size => {}
                Some(size) => {
                    return Err(StoreError::ManifestInvalid(format!(
                        "descriptor {} claims {} bytes, the stored blob has {size}",
                        d.digest, d.size
                    )))
                }
                None if d.external || content_may_be_missing => {}
                None => missing.push(d.digest),
            }
        }
        if !missing.is_empty() {
            return Err(StoreError::ManifestBlobUnknown(missing));
        }
        self.install_locked(&digest, |target| {
            let mut tmp = crate::blob::locked_temp_file(&self.blob_dir(), &lock)?;
            tmp.write_all(bytes).map_err(|e| StoreError::io("writing", tmp.path().to_owned(), e))?;
            tmp.as_file().sync_all().map_err(|e| StoreError::io("syncing", tmp.path().to_owned(), e))?;
            tmp.persist(target).map(drop).map_err(|e| StoreError::io("renaming", target, e.error))
        })?;
        write_atomic(&self.revision_path(repo, &digest), parsed.media_type.as_bytes(), &lock)?;
        if let Some(tag) = tag {
            write_atomic(&self.tag_path(repo, tag), digest.to_string().as_bytes(), &lock)?;
        }
        tracing::debug!(%repo, %digest, tag = ?tag.map(Tag::as_str), "manifest stored");
        Ok(StoredManifest { digest, media_type: parsed.media_type, size: bytes.len() as u64 })
    }

    /// Finds the manifest `reference` names in `repo`.
    pub fn manifest(&self, repo: &RepositoryName, reference: &Reference) -> Result<StoredManifest, StoreError> {
        if !self.repo_exists(repo) {
            return Err(StoreError::NameUnknown(repo.to_string()));
        }
        let unknown = || StoreError::ManifestUnknown { repository: repo.to_string(), reference: reference.to_string() };
        let digest = match reference {
            Reference::Digest(d) => *d,
            Reference::Tag(t) => self.resolve_tag(repo, t)?.ok_or_else(unknown)?,
        };
        let media_type = match read_small(&self.revision_path(repo, &digest))? {
            Some(m) => m,
            None => return Err(unknown()),
        };
        let size = self.blob_size(&digest)?.ok_or_else(unknown)?;
        Ok(StoredManifest { digest, media_type, size })
    }

    /// Reads a manifest's bytes, verified against its digest.
    pub fn read_manifest(&self, digest: &Digest) -> Result<Vec<u8>, StoreError> {
        self.read_to_vec(digest, MAX_MANIFEST_SIZE)
    }

    /// The digest `tag` points at in `repo`, if any.
    pub fn resolve_tag(&self, repo: &RepositoryName, tag: &Tag) -> Result<Option<Digest>, StoreError> {
        let path = self.tag_path(repo, tag);
        match read_small(&path)? {
            None => Ok(None),
            Some(text) => text
                .trim()
                .parse()
                .map(Some)
                .map_err(|e| StoreError::io("reading tag", path, io::Error::new(io::ErrorKind::InvalidData, e))),
        }
    }

    /// `repo`'s tags in lexical order.
    pub fn tags(&self, repo: &RepositoryName) -> Result<Vec<Tag>, StoreError> {
        if !self.repo_exists(repo) {
            return Err(StoreError::NameUnknown(repo.to_string()));
        }
        let dir = self.repo_dir(repo).join(MANIFESTS).join("tags");
        let mut tags: Vec<Tag> = list_dir(&dir)?.iter().filter_map(|n| n.parse().ok()).collect();
        tags.sort_by(|a: &Tag, b| a.as_str().cmp(b.as_str()));
        Ok(tags)
    }

    /// The digests of every manifest recorded in `repo`.
    pub fn manifests(&self, repo: &RepositoryName) -> Result<Vec<Digest>, StoreError> {
        let dir = self.repo_dir(repo).join(MANIFESTS).join("revisions").join(SHA256);
        let mut digests: Vec<Digest> = list_dir(&dir)?.iter().filter_map(|n| Digest::from_hex(n)).collect();
        digests.sort();
        Ok(digests)
    }

    /// Removes `tag` from `repo`; the manifest stays until deleted.
    pub fn delete_tag(&self, repo: &RepositoryName, tag: &Tag) -> Result<(), StoreError> {
        let path = self.tag_path(repo, tag);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(StoreError::ManifestUnknown { repository: repo.to_string(), reference: tag.to_string() })
            }
            Err(e) => Err(StoreError::io("removing", path, e)),
        }
    }

    /// Removes manifest `digest` and every tag pointing at it from `repo`.
    /// Its blobs go at the next [`Store::gc`] if nothing else references them.
    pub fn delete_manifest(&self, repo: &RepositoryName, digest: &Digest) -> Result<(), StoreError> {
        let path = self.revision_path(repo, digest);
        if !path.exists() {
            return Err(StoreError::ManifestUnknown { repository: repo.to_string(), reference: digest.to_string() });
        }
        for tag in self.tags(repo)? {
            if self.resolve_tag(repo, &tag)? == Some(*digest) {
                self.delete_tag(repo, &tag)?;
            }
        }
        fs::remove_file(&path).map_err(|e| StoreError::io("removing", path, e))
    }

    /// Every repository holding at least one manifest record, sorted.
    pub fn repositories(&self) -> Result<Vec<RepositoryName>, StoreError> {
        let mut found = Vec::new();
        let mut stack = vec![(self.root().join("repositories"), String::new())];
        while let Some((dir, name)) = stack.pop() {
            for entry in list_dir(&dir)? {
                if entry == MANIFESTS {
                    if let Ok(repo) = name.parse() {
                        found.push(repo);
                    }
                } else if !entry.starts_with(['.', '_']) {
                    let child = if name.is_empty() { entry.clone() } else { format!("{name}/{entry}") };
                    let path = dir.join(&entry);
                    if path.is_dir() {
                        stack.push((path, child));
                    }
                }
            }
        }
        found.sort();
        Ok(found)
    }
}

/// Reads a small metadata file; `None` if it does not exist.
fn read_small(path: &Path) -> Result<Option<String>, StoreError> {
    match fs::read(path) {
        Ok(bytes) if bytes.len() <= 4096 => String::from_utf8(bytes)
            .map(Some)
            .map_err(|e| StoreError::io("reading", path, io::Error::new(io::ErrorKind::InvalidData, e))),
        Ok(_) => Err(StoreError::io("reading", path, io::Error::new(io::ErrorKind::InvalidData, "too large"))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StoreError::io("reading", path, e)),
    }
}

/// File names in `dir` (empty if it does not exist), skipping names that are not UTF-8.
pub(crate) fn list_dir(dir: &Path) -> Result<Vec<String>, StoreError> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(StoreError::io("listing", dir, e)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| StoreError::io("listing", dir, e))?;
        if let Ok(name) = entry.file_name().into_string() {
            names.push(name);
        }
    }
    Ok(names)
}
