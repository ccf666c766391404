
/*
 * linegate: the Lines API (SPEC 2). Shared by the files of the endpoint
 * family: lines.c (dispatch, reads, rendering), line_create.c (POST
 * /api/line-requests and the invoice machine), line_manage.c
 * (payment_link, cancel), lines_request.c (what they share) and
 * idempotency.c. Each endpoint is an enum of steps below, kept in
 * ctx->state, with one resume switch in its file.
 */


#ifndef _NGX_HTTP_LINEGATE_LINES_H_INCLUDED_
#define _NGX_HTTP_LINEGATE_LINES_H_INCLUDED_


#include "ngx_http_linegate_module.h"
#include "ngx_http_linegate_auth.h"
#include "ngx_http_linegate_redis.h"
#include "ngx_http_linegate_keys.h"
#include "ngx_http_linegate_stripe.h"
#include "ngx_http_linegate_idempotency.h"
#include "ngx_http_linegate_json_write.h"
#include "ngx_http_linegate_str.h"
#include "ngx_http_linegate_lease.h"
#include "ngx_http_linegate_lines_cache.h"
#include "ngx_http_linegate_lr_setup.h"


/* first element of every Lines API script reply: see lua/include/lr_codes */
typedef enum {
    NGX_HTTP_LINEGATE_LR_RATE_LIMITED = -2,
    NGX_HTTP_LINEGATE_LR_UNAUTHORIZED = -1,
    NGX_HTTP_LINEGATE_LR_GATE_OK = 0,
    NGX_HTTP_LINEGATE_LR_OK = 1,
    NGX_HTTP_LINEGATE_LR_RESERVED = 2,
    NGX_HTTP_LINEGATE_LR_NOT_FOUND = 3,
    NGX_HTTP_LINEGATE_LR_SUBSCRIPTION = 4,
    NGX_HTTP_LINEGATE_LR_FORBIDDEN = 5,
    NGX_HTTP_LINEGATE_LR_READ_ONLY = 6,
    NGX_HTTP_LINEGATE_LR_PENDING = 7,
    NGX_HTTP_LINEGATE_LR_NO_CUSTOMER = 8,
    NGX_HTTP_LINEGATE_LR_REPLAY = 9,
    NGX_HTTP_LINEGATE_LR_IDEM_MISMATCH = 10,
    NGX_HTTP_LINEGATE_LR_IDEM_IN_USE = 11,
    NGX_HTTP_LINEGATE_LR_WRONG_STATE = 12,
    NGX_HTTP_LINEGATE_LR_BUSY = 13,
    NGX_HTTP_LINEGATE_LR_COLLISION = 14,
    NGX_HTTP_LINEGATE_LR_FENCED = 15
} ngx_http_linegate_lr_code_e;


/* lr->deferred: an error to answer once the credential is known good */
#define NGX_HTTP_LINEGATE_LR_DEFER_NONE   0
#define NGX_HTTP_LINEGATE_LR_DEFER_FIELD  1   /* 400 VALIDATION_ERROR */
#define NGX_HTTP_LINEGATE_LR_DEFER_PLAIN  2   /* 400 {"error"} */
#define NGX_HTTP_LINEGATE_LR_DEFER_INTERNAL  3  /* 500: memory ran out */

/* the ARGV[6] of a script: do the work, or only authenticate and count */
#define NGX_HTTP_LINEGATE_LR_WORK   0
#define NGX_HTTP_LINEGATE_LR_GATE   1

/* how long an invoice being reissued is left alone by other callers */
#define NGX_HTTP_LINEGATE_LR_REISSUE_HOLD  60000

#define NGX_HTTP_LINEGATE_LR_AWAITING  "awaiting_payment"

/* room for one line object, to start a writer without growing it */
#define NGX_HTTP_LINEGATE_LINE_JSON_SIZE  1024

/* by-user: the most line hashes read in one pipeline */
#define NGX_HTTP_LINEGATE_LIST_CHUNK  NGX_HTTP_LINEGATE_REDIS_MAX_PIPELINE

/*
 * by-user: the most members of lg:{ws:W}:lines one read of it asks for
 * beyond those of its first score already listed (a page), so that no
 * command of Redis grows with the failed lines a workspace keeps for
 * ever (SPEC 2.8 lists them: docs/data-model.md). A workspace
 * linegate_lines_cache keeps is read in one page.
 */
#define NGX_HTTP_LINEGATE_LIST_PAGE  256

#if (NGX_HTTP_LINEGATE_LIST_PAGE <= NGX_HTTP_LINEGATE_LINES_CACHE_LINES)
#error "by-user's page must hold a workspace linegate_lines_cache keeps"
#endif


/* a line request as stored (empty strings: unknown) */
typedef struct {
    ngx_str_t                       id;
    ngx_str_t                       workspace;
    ngx_str_t                       first_name;
    ngx_str_t                       last_name;
    ngx_str_t                       channel_type;
    ngx_str_t                       line_type;
    ngx_str_t                       phone;
    ngx_str_t                       email;
    ngx_str_t                       forward_calls_to;
    ngx_str_t                       profile_image_url;
    ngx_str_t                       zipcode;
    ngx_str_t                       state;
    ngx_str_t                       status;            /* provisioning */
    ngx_str_t                       payment_status;
    ngx_str_t                       payment_url;
    ngx_str_t                       invoice_id;
    ngx_str_t                       health_status;
    ngx_str_t                       health_checked_at;
    ngx_str_t                       created_at;
    ngx_str_t                       updated_at;
    ngx_str_t                       date;              /* UTC today */
    ngx_str_t                       usage_date;        /* '_ud' */
    ngx_str_t                       conversations;     /* its usage */
    ngx_str_t                       messages;
} ngx_http_linegate_line_t;


