#!/usr/bin/env python3
"""TCP greeters for the stub-resolver clients: each listener sends its own address plus a newline
and closes.

Usage: greeter.py --port PORT ADDR [ADDR ...]
  ADDR is an IPv4/IPv6 address or an IPv4 range FIRST-LAST (e.g. 127.1.0.1-127.1.0.40).
Prints `listening N` on stdout once all listeners are bound; SIGTERM/SIGINT stop it.
"""
import argparse
import ipaddress
import selectors
import signal
import socket
import sys


def expand(spec):
    if "-" in spec:
        first, last = (ipaddress.IPv4Address(x) for x in spec.split("-", 1))
        return [str(ipaddress.IPv4Address(i)) for i in range(int(first), int(last) + 1)]
    return [spec]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("addrs", nargs="+")
    args = ap.parse_args()

    sel = selectors.DefaultSelector()
    for addr in (a for spec in args.addrs for a in expand(spec)):
        fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
        sock = socket.socket(fam, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if fam == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((addr, args.port))
        sock.listen(128)
        sock.setblocking(False)
        sel.register(sock, selectors.EVENT_READ, (addr + "\n").encode())

    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    print(f"listening {len(sel.get_map())}", flush=True)
    while not stop:
        for key, _ in sel.select(timeout=0.2):
            try:
                conn, _ = key.fileobj.accept()
            except OSError:
                continue
            try:
                conn.setblocking(True)
                conn.settimeout(1)
                conn.sendall(key.data)
            except OSError:
                pass
            finally:
                conn.close()
    for key in list(sel.get_map().values()):
        key.fileobj.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
