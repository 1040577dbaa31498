//! The `sealpod` command: argument parsing and output. The work is done by the
//! library crates; see docs/architecture.md.

mod artifacts;
mod attest;
mod demo;
mod gpu_args;
mod imagecrypt;
mod kube_args;
mod market;
mod nat_args;
mod output;
mod private;
mod relay;
mod sample;
mod trust;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use sealpod_net::Multiaddr;
use sealpod_publisher::{Publisher, Target};

#[derive(Parser)]
#[command(name = "sealpod", version, about = "Deploy pods to providers you have never met, over libp2p")]
struct Cli {
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    /// The publisher's directory: identity key and pod records.
    #[arg(long, global = true, env = "SEALPOD_HOME")]
    home: Option<PathBuf>,
    /// Log verbosity (also RUST_LOG).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Where the publisher listens while a command runs, so that a provider
    /// behind NAT reached through a relay can punch a hole to it
    /// (comma-separated multiaddrs, or `none`: no hole punching at all).
    #[arg(long, global = true, value_name = "MULTIADDRS", env = sealpod_publisher::HOLE_PUNCH_LISTEN_ENV,
          default_value = sealpod_publisher::DEFAULT_HOLE_PUNCH_LISTEN)]
    hole_punch_listen: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start a provider, deploy a sample web pod to it, fetch a page, clean up.
    Demo(demo::DemoArgs),
    /// Run a provider.
    Provider {
        #[command(subcommand)]
        command: ProviderCommand,
    },
    /// Run an artifact node: a local OCI registry backed by peers.
    Node {
        #[command(subcommand)]
        command: NodeCommand,
    },
    /// Run a relay: a public node that lets providers behind NAT be reached.
    Relay {
        #[command(subcommand)]
        command: relay::RelayCommand,
    },
    /// Inspect and verify the image transparency log through a node.
    Log {
        #[command(subcommand)]
        command: artifacts::LogCommand,
    },
    /// Deploy a pod manifest to a provider.
    Deploy {
        /// The pod manifest (YAML or JSON).
        manifest: PathBuf,
        /// A label for the pod (default: the manifest's file stem).
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        discovery: Discovery,
        #[command(flatten)]
        payload: trust::PayloadArgs,
        #[command(flatten)]
        attestation: attest::DeployAttestArgs,
        #[command(flatten)]
        private: private::PrivateArgs,
        #[command(flatten)]
        pay: market::DeployPayArgs,
        /// Deploy to the cheapest provider whose offer fits (and that passes
        /// attestation when it is needed); implies discovery.
        #[arg(long)]
        cheapest: bool,
    },
    /// Replace a deployed pod's containers (images, commands, env,
    /// resources) with a new manifest's, keeping its id, hostname, ports and
    /// persistent volumes; HTTP requests wait for the new containers instead
    /// of failing, and a refused update leaves the pod as it was.
    Update {
        /// The pod id.
        pod: String,
        /// The new pod manifest (YAML or JSON).
        manifest: PathBuf,
        #[command(flatten)]
        payload: trust::PayloadArgs,
        #[command(flatten)]
        attestation: attest::DeployAttestArgs,
        #[command(flatten)]
        private: private::PrivateArgs,
    },
    /// List providers that fit a request, cheapest first, with their offers.
    Providers(market::ProvidersArgs),
    /// Pay for a pod: sign a cumulative voucher for its channel.
    Pay(market::PayArgs),
    /// Deploy the payment contract on a dev chain; show this publisher's address.
    Chain {
        #[command(subcommand)]
        command: market::ChainCommand,
    },
    /// Open, inspect, top up, unlock and withdraw payment channels.
    Channel {
        #[command(subcommand)]
        command: market::ChannelCommand,
    },
    /// Attest a provider (a TEE quote bound to its peer key and a fresh
    /// nonce), or verify evidence files offline (`attest verify`).
    Attest(attest::AttestCommand),
    /// Manage the provider's trusted certificates (for payload manifests).
    Keystore {
        #[command(subcommand)]
        command: trust::KeystoreCommand,
    },
    /// Manage the provider's domain whitelist (for outbound access).
    Whitelist {
        #[command(subcommand)]
        command: trust::WhitelistCommand,
    },
    /// Manage the provider's outbound rules.
    Rule {
        #[command(subcommand)]
        command: trust::RuleCommand,
    },
    /// List the pods you deployed.
    Pods {
        /// Ask each provider for the pod's live status.
        #[arg(long)]
        status: bool,
    },
    /// Show a pod's status.
    Status {
        /// The pod id.
        pod: String,
    },
    /// Print a container's output.
    Logs {
        /// The pod id.
        pod: String,
        /// The container (default: the pod's first).
        #[arg(long, short)]
        container: Option<String>,
        /// Keep printing new output until the container exits.
        #[arg(long, short)]
        follow: bool,
    },
    /// Run a command in a running container of a pod and print its output.
    /// Exits with the command's exit code.
    Exec {
        /// The pod id.
        pod: String,
        /// The container (default: the pod's first).
        #[arg(long, short)]
        container: Option<String>,
        /// The command and its arguments.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Delete a pod: its containers, mounts, network and cgroups.
    Delete {
        /// The pod id.
        pod: String,
    },
    /// Work with pod manifests.
    Manifest {
        #[command(subcommand)]
        command: ManifestCommand,
    },
    /// Images: publish them to an artifact node, encrypt and decrypt them, build one from a binary.
    Image {
        #[command(subcommand)]
        command: ImageCommand,
    },
    /// Internal: the per-pod supervisor.
    #[command(hide = true)]
    Shim {
        #[arg(long)]
        pod_dir: PathBuf,
    },
    /// Internal: create and start one container.
    #[command(hide = true)]
    StartContainer {
        #[arg(long)]
        root: PathBuf,
        #[arg(long)]
        id: String,
        #[arg(long)]
        bundle: PathBuf,
        #[arg(long)]
        pid_file: PathBuf,
    },
    /// Internal: run a command in a running container.
    #[command(hide = true)]
    ExecContainer {
        #[arg(long)]
        root: PathBuf,
        #[arg(long)]
        id: String,
        #[arg(long)]
        pid_file: PathBuf,
        #[arg(last = true, required = true)]
        argv: Vec<String>,
    },
    /// Internal: the sample workload of demo images.
    #[command(hide = true)]
    Sample {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

#[derive(Subcommand)]
enum NodeCommand {
    /// Serve the registry API on localhost, keep the image log, and exchange
    /// blobs and log entries with peers.
    Run(artifacts::NodeRunArgs),
}

#[derive(Subcommand)]
enum ProviderCommand {
    /// Serve the Apocryph protocols and run pods.
    Run(Box<ProviderArgs>),
    /// What the provider billed, was vouchered and claimed, per pod and in total.
    Earnings(market::EarningsArgs),
    /// The GPUs the provider sells (CDI specs or discovered NVIDIA devices):
    /// model, memory, device nodes, and which pod holds each.
    Gpus(gpu_args::GpusArgs),
}

#[derive(Args)]
struct ProviderArgs {
    /// libp2p listen addresses.
    #[arg(long, default_values_t = ["/ip4/0.0.0.0/tcp/4001".to_string(), "/ip4/0.0.0.0/udp/4001/quic-v1".to_string()])]
    listen: Vec<String>,
    /// DHT bootstrap peers (multiaddrs ending in /p2p/<peer id>).
    #[arg(long)]
    bootstrap: Vec<String>,
    /// Discover and be discovered on the LAN with mDNS.
    #[arg(long)]
    mdns: bool,
    /// Where pods, images, the database and the node key live.
    #[arg(long, default_value = "/var/lib/sealpod")]
    state_dir: PathBuf,
    /// Host address pods' ports are exposed on. 127.0.0.1 keeps them local;
    /// 0.0.0.0 exposes them to every network the host is on.
    #[arg(long, default_value = "127.0.0.1")]
    expose_ip: std::net::IpAddr,
    /// Directories that local image references may point into (repeatable).
    /// Without one, the provider accepts no local images.
    #[arg(long)]
    image_root: Vec<PathBuf>,
    /// The registry address of the local artifact node (`sealpod node
    /// run`), for pod images on the network (`sealpod://NAME:TAG`).
    #[arg(long, value_name = "HOST:PORT")]
    artifact_node: Option<String>,
    /// CPU to sell (cores, e.g. 2 or 1500m); default: all of the host's.
    #[arg(long)]
    cpu: Option<String>,
    /// Memory to sell (e.g. 4Gi); default: all of the host's.
    #[arg(long)]
    memory: Option<String>,
    /// Write the provider's peer id and addresses here (JSON) once it listens.
    #[arg(long)]
    ready_file: Option<PathBuf>,
    /// Keystore, whitelist and rules for payload manifests (default: STATE_DIR/trust).
    #[arg(long)]
    trust_dir: Option<PathBuf>,
    /// How to answer attestation requests: auto (configfs-tsm when present,
    /// else none), tdx, snp, insecure-dev (node-key signature, no TEE) or none.
    #[arg(long, default_value = "auto", value_parser = ["auto", "tdx", "snp", "insecure-dev", "none"])]
    attestor: String,
    /// The configfs-tsm report directory.
    #[arg(long, default_value = sealpod_attest::tsm::DEFAULT_TSM_ROOT)]
    tsm_root: PathBuf,
    /// Shipped with every quote so publishers verify offline: TDX, a DCAP
    /// collateral JSON file, or a PCCS cache directory of `<FMSPC>.json`
    /// files (read per quote); SNP, the VCEK chain (PEM or DER) when the
    /// host leaves auxblob empty.
    #[arg(long, value_name = "FILE|DIR")]
    attestor_collateral: Option<PathBuf>,
    /// Sell: prices, chain, payment contract, token and payout address
    /// (YAML; see docs/market.md). Without it, pods are free.
    #[arg(long, value_name = "FILE")]
    market: Option<PathBuf>,
    /// Serve /metrics (Prometheus) and /earnings here; the bound address is
    /// written to STATE_DIR/metrics.addr. Loopback only.
    #[arg(long, default_value = "127.0.0.1:0")]
    metrics: std::net::SocketAddr,
    /// Pods one publisher (peer id) may have here at once.
    #[arg(long, default_value_t = sealpod_provider::DEFAULT_PODS_PER_PUBLISHER)]
    max_pods_per_publisher: usize,
    /// Connections one peer may have open at once.
    #[arg(long, default_value_t = sealpod_net::PeerLimits::default().connections_per_peer)]
    max_connections_per_peer: u32,
    /// Requests of one peer handled at once; more are answered "unavailable".
    #[arg(long, default_value_t = sealpod_net::PeerLimits::default().requests_per_peer)]
    max_requests_per_peer: usize,
    /// Inbound connections established at once, all peers together.
    #[arg(long, default_value_t = sealpod_net::PeerLimits::default().incoming_connections)]
    max_incoming_connections: u32,
    /// The HTTP entry point: routes requests by Host header to the pod that
    /// claimed the hostname (a pod's `port` + `host`). Port 0 picks one; the
    /// address bound is written to STATE_DIR/http.addr and shown in pod
    /// status. Use 0.0.0.0:80 to serve the world.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    http_listen: std::net::SocketAddr,
    /// Pods may claim only hostnames ending in this suffix (repeatable; e.g.
    /// apps.example.com allows a.apps.example.com). Default: any hostname.
    #[arg(long, value_name = "SUFFIX")]
    http_host_suffix: Vec<String>,
    /// Seconds a pod with `replicas: {min: 0}` may go without a connection
    /// before its containers stop; the next connection starts them again.
    #[arg(long, value_name = "SECONDS", default_value_t = sealpod_provider::DEFAULT_SCALE_DOWN_AFTER.as_secs_f64())]
    scale_down_after: f64,
    #[command(flatten)]
    kube: kube_args::KubeArgs,
    #[command(flatten)]
    nat: nat_args::NatArgs,
    #[command(flatten)]
    gpus: gpu_args::GpuArgs,
}

#[derive(Args, Clone)]
struct Discovery {
    /// The provider's multiaddr, ending in /p2p/<peer id>. Without it, the
    /// provider is found through the DHT or mDNS.
    #[arg(long)]
    provider: Option<String>,
    /// DHT bootstrap peers.
    #[arg(long)]
    bootstrap: Vec<String>,
    /// Look for providers on the LAN with mDNS.
    #[arg(long)]
    mdns: bool,
}

#[derive(Subcommand)]
enum ManifestCommand {
    /// Validate a pod manifest and print its wire form.
    Check {
        /// The manifest (YAML, or JSON by extension).
        file: PathBuf,
    },
    /// Sign a payload manifest (Golem GAP-4/5) as `openssl dgst -sign` would.
    Sign(trust::SignArgs),
    /// Verify a signed payload manifest against a provider's trust settings.
    Verify {
        #[command(flatten)]
        payload: trust::PayloadArgs,
        #[command(flatten)]
        dir: trust::TrustDir,
    },
}

#[derive(Subcommand)]
enum ImageCommand {
    /// Publish an image through the artifact node holding the log's key:
    /// its blobs go into the node's store, its digest into the log.
    Push(artifacts::ImagePushArgs),
    /// Encrypt an image (ocicrypt, as `skopeo copy --encryption-key jwe:…`)
    /// into an OCI layout; or add recipients to an encrypted one.
    Encrypt(imagecrypt::EncryptArgs),
    /// Decrypt an ocicrypt image into an OCI layout; every layer is checked
    /// (HMAC and digest) before it is written.
    Decrypt(imagecrypt::DecryptArgs),
    /// Build an OCI image layout holding one binary and the libraries it links.
    FromBinary {
        /// The executable.
        binary: PathBuf,
        /// The OCI layout directory to write.
        #[arg(long)]
        out: PathBuf,
        /// Tag in the layout.
        #[arg(long, default_value = "latest")]
        tag: String,
    },
}

fn main() {
    let cli = Cli::parse();
    // Read by every publisher this process opens.
    std::env::set_var(sealpod_publisher::HOLE_PUNCH_LISTEN_ENV, &cli.hole_punch_listen);
    // Internal helpers run before any thread exists: creating a container forks.
    match &cli.command {
        Command::StartContainer { root, id, bundle, pid_file } => {
            if std::env::var_os("RUST_LOG").is_some() {
                init_tracing(0, false);
            }
            if let Err(e) = sealpod_runtime::shim::start_container(root, id, bundle, pid_file) {
                eprintln!("sealpod: container {id}: {e}");
                std::process::exit(1);
            }
            return;
        }
        Command::ExecContainer { root, id, pid_file, argv } => {
            if let Err(e) = sealpod_runtime::shim::exec_container(root, id, pid_file, argv.clone()) {
                eprintln!("sealpod: exec in {id}: {e}");
                std::process::exit(127);
            }
            return;
        }
        Command::Sample { args } => std::process::exit(sample::main(args)),
        _ => {}
    }
    init_tracing(
        cli.verbose,
        matches!(
            cli.command,
            Command::Provider { .. } | Command::Shim { .. } | Command::Node { .. } | Command::Relay { .. }
        ),
    );
    let json = cli.json;
    if let Err(e) = run(cli) {
        let message = error_text(&e);
        if json {
            println!("{}", serde_json::json!({"error": message}));
        } else {
            eprintln!("sealpod: {message}");
        }
        std::process::exit(1);
    }
}

/// An error and its causes on one line, each cause once: many errors
/// already quote their cause in their own message, which anyhow's `{:#}`
/// would print a second time.
fn error_text(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let part = cause.to_string();
        if !text.contains(&part) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&part);
        }
    }
    text
}

