
/*
 * linegate: header lookup.
 */


#ifndef _NGX_HTTP_LINEGATE_HEADERS_H_INCLUDED_
#define _NGX_HTTP_LINEGATE_HEADERS_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>


/* the first header named name (any case) in a headers list, or NULL */
ngx_table_elt_t *ngx_http_linegate_find_header(ngx_list_t *headers,
    const char *name);

/*
 * NGX_DECLINED: no header named name; NGX_OK: one, in *found (or several
 * of one value, when same_value_ok); NGX_ERROR: two that differ, or two
 * at all without same_value_ok.
 */
ngx_int_t ngx_http_linegate_find_header_once(ngx_list_t *headers,
    const char *name, ngx_uint_t same_value_ok, ngx_table_elt_t **found);


#endif /* _NGX_HTTP_LINEGATE_HEADERS_H_INCLUDED_ */
