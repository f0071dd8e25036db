#!/bin/sh
# tools/test.sh — build kubeedge-c and run every test.
#
#   tools/test.sh              warnings-as-errors build in build/, all tests
#   tools/test.sh --sanitize   the same with ASan+UBSan, in build-asan/
#   tools/test.sh --tsan       ThreadSanitizer build in build-tsan/: the edge
#                              tests (edgecore's loop, its rpc hand-over, Edged
#                              and its runtime calls, log streams, ServiceBus, the tunnel),
#                              where threads meet
#
# Installs missing Debian packages first (tools/deps.sh). Exits non-zero if
# the build or any test fails.
set -eu
cd "$(dirname "$0")/.."
. tools/deps.sh

build=build
sanitize=OFF
tsan=OFF
only=""
targets=""
case "${1:-}" in
  --sanitize) build=build-asan; sanitize=ON
              # memory errors, not scale: shorter churn in test_hub_delivery
              export KE_CHURN_CYCLES=${KE_CHURN_CYCLES:-20000} ;;
  --tsan) build=build-tsan; tsan=ON
          # the programs these tests run, and the tests themselves
          targets="edgecore cloudcore keadm kectl test_edge_store test_edge_bus test_edgehub_digest
                   test_clock_step test_edge_module test_edge_runtime test_edged test_logs
                   test_devicetwin test_eventbus test_eventbus_broker test_servicebus test_tunnel_loss test_tunnel_overflow
                   test_tunnel_refusals test_tunnel_admission test_hub_delivery"
          only='unit/test_edge|unit/test_clock_step|integration/test_edge|integration/test_logs|integration/test_devicetwin|integration/test_eventbus|integration/test_servicebus|integration/test_tunnel|integration/test_hub_delivery|integration/test_metaserver|module_includes'
          export TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 suppressions=$PWD/tests/tsan.supp" ;;
  "") ;;
  *) echo "usage: tools/test.sh [--sanitize | --tsan]" >&2; exit 2 ;;
esac

ke_install_deps
ke_unpack_kubectl_120
jobs=$(nproc 2>/dev/null || echo 2)
echo "==> Configuring $build/ (KE_SANITIZE=$sanitize KE_TSAN=$tsan)"
cmake -S . -B "$build" -DKE_SANITIZE=$sanitize -DKE_TSAN=$tsan -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
echo "==> Building with -Wall -Wextra -Werror ($jobs jobs)"
if [ -n "${targets:-}" ]; then
  # shellcheck disable=SC2086 # a list of target names
  cmake --build "$build" -j "$jobs" --target $targets
else
  cmake --build "$build" -j "$jobs"
fi
echo "==> Running the tests (unit, integration, interop)"
cd "$build"
if [ -n "$only" ]; then
  ctest --output-on-failure -j "$jobs" -R "$only"
else
  ctest --output-on-failure -j "$jobs"
fi
echo "==> All tests passed ($build/)"
