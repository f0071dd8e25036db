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
#   5. edgecore          EdgeHub + MetaManager + Edged: the node connects and resyncs
#   6. kectl             version, get nodes, ping; a killed edgecore comes back;
#                        a pod (with its ConfigMap and Secret) runs as a real
#                        container on edge-1, its status and logs come back; a
#                        device goes to edge-1, a desired value is set, and its
#                        reported value comes back (sent by tools/edgelocal.py
#                        where DeviceTwin will)
# The broker, DeviceTwin and a mapper join as they land.
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
  --grpc.listen=127.0.0.1:0 --http.listen=127.0.0.1:0 \
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

echo "==> Starting edgecore for edge-1"
mkfifo "$run/edge.ready"
"$bin/edge-agent/edgecore" --config "$run/edge-1/edgecore.yaml" --http.listen=127.0.0.1:0 \
  >"$run/edge.ready" 2>"$run/edgecore.log" &
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
  >"$run/edge2.ready" 2>>"$run/edgecore.log" &
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
echo "==> kectl twin set thermometer-1 target-temperature 21"
$kectl twin set thermometer-1 target-temperature 21 | sed 's/^/    /'
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
echo "==> The device reports back (what DeviceTwin will send through edgecore's outbox)"
$edgelocal report node/edge-1/default/Device/thermometer-1 1 twin \
  '{"twins":[{"propertyName":"temperature","reported":{"value":"19","metadata":{"timestamp":"'"$(date +%s)000"'"}}}],"state":"online"}' \
  | sed 's/^/    /'
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
i=0
until $kectl twin get thermometer-1 | grep -q "temperature .*19"; do
  i=$((i + 1)); [ $i -lt 100 ] || { echo "the reported value did not come back"; exit 1; }
  sleep 0.1
done
echo "==> kectl twin get thermometer-1"
$kectl twin get thermometer-1 | sed 's/^/    /'
echo "==> kectl get devices"
$kectl get devices | sed 's/^/    /'

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
