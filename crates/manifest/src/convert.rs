//! The user form to the wire form: the rules across fields, hoisting inline
//! volumes into the pod's volume array, and reading secret files.
//!
//! This is the only place that builds a [`sealpod_proto::Pod`] from a manifest.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use sealpod_proto::{
    image, volume, Container, EnvVar, Image, Pod, Port, Protocol, Replicas, Resources, RestartPolicy, Volume,
    VolumeMount,
};

use crate::error::{FieldPath, ManifestErrorKind};
use crate::pod::{
    quoted, ContainerSpec, EmptyDirSpec, PersistentSpec, PodManifest, ReplicasSpec, ResourcesSpec, RestartPolicySpec,
    SecretSpec,
};
use crate::{PublisherSide, MAX_SECRET_BYTES};

/// A rule broken at `path`.
#[derive(Debug)]
pub(crate) struct Invalid {
    pub path: FieldPath,
    pub kind: ManifestErrorKind,
}

fn invalid(path: FieldPath, message: impl Into<String>) -> Invalid {
    Invalid { path, kind: ManifestErrorKind::Invalid(message.into()) }
}

/// What the pod-wide rules need while containers are converted one by one.
struct PodState<'a> {
    base_dir: Option<&'a Path>,
    /// The wire volumes: the pod's own first, then inline ones as met.
    volumes: Vec<Volume>,
    /// Each volume's name and where it was defined, for error messages.
    volume_names: HashMap<String, FieldPath>,
    ports: PortRegistry,
    /// Mounts by name, checked at the end: a container may mount a named
    /// inline volume that a later container defines.
    references: Vec<(String, FieldPath)>,
}

pub(crate) fn to_wire(manifest: PodManifest, base_dir: Option<&Path>) -> Result<(Pod, PublisherSide), Invalid> {
    let root = FieldPath::default();
    if manifest.containers.is_empty() {
        return Err(invalid(root.key("containers"), "a pod needs at least one container"));
    }

    let mut state = PodState {
        base_dir,
        volumes: Vec::new(),
        volume_names: HashMap::new(),
        ports: PortRegistry::default(),
        references: Vec::new(),
    };
    for (i, spec) in manifest.volumes.iter().enumerate() {
        let path = root.key("volumes").index(i);
        let name = spec.name.0.clone();
        if let Some(first) = state.volume_names.get(&name) {
            return Err(invalid(path.key("name"), format!("volume name {name} is already used by {first}")));
        }
        let kind = volume_kind(
            &path,
            &name,
            spec.empty_dir.as_ref(),
            spec.persistent.as_ref(),
            spec.secret.as_ref(),
            base_dir,
        )?
        .ok_or_else(|| invalid(path.clone(), "a volume needs one of emptyDir, persistent or secret"))?;
        state.volume_names.insert(name.clone(), path);
        state.volumes.push(Volume { name, kind: Some(kind) });
    }

    let publisher = PublisherSide {
        private_images: manifest
            .containers
            .iter()
            .enumerate()
            .filter(|(_, c)| c.private_image)
            .map(|(i, _)| i)
            .collect(),
    };
    let mut containers = Vec::with_capacity(manifest.containers.len());
    let mut container_names: HashMap<String, FieldPath> = HashMap::new();
    for (i, spec) in manifest.containers.into_iter().enumerate() {
        let path = root.key("containers").index(i);
        if let Some(first) = container_names.get(&spec.name.0) {
            return Err(invalid(
                path.key("name"),
                format!("container name {} is already used by {first}", spec.name.0),
            ));
        }
        container_names.insert(spec.name.0.clone(), path.clone());
        containers.push(container(&path, spec, &mut state)?);
    }

    for (name, path) in &state.references {
        if !state.volume_names.contains_key(name) {
            let defined: Vec<&str> = state.volumes.iter().map(|v| v.name.as_str()).collect();
            let hint = if defined.is_empty() {
                "the pod defines no volumes; add one under volumes: or define it inline here".to_owned()
            } else {
                format!("the pod defines {}", defined.join(", "))
            };
            return Err(invalid(path.clone(), format!("no volume named {name}: {hint}")));
        }
    }

    let pod = Pod {
        containers,
        replicas: Some(replicas(&root, manifest.replicas)?),
        restart_policy: match manifest.restart_policy.unwrap_or(RestartPolicySpec::OnFailure) {
            RestartPolicySpec::OnFailure => RestartPolicy::OnFailure,
            RestartPolicySpec::Always => RestartPolicy::Always,
            RestartPolicySpec::Never => RestartPolicy::Never,
        } as i32,
        volumes: state.volumes,
    };
    Ok((pod, publisher))
}

