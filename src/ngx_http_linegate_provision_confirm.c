
/*
 * linegate: POST /accounts/lines/provision-confirm (SPEC 3.4), a small
 * state machine kept in the request ctx. Every Redis step touches one
 * hash slot, its keys in KEYS[] (docs/data-model.md, "Scripts and
 * slots"): the token's lg:pv:<digest>, the account's lg:{acct:<A>}...,
 * or the fleet's lg:{fleet}... (on one Redis, where slots do not
 * matter, RESERVE also writes the intent to the fleet's journal)
 *
 *   AUTH       the account of the key id: the worker's cache, else
 *              pv_account.lua (lg:sbkey:<key id>), as for a preview
 *              (ngx_http_linegate_provision.c runs it, then calls
 *              ngx_http_linegate_provision_confirm_known()); 401
 *   TOKEN      script pv_token (the token's own slot, lg:pv:<digest>):
 *              another account's token is kept (403); the account's is
 *              consumed, whatever happens next, and is good or 410
 *              (expired, malformed); none is a 410. Answer lost: 503,
 *              nothing reserved (the token consumed or not). A name no
 *              token can have skips the step (410). Only a token of
 *              another slot comes here (another account's, or none):
 *              the account's own tokens are in its slot, spent by
 *              RESERVE after its key id check, so a rotation's previous
 *              key id is refused (401) with the token kept
 *   INTENT     a Redis Cluster's: ZADD lg:{fleet}:pv:inflight
 *              "<A> <worker> -" (the fleet's slot, acknowledged under
 *              linegate_redis_wait), before anything is reserved: if the
 *              worker dies once RESERVE ran, the sweep finds the
 *              purchase by it (a reservation lives in the account's
 *              slot, which nothing walks) and releases it. On one Redis
 *              (or Sentinel's master) RESERVE writes the intent itself,
 *              with the reservation, and this step is skipped; so it is
 *              when TOKEN refused the token (RESERVE then only reads).
 *              Answer lost: 503, nothing reserved, the intent dropped
 *              (or the sweep's)
 *   RESERVE    script pv_reserve (the account's slot): refuse a key id
 *              the account no longer names (its key_id: a credentials
 *              rotation's previous one, 401), then TOKEN's refusal
 *              (403, 410: nothing reserved, the windows read for the
 *              answer's headers), check the plan, re-check both windows,
 *              reserve the limit slot (one atomic step: no burst of
 *              parallel confirms can exceed a limit); on one Redis the
 *              intent with the reservation, in the same step. A refusal
 *              writes none, and drops INTENT's (not waited for). On a
 *              cluster acknowledged under linegate_redis_wait (its own
 *              WAIT on the account's master). Answer lost, or not
 *              acknowledged: RELEASE, then 503. Refused before it ran
 *              (ctx->store_not_run: the account's slot in migration
 *              past the command's deadline, CLUSTERDOWN): nothing to
 *              release, INTENT's dropped, 503 at once (a RELEASE would
 *              meet the same migration and wait as long again)
 *   CLAIM      script pv_claim (the fleet's slot): a number leaves the
 *              inventory for the claims journal lg:{fleet}:pv:inflight
 *              ("<A> <worker> <number>", in the intent's place) in the
 *              same step. None: RELEASE, then 503 no_lines_available.
 *              No intent (the sweep released the purchase: this confirm
 *              outlived linegate_reconcile_lost_after), or an intent
 *              older than that (the sweep may be releasing it): nothing
 *              taken, RELEASE, 503.
 *              Answer lost: RELEASE, then 503; the claim, if any, is the
 *              sweep's
 *   CUSTOMER   Stripe GET v1/customers/<id>: is there a card on file?
 *   SUBSCRIBE  Stripe POST v1/subscriptions, error_if_incomplete, with an
 *              Idempotency-Key derived from the token; an answer that was
 *              lost (timeout, dropped connection, 5xx) is asked for once
 *              more with the same key: Stripe replays it if the first
 *              call created the subscription, or creates it now
 *   RECORD     script pv_record (the account's slot): the reservation
 *              becomes the account's line with the claimed number, or,
 *              when it cannot, the purchase is written to the account's
 *              outbox (lg:{acct:<A>}:reconcile:w:<worker>) in the same
 *              step
 *   RELEASE    script pv_release (the account's slot): the reservation
 *              is dropped, the slot freed (and the purchase written to
 *              the outbox when Stripe's answer stayed unknown)
 *   SETTLE     script pv_settle (the fleet's slot), after RECORD or
 *              RELEASE: the claim (or the intent) leaves the journal;
 *              the number goes back to the inventory (released, no line
 *              holds it) or stays with its line or its entry; the
 *              outbox's entry is queued on lg:{fleet}:reconcile
 *   DONE       the answer
 *
 * Every step returns to nginx's event loop and resumes from its callback;
 * a step that cannot even start takes the same path as its failure.
 *
 * RECORD, RELEASE and SETTLE are idempotent scripts. When Redis does not
 * answer them (a timeout, a lost connection), or when the request ends
 * before the purchase is settled (the client gone, its stream reset, the
 * request terminated), the script is handed to a durable write
 * (ngx_http_linegate_redis_durable()), re-sent until Redis answers,
 * independent of the request: work that may have moved money is the
 * request's work, not the connection's, and always finishes. A SETTLE
 * is handed over too, once the durable RECORD or RELEASE before it is
 * answered (ngx_http_linegate_redis_durable_then(): its answer decides
 * the settle): the claim or the intent leaves the journal only once
 * the account's side is written, so that a worker dying in between
 * leaves the journal's member for the sweep, never a reservation
 * nothing finds. A claim or an intent left behind by a worker that died
 * (or a CLAIM whose answer was lost) is settled by the reconciliation
 * sweep (pv_inspect.lua reads the account's side, and releases an
 * intent's reservation; then pv_settle.lua).
 */


#include "ngx_http_linegate_module.h"
#include "ngx_http_linegate_provision.h"
#include "ngx_http_linegate_pv_settle.h"
#include "ngx_http_linegate_crypto.h"
#include "ngx_http_linegate_json.h"
#include "ngx_http_linegate_reply.h"
#include "ngx_http_linegate_stripe.h"
#include "ngx_http_linegate_clock.h"
#include "ngx_http_linegate_ids.h"
#include "ngx_http_linegate_chars.h"
#include "ngx_http_linegate_str.h"
#include "ngx_http_linegate_json_write.h"


#define NGX_HTTP_LINEGATE_WORKER_LEN     (7 + NGX_HTTP_LINEGATE_ID_LEN)
#define NGX_HTTP_LINEGATE_PV_TOKEN_MIN   (4 + 32)
#define NGX_HTTP_LINEGATE_PV_TOKEN_MAX   128
#define NGX_HTTP_LINEGATE_CONFIRM_TRIES  2

/*
 * Stripe's 409 (the same Idempotency-Key's first call still being
 * handled) is asked again after 250 ms, 500 ms, 1 s, as the Lines
 * invoice calls are: at once, it is all but sure to meet the first call
 * still running and the purchase would be queued as unknown. Bounded:
 * at most 1.75 s more of a held reservation, and a client's request.
 */
#define NGX_HTTP_LINEGATE_CONFIRM_BUSY_TRIES  3
#define NGX_HTTP_LINEGATE_CONFIRM_BUSY_WAIT   250

#define NGX_HTTP_LINEGATE_MSG_NO_CARD                                        \
    "No payment method on file: add a default card to the account"
#define NGX_HTTP_LINEGATE_MSG_BILLING                                        \
    "The payment provider is unavailable: request a new preview and retry"


/* the longest reconcile reason, for the "queued once" key */
#define NGX_HTTP_LINEGATE_CONFIRM_REASON_MAX  sizeof("stripe_outcome_unknown")


typedef enum {
    NGX_HTTP_LINEGATE_CONFIRM_AUTH = 0,
    NGX_HTTP_LINEGATE_CONFIRM_TOKEN,
    NGX_HTTP_LINEGATE_CONFIRM_INTENT,
    NGX_HTTP_LINEGATE_CONFIRM_RESERVE,
    NGX_HTTP_LINEGATE_CONFIRM_CLAIM,
    NGX_HTTP_LINEGATE_CONFIRM_CUSTOMER,
    NGX_HTTP_LINEGATE_CONFIRM_SUBSCRIBE,
    NGX_HTTP_LINEGATE_CONFIRM_RECORD,
    NGX_HTTP_LINEGATE_CONFIRM_RELEASE,
    NGX_HTTP_LINEGATE_CONFIRM_SETTLE,
    NGX_HTTP_LINEGATE_CONFIRM_DONE
} ngx_http_linegate_confirm_state_e;


typedef struct {
    ngx_http_request_t              *request;
    ngx_http_linegate_ctx_t         *ctx;
    ngx_str_t                        token;
    ngx_str_t                        pvkey;     /* lg:pv:{<tag>}:<digest> */
    ngx_str_t                        account;
    ngx_str_t                        key_id;    /* the presented one */
    /* lg:{acct:<A>}, :prov, :resv:, :line:, the outbox (keys.h) */
    ngx_str_t                        akeys[
                                        NGX_HTTP_LINEGATE_KEYS_PV_PURCHASE];
    ngx_str_t                        customer;
    ngx_str_t                        number;
    /* "<A> <worker> <number>", or the intent "<A> <worker> -" */
    ngx_str_t                        claim;
    ngx_str_t                        qkey;      /* lg:{fleet}:q:..., room */
    ngx_str_t                        subscription;
    ngx_str_t                        idempotency_key;
    ngx_str_t                        form;
    ngx_str_t                        worker_id;
    u_char                           worker[NGX_HTTP_LINEGATE_WORKER_LEN];
    u_char                           iso[NGX_HTTP_LINEGATE_ISO_LEN];
    int64_t                          now;
    ngx_uint_t                       attempts;  /* subscription POSTs */
    ngx_uint_t                       busy;      /* 409s waited out */
    /* the wait before a 409's retry; the cleanup deletes it */
    ngx_event_t                      wait;
    ngx_http_linegate_pv_state_t     st;
    /* the outbox's "at": the moment of the RECORD or RELEASE */
    u_char                           at[NGX_HTTP_LINEGATE_ISO_LEN];

    /* the answer, decided before the reservation is released */
    ngx_uint_t                       status;
    const char                      *code;
    const char                      *message;
    ngx_int_t                        retry_after;
    const char                      *refused;   /* TOKEN's: "410", "403" */
    const char                      *reconcile; /* why; NULL: no entry */
    unsigned                         store_failed:1;
    unsigned                         queued:1;  /* on lg:{fleet}:reconcile */
    unsigned                         durable:1; /* a write handed over */
    unsigned                         settled:1; /* nothing left to do */
    unsigned                         reserving:1; /* RESERVE sent */
    unsigned                         spend:1;   /* RESERVE spends it */
    unsigned                         inventory_empty:1;
    unsigned                         giveback:1;  /* SETTLE: the number */
    unsigned                         intent_apart:1; /* INTENT wrote it */

    ngx_http_linegate_redis_args_t   args;

    /*
     * The numbers of the record and release scripts, formatted here and
     * not in the request's pool: the cleanup builds them once the pool is
     * going away (ngx_http_free_request() has set r->pool to NULL).
     */
    u_char                           nums[3][NGX_INT64_LEN];

    /* the body refused (NGX_ABORT of confirm_token): why, not answered */
    const char                      *bad_field;
    const char                      *bad_why;
} ngx_http_linegate_confirm_t;


/* the confirm's state: in the preview/limits request state it extends */
#define ngx_http_linegate_confirm_of(ctx)                                    \
    ((ngx_http_linegate_confirm_t *)                                         \
     ((ngx_http_linegate_pv_request_t *) (ctx)->data)->confirm)


static ngx_int_t ngx_http_linegate_confirm_token(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, ngx_http_linegate_confirm_t *cf);
static void ngx_http_linegate_confirm_next(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, ngx_http_linegate_confirm_state_e state);
static void ngx_http_linegate_confirm_unstarted(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, ngx_http_linegate_confirm_t *cf);
static void ngx_http_linegate_confirm_fail(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, ngx_uint_t status, const char *code,
    const char *message, const char *reconcile);
static void ngx_http_linegate_confirm_no_card(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx);
static void ngx_http_linegate_confirm_billing(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, ngx_http_linegate_stripe_result_e result,
    const char *reconcile);

static ngx_int_t ngx_http_linegate_confirm_spend(ngx_http_request_t *r,
    ngx_http_linegate_confirm_t *cf);
static void ngx_http_linegate_confirm_spent(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, ngx_http_linegate_confirm_t *cf,
    redisReply *reply);
