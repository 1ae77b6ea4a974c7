#!/usr/bin/env bash
# The benchmark command: the scenario matrix against every server mode, side by side, on the host
# and inside the kTLS VM, plus the machine's crypto limits and the handoff micro-benchmark; then
# writes docs/BENCHMARKS.md (the generated block) and docs/benchmarks.png.
#
# Usage: tests/bench/run.sh [--smoke] [--host-only | --vm-only] [--rounds=N] [--duration=S]
#                           [--kernel=VERSION] [--scenarios=LIST] [--profile] [BUILD_DIR]
#                                                                   (default BUILD_DIR: build)
#   (full)       host: relay, inproc, stunnel, nginx (no kTLS in the host kernel); VM (qemu TCG,
#                Debian's 6.12 cloud kernel by default, kTLS active): ktls, relay, inproc,
#                stunnel, nginx. 10 scenarios x modes x --rounds (default 3), --duration (default
#                4) seconds each. About 30 minutes on 2 cores.
#   --smoke      seconds: host only, short cells of 4 scenarios x 4 modes, the handoff benchmark
#                briefly, and the report generator into BUILD_DIR/bench/smoke/ (never docs/).
#                Ends with "bench-smoke: N passed, M failed" (a cell passes when every response
#                was verified and none failed); exit status 0 only if M = 0.
#   --kernel     which cached kernel runs the VM half
#   KTLS_BENCH_VM_IA32CAP  OPENSSL_ia32cap for every process in the VM (default ~0x1000000000000000:
#                AVX hidden from OpenSSL). Under TCG OpenSSL's AVX AES-GCM code runs at a fifth of
#                the speed of its AES-NI code and of the kernel's gcm(aes) (12 vs 60 vs 58 MB/s,
#                docs/BENCHMARKS.md), which would hand kTLS an advantage no real CPU gives it. "" =
#                OpenSSL's own choice. (tests/vm/fetch-kernels.sh lists them)
#   --scenarios  a subset of matrix.sh's scenario ids (for trying things; the report says so)
#   --profile    instead of the matrix, where the time goes: one round on the host with
#                `perf record -a` over every cell (relay, in-process, stunnel; perf inside a TCG
#                guest only sees the idle loop, so the VM half does not use it) and one round in
#                the VM (kTLS, in-process, stunnel) with 200 more requests per cell under
#                `strace -c` (syscalls per request do not depend on how fast the machine is);
#                writes BUILD_DIR/bench/<time>/profile.txt, no report
#   --host-from=DIR  with --vm-only: take the host half (matrix, limits, handoff benchmark) from an
#                earlier run's raw results instead of measuring it again; the page says so
#   --report=DIR renders docs/BENCHMARKS.md and docs/benchmarks.png again from the raw results of
#                an earlier run (BUILD_DIR/bench/<time>), measuring nothing
# Results (raw JSON lines, consoles) go to BUILD_DIR/bench/<time>/.
set -uo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
smoke=0 host=1 vm=1 rounds=3 duration=4 kernel="" build=build scenarios="" profile=0 report_dir=""
host_from=""
vm_ia32cap=${KTLS_BENCH_VM_IA32CAP-~0x1000000000000000}
for a in "$@"; do
  case $a in
    --smoke) smoke=1 ;;
    --host-only) vm=0 ;;
    --vm-only) host=0 ;;
    --rounds=*) rounds=${a#*=} ;;
    --duration=*) duration=${a#*=} ;;
    --kernel=*) kernel=${a#*=} ;;
    --scenarios=*) scenarios=--scenarios=${a#*=} ;;
    --profile) profile=1 rounds=1 ;;
    --report=*) report_dir=${a#*=} ;;
    --host-from=*) host_from=${a#*=} ;;
    -h | --help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    -*) echo "bench: unknown option $a" >&2; exit 2 ;;
    *) build=$a ;;
  esac
done
# The profile looks at the scenarios whose targets were missed or that show the offload best.
((profile)) && [[ -z $scenarios ]] && scenarios=--scenarios=get-0,get-64k,close,close-resume,static-1m
build=$(cd "$build" 2>/dev/null && pwd) || { echo "bench: build directory not found (run .ci/build.sh)" >&2; exit 2; }
log() { echo "bench: $*" >&2; }
command_line="tests/bench/run.sh${*:+ $*}"

