#!/usr/bin/env python3
"""A small authoritative DNS server for the tests (stdlib only, own wire-format code).

Usage: rotating_dns.py --listen ADDR --port PORT --zone-file FILE [--log FILE]

Binds UDP and TCP on ADDR:PORT (IPv4 or IPv6; PORT 0 picks a free port that is free for both)
and prints `listening ADDR PORT` on stdout once both sockets are bound.

The zone file is JSON, re-read whenever its mtime/size/inode changes (checked on each query):
  {"ttl": 1,                       # default TTL of every record (and the SOA minimum)
   "origin": "test",               # optional: SOA owner; default: the last label of the qname
   "names": {
     "pool.test":  {"pool": ["127.1.0.1", ...], "per_answer": 4},  # rotating answers
     "alias.test": {"cname": "target.test"},                       # chain followed (max 8)
     "big.test":   {"a": ["..."], "truncate_udp": true},           # TC=1 over UDP, full over TCP
     "v6.test":    {"aaaa": ["::1"]},
     "*.wild.test": {"a": ["127.2.0.1"]},                          # one or more labels below
     "x.test":     {"a": [...], "ttl": 30}}}                       # per-name TTL
A `pool` rotates separately for A (its IPv4 entries) and AAAA (its IPv6 entries): query k gets
entries [(k-1)*per_answer, k*per_answer) modulo the pool size. A rotation advances only when an
answer is actually sent in full (not for a truncated UDP answer).

--log FILE appends one line per query:
  <unix time> <proto> <client ip:port> <qname as received> <qtype> -> <addr,addr,...>
where the address list is replaced by a status word when the answer has no address:
NXDOMAIN, NODATA, TC (truncated UDP answer), SERVFAIL, FORMERR, NOTIMP, BADVERS.
"""
import argparse
import ipaddress
import json
import os
import signal
import socket
import struct
import sys
import threading
import time

T_A, T_NS, T_CNAME, T_SOA, T_AAAA, T_OPT = 1, 2, 5, 6, 28, 41
TYPE_NAMES = {1: "A", 2: "NS", 5: "CNAME", 6: "SOA", 12: "PTR", 15: "MX", 16: "TXT", 28: "AAAA",
              33: "SRV", 41: "OPT", 64: "SVCB", 65: "HTTPS", 255: "ANY"}
NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED = 0, 1, 2, 3, 4, 5
RCODE_NAMES = {1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}
MAX_CHAIN = 8
OUR_UDP_SIZE = 1232


class FormErr(Exception):
    pass


def norm(name):
    return name.rstrip(".").lower()


# ---------------------------------------------------------------- zone


