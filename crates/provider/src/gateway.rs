//! The provider's HTTP entry point: one listener for every pod's HTTP port,
//! routing each request by its `Host` header to the pod that claimed the
//! hostname (Apocryph's `port` + `host`).
//!
//! Requests are forwarded one by one over pooled HTTP/1.1 connections to the
//! pod's loopback listener (which the pod's shim forwards into the pod's
//! network namespace, waking it if it sleeps). Bodies stream both ways;
//! upgrades (WebSockets) become a byte pipe. A hostname belongs to one pod
//! at a time; the operator may restrict hostnames to suffixes.
//!
//! Bounded against hostile clients: connections in all and per client
//! address, the size of and the time to send a request head, and the time to
//! reach a pod. What it leaves to others: TLS (put a terminating proxy in
//! front, or use the pod's own public ports), and which pod a request may
//! reach beyond its hostname.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderMap, HeaderName, HeaderValue, CONNECTION, HOST, UPGRADE};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};

/// Limits of the entry point; the defaults suit a small provider.
#[derive(Debug, Clone)]
pub struct GatewayLimits {
    /// Client connections served at once; more are closed at accept.
    pub connections: usize,
    /// Client connections from one IP address at once.
    pub connections_per_ip: usize,
    /// Longest wait for a request head (also between keep-alive requests).
    pub header_read_timeout: Duration,
    /// Largest request head, in bytes.
    pub max_header_bytes: usize,
    /// Longest wait to reach a pod, its start from zero included.
    pub connect_timeout: Duration,
    /// Idle connections kept to each pod.
    pub pooled_per_backend: usize,
    /// How long an idle connection to a pod is kept. Short: an open
    /// connection counts as use, and would keep a pod that scales to zero
    /// awake.
    pub pooled_idle: Duration,
}

impl Default for GatewayLimits {
    fn default() -> Self {
        GatewayLimits {
            connections: 4096,
            connections_per_ip: 256,
            header_read_timeout: Duration::from_secs(15),
            max_header_bytes: 64 * 1024,
            connect_timeout: Duration::from_secs(60),
            pooled_per_backend: 64,
            pooled_idle: Duration::from_millis(500),
        }
    }
}

/// Where a pod's HTTP port is reached, with the requests pending on it.
#[derive(Debug)]
pub struct Backend {
    /// The pod's loopback listener for its HTTP port.
    pub addr: SocketAddr,
    pending: AtomicUsize,
}

impl Backend {
    /// A backend at `addr` with nothing pending.
    pub fn new(addr: SocketAddr) -> Backend {
        Backend { addr, pending: AtomicUsize::new(0) }
    }

    /// Requests sent to it and not yet answered.
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::Relaxed)
    }
}

/// The pod a hostname routes to, and its copies' backends.
#[derive(Debug, Clone)]
pub struct Route {
    /// The pod that claimed the hostname.
    pub pod_id: String,
    /// Its copies; a request goes to the one with the fewest pending.
    pub backends: Vec<Arc<Backend>>,
    /// Copies that scale to zero: among those with the fewest pending, the
    /// first takes the request, so a later copy is woken only when the
    /// earlier ones are busy. Otherwise ties take turns.
    pub wake_in_order: bool,
    /// Whose turn it is among tied copies.
    turn: Arc<AtomicUsize>,
}

impl Route {
    /// A route to `backends`, copy 0 first.
    pub fn new(pod_id: &str, backends: Vec<Arc<Backend>>, wake_in_order: bool) -> Route {
        Route { pod_id: pod_id.to_owned(), backends, wake_in_order, turn: Arc::new(AtomicUsize::new(0)) }
    }

    fn pick(&self) -> Option<Arc<Backend>> {
        let n = self.backends.len();
        let start = if self.wake_in_order || n < 2 { 0 } else { self.turn.fetch_add(1, Ordering::Relaxed) % n };
        (0..n).map(|k| &self.backends[(start + k) % n]).min_by_key(|b| b.pending()).cloned()
    }
}

/// Aborts a task when the future that spawned it is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Hostnames claimed by pods, and which suffixes may be claimed.
#[derive(Debug, Default)]
pub struct Routes {
    routes: RwLock<HashMap<String, Route>>,
    suffixes: Vec<String>,
}

/// Why a hostname cannot be claimed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClaimError {
    /// Another pod has it.
    #[error("hostname {host} is already claimed by another pod on this provider")]
    Taken {
        /// The hostname.
        host: String,
    },
    /// The operator does not serve it.
    #[error("this provider serves only hostnames ending in {}; {host} is not one", suffixes.join(", "))]
    NotAllowed {
        /// The hostname.
        host: String,
        /// The suffixes allowed.
        suffixes: Vec<String>,
    },
}

