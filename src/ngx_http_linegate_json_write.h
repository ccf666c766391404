
/*
 * linegate: the JSON writer, the one way an answer's body is written.
 * jansson only reads (request bodies, Stripe's answers, JWKS); the one
 * thing it writes is idempotency.c's canonical dump of a request body,
 * hashed into a fingerprint and never sent.
 *
 * It appends to a growing buffer in a pool and writes exactly what
 * jansson's compact dump writes for the same values (keys in the order
 * given; strings escaped as jansson escapes them: '"', '\\', \b \f \n
 * \r \t, other control characters as \u00XX, '/' unescaped, UTF-8 as
 * is; a byte that is not UTF-8, which jansson would refuse to hold, as
 * U+FFFD), without building a tree. Errors are sticky: the first
 * allocation failure makes ngx_http_linegate_json_write_finish() fail.
 */


#ifndef _NGX_HTTP_LINEGATE_JSON_WRITE_H_INCLUDED_
#define _NGX_HTTP_LINEGATE_JSON_WRITE_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>


typedef struct {
    ngx_pool_t                     *pool;
    u_char                         *start;
    u_char                         *pos;
    u_char                         *end;
    unsigned                        comma:1;
    unsigned                        error:1;
} ngx_http_linegate_json_write_t;


ngx_int_t ngx_http_linegate_json_write_init(ngx_http_linegate_json_write_t *jw,
    ngx_pool_t *pool, size_t size);
/* the bytes written: NGX_ERROR when an allocation failed on the way */
ngx_int_t ngx_http_linegate_json_write_finish(
    ngx_http_linegate_json_write_t *jw, ngx_str_t *out);

void ngx_http_linegate_json_write_object(ngx_http_linegate_json_write_t *jw);
void ngx_http_linegate_json_write_array(ngx_http_linegate_json_write_t *jw);
/* '}' or ']' */
void ngx_http_linegate_json_write_end(ngx_http_linegate_json_write_t *jw,
    u_char c);

/* a member's name: written as given (a literal, no escaping needed) */
void ngx_http_linegate_json_write_keyn(ngx_http_linegate_json_write_t *jw,
    const char *key, size_t len);
/* a member's name that may need escaping (read from the store) */
void ngx_http_linegate_json_write_key_str(ngx_http_linegate_json_write_t *jw,
    u_char *data, size_t len);
void ngx_http_linegate_json_write_str(ngx_http_linegate_json_write_t *jw,
    u_char *data, size_t len);
/* a string, or null when it is empty */
void ngx_http_linegate_json_write_str_or_null(
    ngx_http_linegate_json_write_t *jw, ngx_str_t *s);
void ngx_http_linegate_json_write_int(ngx_http_linegate_json_write_t *jw,
    int64_t n);
void ngx_http_linegate_json_write_bool(ngx_http_linegate_json_write_t *jw,
    ngx_uint_t b);
void ngx_http_linegate_json_write_null(ngx_http_linegate_json_write_t *jw);
/* an already serialized value */
void ngx_http_linegate_json_write_raw(ngx_http_linegate_json_write_t *jw,
    u_char *data, size_t len);


#define ngx_http_linegate_json_write_key(jw, key)                           \
    ngx_http_linegate_json_write_keyn(jw, key, sizeof(key) - 1)

#define ngx_http_linegate_json_write_cstr(jw, s)                            \
    ngx_http_linegate_json_write_str(jw, (u_char *) (s), ngx_strlen(s))


#endif /* _NGX_HTTP_LINEGATE_JSON_WRITE_H_INCLUDED_ */
