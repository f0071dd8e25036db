#!/bin/sh
# check_protos.sh — the API contract's promises to clients in other
# languages, checked on every api/*.proto:
#   - it sets `option go_package` and `option java_package`;
#   - every rpc has a comment right above it (consecutive // lines) with an
#     "Identity:" line saying who may call it (docs/security.md).
#
# Usage: check_protos.sh DIR      check DIR/*.proto; exit 1 naming each gap
#        check_protos.sh --self-test
#                                 also prove the check can fail: a proto
#                                 missing each promise must be refused.
set -u

check_dir() {
    dir=$1
    status=0
    found=0
    for f in "$dir"/*.proto; do
        [ -e "$f" ] || continue
        found=1
        for opt in go_package java_package; do
            if ! grep -Eq "^[[:space:]]*option[[:space:]]+$opt[[:space:]]*=[[:space:]]*\"[^\"]+\"[[:space:]]*;" "$f"; then
                echo "$f: no 'option $opt = \"...\";'"
                status=1
            fi
        done
        # An rpc's comment block: the // lines directly above it.
        awk -v file="$f" '
            /^[[:space:]]*\/\// { block = block "\n" $0; next }
            /^[[:space:]]*rpc[[:space:]]/ {
                name = $2; sub(/\(.*/, "", name)
                if (block !~ /Identity:/) {
                    printf "%s:%d: rpc %s has no \"Identity:\" line in the comment above it\n", file, NR, name
                    bad = 1
                }
            }
            { block = "" }
            END { exit bad }
        ' "$f" || status=1
    done
    if [ "$found" = 0 ]; then
        echo "$dir: no .proto files"
        status=1
    fi
    return $status
}

self_test() {
    tmp=$(mktemp -d) || exit 1
    trap 'rm -rf "$tmp"' EXIT
    good='syntax = "proto3";
package t.v1;
option go_package = "example.com/t/v1;tv1";
option java_package = "com.example.t.v1";
service S {
  // Ping answers.
  // Identity: anyone.
  rpc Ping(P) returns (P);
}
message P {}'
    mkdir "$tmp/good" "$tmp/nogo" "$tmp/nojava" "$tmp/noid" "$tmp/gap"
    printf '%s\n' "$good" >"$tmp/good/t.proto"
    printf '%s\n' "$good" | grep -v go_package >"$tmp/nogo/t.proto"
    printf '%s\n' "$good" | grep -v java_package >"$tmp/nojava/t.proto"
    printf '%s\n' "$good" | grep -v 'Identity:' >"$tmp/noid/t.proto"
    # an Identity line that is not in the rpc's own comment does not count
    printf '%s\n' "$good" | sed 's|^  // Ping answers.|  // Identity: anyone.\
\
  // Ping answers.|' | awk '/Identity:/ && ++n == 2 { next } { print }' >"$tmp/gap/t.proto"
    check_dir "$tmp/good" >/dev/null || { echo "self-test: a good proto was refused"; exit 1; }
    for d in nogo nojava noid gap; do
        if check_dir "$tmp/$d" >/dev/null; then
            echo "self-test: the check accepted a proto from case '$d'"
            exit 1
        fi
    done
    echo "self-test: ok"
}

case "${1:-}" in
--self-test) self_test; shift; [ $# -gt 0 ] && check_dir "$1" ;;
"") echo "usage: $0 DIR | --self-test [DIR]" >&2; exit 2 ;;
*) check_dir "$1" ;;
esac
