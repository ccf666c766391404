
/*
 * linegate: POST /api/line-requests/:id (SPEC 2.6), for a request that
 * awaits payment: an enum of steps (ngx_http_linegate_manage_step_e,
 * lines.h) in ctx->state and one resume switch, manage_resume, that
 * every Redis and Stripe callback of the endpoint enters.
 *
 *   GATE           lr_manage.lua: the caller, the rate, the request
 *   payment_link:
 *   LINK_CHECK     Stripe GET the invoice;
 *                    open -> [LINK_ACK: with linegate_redis_wait, a
 *                    write of the workspace's slot and its WAIT] -> the
 *                    same link (reused: true)
 *                    paid -> LINK_RESOLVE (lr_resolve), answer as GET
 *                    void, uncollectible -> LINK_CLAIM
 *   LINK_CLAIM     lr_reissue_claim.lua (acknowledged with
 *                  linegate_redis_wait, as the fence is: a claim lost
 *                  with its master would let another payment_link claim
 *                  and issue too; not acknowledged, nothing is issued:
 *                  503) -> LINK_JOURNAL (the claim's member of
 *                  lg:{fleet}:lr:inflight, acknowledged; every claim,
 *                  a cancel's and a GET's too: link_journal) ->
 *                  [LINK_VOID_OLD: void the old one, if
 *                  uncollectible] -> [LINK_SWEEP] -> LINK_ISSUE
 *   LINK_SWEEP     the claim took over one that lapsed (its worker died,
 *                  maybe after Stripe made its invoice, before its store):
 *                  Stripe lists the customer's invoices, and each of the
 *                  request's it does not name and not void gets
 *                  LINK_SWEEP_FENCE (lr_void_fence.lua: a store of it is
 *                  refused from now on) -> LINK_SWEEP_DISCARD (the invoice
 *                  machine); one paid is kept instead of a new one ->
 *                  LINK_INDEX, LINK_STORE, LINK_RESOLVE
 *   LINK_ISSUE     the invoice machine issues a new invoice
 *   LINK_INDEX     SET lg:invoice:<new> "<W>:<id>", its own slot, answered
 *                  OK before the store names the invoice
 *   LINK_STORE     lr_reissue_store.lua -> the new link (reused: false),
 *                  the old invoice's index DEL (durable, its own slot);
 *                  the new invoice paid by Stripe at finalization (amount
 *                  due 0) -> LINK_RESOLVE, answer as GET (as paid above);
 *                  another claim since (LR_BUSY) -> LINK_DISCARD, 409
 *                  awaiting_payment "being issued", Retry-After: 1
 *   LINK_VOID_OLD refused (paid meanwhile?) -> LINK_ABORT_RECHECK ->
 *                  LINK_RECHECK -> LINK_RECLAIM -> LINK_REVOID_OLD: the
 *                  same steps, a second and last time
 *   cancel:
 *   CANCEL_VOID    Stripe void first;
 *                    voided -> CANCEL_RESOLVE (lr_resolve) -> 200
 *                    refused -> CANCEL_CHECK: paid -> CANCEL_RESOLVE
 *                    -> 409 provisioning
 *                    unreachable -> 502, nothing changed
 *   over a lapsed claim (lr_manage's lapsed 1: sweep.cancel), LINK_CLAIM
 *                  first; CANCEL_VOID and CANCEL_CHECK under it; the
 *                  invoice named void -> LINK_SWEEP: one paid -> LINK_INDEX,
 *                  LINK_STORE, LINK_RESOLVE -> 409 provisioning (a payment
 *                  is never canceled); none -> CANCEL_RELEASE
 *                  (lr_reissue_abort, durable) -> CANCEL_RESOLVE -> 200;
 *                  the invoice named paid -> CANCEL_RELEASE (lapsed) ->
 *                  CANCEL_RESOLVE -> 409 provisioning
 *   a GET's sweep (line_sweep, from lines.c: its check found the invoice
 *                  named void or uncollectible over a lapsed claim;
 *                  sweep.read): LINK_CLAIM -> LINK_SWEEP: one paid ->
 *                  LINK_INDEX, LINK_STORE, LINK_RESOLVE -> 200
 *                  provisioning; none -> CANCEL_RELEASE -> LINK_RESOLVE
 *                  (void) -> 200 canceled, each as a GET answers; the
 *                  claim not its own (held, the request moved on), and
 *                  every failure once undone, the stored state (200)
 *
 * Every failure goes to manage_fail, which undoes what the step holds:
 *
 *   LINK_JOURNAL, LINK_VOID_OLD, LINK_REVOID_OLD, LINK_SWEEP,
 *   LINK_SWEEP_FENCE, LINK_SWEEP_DISCARD (an invoice found not discarded),
 *   CANCEL_VOID and CANCEL_CHECK of a cancel's claim (the claim held)
 *                                   -> LINK_ABORT (lr_reissue_abort,
 *                                      durable; released lapsed while
 *                                      a lapsed claim's invoices are
 *                                      not all found and discarded)
 *   LINK_ISSUE (a new invoice), LINK_INDEX (the store never sent)
 *                                   -> LINK_UNISSUE (discard it)
 *                                      -> LINK_ABORT; after LINK_ISSUE
 *                                      a new invoice the discard finds
 *                                      paid (void and delete refused,
 *                                      a GET) is kept -> LINK_INDEX
 *   LINK_STORE, refused             -> LINK_DISCARD (discard it; no claim
 *                                      of its own is left to release)
 *   LINK_STORE, not answered        -> LINK_STORE_AGAIN (durable; refused
 *                                      then: the new invoice unindexed
 *                                      and queued, invoice_unrepaired;
 *                                      refused by a fence, LR_FENCED,
 *                                      the claim, still its own, is
 *                                      released lapsed too) -> 503; its
 *                                      own copy answered stored: as
 *                                      after LINK_STORE, the new link
 *                                      (paid: LINK_RESOLVE)
 *   any other step                  -> the answer (MANAGE_FAILED);
 *                                      LINK_CLAIM not answered or not
 *                                      acknowledged: 503, nothing
 *                                      issued (a claim the master took
 *                                      is released lapsed by its name,
 *                                      reissueBy: a durable write)
 *
 * and lr->fail (with lr->fail_result) says what is answered then.
 *
 * Redis is changed only after Stripe has said what happened, and only
 * while the request still names the invoice Stripe spoke of. The old
 * invoice's webhook index stays while the claim is held, so that nothing
 * is left to give back should the worker die meanwhile: a payment of the
 * old invoice settles the request (the void that follows is refused, and
 * the second look finds it paid), and its void (this reissue's own) is
 * refused by wh_invoice while the claim is younger than its hold ({4}:
 * Stripe delivers it again, stale once the new invoice is stored, a
 * cancel if the reissue gave up). The old index goes (a durable DEL)
 * once the store named the new invoice. The new one's is written before
 * the request names it, and goes again (a durable DEL) when its store was
 * refused or never sent.
 *
 * A claim is this request's while invoiceSeq is its own: one held past
 * NGX_HTTP_LINEGATE_LR_REISSUE_HOLD (Stripe slow, or its worker dead) may
 * be taken over by another payment_link, whose reissueAt this request
 * must then leave alone (lr_reissue_abort releases only its own claim;
 * the store refuses a claim taken over). The claim is also the record
 * of what a dead worker may have left at Stripe: whoever takes it over
 * sweeps first (LINK_SWEEP).
 */


#include "ngx_http_linegate_module.h"
#include "ngx_http_linegate_lines.h"
#include "ngx_http_linegate_json.h"
#include "ngx_http_linegate_reply.h"
#include "ngx_http_linegate_ids.h"
#include "ngx_http_linegate_clock.h"


#define NGX_HTTP_LINEGATE_ACTION_PAYMENT_LINK  1
#define NGX_HTTP_LINEGATE_ACTION_CANCEL        2

/*
 * The sweep of a lapsed claim's invoices (LINK_SWEEP): the customer's made
 * since the earliest claim not swept (sweepFrom; else since the request
 * was), less this margin (s) for Stripe's clock, and, when the latest
 * such claim is known (sweepTo), until it plus LOOKAHEAD (s): a claim's
 * draft is asked for within its Stripe calls' timeouts of the claim, and
 * an hour covers them and Stripe's clock many times over, while a window
 * that ended now would grow with the time since the claim lapsed, and
 * with it the invoices of a customer billed often. 10 a page, 10 pages at
 * most (more: 502, the claim released lapsed, sweepFrom kept)
 */
#define NGX_HTTP_LINEGATE_LINK_SWEEP_LOOKBACK   600
#define NGX_HTTP_LINEGATE_LINK_SWEEP_LOOKAHEAD  3600
#define NGX_HTTP_LINEGATE_LINK_SWEEP_PAGE       10
#define NGX_HTTP_LINEGATE_LINK_SWEEP_PAGES      10
/*
 * A claim's journal member "<W> <id> r<invoiceSeq>" as a durable write's
 * continuation builds it to remove it: far more than a workspace, an id
 * and a count take (a run's sweep drops a member of longer words unread)
 */
#define NGX_HTTP_LINEGATE_LR_MEMBER_MAX         256


static void ngx_http_linegate_manage_resume(ngx_http_request_t *r,
    redisReply *reply);
static void ngx_http_linegate_link_reuse(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr);
static void ngx_http_linegate_link_acked(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, redisReply *reply);
static void ngx_http_linegate_manage_stripe_done(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx);
static void ngx_http_linegate_manage_fail(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, ngx_http_linegate_lr_fail_e fail,
    ngx_uint_t result, ngx_int_t retry_after);
static void ngx_http_linegate_manage_failed(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr);
static void ngx_http_linegate_manage_read_stored(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, const char *why);
static void ngx_http_linegate_line_sweep_customer(ngx_http_request_t *r,
    redisReply *reply);
static void ngx_http_linegate_line_sweep_claim(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr);

static void ngx_http_linegate_manage_action(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr);
static void ngx_http_linegate_manage_gated(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, redisReply *reply);
static ngx_int_t ngx_http_linegate_manage_load(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, redisReply *reply);
static ngx_int_t ngx_http_linegate_manage_key(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr);
static ngx_int_t ngx_http_linegate_manage_void_key(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, ngx_str_t *invoice);
static void ngx_http_linegate_manage_refuse(ngx_http_request_t *r,
    redisReply *reply, ngx_uint_t i);
static void ngx_http_linegate_manage_conflict(ngx_http_request_t *r,
    ngx_str_t *state, const char *message);
static void ngx_http_linegate_manage_busy(ngx_http_request_t *r);
static void ngx_http_linegate_manage_busy_for(ngx_http_request_t *r,
    ngx_int_t retry_after);
static void ngx_http_linegate_manage_reserved(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, redisReply *reply);
static void ngx_http_linegate_manage_busy_until(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, int64_t at, int64_t until, ngx_int_t after);
static void ngx_http_linegate_manage_stripe_error(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr);
static void ngx_http_linegate_manage_unavailable(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr);
static ngx_int_t ngx_http_linegate_manage_invoice(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr);
static void ngx_http_linegate_manage_check(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, ngx_http_linegate_manage_step_e step);
static void ngx_http_linegate_manage_resolve(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, ngx_http_linegate_manage_step_e step,
    const char *outcome);
static ngx_int_t ngx_http_linegate_manage_resolved(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, redisReply *reply);

static void ngx_http_linegate_link_checked(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr);
static void ngx_http_linegate_link_send(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, ngx_uint_t reused);
static void ngx_http_linegate_link_resolved(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, redisReply *reply);
static void ngx_http_linegate_link_claim(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr);
static void ngx_http_linegate_link_claimed(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, redisReply *reply);
static void ngx_http_linegate_link_journal(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr);
static void ngx_http_linegate_link_journaled(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, redisReply *reply);
static void ngx_http_linegate_link_unjournal(ngx_str_t *ws, ngx_str_t *id,
    ngx_str_t *seq);
static void ngx_http_linegate_link_void_old(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr);
static void ngx_http_linegate_link_old_voided(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr);
static void ngx_http_linegate_link_sweep(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr);
static void ngx_http_linegate_link_swept(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr);
static ngx_int_t ngx_http_linegate_link_sweep_page(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr);
static ngx_int_t ngx_http_linegate_link_sweep_found(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, json_t *inv);
static time_t ngx_http_linegate_link_sweep_since(ngx_http_linegate_lr_t *lr);
static void ngx_http_linegate_link_named(ngx_http_linegate_lr_t *lr);
static const char *ngx_http_linegate_link_made(ngx_http_linegate_lr_t *lr,
    int64_t seq, time_t created);
static void ngx_http_linegate_link_left(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, ngx_str_t *id, const char *why);
static void ngx_http_linegate_link_sweep_next(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr);
static void ngx_http_linegate_link_sweep_fenced(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, redisReply *reply);
static void ngx_http_linegate_link_sweep_discarded(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr);
static void ngx_http_linegate_link_sweep_end(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr);
static void ngx_http_linegate_link_issue(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr);
static void ngx_http_linegate_link_issued(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr);
static void ngx_http_linegate_link_indexed(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, redisReply *reply);
static void ngx_http_linegate_link_store(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr);
static void ngx_http_linegate_link_stored(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, redisReply *reply);
static void ngx_http_linegate_link_restored(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, redisReply *reply);
static void ngx_http_linegate_link_fenced(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr);
static void ngx_http_linegate_link_discard(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, ngx_http_linegate_manage_step_e step,
    ngx_uint_t keep);
static void ngx_http_linegate_link_unissued(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr);
static void ngx_http_linegate_link_abort(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, ngx_http_linegate_manage_step_e step);
static void ngx_http_linegate_link_discarded(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr);
static void ngx_http_linegate_link_abort_args(ngx_http_linegate_lr_t *lr,
    ngx_http_linegate_redis_args_t *a);
static void ngx_http_linegate_link_aborted_late(redisReply *reply,
    ngx_http_linegate_redis_args_t *args, ngx_str_t *note);
static void ngx_http_linegate_link_stored_late(redisReply *reply,
    ngx_http_linegate_redis_args_t *args, ngx_str_t *note);
