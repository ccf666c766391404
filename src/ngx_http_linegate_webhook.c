
/*
 * linegate: Stripe webhooks (POST /webhooks/stripe).
 *
 * The Stripe-Signature header is checked on the raw body before anything
 * is parsed. Events are applied by one Redis script each, which also
 * remembers the event id, so a redelivered event is applied once. Both the
 * pre-2025 and the current payload shapes carry what is read here (the
 * invoice id, and the subscription's status, metadata and items' price).
 */


#include "ngx_http_linegate_module.h"
#include "ngx_http_linegate_crypto.h"
#include "ngx_http_linegate_chars.h"
#include "ngx_http_linegate_json.h"
#include "ngx_http_linegate_redis.h"
#include "ngx_http_linegate_keys.h"
#include "ngx_http_linegate_reply.h"
#include "ngx_http_linegate_stripe.h"
#include "ngx_http_linegate_clock.h"
#include "ngx_http_linegate_ids.h"
#include "ngx_http_linegate_headers.h"
#include "ngx_http_linegate_lines.h"
#include "ngx_http_linegate_json_write.h"
#include "ngx_http_linegate_str.h"
#include "ngx_http_linegate_lr_setup.h"


/* long enough to cover Stripe's retries, which last up to three days */
#define NGX_HTTP_LINEGATE_EVENT_MEMORY  (30 * 86400)


static ngx_int_t ngx_http_linegate_webhook_verify(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx);
/*
 * An invoice event between its two steps: the index lg:invoice:<in>
 * read (its own slot), then wh_invoice on the workspace's
 */
typedef struct {
    ngx_str_t                        event_id;
    ngx_str_t                        invoice;
    const char                      *outcome;
    int64_t                          now;
    u_char                          *iso;

    /* the request the index names, wh_invoice's arguments */
    ngx_str_t                        ws;
    ngx_str_t                        id;
    ngx_http_linegate_redis_args_t  *args;
    int                              nkeys;

    /*
     * a cluster, 'paid': the member of lg:{fleet}:lr:setup written
     * before wh_invoice, which cannot append the set-up entry itself
     * (lr_setup.h)
     */
    ngx_str_t                        setup;
} ngx_http_linegate_webhook_inv_t;


static void ngx_http_linegate_webhook_owner(ngx_http_request_t *r,
    redisReply *reply);
static void ngx_http_linegate_webhook_invoice(ngx_http_request_t *r,
    ngx_str_t *event_id, json_t *object, const char *outcome);
static void ngx_http_linegate_webhook_subscription(ngx_http_request_t *r,
    ngx_str_t *event_id, json_t *event, json_t *object, u_char kind);
static ngx_uint_t ngx_http_linegate_webhook_status_known(ngx_str_t *status);
static ngx_str_t *ngx_http_linegate_webhook_plan(ngx_http_request_t *r,
    json_t *object);
static ngx_int_t ngx_http_linegate_webhook_customer(ngx_http_request_t *r,
    json_t *object, ngx_str_t *customer);
static void ngx_http_linegate_webhook_settle(ngx_http_request_t *r,
    ngx_http_linegate_webhook_inv_t *inv);
static void ngx_http_linegate_webhook_setup_written(ngx_http_request_t *r,
    redisReply *reply);
static void ngx_http_linegate_webhook_settled(ngx_http_request_t *r,
    redisReply *reply);
static void ngx_http_linegate_webhook_relay(ngx_http_request_t *r,
    ngx_http_linegate_webhook_inv_t *inv, redisReply *reply);
static void ngx_http_linegate_webhook_lapsed(ngx_http_request_t *r,
    ngx_http_linegate_webhook_inv_t *inv, redisReply *reply);
static void ngx_http_linegate_webhook_unstored(ngx_http_request_t *r,
    ngx_http_linegate_webhook_inv_t *inv, redisReply *reply);
static void ngx_http_linegate_webhook_unapplied(ngx_http_request_t *r,
    ngx_http_linegate_webhook_inv_t *inv, redisReply *reply);
static void ngx_http_linegate_webhook_queued(ngx_http_request_t *r,
    redisReply *reply);
static void ngx_http_linegate_webhook_done(ngx_http_request_t *r,
    redisReply *reply);
static void ngx_http_linegate_webhook_ack(ngx_http_request_t *r,
    const char *note);
static u_char *ngx_http_linegate_webhook_now(ngx_http_request_t *r,
    int64_t *ms);


static ngx_str_t  ngx_http_linegate_no_plan = ngx_null_string;

/* Stripe's subscription statuses (API reference, "status") */
static ngx_str_t  ngx_http_linegate_sub_statuses[] = {
    ngx_string("incomplete"),
    ngx_string("incomplete_expired"),
    ngx_string("trialing"),
    ngx_string("active"),
    ngx_string("past_due"),
    ngx_string("canceled"),
    ngx_string("unpaid"),
    ngx_string("paused"),
    ngx_null_string
};