class Zone:
    """The zone file, reloaded on change, and the pools' rotation counters."""

    def __init__(self, path):
        self.path = path
        self.lock = threading.Lock()
        self.stamp = None
        self.ttl = 1
        self.origin = None
        self.names = {}
        self.counters = {}  # (name, family) -> next index
        self.pools = {}  # (name, family) -> pool list (to reset a counter when the pool changes)
        self.serial = 1
        self.maybe_reload()

    def maybe_reload(self):
        try:
            st = os.stat(self.path)
        except OSError as err:
            if self.stamp is None:
                raise SystemExit(f"zone file {self.path}: {err}")
            return
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        if stamp == self.stamp:
            return
        try:
            with open(self.path, encoding="utf-8") as f:
                data = json.load(f)
            names = {norm(k): v for k, v in data.get("names", {}).items()}
            ttl = int(data.get("ttl", 1))
        except (OSError, ValueError, AttributeError) as err:
            if self.stamp is None:
                raise SystemExit(f"zone file {self.path}: {err}")
            print(f"rotating_dns: keeping the old zone, {self.path}: {err}", file=sys.stderr, flush=True)
            return  # keep the old zone; a half-written file gets another look on the next query
        self.stamp = stamp
        self.names, self.ttl = names, ttl
        self.origin = norm(data["origin"]) if data.get("origin") else None
        self.serial = int(st.st_mtime) & 0xFFFFFFFF

    def lookup(self, name):
        """The entry for `name` (exact first, then the longest wildcard), or None."""
        entry = self.names.get(name)
        if entry is not None:
            return entry
        labels = name.split(".")
        for i in range(1, len(labels)):
            entry = self.names.get("*." + ".".join(labels[i:]))
            if entry is not None:
                return entry
        return None

    def addresses(self, name, entry, qtype, advances):
        fam = 4 if qtype == T_A else 6
        if "pool" in entry:
            pool = [a for a in entry["pool"] if ipaddress.ip_address(a).version == fam]
            if not pool:
                return []
            per = max(1, int(entry.get("per_answer", 1)))
            key = (name, fam)
            if self.pools.get(key) != pool:
                self.pools[key] = pool
                self.counters[key] = 0
            start = self.counters.get(key, 0)
            advances.append((key, (start + per) % len(pool)))
            return [pool[(start + i) % len(pool)] for i in range(min(per, len(pool)))]
        return list(entry.get("a" if fam == 4 else "aaaa", []))

    def resolve(self, qname, qtype, proto):
        """-> (rcode, answers, authority, truncate, advances). Records are (owner, type, ttl, rdata)
        where rdata is bytes, or a name (str) for CNAME, or a tuple for SOA."""
        answers, advances = [], []
        name, seen = norm(qname), set()
        for _ in range(MAX_CHAIN + 1):
            entry = self.lookup(name)
            if entry is None:
                return NXDOMAIN, answers, [self.soa(qname)], False, advances
            if proto == "udp" and entry.get("truncate_udp"):
                return NOERROR, [], [], True, []
            ttl = int(entry.get("ttl", self.ttl))
            if "cname" in entry and qtype != T_CNAME:
                if name in seen or len(seen) >= MAX_CHAIN:
                    return SERVFAIL, answers, [], False, advances
                seen.add(name)
                target = norm(entry["cname"])
                answers.append((name, T_CNAME, ttl, target))
                name = target
                continue
            if "cname" in entry:  # a CNAME query for an alias
                answers.append((name, T_CNAME, ttl, norm(entry["cname"])))
            elif qtype in (T_A, T_AAAA):
                for addr in self.addresses(name, entry, qtype, advances):
                    rtype = T_A if qtype == T_A else T_AAAA
                    fam = socket.AF_INET if qtype == T_A else socket.AF_INET6
                    answers.append((name, rtype, ttl, socket.inet_pton(fam, addr)))
            if not answers or answers[-1][1] == T_CNAME and qtype != T_CNAME:
                return NOERROR, answers, [self.soa(qname)], False, advances  # NODATA
            return NOERROR, answers, [], False, advances
        return SERVFAIL, answers, [], False, advances

    def soa(self, qname):
        origin = self.origin
        if origin is None or not (norm(qname) == origin or norm(qname).endswith("." + origin)):
            origin = norm(qname).split(".")[-1]
        rdata = (f"ns.{origin}" if origin else "ns", f"hostmaster.{origin}" if origin else "hostmaster",
                 self.serial, 3600, 600, 86400, self.ttl)
        return (origin, T_SOA, self.ttl, rdata)

    def commit(self, advances):
        for key, nxt in advances:
            self.counters[key] = nxt


# ---------------------------------------------------------------- wire format


def read_name(msg, off):
    labels, jumps, end = [], 0, None
    while True:
        if off >= len(msg):
            raise FormErr("name past end")
        n = msg[off]
        if n & 0xC0 == 0xC0:
            if off + 1 >= len(msg) or jumps > 32:
                raise FormErr("bad pointer")
            if end is None:
                end = off + 2
            off = ((n & 0x3F) << 8) | msg[off + 1]
            jumps += 1
            continue
        if n & 0xC0:
            raise FormErr("bad label")
        off += 1
        if n == 0:
            break
        labels.append(msg[off:off + n].decode("ascii", "replace"))
        off += n
    return ".".join(labels), (end if end is not None else off)


