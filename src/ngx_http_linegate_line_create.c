
/*
 * linegate: POST /api/line-requests (SPEC 2.4), and the invoice machine
 * (issuing an add-on invoice, discarding it), which payment_link reuses.
 * The endpoint is an enum of steps (ngx_http_linegate_create_step_e,
 * lines.h) in ctx->state and one resume switch, create_resume, that every
 * Redis and Stripe callback enters:
 *
 *   validate -> INDEX (SET lg:line:<id> W, its own slot; on a cluster
 *               with the set-up member, ZADD lg:{fleet}:lr:setup, and
 *               the journal's, ZADD lg:{fleet}:lr:inflight "<W> <id>",
 *               the fleet's slot, in the same round trip: lr_setup.h)
 *            -> SCRIPT (lr_create; on one Redis it writes a
 *               reservation's journal member itself)
 *                                   +- included, refusals -> answer (kept
 *                                   |  under the idempotency key by
 *                                   |  lr_create itself; on a cluster an
 *                                   |  included line's set-up entry is
 *                                   |  relayed after it, any other
 *                                   |  answer drops the member; the
 *                                   |  journal's member goes)
 *                                   `- reserved -> ISSUE (the
 *                                      invoice machine: draft, item,
 *                                      finalize) -> INVOICE_INDEX (SET
 *                                      lg:invoice:<in> "<W>:<id>", its
 *                                      own slot) -> STORE
 *                                      (lr_invoice_store) -> 201
 *                                      awaiting_payment; an invoice
 *                                      Stripe paid at finalization
 *                                      (amount due 0): STORE ->
 *                                      RESOLVE (lr_resolve "paid") ->
 *                                      201 provisioning/paid
 *
 * Every failure goes to create_fail, which undoes what the step holds:
 *
 *   SCRIPT, reply lost    -> RELEASE (lr_release by id) -> 503
 *   SCRIPT, refused       -> 503 at once, no RELEASE: Redis refused
 *   before it ran            lr_create before running any of it
 *                            (ctx->store_not_run: a cluster's TRYAGAIN
 *                            at its deadline, CLUSTERDOWN, a MOVED or
 *                            ASK past the redirections), so nothing is
 *                            held, and a RELEASE would meet the same
 *                            migration and wait as long again; the
 *                            index and a cluster's members go
 *                            (create_unrun)
 *   ISSUE, late           -> DISCARD (a draft made) -> RELEASE -> 503:
 *                            the reservation outlived
 *                            linegate_reconcile_lost_after (or lr_create's
 *                            10 minutes) before an invoice was made, filled
 *                            or finalized (create_late)
 *   ISSUE                 -> UNISSUE (void/delete the invoice; both
 *                            refused, a GET: paid, it is kept, and the
 *                            creation goes on at INVOICE_INDEX as if
 *                            finalize had answered "paid")
 *                            -> RELEASE -> 502/503/500
 *   STORE refused         -> DISCARD (void/delete the invoice)
 *                            -> RELEASE -> 502/503/500
 *   INVOICE_INDEX, any    -> DISCARD -> RELEASE -> 503/500 (the store
 *                            was never sent: nothing names the invoice)
 *   INVOICE_INDEX, paid   -> 503: an invoice Stripe paid (at
 *                            finalization, or kept by UNISSUE) is
 *                            neither discarded nor released; its index
 *                            and then its store go to the durable writes
 *                            (create_paid_kept), and the key replays the
 *                            201 once stored, the request promoted by a
 *                            durable lr_resolve (one Redis) or a read;
 *                            else the journal's sweep stores it (a dead
 *                            worker's request)
 *   STORE, reply lost     -> STORE_AGAIN (the same store, durable) -> 503;
 *                            its own copy answered stored: as after
 *                            STORE, an invoice paid at finalization
 *                            RESOLVE -> 201 provisioning/paid, an open
 *                            one 201 awaiting_payment
 *   RESOLVE, any          -> 201 provisioning/paid all the same (the
 *                            answer the store kept under the key): the
 *                            request names the paid invoice, indexed,
 *                            so its invoice.paid or a read settles it
 *
 * then answers in FAILED, from lr->fail.
 *
 * No reservation is ever without its journal member: lr_create writes
 * both on one Redis; on a cluster the member is written before lr_create
 * runs. A worker dying at any point after lr_create ran (or while it was
 * still queued at a stalled Redis) leaves the member for the
 * reconciliation's sweep (reconcile.c), which settles the request as
 * worker_lost. The member is removed (a durable ZREM) once
 * lr_invoice_store or lr_release answered, which settles the request,
 * and on a cluster as soon as lr_create answered anything else (or was
 * refused before it ran).
 *
 * The invoice's webhook index is answered OK before the store is sent,
 * so that no request ever names an invoice the webhook cannot find (its
 * payment event would be acknowledged as unknown); an index whose store
 * was refused or never sent goes again (a durable DEL), one a crash
 * leaves names a request that does not name the invoice: harmless.
 *
 * The reservation is written before Stripe is called, so parallel
 * requests of one workspace can never both pass the "one request awaits
 * payment" rule, and it is removed if billing fails, so nothing is left
 * blocking the workspace. Stripe calls carry Idempotency-Keys derived
 * from the line request id.
 */


#include "ngx_http_linegate_module.h"
#include "ngx_http_linegate_lines.h"
#include "ngx_http_linegate_json.h"
#include "ngx_http_linegate_reply.h"
#include "ngx_http_linegate_ids.h"
#include "ngx_http_linegate_chars.h"
#include "ngx_http_linegate_clock.h"


/* send_invoice invoices are due this many days after finalization */
#define NGX_HTTP_LINEGATE_INVOICE_DAYS_DUE  "7"

/*
 * A repair call (the draft asked again to learn its id, a void, a delete)
 * that gets no answer, a 5xx or a 429 (and the draft's 409: its first
 * call still in flight at Stripe) is tried again after 250 ms, 500 ms,
 * then 1 s each, while fewer than 10 tries and 8 s have gone by since
 * the first failure of that call
 */
#define NGX_HTTP_LINEGATE_INVOICE_TRIES     10
#define NGX_HTTP_LINEGATE_INVOICE_BUDGET    8000
#define NGX_HTTP_LINEGATE_INVOICE_WAIT      250
#define NGX_HTTP_LINEGATE_INVOICE_WAIT_MAX  1000

/* "-void-<ms>-<pid>-<n>" and its NUL (invoice_void_key) */
#define NGX_HTTP_LINEGATE_INVOICE_VOID_KEY_LEN                             \
    (sizeof("-void---") + 3 * NGX_INT64_LEN)

static void ngx_http_linegate_create_resume(ngx_http_request_t *r,
    redisReply *reply);
static void ngx_http_linegate_create_stripe_done(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx);
static void ngx_http_linegate_create_fail(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, ngx_http_linegate_lr_fail_e fail,
    ngx_uint_t result, ngx_int_t retry_after);
static void ngx_http_linegate_create_discard(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, ngx_http_linegate_create_step_e step);
static void ngx_http_linegate_create_discarded(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr);
static void ngx_http_linegate_create_release(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr);
static void ngx_http_linegate_create_failed(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr);

static void ngx_http_linegate_create_release_args(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, ngx_http_linegate_redis_args_t *a);
static ngx_int_t ngx_http_linegate_create_validate(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr);
static void ngx_http_linegate_create_invalid(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, const char *field, const char *what);
static ngx_int_t ngx_http_linegate_create_string(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, const char *field, ngx_str_t *value,
    ngx_uint_t required);
static void ngx_http_linegate_create_name(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, const char *field, ngx_str_t *value);
static void ngx_http_linegate_create_trim(ngx_str_t *value);
static size_t ngx_http_linegate_create_space(u_char *p, size_t len);
static void ngx_http_linegate_create_kinds(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr);
static void ngx_http_linegate_create_contacts(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr);
static void ngx_http_linegate_create_applicable(ngx_http_linegate_lr_t *lr);
static ngx_int_t ngx_http_linegate_create_email_valid(ngx_str_t *s);
static ngx_int_t ngx_http_linegate_create_url_valid(ngx_str_t *s);

static void ngx_http_linegate_create_index(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr);
static void ngx_http_linegate_create_indexed(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, redisReply *reply);
static void ngx_http_linegate_create_index_reply(ngx_http_request_t *r,
    redisReply *reply);
static void ngx_http_linegate_create_reindex(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr);
static void ngx_http_linegate_create_unindex(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr);
static ngx_int_t ngx_http_linegate_create_index_cluster(
    ngx_http_request_t *r, ngx_http_linegate_lr_t *lr,
    ngx_http_linegate_redis_args_t *a);
static void ngx_http_linegate_create_relay(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, redisReply *reply);
static ngx_int_t ngx_http_linegate_line_index_args(ngx_http_request_t *r,
    ngx_str_t *id, ngx_str_t *ws, ngx_http_linegate_redis_args_t *a);
static void ngx_http_linegate_create_script(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr);
static void ngx_http_linegate_create_unrun(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr);
static void ngx_http_linegate_create_done(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, redisReply *reply);
static void ngx_http_linegate_create_outcome(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, ngx_int_t code, redisReply *reply);
static void ngx_http_linegate_create_stored_answer(ngx_http_request_t *r,
    redisReply *reply, ngx_uint_t replayed);
static void ngx_http_linegate_create_reserved(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, redisReply *reply);
static void ngx_http_linegate_create_late(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr);
static ngx_int_t ngx_http_linegate_create_journal_member(
    ngx_http_request_t *r, ngx_http_linegate_lr_t *lr);
static void ngx_http_linegate_create_journal_drop(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr);
static void ngx_http_linegate_create_unjournal(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, redisReply *reply);
static void ngx_http_linegate_create_invoiced(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr);
static void ngx_http_linegate_create_invoice_indexed(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, redisReply *reply);
static void ngx_http_linegate_create_store(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr);
static void ngx_http_linegate_create_store_args(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr);
static void ngx_http_linegate_create_paid_resolve(
    ngx_http_linegate_redis_args_t *args);
static void ngx_http_linegate_create_paid_kept(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr);
static void ngx_http_linegate_create_paid_indexed(redisReply *reply,
    ngx_http_linegate_redis_args_t *args, ngx_str_t *note);
static void ngx_http_linegate_create_stored_again(redisReply *reply,
    ngx_http_linegate_redis_args_t *args, ngx_str_t *note);
static void ngx_http_linegate_create_stored(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, redisReply *reply);
static void ngx_http_linegate_create_stored_go_on(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr);
static void ngx_http_linegate_create_restored(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, redisReply *reply);
static void ngx_http_linegate_create_resolved(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, redisReply *reply);
static void ngx_http_linegate_create_cleanup(void *data);
static ngx_uint_t ngx_http_linegate_create_left_for_sweep(
    ngx_http_linegate_lr_t *lr);

static ngx_int_t ngx_http_linegate_invoice_redraft(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, ngx_uint_t result);
static ngx_int_t ngx_http_linegate_invoice_repair(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, ngx_uint_t method, const char *suffix,
    const char *key_suffix, const char *failed);
static ngx_int_t ngx_http_linegate_invoice_send(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr);
static ngx_uint_t ngx_http_linegate_invoice_late(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr);
static ngx_int_t ngx_http_linegate_invoice_item(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr);
static ngx_int_t ngx_http_linegate_invoice_finalize(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr);
static ngx_int_t ngx_http_linegate_invoice_end(ngx_http_linegate_lr_t *lr,
    ngx_uint_t result);
static ngx_int_t ngx_http_linegate_invoice_done(ngx_http_linegate_lr_t *lr);
static ngx_int_t ngx_http_linegate_invoice_discarded(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr);
static ngx_int_t ngx_http_linegate_invoice_checked(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr);
static ngx_int_t ngx_http_linegate_invoice_metadata(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, ngx_str_t *form);
static ngx_int_t ngx_http_linegate_invoice_later(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, ngx_uint_t in_use);
static void ngx_http_linegate_invoice_wake(ngx_event_t *ev);
static void ngx_http_linegate_invoice_cleanup(void *data);
static void ngx_http_linegate_invoice_log(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, const char *what);


/* the worker's fresh void keys so far (invoice_void_key) */
static ngx_uint_t  ngx_http_linegate_void_keys;


void
ngx_http_linegate_line_create(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr)
{
    u_char      *id;
    const char  *field, *message;

    id = ngx_pnalloc(r->pool, NGX_HTTP_LINEGATE_ID_LEN);

    if (id == NULL || ngx_http_linegate_new_id(id) != NGX_OK) {
        ngx_http_linegate_internal_error(r);
        return;
    }

    lr->id.data = id;
    lr->id.len = NGX_HTTP_LINEGATE_ID_LEN;

    /* any error is deferred: a bad credential is a 401 before all */
    if (ngx_http_linegate_lines_parse(r, lr) == NGX_OK
        && ngx_http_linegate_create_validate(r, lr) == NGX_OK
        && ngx_http_linegate_idem_prepare(r, lr->ctx->body, &lr->idem,
                                          &field, &message)
           != NGX_OK)
    {
        /* no message: memory ran out, the client's body is not at fault */
        ngx_http_linegate_lines_defer(lr,
                                      message
                                      ? NGX_HTTP_LINEGATE_LR_DEFER_FIELD
                                      : NGX_HTTP_LINEGATE_LR_DEFER_INTERNAL,
                                      field, message);
    }

    if (lr->deferred) {
        /* only authenticated and counted: no line, no index */
        ngx_http_linegate_create_script(r, lr);
        return;
    }

    ngx_http_linegate_create_index(r, lr);
}


/* validation (SPEC 2.4): the first failure is answered, naming its field */

static ngx_int_t
ngx_http_linegate_create_validate(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr)
{
    ngx_http_linegate_line_t  *l;

    l = &lr->line;

    ngx_http_linegate_create_name(r, lr, "firstName", &l->first_name);
    ngx_http_linegate_create_name(r, lr, "lastName", &l->last_name);
    ngx_http_linegate_create_kinds(r, lr);
    ngx_http_linegate_create_contacts(r, lr);

    if (lr->deferred) {
        return NGX_ERROR;
    }

    ngx_http_linegate_create_applicable(lr);

    l->id = lr->id;
    l->date = lr->date;
    l->created_at = lr->now_iso;
    l->updated_at = lr->now_iso;

    return NGX_OK;
}


