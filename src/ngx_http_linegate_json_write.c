
/*
 * linegate: the JSON writer (see ngx_http_linegate_json_write.h).
 */


#include <ngx_config.h>
#include <ngx_core.h>

#include "ngx_http_linegate_json_write.h"


static ngx_int_t ngx_http_linegate_json_write_grow(
    ngx_http_linegate_json_write_t *jw, size_t need);
static void ngx_http_linegate_json_write_escape(
    ngx_http_linegate_json_write_t *jw, u_char *data, size_t len);
static size_t ngx_http_linegate_json_write_utf8(u_char *p, u_char *last);


/* what jansson writes for a byte below 0x20: 0 when \u00XX */
static u_char  ngx_http_linegate_json_write_short[32] = {
    0, 0, 0, 0, 0, 0, 0, 0, 'b', 't', 'n', 0, 'f', 'r', 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0
};


#define ngx_http_linegate_json_write_room(jw, n)                            \
    ((size_t) ((jw)->end - (jw)->pos) >= (n)                                \
     || ngx_http_linegate_json_write_grow(jw, n) == NGX_OK)

/* the comma before a value or member, unless it is the first */
#define ngx_http_linegate_json_write_sep(jw)                                \
    if ((jw)->comma) {                                                      \
        *(jw)->pos++ = ',';                                                 \
    }


ngx_int_t
ngx_http_linegate_json_write_init(ngx_http_linegate_json_write_t *jw,
    ngx_pool_t *pool, size_t size)
{
    jw->pool = pool;
    jw->start = ngx_pnalloc(pool, size);
    jw->pos = jw->start;
    jw->end = jw->start ? jw->start + size : NULL;
    jw->comma = 0;
    jw->error = (jw->start == NULL);

    return jw->error ? NGX_ERROR : NGX_OK;
}


ngx_int_t
ngx_http_linegate_json_write_finish(ngx_http_linegate_json_write_t *jw,
    ngx_str_t *out)
{
    if (jw->error) {
        return NGX_ERROR;
    }

    out->data = jw->start;
    out->len = jw->pos - jw->start;

    return NGX_OK;
}


static ngx_int_t
ngx_http_linegate_json_write_grow(ngx_http_linegate_json_write_t *jw,
    size_t need)
{
    u_char  *p;
    size_t   len, size;

    if (jw->error) {
        return NGX_ERROR;
    }

    len = jw->pos - jw->start;
    size = ngx_max((size_t) (jw->end - jw->start) * 2, len + need);

    p = ngx_pnalloc(jw->pool, size);
    if (p == NULL) {
        jw->error = 1;
        return NGX_ERROR;
    }

    ngx_memcpy(p, jw->start, len);

    jw->start = p;
    jw->pos = p + len;
    jw->end = p + size;

    return NGX_OK;
}


void
ngx_http_linegate_json_write_object(ngx_http_linegate_json_write_t *jw)
{
    if (ngx_http_linegate_json_write_room(jw, 2)) {
        ngx_http_linegate_json_write_sep(jw);
        *jw->pos++ = '{';
        jw->comma = 0;
    }
}


void
ngx_http_linegate_json_write_array(ngx_http_linegate_json_write_t *jw)
{
    if (ngx_http_linegate_json_write_room(jw, 2)) {
        ngx_http_linegate_json_write_sep(jw);
        *jw->pos++ = '[';
        jw->comma = 0;
    }
}


void
ngx_http_linegate_json_write_end(ngx_http_linegate_json_write_t *jw, u_char c)
{
    if (ngx_http_linegate_json_write_room(jw, 1)) {
        *jw->pos++ = c;
        jw->comma = 1;
    }
}


void
ngx_http_linegate_json_write_keyn(ngx_http_linegate_json_write_t *jw,
    const char *key, size_t len)
{
    if (ngx_http_linegate_json_write_room(jw, len + 4)) {
        ngx_http_linegate_json_write_sep(jw);
        *jw->pos++ = '"';
        jw->pos = ngx_cpymem(jw->pos, key, len);
        *jw->pos++ = '"';
        *jw->pos++ = ':';
        jw->comma = 0;
    }
}


void
ngx_http_linegate_json_write_str(ngx_http_linegate_json_write_t *jw,
    u_char *data, size_t len)
{
    /* the worst case: every byte as \u00XX (U+FFFD is 3 bytes) */
    if (!ngx_http_linegate_json_write_room(jw, len * 6 + 3)) {
        return;
    }

    ngx_http_linegate_json_write_sep(jw);
    *jw->pos++ = '"';
    ngx_http_linegate_json_write_escape(jw, data, len);
    *jw->pos++ = '"';
    jw->comma = 1;
}


