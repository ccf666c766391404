
/*
 * linegate: nginx -t's check of where the Stripe calls go (the location
 * each server's calls reach under linegate_stripe_location).
 */


#ifndef _NGX_HTTP_LINEGATE_STRIPE_CONF_H_INCLUDED_
#define _NGX_HTTP_LINEGATE_STRIPE_CONF_H_INCLUDED_


#include "ngx_http_linegate_module.h"


/*
 * nginx -t: the location that the Stripe calls of each of servers (of
 * ngx_http_core_srv_conf_t *) reach under location (linegate_stripe_
 * location) keeps their answers whole and lets them end: refused
 * (NGX_ERROR, logged naming the directive) otherwise; warned of when
 * they reach no proxied location.
 */
ngx_int_t ngx_http_linegate_stripe_conf_check(ngx_conf_t *cf,
    ngx_str_t *location, ngx_array_t *servers);


#endif /* _NGX_HTTP_LINEGATE_STRIPE_CONF_H_INCLUDED_ */
