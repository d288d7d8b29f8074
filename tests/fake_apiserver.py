#!/usr/bin/env python3
"""A test Kubernetes API server that speaks the real list/watch protocol, for the e2e tests.

Stdlib only; all state is in memory; one connection per request (HTTP/1.0). Errors are Status
objects ({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason", "code", "message"}).

Kinds served (cluster-wide collection path; a namespaced kind also at
<group-version>/namespaces/NS/<plural>):
  v1 Pod (/api/v1/pods), Namespace (/api/v1/namespaces, cluster-scoped), Service, ConfigMap
  discovery.k8s.io/v1 EndpointSlice, gateway.networking.k8s.io/v1 Gateway,
  egress-agent.io/v1alpha1 EgressRedirectPolicy, coordination.k8s.io/v1 Lease, events.k8s.io/v1 Event
  Pod, Namespace, Service, Gateway and EgressRedirectPolicy have a status subresource (.../NAME/status).

Kubernetes API:
  GET    <collection>                  list, sorted by namespace/name; metadata.resourceVersion is
                                       the list's. labelSelector (k=v, k==v, k!=v, k, !k, k in (a,b),
                                       k notin (a,b); comma = AND), fieldSelector (metadata.name,
                                       metadata.namespace, and spec.nodeName for pods; =, ==, !=;
                                       others are 400), limit + continue (pages of one consistent
                                       snapshot; metadata.continue set while more remain; a token
                                       from before the compaction point is 410 Expired)
  GET    <collection>?watch=true       watch: one JSON event per line; see "Watches" below
  GET    <collection>/NAME[/status]    one object; 404 NotFound when absent
  POST   <collection>                  create (name or generateName; 409 AlreadyExists)
  PUT    <collection>/NAME[/status]    replace; 404 when absent; 409 Conflict when the body's
                                       metadata.resourceVersion is not the stored one
  PATCH  <collection>/NAME[/status]    application/apply-patch+yaml (server-side apply, JSON body,
                                       fieldManager required, creates when absent) or
                                       application/merge-patch+json / strategic-merge-patch+json
                                       (404 when absent); both merge the body into the object
                                       (RFC 7386, no field ownership) and give 409 Conflict on a
                                       stale metadata.resourceVersion in the body
  DELETE <collection>/NAME             delete; returns the object
  GET    /api, /apis, /apis/G          APIVersions, APIGroupList, APIGroup
  GET    /api/v1, /apis/G/V            APIResourceList (name, singularName, namespaced, kind, verbs)
  An Accept header naming PartialObjectMetadata gets metadata-only objects, lists and watch events.
  Writes to the main resource never change the status of a kind with a status subresource, and
  writes to /status change only the status. A spec change bumps metadata.generation.

Watches (GET <collection>?watch=true&...):
  resourceVersion=N                    events after N; N older than the compaction point gets one
                                       ERROR event (a 410 Expired Status) and the stream closes
  resourceVersion unset or 0           ADDED for every current object first, then events after
  sendInitialEvents=true               (requires resourceVersionMatch=NotOlderThan and
                                       allowWatchBookmarks=true, else 422) ADDED for every current
                                       object, then a BOOKMARK annotated
                                       k8s.io/initial-events-end: "true", then events after
  allowWatchBookmarks=true             a BOOKMARK (apiVersion, kind, metadata.resourceVersion only)
                                       right after the initial events and then every second
  labelSelector, fieldSelector         as for lists; an object that stops matching is DELETED for
                                       the watcher (its last matching state, at the change's
                                       resourceVersion), one that starts matching is ADDED
  timeoutSeconds                       the stream closes after it (default 30, at most 20 here); it
                                       also closes when its API group is disabled or on
                                       /__expire_watches

Control interface for the test itself (JSON bodies; not recorded in /__requests):
  POST /__apply   (body: an object)    create or replace, emits ADDED/MODIFIED; keeps the stored
                                       status when the body has none
  POST /__apply_many  (body: a list)   /__apply for each object, under one lock (bulk fixtures)
  POST /__delete  (body: apiVersion, kind, metadata)   emits DELETED
  GET  /__events                       the Events created so far, oldest first
  GET  /__get?path=<collection>&ns=NS&name=N           one stored object ({} and 404 when absent)
  POST /__compact                      history up to the current resourceVersion is no longer
                                       served: older watch resourceVersions and continue tokens get
                                       410; open watches go on. Answers {"resourceVersion": "N"}
  POST /__expire_watches  (body optional: {"gone": true})   closes every open watch stream; with
                                       "gone", each first gets an ERROR event with a 410 Status
  POST /__disable_group  (body: {"group": "gateway.networking.k8s.io"})   the group vanishes from
                                       discovery, its paths answer 404, its watches close; stored
                                       objects are kept
  POST /__enable_group   (body: {"group": ...})        brings it back
  POST /__fail  (body: {"path_prefix": "/apis/egress-agent.io", "code": 404, "count": 3})
                                       the next `count` (default 1) API requests whose path starts
                                       with the prefix fail with that code and a Status body
  GET  /__requests                     [{"method", "path", "query": {name: value}}] for every API
                                       request served, oldest first
  POST /__reset_requests               clears that record
Usage: fake_apiserver.py PORTFILE   (binds 127.0.0.1:0 and writes the port to PORTFILE)
"""
import base64
import bisect
import copy
import json
import re
import secrets
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import NamedTuple, Optional
from urllib.parse import parse_qs, urlparse


