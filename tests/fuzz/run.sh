#!/usr/bin/env bash
# Builds the libFuzzer targets with clang in their own build directory and runs each for a
# bounded time (default 20 s) from a seed corpus made at run time. Prints
# "fuzz: N passed, M failed" (a target passes when libFuzzer found no crash, leak or UB).
#
# Usage: tests/fuzz/run.sh [SECONDS_PER_TARGET]     Env: KTLS_FUZZ_BUILD_DIR (default build-fuzz)
set -uo pipefail
cd "$(dirname "$0")/../.."
secs=${1:-20}
build=${KTLS_FUZZ_BUILD_DIR:-build-fuzz}
if [[ ! -f $build/build.ninja ]]; then
  mkdir -p "$build"
  CC=clang CXX=clang++ cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DKTLS_BUILD_FUZZERS=ON -DKTLS_BUILD_TESTS=OFF >"$build/configure.log" 2>&1 ||
    { cat "$build/configure.log"; echo "fuzz: 0 passed, 1 failed"; exit 1; }
fi
targets=(fuzz_handoff_message fuzz_config fuzz_tls_record fuzz_http_request)
if ! cmake --build "$build" -j "${KTLS_JOBS:-2}" --target "${targets[@]}" >"$build/build.log" 2>&1; then
  grep -E 'error' "$build/build.log" | head -20
  echo "fuzz: 0 passed, ${#targets[@]} failed"
  exit 1
fi
corpus=$(mktemp -d /tmp/ktls-fuzz.XXXXXX)
trap 'rm -rf "$corpus"' EXIT
# Seeds: a valid config, HTTP requests, TLS alert/handshake payloads, a protobuf Subscribe.
mkdir -p "$corpus"/{fuzz_handoff_message,fuzz_config,fuzz_tls_record,fuzz_http_request}
printf 'listeners { address: "127.0.0.1" port: 8443 }\noffload: OFFLOAD_POLICY_REQUIRED\nalpn: "h2"\n' \
  >"$corpus/fuzz_config/seed"
printf 'GET /bytes/10 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n' >"$corpus/fuzz_http_request/seed"
printf '\x15\x02\x28' >"$corpus/fuzz_tls_record/alert"
printf '\x16\x04\x00\x00\x08\x00\x00\x00\x00\x00\x00\x00\x00' >"$corpus/fuzz_tls_record/ticket"
printf '\x16\x18\x00\x00\x01\x00' >"$corpus/fuzz_tls_record/keyupdate"
printf '\x00\x0a\x06\x08\x01\x12\x02id\x18\x04' >"$corpus/fuzz_handoff_message/subscribe"
passed=0 failed=0
for t in "${targets[@]}"; do
  log=$build/$t.log
  if (cd "$build" && "./tests/fuzz/$t" -max_total_time="$secs" -rss_limit_mb=1024 \
        -print_final_stats=1 "$corpus/$t") >"$log" 2>&1; then
    passed=$((passed + 1))
    echo "fuzz: $t ok ($(grep -Eo 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -Eo '[0-9]+$') runs in ${secs}s)"
  else
    failed=$((failed + 1))
    echo "fuzz: $t FAILED"
    grep -E 'ERROR|SUMMARY|Test unit written' "$log" | head -10
  fi
done
echo "fuzz: $passed passed, $failed failed"
((failed == 0))
