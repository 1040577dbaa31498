//! Deciding whether a provisioning request can run here, and turning it into
//! what the runtime runs: images prepared, ports bound, limits set.

use std::net::{IpAddr, SocketAddr, TcpListener};

use sealpod_runtime::HostSocket;
use std::path::Path;

use sealpod_proto::{image::Source, volume, Error, ErrorCode, Pod, Protocol};
use sealpod_runtime::{
    ContainerSpec, EgressPolicy, Limits, MountSpec, PodSpec, PortForward, RestartPolicy, VolumeKind, VolumeSpec,
};

use crate::images::{ImageStore, UnpackedImage};

/// A request turned into something the runtime can start.
pub struct Admitted {
    /// What the shim runs.
    pub spec: PodSpec,
    /// Bound host listeners, one per `spec.ports` entry; `None` for a port
    /// the pod already holds (an update), bound by [`Admitted::listeners`]
    /// once the old copy has let it go.
    pub listeners: Vec<Option<HostSocket>>,
    /// Each container's image manifest bytes, in container order.
    pub image_manifests: Vec<Vec<u8>>,
    /// Secret volumes' bytes, for the shim's pipe only.
    pub secrets: Vec<sealpod_runtime::Secret>,
    /// The pod's HTTP port, served by the entry point: its hostname and the
    /// loopback listener (one of `listeners`) the entry point sends to.
    pub http: Option<HttpPort>,
}

impl Admitted {
    /// One bound listener per `spec.ports` entry, binding those left for
    /// later (the ports an update keeps).
    pub fn listeners(&mut self) -> Result<Vec<HostSocket>, Error> {
        let mut bound = Vec::with_capacity(self.listeners.len());
        for (i, listener) in self.listeners.iter_mut().enumerate() {
            let listener = match listener.take() {
                Some(listener) => listener,
                None => {
                    let host = self.spec.ports[i].host;
                    HostSocket::bind(host, self.spec.ports[i].udp).map_err(|e| Error {
                        code: ErrorCode::Conflict as i32,
                        message: format!("cannot take port {} back for the pod: {e}", host.port()),
                        field: "pod.containers.ports".into(),
                    })?
                }
            };
            bound.push(listener);
        }
        Ok(bound)
    }
}

/// A pod's HTTP port as admitted.
#[derive(Debug, Clone)]
pub struct HttpPort {
    /// The hostname, lowercase.
    pub host: String,
    /// The loopback address the shim forwards into the pod.
    pub backend: SocketAddr,
    /// The container that declared it.
    pub container: String,
    /// Its port inside the pod.
    pub container_port: u16,
}

/// The disk a pod gets when none of its containers asks for
/// `ephemeral-storage`: its writable layers and emptyDir volumes together.
pub const DEFAULT_EPHEMERAL_STORAGE: u64 = 1 << 30;

fn invalid(field: String, message: impl Into<String>) -> Error {
    Error { code: ErrorCode::InvalidRequest as i32, message: message.into(), field }
}

