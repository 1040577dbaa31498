//! The market end to end, with real processes and a real chain (anvil): a
//! provider with prices, a publisher that finds it, opens a channel, deploys,
//! pays, stops paying and withdraws; the provider bills, suspends, resumes,
//! and claims. Token balances must add up exactly.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use sealpod_market::devchain::{dev_key, Anvil, DEV_KEYS};
use sealpod_market::{ChainClient, ChainRef, U256};
use serde_json::Value;

fn anvil() -> Option<Anvil> {
    if !is_root() {
        eprintln!("skipped: running pods needs root");
        return None;
    }
    if Anvil::find().is_none() && std::env::var_os("SEALPOD_REQUIRE_ANVIL").is_none() {
        eprintln!("skipped: anvil not installed (npm ci)");
        return None;
    }
    Some(Anvil::spawn().expect("start anvil"))
}

fn write_pod(dir: &Path) -> std::path::PathBuf {
    let image = format!("oci:{}:v1", dir.join("images/sample").display());
    let path = dir.join("paid.yaml");
    std::fs::write(
        &path,
        format!(
            r#"containers:
  - name: web
    image: {image}
    args: [serve, --port, "8080", --text, "paid says hi"]
    ports: ["0:8080"]
    resources: {{cpu: 300m, memory: 64Mi}}
"#
        ),
    )
    .unwrap();
    path
}

fn market_file(dir: &Path, rpc: &str, chain: &ChainRef, payout: &str) -> std::path::PathBuf {
    let key = dir.join("claim.key");
    std::fs::write(&key, DEV_KEYS[2]).unwrap();
    let path = dir.join("market.yaml");
    std::fs::write(
        &path,
        format!(
            r#"chain:
  rpc: {rpc}
  chainId: {}
  contract: "{}"
  token: "{}"
payout: "{payout}"
claimKey: {}
prices:
  cpu: 1000000        # per core-second reserved
  memory: 1000        # per GiB-second reserved
  gpu: 0
  external-ip: 0
  cpu-time: 1000      # per core-second used
graceSeconds: 3
minUnlockSeconds: 30
billIntervalSeconds: 1
claimIntervalSeconds: 2
retentionSeconds: 600
"#,
            chain.chain_id,
            chain.contract,
            chain.token,
            key.display()
        ),
    )
    .unwrap();
    path
}

/// `sealpod deploy` paying through a new channel (publisher key: anvil's
/// second dev key, unlock delay 30 s).
fn deploy_with_channel(home: &Path, manifest: &Path, provider: &str, deposit: u64, prepay: &str) -> Value {
    ok_json(sealpod(
        home,
        &[
            "--json",
            "deploy",
            manifest.to_str().unwrap(),
            "--provider",
            provider,
            "--chain-key",
            DEV_KEYS[1],
            "--deposit",
            &deposit.to_string(),
            "--prepay",
            prepay,
            "--unlock-delay",
            "30",
        ],
    ))
}

fn status(home: &Path, pod: &str) -> Value {
    ok_json(sealpod(home, &["--json", "status", pod]))
}

fn amount(v: &Value) -> U256 {
    v.as_str().unwrap_or("0").parse().unwrap()
}

fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> Result<(), String>) {
    let t = Instant::now();
    loop {
        match f() {
            Ok(()) => return,
            Err(e) if t.elapsed() > limit => panic!("{what}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(250)),
        }
    }
}

#[test]
fn a_publisher_finds_pays_stops_paying_and_withdraws_and_the_books_balance() {
    let Some(anvil) = anvil() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    build_sample_image(dir);
    let alice = dir.join("alice");
    let payout = dev_key(3).address();
    let rt = tokio::runtime::Runtime::new().unwrap();

    // The dev chain: contract and token deployed, tokens minted to alice.
    let deployed = ok_json(sealpod(
        &alice,
        &["--json", "chain", "deploy", "--rpc", &anvil.url, "--chain-key", DEV_KEYS[1], "--mint", "100000000"],
    ));
    let chain: ChainRef = serde_json::from_value(deployed.clone()).unwrap();
    let reader = rt.block_on(ChainClient::connect(&anvil.url, dev_key(0), chain)).unwrap();
    let alice_start = rt.block_on(reader.balance(dev_key(1).address())).unwrap();
    assert_eq!(alice_start, U256::from(100_000_000u64));

    let market = market_file(dir, &anvil.url, &chain, &payout.to_string());
    let provider =
        Provider::start_with(dir, free_port(), &["--attestor", "insecure-dev", "--market", market.to_str().unwrap()]);

    // Found with its signed offer, priced for the request.
    let listed = ok_json(sealpod(
        &alice,
        &["--json", "providers", "--provider", &provider.addr, "--cpu", "300m", "--memory", "64Mi"],
    ));
    let offer = &listed["providers"][0];
    assert_eq!(offer["payout"].as_str().unwrap().to_lowercase(), payout.to_string().to_lowercase(), "{listed}");
    assert_eq!(offer["tee"], "insecure-dev");
    // 0.3 core × 1e6 + 1/16 GiB × 1000, per second.
    assert_eq!(offer["ratePerSecond"], "300063", "{listed}");
    let too_cheap = ok_json(sealpod(
        &alice,
        &["--json", "providers", "--provider", &provider.addr, "--cpu", "300m", "--max-price", "1000"],
    ));
    assert_eq!(too_cheap["providers"].as_array().unwrap().len(), 0, "{too_cheap}");

    // A deploy without a channel is refused with the reason.
    let pod_manifest = write_pod(dir);
    let out = sealpod(&alice, &["deploy", pod_manifest.to_str().unwrap(), "--provider", &provider.addr]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("this provider charges"), "{err}");

    // Deploy with a channel, 4 s prepaid.
    let deposit = 20_000_000u64;
    let d = deploy_with_channel(&alice, &pod_manifest, &provider.addr, deposit, "4s");
    let pod = d["status"]["podId"].as_str().unwrap().to_owned();
    let channel = format!("0x{}", hex::encode(base64_decode(d["status"]["billing"]["channelId"].as_str().unwrap())));
    let exposed = socket_of(d["status"]["addresses"][0]["multiaddr"].as_str().unwrap());
    assert!(eventually("page", || http_get(&exposed)).starts_with("paid says hi"));
    assert_eq!(rt.block_on(reader.balance(dev_key(1).address())).unwrap(), alice_start - U256::from(deposit));

    // Billed as it runs, with a line per resource.
    wait_for("a growing bill", Duration::from_secs(20), || {
        let s = status(&alice, &pod);
        let b = &s["billing"];
        if amount(&b["billed"]) > U256::ZERO && b["lines"].as_array().map_or(0, |l| l.len()) == 5 {
            Ok(())
        } else {
            Err(s.to_string())
        }
    });

    // Paying ahead keeps it running.
    let paid = ok_json(sealpod(&alice, &["--json", "pay", &pod, "--for", "3s", "--chain-key", DEV_KEYS[1]]));
    assert_eq!(paid["status"]["phase"], "POD_PHASE_RUNNING", "{paid}");

    // The provider claims on chain by itself.
    wait_for("a claim on chain", Duration::from_secs(30), || {
        let b = rt.block_on(reader.balance(payout)).unwrap();
        if b > U256::ZERO {
            Ok(())
        } else {
            Err(format!("payout holds {b}"))
        }
    });

    // Alice stops paying: after the vouchers and the 3 s grace, the pod is
    // suspended, saying why, and its page no longer answers.
    wait_for("suspension", Duration::from_secs(40), || {
        let s = status(&alice, &pod);
        if s["phase"] == "POD_PHASE_SUSPENDED" {
            Ok(())
        } else {
            Err(s.to_string())
        }
    });
    let s = status(&alice, &pod);
    assert!(s["message"].as_str().unwrap().contains("grace period"), "{s}");
    assert!(http_get(&exposed).is_err(), "a suspended pod still serves");
    let billed_at_suspension = amount(&s["billing"]["billed"]);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(amount(&status(&alice, &pod)["billing"]["billed"]), billed_at_suspension, "billed while suspended");

    // A late payment covering the bill resumes it, with nothing lost.
    let resumed = ok_json(sealpod(&alice, &["--json", "pay", &pod, "--for", "2s", "--chain-key", DEV_KEYS[1]]));
    assert_eq!(resumed["status"]["phase"], "POD_PHASE_RUNNING", "{resumed}");
    assert!(eventually("page after resume", || http_get(&exposed)).starts_with("paid says hi"));

    // The operator's view.
    let earnings = ok_json(sealpod(
        &alice,
        &["--json", "provider", "earnings", "--state-dir", dir.join("provider").to_str().unwrap()],
    ));
    assert_eq!(earnings["pods"][0]["pod"], pod.as_str(), "{earnings}");
    let metrics_addr = std::fs::read_to_string(dir.join("provider/metrics.addr")).unwrap();
    let metrics = raw_get(&metrics_addr, "/metrics");
    for name in ["sealpod_pods 1", "sealpod_suspensions_total 1", "sealpod_claims_total", "sealpod_billed_tokens_total"]
    {
        assert!(metrics.contains(name), "{name} missing:\n{metrics}");
    }

    // Deleting the pod ends billing; the provider claims the last voucher.
    let out = sealpod(&alice, &["delete", &pod]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let vouchered = amount(&earnings["pods"][0]["vouchered"]).max(U256::ZERO);
    let _ = vouchered;
    wait_for("the final claim", Duration::from_secs(30), || {
        let e = ok_json(sealpod(
            &alice,
            &["--json", "provider", "earnings", "--state-dir", dir.join("provider").to_str().unwrap()],
        ));
        let p = &e["pods"][0];
        if p["state"] == "ended, settled" {
            Ok(())
        } else {
            Err(e.to_string())
        }
    });
    let claimed = rt.block_on(reader.channel(channel.parse().unwrap())).unwrap().claimed;
    assert_eq!(rt.block_on(reader.balance(payout)).unwrap(), claimed);

    // Alice takes the rest back after the unlock delay (chain time moved on).
    ok_json(sealpod(&alice, &["--json", "channel", "unlock", &channel, "--chain-key", DEV_KEYS[1]]));
    let out = sealpod(&alice, &["channel", "withdraw", &channel, "--chain-key", DEV_KEYS[1]]);
    assert!(!out.status.success(), "withdrawn before the unlock delay");
    rt.block_on(reader.dev_increase_time(31)).unwrap();
    let w = ok_json(sealpod(&alice, &["--json", "channel", "withdraw", &channel, "--chain-key", DEV_KEYS[1]]));
    let refunded = amount(&w["refunded"]);
    assert_eq!(
        claimed + refunded,
        U256::from(deposit),
        "deposit = claimed by the provider + returned to the publisher"
    );
    assert_eq!(rt.block_on(reader.balance(dev_key(1).address())).unwrap(), alice_start - claimed);
    drop(provider);
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

fn raw_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr.trim()).unwrap();
    s.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes()).unwrap();
    let mut r = String::new();
    s.read_to_string(&mut r).unwrap();
    r
}

