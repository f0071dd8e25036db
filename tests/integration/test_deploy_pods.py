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
import urllib.request

SRC = os.environ.get("KE_SOURCE_DIR") or os.path.abspath(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
BIN = os.environ.get("KE_BIN_DIR", os.path.join(SRC, "build"))
sys.path.insert(0, os.path.join(SRC, "tests", "support"))
KUBECTL = "/usr/lib/google-cloud-sdk/bin/kubectl.1.33"
NS = "kubeedge"
POD = "cloudcore-0"
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


def pod_state(kube):
    """(phase, ready, restartCount, containerID) of the pod."""
    p = kube.get("pod", "-n", NS, POD)
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


def metric(port, name):
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=2) as r:
            for line in r.read().decode().splitlines():
                if line.startswith(name + " ") or line.startswith(name + "{"):
                    return float(line.split()[-1])
    except Exception:
        return None
    return None


def wait_pod_ready(kube, http_port, since, what, min_restarts=0, seconds=120):
    """Polls the host API and /healthz until the pod is Ready with at least
    min_restarts restarts; returns (running, healthz, ready) times after since."""
    marks = {}
    last = None
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        phase, ready, restarts, cid = pod_state(kube)
        last = (phase, ready, restarts, cid)
        if restarts >= min_restarts and phase == "Running" and cid:
            marks.setdefault("running", time.monotonic())
            if healthz(http_port):
                marks.setdefault("healthz", time.monotonic())
            if ready:
                marks.setdefault("healthz", marks["running"])
                marks["ready"] = max(marks["healthz"], marks["running"])
                return {k: v - since for k, v in marks.items()}, cid
        time.sleep(0.05)
    raise AssertionError("%s: the pod did not become Ready (last: phase, ready, restarts, "
                         "container = %s)" % (what, last))


def task_pid(sock, cid):
    out = run(["ctr", "-a", sock, "-n", "k8s.io", "tasks", "ls"])
    for line in out.splitlines()[1:]:
        f = line.split()
        if f and f[0] == cid and f[2] == "RUNNING":
            return int(f[1])
    return None


def proc_field(pid, key):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(key + ":"):
                return line.split()[1:]
    return None


