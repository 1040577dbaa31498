//! Apocryph's HTTP apps: pods that claim hostnames, reached through the
//! provider's one HTTP entry point by `Host` header. Real provider, real
//! pods, real sockets; needs root, skipped otherwise.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;

/// An Apocryph manifest (as written: no container name, `port` + `host`)
/// serving `text` under `host`.
fn http_pod(dir: &Path, file: &str, host: &str, text: &str) -> PathBuf {
    http_pod_with(dir, file, host, text, "")
}

/// [`http_pod`] with more top-level lines.
fn http_pod_with(dir: &Path, file: &str, host: &str, text: &str, extra: &str) -> PathBuf {
    let image = format!("oci:{}:v1", dir.join("images/sample").display());
    let path = dir.join(file);
    std::fs::write(
        &path,
        format!(
            r#"type: "trustedpods"
version: "1.0"
containers:
- image: {image}
  args: serve --port 8080 --text "{text}"
  port: 8080
  host: {host}
  resources:
    cpu: 100m
    memory: 64Mi
{extra}"#
        ),
    )
    .unwrap();
    path
}

/// Sends `request` (a whole HTTP/1.1 request) and reads until the server closes.
fn exchange(entry: &str, request: &str) -> Result<String, String> {
    let mut s = TcpStream::connect(entry).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request.as_bytes()).map_err(|e| e.to_string())?;
    let mut response = String::new();
    s.read_to_string(&mut response).map_err(|e| e.to_string())?;
    Ok(response)
}

