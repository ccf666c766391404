
/*
 * Unit tests for src/ngx_http_linegate_cache.c, TAP output.
 */


#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ngx_http_linegate_cache.h"
#include "tap.h"


/* a key of set `set` (of 4), told apart by `tag` */
static void
key(unsigned char *k, unsigned set, unsigned tag)
{
    memset(k, 0, NGX_HTTP_LINEGATE_CACHE_KEY_LEN);
    k[0] = (unsigned char) set;
    k[31] = (unsigned char) tag;
}


static ngx_http_linegate_cache_t *
cache_new(size_t n, size_t value_max)
{
    void                       *mem;
    ngx_http_linegate_cache_t  *c;

    c = calloc(1, sizeof(ngx_http_linegate_cache_t));
    mem = calloc(1, ngx_http_linegate_cache_bytes(n, value_max));

    if (c == NULL || mem == NULL) {
        printf("Bail out! out of memory\n");
        exit(1);
    }

    ngx_http_linegate_cache_init(c, mem, n, value_max);

    return c;
}


static void
test_off(void)
{
    unsigned char              k[32];
    ngx_http_linegate_cache_t  off;

    memset(&off, 0, sizeof(off));
    key(k, 0, 1);

    ok(ngx_http_linegate_cache_find(&off, k) == NULL, "off: no entry");
    ok(ngx_http_linegate_cache_put(&off, k, 0, 10, 0, 0,
                                   (unsigned char *) "ws", 2, NULL, 0)
       == -1, "off: nothing remembered");
}


static void
test_put_find(void)
{
    unsigned char                     k[32];
    ngx_http_linegate_cache_t        *c;
    ngx_http_linegate_cache_entry_t  *e;

    c = cache_new(8, 64);
    key(k, 1, 1);

    ok(ngx_http_linegate_cache_find(c, k) == NULL, "empty: a miss");
    ok(ngx_http_linegate_cache_put(c, k, 100, 200, 7, 0x01,
                                   (unsigned char *) "org_1", 5,
                                   (unsigned char *) "user_22", 7)
       == 0, "put");

    e = ngx_http_linegate_cache_find(c, k);
    ok(e != NULL, "found");
    ok(e != NULL && e->len[0] == 5 && memcmp(e->value, "org_1", 5) == 0,
       "first value");
    ok(e != NULL && e->len[1] == 7
       && memcmp(ngx_http_linegate_cache_value2(e), "user_22", 7) == 0,
       "second value");
    ok(e != NULL && e->flags == 0x01, "flags kept");
    ok(e != NULL && ngx_http_linegate_cache_fresh(e, 199, 7),
       "fresh before it expires");
    ok(e != NULL && !ngx_http_linegate_cache_fresh(e, 200, 7),
       "not fresh when it expires");
    ok(e != NULL && !ngx_http_linegate_cache_fresh(e, 150, 8),
       "not fresh in another epoch");

    key(k, 1, 2);
    ok(ngx_http_linegate_cache_find(c, k) == NULL, "another key: a miss");

    key(k, 1, 1);
    ok(ngx_http_linegate_cache_put(c, k, 100, 300, 7, 0,
                                   (unsigned char *) "ws_2", 4, NULL, 0)
       == 0, "put again");
    e = ngx_http_linegate_cache_find(c, k);
    ok(e != NULL && e->len[0] == 4 && e->len[1] == 0 && e->expires == 300
       && memcmp(e->value, "ws_2", 4) == 0, "its own entry replaced");

    ok(ngx_http_linegate_cache_put(c, k, 100, 300, 7, 0,
                                   (unsigned char *) "x", 40,
                                   (unsigned char *) "y", 25)
       == -1, "values longer than the entry: not remembered");
    e = ngx_http_linegate_cache_find(c, k);
    ok(e != NULL && e->len[0] == 4, "the entry is left as it was");
}


static void
test_victims(void)
{
    unsigned char                     a[32], b[32], d[32];
    ngx_http_linegate_cache_t        *c;

    /* 4 entries: 2 sets of 2 ways; keys of set 0 (0 % 2) and 2 (2 % 2) */
    c = cache_new(4, 16);
    key(a, 0, 1);
    key(b, 2, 2);
    key(d, 0, 3);

    (void) ngx_http_linegate_cache_put(c, a, 0, 100, 0, 0,
                                       (unsigned char *) "a", 1, NULL, 0);
    (void) ngx_http_linegate_cache_put(c, b, 0, 50, 0, 0,
                                       (unsigned char *) "b", 1, NULL, 0);
    ok(ngx_http_linegate_cache_find(c, a) && ngx_http_linegate_cache_find(c, b),
       "two keys of one set: both kept");

    (void) ngx_http_linegate_cache_put(c, d, 10, 200, 0, 0,
                                       (unsigned char *) "d", 1, NULL, 0);
    ok(ngx_http_linegate_cache_find(c, b) == NULL,
       "a third: the one expiring first goes");
    ok(ngx_http_linegate_cache_find(c, a) && ngx_http_linegate_cache_find(c, d),
       "the others stay");

    /* a is fresh until 100, d until 200: at 150, a is the stale one */
    (void) ngx_http_linegate_cache_put(c, b, 150, 400, 0, 0,
                                       (unsigned char *) "b", 1, NULL, 0);
    ok(ngx_http_linegate_cache_find(c, a) == NULL
       && ngx_http_linegate_cache_find(c, d)
       && ngx_http_linegate_cache_find(c, b),
       "an expired way goes before a fresh one");

    /* an entry of an older epoch is not fresh: it goes first */
    c = cache_new(4, 16);

    (void) ngx_http_linegate_cache_put(c, a, 0, 1000, 0, 0,
                                       (unsigned char *) "a", 1, NULL, 0);
    (void) ngx_http_linegate_cache_put(c, b, 0, 500, 1, 0,
                                       (unsigned char *) "b", 1, NULL, 0);
    (void) ngx_http_linegate_cache_put(c, d, 10, 600, 1, 0,
                                       (unsigned char *) "d", 1, NULL, 0);
    ok(ngx_http_linegate_cache_find(c, a) == NULL
       && ngx_http_linegate_cache_find(c, b) != NULL
       && ngx_http_linegate_cache_find(c, d) != NULL,
       "an entry of an older epoch goes before a later-expiring one");
}


