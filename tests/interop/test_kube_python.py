#!/usr/bin/python3
"""Interop: python3-kubernetes (Debian) against cloudcore's Kubernetes API.

One cluster on loopback (keadm init, cloudcore with a short change
history, keadm join, edgecore for edge-1). Through kubernetes.client with
the admin kubeconfig keadm writes: create, list (labels, pages with
limit/continue), watch from a resourceVersion (resumed after a break, and
410 once the history no longer reaches it), patch (merge and strategic),
update with a stale resourceVersion (409), delete with preconditions,
deletecollection. Through the node's own kubeconfig (keadm join
--kubeapi-server): its Node, its pods and what they reference, and 403 with
a Status for everything else. Raw requests: every kind of bad input gets
its Kubernetes status and reason, and the store revision does not move.
"""
import json
import os
import ssl
import subprocess
import sys
import unittest
import urllib.error
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
import kecluster  # noqa: E402

try:
    import kubernetes
    from kubernetes import client, config, watch
    from kubernetes.client.rest import ApiException
except ImportError:  # pragma: no cover
    kubernetes = None

HISTORY = 60


def cm(name, labels=None, data=None):
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "labels": labels or {}}, "data": data or {"k": "v"}}


@unittest.skipIf(kubernetes is None, "python3-kubernetes is not installed")
class KubePython(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.c = kecluster.Cluster(cloud_flags=["--store.history=%d" % HISTORY,
                                               "--kubeapi.watch_bookmark_interval=300ms"])
        cls.c.start_cloud().join().start_edge()
        cls.api = client.CoreV1Api(config.new_client_from_config(cls.c.kubeconfig))
        cls.node_api = client.CoreV1Api(config.new_client_from_config(cls.c.node_kubeconfig))
        kecluster.wait_for(cls.node_ready, "edge-1 Ready")

    @classmethod
    def node_ready(cls):
        try:
            node = cls.api.read_node("edge-1")
        except ApiException as e:
            if e.status == 404:  # not registered yet
                return False
            raise
        return any(c.type == "Ready" and c.status == "True"
                   for c in (node.status.conditions or []))

    @classmethod
    def tearDownClass(cls):
        cls.c.cleanup()

    def revision(self):
        return int(self.api.list_namespace().metadata.resource_version)

    # ---- admin: the verbs ----

    def test_crud_pages_watch(self):
        ns = "py"
        self.api.create_namespace({"apiVersion": "v1", "kind": "Namespace",
                                   "metadata": {"name": ns}})
        for i in range(7):
            self.api.create_namespaced_config_map(ns, cm("c%d" % i, {"i": str(i % 2)}))
        with self.assertRaises(ApiException) as e:
            self.api.create_namespaced_config_map(ns, cm("c0"))
        self.assertEqual(e.exception.status, 409)
        self.assertEqual(json.loads(e.exception.body)["reason"], "AlreadyExists")

        # lists: labels, pages
        odd = self.api.list_namespaced_config_map(ns, label_selector="i=1")
        self.assertEqual([o.metadata.name for o in odd.items], ["c1", "c3", "c5"])
        names, cont, rvs = [], None, set()
        while True:
            page = self.api.list_namespaced_config_map(ns, limit=3, _continue=cont)
            self.assertLessEqual(len(page.items), 3)
            names += [o.metadata.name for o in page.items]
            rvs.add(page.metadata.resource_version)
            cont = page.metadata._continue
            if not cont:
                break
        self.assertEqual(names, ["c%d" % i for i in range(7)])
        self.assertEqual(len(rvs), 1, "every page is read at the first page's revision")

        # watch from the list's version: sees a change made after it
        start = self.api.list_namespaced_config_map(ns).metadata.resource_version
        self.api.patch_namespaced_config_map("c1", ns, {"data": {"k": "merged"}})
        w = watch.Watch()
        events = []
        for ev in w.stream(self.api.list_namespaced_config_map, ns, resource_version=start,
                           timeout_seconds=10):
            events.append((ev["type"], ev["object"].metadata.name, ev["object"].data))
            if len(events) == 1:
                w.stop()
        self.assertEqual(events, [("MODIFIED", "c1", {"k": "merged"})])
        # resumed after a break: from the last version seen, what came since
        seen = self.api.read_namespaced_config_map("c1", ns).metadata.resource_version
        self.api.delete_namespaced_config_map("c2", ns)
        self.api.create_namespaced_config_map(ns, cm("c9"))
        got = []
        for ev in w.stream(self.api.list_namespaced_config_map, ns, resource_version=seen,
                           timeout_seconds=10):
            got.append((ev["type"], ev["object"].metadata.name))
            if len(got) == 2:
                w.stop()
        self.assertEqual(got, [("DELETED", "c2"), ("ADDED", "c9")])

        # strategic merge patch of a pod (containers merged by name) and
        # optimistic concurrency
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "labels": {"a": "1"}},
               "spec": {"nodeName": "edge-1", "containers": [
                   {"name": "a", "image": "localhost/busybox:1.0"},
                   {"name": "b", "image": "localhost/busybox:1.0"}]}}
        created = self.api.create_namespaced_pod(ns, pod)
        patched = self.api.patch_namespaced_pod(
            "p", ns, {"spec": {"containers": [{"name": "b", "image": "localhost/busybox:2.0"}]}})
        self.assertEqual([(c.name, c.image) for c in patched.spec.containers],
                         [("a", "localhost/busybox:1.0"), ("b", "localhost/busybox:2.0")])
        stale = self.api.read_namespaced_pod("p", ns)
        stale.metadata.resource_version = created.metadata.resource_version
        stale.metadata.labels = {"a": "2"}
        with self.assertRaises(ApiException) as e:
            self.api.replace_namespaced_pod("p", ns, stale)
        self.assertEqual(e.exception.status, 409)
        self.assertEqual(json.loads(e.exception.body)["reason"], "Conflict")
        self.assertEqual(self.api.read_namespaced_pod("p", ns).metadata.labels, {"a": "1"})

        # delete with a precondition that does not hold: 409, still there
        with self.assertRaises(ApiException) as e:
            self.api.delete_namespaced_config_map(
                "c3", ns, body=client.V1DeleteOptions(
                    preconditions=client.V1Preconditions(uid="not-its-uid")))
        self.assertEqual(e.exception.status, 409)
        self.api.read_namespaced_config_map("c3", ns)
        # deletecollection by label
        self.api.delete_collection_namespaced_config_map(ns, label_selector="i=1")
        left = [o.metadata.name for o in self.api.list_namespaced_config_map(ns).items]
        self.assertEqual(left, ["c0", "c4", "c6", "c9"])

    def test_watch_too_old_is_410(self):
        ns = "old"
        self.api.create_namespace({"apiVersion": "v1", "kind": "Namespace",
                                   "metadata": {"name": ns}})
        self.api.create_namespaced_config_map(ns, cm("x"))
        old = self.api.read_namespaced_config_map("x", ns).metadata.resource_version
        for i in range(HISTORY + 10):  # more changes than the history keeps
            self.api.patch_namespaced_config_map("x", ns, {"data": {"k": str(i)}})
        with self.assertRaises(ApiException) as e:
            for _ in watch.Watch().stream(self.api.list_namespaced_config_map, ns,
                                          resource_version=old, timeout_seconds=5):
                pass
        self.assertEqual(e.exception.status, 410)
        # a list's continue token that old is 410 too
        first = self.api.list_namespace(limit=1)
        for i in range(HISTORY + 10):
            self.api.patch_namespaced_config_map("x", ns, {"data": {"k": "again%d" % i}})
        with self.assertRaises(ApiException) as e:
            self.api.list_namespace(limit=1, _continue=first.metadata._continue)
        self.assertEqual(e.exception.status, 410)
        self.assertEqual(json.loads(e.exception.body)["reason"], "Expired")

    # ---- the node's identity ----

    def test_node_identity(self):
        ns = "nodes"
        self.api.create_namespace({"apiVersion": "v1", "kind": "Namespace",
                                   "metadata": {"name": ns}})
        self.api.create_namespaced_config_map(ns, cm("used"))
        self.api.create_namespaced_config_map(ns, cm("unused"))
        self.api.create_namespaced_secret(ns, {"apiVersion": "v1", "kind": "Secret",
                                               "metadata": {"name": "s"},
                                               "stringData": {"p": "x"}})
        self.api.create_namespaced_pod(ns, {
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "mine"},
            "spec": {"nodeName": "edge-1", "containers": [{
                "name": "c", "image": "localhost/busybox:1.0",
                "envFrom": [{"configMapRef": {"name": "used"}}],
                "env": [{"name": "P", "valueFrom": {"secretKeyRef": {"name": "s",
                                                                      "key": "p"}}}]}]}})
        n = self.node_api
        self.assertEqual(n.read_node("edge-1").metadata.name, "edge-1")
        kecluster.wait_for(lambda: self.can(lambda: n.read_namespaced_config_map("used", ns)),
                           "the node to hold the referenced ConfigMap")
        self.assertEqual(n.read_namespaced_pod("mine", ns).spec.node_name, "edge-1")
        self.assertEqual(n.read_namespaced_secret("s", ns).metadata.name, "s")
        pods = n.list_pod_for_all_namespaces(field_selector="spec.nodeName=edge-1")
        self.assertIn("mine", [p.metadata.name for p in pods.items])
        for call in (lambda: n.read_namespaced_config_map("unused", ns),
                     lambda: n.list_namespaced_config_map(ns),
                     lambda: n.list_pod_for_all_namespaces(),
                     lambda: n.list_pod_for_all_namespaces(field_selector="spec.nodeName=edge-2"),
                     lambda: n.list_node(),
                     lambda: n.create_namespaced_config_map(ns, cm("from-node")),
                     lambda: n.delete_namespaced_pod("mine", ns),
                     lambda: n.patch_node("edge-1", {"metadata": {"labels": {"x": "y"}}})):
            with self.assertRaises(ApiException) as e:
                call()
            self.assertEqual(e.exception.status, 403)
            st = json.loads(e.exception.body)
            self.assertEqual((st["kind"], st["reason"], st["code"]), ("Status", "Forbidden", 403))
            self.assertIn("system:node:edge-1", st["message"])
        with self.assertRaises(ApiException):
            self.api.read_namespaced_config_map("from-node", ns)
        self.assertNotIn("x", self.api.read_node("edge-1").metadata.labels or {})

    def can(self, call):
        try:
            call()
            return True
        except ApiException as e:
            if e.status != 403:
                raise
            return False

    def test_watch_bookmarks(self):
        """A watch that allows bookmarks gets BOOKMARK events carrying a
        resourceVersion at least the one it started from; the events it
        asked for still come, in order, around them."""
        ns = "marks"
        self.api.create_namespace({"apiVersion": "v1", "kind": "Namespace",
                                   "metadata": {"name": ns}})
        start = self.api.list_namespaced_config_map(ns).metadata.resource_version
        ctx = ssl.create_default_context(cafile=os.path.join(self.c.cloud_dir, "ca.crt"))
        ctx.load_cert_chain(os.path.join(self.c.cloud_dir, "admin.crt"),
                            os.path.join(self.c.cloud_dir, "admin.key"))
        url = ("https://127.0.0.1:%d/api/v1/namespaces/%s/configmaps?watch=true&"
               "allowWatchBookmarks=true&resourceVersion=%s&timeoutSeconds=20"
               % (self.c.kubeapi, ns, start))
        with urllib.request.urlopen(url, context=ctx, timeout=30) as r:
            first = json.loads(r.readline())
            self.assertEqual(first["type"], "BOOKMARK")
            self.assertEqual(first["object"]["kind"], "ConfigMap")
            self.assertGreaterEqual(int(first["object"]["metadata"]["resourceVersion"]),
                                    int(start))
            self.api.create_namespaced_config_map(ns, cm("after-mark"))
            types = []
            while "ADDED" not in types:
                types.append(json.loads(r.readline())["type"])
            self.assertTrue(set(types) <= {"BOOKMARK", "ADDED"}, types)
            nxt = json.loads(r.readline())  # the next bookmark: the ADDED's version or later
            while nxt["type"] != "BOOKMARK":
                nxt = json.loads(r.readline())
            self.assertGreater(int(nxt["object"]["metadata"]["resourceVersion"]), int(start))

    def test_watches_bounded_per_user(self):
        """One identity holds at most 64 watches (429 past it, a Status);
        closing them gives the room back; another identity is not held up.
        A user of its own, so no watch of another test counts."""
        import http.client
        subprocess.run([self.c.keadm, "certs", "user", "watcher", "--dir", self.c.cloud_dir,
                        "--group", "system:masters"], check=True, stdout=subprocess.DEVNULL)
        ctx = ssl.create_default_context(cafile=os.path.join(self.c.cloud_dir, "ca.crt"))
        ctx.load_cert_chain(os.path.join(self.c.cloud_dir, "watcher.crt"),
                            os.path.join(self.c.cloud_dir, "watcher.key"))
        path = "/api/v1/namespaces/default/configmaps?watch=true&timeoutSeconds=60"

        def open_watch():
            conn = http.client.HTTPSConnection("127.0.0.1", self.c.kubeapi, context=ctx,
                                               timeout=30)
            conn.request("GET", path)
            return conn, conn.getresponse()

        held = []
        try:
            for _ in range(64):
                conn, resp = open_watch()
                self.assertEqual(resp.status, 200)
                held.append(conn)
            conn, resp = open_watch()
            self.assertEqual(resp.status, 429)
            st = json.loads(resp.read())
            self.assertEqual((st["reason"], st["code"]), ("TooManyRequests", 429))
            self.assertIn('"watcher"', st["message"])
            conn.close()
            # another identity is still served
            pods = self.node_api.list_pod_for_all_namespaces(field_selector="spec.nodeName=edge-1")
            self.assertIsNotNone(pods.metadata.resource_version)
        finally:
            for conn in held:
                conn.close()

        def room():
            conn, resp = open_watch()
            conn.close()
            return resp.status == 200
        kecluster.wait_for(room, "the closed watches to give their room back")

    # ---- raw bad input ----

    def raw(self, method, path, body, ctype="application/json", cert=True):
        ctx = ssl.create_default_context(cafile=os.path.join(self.c.cloud_dir, "ca.crt"))
        if cert:
            ctx.load_cert_chain(os.path.join(self.c.cloud_dir, "admin.crt"),
                                os.path.join(self.c.cloud_dir, "admin.key"))
        data = body if isinstance(body, bytes) else body.encode()
        req = urllib.request.Request("https://127.0.0.1:%d%s" % (self.c.kubeapi, path),
                                     data=data, method=method,
                                     headers={"Content-Type": ctype})
        try:
            with urllib.request.urlopen(req, context=ctx, timeout=30) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def test_bad_input(self):
        ns = "bad"
        self.api.create_namespace({"apiVersion": "v1", "kind": "Namespace",
                                   "metadata": {"name": ns}})
        self.api.create_namespaced_config_map(ns, cm("keep"))
        path = "/api/v1/namespaces/%s/configmaps" % ns
        good = json.dumps(cm("new"))
        cases = [
            ("malformed JSON", "POST", path, '{"apiVersion": "v1", "kind": ', None, 400,
             "BadRequest", "not valid JSON"),
            ("a YAML body", "POST", path, "apiVersion: v1\nkind: ConfigMap\n", "application/yaml",
             415, "UnsupportedMediaType", "application/json"),
            ("wrong apiVersion", "POST", path, good.replace('"v1"', '"v2"'), None, 400,
             "BadRequest", "does not match the expected API version"),
            ("wrong kind", "POST", path, good.replace("ConfigMap", "Secret"), None, 400,
             "BadRequest", "cannot be handled as a ConfigMap"),
            ("invalid name", "POST", path, json.dumps(cm("Not_Valid")), None, 422, "Invalid",
             "metadata.name"),
            ("oversized", "POST", path, json.dumps(cm("huge", data={"a": "x" * (4 << 20)})),
             None, 413, "RequestEntityTooLarge", "larger than"),
            ("unknown field, strict", "POST", path + "?fieldValidation=Strict",
             json.dumps(dict(cm("strict"), spec={"x": 1})), None, 400, "BadRequest",
             'unknown field "spec"'),
            ("namespace mismatch", "POST", path,
             json.dumps(dict(cm("m"), metadata={"name": "m", "namespace": "other"})), None, 400,
             "BadRequest", "does not match the namespace"),
            ("bad fieldValidation", "POST", path + "?fieldValidation=Loud", good, None, 400,
             "BadRequest", "fieldValidation"),
            ("bad limit", "GET", path + "?limit=many", "", None, 400, "BadRequest", "limit"),
            ("bad label selector", "GET", path + "?labelSelector=a%20in%20(", "", None, 400,
             "BadRequest", "label_selector"),
            ("server-side apply", "PATCH", path + "/keep?fieldManager=x", "{}",
             "application/apply-patch+yaml", 415, "UnsupportedMediaType", "server-side apply"),
            ("JSON patch test fails", "PATCH", path + "/keep",
             '[{"op": "test", "path": "/data/k", "value": "other"}]',
             "application/json-patch+json", 422, "Invalid", "test"),
            ("patch renames", "PATCH", path + "/keep", '{"metadata": {"name": "renamed"}}',
             "application/merge-patch+json", 422, "Invalid", "name"),
            ("unknown resource", "GET", "/api/v1/namespaces/bad/widgets", "", None, 404,
             "NotFound", "could not find"),
        ]
        before = self.revision()
        for what, method, p, body, ctype, code, reason, text in cases:
            with self.subTest(what):
                got, st = self.raw(method, p, body or "", ctype or "application/json")
                self.assertEqual(got, code, st)
                self.assertEqual((st.get("kind"), st.get("status"), st.get("reason"),
                                  st.get("code")), ("Status", "Failure", reason, code))
                self.assertIn(text, st["message"])
        self.assertEqual(self.revision(), before, "bad input changed the store")
        self.assertEqual(self.api.read_namespaced_config_map("keep", ns).data, {"k": "v"})
        # no client certificate: 401, except /version
        ctx = ssl.create_default_context(cafile=os.path.join(self.c.cloud_dir, "ca.crt"))
        try:
            urllib.request.urlopen("https://127.0.0.1:%d%s" % (self.c.kubeapi, path),
                                   context=ctx, timeout=10)
            self.fail("an anonymous list was answered")
        except urllib.error.HTTPError as e:
            self.assertEqual(e.code, 401)
            self.assertEqual(json.loads(e.read())["reason"], "Unauthorized")
        with urllib.request.urlopen("https://127.0.0.1:%d/version" % self.c.kubeapi,
                                    context=ctx, timeout=10) as r:
            self.assertEqual(json.loads(r.read())["major"], "1")


if __name__ == "__main__":
    unittest.main(verbosity=2)
