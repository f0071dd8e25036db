#!/usr/bin/python3
"""The Kubernetes manifests in deploy/kubernetes, checked offline.

- Schema: every document of every YAML file under deploy/kubernetes
  (kustomization.yaml aside) deserializes into python3-kubernetes' typed
  model for its kind (V1StatefulSet, V1Service, ...), and the model's
  serialization equals the document: a misspelled or unknown field, which
  the model drops, fails with its path.
- Configuration: each ConfigMap's cloudcore.yaml uses only keys its program
  knows (cloudcore --help, cloudhub --help, edgecontroller --help), every
  key for cloudcore's; paths under the Secret (/etc/kubeedge/tls) name keys
  keadm init --kubernetes writes, the others are under the volume
  (/var/lib/kubeedge). Then each program really starts with its ConfigMap's
  file and the Secret's files as the kubelet would lay them out (paths
  moved to a temp dir, ports to loopback): /healthz answers 200, and the
  split edgecontroller subscribes to cloudhub through hub.server.
- The pod templates mount what the configuration names, run as 65532 with a
  read-only root filesystem and no capabilities, and probe /healthz.
- kubectl kustomize (the real kubectl, offline) renders deploy/kubernetes
  and deploy/kubernetes/split with the expected kinds.
"""
import base64
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.request

try:
    import yaml
    import kubernetes.client
except ImportError as e:  # python3-yaml, python3-kubernetes
    print("skipped: %s" % e)
    sys.exit(77)

