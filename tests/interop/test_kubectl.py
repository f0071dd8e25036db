#!/usr/bin/python3
"""Interop: the real kubectl against cloudcore's Kubernetes API.

One cluster on loopback (keadm init, cloudcore, keadm join, edgecore for
edge-1), then, for each kubectl on the machine (1.33 and 1.27 from
/usr/lib/google-cloud-sdk/bin, and 1.20 — Debian's kubernetes-client —
when KE_KUBECTL_120 names it or it is unpacked where tools/test.sh puts
it), in a namespace of its own: apply -f of deploy/examples (create, then
a changed file: a strategic merge patch), get in every output kubectl
users rely on, get -w seeing a change, describe, edit through
KUBE_EDITOR, explain, get devices.devices.kubeedge.io, delete; then bad
input, each refused with the status kubectl prints and nothing changed.
Every command's exit status and output are checked.
"""
import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
import kecluster  # noqa: E402

SDK = "/usr/lib/google-cloud-sdk/bin"
EXAMPLES = os.path.join(kecluster.SRC, "deploy", "examples")


def kubectls():
    found = []
    for v in ("1.33", "1.27"):
        p = os.path.join(SDK, "kubectl." + v)
        if os.access(p, os.X_OK):
            found.append((v, p))
    for p in (os.environ.get("KE_KUBECTL_120", ""),
              "/opt/kubernetes-client-1.20/usr/bin/kubectl"):
        if p and os.access(p, os.X_OK):
            found.append(("1.20", p))
            break
    return found