impl Routes {
    /// Routes where only hostnames ending in one of `suffixes` may be
    /// claimed (`example.com` allows `example.com` and `a.example.com`, not
    /// `badexample.com`); any hostname when `suffixes` is empty.
    pub fn new(suffixes: &[String]) -> Routes {
        let suffixes = suffixes
            .iter()
            .map(|s| s.trim().trim_start_matches('.').trim_end_matches('.').to_ascii_lowercase())
            .filter(|s| !s.is_empty())
            .collect();
        Routes { routes: RwLock::default(), suffixes }
    }

    /// Whether `host` may be claimed at all (before a pod is started for it).
    pub fn check(&self, host: &str) -> Result<(), ClaimError> {
        let allowed = self.suffixes.is_empty()
            || self
                .suffixes
                .iter()
                .any(|s| host == s || host.strip_suffix(s.as_str()).is_some_and(|h| h.ends_with('.')));
        if !allowed {
            return Err(ClaimError::NotAllowed { host: host.to_owned(), suffixes: self.suffixes.clone() });
        }
        if self.routes.read().unwrap_or_else(|p| p.into_inner()).contains_key(host) {
            return Err(ClaimError::Taken { host: host.to_owned() });
        }
        Ok(())
    }

    /// Gives `host` to `route`'s pod, unless another pod has it. The same
    /// pod claiming again replaces its backends.
    pub fn claim(&self, host: &str, route: Route) -> Result<(), ClaimError> {
        let mut routes = self.routes.write().unwrap_or_else(|p| p.into_inner());
        match routes.get(host) {
            Some(existing) if existing.pod_id != route.pod_id => Err(ClaimError::Taken { host: host.to_owned() }),
            _ => {
                routes.insert(host.to_owned(), route);
                Ok(())
            }
        }
    }

    /// Releases every hostname of `pod_id`.
    pub fn release(&self, pod_id: &str) {
        self.routes.write().unwrap_or_else(|p| p.into_inner()).retain(|_, r| r.pod_id != pod_id);
    }

    /// The route of `host`, if a pod claimed it.
    pub fn get(&self, host: &str) -> Option<Route> {
        self.routes.read().unwrap_or_else(|p| p.into_inner()).get(host).cloned()
    }
}

/// An idle connection to a pod, and since when it is idle.
type Pooled = (SendRequest<Incoming>, std::time::Instant);

/// Idle connections to backends, by address.
#[derive(Default)]
struct Pool {
    idle: Mutex<HashMap<SocketAddr, Vec<Pooled>>>,
}

impl Pool {
    fn take(&self, addr: SocketAddr) -> Option<SendRequest<Incoming>> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let senders = idle.get_mut(&addr)?;
        while let Some((sender, _)) = senders.pop() {
            if sender.is_ready() {
                return Some(sender);
            }
        }
        None
    }

    fn put(&self, addr: SocketAddr, sender: SendRequest<Incoming>, limit: usize) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let senders = idle.entry(addr).or_default();
        senders.retain(|(s, _)| !s.is_closed());
        if senders.len() < limit {
            senders.push((sender, std::time::Instant::now()));
        }
    }

    /// Closes the connections idle for longer than `limit`.
    fn expire(&self, limit: Duration) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        for senders in idle.values_mut() {
            senders.retain(|(s, since)| !s.is_closed() && since.elapsed() < limit);
        }
        idle.retain(|_, senders| !senders.is_empty());
    }
}

struct Gateway {
    routes: Arc<Routes>,
    limits: GatewayLimits,
    pool: Arc<Pool>,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
}

/// Serves the entry point on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, routes: Arc<Routes>, limits: GatewayLimits) {
    let connections = Arc::new(tokio::sync::Semaphore::new(limits.connections));
    let gateway = Arc::new(Gateway { routes, limits, pool: Arc::default(), per_ip: Mutex::default() });
    let (pool, pooled_idle) = (gateway.pool.clone(), gateway.limits.pooled_idle);
    let _sweeper = AbortOnDrop(tokio::spawn(async move {
        let mut tick = tokio::time::interval(pooled_idle.max(Duration::from_millis(10)) / 2);
        loop {
            tick.tick().await;
            pool.expire(pooled_idle);
        }
    }));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of descriptors, mostly: wait instead of spinning.
                tracing::warn!(error = %e, "entry point accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            continue;
        };
        let Some(slot) = PerIpSlot::take(&gateway, peer.ip()) else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let gateway = gateway.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _slot = slot;
            let service = hyper::service::service_fn({
                let gateway = gateway.clone();
                move |request| {
                    let gateway = gateway.clone();
                    async move { Ok::<_, Infallible>(gateway.handle(request, peer).await) }
                }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(gateway.limits.header_read_timeout)
                .max_buf_size(gateway.limits.max_header_bytes)
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            let _ = connection.await;
        });
    }
}

