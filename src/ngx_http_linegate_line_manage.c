
/*
 * linegate: POST /api/line-requests/:id (SPEC 2.6), for a request that
 * awaits payment.
 *
 *   payment_link: ask Stripe how the invoice stands;
 *     open          -> the same link (reused: true)
 *     paid          -> promote (lr_resolve), answer as GET does
 *     void, uncollectible -> lr_reissue_claim -> [void the old one]
 *                   -> issue a new invoice -> lr_reissue_store
 *                   -> the new link (reused: false); its reply lost:
 *                   the store sent again (durable), 503
 *   cancel: void at Stripe first;
 *     voided        -> cancel (lr_resolve) -> 200 canceled
 *     refused       -> ask Stripe: paid -> promote -> 409 provisioning
 *     unreachable   -> 502, nothing changed
 *
 * Redis is changed only after Stripe has said what happened, and only
 * while the request still names the invoice Stripe spoke of.
 */


#include "ngx_http_linegate_module.h"
#include "ngx_http_linegate_lines.h"
#include "ngx_http_linegate_json.h"
#include "ngx_http_linegate_reply.h"


#define NGX_HTTP_LINEGATE_ACTION_PAYMENT_LINK  1
#define NGX_HTTP_LINEGATE_ACTION_CANCEL        2


static void ngx_http_linegate_manage_action(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr);
static void ngx_http_linegate_manage_done(ngx_http_request_t *r,
    redisReply *reply);
static ngx_int_t ngx_http_linegate_manage_load(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, redisReply *reply);
static ngx_int_t ngx_http_linegate_manage_key(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr);
static void ngx_http_linegate_manage_refuse(ngx_http_request_t *r,
    redisReply *reply, ngx_uint_t i);
static void ngx_http_linegate_manage_conflict(ngx_http_request_t *r,
    ngx_str_t *state, const char *message);
static void ngx_http_linegate_manage_busy(ngx_http_request_t *r);
static void ngx_http_linegate_manage_stripe_error(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx);
static void ngx_http_linegate_manage_unavailable(ngx_http_request_t *r);
static ngx_int_t ngx_http_linegate_manage_invoice(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx);
static void ngx_http_linegate_manage_check(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, ngx_http_linegate_resume_pt resume);

static void ngx_http_linegate_link_checked(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx);
static void ngx_http_linegate_link_send(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, ngx_uint_t reused);
static void ngx_http_linegate_link_resolved(ngx_http_request_t *r,
    redisReply *reply);
static void ngx_http_linegate_link_claim(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr);
static void ngx_http_linegate_link_claimed(ngx_http_request_t *r,
    redisReply *reply);
static void ngx_http_linegate_link_old_voided(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx);
static void ngx_http_linegate_link_issue(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr);
static void ngx_http_linegate_link_fail(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, ngx_uint_t result, ngx_int_t retry_after);
static void ngx_http_linegate_link_issued(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr);
static void ngx_http_linegate_link_stored(ngx_http_request_t *r,
    redisReply *reply);
static void ngx_http_linegate_link_discarded(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr);
static void ngx_http_linegate_link_abort(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, ngx_http_linegate_lr_pt next);
static void ngx_http_linegate_link_abort_args(ngx_http_linegate_lr_t *lr,
    ngx_http_linegate_redis_args_t *a);
static void ngx_http_linegate_link_cleanup(void *data);
static void ngx_http_linegate_link_recheck(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr);
static void ngx_http_linegate_link_failed(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr);

static void ngx_http_linegate_cancel_void(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr);
static void ngx_http_linegate_cancel_voided(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx);
static void ngx_http_linegate_cancel_checked(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx);
static void ngx_http_linegate_cancel_resolved(ngx_http_request_t *r,
    redisReply *reply);


void
ngx_http_linegate_line_manage(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr)
{
    ngx_http_linegate_redis_args_t  *a;

    /* a malformed id is answered first, a malformed body next */
    if (!lr->deferred && ngx_http_linegate_lines_parse(r, lr) == NGX_OK) {
        ngx_http_linegate_manage_action(r, lr);
    }

    ngx_http_linegate_lines_args(r, lr);
    a = &lr->args;

    ngx_http_linegate_redis_arg_str(a, &lr->id);
    ngx_http_linegate_redis_arg_cstr(a,
        lr->action == NGX_HTTP_LINEGATE_ACTION_CANCEL ? "cancel"
                                                      : "payment_link");
    ngx_http_linegate_redis_arg_str(a, &lr->date);
    ngx_http_linegate_redis_arg_int(r, a, lr->now_ms);
    ngx_http_linegate_redis_arg_int(r, a, NGX_HTTP_LINEGATE_LR_REISSUE_HOLD);

    ngx_http_linegate_lines_script(r, lr, NGX_HTTP_LINEGATE_SCRIPT_LR_MANAGE,
                                   ngx_http_linegate_manage_done);
}


