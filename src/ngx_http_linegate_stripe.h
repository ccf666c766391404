
/*
 * linegate: Stripe, reached through nginx subrequests to the internal
 * location named by linegate_stripe_location.
 */


#ifndef _NGX_HTTP_LINEGATE_STRIPE_H_INCLUDED_
#define _NGX_HTTP_LINEGATE_STRIPE_H_INCLUDED_


#include "ngx_http_linegate_module.h"


/* what became of a Stripe call, from ctx->stripe_status and stripe_json */
typedef enum {
    NGX_HTTP_LINEGATE_STRIPE_OK = 0,        /* 2xx with a JSON object */
    NGX_HTTP_LINEGATE_STRIPE_REFUSED,       /* 4xx with a Stripe error */
    NGX_HTTP_LINEGATE_STRIPE_RATE_LIMITED,  /* 429 */
    NGX_HTTP_LINEGATE_STRIPE_UNAVAILABLE    /* unreachable, 5xx, garbage */
} ngx_http_linegate_stripe_result_e;


/*
 * Append name=value to an application/x-www-form-urlencoded body. Both
 * are percent-encoded, so no value can inject another parameter.
 */
ngx_int_t ngx_http_linegate_form_add(ngx_pool_t *pool, ngx_str_t *form,
    const char *name, ngx_str_t *value);
ngx_int_t ngx_http_linegate_form_add_cstr(ngx_pool_t *pool, ngx_str_t *form,
    const char *name, const char *value);

/*
 * Call Stripe: method NGX_HTTP_GET or NGX_HTTP_POST (DELETE too), path
 * such as "v1/invoices" (no leading slash; ids in it must be checked by
 * the caller to be [A-Za-z0-9_]; a "?query", already encoded, becomes
 * the subrequest's arguments), form body for POST (may be NULL),
 * idempotency_key for POST (may be NULL). The request waits; when the
 * call ends, ctx->stripe_status, ctx->stripe_body and ctx->stripe_json are
 * set and resume(r, ctx) runs. NGX_ERROR: the call could not be started
 * (resume is not called).
 *
 * resume runs however the call ends, exactly once: also when the answer
 * was over subrequest_output_buffer_size, cut, reset, timed out (nginx's
 * proxy timeouts, or linegate_stripe_timeout for the whole call, a
 * resolution of the proxy_pass host included), or the
 * client left meanwhile (the client's leaving does not end the request
 * here: its steps run, writing its answer tells whether anyone reads
 * it). Then:
 *
 *   ctx->stripe_unknown   1: no whole answer came after (part of) the
 *                         request was written to Stripe: the call may
 *                         have run (a POST may have charged); 0: Stripe
 *                         answered, or nothing was sent (refused
 *                         connection). ctx->stripe_json is NULL and
 *                         ctx->stripe_status 502 (504 when nginx timed
 *                         out before the headers) when there was no
 *                         whole answer: stripe_result() says UNAVAILABLE.
 *                         Also 1 for a 2xx with no JSON object in it (the
 *                         call ran, what it made cannot be read: perhaps
 *                         a cut answer nginx took for whole), its status
 *                         kept; stripe_result() says UNAVAILABLE.
 *
 * The operator's Stripe location must hold proxy_ignore_client_abort on
 * (docs/directives.md): otherwise a client leaving aborts a call in
 * flight (an unknown outcome instead of Stripe's answer). nginx -t
 * refuses it off (ngx_http_linegate_stripe_conf_check, stripe_conf.h).
 */
ngx_int_t ngx_http_linegate_stripe_call(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, ngx_uint_t method, ngx_str_t *path,
    ngx_str_t *form, ngx_str_t *idempotency_key,
    ngx_http_linegate_resume_pt resume);

ngx_http_linegate_stripe_result_e ngx_http_linegate_stripe_result(
    ngx_http_linegate_ctx_t *ctx);

/* Stripe's error message of a refused call, or a generic text */
const char *ngx_http_linegate_stripe_error_message(
    ngx_http_linegate_ctx_t *ctx);

/* a string field of Stripe's "error" object, or NULL */
const char *ngx_http_linegate_stripe_error_field(
    ngx_http_linegate_ctx_t *ctx, const char *field);

/* Stripe's error code (e.g. "card_declined"), or NULL */
const char *ngx_http_linegate_stripe_error_code(
    ngx_http_linegate_ctx_t *ctx);

/* an id of a Stripe object: safe in a URI path */
ngx_int_t ngx_http_linegate_stripe_id_valid(ngx_str_t *id);

/* longest hosted invoice URL taken from Stripe */
#define NGX_HTTP_LINEGATE_STRIPE_URL_MAX  2048

/* a hosted invoice URL fit to give clients: https, bounded, no quotes */
ngx_int_t ngx_http_linegate_stripe_url_valid(ngx_str_t *url);

/* one of Stripe's invoice statuses (draft, open, paid, ...) */
ngx_int_t ngx_http_linegate_stripe_invoice_status_valid(ngx_str_t *status);


#endif /* _NGX_HTTP_LINEGATE_STRIPE_H_INCLUDED_ */