void
ngx_http_linegate_webhook_handler(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx)
{
    json_t      *data, *object;
    ngx_str_t    event_id, type;

    if (ngx_http_linegate_webhook_verify(r, ctx) != NGX_OK) {
        return;
    }

    ctx->auth = NGX_HTTP_LINEGATE_AUTH_STRIPE;

    if (ngx_http_linegate_json_body(r, ctx, 0) != NGX_OK) {
        return;
    }

    data = json_object_get(ctx->body, "data");
    object = json_is_object(data) ? json_object_get(data, "object") : NULL;

    if (ngx_http_linegate_json_str(ctx->body, "id", &event_id) != NGX_OK
        || !ngx_http_linegate_stripe_id_valid(&event_id)
        || ngx_http_linegate_json_str(ctx->body, "type", &type) != NGX_OK
        || !json_is_object(object))
    {
        ngx_http_linegate_field_error(r, NULL, "Malformed Stripe event");
        return;
    }

    ctx->outcome = type;

    /*
     * Stripe's types all have a '.': the webhook metric keeps an outcome
     * without one as linegate's own (bad_signature...), so a signed type
     * without one must not reach it as sent (metrics.c)
     */
    if (ngx_strlchr(type.data, type.data + type.len, '.') == NULL) {
        ngx_str_set(&ctx->outcome, "other");
    }

    if (type.len == 12 && ngx_strncmp(type.data, "invoice.paid", 12) == 0) {
        ngx_http_linegate_webhook_invoice(r, &event_id, object, "paid");
        return;
    }

    if ((type.len == 14
         && ngx_strncmp(type.data, "invoice.voided", 14) == 0)
        || (type.len == 28
            && ngx_strncmp(type.data, "invoice.marked_uncollectible", 28)
               == 0))
    {
        ngx_http_linegate_webhook_invoice(r, &event_id, object, "void");
        return;
    }

    if (type.len > 22
        && ngx_strncmp(type.data, "customer.subscription.", 22) == 0)
    {
        if ((type.len == 29
             && ngx_strncmp(type.data + 22, "created", 7) == 0)
            || (type.len == 29
                && ngx_strncmp(type.data + 22, "updated", 7) == 0)
            || (type.len == 29
                && ngx_strncmp(type.data + 22, "deleted", 7) == 0))
        {
            ngx_http_linegate_webhook_subscription(r, &event_id, ctx->body,
                object, type.data[22]);
            return;
        }
    }

    ngx_http_linegate_webhook_ack(r, "ignored");
}


static ngx_int_t
ngx_http_linegate_webhook_verify(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx)
{
    int                              rc;
    ngx_table_elt_t                 *sig;
    ngx_http_linegate_main_conf_t   *lmcf;

    lmcf = ngx_http_get_module_main_conf(r, ngx_http_linegate_module);

    sig = ngx_http_linegate_find_header(&r->headers_in.headers,
                                        "Stripe-Signature");

    rc = sig == NULL ? -1
         : ngx_http_linegate_stripe_signature_verify(
               (const char *) sig->value.data, sig->value.len,
               ctx->raw.data, ctx->raw.len,
               (const char *) lmcf->webhook_secret.data,
               lmcf->webhook_secret.len, (long) lmcf->webhook_tolerance,
               (long) ngx_time());

    if (rc == 0) {
        return NGX_OK;
    }

    ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                  NGX_HTTP_LINEGATE_LOG "Stripe webhook refused: %s",
                  sig == NULL ? "no Stripe-Signature header"
                  : rc == -3 ? "timestamp outside the tolerance"
                  : rc == -2 ? "no matching signature"
                  : "malformed Stripe-Signature header");

    ngx_str_set(&ngx_http_linegate_get_ctx(r)->outcome, "bad_signature");
    ngx_http_linegate_error(r, NGX_HTTP_BAD_REQUEST, NULL,
                            "Invalid signature");

    return NGX_ERROR;
}


static void
ngx_http_linegate_webhook_invoice(ngx_http_request_t *r,
    ngx_str_t *event_id, json_t *object, const char *outcome)
{
    ngx_str_t                         invoice, ikey;
    ngx_http_linegate_webhook_inv_t  *inv;

    if (ngx_http_linegate_json_str(object, "id", &invoice) != NGX_OK
        || !ngx_http_linegate_stripe_id_valid(&invoice))
    {
        ngx_http_linegate_field_error(r, NULL, "Malformed Stripe invoice");
        return;
    }

    inv = ngx_pcalloc(r->pool, sizeof(ngx_http_linegate_webhook_inv_t));

    if (inv == NULL
        || ngx_http_linegate_pstr(r->pool, &inv->event_id, event_id->data,
                                  event_id->len)
           == NULL
        || ngx_http_linegate_pstr(r->pool, &inv->invoice, invoice.data,
                                  invoice.len)
           == NULL
        || (inv->iso = ngx_http_linegate_webhook_now(r, &inv->now)) == NULL
        || ngx_http_linegate_key(r->pool, NGX_HTTP_LINEGATE_KEY_INVOICE,
                                 &inv->invoice, NULL, &ikey)
           != NGX_OK)
    {
        ngx_http_linegate_internal_error(r);
        return;
    }

    inv->outcome = outcome;
    ngx_http_linegate_get_ctx(r)->data = inv;

    /* which request the invoice pays: its own step, its own slot */
    if (ngx_http_linegate_redis_get(r, &ikey, ngx_http_linegate_webhook_owner)
        != NGX_OK)
    {
        ngx_http_linegate_store_unavailable(r);
    }
}


/*
 * The index read ("W:<id>"): wh_invoice settles the request on the
 * workspace's slot, the event's de-duplication under its tag. An invoice
 * the index does not know is not ours: acknowledged, not remembered.
 */