static void ngx_http_linegate_link_abort_late(ngx_str_t *lkey, ngx_str_t *ws,
    ngx_str_t *id, ngx_str_t *seq, ngx_str_t *customer);
static void ngx_http_linegate_link_unindex_late(ngx_str_t *invoice);
static ngx_int_t ngx_http_linegate_link_claim_name(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr);
static void ngx_http_linegate_link_unclaim(ngx_http_linegate_lr_t *lr);
static void ngx_http_linegate_link_answer_stored(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr);
static void ngx_http_linegate_link_cleanup(void *data);
static ngx_uint_t ngx_http_linegate_link_left_for_sweep(
    ngx_http_linegate_lr_t *lr);

static void ngx_http_linegate_cancel_void(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr);
static void ngx_http_linegate_cancel_voided(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr);
static void ngx_http_linegate_cancel_checked(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr);
static void ngx_http_linegate_cancel_void_done(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr);
static void ngx_http_linegate_cancel_resolved(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, redisReply *reply);


void
ngx_http_linegate_line_manage(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr)
{
    ngx_http_linegate_redis_args_t  *a;

    /* a malformed id is answered first, a malformed body next */
    if (!lr->deferred && ngx_http_linegate_lines_parse(r, lr) == NGX_OK) {
        ngx_http_linegate_manage_action(r, lr);
    }

    lr->ctx->state = NGX_HTTP_LINEGATE_MANAGE_GATE;

    ngx_http_linegate_lines_args(r, lr);
    a = &lr->args;

    ngx_http_linegate_redis_arg_str(a, &lr->id);
    ngx_http_linegate_redis_arg_cstr(a,
        lr->action == NGX_HTTP_LINEGATE_ACTION_CANCEL ? "cancel"
                                                      : "payment_link");
    ngx_http_linegate_redis_arg_str(a, &lr->date);
    ngx_http_linegate_redis_arg_int(r, a, lr->now_ms);
    ngx_http_linegate_redis_arg_int(r, a, NGX_HTTP_LINEGATE_LR_REISSUE_HOLD);
    ngx_http_linegate_lines_key(lr, a, NGX_HTTP_LINEGATE_KEY_WS_LR,
                                &lr->who.value, &lr->id);

    ngx_http_linegate_lines_script(r, lr, NGX_HTTP_LINEGATE_SCRIPT_LR_MANAGE,
                                   ngx_http_linegate_manage_resume);
}


/*
 * GET /api/line-requests/:id (lines.c): its check found the invoice the
 * request names void or uncollectible while a reissue claim past its
 * hold, or released lapsed, is in the hash. What that claim left at
 * Stripe is swept as payment_link's and cancel's sweeps do, under a claim
 * of its own (LINK_CLAIM: one GET of parallel ones sweeps, the others are
 * answered the stored state): one paid is made the request's and
 * promotes it; none, the claim is released swept and the request
 * canceled, as a GET does with a void invoice and no claim. A read never
 * answers an error for a sweep: every failure (Stripe, Redis), once what
 * it held is undone (the claim released lapsed, for the next caller),
 * answers the request as it was read. The invoice named is not voided
 * (a GET does not void it without a claim either). Before, the GET only
 * answered, and a client that only polled saw a void invoice awaiting
 * payment for ever, and a paid one never promoted.
 *
 * It sweeps under the customer the request was billed to (lr_due read
 * it), else the workspace's: a request made before requests kept their
 * customer was billed, and is reissued and swept by payment_link and
 * cancel, under the workspace's (lr_manage). The GET read the request
 * alone, so the workspace's is read here, one round trip on this path
 * only (a request awaiting payment whose check found its invoice void
 * over a lapsed claim, a Stripe call already made). Until 2026-11-29
 * such a GET answered the stored state, awaiting payment, poll after
 * poll, where SPEC 2.5 cancels.
 */
void
ngx_http_linegate_line_sweep(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr)
{
    ngx_str_t                        key;
    ngx_http_linegate_redis_args_t   a;

    lr->sweep.read = 1;
    lr->stored = lr->line;

    /* the check's answer: the invoice named, whose claim the sweep needs */
    ngx_http_linegate_link_named(lr);

    if (lr->customer.len) {
        ngx_http_linegate_line_sweep_claim(r, lr);
        return;
    }

    if (ngx_http_linegate_key(r->pool, NGX_HTTP_LINEGATE_KEY_WS, &lr->ws,
                              NULL, &key)
        != NGX_OK)
    {
        ngx_http_linegate_line_sweep_claim(r, lr);
        return;
    }

    ngx_http_linegate_redis_args_init(&a);
    ngx_http_linegate_redis_arg_cstr(&a, "HGET");
    ngx_http_linegate_redis_arg_str(&a, &key);
    ngx_http_linegate_redis_arg_cstr(&a, "stripeCustomerId");

    if (ngx_http_linegate_redis_command(r, &a,
                                        ngx_http_linegate_line_sweep_customer)
        != NGX_OK)
    {
        ngx_http_linegate_line_sweep_claim(r, lr);
    }
}


/* the workspace's customer, for a request that keeps none (none: "") */
static void
ngx_http_linegate_line_sweep_customer(ngx_http_request_t *r,
    redisReply *reply)
{
    ngx_http_linegate_lr_t  *lr;

    lr = ngx_http_linegate_lines_lr(r);

    if (reply != NULL && reply->type == REDIS_REPLY_STRING) {
        /* the reply is freed once the handler returns */
        (void) ngx_http_linegate_pstr(r->pool, &lr->customer,
                                      (u_char *) reply->str, reply->len);
    }

    ngx_http_linegate_line_sweep_claim(r, lr);
}


static void
ngx_http_linegate_line_sweep_claim(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr)
{
    if (!ngx_http_linegate_stripe_id_valid(&lr->customer)) {
        /* none to look under (the workspace has none, or unread) */
        ngx_http_linegate_manage_read_stored(r, lr, "its customer unknown");
        return;
    }

    lr->ctx->state = NGX_HTTP_LINEGATE_LINK_CLAIM;
    ngx_http_linegate_link_claim(r, lr);
}


/* every Redis step resumes here, every Stripe step too (stripe_done) */
static void
ngx_http_linegate_manage_resume(ngx_http_request_t *r, redisReply *reply)
{
    ngx_http_linegate_lr_t  *lr;

    lr = ngx_http_linegate_lines_lr(r);

    switch ((ngx_http_linegate_manage_step_e) lr->ctx->state) {

    case NGX_HTTP_LINEGATE_MANAGE_GATE:
        ngx_http_linegate_manage_gated(r, lr, reply);
        return;

    case NGX_HTTP_LINEGATE_LINK_CHECK:
    case NGX_HTTP_LINEGATE_LINK_RECHECK:
        ngx_http_linegate_link_checked(r, lr);
        return;

    case NGX_HTTP_LINEGATE_LINK_ACK:
        ngx_http_linegate_link_acked(r, lr, reply);
        return;

    case NGX_HTTP_LINEGATE_LINK_RESOLVE:
        ngx_http_linegate_link_resolved(r, lr, reply);
        return;

    case NGX_HTTP_LINEGATE_LINK_CLAIM:
    case NGX_HTTP_LINEGATE_LINK_RECLAIM:
        ngx_http_linegate_link_claimed(r, lr, reply);
        return;

    case NGX_HTTP_LINEGATE_LINK_JOURNAL:
        ngx_http_linegate_link_journaled(r, lr, reply);
        return;

    case NGX_HTTP_LINEGATE_LINK_VOID_OLD:
    case NGX_HTTP_LINEGATE_LINK_REVOID_OLD:
        ngx_http_linegate_link_old_voided(r, lr);
        return;

    case NGX_HTTP_LINEGATE_LINK_ABORT_RECHECK:
        /* paid meanwhile, most likely: look again, once */
        ngx_http_linegate_lines_durable_done(r, lr, reply);
        lr->line.invoice_id = lr->old_invoice;
        ngx_http_linegate_manage_check(r, lr,
                                       NGX_HTTP_LINEGATE_LINK_RECHECK);
        return;

    case NGX_HTTP_LINEGATE_LINK_SWEEP:
        ngx_http_linegate_link_swept(r, lr);
        return;

    case NGX_HTTP_LINEGATE_LINK_SWEEP_FENCE:
        ngx_http_linegate_link_sweep_fenced(r, lr, reply);
        return;

    case NGX_HTTP_LINEGATE_LINK_SWEEP_DISCARD:
        if (ngx_http_linegate_invoice_next(r, lr) == NGX_DONE) {
            ngx_http_linegate_link_sweep_discarded(r, lr);
        }

        return;

    case NGX_HTTP_LINEGATE_LINK_ISSUE:
        if (ngx_http_linegate_invoice_next(r, lr) == NGX_DONE) {
            ngx_http_linegate_link_issued(r, lr);
        }

        return;

    case NGX_HTTP_LINEGATE_LINK_INDEX:
        ngx_http_linegate_link_indexed(r, lr, reply);
        return;

    case NGX_HTTP_LINEGATE_LINK_STORE:
        ngx_http_linegate_link_stored(r, lr, reply);
        return;

    case NGX_HTTP_LINEGATE_LINK_UNISSUE:
        if (ngx_http_linegate_invoice_next(r, lr) == NGX_DONE) {
            ngx_http_linegate_link_unissued(r, lr);
        }

        return;

    case NGX_HTTP_LINEGATE_LINK_DISCARD:
        if (ngx_http_linegate_invoice_next(r, lr) == NGX_DONE) {
            ngx_http_linegate_link_discarded(r, lr);
        }

        return;

    case NGX_HTTP_LINEGATE_LINK_STORE_AGAIN:
        ngx_http_linegate_lines_durable_done(r, lr, reply);
        ngx_http_linegate_link_restored(r, lr, reply);
        return;

    case NGX_HTTP_LINEGATE_LINK_ABORT:
        ngx_http_linegate_lines_durable_done(r, lr, reply);
        ngx_http_linegate_manage_failed(r, lr);
        return;

    case NGX_HTTP_LINEGATE_CANCEL_VOID:
        ngx_http_linegate_cancel_voided(r, lr);
        return;

    case NGX_HTTP_LINEGATE_CANCEL_CHECK:
        ngx_http_linegate_cancel_checked(r, lr);
        return;

    case NGX_HTTP_LINEGATE_CANCEL_RESOLVE:
        ngx_http_linegate_cancel_resolved(r, lr, reply);
        return;

    case NGX_HTTP_LINEGATE_CANCEL_RELEASE:
        ngx_http_linegate_lines_durable_done(r, lr, reply);
        /* a GET's sweep is answered as a GET (link_resolved) */
        ngx_http_linegate_manage_resolve(r, lr,
                                         lr->sweep.read
                                         ? NGX_HTTP_LINEGATE_LINK_RESOLVE
                                         : NGX_HTTP_LINEGATE_CANCEL_RESOLVE,
                                         lr->sweep.cancel_paid ? "paid"
                                                               : "void");
        return;

    default: /* NGX_HTTP_LINEGATE_MANAGE_FAILED: answered */
        return;
    }
}


static void
ngx_http_linegate_manage_stripe_done(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx)
{
    /* the answer is in ctx->stripe_* */
    ngx_http_linegate_manage_resume(r, NULL);
}


/*
 * The failure step: what fail means depends on the step it happens in
 * (see the head of this file); the answer (manage_failed) comes once
 * what the step held is undone.
 */
static void
ngx_http_linegate_manage_fail(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, ngx_http_linegate_lr_fail_e fail,
    ngx_uint_t result, ngx_int_t retry_after)
{
    lr->fail = fail;
    lr->fail_result = result;
    lr->fail_retry_after = retry_after;

    switch ((ngx_http_linegate_manage_step_e) lr->ctx->state) {

    case NGX_HTTP_LINEGATE_CANCEL_VOID:
    case NGX_HTTP_LINEGATE_CANCEL_CHECK:
        if (lr->sweep.cancel) {
            /* a cancel's claim, held: freed, lapsed still (not swept) */
            ngx_http_linegate_link_abort(r, lr,
                                         NGX_HTTP_LINEGATE_LINK_ABORT);

        } else {
            ngx_http_linegate_manage_failed(r, lr);
        }

        return;

    case NGX_HTTP_LINEGATE_LINK_JOURNAL:
    case NGX_HTTP_LINEGATE_LINK_VOID_OLD:
    case NGX_HTTP_LINEGATE_LINK_REVOID_OLD:
    case NGX_HTTP_LINEGATE_LINK_SWEEP:
    case NGX_HTTP_LINEGATE_LINK_SWEEP_FENCE:
    case NGX_HTTP_LINEGATE_LINK_SWEEP_DISCARD:
        /*
         * the claim is held, no new invoice yet: free the claim (lapsed
         * still, while the lapsed claim's invoices are not all found)
         */
        ngx_http_linegate_link_abort(r, lr, NGX_HTTP_LINEGATE_LINK_ABORT);
        return;

    case NGX_HTTP_LINEGATE_LINK_INDEX:
        if (lr->sweep.adopting) {
            /*
             * a paid invoice the sweep kept is never discarded: the claim
             * is released lapsed, and the next one finds it paid again
             */
            ngx_http_linegate_link_abort(r, lr,
                                         NGX_HTTP_LINEGATE_LINK_ABORT);
            return;
        }

        /*
         * The store was never sent: nothing names the new invoice. Its
         * index (written, or not, or yet: Redis stalled) goes after the
         * SET, a durable DEL on the node's same connection
         */
        ngx_http_linegate_lines_invoice_unindex(r, &lr->invoice.id);
        ngx_http_linegate_link_discard(r, lr, NGX_HTTP_LINEGATE_LINK_UNISSUE,
                                       0);
        return;

    case NGX_HTTP_LINEGATE_LINK_ISSUE:
        /*
         * billing failed: discard what was made, free the claim; one
         * Stripe paid at finalization (its answer lost) is kept and
         * stored instead (link_unissued)
         */
        ngx_http_linegate_link_discard(r, lr, NGX_HTTP_LINEGATE_LINK_UNISSUE,
                                       fail
                                       == NGX_HTTP_LINEGATE_LR_FAIL_BILLING);
        return;

    case NGX_HTTP_LINEGATE_LINK_STORE:
        if (fail == NGX_HTTP_LINEGATE_LR_FAIL_STORE) {
            lr->settled = 1;

            /*
             * Stored or not, it will be: the new invoice is kept (voiding
             * one Redis may already name would cancel the request at its
             * next check), the step sent again until Redis runs it (it is
             * idempotent), and a retry of payment_link finds the new link.
             */
            lr->ctx->state = NGX_HTTP_LINEGATE_LINK_STORE_AGAIN;
            ngx_http_linegate_lines_durable_then(r, lr,
                                    NGX_HTTP_LINEGATE_SCRIPT_LR_REISSUE_STORE,
                                    "lr_reissue_store",
                                    ngx_http_linegate_link_stored_late,
                                    ngx_http_linegate_manage_resume);
            return;
        }

        if (lr->sweep.adopting) {
            /*
             * paid, so never voided: another claim took over (its sweep
             * finds it paid and keeps it), or the request moved on (a
             * payment for nothing: queued, a human's)
             */
            lr->settled = 1;

            if (fail == NGX_HTTP_LINEGATE_LR_FAIL_CONFLICT) {
                ngx_http_linegate_lines_orphan(r->connection->log, lr);
            }

            ngx_http_linegate_manage_failed(r, lr);
            return;
        }

        /* nobody will be given this invoice: void it, answer */
        ngx_http_linegate_lines_invoice_unindex(r, &lr->invoice.id);
        ngx_http_linegate_link_discard(r, lr, NGX_HTTP_LINEGATE_LINK_DISCARD,
                                       0);
        return;

    default:
        /* nothing held */
        ngx_http_linegate_manage_failed(r, lr);
        return;
    }
}


