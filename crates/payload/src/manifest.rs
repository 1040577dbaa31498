//! The manifest document: its types, and reading it from base64 or JSON.
//!
//! Reading goes in four steps, each of which can only narrow what the next
//! sees: size limits, JSON syntax, the JSON Schema kept in
//! `schema/computation-payload-manifest.schema.json`, then typed fields with
//! the checks a schema cannot express (SemVer, RFC 3339 times, URLs, hash
//! lengths, command objects inside strings, regular expressions).

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine as _;
use chrono::{DateTime, SecondsFormat, Utc};
use regex::Regex;
use serde::{Deserialize, Serialize, Serializer};
use url::Url;

use crate::digest::PayloadHash;
use crate::schema;

/// The largest manifest accepted, in bytes of JSON.
pub const MAX_MANIFEST_BYTES: usize = 256 * 1024;

/// The largest base64 text accepted: [`MAX_MANIFEST_BYTES`] encoded, plus
/// room for surrounding whitespace.
pub const MAX_MANIFEST_BASE64_BYTES: usize = MAX_MANIFEST_BYTES.div_ceil(3) * 4 + 1024;

/// The most `compManifest.script.commands` entries accepted (each may be a
/// regular expression to compile).
pub const MAX_SCRIPT_COMMANDS: usize = 256;

/// The most URLs accepted in `net.inet.out.urls`, and in each `payload[].urls`.
pub const MAX_URLS: usize = 256;

/// The most compiled size of one command regular expression, in bytes.
const REGEX_SIZE_LIMIT: usize = 128 * 1024;

/// A manifest that cannot be read, and where it goes wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// Over [`MAX_MANIFEST_BYTES`] (or [`MAX_MANIFEST_BASE64_BYTES`] of base64).
    #[error("payload manifest is {size} bytes, more than the limit of {limit}")]
    TooLarge {
        /// The size seen.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The base64 text does not decode.
    #[error("payload manifest is not valid base64 ({reason}): was it truncated, wrapped or altered?")]
    Base64 {
        /// What the decoder said.
        reason: String,
    },
    /// The decoded bytes are not JSON (or are cut short).
    #[error("payload manifest is not valid JSON at line {line}, column {column}: {message}")]
    Json {
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What the parser said.
        message: String,
    },
    /// A field is missing, of the wrong type, or has a value that is not allowed.
    #[error("payload manifest field `{path}`: {message}")]
    Field {
        /// Where, as `compManifest.script.commands[2]`; `(root)` for the document itself.
        path: String,
        /// What is wrong.
        message: String,
    },
}

impl ManifestError {
    fn field(path: impl Into<String>, message: impl Into<String>) -> ManifestError {
        let path = path.into();
        let path = if path.is_empty() { "(root)".to_string() } else { path };
        ManifestError::Field { path, message: message.into() }
    }
}

/// A Computation Payload Manifest (Golem GAP-5, with GAP-4's `compManifest`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PayloadManifest {
    /// SemVer version of the manifest format.
    pub version: String,
    /// When the manifest was made.
    #[serde(serialize_with = "rfc3339")]
    pub created_at: DateTime<Utc>,
    /// When the manifest stops being valid.
    #[serde(serialize_with = "rfc3339")]
    pub expires_at: DateTime<Utc>,
    /// Who made it and what it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Metadata>,
    /// The images it covers, at least one.
    pub payload: Vec<Payload>,
    /// What the workload may do (GAP-4); `None` constrains nothing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comp_manifest: Option<CompManifest>,
}

/// `metadata`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Metadata {
    /// Application name.
    pub name: String,
    /// Free text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// SemVer version of the application.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// `Name <email>` strings.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub authors: Vec<String>,
    /// Project page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub homepage: Option<String>,
}

/// One `payload[]` entry: an image for a platform.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Payload {
    /// The platform the image is for; `None` for any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    /// Where the image can be fetched (absolute URLs).
    #[serde(serialize_with = "urls")]
    pub urls: Vec<Url>,
    /// The image's digest.
    pub hash: PayloadHash,
}

/// `payload[].platform`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Platform {
    /// CPU architecture (`x86_64`, `aarch64`, ...).
    pub arch: String,
    /// Operating system (`linux`, ...).
    pub os: String,
    /// Operating system version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub os_version: Option<String>,
}

