#!/usr/bin/env bash
#
# Builds the libFuzzer targets of t/fuzz/ (clang, ASan + UBSan).
#
#   bash t/fuzz/build.sh <nginx build dir> [outdir] [target...]
#
# The nginx build dir is the one `make` configured (it holds
# ngx_auto_config.h and linegate_gen/); outdir defaults to build/fuzz.
# Each target is t/fuzz/fuzz_<name>.c, which #includes the module source
# whose static parsers it drives, linked with the module objects listed
# below, t/fuzz/fuzz_ngx.c (the nginx functions the parsers call) and
# generated stubs for every other nginx or module symbol the objects
# name: a stub aborts with its name if a fuzzed path ever reaches it.

set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
ngxbuild=${1:?usage: build.sh <nginx build dir> [outdir] [target...]}
out=${2:-$root/build/fuzz}
shift $(( $# > 1 ? 2 : 1 ))

cc=${FUZZ_CC:-clang}
ngxsrc=${NGINX_SRC:-/usr/share/nginx/src}

san=(-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined
     -fno-omit-frame-pointer)
cflags=(-g -O1 -Wall -Wno-unused-parameter -Wno-unused-function -Werror
        "${san[@]}"
        -I "$ngxsrc/src/core" -I "$ngxsrc/src/event"
        -I "$ngxsrc/src/event/modules" -I "$ngxsrc/src/os/unix"
        -I "$ngxsrc/src/http" -I "$ngxsrc/src/http/modules"
        -I "$ngxsrc/src/http/v2"
        -I "$ngxbuild" -I "$ngxbuild/linegate_gen"
        -I "$root/src" -I "$root/t/fuzz")
libs=(-lhiredis -ljansson -lssl -lcrypto)

# target: module sources linked besides the one its .c includes
declare -A objs=(
    [jwt]="crypto"
    [jwks]="crypto"
    [stripe_signature]="crypto"
    [line_create]="json json_write keys chars str clock ids headers crypto lines lines_request metrics"
    [confirm]="json json_write keys chars str clock ids headers crypto metrics"
    [webhook]="json json_write keys chars str clock ids headers crypto stripe redis redis_error metrics"
    [headers]="json json_write keys chars str clock ids headers crypto stripe metrics cache"
    [stripe_reply]="json json_write keys chars str clock ids headers crypto lines lines_request metrics"
    [redis_reply]="json json_write keys chars str clock ids headers crypto provision provision_script ratelimit metrics"
    [lines_read]="json json_write keys chars str clock ids headers crypto lines_request stripe metrics redis redis_error"
    [redis_slots]="chars"
    [redis_arena]=""
    [redis_error]=""
    [operator]="operator_ops operator_fields redis redis_error auth json json_write keys chars str clock ids headers crypto metrics idempotency"
    [redis_pubsub]="cache keys chars str crypto metrics"
    [limit]="redis redis_error scripts keys chars str metrics ratelimit conf crypto"
    [reconcile_list]="json json_write keys chars str clock ids headers crypto metrics lines lines_request lr_setup pv_settle redis redis_error scripts"
)

# targets needing no nginx at all: no shim, no stubs
declare -A pure=([jwt]=1 [jwks]=1 [stripe_signature]=1 [redis_arena]=1
                [redis_error]=1)

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(jwt jwks stripe_signature line_create confirm webhook headers
             stripe_reply redis_reply lines_read redis_slots redis_arena
             redis_error operator redis_pubsub limit reconcile_list)
fi

mkdir -p "$out/obj"

compile() {   # source object (again when any source is newer: the
              # targets include module sources)
    if [ ! -f "$2" ] || [ -n "$(find "$root/src" "$root/t/fuzz" \
                                     -name '*.[ch]' -newer "$2")" ]
    then
        "$cc" "${cflags[@]}" -c "$1" -o "$2"
    fi
}

for t in "${targets[@]}"; do
    [ -n "${objs[$t]+x}" ] || { echo "unknown fuzz target: $t" >&2; exit 1; }

    o=("$out/obj/fuzz_$t.o")
    compile "$root/t/fuzz/fuzz_$t.c" "${o[0]}"

    for m in ${objs[$t]}; do
        compile "$root/src/ngx_http_linegate_$m.c" "$out/obj/$m.o"
        o+=("$out/obj/$m.o")
    done

    if [ -z "${pure[$t]+x}" ]; then
        compile "$root/t/fuzz/fuzz_ngx.c" "$out/obj/fuzz_ngx.o"
        o+=("$out/obj/fuzz_ngx.o")

        # nginx and module symbols named but not defined: a symbol only
        # ever called (PLT32) gets a function that aborts, any other one
        # (data, or a function whose address is stored) a zeroed block
        stubs=$out/obj/stubs_$t.c
        {
            echo '#include <stdio.h>'
            echo '#include <stdlib.h>'
            comm -23 \
                <(nm -u "${o[@]}" | awk '$2 ~ /^ngx_/ {print $2}' | sort -u) \
                <(nm --defined-only "${o[@]}" | awk '{print $3}' | sort -u) |
            while read -r s; do
                if objdump -r "${o[@]}" |
                   awk -v s="$s" '{ sub(/[-+]0x[0-9a-f]+$/, "", $3) }
                                  $3 == s && $2 != "R_X86_64_PLT32" {f=1}
                                  END {exit !f}'
                then
                    echo "char $s[65536] __attribute__((aligned(64)));"
                else
                    echo "void $s(void) { fputs(\"fuzz: nginx stub reached:" \
                         "$s\\n\", stderr); abort(); }"
                fi
            done
        } > "$stubs"
        "$cc" -g -O1 -w -c "$stubs" -o "$out/obj/stubs_$t.o"
        o+=("$out/obj/stubs_$t.o")
    fi

    "$cc" "${san[@]}" -o "$out/fuzz_$t" "${o[@]}" "${libs[@]}"
    echo "built $out/fuzz_$t"
done
