
/*
 * linegate: provision-preview and GET /accounts/limits, decided once, in
 * C, for every caller: an account this worker knows (the store accepted
 * that very key id and secret within linegate_api_key_cache) and one
 * pv_account.lua has just checked (ngx_http_linegate_provision.c). Plain
 * commands rather than a script: Redis runs a script's commands several
 * times slower than the same commands sent by a client, and the preview
 * is Redis-bound.
 *
 *   READ   one pipeline, one round trip: HMGET the account (plan,
 *          limits, key_id), ZRANGEBYSCORE the lines of the 30-day window
 *          with their times (the 24-hour window is its newest part;
 *          confirms trim older lines); for a preview, SRANDMEMBER of
 *          the inventory, one number (unless linegate_inventory_cache
 *          trusts that the worker saw one to sell there: the fleet's
 *          master left out) and SET lg:pv:{<tag>}:<digest> (the
 *          account's slot) with its JSON (the account, its expiry) and
 *          expiry, ahead of the checks
 *          An account whose window this worker last found longer than
 *          one read takes is counted instead (COUNTED: each window's
 *          ZCOUNT and its oldest line), in the same one round trip
 *   LONG   a window holding more lines than one read takes
 *          (NGX_HTTP_LINEGATE_PV_READ_MAX), or a counted window over its
 *          limit (lowered below the count): a second round trip, each
 *          window's ZCOUNT and the one line whose leaving frees a slot,
 *          each O(log n) in the window's size: an account with a large
 *          limit (thousands of lines a month) costs Redis what a small
 *          one does
 *   STOCK  a preview whose sample was no E.164 number (a "+0..." loaded
 *          before the loader refused it, or one written by hand), when
 *          the answer would rest on the inventory: pv_stock.lua (the
 *          fleet's slot) sets such numbers aside in the quarantine, as
 *          the confirm's claim would, until it finds one to sell. A
 *          count (SCARD) counted them as stock: an inventory of nothing
 *          else was a 200 whose confirm answered 503
 *   then   the decision: 401 (a key id the account no longer names:
 *          the previous one of a credentials rotation), 200, 403 (plan),
 *          429 (the window that is full), 503 (inventory empty), or the
 *          limits
 *   UNDO   a refused preview: DEL its token, then the refusal; a
 *          preview that fails (500, 503) once READ was sent: DEL its
 *          token, not waited for, then the failure
 *   BODY   a preview's or a confirm's body refused: HGET the account's
 *          key_id instead of READ, then 401 or the 400 (the credentials
 *          before the body); nothing written
 *
 * Rules written here only: the plan check, the 403/429/503 order, the
 * limit fallback and the window arithmetic as a preview and the limits
 * read them. None of this needs a script's atomicity: a preview only
 * checks, and pv_reserve.lua, the only writer of lg:{acct:<A>}:prov,
 * enforces the limits again atomically with the purchase (its
 * lg_pv_window/lg_pv_limit in include/pv_state.lua, the same rule; the
 * window lengths come from ngx_http_linegate_provision.h for both,
 * through embed.pl). The token written ahead is a random name nobody has
 * been told: until a refusal or a failure deletes it (and if that DEL is
 * lost, until it expires) nothing can use it.
 */


#include "ngx_http_linegate_module.h"

#include <math.h>      /* isfinite(), isnan(): macros */
#include <stdlib.h>

#include "ngx_http_linegate_provision.h"
#include "ngx_http_linegate_json_write.h"
#include "ngx_http_linegate_reply.h"
#include "ngx_http_linegate_chars.h"


#define NGX_HTTP_LINEGATE_PV_DAY_MS    (NGX_HTTP_LINEGATE_PV_DAY * 1000LL)
#define NGX_HTTP_LINEGATE_PV_MONTH_MS  (NGX_HTTP_LINEGATE_PV_MONTH * 1000LL)

/*
 * lines of the 30-day window read at once; more: the LONG read. The
 * default limits are 3 and 10 lines: a window rarely holds more than a
 * few dozen, and reading 1,000 lines (73 us of Redis a preview, measured
 * under make bench's confirm phase) cost more than the second round trip
 */
#define NGX_HTTP_LINEGATE_PV_READ_MAX  32

/*
 * Accounts whose 30-day window this worker last found longer than one
 * read takes (a large limit, bought at): their next READ counts the
 * windows instead of reading lines, which saves the LONG round trip.
 * Direct-mapped by a hash of the account id, 0 empty; a collision, or a
 * window that shrank, costs one preview what it cost before.
 */
#define NGX_HTTP_LINEGATE_PV_LONG_SLOTS  256

static uint32_t  ngx_http_linegate_pv_long[NGX_HTTP_LINEGATE_PV_LONG_SLOTS];

/* 2^53 ms: beyond, a score is no clock's time (a corrupt one, 1e300) */
#define NGX_HTTP_LINEGATE_PV_TIME_MAX  9007199254740992LL


static void ngx_http_linegate_pv_plain_read_done(ngx_http_request_t *r,
    redisReply *reply);
static ngx_uint_t ngx_http_linegate_pv_plain_lines(ngx_http_request_t *r,
    ngx_http_linegate_pv_request_t *pv, ngx_str_t *prov,
    ngx_http_linegate_redis_args_t *a);
static void ngx_http_linegate_pv_plain_count(ngx_http_request_t *r,
    ngx_str_t *prov, ngx_uint_t i, int64_t now,
    ngx_http_linegate_redis_args_t *c);
static void ngx_http_linegate_pv_plain_from(ngx_http_request_t *r,
    ngx_http_linegate_redis_args_t *a, int64_t from);
static uint32_t *ngx_http_linegate_pv_plain_long_slot(
    ngx_http_linegate_pv_request_t *pv);
