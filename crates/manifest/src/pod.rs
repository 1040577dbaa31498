//! The pod manifest as the user writes it (YAML or JSON), before conversion.
//!
//! Every check that concerns one value is made here, while deserializing, so
//! that the error carries the deserializer's line and column; rules across
//! fields (unique names and ports, volume references) are in `convert`.
//! Unknown fields are rejected everywhere.

use std::fmt;
use std::net::IpAddr;

use serde::de::value::MapAccessDeserializer;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use crate::apocryph::{HttpHost, ManifestType, ManifestVersion, VolumeResources, VolumeType};
use crate::quantity::{parse_bytes, parse_cpu};
use crate::shell::split_words;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", expecting = "a pod manifest: a map with containers")]
pub(crate) struct PodManifest {
    /// Apocryph's header: `type: trustedpods`.
    #[serde(rename = "type")]
    pub kind: Option<ManifestType>,
    /// Apocryph's header: `version: "1.0"` (checked while deserializing;
    /// there is only one).
    #[allow(dead_code)]
    pub version: Option<ManifestVersion>,
    pub containers: Vec<ContainerSpec>,
    pub replicas: Option<ReplicasSpec>,
    pub restart_policy: Option<RestartPolicySpec>,
    #[serde(default)]
    pub volumes: Vec<VolumeSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", expecting = "a container: a map with an image")]
pub(crate) struct ContainerSpec {
    /// Derived from the image when not given (Apocryph's containers have none).
    pub name: Option<Name>,
    pub image: ImageRef,
    pub command: Option<Words>,
    pub args: Option<Words>,
    pub working_dir: Option<AbsPath>,
    pub env: Option<EnvList>,
    #[serde(default)]
    pub ports: Vec<PortSpec>,
    pub volume_mounts: Option<Vec<MountSpec>>,
    /// Apocryph's spelling of `volumeMounts`; at most one of the two is given.
    pub volumes: Option<Vec<MountSpec>>,
    pub resources: Option<ResourcesSpec>,
    /// Apocryph: the container's HTTP port, served under `host` by the
    /// provider's entry point.
    pub port: Option<TargetPort>,
    /// Apocryph: the hostname that routes requests to `port`.
    pub host: Option<HttpHost>,
    /// Publisher side: encrypt the image and send it by content address and
    /// key (never travels itself).
    #[serde(default)]
    pub private_image: bool,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(expecting = "OnFailure, Always or Never")]
pub(crate) enum RestartPolicySpec {
    OnFailure,
    Always,
    Never,
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "camelCase",
    expecting = "a volume: a map with name and one of emptyDir, persistent, secret (or type)"
)]
pub(crate) struct VolumeSpec {
    pub name: Name,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub empty_dir: Option<EmptyDirSpec>,
    pub persistent: Option<PersistentSpec>,
    pub secret: Option<SecretSpec>,
    /// Apocryph's spelling: `type: volume|emptyDir|secret`.
    #[serde(rename = "type")]
    pub volume_type: Option<VolumeType>,
    /// Apocryph's spelling: `resources: {storage: 8Gi}`.
    pub resources: Option<VolumeResources>,
    /// Apocryph's spelling: the file of a `type: secret`.
    pub source: Option<String>,
}

/// A container's mount: either a reference to a pod volume by `name`, or an
/// inline definition (one of the kinds, with an optional `name`).
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "camelCase",
    expecting = "a volume mount: a map with mountPath and a volume name or definition"
)]
pub(crate) struct MountSpec {
    pub name: Option<Name>,
    pub mount_path: AbsPath,
    #[serde(default)]
    pub read_only: bool,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub empty_dir: Option<EmptyDirSpec>,
    pub persistent: Option<PersistentSpec>,
    pub secret: Option<SecretSpec>,
    /// Apocryph's spelling: `type: volume|emptyDir|secret`.
    #[serde(rename = "type")]
    pub volume_type: Option<VolumeType>,
    /// Apocryph's spelling: `resources: {storage: 8Gi}`.
    pub resources: Option<VolumeResources>,
    /// Apocryph's spelling: the file of a `type: secret`.
    pub source: Option<String>,
}

