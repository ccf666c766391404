#!/usr/bin/env bash
#
# Builds the pure-C unit tests (no nginx needed).
#
#   bash t/unit/build.sh [outdir]          default outdir: build/unit
#   CC=clang bash t/unit/build.sh
#
# Run from anywhere; paths are resolved from the repository root.

set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
out=${1:-build/unit}
cc=${CC:-cc}
cflags=(-std=c99 -Wall -Wextra -Werror -pedantic -Wpointer-arith -g -O1
        -I "$root/src")
libs=(-lssl -lcrypto -ljansson)

case $out in
    /*) ;;
    *) out=$root/$out ;;
esac

mkdir -p "$out"

"$cc" "${cflags[@]}" -o "$out/test_crypto" \
    "$root/t/unit/test_crypto.c" "$root/src/ngx_http_linegate_crypto.c" \
    "${libs[@]}"

"$cc" "${cflags[@]}" -o "$out/test_jwt" \
    "$root/t/unit/test_jwt.c" "$root/src/ngx_http_linegate_jwt.c" \
    "$root/src/ngx_http_linegate_crypto.c" "${libs[@]}"

"$cc" "${cflags[@]}" -o "$out/test_cache" \
    "$root/t/unit/test_cache.c" "$root/src/ngx_http_linegate_cache.c"

"$cc" "${cflags[@]}" -o "$out/test_chars" \
    "$root/t/unit/test_chars.c" "$root/src/ngx_http_linegate_chars.c"

"$cc" "${cflags[@]}" -o "$out/test_slots" \
    "$root/t/unit/test_slots.c" "$root/src/ngx_http_linegate_redis_slots.c" \
    "$root/src/ngx_http_linegate_chars.c" -lhiredis

"$cc" "${cflags[@]}" -o "$out/test_arena" \
    "$root/t/unit/test_arena.c" "$root/src/ngx_http_linegate_redis_arena.c" \
    -lhiredis

"$cc" "${cflags[@]}" -o "$out/test_hold" \
    "$root/t/unit/test_hold.c" "$root/src/ngx_http_linegate_redis_hold.c"

"$cc" "${cflags[@]}" -o "$out/test_wait" \
    "$root/t/unit/test_wait.c" "$root/src/ngx_http_linegate_redis_wait.c"

"$cc" "${cflags[@]}" -o "$out/test_redis_error" \
    "$root/t/unit/test_redis_error.c" \
    "$root/src/ngx_http_linegate_redis_error.c"

echo "built $out/test_crypto $out/test_jwt $out/test_cache $out/test_chars" \
     "$out/test_slots $out/test_arena $out/test_hold $out/test_wait" \
     "$out/test_redis_error"