typedef struct ngx_http_linegate_lr_s  ngx_http_linegate_lr_t;


/*
 * The steps of the Lines endpoints, in ctx->state: each endpoint (or
 * small family) has its enum and one resume switch that every Redis and
 * Stripe callback of it enters; what a step learnt is in the state (the
 * reply, ctx->stripe_*, lr->invoice.result), what comes next is the step.
 */

/* lines.c: GET /api/line-requests/:id, by-user, check-availability */
typedef enum {
    NGX_HTTP_LINEGATE_READ_PIPELINE = 0, /* rate + hash, one write */
    NGX_HTTP_LINEGATE_READ_REVALIDATE,   /* the same + the key's entry */
    NGX_HTTP_LINEGATE_READ_SCRIPT,       /* lr_get.lua */
    NGX_HTTP_LINEGATE_READ_CLAIM,        /* lr_claim.lua: a check due */
    NGX_HTTP_LINEGATE_READ_STRIPE,       /* Stripe GET the invoice */
    NGX_HTTP_LINEGATE_READ_RESOLVE,      /* lr_resolve.lua */
    NGX_HTTP_LINEGATE_READ_LIST,         /* lr_list.lua: by-user's gate */
    NGX_HTTP_LINEGATE_READ_LIST_INDEX,   /* by-user: the index's pages */
    NGX_HTTP_LINEGATE_READ_LIST_LINES,   /* by-user: HGETALL of each */
    NGX_HTTP_LINEGATE_READ_CHECK         /* lr_get.lua (availability) */
} ngx_http_linegate_read_step_e;

/* line_manage.c: POST /api/line-requests/:id */
typedef enum {
    NGX_HTTP_LINEGATE_MANAGE_GATE = 0,   /* lr_manage.lua */
    /* payment_link */
    NGX_HTTP_LINEGATE_LINK_CHECK,        /* Stripe GET the invoice */
    NGX_HTTP_LINEGATE_LINK_ACK,          /* the open link's WAIT */
    NGX_HTTP_LINEGATE_LINK_RESOLVE,      /* lr_resolve.lua: paid */
    NGX_HTTP_LINEGATE_LINK_CLAIM,        /* lr_reissue_claim.lua */
    NGX_HTTP_LINEGATE_LINK_VOID_OLD,     /* Stripe void (uncollectible) */
    NGX_HTTP_LINEGATE_LINK_ABORT_RECHECK, /* lr_reissue_abort: look again */
    NGX_HTTP_LINEGATE_LINK_RECHECK,      /* the second look, the last */
    NGX_HTTP_LINEGATE_LINK_RECLAIM,
    NGX_HTTP_LINEGATE_LINK_REVOID_OLD,
    NGX_HTTP_LINEGATE_LINK_SWEEP,        /* Stripe: a lapsed claim's */
    NGX_HTTP_LINEGATE_LINK_SWEEP_FENCE,  /* lr_void_fence.lua, each */
    NGX_HTTP_LINEGATE_LINK_SWEEP_DISCARD, /* the invoice machine: discard */
    NGX_HTTP_LINEGATE_LINK_ISSUE,        /* the invoice machine: issue */
    NGX_HTTP_LINEGATE_LINK_INDEX,        /* SET lg:invoice:<new>, before */
    NGX_HTTP_LINEGATE_LINK_STORE,        /* lr_reissue_store.lua */
    NGX_HTTP_LINEGATE_LINK_STORE_AGAIN,  /* the same, durable */
    NGX_HTTP_LINEGATE_LINK_UNISSUE,      /* discard the new invoice */
    NGX_HTTP_LINEGATE_LINK_DISCARD,      /* discard it, store refused */
    NGX_HTTP_LINEGATE_LINK_ABORT,        /* lr_reissue_abort, durable */
    NGX_HTTP_LINEGATE_LINK_JOURNAL,      /* ZADD lg:{fleet}:lr:inflight */
    /* cancel */
    NGX_HTTP_LINEGATE_CANCEL_VOID,       /* Stripe void */
    NGX_HTTP_LINEGATE_CANCEL_CHECK,      /* Stripe GET: why refused */
    NGX_HTTP_LINEGATE_CANCEL_RESOLVE,    /* lr_resolve.lua */
    NGX_HTTP_LINEGATE_CANCEL_RELEASE,    /* lr_reissue_abort, durable */
    NGX_HTTP_LINEGATE_MANAGE_FAILED      /* the failure step's answer */
} ngx_http_linegate_manage_step_e;

/* line_create.c: POST /api/line-requests */
typedef enum {
    NGX_HTTP_LINEGATE_CREATE_SCRIPT = 0, /* lr_create.lua */
    NGX_HTTP_LINEGATE_CREATE_INDEX,      /* SET lg:line:<id>, before it */
    NGX_HTTP_LINEGATE_CREATE_ISSUE,      /* the invoice machine: issue */
    NGX_HTTP_LINEGATE_CREATE_INVOICE_INDEX, /* SET lg:invoice:<in>, before */
    NGX_HTTP_LINEGATE_CREATE_STORE,      /* lr_invoice_store.lua */
    NGX_HTTP_LINEGATE_CREATE_STORE_AGAIN, /* the same, durable */
    NGX_HTTP_LINEGATE_CREATE_RESOLVE,    /* lr_resolve.lua: paid at Stripe */
    NGX_HTTP_LINEGATE_CREATE_RESOLVE_AGAIN, /* the same, durable */
    NGX_HTTP_LINEGATE_CREATE_UNISSUE,    /* discard, billing failed; a paid
                                            invoice is kept */
    NGX_HTTP_LINEGATE_CREATE_DISCARD,    /* the invoice machine: discard */
    NGX_HTTP_LINEGATE_CREATE_RELEASE,    /* lr_release.lua, durable */
    NGX_HTTP_LINEGATE_CREATE_FAILED      /* the failure step's answer */
} ngx_http_linegate_create_step_e;

