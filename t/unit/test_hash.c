
/*
 * src/ngx_http_linegate_hash.c: the same key hashes the same, every
 * byte and the length count, keys that differ in one character spread
 * as random ones would over the tables that use the hash (the leases'
 * 4096 sets of 2, the gateway limiter's refusals), and one bit flipped
 * anywhere changes about half of the result's.
 */


#include <stdio.h>
#include <string.h>

#include "ngx_http_linegate_hash.h"
#include "tap.h"


#define SETS  4096


static uint32_t
hash_str(const char *s)
{
    return ngx_http_linegate_hash((const unsigned char *) s, strlen(s));
}


static void
test_stable(void)
{
    unsigned char  a[40], b[40];

    memset(a, 'x', sizeof(a));
    memcpy(b, a, sizeof(b));

    ok(ngx_http_linegate_hash(a, sizeof(a))
       == ngx_http_linegate_hash(b, sizeof(b)), "the same key, the same hash");

    ok(hash_str("lg:{ws:ws_1}:gcra") != hash_str("lg:{ws:ws_2}:gcra"),
       "one character apart");

    /* the tail's zero padding is not the key's */
    ok(ngx_http_linegate_hash(a, 9) != ngx_http_linegate_hash(a, 10),
       "the length counts");

    a[0] = 0;
    b[0] = 0;
    ok(ngx_http_linegate_hash(a, 1) != ngx_http_linegate_hash(a, 2),
       "zero bytes of different lengths");

    ok(ngx_http_linegate_hash(a, 0) == ngx_http_linegate_hash(b, 0),
       "the empty key");
}


/*
 * n keys named as the bench and the tests name workspaces (a counter:
 * what a weak hash spreads worst) into SETS sets
 */
static void
spread(unsigned n, const char *fmt, unsigned *load)
{
    char      key[64];
    unsigned  i;

    memset(load, 0, SETS * sizeof(unsigned));

    for (i = 0; i < n; i++) {
        snprintf(key, sizeof(key), fmt, i);
        load[hash_str(key) % SETS]++;
    }
}


static void
test_spread(void)
{
    double    chi, e;
    unsigned  i, max, over;

    static unsigned  load[SETS];

    /* 100,000 keys: 24.4 a set; chi-square of 4095 degrees ~ 4095 +- 91 */
    spread(100000, "lg:{ws:org_%07u}:gcra", load);

    e = 100000.0 / SETS;
    chi = 0;
    max = 0;

    for (i = 0; i < SETS; i++) {
        chi += (load[i] - e) * (load[i] - e) / e;
        max = load[i] > max ? load[i] : max;
    }

    printf("# 100000 keys: chi-square %.0f, fullest set %u\n", chi, max);
    ok(chi > 3700 && chi < 4500, "100,000 keys spread as random ones");
    ok(max < 50, "no set holds twice its share");

    /*
     * 1,000 keys in sets of 2: random keys put 3 or more in ~9 sets
     * (Poisson, 0.244 a set); each such set costs a lease per request
     */
    spread(1000, "lg:{ws:%u}:gcra", load);

    for (i = 0, over = 0; i < SETS; i++) {
        over += load[i] > 2;
    }

    printf("# 1000 keys: %u sets of 3 or more\n", over);
    ok(over < 30, "1,000 keys: few sets over two");
}


static unsigned
bits(uint32_t v)
{
    unsigned  n;

    for (n = 0; v; v &= v - 1) {
        n++;
    }

    return n;
}


static void
test_avalanche(void)
{
    double         mean;
    unsigned       i, flips, changed, least;
    uint32_t       h;
    unsigned char  key[30];

    memcpy(key, "lg:{ws:org_2BhrdtTXNQtgh}:gcr", sizeof(key));
    h = ngx_http_linegate_hash(key, sizeof(key));

    flips = 0;
    changed = 0;
    least = 32;

    for (i = 0; i < sizeof(key) * 8; i++) {
        unsigned  n;

        key[i / 8] ^= (unsigned char) (1u << (i % 8));
        n = bits(h ^ ngx_http_linegate_hash(key, sizeof(key)));
        key[i / 8] ^= (unsigned char) (1u << (i % 8));

        flips++;
        changed += n;
        least = n < least ? n : least;
    }

    mean = (double) changed / flips;

    printf("# one bit flipped: %.1f of 32 bits changed on average,"
           " %u at least\n", mean, least);
    ok(mean > 14 && mean < 18, "a flipped bit changes about half");
    ok(least >= 6, "every flipped bit changes several");
}


int
main(void)
{
    test_stable();
    test_spread();
    test_avalanche();

    return tap_done();
}
