
/*
 * linegate: the pool string copy, the one way the module copies bytes it
 * does not own (a reply, a JSON value, a cache entry) into a request's
 * pool.
 */


#ifndef _NGX_HTTP_LINEGATE_STR_H_INCLUDED_
#define _NGX_HTTP_LINEGATE_STR_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>


/*
 * dst = a copy of data[0 .. len) in pool (len may be 0: dst->data is
 * still a valid pointer). dst, or NULL when the pool has no memory.
 */
ngx_str_t *ngx_http_linegate_pstr(ngx_pool_t *pool, ngx_str_t *dst,
    u_char *data, size_t len);


#endif /* _NGX_HTTP_LINEGATE_STR_H_INCLUDED_ */
