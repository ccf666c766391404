
/*
 * linegate: the Lines request (ngx_http_linegate_lr_t, lines.h), what
 * every endpoint of the Lines API drives: the common head of the scripts
 * (credential and request rate: lines_gate), the call of a script and
 * its durability (WAIT, lines_durable), the errors a request defers until
 * the rate is counted, the line object (parsed from its hash, written as
 * SPEC 2.8 JSON), the error bodies, and the reading of Stripe's answers.
 * The endpoints (lines.c: dispatch and reads; line_create.c;
 * line_manage.c) call this file; it calls none of them.
 */


#include "ngx_http_linegate_module.h"
#include "ngx_http_linegate_lines.h"
#include "ngx_http_linegate_metrics.h"
#include "ngx_http_linegate_json.h"
#include "ngx_http_linegate_reply.h"
#include "ngx_http_linegate_ratelimit.h"
#include "ngx_http_linegate_scripts.h"
#include "ngx_http_linegate_clock.h"
#include "ngx_http_linegate_ids.h"


typedef struct {
    ngx_str_t                       name;
    size_t                          offset;
} ngx_http_linegate_line_field_t;


#define ngx_http_linegate_line_field(name, field)                           \
    { ngx_string(name), offsetof(ngx_http_linegate_line_t, field) }


static ngx_int_t ngx_http_linegate_line_read(ngx_pool_t *pool,
    ngx_http_linegate_lr_t *lr, redisReply *flat,
    ngx_http_linegate_line_t *line);
static void ngx_http_linegate_lines_resolve_setup(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, ngx_http_linegate_redis_handler_pt handler);
static void ngx_http_linegate_lines_resolve_setup_written(
    ngx_http_request_t *r, redisReply *reply);
static void ngx_http_linegate_lines_resolve_relay(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, int64_t changed, ngx_int_t parsed);
static void ngx_http_linegate_lines_released(redisReply *reply,
    ngx_http_linegate_redis_args_t *args, ngx_str_t *note);
/*
 * what lines_queue queues: invoice_unrepaired, reissue_lapsed, paid
 * (paid_after_cancel), and a paid invoice left for a human (reason
 * invoice_unrepaired, its marker inv_<in>: one entry per invoice)
 */
#define NGX_HTTP_LINEGATE_LQ_UNREPAIRED  0
#define NGX_HTTP_LINEGATE_LQ_LAPSED      1
#define NGX_HTTP_LINEGATE_LQ_PAID        2
#define NGX_HTTP_LINEGATE_LQ_LEFT        3

static void ngx_http_linegate_lines_queue(ngx_log_t *log, ngx_str_t *ws,
    ngx_str_t *id, ngx_str_t *invoice, ngx_str_t *customer, ngx_str_t *at,
    ngx_str_t *to, ngx_uint_t kind);
static void ngx_http_linegate_lines_queue_now(ngx_log_t *log, ngx_str_t *ws,
    ngx_str_t *id, ngx_str_t *invoice, ngx_str_t *customer, ngx_uint_t kind);
static void ngx_http_linegate_lines_resolved_paid(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, ngx_str_t *invoice, redisReply *flat);
static void ngx_http_linegate_lines_lapsed_queue(ngx_log_t *log,
    ngx_str_t *ws, ngx_str_t *id, ngx_str_t *customer, ngx_str_t *from,
    ngx_str_t *to);
static ngx_int_t ngx_http_linegate_lines_lapsed_ws(ngx_log_t *log,
    ngx_str_t *ws, ngx_str_t *id, ngx_str_t *from, ngx_str_t *to);
static void ngx_http_linegate_lines_lapsed_customer(redisReply *reply,
    ngx_http_linegate_redis_args_t *args, ngx_str_t *note);
static void ngx_http_linegate_lines_lapsed_queued(redisReply *reply,
    ngx_http_linegate_redis_args_t *args, ngx_str_t *note);
static void ngx_http_linegate_lines_left_queued(redisReply *reply,
    ngx_http_linegate_redis_args_t *args, ngx_str_t *note);
static void ngx_http_linegate_lines_paid_queued(redisReply *reply,
    ngx_http_linegate_redis_args_t *args, ngx_str_t *note);
static ngx_int_t ngx_http_linegate_lines_queued_of(redisReply *reply,
    ngx_http_linegate_redis_args_t *args, ngx_str_t *ws, ngx_str_t *id,
    ngx_str_t *invoice);


static ngx_http_linegate_line_field_t  ngx_http_linegate_line_fields[] = {
    ngx_http_linegate_line_field("firstName", first_name),
    ngx_http_linegate_line_field("lastName", last_name),
    ngx_http_linegate_line_field("channelType", channel_type),
    ngx_http_linegate_line_field("lineType", line_type),
    ngx_http_linegate_line_field("phone", phone),
    ngx_http_linegate_line_field("email", email),
    ngx_http_linegate_line_field("forwardCallsTo", forward_calls_to),
    ngx_http_linegate_line_field("profileImageUrl", profile_image_url),
    ngx_http_linegate_line_field("zipcode", zipcode),
    ngx_http_linegate_line_field("state", state),
    ngx_http_linegate_line_field("provisioningStatus", status),
    ngx_http_linegate_line_field("paymentStatus", payment_status),
    ngx_http_linegate_line_field("paymentUrl", payment_url),
    ngx_http_linegate_line_field("invoiceId", invoice_id),
    ngx_http_linegate_line_field("healthStatus", health_status),
    ngx_http_linegate_line_field("healthCheckedAt", health_checked_at),
    ngx_http_linegate_line_field("createdAt", created_at),
    ngx_http_linegate_line_field("updatedAt", updated_at),
    ngx_http_linegate_line_field("_id", id),
    ngx_http_linegate_line_field("_ud", usage_date),
    ngx_http_linegate_line_field("_nc", conversations),
    ngx_http_linegate_line_field("_tm", messages),
    { ngx_null_string, 0 }
};


void
ngx_http_linegate_lines_send_status(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr)
{
    ngx_http_linegate_json_write_t  jw;

    (void) ngx_http_linegate_json_write_init(&jw, r->pool,
                                             NGX_HTTP_LINEGATE_LINE_JSON_SIZE);
    ngx_http_linegate_line_status_jw(&jw, r, &lr->line);

    ngx_http_linegate_send_jw(r, NGX_HTTP_OK, &jw);
}


/* scripts: arguments, the call, durability, the gate */

void
ngx_http_linegate_lines_args(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr)
{
    ngx_uint_t                       mode;
    ngx_http_linegate_redis_args_t  *a;
    ngx_http_linegate_main_conf_t   *lmcf;

    lmcf = ngx_http_get_module_main_conf(r, ngx_http_linegate_module);

    /* a deferred error: only authenticate and count */
    mode = lr->deferred ? NGX_HTTP_LINEGATE_LR_GATE
                        : NGX_HTTP_LINEGATE_LR_WORK;

    a = &lr->args;
    ngx_http_linegate_redis_args_init(a);

    /*
     * the workspace is known (an API key was read from its lookup
     * first); 'c' on a cluster, where a script that walks the requests
     * its index names first checks that they are all on its node
     * (include/lr_here.lua)
     */
    ngx_http_linegate_redis_arg_cstr(a, lmcf->redis_cluster ? "c" : "w");
    ngx_http_linegate_redis_arg_str(a, &lr->who.value);

    /* GCRA's T and tau (lr_gate) */
    ngx_http_linegate_redis_arg_str(a, &lmcf->ws_rate_interval_arg);
    ngx_http_linegate_redis_arg_str(a, &lmcf->ws_rate_tolerance_arg);

    /* a key read from its lookup: the workspace must still list it */
    if (lr->resolved) {
        ngx_http_linegate_redis_arg_str(a, &lr->key_digest);

    } else {
        ngx_http_linegate_redis_arg_cstr(a, "");
    }

    ngx_http_linegate_redis_arg_cstr(a, mode == NGX_HTTP_LINEGATE_LR_GATE
                                        ? "gate" : "");

    /* KEYS[1..3] (lr_gate): the workspace, its :keys, its :gcra */
    ngx_http_linegate_lines_key(lr, a, NGX_HTTP_LINEGATE_KEY_WS,
                                &lr->who.value, NULL);
    ngx_http_linegate_lines_key(lr, a, NGX_HTTP_LINEGATE_KEY_WS_KEYS,
                                &lr->who.value, NULL);
    ngx_http_linegate_lines_key(lr, a, NGX_HTTP_LINEGATE_KEY_WS_GCRA,
                                &lr->who.value, NULL);
}


/* an unknown or revoked API key */
void
ngx_http_linegate_lines_unauthorized(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr)
{
    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  NGX_HTTP_LINEGATE_LOG "unauthorized: unknown or "
                  "revoked API key");
    ngx_str_set(&lr->ctx->outcome, "unauthorized");
    ngx_http_linegate_error(r, NGX_HTTP_UNAUTHORIZED, NULL, "Unauthorized");
}


/*
 * A key of the script (KEYS[], before its ARGV) named by keys.c in the
 * request's pool; without memory, args the Redis layer refuses (the
 * call fails as a store that cannot be reached).
 */
void
ngx_http_linegate_lines_key(ngx_http_linegate_lr_t *lr,
    ngx_http_linegate_redis_args_t *a, ngx_http_linegate_key_e kind,
    ngx_str_t *id, ngx_str_t *id2)
{
    ngx_str_t  key;

    if (ngx_http_linegate_key(lr->pool, kind, id, id2, &key)
        != NGX_OK)
    {
        a->argc = -1;
        return;
    }

    ngx_http_linegate_redis_arg_key(a, &key);
}


void
ngx_http_linegate_lines_request_keys(ngx_pool_t *pool,
    ngx_http_linegate_redis_args_t *a, ngx_str_t *ws, ngx_str_t *id,
    ngx_str_t *digest)
{
    ngx_uint_t  i, n;
    ngx_str_t   keys[NGX_HTTP_LINEGATE_KEYS_LR_IDEM];

    if (ngx_http_linegate_key_request(pool, ws, id, digest, keys) != NGX_OK) {
        a->argc = -1;
        return;
    }

    n = digest ? NGX_HTTP_LINEGATE_KEYS_LR_IDEM
               : NGX_HTTP_LINEGATE_KEYS_LR_REQUEST;

    for (i = 0; i < n; i++) {
        ngx_http_linegate_redis_arg_key(a, &keys[i]);
    }
}


