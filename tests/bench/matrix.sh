#!/usr/bin/env bash
# Runs the benchmark matrix on this machine (the host, or inside the kTLS VM, where run.sh puts
# it): every scenario against every server mode, side by side, and prints one JSON line per cell.
#
# Usage: matrix.sh --build=DIR --out=FILE [--modes=LIST] [--scenarios=LIST] [--duration=S]
#                  [--warmup=S] [--rounds=N] [--prefix=TEXT] [--perf] [--strace=N]
#   --modes      comma-separated, default: ktls,relay,inproc,stunnel,nginx in the VM (KTLS_VM=1),
#                relay,inproc,stunnel,nginx elsewhere (no kTLS in the host kernel)
#                  ktls     ktls-agent --offload=required, kTLS handoff to ktls-demo-app
#                  relay    ktls-agent --offload=off, the agent relays to ktls-demo-app
#                  inproc   ktls-demo-app --tls_listen: OpenSSL in the app process ("app does TLS")
#                  stunnel  stunnel4 in front of ktls-demo-app --plain_listen (userspace sidecar)
#                  nginx    nginx 1.22, ssl_conf_command Options KTLS, sendfile on (kernel offload
#                           where the kernel has kTLS; userspace TLS elsewhere)
#   --scenarios  comma-separated ids from the table below (default: all)
#   --duration   measured seconds per cell (default 4); --warmup: seconds of load before (default 1)
#   --rounds     the whole matrix this many times, modes rotated each round (default 3)
#   --prefix     put in front of every output line too (the VM guest uses it to mark its lines)
#   --perf       where the time goes: `perf record -a -e cpu-clock` (system-wide, no call graphs)
#                over each measured window, then the top of `perf report` by process + binary
#                and by process + symbol, as {"type":"profile", "mode", "scenario", "text"} lines
#   --strace=N   after each cell, N more requests (no warm-up) with `strace -f -c` attached to
#                the mode's server processes: syscalls per request, which unlike time do not
#                depend on how busy the machine is; {"type":"syscalls", ..., "requests", "text"}
#
# Every server runs with one worker (agent --workers=1, app --workers=1, nginx worker_processes 1;
# stunnel is thread-per-connection) and all of them run for the whole matrix, idle when not
# measured. A cell is one ktls-loadgen run (--warmup, then --duration measured) that also samples,
# at the window's edges, the CPU time of the mode's process trees (--watch_pids) and
# /proc/net/tls_stat; the app's read counters (GET /conninfo) are read before and after. Output
# line (JSON): {"type":"cell", "mode", "scenario", "round", "loadgen_rc", "run_tls_stat" (deltas
# over the whole run, warm-up included, so they count every connection), "app_reads",
# "app_read_bytes", "agent" (agent modes: handshake/kTLS-install/handoff seconds and counts from
# its /metrics over the cell), "loadgen": {its --json}}; plus {"type":"meta"...} first and
# {"type":"agent_stats"...}, {"type":"tls_stat"...} at the end.
set -uo pipefail

build="" out="" modes="" scenarios="" duration=4 warmup=1 rounds=3 prefix="" perf=0 strace_n=0
for a in "$@"; do
  case $a in
    --build=*) build=${a#*=} ;;
    --out=*) out=${a#*=} ;;
    --modes=*) modes=${a#*=} ;;
    --scenarios=*) scenarios=${a#*=} ;;
    --duration=*) duration=${a#*=} ;;
    --warmup=*) warmup=${a#*=} ;;
    --rounds=*) rounds=${a#*=} ;;
    --prefix=*) prefix=${a#*=} ;;
    --perf) perf=1 ;;
    --strace=*) strace_n=${a#*=} ;;
    *) echo "matrix: unknown argument $a" >&2; exit 2 ;;
  esac
done
[[ -n $build && -n $out ]] || { sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }
if [[ -z $modes ]]; then
  if [[ ${KTLS_VM:-0} == 1 ]]; then modes=ktls,relay,inproc,stunnel,nginx; else modes=relay,inproc,stunnel,nginx; fi
fi

agent_bin=$build/agent/ktls-agent
app_bin=$build/client/ktls-demo-app
loadgen=$build/client/ktls-loadgen
for b in "$agent_bin" "$app_bin" "$loadgen"; do
  [[ -x $b ]] || { echo "matrix: $b is not built" >&2; exit 1; }
done

