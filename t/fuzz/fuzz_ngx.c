
/*
 * linegate fuzzing: the nginx core functions the fuzzed code calls, the
 * answer functions of src/ngx_http_linegate_reply.c as recorders, and the
 * fake request (see fuzz_ngx.h).
 *
 * Every pool allocation is its own malloc(), freed when the input is
 * done: AddressSanitizer then sees the bounds of each one, where nginx's
 * pool would hide an overflow inside a larger block.
 */


#include "fuzz_ngx.h"
#include "ngx_http_linegate_json_write.h"

#include <ngx_md5.h>

#include <openssl/evp.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>


typedef struct fuzz_block_s  fuzz_block_t;

struct fuzz_block_s {
    fuzz_block_t                *next;
};


static fuzz_block_t             *fuzz_blocks;

static ngx_time_t                fuzz_time = { 1700000000, 0, 0 };
static ngx_log_t                 fuzz_log;
static ngx_pool_t                fuzz_pool;
static ngx_connection_t          fuzz_connection;
static ngx_http_request_t        fuzz_r;
#define FUZZ_HEADERS                     16

static ngx_table_elt_t           fuzz_headers[FUZZ_HEADERS];
static ngx_list_part_t           fuzz_part;
static void                     *fuzz_main_conf[1];
static void                     *fuzz_ctxs[1];

/*
 * ngx_cycle, whose http configuration is the request's (auth.c reads the
 * key caches' epoch through it); weak: a target may have its own
 */
static ngx_cycle_t               fuzz_cycle;
static ngx_http_conf_ctx_t       fuzz_cycle_http;
static void                     *fuzz_cycle_conf_ctx[1];
volatile ngx_cycle_t            *ngx_cycle __attribute__((weak)) = &fuzz_cycle;

volatile ngx_time_t             *ngx_cached_time = &fuzz_time;
volatile ngx_msec_t              ngx_current_msec;
ngx_module_t                     ngx_http_linegate_module;

fuzz_answer_t                    fuzz_answer;
ngx_http_linegate_main_conf_t    fuzz_lmcf;
ngx_http_linegate_ctx_t          fuzz_ctx;


/* allocation */

static void *
fuzz_alloc(size_t size)
{
    fuzz_block_t  *b;

    /* a block of its own, the header before what is returned */
    b = malloc(sizeof(fuzz_block_t) + size);
    if (b == NULL) {
        abort();
    }

    b->next = fuzz_blocks;
    fuzz_blocks = b;

    return b + 1;
}


void *
ngx_palloc(ngx_pool_t *pool, size_t size)
{
    return fuzz_alloc(size);
}


void *
ngx_pnalloc(ngx_pool_t *pool, size_t size)
{
    return fuzz_alloc(size);
}


void *
ngx_pcalloc(ngx_pool_t *pool, size_t size)
{
    return memset(fuzz_alloc(size), 0, size);
}


/*
 * what a worker allocates once at start-up (caches): never freed, still
 * reachable from the module's statics, so no leak is reported
 */
void *
ngx_calloc(size_t size, ngx_log_t *log)
{
    void  *p;

    p = calloc(1, size);
    if (p == NULL) {
        abort();
    }

    return p;
}


u_char *
ngx_pstrdup(ngx_pool_t *pool, ngx_str_t *src)
{
    u_char  *dst;

    dst = fuzz_alloc(src->len);
    ngx_memcpy(dst, src->data, src->len);

    return dst;
}


ngx_pool_cleanup_t *
ngx_pool_cleanup_add(ngx_pool_t *p, size_t size)
{
    ngx_pool_cleanup_t  *c;

    /* cleanups are not run: the fuzzed code registers none it needs */
    c = ngx_pcalloc(p, sizeof(ngx_pool_cleanup_t));

    if (size) {
        c->data = ngx_pcalloc(p, size);
    }

    return c;
}


/*
 * time: src/core/ngx_parse_time.c's RFC 1123 form (the one a Retry-After
 * date takes), through the C library; anything else NGX_ERROR
 */