/* the invoice machine (line_create.c): lr->invoice.step */
typedef enum {
    NGX_HTTP_LINEGATE_INVOICE_DRAFT = 0, /* POST v1/invoices */
    NGX_HTTP_LINEGATE_INVOICE_ITEM,      /* POST v1/invoiceitems */
    NGX_HTTP_LINEGATE_INVOICE_FINALIZE,  /* POST .../finalize */
    NGX_HTTP_LINEGATE_INVOICE_REDRAFT,   /* the draft asked again: its id */
    NGX_HTTP_LINEGATE_INVOICE_VOID,      /* POST .../void */
    NGX_HTTP_LINEGATE_INVOICE_DELETE,    /* DELETE: a draft */
    NGX_HTTP_LINEGATE_INVOICE_CHECK,     /* GET: neither, paid? */
    NGX_HTTP_LINEGATE_INVOICE_DONE       /* lr->invoice.result says how */
} ngx_http_linegate_invoice_step_e;

/* who calls: the workspace is known, or an API key's to read first */
typedef enum {
    NGX_HTTP_LINEGATE_LR_CALLER_WS = 0,  /* the workspace is known */
    NGX_HTTP_LINEGATE_LR_CALLER_KEY      /* an API key to resolve */
} ngx_http_linegate_lr_caller_e;

/* what failed, for the failure step of an endpoint (lr->fail) */
typedef enum {
    NGX_HTTP_LINEGATE_LR_FAIL_NONE = 0,
    NGX_HTTP_LINEGATE_LR_FAIL_STORE,     /* 503: Redis did not answer */
    NGX_HTTP_LINEGATE_LR_FAIL_INTERNAL,  /* 500 */
    NGX_HTTP_LINEGATE_LR_FAIL_BILLING,   /* 502/503: lr->fail_result */
    NGX_HTTP_LINEGATE_LR_FAIL_CONFLICT,  /* 409: lr->line.status */
    NGX_HTTP_LINEGATE_LR_FAIL_BUSY       /* 409 awaiting, Retry-After */
} ngx_http_linegate_lr_fail_e;


/* an invoice being issued (create, reissue) or discarded */
typedef struct {
    ngx_http_linegate_invoice_step_e  step;
    ngx_str_t                       key;        /* Idempotency-Key prefix */
    ngx_str_t                       id;         /* in_..., once created */
    ngx_str_t                       url;        /* hosted_invoice_url */
    ngx_str_t                       status;     /* as Stripe last said */
    ngx_str_t                       form;       /* of the draft's POST */
    /* NGX_HTTP_LINEGATE_STRIPE_OK, or what the failing call came to */
    ngx_uint_t                      result;
    ngx_int_t                       retry_after;

    /*
     * The endpoint's Stripe hook (its resume switch), the same for every
     * call of the request: the machine's calls and its timer resume the
     * endpoint through it, which hands them back to invoice_next.
     */
    ngx_http_linegate_resume_pt     resume;

    /*
     * A repair call (the draft asked again, a void, a delete) that failed
     * without an answer is tried again after a short wait: tries so far,
     * since when, the timer (its expiry sends the step again; deleted by
     * the pool cleanup)
     */
    ngx_uint_t                      tries;
    ngx_msec_t                      since;      /* the first failure */
    ngx_http_request_t             *request;
    ngx_event_t                     timer;
    ngx_uint_t                      cleanup;

    /*
     * The void's Idempotency-Key suffix after lr->invoice.key: NULL for
     * "-void", a fresh one after a void answered a 5xx (invoice_void_key:
     * the machine's, a cancel's, payment_link's of an uncollectible one)
     */
    char                           *void_key;

    /*
     * discard: an invoice Stripe says is paid (neither voided nor
     * deleted: finalized at 0, its answer lost) is kept when the caller
     * can store it (keep), and the machine ends with kept and result OK
     */
    unsigned                        keep:1;
    unsigned                        kept:1;

    /*
     * The Unix ms from which the machine makes, fills or finalizes no
     * invoice (0: none), and late once it ended there (invoice_send). A
     * creation's: its reservation's time plus
     * linegate_reconcile_lost_after, or the 10 minutes after which
     * lr_create drops it as abandoned, the sooner. payment_link's
     * (reissue set): its claim's time plus its hold, after which another
     * payment_link may take the claim over and sweep
     */
    int64_t                         lost_at;
    unsigned                        late:1;
    unsigned                        reissue:1;

    /*
     * its finalize was sent: from then on the invoice may be paid (an
     * amount due of 0 is paid at finalization) whatever the request
     * learns of it (create_cleanup, link_cleanup)
     */
    unsigned                        finalized:1;
} ngx_http_linegate_invoice_t;