# Scenario table: id | ktls-loadgen arguments | connections. Same arguments for every mode.
BULK=$((16 * 1024 * 1024))
declare -A SC_ARGS SC_CONN
SC_IDS=(get-0 get-16k get-64k get-1m close close-resume post-64k static-1m bulk-down bulk-up)
SC_ARGS[get-0]="--scenario=get --size=0";             SC_CONN[get-0]=16
SC_ARGS[get-16k]="--scenario=get --size=16384";       SC_CONN[get-16k]=16
SC_ARGS[get-64k]="--scenario=get --size=65536";       SC_CONN[get-64k]=16
SC_ARGS[get-1m]="--scenario=get --size=1048576";      SC_CONN[get-1m]=8
SC_ARGS[close]="--scenario=close --size=0";           SC_CONN[close]=8
SC_ARGS[close-resume]="--scenario=close --size=0 --resume"; SC_CONN[close-resume]=8
SC_ARGS[post-64k]="--scenario=post --size=65536";     SC_CONN[post-64k]=16
SC_ARGS[static-1m]="--scenario=static --static_name=blob.bin"; SC_CONN[static-1m]=8
SC_ARGS[bulk-down]="--scenario=bulk-down --size=$BULK"; SC_CONN[bulk-down]=1
SC_ARGS[bulk-up]="--scenario=bulk-up --size=16777216"; SC_CONN[bulk-up]=1
if [[ -n $scenarios ]]; then IFS=, read -ra SC_IDS <<<"$scenarios"; fi
for s in "${SC_IDS[@]}"; do [[ -n ${SC_ARGS[$s]:-} ]] || { echo "matrix: unknown scenario $s" >&2; exit 2; }; done
IFS=, read -ra MODES <<<"$modes"

work=$(mktemp -d "${TMPDIR:-/tmp}/ktls-bench.XXXXXX")
chmod 755 "$work" # nginx workers run as nobody
declare -A PIDS PORT MPORT
started=()
cleanup() {
  local p
  for p in "${started[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${started[@]}"; do wait "$p" 2>/dev/null; done
  rm -rf "$work"
}
trap cleanup EXIT
: >"$out"
emit() { printf '%s\n' "$1" >>"$out"; printf '%s%s\n' "$prefix" "$1"; }
log() { echo "matrix: $*" >&2; }

# A TCP port nothing on this machine uses (other CI runs share it): random, checked against
# /proc/net/tcp{,6}.
used_ports() { awk 'NR > 1 { split($2, a, ":"); print a[2] }' /proc/net/tcp /proc/net/tcp6 2>/dev/null; }
free_port() {
  local p hex i
  for i in $(seq 1 50); do
    p=$((20000 + (RANDOM * 32768 + RANDOM + $$) % 30000))
    hex=$(printf '%04X' "$p")
    used_ports | grep -qx "$hex" || { echo "$p"; return 0; }
  done
  echo "matrix: no free port" >&2
  return 1
}

# Content: a certificate (ECDSA P-256, as the agent's and nginx's), the static file, and for nginx
# the /bytes/N bodies as files (byte i = 'a' + i % 26, like the demo app's generated bodies).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$work/key.pem" \
  -out "$work/cert.pem" -days 7 -subj /CN=localhost -addext subjectAltName=DNS:localhost 2>/dev/null ||
  { log "openssl req failed"; exit 1; }
chmod 644 "$work/key.pem"
mkdir -p "$work/static" "$work/bytes" "$work/nginx"
head -c 1048576 /dev/urandom >"$work/static/blob.bin"
for s in "${SC_IDS[@]}"; do
  for n in $(grep -o -- '--size=[0-9]*' <<<"${SC_ARGS[$s]}" | cut -d= -f2); do
    [[ -f $work/bytes/$n ]] || yes abcdefghijklmnopqrstuvwxyz | tr -d '\n' | head -c "$n" >"$work/bytes/$n"
  done
done
chmod -R a+rX "$work"

wait_http() { # wait_http URL: until the server answers (10 s)
  local i
  for i in $(seq 1 100); do
    curl -sk --max-time 2 -o /dev/null "$1" && return 0
    sleep 0.1
  done
  return 1
}