time_t
ngx_parse_http_time(u_char *value, size_t len)
{
    char       buf[64], *end;
    struct tm  tm;

    if (len == 0 || len >= sizeof(buf)) {
        return NGX_ERROR;
    }

    memcpy(buf, value, len);
    buf[len] = '\0';

    if (strlen(buf) != len) {
        return NGX_ERROR;
    }

    memset(&tm, 0, sizeof(tm));
    end = strptime(buf, "%a, %d %b %Y %H:%M:%S GMT", &tm);

    if (end == NULL || *end != '\0') {
        return NGX_ERROR;
    }

    return timegm(&tm);
}


/* strings: the semantics of src/core/ngx_string.c */

ngx_int_t
ngx_atoi(u_char *line, size_t n)
{
    ngx_int_t  value, cutoff, cutlim;

    if (n == 0) {
        return NGX_ERROR;
    }

    cutoff = NGX_MAX_INT_T_VALUE / 10;
    cutlim = NGX_MAX_INT_T_VALUE % 10;

    for (value = 0; n--; line++) {
        if (*line < '0' || *line > '9') {
            return NGX_ERROR;
        }

        if (value >= cutoff && (value > cutoff || *line - '0' > cutlim)) {
            return NGX_ERROR;
        }

        value = value * 10 + (*line - '0');
    }

    return value;
}


ngx_int_t
ngx_hextoi(u_char *line, size_t n)
{
    u_char     c, ch;
    ngx_int_t  value, cutoff;

    if (n == 0) {
        return NGX_ERROR;
    }

    cutoff = NGX_MAX_INT_T_VALUE / 16;

    for (value = 0; n--; line++) {
        if (value > cutoff) {
            return NGX_ERROR;
        }

        ch = *line;

        if (ch >= '0' && ch <= '9') {
            value = value * 16 + (ch - '0');
            continue;
        }

        c = (u_char) (ch | 0x20);

        if (c >= 'a' && c <= 'f') {
            value = value * 16 + (c - 'a' + 10);
            continue;
        }

        return NGX_ERROR;
    }

    return value;
}


u_char *
ngx_hex_dump(u_char *dst, u_char *src, size_t len)
{
    static const u_char  hex[] = "0123456789abcdef";

    while (len--) {
        *dst++ = hex[*src >> 4];
        *dst++ = hex[*src++ & 0xf];
    }

    return dst;
}


ngx_int_t
ngx_strncasecmp(u_char *s1, u_char *s2, size_t n)
{
    ngx_uint_t  c1, c2;

    while (n) {
        c1 = (ngx_uint_t) *s1++;
        c2 = (ngx_uint_t) *s2++;

        c1 = (c1 >= 'A' && c1 <= 'Z') ? (c1 | 0x20) : c1;
        c2 = (c2 >= 'A' && c2 <= 'Z') ? (c2 | 0x20) : c2;

        if (c1 == c2) {
            if (c1) {
                n--;
                continue;
            }

            return 0;
        }

        return c1 - c2;
    }

    return 0;
}


ngx_int_t
ngx_strcasecmp(u_char *s1, u_char *s2)
{
    return ngx_strncasecmp(s1, s2, (size_t) -1);
}


ngx_uint_t
ngx_hash_key(u_char *data, size_t len)
{
    ngx_uint_t  i, key;

    key = 0;

    for (i = 0; i < len; i++) {
        key = ngx_hash(key, data[i]);
    }

    return key;
}


ngx_uint_t
ngx_hash_key_lc(u_char *data, size_t len)
{
    ngx_uint_t  i, key;

    key = 0;

    for (i = 0; i < len; i++) {
        key = ngx_hash(key, ngx_tolower(data[i]));
    }

    return key;
}


void
ngx_strlow(u_char *dst, u_char *src, size_t n)
{
    while (n) {
        *dst = ngx_tolower(*src);
        dst++;
        src++;
        n--;
    }
}