static void ngx_http_linegate_confirm_to_reserve(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, ngx_http_linegate_confirm_t *cf);
static ngx_int_t ngx_http_linegate_confirm_intent_member(
    ngx_http_request_t *r, ngx_http_linegate_confirm_t *cf);
static ngx_int_t ngx_http_linegate_confirm_intent(ngx_http_request_t *r,
    ngx_http_linegate_confirm_t *cf);
static void ngx_http_linegate_confirm_intended(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, ngx_http_linegate_confirm_t *cf,
    redisReply *reply);
static void ngx_http_linegate_confirm_drop_intent(ngx_http_request_t *r,
    ngx_http_linegate_confirm_t *cf);
static ngx_int_t ngx_http_linegate_confirm_reserve(ngx_http_request_t *r,
    ngx_http_linegate_confirm_t *cf);
static void ngx_http_linegate_confirm_reserved(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, ngx_http_linegate_confirm_t *cf,
    redisReply *reply);
static ngx_int_t ngx_http_linegate_confirm_refused(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, int64_t code, redisReply *reply);
static void ngx_http_linegate_confirm_gone(ngx_http_request_t *r);
static void ngx_http_linegate_confirm_unauthorized(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx);
static ngx_int_t ngx_http_linegate_confirm_claim(ngx_http_request_t *r,
    ngx_http_linegate_confirm_t *cf);
static void ngx_http_linegate_confirm_claimed(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, ngx_http_linegate_confirm_t *cf,
    redisReply *reply);
static ngx_int_t ngx_http_linegate_confirm_prepare(ngx_http_request_t *r,
    ngx_http_linegate_confirm_t *cf);

static ngx_int_t ngx_http_linegate_confirm_customer(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, ngx_http_linegate_confirm_t *cf);
static ngx_int_t ngx_http_linegate_confirm_subscribe(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, ngx_http_linegate_confirm_t *cf);
static void ngx_http_linegate_confirm_stripe_done(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx);
static void ngx_http_linegate_confirm_checked(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, ngx_http_linegate_confirm_t *cf);
static void ngx_http_linegate_confirm_subscribed(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, ngx_http_linegate_confirm_t *cf);
static void ngx_http_linegate_confirm_declined(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, ngx_http_linegate_confirm_t *cf);
static ngx_uint_t ngx_http_linegate_confirm_has_card(json_t *customer);
static ngx_uint_t ngx_http_linegate_confirm_live(json_t *sub);

static ngx_int_t ngx_http_linegate_confirm_record(ngx_http_request_t *r,
    ngx_http_linegate_confirm_t *cf);
static void ngx_http_linegate_confirm_recorded(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, ngx_http_linegate_confirm_t *cf,
    redisReply *reply);
static void ngx_http_linegate_confirm_record_args(ngx_http_request_t *r,
    ngx_http_linegate_confirm_t *cf);
static void ngx_http_linegate_confirm_release_args(ngx_http_request_t *r,
    ngx_http_linegate_confirm_t *cf);
static ngx_int_t ngx_http_linegate_confirm_durable(
    ngx_http_linegate_confirm_t *cf, ngx_http_linegate_script_id_e script,
    const char *what);
static void ngx_http_linegate_confirm_cleanup(void *data);
static ngx_int_t ngx_http_linegate_confirm_later(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, ngx_http_linegate_confirm_t *cf);
static void ngx_http_linegate_confirm_wake(ngx_event_t *ev);
static void ngx_http_linegate_confirm_arg_int(ngx_http_linegate_confirm_t *cf,
    ngx_uint_t slot, int64_t n);
static ngx_int_t ngx_http_linegate_confirm_release(ngx_http_request_t *r,
    ngx_http_linegate_confirm_t *cf);
static void ngx_http_linegate_confirm_released(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, ngx_http_linegate_confirm_t *cf,
    redisReply *reply);
static void ngx_http_linegate_confirm_settle_args(ngx_http_request_t *r,
    ngx_http_linegate_confirm_t *cf);
static void ngx_http_linegate_confirm_recorded_late(redisReply *reply,
    ngx_http_linegate_redis_args_t *rec, ngx_str_t *note);
static void ngx_http_linegate_confirm_released_late(redisReply *reply,
    ngx_http_linegate_redis_args_t *rel, ngx_str_t *note);
static void ngx_http_linegate_confirm_settle_late(
    ngx_http_linegate_pv_settle_t *st);
static ngx_int_t ngx_http_linegate_confirm_settle(ngx_http_request_t *r,
    ngx_http_linegate_confirm_t *cf);
static void ngx_http_linegate_confirm_settled(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, ngx_http_linegate_confirm_t *cf,
    redisReply *reply);
static void ngx_http_linegate_confirm_settle_durable(ngx_http_request_t *r,
    ngx_http_linegate_confirm_t *cf);
static void ngx_http_linegate_confirm_stored(ngx_http_request_t *r,
    redisReply *reply);

static void ngx_http_linegate_confirm_answer(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, ngx_http_linegate_confirm_t *cf);
static ngx_http_linegate_redis_args_t *ngx_http_linegate_confirm_args(
    ngx_http_linegate_confirm_t *cf);
static ngx_int_t ngx_http_linegate_confirm_script(ngx_http_request_t *r,
    ngx_http_linegate_confirm_t *cf, ngx_http_linegate_script_id_e script,
    int nkeys);
static ngx_int_t ngx_http_linegate_confirm_copy(ngx_http_request_t *r,
    redisReply *reply, ngx_uint_t i, ngx_str_t *dst);


/*
 * The confirm starts once the credentials are read (not yet checked):
 * its state, the cleanup that settles what the request leaves, the body
 * (400). NGX_DECLINED: answered.
 */
ngx_int_t
ngx_http_linegate_provision_confirm(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, ngx_http_linegate_pv_request_t *pv)
{
    ngx_int_t                     rc;
    ngx_pool_cleanup_t           *cln;
    ngx_http_linegate_confirm_t  *cf;

    cf = ngx_pcalloc(r->pool, sizeof(ngx_http_linegate_confirm_t));
    if (cf == NULL) {
        ngx_http_linegate_internal_error(r);
        return NGX_DECLINED;
    }

    cf->retry_after = -1;
    cf->request = r;
    cf->ctx = ctx;
    pv->confirm = cf;
    ctx->state = NGX_HTTP_LINEGATE_CONFIRM_AUTH;

    /*
     * Runs however the request ends (answered, or terminated while a step
     * was in flight): settles what the request left unsettled. Added
     * after module.c's, so it runs before the request's JSON is freed.
     */
    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        ngx_http_linegate_internal_error(r);
        return NGX_DECLINED;
    }

    cln->handler = ngx_http_linegate_confirm_cleanup;
    cln->data = cf;

    rc = ngx_http_linegate_confirm_token(r, ctx, cf);

    if (rc == NGX_ABORT) {
        /* the body refused: answered once the key id is checked */
        pv->bad_field = cf->bad_field;
        pv->bad_why = cf->bad_why;
        return NGX_ABORT;
    }

    if (rc != NGX_OK) {
        return NGX_DECLINED;
    }

    ngx_memcpy(cf->worker, "worker_", 7);

    if (ngx_http_linegate_new_id(cf->worker + 7) != NGX_OK) {
        ngx_http_linegate_internal_error(r);
        return NGX_DECLINED;
    }

    cf->worker_id.data = cf->worker;
    cf->worker_id.len = NGX_HTTP_LINEGATE_WORKER_LEN;

    return NGX_OK;
}


/*
 * From the claim's score (CLAIM's clock, taken when it is sent) to the
 * record's run, a confirm waits for: CLAIM's answer (within
 * linegate_redis_command_timeout, else it releases and calls no one);
 * CUSTOMER's GET; SUBSCRIBE's POSTs, the first, one more after a lost
 * answer (NGX_HTTP_LINEGATE_CONFIRM_TRIES) and one after each 409 it
 * waits out (NGX_HTTP_LINEGATE_CONFIRM_BUSY_TRIES), each call bounded
 * by linegate_stripe_timeout, and those waits; then RECORD, run within
 * its command timeout when Redis answers it (a record re-sent as a
 * durable write while Redis is unreachable is not bounded: directives.md
 * says so). A sweep whose lost_after is not longer takes a confirm whose
 * Stripe is slow but answering for a dead worker's, and the purchase
 * Stripe then makes is refunded.
 */
ngx_msec_t
ngx_http_linegate_provision_confirm_longest(ngx_msec_t stripe_timeout,
    ngx_msec_t command_timeout, ngx_uint_t *calls, ngx_msec_t *waits)
{
    ngx_uint_t  i;

    *calls = 1 + NGX_HTTP_LINEGATE_CONFIRM_TRIES
             + NGX_HTTP_LINEGATE_CONFIRM_BUSY_TRIES;
    *waits = 0;

    for (i = 0; i < NGX_HTTP_LINEGATE_CONFIRM_BUSY_TRIES; i++) {
        *waits += (ngx_msec_t) NGX_HTTP_LINEGATE_CONFIRM_BUSY_WAIT << i;
    }

    return *calls * stripe_timeout + *waits + 2 * command_timeout;
}


/* AUTH is done: the account (pv->who.value) is known */
void
ngx_http_linegate_provision_confirm_known(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, ngx_http_linegate_pv_request_t *pv)
{
    ngx_http_linegate_confirm_t  *cf;

    cf = pv->confirm;
    cf->account = pv->who.value;
    cf->key_id = pv->key_id;

    if (ngx_http_linegate_key_purchase(r->pool, &cf->account,
                                       &cf->worker_id, cf->akeys)
        != NGX_OK)
    {
        ngx_http_linegate_internal_error(r);
        return;
    }

    if (cf->token.len == 1 && cf->token.data[0] == '-') {
        /* no token can have that name: a 410, from the account's step */
        cf->refused = "410";
        ngx_http_linegate_confirm_next(r, ctx,
                                       NGX_HTTP_LINEGATE_CONFIRM_RESERVE);
        return;
    }

    if (ngx_http_linegate_key_pv(r->pool, &cf->token, &cf->pvkey)
        != NGX_OK)
    {
        ngx_http_linegate_internal_error(r);
        return;
    }

    /*
     * The account's own previews put their tokens in its slot: spent by
     * the account's step itself, one round trip less; any other token in
     * a step of its own slot first
     */
    if (ngx_http_linegate_key_same_slot(&cf->pvkey, &cf->akeys[0])) {
        cf->spend = 1;
        ngx_http_linegate_confirm_to_reserve(r, ctx, cf);
        return;
    }

    ngx_http_linegate_confirm_next(r, ctx, NGX_HTTP_LINEGATE_CONFIRM_TOKEN);
}


/*
 * The body: {"preview_token": "lpv_..."}. Missing, not a string or not
 * JSON is a 400; a string that cannot be a token is an unknown token
 * (410), answered by the script once the credentials are checked.
 */
static ngx_int_t
ngx_http_linegate_confirm_token(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, ngx_http_linegate_confirm_t *cf)
{
    ngx_int_t  rc;
    ngx_str_t  token;

    /* a refusal is the caller's to answer, once the key id is checked */
    if (ngx_http_linegate_json_parse(r, ctx, 0, &cf->bad_why) != NGX_OK) {
        if (cf->bad_why == NULL) {
            ngx_http_linegate_internal_error(r);
            return NGX_ERROR;
        }

        return NGX_ABORT;
    }

    rc = ngx_http_linegate_json_str(ctx->body, "preview_token", &token);

    /* a string refused holds a NUL (json.c): no token, as any other */
    if (rc == NGX_ERROR
        && json_is_string(json_object_get(ctx->body, "preview_token")))
    {
        ngx_str_set(&cf->token, "-");
        return NGX_OK;
    }

    if (rc != NGX_OK) {
        cf->bad_field = "preview_token";
        cf->bad_why = (rc == NGX_DECLINED) ? "preview_token is required"
                                           : "preview_token must be a string";
        return NGX_ABORT;
    }

    ngx_str_set(&cf->token, "-");

    if (token.len < NGX_HTTP_LINEGATE_PV_TOKEN_MIN
        || token.len > NGX_HTTP_LINEGATE_PV_TOKEN_MAX
        || ngx_strncmp(token.data, NGX_HTTP_LINEGATE_PV_PREFIX, 4) != 0)
    {
        return NGX_OK;
    }

    if (!ngx_http_linegate_chars_are(token.data + 4, token.len - 4,
                                     NGX_HTTP_LINEGATE_CHARS_ALNUM))
    {
        return NGX_OK;
    }

    cf->token = token;

    return NGX_OK;
}