/* defer "<field> <what>" as the 400 naming field */
static void
ngx_http_linegate_create_invalid(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, const char *field, const char *what)
{
    u_char  *msg, *p;

    if (lr->deferred) {
        return;
    }

    msg = ngx_pnalloc(r->pool, ngx_strlen(field) + ngx_strlen(what) + 2);
    if (msg == NULL) {
        ngx_http_linegate_lines_defer(lr, NGX_HTTP_LINEGATE_LR_DEFER_FIELD,
                                      field, "Invalid field");
        return;
    }

    p = ngx_sprintf(msg, "%s %s", field, what);
    *p = '\0';

    ngx_http_linegate_lines_defer(lr, NGX_HTTP_LINEGATE_LR_DEFER_FIELD,
                                  field, (const char *) msg);
}


/* NGX_OK: a non-empty string; NGX_DECLINED: absent, null or "" */
static ngx_int_t
ngx_http_linegate_create_string(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, const char *field, ngx_str_t *value,
    ngx_uint_t required)
{
    ngx_int_t  rc;

    ngx_str_null(value);

    rc = ngx_http_linegate_json_str(lr->ctx->body, field, value);

    if (rc == NGX_ERROR) {
        /* a string refused holds a NUL (json.c): the names' own error */
        ngx_http_linegate_create_invalid(r, lr, field,
            json_is_string(json_object_get(lr->ctx->body, field))
            ? "must not contain control characters" : "must be a string");
        return NGX_ERROR;
    }

    if (rc == NGX_OK && value->len) {
        return NGX_OK;
    }

    ngx_str_null(value);

    if (required) {
        ngx_http_linegate_create_invalid(r, lr, field, "is required");
        return NGX_ERROR;
    }

    return NGX_DECLINED;
}


/*
 * 1-100 characters (code points) once trimmed, no control characters:
 * C0 and DEL (CHARS_TEXT), and C1, U+0080 to U+009F (UTF-8 C2 80 to
 * C2 9F: U+009B is a terminal's CSI, shown to every reader of the line)
 */
static void
ngx_http_linegate_create_name(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, const char *field, ngx_str_t *value)
{
    size_t  i, chars;

    if (ngx_http_linegate_create_string(r, lr, field, value, 1) != NGX_OK) {
        return;
    }

    ngx_http_linegate_create_trim(value);

    chars = 0;

    for (i = 0; i < value->len; i++) {
        if (!ngx_http_linegate_char_is(value->data[i],
                                       NGX_HTTP_LINEGATE_CHARS_TEXT)
            || (value->data[i] == 0xc2 && i + 1 < value->len
                && value->data[i + 1] >= 0x80 && value->data[i + 1] <= 0x9f))
        {
            ngx_http_linegate_create_invalid(r, lr, field,
                "must not contain control characters");
            return;
        }

        /* jansson gave valid UTF-8: count the bytes that start one */
        if ((value->data[i] & 0xc0) != 0x80) {
            chars++;
        }
    }

    if (chars == 0 || chars > 100) {
        ngx_http_linegate_create_invalid(r, lr, field,
            "must be 1 to 100 characters long");
    }
}


/*
 * Trimmed as Tuco's JavaScript trim() does: a name of U+00A0 or U+3000
 * alone is blank there, and was a 1-character name here. Control
 * characters (\n, \r...) are not trimmed: they are refused.
 */
static void
ngx_http_linegate_create_trim(ngx_str_t *value)
{
    size_t  n, k;

    while ((n = ngx_http_linegate_create_space(value->data, value->len))) {
        value->data += n;
        value->len -= n;
    }

    for ( ;; ) {
        /* a whole sequence of k bytes ending the value (valid UTF-8) */
        for (k = 1; k <= 3 && k <= value->len; k++) {
            n = ngx_http_linegate_create_space(
                    value->data + value->len - k, k);
            if (n == k) {
                break;
            }
        }

        if (k > 3 || k > value->len) {
            return;
        }

        value->len -= k;
    }
}


/*
 * The bytes of the white space p starts with, 0 if none: space, tab,
 * U+00A0, U+1680, U+2000-U+200A, U+2028, U+2029, U+202F, U+205F, U+3000,
 * U+FEFF (ECMAScript's WhiteSpace and LineTerminator, less the controls)
 */
static size_t
ngx_http_linegate_create_space(u_char *p, size_t len)
{
    if (len >= 1 && (p[0] == ' ' || p[0] == '\t')) {
        return 1;
    }

    if (len >= 2 && p[0] == 0xc2 && p[1] == 0xa0) {
        return 2;
    }

    if (len < 3) {
        return 0;
    }

    switch (p[0]) {

    case 0xe1:
        return (p[1] == 0x9a && p[2] == 0x80) ? 3 : 0;

    case 0xe2:
        if (p[1] == 0x80) {
            return (p[2] <= 0x8a || p[2] == 0xa8 || p[2] == 0xa9
                    || p[2] == 0xaf) ? 3 : 0;
        }

        return (p[1] == 0x81 && p[2] == 0x9f) ? 3 : 0;

    case 0xe3:
        return (p[1] == 0x80 && p[2] == 0x80) ? 3 : 0;

    case 0xef:
        return (p[1] == 0xbb && p[2] == 0xbf) ? 3 : 0;

    default:
        return 0;
    }
}


static void
ngx_http_linegate_create_kinds(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr)
{
    ngx_int_t   rc;
    ngx_str_t  *ct, *lt;

    ct = &lr->line.channel_type;
    lt = &lr->line.line_type;

    if (ngx_http_linegate_create_string(r, lr, "channelType", ct, 1)
        == NGX_OK
        && !ngx_http_linegate_line_is(ct, "phone")
        && !ngx_http_linegate_line_is(ct, "email"))
    {
        ngx_http_linegate_create_invalid(r, lr, "channelType",
                                         "must be \"phone\" or \"email\"");
    }

    rc = ngx_http_linegate_create_string(r, lr, "lineType", lt, 0);

    if (rc == NGX_DECLINED) {
        ngx_str_set(lt, "purchased");

    } else if (rc == NGX_OK
               && !ngx_http_linegate_line_is(lt, "purchased")
               && !ngx_http_linegate_line_is(lt, "byon"))
    {
        ngx_http_linegate_create_invalid(r, lr, "lineType",
                                         "must be \"purchased\" or \"byon\"");
    }
}


static void
ngx_http_linegate_create_contacts(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr)
{
    u_char                    *p;
    ngx_uint_t                 email_line, byon;
    ngx_http_linegate_line_t  *l;

    l = &lr->line;

    email_line = ngx_http_linegate_line_is(&l->channel_type, "email");
    byon = !email_line && ngx_http_linegate_line_is(&l->line_type, "byon");

    if (ngx_http_linegate_create_string(r, lr, "email", &l->email,
                                        email_line || byon)
        == NGX_OK
        && !ngx_http_linegate_create_email_valid(&l->email))
    {
        ngx_http_linegate_create_invalid(r, lr, "email",
            "must be a valid email address of at most 254 characters");
    }

    if (ngx_http_linegate_create_string(r, lr, "phone", &l->phone, byon)
        == NGX_OK
        && !ngx_http_linegate_e164_valid(l->phone.data, l->phone.len))
    {
        ngx_http_linegate_create_invalid(r, lr, "phone",
            "must be an E.164 number: + and 8 to 15 digits, the "
            "first not 0");
    }

    if (ngx_http_linegate_create_string(r, lr, "zipcode", &l->zipcode, 0)
        == NGX_OK
        && !((l->zipcode.len == 5 || l->zipcode.len == 10)
             && ngx_http_linegate_chars_are(l->zipcode.data, 5,
                                            NGX_HTTP_LINEGATE_CHARS_DIGIT)
             && (l->zipcode.len == 5
                 || (l->zipcode.data[5] == '-'
                     && ngx_http_linegate_chars_are(l->zipcode.data + 6, 4,
                                              NGX_HTTP_LINEGATE_CHARS_DIGIT)))))
    {
        ngx_http_linegate_create_invalid(r, lr, "zipcode",
            "must be a 5-digit ZIP code or ZIP+4 (12345-6789)");
    }

    if (ngx_http_linegate_create_string(r, lr, "state", &l->state, 0)
        == NGX_OK)
    {
        p = ngx_pnalloc(r->pool, 2);

        if (l->state.len != 2 || p == NULL
            || !ngx_http_linegate_chars_are(l->state.data, 2,
                                            NGX_HTTP_LINEGATE_CHARS_ALPHA))
        {
            ngx_http_linegate_create_invalid(r, lr, "state",
                                             "must be a 2-letter state code");

        } else {
            /* stored as written on envelopes */
            p[0] = ngx_toupper(l->state.data[0]);
            p[1] = ngx_toupper(l->state.data[1]);
            l->state.data = p;
        }
    }

    if (ngx_http_linegate_create_string(r, lr, "forwardCallsTo",
                                        &l->forward_calls_to, 0)
        == NGX_OK
        && !ngx_http_linegate_e164_valid(l->forward_calls_to.data,
                                         l->forward_calls_to.len))
    {
        ngx_http_linegate_create_invalid(r, lr, "forwardCallsTo",
            "must be an E.164 number: + and 8 to 15 digits, the "
            "first not 0");
    }

    if (ngx_http_linegate_create_string(r, lr, "profileImageUrl",
                                        &l->profile_image_url, 0)
        == NGX_OK
        && !ngx_http_linegate_create_url_valid(&l->profile_image_url))
    {
        ngx_http_linegate_create_invalid(r, lr, "profileImageUrl",
            "must be an http:// or https:// URL of at most 2048 characters");
    }
}


/*
 * Keep only what applies to the kind of line (SPEC 2.4): email lines are
 * "purchased" and have no phone details; a purchased phone line gets its
 * number when set up (operator API), a BYON line brings it.
 */
static void
ngx_http_linegate_create_applicable(ngx_http_linegate_lr_t *lr)
{
    ngx_http_linegate_line_t  *l;

    l = &lr->line;

    if (ngx_http_linegate_line_is(&l->channel_type, "email")) {
        ngx_str_set(&l->line_type, "purchased");
        ngx_str_null(&l->phone);
        ngx_str_null(&l->forward_calls_to);
        ngx_str_null(&l->zipcode);
        ngx_str_null(&l->state);
        return;
    }

    if (ngx_http_linegate_line_is(&l->line_type, "byon")) {
        ngx_str_null(&l->zipcode);
        ngx_str_null(&l->state);
        return;
    }

    ngx_str_null(&l->phone);
}


/* a plausible address: dot-atom local part, two or more DNS labels */
static ngx_int_t
ngx_http_linegate_create_email_valid(ngx_str_t *s)
{
    u_char      *p, *at, *end, *label;
    size_t       len;
    ngx_uint_t   labels;

    if (s->len > 254) {
        return 0;
    }

    end = s->data + s->len;
    at = NULL;

    for (p = s->data; p < end; p++) {
        if (*p == '@') {
            at = p;
        }
    }

    if (at == NULL || at == s->data || at - s->data > 64) {
        return 0;
    }

    for (p = s->data; p < at; p++) {
        if (ngx_http_linegate_char_is(*p, NGX_HTTP_LINEGATE_CHARS_ATEXT)) {
            continue;
        }

        if (*p == '.' && p != s->data && p + 1 != at && p[1] != '.') {
            continue;
        }

        return 0;
    }

    labels = 0;
    label = at + 1;

    for (p = at + 1; p <= end; p++) {

        if (p == end || *p == '.') {
            len = p - label;

            if (len == 0 || len > 63 || label[0] == '-' || p[-1] == '-') {
                return 0;
            }

            labels++;
            label = p + 1;
            continue;
        }

        if (!ngx_http_linegate_char_is(*p, NGX_HTTP_LINEGATE_CHARS_ALNUM)
            && *p != '-')
        {
            return 0;
        }
    }

    return labels >= 2;
}


static ngx_int_t
ngx_http_linegate_create_url_valid(ngx_str_t *s)
{
    size_t  skip;

    if (s->len > 2048) {
        return 0;
    }

    if (s->len > 7 && ngx_strncasecmp(s->data, (u_char *) "http://", 7) == 0)
    {
        skip = 7;

    } else if (s->len > 8
               && ngx_strncasecmp(s->data, (u_char *) "https://", 8) == 0)
    {
        skip = 8;

    } else {
        return 0;
    }

    /* a host, and nothing a client would have to escape */
    if (s->data[skip] == '/' || s->data[skip] == '?' || s->data[skip] == '#')
    {
        return 0;
    }

    return ngx_http_linegate_chars_are(s->data + skip, s->len - skip,
                                       NGX_HTTP_LINEGATE_CHARS_GRAPH);
}


/* the steps */

