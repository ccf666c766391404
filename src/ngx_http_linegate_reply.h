
/*
 * linegate: answers. Every answer is JSON, carries X-Request-Id, and ends
 * the request: these functions finalize it.
 */


#ifndef _NGX_HTTP_LINEGATE_REPLY_H_INCLUDED_
#define _NGX_HTTP_LINEGATE_REPLY_H_INCLUDED_


#include "ngx_http_linegate_module.h"
#include "ngx_http_linegate_json_write.h"
#include "ngx_http_linegate_json.h"


/*
 * The request's ctx, its cleanup and the error log hook that puts its id
 * on every line about it (the rewrite phase, the content handler or the
 * error-page filter makes it, whichever comes first); NULL: no memory
 */
ngx_http_linegate_ctx_t *ngx_http_linegate_ctx_create(ngx_http_request_t *r,
    ngx_http_linegate_loc_conf_t *llcf);

/* answer what jw holds with status (500 if it failed), and finalize */
void ngx_http_linegate_send_jw(ngx_http_request_t *r, ngx_uint_t status,
    ngx_http_linegate_json_write_t *jw);

/* answer an already serialized JSON body (idempotent replays) */
void ngx_http_linegate_send_body(ngx_http_request_t *r, ngx_uint_t status,
    u_char *body, size_t len);

/*
 * An error in the format of the API the request belongs to: Lines API and
 * operator {"error": message, "code": code}; Provisioning API
 * {"status": "ERROR", "error": code, "message": message}. code may be NULL.
 */
void ngx_http_linegate_error(ngx_http_request_t *r, ngx_uint_t status,
    const char *code, const char *message);

/*
 * 405 "Method not allowed" in the API's format, with Allow naming methods
 * (NGX_HTTP_GET|NGX_HTTP_POST...)
 */
void ngx_http_linegate_not_allowed(ngx_http_request_t *r,
    ngx_uint_t methods);

/* 400 naming the field that failed validation */
void ngx_http_linegate_field_error(ngx_http_request_t *r, const char *field,
    const char *message);

/*
 * A content handler's answer that is not JSON (GET /metrics): b with
 * status and type; returns what the content handler returns (nginx
 * finalizes).
 */
ngx_int_t ngx_http_linegate_send_text(ngx_http_request_t *r,
    ngx_uint_t status, ngx_str_t *type, ngx_buf_t *b);

/* what a service refused (ctx->refusal), in the API's format */
void ngx_http_linegate_refuse(ngx_http_request_t *r);

/*
 * Redis could not answer: 503, Retry-After, nothing written; a 500
 * (INTERNAL_ERROR) once Redis refused one of the request's commands with
 * an error no retry changes (ctx->store_fault: WRONGTYPE...)
 */
void ngx_http_linegate_store_unavailable(ngx_http_request_t *r);

/* a bug or an allocation failure: logged, 500 in the API's format */
void ngx_http_linegate_internal_error(ngx_http_request_t *r);

/*
 * Installs the filters that answer nginx's own error pages (a body over
 * client_max_body_size, deny, limit_req, auth_basic...) in a linegate_api
 * location in the API's format.
 */
ngx_int_t ngx_http_linegate_nginx_page_init(ngx_conf_t *cf);

/*
 * Parse ctx->raw into ctx->body (ngx_http_linegate_json_parse(), json.h):
 * NGX_OK, or NGX_ERROR once the 400 naming why (a 500 when memory ran
 * out) has been sent.
 */
static ngx_inline ngx_int_t
ngx_http_linegate_json_body(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, ngx_uint_t empty_ok)
{
    const char  *why;

    if (ngx_http_linegate_json_parse(r, ctx, empty_ok, &why) == NGX_OK) {
        return NGX_OK;
    }

    if (why == NULL) {
        ngx_http_linegate_internal_error(r);

    } else {
        ngx_http_linegate_field_error(r, NULL, why);
    }

    return NGX_ERROR;
}


#endif /* _NGX_HTTP_LINEGATE_REPLY_H_INCLUDED_ */