void
ngx_http_linegate_lines_release_args(ngx_http_request_t *r,
    ngx_http_linegate_redis_args_t *a, ngx_str_t *ws, ngx_str_t *id,
    ngx_str_t *digest, ngx_msec_t mark_ms)
{
    ngx_str_t  key;

    ngx_http_linegate_redis_args_init(a);

    ngx_http_linegate_redis_arg_str(a, ws);
    ngx_http_linegate_redis_arg_str(a, id);
    ngx_http_linegate_redis_arg_str(a, digest);
    ngx_http_linegate_redis_arg_int(r, a, mark_ms);

    /* KEYS[1] the release mark, [2..5] the request's own */
    if (ngx_http_linegate_key(r->pool, NGX_HTTP_LINEGATE_KEY_WS_LRVOID, ws,
                              id, &key)
        != NGX_OK)
    {
        a->argc = -1;
        return;
    }

    ngx_http_linegate_redis_arg_key(a, &key);
    ngx_http_linegate_lines_request_keys(r->pool, a, ws, id, digest);
}


void
ngx_http_linegate_lines_script(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, ngx_http_linegate_script_id_e script,
    ngx_http_linegate_redis_handler_pt handler)
{
    if (ngx_http_linegate_redis_script(r, script, lr->args.nkeys, &lr->args,
                                       handler)
        != NGX_OK)
    {
        ngx_http_linegate_store_unavailable(r);
    }
}


void
ngx_http_linegate_lines_line_args(ngx_http_linegate_lr_t *lr)
{
    ngx_http_linegate_redis_args_init(&lr->args);

    ngx_http_linegate_redis_arg_str(&lr->args, &lr->ws);
    ngx_http_linegate_redis_arg_str(&lr->args, &lr->id);

    /* KEYS[1] lg:{ws:W}:lr:<id>; a caller adds the script's other keys */
    ngx_http_linegate_lines_key(lr, &lr->args, NGX_HTTP_LINEGATE_KEY_WS_LR,
                                &lr->ws, &lr->id);
}


/* a step after the decision: a script not sent is one that failed */
void
ngx_http_linegate_lines_call(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, ngx_http_linegate_script_id_e script,
    ngx_http_linegate_redis_handler_pt handler)
{
    if (ngx_http_linegate_redis_script(r, script, lr->args.nkeys, &lr->args,
                                       handler)
        != NGX_OK)
    {
        handler(r, NULL);
    }
}


/*
 * A repair step (release, store again) that must reach Redis whatever
 * becomes of the request: lr->args handed to the worker's durable writes
 * (copied, sent again until Redis answers). The same step is then sent
 * for the request, which waits for it: the writes of the connection are
 * answered in order, so once it is answered the durable one has run too,
 * and the client is answered with the state repaired (it is idempotent:
 * running twice is running once). The step of the endpoint resumes
 * through handler then, whatever Redis said, and calls durable_done.
 */
void
ngx_http_linegate_lines_durable(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, ngx_http_linegate_script_id_e script,
    const char *what, ngx_http_linegate_redis_handler_pt handler)
{
    ngx_http_linegate_lines_durable_then(r, lr, script, what, NULL, handler);
}


/*
 * The same, with then called with the durable write's own answer (the
 * request may be gone by then): what the step's outcome decides next
 */
void
ngx_http_linegate_lines_durable_then(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, ngx_http_linegate_script_id_e script,
    const char *what, ngx_http_linegate_redis_then_pt then,
    ngx_http_linegate_redis_handler_pt handler)
{
    u_char  *name, *p;

    /* the durable write's name in the log: "lr_release <id>" */
    name = ngx_pnalloc(r->pool, ngx_strlen(what) + 1 + lr->id.len + 1);

    if (name != NULL) {
        p = ngx_sprintf(name, "%s %V", what, &lr->id);
        *p = '\0';
    }

    (void) ngx_http_linegate_redis_durable_then(r->connection->log, script,
                                           lr->args.nkeys, &lr->args,
                                           name ? (const char *) name : what,
                                           then);

    lr->durable = what;

    ngx_http_linegate_lines_call(r, lr, script, handler);
}


void
ngx_http_linegate_lines_ended(ngx_http_linegate_lr_t *lr,
    ngx_http_linegate_script_id_e script, const char *doing,
    const char *what)
{
    ngx_http_linegate_redis_args_t  a;

    if (lr->settled) {
        return;
    }

    lr->settled = 1;

    ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                  NGX_HTTP_LINEGATE_LOG "line request \"%V\" ended while "
                  "%s: its claim is released%s%V", &lr->id, doing,
                  lr->invoice.id.len ? "; unless the request stored it, "
                                       "invoice queued to be voided: "
                                     : "",
                  &lr->invoice.id);

    if (lr->invoice.id.len == 0) {
        (void) ngx_http_linegate_redis_durable(ngx_cycle->log, script,
                                               lr->release->nkeys,
                                               lr->release, what);
        return;
    }

    /*
     * The store may have been in flight (its own step, before the
     * release on the connection): the release's answer says whether the
     * request holds the invoice. The invoice and its customer ride along
     * as arguments the script does not read, for the continuation.
     */
    a = *lr->release;
    ngx_http_linegate_redis_arg_str(&a, &lr->invoice.id);
    ngx_http_linegate_redis_arg_str(&a, &lr->customer);

    (void) ngx_http_linegate_redis_durable_then(ngx_cycle->log, script,
                                            a.nkeys, &a, what,
                                            ngx_http_linegate_lines_released);
}


/*
 * The release of an ended request answered (lr_release: 1, no request of
 * that id any more; 0, the workspace holds it, its invoice stored): an
 * invoice no request names is queued for a reconciliation run to void.
 * args: lr_release's keys (the release mark, the request's with its
 * idempotency key: NGX_HTTP_LINEGATE_LINES_RELEASE_KEYS), its 4
 * arguments, the invoice, the customer.
 */
#define NGX_HTTP_LINEGATE_LINES_RELEASE_KEYS                                 \
    (1 + NGX_HTTP_LINEGATE_KEYS_LR_IDEM)

static void
ngx_http_linegate_lines_released(redisReply *reply,
    ngx_http_linegate_redis_args_t *args, ngx_str_t *note)
{
    int        k;
    ngx_str_t  ws, id, invoice, customer;

    k = NGX_HTTP_LINEGATE_LINES_RELEASE_KEYS;

    if (reply == NULL || args->argc != k + 6
        || reply->type != REDIS_REPLY_INTEGER)
    {
        ngx_log_error(NGX_LOG_ALERT, ngx_cycle->log, 0,
                      NGX_HTTP_LINEGATE_LOG "unexpected reply of the "
                      "release of an ended request: its invoice is not "
                      "queued");
        return;
    }

    ngx_http_linegate_lines_arg(args, k + 1, &id);
    ngx_http_linegate_lines_arg(args, k + 4, &invoice);

    if (reply->integer == 0) {
        ngx_log_error(NGX_LOG_INFO, ngx_cycle->log, 0,
                      NGX_HTTP_LINEGATE_LOG "line request \"%V\" stored "
                      "invoice \"%V\" before it ended: not queued", &id,
                      &invoice);
        return;
    }

    ngx_http_linegate_lines_arg(args, k, &ws);
    ngx_http_linegate_lines_arg(args, k + 5, &customer);

    ngx_http_linegate_lines_orphan_of(ngx_cycle->log, &ws, &id, &invoice,
                                      &customer);
}


void
ngx_http_linegate_lines_arg(ngx_http_linegate_redis_args_t *a, int i,
    ngx_str_t *s)
{
    s->data = (u_char *) a->argv[i];
    s->len = a->argvlen[i];
}


ngx_int_t
ngx_http_linegate_lines_invoice_index(ngx_pool_t *pool, ngx_str_t *invoice,
    ngx_str_t *ws, ngx_str_t *id, ngx_http_linegate_redis_args_t *a)
{
    u_char     *p;
    ngx_str_t   key, owner;

    if (ngx_http_linegate_key(pool, NGX_HTTP_LINEGATE_KEY_INVOICE, invoice,
                              NULL, &key)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    ngx_http_linegate_redis_args_init(a);
    ngx_http_linegate_redis_arg_cstr(a, ws ? "SET" : "DEL");
    ngx_http_linegate_redis_arg_str(a, &key);

    if (ws == NULL) {
        return NGX_OK;
    }

    /*
     * a payment's webhook finds its request through it: lost with its
     * master, the event would be answered as unknown
     */
    a->acknowledged = 1;

    /* what the webhook splits at its last ':' (webhook.c) */
    p = ngx_pnalloc(pool, ws->len + 1 + id->len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    owner.data = p;
    owner.len = ngx_sprintf(p, "%V:%V", ws, id) - p;

    ngx_http_linegate_redis_arg_str(a, &owner);

    return NGX_OK;
}


ngx_http_linegate_lr_fail_e
ngx_http_linegate_lines_invoice_index_send(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, ngx_http_linegate_redis_handler_pt handler)
{
    ngx_http_linegate_redis_args_t  a;

    if (ngx_http_linegate_lines_invoice_index(r->pool, &lr->invoice.id,
                                              &lr->ws, &lr->id, &a)
        != NGX_OK)
    {
        return NGX_HTTP_LINEGATE_LR_FAIL_INTERNAL;
    }

    if (ngx_http_linegate_redis_command(r, &a, handler) != NGX_OK) {
        return NGX_HTTP_LINEGATE_LR_FAIL_STORE;
    }

    return NGX_HTTP_LINEGATE_LR_FAIL_NONE;
}


ngx_http_linegate_lr_fail_e
ngx_http_linegate_lines_invoice_indexed(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, redisReply *reply)
{
    if (reply == NULL) {
        return NGX_HTTP_LINEGATE_LR_FAIL_STORE;
    }

    if (reply->type != REDIS_REPLY_STATUS) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      NGX_HTTP_LINEGATE_LOG "unexpected reply of type %d "
                      "to the index of invoice \"%V\"", reply->type,
                      &lr->invoice.id);
        return NGX_HTTP_LINEGATE_LR_FAIL_INTERNAL;
    }

    return NGX_HTTP_LINEGATE_LR_FAIL_NONE;
}