fn get(entry: &str, host: &str, path: &str) -> Result<String, String> {
    let response = exchange(entry, &format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"))?;
    if !response.starts_with("HTTP/1.1 200") {
        return Err(response);
    }
    Ok(response)
}

fn deploy(home: &Path, manifest: &Path, provider: &Provider) -> serde_json::Value {
    ok_json(sealpod(home, &["--json", "deploy", manifest.to_str().unwrap(), "--provider", &provider.addr]))
}

#[test]
fn hostnames_route_to_the_pods_that_claimed_them_and_are_claimed_once() {
    let Some((tmp, provider, home)) = fixture_with("alice", &["--http-host-suffix", "example.test"]) else { return };
    let dir = tmp.path();
    let entry = std::fs::read_to_string(dir.join("provider/http.addr")).unwrap();

    let a = deploy(&home, &http_pod(dir, "a.yaml", "Alpha.Example.Test", "alpha"), &provider);
    let b = deploy(&home, &http_pod(dir, "b.yaml", "beta.example.test", "beta"), &provider);
    let a_id = a["status"]["podId"].as_str().unwrap().to_owned();
    // The status names the route: the entry point and the hostname.
    let http = a["status"]["addresses"].as_array().unwrap().iter().find(|x| x["httpHost"].is_string()).cloned();
    let http = http.unwrap_or_else(|| panic!("no HTTP address in {a}"));
    assert_eq!(http["httpHost"], "alpha.example.test");
    assert_eq!(socket_of(http["multiaddr"].as_str().unwrap()), entry);
    assert_eq!(http["containerName"], "sample", "named after its image");

    let page = eventually("alpha through the entry point", || get(&entry, "alpha.example.test", "/"));
    assert!(page.contains("alpha (request"), "{page}");
    // Host headers are case-insensitive and may carry a port.
    let page = eventually("beta", || get(&entry, "BETA.example.test:8000", "/"));
    assert!(page.contains("beta (request"), "{page}");
    // curl, as a browser would, names the host in the URL (resolved to the
    // entry point) and keeps its connection alive across requests.
    if let Ok(out) = std::process::Command::new("curl")
        .args(["-sS", "--fail", "--resolve"])
        .arg(format!("alpha.example.test:{}:127.0.0.1", entry.rsplit(':').next().unwrap()))
        .arg(format!("http://alpha.example.test:{}/", entry.rsplit(':').next().unwrap()))
        .arg(format!("http://alpha.example.test:{}/stream?n=3", entry.rsplit(':').next().unwrap()))
        .output()
    {
        let body = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "curl: {}", String::from_utf8_lossy(&out.stderr));
        assert!(body.contains("alpha (request") && body.contains("chunk 2"), "{body}");
    }
    let missing = exchange(&entry, "GET / HTTP/1.1\r\nHost: gamma.example.test\r\nConnection: close\r\n\r\n").unwrap();
    assert!(missing.starts_with("HTTP/1.1 404") && missing.contains("no pod serves gamma.example.test"), "{missing}");

    // A taken hostname is refused, by name, and so is one outside the suffixes.
    let out = sealpod(
        &home,
        &[
            "deploy",
            http_pod(dir, "c.yaml", "alpha.example.test", "thief").to_str().unwrap(),
            "--provider",
            &provider.addr,
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("alpha.example.test is already claimed"), "{err}");
    let out = sealpod(
        &home,
        &["deploy", http_pod(dir, "d.yaml", "evil.example.com", "x").to_str().unwrap(), "--provider", &provider.addr],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("serves only hostnames ending in example.test"), "{err}");
    assert!(get(&entry, "alpha.example.test", "/").unwrap().contains("alpha"), "the owner still serves");

    // Streaming responses arrive as they are written, and upgrades become a pipe.
    let stream = get(&entry, "beta.example.test", "/stream?n=5").unwrap();
    for i in 0..5 {
        assert!(stream.contains(&format!("chunk {i}")), "{stream}");
    }
    let mut ws = TcpStream::connect(&entry).unwrap();
    ws.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(ws, "GET /chat HTTP/1.1\r\nHost: beta.example.test\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        ws.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    for message in ["ping", "and again"] {
        ws.write_all(message.as_bytes()).unwrap();
        let mut echoed = vec![0u8; message.len()];
        ws.read_exact(&mut echoed).unwrap();
        assert_eq!(echoed, message.as_bytes());
    }
    drop(ws);

    // The routes survive a provider restart (the pods never stopped).
    let port = provider.port();
    drop(provider);
    let provider = Provider::start_with(dir, port, &["--http-host-suffix", "example.test"]);
    let entry = std::fs::read_to_string(dir.join("provider/http.addr")).unwrap();
    assert!(eventually("alpha after restart", || get(&entry, "alpha.example.test", "/")).contains("alpha"));

    // Deleting a pod frees its hostname for another.
    let out = sealpod(&home, &["delete", &a_id]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let gone = exchange(&entry, "GET / HTTP/1.1\r\nHost: alpha.example.test\r\nConnection: close\r\n\r\n").unwrap();
    assert!(gone.starts_with("HTTP/1.1 404"), "{gone}");
    let c = deploy(&home, &http_pod(dir, "c.yaml", "alpha.example.test", "new owner"), &provider);
    assert!(eventually("the new owner", || get(&entry, "alpha.example.test", "/")).contains("new owner"));
    for pod in [&b, &c] {
        let out = sealpod(&home, &["delete", pod["status"]["podId"].as_str().unwrap()]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
}

#[test]
fn hostile_clients_of_the_entry_point_are_cut_off_and_others_served() {
    let Some((tmp, provider, home)) = fixture("alice") else { return };
    let dir = tmp.path();
    let entry = std::fs::read_to_string(dir.join("provider/http.addr")).unwrap();
    let pod = deploy(&home, &http_pod(dir, "a.yaml", "app.test", "steady"), &provider);
    eventually("app", || get(&entry, "app.test", "/"));

    // Clients that never finish their request head, and one that sends an
    // endless one: neither holds up a normal client.
    let mut slow: Vec<TcpStream> = (0..50)
        .map(|_| {
            let mut s = TcpStream::connect(&entry).unwrap();
            s.write_all(b"GET / HTTP/1.1\r\nHost: app.test\r\nX-Slow: ").unwrap();
            s
        })
        .collect();
    let mut huge = TcpStream::connect(&entry).unwrap();
    huge.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    let header = format!("GET / HTTP/1.1\r\nHost: app.test\r\nX-Big: {}\r\n\r\n", "a".repeat(200 * 1024));
    let _ = huge.write_all(header.as_bytes());
    let mut answer = String::new();
    let _ = huge.read_to_string(&mut answer);
    assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 431"), "an oversized head is refused: {answer:.100}");
    for _ in 0..20 {
        assert!(get(&entry, "app.test", "/").unwrap().contains("steady"));
    }
    for s in &mut slow {
        let _ = s.write_all(b"x");
    }
    drop(slow);
    let out = sealpod(&home, &["delete", pod["status"]["podId"].as_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// Processes running in cgroups whose path contains `fragment`.
fn processes_in(fragment: &str) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|p| {
            p.file_name().to_string_lossy().parse::<u32>().is_ok()
                && std::fs::read_to_string(p.path().join("cgroup")).is_ok_and(|cg| cg.contains(fragment))
        })
        .count()
}

/// Processes running in the pod's cgroup.
fn pod_processes(pod_id: &str) -> usize {
    processes_in(&format!("/sealpod/{pod_id}/"))
}

fn phase(home: &Path, pod_id: &str) -> String {
    ok_json(sealpod(home, &["--json", "status", pod_id]))["phase"].as_str().unwrap_or_default().to_owned()
}

#[test]
fn a_pod_with_min_zero_runs_only_while_it_is_used() {
    let Some((tmp, provider, home)) = fixture_with("alice", &["--scale-down-after", "1"]) else { return };
    let dir = tmp.path();
    let entry = std::fs::read_to_string(dir.join("provider/http.addr")).unwrap();
    let manifest = http_pod_with(dir, "z.yaml", "zero.test", "awake", "replicas:\n  min: 0\n  max: 1\n");
    let deployed = deploy(&home, &manifest, &provider);
    let pod = deployed["status"]["podId"].as_str().unwrap().to_owned();
    assert_eq!(deployed["status"]["phase"], "POD_PHASE_SCALED_TO_ZERO", "{deployed}");
    assert_eq!(pod_processes(&pod), 0, "no container runs before the first request");

    // The first request wakes it and is answered; the start is what it waits for.
    let t = std::time::Instant::now();
    let page = get(&entry, "zero.test", "/").unwrap();
    eprintln!("cold start through the entry point: {:.1} ms", ms(t.elapsed()));
    assert!(page.contains("awake (request 1)"), "{page}");
    assert_eq!(phase(&home, &pod), "POD_PHASE_RUNNING");
    assert!(pod_processes(&pod) > 0);
    assert!(get(&entry, "zero.test", "/").unwrap().contains("awake (request 2)"));

    // Idle for a second (and the stop's grace): it stops again, and the next
    // request starts a fresh process.
    eventually("scaled to zero again", || match phase(&home, &pod).as_str() {
        "POD_PHASE_SCALED_TO_ZERO" if pod_processes(&pod) == 0 => Ok(()),
        other => Err(format!("{other}, {} processes", pod_processes(&pod))),
    });
    let page = get(&entry, "zero.test", "/").unwrap();
    assert!(page.contains("awake (request 1)"), "a fresh process answered: {page}");
    // A connection held open keeps it awake past the idle period.
    let mut held = TcpStream::connect(&entry).unwrap();
    write!(held, "GET /stream?n=30 HTTP/1.1\r\nHost: zero.test\r\n\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(phase(&home, &pod), "POD_PHASE_RUNNING", "an open connection counts as use");
    drop(held);
    let out = sealpod(&home, &["delete", &pod]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

fn exec(home: &Path, pod_id: &str, argv: &[&str]) -> (bool, String) {
    let mut args = vec!["exec", pod_id, "--"];
    args.extend_from_slice(argv);
    let out = sealpod(home, &args);
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn a_persistent_volume_keeps_its_data_through_restarts_and_scaling_to_zero_within_its_size() {
    let Some((tmp, provider, home)) = fixture_with("alice", &["--scale-down-after", "1"]) else { return };
    let dir = tmp.path();
    let entry = std::fs::read_to_string(dir.join("provider/http.addr")).unwrap();
    let extra = "  volumes:\n  - {name: data, mountPath: /data}\nreplicas: {min: 0, max: 1}\nvolumes:\n- name: data\n  type: volume\n  resources: {storage: 32Mi}\n";
    let manifest = http_pod_with(dir, "p.yaml", "keep.test", "keeper", "");
    // The volume mount goes inside the container, the rest at the top.
    let text = std::fs::read_to_string(&manifest).unwrap().replace(
        "  resources:\n    cpu",
        &format!("{}  resources:\n    cpu", &extra[..extra.find("replicas").unwrap()]),
    ) + &extra[extra.find("replicas").unwrap()..];
    std::fs::write(&manifest, text).unwrap();
    let pod = deploy(&home, &manifest, &provider)["status"]["podId"].as_str().unwrap().to_owned();

    get(&entry, "keep.test", "/").unwrap();
    let (ok, out) = exec(&home, &pod, &["/app/sealpod-sample", "fill", "/data/kept", "--max-bytes", "3000000"]);
    assert!(ok, "{out}");
    // Its size holds: a write past 32 MiB fails inside the pod.
    let (ok, out) = exec(&home, &pod, &["/app/sealpod-sample", "fill", "/data/big", "--exit"]);
    assert!(!ok && out.contains("No space left on device"), "{out}");
    let (ok, out) = exec(&home, &pod, &["/app/sealpod-sample", "fill", "/data/big", "--max-bytes", "1"]);
    assert!(ok, "freed again: {out}");

    // Scaled to zero and woken: the data is still there.
    eventually("scaled to zero", || match phase(&home, &pod).as_str() {
        "POD_PHASE_SCALED_TO_ZERO" => Ok(()),
        other => Err(other.to_owned()),
    });
    get(&entry, "keep.test", "/").unwrap();
    let image = dir.join("provider/pods").join(&pod).join("persistent/data.img");
    assert!(image.exists(), "the volume's image lives outside the pod's disk");
    let (ok, out) = exec(&home, &pod, &["/app/sealpod-sample", "cat", "/data/kept"]);
    assert!(ok && out.len() >= 3_000_000, "the data survived scaling to zero: {} bytes", out.len());
    let out = sealpod(&home, &["delete", &pod]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!dir.join("provider/pods").join(&pod).exists(), "deleted with the pod");
}

/// An HTTP pod with `GREETING` in its environment and a persistent volume.
fn greeting_pod(dir: &Path, file: &str, host: &str, greeting: &str, image: &str) -> PathBuf {
    let path = dir.join(file);
    std::fs::write(
        &path,
        format!(
            r#"type: "trustedpods"
version: "1.0"
containers:
- image: {image}
  args: serve --port 8080 --text "{greeting}"
  port: 8080
  host: {host}
  env:
    GREETING: {greeting}
  volumes:
  - {{name: data, mountPath: /data}}
  resources:
    cpu: 100m
    memory: 64Mi
volumes:
- name: data
  type: volume
  resources: {{storage: 16Mi}}
"#
        ),
    )
    .unwrap();
    path
}

#[test]
fn an_update_changes_the_containers_without_a_failed_request_and_keeps_the_data() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};

    let Some((tmp, provider, home)) = fixture("alice") else { return };
    let dir = tmp.path();
    let entry = std::fs::read_to_string(dir.join("provider/http.addr")).unwrap();
    let image = format!("oci:{}:v1", dir.join("images/sample").display());
    let first = deploy(&home, &greeting_pod(dir, "one.yaml", "update.test", "one", &image), &provider);
    let pod = first["status"]["podId"].as_str().unwrap().to_owned();
    assert!(eventually("first", || get(&entry, "update.test", "/env/GREETING")).ends_with("one\n"));
    let (ok, out) = exec(&home, &pod, &["/app/sealpod-sample", "fill", "/data/kept", "--max-bytes", "100000"]);
    assert!(ok, "{out}");

    // A client keeps asking through the entry point while the pod is updated.
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Vec::<Result<String, String>>::new()));
    let poller = {
        let (stop, seen, entry) = (stop.clone(), seen.clone(), entry.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let answer = get(&entry, "update.test", "/env/GREETING");
                seen.lock().unwrap().push(answer.map(|r| r.rsplit("\r\n\r\n").next().unwrap_or("").trim().to_owned()));
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    std::thread::sleep(Duration::from_millis(200));
    let t = std::time::Instant::now();
    let updated = ok_json(sealpod(
        &home,
        &["--json", "update", &pod, greeting_pod(dir, "two.yaml", "update.test", "two", &image).to_str().unwrap()],
    ));
    eprintln!("update took {:.1} ms", ms(t.elapsed()));
    assert_eq!(updated["status"]["podId"], pod.as_str(), "{updated}");
    assert_eq!(updated["status"]["phase"], "POD_PHASE_RUNNING", "{updated}");
    eventually("the new environment", || {
        let last = seen.lock().unwrap().last().cloned();
        match last {
            Some(Ok(v)) if v == "two" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    poller.join().unwrap();
    let seen = seen.lock().unwrap().clone();
    let failed: Vec<_> = seen.iter().filter(|r| r.is_err()).collect();
    assert!(failed.is_empty(), "{} of {} requests failed during the update: {:?}", failed.len(), seen.len(), failed);
    let values: Vec<&str> = seen.iter().map(|r| r.as_deref().unwrap()).collect();
    let switch = values.iter().position(|v| *v == "two").unwrap();
    assert!(values[..switch].iter().all(|v| *v == "one") && values[switch..].iter().all(|v| *v == "two"), "{values:?}");
    eprintln!("{} requests during the update, none failed", seen.len());

    // The persistent volume came along.
    let (ok, out) = exec(&home, &pod, &["/app/sealpod-sample", "cat", "/data/kept"]);
    assert!(ok && out.len() >= 100_000, "the data survived the update: {} bytes", out.len());

    // Refused updates leave the pod as it was: an image that is not there,
    // a hostname another pod holds, a persistent volume of another size.
    let other = deploy(&home, &http_pod(dir, "other.yaml", "other.test", "other"), &provider);
    let refused = [
        (
            greeting_pod(dir, "bad.yaml", "update.test", "three", &format!("oci:{}:v1", dir.join("nope").display())),
            "nope",
        ),
        (greeting_pod(dir, "taken.yaml", "other.test", "three", &image), "other.test is already claimed"),
        (
            {
                let p = greeting_pod(dir, "resize.yaml", "update.test", "three", &image);
                let text = std::fs::read_to_string(&p).unwrap().replace("16Mi", "32Mi");
                std::fs::write(&p, text).unwrap();
                p
            },
            "cannot be resized",
        ),
    ];
    for (manifest, why) in refused {
        let out = sealpod(&home, &["update", &pod, manifest.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(why), "{}: {err}", manifest.display());
        assert!(get(&entry, "update.test", "/env/GREETING").unwrap().ends_with("two\n"), "still the same pod");
    }
    assert!(get(&entry, "other.test", "/").unwrap().contains("other"));

    // Only the owner updates a pod.
    let bob = dir.join("bob");
    std::fs::create_dir_all(&bob).unwrap();
    std::fs::copy(home.join("pods.json"), bob.join("pods.json")).unwrap();
    let out = sealpod(&bob, &["update", &pod, dir.join("one.yaml").to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("belongs to another publisher"), "{err}");
    assert!(get(&entry, "update.test", "/env/GREETING").unwrap().ends_with("two\n"));

    for id in [pod.as_str(), other["status"]["podId"].as_str().unwrap()] {
        let out = sealpod(&home, &["delete", id]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
}

/// Which copy answered: its hostname (`<pod id>` or `<pod id>-<i>`).
fn copy_name(entry: &str, host: &str) -> String {
    let page = get(entry, host, "/hostname").unwrap();
    page.rsplit("\r\n\r\n").next().unwrap_or("").trim().to_owned()
}

/// Processes in the cgroups of any copy of the pod.
fn copy_processes(pod_id: &str) -> usize {
    processes_in(&format!("/sealpod/{pod_id}"))
}

#[test]
fn a_pod_with_several_replicas_runs_that_many_copies_and_the_entry_point_spreads_requests() {
    let Some((tmp, provider, home)) = fixture_with("alice", &["--scale-down-after", "1"]) else { return };
    let dir = tmp.path();
    let entry = std::fs::read_to_string(dir.join("provider/http.addr")).unwrap();

    // replicas 3: three copies run all the time, and idle ones take turns.
    let three = deploy(&home, &http_pod_with(dir, "three.yaml", "three.test", "x", "replicas: 3\n"), &provider);
    let pod = three["status"]["podId"].as_str().unwrap().to_owned();
    assert_eq!(three["status"]["replicas"], 3, "{three}");
    eventually("three copies running", || {
        match ok_json(sealpod(&home, &["--json", "status", &pod]))["replicasRunning"].as_u64() {
            Some(3) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    let names: std::collections::BTreeSet<String> = (0..12).map(|_| copy_name(&entry, "three.test")).collect();
    let expected: std::collections::BTreeSet<String> =
        [pod.clone(), format!("{pod}-1"), format!("{pod}-2")].into_iter().collect();
    assert_eq!(names, expected, "requests went to every copy");
    let text = String::from_utf8_lossy(&sealpod(&home, &["status", &pod]).stdout).into_owned();
    assert!(text.contains("replicas: 3 (3 running)"), "{text}");

    // {min: 0, max: 3}: nothing runs idle; one client is served by one copy;
    // requests piling up wake the next copies.
    let scaling = deploy(
        &home,
        &http_pod_with(dir, "scaling.yaml", "scaling.test", "y", "replicas: {min: 0, max: 3}\n"),
        &provider,
    );
    let scaling = scaling["status"]["podId"].as_str().unwrap().to_owned();
    assert_eq!(copy_processes(&scaling), 0, "no copy runs before the first request");
    for _ in 0..5 {
        assert_eq!(copy_name(&entry, "scaling.test"), scaling, "a sequential client keeps to the first copy");
    }
    let held: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut s = TcpStream::connect(&entry).unwrap();
            write!(s, "GET /stream?n=20 HTTP/1.1\r\nHost: scaling.test\r\n\r\n").unwrap();
            std::thread::sleep(Duration::from_millis(300));
            s
        })
        .collect();
    assert_eq!(copy_name(&entry, "scaling.test"), format!("{scaling}-2"), "two busy copies: the third woke");
    drop(held);
    eventually("every copy scaled to zero", || match copy_processes(&scaling) {
        0 => Ok(()),
        n => Err(format!("{n} processes")),
    });

    // A persistent volume cannot be shared by copies: refused, by name.
    let manifest = http_pod_with(
        dir,
        "pv.yaml",
        "pv.test",
        "z",
        "replicas: 2\nvolumes:\n- name: data\n  type: volume\n  resources: {storage: 8Mi}\n",
    );
    let text = std::fs::read_to_string(&manifest)
        .unwrap()
        .replace("  resources:\n    cpu", "  volumes:\n  - {name: data, mountPath: /data}\n  resources:\n    cpu");
    std::fs::write(&manifest, text).unwrap();
    let out = sealpod(&home, &["deploy", manifest.to_str().unwrap(), "--provider", &provider.addr]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("cannot be shared by 2 copies"), "{err}");

    // Deleting the pod removes every copy.
    for id in [&pod, &scaling] {
        let out = sealpod(&home, &["delete", id]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(copy_processes(id), 0);
        assert!(!dir.join("provider/pods").join(format!("{id}-1")).exists(), "copy 1 is gone");
    }
}