static void
ngx_http_linegate_manage_action(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr)
{
    ngx_int_t  rc;
    ngx_str_t  action;

    rc = ngx_http_linegate_json_str(lr->ctx->body, "action", &action);

    if (rc == NGX_ERROR) {
        ngx_http_linegate_lines_defer(lr, NGX_HTTP_LINEGATE_LR_DEFER_FIELD,
                                      "action", "action must be a string");
        return;
    }

    if (rc == NGX_OK && ngx_http_linegate_line_is(&action, "payment_link")) {
        lr->action = NGX_HTTP_LINEGATE_ACTION_PAYMENT_LINK;
        return;
    }

    if (rc == NGX_OK && ngx_http_linegate_line_is(&action, "cancel")) {
        lr->action = NGX_HTTP_LINEGATE_ACTION_CANCEL;
        return;
    }

    ngx_http_linegate_lines_defer(lr, NGX_HTTP_LINEGATE_LR_DEFER_PLAIN, NULL,
                                  "Unsupported action");
}


static void
ngx_http_linegate_manage_done(ngx_http_request_t *r, redisReply *reply)
{
    ngx_int_t                code;
    ngx_http_linegate_lr_t  *lr;

    lr = ngx_http_linegate_lines_lr(r);

    code = ngx_http_linegate_lines_gate(r, lr, reply);

    switch (code) {

    case NGX_DONE:
        return;

    case NGX_HTTP_LINEGATE_LR_NOT_FOUND:
        ngx_http_linegate_lines_not_found(r);
        return;

    case NGX_HTTP_LINEGATE_LR_READ_ONLY:
        ngx_http_linegate_lines_read_only(r, reply, 3);
        return;

    case NGX_HTTP_LINEGATE_LR_SUBSCRIPTION:
        ngx_str_set(&lr->ctx->outcome, "subscription_required");
        ngx_http_linegate_lines_subscription_required(r);
        return;

    case NGX_HTTP_LINEGATE_LR_WRONG_STATE:
        ngx_http_linegate_manage_refuse(r, reply, 3);
        return;

    case NGX_HTTP_LINEGATE_LR_BUSY:
        ngx_http_linegate_manage_busy(r);
        return;

    case NGX_HTTP_LINEGATE_LR_OK:
        break;

    default:
        ngx_http_linegate_internal_error(r);
        return;
    }

    if (ngx_http_linegate_manage_load(r, lr, reply) != NGX_OK) {
        ngx_http_linegate_internal_error(r);
        return;
    }

    if (lr->action == NGX_HTTP_LINEGATE_ACTION_CANCEL) {
        ngx_http_linegate_cancel_void(r, lr);

    } else {
        ngx_http_linegate_manage_check(r, lr,
                                       ngx_http_linegate_link_checked);
    }
}


/* {LR_OK, ws, remaining, line, stripeCustomerId, invoiceSeq} */
static ngx_int_t
ngx_http_linegate_manage_load(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, redisReply *reply)
{
    ngx_str_t  customer, seq;

    if (reply->elements < 6
        || ngx_http_linegate_line_parse(r, lr, reply->element[3], &lr->line)
           != NGX_OK
        || ngx_http_linegate_reply_str(reply, 4, &customer) != NGX_OK
        || ngx_http_linegate_reply_str(reply, 5, &seq) != NGX_OK
        || ngx_http_linegate_pstr(r->pool, &lr->customer, customer.data,
                                  customer.len)
           == NULL
        || ngx_http_linegate_pstr(r->pool, &lr->seq, seq.data, seq.len)
           == NULL)
    {
        return NGX_ERROR;
    }

    return ngx_http_linegate_manage_key(r, lr);
}


/*
 * The Idempotency-Key prefix of the invoice number lr->seq of the request:
 * "lg-<id>" for the first, "lg-<id>-r<n>" for the n-th reissue.
 */
