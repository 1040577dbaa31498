//! The user form to the wire form: the rules across fields, hoisting inline
//! volumes into the pod's volume array, and reading secret files.
//!
//! This is the only place that builds a [`sealpod_proto::Pod`] from a manifest.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};

use sealpod_proto::{
    image, volume, Container, EnvVar, Image, Pod, Port, Protocol, Replicas, Resources, RestartPolicy, Volume,
    VolumeMount,
};

use crate::apocryph::{name_from_image, HttpHost, VolumeType};
use crate::error::{FieldPath, ManifestErrorKind};
use crate::pod::{
    quoted, ContainerSpec, Exposure, PodManifest, PortForm, PortSpec, ReplicasSpec, ResourcesSpec, RestartPolicySpec,
    TargetPort, VolumeKindFields,
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
    /// `type: trustedpods`: ports mean what Apocryph's manifest says.
    apocryph: bool,
    /// What the user should know: derived names, ignored fields.
    notes: Vec<String>,
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
        apocryph: manifest.kind.is_some(),
        notes: Vec::new(),
    };
    for (i, spec) in manifest.volumes.iter().enumerate() {
        let path = root.key("volumes").index(i);
        let name = spec.name.0.clone();
        if let Some(first) = state.volume_names.get(&name) {
            return Err(invalid(path.key("name"), format!("volume name {name} is already used by {first}")));
        }
        let kind = volume_kind(&path, &name, spec.kind_fields(), base_dir, &mut state.notes)?.ok_or_else(|| {
            invalid(
                path.clone(),
                "a volume needs one of emptyDir, persistent or secret (or type: volume, emptyDir or secret)",
            )
        })?;
        state.volume_names.insert(name.clone(), path);
        state.volumes.push(Volume { name, kind: Some(kind) });
    }

    let private_images =
        manifest.containers.iter().enumerate().filter(|(_, c)| c.private_image).map(|(i, _)| i).collect();
    let names = container_names(&root, &manifest.containers, &mut state.notes);
    let mut containers = Vec::with_capacity(manifest.containers.len());
    let mut container_names: HashMap<String, FieldPath> = HashMap::new();
    for (i, (spec, name)) in manifest.containers.into_iter().zip(names).enumerate() {
        let path = root.key("containers").index(i);
        if let Some(first) = container_names.get(&name) {
            return Err(invalid(path.key("name"), format!("container name {name} is already used by {first}")));
        }
        container_names.insert(name.clone(), path.clone());
        containers.push(container(&path, name, spec, &mut state)?);
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
    Ok((pod, PublisherSide { private_images, notes: state.notes }))
}

/// Each container's name: its own, or one derived from its image that no
/// other container has (Apocryph's containers are unnamed).
fn container_names(root: &FieldPath, containers: &[ContainerSpec], notes: &mut Vec<String>) -> Vec<String> {
    let mut taken: HashSet<String> = containers.iter().filter_map(|c| c.name.as_ref().map(|n| n.0.clone())).collect();
    let mut names = Vec::with_capacity(containers.len());
    for (i, c) in containers.iter().enumerate() {
        let name = match &c.name {
            Some(name) => name.0.clone(),
            None => {
                let base = name_from_image(&c.image.0);
                let mut name = base.clone();
                let mut n = 2;
                while taken.contains(&name) {
                    name = format!("{base}-{n}");
                    n += 1;
                }
                taken.insert(name.clone());
                notes.push(format!(
                    "{}: no name given; named {name} after its image (write name: to choose one)",
                    root.key("containers").index(i)
                ));
                name
            }
        };
        names.push(name);
    }
    names
}