/// The fields that say what a volume is, in sealpod's spelling (one of
/// `emptyDir`, `persistent`, `secret`) or Apocryph's (`type` with
/// `resources.storage` or `source`), as a pod volume or an inline one has them.
pub(crate) struct VolumeKindFields<'a> {
    pub empty_dir: Option<&'a EmptyDirSpec>,
    pub persistent: Option<&'a PersistentSpec>,
    pub secret: Option<&'a SecretSpec>,
    pub volume_type: Option<VolumeType>,
    pub resources: Option<&'a VolumeResources>,
    pub source: Option<&'a str>,
}

macro_rules! kind_fields {
    ($t:ty) => {
        impl $t {
            pub fn kind_fields(&self) -> VolumeKindFields<'_> {
                VolumeKindFields {
                    empty_dir: self.empty_dir.as_ref(),
                    persistent: self.persistent.as_ref(),
                    secret: self.secret.as_ref(),
                    volume_type: self.volume_type,
                    resources: self.resources.as_ref(),
                    source: self.source.as_deref(),
                }
            }
        }
    };
}
kind_fields!(VolumeSpec);
kind_fields!(MountSpec);

/// `emptyDir:` and `emptyDir: {}` mean the same.
fn null_as_empty<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<EmptyDirSpec>, D::Error> {
    Ok(Some(Option::<EmptyDirSpec>::deserialize(deserializer)?.unwrap_or_default()))
}

#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "camelCase",
    expecting = "an emptyDir: a map with optional sizeLimit and medium"
)]
pub(crate) struct EmptyDirSpec {
    pub size_limit: Option<Bytes>,
    #[serde(default)]
    pub medium: Medium,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a persistent volume: a map with size")]
pub(crate) struct PersistentSpec {
    pub size: Bytes,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a secret: a map with file or contents")]
pub(crate) struct SecretSpec {
    pub file: Option<String>,
    pub contents: Option<String>,
}

/// Kubernetes-style: a flat map of quantities, or `requests:` and `limits:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "resources: a map like {cpu: 500m, memory: 1Gi}")]
pub(crate) struct ResourcesSpec {
    pub cpu: Option<Cpu>,
    pub memory: Option<Bytes>,
    #[serde(rename = "nvidia.com/gpu", alias = "gpu")]
    pub gpu: Option<Count>,
    #[serde(rename = "ephemeral-storage")]
    pub ephemeral_storage: Option<Bytes>,
    pub pids: Option<Count>,
    pub requests: Option<ResourceSet>,
    pub limits: Option<ResourceSet>,
}

impl ResourcesSpec {
    /// The quantities given directly under `resources:`.
    pub fn flat(&self) -> ResourceSet {
        ResourceSet {
            cpu: self.cpu,
            memory: self.memory,
            gpu: self.gpu,
            ephemeral_storage: self.ephemeral_storage,
            pids: self.pids,
        }
    }
}

#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a map like {cpu: 500m, memory: 1Gi}")]
pub(crate) struct ResourceSet {
    pub cpu: Option<Cpu>,
    pub memory: Option<Bytes>,
    #[serde(rename = "nvidia.com/gpu", alias = "gpu")]
    pub gpu: Option<Count>,
    #[serde(rename = "ephemeral-storage")]
    pub ephemeral_storage: Option<Bytes>,
    pub pids: Option<Count>,
}

impl ResourceSet {
    pub fn is_empty(&self) -> bool {
        self.cpu.is_none()
            && self.memory.is_none()
            && self.gpu.is_none()
            && self.ephemeral_storage.is_none()
            && self.pids.is_none()
    }
}

/// Quotes user text for an error message, cut short if long.
pub(crate) fn quoted(text: &str) -> String {
    match text.char_indices().nth(64) {
        Some((cut, _)) => format!("{:?}...", &text[..cut]),
        None => format!("{text:?}"),
    }
}

/// Deserializes a string and checks it inside the visitor, so that a
/// rejection carries the deserializer's position of the value itself.
pub(crate) fn checked_str<'de, D, T>(
    deserializer: D,
    expecting: &'static str,
    check: fn(&str) -> Result<T, String>,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
{
    struct CheckedVisitor<T> {
        expecting: &'static str,
        check: fn(&str) -> Result<T, String>,
    }
    impl<T> Visitor<'_> for CheckedVisitor<T> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str(self.expecting)
        }
        fn visit_str<E: de::Error>(self, text: &str) -> Result<T, E> {
            (self.check)(text).map_err(E::custom)
        }
    }
    deserializer.deserialize_str(CheckedVisitor { expecting, check })
}