static ngx_int_t
ngx_http_linegate_manage_key(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr)
{
    u_char     *p;
    ngx_str_t  *key, *seq;

    key = &lr->invoice.key;
    seq = &lr->seq;

    p = ngx_pnalloc(r->pool, sizeof("lg--r") - 1 + lr->id.len + seq->len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    key->data = p;

    if (seq->len == 0 || (seq->len == 1 && seq->data[0] == '0')) {
        key->len = ngx_sprintf(p, "lg-%V", &lr->id) - p;

    } else {
        key->len = ngx_sprintf(p, "lg-%V-r%V", &lr->id, seq) - p;
    }

    return NGX_OK;
}


static void
ngx_http_linegate_manage_refuse(ngx_http_request_t *r, redisReply *reply,
    ngx_uint_t i)
{
    ngx_str_t  state;

    if (ngx_http_linegate_reply_str(reply, i, &state) != NGX_OK) {
        ngx_http_linegate_internal_error(r);
        return;
    }

    ngx_http_linegate_manage_conflict(r, &state, NULL);
}


/* 409: the request is not (or no longer) awaiting payment */
static void
ngx_http_linegate_manage_conflict(ngx_http_request_t *r, ngx_str_t *state,
    const char *message)
{
    ngx_http_linegate_ctx_t  *ctx;

    ctx = ngx_http_linegate_get_ctx(r);
    ngx_str_set(&ctx->outcome, "wrong_state");

    ngx_http_linegate_lines_refusal(r, NGX_HTTP_CONFLICT, state,
        message ? message
        : "This action applies only to a request awaiting payment");
}


static void
ngx_http_linegate_manage_busy(ngx_http_request_t *r)
{
    ngx_http_linegate_ctx_t  *ctx;

    static ngx_str_t  awaiting = ngx_string(NGX_HTTP_LINEGATE_LR_AWAITING);

    ctx = ngx_http_linegate_get_ctx(r);
    ctx->retry_after = 1;
    ngx_str_set(&ctx->outcome, "busy");

    ngx_http_linegate_lines_refusal(r, NGX_HTTP_CONFLICT, &awaiting,
        "The invoice of this request is being issued: retry shortly");
}


static void
ngx_http_linegate_manage_stripe_error(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx)
{
    ngx_uint_t  result;

    result = ngx_http_linegate_stripe_result(ctx);

    ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                  NGX_HTTP_LINEGATE_LOG "Stripe call failed: status %i, %s",
                  ctx->stripe_status,
                  ngx_http_linegate_stripe_error_message(ctx));

    ngx_http_linegate_lines_billing_error(r,
                              result == NGX_HTTP_LINEGATE_STRIPE_OK
                              ? NGX_HTTP_LINEGATE_STRIPE_UNAVAILABLE : result,
                              (ngx_int_t) ctx->stripe_retry_after);
}


/* Stripe could not be asked, or answered what is not understood: 502 */
static void
ngx_http_linegate_manage_unavailable(ngx_http_request_t *r)
{
    ngx_http_linegate_lines_billing_error(r,
                                          NGX_HTTP_LINEGATE_STRIPE_UNAVAILABLE,
                                          -1);
}


/* ask Stripe how the invoice stands, resume reads the answer */
static void
ngx_http_linegate_manage_check(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, ngx_http_linegate_resume_pt resume)
{
    if (ngx_http_linegate_lines_stripe(r, lr, NGX_HTTP_GET, "v1/invoices",
                                       &lr->line.invoice_id, NULL, NULL,
                                       NULL, resume)
        != NGX_OK)
    {
        ngx_http_linegate_manage_unavailable(r);
    }
}


