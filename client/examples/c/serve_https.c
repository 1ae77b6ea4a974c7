/* Serve HTTPS from C: ktls-agent terminates TLS (kTLS or relay), this program reads and writes
 * plaintext on the sockets it hands over. One connection at a time, to stay short.
 *   cc serve_https.c -lktls_client -o serve_https && ./serve_https /run/ktls/handoff.sock */
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ktls/ktls_client.h"

int main(int argc, char** argv) {
  const char* path = argc > 1 ? argv[1] : "/run/ktls/handoff.sock";
  ktls_agent* agent;
  if (ktls_agent_connect(path, "example-c", 16, 0, &agent) != KTLS_OK) {
    fprintf(stderr, "subscribe: %s\n", ktls_last_error());
    return 1;
  }
  printf("subscribed to %s\n", path);
  fflush(stdout);
  for (;;) {
    ktls_conn* conn;
    int rc = ktls_agent_accept(agent, &conn);
    if (rc == KTLS_E_UNAVAILABLE) { /* the agent restarted: subscribe again, keep going */
      while (ktls_agent_reconnect(agent, 0) != KTLS_OK) sleep(1);
      continue;
    }
    if (rc != KTLS_OK) continue; /* a refused message; ktls_last_error() says why */
    ktls_agent_grant(agent, 1);  /* ready for one more */

    char req[8192];
    size_t have = 0;
    ssize_t n = 0;
    while (have < sizeof(req) - 1 &&
           (n = ktls_conn_read(conn, req + have, sizeof(req) - 1 - have, 0, NULL)) > 0) {
      req[have += (size_t)n] = '\0';
      if (strstr(req, "\r\n\r\n") != NULL) break; /* the whole request head */
    }
    const ktls_conn_info* info = ktls_conn_get_info(conn);
    char body[256], resp[512];
    int blen = snprintf(body, sizeof(body), "hello from C over %s (%s, %s)\n",
                        info->data_path == KTLS_DATA_PATH_KTLS ? "kTLS" : "relay",
                        info->tls_version, info->cipher);
    int rlen = snprintf(resp, sizeof(resp),
                        "HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s",
                        blen, body);
    if (n > 0) send(ktls_conn_fd(conn), resp, (size_t)rlen, MSG_NOSIGNAL);
    ktls_shutdown(ktls_conn_fd(conn), SHUT_WR); /* close_notify, then close */
    ktls_conn_free(conn);
  }
}