/* enter a step: start it, or take its failure path if it cannot start */
static void
ngx_http_linegate_confirm_next(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, ngx_http_linegate_confirm_state_e state)
{
    ngx_int_t                     rc;
    ngx_http_linegate_confirm_t  *cf;

    cf = ngx_http_linegate_confirm_of(ctx);
    ctx->state = state;

    switch (state) {

    case NGX_HTTP_LINEGATE_CONFIRM_TOKEN:
        rc = ngx_http_linegate_confirm_spend(r, cf);
        break;

    case NGX_HTTP_LINEGATE_CONFIRM_INTENT:
        rc = ngx_http_linegate_confirm_intent(r, cf);
        break;

    case NGX_HTTP_LINEGATE_CONFIRM_RESERVE:
        rc = ngx_http_linegate_confirm_reserve(r, cf);
        break;

    case NGX_HTTP_LINEGATE_CONFIRM_CLAIM:
        rc = ngx_http_linegate_confirm_claim(r, cf);
        break;

    case NGX_HTTP_LINEGATE_CONFIRM_CUSTOMER:
        rc = ngx_http_linegate_confirm_customer(r, ctx, cf);
        break;

    case NGX_HTTP_LINEGATE_CONFIRM_SUBSCRIBE:
        rc = ngx_http_linegate_confirm_subscribe(r, ctx, cf);
        break;

    case NGX_HTTP_LINEGATE_CONFIRM_RECORD:
        rc = ngx_http_linegate_confirm_record(r, cf);
        break;

    case NGX_HTTP_LINEGATE_CONFIRM_RELEASE:
        rc = ngx_http_linegate_confirm_release(r, cf);
        break;

    case NGX_HTTP_LINEGATE_CONFIRM_SETTLE:
        rc = ngx_http_linegate_confirm_settle(r, cf);
        break;

    default: /* NGX_HTTP_LINEGATE_CONFIRM_DONE */
        ngx_http_linegate_confirm_answer(r, ctx, cf);
        return;
    }

    if (rc != NGX_OK) {
        ngx_http_linegate_confirm_unstarted(r, ctx, cf);
    }
}


/* a step could not be started: what it means depends on the step */
static void
ngx_http_linegate_confirm_unstarted(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, ngx_http_linegate_confirm_t *cf)
{
    switch (ctx->state) {

    case NGX_HTTP_LINEGATE_CONFIRM_TOKEN:
    case NGX_HTTP_LINEGATE_CONFIRM_INTENT:
    case NGX_HTTP_LINEGATE_CONFIRM_RESERVE:
        /* nothing was sent: nothing was reserved */
        ngx_http_linegate_confirm_drop_intent(r, cf);
        cf->settled = 1;
        ngx_http_linegate_store_unavailable(r);
        return;

    case NGX_HTTP_LINEGATE_CONFIRM_CLAIM:
        /* nothing was sent: the reservation alone is released */
        cf->store_failed = 1;
        ngx_http_linegate_confirm_next(r, ctx,
                                       NGX_HTTP_LINEGATE_CONFIRM_RELEASE);
        return;

    case NGX_HTTP_LINEGATE_CONFIRM_CUSTOMER:
        ngx_http_linegate_confirm_billing(r, ctx,
                                          NGX_HTTP_LINEGATE_STRIPE_UNAVAILABLE,
                                          NULL);
        return;

    case NGX_HTTP_LINEGATE_CONFIRM_SUBSCRIBE:
        /* after a lost answer, the first call may still have charged */
        ngx_http_linegate_confirm_billing(r, ctx,
                                          NGX_HTTP_LINEGATE_STRIPE_UNAVAILABLE,
                                          cf->attempts
                                          ? "stripe_outcome_unknown" : NULL);
        return;

    default: /* RECORD, RELEASE, SETTLE: as if Redis had not answered */
        ngx_http_linegate_confirm_stored(r, NULL);
        return;
    }
}


/*
 * The purchase failed (or may have): remember the answer, then release
 * the reservation before giving it.
 */
static void
ngx_http_linegate_confirm_fail(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, ngx_uint_t status, const char *code,
    const char *message, const char *reconcile)
{
    ngx_http_linegate_confirm_t  *cf;

    cf = ngx_http_linegate_confirm_of(ctx);

    cf->status = status;
    cf->code = code;
    cf->message = message;
    cf->reconcile = reconcile;

    ngx_http_linegate_confirm_next(r, ctx, NGX_HTTP_LINEGATE_CONFIRM_RELEASE);
}


static void
ngx_http_linegate_confirm_no_card(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx)
{
    ngx_http_linegate_confirm_fail(r, ctx, NGX_HTTP_LINEGATE_PAYMENT_REQUIRED,
                                   "no_card_on_file",
                                   NGX_HTTP_LINEGATE_MSG_NO_CARD, NULL);
}


/*
 * Every Stripe failure is billing_unavailable: 503 with Stripe's
 * Retry-After (1 if absent) when it asked us to slow down, else 502.
 */
static void
ngx_http_linegate_confirm_billing(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, ngx_http_linegate_stripe_result_e result,
    const char *reconcile)
{
    ngx_uint_t                    status;
    ngx_http_linegate_confirm_t  *cf;

    cf = ngx_http_linegate_confirm_of(ctx);
    status = NGX_HTTP_BAD_GATEWAY;

    if (result == NGX_HTTP_LINEGATE_STRIPE_RATE_LIMITED) {
        cf->retry_after = ctx->stripe_retry_after > 0
                          ? (ngx_int_t) ctx->stripe_retry_after : 1;
        status = NGX_HTTP_SERVICE_UNAVAILABLE;
    }

    ngx_http_linegate_confirm_fail(r, ctx, status, "billing_unavailable",
                                   NGX_HTTP_LINEGATE_MSG_BILLING, reconcile);
}


/* TOKEN */

static ngx_int_t
ngx_http_linegate_confirm_spend(ngx_http_request_t *r,
    ngx_http_linegate_confirm_t *cf)
{
    ngx_http_linegate_redis_args_t  *a;

    a = ngx_http_linegate_confirm_args(cf);
    ngx_http_linegate_redis_arg_str(a, &cf->pvkey);
    ngx_http_linegate_redis_arg_str(a, &cf->account);
    ngx_http_linegate_redis_arg_int(r, a, cf->now);

    return ngx_http_linegate_confirm_script(r, cf,
                                            NGX_HTTP_LINEGATE_SCRIPT_PV_TOKEN,
                                            NGX_HTTP_LINEGATE_KEYS_PV_TOKEN);
}


static void
ngx_http_linegate_confirm_spent(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, ngx_http_linegate_confirm_t *cf,
    redisReply *reply)
{
    int64_t  code;

    if (reply == NULL) {
        /*
         * The token may have been consumed, unseen; nothing is reserved
         * yet: 503, as for a reserve whose answer was lost
         */
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      NGX_HTTP_LINEGATE_LOG "no answer to the preview "
                      "token's step of account \"%V\": nothing reserved, "
                      "the token spent or not", &cf->account);
        cf->settled = 1;
        ngx_http_linegate_store_unavailable(r);
        return;
    }

    if (ngx_http_linegate_reply_int(reply, 0, &code) != NGX_OK
        || (code != NGX_HTTP_OK && code != NGX_HTTP_FORBIDDEN
            && code != NGX_HTTP_LINEGATE_GONE))
    {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      NGX_HTTP_LINEGATE_LOG "unexpected reply to the "
                      "preview token's step");
        cf->settled = 1;
        ngx_http_linegate_internal_error(r);
        return;
    }

    /* a refusal still goes to the account's step: 401 first, headers */
    cf->refused = code == NGX_HTTP_OK ? NULL
                  : code == NGX_HTTP_FORBIDDEN ? "403" : "410";

    ngx_http_linegate_confirm_to_reserve(r, ctx, cf);
}


/*
 * On to RESERVE, with the purchase's intent when it may reserve: written
 * by RESERVE itself on one Redis, by INTENT before it on a cluster (the
 * journal's slot on another master, which does not order its writes
 * with the account's). A refused token's RESERVE only reads (the
 * answer's headers): no intent.
 */
static void
ngx_http_linegate_confirm_to_reserve(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, ngx_http_linegate_confirm_t *cf)
{
    ngx_http_linegate_main_conf_t  *lmcf;

    if (cf->refused) {
        ngx_http_linegate_confirm_next(r, ctx,
                                       NGX_HTTP_LINEGATE_CONFIRM_RESERVE);
        return;
    }

    if (ngx_http_linegate_confirm_intent_member(r, cf) != NGX_OK) {
        cf->settled = 1;
        ngx_http_linegate_internal_error(r);
        return;
    }

    lmcf = ngx_http_get_module_main_conf(r, ngx_http_linegate_module);

    ngx_http_linegate_confirm_next(r, ctx,
                                   lmcf->redis_cluster
                                   ? NGX_HTTP_LINEGATE_CONFIRM_INTENT
                                   : NGX_HTTP_LINEGATE_CONFIRM_RESERVE);
}


/* the intent "<A> <worker> -", in cf->claim until CLAIM replaces it */
static ngx_int_t
ngx_http_linegate_confirm_intent_member(ngx_http_request_t *r,
    ngx_http_linegate_confirm_t *cf)
{
    cf->claim.data = ngx_pnalloc(r->pool, cf->account.len + 1
                                          + cf->worker_id.len + 2);
    if (cf->claim.data == NULL) {
        return NGX_ERROR;
    }

    cf->claim.len = ngx_sprintf(cf->claim.data, "%V %V -", &cf->account,
                                &cf->worker_id)
                    - cf->claim.data;

    return NGX_OK;
}


/* INTENT */

static ngx_int_t
ngx_http_linegate_confirm_intent(ngx_http_request_t *r,
    ngx_http_linegate_confirm_t *cf)
{
    ngx_http_linegate_redis_args_t  *a;

    a = ngx_http_linegate_confirm_args(cf);

    /* a failover must not lose it while the reservation stays */
    a->acknowledged = 1;

    ngx_http_linegate_redis_arg_cstr(a, "ZADD");
    ngx_http_linegate_redis_arg_str(a,
        ngx_http_linegate_key_fixed(NGX_HTTP_LINEGATE_KEY_PV_INFLIGHT));
    ngx_http_linegate_redis_arg_int(r, a, cf->now);
    ngx_http_linegate_redis_arg_str(a, &cf->claim);

    if (ngx_http_linegate_redis_command(r, a,
                                        ngx_http_linegate_confirm_stored)
        != NGX_OK)
    {
        /* not sent: nothing to drop */
        return NGX_ERROR;
    }

    cf->intent_apart = 1;

    return NGX_OK;
}


static void
ngx_http_linegate_confirm_intended(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, ngx_http_linegate_confirm_t *cf,
    redisReply *reply)
{
    if (reply == NULL || reply->type != REDIS_REPLY_INTEGER) {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      NGX_HTTP_LINEGATE_LOG "no answer to the intent of "
                      "purchase %V of account \"%V\": nothing reserved",
                      &cf->worker_id, &cf->account);
        ngx_http_linegate_confirm_drop_intent(r, cf);
        cf->settled = 1;
        ngx_http_linegate_store_unavailable(r);
        return;
    }

    ngx_http_linegate_confirm_next(r, ctx, NGX_HTTP_LINEGATE_CONFIRM_RESERVE);
}


/*
 * Nothing is reserved: INTENT's intent goes, not waited for (one left
 * behind, its removal lost, is dropped by the sweep: no reservation).
 * RESERVE's own (one Redis) is written only with the reservation.
 */
static void
ngx_http_linegate_confirm_drop_intent(ngx_http_request_t *r,
    ngx_http_linegate_confirm_t *cf)
{
    ngx_http_linegate_redis_args_t  a;

    if (!cf->intent_apart) {
        ngx_str_null(&cf->claim);
        return;
    }

    cf->intent_apart = 0;

    ngx_http_linegate_redis_args_init(&a);
    ngx_http_linegate_redis_arg_cstr(&a, "ZREM");
    ngx_http_linegate_redis_arg_str(&a,
        ngx_http_linegate_key_fixed(NGX_HTTP_LINEGATE_KEY_PV_INFLIGHT));
    ngx_http_linegate_redis_arg_str(&a, &cf->claim);

    (void) ngx_http_linegate_redis_command(r, &a, NULL);

    ngx_str_null(&cf->claim);
}


/* RESERVE */