u_char *
ngx_cpystrn(u_char *dst, u_char *src, size_t n)
{
    if (n == 0) {
        return dst;
    }

    while (--n) {
        *dst = *src;

        if (*dst == '\0') {
            return dst;
        }

        dst++;
        src++;
    }

    *dst = '\0';

    return dst;
}


/*
 * A lookup in a tree of ngx_str_node_t as src/core/ngx_string.c's: by
 * hash, then length, then bytes.  Only the lookup: no target inserts.
 */
ngx_str_node_t *
ngx_str_rbtree_lookup(ngx_rbtree_t *rbtree, ngx_str_t *name, uint32_t hash)
{
    ngx_int_t           rc;
    ngx_str_node_t     *n;
    ngx_rbtree_node_t  *node;

    for (node = rbtree->root; node != rbtree->sentinel; /* void */) {
        n = (ngx_str_node_t *) node;

        if (hash != node->key) {
            node = (hash < node->key) ? node->left : node->right;
            continue;
        }

        if (name->len != n->str.len) {
            node = (name->len < n->str.len) ? node->left : node->right;
            continue;
        }

        rc = ngx_memcmp(name->data, n->str.data, name->len);

        if (rc == 0) {
            return n;
        }

        node = (rc < 0) ? node->left : node->right;
    }

    return NULL;
}


/*
 * As src/core/ngx_murmurhash.c, the bytes above 0x7f shifted unsigned
 * (nginx shifts them as int; the result is the same)
 */
uint32_t
ngx_murmur_hash2(u_char *data, size_t len)
{
    uint32_t  h, k;

    h = 0 ^ len;

    while (len >= 4) {
        k = data[0];
        k |= (uint32_t) data[1] << 8;
        k |= (uint32_t) data[2] << 16;
        k |= (uint32_t) data[3] << 24;

        k *= 0x5bd1e995;
        k ^= k >> 24;
        k *= 0x5bd1e995;

        h *= 0x5bd1e995;
        h ^= k;

        data += 4;
        len -= 4;
    }

    switch (len) {
    case 3:
        h ^= (uint32_t) data[2] << 16;
        /* fall through */
    case 2:
        h ^= (uint32_t) data[1] << 8;
        /* fall through */
    case 1:
        h ^= data[0];
        h *= 0x5bd1e995;
    }

    h ^= h >> 13;
    h *= 0x5bd1e995;
    h ^= h >> 15;

    return h;
}


/*
 * MD5 (src/core/ngx_md5.c's digest) by OpenSSL: the context is an
 * EVP_MD_CTX whose address ngx_md5_t's first field holds, freed by
 * ngx_md5_final() (the module always finishes a digest it starts)
 */
void
ngx_md5_init(ngx_md5_t *ctx)
{
    EVP_MD_CTX  *md;

    md = EVP_MD_CTX_new();

    if (md == NULL || EVP_DigestInit_ex(md, EVP_md5(), NULL) != 1) {
        abort();
    }

    ctx->bytes = (uintptr_t) md;
}


void
ngx_md5_update(ngx_md5_t *ctx, const void *data, size_t size)
{
    if (EVP_DigestUpdate((EVP_MD_CTX *) (uintptr_t) ctx->bytes, data, size)
        != 1)
    {
        abort();
    }
}


void
ngx_md5_final(u_char result[16], ngx_md5_t *ctx)
{
    EVP_MD_CTX  *md;

    md = (EVP_MD_CTX *) (uintptr_t) ctx->bytes;

    if (EVP_DigestFinal_ex(md, result, NULL) != 1) {
        abort();
    }

    EVP_MD_CTX_free(md);
    ctx->bytes = 0;
}


/* as src/core/ngx_list.c: a new part of nalloc when the last is full */
void *
ngx_list_push(ngx_list_t *l)
{
    void             *elt;
    ngx_list_part_t  *last;

    last = l->last;

    if (last->nelts == l->nalloc) {
        last = ngx_palloc(l->pool, sizeof(ngx_list_part_t));
        last->elts = ngx_palloc(l->pool, l->nalloc * l->size);
        last->nelts = 0;
        last->next = NULL;

        l->last->next = last;
        l->last = last;
    }

    elt = (char *) last->elts + l->size * last->nelts;
    last->nelts++;

    return elt;
}


