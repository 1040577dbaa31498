//! Copies of a pod (`replicas.max > 1`) on this one provider.
//!
//! Each copy is a pod of the runtime of its own (its shim, network
//! namespace, user namespace ids, cgroup, disk) running the same spec under
//! the runtime id `<pod id>-<i>`; copy 0 has the pod's id, and is what
//! `logs` and `exec` reach. Public ports are one listening socket shared by
//! every copy's shim, so the kernel hands each connection to one of them;
//! the HTTP port is a loopback listener per copy, and the entry point sends
//! each request to the copy with the fewest pending ([`crate::gateway`]).
//! With `replicas.min == 0` every copy scales to zero on its own, so copies
//! past the first wake only when requests pile up on the others; otherwise
//! all run all the time.
//!
//! Left out for now: persistent volumes (one filesystem cannot be mounted by
//! two copies), and pods paid through a channel (metered as one copy).

use std::net::{IpAddr, SocketAddr, TcpListener};

use sealpod_runtime::HostSocket;
use std::sync::Arc;

use sealpod_proto::{Error, ErrorCode};
use sealpod_runtime::{PodSpec, Secret, VolumeKind};

use crate::store::{HttpRoute, PodRecord};
use crate::{gateway, internal, Provider};

/// Most copies one pod may run here.
pub const MAX_COPIES: u32 = 16;

/// The runtime id of copy `i` of `pod_id`.
pub fn copy_id(pod_id: &str, i: u32) -> String {
    if i == 0 {
        pod_id.to_owned()
    } else {
        format!("{pod_id}-{i}")
    }
}

/// The runtime ids of a recorded pod's copies, copy 0 first.
pub fn copy_ids(record: &PodRecord) -> Vec<String> {
    (0..record.copies.max(1)).map(|i| copy_id(&record.pod_id, i)).collect()
}

/// Whether runtime id `id` is one of `record`'s copies.
pub fn is_copy_of(id: &str, record: &PodRecord) -> bool {
    copy_ids(record).iter().any(|c| c == id)
}

/// Refuses copies the provider cannot give: too many, or sharing what one
/// copy alone may hold.
pub fn check(pod_id: &str, spec: &PodSpec, copies: u32, paid: bool) -> Result<(), Error> {
    let refuse =
        |message: String| Err(Error { code: ErrorCode::InvalidRequest as i32, message, field: "pod.replicas".into() });
    if copies > MAX_COPIES {
        return refuse(format!("{copies} copies is more than the {MAX_COPIES} a pod may run on this provider"));
    }
    if copies > 1 {
        if let Some(v) = spec.volumes.iter().find(|v| matches!(v.kind, VolumeKind::Persistent { .. })) {
            return refuse(format!(
                "persistent volume {} is one filesystem and cannot be shared by {copies} copies: use replicas.max 1",
                v.name
            ));
        }
        if paid {
            return refuse(format!(
                "pod {pod_id}: a pod paid through a channel runs one copy for now (replicas.max 1)"
            ));
        }
        if let Some(p) = spec.ports.iter().find(|p| p.udp) {
            // Copies share a TCP listener connection by connection; datagrams
            // of one client could land on any copy.
            return refuse(format!("UDP port {} is relayed to one copy only: use replicas.max 1", p.host.port()));
        }
        if spec.containers.iter().any(|c| !c.devices.names.is_empty()) {
            return refuse("each GPU goes to one container: a pod with GPUs runs one copy (replicas.max 1)".into());
        }
    }
    Ok(())
}

/// A copy past the first, ready to start.
pub struct Copy {
    /// Its spec: the first copy's under its own id, with its own HTTP listener.
    pub spec: PodSpec,
    /// One per `spec.ports` entry.
    pub listeners: Vec<HostSocket>,
    /// Its HTTP listener's address, when the pod has an HTTP port.
    pub backend: Option<SocketAddr>,
}

/// Copies 1..`n` of the pod whose copy 0 runs `first` on `listeners`.
pub fn more(first: &PodSpec, listeners: &[HostSocket], http: Option<SocketAddr>, n: u32) -> Result<Vec<Copy>, Error> {
    let mut out = Vec::new();
    for i in 1..n {
        let mut spec = first.clone();
        spec.pod_id = copy_id(&first.pod_id, i);
        spec.user_ns = None;
        spec.secrets_token = String::new();
        let mut own = Vec::with_capacity(listeners.len());
        let mut backend = None;
        for (port, listener) in spec.ports.iter_mut().zip(listeners) {
            if Some(port.host) == http {
                let l = TcpListener::bind(SocketAddr::new(IpAddr::from([127, 0, 0, 1]), 0))
                    .map_err(|e| internal(format!("binding copy {i}'s HTTP port: {e}")))?;
                port.host = l.local_addr().map_err(internal)?;
                backend = Some(port.host);
                own.push(HostSocket::Tcp(l));
            } else {
                own.push(listener.try_clone().map_err(|e| internal(format!("sharing port {}: {e}", port.host)))?);
            }
        }
        out.push(Copy { spec, listeners: own, backend });
    }
    Ok(out)
}

/// The entry point's route for a pod's HTTP port: every copy's backend.
pub fn route(pod_id: &str, http: &HttpRoute, scales_to_zero: bool) -> gateway::Route {
    let backends = std::iter::once(http.backend)
        .chain(http.copy_backends.iter().copied())
        .map(|addr| Arc::new(gateway::Backend::new(addr)))
        .collect();
    gateway::Route::new(pod_id, backends, scales_to_zero)
}

impl Provider {
    /// Starts copies 1.. (copy 0 runs); on a failure removes those it started.
    pub(crate) fn start_copies(&self, copies: Vec<Copy>, secrets: &[Secret]) -> Result<(), Error> {
        let mut started: Vec<String> = Vec::new();
        for copy in copies {
            let id = copy.spec.pod_id.clone();
            if let Err(e) = self.runtime.create(&copy.spec, copy.listeners, secrets.to_vec()) {
                for id in started {
                    let _ = self.runtime.delete(&id);
                }
                return Err(internal(format!("starting copy {id} failed: {e}")));
            }
            started.push(id);
        }
        Ok(())
    }

    /// Removes copies 1.. of a pod, whatever state they are in.
    pub(crate) fn delete_more_copies(&self, record: &PodRecord) {
        for id in copy_ids(record).into_iter().skip(1) {
            if let Err(e) = self.runtime.delete(&id) {
                tracing::warn!(pod = %record.pod_id, copy = %id, error = %e, "could not remove copy");
            }
        }
    }

    /// How many of a pod's copies are running (not scaled to zero, not failed).
    pub(crate) fn copies_running(&self, record: &PodRecord) -> u32 {
        copy_ids(record)
            .iter()
            .filter(|id| self.runtime.state(id).is_ok_and(|s| matches!(s.phase, sealpod_runtime::Phase::Running)))
            .count() as u32
    }
}
