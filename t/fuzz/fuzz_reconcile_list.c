
/*
 * Fuzz target: the Stripe lists the reconciliation reads, page after page
 * (src/ngx_http_linegate_reconcile.c, included), and the payment_link
 * sweep's list (src/ngx_http_linegate_line_manage.c, included):
 *
 *   0  LOOKUP of a purchase among its customer's subscriptions by
 *      metadata[worker_id] (reconcile_find), from one entry of the
 *      reconcile stream (record_failed, stripe_outcome_unknown,
 *      worker_lost, reservation_missing), and the steps that follow it;
 *   1  the same of a Lines API paid add-on among its customer's invoices
 *      by metadata[line_request_id] (worker_lost, invoice_unrepaired,
 *      reissue_lapsed: draft and open ones skipped or kept);
 *   2  INVOICES: the paid invoices of a purchase undone
 *      (reconcile_paid, reconcile_payment: the payment intent or charge,
 *      on the invoice or its payments), then the refunds and the
 *      refund list of a payment (refund_checked);
 *   3  the payment_link sweep of a lapsed claim's invoices
 *      (link_sweep_page, link_sweep_found) page after page as
 *      link_swept takes them, each page's request made by link_sweep.
 *
 * Every Stripe call of the run is recorded (the real stripe_call would
 * make a subrequest) and answered from the input through the module's
 * own stripe_done() and its resume, as nginx ends a subrequest; when the
 * input has no page left the last one comes again (a list whose has_more
 * never ends). The run's Redis steps are refused (Redis is down): the
 * entry stays, and the run ends with its answer.
 *
 * Input: a byte (the mode, modulo 4; bits 0x0c the entry's reason, 0x10
 * a reissue_lapsed entry's named invoice, or the sweep's paid one kept
 * already, 0x20 a draft; 0x04 the sweep from sweepFrom), then pages,
 * each a status byte (modulo 8: 200 for 0 to 3, then 400, 404, 429, 503;
 * 0x80: no answer) and a body up to a NUL byte.
 *
 * Invariants, re-checked here: every path the run asks Stripe for is
 * made of URL-safe characters only (what Stripe sent never reaches a
 * query unescaped); a page after the first names in starting_after the
 * last element of the page before, a valid Stripe id ([A-Za-z0-9_], 1 to
 * 255), and nothing else; a list is read 50 pages at most (a purchase's
 * paid invoices 3, the sweep's 10), and a run makes 120 calls at most;
 * the run answers once; an id kept from a page
 * (the purchase found, a paid invoice, its payment, a refund, an invoice
 * to discard) is a valid Stripe id.
 */


#include "fuzz_ngx.h"
#include "ngx_http_linegate_redis.h"
#include "ngx_http_linegate_lines.h"


static void fuzz_add_timer(ngx_event_t *ev, ngx_msec_t timer);
static void fuzz_del_timer(ngx_event_t *ev);
static ngx_int_t fuzz_stripe_call(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, ngx_uint_t method, ngx_str_t *path,
    ngx_str_t *form, ngx_str_t *idempotency_key,
    ngx_http_linegate_resume_pt resume);
static ngx_int_t fuzz_redis_script(ngx_http_request_t *r,
    ngx_http_linegate_script_id_e script, int nkeys,
    ngx_http_linegate_redis_args_t *args,
    ngx_http_linegate_redis_handler_pt handler);
static ngx_int_t fuzz_redis_command(ngx_http_request_t *r,
    ngx_http_linegate_redis_args_t *args,
    ngx_http_linegate_redis_handler_pt handler);
static ngx_int_t fuzz_redis_pipeline(ngx_http_request_t *r,
    ngx_uint_t ncmds, ngx_http_linegate_redis_args_t *args,
    ngx_http_linegate_redis_handler_pt handler);
