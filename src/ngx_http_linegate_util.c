
/*
 * linegate: clocks and identifiers shared by the endpoints.
 */


#include <ngx_config.h>
#include <ngx_core.h>

#include "ngx_http_linegate_crypto.h"
#include "ngx_http_linegate_util.h"


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


ngx_int_t
ngx_http_linegate_new_id(u_char *buf)
{
    uint32_t  t;
    u_char    raw[12];

    t = (uint32_t) ngx_time();

    raw[0] = (u_char) (t >> 24);
    raw[1] = (u_char) (t >> 16);
    raw[2] = (u_char) (t >> 8);
    raw[3] = (u_char) t;

    if (ngx_http_linegate_random_bytes(raw + 4, 8) != 0) {
        return NGX_ERROR;
    }

    ngx_hex_dump(buf, raw, sizeof(raw));

    return NGX_OK;
}


ngx_int_t
ngx_http_linegate_id_valid(ngx_str_t *id)
{
    size_t  i;

    if (id->len != NGX_HTTP_LINEGATE_ID_LEN) {
        return 0;
    }

    for (i = 0; i < id->len; i++) {
        if (!((id->data[i] >= '0' && id->data[i] <= '9')
              || (id->data[i] >= 'a' && id->data[i] <= 'f')))
        {
            return 0;
        }
    }

    return 1;
}


ngx_table_elt_t *
ngx_http_linegate_find_header(ngx_list_t *headers, const char *name)
{
    size_t            len;
    ngx_uint_t        i;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    len = ngx_strlen(name);
    part = &headers->part;
    h = part->elts;

    for (i = 0; /* void */; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                return NULL;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].hash != 0 && h[i].key.len == len
            && ngx_strncasecmp(h[i].key.data, (u_char *) name, len) == 0)
        {
            return &h[i];
        }
    }
}
