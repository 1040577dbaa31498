#!/usr/bin/env python3
"""A 500 MB image pulled through a mirror node over libp2p, next to the CNCF registry.

Run as root after `cargo build --release --bin sealpod`:

    python3 benches/p2p_pull.py [--runs 3] [--json]

Builds a single-layer OCI layout of incompressible bytes (5 files of 100 MiB
from os.urandom, tar, gzip level 1 so skopeo pushes it as it is), pushes it
to the CNCF registry (`docker-registry` 2.8) and to node A, the log's
authority (setup, not timed), then times, alternating, `--runs` rounds of:

  (a) `skopeo copy docker://CNCF/bench/big:1 dir:OUT`;
  (b) the same pull from a fresh mirror node C (new directory, new peer id,
      bootstrapped from A, log already synced before the clock starts): C
      resolves the tag through its log and fetches the 500 MB from A over
      `/apocryph/blob/0.0.1` (TCP + Noise + Yamux) while skopeo waits, verifies
      it into its store, then serves it; the mirror's log says when the layer
      was stored, which splits (b) into "fetch over p2p" and "serve to skopeo";
  (c) the same pull from node A directly (our registry, no p2p);
  (d) the layer's bytes over plain loopback TCP: sendfile(2) into a socket,
      recv_into a 4 MiB buffer on the other end, in two threads;
  (e) `curl` of the layer blob from another fresh mirror (p2p fetch + serve),
      and (f) `curl` of the layer blob from A (serve only), when curl exists.

Prints a Markdown table for docs/benchmarks.md (medians; MB = 10^6 bytes)
and, with --json, the raw figures as JSON.
"""
import argparse, datetime, gzip, hashlib, io, json, os, shutil, re, socket, statistics, subprocess, sys, tarfile, tempfile, threading, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MIB = 1024 * 1024
REPO, TAG = "bench/big", "1"


class HashingWriter:
    """A write-only file that hashes and counts what passes through it."""

    def __init__(self, inner):
        self.inner, self.sha, self.size = inner, hashlib.sha256(), 0

    def write(self, b):
        self.sha.update(b)
        self.size += len(b)
        return self.inner.write(b)

    def flush(self):
        self.inner.flush()


def write_blob(layout, data):
    digest = hashlib.sha256(data).hexdigest()
    with open(os.path.join(layout, "blobs", "sha256", digest), "wb") as f:
        f.write(data)
    return f"sha256:{digest}", len(data)


def build_layout(layout, files, file_mib):
    """A single-layer OCI image layout; returns (layer path, layer digest, layer size, image size)."""
    os.makedirs(os.path.join(layout, "blobs", "sha256"))
    tmp_layer = os.path.join(layout, "layer.tmp")
    with open(tmp_layer, "wb") as raw:
        compressed = HashingWriter(raw)
        with gzip.GzipFile(fileobj=compressed, mode="wb", compresslevel=1, mtime=0) as gz:
            uncompressed = HashingWriter(gz)
            with tarfile.open(fileobj=uncompressed, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                for i in range(files):
                    data = os.urandom(file_mib * MIB)
                    info = tarfile.TarInfo(f"data/{i}.bin")
                    info.size, info.mode, info.mtime = len(data), 0o644, 0
                    tar.addfile(info, io.BytesIO(data))
    layer_digest, layer_size = f"sha256:{compressed.sha.hexdigest()}", compressed.size
    layer_path = os.path.join(layout, "blobs", "sha256", compressed.sha.hexdigest())
    os.rename(tmp_layer, layer_path)
    config = json.dumps({
        "architecture": "amd64", "os": "linux", "config": {},
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{uncompressed.sha.hexdigest()}"]},
    }, separators=(",", ":")).encode()
    config_digest, config_size = write_blob(layout, config)
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer_digest, "size": layer_size}],
    }, separators=(",", ":")).encode()
    manifest_digest, manifest_size = write_blob(layout, manifest)
    with open(os.path.join(layout, "index.json"), "w") as f:
        json.dump({"schemaVersion": 2, "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest_digest,
            "size": manifest_size, "annotations": {"org.opencontainers.image.ref.name": TAG}}]}, f)
    with open(os.path.join(layout, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    return layer_path, layer_digest, layer_size, layer_size + config_size + manifest_size


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, timeout=30):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"127.0.0.1:{port} never answered")


