#!/usr/bin/env python3
"""Serve HTTPS from Python (standard library only): ktls-agent terminates TLS (kTLS or relay),
this program reads and writes plaintext on the sockets it hands over. One connection at a time.
    KTLS_CLIENT_LIB=/path/to/libktls_client.so python3 serve_https.py /run/ktls/handoff.sock"""
import ctypes, json, os, socket, sys, time

lib = ctypes.CDLL(os.environ.get("KTLS_CLIENT_LIB", "libktls_client.so.1"), use_errno=True)
P = ctypes.c_void_p
lib.ktls_agent_connect.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_uint32, ctypes.c_int, ctypes.POINTER(P)]
lib.ktls_agent_accept.argtypes = [P, ctypes.POINTER(P)]
lib.ktls_agent_grant.argtypes = [P, ctypes.c_uint32]
lib.ktls_agent_reconnect.argtypes = [P, ctypes.c_int]
lib.ktls_conn_read.argtypes = [P, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_int, P]
lib.ktls_conn_read.restype = ctypes.c_ssize_t
lib.ktls_conn_fd.argtypes = lib.ktls_conn_free.argtypes = lib.ktls_conn_info_json.argtypes = [P]
lib.ktls_conn_info_json.restype = lib.ktls_last_error.restype = ctypes.c_char_p
KTLS_OK, KTLS_E_UNAVAILABLE = 0, -4

path = sys.argv[1] if len(sys.argv) > 1 else "/run/ktls/handoff.sock"
agent = P()
if lib.ktls_agent_connect(path.encode(), b"example-python", 16, 0, ctypes.byref(agent)) != KTLS_OK:
    sys.exit("subscribe: " + lib.ktls_last_error().decode())
print("subscribed to", path, flush=True)
buf = ctypes.create_string_buffer(65536)
while True:
    conn = P()
    rc = lib.ktls_agent_accept(agent, ctypes.byref(conn))
    if rc == KTLS_E_UNAVAILABLE:  # the agent restarted: subscribe again, keep going
        while lib.ktls_agent_reconnect(agent, 0) != KTLS_OK:
            time.sleep(1)
        continue
    if rc != KTLS_OK:  # a refused message; ktls_last_error() says why
        continue
    lib.ktls_agent_grant(agent, 1)  # ready for one more
    info = json.loads(lib.ktls_conn_info_json(conn))
    request, n = b"", 0
    while b"\r\n\r\n" not in request:
        n = lib.ktls_conn_read(conn, buf, len(buf), 0, None)  # pending bytes, then ktls_recv
        if n <= 0:
            break  # 0: the client closed; -1: ctypes.get_errno() says why
        request += buf.raw[:n]
    if n > 0:
        body = f"hello from Python over {info['data_path_name']} ({info['tls_version']}, {info['cipher']})\n".encode()
        with socket.socket(fileno=os.dup(lib.ktls_conn_fd(conn))) as s:  # plaintext out
            s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
    lib.ktls_shutdown(lib.ktls_conn_fd(conn), socket.SHUT_WR)  # close_notify
    lib.ktls_conn_free(conn)
