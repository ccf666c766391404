
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


#endif /* _NGX_HTTP_LINEGATE_HEADERS_H_INCLUDED_ */
