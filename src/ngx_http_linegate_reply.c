
/*
 * linegate: JSON answers and the headers every answer carries; the
 * request's ctx, whose error log hook puts the request id on every line
 * about the request.
 */


#include "ngx_http_linegate_module.h"
#include "ngx_http_linegate_reply.h"
#include "ngx_http_linegate_metrics.h"
#include "ngx_http_linegate_auth.h"
#include "ngx_http_linegate_json_write.h"
#include "ngx_http_linegate_request_id.h"


static ngx_int_t ngx_http_linegate_output(ngx_http_request_t *r,
    ngx_uint_t status, u_char *body, size_t len);
static void ngx_http_linegate_no_conditions(ngx_http_request_t *r);
static ngx_int_t ngx_http_linegate_challenge(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, ngx_uint_t status);
static ngx_int_t ngx_http_linegate_set_headers(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, ngx_uint_t status, size_t len);
static ngx_uint_t ngx_http_linegate_provision_format(ngx_uint_t api);
static ngx_uint_t ngx_http_linegate_validation_format(ngx_uint_t api);
static void ngx_http_linegate_error_write(ngx_http_linegate_json_write_t *jw,
    ngx_uint_t api, const char *code, const char *message);
static void ngx_http_linegate_field_error_write(
    ngx_http_linegate_json_write_t *jw, ngx_uint_t api, const char *field,
    const char *message);
static ngx_uint_t ngx_http_linegate_nginx_page(ngx_http_request_t *r);
static const char *ngx_http_linegate_reason(ngx_uint_t status);
static ngx_int_t ngx_http_linegate_nginx_page_body(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, ngx_str_t *body);
static ngx_int_t ngx_http_linegate_nginx_page_header_filter(
    ngx_http_request_t *r);
static ngx_int_t ngx_http_linegate_nginx_page_body_filter(
    ngx_http_request_t *r, ngx_chain_t *in);
static ngx_int_t ngx_http_linegate_add_header(ngx_http_request_t *r,
    const char *name, size_t nlen, ngx_str_t *value);
static void ngx_http_linegate_cleanup(void *data);
static u_char *ngx_http_linegate_log_error(ngx_http_request_t *r,
    ngx_http_request_t *sr, u_char *buf, size_t len);


#define ngx_http_linegate_header(r, name, value)                            \
    ngx_http_linegate_add_header(r, name, sizeof(name) - 1, value)


static ngx_http_output_header_filter_pt  ngx_http_linegate_next_header_filter;
static ngx_http_output_body_filter_pt    ngx_http_linegate_next_body_filter;


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
    ngx_buf_t                *b;
    ngx_int_t                 rc;
    ngx_chain_t               out;
    ngx_http_linegate_ctx_t  *ctx;

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

        /*
         * not nginx's page for its filter, even with the status an
         * error_page into this location keeps (r->err_status)
         */
        ctx->answered = 1;
    }

    if (ngx_http_linegate_set_headers(r, ctx, status, len) != NGX_OK
        || ngx_http_linegate_challenge(r, ctx, status) != NGX_OK)
    {
        return NGX_ERROR;
    }

    ngx_http_linegate_no_conditions(r);

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


/*
 * An answer carries no validator (no ETag, no Last-Modified): nginx's
 * not_modified filter would read a client's If-Match, If-None-Match or
 * If-Unmodified-Since against nothing and turn a 200 into 412 or 304,
 * after the work was done (a confirm's number bought and its answer
 * lost). Conditions have nothing to match here, so none applies.
 */
static void
ngx_http_linegate_no_conditions(ngx_http_request_t *r)
{
    r->disable_not_modified = 1;
}


/*
 * RFC 9110 11.6.1: a 401 names the scheme that would be accepted. The
 * Lines API and the operator API take a Bearer credential (an API key, a
 * Clerk session token, the operator token); the Provisioning API's
 * sb-api-* headers are no HTTP authentication scheme, and its 401 stays
 * Sendblue's, without a challenge.
 */