/// A DNS label (RFC 1123): names containers and volumes.
#[derive(Debug, Clone)]
pub(crate) struct Name(pub String);

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        checked_str(deserializer, "a name like web", |name| {
            let ok = (1..=63).contains(&name.len())
                && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !name.starts_with('-')
                && !name.ends_with('-');
            if !ok {
                return Err(format!(
                    "invalid name {}: use 1 to 63 lowercase letters, digits and '-', \
                 starting and ending with a letter or digit",
                    quoted(name)
                ));
            }
            Ok(Name(name.to_owned()))
        })
    }
}

/// An image reference the provider resolves locally.
#[derive(Debug)]
pub(crate) struct ImageRef(pub String);

impl<'de> Deserialize<'de> for ImageRef {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        checked_str(deserializer, "an image reference", |image| {
            if image.trim().is_empty() || image.chars().any(char::is_control) || image != image.trim() {
                return Err(format!(
                    "invalid image {}: expected a reference like ./web.tar, oci-archive:web.tar or ./layout:tag",
                    quoted(image)
                ));
            }
            Ok(ImageRef(image.to_owned()))
        })
    }
}

/// An absolute path inside the container.
#[derive(Debug)]
pub(crate) struct AbsPath(pub String);

impl<'de> Deserialize<'de> for AbsPath {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        checked_str(deserializer, "an absolute path", |path| {
            let problem = if !path.starts_with('/') {
                Some("must be absolute (start with /)")
            } else if path.contains('\0') {
                Some("must not contain NUL")
            } else if path.split('/').any(|part| part == "..") {
                Some("must not contain ..")
            } else if path.len() > 4096 {
                Some("is longer than 4096 bytes")
            } else {
                None
            };
            match problem {
                Some(problem) => Err(format!("path {} {problem}", quoted(path))),
                None => Ok(AbsPath(path.to_owned())),
            }
        })
    }
}

/// A command line: a string split like a shell would, or a list.
#[derive(Debug)]
pub(crate) struct Words(pub Vec<String>);

impl<'de> Deserialize<'de> for Words {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct WordsVisitor;
        impl<'de> Visitor<'de> for WordsVisitor {
            type Value = Words;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(r#"a command line as a string ("nginx -g 'daemon off;'") or a list of strings"#)
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<Words, E> {
                let words = split_words(text).map_err(E::custom)?;
                if text.contains('\0') {
                    return Err(E::custom("a command line cannot contain NUL"));
                }
                Ok(Words(words))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Words, A::Error> {
                let mut words = Vec::new();
                while let Some(Scalar(word)) = seq.next_element()? {
                    if word.contains('\0') {
                        return Err(de::Error::custom("a command line cannot contain NUL"));
                    }
                    words.push(word);
                }
                Ok(Words(words))
            }
        }
        deserializer.deserialize_any(WordsVisitor)
    }
}

/// A string, or an integer or boolean taken as its text.
///
/// Floats are refused: YAML reads `1.10` as the number 1.1, and passing "1.1"
/// on would silently change what the user wrote.
#[derive(Debug)]
pub(crate) struct Scalar(pub String);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ScalarVisitor;
        impl Visitor<'_> for ScalarVisitor {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string (write \"\" for an empty one)")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Scalar, E> {
                Ok(Scalar(v))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Scalar, E> {
                Err(E::custom(
                    "a decimal number here is ambiguous (YAML reads 1.10 as 1.1); \
                     put it in quotes to keep it exactly as written",
                ))
            }
        }
        deserializer.deserialize_any(ScalarVisitor)
    }
}

/// Environment variables in order: a map `{NAME: value}` (in the order
/// written), a list of `{name, value}`, or a list of `"NAME=value"`.
#[derive(Debug)]
pub(crate) struct EnvList(pub Vec<(String, String)>);

/// An environment variable's name: non-empty, without `=` or NUL.
struct EnvName(String);

impl<'de> Deserialize<'de> for EnvName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        checked_str(deserializer, "an environment variable name", check_env_name)
    }
}

fn check_env_name(name: &str) -> Result<EnvName, String> {
    if name.is_empty() || name.contains(['=', '\0']) || name.len() > 1024 {
        return Err(format!("invalid environment variable name {}: must be non-empty, without = or NUL", quoted(name)));
    }
    Ok(EnvName(name.to_owned()))
}

