
/*
 * linegate: provision-preview and GET /accounts/limits for an account this
 * worker knows (the store accepted that very key id and secret within
 * linegate_api_key_cache), as plain commands instead of pv_preview.lua or
 * pv_limits.lua: Redis runs a script's commands several times slower than
 * the same commands sent by a client, and the preview is Redis-bound.
 *
 *   READ   one pipeline: HMGET the account (plan, limits); per window,
 *          ZCOUNT its lines and ZRANGEBYSCORE the oldest; SCARD the
 *          inventory (preview only)
 *   EXACT  rare: a window holding more lines than its limit (lowered by
 *          the operator) frees a slot when line used - limit leaves, not
 *          the oldest: one more read for that line
 *   then   403 / 429 / 503 exactly as the script answers, or the limits
 *   WRITE  preview: MULTI, SET the preview, SET its owner, EXEC: both keys
 *          or neither, then the 200
 *
 * None of this needs a script's atomicity: a preview only checks (its
 * token is written once every check passed) and the confirm checks again,
 * atomically with the purchase. The JSON of the preview is the one
 * pv_preview.lua writes; pv_confirm.lua reads either.
 */


#include <math.h>      /* isfinite(), a macro */
#include <stdlib.h>

#include "ngx_http_linegate_module.h"
#include "ngx_http_linegate_provision.h"
#include "ngx_http_linegate_jw.h"
#include "ngx_http_linegate_reply.h"
#include "ngx_http_linegate_util.h"


#define NGX_HTTP_LINEGATE_PV_DAY_MS    (NGX_HTTP_LINEGATE_PV_DAY * 1000LL)
#define NGX_HTTP_LINEGATE_PV_MONTH_MS  (NGX_HTTP_LINEGATE_PV_MONTH * 1000LL)


/* the replies of READ, in order */
enum {
    NGX_HTTP_LINEGATE_PV_R_ACCOUNT = 0,
    NGX_HTTP_LINEGATE_PV_R_DAY_COUNT,
    NGX_HTTP_LINEGATE_PV_R_DAY_FIRST,
    NGX_HTTP_LINEGATE_PV_R_MONTH_COUNT,
    NGX_HTTP_LINEGATE_PV_R_MONTH_FIRST,
    NGX_HTTP_LINEGATE_PV_R_INVENTORY
};


static void ngx_http_linegate_pv_plain_read_done(ngx_http_request_t *r,
    redisReply *reply);
static void ngx_http_linegate_pv_plain_exact_done(ngx_http_request_t *r,
    redisReply *reply);
static void ngx_http_linegate_pv_plain_decide(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, ngx_http_linegate_pv_request_t *pv);
static void ngx_http_linegate_pv_plain_write(ngx_http_request_t *r,
    ngx_http_linegate_pv_request_t *pv);
static void ngx_http_linegate_pv_plain_write_done(ngx_http_request_t *r,
    redisReply *reply);
static ngx_int_t ngx_http_linegate_pv_plain_errors(ngx_http_request_t *r,
    redisReply *reply, size_t n);
static ngx_int_t ngx_http_linegate_pv_plain_window(
    ngx_http_linegate_pv_window_t *w, redisReply *count, redisReply *first,
    int64_t window_ms, int64_t *skip);
static ngx_int_t ngx_http_linegate_pv_plain_score(redisReply *pair,
    int64_t window_ms, int64_t *free_at);
static void ngx_http_linegate_pv_plain_range(ngx_http_request_t *r,
    ngx_http_linegate_redis_args_t *a, ngx_str_t *prov, int64_t from,
    int64_t offset);
static int64_t ngx_http_linegate_pv_plain_limit(redisReply *v,
    ngx_uint_t def);
static ngx_str_t *ngx_http_linegate_pv_plain_key(ngx_http_request_t *r,
    ngx_str_t *account, const char *suffix, u_char *token);