static ngx_int_t
ngx_http_linegate_challenge(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, ngx_uint_t status)
{
    static ngx_str_t  bearer = ngx_string("Bearer");

    if (status != NGX_HTTP_UNAUTHORIZED || ctx == NULL) {
        return NGX_OK;
    }

    switch (ctx->api) {

    case NGX_HTTP_LINEGATE_API_LINE_REQUEST_CREATE:
    case NGX_HTTP_LINEGATE_API_LINE_REQUEST:
    case NGX_HTTP_LINEGATE_API_LINES_BY_USER:
    case NGX_HTTP_LINEGATE_API_LINE_AVAILABILITY:
    case NGX_HTTP_LINEGATE_API_OPERATOR:
        return ngx_http_linegate_header(r, "WWW-Authenticate", &bearer);

    default:
        return NGX_OK;
    }
}


/* status, a JSON body of len bytes, and the headers every answer carries */
static ngx_int_t
ngx_http_linegate_set_headers(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, ngx_uint_t status, size_t len)
{
    u_char     *p;
    ngx_str_t   value;

    static ngx_str_t  content_type =
        ngx_string("application/json; charset=utf-8");
    static ngx_str_t  no_store = ngx_string("no-store");
    static ngx_str_t  yes = ngx_string("true");

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

    if (ctx == NULL) {
        return NGX_OK;
    }

    if (ctx->rl_policy.len
        && (ngx_http_linegate_header(r, "RateLimit-Policy", &ctx->rl_policy)
            != NGX_OK
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

        if (ngx_http_linegate_header(r, "Retry-After", &value) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    if (ctx->replayed
        && ngx_http_linegate_header(r, "Idempotent-Replayed", &yes) != NGX_OK)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
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
    ngx_http_linegate_error_write(&jw,
                                  ctx ? ctx->api : NGX_HTTP_LINEGATE_API_NONE,
                                  code, message);

    ngx_http_linegate_send_jw(r, status, &jw);
}


/*
 * RFC 9110 15.5.6: a 405 names the methods the target has (Allow), so
 * that a client learns what it may send instead of guessing
 */
void
ngx_http_linegate_not_allowed(ngx_http_request_t *r, ngx_uint_t methods)
{
    u_char      *p;
    ngx_str_t    allow;
    ngx_uint_t   i;

    static struct {
        ngx_uint_t  method;
        ngx_str_t   name;
    }  names[] = {
        { NGX_HTTP_GET, ngx_string("GET") },
        { NGX_HTTP_HEAD, ngx_string("HEAD") },
        { NGX_HTTP_POST, ngx_string("POST") },
        { NGX_HTTP_PUT, ngx_string("PUT") },
        { NGX_HTTP_DELETE, ngx_string("DELETE") }
    };

    /* a target served by GET is served by HEAD too (RFC 9110 9.3.2) */
    if (methods & NGX_HTTP_GET) {
        methods |= NGX_HTTP_HEAD;
    }

    p = ngx_pnalloc(r->pool, sizeof("GET, HEAD, POST, PUT, DELETE") - 1);
    if (p == NULL) {
        ngx_http_linegate_internal_error(r);
        return;
    }

    allow.data = p;

    for (i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (!(methods & names[i].method)) {
            continue;
        }

        if (p != allow.data) {
            *p++ = ',';
            *p++ = ' ';
        }

        p = ngx_cpymem(p, names[i].name.data, names[i].name.len);
    }

    allow.len = p - allow.data;

    if (ngx_http_linegate_header(r, "Allow", &allow) != NGX_OK) {
        ngx_http_linegate_internal_error(r);
        return;
    }

    ngx_http_linegate_error(r, NGX_HTTP_NOT_ALLOWED, NULL,
                            "Method not allowed");
}


void
ngx_http_linegate_field_error(ngx_http_request_t *r, const char *field,
    const char *message)
{
    ngx_uint_t                      api;
    ngx_http_linegate_json_write_t  jw;
    ngx_http_linegate_ctx_t        *ctx;

    ctx = ngx_http_linegate_get_ctx(r);
    api = ctx ? ctx->api : NGX_HTTP_LINEGATE_API_NONE;

    if (ctx != NULL) {
        if (ngx_http_linegate_validation_format(api)) {
            ngx_str_set(&ctx->outcome, "VALIDATION_ERROR");

        } else if (ctx->outcome.len == 0) {
            ngx_str_set(&ctx->outcome, "error");
        }
    }

    (void) ngx_http_linegate_json_write_init(&jw, r->pool, 128);
    ngx_http_linegate_field_error_write(&jw, api, field, message);

    ngx_http_linegate_send_jw(r, NGX_HTTP_BAD_REQUEST, &jw);
}


/* Sendblue's format: {"status": "ERROR", "error": code, "message": ...} */
static ngx_uint_t
ngx_http_linegate_provision_format(ngx_uint_t api)
{
    return api == NGX_HTTP_LINEGATE_API_PROVISION_PREVIEW
           || api == NGX_HTTP_LINEGATE_API_PROVISION_CONFIRM
           || api == NGX_HTTP_LINEGATE_API_ACCOUNT_LIMITS;
}


/* {"error": ..., "code": "VALIDATION_ERROR"}; NONE: there is no ctx */
static ngx_uint_t
ngx_http_linegate_validation_format(ngx_uint_t api)
{
    return api == NGX_HTTP_LINEGATE_API_NONE
           || api == NGX_HTTP_LINEGATE_API_LINE_REQUEST_CREATE
           || api == NGX_HTTP_LINEGATE_API_LINE_REQUEST
           || api == NGX_HTTP_LINEGATE_API_OPERATOR;
}


/* ngx_http_linegate_error()'s body; api NONE: no ctx, the Lines API's */
static void
ngx_http_linegate_error_write(ngx_http_linegate_json_write_t *jw,
    ngx_uint_t api, const char *code, const char *message)
{
    const char  *key;

    ngx_http_linegate_json_write_object(jw);

    if (ngx_http_linegate_provision_format(api)) {
        ngx_http_linegate_json_write_key(jw, "status");
        ngx_http_linegate_json_write_raw(jw, (u_char *) "\"ERROR\"", 7);

        if (code) {
            ngx_http_linegate_json_write_key(jw, "error");
            ngx_http_linegate_json_write_cstr(jw, code);
        }

        key = "message";

    } else {
        if (code) {
            ngx_http_linegate_json_write_key(jw, "code");
            ngx_http_linegate_json_write_cstr(jw, code);
        }

        key = "error";
    }

    /* as jansson did: no member for a NULL message */
    if (message != NULL) {
        ngx_http_linegate_json_write_keyn(jw, key, ngx_strlen(key));
        ngx_http_linegate_json_write_cstr(jw, message);
    }

    ngx_http_linegate_json_write_end(jw, '}');
}


/*
 * ngx_http_linegate_field_error()'s body: VALIDATION_ERROR naming the
 * field where the API has it, else the API's plain error without a code
 */
static void
ngx_http_linegate_field_error_write(ngx_http_linegate_json_write_t *jw,
    ngx_uint_t api, const char *field, const char *message)
{
    if (!ngx_http_linegate_validation_format(api)) {
        ngx_http_linegate_error_write(jw, api, NULL, message);
        return;
    }

    ngx_http_linegate_json_write_object(jw);
    ngx_http_linegate_json_write_key(jw, "error");
    ngx_http_linegate_json_write_cstr(jw, message);
    ngx_http_linegate_json_write_key(jw, "code");
    ngx_http_linegate_json_write_raw(jw,
                                     (u_char *) "\"VALIDATION_ERROR\"", 18);

    if (field != NULL) {
        ngx_http_linegate_json_write_key(jw, "field");
        ngx_http_linegate_json_write_cstr(jw, field);
    }

    ngx_http_linegate_json_write_end(jw, '}');
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

    ngx_http_linegate_no_conditions(r);

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

    if (ctx != NULL && ctx->store_fault) {
        /*
         * Redis refused a command with an error no retry changes (a key
         * of the wrong type: redis.c logged which kind): a client told to
         * retry shortly would retry for ever
         */
        ngx_http_linegate_error(r, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                "INTERNAL_ERROR", "Internal error");
        return;
    }

    if (ctx != NULL) {
        ctx->retry_after = 1;
    }

    /* Sendblue's codes are lowercase, the Lines API's uppercase */
    if (ctx != NULL && ngx_http_linegate_provision_format(ctx->api)) {
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


/*
 * nginx's own error pages (a body over client_max_body_size or an invalid
 * chunked one, limit_req, deny, auth_basic, "return 503;", a 500 of the
 * handler's or of an allocation) in a linegate_api location become the
 * API's JSON error for the status: a client of a JSON API gets JSON for
 * every error. nginx keeps the status, the headers it set
 * (WWW-Authenticate, Allow...), how much of the body it reads and whether
 * the connection closes.
 */
ngx_int_t
ngx_http_linegate_nginx_page_init(ngx_conf_t *cf)
{
    ngx_http_linegate_next_header_filter = ngx_http_top_header_filter;
    ngx_http_top_header_filter = ngx_http_linegate_nginx_page_header_filter;

    ngx_http_linegate_next_body_filter = ngx_http_top_body_filter;
    ngx_http_top_body_filter = ngx_http_linegate_nginx_page_body_filter;

    return NGX_OK;
}


/*
 * nginx's special response in a location of a JSON API. r->err_status is
 * set by it only (every answer passes here: two integer compares for
 * those that are not one), and is 400 for the pseudo-codes 494-497 by
 * then; 3xx are redirects, not errors; 408, 444 and 499 send nothing. An
 * error_page of the operator's has moved the request to its location
 * (not linegate's, or one where linegate answered: ctx->answered) or
 * answered a redirect.
 */
static ngx_uint_t
ngx_http_linegate_nginx_page(ngx_http_request_t *r)
{
    ngx_http_linegate_ctx_t       *ctx;
    ngx_http_linegate_loc_conf_t  *llcf;

    if (r->err_status < NGX_HTTP_BAD_REQUEST || r != r->main) {
        return 0;
    }

    if (r->err_status > 599
        || r->err_status == NGX_HTTP_REQUEST_TIME_OUT
        || r->err_status == NGX_HTTP_CLOSE
        || r->err_status == NGX_HTTP_CLIENT_CLOSED_REQUEST
        || r->headers_out.status != r->err_status)
    {
        return 0;
    }

    llcf = ngx_http_get_module_loc_conf(r, ngx_http_linegate_module);

    if (llcf->api == NGX_HTTP_LINEGATE_API_NONE
        || llcf->api == NGX_HTTP_LINEGATE_API_METRICS)
    {
        return 0;
    }

    ctx = ngx_http_linegate_get_ctx(r);

    return ctx == NULL || !ctx->answered;
}


/* nginx's reason phrases, but where the module has its own words */
static const char *
ngx_http_linegate_reason(ngx_uint_t status)
{
    static const char  *reasons4[] = {
        "Bad Request", "Unauthorized", "Payment Required", "Forbidden",
        "Not found", "Method not allowed", "Not Acceptable",
        "Proxy Authentication Required", "Request Timeout", "Conflict",
        "Gone", "Length Required", "Precondition Failed",
        "Request body too large", "URI Too Long", "Unsupported Media Type",
        "Range Not Satisfiable", "Expectation Failed", NULL, NULL, NULL,
        "Misdirected Request", "Unprocessable Entity", NULL, NULL, NULL,
        NULL, NULL, NULL, "Too Many Requests"
    };

    static const char  *reasons5[] = {
        "Internal error", "Not Implemented", "Bad Gateway",
        "Service Unavailable", "Gateway Timeout",
        "HTTP Version Not Supported", NULL, "Insufficient Storage"
    };

    if (status < 400 + sizeof(reasons4) / sizeof(reasons4[0])) {
        if (reasons4[status - 400]) {
            return reasons4[status - 400];
        }

    } else if (status >= 500
               && status < 500 + sizeof(reasons5) / sizeof(reasons5[0])
               && reasons5[status - 500])
    {
        return reasons5[status - 500];
    }

    return status < 500 ? "Client error" : "Server error";
}


/*
 * The JSON for nginx's status, in the API's format (the writers of
 * ngx_http_linegate_error() and _field_error()): a refused body (400,
 * 413) as the module's own refusal of a body, without a field (a 400 of
 * the body filter, a body over linegate_max_body, in the module's words
 * for it: "Request body too large", what the handler answers a
 * Content-Length over the limit); a 500 as
 * ngx_http_linegate_internal_error()'s; a 429 of the Lines API as its
 * RATE_LIMITED, of the Provisioning API as rate_limited (its limits'
 * codes name a window nginx knows nothing of); anything else without a
 * code. A Retry-After nginx set (add_header, linegate_limit) stays.
 */
static ngx_int_t
ngx_http_linegate_nginx_page_body(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, ngx_str_t *body)
{
    ngx_uint_t                      api, status;
    const char                     *code, *reason;
    ngx_http_linegate_json_write_t  jw;

    api = ctx->api;
    status = r->err_status;
    reason = ngx_http_linegate_reason(status);

    (void) ngx_http_linegate_json_write_init(&jw, r->pool, 96);

    switch (status) {

    case NGX_HTTP_BAD_REQUEST:
    case NGX_HTTP_REQUEST_ENTITY_TOO_LARGE:
        if (ctx->body_over) {
            reason = "Request body too large";
        }

        ngx_http_linegate_field_error_write(&jw, api, NULL, reason);
        return ngx_http_linegate_json_write_finish(&jw, body);

    case NGX_HTTP_INTERNAL_SERVER_ERROR:
        code = "INTERNAL_ERROR";
        break;

    case NGX_HTTP_TOO_MANY_REQUESTS:
        /* the API's own 429 code: Sendblue's are lowercase */
        if (ngx_http_linegate_provision_format(api)) {
            code = "rate_limited";

        } else if (api == NGX_HTTP_LINEGATE_API_LINE_REQUEST_CREATE
                   || api == NGX_HTTP_LINEGATE_API_LINE_REQUEST
                   || api == NGX_HTTP_LINEGATE_API_LINES_BY_USER
                   || api == NGX_HTTP_LINEGATE_API_LINE_AVAILABILITY)
        {
            code = "RATE_LIMITED";

        } else {
            code = NULL;
        }

        reason = code ? "Rate limit exceeded" : reason;
        break;

    default:
        code = NULL;
    }

    ngx_http_linegate_error_write(&jw, api, code, reason);

    return ngx_http_linegate_json_write_finish(&jw, body);
}


/*
 * Counted as the module's answers are, outcome "nginx_error"; the body
 * filter replaces the page of the requests marked here.
 */
static ngx_int_t
ngx_http_linegate_nginx_page_header_filter(ngx_http_request_t *r)
{
    ngx_str_t                      body;
    ngx_http_linegate_ctx_t       *ctx;
    ngx_http_linegate_loc_conf_t  *llcf;

    if (!ngx_http_linegate_nginx_page(r)) {
        return ngx_http_linegate_next_header_filter(r);
    }

    llcf = ngx_http_get_module_loc_conf(r, ngx_http_linegate_module);

    ctx = ngx_http_linegate_get_ctx(r);

    /* nginx answered before the rewrite phase (find-config: a 413) */
    if (ctx == NULL) {
        ctx = ngx_http_linegate_ctx_create(r, llcf);
        if (ctx == NULL) {
            return NGX_ERROR;
        }
    }

    ngx_str_set(&ctx->outcome, "nginx_error");
    ngx_http_linegate_metrics_answer(ctx->api, ctx->api_name, r->err_status,
                                     &ctx->outcome);
    ctx->nginx_page = 1;

    if (ngx_http_linegate_nginx_page_body(r, ctx, &body) != NGX_OK
        || ngx_http_linegate_set_headers(r, ctx, r->err_status, body.len)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    return ngx_http_linegate_next_header_filter(r);
}


/*
 * nginx's page (its text, the tail, maybe the MSIE padding; an empty
 * buffer for a status without a page) is dropped; the JSON goes with the
 * page's last buffer, which nginx sends once. HEAD: no body comes.
 */
static ngx_int_t
ngx_http_linegate_nginx_page_body_filter(ngx_http_request_t *r,
    ngx_chain_t *in)
{
    ngx_buf_t                *b;
    ngx_str_t                 body;
    ngx_uint_t                last;
    ngx_chain_t              *cl, out;
    ngx_http_linegate_ctx_t  *ctx;

    if (r->err_status < NGX_HTTP_BAD_REQUEST || in == NULL) {
        return ngx_http_linegate_next_body_filter(r, in);
    }

    ctx = ngx_http_get_module_ctx(r, ngx_http_linegate_module);

    if (ctx == NULL || !ctx->nginx_page || r != r->main) {
        return ngx_http_linegate_next_body_filter(r, in);
    }

    last = 0;

    for (cl = in; cl; cl = cl->next) {
        cl->buf->pos = cl->buf->last;
        last |= cl->buf->last_buf;
    }

    if (!last) {
        return ngx_http_linegate_next_body_filter(r, NULL);
    }

    if (ngx_http_linegate_nginx_page_body(r, ctx, &body) != NGX_OK) {
        return NGX_ERROR;
    }

    b = ngx_calloc_buf(r->pool);
    if (b == NULL) {
        return NGX_ERROR;
    }

    b->pos = body.data;
    b->last = body.data + body.len;
    b->memory = 1;
    b->last_buf = 1;
    b->last_in_chain = 1;

    out.buf = b;
    out.next = NULL;

    return ngx_http_linegate_next_body_filter(r, &out);
}


/*
 * The request's ctx, made as soon as its location is known (the rewrite
 * phase) so that the error log lines nginx writes about it before the
 * content handler (limit_req, deny, auth_basic...) carry its id too; or
 * by the error-page filter when nginx answered before that (a body over
 * client_max_body_size). Its cleanup's data is how the log handler finds
 * it after an internal redirect has cleared the modules' contexts.
 */
ngx_http_linegate_ctx_t *
ngx_http_linegate_ctx_create(ngx_http_request_t *r,
    ngx_http_linegate_loc_conf_t *llcf)
{
    ngx_pool_cleanup_t       *cln;
    ngx_http_linegate_ctx_t  *ctx;

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_linegate_ctx_t));
    if (ctx == NULL) {
        return NULL;
    }

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NULL;
    }

    cln->handler = ngx_http_linegate_cleanup;
    cln->data = ctx;

    ctx->api = llcf->api;
    ctx->api_name = &llcf->api_name;
    ctx->retry_after = -1;
    ngx_http_set_ctx(r, ctx, ngx_http_linegate_module);

    /*
     * Error log lines about this request carry its id, after nginx's own
     * part. Once only: after an internal redirect into a second linegate
     * location the handler is ours already, and taking it as nginx's
     * would have it call itself for ever.
     */
    if (r->log_handler != ngx_http_linegate_log_error) {
        ctx->log_handler = r->log_handler;
        r->log_handler = ngx_http_linegate_log_error;
    }

    return ctx;
}


static void
ngx_http_linegate_cleanup(void *data)
{
    ngx_http_linegate_ctx_t  *ctx = data;

    ngx_atomic_t  *epoch;

    /* the running cycle's epoch: the request's may be unmapped (auth.c) */
    epoch = ctx->bump_epoch ? ngx_http_linegate_auth_epoch() : NULL;

    if (epoch != NULL) {
        (void) ngx_atomic_fetch_add(epoch, 1);
    }

    if (ctx->body) {
        json_decref(ctx->body);
        ctx->body = NULL;
    }

    if (ctx->stripe_json) {
        json_decref(ctx->stripe_json);
        ctx->stripe_json = NULL;
    }
}


static u_char *
ngx_http_linegate_log_error(ngx_http_request_t *r, ngx_http_request_t *sr,
    u_char *buf, size_t len)
{
    u_char                   *p;
    ngx_str_t                 id;
    ngx_pool_cleanup_t       *cln;
    ngx_http_linegate_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_linegate_module);

    if (ctx == NULL || ctx->log_handler == NULL) {

        /*
         * An internal redirect (error_page, try_files) cleared the
         * modules' contexts, and a linegate location it led to made a
         * ctx of its own, without nginx's handler: the ctx that keeps it
         * is still the data of its pool cleanup (nginx's realip module
         * finds its own ctx again the same way).
         */

        ctx = NULL;

        for (cln = r->pool->cleanup; cln; cln = cln->next) {
            if (cln->handler == ngx_http_linegate_cleanup
                && ((ngx_http_linegate_ctx_t *) cln->data)->log_handler)
            {
                ctx = cln->data;
                break;
            }
        }
    }

    p = buf;

    if (ctx != NULL) {
        p = ctx->log_handler(r, sr, buf, len);
        len -= p - buf;
    }

    if (ngx_http_linegate_request_id(r, &id) == NGX_OK) {
        p = ngx_snprintf(p, len, ", request_id: %V", &id);
    }

    return p;
}