/// `compManifest`: the constraints on the running workload.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CompManifest {
    /// SemVer version of the computation manifest.
    pub version: String,
    /// The commands the workload may be asked to run; `None` constrains nothing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub script: Option<Script>,
    /// Network constraints; `None` asks for no network access.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub net: Option<Net>,
}

/// How a command is compared with an allowed entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MatchMode {
    /// Byte equality.
    #[default]
    Strict,
    /// A regular expression (the `regex` crate's syntax) matching the whole command.
    Regex,
}

impl fmt::Display for MatchMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MatchMode::Strict => "strict",
            MatchMode::Regex => "regex",
        })
    }
}

/// `compManifest.script`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Script {
    /// The allowed commands.
    pub commands: Vec<ScriptCommand>,
    /// The match mode for commands that do not name their own.
    #[serde(rename = "match")]
    pub default_match: MatchMode,
}

/// What an allowed command lets the workload do.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CommandKind {
    /// Start a process: `run <command> <args>`.
    Run,
    /// Copy a file: `transfer <from> <to>`.
    Transfer,
    /// `deploy`, `start` and `terminate`, which are always allowed anyway.
    Lifecycle,
    /// Anything else; kept, never matches.
    Other(String),
}

/// One `compManifest.script.commands[]` entry, as written and as understood.
#[derive(Debug, Clone)]
pub struct ScriptCommand {
    text: String,
    kind: CommandKind,
    pattern: String,
    match_mode: Option<MatchMode>,
    env: BTreeMap<String, String>,
    regex: Option<Regex>,
}

impl PartialEq for ScriptCommand {
    fn eq(&self, other: &Self) -> bool {
        // The compiled regex follows from the text and the mode.
        self.text == other.text && self.match_mode == other.match_mode && self.kind == other.kind
    }
}

impl ScriptCommand {
    /// The entry exactly as written in the manifest.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// What the entry allows.
    pub fn kind(&self) -> &CommandKind {
        &self.kind
    }

    /// The string compared with a requested command: the plain entry itself,
    /// or for an object `run <args>` / `transfer <from> <to>`.
    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    /// The entry's own match mode (object form only); `None` uses the script's default.
    pub fn match_mode(&self) -> Option<MatchMode> {
        self.match_mode
    }

    /// The environment an object entry names (`run.env`); empty otherwise.
    /// Informational: matching does not look at it.
    pub fn env(&self) -> &BTreeMap<String, String> {
        &self.env
    }

    /// Whether `subject` (`run /bin/date -R`) matches this entry under `default`.
    pub(crate) fn matches(&self, subject: &str, default: MatchMode) -> bool {
        match self.match_mode.unwrap_or(default) {
            MatchMode::Strict => self.pattern == subject,
            MatchMode::Regex => self.regex.as_ref().is_some_and(|re| re.is_match(subject)),
        }
    }
}

impl Serialize for ScriptCommand {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

/// `compManifest.net`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Net {
    /// Internet access; `None` asks for none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inet: Option<Inet>,
}

/// `compManifest.net.inet`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Inet {
    /// Outbound access; `None` asks for none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub out: Option<InetOut>,
}

/// `compManifest.net.inet.out`: `{protocols, urls}` or `{protocols, unrestricted: {urls: true}}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InetOut {
    /// Allowed URL schemes, lower case; Golem's default is `http, https, ws, wss`.
    pub protocols: Vec<String>,
    /// The URLs the workload may reach (`None` when not given).
    pub urls: Option<Vec<Url>>,
    /// `unrestricted.urls`: any URL may be reached.
    pub unrestricted: bool,
}

impl Serialize for InetOut {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("protocols", &self.protocols)?;
        if let Some(urls) = &self.urls {
            map.serialize_entry("urls", &urls.iter().map(Url::as_str).collect::<Vec<_>>())?;
        }
        if self.unrestricted {
            map.serialize_entry("unrestricted", &serde_json::json!({"urls": true}))?;
        }
        map.end()
    }
}

/// The outbound network access a manifest asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboundAccess<'a> {
    /// None: no `net.inet.out`, or an empty URL list.
    None,
    /// These URLs only.
    Urls(&'a [Url]),
    /// Any URL (`unrestricted.urls: true`).
    Unrestricted,
}

/// Golem's default `net.inet.out.protocols`.
pub const DEFAULT_PROTOCOLS: [&str; 4] = ["http", "https", "ws", "wss"];