# render() OUT_DIR COMMAND [extra report.py options]: the report from one run's raw results, into
# docs/ unless the extra options name other --md/--png files.
render() {
  local out=$1 cmd=$2
  shift 2
  local args=(--md=docs/BENCHMARKS.md --png=docs/benchmarks.png --command="$cmd"
    --meta="$out/meta.json" --host-load="$out/host-load.txt" --raw-dir="$out")
  [[ -s $out/host.jsonl ]] && args+=(--host="$out/host.jsonl")
  [[ -s $out/vm.jsonl ]] && args+=(--vm="$out/vm.jsonl")
  [[ -s $out/limits-host.jsonl ]] && args+=(--limits-host="$out/limits-host.jsonl")
  [[ -s $out/limits-vm.jsonl ]] && args+=(--limits-vm="$out/limits-vm.jsonl")
  [[ -s $out/handoff.json ]] && args+=(--handoff="$out/handoff.json")
  python3 tests/bench/report.py "${args[@]}" "$@"
}
if [[ -n $report_dir ]]; then
  [[ -s $report_dir/meta.json ]] || { log "$report_dir: no meta.json (not a raw results directory)"; exit 2; }
  cmd=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1])).get("command", "tests/bench/run.sh"))' "$report_dir/meta.json")
  render "$(cd "$report_dir" && pwd)" "$cmd" --rerendered
  exit $?
fi

targets=(ktls-agent ktls-demo-app ktls-loadgen ktls_handoff_bench)
if ((smoke)); then
  out=$build/bench/smoke
  rm -rf "$out"
else
  bash .ci/install-deps.sh bench >/dev/null || { log "dependency install failed"; exit 1; }
  out=$build/bench/$(date +%Y%m%d-%H%M%S)
fi
mkdir -p "$out"
# The machine is shared: sample its load average while we run (the report prints it), and say
# what ran where.
(while :; do cat /proc/loadavg; sleep 10; done) >"$out/host-load.txt" 2>/dev/null &
sampler=$!
trap 'kill $sampler 2>/dev/null' EXIT
commit=$(git rev-parse --short=12 HEAD 2>/dev/null || echo "${KTLS_BENCH_COMMIT:-unknown}")
dirty=$(git status --porcelain -- client tests/bench agent proto 2>/dev/null | grep -c . || true)
printf '{"command":"%s","host_from":"%s","vm_openssl_ia32cap":"%s","commit":"%s","dirty_files":%s,"date":"%s","host_kernel":"%s","cpu_model":"%s","cpus":%s,"mem_gib":%s,"qemu":"%s","openssl":"%s"}\n' \
  "$command_line" "$host_from" "$vm_ia32cap" "$commit" "${dirty:-0}" "$(date -u +%Y-%m-%dT%H:%MZ)" "$(uname -r)" \
  "$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)" "$(nproc)" \
  "$(awk '/^MemTotal/ { printf "%.0f", $2 / 1048576 }' /proc/meminfo)" \
  "$(qemu-system-x86_64 --version 2>/dev/null | head -1 | sed 's/"//g')" "$(openssl version | sed 's/"//g')" >"$out/meta.json"
log "building ${targets[*]}"
cmake --build "$build" --target "${targets[@]}" >"$out/build.log" 2>&1 ||
  { tail -20 "$out/build.log"; log "build failed"; exit 1; }

# --- smoke: a few seconds, host only, counts passes ----------------------------------------------
if ((smoke)); then
  t0=$EPOCHREALTIME
  bash tests/bench/matrix.sh --build="$build" --out="$out/host.jsonl" --rounds=1 \
    --duration=0.3 --warmup=0.1 --scenarios=get-16k,post-64k,close-resume,static-1m \
    >/dev/null 2>"$out/matrix.log"
  "$build/tests/bench/ktls_handoff_bench" --benchmark_min_time=0.01 \
    --benchmark_out="$out/handoff.json" --benchmark_out_format=json >/dev/null 2>"$out/handoff.log"
  handoff_rc=$?
  # The same report as a full run, but into BUILD_DIR (never docs/): the later --md/--png win.
  render "$out" "$command_line" --md="$out/BENCHMARKS.md" --png="$out/benchmarks.png" \
    --smoke-summary --handoff-rc="$handoff_rc" --elapsed="$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')"
  exit $?
fi

# --- host half ---------------------------------------------------------------------------------
if ((host && !profile)); then
  log "host: crypto limits"
  bash tests/bench/limits.sh 2 >"$out/limits-host.jsonl"
  log "host: handoff micro-benchmark"
  # Five repetitions: the p99 of a wake-up latency depends on whether a core is free, and this
  # machine is shared; the report shows every repetition's p99.
  "$build/tests/bench/ktls_handoff_bench" --benchmark_repetitions=5 \
    --benchmark_out="$out/handoff.json" --benchmark_out_format=json | tee "$out/handoff.txt" |
    grep -E '^BM_' >&2
fi
if ((host)); then
  host_extra=""
  ((profile)) && host_extra="--perf --modes=relay,inproc,stunnel"
  log "host: matrix ($rounds rounds x ${duration}s cells; progress in $out/host-matrix.log)"
  # shellcheck disable=SC2086 # $host_extra and $scenarios are lists of options
  bash tests/bench/matrix.sh $host_extra --build="$build" --out="$out/host.jsonl" --rounds="$rounds" \
    --duration="$duration" $scenarios >/dev/null 2>"$out/host-matrix.log"
