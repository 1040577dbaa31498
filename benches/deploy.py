#!/usr/bin/env python3
"""Deploy latency and idle memory of sealpod pods, next to `runc run` of the same bundle.

Run as root after `cargo build --release --bins`:

    python3 benches/deploy.py [--runs 15] [--idle-pods 10]

Measures, in one run on this machine:
  * sealpod: from the start of `sealpod deploy` (a new publisher process: libp2p
    start-up, Noise handshake, provision-pod request, admission, shim, netns,
    overlay mount, libcontainer create/start) until the pod's exposed port
    answers an HTTP GET;
  * runc: from the start of `runc run -d` of a bundle with the same root
    filesystem and process until the same HTTP GET answers (host network, so
    nothing but the container start is measured);
  * the memory (PSS) of idle pods: shim plus container processes, per pod,
    and the provider's RSS.
Prints a Markdown table for docs/benchmarks.md and the raw figures as JSON.
"""
import argparse, json, os, shutil, socket, statistics, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def http_ok(host, port):
    try:
        with socket.create_connection((host, port), timeout=1) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            return s.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def wait_http(host, port, timeout=30):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if http_ok(host, port):
            return
        time.sleep(0.001)
    raise RuntimeError(f"{host}:{port} never answered")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pss_kib(pid):
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def stats(xs):
    xs = sorted(xs)
    return {"median": statistics.median(xs), "mean": statistics.mean(xs), "min": xs[0], "max": xs[-1], "n": len(xs)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--idle-pods", type=int, default=10)
    ap.add_argument("--bin", default=os.path.join(ROOT, "target/release"))
    args = ap.parse_args()
    sealpod = os.path.join(args.bin, "sealpod")
    sample = os.path.join(args.bin, "sealpod-sample")
    runc = shutil.which("runc")
    tmp = tempfile.mkdtemp(prefix="sealpod-bench-")
    home = os.path.join(tmp, "publisher")
    subprocess.run([sealpod, "image", "from-binary", sample, "--out", f"{tmp}/images/sample", "--tag", "v1"],
                   check=True, stdout=subprocess.DEVNULL)
    port = free_port()
    ready = f"{tmp}/ready.json"
    provider = subprocess.Popen([sealpod, "provider", "run", "--listen", f"/ip4/127.0.0.1/tcp/{port}",
                                 "--state-dir", f"{tmp}/provider", "--image-root", f"{tmp}/images",
                                 "--ready-file", ready], stdout=subprocess.DEVNULL, stderr=open(f"{tmp}/provider.log", "w"))
    try:
        while not os.path.exists(ready):
            time.sleep(0.01)
        addr = json.load(open(ready))["addresses"][0]
        pod = f"{tmp}/pod.yaml"
        with open(pod, "w") as f:
            f.write(f"""containers:
  - name: web
    image: oci:{tmp}/images/sample:v1
    args: [serve, --port, "8080"]
    ports: [{{port: 0, targetPort: 8080}}]
    resources: {{cpu: 100m, memory: 32Mi}}
""")

        def deploy():
            t0 = time.monotonic()
            out = subprocess.run([sealpod, "--home", home, "--json", "deploy", pod, "--provider", addr],
                                 check=True, capture_output=True)
            t_cmd = time.monotonic() - t0
            status = json.loads(out.stdout)["status"]
            ma = status["addresses"][0]["multiaddr"].split("/")
            wait_http(ma[2], int(ma[4]))
            return status["podId"], time.monotonic() - t0, t_cmd

        def delete(pod_id):
            subprocess.run([sealpod, "--home", home, "delete", pod_id], check=True, stdout=subprocess.DEVNULL)

        pod_id, _, _ = deploy()  # warm-up: unpacks the image once
        delete(pod_id)
        sealpod_ms, cmd_ms = [], []
        for _ in range(args.runs):
            pod_id, t, tc = deploy()
            sealpod_ms.append(t * 1000)
            cmd_ms.append(tc * 1000)
            delete(pod_id)

        runc_ms = []
        if runc:
            image_rootfs = next(os.path.join(f"{tmp}/provider/images", d, "rootfs")
                                for d in os.listdir(f"{tmp}/provider/images") if not d.startswith("."))
            bundle = f"{tmp}/runc-bundle"
            os.makedirs(bundle)
            subprocess.run(["cp", "-a", image_rootfs, f"{bundle}/rootfs"], check=True)
            subprocess.run([runc, "spec"], cwd=bundle, check=True)
            cfg = json.load(open(f"{bundle}/config.json"))
            rport = free_port()
            cfg["process"]["terminal"] = False
            cfg["process"]["args"] = ["/app/sealpod-sample", "serve", "--port", str(rport)]
            cfg["root"]["readonly"] = False
            cfg["linux"]["namespaces"] = [n for n in cfg["linux"]["namespaces"] if n["type"] != "network"]
            json.dump(cfg, open(f"{bundle}/config.json", "w"))
            for i in range(args.runs + 1):
                cid = f"sealpod-bench-{os.getpid()}-{i}"
                t0 = time.monotonic()
                subprocess.run([runc, "run", "-d", "--bundle", bundle, cid], check=True,
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                wait_http("127.0.0.1", rport)
                t = time.monotonic() - t0
                if i > 0:
                    runc_ms.append(t * 1000)
                subprocess.run([runc, "delete", "-f", cid], check=True)
                while http_ok("127.0.0.1", rport):
                    time.sleep(0.01)

        provider_before = rss_kib(provider.pid)
        pods = [deploy()[0] for _ in range(args.idle_pods)]
        time.sleep(1)
        per_pod = []
        for pid_ in pods:
            st = json.load(open(f"{tmp}/provider/pods/{pid_}/status.json"))
            procs = [st["shim_pid"]] + [c["pid"] for c in st["containers"] if c.get("pid")]
            per_pod.append({"shim": pss_kib(st["shim_pid"]),
                            "containers": sum(pss_kib(p) for p in procs[1:])})
        provider_after = rss_kib(provider.pid)
        for pid_ in pods:
            delete(pid_)

        result = {
            "sealpod_deploy_to_port_ms": stats(sealpod_ms),
            "sealpod_deploy_command_ms": stats(cmd_ms),
            "runc_run_to_port_ms": stats(runc_ms) if runc_ms else None,
            "idle_pod_pss_kib": {
                "shim": stats([p["shim"] for p in per_pod]),
                "containers": stats([p["containers"] for p in per_pod]),
            },
            "provider_rss_kib": {"before": provider_before, "with_idle_pods": provider_after, "pods": args.idle_pods},
            "cpus": os.cpu_count(),
            "kernel": os.uname().release,
        }
        s, r = result["sealpod_deploy_to_port_ms"], result["runc_run_to_port_ms"]
        print("| what | median | mean | min | max |")
        print("|---|---|---|---|---|")
        print(f"| sealpod deploy → port answers | {s['median']:.1f} ms | {s['mean']:.1f} ms | {s['min']:.1f} ms | {s['max']:.1f} ms |")
        c = result["sealpod_deploy_command_ms"]
        print(f"| sealpod deploy command alone | {c['median']:.1f} ms | {c['mean']:.1f} ms | {c['min']:.1f} ms | {c['max']:.1f} ms |")
        if r:
            print(f"| runc run -d → port answers | {r['median']:.1f} ms | {r['mean']:.1f} ms | {r['min']:.1f} ms | {r['max']:.1f} ms |")
            print(f"\noverhead of sealpod over runc (medians): {s['median'] - r['median']:.1f} ms")
        m = result["idle_pod_pss_kib"]
        print(f"idle pod: shim PSS {m['shim']['median']} KiB, container PSS {m['containers']['median']} KiB (medians of {args.idle_pods})")
        print(f"provider RSS: {provider_before} KiB idle, {provider_after} KiB with {args.idle_pods} pods")
        print(json.dumps(result, indent=2))
    finally:
        provider.terminate()
        provider.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    if os.geteuid() != 0:
        sys.exit("run as root: pods need namespaces, cgroups and mounts")
    main()