/*
 * A paid invoice of a request that the request does not name, found by
 * payment_link's sweep of a lapsed claim (line_manage.c: a cancel's and
 * a GET's too) or by a reconciliation run's reissue_lapsed entry
 * (reconcile.c): the lapsed claims' (the customer paid for this request:
 * adopted) or any other of the request's (its creation's, an earlier
 * reissue's, one made by hand: a human's). What it is read against, for
 * ngx_http_linegate_lines_lapsed_made(), the one rule of both.
 */
typedef struct {
    /* the named invoice's metadata[invoice_seq] (0: none, a creation's) */
    int64_t                         named_seq;
    /* the invoiceSeq of the latest claim that may have made it */
    int64_t                         last_seq;
    /* the claims' time (s): the earliest; the latest (0: none known) */
    time_t                          from;
    time_t                          to;
    /*
     * Stripe's 'created' of the named invoice: 0, unknown (one with no
     * invoice_seq is then never adopted over it); LAPSED_UNREAD, not
     * read yet (a run's FENCE, before NAMED reads it)
     */
    time_t                          named_at;
} ngx_http_linegate_lapsed_claims_t;

#define NGX_HTTP_LINEGATE_LAPSED_UNREAD  -1
/*
 * A paid invoice without metadata[invoice_seq] (an old node's reissue, a
 * rolling upgrade) is the lapsed claims' only if Stripe made it within
 * their time: from the earliest to the latest and its hold, give or take
 * this much (s) of Stripe's clock and of a dead worker's call in flight.
 * Adopting money is kept tighter than listing (the sweep's and the run's
 * LOOKBACK, LOOKAHEAD), where one too many costs nothing.
 */
#define NGX_HTTP_LINEGATE_LAPSED_SLACK   600


/*
 * an invoice the sweep found: its metadata[invoice_seq] (SEQ_NONE: none),
 * Stripe's 'created' (0: none), for a paid one's judgement
 */
typedef struct {
    ngx_str_t                       id;
    int64_t                         seq;
    time_t                          created;
} ngx_http_linegate_lr_found_t;


/*
 * payment_link over a lapsed claim (lr_reissue_claim): the invoices of
 * the request at Stripe that it does not name, made by a claim whose
 * worker died before its store, discarded before another is issued
 * (line_manage.c, LINK_SWEEP)
 */
typedef struct {
    ngx_array_t                    *found;      /* ..._lr_found_t:
                                                   to discard */
    ngx_uint_t                      next;       /* in found */
    ngx_str_t                       paid;       /* kept: the request's */
    ngx_str_t                       paid_url;
    ngx_str_t                       after;      /* the page's last */
    ngx_uint_t                      pages;
    int64_t                         from;       /* sweepFrom, ms (0: none) */
    int64_t                         to;         /* sweepTo, ms (0: none) */
    /*
     * what a paid invoice found is read against (link_made): the named
     * invoice as its check read it (link_named; not read: 0, none), the
     * claims before this one, which has made nothing yet, and their time
     */
    ngx_http_linegate_lapsed_claims_t  claims;
    unsigned                        lapsed:1;   /* the claim took one over */
    unsigned                        done:1;     /* discarded, or queued */
    unsigned                        adopting:1; /* paid being stored */
    unsigned                        fenced:1;   /* its store refused: the
                                                   invoice being voided */
    unsigned                        cancel:1;   /* a cancel's claim */
    unsigned                        cancel_paid:1; /* the invoice it names
                                                      paid: promoted */
    unsigned                        read:1;     /* a GET's claim (its
                                                   check found the invoice
                                                   named void): any failure
                                                   answers the stored state */
} ngx_http_linegate_lr_sweep_t;


/* the state of one Lines API request, in ctx->data */
struct ngx_http_linegate_lr_s {
    ngx_http_linegate_ctx_t        *ctx;
    ngx_pool_t                     *pool;       /* the request's: keys */
    ngx_http_linegate_principal_t   who;
    ngx_str_t                       ws;
    ngx_str_t                       id;

    int64_t                         now_ms;
    ngx_str_t                       now_iso;
    ngx_str_t                       date;          /* UTC today */

    /*
     * An error found before the caller is known (malformed body or id):
     * answered once the script has checked the credential, so that a bad
     * credential is always a 401.
     */
    ngx_uint_t                      deferred;
    const char                     *deferred_field;
    const char                     *deferred_message;

    /* the arguments must outlive the command (NOSCRIPT resends them) */
    ngx_http_linegate_redis_args_t  args;

    /*
     * POST on one Redis: the owner index's SET went in lr_create's write
     * (create_index); its answer is read when lr_create's comes
     */
    unsigned                        index_pending:1;
    unsigned                        index_lost:1;

    /*
     * GET by id: a reissue claim is in the hash (reissueAt, its check
     * due: past its hold, or released lapsed); what it left at Stripe is
     * not swept, so a void found is not canceled before the read swept
     * it (line_sweep, line_manage.c)
     */
    unsigned                        reissue_claim:1;
    /* a GET's sweep: the request as read, answered should the sweep fail */
    ngx_http_linegate_line_t        stored;

    /*
     * GET by id with a known workspace: its pipeline admitted the
     * request (rate_key, the workspace's GCRA key).
     */
    ngx_str_t                       rate_key;
    ngx_msec_t                      tx_sent;

    /*
     * linegate_workspace_rate lease=: the worker's lease of rate_key,
     * lease_seq its decision in this pipeline (0: a decision alone, or
     * none); leased: the lease admitted the request, the pipeline has no
     * EVALSHA
     */
    ngx_http_linegate_lease_t      *lease;
    ngx_uint_t                      lease_seq;
    ngx_uint_t                      leased;

