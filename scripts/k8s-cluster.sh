#!/usr/bin/env bash
# A real single-node Kubernetes on loopback, for the k8s backend's tests and
# benchmarks: etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
# containerd and a kubelet, all from Debian (Kubernetes 1.20.2 built from
# Debian's `kubernetes` source package, etcd 3.4, containerd 1.6, runc, the
# bridge CNI plugins).
#
#   scripts/k8s-cluster.sh build        builds the binaries once, into the cache
#   scripts/k8s-cluster.sh up [DIR]     starts a cluster; DIR/kubeconfig is admin
#   scripts/k8s-cluster.sh down [DIR]   stops it and removes everything it made
#   scripts/k8s-cluster.sh import DIR IMAGE.tar   loads an OCI archive into containerd
#   scripts/k8s-cluster.sh status [DIR]
#
# Environment: SEALPOD_K8S_REGISTRIES (default 127.0.0.1:5055 … :5064), the
# registries the nodes may pull from over plain HTTP; SEALPOD_K8S_CACHE (default /var/cache/sealpod/k8s-1.20.2) holds
# the built binaries and the pause image, outside any checkout, so CI builds
# them once per machine (about 10 minutes on 2 cores). DIR defaults to
# /run/sealpod-k8s. Needs root (containerd, the kubelet, a bridge).
#
# What `down` removes: the processes (by the pid files `up` wrote), the pods'
# mounts under DIR, the CNI bridge `sealk8s0`, the iptables chains named
# KUBE-* and CNI-*, the kubepods cgroups, and DIR itself.
#
# Pitfalls this machine kind has (see docs/kubernetes.md): CAP_SYS_RESOURCE
# is missing, so containerd needs `restrict_oom_score_adj`; the node cannot be
# named by a loopback IP, so the kubelet registers as `localhost` and the
# apiserver reaches it at localhost:10250 for logs and exec.
set -euo pipefail
K8S_VERSION=1.20.5+really1.20.2-1.1+deb12u1
cache="${SEALPOD_K8S_CACHE:-/var/cache/sealpod/k8s-1.20.2}"
bin="$cache/bin"
cmd="${1:-}"
dir="${2:-/run/sealpod-k8s}"
bridge=sealk8s0
pod_cidr=10.244.0.0/24
etcd_port=23790
# Registries the nodes pull from over plain HTTP: the providers' own (a
# provider serves its pods' images on --k8s-registry-listen, 127.0.0.1:5055
# by default; tests run several providers, each on a port of this range).
registries="${SEALPOD_K8S_REGISTRIES:-$(echo 127.0.0.1:{5055..5064})}"
api_port=16443

die() { echo "k8s-cluster: $*" >&2; exit 1; }
log() { echo "k8s-cluster: $*" >&2; }

need_root() { [ "$(id -u)" = 0 ] || die "needs root (containerd, the kubelet and a bridge)"; }