impl CompManifest {
    /// `net.inet.out`, if present.
    pub fn inet_out(&self) -> Option<&InetOut> {
        self.net.as_ref()?.inet.as_ref()?.out.as_ref()
    }

    /// The outbound access asked for. `unrestricted` wins over a URL list.
    pub fn outbound_access(&self) -> OutboundAccess<'_> {
        match self.inet_out() {
            None => OutboundAccess::None,
            Some(out) if out.unrestricted => OutboundAccess::Unrestricted,
            Some(InetOut { urls: Some(urls), .. }) if !urls.is_empty() => OutboundAccess::Urls(urls),
            Some(_) => OutboundAccess::None,
        }
    }
}

impl PayloadManifest {
    /// The outbound access asked for (none without a `compManifest`).
    pub fn outbound_access(&self) -> OutboundAccess<'_> {
        self.comp_manifest.as_ref().map_or(OutboundAccess::None, CompManifest::outbound_access)
    }

    /// The first payload for `arch`/`os` (case-insensitive), or one without a platform.
    pub fn payload_for(&self, arch: &str, os: &str) -> Option<&Payload> {
        self.payload.iter().find(|p| match &p.platform {
            Some(platform) => platform.arch.eq_ignore_ascii_case(arch) && platform.os.eq_ignore_ascii_case(os),
            None => true,
        })
    }

    /// The manifest as pretty JSON (a document [`parse_manifest_json`] reads back).
    pub fn to_json(&self) -> String {
        // Serializing these types cannot fail: every map key is a string.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}

fn rfc3339<S: Serializer>(time: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&time.to_rfc3339_opts(SecondsFormat::AutoSi, true))
}

fn urls<S: Serializer>(urls: &[Url], serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_seq(urls.iter().map(Url::as_str))
}

/// Base64 (standard alphabet, padded, no line breaks) of `json`: the text a
/// publisher signs and sends.
pub fn encode_manifest(json: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(json)
}

/// Decodes and reads a manifest as it travels: base64 (standard alphabet,
/// padded) of the JSON document. Whitespace around the text is ignored;
/// whitespace inside it (line wrapping) is not accepted. A signature is over
/// the exact text, so keep the text as received: see [`crate::verify`].
pub fn decode_manifest(base64_text: &str) -> Result<PayloadManifest, ManifestError> {
    parse_manifest_json(&decode_base64(base64_text)?)
}

pub(crate) fn decode_base64(base64_text: &str) -> Result<Vec<u8>, ManifestError> {
    if base64_text.len() > MAX_MANIFEST_BASE64_BYTES {
        return Err(ManifestError::TooLarge { size: base64_text.len(), limit: MAX_MANIFEST_BASE64_BYTES });
    }
    let text = base64_text.trim_matches(|c: char| c.is_ascii_whitespace());
    if text.is_empty() {
        return Err(ManifestError::Base64 { reason: "the text is empty".into() });
    }
    base64::engine::general_purpose::STANDARD.decode(text).map_err(|e| ManifestError::Base64 { reason: e.to_string() })
}

/// Reads a manifest from its JSON document (what `base64 -d` of the
/// travelling form gives).
pub fn parse_manifest_json(json: &[u8]) -> Result<PayloadManifest, ManifestError> {
    if json.len() > MAX_MANIFEST_BYTES {
        return Err(ManifestError::TooLarge { size: json.len(), limit: MAX_MANIFEST_BYTES });
    }
    // serde_json caps nesting at 128 levels, so no input can exhaust the stack.
    let value: serde_json::Value = serde_json::from_slice(json).map_err(|e| ManifestError::Json {
        line: e.line(),
        column: e.column(),
        message: e.to_string(),
    })?;
    schema::validate(&value).map_err(|v| ManifestError::field(v.path, format!("{} (JSON Schema)", v.message)))?;
    // Typed reading goes over the bytes again, not the Value, so that a field
    // given twice is an error instead of silently keeping the last one.
    let mut deserializer = serde_json::Deserializer::from_slice(json);
    let raw: RawManifest = serde_path_to_error::deserialize(&mut deserializer)
        .map_err(|e| ManifestError::field(e.path().to_string().trim_start_matches('.'), e.inner().to_string()))?;
    raw.check()
}