start_agent_mode() { # start_agent_mode MODE OFFLOAD
  local mode=$1 offload=$2 port mport
  port=$(free_port) || return 1
  mport=$(free_port) || return 1
  # The control plane and the metrics exporter stay on (as deployed), on private endpoints.
  "$agent_bin" --listen=127.0.0.1:$port --handoff_socket="$work/$mode.sock" \
    --cert="$work/cert.pem:$work/key.pem" --offload="$offload" --workers=1 \
    --control_socket="$work/$mode-control.sock" --metrics_address=127.0.0.1:$mport \
    --ready_file="$work/$mode.ready" >"$work/$mode-agent.log" 2>&1 &
  local apid=$!
  started+=("$apid")
  for _ in $(seq 1 100); do [[ -f $work/$mode.ready ]] && break; sleep 0.1; done
  [[ -f $work/$mode.ready ]] || { log "$mode: agent did not start: $(tail -3 "$work/$mode-agent.log")"; return 1; }
  "$app_bin" --agent_socket="$work/$mode.sock" --workers=1 --static_dir="$work/static" \
    >"$work/$mode-app.log" 2>&1 &
  local ppid=$!
  started+=("$ppid")
  PIDS[$mode]="$apid $ppid"
  PORT[$mode]=$port
  MPORT[$mode]=$mport
}

start_mode() {
  local mode=$1 port pport
  case $mode in
    ktls) start_agent_mode ktls required || return 1 ;;
    relay) start_agent_mode relay off || return 1 ;;
    inproc)
      port=$(free_port) || return 1
      "$app_bin" --tls_listen=127.0.0.1:$port --tls_cert="$work/cert.pem" --tls_key="$work/key.pem" \
        --workers=1 --static_dir="$work/static" >"$work/inproc-app.log" 2>&1 &
      PIDS[$mode]=$!
      started+=("$!")
      PORT[$mode]=$port
      ;;
    stunnel)
      command -v stunnel4 >/dev/null || { log "stunnel4 not installed (tests/bench needs .ci/install-deps.sh bench)"; return 1; }
      port=$(free_port) || return 1
      pport=$(free_port) || return 1
      "$app_bin" --plain_listen=127.0.0.1:$pport --workers=1 --static_dir="$work/static" \
        >"$work/stunnel-app.log" 2>&1 &
      local ppid=$!
      started+=("$ppid")
      cat >"$work/stunnel.conf" <<EOF
foreground = yes
pid =
debug = 4
socket = l:TCP_NODELAY=1
socket = r:TCP_NODELAY=1
[https]
accept = 127.0.0.1:$port
connect = 127.0.0.1:$pport
cert = $work/cert.pem
key = $work/key.pem
EOF
      stunnel4 "$work/stunnel.conf" >"$work/stunnel.log" 2>&1 &
      started+=("$!")
      PIDS[$mode]="$! $ppid"
      PORT[$mode]=$port
      ;;
    nginx)
      command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || { log "nginx not installed (tests/bench needs .ci/install-deps.sh bench)"; return 1; }
      port=$(free_port) || return 1
      local echo_mod=/usr/lib/nginx/modules/ngx_http_echo_module.so load="" echo_loc=""
      if [[ -f $echo_mod ]]; then
        load="load_module $echo_mod;"
        echo_loc="location = /echo { client_body_buffer_size 128k; client_max_body_size 32m; echo_read_request_body; echo_request_body; }"
      fi
      cat >"$work/nginx/nginx.conf" <<EOF
$load
daemon off;
master_process on;
worker_processes 1;
pid $work/nginx/nginx.pid;
error_log stderr warn;
events { worker_connections 4096; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 10000000;
  keepalive_timeout 120s;
  client_body_temp_path $work/nginx/body;
  proxy_temp_path $work/nginx/proxy;
  fastcgi_temp_path $work/nginx/fastcgi;
  uwsgi_temp_path $work/nginx/uwsgi;
  scgi_temp_path $work/nginx/scgi;
  default_type application/octet-stream;
  server {
    listen 127.0.0.1:$port ssl;
    ssl_certificate $work/cert.pem;
    ssl_certificate_key $work/key.pem;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_conf_command Options KTLS;
    location /bytes/ { alias $work/bytes/; }
    location /static/ { alias $work/static/; }
    location = /discard { client_max_body_size 32m; return 200 "\$content_length\n"; }
    location = /healthz { return 200 "ok\n"; }
    $echo_loc
  }
}
EOF
      "$(command -v nginx || echo /usr/sbin/nginx)" -p "$work/nginx" -c "$work/nginx/nginx.conf" \
        >"$work/nginx.log" 2>&1 &
      started+=("$!")
      PIDS[$mode]=$!
      PORT[$mode]=$port
      ;;
    *) log "unknown mode $mode"; return 1 ;;
  esac
  if ! wait_http "https://127.0.0.1:${PORT[$mode]}/healthz"; then
    log "$mode: not answering on port ${PORT[$mode]}"
    tail -5 "$work"/"$mode"*.log >&2 2>/dev/null
    return 1
  fi
}