# --- Kinds ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Kind:
    """A served kind and where it lives."""

    group: str  # "" for the core group
    version: str
    kind: str
    plural: str
    namespaced: bool = True
    has_status: bool = False
    fields: tuple = ()  # field selectors beyond metadata.name and metadata.namespace

    @property
    def api_version(self):
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def collection(self):
        """The cluster-wide collection path, which also names the kind in the store."""
        prefix = f"/apis/{self.group}" if self.group else "/api"
        return f"{prefix}/{self.version}/{self.plural}"

    @property
    def resource(self):
        """The name Status messages use: plural.group."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    def key(self, obj):
        """The store key of an object of this kind: (collection, namespace, name)."""
        meta = obj["metadata"]
        return (self.collection, meta.get("namespace", "") if self.namespaced else "", meta["name"])


KINDS = (
    Kind("", "v1", "Pod", "pods", has_status=True, fields=("spec.nodeName",)),
    Kind("", "v1", "Namespace", "namespaces", namespaced=False, has_status=True),
    Kind("", "v1", "Service", "services", has_status=True),
    Kind("", "v1", "ConfigMap", "configmaps"),
    Kind("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices"),
    Kind("gateway.networking.k8s.io", "v1", "Gateway", "gateways", has_status=True),
    Kind("egress-agent.io", "v1alpha1", "EgressRedirectPolicy", "egressredirectpolicies", has_status=True),
    Kind("coordination.k8s.io", "v1", "Lease", "leases"),
    Kind("events.k8s.io", "v1", "Event", "events"),
)
BY_TYPE = {(k.api_version, k.kind): k for k in KINDS}
GROUPS = list(dict.fromkeys(k.group for k in KINDS))
EVENTS = BY_TYPE[("events.k8s.io/v1", "Event")]
VERBS = ["create", "delete", "get", "list", "patch", "update", "watch"]
SERVER_FIELDS = ("uid", "resourceVersion", "creationTimestamp", "generation")


# --- Errors --------------------------------------------------------------------------------------

REASONS = {
    400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 405: "MethodNotAllowed",
    409: "Conflict", 410: "Expired", 415: "UnsupportedMediaType", 422: "Invalid", 429: "TooManyRequests",
    500: "InternalError", 503: "ServiceUnavailable", 504: "Timeout",
}


def status(code, message, reason=None):
    """A failure Status object."""
    return {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason or REASONS.get(code, "Unknown"), "code": code,
    }


class ApiError(Exception):
    """Ends a request with a Status response."""

    def __init__(self, code, message, reason=None):
        super().__init__(message)
        self.status = status(code, message, reason)


def not_found(kind=None, name=None):
    if kind is None:
        return ApiError(404, "the server could not find the requested resource")
    return ApiError(404, f'{kind.resource} "{name}" not found')


def too_old(version, compacted):
    return status(410, f"too old resource version: {version} ({compacted})", "Expired")


# --- Selectors -----------------------------------------------------------------------------------

LABEL_KEY = r"[A-Za-z0-9][-A-Za-z0-9_./]*"
LABEL_VALUE = r"[-A-Za-z0-9_.]*"
SET_TERM = re.compile(rf"({LABEL_KEY})\s+(in|notin)\s+\(([^()]*)\)")
EQUALITY_TERM = re.compile(rf"({LABEL_KEY})\s*(==|=|!=)\s*({LABEL_VALUE})")
EXISTS_TERM = re.compile(rf"(!?)\s*({LABEL_KEY})")
FIELD_TERM = re.compile(r"([A-Za-z.]+)\s*(==|=|!=)\s*(.*)")


class Requirement(NamedTuple):
    """`value(obj) in values` (or, without values, `value(obj) is not None`) equals `positive`."""

    value: object  # obj -> the label or field value, None when absent
    positive: bool
    values: Optional[frozenset]

    def holds(self, obj):
        value = self.value(obj)
        present = value is not None if self.values is None else value in self.values
        return present == self.positive


def label(key):
    return lambda obj: (obj.get("metadata", {}).get("labels") or {}).get(key)


def field(path):
    """A field's value as the API server compares it: a string, "" when absent."""

    def value(obj):
        for part in path.split("."):
            obj = obj.get(part) if isinstance(obj, dict) else None
        return "" if obj is None else str(obj)

    return value


