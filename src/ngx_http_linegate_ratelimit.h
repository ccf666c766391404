
/*
 * linegate: RateLimit-Policy and RateLimit headers (IETF httpapi
 * ratelimit-headers draft, structured-field form). The counting itself is
 * done atomically inside the endpoint's Redis script.
 */


#ifndef _NGX_HTTP_LINEGATE_RATELIMIT_H_INCLUDED_
#define _NGX_HTTP_LINEGATE_RATELIMIT_H_INCLUDED_


#include "ngx_http_linegate_module.h"


typedef struct {
    const char                     *name;       /* policy name */
    ngx_uint_t                      quota;      /* q: requests or lines */
    time_t                          window;     /* w: seconds */
    ngx_int_t                       remaining;  /* r */
    time_t                          reset;      /* t: seconds */
} ngx_http_linegate_rl_window_t;


/*
 * The largest number rl_gcra answers: its numbers are Lua's, whole up to
 * 2^53, and none is negative. A day's interval times the largest burst,
 * in ms, is below it: a number beyond it is no answer of the script, and
 * the sums made of it (Retry-After rounded up, a refund's remaining)
 * would overflow.
 */
#define NGX_HTTP_LINEGATE_GCRA_MAX  ((int64_t) 1 << 53)

#define ngx_http_linegate_gcra_valid(v)                                     \
    ((v) >= 0 && (v) <= NGX_HTTP_LINEGATE_GCRA_MAX)


/*
 * RateLimit's r for a policy of quota q: remaining, at least 0 and at
 * most q (the rule of linegate_limit's headers too)
 */
int64_t ngx_http_linegate_ratelimit_available(int64_t remaining,
    ngx_uint_t quota);

/* fill ctx->rl_policy and ctx->rl_state for n windows */
int64_t ngx_http_linegate_ratelimit_next(int64_t remaining, int64_t reset_ms,
    int64_t retry_ms, int64_t full, ngx_uint_t quota, uint64_t interval);
ngx_int_t ngx_http_linegate_ratelimit_headers(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, ngx_http_linegate_rl_window_t *w,
    ngx_uint_t n);


#endif /* _NGX_HTTP_LINEGATE_RATELIMIT_H_INCLUDED_ */
