#!/usr/bin/python3
"""MetaServer: edgecore's read-only Kubernetes API, read by python3-kubernetes.

A cluster on loopback, started here: keadm init, cloudcore, keadm join,
edgecore with MetaServer on (Edged, EventBus and DeviceTwin off: no
container runtime or broker is needed, MetaManager stores the pods all the
same). A ConfigMap and a pod bound to the edge that references it are
applied with kectl; once MetaServer lists the pod, cloudcore is SIGKILLed
and, with the cloud down, kubernetes.client.CoreV1Api lists pods (all
namespaces and namespaced, with selectors) and reads the ConfigMap from
edgecore. A watch opened while the cloud is down, from the list's
resourceVersion, stays open while cloudcore is started again and sees the
pod's change applied through the restarted cloud (the only change that
reaches the edge store offline-then-online: with Edged off nothing writes
the store locally; pod status goes to the outbox, not the store). Then:
writes are refused 405 with a Status, a watch from before the collected
tombstones gets 410 Expired, bad queries 400, unknown paths 404, and a
non-loopback listen address stops edgecore at start.
"""
import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.error
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
from kecluster import free_port, wait_for  # noqa: E402

BIN = os.environ.get("KE_BIN_DIR")
NODE = "edge-1"

POD = """
apiVersion: v1
kind: Pod
metadata:
  name: web
  namespace: default
  labels: {app: web, tier: %s}
spec:
  nodeName: edge-1
  containers:
  - name: c
    image: busybox
    envFrom:
    - configMapRef: {name: app-config}
    volumeMounts:
    - {name: cfg, mountPath: /etc/app}
  volumes:
  - name: cfg
    configMap: {name: app-config}
"""

CONFIGMAP = """
apiVersion: v1
kind: ConfigMap
metadata: {name: app-config, namespace: default}
data: {greeting: hello, mode: edge}
"""

SCRATCH = """
apiVersion: v1
kind: Pod
metadata: {name: scratch, namespace: default, labels: {app: scratch}}
spec:
  nodeName: edge-1
  containers:
  - {name: c, image: busybox}
"""