/* the failure's answer */
static void
ngx_http_linegate_manage_failed(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr)
{
    lr->ctx->state = NGX_HTTP_LINEGATE_MANAGE_FAILED;

    if (lr->sweep.read) {
        ngx_http_linegate_manage_read_stored(r, lr,
            lr->fail == NGX_HTTP_LINEGATE_LR_FAIL_BILLING
            ? "Stripe failed"
            : lr->fail == NGX_HTTP_LINEGATE_LR_FAIL_STORE
            ? "Redis did not answer"
            : lr->fail == NGX_HTTP_LINEGATE_LR_FAIL_BUSY
            ? "its claim was taken over"
            : lr->fail == NGX_HTTP_LINEGATE_LR_FAIL_CONFLICT
            ? "the request moved on"
            : "an answer not understood");
        return;
    }

    switch (lr->fail) {

    case NGX_HTTP_LINEGATE_LR_FAIL_CONFLICT:
        ngx_http_linegate_manage_conflict(r, &lr->line.status, NULL);
        return;

    case NGX_HTTP_LINEGATE_LR_FAIL_BUSY:
        /* another payment_link reissues: what a parallel caller is told */
        ngx_http_linegate_manage_busy(r);
        return;

    default: /* BILLING, STORE, INTERNAL */
        ngx_http_linegate_lines_failed(r, lr);
        return;
    }
}


/*
 * A GET's sweep not done (line_sweep): the request as read is answered,
 * 200, as a read whose check failed is; the claim, if it was taken, is
 * released lapsed by then (manage_fail), for the next caller to sweep
 */
static void
ngx_http_linegate_manage_read_stored(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, const char *why)
{
    lr->ctx->state = NGX_HTTP_LINEGATE_MANAGE_FAILED;

    ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                  NGX_HTTP_LINEGATE_LOG "invoice \"%V\" of line request "
                  "\"%V\" is void, a reissue claim lapsed: not swept by "
                  "this read (%s): stored state answered",
                  &lr->stored.invoice_id, &lr->id, why);

    lr->line = lr->stored;
    ngx_http_linegate_lines_send_status(r, lr);
}