fn push_env<E: de::Error>(env: &mut Vec<(String, String)>, name: String, value: String) -> Result<(), E> {
    if value.contains('\0') {
        return Err(E::custom(format_args!("the value of {name} contains NUL")));
    }
    if env.iter().any(|(seen, _)| *seen == name) {
        return Err(E::custom(format_args!("environment variable {} is set twice", quoted(&name))));
    }
    env.push((name, value));
    Ok(())
}

impl<'de> Deserialize<'de> for EnvList {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EnvVisitor;
        impl<'de> Visitor<'de> for EnvVisitor {
            type Value = EnvList;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(r#"a map {NAME: value}, or a list of {name, value} or "NAME=value""#)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<EnvList, A::Error> {
                let mut env = Vec::new();
                while let Some(EnvName(name)) = map.next_key()? {
                    let Scalar(value) = map.next_value()?;
                    push_env(&mut env, name, value)?;
                }
                Ok(EnvList(env))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<EnvList, A::Error> {
                let mut env = Vec::new();
                while let Some(EnvItem(name, value)) = seq.next_element()? {
                    push_env(&mut env, name, value)?;
                }
                Ok(EnvList(env))
            }
        }
        deserializer.deserialize_any(EnvVisitor)
    }
}

struct EnvItem(String, String);

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a map with name and value")]
struct EnvPair {
    name: EnvName,
    value: Scalar,
}

impl<'de> Deserialize<'de> for EnvItem {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EnvItemVisitor;
        impl<'de> Visitor<'de> for EnvItemVisitor {
            type Value = EnvItem;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(r#"{name: NAME, value: value} or "NAME=value""#)
            }
            fn visit_str<E: de::Error>(self, item: &str) -> Result<EnvItem, E> {
                match item.split_once('=') {
                    Some((name, value)) => {
                        let EnvName(name) = check_env_name(name).map_err(E::custom)?;
                        Ok(EnvItem(name, value.to_owned()))
                    }
                    None => {
                        Err(E::custom(format_args!("invalid environment entry {}: expected NAME=value", quoted(item))))
                    }
                }
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<EnvItem, A::Error> {
                let pair = EnvPair::deserialize(MapAccessDeserializer::new(map))?;
                Ok(EnvItem(pair.name.0, pair.value.0))
            }
        }
        deserializer.deserialize_any(EnvItemVisitor)
    }
}

/// A port after parsing any of its three forms.
#[derive(Debug, Clone)]
pub(crate) struct PortSpec {
    /// 0 lets the provider choose.
    pub port: u16,
    pub target_port: u16,
    pub udp: bool,
    pub host_ip: Option<IpAddr>,
    pub name: Option<String>,
    /// How it was written, which decides its meaning under `type: trustedpods`.
    pub form: PortForm,
    /// What `hostIP` said about reaching it.
    pub exposure: Exposure,
    /// Served by the provider's HTTP entry point under this hostname.
    pub http_host: Option<String>,
}

/// The three ways to write a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PortForm {
    /// `80` or `"80/udp"`: one number.
    Bare,
    /// `"8080:80"`, `"127.0.0.1:8080:80"`.
    Mapping,
    /// `{port, targetPort, ...}`.
    Object,
}

/// Whether a port is published on the provider's public side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exposure {
    /// Nothing said: the manifest's dialect decides.
    Unsaid,
    /// `hostIP: true` or an address.
    Public,
    /// `hostIP: false`: only the pod's own containers reach it.
    PodOnly,
}

impl PortSpec {
    pub(crate) fn new(port: u16, target_port: u16, form: PortForm) -> PortSpec {
        PortSpec {
            port,
            target_port,
            udp: false,
            host_ip: None,
            name: None,
            form,
            exposure: Exposure::Unsaid,
            http_host: None,
        }
    }
}

const PORT_FORMS: &str =
    r#"expected 80, "8080:80", "8080:80/udp", "127.0.0.1:8080:80" or {port, targetPort, protocol, hostIP, name}"#;

