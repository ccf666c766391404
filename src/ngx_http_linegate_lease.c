
/*
 * linegate: a worker's leases of GCRA keys. A lease is n admissions that
 * one rl_gcra decision granted together (its want), spent by this worker
 * without asking Redis, each within the lease time of that decision.
 *
 * The worker keeps the lease it spends and asks for the next one as soon
 * as it starts spending it (one decision in flight per key), so that the
 * next is there before this one is spent. A lease is sized to last half
 * the lease time at the rate the worker's requests of the key came since
 * the last one was asked for (at most twice, at least half the last),
 * never more than the rate gives in the lease time: a key the rate
 * spaces wider than the lease time is decided request by request.
 *
 * A lease lasts the lease time from when it was asked for (Redis counted
 * it from then: the fleet's bound), so a round trip of half the lease
 * time or more leaves it half spent at best, or expired on arrival, its
 * admissions paid for in Redis and lost, and the next one asked at once:
 * while the last round trip was that long, a worker asks for one
 * admission at a time (no lease, nothing lost), and grows again from one
 * once a round trip is short.
 *
 * The table is 2-way set-associative by the key's hash, compared in
 * full: a third key of a set takes the slot used least recently, whose
 * lease is dropped, its admissions lost (conservative). The hash is
 * SipHash under a key the worker draws with its table: the keys are a
 * client's (a zone's key= is often a header), and nginx's MurmurHash2
 * let a client pick two that share a hot key's set and take its slot at
 * every request (its lease dropped each time, a Redis decision per
 * request); a seed would not help, MurmurHash2's collisions do not
 * depend on it. SipHash took 64 ns for a key of 33 bytes (performance.md).
 */


#include "ngx_http_linegate_module.h"
#include "ngx_http_linegate_crypto.h"
#include "ngx_http_linegate_lease.h"


static ngx_http_linegate_lease_t  *ngx_http_linegate_leases;
static uint64_t                    ngx_http_linegate_lease_k[2];


static ngx_uint_t ngx_http_linegate_lease_index(ngx_str_t *key);


/* the first slot of key's set; the table made by the worker's first */
static ngx_http_linegate_lease_t *
ngx_http_linegate_lease_set(ngx_str_t *key)
{
    if (key->len > NGX_HTTP_LINEGATE_LEASE_KEY) {
        return NULL;
    }

    if (ngx_http_linegate_leases == NULL) {
        /* no key, no table: each request is decided by Redis */
        if (ngx_http_linegate_random_bytes(
                (u_char *) ngx_http_linegate_lease_k,
                sizeof(ngx_http_linegate_lease_k))
            != 0)
        {
            return NULL;
        }

        ngx_http_linegate_leases = ngx_calloc(
            NGX_HTTP_LINEGATE_LEASE_SETS * NGX_HTTP_LINEGATE_LEASE_WAYS
            * sizeof(ngx_http_linegate_lease_t), ngx_cycle->log);

        if (ngx_http_linegate_leases == NULL) {
            return NULL;
        }
    }

    return &ngx_http_linegate_leases[ngx_http_linegate_lease_index(key)];
}


/* the index of the first slot of key's set, once the table is made */
static ngx_uint_t
ngx_http_linegate_lease_index(ngx_str_t *key)
{
    return (ngx_http_linegate_siphash(ngx_http_linegate_lease_k[0],
                                      ngx_http_linegate_lease_k[1],
                                      key->data, key->len)
            % NGX_HTTP_LINEGATE_LEASE_SETS)
           * NGX_HTTP_LINEGATE_LEASE_WAYS;
}


ngx_http_linegate_lease_t *
ngx_http_linegate_lease_find(ngx_str_t *key)
{
    ngx_uint_t                  i;
    ngx_http_linegate_lease_t  *set;

    set = ngx_http_linegate_lease_set(key);
    if (set == NULL) {
        return NULL;
    }

    for (i = 0; i < NGX_HTTP_LINEGATE_LEASE_WAYS; i++) {
        if (set[i].len == key->len
            && ngx_memcmp(set[i].key, key->data, key->len) == 0)
        {
            return &set[i];
        }
    }

    return NULL;
}


