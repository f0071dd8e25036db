#!/bin/bash
# test_images.sh — the container images tools/image.sh builds, run as
# containers in a private containerd.
#
# Builds the four images from the build directory the test runs in
# (KE_BIN_DIR) into a temporary directory, checks that a second build of
# cloudcore gives the same archive (reproducible), that no image holds a
# shell and that each program starts with only the image's files (chroot,
# as uid 65532, `--help`). Then imports them into a private containerd
# (tools/images/containerd.sh) with `ctr images import`, and runs cloudcore
# with `ctr run`: read-only root filesystem, host network, the image's user,
# a keadm init configuration bind-mounted read-only at /etc/kubeedge and a
# writable /var/lib/kubeedge for its SQLite files. Passes when the container
# prints its ready line, /healthz answers 200, the process runs as uid and
# gid 65532 on a read-only root, and it stops cleanly on SIGTERM. Prints the
# cold start (ctr run → /healthz 200); nothing asserts on it.
#
# Exit 77 (skipped) when umoci cannot be installed, or containerd, runc or
# curl is missing, or not run as root.
set -eu

src=${KE_SOURCE_DIR:?KE_SOURCE_DIR not set}
bin=${KE_BIN_DIR:?KE_BIN_DIR not set}
say() { echo "test_images: $*"; }
fail() { echo "test_images: FAIL: $*" >&2; exit 1; }
skip() { echo "test_images: SKIP: $*" >&2; exit 77; }

[ "$(id -u)" -eq 0 ] || skip "needs root (containerd, chown to 65532)"
for t in containerd ctr runc curl python3; do
  command -v "$t" > /dev/null || skip "$t not installed"
done
if ! command -v umoci > /dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends umoci \
    > /dev/null 2>&1 || skip "umoci is not installed and apt-get cannot install it"
fi

version=$(sed -n 's/^project([^)]*VERSION \([0-9][0-9.]*\).*/\1/p' "$src/CMakeLists.txt" | head -1)
[ -n "$version" ] || fail "no project version in $src/CMakeLists.txt"

tmp=$(mktemp -d)
ctrd="$tmp/containerd"
cleanup() {
  "$src/tools/images/containerd.sh" --stop "$ctrd" > /dev/null 2>&1 || true
  rm -rf "$tmp"
}
trap cleanup EXIT

# --- build, twice for cloudcore --------------------------------------------
"$src/tools/image.sh" --build "$bin" --out "$tmp/out" > "$tmp/build1.log" 2>&1 \
  || { cat "$tmp/build1.log" >&2; fail "tools/image.sh failed"; }
cat "$tmp/build1.log"
"$src/tools/image.sh" --build "$bin" --out "$tmp/out2" cloudcore > "$tmp/build2.log" 2>&1 \
  || { cat "$tmp/build2.log" >&2; fail "tools/image.sh (second build) failed"; }
a=$(sha256sum < "$tmp/out/cloudcore-$version.oci.tar")
b=$(sha256sum < "$tmp/out2/cloudcore-$version.oci.tar")
[ "$a" = "$b" ] || fail "two builds of cloudcore differ (not reproducible)"
say "reproducible: two builds of cloudcore give the same archive"