impl<'de> Deserialize<'de> for PortSpec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PortVisitor;
        impl<'de> Visitor<'de> for PortVisitor {
            type Value = PortSpec;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a port: ")?;
                f.write_str(PORT_FORMS)
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<PortSpec, E> {
                let port = port_number(n, 1).map_err(E::custom)?;
                Ok(PortSpec::new(port, port, PortForm::Bare))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<PortSpec, E> {
                match u64::try_from(n) {
                    Ok(n) => self.visit_u64(n),
                    Err(_) => Err(E::custom(format_args!("port {n} is out of range 1-65535"))),
                }
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<PortSpec, E> {
                parse_port_string(text)
                    .map_err(|problem| E::custom(format_args!("invalid port {}: {problem}", quoted(text))))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<PortSpec, A::Error> {
                let object = PortObject::deserialize(MapAccessDeserializer::new(map))?;
                if let Some(HttpHost(host)) = object.host {
                    if object.port.as_ref().is_some_and(|HostPort(port)| *port != 0) || object.host_ip.is_some() {
                        return Err(de::Error::custom(
                            "an HTTP port (with host) is reached through the provider's entry point: \
                             give targetPort and host, without port or hostIP",
                        ));
                    }
                    if object.protocol.as_ref().is_some_and(|ProtocolName(udp)| *udp) {
                        return Err(de::Error::custom("an HTTP port (with host) is TCP"));
                    }
                    let Some(TargetPort(target)) = object.target_port else {
                        return Err(de::Error::custom("targetPort is required with host"));
                    };
                    return Ok(PortSpec {
                        name: object.name.map(|PortName(name)| name),
                        http_host: Some(host),
                        ..PortSpec::new(0, target, PortForm::Object)
                    });
                }
                let (port, target_port) = match (object.port, object.target_port) {
                    (Some(HostPort(port)), Some(TargetPort(target))) => (port, target),
                    (Some(HostPort(0)), None) | (None, None) => {
                        return Err(de::Error::custom("targetPort is required (or a non-zero port)"))
                    }
                    (Some(HostPort(port)), None) => (port, port),
                    (None, Some(TargetPort(target))) => (0, target),
                };
                let (exposure, host_ip) = match object.host_ip {
                    Some(HostIp(exposure, ip)) => (exposure, ip),
                    None => (Exposure::Unsaid, None),
                };
                Ok(PortSpec {
                    udp: object.protocol.is_some_and(|ProtocolName(udp)| udp),
                    host_ip,
                    exposure,
                    name: object.name.map(|PortName(name)| name),
                    ..PortSpec::new(port, target_port, PortForm::Object)
                })
            }
        }
        deserializer.deserialize_any(PortVisitor)
    }
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "camelCase",
    expecting = "a map with port, targetPort, protocol, hostIP, name (or targetPort and host)"
)]
struct PortObject {
    port: Option<HostPort>,
    target_port: Option<TargetPort>,
    protocol: Option<ProtocolName>,
    #[serde(rename = "hostIP")]
    host_ip: Option<HostIp>,
    name: Option<PortName>,
    /// An HTTP port served by the entry point under this hostname.
    host: Option<HttpHost>,
}

fn port_number(n: u64, min: u64) -> Result<u16, String> {
    match u16::try_from(n) {
        Ok(port) if n >= min => Ok(port),
        _ if min == 0 => Err(format!("port {n} is out of range 0-65535 (0 lets the provider choose)")),
        _ => Err(format!("port {n} is out of range {min}-65535")),
    }
}

fn port_digits(text: &str, min: u64) -> Result<u16, String> {
    if text.is_empty() || text.len() > 5 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{} is not a port number; {PORT_FORMS}", quoted(text)));
    }
    port_number(text.parse().map_err(|_| "not a port number".to_owned())?, min)
}

