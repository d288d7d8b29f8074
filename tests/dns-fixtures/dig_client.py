#!/usr/bin/env python3
"""Stub-resolver client: `dig @SERVER -p PORT NAME A +short` (BIND 9's resolver library), then
a TCP connection to the first address dig printed (CNAME lines are skipped).

Usage: dig_client.py NAME PORT ROUNDS --server ADDR --dns-port P [--family 4|6]
  --family 6 asks for AAAA instead of A.
dig falls back to TCP by itself when an answer is truncated. Prints one JSON line (README.md).
"""
import argparse
import ipaddress
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import clientlib  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("name")
    ap.add_argument("port", type=clientlib.positive)
    ap.add_argument("rounds", type=clientlib.positive)
    ap.add_argument("--server", required=True)
    ap.add_argument("--dns-port", type=clientlib.positive, required=True)
    ap.add_argument("--family", choices=["4", "6"], default="4")
    args = ap.parse_args()
    qtype = "A" if args.family == "4" else "AAAA"
    cmd = ["dig", f"@{args.server}", "-p", str(args.dns_port), args.name, qtype, "+short",
           "+time=2", "+tries=2"]

    def resolve():
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=15, check=False)
        except (OSError, subprocess.TimeoutExpired) as err:
            return None, f"resolve: {err}"
        addrs = []
        for line in out.stdout.splitlines():
            try:
                addrs.append(str(ipaddress.ip_address(line.strip())))
            except ValueError:
                continue  # a CNAME target, or a ";;" comment
        if out.returncode != 0 and not addrs:
            lines = [x for x in (out.stdout + out.stderr).splitlines() if x.strip()]
            return None, f"resolve: dig exit {out.returncode}: {lines[-1] if lines else ''}".rstrip()
        return addrs, None

    return clientlib.run(args.rounds, args.port, resolve)


if __name__ == "__main__":
    sys.exit(main())
