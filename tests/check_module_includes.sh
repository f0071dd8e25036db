#!/bin/sh
# check_module_includes.sh SOURCE_DIR — no edgecore module includes another
# module's header (edge-agent/README.md, "The module contract"). A module is
# a folder of edge-agent/ other than runtime/ and store/; it may include its
# own headers, the runtime's and the store's, libke's and generated ones.
# Exits 1 naming each offending include.
set -eu
src=${1:?usage: check_module_includes.sh SOURCE_DIR}
cd "$src/edge-agent"
modules=$(for d in */; do d=${d%/}; case $d in runtime|store) ;; *) echo "$d" ;; esac; done)
bad=0
checked=0
for m in $modules; do
  for f in "$m"/*.c "$m"/*.h; do
    [ -e "$f" ] || continue
    checked=$((checked + 1))
    for other in $modules; do
      [ "$other" = "$m" ] && continue
      for h in "$other"/*.h; do
        [ -e "$h" ] || continue
        if grep -Eq "^[[:space:]]*#[[:space:]]*include[[:space:]]*[\"<]([^\">]*/)?$(basename "$h")[\">]" "$f"; then
          echo "edge-agent/$f includes $(basename "$h"), a header of module $other" >&2
          bad=1
        fi
      done
    done
  done
done
if [ "$checked" -eq 0 ]; then
  echo "no module sources found under $src/edge-agent" >&2
  exit 1
fi
[ "$bad" -eq 0 ] && echo "ok: $checked module files, no cross-module include"
exit $bad
