#!/bin/sh
# tools/quickstart.sh — the main job: bring up kubeedge-c on this machine.
#
# Today that is the cloud side as far as it exists: cloudcore with mutual
# TLS, its Diagnostics service, /healthz and /metrics, driven by kectl.
# Later parts (edge node, broker, mapper) join this script as they land.
#
#   tools/quickstart.sh          run the demo, then stop everything
#   tools/quickstart.sh --keep   leave cloudcore running until Ctrl-C
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
bin=build
run=build/quickstart
rm -rf "$run"
mkdir -p "$run"

echo "==> Making a throwaway PKI in $run/pki (CA, server and client certificates)"
tests/support/gen-certs.sh "$run/pki"

echo "==> Starting cloudcore with mutual TLS (config deploy/config/cloudcore.yaml, ports picked by flags)"
mkfifo "$run/ready"
"$bin/services/cloudcore/cloudcore" --config deploy/config/cloudcore.yaml \
  --grpc.listen=127.0.0.1:0 --http.listen=127.0.0.1:0 --cloudhub.enable=false \
  --grpc.tls.ca="$run/pki/ca1.crt" --grpc.tls.cert="$run/pki/server.crt" \
  --grpc.tls.key="$run/pki/server.key" >"$run/ready" 2>"$run/cloudcore.log" &
cc=$!
trap 'kill $cc 2>/dev/null || true' EXIT INT TERM
read -r line <"$run/ready" || { echo "cloudcore did not start:"; cat "$run/cloudcore.log"; exit 1; }
grpc=$(echo "$line" | sed -n 's/.*grpc=\([0-9]*\).*/\1/p')
http=$(echo "$line" | sed -n 's/.*http=\([0-9]*\).*/\1/p')
echo "    cloudcore pid $cc: gRPC on localhost:$grpc, HTTP on 127.0.0.1:$http (log: $run/cloudcore.log)"

kectl="$bin/tools/kectl --server localhost:$grpc --ca $run/pki/ca1.crt"
echo "==> kectl version (client certificate CN=edge-1)"
$kectl --cert "$run/pki/client1.crt" --key "$run/pki/client1.key" version
echo "==> kectl ping -n 1000"
$kectl --cert "$run/pki/client1.crt" --key "$run/pki/client1.key" ping -n 1000
echo "==> A client with a certificate from another CA is refused:"
if $kectl --cert "$run/pki/client2.crt" --key "$run/pki/client2.key" version; then
  echo "    unexpected: it was served"; exit 1
fi
echo "==> GET /healthz"
curl -s "http://127.0.0.1:$http/healthz"; echo
echo "==> GET /metrics (rpc series)"
curl -s "http://127.0.0.1:$http/metrics" | grep '^ke_rpc_server_calls_total'

if [ $keep -eq 1 ]; then
  echo "==> cloudcore keeps running (pid $cc); Ctrl-C stops it"
  wait $cc
else
  echo "==> Stopping cloudcore"
  kill $cc
  wait $cc
  trap - EXIT INT TERM
  echo "==> Done. Run with --keep to leave it running."
fi
