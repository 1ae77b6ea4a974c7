// Real-kernel check of ktls_recv / ktls_close_notify / ktls_fd_offload_state (not a gtest, not
// built by CMake: the host kernel has no CONFIG_TLS). It installs kTLS by hand on a loopback TCP
// pair (client TX key == server RX key and vice versa, no handshake), sends records of every type
// from the client with TLS_SET_RECORD_TYPE and reads them on the server with ktls_recv, for
// AES-128-GCM TLS 1.3 / 1.2 and AES-256-GCM TLS 1.3. Passed on Debian 6.1.0-56 and 6.12.117.
//
// Run it in a guest (see /work/shared/KTLS-FACTS.md for the qemu line):
//   g++ -std=c++20 -static -I. -Iclient/include tests/unit/client/ktls_io_vm_probe.cc \
//       client/lib/io.cc client/lib/tls_record.cc -o probe
//   initramfs: static busybox, the kernel's crypto/, lib/, net/tls/, arch/x86/crypto/ modules
//   (decompressed), the probe, and an init that runs: busybox --install -s; mount proc, sys,
//   devtmpfs; depmod $(uname -r); echo /sbin/modprobe > /proc/sys/kernel/modprobe;
//   modprobe tls; ip link set lo up; /probe; echo "exit $?"; poweroff -f
// Prints PASS/FAIL per check and "PROBE-DONE failures=N"; exits non-zero on any failure.
//
// Also shows (INFO line) why ktls_fd_offload_state reads only the 4-byte tls_crypto_info header:
// a tls12_crypto_info_aes_gcm_256-sized buffer gets EINVAL on an AES-128 connection.
#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/tls.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>
#include "client/lib/io.h"
#include "ktls/ktls_client.h"

