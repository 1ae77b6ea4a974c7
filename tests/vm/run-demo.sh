#!/usr/bin/env bash
# The README's main job (.ci/demo.sh) inside a VM whose kernel has kTLS (Debian's 6.12 cloud
# kernel by default), so the offload is real: the same agent, demo app and load as on the host.
#
# Usage: run-demo.sh [BUILD_DIR]      (default: build)
# Env: KTLS_VM_DEMO_KERNEL picks the kernel (default: the last one fetch-kernels.sh prints).
set -euo pipefail
KTLS_VM_PROG=vm-demo
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
root=$(cd "$KTLS_VM_DIR/../.." && pwd)
build=$(cd "${1:-$root/build}" && pwd)
for b in agent/ktls-agent client/ktls-demo-app; do
  [[ -x $build/$b ]] || vm_die "$build/$b is not built (run .ci/build.sh)"
done
mapfile -t kernels < <("$KTLS_VM_DIR/fetch-kernels.sh")
kver=${KTLS_VM_DEMO_KERNEL:-${kernels[-1]}}
guest=$(mktemp /tmp/ktls-vm-demo.XXXXXX.sh)
trap 'rm -f "$guest"' EXIT
cat >"$guest" <<GUEST
#!/bin/sh
cd "$root" || exit 1
KTLS_DEMO_IN_GUEST=1 KTLS_AGENT_BIN="$build/agent/ktls-agent" \
  KTLS_DEMO_APP_BIN="$build/client/ktls-demo-app" bash .ci/demo.sh
GUEST
vm_log "running .ci/demo.sh inside a VM on $kver (kTLS available there)"
KTLS_VM_TIMEOUT=${KTLS_VM_TIMEOUT:-600} "$KTLS_VM_DIR/run-vm.sh" "$kver" "$guest" \
  "$build/agent/ktls-agent" "$build/client/ktls-demo-app" "$root/.ci/demo.sh" |
  grep -vE '^(\[ *[0-9]+\.[0-9]+\]|KTLS-VM-|ktls-vm: (loaded|module))' || true
exit "${PIPESTATUS[0]}"