SRC = os.environ.get("KE_SOURCE_DIR") or os.path.abspath(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
BIN = os.environ.get("KE_BIN_DIR", os.path.join(SRC, "build"))
DEPLOY = os.path.join(SRC, "deploy", "kubernetes")
KUBECTL = "/usr/lib/google-cloud-sdk/bin/kubectl.1.33"
KEADM = os.environ.get("KE_KEADM") or os.path.join(BIN, "tools", "keadm")
# ConfigMap name -> the program that reads it
PROGRAMS = {
    "cloudcore": os.path.join(BIN, "services", "cloudcore", "cloudcore"),
    "cloudhub": os.path.join(BIN, "services", "cloudcore", "cloudhub"),
    "edgecontroller": os.path.join(BIN, "services", "cloudcore", "edgecontroller"),
}
TLS_DIR = "/etc/kubeedge/tls"
DATA_DIR = "/var/lib/kubeedge"
CONFIG_FILE = "/etc/kubeedge/config/cloudcore.yaml"


def manifest_files():
    files = sorted(glob.glob(os.path.join(DEPLOY, "**", "*.yaml"), recursive=True))
    return [f for f in files if os.path.basename(f) != "kustomization.yaml"]


def documents():
    """(file, index, doc) of every non-empty document."""
    for f in manifest_files():
        with open(f) as fh:
            for i, doc in enumerate(yaml.safe_load_all(fh)):
                if doc is not None:
                    yield os.path.relpath(f, SRC), i, doc


def model_class(doc):
    version = doc["apiVersion"].split("/")[-1]  # apps/v1 -> v1
    name = version[0].upper() + version[1:] + doc["kind"]
    return name, getattr(kubernetes.client, name, None)


class FakeResponse:
    def __init__(self, doc):
        self.data = json.dumps(doc)


def diff(want, got, path, out):
    """Paths where got (the model's round trip) differs from want."""
    if isinstance(want, dict) and isinstance(got, dict):
        for k in want:
            if k not in got:
                out.append("%s.%s: dropped by the model (unknown or misspelled field)" % (path, k))
            else:
                diff(want[k], got[k], "%s.%s" % (path, k), out)
        for k in got:
            if k not in want:
                out.append("%s.%s: added by the model" % (path, k))
    elif isinstance(want, list) and isinstance(got, list):
        if len(want) != len(got):
            out.append("%s: %d items, the model has %d" % (path, len(want), len(got)))
        for i, (w, g) in enumerate(zip(want, got)):
            diff(w, g, "%s[%d]" % (path, i), out)
    elif want != got or type(want) is not type(got):
        out.append("%s: %r, the model has %r" % (path, want, got))


def flatten(d, prefix=""):
    keys = {}
    for k, v in d.items():
        name = prefix + str(k)
        if isinstance(v, dict):
            keys.update(flatten(v, name + "."))
        else:
            keys[name] = v
    return keys


def help_keys(program):
    out = subprocess.run([program, "--help"], capture_output=True, text=True, check=True).stdout
    keys = set(re.findall(r"^  --([a-z_.]+)=", out, re.M))
    keys.discard("config")
    return keys


def config_maps():
    """{ConfigMap name: its cloudcore.yaml text}."""
    found = {}
    for _, _, doc in documents():
        if doc["kind"] == "ConfigMap":
            found[doc["metadata"]["name"]] = doc["data"]["cloudcore.yaml"]
    return found


def stateful_sets():
    return [(f, doc) for f, _, doc in documents() if doc["kind"] == "StatefulSet"]


class Manifests(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="ke-manifests-")
        # The Secret keadm init --kubernetes writes, laid out as the kubelet
        # mounts it.
        cls.pki = os.path.join(cls.tmp, "pki")
        subprocess.run([KEADM, "init", "--dir", cls.pki, "--kubernetes", "--encrypt-secrets"],
                       check=True, capture_output=True)
        with open(os.path.join(cls.pki, "cloudcore-secret.yaml")) as f:
            cls.secret = yaml.safe_load(f)
        cls.tls = os.path.join(cls.tmp, "tls")
        os.mkdir(cls.tls)
        for k, v in cls.secret["data"].items():
            p = os.path.join(cls.tls, k)
            with open(p, "wb") as f:
                f.write(base64.b64decode(v))
            os.chmod(p, 0o440)  # the volume's defaultMode

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def test_files_exist(self):
        names = {os.path.relpath(f, DEPLOY) for f in manifest_files()}
        self.assertIn("cloudcore.yaml", names)
        self.assertIn("split/cloudhub.yaml", names)
        self.assertIn("split/edgecontroller.yaml", names)

    def test_every_document_round_trips_through_the_typed_model(self):
        api = kubernetes.client.ApiClient()
        n = 0
        for f, i, doc in documents():
            with self.subTest(file=f, doc=i, kind=doc.get("kind")):
                name, cls = model_class(doc)
                self.assertIsNotNone(cls, "%s: no model %s in python3-kubernetes" % (f, name))
                model = api.deserialize(FakeResponse(doc), name)
                self.assertIsInstance(model, cls)
                got = api.sanitize_for_serialization(model)
                problems = []
                diff(doc, got, "%s#%d(%s %s)" % (f, i, doc["kind"], doc["metadata"]["name"]),
                     problems)
                self.assertEqual(problems, [], "\n".join(problems))
                n += 1
        self.assertGreaterEqual(n, 12)

    def test_the_secret_keadm_writes_round_trips_too(self):
        api = kubernetes.client.ApiClient()
        got = api.sanitize_for_serialization(api.deserialize(FakeResponse(self.secret),
                                                             "V1Secret"))
        problems = []
        diff(self.secret, got, "cloudcore-secret.yaml", problems)
        self.assertEqual(problems, [], "\n".join(problems))
        self.assertEqual(self.secret["metadata"]["name"], "cloudcore-tls")
        self.assertEqual(self.secret["metadata"]["namespace"], "kubeedge")

    def test_config_keys_are_the_programs_keys(self):
        maps = config_maps()
        self.assertEqual(set(maps), set(PROGRAMS))
        for name, text in maps.items():
            with self.subTest(configmap=name):
                cfg = flatten(yaml.safe_load(text))
                known = help_keys(PROGRAMS[name])
                self.assertEqual(sorted(set(cfg) - known), [], "keys %s does not know" % name)
                if name == "cloudcore":  # the complete configuration
                    self.assertEqual(sorted(known - set(cfg)), [], "keys missing")
                self.assertEqual(cfg["grpc.tls.client_auth"], "request")
                self.assertEqual(cfg["http.listen"], "0.0.0.0:10550")
                secret_keys = set(self.secret["data"])
                for k, v in cfg.items():
                    if not isinstance(v, str) or not v.startswith("/"):
                        continue
                    if v.startswith(TLS_DIR + "/"):
                        self.assertIn(v[len(TLS_DIR) + 1:], secret_keys, "%s: %s" % (k, v))
                    else:
                        self.assertTrue(v.startswith(DATA_DIR + "/"), "%s: %s" % (k, v))

    def test_pod_templates(self):
        sets = stateful_sets()
        self.assertEqual(sorted(d["metadata"]["name"] for _, d in sets),
                         ["cloudcore", "cloudhub", "edgecontroller"])
        for f, d in sets:
            with self.subTest(file=f, name=d["metadata"]["name"]):
                spec = d["spec"]
                self.assertEqual(spec["replicas"], 1)
                pod = spec["template"]["spec"]
                psc = pod["securityContext"]
                self.assertTrue(psc["runAsNonRoot"])
                for k in ("runAsUser", "runAsGroup", "fsGroup"):
                    self.assertEqual(psc[k], 65532)
                self.assertEqual(psc["seccompProfile"]["type"], "RuntimeDefault")
                self.assertGreater(pod["terminationGracePeriodSeconds"], 10)  # shutdown.timeout
                (c,) = pod["containers"]
                sc = c["securityContext"]
                self.assertTrue(sc["readOnlyRootFilesystem"])
                self.assertFalse(sc["allowPrivilegeEscalation"])
                self.assertEqual(sc["capabilities"]["drop"], ["ALL"])
                self.assertEqual(c["image"], "localhost/kubeedge-c/%s:0.1.0" % d["metadata"]["name"])
                self.assertEqual(c["args"], ["--config", CONFIG_FILE])
                for probe in ("readinessProbe", "livenessProbe"):
                    self.assertEqual(c[probe]["httpGet"], {"path": "/healthz", "port": "http"})
                ports = {p["name"]: p["containerPort"] for p in c["ports"]}
                self.assertEqual(ports["http"], 10550)
                for k in ("requests", "limits"):
                    self.assertEqual(set(c["resources"][k]), {"cpu", "memory"})
                mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
                vols = {v["name"]: v for v in pod["volumes"]}
                self.assertEqual(vols[mounts[TLS_DIR]]["secret"]["secretName"], "cloudcore-tls")
                self.assertEqual(vols[mounts["/etc/kubeedge/config"]]["configMap"]["name"],
                                 d["metadata"]["name"])
                self.assertIn("emptyDir", vols[mounts["/tmp"]])
                (claim,) = spec["volumeClaimTemplates"]
                self.assertEqual(mounts[DATA_DIR], claim["metadata"]["name"])
                self.assertEqual(claim["spec"]["accessModes"], ["ReadWriteOnce"])
                self.assertEqual(claim["spec"]["resources"]["requests"]["storage"], "1Gi")

    # ---- the configurations, run ----

    def start(self, name, listen_ports=True, replace=()):
        """Starts PROGRAMS[name] with its ConfigMap's file, moved to the
        temp dir; returns (process, {port name: port}, log path)."""
        text = config_maps()[name]
        data = os.path.join(self.tmp, "data-" + name)
        os.makedirs(data, exist_ok=True)
        text = text.replace(TLS_DIR, self.tls).replace(DATA_DIR, data)
        for addr in ("0.0.0.0:10000", "0.0.0.0:6443", "0.0.0.0:10550"):
            text = text.replace(addr, "127.0.0.1:0")
        for a, b in replace:
            text = text.replace(a, b)
        path = os.path.join(self.tmp, name + ".yaml")
        with open(path, "w") as f:
            f.write(text)
        log = os.path.join(self.tmp, name + ".log")
        with open(log, "w") as err:
            p = subprocess.Popen([PROGRAMS[name], "--config", path], stdout=subprocess.PIPE,
                                 stderr=err, text=True)
        self.addCleanup(p.stdout.close)
        self.addCleanup(self.stop, p)
        line = p.stdout.readline()
        m = re.match(r"ready (.*)", line)
        if not m:
            p.wait(timeout=15)
            with open(log) as f:
                self.fail("%s did not start (%r): %s" % (name, line, f.read()))
        return p, {k: int(v) for k, v in (kv.split("=") for kv in m.group(1).split())}, log

    @staticmethod
    def stop(p):
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def healthz(self, port):
        deadline = time.time() + 10
        while True:
            try:
                with urllib.request.urlopen("http://127.0.0.1:%d/healthz" % port, timeout=2) as r:
                    return r.status
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.2)

    def wait_log(self, log, text, timeout=20):
        deadline = time.time() + timeout
        while time.time() < deadline:
            with open(log) as f:
                if text in f.read():
                    return
            time.sleep(0.2)
        with open(log) as f:
            self.fail("no %r in %s:\n%s" % (text, log, f.read()))

    def test_cloudcore_runs_with_its_configmap_and_the_secret(self):
        p, ports, log = self.start(
            "cloudcore",
            replace=[("# encryption_key_file: " + TLS_DIR + "/encryption.keys\n", ""),
                     ('encryption_key_file: ""', "encryption_key_file: %s/encryption.keys"
                      % self.tls)])
        self.assertIn("kubeapi", ports)
        self.assertEqual(self.healthz(ports["http"]), 200)
        self.stop(p)
        self.assertEqual(p.returncode, 0)
        with open(log) as f:
            text = f.read()
        self.assertIn("cloudhub=on controllers=on", text)
        self.assertIn("encryption at rest on", text)

    def test_split_runs_with_their_configmaps_and_the_secret(self):
        _, hub, hub_log = self.start("cloudhub")
        self.assertNotIn("kubeapi", hub)
        self.assertEqual(self.healthz(hub["http"]), 200)
        # hub.server is the Service name; here the same certificate name's
        # stand-in on loopback (127.0.0.1 and localhost are in it too).
        _, ec, ec_log = self.start(
            "edgecontroller",
            replace=[("cloudhub.kubeedge.svc:10000", "localhost:%d" % hub["grpc"])])
        self.assertIn("kubeapi", ec)
        self.assertEqual(self.healthz(ec["http"]), 200)
        self.wait_log(hub_log, "consumer subscribed consumer=edgecontroller")

    # ---- kustomize ----

    def kustomize(self, d):
        if not os.access(KUBECTL, os.X_OK):
            self.skipTest("no " + KUBECTL)
        r = subprocess.run([KUBECTL, "kustomize", d], capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        return [x for x in yaml.safe_load_all(r.stdout) if x]

    def test_kustomize_renders_the_one_process_variant(self):
        docs = self.kustomize(DEPLOY)
        self.assertEqual(sorted(d["kind"] for d in docs),
                         ["ConfigMap", "Namespace", "Service", "Service", "Service",
                          "StatefulSet"])
        svc = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}
        edge = svc["cloudcore-edge"]["spec"]
        self.assertEqual(edge["type"], "NodePort")
        self.assertEqual({p["port"]: p["nodePort"] for p in edge["ports"]},
                         {10000: 30000, 6443: 30443})
        self.assertEqual(svc["cloudcore-pods"]["spec"]["clusterIP"], "None")
        self.assertTrue(all(d["metadata"].get("namespace") == "kubeedge"
                            for d in docs if d["kind"] != "Namespace"))

    def test_kustomize_renders_the_split_variant(self):
        docs = self.kustomize(os.path.join(DEPLOY, "split"))
        self.assertEqual(sorted(d["kind"] for d in docs),
                         ["ConfigMap", "ConfigMap", "Namespace"] + ["Service"] * 6 +
                         ["StatefulSet", "StatefulSet"])
        svc = {d["metadata"]["name"]: d["spec"] for d in docs if d["kind"] == "Service"}
        self.assertEqual([(p["port"], p["nodePort"]) for p in svc["cloudhub-edge"]["ports"]],
                         [(10000, 30000)])
        self.assertEqual([(p["port"], p["nodePort"])
                          for p in svc["edgecontroller-edge"]["ports"]], [(6443, 30443)])


if __name__ == "__main__":
    unittest.main(verbosity=2)
