//! The pod's only way out: an HTTP proxy that allows exactly the URLs the pod's
//! payload manifest lists.
//!
//! The pod's network namespace has no route anywhere. When outbound access is
//! granted, the shim listens on `127.0.0.1:<port>` *inside* that namespace and
//! opens allowed connections from the host's namespace: HTTPS by `CONNECT
//! host:port`, plain HTTP by the absolute URL of the request. Anything else —
//! another host or port, a scheme not granted, a destination that is one of the
//! provider's own sockets — is answered with 403 and reported as a denial.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// Where a pod may connect to.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct EgressPolicy {
    /// Port of the proxy inside the pod.
    pub proxy_port: u16,
    /// Destinations allowed.
    pub allow: Vec<AllowedUrl>,
    /// Every destination allowed (`unrestricted.urls = true`), except `deny`.
    pub unrestricted: bool,
    /// Sockets never reachable, whatever the manifest says: the provider's own.
    pub deny: Vec<SocketAddr>,
    /// A JSON list of further sockets never reachable, re-read at every
    /// connection: the provider keeps its current sockets and every pod's
    /// exposed ports there, so pods started later are covered too.
    #[serde(default)]
    pub deny_file: Option<std::path::PathBuf>,
}

/// Reads a deny file; a missing or malformed file denies nothing more.
fn read_deny_file(path: &std::path::Path) -> Vec<SocketAddr> {
    std::fs::read(path).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
}

/// Writes a deny file atomically.
pub fn write_deny_file(path: &std::path::Path, deny: &[SocketAddr]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec(deny)?)?;
    std::fs::rename(tmp, path)
}

/// One allowed destination, from a manifest URL.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AllowedUrl {
    /// `http` or `https`.
    pub scheme: String,
    /// Host name or IP literal, lowercase.
    pub host: String,
    /// Port, defaulted by scheme when the URL has none.
    pub port: u16,
}

impl EgressPolicy {
    /// Whether a connection to `scheme://host:port` is allowed by the URLs.
    pub fn allows(&self, scheme: &str, host: &str, port: u16) -> bool {
        self.unrestricted
            || self.allow.iter().any(|a| a.scheme == scheme && a.host.eq_ignore_ascii_case(host) && a.port == port)
    }
}

/// Longest request head the proxy reads before deciding.
const MAX_HEAD: usize = 16 * 1024;
/// Time a client has to send its request head, and a destination to accept.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Serves the proxy on `listener` until the process ends. Denials are sent to
/// `denials` as human-readable lines.
pub async fn serve(listener: TcpListener, policy: Arc<EgressPolicy>, denials: mpsc::UnboundedSender<String>) {
    let connections = Arc::new(tokio::sync::Semaphore::new(256));
    loop {
        let Ok((conn, _)) = listener.accept().await else { continue };
        let Ok(permit) = connections.clone().try_acquire_owned() else { continue };
        let policy = policy.clone();
        let denials = denials.clone();
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(Refusal { status, reason }) = handle(conn, &policy).await {
                if status == 403 {
                    let _ = denials.send(reason);
                }
            }
        });
    }
}

struct Refusal {
    status: u16,
    reason: String,
}

fn refuse(status: u16, reason: impl Into<String>) -> Refusal {
    Refusal { status, reason: reason.into() }
}