/// Checks a wire pod and prepares everything it needs.
/// `egress` is the outbound access the pod's payload manifest was granted, if
/// any: its containers then find the proxy in `HTTP_PROXY` and `HTTPS_PROXY`.
// Each input is one the two callers (provision, update) work out differently.
#[allow(clippy::too_many_arguments)]
pub fn admit(
    pod_id: &str,
    pod: &Pod,
    images: &ImageStore,
    expose_ip: IpAddr,
    egress: Option<EgressPolicy>,
    scale_down_after: std::time::Duration,
    held: &[SocketAddr],
    gpus: &mut crate::gpus::GpuPick<'_>,
) -> Result<Admitted, Error> {
    if pod.containers.is_empty() {
        return Err(invalid("pod.containers".into(), "a pod needs at least one container"));
    }
    if pod.containers.len() > 16 {
        return Err(invalid("pod.containers".into(), "at most 16 containers per pod"));
    }
    let mut names = std::collections::HashSet::new();
    let mut volumes = Vec::new();
    let mut secrets = Vec::new();
    let mut secret_bytes = 0usize;
    for (i, v) in pod.volumes.iter().enumerate() {
        let field = format!("pod.volumes[{i}]");
        check_name(&v.name, &field)?;
        let kind = match &v.kind {
            Some(volume::Kind::EmptyDir(e)) if e.memory => VolumeKind::Memory { size_bytes: e.size_limit_bytes },
            Some(volume::Kind::EmptyDir(e)) if e.size_limit_bytes > 0 => {
                VolumeKind::LimitedDir { size_bytes: e.size_limit_bytes }
            }
            Some(volume::Kind::EmptyDir(_)) => VolumeKind::EmptyDir,
            Some(volume::Kind::Persistent(p)) if p.size_bytes == 0 => {
                return Err(invalid(format!("{field}.persistent.size_bytes"), "a persistent volume needs a size"));
            }
            Some(volume::Kind::Persistent(p)) => VolumeKind::Persistent { size_bytes: p.size_bytes },
            Some(volume::Kind::Secret(s)) => {
                let file_name = if s.file_name.is_empty() { v.name.clone() } else { s.file_name.clone() };
                let plain = !file_name.is_empty()
                    && file_name.len() <= 255
                    && file_name != "."
                    && file_name != ".."
                    && !file_name.contains(['/', '\0']);
                if !plain {
                    return Err(invalid(format!("{field}.secret.file_name"), "must be a plain file name"));
                }
                secret_bytes = secret_bytes.saturating_add(s.contents.len());
                if secret_bytes > sealpod_runtime::secrets::MAX_SECRET_BYTES {
                    return Err(invalid(
                        format!("{field}.secret"),
                        format!(
                            "secrets of one pod may hold {} bytes at most",
                            sealpod_runtime::secrets::MAX_SECRET_BYTES
                        ),
                    ));
                }
                secrets.push(sealpod_runtime::Secret {
                    volume: v.name.clone(),
                    contents: zeroize::Zeroizing::new(s.contents.clone()),
                });
                VolumeKind::Secret { file_name }
            }
            None => return Err(invalid(field, "volume has no kind (emptyDir, persistent or secret)")),
        };
        if volumes.iter().any(|x: &VolumeSpec| x.name == v.name) {
            return Err(invalid(field, format!("duplicate volume name {:?}", v.name)));
        }
        volumes.push(VolumeSpec { name: v.name.clone(), kind });
    }

    let mut containers = Vec::new();
    let mut image_manifests = Vec::new();
    let mut forwards = Vec::new();
    let mut listeners = Vec::new();
    // Each port inside the pod belongs to one container (they share a network).
    let mut target_ports = std::collections::HashMap::new();
    let mut http = None;
    for (i, c) in pod.containers.iter().enumerate() {
        let field = format!("pod.containers[{i}]");
        check_name(&c.name, &format!("{field}.name"))?;
        if !names.insert(c.name.clone()) {
            return Err(invalid(format!("{field}.name"), format!("duplicate container name {:?}", c.name)));
        }
        let image = match c.image.as_ref().and_then(|i| i.source.as_ref()) {
            Some(Source::Reference(r)) => {
                let prepared = if r.starts_with(crate::images::NETWORK_SCHEME) {
                    images.prepare_network(r)
                } else {
                    images.prepare(r)
                };
                prepared.map_err(|e| image_error(e, &field))?
            }
            Some(Source::Content(content)) => match &content.key {
                Some(key) => {
                    let key = decryption_key(key).map_err(|m| invalid(format!("{field}.image.content.key"), m))?;
                    images
                        .prepare_private(&content.digest, &key, pod_id, &c.name)
                        .map_err(|e| image_error(e, &field))?
                }
                None => images.prepare_network(&content.digest).map_err(|e| image_error(e, &field))?,
            },
            None => return Err(invalid(format!("{field}.image"), "container has no image")),
        };
        let args = process_args(c, &image).map_err(|m| invalid(format!("{field}.command"), m))?;
        let (uid, gid) = resolve_user(&image).map_err(|m| invalid(format!("{field}.image"), m))?;
        let mut env: Vec<String> = image.config.env.clone();
        if !env.iter().any(|e| e.starts_with("PATH=")) {
            env.insert(0, "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
        }
        if let Some(policy) = &egress {
            let proxy = format!("http://127.0.0.1:{}", policy.proxy_port);
            for name in ["HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"] {
                env.push(format!("{name}={proxy}"));
            }
        }
        for (j, e) in c.env.iter().enumerate() {
            if e.name.is_empty() || e.name.contains('=') || e.name.contains('\0') || e.value.contains('\0') {
                return Err(invalid(
                    format!("{field}.env[{j}]"),
                    format!("invalid environment variable name {:?}", e.name),
                ));
            }
            env.retain(|x| x.split_once('=').map(|(k, _)| k) != Some(e.name.as_str()));
            env.push(format!("{}={}", e.name, e.value));
        }
        let cwd = if !c.working_dir.is_empty() {
            c.working_dir.clone()
        } else {
            image.config.working_dir.clone().filter(|w| !w.is_empty()).unwrap_or_else(|| "/".into())
        };
        if !cwd.starts_with('/') {
            return Err(invalid(format!("{field}.working_dir"), "the working directory must be an absolute path"));
        }
        let mut mounts = Vec::new();
        for (j, m) in c.volume_mounts.iter().enumerate() {
            let mfield = format!("{field}.volume_mounts[{j}]");
            if !volumes.iter().any(|v| v.name == m.name) {
                return Err(invalid(mfield, format!("no volume named {:?} in the pod", m.name)));
            }
            if !m.mount_path.starts_with('/') || m.mount_path.split('/').any(|s| s == "..") {
                return Err(invalid(mfield, "mount path must be absolute and free of '..'"));
            }
            mounts.push(MountSpec { volume: m.name.clone(), path: m.mount_path.clone(), read_only: m.read_only });
        }
        let r = c.resources.unwrap_or_default();
        let devices = gpus.take(r.gpus, &format!("{field}.resources.gpus"))?;
        for e in gpus.env(&devices.names) {
            // The device's variables, unless the manifest set its own.
            let key = e.split_once('=').map_or(e.as_str(), |(k, _)| k);
            if !c.env.iter().any(|x| x.name == key) {
                env.retain(|x| x.split_once('=').map(|(k, _)| k) != Some(key));
                env.push(e);
            }
        }
        for (j, p) in c.ports.iter().enumerate() {
            let pfield = format!("{field}.ports[{j}]");
            let udp = p.protocol == Protocol::Udp as i32;
            let target = u16::try_from(p.target_port).ok().filter(|t| *t > 0).ok_or_else(|| {
                invalid(format!("{pfield}.target_port"), format!("{} is not a valid port", p.target_port))
            })?;
            let port = u16::try_from(p.port)
                .map_err(|_| invalid(format!("{pfield}.port"), format!("{} is not a valid port", p.port)))?;
            if target_ports.entry((target, udp)).or_insert(c.name.as_str()) != &c.name.as_str() {
                let proto = if udp { "UDP" } else { "TCP" };
                return Err(Error {
                    code: ErrorCode::Conflict as i32,
                    message: format!(
                        "{proto} port {target} is declared by two containers of the pod (they share one network)"
                    ),
                    field: pfield,
                });
            }
            if p.pod_only {
                // Reached by the pod's own containers over its loopback; nothing to bind.
                continue;
            }
            if !p.http_host.is_empty() {
                if udp {
                    return Err(invalid(pfield, "an HTTP port (http_host) is a TCP port"));
                }
                if http.is_some() {
                    return Err(invalid(pfield, "a pod has one HTTP port (http_host) at most"));
                }
                let host = sealpod_proto::check_hostname(&p.http_host)
                    .map_err(|m| invalid(format!("{pfield}.http_host"), m))?;
                if host != p.http_host {
                    return Err(invalid(format!("{pfield}.http_host"), "the hostname must be lowercase"));
                }
                let listener = TcpListener::bind(SocketAddr::new(IpAddr::from([127, 0, 0, 1]), 0))
                    .map_err(|e| Error::new(ErrorCode::Internal, format!("binding the pod's HTTP port: {e}")))?;
                let backend = listener.local_addr().map_err(|e| Error::new(ErrorCode::Internal, e.to_string()))?;
                http = Some(HttpPort { host, backend, container: c.name.clone(), container_port: target });
                forwards.push(PortForward { host: backend, target_port: target, container: c.name.clone(), udp });
                listeners.push(Some(HostSocket::Tcp(listener)));
                continue;
            }
            let wanted = SocketAddr::new(expose_ip, port);
            if port != 0 && held.contains(&wanted) {
                // The pod's own port (an update): bound once its old copy is gone.
                forwards.push(PortForward { host: wanted, target_port: target, container: c.name.clone(), udp });
                listeners.push(None);
                continue;
            }
            let listener = HostSocket::bind(wanted, udp).map_err(|e| Error {
                code: ErrorCode::Conflict as i32,
                message: format!("cannot expose port {port} on the provider: {e}"),
                field: format!("{pfield}.port"),
            })?;
            let host = listener.local_addr().map_err(|e| Error::new(ErrorCode::Internal, e.to_string()))?;
            forwards.push(PortForward { host, target_port: target, container: c.name.clone(), udp });
            listeners.push(Some(listener));
        }
        image_manifests.push(image.manifest.clone());
        containers.push(ContainerSpec {
            name: c.name.clone(),
            image_rootfs: image.rootfs.clone(),
            image_digest: image.digest.clone(),
            args,
            env,
            cwd,
            uid,
            gid,
            limits: Limits { cpu_millicores: r.cpu_millicores, memory_bytes: r.memory_bytes, pids: r.pids },
            mounts,
            devices,
        });
    }
    let restart = match sealpod_proto::RestartPolicy::try_from(pod.restart_policy) {
        Ok(sealpod_proto::RestartPolicy::Always) => RestartPolicy::Always,
        Ok(sealpod_proto::RestartPolicy::Never) => RestartPolicy::Never,
        _ => RestartPolicy::OnFailure,
    };
    // Every pod gets a disk of its own: what its containers asked for, or the
    // default when none did.
    let asked = pod
        .containers
        .iter()
        .filter_map(|c| c.resources.as_ref())
        .fold(0u64, |sum, r| sum.saturating_add(r.ephemeral_storage_bytes));
    let storage_bytes = if asked > 0 { asked } else { DEFAULT_EPHEMERAL_STORAGE };
    // `replicas.min == 0`: the containers stop when idle and a connection
    // through one of the pod's ports wakes them, so there must be one.
    let scale_to_zero = match pod.replicas {
        Some(r) if r.min == 0 => {
            if forwards.is_empty() {
                return Err(invalid(
                    "pod.replicas.min".into(),
                    "a pod that scales to zero (min 0) needs a port or an HTTP port to wake it",
                ));
            }
            Some(sealpod_runtime::scale::ScaleToZero { idle_ms: scale_down_after.as_millis() as u64 })
        }
        _ => None,
    };
    Ok(Admitted {
        http,
        spec: PodSpec {
            pod_id: pod_id.to_owned(),
            containers,
            restart,
            volumes,
            ports: forwards,
            egress,
            user_ns: None,
            storage_bytes,
            secrets_token: String::new(),
            scale_to_zero,
        },
        listeners,
        image_manifests,
        secrets,
    })
}

fn check_name(name: &str, field: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(invalid(
            field.to_owned(),
            format!("{name:?} is not a valid name (lowercase letters, digits and '-', at most 63)"),
        ))
    }
}

