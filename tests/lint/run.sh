#!/usr/bin/env bash
# The lint stage: the repository's .clang-format and .clang-tidy applied to the project's own
# C/C++ sources. Usage: tests/lint/run.sh BUILD_DIR
#   format  clang-format --dry-run --Werror on every tracked *.c *.cc *.h *.hpp under agent/
#           server/ client/ proto/ tests/ (generated *.pb.* live in BUILD_DIR and are not
#           tracked); one check per file, the unformatted ones are listed.
#   tidy    clang-tidy (checks and header filter from .clang-tidy) with BUILD_DIR's
#           compile_commands.json on every translation unit under agent/ server/ client/ proto/
#           (not tests/), two at a time; one check per translation unit, each finding printed.
# Last line: "lint: N passed, M failed", N and M counting those per-file checks (format files +
# tidy translation units). KTLS_LINT_ONLY=format|tidy runs one half; KTLS_LINT_JOBS sets the
# number of parallel clang-tidy processes (default 2).
set -uo pipefail
cd "$(dirname "$0")/../.."
build=${1:?usage: tests/lint/run.sh BUILD_DIR}
build=$(cd "$build" && pwd) || exit 1
only=${KTLS_LINT_ONLY:-}
jobs=${KTLS_LINT_JOBS:-2}
t0=$(date +%s)

# Debian 12 installs versioned binaries (clang-format-14) with unversioned alternatives.
pick() {
  local b
  for b in "$@"; do
    if command -v "$b" >/dev/null; then
      echo "$b"
      return
    fi
  done
}
clang_format=$(pick clang-format-14 clang-format)
clang_tidy=$(pick clang-tidy-14 clang-tidy)

passed=0
failed=0

if [[ -z $only || $only == format ]]; then
  if [[ -z $clang_format ]]; then
    echo "FAIL format: clang-format not installed (.ci/install-deps.sh test)"
    failed=$((failed + 1))
  else
    mapfile -t files < <(git ls-files -- agent server client proto tests |
      grep -E '\.(c|cc|h|hpp)$' | grep -vE '\.pb\.(h|cc)$')
    bad=()
    for f in "${files[@]}"; do
      if "$clang_format" --dry-run --Werror "$f" >/dev/null 2>&1; then
        passed=$((passed + 1))
      else
        bad+=("$f")
      fi
    done
    failed=$((failed + ${#bad[@]}))
    for f in "${bad[@]}"; do
      n=$("$clang_format" "$f" | diff "$f" - | grep -c '^<')
      echo "FAIL format: $f ($n lines differ; fix: $clang_format -i $f)"
    done
    echo "format: $((${#files[@]} - ${#bad[@]})) of ${#files[@]} files formatted ($(($(date +%s) - t0)) s)"
  fi
fi

if [[ -z $only || $only == tidy ]]; then
  t1=$(date +%s)
  if [[ -z $clang_tidy ]]; then
    echo "FAIL tidy: clang-tidy not installed (.ci/install-deps.sh test)"
    failed=$((failed + 1))
  elif [[ ! -f $build/compile_commands.json ]]; then
    echo "FAIL tidy: no $build/compile_commands.json (configure with CMake first)"
    failed=$((failed + 1))
  else
    # The translation units of the non-test sources, as the build compiles them.
    root=$(pwd)
    mapfile -t units < <(python3 - "$build/compile_commands.json" "$root" <<'EOF'
import json, os, sys
root = sys.argv[2] + "/"
seen = set()
for e in json.load(open(sys.argv[1])):
    f = os.path.normpath(os.path.join(e["directory"], e["file"]))
    rel = f[len(root):] if f.startswith(root) else None
    if rel and rel.split("/")[0] in ("agent", "server", "client", "proto") and rel not in seen:
        seen.add(rel)
        print(rel)
EOF
)
    out=$(mktemp -d)
    trap 'rm -rf "$out"' EXIT
    # One clang-tidy per unit; its output (findings only, --quiet) goes to a file per unit.
    printf '%s\n' "${units[@]}" | xargs -P "$jobs" -I{} sh -c \
      '"$1" -p "$2" --quiet "$3" >"$4/$(echo "$3" | tr / _).log" 2>&1; echo $? >"$4/$(echo "$3" | tr / _).rc"' \
      sh "$clang_tidy" "$build" {} "$out"
    for u in "${units[@]}"; do
      key=$(echo "$u" | tr / _)
      rc=$(cat "$out/$key.rc" 2>/dev/null || echo 1)
      if [[ $rc == 0 ]]; then
        passed=$((passed + 1))
      else
        failed=$((failed + 1))
        echo "FAIL tidy: $u"
        # Findings ("file:line:col: error: ... [check]") with their code lines; not the
        # "N warnings generated" noise.
        grep -vE '^[0-9]+ warnings? (and [0-9]+ errors? )?generated\.$|^Suppressed|^Use -header-filter|^Error while processing' \
          "$out/$key.log" | sed 's/^/  /' | head -60
      fi
    done
    echo "tidy: ${#units[@]} translation units, $jobs at a time ($(($(date +%s) - t1)) s)"
  fi
fi

echo "lint: $passed passed, $failed failed"
((failed == 0))
