
/*
 * Fuzz target: a Redis error reply's text as linegate reads it
 * (src/ngx_http_linegate_redis_error.c, included): Redis 7's errors and
 * Redis 6's, whose script errors wrap the error redis.call met.
 *
 * Invariants: the error unwrapped lies within the text, is the whole
 * text or its tail after "ERR Error running script...: -", starts with
 * a capital letter when it is a tail, and unwrapping it again changes
 * nothing; error_is() of the unwrapped error's first word is true, and
 * of that word with a letter more, false. A text read as a killed
 * script's starts "ERR " and holds "Script killed by user with " after
 * it (Redis 7's at once, Redis 6's after its "): "), and is of code ERR.
 */


#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ngx_http_linegate_redis_error.c"


static void
killed_check(const char *text, size_t size)
{
    size_t  i, k;

    k = sizeof(NGX_HTTP_LINEGATE_REDIS_KILLED) - 1;

    if (size < 4 + k || memcmp(text, "ERR ", 4) != 0) {
        abort();
    }

    if (memcmp(text + 4, NGX_HTTP_LINEGATE_REDIS_KILLED, k) == 0) {
        return;
    }

    if (memcmp(text, NGX_HTTP_LINEGATE_REDIS_SCRIPT_ERROR,
               sizeof(NGX_HTTP_LINEGATE_REDIS_SCRIPT_ERROR) - 1)
        != 0)
    {
        abort();
    }

    for (i = 4; i + k <= size; i++) {
        if (memcmp(text + i, NGX_HTTP_LINEGATE_REDIS_KILLED, k) == 0
            && text[i - 2] == ':' && text[i - 1] == ' ')
        {
            return;
        }
    }

    abort();
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char         word[64];
    size_t       n, again_len, w;
    const char  *text, *e, *again;

    text = (const char *) data;

    if (ngx_http_linegate_redis_error_killed(text, size)) {
        killed_check(text, size);
    }

    ngx_http_linegate_redis_error_unwrap(text, size, &e, &n);

    if (e < text || e + n != text + size || n > size) {
        abort();
    }

    if (e != text) {
        if (e - text < 3 || e[-1] != '-' || e[-2] != ' ' || e[-3] != ':'
            || n == 0 || e[0] < 'A' || e[0] > 'Z'
            || memcmp(text, NGX_HTTP_LINEGATE_REDIS_SCRIPT_ERROR,
                      sizeof(NGX_HTTP_LINEGATE_REDIS_SCRIPT_ERROR) - 1)
               != 0)
        {
            abort();
        }

        ngx_http_linegate_redis_error_unwrap(e, n, &again, &again_len);

        if (again != e && memcmp(e, NGX_HTTP_LINEGATE_REDIS_SCRIPT_ERROR,
                                 sizeof(NGX_HTTP_LINEGATE_REDIS_SCRIPT_ERROR)
                                 - 1)
                          != 0)
        {
            abort();
        }
    }

    for (w = 0; w < n && w < sizeof(word) - 2 && e[w] != ' ' && e[w] != '\0';
         w++)
    {
        word[w] = e[w];
    }

    if (w == 0 || w == n || w >= sizeof(word) - 2 || e[w] != ' ') {
        return 0;
    }

    word[w] = '\0';

    if (!ngx_http_linegate_redis_error_is(text, size, word)) {
        abort();
    }

    word[w] = 'Z';
    word[w + 1] = '\0';

    if (ngx_http_linegate_redis_error_is(text, size, word)) {
        abort();
    }

    return 0;
}