void
ngx_http_linegate_lines_invoice_unindex(ngx_http_request_t *r,
    ngx_str_t *invoice)
{
    ngx_http_linegate_redis_args_t  a;

    if (invoice->len == 0
        || ngx_http_linegate_lines_invoice_index(r->pool, invoice, NULL,
                                                 NULL, &a)
           != NGX_OK)
    {
        return;
    }

    (void) ngx_http_linegate_redis_durable_command(r->connection->log, &a,
                                                   "invoice unindex");
}


/*
 * An invoice the request made that it could not discard (every repair
 * failed, or the request ended first), or a draft whose id it never saw
 * (lr->invoice.id empty): queued on the reconcile stream by a durable
 * write, for a reconciliation run to delete or void. Nothing is allocated
 * from the request's pool: also called from its cleanup.
 */
void
ngx_http_linegate_lines_orphan(ngx_log_t *log, ngx_http_linegate_lr_t *lr)
{
    ngx_http_linegate_lines_orphan_of(log, &lr->ws, &lr->id, &lr->invoice.id,
                                      &lr->customer);
}


/* the same from the strings alone: a durable write's continuation */
void
ngx_http_linegate_lines_orphan_of(ngx_log_t *log, ngx_str_t *ws,
    ngx_str_t *id, ngx_str_t *invoice, ngx_str_t *customer)
{
    ngx_http_linegate_lines_queue_now(log, ws, id, invoice, customer,
                                      NGX_HTTP_LINEGATE_LQ_UNREPAIRED);
}


void
ngx_http_linegate_lines_paid_canceled(ngx_log_t *log, ngx_str_t *ws,
    ngx_str_t *id, ngx_str_t *invoice, ngx_str_t *customer)
{
    ngx_http_linegate_lines_queue_now(log, ws, id, invoice, customer,
                                      NGX_HTTP_LINEGATE_LQ_PAID);
}


int64_t
ngx_http_linegate_lines_invoice_seq(json_t *inv)
{
    json_t     *v;
    ngx_int_t   n;

    v = json_object_get(json_object_get(inv, "metadata"), "invoice_seq");

    if (v == NULL) {
        return NGX_HTTP_LINEGATE_INVOICE_SEQ_NONE;
    }

    if (!json_is_string(v) || json_string_length(v) == 0
        || json_string_length(v) > NGX_INT64_LEN)
    {
        return NGX_HTTP_LINEGATE_INVOICE_SEQ_BAD;
    }

    n = ngx_atoi((u_char *) json_string_value(v), json_string_length(v));

    return n == NGX_ERROR ? NGX_HTTP_LINEGATE_INVOICE_SEQ_BAD : (int64_t) n;
}


time_t
ngx_http_linegate_lines_created(json_t *obj)
{
    json_t  *v;

    v = json_object_get(obj, "created");

    if (!json_is_integer(v) || json_integer_value(v) <= 0) {
        return 0;
    }

    return (time_t) json_integer_value(v);
}


/*
 * metadata[line_request_id] alone is every invoice of the request: its
 * creation's, each reissue's (superseded, voided then paid), one made by
 * hand with it. A reissue's also carries its claim's invoiceSeq: the
 * lapsed claims' is past the named invoice's (a claim made since it) and
 * none past the latest. With none at all it is a creation's, one made by
 * hand, or a lapsed claim's made by a module older than the field (a
 * rolling upgrade): only Stripe's time tells them apart, made within the
 * claims' time (SLACK either side, and the latest claim's hold; no 'to':
 * no upper bound, as the lists) and after the named invoice. A malformed
 * one is never a claim's.
 */
const char *
ngx_http_linegate_lines_lapsed_made(ngx_http_linegate_lapsed_claims_t *c,
    int64_t seq, time_t created)
{
    if (seq == NGX_HTTP_LINEGATE_INVOICE_SEQ_BAD) {
        return "its metadata[invoice_seq] is malformed";
    }

    if (seq != NGX_HTTP_LINEGATE_INVOICE_SEQ_NONE) {

        if (seq <= c->named_seq || seq <= 0) {
            return "its metadata[invoice_seq] is no later than the "
                   "named invoice's: an earlier reissue's";
        }

        if (seq > c->last_seq) {
            return "its metadata[invoice_seq] is past the latest claim's";
        }

        return NULL;
    }

    if (created <= 0
        || created < c->from - NGX_HTTP_LINEGATE_LAPSED_SLACK
        || (c->to > 0
            && created > c->to + NGX_HTTP_LINEGATE_LR_REISSUE_HOLD / 1000
                         + NGX_HTTP_LINEGATE_LAPSED_SLACK))
    {
        return "no metadata[invoice_seq], and made outside its claims' "
               "time";
    }

    if (c->named_at != NGX_HTTP_LINEGATE_LAPSED_UNREAD
        && (c->named_at <= 0 || created <= c->named_at))
    {
        return "no metadata[invoice_seq], and not made after the named "
               "invoice";
    }

    return NULL;
}


void
ngx_http_linegate_lines_left_paid(ngx_log_t *log, ngx_http_linegate_lr_t *lr,
    ngx_str_t *invoice)
{
    ngx_http_linegate_lines_queue_now(log, &lr->ws, &lr->id, invoice,
                                      &lr->customer,
                                      NGX_HTTP_LINEGATE_LQ_LEFT);
}


/*
 * lr_invoice_orphan of a paid invoice left for a human answered: 1,
 * queued now, a human is to act (warn); 0, queued before (a sweep before
 * this one found it, a retry's, a GET's; or it was queued unpaid, not
 * discarded): the entry is there already, said at notice only
 */
static void
ngx_http_linegate_lines_left_queued(redisReply *reply,
    ngx_http_linegate_redis_args_t *args, ngx_str_t *note)
{
    ngx_str_t   ws, id, invoice;
    ngx_uint_t  level;

    if (ngx_http_linegate_lines_queued_of(reply, args, &ws, &id, &invoice)
        != NGX_OK)
    {
        return;
    }

    level = reply->integer == 1 ? NGX_LOG_WARN : NGX_LOG_NOTICE;

    ngx_log_error(level, ngx_cycle->log, 0,
                  NGX_HTTP_LINEGATE_LOG "invoice \"%V\" of line request "
                  "\"%V\" of workspace \"%V\" is paid, and no request "
                  "takes it: %s for reconciliation (invoice_unrepaired), "
                  "left for a human (give the line, or refund it at "
                  "Stripe)", &invoice, &id, &ws,
                  reply->integer == 1 ? "queued" : "queued before");
}


/*
 * lr_invoice_orphan of a paid_after_cancel entry answered: 1, queued
 * now, a human is to act (warn); 0, queued before (the webhook's, or
 * another GET's, payment_link's or cancel's check that found the same
 * payment): said at notice only, as the webhook says it. Until
 * 2026-11-29 every finder logged it at warn again.
 */
static void
ngx_http_linegate_lines_paid_queued(redisReply *reply,
    ngx_http_linegate_redis_args_t *args, ngx_str_t *note)
{
    ngx_str_t   ws, id, invoice;
    ngx_uint_t  level;

    if (ngx_http_linegate_lines_queued_of(reply, args, &ws, &id, &invoice)
        != NGX_OK)
    {
        return;
    }

    level = reply->integer == 1 ? NGX_LOG_WARN : NGX_LOG_NOTICE;

    ngx_log_error(level, ngx_cycle->log, 0,
                  NGX_HTTP_LINEGATE_LOG "invoice \"%V\" of line request "
                  "\"%V\" of workspace \"%V\" is paid, but the request "
                  "was canceled: not reopened, %s for reconciliation ("
                  NGX_HTTP_LINEGATE_LR_PAID_REASON "), left for a human",
                  &invoice, &id, &ws,
                  reply->integer == 1 ? "queued" : "queued before");
}


/* lines_queue of an entry stamped now, with no window */
static void
ngx_http_linegate_lines_queue_now(ngx_log_t *log, ngx_str_t *ws,
    ngx_str_t *id, ngx_str_t *invoice, ngx_str_t *customer, ngx_uint_t kind)
{
    u_char     iso[NGX_HTTP_LINEGATE_ISO_LEN];
    ngx_str_t  at;

    at.data = iso;
    at.len = ngx_http_linegate_iso8601(iso, ngx_http_linegate_now_ms())
             - iso;

    ngx_http_linegate_lines_queue(log, ws, id, invoice, customer, &at,
                                  NULL, kind);
}


/*
 * A request that ended (paid, canceled) while its hash still held a
 * payment_link's claim (reissueAt): a claim that lapsed may have left an
 * invoice at Stripe that no request names, and the next payment_link
 * that would have swept it (line_manage.c) never comes now. lr_settle
 * marked it sweepPending (from: the ms of its earliest claim not swept);
 * whoever reads the mark queues it (reissue_lapsed) for a reconciliation
 * run to look for the request's draft and open invoices from then on,
 * and the queuing's answer clears the mark (lines_lapsed_queued): a
 * reply lost anywhere on the way leaves the mark for the next read.
 *
 * The run looks under the customer the request was billed to, else the
 * workspace's: a request made before requests kept their customer was
 * billed (and reissued: lr_manage) under the workspace's. A caller that
 * has neither (a GET reads the request alone; a webhook's wh_invoice
 * answers the workspace's since 2026-11-29, the request's own before)
 * leaves it to lines_lapsed_ws: the workspace's read after the
 * caller's answer, which does not wait for it (so a GET of such a
 * request waits for no extra round trip), then queued. Before 2026-11-29 it was
 * queued under no customer, which a run leaves to a human (no_customer)
 * without looking: the invoices that claim left stayed payable.
 */
