
/*
 * linegate: reading JSON (request bodies, fields) with jansson.
 */


#ifndef _NGX_HTTP_LINEGATE_JSON_H_INCLUDED_
#define _NGX_HTTP_LINEGATE_JSON_H_INCLUDED_


#include "ngx_http_linegate_module.h"


/*
 * Parse ctx->raw into ctx->body. The body must be valid UTF-8 JSON and an
 * object ("\u0000" allowed: see ngx_http_linegate_json_str()); an empty
 * body is accepted as {} when empty_ok is set. NGX_OK and ctx->body set,
 * or NGX_ERROR with *why set to the text of the 400
 * the caller will send (NULL: memory ran out, a 500). Answers nothing:
 * ngx_http_linegate_json_body() (reply.h) parses and answers.
 */
ngx_int_t ngx_http_linegate_json_parse(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, ngx_uint_t empty_ok, const char **why);

/*
 * A string field: NGX_OK (value set, not copied), NGX_DECLINED (absent or
 * null), NGX_ERROR (present with another type, or a string holding a NUL:
 * bodies are parsed with JSON_ALLOW_NUL, so every string read must come
 * through here or check for one itself).
 */
ngx_int_t ngx_http_linegate_json_str(json_t *obj, const char *field,
    ngx_str_t *value);

/* an integer field, same results; strings are not converted */
ngx_int_t ngx_http_linegate_json_int(json_t *obj, const char *field,
    json_int_t *value);

/* trim ASCII spaces at both ends */
void ngx_http_linegate_trim(ngx_str_t *s);


#endif /* _NGX_HTTP_LINEGATE_JSON_H_INCLUDED_ */