/*
 * As src/core/ngx_string.c for NGX_ESCAPE_ARGS (a form's names and
 * values, the one type the module uses): any other type aborts, naming
 * itself, so that a new one is noticed
 */
uintptr_t
ngx_escape_uri(u_char *dst, u_char *src, size_t size, ngx_uint_t type)
{
    uintptr_t      n;
    static u_char  hex[] = "0123456789ABCDEF";

                    /* " ", "#", "%", "&", "+", ";", "?", not allowed */
    static uint32_t  args[] = {
        0xffffffff, 0xd800086d, 0x50000000, 0xb8000001,
        0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff
    };

    if (type != NGX_ESCAPE_ARGS) {
        fprintf(stderr, "fuzz_ngx: ngx_escape_uri: unsupported type %u\n",
                (unsigned) type);
        abort();
    }

    if (dst == NULL) {
        for (n = 0; size; size--, src++) {
            n += (args[*src >> 5] & (1U << (*src & 0x1f))) != 0;
        }

        return n;
    }

    for ( /* void */ ; size; size--, src++) {
        if (args[*src >> 5] & (1U << (*src & 0x1f))) {
            *dst++ = '%';
            *dst++ = hex[*src >> 4];
            *dst++ = hex[*src & 0xf];

        } else {
            *dst++ = *src;
        }
    }

    return (uintptr_t) dst;
}


/* as src/core/ngx_array.c, a full array copied to one twice its size */
ngx_array_t *
ngx_array_create(ngx_pool_t *p, ngx_uint_t n, size_t size)
{
    ngx_array_t  *a;

    a = ngx_palloc(p, sizeof(ngx_array_t));
    a->elts = ngx_palloc(p, n * size);
    a->nelts = 0;
    a->size = size;
    a->nalloc = n;
    a->pool = p;

    return a;
}


void *
ngx_array_push(ngx_array_t *a)
{
    void  *elt, *new;

    if (a->nelts == a->nalloc) {
        new = ngx_palloc(a->pool, 2 * a->size * a->nalloc);
        ngx_memcpy(new, a->elts, a->size * a->nalloc);
        a->elts = new;
        a->nalloc *= 2;
    }

    elt = (u_char *) a->elts + a->size * a->nelts;
    a->nelts++;

    return elt;
}


/*
 * The conversions of ngx_vslprintf() the module uses; any other one
 * aborts, naming itself, so that a new format is noticed.
 */

static u_char *
fuzz_number(u_char *buf, u_char *last, uint64_t ui64, ngx_uint_t neg,
    u_char zero, ngx_uint_t hex, ngx_uint_t width)
{
    u_char       tmp[32], *p;
    size_t       len;
    const char  *digits;

    digits = hex == 2 ? "0123456789ABCDEF" : "0123456789abcdef";
    p = tmp + sizeof(tmp);

    do {
        *--p = digits[hex ? ui64 % 16 : ui64 % 10];
        ui64 = hex ? ui64 / 16 : ui64 / 10;
    } while (ui64);

    if (neg) {
        *--p = '-';
    }

    len = (tmp + sizeof(tmp)) - p;

    while (len < width && buf < last) {
        *buf++ = zero;
        len++;
    }

    while (p < tmp + sizeof(tmp) && buf < last) {
        *buf++ = *p++;
    }

    return buf;
}