fn container(path: &FieldPath, spec: ContainerSpec, state: &mut PodState<'_>) -> Result<Container, Invalid> {
    let name = spec.name.0;

    let (mounts_key, mounts) = match (spec.volume_mounts, spec.volumes) {
        (Some(_), Some(_)) => {
            return Err(invalid(path.key("volumes"), "give volumeMounts or volumes (the same thing), not both"))
        }
        (Some(mounts), None) => ("volumeMounts", mounts),
        (None, Some(mounts)) => ("volumes", mounts),
        (None, None) => ("volumeMounts", Vec::new()),
    };
    let mut volume_mounts = Vec::with_capacity(mounts.len());
    let mut mount_paths: HashMap<String, FieldPath> = HashMap::new();
    for (j, mount) in mounts.into_iter().enumerate() {
        let mount_path = path.key(mounts_key).index(j);
        if let Some(first) = mount_paths.get(&mount.mount_path.0) {
            return Err(invalid(
                mount_path.key("mountPath"),
                format!("mountPath {} is already used by {first}", mount.mount_path.0),
            ));
        }
        mount_paths.insert(mount.mount_path.0.clone(), mount_path.clone());

        let inline_name = mount.name.as_ref().map_or_else(|| format!("{name}-vol-{j}"), |n| n.0.clone());
        let inline = volume_kind(
            &mount_path,
            &inline_name,
            mount.empty_dir.as_ref(),
            mount.persistent.as_ref(),
            mount.secret.as_ref(),
            state.base_dir,
        )?;
        let volume_name = match inline {
            Some(kind) => {
                if let Some(first) = state.volume_names.get(&inline_name) {
                    let what = match mount.name {
                        Some(_) => "this volume's name",
                        None => "the generated name",
                    };
                    return Err(invalid(
                        mount_path.clone(),
                        format!("{what} {inline_name} is already used by {first}; name this volume"),
                    ));
                }
                state.volume_names.insert(inline_name.clone(), mount_path.clone());
                state.volumes.push(Volume { name: inline_name.clone(), kind: Some(kind) });
                inline_name
            }
            None => match mount.name {
                Some(reference) => {
                    state.references.push((reference.0.clone(), mount_path.key("name")));
                    reference.0
                }
                None => {
                    return Err(invalid(
                        mount_path,
                        "give the name of a pod volume, or define the volume here \
                         with emptyDir, persistent or secret",
                    ))
                }
            },
        };
        volume_mounts.push(VolumeMount {
            name: volume_name,
            mount_path: mount.mount_path.0,
            read_only: mount.read_only,
        });
    }

    let mut wire_ports = Vec::with_capacity(spec.ports.len());
    for (j, port) in spec.ports.into_iter().enumerate() {
        let port_path = path.key("ports").index(j);
        state.ports.register(&port_path, &port)?;
        wire_ports.push(Port {
            port: u32::from(port.port),
            target_port: u32::from(port.target_port),
            protocol: if port.udp { Protocol::Udp } else { Protocol::Tcp } as i32,
            host_ip: port.host_ip.map(|ip| ip.to_string()).unwrap_or_default(),
            name: port.name.unwrap_or_default(),
        });
    }

    let resources = match spec.resources {
        Some(resources) => Some(wire_resources(&path.key("resources"), &resources)?),
        None => None,
    };

    Ok(Container {
        name,
        image: Some(Image { source: Some(image::Source::Reference(spec.image.0)) }),
        command: spec.command.map(|words| words.0).unwrap_or_default(),
        args: spec.args.map(|words| words.0).unwrap_or_default(),
        working_dir: spec.working_dir.map(|dir| dir.0).unwrap_or_default(),
        ports: wire_ports,
        env: spec
            .env
            .map(|env| env.0)
            .unwrap_or_default()
            .into_iter()
            .map(|(name, value)| EnvVar { name, value })
            .collect(),
        volume_mounts,
        resources,
    })
}