static void fuzz_lines_orphan(ngx_log_t *log, ngx_http_linegate_lr_t *lr);
static void fuzz_lines_left_paid(ngx_log_t *log, ngx_http_linegate_lr_t *lr,
    ngx_str_t *invoice);
static void fuzz_lines_invoice_unindex(ngx_http_request_t *r,
    ngx_str_t *invoice);

#undef ngx_add_timer
#undef ngx_del_timer
#define ngx_add_timer                      fuzz_add_timer
#define ngx_del_timer                      fuzz_del_timer
#include "ngx_http_linegate_stripe.c"

#define ngx_http_linegate_stripe_call      fuzz_stripe_call
#define ngx_http_linegate_redis_script     fuzz_redis_script
#define ngx_http_linegate_redis_command    fuzz_redis_command
#define ngx_http_linegate_redis_pipeline   fuzz_redis_pipeline
#define ngx_http_linegate_lines_orphan     fuzz_lines_orphan
#define ngx_http_linegate_lines_left_paid  fuzz_lines_left_paid
#define ngx_http_linegate_lines_invoice_unindex  fuzz_lines_invoice_unindex
#include "ngx_http_linegate_reconcile.c"
#include "ngx_http_linegate_line_manage.c"
#undef ngx_http_linegate_stripe_call
#undef ngx_http_linegate_redis_script
#undef ngx_http_linegate_redis_command
#undef ngx_http_linegate_redis_pipeline
#undef ngx_http_linegate_lines_orphan
#undef ngx_http_linegate_lines_left_paid
#undef ngx_http_linegate_lines_invoice_unindex


#define FUZZ_PAGES_MAX   50
#define FUZZ_CALLS_MAX   120
#define FUZZ_PATH_MAX    1024

#define FUZZ_ID          "0123456789abcdef01234567"


enum {
    FUZZ_LOOKUP = 0,
    FUZZ_LOOKUP_LINES,
    FUZZ_INVOICES,
    FUZZ_SWEEP
};


static const ngx_uint_t  fuzz_statuses[8] = {
    200, 200, 200, 200, 400, 404, 429, 503
};


/* the pages of the input, and the one answered last */
static const u_char     *fuzz_in, *fuzz_last;
static u_char            fuzz_page_status;
static const u_char     *fuzz_page;
static size_t            fuzz_page_len;

/* the call in flight, and what the calls so far asked */
static ngx_uint_t        fuzz_pending;
static ngx_uint_t        fuzz_calls;
static ngx_uint_t        fuzz_pages;     /* of the list asked last */
static u_char            fuzz_list[FUZZ_PATH_MAX];
static size_t            fuzz_list_len;
static u_char            fuzz_after[256];
static size_t            fuzz_after_len; /* 0: the page had no last id */
static ngx_uint_t        fuzz_mode;

static ngx_http_linegate_lr_t  fuzz_lr;


static void
fuzz_add_timer(ngx_event_t *ev, ngx_msec_t timer)
{
    ev->timer_set = 1;
}


static void
fuzz_del_timer(ngx_event_t *ev)
{
    ev->timer_set = 0;
}


/* [A-Za-z0-9_], 1 to 255 */
static int
fuzz_stripe_id(const u_char *p, size_t len)
{
    size_t  i;

    if (len == 0 || len > 255) {
        return 0;
    }

    for (i = 0; i < len; i++) {
        if (!isalnum(p[i]) && p[i] != '_') {
            return 0;
        }
    }

    return 1;
}


static void
fuzz_check_id(ngx_str_t *id)
{
    if (id->len && !fuzz_stripe_id(id->data, id->len)) {
        __builtin_trap();
    }
}


/*
 * A list's page after the first: starting_after, last in the query, the
 * last element of the page before, of the same list
 */