u_char *
ngx_vslprintf(u_char *buf, u_char *last, const char *fmt, va_list args)
{
    u_char      *s, zero;
    size_t       slen;
    int64_t      i64;
    uint64_t     ui64;
    ngx_str_t   *v;
    ngx_uint_t   width, hex, sign, neg;

    while (*fmt && buf < last) {

        if (*fmt != '%') {
            *buf++ = *fmt++;
            continue;
        }

        fmt++;
        zero = (u_char) ((*fmt == '0') ? '0' : ' ');
        width = 0;
        hex = 0;
        sign = 1;
        slen = (size_t) -1;
        i64 = 0;
        ui64 = 0;

        while (*fmt >= '0' && *fmt <= '9') {
            width = width * 10 + (*fmt++ - '0');
        }

        for ( ;; ) {
            switch (*fmt) {
            case 'u':
                sign = 0;
                fmt++;
                continue;
            case 'x':
                hex = 1;
                sign = 0;
                fmt++;
                continue;
            case 'X':
                hex = 2;
                sign = 0;
                fmt++;
                continue;
            case '*':
                slen = va_arg(args, size_t);
                fmt++;
                continue;
            default:
                break;
            }

            break;
        }

        switch (*fmt) {

        case 'V':
            v = va_arg(args, ngx_str_t *);
            slen = ngx_min((size_t) (last - buf), v->len);

            /* nginx logs empty strings (data NULL) with %V all the time */
            if (slen) {
                buf = ngx_cpymem(buf, v->data, slen);
            }

            fmt++;
            continue;

        case 's':
            s = va_arg(args, u_char *);

            if (slen == (size_t) -1) {
                while (*s && buf < last) {
                    *buf++ = *s++;
                }

            } else if (slen) {
                slen = ngx_min((size_t) (last - buf), slen);
                buf = ngx_cpymem(buf, s, slen);
            }

            fmt++;
            continue;

        case 'c':
            *buf++ = (u_char) va_arg(args, int);
            fmt++;
            continue;

        case '%':
            *buf++ = '%';
            fmt++;
            continue;

        case 'Z':
            *buf++ = '\0';
            fmt++;
            continue;

        case 'd':
            if (sign) {
                i64 = (int64_t) va_arg(args, int);
            } else {
                ui64 = (uint64_t) va_arg(args, u_int);
            }
            break;

        case 'i':
            if (sign) {
                i64 = (int64_t) va_arg(args, ngx_int_t);
            } else {
                ui64 = (uint64_t) va_arg(args, ngx_uint_t);
            }
            break;

        case 'z':
            if (sign) {
                i64 = (int64_t) va_arg(args, ssize_t);
            } else {
                ui64 = (uint64_t) va_arg(args, size_t);
            }
            break;

        case 'l':
            if (sign) {
                i64 = (int64_t) va_arg(args, long);
            } else {
                ui64 = (uint64_t) va_arg(args, u_long);
            }
            break;

        case 'L':
            if (sign) {
                i64 = va_arg(args, int64_t);
            } else {
                ui64 = va_arg(args, uint64_t);
            }
            break;

        case 'O':
            i64 = (int64_t) va_arg(args, off_t);
            sign = 1;
            break;

        case 'T':
            i64 = (int64_t) va_arg(args, time_t);
            sign = 1;
            break;

        case 'M':
            if (sign) {
                i64 = (int64_t) va_arg(args, ngx_msec_int_t);
            } else {
                ui64 = (uint64_t) va_arg(args, ngx_msec_t);
            }
            break;

        default:
            fprintf(stderr, "fuzz_ngx: ngx_vslprintf: unsupported %%%c\n",
                    *fmt);
            abort();
        }

        neg = 0;

        if (sign) {
            if (i64 < 0) {
                neg = 1;
                ui64 = (uint64_t) 0 - (uint64_t) i64;

            } else {
                ui64 = (uint64_t) i64;
            }
        }

        buf = fuzz_number(buf, last, ui64, neg, zero, hex, width);
        fmt++;
    }

    return buf;
}


u_char * ngx_cdecl
ngx_sprintf(u_char *buf, const char *fmt, ...)
{
    u_char   *p;
    va_list   args;

    va_start(args, fmt);
    p = ngx_vslprintf(buf, (void *) -1, fmt, args);
    va_end(args);

    return p;
}