    /*
     * idle: the lease's last decision is over (the key back to its full
     * burst), the pipeline admits with SET ... NX instead of rl_gcra;
     * busy: that SET found the key, the pipeline is sent again with it
     */
    unsigned                        idle:1;
    unsigned                        busy:1;
    ngx_uint_t                      idle_n;      /* what the SET admits */

    /*
     * GET by id with an expired cache entry of the key (READ_REVALIDATE):
     * the pipeline also reads lg:apikey:<key_digest> to check the entry's
     * workspace (then in who.value) with the store. resolved: the key
     * was read from its lookup (lines.c, before the endpoint's first
     * step), its workspace now in who.value; the scripts check that the
     * workspace still lists key_digest. lookups: how many times the
     * lookup was read (GET by id checks the first one in its pipeline,
     * as an expired entry; a second, after that check failed, goes the
     * script's way).
     */
    ngx_str_t                       key_digest;
    ngx_http_linegate_lr_caller_e   caller;
    ngx_uint_t                      resolved;
    ngx_uint_t                      lookups;

    /* the workspace's rate (lg_rl_gcra): what the request left */
    int64_t                         remaining;
    int64_t                         reset_ms;
    int64_t                         retry_ms;    /* refused: when to */

    ngx_http_linegate_line_t        line;
    ngx_uint_t                      action;

    /*
     * by-user with a known workspace: the page of the index read (the
     * keys of its requests' hashes, oldest first), how many asked so
     * far (a pipeline reads at most NGX_HTTP_LINEGATE_LIST_CHUNK), the
     * answer being written
     */
    ngx_str_t                      *list_keys;
    ngx_uint_t                      list_n;
    ngx_uint_t                      list_next;
    ngx_http_linegate_json_write_t  list_jw;
    /*
     * the index read a page at a time (LIST_PAGE; by score once the
     * first, read by ids alone, was full): pages read so far, whether
     * one more is due, whether pages come with their scores, the score
     * the next starts at (the last one read, inclusive) and the ids of
     * that score listed already (skipped by id, not by count: one
     * canceled in between leaves)
     */
    ngx_uint_t                      list_pages;
    ngx_uint_t                      list_more;
    ngx_uint_t                      list_scored;
    ngx_str_t                       list_from;
    ngx_str_t                      *list_ties;
    ngx_uint_t                      list_nties;
    /*
     * linegate_lines_cache: the hashes read tracked (one pipeline), what
     * the fill was sent under
     */
    ngx_uint_t                      list_tracked;
    ngx_msec_t                      list_sent;
    ngx_http_linegate_lines_cache_fill_t  list_fill;
    ngx_http_linegate_redis_pubsub_barrier_t  list_barrier;
    ngx_http_linegate_lines_cache_wait_t      list_wait;
    uint32_t                        list_crc;    /* of the index read */

    ngx_str_t                       customer;
    /*
     * POST: the member "<W> <id>" of the journal lg:{fleet}:lr:inflight
     * that lr_create's reservation may have (line_create.c); empty once
     * it is known not to be there, or its removal is sent. A reissue
     * claim's, "<W> <id> r<invoiceSeq>" (line_manage.c), written once the
     * claim is held and removed once its store or release answered
     */
    ngx_str_t                       journal;
    /*
     * a cluster: the member "<W> <id> <nonce>" of lg:{fleet}:lr:setup
     * written before a step that may promote the line (lr_setup.h), once
     * sent; removed, after the entry's relay or none, once it answered
     */
    ngx_str_t                       setup;
    /*
     * lr_resolve's handler (the endpoint's resume switch), while the
     * member is written before it (lines_resolve on a cluster)
     */
    ngx_http_linegate_redis_handler_pt  setup_resume;
    /*
     * lr_resolve was sent 'paid': a request it finds canceled on that
     * invoice is queued for a human (lines_paid_canceled)
     */
    unsigned                        resolve_paid:1;
    ngx_str_t                       seq;           /* invoiceSeq */
    ngx_str_t                       claim_by;      /* reissueBy */
    int64_t                         claim_ms;      /* its reissueAt */
    /* the step the claim goes on with once its journal member is written */
    ngx_uint_t                      claim_next;
    ngx_str_t                       old_invoice;
    ngx_http_linegate_invoice_t     invoice;
    ngx_http_linegate_lr_sweep_t    sweep;

    ngx_http_linegate_idem_t        idem;

    const char                     *durable;     /* what, for the log */

    /*
     * An add-on being billed (a reissue being issued): the release
     * (lr_release; lr_reissue_abort), ready to be sent durably by the
     * request's pool cleanup if the request is freed (terminated, a
     * draining worker's shutdown timeout) before its outcome is stored
     * or released (settled)
     */
    ngx_http_linegate_redis_args_t *release;
    ngx_uint_t                      settled;

    /* the answer, held while it is stored or while clean-up runs */
    ngx_uint_t                      status;
    ngx_http_linegate_lr_fail_e     fail;
    ngx_uint_t                      fail_result;   /* FAIL_BILLING: how */
    ngx_int_t                       fail_retry_after;
    ngx_str_t                       body;
};


/* lines.c */

/* the state of the request (ctx->data), from a Redis handler */
ngx_http_linegate_lr_t *ngx_http_linegate_lines_lr(ngx_http_request_t *r);

