#!/usr/bin/env python3
"""TCP in both directions at once between two hosts, the link baseline of
benches/cluster.sh: each side sends BYTES and receives BYTES on one
connection (what a 2-rank ring does), and prints the goodput per direction.

    tcp_bidi.py server PORT BYTES        (on one host)
    tcp_bidi.py client HOST PORT BYTES   (on the other; prints JSON)
"""

import json
import socket
import sys
import threading
import time


def run(conn, n):
    buf = b"\0" * (1 << 20)

    def tx():
        sent = 0
        while sent < n:
            sent += conn.send(buf[: min(len(buf), n - sent)])

    def rx():
        got = 0
        while got < n:
            d = conn.recv(1 << 20)
            if not d:
                break
            got += len(d)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=tx), threading.Thread(target=rx)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - t0


def main():
    if len(sys.argv) == 4 and sys.argv[1] == "server":
        port, n = int(sys.argv[2]), int(sys.argv[3])
        ls = socket.socket()
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(("0.0.0.0", port))
        ls.listen(1)
        conn, _ = ls.accept()
        run(conn, n)
        conn.close()
    elif len(sys.argv) == 5 and sys.argv[1] == "client":
        host, port, n = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
        for _ in range(100):  # the server may not listen yet
            try:
                conn = socket.create_connection((host, port))
                break
            except OSError:
                time.sleep(0.05)
        else:
            sys.exit("tcp_bidi.py: cannot connect to %s:%d" % (host, port))
        dt = run(conn, n)
        conn.close()
        print(json.dumps({"bytes": n, "seconds": dt, "gbytes_per_s": n / dt / 1e9}))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