static ngx_int_t ngx_http_linegate_pv_plain_windows(
    ngx_http_linegate_pv_request_t *pv, redisReply *lines);
static ngx_int_t ngx_http_linegate_pv_plain_counted(
    ngx_http_linegate_pv_request_t *pv, redisReply **counts);
static ngx_int_t ngx_http_linegate_pv_plain_window_line(
    ngx_http_linegate_pv_window_t *w, int64_t now, int64_t window_ms,
    redisReply *line);
static void ngx_http_linegate_pv_plain_long(ngx_http_request_t *r,
    ngx_http_linegate_pv_request_t *pv);
static void ngx_http_linegate_pv_plain_long_done(ngx_http_request_t *r,
    redisReply *reply);
static ngx_int_t ngx_http_linegate_pv_plain_time(redisReply *v, int64_t *t);
static int64_t ngx_http_linegate_pv_plain_skip(int64_t used, int64_t limit);
static int64_t ngx_http_linegate_pv_plain_free_at(int64_t t,
    int64_t window_ms);
static void ngx_http_linegate_pv_plain_ready(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, ngx_http_linegate_pv_request_t *pv);
static void ngx_http_linegate_pv_plain_stock_done(ngx_http_request_t *r,
    redisReply *reply);
static void ngx_http_linegate_pv_plain_decide(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, ngx_http_linegate_pv_request_t *pv);
static ngx_int_t ngx_http_linegate_pv_plain_write(ngx_http_request_t *r,
    ngx_http_linegate_pv_request_t *pv, ngx_http_linegate_redis_args_t *a);
static void ngx_http_linegate_pv_plain_refuse(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, ngx_http_linegate_pv_request_t *pv);
static void ngx_http_linegate_pv_plain_fail(ngx_http_request_t *r,
    ngx_http_linegate_pv_request_t *pv, ngx_uint_t status);
static void ngx_http_linegate_pv_plain_undone(ngx_http_request_t *r,
    redisReply *reply);
static int64_t ngx_http_linegate_pv_plain_limit(redisReply *v,
    ngx_uint_t def);
static ngx_uint_t ngx_http_linegate_pv_plain_key_id(redisReply *v,
    ngx_str_t *key_id);
static void ngx_http_linegate_pv_plain_unknown(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, ngx_http_linegate_pv_request_t *pv);
static void ngx_http_linegate_pv_plain_bad_read(ngx_http_request_t *r,
    redisReply *reply);


void
ngx_http_linegate_pv_plain(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, ngx_http_linegate_pv_request_t *pv)
{
    u_char                          *p;
    size_t                           len;
    ngx_str_t                        akey, prov;
    ngx_uint_t                       n;
    ngx_http_linegate_redis_args_t  *a;

    /* lg:{acct:<A>}, lg:{acct:<A>}:prov */
    len = ngx_http_linegate_key_len(NGX_HTTP_LINEGATE_KEY_ACCT,
                                    &pv->who.value, NULL)
          + ngx_http_linegate_key_len(NGX_HTTP_LINEGATE_KEY_ACCT_PROV,
                                      &pv->who.value, NULL);

    p = ngx_pnalloc(r->pool, len);
    a = ngx_palloc(r->pool, 7 * sizeof(ngx_http_linegate_redis_args_t));

    if (p == NULL || a == NULL) {
        ngx_http_linegate_internal_error(r);
        return;
    }

    akey.data = p;
    p = ngx_http_linegate_key_write(p, NGX_HTTP_LINEGATE_KEY_ACCT,
                                    &pv->who.value, NULL);
    akey.len = p - akey.data;

    prov.data = p;
    p = ngx_http_linegate_key_write(p, NGX_HTTP_LINEGATE_KEY_ACCT_PROV,
                                    &pv->who.value, NULL);
    prov.len = p - prov.data;

    ngx_http_linegate_redis_args_init(&a[0]);
    ngx_http_linegate_redis_arg_cstr(&a[0], "HMGET");
    ngx_http_linegate_redis_arg_str(&a[0], &akey);
    ngx_http_linegate_redis_arg_cstr(&a[0], "plan");
    ngx_http_linegate_redis_arg_cstr(&a[0], "daily_limit");
    ngx_http_linegate_redis_arg_cstr(&a[0], "monthly_limit");
    ngx_http_linegate_redis_arg_cstr(&a[0], "key_id");

    n = 1 + ngx_http_linegate_pv_plain_lines(r, pv, &prov, &a[1]);

    if (pv->preview) {
        /* the inventory's master left out while a number is known there */
        pv->stock_known = ngx_http_linegate_pv_stock_known(r);

        if (!pv->stock_known) {
            /* one number: O(1), as SCARD was, and it says what it is */
            ngx_http_linegate_redis_args_init(&a[n]);
            ngx_http_linegate_redis_arg_cstr(&a[n], "SRANDMEMBER");
            ngx_http_linegate_redis_arg_str(&a[n],
                ngx_http_linegate_key_fixed(NGX_HTTP_LINEGATE_KEY_INVENTORY));
            n++;
        }

        if (ngx_http_linegate_pv_plain_write(r, pv, &a[n]) != NGX_OK) {
            ngx_http_linegate_internal_error(r);
            return;
        }

        n++;
    }

    if (ngx_http_linegate_redis_pipeline(r, n, a,
                                         ngx_http_linegate_pv_plain_read_done)
        != NGX_OK)
    {
        ngx_http_linegate_store_unavailable(r);
    }
}


/*
 * The windows' part of READ, into a: the lines of the 30-day window
 * (strictly newer than now - 30 days, as the script counts), or, for an
 * account this worker knows to have a long one, both windows counted.
 * The number of commands.
 */