static void
ngx_http_linegate_manage_action(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr)
{
    ngx_int_t  rc;
    ngx_str_t  action;

    rc = ngx_http_linegate_json_str(lr->ctx->body, "action", &action);

    /* a string refused holds a NUL (json.c): no action, as any other */
    if (rc == NGX_ERROR
        && !json_is_string(json_object_get(lr->ctx->body, "action")))
    {
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


/* GATE */
static void
ngx_http_linegate_manage_gated(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, redisReply *reply)
{
    ngx_int_t  code;

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
        ngx_http_linegate_manage_reserved(r, lr, reply);
        return;

    case NGX_HTTP_LINEGATE_LR_OK:
        break;

    default:
        ngx_http_linegate_manage_fail(r, lr,
                                      NGX_HTTP_LINEGATE_LR_FAIL_INTERNAL,
                                      0, -1);
        return;
    }

    if (ngx_http_linegate_manage_load(r, lr, reply) != NGX_OK) {
        ngx_http_linegate_manage_fail(r, lr,
                                      NGX_HTTP_LINEGATE_LR_FAIL_INTERNAL,
                                      0, -1);
        return;
    }

    if (lr->sweep.cancel) {
        ngx_http_linegate_link_claim(r, lr);

    } else if (lr->action == NGX_HTTP_LINEGATE_ACTION_CANCEL) {
        lr->invoice.void_key = NULL;    /* a first try: "-void" */
        ngx_http_linegate_cancel_void(r, lr);

    } else {
        ngx_http_linegate_manage_check(r, lr, NGX_HTTP_LINEGATE_LINK_CHECK);
    }
}


/* {LR_OK, ws, remaining, line, stripeCustomerId, invoiceSeq, lapsed} */
static ngx_int_t
ngx_http_linegate_manage_load(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, redisReply *reply)
{
    int64_t    lapsed;
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

    /* ended with a claim in place, not yet queued (lr_settle's mark) */
    ngx_http_linegate_lines_pending(r, lr, reply->element[3]);

    /* a cancel over a lapsed claim sweeps under a claim of its own */
    lr->sweep.cancel = lr->action == NGX_HTTP_LINEGATE_ACTION_CANCEL
                       && ngx_http_linegate_reply_int(reply, 6, &lapsed)
                          == NGX_OK
                       && lapsed == 1;

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


/*
 * The Idempotency-Key prefix of a void (or a draft's delete) of one
 * invoice: "lg-<id>-<invoice>", whatever claim voids it, so that a key
 * is never sent for two invoices. One built from invoiceSeq was: a claim
 * (invoiceSeq n) that discarded its own invoice and was released lapsed
 * had voided it under "lg-<id>-r<n>-void", and the next cancel (or the
 * void of an uncollectible invoice before a reissue) voided the invoice
 * the request names under the same key: Stripe refused it (400
 * idempotency_error) and the cancel answered 502 until the key expired.
 */
static ngx_int_t
ngx_http_linegate_manage_void_key(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, ngx_str_t *invoice)
{
    u_char     *p;
    ngx_str_t  *key;

    key = &lr->invoice.key;

    p = ngx_pnalloc(r->pool, sizeof("lg--") - 1 + lr->id.len + invoice->len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    key->data = p;
    key->len = ngx_sprintf(p, "lg-%V-%V", &lr->id, invoice) - p;

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
        : "This action applies only to a request awaiting payment", NULL);
}


static void
ngx_http_linegate_manage_busy(ngx_http_request_t *r)
{
    ngx_http_linegate_manage_busy_for(r, 1);
}


static void
ngx_http_linegate_manage_busy_for(ngx_http_request_t *r,
    ngx_int_t retry_after)
{
    ngx_http_linegate_ctx_t  *ctx;

    static ngx_str_t  awaiting = ngx_string(NGX_HTTP_LINEGATE_LR_AWAITING);

    ctx = ngx_http_linegate_get_ctx(r);
    ctx->retry_after = retry_after;
    ngx_str_set(&ctx->outcome, "busy");

    ngx_http_linegate_lines_refusal(r, NGX_HTTP_CONFLICT, &awaiting,
        "The invoice of this request is being issued: retry shortly", NULL);
}


/*
 * lr_manage's LR_BUSY: a reservation whose first invoice is not stored,
 * with its time (reply[3]), or a reissue claim held, with its time
 * (reply[4], reissueAt). A live creation or reissue stores its invoice
 * within seconds (1 s, while it is younger than one Stripe call's
 * linegate_stripe_timeout); an older one is most likely a dead worker's.
 * A claim is then taken over at the end of its hold
 * (NGX_HTTP_LINEGATE_LR_REISSUE_HOLD): Retry-After is the seconds left
 * on it, at least 1. A reservation is settled only by a reconciliation
 * run (linegate_reconcile_lost_after) or the workspace's next creation
 * (create_stale): Retry-After is the time until the earlier of them,
 * then 60 s (a run's). Both used to be 1 s throughout: a client polled
 * every second for 10 minutes, or for a dead worker's whole claim.
 */
static void
ngx_http_linegate_manage_reserved(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, redisReply *reply)
{
    int64_t                         at, until;
    ngx_http_linegate_main_conf_t  *lmcf;

    if (ngx_http_linegate_reply_int(reply, 4, &at) == NGX_OK && at > 0) {
        until = at + NGX_HTTP_LINEGATE_LR_REISSUE_HOLD;
        ngx_http_linegate_manage_busy_until(r, lr, at, until, 1);
        return;
    }

    if (ngx_http_linegate_reply_int(reply, 3, &at) != NGX_OK) {
        at = 0;
    }

    lmcf = ngx_http_get_module_main_conf(r, ngx_http_linegate_module);

    until = at + ngx_min((int64_t) lmcf->reconcile_lost,
                         ngx_http_linegate_create_stale(lmcf));
    ngx_http_linegate_manage_busy_until(r, lr, at, until, 60);
}


/*
 * 409 "being issued" for what began at "at" (ms; 0: unknown) and may
 * stay so until "until" (ms): 1 s while a live worker may still end it
 * (younger than linegate_stripe_timeout), then the seconds left, then
 * "after" seconds
 */
static void
ngx_http_linegate_manage_busy_until(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, int64_t at, int64_t until, ngx_int_t after)
{
    int64_t                         left;
    ngx_http_linegate_main_conf_t  *lmcf;

    lmcf = ngx_http_get_module_main_conf(r, ngx_http_linegate_module);

    if (at <= 0 || lr->now_ms - at < (int64_t) lmcf->stripe_timeout) {
        ngx_http_linegate_manage_busy(r);
        return;
    }

    left = (until - lr->now_ms + 999) / 1000;

    ngx_http_linegate_manage_busy_for(r, left > 0 ? (ngx_int_t) left : after);
}


static void
ngx_http_linegate_manage_stripe_error(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr)
{
    ngx_uint_t                result;
    ngx_http_linegate_ctx_t  *ctx;

    ctx = lr->ctx;
    result = ngx_http_linegate_stripe_result(ctx);

    ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                  NGX_HTTP_LINEGATE_LOG "Stripe call failed: status %i, %s",
                  ctx->stripe_status,
                  ngx_http_linegate_stripe_error_message(ctx));

    ngx_http_linegate_manage_fail(r, lr, NGX_HTTP_LINEGATE_LR_FAIL_BILLING,
                              result == NGX_HTTP_LINEGATE_STRIPE_OK
                              ? NGX_HTTP_LINEGATE_STRIPE_UNAVAILABLE : result,
                              (ngx_int_t) ctx->stripe_retry_after);
}


/* Stripe could not be asked, or answered what is not understood: 502 */
static void
ngx_http_linegate_manage_unavailable(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr)
{
    ngx_http_linegate_manage_fail(r, lr, NGX_HTTP_LINEGATE_LR_FAIL_BILLING,
                                  NGX_HTTP_LINEGATE_STRIPE_UNAVAILABLE, -1);
}


/* LINK_CHECK, LINK_RECHECK, CANCEL_CHECK: how the invoice stands */
static void
ngx_http_linegate_manage_check(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, ngx_http_linegate_manage_step_e step)
{
    lr->ctx->state = step;

    if (ngx_http_linegate_lines_invoice_get(r, lr,
                                        ngx_http_linegate_manage_stripe_done)
        != NGX_OK)
    {
        ngx_http_linegate_manage_unavailable(r, lr);
    }
}


/* Stripe's answer to manage_check read into lr->invoice, else failed */
static ngx_int_t
ngx_http_linegate_manage_invoice(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr)
{
    if (ngx_http_linegate_stripe_result(lr->ctx)
        != NGX_HTTP_LINEGATE_STRIPE_OK
        || ngx_http_linegate_lines_invoice_read(r, lr, &lr->line.invoice_id)
           != NGX_OK)
    {
        ngx_http_linegate_manage_stripe_error(r, lr);
        return NGX_ERROR;
    }

    ngx_http_linegate_link_named(lr);

    return NGX_OK;
}


/* LINK_RESOLVE, CANCEL_RESOLVE: lr_resolve.lua */
static void
ngx_http_linegate_manage_resolve(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, ngx_http_linegate_manage_step_e step,
    const char *outcome)
{
    lr->ctx->state = step;
    ngx_http_linegate_lines_resolve(r, lr, outcome,
                                    ngx_http_linegate_manage_resume);
}


/*
 * lr_resolve's answer read into lr->line: NGX_OK; else NGX_DONE, a 404
 * answered (the request gone), a 500 (an answer not understood: the
 * request exists), or no answer a 503 (a retry finds the invoice as
 * Stripe left it, and resolves it then)
 */
static ngx_int_t
ngx_http_linegate_manage_resolved(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, redisReply *reply)
{
    if (reply == NULL) {
        ngx_http_linegate_manage_fail(r, lr, NGX_HTTP_LINEGATE_LR_FAIL_STORE,
                                      0, -1);
        return NGX_DONE;
    }

    switch (ngx_http_linegate_lines_resolved(r, lr, reply)) {

    case NGX_OK:
        return NGX_OK;

    case NGX_DECLINED:
        ngx_http_linegate_lines_not_found(r);
        return NGX_DONE;

    default:
        ngx_http_linegate_internal_error(r);
        return NGX_DONE;
    }
}


/* payment_link */

/* LINK_CHECK, LINK_RECHECK */
static void
ngx_http_linegate_link_checked(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr)
{
    ngx_str_t  *st;

    if (ngx_http_linegate_manage_invoice(r, lr) != NGX_OK) {
        return;
    }

    st = &lr->invoice.status;

    if (ngx_http_linegate_line_is(st, "open")) {
        ngx_http_linegate_link_reuse(r, lr);
        return;
    }

    if (ngx_http_linegate_line_is(st, "paid")) {
        ngx_http_linegate_manage_resolve(r, lr,
                                         NGX_HTTP_LINEGATE_LINK_RESOLVE,
                                         "paid");
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

    ngx_http_linegate_manage_unavailable(r, lr);
}


/*
 * LINK_ACK: the open invoice the request names may be a payment_link's
 * new one whose store was not acknowledged (that call answered 503):
 * with linegate_redis_wait, its link is answered only once the replicas
 * have every write before this one, as the store's own 200 would have
 * been (lost with its master, the request would name the old invoice
 * and the new one's payment would find no request). WAIT counts a
 * connection's writes, not its reads: the write is a scratch key of the
 * workspace's slot (its master), which expires.
 */
static void
ngx_http_linegate_link_reuse(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr)
{
    ngx_str_t                       key;
    ngx_http_linegate_redis_args_t  a;
    ngx_http_linegate_main_conf_t  *lmcf;

    lmcf = ngx_http_get_module_main_conf(r, ngx_http_linegate_module);

    if (lmcf->redis_wait_replicas == 0) {
        ngx_http_linegate_link_send(r, lr, 1);
        return;
    }

    lr->ctx->state = NGX_HTTP_LINEGATE_LINK_ACK;

    if (ngx_http_linegate_key(r->pool, NGX_HTTP_LINEGATE_KEY_WS_ACK, &lr->ws,
                              NULL, &key)
        != NGX_OK)
    {
        ngx_http_linegate_manage_fail(r, lr,
                                      NGX_HTTP_LINEGATE_LR_FAIL_INTERNAL,
                                      0, -1);
        return;
    }

    ngx_http_linegate_redis_args_init(&a);
    ngx_http_linegate_redis_arg_cstr(&a, "SET");
    ngx_http_linegate_redis_arg_str(&a, &key);
    ngx_http_linegate_redis_arg_cstr(&a, "1");
    ngx_http_linegate_redis_arg_cstr(&a, "PX");
    ngx_http_linegate_redis_arg_cstr(&a, "10000");
    a.acknowledged = 1;

    if (ngx_http_linegate_redis_command(r, &a,
                                        ngx_http_linegate_manage_resume)
        != NGX_OK)
    {
        ngx_http_linegate_link_acked(r, lr, NULL);
    }
}


/* LINK_ACK: no answer, or too few replicas, is a 503 (retry) */
static void
ngx_http_linegate_link_acked(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, redisReply *reply)
{
    if (reply == NULL) {
        ngx_http_linegate_manage_fail(r, lr, NGX_HTTP_LINEGATE_LR_FAIL_STORE,
                                      0, -1);
        return;
    }

    ngx_http_linegate_link_send(r, lr, 1);
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


/* LINK_RESOLVE */
static void
ngx_http_linegate_link_resolved(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, redisReply *reply)
{
    if (lr->sweep.cancel) {
        /* a cancel's sweep kept a paid invoice: answered as a cancel */
        ngx_http_linegate_cancel_resolved(r, lr, reply);
        return;
    }

    if (ngx_http_linegate_manage_resolved(r, lr, reply) == NGX_OK) {
        ngx_http_linegate_lines_send_status(r, lr);
    }
}


/* LINK_CLAIM, LINK_RECLAIM: lr_reissue_claim.lua */
static void
ngx_http_linegate_link_claim(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr)
{
    ngx_http_linegate_redis_args_t  *a;

    lr->ctx->state = (lr->ctx->state == NGX_HTTP_LINEGATE_LINK_RECHECK)
                     ? NGX_HTTP_LINEGATE_LINK_RECLAIM
                     : NGX_HTTP_LINEGATE_LINK_CLAIM;

    ngx_http_linegate_lines_line_args(lr);
    a = &lr->args;

    ngx_http_linegate_redis_arg_str(a, &lr->line.invoice_id);
    /*
     * the claim's time is now, not the request's start: a slow LINK_CHECK
     * would eat its hold, and another caller take it over while held
     */
    lr->claim_ms = ngx_http_linegate_now_ms();
    ngx_http_linegate_redis_arg_int(r, a, lr->claim_ms);
    ngx_http_linegate_redis_arg_int(r, a, NGX_HTTP_LINEGATE_LR_REISSUE_HOLD);

    if (ngx_http_linegate_link_claim_name(r, lr) != NGX_OK) {
        ngx_http_linegate_manage_fail(r, lr,
                                      NGX_HTTP_LINEGATE_LR_FAIL_INTERNAL,
                                      0, -1);
        return;
    }

    ngx_http_linegate_redis_arg_str(a, &lr->claim_by);

    if (lr->sweep.read) {
        /* not sent: link_claimed's lost claim, the stored state answered */
        ngx_http_linegate_lines_call(r, lr,
                                  NGX_HTTP_LINEGATE_SCRIPT_LR_REISSUE_CLAIM,
                                  ngx_http_linegate_manage_resume);
        return;
    }

    ngx_http_linegate_lines_script(r, lr,
                                   NGX_HTTP_LINEGATE_SCRIPT_LR_REISSUE_CLAIM,
                                   ngx_http_linegate_manage_resume);
}


/*
 * The claim's name (reissueBy): unique to this call among the fleet's
 * (the worker's pid, the ms, a count of the worker's claims), so that a
 * call that does not know whether its claim was taken can release it
 * and nobody else's
 */
static ngx_int_t
ngx_http_linegate_link_claim_name(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr)
{
    u_char             *p;
    static ngx_uint_t   claims;

    p = ngx_pnalloc(r->pool, NGX_INT64_LEN * 3 + 2);

    if (p == NULL) {
        return NGX_ERROR;
    }

    lr->claim_by.data = p;
    p = ngx_sprintf(p, "%P.%L.%ui", ngx_pid,
                    (int64_t) ngx_http_linegate_now_ms(), ++claims);
    lr->claim_by.len = p - lr->claim_by.data;

    return NGX_OK;
}


static void
ngx_http_linegate_link_claimed(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, redisReply *reply)
{
    int64_t              code;
    ngx_str_t            seq;
    ngx_pool_cleanup_t  *cln;

    if (reply == NULL) {
        /*
         * lost, or (linegate_redis_wait) no replica has it: nothing is
         * issued on a claim that may not survive its master. One the
         * master took is released by its name (a durable write after
         * it), so that a retry need not wait for its hold
         */
        ngx_http_linegate_link_unclaim(lr);
        ngx_http_linegate_manage_fail(r, lr, NGX_HTTP_LINEGATE_LR_FAIL_STORE,
                                      0, -1);
        return;
    }

    if (ngx_http_linegate_reply_int(reply, 0, &code) != NGX_OK) {
        ngx_http_linegate_manage_fail(r, lr,
                                      NGX_HTTP_LINEGATE_LR_FAIL_INTERNAL,
                                      0, -1);
        return;
    }

    if (lr->sweep.read && (code == NGX_HTTP_LINEGATE_LR_WRONG_STATE
                           || code == NGX_HTTP_LINEGATE_LR_BUSY))
    {
        /* another caller sweeps, or settled it: not this read's to do */
        ngx_http_linegate_manage_read_stored(r, lr,
                                 code == NGX_HTTP_LINEGATE_LR_BUSY
                                 ? "another caller holds the claim"
                                 : "the request moved on");
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

    /* the old invoice: LINK_VOID_OLD voids it, under a key of its own */
    lr->old_invoice = lr->line.invoice_id;

    seq.data = ngx_pnalloc(r->pool, NGX_INT64_LEN);

    if (code != NGX_HTTP_LINEGATE_LR_OK || seq.data == NULL
        || ngx_http_linegate_reply_int(reply, 1, &code) != NGX_OK)
    {
        ngx_http_linegate_manage_fail(r, lr,
                                      NGX_HTTP_LINEGATE_LR_FAIL_INTERNAL,
                                      0, -1);
        return;
    }

    seq.len = ngx_sprintf(seq.data, "%L", code) - seq.data;
    lr->seq = seq;
    /* this claim has made nothing yet: a paid one is an earlier claim's */
    lr->sweep.claims.last_seq = code - 1;

    /* a claim taken over from one that lapsed: its invoices looked for */
    if (ngx_http_linegate_reply_int(reply, 2, &code) == NGX_OK
        && code == 1)
    {
        lr->sweep.lapsed = 1;

        /* what it may have left was made after its claim: from then on */
        if (ngx_http_linegate_reply_int(reply, 3, &code) == NGX_OK
            && code > 0)
        {
            lr->sweep.from = code;
        }

        /* and was made within a bounded time of the latest such claim */
        if (ngx_http_linegate_reply_int(reply, 4, &code) == NGX_OK
            && code > 0)
        {
            lr->sweep.to = code;
        }

        /* the claims' time, as the sweep lists (a run's 'at' and 'to') */
        lr->sweep.claims.from = ngx_http_linegate_link_sweep_since(lr);
        lr->sweep.claims.to = (time_t) (lr->sweep.to / 1000);
    }

    /* the claim is held: a failure from here on frees it */
    lr->ctx->state = (lr->ctx->state == NGX_HTTP_LINEGATE_LINK_RECLAIM)
                     ? NGX_HTTP_LINEGATE_LINK_REVOID_OLD
                     : NGX_HTTP_LINEGATE_LINK_VOID_OLD;

    /* a request freed while reissuing still releases its claim (if own) */
    if (lr->release == NULL) {
        lr->release = ngx_palloc(r->pool,
                                 sizeof(ngx_http_linegate_redis_args_t));
        cln = ngx_pool_cleanup_add(r->pool, 0);

        if (lr->release == NULL || cln == NULL) {
            ngx_http_linegate_manage_fail(r, lr,
                                          NGX_HTTP_LINEGATE_LR_FAIL_INTERNAL,
                                          0, -1);
            return;
        }

        cln->handler = ngx_http_linegate_link_cleanup;
        cln->data = lr;
    }

    ngx_http_linegate_link_abort_args(lr, lr->release);

    lr->settled = 0;

    ngx_http_linegate_link_journal(r, lr);
}


/*
 * LINK_JOURNAL: the claim's member "<W> <id> r<invoiceSeq>" of the Lines
 * API's journal lg:{fleet}:lr:inflight (the fleet's slot), written and
 * acknowledged (linegate_redis_wait) before the claim's first Stripe
 * call, as a creation's "<W> <id>" is. Should this worker die before the
 * claim's store or release, the claim lapses, and what it made at Stripe
 * (a new invoice, open, maybe paid) is swept only by whoever reads the
 * request next; a request nobody reads again has only this member: a
 * reconciliation run's sweep finds it past linegate_reconcile_lost_after,
 * reads the request, and queues reissue_lapsed once the claim is lapsed
 * (reconcile.c). The member goes, a durable ZREM, once the claim's store
 * (lr_reissue_store) or its release (lr_reissue_abort) answered. Not
 * written (or not acknowledged): nothing is asked of Stripe, the claim is
 * released (LINK_ABORT), 503.
 */
static void
ngx_http_linegate_link_journal(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr)
{
    u_char                          *p;
    ngx_http_linegate_redis_args_t  *a;

    lr->claim_next = lr->ctx->state;
    lr->ctx->state = NGX_HTTP_LINEGATE_LINK_JOURNAL;

    /* the command keeps its arguments until answered: lr->args is free */
    a = &lr->args;

    p = ngx_pnalloc(r->pool, lr->ws.len + lr->id.len + lr->seq.len + 3);
    if (p == NULL) {
        ngx_http_linegate_manage_fail(r, lr,
                                      NGX_HTTP_LINEGATE_LR_FAIL_INTERNAL,
                                      0, -1);
        return;
    }

    lr->journal.data = p;
    lr->journal.len = ngx_sprintf(p, "%V %V r%V", &lr->ws, &lr->id,
                                  &lr->seq)
                      - p;

    ngx_http_linegate_lr_journal_add_args(r, a,
                                          NGX_HTTP_LINEGATE_KEY_LR_INFLIGHT,
                                          &lr->journal);

    if (ngx_http_linegate_redis_command(r, a,
                                        ngx_http_linegate_manage_resume)
        != NGX_OK)
    {
        ngx_http_linegate_manage_fail(r, lr, NGX_HTTP_LINEGATE_LR_FAIL_STORE,
                                      0, -1);
    }
}


/* LINK_JOURNAL answered: the claim goes on (ZADD's count), or is freed */
static void
ngx_http_linegate_link_journaled(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, redisReply *reply)
{
    if (reply == NULL || reply->type != REDIS_REPLY_INTEGER) {
        /* lost, refused, or no replica has it: nothing is made unswept */
        ngx_http_linegate_manage_fail(r, lr, NGX_HTTP_LINEGATE_LR_FAIL_STORE,
                                      0, -1);
        return;
    }

    lr->ctx->state = lr->claim_next;

    if (lr->sweep.cancel) {
        /* the cancel's own void first, its event refused while held */
        lr->invoice.void_key = NULL;
        ngx_http_linegate_cancel_void(r, lr);
        return;
    }

    if (lr->sweep.read) {
        /* a GET's: the sweep, then the release (link_issue) */
        ngx_http_linegate_link_issue(r, lr);
        return;
    }

    lr->invoice.void_key = NULL;    /* a first try: "-void" */
    ngx_http_linegate_link_void_old(r, lr);
}


/*
 * The claim's store or release answered: its journal member goes, a
 * durable ZREM (idempotent; the write copies its arguments). From a
 * durable write's continuation too: no request, no pool.
 */
static void
ngx_http_linegate_link_unjournal(ngx_str_t *ws, ngx_str_t *id,
    ngx_str_t *seq)
{
    u_char                          *p;
    ngx_str_t                        member;
    ngx_http_linegate_redis_args_t   a;
    u_char                           buf[NGX_HTTP_LINEGATE_LR_MEMBER_MAX];

    if (seq->len == 0) {
        /* a claim not known (link_unclaim): no member was written */
        return;
    }

    if (ws->len + id->len + seq->len + 3 > sizeof(buf)) {
        ngx_log_error(NGX_LOG_ALERT, ngx_cycle->log, 0,
                      NGX_HTTP_LINEGATE_LOG "the journal member of the "
                      "reissue claim of line request \"%V\" is too long "
                      "to remove: left to the reconciliation's sweep", id);
        return;
    }

    p = ngx_sprintf(buf, "%V %V r%V", ws, id, seq);
    member.data = buf;
    member.len = p - buf;

    ngx_http_linegate_redis_args_init(&a);
    ngx_http_linegate_redis_arg_cstr(&a, "ZREM");
    ngx_http_linegate_redis_arg_str(&a,
        ngx_http_linegate_key_fixed(NGX_HTTP_LINEGATE_KEY_LR_INFLIGHT));
    ngx_http_linegate_redis_arg_str(&a, &member);

    (void) ngx_http_linegate_redis_durable_command(ngx_cycle->log, &a,
                                                   "a reissue claim's "
                                                   "journal member's "
                                                   "removal");
}


/*
 * LINK_VOID_OLD, LINK_REVOID_OLD (the claim held). The old invoice keeps
 * its webhook index meanwhile (see the head of this file): the event of
 * this void is refused while the claim holds, and a payment made before
 * it settles the request (this void is then refused).
 */
static void
ngx_http_linegate_link_void_old(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr)
{
    if (!ngx_http_linegate_line_is(&lr->invoice.status, "uncollectible")) {
        ngx_http_linegate_link_issue(r, lr);
        return;
    }

    /* LINK_VOID_OLD: an uncollectible invoice could still be paid */
    if (ngx_http_linegate_manage_void_key(r, lr, &lr->old_invoice) != NGX_OK
        || ngx_http_linegate_lines_stripe(r, lr, NGX_HTTP_POST, "v1/invoices",
                                       &lr->old_invoice, "/void", NULL,
                                       lr->invoice.void_key
                                       ? lr->invoice.void_key : "-void",
                                       ngx_http_linegate_manage_stripe_done)
        != NGX_OK)
    {
        ngx_http_linegate_manage_unavailable(r, lr);
    }
}


/* LINK_VOID_OLD, LINK_REVOID_OLD */
static void
ngx_http_linegate_link_old_voided(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr)
{
    ngx_uint_t                result;
    ngx_http_linegate_ctx_t  *ctx;

    ctx = lr->ctx;
    result = ngx_http_linegate_stripe_result(ctx);

    if (result == NGX_HTTP_LINEGATE_STRIPE_OK) {
        ngx_http_linegate_link_issue(r, lr);
        return;
    }

    if (result == NGX_HTTP_LINEGATE_STRIPE_REFUSED
        && ctx->state == NGX_HTTP_LINEGATE_LINK_VOID_OLD)
    {
        /* paid meanwhile, most likely: free the claim, look again */
        ngx_http_linegate_link_abort(r, lr,
                                     NGX_HTTP_LINEGATE_LINK_ABORT_RECHECK);
        return;
    }

    if (result != NGX_HTTP_LINEGATE_STRIPE_REFUSED
        && lr->invoice.void_key == NULL
        && !ctx->stripe_unknown
        && ctx->stripe_status >= NGX_HTTP_INTERNAL_SERVER_ERROR
        && ngx_http_linegate_invoice_void_key(r, lr) == NGX_OK)
    {
        /* a 5xx Stripe keeps under the key: once more, a key of its own */
        ngx_http_linegate_link_void_old(r, lr);
        return;
    }

    ngx_http_linegate_manage_fail(r, lr, NGX_HTTP_LINEGATE_LR_FAIL_BILLING,
                                  result == NGX_HTTP_LINEGATE_STRIPE_REFUSED
                                  ? NGX_HTTP_LINEGATE_STRIPE_UNAVAILABLE
                                  : result,
                                  (ngx_int_t) ctx->stripe_retry_after);
}


/*
 * LINK_SWEEP: this claim took over one that lapsed (lr_reissue_claim),
 * whose worker may have died after Stripe made its new invoice and before
 * lr_reissue_store named it: open at Stripe, its link given to no one,
 * yet payable from Stripe's own pages. Before another is issued, the
 * request's invoices are looked for among the customer's made since the
 * earliest claim not swept (sweepFrom, else the second of the request's
 * id; less a margin for Stripe's clock),
 * by metadata[line_request_id]: Stripe's list, newest first, consistent
 * at once (its search index lags behind), 10 a page (far below a small
 * subrequest_output_buffer_size). Every one the request does not name is
 * then fenced (lr_void_fence) and discarded; a paid one is kept and made
 * the request's instead of a new one. The lapsed claim's store can no
 * longer land (invoiceSeq moved on), and a store of a claim that took
 * this one over meanwhile is refused by the fence.
 */
static void
ngx_http_linegate_link_sweep(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr)
{
    u_char     *p;
    size_t      len;
    ngx_int_t   since;
    ngx_str_t   path;

    lr->ctx->state = NGX_HTTP_LINEGATE_LINK_SWEEP;

    since = (ngx_int_t) ngx_http_linegate_link_sweep_since(lr);

    since = since > NGX_HTTP_LINEGATE_LINK_SWEEP_LOOKBACK
            ? since - NGX_HTTP_LINEGATE_LINK_SWEEP_LOOKBACK : 0;

    /* ids are [A-Za-z0-9_]: nothing in the query needs encoding */
    if (!ngx_http_linegate_stripe_id_valid(&lr->customer)) {
        ngx_http_linegate_manage_unavailable(r, lr);
        return;
    }

    len = sizeof("v1/invoices?customer=&limit=&created[gte]="
                 "&created[lte]=&starting_after=") - 1
          + lr->customer.len + 3 * NGX_INT_T_LEN + lr->sweep.after.len;

    path.data = ngx_pnalloc(r->pool, len);
    if (path.data == NULL) {
        ngx_http_linegate_manage_unavailable(r, lr);
        return;
    }

    p = ngx_sprintf(path.data, "v1/invoices?customer=%V&limit=%d"
                    "&created[gte]=%i", &lr->customer,
                    NGX_HTTP_LINEGATE_LINK_SWEEP_PAGE, since);

    if (lr->sweep.to > 0) {
        p = ngx_sprintf(p, "&created[lte]=%i",
                        (ngx_int_t) (lr->sweep.to / 1000)
                        + NGX_HTTP_LINEGATE_LINK_SWEEP_LOOKAHEAD);
    }

    if (lr->sweep.after.len) {
        p = ngx_sprintf(p, "&starting_after=%V", &lr->sweep.after);
    }

    path.len = p - path.data;

    if (ngx_http_linegate_stripe_call(r, lr->ctx, NGX_HTTP_GET, &path, NULL,
                                      NULL,
                                      ngx_http_linegate_manage_stripe_done)
        != NGX_OK)
    {
        ngx_http_linegate_manage_unavailable(r, lr);
    }
}


/*
 * Where a lapsed claim's invoices are looked for from (s): the earliest
 * claim not swept (sweepFrom), else the request's creation (its id's
 * second); 0: unknown
 */
static time_t
ngx_http_linegate_link_sweep_since(ngx_http_linegate_lr_t *lr)
{
    if (lr->sweep.from > 0) {
        return (time_t) (lr->sweep.from / 1000);
    }

    return ngx_http_linegate_id_valid(&lr->id)
           ? (time_t) ngx_max(ngx_hextoi(lr->id.data, 8), 0) : 0;
}


/* LINK_SWEEP answered: the next page, or the invoices found discarded */
static void
ngx_http_linegate_link_swept(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr)
{
    ngx_int_t  rc;

    if (ngx_http_linegate_stripe_result(lr->ctx)
        != NGX_HTTP_LINEGATE_STRIPE_OK)
    {
        ngx_http_linegate_manage_stripe_error(r, lr);
        return;
    }

    rc = ngx_http_linegate_link_sweep_page(r, lr);

    if (rc == NGX_AGAIN
        && ++lr->sweep.pages < NGX_HTTP_LINEGATE_LINK_SWEEP_PAGES)
    {
        ngx_http_linegate_link_sweep(r, lr);
        return;
    }

    if (rc != NGX_OK) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      NGX_HTTP_LINEGATE_LOG "the invoices of line request "
                      "\"%V\" could not be listed whole: %s", &lr->id,
                      rc == NGX_AGAIN ? "too many of the customer's"
                                      : "not a list");
        ngx_http_linegate_manage_unavailable(r, lr);
        return;
    }

    lr->sweep.next = 0;
    ngx_http_linegate_link_sweep_next(r, lr);
}


/*
 * A page of the customer's invoices: NGX_OK (the last), NGX_AGAIN (more
 * follow: lr->sweep.after names this page's last), NGX_ERROR (not a
 * list, no memory)
 */
static ngx_int_t
ngx_http_linegate_link_sweep_page(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr)
{
    size_t      i, n;
    json_t     *data, *inv, *id;
    ngx_str_t   last;

    data = json_object_get(lr->ctx->stripe_json, "data");
    if (!json_is_array(data)) {
        return NGX_ERROR;
    }

    n = json_array_size(data);
    id = NULL;

    for (i = 0; i < n; i++) {
        inv = json_array_get(data, i);
        id = json_object_get(inv, "id");

        if (ngx_http_linegate_link_sweep_found(r, lr, inv) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    if (!json_is_true(json_object_get(lr->ctx->stripe_json, "has_more"))) {
        return NGX_OK;
    }

    if (!json_is_string(id)) {
        return NGX_ERROR;
    }

    /* Stripe's JSON is freed with the next call */
    last.data = (u_char *) json_string_value(id);
    last.len = json_string_length(id);

    if (!ngx_http_linegate_stripe_id_valid(&last)
        || ngx_http_linegate_pstr(r->pool, &lr->sweep.after, last.data,
                                  last.len)
           == NULL)
    {
        return NGX_ERROR;
    }

    return NGX_AGAIN;
}


/*
 * One invoice of the list: the request's (metadata[line_request_id]) but
 * the one it names, and not void, is kept in lr->sweep: paid (the first
 * a lapsed claim made, link_made: the request's from now on; another, or
 * one no lapsed claim made, is a payment for nothing here, left for a
 * human), or anything else, to be discarded (a draft, an open invoice,
 * an uncollectible one: still payable)
 */
static ngx_int_t
ngx_http_linegate_link_sweep_found(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, json_t *inv)
{
    time_t                         created;
    int64_t                        seq;
    json_t                        *id, *owner, *status, *url;
    ngx_str_t                      s, st, u;
    const char                    *why;
    ngx_http_linegate_lr_found_t  *f;

    id = json_object_get(inv, "id");
    owner = json_object_get(json_object_get(inv, "metadata"),
                            "line_request_id");
    status = json_object_get(inv, "status");

    if (!json_is_string(id) || !json_is_string(owner)
        || !json_is_string(status)
        || json_string_length(owner) != lr->id.len
        || ngx_strncmp(json_string_value(owner), lr->id.data, lr->id.len)
           != 0)
    {
        return NGX_OK;
    }

    s.data = (u_char *) json_string_value(id);
    s.len = json_string_length(id);
    st.data = (u_char *) json_string_value(status);
    st.len = json_string_length(status);

    if (!ngx_http_linegate_stripe_id_valid(&s)) {
        return NGX_ERROR;
    }

    if ((s.len == lr->old_invoice.len
         && ngx_strncmp(s.data, lr->old_invoice.data, s.len) == 0)
        || ngx_http_linegate_line_is(&st, "void"))
    {
        return NGX_OK;
    }

    seq = ngx_http_linegate_lines_invoice_seq(inv);
    created = ngx_http_linegate_lines_created(inv);

    if (ngx_http_linegate_line_is(&st, "paid")) {
        why = ngx_http_linegate_link_made(lr, seq, created);

        if (why != NULL || lr->sweep.paid.len) {
            ngx_http_linegate_link_left(r, lr, &s, why);
            return NGX_OK;
        }
    }

    ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                  NGX_HTTP_LINEGATE_LOG "invoice \"%V\" of line request "
                  "\"%V\" is %V and no request names it (a reissue whose "
                  "claim lapsed): %s", &s, &lr->id, &st,
                  ngx_http_linegate_line_is(&st, "paid")
                  ? "kept" : "discarded before another is issued");

    if (ngx_http_linegate_line_is(&st, "paid")) {
        url = json_object_get(inv, "hosted_invoice_url");
        u.data = (u_char *) json_string_value(url);
        u.len = json_string_length(url);

        /* kept without a link rather than with one not fit to replay */
        if (u.data != NULL && !ngx_http_linegate_stripe_url_valid(&u)) {
            ngx_str_null(&u);
        }

        if (ngx_http_linegate_pstr(r->pool, &lr->sweep.paid, s.data, s.len)
            == NULL
            || (u.len
                && ngx_http_linegate_pstr(r->pool, &lr->sweep.paid_url,
                                          u.data, u.len)
                   == NULL))
        {
            return NGX_ERROR;
        }

        return NGX_OK;
    }

    if (lr->sweep.found == NULL) {
        lr->sweep.found = ngx_array_create(r->pool, 2,
                                     sizeof(ngx_http_linegate_lr_found_t));
        if (lr->sweep.found == NULL) {
            return NGX_ERROR;
        }
    }

    f = ngx_array_push(lr->sweep.found);

    if (f == NULL || ngx_http_linegate_pstr(r->pool, &f->id, s.data, s.len)
                     == NULL)
    {
        return NGX_ERROR;
    }

    /* paid by the time it is discarded, it is judged as one found paid */
    f->seq = seq;
    f->created = created;

    return NGX_OK;
}


/*
 * Stripe's answer about the invoice the request names (its check, a
 * cancel's void): its metadata[invoice_seq], the claim that made it, is
 * where the claims a sweep may adopt from begin (none: 0, a creation's),
 * and its 'created' what an invoice with no invoice_seq must follow
 */
static void
ngx_http_linegate_link_named(ngx_http_linegate_lr_t *lr)
{
    json_t  *id;

    id = json_object_get(lr->ctx->stripe_json, "id");

    if (!json_is_string(id)
        || json_string_length(id) != lr->line.invoice_id.len
        || ngx_strncmp(json_string_value(id), lr->line.invoice_id.data,
                       lr->line.invoice_id.len)
           != 0)
    {
        return;
    }

    lr->sweep.claims.named_seq = ngx_max(
        ngx_http_linegate_lines_invoice_seq(lr->ctx->stripe_json), 0);
    lr->sweep.claims.named_at =
        ngx_http_linegate_lines_created(lr->ctx->stripe_json);
}


/*
 * A paid invoice is the lapsed claims' (the sweep adopts it) only as a
 * reconciliation run's reissue_lapsed decides it (lines_lapsed_made, one
 * rule): a claim past the one that made the invoice the request names
 * made it, and before this claim; or, with no metadata[invoice_seq] at
 * all (an old node's), Stripe made it within the claims' time and after
 * the named invoice. NULL, or why not
 */
static const char *
ngx_http_linegate_link_made(ngx_http_linegate_lr_t *lr, int64_t seq,
    time_t created)
{
    return ngx_http_linegate_lines_lapsed_made(&lr->sweep.claims, seq,
                                               created);
}


/*
 * A paid invoice of the request that the sweep does not adopt: no lapsed
 * claim made it (why), or (why NULL) another one paid is kept. Never
 * voided (paid); left for a human, queued once per invoice whatever
 * sweeps find it again (lines_left_paid: a run then finds it paid and
 * not named, invoice_paid), this sweep's reason logged at notice.
 */
static void
ngx_http_linegate_link_left(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, ngx_str_t *id, const char *why)
{
    ngx_log_error(NGX_LOG_NOTICE, r->connection->log, 0,
                  NGX_HTTP_LINEGATE_LOG "invoice \"%V\" of line request "
                  "\"%V\" is paid and no request names it, and %s%s%s: "
                  "not adopted, left for a human", id, &lr->id,
                  why ? "no lapsed claim made it (" : "another paid one is "
                                                      "kept",
                  why ? why : "", why ? ")" : "");

    ngx_http_linegate_lines_left_paid(r->connection->log, lr, id);
}


/* LINK_SWEEP_FENCE: lr_void_fence.lua for the next invoice found */
static void
ngx_http_linegate_link_sweep_next(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr)
{
    ngx_http_linegate_lr_found_t  *found;

    if (lr->sweep.found == NULL || lr->sweep.next >= lr->sweep.found->nelts)
    {
        ngx_http_linegate_link_sweep_end(r, lr);
        return;
    }

    found = lr->sweep.found->elts;

    lr->ctx->state = NGX_HTTP_LINEGATE_LINK_SWEEP_FENCE;

    ngx_http_linegate_lines_line_args(lr);
    ngx_http_linegate_redis_arg_str(&lr->args, &found[lr->sweep.next].id);
    /* not 'check'; the claim's invoiceSeq: refused once taken over */
    ngx_http_linegate_redis_arg_cstr(&lr->args, "");
    ngx_http_linegate_redis_arg_str(&lr->args, &lr->seq);

    ngx_http_linegate_lines_call(r, lr, NGX_HTTP_LINEGATE_SCRIPT_LR_VOID_FENCE,
                                 ngx_http_linegate_manage_resume);
}


/*
 * LINK_SWEEP_FENCE answered: 1, fenced (a store of it is refused from
 * now on): LINK_SWEEP_DISCARD, the invoice machine voids it (deletes a
 * draft, keeps one paid meanwhile), under a key of its own; 0, the
 * request names it (a claim that took this one over stored it): not this
 * claim's to discard; 3, this claim was taken over (invoiceSeq moved on:
 * it outlived its hold mid-sweep): the invoice may be the live claim's
 * own, not stored yet, and that claim sweeps for itself; this one stops,
 * answered as a claim taken over (409)
 */
static void
ngx_http_linegate_link_sweep_fenced(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, redisReply *reply)
{
    ngx_http_linegate_lr_found_t  *found;

    if (reply == NULL) {
        ngx_http_linegate_manage_fail(r, lr, NGX_HTTP_LINEGATE_LR_FAIL_STORE,
                                      0, -1);
        return;
    }

    if (reply->type != REDIS_REPLY_INTEGER) {
        ngx_http_linegate_manage_fail(r, lr,
                                      NGX_HTTP_LINEGATE_LR_FAIL_INTERNAL,
                                      0, -1);
        return;
    }

    found = lr->sweep.found->elts;

    if (reply->integer == 3) {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      NGX_HTTP_LINEGATE_LOG "the sweep of line request "
                      "\"%V\" stopped before invoice \"%V\": its claim "
                      "was taken over", &lr->id, &found[lr->sweep.next].id);
        ngx_http_linegate_manage_fail(r, lr, NGX_HTTP_LINEGATE_LR_FAIL_BUSY,
                                      0, -1);
        return;
    }

    if (reply->integer == 0) {
        lr->sweep.next++;
        ngx_http_linegate_link_sweep_next(r, lr);
        return;
    }

    /* "lg-<id>-<invoice>": its void's key is its own, whatever claim */
    if (ngx_http_linegate_manage_void_key(r, lr,
                                          &found[lr->sweep.next].id)
        != NGX_OK)
    {
        ngx_http_linegate_manage_fail(r, lr,
                                      NGX_HTTP_LINEGATE_LR_FAIL_INTERNAL,
                                      0, -1);
        return;
    }

    lr->ctx->state = NGX_HTTP_LINEGATE_LINK_SWEEP_DISCARD;
    lr->invoice.id = found[lr->sweep.next].id;
    ngx_str_null(&lr->invoice.url);
    ngx_str_null(&lr->invoice.status);

    if (ngx_http_linegate_invoice_discard(r, lr,
                                          ngx_http_linegate_manage_stripe_done,
                                          1)
        == NGX_AGAIN)
    {
        return;
    }

    ngx_http_linegate_link_sweep_discarded(r, lr);
}


/*
 * LINK_SWEEP_DISCARD done: discarded; or paid since the list (kept): as
 * one found paid. Then the next one. Queued (invoice_unrepaired) when
 * Stripe failed every repair: still payable, so nothing is issued beside
 * it (nor a cancel done); the claim is released lapsed (sweepFrom kept),
 * 502 (503 on Stripe's 429), and the next caller's sweep finds it again,
 * voids it and drops its index, or keeps it if paid by then.
 */
static void
ngx_http_linegate_link_sweep_discarded(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr)
{
    ngx_uint_t                     result;
    const char                    *why;
    ngx_http_linegate_lr_found_t  *found;

    result = lr->invoice.result;

    if (!lr->invoice.kept && result != NGX_HTTP_LINEGATE_STRIPE_OK) {
        lr->invoice.id = lr->old_invoice;
        ngx_http_linegate_manage_fail(r, lr, NGX_HTTP_LINEGATE_LR_FAIL_BILLING,
                                      result
                                      == NGX_HTTP_LINEGATE_STRIPE_REFUSED
                                      ? NGX_HTTP_LINEGATE_STRIPE_UNAVAILABLE
                                      : result,
                                      (ngx_int_t) lr->ctx->stripe_retry_after);
        return;
    }

    found = lr->sweep.found->elts;

    if (lr->invoice.kept) {
        /* paid since the list: judged as one found paid */
        why = ngx_http_linegate_link_made(lr, found[lr->sweep.next].seq,
                                          found[lr->sweep.next].created);

        if (why != NULL || lr->sweep.paid.len) {
            ngx_http_linegate_link_left(r, lr, &lr->invoice.id, why);

        } else {
            lr->sweep.paid = lr->invoice.id;
            lr->sweep.paid_url = lr->invoice.url;
        }

    } else {
        /*
         * voided or deleted (or queued to be): the dead worker may have
         * indexed it (LINK_INDEX) before it died; no request names it
         * or ever will (fenced), so its index goes, a durable DEL
         */
        ngx_http_linegate_lines_invoice_unindex(r, &lr->invoice.id);
    }

    /* the request's cleanup finds no invoice of this claim's making */
    lr->invoice.id = lr->old_invoice;

    lr->sweep.next++;
    ngx_http_linegate_link_sweep_next(r, lr);
}


/*
 * Every invoice found is discarded (or queued): the claim issues its own,
 * or makes the paid one found the request's, as an invoice Stripe paid
 * at finalization is (link_issued: the index, the store, lr_resolve).
 * Until that store, a failure releases the claim lapsed: the next one
 * finds the paid invoice again.
 */
static void
ngx_http_linegate_link_sweep_end(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr)
{
    if (lr->sweep.paid.len) {
        lr->sweep.adopting = 1;
        lr->invoice.id = lr->sweep.paid;
        lr->invoice.url = lr->sweep.paid_url;
        ngx_str_set(&lr->invoice.status, "paid");
        lr->invoice.result = NGX_HTTP_LINEGATE_STRIPE_OK;

        ngx_http_linegate_link_issued(r, lr);
        return;
    }

    lr->sweep.done = 1;

    /* the request's cleanup releases the claim, no longer lapsed */
    ngx_http_linegate_link_abort_args(lr, lr->release);

    ngx_http_linegate_link_issue(r, lr);
}


/* LINK_ISSUE: the invoice machine, once a lapsed claim's are discarded */
static void
ngx_http_linegate_link_issue(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr)
{
    if (lr->sweep.lapsed && !lr->sweep.done) {
        ngx_http_linegate_link_sweep(r, lr);
        return;
    }

    if (lr->sweep.cancel || lr->sweep.read) {
        /* swept, nothing paid found: a cancel or a GET issues nothing */
        ngx_http_linegate_link_abort(r, lr,
                                     NGX_HTTP_LINEGATE_CANCEL_RELEASE);
        return;
    }

    if (ngx_http_linegate_manage_key(r, lr) != NGX_OK) {
        ngx_http_linegate_manage_unavailable(r, lr);
        return;
    }

    lr->ctx->state = NGX_HTTP_LINEGATE_LINK_ISSUE;

    /*
     * A claim held past its hold may be taken over by another
     * payment_link, which sweeps what this one left at Stripe before it
     * issues its own, or ends with the request and is swept by a run.
     * This one, stalled (its worker stopped or starved, Stripe slow to
     * answer the draft), made its invoice after that sweep all the same:
     * its store refused (LR_BUSY), an invoice Stripe paid at finalization
     * (the customer's credit balance) could be neither voided nor stored,
     * a charge with no line, for a human. So the machine makes, fills or
     * finalizes nothing from the end of the hold on, on nginx's clock as
     * the next claim measures it (invoice_late): a draft made is deleted,
     * the claim released if still its own, 409 "being issued"
     * (link_issued). A host whose clock runs behind the next claimer's by
     * d still meets that race within d.
     */
    lr->invoice.reissue = 1;
    lr->invoice.late = 0;
    lr->invoice.lost_at = lr->claim_ms + NGX_HTTP_LINEGATE_LR_REISSUE_HOLD;

    if (ngx_http_linegate_invoice_issue(r, lr,
                                        ngx_http_linegate_manage_stripe_done)
        == NGX_DONE)
    {
        ngx_http_linegate_link_issued(r, lr);
    }
}


/* the machine ended: LINK_INDEX, or the failure of LINK_ISSUE */
static void
ngx_http_linegate_link_issued(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr)
{
    ngx_http_linegate_lr_fail_e  fail;

    if (lr->invoice.late) {
        /*
         * past the claim's hold (link_issue): a draft deleted, the claim
         * released if still its own, 409 "being issued" (Retry-After)
         */
        ngx_http_linegate_manage_fail(r, lr, NGX_HTTP_LINEGATE_LR_FAIL_BUSY,
                                      0, -1);
        return;
    }

    if (lr->invoice.result != NGX_HTTP_LINEGATE_STRIPE_OK) {
        ngx_http_linegate_manage_fail(r, lr,
                                      NGX_HTTP_LINEGATE_LR_FAIL_BILLING,
                                      lr->invoice.result,
                                      lr->invoice.retry_after);
        return;
    }

    /* LINK_INDEX: the new invoice's index, answered before the store */
    lr->ctx->state = NGX_HTTP_LINEGATE_LINK_INDEX;

    fail = ngx_http_linegate_lines_invoice_index_send(r, lr,
                                        ngx_http_linegate_manage_resume);
    if (fail != NGX_HTTP_LINEGATE_LR_FAIL_NONE) {
        ngx_http_linegate_manage_fail(r, lr, fail, 0, -1);
    }
}


/* LINK_INDEX answered: OK lets the store go */
static void
ngx_http_linegate_link_indexed(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, redisReply *reply)
{
    ngx_http_linegate_lr_fail_e  fail;

    fail = ngx_http_linegate_lines_invoice_indexed(r, lr, reply);
    if (fail != NGX_HTTP_LINEGATE_LR_FAIL_NONE) {
        ngx_http_linegate_manage_fail(r, lr, fail, 0, -1);
        return;
    }

    ngx_http_linegate_link_store(r, lr);
}


/* LINK_STORE: lr_reissue_store.lua, the workspace's slot */
static void
ngx_http_linegate_link_store(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr)
{
    ngx_http_linegate_redis_args_t  *a;

    lr->ctx->state = NGX_HTTP_LINEGATE_LINK_STORE;

    ngx_http_linegate_lines_line_args(lr);
    a = &lr->args;

    ngx_http_linegate_redis_arg_str(a, &lr->seq);
    ngx_http_linegate_redis_arg_str(a, &lr->invoice.id);
    ngx_http_linegate_redis_arg_str(a, &lr->invoice.url);
    ngx_http_linegate_redis_arg_int(r, a, lr->now_ms);
    ngx_http_linegate_redis_arg_str(a, &lr->now_iso);
    /* not read: link_stored_late's, should a re-sent store be refused */
    ngx_http_linegate_redis_arg_str(a, &lr->customer);
    /* not read: link_stored_late's, the old index to DEL once stored */
    ngx_http_linegate_redis_arg_str(a, &lr->old_invoice);
    /* a paid one is never refused by a sweep's fence: it is not voided */
    ngx_http_linegate_redis_arg_str(a, &lr->invoice.status);

    ngx_http_linegate_lines_call(r, lr,
                                 NGX_HTTP_LINEGATE_SCRIPT_LR_REISSUE_STORE,
                                 ngx_http_linegate_manage_resume);
}


/* LINK_STORE */
static void
ngx_http_linegate_link_stored(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, redisReply *reply)
{
    int64_t    code;
    ngx_str_t  s;

    if (reply == NULL) {
        ngx_http_linegate_manage_fail(r, lr, NGX_HTTP_LINEGATE_LR_FAIL_STORE,
                                      0, -1);
        return;
    }

    if (ngx_http_linegate_reply_int(reply, 0, &code) != NGX_OK) {
        code = -1;

    } else {
        /* the store answered: the claim's journal member goes */
        ngx_http_linegate_link_unjournal(&lr->ws, &lr->id, &lr->seq);
    }

    if (code == NGX_HTTP_LINEGATE_LR_OK) {
        lr->settled = 1;

        /*
         * the request names the new invoice: the old one's index goes
         * (no request names it, its late events are unknown either way),
         * so that a reissue leaves one index, as a creation does
         */
        ngx_http_linegate_lines_invoice_unindex(r, &lr->old_invoice);

        ngx_http_linegate_link_answer_stored(r, lr);
        return;
    }

    if (code == NGX_HTTP_LINEGATE_LR_BUSY) {
        /* this claim outlived its hold and was taken over: that one goes on */
        ngx_http_linegate_manage_fail(r, lr, NGX_HTTP_LINEGATE_LR_FAIL_BUSY,
                                      0, -1);
        return;
    }

    if (code == NGX_HTTP_LINEGATE_LR_FENCED) {
        ngx_http_linegate_link_fenced(r, lr);
        return;
    }

    if (ngx_http_linegate_reply_str(reply, 1, &s) == NGX_OK
        && ngx_http_linegate_pstr(r->pool, &lr->line.status, s.data, s.len))
    {
        ngx_http_linegate_manage_fail(r, lr,
                                      NGX_HTTP_LINEGATE_LR_FAIL_CONFLICT,
                                      0, -1);
        return;
    }

    ngx_http_linegate_manage_fail(r, lr, NGX_HTTP_LINEGATE_LR_FAIL_INTERNAL,
                                  0, -1);
}


/*
 * LINK_STORE_AGAIN answered: the request's own copy of the store sent
 * again, behind the durable one (whose continuation, link_stored_late,
 * already dropped the old invoice's index if it was stored). Stored
 * (LR_OK: this copy, the durable one or the first store landed), the
 * reissue goes on as after LINK_STORE: an invoice Stripe paid at
 * finalization is promoted (LINK_RESOLVE), an open one answered with its
 * new link (reused: false), the answer a retry would get. Anything else
 * (refused: link_stored_late queued the invoice; not answered: the
 * durable one goes on) is the 503 of a store whose outcome is not known
 * here.
 */
static void
ngx_http_linegate_link_restored(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, redisReply *reply)
{
    int64_t  code;

    if (reply == NULL
        || ngx_http_linegate_reply_int(reply, 0, &code) != NGX_OK
        || code != NGX_HTTP_LINEGATE_LR_OK)
    {
        ngx_http_linegate_manage_failed(r, lr);
        return;
    }

    ngx_http_linegate_link_answer_stored(r, lr);
}


/*
 * The new invoice stored (LINK_STORE, LINK_STORE_AGAIN). Amount due 0:
 * Stripe paid it at finalization, promoted as a paid invoice found by
 * LINK_CHECK is, and answered as it is then; should lr_resolve not answer
 * (503), the next payment_link finds it paid (or its webhook settles
 * it). Open: its new link (reused: false).
 */
static void
ngx_http_linegate_link_answer_stored(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr)
{
    if (ngx_http_linegate_line_is(&lr->invoice.status, "paid")) {
        lr->line.invoice_id = lr->invoice.id;
        ngx_http_linegate_manage_resolve(r, lr,
                                         NGX_HTTP_LINEGATE_LINK_RESOLVE,
                                         "paid");
        return;
    }

    ngx_http_linegate_link_send(r, lr, 0);
}


/*
 * LINK_STORE refused by a fence (LR_FENCED): the claim is still this
 * one's, but whoever fenced the request (a reconciliation run, or a
 * sweeper this claim took over from) found the new invoice unstored and
 * is voiding it. Nobody else will release the claim: the new invoice is
 * discarded here too (LINK_DISCARD), then the claim released lapsed
 * (link_discarded: LINK_ABORT, ARGV[5] '1'), so that the retry the 409
 * asks for sweeps what is left at once instead of waiting for the hold.
 */
static void
ngx_http_linegate_link_fenced(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr)
{
    ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                  NGX_HTTP_LINEGATE_LOG "the store of invoice \"%V\" of "
                  "line request \"%V\" was refused: the invoice is being "
                  "voided (voidingInvoice); its claim released lapsed",
                  &lr->invoice.id, &lr->id);

    lr->sweep.fenced = 1;

    /* the request's cleanup, if it runs first, releases it lapsed too */
    ngx_http_linegate_link_abort_args(lr, lr->release);

    ngx_http_linegate_manage_fail(r, lr, NGX_HTTP_LINEGATE_LR_FAIL_BUSY, 0,
                                  -1);
}


/* LINK_UNISSUE, LINK_DISCARD: the invoice machine discards */
static void
ngx_http_linegate_link_discard(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, ngx_http_linegate_manage_step_e step,
    ngx_uint_t keep)
{
    lr->ctx->state = step;

    if (ngx_http_linegate_invoice_discard(r, lr,
                                          ngx_http_linegate_manage_stripe_done,
                                          keep)
        == NGX_AGAIN)
    {
        return;
    }

    if (step == NGX_HTTP_LINEGATE_LINK_UNISSUE) {
        ngx_http_linegate_link_unissued(r, lr);
        return;
    }

    ngx_http_linegate_link_discarded(r, lr);
}


/*
 * LINK_UNISSUE done: the claim is freed; or, the new invoice kept (paid
 * at Stripe, its finalize's answer lost: void and delete refused, a GET
 * said so), the reissue goes on as if finalize had answered "paid"
 * (link_issued: the index, the store, lr_resolve), the claim still held
 */
static void
ngx_http_linegate_link_unissued(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr)
{
    if (lr->invoice.kept) {
        lr->fail = NGX_HTTP_LINEGATE_LR_FAIL_NONE;
        ngx_http_linegate_link_issued(r, lr);
        return;
    }

    ngx_http_linegate_link_abort(r, lr, NGX_HTTP_LINEGATE_LINK_ABORT);
}


/*
 * LINK_DISCARD done (the machine queued what it could not discard): the
 * store refused, so no claim of this request is left to release (another
 * payment_link holds it, or the request moved on). Until now the
 * request's cleanup still had a new invoice to queue, should the request
 * be freed while discarding it.
 */
static void
ngx_http_linegate_link_discarded(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr)
{
    if (lr->sweep.fenced) {
        /* refused by a fence: the claim is its own, released lapsed */
        lr->invoice.id = lr->old_invoice;
        ngx_http_linegate_link_abort(r, lr, NGX_HTTP_LINEGATE_LINK_ABORT);
        return;
    }

    lr->settled = 1;
    ngx_http_linegate_manage_failed(r, lr);
}


/* LINK_ABORT, LINK_ABORT_RECHECK: lr_reissue_abort.lua, durable */
static void
ngx_http_linegate_link_abort(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, ngx_http_linegate_manage_step_e step)
{
    ngx_http_linegate_link_abort_args(lr, &lr->args);

    /* handed to the durable writes: the request's cleanup has no more to do */
    lr->settled = 1;
    lr->ctx->state = step;

    /*
     * link_aborted_late reads the durable write's own answer; the
     * request's own copy of the step is answered after it
     */
    ngx_http_linegate_lines_durable_then(r, lr,
                                    NGX_HTTP_LINEGATE_SCRIPT_LR_REISSUE_ABORT,
                                    "lr_reissue_abort",
                                    ngx_http_linegate_link_aborted_late,
                                    ngx_http_linegate_manage_resume);
}


static void
ngx_http_linegate_link_abort_args(ngx_http_linegate_lr_t *lr,
    ngx_http_linegate_redis_args_t *a)
{
    ngx_http_linegate_redis_args_init(a);

    ngx_http_linegate_redis_arg_str(a, &lr->ws);
    ngx_http_linegate_redis_arg_str(a, &lr->id);
    ngx_http_linegate_redis_arg_str(a, &lr->seq);
    ngx_http_linegate_redis_arg_str(a, &lr->customer);
    /* released lapsed while a lapsed claim's invoices are to be found */
    ngx_http_linegate_redis_arg_cstr(a, (lr->sweep.lapsed && !lr->sweep.done)
                                        || lr->sweep.fenced
                                        ? "1" : "");
    ngx_http_linegate_lines_key(lr, a, NGX_HTTP_LINEGATE_KEY_WS_LR, &lr->ws,
                                &lr->id);
}


/*
 * lr_reissue_abort answered (the durable write's own answer: the request
 * may be gone): {own, stored}. A new invoice that the request made, did
 * not discard and never stored (its pool cleanup's ARGV[6]) is queued
 * for a reconciliation run, whoever holds the claim.
 */
static void
ngx_http_linegate_link_aborted_late(redisReply *reply,
    ngx_http_linegate_redis_args_t *args, ngx_str_t *note)
{
    int64_t    own, stored;
    ngx_str_t  ws, id, seq, customer, invoice;

    /*
     * the copy holds KEYS[1] first (its nkeys is the write's, not here),
     * then ws, id, invoiceSeq, customer, the lapse[, the new one]
     */
    if (args->argc < 6
        || ngx_http_linegate_reply_int(reply, 0, &own) != NGX_OK
        || ngx_http_linegate_reply_int(reply, 1, &stored) != NGX_OK)
    {
        ngx_log_error(NGX_LOG_ALERT, ngx_cycle->log, 0,
                      NGX_HTTP_LINEGATE_LOG "unexpected reply of "
                      "lr_reissue_abort: a new invoice it made, if any, "
                      "is not queued");
        return;
    }

    ngx_http_linegate_lines_arg(args, 1, &ws);
    ngx_http_linegate_lines_arg(args, 2, &id);
    ngx_http_linegate_lines_arg(args, 4, &customer);
    ngx_str_null(&invoice);

    if (args->argc > 6) {
        ngx_http_linegate_lines_arg(args, 6, &invoice);
    }

    ngx_http_linegate_lines_arg(args, 3, &seq);

    /* answered: the claim's journal member goes (one known by its seq) */
    ngx_http_linegate_link_unjournal(&ws, &id, &seq);

    if (!own && seq.len == 0) {
        ngx_log_error(NGX_LOG_INFO, ngx_cycle->log, 0,
                      NGX_HTTP_LINEGATE_LOG "the reissue claim of line "
                      "request \"%V\" whose reply was not known was not "
                      "taken: nothing released", &id);

    } else if (!own) {
        ngx_log_error(NGX_LOG_INFO, ngx_cycle->log, 0,
                      NGX_HTTP_LINEGATE_LOG "the reissue of line request "
                      "\"%V\" was claimed by another payment_link: its "
                      "claim left to it", &id);

    } else if (seq.len == 0) {
        ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                      NGX_HTTP_LINEGATE_LOG "the reissue claim of line "
                      "request \"%V\" whose reply was not known is "
                      "released lapsed", &id);
    }

    if (invoice.len && !stored) {
        ngx_http_linegate_lines_orphan_of(ngx_cycle->log, &ws, &id, &invoice,
                                          &customer);
    }
}