def run(cmd, what):
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{what} failed ({out.returncode}): {out.stdout}\n{out.stderr}")
    return out.stdout


class Nodes:
    """Every process this script starts, stopped on exit."""

    def __init__(self, sealpod, tmp):
        self.sealpod, self.tmp, self.procs = sealpod, tmp, []

    def spawn(self, cmd, log):
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        self.procs.append(p)
        return p

    def node(self, name, extra):
        ready = os.path.join(self.tmp, f"{name}.ready")
        log_path = os.path.join(self.tmp, f"{name}.log")
        with open(log_path, "w") as log:
            p = self.spawn([self.sealpod, "node", "run", "--registry", "127.0.0.1:0", "--listen", "/ip4/127.0.0.1/tcp/0",
                            "--dir", os.path.join(self.tmp, name), "--ready-file", ready, "--sync-period-ms", "500"]
                           + extra, log)
        end = time.monotonic() + 30
        while not os.path.exists(ready):
            if p.poll() is not None or time.monotonic() > end:
                raise RuntimeError(f"node {name} did not start: {open(log_path).read()}")
            time.sleep(0.02)
        time.sleep(0.05)  # the ready file is written once, but let it land whole
        info = json.load(open(ready))
        return {"proc": p, "name": name, "dir": os.path.join(self.tmp, name), "log": log_path,
                "registry": info["registry"], "addr": info["addresses"][0]}

    def stop(self, node_or_proc):
        p = node_or_proc["proc"] if isinstance(node_or_proc, dict) else node_or_proc
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if p in self.procs:
            self.procs.remove(p)

    def stop_all(self):
        for p in list(self.procs):
            self.stop(p)


def checkpoint_size(sealpod, node):
    out = subprocess.run([sealpod, "--json", "log", "checkpoint", "--node", node["registry"]], capture_output=True, text=True)
    try:
        return json.loads(out.stdout)["size"]
    except (ValueError, KeyError):
        return 0


def wait_synced(sealpod, node, size, timeout=60):
    end = time.monotonic() + timeout
    while checkpoint_size(sealpod, node) < size:
        if time.monotonic() > end:
            raise RuntimeError(f"mirror {node['name']} did not sync the log: {open(node['log']).read()}")
        time.sleep(0.1)


def cpu_seconds(pid):
    """User + system CPU time a process has used so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def fetched_at(log_path, digest):
    """Wall-clock time (Unix seconds) at which a node logged that it fetched `digest` from a peer."""
    for line in open(log_path):
        line = re.sub(r"\x1b\[[0-9;]*m", "", line)
        if "fetched blob from peer" in line and digest in line:
            stamp = datetime.datetime.strptime(line.split()[0], "%Y-%m-%dT%H:%M:%S.%fZ")
            return stamp.replace(tzinfo=datetime.timezone.utc).timestamp()
    raise RuntimeError(f"{log_path} does not say it fetched {digest} from a peer")


def skopeo_pull(registry, out):
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.monotonic()
    run(["skopeo", "copy", "--src-tls-verify=false", f"docker://{registry}/{REPO}:{TAG}", f"dir:{out}"], "skopeo copy")
    t = time.monotonic() - t0
    shutil.rmtree(out, ignore_errors=True)
    return t


def curl_blob(registry, digest):
    t0 = time.monotonic()
    out = run(["curl", "-sS", "-f", "-o", "/dev/null", "-w", "%{size_download}",
               f"http://{registry}/v2/{REPO}/blobs/{digest}"], "curl")
    return time.monotonic() - t0, int(out)


def raw_loopback(path):
    """Seconds to move the file through a loopback TCP connection, sendfile to recv_into."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    received = [0]

    def receive():
        conn, _ = server.accept()
        buf = bytearray(4 * MIB)
        view = memoryview(buf)
        with conn:
            while True:
                n = conn.recv_into(view)
                if n == 0:
                    break
                received[0] += n

    t0 = time.monotonic()
    receiver = threading.Thread(target=receive)
    receiver.start()
    with socket.create_connection(server.getsockname()) as s, open(path, "rb") as f:
        s.sendfile(f)
    receiver.join()
    t = time.monotonic() - t0
    server.close()
    if received[0] != os.path.getsize(path):
        raise RuntimeError(f"raw loopback moved {received[0]} bytes, not {os.path.getsize(path)}")
    return t


