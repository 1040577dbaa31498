//! Updating a pod in place: new containers (images, commands, env,
//! resources, mounts) under the same pod id, owner, hostname, ports and
//! persistent volumes.
//!
//! Everything that can refuse the update is checked before the pod is
//! touched: ownership, the payload manifest, capacity, the hostname, the
//! images, the ports, persistent volume sizes. Then the HTTP route switches
//! to a new listener of the pod (requests wait in its backlog), the requests
//! already at the old containers finish, the old containers stop, and the
//! new ones start. Should they fail to start, the old spec is started again
//! (its secrets were read back first) and the update is reported failed.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use sealpod_net::PeerId;
use sealpod_proto::{Error, ErrorCode, PodStatus, UpdateRequest};
use sealpod_runtime::{HostSocket, PodSpec, VolumeKind};

use crate::store::{Exposed, HttpRoute};
use crate::{admission, copies, gateway, internal, wipe_secrets, Provider};

/// The longest wait for requests already at the old containers to finish.
const DRAIN: Duration = Duration::from_secs(10);

impl Provider {
    pub(crate) fn update(&self, peer: PeerId, mut request: UpdateRequest) -> Result<PodStatus, Error> {
        let Some(mut pod) = request.pod.take() else {
            return Err(Error {
                code: ErrorCode::InvalidRequest as i32,
                message: "the update carries no pod".into(),
                field: "pod".into(),
            });
        };
        let result = self.update_pod(peer, &request.pod_id, &pod, request.payload_manifest.as_ref());
        wipe_secrets(&mut pod);
        result
    }

    fn update_pod(
        &self,
        peer: PeerId,
        pod_id: &str,
        pod: &sealpod_proto::Pod,
        payload: Option<&sealpod_proto::PayloadManifest>,
    ) -> Result<PodStatus, Error> {
        let record = self.owned(&peer, pod_id)?;
        if self.account(pod_id).is_some() {
            return Err(Error::new(
                ErrorCode::InvalidRequest,
                "a pod paid through a channel cannot be updated yet: its price was agreed for what it runs",
            ));
        }
        let verified = payload.map(|pm| self.verify_payload(pm)).transpose()?;
        let egress = verified.as_ref().and_then(|v| self.egress_policy(&v.manifest));
        let want = sealpod_proto::total_resources(pod);
        let _guard = self.admitting.lock().unwrap_or_else(|p| p.into_inner());

        // What the pod holds now is given back by the update.
        let free = self.free();
        let (cpu_free, memory_free) =
            (free.cpu_millicores + record.cpu_millicores, free.memory_bytes + record.memory_bytes);
        if want.cpu_millicores > cpu_free || want.memory_bytes > memory_free {
            return Err(Error::new(
                ErrorCode::ResourceExhausted,
                format!(
                    "not enough capacity: the update asks {}m CPU and {} bytes of memory, {cpu_free}m and \
                     {memory_free} bytes are free counting the pod's own",
                    want.cpu_millicores, want.memory_bytes
                ),
            ));
        }
        self.check_http_host(pod, record.http.as_ref().map(|h| h.host.as_str()))?;
        let running = self.runtime.spec(pod_id).map_err(internal)?;
        let held: Vec<SocketAddr> = running.ports.iter().map(|p| p.host).collect();
        // The pod's own GPUs are free for its new containers.
        let held_gpus = self.held_gpus(Some(pod_id));
        let mut gpu_pick = crate::gpus::GpuPick::new(&self.gpus, &held_gpus);
        let admitted = admission::admit(
            pod_id,
            pod,
            &self.images,
            self.config.expose_ip,
            egress,
            self.config.scale_down_after,
            &held,
            &mut gpu_pick,
        );
        let mut admitted = admitted?;
        if let Some(v) = &verified {
            crate::covers(v, &admitted)?;
        }
        keeps_persistent_sizes(&running, &admitted.spec)?;
        let n = sealpod_proto::copies(pod);
        copies::check(pod_id, &admitted.spec, n, false)?;
        // Kept in memory, should the old spec have to start again.
        let old_secrets = sealpod_runtime::secrets::read_back(&running).map_err(internal)?;
        let old_copies: Vec<PodSpec> =
            copies::copy_ids(&record).iter().skip(1).filter_map(|id| self.runtime.spec(id).ok()).collect();

        // From here on the pod changes. Requests for its hostname go to the
        // new listener and wait there; those at the old copy finish first.
        let old_route = record.http.as_ref().and_then(|h| self.routes.get(&h.host));
        let first_route = admitted.http.as_ref().map(|h| HttpRoute {
            host: h.host.clone(),
            backend: h.backend,
            container: h.container.clone(),
            container_port: h.container_port,
            copy_backends: Vec::new(),
        });
        let scales = admitted.spec.scale_to_zero.is_some();
        self.route(pod_id, first_route.as_ref(), scales);
        if let Some(route) = &old_route {
            drain(route, DRAIN);
        }
        self.delete_more_copies(&record);
        let previous = match self.runtime.stop_for_update(pod_id) {
            Ok(previous) => previous,
            Err(e) => {
                tracing::error!(pod = %pod_id, error = %e, "update: stopping the old containers failed");
                return Err(internal(format!("stopping the old containers failed: {e}")));
            }
        };
        let mut spec = admitted.spec.clone();
        spec.user_ns = previous.user_ns;
        spec.secrets_token = previous.secrets_token.clone();
        let secrets = admitted.secrets.clone();
        let mut more_backends = Vec::new();
        let started = admitted.listeners().and_then(|listeners| {
            let more = copies::more(&spec, &listeners, admitted.http.as_ref().map(|h| h.backend), n)?;
            more_backends = more.iter().filter_map(|c| c.backend).collect();
            let state = self.runtime.create(&spec, listeners, secrets.clone()).map_err(internal)?;
            self.start_copies(more, &secrets)?;
            Ok(state)
        });
        drop(secrets);
        let state = match started {
            Ok(state) => state,
            Err(e) => {
                tracing::warn!(pod = %pod_id, error = %e.message, "update failed; starting the old containers again");
                let mut new = record.clone();
                new.copies = n;
                self.delete_more_copies(&new);
                self.restore(pod_id, &previous, &old_copies, old_secrets, &record);
                return Err(Error::new(
                    ErrorCode::Internal,
                    format!("the new containers did not start ({}); the pod runs as before", e.message),
                ));
            }
        };
        drop(old_secrets);
        let mut record = record;
        record.exposed = spec
            .ports
            .iter()
            .filter(|p| admitted.http.as_ref().is_none_or(|h| h.backend != p.host))
            .map(|p| Exposed {
                host: p.host,
                container: p.container.clone(),
                container_port: p.target_port,
                udp: p.udp,
            })
            .collect();
        record.http = first_route.map(|h| HttpRoute { copy_backends: more_backends, ..h });
        record.copies = n;
        self.route(pod_id, record.http.as_ref(), scales);
        record.cpu_millicores = want.cpu_millicores;
        record.memory_bytes = want.memory_bytes;
        record.payload_manifest_base64 = payload.map(|pm| pm.manifest_base64.clone());
        self.store.put(&record).map_err(internal)?;
        self.update_deny_file();
        tracing::info!(pod = %pod_id, owner = %peer, phase = ?state.phase, "updated pod");
        Ok(self.pod_status(&record, &state))
    }