tls_stat() { [[ -r /proc/net/tls_stat ]] && cat /proc/net/tls_stat; }
# tls_stat_delta BEFORE AFTER -> {"TlsTxSw":N,...} (non-zero deltas only). Files, not <(...):
# the VM's /dev has no /dev/fd.
tls_stat_delta() {
  printf '%s\n' "$1" >"$work/tls_stat.before"
  printf '%s\n' "$2" >"$work/tls_stat.after"
  awk 'BEGIN { printf "{" } NR == FNR { b[$1] = $2; next }
       NF == 2 { d = $2 - b[$1]; if (d != 0) { printf "%s\"%s\":%d", sep, $1, d; sep = "," } }
       END { printf "}" }' "$work/tls_stat.before" "$work/tls_stat.after"
}

app_counters() { # app_counters MODE -> "reads bytes" from GET /conninfo (modes with the demo app)
  case $1 in nginx) echo "0 0"; return ;; esac
  curl -sk --max-time 5 "https://127.0.0.1:${PORT[$1]}/conninfo" |
    sed -nE 's/.*"worker_reads":([0-9]+),"worker_read_bytes":([0-9]+).*/\1 \2/p'
}

# agent_timing MODE -> "hs_sum hs_count install_sum install_count handoff_sum handoff_count" from
# the agent's /metrics (the agent modes only; zeros otherwise): where an agent connection's time
# goes, accept to Finished, inside the kernel's kTLS setsockopts, ready to handed off.
agent_timing() {
  [[ -n ${MPORT[$1]:-} ]] || { echo "0 0 0 0 0 0"; return; }
  curl -s --max-time 5 "http://127.0.0.1:${MPORT[$1]}/metrics" | awk '
    $1 == "ktls_handshake_duration_seconds_sum" { a = $2 } $1 == "ktls_handshake_duration_seconds_count" { b = $2 }
    $1 == "ktls_install_duration_seconds_sum" { c = $2 } $1 == "ktls_install_duration_seconds_count" { d = $2 }
    $1 == "ktls_handoff_latency_seconds_sum" { e = $2 } $1 == "ktls_handoff_latency_seconds_count" { f = $2 }
    END { printf "%.9f %d %.9f %d %.9f %d\n", a, b, c, d, e, f }'
}

run_cell() { # run_cell MODE SCENARIO ROUND
  local mode=$1 sc=$2 round=$3
  local args="${SC_ARGS[$sc]} --connections=${SC_CONN[$sc]} --target=https://127.0.0.1:${PORT[$mode]}"
  [[ $sc == static-1m ]] && args+=" --static_file=$work/static/blob.bin"
  local r0 c0 r1 c1 json rc
  read -r r0 c0 <<<"$(app_counters "$mode")"
  local m0 m1
  m0=$(agent_timing "$mode")
  local t0 t1
  t0=$(tls_stat)
  # Connections made during the warm-up carry on into the window; loadgen samples the servers'
  # CPU time and /proc/net/tls_stat at the window's edges.
  local perf_pid=""
  if ((perf)); then
    (sleep "$warmup"; exec perf record -a -e cpu-clock -F 999 -o "$work/perf.data" -- sleep "$duration") \
      >/dev/null 2>"$work/perf.err" &
    perf_pid=$!
  fi
  # shellcheck disable=SC2086 # word splitting of the argument list is intended
  json=$("$loadgen" $args --warmup="$warmup" --duration="$duration" --progress=off --json \
    --watch_pids="$(tr ' ' ',' <<<"${PIDS[$mode]}")" --label="$mode/$sc/$round" 2>"$work/loadgen.err")
  rc=$?
  t1=$(tls_stat)
  if [[ -n $perf_pid ]]; then
    wait "$perf_pid"
    local text
    text=$({
      perf report -i "$work/perf.data" --stdio --sort comm,dso --percent-limit 1 2>/dev/null | grep -vE '^(#|$)' | head -20
      echo "--"
      perf report -i "$work/perf.data" --stdio --sort comm,sym --percent-limit 0.7 2>/dev/null | grep -vE '^(#|$)' | head -45
    } | sed 's/\\/\\\\/g; s/"/\\"/g; s/\t/ /g' | awk '{ printf "%s\\n", $0 }')
    emit "{\"type\":\"profile\",\"mode\":\"$mode\",\"scenario\":\"$sc\",\"text\":\"$text\"}"
  fi
  read -r r1 c1 <<<"$(app_counters "$mode")"
  m1=$(agent_timing "$mode")
  if ((strace_n > 0)); then
    local sargs=() p
    for p in ${PIDS[$mode]}; do sargs+=(-p "$p"); done
    strace -f -c -S calls -o "$work/strace.txt" "${sargs[@]}" 2>/dev/null &
    local spid=$!
    sleep 1 # attached
    # shellcheck disable=SC2086
    "$loadgen" $args --warmup=0 --duration=300 --requests="$strace_n" --progress=off >/dev/null 2>&1
    kill -INT "$spid" 2>/dev/null
    wait "$spid" 2>/dev/null
    local stext
    stext=$(head -40 "$work/strace.txt" | sed 's/\\/\\\\/g; s/"/\\"/g; s/\t/ /g' | awk '{ printf "%s\\n", $0 }')
    emit "{\"type\":\"syscalls\",\"mode\":\"$mode\",\"scenario\":\"$sc\",\"requests\":$strace_n,\"text\":\"$stext\"}"
  fi
  if [[ -z $json ]]; then
    json="{\"error\":\"loadgen exit $rc: $(head -c 200 "$work/loadgen.err" | tr -d '"\n\\')\"}"
  fi
  emit "{\"type\":\"cell\",\"mode\":\"$mode\",\"scenario\":\"$sc\",\"round\":$round,\"loadgen_rc\":$rc,\"run_tls_stat\":$(tls_stat_delta "$t0" "$t1"),\"app_reads\":$(( ${r1:-0} - ${r0:-0} )),\"app_read_bytes\":$(( ${c1:-0} - ${c0:-0} )),\"agent\":$(agent_delta "$m0" "$m1"),\"loadgen\":${json%$'\n'}}"
}

