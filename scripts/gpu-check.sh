#!/usr/bin/env bash
# The check on a machine with an NVIDIA GPU (run as root, from the
# repository root): builds sealpod, writes a CDI spec with nvidia-ctk when it
# is installed (else the provider discovers /dev/nvidia*), starts a provider,
# deploys a pod asking for `nvidia.com/gpu: 1`, and inside it opens its
# /dev/nvidiaN and runs `nvidia-smi -L` (mounted by nvidia-ctk's spec).
# Prints the provider's inventory and what the pod saw; writes them under
# $OUT (default: target/gpu-check) for docs/gpus.md.
#
#   sudo scripts/gpu-check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-target/gpu-check}"
mkdir -p "$out"
work="$(mktemp -d /tmp/sealpod-gpu-check.XXXXXX)"
trap 'kill "${provider_pid:-0}" 2>/dev/null || true; rm -rf "$work"' EXIT
ls -l /dev/nvidia* >"$out/dev.txt" 2>&1 || { echo "no /dev/nvidia* here" | tee "$out/result.txt"; exit 1; }

cargo build --release -q
bin=target/release/sealpod
cdi_args=()
if command -v nvidia-ctk >/dev/null; then
  mkdir -p "$work/cdi"
  nvidia-ctk cdi generate --output="$work/cdi/nvidia.yaml" >"$out/nvidia-ctk.txt" 2>&1
  cdi_args=(--cdi-dir "$work/cdi")
fi
"$bin" --json provider gpus --state-dir "$work/provider" "${cdi_args[@]}" | tee "$out/inventory.json"

"$bin" image from-binary target/release/sealpod-sample --tag v1 --out "$work/images/sample" >/dev/null
"$bin" provider run --listen /ip4/127.0.0.1/tcp/0 --state-dir "$work/provider" --image-root "$work/images" \
  --ready-file "$work/ready.json" "${cdi_args[@]}" >"$out/provider.log" 2>&1 &
provider_pid=$!
for _ in $(seq 100); do [ -s "$work/ready.json" ] && break; sleep 0.1; done
addr="$(python3 -c 'import json,sys; print([a for a in json.load(open(sys.argv[1]))["addresses"] if "/tcp/" in a][0])' "$work/ready.json")"
cat >"$work/gpu.yaml" <<EOF
containers:
  - name: main
    image: oci:$work/images/sample:v1
    args: [serve, --port, "8080"]
    resources: {nvidia.com/gpu: 1}
EOF
export SEALPOD_HOME="$work/home"
pod="$("$bin" --json deploy "$work/gpu.yaml" --provider "$addr" | python3 -c 'import json,sys; print(json.load(sys.stdin)["status"]["podId"])')"
{
  echo "== /dev in the pod"; "$bin" exec "$pod" -- /app/sealpod-sample ls /dev
  echo "== open its GPU"; "$bin" exec "$pod" -- /app/sealpod-sample open /dev/nvidia0 || true
  echo "== nvidia-smi -L in the pod"; "$bin" exec "$pod" -- nvidia-smi -L || echo "(no nvidia-smi in the pod: the spec mounts none)"
  echo "== inventory while held"; "$bin" provider gpus --state-dir "$work/provider" "${cdi_args[@]}"
} 2>&1 | tee "$out/result.txt"
"$bin" delete "$pod"