static void
fuzz_check_page(ngx_str_t *path)
{
    u_char  *p, *last, *after;
    size_t   len;

    static const char  sa[] = "&starting_after=";

    last = path->data + path->len;
    after = NULL;

    for (p = path->data; p + sizeof(sa) - 1 <= last; p++) {
        if (ngx_strncmp(p, sa, sizeof(sa) - 1) == 0) {
            if (after != NULL) {
                __builtin_trap();
            }

            after = p;
        }
    }

    len = (after ? after : last) - path->data;

    if (after == NULL) {
        /* a first page: of another list, or of this one read again */
        if (len > FUZZ_PATH_MAX) {
            __builtin_trap();
        }

        ngx_memcpy(fuzz_list, path->data, len);
        fuzz_list_len = len;
        fuzz_pages = 1;
        return;
    }

    /* a next page: of the list asked for last */
    if (len != fuzz_list_len || ngx_memcmp(path->data, fuzz_list, len) != 0)
    {
        __builtin_trap();
    }

    /* a purchase's paid invoices: 3 pages at most, any list 50 */
    if (++fuzz_pages > FUZZ_PAGES_MAX
        || (fuzz_pages > NGX_HTTP_LINEGATE_RECONCILE_INVOICE_PAGES
            && len > sizeof("v1/invoices?subscription=") - 1
            && ngx_strncmp(path->data, "v1/invoices?subscription=",
                           sizeof("v1/invoices?subscription=") - 1)
               == 0))
    {
        __builtin_trap();
    }

    p = after + sizeof(sa) - 1;

    if (!fuzz_stripe_id(p, last - p) || fuzz_after_len != (size_t) (last - p)
        || ngx_memcmp(p, fuzz_after, fuzz_after_len) != 0)
    {
        __builtin_trap();
    }
}


static ngx_int_t
fuzz_stripe_call(ngx_http_request_t *r, ngx_http_linegate_ctx_t *ctx,
    ngx_uint_t method, ngx_str_t *path, ngx_str_t *form,
    ngx_str_t *idempotency_key, ngx_http_linegate_resume_pt resume)
{
    size_t  i;

    if (fuzz_pending || resume == NULL || ++fuzz_calls > FUZZ_CALLS_MAX) {
        __builtin_trap();
    }

    /* what Stripe sent reaches a path only as a valid id */
    for (i = 0; i < path->len; i++) {
        if (!isalnum(path->data[i])
            && (path->data[i] == '\0'
                || strchr("_/?&=[].-", path->data[i]) == NULL))
        {
            __builtin_trap();
        }
    }

    if (form != NULL) {
        (void) ngx_hash_key(form->data, form->len);
    }

    if (idempotency_key != NULL) {
        (void) ngx_hash_key(idempotency_key->data, idempotency_key->len);
    }

    if (method == NGX_HTTP_GET) {
        fuzz_check_page(path);

    } else {
        fuzz_list_len = 0;
    }

    /* as stripe_call() leaves the request for the answer */
    if (ctx->stripe_json) {
        json_decref(ctx->stripe_json);
        ctx->stripe_json = NULL;
    }

    ctx->stripe_status = 0;
    ngx_str_null(&ctx->stripe_body);
    ctx->stripe_retry_after = 0;
    ctx->stripe_unknown = 0;
    ctx->resume = resume;
    ctx->stripe_path = *path;
    r->write_event_handler = ngx_http_linegate_stripe_resume;

    fuzz_pending = 1;

    return NGX_OK;
}


/* Redis is down: every step of the run that needs it is refused */
static ngx_int_t
fuzz_redis_script(ngx_http_request_t *r,
    ngx_http_linegate_script_id_e script, int nkeys,
    ngx_http_linegate_redis_args_t *args,
    ngx_http_linegate_redis_handler_pt handler)
{
    return NGX_ERROR;
}


static ngx_int_t
fuzz_redis_command(ngx_http_request_t *r,
    ngx_http_linegate_redis_args_t *args,
    ngx_http_linegate_redis_handler_pt handler)
{
    return NGX_ERROR;
}