/*
 * lr_reissue_store sent again (the first reply lost: LINK_STORE_AGAIN)
 * answered. Stored, the old invoice's index goes, as after LINK_STORE.
 * Refused, the request moved on or another payment_link claimed the
 * reissue during the stall, or the invoice is being voided: nothing names
 * the new invoice, open at Stripe. Its index goes (a durable DEL) and it
 * is queued for a reconciliation run to void (nothing can ask Stripe from
 * here). Refused by a fence (LR_FENCED), the claim is still this one's,
 * and nobody else releases it: released lapsed, as link_fenced does
 * after a first store so refused, for the next claim to sweep at once
 * rather than after the hold.
 */
static void
ngx_http_linegate_link_stored_late(redisReply *reply,
    ngx_http_linegate_redis_args_t *args, ngx_str_t *note)
{
    int64_t    code;
    ngx_str_t  ws, id, invoice, customer, old, lkey, seq;

    /*
     * KEYS[1], then ws, id, invoiceSeq, the invoice, URL, ms, ISO, cus,
     * the old invoice
     */
    if (args->argc < 10
        || ngx_http_linegate_reply_int(reply, 0, &code) != NGX_OK)
    {
        ngx_log_error(NGX_LOG_ALERT, ngx_cycle->log, 0,
                      NGX_HTTP_LINEGATE_LOG "unexpected reply of "
                      "lr_reissue_store sent again");
        return;
    }

    /* answered: the claim's journal member goes */
    ngx_http_linegate_lines_arg(args, 1, &ws);
    ngx_http_linegate_lines_arg(args, 2, &id);
    ngx_http_linegate_lines_arg(args, 3, &seq);
    ngx_http_linegate_link_unjournal(&ws, &id, &seq);

    if (code == NGX_HTTP_LINEGATE_LR_OK) {
        ngx_http_linegate_lines_arg(args, 9, &old);
        ngx_http_linegate_link_unindex_late(&old);
        return;
    }

    ngx_http_linegate_lines_arg(args, 1, &ws);
    ngx_http_linegate_lines_arg(args, 2, &id);
    ngx_http_linegate_lines_arg(args, 4, &invoice);
    ngx_http_linegate_lines_arg(args, 8, &customer);

    ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                  NGX_HTTP_LINEGATE_LOG "the store of invoice \"%V\" sent "
                  "again was refused: line request \"%V\" %s", &invoice,
                  &id,
                  code == NGX_HTTP_LINEGATE_LR_BUSY
                  ? "was claimed by another payment_link"
                  : code == NGX_HTTP_LINEGATE_LR_FENCED
                  ? "is voiding it (voidingInvoice)"
                  : "moved on");

    ngx_http_linegate_link_unindex_late(&invoice);
    ngx_http_linegate_lines_orphan_of(ngx_cycle->log, &ws, &id, &invoice,
                                      &customer);

    if (code == NGX_HTTP_LINEGATE_LR_FENCED) {
        ngx_http_linegate_lines_arg(args, 0, &lkey);
        ngx_http_linegate_lines_arg(args, 3, &seq);
        ngx_http_linegate_link_abort_late(&lkey, &ws, &id, &seq, &customer);
    }
}


