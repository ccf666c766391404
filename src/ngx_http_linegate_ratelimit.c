
/*
 * linegate: RateLimit-Policy and RateLimit header values.
 *
 *   RateLimit-Policy: "daily";q=3;w=86400, "monthly";q=10;w=2592000
 *   RateLimit: "daily";r=2;t=3600, "monthly";r=6;t=86400
 */


#include "ngx_http_linegate_module.h"
#include "ngx_http_linegate_ratelimit.h"


#define NGX_HTTP_LINEGATE_RL_ITEM_LEN  (32 + 3 * NGX_INT_T_LEN + 16)


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
        sp = ngx_sprintf(sp, "\"%s\";r=%i;t=%T",
                         w[i].name, ngx_max(w[i].remaining, 0),
                         ngx_max(w[i].reset, 0));
    }

    ctx->rl_policy.data = policy;
    ctx->rl_policy.len = pp - policy;
    ctx->rl_state.data = state;
    ctx->rl_state.len = sp - state;

    return NGX_OK;
}