/// The argv, with Kubernetes' rules: `command` replaces the image's entrypoint
/// (and then the image's cmd is dropped), `args` replaces the image's cmd.
fn process_args(c: &sealpod_proto::Container, image: &UnpackedImage) -> Result<Vec<String>, String> {
    let mut argv = if c.command.is_empty() { image.config.entrypoint.clone() } else { c.command.clone() };
    if !c.args.is_empty() {
        argv.extend(c.args.iter().cloned());
    } else if c.command.is_empty() {
        argv.extend(image.config.cmd.iter().cloned());
    }
    if argv.is_empty() {
        return Err("no command: neither the manifest nor the image says what to run".into());
    }
    Ok(argv)
}

/// The image's `User` as numeric ids, looking names up in the image's
/// /etc/passwd and /etc/group.
fn resolve_user(image: &UnpackedImage) -> Result<(u32, u32), String> {
    let user = image.config.user.clone().unwrap_or_default();
    if user.is_empty() {
        return Ok((0, 0));
    }
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u.to_owned(), Some(g.to_owned())),
        None => (user.clone(), None),
    };
    let (uid, primary_gid) = match u.parse::<u32>() {
        Ok(uid) => (uid, lookup(&image.rootfs.join("etc/passwd"), |f| f.get(2) == Some(&u.as_str()), 3).unwrap_or(uid)),
        Err(_) => {
            let uid = lookup(&image.rootfs.join("etc/passwd"), |f| f.first() == Some(&u.as_str()), 2)
                .ok_or_else(|| format!("user {u:?} is not in the image's /etc/passwd"))?;
            let gid = lookup(&image.rootfs.join("etc/passwd"), |f| f.first() == Some(&u.as_str()), 3).unwrap_or(0);
            (uid, gid)
        }
    };
    let gid = match g {
        None => primary_gid,
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => lookup(&image.rootfs.join("etc/group"), |f| f.first() == Some(&g.as_str()), 2)
                .ok_or_else(|| format!("group {g:?} is not in the image's /etc/group"))?,
        },
    };
    Ok((uid, gid))
}