class Kubectl(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.c = kecluster.Cluster().start_cloud().join().start_edge()
        cls.work = tempfile.mkdtemp(prefix="ke-kubectl-", dir=cls.c.tmp)

    @classmethod
    def tearDownClass(cls):
        cls.c.cleanup()

    def kc(self, *args, ok=True, stdin=None, env=None):
        e = dict(os.environ, KUBECONFIG=self.c.kubeconfig, HOME=self.work)
        if env:
            e.update(env)
        p = subprocess.run([self.bin] + list(args), capture_output=True, text=True, input=stdin,
                           env=e, timeout=60)
        if ok is not None:
            self.assertEqual(p.returncode == 0, ok,
                             "kubectl %s %s: status %d\nstdout: %s\nstderr: %s"
                             % (self.version, " ".join(args), p.returncode, p.stdout, p.stderr))
        return p

    def write(self, name, text):
        path = os.path.join(self.work, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def rv(self, kind, name):
        p = self.kc("get", kind, name, "-n", self.ns, "-o", "jsonpath={.metadata.resourceVersion}")
        return p.stdout

    def test_kubectl(self):
        versions = kubectls()
        self.assertTrue(versions, "no kubectl found under " + SDK)
        node_ready = lambda: "Ready" in subprocess.run(
            [versions[0][1], "get", "node", "edge-1", "--no-headers"], capture_output=True,
            text=True, env=dict(os.environ, KUBECONFIG=self.c.kubeconfig, HOME=self.work)).stdout
        kecluster.wait_for(node_ready, "edge-1 Ready")
        print("kubectl versions:", ", ".join(v for v, _ in versions), flush=True)
        for version, path in versions:
            with self.subTest(kubectl=version):
                self.version, self.bin = version, path
                self.ns = "k" + version.replace(".", "")
                self.suite()

    def suite(self):
        ns = self.ns
        legacy = self.version == "1.20"
        # kubectl create's typed commands (protobuf bodies)
        p = self.kc("create", "namespace", ns)
        self.assertIn("namespace/%s created" % ns, p.stdout)
        self.assertIn(ns, self.kc("get", "ns").stdout)
        self.kc("create", "configmap", "made", "-n", ns, "--from-literal=a=1",
                "--from-literal=b=two")
        self.kc("create", "secret", "generic", "made", "-n", ns, "--from-literal=p=s3cret")
        made = json.loads(self.kc("get", "cm", "made", "-n", ns, "-o", "json").stdout)
        self.assertEqual(made["data"], {"a": "1", "b": "two"})
        made = json.loads(self.kc("get", "secret", "made", "-n", ns, "-o", "json").stdout)
        self.assertEqual(made["data"], {"p": "czNjcmV0"})
        self.assertEqual(made["type"], "Opaque")
        p = self.kc("create", "configmap", "made", "-n", ns, "--from-literal=a=1", ok=False)
        self.assertIn('configmaps "made" already exists',
                      p.stderr)
        self.kc("delete", "cm,secret", "made", "-n", ns)

        # apply: create, then a changed file (a strategic merge patch)
        web = os.path.join(EXAMPLES, "web.yaml")
        p = self.kc("apply", "-n", ns, "-f", web)
        for what in ("configmap/web-config created", "secret/web-secret created",
                     "pod/web created"):
            self.assertIn(what, p.stdout)
        with open(web) as f:
            text = f.read()
        changed = text.replace("app: web\n", "app: web\n    tier: front\n", 1).replace(
            "localhost/busybox:1.0", "localhost/busybox:1.1")
        self.assertNotEqual(changed, text)
        p = self.kc("apply", "-n", ns, "-f", self.write("web2.yaml", changed))
        self.assertIn("pod/web configured", p.stdout)
        self.assertIn("configmap/web-config unchanged", p.stdout)
        pod = json.loads(self.kc("get", "pod", "web", "-n", ns, "-o", "json").stdout)
        self.assertEqual(pod["spec"]["containers"][0]["image"], "localhost/busybox:1.1")
        self.assertEqual(pod["metadata"]["labels"], {"app": "web", "tier": "front"})
        self.assertEqual(pod["spec"]["nodeName"], "edge-1")
        self.assertIn("kubectl.kubernetes.io/last-applied-configuration",
                      pod["metadata"]["annotations"])

        # get: default, -o wide, -o yaml, -o json, -l, --field-selector
        lines = self.kc("get", "pods", "-n", ns).stdout.splitlines()
        self.assertEqual(lines[0].split(), ["NAME", "READY", "STATUS", "RESTARTS", "AGE"])
        self.assertEqual(lines[1].split()[:4], ["web", "0/1", "Pending", "0"])
        lines = self.kc("get", "pods", "-n", ns, "-o", "wide").stdout.splitlines()
        self.assertEqual(lines[0].split()[:7], ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP",
                                                "NODE"])
        self.assertEqual(lines[1].split()[6], "edge-1")
        y = self.kc("get", "pod", "web", "-n", ns, "-o", "yaml").stdout
        self.assertIn("kind: Pod", y)
        self.assertIn("nodeName: edge-1", y)
        self.assertIn("image: localhost/busybox:1.1", y)
        self.assertEqual(self.kc("get", "pods", "-n", ns, "-l", "tier=front", "-o",
                                 "name").stdout.split(), ["pod/web"])
        p = self.kc("get", "pods", "-n", ns, "-l", "tier=back")
        self.assertEqual(p.stdout, "")
        self.assertIn("No resources found in %s namespace." % ns, p.stderr)
        self.assertEqual(self.kc("get", "pods", "-A", "--field-selector",
                                 "spec.nodeName=edge-1,metadata.namespace=" + ns, "-o",
                                 "name").stdout.split(), ["pod/web"])
        self.assertEqual(self.kc("get", "pods", "-n", ns, "--field-selector",
                                 "spec.nodeName=edge-2", "-o", "name").stdout, "")
        self.assertIn("web-config", self.kc("get", "cm", "-n", ns).stdout)
        secrets = self.kc("get", "secrets", "-n", ns).stdout.splitlines()
        self.assertEqual(secrets[0].split(), ["NAME", "TYPE", "DATA", "AGE"])
        self.assertEqual(secrets[1].split()[:3], ["web-secret", "Opaque", "1"])

        # get -w sees a change
        self.watch_sees_change()

        # describe
        d = self.kc("describe", "pod", "web", "-n", ns).stdout
        for want in ("Name:", "web", "Namespace:", ns, "Node:", "edge-1",
                     "localhost/busybox:1.1", "tier=front", "web-config"):
            self.assertIn(want, d)

        # edit through KUBE_EDITOR (a strategic merge patch of what changed)
        before = self.rv("cm", "web-config")
        editor = self.write("editor.sh", "#!/bin/sh\nsed -i 's/GREETING: .*/GREETING: edited/' "
                                         "\"$1\"\n")
        os.chmod(editor, 0o755)
        p = self.kc("edit", "cm", "web-config", "-n", ns, env={"KUBE_EDITOR": editor})
        self.assertIn("configmap/web-config edited", p.stdout)
        cm = json.loads(self.kc("get", "cm", "web-config", "-n", ns, "-o", "json").stdout)
        self.assertEqual(cm["data"], {"GREETING": "edited"})
        self.assertGreater(int(cm["metadata"]["resourceVersion"]), int(before))

        # explain (OpenAPI v3 from 1.27, v2 before)
        e = self.kc("explain", "pod.spec.containers").stdout
        self.assertIn("containers", e)
        self.assertIn("image", e)
        self.assertIn("volumeMounts", e)

        # devices, a CRD group
        p = self.kc("apply", "-n", ns, "-f", os.path.join(EXAMPLES, "thermometer.yaml"))
        self.assertIn("device.devices.kubeedge.io/thermometer-1 created", p.stdout)
        lines = self.kc("get", "devices.devices.kubeedge.io", "-n", ns).stdout.splitlines()
        self.assertEqual(lines[0].split(), ["NAME", "MODEL", "NODE", "STATE", "AGE"])
        self.assertEqual(lines[1].split()[:3], ["thermometer-1", "thermometer", "edge-1"])
        self.assertIn("thermometer", self.kc("get", "devicemodels", "-n", ns).stdout)

        self.bad_input()

        # delete: a ConfigMap goes at once; the pod bound to edge-1 is marked
        # and leaves when the node confirms — forced here, as edgecore runs
        # without Edged
        p = self.kc("delete", "cm", "web-config", "-n", ns)
        self.assertIn('configmap "web-config" deleted', p.stdout)
        p = self.kc("get", "cm", "web-config", "-n", ns, ok=False)
        self.assertIn('Error from server (NotFound): configmaps "web-config" not found', p.stderr)
        p = self.kc("delete", "pod", "web", "-n", ns, "--wait=false")
        self.assertIn('pod "web" deleted', p.stdout)
        self.assertIn("Terminating", self.kc("get", "pod", "web", "-n", ns).stdout)
        p = self.kc("delete", "pod", "web", "-n", ns, "--grace-period=0", "--force")
        self.assertIn('pod "web" force deleted', p.stdout)
        p = self.kc("get", "pod", "web", "-n", ns, ok=False)
        self.assertIn("NotFound", p.stderr)
        p = self.kc("delete", "-n", ns, "-f", os.path.join(EXAMPLES, "thermometer.yaml"))
        self.assertIn('device.devices.kubeedge.io "thermometer-1" deleted', p.stdout)
        self.assertEqual(self.kc("get", "devices", "-n", ns, "-o", "name").stdout, "")

    def watch_sees_change(self):
        ns = self.ns
        e = dict(os.environ, KUBECONFIG=self.c.kubeconfig, HOME=self.work)
        w = subprocess.Popen([self.bin, "get", "pods", "-n", ns, "-w", "--no-headers"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=e)
        lines = queue.Queue()
        threading.Thread(target=lambda: [lines.put(l) for l in w.stdout], daemon=True).start()
        try:
            first = lines.get(timeout=30)
            self.assertTrue(first.startswith("web "), first)
            self.kc("annotate", "pod", "web", "-n", ns, "watched=yes")
            # the change arrives as another row of web
            second = lines.get(timeout=30)
            self.assertTrue(second.startswith("web "), second)
        finally:
            w.terminate()
            w.wait(timeout=10)
        pod = json.loads(self.kc("get", "pod", "web", "-n", ns, "-o", "json").stdout)
        self.assertEqual(pod["metadata"]["annotations"]["watched"], "yes")

    def bad_input(self):
        ns = self.ns
        before = self.kc("get", "pods,cm,secrets", "-n", ns, "-o", "json").stdout

        def refused(text, *want, server=True):
            p = self.kc("apply", "-n", ns, "-f", self.write("bad.yaml", text), ok=False)
            self.assertNotEqual(p.returncode, 0)
            for w in want:
                self.assertIn(w, p.stderr)
            return p

        # malformed YAML and JSON: kubectl refuses them itself
        refused("apiVersion: v1\nkind: ConfigMap\nmetadata: [name: x\n", "error")
        refused('{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"', "error")
        # wrong apiVersion / kind: not in the server's discovery
        refused("apiVersion: v9\nkind: Pod\nmetadata:\n  name: x\n", 'no matches for kind "Pod"')
        refused("apiVersion: v1\nkind: Pdo\nmetadata:\n  name: x\n", 'no matches for kind "Pdo"')
        # an invalid name: 422 Invalid, the field named
        refused("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: Bad_Name\n",
                "is invalid", "metadata.name")
        # a required field missing: 422 Invalid naming it
        refused("apiVersion: v1\nkind: Pod\nmetadata:\n  name: noimage\nspec:\n  containers:\n"
                "  - name: c\n", "is invalid", "spec.containers[0].image")
        # oversized: 413
        big = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: big\ndata:\n  a: " + \
              "x" * (4 * 1024 * 1024) + "\n"
        refused(big, "RequestEntityTooLarge")
        # an unknown field under strict validation
        if self.version != "1.20":
            refused("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: strict\ndata:\n  a: b\n"
                    "dta:\n  c: d\n", 'unknown field "dta"')
            p = self.kc("apply", "-n", ns, "--validate=false", "-f",
                        self.write("warn.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n"
                                                "  name: warned\ndata:\n  a: b\nzzz: 1\n"))
            self.kc("delete", "cm", "warned", "-n", ns)
        after = self.kc("get", "pods,cm,secrets", "-n", ns, "-o", "json").stdout
        self.assertEqual(json.loads(before), json.loads(after), "bad input changed something")


if __name__ == "__main__":
    unittest.main(verbosity=2)