static ngx_int_t
ngx_http_linegate_confirm_reserve(ngx_http_request_t *r,
    ngx_http_linegate_confirm_t *cf)
{
    ngx_uint_t                       intent;
    ngx_http_linegate_redis_args_t  *a;
    ngx_http_linegate_main_conf_t   *lmcf;

    lmcf = ngx_http_get_module_main_conf(r, ngx_http_linegate_module);

    /* one Redis: the intent written in this step, with the reservation */
    intent = (cf->claim.len && !cf->intent_apart);

    a = ngx_http_linegate_confirm_args(cf);

    /*
     * A cluster's reservation (INTENT ran: the token not refused) lives
     * on the account's master, and CLAIM's WAIT runs on the fleet's:
     * acknowledged here, so that a failover of the account's master
     * cannot lose the reservation, its limit slot and the token's spend
     * under a purchase that goes on (on one Redis CLAIM's WAIT, on the
     * same connection, covers them)
     */
    a->acknowledged = cf->intent_apart;

    ngx_http_linegate_redis_arg_strs(a, cf->akeys,
                                     NGX_HTTP_LINEGATE_KEYS_PV_PURCHASE);

    if (intent) {
        ngx_http_linegate_redis_arg_str(a,
            ngx_http_linegate_key_fixed(NGX_HTTP_LINEGATE_KEY_PV_INFLIGHT));
    }

    if (cf->spend) {
        ngx_http_linegate_redis_arg_str(a, &cf->pvkey);
    }

    ngx_http_linegate_redis_arg_str(a, &cf->account);
    ngx_http_linegate_redis_arg_int(r, a, cf->now);
    ngx_http_linegate_redis_arg_int(r, a, lmcf->prov_daily);
    ngx_http_linegate_redis_arg_int(r, a, lmcf->prov_monthly);
    ngx_http_linegate_redis_arg_str(a, &cf->worker_id);
    ngx_http_linegate_redis_arg(a, cf->iso, NGX_HTTP_LINEGATE_ISO_LEN);
    ngx_http_linegate_redis_arg_str(a, &cf->key_id);
    ngx_http_linegate_redis_arg_cstr(a, cf->refused ? cf->refused : "");

    if (intent) {
        ngx_http_linegate_redis_arg_str(a, &cf->claim);
    }

    if (ngx_http_linegate_confirm_script(r, cf,
                                         NGX_HTTP_LINEGATE_SCRIPT_PV_RESERVE,
                                         NGX_HTTP_LINEGATE_KEYS_PV_RESERVE
                                         + intent + cf->spend)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    /* a refused token: the step only reads, nothing to release */
    cf->reserving = (cf->refused == NULL);

    return NGX_OK;
}


static void
ngx_http_linegate_confirm_reserved(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, ngx_http_linegate_confirm_t *cf,
    redisReply *reply)
{
    int64_t  code;

    if (reply == NULL && cf->refused) {
        /* a refused token: nothing can have been reserved */
        cf->settled = 1;
        ngx_http_linegate_store_unavailable(r);
        return;
    }

    if (reply == NULL && ctx->store_not_run) {
        /*
         * Redis refused the step before it ran (the account's slot in
         * migration past the command's deadline, the cluster down):
         * nothing reserved, the token not spent, nothing to release. A
         * RELEASE would meet the same migration and wait as long again:
         * until 2026-11-29 the 503 came after twice
         * linegate_redis_command_timeout. The intent goes, as after a
         * refusal.
         */
        ngx_http_linegate_confirm_drop_intent(r, cf);
        cf->settled = 1;
        ngx_http_linegate_store_unavailable(r);
        return;
    }

    if (reply == NULL) {
        /*
         * The script may have run and only its answer be late: release
         * what it may have reserved (a no-op otherwise), then answer 503.
         */
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      NGX_HTTP_LINEGATE_LOG "no answer to the reservation "
                      "step of account \"%V\": released, the token spent "
                      "or not", &cf->account);
        cf->store_failed = 1;
        ngx_http_linegate_confirm_next(r, ctx,
                                       NGX_HTTP_LINEGATE_CONFIRM_RELEASE);
        return;
    }

    if (ngx_http_linegate_reply_int(reply, 0, &code) == NGX_OK
        && code == NGX_HTTP_UNAUTHORIZED)
    {
        /* a key id the account no longer names: nothing was touched */
        ngx_http_linegate_confirm_drop_intent(r, cf);
        cf->settled = 1;
        ngx_str_null(&ctx->tenant);
        ngx_http_linegate_confirm_unauthorized(r, ctx);
        return;
    }

    if (ngx_http_linegate_reply_int(reply, 0, &code) != NGX_OK
        || ngx_http_linegate_pv_state(r, ctx, reply, cf->now, &cf->st)
           != NGX_OK)
    {
        /* it may have reserved: released before the answer */
        ngx_http_linegate_confirm_fail(r, ctx,
                                       NGX_HTTP_INTERNAL_SERVER_ERROR,
                                       "INTERNAL_ERROR", "Internal error",
                                       NULL);
        return;
    }

    if (code != NGX_HTTP_OK) {
        /* nothing was reserved */
        ngx_http_linegate_confirm_drop_intent(r, cf);
        cf->settled = 1;

        if (ngx_http_linegate_confirm_refused(r, ctx, code, reply)
            != NGX_OK)
        {
            ngx_http_linegate_internal_error(r);
        }

        return;
    }

    if (ngx_http_linegate_confirm_copy(r, reply, NGX_HTTP_LINEGATE_PV_EXTRA,
                                       &cf->customer)
        != NGX_OK)
    {
        ngx_http_linegate_confirm_fail(r, ctx,
                                       NGX_HTTP_INTERNAL_SERVER_ERROR,
                                       "INTERNAL_ERROR", "Internal error",
                                       NULL);
        return;
    }

    ngx_http_linegate_confirm_next(r, ctx, NGX_HTTP_LINEGATE_CONFIRM_CLAIM);
}


/* the refusals of the first step: nothing was reserved */
static ngx_int_t
ngx_http_linegate_confirm_refused(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, int64_t code, redisReply *reply)
{
    ngx_str_t                     extra;
    ngx_http_linegate_confirm_t  *cf;

    cf = ngx_http_linegate_confirm_of(ctx);

    ngx_str_null(&extra);
    (void) ngx_http_linegate_reply_str(reply, NGX_HTTP_LINEGATE_PV_EXTRA,
                                       &extra);

    switch (code) {

    case NGX_HTTP_LINEGATE_GONE:
        ngx_http_linegate_confirm_gone(r);
        return NGX_OK;

    case NGX_HTTP_LINEGATE_PAYMENT_REQUIRED:
        ngx_http_linegate_error(r, NGX_HTTP_LINEGATE_PAYMENT_REQUIRED,
                                "no_card_on_file",
                                NGX_HTTP_LINEGATE_MSG_NO_CARD);
        return NGX_OK;

    case NGX_HTTP_FORBIDDEN:
        if (extra.len == 5 && ngx_strncmp(extra.data, "token", 5) == 0) {
            ngx_str_set(&ctx->outcome, "token_foreign");
            ngx_http_linegate_error(r, NGX_HTTP_FORBIDDEN, NULL,
                                    "The preview token belongs to "
                                    "another account");
            return NGX_OK;
        }

        break;

    default:
        break;
    }

    return ngx_http_linegate_pv_refuse(r, ctx, code, &extra, &cf->st);
}


/* 410: the token is not (or no longer) one this account can use */
static void
ngx_http_linegate_confirm_gone(ngx_http_request_t *r)
{
    ngx_http_linegate_error(r, NGX_HTTP_LINEGATE_GONE, "token_expired",
                            "The preview token has expired, was already "
                            "used, or is unknown");
}


/* 401, as for a bad secret (no RateLimit headers) */
static void
ngx_http_linegate_confirm_unauthorized(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx)
{
    ngx_str_t  none;

    ngx_str_null(&none);

    if (ngx_http_linegate_pv_refuse(r, ctx, NGX_HTTP_UNAUTHORIZED, &none,
                                    &ngx_http_linegate_confirm_of(ctx)->st)
        != NGX_OK)
    {
        ngx_http_linegate_internal_error(r);
    }
}


/* CLAIM */

static ngx_int_t
ngx_http_linegate_confirm_claim(ngx_http_request_t *r,
    ngx_http_linegate_confirm_t *cf)
{
    ngx_http_linegate_redis_args_t  *a;
    ngx_http_linegate_main_conf_t   *lmcf;

    lmcf = ngx_http_get_module_main_conf(r, ngx_http_linegate_module);

    a = ngx_http_linegate_confirm_args(cf);
    ngx_http_linegate_redis_arg_str(a,
        ngx_http_linegate_key_fixed(NGX_HTTP_LINEGATE_KEY_INVENTORY));
    ngx_http_linegate_redis_arg_str(a,
        ngx_http_linegate_key_fixed(NGX_HTTP_LINEGATE_KEY_PV_INFLIGHT));
    ngx_http_linegate_redis_arg_str(a,
        ngx_http_linegate_key_fixed(NGX_HTTP_LINEGATE_KEY_HELD));
    ngx_http_linegate_redis_arg_str(a,
        ngx_http_linegate_key_fixed(NGX_HTTP_LINEGATE_KEY_QUARANTINE));
    ngx_http_linegate_redis_arg_str(a, &cf->account);
    ngx_http_linegate_redis_arg_str(a, &cf->worker_id);
    ngx_http_linegate_redis_arg_int(r, a, cf->now);
    /* an intent that old is the sweep's: it may be releasing it now */
    ngx_http_linegate_redis_arg_int(r, a, (int64_t) lmcf->reconcile_lost);

    return ngx_http_linegate_confirm_script(r, cf,
                                            NGX_HTTP_LINEGATE_SCRIPT_PV_CLAIM,
                                            NGX_HTTP_LINEGATE_KEYS_PV_CLAIM);
}


static void
ngx_http_linegate_confirm_claimed(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, ngx_http_linegate_confirm_t *cf,
    redisReply *reply)
{
    int64_t  claimed;

    if (reply == NULL
        || ngx_http_linegate_reply_int(reply, 0, &claimed) != NGX_OK)
    {
        /*
         * A number may have been claimed, unseen: the reservation is
         * released, then 503; the claim, if any, is the sweep's (it
         * finds no reservation and no line: the number returns).
         */
        cf->store_failed = 1;
        ngx_http_linegate_confirm_next(r, ctx,
                                       NGX_HTTP_LINEGATE_CONFIRM_RELEASE);
        return;
    }

    if (claimed == 2) {
        /*
         * No intent: the sweep found this purchase past
         * linegate_reconcile_lost_after and released it. Nothing is
         * taken; the release is sent again (it finds nothing), then 503.
         */
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      NGX_HTTP_LINEGATE_LOG "purchase %V of account \"%V\" "
                      "was released by the reconciliation sweep before it "
                      "claimed a number", &cf->worker_id, &cf->account);
        ngx_str_null(&cf->claim);
        cf->store_failed = 1;
        ngx_http_linegate_confirm_next(r, ctx,
                                       NGX_HTTP_LINEGATE_CONFIRM_RELEASE);
        return;
    }

    if (claimed == 3) {
        /*
         * The intent outlived linegate_reconcile_lost_after: a sweep may
         * have released the reservation already, one step before it
         * drops the intent. No number is taken, so Stripe is never
         * asked; the release, then the intent's settle (whichever of
         * it and the sweep's comes first drops it), then 503.
         */
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      NGX_HTTP_LINEGATE_LOG "purchase %V of account \"%V\" "
                      "outlived linegate_reconcile_lost_after before it "
                      "claimed a number (the sweep's by then): released, "
                      "nothing taken",
                      &cf->worker_id, &cf->account);
        cf->store_failed = 1;
        ngx_http_linegate_confirm_next(r, ctx,
                                       NGX_HTTP_LINEGATE_CONFIRM_RELEASE);
        return;
    }

    if (claimed == 0 || claimed == 1) {
        ngx_http_linegate_pv_aside(r, reply, claimed == 1 ? 2 : 1);
    }

    if (claimed == 0) {
        /* the inventory is empty: the slot is freed, then 503 */
        cf->inventory_empty = 1;
        ngx_http_linegate_pv_stock_seen(r, 0);
        ngx_http_linegate_confirm_next(r, ctx,
                                       NGX_HTTP_LINEGATE_CONFIRM_RELEASE);
        return;
    }

    if (ngx_http_linegate_confirm_copy(r, reply, 1, &cf->number) != NGX_OK
        || ngx_http_linegate_confirm_prepare(r, cf) != NGX_OK)
    {
        if (cf->number.len == 0) {
            /* the number is not known: the claim is the sweep's */
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          NGX_HTTP_LINEGATE_LOG "unexpected reply to the "
                          "claim of %V, account \"%V\": the sweep settles "
                          "it", &cf->worker_id, &cf->account);
        }

        ngx_http_linegate_confirm_fail(r, ctx,
                                       NGX_HTTP_INTERNAL_SERVER_ERROR,
                                       "INTERNAL_ERROR", "Internal error",
                                       NULL);
        return;
    }

    if (!ngx_http_linegate_stripe_id_valid(&cf->customer)) {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      NGX_HTTP_LINEGATE_LOG "account \"%V\" has a malformed "
                      "Stripe customer id", &cf->account);
        ngx_http_linegate_confirm_no_card(r, ctx);
        return;
    }

    ngx_http_linegate_confirm_next(r, ctx, NGX_HTTP_LINEGATE_CONFIRM_CUSTOMER);
}