fn init_tracing(verbose: u8, daemon: bool) {
    let default = match (verbose, daemon) {
        (0, false) => "warn",
        (0, true) | (1, _) => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("{default},libp2p=warn,libcontainer=warn")));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

fn home(cli_home: &Option<PathBuf>) -> PathBuf {
    if let Some(h) = cli_home {
        return h.clone();
    }
    let data = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."));
    data.join("sealpod")
}

fn parse_addrs(addrs: &[String]) -> Result<Vec<Multiaddr>> {
    addrs.iter().map(|a| a.parse().with_context(|| format!("{a:?} is not a multiaddr"))).collect()
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

fn run(cli: Cli) -> Result<()> {
    let json = cli.json;
    let home = home(&cli.home);
    match cli.command {
        Command::Demo(args) => demo::run(args, json),
        Command::Provider { command: ProviderCommand::Run(args) } => run_provider(*args),
        Command::Provider { command: ProviderCommand::Earnings(args) } => market::earnings(args, json),
        Command::Provider { command: ProviderCommand::Gpus(args) } => gpu_args::list(args, json),
        Command::Providers(args) => runtime()?.block_on(market::providers(args, &home, json)),
        Command::Chain { command } => runtime()?.block_on(market::chain(command, &home, json)),
        Command::Channel { command } => runtime()?.block_on(market::channel(command, &home, json)),
        Command::Pay(args) => runtime()?.block_on(async {
            let publisher =
                open_publisher(&home, &Discovery { provider: None, bootstrap: vec![], mdns: false }).await?;
            market::pay(args, &publisher, &home, json).await
        }),
        Command::Node { command: NodeCommand::Run(args) } => artifacts::node_run(args),
        Command::Relay { command } => relay::run(command, json),
        Command::Log { command } => artifacts::log(command, json),
        Command::Shim { pod_dir } => {
            let exe = std::env::current_exe()?;
            sealpod_runtime::shim::run_shim(&pod_dir, &exe)?;
            Ok(())
        }
        Command::Manifest { command: ManifestCommand::Check { file } } => {
            let (pod, side) = sealpod_manifest::load_pod_manifest_for_publisher(&file)?;
            for note in &side.notes {
                eprintln!("note: {}: {note}", file.display());
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&pod)?);
            } else {
                println!("{}: valid", file.display());
                print!("{}", output::pod_summary(&pod));
            }
            Ok(())
        }
        Command::Image { command: ImageCommand::FromBinary { binary, out, tag } } => {
            let digest = demo::image_from_binary(&binary, &out, &tag, vec![])?;
            if json {
                println!("{}", serde_json::json!({"layout": out, "tag": tag, "digest": digest}));
            } else {
                println!("{}:{tag} {digest}", out.display());
            }
            Ok(())
        }
        Command::Image { command: ImageCommand::Push(args) } => artifacts::image_push(args, json),
        Command::Image { command: ImageCommand::Encrypt(args) } => imagecrypt::encrypt(args, json),
        Command::Image { command: ImageCommand::Decrypt(args) } => imagecrypt::decrypt(args, json),
        Command::Keystore { command } => trust::keystore(command, json),
        Command::Whitelist { command } => trust::whitelist(command, json),
        Command::Rule { command } => trust::rule(command, json),
        Command::Manifest { command: ManifestCommand::Sign(args) } => trust::sign(args, json),
        Command::Manifest { command: ManifestCommand::Verify { payload, dir } } => trust::verify(payload, dir, json),
        Command::Attest(cmd) => attest::run(cmd, &home, json),
        Command::Deploy { manifest, name, discovery, payload, attestation, private, pay, cheapest } => runtime()?
            .block_on(async {
                let options = attestation.attest.options(&home, attestation.require_attestation)?;
                let (pod, sealed) = load_pod(&manifest, &private, &home, json).await?;
                let payload_manifest = payload.load()?;
                let name = name.unwrap_or_else(|| {
                    manifest.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "pod".into())
                });
                let publisher = open_publisher(&home, &discovery).await?;
                let plan = pay.plan(&home)?;
                let targets = match &discovery.provider {
                    Some(p) => vec![Target::Address(
                        p.parse().with_context(|| format!("--provider {p:?} is not a multiaddr"))?,
                    )],
                    None if cheapest => {
                        let resources = sealpod_proto::total_resources(&pod);
                        let (listed, skipped) = publisher.list_offers(&[], resources, None, None).await?;
                        for s in &skipped {
                            tracing::info!("skipped: {s}");
                        }
                        if listed.is_empty() {
                            bail!(
                                "no provider offers room for this pod ({} skipped: {})",
                                skipped.len(),
                                skipped.join("; ")
                            );
                        }
                        let mut targets = Vec::new();
                        for (q, addrs) in listed {
                            if let Some(a) = addrs.first() {
                                if !json {
                                    println!("candidate: {} at {} tokens/s", q.provider, q.rate);
                                }
                                targets.push(Target::Address(a.parse()?));
                            }
                        }
                        targets
                    }
                    None => vec![Target::Discover],
                };
                // Cheapest first; a provider that fails attestation is passed over for the
                // next one (nothing secret went to it, and no channel was opened: that
                // happens after attestation).
                let mut outcome = None;
                let last = targets.len().saturating_sub(1);
                for (i, target) in targets.into_iter().enumerate() {
                    match publisher
                        .deploy_paid(pod.clone(), &name, target, payload_manifest.clone(), &options, plan.as_ref())
                        .await
                    {
                        Err(
                            e @ (sealpod_publisher::PublisherError::Attestation { .. }
                            | sealpod_publisher::PublisherError::NoAttestation { .. }),
                        ) if i < last => {
                            eprintln!("sealpod: {e}; trying the next cheapest provider");
                        }
                        other => {
                            outcome = Some(other?);
                            break;
                        }
                    }
                }
                let (pod_ref, status, attested) = outcome.context("no provider to deploy to")?;
                if let Some(a) = &attested {
                    attest::warn_if_insecure(&a.claims);
                    if !json {
                        println!(
                            "provider {} attested ({}) before anything secret was sent",
                            a.provider, a.claims.kind
                        );
                    }
                }
                let path = publisher.path_to_pod(&pod_ref.pod_id).await;
                output::print_deployed(&pod_ref, &status, attested.as_ref(), &sealed, path, json)
            }),
        Command::Update { pod: pod_id, manifest, payload, attestation, private } => runtime()?.block_on(async {
            let options = attestation.attest.options(&home, attestation.require_attestation)?;
            let (pod, sealed) = load_pod(&manifest, &private, &home, json).await?;
            let payload_manifest = payload.load()?;
            let publisher =
                open_publisher(&home, &Discovery { provider: None, bootstrap: vec![], mdns: false }).await?;
            let (status, attested) = publisher.update(&pod_id, pod, payload_manifest, &options).await?;
            if let Some(a) = &attested {
                attest::warn_if_insecure(&a.claims);
            }
            output::print_updated(&status, attested.as_ref(), &sealed, json)
        }),
        Command::Pods { status } => runtime()?.block_on(async {
            let publisher =
                open_publisher(&home, &Discovery { provider: None, bootstrap: vec![], mdns: false }).await?;
            let pods = publisher.pods()?;
            let mut rows = Vec::new();
            for p in pods {
                let live =
                    if status { Some(publisher.status(&p.pod_id).await.map_err(|e| e.to_string())) } else { None };
                rows.push((p, live));
            }
            output::print_pods(&rows, json)
        }),
        Command::Status { pod } => runtime()?.block_on(async {
            let publisher =
                open_publisher(&home, &Discovery { provider: None, bootstrap: vec![], mdns: false }).await?;
            let status = publisher.status(&pod).await?;
            output::print_status(&status, json)
        }),
        Command::Logs { pod, container, follow } => runtime()?.block_on(async {
            let publisher =
                open_publisher(&home, &Discovery { provider: None, bootstrap: vec![], mdns: false }).await?;
            follow_logs(&publisher, &pod, container.as_deref().unwrap_or(""), follow, json).await
        }),
        Command::Delete { pod } => runtime()?.block_on(async {
            let publisher =
                open_publisher(&home, &Discovery { provider: None, bootstrap: vec![], mdns: false }).await?;
            let status = publisher.delete(&pod).await?;
            if json {
                println!("{}", serde_json::to_string(&status)?);
            } else {
                println!("deleted {pod}");
            }
            Ok(())
        }),
        Command::Exec { pod, container, command } => runtime()?.block_on(async {
            let publisher =
                open_publisher(&home, &Discovery { provider: None, bootstrap: vec![], mdns: false }).await?;
            let code = run_exec(&publisher, &pod, container.as_deref().unwrap_or(""), command, json).await?;
            std::process::exit(code);
        }),
        Command::StartContainer { .. } | Command::ExecContainer { .. } | Command::Sample { .. } => {
            unreachable!("handled before start-up")
        }
    }
}