/* every Redis step resumes here, every Stripe step too (stripe_done) */
static void
ngx_http_linegate_create_resume(ngx_http_request_t *r, redisReply *reply)
{
    ngx_http_linegate_lr_t  *lr;

    lr = ngx_http_linegate_lines_lr(r);

    switch ((ngx_http_linegate_create_step_e) lr->ctx->state) {

    case NGX_HTTP_LINEGATE_CREATE_INDEX:
        ngx_http_linegate_create_indexed(r, lr, reply);
        return;

    case NGX_HTTP_LINEGATE_CREATE_SCRIPT:
        ngx_http_linegate_create_done(r, lr, reply);
        return;

    case NGX_HTTP_LINEGATE_CREATE_ISSUE:
        if (ngx_http_linegate_invoice_next(r, lr) == NGX_DONE) {
            ngx_http_linegate_create_invoiced(r, lr);
        }

        return;

    case NGX_HTTP_LINEGATE_CREATE_INVOICE_INDEX:
        ngx_http_linegate_create_invoice_indexed(r, lr, reply);
        return;

    case NGX_HTTP_LINEGATE_CREATE_STORE:
        ngx_http_linegate_create_stored(r, lr, reply);
        return;

    case NGX_HTTP_LINEGATE_CREATE_RESOLVE:
        ngx_http_linegate_create_resolved(r, lr, reply);
        return;

    case NGX_HTTP_LINEGATE_CREATE_RESOLVE_AGAIN:
        ngx_http_linegate_lines_durable_done(r, lr, reply);
        ngx_str_set(&lr->ctx->outcome, "provisioning");
        ngx_http_linegate_send_body(r, lr->status, lr->body.data,
                                    lr->body.len);
        return;

    case NGX_HTTP_LINEGATE_CREATE_UNISSUE:
    case NGX_HTTP_LINEGATE_CREATE_DISCARD:
        if (ngx_http_linegate_invoice_next(r, lr) == NGX_DONE) {
            ngx_http_linegate_create_discarded(r, lr);
        }

        return;

    case NGX_HTTP_LINEGATE_CREATE_RELEASE:
        if (reply != NULL && reply->type == REDIS_REPLY_INTEGER
            && reply->integer == 1)
        {
            /*
             * no request of this id, nor ever will be: its index goes,
             * and its set-up member (a cluster's, still there when
             * lr_create's answer was lost) rather than at the sweep
             */
            ngx_http_linegate_create_unindex(r, lr);
            (void) ngx_http_linegate_lr_setup_drop(r->connection->log,
                                                   &lr->setup);
            lr->setup.len = 0;
        }

        ngx_http_linegate_create_unjournal(r, lr, reply);
        ngx_http_linegate_lines_durable_done(r, lr, reply);
        ngx_http_linegate_create_failed(r, lr);
        return;

    case NGX_HTTP_LINEGATE_CREATE_STORE_AGAIN:
        ngx_http_linegate_create_unjournal(r, lr, reply);
        ngx_http_linegate_lines_durable_done(r, lr, reply);
        ngx_http_linegate_create_restored(r, lr, reply);
        return;

    default: /* NGX_HTTP_LINEGATE_CREATE_FAILED: answered */
        return;
    }
}


static void
ngx_http_linegate_create_stripe_done(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx)
{
    /* the answer is in ctx->stripe_* */
    ngx_http_linegate_create_resume(r, NULL);
}


/*
 * The failure step: what fail means depends on the step it happens in
 * (see the head of this file); the answer (create_failed) comes once
 * the invoice is discarded and the reservation released.
 */
static void
ngx_http_linegate_create_fail(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, ngx_http_linegate_lr_fail_e fail,
    ngx_uint_t result, ngx_int_t retry_after)
{
    lr->fail = fail;
    lr->fail_result = result;
    lr->fail_retry_after = retry_after;

    switch ((ngx_http_linegate_create_step_e) lr->ctx->state) {

    case NGX_HTTP_LINEGATE_CREATE_SCRIPT:
        if (fail == NGX_HTTP_LINEGATE_LR_FAIL_STORE
            && lr->ctx->store_not_run)
        {
            /*
             * Redis refused lr_create before it ran (its slot in
             * migration past the command's deadline, the cluster down):
             * nothing reserved, nothing to release. A release would meet
             * the same migration and wait as long again: until 2026-11-29
             * the 503 came after twice linegate_redis_command_timeout.
             */
            ngx_http_linegate_create_unrun(r, lr);
            ngx_http_linegate_create_failed(r, lr);
            return;
        }

        if (fail == NGX_HTTP_LINEGATE_LR_FAIL_STORE) {
            /*
             * lr_create may still run (Redis stalled) or may have run (the
             * reply lost): whatever it did is undone, and it does nothing
             * if it runs later (lr_release's mark)
             */
            ngx_http_linegate_create_release(r, lr);
            return;
        }

        /* nothing reserved */
        ngx_http_linegate_create_failed(r, lr);
        return;

    case NGX_HTTP_LINEGATE_CREATE_INVOICE_INDEX:
        if (ngx_http_linegate_line_is(&lr->invoice.status, "paid")) {
            /* billed already: neither discarded nor released */
            ngx_http_linegate_create_paid_kept(r, lr);
            return;
        }

        /*
         * The index is written, or not, or may be yet (Redis stalled):
         * the store was never sent, so no request names the invoice. It
         * is discarded, and its index goes after the SET (a durable DEL
         * on the same node's connection, which Redis runs after it).
         */
        ngx_http_linegate_lines_invoice_unindex(r, &lr->invoice.id);
        ngx_http_linegate_create_discard(r, lr,
                                         NGX_HTTP_LINEGATE_CREATE_DISCARD);
        return;

    case NGX_HTTP_LINEGATE_CREATE_STORE:
        if (fail == NGX_HTTP_LINEGATE_LR_FAIL_STORE) {
            lr->settled = 1;

            /*
             * Stored or not, it will be: the invoice is kept (voiding it
             * while Redis may already name it would leave a dead link),
             * the step sent again until Redis runs it (lr_invoice_store
             * is idempotent), and a retry with the same key replays the
             * 201.
             */
            lr->ctx->state = NGX_HTTP_LINEGATE_CREATE_STORE_AGAIN;

            /*
             * refused when it lands (the reservation dropped as
             * abandoned, or a reconciliation run fenced it to void the
             * invoice): nothing names the invoice, it is queued to be
             * discarded (create_stored_again). The customer rides along
             * as an argument the script does not read.
             */
            ngx_http_linegate_redis_arg_str(&lr->args, &lr->customer);
            ngx_http_linegate_lines_durable_then(r, lr,
                                    NGX_HTTP_LINEGATE_SCRIPT_LR_INVOICE_STORE,
                                    "lr_invoice_store",
                                    ngx_http_linegate_create_stored_again,
                                    ngx_http_linegate_create_resume);
            return;
        }

        /* refused: the request does not name the invoice, nor will */
        ngx_http_linegate_lines_invoice_unindex(r, &lr->invoice.id);
        ngx_http_linegate_create_discard(r, lr,
                                         NGX_HTTP_LINEGATE_CREATE_DISCARD);
        return;

    default: /* NGX_HTTP_LINEGATE_CREATE_ISSUE */
        /*
         * Billing failed, nothing names the invoice yet: one Stripe paid
         * at finalization (amount due 0) whose answer was lost cannot be
         * discarded, and is the request's after all (create_discarded).
         * Any other failure only discards: a kept invoice that fails
         * here again (its body not built) is not kept again, no loop.
         */
        ngx_http_linegate_create_discard(r, lr,
                                   fail == NGX_HTTP_LINEGATE_LR_FAIL_BILLING
                                   ? NGX_HTTP_LINEGATE_CREATE_UNISSUE
                                   : NGX_HTTP_LINEGATE_CREATE_DISCARD);
        return;
    }
}


/*
 * CREATE_UNISSUE, CREATE_DISCARD: the invoice machine discards what was
 * made; only UNISSUE keeps one Stripe says is paid
 */
static void
ngx_http_linegate_create_discard(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, ngx_http_linegate_create_step_e step)
{
    lr->ctx->state = step;

    if (ngx_http_linegate_invoice_discard(r, lr,
                                          ngx_http_linegate_create_stripe_done,
                                          step
                                          == NGX_HTTP_LINEGATE_CREATE_UNISSUE)
        == NGX_DONE)
    {
        ngx_http_linegate_create_discarded(r, lr);
    }
}


/*
 * The machine ended its discard. An invoice it kept (paid: its void and
 * delete refused, a GET said so) is billed already: not a failure, the
 * request goes on as if finalize had answered "paid" (create_invoiced:
 * the index, the store, lr_resolve), and the reservation is kept.
 * Anything else: the reservation goes.
 */
static void
ngx_http_linegate_create_discarded(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr)
{
    if (lr->invoice.kept) {
        lr->fail = NGX_HTTP_LINEGATE_LR_FAIL_NONE;
        ngx_http_linegate_create_invoiced(r, lr);
        return;
    }

    ngx_http_linegate_create_release(r, lr);
}


/* CREATE_RELEASE: lr_release.lua frees the key and the reservation */
static void
ngx_http_linegate_create_release(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr)
{
    ngx_http_linegate_create_release_args(r, lr, &lr->args);

    /* handed to the durable writes: the request's cleanup has no more to do */
    lr->settled = 1;
    lr->ctx->state = NGX_HTTP_LINEGATE_CREATE_RELEASE;

    ngx_http_linegate_lines_durable(r, lr,
                                    NGX_HTTP_LINEGATE_SCRIPT_LR_RELEASE,
                                    "lr_release",
                                    ngx_http_linegate_create_resume);
}


/* CREATE_FAILED: the failure's answer */
static void
ngx_http_linegate_create_failed(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr)
{
    lr->ctx->state = NGX_HTTP_LINEGATE_CREATE_FAILED;

    ngx_http_linegate_lines_failed(r, lr);
}


/*
 * CREATE_INDEX: the owner index lg:line:<id> -> W, written before the
 * workspace's step creates the line, so that no line ever exists without
 * it. The index alone (lr_create refused, or never ran) names a
 * workspace without the line: every reader of the index (the operator's
 * line calls, lr_release) reads the workspace's request next and answers
 * it as unknown. A refusal's index is deleted after it (create_unindex);
 * one a crash leaves stays, harmless. The id is new: no other request
 * writes this index.
 *
 * On a cluster the index's slot is another node's: lr_create waits for
 * its answer (a step of its own), and for the set-up member's and the
 * journal's, written in the same round trip (a pipeline: each command to
 * its node, all answered before lr_create is sent). On one Redis (or
 * Sentinel's master) both commands go in one write on one connection,
 * which Redis runs in order: the SET before lr_create, one round trip for
 * the two. Should the SET fail there (lr_create then fails too: out of
 * memory) or its answer be lost, create_done writes the index of a line
 * made again.
 */
static void
ngx_http_linegate_create_index(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr)
{
    ngx_http_linegate_redis_args_t  *a;
    ngx_http_linegate_main_conf_t   *lmcf;

    lmcf = ngx_http_get_module_main_conf(r, ngx_http_linegate_module);

    /* the command keeps its arguments: lr->args is lr_create's */
    a = ngx_palloc(r->pool, sizeof(ngx_http_linegate_redis_args_t));

    /* the journal's member, known from here on for a RELEASE to remove */
    if (a == NULL
        || ngx_http_linegate_line_index_args(r, &lr->id, &lr->who.value, a)
           != NGX_OK
        || ngx_http_linegate_create_journal_member(r, lr) != NGX_OK)
    {
        ngx_http_linegate_internal_error(r);
        return;
    }

    if (lmcf->redis_cluster) {
        lr->ctx->state = NGX_HTTP_LINEGATE_CREATE_INDEX;

        if (ngx_http_linegate_create_index_cluster(r, lr, a) != NGX_OK) {
            ngx_str_null(&lr->setup);
            ngx_str_null(&lr->journal);
            ngx_http_linegate_store_unavailable(r);
        }

        return;
    }

    lr->index_pending = 1;

    if (ngx_http_linegate_redis_command(r, a,
                                        ngx_http_linegate_create_index_reply)
        != NGX_OK)
    {
        ngx_http_linegate_store_unavailable(r);
        return;
    }

    ngx_http_linegate_create_script(r, lr);
}


/*
 * A cluster: the index's SET, the set-up member's ZADD and the journal
 * member's, one pipeline (two nodes, one round trip). The set-up member
 * covers the line lr_create may make: its entry is appended after
 * lr_create (create_relay), or by the reconciliation's sweep if this
 * worker dies in between. The journal's covers the reservation it may
 * make instead, which lr_create cannot write in another slot: written
 * after it, a worker dying in between would leave a reservation nobody
 * sweeps.
 */
static ngx_int_t
ngx_http_linegate_create_index_cluster(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, ngx_http_linegate_redis_args_t *a)
{
    ngx_http_linegate_redis_args_t  cmds[3];

    if (ngx_http_linegate_lr_setup_member(r->pool, &lr->who.value, &lr->id,
                                          &lr->setup)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    cmds[0] = *a;
    ngx_http_linegate_lr_setup_add_args(r, &cmds[1], &lr->setup);
    ngx_http_linegate_lr_journal_add_args(r, &cmds[2],
                                          NGX_HTTP_LINEGATE_KEY_LR_INFLIGHT,
                                          &lr->journal);

    return ngx_http_linegate_redis_pipeline(r, 3, cmds,
                                            ngx_http_linegate_create_resume);
}


/* the index's SET sent with lr_create (one Redis): its answer, noted */
static void
ngx_http_linegate_create_index_reply(ngx_http_request_t *r,
    redisReply *reply)
{
    ngx_http_linegate_lr_t  *lr;

    lr = ngx_http_linegate_lines_lr(r);

    lr->index_pending = 0;

    if (reply == NULL || reply->type != REDIS_REPLY_STATUS) {
        lr->index_lost = 1;
    }
}


/*
 * the index's step of its own (a cluster), with the set-up and journal
 * members, then lr_create
 */
static void
ngx_http_linegate_create_indexed(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, redisReply *reply)
{
    if (reply == NULL) {
        /* no line, no claim: only the index and the members may be */
        ngx_http_linegate_create_unindex(r, lr);
        (void) ngx_http_linegate_lr_setup_drop(r->connection->log,
                                               &lr->setup);
        ngx_http_linegate_create_journal_drop(r, lr);
        ngx_http_linegate_store_unavailable(r);
        return;
    }

    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 3
        || reply->element[0]->type != REDIS_REPLY_STATUS
        || reply->element[1]->type != REDIS_REPLY_INTEGER
        || reply->element[2]->type != REDIS_REPLY_INTEGER)
    {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      NGX_HTTP_LINEGATE_LOG "unexpected reply to the line "
                      "request index and its members (types %d, %d, %d)",
                      reply->elements > 0 ? reply->element[0]->type : -1,
                      reply->elements > 1 ? reply->element[1]->type : -1,
                      reply->elements > 2 ? reply->element[2]->type : -1);

        /* no line was made: none stays */
        ngx_http_linegate_create_unindex(r, lr);
        (void) ngx_http_linegate_lr_setup_drop(r->connection->log,
                                               &lr->setup);
        ngx_http_linegate_create_journal_drop(r, lr);
        ngx_http_linegate_internal_error(r);
        return;
    }

    ngx_http_linegate_create_script(r, lr);
}


