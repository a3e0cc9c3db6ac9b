#!/usr/bin/env python3
"""Tiny TCP proxy that records each connection's bytes for the fuzz seed corpus.

    record_proxy.py LISTEN_PORT TARGET_PORT OUT_DIR PREFIX

Connection N writes OUT_DIR/PREFIX-N.c2s (client to server) and PREFIX-N.s2c (server to
client), each truncated to 64 KiB. Stops on SIGTERM/SIGINT."""
import os
import socket
import sys
import threading

LIMIT = 64 * 1024


def pump(src, dst, path):
    kept = bytearray()
    try:
        while True:
            b = src.recv(65536)
            if not b:
                break
            if len(kept) < LIMIT:
                kept += b[: LIMIT - len(kept)]
            dst.sendall(b)
    except OSError:
        pass
    finally:
        with open(path, "wb") as f:
            f.write(kept)
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def main():
    port, target, out, prefix = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    os.makedirs(out, exist_ok=True)
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", port))
    ls.listen(16)
    n = 0
    while True:
        c, _ = ls.accept()
        s = socket.create_connection(("127.0.0.1", target))
        n += 1
        base = os.path.join(out, f"{prefix}-{n}")
        threading.Thread(target=pump, args=(c, s, base + ".c2s"), daemon=True).start()
        threading.Thread(target=pump, args=(s, c, base + ".s2c"), daemon=True).start()


if __name__ == "__main__":
    main()