ngx_http_linegate_lease_t *
ngx_http_linegate_lease_get(ngx_str_t *key)
{
    ngx_uint_t                  i;
    ngx_http_linegate_lease_t  *set, *l;

    set = ngx_http_linegate_lease_set(key);
    if (set == NULL) {
        return NULL;
    }

    l = set;

    for (i = 0; i < NGX_HTTP_LINEGATE_LEASE_WAYS; i++) {

        if (set[i].len == key->len
            && ngx_memcmp(set[i].key, key->data, key->len) == 0)
        {
            set[i].used = ngx_current_msec;
            return &set[i];
        }

        /* an empty slot (len 0) is the least recent of all */
        if (set[i].len == 0
            || (l->len != 0
                && (ngx_msec_int_t) (set[i].used - l->used) < 0))
        {
            l = &set[i];
        }
    }

    /* a new key: the least recent one's lease, if any, is dropped */
    ngx_memzero(l, sizeof(ngx_http_linegate_lease_t));
    l->len = (u_short) key->len;
    l->used = ngx_current_msec;
    ngx_memcpy(l->key, key->data, key->len);

    return l;
}


/* the lease being spent: an expired one dropped, the next one taken up */
static void
ngx_http_linegate_lease_current(ngx_http_linegate_lease_t *l)
{
    if (l->tokens
        && (ngx_msec_int_t) (l->until - ngx_current_msec) <= 0)
    {
        /* expired unspent: its admissions are lost */
        l->tokens = 0;
    }

    if (l->tokens == 0 && l->next) {
        l->tokens = l->next;
        l->until = l->next_until;
        l->next = 0;

        if ((ngx_msec_int_t) (l->until - ngx_current_msec) <= 0) {
            l->tokens = 0;
        }
    }
}


ngx_uint_t
ngx_http_linegate_lease_spend(ngx_http_linegate_lease_t *l,
    ngx_msec_t lease, ngx_uint_t max, ngx_uint_t *seq)
{
    uint64_t    target;
    ngx_msec_t  e;

    static ngx_uint_t  last;

    *seq = 0;
    l->seen++;

    ngx_http_linegate_lease_current(l);

    if (l->pending && ngx_current_msec - l->asked >= ngx_max(lease, 100)) {
        /* its answer was lost (the request went away): ask again */
        l->pending = 0;
    }

    if (l->pending || (l->next && l->tokens)) {

        if (l->tokens == 0) {
            /* spent, and the next lease not back yet: a decision alone */
            return 1;
        }

        l->tokens--;
        return 0;
    }

    /* no next lease and none asked for: this request asks, first of it */

    if (l->size == 0 || l->slow) {
        l->size = 1;

    } else {
        e = ngx_current_msec - l->asked;
        target = (e == 0) ? (uint64_t) l->size * 2
                          : (uint64_t) l->seen * lease / (2 * e);
        target = ngx_min(target, (uint64_t) l->size * 2);
        target = ngx_max(target, (uint64_t) l->size / 2);
        l->size = (ngx_uint_t) ngx_max(ngx_min(target, max), 1);
    }

    l->seen = 0;
    l->pending = 1;
    l->asked = ngx_current_msec;
    l->seq = ++last;
    *seq = l->seq;

    return l->size;
}


