
/*
 * linegate: the per-worker credential cache (ngx_http_linegate_cache.h).
 */


#include <string.h>

#include "ngx_http_linegate_cache.h"


/*
 * Ways of a set: 8, so that a table sized to the keys in use keeps them
 * (100,000 keys put in 262,144 entries: 2-way kept 93.2%, the rest lost
 * to sets of 3 keys or more; 8-way keeps 99.8%, t/unit/test_cache.c); a
 * table of fewer than 16 entries is 2-way, so that it has two sets
 */
#define NGX_HTTP_LINEGATE_CACHE_WAYS  8

#define ngx_http_linegate_cache_ways(n)                                     \
    ((n) >= 2 * NGX_HTTP_LINEGATE_CACHE_WAYS ? NGX_HTTP_LINEGATE_CACHE_WAYS : 2)


static ngx_http_linegate_cache_entry_t *ngx_http_linegate_cache_set(
    ngx_http_linegate_cache_t *cache, const unsigned char *key);


size_t
ngx_http_linegate_cache_bytes(size_t n, size_t value_max)
{
    size_t  stride;

    stride = sizeof(ngx_http_linegate_cache_entry_t) + value_max;
    stride = (stride + sizeof(uintptr_t) - 1) & ~(sizeof(uintptr_t) - 1);

    return n / ngx_http_linegate_cache_ways(n)
           * ngx_http_linegate_cache_ways(n) * stride;
}


void
ngx_http_linegate_cache_init(ngx_http_linegate_cache_t *cache, void *mem,
    size_t n, size_t value_max)
{
    size_t  stride;

    stride = sizeof(ngx_http_linegate_cache_entry_t) + value_max;
    stride = (stride + sizeof(uintptr_t) - 1) & ~(sizeof(uintptr_t) - 1);

    cache->entries = mem;
    cache->ways = ngx_http_linegate_cache_ways(n);
    cache->sets = n / cache->ways;
    cache->stride = stride;
    cache->value_max = value_max;
}


/* the first way of key's set */
static ngx_http_linegate_cache_entry_t *
ngx_http_linegate_cache_set(ngx_http_linegate_cache_t *cache,
    const unsigned char *key)
{
    size_t  set;

    set = ((size_t) key[0] | ((size_t) key[1] << 8)
           | ((size_t) key[2] << 16)) % cache->sets;

    return (ngx_http_linegate_cache_entry_t *)
               (cache->entries
                + set * cache->ways * cache->stride);
}


ngx_http_linegate_cache_entry_t *
ngx_http_linegate_cache_find(ngx_http_linegate_cache_t *cache,
    const unsigned char *key)
{
    size_t                            i;
    ngx_http_linegate_cache_entry_t  *e;

    if (cache->sets == 0) {
        return NULL;
    }

    e = ngx_http_linegate_cache_set(cache, key);

    for (i = 0; i < cache->ways; i++) {
        if (e->used
            && memcmp(e->key, key, NGX_HTTP_LINEGATE_CACHE_KEY_LEN) == 0)
        {
            return e;
        }

        e = (ngx_http_linegate_cache_entry_t *)
                ((unsigned char *) e + cache->stride);
    }

    return NULL;
}


void
ngx_http_linegate_cache_drop(ngx_http_linegate_cache_t *cache,
    const unsigned char *key)
{
    ngx_http_linegate_cache_entry_t  *e;

    e = ngx_http_linegate_cache_find(cache, key);

    if (e != NULL) {
        e->used = 0;
    }
}


int
ngx_http_linegate_cache_put(ngx_http_linegate_cache_t *cache,
    const unsigned char *key, uintptr_t now, uintptr_t expires,
    uintptr_t epoch, unsigned flags, const unsigned char *v1, size_t len1,
    const unsigned char *v2, size_t len2)
{
    size_t                            i;
    ngx_http_linegate_cache_entry_t  *e, *victim;

    if (cache->sets == 0 || len1 + len2 > cache->value_max
        || len1 > 255 || len2 > 255)
    {
        return -1;
    }

    e = ngx_http_linegate_cache_set(cache, key);
    victim = NULL;

    for (i = 0; i < cache->ways; i++) {

        if (!e->used) {
            if (victim == NULL || victim->used) {
                victim = e;
            }

        } else if (memcmp(e->key, key, NGX_HTTP_LINEGATE_CACHE_KEY_LEN) == 0)
        {
            victim = e;
            break;

        } else if (victim == NULL
                   || (victim->used
                       && ngx_http_linegate_cache_fresh(victim, now, epoch)
                       && (!ngx_http_linegate_cache_fresh(e, now, epoch)
                           || (intptr_t) (e->expires - victim->expires)
                              < 0)))
        {
            /* a free way, else one no longer fresh, else the first due */
            victim = e;
        }

        e = (ngx_http_linegate_cache_entry_t *)
                ((unsigned char *) e + cache->stride);
    }

    memcpy(victim->key, key, NGX_HTTP_LINEGATE_CACHE_KEY_LEN);
    victim->expires = expires;
    victim->epoch = epoch;
    victim->gen = 0;
    victim->used = 1;
    victim->flags = (unsigned char) flags;
    victim->len[0] = (unsigned char) len1;
    victim->len[1] = (unsigned char) len2;

    if (len1) {
        memcpy(victim->value, v1, len1);
    }

    if (len2) {
        memcpy(victim->value + len1, v2, len2);
    }

    return 0;
}