/*
 * lr_reissue_abort of a claim whose store sent again a fence refused, by
 * a durable write from that store's continuation: released lapsed
 * (ARGV[5] '1') if still its own. The write copies the arguments.
 */
static void
ngx_http_linegate_link_abort_late(ngx_str_t *lkey, ngx_str_t *ws,
    ngx_str_t *id, ngx_str_t *seq, ngx_str_t *customer)
{
    ngx_http_linegate_redis_args_t  a;

    ngx_http_linegate_redis_args_init(&a);

    ngx_http_linegate_redis_arg_str(&a, ws);
    ngx_http_linegate_redis_arg_str(&a, id);
    ngx_http_linegate_redis_arg_str(&a, seq);
    ngx_http_linegate_redis_arg_str(&a, customer);
    ngx_http_linegate_redis_arg_cstr(&a, "1");
    ngx_http_linegate_redis_arg_key(&a, lkey);

    ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                  NGX_HTTP_LINEGATE_LOG "the reissue claim of line request "
                  "\"%V\" is released lapsed: its store sent again was "
                  "fenced", id);

    (void) ngx_http_linegate_redis_durable_then(ngx_cycle->log,
                                    NGX_HTTP_LINEGATE_SCRIPT_LR_REISSUE_ABORT,
                                    a.nkeys, &a,
                                    "lr_reissue_abort of a fenced store",
                                    ngx_http_linegate_link_aborted_late);
}


