#!/bin/sh
# tools/deps.sh — installs the Debian 12 packages kubeedge-c builds and
# tests with, when any is missing. Sourced by quickstart.sh and test.sh;
# run it alone to prepare a machine. Needs root (or sudo) only when
# something has to be installed.
set -eu

KE_DEB_PACKAGES="build-essential cmake pkg-config
  libgrpc-dev protobuf-compiler protobuf-compiler-grpc
  protobuf-c-compiler libprotobuf-c-dev nanopb libnanopb-dev
  libsqlite3-dev libssl-dev openssl libyaml-dev libjansson-dev libmicrohttpd-dev libuv1-dev
  libgnutls28-dev python3-kubernetes
  libcurl4-openssl-dev libnghttp2-dev
  libcmocka-dev python3 python3-grpcio python3-protobuf curl
  containerd runc busybox-static containernetworking-plugins umoci
  mosquitto libmosquitto-dev mosquitto-clients python3-paho-mqtt libmodbus-dev
  gcc-arm-none-eabi binutils-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm dpkg-dev"

# Firmware compiles nanopb's C sources, fetched with `apt-get source nanopb`
# (mappers/boards/fetch_nanopb.sh): that needs a deb-src entry for Debian.
KE_DEBIAN_SOURCES=/etc/apt/sources.list.d/debian.sources

ke_install_deps() {
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  need_update=""
  if [ -f "$KE_DEBIAN_SOURCES" ] && ! grep -q '^Types:.*deb-src' "$KE_DEBIAN_SOURCES"; then
    echo "==> Adding deb-src to $KE_DEBIAN_SOURCES (nanopb's sources for firmware)"
    $sudo sed -i 's/^Types: deb$/Types: deb deb-src/' "$KE_DEBIAN_SOURCES"
    need_update=1
  fi
  missing=""
  for p in $KE_DEB_PACKAGES; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
      missing="$missing $p"
    fi
  done
  if [ -z "$missing" ]; then
    [ -z "$need_update" ] || $sudo apt-get update -qq
    echo "==> Debian packages: all present"
    return 0
  fi
  echo "==> Installing missing Debian packages:$missing"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  # shellcheck disable=SC2086
  $sudo apt-get install -y -qq --no-install-recommends $missing >/dev/null
  echo "==> Installed:$missing"
}

# Debian's kubectl (kubernetes-client, 1.20) for the API compatibility test,
# unpacked beside the one on PATH rather than installed: its /usr/bin/kubectl
# would clash with another kubectl package (tests/interop/test_kubectl.py).
KE_KUBECTL_120_DIR=/opt/kubernetes-client-1.20

ke_unpack_kubectl_120() {
  [ -x "$KE_KUBECTL_120_DIR/usr/bin/kubectl" ] && return 0
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "==> Unpacking Debian's kubectl 1.20 (kubernetes-client) into $KE_KUBECTL_120_DIR"
  tmp=$(mktemp -d)
  if (cd "$tmp" && apt-get download kubernetes-client >/dev/null 2>&1) &&
     $sudo dpkg-deb -x "$tmp"/kubernetes-client_*.deb "$KE_KUBECTL_120_DIR"; then
    echo "==> kubectl 1.20 at $KE_KUBECTL_120_DIR/usr/bin/kubectl"
  else
    echo "==> kubectl 1.20 not available: the API test runs the other kubectl versions only"
  fi
  rm -rf "$tmp"
}

if [ "${0##*/}" = "deps.sh" ]; then
  ke_install_deps
  ke_unpack_kubectl_120
fi
