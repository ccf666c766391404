
/*
 * linegate: clocks and identifiers shared by the endpoints.
 */


#ifndef _NGX_HTTP_LINEGATE_UTIL_H_INCLUDED_
#define _NGX_HTTP_LINEGATE_UTIL_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>


#define NGX_HTTP_LINEGATE_ISO_LEN  24    /* 2026-05-18T14:30:00.000Z */
#define NGX_HTTP_LINEGATE_ID_LEN   24    /* 4-byte time + 8 random bytes */


/* now, in Unix milliseconds, from nginx's cached clock */
int64_t ngx_http_linegate_now_ms(void);

/* ISO 8601 UTC with milliseconds; returns the end of what was written */
u_char *ngx_http_linegate_iso8601(u_char *buf, int64_t ms);

/* "YYYY-MM-DD" (UTC) of ms into buf (10 bytes) */
u_char *ngx_http_linegate_utc_date(u_char *buf, int64_t ms);

/* a new line request id: 24 lowercase hex; NGX_ERROR if no randomness */
ngx_int_t ngx_http_linegate_new_id(u_char *buf);

/* 24 lowercase hex characters */
ngx_int_t ngx_http_linegate_id_valid(ngx_str_t *id);

/* the first header named name (any case) in a headers list, or NULL */
ngx_table_elt_t *ngx_http_linegate_find_header(ngx_list_t *headers,
    const char *name);


#endif /* _NGX_HTTP_LINEGATE_UTIL_H_INCLUDED_ */
