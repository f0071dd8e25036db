#!/bin/bash
# tools/image.sh [--out DIR] [--build DIR] [NAME...] — builds OCI images of
# the project's programs with Debian's umoci: no registry, no base image, no
# download (umoci itself is installed with apt-get when missing).
#
#   NAME            program                                   image
#   cloudcore       build/services/cloudcore/cloudcore        localhost/kubeedge-c/cloudcore:VERSION
#   cloudhub        build/services/cloudcore/cloudhub         localhost/kubeedge-c/cloudhub:VERSION
#   edgecontroller  build/services/cloudcore/edgecontroller   localhost/kubeedge-c/edgecontroller:VERSION
#   edgecore        build/edge-agent/edgecore                 localhost/kubeedge-c/edgecore:VERSION
#
# No NAME: all four. VERSION is project(... VERSION x.y.z) in CMakeLists.txt.
# Each image is one layer holding only: the stripped program as
# /usr/bin/NAME, the shared libraries ldd lists for it (symlinks resolved,
# the dynamic loader included), /etc/passwd, /etc/group (user and group
# kubeedge, 65532), /etc/nsswitch.conf, /tmp (1777) and /var/lib/kubeedge
# (owned by 65532). No shell, no CA bundle (the project brings its own CA).
# Entrypoint the program, User 65532:65532, WorkingDir /.
#
# Output: DIR/NAME-VERSION.oci.tar (default DIR: BUILD/images), an OCI image
# layout in a tar. Its index names the image both ways containerd and other
# tools look for: io.containerd.image.name = the full name, and
# org.opencontainers.image.ref.name = the full name too, so
#   ctr -n k8s.io images import DIR/cloudcore-0.1.0.oci.tar
#   skopeo copy oci-archive:DIR/cloudcore-0.1.0.oci.tar docker://REGISTRY/...
#   podman load -i DIR/cloudcore-0.1.0.oci.tar
# take it as it is. The name is fully qualified (localhost/...) because
# containerd's CRI rewrites short names to docker.io and would try to pull.
#
# Reproducible: every file gets the mtime SOURCE_DATE_EPOCH (default: the
# time of the last commit), owners are numeric, umoci writes entries in
# sorted order and the config's created time is that same epoch, so the same
# build directory gives the same layer, config and manifest digests.
set -eu

out="" build=""
names=()
while [ $# -gt 0 ]; do
  case $1 in
    --out) out=${2:?--out needs a directory}; shift 2 ;;
    --build) build=${2:?--build needs a directory}; shift 2 ;;
    -h|--help) sed -n '2,/^set -eu/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    -*) echo "image.sh: unknown option $1" >&2; exit 2 ;;
    *) names+=("$1"); shift ;;
  esac
done
[ ${#names[@]} -gt 0 ] || names=(cloudcore cloudhub edgecontroller edgecore)

src=$(cd "$(dirname "$0")/.." && pwd)
build=${build:-$src/build}
die() { echo "image.sh: $*" >&2; exit 1; }

version=$(sed -n 's/^project([^)]*VERSION \([0-9][0-9.]*\).*/\1/p' "$src/CMakeLists.txt" | head -1)
[ -n "$version" ] || die "no project(... VERSION x.y.z) in $src/CMakeLists.txt"
if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
  SOURCE_DATE_EPOCH=$(git -C "$src" log -1 --format=%ct 2>/dev/null || echo 0)
fi
created=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%dT%H:%M:%SZ)

# name -> cmake target, program path under the build dir, exposed ports
target_of() {
  case $1 in
    cloudcore) echo cloudcore ;;
    cloudhub) echo cloudhub_program ;;
    edgecontroller) echo edgecontroller_program ;;
    edgecore) echo edgecore ;;
    *) die "unknown image $1 (cloudcore, cloudhub, edgecontroller or edgecore)" ;;
  esac
}
path_of() {
  case $1 in
    edgecore) echo "$build/edge-agent/edgecore" ;;
    *) echo "$build/services/cloudcore/$1" ;;
  esac
}
# gRPC (grpc.listen), Kubernetes API (kubeapi.listen), /metrics and /healthz
# (http.listen): the defaults in services/cloudcore/main.c and edge-agent/main.c
ports_of() {
  case $1 in
    cloudcore|edgecontroller) echo "10000/tcp 6443/tcp 10550/tcp" ;;
    cloudhub) echo "10000/tcp 10550/tcp" ;;
    edgecore) echo "10551/tcp" ;;
  esac
}

for n in "${names[@]}"; do target_of "$n" > /dev/null; done

# tools
if ! command -v umoci > /dev/null; then
  echo "image.sh: umoci is missing; installing Debian's umoci with apt-get" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends umoci > /dev/null \
    || die "cannot install umoci (apt-get install umoci)"
  command -v umoci > /dev/null || die "umoci still missing after apt-get"
fi
for t in ldd strip tar python3; do
  command -v "$t" > /dev/null || die "$t is missing"
done
# files in the layer belong to root and to 65532: umoci takes owners from
# the staging tree, which needs root to chown
[ "$(id -u)" -eq 0 ] || die "run as root (the image's files need owners 0 and 65532)"

# the programs: build what is missing
missing=()
for n in "${names[@]}"; do
  [ -x "$(path_of "$n")" ] || missing+=("$(target_of "$n")")