async fn handle(mut conn: TcpStream, policy: &EgressPolicy) -> Result<(), Refusal> {
    let head = match tokio::time::timeout(TIMEOUT, read_head(&mut conn)).await {
        Ok(Ok(head)) => head,
        Ok(Err(r)) => return answer(&mut conn, r).await,
        Err(_) => return answer(&mut conn, refuse(408, "request head timed out")).await,
    };
    let target = match parse_target(&head) {
        Ok(t) => t,
        Err(r) => return answer(&mut conn, r).await,
    };
    if !policy.allows(target.scheme, &target.host, target.port) {
        let r = refuse(
            403,
            format!("{}://{}:{} is not allowed by the payload manifest", target.scheme, target.host, target.port),
        );
        return answer(&mut conn, r).await;
    }
    let addrs: Vec<SocketAddr> = match tokio::net::lookup_host((target.host.as_str(), target.port)).await {
        Ok(a) => a.collect(),
        Err(e) => return answer(&mut conn, refuse(502, format!("cannot resolve {}: {e}", target.host))).await,
    };
    let more_denied = policy.deny_file.as_deref().map(read_deny_file).unwrap_or_default();
    let allowed: Vec<SocketAddr> = addrs
        .into_iter()
        .filter(|a| !a.ip().is_unspecified() && !policy.deny.contains(a) && !more_denied.contains(a))
        .collect();
    if allowed.is_empty() {
        let r = refuse(403, format!("{}:{} resolves only to the provider's own addresses", target.host, target.port));
        return answer(&mut conn, r).await;
    }
    let mut upstream = match tokio::time::timeout(TIMEOUT, TcpStream::connect(&allowed[..])).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return answer(&mut conn, refuse(502, format!("cannot connect to {}: {e}", target.host))).await,
        Err(_) => return answer(&mut conn, refuse(504, format!("connecting to {} timed out", target.host))).await,
    };
    if target.connect {
        conn.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n").await.map_err(|e| refuse(0, e.to_string()))?;
        // Bytes the client sent after the head belong to the tunnel.
        upstream.write_all(&head.rest).await.map_err(|e| refuse(0, e.to_string()))?;
    } else {
        upstream.write_all(&target.origin_form_head).await.map_err(|e| refuse(0, e.to_string()))?;
        upstream.write_all(&head.rest).await.map_err(|e| refuse(0, e.to_string()))?;
    }
    let _ = tokio::io::copy_bidirectional_with_sizes(&mut conn, &mut upstream, 64 * 1024, 64 * 1024).await;
    Ok(())
}

async fn answer(conn: &mut TcpStream, r: Refusal) -> Result<(), Refusal> {
    if r.status != 0 {
        let reason = match r.status {
            400 => "Bad Request",
            403 => "Forbidden",
            408 => "Request Timeout",
            502 => "Bad Gateway",
            504 => "Gateway Timeout",
            _ => "Error",
        };
        let body = format!("sealpod egress proxy: {}\n", r.reason);
        let msg = format!(
            "HTTP/1.1 {} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            r.status,
            body.len()
        );
        let _ = conn.write_all(msg.as_bytes()).await;
        let _ = conn.shutdown().await;
        // Read what the client is still sending for a moment, so that closing
        // does not reset the connection before it has read the answer.
        let mut sink = [0u8; 4096];
        let mut drained = 0;
        while drained < 64 * 1024 {
            match tokio::time::timeout(Duration::from_millis(200), conn.read(&mut sink)).await {
                Ok(Ok(n)) if n > 0 => drained += n,
                _ => break,
            }
        }
    }
    Err(r)
}

struct Head {
    head: Vec<u8>,
    rest: Vec<u8>,
}

async fn read_head(conn: &mut TcpStream) -> Result<Head, Refusal> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        let n = conn.read(&mut chunk).await.map_err(|e| refuse(0, e.to_string()))?;
        if n == 0 {
            return Err(refuse(0, "client closed before sending a request"));
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            if end + 4 > MAX_HEAD {
                return Err(refuse(400, "request head too large"));
            }
            let rest = buf.split_off(end + 4);
            return Ok(Head { head: buf, rest });
        }
        if buf.len() > MAX_HEAD {
            return Err(refuse(400, "request head too large"));
        }
    }
}

struct Target {
    connect: bool,
    scheme: &'static str,
    host: String,
    port: u16,
    origin_form_head: Vec<u8>,
}