static void
ngx_http_linegate_webhook_owner(ngx_http_request_t *r, redisReply *reply)
{
    u_char                           *sep;
    ngx_str_t                         owner, ws, id, ekey, wkey;
    ngx_str_t                         keys[
                                          NGX_HTTP_LINEGATE_KEYS_LR_REQUEST];
    ngx_http_linegate_redis_args_t   *a, ma;
    ngx_http_linegate_main_conf_t    *lmcf;
    ngx_http_linegate_webhook_inv_t  *inv;

    inv = ngx_http_linegate_get_ctx(r)->data;

    if (reply == NULL) {
        /* Stripe retries a non-2xx delivery: nothing is lost */
        ngx_http_linegate_store_unavailable(r);
        return;
    }

    if (reply->type == REDIS_REPLY_NIL) {
        ngx_http_linegate_webhook_ack(r, "unknown");
        return;
    }

    if (reply->type != REDIS_REPLY_STRING
        || ngx_http_linegate_pstr(r->pool, &owner, (u_char *) reply->str,
                                  reply->len)
           == NULL)
    {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      NGX_HTTP_LINEGATE_LOG "unexpected invoice index "
                      "reply of type %d", reply->type);
        ngx_http_linegate_internal_error(r);
        return;
    }

    /* ids never contain ':', but split at the last one all the same */
    for (sep = owner.data + owner.len; sep > owner.data; sep--) {
        if (sep[-1] == ':') {
            break;
        }
    }

    if (sep <= owner.data + 1 || sep == owner.data + owner.len) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      NGX_HTTP_LINEGATE_LOG "invoice \"%V\" indexed as "
                      "\"%V\": not \"<workspace>:<id>\"", &inv->invoice,
                      &owner);
        ngx_http_linegate_webhook_ack(r, "unknown");
        return;
    }

    ws.data = owner.data;
    ws.len = sep - 1 - owner.data;
    id.data = sep;
    id.len = owner.data + owner.len - sep;
    inv->ws = ws;
    inv->id = id;

    a = ngx_palloc(r->pool, sizeof(ngx_http_linegate_redis_args_t));

    if (a == NULL
        || ngx_http_linegate_key(r->pool, NGX_HTTP_LINEGATE_KEY_WS_EVENT,
                                 &ws, &inv->event_id, &ekey)
           != NGX_OK
        || ngx_http_linegate_key(r->pool, NGX_HTTP_LINEGATE_KEY_WS, &ws, NULL,
                                 &wkey)
           != NGX_OK
        || ngx_http_linegate_key_request(r->pool, &ws, &id, NULL, keys)
           != NGX_OK)
    {
        ngx_http_linegate_internal_error(r);
        return;
    }

    lmcf = ngx_http_get_module_main_conf(r, ngx_http_linegate_module);

    /*
     * the event, the request's keys (lr_settle's), the workspace (its
     * customer, for a request that keeps none), the stream on one Redis
     * only (on a cluster it is another slot: lr_setup.h)
     */
    ngx_http_linegate_redis_args_init(a);
    ngx_http_linegate_redis_arg_str(a, &ekey);
    ngx_http_linegate_redis_arg_strs(a, keys,
                                     NGX_HTTP_LINEGATE_KEYS_LR_REQUEST);
    ngx_http_linegate_redis_arg_str(a, &wkey);
    inv->nkeys = 2 + NGX_HTTP_LINEGATE_KEYS_LR_REQUEST;

    if (!lmcf->redis_cluster) {
        ngx_http_linegate_redis_arg_str(a,
            ngx_http_linegate_key_fixed(NGX_HTTP_LINEGATE_KEY_PROVISIONING));
        inv->nkeys++;
    }

    ngx_http_linegate_redis_arg_str(a, &inv->invoice);
    ngx_http_linegate_redis_arg_cstr(a, inv->outcome);
    ngx_http_linegate_redis_arg_int(r, a, inv->now);
    ngx_http_linegate_redis_arg(a, inv->iso, NGX_HTTP_LINEGATE_ISO_LEN);
    ngx_http_linegate_redis_arg_int(r, a, NGX_HTTP_LINEGATE_EVENT_MEMORY);
    ngx_http_linegate_redis_arg_str(a, &ws);
    ngx_http_linegate_redis_arg_str(a, &id);
    ngx_http_linegate_redis_arg_cstr(a, lmcf->redis_cluster ? "c" : "w");

    inv->args = a;

    if (!lmcf->redis_cluster || ngx_strcmp(inv->outcome, "paid") != 0) {
        ngx_http_linegate_webhook_settle(r, inv);
        return;
    }

    /* a cluster, 'paid': the set-up member first, the fleet's slot */
    if (ngx_http_linegate_lr_setup_member(r->pool, &ws, &id, &inv->setup)
        != NGX_OK)
    {
        ngx_http_linegate_internal_error(r);
        return;
    }

    ngx_http_linegate_lr_setup_add_args(r, &ma, &inv->setup);

    if (ngx_http_linegate_redis_command(r, &ma,
                                        ngx_http_linegate_webhook_setup_written)
        != NGX_OK)
    {
        ngx_http_linegate_store_unavailable(r);
    }
}