/// A client address's share of connections, given back on drop.
struct PerIpSlot {
    gateway: Arc<Gateway>,
    ip: IpAddr,
}

impl PerIpSlot {
    fn take(gateway: &Arc<Gateway>, ip: IpAddr) -> Option<PerIpSlot> {
        let mut per_ip = gateway.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        let count = per_ip.entry(ip).or_insert(0);
        if *count >= gateway.limits.connections_per_ip {
            return None;
        }
        *count += 1;
        Some(PerIpSlot { gateway: gateway.clone(), ip })
    }
}

impl Drop for PerIpSlot {
    fn drop(&mut self) {
        let mut per_ip = self.gateway.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = per_ip.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                per_ip.remove(&self.ip);
            }
        }
    }
}

type Body = BoxBody<Bytes, hyper::Error>;

fn text(status: StatusCode, message: String) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(message + "\n")).map_err(|never| match never {}).boxed());
    *response.status_mut() = status;
    response.headers_mut().insert("content-type", HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

/// The hostname a request is for: its `Host` header (or the authority of an
/// absolute URI), without port or trailing dot, lowercase.
fn request_host(request: &Request<Incoming>) -> Option<String> {
    let raw = match request.headers().get(HOST) {
        Some(value) => value.to_str().ok()?.to_owned(),
        None => request.uri().authority()?.as_str().to_owned(),
    };
    let host = raw.trim();
    let host = match host.rsplit_once(':') {
        Some((name, port)) if !name.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    };
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    (!host.is_empty()).then_some(host)
}

/// Headers that concern one hop only (RFC 9110 §7.6.1), and those the
/// `Connection` header names.
fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        if !(keep_upgrade && name == UPGRADE) {
            headers.remove(&name);
        }
    }
    for name in ["keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "proxy-authorization"] {
        headers.remove(name);
    }
    headers.remove(CONNECTION);
    if keep_upgrade {
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        headers.remove(UPGRADE);
    }
}

fn wants_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(UPGRADE)
        && headers
            .get_all(CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("upgrade")))
}

/// Counts a request as pending on its backend until dropped.
struct Pending(Arc<Backend>);

impl Pending {
    fn new(backend: Arc<Backend>) -> Pending {
        backend.pending.fetch_add(1, Ordering::Relaxed);
        Pending(backend)
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.0.pending.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Gateway {
    async fn handle(&self, mut request: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
        let Some(host) = request_host(&request) else {
            return text(StatusCode::BAD_REQUEST, "the request names no host".into());
        };
        let Some(backend) = self.routes.get(&host).and_then(|route| route.pick()) else {
            return text(StatusCode::NOT_FOUND, format!("no pod serves {host} here"));
        };
        // Pending until the response's body is through (or the upgraded
        // connection closes): a streaming answer keeps its copy busy.
        let pending = Pending::new(backend.clone());
        let upgrade = wants_upgrade(request.headers());
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut request));
        let headers = request.headers_mut();
        strip_hop_by_hop(headers, upgrade);
        let forwarded_for = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
            Some(earlier) => format!("{earlier}, {}", peer.ip()),
            None => peer.ip().to_string(),
        };
        if let Ok(value) = HeaderValue::from_str(&forwarded_for) {
            headers.insert("x-forwarded-for", value);
        }
        if let Ok(value) = HeaderValue::from_str(&host) {
            headers.insert("x-forwarded-host", value);
        }
        headers.insert("x-forwarded-proto", HeaderValue::from_static("http"));

