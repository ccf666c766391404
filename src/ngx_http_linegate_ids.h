
/*
 * linegate: line request ids.
 */


#ifndef _NGX_HTTP_LINEGATE_IDS_H_INCLUDED_
#define _NGX_HTTP_LINEGATE_IDS_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>


#define NGX_HTTP_LINEGATE_ID_LEN   24    /* 4-byte time + 8 random bytes */


/* a new line request id: 24 lowercase hex; NGX_ERROR if no randomness */
ngx_int_t ngx_http_linegate_new_id(u_char *buf);

/* 24 lowercase hex characters */
ngx_int_t ngx_http_linegate_id_valid(ngx_str_t *id);


#endif /* _NGX_HTTP_LINEGATE_IDS_H_INCLUDED_ */