/* wh_invoice, on the workspace's keys */
static void
ngx_http_linegate_webhook_settle(ngx_http_request_t *r,
    ngx_http_linegate_webhook_inv_t *inv)
{
    if (ngx_http_linegate_redis_script(r, NGX_HTTP_LINEGATE_SCRIPT_WH_INVOICE,
                                       inv->nkeys, inv->args,
                                       ngx_http_linegate_webhook_settled)
        != NGX_OK)
    {
        (void) ngx_http_linegate_lr_setup_drop(r->connection->log,
                                               &inv->setup);
        ngx_http_linegate_store_unavailable(r);
    }
}


/* the set-up member written: wh_invoice; not: 503, Stripe retries */
static void
ngx_http_linegate_webhook_setup_written(ngx_http_request_t *r,
    redisReply *reply)
{
    ngx_http_linegate_webhook_inv_t  *inv;

    inv = ngx_http_linegate_get_ctx(r)->data;

    if (reply == NULL || reply->type != REDIS_REPLY_INTEGER) {
        /* written or not, it goes: wh_invoice was never sent */
        (void) ngx_http_linegate_lr_setup_drop(r->connection->log,
                                               &inv->setup);
        ngx_http_linegate_store_unavailable(r);
        return;
    }

    ngx_http_linegate_webhook_settle(r, inv);
}


/* wh_invoice answered: the set-up entry relayed (a cluster), the ack */
static void
ngx_http_linegate_webhook_settled(ngx_http_request_t *r, redisReply *reply)
{
    int64_t                           code;
    ngx_http_linegate_webhook_inv_t  *inv;

    inv = ngx_http_linegate_get_ctx(r)->data;

    ngx_http_linegate_webhook_relay(r, inv, reply);

    if (reply != NULL
        && ngx_http_linegate_reply_int(reply, 0, &code) == NGX_OK
        && code == 8)
    {
        ngx_http_linegate_webhook_unapplied(r, inv, reply);
        return;
    }

    ngx_http_linegate_webhook_lapsed(r, inv, reply);
    ngx_http_linegate_webhook_unstored(r, inv, reply);
    ngx_http_linegate_webhook_done(r, reply);
}


/*
 * {8, customer}: the invoice a canceled request names was paid (Stripe
 * lets an uncollectible one be paid later). SPEC 2.3 has no way out of
 * canceled: the request, its workspace's indexes and counts stay as they
 * are, and the payment is queued for a human (paid_after_cancel, lines.h)
 * before the 200, waited for (lr_invoice_orphan is acknowledged): not
 * queued, 503 and Stripe delivers the event again, which wh_invoice did
 * not remember; queued before (a redelivery), its marker answers 0
 */
static void
ngx_http_linegate_webhook_unapplied(ngx_http_request_t *r,
    ngx_http_linegate_webhook_inv_t *inv, redisReply *reply)
{
    u_char                          *p;
    ngx_str_t                        customer, which, mkey;
    ngx_http_linegate_redis_args_t  *a;

    if (ngx_http_linegate_reply_str(reply, 1, &customer) != NGX_OK) {
        ngx_http_linegate_internal_error(r);
        return;
    }

    which.len = sizeof(NGX_HTTP_LINEGATE_LR_PAID_MARKER) - 1
                + inv->invoice.len;
    which.data = ngx_pnalloc(r->pool, which.len);
    a = ngx_palloc(r->pool, sizeof(ngx_http_linegate_redis_args_t));

    if (which.data == NULL || a == NULL
        || ngx_http_linegate_pstr(r->pool, &customer, customer.data,
                                  customer.len)
           == NULL)
    {
        ngx_http_linegate_internal_error(r);
        return;
    }

    p = ngx_cpymem(which.data, NGX_HTTP_LINEGATE_LR_PAID_MARKER,
                   sizeof(NGX_HTTP_LINEGATE_LR_PAID_MARKER) - 1);
    ngx_memcpy(p, inv->invoice.data, inv->invoice.len);

    if (ngx_http_linegate_key(r->pool, NGX_HTTP_LINEGATE_KEY_FLEET_Q,
                              &inv->ws, &which, &mkey)
        != NGX_OK)
    {
        ngx_http_linegate_internal_error(r);
        return;
    }

    /* lr_invoice_orphan's: the marker, the stream, then the entry */
    ngx_http_linegate_redis_args_init(a);
    ngx_http_linegate_redis_arg_str(a, &mkey);
    ngx_http_linegate_redis_arg_str(a,
        ngx_http_linegate_key_fixed(NGX_HTTP_LINEGATE_KEY_RECONCILE));
    ngx_http_linegate_redis_arg_str(a, &inv->ws);
    ngx_http_linegate_redis_arg_str(a, &inv->id);
    ngx_http_linegate_redis_arg_str(a, &inv->invoice);
    ngx_http_linegate_redis_arg_str(a, &customer);
    ngx_http_linegate_redis_arg(a, inv->iso, NGX_HTTP_LINEGATE_ISO_LEN);
    ngx_http_linegate_redis_arg_cstr(a, NGX_HTTP_LINEGATE_LR_PAID_REASON);

    if (ngx_http_linegate_redis_script(r,
                                   NGX_HTTP_LINEGATE_SCRIPT_LR_INVOICE_ORPHAN,
                                   2, a, ngx_http_linegate_webhook_queued)
        != NGX_OK)
    {
        ngx_http_linegate_store_unavailable(r);
    }
}