async fn open_publisher(home: &Path, d: &Discovery) -> Result<Publisher> {
    Ok(Publisher::open(home, parse_addrs(&d.bootstrap)?, d.mdns).await?)
}

async fn follow_logs(publisher: &Publisher, pod: &str, container: &str, follow: bool, json: bool) -> Result<()> {
    use std::io::Write;
    let mut offset = 0;
    let mut out = std::io::stdout().lock();
    loop {
        let chunk = publisher.logs(pod, container, offset).await?;
        if json {
            let line = serde_json::json!({
                "offset": chunk.offset,
                "next_offset": chunk.next_offset,
                "data": String::from_utf8_lossy(&chunk.data),
                "finished": chunk.finished,
            });
            writeln!(out, "{line}")?;
        } else {
            if chunk.offset > offset {
                writeln!(out, "[… {} bytes rotated away …]", chunk.offset - offset)?;
            }
            out.write_all(&chunk.data)?;
        }
        out.flush()?;
        offset = chunk.next_offset;
        if chunk.finished || (!follow && (chunk.data.len() as u32) < sealpod_proto::limits::LOG_CHUNK) {
            return Ok(());
        }
        if chunk.data.is_empty() {
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        }
    }
}

async fn run_exec(publisher: &Publisher, pod: &str, container: &str, argv: Vec<String>, json: bool) -> Result<i32> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let mut collected = Vec::new();
    let (exec_id, code) = follow_exec(publisher, pod, container, argv, |data| {
        if json {
            collected.extend_from_slice(data);
        } else {
            out.write_all(data)?;
            out.flush()?;
        }
        Ok(())
    })
    .await?;
    if json {
        let v =
            serde_json::json!({"exec_id": exec_id, "exit_code": code, "output": String::from_utf8_lossy(&collected)});
        writeln!(out, "{v}")?;
    }
    Ok(code)
}