/*
 * With the number claimed: the claim's member and the room of its
 * "queued once" key (the cleanup cannot allocate), then what every
 * Stripe step needs.
 */
static ngx_int_t
ngx_http_linegate_confirm_prepare(ngx_http_request_t *r,
    ngx_http_linegate_confirm_t *cf)
{
    char                            digest[65];
    u_char                         *claim;
    size_t                          len;
    ngx_str_t                       price;
    ngx_pool_t                     *pool;
    ngx_http_linegate_main_conf_t  *lmcf;

    lmcf = ngx_http_get_module_main_conf(r, ngx_http_linegate_module);
    pool = r->pool;

    len = cf->account.len + 1 + cf->worker_id.len + 1 + cf->number.len;

    /*
     * cf->claim still holds the intent: it is replaced only once the new
     * member is built, so that a failure here releases by the intent
     * rather than by a length without its bytes
     */
    claim = ngx_pnalloc(pool, len);
    if (claim == NULL) {
        return NGX_ERROR;
    }

    cf->claim.len = ngx_sprintf(claim, "%V %V %V", &cf->account,
                                &cf->worker_id, &cf->number)
                    - claim;
    cf->claim.data = claim;

    /* the queued marker, for the longest reason */
    len = ngx_http_linegate_pv_settle_room(&cf->account, &cf->worker_id,
                                        NGX_HTTP_LINEGATE_CONFIRM_REASON_MAX);

    cf->qkey.data = ngx_pnalloc(pool, len);
    if (cf->qkey.data == NULL) {
        return NGX_ERROR;
    }

    /* one purchase per token: Stripe never bills the same token twice */
    ngx_http_linegate_sha256_hex(cf->token.data, cf->token.len, digest);

    cf->idempotency_key.data = ngx_pnalloc(pool, sizeof("lg-confirm-") + 32);
    if (cf->idempotency_key.data == NULL || digest[0] == '\0') {
        return NGX_ERROR;
    }

    cf->idempotency_key.len = ngx_sprintf(cf->idempotency_key.data,
                                          "lg-confirm-%*s", (size_t) 32,
                                          digest)
                              - cf->idempotency_key.data;

    /* built once: a retry must send the very same parameters */
    price = lmcf->price_agent_line;
    ngx_str_null(&cf->form);

    if (ngx_http_linegate_form_add(pool, &cf->form, "customer", &cf->customer)
        != NGX_OK
        || ngx_http_linegate_form_add(pool, &cf->form, "items[0][price]",
                                      &price)
           != NGX_OK
        || ngx_http_linegate_form_add_cstr(pool, &cf->form,
                                           "payment_behavior",
                                           "error_if_incomplete")
           != NGX_OK
        || ngx_http_linegate_form_add(pool, &cf->form,
                                      "metadata[account_id]", &cf->account)
           != NGX_OK
        || ngx_http_linegate_form_add(pool, &cf->form,
                                      "metadata[phone_number]", &cf->number)
           != NGX_OK
        || ngx_http_linegate_form_add(pool, &cf->form, "metadata[worker_id]",
                                      &cf->worker_id)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* CUSTOMER */

static ngx_int_t
ngx_http_linegate_confirm_customer(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, ngx_http_linegate_confirm_t *cf)
{
    ngx_str_t  path;

    path.data = ngx_pnalloc(r->pool, sizeof("v1/customers/") - 1
                                     + cf->customer.len);
    if (path.data == NULL) {
        return NGX_ERROR;
    }

    path.len = ngx_sprintf(path.data, "v1/customers/%V", &cf->customer)
               - path.data;

    return ngx_http_linegate_stripe_call(r, ctx, NGX_HTTP_GET, &path, NULL,
                                         NULL,
                                         ngx_http_linegate_confirm_stripe_done);
}


static void
ngx_http_linegate_confirm_stripe_done(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx)
{
    ngx_http_linegate_confirm_t  *cf;

    cf = ngx_http_linegate_confirm_of(ctx);

    if (ctx->state == NGX_HTTP_LINEGATE_CONFIRM_CUSTOMER) {
        ngx_http_linegate_confirm_checked(r, ctx, cf);

    } else {
        ngx_http_linegate_confirm_subscribed(r, ctx, cf);
    }
}


static void
ngx_http_linegate_confirm_checked(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, ngx_http_linegate_confirm_t *cf)
{
    const char                         *code;
    ngx_http_linegate_stripe_result_e   result;

    result = ngx_http_linegate_stripe_result(ctx);

    switch (result) {

    case NGX_HTTP_LINEGATE_STRIPE_OK:
        if (!ngx_http_linegate_confirm_has_card(ctx->stripe_json)) {
            ngx_http_linegate_confirm_no_card(r, ctx);
            return;
        }

        ngx_http_linegate_confirm_next(r, ctx,
                                       NGX_HTTP_LINEGATE_CONFIRM_SUBSCRIBE);
        return;

    case NGX_HTTP_LINEGATE_STRIPE_REFUSED:
        code = ngx_http_linegate_stripe_error_code(ctx);

        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      NGX_HTTP_LINEGATE_LOG "Stripe refused to read "
                      "customer \"%V\" of account \"%V\": %i %s",
                      &cf->customer, &cf->account, ctx->stripe_status,
                      code ? code : "-");

        /* a customer Stripe does not know has no card on file either */
        if (code != NULL && ngx_strcmp(code, "resource_missing") == 0) {
            ngx_http_linegate_confirm_no_card(r, ctx);
            return;
        }

        break;

    case NGX_HTTP_LINEGATE_STRIPE_RATE_LIMITED:
        /* 503 with Stripe's Retry-After, below */
        break;

    default: /* NGX_HTTP_LINEGATE_STRIPE_UNAVAILABLE */
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      NGX_HTTP_LINEGATE_LOG "Stripe unavailable reading "
                      "a customer: %i", ctx->stripe_status);
        break;
    }

    ngx_http_linegate_confirm_billing(r, ctx, result, NULL);
}


/* a default payment method (Stripe's current way) or a default source */
static ngx_uint_t
ngx_http_linegate_confirm_has_card(json_t *customer)
{
    json_t      *settings, *v;
    ngx_uint_t   i;

    if (json_is_true(json_object_get(customer, "deleted"))) {
        return 0;
    }

    settings = json_object_get(customer, "invoice_settings");

    for (i = 0; i < 2; i++) {
        v = i ? json_object_get(customer, "default_source")
              : json_object_get(settings, "default_payment_method");

        /* an id, or the object itself when expanded */
        if (json_is_object(v)
            || (json_is_string(v) && json_string_length(v) > 0))
        {
            return 1;
        }
    }

    return 0;
}


/* SUBSCRIBE */

static ngx_int_t
ngx_http_linegate_confirm_subscribe(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, ngx_http_linegate_confirm_t *cf)
{
    ngx_int_t  rc;
    ngx_str_t  path = ngx_string("v1/subscriptions");

    rc = ngx_http_linegate_stripe_call(r, ctx, NGX_HTTP_POST, &path,
                                       &cf->form, &cf->idempotency_key,
                                       ngx_http_linegate_confirm_stripe_done);
    if (rc == NGX_OK) {
        cf->attempts++;
    }

    return rc;
}


static void
ngx_http_linegate_confirm_subscribed(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, ngx_http_linegate_confirm_t *cf)
{
    const char                         *type, *unknown;
    ngx_str_t                           id;
    ngx_http_linegate_stripe_result_e   result;

    result = ngx_http_linegate_stripe_result(ctx);
    type = ngx_http_linegate_stripe_error_field(ctx, "type");

    /*
     * 409: the first call is still running at Stripe, asked again a
     * little later; its outcome unknown once the waits are spent (and for
     * a 400 idempotency_error: the key met other parameters)
     */
    if (result == NGX_HTTP_LINEGATE_STRIPE_REFUSED && type != NULL
        && ngx_strcmp(type, "idempotency_error") == 0)
    {
        if (ctx->stripe_status == NGX_HTTP_CONFLICT
            && ngx_http_linegate_confirm_later(r, ctx, cf) == NGX_OK)
        {
            return;
        }

        result = NGX_HTTP_LINEGATE_STRIPE_UNAVAILABLE;
    }

    /* after a lost answer, anything but Stripe's own word stays unknown */
    unknown = cf->attempts > 1 ? "stripe_outcome_unknown" : NULL;

    switch (result) {

    case NGX_HTTP_LINEGATE_STRIPE_OK:
        if (ngx_http_linegate_json_str(ctx->stripe_json, "id", &id) != NGX_OK
            || !ngx_http_linegate_stripe_id_valid(&id))
        {
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          NGX_HTTP_LINEGATE_LOG "Stripe answered a "
                          "subscription without an id");
            ngx_http_linegate_confirm_billing(r, ctx, result,
                                              "stripe_outcome_unknown");
            return;
        }

        if (!ngx_http_linegate_confirm_live(ctx->stripe_json)) {
            /*
             * something was made that no line is given for: the run
             * finds it by its worker id and cancels it (refunding what
             * was paid)
             */
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          NGX_HTTP_LINEGATE_LOG "Stripe answered \"%V\" "
                          "for the subscription of %V, account \"%V\", "
                          "not an active subscription: queued",
                          &id, &cf->worker_id, &cf->account);
            ngx_http_linegate_confirm_billing(r, ctx,
                                        NGX_HTTP_LINEGATE_STRIPE_UNAVAILABLE,
                                        "stripe_outcome_unknown");
            return;
        }

        /* copied: a durable write may need it after the JSON is freed */
        if (ngx_http_linegate_pstr(r->pool, &cf->subscription, id.data,
                                   id.len)
            == NULL)
        {
            ngx_http_linegate_confirm_billing(r, ctx, result,
                                              "stripe_outcome_unknown");
            return;
        }

        ngx_http_linegate_confirm_next(r, ctx,
                                       NGX_HTTP_LINEGATE_CONFIRM_RECORD);
        return;

    case NGX_HTTP_LINEGATE_STRIPE_REFUSED:
        ngx_http_linegate_confirm_declined(r, ctx, cf);
        return;

    case NGX_HTTP_LINEGATE_STRIPE_RATE_LIMITED:
        ngx_http_linegate_confirm_billing(r, ctx, result, unknown);
        return;

    default: /* NGX_HTTP_LINEGATE_STRIPE_UNAVAILABLE */
        break;
    }

    ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                  NGX_HTTP_LINEGATE_LOG "no answer from Stripe to the "
                  "subscription of %V, account \"%V\" (%i), attempt %ui",
                  &cf->worker_id, &cf->account, ctx->stripe_status,
                  cf->attempts);

    if (cf->attempts < NGX_HTTP_LINEGATE_CONFIRM_TRIES) {
        /* same Idempotency-Key, same body: replayed if it was created */
        ngx_http_linegate_confirm_next(r, ctx,
                                       NGX_HTTP_LINEGATE_CONFIRM_SUBSCRIBE);
        return;
    }

    ngx_http_linegate_confirm_billing(r, ctx, result,
                                      "stripe_outcome_unknown");
}


/*
 * The subscription's call again after a wait (NGX_OK), or NGX_DECLINED
 * once the 409s allowed are spent. The request stays in SUBSCRIBE: if
 * it ends meanwhile, the cleanup treats it as a call that may have run.
 */
static ngx_int_t
ngx_http_linegate_confirm_later(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, ngx_http_linegate_confirm_t *cf)
{
    ngx_msec_t  delay;

    if (cf->busy >= NGX_HTTP_LINEGATE_CONFIRM_BUSY_TRIES) {
        return NGX_DECLINED;
    }

    delay = (ngx_msec_t) NGX_HTTP_LINEGATE_CONFIRM_BUSY_WAIT << cf->busy;
    cf->busy++;

    cf->wait.handler = ngx_http_linegate_confirm_wake;
    /* the debug log reads a timer's data as its connection */
    cf->wait.data = r->connection;
    cf->wait.log = r->connection->log;

    ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                  NGX_HTTP_LINEGATE_LOG "Stripe is still handling the "
                  "subscription of %V, account \"%V\" (409): asked again "
                  "in %M ms", &cf->worker_id, &cf->account, delay);

    ngx_add_timer(&cf->wait, delay);

    return NGX_OK;
}