static ngx_uint_t
ngx_http_linegate_pv_plain_lines(ngx_http_request_t *r,
    ngx_http_linegate_pv_request_t *pv, ngx_str_t *prov,
    ngx_http_linegate_redis_args_t *a)
{
    uint32_t  *slot;

    slot = ngx_http_linegate_pv_plain_long_slot(pv);

    pv->counted = *slot == pv->long_hash;

    if (pv->counted) {
        ngx_http_linegate_pv_plain_count(r, prov, 0, pv->now, &a[0]);
        ngx_http_linegate_pv_plain_count(r, prov, 1, pv->now, &a[2]);
        return 4;
    }

    ngx_http_linegate_redis_args_init(&a[0]);
    ngx_http_linegate_redis_arg_cstr(&a[0], "ZRANGEBYSCORE");
    ngx_http_linegate_redis_arg_str(&a[0], prov);
    ngx_http_linegate_pv_plain_from(r, &a[0],
                                     pv->now - NGX_HTTP_LINEGATE_PV_MONTH_MS);
    ngx_http_linegate_redis_arg_cstr(&a[0], "+inf");
    ngx_http_linegate_redis_arg_cstr(&a[0], "WITHSCORES");
    ngx_http_linegate_redis_arg_cstr(&a[0], "LIMIT");
    ngx_http_linegate_redis_arg_cstr(&a[0], "0");
    ngx_http_linegate_redis_arg_int(r, &a[0],
                                    NGX_HTTP_LINEGATE_PV_READ_MAX + 1);

    return 1;
}


/* window i (0: 24 hours, 1: 30 days): its ZCOUNT and its oldest line */
static void
ngx_http_linegate_pv_plain_count(ngx_http_request_t *r, ngx_str_t *prov,
    ngx_uint_t i, int64_t now, ngx_http_linegate_redis_args_t *c)
{
    int64_t  from;

    from = now - (i ? NGX_HTTP_LINEGATE_PV_MONTH_MS
                    : NGX_HTTP_LINEGATE_PV_DAY_MS);

    ngx_http_linegate_redis_args_init(&c[0]);
    ngx_http_linegate_redis_arg_cstr(&c[0], "ZCOUNT");
    ngx_http_linegate_redis_arg_str(&c[0], prov);
    ngx_http_linegate_pv_plain_from(r, &c[0], from);
    ngx_http_linegate_redis_arg_cstr(&c[0], "+inf");

    ngx_http_linegate_redis_args_init(&c[1]);
    ngx_http_linegate_redis_arg_cstr(&c[1], "ZRANGEBYSCORE");
    ngx_http_linegate_redis_arg_str(&c[1], prov);
    ngx_http_linegate_pv_plain_from(r, &c[1], from);
    ngx_http_linegate_redis_arg_cstr(&c[1], "+inf");
    ngx_http_linegate_redis_arg_cstr(&c[1], "WITHSCORES");
    ngx_http_linegate_redis_arg_cstr(&c[1], "LIMIT");
    ngx_http_linegate_redis_arg_cstr(&c[1], "0");
    ngx_http_linegate_redis_arg_cstr(&c[1], "1");
}


/* "(<ms>": strictly newer than the window's start, as the script counts */
static void
ngx_http_linegate_pv_plain_from(ngx_http_request_t *r,
    ngx_http_linegate_redis_args_t *a, int64_t from)
{
    u_char  *p, *last;

    p = ngx_pnalloc(r->pool, 1 + NGX_INT64_LEN);
    if (p == NULL) {
        a->argc = -1;
        return;
    }

    last = ngx_sprintf(p, "(%L", from);
    ngx_http_linegate_redis_arg(a, p, last - p);
}


/* the account's slot in the worker's table of long windows */
static uint32_t *
ngx_http_linegate_pv_plain_long_slot(ngx_http_linegate_pv_request_t *pv)
{
    uint32_t  hash;

    hash = (uint32_t) ngx_hash_key(pv->who.value.data, pv->who.value.len);

    pv->long_hash = hash ? hash : 1;

    return &ngx_http_linegate_pv_long[hash
                                      % NGX_HTTP_LINEGATE_PV_LONG_SLOTS];
}


