#!/usr/bin/python3
"""tools/json_mapper.py — a small mapper that speaks KubeEdge's JSON topics.

What a KubeEdge mapper does for one device, with no hardware behind it:
it asks DeviceTwin for the device's twin ($hw/events/device/<id>/twin/get)
until the device is bound to the node, says it is online (state/update),
"writes" every desired value it is told about (twin/get/result,
twin/update/delta) and reports the value it reads back as actual
(twin/update), and reports a simulated reading of a read-only property
every --interval seconds. tools/quickstart.sh runs it
against the private broker that edgecore's EventBus uses.

  json_mapper.py --broker 127.0.0.1:1883 --device thermometer-1 \
                 --reading temperature=19

Needs python3-paho-mqtt (tools/deps.sh installs it). Stops on SIGTERM.
"""
import argparse
import json
import signal
import sys
import threading
import time

import paho.mqtt.client as mqtt

TOPIC = "$hw/events/device/%s/%s"


def now_ms():
    return int(time.time() * 1000)


class JsonMapper:
    def __init__(self, args):
        self.dev = args.device
        self.reading = None
        if args.reading:
            name, _, value = args.reading.partition("=")
            self.reading = (name, value)
        self.interval = args.interval
        self.bound = threading.Event()
        self.stop = threading.Event()
        self.last_ts = 0
        self.written = {}  # property -> value "written" to the device
        self.c = mqtt.Client(client_id="json-mapper-" + self.dev, clean_session=True)
        self.c.on_connect = self.on_connect
        self.c.on_message = self.on_message
        host, _, port = args.broker.rpartition(":")
        self.c.connect(host, int(port))

    def topic(self, what):
        return TOPIC % (self.dev, what)

    def log(self, text):
        print("json_mapper: " + text, flush=True)

    def publish(self, what, body):
        info = self.c.publish(self.topic(what), json.dumps(body), qos=1)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            self.log("publish %s failed: %s" % (what, mqtt.error_string(info.rc)))

    def ts(self):
        # every reading is newer than the last one (DeviceTwin refuses older ones)
        self.last_ts = max(now_ms(), self.last_ts + 1)
        return self.last_ts

    def on_connect(self, c, userdata, flags, rc):
        if rc != 0:
            self.log("broker refused the connection: %s" % mqtt.connack_string(rc))
            return
        for what in ("twin/update/delta", "twin/get/result", "twin/update/result",
                     "state/update/result"):
            c.subscribe(self.topic(what), qos=1)
        self.log("connected; subscribed to %s" % self.topic("twin/update/delta"))

    def report(self, values):
        ts = self.ts()
        twin = {p: {"actual": {"value": v, "metadata": {"timestamp": ts}}}
                for p, v in values.items()}
        self.publish("twin/update", {"event_id": "r%d" % ts, "timestamp": ts, "twin": twin})

    def write(self, desired):
        """'Writes' desired values to the device and reports what it reads back."""
        changed = {p: v for p, v in desired.items() if self.written.get(p) != v}
        if not changed:
            return
        for p, v in changed.items():
            self.log("set %s=%s on %s; reporting it as actual" % (p, v, self.dev))
            self.written[p] = v
        self.report(changed)

    def on_message(self, c, userdata, msg):
        try:
            j = json.loads(msg.payload)
        except ValueError:
            self.log("not JSON on %s" % msg.topic)
            return
        if msg.topic.endswith("/twin/get/result"):
            if "code" in j:
                return  # not bound to the node yet: asked again
            if not self.bound.is_set():
                self.log("%s is bound to this node; it is online" % self.dev)
                self.publish("state/update", {"event_id": "online", "timestamp": now_ms(),
                                              "state": "online"})
                self.bound.set()
            desired = {p: t["expected"]["value"] for p, t in j.get("twin", {}).items()
                       if isinstance(t, dict) and "value" in t.get("expected", {})}
            self.write(desired)
        elif msg.topic.endswith("/twin/update/delta"):
            self.write(j.get("delta", {}))
        elif msg.topic.endswith("/update/result") and "code" in j:
            self.log("refused: %s %s" % (j["code"], j.get("reason", "")))

    def run(self):
        self.c.loop_start()
        try:
            while not self.stop.is_set() and not self.bound.is_set():
                self.publish("twin/get", {"event_id": "get", "timestamp": now_ms()})
                self.stop.wait(1)
            while not self.stop.is_set():
                if self.reading:
                    self.report({self.reading[0]: self.reading[1]})
                self.stop.wait(self.interval)
        finally:
            self.c.loop_stop()
            self.c.disconnect()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--broker", default="127.0.0.1:1883", help="host:port of the MQTT broker")
    ap.add_argument("--device", required=True, help="the device's name (or namespace/name)")
    ap.add_argument("--reading", help="PROPERTY=VALUE: a read-only property to report")
    ap.add_argument("--interval", type=float, default=5.0,
                    help="seconds between readings (default 5)")
    args = ap.parse_args()
    try:
        m = JsonMapper(args)
    except OSError as e:
        print("json_mapper: cannot connect to %s: %s" % (args.broker, e), file=sys.stderr)
        return 1
    signal.signal(signal.SIGTERM, lambda *_: m.stop.set())
    signal.signal(signal.SIGINT, lambda *_: m.stop.set())
    m.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
