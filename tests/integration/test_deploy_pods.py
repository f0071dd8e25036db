#!/usr/bin/python3
"""deploy/kubernetes/cloudcore.yaml's pod, run as a real pod through the
project's own Edged and containerd (issue #15, acceptance 1).

- A "host" cluster on loopback: cloudcore (the test's control plane) and
  one edge node, host-1, whose edgecore runs Edged on a private containerd
  (tools/images/containerd.sh) holding the pause image and the cloudcore
  image that tools/image.sh builds from this build directory.
- A second, separate keadm init --kubernetes --external-address 127.0.0.1
  for the cloudcore that runs in the pod. Its Secret (cloudcore-tls, from
  cloudcore-secret.yaml), the ConfigMap cloudcore and the StatefulSet's pod
  template (deploy/kubernetes/cloudcore.yaml) are created on the host
  cluster; the template becomes the Pod cloudcore-0 bound to host-1, with a
  hostPath (a temp dir owned by 65532) in place of the PVC data, and
  everything else as written: the securityContext (non-root 65532,
  fsGroup, read-only root, no capabilities), the probes, the ConfigMap and
  Secret volumes, the emptyDir /tmp.
- The ports are published with hostNetwork: true, so a process on this
  machine reaches them without a CNI portmap; as the machine's network is
  shared, the listen ports in the ConfigMap (and the pod's containerPorts,
  which the probes name) are moved to free ports. Nothing else changes.
- Waits (through the host cluster's API) for the pod to be Running and
  Ready (the readiness probe on /healthz passed); checks in /proc that
  cloudcore runs as uid and gid 65532 with no capabilities on a read-only
  root and writes its store on the hostPath.
- An edge, inner-1, joins the containerized cloudcore through the published
  CloudHub port (keadm gettoken/join, edgecore with Edged off); through the
  inner cloudcore's Kubernetes API (admin.kubeconfig of the second init)
  a ConfigMap is created and inner-1 is seen Ready.
- The container's process is killed (SIGKILL through containerd); Edged
  restarts it (restartPolicy Always); once the pod is Ready again, inner-1
  and the ConfigMap are still there and inner-1's edgecore is connected
  again (ke_cloudhub_nodes_connected 1, node Ready).

The same for the split variant (deploy/kubernetes/split: the pods
cloudhub-0 and edgecontroller-0 from their own keadm init, in namespace
kubeedge-split; edge inner-2 joins cloudhub, the API is edgecontroller's;
both containers are killed at once). Its controllers reach cloudhub by the
Service name cloudhub.kubeedge.svc, which needs cluster DNS: hub.server is
moved to cloudhub's published port on 127.0.0.1.

Edged has no Services, so the pods are reached on host-1's network.

Prints the cold start (container running -> /healthz 200 -> Ready) and the
restart (kill -> Ready); nothing asserts on time.

Exit 77 (skipped) when not root, or containerd, ctr, runc, busybox-static,
kubectl, python3-yaml or umoci is missing (and apt-get cannot install
umoci).
"""
import copy
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

SRC = os.environ.get("KE_SOURCE_DIR") or os.path.abspath(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
BIN = os.environ.get("KE_BIN_DIR", os.path.join(SRC, "build"))
sys.path.insert(0, os.path.join(SRC, "tests", "support"))
KUBECTL = "/usr/lib/google-cloud-sdk/bin/kubectl.1.33"
UID = 65532


def skip(why):
    print("test_deploy_pods: SKIP: %s" % why)
    sys.exit(77)


def say(msg):
    print("test_deploy_pods: %s" % msg, flush=True)


if os.geteuid() != 0:
    skip("needs root (containerd, chown to 65532)")
for tool in ("containerd", "ctr", "runc", "curl"):
    if not shutil.which(tool):
        skip("%s not installed" % tool)
if not os.access("/bin/busybox", os.X_OK):
    skip("busybox-static not installed (the test images)")
if not os.access(KUBECTL, os.X_OK):
    KUBECTL = shutil.which("kubectl") or skip("kubectl not installed")
try:
    import yaml
except ImportError:
    skip("python3-yaml not installed")
if not shutil.which("umoci"):
    subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "umoci"],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
    if not shutil.which("umoci"):
        skip("umoci is not installed and apt-get cannot install it")

import kecluster  # noqa: E402
from kecluster import free_port, wait_for, read_ready  # noqa: E402