/*
 * lr_create made the line, and the index's SET sent with it (one Redis)
 * did not answer OK: written again, durably (the id is this request's)
 */
static void
ngx_http_linegate_create_reindex(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr)
{
    ngx_http_linegate_redis_args_t  a;

    if (!lr->index_pending && !lr->index_lost) {
        return;
    }

    if (ngx_http_linegate_line_index_args(r, &lr->id, &lr->who.value, &a)
        == NGX_OK)
    {
        (void) ngx_http_linegate_redis_durable_command(r->connection->log,
                                                       &a,
                                                       "line request index");
    }
}


/*
 * lr_create answered an outcome that created no line: its index goes
 * (the id is this request's own)
 */
static void
ngx_http_linegate_create_unindex(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr)
{
    if (!lr->deferred) {
        ngx_http_linegate_line_unindex(r, &lr->id);
    }
}


/*
 * The owner index lg:line:<id> of a line request that is not and never
 * will be (lr_create made no line, or lr_release answered it gone): a
 * durable DEL, idempotent; the release's mark keeps the id from being
 * created again. Also the reconcile sweep's.
 */
void
ngx_http_linegate_line_unindex(ngx_http_request_t *r, ngx_str_t *id)
{
    ngx_http_linegate_redis_args_t  a;

    if (ngx_http_linegate_line_index_args(r, id, NULL, &a) == NGX_OK) {
        (void) ngx_http_linegate_redis_durable_command(r->connection->log,
                                                       &a,
                                                       "line request unindex");
    }
}


/* "SET lg:line:<id> <ws>", or "DEL lg:line:<id>" when ws is NULL */
static ngx_int_t
ngx_http_linegate_line_index_args(ngx_http_request_t *r, ngx_str_t *id,
    ngx_str_t *ws, ngx_http_linegate_redis_args_t *a)
{
    ngx_str_t  key;

    if (ngx_http_linegate_key(r->pool, NGX_HTTP_LINEGATE_KEY_LINE, id, NULL,
                              &key)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    ngx_http_linegate_redis_args_init(a);
    ngx_http_linegate_redis_arg_cstr(a, ws ? "SET" : "DEL");
    ngx_http_linegate_redis_arg_str(a, &key);

    if (ws != NULL) {
        ngx_http_linegate_redis_arg_str(a, ws);
    }

    return NGX_OK;
}


/* CREATE_SCRIPT: the decision (lr_create) */

static void
ngx_http_linegate_create_script(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr)
{
    ngx_http_linegate_line_t        *l;
    ngx_http_linegate_redis_args_t  *a;
    ngx_http_linegate_main_conf_t   *lmcf;

    static ngx_str_t  none = ngx_null_string;

    lmcf = ngx_http_get_module_main_conf(r, ngx_http_linegate_module);

    a = &lr->args;
    l = &lr->line;

    /*
     * The answer of an included line: lr_create keeps it under the
     * idempotency key in the step that creates the line (sent only with
     * a key), and it is what this request answers once the line is made
     */
    if (!lr->deferred) {
        l->workspace = lr->who.value;
        ngx_str_set(&l->status, "provisioning");
        ngx_str_set(&l->payment_status, "not_required");

        if (ngx_http_linegate_line_status_body(r, l, &lr->body) != NGX_OK) {
            ngx_http_linegate_lines_defer(lr,
                                        NGX_HTTP_LINEGATE_LR_DEFER_INTERNAL,
                                        NULL, NULL);
        }

        ngx_str_null(&l->workspace);
    }

    ngx_http_linegate_lines_args(r, lr);

    ngx_http_linegate_redis_arg_str(a, &lr->id);
    ngx_http_linegate_redis_arg_int(r, a, lr->now_ms);
    ngx_http_linegate_redis_arg_str(a, &lr->now_iso);
    ngx_http_linegate_redis_arg_str(a, &l->channel_type);
    ngx_http_linegate_redis_arg_str(a, &l->line_type);
    ngx_http_linegate_redis_arg_str(a, &l->first_name);
    ngx_http_linegate_redis_arg_str(a, &l->last_name);
    ngx_http_linegate_redis_arg_str(a, &l->email);
    ngx_http_linegate_redis_arg_str(a, &l->phone);
    ngx_http_linegate_redis_arg_str(a, &l->forward_calls_to);
    ngx_http_linegate_redis_arg_str(a, &l->profile_image_url);
    ngx_http_linegate_redis_arg_str(a, &l->zipcode);
    ngx_http_linegate_redis_arg_str(a, &l->state);
    ngx_http_linegate_redis_arg_str(a, &lr->idem.digest);
    ngx_http_linegate_redis_arg_str(a, &lr->idem.fp);
    ngx_http_linegate_redis_arg_int(r, a, lmcf->idempotency_ttl);
    ngx_http_linegate_redis_arg_int(r, a,
                                    (ngx_int_t)
                                    ngx_http_linegate_create_stale(lmcf));
    ngx_http_linegate_redis_arg_str(a, lr->idem.digest.len ? &lr->body
                                                           : &none);

    /*
     * KEYS[4..9], after lr_gate's; KEYS[10] the set-up stream and
     * KEYS[11] the journal on one Redis only: on a cluster they are
     * other slots (lr_setup.h, create_index_cluster)
     */
    ngx_http_linegate_lines_key(lr, a, NGX_HTTP_LINEGATE_KEY_WS_LRVOID,
                                &lr->who.value, &lr->id);
    ngx_http_linegate_lines_request_keys(r->pool, a, &lr->who.value, &lr->id,
                                         &lr->idem.digest);

    if (!lmcf->redis_cluster) {
        ngx_http_linegate_redis_arg_key(a,
            ngx_http_linegate_key_fixed(NGX_HTTP_LINEGATE_KEY_PROVISIONING));
        ngx_http_linegate_redis_arg_key(a,
            ngx_http_linegate_key_fixed(NGX_HTTP_LINEGATE_KEY_LR_INFLIGHT));
    }

    lr->ctx->state = NGX_HTTP_LINEGATE_CREATE_SCRIPT;

    if (ngx_http_linegate_redis_script(r, NGX_HTTP_LINEGATE_SCRIPT_LR_CREATE,
                                       a->nkeys, a,
                                       ngx_http_linegate_create_resume)
        != NGX_OK)
    {
        /* nothing was sent (the slot's master not connected) */
        ngx_http_linegate_create_unrun(r, lr);
        lr->fail = NGX_HTTP_LINEGATE_LR_FAIL_STORE;
        ngx_http_linegate_create_failed(r, lr);
    }
}


/*
 * lr_create did not run, nor will (not sent, or refused before it ran:
 * ctx->store_not_run): no line, no reservation, no key held, nothing to
 * release. What was written before it goes now rather than at the
 * sweep: the owner index (a durable DEL) and, on a cluster, the set-up
 * and journal members (on one Redis lr_create writes them itself)
 */
static void
ngx_http_linegate_create_unrun(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr)
{
    ngx_http_linegate_main_conf_t  *lmcf;

    lmcf = ngx_http_get_module_main_conf(r, ngx_http_linegate_module);

    ngx_http_linegate_create_unindex(r, lr);

    (void) ngx_http_linegate_lr_setup_drop(r->connection->log, &lr->setup);
    lr->setup.len = 0;

    if (lmcf->redis_cluster) {
        ngx_http_linegate_create_journal_drop(r, lr);
    }

    ngx_str_null(&lr->journal);
}


static void
ngx_http_linegate_create_done(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, redisReply *reply)
{
    int64_t                         made;
    ngx_int_t                       code;
    ngx_http_linegate_main_conf_t  *lmcf;

    if (reply == NULL && !lr->deferred) {
        ngx_http_linegate_create_fail(r, lr, NGX_HTTP_LINEGATE_LR_FAIL_STORE,
                                      0, -1);
        return;
    }

    if (ngx_http_linegate_reply_int(reply, 0, &made) != NGX_OK) {
        made = -1;
    }

    /* no line made: the index goes, queued before the answer is sent */
    if (made != NGX_HTTP_LINEGATE_LR_OK
        && made != NGX_HTTP_LINEGATE_LR_RESERVED)
    {
        ngx_http_linegate_create_unindex(r, lr);

    } else {
        ngx_http_linegate_create_reindex(r, lr);
    }

    /*
     * no reservation: a cluster's journal member goes (on one Redis
     * lr_create wrote none)
     */
    if (made != NGX_HTTP_LINEGATE_LR_RESERVED) {
        lmcf = ngx_http_get_module_main_conf(r, ngx_http_linegate_module);

        if (lmcf->redis_cluster) {
            ngx_http_linegate_create_journal_drop(r, lr);
        }

        ngx_str_null(&lr->journal);
    }

    ngx_http_linegate_create_relay(r, lr, reply);

    code = ngx_http_linegate_lines_gate(r, lr, reply);

    if (code == NGX_DONE) {
        return;
    }

    lr->line.workspace = lr->ws;

    ngx_http_linegate_create_outcome(r, lr, code, reply);
}


/*
 * A cluster: lr_create answered, so its set-up member goes; after the
 * entry's XADD when the answer is an included line made (LR_OK), at
 * once otherwise. Unanswered (reply NULL), the member stays for the
 * reconciliation's sweep, which finds the line as lr_create left it.
 */
static void
ngx_http_linegate_create_relay(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, redisReply *reply)
{
    int64_t  code;

    if (lr->setup.len == 0 || reply == NULL) {
        return;
    }

    if (ngx_http_linegate_reply_int(reply, 0, &code) != NGX_OK
        || code != NGX_HTTP_LINEGATE_LR_OK)
    {
        (void) ngx_http_linegate_lr_setup_drop(r->connection->log,
                                               &lr->setup);
        lr->setup.len = 0;
        return;
    }

    ngx_http_linegate_lines_setup_relay(r, lr, &lr->who.value);
}


static void
ngx_http_linegate_create_outcome(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, ngx_int_t code, redisReply *reply)
{
    switch (code) {

    case NGX_HTTP_LINEGATE_LR_REPLAY:
        ngx_http_linegate_create_stored_answer(r, reply, 1);
        return;

    case NGX_HTTP_LINEGATE_LR_IDEM_MISMATCH:
        ngx_http_linegate_error(r, NGX_HTTP_LINEGATE_UNPROCESSABLE,
                                "IDEMPOTENCY_KEY_MISMATCH",
                                "This Idempotency-Key was used with a "
                                "different request body");
        return;

    case NGX_HTTP_LINEGATE_LR_IDEM_IN_USE:
        ngx_http_linegate_error(r, NGX_HTTP_CONFLICT,
                                "IDEMPOTENCY_KEY_IN_USE",
                                "A request with this Idempotency-Key is "
                                "still being processed");
        return;

    case NGX_HTTP_LINEGATE_LR_READ_ONLY:
        ngx_http_linegate_lines_read_only(r, reply, 3);
        return;

    case NGX_HTTP_LINEGATE_LR_SUBSCRIPTION:
        ngx_str_set(&lr->ctx->outcome, "subscription_required");
        ngx_http_linegate_create_stored_answer(r, reply, 0);
        return;

    case NGX_HTTP_LINEGATE_LR_FORBIDDEN:
        ngx_str_set(&lr->ctx->outcome, "forbidden_line_type");
        ngx_http_linegate_create_stored_answer(r, reply, 0);
        return;

    case NGX_HTTP_LINEGATE_LR_PENDING:
        ngx_str_set(&lr->ctx->outcome, NGX_HTTP_LINEGATE_LR_AWAITING);
        ngx_http_linegate_create_stored_answer(r, reply, 0);
        return;

    case NGX_HTTP_LINEGATE_LR_NO_CUSTOMER:
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      NGX_HTTP_LINEGATE_LOG "workspace \"%V\" has no "
                      "stripeCustomerId: an add-on line cannot be billed",
                      &lr->ws);
        ngx_http_linegate_error(r, NGX_HTTP_BAD_GATEWAY,
                                "BILLING_UNAVAILABLE",
                                "Billing is not set up for this workspace");
        return;

    case NGX_HTTP_LINEGATE_LR_OK:
        ngx_str_set(&lr->ctx->outcome, "provisioning");
        ngx_http_linegate_send_body(r, NGX_HTTP_CREATED, lr->body.data,
                                    lr->body.len);
        return;

    case NGX_HTTP_LINEGATE_LR_RESERVED:
        ngx_http_linegate_create_reserved(r, lr, reply);
        return;

    default:
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      NGX_HTTP_LINEGATE_LOG "lr_create answered %i", code);
        ngx_http_linegate_create_fail(r, lr,
                                      NGX_HTTP_LINEGATE_LR_FAIL_INTERNAL,
                                      0, -1);
        return;
    }
}


/*
 * A business outcome as lr_create kept it under the idempotency key:
 * {code, ws, remaining, status, body}, answered byte for byte, the first
 * time as on a replay
 */
static void
ngx_http_linegate_create_stored_answer(ngx_http_request_t *r,
    redisReply *reply, ngx_uint_t replayed)
{
    int64_t                   status;
    ngx_str_t                 body, copy;
    ngx_http_linegate_ctx_t  *ctx;

    /* the reply is freed when this handler returns: a copy is sent */
    if (ngx_http_linegate_reply_int(reply, 3, &status) != NGX_OK
        || status < 200 || status > 599
        || ngx_http_linegate_reply_str(reply, 4, &body) != NGX_OK
        || ngx_http_linegate_pstr(r->pool, &copy, body.data, body.len)
           == NULL)
    {
        ngx_http_linegate_internal_error(r);
        return;
    }

    if (replayed) {
        ctx = ngx_http_linegate_get_ctx(r);
        ctx->replayed = 1;
        ngx_str_set(&ctx->outcome, "replayed");
    }

    ngx_http_linegate_send_body(r, (ngx_uint_t) status, copy.data, copy.len);
}


/* CREATE_ISSUE: the reservation is written, bill it */

