#!/usr/bin/env bash
# The README's run command: installs what is needed, builds, then runs the main job on loopback:
#   ktls-agent (embedded default configuration: 127.0.0.1:8443, offload=preferred, an in-memory
#   development certificate) + ktls-demo-app subscribed to it + a short load from real clients
#   (curl, openssl s_client), and prints what was offloaded: kTLS or relay, and why.
# On a kernel without kTLS (like these build machines) every connection is relayed and the
# reason is printed; `bash .ci/demo.sh --vm` runs the same job inside a VM with a Debian cloud
# kernel that has kTLS.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
build=${KTLS_BUILD_DIR:-build}
export KTLS_BUILD_DIR=$build

if [[ ${1:-} == --vm ]]; then
  bash .ci/install-deps.sh all
  bash .ci/build.sh
  exec bash tests/vm/run-demo.sh "$build"
fi

if [[ ${KTLS_DEMO_IN_GUEST:-0} != 1 ]]; then
  bash .ci/install-deps.sh build
  bash .ci/build.sh
fi

work=$(mktemp -d /tmp/ktls-demo.XXXXXX)
port=${KTLS_DEMO_PORT:-8443}
sock=$work/handoff.sock
cleanup() {
  [[ -n ${app_pid:-} ]] && kill "$app_pid" 2>/dev/null || true
  [[ -n ${agent_pid:-} ]] && kill "$agent_pid" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# A static file for the sendfile path.
mkdir -p "$work/static"
head -c 1048576 /dev/urandom >"$work/static/blob.bin"

agent_bin=${KTLS_AGENT_BIN:-$root/$build/agent/ktls-agent}
app_bin=${KTLS_DEMO_APP_BIN:-$root/$build/client/ktls-demo-app}

echo "== starting ktls-agent (embedded default configuration, handoff socket $sock)"
"$agent_bin" --handoff_socket="$sock" --listen=127.0.0.1:$port --ready_file="$work/ready" \
  >"$work/agent.log" 2>&1 &
agent_pid=$!
for _ in $(seq 1 300); do [[ -f $work/ready ]] && break; sleep 0.1; done
[[ -f $work/ready ]] || { cat "$work/agent.log"; echo "agent did not start"; exit 1; }
sed -n '/kernel kTLS probe/,/^$/p' "$work/agent.log" | sed 's/^/   /'

echo "== starting ktls-demo-app (2 worker processes)"
"$app_bin" --agent_socket="$sock" --workers=2 --static_dir="$work/static" >"$work/app.log" 2>&1 &
app_pid=$!
for _ in $(seq 1 100); do
  curl -sk "https://localhost:$port/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done

url=https://localhost:$port
echo "== one request, as the app saw the connection (GET /conninfo):"
curl -sk --http1.1 "$url/conninfo" | sed 's/^/   /'
echo
echo "== short load: 200 keep-alive requests (curl), TLS 1.2 and 1.3 connections (openssl s_client), a 1 MiB static file via sendfile"
args=()
for i in $(seq 1 100); do args+=("$url/bytes/16384"); done
# One connection each, 100 keep-alive requests on it (bodies discarded).
curl -sk --http1.1 --tlsv1.3 "${args[@]}" >/dev/null
curl -sk --http1.1 --tlsv1.2 --tls-max 1.2 "${args[@]}" >/dev/null
for v in -tls1_2 -tls1_3; do
  printf 'GET /bytes/100 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n' |
    timeout 20 openssl s_client -connect 127.0.0.1:$port -servername localhost $v -quiet -ign_eof >/dev/null 2>&1
done
want=$(sha256sum <"$work/static/blob.bin" | cut -d' ' -f1)
got=$(curl -sk --http1.1 "$url/static/blob.bin" | sha256sum | cut -d' ' -f1)
[[ $want == "$got" ]] && echo "   static file: sha256 matches" || { echo "   static file: MISMATCH"; exit 1; }

kill "$app_pid"; wait "$app_pid" 2>/dev/null || true; app_pid=
kill "$agent_pid"; wait "$agent_pid" 2>/dev/null || true; agent_pid=
echo "== what was offloaded (ktls-agent's final stats):"
grep -E 'final stats' "$work/agent.log" | sed -E 's/.*final stats: //' | tr '|' '\n' | sed 's/^ */   /'
grep -E 'relaying instead of kTLS' "$work/agent.log" | sed -E 's/.*ktls-agent: /   why: /' | sort -u || true