KEADM = os.path.join(BIN, "tools", "keadm")
EDGECORE = os.path.join(BIN, "edge-agent", "edgecore")


def run(argv, **kw):
    p = subprocess.run(argv, capture_output=True, text=True, **kw)
    if p.returncode != 0:
        raise AssertionError("%s failed (%d): %s%s" % (" ".join(argv), p.returncode, p.stdout,
                                                       p.stderr))
    return p.stdout


def version():
    with open(os.path.join(SRC, "CMakeLists.txt")) as f:
        m = re.search(r"project\([^)]*VERSION ([0-9][0-9.]*)", f.read())
    assert m, "no project version in CMakeLists.txt"
    return m.group(1)


class Kube:
    """kubectl with one kubeconfig."""

    def __init__(self, kubeconfig):
        self.kubeconfig = kubeconfig

    def __call__(self, *args, stdin=None, check=True):
        p = subprocess.run([KUBECTL, "--kubeconfig", self.kubeconfig, "--request-timeout=10s"]
                           + list(args), input=stdin, capture_output=True, text=True)
        if check and p.returncode != 0:
            raise AssertionError("kubectl %s failed: %s%s" % (" ".join(args), p.stdout, p.stderr))
        return p

    def create(self, doc):
        self("create", "-f", "-", stdin=json.dumps(doc))

    def get(self, *args):
        p = self("get", "-o", "json", *args, check=False)
        return json.loads(p.stdout) if p.returncode == 0 else None


def node_ready(kube, name):
    n = kube.get("node", name)
    if not n:
        return False
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in n.get("status", {}).get("conditions", []))


def pod_state(kube, ns, pod):
    """(phase, ready, restartCount, containerID) of the pod."""
    p = kube.get("pod", "-n", ns, pod)
    if not p:
        return None, False, 0, ""
    st = p.get("status", {})
    ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                for c in st.get("conditions", []))
    cs = (st.get("containerStatuses") or [{}])[0]
    return (st.get("phase"), ready and cs.get("ready", False), cs.get("restartCount", 0),
            cs.get("containerID", "").replace("containerd://", ""))


def healthz(port):
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d/healthz" % port, timeout=1) as r:
            return r.status == 200
    except Exception:
        return False


def edge_has(port, plural, name):
    """Whether edgecore's MetaServer on port answers the object (its store
    holds it): 200, or 404 while it has not arrived."""
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d/api/v1/namespaces/default/%s/%s"
                                    % (port, plural, name), timeout=5) as r:
            return r.status == 200 and json.loads(r.read())["metadata"]["name"] == name
    except urllib.error.HTTPError as e:
        if e.code == 404:
            return False
        raise


def metric(port, name):
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=2) as r:
            for line in r.read().decode().splitlines():
                if line.startswith(name + " ") or line.startswith(name + "{"):
                    return float(line.split()[-1])
    except Exception:
        return None
    return None


def wait_pods_ready(kube, v, since, what, min_restarts=0, seconds=120):
    """Polls the host API and /healthz until every component's pod of
    variant v is Ready with at least min_restarts restarts; returns, for
    each, the times after since its container was seen running, answering
    /healthz 200 and Ready, and its container id."""
    marks = {c: {} for c in v.comps}
    done = {}
    last = {}
    end = time.monotonic() + seconds
    while time.monotonic() < end and len(done) < len(v.comps):
        for c in v.comps:
            if c in done:
                continue
            m = marks[c]
            phase, ready, restarts, cid = pod_state(kube, v.ns, c + "-0")
            last[c] = (phase, ready, restarts, cid)
            if restarts >= min_restarts and phase == "Running" and cid:
                m.setdefault("running", time.monotonic())
                if healthz(v.ports[c]["http"][1]):
                    m.setdefault("healthz", time.monotonic())
                if ready:
                    m.setdefault("healthz", m["running"])
                    m["ready"] = time.monotonic()
                    done[c] = ({k: t - since for k, t in m.items()}, cid)
        if len(done) < len(v.comps):
            time.sleep(0.05)
    if len(done) < len(v.comps):
        raise AssertionError("%s: not Ready: %s (last: phase, ready, restarts, container = %s)"
                             % (what, [c for c in v.comps if c not in done], last))
    return done


def task_pid(sock, cid):
    out = run(["ctr", "-a", sock, "-n", "k8s.io", "tasks", "ls"])
    for line in out.splitlines()[1:]:
        f = line.split()
        if f and f[0] == cid and f[2] == "RUNNING":
            return int(f[1])
    return None


