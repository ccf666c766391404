
/*
 * linegate: provision-preview and GET /accounts/limits for an account this
 * worker knows (the store accepted that very key id and secret within
 * linegate_api_key_cache), as plain commands instead of pv_preview.lua or
 * pv_limits.lua: Redis runs a script's commands several times slower than
 * the same commands sent by a client, and the preview is Redis-bound.
 *
 *   READ   one pipeline, one round trip: HMGET the account (plan,
 *          limits), ZRANGEBYSCORE the lines of the 30-day window with
 *          their times (the 24-hour window is its newest part; confirms
 *          trim older lines); for a preview, SCARD the inventory and SET
 *          lg:pv:<token> with its JSON and expiry, ahead of the checks
 *   then   200, or 403 / 429 / 503 exactly as the script answers, or the
 *          limits
 *   UNDO   a refused preview: DEL its token, then the refusal
 *
 * None of this needs a script's atomicity: a preview only checks and the
 * confirm checks again, atomically with the purchase. The token written
 * ahead is a random name nobody has been told: until a refusal deletes
 * it (and if that DEL is lost, until it expires) nothing can use it. A
 * window holding more lines than one read takes
 * (NGX_HTTP_LINEGATE_PV_READ_MAX) is left to the script, which deletes
 * the token when it refuses.
 */


#include "ngx_http_linegate_module.h"

#include <math.h>      /* isfinite(), a macro */
#include <stdlib.h>

#include "ngx_http_linegate_provision.h"
#include "ngx_http_linegate_json_write.h"
#include "ngx_http_linegate_reply.h"


#define NGX_HTTP_LINEGATE_PV_DAY_MS    (NGX_HTTP_LINEGATE_PV_DAY * 1000LL)
#define NGX_HTTP_LINEGATE_PV_MONTH_MS  (NGX_HTTP_LINEGATE_PV_MONTH * 1000LL)

/* lines of the 30-day window read at once; more: the script */
#define NGX_HTTP_LINEGATE_PV_READ_MAX  1000


static void ngx_http_linegate_pv_plain_read_done(ngx_http_request_t *r,
    redisReply *reply);
static ngx_int_t ngx_http_linegate_pv_plain_windows(
    ngx_http_linegate_pv_request_t *pv, redisReply *lines);
static void ngx_http_linegate_pv_plain_window(
    ngx_http_linegate_pv_window_t *w, int64_t *times, int64_t n,
    int64_t window_ms);
static void ngx_http_linegate_pv_plain_decide(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, ngx_http_linegate_pv_request_t *pv);
static ngx_int_t ngx_http_linegate_pv_plain_write(ngx_http_request_t *r,
    ngx_http_linegate_pv_request_t *pv, ngx_http_linegate_redis_args_t *a);
static void ngx_http_linegate_pv_plain_refuse(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, ngx_http_linegate_pv_request_t *pv);
static void ngx_http_linegate_pv_plain_undone(ngx_http_request_t *r,
    redisReply *reply);
static int64_t ngx_http_linegate_pv_plain_limit(redisReply *v,
    ngx_uint_t def);