static ngx_int_t
fuzz_redis_pipeline(ngx_http_request_t *r, ngx_uint_t ncmds,
    ngx_http_linegate_redis_args_t *args,
    ngx_http_linegate_redis_handler_pt handler)
{
    return NGX_ERROR;
}


/* a durable write: queued for a reconciliation run */
static void
fuzz_lines_orphan(ngx_log_t *log, ngx_http_linegate_lr_t *lr)
{
    if (lr->invoice.id.len == 0) {
        __builtin_trap();
    }

    fuzz_check_id(&lr->invoice.id);
}


/* the same, of a paid invoice left for a human */
static void
fuzz_lines_left_paid(ngx_log_t *log, ngx_http_linegate_lr_t *lr,
    ngx_str_t *invoice)
{
    if (invoice->len == 0) {
        __builtin_trap();
    }

    fuzz_check_id(invoice);
}


/* a durable DEL */
static void
fuzz_lines_invoice_unindex(ngx_http_request_t *r, ngx_str_t *invoice)
{
    fuzz_check_id(invoice);
}


/* the next page of the input, or the last one again */
static void
fuzz_next_page(void)
{
    const u_char  *end;

    if (fuzz_in == fuzz_last) {
        return;
    }

    fuzz_page_status = *fuzz_in++;

    end = memchr(fuzz_in, '\0', fuzz_last - fuzz_in);
    if (end == NULL) {
        end = fuzz_last;
    }

    fuzz_page = fuzz_in;
    fuzz_page_len = end - fuzz_in;
    fuzz_in = (end < fuzz_last) ? end + 1 : end;
}


/* the last element's id of the page answered, for the next's cursor */
static void
fuzz_page_last(ngx_http_linegate_ctx_t *ctx)
{
    size_t   n;
    json_t  *data, *id;

    fuzz_after_len = 0;

    data = json_object_get(ctx->stripe_json, "data");
    n = json_is_array(data) ? json_array_size(data) : 0;

    if (n == 0) {
        return;
    }

    id = json_object_get(json_array_get(data, n - 1), "id");

    if (json_is_string(id) && json_string_length(id) <= sizeof(fuzz_after))
    {
        fuzz_after_len = json_string_length(id);
        ngx_memcpy(fuzz_after, json_string_value(id), fuzz_after_len);
    }
}


/* the call answered with the page, as nginx ends the subrequest */
static void
fuzz_answer_call(ngx_http_request_t *r, ngx_http_linegate_ctx_t *ctx)
{
    ngx_buf_t            b;
    ngx_uint_t           status;
    ngx_chain_t          out;
    ngx_http_request_t   sr;

    fuzz_next_page();

    status = (fuzz_page_status & 0x80)
             ? 0 : fuzz_statuses[fuzz_page_status & 7];

    ngx_memzero(&sr, sizeof(ngx_http_request_t));
    sr.connection = r->connection;
    sr.pool = r->pool;
    sr.parent = r;
    sr.main = r;
    sr.headers_out.status = status;
    sr.headers_out.headers.part.elts = NULL;
    sr.headers_out.headers.part.nelts = 0;
    sr.headers_out.headers.last = &sr.headers_out.headers.part;
    sr.headers_out.headers.size = sizeof(ngx_table_elt_t);

    ngx_memzero(&b, sizeof(ngx_buf_t));
    b.pos = fuzz_strdup(r, fuzz_page, fuzz_page_len);
    b.last = b.pos + fuzz_page_len;
    out.buf = &b;
    out.next = NULL;
    sr.out = &out;

    fuzz_pending = 0;

    (void) ngx_http_linegate_stripe_done(&sr, ctx,
                                         status ? NGX_OK : NGX_ERROR);

    fuzz_page_last(ctx);

    if (r->write_event_handler == ngx_http_linegate_stripe_resume) {
        r->write_event_handler(r);
    }
}


