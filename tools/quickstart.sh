#!/bin/sh
# tools/quickstart.sh — the main job: bring up kubeedge-c on this machine.
#
# What exists so far, end to end on loopback:
#   1. keadm init        a cluster CA, CloudHub's certificate, an admin
#                        certificate and the join-token secret
#   2. cloudcore         CloudHub (mutual TLS), EdgeController,
#                        DeviceController, the store, /metrics, /healthz
#   3. keadm join        an edge node gets its certificate with a token
#   4. containerd        a private one under build/quickstart/containerd (root
#                        needed), with the busybox and pause images built here
#   5. mosquitto         a private broker on a free loopback port, its own
#                        config in build/quickstart
#   6. edgecore          EdgeHub + MetaManager + Edged + EventBus (on that
#                        broker) + DeviceTwin: the node connects and resyncs
#   7. kectl             version, get nodes, ping; a killed edgecore comes back;
#                        a pod (with its ConfigMap and Secret) runs as a real
#                        container on edge-1, its status and logs come back
#   8. a mapper          tools/json_mapper.py speaks KubeEdge's JSON topics for
#                        device thermometer-1: `kectl twin set` reaches it as a
#                        delta, and the value it reports back, with its
#                        reading, shows in `kectl twin get`
#   9. an emulated MCU   when qemu-system-arm and the firmware images are
#                        there: the virtual-sensor firmware in QEMU
#                        (lm3s6965evb), its UART wired to DeviceTwin by
#                        ke-mapper-bridge; its readings and the setpoint
#                        set from the cloud show in `kectl twin get`
#
#   tools/quickstart.sh          run the demo, then stop everything
#   tools/quickstart.sh --keep   leave cloudcore and edgecore running until Ctrl-C
#
# Installs missing Debian packages (tools/deps.sh) and builds into build/.
set -eu
cd "$(dirname "$0")/.."
. tools/deps.sh
keep=0
[ "${1:-}" = "--keep" ] && keep=1

ke_install_deps
echo "==> Building into build/"
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j "$(nproc)" >/dev/null
bin=$(pwd)/build
run=$(pwd)/build/quickstart
rm -rf "$run"
mkdir -p "$run"
pids=""
containers=0
cleanup() {
  for p in $pids; do kill "$p" 2>/dev/null || true; done
  if [ $containers -eq 1 ]; then
    sleep 1 # edgecore stopping; the pods' containers go with containerd's
    tools/images/containerd.sh --stop "$run/containerd" || true
  fi
}
trap cleanup EXIT INT TERM

# wait_ready FIFO: prints the first line a program writes to FIFO
wait_ready() { read -r line <"$1" && echo "$line"; }

echo "==> keadm init --dir $run/cloud"
"$bin/tools/keadm" init --dir "$run/cloud" | sed 's/^/    /'

echo "==> Starting cloudcore (CloudHub with mutual TLS) on a free port"
mkfifo "$run/cloud.ready"
"$bin/services/cloudcore/cloudcore" --config "$run/cloud/cloudcore.yaml" \
  --grpc.listen=127.0.0.1:0 --http.listen=127.0.0.1:0 --kubeapi.listen=127.0.0.1:0 \
  >"$run/cloud.ready" 2>"$run/cloudcore.log" &
pids="$pids $!"
line=$(wait_ready "$run/cloud.ready") || { cat "$run/cloudcore.log"; exit 1; }
grpc=$(echo "$line" | sed -n 's/.*grpc=\([0-9]*\).*/\1/p')
http=$(echo "$line" | sed -n 's/.*http=\([0-9]*\).*/\1/p')
echo "    cloudcore: gRPC 127.0.0.1:$grpc, HTTP 127.0.0.1:$http (log $run/cloudcore.log)"

if [ "$(id -u)" -eq 0 ] && command -v containerd >/dev/null && command -v runc >/dev/null; then
  echo "==> Starting a private containerd under $run/containerd (images built locally, no registry)"
  KE_IMAGE_CACHE="$bin/test-images" tools/images/containerd.sh "$run/containerd" | sed 's/^/    /'
  containers=1
else
  echo "==> No containers: Edged needs root, containerd and runc (tools/deps.sh installs them);"
  echo "    the pod's status is reported by tools/edgelocal.py instead"
fi

echo "==> keadm gettoken, then keadm join --node-name edge-1"
token=$("$bin/tools/keadm" gettoken --dir "$run/cloud")
"$bin/tools/keadm" join --cloudhub "127.0.0.1:$grpc" --token "$token" --node-name edge-1 \
  --dir "$run/edge-1" --runtime-endpoint "$run/containerd/containerd.sock" | sed 's/^/    /'

