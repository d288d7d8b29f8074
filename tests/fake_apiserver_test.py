#!/usr/bin/env python3
"""Tests of fake_apiserver.py, run as the Rust harness runs it: a subprocess on a free port.

Run: python3 tests/fake_apiserver_test.py
"""
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import unittest
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import fake_apiserver  # noqa: E402  (for the selector parser's unit tests)

PODS = "/api/v1/pods"
SERVICES = "/api/v1/services"
CONFIGMAPS = "/api/v1/configmaps"
POLICIES = "/apis/egress-agent.io/v1alpha1/egressredirectpolicies"
LEASES = "/apis/coordination.k8s.io/v1/namespaces/default/leases"
METADATA_LIST = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
METADATA = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"
APPLY = "application/apply-patch+yaml"
MERGE = "application/merge-patch+json"


def pod(name, namespace="apps", node="node-1", labels=None):
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels or {}},
        "spec": {"nodeName": node, "containers": [{"name": "main", "image": "example"}]},
        "status": {"phase": "Running"},
    }


def configmap(name, namespace="default", data=None, labels=None):
    return {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace, "labels": labels or {}},
        "data": data or {},
    }


def service(name, namespace):
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": namespace}, "spec": {"clusterIP": "10.0.0.1"}}


def policy(name, namespace="gw"):
    return {
        "apiVersion": "egress-agent.io/v1alpha1", "kind": "EgressRedirectPolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"hostnames": ["web.test"]},
    }


def names(listing):
    return [item["metadata"]["name"] for item in listing["items"]]


class Watch:
    """A watch stream read line by line from a raw socket, with timeouts."""

    def __init__(self, port, path, accept=None):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        request = f"GET {path} HTTP/1.0\r\n" + (f"Accept: {accept}\r\n" if accept else "") + "\r\n"
        self.sock.sendall(request.encode())
        self.buffer = b""
        while b"\r\n\r\n" not in self.buffer:
            self._receive(time.monotonic() + 5)
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        self.code = int(head.split()[1])

    def _receive(self, deadline):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no watch event in time")
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(65536)
        except socket.timeout as err:
            raise TimeoutError("no watch event in time") from err
        self.buffer += data
        return bool(data)

    def next(self, timeout=5.0, bookmarks=True):
        """The next event (skipping bookmarks unless asked for them); None at the end of the stream."""
        deadline = time.monotonic() + timeout
        while True:
            while b"\n" not in self.buffer:
                if not self._receive(deadline):
                    return None
            line, _, self.buffer = self.buffer.partition(b"\n")
            event = json.loads(line)
            if bookmarks or event["type"] != "BOOKMARK":
                return event

    def silent_for(self, seconds, bookmarks=False):
        """Whether no event (bookmarks excepted unless asked) arrives within `seconds`."""
        try:
            event = self.next(seconds, bookmarks)
        except TimeoutError:
            return True
        return event is None

    def close(self):
        self.sock.close()


