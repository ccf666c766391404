
/*
 * linegate_limit: fleet-wide rate limiting for any nginx location (GCRA
 * in Redis, one key per limited value), a module of its own in the same
 * shared object as ngx_http_linegate_module, whose Redis connection it
 * uses.
 */


#ifndef _NGX_HTTP_LINEGATE_LIMIT_H_INCLUDED_
#define _NGX_HTTP_LINEGATE_LIMIT_H_INCLUDED_


#include "ngx_http_linegate_module.h"


/* commands of one pipeline: the zones one location may check */
#define NGX_HTTP_LINEGATE_LIMIT_MAX_ZONES  8


typedef enum {
    NGX_HTTP_LINEGATE_LIMIT_NONE = 0,
    NGX_HTTP_LINEGATE_LIMIT_PASSED,
    NGX_HTTP_LINEGATE_LIMIT_REJECTED,
    NGX_HTTP_LINEGATE_LIMIT_REJECTED_DRY_RUN,
    NGX_HTTP_LINEGATE_LIMIT_OPEN,
    NGX_HTTP_LINEGATE_LIMIT_LOCAL_PASSED,
    NGX_HTTP_LINEGATE_LIMIT_LOCAL_REJECTED,
    NGX_HTTP_LINEGATE_LIMIT_CLOSED
} ngx_http_linegate_limit_status_e;


typedef enum {
    NGX_HTTP_LINEGATE_LIMIT_ON_ERROR_OPEN = 0,
    NGX_HTTP_LINEGATE_LIMIT_ON_ERROR_CLOSED,
    NGX_HTTP_LINEGATE_LIMIT_ON_ERROR_LOCAL
} ngx_http_linegate_limit_on_error_e;


typedef struct {
    ngx_str_t                       name;
    ngx_http_complex_value_t        key;
    ngx_uint_t                      rate;       /* n of n r/<unit> */
    time_t                          unit;       /* seconds: 1 60 3600 86400 */
    ngx_uint_t                      burst;
    uint64_t                        interval;   /* T, microseconds */
    ngx_str_t                       interval_arg;
    ngx_str_t                       tolerance_arg;  /* burst * T */
    ngx_msec_t                      lease;      /* 0: every decision asks */
    ngx_uint_t                      lease_max;  /* requests in a lease */
    ngx_uint_t                      defined;    /* 0: used, not defined */
    /*
     * some location uses it with another zone: refunds lower its TAT,
     * so its rejections are not cached
     */
    ngx_uint_t                      refundable;
    u_char                         *file;       /* where first used */
    ngx_uint_t                      line;
} ngx_http_linegate_limit_zone_t;


extern ngx_module_t  ngx_http_linegate_limit_module;


#endif /* _NGX_HTTP_LINEGATE_LIMIT_H_INCLUDED_ */
