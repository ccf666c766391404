
/*
 * linegate: the clock (nginx's cached time) in the forms the APIs use.
 */


#ifndef _NGX_HTTP_LINEGATE_CLOCK_H_INCLUDED_
#define _NGX_HTTP_LINEGATE_CLOCK_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>


#define NGX_HTTP_LINEGATE_ISO_LEN  24    /* 2026-05-18T14:30:00.000Z */


/* now, in Unix milliseconds, from nginx's cached clock */
int64_t ngx_http_linegate_now_ms(void);

/*
 * ISO 8601 UTC with milliseconds, NGX_HTTP_LINEGATE_ISO_LEN bytes; returns
 * the end of what was written. ms outside 1970 .. 9999 (a time read from
 * Redis may be anything) is written as the nearest end of that range.
 */
u_char *ngx_http_linegate_iso8601(u_char *buf, int64_t ms);

/* "YYYY-MM-DD" (UTC) of ms into buf (10 bytes; ms bounded as above) */
u_char *ngx_http_linegate_utc_date(u_char *buf, int64_t ms);


#endif /* _NGX_HTTP_LINEGATE_CLOCK_H_INCLUDED_ */