u_char * ngx_cdecl
ngx_snprintf(u_char *buf, size_t max, const char *fmt, ...)
{
    u_char   *p;
    va_list   args;

    va_start(args, fmt);
    p = ngx_vslprintf(buf, buf + max, fmt, args);
    va_end(args);

    return p;
}


u_char * ngx_cdecl
ngx_slprintf(u_char *buf, u_char *last, const char *fmt, ...)
{
    u_char   *p;
    va_list   args;

    va_start(args, fmt);
    p = ngx_vslprintf(buf, last, fmt, args);
    va_end(args);

    return p;
}


/* logging: formatted (bad arguments are found), then dropped */

void ngx_cdecl
ngx_log_error_core(ngx_uint_t level, ngx_log_t *log, ngx_err_t err,
    const char *fmt, ...)
{
    u_char   buf[NGX_MAX_ERROR_STR];
    va_list  args;

    va_start(args, fmt);
    (void) ngx_vslprintf(buf, buf + sizeof(buf), fmt, args);
    va_end(args);
}


void ngx_cdecl
ngx_log_debug_core(ngx_log_t *log, ngx_err_t err, const char *fmt, ...)
{
    u_char   buf[NGX_MAX_ERROR_STR];
    va_list  args;

    va_start(args, fmt);
    (void) ngx_vslprintf(buf, buf + sizeof(buf), fmt, args);
    va_end(args);
}


/*
 * nginx 1.22's query argument (src/http/ngx_http_parse.c): the first
 * "name=" (any case) at the start of r->args or after a '&'; its value
 * runs to the next '&'
 */
ngx_int_t
ngx_http_arg(ngx_http_request_t *r, u_char *name, size_t len,
    ngx_str_t *value)
{
    u_char  *p, *last, *end;

    if (r->args.len == 0) {
        return NGX_DECLINED;
    }

    p = r->args.data;
    last = p + r->args.len;

    for ( /* void */ ; p + len < last; p++) {

        if ((p != r->args.data && p[-1] != '&')
            || p[len] != '='
            || ngx_strncasecmp(p, name, len) != 0)
        {
            continue;
        }

        value->data = p + len + 1;

        end = ngx_strlchr(p, last, '&');
        value->len = (end ? end : last) - value->data;

        return NGX_OK;
    }

    return NGX_DECLINED;
}


/* the answers (src/ngx_http_linegate_reply.c): recorded */

static void
fuzz_answered(ngx_uint_t status, const char *field, const char *message,
    json_t *json)
{
    /* what an answer says must be readable when it is answered */
    if (message != NULL) {
        (void) ngx_hash_key((u_char *) message, ngx_strlen(message));
    }

    if (field != NULL) {
        (void) ngx_hash_key((u_char *) field, ngx_strlen(field));
    }

    fuzz_answer.calls++;
    fuzz_answer.status = status;
    fuzz_answer.field = field;
    fuzz_answer.message = message;

    if (fuzz_answer.json) {
        json_decref(fuzz_answer.json);
    }

    fuzz_answer.json = json;
}


void
ngx_http_linegate_send_jw(ngx_http_request_t *r, ngx_uint_t status,
    ngx_http_linegate_json_write_t *jw)
{
    ngx_str_t  out;

    /* what would be sent must be complete and readable */
    if (ngx_http_linegate_json_write_finish(jw, &out) == NGX_OK) {
        (void) ngx_hash_key(out.data, out.len);
    }

    fuzz_answered(status, NULL, NULL, NULL);
}


void
ngx_http_linegate_send_body(ngx_http_request_t *r, ngx_uint_t status,
    u_char *body, size_t len)
{
    fuzz_answered(status, NULL, NULL, NULL);
}


void
ngx_http_linegate_error(ngx_http_request_t *r, ngx_uint_t status,
    const char *code, const char *message)
{
    fuzz_answered(status, code, message, NULL);
}


