//! `sealpod demo`: the whole path in one command, on this machine.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use sealpod_publisher::{Publisher, Target};

#[derive(Args)]
pub struct DemoArgs {
    /// Leave the pod and provider running and print how to reach them.
    #[arg(long)]
    keep: bool,
    /// Working directory for the demo (default: a fresh temporary one).
    #[arg(long)]
    dir: Option<PathBuf>,
}

/// Builds an OCI layout holding `binary` (and the libraries it links to) at
/// `/app/<name>`, with `entrypoint` as its default command. Returns the digest.
pub fn image_from_binary(binary: &Path, out: &Path, tag: &str, cmd: Vec<String>) -> Result<String> {
    let files = sealpod_oci::binary_rootfs_files(binary)
        .with_context(|| format!("collecting {} and its libraries", binary.display()))?;
    let name = binary.file_name().context("binary has no file name")?.to_string_lossy().into_owned();
    let mut builder = sealpod_oci::ImageBuilder::new().compression(sealpod_oci::Compression::None);
    for (host, in_image) in files {
        // The binary itself goes to /app; its libraries keep their paths.
        let at = if host == binary { PathBuf::from("/app").join(&name) } else { in_image };
        builder = builder.file(host, at);
    }
    let mut entrypoint = vec![format!("/app/{name}")];
    entrypoint.extend(cmd);
    let built = builder.entrypoint(entrypoint).write_layout(out, tag)?;
    Ok(built.manifest_digest)
}

struct ProviderProcess {
    child: Child,
}

impl Drop for ProviderProcess {
    fn drop(&mut self) {
        let _ = nix_kill(self.child.id(), 15);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn nix_kill(pid: u32, sig: i32) -> std::io::Result<()> {
    let status = Command::new("kill").arg(format!("-{sig}")).arg(pid.to_string()).status()?;
    if status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other("kill failed"))
    }
}

