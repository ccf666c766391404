
/*
 * linegate: the answers the Provisioning API's endpoints share, and the
 * reading of a provisioning script's reply.
 *
 * The preview's 200, the limits, the rate headers of both windows and
 * the refusals (401, 403, 429 and its Retry-After, 503) are rendered here
 * once, from an ngx_http_linegate_pv_state_t: for preview and limits the
 * plain commands (ngx_http_linegate_provision_plain.c) fill it in, for
 * the confirm pv_reserve.lua's and pv_release.lua's replies
 * (ngx_http_linegate_pv_state()).
 * Nothing here calls those files: ngx_http_linegate_provision.c, above
 * them all, picks the path.
 */


#include "ngx_http_linegate_module.h"
#include "ngx_http_linegate_provision.h"
#include "ngx_http_linegate_auth.h"
#include "ngx_http_linegate_crypto.h"
#include "ngx_http_linegate_json.h"
#include "ngx_http_linegate_ratelimit.h"
#include "ngx_http_linegate_reply.h"
#include "ngx_http_linegate_clock.h"
#include "ngx_http_linegate_str.h"
#include "ngx_http_linegate_chars.h"


static u_char *ngx_http_linegate_pv_message(ngx_http_request_t *r,
    time_t ttl);
static void ngx_http_linegate_pv_window_jw(ngx_http_linegate_json_write_t *jw,
    ngx_http_linegate_pv_window_t *w, time_t window);


/*
 * The worker's last word on the inventory: until this time (ms, this
 * worker's clock) a preview trusts that a number is there without its
 * SCARD; 0: ask. Only "there were numbers" is trusted, never "none": a
 * preview after the inventory is stocked again sees it at once, and
 * one after it ran dry says 200 for at most linegate_inventory_cache,
 * the confirm then answering 503 no_lines_available (a preview never
 * promised a number: the confirm's CLAIM decides, atomically).
 */
static ngx_msec_t  ngx_http_linegate_pv_stock_until;


ngx_uint_t
ngx_http_linegate_pv_stock_known(ngx_http_request_t *r)
{
    ngx_http_linegate_main_conf_t  *lmcf;

    lmcf = ngx_http_get_module_main_conf(r, ngx_http_linegate_module);

    return lmcf->inventory_cache
           && ngx_http_linegate_pv_stock_until
           && (ngx_msec_int_t) (ngx_http_linegate_pv_stock_until
                                - ngx_current_msec) > 0;
}


void
ngx_http_linegate_pv_stock_seen(ngx_http_request_t *r, int64_t n)
{
    ngx_http_linegate_main_conf_t  *lmcf;

    lmcf = ngx_http_get_module_main_conf(r, ngx_http_linegate_module);

    ngx_http_linegate_pv_stock_until = (n > 0 && lmcf->inventory_cache)
                                       ? ngx_current_msec
                                         + lmcf->inventory_cache
                                       : 0;
}


/*
 * The numbers a step set aside (pv_claim.lua's CLAIM, pv_stock.lua's
 * STOCK: no E.164 number, moved to lg:{fleet}:inventory:quarantine),
 * reply elements from "from" on: each is an error, for the operator to
 * correct or drop (docs/operator.md, "Inventory"). A number is read
 * from Redis, where anything may have been written: logged as it is
 * only when printable and short.
 */