void
ngx_http_linegate_pv_plain(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, ngx_http_linegate_pv_request_t *pv)
{
    u_char                          *p, *from;
    size_t                           len;
    ngx_str_t                        akey, prov;
    ngx_http_linegate_redis_args_t  *a;

    /* lg:{acct:<A>}, lg:{acct:<A>}:prov, "(<now - 30 days>" */
    len = ngx_http_linegate_key_len(NGX_HTTP_LINEGATE_KEY_ACCT,
                                    &pv->who.value, NULL)
          + ngx_http_linegate_key_len(NGX_HTTP_LINEGATE_KEY_ACCT_PROV,
                                      &pv->who.value, NULL)
          + 1 + NGX_INT64_LEN;

    p = ngx_pnalloc(r->pool, len);
    a = ngx_palloc(r->pool, 4 * sizeof(ngx_http_linegate_redis_args_t));

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

    /* strictly newer than now - window, as the script counts */
    from = p;
    p = ngx_sprintf(p, "(%L", pv->now - NGX_HTTP_LINEGATE_PV_MONTH_MS);

    ngx_http_linegate_redis_args_init(&a[0]);
    ngx_http_linegate_redis_arg_cstr(&a[0], "HMGET");
    ngx_http_linegate_redis_arg_str(&a[0], &akey);
    ngx_http_linegate_redis_arg_cstr(&a[0], "plan");
    ngx_http_linegate_redis_arg_cstr(&a[0], "daily_limit");
    ngx_http_linegate_redis_arg_cstr(&a[0], "monthly_limit");

    ngx_http_linegate_redis_args_init(&a[1]);
    ngx_http_linegate_redis_arg_cstr(&a[1], "ZRANGEBYSCORE");
    ngx_http_linegate_redis_arg_str(&a[1], &prov);
    ngx_http_linegate_redis_arg(&a[1], from, p - from);
    ngx_http_linegate_redis_arg_cstr(&a[1], "+inf");
    ngx_http_linegate_redis_arg_cstr(&a[1], "WITHSCORES");
    ngx_http_linegate_redis_arg_cstr(&a[1], "LIMIT");
    ngx_http_linegate_redis_arg_cstr(&a[1], "0");
    ngx_http_linegate_redis_arg_int(r, &a[1],
                                    NGX_HTTP_LINEGATE_PV_READ_MAX + 1);

    ngx_http_linegate_redis_args_init(&a[2]);
    ngx_http_linegate_redis_arg_cstr(&a[2], "SCARD");
    ngx_http_linegate_redis_arg_str(&a[2],
        ngx_http_linegate_key_fixed(NGX_HTTP_LINEGATE_KEY_INVENTORY));

    if (pv->preview && ngx_http_linegate_pv_plain_write(r, pv, &a[3])
                       != NGX_OK)
    {
        ngx_http_linegate_internal_error(r);
        return;
    }

    if (ngx_http_linegate_redis_pipeline(r, pv->preview ? 4 : 2, a,
                                         ngx_http_linegate_pv_plain_read_done)
        != NGX_OK)
    {
        ngx_http_linegate_store_unavailable(r);
    }
}


static void
ngx_http_linegate_pv_plain_read_done(ngx_http_request_t *r,
    redisReply *reply)
{
    ngx_int_t                        rc;
    redisReply                      *acct, *inv;
    ngx_http_linegate_ctx_t         *ctx;
    ngx_http_linegate_main_conf_t   *lmcf;
    ngx_http_linegate_pv_request_t  *pv;

    lmcf = ngx_http_get_module_main_conf(r, ngx_http_linegate_module);
    ctx = ngx_http_linegate_get_ctx(r);
    pv = ctx->data;

    if (reply == NULL) {
        ngx_http_linegate_store_unavailable(r);
        return;
    }

    /* one element per command: HMGET, ZRANGEBYSCORE (, SCARD, SET) */
    if (reply->type != REDIS_REPLY_ARRAY
        || reply->elements != (pv->preview ? 4 : 2))
    {
        goto unexpected;
    }

    acct = reply->element[0];

    if (acct->type != REDIS_REPLY_ARRAY || acct->elements != 3) {
        goto unexpected;
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

    if (pv->preview) {
        inv = reply->element[2];

        if (inv->type != REDIS_REPLY_INTEGER
            || reply->element[3]->type != REDIS_REPLY_STATUS)
        {
            goto unexpected;
        }

        pv->inventory = inv->integer;
    }

    rc = ngx_http_linegate_pv_plain_windows(pv, reply->element[1]);

    if (rc == NGX_DECLINED) {
        /* more lines than one read takes (or a time too large for it) */
        ngx_http_linegate_pv_script(r, ctx, pv);
        return;
    }

    if (rc != NGX_OK) {
        goto unexpected;
    }

    ngx_http_linegate_pv_plain_decide(r, ctx, pv);
    return;

unexpected:

    ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                  NGX_HTTP_LINEGATE_LOG "unexpected reply to the account's "
                  "reads");
    ngx_http_linegate_internal_error(r);
}


