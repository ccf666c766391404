
/*
 * linegate: the embedded Redis scripts and their SHA1 digests.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <openssl/sha.h>

#include "ngx_http_linegate_scripts.h"

#define NGX_HTTP_LINEGATE_LUA_TABLE
#include "ngx_http_linegate_lua.h"


static u_char     ngx_http_linegate_sha_hex[NGX_HTTP_LINEGATE_SCRIPT_COUNT][40];
static ngx_str_t  ngx_http_linegate_shas[NGX_HTTP_LINEGATE_SCRIPT_COUNT];


ngx_int_t
ngx_http_linegate_scripts_init(ngx_log_t *log)
{
    ngx_uint_t      i;
    unsigned char   md[SHA_DIGEST_LENGTH];

    for (i = 0; i < NGX_HTTP_LINEGATE_SCRIPT_COUNT; i++) {
        if (SHA1(ngx_http_linegate_script_srcs[i].src,
                 ngx_http_linegate_script_srcs[i].len, md)
            == NULL)
        {
            ngx_log_error(NGX_LOG_EMERG, log, 0,
                          "linegate: SHA1 of script \"%V\" failed",
                          &ngx_http_linegate_script_srcs[i].name);
            return NGX_ERROR;
        }

        ngx_hex_dump(ngx_http_linegate_sha_hex[i], md, SHA_DIGEST_LENGTH);
        ngx_http_linegate_shas[i].data = ngx_http_linegate_sha_hex[i];
        ngx_http_linegate_shas[i].len = 40;
    }

    return NGX_OK;
}


ngx_str_t *
ngx_http_linegate_script_sha(ngx_http_linegate_script_id_e id)
{
    return &ngx_http_linegate_shas[id];
}


ngx_str_t *
ngx_http_linegate_script_name(ngx_http_linegate_script_id_e id)
{
    return &ngx_http_linegate_script_srcs[id].name;
}


void
ngx_http_linegate_script_source(ngx_http_linegate_script_id_e id,
    ngx_str_t *src)
{
    src->data = ngx_http_linegate_script_srcs[id].src;
    src->len = ngx_http_linegate_script_srcs[id].len;
}
