#!/usr/bin/env bash
# The physical limits next to which the benchmark's figures are read, measured on this machine
# with `openssl speed` (one core): AEAD throughput at 16 KiB records (TLS's largest record) and
# the crypto of one full TLS 1.3 handshake with ECDHE X25519 + ECDSA P-256.
# Prints one JSON line: {"type":"limits", ...}. Usage: limits.sh [SECONDS_PER_TEST] [PREFIX]
set -uo pipefail
secs=${1:-2}
prefix=${2:-}
aead() { # aead ALG -> MB/s (10^6 bytes/s)
  openssl speed -evp "$1" -bytes 16384 -seconds "$secs" 2>/dev/null |
    awk 'tolower($1) == tolower("'"$1"'") { v = $2; sub(/k$/, "", v); printf "%.1f", v / 1000 }'
}
# A throw-away first run: under qemu TCG the first seconds of a new binary go to translating it.
openssl speed -evp aes-128-gcm -bytes 16384 -seconds 1 >/dev/null 2>&1
aes128=$(aead aes-128-gcm)
aes256=$(aead aes-256-gcm)
chacha=$(aead chacha20-poly1305)
pk=$(openssl speed -seconds "$secs" ecdhx25519 ecdsap256 2>/dev/null)
x25519=$(awk '/ecdh \(X25519\)/ { print $NF }' <<<"$pk")
sign=$(awk '/ecdsa \(nistp256\)/ { print $(NF-1) }' <<<"$pk")
verify=$(awk '/ecdsa \(nistp256\)/ { print $NF }' <<<"$pk")
# Server side of a full handshake: an X25519 key pair and one shared secret (two scalar
# multiplications, each costing about one "ecdh op") and one ECDSA signature. Client side: two
# X25519 operations and one ECDSA verification (certificate chains add more; ours is one cert).
derived=$(awk -v x="${x25519:-0}" -v s="${sign:-0}" -v v="${verify:-0}" 'BEGIN {
  if (x > 0 && s > 0 && v > 0) {
    srv = 2e6 / x + 1e6 / s; cli = 2e6 / x + 1e6 / v
    printf "\"server_handshake_crypto_us\":%.1f,\"client_handshake_crypto_us\":%.1f,\"server_handshakes_per_core_s\":%.0f", srv, cli, 1e6 / srv
  } else printf "\"server_handshake_crypto_us\":0,\"client_handshake_crypto_us\":0,\"server_handshakes_per_core_s\":0" }')
# The kernel's own AES-128-GCM (what kTLS runs), where we may load the kernel's crypto speed test
# (tcrypt, as root; the benchmark VM): mode 211 times gcm(aes) for 1 s per size (~1 min) and prints to
# the kernel log; the largest block it uses is 8 KiB. Loading it always "fails" (EAGAIN) by design.
# Under TCG the kernel's and OpenSSL's code paths are emulated differently, so kTLS bulk is
# compared with this figure as well as with openssl speed's.
kernel_gcm=0
kernel_gcm_driver=""
if [[ $(id -u) == 0 ]] && find "/lib/modules/$(uname -r)" -name "tcrypt.ko*" 2>/dev/null | grep -q .; then
  dmesg -c >/dev/null 2>&1
  modprobe tcrypt mode=211 sec=1 >/dev/null 2>&1
  read -r kernel_gcm kernel_gcm_driver < <(dmesg 2>/dev/null | awk '
    /testing speed of gcm\(aes\)/ { on = /encryption/; drv = $0; sub(/.*gcm\(aes\) \(/, "", drv); sub(/\).*/, "", drv) }
    on && /128 bit key, 8192 byte blocks/ && /operations in/ {
      for (i = 1; i <= NF; i++) { if ($i == "operations") ops = $(i - 1); if ($i == "seconds") s = $(i - 1) }
      if (s > 0) { printf "%.1f %s\n", ops * 8192 / s / 1e6, drv; exit } }')
fi
printf '%s{"type":"limits","kernel":"%s","seconds":%s,"aes_128_gcm_MBps":%s,"aes_256_gcm_MBps":%s,"chacha20_poly1305_MBps":%s,"x25519_ops_s":%s,"ecdsa_p256_sign_s":%s,"ecdsa_p256_verify_s":%s,"kernel_aes_128_gcm_8k_MBps":%s,"kernel_gcm_driver":"%s","openssl_ia32cap":"%s",%s}\n' \
  "$prefix" "$(uname -r)" "$secs" "${aes128:-0}" "${aes256:-0}" "${chacha:-0}" "${x25519:-0}" "${sign:-0}" "${verify:-0}" "${kernel_gcm:-0}" "$kernel_gcm_driver" "${OPENSSL_ia32cap:-}" "$derived"
