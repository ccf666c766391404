
/*
 * linegate: line request ids: 24 lowercase hex characters, 4 bytes of
 * time then 8 random bytes from the CSPRNG.
 */


#include <ngx_config.h>
#include <ngx_core.h>

#include "ngx_http_linegate_crypto.h"
#include "ngx_http_linegate_chars.h"
#include "ngx_http_linegate_ids.h"


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
    return id->len == NGX_HTTP_LINEGATE_ID_LEN
           && ngx_http_linegate_chars_are(id->data, id->len,
                                          NGX_HTTP_LINEGATE_CHARS_HEX);
}
