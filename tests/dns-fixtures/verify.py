#!/usr/bin/env python3
"""End-to-end check of the fixtures on this host (root; loopback only): builds the Go and musl
clients, runs rotating_dns.py on 127.53.0.9:53 and greeter.py on 127.1.0.1-40, 127.2.0.1 and
::1 port 18080, runs every client through the cases below and checks what each did against the
server's query log. Cleans up everything it started.

Usage: verify.py [--rounds 20] [--keep DIR]   (prints one line per check, then a summary line)
"""
import argparse
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
DNS_ADDR, DNS_PORT, WEB_PORT = "127.53.0.9", 53, 18080
POOL = [f"127.1.0.{i}" for i in range(1, 41)]
ZONE = {
    "ttl": 1,
    "names": {
        "pool.test": {"pool": POOL, "per_answer": 4},
        "alias.test": {"cname": "alias2.test"},
        "alias2.test": {"cname": "alias3.test"},
        "alias3.test": {"cname": "pool.test"},
        "bigpool.test": {"pool": POOL, "per_answer": 4, "truncate_udp": True},
        "v6.test": {"aaaa": ["::1"]},
        "*.wild.test": {"a": ["127.2.0.1"]},
    },
}

results = []


def check(ok, what, detail=""):
    results.append(ok)
    print(f"{'PASS' if ok else 'FAIL'} {what}{' -- ' + detail if detail else ''}", flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--keep")
    args = ap.parse_args()
    tmp = args.keep or tempfile.mkdtemp(prefix="dns-fixtures.")
    os.makedirs(tmp, exist_ok=True)
    procs = []
    try:
        run_all(tmp, args.rounds, procs)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    failed = results.count(False)
    print(f"{len(results) - failed} passed, {failed} failed")
    return 1 if failed else 0


def build(tmp):
    env = dict(os.environ, GOPATH=f"{tmp}/gopath", GOCACHE=f"{tmp}/gocache", GOTOOLCHAIN="local",
               GOFLAGS="-mod=mod", GOPROXY="off", CGO_ENABLED="0")
    subprocess.run(["go", "build", "-o", f"{tmp}/go_client", "go_client.go"], cwd=HERE, env=env, check=True)
    subprocess.run(["musl-gcc", "-static", "-O2", "-Wall", "-Wextra", "-o", f"{tmp}/musl_client", "musl_client.c"],
                   cwd=HERE, check=True)


def start(procs, cmd, expect):
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    procs.append(p)
    line = p.stdout.readline()
    if not line.startswith(expect):
        raise SystemExit(f"{cmd[1]} did not start: {line!r}")
    return p


def log_lines(path):
    with open(path, encoding="utf-8") as f:
        return [line.split() for line in f if line.strip()]


def run_all(tmp, rounds, procs):
    build(tmp)
    busy = subprocess.run(["ss", "-H", "-lntu", f"( sport = :{DNS_PORT} )"], capture_output=True, text=True).stdout
    check(DNS_ADDR not in busy, f"nothing listens on {DNS_ADDR}:{DNS_PORT} yet", busy.strip())
    zone, log = f"{tmp}/zone.json", f"{tmp}/queries.log"
    with open(zone, "w", encoding="utf-8") as f:
        json.dump(ZONE, f)
    resolv = f"{tmp}/resolv.conf"
    with open(resolv, "w", encoding="utf-8") as f:
        f.write(f"nameserver {DNS_ADDR}\noptions timeout:1 attempts:2\n")
    start(procs, [sys.executable, f"{HERE}/rotating_dns.py", "--listen", DNS_ADDR, "--port", str(DNS_PORT),
                  "--zone-file", zone, "--log", log], "listening")
    start(procs, [sys.executable, f"{HERE}/greeter.py", "--port", str(WEB_PORT), "127.1.0.1-127.1.0.40",
                  "127.2.0.1", "::1"], "listening")

    srv = ["--server", DNS_ADDR, "--dns-port", str(DNS_PORT)]
    clients = {
        "glibc": ([sys.executable, f"{HERE}/glibc_client.py"], ["--resolv-conf", resolv], True),
        "musl": ([f"{tmp}/musl_client"], ["--resolv-conf", resolv], True),
        "go": ([f"{tmp}/go_client"], srv, True),
        "dig": ([sys.executable, f"{HERE}/dig_client.py"], srv, False),
        "cares": ([sys.executable, f"{HERE}/cares_client.py"], srv, False),
        "node": (["node", f"{HERE}/node_client.js"], srv, False),
    }

    def client(name, qname, n, extra=()):
        cmd, opts, _ = clients[name]
        open(log, "w").close()  # the server appends (O_APPEND): truncating is safe
        out = subprocess.run(cmd + [qname, str(WEB_PORT), str(n)] + list(opts) + list(extra),
                             capture_output=True, text=True, timeout=120)
        lines = out.stdout.strip().splitlines()
        if out.returncode != 0 or len(lines) != 1:
            return None, log_lines(log), f"rc={out.returncode} out={out.stdout!r} err={out.stderr[-300:]!r}"
        return json.loads(lines[0]), log_lines(log), lines[0]

    for name, (_, _, both) in clients.items():
        # rotation: 40 addresses, 4 per answer -> 10 different first addresses, each twice in 20
        res, qlog, raw = client(name, "pool.test", rounds)
        print(f"  {name} pool.test: {raw}")
        a_answers = [line[-1] for line in qlog if line[4] == "A"]
        firsts = [a.split(",")[0] for a in a_answers]
        check(res is not None and sum(res["replies"].values()) == rounds and not res["errors"],
              f"{name}: {rounds} rounds connected")
        check(res is not None and len(res["addresses"]) == min(10, rounds)
              and all(res["replies"].get(a) for a in res["addresses"]),
              f"{name}: first addresses rotate", f"{len(res['addresses']) if res else '-'} distinct")
        check(res is not None and res["addresses"] == list(dict.fromkeys(firsts)),
              f"{name}: connected to the first address of each answer")
        aaaa = sum(1 for line in qlog if line[4] == "AAAA")
        check((aaaa == rounds) == both, f"{name}: {'sends' if both else 'does not send'} AAAA alongside A",
              f"{aaaa} AAAA queries")

        res, qlog, raw = client(name, "alias.test", 4)
        print(f"  {name} alias.test: {raw}")
        check(res is not None and sum(res["replies"].values()) == 4 and len(res["addresses"]) == 4,
              f"{name}: CNAME chain alias->alias2->alias3->pool.test followed")

        res, qlog, raw = client(name, "bigpool.test", 4)
        print(f"  {name} bigpool.test (TC over UDP): {raw}")
        tcp = [line for line in qlog if line[1] == "tcp"]
        if name == "musl":  # musl 1.2.3 has no TCP fallback (added in musl 1.2.4)
            check(res is not None and not tcp and not res["replies"] and res["errors"],
                  "musl: TC=1 is not retried over TCP (name does not resolve)")
        else:
            check(res is not None and tcp and sum(res["replies"].values()) == 4,
                  f"{name}: TC=1 retried over TCP", f"{len(tcp)} TCP queries")

        extra = ["--family", "6"] if not both else []
        res, qlog, raw = client(name, "v6.test", 2, extra)
        print(f"  {name} v6.test: {raw}")
        check(res is not None and res["replies"] == {"::1": 2}, f"{name}: AAAA-only name reaches [::1]")

        res, qlog, raw = client(name, "a.b.wild.test", 2)
        print(f"  {name} a.b.wild.test: {raw}")
        check(res is not None and res["replies"] == {"127.2.0.1": 2}, f"{name}: wildcard *.wild.test")

    # the zone file is re-read when it changes
    changed = json.loads(json.dumps(ZONE))
    changed["names"]["pool.test"] = {"a": ["127.2.0.1"]}
    with open(zone + ".new", "w", encoding="utf-8") as f:
        json.dump(changed, f)
    os.replace(zone + ".new", zone)
    res, _, raw = client("dig", "pool.test", 1)
    check(res is not None and res["replies"] == {"127.2.0.1": 1}, "zone file change picked up", raw)

    # concurrency: 200 queries at once over UDP and TCP, every one answered
    answers, lock = [], threading.Lock()

    def one(i):
        q = struct.pack("!6H", i, 0x0100, 1, 0, 0, 0) + b"\x04wild\x01x\x04wild\x04test\x00" + b"\x00\x01\x00\x01"
        try:
            if i % 2:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                    s.settimeout(5)
                    s.sendto(q, (DNS_ADDR, DNS_PORT))
                    r = s.recv(4096)
            else:
                with socket.create_connection((DNS_ADDR, DNS_PORT), timeout=5) as s:
                    s.sendall(struct.pack("!H", len(q)) + q)
                    r = s.recv(4096)[2:]
            ok = struct.unpack("!H", r[:2])[0] == i and r[3] & 0xF == 0 and r[7] == 1
        except OSError:
            ok = False
        with lock:
            answers.append(ok)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(200)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    check(answers.count(True) == 200, "200 concurrent UDP/TCP queries answered", f"{answers.count(True)}/200")


if __name__ == "__main__":
    sys.exit(main())
