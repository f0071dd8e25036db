#!/bin/sh
# tools/images/build.sh OUTDIR — builds the two images pods need on a host
# with no registry, as docker-save archives that `ctr images import` takes:
#
#   OUTDIR/pause.tar    localhost/pause:1.0    the sandbox process (pause.c, static)
#   OUTDIR/busybox.tar  localhost/busybox:1.0  busybox-static as /bin/sh, ls, cat, ...
#
# Needs gcc and Debian's busybox-static. Nothing is downloaded.
set -eu
out=${1:?usage: tools/images/build.sh OUTDIR}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out"
out=$(cd "$out" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
arch=$(dpkg --print-architecture 2>/dev/null || echo amd64)

# image NAME TAG ROOTFS ENTRYPOINT_JSON CMD_JSON
image() {
  name=$1 tag=$2 rootfs=$3 entry=$4 cmd=$5
  d="$work/$name"
  mkdir -p "$d"
  # reproducible layer: sorted, fixed owner and time
  tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -C "$rootfs" -cf "$d/layer.tar" .
  diff_id=$(sha256sum "$d/layer.tar" | cut -d' ' -f1)
  cat > "$d/config.json" <<JSON
{"architecture":"$arch","os":"linux","config":{"Entrypoint":$entry,"Cmd":$cmd,"Env":["PATH=/bin:/usr/bin:/sbin:/usr/sbin"]},"rootfs":{"type":"layers","diff_ids":["sha256:$diff_id"]},"history":[{"created_by":"kubeedge-c tools/images/build.sh"}]}
JSON
  cat > "$d/manifest.json" <<JSON
[{"Config":"config.json","RepoTags":["localhost/$name:$tag"],"Layers":["layer.tar"]}]
JSON
  tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -C "$d" -cf "$out/$name.tar" \
      manifest.json config.json layer.tar
  echo "built $out/$name.tar (localhost/$name:$tag, layer sha256:$diff_id)"
}

# pause
mkdir -p "$work/pause-root"
gcc -static -O2 -o "$work/pause-root/pause" "$here/pause.c"
strip "$work/pause-root/pause"
image pause 1.0 "$work/pause-root" '["/pause"]' 'null'

# busybox
bb=/bin/busybox
[ -x "$bb" ] || { echo "build.sh: $bb not found (apt-get install busybox-static)" >&2; exit 1; }
if ! file -L "$bb" 2>/dev/null | grep -q "statically linked"; then
  echo "build.sh: $bb is not static (install busybox-static)" >&2
  exit 1
fi
r="$work/bb-root"
mkdir -p "$r/bin" "$r/tmp" "$r/etc"
cp "$bb" "$r/bin/busybox"
for app in sh ls cat echo sleep env printenv wc head tail grep mkdir rm true false date id \
           hostname kill ps touch sed awk nc wget httpd ip test [ cp mv ln chmod uname seq \
           tr cut sort uniq tee find xargs du df free top netstat ifconfig ping nslookup \
           dd yes timeout; do
  ln -sf busybox "$r/bin/$app"
done
echo "root:x:0:0:root:/:/bin/sh" > "$r/etc/passwd"
echo "root:x:0:" > "$r/etc/group"
image busybox 1.0 "$r" 'null' '["/bin/sh"]'