static void
ngx_http_linegate_create_reserved(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, redisReply *reply)
{
    ngx_str_t            customer;
    ngx_str_t           *key;
    ngx_pool_cleanup_t  *cln;

    /* the reservation is held: a failure from here on releases it */
    lr->ctx->state = NGX_HTTP_LINEGATE_CREATE_ISSUE;

    key = &lr->invoice.key;
    key->data = ngx_pnalloc(r->pool, sizeof("lg-") - 1 + lr->id.len);

    if (ngx_http_linegate_reply_str(reply, 3, &customer) != NGX_OK
        || ngx_http_linegate_pstr(r->pool, &lr->customer, customer.data,
                                  customer.len)
           == NULL
        || key->data == NULL)
    {
        ngx_http_linegate_create_fail(r, lr,
                                      NGX_HTTP_LINEGATE_LR_FAIL_INTERNAL,
                                      0, -1);
        return;
    }

    key->len = ngx_sprintf(key->data, "lg-%V", &lr->id) - key->data;

    /* a request freed while billing still releases its reservation */
    lr->release = ngx_palloc(r->pool,
                             sizeof(ngx_http_linegate_redis_args_t));
    cln = ngx_pool_cleanup_add(r->pool, 0);

    if (lr->release == NULL || cln == NULL) {
        ngx_http_linegate_create_fail(r, lr,
                                      NGX_HTTP_LINEGATE_LR_FAIL_INTERNAL,
                                      0, -1);
        return;
    }

    ngx_http_linegate_create_release_args(r, lr, lr->release);

    cln->handler = ngx_http_linegate_create_cleanup;
    cln->data = lr;

    ngx_str_set(&lr->line.status, NGX_HTTP_LINEGATE_LR_AWAITING);
    ngx_str_set(&lr->line.payment_status, "unpaid");

    ngx_http_linegate_create_late(r, lr);

    /* the journal's member is written (create_journal_member): bill */
    if (ngx_http_linegate_invoice_issue(r, lr,
                                        ngx_http_linegate_create_stripe_done)
        == NGX_DONE)
    {
        ngx_http_linegate_create_invoiced(r, lr);
    }
}


/*
 * A reservation as old as linegate_reconcile_lost_after is a dead
 * worker's to a reconciliation run: it sweeps the journal's member,
 * finds no invoice at Stripe and releases the reservation. A creation
 * stalled that long (its worker stopped, starved) that made its invoice
 * after that found its store refused, and an invoice Stripe paid at
 * finalization (the customer's credit balance) could then be neither
 * voided nor stored: a charge with no line, for a human. lr_create drops
 * a reservation with no invoice as abandoned after 10 minutes too. So
 * the invoice machine makes, fills or finalizes no invoice from then on
 * (invoice_late): the creation gives up, a draft it made discarded, the
 * reservation released (idempotent: the run's own release finds nothing
 * left), 503. Measured as the run measures it: nginx's clock, from the
 * time the reservation and its member were scored (the request's start;
 * a cluster's member a little later). A run on a host whose clock runs
 * ahead by d still meets that race within d.
 */
static void
ngx_http_linegate_create_late(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr)
{
    ngx_http_linegate_main_conf_t  *lmcf;

    lmcf = ngx_http_get_module_main_conf(r, ngx_http_linegate_module);

    lr->invoice.lost_at = lr->now_ms
                          + (int64_t) ngx_min(lmcf->reconcile_lost,
                                              NGX_HTTP_LINEGATE_LR_STALE);
}


/*
 * A reservation without an invoice is abandoned (lr_create's ARGV[23])
 * once the last call that makes money its creation may have sent (a
 * finalize sent just before create_late's deadline) has had its
 * linegate_stripe_timeout and the repairs' budget to be answered and
 * stored: taken at 10 minutes, an invoice paid at finalization met a
 * refused store, a charge with no line (t/127)
 */
int64_t
ngx_http_linegate_create_stale(ngx_http_linegate_main_conf_t *lmcf)
{
    return (int64_t) NGX_HTTP_LINEGATE_LR_STALE
           + (int64_t) lmcf->stripe_timeout
           + NGX_HTTP_LINEGATE_INVOICE_BUDGET;
}


/*
 * The request's member "<W> <id>" of the journal lg:{fleet}:lr:inflight,
 * built before lr_create is sent: lr_create writes it with a reservation
 * on one Redis, create_index_cluster before lr_create on a cluster.
 */
static ngx_int_t
ngx_http_linegate_create_journal_member(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr)
{
    u_char  *p;

    p = ngx_pnalloc(r->pool, lr->who.value.len + 1 + lr->id.len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    lr->journal.data = p;
    lr->journal.len = ngx_sprintf(p, "%V %V", &lr->who.value, &lr->id) - p;

    return NGX_OK;
}


/*
 * The request settled (lr_invoice_store or lr_release answered): its
 * journal member goes, a durable ZREM (idempotent). An unanswered step
 * leaves it: the sweep finds the request as that step left it.
 */
static void
ngx_http_linegate_create_unjournal(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, redisReply *reply)
{
    if (reply != NULL && reply->type == REDIS_REPLY_INTEGER) {
        ngx_http_linegate_create_journal_drop(r, lr);
    }
}


/* the journal's member goes, if it may be there: a durable ZREM */
static void
ngx_http_linegate_create_journal_drop(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr)
{
    ngx_http_linegate_redis_args_t  a;

    if (lr->journal.len == 0) {
        return;
    }

    ngx_http_linegate_redis_args_init(&a);
    ngx_http_linegate_redis_arg_cstr(&a, "ZREM");
    ngx_http_linegate_redis_arg_str(&a,
        ngx_http_linegate_key_fixed(NGX_HTTP_LINEGATE_KEY_LR_INFLIGHT));
    ngx_http_linegate_redis_arg_str(&a, &lr->journal);

    (void) ngx_http_linegate_redis_durable_command(r->connection->log, &a,
                                                   "a journal member's "
                                                   "removal");

    ngx_str_null(&lr->journal);
}


/*
 * The machine ended: CREATE_INVOICE_INDEX, or the failure of CREATE_ISSUE.
 * The index is its own step on one Redis too (unlike the owner index,
 * sent in lr_create's write): Redis runs a script written after a SET
 * that failed (NOPERM, OOM, BUSY), so only an index answered OK lets the
 * store go, and a store sent again (STORE_AGAIN, durable) is then safe.
 * One round trip after three Stripe calls.
 */
static void
ngx_http_linegate_create_invoiced(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr)
{
    ngx_http_linegate_lr_fail_e  fail;

    if (lr->invoice.late) {
        /* create_late: a draft discarded, the reservation released, 503 */
        ngx_http_linegate_create_fail(r, lr, NGX_HTTP_LINEGATE_LR_FAIL_STORE,
                                      0, -1);
        return;
    }

    if (lr->invoice.result != NGX_HTTP_LINEGATE_STRIPE_OK) {
        ngx_http_linegate_create_fail(r, lr,
                                      NGX_HTTP_LINEGATE_LR_FAIL_BILLING,
                                      lr->invoice.result,
                                      lr->invoice.retry_after);
        return;
    }

    lr->line.invoice_id = lr->invoice.id;
    lr->line.payment_url = lr->invoice.url;

    if (ngx_http_linegate_line_is(&lr->invoice.status, "paid")) {
        /*
         * Amount due 0 (a price of 0, a coupon, the customer's credit
         * balance): Stripe paid it at finalization, and nobody is to be
         * sent a link. The answer, kept under the idempotency key by the
         * store, is the request paid (SPEC 2.3), which lr_resolve makes
         * it once the store named the invoice (CREATE_RESOLVE).
         */
        ngx_str_set(&lr->line.status, "provisioning");
        ngx_str_set(&lr->line.payment_status, "paid");
    }

    if (ngx_http_linegate_line_status_body(r, &lr->line, &lr->body)
        != NGX_OK)
    {
        ngx_http_linegate_create_fail(r, lr,
                                      NGX_HTTP_LINEGATE_LR_FAIL_INTERNAL,
                                      0, -1);
        return;
    }

    lr->status = NGX_HTTP_CREATED;
    lr->ctx->state = NGX_HTTP_LINEGATE_CREATE_INVOICE_INDEX;

    fail = ngx_http_linegate_lines_invoice_index_send(r, lr,
                                        ngx_http_linegate_create_resume);
    if (fail != NGX_HTTP_LINEGATE_LR_FAIL_NONE) {
        ngx_http_linegate_create_fail(r, lr, fail, 0, -1);
    }
}


/* CREATE_INVOICE_INDEX answered: OK lets the store go */
static void
ngx_http_linegate_create_invoice_indexed(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, redisReply *reply)
{
    ngx_http_linegate_lr_fail_e  fail;

    fail = ngx_http_linegate_lines_invoice_indexed(r, lr, reply);
    if (fail != NGX_HTTP_LINEGATE_LR_FAIL_NONE) {
        ngx_http_linegate_create_fail(r, lr, fail, 0, -1);
        return;
    }

    ngx_http_linegate_create_store(r, lr);
}


/* CREATE_STORE: lr_invoice_store.lua, the workspace's slot */
static void
ngx_http_linegate_create_store(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr)
{
    lr->ctx->state = NGX_HTTP_LINEGATE_CREATE_STORE;

    ngx_http_linegate_create_store_args(r, lr);

    ngx_http_linegate_lines_call(r, lr,
                                 NGX_HTTP_LINEGATE_SCRIPT_LR_INVOICE_STORE,
                                 ngx_http_linegate_create_resume);
}


/* lr_invoice_store's 2 keys and 11 arguments, in lr->args */
static void
ngx_http_linegate_create_store_args(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr)
{
    ngx_http_linegate_redis_args_t  *a;
    ngx_http_linegate_main_conf_t   *lmcf;

    lmcf = ngx_http_get_module_main_conf(r, ngx_http_linegate_module);

    ngx_http_linegate_lines_line_args(lr);
    a = &lr->args;

    ngx_http_linegate_redis_arg_str(a, &lr->invoice.id);
    ngx_http_linegate_redis_arg_str(a, &lr->invoice.url);
    ngx_http_linegate_redis_arg_int(r, a, lr->now_ms);
    ngx_http_linegate_redis_arg_str(a, &lr->idem.digest);
    ngx_http_linegate_redis_arg_str(a, &lr->idem.fp);
    ngx_http_linegate_redis_arg_int(r, a, NGX_HTTP_CREATED);
    ngx_http_linegate_redis_arg_str(a, &lr->body);
    ngx_http_linegate_redis_arg_int(r, a, lmcf->idempotency_ttl);
    /* paid at finalization: stored even on a request a run fenced */
    ngx_http_linegate_redis_arg_cstr(a,
                        ngx_http_linegate_line_is(&lr->invoice.status, "paid")
                        ? "paid" : "open");

    ngx_http_linegate_lines_key(lr, a, NGX_HTTP_LINEGATE_KEY_WS_IDEM,
                                &lr->ws, &lr->idem.digest);
}


/*
 * The store sent again (STORE_AGAIN, or create_paid_kept's) done: 0,
 * refused, so no request names the invoice, which stays open and payable
 * unless it is queued to be voided; 1, stored, an invoice Stripe paid at
 * finalization is promoted (create_paid_resolve). args: lr_invoice_store's
 * 2 keys, its 11 arguments, the customer.
 */
static void
ngx_http_linegate_create_stored_again(redisReply *reply,
    ngx_http_linegate_redis_args_t *args, ngx_str_t *note)
{
    ngx_str_t  ws, id, invoice, customer, paid;

    if (reply == NULL || reply->type != REDIS_REPLY_INTEGER
        || args->argc != 14)
    {
        return;
    }

    if (reply->integer == 1) {
        ngx_http_linegate_lines_arg(args, 12, &paid);

        if (ngx_http_linegate_line_is(&paid, "paid")) {
            ngx_http_linegate_create_paid_resolve(args);
        }

        return;
    }

    if (reply->integer != 0) {
        return;
    }

    ngx_http_linegate_lines_arg(args, 2, &ws);
    ngx_http_linegate_lines_arg(args, 3, &id);
    ngx_http_linegate_lines_arg(args, 4, &invoice);
    ngx_http_linegate_lines_arg(args, 13, &customer);

    ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                  NGX_HTTP_LINEGATE_LOG "line request \"%V\" refused its "
                  "invoice \"%V\" sent again (dropped, or fenced by a "
                  "reconciliation run): invoice queued to be voided", &id,
                  &invoice);

    ngx_http_linegate_lines_orphan_of(ngx_cycle->log, &ws, &id, &invoice,
                                      &customer);
}


/*
 * The store sent again (durable: STORE_AGAIN, or create_paid_kept's after
 * its index) stored an invoice Stripe paid at finalization: the request
 * names it but still awaits payment, and its invoice.paid most likely
 * came before the index (acknowledged as unknown). On one Redis the
 * promotion follows as a durable lr_resolve "paid" (idempotent: a
 * request already promoted, by the request's own RESOLVE, a read or the
 * webhook, is left as it is; it writes the set-up entry itself), as
 * create_resolved sends it again. Not on a cluster, where nginx relays
 * the set-up entry after lr_resolve from a member written before it
 * (lr_setup.h): a durable promotion landing after a run dropped that
 * member would never be set up; there a read's reconciliation promotes
 * it. args: lr_invoice_store's 2 keys, its 11 arguments, the customer;
 * the keys built in a pool of its own (the write copies them).
 */
