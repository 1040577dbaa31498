//! The provider's record of its pods, in an embedded redb database, so that a
//! restarted provider knows every pod it runs and whom each belongs to.

use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

const PODS: TableDefinition<&str, &[u8]> = TableDefinition::new("pods");
/// Billing accounts (JSON), by pod id; they outlive their pod until claimed.
const ACCOUNTS: TableDefinition<&str, &[u8]> = TableDefinition::new("accounts");

/// What the provider remembers of a pod besides what its shim reports.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PodRecord {
    /// The provider-assigned id.
    pub pod_id: String,
    /// The label the publisher gave.
    pub name: String,
    /// The publisher's peer id: the only identity that may control the pod.
    pub owner: String,
    /// When it was provisioned, in seconds since the Unix epoch.
    pub created_unix_seconds: u64,
    /// Exposed ports: (host address, container, container port).
    pub exposed: Vec<Exposed>,
    /// Resources reserved for the pod.
    pub cpu_millicores: u64,
    /// See `cpu_millicores`.
    pub memory_bytes: u64,
    /// The verified payload manifest (base64 text as signed), whose script
    /// rules govern exec.
    #[serde(default)]
    pub payload_manifest_base64: Option<String>,
    /// Recent exec refusals, newest last.
    #[serde(default)]
    pub denials: Vec<sealpod_runtime::DenialRecord>,
    /// The pod's HTTP port, served by the entry point.
    #[serde(default)]
    pub http: Option<HttpRoute>,
    /// How many copies of the pod run (`replicas.max`); 0 in records made
    /// before copies, meaning one. Copy 0 has the pod's id, copy `i` the
    /// runtime id `<pod id>-<i>`.
    #[serde(default)]
    pub copies: u32,
}

/// A pod's HTTP port: the hostname it claimed and where the entry point
/// sends its requests.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HttpRoute {
    /// The hostname, lowercase.
    pub host: String,
    /// The pod's loopback listener for the port.
    pub backend: std::net::SocketAddr,
    /// The container that declared it.
    pub container: String,
    /// The port inside the pod.
    pub container_port: u16,
    /// The loopback listeners of the pod's other copies, in copy order.
    #[serde(default)]
    pub copy_backends: Vec<std::net::SocketAddr>,
}

/// A port of the pod reachable from outside.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Exposed {
    /// The host address the provider listens on.
    pub host: std::net::SocketAddr,
    /// The container that declared the port.
    pub container: String,
    /// The port inside the pod.
    pub container_port: u16,
    /// A UDP port.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub udp: bool,
}

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
#[error("pod database: {0}")]
pub struct StoreError(String);

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError(e.to_string())
}

/// The pod table.
pub struct PodStore {
    db: Database,
}

impl PodStore {
    /// Opens or creates the database at `path`.
    pub fn open(path: &Path) -> Result<PodStore, StoreError> {
        let db = Database::create(path).map_err(err)?;
        let tx = db.begin_write().map_err(err)?;
        tx.open_table(PODS).map_err(err)?;
        tx.open_table(ACCOUNTS).map_err(err)?;
        tx.commit().map_err(err)?;
        Ok(PodStore { db })
    }

    /// Inserts or replaces a record.
    pub fn put(&self, record: &PodRecord) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(record).map_err(err)?;
        let tx = self.db.begin_write().map_err(err)?;
        tx.open_table(PODS).map_err(err)?.insert(record.pod_id.as_str(), bytes.as_slice()).map_err(err)?;
        tx.commit().map_err(err)
    }

    /// The record of `pod_id`, if any.
    pub fn get(&self, pod_id: &str) -> Result<Option<PodRecord>, StoreError> {
        let tx = self.db.begin_read().map_err(err)?;
        let table = tx.open_table(PODS).map_err(err)?;
        match table.get(pod_id).map_err(err)? {
            Some(v) => Ok(Some(serde_json::from_slice(v.value()).map_err(err)?)),
            None => Ok(None),
        }
    }

    /// Removes a record.
    pub fn remove(&self, pod_id: &str) -> Result<(), StoreError> {
        let tx = self.db.begin_write().map_err(err)?;
        tx.open_table(PODS).map_err(err)?.remove(pod_id).map_err(err)?;
        tx.commit().map_err(err)
    }

    /// Every record.
    pub fn all(&self) -> Result<Vec<PodRecord>, StoreError> {
        let tx = self.db.begin_read().map_err(err)?;
        let table = tx.open_table(PODS).map_err(err)?;
        let mut out = Vec::new();
        for entry in table.iter().map_err(err)? {
            let (_, v) = entry.map_err(err)?;
            out.push(serde_json::from_slice(v.value()).map_err(err)?);
        }
        Ok(out)
    }
}

impl PodStore {
    /// Writes a billing account (already serialized) for `pod_id`.
    pub fn put_account(&self, pod_id: &str, json: &[u8]) -> Result<(), StoreError> {
        let tx = self.db.begin_write().map_err(err)?;
        tx.open_table(ACCOUNTS).map_err(err)?.insert(pod_id, json).map_err(err)?;
        tx.commit().map_err(err)
    }

    /// One pod's billing account, serialized.
    pub fn account(&self, pod_id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let tx = self.db.begin_read().map_err(err)?;
        let table = tx.open_table(ACCOUNTS).map_err(err)?;
        Ok(table.get(pod_id).map_err(err)?.map(|v| v.value().to_vec()))
    }

    pub fn remove_account(&self, pod_id: &str) -> Result<(), StoreError> {
        let tx = self.db.begin_write().map_err(err)?;
        tx.open_table(ACCOUNTS).map_err(err)?.remove(pod_id).map_err(err)?;
        tx.commit().map_err(err)
    }

    /// Every billing account, serialized.
    pub fn accounts(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        let tx = self.db.begin_read().map_err(err)?;
        let table = tx.open_table(ACCOUNTS).map_err(err)?;
        let mut out = Vec::new();
        for entry in table.iter().map_err(err)? {
            let (_, v) = entry.map_err(err)?;
            out.push(v.value().to_vec());
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_reopening_the_database() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.redb");
        let rec = PodRecord {
            pod_id: "p1".into(),
            name: "web".into(),
            owner: "peer".into(),
            created_unix_seconds: 1,
            exposed: vec![],
            cpu_millicores: 100,
            memory_bytes: 1,
            payload_manifest_base64: None,
            denials: vec![],
            http: Some(HttpRoute {
                host: "app.example.com".into(),
                backend: "127.0.0.1:4000".parse().unwrap(),
                container: "web".into(),
                container_port: 80,
                copy_backends: vec!["127.0.0.1:4001".parse().unwrap()],
            }),
            copies: 2,
        };
        PodStore::open(&path).unwrap().put(&rec).unwrap();
        let store = PodStore::open(&path).unwrap();
        assert_eq!(store.get("p1").unwrap(), Some(rec));
        store.remove("p1").unwrap();
        assert!(store.all().unwrap().is_empty());
    }
}