/* the wait is over: the same call, same key and body, again */
static void
ngx_http_linegate_confirm_wake(ngx_event_t *ev)
{
    ngx_connection_t             *c;
    ngx_http_request_t           *r;
    ngx_http_linegate_confirm_t  *cf;

    cf = (ngx_http_linegate_confirm_t *)
             ((u_char *) ev - offsetof(ngx_http_linegate_confirm_t, wait));

    r = cf->request;
    c = r->connection;

    ngx_http_linegate_confirm_next(r, cf->ctx,
                                   NGX_HTTP_LINEGATE_CONFIRM_SUBSCRIBE);

    /* the call just made is a posted subrequest */
    ngx_http_run_posted_requests(c);
}


/*
 * A subscription the line is given for: its first invoice paid (active)
 * or nothing to pay yet (trialing). error_if_incomplete makes Stripe
 * answer 402 otherwise, but a 200 of another shape (incomplete, past due,
 * another object, no status: a proxy, an API change) must not become a
 * line nobody pays for.
 */
static ngx_uint_t
ngx_http_linegate_confirm_live(json_t *sub)
{
    const char  *object, *status;

    object = json_string_value(json_object_get(sub, "object"));
    status = json_string_value(json_object_get(sub, "status"));

    if (object != NULL && ngx_strcmp(object, "subscription") != 0) {
        return 0;
    }

    return status != NULL
           && (ngx_strcmp(status, "active") == 0
               || ngx_strcmp(status, "trialing") == 0);
}


/*
 * Stripe's own refusal. A decline (card_error) or a missing payment
 * source is the call's result, which Stripe replays for the same key:
 * nothing was created, whatever attempt this is. Any other refusal after
 * a lost answer says nothing of the first call: an authentication or
 * permission error (a key rolled or restricted between the two) is
 * decided before Stripe looks at the key, and a customer or price
 * deleted meanwhile fails the second call alone; the first may have
 * created the subscription, so its outcome stays unknown.
 */
static void
ngx_http_linegate_confirm_declined(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, ngx_http_linegate_confirm_t *cf)
{
    u_char      *msg;
    ngx_str_t    m;
    const char  *type, *code, *param;

    type = ngx_http_linegate_stripe_error_field(ctx, "type");
    code = ngx_http_linegate_stripe_error_code(ctx);
    param = ngx_http_linegate_stripe_error_field(ctx, "param");

    if (type != NULL && ngx_strcmp(type, "card_error") == 0) {
        /*
         * Stripe's message is passed on: copied, it outlives the JSON.
         * None, or an empty one, is a decline all the same: "" would
         * tell the client nothing (Sendblue's format has a message).
         */
        m.data = (u_char *) ngx_http_linegate_stripe_error_field(ctx,
                                                                "message");
        m.len = m.data ? ngx_strlen(m.data) : 0;

        msg = m.len ? ngx_pnalloc(r->pool, m.len + 1) : NULL;
        if (msg != NULL) {
            *ngx_cpymem(msg, m.data, m.len) = '\0';
        }

        ngx_http_linegate_confirm_fail(r, ctx,
                                       NGX_HTTP_LINEGATE_PAYMENT_REQUIRED,
                                       "payment_failed",
                                       msg ? (char *) msg
                                           : "Your card was declined.",
                                       NULL);
        return;
    }

    /* no card: "resource_missing" naming no parameter */
    if (code != NULL && ngx_strcmp(code, "resource_missing") == 0
        && param == NULL)
    {
        ngx_http_linegate_confirm_no_card(r, ctx);
        return;
    }

    /* a price or customer Stripe does not know: our configuration */
    ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                  NGX_HTTP_LINEGATE_LOG "Stripe refused the subscription of "
                  "account \"%V\": %i %s %s", &cf->account,
                  ctx->stripe_status, code ? code : "-",
                  param ? param : "-");

    ngx_http_linegate_confirm_billing(r, ctx,
                                      NGX_HTTP_LINEGATE_STRIPE_REFUSED,
                                      cf->attempts > 1
                                      ? "stripe_outcome_unknown" : NULL);
}


/* RECORD */

/* nothing allocated: also run from the cleanup */
static void
ngx_http_linegate_confirm_record_args(ngx_http_request_t *r,
    ngx_http_linegate_confirm_t *cf)
{
    ngx_http_linegate_redis_args_t  *a;

    a = ngx_http_linegate_confirm_args(cf);
    ngx_memcpy(cf->at, cf->iso, NGX_HTTP_LINEGATE_ISO_LEN);

    ngx_http_linegate_redis_arg_strs(a, cf->akeys,
                                     NGX_HTTP_LINEGATE_KEYS_PV_PURCHASE);
    ngx_http_linegate_redis_arg_str(a, &cf->worker_id);
    ngx_http_linegate_redis_arg_str(a, &cf->subscription);
    ngx_http_linegate_confirm_arg_int(cf, 0, cf->now);
    ngx_http_linegate_redis_arg_str(a, &cf->account);
    ngx_http_linegate_redis_arg_str(a, &cf->idempotency_key);
    ngx_http_linegate_redis_arg_str(a, &cf->customer);
    ngx_http_linegate_redis_arg(a, cf->at, NGX_HTTP_LINEGATE_ISO_LEN);
    ngx_http_linegate_redis_arg_str(a, &cf->number);
}


static ngx_int_t
ngx_http_linegate_confirm_record(ngx_http_request_t *r,
    ngx_http_linegate_confirm_t *cf)
{
    ngx_http_linegate_confirm_record_args(r, cf);

    return ngx_http_linegate_confirm_script(r, cf,
                                            NGX_HTTP_LINEGATE_SCRIPT_PV_RECORD,
                                            NGX_HTTP_LINEGATE_KEYS_PV_RECORD);
}


static void
ngx_http_linegate_confirm_recorded(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, ngx_http_linegate_confirm_t *cf,
    redisReply *reply)
{
    int64_t    done;
    ngx_str_t  reason;

    if (reply != NULL && ngx_http_linegate_reply_int(reply, 0, &done) == NGX_OK)
    {
        if (done == 1) {
            /* the line holds the number: the claim goes */
            cf->status = NGX_HTTP_OK;
            ngx_http_linegate_confirm_next(r, ctx,
                                           NGX_HTTP_LINEGATE_CONFIRM_SETTLE);
            return;
        }

        /* charged but not recorded: the script wrote the outbox */
        if (ngx_http_linegate_reply_str(reply, 1, &reason) == NGX_OK
            && reason.len == sizeof("record_failed") - 1
            && ngx_strncmp(reason.data, "record_failed", reason.len) == 0)
        {
            /* the reservation is kept: the entry holds the number */
            cf->reconcile = "record_failed";

        } else {
            /* nothing holds the number but the claim: it returns */
            cf->reconcile = "reservation_missing";
            cf->giveback = 1;
        }

        cf->queued = 1;

        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      NGX_HTTP_LINEGATE_LOG "subscription %V of account "
                      "\"%V\" (%V) not recorded (%s): queued for "
                      "reconciliation", &cf->subscription, &cf->account,
                      &cf->worker_id, cf->reconcile);

        cf->status = NGX_HTTP_INTERNAL_SERVER_ERROR;
        cf->code = "provisioning_failed";

        ngx_http_linegate_confirm_next(r, ctx,
                                       NGX_HTTP_LINEGATE_CONFIRM_SETTLE);
        return;
    }

    /*
     * No answer (or a script error): the record may or may not have run.
     * It is re-sent until Redis answers: it records the line, or writes
     * the outbox, once; its answer then settles the claim (a durable
     * SETTLE, ngx_http_linegate_confirm_recorded_late()).
     */
    ngx_http_linegate_confirm_record_args(r, cf);

    if (ngx_http_linegate_confirm_durable(cf,
                                          NGX_HTTP_LINEGATE_SCRIPT_PV_RECORD,
                                          "the record of a paid line")
        == NGX_OK)
    {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      NGX_HTTP_LINEGATE_LOG "subscription %V of "
                      "account \"%V\" (%V, number %V) not recorded yet: "
                      "the record is re-sent until Redis answers",
                      &cf->subscription, &cf->account, &cf->worker_id,
                      &cf->number);

    } else {
        /* the last place this purchase is written down */
        ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                      NGX_HTTP_LINEGATE_LOG "subscription %V of account "
                      "\"%V\" (%V, number %V) was created but could be "
                      "neither recorded nor queued for reconciliation",
                      &cf->subscription, &cf->account, &cf->worker_id,
                      &cf->number);
    }

    cf->settled = 1;
    cf->status = NGX_HTTP_INTERNAL_SERVER_ERROR;
    cf->code = "provisioning_failed";

    ngx_http_linegate_confirm_next(r, ctx, NGX_HTTP_LINEGATE_CONFIRM_DONE);
}


/* RELEASE */

/* nothing allocated: also run from the cleanup */
static void
ngx_http_linegate_confirm_release_args(ngx_http_request_t *r,
    ngx_http_linegate_confirm_t *cf)
{
    ngx_http_linegate_redis_args_t  *a;
    ngx_http_linegate_main_conf_t   *lmcf;

    lmcf = ngx_http_get_module_main_conf(r, ngx_http_linegate_module);

    a = ngx_http_linegate_confirm_args(cf);
    ngx_memcpy(cf->at, cf->iso, NGX_HTTP_LINEGATE_ISO_LEN);

    ngx_http_linegate_redis_arg_strs(a, cf->akeys,
                                     NGX_HTTP_LINEGATE_KEYS_PV_PURCHASE);
    ngx_http_linegate_redis_arg_str(a, &cf->worker_id);
    ngx_http_linegate_confirm_arg_int(cf, 0, cf->now);
    ngx_http_linegate_confirm_arg_int(cf, 1, lmcf->prov_daily);
    ngx_http_linegate_confirm_arg_int(cf, 2, lmcf->prov_monthly);
    ngx_http_linegate_redis_arg_cstr(a, cf->reconcile ? cf->reconcile : "");
    ngx_http_linegate_redis_arg_str(a, &cf->account);
    ngx_http_linegate_redis_arg_str(a, &cf->idempotency_key);
    ngx_http_linegate_redis_arg_str(a, &cf->customer);
    ngx_http_linegate_redis_arg(a, cf->at, NGX_HTTP_LINEGATE_ISO_LEN);
    ngx_http_linegate_redis_arg_str(a, &cf->number);
}


static ngx_int_t
ngx_http_linegate_confirm_release(ngx_http_request_t *r,
    ngx_http_linegate_confirm_t *cf)
{
    ngx_http_linegate_confirm_release_args(r, cf);

    return ngx_http_linegate_redis_script(r,
                                          NGX_HTTP_LINEGATE_SCRIPT_PV_RELEASE,
                                          NGX_HTTP_LINEGATE_KEYS_PV_RELEASE,
                                          &cf->args,
                                          ngx_http_linegate_confirm_stored);
}


static void
ngx_http_linegate_confirm_released(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, ngx_http_linegate_confirm_t *cf,
    redisReply *reply)
{
    int64_t  released, line;

    if (reply == NULL
        || ngx_http_linegate_reply_int(reply, 0, &released) != NGX_OK)
    {
        /* re-sent until Redis answers: released (and written) once */
        ngx_http_linegate_confirm_release_args(r, cf);

        if (ngx_http_linegate_confirm_durable(cf,
                                          NGX_HTTP_LINEGATE_SCRIPT_PV_RELEASE,
                                          "a reservation's release")
            == NGX_OK)
        {
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          NGX_HTTP_LINEGATE_LOG "reservation %V of account "
                          "\"%V\" (number %V) not released yet: the release "
                          "%s%sis re-sent until Redis answers",
                          &cf->worker_id, &cf->account, &cf->number,
                          cf->reconcile ? "and its queuing: " : "",
                          cf->reconcile ? cf->reconcile : "");

        } else {
            /* an operator finds it as lg:{acct:<A>}:resv:<worker id> */
            ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                          NGX_HTTP_LINEGATE_LOG "reservation %V of account "
                          "\"%V\" (number %V) could not be released%s%s",
                          &cf->worker_id, &cf->account, &cf->number,
                          cf->reconcile ? " nor queued: " : "",
                          cf->reconcile ? cf->reconcile : "");
        }

        /* its answer settles the claim (released_late) */
        cf->settled = 1;
        ngx_http_linegate_confirm_next(r, ctx,
                                       NGX_HTTP_LINEGATE_CONFIRM_DONE);
        return;
    }

    if (reply->elements > NGX_HTTP_LINEGATE_PV_ACCOUNT) {
        /* the answer's RateLimit headers count the freed slot */
        (void) ngx_http_linegate_pv_state(r, ctx, reply, cf->now, &cf->st);
    }

    /* a line recorded for this worker (never, here) keeps its number */
    if (ngx_http_linegate_reply_int(reply, NGX_HTTP_LINEGATE_PV_EXTRA, &line)
        != NGX_OK)
    {
        line = 0;
    }

    /* an intent holds no number */
    cf->giveback = (line == 0 && cf->number.len);
    cf->queued = cf->reconcile != NULL;

    if (cf->claim.len == 0) {
        /* no claim known: nothing to settle (or the sweep's) */
        cf->settled = 1;
        ngx_http_linegate_confirm_next(r, ctx,
                                       NGX_HTTP_LINEGATE_CONFIRM_DONE);
        return;
    }

    ngx_http_linegate_confirm_next(r, ctx, NGX_HTTP_LINEGATE_CONFIRM_SETTLE);
}