/* start a script with lr_gate's arguments (gate mode: an error deferred) */
void ngx_http_linegate_lines_args(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr);
/* run it; on failure to send, the 503 has been answered */
void ngx_http_linegate_lines_script(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, ngx_http_linegate_script_id_e script,
    ngx_http_linegate_redis_handler_pt handler);
/* start the arguments of a script of the line request: ws, id */
void ngx_http_linegate_lines_line_args(ngx_http_linegate_lr_t *lr);
/* a script's key, named by keys.c (see ngx_http_linegate_redis_arg_key) */
void ngx_http_linegate_lines_key(ngx_http_linegate_lr_t *lr,
    ngx_http_linegate_redis_args_t *a, ngx_http_linegate_key_e kind,
    ngx_str_t *id, ngx_str_t *id2);
/* a request's keys, ngx_http_linegate_key_request()'s, as script keys */
void ngx_http_linegate_lines_request_keys(ngx_pool_t *pool,
    ngx_http_linegate_redis_args_t *a, ngx_str_t *ws, ngx_str_t *id,
    ngx_str_t *digest);
/*
 * lr_release.lua's arguments, the one place they are built (a failed
 * creation's release, a reconciliation run's): mark_ms, how long the
 * release mark keeps a late lr_create from running
 */
void ngx_http_linegate_lines_release_args(ngx_http_request_t *r,
    ngx_http_linegate_redis_args_t *a, ngx_str_t *ws, ngx_str_t *id,
    ngx_str_t *digest, ngx_msec_t mark_ms);
/* run a script of lr->args; on failure to send, handler(r, NULL) */
void ngx_http_linegate_lines_call(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, ngx_http_linegate_script_id_e script,
    ngx_http_linegate_redis_handler_pt handler);
/*
 * A repair step that must reach Redis whatever becomes of the request
 * (an idempotent script of lr->args: the release of a failed creation,
 * an invoice stored again): handed to the durable writes, and sent for
 * the request too, whose step resumes the endpoint's switch through
 * handler (its Redis hook) once answered or not; the step then calls
 * lines_durable_done(), which logs a write left to the durable one.
 */
void ngx_http_linegate_lines_orphan(ngx_log_t *log,
    ngx_http_linegate_lr_t *lr);
/* the same from the strings alone (a durable write's continuation) */
void ngx_http_linegate_lines_orphan_of(ngx_log_t *log, ngx_str_t *ws,
    ngx_str_t *id, ngx_str_t *invoice, ngx_str_t *customer);
/*
 * A request that ended while it held a payment_link's claim (lr_settle
 * marked it sweepPending): queued as reissue_lapsed, its invoices looked
 * for from the ms in from on, until an hour after the ms in to (its
 * sweepPendingTo; empty: none known); the mark cleared once queued
 */
void ngx_http_linegate_lines_lapsed(ngx_log_t *log, ngx_str_t *ws,
    ngx_str_t *id, ngx_str_t *customer, ngx_str_t *from, ngx_str_t *to);
/*
 * A payment of the invoice a canceled request names (an uncollectible
 * one paid late): SPEC 2.3 has no way out of canceled, so it is queued
 * for a human (refund it, or give the line by hand) as paid_after_cancel,
 * once whoever sees it (the webhook, lr_resolve's callers): its marker
 * is lg:{fleet}:q:<W>:paid_<invoice id>, which never expires. A durable
 * write, whose answer is logged (warn when queued, notice when queued
 * before); the webhook sends its own, waited for before its 200
 * (webhook.c)
 */
#define NGX_HTTP_LINEGATE_LR_PAID_REASON  "paid_after_cancel"
#define NGX_HTTP_LINEGATE_LR_PAID_MARKER  "paid_"
void ngx_http_linegate_lines_paid_canceled(ngx_log_t *log, ngx_str_t *ws,
    ngx_str_t *id, ngx_str_t *invoice, ngx_str_t *customer);
/* the same for a flat hash read that holds sweepPending */
void ngx_http_linegate_lines_pending(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, redisReply *flat);
void ngx_http_linegate_lines_durable(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, ngx_http_linegate_script_id_e script,
    const char *what, ngx_http_linegate_redis_handler_pt handler);
/* the same, then called with the durable write's own answer */
void ngx_http_linegate_lines_durable_then(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, ngx_http_linegate_script_id_e script,
    const char *what, ngx_http_linegate_redis_then_pt then,
    ngx_http_linegate_redis_handler_pt handler);
void ngx_http_linegate_lines_durable_done(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, redisReply *reply);

/*
 * The pool cleanup of a request freed (a draining worker's shutdown
 * timeout) while Stripe bills it: no step runs any more, so its release
 * (lr->release, lr_release's, prepared with the claim) goes to the
 * durable writes; an invoice already made (nothing can ask Stripe from
 * here) is queued for a reconciliation run once the release answered
 * that no request holds it (its store, in flight, may have run first).
 * doing names the step for the log, what the durable write.
 */
/*
 * Argument i of a durable write's copied arguments (KEYS first), for its
 * continuation (ngx_http_linegate_redis_then_pt)
 */
void ngx_http_linegate_lines_arg(ngx_http_linegate_redis_args_t *a, int i,
    ngx_str_t *s);
void ngx_http_linegate_lines_ended(ngx_http_linegate_lr_t *lr,
    ngx_http_linegate_script_id_e script, const char *doing,
    const char *what);