# agent_delta BEFORE AFTER -> {"handshake_s":..,"handshakes":..,"install_s":..,"installs":..,
# "handoff_s":..,"handoffs":..} over the cell (warm-up included).
agent_delta() {
  awk -v a="$1" -v b="$2" 'BEGIN { split(a, x, " "); split(b, y, " ")
    printf "{\"handshake_s\":%.6f,\"handshakes\":%d,\"install_s\":%.6f,\"installs\":%d,\"handoff_s\":%.6f,\"handoffs\":%d}",
      y[1] - x[1], y[2] - x[2], y[3] - x[3], y[4] - x[4], y[5] - x[5], y[6] - x[6] }'
}

kernel=$(uname -r)
cpu_model=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
emit "{\"type\":\"meta\",\"kernel\":\"$kernel\",\"cpus\":$(nproc),\"cpu_model\":\"$cpu_model\",\"vm\":${KTLS_VM:-0},\"duration_s\":$duration,\"warmup_s\":$warmup,\"rounds\":$rounds,\"modes\":\"$modes\",\"scenarios\":\"$(IFS=,; echo "${SC_IDS[*]}")\",\"gcm_driver\":\"$(awk '/^name/ { n = $3 } /^driver/ { d = $3 } /^priority/ && n == "gcm(aes)" && $3 > p { p = $3; best = d } END { print best }' /proc/crypto 2>/dev/null)\"}"

ok_modes=()
for m in "${MODES[@]}"; do
  if start_mode "$m"; then ok_modes+=("$m"); else emit "{\"type\":\"mode_failed\",\"mode\":\"$m\"}"; fi
done
log "serving: ${ok_modes[*]} (ports: $(for m in "${ok_modes[@]}"; do printf '%s=%s ' "$m" "${PORT[$m]}"; done))"

n=${#ok_modes[@]}
for ((round = 1; round <= rounds; round++)); do
  for sc in "${SC_IDS[@]}"; do
    # Rotate the order of the modes each round so no mode always runs first or last.
    for ((k = 0; k < n; k++)); do
      m=${ok_modes[$(((k + round - 1) % n))]}
      run_cell "$m" "$sc" "$round"
      log "round $round $sc $m done"
    done
  done
done

# Agents' own account of what they offloaded.
for m in ktls relay; do
  [[ -n ${PIDS[$m]:-} ]] || continue
  read -r apid _ <<<"${PIDS[$m]}"
  kill "$apid" 2>/dev/null
  wait "$apid" 2>/dev/null
  summary=$(grep -E 'final stats' "$work/$m-agent.log" | sed -E 's/.*final stats: //' | tr -d '"\\')
  emit "{\"type\":\"agent_stats\",\"mode\":\"$m\",\"summary\":\"$summary\"}"
done
if [[ -r /proc/net/tls_stat ]]; then
  emit "{\"type\":\"tls_stat\",\"final\":{$(awk '{ printf "%s\"%s\":%s", NR > 1 ? "," : "", $1, $2 }' /proc/net/tls_stat)}}"
fi
exit 0