# --- each image: no shell; the program starts from the image's files alone --
# layer_of ARCHIVE DIR: unpacks the OCI archive into DIR, prints the path of
# its (single) layer blob
layer_of() {
  mkdir -p "$2"
  tar -xf "$1" -C "$2"
  python3 - "$2" <<'PY'
import json, sys
d = sys.argv[1]
idx = json.load(open(d + "/index.json"))
m = json.load(open(d + "/blobs/sha256/" + idx["manifests"][0]["digest"][7:]))
assert len(m["layers"]) == 1, "expected one layer"
cfg = json.load(open(d + "/blobs/sha256/" + m["config"]["digest"][7:]))["config"]
assert cfg["User"] == "65532:65532", cfg["User"]
assert cfg["WorkingDir"] == "/", cfg["WorkingDir"]
print(d + "/blobs/sha256/" + m["layers"][0]["digest"][7:])
PY
}
for n in cloudcore cloudhub edgecontroller edgecore; do
  arc="$tmp/out/$n-$version.oci.tar"
  [ -f "$arc" ] || fail "$arc not written"
  layer=$(layer_of "$arc" "$tmp/x/$n") || fail "$n: bad image layout or config"
  rootfs="$tmp/x/$n/rootfs"
  mkdir -p "$rootfs"
  tar -xzf "$layer" -C "$rootfs" 2> /dev/null || fail "$n: cannot unpack its layer"
  for sh in bin/sh usr/bin/sh bin/busybox; do
    if [ -e "$rootfs/$sh" ] || [ -L "$rootfs/$sh" ]; then fail "$n: the image holds /$sh"; fi
  done
  [ "$(stat -c '%u:%g' "$rootfs/var/lib/kubeedge")" = "65532:65532" ] \
    || fail "$n: /var/lib/kubeedge is not owned by 65532"
  [ "$(stat -c '%a' "$rootfs/tmp")" = "1777" ] || fail "$n: /tmp is not mode 1777"
  # every ELF in the image: its interpreter and NEEDED libraries are in it
  # (the chroot run below proves it for the program; this covers the libraries)
  find "$rootfs" -type f | while read -r f; do
    head -c 4 "$f" | grep -q "ELF" || continue
    for lib in $(readelf -d "$f" 2>/dev/null | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'); do
      [ -e "$rootfs/lib/x86_64-linux-gnu/$lib" ] || [ -e "$rootfs/usr/lib/x86_64-linux-gnu/$lib" ] \
        || [ -e "$rootfs/lib64/$lib" ] || { echo "$f needs $lib" > "$tmp/unresolved"; }
    done
  done
  [ ! -f "$tmp/unresolved" ] || fail "$n: $(cat "$tmp/unresolved"), which the image lacks"
  if ! chroot --userspec=65532:65532 "$rootfs" "/usr/bin/$n" --help > "$tmp/help.out" 2>&1; then
    # A sanitizer build's leak check at exit needs /proc, which the bare
    # root lacks (and its options are read from /proc too): the program
    # started from the image's files and printed its help, then failed
    # only in that check.
    grep -q '^Usage: ' "$tmp/help.out" &&
      grep -q 'LeakSanitizer has encountered a fatal error' "$tmp/help.out" ||
      { cat "$tmp/help.out" >&2; fail "$n --help fails with only the image's files"; }
  fi
  rm -rf "$tmp/x/$n"
  say "$n: one layer, no shell, starts as 65532 from its own files"
done

# --- import into a private containerd ---------------------------------------
"$src/tools/images/containerd.sh" "$ctrd" > /dev/null || fail "containerd did not start"
sock="$ctrd/containerd.sock"
c="ctr -a $sock -n k8s.io"
for n in cloudcore cloudhub edgecontroller edgecore; do
  $c images import "$tmp/out/$n-$version.oci.tar" > "$tmp/import.log" 2>&1 \
    || { cat "$tmp/import.log" >&2; fail "ctr images import $n failed"; }
  $c images ls -q | grep -qx "localhost/kubeedge-c/$n:$version" \
    || fail "ctr images import did not name localhost/kubeedge-c/$n:$version"
done
say "ctr images import takes the OCI archives; images named localhost/kubeedge-c/*:$version"

# --- run cloudcore -----------------------------------------------------------
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
grpc_port=$(free_port) http_port=$(free_port) kube_port=$(free_port)
"$bin/tools/keadm" init --dir "$tmp/kubeedge" > /dev/null || fail "keadm init failed"
# the configuration as the container sees it: files at /etc/kubeedge, the
# SQLite files on the writable /var/lib/kubeedge
sed -e "s#$tmp/kubeedge/\(cloudhub\|store\)\.db#/var/lib/kubeedge/\1.db#" \
    -e "s#$tmp/kubeedge#/etc/kubeedge#g" "$tmp/kubeedge/cloudcore.yaml" > "$tmp/cloudcore.yaml"
mv "$tmp/cloudcore.yaml" "$tmp/kubeedge/cloudcore.yaml"
chown -R 65532:65532 "$tmp/kubeedge"
mkdir -p "$tmp/data"
chown 65532:65532 "$tmp/data"

id=kec-image-test
t0=$(date +%s%N)
$c run -d --read-only --net-host \
  --runc-binary /usr/sbin/runc --runc-root "$ctrd/runc" \
  --log-uri "file://$tmp/cloudcore.log" \
  --mount "type=bind,src=$tmp/kubeedge,dst=/etc/kubeedge,options=rbind:ro" \
  --mount "type=bind,src=$tmp/data,dst=/var/lib/kubeedge,options=rbind:rw" \
  "localhost/kubeedge-c/cloudcore:$version" "$id" \
  /usr/bin/cloudcore --config=/etc/kubeedge/cloudcore.yaml \
  "--grpc.listen=127.0.0.1:$grpc_port" "--http.listen=127.0.0.1:$http_port" \
  "--kubeapi.listen=127.0.0.1:$kube_port" > "$tmp/run.log" 2>&1 \
  || { cat "$tmp/run.log" >&2; fail "ctr run failed"; }
code=000 i=0
while [ "$code" != 200 ]; do
  i=$((i + 1))
  if [ $i -gt 600 ]; then
    cat "$tmp/cloudcore.log" >&2 2>/dev/null || true
    fail "/healthz on 127.0.0.1:$http_port did not answer 200 (last: $code)"
  fi
  code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "http://127.0.0.1:$http_port/healthz" || true)
  [ "$code" = 200 ] || sleep 0.02