/* a 405 names at least the method of the route that matched */
void
ngx_http_linegate_not_allowed(ngx_http_request_t *r, ngx_uint_t methods)
{
    if (methods == 0 || (r->method & methods)) {
        __builtin_trap();
    }

    fuzz_answered(NGX_HTTP_NOT_ALLOWED, NULL, "Method not allowed", NULL);
}


void
ngx_http_linegate_field_error(ngx_http_request_t *r, const char *field,
    const char *message)
{
    fuzz_answered(NGX_HTTP_BAD_REQUEST, field, message, NULL);
}


void
ngx_http_linegate_store_unavailable(ngx_http_request_t *r)
{
    fuzz_answered(NGX_HTTP_SERVICE_UNAVAILABLE, NULL, NULL, NULL);
}


void
ngx_http_linegate_internal_error(ngx_http_request_t *r)
{
    fuzz_answered(NGX_HTTP_INTERNAL_SERVER_ERROR, NULL, NULL, NULL);
}


/* what an endpoint answers a refusal its checks left in ctx->refusal */
void
ngx_http_linegate_refuse(ngx_http_request_t *r)
{
    ngx_http_linegate_ctx_t  *ctx;

    ctx = ngx_http_linegate_get_ctx(r);

    if (ctx->refusal.status == 0
        || ctx->refusal.status == NGX_HTTP_INTERNAL_SERVER_ERROR)
    {
        ngx_http_linegate_internal_error(r);
        return;
    }

    fuzz_answered(ctx->refusal.status, ctx->refusal.code,
                  ctx->refusal.message, NULL);
}


/* the request */

ngx_http_request_t *
fuzz_request(void)
{
    ngx_http_request_t  *r;

    r = &fuzz_r;

    ngx_memzero(r, sizeof(ngx_http_request_t));
    ngx_memzero(&fuzz_connection, sizeof(ngx_connection_t));
    ngx_memzero(&fuzz_log, sizeof(ngx_log_t));
    ngx_memzero(&fuzz_ctx, sizeof(ngx_http_linegate_ctx_t));
    ngx_memzero(&fuzz_answer, sizeof(fuzz_answer_t));
    ngx_memzero(fuzz_headers, sizeof(fuzz_headers));

    fuzz_log.log_level = NGX_LOG_DEBUG;
    fuzz_connection.log = &fuzz_log;

    r->connection = &fuzz_connection;
    r->pool = &fuzz_pool;
    r->main = r;

    fuzz_main_conf[0] = &fuzz_lmcf;
    fuzz_ctxs[0] = &fuzz_ctx;
    r->main_conf = fuzz_main_conf;

    /* ngx_http_module's index: 0, as its stub */
    fuzz_cycle_http.main_conf = fuzz_main_conf;
    fuzz_cycle_conf_ctx[0] = &fuzz_cycle_http;
    fuzz_cycle.conf_ctx = (void ****) fuzz_cycle_conf_ctx;
    r->ctx = fuzz_ctxs;

    fuzz_part.elts = fuzz_headers;
    fuzz_part.nelts = 0;
    fuzz_part.next = NULL;

    r->headers_in.headers.part = fuzz_part;
    r->headers_in.headers.last = &r->headers_in.headers.part;
    r->headers_in.headers.size = sizeof(ngx_table_elt_t);
    r->headers_in.headers.nalloc = FUZZ_HEADERS;
    r->headers_in.headers.pool = r->pool;

    fuzz_ctx.retry_after = -1;

    return r;
}


ngx_table_elt_t *
fuzz_header(ngx_http_request_t *r, const char *name, u_char *value,
    size_t len)
{
    ngx_table_elt_t  *h;
    ngx_list_part_t  *part;

    part = &r->headers_in.headers.part;

    if (part->nelts == FUZZ_HEADERS) {
        abort();
    }

    h = (ngx_table_elt_t *) part->elts + part->nelts++;

    h->hash = 1;
    h->key.data = (u_char *) name;
    h->key.len = ngx_strlen(name);
    h->value.data = value;
    h->value.len = len;
    h->lowcase_key = (u_char *) name;

    return h;
}