/// `[HOST_IP:][PORT:]TARGET[/PROTOCOL]`, with IPv6 hosts in brackets.
fn parse_port_string(text: &str) -> Result<PortSpec, String> {
    let (spec, udp) = match text.rsplit_once('/') {
        Some((spec, protocol)) => (spec, protocol_is_udp(protocol)?),
        None => (text, false),
    };
    let (host_ip, ports) = if let Some(bracketed) = spec.strip_prefix('[') {
        let (ip, rest) = bracketed.split_once(']').ok_or("unclosed [ around the host IP")?;
        let rest = rest.strip_prefix(':').ok_or("expected : after the host IP")?;
        (Some(ip), rest)
    } else if spec.matches(':').count() >= 2 {
        let (ip, rest) = spec.split_once(':').unwrap_or_default();
        (Some(ip), rest)
    } else {
        (None, spec)
    };
    let host_ip = host_ip.map(parse_ip).transpose()?;
    let (port, target_port, form) = match ports.split_once(':') {
        Some((port, target)) => (port_digits(port, 0)?, port_digits(target, 1)?, PortForm::Mapping),
        None => {
            let port = port_digits(ports, 1)?;
            (port, port, if host_ip.is_some() { PortForm::Mapping } else { PortForm::Bare })
        }
    };
    Ok(PortSpec {
        udp,
        host_ip,
        exposure: if host_ip.is_some() { Exposure::Public } else { Exposure::Unsaid },
        ..PortSpec::new(port, target_port, form)
    })
}

fn protocol_is_udp(protocol: &str) -> Result<bool, String> {
    if protocol.eq_ignore_ascii_case("tcp") {
        Ok(false)
    } else if protocol.eq_ignore_ascii_case("udp") {
        Ok(true)
    } else {
        Err(format!("unknown protocol {}: expected TCP or UDP", quoted(protocol)))
    }
}

fn parse_ip(text: &str) -> Result<IpAddr, String> {
    text.parse().map_err(|_| format!("invalid host IP {}: expected an address like 0.0.0.0 or ::1", quoted(text)))
}

struct HostPort(u16);
/// A port a container listens on, 1 to 65535.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TargetPort(pub u16);

struct PortNumberVisitor(u64);

impl Visitor<'_> for PortNumberVisitor {
    type Value = u16;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "a port number from {} to 65535", self.0)
    }
    fn visit_u64<E: de::Error>(self, n: u64) -> Result<u16, E> {
        port_number(n, self.0).map_err(E::custom)
    }
    fn visit_i64<E: de::Error>(self, n: i64) -> Result<u16, E> {
        match u64::try_from(n) {
            Ok(n) => self.visit_u64(n),
            Err(_) => Err(E::custom(format_args!("port {n} is out of range {}-65535", self.0))),
        }
    }
}

impl<'de> Deserialize<'de> for HostPort {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(PortNumberVisitor(0)).map(HostPort)
    }
}

impl<'de> Deserialize<'de> for TargetPort {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(PortNumberVisitor(1)).map(TargetPort)
    }
}

/// `true` for UDP.
struct ProtocolName(bool);

impl<'de> Deserialize<'de> for ProtocolName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        checked_str(deserializer, "TCP or UDP", |text| protocol_is_udp(text).map(ProtocolName))
    }
}

/// `hostIP`: an address to bind on (`""` for the provider's default), or
/// Apocryph's boolean: `true` published, `false` reachable only in the pod.
struct HostIp(Exposure, Option<IpAddr>);

impl<'de> Deserialize<'de> for HostIp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct HostIpVisitor;
        impl Visitor<'_> for HostIpVisitor {
            type Value = HostIp;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an IP address to bind on, like 0.0.0.0 or ::1, or true/false (published or not)")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<HostIp, E> {
                if text.is_empty() {
                    return Ok(HostIp(Exposure::Public, None));
                }
                parse_ip(text).map(|ip| HostIp(Exposure::Public, Some(ip))).map_err(E::custom)
            }
            fn visit_bool<E: de::Error>(self, published: bool) -> Result<HostIp, E> {
                Ok(HostIp(if published { Exposure::Public } else { Exposure::PodOnly }, None))
            }
        }
        deserializer.deserialize_any(HostIpVisitor)
    }
}

/// An IANA service name: 1 to 15 lowercase letters, digits and '-'.
struct PortName(String);

impl<'de> Deserialize<'de> for PortName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        checked_str(deserializer, "a port name like http", |name| {
            let ok = (1..=15).contains(&name.len())
                && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && name.bytes().any(|b| b.is_ascii_lowercase())
                && !name.starts_with('-')
                && !name.ends_with('-')
                && !name.contains("--");
            if !ok {
                return Err(format!(
                    "invalid port name {}: use 1 to 15 lowercase letters, digits and single '-', \
                 with at least one letter, like http or metrics",
                    quoted(name)
                ));
            }
            Ok(PortName(name.to_owned()))
        })
    }
}

/// `emptyDir.medium`: `Memory` (tmpfs) or empty (disk).
#[derive(Debug, Default)]
pub(crate) struct Medium {
    pub memory: bool,
}