void
ngx_http_linegate_pv_aside(ngx_http_request_t *r, redisReply *reply,
    size_t from)
{
    size_t       i;
    ngx_str_t   *q;
    redisReply  *n;

    if (reply->type != REDIS_REPLY_ARRAY) {
        return;
    }

    q = ngx_http_linegate_key_fixed(NGX_HTTP_LINEGATE_KEY_QUARANTINE);

    for (i = from; i < reply->elements; i++) {
        n = reply->element[i];

        if (n->type == REDIS_REPLY_STRING && n->len <= 32
            && ngx_http_linegate_chars_are((u_char *) n->str, n->len,
                                           NGX_HTTP_LINEGATE_CHARS_PRINT))
        {
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          NGX_HTTP_LINEGATE_LOG "inventory number \"%*s\" "
                          "is not an E.164 number: set aside in %V, not "
                          "sold", n->len, n->str, q);
            continue;
        }

        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      NGX_HTTP_LINEGATE_LOG "an inventory entry that is "
                      "not an E.164 number (%uz bytes, not printable): set "
                      "aside in %V, not sold",
                      n->type == REDIS_REPLY_STRING ? n->len : 0, q);
    }
}


/* the 200 of a preview whose token is stored */
void
ngx_http_linegate_pv_preview_ok(ngx_http_request_t *r,
    ngx_http_linegate_pv_request_t *pv)
{
    u_char                          *msg, *iso, *last;
    ngx_http_linegate_json_write_t   jw;
    ngx_http_linegate_main_conf_t   *lmcf;

    lmcf = ngx_http_get_module_main_conf(r, ngx_http_linegate_module);

    msg = ngx_http_linegate_pv_message(r, lmcf->preview_ttl);
    iso = ngx_pnalloc(r->pool, NGX_HTTP_LINEGATE_ISO_LEN);

    if (msg == NULL || iso == NULL) {
        ngx_http_linegate_internal_error(r);
        return;
    }

    last = ngx_http_linegate_iso8601(iso,
                                     pv->now + lmcf->preview_ttl * 1000);

    (void) ngx_http_linegate_json_write_init(&jw, r->pool, 256);
    ngx_http_linegate_json_write_object(&jw);
    ngx_http_linegate_json_write_key(&jw, "status");
    ngx_http_linegate_json_write_raw(&jw, (u_char *) "\"OK\"", 4);
    ngx_http_linegate_json_write_key(&jw, "preview_token");
    ngx_http_linegate_json_write_str(&jw, pv->token,
                                     NGX_HTTP_LINEGATE_PV_TOKEN_LEN);
    ngx_http_linegate_json_write_key(&jw, "expires_at");
    ngx_http_linegate_json_write_str(&jw, iso, last - iso);
    ngx_http_linegate_json_write_key(&jw, "message");
    ngx_http_linegate_json_write_cstr(&jw, msg);
    ngx_http_linegate_json_write_end(&jw, '}');

    ngx_http_linegate_send_jw(r, NGX_HTTP_OK, &jw);
}


/* "... within 10 minutes ...", following linegate_preview_ttl */
static u_char *
ngx_http_linegate_pv_message(ngx_http_request_t *r, time_t ttl)
{
    u_char      *p;
    time_t       n;
    const char  *unit;

    if (ttl % 60 == 0) {
        n = ttl / 60;
        unit = n == 1 ? "minute" : "minutes";

    } else {
        n = ttl;
        unit = n == 1 ? "second" : "seconds";
    }

    p = ngx_pnalloc(r->pool, 128 + NGX_TIME_T_LEN);
    if (p == NULL) {
        return NULL;
    }

    (void) ngx_sprintf(p, "Call the confirm endpoint with this token within "
                       "%T %s to complete the purchase.%Z", n, unit);

    return p;
}


/* the 200 of GET /accounts/limits */
void
ngx_http_linegate_pv_limits_ok(ngx_http_request_t *r,
    ngx_http_linegate_pv_state_t *st)
{
    ngx_http_linegate_json_write_t  jw;

    (void) ngx_http_linegate_json_write_init(&jw, r->pool, 384);
    ngx_http_linegate_json_write_object(&jw);
    ngx_http_linegate_json_write_key(&jw, "status");
    ngx_http_linegate_json_write_raw(&jw, (u_char *) "\"OK\"", 4);
    ngx_http_linegate_json_write_key(&jw, "limits");
    ngx_http_linegate_json_write_object(&jw);
    ngx_http_linegate_json_write_key(&jw, "daily");
    ngx_http_linegate_pv_window_jw(&jw, &st->daily, NGX_HTTP_LINEGATE_PV_DAY);
    ngx_http_linegate_json_write_key(&jw, "monthly");
    ngx_http_linegate_pv_window_jw(&jw, &st->monthly,
                                   NGX_HTTP_LINEGATE_PV_MONTH);
    ngx_http_linegate_json_write_end(&jw, '}');
    ngx_http_linegate_json_write_end(&jw, '}');

    ngx_http_linegate_send_jw(r, NGX_HTTP_OK, &jw);
}


