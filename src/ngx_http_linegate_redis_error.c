
/*
 * linegate: what a Redis error reply says, whichever Redis wrote it
 * (ngx_http_linegate_redis_error.h says why).
 */


#include <string.h>

#include "ngx_http_linegate_redis_error.h"


/* how Redis 6 starts a script's error (evalGenericCommand) */
#define NGX_HTTP_LINEGATE_REDIS_SCRIPT_ERROR  "ERR Error running script"

/* how Redis words a killed script's error, after "ERR " (luaMaskCountHook) */
#define NGX_HTTP_LINEGATE_REDIS_KILLED        "Script killed by user with "

/* where Redis 6's Lua error handler says the script stopped */
#define NGX_HTTP_LINEGATE_REDIS_USER_SCRIPT   "@user_script:"


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


int
ngx_http_linegate_redis_error_killed(const char *str, size_t len)
{
    size_t  i, n, klen, plen, ulen;

    klen = sizeof(NGX_HTTP_LINEGATE_REDIS_KILLED) - 1;
    plen = sizeof(NGX_HTTP_LINEGATE_REDIS_SCRIPT_ERROR) - 1;
    ulen = sizeof(NGX_HTTP_LINEGATE_REDIS_USER_SCRIPT) - 1;

    /* Redis 7: the code, then the kill */
    if (len >= 4 + klen && memcmp(str, "ERR ", 4) == 0
        && memcmp(str + 4, NGX_HTTP_LINEGATE_REDIS_KILLED, klen) == 0)
    {
        return 1;
    }

    /* Redis 6: "ERR Error running script (call to f_<sha>): " first */
    if (len < plen
        || memcmp(str, NGX_HTTP_LINEGATE_REDIS_SCRIPT_ERROR, plen) != 0)
    {
        return 0;
    }

    for (i = plen; i + 2 < len; i++) {
        if (str[i] == ')' && str[i + 1] == ':' && str[i + 2] == ' ') {
            break;
        }
    }

    if (i + 2 >= len) {
        return 0;
    }

    i += 3;

    /*
     * then where the script stopped, "@user_script:<line>: ", which the
     * error handler leaves out when Lua knows no line
     */
    if (len - i >= ulen
        && memcmp(str + i, NGX_HTTP_LINEGATE_REDIS_USER_SCRIPT, ulen) == 0)
    {
        i += ulen;

        for (n = i; i < len && str[i] >= '0' && str[i] <= '9'; i++) {
            /* void */
        }

        if (i == n || len - i < 2 || str[i] != ':' || str[i + 1] != ' ') {
            return 0;
        }

        i += 2;
    }

    return len - i >= klen
           && memcmp(str + i, NGX_HTTP_LINEGATE_REDIS_KILLED, klen) == 0;
}