/* lr_invoice_orphan answered: 1 queued now, 0 queued before */
static void
ngx_http_linegate_webhook_queued(ngx_http_request_t *r, redisReply *reply)
{
    ngx_uint_t                        level;
    ngx_http_linegate_webhook_inv_t  *inv;

    inv = ngx_http_linegate_get_ctx(r)->data;

    if (reply == NULL || reply->type != REDIS_REPLY_INTEGER) {
        /* Stripe retries a non-2xx delivery: nothing is lost */
        ngx_http_linegate_store_unavailable(r);
        return;
    }

    level = reply->integer == 1 ? NGX_LOG_WARN : NGX_LOG_NOTICE;

    ngx_log_error(level, r->connection->log, 0,
                  NGX_HTTP_LINEGATE_LOG "invoice \"%V\" of line request "
                  "\"%V\" of workspace \"%V\" is paid, but the request "
                  "was canceled: not reopened, %s for reconciliation ("
                  NGX_HTTP_LINEGATE_LR_PAID_REASON "), left for a human",
                  &inv->invoice, &inv->id, &inv->ws,
                  reply->integer == 1 ? "queued" : "queued before");

    ngx_http_linegate_webhook_ack(r, "unapplied");
}


/*
 * A cluster, 'paid': {3, "provisioning", 1, channelType, lineType} is
 * wh_invoice's report of a line promoted: its entry is appended, then
 * the member goes; any other answer made no entry: the member goes.
 * Unanswered, the member stays for the reconciliation's sweep.
 */
static void
ngx_http_linegate_webhook_relay(ngx_http_request_t *r,
    ngx_http_linegate_webhook_inv_t *inv, redisReply *reply)
{
    int64_t                        code, changed;
    ngx_str_t                      status;
    ngx_http_linegate_lr_setup_t   e;

    if (inv->setup.len == 0 || reply == NULL) {
        return;
    }

    if (ngx_http_linegate_reply_int(reply, 0, &code) != NGX_OK
        || code != 3
        || ngx_http_linegate_reply_int(reply, 2, &changed) != NGX_OK
        || changed != 1
        || ngx_http_linegate_reply_str(reply, 1, &status) != NGX_OK
        || status.len != sizeof("provisioning") - 1
        || ngx_strncmp(status.data, "provisioning", status.len) != 0
        || ngx_http_linegate_reply_str(reply, 3, &e.channel_type) != NGX_OK
        || ngx_http_linegate_reply_str(reply, 4, &e.line_type) != NGX_OK)
    {
        (void) ngx_http_linegate_lr_setup_drop(r->connection->log,
                                               &inv->setup);
        return;
    }

    /* the relay copies what it sends: the reply's strings may go */
    e.workspace = inv->ws;
    e.id = inv->id;
    e.at.data = inv->iso;
    e.at.len = NGX_HTTP_LINEGATE_ISO_LEN;

    (void) ngx_http_linegate_lr_setup_relay(r->connection->log, &e,
                                            &inv->setup);
}


/*
 * {3, status, changed, .., claim 1, customer, from, to} or, an event
 * seen before (its redelivery), {0, 1, customer, from, to}: the request
 * is marked sweepPending (lr_settle: it ended while it held a
 * payment_link's claim, which may have lapsed with an invoice left
 * unstored at Stripe): queued for a reconciliation run (lines_lapsed),
 * as lr_resolve's callers do, the mark cleared once queued
 */
static void
ngx_http_linegate_webhook_lapsed(ngx_http_request_t *r,
    ngx_http_linegate_webhook_inv_t *inv, redisReply *reply)
{
    int        i;
    int64_t    code, claim;
    ngx_str_t  customer, from, to;

    if (reply == NULL
        || ngx_http_linegate_reply_int(reply, 0, &code) != NGX_OK
        || (code != 3 && code != 0))
    {
        return;
    }

    i = code == 3 ? 6 : 1;

    if (ngx_http_linegate_reply_int(reply, i, &claim) != NGX_OK
        || claim != 1
        || ngx_http_linegate_reply_str(reply, i + 1, &customer) != NGX_OK
        || ngx_http_linegate_reply_str(reply, i + 2, &from) != NGX_OK)
    {
        return;
    }

    /* sweepPendingTo: absent from an older script's answer */
    if (ngx_http_linegate_reply_str(reply, i + 3, &to) != NGX_OK) {
        ngx_str_null(&to);
    }

    ngx_http_linegate_lines_lapsed(r->connection->log, &inv->ws, &inv->id,
                                   &customer, &from, &to);
}