def label_requirements(selector):
    """Parses a labelSelector; 400 when it is not one."""
    requirements = []
    for term in re.split(r",(?![^()]*\))", selector) if selector else ():
        term = term.strip()
        if m := SET_TERM.fullmatch(term):
            values = frozenset(v.strip() for v in m[3].split(","))
            requirements.append(Requirement(label(m[1]), m[2] == "in", values))
        elif m := EQUALITY_TERM.fullmatch(term):
            requirements.append(Requirement(label(m[1]), m[2] != "!=", frozenset([m[3]])))
        elif m := EXISTS_TERM.fullmatch(term):
            requirements.append(Requirement(label(m[2]), m[1] != "!", None))
        else:
            raise ApiError(400, f"unable to parse requirement: {term!r} in labelSelector {selector!r}")
    return requirements


def field_requirements(kind, selector):
    """Parses a fieldSelector; 400 for a field the kind does not support, as the real server."""
    requirements = []
    for term in selector.split(",") if selector else ():
        m = FIELD_TERM.fullmatch(term.strip())
        if not m:
            raise ApiError(400, f"invalid field selector: {term!r}")
        if m[1] not in ("metadata.name", "metadata.namespace") + kind.fields:
            raise ApiError(400, f'field label not supported: "{m[1]}"')
        requirements.append(Requirement(field(m[1]), m[2] != "!=", frozenset([m[3]])))
    return requirements


class Selector:
    """What a list or watch request selects: a namespace (None: all), labels and fields."""

    def __init__(self, kind, namespace, query):
        self.namespace = namespace
        self.requirements = label_requirements(query.get("labelSelector", "")) + field_requirements(
            kind, query.get("fieldSelector", "")
        )

    def selects(self, obj):
        if self.namespace is not None and obj["metadata"].get("namespace", "") != self.namespace:
            return False
        return all(r.holds(obj) for r in self.requirements)


# --- State ---------------------------------------------------------------------------------------


class Change(NamedTuple):
    """One entry of the event log."""

    rv: int
    key: tuple  # the store key
    type: str  # ADDED, MODIFIED or DELETED
    object: dict  # as the watch event carries it (for DELETED: the last state, at rv)
    old: Optional[dict]  # the stored object before, None when added


def now():
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def at_version(obj, rv):
    """A copy of obj whose metadata.resourceVersion is rv."""
    return dict(obj, metadata=dict(obj["metadata"], resourceVersion=str(rv)))