/// Ports across the whole pod: every container shares one network namespace,
/// so a target port can be listened on once, and a public port given once.
#[derive(Default)]
struct PortRegistry {
    targets: HashMap<(u16, bool), FieldPath>,
    public: HashMap<(u16, bool), FieldPath>,
    names: HashMap<String, FieldPath>,
}

impl PortRegistry {
    fn register(&mut self, path: &FieldPath, port: &crate::pod::PortSpec) -> Result<(), Invalid> {
        let protocol = if port.udp { "udp" } else { "tcp" };
        if let Some(first) = self.targets.get(&(port.target_port, port.udp)) {
            return Err(invalid(
                path.clone(),
                format!(
                    "target port {}/{protocol} is already used by {first}; all containers of a pod share one network",
                    port.target_port
                ),
            ));
        }
        self.targets.insert((port.target_port, port.udp), path.clone());
        if port.port != 0 {
            if let Some(first) = self.public.get(&(port.port, port.udp)) {
                return Err(invalid(
                    path.clone(),
                    format!("public port {}/{protocol} is already requested by {first}", port.port),
                ));
            }
            self.public.insert((port.port, port.udp), path.clone());
        }
        if let Some(name) = &port.name {
            if let Some(first) = self.names.get(name) {
                return Err(invalid(path.key("name"), format!("port name {name} is already used by {first}")));
            }
            self.names.insert(name.clone(), path.clone());
        }
        Ok(())
    }
}

fn wire_resources(path: &FieldPath, spec: &ResourcesSpec) -> Result<Resources, Invalid> {
    let flat = spec.flat();
    if !flat.is_empty() && (spec.requests.is_some() || spec.limits.is_some()) {
        let key = if spec.limits.is_some() { "limits" } else { "requests" };
        return Err(invalid(
            path.key(key),
            "give quantities directly under resources or under requests/limits, not both",
        ));
    }
    let requests = spec.requests.unwrap_or_default();
    let limits = spec.limits.unwrap_or_default();
    // A pod is given what it asks for; limits win, as they are the amount the
    // pod may use and so the amount a provider must set aside.
    let pick = |field: fn(&crate::pod::ResourceSet) -> Option<u64>| {
        field(&flat).or(field(&limits)).or(field(&requests)).unwrap_or(0)
    };
    Ok(Resources {
        cpu_millicores: pick(|set| set.cpu.map(|cpu| cpu.0)),
        memory_bytes: pick(|set| set.memory.map(|bytes| bytes.0)),
        gpus: pick(|set| set.gpu.map(|count| u64::from(count.0))) as u32,
        ephemeral_storage_bytes: pick(|set| set.ephemeral_storage.map(|bytes| bytes.0)),
        pids: pick(|set| set.pids.map(|count| u64::from(count.0))) as u32,
    })
}

fn replicas(root: &FieldPath, spec: Option<ReplicasSpec>) -> Result<Replicas, Invalid> {
    let path = root.key("replicas");
    match spec {
        None => Ok(Replicas { min: 1, max: 1 }),
        Some(ReplicasSpec::Fixed(0)) => {
            Err(invalid(path, "replicas must be at least 1; write {min: 0, max: N} to let the pod scale to zero"))
        }
        Some(ReplicasSpec::Fixed(n)) => match u32::try_from(n) {
            Ok(n) => Ok(Replicas { min: n, max: n }),
            Err(_) => Err(invalid(path, format!("{n} replicas is too many"))),
        },
        Some(ReplicasSpec::Range { max: 0, .. }) => Err(invalid(path.key("max"), "max must be at least 1")),
        Some(ReplicasSpec::Range { min, max }) if min > max => {
            Err(invalid(path.key("min"), format!("min ({min}) is larger than max ({max})")))
        }
        Some(ReplicasSpec::Range { min, max }) => Ok(Replicas { min, max }),
    }
}

