#!/bin/sh
# tools/images/containerd.sh DIR — starts a private containerd for pods
# through CRI: config, root, state, sockets and runc state all under DIR,
# so tests (and a demo host) never touch the system's. Prints its pid and
# socket, waits until the socket answers, imports the images that
# tools/images/build.sh made into DIR/images (namespace k8s.io).
#
# What the settings are for: ../../shared/notes/containerd.md (cgroupfs
# driver, restrict_oom_score_adj, a fully qualified local sandbox image,
# Debian's CNI path).
set -eu
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
[ -f "$dir/images/pause.tar" ] || "$here/build.sh" "$dir/images" > /dev/null
for img in "$dir"/images/*.tar; do
  ctr -a "$dir/containerd.sock" -n k8s.io images import --no-unpack=false "$img" > /dev/null
done
echo "containerd pid=$pid socket=$dir/containerd.sock"