void
ngx_http_linegate_pv_plain(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, ngx_http_linegate_pv_request_t *pv,
    ngx_uint_t preview)
{
    ngx_str_t                       *akey, *prov;
    ngx_http_linegate_redis_args_t  *a;

    pv->preview = preview;

    akey = ngx_http_linegate_pv_plain_key(r, &pv->who.value, "", NULL);
    prov = ngx_http_linegate_pv_plain_key(r, &pv->who.value, ":prov", NULL);
    a = ngx_palloc(r->pool, 6 * sizeof(ngx_http_linegate_redis_args_t));

    if (akey == NULL || prov == NULL || a == NULL) {
        ngx_http_linegate_internal_error(r);
        return;
    }

    pv->prov = *prov;

    ngx_http_linegate_redis_args_init(&a[0]);
    ngx_http_linegate_redis_arg_cstr(&a[0], "HMGET");
    ngx_http_linegate_redis_arg_str(&a[0], akey);
    ngx_http_linegate_redis_arg_cstr(&a[0], "plan");
    ngx_http_linegate_redis_arg_cstr(&a[0], "daily_limit");
    ngx_http_linegate_redis_arg_cstr(&a[0], "monthly_limit");

    ngx_http_linegate_redis_args_init(&a[1]);
    ngx_http_linegate_redis_arg_cstr(&a[1], "ZCOUNT");
    ngx_http_linegate_redis_arg_str(&a[1], prov);
    ngx_http_linegate_pv_plain_range(r, &a[1], NULL,
                                     pv->now - NGX_HTTP_LINEGATE_PV_DAY_MS,
                                     -1);

    ngx_http_linegate_pv_plain_range(r, &a[2], prov,
                                     pv->now - NGX_HTTP_LINEGATE_PV_DAY_MS,
                                     0);

    ngx_http_linegate_redis_args_init(&a[3]);
    ngx_http_linegate_redis_arg_cstr(&a[3], "ZCOUNT");
    ngx_http_linegate_redis_arg_str(&a[3], prov);
    ngx_http_linegate_pv_plain_range(r, &a[3], NULL,
                                     pv->now - NGX_HTTP_LINEGATE_PV_MONTH_MS,
                                     -1);

    ngx_http_linegate_pv_plain_range(r, &a[4], prov,
                                     pv->now - NGX_HTTP_LINEGATE_PV_MONTH_MS,
                                     0);

    ngx_http_linegate_redis_args_init(&a[5]);
    ngx_http_linegate_redis_arg_cstr(&a[5], "SCARD");
    ngx_http_linegate_redis_arg_cstr(&a[5], "lg:inventory");

    if (ngx_http_linegate_redis_pipeline(r, preview ? 6 : 5, a,
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
    redisReply                      *acct, *inv;
    ngx_http_linegate_ctx_t         *ctx;
    ngx_http_linegate_main_conf_t   *lmcf;
    ngx_http_linegate_pv_request_t  *pv;
    ngx_http_linegate_redis_args_t  *a;

    lmcf = ngx_http_get_module_main_conf(r, ngx_http_linegate_module);
    ctx = ngx_http_linegate_get_ctx(r);
    pv = ctx->data;

    if (ngx_http_linegate_pv_plain_errors(r, reply, pv->preview ? 6 : 5)
        != NGX_OK)
    {
        return;
    }

    acct = reply->element[NGX_HTTP_LINEGATE_PV_R_ACCOUNT];

    if (acct->type != REDIS_REPLY_ARRAY || acct->elements != 3) {
        goto unexpected;
    }

    /* the plan, copied: the reply is freed once this handler returns */
    pv->eligible = acct->element[0]->type == REDIS_REPLY_STRING
                   && acct->element[0]->len == sizeof("inbound_only") - 1
                   && ngx_strncmp(acct->element[0]->str, "inbound_only",
                                  sizeof("inbound_only") - 1) == 0;

    pv->st.now = pv->now;
    pv->st.daily.limit = ngx_http_linegate_pv_plain_limit(acct->element[1],
                                                          lmcf->prov_daily);
    pv->st.monthly.limit = ngx_http_linegate_pv_plain_limit(
                               acct->element[2], lmcf->prov_monthly);

    if (ngx_http_linegate_pv_plain_window(&pv->st.daily,
            reply->element[NGX_HTTP_LINEGATE_PV_R_DAY_COUNT],
            reply->element[NGX_HTTP_LINEGATE_PV_R_DAY_FIRST],
            NGX_HTTP_LINEGATE_PV_DAY_MS, &pv->skip[0])
        != NGX_OK
        || ngx_http_linegate_pv_plain_window(&pv->st.monthly,
               reply->element[NGX_HTTP_LINEGATE_PV_R_MONTH_COUNT],
               reply->element[NGX_HTTP_LINEGATE_PV_R_MONTH_FIRST],
               NGX_HTTP_LINEGATE_PV_MONTH_MS, &pv->skip[1])
           != NGX_OK)
    {
        goto unexpected;
    }

    if (pv->preview) {
        inv = reply->element[NGX_HTTP_LINEGATE_PV_R_INVENTORY];

        if (inv->type != REDIS_REPLY_INTEGER) {
            goto unexpected;
        }

        pv->inventory = inv->integer;
    }

    if (pv->skip[0] == 0 && pv->skip[1] == 0) {
        ngx_http_linegate_pv_plain_decide(r, ctx, pv);
        return;
    }

    /* EXACT: the line whose leaving frees a slot, per window over limit */
    a = ngx_palloc(r->pool, 2 * sizeof(ngx_http_linegate_redis_args_t));
    if (a == NULL) {
        ngx_http_linegate_internal_error(r);
        return;
    }

    ngx_http_linegate_pv_plain_range(r, &a[0], &pv->prov,
                                     pv->now - NGX_HTTP_LINEGATE_PV_DAY_MS,
                                     pv->skip[0]);
    ngx_http_linegate_pv_plain_range(r, &a[1], &pv->prov,
                                     pv->now - NGX_HTTP_LINEGATE_PV_MONTH_MS,
                                     pv->skip[1]);

    if (ngx_http_linegate_redis_pipeline(r, 2, a,
                                         ngx_http_linegate_pv_plain_exact_done)
        != NGX_OK)
    {
        ngx_http_linegate_store_unavailable(r);
    }

    return;

unexpected:

    ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                  NGX_HTTP_LINEGATE_LOG "unexpected reply to the account's "
                  "reads");
    ngx_http_linegate_internal_error(r);
}


static void
ngx_http_linegate_pv_plain_exact_done(ngx_http_request_t *r,
    redisReply *reply)
{
    ngx_uint_t                       i;
    ngx_http_linegate_ctx_t         *ctx;
    ngx_http_linegate_pv_window_t   *w;
    ngx_http_linegate_pv_request_t  *pv;

    ctx = ngx_http_linegate_get_ctx(r);
    pv = ctx->data;

    if (ngx_http_linegate_pv_plain_errors(r, reply, 2) != NGX_OK) {
        return;
    }

    for (i = 0; i < 2; i++) {
        if (pv->skip[i] == 0) {
            continue;
        }

        w = i ? &pv->st.monthly : &pv->st.daily;

        if (ngx_http_linegate_pv_plain_score(reply->element[i],
                i ? NGX_HTTP_LINEGATE_PV_MONTH_MS : NGX_HTTP_LINEGATE_PV_DAY_MS,
                &w->free_at)
            != NGX_OK)
        {
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          NGX_HTTP_LINEGATE_LOG "unexpected reply to the "
                          "window's read");
            ngx_http_linegate_internal_error(r);
            return;
        }
    }

    ngx_http_linegate_pv_plain_decide(r, ctx, pv);
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
        ngx_http_linegate_pv_plain_write(r, pv);
        return;
    }

    if (ngx_http_linegate_pv_refuse(r, ctx, code, &error, st) != NGX_OK) {
        ngx_http_linegate_internal_error(r);
    }
}


