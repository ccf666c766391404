
/*
 * linegate: the Redis scripts of src/lua/, embedded at build time and
 * sent by SHA1.
 */


#ifndef _NGX_HTTP_LINEGATE_SCRIPTS_H_INCLUDED_
#define _NGX_HTTP_LINEGATE_SCRIPTS_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>


typedef struct {
    ngx_str_t                       name;
    u_char                         *src;
    size_t                          len;
} ngx_http_linegate_script_src_t;


#include "ngx_http_linegate_lua.h"


ngx_int_t ngx_http_linegate_scripts_init(ngx_log_t *log);
ngx_str_t *ngx_http_linegate_script_sha(ngx_http_linegate_script_id_e id);
ngx_str_t *ngx_http_linegate_script_name(ngx_http_linegate_script_id_e id);
void ngx_http_linegate_script_source(ngx_http_linegate_script_id_e id,
    ngx_str_t *src);


#endif /* _NGX_HTTP_LINEGATE_SCRIPTS_H_INCLUDED_ */
