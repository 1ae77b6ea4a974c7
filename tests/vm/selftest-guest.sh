#!/bin/sh
# Guest half of selftest.sh (busybox sh, run by the VM's init): proves that this kernel does kTLS
# with stock tools, independently of ktls-sidecar's own code.
#
# For TLS 1.3 and 1.2 and each kTLS cipher, `openssl s_server -WWW -sendfile` serves a 1 MiB
# random file to `openssl s_client` over 127.0.0.1, both with kTLS enabled. A case passes when
#   - s_server sent the file with SSL_sendfile ("KTLS SENDFILE ... OK": impossible without kTLS TX),
#   - s_client reports kTLS TX (and RX for TLS 1.2) and negotiated the expected cipher,
#   - the file arrived intact, and
#   - /proc/net/tls_stat moved: TlsTxSw by 2 (both ends), TlsRxSw by 2 for TLS 1.2, no decrypt errors.
# OpenSSL 3.0 offloads TLS 1.3 RX to the kernel only from 3.2 on, so a 1.3 case checks TX only.
#
# OpenSSL 3.0's s_server/s_client have no -ktls switch (it arrived in 3.2); kTLS is switched on
# through the config file (Options = KTLS sets SSL_OP_ENABLE_KTLS on every SSL_CTX).
set -u
work=/tmp/ktls-selftest
mkdir -p "$work"
cd "$work" || exit 1

cat >ktls.cnf <<'EOF'
openssl_conf = openssl_init
[openssl_init]
ssl_conf = ssl_sect
[ssl_sect]
system_default = system_default_sect
[system_default_sect]
Options = KTLS
EOF
export OPENSSL_CONF=$work/ktls.cnf

# Throw-away key and certificate, made here so no key ever exists outside this VM's RAM.
if ! openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout key.pem \
  -out cert.pem -days 2 -subj /CN=localhost >req.log 2>&1; then
  cat req.log
  echo "selftest: FAIL: cannot create a test certificate"
  exit 1
fi
size=1048576
head -c "$size" /dev/urandom >payload.bin
want_sum=$(sha256sum <payload.bin | cut -d' ' -f1)

uptime_s() { cut -d' ' -f1 /proc/uptime; }
since() { awk -v a="$1" -v b="$(uptime_s)" 'BEGIN { printf "%.1fs", b - a }'; }
stat_get() { awk -v k="$1" '$1 == k { print $2 }' /proc/net/tls_stat; }
port=4430
passed=0 failed=0
tx_total=0 rx_total=0

# run_case VERSION CIPHER
run_case() {
  v=$1 cipher=$2
  port=$((port + 1))
  case $v in
    tls1_3) cipher_opt="-ciphersuites $cipher" expect_rx=0 ;;
    tls1_2) cipher_opt="-cipher $cipher" expect_rx=2 ;;
  esac
  t0=$(uptime_s)
  tx0=$(stat_get TlsTxSw) rx0=$(stat_get TlsRxSw) de0=$(stat_get TlsDecryptError)
  rm -f srv.log cli.out cli.err
  # shellcheck disable=SC2086 # cipher_opt is two words on purpose
  timeout 60 openssl s_server -accept "127.0.0.1:$port" -cert cert.pem -key key.pem "-$v" $cipher_opt \
    -WWW -sendfile -naccept 1 >srv.log 2>&1 &
  srv=$!
  i=0
  while ! grep -q '^ACCEPT' srv.log 2>/dev/null; do
    i=$((i + 1))
    if [ $i -gt 200 ] || ! kill -0 "$srv" 2>/dev/null; then break; fi
    usleep 50000
  done
  # shellcheck disable=SC2086
  printf 'GET /payload.bin HTTP/1.0\r\n\r\n' |
    timeout 60 openssl s_client -connect "127.0.0.1:$port" -servername localhost "-$v" $cipher_opt \
      -ign_eof >cli.out 2>cli.err
  cli_rc=$?
  wait "$srv"
  srv_rc=$?
  tx=$(($(stat_get TlsTxSw) - tx0)) rx=$(($(stat_get TlsRxSw) - rx0))
  de=$(($(stat_get TlsDecryptError) - de0))
  tx_total=$((tx_total + tx)) rx_total=$((rx_total + rx))

  why=""
  [ $cli_rc -eq 0 ] || why="$why; s_client exit $cli_rc"
  [ $srv_rc -eq 0 ] || why="$why; s_server exit $srv_rc"
  grep -q "KTLS SENDFILE 'payload.bin' OK" srv.log || why="$why; s_server did not sendfile through kTLS"
  grep -q 'Using Kernel TLS for sending' cli.err || why="$why; s_client without kTLS TX"
  if [ "$expect_rx" -gt 0 ]; then
    grep -q 'Using Kernel TLS for receiving' cli.err || why="$why; s_client without kTLS RX"
  fi
  grep -q "Cipher is $cipher\$" cli.out || why="$why; negotiated $(grep -o 'Cipher is .*' cli.out | head -n1)"
  # s_client's stdout: text (certificate, session), the HTTP header, the body, then a status
  # word such as "closed". The body starts after the header's empty line.
  hdr_line=$(grep -n -m1 '^Content-type:' cli.out | cut -d: -f1)
  body_off=$(head -n "$((${hdr_line:-0} + 1))" cli.out | wc -c)
  got_sum=$(tail -c "+$((body_off + 1))" cli.out | head -c "$size" | sha256sum | cut -d' ' -f1)
  [ -n "$hdr_line" ] && [ "$got_sum" = "$want_sum" ] ||
    why="$why; payload corrupted or short ($(wc -c <cli.out) bytes of s_client output)"
  [ $tx -ge 2 ] || why="$why; TlsTxSw +$tx, want +2"
  [ $rx -ge "$expect_rx" ] || why="$why; TlsRxSw +$rx, want +$expect_rx"
  [ $de -eq 0 ] || why="$why; TlsDecryptError +$de"

  dirs="TX"
  grep -q 'Using Kernel TLS for receiving' cli.err && dirs="TX+RX"
  if [ -z "$why" ]; then
    passed=$((passed + 1))
    echo "selftest: PASS $v $cipher: TlsTxSw +$tx TlsRxSw +$rx, client kTLS $dirs, server kTLS sendfile, 1 MiB intact ($(since "$t0"))"
  else
    failed=$((failed + 1))
    echo "selftest: FAIL $v $cipher:${why#;}"
    echo "--- s_server output"
    cat srv.log
    echo "--- s_client stderr"
    cat cli.err
    echo "--- s_client stdout (text lines)"
    grep -a -E '^(CONNECTED|New,|Protocol|Cipher|Verify|HTTP|[0-9A-Z]+:error)' cli.out | head -n 20
  fi
}