static void
ngx_http_linegate_create_paid_resolve(ngx_http_linegate_redis_args_t *args)
{
    int64_t                          now;
    u_char                          *p;
    ngx_str_t                        ws, id, invoice, lkey, key[3];
    ngx_pool_t                      *pool;
    ngx_http_linegate_redis_args_t   a;
    ngx_http_linegate_main_conf_t   *lmcf;
    u_char                           ms[NGX_INT64_LEN];
    u_char                           hold[NGX_INT64_LEN];
    u_char                           iso[NGX_HTTP_LINEGATE_ISO_LEN];
    u_char                           what[128];

    lmcf = ngx_http_cycle_get_module_main_conf(ngx_cycle,
                                               ngx_http_linegate_module);

    if (lmcf == NULL || lmcf->redis_cluster) {
        return;
    }

    ngx_http_linegate_lines_arg(args, 2, &ws);
    ngx_http_linegate_lines_arg(args, 3, &id);
    ngx_http_linegate_lines_arg(args, 4, &invoice);
    ngx_http_linegate_lines_arg(args, 0, &lkey);

    pool = ngx_create_pool(1024, ngx_cycle->log);

    if (pool == NULL
        || ngx_http_linegate_key(pool, NGX_HTTP_LINEGATE_KEY_WS_LINES, &ws,
                                 NULL, &key[0])
           != NGX_OK
        || ngx_http_linegate_key(pool, NGX_HTTP_LINEGATE_KEY_WS_LIVE, &ws,
                                 NULL, &key[1])
           != NGX_OK
        || ngx_http_linegate_key(pool, NGX_HTTP_LINEGATE_KEY_WS_PENDING, &ws,
                                 NULL, &key[2])
           != NGX_OK)
    {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      NGX_HTTP_LINEGATE_LOG "line request \"%V\" names its "
                      "paid invoice \"%V\" but was not settled: left to a "
                      "read", &id, &invoice);

        if (pool != NULL) {
            ngx_destroy_pool(pool);
        }

        return;
    }

    now = ngx_http_linegate_now_ms();

    /* lr_resolve's 5 keys and 9 arguments (lines_resolve's, one Redis) */
    ngx_http_linegate_redis_args_init(&a);

    ngx_http_linegate_redis_arg_str(&a, &ws);
    ngx_http_linegate_redis_arg_str(&a, &id);
    ngx_http_linegate_redis_arg_str(&a, &invoice);
    ngx_http_linegate_redis_arg_cstr(&a, "paid");
    ngx_http_linegate_redis_arg(&a, ms, ngx_sprintf(ms, "%L", now) - ms);
    p = ngx_http_linegate_iso8601(iso, now);
    ngx_http_linegate_redis_arg(&a, iso, p - iso);
    /* the UTC date: unused by the script */
    ngx_http_linegate_redis_arg(&a, iso, 10);
    ngx_http_linegate_redis_arg_cstr(&a, "w");
    ngx_http_linegate_redis_arg(&a, hold,
                                ngx_sprintf(hold, "%d",
                                            NGX_HTTP_LINEGATE_LR_REISSUE_HOLD)
                                - hold);

    ngx_http_linegate_redis_arg_key(&a, &lkey);
    ngx_http_linegate_redis_arg_key(&a, &key[0]);
    ngx_http_linegate_redis_arg_key(&a, &key[1]);
    ngx_http_linegate_redis_arg_key(&a, &key[2]);
    ngx_http_linegate_redis_arg_key(&a,
        ngx_http_linegate_key_fixed(NGX_HTTP_LINEGATE_KEY_PROVISIONING));

    p = ngx_snprintf(what, sizeof(what) - 1, "lr_resolve %V", &id);
    *p = '\0';

    (void) ngx_http_linegate_redis_durable(ngx_cycle->log,
                                           NGX_HTTP_LINEGATE_SCRIPT_LR_RESOLVE,
                                           a.nkeys, &a, (const char *) what);

    ngx_destroy_pool(pool);
}


/*
 * CREATE_INVOICE_INDEX failed (its reply lost, a timeout, Redis refusing
 * the SET) with an invoice Stripe paid, at finalization or kept by
 * UNISSUE. Its void and delete are refused: a discard could only queue it
 * for a human, and a release would free the idempotency key, for a retry
 * to make a second line and bill the customer again. So nothing is
 * undone: the reservation, the key (running) and the journal's member
 * stay, and the index's SET goes to the durable writes, with the store
 * (lr_invoice_store, idempotent; it takes a paid invoice even on a
 * request a run fenced) sent after it once it is answered OK
 * (create_paid_indexed): no request names an invoice its index does not
 * know. Stored, the key replays the 201 the store kept (provisioning/
 * paid), and the request is promoted (its invoice.paid came before the
 * index) by a durable lr_resolve on one Redis (create_paid_resolve), by
 * a read on a cluster. A write Redis refuses for good (an
 * ACL) or never answers leaves the request as a dead worker's: the
 * journal member's sweep finds the paid invoice and stores it, the
 * request promoted (reconcile.c, worker_lost). The client is told to
 * retry (503, Retry-After); until then the key answers it is in use.
 */
static void
ngx_http_linegate_create_paid_kept(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr)
{
    int                              i;
    u_char                          *p;
    size_t                           len;
    ngx_str_t                        note;
    ngx_http_linegate_redis_args_t   a;

    /* nothing for the request's cleanup to release from here on */
    lr->settled = 1;
    lr->fail = NGX_HTTP_LINEGATE_LR_FAIL_STORE;

    ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                  NGX_HTTP_LINEGATE_LOG "line request \"%V\": the index of "
                  "its paid invoice \"%V\" failed: kept, its index and "
                  "store sent again", &lr->id, &lr->invoice.id);

    /* the store's 2 keys, 11 arguments and the customer (stored_again) */
    ngx_http_linegate_create_store_args(r, lr);
    ngx_http_linegate_redis_arg_str(&lr->args, &lr->customer);

    /* they ride along as the SET's note, each "<length>:<bytes>" */
    len = 0;

    for (i = 0; i < lr->args.argc; i++) {
        len += NGX_SIZE_T_LEN + 1 + lr->args.argvlen[i];
    }

    p = ngx_pnalloc(r->pool, len);

    if (p == NULL
        || ngx_http_linegate_lines_invoice_index(r->pool, &lr->invoice.id,
                                                 &lr->ws, &lr->id, &a)
           != NGX_OK)
    {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      NGX_HTTP_LINEGATE_LOG "line request \"%V\" left to "
                      "the reconciliation's sweep", &lr->id);
        ngx_http_linegate_create_failed(r, lr);
        return;
    }

    note.data = p;

    for (i = 0; i < lr->args.argc; i++) {
        p = ngx_sprintf(p, "%uz:", lr->args.argvlen[i]);

        if (lr->args.argvlen[i]) {
            p = ngx_cpymem(p, lr->args.argv[i], lr->args.argvlen[i]);
        }
    }

    note.len = p - note.data;

    /* not queued (logged): the sweep's, as above */
    (void) ngx_http_linegate_redis_durable_command_then(r->connection->log,
                                    &a, "a paid invoice's index",
                                    ngx_http_linegate_create_paid_indexed,
                                    &note);

    ngx_http_linegate_create_failed(r, lr);
}


/*
 * The durable index of a paid invoice answered: OK, its store goes (a
 * durable write, create_stored_again's when refused), its arguments
 * read back from the note (create_paid_kept)
 */
static void
ngx_http_linegate_create_paid_indexed(redisReply *reply,
    ngx_http_linegate_redis_args_t *args, ngx_str_t *note)
{
    u_char                          *p, *last, *colon;
    ngx_int_t                        n;
    ngx_str_t                        id;
    ngx_http_linegate_redis_args_t   a;
    u_char                           what[128];

    if (reply == NULL || reply->type != REDIS_REPLY_STATUS) {
        return;
    }

    ngx_http_linegate_redis_args_init(&a);

    p = note->data;
    last = p + note->len;

    while (p < last) {
        colon = ngx_strlchr(p, last, ':');

        if (colon == NULL || a.argc == NGX_HTTP_LINEGATE_REDIS_MAX_ARGS) {
            break;
        }

        n = ngx_atoi(p, colon - p);

        if (n == NGX_ERROR || n > last - colon - 1) {
            break;
        }

        a.argv[a.argc] = (const char *) colon + 1;
        a.argvlen[a.argc] = (size_t) n;
        a.argc++;

        p = colon + 1 + n;
    }

    /* lr_invoice_store's 2 keys, its 11 arguments, the customer */
    if (p != last || a.argc != 14) {
        ngx_log_error(NGX_LOG_ALERT, ngx_cycle->log, 0,
                      NGX_HTTP_LINEGATE_LOG "a paid invoice's store could "
                      "not be read back: left to the reconciliation's "
                      "sweep");
        return;
    }

    a.nkeys = 2;

    ngx_http_linegate_lines_arg(&a, 3, &id);
    p = ngx_snprintf(what, sizeof(what) - 1, "lr_invoice_store %V", &id);
    *p = '\0';

    (void) ngx_http_linegate_redis_durable_then(ngx_cycle->log,
                                    NGX_HTTP_LINEGATE_SCRIPT_LR_INVOICE_STORE,
                                    2, &a, (const char *) what,
                                    ngx_http_linegate_create_stored_again);
}


/* CREATE_STORE */
static void
ngx_http_linegate_create_stored(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, redisReply *reply)
{
    if (reply == NULL) {
        ngx_http_linegate_create_fail(r, lr, NGX_HTTP_LINEGATE_LR_FAIL_STORE,
                                      0, -1);
        return;
    }

    if (reply->type != REDIS_REPLY_INTEGER || reply->integer != 1) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      NGX_HTTP_LINEGATE_LOG "reservation \"%V\" was "
                      "abandoned before its invoice \"%V\" was stored",
                      &lr->id, &lr->invoice.id);
        ngx_http_linegate_create_fail(r, lr,
                                      NGX_HTTP_LINEGATE_LR_FAIL_BILLING,
                                      NGX_HTTP_LINEGATE_STRIPE_UNAVAILABLE,
                                      -1);
        return;
    }

    lr->settled = 1;

    ngx_http_linegate_create_unjournal(r, lr, reply);
    ngx_http_linegate_create_stored_go_on(r, lr);
}


/*
 * The store answered stored: an invoice paid at finalization promoted
 * (CREATE_RESOLVE, as a paid invoice is everywhere), an open one
 * answered with its link
 */
static void
ngx_http_linegate_create_stored_go_on(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr)
{
    if (ngx_http_linegate_line_is(&lr->invoice.status, "paid")) {
        lr->ctx->state = NGX_HTTP_LINEGATE_CREATE_RESOLVE;
        ngx_http_linegate_lines_resolve(r, lr, "paid",
                                        ngx_http_linegate_create_resume);
        return;
    }

    ngx_str_set(&lr->ctx->outcome, "awaiting_payment");

    ngx_http_linegate_send_body(r, lr->status, lr->body.data, lr->body.len);
}


/*
 * CREATE_STORE_AGAIN answered: the request's own copy of the store sent
 * again, behind the durable one. Stored (1), the creation goes on as
 * after CREATE_STORE: an invoice Stripe paid at finalization is promoted
 * (CREATE_RESOLVE; nothing else would but a read's reconciliation or a
 * run: its invoice.paid most likely came before its index, answered as
 * unknown), an open one answered with its link; either way the answer is
 * the 201 the store kept under the key, which a retry would replay.
 * Anything else (refused, or not answered: the durable one goes on) is
 * the 503 of a store whose outcome is not known here.
 */
static void
ngx_http_linegate_create_restored(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, redisReply *reply)
{
    if (reply == NULL || reply->type != REDIS_REPLY_INTEGER
        || reply->integer != 1)
    {
        ngx_http_linegate_create_failed(r, lr);
        return;
    }

    ngx_http_linegate_create_stored_go_on(r, lr);
}


/*
 * CREATE_RESOLVE answered: the request, stored naming its paid invoice,
 * is promoted (provisioning/paid, its set-up entry, the pending marker
 * cleared), or was already (the invoice's webhook came first). Not
 * answered (lost, refused), on one Redis the same step goes to the
 * worker's durable writes (CREATE_RESOLVE_AGAIN, sent again until Redis
 * runs it; it is idempotent, and writes the set-up entry itself):
 * Stripe's invoice.paid cannot be counted on, as it most likely came
 * while the finalize's answer was being learnt, before the invoice's
 * index, and was acknowledged as unknown. Not on a cluster, where the
 * entry is relayed by nginx after lr_resolve from its set-up member: a
 * durable promotion landing after a run dropped that member (the
 * request then still awaiting payment) would never be set up; the
 * request stays awaiting payment there, for a read's reconciliation.
 * Either way the answer is the one the store kept under the idempotency
 * key, which a retry replays: the request paid.
 */
static void
ngx_http_linegate_create_resolved(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, redisReply *reply)
{
    ngx_http_linegate_main_conf_t  *lmcf;

    lmcf = ngx_http_get_module_main_conf(r, ngx_http_linegate_module);

    if (reply == NULL && !lmcf->redis_cluster) {
        lr->ctx->state = NGX_HTTP_LINEGATE_CREATE_RESOLVE_AGAIN;
        ngx_http_linegate_lines_durable(r, lr,
                                        NGX_HTTP_LINEGATE_SCRIPT_LR_RESOLVE,
                                        "lr_resolve",
                                        ngx_http_linegate_create_resume);
        return;
    }

    if (reply == NULL
        || ngx_http_linegate_lines_resolved(r, lr, reply) != NGX_OK)
    {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      NGX_HTTP_LINEGATE_LOG "line request \"%V\" names its "
                      "paid invoice \"%V\" but was not settled: left to "
                      "the invoice's webhook or a read", &lr->id,
                      &lr->invoice.id);
    }

    ngx_str_set(&lr->ctx->outcome, "provisioning");

    ngx_http_linegate_send_body(r, lr->status, lr->body.data, lr->body.len);
}


/*
 * The request is freed (terminated: a draining worker's shutdown timeout)
 * while its add-on is billed: no step of it runs any more. Its release
 * (prepared with the reservation) goes to the worker's durable writes;
 * an invoice already made cannot be voided from here and is logged.
 * Not when create_left_for_sweep says the invoice may be paid: the
 * request is then left as a dead worker's (the reservation, the key, the
 * journal's member), for the sweep, which finds the invoice at Stripe as
 * it is: paid, stored and the request promoted; open, voided and the
 * request released.
 */
static void
ngx_http_linegate_create_cleanup(void *data)
{
    ngx_http_linegate_lr_t  *lr;

    lr = data;

    if (lr->settled || !ngx_http_linegate_create_left_for_sweep(lr)) {
        ngx_http_linegate_lines_ended(data,
                                      NGX_HTTP_LINEGATE_SCRIPT_LR_RELEASE,
                                      "billed",
                                      "lr_release of an ended request");
        return;
    }

    lr->settled = 1;

    if (lr->ctx->state == NGX_HTTP_LINEGATE_CREATE_INVOICE_INDEX) {
        ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                      NGX_HTTP_LINEGATE_LOG "line request \"%V\" ended "
                      "while its paid invoice \"%V\" was indexed: left to "
                      "the reconciliation's sweep", &lr->id,
                      &lr->invoice.id);
        return;
    }

    ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                  NGX_HTTP_LINEGATE_LOG "line request \"%V\" ended after "
                  "its invoice \"%V\" was finalized, perhaps paid: left to "
                  "the reconciliation's sweep", &lr->id, &lr->invoice.id);
}