void
ngx_http_linegate_lines_lapsed(ngx_log_t *log, ngx_str_t *ws, ngx_str_t *id,
    ngx_str_t *customer, ngx_str_t *from, ngx_str_t *to)
{
    if (customer->len == 0
        && ngx_http_linegate_lines_lapsed_ws(log, ws, id, from, to) == NGX_OK)
    {
        return;
    }

    /* not sent: under none, for a human, rather than not at all */
    ngx_http_linegate_lines_lapsed_queue(log, ws, id, customer, from, to);
}


static void
ngx_http_linegate_lines_lapsed_queue(ngx_log_t *log, ngx_str_t *ws,
    ngx_str_t *id, ngx_str_t *customer, ngx_str_t *from, ngx_str_t *to)
{
    u_char     iso[NGX_HTTP_LINEGATE_ISO_LEN];
    u_char     iso_to[NGX_HTTP_LINEGATE_ISO_LEN];
    ngx_int_t  ms;
    ngx_str_t  at, until;

    static ngx_str_t  none = ngx_null_string;

    ms = ngx_atoi(from->data, from->len);

    /* unreadable: the run looks from when it was queued */
    at.data = iso;
    at.len = ms > 0 ? ngx_http_linegate_iso8601(iso, ms) - iso : 0;

    /*
     * the latest claim's ms (sweepPendingTo): the run lists until an hour
     * after it, a window that does not grow with the time since; none
     * (a mark written before it existed, or unreadable): until now
     */
    ms = to->len ? ngx_atoi(to->data, to->len) : NGX_ERROR;

    until.data = iso_to;
    until.len = ms > 0 ? ngx_http_linegate_iso8601(iso_to, ms) - iso_to : 0;

    ngx_http_linegate_lines_queue(log, ws, id, &none, customer, &at, &until,
                                  NGX_HTTP_LINEGATE_LQ_LAPSED);
}


/*
 * HGET lg:{ws:W} stripeCustomerId, a durable command (sent again until
 * answered, as the queuing after it), whose answer queues the request
 * (lines_lapsed_customer); ws, id, from and to ride along as its note,
 * each "<length>:<bytes>". Nothing from a request's pool: a webhook's
 * caller may be its cleanup. NGX_ERROR: not sent.
 */
static ngx_int_t
ngx_http_linegate_lines_lapsed_ws(ngx_log_t *log, ngx_str_t *ws,
    ngx_str_t *id, ngx_str_t *from, ngx_str_t *to)
{
    u_char                          *p, *k;
    size_t                           len;
    ngx_int_t                        rc;
    ngx_uint_t                       i;
    ngx_str_t                        key, note, *f[4];
    ngx_http_linegate_redis_args_t   a;

    f[0] = ws;
    f[1] = id;
    f[2] = from;
    f[3] = to;

    len = ngx_http_linegate_key_len(NGX_HTTP_LINEGATE_KEY_WS, ws, NULL);

    for (i = 0; i < 4; i++) {
        len += NGX_SIZE_T_LEN + 1 + f[i]->len;
    }

    k = ngx_alloc(len, log);
    if (k == NULL) {
        return NGX_ERROR;
    }

    key.data = k;
    key.len = ngx_http_linegate_key_write(k, NGX_HTTP_LINEGATE_KEY_WS, ws,
                                          NULL)
              - k;

    p = k + key.len;
    note.data = p;

    for (i = 0; i < 4; i++) {
        p = ngx_sprintf(p, "%uz:%V", f[i]->len, f[i]);
    }

    note.len = p - note.data;

    ngx_http_linegate_redis_args_init(&a);
    ngx_http_linegate_redis_arg_cstr(&a, "HGET");
    ngx_http_linegate_redis_arg_str(&a, &key);
    ngx_http_linegate_redis_arg_cstr(&a, "stripeCustomerId");

    rc = ngx_http_linegate_redis_durable_command_then(log, &a,
                                 "a lapsed reissue's workspace customer",
                                 ngx_http_linegate_lines_lapsed_customer,
                                 &note);
    ngx_free(k);

    return rc;
}


/* the workspace's customer read (none: ""): the request queued under it */
static void
ngx_http_linegate_lines_lapsed_customer(redisReply *reply,
    ngx_http_linegate_redis_args_t *args, ngx_str_t *note)
{
    u_char      *p, *last, *colon;
    ngx_int_t    n;
    ngx_str_t    customer, f[4];
    ngx_uint_t   i;

    if (reply == NULL
        || (reply->type != REDIS_REPLY_STRING
            && reply->type != REDIS_REPLY_NIL))
    {
        return;
    }

    p = note->data;
    last = p + note->len;

    for (i = 0; i < 4; i++) {
        colon = ngx_strlchr(p, last, ':');
        n = (colon != NULL) ? ngx_atoi(p, colon - p) : NGX_ERROR;

        if (n == NGX_ERROR || n > last - colon - 1) {
            /* not ours: the mark stays for the next read */
            return;
        }

        f[i].data = colon + 1;
        f[i].len = (size_t) n;
        p = colon + 1 + n;
    }

    ngx_str_null(&customer);

    if (reply->type == REDIS_REPLY_STRING) {
        customer.data = (u_char *) reply->str;
        customer.len = reply->len;
    }

    ngx_http_linegate_lines_lapsed_queue(ngx_cycle->log, &f[0], &f[1],
                                         &customer, &f[2], &f[3]);
}


/*
 * The flat hash a step read (lr_get, lr_manage, lr_resolve): marked
 * sweepPending, it is queued (lines_lapsed), under the customer
 * payment_link bills (lr_manage's answer: the one the request keeps,
 * the workspace's for a request that keeps none), else the one the
 * request keeps (a paid add-on's), else (a GET of a request that keeps
 * none) the workspace's, read once the GET is answered (lines_lapsed).
 * A claim still held
 * when the request ended is queued too: its worker discards its own
 * invoice (its store is refused), and the run finds nothing left.
 */
void
ngx_http_linegate_lines_pending(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, redisReply *flat)
{
    size_t       i;
    ngx_str_t    customer, from, to;
    redisReply  *k, *v;

    ngx_str_null(&from);
    ngx_str_null(&to);
    customer = lr->customer;

    for (i = 0; flat && i + 1 < flat->elements; i += 2) {
        k = flat->element[i];
        v = flat->element[i + 1];

        if (k->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING) {
            return;
        }

        if (k->len == sizeof("sweepPending") - 1
            && ngx_strncmp(k->str, "sweepPending", k->len) == 0)
        {
            from.data = (u_char *) v->str;
            from.len = v->len;
            continue;
        }

        if (k->len == sizeof("sweepPendingTo") - 1
            && ngx_strncmp(k->str, "sweepPendingTo", k->len) == 0)
        {
            to.data = (u_char *) v->str;
            to.len = v->len;
            continue;
        }

        if (lr->customer.len == 0
            && k->len == sizeof("customer") - 1
            && ngx_strncmp(k->str, "customer", k->len) == 0)
        {
            customer.data = (u_char *) v->str;
            customer.len = v->len;
        }
    }

    if (from.len) {
        ngx_http_linegate_lines_lapsed(r->connection->log, &lr->ws, &lr->id,
                                       &customer, &from, &to);
    }
}


/*
 * A queuing's answer (lr_invoice_orphan: 1 queued now, 0 queued before)
 * and what it queued, from the durable write's copied arguments (KEYS[1],
 * KEYS[2], then ws, id, invoice, ...): NGX_ERROR, no such answer
 */
static ngx_int_t
ngx_http_linegate_lines_queued_of(redisReply *reply,
    ngx_http_linegate_redis_args_t *args, ngx_str_t *ws, ngx_str_t *id,
    ngx_str_t *invoice)
{
    if (reply == NULL || reply->type != REDIS_REPLY_INTEGER
        || args->argc < 5)
    {
        return NGX_ERROR;
    }

    ngx_http_linegate_lines_arg(args, 2, ws);
    ngx_http_linegate_lines_arg(args, 3, id);
    ngx_http_linegate_lines_arg(args, 4, invoice);

    return NGX_OK;
}


/*
 * lr_invoice_orphan of a reissue_lapsed entry answered (1 queued now, 0
 * queued before: either way it is on the stream): the request's
 * sweepPending mark goes, a durable HDEL. Lost, the next read of the
 * request queues it again, which its marker answers 0.
 */
static void
ngx_http_linegate_lines_lapsed_queued(redisReply *reply,
    ngx_http_linegate_redis_args_t *args, ngx_str_t *note)
{
    u_char                          *p;
    ngx_str_t                        ws, id, invoice, key;
    ngx_http_linegate_redis_args_t   a;

    if (ngx_http_linegate_lines_queued_of(reply, args, &ws, &id, &invoice)
        != NGX_OK)
    {
        return;
    }

    p = ngx_alloc(ngx_http_linegate_key_len(NGX_HTTP_LINEGATE_KEY_WS_LR, &ws,
                                            &id),
                  ngx_cycle->log);
    if (p == NULL) {
        return;
    }

    key.data = p;
    key.len = ngx_http_linegate_key_write(p, NGX_HTTP_LINEGATE_KEY_WS_LR,
                                          &ws, &id)
              - p;

    ngx_http_linegate_redis_args_init(&a);
    ngx_http_linegate_redis_arg_cstr(&a, "HDEL");
    ngx_http_linegate_redis_arg_str(&a, &key);
    ngx_http_linegate_redis_arg_cstr(&a, "sweepPending");
    ngx_http_linegate_redis_arg_cstr(&a, "sweepPendingTo");

    (void) ngx_http_linegate_redis_durable_command(ngx_cycle->log, &a,
                                                   "a queued sweep's mark");
    ngx_free(p);
}


/*
 * The entry on the reconcile stream, by a durable write: its marker
 * (which) lg:{fleet}:q:<W>:inv_<invoice id> (a paid one left for a human
 * too: one entry an invoice), or inv_draft_<request id>
 * when no invoice id was seen, or lapsed_<request id>, or paid_<invoice
 * id> (paid_after_cancel). Nothing is allocated from a request's pool:
 * also called from its cleanup.
 */