class Builder:
    def __init__(self):
        self.buf = bytearray()
        self.names = {}  # lowercased name suffix -> offset

    def add_name(self, name, register=True):
        labels = [label for label in name.split(".") if label]
        for i in range(len(labels)):
            suffix = ".".join(labels[i:]).lower()
            ptr = self.names.get(suffix)
            if ptr is not None:
                self.buf += struct.pack("!H", 0xC000 | ptr)
                return
            if register and len(self.buf) < 0x3FFF:
                self.names[suffix] = len(self.buf)
            raw = labels[i].encode("ascii")
            self.buf += bytes([len(raw)]) + raw
        self.buf += b"\x00"

    def add_rr(self, owner, rtype, ttl, rdata, rclass=1):
        self.add_name(owner)
        self.buf += struct.pack("!HHI", rtype, rclass, ttl)
        at = len(self.buf)
        self.buf += b"\x00\x00"
        if rtype == T_CNAME:
            self.add_name(rdata)
        elif rtype == T_SOA:
            mname, rname, serial, refresh, retry, expire, minimum = rdata
            self.add_name(mname)
            self.add_name(rname)
            self.buf += struct.pack("!IIIII", serial, refresh, retry, expire, minimum)
        else:
            self.buf += rdata
        struct.pack_into("!H", self.buf, at, len(self.buf) - at - 2)


def parse_query(msg):
    """-> (id, flags, qname, qtype, qclass, question bytes, edns) ; edns = None or (size, version)."""
    if len(msg) < 12:
        raise FormErr("short")
    qid, flags, qd, an, ns, ar = struct.unpack("!6H", msg[:12])
    if qd != 1:
        raise FormErr("qdcount")
    qname, off = read_name(msg, 12)
    if off + 4 > len(msg):
        raise FormErr("short question")
    qtype, qclass = struct.unpack("!HH", msg[off:off + 4])
    question = msg[12:off + 4]
    off += 4
    edns = None
    for i in range(an + ns + ar):
        _, off = read_name(msg, off)
        if off + 10 > len(msg):
            raise FormErr("short rr")
        rtype, rclass, ttl, rdlen = struct.unpack("!HHIH", msg[off:off + 10])
        off += 10 + rdlen
        if rtype == T_OPT and i >= an + ns:
            edns = (max(512, rclass), (ttl >> 16) & 0xFF)
    return qid, flags, qname, qtype, qclass, question, edns


def build(qid, qflags, question, rcode, answers, authority, edns, tc=False):
    flags = 0x8000 | (qflags & 0x7800) | 0x0400 | 0x0080 | (qflags & 0x0100)  # QR, opcode, AA, RA, RD
    if tc:
        flags |= 0x0200
    ext_rcode = rcode >> 4
    flags |= rcode & 0xF
    b = Builder()
    qd = 1 if question else 0
    b.buf += struct.pack("!6H", qid, flags, qd, len(answers), len(authority), 1 if edns else 0)
    if question:
        b.buf += question
        # register the question's suffixes so owner names become pointers into it (0xC00C, ...)
        labels, offs, off = [], [], 12
        while off < len(b.buf) and 0 < b.buf[off] < 64:
            offs.append(off)
            labels.append(bytes(b.buf[off + 1:off + 1 + b.buf[off]]).decode("ascii", "replace"))
            off += 1 + b.buf[off]
        for i, at in enumerate(offs):
            b.names.setdefault(".".join(labels[i:]).lower(), at)
    for rr in answers:
        b.add_rr(*rr)
    for rr in authority:
        b.add_rr(*rr)
    if edns:
        b.buf += b"\x00" + struct.pack("!HHIH", T_OPT, OUR_UDP_SIZE, ext_rcode << 24, 0)
    return bytes(b.buf)


# ---------------------------------------------------------------- server


