#!/usr/bin/env bash
# permessage-deflate against an independent client: Python's `websockets` (its own RFC 7692
# code on zlib) in a venv, against a real crier. CRIER_BIN (default target/release/crier)
# picks the binary; the venv lives in target/websockets-venv.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
bin="${CRIER_BIN:-target/release/crier}"
case "$bin" in /*) ;; *) bin="$root/$bin" ;; esac
[ -x "$bin" ] || { echo "run.sh: crier binary not found at $bin" >&2; exit 2; }
venv="$root/target/websockets-venv"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import websockets' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check 'websockets>=13,<16'
fi
log="$(mktemp)"
"$bin" --listen 127.0.0.1:0 --threads 2 --max-message-bytes 65536 2>"$log" &
pid=$!
trap 'kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true; rm -f "$log"' EXIT
addr=""
for _ in $(seq 1 100); do
  addr=$(sed -n 's/.* listening on \([0-9.:]*\) .*/\1/p' "$log")
  [ -n "$addr" ] && break
  sleep 0.1
done
[ -n "$addr" ] || { cat "$log"; exit 1; }
CRIER_ADDR="$addr" "$venv/bin/python" "$here/test_compression.py"