static void
ngx_http_linegate_pv_plain_read_done(ngx_http_request_t *r,
    redisReply *reply)
{
    size_t                           base;
    uint32_t                        *slot;
    ngx_int_t                        rc;
    redisReply                      *acct, *inv;
    ngx_http_linegate_ctx_t         *ctx;
    ngx_http_linegate_main_conf_t   *lmcf;
    ngx_http_linegate_pv_request_t  *pv;

    lmcf = ngx_http_get_module_main_conf(r, ngx_http_linegate_module);
    ctx = ngx_http_linegate_get_ctx(r);
    pv = ctx->data;

    if (reply == NULL) {
        ngx_http_linegate_pv_plain_fail(r, pv, NGX_HTTP_SERVICE_UNAVAILABLE);
        return;
    }

    /*
     * one element per command: HMGET, ZRANGEBYSCORE or (COUNTED) 2 x
     * (ZCOUNT, ZRANGEBYSCORE) (, [SRANDMEMBER,] SET)
     */
    base = pv->counted ? 5 : 2;

    if (reply->type != REDIS_REPLY_ARRAY
        || reply->elements
           != base + (pv->preview ? 2 - pv->stock_known : 0))
    {
        goto unexpected;
    }

    acct = reply->element[0];

    if (acct->type != REDIS_REPLY_ARRAY || acct->elements != 4) {
        goto unexpected;
    }

    if (!ngx_http_linegate_pv_plain_key_id(acct->element[3], &pv->key_id)) {
        /* a key id the account no longer names (a rotation): 401 */
        ngx_http_linegate_pv_plain_unknown(r, ctx, pv);
        return;
    }

    pv->eligible = acct->element[0]->type == REDIS_REPLY_STRING
                   && acct->element[0]->len == sizeof("inbound_only") - 1
                   && ngx_strncmp(acct->element[0]->str, "inbound_only",
                                  sizeof("inbound_only") - 1) == 0;

    pv->st.now = pv->now;
    pv->st.daily.limit = ngx_http_linegate_pv_plain_limit(acct->element[1],
                                                          lmcf->prov_daily);
    pv->st.monthly.limit = ngx_http_linegate_pv_plain_limit(
                               acct->element[2], lmcf->prov_monthly);

    if (pv->preview && pv->stock_known) {
        if (reply->element[base]->type != REDIS_REPLY_STATUS) {
            goto unexpected;
        }

        pv->inventory = 1;

    } else if (pv->preview) {
        inv = reply->element[base];

        if ((inv->type != REDIS_REPLY_STRING && inv->type != REDIS_REPLY_NIL)
            || reply->element[base + 1]->type != REDIS_REPLY_STATUS)
        {
            goto unexpected;
        }

        if (inv->type == REDIS_REPLY_NIL) {
            pv->inventory = 0;
            ngx_http_linegate_pv_stock_seen(r, 0);

        } else if (ngx_http_linegate_e164_valid((u_char *) inv->str,
                                                inv->len))
        {
            pv->inventory = 1;
            ngx_http_linegate_pv_stock_seen(r, 1);

        } else {
            /* no number to sell: whether another is there, STOCK says */
            pv->inventory = 0;
            pv->stock_check = 1;
        }
    }

    slot = ngx_http_linegate_pv_plain_long_slot(pv);

    rc = pv->counted
         ? ngx_http_linegate_pv_plain_counted(pv, &reply->element[1])
         : ngx_http_linegate_pv_plain_windows(pv, reply->element[1]);

    /* the next READ of this account counts, or reads the lines again */
    if (pv->counted ? pv->st.monthly.used > NGX_HTTP_LINEGATE_PV_READ_MAX
                    : rc == NGX_DECLINED)
    {
        *slot = pv->long_hash;

    } else if (*slot == pv->long_hash && rc != NGX_ERROR) {
        *slot = 0;
    }

    if (rc == NGX_DECLINED) {
        /* more lines than one read takes, or a counted window over its
         * limit: the line that frees a slot is found by its rank */
        ngx_http_linegate_pv_plain_long(r, pv);
        return;
    }

    if (rc != NGX_OK) {
        goto unexpected;
    }

    ngx_http_linegate_pv_plain_ready(r, ctx, pv);
    return;

unexpected:

    ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                  NGX_HTTP_LINEGATE_LOG "unexpected reply to the account's "
                  "reads");
    ngx_http_linegate_pv_plain_fail(r, pv, NGX_HTTP_INTERNAL_SERVER_ERROR);
}


/*
 * Both windows from the 30-day window's lines, [member, time, ...] oldest
 * first: the 24-hour window is its tail. NGX_DECLINED: too many to read.
 */