static void
ngx_http_linegate_webhook_subscription(ngx_http_request_t *r,
    ngx_str_t *event_id, json_t *event, json_t *object, u_char kind)
{
    u_char                          *iso;
    int64_t                          now;
    json_t                          *meta, *created;
    ngx_str_t                        ws, status, *plan, ekey, wkey, sub, skey;
    ngx_str_t                       *customer;
    ngx_http_linegate_redis_args_t  *a;
    ngx_http_linegate_main_conf_t   *lmcf;

    meta = json_object_get(object, "metadata");

    if (ngx_http_linegate_json_str(meta, "workspace_id", &ws) != NGX_OK) {
        /* not one of ours: the provisioning API's subscriptions, say */
        ngx_http_linegate_webhook_ack(r, "ignored");
        return;
    }

    /*
     * The workspace goes into its keys' hash tag: no "}" may end it
     * early. An id no workspace can have ("Acme Corp", typed in Stripe's
     * dashboard) is not ours: acknowledged, as Stripe retries a 400 for
     * three days (and disables an endpoint that keeps failing) with the
     * same answer each time. Not logged as sent: it is free text.
     */
    if (!ngx_http_linegate_tenant_id_valid(ws.data, ws.len)) {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      NGX_HTTP_LINEGATE_LOG "Stripe subscription event "
                      "whose metadata.workspace_id is no workspace id "
                      "(%uz bytes): ignored", ws.len);
        ngx_http_linegate_webhook_ack(r, "ignored");
        return;
    }

    /*
     * A status missing, not a string or with a NUL is no subscription of
     * Stripe's: 400. One empty or too long to be Stripe's is a string
     * all the same, judged below with any other status Stripe does not
     * have (acknowledged: a 400 would be retried for three days).
     */
    if (ngx_http_linegate_json_str(object, "status", &status) != NGX_OK
        || ngx_http_linegate_json_str(object, "id", &sub) != NGX_OK
        || !ngx_http_linegate_stripe_id_valid(&sub))
    {
        ngx_http_linegate_field_error(r, NULL,
                                      "Malformed Stripe subscription");
        return;
    }

    /*
     * The workspace's events are ordered by created (wh_subscription):
     * one without it would be applied as now, and one from the future
     * would make every later event stale, the workspace frozen until
     * then.
     * Stripe creates an event before it signs a delivery of it, and the
     * signature is within the tolerance of now: a created past now and
     * the tolerance is no event of Stripe's. Only the endpoint's secret
     * signs events, so this is defence in depth: 400, nothing written.
     */
    created = json_object_get(event, "created");

    if (!json_is_integer(created)) {
        ngx_http_linegate_field_error(r, NULL, "Malformed Stripe event");
        return;
    }

    lmcf = ngx_http_get_module_main_conf(r, ngx_http_linegate_module);

    if (json_integer_value(created)
        > (json_int_t) ngx_time() + (json_int_t) lmcf->webhook_tolerance)
    {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      NGX_HTTP_LINEGATE_LOG "Stripe subscription event "
                      "\"%V\" created at %L, past now and "
                      "linegate_webhook_tolerance: refused", event_id,
                      (int64_t) json_integer_value(created));
        ngx_http_linegate_field_error(r, NULL,
                                      "Stripe event created in the future");
        return;
    }

    if (kind == 'd') {
        ngx_str_set(&status, "canceled");
    }

    /*
     * The status is stored and shown (GET /workspaces) as sent: one that
     * Stripe does not have is not applied. Acknowledged like an id no
     * workspace can have, as Stripe would retry a 400 for three days
     * with the same answer each time; its bytes are not logged.
     */
    if (!ngx_http_linegate_webhook_status_known(&status)) {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      NGX_HTTP_LINEGATE_LOG "Stripe subscription event "
                      "\"%V\" for workspace \"%V\" with a status that is "
                      "no Stripe subscription status (%uz bytes): ignored",
                      event_id, &ws, status.len);
        ngx_http_linegate_webhook_ack(r, "ignored");
        return;
    }

    plan = ngx_http_linegate_webhook_plan(r, object);

    a = ngx_palloc(r->pool, sizeof(ngx_http_linegate_redis_args_t));
    customer = ngx_palloc(r->pool, sizeof(ngx_str_t));
    iso = ngx_http_linegate_webhook_now(r, &now);

    if (a == NULL || iso == NULL || customer == NULL
        || ngx_http_linegate_webhook_customer(r, object, customer) != NGX_OK
        || ngx_http_linegate_key(r->pool, NGX_HTTP_LINEGATE_KEY_WS_EVENT,
                                 &ws, event_id, &ekey)
           != NGX_OK
        || ngx_http_linegate_key(r->pool, NGX_HTTP_LINEGATE_KEY_WS, &ws,
                                 NULL, &wkey)
           != NGX_OK
        || ngx_http_linegate_key(r->pool, NGX_HTTP_LINEGATE_KEY_WS_SUBEND,
                                 &ws, NULL, &skey)
           != NGX_OK)
    {
        ngx_http_linegate_internal_error(r);
        return;
    }

    ngx_http_linegate_get_ctx(r)->tenant = ws;
    ngx_http_linegate_get_ctx(r)->data = customer;

    ngx_http_linegate_redis_args_init(a);
    ngx_http_linegate_redis_arg_str(a, &ekey);
    ngx_http_linegate_redis_arg_str(a, &wkey);
    ngx_http_linegate_redis_arg_str(a, &skey);
    ngx_http_linegate_redis_arg_str(a, &status);
    ngx_http_linegate_redis_arg_str(a, plan);
    ngx_http_linegate_redis_arg_int(r, a, json_integer_value(created));
    ngx_http_linegate_redis_arg(a, iso, NGX_HTTP_LINEGATE_ISO_LEN);
    ngx_http_linegate_redis_arg_int(r, a, NGX_HTTP_LINEGATE_EVENT_MEMORY);
    ngx_http_linegate_redis_arg_str(a, &sub);

    /* a subscription's events of one second: created, updated, deleted */
    ngx_http_linegate_redis_arg_cstr(a, kind == 'c' ? "0"
                                        : kind == 'u' ? "1" : "2");

    /* compared with the workspace's stripeCustomerId by the script */
    ngx_http_linegate_redis_arg_str(a, customer);

    /* how long an end seen is kept: nginx's clock, as for the event id */
    ngx_http_linegate_redis_arg_int(r, a, now / 1000);

    if (ngx_http_linegate_redis_script(r,
                                       NGX_HTTP_LINEGATE_SCRIPT_WH_SUBSCRIPTION,
                                       3, a,
                                       ngx_http_linegate_webhook_done)
        != NGX_OK)
    {
        ngx_http_linegate_store_unavailable(r);
    }
}