fn parse_target(head: &Head) -> Result<Target, Refusal> {
    let text = std::str::from_utf8(&head.head).map_err(|_| refuse(400, "request head is not UTF-8"))?;
    let (line, headers) = text.split_once("\r\n").unwrap_or((text, ""));
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(refuse(400, "malformed request line"));
    };
    if method.eq_ignore_ascii_case("CONNECT") {
        let (host, port) = split_host_port(target, 443)?;
        return Ok(Target { connect: true, scheme: "https", host, port, origin_form_head: Vec::new() });
    }
    let (authority, path) = if let Some(rest) = target.strip_prefix("http://") {
        match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        }
    } else if target.starts_with('/') {
        // Origin form: the destination is the Host header.
        let host = headers
            .split("\r\n")
            .find_map(|h| {
                h.split_once(':').filter(|(k, _)| k.trim().eq_ignore_ascii_case("host")).map(|(_, v)| v.trim())
            })
            .ok_or_else(|| refuse(400, "a request without an absolute URL needs a Host header"))?;
        (host, target)
    } else {
        return Err(refuse(400, "only CONNECT (for HTTPS) and http:// requests go through this proxy"));
    };
    let (host, port) = split_host_port(authority, 80)?;
    // Forward with the origin-form request line the destination expects.
    let origin_form_head = format!("{method} {path} {version}\r\n{headers}").into_bytes();
    Ok(Target { connect: false, scheme: "http", host, port, origin_form_head })
}