/// Runs `argv` in a container and hands its output to `on_output` as it
/// arrives; returns the exec id and the exit code.
pub(crate) async fn follow_exec(
    publisher: &Publisher,
    pod: &str,
    container: &str,
    argv: Vec<String>,
    mut on_output: impl FnMut(&[u8]) -> Result<()>,
) -> Result<(String, i32)> {
    let exec_id = publisher.exec(pod, container, argv).await?;
    let mut offset = 0;
    loop {
        let chunk = publisher.exec_output(pod, &exec_id, offset).await?;
        on_output(&chunk.data)?;
        offset = chunk.next_offset;
        if chunk.finished {
            return Ok((exec_id, chunk.exit_code));
        }
        if chunk.data.is_empty() {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}

fn run_provider(args: ProviderArgs) -> Result<()> {
    let kube = args.kube.settings()?;
    if kube.is_none() && !nix_is_root() {
        bail!("the provider needs root: it creates namespaces, cgroups and mounts (or run pods in a cluster: --backend k8s)");
    }
    if kube.is_some() && args.market.is_some() {
        bail!("--market with --backend k8s: cluster pods are not metered yet, so this provider cannot sell them");
    }
    let host = sealpod_provider::Capacity::of_host();
    let capacity = sealpod_provider::Capacity {
        cpu_millicores: match &args.cpu {
            Some(c) => sealpod_manifest::parse_cpu(c).with_context(|| format!("--cpu {c:?}"))?,
            None => host.cpu_millicores,
        },
        memory_bytes: match &args.memory {
            Some(m) => sealpod_manifest::parse_bytes(m).with_context(|| format!("--memory {m:?}"))?,
            None => host.memory_bytes,
        },
    };
    let config = sealpod_provider::ProviderConfig {
        trust_dir: args.trust_dir.clone().unwrap_or_else(|| args.state_dir.join("trust")),
        state_dir: args.state_dir,
        listen: parse_addrs(&args.listen)?,
        bootstrap: parse_addrs(&args.bootstrap)?,
        mdns: args.mdns,
        nat: args.nat.config()?,
        gpus: args.gpus.settings()?,
        expose_ip: args.expose_ip,
        image_roots: args.image_root,
        artifact_node: args.artifact_node,
        shim_exe: std::env::current_exe()?,
        capacity,
        ready_file: args.ready_file,
        attestor: args.attestor,
        tsm_root: args.tsm_root,
        attestor_collateral: args.attestor_collateral,
        market: args
            .market
            .as_deref()
            .map(sealpod_market::MarketTerms::load)
            .transpose()
            .map_err(|e| anyhow::anyhow!("--market: {e}"))?,
        metrics: {
            if !args.metrics.ip().is_loopback() {
                bail!(
                    "--metrics {}: serve metrics on loopback only (put a proxy in front to share them)",
                    args.metrics
                );
            }
            Some(args.metrics)
        },
        peer_limits: sealpod_net::PeerLimits {
            connections_per_peer: args.max_connections_per_peer.max(1),
            requests_per_peer: args.max_requests_per_peer.max(1),
            incoming_connections: args.max_incoming_connections.max(1),
            ..Default::default()
        },
        pods_per_publisher: args.max_pods_per_publisher,
        http: Some(args.http_listen),
        http_host_suffixes: args.http_host_suffix,
        gateway_limits: Default::default(),
        scale_down_after: std::time::Duration::try_from_secs_f64(args.scale_down_after)
            .ok()
            .filter(|d| !d.is_zero())
            .ok_or_else(|| {
            anyhow::anyhow!("--scale-down-after {}: give a number of seconds above 0", args.scale_down_after)
        })?,
        kube,
    };
    runtime()?.block_on(async {
        let provider = std::sync::Arc::new(sealpod_provider::Provider::open(config)?);
        provider.serve().await
    })
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(2) == Some("0")))
        .unwrap_or(false)
}

