#!/usr/bin/env python3
"""Encrypted images: sealpod next to Debian's skopeo, and deploys from plain and encrypted images.

Run as root after `cargo build --release --bins`:

    python3 benches/encrypted_images.py [--runs 3] [--mb 500] [--deploys 5] [--json]

Part 1, one layer of `--mb` MB of incompressible bytes (an uncompressed tar
of os.urandom files, so neither tool spends its time in a decompressor), in
an OCI layout; an EC P-256 key made with openssl. Alternating, `--runs`
rounds of:

  (a) `skopeo copy --decryption-key ec.pem oci:ENC oci:OUT`;
  (b) `sealpod image decrypt oci:ENC oci:OUT --key ec.pem`;
  (c) `skopeo copy --encryption-key jwe:ec.pub oci:PLAIN oci:OUT`;
  (d) `sealpod image encrypt oci:PLAIN oci:OUT --recipient jwe:ec.pub`;
  (e) `openssl dgst -sha256` of the layer (one pass of the hash both tools run at
      least once over every byte: the floor).

Wall time and peak RSS (GNU time's %M) of each process. Page cache is
warm (the layer is read once before the clock starts).

Part 2, deploy → port answers, `--deploys` times each, one provider with its
own artifact node (a mirror of the publisher's): the sample image as a local
reference on the provider (plain), and as a private image
(`deploy --encrypt-images`): the first deploy encrypts, publishes and the
provider's node fetches over libp2p (cold); later deploys reuse the
encrypted copy and the provider decrypts into a new pod rootfs (warm).

Prints Markdown tables for docs/benchmarks.md and, with --json, the raw figures.
"""
import argparse, hashlib, io, json, os, shutil, socket, statistics, subprocess, sys, tarfile, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def timed(cmd):
    """Runs cmd under GNU time; returns (seconds, peak RSS in KiB). (wait4's
    ru_maxrss would count this Python process, which the child was forked
    from: Linux keeps the high-water mark across execve.)"""
    t0 = time.monotonic()
    p = subprocess.run(["/usr/bin/time", "-f", "maxrss=%M"] + cmd, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, text=True)
    dt = time.monotonic() - t0
    if p.returncode != 0:
        raise RuntimeError(f"{cmd} failed: {p.stderr}")
    return dt, int(p.stderr.strip().splitlines()[-1].split("=")[1])