class Test:
    def __init__(self):
        self.tmp = tempfile.mkdtemp(prefix="ke-deploy-pods-")
        os.chmod(self.tmp, 0o711)
        self.host = None
        self.ctrd = os.path.join(self.tmp, "ctrd")
        self.sock = os.path.join(self.ctrd, "containerd.sock")
        self.ctrd_started = False
        self.inner_edge = None
        self.inner_log = None

    # ---- the host cluster: cloudcore + host-1 with Edged on containerd ----
    def start_host(self):
        ver = version()
        out = os.path.join(self.tmp, "images")
        t0 = time.monotonic()
        run([os.path.join(SRC, "tools", "image.sh"), "--build", BIN, "--out", out, "cloudcore"])
        archive = os.path.join(out, "cloudcore-%s.oci.tar" % ver)
        assert os.path.isfile(archive), archive
        self.image = "localhost/kubeedge-c/cloudcore:%s" % ver
        say("image built: %s (%.1f s)" % (os.path.basename(archive), time.monotonic() - t0))

        self.ctrd_started = True
        run([os.path.join(SRC, "tools", "images", "containerd.sh"), self.ctrd],
            env=dict(os.environ, KE_IMAGE_CACHE=os.path.join(BIN, "test-images")))
        run(["ctr", "-a", self.sock, "-n", "k8s.io", "images", "import", archive])
        images = run(["ctr", "-a", self.sock, "-n", "k8s.io", "images", "ls", "-q"]).split()
        assert self.image in images, images
        say("private containerd up; %s and localhost/pause:1.0 imported" % self.image)

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

    # ---- the pod from deploy/kubernetes ----
    def objects(self):
        self.grpc, self.http, self.kubeapi = free_port(), free_port(), free_port()
        self.kdir = os.path.join(self.tmp, "inner-cloud")
        run([KEADM, "init", "--kubernetes", "--dir", self.kdir, "--external-address", "127.0.0.1",
             "--kubeapi-server", "127.0.0.1:%d" % self.kubeapi])
        with open(os.path.join(self.kdir, "cloudcore-secret.yaml")) as f:
            secret = [d for d in yaml.safe_load_all(f) if d]
        assert len(secret) == 1 and secret[0]["kind"] == "Secret", secret
        secret = secret[0]
        assert secret["metadata"]["name"] == "cloudcore-tls", secret["metadata"]

        with open(os.path.join(SRC, "deploy", "kubernetes", "cloudcore.yaml")) as f:
            docs = [d for d in yaml.safe_load_all(f) if d]
        cm = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "cloudcore")
        sts = next(d for d in docs if d["kind"] == "StatefulSet")
        for d in (secret, cm, sts):
            assert d["metadata"].get("namespace") == NS, d["metadata"]

        # the listen ports: free ones, the machine's network is shared
        cm = copy.deepcopy(cm)
        conf = cm["data"]["cloudcore.yaml"]
        ports = {"grpc": (10000, self.grpc), "kubeapi": (6443, self.kubeapi),
                 "http": (10550, self.http)}
        for name, (old, new) in ports.items():
            s = 'listen: "0.0.0.0:%d"' % old
            assert conf.count(s) == 1, "%s: %s not once in the ConfigMap" % (name, s)
            conf = conf.replace(s, 'listen: "0.0.0.0:%d"' % new)
        cm["data"]["cloudcore.yaml"] = conf

        tmpl = copy.deepcopy(sts["spec"]["template"])
        spec = tmpl["spec"]
        spec["nodeName"] = "host-1"
        spec["hostNetwork"] = True
        ctr = spec["containers"][0]
        assert ctr["image"] == self.image, (ctr["image"], self.image)
        for p in ctr["ports"]:
            p["containerPort"] = ports[p["name"]][1]
        claims = [c["metadata"]["name"] for c in sts["spec"]["volumeClaimTemplates"]]
        assert claims == ["data"], claims
        self.data = os.path.join(self.tmp, "data")
        os.mkdir(self.data, 0o750)
        os.chown(self.data, UID, UID)
        spec.setdefault("volumes", []).append(
            {"name": "data", "hostPath": {"path": self.data, "type": "Directory"}})
        # every mount names a volume
        vols = {v["name"] for v in spec["volumes"]}
        for m in ctr["volumeMounts"]:
            assert m["name"] in vols, m
        pod = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": POD, "namespace": NS, "labels": tmpl["metadata"]["labels"],
                            "annotations": tmpl["metadata"].get("annotations", {})},
               "spec": spec}
        return secret, cm, pod

    def start_pod(self):
        secret, cm, pod = self.objects()
        self.hk.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
        self.hk.create(secret)
        self.hk.create(cm)
        t0 = time.monotonic()
        self.hk.create(pod)
        try:
            marks, self.cid = wait_pod_ready(self.hk, self.http, t0, "first start")
        except AssertionError:
            p = self.hk.get("pod", "-n", NS, POD)
            print(json.dumps(p and p.get("status"), indent=1), file=sys.stderr)
            raise
        self.cold = marks
        say("pod %s/%s Running and Ready on host-1: created -> running %.2f s, -> /healthz 200 "
            "%.2f s, -> Ready %.2f s; cold start (container running -> /healthz 200) %.2f s"
            % (NS, POD, marks["running"], marks["healthz"], marks["ready"],
               marks["healthz"] - marks["running"]))
        self.check_process()

    def check_process(self):
        pid = task_pid(self.sock, self.cid)
        assert pid, "no running task %s in containerd" % self.cid
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            cmd = f.read().split(b"\0")
        assert cmd[0] == b"/usr/bin/cloudcore", cmd
        uids, gids = proc_field(pid, "Uid"), proc_field(pid, "Gid")
        assert uids == [str(UID)] * 4, "cloudcore runs with uids %s" % uids
        assert gids == [str(UID)] * 4, "cloudcore runs with gids %s" % gids
        caps = proc_field(pid, "CapEff")
        assert caps == ["0000000000000000"], "cloudcore has capabilities %s" % caps
        root = None
        with open("/proc/%d/mountinfo" % pid) as f:
            for line in f:
                f_ = line.split()
                if f_[4] == "/":
                    root = f_[5]
        assert root and root.split(",")[0] == "ro", "root mounted %s, not read-only" % root
        assert os.path.isfile(os.path.join(self.data, "store.db")), "no store.db on the hostPath"
        assert os.stat(os.path.join(self.data, "store.db")).st_uid == UID
        say("cloudcore (pid %d) runs as %d:%d, no capabilities, read-only root (%s), "
            "store.db on the hostPath" % (pid, UID, UID, root))
        return pid

    # ---- an edge of the containerized cloudcore ----
    def join_inner(self):
        token = run([KEADM, "gettoken", "--dir", self.kdir]).strip()
        edir = os.path.join(self.tmp, "inner-1")
        run([KEADM, "join", "--cloudhub", "127.0.0.1:%d" % self.grpc, "--token", token,
             "--node-name", "inner-1", "--dir", edir,
             "--kubeapi-server", "127.0.0.1:%d" % self.kubeapi])
        self.inner_log = open(os.path.join(self.tmp, "inner-edgecore.log"), "ab")
        self.inner_edge = subprocess.Popen(
            [EDGECORE, "--config", os.path.join(edir, "edgecore.yaml"),
             "--http.listen=127.0.0.1:0", "--modules.edged.enable=false",
             "--modules.eventbus.enable=false",
             "--edgehub.backoff_initial=50ms", "--edgehub.backoff_max=500ms"],
            stdout=subprocess.PIPE, stderr=self.inner_log, text=True)
        read_ready(self.inner_edge, "inner-1's edgecore")
        self.ik = Kube(os.path.join(self.kdir, "admin.kubeconfig"))
        wait_for(lambda: node_ready(self.ik, "inner-1"), "inner-1 Ready on the pod's cloudcore")
        self.ik.create({"apiVersion": "v1", "kind": "ConfigMap",
                        "metadata": {"name": "survivor", "namespace": "default"},
                        "data": {"written": "before the kill"}})
        wait_for(lambda: metric(self.http, "ke_cloudhub_nodes_connected") == 1,
                 "ke_cloudhub_nodes_connected 1")
        say("inner-1 joined the containerized cloudcore through 127.0.0.1:%d and is Ready; "
            "ConfigMap default/survivor created through its API on 127.0.0.1:%d"
            % (self.grpc, self.kubeapi))

    # ---- kill the container; Edged restarts it ----
    def kill_and_restart(self):
        old = self.cid
        pid = task_pid(self.sock, old)
        t0 = time.monotonic()
        run(["ctr", "-a", self.sock, "-n", "k8s.io", "tasks", "kill", "-s", "SIGKILL", old])
        wait_for(lambda: not os.path.exists("/proc/%d" % pid) or
                 open("/proc/%d/stat" % pid).read().split()[2] == "Z", "the process to die")
        marks, self.cid = wait_pod_ready(self.hk, self.http, t0, "after SIGKILL", min_restarts=1)
        say("container killed (SIGKILL) and restarted by Edged: kill -> running %.2f s, "
            "-> /healthz 200 %.2f s, -> Ready %.2f s" % (marks["running"], marks["healthz"],
                                                          marks["ready"]))
        _, _, restarts, _ = pod_state(self.hk)
        assert restarts >= 1, restarts
        assert self.cid != old, "the same container %s after the kill" % old
        self.check_process()
        node = self.ik.get("node", "inner-1")
        assert node, "inner-1 is gone after the restart"
        cm = self.ik.get("configmap", "-n", "default", "survivor")
        assert cm and cm.get("data") == {"written": "before the kill"}, cm
        wait_for(lambda: metric(self.http, "ke_cloudhub_nodes_connected") == 1,
                 "inner-1 reconnected (ke_cloudhub_nodes_connected 1)")
        wait_for(lambda: node_ready(self.ik, "inner-1"), "inner-1 Ready after the restart")
        assert self.inner_edge.poll() is None, "inner-1's edgecore exited"
        say("after the restart: node inner-1 and ConfigMap default/survivor still there; "
            "inner-1 reconnected and Ready (restartCount %d)" % restarts)

    def cleanup(self):
        if self.inner_edge:
            if self.inner_edge.poll() is None:
                self.inner_edge.terminate()
                try:
                    self.inner_edge.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    self.inner_edge.kill()
                    self.inner_edge.wait()
            self.inner_edge.stdout.close()
        if self.inner_log:
            self.inner_log.close()
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
        t.start_pod()
        t.join_inner()
        t.kill_and_restart()
        ok = True
    except BaseException:
        logs = [os.path.join(t.host.tmp, n) for n in ("cloudcore.log", "edgecore.log")] \
            if t.host else []
        logs.append(os.path.join(t.tmp, "inner-edgecore.log"))
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
