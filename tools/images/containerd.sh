#!/bin/sh
# tools/images/containerd.sh DIR — starts a private containerd for pods
# through CRI: config, root, state, sockets and runc state all under DIR,
# so tests (and a demo host) never touch the system's. Prints its pid and
# socket, waits until the socket answers, imports the images that
# tools/images/build.sh made into DIR/images (namespace k8s.io); with
# KE_IMAGE_CACHE=D set, the images are built once into D and copied.
#
# tools/images/containerd.sh --stop DIR — kills every container of that
# containerd, removes them, stops it, unmounts what it left and removes DIR.
#
# What the settings are for: ../../shared/notes/containerd.md (cgroupfs
# driver, restrict_oom_score_adj, a fully qualified local sandbox image,
# Debian's CNI path).
set -eu
if [ "${1:-}" = "--stop" ]; then
  dir=${2:?usage: tools/images/containerd.sh --stop DIR}
  [ -d "$dir" ] || exit 0
  dir=$(cd "$dir" && pwd)
  sock="$dir/containerd.sock"
  if [ -S "$sock" ] && ctr -a "$sock" version > /dev/null 2>&1; then
    c="ctr -a $sock -n k8s.io"
    for t in $($c tasks ls -q 2>/dev/null); do
      $c tasks kill -a -s KILL "$t" > /dev/null 2>&1 || true
    done
    for t in $($c tasks ls -q 2>/dev/null); do
      i=0
      while $c tasks ls 2>/dev/null | grep -q "^$t .*RUNNING" && [ $i -lt 100 ]; do
        i=$((i + 1)); sleep 0.05
      done
      $c tasks rm -f "$t" > /dev/null 2>&1 || true
    done
    for k in $($c containers ls -q 2>/dev/null); do
      $c containers rm "$k" > /dev/null 2>&1 || true
    done
  fi
  if [ -f "$dir/containerd.pid" ]; then
    pid=$(cat "$dir/containerd.pid")
    kill "$pid" 2>/dev/null || true
    i=0
    while kill -0 "$pid" 2>/dev/null && [ $i -lt 100 ]; do i=$((i + 1)); sleep 0.05; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  pkill -9 -f "containerd-shim-runc-v2 .*-address $sock" 2>/dev/null || true
  # mounts left under DIR (rootfs overlays, sandbox shm), deepest first
  awk -v d="$dir/" 'index($2, d) == 1 { print $2 }' /proc/mounts | sort -r | while read -r m; do
    umount -l "$m" 2>/dev/null || true
  done
  rm -rf "$dir"
  exit 0
fi
dir=${1:?usage: tools/images/containerd.sh DIR}
mkdir -p "$dir/root" "$dir/state" "$dir/runc" "$dir/opt" "$dir/cni/conf" "$dir/images"
dir=$(cd "$dir" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
cat > "$dir/config.toml" <<TOML
version = 2
root = "$dir/root"
state = "$dir/state"
[grpc]
  address = "$dir/containerd.sock"
[ttrpc]
  address = "$dir/containerd.sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "$dir/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "localhost/pause:1.0"
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "/usr/sbin/runc"
        Root = "$dir/runc"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$dir/cni/conf"
TOML
# Pods not on the host network get their own namespace and an address
# from Debian's CNI plugins: a bridge with host-local addresses (no masquerade: the
# pods talk to this host and each other). KE_POD_SUBNET and KE_POD_BRIDGE
# change the defaults.
if [ -x /usr/lib/cni/bridge ] && [ -x /usr/lib/cni/host-local ]; then
  cat > "$dir/cni/conf/10-kubeedge-c.conflist" <<JSON
{"cniVersion": "0.4.0", "name": "kubeedge-c",
 "plugins": [{"type": "bridge", "bridge": "${KE_POD_BRIDGE:-kec0}", "isGateway": true,
              "ipMasq": false, "hairpinMode": true,
              "ipam": {"type": "host-local", "ranges": [[{"subnet": "${KE_POD_SUBNET:-10.88.0.0/16}"}]],
                       "dataDir": "$dir/cni/ipam", "routes": [{"dst": "0.0.0.0/0"}]}}]}
JSON
fi
containerd --config "$dir/config.toml" > "$dir/containerd.log" 2>&1 &
pid=$!
echo "$pid" > "$dir/containerd.pid"
i=0
until ctr -a "$dir/containerd.sock" version > /dev/null 2>&1; do
  i=$((i + 1))
  if [ $i -gt 200 ] || ! kill -0 "$pid" 2>/dev/null; then
    echo "containerd.sh: containerd did not come up; see $dir/containerd.log" >&2
    exit 1
  fi
  sleep 0.05
done
if [ -n "${KE_IMAGE_CACHE:-}" ]; then
  mkdir -p "$KE_IMAGE_CACHE"
  (
    flock 9
    [ -f "$KE_IMAGE_CACHE/busybox.tar" ] || "$here/build.sh" "$KE_IMAGE_CACHE" > /dev/null
  ) 9> "$KE_IMAGE_CACHE/.lock"
  cp "$KE_IMAGE_CACHE"/*.tar "$dir/images/"
fi
[ -f "$dir/images/pause.tar" ] || "$here/build.sh" "$dir/images" > /dev/null
for img in "$dir"/images/*.tar; do
  ctr -a "$dir/containerd.sock" -n k8s.io images import --no-unpack=false "$img" > /dev/null
done
echo "containerd pid=$pid socket=$dir/containerd.sock"
