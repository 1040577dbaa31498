//! How results are shown: text for people, JSON (`--json`) for programs.

use anyhow::Result;
use sealpod_proto::{ContainerState, Pod, PodPhase, PodStatus};
use sealpod_publisher::PodRef;

fn phase(s: &PodStatus) -> String {
    PodPhase::try_from(s.phase)
        .map(|p| p.as_str_name().trim_start_matches("POD_PHASE_").to_lowercase())
        .unwrap_or_else(|_| "unknown".into())
}

fn container_state(code: i32) -> String {
    ContainerState::try_from(code)
        .map(|p| p.as_str_name().trim_start_matches("CONTAINER_STATE_").to_lowercase())
        .unwrap_or_else(|_| "unknown".into())
}

/// The status of a pod as lines of text.
pub fn status_text(s: &PodStatus) -> String {
    let mut out = format!("pod {} ({}): {}\n", s.pod_id, s.name, phase(s));
    if s.replicas > 1 {
        out += &format!("  replicas: {} ({} running)\n", s.replicas, s.replicas_running);
    }
    if !s.message.is_empty() {
        out += &format!("  {}\n", s.message);
    }
    for c in &s.containers {
        out += &format!("  container {}: {}", c.name, container_state(c.state));
        if c.state == ContainerState::Exited as i32 || c.restarts > 0 {
            out += &format!(" (exit code {}, {} restarts)", c.exit_code, c.restarts);
        }
        if !c.message.is_empty() {
            out += &format!(" — {}", c.message);
        }
        out += "\n";
    }
    for a in &s.addresses {
        if a.http_host.is_empty() {
            out += &format!("  port {}:{} exposed at {}\n", a.container_name, a.container_port, a.multiaddr);
        } else {
            out += &format!(
                "  http://{}/ -> {}:{} (entry point {})\n",
                a.http_host, a.container_name, a.container_port, a.multiaddr
            );
        }
    }
    if let Some(b) = &s.billing {
        out.push_str(&format!(
            "  billing: billed {} (at {}/s), vouchered {}, claimed {}, deposit {}; channel 0x{}\n",
            b.billed,
            b.rate_per_second,
            b.vouchered,
            b.claimed,
            b.deposit,
            hex::encode(&b.channel_id)
        ));
        out.push_str(&format!(
            "  metered {} s; CPU used {:.3} s; peak memory {} bytes\n",
            b.metered_seconds,
            b.used_cpu_microseconds as f64 / 1e6,
            b.peak_memory_bytes
        ));
        for l in &b.lines {
            out.push_str(&format!("    {:<12} {:>14} x {:>10} = {}\n", l.resource, l.quantity, l.unit_price, l.amount));
        }
        if b.unpaid_since_unix_seconds != 0 && s.phase != PodPhase::Suspended as i32 {
            out.push_str(&format!(
                "  unpaid since unix time {}: suspended at {} unless paid (`sealpod pay {} --for 1h`)\n",
                b.unpaid_since_unix_seconds, b.stop_at_unix_seconds, s.pod_id
            ));
        }
        if !b.claim_error.is_empty() {
            out.push_str(&format!("  provider's last claim failed (queued): {}\n", b.claim_error));
        }
    }
    out
}

/// Prints the result of a deployment.
pub fn print_deployed(
    pod_ref: &PodRef,
    status: &PodStatus,
    attested: Option<&sealpod_publisher::Attested>,
    private_images: &[crate::private::PrivateImage],
    path: Option<sealpod_net::Path>,
    json: bool,
) -> Result<()> {
    if json {
        let mut v = serde_json::json!({"pod": pod_ref, "status": status, "attestation": attested, "path": path});
        if !private_images.is_empty() {
            v["private_images"] = serde_json::to_value(private_images)?;
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        match path {
            Some(path) => println!("deployed to provider {} ({path} connection)", pod_ref.provider),
            None => println!("deployed to provider {}", pod_ref.provider),
        }
        print!("{}", status_text(status));
    }
    Ok(())
}

/// Prints the outcome of an update.
pub fn print_updated(
    status: &PodStatus,
    attested: Option<&sealpod_publisher::Attested>,
    private_images: &[crate::private::PrivateImage],
    json: bool,
) -> Result<()> {
    if json {
        let mut v = serde_json::json!({"status": status, "attestation": attested});
        if !private_images.is_empty() {
            v["private_images"] = serde_json::to_value(private_images)?;
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        if let Some(a) = attested {
            println!("provider {} attested ({}) before anything secret was sent", a.provider, a.claims.kind);
        }
        println!("updated {}", status.pod_id);
        print!("{}", status_text(status));
    }
    Ok(())
}

/// Prints a pod's status.
pub fn print_status(status: &PodStatus, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(status)?);
    } else {
        print!("{}", status_text(status));
    }
    Ok(())
}

/// Prints the list of the publisher's pods, with live status when asked for.
pub fn print_pods(rows: &[(PodRef, Option<Result<PodStatus, String>>)], json: bool) -> Result<()> {
    if json {
        let v: Vec<_> = rows
            .iter()
            .map(|(p, s)| match s {
                None => serde_json::json!({"pod": p}),
                Some(Ok(s)) => serde_json::json!({"pod": p, "status": s}),
                Some(Err(e)) => serde_json::json!({"pod": p, "error": e}),
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    if rows.is_empty() {
        println!("no pods deployed from this identity");
    }
    for (p, s) in rows {
        let live = match s {
            None => String::new(),
            Some(Ok(s)) => format!("  {}", phase(s)),
            Some(Err(e)) => format!("  ({e})"),
        };
        println!("{}  {}  provider {}{live}", p.pod_id, p.name, p.provider);
    }
    Ok(())
}

/// A short human summary of a wire pod.
pub fn pod_summary(pod: &Pod) -> String {
    let mut out = String::new();
    for c in &pod.containers {
        let image = match c.image.as_ref().and_then(|i| i.source.as_ref()) {
            Some(sealpod_proto::image::Source::Reference(r)) => r.clone(),
            Some(sealpod_proto::image::Source::Content(c)) => c.digest.clone(),
            None => "(none)".into(),
        };
        out += &format!("  container {}: image {image}\n", c.name);
        if !c.command.is_empty() || !c.args.is_empty() {
            out += &format!("    command {:?} args {:?}\n", c.command, c.args);
        }
        for p in &c.ports {
            let protocol = if p.protocol == sealpod_proto::Protocol::Udp as i32 { "/udp" } else { "" };
            out += &if !p.http_host.is_empty() {
                format!(
                    "    http port {} for host {} (through the provider's entry point)\n",
                    p.target_port, p.http_host
                )
            } else if p.pod_only {
                format!("    port {}{protocol} inside the pod only (service port {})\n", p.target_port, p.port)
            } else if p.port == 0 {
                format!("    port (chosen by the provider) -> {}{protocol}\n", p.target_port)
            } else {
                format!("    port {} -> {}{protocol}\n", p.port, p.target_port)
            };
        }
        if let Some(r) = &c.resources {
            out += &format!("    cpu {}m, memory {} bytes", r.cpu_millicores, r.memory_bytes);
            if r.gpus > 0 {
                out += &format!(", {} GPU(s)", r.gpus);
            }
            out.push('\n');
        }
    }
    for v in &pod.volumes {
        out += &format!("  volume {}\n", v.name);
    }
    out
}
