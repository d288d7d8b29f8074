#!/usr/bin/env python3
"""Stub-resolver client: glibc getaddrinfo() (Python's socket.getaddrinfo), as an application.

Usage: glibc_client.py NAME PORT ROUNDS [--resolv-conf FILE] [--family any|4|6]
  --resolv-conf FILE  resolve with FILE as /etc/resolv.conf, inside a private mount namespace
                      (root); without it the host's resolver configuration is used.
  --family            AF_UNSPEC (default: glibc sends A and AAAA), AF_INET or AF_INET6.
Prints one JSON line (see README.md).
"""
import argparse
import os
import socket
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import clientlib  # noqa: E402
import mountns  # noqa: E402

FAMILIES = {"any": socket.AF_UNSPEC, "4": socket.AF_INET, "6": socket.AF_INET6}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("name")
    ap.add_argument("port", type=clientlib.positive)
    ap.add_argument("rounds", type=clientlib.positive)
    ap.add_argument("--resolv-conf")
    ap.add_argument("--family", choices=FAMILIES, default="any")
    args = ap.parse_args()
    if args.resolv_conf:
        try:
            mountns.use_resolv_conf(args.resolv_conf)
        except OSError as err:
            print(f"glibc_client: --resolv-conf: {err}", file=sys.stderr)
            return 2

    def resolve():
        try:
            infos = socket.getaddrinfo(args.name, args.port, FAMILIES[args.family], socket.SOCK_STREAM)
        except socket.gaierror as err:
            return None, f"resolve: {err.strerror}"
        return [info[4][0] for info in infos], None

    return clientlib.run(args.rounds, args.port, resolve)


if __name__ == "__main__":
    sys.exit(main())