static void
ngx_http_linegate_lines_queue(ngx_log_t *log, ngx_str_t *ws, ngx_str_t *id,
    ngx_str_t *invoice, ngx_str_t *customer, ngx_str_t *at, ngx_str_t *to,
    ngx_uint_t kind)
{
    u_char                          *p;
    ngx_int_t                        rc;
    ngx_str_t                        mkey, which;
    ngx_uint_t                       lapsed, paid, left;
    const char                      *reason;
    ngx_http_linegate_redis_args_t   a;

    lapsed = kind == NGX_HTTP_LINEGATE_LQ_LAPSED;
    paid = kind == NGX_HTTP_LINEGATE_LQ_PAID;
    left = kind == NGX_HTTP_LINEGATE_LQ_LEFT;
    reason = lapsed ? "reissue_lapsed"
             : paid ? NGX_HTTP_LINEGATE_LR_PAID_REASON : "invoice_unrepaired";

    /*
     * in the slot of the stream it guards (one slot a script): not in the
     * pool, freed once the write copied it (which, then the key)
     */
    which.len = sizeof("inv_draft_") - 1 + id->len + invoice->len;

    p = ngx_alloc(which.len
                  + ngx_http_linegate_key_len(NGX_HTTP_LINEGATE_KEY_FLEET_Q,
                                              ws, &which),
                  log);
    if (p == NULL) {
        rc = NGX_ERROR;
        goto failed;
    }

    which.data = p;
    which.len = (lapsed ? ngx_sprintf(p, "lapsed_%V", id)
                 : paid ? ngx_sprintf(p, NGX_HTTP_LINEGATE_LR_PAID_MARKER "%V",
                                      invoice)
                 : invoice->len ? ngx_sprintf(p, "inv_%V", invoice)
                 : ngx_sprintf(p, "inv_draft_%V", id))
                - p;

    mkey.data = p + which.len;
    mkey.len = ngx_http_linegate_key_write(mkey.data,
                                           NGX_HTTP_LINEGATE_KEY_FLEET_Q,
                                           ws, &which)
               - mkey.data;

    ngx_http_linegate_redis_args_init(&a);
    ngx_http_linegate_redis_arg_str(&a, &mkey);
    ngx_http_linegate_redis_arg_str(&a,
        ngx_http_linegate_key_fixed(NGX_HTTP_LINEGATE_KEY_RECONCILE));
    ngx_http_linegate_redis_arg_str(&a, ws);
    ngx_http_linegate_redis_arg_str(&a, id);
    ngx_http_linegate_redis_arg_str(&a, invoice);
    ngx_http_linegate_redis_arg_str(&a, customer);
    ngx_http_linegate_redis_arg_str(&a, at);
    ngx_http_linegate_redis_arg_cstr(&a, reason);

    if (to != NULL && to->len) {
        ngx_http_linegate_redis_arg_str(&a, to);
    }

    rc = lapsed
         ? ngx_http_linegate_redis_durable_then(log,
                                   NGX_HTTP_LINEGATE_SCRIPT_LR_INVOICE_ORPHAN,
                                   2, &a, "a lapsed reissue's queuing",
                                   ngx_http_linegate_lines_lapsed_queued)
         : left
         ? ngx_http_linegate_redis_durable_then(log,
                                   NGX_HTTP_LINEGATE_SCRIPT_LR_INVOICE_ORPHAN,
                                   2, &a, "a paid invoice's queuing",
                                   ngx_http_linegate_lines_left_queued)
         : paid
         ? ngx_http_linegate_redis_durable_then(log,
                                   NGX_HTTP_LINEGATE_SCRIPT_LR_INVOICE_ORPHAN,
                                   2, &a, "a canceled request's payment",
                                   ngx_http_linegate_lines_paid_queued)
         : ngx_http_linegate_redis_durable(log,
                                   NGX_HTTP_LINEGATE_SCRIPT_LR_INVOICE_ORPHAN,
                                   2, &a, "an undiscarded invoice's queuing");

    ngx_free(p);

failed:

    if (rc != NGX_OK) {
        if (lapsed) {
            ngx_log_error(NGX_LOG_ALERT, log, 0,
                          NGX_HTTP_LINEGATE_LOG "line request \"%V\" ended "
                          "while a reissue claim of it had lapsed, and "
                          "could not be queued for reconciliation: void "
                          "or delete at Stripe its invoices it does not "
                          "name", id);
            return;
        }

        if (paid) {
            ngx_log_error(NGX_LOG_ALERT, log, 0,
                          NGX_HTTP_LINEGATE_LOG "invoice \"%V\" of line "
                          "request \"%V\" is paid, but the request was "
                          "canceled, and it could not be queued for "
                          "reconciliation: refund it at Stripe, or give "
                          "the line by hand", invoice, id);
            return;
        }

        if (left) {
            ngx_log_error(NGX_LOG_ALERT, log, 0,
                          NGX_HTTP_LINEGATE_LOG "invoice \"%V\" of line "
                          "request \"%V\" is paid, no request takes it, "
                          "and it could not be queued for reconciliation: "
                          "refund it at Stripe, or give the line by hand",
                          invoice, id);
            return;
        }

        ngx_log_error(NGX_LOG_ALERT, log, 0,
                      NGX_HTTP_LINEGATE_LOG "invoice \"%V\" of line request "
                      "\"%V\" could not be queued for reconciliation: "
                      "void or delete it at Stripe", invoice, id);
        return;
    }

    if (left || paid) {
        /*
         * said by its answer (lines_left_queued, lines_paid_queued): at
         * warn once per invoice
         */
        return;
    }

    if (lapsed) {
        ngx_log_error(NGX_LOG_WARN, log, 0,
                      NGX_HTTP_LINEGATE_LOG "line request \"%V\" ended while "
                      "a reissue claim of it had lapsed: queued for "
                      "reconciliation (reissue_lapsed)", id);
        return;
    }

    ngx_log_error(NGX_LOG_WARN, log, 0,
                  NGX_HTTP_LINEGATE_LOG "invoice \"%V\" of line request "
                  "\"%V\" queued for reconciliation (invoice_unrepaired)",
                  invoice, id);
}


void
ngx_http_linegate_lines_durable_done(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, redisReply *reply)
{
    if (reply == NULL) {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      NGX_HTTP_LINEGATE_LOG "%s of line request \"%V\" "
                      "not answered yet: left to the durable write",
                      lr->durable, &lr->id);
    }
}


ngx_int_t
ngx_http_linegate_lines_gate(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, redisReply *reply)
{
    int64_t      code;
    ngx_str_t    ws;
    redisReply  *rate;

    if (reply == NULL) {
        ngx_http_linegate_store_unavailable(r);
        return NGX_DONE;
    }

    if (ngx_http_linegate_reply_int(reply, 0, &code) != NGX_OK) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      NGX_HTTP_LINEGATE_LOG "unexpected script reply");
        ngx_http_linegate_internal_error(r);
        return NGX_DONE;
    }

    if (code == NGX_HTTP_LINEGATE_LR_UNAUTHORIZED) {
        ngx_http_linegate_lines_unauthorized(r, lr);
        return NGX_DONE;
    }

    /* lr_gate's {remaining, reset_ms, retry_after_ms} */
    rate = reply->elements > 2 ? reply->element[2] : NULL;

    if (ngx_http_linegate_reply_str(reply, 1, &ws) != NGX_OK
        || rate == NULL || rate->type != REDIS_REPLY_ARRAY
        || ngx_http_linegate_reply_int(rate, 0, &lr->remaining) != NGX_OK
        || ngx_http_linegate_reply_int(rate, 1, &lr->reset_ms) != NGX_OK
        || ngx_http_linegate_reply_int(rate, 2, &lr->retry_ms) != NGX_OK)
    {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      NGX_HTTP_LINEGATE_LOG "unexpected script reply");
        ngx_http_linegate_internal_error(r);
        return NGX_DONE;
    }

    return ngx_http_linegate_lines_admit(r, lr, code, &ws);
}


/*
 * The caller is known (workspace ws) and its rate decided (lr->remaining,
 * reset_ms, retry_ms): the RateLimit headers, then the 429 or a deferred
 * error, or code.
 */
ngx_int_t
ngx_http_linegate_lines_admit(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, int64_t code, ngx_str_t *ws)
{
    ngx_http_linegate_ctx_t         *ctx;
    ngx_http_linegate_rl_window_t    w;
    ngx_http_linegate_main_conf_t   *lmcf;

    lmcf = ngx_http_get_module_main_conf(r, ngx_http_linegate_module);
    ctx = lr->ctx;

    /* rl_gcra's numbers (beyond them Retry-After's rounding overflows) */
    if (!ngx_http_linegate_gcra_valid(lr->remaining)
        || !ngx_http_linegate_gcra_valid(lr->reset_ms)
        || !ngx_http_linegate_gcra_valid(lr->retry_ms))
    {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      NGX_HTTP_LINEGATE_LOG "unexpected rate in a script "
                      "reply");
        ngx_http_linegate_internal_error(r);
        return NGX_DONE;
    }

    if (ngx_http_linegate_pstr(r->pool, &lr->ws, ws->data, ws->len) == NULL) {
        ngx_http_linegate_internal_error(r);
        return NGX_DONE;
    }

    ctx->tenant = lr->ws;

    ngx_http_linegate_auth_learn(r, &lr->who, &lr->ws);

    /* t: seconds until one more request passes (burst N - 1: full is N) */
    w.name = "workspace";
    w.quota = lmcf->ws_rate;
    w.window = lmcf->ws_rate_window;
    w.remaining = (ngx_int_t) lr->remaining;
    w.reset = (time_t) ngx_http_linegate_ratelimit_next(lr->remaining,
                          lr->reset_ms, lr->retry_ms, (int64_t) lmcf->ws_rate,
                          lmcf->ws_rate, (uint64_t) lmcf->ws_rate_interval);

    if (ngx_http_linegate_ratelimit_headers(r, ctx, &w, 1) != NGX_OK) {
        ngx_http_linegate_internal_error(r);
        return NGX_DONE;
    }

    if (code == NGX_HTTP_LINEGATE_LR_RATE_LIMITED) {
        ngx_http_linegate_metrics_ratelimit("workspace", "REJECTED");
        /* when the next request passes, rounded up */
        ctx->retry_after = (ngx_max(lr->retry_ms, 1) + 999) / 1000;
        ngx_http_linegate_error(r, NGX_HTTP_TOO_MANY_REQUESTS,
                                "RATE_LIMITED", "Rate limit exceeded");
        return NGX_DONE;
    }

    ngx_http_linegate_metrics_ratelimit("workspace", "PASSED");

    if (lr->deferred == NGX_HTTP_LINEGATE_LR_DEFER_FIELD) {
        ngx_http_linegate_field_error(r, lr->deferred_field,
                                      lr->deferred_message);
        return NGX_DONE;
    }

    if (lr->deferred == NGX_HTTP_LINEGATE_LR_DEFER_PLAIN) {
        ngx_str_set(&ctx->outcome, "bad_request");
        ngx_http_linegate_error(r, NGX_HTTP_BAD_REQUEST, NULL,
                                lr->deferred_message);
        return NGX_DONE;
    }

    if (lr->deferred == NGX_HTTP_LINEGATE_LR_DEFER_INTERNAL) {
        ngx_http_linegate_internal_error(r);
        return NGX_DONE;
    }

    return (ngx_int_t) code;
}