impl<'de> Deserialize<'de> for Medium {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        checked_str(deserializer, "Memory, or \"\" for disk", |text| match text {
            "Memory" => Ok(Medium { memory: true }),
            "" => Ok(Medium { memory: false }),
            _ => Err(format!("unknown medium {}: expected Memory (tmpfs), or \"\" for disk", quoted(text))),
        })
    }
}

/// `replicas: 3` or `replicas: {min: 0, max: 3}`.
#[derive(Debug)]
pub(crate) enum ReplicasSpec {
    Fixed(u64),
    Range { min: u32, max: u32 },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a map with min and max")]
struct ReplicaRange {
    min: u32,
    max: u32,
}

impl<'de> Deserialize<'de> for ReplicasSpec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ReplicasVisitor;
        impl<'de> Visitor<'de> for ReplicasVisitor {
            type Value = ReplicasSpec;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a number of replicas, or {min, max}")
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<ReplicasSpec, E> {
                Ok(ReplicasSpec::Fixed(n))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<ReplicasSpec, E> {
                u64::try_from(n)
                    .map(ReplicasSpec::Fixed)
                    .map_err(|_| E::custom(format_args!("replicas cannot be negative ({n})")))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<ReplicasSpec, A::Error> {
                let range = ReplicaRange::deserialize(MapAccessDeserializer::new(map))?;
                Ok(ReplicasSpec::Range { min: range.min, max: range.max })
            }
        }
        deserializer.deserialize_any(ReplicasVisitor)
    }
}

/// CPU in millicores.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Cpu(pub u64);
/// A size in bytes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bytes(pub u64);
/// A whole count (GPUs, processes).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Count(pub u32);

/// Accepts a quantity as a string or a YAML/JSON number, and checks it with
/// `parse`; `multiplier` turns an integer into the unit (1000 for cores).
struct QuantityVisitor {
    what: &'static str,
    parse: fn(&str) -> Result<u64, crate::QuantityError>,
    integer_multiplier: u64,
}

impl Visitor<'_> for QuantityVisitor {
    type Value = u64;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.what)
    }
    fn visit_str<E: de::Error>(self, text: &str) -> Result<u64, E> {
        (self.parse)(text).map_err(E::custom)
    }
    fn visit_u64<E: de::Error>(self, n: u64) -> Result<u64, E> {
        match n.checked_mul(self.integer_multiplier) {
            Some(value) => Ok(value),
            None => self.visit_str(&n.to_string()),
        }
    }
    fn visit_i64<E: de::Error>(self, n: i64) -> Result<u64, E> {
        match u64::try_from(n) {
            Ok(n) => self.visit_u64(n),
            Err(_) => self.visit_str(&n.to_string()),
        }
    }
    fn visit_f64<E: de::Error>(self, n: f64) -> Result<u64, E> {
        // f64's Display is the shortest text that reads back as `n`, never
        // in exponent form, so `0.1` stays "0.1".
        self.visit_str(&n.to_string())
    }
}

impl<'de> Deserialize<'de> for Cpu {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_any(QuantityVisitor {
                what: "a CPU quantity like 500m or 0.5",
                parse: parse_cpu,
                integer_multiplier: 1000,
            })
            .map(Cpu)
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_any(QuantityVisitor {
                what: "a size like 256Mi or 1G",
                parse: parse_bytes,
                integer_multiplier: 1,
            })
            .map(Bytes)
    }
}

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct CountVisitor;
        impl Visitor<'_> for CountVisitor {
            type Value = Count;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a whole number")
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Count, E> {
                u32::try_from(n)
                    .map(Count)
                    .map_err(|_| E::custom(format_args!("{n} is too large (at most {})", u32::MAX)))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Count, E> {
                match u64::try_from(n) {
                    Ok(n) => self.visit_u64(n),
                    Err(_) => Err(E::custom(format_args!("{n} is negative; expected a whole number"))),
                }
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<Count, E> {
                let digits = text.trim();
                if digits.is_empty() || digits.len() > 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(E::custom(format_args!("{} is not a whole number", quoted(text))));
                }
                self.visit_u64(digits.parse().map_err(|_| E::custom("not a whole number"))?)
            }
        }
        deserializer.deserialize_any(CountVisitor)
    }
}