/* Stripe's answer to manage_check read into lr->invoice, else answered */
static ngx_int_t
ngx_http_linegate_manage_invoice(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx)
{
    if (ngx_http_linegate_stripe_result(ctx) != NGX_HTTP_LINEGATE_STRIPE_OK
        || ngx_http_linegate_lines_invoice_read(r, ctx->data) != NGX_OK)
    {
        ngx_http_linegate_manage_stripe_error(r, ctx);
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* payment_link */


static void
ngx_http_linegate_link_checked(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx)
{
    ngx_str_t               *st;
    ngx_http_linegate_lr_t  *lr;

    lr = ctx->data;

    if (ngx_http_linegate_manage_invoice(r, ctx) != NGX_OK) {
        return;
    }

    st = &lr->invoice.status;

    if (ngx_http_linegate_line_is(st, "open")) {
        ngx_http_linegate_link_send(r, lr, 1);
        return;
    }

    if (ngx_http_linegate_line_is(st, "paid")) {
        ngx_http_linegate_lines_resolve(r, lr, "paid",
                                        ngx_http_linegate_link_resolved);
        return;
    }

    if (ngx_http_linegate_line_is(st, "void")
        || ngx_http_linegate_line_is(st, "uncollectible"))
    {
        ngx_http_linegate_link_claim(r, lr);
        return;
    }

    ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                  NGX_HTTP_LINEGATE_LOG "invoice \"%V\" of line request "
                  "\"%V\" is \"%V\"", &lr->invoice.id, &lr->id, st);

    ngx_http_linegate_manage_unavailable(r);
}


static void
ngx_http_linegate_link_send(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, ngx_uint_t reused)
{
    ngx_str_t                       *url;
    ngx_http_linegate_json_write_t   jw;

    url = lr->invoice.url.len ? &lr->invoice.url : &lr->line.payment_url;

    (void) ngx_http_linegate_json_write_init(&jw, r->pool, 256);
    ngx_http_linegate_json_write_object(&jw);
    ngx_http_linegate_json_write_key(&jw, "success");
    ngx_http_linegate_json_write_bool(&jw, 1);
    ngx_http_linegate_json_write_key(&jw, "status");
    ngx_http_linegate_json_write_cstr(&jw, NGX_HTTP_LINEGATE_LR_AWAITING);
    ngx_http_linegate_json_write_key(&jw, "paymentUrl");
    ngx_http_linegate_json_write_str_or_null(&jw, url);
    ngx_http_linegate_json_write_key(&jw, "invoiceId");
    ngx_http_linegate_json_write_str_or_null(&jw, &lr->invoice.id);
    ngx_http_linegate_json_write_key(&jw, "reused");
    ngx_http_linegate_json_write_bool(&jw, reused);
    ngx_http_linegate_json_write_end(&jw, '}');

    ngx_http_linegate_send_jw(r, NGX_HTTP_OK, &jw);
}


static void
ngx_http_linegate_link_resolved(ngx_http_request_t *r, redisReply *reply)
{
    ngx_http_linegate_lr_t  *lr;

    lr = ngx_http_linegate_lines_lr(r);

    if (reply == NULL) {
        ngx_http_linegate_store_unavailable(r);
        return;
    }

    if (ngx_http_linegate_lines_resolved(r, lr, reply) != NGX_OK) {
        ngx_http_linegate_lines_not_found(r);
        return;
    }

    ngx_http_linegate_lines_send_status(r, lr);
}


static void
ngx_http_linegate_link_claim(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr)
{
    ngx_http_linegate_redis_args_t  *a;

    ngx_http_linegate_lines_line_args(lr);
    a = &lr->args;

    ngx_http_linegate_redis_arg_str(a, &lr->line.invoice_id);
    ngx_http_linegate_redis_arg_int(r, a, lr->now_ms);
    ngx_http_linegate_redis_arg_int(r, a, NGX_HTTP_LINEGATE_LR_REISSUE_HOLD);

    ngx_http_linegate_lines_script(r, lr,
                                   NGX_HTTP_LINEGATE_SCRIPT_LR_REISSUE_CLAIM,
                                   ngx_http_linegate_link_claimed);
}


static void
ngx_http_linegate_link_claimed(ngx_http_request_t *r, redisReply *reply)
{
    int64_t                  code;
    ngx_str_t                seq;
    ngx_pool_cleanup_t      *cln;
    ngx_http_linegate_lr_t  *lr;

    lr = ngx_http_linegate_lines_lr(r);

    if (reply == NULL) {
        ngx_http_linegate_store_unavailable(r);
        return;
    }

    if (ngx_http_linegate_reply_int(reply, 0, &code) != NGX_OK) {
        ngx_http_linegate_internal_error(r);
        return;
    }

    if (code == NGX_HTTP_LINEGATE_LR_WRONG_STATE) {
        ngx_http_linegate_manage_refuse(r, reply, 1);
        return;
    }

    if (code == NGX_HTTP_LINEGATE_LR_BUSY) {
        ngx_http_linegate_manage_busy(r);
        return;
    }

    /* the old invoice is the one the keys of lr->invoice.key are for */
    lr->old_invoice = lr->line.invoice_id;

    seq.data = ngx_pnalloc(r->pool, NGX_INT64_LEN);

    if (code != NGX_HTTP_LINEGATE_LR_OK || seq.data == NULL
        || ngx_http_linegate_reply_int(reply, 1, &code) != NGX_OK)
    {
        ngx_http_linegate_internal_error(r);
        return;
    }

    seq.len = ngx_sprintf(seq.data, "%L", code) - seq.data;
    lr->seq = seq;

    /* a request freed while reissuing still releases its claim */
    if (lr->release == NULL) {
        lr->release = ngx_palloc(r->pool,
                                 sizeof(ngx_http_linegate_redis_args_t));
        cln = ngx_pool_cleanup_add(r->pool, 0);

        if (lr->release == NULL || cln == NULL) {
            ngx_http_linegate_link_fail(r, lr,
                                   NGX_HTTP_LINEGATE_STRIPE_UNAVAILABLE, -1);
            return;
        }

        cln->handler = ngx_http_linegate_link_cleanup;
        cln->data = lr;
    }

    ngx_http_linegate_link_abort_args(lr, lr->release);
    lr->settled = 0;

    if (!ngx_http_linegate_line_is(&lr->invoice.status, "uncollectible")) {
        ngx_http_linegate_link_issue(r, lr);
        return;
    }

    /* an uncollectible invoice could still be paid: void it first */
    if (ngx_http_linegate_lines_stripe(r, lr, NGX_HTTP_POST, "v1/invoices",
                                       &lr->old_invoice, "/void", NULL,
                                       "-void",
                                       ngx_http_linegate_link_old_voided)
        != NGX_OK)
    {
        ngx_http_linegate_link_fail(r, lr,
                                    NGX_HTTP_LINEGATE_STRIPE_UNAVAILABLE, -1);
    }
}


static void
ngx_http_linegate_link_old_voided(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx)
{
    ngx_uint_t               result;
    ngx_http_linegate_lr_t  *lr;

    lr = ctx->data;
    result = ngx_http_linegate_stripe_result(ctx);

    if (result == NGX_HTTP_LINEGATE_STRIPE_OK) {
        ngx_http_linegate_link_issue(r, lr);
        return;
    }

    if (result == NGX_HTTP_LINEGATE_STRIPE_REFUSED && lr->rounds++ == 0) {
        /* paid meanwhile, most likely: look again, once */
        ngx_http_linegate_link_abort(r, lr, ngx_http_linegate_link_recheck);
        return;
    }

    ngx_http_linegate_link_fail(r, lr,
                                result == NGX_HTTP_LINEGATE_STRIPE_REFUSED
                                ? NGX_HTTP_LINEGATE_STRIPE_UNAVAILABLE
                                : result,
                                (ngx_int_t) ctx->stripe_retry_after);
}


static void
ngx_http_linegate_link_issue(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr)
{
    if (ngx_http_linegate_manage_key(r, lr) != NGX_OK) {
        ngx_http_linegate_link_fail(r, lr,
                                    NGX_HTTP_LINEGATE_STRIPE_UNAVAILABLE, -1);
        return;
    }

    lr->invoice.done = ngx_http_linegate_link_issued;
    ngx_http_linegate_invoice_issue(r, lr);
}


/* billing failed before a new invoice was stored: free the claim, answer */
static void
ngx_http_linegate_link_fail(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, ngx_uint_t result, ngx_int_t retry_after)
{
    lr->fail_result = result;
    lr->fail_retry_after = retry_after;

    ngx_http_linegate_link_abort(r, lr, ngx_http_linegate_link_failed);
}


static void
ngx_http_linegate_link_issued(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr)
{
    ngx_http_linegate_redis_args_t  *a;

    if (lr->invoice.result != NGX_HTTP_LINEGATE_STRIPE_OK) {
        lr->fail_result = lr->invoice.result;
        lr->fail_retry_after = lr->invoice.retry_after;
        lr->invoice.done = ngx_http_linegate_link_discarded;
        ngx_http_linegate_invoice_discard(r, lr);
        return;
    }

    ngx_http_linegate_lines_line_args(lr);
    a = &lr->args;

    ngx_http_linegate_redis_arg_str(a, &lr->seq);
    ngx_http_linegate_redis_arg_str(a, &lr->invoice.id);
    ngx_http_linegate_redis_arg_str(a, &lr->invoice.url);
    ngx_http_linegate_redis_arg_int(r, a, lr->now_ms);
    ngx_http_linegate_redis_arg_str(a, &lr->now_iso);

    ngx_http_linegate_lines_call(r, lr,
                                 NGX_HTTP_LINEGATE_SCRIPT_LR_REISSUE_STORE,
                                 ngx_http_linegate_link_stored);
}


static void
ngx_http_linegate_link_stored(ngx_http_request_t *r, redisReply *reply)
{
    int64_t                  code;
    ngx_str_t                s;
    ngx_http_linegate_lr_t  *lr;

    lr = ngx_http_linegate_lines_lr(r);

    if (reply != NULL
        && ngx_http_linegate_reply_int(reply, 0, &code) == NGX_OK
        && code == NGX_HTTP_LINEGATE_LR_OK)
    {
        lr->settled = 1;
        ngx_http_linegate_link_send(r, lr, 0);
        return;
    }

    if (reply == NULL) {
        lr->settled = 1;

        /*
         * Stored or not, it will be: the new invoice is kept (voiding one
         * Redis may already name would cancel the request at its next
         * check), the step sent again until Redis runs it (it is
         * idempotent), and a retry of payment_link finds the new link.
         */
        lr->fail_status = NGX_HTTP_SERVICE_UNAVAILABLE;
        ngx_http_linegate_lines_durable(r, lr,
                                    NGX_HTTP_LINEGATE_SCRIPT_LR_REISSUE_STORE,
                                    "lr_reissue_store",
                                    ngx_http_linegate_link_failed);
        return;
    }

    /* nobody will be given this invoice: void it, answer what happened */
    if (ngx_http_linegate_reply_str(reply, 1, &s) == NGX_OK
               && ngx_http_linegate_pstr(r->pool, &lr->line.status, s.data,
                                         s.len))
    {
        lr->fail_status = NGX_HTTP_CONFLICT;

    } else {
        lr->fail_status = NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    lr->invoice.done = ngx_http_linegate_link_failed;
    ngx_http_linegate_invoice_discard(r, lr);
}


static void
ngx_http_linegate_link_discarded(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr)
{
    ngx_http_linegate_link_abort(r, lr, ngx_http_linegate_link_failed);
}


static void
ngx_http_linegate_link_abort(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, ngx_http_linegate_lr_pt next)
{
    ngx_http_linegate_link_abort_args(lr, &lr->args);

    /* handed to the durable writes: the request's cleanup has no more to do */
    lr->settled = 1;

    ngx_http_linegate_lines_durable(r, lr,
                                    NGX_HTTP_LINEGATE_SCRIPT_LR_REISSUE_ABORT,
                                    "lr_reissue_abort", next);
}


static void
ngx_http_linegate_link_abort_args(ngx_http_linegate_lr_t *lr,
    ngx_http_linegate_redis_args_t *a)
{
    ngx_http_linegate_redis_args_init(a);

    ngx_http_linegate_redis_arg_str(a, &lr->ws);
    ngx_http_linegate_redis_arg_str(a, &lr->id);
    ngx_http_linegate_redis_arg_str(a, &lr->old_invoice);
}


/*
 * The request is freed (terminated: a draining worker's shutdown timeout)
 * while it reissues: its claim released and the old invoice's webhook
 * index restored by a durable write; a new invoice already made is logged
 * (nothing can ask Stripe from here).
 */
static void
ngx_http_linegate_link_cleanup(void *data)
{
    ngx_http_linegate_lines_ended(data,
                                  NGX_HTTP_LINEGATE_SCRIPT_LR_REISSUE_ABORT,
                                  "its invoice was reissued",
                                  "lr_reissue_abort of an ended request");
}


static void
ngx_http_linegate_link_recheck(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr)
{
    lr->line.invoice_id = lr->old_invoice;
    ngx_http_linegate_manage_check(r, lr, ngx_http_linegate_link_checked);
}


static void
ngx_http_linegate_link_failed(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr)
{
    switch (lr->fail_status) {

    case 0:
        ngx_http_linegate_lines_billing_error(r, lr->fail_result,
                                              lr->fail_retry_after);
        return;

    case NGX_HTTP_SERVICE_UNAVAILABLE:
        ngx_http_linegate_store_unavailable(r);
        return;

    case NGX_HTTP_CONFLICT:
        ngx_http_linegate_manage_conflict(r, &lr->line.status, NULL);
        return;

    default:
        ngx_http_linegate_internal_error(r);
        return;
    }
}


/* cancel */

static void
ngx_http_linegate_cancel_void(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr)
{
    if (ngx_http_linegate_lines_stripe(r, lr, NGX_HTTP_POST, "v1/invoices",
                                       &lr->line.invoice_id, "/void", NULL,
                                       "-void",
                                       ngx_http_linegate_cancel_voided)
        != NGX_OK)
    {
        ngx_http_linegate_manage_unavailable(r);
    }
}


static void
ngx_http_linegate_cancel_voided(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx)
{
    ngx_uint_t               result;
    ngx_http_linegate_lr_t  *lr;

    lr = ctx->data;
    result = ngx_http_linegate_stripe_result(ctx);

    if (result == NGX_HTTP_LINEGATE_STRIPE_OK) {
        ngx_http_linegate_lines_resolve(r, lr, "void",
                                        ngx_http_linegate_cancel_resolved);
        return;
    }

    if (result != NGX_HTTP_LINEGATE_STRIPE_REFUSED) {
        ngx_http_linegate_manage_stripe_error(r, ctx);
        return;
    }

    /* not voidable: paid meanwhile, or void already; ask which */
    ngx_http_linegate_manage_check(r, lr, ngx_http_linegate_cancel_checked);
}


static void
ngx_http_linegate_cancel_checked(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx)
{
    ngx_http_linegate_lr_t  *lr;

    lr = ctx->data;

    if (ngx_http_linegate_manage_invoice(r, ctx) != NGX_OK) {
        return;
    }

    if (ngx_http_linegate_line_is(&lr->invoice.status, "paid")) {
        ngx_http_linegate_lines_resolve(r, lr, "paid",
                                        ngx_http_linegate_cancel_resolved);
        return;
    }

    if (ngx_http_linegate_line_is(&lr->invoice.status, "void")) {
        ngx_http_linegate_lines_resolve(r, lr, "void",
                                        ngx_http_linegate_cancel_resolved);
        return;
    }

    ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                  NGX_HTTP_LINEGATE_LOG "invoice \"%V\" is \"%V\" and "
                  "cannot be voided", &lr->invoice.id, &lr->invoice.status);

    ngx_http_linegate_manage_unavailable(r);
}


static void
ngx_http_linegate_cancel_resolved(ngx_http_request_t *r, redisReply *reply)
{
    ngx_http_linegate_lr_t          *lr;
    ngx_http_linegate_ctx_t         *ctx;
    ngx_http_linegate_json_write_t   jw;

    lr = ngx_http_linegate_lines_lr(r);
    ctx = lr->ctx;

    if (reply == NULL) {
        /* Stripe voided it: a retry finds it void and cancels then */
        ngx_http_linegate_store_unavailable(r);
        return;
    }

    if (ngx_http_linegate_lines_resolved(r, lr, reply) != NGX_OK) {
        ngx_http_linegate_lines_not_found(r);
        return;
    }

    if (ngx_http_linegate_line_is(&lr->line.status, "canceled")) {
        ngx_str_set(&ctx->outcome, "canceled");

        (void) ngx_http_linegate_json_write_init(&jw, r->pool, 256);
        ngx_http_linegate_json_write_object(&jw);
        ngx_http_linegate_json_write_key(&jw, "success");
        ngx_http_linegate_json_write_bool(&jw, 1);
        ngx_http_linegate_json_write_key(&jw, "status");
        ngx_http_linegate_json_write_cstr(&jw, "canceled");
        ngx_http_linegate_json_write_key(&jw, "line");
        ngx_http_linegate_json_write_object(&jw);
        ngx_http_linegate_json_write_key(&jw, "_id");
        ngx_http_linegate_json_write_str(&jw, lr->id.data, lr->id.len);
        ngx_http_linegate_json_write_key(&jw, "provisioningStatus");
        ngx_http_linegate_json_write_cstr(&jw, "canceled");
        ngx_http_linegate_json_write_key(&jw, "paymentStatus");
        ngx_http_linegate_json_write_cstr(&jw, "failed");
        ngx_http_linegate_json_write_end(&jw, '}');
        ngx_http_linegate_json_write_end(&jw, '}');

        ngx_http_linegate_send_jw(r, NGX_HTTP_OK, &jw);
        return;
    }

    ngx_http_linegate_manage_conflict(r, &lr->line.status,
        ngx_http_linegate_line_is(&lr->line.status, "provisioning")
        ? "The invoice was paid meanwhile: the request is being "
          "provisioned"
        : NULL);
}
