#!/usr/bin/env python3
"""Stub-resolver client: c-ares through pycares (an A query to one server), then a TCP
connection to the first address.

Usage: cares_client.py NAME PORT ROUNDS --server ADDR --dns-port P [--family 4|6] [--parallel]
  --family 6 queries AAAA instead of A.
  --parallel sends ROUNDS queries at once on one channel (one socket), NAME with "{}" replaced
  by 0..ROUNDS-1, as Envoy, gRPC and Node's dns.resolve do, then connects to each answer.
pycares is Debian's python3-pycares (built for /usr/bin/python3, CPython 3.11); when the running
interpreter cannot import it (pyenv's 3.11), /usr/lib/python3/dist-packages is appended to
sys.path (same CPython 3.11 ABI). A new channel per round: no cache can carry over.
Prints one JSON line (README.md).
"""
import argparse
import os
import select
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import clientlib  # noqa: E402

try:
    import pycares
except ImportError:
    sys.path.append("/usr/lib/python3/dist-packages")
    import pycares


def wait(channel):
    while True:
        read_fds, write_fds = channel.getsock()
        if not read_fds and not write_fds:
            return
        timeout = channel.timeout()
        if not timeout:
            channel.process_fd(pycares.ARES_SOCKET_BAD, pycares.ARES_SOCKET_BAD)
            continue
        rlist, wlist, _ = select.select(read_fds, write_fds, [], timeout)
        if not rlist and not wlist:
            channel.process_fd(pycares.ARES_SOCKET_BAD, pycares.ARES_SOCKET_BAD)
        for fd in rlist:
            channel.process_fd(fd, pycares.ARES_SOCKET_BAD)
        for fd in wlist:
            channel.process_fd(pycares.ARES_SOCKET_BAD, fd)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("name")
    ap.add_argument("port", type=clientlib.positive)
    ap.add_argument("rounds", type=clientlib.positive)
    ap.add_argument("--server", required=True)
    ap.add_argument("--dns-port", type=clientlib.positive, required=True)
    ap.add_argument("--family", choices=["4", "6"], default="4")
    ap.add_argument("--parallel", action="store_true")
    args = ap.parse_args()
    qtype = pycares.QUERY_TYPE_A if args.family == "4" else pycares.QUERY_TYPE_AAAA

    def resolve():
        # pycares 4.3 takes bare addresses; the port is a channel option (udp_port/tcp_port)
        channel = pycares.Channel(servers=[args.server], udp_port=args.dns_port, tcp_port=args.dns_port,
                                  timeout=2.0, tries=2)
        result = {}

        def done(answer, error):
            result["answer"], result["error"] = answer, error

        channel.query(args.name, qtype, done)
        wait(channel)
        if "error" not in result:
            return None, "resolve: no callback"
        if result["error"] is not None:
            return None, f"resolve: {pycares.errno.strerror(result['error'])}"
        return [r.host for r in result["answer"]], None

    if not args.parallel:
        return clientlib.run(args.rounds, args.port, resolve)

    channel = pycares.Channel(servers=[args.server], udp_port=args.dns_port, tcp_port=args.dns_port,
                              timeout=2.0, tries=2)
    results = {}
    for index in range(args.rounds):
        def done(answer, error, index=index):
            results[index] = (answer, error)
        channel.query(args.name.replace("{}", str(index)), qtype, done)
    wait(channel)
    order = iter(range(args.rounds))

    def answered():
        answer, error = results.get(next(order), (None, "no callback"))
        if error is not None:
            return None, f"resolve: {error if isinstance(error, str) else pycares.errno.strerror(error)}"
        return [r.host for r in answer], None

    return clientlib.run(args.rounds, args.port, answered)


if __name__ == "__main__":
    sys.exit(main())
