"""Shared by the Python stub-resolver clients: the round loop, the connect/read step and the
one-line JSON summary (see README.md for the contract)."""
import json
import socket
import sys
from collections import Counter

CONNECT_TIMEOUT = 2.0
READ_LIMIT = 64


def greet(addr, port):
    """Connects to addr:port, reads up to 64 bytes until EOF -> (reply, None) or (None, error)."""
    fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
    try:
        sock = socket.socket(fam, socket.SOCK_STREAM)
    except OSError as err:
        return None, f"connect: {err.strerror or err}"
    try:
        sock.settimeout(CONNECT_TIMEOUT)
        try:
            sock.connect((addr, port))
        except socket.timeout:
            return None, "connect: timed out"
        except OSError as err:
            return None, f"connect: {err.strerror or err}"
        data = b""
        try:
            while len(data) < READ_LIMIT:
                chunk = sock.recv(READ_LIMIT - len(data))
                if not chunk:
                    break
                data += chunk
        except socket.timeout:
            if not data:
                return None, "read: timed out"
        except OSError as err:
            if not data:
                return None, f"read: {err.strerror or err}"
        return data.decode("utf-8", "replace").strip(), None
    finally:
        sock.close()


def run(rounds, port, resolve):
    """resolve() -> (list of address strings, None) or (None, error text)."""
    replies, errors, seen = Counter(), Counter(), []
    for _ in range(rounds):
        addrs, err = resolve()
        if err is None and not addrs:
            err = "resolve: no address"
        if err is not None:
            errors[err] += 1
            continue
        first = addrs[0]
        if first not in seen:
            seen.append(first)
        reply, err = greet(first, port)
        if err is not None:
            errors[err] += 1
        else:
            replies[reply] += 1
    print(json.dumps({"rounds": rounds, "replies": dict(replies), "errors": dict(errors), "addresses": seen}))
    sys.stdout.flush()
    return 0


def positive(text):
    value = int(text)
    if value < 0:
        raise ValueError(text)
    return value