static ngx_uint_t
ngx_http_linegate_webhook_status_known(ngx_str_t *status)
{
    ngx_str_t  *s;

    for (s = ngx_http_linegate_sub_statuses; s->len; s++) {
        if (s->len == status->len
            && ngx_strncmp(s->data, status->data, s->len) == 0)
        {
            return 1;
        }
    }

    return 0;
}


/*
 * The subscription's customer: an id ("cus_..."), or the customer object
 * when the event was built with it expanded. Anything else is no
 * customer (''), which no workspace's stripeCustomerId matches. The
 * copy outlives the event's JSON, for the log of a refusal.
 */
static ngx_int_t
ngx_http_linegate_webhook_customer(ngx_http_request_t *r, json_t *object,
    ngx_str_t *customer)
{
    json_t     *c;
    ngx_str_t   id;

    c = json_object_get(object, "customer");
    if (json_is_object(c)) {
        c = json_object_get(c, "id");
    }

    ngx_str_null(customer);

    if (!json_is_string(c)) {
        return NGX_OK;
    }

    id.data = (u_char *) json_string_value(c);
    id.len = json_string_length(c);

    if (!ngx_http_linegate_stripe_id_valid(&id)) {
        return NGX_OK;
    }

    return ngx_http_linegate_pstr(r->pool, customer, id.data, id.len)
           == NULL ? NGX_ERROR : NGX_OK;
}


/*
 * The plan of the first item whose price is in the configured map. The
 * price id is at items.data[i].price.id in every API version; older
 * payloads also have items.data[i].plan.id, read as a fallback.
 */
static ngx_str_t *
ngx_http_linegate_webhook_plan(ngx_http_request_t *r, json_t *object)
{
    size_t                           i;
    json_t                          *items, *item, *price;
    ngx_str_t                        id;
    ngx_uint_t                       k;
    ngx_http_linegate_plan_price_t  *pp;
    ngx_http_linegate_main_conf_t   *lmcf;

    lmcf = ngx_http_get_module_main_conf(r, ngx_http_linegate_module);

    if (lmcf->plan_prices == NULL) {
        return &ngx_http_linegate_no_plan;
    }

    items = json_object_get(json_object_get(object, "items"), "data");
    pp = lmcf->plan_prices->elts;

    json_array_foreach(items, i, item) {
        price = json_object_get(item, "price");
        if (!json_is_object(price)) {
            price = json_object_get(item, "plan");
        }

        if (ngx_http_linegate_json_str(price, "id", &id) != NGX_OK) {
            continue;
        }

        for (k = 0; k < lmcf->plan_prices->nelts; k++) {
            if (pp[k].price.len == id.len
                && ngx_strncmp(pp[k].price.data, id.data, id.len) == 0)
            {
                return &pp[k].plan;
            }
        }
    }

    return &ngx_http_linegate_no_plan;
}


/*
 * {5, reservedAt}: the request does not name the invoice yet. Its
 * creation may still store it (a store sent again lands seconds later),
 * so the event is refused and Stripe delivers it again. Past
 * linegate_reconcile_lost_after no creation is at it any more: its worker
 * died between the invoice's index and its store, and only a
 * reconciliation run settles the request (the invoice found paid: the
 * request promoted; else discarded). Without runs every delivery is
 * refused until Stripe gives up (3 days), a paid invoice with no line:
 * said at warn, so that an operator knows a run is owed.
 */
static void
ngx_http_linegate_webhook_unstored(ngx_http_request_t *r,
    ngx_http_linegate_webhook_inv_t *inv, redisReply *reply)
{
    int64_t                         code;
    ngx_int_t                       at;
    ngx_str_t                       s;
    ngx_http_linegate_main_conf_t  *lmcf;

    if (reply == NULL
        || ngx_http_linegate_reply_int(reply, 0, &code) != NGX_OK
        || code != 5
        || ngx_http_linegate_reply_str(reply, 1, &s) != NGX_OK)
    {
        return;
    }

    at = ngx_atoi(s.data, s.len);
    lmcf = ngx_http_get_module_main_conf(r, ngx_http_linegate_module);

    if (at == NGX_ERROR || inv->now - at <= (int64_t) lmcf->reconcile_lost) {
        /* its creation may still store it */
        return;
    }

    ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                  NGX_HTTP_LINEGATE_LOG "invoice \"%V\" (%s) of line request "
                  "\"%V\" of workspace \"%V\", reserved %L s ago: its "
                  "creation died before storing it; refused until a "
                  "reconciliation run settles the request "
                  "(linegate_reconcile_auto, or POST reconciliation/run)",
                  &inv->invoice, inv->outcome,
                  &inv->id, &inv->ws, (inv->now - at) / 1000);
}