/// Field `want` of the first line of a colon-separated file matching `pred`.
/// The file is the image's, so it is read through a size cap and never
/// followed out of the root filesystem by the caller's choice of paths.
fn lookup(path: &Path, pred: impl Fn(&[&str]) -> bool, want: usize) -> Option<u32> {
    let meta = std::fs::symlink_metadata(path).ok()?;
    if !meta.is_file() || meta.len() > 1 << 20 {
        return None;
    }
    let text = std::fs::read_to_string(path).ok()?;
    text.lines().map(|l| l.split(':').collect::<Vec<_>>()).find(|f| pred(f)).and_then(|f| f.get(want)?.parse().ok())
}

/// The private key a wire `DecryptionKey` holds.
fn decryption_key(key: &sealpod_proto::DecryptionKey) -> Result<sealpod_oci::ocicrypt::PrivateKey, String> {
    if key.kind != crate::images::KEY_KIND_JWE_PEM {
        return Err(format!(
            "decryption key kind {:?} is not supported (only {:?})",
            key.kind,
            crate::images::KEY_KIND_JWE_PEM
        ));
    }
    sealpod_oci::ocicrypt::parse_private_key(&key.data).map_err(|e| e.to_string())
}

fn image_error(e: crate::images::ImageError, field: &str) -> Error {
    let code = match e {
        crate::images::ImageError::NoArtifactNode(_) => ErrorCode::Unavailable,
        _ => ErrorCode::NotFound,
    };
    Error { code: code as i32, message: e.to_string(), field: format!("{field}.image") }
}