class Server:
    def __init__(self, zone, log_path):
        self.zone = zone
        self.log_lock = threading.Lock()
        self.log_file = open(log_path, "a", buffering=1, encoding="utf-8") if log_path else None

    def log(self, proto, client, qname, qtype, what):
        line = f"{time.time():.6f} {proto} {client} {qname or '.'} {TYPE_NAMES.get(qtype, f'TYPE{qtype}')} -> {what}\n"
        with self.log_lock:
            if self.log_file:
                self.log_file.write(line)

    def handle(self, msg, proto, client):
        """One query -> one answer (bytes) or None to stay silent."""
        try:
            qid, qflags, qname, qtype, qclass, question, edns = parse_query(msg)
        except FormErr:
            if len(msg) < 12 or msg[2] & 0x80:
                return None
            self.log(proto, client, "", 0, "FORMERR")
            return build(struct.unpack("!H", msg[:2])[0], msg[2] << 8, b"", FORMERR, [], [], None)
        if qflags & 0x8000:
            return None  # a response: never answer one
        if (qflags >> 11) & 0xF != 0:
            self.log(proto, client, qname, qtype, "NOTIMP")
            return build(qid, qflags, question, NOTIMP, [], [], edns)
        if edns and edns[1] != 0:
            self.log(proto, client, qname, qtype, "BADVERS")
            return build(qid, qflags, question, 16, [], [], edns)
        limit = (edns[0] if edns else 512) if proto == "udp" else 65535
        with self.zone.lock:
            self.zone.maybe_reload()
            if qclass not in (1, 255):
                rcode, answers, authority, tc, advances = REFUSED, [], [], False, []
            else:
                rcode, answers, authority, tc, advances = self.zone.resolve(qname, qtype, proto)
            out = build(qid, qflags, question, rcode, answers, authority, edns, tc)
            if not tc and len(out) > limit:
                tc = True
            if tc:
                out = build(qid, qflags, question, rcode, [], [], edns, tc=True)
            else:
                self.zone.commit(advances)
        addrs = [socket.inet_ntop(socket.AF_INET if r[1] == T_A else socket.AF_INET6, r[3])
                 for r in answers if r[1] in (T_A, T_AAAA)]
        if tc:
            what = "TC"
        elif addrs:
            what = ",".join(addrs)
        elif rcode:
            what = RCODE_NAMES.get(rcode, f"RCODE{rcode}")
        else:
            what = "NODATA"
        self.log(proto, client, qname, qtype, what)
        return out

    def serve_udp(self, sock):
        while True:
            try:
                msg, peer = sock.recvfrom(65535)
            except OSError:
                return
            if not peer:  # recvfrom after shutdown() at exit
                return
            threading.Thread(target=self.udp_one, args=(sock, msg, peer), daemon=True).start()

    def udp_one(self, sock, msg, peer):
        try:
            out = self.handle(msg, "udp", fmt_peer(peer))
            if out is not None:
                sock.sendto(out, peer)
        except Exception as err:  # noqa: BLE001 - keep serving whatever one query does
            print(f"rotating_dns: udp {peer}: {err!r}", file=sys.stderr, flush=True)

    def serve_tcp(self, sock):
        while True:
            try:
                conn, peer = sock.accept()
            except OSError:
                return
            threading.Thread(target=self.tcp_conn, args=(conn, peer), daemon=True).start()

    def tcp_conn(self, conn, peer):
        conn.settimeout(10)
        try:
            with conn:
                while True:
                    head = recv_exact(conn, 2)
                    if head is None:
                        return
                    msg = recv_exact(conn, struct.unpack("!H", head)[0])
                    if msg is None:
                        return
                    out = self.handle(msg, "tcp", fmt_peer(peer))
                    if out is None:
                        return
                    conn.sendall(struct.pack("!H", len(out)) + out)
        except OSError:
            return
        except Exception as err:  # noqa: BLE001
            print(f"rotating_dns: tcp {peer}: {err!r}", file=sys.stderr, flush=True)


def recv_exact(conn, n):
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def fmt_peer(peer):
    host, port = peer[0], peer[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def bind_pair(addr, port):
    fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
    for _ in range(50):
        udp = socket.socket(fam, socket.SOCK_DGRAM)
        tcp = socket.socket(fam, socket.SOCK_STREAM)
        if fam == socket.AF_INET6:
            udp.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            tcp.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        udp.bind((addr, port))
        try:
            tcp.bind((addr, udp.getsockname()[1]))
        except OSError:
            udp.close()
            tcp.close()
            if port:
                raise
            continue
        tcp.listen(128)
        return udp, tcp
    raise SystemExit("no port free for both UDP and TCP")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--listen", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--zone-file", required=True)
    ap.add_argument("--log")
    args = ap.parse_args()

    zone = Zone(args.zone_file)
    server = Server(zone, args.log)
    udp, tcp = bind_pair(args.listen, args.port)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    for target, sock in ((server.serve_udp, udp), (server.serve_tcp, tcp)):
        threading.Thread(target=target, args=(sock,), daemon=True).start()
    print(f"listening {args.listen} {udp.getsockname()[1]}", flush=True)
    stop.wait()  # the signal handler runs in this thread and ends the wait at once
    for sock in (udp, tcp):
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        sock.close()
    if server.log_file:
        with server.log_lock:
            server.log_file.close()
            server.log_file = None
    return 0


if __name__ == "__main__":
    sys.exit(main())