/* SETTLE */

/* nothing allocated: also run from the cleanup */
static void
ngx_http_linegate_confirm_settle_args(ngx_http_request_t *r,
    ngx_http_linegate_confirm_t *cf)
{
    ngx_http_linegate_pv_settle_t  st;

    ngx_memzero(&st, sizeof(ngx_http_linegate_pv_settle_t));

    st.claim = cf->claim;
    st.giveback = cf->giveback;
    st.room = cf->qkey.data;
    st.entry.account = cf->account;
    st.entry.subscription = cf->subscription;
    st.entry.number = cf->number;
    st.entry.worker_id = cf->worker_id;
    st.entry.idempotency_key = cf->idempotency_key;
    st.entry.customer = cf->customer;
    st.entry.at.data = cf->at;
    st.entry.at.len = NGX_HTTP_LINEGATE_ISO_LEN;

    if (cf->reconcile != NULL) {
        st.entry.reason.data = (u_char *) cf->reconcile;
        st.entry.reason.len = ngx_strlen(cf->reconcile);
    }

    ngx_http_linegate_pv_settle_args(ngx_http_linegate_confirm_args(cf),
                                     &st);
}


/*
 * Where an entry's field is among a durable script's arguments: its
 * ARGV[arg + 1], after the script's keys
 */
typedef struct {
    ngx_uint_t                      arg;
    size_t                          field;   /* in the entry */
} ngx_http_linegate_confirm_arg_t;


#define ngx_http_linegate_confirm_field(arg, name)                           \
    { arg, offsetof(ngx_http_linegate_pv_entry_t, name) }

#define ngx_http_linegate_confirm_nfields(fields)                            \
    (sizeof(fields) / sizeof(ngx_http_linegate_confirm_arg_t))

/* confirm_record_args()'s order */
static ngx_http_linegate_confirm_arg_t
    ngx_http_linegate_confirm_record_fields[] =
{
    ngx_http_linegate_confirm_field(0, worker_id),
    ngx_http_linegate_confirm_field(1, subscription),
    ngx_http_linegate_confirm_field(3, account),
    ngx_http_linegate_confirm_field(4, idempotency_key),
    ngx_http_linegate_confirm_field(5, customer),
    ngx_http_linegate_confirm_field(6, at),
    ngx_http_linegate_confirm_field(7, number)
};

/* confirm_release_args()'s order */
static ngx_http_linegate_confirm_arg_t
    ngx_http_linegate_confirm_release_fields[] =
{
    ngx_http_linegate_confirm_field(0, worker_id),
    ngx_http_linegate_confirm_field(4, reason),
    ngx_http_linegate_confirm_field(5, account),
    ngx_http_linegate_confirm_field(6, idempotency_key),
    ngx_http_linegate_confirm_field(7, customer),
    ngx_http_linegate_confirm_field(8, at),
    ngx_http_linegate_confirm_field(9, number)
};


/*
 * A settle's entry from a durable script's own (copied) arguments: nkeys
 * keys, then nargs arguments, or NGX_ERROR
 */
static ngx_int_t
ngx_http_linegate_confirm_entry_of(ngx_http_linegate_redis_args_t *a,
    int nkeys, int nargs, ngx_http_linegate_confirm_arg_t *fields,
    ngx_uint_t n, ngx_http_linegate_pv_settle_t *st)
{
    ngx_str_t                     *dst;
    ngx_uint_t                     i;
    ngx_http_linegate_pv_entry_t  *e;

    if (a->argc != nkeys + nargs) {
        return NGX_ERROR;
    }

    ngx_memzero(st, sizeof(ngx_http_linegate_pv_settle_t));
    e = &st->entry;

    for (i = 0; i < n; i++) {
        dst = (ngx_str_t *) ((u_char *) e + fields[i].field);
        dst->data = (u_char *) a->argv[nkeys + fields[i].arg];
        dst->len = a->argvlen[nkeys + fields[i].arg];
    }

    return NGX_OK;
}


/*
 * The durable RECORD (its answer was lost) is done: its answer says how
 * the claim settles, as confirm_recorded would have. Run by the worker,
 * the request may be long gone: everything comes from the record's own
 * arguments (copied), the next write is a durable SETTLE. With
 * linegate_redis_wait, "done" means a replica has the record too
 * (redis.c sends WAIT after a durable pv_record): the settle cannot
 * drop the claim of a line a failover would lose.
 */
static void
ngx_http_linegate_confirm_recorded_late(redisReply *reply,
    ngx_http_linegate_redis_args_t *rec, ngx_str_t *note)
{
    int64_t                         done;
    ngx_str_t                       reason;
    ngx_http_linegate_pv_settle_t   st;
    ngx_http_linegate_pv_entry_t   *e;

    /* pv_record's keys, then its arguments (confirm_record_args()) */
    if (ngx_http_linegate_confirm_entry_of(rec,
            NGX_HTTP_LINEGATE_KEYS_PV_RECORD, 8,
            ngx_http_linegate_confirm_record_fields,
            ngx_http_linegate_confirm_nfields(
                ngx_http_linegate_confirm_record_fields),
            &st)
        != NGX_OK)
    {
        return;
    }

    e = &st.entry;

    if (ngx_http_linegate_reply_int(reply, 0, &done) != NGX_OK) {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      NGX_HTTP_LINEGATE_LOG "the claim of %V, account "
                      "\"%V\" (number %V) not settled: the reconciliation "
                      "sweep settles it", &e->worker_id, &e->account,
                      &e->number);
        return;
    }

    if (done != 1) {
        /* the outbox is written: the entry, queued now */
        if (ngx_http_linegate_reply_str(reply, 1, &reason) == NGX_OK
            && reason.len == sizeof("record_failed") - 1
            && ngx_strncmp(reason.data, "record_failed", reason.len) == 0)
        {
            ngx_str_set(&e->reason, "record_failed");

        } else {
            ngx_str_set(&e->reason, "reservation_missing");
            st.giveback = 1;
        }
    }

    ngx_http_linegate_confirm_settle_late(&st);
}


/*
 * The durable RELEASE (its answer was lost, or the request ended with a
 * purchase reserved) is done: only now does the claim (or the intent)
 * leave the journal, as confirm_released would settle it: a worker
 * dying before this leaves it for the sweep, which finds the
 * reservation by it. Everything comes from the release's own arguments
 * (confirm_release_args()).
 */
static void
ngx_http_linegate_confirm_released_late(redisReply *reply,
    ngx_http_linegate_redis_args_t *rel, ngx_str_t *note)
{
    int64_t                         line;
    ngx_http_linegate_pv_settle_t   st;
    ngx_http_linegate_pv_entry_t   *e;

    /* pv_release's keys, then its arguments (confirm_release_args()) */
    if (ngx_http_linegate_confirm_entry_of(rel,
            NGX_HTTP_LINEGATE_KEYS_PV_RELEASE, 10,
            ngx_http_linegate_confirm_release_fields,
            ngx_http_linegate_confirm_nfields(
                ngx_http_linegate_confirm_release_fields),
            &st)
        != NGX_OK)
    {
        return;
    }

    e = &st.entry;

    if (ngx_http_linegate_reply_int(reply, NGX_HTTP_LINEGATE_PV_EXTRA, &line)
        != NGX_OK)
    {
        /* whether a line holds the number is not known: the sweep's */
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      NGX_HTTP_LINEGATE_LOG "the claim of %V, account "
                      "\"%V\" not settled after its release: the "
                      "reconciliation sweep settles it", &e->worker_id,
                      &e->account);
        return;
    }

    /* RECORD never ran: no line holds the number, which returns */
    st.giveback = (line == 0 && e->number.len);

    ngx_http_linegate_confirm_settle_late(&st);
}


/*
 * The durable SETTLE of a late answer: the claim "<A> <worker>
 * <number>" (the intent "<A> <worker> -" without a number) and the
 * queued markers built on the stack from the entry (the entry's and the
 * other reason's: room for two)
 */
static void
ngx_http_linegate_confirm_settle_late(ngx_http_linegate_pv_settle_t *st)
{
    u_char                          *p;
    ngx_str_t                        number;
    ngx_http_linegate_redis_args_t   a;
    ngx_http_linegate_pv_entry_t    *e;
    u_char                           claim[512], room[1024];

    e = &st->entry;

    number = e->number;

    if (number.len == 0) {
        ngx_str_set(&number, "-");
    }

    if (e->account.len + 1 + e->worker_id.len + 1 + number.len
        > sizeof(claim)
        || ngx_http_linegate_pv_settle_room(&e->account, &e->worker_id,
                                            e->reason.len)
           > sizeof(room))
    {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      NGX_HTTP_LINEGATE_LOG "the claim of %V, account "
                      "\"%V\" not settled: the reconciliation sweep "
                      "settles it", &e->worker_id, &e->account);
        return;
    }

    p = ngx_sprintf(claim, "%V %V %V", &e->account, &e->worker_id, &number);
    st->claim.data = claim;
    st->claim.len = p - claim;
    st->room = room;

    ngx_http_linegate_redis_args_init(&a);
    ngx_http_linegate_pv_settle_args(&a, st);

    if (ngx_http_linegate_redis_durable(ngx_cycle->log,
                                        NGX_HTTP_LINEGATE_SCRIPT_PV_SETTLE,
                                        NGX_HTTP_LINEGATE_KEYS_PV_SETTLE,
                                        &a, "a claim's settlement")
        != NGX_OK)
    {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      NGX_HTTP_LINEGATE_LOG "claim \"%V\" not settled: the "
                      "reconciliation sweep settles it", &st->claim);
    }
}


/*
 * A purchase recorded (no reason to queue, no number to give back): all
 * pv_settle.lua would do is take the claim out of the journal, so a
 * plain ZREM in the fleet's slot does it (~1 us of Redis against ~10 us
 * for the script's call, a quarter of a purchase's scripts' time:
 * docs/performance.md); its integer answer settles as the script's
 * (confirm_settled). Every other settle, and the durable one after a
 * lost answer, is the script's.
 */
static ngx_int_t
ngx_http_linegate_confirm_settle(ngx_http_request_t *r,
    ngx_http_linegate_confirm_t *cf)
{
    ngx_http_linegate_redis_args_t  *a;

    if (cf->reconcile == NULL && !cf->giveback && cf->claim.len) {
        a = ngx_http_linegate_confirm_args(cf);

        ngx_http_linegate_redis_arg_cstr(a, "ZREM");
        ngx_http_linegate_redis_arg_str(a,
            ngx_http_linegate_key_fixed(NGX_HTTP_LINEGATE_KEY_PV_INFLIGHT));
        ngx_http_linegate_redis_arg_str(a, &cf->claim);

        return ngx_http_linegate_redis_command(r, a,
                   ngx_http_linegate_confirm_stored);
    }

    ngx_http_linegate_confirm_settle_args(r, cf);

    return ngx_http_linegate_redis_script(r,
                                          NGX_HTTP_LINEGATE_SCRIPT_PV_SETTLE,
                                          NGX_HTTP_LINEGATE_KEYS_PV_SETTLE,
                                          &cf->args,
                                          ngx_http_linegate_confirm_stored);
}


static void
ngx_http_linegate_confirm_settled(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, ngx_http_linegate_confirm_t *cf,
    redisReply *reply)
{
    int64_t  claimed;

    cf->settled = 1;

    /* the script's {claimed, queued}, or the plain ZREM's count */
    if (reply == NULL
        || (reply->type != REDIS_REPLY_INTEGER
            && ngx_http_linegate_reply_int(reply, 0, &claimed) != NGX_OK))
    {
        /* the purchase itself is written down: this is bookkeeping */
        ngx_http_linegate_confirm_settle_durable(r, cf);
    }

    ngx_http_linegate_confirm_next(r, ctx, NGX_HTTP_LINEGATE_CONFIRM_DONE);
}


/*
 * SETTLE as a durable write, when its arguments are known (a claim, and
 * the step before it answered, or could not have recorded a line); if
 * it cannot be queued, the claim is the sweep's.
 */