done
t1=$(date +%s%N)
cold_ms=$(( (t1 - t0) / 1000000 ))
grep -q "^ready grpc=$grpc_port http=$http_port" "$tmp/cloudcore.log" \
  || { cat "$tmp/cloudcore.log" >&2; fail "no ready line from cloudcore"; }
say "cloudcore container: ready, /healthz 200; cold start (ctr run -> /healthz 200) ${cold_ms} ms"

pid=$($c tasks ls | awk -v id="$id" '$1 == id { print $2 }')
if [ -z "$pid" ] || [ ! -d "/proc/$pid" ]; then fail "no task pid for $id"; fi
uid=$(awk '/^Uid:/ { print $2 ":" $3 ":" $4 ":" $5 }' "/proc/$pid/status")
gid=$(awk '/^Gid:/ { print $2 ":" $3 ":" $4 ":" $5 }' "/proc/$pid/status")
[ "$uid" = "65532:65532:65532:65532" ] || fail "cloudcore runs with uids $uid, not 65532"
[ "$gid" = "65532:65532:65532:65532" ] || fail "cloudcore runs with gids $gid, not 65532"
caps=$(awk '/^CapEff:/ { print $2 }' "/proc/$pid/status")
[ "$caps" = 0000000000000000 ] || fail "cloudcore has capabilities $caps"
# the root of its mount namespace is read-only
awk '$5 == "/" { print $6 }' "/proc/$pid/mountinfo" | grep -q '^ro' \
  || fail "the container's root filesystem is not read-only"
[ -f "$tmp/data/store.db" ] || fail "store.db not written to the writable /var/lib/kubeedge"
say "cloudcore runs as 65532:65532, no capabilities, read-only root, store on its volume"

$c tasks kill -s SIGTERM "$id" > /dev/null || fail "ctr tasks kill failed"
i=0
while $c tasks ls | awk -v id="$id" '$1 == id { print $3 }' | grep -q RUNNING; do
  i=$((i + 1))
  [ $i -lt 400 ] || fail "cloudcore did not stop within 20 s of SIGTERM"
  sleep 0.05
done
status=$($c tasks ls | awk -v id="$id" '$1 == id { print $3 }')
$c tasks rm "$id" > /dev/null 2>&1 || true
$c containers rm "$id" > /dev/null 2>&1 || true
say "cloudcore stopped on SIGTERM ($status)"
say "PASS"
