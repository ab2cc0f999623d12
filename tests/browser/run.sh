#!/usr/bin/env bash
# Run the browser tests against a real crier: start it on a free port, wait for /healthz,
# run `node --test`, stop it. CRIER_BIN (default target/release/crier, relative to the repo
# root) picks the binary; CHROMIUM (default /usr/bin/chromium) the browser.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
bin="${CRIER_BIN:-target/release/crier}"
case "$bin" in /*) ;; *) bin="$root/$bin" ;; esac
export CRIER_BIN="$bin"
[ -x "$bin" ] || { echo "run.sh: crier binary not found at $bin (cargo build --release, or set CRIER_BIN)" >&2; exit 2; }
[ -x "${CHROMIUM:-/usr/bin/chromium}" ] || { echo "run.sh: no chromium (apt-get install -y chromium)" >&2; exit 2; }
cd "$here"
[ -d node_modules/playwright-core ] || npm ci --no-audit --no-fund

port="$(node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')"
"$bin" --listen "127.0.0.1:$port" >"${TMPDIR:-/tmp}/crier-browser-$port.log" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  if [ "$(curl -fsS "http://127.0.0.1:$port/healthz" 2>/dev/null)" = "ok" ]; then break; fi
  kill -0 "$pid" 2>/dev/null || { echo "run.sh: crier exited:"; cat "${TMPDIR:-/tmp}/crier-browser-$port.log"; exit 1; }
  sleep 0.1
done
[ "$(curl -fsS "http://127.0.0.1:$port/healthz" 2>/dev/null)" = "ok" ] || { echo "run.sh: crier not healthy on $port" >&2; exit 1; }

export CRIER_URL="http://127.0.0.1:$port"
node --test --test-concurrency=1 --test-timeout=120000 "$@" ./*.test.js
