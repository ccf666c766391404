
/*
 * linegate: what a Redis error reply says, whichever Redis wrote it
 * (ngx_http_linegate_redis_error.h says why).
 */


#include <string.h>

#include "ngx_http_linegate_redis_error.h"


/* how Redis 6 starts a script's error (evalGenericCommand) */
#define NGX_HTTP_LINEGATE_REDIS_SCRIPT_ERROR  "ERR Error running script"


void
ngx_http_linegate_redis_error_unwrap(const char *str, size_t len,
    const char **out, size_t *out_len)
{
    size_t       prefix, i;

    *out = str;
    *out_len = len;

    prefix = sizeof(NGX_HTTP_LINEGATE_REDIS_SCRIPT_ERROR) - 1;

    if (len < prefix
        || memcmp(str, NGX_HTTP_LINEGATE_REDIS_SCRIPT_ERROR, prefix) != 0)
    {
        return;
    }

    /*
     * the error redis.call met follows the first ": -" (what comes
     * before it, "(call to f_<sha>): @user_script:N: @user_script: N",
     * holds none); a script's own error (error_reply, a Lua error) has
     * none and stays as it is
     */
    for (i = prefix; i + 3 < len; i++) {
        if (str[i] == ':' && str[i + 1] == ' ' && str[i + 2] == '-'
            && str[i + 3] >= 'A' && str[i + 3] <= 'Z')
        {
            *out = str + i + 3;
            *out_len = len - i - 3;
            return;
        }
    }
}


int
ngx_http_linegate_redis_error_is(const char *str, size_t len,
    const char *code)
{
    size_t       n, clen;
    const char  *e;

    ngx_http_linegate_redis_error_unwrap(str, len, &e, &n);

    clen = strlen(code);

    return n >= clen && memcmp(e, code, clen) == 0
           && (n == clen || e[clen] == ' ');
}