/// The wire kind of a volume given by exactly one of its kind fields; `None`
/// when none is given (a mount may then be a reference).
fn volume_kind(
    path: &FieldPath,
    name: &str,
    empty_dir: Option<&EmptyDirSpec>,
    persistent: Option<&PersistentSpec>,
    secret: Option<&SecretSpec>,
    base_dir: Option<&Path>,
) -> Result<Option<volume::Kind>, Invalid> {
    let given = [empty_dir.is_some(), persistent.is_some(), secret.is_some()];
    if given.iter().filter(|&&g| g).count() > 1 {
        return Err(invalid(path.clone(), "a volume has exactly one of emptyDir, persistent or secret"));
    }
    if let Some(empty_dir) = empty_dir {
        return Ok(Some(volume::Kind::EmptyDir(volume::EmptyDir {
            size_limit_bytes: empty_dir.size_limit.map_or(0, |size| size.0),
            memory: empty_dir.medium.memory,
        })));
    }
    if let Some(persistent) = persistent {
        if persistent.size.0 == 0 {
            return Err(invalid(path.key("persistent").key("size"), "a persistent volume needs a size above 0"));
        }
        return Ok(Some(volume::Kind::Persistent(volume::Persistent { size_bytes: persistent.size.0 })));
    }
    if let Some(secret) = secret {
        let path = path.key("secret");
        let (contents, file_name) = match (&secret.file, &secret.contents) {
            (Some(_), Some(_)) | (None, None) => {
                return Err(invalid(path, "a secret has exactly one of file or contents"));
            }
            (None, Some(contents)) => (contents.clone().into_bytes(), name.to_owned()),
            (Some(file), None) => {
                let path = path.key("file");
                let contents = read_secret(&path, file, base_dir)?;
                let file_name = Path::new(file)
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| name.to_owned());
                (contents, file_name)
            }
        };
        return Ok(Some(volume::Kind::Secret(volume::Secret { contents, file_name })));
    }
    Ok(None)
}

/// Reads a secret file relative to the manifest's directory, refusing
/// anything but a regular file of at most [`MAX_SECRET_BYTES`].
fn read_secret(path: &FieldPath, file: &str, base_dir: Option<&Path>) -> Result<Vec<u8>, Invalid> {
    if file.is_empty() {
        return Err(invalid(path.clone(), "the secret's file name is empty"));
    }
    // Without a directory the text did not come from a file the user points
    // at, so it gets no say over which local files are read.
    let Some(base_dir) = base_dir else {
        return Err(invalid(
            path.clone(),
            format!(
                "secret file {} cannot be read: the manifest was not loaded from a file; \
                 load it from a file, or give the secret as contents",
                quoted(file)
            ),
        ));
    };
    let resolved: PathBuf = base_dir.join(file);
    let io_error =
        |source| Invalid { path: path.clone(), kind: ManifestErrorKind::SecretFile { path: resolved.clone(), source } };
    let too_large = || Invalid {
        path: path.clone(),
        kind: ManifestErrorKind::SecretTooLarge { path: resolved.clone(), limit: MAX_SECRET_BYTES },
    };
    // Checked before opening: opening a FIFO would block.
    let metadata = std::fs::metadata(&resolved).map_err(io_error)?;
    if !metadata.is_file() {
        return Err(io_error(std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a regular file")));
    }
    if metadata.len() > MAX_SECRET_BYTES {
        return Err(too_large());
    }
    let mut contents = Vec::new();
    std::fs::File::open(&resolved)
        .and_then(|file| file.take(MAX_SECRET_BYTES + 1).read_to_end(&mut contents))
        .map_err(io_error)?;
    if contents.len() as u64 > MAX_SECRET_BYTES {
        return Err(too_large());
    }
    Ok(contents)
}
