//! What attestation adds to a deploy, on loopback, side by side in one run.
//!
//! A provider process with the insecure dev attestor; one publisher (this
//! process). Measures, interleaved:
//!   * an attestation round trip (nonce out, evidence back, verified) next to
//!     a capacity round trip (the obvious alternative: the cheapest request
//!     on the same connection);
//!   * a deploy of a one-container pod without attestation next to the same
//!     deploy with `require: true` (attest, then provision), each deleted
//!     after.
//!
//! Needs root (it runs pods): `cargo bench -p sealpod --bench attest_deploy`.

#[path = "../tests/common/mod.rs"]
mod common;

use common::{ms, percentile};

use std::path::Path;
use std::time::Instant;

use sealpod_publisher::{AttestOptions, Publisher, Target};

fn main() {
    // `cargo test --benches` lists and runs harness-less benches; do nothing then.
    if common::bench_args().is_none() {
        return;
    }
    if !common::is_root() {
        eprintln!("attest_deploy: skipped (running pods needs root)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    common::build_sample_image(dir);
    let provider = common::Provider::start_with(dir, common::free_port(), &["--attestor", "insecure-dev"]);
    let addr: sealpod_net::Multiaddr = provider.addr.parse().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let result = rt.block_on(run(dir, addr));
    drop(provider);
    result.unwrap();
}

async fn run(dir: &Path, addr: sealpod_net::Multiaddr) -> anyhow::Result<()> {
    let publisher = Publisher::open(&dir.join("publisher"), vec![], false).await?;
    let dev = AttestOptions { allow_insecure_dev: true, ..Default::default() };
    let peer: sealpod_net::PeerId = publisher.attest(&addr, &dev).await?.provider.parse()?;
    let (mut attest, mut capacity) = (Vec::new(), Vec::new());
    for _ in 0..300 {
        let t = Instant::now();
        publisher.attest_peer(peer, &dev).await?;
        attest.push(ms(t.elapsed()));
        let t = Instant::now();
        publisher.capacity(peer, Default::default()).await?;
        capacity.push(ms(t.elapsed()));
    }
    let image = format!("oci:{}:v1", dir.join("images/sample").display());
    let text = format!(
        "containers:\n  - name: web\n    image: {image}\n    args: [serve, --port, \"8080\"]\n    resources: {{cpu: 100m, memory: 32Mi}}\n"
    );
    let pod = sealpod_manifest::parse_pod_manifest(&text, sealpod_manifest::Format::Yaml, "bench", None)?;
    let (mut plain, mut attested) = (Vec::new(), Vec::new());
    let require = AttestOptions { require: true, ..dev.clone() };
    for i in 0..12 {
        for (opts, out) in [(&AttestOptions::default(), &mut plain), (&require, &mut attested)] {
            let t = Instant::now();
            let (pod_ref, _, _) =
                publisher.deploy(pod.clone(), &format!("b{i}"), Target::Address(addr.clone()), None, opts).await?;
            out.push(ms(t.elapsed()));
            publisher.delete(&pod_ref.pod_id).await?;
        }
    }
    let row = |name: &str, v: &Vec<f64>| {
        println!(
            "| {name} ({} runs) | {:.3} ms | {:.3} ms |",
            v.len(),
            percentile(v.clone(), 50),
            percentile(v.clone(), 90)
        )
    };
    println!("| measurement, loopback | median | p90 |");
    println!("|---|---|---|");
    row("capacity round trip (baseline)", &capacity);
    row("attestation round trip (insecure-dev, verified)", &attest);
    row("deploy, no attestation", &plain);
    row("deploy, attested first", &attested);
    Ok(())
}
