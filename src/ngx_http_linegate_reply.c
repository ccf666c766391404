
/*
 * linegate: JSON answers and the headers every answer carries.
 */


#include "ngx_http_linegate_module.h"
#include "ngx_http_linegate_reply.h"
#include "ngx_http_linegate_metrics.h"
#include "ngx_http_linegate_json_write.h"
#include "ngx_http_linegate_request_id.h"


static ngx_int_t ngx_http_linegate_output(ngx_http_request_t *r,
    ngx_uint_t status, u_char *body, size_t len);
static ngx_int_t ngx_http_linegate_add_header(ngx_http_request_t *r,
    const char *name, size_t nlen, ngx_str_t *value);


#define ngx_http_linegate_header(r, name, value)                            \
    ngx_http_linegate_add_header(r, name, sizeof(name) - 1, value)


void
ngx_http_linegate_send_jw(ngx_http_request_t *r, ngx_uint_t status,
    ngx_http_linegate_json_write_t *jw)
{
    ngx_str_t  body;

    if (ngx_http_linegate_json_write_finish(jw, &body) != NGX_OK) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      NGX_HTTP_LINEGATE_LOG "could not build the answer");
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    ngx_http_linegate_send_body(r, status, body.data, body.len);
}


void
ngx_http_linegate_send_body(ngx_http_request_t *r, ngx_uint_t status,
    u_char *body, size_t len)
{
    ngx_http_finalize_request(r,
                              ngx_http_linegate_output(r, status, body, len));
}


