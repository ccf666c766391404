
/*
 * linegate: a per-worker generator for $request_id (see the .c file),
 * and the lookup of a request's id for answers and log lines.
 */


#ifndef _NGX_HTTP_LINEGATE_REQUEST_ID_H_INCLUDED_
#define _NGX_HTTP_LINEGATE_REQUEST_ID_H_INCLUDED_


#include "ngx_http_linegate_module.h"


ngx_int_t ngx_http_linegate_request_id_install(ngx_conf_t *cf);
void ngx_http_linegate_request_id_init_process(ngx_cycle_t *cycle);

/* the request's $request_id (whichever generator made it) */
ngx_int_t ngx_http_linegate_request_id(ngx_http_request_t *r,
    ngx_str_t *id);


#endif /* _NGX_HTTP_LINEGATE_REQUEST_ID_H_INCLUDED_ */