#[test]
fn bad_vouchers_are_refused_by_name_and_a_dead_chain_stops_only_claims() {
    let Some(anvil) = anvil() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    build_sample_image(dir);
    let alice = dir.join("alice");
    let deployed = ok_json(sealpod(
        &alice,
        &["--json", "chain", "deploy", "--rpc", &anvil.url, "--chain-key", DEV_KEYS[1], "--mint", "100000000"],
    ));
    let chain: ChainRef = serde_json::from_value(deployed).unwrap();
    let market = market_file(dir, &anvil.url, &chain, &dev_key(3).address().to_string());
    // A long grace period: this test is about refusals, not lapses.
    let text = std::fs::read_to_string(&market).unwrap().replace("graceSeconds: 3", "graceSeconds: 25");
    std::fs::write(&market, text).unwrap();
    let provider = Provider::start_with(dir, free_port(), &["--market", market.to_str().unwrap()]);
    let pod_manifest = write_pod(dir);
    let deposit = 50_000_000u64;
    let d = deploy_with_channel(&alice, &pod_manifest, &provider.addr, deposit, "2s");
    let pod = d["status"]["podId"].as_str().unwrap().to_owned();
    let first = amount(&d["status"]["billing"]["vouchered"]);
    let exposed = socket_of(d["status"]["addresses"][0]["multiaddr"].as_str().unwrap());

    let refused = |args: &[&str], why: &str| {
        let out = sealpod(&alice, args);
        assert!(!out.status.success(), "{args:?} was accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(why), "{args:?}: expected {why:?} in: {err}");
    };
    let lower = (first - U256::from(1)).to_string();
    refused(&["pay", &pod, "--amount", &lower, "--chain-key", DEV_KEYS[1]], "is not above the previous one");
    refused(
        &["pay", &pod, "--amount", &first.to_string(), "--chain-key", DEV_KEYS[1]],
        "is not above the previous one",
    );
    let above = (deposit + 1).to_string();
    refused(&["pay", &pod, "--amount", &above, "--chain-key", DEV_KEYS[1]], "above the channel's deposit");
    let more = (first + U256::from(1000)).to_string();
    refused(&["pay", &pod, "--amount", &more, "--chain-key", DEV_KEYS[0]], "only its key signs vouchers that count");
    // Past the publisher's own check (its pod record edited), the provider
    // still refuses a voucher signed by another key.
    let records = alice.join("pods.json");
    let text = std::fs::read_to_string(&records).unwrap();
    let (mine, theirs) =
        (dev_key(1).address().to_string().to_lowercase(), dev_key(0).address().to_string().to_lowercase());
    assert!(text.contains(&mine), "{text}");
    std::fs::write(&records, text.replace(&mine, &theirs)).unwrap();
    refused(&["pay", &pod, "--amount", &more, "--chain-key", DEV_KEYS[0]], "not signed by the channel's publisher");
    std::fs::write(&records, text).unwrap();
    refused(&["pay", &pod, "--amount", "12.5", "--chain-key", DEV_KEYS[1]], "expected a non-negative decimal integer");
    // The good one still goes through after all that.
    let ok = ok_json(sealpod(&alice, &["--json", "pay", &pod, "--amount", &more, "--chain-key", DEV_KEYS[1]]));
    assert_eq!(amount(&ok["status"]["billing"]["vouchered"]), first + U256::from(1000));

    // An online publisher answers the growing bill with vouchers.
    let mut follower = std::process::Command::new(SEALPOD)
        .arg("--home")
        .arg(&alice)
        .args(["pay", &pod, "--for", "20s", "--follow", "--interval", "1s", "--chain-key", DEV_KEYS[1]])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for("a following publisher's voucher", Duration::from_secs(20), || {
        let s = status(&alice, &pod);
        let v = amount(&s["billing"]["vouchered"]);
        if v > first + U256::from(1000) && v > amount(&s["billing"]["billed"]) {
            Ok(())
        } else {
            Err(s.to_string())
        }
    });
    follower.kill().unwrap();
    follower.wait().unwrap();

    // The chain goes away: the pod keeps running, claims queue and say so,
    // new pods are refused because their channel cannot be checked.
    drop(anvil);
    let unclaimed = (amount(&status(&alice, &pod)["billing"]["vouchered"]) + U256::from(2000)).to_string();
    ok_json(sealpod(&alice, &["--json", "pay", &pod, "--amount", &unclaimed, "--chain-key", DEV_KEYS[1]]));
    wait_for("a queued claim", Duration::from_secs(30), || {
        let s = status(&alice, &pod);
        let e = s["billing"]["claimError"].as_str().unwrap_or("");
        if e.contains("chain unreachable") {
            Ok(())
        } else {
            Err(s.to_string())
        }
    });
    assert_eq!(status(&alice, &pod)["phase"], "POD_PHASE_RUNNING");
    assert!(eventually("page without a chain", || http_get(&exposed)).starts_with("paid says hi"));
    let out = sealpod(
        &alice,
        &[
            "deploy",
            pod_manifest.to_str().unwrap(),
            "--provider",
            &provider.addr,
            "--chain-key",
            DEV_KEYS[1],
            "--deposit",
            "1000",
        ],
    );
    assert!(!out.status.success());
    let metrics_addr = std::fs::read_to_string(dir.join("provider/metrics.addr")).unwrap();
    let metrics = raw_get(&metrics_addr, "/metrics");
    assert!(metrics.contains("sealpod_claims_failing 1"), "{metrics}");
    assert!(metrics.contains("sealpod_vouchers_refused_total 4"), "{metrics}");
    // Deleting needs no chain; nothing is left running after the test.
    let out = sealpod(&alice, &["delete", &pod]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    drop(provider);
}
