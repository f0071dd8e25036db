"""A kubeedge-c cluster on loopback for the Python tests: keadm init,
cloudcore (CloudHub, the controllers and the Kubernetes API on free ports),
keadm join and edgecore for one edge node. Every process is started and
stopped here; readiness is read from their "ready" lines, never slept for.
"""
import os
import shutil
import socket
import subprocess
import tempfile
import time

BIN = os.environ.get("KE_BIN_DIR", "")
SRC = os.environ.get("KE_SOURCE_DIR",
                     os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_for(pred, what, seconds=60):
    """Polls pred() (the state is in another process) until it is true."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError("timed out waiting for " + what)


def read_ready(proc, what, seconds=30):
    """Reads proc's stdout up to its "ready ..." line; returns the fields."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        line = proc.stdout.readline()
        if not line:
            raise AssertionError("%s exited before it was ready (status %s)" % (what, proc.poll()))
        if line.startswith("ready "):
            return dict(kv.split("=", 1) for kv in line.split()[1:])
    raise AssertionError("timed out waiting for %s to be ready" % what)


class Cluster:
    def __init__(self, node="edge-1", cloud_flags=(), edge_flags=()):
        self.tmp = tempfile.mkdtemp(prefix="ke-py-")
        self.node = node
        self.cloud_dir = os.path.join(self.tmp, "cloud")
        self.edge_dir = os.path.join(self.tmp, node)
        self.grpc = free_port()
        self.kubeapi = free_port()
        self.cloud_flags = list(cloud_flags)
        self.edge_flags = list(edge_flags)
        self.cloud = self.edge = None
        self.keadm = os.path.join(BIN, "tools", "keadm")
        subprocess.run([self.keadm, "init", "--dir", self.cloud_dir, "--kubeapi-server",
                        "127.0.0.1:%d" % self.kubeapi], check=True, stdout=subprocess.DEVNULL)
        self.kubeconfig = os.path.join(self.cloud_dir, "admin.kubeconfig")

    def start_cloud(self):
        self.cloud_log = open(os.path.join(self.tmp, "cloudcore.log"), "ab")
        self.cloud = subprocess.Popen(
            [os.path.join(BIN, "services", "cloudcore", "cloudcore"), "--config",
             os.path.join(self.cloud_dir, "cloudcore.yaml"),
             "--grpc.listen=127.0.0.1:%d" % self.grpc, "--http.listen=127.0.0.1:0",
             "--kubeapi.listen=127.0.0.1:%d" % self.kubeapi] + self.cloud_flags,
            stdout=subprocess.PIPE, stderr=self.cloud_log, text=True)
        ready = read_ready(self.cloud, "cloudcore")
        assert int(ready["kubeapi"]) == self.kubeapi, ready
        return self

    def join(self):
        token = subprocess.run([self.keadm, "gettoken", "--dir", self.cloud_dir], check=True,
                               capture_output=True, text=True).stdout.strip()
        subprocess.run([self.keadm, "join", "--cloudhub", "127.0.0.1:%d" % self.grpc, "--token",
                        token, "--node-name", self.node, "--dir", self.edge_dir,
                        "--kubeapi-server", "127.0.0.1:%d" % self.kubeapi], check=True,
                       stdout=subprocess.DEVNULL)
        self.node_kubeconfig = os.path.join(self.edge_dir, "node.kubeconfig")
        return self

    def start_edge(self):
        self.edge_log = open(os.path.join(self.tmp, "edgecore.log"), "ab")
        self.edge = subprocess.Popen(
            [os.path.join(BIN, "edge-agent", "edgecore"), "--config",
             os.path.join(self.edge_dir, "edgecore.yaml"), "--http.listen=127.0.0.1:0",
             "--modules.edged.enable=false"] + self.edge_flags,
            stdout=subprocess.PIPE, stderr=self.edge_log, text=True)
        self.edge_ready = read_ready(self.edge, "edgecore")
        return self

    def stop_cloud(self, sig_kill=False):
        if self.cloud and self.cloud.poll() is None:
            (self.cloud.kill if sig_kill else self.cloud.terminate)()
            self.cloud.wait(timeout=30)
        if self.cloud:
            self.cloud.stdout.close()
            self.cloud_log.close()
        self.cloud = None

    def stop(self):
        """Stops edgecore and cloudcore with SIGTERM; both must exit 0 (an
        orderly shutdown; under the sanitizers, no leak or error either)."""
        bad = []
        for name, p in (("edgecore", self.edge), ("cloudcore", self.cloud)):
            if p and p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
                    bad.append("%s did not stop within 20 s of SIGTERM" % name)
                if p.returncode not in (0, None) and not bad:
                    bad.append("%s exited with status %d (see %s)" % (name, p.returncode,
                                                                      self.tmp))
            if p:
                p.stdout.close()
        for f in ("edge_log", "cloud_log"):
            if getattr(self, f, None):
                getattr(self, f).close()
        self.edge = self.cloud = None
        if bad:
            os.environ["KE_KEEP_TMP"] = "1"
            raise AssertionError("; ".join(bad))

    def cleanup(self):
        try:
            self.stop()
        finally:
            if os.environ.get("KE_KEEP_TMP"):
                print("kept", self.tmp)
            else:
                shutil.rmtree(self.tmp, ignore_errors=True)
