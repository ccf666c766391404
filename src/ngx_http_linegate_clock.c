
/*
 * linegate: the clock, from nginx's cached time: Unix milliseconds, ISO
 * 8601 timestamps and UTC dates.
 */


#include <ngx_config.h>
#include <ngx_core.h>

#include "ngx_http_linegate_clock.h"


int64_t
ngx_http_linegate_now_ms(void)
{
    ngx_time_t  *tp;

    tp = ngx_timeofday();

    return (int64_t) tp->sec * 1000 + tp->msec;
}


u_char *
ngx_http_linegate_iso8601(u_char *buf, int64_t ms)
{
    ngx_tm_t  tm;

    ngx_gmtime((time_t) (ms / 1000), &tm);

    return ngx_sprintf(buf, "%4d-%02d-%02dT%02d:%02d:%02d.%03dZ",
                       tm.ngx_tm_year, tm.ngx_tm_mon, tm.ngx_tm_mday,
                       tm.ngx_tm_hour, tm.ngx_tm_min, tm.ngx_tm_sec,
                       (int) (ms % 1000));
}


u_char *
ngx_http_linegate_utc_date(u_char *buf, int64_t ms)
{
    ngx_tm_t  tm;

    ngx_gmtime((time_t) (ms / 1000), &tm);

    return ngx_sprintf(buf, "%4d-%02d-%02d",
                       tm.ngx_tm_year, tm.ngx_tm_mon, tm.ngx_tm_mday);
}