        let mut sender = match self.pool.take(backend.addr) {
            Some(sender) => sender,
            None => match self.connect(backend.addr).await {
                Ok(sender) => sender,
                Err(message) => return text(StatusCode::BAD_GATEWAY, message),
            },
        };
        let mut response = match sender.send_request(request).await {
            Ok(response) => response,
            Err(e) => return text(StatusCode::BAD_GATEWAY, format!("the pod serving {host} did not answer: {e}")),
        };
        if upgrade && response.status() == StatusCode::SWITCHING_PROTOCOLS {
            let pod_upgrade = hyper::upgrade::on(&mut response);
            if let Some(client_upgrade) = client_upgrade {
                tokio::spawn(async move {
                    let _pending = pending;
                    let (Ok(client), Ok(pod)) = tokio::join!(client_upgrade, pod_upgrade) else { return };
                    let _ = tokio::io::copy_bidirectional(&mut TokioIo::new(client), &mut TokioIo::new(pod)).await;
                });
            }
            return response.map(|body| body.boxed());
        }
        // Back to the pool once this response's body is through.
        let (pool, addr, limit) = (self.pool.clone(), backend.addr, self.limits.pooled_per_backend);
        tokio::spawn(async move {
            let _pending = pending;
            if sender.ready().await.is_ok() {
                pool.put(addr, sender, limit);
            }
        });
        strip_hop_by_hop(response.headers_mut(), false);
        response.map(|body| body.boxed())
    }

    async fn connect(&self, addr: SocketAddr) -> Result<SendRequest<Incoming>, String> {
        let stream = tokio::time::timeout(self.limits.connect_timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| "the pod did not accept the connection in time".to_owned())?
            .map_err(|e| format!("the pod cannot be reached: {e}"))?;
        let _ = stream.set_nodelay(true);
        let (sender, connection) = hyper::client::conn::http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("the pod cannot be reached: {e}"))?;
        tokio::spawn(async move {
            let _ = connection.with_upgrades().await;
        });
        Ok(sender)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(pod: &str) -> Route {
        Route::new(pod, vec![Arc::new(Backend::new("127.0.0.1:1".parse().unwrap()))], false)
    }

    #[test]
    fn a_hostname_is_claimed_by_one_pod_until_it_is_released() {
        let routes = Routes::new(&[]);
        routes.claim("a.test", route("p1")).unwrap();
        assert_eq!(routes.claim("a.test", route("p2")), Err(ClaimError::Taken { host: "a.test".into() }));
        assert!(routes.check("a.test").is_err());
        routes.claim("a.test", route("p1")).unwrap();
        routes.release("p1");
        assert!(routes.get("a.test").is_none());
        routes.claim("a.test", route("p2")).unwrap();
    }

    #[test]
    fn suffixes_allow_the_domain_and_its_subdomains_only() {
        let routes = Routes::new(&[".Apps.Example.com".into()]);
        for ok in ["apps.example.com", "a.apps.example.com", "x.y.apps.example.com"] {
            routes.check(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for refused in ["badapps.example.com", "example.com", "apps.example.com.evil.net"] {
            assert!(matches!(routes.check(refused), Err(ClaimError::NotAllowed { .. })), "{refused}");
        }
    }

    #[test]
    fn requests_go_to_the_copy_with_the_fewest_pending() {
        let backends: Vec<Arc<Backend>> =
            (1..=3).map(|p| Arc::new(Backend::new(format!("127.0.0.1:{p}").parse().unwrap()))).collect();
        let r = Route::new("p", backends.clone(), false);
        let first = Pending::new(r.pick().unwrap());
        let second = Pending::new(r.pick().unwrap());
        let third = r.pick().unwrap();
        let mut addrs = vec![first.0.addr, second.0.addr, third.addr];
        addrs.dedup();
        assert_eq!(addrs.len(), 3, "busy copies are passed over: {addrs:?}");
        drop((first, second));
        // Idle copies take turns.
        let turns: std::collections::HashSet<_> = (0..3).map(|_| r.pick().unwrap().addr).collect();
        assert_eq!(turns.len(), 3);
    }

    #[test]
    fn copies_that_scale_to_zero_are_woken_only_when_the_earlier_ones_are_busy() {
        let backends: Vec<Arc<Backend>> =
            (1..=3).map(|p| Arc::new(Backend::new(format!("127.0.0.1:{p}").parse().unwrap()))).collect();
        let r = Route::new("p", backends.clone(), true);
        for _ in 0..5 {
            assert_eq!(r.pick().unwrap().addr, backends[0].addr, "one copy serves a sequential client");
        }
        let busy = Pending::new(r.pick().unwrap());
        assert_eq!(r.pick().unwrap().addr, backends[1].addr);
        drop(busy);
    }

    #[test]
    fn hop_by_hop_headers_do_not_pass() {
        let mut h = HeaderMap::new();
        h.insert(CONNECTION, HeaderValue::from_static("keep-alive, x-secret"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("te", HeaderValue::from_static("trailers"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key("x-kept"));
    }
}
