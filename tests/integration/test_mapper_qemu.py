#!/usr/bin/env python3
"""test_mapper_qemu — the virtual-sensor firmware end to end, on every
emulated board: a cluster on loopback (a private mosquitto, cloudcore,
edgecore with EventBus on that broker), a DeviceModel and a Device, QEMU
running mappers/virtual-sensor's image with its UART on a TCP socket, and
ke-mapper-bridge between that socket and DeviceTwin's protobuf topics.

Checked first, once: the same sensor built for the host (ke-virtual-sensor,
over MQTT) reports, and takes a setpoint. Then, per board:
  - readings (temperature, humidity, count) and the device's state online
    show in the cloud (kectl twin get -o json);
  - `kectl twin set vsensor-1 setpoint 30` reaches the MCU, which echoes
    it as reported, and its temperature then drifts up toward 30;
  - the stack high-water mark the firmware reports (stack_hwm) is printed
    and is below the stack its image reserves;
  - SIGKILL of the bridge, then of edgecore, then of QEMU: no reading the
    device saw acknowledged is lost, and readings continue after each
    restart; QEMU's death makes the device offline, its return online.

"Acknowledged": the bridge (--verbose) logs every frame it relays, up
("up device=.. seq=S reported count=N ...") and down ("down device=..
seq=0 ack S"), before writing it to the line; so the counts the device can
have seen acked are a subset of the counts of the seqs the log shows acked
(a superset makes the check stricter). `count` is the firmware's reading
number, increasing by 1 a second from boot. For each kill the device is
first kept from producing newer readings (the bridge dead, QEMU stopped
with SIGSTOP, or QEMU dead), so the cloud's count can only come from
readings already relayed; the check is then that the cloud's count
reaches the highest acked one (A). The twin holds the latest value only,
so "the cloud shows count >= A" is exactly "the acked reading, or a later
one, arrived". QEMU is killed last: after its restart the count starts
again from 1, so A of an earlier boot would no longer compare.

Exits 77 (skipped) without qemu-system-arm, mosquitto or the images.
"""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
from kecluster import free_port, wait_for  # noqa: E402

BIN = os.environ.get("KE_BIN_DIR", "")
FW_DIR = os.environ.get("KE_FIRMWARE_DIR", "")
MOSQUITTO = "/usr/sbin/mosquitto"
BOARDS = ["lm3s6965evb", "netduinoplus2"]
NODE = "edge-1"
DEVICE = "vsensor-1"
IMAGE = "virtual-sensor"
STACK_RESERVED = 1536  # STACK in mappers/virtual-sensor/firmware.cmake
WAIT = 30.0            # seconds for any one observable change