fn split_host_port(authority: &str, default_port: u16) -> Result<(String, u16), Refusal> {
    if authority.contains('@') {
        return Err(refuse(400, "credentials in the URL are not allowed"));
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, rest) = v6.split_once(']').ok_or_else(|| refuse(400, "malformed IPv6 authority"))?;
        (h, rest.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    let port = match port {
        Some(p) => p.parse().map_err(|_| refuse(400, format!("invalid port in {authority:?}")))?,
        None => default_port,
    };
    if host.is_empty() {
        return Err(refuse(400, "empty host"));
    }
    Ok((host.to_ascii_lowercase(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(s: &str) -> Head {
        Head { head: s.as_bytes().to_vec(), rest: Vec::new() }
    }

    #[test]
    fn connect_targets_https_with_default_port() {
        let t = parse_target(&head("CONNECT example.org:443 HTTP/1.1\r\nHost: example.org\r\n\r\n")).ok().unwrap();
        assert!(t.connect);
        assert_eq!((t.scheme, t.host.as_str(), t.port), ("https", "example.org", 443));
    }

    #[test]
    fn absolute_http_url_is_rewritten_to_origin_form() {
        let t =
            parse_target(&head("GET http://Example.org:8080/a?b HTTP/1.1\r\nHost: example.org\r\n\r\n")).ok().unwrap();
        assert_eq!((t.scheme, t.host.as_str(), t.port), ("http", "example.org", 8080));
        assert!(String::from_utf8(t.origin_form_head).unwrap().starts_with("GET /a?b HTTP/1.1\r\nHost: example.org"));
    }

    #[test]
    fn origin_form_goes_by_the_host_header() {
        let t = parse_target(&head("GET /p HTTP/1.1\r\nhost: Example.org:81\r\n\r\n")).ok().unwrap();
        assert_eq!((t.scheme, t.host.as_str(), t.port), ("http", "example.org", 81));
    }

    #[test]
    fn requests_without_destination_or_with_credentials_are_refused() {
        assert!(parse_target(&head("GET / HTTP/1.1\r\n\r\n")).is_err());
        assert!(parse_target(&head("GET http://u:p@example.org/ HTTP/1.1\r\n\r\n")).is_err());
        assert!(parse_target(&head("garbage\r\n\r\n")).is_err());
    }

    /// An HTTP server answering every request with `text`, on `ip`.
    async fn upstream(ip: &str, text: &'static str) -> SocketAddr {
        let l = TcpListener::bind((ip, 0)).await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((mut c, _)) = l.accept().await else { return };
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let n = c.read(&mut buf).await.unwrap_or(0);
                    let req = String::from_utf8_lossy(&buf[..n]).into_owned();
                    let line = req.lines().next().unwrap_or("").to_owned();
                    let body = format!("{text} saw {line}");
                    let _ = c
                        .write_all(
                            format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len()).as_bytes(),
                        )
                        .await;
                });
            }
        });
        addr
    }

    async fn proxy(policy: EgressPolicy) -> (SocketAddr, mpsc::UnboundedReceiver<String>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(serve(l, Arc::new(policy), tx));
        (addr, rx)
    }

    async fn roundtrip(proxy: SocketAddr, request: String) -> String {
        let mut c = TcpStream::connect(proxy).await.unwrap();
        c.write_all(request.as_bytes()).await.unwrap();
        let mut out = String::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), c.read_to_string(&mut out)).await;
        out
    }

    #[tokio::test]
    async fn proxy_forwards_allowed_urls_and_refuses_the_rest() {
        let allowed = upstream("127.0.0.2", "allowed").await;
        let other = upstream("127.0.0.3", "other").await;
        let provider_own = upstream("127.0.0.1", "provider").await;
        let policy = EgressPolicy {
            proxy_port: 0,
            allow: vec![
                AllowedUrl { scheme: "http".into(), host: "127.0.0.2".into(), port: allowed.port() },
                AllowedUrl { scheme: "http".into(), host: "127.0.0.1".into(), port: provider_own.port() },
            ],
            unrestricted: false,
            deny: vec![provider_own],
            deny_file: None,
        };
        let (p, mut denials) = proxy(policy).await;

        let ok = roundtrip(p, format!("GET http://127.0.0.2:{}/x HTTP/1.1\r\nHost: a\r\n\r\n", allowed.port())).await;
        assert!(ok.starts_with("HTTP/1.1 200") && ok.contains("allowed saw GET /x HTTP/1.1"), "{ok}");

        let no = roundtrip(p, format!("GET http://127.0.0.3:{}/ HTTP/1.1\r\n\r\n", other.port())).await;
        assert!(no.starts_with("HTTP/1.1 403"), "{no}");
        assert!(denials.recv().await.unwrap().contains("127.0.0.3"));

        // Even listed in the manifest, the provider's own sockets stay closed.
        let own = roundtrip(p, format!("GET http://127.0.0.1:{}/ HTTP/1.1\r\n\r\n", provider_own.port())).await;
        assert!(own.starts_with("HTTP/1.1 403"), "{own}");
        assert!(denials.recv().await.unwrap().contains("provider's own"));

        // HTTPS goes by CONNECT, and only to allowed https URLs.
        let tunnel = roundtrip(p, format!("CONNECT 127.0.0.2:{} HTTP/1.1\r\n\r\n", allowed.port())).await;
        assert!(tunnel.starts_with("HTTP/1.1 403"), "http-only URL opened a tunnel: {tunnel}");
    }

    #[tokio::test]
    async fn connect_tunnels_bytes_to_an_allowed_https_destination() {
        let allowed = upstream("127.0.0.2", "tls-ish").await;
        let policy = EgressPolicy {
            allow: vec![AllowedUrl { scheme: "https".into(), host: "127.0.0.2".into(), port: allowed.port() }],
            ..Default::default()
        };
        let (p, _denials) = proxy(policy).await;
        let mut c = TcpStream::connect(p).await.unwrap();
        c.write_all(format!("CONNECT 127.0.0.2:{} HTTP/1.1\r\n\r\n", allowed.port()).as_bytes()).await.unwrap();
        let mut established = [0u8; 39];
        c.read_exact(&mut established).await.unwrap();
        assert!(established.starts_with(b"HTTP/1.1 200"));
        c.write_all(b"PING / HTTP/1.1\r\n\r\n").await.unwrap();
        let mut out = String::new();
        c.read_to_string(&mut out).await.unwrap();
        assert!(out.contains("tls-ish saw PING / HTTP/1.1"), "{out}");
    }

    #[tokio::test]
    async fn oversized_or_silent_clients_are_refused() {
        let (p, _denials) = proxy(EgressPolicy { unrestricted: true, ..Default::default() }).await;
        let big = roundtrip(p, format!("GET http://x/ HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(MAX_HEAD + 10))).await;
        assert!(big.starts_with("HTTP/1.1 400"), "{big}");
    }

    #[test]
    fn policy_matches_scheme_host_and_port_exactly() {
        let p = EgressPolicy {
            allow: vec![AllowedUrl { scheme: "https".into(), host: "api.example.org".into(), port: 443 }],
            ..Default::default()
        };
        assert!(p.allows("https", "API.example.org", 443));
        assert!(!p.allows("http", "api.example.org", 443));
        assert!(!p.allows("https", "api.example.org", 8443));
        assert!(!p.allows("https", "example.org", 443));
    }
}