/*
 * Whether a creation ended by nginx may hold an invoice Stripe paid, so
 * that its cleanup must not release it: released, the paid invoice would
 * be a human's and the key free for a retry to bill again.
 * - The index of an invoice known paid is being written (INVOICE_INDEX;
 *   create_paid_kept says why the sweep, not the cleanup, stores it).
 * - The finalize was sent and no answer taken in (ISSUE, or UNISSUE's
 *   void, delete or check after it): Stripe pays an amount due of 0 at
 *   finalization, and the answer that would say so never comes to an
 *   ended request.
 */
static ngx_uint_t
ngx_http_linegate_create_left_for_sweep(ngx_http_linegate_lr_t *lr)
{
    switch (lr->ctx->state) {

    case NGX_HTTP_LINEGATE_CREATE_INVOICE_INDEX:
        return ngx_http_linegate_line_is(&lr->invoice.status, "paid");

    case NGX_HTTP_LINEGATE_CREATE_ISSUE:
    case NGX_HTTP_LINEGATE_CREATE_UNISSUE:
        return lr->invoice.finalized;

    default:
        return 0;
    }
}


static void
ngx_http_linegate_create_release_args(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, ngx_http_linegate_redis_args_t *a)
{
    /* the workspace is known before lr_create (an API key's lookup) */
    ngx_http_linegate_lines_release_args(r, a, &lr->who.value, &lr->id,
                                         &lr->idem.digest,
                                         NGX_HTTP_LINEGATE_LR_STALE);
}


/*
 * The invoice machine, issuing (DRAFT -> ITEM -> FINALIZE -> DONE, the
 * draft asked again as REDRAFT when its answer was lost) or discarding
 * (VOID, or DELETE for a draft -> DONE); driven by the endpoint's switch
 * (create's and payment_link's invoice steps), to which every call
 * resumes through lr->invoice.resume. It calls nothing above itself.
 */

/* issuing an invoice: draft, its one item, finalize */

ngx_int_t
ngx_http_linegate_invoice_issue(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, ngx_http_linegate_resume_pt resume)
{
    ngx_str_t    form;
    ngx_pool_t  *pool;

    pool = r->pool;

    ngx_str_null(&lr->invoice.id);
    ngx_str_null(&lr->invoice.url);
    ngx_str_null(&lr->invoice.status);
    lr->invoice.retry_after = -1;
    lr->invoice.finalized = 0;
    lr->invoice.step = NGX_HTTP_LINEGATE_INVOICE_DRAFT;
    lr->invoice.resume = resume;
    lr->invoice.tries = 0;

    ngx_str_null(&form);

    /*
     * A draft of our own (pending items of the customer stay out of it),
     * sent as a payable link rather than charged.
     */
    if (ngx_http_linegate_form_add(pool, &form, "customer", &lr->customer)
        != NGX_OK
        || ngx_http_linegate_form_add_cstr(pool, &form, "collection_method",
                                           "send_invoice")
           != NGX_OK
        || ngx_http_linegate_form_add_cstr(pool, &form, "days_until_due",
                                       NGX_HTTP_LINEGATE_INVOICE_DAYS_DUE)
           != NGX_OK
        || ngx_http_linegate_form_add_cstr(pool, &form,
                                           "pending_invoice_items_behavior",
                                           "exclude")
           != NGX_OK
        || ngx_http_linegate_form_add_cstr(pool, &form, "auto_advance",
                                           "false")
           != NGX_OK
        || ngx_http_linegate_invoice_metadata(r, lr, &form) != NGX_OK)
    {
        return ngx_http_linegate_invoice_end(lr,
                                        NGX_HTTP_LINEGATE_STRIPE_UNAVAILABLE);
    }

    lr->invoice.form = form;

    return ngx_http_linegate_invoice_send(r, lr);
}


/* send the call of lr->invoice.step: NGX_AGAIN, or NGX_DONE (ended) */
static ngx_int_t
ngx_http_linegate_invoice_send(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr)
{
    ngx_int_t  rc;

    if (ngx_http_linegate_invoice_late(r, lr)) {
        return ngx_http_linegate_invoice_end(lr,
                                        NGX_HTTP_LINEGATE_STRIPE_UNAVAILABLE);
    }

    switch (lr->invoice.step) {

    case NGX_HTTP_LINEGATE_INVOICE_DRAFT:
    case NGX_HTTP_LINEGATE_INVOICE_REDRAFT:
        rc = ngx_http_linegate_lines_stripe(r, lr, NGX_HTTP_POST,
                                            "v1/invoices", NULL, NULL,
                                            &lr->invoice.form, "-invoice",
                                            lr->invoice.resume);
        break;

    case NGX_HTTP_LINEGATE_INVOICE_ITEM:
        rc = ngx_http_linegate_invoice_item(r, lr);
        break;

    case NGX_HTTP_LINEGATE_INVOICE_FINALIZE:
        rc = ngx_http_linegate_invoice_finalize(r, lr);
        lr->invoice.finalized = (rc == NGX_OK);
        break;

    case NGX_HTTP_LINEGATE_INVOICE_VOID:
        return ngx_http_linegate_invoice_repair(r, lr, NGX_HTTP_POST,
                                                "/void",
                                                lr->invoice.void_key
                                                ? lr->invoice.void_key
                                                : "-void",
                                                "could not be voided");

    case NGX_HTTP_LINEGATE_INVOICE_DELETE:
        return ngx_http_linegate_invoice_repair(r, lr, NGX_HTTP_DELETE,
                                                NULL, NULL,
                                                "could not be deleted");

    case NGX_HTTP_LINEGATE_INVOICE_CHECK:
        return ngx_http_linegate_invoice_repair(r, lr, NGX_HTTP_GET,
                                                NULL, NULL,
                                                "could not be discarded");

    default: /* NGX_HTTP_LINEGATE_INVOICE_DONE */
        return NGX_DONE;
    }

    if (rc != NGX_OK) {
        return ngx_http_linegate_invoice_end(lr,
                                        NGX_HTTP_LINEGATE_STRIPE_UNAVAILABLE);
    }

    return NGX_AGAIN;
}


/*
 * A creation past its lost_at (create_late), or a reissue past its
 * claim's hold (line_manage.c, link_issue), makes, fills or finalizes no
 * invoice: the calls that make money. The draft asked again only to
 * learn its id (REDRAFT, the same Idempotency-Key) and the discard's
 * calls go on.
 */
static ngx_uint_t
ngx_http_linegate_invoice_late(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr)
{
    if (lr->invoice.lost_at == 0
        || (lr->invoice.step != NGX_HTTP_LINEGATE_INVOICE_DRAFT
            && lr->invoice.step != NGX_HTTP_LINEGATE_INVOICE_ITEM
            && lr->invoice.step != NGX_HTTP_LINEGATE_INVOICE_FINALIZE)
        || ngx_http_linegate_now_ms() < lr->invoice.lost_at)
    {
        return 0;
    }

    ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                  NGX_HTTP_LINEGATE_LOG "line request \"%V\" outlived "
                  "%s before its invoice was %s (%s): no Stripe call, "
                  "released",
                  &lr->id,
                  lr->invoice.reissue ? "its reissue claim's hold"
                                      : "linegate_reconcile_lost_after",
                  lr->invoice.step == NGX_HTTP_LINEGATE_INVOICE_DRAFT
                  ? "made"
                  : lr->invoice.step == NGX_HTTP_LINEGATE_INVOICE_ITEM
                    ? "filled" : "finalized",
                  lr->invoice.reissue
                  ? "another payment_link may take it over and sweep"
                  : "a reconciliation run may be releasing it");

    lr->invoice.late = 1;

    return 1;
}


/*
 * A discard's call on the invoice (void, delete, or the GET that tells
 * whether it was paid): NGX_AGAIN, or, when it cannot even be sent, the
 * invoice logged as what could not be done and queued, NGX_DONE
 */
static ngx_int_t
ngx_http_linegate_invoice_repair(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, ngx_uint_t method, const char *suffix,
    const char *key_suffix, const char *failed)
{
    if (ngx_http_linegate_lines_stripe(r, lr, method, "v1/invoices",
                                       &lr->invoice.id, suffix, NULL,
                                       key_suffix, lr->invoice.resume)
        != NGX_OK)
    {
        ngx_http_linegate_invoice_log(r, lr, failed);
        ngx_http_linegate_lines_orphan(r->connection->log, lr);
        return ngx_http_linegate_invoice_end(lr,
                                        NGX_HTTP_LINEGATE_STRIPE_UNAVAILABLE);
    }

    return NGX_AGAIN;
}


/*
 * The draft's call again, only to learn its id (REDRAFT): billing has
 * failed with result, whatever this call answers
 */
static ngx_int_t
ngx_http_linegate_invoice_redraft(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, ngx_uint_t result)
{
    lr->invoice.step = NGX_HTTP_LINEGATE_INVOICE_REDRAFT;
    lr->invoice.result = result;

    return ngx_http_linegate_invoice_send(r, lr);
}


/* Stripe answered the call of lr->invoice.step (ctx->stripe_*) */
ngx_int_t
ngx_http_linegate_invoice_next(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr)
{
    ngx_uint_t                result;
    ngx_http_linegate_ctx_t  *ctx;

    ctx = lr->ctx;

    switch (lr->invoice.step) {

    case NGX_HTTP_LINEGATE_INVOICE_DONE:
        /* ended without a call (invoice_wake) */
        return NGX_DONE;

    case NGX_HTTP_LINEGATE_INVOICE_VOID:
    case NGX_HTTP_LINEGATE_INVOICE_DELETE:
        return ngx_http_linegate_invoice_discarded(r, lr);

    case NGX_HTTP_LINEGATE_INVOICE_CHECK:
        return ngx_http_linegate_invoice_checked(r, lr);

    case NGX_HTTP_LINEGATE_INVOICE_REDRAFT:
        /* the draft asked again only to learn its id: billing failed */
        if (ngx_http_linegate_stripe_result(ctx)
            == NGX_HTTP_LINEGATE_STRIPE_OK)
        {
            (void) ngx_http_linegate_lines_invoice_read(r, lr,
                                                        &lr->invoice.id);

        } else if (ngx_http_linegate_invoice_later(r, lr, 1) == NGX_OK) {
            ngx_http_linegate_invoice_log(r, lr, "is asked again later");
            return NGX_AGAIN;
        }

        if (lr->invoice.id.len == 0) {
            ngx_http_linegate_invoice_log(r, lr, "may be left as a draft");
            ngx_http_linegate_lines_orphan(r->connection->log, lr);
        }

        return ngx_http_linegate_invoice_end(lr, lr->invoice.result);

    default: /* DRAFT, ITEM, FINALIZE */
        break;
    }

    result = ngx_http_linegate_stripe_result(ctx);

    if (result != NGX_HTTP_LINEGATE_STRIPE_OK) {
        lr->invoice.retry_after = ctx->stripe_retry_after;
        ngx_http_linegate_invoice_log(r, lr, "failed");

        if (lr->invoice.step == NGX_HTTP_LINEGATE_INVOICE_DRAFT
            && (ctx->stripe_unknown || ctx->stripe_status >= 500
                || (ctx->stripe_status >= 200 && ctx->stripe_status < 300)))
        {
            /*
             * The draft may exist with no answer to name it (no whole
             * answer, a 5xx, which Stripe does not promise is nothing,
             * or a 2xx that is not JSON): the same call again (same
             * Idempotency-Key) gets Stripe's stored answer, its id, so
             * that it is discarded
             */
            return ngx_http_linegate_invoice_redraft(r, lr, result);
        }

        return ngx_http_linegate_invoice_end(lr, result);
    }

    switch (lr->invoice.step) {

    case NGX_HTTP_LINEGATE_INVOICE_DRAFT:
        if (ngx_http_linegate_lines_invoice_read(r, lr, NULL) != NGX_OK) {
            /* made, but its answer names no id: asked again, as above */
            ngx_http_linegate_invoice_log(r, lr, "answered no id");
            return ngx_http_linegate_invoice_redraft(r, lr,
                                        NGX_HTTP_LINEGATE_STRIPE_UNAVAILABLE);
        }

        lr->invoice.step = NGX_HTTP_LINEGATE_INVOICE_ITEM;
        return ngx_http_linegate_invoice_send(r, lr);

    case NGX_HTTP_LINEGATE_INVOICE_ITEM:
        lr->invoice.step = NGX_HTTP_LINEGATE_INVOICE_FINALIZE;
        return ngx_http_linegate_invoice_send(r, lr);

    default: /* NGX_HTTP_LINEGATE_INVOICE_FINALIZE */
        if (ngx_http_linegate_lines_invoice_read(r, lr, &lr->invoice.id)
            != NGX_OK
            || lr->invoice.url.len == 0
            || !(ngx_http_linegate_line_is(&lr->invoice.status, "open")
                 || ngx_http_linegate_line_is(&lr->invoice.status, "paid")))
        {
            ngx_http_linegate_invoice_log(r, lr, "finalized badly");
            break;
        }

        return ngx_http_linegate_invoice_end(lr, NGX_HTTP_LINEGATE_STRIPE_OK);
    }

    return ngx_http_linegate_invoice_end(lr,
                                         NGX_HTTP_LINEGATE_STRIPE_UNAVAILABLE);
}


