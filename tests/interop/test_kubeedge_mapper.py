#!/usr/bin/python3
"""Interop: a mapper written against KubeEdge's MQTT topics (paho-mqtt).

A whole cluster on loopback, started here: a private mosquitto, keadm
init, cloudcore, keadm join, edgecore with EventBus and DeviceTwin on that
broker. The mapper below knows only KubeEdge's topics and JSON shapes
(devicetwin dttype, timestamps in ms): it asks for the node's membership,
gets a delta after `kectl twin set`, reports the value it "wrote", and
`kectl twin get` shows it as reported; twin/get answers in KubeEdge's
result shape. Then every kind of bad input on the topics is refused with
KubeEdge's error result, a /metrics counter, and no change in the cloud.

Skipped when mosquitto or python3-paho-mqtt is missing.
"""
import json
import os
import queue
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
from kecluster import free_port, wait_for  # noqa: E402

BIN = os.environ.get("KE_BIN_DIR")
MOSQUITTO = "/usr/sbin/mosquitto"
NODE = "edge-1"
DEV = "$hw/events/device/"


class Mapper:
    """A KubeEdge-style mapper: paho-mqtt, QoS 1, JSON topics."""

    def __init__(self, port):
        import paho.mqtt.client as mqtt
        self.inbox = queue.Queue()
        self.c = mqtt.Client(client_id="py-mapper", clean_session=True)
        self.c.on_message = lambda c, u, m: self.inbox.put((m.topic, m.payload))
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()

    def subscribe(self, topic):
        _, mid = self.c.subscribe(topic, qos=1)
        return mid

    def publish(self, topic, payload):
        if not isinstance(payload, (bytes, str)):
            payload = json.dumps(payload)
        self.c.publish(topic, payload, qos=1).wait_for_publish()

    def expect(self, topic, pred=lambda j: True, seconds=30):
        """The next message on topic for which pred holds (others on that
        topic are skipped; other topics are kept for later)."""
        end = time.monotonic() + seconds
        kept = []
        try:
            while time.monotonic() < end:
                try:
                    t, p = self.inbox.get(timeout=0.2)
                except queue.Empty:
                    continue
                if t != topic:
                    kept.append((t, p))
                    continue
                j = json.loads(p)
                if pred(j):
                    return j
        finally:
            for k in kept:
                self.inbox.put(k)
        raise AssertionError("nothing on %s within %d s" % (topic, seconds))

    def close(self):
        self.c.loop_stop()
        self.c.disconnect()


