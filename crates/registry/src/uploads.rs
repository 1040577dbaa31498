//! Uploads kept open between the requests of a chunked push, so their data
//! is hashed once as it arrives. An upload not in memory (after a restart,
//! or evicted when idle) is resumed from disk by re-hashing its data.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sealpod_store::{RepositoryName, Store, StoreError, Upload, UploadId};
use tokio::sync::OwnedMutexGuard;

use crate::error::{ErrorCode, RegistryError};

/// An idle upload may be closed (not deleted) after this long to make room.
const EVICT_IDLE: Duration = Duration::from_secs(30);

struct Slot {
    name: RepositoryName,
    upload: Arc<tokio::sync::Mutex<Option<Upload>>>,
    last_used: Mutex<Instant>,
}

pub(crate) struct OpenUploads {
    slots: Mutex<HashMap<UploadId, Arc<Slot>>>,
    max: usize,
}

/// Exclusive access to one upload for the length of a request.
pub(crate) struct UploadGuard {
    pub(crate) id: UploadId,
    pub(crate) upload: OwnedMutexGuard<Option<Upload>>,
}

impl OpenUploads {
    pub(crate) fn new(max: usize) -> OpenUploads {
        OpenUploads { slots: Mutex::new(HashMap::new()), max: max.max(1) }
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, HashMap<UploadId, Arc<Slot>>> {
        self.slots.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Makes room for one more slot, closing idle uploads if needed.
    fn reserve(&self, slots: &mut HashMap<UploadId, Arc<Slot>>) -> Result<(), RegistryError> {
        if slots.len() < self.max {
            return Ok(());
        }
        slots.retain(|_, slot| {
            let idle = slot.last_used.lock().map(|t| t.elapsed() > EVICT_IDLE).unwrap_or(true);
            !(idle && slot.upload.try_lock().is_ok())
        });
        if slots.len() < self.max {
            Ok(())
        } else {
            Err(RegistryError::new(
                ErrorCode::TooManyRequests,
                format!("{} uploads are in progress; retry later", slots.len()),
            ))
        }
    }

    /// Registers a freshly started upload.
    pub(crate) fn insert(&self, name: &RepositoryName, upload: Upload) -> Result<UploadId, RegistryError> {
        let mut slots = self.slots();
        self.reserve(&mut slots)?;
        let id = upload.id().clone();
        let slot = Slot {
            name: name.clone(),
            upload: Arc::new(tokio::sync::Mutex::new(Some(upload))),
            last_used: Mutex::new(Instant::now()),
        };
        slots.insert(id.clone(), Arc::new(slot));
        Ok(id)
    }

    /// Locks upload `id` of repository `name`, resuming it from disk if it
    /// is not open. Waits while another request of this process holds it.
    pub(crate) async fn lock(
        &self,
        store: &Store,
        name: &RepositoryName,
        id: &str,
    ) -> Result<UploadGuard, RegistryError> {
        let id: UploadId = id.parse().map_err(RegistryError::from)?;
        let slot = {
            let mut slots = self.slots();
            match slots.get(&id) {
                Some(slot) => slot.clone(),
                None => {
                    self.reserve(&mut slots)?;
                    let slot = Arc::new(Slot {
                        name: name.clone(),
                        upload: Arc::new(tokio::sync::Mutex::new(None)),
                        last_used: Mutex::new(Instant::now()),
                    });
                    slots.insert(id.clone(), slot.clone());
                    slot
                }
            }
        };
        if slot.name != *name {
            return Err(StoreError::UploadUnknown(id.to_string()).into());
        }
        let mut guard = slot.upload.clone().lock_owned().await;
        if let Ok(mut t) = slot.last_used.lock() {
            *t = Instant::now();
        }
        if guard.is_none() {
            let (store, scope, resume_id) = (store.clone(), name.to_string(), id.clone());
            let resumed = tokio::task::spawn_blocking(move || store.resume_upload(&resume_id, &scope))
                .await
                .map_err(|e| RegistryError::internal(format!("resuming upload: {e}")))?;
            match resumed {
                Ok(upload) => *guard = Some(upload),
                Err(e) => {
                    self.forget(&id);
                    return Err(e.into());
                }
            }
        }
        Ok(UploadGuard { id, upload: guard })
    }

    /// Drops the slot of a finished or cancelled upload.
    pub(crate) fn forget(&self, id: &UploadId) {
        self.slots().remove(id);
    }
}