static void
ngx_http_linegate_confirm_settle_durable(ngx_http_request_t *r,
    ngx_http_linegate_confirm_t *cf)
{
    if (cf->claim.len == 0) {
        return;
    }

    ngx_http_linegate_confirm_settle_args(r, cf);

    if (ngx_http_linegate_confirm_durable(cf,
                                          NGX_HTTP_LINEGATE_SCRIPT_PV_SETTLE,
                                          "a claim's settlement")
        != NGX_OK)
    {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      NGX_HTTP_LINEGATE_LOG "claim \"%V\" not settled: the "
                      "reconciliation sweep settles it", &cf->claim);
    }
}


/*
 * Hand the script whose arguments are in cf->args to a durable write:
 * copied, re-sent until Redis answers, whatever becomes of the request.
 */
static ngx_int_t
ngx_http_linegate_confirm_durable(ngx_http_linegate_confirm_t *cf,
    ngx_http_linegate_script_id_e script, const char *what)
{
    int                               nkeys;
    ngx_http_linegate_redis_then_pt   then;

    switch (script) {

    case NGX_HTTP_LINEGATE_SCRIPT_PV_RECORD:
        nkeys = NGX_HTTP_LINEGATE_KEYS_PV_RECORD;
        break;

    case NGX_HTTP_LINEGATE_SCRIPT_PV_SETTLE:
        nkeys = NGX_HTTP_LINEGATE_KEYS_PV_SETTLE;
        break;

    default: /* NGX_HTTP_LINEGATE_SCRIPT_PV_RELEASE */
        nkeys = NGX_HTTP_LINEGATE_KEYS_PV_RELEASE;
        break;
    }

    /* a record's or release's answer decides its claim's settle */
    then = (cf->claim.len == 0) ? NULL
           : (script == NGX_HTTP_LINEGATE_SCRIPT_PV_RECORD)
           ? ngx_http_linegate_confirm_recorded_late
           : (script == NGX_HTTP_LINEGATE_SCRIPT_PV_RELEASE)
           ? ngx_http_linegate_confirm_released_late : NULL;

    if (ngx_http_linegate_redis_durable_then(ngx_cycle->log, script, nkeys,
                                             &cf->args, what, then)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    cf->durable = 1;

    return NGX_OK;
}


/*
 * The request ends. If it ends before the purchase was settled (the
 * client went away or reset its stream, the request was terminated with
 * a step in flight), what the step in flight leaves behind is settled by
 * durable writes: the intent dropped (nothing reserved yet), or the
 * reservation released (and the outbox written when Stripe may have
 * charged) and then the claim or the intent settled, or the paid line
 * recorded and then its claim settled, or the claim settled.
 */
static void
ngx_http_linegate_confirm_cleanup(void *data)
{
    ngx_http_linegate_confirm_t     *cf = data;

    const char                      *what;
    ngx_http_request_t              *r;
    ngx_http_linegate_ctx_t         *ctx;
    ngx_http_linegate_script_id_e    script;

    r = cf->request;
    ctx = cf->ctx;

    if (cf->wait.timer_set) {
        ngx_del_timer(&cf->wait);
    }

    /* before RESERVE nothing is held: the token is spent or not */
    if (cf->settled || ctx->state == NGX_HTTP_LINEGATE_CONFIRM_DONE
        || ctx->state == NGX_HTTP_LINEGATE_CONFIRM_AUTH
        || ctx->state == NGX_HTTP_LINEGATE_CONFIRM_TOKEN)
    {
        return;
    }

    switch (ctx->state) {

    case NGX_HTTP_LINEGATE_CONFIRM_INTENT:
        /* nothing reserved: the intent, if written, goes */
        script = NGX_HTTP_LINEGATE_SCRIPT_PV_SETTLE;
        break;

    case NGX_HTTP_LINEGATE_CONFIRM_RESERVE:
        if (!cf->reserving) {
            return;
        }

        /* the reserve may have run: undone, a no-op if it did not */
        script = NGX_HTTP_LINEGATE_SCRIPT_PV_RELEASE;
        break;

    case NGX_HTTP_LINEGATE_CONFIRM_SUBSCRIBE:
        /* Stripe may have created the subscription, unseen */
        cf->reconcile = "stripe_outcome_unknown";
        script = NGX_HTTP_LINEGATE_SCRIPT_PV_RELEASE;
        break;

    case NGX_HTTP_LINEGATE_CONFIRM_RECORD:
        script = NGX_HTTP_LINEGATE_SCRIPT_PV_RECORD;
        break;

    case NGX_HTTP_LINEGATE_CONFIRM_SETTLE:
        script = NGX_HTTP_LINEGATE_SCRIPT_PV_SETTLE;
        break;

    default: /* CLAIM, CUSTOMER, RELEASE */
        script = NGX_HTTP_LINEGATE_SCRIPT_PV_RELEASE;
        break;
    }

    cf->settled = 1;

    if (script == NGX_HTTP_LINEGATE_SCRIPT_PV_SETTLE) {
        ngx_http_linegate_confirm_settle_durable(r, cf);
        return;
    }

    if (script == NGX_HTTP_LINEGATE_SCRIPT_PV_RECORD) {
        ngx_http_linegate_confirm_record_args(r, cf);
        what = "the record of a paid line";

    } else {
        ngx_http_linegate_confirm_release_args(r, cf);
        what = "a reservation's release";
    }

    if (ngx_http_linegate_confirm_durable(cf, script, what) != NGX_OK) {
        ngx_log_error(NGX_LOG_ALERT, ngx_cycle->log, 0,
                      NGX_HTTP_LINEGATE_LOG "confirm %V of account \"%V\" "
                      "(number %V, subscription %V) ended unsettled and "
                      "%s could not be started", &cf->worker_id,
                      &cf->account, &cf->number, &cf->subscription, what);
        return;
    }

    ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                  NGX_HTTP_LINEGATE_LOG "confirm %V of account \"%V\" ended "
                  "before it was settled: %s%s%s is re-sent until Redis "
                  "answers", &cf->worker_id, &cf->account, what,
                  cf->reconcile ? ", queued as " : "",
                  cf->reconcile ? cf->reconcile : "");
}


/* every Redis step resumes here, as every Stripe step in stripe_done */
static void
ngx_http_linegate_confirm_stored(ngx_http_request_t *r, redisReply *reply)
{
    ngx_http_linegate_ctx_t      *ctx;
    ngx_http_linegate_confirm_t  *cf;

    ctx = ngx_http_linegate_get_ctx(r);
    cf = ngx_http_linegate_confirm_of(ctx);

    switch (ctx->state) {

    case NGX_HTTP_LINEGATE_CONFIRM_INTENT:
        ngx_http_linegate_confirm_intended(r, ctx, cf, reply);
        return;

    case NGX_HTTP_LINEGATE_CONFIRM_RESERVE:
        ngx_http_linegate_confirm_reserved(r, ctx, cf, reply);
        return;

    case NGX_HTTP_LINEGATE_CONFIRM_TOKEN:
        ngx_http_linegate_confirm_spent(r, ctx, cf, reply);
        return;

    case NGX_HTTP_LINEGATE_CONFIRM_CLAIM:
        ngx_http_linegate_confirm_claimed(r, ctx, cf, reply);
        return;

    case NGX_HTTP_LINEGATE_CONFIRM_RECORD:
        ngx_http_linegate_confirm_recorded(r, ctx, cf, reply);
        return;

    case NGX_HTTP_LINEGATE_CONFIRM_SETTLE:
        ngx_http_linegate_confirm_settled(r, ctx, cf, reply);
        return;

    default: /* NGX_HTTP_LINEGATE_CONFIRM_RELEASE */
        ngx_http_linegate_confirm_released(r, ctx, cf, reply);
        return;
    }
}


/* DONE */

static void
ngx_http_linegate_confirm_answer(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, ngx_http_linegate_confirm_t *cf)
{
    ngx_str_t                        empty;
    const char                      *message;
    ngx_http_linegate_json_write_t   jw;

    if (cf->store_failed) {
        ngx_http_linegate_store_unavailable(r);
        return;
    }

    if (cf->inventory_empty) {
        /* the RateLimit headers count the slot freed */
        ngx_str_null(&empty);

        if (ngx_http_linegate_pv_refuse(r, ctx,
                                        NGX_HTTP_SERVICE_UNAVAILABLE, &empty,
                                        &cf->st)
            != NGX_OK)
        {
            ngx_http_linegate_internal_error(r);
        }

        return;
    }

    (void) ngx_http_linegate_json_write_init(&jw, r->pool, 256);

    if (cf->status == NGX_HTTP_OK) {
        ngx_http_linegate_json_write_object(&jw);
        ngx_http_linegate_json_write_key(&jw, "status");
        ngx_http_linegate_json_write_cstr(&jw, "OK");
        ngx_http_linegate_json_write_key(&jw, "phone_number");
        ngx_http_linegate_json_write_str(&jw, cf->number.data,
                                         cf->number.len);
        ngx_http_linegate_json_write_key(&jw, "worker_id");
        ngx_http_linegate_json_write_str(&jw, cf->worker_id.data,
                                         cf->worker_id.len);
        ngx_http_linegate_json_write_key(&jw, "subscription_id");
        ngx_http_linegate_json_write_str(&jw, cf->subscription.data,
                                         cf->subscription.len);
        ngx_http_linegate_json_write_end(&jw, '}');

        ngx_http_linegate_send_jw(r, NGX_HTTP_OK, &jw);
        return;
    }

    if (cf->code != NULL && ngx_strcmp(cf->code, "provisioning_failed") == 0)
    {
        /* "queued" only when the entry is on lg:{fleet}:reconcile */
        ngx_str_set(&ctx->outcome, "provisioning_failed");

        message = cf->queued
                  ? "The line was paid for but could not be recorded; it "
                    "has been queued for reconciliation"
                  : cf->durable
                  ? "The line was paid for but the store did not answer; "
                    "the line will be recorded, or queued for "
                    "reconciliation, as soon as it does"
                  : "The line was paid for but could be neither recorded "
                    "nor queued for reconciliation; the operator has been "
                    "alerted";

        ngx_http_linegate_json_write_object(&jw);
        ngx_http_linegate_json_write_key(&jw, "status");
        ngx_http_linegate_json_write_cstr(&jw, "ERROR");
        ngx_http_linegate_json_write_key(&jw, "error");
        ngx_http_linegate_json_write_cstr(&jw, "provisioning_failed");
        ngx_http_linegate_json_write_key(&jw, "message");
        ngx_http_linegate_json_write_cstr(&jw, message);
        ngx_http_linegate_json_write_key(&jw, "subscription_id");
        ngx_http_linegate_json_write_str(&jw, cf->subscription.data,
                                         cf->subscription.len);
        ngx_http_linegate_json_write_end(&jw, '}');

        ngx_http_linegate_send_jw(r, NGX_HTTP_INTERNAL_SERVER_ERROR, &jw);
        return;
    }

    if (cf->retry_after >= 0) {
        ctx->retry_after = cf->retry_after;
    }

    ngx_http_linegate_error(r, cf->status, cf->code, cf->message);
}


/* helpers */

/* every Redis step starts from a fresh clock: cf->now and cf->iso */
static ngx_http_linegate_redis_args_t *
ngx_http_linegate_confirm_args(ngx_http_linegate_confirm_t *cf)
{
    cf->now = ngx_http_linegate_now_ms();
    (void) ngx_http_linegate_iso8601(cf->iso, cf->now);

    ngx_http_linegate_redis_args_init(&cf->args);

    return &cf->args;
}


/* a script of the confirm, its arguments in cf->args */
static ngx_int_t
ngx_http_linegate_confirm_script(ngx_http_request_t *r,
    ngx_http_linegate_confirm_t *cf, ngx_http_linegate_script_id_e script,
    int nkeys)
{
    return ngx_http_linegate_redis_script(r, script, nkeys, &cf->args,
                                          ngx_http_linegate_confirm_stored);
}


/* an integer argument, formatted in cf->nums[slot] (not in a pool) */
static void
ngx_http_linegate_confirm_arg_int(ngx_http_linegate_confirm_t *cf,
    ngx_uint_t slot, int64_t n)
{
    u_char  *last;

    last = ngx_sprintf(cf->nums[slot], "%L", n);
    ngx_http_linegate_redis_arg(&cf->args, cf->nums[slot],
                                last - cf->nums[slot]);
}


static ngx_int_t
ngx_http_linegate_confirm_copy(ngx_http_request_t *r, redisReply *reply,
    ngx_uint_t i, ngx_str_t *dst)
{
    ngx_str_t  s;

    if (ngx_http_linegate_reply_str(reply, i, &s) != NGX_OK || s.len == 0
        || ngx_http_linegate_pstr(r->pool, dst, s.data, s.len) == NULL)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}
