//! The checks the runtime makes against a manifest while the pod runs: may
//! this command be executed, may this connection go out. The runtime does the
//! enforcing (exec, egress proxy); these functions only answer.

use url::{Host, Url};

use crate::manifest::{CommandKind, CompManifest, PayloadManifest};

/// A command the manifest does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{command}` is not allowed by the payload manifest: {reason}")]
pub struct Denied {
    /// The command as compared (`run /bin/rm -rf /`), shortened if long.
    pub command: String,
    /// Why.
    pub reason: String,
}

fn shorten(text: &str) -> String {
    const MAX: usize = 200;
    if text.chars().count() <= MAX {
        text.to_string()
    } else {
        format!("{}...", text.chars().take(MAX).collect::<String>())
    }
}

fn check(comp: &CompManifest, kind: &CommandKind, subject: &str) -> Result<(), Denied> {
    let Some(script) = &comp.script else {
        return Ok(());
    };
    let candidates: Vec<_> = script.commands.iter().filter(|c| c.kind() == kind).collect();
    if candidates.iter().any(|c| c.matches(subject, script.default_match)) {
        return Ok(());
    }
    let reason = if candidates.is_empty() {
        "compManifest.script.commands allows no command of this kind".to_string()
    } else {
        format!("it matches none of the {} allowed entries (default match: {})", candidates.len(), script.default_match)
    };
    Err(Denied { command: shorten(subject), reason })
}

/// Whether the manifest lets the workload execute `argv` (`argv[0]` is the
/// program). The command compared is `run <argv joined by single spaces>`:
///
/// * a strict entry must equal it byte for byte;
/// * a regex entry must match all of it (the pattern is anchored at both
///   ends, unlike yagna's unanchored search);
/// * an object entry's own `match` overrides the script's default.
///
/// A manifest without `compManifest.script` constrains nothing (as in yagna).
pub fn exec_allowed(comp: &CompManifest, argv: &[String]) -> Result<(), Denied> {
    if argv.is_empty() {
        return Err(Denied { command: "run".into(), reason: "no program given".into() });
    }
    check(comp, &CommandKind::Run, &format!("run {}", argv.join(" ")))
}

/// Whether the manifest lets the workload copy `from` to `to`: compared as
/// `transfer <from> <to>`, by the rules of [`exec_allowed`].
pub fn transfer_allowed(comp: &CompManifest, from: &str, to: &str) -> Result<(), Denied> {
    check(comp, &CommandKind::Transfer, &format!("transfer {from} {to}"))
}

/// The transport family of a scheme: a WebSocket URL travels as plain HTTP
/// (`ws`) or over TLS (`wss`), and an egress proxy sees only that.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Plain,
    Tls,
}

fn family(scheme: &str) -> Option<Family> {
    match scheme.to_ascii_lowercase().as_str() {
        "http" | "ws" => Some(Family::Plain),
        "https" | "wss" => Some(Family::Tls),
        _ => None,
    }
}

fn strip_dot(host: Host<String>) -> Host<String> {
    match host {
        Host::Domain(d) => Host::Domain(d.trim_end_matches('.').to_string()),
        other => other,
    }
}

/// Reads a host as a proxy sees it (CONNECT target or Host header): a name,
/// an IPv4 address, or an IPv6 address with or without brackets.
fn parse_host(host: &str) -> Option<Host<String>> {
    let host = if host.contains(':') && !host.starts_with('[') { format!("[{host}]") } else { host.to_string() };
    Host::parse(&host).ok().map(strip_dot)
}

/// Whether the manifest lets the workload open a connection to
/// `scheme://host:port` (the egress proxy asks: `https` for a CONNECT,
/// `http` for a plain request).
///
/// Allowed when `scheme`'s family (http/ws plain, https/wss TLS) is among
/// `net.inet.out.protocols`, and either `unrestricted.urls` is true or one of
/// `net.inet.out.urls`, whose scheme is also among `protocols`, has the same
/// family, host (case-insensitive, IDNA-normalized) and port (its explicit
/// port, else 80 for http/ws and 443 for https/wss). Paths are not compared:
/// a proxy does not see them inside TLS. A manifest without `net.inet.out`
/// allows nothing.
pub fn url_allowed(comp: &CompManifest, scheme: &str, host: &str, port: u16) -> bool {
    let Some(out) = comp.inet_out() else {
        return false;
    };
    let Some(wanted) = family(scheme) else {
        return false;
    };
    let protocol_allowed = |scheme: &str| out.protocols.iter().any(|p| p.eq_ignore_ascii_case(scheme));
    if !out.protocols.iter().any(|p| family(p) == Some(wanted)) {
        return false;
    }
    if out.unrestricted {
        return true;
    }
    let Some(host) = parse_host(host) else {
        return false;
    };
    out.urls.iter().flatten().any(|url: &Url| {
        family(url.scheme()) == Some(wanted)
            && protocol_allowed(url.scheme())
            && url.port_or_known_default() == Some(port)
            && url.host().map(|h| strip_dot(h.to_owned())) == Some(host.clone())
    })
}

impl PayloadManifest {
    /// [`exec_allowed`] for this manifest; without a `compManifest`, allowed.
    pub fn exec_allowed(&self, argv: &[String]) -> Result<(), Denied> {
        self.comp_manifest.as_ref().map_or(Ok(()), |comp| exec_allowed(comp, argv))
    }