static ngx_int_t
ngx_http_linegate_pv_plain_windows(ngx_http_linegate_pv_request_t *pv,
    redisReply *lines)
{
    size_t    i;
    int64_t   n, day, skip, *times;
    int64_t   buf[NGX_HTTP_LINEGATE_PV_READ_MAX];

    if (lines->type != REDIS_REPLY_ARRAY || lines->elements % 2) {
        return NGX_ERROR;
    }

    n = (int64_t) (lines->elements / 2);

    if (n > NGX_HTTP_LINEGATE_PV_READ_MAX) {
        return NGX_DECLINED;
    }

    times = buf;

    for (i = 0; i < (size_t) n; i++) {
        if (ngx_http_linegate_pv_plain_time(lines->element[2 * i + 1],
                                            &times[i])
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    /* the first line strictly newer than now - 24 h */
    for (day = 0; day < n; day++) {
        if (times[day] > pv->now - NGX_HTTP_LINEGATE_PV_DAY_MS) {
            break;
        }
    }

    pv->st.monthly.used = n;
    skip = ngx_http_linegate_pv_plain_skip(n, pv->st.monthly.limit);
    pv->st.monthly.free_at = skip < 0 ? 0
        : ngx_http_linegate_pv_plain_free_at(times[skip],
                                             NGX_HTTP_LINEGATE_PV_MONTH_MS);

    pv->st.daily.used = n - day;
    skip = ngx_http_linegate_pv_plain_skip(n - day, pv->st.daily.limit);
    pv->st.daily.free_at = skip < 0 ? 0
        : ngx_http_linegate_pv_plain_free_at(times[day + skip],
                                             NGX_HTTP_LINEGATE_PV_DAY_MS);

    return NGX_OK;
}


/*
 * COUNTED: both windows from [ZCOUNT, oldest line] each. NGX_DECLINED: a
 * window over its limit (the line that frees a slot is not the oldest).
 */
static ngx_int_t
ngx_http_linegate_pv_plain_counted(ngx_http_linegate_pv_request_t *pv,
    redisReply **counts)
{
    ngx_uint_t                      i;
    redisReply                     *count;
    ngx_http_linegate_pv_window_t  *w;

    /* both counts first: the caller's table of long windows reads them */
    for (i = 0; i < 2; i++) {
        w = i ? &pv->st.monthly : &pv->st.daily;
        count = counts[2 * i];

        if (count->type != REDIS_REPLY_INTEGER || count->integer < 0) {
            return NGX_ERROR;
        }

        w->used = count->integer;
    }

    for (i = 0; i < 2; i++) {
        w = i ? &pv->st.monthly : &pv->st.daily;

        if (ngx_http_linegate_pv_plain_skip(w->used, w->limit) > 0) {
            return NGX_DECLINED;
        }

        if (ngx_http_linegate_pv_plain_window_line(w, pv->now,
                i ? NGX_HTTP_LINEGATE_PV_MONTH_MS : NGX_HTTP_LINEGATE_PV_DAY_MS,
                counts[2 * i + 1])
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


/*
 * A counted window's free_at (w->used set) from the line that frees a
 * slot ([member, time] or none), unless nothing counts or none ever frees
 */
static ngx_int_t
ngx_http_linegate_pv_plain_window_line(ngx_http_linegate_pv_window_t *w,
    int64_t now, int64_t window_ms, redisReply *line)
{
    int64_t  t;

    w->free_at = 0;

    if (ngx_http_linegate_pv_plain_skip(w->used, w->limit) < 0) {
        return NGX_OK;
    }

    if (line->type != REDIS_REPLY_ARRAY || line->elements % 2) {
        return NGX_ERROR;
    }

    if (line->elements == 0) {
        /* left the window between the commands */
        return NGX_OK;
    }

    if (ngx_http_linegate_pv_plain_time(line->element[1], &t) != NGX_OK) {
        return NGX_ERROR;
    }

    if (t > now - window_ms) {
        w->free_at = ngx_http_linegate_pv_plain_free_at(t, window_ms);
    }

    return NGX_OK;
}


/*
 * LONG: per window, ZCOUNT, the oldest line and the limit-th newest
 * (the line whose leaving frees a slot is one of them, whichever the
 * count says), in one pipeline. The limit-th newest by its rank from the
 * newest end (ZREVRANGE): the lines of a window are the newest of the
 * set, and a rank is found in O(log n) where an offset into a range
 * walks it. Not atomic with the first read, nor need it be: a preview
 * only checks.
 */
static void
ngx_http_linegate_pv_plain_long(ngx_http_request_t *r,
    ngx_http_linegate_pv_request_t *pv)
{
    u_char                          *p;
    int64_t                          limit, rank;
    ngx_str_t                        prov;
    ngx_uint_t                       i;
    ngx_http_linegate_redis_args_t  *a, *c;

    p = ngx_pnalloc(r->pool,
                    ngx_http_linegate_key_len(NGX_HTTP_LINEGATE_KEY_ACCT_PROV,
                                              &pv->who.value, NULL));
    a = ngx_palloc(r->pool, 6 * sizeof(ngx_http_linegate_redis_args_t));

    if (p == NULL || a == NULL) {
        ngx_http_linegate_pv_plain_fail(r, pv, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    prov.data = p;
    p = ngx_http_linegate_key_write(p, NGX_HTTP_LINEGATE_KEY_ACCT_PROV,
                                    &pv->who.value, NULL);
    prov.len = p - prov.data;

    for (i = 0; i < 2; i++) {
        c = &a[3 * i];
        limit = i ? pv->st.monthly.limit : pv->st.daily.limit;
        rank = limit > 0 ? limit - 1 : 0;

        ngx_http_linegate_pv_plain_count(r, &prov, i, pv->now, c);

        ngx_http_linegate_redis_args_init(&c[2]);
        ngx_http_linegate_redis_arg_cstr(&c[2], "ZREVRANGE");
        ngx_http_linegate_redis_arg_str(&c[2], &prov);
        ngx_http_linegate_redis_arg_int(r, &c[2], rank);
        ngx_http_linegate_redis_arg_int(r, &c[2], rank);
        ngx_http_linegate_redis_arg_cstr(&c[2], "WITHSCORES");
    }

    if (ngx_http_linegate_redis_pipeline(r, 6, a,
                                         ngx_http_linegate_pv_plain_long_done)
        != NGX_OK)
    {
        ngx_http_linegate_pv_plain_fail(r, pv, NGX_HTTP_SERVICE_UNAVAILABLE);
    }
}


static void
ngx_http_linegate_pv_plain_long_done(ngx_http_request_t *r,
    redisReply *reply)
{
    ngx_uint_t                       i;
    redisReply                      *count, *line;
    ngx_http_linegate_ctx_t         *ctx;
    ngx_http_linegate_pv_window_t   *w;
    ngx_http_linegate_pv_request_t  *pv;

    ctx = ngx_http_linegate_get_ctx(r);
    pv = ctx->data;

    if (reply == NULL) {
        ngx_http_linegate_pv_plain_fail(r, pv, NGX_HTTP_SERVICE_UNAVAILABLE);
        return;
    }

    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 6) {
        goto unexpected;
    }

    for (i = 0; i < 2; i++) {
        w = i ? &pv->st.monthly : &pv->st.daily;
        count = reply->element[3 * i];

        if (count->type != REDIS_REPLY_INTEGER || count->integer < 0) {
            goto unexpected;
        }

        w->used = count->integer;

        /* the oldest; over the limit, the limit-th newest */
        line = reply->element[3 * i + (ngx_http_linegate_pv_plain_skip(
                                           w->used, w->limit) > 0 ? 2 : 1)];

        if (ngx_http_linegate_pv_plain_window_line(w, pv->now,
                i ? NGX_HTTP_LINEGATE_PV_MONTH_MS : NGX_HTTP_LINEGATE_PV_DAY_MS,
                line)
            != NGX_OK)
        {
            goto unexpected;
        }
    }

    ngx_http_linegate_pv_plain_ready(r, ctx, pv);
    return;

unexpected:

    ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                  NGX_HTTP_LINEGATE_LOG "unexpected reply to the account's "
                  "window counts");
    ngx_http_linegate_pv_plain_fail(r, pv, NGX_HTTP_INTERNAL_SERVER_ERROR);
}


/*
 * A line's time (its score, Unix ms); beyond 2^53 ms (a corrupt 1e300,
 * or inf: ZADD takes "+inf", Redis answers "inf"), which int64_t need not
 * hold, NGX_HTTP_LINEGATE_PV_TIME_MAX: it still counts, and frees no
 * slot anyone can wait for, as the confirm's script counts it.
 */
static ngx_int_t
ngx_http_linegate_pv_plain_time(redisReply *v, int64_t *t)
{
    char    *end;
    double   d;

    if (v->type != REDIS_REPLY_STRING) {
        return NGX_ERROR;
    }

    /* hiredis ends every string with a NUL */
    d = strtod(v->str, &end);

    /* no score is NaN (ZADD refuses it); an infinite one is clamped */
    if (end == v->str || *end != '\0' || isnan(d)) {
        return NGX_ERROR;
    }

    if (d >= (double) NGX_HTTP_LINEGATE_PV_TIME_MAX) {
        *t = NGX_HTTP_LINEGATE_PV_TIME_MAX;

    } else if (d <= (double) -NGX_HTTP_LINEGATE_PV_TIME_MAX) {
        *t = -NGX_HTTP_LINEGATE_PV_TIME_MAX;

    } else {
        *t = (int64_t) d;
    }

    return NGX_OK;
}


/*
 * The window rule (lg_pv_window of include/pv_state.lua, which the
 * confirm enforces): free_at is the moment one more line can be added.
 * When the window is full, when line used - limit (oldest first) leaves
 * (the oldest, unless the limit was lowered); otherwise when the oldest
 * leaves. The index of that line, or -1 when nothing counts or no slot
 * ever frees (a limit of 0): free_at 0.
 */
static int64_t
ngx_http_linegate_pv_plain_skip(int64_t used, int64_t limit)
{
    int64_t  skip;

    skip = used >= limit ? used - limit : 0;

    return skip < used ? skip : -1;
}


static int64_t
ngx_http_linegate_pv_plain_free_at(int64_t t, int64_t window_ms)
{
    if (t >= NGX_HTTP_LINEGATE_PV_TIME_MAX
        || t <= -NGX_HTTP_LINEGATE_PV_TIME_MAX)
    {
        return 0;
    }

    return t + window_ms;
}


/*
 * READ (and LONG) taken: STOCK first when the inventory's sample was no
 * number to sell and the answer would rest on the inventory (a preview
 * refused for its plan or a window never looks further), else the
 * decision
 */
static void
ngx_http_linegate_pv_plain_ready(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, ngx_http_linegate_pv_request_t *pv)
{
    ngx_http_linegate_redis_args_t  *a;

    if (!pv->stock_check || !pv->eligible
        || pv->st.daily.used >= pv->st.daily.limit
        || pv->st.monthly.used >= pv->st.monthly.limit)
    {
        ngx_http_linegate_pv_plain_decide(r, ctx, pv);
        return;
    }

    /* pv_account.lua's arguments are done with (a known account: unused) */
    a = &pv->args;

    ngx_http_linegate_redis_args_init(a);
    ngx_http_linegate_redis_arg_str(a,
        ngx_http_linegate_key_fixed(NGX_HTTP_LINEGATE_KEY_INVENTORY));
    ngx_http_linegate_redis_arg_str(a,
        ngx_http_linegate_key_fixed(NGX_HTTP_LINEGATE_KEY_QUARANTINE));

    if (ngx_http_linegate_redis_script(r, NGX_HTTP_LINEGATE_SCRIPT_PV_STOCK,
                                       2, a,
                                       ngx_http_linegate_pv_plain_stock_done)
        != NGX_OK)
    {
        ngx_http_linegate_pv_plain_fail(r, pv, NGX_HTTP_SERVICE_UNAVAILABLE);
    }
}


/* STOCK: {1 | 0, the numbers set aside...} */
static void
ngx_http_linegate_pv_plain_stock_done(ngx_http_request_t *r,
    redisReply *reply)
{
    int64_t                          found;
    ngx_http_linegate_ctx_t         *ctx;
    ngx_http_linegate_pv_request_t  *pv;

    ctx = ngx_http_linegate_get_ctx(r);
    pv = ctx->data;

    if (reply == NULL) {
        /* numbers may have been set aside, unseen: nothing else changed */
        ngx_http_linegate_pv_plain_fail(r, pv, NGX_HTTP_SERVICE_UNAVAILABLE);
        return;
    }

    if (ngx_http_linegate_reply_int(reply, 0, &found) != NGX_OK
        || (found != 0 && found != 1))
    {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      NGX_HTTP_LINEGATE_LOG "unexpected reply to the "
                      "inventory's look");
        ngx_http_linegate_pv_plain_fail(r, pv,
                                        NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    ngx_http_linegate_pv_aside(r, reply, 1);

    pv->stock_check = 0;
    pv->inventory = found;
    ngx_http_linegate_pv_stock_seen(r, found);

    ngx_http_linegate_pv_plain_decide(r, ctx, pv);
}


/*
 * The one decision of preview and limits: the plan, then the 24-hour
 * window, the 30-day window, the inventory (pv_reserve.lua and
 * pv_claim.lua check the same, in the same order, again at the purchase)
 */
static void
ngx_http_linegate_pv_plain_decide(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, ngx_http_linegate_pv_request_t *pv)
{
    int64_t                        code;
    ngx_str_t                      error;
    ngx_http_linegate_pv_state_t  *st;

    st = &pv->st;

    if (ngx_http_linegate_pv_headers(r, ctx, st) != NGX_OK) {
        ngx_http_linegate_pv_plain_fail(r, pv, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    ngx_str_null(&error);

    if (!pv->eligible) {
        code = NGX_HTTP_FORBIDDEN;

    } else if (!pv->preview) {
        ngx_http_linegate_pv_limits_ok(r, st);
        return;

    } else if (st->daily.used >= st->daily.limit) {
        code = NGX_HTTP_TOO_MANY_REQUESTS;
        ngx_str_set(&error, "daily_limit_reached");

    } else if (st->monthly.used >= st->monthly.limit) {
        code = NGX_HTTP_TOO_MANY_REQUESTS;
        ngx_str_set(&error, "monthly_limit_reached");

    } else if (pv->inventory == 0) {
        code = NGX_HTTP_SERVICE_UNAVAILABLE;

    } else {
        /* the token was written with the reads */
        ngx_http_linegate_pv_preview_ok(r, pv);
        return;
    }

    pv->refused = code;
    pv->refused_error = error;

    if (pv->preview) {
        ngx_http_linegate_pv_plain_refuse(r, ctx, pv);
        return;
    }

    if (ngx_http_linegate_pv_refuse(r, ctx, code, &error, st) != NGX_OK) {
        ngx_http_linegate_internal_error(r);
    }
}


/* UNDO: a refused preview leaves nothing: its token goes first */
static void
ngx_http_linegate_pv_plain_refuse(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, ngx_http_linegate_pv_request_t *pv)
{
    ngx_str_t                        key, token;
    ngx_http_linegate_redis_args_t  *a;

    token.data = pv->token;
    token.len = NGX_HTTP_LINEGATE_PV_TOKEN_LEN;

    a = &pv->args;

    if (ngx_http_linegate_key_pv(r->pool, &token, &key)
        != NGX_OK)
    {
        ngx_http_linegate_internal_error(r);
        return;
    }

    ngx_http_linegate_redis_args_init(a);
    ngx_http_linegate_redis_arg_cstr(a, "DEL");
    ngx_http_linegate_redis_arg_str(a, &key);

    if (ngx_http_linegate_redis_command(r, a,
                                        ngx_http_linegate_pv_plain_undone)
        != NGX_OK)
    {
        /* not sent: the token expires unseen; the refusal stands */
        ngx_http_linegate_pv_plain_undone(r, NULL);
    }
}


/*
 * A preview that fails once its token may be written (READ sent: a 503
 * of Redis, a 500 of a reply it did not expect) deletes it, not waited
 * for, before its answer. Nobody was told the token, so nobody could
 * spend it; but a failure leaves no more behind than a refusal does,
 * rather than a token for linegate_preview_ttl. Limits wrote nothing.
 */
static void
ngx_http_linegate_pv_plain_fail(ngx_http_request_t *r,
    ngx_http_linegate_pv_request_t *pv, ngx_uint_t status)
{
    ngx_str_t                       key, token;
    ngx_http_linegate_redis_args_t  a;

    token.data = pv->token;
    token.len = NGX_HTTP_LINEGATE_PV_TOKEN_LEN;

    if (pv->preview
        && ngx_http_linegate_key_pv(r->pool, &token, &key) == NGX_OK)
    {
        ngx_http_linegate_redis_args_init(&a);
        ngx_http_linegate_redis_arg_cstr(&a, "DEL");
        ngx_http_linegate_redis_arg_str(&a, &key);

        /* not sent (Redis gone): it expires unseen, as a lost DEL's */
        (void) ngx_http_linegate_redis_command(r, &a, NULL);
    }

    if (status == NGX_HTTP_SERVICE_UNAVAILABLE) {
        ngx_http_linegate_store_unavailable(r);
        return;
    }

    ngx_http_linegate_internal_error(r);
}


static void
ngx_http_linegate_pv_plain_undone(ngx_http_request_t *r, redisReply *reply)
{
    ngx_http_linegate_ctx_t         *ctx;
    ngx_http_linegate_pv_request_t  *pv;

    ctx = ngx_http_linegate_get_ctx(r);
    pv = ctx->data;

    if (reply == NULL) {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      NGX_HTTP_LINEGATE_LOG "the token of a refused preview "
                      "was not deleted: it expires unused");
    }

    if (ngx_http_linegate_pv_refuse(r, ctx, pv->refused, &pv->refused_error,
                                    &pv->st)
        != NGX_OK)
    {
        ngx_http_linegate_internal_error(r);
    }
}


/*
 * the token's SET into a: lg:pv:<digest>, its own slot, the preview
 * pv_token.lua reads (and deletes) to confirm it; the account in it
 * tells the confirm of another account a 403 from a 410
 */
static ngx_int_t
ngx_http_linegate_pv_plain_write(ngx_http_request_t *r,
    ngx_http_linegate_pv_request_t *pv, ngx_http_linegate_redis_args_t *a)
{
    ngx_str_t                        json, key, token;
    ngx_http_linegate_json_write_t   jw;
    ngx_http_linegate_main_conf_t   *lmcf;

    lmcf = ngx_http_get_module_main_conf(r, ngx_http_linegate_module);

    (void) ngx_http_linegate_json_write_init(&jw, r->pool, 192);
    ngx_http_linegate_json_write_object(&jw);
    ngx_http_linegate_json_write_key(&jw, "account");
    ngx_http_linegate_json_write_str(&jw, pv->who.value.data,
                                     pv->who.value.len);
    ngx_http_linegate_json_write_key(&jw, "key_id");
    ngx_http_linegate_json_write_str(&jw, pv->key_id.data, pv->key_id.len);
    ngx_http_linegate_json_write_key(&jw, "created_at");
    ngx_http_linegate_json_write_int(&jw, pv->now);
    ngx_http_linegate_json_write_key(&jw, "expires_at");
    ngx_http_linegate_json_write_int(&jw, pv->now + lmcf->preview_ttl * 1000);
    ngx_http_linegate_json_write_end(&jw, '}');

    token.data = pv->token;
    token.len = NGX_HTTP_LINEGATE_PV_TOKEN_LEN;

    if (ngx_http_linegate_json_write_finish(&jw, &json) != NGX_OK
        || ngx_http_linegate_key_pv(r->pool, &token, &key)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    ngx_http_linegate_redis_args_init(a);
    ngx_http_linegate_redis_arg_cstr(a, "SET");
    ngx_http_linegate_redis_arg_str(a, &key);
    ngx_http_linegate_redis_arg_str(a, &json);
    ngx_http_linegate_redis_arg_cstr(a, "EX");
    ngx_http_linegate_redis_arg_int(r, a, lmcf->preview_ttl);

    return NGX_OK;
}


/*
 * The account's own limit when it is a number >= 0 (rounded down), else
 * the default (lg_pv_limit of include/pv_state.lua, the confirm's). Read
 * as Lua's tonumber() reads it there: strtod(), nothing converted is no
 * number (white space alone too), and after the number only what C's
 * isspace() takes in the "C" locale, \v and \f as well.
 */
static int64_t
ngx_http_linegate_pv_plain_limit(redisReply *v, ngx_uint_t def)
{
    char    *end;
    double   n;

    if (v->type != REDIS_REPLY_STRING || v->len == 0) {
        return (int64_t) def;
    }

    n = strtod(v->str, &end);

    if (end == v->str) {
        return (int64_t) def;
    }

    while (*end == ' ' || (*end >= '\t' && *end <= '\r')) {
        end++;
    }

    if (*end != '\0' || !isfinite(n) || n < 0) {
        return (int64_t) def;
    }

    if (n > (double) NGX_MAX_INT32_VALUE) {
        return NGX_MAX_INT32_VALUE;
    }

    /* n >= 0: the conversion rounds down */
    return (int64_t) n;
}


/*
 * Does the account accept the presented key id? Its key_id, when it has
 * one, is the only one: a credentials rotation names the new id there
 * first, and the previous lg:sbkey:<key id> (or a worker's cache of it)
 * may still name the account until its deletion is done. An account
 * without key_id (written before the field, or by hand) takes the
 * lookup's word. pv_reserve.lua checks the same for the confirm.
 */
static ngx_uint_t
ngx_http_linegate_pv_plain_key_id(redisReply *v, ngx_str_t *key_id)
{
    if (v->type == REDIS_REPLY_NIL) {
        return 1;
    }

    return v->type == REDIS_REPLY_STRING
           && (size_t) v->len == key_id->len
           && ngx_strncmp(v->str, key_id->data, key_id->len) == 0;
}


/*
 * 401, as for a bad secret (no RateLimit headers, no tenant): a refused
 * preview deletes its token first
 */
static void
ngx_http_linegate_pv_plain_unknown(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, ngx_http_linegate_pv_request_t *pv)
{
    ngx_str_null(&ctx->tenant);

    pv->refused = NGX_HTTP_UNAUTHORIZED;
    ngx_str_null(&pv->refused_error);

    if (pv->preview) {
        ngx_http_linegate_pv_plain_refuse(r, ctx, pv);
        return;
    }

    if (ngx_http_linegate_pv_refuse(r, ctx, NGX_HTTP_UNAUTHORIZED,
                                    &pv->refused_error, &pv->st)
        != NGX_OK)
    {
        ngx_http_linegate_internal_error(r);
    }
}


void
ngx_http_linegate_pv_plain_bad_body(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, ngx_http_linegate_pv_request_t *pv)
{
    ngx_str_t                        akey;
    ngx_http_linegate_redis_args_t  *a;

    a = ngx_palloc(r->pool, sizeof(ngx_http_linegate_redis_args_t));

    if (a == NULL
        || ngx_http_linegate_key(r->pool, NGX_HTTP_LINEGATE_KEY_ACCT,
                                 &pv->who.value, NULL, &akey)
           != NGX_OK)
    {
        ngx_http_linegate_internal_error(r);
        return;
    }

    ngx_http_linegate_redis_args_init(a);
    ngx_http_linegate_redis_arg_cstr(a, "HGET");
    ngx_http_linegate_redis_arg_str(a, &akey);
    ngx_http_linegate_redis_arg_cstr(a, "key_id");

    if (ngx_http_linegate_redis_command(r, a,
                                        ngx_http_linegate_pv_plain_bad_read)
        != NGX_OK)
    {
        ngx_http_linegate_store_unavailable(r);
    }
}


static void
ngx_http_linegate_pv_plain_bad_read(ngx_http_request_t *r,
    redisReply *reply)
{
    ngx_http_linegate_ctx_t         *ctx;
    ngx_http_linegate_pv_request_t  *pv;

    ctx = ngx_http_linegate_get_ctx(r);
    pv = ctx->data;

    /* the credentials are not judged: 503, as AUTH's own lookup */
    if (reply == NULL || reply->type == REDIS_REPLY_ERROR) {
        ngx_http_linegate_store_unavailable(r);
        return;
    }

    if (!ngx_http_linegate_pv_plain_key_id(reply, &pv->key_id)) {
        /* 401, as READ's: no token was written ahead, none to delete */
        ngx_str_null(&ctx->tenant);
        ngx_str_null(&pv->refused_error);

        if (ngx_http_linegate_pv_refuse(r, ctx, NGX_HTTP_UNAUTHORIZED,
                                        &pv->refused_error, &pv->st)
            != NGX_OK)
        {
            ngx_http_linegate_internal_error(r);
        }

        return;
    }

    ngx_http_linegate_field_error(r, pv->bad_field, pv->bad_why);
}