/// Reads a pod manifest for sending, printing its notes, and encrypts the
/// images it (or `--encrypt-images`) marks private.
async fn load_pod(
    manifest: &Path,
    private: &private::PrivateArgs,
    home: &Path,
    json: bool,
) -> Result<(sealpod_proto::Pod, Vec<private::PrivateImage>)> {
    let (mut pod, side) = sealpod_manifest::load_pod_manifest_for_publisher(manifest)?;
    for note in &side.notes {
        eprintln!("note: {}: {note}", manifest.display());
    }
    let which: Vec<usize> =
        if private.encrypt_images { (0..pod.containers.len()).collect() } else { side.private_images };
    let sealed = if which.is_empty() {
        Vec::new()
    } else {
        let base = manifest.parent().map(Path::to_owned).unwrap_or_default();
        let base = if base.as_os_str().is_empty() { std::env::current_dir()? } else { base };
        private::make_private(&mut pod, &which, home, &base, &private.node).await?
    };
    if !json {
        for s in &sealed {
            let how = if s.reused { "reused the encrypted copy" } else { "encrypted" };
            println!("{}: {how} {} -> {} (published by digest only)", s.container, s.source, s.digest);
        }
    }
    Ok((pod, sealed))
}

#[cfg(test)]
mod tests {
    use super::error_text;

    #[test]
    fn a_cause_already_quoted_by_its_error_is_printed_once() {
        #[derive(Debug)]
        struct Read(std::io::Error);
        impl std::fmt::Display for Read {
            fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                write!(f, "cannot read the manifest: {}", self.0)
            }
        }
        impl std::error::Error for Read {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file or directory (os error 2)");
        let e = anyhow::Error::new(Read(io)).context("/x/pod.yaml");
        assert_eq!(error_text(&e), "/x/pod.yaml: cannot read the manifest: No such file or directory (os error 2)");
        let plain = anyhow::anyhow!("inner").context("outer");
        assert_eq!(error_text(&plain), "outer: inner");
    }
}