apt_install() {
  local missing=()
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return
  log "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

built() {
  for b in kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy etcd pause; do
    [ -x "$bin/$b" ] || return 1
  done
  [ -f "$cache/pause.tar" ]
}

build() {
  need_root
  apt_install containerd runc containernetworking-plugins iptables openssl
  command -v kubectl >/dev/null || apt_install kubernetes-client
  if built; then log "binaries already in $bin"; return; fi
  apt_install golang-go rsync gcc libc6-dev
  local work
  work="$(mktemp -d /var/tmp/sealpod-k8s-build.XXXXXX)"
  trap 'rm -rf "$work"' RETURN
  # Debian's source package, through a private apt configuration holding a
  # deb-src line (the machine's own sources carry binaries only).
  mkdir -p "$work/apt/lists/partial" "$work/src"
  local mirror
  mirror="$(grep -hoE '^(URIs:|deb) *https?://[^ ]+/debian' /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null | head -1 | grep -oE 'https?://[^ ]+' || true)"
  mirror="${mirror:-http://deb.debian.org/debian}"
  printf 'deb-src %s bookworm main\ndeb-src %s bookworm-updates main\n' "$mirror" "$mirror" >"$work/apt/sources.list"
  local aptopts=(-o "Dir::Etc::SourceList=$work/apt/sources.list" -o "Dir::Etc::SourceParts=/dev/null"
    -o "Dir::State::Lists=$work/apt/lists" -o "APT::Sandbox::User=root")
  log "fetching Debian's kubernetes $K8S_VERSION source"
  apt-get "${aptopts[@]}" update -qq
  (cd "$work/src" && apt-get "${aptopts[@]}" source --download-only -qq "kubernetes=$K8S_VERSION")
  tar -C "$work/src" -xzf "$work"/src/kubernetes_*.orig.tar.gz
  local tree
  tree="$(find "$work/src" -maxdepth 1 -type d -name 'kubernetes-1.20*' | head -1)"
  [ -n "$tree" ] || die "the source archive holds no kubernetes-1.20 tree"
  mkdir -p "$work/gopath/src/k8s.io"
  ln -s "$tree" "$work/gopath/src/k8s.io/kubernetes"
  log "building kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kube-proxy (about 10 minutes on 2 cores)"
  (cd "$work/gopath/src/k8s.io/kubernetes" &&
    GOPATH="$work/gopath" GO111MODULE=off CGO_ENABLED=0 HOME="$work/home" \
      make WHAT="cmd/kube-apiserver cmd/kube-controller-manager cmd/kube-scheduler cmd/kubelet cmd/kube-proxy" >"$work/make.log" 2>&1) ||
    { tail -40 "$work/make.log" >&2; die "the Kubernetes build failed"; }
  mkdir -p "$bin"
  for b in kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy; do
    install -m 0755 "$tree/_output/local/bin/linux/amd64/$b" "$bin/$b"
  done
  # The pause container every pod sandbox holds, from the same tree.
  gcc -Os -static -o "$bin/pause" "$tree/build/pause/linux/pause.c"
  # etcd from Debian, unpacked rather than installed (no service starts).
  (cd "$work" && apt-get download -qq etcd-server && dpkg-deb -x etcd-server_*.deb etcd)
  install -m 0755 "$work/etcd/usr/bin/etcd" "$bin/etcd"
  make_pause_image "$work"
  log "built into $bin"
}

# An OCI archive of the pause binary, imported into containerd as
# docker.io/local/pause:1 (no registry is reachable to pull one).
make_pause_image() {
  local work="$1/pause-image"
  mkdir -p "$work/rootfs" "$work/blobs/sha256"
  cp "$bin/pause" "$work/rootfs/pause"
  tar -C "$work/rootfs" --owner=0 --group=0 --numeric-owner --mtime=@0 -cf "$work/layer.tar" pause
  local layer diff cfg mani size_l size_c size_m
  layer="$(sha256sum "$work/layer.tar" | cut -d' ' -f1)"
  diff="$layer"
  size_l="$(stat -c %s "$work/layer.tar")"
  cp "$work/layer.tar" "$work/blobs/sha256/$layer"
  printf '{"architecture":"amd64","os":"linux","config":{"Entrypoint":["/pause"]},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' "$diff" >"$work/config.json"
  cfg="$(sha256sum "$work/config.json" | cut -d' ' -f1)"
  size_c="$(stat -c %s "$work/config.json")"
  cp "$work/config.json" "$work/blobs/sha256/$cfg"
  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:%s","size":%s}]}' \
    "$cfg" "$size_c" "$layer" "$size_l" >"$work/manifest.json"
  mani="$(sha256sum "$work/manifest.json" | cut -d' ' -f1)"
  size_m="$(stat -c %s "$work/manifest.json")"
  cp "$work/manifest.json" "$work/blobs/sha256/$mani"
  printf '{"imageLayoutVersion":"1.0.0"}' >"$work/oci-layout"
  printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"io.containerd.image.name":"docker.io/local/pause:1","org.opencontainers.image.ref.name":"1"}}]}' \
    "$mani" "$size_m" >"$work/index.json"
  tar -C "$work" --owner=0 --group=0 --numeric-owner -cf "$cache/pause.tar" oci-layout index.json blobs
}