void
ngx_http_linegate_lines_defer(ngx_http_linegate_lr_t *lr, ngx_uint_t kind,
    const char *field, const char *message)
{
    if (lr->deferred) {
        return;
    }

    lr->deferred = kind;
    lr->deferred_field = field;
    lr->deferred_message = message;
}


ngx_int_t
ngx_http_linegate_lines_parse(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr)
{
    const char  *why;

    /* the 400 is answered only once the credential is known good */
    if (ngx_http_linegate_json_parse(r, lr->ctx, 0, &why) != NGX_OK) {
        /* no reason: memory ran out, the client's body is not at fault */
        ngx_http_linegate_lines_defer(lr,
                                      why ? NGX_HTTP_LINEGATE_LR_DEFER_FIELD
                                          : NGX_HTTP_LINEGATE_LR_DEFER_INTERNAL,
                                      NULL, why);
        return NGX_ERROR;
    }

    return NGX_OK;
}


/*
 * lr_resolve. On a cluster a 'paid' outcome may promote the line, whose
 * set-up entry lr_resolve cannot append (lg:provisioning is another
 * slot): its member is written in lg:{fleet}:lr:setup first, a step of
 * its own (lines_resolve_setup), and the entry relayed once lr_resolve
 * answered (lines_resolved). 'void' makes no entry: no member.
 */
void
ngx_http_linegate_lines_resolve(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, const char *outcome,
    ngx_http_linegate_redis_handler_pt handler)
{
    ngx_http_linegate_redis_args_t  *a;
    ngx_http_linegate_main_conf_t   *lmcf;

    lmcf = ngx_http_get_module_main_conf(r, ngx_http_linegate_module);

    /* a member of an earlier step of the request is settled already */
    ngx_str_null(&lr->setup);
    lr->resolve_paid = ngx_strcmp(outcome, "paid") == 0;

    ngx_http_linegate_lines_line_args(lr);
    a = &lr->args;

    ngx_http_linegate_redis_arg_str(a, &lr->line.invoice_id);
    ngx_http_linegate_redis_arg_cstr(a, outcome);
    ngx_http_linegate_redis_arg_int(r, a, lr->now_ms);
    ngx_http_linegate_redis_arg_str(a, &lr->now_iso);
    ngx_http_linegate_redis_arg_str(a, &lr->date);
    ngx_http_linegate_redis_arg_cstr(a, lmcf->redis_cluster ? "c" : "w");
    ngx_http_linegate_redis_arg_int(r, a, NGX_HTTP_LINEGATE_LR_REISSUE_HOLD);

    /*
     * KEYS[2..4], after the request's: its index, the index of live
     * requests, its pending marker; KEYS[5] the set-up stream, on one
     * Redis only
     */
    ngx_http_linegate_lines_key(lr, a, NGX_HTTP_LINEGATE_KEY_WS_LINES,
                                &lr->ws, NULL);
    ngx_http_linegate_lines_key(lr, a, NGX_HTTP_LINEGATE_KEY_WS_LIVE,
                                &lr->ws, NULL);
    ngx_http_linegate_lines_key(lr, a, NGX_HTTP_LINEGATE_KEY_WS_PENDING,
                                &lr->ws, NULL);

    if (!lmcf->redis_cluster) {
        ngx_http_linegate_redis_arg_key(a,
            ngx_http_linegate_key_fixed(NGX_HTTP_LINEGATE_KEY_PROVISIONING));

    } else if (ngx_strcmp(outcome, "paid") == 0) {
        ngx_http_linegate_lines_resolve_setup(r, lr, handler);
        return;
    }

    ngx_http_linegate_lines_call(r, lr, NGX_HTTP_LINEGATE_SCRIPT_LR_RESOLVE,
                                 handler);
}


/*
 * A cluster, 'paid': the member "<W> <id> <nonce>" in lg:{fleet}:lr:setup
 * before lr_resolve (the fleet's slot, a plain ZADD). The endpoint's
 * resume switch (handler) is kept to hear lr_resolve's answer: the
 * member's own answer comes to lines_resolve_setup_written.
 */
static void
ngx_http_linegate_lines_resolve_setup(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, ngx_http_linegate_redis_handler_pt handler)
{
    ngx_http_linegate_redis_args_t  a;

    lr->setup_resume = handler;

    if (ngx_http_linegate_lr_setup_member(r->pool, &lr->ws, &lr->id,
                                          &lr->setup)
        != NGX_OK)
    {
        handler(r, NULL);
        return;
    }

    ngx_http_linegate_lr_setup_add_args(r, &a, &lr->setup);

    if (ngx_http_linegate_redis_command(r, &a,
                                ngx_http_linegate_lines_resolve_setup_written)
        != NGX_OK)
    {
        /* not sent: no member */
        ngx_str_null(&lr->setup);
        handler(r, NULL);
    }
}


/* the member written: lr_resolve; not (lost, refused): as a lost step */
static void
ngx_http_linegate_lines_resolve_setup_written(ngx_http_request_t *r,
    redisReply *reply)
{
    ngx_http_linegate_lr_t  *lr;

    lr = ngx_http_linegate_lines_lr(r);

    if (reply == NULL || reply->type != REDIS_REPLY_INTEGER) {
        /* written or not, it goes: lr_resolve was never sent */
        (void) ngx_http_linegate_lr_setup_drop(r->connection->log,
                                               &lr->setup);
        ngx_str_null(&lr->setup);
        lr->setup_resume(r, NULL);
        return;
    }

    ngx_http_linegate_lines_call(r, lr, NGX_HTTP_LINEGATE_SCRIPT_LR_RESOLVE,
                                 lr->setup_resume);
}


ngx_int_t
ngx_http_linegate_lines_resolved(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, redisReply *reply)
{
    int64_t    changed;
    ngx_str_t  invoice;
    ngx_int_t  rc;

    if (ngx_http_linegate_reply_int(reply, 0, &changed) != NGX_OK) {
        /* not understood: a set-up member stays for the sweep */
        goto unexpected;
    }

    if (reply->elements < 2) {
        /* the request is gone: no entry */
        (void) ngx_http_linegate_lr_setup_drop(r->connection->log,
                                               &lr->setup);
        return NGX_DECLINED;
    }

    if (changed) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      NGX_HTTP_LINEGATE_LOG "line request \"%V\" settled "
                      "from invoice \"%V\"", &lr->id, &lr->line.invoice_id);
    }

    /* what lr_resolve was sent: the parse reads the line over it */
    invoice = lr->line.invoice_id;

    rc = ngx_http_linegate_line_parse(r, lr, reply->element[1], &lr->line);

    ngx_http_linegate_lines_resolve_relay(r, lr, changed, rc);

    if (rc != NGX_OK) {
        goto unexpected;
    }

    if (!changed && lr->resolve_paid) {
        ngx_http_linegate_lines_resolved_paid(r, lr, &invoice,
                                              reply->element[1]);
    }

    ngx_http_linegate_lines_pending(r, lr, reply->element[1]);

    return NGX_OK;

unexpected:

    /*
     * the request exists (the script answered for it), but what it
     * answered is not a line: never a 404, the caller's 500
     */
    ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                  NGX_HTTP_LINEGATE_LOG "line request \"%V\": lr_resolve's "
                  "answer not understood", &lr->id);

    return NGX_ERROR;
}


/*
 * lr_resolve 'paid' changed nothing: a request that was canceled on the
 * invoice Stripe said paid (a GET's check, payment_link or a cancel that
 * read it awaiting payment, canceled since by an uncollectible invoice's
 * event, the invoice then paid) stays canceled (SPEC 2.3), the payment
 * queued for a human, under the customer the request keeps
 */
static void
ngx_http_linegate_lines_resolved_paid(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, ngx_str_t *invoice, redisReply *flat)
{
    size_t       i;
    ngx_str_t    customer;
    redisReply  *k, *v;

    if (!ngx_http_linegate_line_is(&lr->line.status, "canceled")
        || invoice->len == 0
        || lr->line.invoice_id.len != invoice->len
        || ngx_strncmp(lr->line.invoice_id.data, invoice->data, invoice->len)
           != 0)
    {
        return;
    }

    customer = lr->customer;

    for (i = 0; flat && i + 1 < flat->elements; i += 2) {
        k = flat->element[i];
        v = flat->element[i + 1];

        if (k->type == REDIS_REPLY_STRING && v->type == REDIS_REPLY_STRING
            && k->len == sizeof("customer") - 1
            && ngx_strncmp(k->str, "customer", k->len) == 0)
        {
            customer.data = (u_char *) v->str;
            customer.len = v->len;
            break;
        }
    }

    ngx_http_linegate_lines_paid_canceled(r->connection->log, &lr->ws,
                                          &lr->id, invoice, &customer);
}


/*
 * A cluster, 'paid': lr_resolve answered. It promoted the line
 * (changed): the entry is appended, then the member goes; it changed
 * nothing: the member goes. A line it promoted but that cannot be read
 * back (parsed NGX_ERROR) leaves the member for the sweep.
 */
static void
ngx_http_linegate_lines_resolve_relay(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, int64_t changed, ngx_int_t parsed)
{
    if (lr->setup.len == 0) {
        return;
    }

    if (!changed) {
        (void) ngx_http_linegate_lr_setup_drop(r->connection->log,
                                               &lr->setup);
        return;
    }

    if (parsed != NGX_OK) {
        return;
    }

    ngx_http_linegate_lines_setup_relay(r, lr, &lr->ws);
}


