#!/usr/bin/python3
"""Interop: a Python client drives devices through DeviceController.

A whole cluster on loopback, started here: keadm init, cloudcore, keadm
join, edgecore. The client (python3-grpcio, stubs generated now from
api/*.proto) creates a DeviceModel and a Device, sets a desired value and
sees the edge's store receive it; the edge then reports a value upstream
(EdgeLocal.Report, as the DeviceTwin module will) and the client sees it
arrive through WatchTwins and GetTwin. Bad desired values are refused.
"""
import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
from kecluster import wait_for  # noqa: E402

SRC = os.environ.get("KE_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
BIN = os.environ.get("KE_BIN_DIR")


def generate_stubs(out):
    os.makedirs(out, exist_ok=True)
    api = os.path.join(SRC, "api")
    protos = [os.path.join(api, p) for p in sorted(os.listdir(api)) if p.endswith(".proto")]
    subprocess.run(["protoc", "-I" + api, "--python_out=" + out, "--grpc_python_out=" + out,
                    "--plugin=protoc-gen-grpc_python=/usr/bin/grpc_python_plugin"] + protos,
                   check=True)
    sys.path.insert(0, out)


class DeviceInterop(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if not BIN:
            raise unittest.SkipTest("KE_BIN_DIR not set: run through ctest")
        cls.tmp = tempfile.mkdtemp(prefix="ke-pydev-")
        generate_stubs(os.path.join(cls.tmp, "stubs"))
        global grpc, ecp, ecg, dcp, dcg, ep, eg, mp
        import grpc
        import devicecontroller_pb2 as dcp
        import devicecontroller_pb2_grpc as dcg
        import edge_pb2 as ep
        import edge_pb2_grpc as eg
        import edgecontroller_pb2 as ecp
        import edgecontroller_pb2_grpc as ecg
        import message_pb2 as mp
        keadm = os.path.join(BIN, "tools", "keadm")
        cloud = os.path.join(cls.tmp, "cloud")
        edge = os.path.join(cls.tmp, "edge-1")
        subprocess.run([keadm, "init", "--dir", cloud], check=True, stdout=subprocess.DEVNULL)
        cls.cloud = subprocess.Popen(
            [os.path.join(BIN, "services", "cloudcore", "cloudcore"), "--config",
             os.path.join(cloud, "cloudcore.yaml"), "--grpc.listen=127.0.0.1:0",
             "--http.listen=127.0.0.1:0", "--kubeapi.listen=127.0.0.1:0"],
            stdout=subprocess.PIPE, stderr=open(os.path.join(cls.tmp, "cloudcore.log"), "w"),
            text=True)
        line = cls.cloud.stdout.readline()
        port = dict(kv.split("=") for kv in line.split()[1:])["grpc"]
        token = subprocess.run([keadm, "gettoken", "--dir", cloud], check=True,
                               capture_output=True, text=True).stdout.strip()
        subprocess.run([keadm, "join", "--cloudhub", "127.0.0.1:" + port, "--token", token,
                        "--node-name", "edge-1", "--dir", edge], check=True,
                       stdout=subprocess.DEVNULL)
        cls.edge = subprocess.Popen(
            [os.path.join(BIN, "edge-agent", "edgecore"), "--config",
             os.path.join(edge, "edgecore.yaml"), "--http.listen="],
            stdout=subprocess.PIPE, stderr=open(os.path.join(cls.tmp, "edgecore.log"), "w"),
            text=True)
        assert cls.edge.stdout.readline().startswith("ready ")
        creds = grpc.ssl_channel_credentials(
            open(os.path.join(cloud, "ca.crt"), "rb").read(),
            open(os.path.join(cloud, "admin.key"), "rb").read(),
            open(os.path.join(cloud, "admin.crt"), "rb").read())
        cls.channel = grpc.secure_channel("localhost:" + port, creds)
        cls.ec = ecg.EdgeControllerStub(cls.channel)
        cls.dc = dcg.DeviceControllerStub(cls.channel)
        cls.local_channel = grpc.insecure_channel("unix:" + os.path.join(edge, "edgecore.sock"))
        cls.local = eg.EdgeLocalStub(cls.local_channel)
        wait_for(lambda: cls.node_ready(), "edge-1 Ready")

    @classmethod
    def node_ready(cls):
        try:
            node = json.loads(cls.ec.Get(ecp.ObjectRef(kind="Node", name="edge-1")).object_json)
        except grpc.RpcError:
            return False
        return any(c["type"] == "Ready" and c["status"] == "True"
                   for c in node.get("status", {}).get("conditions", []))

    @classmethod
    def tearDownClass(cls):
        cls.channel.close()
        cls.local_channel.close()
        for p in (cls.edge, cls.cloud):
            p.terminate()
            assert p.wait(timeout=15) == 0
        if not os.environ.get("KE_KEEP_TMP"):
            shutil.rmtree(cls.tmp)

    def apply(self, obj):
        return json.loads(self.ec.Apply(ecp.ApplyRequest(object_json=json.dumps(obj).encode()))
                          .object_json)

    def edge_device(self):
        try:
            return json.loads(self.local.Get(
                ep.EdgeGetRequest(key="node/edge-1/default/Device/therm-1")).content)
        except grpc.RpcError:
            return None

    def test_desired_goes_down_and_reported_comes_back(self):
        self.apply({"apiVersion": "devices.kubeedge.io/v1beta1", "kind": "DeviceModel",
                    "metadata": {"name": "thermometer"},
                    "spec": {"properties": [
                        {"name": "temp", "type": "INT", "accessMode": "ReadWrite"},
                        {"name": "humidity", "type": "FLOAT", "accessMode": "ReadOnly"}]}})
        self.apply({"apiVersion": "devices.kubeedge.io/v1beta1", "kind": "Device",
                    "metadata": {"name": "therm-1"},
                    "spec": {"deviceModelRef": {"name": "thermometer"}, "nodeName": "edge-1",
                             "protocol": {"protocolName": "modbus"},
                             "properties": [{"name": "temp"}]}})
        wait_for(self.edge_device, "the device at the edge")
        self.assertIsNotNone(self.local.Get(
            ep.EdgeGetRequest(key="node/edge-1/default/DeviceModel/thermometer")))

        # Watch first; a desired change we make proves the watch is live.
        events = queue.Queue()
        stream = self.dc.WatchTwins(dcp.WatchTwinsRequest(namespace="default", name="therm-1"))
        threading.Thread(target=lambda: [events.put(e) for e in stream], daemon=True).start()

        # The server registers the watch at some point after the call
        # starts: until an event shows it is live, set the value again (each
        # SetDesired is a new desired version, so a live watch sees one).
        deadline = time.monotonic() + 30
        ev = None
        while ev is None and time.monotonic() < deadline:
            twin = self.dc.SetDesired(dcp.SetDesiredRequest(
                device=dcp.DeviceRef(namespace="default", name="therm-1"),
                property="temp", value="25"))
            self.assertEqual(twin.desired.value, "25")
            self.assertGreater(twin.desired.timestamp_ms, 0)
            try:
                ev = events.get(timeout=1)
            except queue.Empty:
                pass
        self.assertIsNotNone(ev, "no twin event on the watch within 30 s")
        self.assertEqual((ev.twin.property, ev.twin.desired.value), ("temp", "25"))

        # The edge's store receives the desired value.
        def desired_at_edge():
            d = self.edge_device()
            props = (d or {}).get("spec", {}).get("properties", [])
            return any(p.get("desired", {}).get("value") == "25" for p in props)
        wait_for(desired_at_edge, "desired value 25 at the edge")

        # The edge reports what the device read; it reaches the client.
        report = {"twins": [{"propertyName": "temp",
                             "reported": {"value": "24",
                                          "metadata": {"timestamp": str(int(time.time() * 1000))}}}],
                  "state": "online"}
        self.local.Report(ep.ReportRequest(message=mp.Message(
            header=mp.MessageHeader(resource_version=1),
            route=mp.Route(source="devicetwin", group="twin", operation=mp.OPERATION_UPDATE,
                           resource="node/edge-1/default/Device/therm-1"),
            content=json.dumps(report).encode())))
        while True:
            ev = events.get(timeout=30)
            if ev.twin.HasField("reported"):
                break
        self.assertEqual(ev.twin.property, "temp")
        self.assertEqual(ev.twin.reported.value, "24")
        self.assertEqual(ev.state, dcp.DEVICE_STATE_ONLINE)
        stream.cancel()

        got = self.dc.GetTwin(dcp.DeviceRef(namespace="default", name="therm-1"))
        temp = [t for t in got.twins if t.property == "temp"][0]
        self.assertEqual((temp.desired.value, temp.reported.value), ("25", "24"))
        self.assertEqual(got.state, dcp.DEVICE_STATE_ONLINE)

    def test_bad_desired_values_are_refused(self):
        self.apply({"apiVersion": "devices.kubeedge.io/v1beta1", "kind": "DeviceModel",
                    "metadata": {"name": "valve"},
                    "spec": {"properties": [
                        {"name": "open", "type": "BOOLEAN", "accessMode": "ReadWrite"},
                        {"name": "flow", "type": "FLOAT", "accessMode": "ReadOnly"}]}})
        self.apply({"apiVersion": "devices.kubeedge.io/v1beta1", "kind": "Device",
                    "metadata": {"name": "valve-1"},
                    "spec": {"deviceModelRef": {"name": "valve"}, "nodeName": "edge-1"}})
        ref = dcp.DeviceRef(namespace="default", name="valve-1")
        for prop, value, code, words in [
                ("open", "maybe", grpc.StatusCode.INVALID_ARGUMENT, "not a valid BOOLEAN"),
                ("flow", "1.5", grpc.StatusCode.FAILED_PRECONDITION, "ReadOnly"),
                ("colour", "red", grpc.StatusCode.NOT_FOUND, "no property")]:
            with self.assertRaises(grpc.RpcError) as cm:
                self.dc.SetDesired(dcp.SetDesiredRequest(device=ref, property=prop, value=value))
            self.assertEqual(cm.exception.code(), code)
            self.assertIn(words, cm.exception.details())
        with self.assertRaises(grpc.RpcError) as cm:
            self.dc.SetDesired(dcp.SetDesiredRequest(
                device=dcp.DeviceRef(namespace="default", name="nope"), property="open",
                value="true"))
        self.assertEqual(cm.exception.code(), grpc.StatusCode.NOT_FOUND)
        # nothing was written: no desired value on the device
        dev = json.loads(self.dc.GetDevice(ref).object_json)
        self.assertFalse(any("desired" in p for p in dev["spec"].get("properties", [])))


if __name__ == "__main__":
    unittest.main(verbosity=2)