static ngx_int_t
ngx_http_linegate_invoice_item(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr)
{
    ngx_str_t                       form, *price;
    ngx_pool_t                     *pool;
    const char                     *param;
    ngx_http_linegate_main_conf_t  *lmcf;

    lmcf = ngx_http_get_module_main_conf(r, ngx_http_linegate_module);
    pool = r->pool;

    price = ngx_http_linegate_line_is(&lr->line.channel_type, "email")
            ? &lmcf->price_email : &lmcf->price_phone;

    /* Stripe moved the price of an invoice item in 2025-03-31.basil */
    param = (lmcf->stripe_version.len >= 10
             && ngx_strncmp(lmcf->stripe_version.data, "2025-03-31", 10)
                >= 0)
            ? "pricing[price]" : "price";

    ngx_str_null(&form);

    if (ngx_http_linegate_form_add(pool, &form, "customer", &lr->customer)
        != NGX_OK
        || ngx_http_linegate_form_add(pool, &form, param, price) != NGX_OK
        || ngx_http_linegate_form_add(pool, &form, "invoice",
                                      &lr->invoice.id)
           != NGX_OK
        || ngx_http_linegate_form_add_cstr(pool, &form, "description",
               ngx_http_linegate_line_is(&lr->line.channel_type, "email")
               ? "Additional email line" : "Additional phone line")
           != NGX_OK
        || ngx_http_linegate_invoice_metadata(r, lr, &form) != NGX_OK
        || ngx_http_linegate_lines_stripe(r, lr, NGX_HTTP_POST,
                                          "v1/invoiceitems", NULL, NULL,
                                          &form, "-item",
                                          lr->invoice.resume)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_linegate_invoice_finalize(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr)
{
    ngx_str_t  form;

    ngx_str_null(&form);

    if (ngx_http_linegate_form_add_cstr(r->pool, &form, "auto_advance",
                                        "false")
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    return ngx_http_linegate_lines_stripe(r, lr, NGX_HTTP_POST,
                                          "v1/invoices", &lr->invoice.id,
                                          "/finalize", &form, "-finalize",
                                          lr->invoice.resume);
}


/* DONE, result set */
static ngx_int_t
ngx_http_linegate_invoice_end(ngx_http_linegate_lr_t *lr, ngx_uint_t result)
{
    lr->invoice.result = result;

    return ngx_http_linegate_invoice_done(lr);
}


static ngx_int_t
ngx_http_linegate_invoice_done(ngx_http_linegate_lr_t *lr)
{
    lr->invoice.step = NGX_HTTP_LINEGATE_INVOICE_DONE;

    return NGX_DONE;
}


static ngx_int_t
ngx_http_linegate_invoice_metadata(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, ngx_str_t *form)
{
    if (ngx_http_linegate_form_add(r->pool, form, "metadata[workspace_id]",
                                   &lr->ws)
        != NGX_OK
        || ngx_http_linegate_form_add(r->pool, form,
                                      "metadata[line_request_id]", &lr->id)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    /*
     * a reissue's: its claim's invoiceSeq, which no other invoice of the
     * request carries (a creation's has none). A reconciliation run
     * adopts a paid invoice of a lapsed claim only if it carries one of
     * the claims made since the invoice the request names (reconcile.c,
     * NAMED): line_request_id alone is every invoice of the request's
     */
    if (lr->seq.len
        && !(lr->seq.len == 1 && lr->seq.data[0] == '0')
        && ngx_http_linegate_form_add(r->pool, form,
                                      "metadata[invoice_seq]", &lr->seq)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* discarding an invoice nobody will be asked to pay */

ngx_int_t
ngx_http_linegate_invoice_discard(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, ngx_http_linegate_resume_pt resume,
    ngx_uint_t keep)
{
    lr->invoice.resume = resume;
    lr->invoice.keep = keep ? 1 : 0;
    lr->invoice.kept = 0;

    if (lr->invoice.id.len == 0) {
        return ngx_http_linegate_invoice_end(lr,
                                             NGX_HTTP_LINEGATE_STRIPE_OK);
    }

    lr->invoice.tries = 0;
    lr->invoice.void_key = NULL;
    lr->invoice.step = NGX_HTTP_LINEGATE_INVOICE_VOID;

    return ngx_http_linegate_invoice_send(r, lr);
}


/* VOID, DELETE answered */
static ngx_int_t
ngx_http_linegate_invoice_discarded(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr)
{
    ngx_uint_t  result;

    result = ngx_http_linegate_stripe_result(lr->ctx);

    if (lr->invoice.step == NGX_HTTP_LINEGATE_INVOICE_VOID
        && result == NGX_HTTP_LINEGATE_STRIPE_REFUSED)
    {
        /* a draft cannot be voided, only deleted */
        lr->invoice.tries = 0;
        lr->invoice.step = NGX_HTTP_LINEGATE_INVOICE_DELETE;
        return ngx_http_linegate_invoice_send(r, lr);
    }

    if (lr->invoice.step == NGX_HTTP_LINEGATE_INVOICE_DELETE
        && result == NGX_HTTP_LINEGATE_STRIPE_REFUSED)
    {
        /*
         * neither open nor a draft: paid, most likely (Stripe pays an
         * invoice of 0 at finalization, whose answer may have been
         * lost), which the caller may keep rather than leave to a human
         */
        lr->invoice.tries = 0;
        lr->invoice.step = NGX_HTTP_LINEGATE_INVOICE_CHECK;
        return ngx_http_linegate_invoice_send(r, lr);
    }

    if (result != NGX_HTTP_LINEGATE_STRIPE_OK
        && ngx_http_linegate_invoice_later(r, lr, 0) == NGX_OK)
    {
        if (lr->invoice.step == NGX_HTTP_LINEGATE_INVOICE_VOID
            && !lr->ctx->stripe_unknown
            && lr->ctx->stripe_status >= NGX_HTTP_INTERNAL_SERVER_ERROR)
        {
            /* out of memory: the key it had, tried as before */
            (void) ngx_http_linegate_invoice_void_key(r, lr);
        }

        ngx_http_linegate_invoice_log(r, lr, "is discarded again later");
        return NGX_AGAIN;
    }

    ngx_http_linegate_invoice_log(r, lr, result == NGX_HTTP_LINEGATE_STRIPE_OK
                                         ? "discarded"
                                         : "could not be discarded");

    if (result != NGX_HTTP_LINEGATE_STRIPE_OK) {
        ngx_http_linegate_lines_orphan(r->connection->log, lr);
    }

    /* not OK: queued, still payable (a sweep issues nothing beside it) */
    return ngx_http_linegate_invoice_end(lr, result);
}


/*
 * A void answered a 5xx: Stripe stores the first answer under an
 * Idempotency-Key, a 500 too (a 429 or a refused parameter is not), for
 * 24 hours, and replays it to every call with the key: the void's every
 * retry, and every later cancel's or sweep's, would get the same 500 for
 * a day. The next try is sent under a key never used before. A void is
 * safe to send twice: one already voided is refused (400), and the
 * machine goes on to DELETE (refused), then CHECK, which reads it void:
 * discarded. A try after no answer (the call may have run) keeps its
 * key, whose replay is Stripe's real answer, and a first try uses
 * "<key>-void": concurrent cancels share it, and Stripe voids once.
 */
ngx_int_t
ngx_http_linegate_invoice_void_key(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr)
{
    u_char  *p, *last;

    p = ngx_pnalloc(r->pool, NGX_HTTP_LINEGATE_INVOICE_VOID_KEY_LEN);
    if (p == NULL) {
        return NGX_ERROR;
    }

    /* the Unix ms, the worker and its count of such keys: unique */
    last = ngx_snprintf(p, NGX_HTTP_LINEGATE_INVOICE_VOID_KEY_LEN - 1,
                        "-void-%L-%P-%ui", ngx_http_linegate_now_ms(),
                        ngx_pid, ngx_http_linegate_void_keys++);
    *last = '\0';

    lr->invoice.void_key = (char *) p;

    return NGX_OK;
}


/*
 * CHECK answered: a paid invoice is kept if the caller can store it
 * (keep: nothing names it yet, the reservation is held), ending the
 * machine with kept and result OK; one void, or gone (a draft deleted:
 * 404), was discarded by someone else meanwhile (a reconciliation run,
 * a concurrent sweep): discarded, result OK; anything else, or an answer
 * that never comes, is an invoice that could not be discarded, queued.
 */
static ngx_int_t
ngx_http_linegate_invoice_checked(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr)
{
    if (ngx_http_linegate_stripe_result(lr->ctx)
        != NGX_HTTP_LINEGATE_STRIPE_OK)
    {
        if (ngx_http_linegate_invoice_later(r, lr, 0) == NGX_OK) {
            ngx_http_linegate_invoice_log(r, lr, "is asked again later");
            return NGX_AGAIN;
        }

        if (lr->ctx->stripe_status == NGX_HTTP_NOT_FOUND) {
            ngx_http_linegate_invoice_log(r, lr, "is gone: discarded");
            return ngx_http_linegate_invoice_end(lr,
                                                NGX_HTTP_LINEGATE_STRIPE_OK);
        }

    } else if (ngx_http_linegate_lines_invoice_read(r, lr, &lr->invoice.id)
               != NGX_OK)
    {
        /* an answer without a status: not known to be discarded */

    } else if (ngx_http_linegate_line_is(&lr->invoice.status, "void")) {
        ngx_http_linegate_invoice_log(r, lr, "is void: discarded");
        return ngx_http_linegate_invoice_end(lr, NGX_HTTP_LINEGATE_STRIPE_OK);

    } else if (ngx_http_linegate_line_is(&lr->invoice.status, "paid")) {
        if (lr->invoice.keep) {
            ngx_http_linegate_invoice_log(r, lr, "is paid: kept");
            lr->invoice.kept = 1;
            return ngx_http_linegate_invoice_end(lr,
                                                NGX_HTTP_LINEGATE_STRIPE_OK);
        }

        ngx_http_linegate_invoice_log(r, lr, "is paid");
    }

    ngx_http_linegate_invoice_log(r, lr, "could not be discarded");
    ngx_http_linegate_lines_orphan(r->connection->log, lr);

    return ngx_http_linegate_invoice_end(lr,
                                         NGX_HTTP_LINEGATE_STRIPE_UNAVAILABLE);
}


/*
 * The repair call that just failed runs again later (NGX_OK) if it may
 * yet succeed: no answer, a 5xx, a 429, or (in_use) Stripe's 409 for an
 * Idempotency-Key whose first call is still being handled. The request
 * waits on a timer, whose expiry sends the step again (invoice_wake);
 * its pool cleanup deletes the timer.
 */
static ngx_int_t
ngx_http_linegate_invoice_later(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, ngx_uint_t in_use)
{
    ngx_msec_t                delay;
    ngx_pool_cleanup_t       *cln;
    ngx_http_linegate_ctx_t  *ctx;

    ctx = lr->ctx;

    if (lr->invoice.tries == 0) {
        lr->invoice.since = ngx_current_msec;
    }

    if (lr->invoice.tries >= NGX_HTTP_LINEGATE_INVOICE_TRIES
        || ngx_current_msec - lr->invoice.since
           >= NGX_HTTP_LINEGATE_INVOICE_BUDGET
        || !(ctx->stripe_unknown
             || ctx->stripe_status == 0
             || ctx->stripe_status >= NGX_HTTP_INTERNAL_SERVER_ERROR
             || ctx->stripe_status == NGX_HTTP_TOO_MANY_REQUESTS
             || (in_use && ctx->stripe_status == NGX_HTTP_CONFLICT)))
    {
        return NGX_DECLINED;
    }

    if (!lr->invoice.cleanup) {
        cln = ngx_pool_cleanup_add(r->pool, 0);
        if (cln == NULL) {
            return NGX_DECLINED;
        }

        cln->handler = ngx_http_linegate_invoice_cleanup;
        cln->data = lr;

        lr->invoice.cleanup = 1;
        lr->invoice.request = r;
        lr->invoice.timer.handler = ngx_http_linegate_invoice_wake;
        /* the debug log reads a timer's data as its connection */
        lr->invoice.timer.data = r->connection;
        lr->invoice.timer.log = r->connection->log;
    }

    delay = lr->invoice.tries < 3
            ? (ngx_msec_t) NGX_HTTP_LINEGATE_INVOICE_WAIT << lr->invoice.tries
            : NGX_HTTP_LINEGATE_INVOICE_WAIT_MAX;

    lr->invoice.tries++;

    ngx_add_timer(&lr->invoice.timer, delay);

    return NGX_OK;
}


/*
 * The wait is over: the step's call again; if it cannot even start, the
 * machine has ended and the endpoint's step goes on (its switch finds
 * the machine DONE).
 */
static void
ngx_http_linegate_invoice_wake(ngx_event_t *ev)
{
    ngx_connection_t        *c;
    ngx_http_request_t      *r;
    ngx_http_linegate_lr_t  *lr;

    lr = (ngx_http_linegate_lr_t *)
             ((u_char *) ev - offsetof(ngx_http_linegate_lr_t, invoice.timer));

    r = lr->invoice.request;
    c = r->connection;

    if (ngx_http_linegate_invoice_send(r, lr) == NGX_DONE) {
        lr->invoice.resume(r, lr->ctx);
    }

    /* the call just made is a posted subrequest */
    ngx_http_run_posted_requests(c);
}


static void
ngx_http_linegate_invoice_cleanup(void *data)
{
    ngx_http_linegate_lr_t  *lr = data;

    if (lr->invoice.timer.timer_set) {
        ngx_del_timer(&lr->invoice.timer);
    }
}


static void
ngx_http_linegate_invoice_log(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, const char *what)
{
    ngx_uint_t                level;
    ngx_http_linegate_ctx_t  *ctx;

    /* by ngx_http_linegate_invoice_step_e; REDRAFT is the draft's call */
    static const char  *steps[] = {
        "create", "item", "finalize", "create", "void", "delete", "get",
        "done"
    };

    ctx = lr->ctx;

    level = ngx_strcmp(what, "discarded") == 0 ? NGX_LOG_INFO : NGX_LOG_WARN;

    /* Stripe's message, never its body: it may describe a card */
    ngx_log_error(level, r->connection->log, 0,
                  NGX_HTTP_LINEGATE_LOG "invoice \"%V\" of line request "
                  "\"%V\" %s at step %s: Stripe status %i, %s",
                  &lr->invoice.id, &lr->id, what,
                  steps[lr->invoice.step], ctx->stripe_status,
                  ngx_http_linegate_stripe_error_message(ctx));
}