    /// [`url_allowed`] for this manifest; without a `compManifest`, not allowed.
    pub fn url_allowed(&self, scheme: &str, host: &str, port: u16) -> bool {
        self.comp_manifest.as_ref().is_some_and(|comp| url_allowed(comp, scheme, host, port))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::parse_manifest_json;

    fn comp(body: &str) -> CompManifest {
        let json = format!(
            r#"{{"version": "0.1.0", "createdAt": "2024-01-01T00:00:00Z", "expiresAt": "2100-01-01T00:00:00Z",
               "payload": [{{"urls": [], "hash": "sha256:{}"}}], "compManifest": {{"version": "0.1.0", {body}}}}}"#,
            "00".repeat(32)
        );
        parse_manifest_json(json.as_bytes()).unwrap().comp_manifest.unwrap()
    }

    fn argv(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| w.to_string()).collect()
    }

    #[test]
    fn strict_entries_need_byte_equality() {
        let c = comp(r#""script": {"commands": ["run /bin/date -R"]}"#);
        assert!(exec_allowed(&c, &argv(&["/bin/date", "-R"])).is_ok());
        assert!(exec_allowed(&c, &argv(&["/bin/date"])).is_err());
        assert!(exec_allowed(&c, &argv(&["/bin/date", "-R", "x"])).is_err());
        assert!(exec_allowed(&c, &argv(&["/bin/date", "-r"])).is_err());
        assert!(exec_allowed(&c, &[]).is_err());
    }

    #[test]
    fn regex_entries_must_match_the_whole_command() {
        let c = comp(r#""script": {"match": "regex", "commands": ["run /bin/echo [a-z]+"]}"#);
        assert!(exec_allowed(&c, &argv(&["/bin/echo", "hello"])).is_ok());
        assert!(exec_allowed(&c, &argv(&["/bin/echo", "hello;", "rm"])).is_err());
        assert!(exec_allowed(&c, &argv(&["/bin/sh", "-c", "run /bin/echo x"])).is_err());
    }

    #[test]
    fn a_command_object_overrides_the_default_match() {
        let c = comp(
            r#""script": {"match": "regex", "commands": [
                "{\"run\": {\"args\": \"/bin/cat .*\", \"match\": \"strict\"}}",
                "{\"run\": {\"args\": \"/bin/ls .*\"}}"
            ]}"#,
        );
        assert!(exec_allowed(&c, &argv(&["/bin/cat", ".*"])).is_ok());
        assert!(exec_allowed(&c, &argv(&["/bin/cat", "/etc/passwd"])).is_err());
        assert!(exec_allowed(&c, &argv(&["/bin/ls", "/tmp"])).is_ok());
        let c = comp(r#""script": {"commands": ["{\"run\": {\"args\": \"/bin/ls .*\", \"match\": \"regex\"}}"]}"#);
        assert!(exec_allowed(&c, &argv(&["/bin/ls", "/"])).is_ok());
    }

    #[test]
    fn transfers_are_matched_like_runs() {
        let c = comp(r#""script": {"match": "regex", "commands": ["transfer .*output.txt"]}"#);
        assert!(transfer_allowed(&c, "container:/out/output.txt", "file:///tmp/output.txt").is_ok());
        assert!(transfer_allowed(&c, "/etc/shadow", "x").is_err());
        assert!(exec_allowed(&c, &argv(&["transfer", "output.txt"])).is_err());
    }

    #[test]
    fn without_a_script_every_command_is_allowed() {
        let c = comp(r#""net": {}"#);
        assert!(exec_allowed(&c, &argv(&["/bin/anything"])).is_ok());
        let c = comp(r#""script": {"commands": []}"#);
        let denied = exec_allowed(&c, &argv(&["/bin/anything"])).unwrap_err();
        assert!(denied.to_string().contains("allows no command"), "{denied}");
    }

    #[test]
    fn urls_match_by_scheme_family_host_and_port() {
        let c = comp(
            r#""net": {"inet": {"out": {"protocols": ["https", "http"],
               "urls": ["https://api.example.org", "http://Plain.example.org:8080/path", "https://[::1]:8443"]}}}"#,
        );
        assert!(url_allowed(&c, "https", "api.example.org", 443));
        assert!(url_allowed(&c, "HTTPS", "API.Example.org.", 443));
        assert!(!url_allowed(&c, "https", "api.example.org", 8443));
        assert!(!url_allowed(&c, "http", "api.example.org", 443));
        assert!(!url_allowed(&c, "https", "evil.example.org", 443));
        assert!(url_allowed(&c, "http", "plain.example.org", 8080));
        assert!(!url_allowed(&c, "http", "plain.example.org", 80));
        assert!(url_allowed(&c, "https", "::1", 8443));
        assert!(url_allowed(&c, "https", "[::1]", 8443));
        assert!(!url_allowed(&c, "ftp", "api.example.org", 443));
    }

    #[test]
    fn protocols_restrict_the_schemes() {
        let c = comp(
            r#""net": {"inet": {"out": {"protocols": ["https"], "urls": ["http://a.example", "https://b.example"]}}}"#,
        );
        assert!(!url_allowed(&c, "http", "a.example", 80));
        assert!(url_allowed(&c, "https", "b.example", 443));
        let c = comp(r#""net": {"inet": {"out": {"urls": ["wss://ws.example"]}}}"#);
        assert!(url_allowed(&c, "https", "ws.example", 443));
        assert!(!url_allowed(&c, "http", "ws.example", 80));
    }

    #[test]
    fn unrestricted_allows_any_host_of_an_allowed_protocol() {
        let c = comp(r#""net": {"inet": {"out": {"protocols": ["https"], "unrestricted": {"urls": true}}}}"#);
        assert!(url_allowed(&c, "https", "anything.example", 443));
        assert!(url_allowed(&c, "https", "10.0.0.1", 8443));
        assert!(!url_allowed(&c, "http", "anything.example", 80));
        let c = comp(r#""script": {"commands": []}"#);
        assert!(!url_allowed(&c, "https", "anything.example", 443));
    }
}
