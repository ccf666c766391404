
/*
 * linegate: reading JSON with jansson (request bodies, their fields);
 * answers nothing. Answers are written by json_write.c.
 */


#include "ngx_http_linegate_module.h"
#include "ngx_http_linegate_json.h"


/*
 * jansson's reason without its "near '<text>'": the text is the body's
 * own (up to 20 bytes: a token or a secret cut short), which the log
 * must not show.
 */
static const char *
ngx_http_linegate_json_reason(json_error_t *err)
{
    char  *near;

    near = ngx_strstr(err->text, " near ");
    if (near != NULL) {
        *near = '\0';
    }

    return err->text;
}


/*
 * A parse that failed for want of memory, not for the body: jansson
 * names every syntax error, and leaves the error empty when building an
 * object or array fails (2.14), or codes it out_of_memory (2.11 and
 * later, elsewhere). A string's copy failing reads as an invalid token:
 * a 400, which jansson does not let us tell apart.
 */
static ngx_uint_t
ngx_http_linegate_json_out_of_memory(json_error_t *err)
{
#if (JANSSON_VERSION_HEX >= 0x020b00)
    if (json_error_code(err) == json_error_out_of_memory) {
        return 1;
    }
#endif

    return err->text[0] == '\0';
}


ngx_int_t
ngx_http_linegate_json_parse(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, ngx_uint_t empty_ok, const char **why)
{
    json_t        *body;
    json_error_t   err;

    *why = NULL;

    /*
     * Parsed once per request: ctx->body is freed only by the request's
     * cleanup (reply.c), so a second parse would leak the first body, and
     * freeing it here would pull it from under a caller still holding its
     * fields. The raw body does not change: the first parse stands.
     */
    if (ctx->body != NULL) {
        return NGX_OK;
    }

    if (ctx->raw.len == 0) {
        if (!empty_ok) {
            *why = "Request body is empty";
            return NGX_ERROR;
        }

        ctx->body = json_object();

        return ctx->body ? NGX_OK : NGX_ERROR;
    }

    /*
     * jansson refuses invalid UTF-8; duplicate keys are ambiguous. A
     * "\u0000" is valid JSON: allowed, so that a field the module does
     * not read may carry one (SPEC: unknown fields are ignored); the
     * fields it reads refuse it (ngx_http_linegate_json_str()).
     */
    body = json_loadb((const char *) ctx->raw.data, ctx->raw.len,
                      JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &err);

    if (body == NULL) {
        if (ngx_http_linegate_json_out_of_memory(&err)) {
            /* no reason: the body is not at fault, the caller answers 500 */
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          NGX_HTTP_LINEGATE_LOG "out of memory parsing the "
                          "JSON body (%uz bytes)", ctx->raw.len);
            return NGX_ERROR;
        }

        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      NGX_HTTP_LINEGATE_LOG "malformed JSON body: %s "
                      "at offset %d", ngx_http_linegate_json_reason(&err),
                      err.position);
        *why = "Malformed JSON body";
        return NGX_ERROR;
    }

    if (!json_is_object(body)) {
        json_decref(body);
        *why = "Request body must be a JSON object";
        return NGX_ERROR;
    }

    /* freed with the request (reply.c's cleanup) */
    ctx->body = body;

    return NGX_OK;
}


ngx_int_t
ngx_http_linegate_json_str(json_t *obj, const char *field, ngx_str_t *value)
{
    json_t  *v;

    v = obj ? json_object_get(obj, field) : NULL;

    if (v == NULL || json_is_null(v)) {
        return NGX_DECLINED;
    }

    if (!json_is_string(v)) {
        return NGX_ERROR;
    }

    value->data = (u_char *) json_string_value(v);
    value->len = json_string_length(v);

    /*
     * a NUL would end the value early for a C string function (or a log
     * line), making two different values look equal: refused as a value
     * of the wrong type is
     */
    if (ngx_strlchr(value->data, value->data + value->len, '\0') != NULL) {
        return NGX_ERROR;
    }

    return NGX_OK;
}


ngx_int_t
ngx_http_linegate_json_int(json_t *obj, const char *field,
    json_int_t *value)
{
    json_t  *v;

    v = obj ? json_object_get(obj, field) : NULL;

    if (v == NULL || json_is_null(v)) {
        return NGX_DECLINED;
    }

    if (!json_is_integer(v)) {
        return NGX_ERROR;
    }

    *value = json_integer_value(v);

    return NGX_OK;
}


void
ngx_http_linegate_trim(ngx_str_t *s)
{
    while (s->len && (s->data[0] == ' ' || s->data[0] == '\t')) {
        s->data++;
        s->len--;
    }

    while (s->len
           && (s->data[s->len - 1] == ' ' || s->data[s->len - 1] == '\t'))
    {
        s->len--;
    }
}
