#!/bin/sh
# fetch_nanopb.sh DEST — puts nanopb's C runtime (pb.h, pb_common.[ch],
# pb_encode.[ch], pb_decode.[ch]) into DEST, from Debian's source package of
# exactly the nanopb version installed (so the runtime matches the
# generator, protoc-gen-nanopb). Debian's libnanopb-dev is an x86-64
# library, so firmware compiles the sources itself. Needs a deb-src line
# for Debian (tools/deps.sh adds it) and dpkg-dev. Nothing here goes into
# git: DEST is in the build tree. Does nothing when DEST already has them.
set -eu
dest=$1
[ -f "$dest/pb_encode.c" ] && exit 0
ver=$(dpkg-query -W -f='${Version}' nanopb 2>/dev/null) || {
  echo "fetch_nanopb: the nanopb package is not installed (tools/deps.sh)" >&2
  exit 1
}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
if ! apt-get source --download-only -qq "nanopb=$ver" >/dev/null 2>&1; then
  echo "fetch_nanopb: 'apt-get source nanopb=$ver' failed: add 'deb-src' to the Debian" >&2
  echo "  entry in /etc/apt/sources.list.d/debian.sources and run apt-get update" >&2
  echo "  (tools/deps.sh does both)" >&2
  exit 1
fi
dpkg-source --no-check -x nanopb_*.dsc src >/dev/null
mkdir -p "$dest"
for f in pb.h pb_common.c pb_common.h pb_encode.c pb_encode.h pb_decode.c pb_decode.h LICENSE.txt; do
  cp "src/$f" "$dest/$f"
done
echo "$ver" > "$dest/VERSION"
echo "fetch_nanopb: nanopb $ver runtime in $dest"