static int failures = 0;
#define CHECK(cond, ...)                                  \
  do {                                                    \
    if (cond) {                                           \
      printf("PASS %s\n", #cond);                         \
    } else {                                              \
      ++failures;                                         \
      printf("FAIL %s: ", #cond);                         \
      printf(__VA_ARGS__);                                \
      printf(" (errno=%d %s)\n", errno, strerror(errno)); \
    }                                                     \
  } while (0)

struct Pair {
  int client, server;
};

Pair Connect() {
  int l = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(l, (sockaddr*)&a, sizeof a);
  listen(l, 1);
  socklen_t len = sizeof a;
  getsockname(l, (sockaddr*)&a, &len);
  int c = socket(AF_INET, SOCK_STREAM, 0);
  connect(c, (sockaddr*)&a, sizeof a);
  int s = accept(l, nullptr, nullptr);
  close(l);
  return {c, s};
}

bool Install128(int fd, int dir, unsigned char keybyte, unsigned short version) {
  tls12_crypto_info_aes_gcm_128 ci{};
  ci.info.version = version;
  ci.info.cipher_type = TLS_CIPHER_AES_GCM_128;
  memset(ci.key, keybyte, sizeof ci.key);
  memset(ci.salt, keybyte + 1, sizeof ci.salt);
  memset(ci.iv, keybyte + 2, sizeof ci.iv);
  return setsockopt(fd, SOL_TLS, dir, &ci, sizeof ci) == 0;
}
bool Install256(int fd, int dir, unsigned char keybyte, unsigned short version) {
  tls12_crypto_info_aes_gcm_256 ci{};
  ci.info.version = version;
  ci.info.cipher_type = TLS_CIPHER_AES_GCM_256;
  memset(ci.key, keybyte, sizeof ci.key);
  memset(ci.salt, keybyte + 1, sizeof ci.salt);
  memset(ci.iv, keybyte + 2, sizeof ci.iv);
  return setsockopt(fd, SOL_TLS, dir, &ci, sizeof ci) == 0;
}

Pair KtlsPair(bool aes256, unsigned short version) {
  Pair p = Connect();
  for (int fd : {p.client, p.server}) {
    if (setsockopt(fd, SOL_TCP, TCP_ULP, "tls", sizeof("tls")) != 0) {
      perror("TCP_ULP");
    }
  }
  auto inst = aes256 ? Install256 : Install128;
  bool ok = inst(p.client, TLS_TX, 0x11, version) && inst(p.server, TLS_RX, 0x11, version) &&
            inst(p.server, TLS_TX, 0x22, version) && inst(p.client, TLS_RX, 0x22, version);
  if (!ok) perror("install");
  return p;
}

void SendRecord(int fd, unsigned char type, const std::string& payload) {
  alignas(cmsghdr) unsigned char control[CMSG_SPACE(1)] = {};
  iovec iov{(void*)payload.data(), payload.size()};
  msghdr m{};
  m.msg_iov = &iov;
  m.msg_iovlen = 1;
  m.msg_control = control;
  m.msg_controllen = sizeof control;
  cmsghdr* c = CMSG_FIRSTHDR(&m);
  c->cmsg_level = SOL_TLS;
  c->cmsg_type = TLS_SET_RECORD_TYPE;
  c->cmsg_len = CMSG_LEN(1);
  *CMSG_DATA(c) = type;
  ssize_t n = sendmsg(fd, &m, 0);
  if (n != (ssize_t)payload.size()) printf("sendmsg type %d: %zd %s\n", type, n, strerror(errno));
}

std::string Ticket(size_t body) {
  std::string m = {4, (char)(body >> 16), (char)(body >> 8), (char)body};
  m.append(body, 'T');
  return m;
}

void WaitReadable(int fd) {
  pollfd p{fd, POLLIN, 0};
  poll(&p, 1, 1000);
}

void CheckPlainTcp() {
  bool tx, rx;
  Pair p = Connect();
  CHECK(ktls_fd_offload_state(p.server, &tx, &rx) && !tx && !rx, "plain tcp tx=%d rx=%d", tx, rx);
  setsockopt(p.server, SOL_TCP, TCP_ULP, "tls", sizeof("tls"));
  CHECK(ktls_fd_offload_state(p.server, &tx, &rx) && !tx && !rx, "ulp without keys tx=%d rx=%d", tx,
        rx);
  CHECK(!ktls::client::HasKtlsTx(p.server), "ulp without keys");
  close(p.client);
  close(p.server);
}

// Reads on the server side: data, control records skipped, EAGAIN, small buffers, peek, split.
void CheckReads(const Pair& p) {
  char buf[65536];
  ktls_record_info info;
  // plain data
  write(p.client, "hello", 5);
  WaitReadable(p.server);
  ssize_t n = ktls_recv(p.server, buf, sizeof buf, 0, &info);
  CHECK(n == 5 && memcmp(buf, "hello", 5) == 0 && info.tls_rx && info.record_type == 23,
        "data n=%zd tls_rx=%d", n, info.tls_rx);

  // plain recv() on a control record is EIO (the fact the design rests on)
  SendRecord(p.client, 22, Ticket(100));
  WaitReadable(p.server);
  n = recv(p.server, buf, sizeof buf, MSG_DONTWAIT);
  CHECK(n == -1 && errno == EIO, "plain recv on control record n=%zd", n);

  // ticket then data: ktls_recv skips the ticket (the one above plus two more)
  SendRecord(p.client, 22, Ticket(180));
  SendRecord(p.client, 22, Ticket(150) + Ticket(20));
  write(p.client, "GET /", 5);
  WaitReadable(p.server);
  n = ktls_recv(p.server, buf, sizeof buf, 0, &info);
  CHECK(n == 5 && memcmp(buf, "GET /", 5) == 0 && info.skipped_records == 4, "n=%zd skipped=%u", n,
        info.skipped_records);

  // ticket alone, non-blocking: EAGAIN, never data we do not have
  SendRecord(p.client, 22, Ticket(120));
  WaitReadable(p.server);
  n = ktls_recv(p.server, buf, sizeof buf, MSG_DONTWAIT, &info);
  CHECK(n == -1 && errno == EAGAIN && info.skipped_records == 1, "n=%zd skipped=%u", n,
        info.skipped_records);

  // small buffer: the ticket is read in pieces, then data
  SendRecord(p.client, 22, Ticket(200));
  write(p.client, "abcdef", 6);
  usleep(50000);
  n = ktls_recv(p.server, buf, 3, 0, &info);
  CHECK(n == 3 && memcmp(buf, "abc", 3) == 0 && info.skipped_records == 1, "n=%zd skipped=%u", n,
        info.skipped_records);
  n = ktls_recv(p.server, buf, 3, 0, &info);
  CHECK(n == 3 && memcmp(buf, "def", 3) == 0, "n=%zd", n);

  // peek past a ticket
  SendRecord(p.client, 22, Ticket(60));
  write(p.client, "peek", 4);
  usleep(50000);
  n = ktls_recv(p.server, buf, sizeof buf, MSG_PEEK, &info);
  CHECK(n == 4 && memcmp(buf, "peek", 4) == 0 && info.skipped_records == 1, "peek n=%zd", n);
  n = ktls_recv(p.server, buf, sizeof buf, 0, &info);
  CHECK(n == 4 && info.skipped_records == 0, "after peek n=%zd skipped=%u", n,
        info.skipped_records);

  // handshake message split across two records
  {
    std::string t = Ticket(300);
    SendRecord(p.client, 22, t.substr(0, 100));
    SendRecord(p.client, 22, t.substr(100));
    write(p.client, "split", 5);
    usleep(50000);
    n = ktls_recv(p.server, buf, sizeof buf, 0, &info);
    CHECK(n == 5 && info.skipped_records == 1, "split n=%zd skipped=%u err=%s", n,
          info.skipped_records, info.error ? info.error : "-");
  }
}

void CheckBigWrite(const Pair& p) {
  char buf[65536];
  // server -> client direction and a large write (drained as it goes, so it cannot deadlock)
  {
    std::string big(300000, 'z');
    size_t off = 0, got = 0;
    while (off < big.size()) {
      ssize_t w = write(p.server, big.data() + off, big.size() - off);
      if (w <= 0) break;
      off += w;
      for (ssize_t r; (r = ktls_recv(p.client, buf, sizeof buf, MSG_DONTWAIT, nullptr)) > 0;)
        got += r;
    }
    CHECK(off == big.size(), "big write %zu", off);
    for (int i = 0; i < 50 && got < big.size(); ++i) {
      WaitReadable(p.client);
      for (ssize_t r; (r = ktls_recv(p.client, buf, sizeof buf, MSG_DONTWAIT, nullptr)) > 0;)
        got += r;
    }
    CHECK(got == big.size(), "big read %zu", got);
  }
}

void CheckKeyUpdateAndFatalAlert() {
  char buf[65536];
  ktls_record_info info;
  ssize_t n;
  // KeyUpdate
  Pair q = KtlsPair(false, TLS_1_3_VERSION);
  SendRecord(q.client, 22, std::string("\x18\x00\x00\x01\x00", 5));
  WaitReadable(q.server);
  n = ktls_recv(q.server, buf, sizeof buf, 0, &info);
  CHECK(n == -1 && errno == EKEYEXPIRED && info.error && strstr(info.error, "KeyUpdate"),
        "keyupdate n=%zd", n);
  close(q.client);
  close(q.server);
  // fatal alert
  Pair r = KtlsPair(false, TLS_1_3_VERSION);
  SendRecord(r.client, 21, std::string("\x02\x28", 2));
  WaitReadable(r.server);
  n = ktls_recv(r.server, buf, sizeof buf, 0, &info);
  CHECK(n == -1 && errno == ECONNRESET && info.alert_name &&
            strcmp(info.alert_name, "handshake_failure") == 0,
        "alert n=%zd", n);
  close(r.client);
  close(r.server);
}

void CheckCloseNotify(const Pair& p) {
  char buf[65536];
  ktls_record_info info;
  ssize_t n;
  // close_notify from the client via ktls_close_notify; the server sees EOF, remembers it,
  // and can still write back (the client reads it, then our close_notify the other way).
  CHECK(ktls_close_notify(p.client) == 0, "close_notify");
  WaitReadable(p.server);
  n = ktls_recv(p.server, buf, sizeof buf, 0, &info);
  CHECK(n == 0 && info.alert_name && strcmp(info.alert_name, "close_notify") == 0,
        "eof n=%zd alert=%s", n, info.alert_name ? info.alert_name : "-");
  n = ktls_recv(p.server, buf, sizeof buf, MSG_DONTWAIT, &info);
  CHECK(n == 0, "eof remembered n=%zd", n);
  CHECK(write(p.server, "bye", 3) == 3, "write after peer close_notify");
  CHECK(ktls_close_notify(p.server) == 0, "server close_notify");
  WaitReadable(p.client);
  n = ktls_recv(p.client, buf, sizeof buf, 0, &info);
  CHECK(n == 3 && memcmp(buf, "bye", 3) == 0, "client reads bye n=%zd", n);
  n = ktls_recv(p.client, buf, sizeof buf, 0, &info);
  CHECK(n == 0 && info.alert_name && strcmp(info.alert_name, "close_notify") == 0,
        "client eof n=%zd", n);
}

int main() {
  CheckPlainTcp();
  for (int variant = 0; variant < 3; ++variant) {
    const bool aes256 = variant == 2;
    const unsigned short version = variant == 1 ? TLS_1_2_VERSION : TLS_1_3_VERSION;
    printf("== variant %s %s\n", aes256 ? "AES-256-GCM" : "AES-128-GCM",
           version == TLS_1_3_VERSION ? "TLS1.3" : "TLS1.2");
    Pair p = KtlsPair(aes256, version);
    bool tx, rx;
    CHECK(ktls_fd_offload_state(p.server, &tx, &rx) && tx && rx, "ktls tx=%d rx=%d", tx, rx);
    CHECK(ktls::client::HasKtlsTx(p.server), "HasKtlsTx");
    {
      tls12_crypto_info_aes_gcm_256 big{};
      socklen_t len = sizeof big;
      int rc = getsockopt(p.server, SOL_TLS, TLS_TX, &big, &len);
      printf("INFO 256-sized getsockopt buffer: rc=%d errno=%s\n", rc, rc ? strerror(errno) : "-");
    }
    CheckReads(p);
    CheckBigWrite(p);
    if (variant == 0) CheckKeyUpdateAndFatalAlert();
    CheckCloseNotify(p);
    close(p.client);
    close(p.server);
  }
  printf("PROBE-DONE failures=%d\n", failures);
  return failures == 0 ? 0 : 1;
}