void
ngx_http_linegate_lines_setup_relay(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, ngx_str_t *ws)
{
    ngx_http_linegate_lr_setup_t  e;

    e.workspace = *ws;
    e.id = lr->id;
    e.channel_type = lr->line.channel_type;
    e.line_type = lr->line.line_type;
    e.at = lr->now_iso;

    (void) ngx_http_linegate_lr_setup_relay(r->connection->log, &e,
                                            &lr->setup);

    /* the durable relay holds its own copy */
    lr->setup.len = 0;
}


/* the line object */

ngx_int_t
ngx_http_linegate_line_parse(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, redisReply *flat,
    ngx_http_linegate_line_t *line)
{
    return ngx_http_linegate_line_read(r->pool, lr, flat, line);
}


ngx_int_t
ngx_http_linegate_line_view(ngx_http_linegate_lr_t *lr, redisReply *flat,
    ngx_http_linegate_line_t *line)
{
    return ngx_http_linegate_line_read(NULL, lr, flat, line);
}


/* the hash's fields into line: copied into pool, or (NULL) pointed at */
static ngx_int_t
ngx_http_linegate_line_read(ngx_pool_t *pool, ngx_http_linegate_lr_t *lr,
    redisReply *flat, ngx_http_linegate_line_t *line)
{
    size_t                           i;
    ngx_str_t                       *s;
    redisReply                      *k, *v;
    ngx_http_linegate_line_field_t  *f;

    if (flat == NULL || flat->type != REDIS_REPLY_ARRAY) {
        return NGX_ERROR;
    }

    ngx_memzero(line, sizeof(ngx_http_linegate_line_t));

    line->workspace = lr->ws;
    line->date = lr->date;

    for (i = 0; i + 1 < flat->elements; i += 2) {
        k = flat->element[i];
        v = flat->element[i + 1];

        if (k->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING) {
            return NGX_ERROR;
        }

        for (f = ngx_http_linegate_line_fields; f->name.len; f++) {
            if (f->name.len == k->len
                && ngx_strncmp(f->name.data, k->str, k->len) == 0)
            {
                s = (ngx_str_t *) ((u_char *) line + f->offset);

                if (pool == NULL) {
                    s->data = (u_char *) v->str;
                    s->len = v->len;

                } else if (ngx_http_linegate_pstr(pool, s, (u_char *) v->str,
                                                  v->len)
                           == NULL)
                {
                    return NGX_ERROR;
                }

                break;
            }
        }
    }

    /* the hash holds the counters of the latest day with any: today's? */
    if (line->usage_date.len != lr->date.len
        || ngx_strncmp(line->usage_date.data, lr->date.data, lr->date.len)
           != 0
        || line->conversations.len == 0 || line->messages.len == 0)
    {
        ngx_str_set(&line->conversations, "0");
        ngx_str_set(&line->messages, "0");
    }

    return NGX_OK;
}


/* SPEC 2.8 */
void
ngx_http_linegate_line_jw(ngx_http_linegate_json_write_t *jw,
    ngx_http_request_t *r, ngx_http_linegate_line_t *line)
{
    ngx_str_t                       *lt;
    ngx_http_linegate_main_conf_t   *lmcf;

    static ngx_str_t  purchased = ngx_string("purchased");

    lmcf = ngx_http_get_module_main_conf(r, ngx_http_linegate_module);

    lt = &line->line_type;

    if (lt->len == 0 || ngx_http_linegate_line_is(&line->channel_type,
                                                  "email"))
    {
        lt = &purchased;
    }

    ngx_http_linegate_json_write_object(jw);
    ngx_http_linegate_json_write_key(jw, "_id");
    ngx_http_linegate_json_write_str_or_null(jw, &line->id);
    ngx_http_linegate_json_write_key(jw, "workspaceId");
    ngx_http_linegate_json_write_str_or_null(jw, &line->workspace);
    ngx_http_linegate_json_write_key(jw, "firstName");
    ngx_http_linegate_json_write_str_or_null(jw, &line->first_name);
    ngx_http_linegate_json_write_key(jw, "lastName");
    ngx_http_linegate_json_write_str_or_null(jw, &line->last_name);
    ngx_http_linegate_json_write_key(jw, "channelType");
    ngx_http_linegate_json_write_str_or_null(jw, &line->channel_type);
    ngx_http_linegate_json_write_key(jw, "lineType");
    ngx_http_linegate_json_write_str_or_null(jw, lt);
    ngx_http_linegate_json_write_key(jw, "phone");
    ngx_http_linegate_json_write_str_or_null(jw, &line->phone);
    ngx_http_linegate_json_write_key(jw, "email");
    ngx_http_linegate_json_write_str_or_null(jw, &line->email);
    ngx_http_linegate_json_write_key(jw, "forwardCallsTo");
    ngx_http_linegate_json_write_str_or_null(jw, &line->forward_calls_to);
    ngx_http_linegate_json_write_key(jw, "profileImageUrl");
    ngx_http_linegate_json_write_str_or_null(jw, &line->profile_image_url);
    ngx_http_linegate_json_write_key(jw, "isActive");
    ngx_http_linegate_json_write_bool(jw,
        ngx_http_linegate_line_is(&line->status, "active"));
    ngx_http_linegate_json_write_key(jw, "provisioningStatus");
    ngx_http_linegate_json_write_str_or_null(jw, &line->status);
    ngx_http_linegate_json_write_key(jw, "paymentStatus");
    ngx_http_linegate_json_write_str_or_null(jw, &line->payment_status);
    ngx_http_linegate_json_write_key(jw, "dailyNewConversationsLimit");
    ngx_http_linegate_json_write_int(jw,
                                     (int64_t) lmcf->line_daily_conversations);
    ngx_http_linegate_json_write_key(jw, "dailyTotalMessagesLimit");
    ngx_http_linegate_json_write_int(jw, (int64_t) lmcf->line_daily_messages);
    ngx_http_linegate_json_write_key(jw, "usage");
    ngx_http_linegate_line_usage_jw(jw, line);
    ngx_http_linegate_json_write_key(jw, "healthCheck");
    ngx_http_linegate_line_health_jw(jw, line);
    ngx_http_linegate_json_write_key(jw, "createdAt");
    ngx_http_linegate_json_write_str_or_null(jw, &line->created_at);
    ngx_http_linegate_json_write_key(jw, "updatedAt");
    ngx_http_linegate_json_write_str_or_null(jw, &line->updated_at);
    ngx_http_linegate_json_write_end(jw, '}');
}


void
ngx_http_linegate_line_status_jw(ngx_http_linegate_json_write_t *jw,
    ngx_http_request_t *r, ngx_http_linegate_line_t *line)
{
    ngx_http_linegate_json_write_object(jw);
    ngx_http_linegate_json_write_key(jw, "success");
    ngx_http_linegate_json_write_bool(jw, 1);
    ngx_http_linegate_json_write_key(jw, "status");
    ngx_http_linegate_json_write_str_or_null(jw, &line->status);
    ngx_http_linegate_json_write_key(jw, "paymentStatus");
    ngx_http_linegate_json_write_str_or_null(jw, &line->payment_status);
    ngx_http_linegate_json_write_key(jw, "paymentRequired");
    ngx_http_linegate_json_write_bool(jw,
                    ngx_http_linegate_line_is(&line->payment_status,
                                              "unpaid"));

    if (ngx_http_linegate_line_is(&line->status,
                                  NGX_HTTP_LINEGATE_LR_AWAITING))
    {
        ngx_http_linegate_json_write_key(jw, "paymentUrl");
        ngx_http_linegate_json_write_str_or_null(jw, &line->payment_url);
        ngx_http_linegate_json_write_key(jw, "invoiceId");
        ngx_http_linegate_json_write_str_or_null(jw, &line->invoice_id);
    }

    ngx_http_linegate_json_write_key(jw, "line");
    ngx_http_linegate_line_jw(jw, r, line);
    ngx_http_linegate_json_write_end(jw, '}');
}


ngx_int_t
ngx_http_linegate_line_status_body(ngx_http_request_t *r,
    ngx_http_linegate_line_t *line, ngx_str_t *body)
{
    ngx_http_linegate_json_write_t  jw;

    (void) ngx_http_linegate_json_write_init(&jw, r->pool,
                                             NGX_HTTP_LINEGATE_LINE_JSON_SIZE);
    ngx_http_linegate_line_status_jw(&jw, r, line);

    return ngx_http_linegate_json_write_finish(&jw, body);
}


/* the same as a jansson tree, for answers built with jansson (cold) */
void
ngx_http_linegate_line_usage_jw(ngx_http_linegate_json_write_t *jw,
    ngx_http_linegate_line_t *line)
{
    ngx_http_linegate_json_write_object(jw);
    ngx_http_linegate_json_write_key(jw, "date");
    ngx_http_linegate_json_write_str_or_null(jw, &line->date);
    ngx_http_linegate_json_write_key(jw, "newConversationsCount");
    ngx_http_linegate_json_write_int(jw,
                    ngx_http_linegate_line_count(&line->conversations));
    ngx_http_linegate_json_write_key(jw, "totalMessagesCount");
    ngx_http_linegate_json_write_int(jw,
                    ngx_http_linegate_line_count(&line->messages));
    ngx_http_linegate_json_write_end(jw, '}');
}


void
ngx_http_linegate_line_health_jw(ngx_http_linegate_json_write_t *jw,
    ngx_http_linegate_line_t *line)
{
    if (line->health_status.len == 0) {
        ngx_http_linegate_json_write_null(jw);
        return;
    }

    ngx_http_linegate_json_write_object(jw);
    ngx_http_linegate_json_write_key(jw, "status");
    ngx_http_linegate_json_write_str_or_null(jw, &line->health_status);
    ngx_http_linegate_json_write_key(jw, "lastCheckedAt");
    ngx_http_linegate_json_write_str_or_null(jw, &line->health_checked_at);
    ngx_http_linegate_json_write_end(jw, '}');
}


