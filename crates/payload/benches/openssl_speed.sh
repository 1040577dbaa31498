#!/usr/bin/env bash
# OpenSSL's own signature verification speed for the key sizes that
# `cargo bench -p sealpod-payload --bench verify` measures (primitive/*),
# to set the two side by side. Prints one line per algorithm:
#   <algorithm>  <verifications per second>  <microseconds per verification>
set -euo pipefail
command -v openssl >/dev/null || { echo "openssl not found (Debian: apt-get install openssl)" >&2; exit 1; }
echo "# $(openssl version)"
out="$(openssl speed -seconds 1 rsa2048 ecdsap256 2>/dev/null)"
# rsa: "rsa 2048 bits 0.000613s 0.000018s   1631.0  55555.6" (sign, verify, sign/s, verify/s)
echo "$out" | awk '/^rsa +2048 bits/ { printf "rsa2048-sha256-verify  %.0f/s  %.1f us\n", $7, 1e6 / $7 }'
# ecdsa: " 256 bits ecdsa (nistp256)   0.0000s   0.0001s  45000.0  15000.0"
echo "$out" | awk '/ecdsa \(nistp256\)/ { printf "p256-sha256-verify     %.0f/s  %.1f us\n", $NF, 1e6 / $NF }'