pub fn run(args: DemoArgs, json: bool) -> Result<()> {
    let mut tmp = None;
    let dir = match &args.dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            d.clone()
        }
        None => {
            let t = tempfile::Builder::new().prefix("sealpod-demo-").tempdir()?;
            let path = t.path().to_owned();
            tmp = Some(t);
            path
        }
    };
    let exe = std::env::current_exe()?;
    let say = |s: &str| {
        if !json {
            println!("{s}");
        }
    };

    say("1. building a sample image from this binary …");
    let image_dir = dir.join("images/sample");
    let digest = image_from_binary(&exe, &image_dir, "demo", vec!["sample".into()])?;
    say(&format!("   oci:{}:demo  {digest}", image_dir.display()));

    say("2. starting two artifact nodes (the publisher's and the provider's) and a provider …");
    let vkey = {
        let out = Command::new(&exe)
            .args(["log", "keygen", "--name", "sealpod.demo/images", "--out"])
            .arg(dir.join("log.key"))
            .output()
            .context("making the demo's log key")?;
        if !out.status.success() {
            bail!("log keygen: {}", String::from_utf8_lossy(&out.stderr));
        }
        String::from_utf8(out.stdout)?.trim().to_owned()
    };
    let log_key_arg = format!("--log-signing-key={}", dir.join("log.key").display());
    let (publisher_node, publisher_ready) = start_node(&exe, &dir, "publisher-node", &[&log_key_arg])?;
    let bootstrap = publisher_ready["addresses"][0].as_str().context("publisher node address")?.to_owned();
    let vkey_arg = format!("--log-key={vkey}");
    let bootstrap_arg = format!("--bootstrap={bootstrap}");
    let (provider_node, provider_node_ready) = start_node(&exe, &dir, "provider-node", &[&vkey_arg, &bootstrap_arg])?;
    let publisher_registry = publisher_ready["registry"].as_str().context("registry")?.to_owned();
    let provider_registry = provider_node_ready["registry"].as_str().context("registry")?.to_owned();
    say(&format!("   publisher's node {publisher_registry}, provider's node {provider_registry} (libp2p, DHT)"));
    let market = crate::market::demo_chain(&dir)?;
    match &market {
        Some(m) => say(&format!(
            "   a local chain (anvil {}): payment contract {} and test token {} deployed",
            m.anvil.url, m.chain.contract, m.chain.token
        )),
        None => say("   no local chain (`npm ci` installs anvil): the payment channel part is skipped, pods are free"),
    }
    let market_args: Vec<String> = match &market {
        Some(m) => vec!["--market".into(), m.file.display().to_string()],
        None => vec![],
    };
    let ready = dir.join("provider.ready");
    let provider = spawn_ready(
        Command::new(&exe)
            .args(["provider", "run", "--listen", "/ip4/127.0.0.1/tcp/0", "--expose-ip", "127.0.0.1"])
            .args(&market_args)
            // No TEE on a demo machine: the dev attestor signs with the node key.
            .args(["--attestor", "insecure-dev"])
            .args(["--artifact-node", &provider_registry])
            .arg("--state-dir")
            .arg(dir.join("provider"))
            .arg("--image-root")
            .arg(dir.join("images"))
            .arg("--ready-file")
            .arg(&ready),
        &ready,
        &dir.join("provider.log"),
        "provider",
    )?;
    let info: sealpod_provider::Ready = serde_json::from_slice(&std::fs::read(&ready)?)?;
    let addr = info.addresses.first().context("provider reported no address")?.clone();
    say(&format!("   provider {addr}"));

    say("3. encrypting the image for a fresh key, publishing it by digest, then deploying a two-container pod");
    say("   with a secret volume: the provider is attested first, then gets the image's digest and key …");
    let secret: [u8; 16] = rand::random();
    let secret = format!("demo-token-{}\n", hex::encode(secret));
    std::fs::write(dir.join("greeting.secret"), &secret)?;
    let manifest = dir.join("demo-pod.yaml");
    let image_ref = format!("oci:{}:demo", image_dir.display());
    std::fs::write(
        &manifest,
        format!(
            r#"containers:
  - name: web
    image: {image_ref}
    args: [serve, --port, "8080", --text, "hello from a sealed pod"]
    ports:
      - port: 0
        targetPort: 8080
    resources: {{cpu: 250m, memory: 64Mi}}
    volumeMounts:
      - {{name: greeting, mountPath: /run/secrets/greeting}}
  - name: client
    image: {image_ref}
    args: [fetch, --url, "http://127.0.0.1:8080/", --interval-ms, "500"]
    resources: {{cpu: 100m, memory: 32Mi}}
volumes:
  - name: greeting
    secret: {{file: greeting.secret}}
"#
        ),
    )?;
    let mut pod = sealpod_manifest::load_pod_manifest(&manifest)?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let result = rt.block_on(async {
        let home = dir.join("publisher");
        let every: Vec<usize> = (0..pod.containers.len()).collect();
        let sealed = crate::private::make_private(&mut pod, &every, &home, &dir, &publisher_registry).await?;
        let image = sealed.first().context("the demo pod has an image")?.clone();
        say(&format!("   image {} encrypted -> {}", image.plain_digest, image.digest));
        let publisher = Publisher::open(&home, vec![], false).await?;
        let t0 = Instant::now();
        // The demo opts in to the dev attestor, and says so: on a real
        // provider the policy would demand TDX or SNP evidence.
        let options = sealpod_publisher::AttestOptions { allow_insecure_dev: true, ..Default::default() };
        let plan = match &market {
            Some(m) => {
                crate::market::demo_show_offer(&publisher, &addr, &pod, json).await?;
                Some(m.plan())
            }
            None => None,
        };
        let (pod_ref, status, attested) =
            publisher.deploy_paid(pod, "demo", Target::Address(addr.parse()?), None, &options, plan.as_ref()).await?;
        let deploy_time = t0.elapsed();
        let attested = attested.context("a pod with a secret must have been attested")?;
        if !json {
            println!("   attested provider {}: kind {}", attested.provider, attested.claims.kind);
            println!("   ACCEPTED ONLY BECAUSE THE DEMO PASSES --allow-insecure-dev: this machine has no TEE,");
            println!("   so the evidence is a signature by the provider's node key, bound to a fresh nonce;");
            println!("   the secret and the image key went over that same connection, kept off the provider's disk");
            print!("{}", crate::output::status_text(&status));
            println!("   deployed in {:.0} ms", deploy_time.as_secs_f64() * 1000.0);
        }
        // What the provider's node fetched over libp2p: the encrypted image.
        let fetched = dir.join("provider-node/store/blobs/sha256").join(image.digest.trim_start_matches("sha256:"));
        if !fetched.exists() {
            bail!("the provider's node does not hold {}", image.digest);
        }
        say(&format!("   the provider fetched {} (ciphertext) through its artifact node;", image.digest));
        say("   the nodes hold only ciphertext; the key went to the provider alone, after it attested");
        let checked = async {
            let checked = check_pod(&publisher, &pod_ref.pod_id, &status, json).await?;
            say("6. the web container reads its secret volume (a read-only tmpfs file):");
            let read_back = read_secret(&publisher, &pod_ref.pod_id).await?;
            if read_back != secret {
                bail!("the secret read in the pod differs from the one sent");
            }
            say(&format!("   /run/secrets/greeting: {} bytes, identical to what the publisher sent", read_back.len()));
            Ok(checked)
        }
        .await;
        let paid = match (&market, &checked) {
            (Some(m), Ok(_)) => Some(crate::market::demo_pay(&publisher, &pod_ref.pod_id, m, json).await?),
            _ => None,
        };
        if checked.is_err() || !args.keep {
            say("7. deleting the pod …");
            publisher.delete(&pod_ref.pod_id).await?;
            say("   deleted: no process, mount, network namespace or cgroup left");
        }
        let settled = match (&market, &pod_ref.payment, checked.is_ok() && !args.keep) {
            (Some(m), Some(p), true) => {
                let vouchered = paid
                    .as_ref()
                    .and_then(|v| v["vouchered"].as_str())
                    .map(sealpod_market::price::parse_amount)
                    .transpose()?
                    .unwrap_or(p.vouchered);
                Some(crate::market::demo_settle(m, p, vouchered, json).await?)
            }
            _ => None,
        };
        let (url, page, client_log) = checked?;
        if args.keep {
            say(&format!(
                "kept: pod {} at {url}; provider state in {} (SEALPOD_HOME={})",
                pod_ref.pod_id,
                dir.display(),
                dir.join("publisher").display()
            ));
        }
        Ok::<_, anyhow::Error>(serde_json::json!({
            "pod": pod_ref.pod_id,
            "url": url,
            "page": page,
            "deploy_ms": deploy_time.as_secs_f64() * 1000.0,
            "client_log": client_log,
            "attestation": attested,
            "private_image": image,
            "payment": paid,
            "settlement": settled,
        }))
    });
    if args.keep {
        if let Some(m) = market {
            std::mem::forget(m);
        }
        std::mem::forget(provider);
        std::mem::forget(provider_node);
        std::mem::forget(publisher_node);
        if let Some(t) = tmp {
            let _ = t.keep();
        }
    } else {
        drop(provider);
        drop(provider_node);
        drop(publisher_node);
    }
    let value = result?;
    if json {
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        println!("demo complete");
    }
    std::io::stdout().flush()?;
    Ok(())
}