class ServerTest(unittest.TestCase):
    """Starts a fresh server for every test, the way tests/src/kube.rs does."""

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="fake-apiserver-test-")
        port_file = os.path.join(self.dir, "port")
        self.process = subprocess.Popen([sys.executable, str(HERE / "fake_apiserver.py"), port_file], stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                self.port = int(Path(port_file).read_text().strip())
                break
            except (FileNotFoundError, ValueError):
                self.assertLess(time.monotonic(), deadline, "server did not start")
                time.sleep(0.02)
        self.watches = []

    def tearDown(self):
        for watch in self.watches:
            watch.close()
        self.process.kill()
        self.process.wait()
        shutil.rmtree(self.dir, ignore_errors=True)

    def request(self, method, path, body=None, content_type="application/json", accept=None):
        """(HTTP code, decoded JSON body)."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        headers = {"Content-Type": content_type}
        if accept:
            headers["Accept"] = accept
        connection.request(method, path, body=None if body is None else json.dumps(body), headers=headers)
        response = connection.getresponse()
        data = response.read()
        connection.close()
        return response.status, json.loads(data) if data else None

    def ok(self, method, path, body=None, content_type="application/json", accept=None, code=200):
        got, value = self.request(method, path, body, content_type, accept)
        self.assertEqual(got, code, f"{method} {path}: {value}")
        return value

    def apply(self, obj):
        self.ok("POST", "/__apply", obj)

    def watch(self, path, accept=None):
        watch = Watch(self.port, path, accept)
        self.watches.append(watch)
        self.assertEqual(watch.code, 200)
        return watch

    def assertStatus(self, value, code, reason):
        self.assertEqual(value["kind"], "Status")
        self.assertEqual(value["apiVersion"], "v1")
        self.assertEqual(value["status"], "Failure")
        self.assertEqual(value["code"], code)
        self.assertEqual(value["reason"], reason)
        self.assertTrue(value["message"])

    def fails(self, method, path, code, reason, body=None, content_type="application/json"):
        got, value = self.request(method, path, body, content_type)
        self.assertEqual(got, code, f"{method} {path}: {value}")
        self.assertStatus(value, code, reason)
        return value


class ExistingBehaviour(ServerTest):
    """What the Rust harness and tests/tests/kubernetes.rs rely on."""

    def raw(self, method, path, body):
        """A request exactly as tests/src/kube.rs sends it (HTTP/1.0, JSON body, read to close)."""
        body = json.dumps(body)
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
            sock.sendall(f"{method} {path} HTTP/1.0\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n{body}".encode())
            response = b""
            while data := sock.recv(65536):
                response += data
        return json.loads(response.split(b"\r\n\r\n", 1)[1])

    def test_harness_requests(self):
        self.assertEqual(self.raw("POST", "/__apply", pod("app", labels={"app": "client"})), {})
        self.assertEqual(self.raw("GET", "/__events", None), [])
        stored = self.raw("GET", "/__get?path=/api/v1/pods&ns=apps&name=app", None)
        self.assertEqual(stored["metadata"]["labels"], {"app": "client"})
        self.assertEqual(self.raw("POST", "/__delete", pod("app")), {})
        self.assertEqual(self.raw("GET", "/__get?path=/api/v1/pods&ns=apps&name=app", None), {})

    def test_list_and_watch_with_node_field_selector(self):
        self.apply(pod("a", node="node-1"))
        self.apply(pod("b", node="node-2"))
        listing = self.ok("GET", PODS + "?fieldSelector=spec.nodeName%3Dnode-1")
        self.assertEqual((listing["apiVersion"], listing["kind"]), ("v1", "PodList"))
        self.assertEqual(names(listing), ["a"])
        rv = listing["metadata"]["resourceVersion"]
        watch = self.watch(f"{PODS}?watch=true&resourceVersion={rv}&fieldSelector=spec.nodeName%3Dnode-1")
        self.apply(pod("c", node="node-2"))
        self.apply(pod("d", node="node-1"))
        event = watch.next()
        self.assertEqual((event["type"], event["object"]["metadata"]["name"]), ("ADDED", "d"))
        self.assertGreater(int(event["object"]["metadata"]["resourceVersion"]), int(rv))
        self.ok("POST", "/__delete", pod("a"))
        event = watch.next()
        self.assertEqual((event["type"], event["object"]["metadata"]["name"]), ("DELETED", "a"))

    def test_apply_keeps_status_uid_and_counts_generations(self):
        self.apply(pod("a"))
        first = self.ok("GET", "/__get?path=/api/v1/pods&ns=apps&name=a")
        self.assertEqual(first["metadata"]["uid"], "uid-apps-a")
        self.assertEqual(first["metadata"]["generation"], 1)
        changed = pod("a", node="node-2")
        del changed["status"]
        self.apply(changed)
        second = self.ok("GET", "/__get?path=/api/v1/pods&ns=apps&name=a")
        self.assertEqual(second["status"], {"phase": "Running"})
        self.assertEqual(second["metadata"]["generation"], 2)
        self.assertEqual(second["metadata"]["creationTimestamp"], first["metadata"]["creationTimestamp"])
        self.assertGreater(int(second["metadata"]["resourceVersion"]), int(first["metadata"]["resourceVersion"]))
        self.request("GET", "/__get?path=/api/v1/pods&ns=apps&name=nope")
        self.assertEqual(self.request("GET", "/__get?path=/api/v1/pods&ns=apps&name=nope"), (404, {}))

    def test_metadata_only_list_and_watch(self):
        self.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "apps", "labels": {"x": "y"}}})
        listing = self.ok("GET", "/api/v1/namespaces", accept=METADATA_LIST)
        self.assertEqual((listing["apiVersion"], listing["kind"]), ("meta.k8s.io/v1", "PartialObjectMetadataList"))
        self.assertEqual(listing["items"][0]["kind"], "PartialObjectMetadata")
        self.assertEqual(listing["items"][0]["metadata"]["labels"], {"x": "y"})
        watch = self.watch(f"/api/v1/namespaces?watch=true&resourceVersion={listing['metadata']['resourceVersion']}", accept=METADATA)
        self.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "apps", "labels": {}}})
        event = watch.next()
        self.assertEqual((event["type"], event["object"]["kind"]), ("MODIFIED", "PartialObjectMetadata"))

    def test_status_server_side_apply(self):
        self.apply(policy("web"))
        path = "/apis/egress-agent.io/v1alpha1/namespaces/gw/egressredirectpolicies/web/status?fieldManager=egress-agent&force=true"
        patch = {"apiVersion": "egress-agent.io/v1alpha1", "kind": "EgressRedirectPolicy", "status": {"conditions": [{"type": "Accepted", "status": "True"}]}}
        result = self.ok("PATCH", path, patch, APPLY)
        self.assertEqual(result["status"]["conditions"][0]["type"], "Accepted")
        self.assertEqual(result["spec"], {"hostnames": ["web.test"]})
        stored = self.ok("GET", "/__get?path=" + POLICIES + "&ns=gw&name=web")
        self.assertEqual(stored["status"], patch["status"])
        self.assertEqual(stored["metadata"]["generation"], 1, "a status write is not a spec change")
        self.fails("PATCH", path.replace("/web/", "/nope/"), 404, "NotFound", patch, APPLY)


class Pagination(ServerTest):
    def setUp(self):
        super().setUp()
        for name in "abcde":
            self.apply(configmap(name, labels={"odd": str(name in "ace").lower()}))

    def test_pages_of_one_snapshot(self):
        first = self.ok("GET", CONFIGMAPS + "?limit=2")
        self.assertEqual(names(first), ["a", "b"])
        rv = first["metadata"]["resourceVersion"]
        token = first["metadata"]["continue"]
        # Changes between pages do not show: the pages are one list at rv.
        self.ok("POST", "/__delete", configmap("c"))
        self.apply(configmap("d", data={"changed": "yes"}))
        self.apply(configmap("bb"))
        second = self.ok("GET", CONFIGMAPS + "?limit=2&continue=" + token)
        self.assertEqual(names(second), ["c", "d"])
        self.assertEqual(second["items"][1]["data"], {})
        self.assertEqual(second["metadata"]["resourceVersion"], rv)
        third = self.ok("GET", CONFIGMAPS + "?limit=2&continue=" + second["metadata"]["continue"])
        self.assertEqual(names(third), ["e"])
        self.assertNotIn("continue", third["metadata"])
        self.assertEqual(names(self.ok("GET", CONFIGMAPS)), ["a", "b", "bb", "d", "e"])

    def test_pages_with_a_selector(self):
        first = self.ok("GET", CONFIGMAPS + "?limit=2&labelSelector=odd%3Dtrue")
        self.assertEqual(names(first), ["a", "c"])
        second = self.ok("GET", CONFIGMAPS + "?limit=2&labelSelector=odd%3Dtrue&continue=" + first["metadata"]["continue"])
        self.assertEqual(names(second), ["e"])
        self.assertNotIn("continue", second["metadata"])

    def test_exact_limit_has_no_continue(self):
        self.assertNotIn("continue", self.ok("GET", CONFIGMAPS + "?limit=5")["metadata"])

    def test_continue_older_than_compaction_is_expired(self):
        token = self.ok("GET", CONFIGMAPS + "?limit=2")["metadata"]["continue"]
        self.apply(configmap("f"))
        self.ok("POST", "/__compact")
        self.fails("GET", CONFIGMAPS + "?limit=2&continue=" + token, 410, "Expired")

    def test_bad_continue_and_limit(self):
        self.fails("GET", CONFIGMAPS + "?limit=2&continue=garbage", 400, "BadRequest")
        self.fails("GET", CONFIGMAPS + "?limit=2&continue=WzEsIDIsIDNd", 400, "BadRequest")  # [1, 2, 3]
        self.fails("GET", CONFIGMAPS + "?limit=x", 400, "BadRequest")


class Compaction(ServerTest):
    def test_watch_from_before_compaction_gets_410_and_closes(self):
        rv = self.ok("GET", SERVICES)["metadata"]["resourceVersion"]
        self.apply(service("a", "gw"))
        compacted = self.ok("POST", "/__compact")["resourceVersion"]
        self.assertGreater(int(compacted), int(rv))
        watch = self.watch(f"{SERVICES}?watch=true&resourceVersion={rv}&allowWatchBookmarks=true")
        event = watch.next()
        self.assertEqual(event["type"], "ERROR")
        self.assertStatus(event["object"], 410, "Expired")
        self.assertIsNone(watch.next(), "the stream closes after the error")

    def test_watch_from_the_compaction_point_works_and_open_watches_go_on(self):
        rv = self.ok("GET", SERVICES)["metadata"]["resourceVersion"]
        early = self.watch(f"{SERVICES}?watch=true&resourceVersion={rv}")
        self.apply(service("a", "gw"))
        compacted = self.ok("POST", "/__compact")["resourceVersion"]
        late = self.watch(f"{SERVICES}?watch=true&resourceVersion={compacted}")
        self.apply(service("b", "gw"))
        self.assertEqual(early.next()["object"]["metadata"]["name"], "a")
        self.assertEqual(early.next()["object"]["metadata"]["name"], "b")
        self.assertEqual(late.next()["object"]["metadata"]["name"], "b")

    def test_expire_watches_closes_streams(self):
        watch = self.watch(SERVICES + "?watch=true&resourceVersion=1")
        self.ok("POST", "/__expire_watches")
        self.assertIsNone(watch.next(2))
        # New watches are unaffected.
        again = self.watch(SERVICES + "?watch=true&resourceVersion=1")
        self.apply(service("a", "gw"))
        self.assertEqual(again.next()["type"], "ADDED")

    def test_expire_watches_with_gone_sends_410_first(self):
        watch = self.watch(SERVICES + "?watch=true&resourceVersion=1")
        self.ok("POST", "/__expire_watches", {"gone": True})
        event = watch.next(2)
        self.assertEqual(event["type"], "ERROR")
        self.assertStatus(event["object"], 410, "Expired")
        self.assertIsNone(watch.next(2))


class Bookmarks(ServerTest):
    def test_periodic_bookmarks_carry_the_current_version(self):
        rv = self.ok("GET", SERVICES)["metadata"]["resourceVersion"]
        watch = self.watch(f"{SERVICES}?watch=true&resourceVersion={rv}&allowWatchBookmarks=true")
        self.apply(configmap("elsewhere"))  # moves the resourceVersion, not this collection
        event = watch.next(3)
        self.assertEqual(event["type"], "BOOKMARK")
        self.assertEqual(event["object"], {"apiVersion": "v1", "kind": "Service", "metadata": {"resourceVersion": str(int(rv) + 1)}})
        self.assertEqual(watch.next(3)["type"], "BOOKMARK", "and again a second later")

    def test_bookmark_right_after_initial_events(self):
        self.apply(service("a", "gw"))
        watch = self.watch(SERVICES + "?watch=true&resourceVersion=0&allowWatchBookmarks=true")
        self.assertEqual(watch.next(1)["type"], "ADDED")
        event = watch.next(0.5)
        self.assertEqual(event["type"], "BOOKMARK")
        self.assertNotIn("annotations", event["object"]["metadata"])

    def test_metadata_only_bookmarks(self):
        watch = self.watch("/api/v1/namespaces?watch=true&resourceVersion=0&allowWatchBookmarks=true", accept=METADATA)
        event = watch.next(1)
        self.assertEqual((event["type"], event["object"]["apiVersion"], event["object"]["kind"]), ("BOOKMARK", "meta.k8s.io/v1", "PartialObjectMetadata"))

    def test_no_bookmarks_unless_asked(self):
        rv = self.ok("GET", SERVICES)["metadata"]["resourceVersion"]
        watch = self.watch(f"{SERVICES}?watch=true&resourceVersion={rv}")
        self.assertTrue(watch.silent_for(1.5, bookmarks=True))


class StreamingList(ServerTest):
    QUERY = "?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&resourceVersion="

    def test_initial_events_then_end_bookmark_then_live_events(self):
        self.apply(service("a", "gw"))
        self.apply(service("b", "apps"))
        current = self.ok("GET", SERVICES)["metadata"]["resourceVersion"]
        for since in ("", "0", "101"):
            with self.subTest(resourceVersion=since):
                watch = self.watch(SERVICES + self.QUERY + since)
                first, second = watch.next(), watch.next()
                self.assertEqual((first["type"], second["type"]), ("ADDED", "ADDED"))
                self.assertEqual({first["object"]["metadata"]["name"], second["object"]["metadata"]["name"]}, {"a", "b"})
                end = watch.next()
                self.assertEqual(end["type"], "BOOKMARK")
                self.assertEqual(end["object"]["metadata"], {"resourceVersion": current, "annotations": {"k8s.io/initial-events-end": "true"}})
                watch.close()
        watch = self.watch(SERVICES + self.QUERY)
        self.assertEqual([watch.next()["type"] for _ in range(3)], ["ADDED", "ADDED", "BOOKMARK"])
        self.ok("POST", "/__delete", service("a", "gw"))
        self.assertEqual(watch.next(bookmarks=False)["type"], "DELETED")

    def test_streaming_list_honours_selectors_and_namespaces(self):
        self.apply(service("a", "gw"))
        self.apply(service("b", "apps"))
        watch = self.watch("/api/v1/namespaces/apps/services" + self.QUERY)
        event = watch.next()
        self.assertEqual(event["object"]["metadata"]["name"], "b")
        self.assertEqual(watch.next()["type"], "BOOKMARK")

    def test_requires_not_older_than_and_bookmarks(self):
        self.fails("GET", SERVICES + "?watch=true&sendInitialEvents=true&allowWatchBookmarks=true", 422, "Invalid")
        self.fails("GET", SERVICES + "?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan", 422, "Invalid")


class LabelSelectorParser(unittest.TestCase):
    LABELS = {"app": "web", "tier": "front", "empty": ""}

    def selects(self, selector, labels=None):
        obj = {"metadata": {"labels": self.LABELS if labels is None else labels}}
        return all(r.holds(obj) for r in fake_apiserver.label_requirements(selector))

    def test_operators(self):
        cases = {
            "": True,
            "app=web": True, "app==web": True, "app=db": False, "missing=web": False,
            "app!=db": True, "app!=web": False, "missing!=x": True,
            "app": True, "missing": False, "!missing": True, "!app": False,
            "app in (web,db)": True, "app in (db)": False, "missing in (web)": False,
            "app notin (db, cache)": True, "app notin (web)": False, "missing notin (web)": True,
            "app=web,tier=front": True, "app=web,tier=back": False,
            "app in (web, db),tier notin (back),!missing,empty": True,
            "empty=": True,
        }
        for selector, expected in cases.items():
            with self.subTest(selector=selector):
                self.assertEqual(self.selects(selector), expected)

    def test_no_labels(self):
        self.assertTrue(self.selects("!app", labels={}))
        self.assertFalse(self.selects("app", labels={}))
        self.assertTrue(self.selects("app!=web", labels={}))

    def test_invalid(self):
        for selector in ("app=(x)", "in (a)", "app in a", ",", "app=web,", "a b"):
            with self.subTest(selector=selector), self.assertRaises(fake_apiserver.ApiError) as caught:
                fake_apiserver.label_requirements(selector)
            self.assertEqual(caught.exception.status["code"], 400)


class Selectors(ServerTest):
    def test_label_selectors_on_lists(self):
        self.apply(pod("a", labels={"app": "web", "tier": "front"}))
        self.apply(pod("b", labels={"app": "db"}))
        self.apply(pod("c"))
        cases = {
            "app%3Dweb": ["a"], "app!%3Dweb": ["b", "c"], "app": ["a", "b"], "!app": ["c"],
            "app+in+(web,db)": ["a", "b"], "app+notin+(web)": ["b", "c"], "app,tier%3Dfront": ["a"],
        }
        for selector, expected in cases.items():
            with self.subTest(selector=selector):
                self.assertEqual(names(self.ok("GET", PODS + "?labelSelector=" + selector)), expected)
        self.fails("GET", PODS + "?labelSelector=app%3D(", 400, "BadRequest")

    def test_field_selectors(self):
        self.apply(pod("a", namespace="one", node="n1"))
        self.apply(pod("b", namespace="two", node="n2"))
        self.apply(configmap("a", namespace="two"))
        cases = {
            PODS + "?fieldSelector=metadata.name%3Da": ["a"],
            PODS + "?fieldSelector=metadata.namespace%3Dtwo": ["b"],
            PODS + "?fieldSelector=metadata.namespace!%3Dtwo": ["a"],
            PODS + "?fieldSelector=spec.nodeName%3D%3Dn2,metadata.name%3Db": ["b"],
            CONFIGMAPS + "?fieldSelector=metadata.name%3Da": ["a"],
        }
        for path, expected in cases.items():
            with self.subTest(path=path):
                self.assertEqual(names(self.ok("GET", path)), expected)
        self.fails("GET", CONFIGMAPS + "?fieldSelector=spec.nodeName%3Dn1", 400, "BadRequest")
        self.fails("GET", PODS + "?fieldSelector=spec.nodeName", 400, "BadRequest")

    def test_watch_follows_objects_into_and_out_of_the_selection(self):
        rv = self.ok("GET", PODS)["metadata"]["resourceVersion"]
        watch = self.watch(f"{PODS}?watch=true&resourceVersion={rv}&labelSelector=app%3Dweb")
        self.apply(pod("a", labels={"app": "db"}))  # never selected: nothing
        self.apply(pod("a", labels={"app": "web"}))
        event = watch.next()
        self.assertEqual((event["type"], event["object"]["metadata"]["labels"]), ("ADDED", {"app": "web"}))
        self.apply(pod("a", labels={"app": "web", "v": "2"}))
        self.assertEqual(watch.next()["type"], "MODIFIED")
        self.apply(pod("a", labels={"app": "db"}))
        event = watch.next()
        self.assertEqual(event["type"], "DELETED")
        self.assertEqual(event["object"]["metadata"]["labels"], {"app": "web", "v": "2"}, "its last selected state")
        current = self.ok("GET", "/__get?path=/api/v1/pods&ns=apps&name=a")["metadata"]["resourceVersion"]
        self.assertEqual(event["object"]["metadata"]["resourceVersion"], current, "at the change's version")
        self.ok("POST", "/__delete", pod("a"))  # deleted while not selected: nothing
        self.apply(pod("b", labels={"app": "web"}))
        event = watch.next()
        self.assertEqual((event["type"], event["object"]["metadata"]["name"]), ("ADDED", "b"))

    def test_watch_with_a_field_selector_follows_transitions(self):
        rv = self.ok("GET", PODS)["metadata"]["resourceVersion"]
        watch = self.watch(f"{PODS}?watch=true&resourceVersion={rv}&fieldSelector=spec.nodeName%3Dn1")
        self.apply(pod("a", node="n1"))
        self.apply(pod("a", node="n2"))
        self.assertEqual([watch.next()["type"], watch.next()["type"]], ["ADDED", "DELETED"])


class NamespacedPaths(ServerTest):
    def setUp(self):
        super().setUp()
        self.apply(service("a", "one"))
        self.apply(service("b", "two"))
        self.apply({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4", "endpoints": [],
            "metadata": {"name": "b-xyz", "namespace": "two", "labels": {"kubernetes.io/service-name": "b"}},
        })

    def test_namespaced_lists_and_watches(self):
        self.assertEqual(names(self.ok("GET", "/api/v1/namespaces/two/services")), ["b"])
        self.assertEqual(names(self.ok("GET", "/api/v1/namespaces/nope/services")), [])
        self.assertEqual(names(self.ok("GET", "/apis/discovery.k8s.io/v1/namespaces/two/endpointslices?labelSelector=kubernetes.io/service-name%3Db")), ["b-xyz"])
        self.assertEqual(names(self.ok("GET", "/apis/discovery.k8s.io/v1/namespaces/one/endpointslices")), [])
        watch = self.watch("/api/v1/namespaces/one/services?watch=true&resourceVersion=0")
        self.assertEqual(watch.next()["object"]["metadata"]["name"], "a")
        self.apply(service("c", "two"))
        self.apply(service("d", "one"))
        self.assertEqual(watch.next()["object"]["metadata"]["name"], "d")

    def test_single_objects(self):
        got = self.ok("GET", "/api/v1/namespaces/two/services/b")
        self.assertEqual((got["kind"], got["metadata"]["namespace"]), ("Service", "two"))
        missing = self.fails("GET", "/api/v1/namespaces/one/services/b", 404, "NotFound")
        self.assertEqual(missing["message"], 'services "b" not found')
        self.fails("GET", "/apis/discovery.k8s.io/v1/namespaces/two/endpointslices/nope", 404, "NotFound")
        self.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "two"}})
        self.assertEqual(self.ok("GET", "/api/v1/namespaces/two")["kind"], "Namespace")
        self.assertEqual(self.ok("GET", "/api/v1/namespaces/two", accept=METADATA)["kind"], "PartialObjectMetadata")

    def test_unknown_paths(self):
        for path in ("/api/v1/services/b", "/api/v1/namespaces/two/namespaces", "/api/v1/nothing", "/apis/nothing/v1/things", "/healthz"):
            with self.subTest(path=path):
                self.fails("GET", path, 404, "NotFound")


class Discovery(ServerTest):
    GATEWAY = "gateway.networking.k8s.io"

    def test_documents(self):
        self.assertEqual(self.ok("GET", "/api")["versions"], ["v1"])
        groups = {g["name"]: g for g in self.ok("GET", "/apis")["groups"]}
        self.assertEqual(set(groups), {"discovery.k8s.io", self.GATEWAY, "egress-agent.io", "coordination.k8s.io", "events.k8s.io"})
        self.assertEqual(groups["egress-agent.io"]["preferredVersion"], {"groupVersion": "egress-agent.io/v1alpha1", "version": "v1alpha1"})
        self.assertEqual(self.ok("GET", "/apis/events.k8s.io")["kind"], "APIGroup")
        core = self.ok("GET", "/api/v1")
        self.assertEqual((core["kind"], core["groupVersion"]), ("APIResourceList", "v1"))
        resources = {r["name"]: r for r in core["resources"]}
        self.assertEqual(resources["pods"]["kind"], "Pod")
        self.assertTrue(resources["pods"]["namespaced"])
        self.assertFalse(resources["namespaces"]["namespaced"])
        self.assertIn("watch", resources["configmaps"]["verbs"])
        self.assertIn("pods/status", resources)
        leases = self.ok("GET", "/apis/coordination.k8s.io/v1")
        self.assertEqual([(r["name"], r["kind"]) for r in leases["resources"]], [("leases", "Lease")])
        self.fails("GET", "/apis/coordination.k8s.io/v2", 404, "NotFound")

    def test_disabling_a_group(self):
        self.apply({"apiVersion": self.GATEWAY + "/v1", "kind": "Gateway", "metadata": {"name": "g", "namespace": "gw"}})
        watch = self.watch(f"/apis/{self.GATEWAY}/v1/gateways?watch=true&resourceVersion=0")
        self.assertEqual(watch.next()["type"], "ADDED")
        self.ok("POST", "/__disable_group", {"group": self.GATEWAY})
        self.assertIsNone(watch.next(2), "its watches close")
        self.assertNotIn(self.GATEWAY, [g["name"] for g in self.ok("GET", "/apis")["groups"]])
        for path in (f"/apis/{self.GATEWAY}", f"/apis/{self.GATEWAY}/v1", f"/apis/{self.GATEWAY}/v1/gateways", f"/apis/{self.GATEWAY}/v1/namespaces/gw/gateways/g"):
            with self.subTest(path=path):
                self.fails("GET", path, 404, "NotFound")
        self.ok("GET", "/apis/egress-agent.io/v1alpha1/egressredirectpolicies")
        self.ok("POST", "/__enable_group", {"group": self.GATEWAY})
        self.assertIn(self.GATEWAY, [g["name"] for g in self.ok("GET", "/apis")["groups"]])
        self.assertEqual(names(self.ok("GET", f"/apis/{self.GATEWAY}/v1/gateways")), ["g"])

    def test_unknown_group(self):
        self.fails("POST", "/__disable_group", 400, "BadRequest", {"group": "nope.io"})


class FaultInjection(ServerTest):
    def test_next_requests_fail(self):
        self.ok("POST", "/__fail", {"path_prefix": "/apis/egress-agent.io", "code": 404, "count": 3})
        for _ in range(2):
            self.fails("GET", POLICIES, 404, "NotFound")
        self.ok("GET", SERVICES)  # another prefix
        self.ok("GET", "/__get?path=" + POLICIES + "&ns=gw&name=x", code=404)  # control endpoints are not API requests
        self.fails("GET", POLICIES + "?watch=true&resourceVersion=0", 404, "NotFound")
        self.ok("GET", POLICIES)

    def test_codes_and_default_count(self):
        self.ok("POST", "/__fail", {"path_prefix": "/api/v1/pods", "code": 500})
        self.ok("POST", "/__fail", {"path_prefix": "/api/", "code": 429, "count": 1})
        self.fails("GET", PODS, 500, "InternalError")
        self.fails("GET", PODS, 429, "TooManyRequests")
        self.ok("GET", PODS)
        self.fails("POST", "/__fail", 400, "BadRequest", {"path_prefix": "/api"})


class Writes(ServerTest):
    def test_create_get_update_with_conflicts(self):
        cm = configmap("settings", data={"a": "1"})
        created = self.ok("POST", "/api/v1/namespaces/default/configmaps", cm, code=201)
        self.assertTrue(created["metadata"]["uid"])
        rv = created["metadata"]["resourceVersion"]
        self.assertEqual(self.ok("GET", "/api/v1/namespaces/default/configmaps/settings")["metadata"]["resourceVersion"], rv)
        self.fails("POST", "/api/v1/namespaces/default/configmaps", 409, "AlreadyExists", cm)
        path = "/api/v1/namespaces/default/configmaps/settings"
        updated = self.ok("PUT", path, dict(created, data={"a": "2"}))
        self.assertGreater(int(updated["metadata"]["resourceVersion"]), int(rv))
        self.assertEqual(updated["metadata"]["uid"], created["metadata"]["uid"])
        self.fails("PUT", path, 409, "Conflict", dict(created, data={"a": "3"}))  # stale resourceVersion
        unconditional = dict(cm, data={"a": "4"})
        self.assertEqual(self.ok("PUT", path, unconditional)["data"], {"a": "4"})
        self.fails("PUT", path.replace("settings", "nope"), 404, "NotFound", configmap("nope"))
        self.fails("PUT", path, 400, "BadRequest", configmap("other"))
        self.fails("POST", "/api/v1/namespaces/other/configmaps", 400, "BadRequest", configmap("x"))

    def test_generate_name_and_delete(self):
        created = self.ok("POST", "/api/v1/namespaces/default/configmaps", {"metadata": {"generateName": "cm-"}}, code=201)
        name = created["metadata"]["name"]
        self.assertTrue(name.startswith("cm-") and len(name) > 3)
        self.assertEqual(created["kind"], "ConfigMap")
        watch = self.watch(f"{CONFIGMAPS}?watch=true&resourceVersion={created['metadata']['resourceVersion']}")
        self.ok("DELETE", f"/api/v1/namespaces/default/configmaps/{name}")
        self.assertEqual(watch.next()["type"], "DELETED")
        self.fails("DELETE", f"/api/v1/namespaces/default/configmaps/{name}", 404, "NotFound")
        self.fails("POST", "/api/v1/namespaces/default/configmaps", 422, "Invalid", {"metadata": {}})

    def lease(self, holder, rv=None):
        meta = {"name": "agent"}
        if rv:
            meta["resourceVersion"] = rv
        return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta, "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15}}

    def test_lease_server_side_apply(self):
        path = LEASES + "/agent?fieldManager=node-1&force=true"
        created = self.ok("PATCH", path, self.lease("node-1"), APPLY, code=201)
        self.assertEqual(created["metadata"]["namespace"], "default")
        rv = created["metadata"]["resourceVersion"]
        renewed = self.ok("PATCH", path, {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "spec": {"renewTime": "2024-01-01T00:00:00.000000Z"}}, APPLY)
        self.assertEqual(renewed["spec"]["holderIdentity"], "node-1", "apply merges")
        self.fails("PATCH", path, 409, "Conflict", self.lease("node-2", rv), APPLY)
        current = renewed["metadata"]["resourceVersion"]
        self.assertEqual(self.ok("PATCH", path, self.lease("node-2", current), APPLY)["spec"]["holderIdentity"], "node-2")
        self.fails("PATCH", LEASES + "/agent", 422, "Invalid", self.lease("x"), APPLY)
        self.fails("PATCH", path, 415, "UnsupportedMediaType", [], "application/json-patch+json")
        self.fails("PATCH", LEASES + "/other?fieldManager=x", 409, "Conflict", dict(self.lease("x", "5"), metadata={"name": "other", "resourceVersion": "5"}), APPLY)

    def test_lease_election_by_update(self):
        created = self.ok("POST", LEASES, self.lease("node-1"), code=201)
        # Two candidates read the same version; only the first update wins.
        first = self.request("PUT", LEASES + "/agent", self.lease("node-1", created["metadata"]["resourceVersion"]))
        second = self.request("PUT", LEASES + "/agent", self.lease("node-2", created["metadata"]["resourceVersion"]))
        self.assertEqual((first[0], second[0]), (200, 409))
        self.assertEqual(self.ok("GET", LEASES + "/agent")["spec"]["holderIdentity"], "node-1")

    def test_merge_patch(self):
        self.ok("POST", "/api/v1/namespaces/default/configmaps", configmap("m", data={"a": "1", "b": "2"}), code=201)
        patched = self.ok("PATCH", "/api/v1/namespaces/default/configmaps/m", {"data": {"a": None, "c": "3"}}, MERGE)
        self.assertEqual(patched["data"], {"b": "2", "c": "3"})
        self.fails("PATCH", "/api/v1/namespaces/default/configmaps/nope", 404, "NotFound", {"data": {}}, MERGE)

    def test_status_is_a_subresource(self):
        self.apply(dict(policy("web"), status={"conditions": ["old"]}))
        path = "/apis/egress-agent.io/v1alpha1/namespaces/gw/egressredirectpolicies/web"
        main = self.ok("PUT", path, dict(policy("web"), spec={"hostnames": ["other.test"]}, status={"conditions": ["ignored"]}))
        self.assertEqual(main["status"], {"conditions": ["old"]})
        self.assertEqual(main["metadata"]["generation"], 2)
        status = self.ok("PUT", path + "/status", dict(policy("web"), spec={"ignored": True}, status={"conditions": ["new"]}))
        self.assertEqual((status["spec"], status["status"]), ({"hostnames": ["other.test"]}, {"conditions": ["new"]}))
        self.fails("GET", "/api/v1/namespaces/default/configmaps/x/status", 404, "NotFound")


class Events(ServerTest):
    PATH = "/apis/events.k8s.io/v1/namespaces/gw/events"

    def event(self, name):
        return {
            "apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": name, "namespace": "gw"},
            "reason": "TargetNotFound", "note": "no such service", "type": "Warning", "action": "Reconcile",
            "reportingController": "egress-agent", "reportingInstance": "node-1",
            "regarding": {"apiVersion": "egress-agent.io/v1alpha1", "kind": "EgressRedirectPolicy", "namespace": "gw", "name": "broken", "uid": "uid-gw-broken"},
        }

    def test_post_patch_and_list(self):
        created = self.ok("POST", self.PATH, self.event("broken.1"), code=201)
        self.assertEqual(created["reason"], "TargetNotFound")
        self.ok("POST", self.PATH, self.event("broken.0"), code=201)
        events = self.ok("GET", "/__events")
        self.assertEqual([e["metadata"]["name"] for e in events], ["broken.1", "broken.0"], "oldest first")
        self.assertEqual(events[0]["regarding"]["uid"], "uid-gw-broken")
        series = dict(self.event("broken.1"), series={"count": 2, "lastObservedTime": "2024-01-01T00:00:00.000000Z"})
        self.assertEqual(self.ok("PATCH", self.PATH + "/broken.1", series, MERGE)["series"]["count"], 2)
        self.assertEqual(self.ok("GET", "/__events")[0]["series"]["count"], 2)
        self.fails("PATCH", self.PATH + "/nope", 404, "NotFound", {"series": series["series"]}, MERGE)
        self.fails("PATCH", self.PATH + "/nope", 400, "BadRequest", series, MERGE)  # the body names broken.1


class RequestLog(ServerTest):
    def test_records_api_requests_only(self):
        self.ok("GET", "/api/v1/namespaces/gw/services?labelSelector=a%3Db")
        self.request("GET", "/api/v1/nothing")
        self.watch(SERVICES + "?watch=true&resourceVersion=0").close()
        self.ok("GET", "/__events")
        requests = self.ok("GET", "/__requests")
        self.assertEqual(requests[0], {"method": "GET", "path": "/api/v1/namespaces/gw/services", "query": {"labelSelector": "a=b"}})
        self.assertEqual(requests[1]["path"], "/api/v1/nothing")
        self.assertEqual(requests[2], {"method": "GET", "path": SERVICES, "query": {"watch": "true", "resourceVersion": "0"}})
        self.assertEqual(len(requests), 3)
        self.ok("POST", "/__reset_requests")
        self.assertEqual(self.ok("GET", "/__requests"), [])


if __name__ == "__main__":
    unittest.main()
