
/*
 * linegate: the clock, from nginx's cached time: Unix milliseconds, ISO
 * 8601 timestamps and UTC dates.
 */


#include <ngx_config.h>
#include <ngx_core.h>

#include "ngx_http_linegate_clock.h"


/* 9999-12-31T23:59:59.999Z: the last time of a 4-digit year */
#define NGX_HTTP_LINEGATE_CLOCK_MAX_MS  253402300799999LL


static int64_t ngx_http_linegate_clock_bound(int64_t ms);


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

    ms = ngx_http_linegate_clock_bound(ms);

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

    ms = ngx_http_linegate_clock_bound(ms);

    ngx_gmtime((time_t) (ms / 1000), &tm);

    return ngx_sprintf(buf, "%4d-%02d-%02d",
                       tm.ngx_tm_year, tm.ngx_tm_mon, tm.ngx_tm_mday);
}


/*
 * A time the fixed-size forms can hold: a negative one would print its
 * sign, one past year 9999 a fifth digit, both past the caller's buffer
 * (found by fuzz_redis_reply: a limits window read from Redis)
 */
static int64_t
ngx_http_linegate_clock_bound(int64_t ms)
{
    if (ms < 0) {
        return 0;
    }

    return ngx_min(ms, NGX_HTTP_LINEGATE_CLOCK_MAX_MS);
}