json_int_t
ngx_http_linegate_line_count(ngx_str_t *s)
{
    ngx_int_t  n;

    n = ngx_atoi(s->data, s->len);

    return n == NGX_ERROR ? 0 : (json_int_t) n;
}


/* answers */

ngx_int_t
ngx_http_linegate_line_is(ngx_str_t *value, const char *s)
{
    size_t  len;

    len = ngx_strlen(s);

    return value->len == len && ngx_strncmp(value->data, s, len) == 0;
}


void
ngx_http_linegate_lines_refusal(ngx_http_request_t *r, ngx_uint_t status,
    ngx_str_t *state, const char *message, const char *redirect)
{
    ngx_http_linegate_json_write_t  jw;

    (void) ngx_http_linegate_json_write_init(&jw, r->pool, 256);
    ngx_http_linegate_json_write_object(&jw);
    ngx_http_linegate_json_write_key(&jw, "success");
    ngx_http_linegate_json_write_bool(&jw, 0);
    ngx_http_linegate_json_write_key(&jw, "status");
    ngx_http_linegate_json_write_str(&jw, state->data, state->len);
    ngx_http_linegate_json_write_key(&jw, "message");
    ngx_http_linegate_json_write_cstr(&jw, message);

    if (redirect != NULL) {
        ngx_http_linegate_json_write_key(&jw, "redirect");
        ngx_http_linegate_json_write_cstr(&jw, redirect);
    }

    ngx_http_linegate_json_write_end(&jw, '}');

    ngx_http_linegate_send_jw(r, status, &jw);
}


void
ngx_http_linegate_lines_subscription_required(ngx_http_request_t *r)
{
    static ngx_str_t  state = ngx_string("subscription_required");

    ngx_http_linegate_lines_refusal(r, NGX_HTTP_FORBIDDEN, &state,
                                    "The workspace needs an active base "
                                    "plan subscription to request lines",
                                    "/billing");
}


void
ngx_http_linegate_lines_read_only(ngx_http_request_t *r, redisReply *reply,
    ngx_uint_t i)
{
    ngx_str_t                        reason;
    ngx_http_linegate_ctx_t         *ctx;
    ngx_http_linegate_json_write_t   jw;

    if (ngx_http_linegate_reply_str(reply, i, &reason) != NGX_OK) {
        ngx_http_linegate_internal_error(r);
        return;
    }

    ctx = ngx_http_linegate_get_ctx(r);
    ngx_str_set(&ctx->outcome, "READ_ONLY");

    (void) ngx_http_linegate_json_write_init(&jw, r->pool, 128);
    ngx_http_linegate_json_write_object(&jw);
    ngx_http_linegate_json_write_key(&jw, "error");
    ngx_http_linegate_json_write_cstr(&jw, "READ_ONLY");
    ngx_http_linegate_json_write_key(&jw, "code");
    ngx_http_linegate_json_write_cstr(&jw, "READ_ONLY");
    ngx_http_linegate_json_write_key(&jw, "reason");
    ngx_http_linegate_json_write_str(&jw, reason.data, reason.len);
    ngx_http_linegate_json_write_end(&jw, '}');

    ngx_http_linegate_send_jw(r, NGX_HTTP_LINEGATE_PAYMENT_REQUIRED, &jw);
}


void
ngx_http_linegate_lines_not_found(ngx_http_request_t *r)
{
    ngx_http_linegate_ctx_t  *ctx;

    ctx = ngx_http_linegate_get_ctx(r);
    ngx_str_set(&ctx->outcome, "not_found");

    ngx_http_linegate_error(r, NGX_HTTP_NOT_FOUND, NULL,
                            "Line request not found");
}


void
ngx_http_linegate_lines_billing_error(ngx_http_request_t *r,
    ngx_uint_t result, ngx_int_t retry_after)
{
    ngx_http_linegate_ctx_t  *ctx;

    ctx = ngx_http_linegate_get_ctx(r);

    if (result == NGX_HTTP_LINEGATE_STRIPE_RATE_LIMITED) {
        ctx->retry_after = retry_after > 0 ? retry_after : 1;
        ngx_http_linegate_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                "BILLING_UNAVAILABLE",
                                "Billing is busy, retry shortly");
        return;
    }

    ngx_http_linegate_error(r, NGX_HTTP_BAD_GATEWAY, "BILLING_UNAVAILABLE",
                            "Billing is unavailable, retry later");
}


void
ngx_http_linegate_lines_failed(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr)
{
    switch (lr->fail) {

    case NGX_HTTP_LINEGATE_LR_FAIL_BILLING:
        ngx_http_linegate_lines_billing_error(r, lr->fail_result,
                                              lr->fail_retry_after);
        return;

    case NGX_HTTP_LINEGATE_LR_FAIL_STORE:
        ngx_http_linegate_store_unavailable(r);
        return;

    default: /* NGX_HTTP_LINEGATE_LR_FAIL_INTERNAL */
        ngx_http_linegate_internal_error(r);
        return;
    }
}


/* Stripe */

ngx_int_t
ngx_http_linegate_lines_stripe(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, ngx_uint_t method, const char *path,
    ngx_str_t *id, const char *suffix, ngx_str_t *form, const char *key,
    ngx_http_linegate_resume_pt resume)
{
    u_char     *p;
    size_t      plen, slen;
    ngx_str_t   uri, k;

    if (id != NULL && !ngx_http_linegate_stripe_id_valid(id)) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      NGX_HTTP_LINEGATE_LOG "invalid Stripe id \"%V\"", id);
        return NGX_ERROR;
    }

    plen = ngx_strlen(path);
    slen = suffix ? ngx_strlen(suffix) : 0;

    uri.len = plen + (id ? 1 + id->len : 0) + slen;
    uri.data = ngx_pnalloc(r->pool, uri.len);
    if (uri.data == NULL) {
        return NGX_ERROR;
    }

    p = ngx_cpymem(uri.data, path, plen);

    if (id != NULL) {
        *p++ = '/';
        p = ngx_cpymem(p, id->data, id->len);
    }

    if (slen) {
        ngx_memcpy(p, suffix, slen);
    }

    if (key != NULL) {
        k.len = lr->invoice.key.len + ngx_strlen(key);
        k.data = ngx_pnalloc(r->pool, k.len);
        if (k.data == NULL) {
            return NGX_ERROR;
        }

        ngx_memcpy(ngx_cpymem(k.data, lr->invoice.key.data,
                              lr->invoice.key.len),
                   key, ngx_strlen(key));
    }

    return ngx_http_linegate_stripe_call(r, lr->ctx, method, &uri, form,
                                         key ? &k : NULL, resume);
}


ngx_int_t
ngx_http_linegate_lines_invoice_get(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, ngx_http_linegate_resume_pt resume)
{
    return ngx_http_linegate_lines_stripe(r, lr, NGX_HTTP_GET, "v1/invoices",
                                          &lr->line.invoice_id, NULL, NULL,
                                          NULL, resume);
}


ngx_int_t
ngx_http_linegate_lines_invoice_read(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, ngx_str_t *expect)
{
    json_t       *inv, *id, *url, *status;
    ngx_str_t     s, st, u;
    const char   *object;

    inv = lr->ctx->stripe_json;
    id = json_object_get(inv, "id");
    url = json_object_get(inv, "hosted_invoice_url");
    status = json_object_get(inv, "status");
    object = json_string_value(json_object_get(inv, "object"));

    if (!json_is_string(id) || !json_is_string(status)) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      NGX_HTTP_LINEGATE_LOG "Stripe answered an invoice "
                      "without id or status");
        return NGX_ERROR;
    }

    s.data = (u_char *) json_string_value(id);
    s.len = json_string_length(id);

    /*
     * The status of another invoice, or of another object, says nothing
     * of this one: taken, it would promote or cancel a request on news
     * of something else. Checked before lr->invoice is written (expect
     * may be lr->invoice.id).
     */
    if (!ngx_http_linegate_stripe_id_valid(&s)) {
        return NGX_ERROR;
    }

    if ((object != NULL && ngx_strcmp(object, "invoice") != 0)
        || (expect != NULL && expect->len
            && (s.len != expect->len
                || ngx_strncmp(s.data, expect->data, s.len) != 0)))
    {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      NGX_HTTP_LINEGATE_LOG "Stripe answered \"%V\" (%s) "
                      "when asked for invoice \"%V\"", &s,
                      (object == NULL || ngx_strcmp(object, "invoice") == 0)
                      ? "another invoice" : "not an invoice",
                      expect ? expect : &s);
        return NGX_ERROR;
    }

    /*
     * The status decides the request and the URL is replayed to clients:
     * neither is stored unless it is what Stripe gives (an unknown status,
     * a link that is not a bounded https URL: an answer not understood).
     */
    st.data = (u_char *) json_string_value(status);
    st.len = json_string_length(status);
    u.data = (u_char *) json_string_value(url);
    u.len = json_string_length(url);

    if (!ngx_http_linegate_stripe_invoice_status_valid(&st)
        || (u.data != NULL && !ngx_http_linegate_stripe_url_valid(&u))
        || (u.data == NULL && url != NULL && !json_is_null(url)))
    {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      NGX_HTTP_LINEGATE_LOG "Stripe answered invoice \"%V\" "
                      "with %s", &s,
                      ngx_http_linegate_stripe_invoice_status_valid(&st)
                      ? "a payment link that is no bounded https URL"
                      : "a status that is none of Stripe's");
        return NGX_ERROR;
    }

    if (ngx_http_linegate_pstr(r->pool, &lr->invoice.id, s.data, s.len)
        == NULL
        || ngx_http_linegate_pstr(r->pool, &lr->invoice.status, st.data,
                                  st.len)
           == NULL)
    {
        return NGX_ERROR;
    }

    ngx_str_null(&lr->invoice.url);

    if (u.len
        && ngx_http_linegate_pstr(r->pool, &lr->invoice.url, u.data, u.len)
           == NULL)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


ngx_http_linegate_lr_t *
ngx_http_linegate_lines_lr(ngx_http_request_t *r)
{
    ngx_http_linegate_ctx_t  *ctx;

    ctx = ngx_http_linegate_get_ctx(r);

    return ctx->data;
}