fn container(
    path: &FieldPath,
    name: String,
    spec: ContainerSpec,
    state: &mut PodState<'_>,
) -> Result<Container, Invalid> {
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
        let inline = volume_kind(&mount_path, &inline_name, mount.kind_fields(), state.base_dir, &mut state.notes)?;
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
                         with emptyDir, persistent or secret (or type)",
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

    let mut wire_ports = Vec::with_capacity(spec.ports.len() + 1);
    for (j, port) in spec.ports.into_iter().enumerate() {
        let port_path = path.key("ports").index(j);
        let port = wire_port(port, state.apocryph);
        state.ports.register(&name, &port_path, &port)?;
        wire_ports.push(port);
    }
    match (spec.port, spec.host) {
        (Some(TargetPort(target)), Some(HttpHost(host))) => {
            let http = PortSpec { http_host: Some(host), ..PortSpec::new(0, target, PortForm::Object) };
            let port = wire_port(http, state.apocryph);
            state.ports.register(&name, &path.key("port"), &port)?;
            wire_ports.push(port);
        }
        (Some(_), None) => {
            return Err(invalid(path.key("port"), "an HTTP port needs host: the hostname that routes requests to it"))
        }
        (None, Some(_)) => {
            return Err(invalid(path.key("host"), "host needs port: the container's HTTP port it routes to"))
        }
        (None, None) => {}
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

/// A port as it goes on the wire, after the dialect has given meaning to
/// what the user left unsaid.
///
/// sealpod's own form publishes every port as written. Under `type:
/// trustedpods`, Apocryph's: `- 123` is docker-compose's (container port 123
/// published on a port the provider chooses), and a port written as a map is
/// published only with `hostIP: true` (or an address), otherwise reachable
/// by the pod's own containers only.
fn wire_port(port: PortSpec, apocryph: bool) -> Port {
    let http = port.http_host.is_some();
    let pod_only = match port.exposure {
        _ if http => false,
        Exposure::PodOnly => true,
        Exposure::Public => false,
        Exposure::Unsaid => apocryph && port.form == PortForm::Object,
    };
    let public_port =
        if apocryph && port.form == PortForm::Bare && port.exposure == Exposure::Unsaid { 0 } else { port.port };
    Port {
        port: u32::from(public_port),
        target_port: u32::from(port.target_port),
        protocol: if port.udp { Protocol::Udp } else { Protocol::Tcp } as i32,
        host_ip: port.host_ip.map(|ip| ip.to_string()).unwrap_or_default(),
        name: port.name.unwrap_or_default(),
        http_host: port.http_host.unwrap_or_default(),
        pod_only,
    }
}

/// Ports across the whole pod: every container shares one network namespace,
/// so a target port belongs to one container (which may publish it more than
/// once), a public port is given once, and one port is the pod's HTTP port.
#[derive(Default)]
struct PortRegistry {
    targets: HashMap<(u32, bool), (String, FieldPath)>,
    public: HashMap<(u32, bool), FieldPath>,
    names: HashMap<String, FieldPath>,
    http: Option<FieldPath>,
}

impl PortRegistry {
    fn register(&mut self, container: &str, path: &FieldPath, port: &Port) -> Result<(), Invalid> {
        let udp = port.protocol == Protocol::Udp as i32;
        let protocol = if udp { "udp" } else { "tcp" };
        match self.targets.get(&(port.target_port, udp)) {
            Some((owner, first)) if owner != container => {
                return Err(invalid(
                    path.clone(),
                    format!(
                        "target port {}/{protocol} is already used by {first}; \
                         all containers of a pod share one network",
                        port.target_port
                    ),
                ));
            }
            Some(_) => {}
            None => {
                self.targets.insert((port.target_port, udp), (container.to_owned(), path.clone()));
            }
        }
        if !port.http_host.is_empty() {
            if let Some(first) = &self.http {
                return Err(invalid(
                    path.clone(),
                    format!("a pod has one HTTP port (port and host), and {first} is already it"),
                ));
            }
            self.http = Some(path.clone());
        }
        let published = !port.pod_only && port.http_host.is_empty();
        if published && port.port != 0 {
            if let Some(first) = self.public.get(&(port.port, udp)) {
                return Err(invalid(
                    path.clone(),
                    format!("public port {}/{protocol} is already requested by {first}", port.port),
                ));
            }
            self.public.insert((port.port, udp), path.clone());
        }
        if !port.name.is_empty() {
            if let Some(first) = self.names.get(&port.name) {
                return Err(invalid(path.key("name"), format!("port name {} is already used by {first}", port.name)));
            }
            self.names.insert(port.name.clone(), path.clone());
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

/// The wire kind of a volume given by exactly one of its kind fields, or by
/// Apocryph's `type`; `None` when none is given (a mount may then be a
/// reference).
fn volume_kind(
    path: &FieldPath,
    name: &str,
    fields: VolumeKindFields<'_>,
    base_dir: Option<&Path>,
    notes: &mut Vec<String>,
) -> Result<Option<volume::Kind>, Invalid> {
    let given = [fields.empty_dir.is_some(), fields.persistent.is_some(), fields.secret.is_some()];
    if let Some(volume_type) = fields.volume_type {
        if given.contains(&true) {
            return Err(invalid(
                path.key("type"),
                "give type (Apocryph's spelling) or one of emptyDir, persistent, secret, not both",
            ));
        }
        return apocryph_volume(path, name, volume_type, &fields, base_dir, notes).map(Some);
    }
    if fields.resources.is_some() || fields.source.is_some() {
        let key = if fields.resources.is_some() { "resources" } else { "source" };
        return Err(invalid(
            path.key(key),
            format!(
                "{key} goes with type: volume, emptyDir or secret (Apocryph's spelling); \
                 add type, or write persistent: {{size}}, emptyDir: {{sizeLimit}} or secret: {{file}}"
            ),
        ));
    }
    if given.iter().filter(|&&g| g).count() > 1 {
        return Err(invalid(path.clone(), "a volume has exactly one of emptyDir, persistent or secret"));
    }
    if let Some(empty_dir) = fields.empty_dir {
        return Ok(Some(volume::Kind::EmptyDir(volume::EmptyDir {
            size_limit_bytes: empty_dir.size_limit.map_or(0, |size| size.0),
            memory: empty_dir.medium.memory,
        })));
    }
    if let Some(persistent) = fields.persistent {
        if persistent.size.0 == 0 {
            return Err(invalid(path.key("persistent").key("size"), "a persistent volume needs a size above 0"));
        }
        return Ok(Some(volume::Kind::Persistent(volume::Persistent { size_bytes: persistent.size.0 })));
    }
    if let Some(secret) = fields.secret {
        let path = path.key("secret");
        return match (&secret.file, &secret.contents) {
            (Some(_), Some(_)) | (None, None) => Err(invalid(path, "a secret has exactly one of file or contents")),
            (None, Some(contents)) => Ok(Some(volume::Kind::Secret(volume::Secret {
                contents: contents.clone().into_bytes(),
                file_name: name.to_owned(),
            }))),
            (Some(file), None) => secret_file(&path.key("file"), name, file, base_dir).map(Some),
        };
    }
    Ok(None)
}

/// `type: volume | emptyDir | secret`, with `resources.storage` (the size)
/// and `source` (a secret's file). A field the type has no use for is
/// ignored with a note, as Apocryph's own example carries one.
fn apocryph_volume(
    path: &FieldPath,
    name: &str,
    volume_type: VolumeType,
    fields: &VolumeKindFields<'_>,
    base_dir: Option<&Path>,
    notes: &mut Vec<String>,
) -> Result<volume::Kind, Invalid> {
    let storage = fields.resources.and_then(|r| r.storage).map(|size| size.0);
    let mut ignore = |key: &str, why: &str| notes.push(format!("{}: ignored: {why}", path.key(key)));
    match volume_type {
        VolumeType::Volume => {
            if fields.source.is_some() {
                ignore("source", "source is only read for type: secret");
            }
            match storage {
                Some(size) if size > 0 => Ok(volume::Kind::Persistent(volume::Persistent { size_bytes: size })),
                _ => Err(invalid(
                    path.key("resources").key("storage"),
                    "a volume of type volume needs its size as resources: {storage: 8Gi}, above 0",
                )),
            }
        }
        VolumeType::EmptyDir => {
            if fields.source.is_some() {
                ignore("source", "source is only read for type: secret");
            }
            Ok(volume::Kind::EmptyDir(volume::EmptyDir { size_limit_bytes: storage.unwrap_or(0), memory: false }))
        }
        VolumeType::Secret => {
            if fields.resources.is_some() {
                ignore("resources", "a secret is as large as its file");
            }
            let Some(source) = fields.source else {
                return Err(invalid(path.key("source"), "a volume of type secret needs source: the file to read"));
            };
            secret_file(&path.key("source"), name, source, base_dir)
        }
    }
}

/// A secret volume holding a local file's bytes, under the file's name.
fn secret_file(path: &FieldPath, name: &str, file: &str, base_dir: Option<&Path>) -> Result<volume::Kind, Invalid> {
    let contents = read_secret(path, file, base_dir)?;
    let file_name =
        Path::new(file).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| name.to_owned());
    Ok(volume::Kind::Secret(volume::Secret { contents, file_name }))
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