/* lines_invoice_seq: no metadata[invoice_seq], or one not a count */
#define NGX_HTTP_LINEGATE_INVOICE_SEQ_NONE  -1
#define NGX_HTTP_LINEGATE_INVOICE_SEQ_BAD   -2
/*
 * A Lines invoice's metadata[invoice_seq]: the invoiceSeq of the reissue
 * claim that made it (line_create.c, invoice_metadata); SEQ_NONE when it
 * has none (a creation's, one made by hand or before the field was),
 * SEQ_BAD when it is there and not a count
 */
int64_t ngx_http_linegate_lines_invoice_seq(json_t *inv);
/* a Stripe object's 'created' (0: none, or not a time) */
time_t ngx_http_linegate_lines_created(json_t *obj);
/*
 * Whether a paid invoice (its metadata[invoice_seq] seq, Stripe's
 * 'created') is the lapsed claims' (ngx_http_linegate_lapsed_claims_t):
 * NULL, or why not, for the log. payment_link's sweep and a run's
 * reissue_lapsed both ask it, so that they never judge one invoice
 * differently
 */
const char *ngx_http_linegate_lines_lapsed_made(
    ngx_http_linegate_lapsed_claims_t *c, int64_t seq, time_t created);
/*
 * A paid invoice of the request that payment_link's sweep does not adopt
 * (no lapsed claim made it, or another paid one is kept): queued for a
 * human as invoice_unrepaired under its marker lg:{fleet}:q:<W>:inv_<in>,
 * so once per invoice whatever sweep finds it again, and logged at warn
 * only when queued now. A durable write
 */
void ngx_http_linegate_lines_left_paid(ngx_log_t *log,
    ngx_http_linegate_lr_t *lr, ngx_str_t *invoice);
/*
 * The webhook index of an invoice, lg:invoice:<invoice> -> "<ws>:<id>"
 * (its own slot): "SET" into a, or "DEL" when ws is NULL; the strings in
 * pool. Written before the step that makes a request name the invoice
 * (docs/data-model.md, "Scripts and slots").
 */
ngx_int_t ngx_http_linegate_lines_invoice_index(ngx_pool_t *pool,
    ngx_str_t *invoice, ngx_str_t *ws, ngx_str_t *id,
    ngx_http_linegate_redis_args_t *a);
/*
 * The step before a store names lr->invoice.id (creation, payment_link):
 * its index's SET, sent (handler gets the answer), answered OK before the
 * store goes. FAIL_NONE: sent / OK; else what failed, for the endpoint's
 * failure step (the store is then never sent: nothing names the invoice).
 */
ngx_http_linegate_lr_fail_e ngx_http_linegate_lines_invoice_index_send(
    ngx_http_request_t *r, ngx_http_linegate_lr_t *lr,
    ngx_http_linegate_redis_handler_pt handler);
ngx_http_linegate_lr_fail_e ngx_http_linegate_lines_invoice_indexed(
    ngx_http_request_t *r, ngx_http_linegate_lr_t *lr, redisReply *reply);
/*
 * The index's durable DEL, once no request names the invoice (its store
 * refused it, or was never sent)
 */
void ngx_http_linegate_lines_invoice_unindex(ngx_http_request_t *r,
    ngx_str_t *invoice);
/*
 * A cluster: the set-up entry of the line lr holds (workspace ws) relayed
 * to lg:provisioning, durably, its member lr->setup removed once it is
 * there; lr->setup is the relay's from then on (emptied)
 */
void ngx_http_linegate_lines_setup_relay(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, ngx_str_t *ws);
/* the durable DEL of a line request's owner index lg:line:<id> */
void ngx_http_linegate_line_unindex(ngx_http_request_t *r, ngx_str_t *id);
/* answers 401 {"error":"Unauthorized"}: an unknown or revoked API key */
void ngx_http_linegate_lines_unauthorized(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr);
/*
 * The common head of a reply: answers 503/401/429 itself (NGX_DONE), or
 * answers a deferred error (NGX_DONE), else returns the code and sets
 * lr->ws and the RateLimit headers.
 */
ngx_int_t ngx_http_linegate_lines_gate(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, redisReply *reply);
/*
 * The caller is known (workspace ws) and its rate decided: the RateLimit
 * headers, then the 429 or a deferred error (NGX_DONE), or code (the GET
 * by id's pipeline decides the rate without the gate).
 */
ngx_int_t ngx_http_linegate_lines_admit(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, int64_t code, ngx_str_t *ws);

ngx_int_t ngx_http_linegate_line_parse(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, redisReply *flat,
    ngx_http_linegate_line_t *line);
/* the same, the line's strings pointing into flat (not copied) */
ngx_int_t ngx_http_linegate_line_view(ngx_http_linegate_lr_t *lr,
    redisReply *flat, ngx_http_linegate_line_t *line);
/* a usage counter of the line's hash, 0 when absent or not a number */
json_int_t ngx_http_linegate_line_count(ngx_str_t *s);
/* the line's usage and healthCheck objects (SPEC 2.8, 2.9) */
void ngx_http_linegate_line_usage_jw(ngx_http_linegate_json_write_t *jw,
    ngx_http_linegate_line_t *line);
void ngx_http_linegate_line_health_jw(ngx_http_linegate_json_write_t *jw,
    ngx_http_linegate_line_t *line);
/* SPEC 2.8: the line object */
void ngx_http_linegate_line_jw(ngx_http_linegate_json_write_t *jw,
    ngx_http_request_t *r, ngx_http_linegate_line_t *line);