static void
ngx_http_linegate_webhook_done(ngx_http_request_t *r, redisReply *reply)
{
    int64_t  code;

    if (reply == NULL) {
        /* Stripe retries a non-2xx delivery: nothing is lost */
        ngx_http_linegate_store_unavailable(r);
        return;
    }

    if (ngx_http_linegate_reply_int(reply, 0, &code) != NGX_OK) {
        ngx_http_linegate_internal_error(r);
        return;
    }

    /* wh_subscription's own answers: an invoice event's data is not a str */
    if ((code == 6 || code == 7)
        && ngx_http_linegate_get_ctx(r)->tenant.len == 0)
    {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      NGX_HTTP_LINEGATE_LOG "unexpected answer %L of an "
                      "invoice event's script", code);
        ngx_http_linegate_internal_error(r);
        return;
    }

    switch (code) {

    case 0:
        ngx_http_linegate_webhook_ack(r, "duplicate");
        return;

    case 1:
        if (ngx_http_linegate_get_ctx(r)->tenant.len) {
            /*
             * A subscription event for a workspace that does not exist
             * yet (the event came before the operator created it): not
             * marked as seen, refused so that Stripe delivers it again
             * and it is applied once the workspace is there.
             */
            ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                          NGX_HTTP_LINEGATE_LOG "Stripe subscription event "
                          "for unknown workspace \"%V\": refused, Stripe "
                          "retries it", &ngx_http_linegate_get_ctx(r)->tenant);
            ngx_http_linegate_error(r, NGX_HTTP_CONFLICT,
                                    "WORKSPACE_UNKNOWN",
                                    "Unknown workspace: the event is applied "
                                    "when Stripe delivers it again once the "
                                    "workspace exists");
            return;
        }

        ngx_http_linegate_webhook_ack(r, "unknown");
        return;

    case 2:
        ngx_http_linegate_webhook_ack(r, "stale");
        return;

    case 6:
        /*
         * The workspace has no Stripe customer to compare the event's
         * with: not applied, not remembered; refused so that Stripe
         * delivers it again once the operator set stripeCustomerId.
         */
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      NGX_HTTP_LINEGATE_LOG "Stripe subscription event "
                      "for workspace \"%V\", which has no "
                      "stripeCustomerId: refused, Stripe retries it",
                      &ngx_http_linegate_get_ctx(r)->tenant);
        ngx_http_linegate_error(r, NGX_HTTP_CONFLICT, "CUSTOMER_UNKNOWN",
                                "The workspace has no Stripe customer: the "
                                "event is applied when Stripe delivers it "
                                "again once the workspace has one");
        return;

    case 7:
        /*
         * Another customer's subscription naming the workspace in its
         * metadata (writable in Stripe's dashboard): never applied.
         * Acknowledged, since Stripe's retries cannot change the answer
         * (a non-2xx would be retried for three days and count against
         * the endpoint); not remembered, so that a delivery resent by
         * hand once stripeCustomerId is corrected applies.
         */
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      NGX_HTTP_LINEGATE_LOG "Stripe subscription event of "
                      "customer \"%V\" for workspace \"%V\", whose "
                      "stripeCustomerId differs: refused",
                      (ngx_str_t *) ngx_http_linegate_get_ctx(r)->data,
                      &ngx_http_linegate_get_ctx(r)->tenant);
        ngx_http_linegate_webhook_ack(r, "refused");
        return;

    case 4:
        /* not remembered: applied or found stale when delivered again */
        ngx_http_linegate_error(r, NGX_HTTP_CONFLICT, "REISSUE_PENDING",
                                "The request's invoice is being reissued: "
                                "the event is applied when Stripe delivers "
                                "it again");
        return;

    case 5:
        /*
         * the request is to name the invoice once its store lands (sent
         * again, durable): acknowledged now, the event would be lost
         */
        ngx_http_linegate_error(r, NGX_HTTP_CONFLICT, "INVOICE_PENDING",
                                "The invoice is not yet stored on its line "
                                "request: the event is applied when Stripe "
                                "delivers it again");
        return;

    default:
        ngx_http_linegate_webhook_ack(r, NULL);
        return;
    }
}


static void
ngx_http_linegate_webhook_ack(ngx_http_request_t *r, const char *note)
{
    ngx_http_linegate_json_write_t  jw;

    (void) ngx_http_linegate_json_write_init(&jw, r->pool, 64);
    ngx_http_linegate_json_write_object(&jw);
    ngx_http_linegate_json_write_key(&jw, "received");
    ngx_http_linegate_json_write_bool(&jw, 1);

    if (note != NULL) {
        ngx_http_linegate_json_write_keyn(&jw, note, ngx_strlen(note));
        ngx_http_linegate_json_write_bool(&jw, 1);
    }

    ngx_http_linegate_json_write_end(&jw, '}');

    ngx_http_linegate_send_jw(r, NGX_HTTP_OK, &jw);
}


static u_char *
ngx_http_linegate_webhook_now(ngx_http_request_t *r, int64_t *ms)
{
    u_char  *iso;

    *ms = ngx_http_linegate_now_ms();

    iso = ngx_pnalloc(r->pool, NGX_HTTP_LINEGATE_ISO_LEN);
    if (iso != NULL) {
        (void) ngx_http_linegate_iso8601(iso, *ms);
    }

    return iso;
}
