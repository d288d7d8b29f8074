#!/usr/bin/env python3
"""A test Kubernetes API server that speaks the real list/watch protocol, for the e2e tests.

Serves the kinds egress-agent watches:
  GET  <collection>                      list (JSON, resourceVersion, fieldSelector spec.nodeName)
  GET  <collection>?watch=true&resourceVersion=N   watch: one JSON event per line, streamed
  metadata-only lists/watches when the Accept header asks for PartialObjectMetadata
  POST /apis/events.k8s.io/v1/namespaces/NS/events          records Events
  PATCH .../egressredirectpolicies/NAME/status              server-side apply of status
and a control interface for the test itself:
  POST /__apply   (body: an object)      create or replace, emits ADDED/MODIFIED
  POST /__delete  (body: apiVersion, kind, metadata)   emits DELETED
  GET  /__events                         the Events posted so far
  GET  /__get?path=<collection>&ns=NS&name=N           one stored object
Usage: fake_apiserver.py PORTFILE   (binds 127.0.0.1:0 and writes the port to PORTFILE)
"""
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

COLLECTIONS = {
    ("v1", "Pod"): ("/api/v1/pods", True),
    ("v1", "Namespace"): ("/api/v1/namespaces", False),
    ("v1", "Service"): ("/api/v1/services", True),
    ("discovery.k8s.io/v1", "EndpointSlice"): ("/apis/discovery.k8s.io/v1/endpointslices", True),
    ("gateway.networking.k8s.io/v1", "Gateway"): ("/apis/gateway.networking.k8s.io/v1/gateways", True),
    ("egress-agent.io/v1alpha1", "EgressRedirectPolicy"): ("/apis/egress-agent.io/v1alpha1/egressredirectpolicies", True),
}
PATHS = {path: (api, kind) for (api, kind), (path, _) in COLLECTIONS.items()}

lock = threading.Condition()
store = {}  # (path, ns, name) -> object
log = []  # (rv, path, type, object)
rv = [100]
events = []


def now():
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def record(path, kind_type, obj):
    with lock:
        rv[0] += 1
        obj.setdefault("metadata", {})["resourceVersion"] = str(rv[0])
        log.append((rv[0], path, kind_type, json.loads(json.dumps(obj))))
        lock.notify_all()


def apply(obj):
    path, namespaced = COLLECTIONS[(obj["apiVersion"], obj["kind"])]
    meta = obj.setdefault("metadata", {})
    ns = meta.get("namespace", "") if namespaced else ""
    key = (path, ns, meta["name"])
    with lock:
        old = store.get(key)
        meta.setdefault("uid", old["metadata"]["uid"] if old else "uid-%s-%s" % (ns, meta["name"]))
        meta.setdefault("creationTimestamp", old["metadata"]["creationTimestamp"] if old else now())
        meta["generation"] = (old["metadata"].get("generation", 1) + 1) if old and old.get("spec") != obj.get("spec") else (old["metadata"].get("generation", 1) if old else 1)
        if old and "status" in old and "status" not in obj:
            obj["status"] = old["status"]
        store[key] = obj
    record(path, "MODIFIED" if old else "ADDED", obj)


def delete(obj):
    path, namespaced = COLLECTIONS[(obj["apiVersion"], obj["kind"])]
    meta = obj["metadata"]
    key = (path, meta.get("namespace", "") if namespaced else "", meta["name"])
    with lock:
        old = store.pop(key, None)
    if old:
        record(path, "DELETED", old)


def matches(obj, field_selector):
    if not field_selector:
        return True
    for term in field_selector.split(","):
        field, _, value = term.partition("=")
        if field == "spec.nodeName" and obj.get("spec", {}).get("nodeName") != value:
            return False
    return True


def shaped(obj, metadata_only):
    if not metadata_only:
        return obj
    return {"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": obj["metadata"]}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def log_message(self, *args):
        pass

    def body(self):
        length = int(self.headers.get("Content-Length", "0"))
        return json.loads(self.rfile.read(length) or b"{}")

    def send_json(self, code, value):
        data = json.dumps(value).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        url = urlparse(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        if url.path == "/__events":
            with lock:
                return self.send_json(200, list(events))
        if url.path == "/__get":
            with lock:
                obj = store.get((query["path"], query.get("ns", ""), query["name"]))
            return self.send_json(200 if obj else 404, obj or {})
        if url.path not in PATHS:
            return self.send_json(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 404, "reason": "NotFound", "message": url.path})
        metadata_only = "PartialObjectMetadata" in self.headers.get("Accept", "")
        selector = query.get("fieldSelector", "")
        if query.get("watch") in ("true", "1"):
            return self.watch(url.path, int(query.get("resourceVersion") or 0), selector, metadata_only, int(query.get("timeoutSeconds") or 30))
        api, kind = PATHS[url.path]
        with lock:
            items = [shaped(o, metadata_only) for (p, _, _), o in sorted(store.items()) if p == url.path and matches(o, selector)]
            version = str(rv[0])
        list_kind = "PartialObjectMetadataList" if metadata_only else kind + "List"
        list_api = "meta.k8s.io/v1" if metadata_only else api
        self.send_json(200, {"apiVersion": list_api, "kind": list_kind, "metadata": {"resourceVersion": version}, "items": items})

    def watch(self, path, since, selector, metadata_only, timeout):
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        deadline = time.time() + min(timeout, 20)
        cursor = since
        try:
            while time.time() < deadline:
                with lock:
                    pending = [e for e in log if e[0] > cursor and e[1] == path]
                    if not pending:
                        lock.wait(timeout=0.5)
                        continue
                for version, _, kind_type, obj in pending:
                    cursor = version
                    if matches(obj, selector):
                        line = json.dumps({"type": kind_type, "object": shaped(obj, metadata_only)}) + "\n"
                        self.wfile.write(line.encode())
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            return

    def do_POST(self):
        url = urlparse(self.path)
        if url.path == "/__apply":
            apply(self.body())
            return self.send_json(200, {})
        if url.path == "/__delete":
            delete(self.body())
            return self.send_json(200, {})
        if url.path.startswith("/apis/events.k8s.io/v1/namespaces/") and url.path.endswith("/events"):
            event = self.body()
            with lock:
                events.append(event)
            return self.send_json(201, event)
        self.send_json(404, {})

    def do_PATCH(self):
        url = urlparse(self.path)
        parts = url.path.strip("/").split("/")
        body = self.body()
        if url.path.startswith("/apis/events.k8s.io/"):
            return self.send_json(200, body)
        # /apis/egress-agent.io/v1alpha1/namespaces/NS/egressredirectpolicies/NAME/status
        if len(parts) == 8 and parts[5] == "egressredirectpolicies" and parts[7] == "status":
            path = "/apis/egress-agent.io/v1alpha1/egressredirectpolicies"
            key = (path, parts[4], parts[6])
            with lock:
                obj = store.get(key)
                if obj is None:
                    return self.send_json(404, {})
                obj["status"] = body.get("status", {})
            record(path, "MODIFIED", obj)
            return self.send_json(200, obj)
        self.send_json(404, {})


def main():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    with open(sys.argv[1], "w") as f:
        f.write(str(server.server_address[1]))
    server.serve_forever()


if __name__ == "__main__":
    main()