echo "==> Starting a private mosquitto (its own config in $run, a free loopback port)"
mqtt=$(/usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
printf 'listener %s 127.0.0.1\nallow_anonymous true\n' "$mqtt" >"$run/mosquitto.conf"
/usr/sbin/mosquitto -c "$run/mosquitto.conf" 2>"$run/mosquitto.log" &
pids="$pids $!"
i=0
until mosquitto_pub -h 127.0.0.1 -p "$mqtt" -t ke/quickstart/hello -m hello 2>/dev/null; do
  i=$((i + 1)); [ $i -lt 100 ] || { echo "mosquitto did not start"; cat "$run/mosquitto.log"; exit 1; }
  sleep 0.1
done
echo "    mosquitto: 127.0.0.1:$mqtt (log $run/mosquitto.log)"

echo "==> Starting edgecore for edge-1 (EventBus and DeviceTwin on 127.0.0.1:$mqtt)"
mkfifo "$run/edge.ready"
"$bin/edge-agent/edgecore" --config "$run/edge-1/edgecore.yaml" --http.listen=127.0.0.1:0 \
  --eventbus.broker="127.0.0.1:$mqtt" >"$run/edge.ready" 2>"$run/edgecore.log" &
edge=$!
pids="$pids $edge"
wait_ready "$run/edge.ready" >/dev/null || { cat "$run/edgecore.log"; exit 1; }

kectl="$bin/tools/kectl --server 127.0.0.1:$grpc --ca $run/cloud/ca.crt --cert $run/cloud/admin.crt --key $run/cloud/admin.key"
echo "==> kectl version"
$kectl version | sed 's/^/    /'
echo "==> kectl get nodes (waiting for edge-1 to connect)"
i=0
until $kectl get nodes | grep -q 'edge-1 *Ready'; do
  i=$((i + 1)); [ $i -lt 100 ] || { echo "edge-1 did not connect"; cat "$run/edgecore.log"; exit 1; }
  sleep 0.1
done
$kectl get nodes | sed 's/^/    /'
echo "==> kectl ping -n 1000 (mutual TLS, as system:admin)"
$kectl ping -n 1000 | sed 's/^/    /'

echo "==> Killing edgecore with SIGKILL and starting it again: it resyncs from its SQLite store"
kill -9 $edge; wait $edge 2>/dev/null || true
mkfifo "$run/edge2.ready"
"$bin/edge-agent/edgecore" --config "$run/edge-1/edgecore.yaml" --http.listen=127.0.0.1:0 \
  --eventbus.broker="127.0.0.1:$mqtt" >"$run/edge2.ready" 2>>"$run/edgecore.log" &
pids="$pids $!"
wait_ready "$run/edge2.ready" >/dev/null
i=0
until grep -q "resync done" "$run/edgecore.log" && $kectl get nodes | grep -q 'edge-1 *Ready'; do
  i=$((i + 1)); [ $i -lt 100 ] || { echo "edge-1 did not come back"; exit 1; }
  sleep 0.1
done
$kectl get nodes | sed 's/^/    /'
echo "    edgecore log:"
grep -E "connected|resync done|tunnel closed" "$run/edgecore.log" | tail -4 | sed 's/^/      /'

edgelocal="/usr/bin/python3 tools/edgelocal.py --socket $run/edge-1/edgecore.sock"
echo "==> kectl apply -f deploy/examples/web.yaml (a pod for edge-1 with its ConfigMap and Secret)"
$kectl apply -f deploy/examples/web.yaml | sed 's/^/    /'
echo "==> kectl apply -f deploy/examples/thermometer.yaml (a device model and a device on edge-1)"
$kectl apply -f deploy/examples/thermometer.yaml | sed 's/^/    /'
echo "==> What edge-1 now holds (edgecore's store, read through its local API)"
i=0
until $edgelocal list | grep -q "Device/thermometer-1"; do
  i=$((i + 1)); [ $i -lt 100 ] || { echo "the objects did not reach edge-1"; exit 1; }
  sleep 0.1
done
$edgelocal list | sed 's/^/    /'
if [ $containers -eq 0 ]; then
  echo "==> The edge reports the pod's status (what Edged sends through edgecore's outbox)"
  $edgelocal report node/edge-1/default/Pod/web 1 podstatus \
    '{"phase":"Running","podIP":"127.0.0.1","conditions":[{"type":"Ready","status":"True"}],"containerStatuses":[{"name":"web","ready":true,"restartCount":0}]}' \
    | sed 's/^/    /'
fi
i=0
until $kectl get pods -o wide | grep -q "web .*1/1 *Running"; do
  i=$((i + 1)); [ $i -lt 300 ] || { echo "pod status did not come back"; $kectl describe pod web; exit 1; }
  sleep 0.1
done
echo "==> kectl get pods -o wide"
$kectl get pods -o wide | sed 's/^/    /'
if [ $containers -eq 1 ]; then
  echo "==> kectl logs web (read on edge-1, through the tunnel)"
  $kectl logs web | sed 's/^/    /'
  echo "==> curl http://127.0.0.1:8080/ (the container, on the host's network)"
  curl -s http://127.0.0.1:8080/index.html | sed 's/^/    /'
fi

echo "==> Starting a mapper for thermometer-1 (tools/json_mapper.py: KubeEdge's JSON topics on 127.0.0.1:$mqtt)"
/usr/bin/python3 tools/json_mapper.py --broker "127.0.0.1:$mqtt" --device thermometer-1 \
  --reading temperature=19 --interval 2 >"$run/mapper.log" 2>&1 &
pids="$pids $!"
# twin_reported PROPERTY VALUE: kectl twin get shows VALUE as PROPERTY's reported value
twin_reported() { $kectl twin get thermometer-1 | awk -v p="$1" -v v="$2" '$1 == p && $3 == v { f = 1 } END { exit !f }'; }
i=0
until twin_reported temperature 19; do
  i=$((i + 1)); [ $i -lt 300 ] || { echo "the mapper's reading did not come back"; cat "$run/mapper.log"; exit 1; }
  [ $((i % 20)) -ne 0 ] || echo "    waiting for the mapper's first reading ($((i / 10)) s)"
  sleep 0.1
done
echo "==> kectl twin set thermometer-1 target-temperature 22 (the cloud's desired value)"
$kectl twin set thermometer-1 target-temperature 22 | sed 's/^/    /'
echo "==> Waiting until the mapper has set it and reported it back"
i=0
until twin_reported target-temperature 22; do
  i=$((i + 1)); [ $i -lt 300 ] || { echo "the desired value did not come back as reported"; cat "$run/mapper.log"; exit 1; }
  [ $((i % 10)) -ne 0 ] || echo "    target-temperature not reported as 22 yet ($((i / 10)) s)"
  sleep 0.1
done
echo "==> The mapper's log"
sed 's/^/    /' "$run/mapper.log"
echo "==> kectl twin get thermometer-1"
$kectl twin get thermometer-1 | sed 's/^/    /'
echo "==> kectl get devices"
$kectl get devices | sed 's/^/    /'

elf="$bin/firmware/lm3s6965evb/virtual-sensor.elf"
if command -v qemu-system-arm >/dev/null && [ -f "$elf" ]; then
  echo "==> kectl apply -f deploy/examples/virtual-sensor.yaml (device vsensor-1 on edge-1)"
  $kectl apply -f deploy/examples/virtual-sensor.yaml | sed 's/^/    /'
  uart=$(/usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  echo "==> Starting the virtual-sensor firmware in QEMU (lm3s6965evb, UART on tcp:127.0.0.1:$uart)"
  qemu-system-arm -M lm3s6965evb -nographic -monitor none -kernel "$elf" \
    -semihosting-config enable=on,target=native \
    -serial "tcp:127.0.0.1:$uart,server=on,wait=on,nodelay=on" \
    </dev/null >/dev/null 2>"$run/qemu.log" &
  pids="$pids $!"
  echo "==> Starting ke-mapper-bridge (vsensor-1=tcp:127.0.0.1:$uart <-> 127.0.0.1:$mqtt)"
  "$bin/mappers/bridge/ke-mapper-bridge" --broker "127.0.0.1:$mqtt" \
    --line "vsensor-1=tcp:127.0.0.1:$uart" >/dev/null 2>"$run/bridge.log" &
  pids="$pids $!"
  vs_reported() { $kectl twin get vsensor-1 2>/dev/null | awk -v p="$1" -v v="$2" '$1 == p && (v == "" ? $3 != "" : $3 == v) { f = 1 } END { exit !f }'; }
  i=0
  until vs_reported count ""; do
    i=$((i + 1)); [ $i -lt 300 ] || { echo "the emulated sensor's readings did not arrive"; cat "$run/bridge.log"; exit 1; }
    sleep 0.1
  done
  echo "==> kectl twin set vsensor-1 setpoint 30 (the emulated MCU applies it and reports it back)"
  $kectl twin set vsensor-1 setpoint 30 | sed 's/^/    /'
  i=0
  until vs_reported setpoint 30; do
    i=$((i + 1)); [ $i -lt 300 ] || { echo "the setpoint did not come back as reported"; cat "$run/bridge.log"; exit 1; }
    sleep 0.1
  done
  i=0 # a few readings more, so the drift toward 30 shows
  until $kectl twin get vsensor-1 | awk '$1 == "count" && $3 + 0 >= 4 { f = 1 } END { exit !f }'; do
    i=$((i + 1)); [ $i -lt 300 ] || { echo "the emulated sensor stopped reporting"; cat "$run/bridge.log"; exit 1; }
    sleep 0.1
  done
  echo "==> kectl twin get vsensor-1 (the temperature drifts toward the setpoint)"
  $kectl twin get vsensor-1 | sed 's/^/    /'
else
  echo "==> (no qemu-system-arm or no firmware images: the emulated sensor is skipped)"
fi

echo "==> CloudHub metrics"
curl -s "http://127.0.0.1:$http/metrics" | grep -E '^ke_cloudhub_(nodes|resyncs|joins)' | sed 's/^/    /'

if [ $keep -eq 1 ]; then
  echo "==> Running; Ctrl-C stops cloudcore and edgecore"
  wait
else
  echo "==> Stopping"
  cleanup
  wait 2>/dev/null || true
  trap - EXIT INT TERM
  echo "==> Done. Run with --keep to leave everything running."
fi
