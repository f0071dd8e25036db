#!/bin/sh
# tools/quickstart.sh — the main job: bring up kubeedge-c on this machine.
#
# What exists so far, end to end on loopback:
#   1. keadm init        a cluster CA, CloudHub's certificate, an admin
#                        certificate and the join-token secret
#   2. cloudcore         CloudHub (mutual TLS), Diagnostics, /metrics, /healthz
#   3. keadm join        an edge node gets its certificate with a token
#   4. edgecore          EdgeHub + MetaManager: the node connects and resyncs
#   5. kectl             version, ping, get nodes; a report flows upstream
#      and the node survives a cut link and a killed edgecore
# Later parts (pods, devices, broker, mapper) join this script as they land.
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
cleanup() { for p in $pids; do kill "$p" 2>/dev/null || true; done; }
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

echo "==> keadm gettoken, then keadm join --node-name edge-1"
token=$("$bin/tools/keadm" gettoken --dir "$run/cloud")
"$bin/tools/keadm" join --cloudhub "127.0.0.1:$grpc" --token "$token" --node-name edge-1 \
  --dir "$run/edge-1" | sed 's/^/    /'

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
until $kectl get nodes | grep -q 'edge-1 *Connected'; do
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
until grep -q "resync done" "$run/edgecore.log" && $kectl get nodes | grep -q 'edge-1 *Connected'; do
  i=$((i + 1)); [ $i -lt 100 ] || { echo "edge-1 did not come back"; exit 1; }
  sleep 0.1
done
$kectl get nodes | sed 's/^/    /'
echo "    edgecore log:"
grep -E "connected|resync done|tunnel closed" "$run/edgecore.log" | tail -4 | sed 's/^/      /'

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
