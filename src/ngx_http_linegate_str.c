
/*
 * linegate: the pool string copy (ngx_http_linegate_str.h).
 */


#include "ngx_http_linegate_str.h"


ngx_str_t *
ngx_http_linegate_pstr(ngx_pool_t *pool, ngx_str_t *dst, u_char *data,
    size_t len)
{
    dst->data = ngx_pnalloc(pool, len ? len : 1);
    if (dst->data == NULL) {
        return NULL;
    }

    ngx_memcpy(dst->data, data, len);
    dst->len = len;

    return dst;
}