void
fuzz_request_done(ngx_http_request_t *r)
{
    fuzz_block_t  *b;

    if (fuzz_ctx.body) {
        json_decref(fuzz_ctx.body);
        fuzz_ctx.body = NULL;
    }

    if (fuzz_ctx.stripe_json) {
        json_decref(fuzz_ctx.stripe_json);
        fuzz_ctx.stripe_json = NULL;
    }

    if (fuzz_answer.json) {
        json_decref(fuzz_answer.json);
        fuzz_answer.json = NULL;
    }

    while (fuzz_blocks) {
        b = fuzz_blocks;
        fuzz_blocks = b->next;
        free(b);
    }
}


int
fuzz_split(const uint8_t *data, size_t size, uint8_t sep, ngx_str_t *head,
    ngx_str_t *tail)
{
    const uint8_t  *p;

    p = memchr(data, sep, size);

    if (p == NULL) {
        head->data = (u_char *) data;
        head->len = size;
        tail->data = (u_char *) data + size;
        tail->len = 0;
        return -1;
    }

    head->data = (u_char *) data;
    head->len = p - data;
    tail->data = (u_char *) p + 1;
    tail->len = size - (p + 1 - data);

    return 0;
}


u_char *
fuzz_strdup(ngx_http_request_t *r, const uint8_t *data, size_t n)
{
    u_char  *p;

    p = fuzz_alloc(n + 1);
    ngx_memcpy(p, data, n);
    p[n] = '\0';

    return p;
}


/* up to 20 bytes at p, NUL-terminated, for strtoll() */
static const u_char *
fuzz_line(const u_char *p, const u_char *last)
{
    size_t         n;
    static u_char  buf[21];

    n = ngx_min((size_t) (last - p), 20);
    ngx_memcpy(buf, p, n);
    buf[n] = '\0';

    return buf;
}


void *
fuzz_redis_open(const u_char *data, size_t len)
{
    redisReader  *reader;

    /*
     * This hiredis has no maxelements: it callocs an array's element
     * pointers as soon as it reads "*N", a memory bound nobody but a
     * hostile Redis server could reach.  Inputs where a type byte of an
     * aggregate is followed by a count over 4096 are skipped.
     */
    const u_char  *p, *last;

    last = data + len;

    for (p = data; p < last; p++) {
        /* anywhere: hiredis skips a bulk string's CRLF unread */
        if ((*p == '*' || *p == '%' || *p == '~' || *p == '>' || *p == '|')
            && strtoll((const char *) fuzz_line(p + 1, last), NULL, 10)
               > 4096)
        {
            return NULL;
        }
    }

    reader = redisReaderCreate();
    if (reader == NULL) {
        abort();
    }

    if (redisReaderFeed(reader, (const char *) data, len) != REDIS_OK) {
        redisReaderFree(reader);
        return NULL;
    }

    return reader;
}


redisReply *
fuzz_redis_take(void *stream)
{
    void  *reply;

    reply = NULL;

    if (stream == NULL
        || redisReaderGetReply(stream, &reply) != REDIS_OK)
    {
        return NULL;
    }

    return reply;
}


void
fuzz_redis_close(void *stream)
{
    if (stream != NULL) {
        redisReaderFree(stream);
    }
}


redisReply *
fuzz_redis_reply(const u_char *data, size_t len)
{
    void        *stream;
    redisReply  *reply;

    stream = fuzz_redis_open(data, len);
    reply = fuzz_redis_take(stream);
    fuzz_redis_close(stream);

    return reply;
}


/* as src/core/ngx_times.c: month 1-12, full year */
void
ngx_gmtime(time_t t, ngx_tm_t *tp)
{
    struct tm  tm;

    if (gmtime_r(&t, &tm) == NULL) {
        abort();
    }

    *tp = tm;
    tp->ngx_tm_mon = tm.tm_mon + 1;
    tp->ngx_tm_year = tm.tm_year + 1900;
}
