#!/usr/bin/env bash
# Collects the built binaries for the container images, in the layout deploy/Dockerfile expects:
#   OUT/agent/   ktls-agent, and ktlsctl when the tree builds it       -> the agent image
#   OUT/demo/    ktls-demo-app (when built)                            -> the demo-app image
#   OUT/tools/   ktlsctl (when built)                                  -> the tools image
#   OUT/runtime-packages.txt  the Debian packages that hold every shared library the binaries
#                load (runtime packages such as libssl3, never the -dev ones): the runtime image
#                installs exactly these with apt, so it carries no compiler and no headers.
# Debug info is stripped from the copies (symbols stay, for readable stack traces).
# Usage: deploy/stage-binaries.sh BUILD_DIR OUT_DIR
# Used inside the image's source-build stage and, for CI's prebuilt mode, on a Debian 12 host
# whose libraries are the same packages (see docs/deploy.md, "Container images").
set -euo pipefail
build=${1:?usage: stage-binaries.sh BUILD_DIR OUT_DIR}
out=${2:?usage: stage-binaries.sh BUILD_DIR OUT_DIR}

find_bin() { find "$build" -maxdepth 3 -type f -name "$1" -perm -u+x 2>/dev/null | sort | head -1; }

agent=$(find_bin ktls-agent)
[[ -n $agent ]] || { echo "stage-binaries: no ktls-agent under $build (build first)" >&2; exit 1; }
ctl=$(find_bin ktlsctl)
demo=$(find_bin ktls-demo-app)

rm -rf "$out"
mkdir -p "$out/agent" "$out/demo" "$out/tools"
put() {  # put BINARY DIR
  install -m 0755 "$1" "$2/"
  strip --strip-debug "$2/$(basename "$1")"
}
put "$agent" "$out/agent"
staged=("$agent")
if [[ -n $ctl ]]; then put "$ctl" "$out/agent"; put "$ctl" "$out/tools"; staged+=("$ctl"); fi
if [[ -n $demo ]]; then put "$demo" "$out/demo"; staged+=("$demo"); fi

# The package owning each shared library. Debian 12 is merged-/usr, but dpkg records some
# libraries under /lib and others under /usr/lib: try the path ldd prints, then its canonical form.
owner() {
  local p
  for p in "$1" "$(readlink -f "$1")" "/usr$1" "${1#/usr}"; do
    dpkg-query -S "$p" 2>/dev/null | head -1 | cut -d: -f1 && return 0
  done
  return 1
}
: >"$out/runtime-packages.txt.tmp"
for b in "${staged[@]}"; do
  if ldd "$b" | grep -q 'not found'; then
    echo "stage-binaries: $b has unresolved libraries:" >&2
    ldd "$b" | grep 'not found' >&2
    exit 1
  fi
  while read -r lib; do
    pkg=$(owner "$lib") || { echo "stage-binaries: no Debian package owns $lib ($b)" >&2; exit 1; }
    echo "$pkg" >>"$out/runtime-packages.txt.tmp"
  done < <(ldd "$b" | awk '$2 == "=>" && $3 ~ /^\// {print $3}')
done
sort -u "$out/runtime-packages.txt.tmp" >"$out/runtime-packages.txt"
rm "$out/runtime-packages.txt.tmp"
if grep -E -- '-dev$' "$out/runtime-packages.txt" >&2; then
  echo "stage-binaries: a library resolved to a -dev package (above); link against the runtime .so" >&2
  exit 1
fi
echo "stage-binaries: $(cd "$out" && find agent demo tools -type f | tr '\n' ' ')"
echo "stage-binaries: runtime packages: $(tr '\n' ' ' <"$out/runtime-packages.txt")"