class MetaServer(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.procs = []
        cls.killed = []
        cls.logs = []
        try:
            cls.start()
        except BaseException:
            cls.stop(check=False)
            raise

    @classmethod
    def start(cls):
        if not BIN:
            raise unittest.SkipTest("KE_BIN_DIR not set: run through ctest")
        try:
            import kubernetes  # noqa: F401
        except ImportError:
            raise unittest.SkipTest("python3-kubernetes is not installed")
        cls.tmp = tempfile.mkdtemp(prefix="ke-metaserver-")
        keadm = os.path.join(BIN, "tools", "keadm")
        cls.cloud_dir = os.path.join(cls.tmp, "cloud")
        edge = os.path.join(cls.tmp, NODE)
        subprocess.run([keadm, "init", "--dir", cls.cloud_dir], check=True,
                       stdout=subprocess.DEVNULL)
        # a fixed port: cloudcore is started again on it, the edge's
        # edgehub.server names it
        cls.grpc_port = free_port()
        cls.start_cloud()
        token = subprocess.run([keadm, "gettoken", "--dir", cls.cloud_dir], check=True,
                               capture_output=True, text=True).stdout.strip()
        subprocess.run([keadm, "join", "--cloudhub", "127.0.0.1:%d" % cls.grpc_port, "--token",
                        token, "--node-name", NODE, "--dir", edge], check=True,
                       stdout=subprocess.DEVNULL)
        cls.edge_config = os.path.join(edge, "edgecore.yaml")
        cls.ms_port = free_port()
        cls.logs.append(open(os.path.join(cls.tmp, "edgecore.log"), "w"))
        cls.edge = subprocess.Popen(
            cls.edgecore_argv("127.0.0.1:%d" % cls.ms_port),
            stdout=subprocess.PIPE, stderr=cls.logs[-1], text=True)
        cls.procs.append(cls.edge)
        ready = cls.edge.stdout.readline()
        assert ready.startswith("ready "), ready
        cls.edge_http = int(dict(kv.split("=") for kv in ready.split()[1:])["http"])
        cls.base = "http://127.0.0.1:%d" % cls.ms_port
        cls.kectl = [os.path.join(BIN, "tools", "kectl"), "--server",
                     "127.0.0.1:%d" % cls.grpc_port, "--ca",
                     os.path.join(cls.cloud_dir, "ca.crt"), "--cert",
                     os.path.join(cls.cloud_dir, "admin.crt"), "--key",
                     os.path.join(cls.cloud_dir, "admin.key")]
        wait_for(lambda: re.search(r"edge-1\s+Ready", cls.run_kectl("get", "nodes").stdout),
                 "edge-1 Ready")
        cls.apply_file("configmap.yaml", CONFIGMAP)
        cls.apply_file("pod.yaml", POD % "v1")
        cls.apply_file("scratch.yaml", SCRATCH)
        # the edge has them when its MetaServer lists them
        wait_for(lambda: cls.names("/api/v1/namespaces/default/pods") >= {"web", "scratch"},
                 "the pods at the edge")
        wait_for(lambda: "app-config" in cls.names("/api/v1/namespaces/default/configmaps"),
                 "the ConfigMap at the edge")
        # a tombstone at the edge: collected after the next resync (the
        # cloud's restart below), which makes older versions unreplayable
        r = cls.run_kectl("delete", "pod", "scratch", "--force")
        assert r.returncode == 0, r.stderr
        wait_for(lambda: "scratch" not in cls.names("/api/v1/namespaces/default/pods"),
                 "scratch deleted at the edge")

    @classmethod
    def edgecore_argv(cls, listen):
        return [os.path.join(BIN, "edge-agent", "edgecore"), "--config", cls.edge_config,
                "--http.listen=127.0.0.1:0", "--modules.edged.enable=false",
                "--modules.eventbus.enable=false", "--modules.devicetwin.enable=false",
                "--modules.metaserver.enable=true", "--modules.metaserver.listen=" + listen]

    @classmethod
    def start_cloud(cls):
        cls.logs.append(open(os.path.join(cls.tmp, "cloudcore.log"), "a"))
        cls.cloud = subprocess.Popen(
            [os.path.join(BIN, "services", "cloudcore", "cloudcore"), "--config",
             os.path.join(cls.cloud_dir, "cloudcore.yaml"),
             "--grpc.listen=127.0.0.1:%d" % cls.grpc_port, "--http.listen=127.0.0.1:0"],
            stdout=subprocess.PIPE, stderr=cls.logs[-1], text=True)
        cls.procs.append(cls.cloud)
        line = cls.cloud.stdout.readline()
        assert line.startswith("ready "), line

    @classmethod
    def run_kectl(cls, *args):
        return subprocess.run(cls.kectl + list(args), capture_output=True, text=True)

    @classmethod
    def apply_file(cls, name, text):
        path = os.path.join(cls.tmp, name)
        with open(path, "w") as f:
            f.write(text)
        r = cls.run_kectl("apply", "-f", path)
        assert r.returncode == 0, r.stderr

    @classmethod
    def http(cls, path, method="GET", body=None, headers=None):
        """(status, JSON body) of a request to MetaServer."""
        req = urllib.request.Request(cls.base + path, method=method, data=body,
                                     headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    @classmethod
    def names(cls, path):
        code, body = cls.http(path)
        return {i["metadata"]["name"] for i in body.get("items", [])} if code == 200 else set()

    @classmethod
    def tearDownClass(cls):
        cls.stop(check=True)

    @classmethod
    def stop(cls, check):
        for p in reversed(cls.procs):
            if p.poll() is None:
                p.terminate()
        codes = [p.wait(timeout=15) for p in cls.procs]
        if getattr(cls, "open_watch", None):
            cls.open_watch.close()
        for p in cls.procs:
            if p.stdout:
                p.stdout.close()
        for f in cls.logs:
            f.close()
        if getattr(cls, "tmp", None) and not os.environ.get("KE_KEEP_TMP"):
            shutil.rmtree(cls.tmp)
        if check:
            # what the test SIGKILLed (the first cloudcore) says so
            want = [-signal.SIGKILL if p in cls.killed else 0 for p in cls.procs]
            assert codes == want, (codes, want)

    def api(self):
        from kubernetes import client
        cfg = client.Configuration()
        cfg.host = self.base
        return client.CoreV1Api(client.ApiClient(cfg))

    def test_1_online_rest(self):
        # discovery
        code, v = self.http("/version")
        self.assertEqual(code, 200)
        self.assertIn("gitVersion", v)
        code, a = self.http("/api")
        self.assertEqual((code, a["kind"], a["versions"]), (200, "APIVersions", ["v1"]))
        code, r = self.http("/api/v1")
        self.assertEqual((code, r["kind"], r["groupVersion"]), (200, "APIResourceList", "v1"))
        self.assertEqual({x["name"] for x in r["resources"]},
                         {"pods", "configmaps", "secrets", "services"})
        self.assertEqual(sorted([x for x in r["resources"] if x["name"] == "pods"][0]["verbs"]),
                         ["get", "list", "watch"])
        code, g = self.http("/apis")
        self.assertEqual(g["groups"][0]["name"], "devices.kubeedge.io")
        code, r = self.http("/apis/devices.kubeedge.io/v1beta1")
        self.assertEqual([x["name"] for x in r["resources"]], ["devices"])
        code, d = self.http("/apis/devices.kubeedge.io/v1beta1/devices")
        self.assertEqual((code, d["kind"]), (200, "DeviceList"))
        # a list: this node's objects, a resourceVersion of the store's
        code, l = self.http("/api/v1/pods")
        self.assertEqual((code, l["kind"], l["apiVersion"]), (200, "PodList", "v1"))
        self.assertTrue(int(l["metadata"]["resourceVersion"]) > 0)
        self.assertEqual([p["metadata"]["name"] for p in l["items"]], ["web"])
        # selectors
        self.assertEqual(self.names("/api/v1/pods?labelSelector=app%3Dweb"), {"web"})
        self.assertEqual(self.names("/api/v1/pods?labelSelector=app%3Dother"), set())
        self.assertEqual(self.names("/api/v1/pods?fieldSelector=spec.nodeName%3Dedge-1"),
                         {"web"})
        self.assertEqual(self.names("/api/v1/pods?fieldSelector=metadata.name%3Dnope"), set())
        self.assertEqual(self.names("/api/v1/namespaces/other/pods"), set())
        # kubectl's Table
        code, t = self.http("/api/v1/namespaces/default/pods",
                            headers={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"})
        self.assertEqual((code, t["kind"]), (200, "Table"))
        self.assertEqual(t["rows"][0]["cells"][0], "web")
        # errors, each a Status
        for method in ("POST", "PUT", "PATCH", "DELETE"):
            code, s = self.http("/api/v1/namespaces/default/pods/web", method=method,
                                body=b"{}" if method != "DELETE" else None,
                                headers={"Content-Type": "application/json"})
            self.assertEqual((code, s["kind"], s["reason"]), (405, "Status", "MethodNotAllowed"))
            self.assertEqual(s["message"], "metaserver is read-only: write through the cloud")
        code, s = self.http("/api/v1/pods?limit=abc")
        self.assertEqual((code, s["kind"], s["reason"]), (400, "Status", "BadRequest"))
        code, s = self.http("/api/v1/pods?labelSelector=a%20in%20(")
        self.assertEqual((code, s["reason"]), (400, "BadRequest"))
        code, s = self.http("/api/v1/nosuch")
        self.assertEqual((code, s["kind"], s["reason"]), (404, "Status", "NotFound"))
        code, s = self.http("/api/v1/nodes")
        self.assertEqual((code, s["reason"]), (404, "NotFound"))
        code, s = self.http("/api/v1/namespaces/default/pods/absent")
        self.assertEqual((code, s["reason"]), (404, "NotFound"))

    def test_2_offline_list_get_watch(self):
        from kubernetes import watch
        from kubernetes.client.rest import ApiException
        api = self.api()
        # the cloud goes away
        os.kill(self.cloud.pid, signal.SIGKILL)
        self.killed.append(self.cloud)
        self.assertEqual(self.cloud.wait(timeout=15), -signal.SIGKILL)
        pods = api.list_pod_for_all_namespaces()
        self.assertEqual([p.metadata.name for p in pods.items], ["web"])
        self.assertEqual(pods.items[0].spec.node_name, NODE)
        ns_pods = api.list_namespaced_pod("default", label_selector="app=web")
        self.assertEqual([p.metadata.name for p in ns_pods.items], ["web"])
        cm = api.read_namespaced_config_map("app-config", "default")
        self.assertEqual(cm.data, {"greeting": "hello", "mode": "edge"})
        pod = api.read_namespaced_pod("web", "default")
        self.assertEqual(pod.metadata.labels["tier"], "v1")
        with self.assertRaises(ApiException) as e:
            api.read_namespaced_config_map("absent", "default")
        self.assertEqual(e.exception.status, 404)
        with self.assertRaises(ApiException) as e:
            api.delete_namespaced_pod("web", "default")
        self.assertEqual(e.exception.status, 405)
        self.assertEqual(json.loads(e.exception.body)["kind"], "Status")

        # a watch from the list's version, opened with the cloud down
        rv = ns_pods.metadata.resource_version
        events = queue.Queue()

        def run():
            try:
                w = watch.Watch()
                for ev in w.stream(api.list_namespaced_pod, "default", resource_version=rv,
                                   timeout_seconds=120):
                    events.put(ev)
                    if ev["object"].metadata.labels.get("tier") == "v2":
                        w.stop()
            except Exception as exc:  # reported to the test thread
                events.put(exc)
            events.put(None)

        t = threading.Thread(target=run, daemon=True)
        t.start()
        # the watch is up (MetaServer counts it) before the cloud returns
        def registered():
            if not t.is_alive():
                raise AssertionError("the watch ended: %r" % events.get_nowait())
            return self.watches() == 1

        wait_for(registered, "the watch registered")
        # the cloud returns on the same port; the change goes through it
        self.start_cloud()
        wait_for(lambda: re.search(r"edge-1\s+Ready", self.run_kectl("get", "nodes").stdout),
                 "edge-1 Ready again")
        self.apply_file("pod.yaml", POD % "v2")
        seen = []
        while True:
            ev = events.get(timeout=90)
            if ev is None:
                break
            if isinstance(ev, Exception):
                raise ev
            seen.append((ev["type"], ev["object"].metadata.name,
                         ev["object"].metadata.labels.get("tier")))
        self.assertEqual(seen[-1], ("MODIFIED", "web", "v2"), seen)
        self.assertTrue(all(s[1] == "web" for s in seen), seen)
        t.join(timeout=10)
        # the object's resourceVersion is the watch's: a later list is newer
        pods = api.list_namespaced_pod("default")
        self.assertGreater(int(pods.metadata.resource_version), int(rv))
        self.assertEqual(pods.items[0].metadata.labels["tier"], "v2")

    def watches(self):
        """MetaServer's open watches, from edgecore's /metrics."""
        text = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % self.edge_http,
                                      timeout=5).read().decode()
        m = re.search(r"^ke_metaserver_watches (\d+)", text, re.M)
        return int(m.group(1)) if m else None

    def test_3_expired_watch(self):
        from kubernetes import watch
        from kubernetes.client.rest import ApiException
        api = self.api()

        # the resync after the cloud's restart collects scratch's tombstone:
        # from then on a watch from version 1 cannot be replayed
        def expired():
            try:
                for _ in watch.Watch().stream(api.list_namespaced_pod, "default",
                                              resource_version="1", timeout_seconds=1):
                    pass
            except ApiException as e:
                self.assertEqual(e.status, 410)
                return True
            return False

        wait_for(expired, "410 for a watch from version 1")
        # raw: HTTP 200, then one ERROR event carrying a 410 Expired Status
        with urllib.request.urlopen(self.base + "/api/v1/pods?watch=true&resourceVersion=1",
                                    timeout=10) as r:
            self.assertEqual(r.status, 200)
            lines = r.read().decode().splitlines()
        ev = json.loads(lines[0])
        self.assertEqual((ev["type"], ev["object"]["kind"], ev["object"]["code"],
                          ev["object"]["reason"]), ("ERROR", "Status", 410, "Expired"))
        # a watch from the current version is fine and ends at its timeout
        rv = api.list_namespaced_pod("default").metadata.resource_version
        got = list(watch.Watch().stream(api.list_namespaced_pod, "default",
                                        resource_version=rv, timeout_seconds=1))
        self.assertEqual(got, [])
        # a watch from nothing lists what is there as ADDED first
        got = list(watch.Watch().stream(api.list_namespaced_pod, "default", timeout_seconds=1))
        self.assertEqual([(e["type"], e["object"].metadata.name) for e in got],
                         [("ADDED", "web")])

    def metric(self, name):
        text = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % self.edge_http,
                                      timeout=5).read().decode()
        m = re.search(r"^%s (\d+)" % name, text, re.M)
        return int(m.group(1)) if m else None

    def test_3a_watcher_that_does_not_read_is_closed(self):
        rv = self.http("/api/v1/configmaps")[1]["metadata"]["resourceVersion"]
        closed = self.metric("ke_metaserver_watches_closed_total")
        # a client that sends its watch and never reads (a small receive
        # buffer, so the kernel's buffers fill soon)
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", self.ms_port))
        sock.sendall(("GET /api/v1/namespaces/default/configmaps?watch=true&resourceVersion=%s "
                      "HTTP/1.1\r\nHost: x\r\n\r\n" % rv).encode())
        try:
            wait_for(lambda: self.watches() == 1, "the watch registered")
            # large changes of the ConfigMap (700 KB each) until MetaServer
            # gives up on the watcher: its queue is bounded at 1 MiB
            for i in range(40):
                self.apply_file("big.yaml", CONFIGMAP.replace(
                    "data: {greeting: hello, mode: edge}",
                    "data: {greeting: hello, mode: edge, big: %s%d}" % ("x" * 700000, i)))
                if self.metric("ke_metaserver_watches_closed_total") > closed:
                    break
            wait_for(lambda: self.metric("ke_metaserver_watches_closed_total") > closed,
                     "the non-reading watcher closed")
            wait_for(lambda: self.watches() == 0, "the watch gone")
        finally:
            sock.close()
        # the others are served as before
        api = self.api()
        self.assertEqual(len(api.read_namespaced_config_map("app-config", "default")
                             .data["big"]), 700000 + len(str(i)))
        self.apply_file("configmap.yaml", CONFIGMAP)

    def test_4_delete_seen_by_a_label_watch(self):
        from kubernetes import watch
        api = self.api()
        rv = api.list_namespaced_pod("default").metadata.resource_version
        events = queue.Queue()

        def run():
            try:
                w = watch.Watch()
                for ev in w.stream(api.list_namespaced_pod, "default", label_selector="app=web",
                                   resource_version=rv, timeout_seconds=60):
                    events.put(ev)
                    if ev["type"] == "DELETED":
                        w.stop()
            except Exception as exc:  # reported to the test thread
                events.put(exc)
            events.put(None)

        t = threading.Thread(target=run, daemon=True)
        t.start()
        wait_for(lambda: self.watches() == 1, "the watch registered")
        r = self.run_kectl("delete", "pod", "web", "--force")
        self.assertEqual(r.returncode, 0, r.stderr)
        seen = []
        while True:
            ev = events.get(timeout=60)
            if ev is None:
                break
            if isinstance(ev, Exception):
                raise ev
            seen.append((ev["type"], ev["object"].metadata.name))
        self.assertEqual(seen, [("DELETED", "web")])
        t.join(timeout=10)
        self.assertEqual(self.names("/api/v1/pods"), set())

    def test_6_open_watch_does_not_hold_shutdown(self):
        # left open for tearDownClass: edgecore must still stop at SIGTERM,
        # exit 0, in time (the module's stop wakes every watch)
        sock = socket.socket()
        sock.connect(("127.0.0.1", self.ms_port))
        sock.sendall(b"GET /api/v1/pods?watch=1 HTTP/1.1\r\nHost: x\r\n\r\n")
        type(self).open_watch = sock
        wait_for(lambda: self.watches() == 1, "the watch registered")

    def test_5_non_loopback_refused(self):
        for listen in ("0.0.0.0:%d" % free_port(), "10.1.2.3:10550", "[::]:10550",
                       "example.com:10550"):
            r = subprocess.run(self.edgecore_argv(listen), capture_output=True, text=True,
                               timeout=30)
            self.assertEqual(r.returncode, 2, (listen, r.stderr))
            self.assertIn("modules.metaserver.listen", r.stderr)
        r = subprocess.run(self.edgecore_argv("0.0.0.0:10550"), capture_output=True, text=True,
                           timeout=30)
        self.assertIn("is not a loopback address", r.stderr)


if __name__ == "__main__":
    unittest.main(verbosity=2)