def stats(xs):
    xs = sorted(xs)
    return {"median": statistics.median(xs), "mean": statistics.mean(xs), "min": xs[0], "max": xs[-1], "n": len(xs), "all": xs}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--files", type=int, default=5, help="files in the layer")
    ap.add_argument("--file-mib", type=int, default=100, help="size of each file, MiB")
    ap.add_argument("--bin", default=os.path.join(ROOT, "target/release"))
    ap.add_argument("--json", action="store_true", help="print the raw figures as JSON too")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (node logs) afterwards")
    args = ap.parse_args()
    sealpod = os.path.join(args.bin, "sealpod")
    for tool in ("skopeo", "docker-registry"):
        if not shutil.which(tool):
            sys.exit(f"needs {tool} on PATH")
    have_curl = shutil.which("curl") is not None

    tmp = tempfile.mkdtemp(prefix="sealpod-p2p-bench-")
    nodes = Nodes(sealpod, tmp)
    try:
        t0 = time.monotonic()
        layout = os.path.join(tmp, "layout")
        layer_path, layer_digest, layer_size, image_size = build_layout(layout, args.files, args.file_mib)
        print(f"layout: layer {layer_digest[:19]}… {layer_size / 1e6:.1f} MB, built in {time.monotonic() - t0:.1f} s",
              file=sys.stderr)

        cncf_port = free_port()
        config = os.path.join(tmp, "registry.yml")
        with open(config, "w") as f:
            f.write(f"version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {tmp}/cncf\n"
                    f"http:\n  addr: 127.0.0.1:{cncf_port}\n")
        cncf = nodes.spawn(["docker-registry", "serve", config], open(os.path.join(tmp, "cncf.log"), "w"))
        wait_port(cncf_port, cncf)
        cncf_registry = f"127.0.0.1:{cncf_port}"

        key = os.path.join(tmp, "log.key")
        vkey = run([sealpod, "log", "keygen", "--name", "bench.sealpod/images", "--out", key], "log keygen").strip()
        a = nodes.node("a", ["--log-signing-key", key])

        for registry in (cncf_registry, a["registry"]):
            run(["skopeo", "copy", "--dest-tls-verify=false", f"oci:{layout}:{TAG}",
                 f"docker://{registry}/{REPO}:{TAG}"], f"push to {registry}")
            raw = run(["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{registry}/{REPO}:{TAG}"], "inspect")
            got = json.loads(raw)["layers"][0]["digest"]
            if got != layer_digest:
                raise RuntimeError(f"{registry} holds layer {got}, not {layer_digest}: the push recompressed it")
        print("pushed to the CNCF registry and to node A", file=sys.stderr)

        out = os.path.join(tmp, "out")
        times = {k: [] for k in ("cncf", "p2p", "p2p_layer_stored", "node_a", "raw", "curl_p2p",
                                 "curl_p2p_layer_stored", "curl_a")}
        # CPU seconds the nodes used during a pull: 2 cores shared by sender,
        # receiver and client make a CPU-bound path show here.
        cpu = {k: [] for k in ("p2p_sender_a", "p2p_mirror_c", "curl_p2p_sender_a", "curl_p2p_mirror", "curl_a_node_a")}
        mirror_no = 0

        def fresh_mirror():
            nonlocal mirror_no
            mirror_no += 1
            m = nodes.node(f"mirror{mirror_no}", ["--log-key", vkey, "--bootstrap", a["addr"]])
            wait_synced(sealpod, m, 1)
            return m

        def drop_mirror(m):
            nodes.stop(m)
            if not args.keep:
                shutil.rmtree(m["dir"], ignore_errors=True)

        for i in range(args.runs):
            times["cncf"].append(skopeo_pull(cncf_registry, out))

            c = fresh_mirror()
            cpu_a, cpu_c, wall = cpu_seconds(a["proc"].pid), cpu_seconds(c["proc"].pid), time.time()
            times["p2p"].append(skopeo_pull(c["registry"], out))
            # Within (b): how long until the layer sat verified in C's store.
            times["p2p_layer_stored"].append(fetched_at(c["log"], layer_digest) - wall)
            cpu["p2p_sender_a"].append(cpu_seconds(a["proc"].pid) - cpu_a)
            cpu["p2p_mirror_c"].append(cpu_seconds(c["proc"].pid) - cpu_c)
            drop_mirror(c)

            times["node_a"].append(skopeo_pull(a["registry"], out))
            times["raw"].append(raw_loopback(layer_path))

            if have_curl:
                e = fresh_mirror()
                cpu_a, cpu_e, wall = cpu_seconds(a["proc"].pid), cpu_seconds(e["proc"].pid), time.time()
                t, n = curl_blob(e["registry"], layer_digest)
                cpu["curl_p2p_sender_a"].append(cpu_seconds(a["proc"].pid) - cpu_a)
                cpu["curl_p2p_mirror"].append(cpu_seconds(e["proc"].pid) - cpu_e)
                if n != layer_size:
                    raise RuntimeError(f"curl from mirror {e['name']}: {n} bytes, not {layer_size}")
                times["curl_p2p"].append(t)
                times["curl_p2p_layer_stored"].append(fetched_at(e["log"], layer_digest) - wall)
                drop_mirror(e)
                cpu_a = cpu_seconds(a["proc"].pid)
                t, n = curl_blob(a["registry"], layer_digest)
                times["curl_a"].append(t)
                cpu["curl_a_node_a"].append(cpu_seconds(a["proc"].pid) - cpu_a)
            print(f"round {i + 1}/{args.runs}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items() if v),
                  file=sys.stderr)

        result = {k: stats(v) for k, v in times.items() if v}
        result["cpu_seconds"] = {k: stats(v) for k, v in cpu.items() if v}
        result.update({"image_bytes": image_size, "layer_bytes": layer_size, "runs": args.runs,
                       "cpus": os.cpu_count(), "kernel": os.uname().release,
                       "load_average": os.getloadavg()})
        rows = [
            ("cncf", "(a) skopeo pull from CNCF docker-registry", image_size),
            ("p2p", "(b) skopeo pull from a fresh mirror, blobs from A over libp2p", image_size),
            ("p2p_layer_stored", "… of which: until the layer is verified in the mirror's store", layer_size),
            ("node_a", "(c) skopeo pull from node A (no p2p)", image_size),
            ("raw", "(d) raw loopback TCP, sendfile → recv_into", layer_size),
            ("curl_p2p", "(e) curl the layer from a fresh mirror (p2p fetch + serve)", layer_size),
            ("curl_p2p_layer_stored", "… of which: until the layer is verified in the mirror's store", layer_size),
            ("curl_a", "(f) curl the layer from node A (serve only)", layer_size),
        ]
        print(f"\n{image_size / 1e6:.1f} MB image ({layer_size / 1e6:.1f} MB layer), {args.runs} runs each, medians:\n")
        print("| what | median | MB/s | min | max |")
        print("|---|---|---|---|---|")
        for k, label, size in rows:
            if k in result:
                s = result[k]
                print(f"| {label} | {s['median']:.2f} s | {size / s['median'] / 1e6:.0f} | {s['min']:.2f} s | {s['max']:.2f} s |")
        ratios = {
            "p2p_over_cncf": result["p2p"]["median"] / result["cncf"]["median"],
            "p2p_over_raw": result["p2p"]["median"] / result["raw"]["median"],
            "p2p_over_node_a": result["p2p"]["median"] / result["node_a"]["median"],
            "node_a_over_cncf": result["node_a"]["median"] / result["cncf"]["median"],
        }
        result["ratios"] = ratios
        print(f"\np2p / CNCF: {ratios['p2p_over_cncf']:.2f}x (target ≤ 1.5x)")
        print(f"p2p / raw loopback: {ratios['p2p_over_raw']:.2f}x (target ≤ 2x)")
        print(f"p2p / node A: {ratios['p2p_over_node_a']:.2f}x; node A / CNCF: {ratios['node_a_over_cncf']:.2f}x")
        print("CPU seconds used by the nodes (medians): " + ", ".join(
            f"{k} {v['median']:.2f}" for k, v in result["cpu_seconds"].items()))
        if args.json:
            print(json.dumps(result, indent=2))
    finally:
        nodes.stop_all()
        if args.keep:
            print(f"kept {tmp} (node logs and stores)", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    if os.geteuid() != 0:
        sys.exit("run as root, like benches/deploy.py (skopeo and the registries write under the temp dir)")
    main()