/*
 * A claim whose reply was lost or not acknowledged: released lapsed by
 * its name (lr_reissue_abort, ARGV[3] '', ARGV[7] reissueBy), if Redis
 * took it, by a durable write sent after the claim. Lapsed: the claim
 * may have taken over a lapsed one, whose invoices the next claim must
 * still look for; this one issued nothing.
 */
static void
ngx_http_linegate_link_unclaim(ngx_http_linegate_lr_t *lr)
{
    ngx_http_linegate_redis_args_t  a;

    ngx_http_linegate_redis_args_init(&a);

    ngx_http_linegate_redis_arg_str(&a, &lr->ws);
    ngx_http_linegate_redis_arg_str(&a, &lr->id);
    ngx_http_linegate_redis_arg_cstr(&a, "");
    ngx_http_linegate_redis_arg_str(&a, &lr->customer);
    ngx_http_linegate_redis_arg_cstr(&a, "1");
    ngx_http_linegate_redis_arg_cstr(&a, "");
    ngx_http_linegate_redis_arg_str(&a, &lr->claim_by);
    ngx_http_linegate_lines_key(lr, &a, NGX_HTTP_LINEGATE_KEY_WS_LR, &lr->ws,
                                &lr->id);

    (void) ngx_http_linegate_redis_durable_then(ngx_cycle->log,
                                    NGX_HTTP_LINEGATE_SCRIPT_LR_REISSUE_ABORT,
                                    a.nkeys, &a,
                                    "lr_reissue_abort of a claim not known",
                                    ngx_http_linegate_link_aborted_late);
}