static void
test_eight_ways(void)
{
    unsigned      i;
    unsigned char k[9][32];
    ngx_http_linegate_cache_t  *c;

    /* 16 entries: 2 sets of 8 ways; nine keys of set 0 */
    c = cache_new(16, 8);

    for (i = 0; i < 9; i++) {
        key(k[i], 0, i + 1);
    }

    for (i = 0; i < 8; i++) {
        (void) ngx_http_linegate_cache_put(c, k[i], 0, 100 + (i + 5) % 8,
                                           0, 0, (unsigned char *) "v", 1,
                                           NULL, 0);
    }

    for (i = 0; i < 8; i++) {
        if (ngx_http_linegate_cache_find(c, k[i]) == NULL) {
            break;
        }
    }

    ok(i == 8, "eight keys of one set: all kept");

    /* k[3] expires first (100 + 8 % 8) */
    (void) ngx_http_linegate_cache_put(c, k[8], 10, 200, 0, 0,
                                       (unsigned char *) "v", 1, NULL, 0);
    ok(ngx_http_linegate_cache_find(c, k[3]) == NULL
       && ngx_http_linegate_cache_find(c, k[8]) != NULL
       && ngx_http_linegate_cache_find(c, k[0]) != NULL
       && ngx_http_linegate_cache_find(c, k[7]) != NULL,
       "a ninth: the one expiring first goes, the others stay");
}


/*
 * A table sized as docs/directives.md advises keeps the keys in use:
 * 100,000 random digests in 262,144 entries. 2-way, 6.6% of them were
 * lost to conflicts (3 or more keys of one set of 2); 8-way, about 0.2%.
 */
static void
test_conflicts(void)
{
    unsigned       i, j, kept;
    uint64_t       x;
    unsigned char  k[32];
    ngx_http_linegate_cache_t  *c;

    c = cache_new(262144, 8);
    x = 88172645463325252ULL;

    for (i = 0; i < 2; i++) {
        kept = 0;

        for (j = 0; j < 100000; j++) {
            /* the same keys in both passes: xorshift from the same seed */
            if (j == 0) {
                x = 88172645463325252ULL;
            }

            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            memset(k, 0, sizeof(k));
            memcpy(k, &x, sizeof(x));

            if (i == 0) {
                (void) ngx_http_linegate_cache_put(c, k, 0, 100, 0, 0,
                                                   (unsigned char *) "v", 1,
                                                   NULL, 0);

            } else if (ngx_http_linegate_cache_find(c, k) != NULL) {
                kept++;
            }
        }
    }

    ok(kept >= 99000, "100,000 keys in 262,144 entries: 99% kept or more");
    printf("# kept %u of 100000\n", kept);
}


static void
test_wrap(void)
{
    unsigned char                     k[32];
    ngx_http_linegate_cache_t        *c;
    ngx_http_linegate_cache_entry_t  *e;

    c = cache_new(2, 8);
    key(k, 0, 1);

    /* a clock about to wrap: expiry past the wrap is still ahead */
    (void) ngx_http_linegate_cache_put(c, k, UINTPTR_MAX - 10, 5, 0, 0,
                                       (unsigned char *) "w", 1, NULL, 0);
    e = ngx_http_linegate_cache_find(c, k);
    ok(e != NULL && ngx_http_linegate_cache_fresh(e, UINTPTR_MAX - 1, 0),
       "fresh across the clock's wrap");
    ok(e != NULL && !ngx_http_linegate_cache_fresh(e, 5, 0),
       "expires after the wrap");
}


static void
test_drop(void)
{
    unsigned char                     k[32], other[32];
    ngx_http_linegate_cache_t        *c;
    ngx_http_linegate_cache_entry_t  *e;

    c = cache_new(4, 8);
    key(k, 0, 1);
    key(other, 0, 2);

    (void) ngx_http_linegate_cache_put(c, k, 0, 100, 0, 0,
                                       (unsigned char *) "d", 1, NULL, 0);
    (void) ngx_http_linegate_cache_put(c, other, 0, 100, 0, 0,
                                       (unsigned char *) "o", 1, NULL, 0);
    e = ngx_http_linegate_cache_find(c, k);
    ok(e != NULL && e->gen == 0, "put: gen 0");
    if (e != NULL) {
        e->gen = 9;
    }

    ngx_http_linegate_cache_drop(c, k);
    ok(ngx_http_linegate_cache_find(c, k) == NULL, "dropped: a miss");
    ok(ngx_http_linegate_cache_find(c, other) != NULL,
       "the other key is kept");
    ngx_http_linegate_cache_drop(c, k);
    ok(ngx_http_linegate_cache_find(c, k) == NULL, "dropped twice: a miss");

    (void) ngx_http_linegate_cache_put(c, k, 0, 100, 0, 0,
                                       (unsigned char *) "d", 1, NULL, 0);
    e = ngx_http_linegate_cache_find(c, k);
    ok(e != NULL && e->gen == 0, "put again: gen 0");
}


int
main(void)
{
    test_off();
    test_put_find();
    test_victims();
    test_eight_ways();
    test_conflicts();
    test_wrap();
    test_drop();

    return tap_done();
}