void
ngx_http_linegate_json_write_key_str(ngx_http_linegate_json_write_t *jw,
    u_char *data, size_t len)
{
    ngx_http_linegate_json_write_str(jw, data, len);

    if (ngx_http_linegate_json_write_room(jw, 1)) {
        *jw->pos++ = ':';
        jw->comma = 0;
    }
}


static void
ngx_http_linegate_json_write_escape(ngx_http_linegate_json_write_t *jw,
    u_char *data, size_t len)
{
    u_char  *p, *last, *run, c;
    size_t   n;

    static u_char  hex[] = "0123456789ABCDEF";

    p = jw->pos;
    last = data + len;

    while (data < last) {
        run = data;

        while (data < last && *data >= 0x20 && *data < 0x80 && *data != '"'
               && *data != '\\')
        {
            data++;
        }

        p = ngx_cpymem(p, run, data - run);

        if (data == last) {
            break;
        }

        /*
         * JSON is UTF-8 (RFC 8259 8.1) and the answer says so: bytes that
         * are not (only a writer of Redis other than the module stores
         * them) become U+FFFD, one per byte, instead of making the whole
         * answer unreadable to a strict client
         */
        if (*data >= 0x80) {
            n = ngx_http_linegate_json_write_utf8(data, last);

            if (n) {
                p = ngx_cpymem(p, data, n);
                data += n;

            } else {
                *p++ = 0xef;
                *p++ = 0xbf;
                *p++ = 0xbd;
                data++;
            }

            continue;
        }

        c = *data++;
        *p++ = '\\';

        if (c == '"' || c == '\\') {
            *p++ = c;

        } else if (ngx_http_linegate_json_write_short[c]) {
            *p++ = ngx_http_linegate_json_write_short[c];

        } else {
            *p++ = 'u';
            *p++ = '0';
            *p++ = '0';
            *p++ = hex[c >> 4];
            *p++ = hex[c & 0xf];
        }
    }

    jw->pos = p;
}


/*
 * The length of the UTF-8 sequence at p, 0 when there is none: RFC 3629,
 * as jansson reads a body (no overlong form, no surrogate, nothing past
 * U+10FFFF, none cut short by last).
 */
static size_t
ngx_http_linegate_json_write_utf8(u_char *p, u_char *last)
{
    size_t    n, i;
    uint32_t  c, min;

    c = *p;

    if (c >= 0xc2 && c <= 0xdf) {
        n = 2;
        c &= 0x1f;
        min = 0x80;

    } else if (c >= 0xe0 && c <= 0xef) {
        n = 3;
        c &= 0x0f;
        min = 0x800;

    } else if (c >= 0xf0 && c <= 0xf4) {
        n = 4;
        c &= 0x07;
        min = 0x10000;

    } else {
        return 0;
    }

    if ((size_t) (last - p) < n) {
        return 0;
    }

    for (i = 1; i < n; i++) {
        if ((p[i] & 0xc0) != 0x80) {
            return 0;
        }

        c = (c << 6) | (p[i] & 0x3f);
    }

    if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff)) {
        return 0;
    }

    return n;
}


void
ngx_http_linegate_json_write_str_or_null(ngx_http_linegate_json_write_t *jw,
    ngx_str_t *s)
{
    if (s->len == 0) {
        ngx_http_linegate_json_write_null(jw);
        return;
    }

    ngx_http_linegate_json_write_str(jw, s->data, s->len);
}


void
ngx_http_linegate_json_write_int(ngx_http_linegate_json_write_t *jw, int64_t n)
{
    if (ngx_http_linegate_json_write_room(jw, NGX_INT64_LEN + 1)) {
        ngx_http_linegate_json_write_sep(jw);
        jw->pos = ngx_sprintf(jw->pos, "%L", n);
        jw->comma = 1;
    }
}


void
ngx_http_linegate_json_write_bool(ngx_http_linegate_json_write_t *jw,
    ngx_uint_t b)
{
    if (b) {
        ngx_http_linegate_json_write_raw(jw, (u_char *) "true", 4);

    } else {
        ngx_http_linegate_json_write_raw(jw, (u_char *) "false", 5);
    }
}


void
ngx_http_linegate_json_write_null(ngx_http_linegate_json_write_t *jw)
{
    ngx_http_linegate_json_write_raw(jw, (u_char *) "null", 4);
}


void
ngx_http_linegate_json_write_raw(ngx_http_linegate_json_write_t *jw,
    u_char *data, size_t len)
{
    if (ngx_http_linegate_json_write_room(jw, len + 1)) {
        ngx_http_linegate_json_write_sep(jw);
        jw->pos = ngx_cpymem(jw->pos, data, len);
        jw->comma = 1;
    }
}