/*
 * Both windows from the 30-day window's lines, [member, time, ...] oldest
 * first: the 24-hour window is its tail. NGX_DECLINED: too many to read,
 * or a time int64_t cannot hold: the script answers.
 */
static ngx_int_t
ngx_http_linegate_pv_plain_windows(ngx_http_linegate_pv_request_t *pv,
    redisReply *lines)
{
    char     *end;
    double    t;
    size_t    i;
    int64_t   n, day, *times;
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
        if (lines->element[2 * i + 1]->type != REDIS_REPLY_STRING) {
            return NGX_ERROR;
        }

        /* hiredis ends every string with a NUL */
        t = strtod(lines->element[2 * i + 1]->str, &end);

        if (*end != '\0' || !isfinite(t)) {
            return NGX_ERROR;
        }

        /* beyond 2^53 ms (1e300) int64_t cannot hold it: the script can */
        if (t < -9007199254740992.0 || t > 9007199254740992.0) {
            return NGX_DECLINED;
        }

        times[i] = (int64_t) t;
    }

    ngx_http_linegate_pv_plain_window(&pv->st.monthly, times, n,
                                      NGX_HTTP_LINEGATE_PV_MONTH_MS);

    /* the first line strictly newer than now - 24 h */
    for (day = 0; day < n; day++) {
        if (times[day] > pv->now - NGX_HTTP_LINEGATE_PV_DAY_MS) {
            break;
        }
    }

    ngx_http_linegate_pv_plain_window(&pv->st.daily, times + day, n - day,
                                      NGX_HTTP_LINEGATE_PV_DAY_MS);

    return NGX_OK;
}


/*
 * lg_pv_window of pv_state.lua, over the times of the window's lines
 * (oldest first): used, and free_at, the moment one more line can be
 * added: when the window is full, when line used - limit leaves (the
 * oldest, unless the limit was lowered); otherwise when the oldest leaves.
 * 0 when nothing counts, or when no slot ever frees (a limit of 0).
 */
static void
ngx_http_linegate_pv_plain_window(ngx_http_linegate_pv_window_t *w,
    int64_t *times, int64_t n, int64_t window_ms)
{
    int64_t  skip;

    w->used = n;
    w->free_at = 0;

    if (n == 0) {
        return;
    }

    skip = n >= w->limit ? n - w->limit : 0;

    if (skip >= n) {
        return;
    }

    w->free_at = times[skip] + window_ms;
}


/* what pv_preview.lua and pv_limits.lua answer, in the same order */
static void
ngx_http_linegate_pv_plain_decide(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, ngx_http_linegate_pv_request_t *pv)
{
    int64_t                        code;
    ngx_str_t                      error;
    ngx_http_linegate_pv_state_t  *st;

    st = &pv->st;

    if (ngx_http_linegate_pv_headers(r, ctx, st) != NGX_OK) {
        ngx_http_linegate_internal_error(r);
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

    a = ngx_palloc(r->pool, sizeof(ngx_http_linegate_redis_args_t));

    if (a == NULL
        || ngx_http_linegate_key(r->pool, NGX_HTTP_LINEGATE_KEY_PV, &token,
                                 NULL, &key)
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


/* the token's SET, as pv_preview.lua stores it, into a */
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
        || ngx_http_linegate_key(r->pool, NGX_HTTP_LINEGATE_KEY_PV, &token,
                                 NULL, &key)
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
 * lg_pv_limit of pv_state.lua: the account's own limit when it is a
 * number >= 0 (rounded down), else the default.
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

    while (*end == ' ' || *end == '\t' || *end == '\n' || *end == '\r') {
        end++;
    }

    if (end == v->str || *end != '\0' || !isfinite(n) || n < 0) {
        return (int64_t) def;
    }

    if (n > (double) NGX_MAX_INT32_VALUE) {
        return NGX_MAX_INT32_VALUE;
    }

    /* n >= 0: the conversion rounds down */
    return (int64_t) n;
}