def write_layout(path, mb):
    """A one-layer OCI layout of `mb` MB of random bytes, tagged v1."""
    os.makedirs(f"{path}/blobs/sha256")
    tmp_layer = f"{path}/layer.tmp"
    with tarfile.open(tmp_layer, "w", format=tarfile.PAX_FORMAT) as tar:
        left, i = mb * 1000 * 1000, 0
        while left > 0:
            n = min(left, 100 * 1000 * 1000)
            data = os.urandom(n)
            info = tarfile.TarInfo(f"data/{i}.bin")
            info.size = n
            tar.addfile(info, io.BytesIO(data))
            left, i = left - n, i + 1
    h = hashlib.sha256()
    with open(tmp_layer, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    layer_digest = h.hexdigest()
    size = os.path.getsize(tmp_layer)
    os.rename(tmp_layer, f"{path}/blobs/sha256/{layer_digest}")

    def blob(obj):
        data = json.dumps(obj).encode()
        d = hashlib.sha256(data).hexdigest()
        open(f"{path}/blobs/sha256/{d}", "wb").write(data)
        return d, len(data)

    cfg, cfg_size = blob({"architecture": "amd64", "os": "linux", "config": {},
                          "rootfs": {"type": "layers", "diff_ids": [f"sha256:{layer_digest}"]}})
    man, man_size = blob({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                          "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                     "digest": f"sha256:{cfg}", "size": cfg_size},
                          "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                                      "digest": f"sha256:{layer_digest}", "size": size}]})
    json.dump({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
               "digest": f"sha256:{man}", "size": man_size,
               "annotations": {"org.opencontainers.image.ref.name": "v1"}}]}, open(f"{path}/index.json", "w"))
    open(f"{path}/oci-layout", "w").write('{"imageLayoutVersion":"1.0.0"}')
    return f"{path}/blobs/sha256/{layer_digest}", size


def stats(xs):
    xs = sorted(xs)
    return {"median": statistics.median(xs), "min": xs[0], "max": xs[-1], "n": len(xs)}


def crypto_part(sealpod, tmp, runs, mb):
    layer, size = write_layout(f"{tmp}/plain", mb)
    subprocess.run("openssl ecparam -name prime256v1 -genkey -noout | openssl pkcs8 -topk8 -nocrypt -out ec.pem"
                   " && openssl pkey -in ec.pem -pubout -out ec.pub", shell=True, cwd=tmp, check=True)
    subprocess.run([sealpod, "image", "encrypt", f"oci:{tmp}/plain:v1", f"oci:{tmp}/enc:v1",
                    "--recipient", f"jwe:{tmp}/ec.pub"], check=True, capture_output=True)
    subprocess.run(["cat", layer], stdout=subprocess.DEVNULL, check=True)  # warm the page cache
    cmds = {
        "skopeo copy --decryption-key": lambda o: ["skopeo", "copy", "--decryption-key", f"{tmp}/ec.pem",
                                                   f"oci:{tmp}/enc:v1", f"oci:{o}:v1"],
        "sealpod image decrypt": lambda o: [sealpod, "image", "decrypt", f"oci:{tmp}/enc:v1", f"oci:{o}:v1",
                                            "--key", f"{tmp}/ec.pem"],
        "skopeo copy --encryption-key jwe:": lambda o: ["skopeo", "copy", "--encryption-key", f"jwe:{tmp}/ec.pub",
                                                        f"oci:{tmp}/plain:v1", f"oci:{o}:v1"],
        "sealpod image encrypt": lambda o: [sealpod, "image", "encrypt", f"oci:{tmp}/plain:v1", f"oci:{o}:v1",
                                            "--recipient", f"jwe:{tmp}/ec.pub"],
        "openssl dgst -sha256 of the layer (one hash pass, the floor)": lambda o: ["openssl", "dgst", "-sha256", layer],
    }
    wall = {k: [] for k in cmds}
    rss = {k: [] for k in cmds}
    for _ in range(runs):
        for name, cmd in cmds.items():
            out = f"{tmp}/out"
            shutil.rmtree(out, ignore_errors=True)
            dt, peak = timed(cmd(out))
            wall[name].append(dt)
            rss[name].append(peak)
    shutil.rmtree(f"{tmp}/out", ignore_errors=True)
    return {"layer_bytes": size, "runs": runs,
            "rows": {k: {"wall_s": stats(wall[k]), "peak_rss_kib": max(rss[k]),
                         "mb_per_s": size / 1e6 / statistics.median(wall[k])} for k in cmds}}


def http_ok(host, port):
    try:
        with socket.create_connection((host, port), timeout=1) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            return s.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def wait_file(path, proc, what):
    end = time.monotonic() + 30
    while not os.path.exists(path):
        if proc.poll() is not None or time.monotonic() > end:
            raise RuntimeError(f"{what} did not start")
        time.sleep(0.01)
    return json.load(open(path))


def deploy_part(sealpod, tmp, deploys):
    sample = os.path.join(os.path.dirname(sealpod), "sealpod-sample")
    subprocess.run([sealpod, "image", "from-binary", sample, "--out", f"{tmp}/images/sample", "--tag", "v1"],
                   check=True, stdout=subprocess.DEVNULL)
    vkey = subprocess.run([sealpod, "log", "keygen", "--name", "bench.sealpod/images", "--out", f"{tmp}/log.key"],
                          check=True, capture_output=True, text=True).stdout.strip()
    procs = []

    def start(args, name):
        ready = f"{tmp}/{name}.ready"
        p = subprocess.Popen(args + ["--ready-file", ready], stdout=subprocess.DEVNULL,
                             stderr=open(f"{tmp}/{name}.log", "w"))
        procs.append(p)
        return wait_file(ready, p, name)

    node = [sealpod, "node", "run", "--registry", "127.0.0.1:0", "--listen", "/ip4/127.0.0.1/tcp/0",
            "--sync-period-ms", "500"]
    try:
        a = start(node + ["--dir", f"{tmp}/a", "--log-signing-key", f"{tmp}/log.key"], "a")
        m = start(node + ["--dir", f"{tmp}/m", "--log-key", vkey, "--bootstrap", a["addresses"][0]], "m")
        p = start([sealpod, "provider", "run", "--listen", "/ip4/127.0.0.1/tcp/0", "--expose-ip", "127.0.0.1",
                   "--attestor", "insecure-dev", "--artifact-node", m["registry"], "--state-dir", f"{tmp}/provider",
                   "--image-root", f"{tmp}/images"], "provider")
        addr = p["addresses"][0]
        pod = f"{tmp}/pod.yaml"
        open(pod, "w").write(f"""containers:
  - name: web
    image: oci:{tmp}/images/sample:v1
    args: [serve, --port, "8080"]
    ports: [{{port: 0, targetPort: 8080}}]
""")

        def deploy(extra):
            t0 = time.monotonic()
            out = subprocess.run([sealpod, "--home", f"{tmp}/publisher", "--json", "deploy", pod, "--provider", addr,
                                  "--allow-insecure-dev"] + extra, check=True, capture_output=True)
            status = json.loads(out.stdout)["status"]
            ma = status["addresses"][0]["multiaddr"].split("/")
            while not http_ok(ma[2], int(ma[4])):
                time.sleep(0.001)
            dt = (time.monotonic() - t0) * 1000
            subprocess.run([sealpod, "--home", f"{tmp}/publisher", "delete", status["podId"]], check=True,
                           stdout=subprocess.DEVNULL)
            return dt

        private = ["--encrypt-images", "--node", a["registry"]]
        deploy([])  # warm-up: the provider unpacks the plain image once, as it keeps it
        cold = deploy(private)
        plain, warm = [], []
        for _ in range(deploys):
            plain.append(deploy([]))
            warm.append(deploy(private))
        return {"plain_ms": stats(plain), "private_cold_ms": cold, "private_warm_ms": stats(warm),
                "image_bytes": sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in
                                   os.walk(f"{tmp}/images/sample/blobs") for f in fs)}
    finally:
        for pr in reversed(procs):
            pr.terminate()
            pr.wait()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--mb", type=int, default=500)
    ap.add_argument("--deploys", type=int, default=5)
    ap.add_argument("--bin", default=os.path.join(ROOT, "target/release"))
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    sealpod = os.path.join(args.bin, "sealpod")
    tmp = tempfile.mkdtemp(prefix="sealpod-enc-bench-", dir="/var/tmp")
    try:
        c = crypto_part(sealpod, tmp, args.runs, args.mb)
        d = deploy_part(sealpod, tmp, args.deploys)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"One {c['layer_bytes'] / 1e6:.0f} MB layer (uncompressed tar of random bytes), medians of {c['runs']}:\n")
    print("| command | wall | MB/s | peak RSS |")
    print("|---|---|---|---|")
    for name, r in c["rows"].items():
        print(f"| `{name}` | {r['wall_s']['median']:.2f} s ({r['wall_s']['min']:.2f}–{r['wall_s']['max']:.2f}) "
              f"| {r['mb_per_s']:.0f} | {r['peak_rss_kib'] / 1024:.1f} MiB |")
    rows = c["rows"]
    print(f"\ndecrypt: sealpod is {rows['skopeo copy --decryption-key']['wall_s']['median'] / rows['sealpod image decrypt']['wall_s']['median']:.1f}x skopeo; "
          f"encrypt: {rows['skopeo copy --encryption-key jwe:']['wall_s']['median'] / rows['sealpod image encrypt']['wall_s']['median']:.1f}x")
    print(f"\nDeploy → port answers, sample image ({d['image_bytes'] / 1e6:.1f} MB), medians of {args.deploys}:\n")
    print("| image | deploy → port |")
    print("|---|---|")
    print(f"| plain, local reference on the provider (unpacked once, shared) | {d['plain_ms']['median']:.0f} ms |")
    print(f"| private, first deploy: encrypt, publish, fetch over libp2p, decrypt | {d['private_cold_ms']:.0f} ms |")
    print(f"| private, later deploys: encrypted copy reused, decrypt into the pod | {d['private_warm_ms']['median']:.0f} ms |")
    if args.json:
        print(json.dumps({"crypto": c, "deploy": d, "cpus": os.cpu_count(), "kernel": os.uname().release}, indent=2))


if __name__ == "__main__":
    if os.geteuid() != 0:
        sys.exit("run as root (the deploy part starts pods)")
    main()