def process_gone(pid):
    """True once pid has exited (no /proc entry, or a zombie). The entry can
    vanish between any two reads of it: that is gone too."""
    if pid is None:  # its task was not running
        return True
    try:
        with open("/proc/%d/stat" % pid) as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return True
    # the state follows the command name, which is in parentheses and may hold spaces
    return stat[stat.rindex(")") + 2:].startswith("Z")


def proc_field(pid, key):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(key + ":"):
                return line.split()[1:]
    return None


class Variant:
    """One deployment of deploy/kubernetes: its components (ConfigMap,
    StatefulSet, container and program share the name), the one whose
    CloudHub the edge joins and the one whose Kubernetes API it reads."""

    def __init__(self, name, ns, files, hub, api, node):
        self.name, self.ns, self.files, self.hub, self.api, self.node = \
            name, ns, files, hub, api, node
        self.comps = [c for _, c in files]
        self.cid = {}
        self.edge = self.edge_log = None


VARIANTS = [
    Variant("single", "kubeedge", [("cloudcore.yaml", "cloudcore")], "cloudcore", "cloudcore",
            "inner-1"),
    Variant("split", "kubeedge-split", [("split/cloudhub.yaml", "cloudhub"),
                                        ("split/edgecontroller.yaml", "edgecontroller")],
            "cloudhub", "edgecontroller", "inner-2"),
]