class KubeEdgeMapper(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        try:
            cls.start()
        except BaseException:
            cls.stop(check=False)
            raise

    @classmethod
    def start(cls):
        cls.procs = []
        if not BIN:
            raise unittest.SkipTest("KE_BIN_DIR not set: run through ctest")
        try:
            import paho.mqtt.client  # noqa: F401
        except ImportError:
            raise unittest.SkipTest("python3-paho-mqtt is not installed")
        if not os.access(MOSQUITTO, os.X_OK):
            raise unittest.SkipTest("mosquitto is not installed")
        cls.tmp = tempfile.mkdtemp(prefix="ke-pymapper-")
        cls.mqtt_port = free_port()
        conf = os.path.join(cls.tmp, "mosquitto.conf")
        with open(conf, "w") as f:
            f.write("listener %d 127.0.0.1\nallow_anonymous true\n" % cls.mqtt_port)
        cls.broker = subprocess.Popen([MOSQUITTO, "-c", conf],
                                      stderr=open(os.path.join(cls.tmp, "mosquitto.log"), "w"))
        cls.procs.append(cls.broker)
        wait_for(lambda: cls.port_open(cls.mqtt_port), "the broker")

        keadm = os.path.join(BIN, "tools", "keadm")
        cloud = os.path.join(cls.tmp, "cloud")
        edge = os.path.join(cls.tmp, NODE)
        subprocess.run([keadm, "init", "--dir", cloud], check=True, stdout=subprocess.DEVNULL)
        cls.cloud = subprocess.Popen(
            [os.path.join(BIN, "services", "cloudcore", "cloudcore"), "--config",
             os.path.join(cloud, "cloudcore.yaml"), "--grpc.listen=127.0.0.1:0",
             "--http.listen=127.0.0.1:0", "--kubeapi.listen=127.0.0.1:0"],
            stdout=subprocess.PIPE, stderr=open(os.path.join(cls.tmp, "cloudcore.log"), "w"),
            text=True)
        cls.procs.append(cls.cloud)
        line = cls.cloud.stdout.readline()
        port = dict(kv.split("=") for kv in line.split()[1:])["grpc"]
        token = subprocess.run([keadm, "gettoken", "--dir", cloud], check=True,
                               capture_output=True, text=True).stdout.strip()
        subprocess.run([keadm, "join", "--cloudhub", "127.0.0.1:" + port, "--token", token,
                        "--node-name", NODE, "--dir", edge], check=True,
                       stdout=subprocess.DEVNULL)
        cls.edge = subprocess.Popen(
            [os.path.join(BIN, "edge-agent", "edgecore"), "--config",
             os.path.join(edge, "edgecore.yaml"), "--http.listen=127.0.0.1:0",
             "--modules.edged.enable=false",
             "--eventbus.broker=127.0.0.1:%d" % cls.mqtt_port],
            stdout=subprocess.PIPE, stderr=open(os.path.join(cls.tmp, "edgecore.log"), "w"),
            text=True)
        cls.procs.append(cls.edge)
        ready = cls.edge.stdout.readline()
        assert ready.startswith("ready "), ready
        cls.edge_http = int(dict(kv.split("=") for kv in ready.split()[1:])["http"])
        cls.kectl = [os.path.join(BIN, "tools", "kectl"), "--server", "127.0.0.1:" + port,
                     "--ca", os.path.join(cloud, "ca.crt"), "--cert",
                     os.path.join(cloud, "admin.crt"), "--key", os.path.join(cloud, "admin.key")]
        wait_for(lambda: re.search(r"edge-1\s+Ready", cls.run_kectl("get", "nodes").stdout),
                 "edge-1 Ready")
        cls.apply_file("model.yaml", """
apiVersion: devices.kubeedge.io/v1beta1
kind: DeviceModel
metadata: {name: thermometer}
spec:
  properties:
  - {name: temp, type: INT, accessMode: ReadWrite}
  - {name: humidity, type: FLOAT, accessMode: ReadOnly}
  - {name: label, type: STRING, accessMode: ReadWrite}
""")
        cls.apply_file("device.yaml", """
apiVersion: devices.kubeedge.io/v1beta1
kind: Device
metadata: {name: therm-1}
spec:
  deviceModelRef: {name: thermometer}
  nodeName: edge-1
  properties:
  - {name: temp}
""")
        wait_for(lambda: cls.metric("ke_devicetwin_deltas_total") is not None,
                 "edgecore's metrics")
        cls.mapper = Mapper(cls.mqtt_port)
        for t in ("therm-1/twin/update/delta", "therm-1/twin/update/result",
                  "therm-1/twin/get/result", "therm-1/state/update/result",
                  "therm-1/twin/update/document", "nosuch/twin/update/result",
                  "nosuch/twin/get/result"):
            cls.mapper.subscribe(DEV + t)
        cls.mapper.subscribe("$hw/events/node/%s/membership/get/result" % NODE)
        cls.mapper.subscribe("$hw/events/node/%s/membership/updated" % NODE)
        # The device reaches the edge (membership answers with it).
        wait_for(lambda: cls.membership_has("therm-1"), "therm-1 at the edge")

    @classmethod
    def port_open(cls, port):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            return False

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
    def membership_has(cls, name):
        cls.mapper.publish("$hw/events/node/%s/membership/get" % NODE,
                           {"event_id": "m1", "timestamp": int(time.time() * 1000)})
        try:
            j = cls.mapper.expect("$hw/events/node/%s/membership/get/result" % NODE, seconds=2)
        except AssertionError:
            return False
        return any(d["name"] == name for d in j["devices"])

    @classmethod
    def metric(cls, name):
        text = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % cls.edge_http,
                                      timeout=5).read().decode()
        total = None
        for line in text.splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                total = (total or 0) + float(line.rsplit(" ", 1)[1])
        return total

    @classmethod
    def refused(cls, reason):
        text = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % cls.edge_http,
                                      timeout=5).read().decode()
        m = re.search(r'^ke_devicetwin_refused_total\{reason="%s"\} (\d+)' % reason, text, re.M)
        return int(m.group(1)) if m else 0

    @classmethod
    def tearDownClass(cls):
        cls.stop(check=True)

    @classmethod
    def stop(cls, check):
        if getattr(cls, "mapper", None):
            cls.mapper.close()
        for p in reversed(cls.procs):
            p.terminate()
        codes = [p.wait(timeout=15) for p in reversed(cls.procs)]
        if getattr(cls, "tmp", None) and not os.environ.get("KE_KEEP_TMP"):
            shutil.rmtree(cls.tmp)
        if check:
            assert codes == [0] * len(codes), codes

    def twin_row(self, prop):
        out = self.run_kectl("twin", "get", "therm-1")
        self.assertEqual(out.returncode, 0, out.stderr)
        for line in out.stdout.splitlines():
            cols = line.split()
            if cols and cols[0] == prop:
                return cols
        return None

    def test_1_delta_report_get_membership(self):
        m = self.mapper
        # membership/get lists the node's devices in KubeEdge's shape
        m.publish("$hw/events/node/%s/membership/get" % NODE, {"event_id": "e-m",
                                                               "timestamp": 1})
        j = m.expect("$hw/events/node/%s/membership/get/result" % NODE,
                     lambda j: j.get("event_id") == "e-m")
        self.assertIsInstance(j["timestamp"], int)
        dev = [d for d in j["devices"] if d["name"] == "therm-1"][0]
        self.assertEqual(dev["id"], "therm-1")

        # the cloud sets a desired value: the mapper gets a delta
        r = self.run_kectl("twin", "set", "therm-1", "temp", "25")
        self.assertEqual(r.returncode, 0, r.stderr)
        d = m.expect(DEV + "therm-1/twin/update/delta", lambda j: j["delta"].get("temp") == "25")
        self.assertEqual(d["twin"]["temp"]["expected"]["value"], "25")
        self.assertIsInstance(d["twin"]["temp"]["expected"]["metadata"]["timestamp"], int)
        self.assertGreater(d["twin"]["temp"]["expected"]["metadata"]["timestamp"],
                           1_600_000_000_000)  # milliseconds
        self.assertEqual(d["twin"]["temp"]["metadata"]["type"], "int")
        self.assertNotIn("expected_version", d["twin"]["temp"])
        self.assertIn("event_id", d)

        # the mapper "writes" it and reports what it reads back
        now = int(time.time() * 1000)
        m.publish(DEV + "therm-1/twin/update", {
            "event_id": "e-up", "timestamp": now,
            "twin": {"temp": {"actual": {"value": "25", "metadata": {"timestamp": now}},
                              "metadata": {"type": "int"}},
                     "humidity": {"actual": {"value": "41.5"}}}})
        res = m.expect(DEV + "therm-1/twin/update/result", lambda j: j["event_id"] == "e-up")
        self.assertNotIn("code", res)
        self.assertEqual(res["twin"]["temp"]["actual"]["value"], "25")
        self.assertEqual(res["twin"]["temp"]["actual"]["metadata"]["timestamp"], now)
        self.assertEqual(res["twin"]["temp"]["actual_version"]["edge"], 1)
        self.assertIn("cloud", res["twin"]["temp"]["expected_version"])
        doc = m.expect(DEV + "therm-1/twin/update/document", lambda j: j["event_id"] == "e-up")
        self.assertEqual(doc["twin"]["temp"]["current"]["actual"]["value"], "25")
        self.assertEqual(doc["twin"]["temp"]["current"]["expected"]["value"], "25")

        # kectl twin get shows it as reported
        wait_for(lambda: (self.twin_row("temp") or [None] * 3)[2] == "25", "temp reported 25")
        wait_for(lambda: (self.twin_row("humidity") or [None] * 3)[2] == "41.5",
                 "humidity reported 41.5")
        self.assertEqual(self.twin_row("temp")[1], "25")

        # twin/get: KubeEdge's DeviceTwinResult, no versions
        m.publish(DEV + "therm-1/twin/get", {"event_id": "e-get", "timestamp": now})
        g = m.expect(DEV + "therm-1/twin/get/result", lambda j: j["event_id"] == "e-get")
        self.assertEqual(g["twin"]["temp"]["expected"]["value"], "25")
        self.assertEqual(g["twin"]["temp"]["actual"]["value"], "25")
        self.assertEqual(g["twin"]["humidity"]["actual"]["value"], "41.5")
        self.assertEqual(g["twin"]["humidity"]["metadata"]["type"], "float")
        self.assertNotIn("actual_version", g["twin"]["temp"])

        # <namespace>/<name> ids are accepted too
        m.subscribe(DEV + "default/therm-1/twin/get/result")
        m.publish(DEV + "default/therm-1/twin/get", {"event_id": "e-ns"})
        g = m.expect(DEV + "default/therm-1/twin/get/result", lambda j: j["event_id"] == "e-ns")
        self.assertEqual(g["twin"]["temp"]["actual"]["value"], "25")

        # state/update: online, answered with KubeEdge's device message
        m.publish(DEV + "therm-1/state/update", {"event_id": "e-st", "timestamp": now,
                                                 "state": "online"})
        s = m.expect(DEV + "therm-1/state/update/result", lambda j: j["event_id"] == "e-st")
        self.assertEqual((s["device"]["name"], s["device"]["state"]), ("therm-1", "online"))
        self.assertIn("last_online", s["device"])
        wait_for(lambda: "online" in self.run_kectl("describe", "device", "therm-1").stdout,
                 "therm-1 online in the cloud")

        # a device added to the node: membership/updated
        self.apply_file("device2.yaml", """
apiVersion: devices.kubeedge.io/v1beta1
kind: Device
metadata: {name: therm-2}
spec:
  deviceModelRef: {name: thermometer}
  nodeName: edge-1
""")
        u = m.expect("$hw/events/node/%s/membership/updated" % NODE,
                     lambda j: any(d["name"] == "therm-2" for d in j["added_devices"]))
        self.assertEqual(u["removed_devices"], [])
        r = self.run_kectl("delete", "device", "therm-2")
        self.assertEqual(r.returncode, 0, r.stderr)
        u = m.expect("$hw/events/node/%s/membership/updated" % NODE,
                     lambda j: any(d["name"] == "therm-2" for d in j["removed_devices"]))

    def test_2_bad_input_is_refused_and_changes_nothing(self):
        m = self.mapper
        now = int(time.time() * 1000)
        good = {"event_id": "e-ok", "timestamp": now,
                "twin": {"temp": {"actual": {"value": "30", "metadata": {"timestamp": now}}}}}
        m.publish(DEV + "therm-1/twin/update", good)
        m.expect(DEV + "therm-1/twin/update/result", lambda j: j["event_id"] == "e-ok")
        wait_for(lambda: (self.twin_row("temp") or [None] * 3)[2] == "30", "temp reported 30")
        before = self.run_kectl("twin", "get", "therm-1", "-o", "json").stdout

        def upd(temp, **extra):
            body = {"event_id": extra.pop("eid", "e-bad"), "timestamp": now,
                    "twin": {"temp": temp}}
            body.update(extra)
            return body

        cases = [
            # (topic, payload, reason label, result code, words in reason)
            ("therm-1/twin/update", "{not json", "malformed", 400, "JSON"),
            ("therm-1/twin/update", "[1,2]", "malformed", 400, "JSON object"),
            ("therm-1/twin/update", {"event_id": "e-bad", "twin": 5}, "malformed", 400, "twin"),
            ("therm-1/twin/update", upd({"actual": {"value": 31}}), "type", 400, "string"),
            ("therm-1/twin/update", upd({"actual": {"value": "warm"}}), "type", 400,
             "not a valid INT"),
            ("therm-1/twin/update", upd({"actual": {"value": "31",
                                                    "metadata": {"timestamp": "x"}}}),
             "type", 400, "timestamp"),
            ("nosuch/twin/update", upd({"actual": {"value": "1"}}), "unknown_device", 404,
             "not bound"),
            ("therm-1/twin/update", {"event_id": "e-bad", "twin": {
                "colour": {"actual": {"value": "red"}}}}, "unknown_property", 400, "colour"),
            ("therm-1/twin/update", {"event_id": "e-bad", "twin": {
                "humidity": {"expected": {"value": "50"}}}}, "read_only", 400, "ReadOnly"),
            ("therm-1/twin/update", upd({"expected": {"value": "50"}}), "desired", 400,
             "set in the cloud"),
            ("therm-1/twin/update", upd({"actual": {"value": "31",
                                                    "metadata": {"timestamp": now - 60000}}}),
             "stale", 409, "older"),
            ("therm-1/twin/update", upd({"actual": {"value": "x" * 600}}, eid="e-big"),
             "oversized", 413, "512"),
            ("therm-1/twin/update", "{" + " " * 70000 + "}", "oversized", 413, "payload"),
            ("therm-1/state/update", {"event_id": "e-bad", "state": "sleepy"}, "type", 400,
             "online, offline"),
            ("nosuch/twin/get", {"event_id": "e-bad"}, "unknown_device", 404, "not bound"),
        ]
        for topic, payload, reason, code, words in cases:
            with self.subTest(topic=topic, reason=reason, payload=str(payload)[:60]):
                n = self.refused(reason)
                m.publish(DEV + topic, payload)
                rt = DEV + topic + "/result"
                r = m.expect(rt, lambda j: "code" in j)
                self.assertEqual(r["code"], code)
                self.assertIn(words, r["reason"])
                self.assertIsInstance(r["timestamp"], int)
                wait_for(lambda: self.refused(reason) == n + 1, "refused{%s} + 1" % reason)
        # the cloud holds what it held: nothing refused got through
        after = self.run_kectl("twin", "get", "therm-1", "-o", "json").stdout
        self.assertEqual(json.loads(before), json.loads(after))
        # membership/get that is not JSON, a protobuf topic with bytes that
        # are no frame, and one over 64 KiB: refused and counted
        for topic, payload, reason in [
                ("$hw/events/node/%s/membership/get" % NODE, "{oops", "malformed"),
                ("ke/mapper/therm-1/up", b"\xff\xff\xff\xff not a frame", "malformed"),
                ("ke/mapper/therm-1/up", b"\x08" * 70000, "oversized")]:
            with self.subTest(topic=topic, reason=reason):
                n = self.refused(reason)
                m.publish(topic, payload)
                wait_for(lambda: self.refused(reason) == n + 1, "refused{%s} + 1" % reason)
        # a message on a topic no one answers is counted, not answered
        n = self.refused("topic")
        m.publish("ke/mapper/therm-1/sideways", b"x")
        m.publish("$hw/events/node/other-node/membership/get", "{}")
        self.assertEqual(self.refused("topic"), n)  # not subscribed: never reaches the edge
        # after all that, a good report still works
        later = now + 1000
        m.publish(DEV + "therm-1/twin/update", {
            "event_id": "e-after", "timestamp": later,
            "twin": {"temp": {"actual": {"value": "32", "metadata": {"timestamp": later}}}}})
        m.expect(DEV + "therm-1/twin/update/result", lambda j: j["event_id"] == "e-after")
        wait_for(lambda: (self.twin_row("temp") or [None] * 3)[2] == "32", "temp reported 32")


if __name__ == "__main__":
    unittest.main(verbosity=2)
