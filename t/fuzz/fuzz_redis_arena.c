
/*
 * Fuzz target: hiredis reply objects from linegate's arena (src/ngx_http_
 * linegate_redis_arena.c, included), against hiredis's own.  The input's
 * first byte picks a chunk size; the rest is RESP fed to two readers,
 * one with hiredis's object functions, one with the arena's, in chunks
 * of that size, taking every reply as it completes.
 *
 * Invariants: both readers agree on every reply (its type, integer,
 * string bytes and length, NUL after the string, elements, recursively)
 * and on an error; every reply is freed the way hiredis frees them (the
 * top-level object, before the next is parsed); the arena's reader is
 * detached and freed with a partial reply or none (ASan's leak check
 * finds a block left).
 */


#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ngx_http_linegate_redis_arena.c"


static void
fuzz_same(const redisReply *a, const redisReply *b, unsigned depth)
{
    size_t  i;

    if (a == NULL || b == NULL) {
        if (a != b) {
            abort();
        }

        return;
    }

    if (a->type != b->type || depth > 16) {
        abort();
    }

    switch (a->type) {

    case REDIS_REPLY_INTEGER:
        if (a->integer != b->integer) {
            abort();
        }

        break;

    case REDIS_REPLY_STRING:
    case REDIS_REPLY_STATUS:
    case REDIS_REPLY_ERROR:
        if (a->len != b->len || memcmp(a->str, b->str, a->len) != 0
            || b->str[b->len] != '\0')
        {
            abort();
        }

        break;

    case REDIS_REPLY_ARRAY:
        if (a->elements != b->elements) {
            abort();
        }

        for (i = 0; i < a->elements; i++) {
            fuzz_same(a->element[i], b->element[i], depth + 1);
        }

        break;

    default:
        break;
    }
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int           ra, rb;
    char          num[21];
    void         *va, *vb;
    size_t        step, i, n;
    const char   *p;
    redisReader  *a, *b;

    if (size < 1) {
        return 0;
    }

    /* as fuzz_ngx.c: no "*N" over 4096 (this hiredis has no maxelements) */
    for (i = 1; i < size; i++) {
        if (data[i] != '*') {
            continue;
        }

        n = size - i - 1 < sizeof(num) - 1 ? size - i - 1 : sizeof(num) - 1;
        memcpy(num, data + i + 1, n);
        num[n] = '\0';

        if (strtoll(num, NULL, 10) > 4096) {
            return 0;
        }
    }

    step = 1 + data[0] % 64;
    p = (const char *) data + 1;
    size--;

    a = redisReaderCreate();
    b = redisReaderCreate();

    if (a == NULL || b == NULL
        || ngx_http_linegate_redis_arena_attach(b) != 0)
    {
        abort();
    }

    for (i = 0; i < size; i += n) {
        n = size - i < step ? size - i : step;

        if (redisReaderFeed(a, p + i, n) != REDIS_OK
            || redisReaderFeed(b, p + i, n) != REDIS_OK)
        {
            abort();
        }

        for ( ;; ) {
            va = NULL;
            vb = NULL;
            ra = redisReaderGetReply(a, &va);
            rb = redisReaderGetReply(b, &vb);

            if (ra != rb) {
                abort();
            }

            fuzz_same(va, vb, 0);

            if (va != NULL) {
                a->fn->freeObject(va);
            }

            if (vb != NULL) {
                b->fn->freeObject(vb);
            }

            if (ra != REDIS_OK || va == NULL) {
                break;
            }
        }

        if (ra != REDIS_OK) {
            break;
        }
    }

    redisReaderFree(a);
    ngx_http_linegate_redis_arena_detach(b);
    redisReaderFree(b);

    return 0;
}