echo "selftest: $(openssl version), kernel $(uname -r)"
run_case tls1_3 TLS_AES_128_GCM_SHA256
run_case tls1_3 TLS_AES_256_GCM_SHA384
run_case tls1_3 TLS_CHACHA20_POLY1305_SHA256
run_case tls1_2 ECDHE-ECDSA-AES128-GCM-SHA256
run_case tls1_2 ECDHE-ECDSA-AES256-GCM-SHA384
run_case tls1_2 ECDHE-ECDSA-CHACHA20-POLY1305

# Negative control: the same transfer without kTLS must leave the counters alone and s_server
# must refuse to sendfile; otherwise the checks above prove nothing.
port=$((port + 1))
t0=$(uptime_s)
tx0=$(stat_get TlsTxSw) rx0=$(stat_get TlsRxSw)
OPENSSL_CONF=/dev/null timeout 60 openssl s_server -accept "127.0.0.1:$port" -cert cert.pem \
  -key key.pem -tls1_2 -WWW -sendfile -naccept 1 >srv.log 2>&1 &
srv=$!
i=0
while ! grep -q '^ACCEPT' srv.log 2>/dev/null && [ $i -lt 200 ] && kill -0 "$srv" 2>/dev/null; do
  i=$((i + 1))
  usleep 50000
done
printf 'GET /payload.bin HTTP/1.0\r\n\r\n' |
  OPENSSL_CONF=/dev/null timeout 60 openssl s_client -connect "127.0.0.1:$port" -tls1_2 -ign_eof >cli.out 2>cli.err
wait "$srv"
tx=$(($(stat_get TlsTxSw) - tx0)) rx=$(($(stat_get TlsRxSw) - rx0))
if [ $tx -eq 0 ] && [ $rx -eq 0 ] && ! grep -q 'Using Kernel TLS' cli.err &&
  ! grep -q 'KTLS SENDFILE.*OK' srv.log; then
  passed=$((passed + 1))
  echo "selftest: PASS control without kTLS: TlsTxSw +0 TlsRxSw +0, no kTLS reported ($(since "$t0"))"
else
  failed=$((failed + 1))
  echo "selftest: FAIL control without kTLS: TlsTxSw +$tx TlsRxSw +$rx (want +0 +0)"
  cat srv.log cli.err
fi

echo "--- /proc/net/tls_stat"
cat /proc/net/tls_stat
echo "--- kTLS ciphers in use: $(awk '/^name/ { n = $3 } /^driver/ && n ~ /^(gcm\(aes\)|rfc7539\(chacha20,poly1305\))$/ { print n "=" $3 }' /proc/crypto | sort -u | tr '\n' ' ')"
echo "selftest: $passed passed, $failed failed; tls_stat delta TlsTxSw +$tx_total TlsRxSw +$rx_total"
[ $failed -eq 0 ] && [ $passed -gt 0 ]