class Test:
    def __init__(self):
        self.tmp = tempfile.mkdtemp(prefix="ke-deploy-pods-")
        os.chmod(self.tmp, 0o711)
        self.host = None
        self.ctrd = os.path.join(self.tmp, "ctrd")
        self.sock = os.path.join(self.ctrd, "containerd.sock")
        self.ctrd_started = False

    # ---- the host cluster: cloudcore + host-1 with Edged on containerd ----
    def start_host(self):
        ver = version()
        out = os.path.join(self.tmp, "images")
        names = sorted({c for v in VARIANTS for c in v.comps})
        t0 = time.monotonic()
        run([os.path.join(SRC, "tools", "image.sh"), "--build", BIN, "--out", out] + names)
        self.images = {}
        archives = []
        for n in names:
            archives.append(os.path.join(out, "%s-%s.oci.tar" % (n, ver)))
            assert os.path.isfile(archives[-1]), archives[-1]
            self.images[n] = "localhost/kubeedge-c/%s:%s" % (n, ver)
        say("images built: %s (%.1f s)" % (", ".join(names), time.monotonic() - t0))

        self.ctrd_started = True
        run([os.path.join(SRC, "tools", "images", "containerd.sh"), self.ctrd],
            env=dict(os.environ, KE_IMAGE_CACHE=os.path.join(BIN, "test-images")))
        for a in archives:
            run(["ctr", "-a", self.sock, "-n", "k8s.io", "images", "import", a])
        images = run(["ctr", "-a", self.sock, "-n", "k8s.io", "images", "ls", "-q"]).split()
        for i in self.images.values():
            assert i in images, (i, images)
        say("private containerd up; the images and localhost/pause:1.0 imported")

        self.host = kecluster.Cluster(node="host-1", edge_flags=[
            "--modules.edged.enable=true",
            "--edged.runtime_endpoint=%s" % self.sock,
            "--edged.root_dir=%s" % os.path.join(self.tmp, "edged"),
            "--edged.relist_period=300ms",
            "--edged.backoff_initial=1s",
            "--edged.backoff_max=4s",
            "--edgehub.backoff_initial=50ms",
            "--edgehub.backoff_max=500ms"])
        self.host.start_cloud().join().start_edge()
        self.hk = Kube(self.host.kubeconfig)
        wait_for(lambda: node_ready(self.hk, "host-1"), "host-1 Ready on the host cluster")
        say("host cluster: cloudcore and host-1 (Edged on the private containerd) Ready")

    # ---- the pods from deploy/kubernetes ----
    def objects(self, v):
        """The Secret, and each component's ConfigMap and Pod, for v."""
        v.dir = os.path.join(self.tmp, v.name)
        os.mkdir(v.dir)
        docs = {}
        for f, c in v.files:
            with open(os.path.join(SRC, "deploy", "kubernetes", f)) as fh:
                docs[c] = [d for d in yaml.safe_load_all(fh) if d]
        # every container port of every component: a free port
        v.ports = {}
        for c in v.comps:
            sts = next(d for d in docs[c] if d["kind"] == "StatefulSet" and
                       d["metadata"]["name"] == c)
            ctr = sts["spec"]["template"]["spec"]["containers"][0]
            v.ports[c] = {p["name"]: (p["containerPort"], free_port()) for p in ctr["ports"]}
        v.kdir = os.path.join(v.dir, "init")
        run([KEADM, "init", "--kubernetes", "--dir", v.kdir, "--external-address", "127.0.0.1",
             "--kubeapi-server", "127.0.0.1:%d" % v.ports[v.api]["kubeapi"][1]])
        with open(os.path.join(v.kdir, "cloudcore-secret.yaml")) as f:
            secret = [d for d in yaml.safe_load_all(f) if d]
        assert len(secret) == 1 and secret[0]["kind"] == "Secret", secret
        secret = secret[0]
        assert secret["metadata"]["name"] == "cloudcore-tls", secret["metadata"]
        assert secret["metadata"]["namespace"] == "kubeedge", secret["metadata"]
        secret["metadata"]["namespace"] = v.ns
        out = [secret]
        for c in v.comps:
            cm = next(d for d in docs[c] if d["kind"] == "ConfigMap" and d["metadata"]["name"] == c)
            sts = next(d for d in docs[c] if d["kind"] == "StatefulSet")
            for d in (cm, sts):
                assert d["metadata"].get("namespace") == "kubeedge", d["metadata"]
            # the listen ports: free ones, the machine's network is shared
            cm = copy.deepcopy(cm)
            cm["metadata"]["namespace"] = v.ns
            conf = cm["data"]["cloudcore.yaml"]
            for name, (old, new) in v.ports[c].items():
                s = 'listen: "0.0.0.0:%d"' % old
                assert conf.count(s) == 1, "%s %s: %s not once in the ConfigMap" % (c, name, s)
                conf = conf.replace(s, 'listen: "0.0.0.0:%d"' % new)
            # the split controllers reach cloudhub by its Service's name: no
            # cluster DNS here, its published port on loopback instead (the
            # certificate names 127.0.0.1: keadm init --external-address)
            s = 'server: "cloudhub.kubeedge.svc:10000"'
            if s in conf:
                conf = conf.replace(s, 'server: "127.0.0.1:%d"' % v.ports["cloudhub"]["grpc"][1])
            cm["data"]["cloudcore.yaml"] = conf
            out.append(cm)

            tmpl = copy.deepcopy(sts["spec"]["template"])
            spec = tmpl["spec"]
            spec["nodeName"] = "host-1"
            spec["hostNetwork"] = True
            ctr = spec["containers"][0]
            assert ctr["name"] == c, ctr["name"]
            assert ctr["image"] == self.images[c], (ctr["image"], self.images[c])
            for p in ctr["ports"]:
                p["containerPort"] = v.ports[c][p["name"]][1]
            claims = [x["metadata"]["name"] for x in sts["spec"]["volumeClaimTemplates"]]
            assert claims == ["data"], claims
            data = os.path.join(v.dir, c + "-data")
            os.mkdir(data, 0o750)
            os.chown(data, UID, UID)
            spec.setdefault("volumes", []).append(
                {"name": "data", "hostPath": {"path": data, "type": "Directory"}})
            vols = {x["name"] for x in spec["volumes"]}
            for m in ctr["volumeMounts"]:
                assert m["name"] in vols, m
            out.append({"apiVersion": "v1", "kind": "Pod",
                        "metadata": {"name": c + "-0", "namespace": v.ns,
                                     "labels": tmpl["metadata"]["labels"],
                                     "annotations": tmpl["metadata"].get("annotations", {})},
                        "spec": spec})
        return out

    def start_pods(self, v):
        objs = self.objects(v)
        self.hk.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": v.ns}})
        for o in objs:
            if o["kind"] != "Pod":
                self.hk.create(o)
        t0 = time.monotonic()
        for o in objs:
            if o["kind"] == "Pod":
                self.hk.create(o)
        try:
            done = wait_pods_ready(self.hk, v, t0, "first start")
        except AssertionError:
            for c in v.comps:
                p = self.hk.get("pod", "-n", v.ns, c + "-0")
                print(json.dumps(p and p.get("status"), indent=1), file=sys.stderr)
            raise
        for c in v.comps:
            marks, v.cid[c] = done[c]
            say("%s: pod %s/%s-0 Running and Ready on host-1: created -> running %.2f s, "
                "-> /healthz 200 %.2f s, -> Ready %.2f s; cold start (container running -> "
                "/healthz 200) %.2f s" % (v.name, v.ns, c, marks["running"], marks["healthz"],
                                          marks["ready"], marks["healthz"] - marks["running"]))
            self.check_process(v, c)

    def check_process(self, v, c):
        pid = task_pid(self.sock, v.cid[c])
        assert pid, "no running task %s in containerd" % v.cid[c]
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            cmd = f.read().split(b"\0")
        assert cmd[0] == ("/usr/bin/" + c).encode(), cmd
        uids, gids = proc_field(pid, "Uid"), proc_field(pid, "Gid")
        assert uids == [str(UID)] * 4, "%s runs with uids %s" % (c, uids)
        assert gids == [str(UID)] * 4, "%s runs with gids %s" % (c, gids)
        caps = proc_field(pid, "CapEff")
        assert caps == ["0000000000000000"], "%s has capabilities %s" % (c, caps)
        root = None
        with open("/proc/%d/mountinfo" % pid) as f:
            for line in f:
                f_ = line.split()
                if f_[4] == "/":
                    root = f_[5]
        assert root and root.split(",")[0] == "ro", "root mounted %s, not read-only" % root
        db = os.path.join(v.dir, c + "-data", "cloudhub.db" if c == "cloudhub" else "store.db")
        assert os.path.isfile(db), "no %s on the hostPath" % os.path.basename(db)
        assert os.stat(db).st_uid == UID, "%s not written by %d" % (db, UID)
        say("%s: %s (pid %d) runs as %d:%d, no capabilities, read-only root (%s), %s on the "
            "hostPath" % (v.name, c, pid, UID, UID, root, os.path.basename(db)))
        return pid

    # ---- an edge of the containerized cloud ----
    def join_inner(self, v):
        token = run([KEADM, "gettoken", "--dir", v.kdir]).strip()
        edir = os.path.join(v.dir, v.node)
        grpc = v.ports[v.hub]["grpc"][1]
        kubeapi = v.ports[v.api]["kubeapi"][1]
        run([KEADM, "join", "--cloudhub", "127.0.0.1:%d" % grpc, "--token", token,
             "--node-name", v.node, "--dir", edir, "--kubeapi-server", "127.0.0.1:%d" % kubeapi])
        v.edge_log = open(os.path.join(v.dir, "edgecore.log"), "ab")
        v.metaserver = free_port()  # what reached the edge, read from its own store
        v.edge = subprocess.Popen(
            [EDGECORE, "--config", os.path.join(edir, "edgecore.yaml"),
             "--http.listen=127.0.0.1:0", "--modules.edged.enable=false",
             "--modules.eventbus.enable=false", "--modules.metaserver.enable=true",
             "--modules.metaserver.listen=127.0.0.1:%d" % v.metaserver,
             "--edgehub.backoff_initial=50ms", "--edgehub.backoff_max=500ms"],
            stdout=subprocess.PIPE, stderr=v.edge_log, text=True)
        read_ready(v.edge, v.node + "'s edgecore")
        v.kube = Kube(os.path.join(v.kdir, "admin.kubeconfig"))
        wait_for(lambda: node_ready(v.kube, v.node), "%s Ready on the pod's API" % v.node)
        v.kube.create({"apiVersion": "v1", "kind": "ConfigMap",
                       "metadata": {"name": "survivor", "namespace": "default"},
                       "data": {"written": "before the kill"}})
        hub_http = v.ports[v.hub]["http"][1]
        wait_for(lambda: metric(hub_http, "ke_cloudhub_nodes_connected") == 1,
                 "ke_cloudhub_nodes_connected 1")
        say("%s: %s joined the containerized CloudHub through 127.0.0.1:%d and is Ready; "
            "ConfigMap default/survivor created through its API on 127.0.0.1:%d"
            % (v.name, v.node, grpc, kubeapi))
        # a pod applied through the pod's API (edgecontroller's, in the split
        # variant) reaches the edge through the pod's CloudHub, with the
        # ConfigMap it references
        v.kube.create({"apiVersion": "v1", "kind": "Pod",
                       "metadata": {"name": "delivered", "namespace": "default"},
                       "spec": {"nodeName": v.node, "containers": [{
                           "name": "c", "image": "localhost/busybox:1.0",
                           "envFrom": [{"configMapRef": {"name": "survivor"}}]}]}})
        wait_for(lambda: edge_has(v.metaserver, "pods", "delivered"),
                 "pod default/delivered in %s's store" % v.node)
        wait_for(lambda: edge_has(v.metaserver, "configmaps", "survivor"),
                 "ConfigMap default/survivor in %s's store" % v.node)
        say("%s: pod default/delivered and its ConfigMap reached %s (its MetaServer answers "
            "them from the edge store)" % (v.name, v.node))

    # ---- kill the containers; Edged restarts them ----
    def kill_and_restart(self, v):
        old = dict(v.cid)
        pids = [task_pid(self.sock, old[c]) for c in v.comps]
        t0 = time.monotonic()
        for c in v.comps:
            run(["ctr", "-a", self.sock, "-n", "k8s.io", "tasks", "kill", "-s", "SIGKILL", old[c]])
        for pid in pids:
            wait_for(lambda: process_gone(pid), "the process to die")
        done = wait_pods_ready(self.hk, v, t0, "after SIGKILL", min_restarts=1)
        for c in v.comps:
            marks, v.cid[c] = done[c]
            say("%s: %s killed (SIGKILL) and restarted by Edged: kill -> running %.2f s, "
                "-> /healthz 200 %.2f s, -> Ready %.2f s" % (v.name, c, marks["running"],
                                                              marks["healthz"], marks["ready"]))
            restarts = pod_state(self.hk, v.ns, c + "-0")[2]
            assert restarts >= 1, restarts
            assert v.cid[c] != old[c], "the same container %s after the kill" % old[c]
            self.check_process(v, c)
        assert v.kube.get("node", v.node), "%s is gone after the restart" % v.node
        cm = v.kube.get("configmap", "-n", "default", "survivor")
        assert cm and cm.get("data") == {"written": "before the kill"}, cm
        hub_http = v.ports[v.hub]["http"][1]
        wait_for(lambda: metric(hub_http, "ke_cloudhub_nodes_connected") == 1,
                 "%s reconnected (ke_cloudhub_nodes_connected 1)" % v.node)
        wait_for(lambda: node_ready(v.kube, v.node), "%s Ready after the restart" % v.node)
        assert v.edge.poll() is None, "%s's edgecore exited" % v.node
        say("%s: after the restart: node %s and ConfigMap default/survivor still there; "
            "%s reconnected and Ready" % (v.name, v.node, v.node))

    def cleanup(self):
        for v in VARIANTS:
            if v.edge:
                if v.edge.poll() is None:
                    v.edge.terminate()
                    try:
                        v.edge.wait(timeout=20)
                    except subprocess.TimeoutExpired:
                        v.edge.kill()
                        v.edge.wait()
                v.edge.stdout.close()
            if v.edge_log:
                v.edge_log.close()
        if self.host:
            try:
                self.host.cleanup()
            except AssertionError as e:
                print("test_deploy_pods: host cluster: %s" % e, file=sys.stderr)
        if self.ctrd_started:
            subprocess.run([os.path.join(SRC, "tools", "images", "containerd.sh"), "--stop",
                            self.ctrd], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if os.environ.get("KE_KEEP_TMP"):
            print("kept", self.tmp)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)


def main():
    t = Test()
    ok = False
    try:
        t.start_host()
        for v in VARIANTS:
            t.start_pods(v)
            t.join_inner(v)
            t.kill_and_restart(v)
        ok = True
    except BaseException:
        logs = [os.path.join(t.host.tmp, n) for n in ("cloudcore.log", "edgecore.log")] \
            if t.host else []
        logs += [os.path.join(t.tmp, v.name, "edgecore.log") for v in VARIANTS]
        for root, _, files in os.walk(os.path.join(t.tmp, "edged")):
            logs += [os.path.join(root, f) for f in files if f.endswith(".log")]
        for path in logs:
            if os.path.isfile(path):
                print("--- %s" % path, file=sys.stderr, flush=True)
                subprocess.run(["tail", "-25", path], stdout=sys.stderr)
        raise
    finally:
        t.cleanup()
    say("PASS" if ok else "FAIL")
    return 0


if __name__ == "__main__":
    sys.exit(main())
