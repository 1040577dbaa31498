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

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sealpod_net::PeerId;
use sealpod_proto::{Error, ErrorCode, PodStatus, UpdateRequest};
use sealpod_runtime::{PodSpec, VolumeKind};

use crate::store::{Exposed, HttpRoute};
use crate::{admission, gateway, internal, wipe_secrets, Provider};

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
        let admitted = admission::admit(
            pod_id,
            pod,
            &self.images,
            self.config.expose_ip,
            egress,
            self.config.scale_down_after,
            &held,
        );
        let mut admitted = admitted?;
        if let Some(v) = &verified {
            crate::covers(v, &admitted)?;
        }
        keeps_persistent_sizes(&running, &admitted.spec)?;
        // Kept in memory, should the old spec have to start again.
        let old_secrets = sealpod_runtime::secrets::read_back(&running).map_err(internal)?;

        // From here on the pod changes. Requests for its hostname go to the
        // new listener and wait there; those at the old copy finish first.
        let old_route = record.http.as_ref().and_then(|h| self.routes.get(&h.host));
        self.route(pod_id, admitted.http.as_ref().map(|h| (h.host.as_str(), h.backend)));
        if let Some(route) = &old_route {
            drain(route, DRAIN);
        }
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
        let started = admitted
            .listeners()
            .and_then(|listeners| self.runtime.create(&spec, listeners, admitted.secrets).map_err(internal));
        let state = match started {
            Ok(state) => state,
            Err(e) => {
                tracing::warn!(pod = %pod_id, error = %e.message, "update failed; starting the old containers again");
                self.restore(pod_id, &previous, old_secrets, old_route);
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
            .map(|p| Exposed { host: p.host, container: p.container.clone(), container_port: p.target_port })
            .collect();
        record.http = admitted.http.as_ref().map(|h| HttpRoute {
            host: h.host.clone(),
            backend: h.backend,
            container: h.container.clone(),
            container_port: h.container_port,
        });
        record.cpu_millicores = want.cpu_millicores;
        record.memory_bytes = want.memory_bytes;
        record.payload_manifest_base64 = payload.map(|pm| pm.manifest_base64.clone());
        self.store.put(&record).map_err(internal)?;
        self.update_deny_file();
        tracing::info!(pod = %pod_id, owner = %peer, phase = ?state.phase, "updated pod");
        Ok(self.pod_status(&record, &state))
    }

    /// Points the pod's hostname (if any) at `backend`, dropping the names
    /// it no longer has.
    fn route(&self, pod_id: &str, http: Option<(&str, SocketAddr)>) {
        self.routes.release(pod_id);
        if let Some((host, backend)) = http {
            let route =
                gateway::Route { pod_id: pod_id.to_owned(), backends: vec![Arc::new(gateway::Backend::new(backend))] };
            if let Err(e) = self.routes.claim(host, route) {
                tracing::error!(pod = %pod_id, error = %e, "update: the hostname could not be routed");
            }
        }
    }

    /// Starts the spec that ran before a failed update, on its own ports.
    fn restore(
        &self,
        pod_id: &str,
        previous: &PodSpec,
        secrets: Vec<sealpod_runtime::Secret>,
        old_route: Option<gateway::Route>,
    ) {
        let _ = self.runtime.stop_for_update(pod_id);
        let listeners: Result<Vec<TcpListener>, _> = previous.ports.iter().map(|p| TcpListener::bind(p.host)).collect();
        let restored = listeners
            .map_err(|e| e.to_string())
            .and_then(|listeners| self.runtime.create(previous, listeners, secrets).map_err(|e| e.to_string()));
        match restored {
            Ok(_) => {
                self.routes.release(pod_id);
                if let Some(route) = old_route {
                    for host in self.hosts_of(pod_id) {
                        let _ = self.routes.claim(&host, route.clone());
                    }
                }
            }
            Err(e) => tracing::error!(pod = %pod_id, error = %e, "the pod could not be started as before"),
        }
    }

    fn hosts_of(&self, pod_id: &str) -> Vec<String> {
        self.store.get(pod_id).ok().flatten().and_then(|r| r.http).map(|h| h.host).into_iter().collect()
    }
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
