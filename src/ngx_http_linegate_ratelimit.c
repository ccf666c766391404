
/*
 * linegate: RateLimit-Policy and RateLimit header values.
 *
 *   RateLimit-Policy: "daily";q=3;w=86400, "monthly";q=10;w=2592000
 *   RateLimit: "daily";r=2;t=3600, "monthly";r=6;t=86400
 */


#include "ngx_http_linegate_module.h"
#include "ngx_http_linegate_ratelimit.h"


#define NGX_HTTP_LINEGATE_RL_ITEM_LEN  (32 + 3 * NGX_INT_T_LEN + 16)


/*
 * The draft's r is what is left of the policy's quota q per w: a GCRA's
 * burst lets more than q pass at once (rate=10r/s burst=20: 21), and a
 * client that reads q - r as what it used would get a negative number.
 * The policy keeps the configured rate (q per w, what the operator set,
 * and an exact w: the burst's time, (burst + 1) x w / q, is seldom whole
 * seconds), and r says at most q; the surplus is not advertised (the
 * draft lets a server advertise less than it would admit).
 */
int64_t
ngx_http_linegate_ratelimit_available(int64_t remaining, ngx_uint_t quota)
{
    if (remaining <= 0) {
        return 0;
    }

    return ngx_min(remaining, (int64_t) quota);
}


/*
 * RateLimit's t for a GCRA, in seconds rounded up: the draft (-10 on)
 * makes it the time until more quota is made available, that is until r
 * grows by one, no longer until the whole quota is back. A key is back
 * to full (full admissions, burst + 1) reset_ms from now, one admission
 * every interval T (microseconds) before that: the next one comes back
 * reset - (full - 1 - remaining) T from now, a rejection's retry_ms. 0
 * when r already says all it can (q, or full when below q): nothing more
 * is to come. reset_ms and retry_ms are within NGX_HTTP_LINEGATE_GCRA_MAX
 * and (full - 1) T within a day's interval times the largest burst:
 * their microseconds fit in 63 bits.
 */
int64_t
ngx_http_linegate_ratelimit_next(int64_t remaining, int64_t reset_ms,
    int64_t retry_ms, int64_t full, ngx_uint_t quota, uint64_t interval)
{
    int64_t  us;

    remaining = ngx_max(remaining, 0);

    if (remaining >= ngx_min(full, (int64_t) quota)) {
        return 0;
    }

    if (remaining == 0 && retry_ms > 0) {
        us = retry_ms * 1000;

    } else {
        us = ngx_max(reset_ms, 0) * 1000
             - (full - 1 - remaining) * (int64_t) interval;
    }

    /* a lease's numbers may be older than its reset: one more is coming */
    us = ngx_max(us, 1);

    return (us + 999999) / 1000000;
}


ngx_int_t
ngx_http_linegate_ratelimit_headers(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, ngx_http_linegate_rl_window_t *w,
    ngx_uint_t n)
{
    u_char      *policy, *state, *pp, *sp;
    ngx_uint_t   i;

    policy = ngx_pnalloc(r->pool, n * NGX_HTTP_LINEGATE_RL_ITEM_LEN);
    state = ngx_pnalloc(r->pool, n * NGX_HTTP_LINEGATE_RL_ITEM_LEN);

    if (policy == NULL || state == NULL) {
        return NGX_ERROR;
    }

    pp = policy;
    sp = state;

    for (i = 0; i < n; i++) {
        if (i) {
            pp = ngx_cpymem(pp, ", ", 2);
            sp = ngx_cpymem(sp, ", ", 2);
        }

        pp = ngx_sprintf(pp, "\"%s\";q=%ui;w=%T",
                         w[i].name, w[i].quota, w[i].window);
        sp = ngx_sprintf(sp, "\"%s\";r=%L;t=%T", w[i].name,
                         ngx_http_linegate_ratelimit_available(
                             w[i].remaining, w[i].quota),
                         ngx_max(w[i].reset, 0));
    }

    ctx->rl_policy.data = policy;
    ctx->rl_policy.len = pp - policy;
    ctx->rl_state.data = state;
    ctx->rl_state.len = sp - state;

    return NGX_OK;
}
