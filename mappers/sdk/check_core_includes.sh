#!/bin/sh
# check_core_includes.sh [--self-test] SDK_DIR — the SDK core (SDK_DIR/*.c,
# *.h; not host/) includes only what a microcontroller without an OS has:
# <stdint.h>, <stddef.h>, <string.h>, <stdbool.h>, nanopb's <pb*.h>, the
# generated "mapper.pb.h" and the SDK's own ke_*.h. Exits 1 naming each
# other include. --self-test first checks that a file including <stdio.h>
# is refused, so a broken pattern cannot pass everything.
set -eu
allowed='^(stdint\.h|stddef\.h|string\.h|stdbool\.h|pb\.h|pb_encode\.h|pb_decode\.h|pb_common\.h|mapper\.pb\.h|ke_[a-z0-9_]+\.h)$'

# check FILE... prints each include outside the allowed set; 1 if any.
check() {
  bad=0
  for f in "$@"; do
    for h in $(sed -n 's/^[[:space:]]*#[[:space:]]*include[[:space:]]*[<"]\([^>"]*\)[>"].*/\1/p' "$f"); do
      if ! echo "$h" | grep -Eq "$allowed"; then
        echo "$f includes <$h>: not allowed in the SDK core (only host/ may use the OS)" >&2
        bad=1
      fi
      # an own header must be a core header, not a host one
      case $h in ke_*.h) [ -e "$(dirname "$f")/$h" ] || { echo "$f includes $h: not a core header" >&2; bad=1; } ;; esac
    done
  done
  return $bad
}

if [ "${1:-}" = "--self-test" ]; then
  shift
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  printf '#include <stdint.h>\n#include <stdio.h>\n' > "$tmp/ke_bad.c"
  if check "$tmp/ke_bad.c" 2>/dev/null; then
    echo "self-test failed: <stdio.h> was not refused" >&2
    exit 1
  fi
fi
dir=${1:?usage: check_core_includes.sh [--self-test] SDK_DIR}
set -- "$dir"/*.c "$dir"/*.h
[ -e "$1" ] || { echo "no core sources in $dir" >&2; exit 1; }
check "$@"
echo "ok: $# SDK core files include only the allowed headers"