/* SPEC 2.5: the request's state with its line (also 2.4's 201 bodies) */
void ngx_http_linegate_line_status_jw(ngx_http_linegate_json_write_t *jw,
    ngx_http_request_t *r, ngx_http_linegate_line_t *line);
/* the same, answered with a 200 */
void ngx_http_linegate_lines_send_status(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr);
/* the same, serialized in r's pool (the bytes idempotency stores) */
ngx_int_t ngx_http_linegate_line_status_body(ngx_http_request_t *r,
    ngx_http_linegate_line_t *line, ngx_str_t *body);
ngx_int_t ngx_http_linegate_line_is(ngx_str_t *value, const char *s);

/*
 * answers {"success": false, "status": state, "message": message}, and
 * "redirect": redirect when not NULL
 */
void ngx_http_linegate_lines_refusal(ngx_http_request_t *r,
    ngx_uint_t status, ngx_str_t *state, const char *message,
    const char *redirect);
/* answers 403, the workspace has no base plan */
void ngx_http_linegate_lines_subscription_required(ngx_http_request_t *r);
void ngx_http_linegate_lines_read_only(ngx_http_request_t *r,
    redisReply *reply, ngx_uint_t i);
void ngx_http_linegate_lines_not_found(ngx_http_request_t *r);
void ngx_http_linegate_lines_billing_error(ngx_http_request_t *r,
    ngx_uint_t result, ngx_int_t retry_after);
/*
 * the answer of a failure step's end, common to creation and management:
 * lr->fail BILLING (lr->fail_result, fail_retry_after), STORE, or else a
 * 500; management answers its own CONFLICT and BUSY first
 */
void ngx_http_linegate_lines_failed(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr);

/* parse ctx->raw into ctx->body; NGX_ERROR: an error is deferred */
ngx_int_t ngx_http_linegate_lines_parse(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr);
/* the first error wins; field NULL with kind PLAIN: {"error"} only */
void ngx_http_linegate_lines_defer(ngx_http_linegate_lr_t *lr,
    ngx_uint_t kind, const char *field, const char *message);

/* apply Stripe's news of lr->line.invoice_id ("paid", "void") */
void ngx_http_linegate_lines_resolve(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, const char *outcome,
    ngx_http_linegate_redis_handler_pt handler);
/*
 * read lr_resolve's reply into lr->line: NGX_OK, NGX_DECLINED (the
 * request is gone: 404), or NGX_ERROR (an answer not understood, or no
 * memory: logged, 500)
 */
ngx_int_t ngx_http_linegate_lines_resolved(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, redisReply *reply);

/*
 * read an invoice answer of Stripe into lr->invoice (id, url, status);
 * NGX_ERROR, lr->invoice untouched, when it is another object or, expect
 * given and not empty, another invoice than expect
 */
ngx_int_t ngx_http_linegate_lines_invoice_read(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, ngx_str_t *expect);
/* GET of lr->line.invoice_id: how the line's invoice stands at Stripe */
ngx_int_t ngx_http_linegate_lines_invoice_get(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, ngx_http_linegate_resume_pt resume);
ngx_int_t ngx_http_linegate_lines_stripe(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, ngx_uint_t method, const char *path,
    ngx_str_t *id, const char *suffix, ngx_str_t *form, const char *key,
    ngx_http_linegate_resume_pt resume);


/* line_create.c */

void ngx_http_linegate_line_create(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr);
/*
 * The invoice machine, driven by the endpoint's switch in its invoice
 * steps (it calls nothing above itself). issue: draft invoice, its one
 * item at the channel's price, finalize; Stripe Idempotency-Keys are
 * lr->invoice.key + "-invoice", "-item", "-finalize". discard: void
 * lr->invoice.id, or delete it while a draft (tried again later); if
 * neither is allowed, GET it: paid, it is kept when keep (kept, result
 * OK), else queued as an orphan like any it could not discard. Each
 * Stripe call resumes the endpoint through resume (its Stripe hook); the
 * endpoint then hands the answer to invoice_next. All three return
 * NGX_AGAIN (a call or a wait in flight: the endpoint returns) or
 * NGX_DONE (the machine ended, lr->invoice.result set: for a discard,
 * OK once voided, deleted or kept; else it was queued, still payable).
 */
ngx_int_t ngx_http_linegate_invoice_issue(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, ngx_http_linegate_resume_pt resume);
ngx_int_t ngx_http_linegate_invoice_discard(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, ngx_http_linegate_resume_pt resume,
    ngx_uint_t keep);
/* lr->invoice.void_key: a fresh key for a void that answered a 5xx */
ngx_int_t ngx_http_linegate_invoice_void_key(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr);
ngx_int_t ngx_http_linegate_invoice_next(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr);
/*
 * The age (ms) at which lr_create drops a reservation without an invoice
 * as abandoned: 10 minutes, plus the time the last finalize its creation
 * may have sent takes to be answered and stored
 */
int64_t ngx_http_linegate_create_stale(ngx_http_linegate_main_conf_t *lmcf);


/* line_manage.c */

void ngx_http_linegate_line_manage(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr);
/*
 * GET by id whose check found the invoice the request names void or
 * uncollectible while a lapsed reissue claim is in the hash: the sweep
 * of payment_link and cancel under a claim of its own, answered as a GET
 * (the request promoted by a paid invoice found, else canceled); any
 * failure answers the stored state (lr->line), the claim left lapsed
 */
void ngx_http_linegate_line_sweep(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr);


#endif /* _NGX_HTTP_LINEGATE_LINES_H_INCLUDED_ */
