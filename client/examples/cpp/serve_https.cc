// Serve HTTPS from C++ with the header-only wrapper ktls/ktls_client.hpp: ktls-agent terminates
// TLS (kTLS or relay), this program reads and writes plaintext. One connection at a time.
//   c++ -std=c++17 serve_https.cc -lktls_client -o serve_https && ./serve_https
//   /run/ktls/handoff.sock
#include <unistd.h>

#include <cstdio>
#include <string>

#include "ktls/ktls_client.hpp"

int main(int argc, char** argv) {
  const std::string path = argc > 1 ? argv[1] : "/run/ktls/handoff.sock";
  ktls::app::Agent agent;
  if (ktls::app::Status s = ktls::app::Agent::Connect(path, "example-cpp", 16, &agent); !s) {
    std::fprintf(stderr, "subscribe: %s\n", s.ToString().c_str());
    return 1;
  }
  std::printf("subscribed to %s\n", path.c_str());
  std::fflush(stdout);
  for (;;) {
    ktls::app::Connection conn;
    ktls::app::Status s = agent.Accept(&conn);
    if (s.code == KTLS_E_UNAVAILABLE) {  // the agent restarted: subscribe again, keep going
      while (!agent.Reconnect()) sleep(1);
      continue;
    }
    if (!s) continue;  // a refused message; s.message says why
    agent.Grant(1);    // ready for one more

    std::string request;
    char buf[4096];
    ssize_t n = 0;
    while (request.find("\r\n\r\n") == std::string::npos && (n = conn.Read(buf, sizeof(buf))) > 0) {
      request.append(buf, static_cast<size_t>(n));
    }
    if (n <= 0) continue;  // closed or failed before a whole request; ~Connection closes it
    const std::string body = std::string("hello from C++ over ") +
                             (conn.ktls() ? "kTLS" : "relay") + " (" + conn.info().tls_version +
                             ", " + conn.info().cipher + ")\n";
    conn.WriteAll("HTTP/1.1 200 OK\r\nContent-Length: " + std::to_string(body.size()) +
                  "\r\nConnection: close\r\n\r\n" + body);
    conn.ShutdownWrite();  // close_notify; the descriptor closes with `conn`
  }
}