    /// Points the pod's hostname (if any) at its copies, dropping the names
    /// it no longer has.
    fn route(&self, pod_id: &str, http: Option<&HttpRoute>, scales_to_zero: bool) {
        self.routes.release(pod_id);
        if let Some(http) = http {
            if let Err(e) = self.routes.claim(&http.host, copies::route(pod_id, http, scales_to_zero)) {
                tracing::error!(pod = %pod_id, error = %e, "update: the hostname could not be routed");
            }
        }
    }

    /// Starts the specs that ran before a failed update (copy 0 and the
    /// others) on their own ports, and routes the pod as `record` says.
    fn restore(
        &self,
        pod_id: &str,
        previous: &PodSpec,
        old_copies: &[PodSpec],
        secrets: Vec<sealpod_runtime::Secret>,
        record: &crate::store::PodRecord,
    ) {
        let _ = self.runtime.stop_for_update(pod_id);
        let restored = bind_like(previous, &[]).map_err(|e| e.to_string()).and_then(|listeners| {
            let shared: Vec<(SocketAddr, HostSocket)> = previous
                .ports
                .iter()
                .zip(&listeners)
                .filter_map(|(p, l)| l.try_clone().ok().map(|l| (p.host, l)))
                .collect();
            self.runtime.create(previous, listeners, secrets.clone()).map_err(|e| e.to_string())?;
            for copy in old_copies {
                let listeners = bind_like(copy, &shared).map_err(|e| e.to_string())?;
                self.runtime.create(copy, listeners, secrets.clone()).map_err(|e| e.to_string())?;
            }
            Ok(())
        });
        match restored {
            Ok(()) => self.route(pod_id, record.http.as_ref(), previous.scale_to_zero.is_some()),
            Err(e) => tracing::error!(pod = %pod_id, error = %e, "the pod could not be started as before"),
        }
    }
}

/// Listeners for `spec`'s ports: those in `shared` (copy 0's public ports)
/// shared, the others bound again at their address.
fn bind_like(spec: &PodSpec, shared: &[(SocketAddr, HostSocket)]) -> std::io::Result<Vec<HostSocket>> {
    spec.ports
        .iter()
        .map(|p| match shared.iter().find(|(addr, _)| *addr == p.host) {
            Some((_, l)) => l.try_clone(),
            None => HostSocket::bind(p.host, p.udp),
        })
        .collect()
}

/// Waits until no request is pending on `route`'s backends, at most `limit`.
fn drain(route: &gateway::Route, limit: Duration) {
    let deadline = Instant::now() + limit;
    while route.backends.iter().any(|b| b.pending() > 0) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Refuses an update that would change the size of a persistent volume the
/// pod has: its filesystem was made at that size and holds the pod's data.
fn keeps_persistent_sizes(running: &PodSpec, next: &PodSpec) -> Result<(), Error> {
    for v in &next.volumes {
        let VolumeKind::Persistent { size_bytes } = v.kind else { continue };
        let before = running.volumes.iter().find(|old| old.name == v.name).map(|old| &old.kind);
        match before {
            Some(VolumeKind::Persistent { size_bytes: old }) if *old != size_bytes => {
                return Err(Error {
                    code: ErrorCode::InvalidRequest as i32,
                    message: format!(
                    "persistent volume {} holds {old} bytes and cannot be resized by an update (asked {size_bytes})",
                    v.name
                ),
                    field: "pod.volumes".into(),
                })
            }
            Some(kind) if !matches!(kind, VolumeKind::Persistent { .. }) => {
                return Err(Error {
                    code: ErrorCode::InvalidRequest as i32,
                    message: format!(
                        "volume {} is not persistent now; give the persistent volume another name",
                        v.name
                    ),
                    field: "pod.volumes".into(),
                })
            }
            _ => {}
        }
    }
    Ok(())
}