// Raw serde forms: unknown fields are ignored, so they carry none of the
// `deny_unknown_fields` the pod manifest uses.

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawManifest {
    version: String,
    created_at: String,
    expires_at: String,
    metadata: Option<RawMetadata>,
    payload: Vec<RawPayload>,
    comp_manifest: Option<RawCompManifest>,
}

#[derive(Deserialize)]
struct RawMetadata {
    name: String,
    description: Option<String>,
    version: Option<String>,
    authors: Option<Vec<String>>,
    homepage: Option<String>,
}

#[derive(Deserialize)]
struct RawPayload {
    platform: Option<RawPlatform>,
    urls: Vec<String>,
    hash: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawPlatform {
    arch: String,
    os: String,
    os_version: Option<String>,
}

#[derive(Deserialize)]
struct RawCompManifest {
    version: String,
    script: Option<RawScript>,
    net: Option<RawNet>,
}

#[derive(Deserialize)]
struct RawScript {
    commands: Vec<String>,
    #[serde(rename = "match")]
    default_match: Option<MatchMode>,
}

#[derive(Deserialize)]
struct RawNet {
    inet: Option<RawInet>,
}

#[derive(Deserialize)]
struct RawInet {
    out: Option<RawInetOut>,
}

#[derive(Deserialize)]
struct RawInetOut {
    protocols: Option<Vec<String>>,
    urls: Option<Vec<String>>,
    unrestricted: Option<RawUnrestricted>,
}

#[derive(Deserialize)]
struct RawUnrestricted {
    #[serde(default)]
    urls: bool,
}

fn semver(path: &str, value: String) -> Result<String, ManifestError> {
    semver::Version::parse(&value)
        .map(|_| value)
        .map_err(|e| ManifestError::field(path, format!("not a SemVer 2.0 version: {e}")))
}

fn timestamp(path: &str, value: &str) -> Result<DateTime<Utc>, ManifestError> {
    DateTime::parse_from_rfc3339(value).map(|t| t.with_timezone(&Utc)).map_err(|e| {
        ManifestError::field(path, format!("not an RFC 3339 time with an offset (like 2024-01-31T12:00:00Z): {e}"))
    })
}

fn absolute_url(path: &str, value: &str) -> Result<Url, ManifestError> {
    let url = Url::parse(value).map_err(|e| ManifestError::field(path, format!("not an absolute URL: {e}")))?;
    if url.cannot_be_a_base() {
        return Err(ManifestError::field(path, "not a hierarchical URL (scheme://host/...)"));
    }
    Ok(url)
}

impl RawManifest {
    fn check(self) -> Result<PayloadManifest, ManifestError> {
        let version = semver("version", self.version)?;
        let created_at = timestamp("createdAt", &self.created_at)?;
        let expires_at = timestamp("expiresAt", &self.expires_at)?;
        if expires_at <= created_at {
            return Err(ManifestError::field("expiresAt", "must be later than createdAt"));
        }
        let metadata = self
            .metadata
            .map(|m| {
                Ok::<_, ManifestError>(Metadata {
                    name: m.name,
                    description: m.description,
                    version: m.version.map(|v| semver("metadata.version", v)).transpose()?,
                    authors: m.authors.unwrap_or_default(),
                    homepage: m.homepage,
                })
            })
            .transpose()?;
        if self.payload.is_empty() {
            return Err(ManifestError::field("payload", "at least one payload is required"));
        }
        let payload = self
            .payload
            .into_iter()
            .enumerate()
            .map(|(i, p)| p.check(&format!("payload[{i}]")))
            .collect::<Result<Vec<_>, _>>()?;
        let comp_manifest = self.comp_manifest.map(|c| c.check("compManifest")).transpose()?;
        Ok(PayloadManifest { version, created_at, expires_at, metadata, payload, comp_manifest })
    }
}

impl RawPayload {
    fn check(self, path: &str) -> Result<Payload, ManifestError> {
        if self.urls.len() > MAX_URLS {
            return Err(ManifestError::field(format!("{path}.urls"), format!("more than {MAX_URLS} URLs")));
        }
        let urls = self
            .urls
            .iter()
            .enumerate()
            .map(|(i, u)| absolute_url(&format!("{path}.urls[{i}]"), u))
            .collect::<Result<Vec<_>, _>>()?;
        let hash =
            PayloadHash::parse(&self.hash).map_err(|e| ManifestError::field(format!("{path}.hash"), e.to_string()))?;
        let platform = self.platform.map(|p| Platform { arch: p.arch, os: p.os, os_version: p.os_version });
        Ok(Payload { platform, urls, hash })
    }
}

impl RawCompManifest {
    fn check(self, path: &str) -> Result<CompManifest, ManifestError> {
        let version = semver(&format!("{path}.version"), self.version)?;
        let script = self.script.map(|s| s.check(&format!("{path}.script"))).transpose()?;
        let out = self.net.and_then(|n| n.inet).and_then(|i| i.out);
        let net = match out {
            None => None,
            Some(out) => Some(Net { inet: Some(Inet { out: Some(out.check(&format!("{path}.net.inet.out"))?) }) }),
        };
        Ok(CompManifest { version, script, net })
    }
}

impl RawInetOut {
    fn check(self, path: &str) -> Result<InetOut, ManifestError> {
        let protocols = match self.protocols {
            Some(protocols) => protocols.into_iter().map(|p| p.to_ascii_lowercase()).collect(),
            None => DEFAULT_PROTOCOLS.iter().map(|p| p.to_string()).collect(),
        };
        let urls = match self.urls {
            None => None,
            Some(urls) if urls.len() > MAX_URLS => {
                return Err(ManifestError::field(format!("{path}.urls"), format!("more than {MAX_URLS} URLs")));
            }
            Some(urls) => Some(
                urls.iter()
                    .enumerate()
                    .map(|(i, u)| {
                        let field = format!("{path}.urls[{i}]");
                        let url = absolute_url(&field, u)?;
                        if url.host_str().is_none_or(str::is_empty) {
                            return Err(ManifestError::field(field, "the URL has no host"));
                        }
                        Ok(url)
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            ),
        };
        Ok(InetOut { protocols, urls, unrestricted: self.unrestricted.is_some_and(|u| u.urls) })
    }
}

impl RawScript {
    fn check(self, path: &str) -> Result<Script, ManifestError> {
        if self.commands.len() > MAX_SCRIPT_COMMANDS {
            return Err(ManifestError::field(
                format!("{path}.commands"),
                format!("more than {MAX_SCRIPT_COMMANDS} commands"),
            ));
        }
        let default_match = self.default_match.unwrap_or_default();
        let commands = self
            .commands
            .into_iter()
            .enumerate()
            .map(|(i, text)| parse_command(&format!("{path}.commands[{i}]"), text, default_match))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Script { commands, default_match })
    }
}

/// The kind of a plain command: its first word.
fn plain_kind(text: &str) -> CommandKind {
    let first = text.split(' ').next().unwrap_or_default();
    match first {
        "run" => CommandKind::Run,
        "transfer" => CommandKind::Transfer,
        "deploy" | "start" | "terminate" => CommandKind::Lifecycle,
        other => CommandKind::Other(other.chars().take(64).collect()),
    }
}

fn parse_command(path: &str, text: String, default: MatchMode) -> Result<ScriptCommand, ManifestError> {
    let (kind, pattern, match_mode, env) = if text.trim_start().starts_with('{') {
        parse_command_object(path, &text)?
    } else {
        (plain_kind(&text), text.clone(), None, BTreeMap::new())
    };
    let regex = match (match_mode.unwrap_or(default), &kind) {
        (MatchMode::Regex, CommandKind::Run | CommandKind::Transfer) => Some(
            anchored_regex(&pattern)
                .map_err(|e| ManifestError::field(path, format!("not a valid regular expression: {e}")))?,
        ),
        _ => None,
    };
    Ok(ScriptCommand { text, kind, pattern, match_mode, env, regex })
}

type CommandParts = (CommandKind, String, Option<MatchMode>, BTreeMap<String, String>);

/// `{"run": {"args": "/bin/date -R", "env": {...}, "match": "strict"}}` or
/// `{"transfer": {"from": ..., "to": ..., "match": ...}}`.
fn parse_command_object(path: &str, text: &str) -> Result<CommandParts, ManifestError> {
    use serde_json::Value;
    let value: Value = serde_json::from_str(text).map_err(|e| {
        ManifestError::field(path, format!("starts like a JSON command object but is not valid JSON: {e}"))
    })?;
    let Value::Object(object) = value else {
        return Err(ManifestError::field(path, "a JSON command must be an object"));
    };
    let mut entries = object.into_iter();
    let (Some((name, body)), None) = (entries.next(), entries.next()) else {
        return Err(ManifestError::field(path, "a JSON command object must have exactly one key, the command name"));
    };
    let path = format!("{path}.{name}");
    let body = match body {
        Value::Object(body) => body,
        Value::Null if matches!(name.as_str(), "deploy" | "start" | "terminate") => Default::default(),
        _ => return Err(ManifestError::field(path, "must be an object")),
    };
    let match_mode = match body.get("match") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s == "strict" => Some(MatchMode::Strict),
        Some(Value::String(s)) if s == "regex" => Some(MatchMode::Regex),
        Some(_) => return Err(ManifestError::field(format!("{path}.match"), "must be \"strict\" or \"regex\"")),
    };
    let string = |field: &str| -> Result<String, ManifestError> {
        match body.get(field) {
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(ManifestError::field(format!("{path}.{field}"), "must be a string")),
            None => Err(ManifestError::field(format!("{path}.{field}"), "is required")),
        }
    };
    match name.as_str() {
        "run" => {
            let args = match body.get("args") {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Array(items)) => items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| match item {
                        Value::String(s) => Ok(s.as_str()),
                        _ => Err(ManifestError::field(format!("{path}.args[{i}]"), "must be a string")),
                    })
                    .collect::<Result<Vec<_>, _>>()?
                    .join(" "),
                Some(_) => {
                    return Err(ManifestError::field(
                        format!("{path}.args"),
                        "must be a string or an array of strings",
                    ));
                }
                None => return Err(ManifestError::field(format!("{path}.args"), "is required")),
            };
            let env = match body.get("env") {
                None | Some(Value::Null) => BTreeMap::new(),
                Some(Value::Object(vars)) => vars
                    .iter()
                    .map(|(k, v)| match v {
                        Value::String(s) => Ok((k.clone(), s.clone())),
                        _ => Err(ManifestError::field(format!("{path}.env.{k}"), "must be a string")),
                    })
                    .collect::<Result<_, _>>()?,
                Some(_) => return Err(ManifestError::field(format!("{path}.env"), "must be an object of strings")),
            };
            Ok((CommandKind::Run, format!("run {args}"), match_mode, env))
        }
        "transfer" => {
            let pattern = format!("transfer {} {}", string("from")?, string("to")?);
            Ok((CommandKind::Transfer, pattern, match_mode, BTreeMap::new()))
        }
        "deploy" | "start" | "terminate" => Ok((CommandKind::Lifecycle, name.clone(), match_mode, BTreeMap::new())),
        _ => Ok((CommandKind::Other(name.chars().take(64).collect()), name.clone(), match_mode, BTreeMap::new())),
    }
}

