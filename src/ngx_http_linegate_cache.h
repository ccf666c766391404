
/*
 * linegate: the per-worker credential cache. A fixed table of entries,
 * 8-way set-associative (2-way under 16 entries), keyed by a 32-byte
 * digest (the set: its first three bytes), each entry holding up to two
 * short values (ids) until it expires or its epoch is no longer the
 * current one. Used by the API-key
 * and provisioning-account cache and by the Clerk token cache (auth.c).
 *
 * Pure C: the caller allocates the zeroed table and owns the clock, in
 * any unit whose difference wraps as uintptr_t does (ngx_current_msec,
 * ngx_time()); no nginx headers, so it is unit-tested outside nginx
 * (t/unit/test_cache.c).
 */


#ifndef _NGX_HTTP_LINEGATE_CACHE_H_INCLUDED_
#define _NGX_HTTP_LINEGATE_CACHE_H_INCLUDED_


#include <stddef.h>
#include <stdint.h>


#define NGX_HTTP_LINEGATE_CACHE_KEY_LEN   32


typedef struct {
    unsigned char                   key[NGX_HTTP_LINEGATE_CACHE_KEY_LEN];
    uintptr_t                       expires;  /* fresh while now before */
    uintptr_t                       epoch;
    uintptr_t                       gen;      /* the caller's, put: 0 */
    unsigned char                   used;
    unsigned char                   flags;    /* the caller's */
    unsigned char                   len[2];   /* of the two values */
    unsigned char                   value[];  /* both, value_max bytes */
} ngx_http_linegate_cache_entry_t;


typedef struct {
    unsigned char                  *entries;  /* sets * ways * stride */
    size_t                          sets;     /* 0: the cache is off */
    size_t                          ways;
    size_t                          stride;
    size_t                          value_max;
} ngx_http_linegate_cache_t;


/* bytes of a table of n entries (n >= 2) with values of value_max bytes */
size_t ngx_http_linegate_cache_bytes(size_t n, size_t value_max);

/*
 * mem: ngx_http_linegate_cache_bytes(n, value_max) zeroed bytes; a
 * zeroed ngx_http_linegate_cache_t is a cache that is off
 */
void ngx_http_linegate_cache_init(ngx_http_linegate_cache_t *cache,
    void *mem, size_t n, size_t value_max);

/* the entry of key, fresh or not, or NULL */
ngx_http_linegate_cache_entry_t *ngx_http_linegate_cache_find(
    ngx_http_linegate_cache_t *cache, const unsigned char *key);

/* an entry found is fresh at now for the current epoch */
#define ngx_http_linegate_cache_fresh(e, now, ep)                           \
    ((e)->epoch == (ep) && (intptr_t) ((e)->expires - (now)) > 0)

/* forget key's entry, if any */
void ngx_http_linegate_cache_drop(ngx_http_linegate_cache_t *cache,
    const unsigned char *key);

/* the second value of an entry (the first one is e->value) */
#define ngx_http_linegate_cache_value2(e)  ((e)->value + (e)->len[0])

/*
 * Remember key -> the values (v2 may be NULL, len2 0) until expires, for
 * epoch, in key's own entry, else a free way, else one no longer fresh,
 * else the one expiring first. -1: the cache is off or the values do not
 * fit (they are served, not remembered).
 */
int ngx_http_linegate_cache_put(ngx_http_linegate_cache_t *cache,
    const unsigned char *key, uintptr_t now, uintptr_t expires,
    uintptr_t epoch, unsigned flags, const unsigned char *v1, size_t len1,
    const unsigned char *v2, size_t len2);


#endif /* _NGX_HTTP_LINEGATE_CACHE_H_INCLUDED_ */