def port_open(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


UP_RE = re.compile(r"up device=\S+ seq=(\d+) reported(.*)$")
ACK_RE = re.compile(r"down device=\S+ seq=\d+ ack (\d+)$")
CLOSED_RE = re.compile(r"line device=\S+ \S+ closed")


def acked_counts(log_path, stop_at_closed=False):
    """The counts of the readings the bridge relayed acks for, in the log
    of one bridge process (up to the first 'line closed' if asked)."""
    counts, by_seq = [], {}
    with open(log_path, errors="replace") as f:
        for line in f:
            line = line.rstrip("\n")
            if stop_at_closed and CLOSED_RE.search(line):
                break
            m = UP_RE.search(line)
            if m:
                props = dict(kv.split("=", 1) for kv in m[2].split())
                by_seq[int(m[1])] = props.get("count")
                continue
            m = ACK_RE.search(line)
            if m and by_seq.get(int(m[1])) is not None:
                counts.append(int(by_seq[int(m[1])]))
    return counts


class Cluster:
    """mosquitto, cloudcore, edgecore (keadm init/join) in one temp dir."""

    def __init__(self, tmp):
        self.tmp, self.procs = tmp, {}
        self.mqtt_port = free_port()
        conf = os.path.join(tmp, "mosquitto.conf")
        with open(conf, "w") as f:
            f.write("listener %d 127.0.0.1\nallow_anonymous true\n" % self.mqtt_port)
        self.procs["mosquitto"] = subprocess.Popen(
            [MOSQUITTO, "-c", conf], stderr=open(os.path.join(tmp, "mosquitto.log"), "w"))
        wait_for(lambda: port_open(self.mqtt_port), "the broker")
        keadm = os.path.join(BIN, "tools", "keadm")
        cloud = os.path.join(tmp, "cloud")
        self.edge_dir = os.path.join(tmp, NODE)
        subprocess.run([keadm, "init", "--dir", cloud], check=True, stdout=subprocess.DEVNULL)
        cc = subprocess.Popen(
            [os.path.join(BIN, "services", "cloudcore", "cloudcore"), "--config",
             os.path.join(cloud, "cloudcore.yaml"), "--grpc.listen=127.0.0.1:0",
             "--http.listen=127.0.0.1:0", "--kubeapi.listen=127.0.0.1:0"],
            stdout=subprocess.PIPE, stderr=open(os.path.join(tmp, "cloudcore.log"), "w"),
            text=True)
        self.procs["cloudcore"] = cc
        port = dict(kv.split("=") for kv in cc.stdout.readline().split()[1:])["grpc"]
        token = subprocess.run([keadm, "gettoken", "--dir", cloud], check=True,
                               capture_output=True, text=True).stdout.strip()
        subprocess.run([keadm, "join", "--cloudhub", "127.0.0.1:" + port, "--token", token,
                        "--node-name", NODE, "--dir", self.edge_dir], check=True,
                       stdout=subprocess.DEVNULL)
        self.kectl = [os.path.join(BIN, "tools", "kectl"), "--server", "127.0.0.1:" + port,
                      "--ca", os.path.join(cloud, "ca.crt"), "--cert",
                      os.path.join(cloud, "admin.crt"), "--key",
                      os.path.join(cloud, "admin.key")]
        self.start_edgecore()
        wait_for(lambda: re.search(r"edge-1\s+Ready", self.run_kectl("get", "nodes").stdout),
                 "edge-1 Ready")

    def start_edgecore(self):
        e = subprocess.Popen(
            [os.path.join(BIN, "edge-agent", "edgecore"), "--config",
             os.path.join(self.edge_dir, "edgecore.yaml"), "--http.listen=127.0.0.1:0",
             "--modules.edged.enable=false", "--eventbus.broker=127.0.0.1:%d" % self.mqtt_port],
            stdout=subprocess.PIPE, stderr=open(os.path.join(self.tmp, "edgecore.log"), "a"),
            text=True)
        self.procs["edgecore"] = e
        ready = e.stdout.readline()
        assert ready.startswith("ready "), ready

    def run_kectl(self, *args):
        return subprocess.run(self.kectl + list(args), capture_output=True, text=True,
                              timeout=30)

    def apply(self, name, text):
        path = os.path.join(self.tmp, name)
        with open(path, "w") as f:
            f.write(text)
        r = self.run_kectl("apply", "-f", path)
        assert r.returncode == 0, r.stderr

    def twin(self, device=DEVICE):
        """The cloud's twin of a device: (state, {property: reported value})."""
        r = self.run_kectl("twin", "get", device, "-o", "json")
        if r.returncode != 0:
            return None, {}
        j = json.loads(r.stdout)
        rep = {t["property"]: t["reported"]["value"] for t in j["twins"]
               if t.get("reported") and t["reported"].get("value")}
        return j["state"], rep

    def reported(self, prop, device=DEVICE):
        return self.twin(device)[1].get(prop)

    def count(self):
        v = self.reported("count")
        return int(v) if v is not None else -1

    def stop(self):
        for name in ("edgecore", "cloudcore", "mosquitto"):
            p = self.procs.get(name)
            if p and p.poll() is None:
                p.terminate()
            if p:
                try:
                    p.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()


class Rig:
    """QEMU with the image, and the bridge on its UART."""

    def __init__(self, tmp, board, elf, mqtt_port):
        self.tmp, self.board, self.elf, self.mqtt_port = tmp, board, elf, mqtt_port
        self.uart_port = free_port()
        self.qemu = self.bridge = None
        self.bridge_logs = []

    def start_qemu(self):
        self.qemu = subprocess.Popen(
            ["qemu-system-arm", "-M", self.board, "-nographic", "-monitor", "none",
             "-kernel", self.elf, "-semihosting-config", "enable=on,target=native",
             "-serial", "tcp:127.0.0.1:%d,server=on,wait=on,nodelay=on" % self.uart_port],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=open(os.path.join(self.tmp, "qemu.log"), "a"))

    def start_bridge(self):
        log = os.path.join(self.tmp, "bridge-%d.log" % len(self.bridge_logs))
        self.bridge_logs.append(log)
        self.bridge = subprocess.Popen(
            [os.path.join(BIN, "mappers", "bridge", "ke-mapper-bridge"), "--broker",
             "127.0.0.1:%d" % self.mqtt_port, "--line",
             "%s=tcp:127.0.0.1:%d" % (DEVICE, self.uart_port), "--offline-after", "3000",
             "--verbose"],
            stdout=subprocess.PIPE, stderr=open(log, "w"), text=True)
        assert self.bridge.stdout.readline().startswith("ready "), "the bridge did not start"

    def log(self):
        with open(self.bridge_logs[-1], errors="replace") as f:
            return f.read()

    def stop(self):
        for p in (self.bridge, self.qemu):
            if p and p.poll() is None:
                p.kill()
            if p:
                p.wait()
                if p.stdout:
                    p.stdout.close()


def check_host_program(cluster):
    """The same sensor built for the host (ke-virtual-sensor, the SDK's MQTT
    transport): readings arrive, a desired setpoint comes back reported,
    and SIGTERM stops it cleanly."""
    cluster.apply("device-host.yaml", """
apiVersion: devices.kubeedge.io/v1beta1
kind: Device
metadata: {name: vsensor-host}
spec:
  deviceModelRef: {name: virtual-sensor}
  nodeName: %s
""" % NODE)
    p = subprocess.Popen(
        [os.path.join(BIN, "mappers", "virtual-sensor", "ke-virtual-sensor"), "--broker",
         "127.0.0.1:%d" % cluster.mqtt_port, "--device", "vsensor-host"],
        stdout=subprocess.PIPE, stderr=open(os.path.join(cluster.tmp, "host-sensor.log"), "w"),
        text=True)
    try:
        assert p.stdout.readline().startswith("ready "), "ke-virtual-sensor did not start"
        wait_for(lambda: int(cluster.reported("count", "vsensor-host") or 0) >= 2,
                 "the host sensor's readings")
        r = cluster.run_kectl("twin", "set", "vsensor-host", "setpoint", "25")
        assert r.returncode == 0, r.stderr
        wait_for(lambda: cluster.reported("setpoint", "vsensor-host") == "25",
                 "the host sensor's setpoint 25 reported")
        p.terminate()
        assert p.wait(timeout=10) == 0
        print("host: ke-virtual-sensor over MQTT: readings in the cloud, setpoint 25 reported")
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        p.stdout.close()


def check_board(board, elf):
    tmp = tempfile.mkdtemp(prefix="ke-mapper-qemu-")
    cluster = rig = None
    ok = False
    try:
        cluster = Cluster(tmp)
        cluster.apply("model.yaml", """
apiVersion: devices.kubeedge.io/v1beta1
kind: DeviceModel
metadata: {name: virtual-sensor}
spec:
  properties:
  - {name: temperature, type: FLOAT, accessMode: ReadOnly}
  - {name: humidity, type: FLOAT, accessMode: ReadOnly}
  - {name: setpoint, type: INT, accessMode: ReadWrite}
  - {name: count, type: INT, accessMode: ReadOnly}
  - {name: stack_hwm, type: INT, accessMode: ReadOnly}
""")
        cluster.apply("device.yaml", """
apiVersion: devices.kubeedge.io/v1beta1
kind: Device
metadata: {name: %s}
spec:
  deviceModelRef: {name: virtual-sensor}
  nodeName: %s
""" % (DEVICE, NODE))
        if board == BOARDS[0]:
            check_host_program(cluster)
        rig = Rig(tmp, board, elf, cluster.mqtt_port)
        rig.start_qemu()
        rig.start_bridge()

        # readings and the state online reach the cloud
        wait_for(lambda: cluster.count() >= 2, "count >= 2 in the cloud")
        st, rep = cluster.twin()
        assert st == "online", st
        for p in ("temperature", "humidity", "setpoint"):
            assert p in rep, (p, rep)
        t0 = float(rep["temperature"])
        print("%s: readings in the cloud: %s" % (board, rep))

        # the setpoint reaches the MCU, which echoes it; the temperature follows
        r = cluster.run_kectl("twin", "set", DEVICE, "setpoint", "30")
        assert r.returncode == 0, r.stderr
        wait_for(lambda: cluster.reported("setpoint") == "30", "reported setpoint 30")
        wait_for(lambda: float(cluster.reported("temperature") or 0) > t0 + 1.0,
                 "the temperature drifting toward 30")
        hwm = int(wait_for(lambda: cluster.reported("stack_hwm"), "stack_hwm reported"))
        assert 0 < hwm < STACK_RESERVED, hwm

        # 1. the bridge dies: nothing newer reaches the edge; the acked does
        rig.bridge.kill()
        rig.bridge.wait()
        acked = acked_counts(rig.bridge_logs[-1])
        assert acked, "no acked reading in " + rig.bridge_logs[-1]
        a = max(acked)
        wait_for(lambda: cluster.count() >= a, "count >= %d (acked) after the bridge died" % a)
        rig.start_bridge()
        wait_for(lambda: cluster.count() > a + 2, "readings again after the bridge restarted")
        print("%s: bridge SIGKILL: highest acked count %d in the cloud; readings continue"
              % (board, a))

        # 2. edgecore dies; the device is held (SIGSTOP) so nothing newer
        # is produced; edgecore restarts and the acked readings are there
        cluster.procs["edgecore"].kill()
        cluster.procs["edgecore"].wait()
        rig.qemu.send_signal(signal.SIGSTOP)
        cluster.start_edgecore()

        def acked_in_cloud():
            a = max(acked_counts(rig.bridge_logs[-1]), default=0)
            return a if cluster.count() >= a else None
        a = wait_for(acked_in_cloud, "the acked count in the cloud after edgecore's restart")
        rig.qemu.send_signal(signal.SIGCONT)
        wait_for(lambda: cluster.count() > a + 2, "readings again after edgecore restarted")
        print("%s: edgecore SIGKILL: highest acked count %d in the cloud; readings continue"
              % (board, a))

        # 3. QEMU dies: the device goes offline; what it saw acked is there
        rig.qemu.kill()
        rig.qemu.wait()
        wait_for(lambda: CLOSED_RE.search(rig.log()), "the bridge seeing the line close")
        a = max(acked_counts(rig.bridge_logs[-1], stop_at_closed=False) or [0])
        a_before = max(acked_counts(rig.bridge_logs[-1], stop_at_closed=True) or [0])
        wait_for(lambda: cluster.count() >= a, "count >= %d (acked) after QEMU died" % a)
        wait_for(lambda: cluster.twin()[0] == "offline", "the device offline")
        rig.start_qemu()
        wait_for(lambda: cluster.twin()[0] == "online", "the device online again")
        # a new boot counts from 1 again: readings below the old ones, rising
        c1 = wait_for(lambda: (lambda c: c if 0 < c < a else None)(cluster.count()),
                      "a reading of the new boot")
        wait_for(lambda: cluster.count() > c1, "readings rising after QEMU restarted")
        print("%s: QEMU SIGKILL: highest acked count %d (%d before the line closed) in the "
              "cloud; offline, online again, readings continue" % (board, a, a_before))
        print("%s: stack high-water %d B of %d B reserved (measured in QEMU by the firmware)"
              % (board, hwm, STACK_RESERVED))
        ok = True
    finally:
        if rig:
            rig.stop()
        if cluster:
            cluster.stop()
        if ok and not os.environ.get("KE_KEEP_TMP"):
            shutil.rmtree(tmp, ignore_errors=True)
        elif not ok:
            print("logs kept in " + tmp, file=sys.stderr)


def main():
    if not shutil.which("qemu-system-arm"):
        print("SKIP: qemu-system-arm is not installed (tools/deps.sh)")
        return 77
    if not os.access(MOSQUITTO, os.X_OK):
        print("SKIP: mosquitto is not installed")
        return 77
    if not BIN:
        print("SKIP: KE_BIN_DIR not set: run through ctest")
        return 77
    elfs = {b: os.path.join(FW_DIR, b, IMAGE + ".elf") for b in BOARDS}
    missing = [e for e in elfs.values() if not os.path.isfile(e)]
    if not FW_DIR or missing:
        print("SKIP: firmware images missing (%s)" % (missing or "KE_FIRMWARE_DIR unset"))
        return 77
    for b in BOARDS:
        check_board(b, elfs[b])
    print("PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
