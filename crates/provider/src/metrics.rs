//! The operator's view on loopback: `/metrics` (Prometheus text format) and
//! `/earnings` (JSON, what `sealpod provider earnings` prints). Plain HTTP/1.0
//! on a loopback socket, one short request per connection: there is nothing
//! here a stranger may see, and nothing to parse beyond a request line.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use sealpod_market::U256;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::Provider;

/// Event counters since the provider started.
#[derive(Default)]
pub struct Counters {
    pub attestations: AtomicU64,
    pub capacity_requests: AtomicU64,
    pub provisioned: AtomicU64,
    pub refused: AtomicU64,
    pub vouchers: AtomicU64,
    pub vouchers_refused: AtomicU64,
    pub claims: AtomicU64,
    pub claims_failed: AtomicU64,
    pub suspensions: AtomicU64,
}

pub(crate) fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl Provider {
    fn render_metrics(&self) -> String {
        let c = &self.counters;
        let records = self.store.all().unwrap_or_default();
        let accounts = self.accounts();
        let (cpu, mem) = self.reserved();
        let mut out = String::new();
        let mut gauge = |name: &str, help: &str, kind: &str, v: String| {
            let _ = writeln!(out, "# HELP sealpod_{name} {help}\n# TYPE sealpod_{name} {kind}\nsealpod_{name} {v}");
        };
        gauge("pods", "Pods this provider runs.", "gauge", records.len().to_string());
        gauge("reserved_cpu_millicores", "CPU reserved by pods.", "gauge", cpu.to_string());
        gauge("reserved_memory_bytes", "Memory reserved by pods.", "gauge", mem.to_string());
        gauge("capacity_cpu_millicores", "CPU for sale.", "gauge", self.config.capacity.cpu_millicores.to_string());
        gauge("capacity_memory_bytes", "Memory for sale.", "gauge", self.config.capacity.memory_bytes.to_string());
        let used_cpu: u64 =
            records.iter().filter_map(|r| sealpod_runtime::cgroup::usage(&r.pod_id)).map(|u| u.cpu_usec).sum();
        gauge(
            "used_cpu_seconds_total",
            "CPU time used by running pods' cgroups.",
            "counter",
            format!("{:.6}", used_cpu as f64 / 1e6),
        );
        let suspended = accounts.iter().filter(|a| a.suspended_at.is_some() && !a.ended).count();
        gauge("pods_suspended", "Pods suspended for lack of payment.", "gauge", suspended.to_string());
        let sum = |f: &dyn Fn(&crate::billing::Account) -> U256| accounts.iter().fold(U256::ZERO, |acc, a| acc + f(a));
        gauge(
            "billed_tokens_total",
            "Billed to pods, token base units.",
            "counter",
            sum(&|a| a.bill().total).to_string(),
        );
        gauge(
            "vouchered_tokens_total",
            "Covered by vouchers, token base units.",
            "counter",
            sum(&|a| a.vouchered()).to_string(),
        );
        gauge(
            "claimed_tokens_total",
            "Claimed on chain, token base units.",
            "counter",
            sum(&|a| a.claimed).to_string(),
        );
        let pending = accounts.iter().filter(|a| a.claim_error.is_some()).count();
        gauge("claims_failing", "Accounts whose last claim failed (retried).", "gauge", pending.to_string());
        for (name, help, v) in [
            ("attestation_requests_total", "Attestation requests answered.", &c.attestations),
            ("capacity_requests_total", "Capacity requests answered.", &c.capacity_requests),
            ("pods_provisioned_total", "Pods provisioned.", &c.provisioned),
            ("provision_refusals_total", "Provision requests refused.", &c.refused),
            ("vouchers_accepted_total", "Vouchers accepted.", &c.vouchers),
            ("vouchers_refused_total", "Vouchers refused.", &c.vouchers_refused),
            ("claims_total", "Claims that moved tokens on chain.", &c.claims),
            ("claims_failed_total", "Claims that failed (and stay queued).", &c.claims_failed),
            ("suspensions_total", "Pods suspended for lack of payment.", &c.suspensions),
        ] {
            gauge(name, help, "counter", v.load(Ordering::Relaxed).to_string());
        }
        out
    }

    fn render_earnings(&self) -> String {
        let accounts = self.accounts();
        let mut total = (U256::ZERO, U256::ZERO, U256::ZERO);
        let pods: Vec<serde_json::Value> = accounts
            .iter()
            .map(|a| {
                let billed = a.bill().total;
                total.0 += billed;
                total.1 += a.vouchered();
                total.2 += a.claimed;
                let state = if a.ended {
                    if a.claimable() {
                        "ended, claim pending"
                    } else {
                        "ended, settled"
                    }
                } else if a.suspended_at.is_some() {
                    "suspended"
                } else {
                    "running"
                };
                serde_json::json!({
                    "pod": a.pod_id,
                    "channel": a.channel_id,
                    "billed": billed.to_string(),
                    "vouchered": a.vouchered().to_string(),
                    "claimed": a.claimed.to_string(),
                    "deposit": a.deposit.to_string(),
                    "state": state,
                    "claimError": a.claim_error,
                    "endReason": a.end_reason,
                })
            })
            .collect();
        serde_json::json!({
            "pods": pods,
            "total": {"billed": total.0.to_string(), "vouchered": total.1.to_string(), "claimed": total.2.to_string()},
        })
        .to_string()
    }

    /// Serves `/metrics` and `/earnings` on `listener` until the process ends.
    pub(crate) async fn serve_metrics(self: Arc<Self>, listener: tokio::net::TcpListener) {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else { continue };
            let this = self.clone();
            tokio::spawn(async move {
                // The request may come in pieces: read its head to the end
                // (at most 4 KiB, at most 5 s). Answering before the client's
                // headers are read would close a socket with unread data,
                // which the kernel turns into a reset the client may see
                // before the answer.
                let mut buf = [0u8; 4096];
                let mut n = 0;
                let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
                while n < buf.len() && !buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                    match tokio::time::timeout_at(deadline, sock.read(&mut buf[n..])).await {
                        Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return,
                        Ok(Ok(k)) => n += k,
                    }
                }
                let line = String::from_utf8_lossy(&buf[..n]);
                let path = line.split_whitespace().nth(1).unwrap_or("").to_owned();
                let (status, kind, body) = match path.as_str() {
                    "/metrics" => {
                        let t = this.clone();
                        let body = tokio::task::spawn_blocking(move || t.render_metrics()).await.unwrap_or_default();
                        ("200 OK", "text/plain; version=0.0.4", body)
                    }
                    "/earnings" => {
                        let t = this.clone();
                        let body = tokio::task::spawn_blocking(move || t.render_earnings()).await.unwrap_or_default();
                        ("200 OK", "application/json", body)
                    }
                    _ => ("404 Not Found", "text/plain", "try /metrics or /earnings\n".to_owned()),
                };
                let head = format!(
                    "HTTP/1.0 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = sock.write_all(head.as_bytes()).await;
                let _ = sock.write_all(body.as_bytes()).await;
                let _ = sock.shutdown().await;
                // Let the client close first, so nothing it sent is left unread.
                let mut sink = [0u8; 512];
                let _ = tokio::time::timeout(std::time::Duration::from_secs(1), async {
                    while matches!(sock.read(&mut sink).await, Ok(k) if k > 0) {}
                })
                .await;
            });
        }
    }
}
