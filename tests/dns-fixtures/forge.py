#!/usr/bin/env python3
"""A workload that forges a DNS answer to itself.

Usage: forge.py --server IP --name NAME --answer ADDR (--from-addr IP | --raw)

It sends one A query for NAME to IP:53 from an unconnected UDP socket, then sends that socket
an answer to the same query id saying NAME has ADDR (TTL 300):

* `--from-addr IP`: from an ordinary UDP socket bound to IP:53, an address the agent does not
  trust;
* `--raw`: from a raw socket (CAP_NET_RAW) with a hand-built IPv4 header whose source is the
  trusted server itself, IP:53.

It then waits up to 2 s for the forged and the real answer and prints one JSON line:
`{"id": N, "port": P, "received": [{"from": "IP:PORT", "answers": ["ADDR", ...]}, ...]}`.
IPv4 only.
"""
import argparse
import json
import random
import socket
import struct
import time


def encode_name(name):
    out = b""
    for label in name.rstrip(".").split("."):
        out += bytes([len(label)]) + label.encode()
    return out + b"\0"


def query(qid, name):
    return struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + encode_name(name) + struct.pack("!HH", 1, 1)


def answer(qid, name, addr):
    header = struct.pack("!HHHHHH", qid, 0x8180, 1, 1, 0, 0)
    question = encode_name(name) + struct.pack("!HH", 1, 1)
    record = struct.pack("!HHHIH", 0xC00C, 1, 1, 300, 4) + socket.inet_aton(addr)
    return header + question + record


def addresses(message):
    """The A records of an answer (owner names assumed compressed, as ours and the server's are)."""
    qd, an = struct.unpack("!HH", message[4:8])
    pos = 12
    for _ in range(qd):
        while message[pos] != 0:
            pos += 1 + message[pos]
        pos += 5
    found = []
    for _ in range(an):
        if message[pos] & 0xC0 == 0xC0:
            pos += 2
        else:
            while message[pos] != 0:
                pos += 1 + message[pos]
            pos += 1
        rtype, _cls, _ttl, rdlen = struct.unpack("!HHIH", message[pos:pos + 10])
        pos += 10
        if rtype == 1 and rdlen == 4:
            found.append(socket.inet_ntoa(message[pos:pos + 4]))
        pos += rdlen
    return found


def raw_udp(source, source_port, dest, dest_port, payload):
    """An IPv4 + UDP datagram (UDP checksum 0: none, which IPv4 allows)."""
    udp = struct.pack("!HHHH", source_port, dest_port, 8 + len(payload), 0) + payload
    total = 20 + len(udp)
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, random.randrange(65536), 0, 64, 17, 0,
                         socket.inet_aton(source), socket.inet_aton(dest))
    checksum = 0
    for i in range(0, 20, 2):
        checksum += (header[i] << 8) + header[i + 1]
    while checksum >> 16:
        checksum = (checksum & 0xFFFF) + (checksum >> 16)
    header = header[:10] + struct.pack("!H", ~checksum & 0xFFFF) + header[12:]
    return header + udp


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--server", required=True)
    ap.add_argument("--name", required=True)
    ap.add_argument("--answer", required=True)
    how = ap.add_mutually_exclusive_group(required=True)
    how.add_argument("--from-addr")
    how.add_argument("--raw", action="store_true")
    args = ap.parse_args()

    victim = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    victim.bind(("127.0.0.1", 0))
    port = victim.getsockname()[1]
    qid = random.randrange(1, 65536)
    victim.sendto(query(qid, args.name), (args.server, 53))
    forged = answer(qid, args.name, args.answer)
    if args.raw:
        raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        raw.sendto(raw_udp(args.server, 53, "127.0.0.1", port, forged), ("127.0.0.1", 0))
    else:
        forger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        forger.bind((args.from_addr, 53))
        forger.sendto(forged, ("127.0.0.1", port))
    received = []
    deadline = time.monotonic() + 2
    while len(received) < 2 and time.monotonic() < deadline:
        victim.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            message, sender = victim.recvfrom(4096)
        except socket.timeout:
            break
        received.append({"from": f"{sender[0]}:{sender[1]}", "answers": addresses(message)})
    print(json.dumps({"id": qid, "port": port, "received": received}), flush=True)


if __name__ == "__main__":
    main()