/* WRITE: the preview and its owner, as pv_preview.lua stores them */
static void
ngx_http_linegate_pv_plain_write(ngx_http_request_t *r,
    ngx_http_linegate_pv_request_t *pv)
{
    ngx_str_t                        json, key_id, *pkey, *gkey;
    ngx_http_linegate_jw_t           jw;
    ngx_http_linegate_redis_args_t  *a;
    ngx_http_linegate_main_conf_t   *lmcf;

    lmcf = ngx_http_get_module_main_conf(r, ngx_http_linegate_module);

    /* pv->sbkey is "lg:sbkey:<key id>" */
    key_id.data = pv->sbkey.data + sizeof("lg:sbkey:") - 1;
    key_id.len = pv->sbkey.len - (sizeof("lg:sbkey:") - 1);

    (void) ngx_http_linegate_jw_init(&jw, r->pool, 192);
    ngx_http_linegate_jw_object(&jw);
    ngx_http_linegate_jw_key(&jw, "account");
    ngx_http_linegate_jw_str(&jw, pv->who.value.data, pv->who.value.len);
    ngx_http_linegate_jw_key(&jw, "key_id");
    ngx_http_linegate_jw_str(&jw, key_id.data, key_id.len);
    ngx_http_linegate_jw_key(&jw, "created_at");
    ngx_http_linegate_jw_int(&jw, pv->now);
    ngx_http_linegate_jw_key(&jw, "expires_at");
    ngx_http_linegate_jw_int(&jw, pv->now + lmcf->preview_ttl * 1000);
    ngx_http_linegate_jw_end(&jw, '}');

    pkey = ngx_http_linegate_pv_plain_key(r, &pv->who.value, ":pv:",
                                          pv->token);
    gkey = ngx_http_linegate_pv_plain_key(r, NULL, "lg:pv:", pv->token);
    a = ngx_palloc(r->pool, 4 * sizeof(ngx_http_linegate_redis_args_t));

    if (ngx_http_linegate_jw_finish(&jw, &json) != NGX_OK
        || pkey == NULL || gkey == NULL || a == NULL)
    {
        ngx_http_linegate_internal_error(r);
        return;
    }

    ngx_http_linegate_redis_args_init(&a[0]);
    ngx_http_linegate_redis_arg_cstr(&a[0], "MULTI");

    ngx_http_linegate_redis_args_init(&a[1]);
    ngx_http_linegate_redis_arg_cstr(&a[1], "SET");
    ngx_http_linegate_redis_arg_str(&a[1], pkey);
    ngx_http_linegate_redis_arg_str(&a[1], &json);
    ngx_http_linegate_redis_arg_cstr(&a[1], "EX");
    ngx_http_linegate_redis_arg_int(r, &a[1], lmcf->preview_ttl);

    ngx_http_linegate_redis_args_init(&a[2]);
    ngx_http_linegate_redis_arg_cstr(&a[2], "SET");
    ngx_http_linegate_redis_arg_str(&a[2], gkey);
    ngx_http_linegate_redis_arg_str(&a[2], &pv->who.value);
    ngx_http_linegate_redis_arg_cstr(&a[2], "EX");
    ngx_http_linegate_redis_arg_int(r, &a[2], lmcf->preview_ttl);

    ngx_http_linegate_redis_args_init(&a[3]);
    ngx_http_linegate_redis_arg_cstr(&a[3], "EXEC");

    if (ngx_http_linegate_redis_pipeline(r, 4, a,
                                        ngx_http_linegate_pv_plain_write_done)
        != NGX_OK)
    {
        ngx_http_linegate_store_unavailable(r);
    }
}