/*
 * resets_at: when the next counted line leaves the window (the moment
 * one more line can be added when the window is full), null when none is
 * counted.
 */
static void
ngx_http_linegate_pv_window_jw(ngx_http_linegate_json_write_t *jw,
    ngx_http_linegate_pv_window_t *w, time_t window)
{
    u_char  iso[NGX_HTTP_LINEGATE_ISO_LEN], *last;

    ngx_http_linegate_json_write_object(jw);
    ngx_http_linegate_json_write_key(jw, "limit");
    ngx_http_linegate_json_write_int(jw, (int64_t) w->limit);
    ngx_http_linegate_json_write_key(jw, "used");
    ngx_http_linegate_json_write_int(jw, (int64_t) w->used);
    ngx_http_linegate_json_write_key(jw, "remaining");
    ngx_http_linegate_json_write_int(jw,
                                     (int64_t) ngx_max(w->limit - w->used, 0));
    ngx_http_linegate_json_write_key(jw, "window_seconds");
    ngx_http_linegate_json_write_int(jw, (int64_t) window);
    ngx_http_linegate_json_write_key(jw, "resets_at");

    if (w->free_at > 0) {
        last = ngx_http_linegate_iso8601(iso, w->free_at);
        ngx_http_linegate_json_write_str(jw, iso, last - iso);

    } else {
        ngx_http_linegate_json_write_null(jw);
    }

    ngx_http_linegate_json_write_end(jw, '}');
}