static ngx_int_t
ngx_http_linegate_output(ngx_http_request_t *r, ngx_uint_t status,
    u_char *body, size_t len)
{
    u_char                   *p;
    ngx_buf_t                *b;
    ngx_str_t                 value;
    ngx_int_t                 rc;
    ngx_chain_t               out;
    ngx_http_linegate_ctx_t  *ctx;

    static ngx_str_t  content_type =
        ngx_string("application/json; charset=utf-8");
    static ngx_str_t  no_store = ngx_string("no-store");
    static ngx_str_t  yes = ngx_string("true");
    static ngx_str_t  empty = ngx_null_string;

    ctx = ngx_http_linegate_get_ctx(r);

    if (ctx != NULL) {
        if (ctx->outcome.len == 0) {
            ngx_str_set(&ctx->outcome, "ok");
        }

        ngx_http_linegate_metrics_answer(ctx->api,
                                         ctx->api_name ? ctx->api_name
                                                       : &empty,
                                         status, &ctx->outcome);
    }

    r->headers_out.status = status;
    r->headers_out.content_length_n = len;
    r->headers_out.content_type = content_type;
    r->headers_out.content_type_len = content_type.len;
    r->headers_out.content_type_lowcase = NULL;

    if (ngx_http_linegate_request_id(r, &value) == NGX_OK
        && ngx_http_linegate_header(r, "X-Request-Id", &value) != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (ngx_http_linegate_header(r, "Cache-Control", &no_store) != NGX_OK) {
        return NGX_ERROR;
    }

    if (ctx != NULL) {
        if (ctx->rl_policy.len
            && (ngx_http_linegate_header(r, "RateLimit-Policy",
                                         &ctx->rl_policy) != NGX_OK
                || ngx_http_linegate_header(r, "RateLimit", &ctx->rl_state)
                   != NGX_OK))
        {
            return NGX_ERROR;
        }

        if (ctx->retry_after >= 0) {
            p = ngx_pnalloc(r->pool, NGX_INT_T_LEN);
            if (p == NULL) {
                return NGX_ERROR;
            }

            value.data = p;
            value.len = ngx_sprintf(p, "%i", ctx->retry_after) - p;

            if (ngx_http_linegate_header(r, "Retry-After", &value) != NGX_OK)
            {
                return NGX_ERROR;
            }
        }

        if (ctx->replayed
            && ngx_http_linegate_header(r, "Idempotent-Replayed", &yes)
               != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    b = ngx_calloc_buf(r->pool);
    if (b == NULL) {
        return NGX_ERROR;
    }

    b->pos = body;
    b->last = body + len;
    b->memory = len ? 1 : 0;
    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}


static ngx_int_t
ngx_http_linegate_add_header(ngx_http_request_t *r, const char *name,
    size_t nlen, ngx_str_t *value)
{
    ngx_table_elt_t  *h;

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    h->hash = 1;
    h->key.data = (u_char *) name;
    h->key.len = nlen;
    h->value = *value;
    h->lowcase_key = NULL;

    return NGX_OK;
}


void
ngx_http_linegate_error(ngx_http_request_t *r, ngx_uint_t status,
    const char *code, const char *message)
{
    const char                     *key;
    ngx_http_linegate_json_write_t  jw;
    ngx_http_linegate_ctx_t        *ctx;

    ctx = ngx_http_linegate_get_ctx(r);

    if (ctx != NULL && ctx->outcome.len == 0) {
        if (code != NULL) {
            ctx->outcome.data = (u_char *) code;
            ctx->outcome.len = ngx_strlen(code);

        } else {
            ngx_str_set(&ctx->outcome, "error");
        }
    }

    (void) ngx_http_linegate_json_write_init(&jw, r->pool, 128);
    ngx_http_linegate_json_write_object(&jw);

    if (ctx != NULL
        && (ctx->api == NGX_HTTP_LINEGATE_API_PROVISION_PREVIEW
            || ctx->api == NGX_HTTP_LINEGATE_API_PROVISION_CONFIRM
            || ctx->api == NGX_HTTP_LINEGATE_API_ACCOUNT_LIMITS))
    {
        ngx_http_linegate_json_write_key(&jw, "status");
        ngx_http_linegate_json_write_raw(&jw, (u_char *) "\"ERROR\"", 7);

        if (code) {
            ngx_http_linegate_json_write_key(&jw, "error");
            ngx_http_linegate_json_write_cstr(&jw, code);
        }

        key = "message";

    } else {
        if (code) {
            ngx_http_linegate_json_write_key(&jw, "code");
            ngx_http_linegate_json_write_cstr(&jw, code);
        }

        key = "error";
    }

    /* as jansson did: no member for a NULL message */
    if (message != NULL) {
        ngx_http_linegate_json_write_keyn(&jw, key, ngx_strlen(key));
        ngx_http_linegate_json_write_cstr(&jw, message);
    }

    ngx_http_linegate_json_write_end(&jw, '}');

    ngx_http_linegate_send_jw(r, status, &jw);
}


void
ngx_http_linegate_field_error(ngx_http_request_t *r, const char *field,
    const char *message)
{
    ngx_http_linegate_json_write_t  jw;
    ngx_http_linegate_ctx_t        *ctx;

    ctx = ngx_http_linegate_get_ctx(r);

    if (ctx != NULL
        && ctx->api != NGX_HTTP_LINEGATE_API_LINE_REQUEST_CREATE
        && ctx->api != NGX_HTTP_LINEGATE_API_LINE_REQUEST
        && ctx->api != NGX_HTTP_LINEGATE_API_OPERATOR)
    {
        ngx_http_linegate_error(r, NGX_HTTP_BAD_REQUEST, NULL, message);
        return;
    }

    if (ctx != NULL) {
        ngx_str_set(&ctx->outcome, "VALIDATION_ERROR");
    }

    (void) ngx_http_linegate_json_write_init(&jw, r->pool, 128);
    ngx_http_linegate_json_write_object(&jw);
    ngx_http_linegate_json_write_key(&jw, "error");
    ngx_http_linegate_json_write_cstr(&jw, message);
    ngx_http_linegate_json_write_key(&jw, "code");
    ngx_http_linegate_json_write_raw(&jw,
                                     (u_char *) "\"VALIDATION_ERROR\"", 18);

    if (field != NULL) {
        ngx_http_linegate_json_write_key(&jw, "field");
        ngx_http_linegate_json_write_cstr(&jw, field);
    }

    ngx_http_linegate_json_write_end(&jw, '}');

    ngx_http_linegate_send_jw(r, NGX_HTTP_BAD_REQUEST, &jw);
}


ngx_int_t
ngx_http_linegate_send_text(ngx_http_request_t *r, ngx_uint_t status,
    ngx_str_t *type, ngx_buf_t *b)
{
    ngx_int_t    rc;
    ngx_chain_t  out;

    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    r->headers_out.status = status;
    r->headers_out.content_length_n = b->last - b->pos;
    r->headers_out.content_type = *type;
    r->headers_out.content_type_len = type->len;

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}


void
ngx_http_linegate_refuse(ngx_http_request_t *r)
{
    ngx_http_linegate_ctx_t  *ctx;

    ctx = ngx_http_linegate_get_ctx(r);

    if (ctx == NULL
        || ctx->refusal.status == 0
        || ctx->refusal.status == NGX_HTTP_INTERNAL_SERVER_ERROR)
    {
        ngx_http_linegate_internal_error(r);
        return;
    }

    ngx_http_linegate_error(r, ctx->refusal.status, ctx->refusal.code,
                            ctx->refusal.message);
}


void
ngx_http_linegate_store_unavailable(ngx_http_request_t *r)
{
    ngx_http_linegate_ctx_t  *ctx;

    ctx = ngx_http_linegate_get_ctx(r);
    if (ctx != NULL) {
        ctx->retry_after = 1;
    }

    /* Sendblue's codes are lowercase, the Lines API's uppercase */
    if (ctx != NULL
        && (ctx->api == NGX_HTTP_LINEGATE_API_PROVISION_PREVIEW
            || ctx->api == NGX_HTTP_LINEGATE_API_PROVISION_CONFIRM
            || ctx->api == NGX_HTTP_LINEGATE_API_ACCOUNT_LIMITS))
    {
        ngx_http_linegate_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                "store_unavailable",
                                "Service temporarily unavailable");
        return;
    }

    ngx_http_linegate_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                            "STORE_UNAVAILABLE",
                            "The store is unavailable, retry shortly");
}


void
ngx_http_linegate_internal_error(ngx_http_request_t *r)
{
    ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                  NGX_HTTP_LINEGATE_LOG "internal error");

    ngx_http_linegate_error(r, NGX_HTTP_INTERNAL_SERVER_ERROR,
                            "INTERNAL_ERROR", "Internal error");
}
