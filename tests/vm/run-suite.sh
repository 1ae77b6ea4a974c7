#!/usr/bin/env bash
# The kTLS VM suite: runs ktls-sidecar's tests on real kTLS kernels (Debian's 6.1 and 6.12 cloud
# kernels under qemu TCG), one VM per kernel, one after the other (the build hosts have 2 cores,
# and a TCG guest keeps both busy).
#
# Usage: run-suite.sh BUILD_DIR
#   Puts BUILD_DIR/agent/ktls-agent, BUILD_DIR/client/ktls-demo-app,
#   BUILD_DIR/tests/ktls_integration_tests and BUILD_DIR/tests/ktls_unit_tests (and what the
#   integration tests start: ktls-probe-app, libktls_client.so, client/examples/) into the guest at
#   the same absolute paths and runs guest-suite.sh there (probe, integration tests with
#   KTLS_EXPECT_OFFLOAD=1, unit tests, /proc/net/tls_stat).
#
# Output: the guests' consoles, then one line per kernel and a final line, e.g.
#   VM 6.1.0-56-cloud-amd64: 40 passed, 0 failed (integration 30/0, unit 10/0, 0 skipped; probe ok; boot 4.1s, total 52.3s)
#   vm-suite: 80 passed, 0 failed
# Passed/failed are gtest's counts. A step that fails without gtest saying which test failed
# (the probe, a crash, a step timeout, a kernel that does not boot, a missing binary) counts as
# one failed test, so "0 failed" always means a clean run. Skipped integration tests count as
# failed: with KTLS_EXPECT_OFFLOAD=1 they must fail, not skip (unit-test skips are only reported).
# Exit status: 0 only if everything passed on every kernel.
#
# Env:
#   KTLS_VM_ALLOW_MISSING=1   missing binaries are reported, not failed (bring-up only)
#   KTLS_VM_EXTRA_FILES       more files/dirs for the guest (space-separated; same paths)
#   KTLS_VM_STEP_TIMEOUT      seconds per guest step (default 600)
#   KTLS_VM_TIMEOUT           seconds per VM (default 900)
#   KTLS_VM_KERNELS           kernel versions to use instead of fetching (space-separated)
#   KTLS_VM_LOG_DIR           where the console logs go (default $KTLS_VM_CACHE/logs/suite-<time>)
#   GTEST_FILTER etc.         GTEST_* variables are passed to the guest (see run-vm.sh)
#   and everything run-vm.sh / build-initramfs.sh / fetch-kernels.sh read.
set -euo pipefail
KTLS_VM_PROG=vm-suite
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if [[ $# -ne 1 || $1 == -h || $1 == --help ]]; then
  sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
  exit 2
fi
[[ -d $1 ]] || vm_die "build directory $1 not found"
# Absolute, but not symlink-resolved: the binaries have the configure-time path compiled in,
# and the guest gets both spellings anyway (vm_stage recreates symlinks).
build=$(cd "$1" && pwd)

binaries=(agent/ktls-agent client/ktls-demo-app tests/ktls_integration_tests tests/ktls_unit_tests
  # what the app-side integration tests start: the probe app, the library's examples (the
  # Python one loads libktls_client.so with the base image's python3)
  tests/ktls-probe-app client/libktls_client.so.1 client/examples/ktls-example-c
  client/examples/ktls-example-cpp client/examples/serve_https.py
  # what the control-plane integration tests run: the control API's CLI
  client/ktlsctl)
declare -a files=() missing=()
for b in "${binaries[@]}"; do
  if [[ -x $build/$b ]]; then files+=("$build/$b"); else missing+=("$build/$b"); fi
done
for f in ${KTLS_VM_EXTRA_FILES:-}; do
  [[ -e $f ]] || vm_die "KTLS_VM_EXTRA_FILES: $f does not exist"
  files+=("$(cd "$(dirname "$f")" && pwd)/$(basename "$f")")
done
if ((${#missing[@]})); then
  if [[ ${KTLS_VM_ALLOW_MISSING:-0} == 1 ]]; then
    vm_log "warning: not built, left out (KTLS_VM_ALLOW_MISSING=1): ${missing[*]}"
  else
    vm_log "error: not built: ${missing[*]} (build them, or set KTLS_VM_ALLOW_MISSING=1 during bring-up)"
  fi
fi

if [[ -n ${KTLS_VM_KERNELS:-} ]]; then
  read -ra kernels <<<"$KTLS_VM_KERNELS"
else
  mapfile -t kernels < <("$KTLS_VM_DIR/fetch-kernels.sh")
fi
((${#kernels[@]})) || vm_die "no kernels"
logdir=${KTLS_VM_LOG_DIR:-$KTLS_VM_CACHE/logs/suite-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$logdir"

# parse_step LOG STEP: prints "passed failed skipped rc state summary" for one guest step, where
# state is ran|missing|absent (absent: the guest never got to it) and summary is 1 when gtest
# printed its final summary (0: it died or was killed first).
# gtest's summary differs by mode: the full printer ends with "[  FAILED  ] N tests, listed
# below:", the --gtest_brief=1 printer has no failed count at all, only one
# "[  FAILED  ] Suite.Test (N ms)" line per failure. So failed = ran - passed - skipped from
# "[==========] N tests from ... ran.", and never less than the distinct failed test names seen
# (which also covers a binary that crashed before its summary).
parse_step() {
  awk -v step="$2" '
    index($0, "KTLS-SUITE-MISSING " step " ") == 1 { state = "missing" }
    $0 == "KTLS-SUITE-BEGIN " step { inside = 1; state = "ran"; next }
    inside && index($0, "KTLS-SUITE-END " step " rc=") == 1 {
      rc = substr($0, length("KTLS-SUITE-END " step " rc=") + 1); inside = 0 }
    !inside { next }
    /^\[==========\] [0-9]+ tests? from .* ran\./ { ran = $2; have_ran = 1 }
    /^\[  PASSED  \] [0-9]+ tests?\./ { passed = $4 }
    /^\[  SKIPPED \] [0-9]+ tests?[.,]/ { skipped = $4 }
    /^\[  FAILED  \] [0-9]+ tests?, listed below:/ { listed = $4; next }
    /^\[  FAILED  \] [^ ]/ { name = $4; sub(/,$/, "", name); if (!(name in seen)) { seen[name] = 1; names++ } }
    END {
      failed = have_ran ? ran - passed - skipped : 0
      if (listed > failed) failed = listed
      if (names > failed) failed = names
      printf "%d %d %d %s %s %d\n", passed, failed, skipped, (rc == "" ? "none" : rc), (state == "" ? "absent" : state), have_ran
    }' "$1"
}

total_passed=0 total_failed=0 overall=0
declare -a lines=()
for kver in "${kernels[@]}"; do
  log=$logdir/$kver.log
  vm_log "=== $kver: booting (log $log)"
  env_lines="KTLS_BUILD_DIR=$build"
  [[ -n ${KTLS_VM_STEP_TIMEOUT:-} ]] && env_lines+=$'\n'"KTLS_VM_STEP_TIMEOUT=$KTLS_VM_STEP_TIMEOUT"
  set +e
  KTLS_VM_LOG=$log KTLS_VM_GUEST_ENV=$env_lines \
    vm_run_child "$KTLS_VM_DIR/run-vm.sh" "$kver" "$KTLS_VM_DIR/guest-suite.sh" "${files[@]}"
  vm_rc=$?
  set -e

  passed=0 failed=0 notes=() details=()
  result=$(grep -a '^KTLS-VM-RESULT ' "$log" 2>/dev/null | tail -n1 || true)
  boot=$(sed -n 's/.* boot=\([^ ]*\).*/\1/p' <<<"$result")
  total=$(sed -n 's/.* total=\([^ ]*\).*/\1/p' <<<"$result")
  case $vm_rc in
    124) notes+=("VM TIMEOUT") ;;
    125) notes+=("VM DID NOT BOOT/REPORT") ;;
  esac

  # Probe: not a gtest; a failure is one failed test.
  read -r p f s rc state _ <<<"$(parse_step "$log" probe)"
  case $state in
    ran) if [[ $rc == 0 ]]; then details+=("probe ok"); else
      details+=("probe FAILED rc=$rc")
      failed=$((failed + 1))
    fi ;;
    missing) details+=("probe: no ktls-agent") ;;
    absent) details+=("probe not run") ;;
  esac
  [[ $state == ran || ! -x $build/agent/ktls-agent || $vm_rc == 124 || $vm_rc == 125 ]] || {
    failed=$((failed + 1))
    notes+=("probe: ktls-agent was sent but did not run in the guest ($state)")
  }
  # gtest steps.
  skipped_total=0
  counts=()
  for step in integration unit; do
    read -r p f s rc state summary <<<"$(parse_step "$log" "$step")"
    case $state in
      ran)
        passed=$((passed + p))
        failed=$((failed + f))
        skipped_total=$((skipped_total + s))
        if [[ $step == integration ]] && ((s > 0)); then
          failed=$((failed + s))
          notes+=("$s integration test(s) SKIPPED with KTLS_EXPECT_OFFLOAD=1")
        fi
        # Non-zero exit that gtest's counts do not explain: crash, abort, step timeout.
        if [[ $rc != 0 ]] && ((f == 0 || summary == 0)); then
          failed=$((failed + 1))
          notes+=("$step exited rc=$rc before/without reporting a failed test (crash/timeout?)")
        fi
        counts+=("$step $p/$f")
        ;;
      missing) counts+=("$step not built") ;;
      absent) counts+=("$step not run") ;;
    esac
    bin=$build/tests/ktls_${step}_tests
    if [[ -x $bin && $state != ran ]] && ((vm_rc != 124 && vm_rc != 125)); then
      # The host sent it and the VM ran to the end, yet the step never ran: a harness bug.
      failed=$((failed + 1))
      notes+=("$step: $bin was sent but did not run in the guest ($state)")
    fi
    if [[ $step == integration && $state == ran && $p == 0 && $f == 0 && $s == 0 && ${KTLS_VM_ALLOW_MISSING:-0} != 1 ]]; then
      failed=$((failed + 1))
      notes+=("no integration test ran (GTEST_FILTER too narrow?)")
    fi
  done
  if ((vm_rc == 124 || vm_rc == 125)); then
    failed=$((failed + 1))
  elif ((vm_rc != 0 && failed == 0)); then
    # The guest reported failure but no step explains it: never let that pass as "0 failed".
    failed=1
    notes+=("guest exit status $vm_rc")
  fi
  if ((${#missing[@]})) && [[ ${KTLS_VM_ALLOW_MISSING:-0} != 1 ]]; then
    failed=$((failed + ${#missing[@]}))
    notes+=("${#missing[@]} binaries not built")
  fi

  ((failed == 0)) || overall=1
  total_passed=$((total_passed + passed))
  total_failed=$((total_failed + failed))
  line="VM $kver: $passed passed, $failed failed ($(
    IFS=,
    printf '%s' "${counts[*]}" | sed 's/,/, /g'
  ), $skipped_total skipped; ${details[*]}; boot ${boot:-n/a}, total ${total:-n/a})"
  ((${#notes[@]})) && line+=" -- $(
    IFS=';'
    printf '%s' "${notes[*]}" | sed 's/;/; /g'
  )"
  lines+=("$line")
  vm_log "$line"
done

echo
printf '%s\n' "${lines[@]}"
echo "logs: $logdir"
echo "vm-suite: $total_passed passed, $total_failed failed"
exit "$overall"
