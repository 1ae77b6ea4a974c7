#!/bin/sh
# Outbound dial rate through ktls-agent with and without session resumption, measured from the app
# side: ktls-probe-app dials openssl s_server (one process, one core) one dial at a time and reports
# how long each ktls_agent_dial took (request sent -> descriptor received).
#
#   resumed          the same upstream every time: the agent's session cache resumes
#   full             a new SNI per dial (the cache is keyed per upstream): full handshakes
#   full-no-tickets  TLS 1.3 against a server that issues no tickets (s_server -num_tickets 0)
#
# Usage (POSIX sh, so it also runs as a VM guest script):
#   tests/integration/support/probe_app/dial_rate.sh [BUILD_DIR [N]]
#   KTLS_VM_GUEST_ENV=$'DIAL_RATE_BUILD=/abs/build\nDIAL_RATE_N=60' tests/vm/run-vm.sh VER \
#     tests/integration/support/probe_app/dial_rate.sh /abs/build/agent/ktls-agent \
#     /abs/build/tests/ktls-probe-app
# BUILD_DIR (default $DIAL_RATE_BUILD, else ./build) must hold agent/ktls-agent and
# tests/ktls-probe-app; N dials per line (default $DIAL_RATE_N, else 100). Output: one line per
# version and mode with the mean latency and the resulting sequential rate.
set -u
build=${1:-${DIAL_RATE_BUILD:-build}}
n=${2:-${DIAL_RATE_N:-100}}
agent=$build/agent/ktls-agent
probe=$build/tests/ktls-probe-app
if [ ! -x "$agent" ] || [ ! -x "$probe" ]; then
  echo "dial_rate: need $agent and $probe" >&2
  exit 2
fi
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=localhost \
  -addext subjectAltName=DNS:localhost,IP:127.0.0.1 -keyout "$dir/key.pem" -out "$dir/cert.pem" \
  2>/dev/null || { echo "dial_rate: openssl req failed" >&2; exit 1; }
"$agent" --listen=127.0.0.1:0 --handoff_socket="$dir/h.sock" --ready_file="$dir/ready" --workers=1 \
  --control_socket="$dir/c.sock" --metrics_address= >"$dir/agent.log" 2>&1 &
agent_pid=$!
i=0
while [ ! -s "$dir/ready" ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done

listening() { grep -q ":$(printf %04X "$1") [0-9A-F:]* 0A" /proc/net/tcp; }

# Mean of the ms= fields of successful PROBE-DIAL lines on stdin.
summary() {
  awk -v v="$1" -v m="$2" '{
      ok = 0; ms = 0; r = 0; p = ""
      for (i = 1; i <= NF; i++) {
        split($i, kv, "=")
        if (kv[1] == "ok") ok = kv[2]; else if (kv[1] == "ms") ms = kv[2]
        else if (kv[1] == "resumed") r = kv[2]; else if (kv[1] == "data_path") p = kv[2]
      }
      if (ok != 1) { failed++; next }
      sum += ms; count++; resumed += r; path = p
    }
    END {
      if (count == 0) { printf "%s %-16s no successful dial (%d failed)\n", v, m, failed; exit }
      printf "%s %-16s data_path=%s dials=%d resumed=%d failed=%d mean=%.2f ms rate=%.0f/s\n",
             v, m, path, count, resumed, failed, sum / count, 1000 * count / sum
    }'
}

for v in TLSv1.3 TLSv1.2; do
  for mode in resumed full full-no-tickets; do
    [ $mode = full-no-tickets ] && [ $v = TLSv1.2 ] && continue
    flag=-tls1_3
    [ $v = TLSv1.2 ] && flag=-tls1_2
    port=$((20000 + $(od -An -N2 -tu2 /dev/urandom) % 20000))
    # stdin: a FIFO this script holds open, so s_server (-quiet: no command letters) stays up.
    rm -f "$dir/in"
    mkfifo "$dir/in"
    if [ $mode = full-no-tickets ]; then
      openssl s_server -accept 127.0.0.1:$port -cert "$dir/cert.pem" -key "$dir/key.pem" -quiet \
        $flag -naccept $((n + 1)) -num_tickets 0 <"$dir/in" >/dev/null 2>&1 &
    else
      openssl s_server -accept 127.0.0.1:$port -cert "$dir/cert.pem" -key "$dir/key.pem" -quiet \
        $flag -naccept $((n + 1)) <"$dir/in" >/dev/null 2>&1 &
    fi
    server_pid=$!
    exec 3>"$dir/in"
    i=0
    while ! listening $port && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
    common="--agent_socket=$dir/h.sock --host=127.0.0.1 --port=$port --ca_file=$dir/cert.pem
      --tls_version=$v --expected_name=localhost"
    if [ $mode = resumed ]; then
      # The first dial fills the cache: left out.
      # shellcheck disable=SC2086 # $common is a list of flags
      "$probe" dial $common --sni=localhost --count=$((n + 1)) | tail -n +2 | summary $v $mode
    else
      # shellcheck disable=SC2086
      "$probe" dial $common --sni=localhost --count=1 >/dev/null
      i=1
      while [ $i -le "$n" ]; do
        # shellcheck disable=SC2086
        "$probe" dial $common --sni=full$i.test --count=1
        i=$((i + 1))
      done | summary $v $mode
    fi
    exec 3>&-
    kill $server_pid 2>/dev/null
    wait $server_pid 2>/dev/null
  done
done
kill $agent_pid
wait $agent_pid 2>/dev/null
exit 0