static void
ngx_http_linegate_pv_plain_write_done(ngx_http_request_t *r,
    redisReply *reply)
{
    redisReply                      *exec;
    ngx_http_linegate_ctx_t         *ctx;
    ngx_http_linegate_pv_request_t  *pv;

    ctx = ngx_http_linegate_get_ctx(r);
    pv = ctx->data;

    if (ngx_http_linegate_pv_plain_errors(r, reply, 4) != NGX_OK) {
        return;
    }

    /* EXEC: nil when the transaction did not run, else both SETs' OK */
    exec = reply->element[3];

    if (exec->type != REDIS_REPLY_ARRAY || exec->elements != 2
        || exec->element[0]->type != REDIS_REPLY_STATUS
        || exec->element[1]->type != REDIS_REPLY_STATUS)
    {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      NGX_HTTP_LINEGATE_LOG "preview token not stored");
        ngx_http_linegate_store_unavailable(r);
        return;
    }

    ngx_http_linegate_pv_preview_ok(r, pv);
}


/*
 * The pipeline's reply: NGX_OK when it has n elements and none is an
 * error; otherwise the 503 is sent (a failing command fails the request
 * as a failing script would).
 */
static ngx_int_t
ngx_http_linegate_pv_plain_errors(ngx_http_request_t *r, redisReply *reply,
    size_t n)
{
    size_t       i;
    redisReply  *e;

    if (reply == NULL) {
        ngx_http_linegate_store_unavailable(r);
        return NGX_DECLINED;
    }

    if (reply->elements != n) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      NGX_HTTP_LINEGATE_LOG "unexpected pipeline reply");
        ngx_http_linegate_internal_error(r);
        return NGX_DECLINED;
    }

    for (i = 0; i < n; i++) {
        e = reply->element[i];

        if (e->type == REDIS_REPLY_ERROR) {
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          NGX_HTTP_LINEGATE_LOG "redis error: \"%*s\"",
                          (size_t) ngx_min(e->len, 300), e->str);
            ngx_http_linegate_store_unavailable(r);
            return NGX_DECLINED;
        }
    }

    return NGX_OK;
}