class Cluster:
    """Objects, the event log and the test's knobs; everything is guarded by `lock`.

    Stored objects are never changed in place (writes store new dicts), so log entries and
    responses may share them.
    """

    def __init__(self):
        self.lock = threading.Condition()  # notified on every change and every watch-ending knob
        self.objects = {}  # store key -> object; insertion order is creation order
        self.log = []  # Change, in resourceVersion order
        self.rv = 100
        self.compacted = 0  # resourceVersions older than this are no longer served
        self.disabled = set()  # API groups not served
        self.failures = []  # {"path_prefix", "code", "count"} still to inject
        self.requests = []  # {"method", "path", "query"}
        self.watch_generation = 0  # bumped by /__expire_watches
        self.expired_gone = False  # whether that expiry sends 410 first

    def write(self, kind, obj):
        """Creates or replaces obj, keeping its uid and creation time unless it sets them."""
        with self.lock:
            key = kind.key(obj)
            old = self.objects.get(key)
            meta = obj["metadata"]
            meta.setdefault("uid", old["metadata"]["uid"] if old else "uid-%s-%s" % key[1:])
            meta.setdefault("creationTimestamp", old["metadata"]["creationTimestamp"] if old else now())
            generation = old["metadata"].get("generation", 1) if old else 0
            spec_changed = old is None or old.get("spec") != obj.get("spec")
            meta["generation"] = generation + 1 if spec_changed else generation
            self.objects[key] = obj
            self._commit(key, "MODIFIED" if old else "ADDED", obj, old)
            return obj

    def remove(self, key):
        """Deletes an object; returns its last state at the deletion's resourceVersion, or None."""
        with self.lock:
            old = self.objects.pop(key, None)
            if old is None:
                return None
            gone = copy.deepcopy(old)
            self._commit(key, "DELETED", gone, old)
            return gone

    def _commit(self, key, change_type, obj, old):
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        self.log.append(Change(self.rv, key, change_type, obj, old))
        self.lock.notify_all()

    def changes_since(self, rv):
        return self.log[bisect.bisect_right(self.log, rv, key=lambda change: change.rv):]

    def listing(self, kind, rv):
        """[(key, object)] of a kind as it was at resourceVersion rv, sorted by namespace/name."""
        objects = {key: obj for key, obj in self.objects.items() if key[0] == kind.collection}
        for change in reversed(self.changes_since(rv)):
            if change.key[0] == kind.collection:
                if change.old is None:
                    objects.pop(change.key)
                else:
                    objects[change.key] = change.old
        return sorted(objects.items(), key=lambda item: item[0])

    def injected_failure(self, path):
        """The code of a failure injected for this path, if one is due (and counts it)."""
        with self.lock:
            for rule in self.failures:
                if path.startswith(rule["path_prefix"]):
                    rule["count"] -= 1
                    if rule["count"] <= 0:
                        self.failures.remove(rule)
                    return rule["code"]
        return None


cluster = Cluster()


# --- Shapes --------------------------------------------------------------------------------------


def shaped(obj, metadata_only):
    if not metadata_only:
        return obj
    return {"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": obj["metadata"]}


def bookmark(kind, metadata_only, rv, initial_events_end=False):
    """A BOOKMARK event: only apiVersion, kind and metadata.resourceVersion (and the annotation)."""
    meta = {"resourceVersion": str(rv)}
    if initial_events_end:
        meta["annotations"] = {"k8s.io/initial-events-end": "true"}
    if metadata_only:
        return {"type": "BOOKMARK", "object": {"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": meta}}
    return {"type": "BOOKMARK", "object": {"apiVersion": kind.api_version, "kind": kind.kind, "metadata": meta}}


def watch_event(selector, change):
    """The (type, object) a change is for a watcher with this selector, or None."""
    before = change.old if change.old is not None and selector.selects(change.old) else None
    after = change.object if change.type != "DELETED" and selector.selects(change.object) else None
    if before is not None and after is not None:
        return "MODIFIED", after
    if after is not None:
        return "ADDED", after
    if before is not None:
        return "DELETED", change.object if change.type == "DELETED" else at_version(before, change.rv)
    return None