/*
 * An invoice's webhook index DEL by a durable write, from a durable
 * write's continuation: the key built in a pool of its own (the write
 * copies it)
 */
static void
ngx_http_linegate_link_unindex_late(ngx_str_t *invoice)
{
    ngx_pool_t                      *pool;
    ngx_http_linegate_redis_args_t   a;

    pool = ngx_create_pool(1024, ngx_cycle->log);

    if (pool == NULL
        || ngx_http_linegate_lines_invoice_index(pool, invoice, NULL, NULL,
                                                 &a)
           != NGX_OK)
    {
        ngx_log_error(NGX_LOG_ALERT, ngx_cycle->log, 0,
                      NGX_HTTP_LINEGATE_LOG "the webhook index of invoice "
                      "\"%V\" could not be removed", invoice);

    } else {
        (void) ngx_http_linegate_redis_durable_command(ngx_cycle->log, &a,
                                                       "invoice unindex");
    }

    if (pool != NULL) {
        ngx_destroy_pool(pool);
    }
}


/*
 * The request is freed (terminated: a draining worker's shutdown timeout)
 * while it reissues: its claim released (if still its own) by a durable
 * write, whose answer then queues a new invoice already made that the
 * request does not name (nothing can ask Stripe from here). Not when
 * link_left_for_sweep says the new invoice may be paid: released, the
 * claim would leave the paid invoice queued for a human and the request,
 * its invoice void with no claim, canceled by its next read. The claim
 * is left as a dead worker's: past its hold, the next payment_link,
 * cancel or read sweeps what it made (LINK_SWEEP, line_sweep from a
 * GET): one paid is stored and the request promoted, one open is voided.
 * The module before 2026-11-28 released it.
 */
static void
ngx_http_linegate_link_cleanup(void *data)
{
    ngx_str_t               *made;
    ngx_http_linegate_lr_t  *lr = data;

    static ngx_str_t  none = ngx_null_string;

    if (lr->settled) {
        return;
    }

    lr->settled = 1;

    if (ngx_http_linegate_link_left_for_sweep(lr)) {
        ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                      NGX_HTTP_LINEGATE_LOG "line request \"%V\" ended "
                      "after its new invoice \"%V\" was finalized, perhaps "
                      "paid: its reissue claim is left to lapse, for the "
                      "next caller's sweep", &lr->id, &lr->invoice.id);
        return;
    }

    /*
     * lr->invoice is the old invoice as Stripe described it until the
     * invoice machine starts a new one (invoice_issue clears it)
     */
    made = &lr->invoice.id;

    if (made->len == 0
        || (made->len == lr->old_invoice.len
            && ngx_strncmp(made->data, lr->old_invoice.data, made->len) == 0))
    {
        made = NULL;
    }

    ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                  NGX_HTTP_LINEGATE_LOG "line request \"%V\" ended while "
                  "its invoice was reissued: its claim is released if its "
                  "own%s%V", &lr->id,
                  made ? "; invoice queued to be voided unless stored: " : "",
                  made ? made : &none);

    /* ARGV[6]: the new invoice made since the claim */
    if (made) {
        ngx_http_linegate_redis_arg_str(lr->release, made);
    }

    if (ngx_http_linegate_redis_durable_then(ngx_cycle->log,
                                    NGX_HTTP_LINEGATE_SCRIPT_LR_REISSUE_ABORT,
                                    lr->release->nkeys, lr->release,
                                    "lr_reissue_abort of an ended request",
                                    ngx_http_linegate_link_aborted_late)
        != NGX_OK
        && made)
    {
        /* the release lost (logged): the invoice is queued all the same */
        ngx_http_linegate_lines_orphan(ngx_cycle->log, lr);
    }
}


/*
 * Whether a reissue ended by nginx may hold a new invoice Stripe paid, so
 * that its cleanup must not release its claim:
 * - the index of a new invoice known paid is being written (LINK_INDEX);
 * - its finalize was sent and no answer taken in (LINK_ISSUE, or
 *   LINK_UNISSUE's void, delete or check after it): Stripe pays an amount
 *   due of 0 (a credit balance) at finalization, and the answer that
 *   would say so never comes to an ended request.
 */
static ngx_uint_t
ngx_http_linegate_link_left_for_sweep(ngx_http_linegate_lr_t *lr)
{
    switch (lr->ctx->state) {

    case NGX_HTTP_LINEGATE_LINK_INDEX:
        return ngx_http_linegate_line_is(&lr->invoice.status, "paid");

    case NGX_HTTP_LINEGATE_LINK_ISSUE:
    case NGX_HTTP_LINEGATE_LINK_UNISSUE:
        return lr->invoice.finalized;

    default:
        return 0;
    }
}


/* cancel */

/* CANCEL_VOID */
static void
ngx_http_linegate_cancel_void(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr)
{
    lr->ctx->state = NGX_HTTP_LINEGATE_CANCEL_VOID;

    if (ngx_http_linegate_manage_void_key(r, lr, &lr->line.invoice_id)
        != NGX_OK
        || ngx_http_linegate_lines_stripe(r, lr, NGX_HTTP_POST, "v1/invoices",
                                       &lr->line.invoice_id, "/void", NULL,
                                       lr->invoice.void_key
                                       ? lr->invoice.void_key : "-void",
                                       ngx_http_linegate_manage_stripe_done)
        != NGX_OK)
    {
        ngx_http_linegate_manage_unavailable(r, lr);
    }
}


static void
ngx_http_linegate_cancel_voided(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr)
{
    ngx_uint_t  result;

    result = ngx_http_linegate_stripe_result(lr->ctx);

    if (result == NGX_HTTP_LINEGATE_STRIPE_OK) {
        /* the void's answer is the invoice named: its claim, for a sweep */
        ngx_http_linegate_link_named(lr);
        ngx_http_linegate_cancel_void_done(r, lr);
        return;
    }

    if (result != NGX_HTTP_LINEGATE_STRIPE_REFUSED) {

        if (lr->invoice.void_key == NULL
            && !lr->ctx->stripe_unknown
            && lr->ctx->stripe_status >= NGX_HTTP_INTERNAL_SERVER_ERROR
            && ngx_http_linegate_invoice_void_key(r, lr) == NGX_OK)
        {
            /*
             * Stripe answered a 5xx, which it keeps under the key for a
             * day and replays to every cancel: tried once more, at once,
             * under a key of its own (invoice_void_key says why)
             */
            ngx_http_linegate_cancel_void(r, lr);
            return;
        }

        ngx_http_linegate_manage_stripe_error(r, lr);
        return;
    }

    /* not voidable: paid meanwhile, or void already; ask which */
    ngx_http_linegate_manage_check(r, lr, NGX_HTTP_LINEGATE_CANCEL_CHECK);
}


/* CANCEL_CHECK */
static void
ngx_http_linegate_cancel_checked(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr)
{
    if (ngx_http_linegate_manage_invoice(r, lr) != NGX_OK) {
        return;
    }

    if (ngx_http_linegate_line_is(&lr->invoice.status, "paid")) {

        if (lr->sweep.cancel) {
            /*
             * promoted for its own invoice: the claim released lapsed
             * (not swept), the request queued for a run as any that
             * ends with a lapsed claim (lr_settle's mark)
             */
            lr->sweep.cancel_paid = 1;
            ngx_http_linegate_link_abort(r, lr,
                                         NGX_HTTP_LINEGATE_CANCEL_RELEASE);
            return;
        }

        ngx_http_linegate_manage_resolve(r, lr,
                                         NGX_HTTP_LINEGATE_CANCEL_RESOLVE,
                                         "paid");
        return;
    }

    if (ngx_http_linegate_line_is(&lr->invoice.status, "void")) {
        ngx_http_linegate_cancel_void_done(r, lr);
        return;
    }

    ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                  NGX_HTTP_LINEGATE_LOG "invoice \"%V\" is \"%V\" and "
                  "cannot be voided", &lr->invoice.id, &lr->invoice.status);

    ngx_http_linegate_manage_unavailable(r, lr);
}


/*
 * The invoice the request names is void. A cancel over a lapsed claim
 * (sweep.cancel, the claim its own now) first looks for what the lapsed
 * claim left at Stripe, as payment_link's sweep does (LINK_SWEEP, by
 * link_issue): one paid (at its finalize, by a credit balance, or from
 * Stripe's pages) is a payment of the request, kept and made its own
 * (LINK_INDEX, LINK_STORE, LINK_RESOLVE: promoted, 409 provisioning);
 * others are voided. Nothing paid: the claim released (CANCEL_RELEASE),
 * then canceled. Before, it was canceled at once, and a run left the
 * paid invoice to a human: a customer who had paid got no line.
 */
static void
ngx_http_linegate_cancel_void_done(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr)
{
    if (lr->sweep.cancel) {
        ngx_http_linegate_link_issue(r, lr);
        return;
    }

    ngx_http_linegate_manage_resolve(r, lr, NGX_HTTP_LINEGATE_CANCEL_RESOLVE,
                                     "void");
}


/* CANCEL_RESOLVE */
static void
ngx_http_linegate_cancel_resolved(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, redisReply *reply)
{
    ngx_http_linegate_ctx_t         *ctx;
    ngx_http_linegate_json_write_t   jw;

    ctx = lr->ctx;

    /* no answer: Stripe voided it, a retry finds it void and cancels */
    if (ngx_http_linegate_manage_resolved(r, lr, reply) != NGX_OK) {
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

    if (ngx_http_linegate_line_is(&lr->line.status,
                                  NGX_HTTP_LINEGATE_LR_AWAITING))
    {
        /*
         * still awaiting payment: it names another invoice now (a
         * payment_link reissued it while this void was in flight), which
         * a retry voids; not the 409 of a request in another state
         */
        ngx_http_linegate_manage_busy(r);
        return;
    }

    ngx_http_linegate_manage_conflict(r, &lr->line.status,
        ngx_http_linegate_line_is(&lr->line.status, "provisioning")
        ? "The invoice was paid meanwhile: the request is being "
          "provisioned"
        : NULL);
}