/*
 * lg_pv_window of pv_state.lua: used, and free_at, the moment one more
 * line can be added (when the window is full, when line used - limit
 * leaves; otherwise when the oldest leaves), 0 when nothing counts or no
 * slot can ever free (a limit of 0). *skip > 0: that line is not the
 * oldest and must be read (EXACT).
 */
static ngx_int_t
ngx_http_linegate_pv_plain_window(ngx_http_linegate_pv_window_t *w,
    redisReply *count, redisReply *first, int64_t window_ms, int64_t *skip)
{
    if (count->type != REDIS_REPLY_INTEGER
        || first->type != REDIS_REPLY_ARRAY)
    {
        return NGX_ERROR;
    }

    w->used = count->integer;
    w->free_at = 0;
    *skip = 0;

    if (w->used <= 0 || (w->used >= w->limit && w->limit == 0)) {
        return NGX_OK;
    }

    if (w->used > w->limit) {
        *skip = w->used - w->limit;
        return NGX_OK;
    }

    if (first->elements == 0) {
        /* the line left between the two reads: no moment to tell */
        return NGX_OK;
    }

    return ngx_http_linegate_pv_plain_score(first, window_ms, &w->free_at);
}


/* [member, score] of ZRANGEBYSCORE ... WITHSCORES: score + window */
static ngx_int_t
ngx_http_linegate_pv_plain_score(redisReply *pair, int64_t window_ms,
    int64_t *free_at)
{
    char    *end;
    double   score;

    if (pair->type != REDIS_REPLY_ARRAY || pair->elements != 2
        || pair->element[1]->type != REDIS_REPLY_STRING)
    {
        return NGX_ERROR;
    }

    /* hiredis ends every string with a NUL */
    score = strtod(pair->element[1]->str, &end);

    if (end == pair->element[1]->str || *end != '\0' || !isfinite(score)) {
        return NGX_ERROR;
    }

    *free_at = (int64_t) score + window_ms;

    return NGX_OK;
}


/*
 * The bounds of the lines inside a window, "(<from>" "+inf" (strictly
 * newer than now - window, as the script counts); with prov, the whole
 * ZRANGEBYSCORE asking for the line at offset.
 */
static void
ngx_http_linegate_pv_plain_range(ngx_http_request_t *r,
    ngx_http_linegate_redis_args_t *a, ngx_str_t *prov, int64_t from,
    int64_t offset)
{
    u_char  *p, *last;

    if (prov != NULL) {
        ngx_http_linegate_redis_args_init(a);
        ngx_http_linegate_redis_arg_cstr(a, "ZRANGEBYSCORE");
        ngx_http_linegate_redis_arg_str(a, prov);
    }

    p = ngx_pnalloc(r->pool, 1 + NGX_INT64_LEN);
    if (p == NULL) {
        a->argc = -1;
        return;
    }

    last = ngx_sprintf(p, "(%L", from);
    ngx_http_linegate_redis_arg(a, p, last - p);
    ngx_http_linegate_redis_arg_cstr(a, "+inf");

    if (prov != NULL) {
        ngx_http_linegate_redis_arg_cstr(a, "WITHSCORES");
        ngx_http_linegate_redis_arg_cstr(a, "LIMIT");
        ngx_http_linegate_redis_arg_int(r, a, offset);
        ngx_http_linegate_redis_arg_cstr(a, "1");
    }
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


/*
 * lg:{acct:<A>}<suffix>[<token>] with account, or <suffix><token> (the
 * owner key lg:pv:<token>) without.
 */
static ngx_str_t *
ngx_http_linegate_pv_plain_key(ngx_http_request_t *r, ngx_str_t *account,
    const char *suffix, u_char *token)
{
    u_char     *p;
    size_t      len;
    ngx_str_t  *key;

    len = ngx_strlen(suffix)
          + (account ? sizeof("lg:{acct:}") - 1 + account->len : 0)
          + (token ? NGX_HTTP_LINEGATE_PV_TOKEN_LEN : 0);

    key = ngx_palloc(r->pool, sizeof(ngx_str_t));
    p = ngx_pnalloc(r->pool, len);

    if (key == NULL || p == NULL) {
        return NULL;
    }

    key->data = p;

    if (account != NULL) {
        p = ngx_sprintf(p, "lg:{acct:%V}", account);
    }

    p = ngx_cpymem(p, suffix, ngx_strlen(suffix));

    if (token != NULL) {
        p = ngx_cpymem(p, token, NGX_HTTP_LINEGATE_PV_TOKEN_LEN);
    }

    key->len = p - key->data;

    return key;
}