def merge_patch(target, patch):
    """RFC 7386 JSON merge patch; returns new dicts along the patched paths."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for name, value in patch.items():
        if value is None:
            result.pop(name, None)
        else:
            result[name] = merge_patch(result.get(name), value)
    return result


def prepared(kind, old, new, subresource):
    """`new` as a write makes it over `old` (None when creating): server-set metadata is the
    server's, /status writes change only the status, other writes never change the status of a
    kind with a status subresource."""
    if old is None:
        new["metadata"] = {k: v for k, v in new["metadata"].items() if k not in SERVER_FIELDS}
        if kind.has_status:
            new.pop("status", None)
        return new
    if subresource == "status":
        new = dict(copy.deepcopy(old), status=new.get("status", {}))
    elif kind.has_status:
        new = {k: v for k, v in new.items() if k != "status"}
        if "status" in old:
            new["status"] = old["status"]
    for name in ("uid", "creationTimestamp"):
        if name in old["metadata"]:
            new["metadata"][name] = old["metadata"][name]
    return new


def check_version(kind, name, body, old):
    """409 Conflict when the body names a resourceVersion that is not the stored one."""
    wanted = (body.get("metadata") or {}).get("resourceVersion")
    if wanted and (old is None or wanted != old["metadata"]["resourceVersion"]):
        raise ApiError(
            409,
            f'Operation cannot be fulfilled on {kind.resource} "{name}": the object has been modified; '
            "please apply your changes to the latest version and try again",
        )


def encode_continue(rv, key):
    return base64.urlsafe_b64encode(json.dumps([rv, key[1], key[2]]).encode()).decode()


def decode_continue(token):
    """(rv, (namespace, name)) of a continue token; 400 when it is not one."""
    try:
        rv, namespace, name = json.loads(base64.urlsafe_b64decode(token.encode()))
        if isinstance(rv, int) and isinstance(namespace, str) and isinstance(name, str):
            return rv, (namespace, name)
    except (ValueError, TypeError):
        pass
    raise ApiError(400, f"continue key is not valid: {token!r}")


def parse_int(query, name, default):
    try:
        value = int(query.get(name) or default)
    except ValueError as err:
        raise ApiError(400, f"{name}: {err}") from err
    if value < 0:
        raise ApiError(400, f"{name} must not be negative")
    return value


def api_group(name):
    """An APIGroup entry, as /apis lists them."""
    served = dict.fromkeys(k.version for k in KINDS if k.group == name)
    versions = [{"groupVersion": f"{name}/{version}", "version": version} for version in served]
    return {"name": name, "versions": versions, "preferredVersion": versions[0]}


def api_resource_list(group_version, kinds):
    resources = []
    for kind in kinds:
        common = {"namespaced": kind.namespaced, "kind": kind.kind}
        resources.append(dict(common, name=kind.plural, singularName=kind.kind.lower(), verbs=VERBS))
        if kind.has_status:
            status_verbs = ["get", "patch", "update"]
            resources.append(dict(common, name=kind.plural + "/status", singularName="", verbs=status_verbs))
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources}


# --- HTTP ----------------------------------------------------------------------------------------


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def log_message(self, *args):
        pass

    def handle_request(self):
        url = urlparse(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        try:
            if url.path.startswith("/__"):
                control = CONTROLS.get((self.command, url.path))
                if control is None:
                    raise not_found()
                return control(self, query)
            with cluster.lock:
                cluster.requests.append({"method": self.command, "path": url.path, "query": query})
            code = cluster.injected_failure(url.path)
            if code:
                raise ApiError(code, f"injected failure for {url.path}")
            self.serve_api(url.path, query)
        except ApiError as err:
            self.send_json(err.status["code"], err.status)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = handle_request

    # -- plumbing

    def send_json(self, code, value):
        data = json.dumps(value).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def send_line(self, value):
        self.wfile.write(json.dumps(value).encode() + b"\n")
        self.wfile.flush()

    def read_json(self):
        length = int(self.headers.get("Content-Length") or 0)
        try:
            return json.loads(self.rfile.read(length) or b"null")
        except ValueError as err:
            raise ApiError(400, f"invalid JSON body: {err}") from err

    def read_object(self, kind, namespace, name=None):
        """The request body as an object of this kind, in this namespace (and of this name)."""
        obj = self.read_json()
        if not isinstance(obj, dict):
            raise ApiError(400, "the body must be a JSON object")
        if (obj.setdefault("apiVersion", kind.api_version), obj.setdefault("kind", kind.kind)) != (kind.api_version, kind.kind):
            raise ApiError(400, f"the body is not a {kind.api_version} {kind.kind}")
        meta = obj.setdefault("metadata", {})
        if not kind.namespaced:
            meta.pop("namespace", None)
        elif meta.setdefault("namespace", namespace) != namespace:
            raise ApiError(400, "the namespace of the object does not match the namespace on the URL")
        if name is not None and meta.setdefault("name", name) != name:
            raise ApiError(400, "the name of the object does not match the name on the URL")
        return obj

    def metadata_only(self):
        return "PartialObjectMetadata" in self.headers.get("Accept", "")

    # -- routing

    def serve_api(self, path, query):
        parts = [p for p in path.split("/") if p]
        if parts == ["apis"]:
            groups = [api_group(g) for g in GROUPS if g and g not in cluster.disabled]
            return self.discovery({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
        if parts[:1] == ["api"]:
            group, rest = "", parts[1:]
        elif parts[:1] == ["apis"]:
            group, rest = parts[1], parts[2:]
        else:
            raise not_found()
        if group not in GROUPS or group in cluster.disabled:
            raise not_found()
        if not rest:
            if group:
                return self.discovery(dict(api_group(group), kind="APIGroup", apiVersion="v1"))
            address = "127.0.0.1:%d" % self.server.server_address[1]
            addresses = [{"clientCIDR": "0.0.0.0/0", "serverAddress": address}]
            return self.discovery({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": addresses})
        version, rest = rest[0], rest[1:]
        kinds = {k.plural: k for k in KINDS if k.group == group and k.version == version}
        if not kinds:
            raise not_found()
        if not rest:
            return self.discovery(api_resource_list(f"{group}/{version}" if group else version, kinds.values()))
        self.serve_resource(kinds, rest, query)

    def discovery(self, document):
        if self.command != "GET":
            raise ApiError(405, f"{self.command} is not supported here")
        self.send_json(200, document)

    def serve_resource(self, kinds, rest, query):
        """Routes [namespaces, NS,] plural [, NAME [, status]] within one group version."""
        namespace = None
        if len(rest) >= 3 and rest[0] == "namespaces" and rest[2] in kinds and kinds[rest[2]].namespaced:
            namespace, rest = rest[1], rest[2:]
        kind = kinds.get(rest[0])
        name = rest[1] if len(rest) > 1 else None
        subresource = rest[2] if len(rest) > 2 else None
        if (
            kind is None
            or len(rest) > 3
            or (subresource is not None and not (subresource == "status" and kind.has_status))
            or (name is not None and kind.namespaced and namespace is None)
        ):
            raise not_found()
        method = self.command
        if name is None and method == "GET":
            if query.get("watch") in ("true", "1"):
                return self.watch(kind, namespace, query)
            return self.list(kind, namespace, query)
        if name is None and method == "POST" and (namespace is not None or not kind.namespaced):
            return self.create(kind, namespace)
        if name is not None and method == "GET":
            return self.get(kind, namespace, name)
        if name is not None and method == "PUT":
            return self.update(kind, namespace, name, subresource)
        if name is not None and method == "PATCH":
            return self.patch(kind, namespace, name, subresource, query)
        if name is not None and method == "DELETE" and subresource is None:
            return self.delete(kind, namespace, name)
        raise ApiError(405, f"{method} is not supported on {self.path}")

    # -- verbs

    def list(self, kind, namespace, query):
        selector = Selector(kind, namespace, query)
        limit = parse_int(query, "limit", 0)
        with cluster.lock:
            if query.get("continue"):
                rv, start = decode_continue(query["continue"])
                if rv < cluster.compacted:
                    raise ApiError(
                        410,
                        "The provided continue parameter is too old to display a consistent list result. "
                        "You can start a new list without the continue parameter.",
                        "Expired",
                    )
            else:
                rv, start = cluster.rv, None
            listing = cluster.listing(kind, rv)
        matching = [
            (key, obj) for key, obj in listing if (start is None or key[1:] > start) and selector.selects(obj)
        ]
        metadata = {"resourceVersion": str(rv)}
        if limit and len(matching) > limit:
            matching = matching[:limit]
            metadata["continue"] = encode_continue(rv, matching[-1][0])
        metadata_only = self.metadata_only()
        self.send_json(200, {
            "apiVersion": "meta.k8s.io/v1" if metadata_only else kind.api_version,
            "kind": "PartialObjectMetadataList" if metadata_only else kind.kind + "List",
            "metadata": metadata,
            "items": [shaped(obj, metadata_only) for _, obj in matching],
        })

    def get(self, kind, namespace, name):
        with cluster.lock:
            obj = cluster.objects.get((kind.collection, namespace or "", name))
        if obj is None:
            raise not_found(kind, name)
        self.send_json(200, shaped(obj, self.metadata_only()))

    def create(self, kind, namespace):
        obj = self.read_object(kind, namespace)
        meta = obj["metadata"]
        if not meta.get("name"):
            if not meta.get("generateName"):
                raise ApiError(422, f"{kind.kind}: metadata.name or metadata.generateName is required")
            meta["name"] = meta["generateName"] + secrets.token_hex(3)[:5]
        with cluster.lock:
            if kind.key(obj) in cluster.objects:
                raise ApiError(409, f'{kind.resource} "{meta["name"]}" already exists', "AlreadyExists")
            obj = cluster.write(kind, prepared(kind, None, obj, None))
        self.send_json(201, obj)

    def update(self, kind, namespace, name, subresource):
        new = self.read_object(kind, namespace, name)
        with cluster.lock:
            old = cluster.objects.get((kind.collection, namespace or "", name))
            if old is None:
                raise not_found(kind, name)
            check_version(kind, name, new, old)
            obj = cluster.write(kind, prepared(kind, old, new, subresource))
        self.send_json(200, obj)

    def patch(self, kind, namespace, name, subresource, query):
        content_type = self.headers.get("Content-Type", "").split(";")[0].strip()
        if content_type == "application/apply-patch+yaml":
            apply = True
            if not query.get("fieldManager"):
                raise ApiError(422, "fieldManager: Required value: is required for apply patch")
        elif content_type in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
            apply = False
        else:
            raise ApiError(415, f"the body of the request was in an unknown format: {content_type}")
        body = self.read_object(kind, namespace, name)
        with cluster.lock:
            old = cluster.objects.get((kind.collection, namespace or "", name))
            if old is None and (not apply or subresource is not None):
                raise not_found(kind, name)
            check_version(kind, name, body, old)
            merged = merge_patch(copy.deepcopy(old) if old else {}, body)
            obj = cluster.write(kind, prepared(kind, old, merged, subresource))
        self.send_json(200 if old else 201, obj)

    def delete(self, kind, namespace, name):
        gone = cluster.remove((kind.collection, namespace or "", name))
        if gone is None:
            raise not_found(kind, name)
        self.send_json(200, gone)

    def watch(self, kind, namespace, query):
        selector = Selector(kind, namespace, query)
        bookmarks = query.get("allowWatchBookmarks") == "true"
        initial_events = query.get("sendInitialEvents") == "true"
        if initial_events and (query.get("resourceVersionMatch") != "NotOlderThan" or not bookmarks):
            raise ApiError(
                422, "sendInitialEvents requires resourceVersionMatch=NotOlderThan and allowWatchBookmarks=true"
            )
        since = query.get("resourceVersion", "")
        deadline = time.monotonic() + min(parse_int(query, "timeoutSeconds", 30), 20)
        metadata_only = self.metadata_only()
        initial = None  # the objects to send as ADDED first, if any
        expired = None  # the 410 Status for a resourceVersion before the compaction point
        with cluster.lock:
            generation = cluster.watch_generation
            if initial_events or since in ("", "0"):
                cursor = cluster.rv
                initial = [obj for _, obj in cluster.listing(kind, cursor) if selector.selects(obj)]
            else:
                cursor = parse_int(query, "resourceVersion", 0)
                if cursor < cluster.compacted:
                    expired = too_old(cursor, cluster.compacted)
        try:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            if expired:
                return self.send_line({"type": "ERROR", "object": expired})
            for obj in initial or ():
                self.send_line({"type": "ADDED", "object": shaped(obj, metadata_only)})
            if initial is not None and bookmarks:
                self.send_line(bookmark(kind, metadata_only, cursor, initial_events))
            self.stream(kind, selector, metadata_only, cursor, generation, deadline, bookmarks)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def stream(self, kind, selector, metadata_only, cursor, generation, deadline, bookmarks):
        """Sends the changes after `cursor` until the deadline, an expiry or the group's removal."""
        next_bookmark = time.monotonic() + 1
        while True:
            with cluster.lock:
                wake = min(deadline, next_bookmark) if bookmarks else deadline
                cluster.lock.wait_for(
                    lambda: cluster.rv > cursor
                    or cluster.watch_generation != generation
                    or kind.group in cluster.disabled,
                    timeout=max(0, wake - time.monotonic()),
                )
                changes = [c for c in cluster.changes_since(cursor) if c.key[0] == kind.collection]
                cursor = cluster.rv
                expired = cluster.watch_generation != generation
                gone = expired and cluster.expired_gone
                ended = expired or kind.group in cluster.disabled
            for change in changes:
                event = watch_event(selector, change)
                if event:
                    self.send_line({"type": event[0], "object": shaped(event[1], metadata_only)})
            if gone:
                expiry = status(410, "watch expired by /__expire_watches: list again", "Expired")
                self.send_line({"type": "ERROR", "object": expiry})
            if ended or time.monotonic() >= deadline:
                return
            if bookmarks and time.monotonic() >= next_bookmark:
                self.send_line(bookmark(kind, metadata_only, cursor))
                next_bookmark = time.monotonic() + 1

    # -- control interface

    def control_body(self):
        body = self.read_json() or {}
        if not isinstance(body, dict):
            raise ApiError(400, "the body must be a JSON object")
        return body

    def control_kind(self, obj):
        kind = BY_TYPE.get((obj.get("apiVersion"), obj.get("kind")))
        if kind is None or not (obj.get("metadata") or {}).get("name"):
            raise ApiError(400, "need a served apiVersion and kind, and metadata.name")
        return kind

    def control_apply(self, _query):
        obj = self.control_body()
        kind = self.control_kind(obj)
        with cluster.lock:
            old = cluster.objects.get(kind.key(obj))
            if old and "status" in old and "status" not in obj:
                obj["status"] = old["status"]
            cluster.write(kind, obj)
        self.send_json(200, {})

    def control_apply_many(self, _query):
        objs = self.read_json()
        if not isinstance(objs, list):
            raise ApiError(400, "/__apply_many takes a JSON list of objects")
        kinds = [self.control_kind(obj) for obj in objs]
        with cluster.lock:
            for kind, obj in zip(kinds, objs):
                old = cluster.objects.get(kind.key(obj))
                if old and "status" in old and "status" not in obj:
                    obj["status"] = old["status"]
                cluster.write(kind, obj)
        self.send_json(200, {"applied": len(objs)})

    def control_delete(self, _query):
        obj = self.control_body()
        cluster.remove(self.control_kind(obj).key(obj))
        self.send_json(200, {})

    def control_events(self, _query):
        with cluster.lock:
            events = [obj for key, obj in cluster.objects.items() if key[0] == EVENTS.collection]
        self.send_json(200, events)

    def control_get(self, query):
        with cluster.lock:
            obj = cluster.objects.get((query.get("path"), query.get("ns", ""), query.get("name")))
        self.send_json(200 if obj else 404, obj or {})

    def control_compact(self, _query):
        with cluster.lock:
            cluster.compacted = compacted = cluster.rv
        self.send_json(200, {"resourceVersion": str(compacted)})

    def control_expire_watches(self, _query):
        gone = bool(self.control_body().get("gone"))
        with cluster.lock:
            cluster.watch_generation += 1
            cluster.expired_gone = gone
            cluster.lock.notify_all()
        self.send_json(200, {})

    def control_group(self, enable):
        group = self.control_body().get("group")
        if not group or group not in GROUPS:
            raise ApiError(400, f"not a served API group: {group!r}")
        with cluster.lock:
            if enable:
                cluster.disabled.discard(group)
            else:
                cluster.disabled.add(group)
            cluster.lock.notify_all()
        self.send_json(200, {})

    def control_fail(self, _query):
        body = self.control_body()
        rule = {"path_prefix": body.get("path_prefix"), "code": body.get("code"), "count": body.get("count", 1)}
        if not (isinstance(rule["path_prefix"], str) and isinstance(rule["code"], int) and isinstance(rule["count"], int)):
            raise ApiError(400, "need path_prefix (string), code (integer), count (integer, default 1)")
        if rule["count"] > 0:
            with cluster.lock:
                cluster.failures.append(rule)
        self.send_json(200, {})

    def control_requests(self, _query):
        with cluster.lock:
            requests = list(cluster.requests)
        self.send_json(200, requests)

    def control_reset_requests(self, _query):
        with cluster.lock:
            cluster.requests.clear()
        self.send_json(200, {})


CONTROLS = {
    ("POST", "/__apply"): Handler.control_apply,
    ("POST", "/__apply_many"): Handler.control_apply_many,
    ("POST", "/__delete"): Handler.control_delete,
    ("GET", "/__events"): Handler.control_events,
    ("GET", "/__get"): Handler.control_get,
    ("POST", "/__compact"): Handler.control_compact,
    ("POST", "/__expire_watches"): Handler.control_expire_watches,
    ("POST", "/__disable_group"): lambda handler, _query: handler.control_group(enable=False),
    ("POST", "/__enable_group"): lambda handler, _query: handler.control_group(enable=True),
    ("POST", "/__fail"): Handler.control_fail,
    ("GET", "/__requests"): Handler.control_requests,
    ("POST", "/__reset_requests"): Handler.control_reset_requests,
}


def main():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    with open(sys.argv[1], "w") as f:
        f.write(str(server.server_address[1]))
    server.serve_forever()


if __name__ == "__main__":
    main()