fi

if [[ -n $host_from ]]; then
  ((host)) && { log "--host-from goes with --vm-only"; exit 2; }
  for f in host.jsonl limits-host.jsonl handoff.json handoff.txt host-matrix.log; do
    [[ -f $host_from/$f ]] && cp "$host_from/$f" "$out/"
  done
  [[ -s $out/host.jsonl ]] || { log "$host_from: no host.jsonl"; exit 2; }
  log "host half: taken from $host_from"
fi

# --- VM half -----------------------------------------------------------------------------------
if ((vm)); then
  mapfile -t kernels < <(bash tests/vm/fetch-kernels.sh)
  ((${#kernels[@]})) || { log "no VM kernel (tests/vm/fetch-kernels.sh)"; exit 1; }
  kver=${kernel:-${kernels[-1]}}
  nginx=$(command -v nginx || echo /usr/sbin/nginx)
  files=("$build/agent/ktls-agent" "$build/client/ktls-demo-app" "$build/client/ktls-loadgen"
    "$root/tests/bench/matrix.sh" "$root/tests/bench/limits.sh" "$nginx" "$(command -v stunnel4)")
  extra=""
  if ((profile)); then
    files+=("$(command -v strace)")
    extra="--strace=200 --modes=ktls,inproc,stunnel"
  fi
  [[ -f /usr/lib/nginx/modules/ngx_http_echo_module.so ]] && files+=(/usr/lib/nginx/modules/ngx_http_echo_module.so)
  guest=$(mktemp /tmp/ktls-bench-guest.XXXXXX.sh)
  cat >"$guest" <<GUEST
#!/bin/sh
# The benchmark's guest half: every line of results goes to the console with a marker.
[ -e /dev/fd ] || ln -s /proc/self/fd /dev/fd
cd "$root" || exit 1
${vm_ia32cap:+export OPENSSL_ia32cap='$vm_ia32cap'}
bash tests/bench/limits.sh 2 "KTLS-BENCH "
bash tests/bench/matrix.sh $extra --build="$build" --out=/tmp/vm.jsonl --rounds=$rounds \
  --duration=$duration $scenarios --prefix="KTLS-BENCH "
GUEST
  log "VM ($kver, qemu TCG): limits + matrix ($rounds rounds x ${duration}s cells); console in $out/vm-console.log"
  KTLS_VM_TIMEOUT=${KTLS_VM_TIMEOUT:-5400} KTLS_VM_LOG="$out/vm-console.log" \
    bash tests/vm/run-vm.sh "$kver" "$guest" "${files[@]}" >/dev/null 2>"$out/vm-run.log"
  vm_rc=$?
  rm -f "$guest"
  sed -n 's/^KTLS-BENCH {"type":"limits"/{"type":"limits"/p' "$out/vm-console.log" >"$out/limits-vm.jsonl"
  sed -n 's/^KTLS-BENCH //p' "$out/vm-console.log" | grep -v '"type":"limits"' >"$out/vm.jsonl"
  ((vm_rc == 0)) || log "VM exited with status $vm_rc (see $out/vm-run.log, $out/vm-console.log)"
fi
if ((profile)); then
  python3 - "$out/host.jsonl" "$out/limits-vm.jsonl" "$out/vm.jsonl" >"$out/profile.txt" <<'PY'
import json, os, sys
lines = []
for path in sys.argv[1:]:
    if os.path.exists(path):
        lines += [("host" if "host" in os.path.basename(path) else "VM", l) for l in open(path) if l.strip()]
for where, line in lines:
    c = json.loads(line)
    if c.get("mode"):
        c["mode"] = f"{where} {c['mode']}"
    if c.get("type") == "limits":
        print(f"==== limits ({where}): {json.dumps(c)}")
    elif c.get("type") == "profile":
        print(f"==== perf: {c['mode']} / {c['scenario']}\n{c['text']}")
    elif c.get("type") == "syscalls":
        print(f"==== strace -c, {c['requests']} requests: {c['mode']} / {c['scenario']}\n{c['text']}")
    elif c.get("type") == "cell":
        lg = c["loadgen"]
        print(f"== cell {c['mode']} / {c['scenario']}: {lg.get('requests_per_s', 0):.1f} req/s, "
              f"server cpu {lg.get('watched_cpu_s', 0):.2f} s, loadgen cpu "
              f"{lg.get('cpu', {}).get('user_s', 0) + lg.get('cpu', {}).get('system_s', 0):.2f} s")
PY
  log "profile: $out/profile.txt"
  exit 0
fi

# --- report ------------------------------------------------------------------------------------
render "$out" "$command_line"
log "raw results: $out; report: docs/BENCHMARKS.md, docs/benchmarks.png"