done
if [ ${#missing[@]} -gt 0 ]; then
  [ -f "$build/CMakeCache.txt" ] || die "no build in $build (cmake -S $src -B $build first, or --build DIR)"
  echo "image.sh: building ${missing[*]} in $build" >&2
  cmake --build "$build" -j"$(nproc)" --target "${missing[@]}" > "$build/image-build.log" 2>&1 \
    || die "cmake --build $build failed; see $build/image-build.log"
fi

out=${out:-$build/images}
mkdir -p "$out"
out=$(cd "$out" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# copy_libs ELF ROOT: the shared libraries ldd lists for ELF, at the paths
# ldd names, as regular files (symlinks resolved)
copy_libs() {
  local lib
  ldd "$1" > "$work/ldd.out" 2>&1 || die "ldd $1 failed: $(cat "$work/ldd.out")"
  if grep -q "not found" "$work/ldd.out"; then
    die "$1 needs libraries that are not installed: $(grep 'not found' "$work/ldd.out")"
  fi
  # "libx.so => /path (addr)" and the loader "/lib64/ld-linux-x86-64.so.2 (addr)"
  awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' "$work/ldd.out" |
    sort -u | while read -r lib; do
      mkdir -p "$2$(dirname "$lib")"
      cp -L "$lib" "$2$lib"
    done
}

# image NAME: stage the root, make the layout, tar it
image() {
  local n=$1 bin root layout ref fullname tarball p
  bin=$(path_of "$n")
  root="$work/$n/rootfs"
  layout="$work/$n/layout"
  fullname="localhost/kubeedge-c/$n:$version"
  mkdir -p "$root/usr/bin" "$root/etc" "$root/tmp" "$root/var/lib/kubeedge"
  strip --strip-unneeded -o "$root/usr/bin/$n" "$bin"
  copy_libs "$bin" "$root"
  printf 'root:x:0:0:root:/:/sbin/nologin\nkubeedge:x:65532:65532:kubeedge:/var/lib/kubeedge:/sbin/nologin\n' \
    > "$root/etc/passwd"
  printf 'root:x:0:\nkubeedge:x:65532:\n' > "$root/etc/group"
  # getaddrinfo and getpwuid read it; files and dns are built into glibc
  printf 'passwd: files\ngroup: files\nhosts: files dns\n' > "$root/etc/nsswitch.conf"
  # name lookups of localhost work without a resolver
  printf '127.0.0.1 localhost\n::1 localhost\n' > "$root/etc/hosts"
  if [ "$n" = edgecore ]; then mkdir -p "$root/var/run/kubeedge"; fi
  chown -R 0:0 "$root"
  chmod -R u=rwX,go=rX "$root"
  chmod 1777 "$root/tmp"
  chown 65532:65532 "$root/var/lib/kubeedge"
  if [ "$n" = edgecore ]; then chown 65532:65532 "$root/var/run/kubeedge"; fi
  find "$root" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +

  ref="$layout:$version"
  umoci init --layout "$layout"
  umoci new --image "$ref"
  umoci insert --image "$ref" --history.created "$created" \
    --history.created_by "kubeedge-c tools/image.sh $n" "$root" /
  local cfg=(--image "$ref" --no-history --created "$created" --os linux
             --architecture "$(dpkg --print-architecture 2>/dev/null || echo amd64)"
             --config.entrypoint "/usr/bin/$n" --config.user 65532:65532 --config.workingdir /
             --config.env PATH=/usr/bin
             --config.label "org.opencontainers.image.title=kubeedge-c $n"
             --config.label "org.opencontainers.image.version=$version"
             --config.label "org.opencontainers.image.source=https://github.com/kubeedge-c/kubeedge-c"
             --config.label "org.opencontainers.image.licenses=Apache-2.0"
             --config.label "org.opencontainers.image.created=$created")
  for p in $(ports_of "$n"); do cfg+=(--config.exposedports "$p"); done
  umoci config "${cfg[@]}"
  umoci gc --layout "$layout"
  # the full name in the index, for containerd (io.containerd.image.name)
  # and for tools that read org.opencontainers.image.ref.name
  python3 - "$layout/index.json" "$fullname" <<'PY'
import json, sys
path, name = sys.argv[1], sys.argv[2]
with open(path) as f:
    idx = json.load(f)
for m in idx["manifests"]:
    m["annotations"] = {"io.containerd.image.name": name,
                        "org.opencontainers.image.ref.name": name}
with open(path, "w") as f:
    json.dump(idx, f, separators=(",", ":"), sort_keys=True)
PY
  find "$layout" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
  tarball="$out/$n-$version.oci.tar"
  tar --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$SOURCE_DATE_EPOCH" \
      -C "$layout" -cf "$tarball.tmp" oci-layout index.json blobs
  mv "$tarball.tmp" "$tarball"

  local manifest layer archive_kb unpacked_kb
  manifest=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["manifests"][0]["digest"])' \
    "$layout/index.json")
  layer=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["layers"][0]["digest"])' \
    "$layout/blobs/sha256/${manifest#sha256:}")
  archive_kb=$(( ($(stat -c %s "$tarball") + 1023) / 1024 ))
  unpacked_kb=$(du -sk --apparent-size "$root" | cut -f1)
  printf '%-15s %s\n  %s  archive %s KiB, unpacked %s KiB\n  manifest %s\n  layer    %s\n' \
    "$n" "$fullname" "$tarball" "$archive_kb" "$unpacked_kb" "$manifest" "$layer"
}

for n in "${names[@]}"; do image "$n"; done