pidfiles=(kube-proxy kubelet kube-scheduler kube-controller-manager kube-apiserver containerd etcd)

start() { # name, then the command
  local name="$1"; shift
  "$@" >"$dir/logs/$name.log" 2>&1 &
  echo $! >"$dir/pids/$name"
}

wait_for() { # what, seconds, then a command that succeeds when ready
  local what="$1" secs="$2"; shift 2
  for _ in $(seq 1 $((secs * 4))); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.25
  done
  log "$what did not come up in ${secs}s; its log:"
  tail -20 "$dir/logs/$what.log" >&2 || true
  return 1
}

kubectl_() { kubectl --kubeconfig "$dir/kubeconfig" "$@"; }

pki() {
  local p="$dir/pki"
  mkdir -p "$p"
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj /CN=sealpod-k8s-ca \
    -keyout "$p/ca.key" -out "$p/ca.crt" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj /CN=kube-apiserver -keyout "$p/apiserver.key" -out "$p/apiserver.csr" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc\n' >"$p/ext"
  openssl x509 -req -in "$p/apiserver.csr" -CA "$p/ca.crt" -CAkey "$p/ca.key" -CAcreateserial -days 3650 \
    -extfile "$p/ext" -out "$p/apiserver.crt" 2>/dev/null
  openssl genrsa -out "$p/sa.key" 2048 2>/dev/null
  openssl rsa -in "$p/sa.key" -pubout -out "$p/sa.pub" 2>/dev/null
  # One bearer token, in system:masters, for every component and for the
  # provider: the cluster is a loopback test fixture, not a multi-user one.
  head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$p/token"
  printf '%s,admin,1,"system:masters"\n' "$(cat "$p/token")" >"$p/tokens.csv"
  chmod 600 "$p"/*
  cat >"$dir/kubeconfig" <<KC
apiVersion: v1
kind: Config
clusters:
- name: sealpod-k8s
  cluster:
    server: https://127.0.0.1:$api_port
    certificate-authority-data: $(base64 -w0 "$p/ca.crt")
users:
- name: admin
  user:
    token: $(cat "$p/token")
contexts:
- name: sealpod-k8s
  context: {cluster: sealpod-k8s, user: admin}
current-context: sealpod-k8s
KC
  chmod 600 "$dir/kubeconfig"
}

containerd_config() {
  mkdir -p "$dir/containerd" "$dir/cni"
  cat >"$dir/containerd/config.toml" <<CT
version = 2
root = "$dir/containerd/root"
state = "$dir/containerd/state"
[grpc]
  address = "$dir/containerd/containerd.sock"
[ttrpc]
  address = "$dir/containerd/containerd.sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "$dir/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "docker.io/local/pause:1"
  # This machine kind lacks CAP_SYS_RESOURCE: without it runc fails with
  # "can't get final child's PID from pipe".
  restrict_oom_score_adj = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        Root = "$dir/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$dir/cni"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "$dir/certs.d"
CT
  # The providers' image registries, over plain HTTP on loopback.
  local registry
  for registry in $registries; do
    mkdir -p "$dir/certs.d/$registry"
    cat >"$dir/certs.d/$registry/hosts.toml" <<HT
server = "http://$registry"
[host."http://$registry"]
  capabilities = ["pull", "resolve"]
HT
  done
  cat >"$dir/cni/10-sealk8s.conflist" <<CNI
{"cniVersion": "0.4.0", "name": "sealk8s", "plugins": [
  {"type": "bridge", "bridge": "$bridge", "isGateway": true, "ipMasq": true, "hairpinMode": true,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "$pod_cidr"}]], "routes": [{"dst": "0.0.0.0/0"}],
            "dataDir": "$dir/cni-ipam"}},
  {"type": "portmap", "capabilities": {"portMappings": true}}]}
CNI
}

kubelet_config() {
  mkdir -p "$dir/kubelet"
  cat >"$dir/kubelet/config.yaml" <<KL
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: 127.0.0.1
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
cgroupDriver: cgroupfs
failSwapOn: false
podCIDR: $pod_cidr
authentication:
  anonymous: {enabled: true}
  webhook: {enabled: false}
authorization: {mode: AlwaysAllow}
# A test node never evicts pods nor collects images for disk pressure: the
# pause image is imported, not pullable, and this machine's disk may well
# be fuller than the 85% at which the kubelet would start deleting images.
evictionHard: {memory.available: "0%", nodefs.available: "0%", imagefs.available: "0%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
KL
}

up() {
  need_root
  built || die "no binaries in $bin; run: $0 build"
  [ ! -e "$dir/pids" ] || die "$dir holds a cluster already (run: $0 down $dir)"
  for port in $etcd_port $api_port 10250; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then die "port $port on 127.0.0.1 is taken"; fi
  done
  mkdir -p "$dir/pids" "$dir/logs" "$dir/etcd"
  [ -d /var/log/pods ] || touch "$dir/made-var-log-pods"
  # containerd's shims put their sockets under /run/containerd whatever
  # its state directory is.
  [ -d /run/containerd ] || touch "$dir/made-run-containerd"
  # kube-proxy turns on route_localnet for NodePorts on 127.0.0.1; put back.
  sysctl -n net.ipv4.conf.all.route_localnet >"$dir/route_localnet" 2>/dev/null || true
  [ -d /var/log/containers ] || touch "$dir/made-var-log-containers"
  pki
  local p="$dir/pki"
  start etcd "$bin/etcd" --data-dir "$dir/etcd" --name sealk8s \
    --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls http://127.0.0.1:23800 --initial-advertise-peer-urls http://127.0.0.1:23800 \
    --initial-cluster sealk8s=http://127.0.0.1:23800
  start kube-apiserver "$bin/kube-apiserver" --etcd-servers "http://127.0.0.1:$etcd_port" \
    --bind-address 127.0.0.1 --secure-port "$api_port" --insecure-port 0 --advertise-address 127.0.0.1 \
    --tls-cert-file "$p/apiserver.crt" --tls-private-key-file "$p/apiserver.key" --client-ca-file "$p/ca.crt" \
    --token-auth-file "$p/tokens.csv" --authorization-mode Node,RBAC \
    --service-account-key-file "$p/sa.pub" --service-account-signing-key-file "$p/sa.key" \
    --service-account-issuer https://kubernetes.default.svc --service-cluster-ip-range 10.0.0.0/24 \
    --service-node-port-range 30000-32767 --kubelet-preferred-address-types Hostname,InternalIP \
    --allow-privileged=false
  wait_for kube-apiserver 60 kubectl_ get --raw /readyz
  start kube-controller-manager "$bin/kube-controller-manager" --kubeconfig "$dir/kubeconfig" \
    --service-account-private-key-file "$p/sa.key" --root-ca-file "$p/ca.crt" --port 0 --secure-port 0 \
    --leader-elect=false --use-service-account-credentials=false --cluster-cidr "$pod_cidr"
  start kube-scheduler "$bin/kube-scheduler" --kubeconfig "$dir/kubeconfig" --port 0 --secure-port 0 \
    --leader-elect=false
  containerd_config
  start containerd containerd --config "$dir/containerd/config.toml"
  wait_for containerd 30 ctr --address "$dir/containerd/containerd.sock" version
  ctr --address "$dir/containerd/containerd.sock" -n k8s.io images import "$cache/pause.tar" >/dev/null
  kubelet_config
  start kubelet "$bin/kubelet" --config "$dir/kubelet/config.yaml" --kubeconfig "$dir/kubeconfig" \
    --container-runtime remote --container-runtime-endpoint "unix://$dir/containerd/containerd.sock" \
    --hostname-override localhost --root-dir "$dir/kubelet" --cert-dir "$dir/kubelet/pki" --v 1
  start kube-proxy "$bin/kube-proxy" --kubeconfig "$dir/kubeconfig" --hostname-override localhost \
    --proxy-mode iptables --cluster-cidr "$pod_cidr" --nodeport-addresses 127.0.0.0/8 \
    --conntrack-max-per-core 0 --conntrack-tcp-timeout-established 0 --conntrack-tcp-timeout-close-wait 0 \
    --metrics-bind-address 127.0.0.1:10249 --healthz-bind-address 127.0.0.1:10256
  wait_for kubelet 90 node_ready
  # The namespace's default service account must exist before pods can be made.
  wait_for kube-controller-manager 60 kubectl_ -n default get serviceaccount default
  log "up: kubeconfig $dir/kubeconfig; nodes pull over plain HTTP from $registries"
  echo "$dir/kubeconfig"
}

node_ready() {
  kubectl_ get node localhost -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}' | grep -qx True
}

down() {
  need_root
  [ -d "$dir" ] || { log "nothing at $dir"; return 0; }
  for name in "${pidfiles[@]}"; do
    local f="$dir/pids/$name"
    [ -f "$f" ] || continue
    kill "$(cat "$f")" 2>/dev/null || true
  done
  sleep 1
  for name in "${pidfiles[@]}"; do
    local f="$dir/pids/$name"
    [ -f "$f" ] && kill -9 "$(cat "$f")" 2>/dev/null || true
  done
  # The containers outlive containerd in their shims: kill the shims this
  # cluster's containerd started, then whatever is left in the pods' cgroups.
  for pid in $(pgrep -f "containerd-shim.*$dir/containerd" || true); do kill -9 "$pid" 2>/dev/null || true; done
  local cg
  for cg in $(find /sys/fs/cgroup -depth -type d -name 'kubepods*' 2>/dev/null); do
    find "$cg" -name cgroup.procs -exec cat {} + 2>/dev/null | xargs -r kill -9 2>/dev/null || true
  done
  sleep 0.5
  for cg in $(find /sys/fs/cgroup -depth -type d -path '*kubepods*' 2>/dev/null); do rmdir "$cg" 2>/dev/null || true; done
  # Mounts under DIR (pod volumes, sandboxes, overlay snapshots), deepest first.
  awk -v d="$dir/" 'index($2, d) == 1 {print $2}' /proc/mounts | sort -r | while read -r m; do
    umount -l "$m" 2>/dev/null || true
  done
  ip link del "$bridge" 2>/dev/null || true
  # The chains kube-proxy, the kubelet and the CNI plugins added.
  local t
  for t in filter nat mangle; do
    if iptables-save -t "$t" 2>/dev/null | grep -qE 'KUBE-|CNI-'; then
      iptables-save -t "$t" | grep -vE 'KUBE-|CNI-' | iptables-restore -T "$t" || log "could not clean iptables table $t"
    fi
  done
  if [ -s "$dir/route_localnet" ]; then
    sysctl -qw "net.ipv4.conf.all.route_localnet=$(cat "$dir/route_localnet")" 2>/dev/null || true
  fi
  [ -f "$dir/made-run-containerd" ] && rm -rf /run/containerd
  [ -f "$dir/made-var-log-pods" ] && rm -rf /var/log/pods
  [ -f "$dir/made-var-log-containers" ] && rm -rf /var/log/containers
  rm -rf "$dir"
  log "down: $dir removed"
}

status() {
  [ -f "$dir/kubeconfig" ] || die "no cluster at $dir"
  for name in "${pidfiles[@]}"; do
    local f="$dir/pids/$name" state=stopped
    [ -f "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null && state="running (pid $(cat "$f"))"
    printf '%-24s %s\n' "$name" "$state"
  done
  kubectl_ get nodes -o wide 2>/dev/null || true
}

import() {
  local archive="${3:-}"
  [ -f "$archive" ] || die "usage: $0 import DIR IMAGE.tar"
  ctr --address "$dir/containerd/containerd.sock" -n k8s.io images import "$archive"
}

case "$cmd" in
  build) build ;;
  up) up ;;
  down) down ;;
  status) status ;;
  import) import "$@" ;;
  *) sed -n '2,27p' "$0" | sed 's/^# \{0,1\}//'; [ -z "$cmd" ] || [ "$cmd" = help ] || [ "$cmd" = --help ] || exit 2 ;;
esac