/// Compiles `pattern` so that it must match a whole string.
///
/// The pattern is compiled alone first: only a pattern that is a regular
/// expression by itself may be wrapped in `^(?:...)$`, otherwise
/// `a)|(.*` would turn the anchors into an alternative that matches anything.
pub(crate) fn anchored_regex(pattern: &str) -> Result<Regex, regex::Error> {
    let build = |p: &str| {
        regex::RegexBuilder::new(p).size_limit(REGEX_SIZE_LIMIT).dfa_size_limit(REGEX_SIZE_LIMIT).nest_limit(64).build()
    };
    build(pattern)?;
    build(&format!("^(?:{pattern})$"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(comp: &str) -> String {
        format!(
            r#"{{"version": "0.1.0", "createdAt": "2024-01-01T00:00:00Z", "expiresAt": "2100-01-01T00:00:00Z",
               "payload": [{{"urls": ["https://example.org/image"], "hash": "sha256:{}"}}]{comp}}}"#,
            "ab".repeat(32)
        )
    }

    fn field_error(json: &str) -> (String, String) {
        match parse_manifest_json(json.as_bytes()) {
            Err(ManifestError::Field { path, message }) => (path, message),
            other => panic!("expected a field error, got {other:?}"),
        }
    }

    #[test]
    fn reads_a_minimal_manifest_and_ignores_unknown_fields() {
        let json = doc(r#", "somethingNew": {"x": 1}, "metadata": {"name": "n", "extra": true}"#);
        let m = parse_manifest_json(json.as_bytes()).unwrap();
        assert_eq!(m.version, "0.1.0");
        assert_eq!(m.metadata.unwrap().name, "n");
        assert_eq!(m.payload.len(), 1);
        assert!(m.comp_manifest.is_none());
    }

    #[test]
    fn names_the_field_that_is_malformed() {
        assert_eq!(field_error(&doc("").replace("0.1.0", "1")).0, "version");
        assert_eq!(field_error(&doc("").replace("2024-01-01T00:00:00Z", "yesterday")).0, "createdAt");
        assert_eq!(field_error(&doc("").replace("2024-01-01T00:00:00Z", "2024-01-01T00:00:00")).0, "createdAt");
        assert_eq!(field_error(&doc("").replace("2100-01-01T00:00:00Z", "2000-01-01T00:00:00Z")).0, "expiresAt");
        assert_eq!(field_error(&doc("").replace("sha256:", "sha512:")).0, "payload[0].hash");
        assert_eq!(field_error(&doc("").replace("https://example.org/image", "not a url")).0, "payload[0].urls[0]");
        assert_eq!(field_error(&doc(r#", "compManifest": {"version": 1}"#)).0, "compManifest.version");
        let (path, message) = field_error(&doc(
            r#", "compManifest": {"version": "1.0.0", "script": {"commands": ["run x"], "match": "glob"}}"#,
        ));
        assert_eq!(path, "compManifest.script.match", "{message}");
        let (path, _) = field_error(&doc(r#", "compManifest": {"version": "1.0.0", "script": {"commands": [5]}}"#));
        assert_eq!(path, "compManifest.script.commands[0]");
        let (path, _) = field_error(&doc(
            r#", "compManifest": {"version": "1.0.0", "net": {"inet": {"out": {"urls": ["https://"]}}}}"#,
        ));
        assert_eq!(path, "compManifest.net.inet.out.urls[0]");
        let (path, _) = field_error(&doc("").replace(r#""payload": [{"#, r#""payload": [], "x": [{"#));
        assert_eq!(path, "payload");
    }

    #[test]
    fn rejects_a_field_given_twice() {
        let json = doc("").replacen(r#""version": "0.1.0","#, r#""version": "0.1.0", "version": "9.9.9","#, 1);
        let (path, message) = field_error(&json);
        assert!(message.contains("duplicate"), "{path}: {message}");
    }

    #[test]
    fn reads_plain_and_object_commands() {
        let json = doc(r#", "compManifest": {"version": "0.1.0", "script": {"match": "regex", "commands": [
                "run .*curl.*",
                "{\"run\": {\"args\": \"/bin/date -R\", \"env\": {\"TZ\": \"UTC\"}, \"match\": \"strict\"}}",
                "{\"run\": {\"args\": [\"/bin/echo\", \"a b\"]}}",
                "{\"transfer\": {\"from\": \"a\", \"to\": \"b\"}}",
                "deploy", "something else"
            ]}}"#);
        let m = parse_manifest_json(json.as_bytes()).unwrap();
        let script = m.comp_manifest.unwrap().script.unwrap();
        let c = &script.commands;
        assert_eq!(script.default_match, MatchMode::Regex);
        assert_eq!((c[0].kind(), c[0].pattern(), c[0].match_mode()), (&CommandKind::Run, "run .*curl.*", None));
        assert_eq!(c[1].pattern(), "run /bin/date -R");
        assert_eq!(c[1].match_mode(), Some(MatchMode::Strict));
        assert_eq!(c[1].env().get("TZ").map(String::as_str), Some("UTC"));
        assert_eq!(c[2].pattern(), "run /bin/echo a b");
        assert_eq!((c[3].kind(), c[3].pattern()), (&CommandKind::Transfer, "transfer a b"));
        assert_eq!(c[4].kind(), &CommandKind::Lifecycle);
        assert_eq!(c[5].kind(), &CommandKind::Other("something".into()));
    }

    #[test]
    fn rejects_malformed_command_objects_naming_the_field() {
        let cases = [
            (r#""{\"run\": {\"args\": 5}}""#, "compManifest.script.commands[0].run.args"),
            (r#""{\"run\": {}}""#, "compManifest.script.commands[0].run.args"),
            (r#""{\"run\": {\"args\": \"x\", \"match\": \"glob\"}}""#, "compManifest.script.commands[0].run.match"),
            (r#""{\"run\": {\"args\": \"x\", \"env\": {\"A\": 1}}}""#, "compManifest.script.commands[0].run.env.A"),
            (r#""{\"transfer\": {\"from\": \"a\"}}""#, "compManifest.script.commands[0].transfer.to"),
            (r#""{\"run\": {\"args\": \"x\"}, \"transfer\": {}}""#, "compManifest.script.commands[0]"),
            (r#""{not json""#, "compManifest.script.commands[0]"),
            (r#""{\"run\": \"x\"}""#, "compManifest.script.commands[0].run"),
        ];
        for (command, want) in cases {
            let json =
                doc(&format!(r#", "compManifest": {{"version": "0.1.0", "script": {{"commands": [{command}]}}}}"#));
            assert_eq!(field_error(&json).0, want, "{command}");
        }
    }

    #[test]
    fn rejects_invalid_regular_expressions_and_anchor_escapes() {
        for pattern in ["run (", "run a)|(.*"] {
            let json = doc(&format!(
                r#", "compManifest": {{"version": "0.1.0", "script": {{"match": "regex", "commands": ["{pattern}"]}}}}"#
            ));
            assert_eq!(field_error(&json).0, "compManifest.script.commands[0]");
        }
        let re = anchored_regex("a|ab").unwrap();
        assert!(re.is_match("ab") && re.is_match("a") && !re.is_match("abc") && !re.is_match("xa"));
    }

    #[test]
    fn outbound_access_follows_the_net_section() {
        let read = |net: &str| {
            let json = doc(&format!(r#", "compManifest": {{"version": "0.1.0", "net": {net}}}"#));
            parse_manifest_json(json.as_bytes()).unwrap()
        };
        let m = read(r#"{"inet": {"out": {"urls": ["https://a.example"]}}}"#);
        assert!(matches!(m.outbound_access(), OutboundAccess::Urls(u) if u.len() == 1));
        assert_eq!(m.comp_manifest.as_ref().unwrap().inet_out().unwrap().protocols, DEFAULT_PROTOCOLS);
        let m = read(r#"{"inet": {"out": {"protocols": ["HTTPS"], "unrestricted": {"urls": true}}}}"#);
        assert_eq!(m.outbound_access(), OutboundAccess::Unrestricted);
        assert_eq!(m.comp_manifest.as_ref().unwrap().inet_out().unwrap().protocols, ["https"]);
        assert_eq!(read(r#"{"inet": {"out": {"urls": []}}}"#).outbound_access(), OutboundAccess::None);
        assert_eq!(read(r#"{"inet": null}"#).outbound_access(), OutboundAccess::None);
    }

    #[test]
    fn base64_is_decoded_strictly_but_surrounding_whitespace_is_ignored() {
        let json = doc("");
        let text = encode_manifest(json.as_bytes());
        assert!(decode_manifest(&text).is_ok());
        assert!(decode_manifest(&format!("  {text}\n")).is_ok());
        let wrapped = format!("{}\n{}", &text[..64], &text[64..]);
        assert!(matches!(decode_manifest(&wrapped), Err(ManifestError::Base64 { .. })));
        assert!(matches!(decode_manifest(&text[..text.len() - 3]), Err(ManifestError::Base64 { .. })));
        assert!(matches!(decode_manifest(&text[..text.len() - 4]), Err(ManifestError::Json { .. })));
        assert!(matches!(decode_manifest(""), Err(ManifestError::Base64 { .. })));
    }

    #[test]
    fn refuses_oversized_input() {
        let big = "A".repeat(MAX_MANIFEST_BASE64_BYTES + 1);
        assert!(matches!(decode_manifest(&big), Err(ManifestError::TooLarge { .. })));
        let big = vec![b' '; MAX_MANIFEST_BYTES + 1];
        assert!(matches!(parse_manifest_json(&big), Err(ManifestError::TooLarge { .. })));
    }

    #[test]
    fn json_round_trips() {
        let json = doc(r#", "metadata": {"name": "n", "authors": ["a <a@example.org>"]},
               "compManifest": {"version": "0.1.0", "script": {"commands": ["run /bin/date"]},
               "net": {"inet": {"out": {"protocols": ["https"], "urls": ["https://a.example/x"]}}}}"#);
        let m = parse_manifest_json(json.as_bytes()).unwrap();
        let again = parse_manifest_json(m.to_json().as_bytes()).unwrap();
        assert_eq!(m, again);
    }
}