/* one entry of the reconcile stream, as reconcile_entry() reads it */
static void
fuzz_entry(ngx_http_linegate_reconcile_entry_t *e, ngx_uint_t flags)
{
    static const char  *purchase[] = {
        "worker_lost", "record_failed", "stripe_outcome_unknown",
        "reservation_missing"
    };

    static const char  *lines[] = {
        "worker_lost", "invoice_unrepaired", "reissue_lapsed",
        "reissue_lapsed"
    };

    ngx_str_set(&e->id, "1699990000000-0");
    e->queued_ms = 1699990000000;
    ngx_str_set(&e->customer, "cus_1");
    e->at = 1699990000;

    if (fuzz_mode == FUZZ_LOOKUP_LINES) {
        ngx_str_set(&e->workspace, "org_1");
        ngx_str_set(&e->line_request, FUZZ_ID);
        e->reason.data = (u_char *) lines[(flags >> 2) & 3];
        e->reason.len = ngx_strlen(e->reason.data);
        e->lapsed = ngx_http_linegate_reconcile_is(&e->reason,
                                                   "reissue_lapsed");
        e->draft = (flags & 0x20) ? 1 : 0;

        if (e->lapsed && (flags & 0x10)) {
            ngx_str_set(&e->named, "in_named");
        }

        return;
    }

    ngx_str_set(&e->account, "acct_1");
    ngx_str_set(&e->worker_id, "w_1");
    ngx_str_set(&e->number, "+12025550123");
    e->reason.data = (u_char *) purchase[(flags >> 2) & 3];
    e->reason.len = ngx_strlen(e->reason.data);
}


/* a reconciliation run of one entry, from its LOOKUP or its INVOICES */
static void
fuzz_run(ngx_http_request_t *r, ngx_uint_t flags)
{
    ngx_uint_t                            i;
    ngx_http_linegate_reconcile_t        *rc;
    ngx_http_linegate_reconcile_entry_t  *e;

    rc = ngx_pcalloc(r->pool, sizeof(ngx_http_linegate_reconcile_t));

    ngx_str_set(&rc->token, FUZZ_ID);
    rc->started_ms = ngx_http_linegate_now_ms();
    rc->leased_ms = rc->started_ms;
    rc->status = NGX_HTTP_OK;
    rc->n = 1;
    fuzz_ctx.data = rc;

    e = &rc->entry[0];
    fuzz_entry(e, flags);

    if (fuzz_mode == FUZZ_INVOICES) {
        /* its subscription cancelled, no line holds it */
        ngx_str_set(&e->found, "sub_1");
        e->undone = 1;
        ngx_http_linegate_reconcile_settle(r, &fuzz_ctx, "canceled");

    } else {
        ngx_http_linegate_reconcile_next(r, &fuzz_ctx,
                                         NGX_HTTP_LINEGATE_RECONCILE_LOOKUP);
    }

    while (fuzz_pending) {
        fuzz_answer_call(r, &fuzz_ctx);
    }

    /* answered once, what it kept of Stripe's pages valid ids */
    if (fuzz_answer.calls != 1) {
        __builtin_trap();
    }

    /* what the answer names, what a page left for the next */
    fuzz_check_id(&e->found);
    fuzz_check_id(&e->page_after);
    fuzz_check_id(&rc->paid_after);

    if (rc->npaid > NGX_HTTP_LINEGATE_RECONCILE_PAID_MAX) {
        __builtin_trap();
    }

    for (i = 0; i < rc->npaid; i++) {
        fuzz_check_id(&rc->paid[i].id);
        fuzz_check_id(&rc->paid[i].payment);

        if (rc->paid[i].id.len == 0
            || (rc->paid[i].paid && rc->paid[i].payment.len == 0))
        {
            __builtin_trap();
        }
    }

    fuzz_check_id(&rc->refund);
}


