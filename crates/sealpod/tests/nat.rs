//! A provider behind NAT, with network namespaces this test creates: a
//! "public" namespace holds a relay (`sealpod relay run`) and the publisher;
//! the provider sits in a private namespace behind a router namespace that
//! masquerades and drops every inbound connection it did not see go out. AutoNAT tells the
//! provider it cannot be dialled, it listens through the relay, and the
//! publisher finds it on the DHT, deploys, controls and deletes a pod through
//! the relay; DCUtR upgrades the connection behind a cone NAT (asserted:
//! some command's connection is hole-punched). With a
//! symmetric NAT (`--random-fully`) hole punching cannot work and everything
//! stays relayed. The test prints which path carried each deploy.
//!
//! Needs root (namespaces, iptables, containers); skipped otherwise.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// The three namespaces and the links between them; removed on drop.
struct Topology {
    public: String,
    router: String,
    private: String,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

fn in_ns(ns: &str, program: &str, args: &[&str]) {
    let out = Command::new("nsenter").arg(format!("--net=/run/netns/{ns}")).arg(program).args(args).output().unwrap();
    assert!(out.status.success(), "{program} {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

impl Topology {
    /// `symmetric`: the router picks a fresh port for every destination, as
    /// carrier-grade and symmetric NATs do, so no hole can be punched.
    fn new(tag: &str, symmetric: bool) -> Topology {
        let t = Topology {
            public: format!("spn-pub-{tag}"),
            router: format!("spn-nat-{tag}"),
            private: format!("spn-prv-{tag}"),
        };
        t.remove();
        for ns in [&t.public, &t.router, &t.private] {
            ip(&["netns", "add", ns]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        let (wan, wan_peer, lan, lan_peer) =
            (format!("snw{tag}"), format!("snp{tag}"), format!("snl{tag}"), format!("snq{tag}"));
        ip(&["link", "add", &wan, "type", "veth", "peer", "name", &wan_peer]);
        ip(&["link", "set", &wan, "netns", &t.router]);
        ip(&["link", "set", &wan_peer, "netns", &t.public]);
        ip(&["link", "add", &lan, "type", "veth", "peer", "name", &lan_peer]);
        ip(&["link", "set", &lan, "netns", &t.router]);
        ip(&["link", "set", &lan_peer, "netns", &t.private]);
        for (ns, dev, addr) in [
            (&t.public, &wan_peer, "10.99.0.1/24"),
            (&t.router, &wan, "10.99.0.2/24"),
            (&t.router, &lan, "10.98.0.1/24"),
            (&t.private, &lan_peer, "10.98.0.2/24"),
        ] {
            ip(&["-n", ns, "addr", "add", addr, "dev", dev]);
            ip(&["-n", ns, "link", "set", dev, "up"]);
        }
        // The public side has no route to 10.98.0.0/24: only the router's
        // address is visible there, as on the internet.
        ip(&["-n", &t.private, "route", "add", "default", "via", "10.98.0.1"]);
        in_ns(&t.router, "sysctl", &["-qw", "net.ipv4.ip_forward=1"]);
        // The NAT drops what it did not see go out, so AutoNAT's dial-back
        // from the relay gets no answer at all: one SYN retry (3 s) instead
        // of six (over two minutes) lets it conclude within its timeout.
        in_ns(&t.public, "sysctl", &["-qw", "net.ipv4.tcp_syn_retries=1"]);
        let mut masquerade = vec!["-t", "nat", "-A", "POSTROUTING", "-o", &wan, "-j", "MASQUERADE"];
        if symmetric {
            masquerade.push("--random-fully");
        }
        in_ns(&t.router, "iptables", &masquerade);
        for chain in ["FORWARD", "INPUT"] {
            let established = ["-A", chain, "-i", &wan, "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED"];
            in_ns(&t.router, "iptables", &[&established[..], &["-j", "ACCEPT"]].concat());
            // Dropped, not rejected, as home routers do: a rejected SYN would
            // kill the publisher's half of a TCP simultaneous open.
            in_ns(&t.router, "iptables", &["-A", chain, "-i", &wan, "-j", "DROP"]);
        }
        t
    }

    fn remove(&self) {
        for ns in [&self.public, &self.router, &self.private] {
            let _ = Command::new("ip").args(["netns", "del", ns]).stderr(Stdio::null()).status();
        }
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        self.remove();
    }
}

/// A process in a namespace, killed on drop.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.0.id().to_string()).stderr(Stdio::null()).status();
        let _ = self.0.wait();
    }
}

fn spawn_in(ns: &str, args: &[&str], log: &Path) -> Daemon {
    let log = std::fs::File::create(log).unwrap();
    let child = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{ns}"))
        .arg(SEALPOD)
        .args(args)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    Daemon(child)
}

fn sealpod_in(ns: &str, home: &Path, args: &[&str]) -> std::process::Output {
    Command::new("nsenter")
        .arg(format!("--net=/run/netns/{ns}"))
        .arg(SEALPOD)
        .arg("--home")
        .arg(home)
        .args(args)
        .output()
        .unwrap()
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < timeout, "{what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn tools_present() -> bool {
    ["nsenter", "iptables", "ip"]
        .iter()
        .all(|t| Command::new("sh").arg("-c").arg(format!("command -v {t}")).output().is_ok_and(|o| o.status.success()))
}

/// Runs the whole scenario; returns the path each command's answer came on.
fn deploy_behind_nat(tag: &str, symmetric: bool) -> Option<String> {
    if !is_root() || !tools_present() {
        eprintln!("skipped: needs root, ip, nsenter and iptables");
        return None;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    build_sample_image(dir);
    let net = Topology::new(tag, symmetric);

    let relay_ready = dir.join("relay.json");
    let _relay = spawn_in(
        &net.public,
        &[
            "relay",
            "run",
            "--listen",
            "/ip4/10.99.0.1/tcp/4003",
            "--listen",
            "/ip4/10.99.0.1/udp/4003/quic-v1",
            "--key",
            dir.join("relay.key").to_str().unwrap(),
            "--ready-file",
            relay_ready.to_str().unwrap(),
            "--autonat-private",
        ],
        &dir.join("relay.log"),
    );
    wait_for("relay did not start", Duration::from_secs(20), || relay_ready.exists());
    let relay: Value = serde_json::from_slice(&std::fs::read(&relay_ready).unwrap()).unwrap();
    // Over TCP: AutoNAT's dial-back then comes from a port the NAT has not
    // seen, as it must (over QUIC it would come from the relay's own socket,
    // which the NAT lets in, and the provider would think itself public).
    let relay_addr = relay["addresses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .find(|a| a.contains("/tcp/"))
        .expect("the relay listens on TCP");

    let provider_log = dir.join("provider.log");
    let _provider = spawn_in(
        &net.private,
        &[
            "-v",
            "provider",
            "run",
            "--listen",
            "/ip4/0.0.0.0/tcp/4001",
            "--listen",
            "/ip4/0.0.0.0/udp/4001/quic-v1",
            "--bootstrap",
            &relay_addr,
            "--state-dir",
            dir.join("provider").to_str().unwrap(),
            "--image-root",
            dir.join("images").to_str().unwrap(),
            "--http-listen",
            "127.0.0.1:0",
            "--autonat-private",
        ],
        &provider_log,
    );
    let log = || std::fs::read_to_string(&provider_log).unwrap_or_default();
    // AutoNAT finds the provider unreachable and it listens through the relay.
    wait_for("provider never found out it is behind NAT", Duration::from_secs(60), || {
        log().contains("AutoNAT: not reachable from outside")
    });
    wait_for("provider never got a relay reservation", Duration::from_secs(60), || {
        log().contains("relay reservation accepted")
    });

    let image = format!("oci:{}:v1", dir.join("images/sample").display());
    let manifest = dir.join("web.yaml");
    std::fs::write(
        &manifest,
        format!(
            "containers:\n  - name: web\n    image: {image}\n    args: [serve, --port, \"8080\", --text, \"behind NAT\"]\n    ports: [\"18080:8080\"]\n    resources: {{cpu: 200m, memory: 64Mi}}\n"
        ),
    )
    .unwrap();
    let home = dir.join("publisher");
    // Found on the DHT through the relay, with no address given.
    let deployed = ok_json(sealpod_in(
        &net.public,
        &home,
        &["--json", "deploy", manifest.to_str().unwrap(), "--bootstrap", &relay_addr],
    ));
    let pod = deployed["pod"]["pod_id"].as_str().unwrap().to_owned();
    let path = deployed["path"].as_str().unwrap_or("unknown").to_owned();
    let recorded = deployed["pod"]["provider_addrs"][0].as_str().unwrap_or_default().to_owned();
    assert!(recorded.contains("/p2p-circuit/"), "the provider is reachable only through the relay: {recorded}");
    assert_eq!(recorded.matches("/p2p/").count(), 2, "relay and provider ids, once each: {recorded}");
    eprintln!("NAT ({}) deploy path: {path}", if symmetric { "symmetric" } else { "cone" });

    // Controlled through the relay (a new connection per command).
    let status = ok_json(sealpod_in(&net.public, &home, &["--json", "status", &pod]));
    assert_eq!(status["phase"], "POD_PHASE_RUNNING", "{status}");
    let page = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", net.private))
        .args(["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/18080; printf 'GET / HTTP/1.0\\r\\n\\r\\n' >&3; cat <&3"])
        .output()
        .unwrap();
    let started = Instant::now();
    let mut body = String::from_utf8_lossy(&page.stdout).into_owned();
    while !body.contains("behind NAT") && started.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(200));
        let again = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", net.private))
            .args(["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/18080; printf 'GET / HTTP/1.0\\r\\n\\r\\n' >&3; cat <&3"])
            .output()
            .unwrap();
        body = String::from_utf8_lossy(&again.stdout).into_owned();
    }
    assert!(body.contains("behind NAT"), "the pod serves its page inside the private network: {body}");
    let logs = sealpod_in(&net.public, &home, &["logs", &pod, "-c", "web"]);
    assert!(logs.status.success(), "logs through the relay: {}", String::from_utf8_lossy(&logs.stderr));
    let mut punched = log().contains("hole punched: direct connection");
    if !symmetric {
        // Each command is a new publisher process and a new relayed
        // connection, and DCUtR tries on each. Between namespaces of one
        // machine the round trip is tens of microseconds, so the publisher's
        // SYN and the provider's can cross in the wrong order and a TCP
        // simultaneous open fail; a few more tries are enough.
        for _ in 0..8 {
            if punched {
                break;
            }
            let _ = sealpod_in(&net.public, &home, &["--json", "status", &pod]);
            punched = log().contains("hole punched: direct connection");
        }
    }
    let deleted = ok_json(sealpod_in(&net.public, &home, &["--json", "delete", &pod]));
    assert_eq!(deleted["phase"], "POD_PHASE_DELETED", "{deleted}");
    let punched = punched || log().contains("hole punched: direct connection");

    eprintln!("NAT ({}) hole punched by the provider: {punched}", if symmetric { "symmetric" } else { "cone" });
    if !symmetric {
        assert!(punched, "the cone NAT lets DCUtR punch a hole, yet no attempt succeeded: {}", log());
    }
    if symmetric {
        assert_eq!(path, "relayed", "no hole can be punched through a symmetric NAT");
        assert!(!punched, "no hole can be punched through a symmetric NAT: {}", log());
    }
    Some(path)
}

#[test]
fn a_provider_behind_a_cone_nat_is_deployed_to_through_a_relay_and_a_hole_is_punched() {
    if let Some(path) = deploy_behind_nat(&format!("c{}", std::process::id() % 10000), false) {
        assert!(path == "direct" || path == "relayed", "{path}");
    }
}

#[test]
fn a_provider_behind_a_symmetric_nat_stays_relayed_and_works() {
    deploy_behind_nat(&format!("s{}", std::process::id() % 10000), true);
}