ngx_int_t
ngx_http_linegate_pv_state(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, redisReply *reply, int64_t now,
    ngx_http_linegate_pv_state_t *st)
{
    int64_t     v[6];
    ngx_str_t   acct;
    ngx_uint_t  i;

    for (i = 0; i < 6; i++) {
        if (ngx_http_linegate_reply_int(reply, NGX_HTTP_LINEGATE_PV_STATE + i,
                                        &v[i])
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    st->daily.limit = v[0];
    st->daily.used = v[1];
    st->daily.free_at = v[2];
    st->monthly.limit = v[3];
    st->monthly.used = v[4];
    st->monthly.free_at = v[5];
    st->now = now;

    /* $linegate_tenant: the reply is freed once the handler returns */
    if (ctx->tenant.len == 0
        && ngx_http_linegate_reply_str(reply, NGX_HTTP_LINEGATE_PV_ACCOUNT,
                                       &acct)
           == NGX_OK
        && acct.len)
    {
        if (ngx_http_linegate_pstr(r->pool, &ctx->tenant, acct.data, acct.len)
            == NULL)
        {
            ctx->tenant.len = 0;
        }
    }

    return ngx_http_linegate_pv_headers(r, ctx, st);
}


ngx_int_t
ngx_http_linegate_pv_headers(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, ngx_http_linegate_pv_state_t *st)
{
    ngx_uint_t                      i;
    ngx_http_linegate_rl_window_t   rl[2];
    ngx_http_linegate_pv_window_t  *w;

    for (i = 0; i < 2; i++) {
        w = i ? &st->monthly : &st->daily;

        rl[i].name = i ? "monthly" : "daily";
        rl[i].quota = (ngx_uint_t) w->limit;
        rl[i].window = i ? NGX_HTTP_LINEGATE_PV_MONTH
                         : NGX_HTTP_LINEGATE_PV_DAY;
        rl[i].remaining = (ngx_int_t) (w->limit - w->used);
        rl[i].reset = ngx_http_linegate_pv_reset(w, st->now, rl[i].window);
    }

    return ngx_http_linegate_ratelimit_headers(r, ctx, rl, 2);
}


time_t
ngx_http_linegate_pv_wait(int64_t free_at, int64_t now)
{
    if (free_at <= 0) {
        return 0;
    }

    if (free_at <= now) {
        /* left the window meanwhile (another nginx's clock): retry now */
        return 1;
    }

    return (time_t) ((free_at - now + 999) / 1000);
}


/*
 * RateLimit's t of a window, and a 429's Retry-After: the seconds until
 * one more line can be added. A full window that no slot of will ever
 * free (a limit of 0, or lines of a time no clock gives) says a whole
 * window, both: t=0 beside r=0 reads "retry now" (until 2026-11-28 the
 * header said so while Retry-After said a window), and a client told
 * nothing would ask at once; a window is the longest any slot takes to
 * free, and the operator may raise the limit meanwhile.
 */
time_t
ngx_http_linegate_pv_reset(ngx_http_linegate_pv_window_t *w, int64_t now,
    time_t window)
{
    time_t  wait;

    wait = ngx_http_linegate_pv_wait(w->free_at, now);

    if (wait == 0 && w->used >= w->limit) {
        return window;
    }

    return wait;
}


ngx_int_t
ngx_http_linegate_pv_refuse(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, int64_t code, ngx_str_t *error,
    ngx_http_linegate_pv_state_t *st)
{
    u_char                         *msg;
    time_t                          window;
    const char                     *err, *per;
    ngx_http_linegate_pv_window_t  *w;

    switch (code) {

    case NGX_HTTP_UNAUTHORIZED:
        ngx_str_set(&ctx->outcome, "unauthorized");
        ngx_http_linegate_error(r, NGX_HTTP_UNAUTHORIZED, NULL,
                                "Invalid API credentials");
        return NGX_OK;

    case NGX_HTTP_FORBIDDEN:
        ngx_str_set(&ctx->outcome, "plan_not_eligible");
        ngx_http_linegate_error(r, NGX_HTTP_FORBIDDEN, NULL,
                                "Account is not on the inbound_only plan");
        return NGX_OK;

    case NGX_HTTP_SERVICE_UNAVAILABLE:
        ngx_http_linegate_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                "no_lines_available",
                                "No lines are currently available");
        return NGX_OK;

    case NGX_HTTP_TOO_MANY_REQUESTS:
        break;

    default:
        return NGX_DECLINED;
    }

    if (error->len == sizeof("daily_limit_reached") - 1
        && ngx_strncmp(error->data, "daily_limit_reached", error->len) == 0)
    {
        err = "daily_limit_reached";
        per = "day";
        w = &st->daily;
        window = NGX_HTTP_LINEGATE_PV_DAY;

    } else if (error->len == sizeof("monthly_limit_reached") - 1
               && ngx_strncmp(error->data, "monthly_limit_reached",
                              error->len)
                  == 0)
    {
        err = "monthly_limit_reached";
        per = "month";
        w = &st->monthly;
        window = NGX_HTTP_LINEGATE_PV_MONTH;

    } else {
        return NGX_DECLINED;
    }

    msg = ngx_pnalloc(r->pool, 64 + NGX_INT64_LEN);
    if (msg == NULL) {
        return NGX_ERROR;
    }

    (void) ngx_sprintf(msg, "Maximum %L lines can be added per %s via API%Z",
                       w->limit, per);

    /* the RateLimit header's t of the window (a limit of 0: a window) */
    ctx->retry_after = ngx_http_linegate_pv_reset(w, st->now, window);

    ngx_http_linegate_error(r, NGX_HTTP_TOO_MANY_REQUESTS, err,
                            (char *) msg);

    return NGX_OK;
}