/// Starts `sealpod node run` in `dir/name` and waits for its ready file.
fn start_node(exe: &Path, dir: &Path, name: &str, extra: &[&str]) -> Result<(ProviderProcess, serde_json::Value)> {
    let ready = dir.join(format!("{name}.ready"));
    let process = spawn_ready(
        Command::new(exe)
            .args(["node", "run", "--registry", "127.0.0.1:0", "--listen", "/ip4/127.0.0.1/tcp/0", "--dir"])
            .arg(dir.join(name))
            .arg("--ready-file")
            .arg(&ready)
            .args(["--sync-period-ms", "500"])
            .args(extra),
        &ready,
        &dir.join(format!("{name}.log")),
        name,
    )?;
    Ok((process, serde_json::from_slice(&std::fs::read(&ready)?)?))
}

/// Spawns `command` with its output in `log` and waits until it writes `ready`.
fn spawn_ready(command: &mut Command, ready: &Path, log: &Path, what: &str) -> Result<ProviderProcess> {
    let file = std::fs::File::create(log)?;
    let child = command
        .stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file)
        .spawn()
        .with_context(|| format!("starting the {what}"))?;
    let process = ProviderProcess { child };
    let started = Instant::now();
    while !ready.exists() {
        if started.elapsed() > Duration::from_secs(30) {
            bail!("the {what} did not start; see {}", log.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(process)
}

fn multiaddr_to_socket(addr: &str) -> Result<std::net::SocketAddr> {
    let parts: Vec<&str> = addr.split('/').collect();
    match parts.as_slice() {
        ["", "ip4", ip, "tcp", port] | ["", "ip6", ip, "tcp", port] => {
            Ok(format!("{}:{port}", if addr.starts_with("/ip6") { format!("[{ip}]") } else { ip.to_string() })
                .parse()?)
        }
        _ => bail!("unexpected exposed address {addr}"),
    }
}

async fn retry_get(url: &str) -> Result<String> {
    let url = url.to_owned();
    let mut last = None;
    for _ in 0..50 {
        let u = url.clone();
        match tokio::task::spawn_blocking(move || crate::sample::get(&u)).await? {
            Ok(body) => return Ok(body),
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("{url} did not answer: {}", last.map(|e| e.to_string()).unwrap_or_default())
}

/// Fetches a page through the pod's exposed port and reads the client's log.
async fn check_pod(
    publisher: &Publisher,
    pod_id: &str,
    status: &sealpod_proto::PodStatus,
    json: bool,
) -> Result<(String, String, String)> {
    let say = |s: &str| {
        if !json {
            println!("{s}");
        }
    };
    let exposed = status.addresses.first().context("the pod exposes no port")?;
    let socket = multiaddr_to_socket(&exposed.multiaddr)?;
    say("4. fetching a page through the pod's exposed port …");
    let url = format!("http://{socket}/");
    let page = retry_get(&url).await?;
    say(&format!("   GET {url} -> {}", page.trim_end()));
    say("5. the client container reached the server over the pod's shared localhost:");
    let mut client_log = String::new();
    for _ in 0..50 {
        let chunk = publisher.logs(pod_id, "client", 0).await?;
        client_log = String::from_utf8_lossy(&chunk.data).into_owned();
        if client_log.contains("fetched:") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for line in client_log.lines().take(3) {
        say(&format!("   client | {line}"));
    }
    if !client_log.contains("fetched:") {
        bail!("the client container never reached the server; its log: {client_log}");
    }
    Ok((url, page, client_log))
}

/// Reads the demo's secret inside the web container through exec.
async fn read_secret(publisher: &Publisher, pod_id: &str) -> Result<String> {
    let argv = ["/app/sealpod", "sample", "cat", "/run/secrets/greeting"].map(String::from).to_vec();
    let mut out = Vec::new();
    let read = crate::follow_exec(publisher, pod_id, "web", argv, |data| {
        out.extend_from_slice(data);
        Ok(())
    });
    let (_, code) = tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .context("reading the secret in the pod did not finish")??;
    if code != 0 {
        bail!("reading the secret in the pod failed ({code}): {}", String::from_utf8_lossy(&out));
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}