ngx_uint_t
ngx_http_linegate_lease_granted(ngx_http_linegate_lease_t *l,
    ngx_uint_t seq, int64_t granted, int64_t remaining, int64_t reset_ms,
    ngx_msec_t sent, ngx_msec_t lease)
{
    if (l == NULL || seq == 0 || l->seq != seq) {
        /* not a lease, or the slot went to another key or decision */
        return 0;
    }

    l->pending = 0;
    l->remaining = remaining;

    /* the round trip, against half the lease time (above) */
    l->slow = 2 * (ngx_current_msec - sent) >= lease;

    if (granted < 1) {
        /*
         * the key is busy until then: the Lines API's idle path
         * (lines.c, lr_idle) is not tried before
         */
        l->reset = sent + reset_ms;

        /*
         * Redis has no next lease for the key, but this worker's current
         * one may not be spent: the request takes one of it
         */
        return ngx_http_linegate_lease_take(l, NULL);
    }

    /*
     * this request took one admission, the rest is the next lease, spent
     * from now on if the current one is over; never more than was asked
     * (rl_gcra grants at most that: more is no answer of it)
     */
    l->next = (ngx_uint_t) (ngx_min(granted, (int64_t) l->size) - 1);
    l->next_until = sent + lease;
    l->reset = sent + reset_ms;

    if (l->tokens == 0) {
        l->tokens = l->next;
        l->until = l->next_until;
        l->next = 0;
    }

    return 0;
}


ngx_uint_t
ngx_http_linegate_lease_take(ngx_http_linegate_lease_t *l, ngx_str_t *key)
{
    if (l == NULL
        || (key != NULL
            && (l->len != key->len
                || ngx_memcmp(l->key, key->data, key->len) != 0)))
    {
        /* the slot went to another key since the request looked it up */
        return 0;
    }

    /* Redis refused: none pass there now */
    l->remaining = 0;

    ngx_http_linegate_lease_current(l);

    if (l->tokens == 0) {
        return 0;
    }

    l->tokens--;

    return 1;
}


ngx_uint_t
ngx_http_linegate_lease_tokens(ngx_http_linegate_lease_t *l)
{
    ngx_http_linegate_lease_current(l);

    if (l->next && (ngx_msec_int_t) (l->next_until - ngx_current_msec) > 0) {
        return l->tokens + l->next;
    }

    return l->tokens;
}


int64_t
ngx_http_linegate_lease_left(ngx_http_linegate_lease_t *l, ngx_str_t *key,
    int64_t remaining)
{
    if (l == NULL
        || l->len != key->len
        || ngx_memcmp(l->key, key->data, key->len) != 0)
    {
        return remaining;
    }

    /*
     * A decision alone (sent while the lease decision was in flight, so
     * after it) says fewer pass than the lease's grant did: the admissions
     * the lease spends next are then counted from it, or their r would
     * step back up above the decision's without time passing. Time gives
     * back more (what the next grant will say), never less.
     */
    l->remaining = ngx_min(l->remaining, ngx_max(remaining, 0));

    return ngx_max(remaining, 0) + ngx_http_linegate_lease_tokens(l);
}


void
ngx_http_linegate_lease_done(ngx_http_linegate_lease_t *l, ngx_uint_t seq)
{
    if (l != NULL && seq != 0 && l->seq == seq) {
        l->pending = 0;
    }
}


int64_t
ngx_http_linegate_lease_reset(ngx_http_linegate_lease_t *l)
{
    return ngx_max((ngx_msec_int_t) (l->reset - ngx_current_msec), 0);
}


ngx_uint_t
ngx_http_linegate_lease_max(ngx_msec_t lease, uint64_t interval)
{
    return (ngx_uint_t) ngx_max((uint64_t) lease * 1000 / interval, 1);
}


char *
ngx_http_linegate_lease_parse(ngx_conf_t *cf, ngx_str_t *value,
    ngx_msec_t *lease)
{
    ngx_str_t  s;

    s.data = value->data + 6;
    s.len = value->len - 6;

    *lease = ngx_parse_time(&s, 0);

    if (*lease == (ngx_msec_t) NGX_ERROR || *lease == 0
        || *lease > NGX_HTTP_LINEGATE_LEASE_MAX)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid lease \"%V\" (a time from 1ms to 1s)",
                           value);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}