/* LINK_SWEEP answered: link_swept's loop, without what comes after */
static void
fuzz_swept(ngx_http_request_t *r, ngx_http_linegate_ctx_t *ctx)
{
    ngx_int_t                rc;
    ngx_http_linegate_lr_t  *lr;

    lr = &fuzz_lr;

    if (ngx_http_linegate_stripe_result(ctx) != NGX_HTTP_LINEGATE_STRIPE_OK)
    {
        return;
    }

    rc = ngx_http_linegate_link_sweep_page(r, lr);

    if (rc == NGX_AGAIN
        && ++lr->sweep.pages < NGX_HTTP_LINEGATE_LINK_SWEEP_PAGES)
    {
        ngx_http_linegate_link_sweep(r, lr);

        /* the sweep's own resume: this loop's instead */
        if (fuzz_pending) {
            ctx->resume = fuzz_swept;
        }
    }
}


/* the payment_link sweep of a lapsed claim's invoices */
static void
fuzz_sweep(ngx_http_request_t *r, ngx_uint_t flags)
{
    ngx_uint_t                     i;
    ngx_http_linegate_lr_t        *lr;
    ngx_http_linegate_lr_found_t  *found;

    lr = &fuzz_lr;
    ngx_memzero(lr, sizeof(ngx_http_linegate_lr_t));

    lr->ctx = &fuzz_ctx;
    lr->pool = r->pool;
    fuzz_ctx.data = lr;
    ngx_str_set(&lr->id, FUZZ_ID);
    ngx_str_set(&lr->ws, "org_1");
    ngx_str_set(&lr->customer, "cus_1");
    ngx_str_set(&lr->old_invoice, "in_old");
    ngx_str_set(&lr->seq, "2");
    lr->sweep.lapsed = 1;
    lr->sweep.from = (flags & 0x04) ? 1699990000000 : 0;
    /*
     * claims 2 and 3 past the named invoice's 1: invoice_seq "2" adopted;
     * one with none, if Stripe made it from a minute after the named one
     * to an hour and a half after 1699990000
     */
    lr->sweep.claims.last_seq = 3;
    lr->sweep.claims.named_seq = 1;
    lr->sweep.claims.named_at = 1699990060;
    lr->sweep.claims.from = 1699990000;
    lr->sweep.claims.to = 1699993000;

    if (flags & 0x10) {
        ngx_str_set(&lr->sweep.paid, "in_paid");
    }

    ngx_http_linegate_link_sweep(r, lr);

    if (fuzz_pending) {
        fuzz_ctx.resume = fuzz_swept;
    }

    while (fuzz_pending) {
        fuzz_answer_call(r, &fuzz_ctx);
    }

    /* 10 pages at most, whatever has_more says */
    if (fuzz_calls > NGX_HTTP_LINEGATE_LINK_SWEEP_PAGES) {
        __builtin_trap();
    }

    fuzz_check_id(&lr->sweep.after);
    fuzz_check_id(&lr->sweep.paid);

    if (lr->sweep.found != NULL) {
        found = lr->sweep.found->elts;

        for (i = 0; i < lr->sweep.found->nelts; i++) {
            if (found[i].id.len == 0) {
                __builtin_trap();
            }

            fuzz_check_id(&found[i].id);
        }
    }
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ngx_uint_t           flags;
    ngx_http_request_t  *r;

    if (size == 0) {
        return 0;
    }

    r = fuzz_request();

    flags = data[0];
    fuzz_mode = flags & 3;
    fuzz_in = data + 1;
    fuzz_last = data + size;

    /* no page at all: the first call has no answer */
    fuzz_page_status = 0x80;
    fuzz_page = (const u_char *) "";
    fuzz_page_len = 0;

    fuzz_pending = 0;
    fuzz_calls = 0;
    fuzz_pages = 0;
    fuzz_list_len = 0;
    fuzz_after_len = 0;

    fuzz_lmcf.reconcile_delay = 0;

    if (fuzz_mode == FUZZ_SWEEP) {
        fuzz_sweep(r, flags);

    } else {
        fuzz_run(r, flags);
    }

    fuzz_request_done(r);

    return 0;
}
