
/*
 * linegate: POST <operator prefix>reconciliation/run settles the entries
 * of the reconcile stream without an operator, a state machine in the
 * request ctx:
 *
 *   LEASE     script: take the fleet's lease (one run at a time, any
 *             worker of any nginx); held elsewhere: 409. It reads the
 *             runs' cursor: the last entry the run before looked at
 *   SWEEP     ZRANGEBYSCORE lg:{fleet}:lr:inflight: the journal's
 *             members of the Lines API paid add-ons in flight for longer
 *             than linegate_reconcile_lost_after (their worker died, or
 *             its removal of the member was lost), a batch
 *   then, for each member, one slot a step:
 *   SWEEP_READ  the request and its workspace's customer (plain reads,
 *             the workspace's slot)
 *   SWEEP_SETTLE  script lr_journal_settle (the fleet's slot): the
 *             member goes, and, if this step removed it and the request
 *             was awaiting payment with no invoice (or gone), a
 *             worker_lost entry is queued on lg:{fleet}:reconcile; a
 *             reissue claim's member ("<W> <id> r<seq>", payment_link's)
 *             queues reissue_lapsed for a request awaiting payment whose
 *             claim lapsed, and stays (scored again) while it is held
 *   SETUP     ZRANGEBYSCORE lg:{fleet}:lr:setup: the set-up relay's
 *             members (a cluster: lr_setup.h) older than
 *             linegate_reconcile_lost_after, and 60 s at least (their
 *             worker died, or the step's answer was lost), a batch
 *   then, for each member, one slot a step:
 *   SETUP_READ  HMGET of the request (the workspace's slot): still
 *             provisioning, its set-up entry is appended (a durable
 *             XADD) and then the member goes (a durable ZREM); any other
 *             state, or gone: the member goes
 *   CLAIMS    ZRANGEBYSCORE lg:{fleet}:pv:inflight: the provisioning
 *             claims older than linegate_reconcile_lost_after (a confirm
 *             whose worker died holds its number there, or its intent
 *             when it died before it claimed one), a batch
 *   then, for each claim, the sweep of a lost purchase, one slot a step:
 *   INSPECT   script pv_inspect (the account's slot): its line, its
 *             reservation, its outbox (a reconcile entry not yet queued);
 *             an intent's reservation is released in the same step
 *   SETTLE    script pv_settle (the fleet's slot): the claim is dropped
 *             and its number goes to its next home in the same step: the
 *             inventory (nothing holds it any more), the account's line,
 *             or a reconcile entry (queued once)
 *   READ      XRANGE lg:{fleet}:reconcile, past the cursor to the
 *             newest, then round from the oldest up to the cursor: a run
 *             looks at 100 entries at most, and the ones left for a
 *             human must not keep the others waiting run after run
 *   then, for each entry old enough (linegate_reconcile_delay):
 *   CUSTOMER  HGET lg:{ws:W} stripeCustomerId (the workspace's slot): a
 *             Lines API entry with no invoice to name and no customer
 *             (queued by a module before 2026-11-29: a GET's or a
 *             webhook's reissue_lapsed of a request that keeps none) is
 *             looked for under the workspace's, as payment_link bills
 *             and sweeps such a request and as such an entry is queued
 *             now; the workspace has none: left, no_customer
 *   LOOKUP    Stripe: the subscription by its id, or, when the id was
 *             never seen, among the customer's subscriptions by
 *             metadata[worker_id] (a list, not Stripe's search: the
 *             search index lags behind)
 *   RECORD    script pv_record (the account's slot): the paid line is
 *             recorded with the entry's number
 *   RELEASE   script pv_release (the account's slot): the reservation is
 *             dropped, the slot is freed
 *   FENCE     script lr_void_fence (the workspace's slot), a Lines
 *             invoice only: its request read again and fenced (a paid
 *             one: read only, the request's hash when it still awaits
 *             payment with no invoice)
 *   NAMED     Stripe: reissue_lapsed, the invoice a request awaiting
 *             payment names, read when FENCE (check) found a paid one
 *             of the lapsed claim's it does not name (its claim's
 *             metadata[invoice_seq] checked against the request's
 *             invoiceSeq, then the named one's); 404: held (RESOLVE
 *             queues it again for a human, 'hold'); not paid, the
 *             paid one is adopted in its place (PAID_INDEX, PAID_SETTLE);
 *             paid, the request is promoted on its own, the other a
 *             human's
 *   PAID_INDEX  SET lg:invoice:<in> (its own slot), a worker_lost
 *             entry's paid invoice the request is to name, answered OK
 *             first as before any store; on a cluster with the set-up
 *             member (ZADD lg:{fleet}:lr:setup), in one round trip
 *   MARK      script lr_paid_claim (the fleet's slot): reissue_lapsed
 *             or worker_lost, a paid invoice it would leave for a human
 *             (or hold): taken under the invoice's own marker
 *             (lg:{fleet}:q:<W>:inv_<in>; paid_<in> for one its canceled
 *             request names), unless another entry presents it (a
 *             sweep's or a store's invoice_unrepaired, a
 *             paid_after_cancel): then passed over, one entry a paid
 *             invoice
 *   PAID_SETTLE  script lr_invoice_settle (the workspace's slot): the
 *             paid invoice stored on its request and the request
 *             promoted, in one step, as a creation whose invoice Stripe
 *             paid at finalization; on a cluster the set-up entry is
 *             relayed after it
 *   CANCEL    Stripe: the subscription is canceled (a Lines invoice
 *             voided, or deleted)
 *   INVOICES  Stripe: the paid invoices of a purchase undone (its
 *             subscription cancelled, no line given) are listed, their
 *             payments expanded, 5 a page, 10 at most (more: left for a
 *             human), 3 pages at most (a list that goes on: not the one
 *             asked for): the first (billing_reason subscription_create,
 *             or else the oldest) and any later one (renewals while no
 *             line existed)
 *   then, for each one that paid more than 0:
 *   REFUND    Stripe: it is refunded whole (POST v1/refunds, its
 *             payment, Idempotency-Key lg-refund-<subscription> for the
 *             first, lg-refund-<invoice> for a later one: a run repeated
 *             after a lost answer never refunds twice); succeeded: the
 *             next one; failed or canceled: left for a human
 *   REFUND_CHECK  Stripe: the refunds of its payment (GET v1/refunds),
 *             when the refund is not through yet (pending,
 *             requires_action; a replay under the key answers as it was
 *             first made) or Stripe says the payment was refunded
 *             already (charge_already_refunded): one still pending
 *             leaves the entry for a later run (refund_pending), which
 *             asks again; ours succeeded since, or none pending after
 *             charge_already_refunded: done
 *   RESOLVE   script: the entry moves to lg:{fleet}:reconciled with its
 *             outcome (and its refund); when the entry held its number
 *             (record_failed, worker_lost: the reservation was kept) and
 *             RELEASE found no line holding it, the number goes back to
 *             the inventory in the same step (once: the entry is gone
 *             after it)
 *   RENEW     script op_reconcile_lease: before a Stripe step of an
 *             entry, the lease renewed if it is older than 5 s and
 *             still the run's; lost: no more Stripe calls, the entry
 *             left (lease_lost), the run stops. While a Stripe call is
 *             in flight, a timer of the request renews it the same way
 *             every 20 s (not a step: the call goes on), so that one
 *             call slower than the lease does not outlive it
 *   UNLEASE   script: the lease is given back, the cursor written (the
 *             last entry this run looked at)
 *   DONE      the answer: what became of each entry
 *
 * The policy (docs/operator.md#reconciliation):
 *
 *   record_failed (the client was told the line was paid for): a live
 *     subscription gets its line recorded (cancelled instead when its
 *     number was released meanwhile); no live subscription, nothing is
 *     owed: the number and the slot are released;
 *   stripe_outcome_unknown (the client was told to retry: the number was
 *     released), reservation_missing: a live subscription is cancelled;
 *     none: nothing was charged;
 *   worker_lost (the client got no answer; the number is still held): a
 *     live subscription is cancelled, then the number and the slot are
 *     released (a record_failed whose reservation is gone meanwhile,
 *     cancelled, too);
 *   and a purchase whose subscription ends cancelled (by the run, or
 *     before it) with no line holding it has its first invoice refunded
 *     when it was paid: the client that followed the advice to retry
 *     bought its line again, and must not pay twice; so are the later
 *     invoices it paid while no line existed. The refunds come after
 *     the cancellation and the release, before RESOLVE, and the entry
 *     resolves only once every one succeeded: a refund that fails or is
 *     still pending leaves the entry, and the next run finds the
 *     subscription cancelled (already_canceled, or released for a
 *     record_failed) and refunds (or looks) then;
 *   worker_lost of a Lines API paid add-on (its invoice never stored):
 *     the invoice found at Stripe by metadata[line_request_id] is
 *     discarded (a draft deleted, an open one voided), then the
 *     reservation is dropped as the request's own failure step would
 *     (lr_release). Before the discard (FENCE, lr_void_fence) the
 *     request is read again: one whose store landed late names the
 *     invoice, which is kept (stored_late); one that does not is fenced,
 *     a store of that invoice landing later refused. A paid one is read
 *     again too (not fenced): named, it is stored_late (its payment
 *     settles the request); still awaiting payment with no invoice, the
 *     customer paid for it: the invoice is stored on it and the request
 *     promoted (PAID_INDEX, PAID_SETTLE: settled), as a creation does
 *     with an invoice Stripe paid at finalization; moved on (released,
 *     naming another invoice, canceled), a human's, once: an entry that
 *     presents it already (invoice_unrepaired, paid_after_cancel: MARK)
 *     has it passed over, the entry settled on what else it finds;
 *   reissue_lapsed (a Lines API request that ended, paid or canceled,
 *     while a payment_link claim of it had lapsed: its worker may have
 *     left a new invoice unstored, which no payment_link sweeps now; or
 *     one still awaiting payment whose lapsed claim's journal member the
 *     sweep found, which nobody read since):
 *     each draft or open invoice of the request (metadata
 *     [line_request_id]) is fenced and discarded in turn, the list read
 *     again after each, until none is left (voided, deleted, or
 *     no_invoice); the invoice the request names is passed over (a
 *     request awaiting payment may name an open one stored since). A
 *     paid one of a request still awaiting payment on another invoice
 *     is the lapsed claim's, which the customer paid: adopted as
 *     payment_link's sweep adopts it (NAMED, PAID_INDEX, PAID_SETTLE:
 *     stored in the named one's place, promoted, settled), the replaced
 *     one then voided if payable; both paid, the named one is kept and
 *     the other left for a human (invoice_paid), one line either way.
 *     Only an invoice a claim made since the named one is the lapsed
 *     claim's (its metadata[invoice_seq] past the named invoice's, none
 *     past the request's invoiceSeq; none at all, an old node's: made
 *     at Stripe within the claims' time and after the named one;
 *     lines_lapsed_made, payment_link's sweep's rule too): any
 *     other of the request's is a human's. The named invoice unknown to
 *     Stripe (404): the entry is held for a human once (queued again in
 *     its place with 'hold', named_missing), and runs leave a held entry
 *     without a Stripe call. Either way the request's other draft and
 *     open invoices are discarded first, paid ones passed over.
 *
 * Every step is idempotent: a run that stops anywhere (Stripe or Redis
 * failing, the worker exiting) leaves the entry (or the claim) where it
 * was, and the next run finds the subscription as the last one left it.
 * A failed lookup, cancellation or refund stops the run (Stripe is
 * likely down for the next entry too), a lookup Stripe refused for this
 * entry alone (a 4xx but 429) does not;
 * an entry that cannot be settled yet stays, and is named in the answer.
 */


#include "ngx_http_linegate_reconcile.h"
#include "ngx_http_linegate_lines.h"
#include "ngx_http_linegate_redis.h"
#include "ngx_http_linegate_keys.h"
#include "ngx_http_linegate_pv_settle.h"
#include "ngx_http_linegate_lr_setup.h"
#include "ngx_http_linegate_reply.h"
#include "ngx_http_linegate_stripe.h"
#include "ngx_http_linegate_clock.h"
#include "ngx_http_linegate_ids.h"
#include "ngx_http_linegate_str.h"
#include "ngx_http_linegate_chars.h"
#include "ngx_http_linegate_json_write.h"


/*
 * Entries read at once, and at most per run: the batches after the first
 * are read when the ones before were all looked at, so that entries left
 * for a human (a line that still cannot be recorded, an invoice paid)
 * never keep the newer ones from being settled
 */
#define NGX_HTTP_LINEGATE_RECONCILE_BATCH      10
#define NGX_HTTP_LINEGATE_RECONCILE_MAX        100
#define NGX_HTTP_LINEGATE_RECONCILE_LEASE_MS   60000
/*
 * The lease is renewed (if still the run's) before a Stripe step once
 * this old: an entry can make many Stripe calls, each bounded only by
 * the Stripe location's timeouts, past the budget and the lease. Lost,
 * another run may hold it, and two runs must not call Stripe for one
 * entry (two refunds with one Idempotency-Key: Stripe answers 409).
 */
#define NGX_HTTP_LINEGATE_RECONCILE_RENEW_MS   5000
/*
 * While a Stripe call of the run is in flight, its lease is renewed this
 * often (if still its own): a call is bounded only by the Stripe
 * location's timeouts, which may well pass the lease's 60 s
 */
#define NGX_HTTP_LINEGATE_RECONCILE_KEEP_MS    20000
/* no entry is started past this: the lease outlives the run */
#define NGX_HTTP_LINEGATE_RECONCILE_BUDGET_MS  30000
/* ms since a moment of nginx's monotonic clock (ngx_current_msec) */
#define ngx_http_linegate_reconcile_since(ms)                                \
    ((ngx_msec_int_t) (ngx_current_msec - (ms)))
/*
 * A subscription is looked for among the customer's created since a
 * little before its purchase began (the entry's "at"), 10 a page: a page
 * of whole subscription objects stays far below a small
 * subrequest_output_buffer_size (100 take about 200 KB).
 */
#define NGX_HTTP_LINEGATE_RECONCILE_LOOKBACK   600
/*
 * reissue_lapsed: a claim asks for its draft within its hold and its
 * Stripe calls' timeouts of its time: an hour after the latest covers
 * them and Stripe's clock many times over (payment_link's sweep alike)
 */
#define NGX_HTTP_LINEGATE_RECONCILE_LOOKAHEAD  3600
#define NGX_HTTP_LINEGATE_RECONCILE_PAGE       10
#define NGX_HTTP_LINEGATE_RECONCILE_PAGES      50
/*
 * a field read from Redis (an entry's, what a sweep reads of a lost
 * purchase, the runs' cursor): the longest Stripe id or customer the
 * module accepts anywhere (stripe.c's stripe_id_valid, the operator
 * API's customer), so that no purchase the module made is beyond a run
 * or a sweep (at 128, one of a longer customer was skipped by every run,
 * never queued by any sweep); what is longer is no entry of ours. A run
 * copies 100 entries of a dozen such fields at most: 300 KB of its pool.
 */
#define NGX_HTTP_LINEGATE_RECONCILE_FIELD_MAX  255
/*
 * The paid invoices of a purchase undone: 5 a page (whole invoices with
 * their lines and payments, far below a small
 * subrequest_output_buffer_size), 10 at most: a subscription that paid
 * more (renewed for most of a year with no line) is a human's call. The
 * refunds of one payment read to see what became of ours: 10.
 */
#define NGX_HTTP_LINEGATE_RECONCILE_INVOICE_PAGE  5
#define NGX_HTTP_LINEGATE_RECONCILE_PAID_MAX   10
/*
 * The pages the paid invoices take at most: past them (has_more never
 * false, with fewer than 10 paid: a filter not applied, a list without
 * end), not the list asked for
 */
#define NGX_HTTP_LINEGATE_RECONCILE_INVOICE_PAGES                            \
    (NGX_HTTP_LINEGATE_RECONCILE_PAID_MAX                                    \
     / NGX_HTTP_LINEGATE_RECONCILE_INVOICE_PAGE + 1)
#define NGX_HTTP_LINEGATE_RECONCILE_REFUND_PAGE  10
/*
 * A claim's ids ("<account> <worker> <number>"), and the fields of an
 * outbox at most (pv_settle takes them as arguments, after 7 others)
 */
#define NGX_HTTP_LINEGATE_RECONCILE_ID_MAX     64
#define NGX_HTTP_LINEGATE_RECONCILE_OUTBOX     16
/* how much of a malformed claim the log shows */
#define NGX_HTTP_LINEGATE_RECONCILE_LOG_MAX    200


typedef enum {
    NGX_HTTP_LINEGATE_RECONCILE_LEASE = 0,
    NGX_HTTP_LINEGATE_RECONCILE_SWEEP,
    NGX_HTTP_LINEGATE_RECONCILE_SWEEP_READ,
    NGX_HTTP_LINEGATE_RECONCILE_SWEEP_SETTLE,
    NGX_HTTP_LINEGATE_RECONCILE_SETUP,
    NGX_HTTP_LINEGATE_RECONCILE_SETUP_READ,
    NGX_HTTP_LINEGATE_RECONCILE_CLAIMS,
    NGX_HTTP_LINEGATE_RECONCILE_INSPECT,
    NGX_HTTP_LINEGATE_RECONCILE_SETTLE,
    NGX_HTTP_LINEGATE_RECONCILE_READ,
    NGX_HTTP_LINEGATE_RECONCILE_CUSTOMER,
    NGX_HTTP_LINEGATE_RECONCILE_LOOKUP,
    NGX_HTTP_LINEGATE_RECONCILE_RECORD,
    NGX_HTTP_LINEGATE_RECONCILE_RELEASE,
    NGX_HTTP_LINEGATE_RECONCILE_FENCE,
    NGX_HTTP_LINEGATE_RECONCILE_NAMED,
    NGX_HTTP_LINEGATE_RECONCILE_PAID_INDEX,
    NGX_HTTP_LINEGATE_RECONCILE_PAID_SETTLE,
    NGX_HTTP_LINEGATE_RECONCILE_MARK,
    NGX_HTTP_LINEGATE_RECONCILE_CANCEL,
    NGX_HTTP_LINEGATE_RECONCILE_INVOICES,
    NGX_HTTP_LINEGATE_RECONCILE_REFUND,
    NGX_HTTP_LINEGATE_RECONCILE_REFUND_CHECK,
    NGX_HTTP_LINEGATE_RECONCILE_RESOLVE,
    NGX_HTTP_LINEGATE_RECONCILE_RENEW,
    NGX_HTTP_LINEGATE_RECONCILE_UNLEASE,
    NGX_HTTP_LINEGATE_RECONCILE_DONE
} ngx_http_linegate_reconcile_state_e;


/* what Stripe has of an entry's purchase */
typedef enum {
    NGX_HTTP_LINEGATE_RECONCILE_ABSENT = 0,
    NGX_HTTP_LINEGATE_RECONCILE_LIVE,      /* charging, or could: undo it */
    NGX_HTTP_LINEGATE_RECONCILE_CANCELED,  /* cancelled, voided */
    NGX_HTTP_LINEGATE_RECONCILE_PAID       /* an invoice paid meanwhile */
} ngx_http_linegate_reconcile_found_e;

/* how the log names an entry: what, its id, whose, the owner's id */
#define NGX_HTTP_LINEGATE_RECONCILE_NAMES(e)                                 \
    (e)->line_request.len ? "line request" : "purchase",                     \
    (e)->line_request.len ? &(e)->line_request : &(e)->worker_id,            \
    (e)->line_request.len ? "workspace" : "account",                         \
    (e)->line_request.len ? &(e)->workspace : &(e)->account

/*
 * reissue_lapsed: the invoices one entry discards at most (a lapsed claim
 * leaves one; more are a human's call)
 */
#define NGX_HTTP_LINEGATE_RECONCILE_LAPSED_MAX  10

/* lr_release's mark: an lr_create still queued in Redis does nothing */
#define NGX_HTTP_LINEGATE_RECONCILE_LR_MARK    600000


typedef struct {
    ngx_str_t                            id;        /* the stream entry */
    int64_t                              queued_ms; /* from the id */
    ngx_str_t                            account;
    /* the Stripe object named: a subscription, or a Lines invoice */
    ngx_str_t                            subscription;
    ngx_str_t                            number;
    ngx_str_t                            worker_id;
    ngx_str_t                            reason;
    ngx_str_t                            idempotency_key;
    ngx_str_t                            customer;
    /*
     * a Lines entry queued with no customer: the workspace's read
     * (CUSTOMER), once a run
     */
    unsigned                             customer_read:1;
    time_t                               at;        /* the purchase's */
    /* reissue_lapsed: the latest claim's (its 'to'; 0: none known) */
    time_t                               to;
    /* a Lines API paid add-on: its workspace and request id */
    ngx_str_t                            workspace;
    ngx_str_t                            line_request;
    unsigned                             draft:1;   /* its invoice */
    /*
     * reissue_lapsed: the request's draft and open invoices, each
     * discarded in turn and the list read again until none is left; how
     * many so far, and how the last went (voided, deleted)
     */
    unsigned                             lapsed:1;
    ngx_uint_t                           discarded;
    const char                          *discarded_as;
    /* reissue_lapsed: the paid invoice the request names, passed over */
    ngx_str_t                            named;
    /*
     * reissue_lapsed: the invoice a request awaiting payment names while
     * a paid one of its lapsed claim is found (NAMED reads it at Stripe),
     * and the paid one once adopted in its place (PAID_SETTLE)
     */
    ngx_str_t                            replaced;
    ngx_str_t                            adopted;
    /*
     * reissue_lapsed: the paid invoice's metadata[invoice_seq] (the
     * claim that made it; SEQ_NONE: none) and Stripe's 'created' of it
     * (0: none), and what they are read against (lines_lapsed_made, as
     * payment_link's sweep reads them): the request's invoiceSeq as
     * FENCE read it, the entry's claims' time ('at', 'to'), the named
     * invoice once NAMED read it
     */
    int64_t                              made_seq;
    time_t                               made_at;
    ngx_http_linegate_lapsed_claims_t    claims;
    /*
     * reissue_lapsed: a paid invoice left for a human, or held (hold_as):
     * said once the request's other draft and open invoices are
     * discarded, which a hold would leave payable (paid ones passed over)
     */
    ngx_str_t                            left;
    const char                          *left_why;
    /*
     * reissue_lapsed: the invoice the request names that Stripe does not
     * know (NAMED's 404), said once MARK gave the paid one to this entry
     */
    ngx_str_t                            missing;
    /*
     * worker_lost: the paid invoice is one its canceled request names,
     * the payment a paid_after_cancel entry presents (MARK, paid_<in>)
     */
    unsigned                             canceled:1;
    /*
     * reissue_lapsed, worker_lost: the paid invoices another entry
     * presents to a human (their marker not this entry's, MARK): passed
     * over
     */
    ngx_str_t                passed[NGX_HTTP_LINEGATE_RECONCILE_LAPSED_MAX];
    ngx_uint_t                           npassed;
    /*
     * a run's hold for a human (the entry's 'hold', op_reconcile_resolve
     * ARGV[9]): read, or (hold_as) to be written in RESOLVE's place
     */
    ngx_str_t                            hold;
    const char                          *hold_as;
    ngx_str_t                            url;       /* hosted_invoice_url */

    ngx_str_t                            found;     /* at Stripe */
    ngx_http_linegate_reconcile_found_e  state;
    ngx_str_t                            page_after;
    ngx_uint_t                           pages;

    const char                          *outcome;   /* NULL: stays */
    const char                          *detail;
    const char                          *released;  /* once released */
    unsigned                             giveback:1; /* its number */

    /*
     * the refunds of a purchase undone: its subscription is cancelled
     * (undone), no line holds it (kept: RELEASE found one); refund: what
     * became of its first invoice, a refund id, "none" (nothing paid) or
     * "already_refunded"; later: of its later paid invoices, the same
     * words separated by spaces ("" when none)
     */
    unsigned                             undone:1;
    unsigned                             kept:1;
    ngx_str_t                            refund;
    ngx_str_t                            later;
} ngx_http_linegate_reconcile_entry_t;


/* a paid invoice of the purchase undone at work */
typedef struct {
    ngx_str_t                            id;
    ngx_str_t                            payment;   /* pi_..., or ch_... */
    unsigned                             by_charge:1;
    unsigned                             first:1;   /* the creation's */
    unsigned                             paid:1;    /* more than 0 */
    ngx_str_t                            refund;    /* once done */
} ngx_http_linegate_reconcile_paid_t;


/* the worker_lost entry of a journal member: 6 fields, name and value */
#define NGX_HTTP_LINEGATE_RECONCILE_LOST       12


/* a member of lg:{fleet}:lr:inflight whose worker died, at work */
typedef struct {
    ngx_str_t                            member;   /* "W id" */
    ngx_str_t                            workspace;  /* in member */
    ngx_str_t                            id;
    /* a reissue claim's member, "W id r<seq>": its invoiceSeq */
    ngx_str_t                            seq;
    unsigned                             reissue:1;
    unsigned                             malformed:1;
    /* the entry to queue, as read (nfields 0: nothing to queue) */
    ngx_str_t                            fields[
                                        NGX_HTTP_LINEGATE_RECONCILE_LOST];
    ngx_uint_t                           nfields;
} ngx_http_linegate_reconcile_lost_t;


/* a claim of lg:{fleet}:pv:inflight whose worker died, at work */
typedef struct {
    ngx_str_t                            member;   /* "A worker number" */
    ngx_str_t                            account;  /* in member */
    ngx_str_t                            worker_id;
    ngx_str_t                            number;   /* "-": an intent */
    unsigned                             intent:1;

    /* what pv_inspect found of it in the account */
    unsigned                             line:1;
    unsigned                             resv:1;
    unsigned                             released:1; /* an intent's */
    ngx_str_t                            customer;
    ngx_str_t                            at;       /* the reservation's */
    ngx_str_t                            reason;   /* the outbox's */
    ngx_str_t                            outbox[
                                      2 * NGX_HTTP_LINEGATE_RECONCILE_OUTBOX];
    ngx_uint_t                           nfields;  /* in outbox[] */

    const char                          *settled;  /* how, for the log */
    unsigned                             returned:1;
} ngx_http_linegate_reconcile_claim_t;


typedef struct {
    ngx_http_linegate_reconcile_entry_t  entry[
                                        NGX_HTTP_LINEGATE_RECONCILE_MAX];
    ngx_uint_t                           n;
    ngx_uint_t                           i;        /* the entry at work */
    ngx_uint_t                           pending;  /* more on the stream */
    ngx_str_t                            after;    /* "(<last id read>" */
    unsigned                             young:1;  /* the rest is too */
    /*
     * where the run before left the stream (op_reconcile_lease): this run
     * reads past it to the end, then wraps round to the oldest entries
     * up to it (wrapped); and the last entry this run looked at, where
     * the next one starts
     */
    ngx_str_t                            cursor;
    ngx_str_t                            last;
    unsigned                             wrapped:1;

    ngx_str_t                            token;    /* the lease's */
    u_char                               token_buf[NGX_HTTP_LINEGATE_ID_LEN];
    int64_t                              started_ms;
    u_char                               iso[NGX_HTTP_LINEGATE_ISO_LEN];
    /*
     * On nginx's monotonic clock (ngx_current_msec), so that a step of
     * the wall clock (NTP, an operator) neither spends the budget at once
     * nor keeps the lease from being renewed: when the run began; when
     * its lease was taken or last renewed, and the renewal sent, for what
     */
    ngx_msec_t                           begun;
    ngx_msec_t                           leased_ms;
    ngx_msec_t                           renew_ms;
    ngx_http_linegate_reconcile_state_e  renewing;
    unsigned                             lease_lost:1;

    /*
     * a Stripe call in flight: the step it resumes, and the timer that
     * renews the lease meanwhile (its renewal's arguments, when it was
     * sent, whether it is still unanswered; deleted when the call ends
     * or by the pool cleanup)
     */
    ngx_http_linegate_resume_pt          resume;
    ngx_event_t                          keep;
    ngx_http_request_t                  *keeper;   /* the run's request */
    ngx_http_linegate_redis_args_t       keep_args;
    ngx_msec_t                           keep_ms;  /* monotonic */
    unsigned                             keep_sent:1;
    unsigned                             keep_armed:1; /* the cleanup */

    /*
     * a worker_lost entry's paid invoice stored on its request: the 201
     * a creation would have kept under its key, the set-up member (a
     * cluster)
     */
    ngx_str_t                            paid_body;
    ngx_str_t                            paid_setup;

    ngx_uint_t                           status;   /* the answer's */
    unsigned                             stop:1;   /* no entry more */

    /* the sweep of claims: a batch read, the one at work */
    ngx_str_t                            members[
                                      NGX_HTTP_LINEGATE_RECONCILE_BATCH];
    ngx_uint_t                           nmembers;
    ngx_uint_t                           ci;
    ngx_uint_t                           claims_read;  /* this run */
    ngx_uint_t                           claims_left;  /* where they were */
    ngx_uint_t                           claims_returned;
    ngx_uint_t                           claims_queued;
    ngx_uint_t                           claims_kept;  /* their line's */
    ngx_uint_t                           claims_released; /* intents */
    unsigned                             claims_more:1;
    unsigned                             claims_unread:1; /* "more" */
    ngx_http_linegate_reconcile_claim_t  claim;

    /* the sweep of the journal: its batch in members[], the one at work */
    ngx_http_linegate_reconcile_lost_t   lost;
    ngx_uint_t                           lost_queued;

    /*
     * the paid invoices of the purchase undone at work (newest first),
     * where the next page starts, the one being refunded, and the id of
     * its refund Stripe answered with (to look at again; "": none)
     */
    ngx_http_linegate_reconcile_paid_t   paid[
                                        NGX_HTTP_LINEGATE_RECONCILE_PAID_MAX];
    ngx_uint_t                           npaid;
    ngx_str_t                            paid_after;
    ngx_uint_t                           paid_pages;
    ngx_uint_t                           pi;
    ngx_str_t                            refund;

    /* the sweep of the set-up relay: its batch in members[] too */
    ngx_str_t                            setup;      /* the member */
    ngx_str_t                            setup_ws;   /* in it */
    ngx_str_t                            setup_id;
    ngx_uint_t                           setup_relayed;

    ngx_http_linegate_redis_args_t       args;
} ngx_http_linegate_reconcile_t;


static void ngx_http_linegate_reconcile_next(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, ngx_http_linegate_reconcile_state_e state);
static void ngx_http_linegate_reconcile_advance(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx);
static void ngx_http_linegate_reconcile_settle(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, const char *outcome);
static void ngx_http_linegate_reconcile_defer(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, const char *detail, ngx_uint_t stop);
static void ngx_http_linegate_reconcile_leave(ngx_http_request_t *r,
    ngx_http_linegate_reconcile_entry_t *e, const char *detail);

static ngx_int_t ngx_http_linegate_reconcile_lease(ngx_http_request_t *r,
    ngx_http_linegate_reconcile_t *rc, const char *how);
static void ngx_http_linegate_reconcile_lease_args(ngx_http_request_t *r,
    ngx_http_linegate_reconcile_t *rc, ngx_http_linegate_redis_args_t *a,
    const char *how);
static ngx_int_t ngx_http_linegate_reconcile_sweep(ngx_http_request_t *r,
    ngx_http_linegate_reconcile_t *rc);
static ngx_int_t ngx_http_linegate_reconcile_batch(ngx_http_request_t *r,
    ngx_http_linegate_reconcile_t *rc, ngx_http_linegate_key_e key,
    ngx_msec_t older, ngx_uint_t offset);
static void ngx_http_linegate_reconcile_lost_next(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx);
static ngx_uint_t ngx_http_linegate_reconcile_lost_valid(
    ngx_http_linegate_reconcile_lost_t *l);
static ngx_int_t ngx_http_linegate_reconcile_lost_read(ngx_http_request_t *r,
    ngx_http_linegate_reconcile_lost_t *l);
static ngx_int_t ngx_http_linegate_reconcile_lapsed_found(
    ngx_http_request_t *r, ngx_http_linegate_reconcile_lost_t *l,
    redisReply *reply);
static ngx_int_t ngx_http_linegate_reconcile_lost_found(ngx_http_request_t *r,
    ngx_http_linegate_reconcile_lost_t *l, redisReply *reply);
static ngx_int_t ngx_http_linegate_reconcile_lost_settle(
    ngx_http_request_t *r, ngx_http_linegate_reconcile_t *rc,
    ngx_http_linegate_reconcile_lost_t *l);
static void ngx_http_linegate_reconcile_lost_settled(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, redisReply *reply);
static void ngx_http_linegate_reconcile_lost_later(ngx_http_request_t *r,
    ngx_http_linegate_reconcile_t *rc);
static ngx_int_t ngx_http_linegate_reconcile_setup(ngx_http_request_t *r,
    ngx_http_linegate_reconcile_t *rc);
static void ngx_http_linegate_reconcile_setup_next(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx);
static ngx_int_t ngx_http_linegate_reconcile_setup_read(
    ngx_http_request_t *r, ngx_http_linegate_reconcile_t *rc);
static void ngx_http_linegate_reconcile_setup_found(ngx_http_request_t *r,
    ngx_http_linegate_reconcile_t *rc, redisReply *reply);
static void ngx_http_linegate_reconcile_later(ngx_http_request_t *r,
    ngx_http_linegate_reconcile_t *rc, ngx_http_linegate_key_e journal,
    ngx_str_t *member);
static ngx_uint_t ngx_http_linegate_reconcile_members(ngx_http_request_t *r,
    ngx_http_linegate_reconcile_t *rc, redisReply *reply);
static ngx_int_t ngx_http_linegate_reconcile_claims(ngx_http_request_t *r,
    ngx_http_linegate_reconcile_t *rc);
static void ngx_http_linegate_reconcile_claims_read(ngx_http_request_t *r,
    ngx_http_linegate_reconcile_t *rc, redisReply *reply);
static void ngx_http_linegate_reconcile_claim_next(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx);
static ngx_int_t ngx_http_linegate_reconcile_claim_parse(
    ngx_http_linegate_reconcile_claim_t *c, ngx_str_t *member);
static void ngx_http_linegate_reconcile_claim_left(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, const char *why);
static ngx_int_t ngx_http_linegate_reconcile_inspect(ngx_http_request_t *r,
    ngx_http_linegate_reconcile_t *rc,
    ngx_http_linegate_reconcile_claim_t *c);
static ngx_int_t ngx_http_linegate_reconcile_inspected(ngx_http_request_t *r,
    ngx_http_linegate_reconcile_claim_t *c, redisReply *reply);
static ngx_int_t ngx_http_linegate_reconcile_settle_claim(
    ngx_http_request_t *r, ngx_http_linegate_reconcile_t *rc,
    ngx_http_linegate_reconcile_claim_t *c);
static void ngx_http_linegate_reconcile_claim_settled(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, redisReply *reply);
static ngx_int_t ngx_http_linegate_reconcile_read(ngx_http_request_t *r,
    ngx_http_linegate_reconcile_t *rc);
static void ngx_http_linegate_reconcile_entries(ngx_http_request_t *r,
    ngx_http_linegate_reconcile_t *rc, redisReply *reply);
static ngx_int_t ngx_http_linegate_reconcile_entry(ngx_http_request_t *r,
    ngx_http_linegate_reconcile_entry_t *e, redisReply *reply);

static ngx_int_t ngx_http_linegate_reconcile_customer(ngx_http_request_t *r,
    ngx_http_linegate_reconcile_entry_t *e);
static ngx_int_t ngx_http_linegate_reconcile_lookup(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, ngx_http_linegate_reconcile_entry_t *e);
static ngx_int_t ngx_http_linegate_reconcile_page(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, ngx_str_t *path, u_char *p,
    ngx_str_t *after, ngx_http_linegate_resume_pt resume);
static void ngx_http_linegate_reconcile_looked_up(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx);
static ngx_int_t ngx_http_linegate_reconcile_find(
    ngx_http_linegate_ctx_t *ctx, ngx_http_linegate_reconcile_entry_t *e);
static void ngx_http_linegate_reconcile_object(
    ngx_http_linegate_reconcile_entry_t *e, json_t *obj);
static ngx_http_linegate_reconcile_found_e
    ngx_http_linegate_reconcile_status(json_t *sub);
static void ngx_http_linegate_reconcile_decide(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, ngx_http_linegate_reconcile_entry_t *e);
static void ngx_http_linegate_reconcile_unbilled(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, ngx_http_linegate_reconcile_entry_t *e,
    const char *outcome);

static ngx_int_t ngx_http_linegate_reconcile_record(ngx_http_request_t *r,
    ngx_http_linegate_reconcile_t *rc, ngx_http_linegate_reconcile_entry_t *e);
static ngx_int_t ngx_http_linegate_reconcile_release(ngx_http_request_t *r,
    ngx_http_linegate_reconcile_t *rc, ngx_http_linegate_reconcile_entry_t *e);
static ngx_int_t ngx_http_linegate_reconcile_fence(ngx_http_request_t *r,
    ngx_http_linegate_reconcile_t *rc,
    ngx_http_linegate_reconcile_entry_t *e);
static ngx_uint_t ngx_http_linegate_reconcile_passed(
    ngx_http_linegate_reconcile_entry_t *e, json_t *sub);
static ngx_uint_t ngx_http_linegate_reconcile_lapsed_skip(
    ngx_http_linegate_reconcile_entry_t *e, json_t *sub);
static void ngx_http_linegate_reconcile_fenced_named(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, redisReply *reply);
static void ngx_http_linegate_reconcile_fenced(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, redisReply *reply, int64_t code);
static ngx_int_t ngx_http_linegate_reconcile_paid_body(ngx_http_request_t *r,
    ngx_http_linegate_reconcile_t *rc, ngx_http_linegate_reconcile_entry_t *e,
    redisReply *flat);
static ngx_int_t ngx_http_linegate_reconcile_paid_index(
    ngx_http_request_t *r, ngx_http_linegate_reconcile_t *rc,
    ngx_http_linegate_reconcile_entry_t *e);
static ngx_int_t ngx_http_linegate_reconcile_paid_settle(
    ngx_http_request_t *r, ngx_http_linegate_reconcile_t *rc,
    ngx_http_linegate_reconcile_entry_t *e);
static void ngx_http_linegate_reconcile_paid_settled(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, redisReply *reply);
static void ngx_http_linegate_reconcile_paid_left(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, const char *why);
static void ngx_http_linegate_reconcile_paid_said(ngx_http_request_t *r,
    ngx_http_linegate_reconcile_entry_t *e);
static ngx_int_t ngx_http_linegate_reconcile_mark(ngx_http_request_t *r,
    ngx_http_linegate_reconcile_t *rc, ngx_http_linegate_reconcile_entry_t *e);
static void ngx_http_linegate_reconcile_marked(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, int64_t code);
static ngx_int_t ngx_http_linegate_reconcile_named(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, ngx_http_linegate_reconcile_entry_t *e);
static void ngx_http_linegate_reconcile_named_read(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx);
static void ngx_http_linegate_reconcile_relist(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, ngx_http_linegate_reconcile_entry_t *e);
static ngx_int_t ngx_http_linegate_reconcile_cancel(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, ngx_http_linegate_reconcile_entry_t *e);
static void ngx_http_linegate_reconcile_canceled(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx);
static ngx_int_t ngx_http_linegate_reconcile_invoices(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, ngx_http_linegate_reconcile_entry_t *e);
static void ngx_http_linegate_reconcile_invoices_read(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx);
static const char *ngx_http_linegate_reconcile_paid(ngx_http_request_t *r,
    ngx_http_linegate_reconcile_t *rc, ngx_http_linegate_reconcile_entry_t *e,
    json_t *list);
static ngx_int_t ngx_http_linegate_reconcile_payment(
    ngx_http_linegate_reconcile_paid_t *p, json_t *inv);
static void ngx_http_linegate_reconcile_refund_next(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx);
static ngx_int_t ngx_http_linegate_reconcile_refunds_named(
    ngx_http_request_t *r, ngx_http_linegate_reconcile_t *rc,
    ngx_http_linegate_reconcile_entry_t *e);
static ngx_int_t ngx_http_linegate_reconcile_refund(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, ngx_http_linegate_reconcile_entry_t *e);
static void ngx_http_linegate_reconcile_refunded(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx);
static ngx_int_t ngx_http_linegate_reconcile_refund_status(
    ngx_http_request_t *r, ngx_http_linegate_ctx_t *ctx, const char *status);
static ngx_int_t ngx_http_linegate_reconcile_refund_check(
    ngx_http_request_t *r, ngx_http_linegate_ctx_t *ctx);
static void ngx_http_linegate_reconcile_refund_checked(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx);
static void ngx_http_linegate_reconcile_stripe_failed(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, const char *what, ngx_str_t *of,
    const char *refused, const char *unavailable);
static ngx_int_t ngx_http_linegate_reconcile_stripe(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, ngx_uint_t method, ngx_str_t *path,
    ngx_str_t *form, ngx_str_t *idempotency_key,
    ngx_http_linegate_resume_pt resume);
static void ngx_http_linegate_reconcile_stripe_done(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx);
static void ngx_http_linegate_reconcile_keep(ngx_event_t *ev);
static void ngx_http_linegate_reconcile_kept(ngx_http_request_t *r,
    redisReply *reply);
static void ngx_http_linegate_reconcile_unkeep(void *data);
static ngx_int_t ngx_http_linegate_reconcile_resolve(ngx_http_request_t *r,
    ngx_http_linegate_reconcile_t *rc, ngx_http_linegate_reconcile_entry_t *e);
static void ngx_http_linegate_reconcile_stored(ngx_http_request_t *r,
    redisReply *reply);
static void ngx_http_linegate_reconcile_answer(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, ngx_http_linegate_reconcile_t *rc);

static void ngx_http_linegate_reconcile_words(
    ngx_http_linegate_json_write_t *jw, ngx_str_t *words);
static ngx_int_t ngx_http_linegate_reconcile_script(ngx_http_request_t *r,
    ngx_http_linegate_reconcile_t *rc, ngx_http_linegate_script_id_e script,
    int nkeys);
static ngx_int_t ngx_http_linegate_reconcile_keys(ngx_http_request_t *r,
    ngx_http_linegate_reconcile_entry_t *e, ngx_str_t *keys);
static ngx_uint_t ngx_http_linegate_reconcile_is(ngx_str_t *s,
    const char *value);
static time_t ngx_http_linegate_reconcile_time(ngx_str_t *iso);
static ngx_uint_t ngx_http_linegate_reconcile_is_status(json_t *obj,
    const char *status);
static void ngx_http_linegate_reconcile_not_made(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, const char *why);
static void ngx_http_linegate_reconcile_swept(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, ngx_http_linegate_reconcile_entry_t *e,
    const char *as);


void
ngx_http_linegate_reconcile_run(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx)
{
    ngx_http_linegate_reconcile_t  *rc;
    ngx_http_linegate_main_conf_t  *lmcf;

    lmcf = ngx_http_get_module_main_conf(r, ngx_http_linegate_module);

    if (lmcf->stripe_location.len == 0) {
        ngx_str_set(&ctx->outcome, "not_configured");
        ngx_http_linegate_error(r, NGX_HTTP_NOT_IMPLEMENTED,
                                "NOT_CONFIGURED",
                                "Reconciliation needs Stripe: "
                                "linegate_stripe_location is not set");
        return;
    }

    rc = ngx_pcalloc(r->pool, sizeof(ngx_http_linegate_reconcile_t));
    if (rc == NULL) {
        ngx_http_linegate_internal_error(r);
        return;
    }

    if (ngx_http_linegate_new_id(rc->token_buf) != NGX_OK) {
        ngx_http_linegate_internal_error(r);
        return;
    }

    rc->token.data = rc->token_buf;
    rc->token.len = NGX_HTTP_LINEGATE_ID_LEN;
    rc->started_ms = ngx_http_linegate_now_ms();
    rc->begun = ngx_current_msec;
    (void) ngx_http_linegate_iso8601(rc->iso, rc->started_ms);
    rc->status = NGX_HTTP_OK;

    ctx->data = rc;

    ngx_http_linegate_reconcile_next(r, ctx,
                                     NGX_HTTP_LINEGATE_RECONCILE_LEASE);
}


/* enter a step: start it, or take its failure path if it cannot start */
static void
ngx_http_linegate_reconcile_next(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, ngx_http_linegate_reconcile_state_e state)
{
    ngx_int_t                             rv;
    ngx_http_linegate_reconcile_t        *rc;
    ngx_http_linegate_reconcile_entry_t  *e;

    rc = ctx->data;
    e = &rc->entry[rc->i];

    switch (state) {

    case NGX_HTTP_LINEGATE_RECONCILE_LOOKUP:
    case NGX_HTTP_LINEGATE_RECONCILE_NAMED:
    case NGX_HTTP_LINEGATE_RECONCILE_CANCEL:
    case NGX_HTTP_LINEGATE_RECONCILE_INVOICES:
    case NGX_HTTP_LINEGATE_RECONCILE_REFUND:
    case NGX_HTTP_LINEGATE_RECONCILE_REFUND_CHECK:
        /* a Stripe step: only under the lease, renewed first if old */
        if (ngx_http_linegate_reconcile_since(rc->leased_ms)
            > NGX_HTTP_LINEGATE_RECONCILE_RENEW_MS)
        {
            rc->renewing = state;
            state = NGX_HTTP_LINEGATE_RECONCILE_RENEW;
        }

        break;

    default:
        break;
    }

    ctx->state = state;

    switch (state) {

    case NGX_HTTP_LINEGATE_RECONCILE_LEASE:
        if (ngx_http_linegate_reconcile_lease(r, rc, "take") != NGX_OK) {
            ngx_http_linegate_store_unavailable(r);
        }
        return;

    case NGX_HTTP_LINEGATE_RECONCILE_SWEEP:
        rv = ngx_http_linegate_reconcile_sweep(r, rc);
        break;

    case NGX_HTTP_LINEGATE_RECONCILE_SWEEP_READ:
        rv = ngx_http_linegate_reconcile_lost_read(r, &rc->lost);
        break;

    case NGX_HTTP_LINEGATE_RECONCILE_SWEEP_SETTLE:
        rv = ngx_http_linegate_reconcile_lost_settle(r, rc, &rc->lost);
        break;

    case NGX_HTTP_LINEGATE_RECONCILE_SETUP:
        rv = ngx_http_linegate_reconcile_setup(r, rc);
        break;

    case NGX_HTTP_LINEGATE_RECONCILE_SETUP_READ:
        rv = ngx_http_linegate_reconcile_setup_read(r, rc);
        break;

    case NGX_HTTP_LINEGATE_RECONCILE_CLAIMS:
        rv = ngx_http_linegate_reconcile_claims(r, rc);
        break;

    case NGX_HTTP_LINEGATE_RECONCILE_INSPECT:
        rv = ngx_http_linegate_reconcile_inspect(r, rc, &rc->claim);
        break;

    case NGX_HTTP_LINEGATE_RECONCILE_SETTLE:
        rv = ngx_http_linegate_reconcile_settle_claim(r, rc, &rc->claim);
        break;

    case NGX_HTTP_LINEGATE_RECONCILE_READ:
        rv = ngx_http_linegate_reconcile_read(r, rc);
        break;

    case NGX_HTTP_LINEGATE_RECONCILE_CUSTOMER:
        rv = ngx_http_linegate_reconcile_customer(r, e);
        break;

    case NGX_HTTP_LINEGATE_RECONCILE_LOOKUP:
        rv = ngx_http_linegate_reconcile_lookup(r, ctx, e);
        break;

    case NGX_HTTP_LINEGATE_RECONCILE_RECORD:
        rv = ngx_http_linegate_reconcile_record(r, rc, e);
        break;

    case NGX_HTTP_LINEGATE_RECONCILE_RELEASE:
        rv = ngx_http_linegate_reconcile_release(r, rc, e);
        break;

    case NGX_HTTP_LINEGATE_RECONCILE_FENCE:
        rv = ngx_http_linegate_reconcile_fence(r, rc, e);
        break;

    case NGX_HTTP_LINEGATE_RECONCILE_NAMED:
        rv = ngx_http_linegate_reconcile_named(r, ctx, e);
        break;

    case NGX_HTTP_LINEGATE_RECONCILE_PAID_INDEX:
        rv = ngx_http_linegate_reconcile_paid_index(r, rc, e);
        break;

    case NGX_HTTP_LINEGATE_RECONCILE_PAID_SETTLE:
        rv = ngx_http_linegate_reconcile_paid_settle(r, rc, e);
        break;

    case NGX_HTTP_LINEGATE_RECONCILE_MARK:
        rv = ngx_http_linegate_reconcile_mark(r, rc, e);
        break;

    case NGX_HTTP_LINEGATE_RECONCILE_CANCEL:
        rv = ngx_http_linegate_reconcile_cancel(r, ctx, e);
        break;

    case NGX_HTTP_LINEGATE_RECONCILE_INVOICES:
        rv = ngx_http_linegate_reconcile_invoices(r, ctx, e);
        break;

    case NGX_HTTP_LINEGATE_RECONCILE_REFUND:
        rv = ngx_http_linegate_reconcile_refund(r, ctx, e);
        break;

    case NGX_HTTP_LINEGATE_RECONCILE_REFUND_CHECK:
        rv = ngx_http_linegate_reconcile_refund_check(r, ctx);
        break;

    case NGX_HTTP_LINEGATE_RECONCILE_RESOLVE:
        rv = ngx_http_linegate_reconcile_resolve(r, rc, e);
        break;

    case NGX_HTTP_LINEGATE_RECONCILE_RENEW:
        rc->renew_ms = ngx_current_msec;
        rv = ngx_http_linegate_reconcile_lease(r, rc, "renew");
        break;

    case NGX_HTTP_LINEGATE_RECONCILE_UNLEASE:
        rv = ngx_http_linegate_reconcile_lease(r, rc, "give");
        break;

    default: /* NGX_HTTP_LINEGATE_RECONCILE_DONE */
        ngx_http_linegate_reconcile_answer(r, ctx, rc);
        return;
    }

    if (rv == NGX_OK) {
        return;
    }

    /* the step could not start: as if it had failed */
    switch (state) {

    case NGX_HTTP_LINEGATE_RECONCILE_CLAIMS:
        if (rc->claims_read) {
            /* a later batch: the rest waits for the next run */
            rc->claims_unread = 1;
            ngx_http_linegate_reconcile_next(r, ctx,
                                             NGX_HTTP_LINEGATE_RECONCILE_READ);
            return;
        }

        /* fall through */

    case NGX_HTTP_LINEGATE_RECONCILE_SWEEP:
    case NGX_HTTP_LINEGATE_RECONCILE_READ:
        rc->status = NGX_HTTP_SERVICE_UNAVAILABLE;
        ngx_http_linegate_reconcile_next(r, ctx,
                                         NGX_HTTP_LINEGATE_RECONCILE_UNLEASE);
        return;

    case NGX_HTTP_LINEGATE_RECONCILE_SWEEP_READ:
    case NGX_HTTP_LINEGATE_RECONCILE_SWEEP_SETTLE:
        /* the member stays for the next run */
        rc->ci++;
        ngx_http_linegate_reconcile_lost_next(r, ctx);
        return;

    case NGX_HTTP_LINEGATE_RECONCILE_SETUP:
        /* the members wait for the next run: on to the claims */
        ngx_http_linegate_reconcile_next(r, ctx,
                                         NGX_HTTP_LINEGATE_RECONCILE_CLAIMS);
        return;

    case NGX_HTTP_LINEGATE_RECONCILE_SETUP_READ:
        ngx_http_linegate_reconcile_later(r, rc,
                                          NGX_HTTP_LINEGATE_KEY_LR_SETUP,
                                          &rc->setup);
        rc->ci++;
        ngx_http_linegate_reconcile_setup_next(r, ctx);
        return;

    case NGX_HTTP_LINEGATE_RECONCILE_INSPECT:
    case NGX_HTTP_LINEGATE_RECONCILE_SETTLE:
        ngx_http_linegate_reconcile_claim_left(r, ctx, "store_unavailable");
        return;

    case NGX_HTTP_LINEGATE_RECONCILE_LOOKUP:
    case NGX_HTTP_LINEGATE_RECONCILE_NAMED:
    case NGX_HTTP_LINEGATE_RECONCILE_CANCEL:
        ngx_http_linegate_reconcile_defer(r, ctx, "stripe_unavailable", 1);
        return;

    case NGX_HTTP_LINEGATE_RECONCILE_INVOICES:
    case NGX_HTTP_LINEGATE_RECONCILE_REFUND:
    case NGX_HTTP_LINEGATE_RECONCILE_REFUND_CHECK:
        ngx_http_linegate_reconcile_defer(r, ctx, "refund_unavailable", 1);
        return;

    case NGX_HTTP_LINEGATE_RECONCILE_UNLEASE:
        /* the lease expires by itself */
        ngx_http_linegate_reconcile_next(r, ctx,
                                         NGX_HTTP_LINEGATE_RECONCILE_DONE);
        return;

    default:
        /* CUSTOMER, RECORD, RELEASE, FENCE, PAID_*, MARK, RESOLVE, RENEW */
        ngx_http_linegate_reconcile_defer(r, ctx, "store_unavailable", 1);
        return;
    }
}


/*
 * On to the next entry that is old enough, or to the end: the batch
 * done, the run stopped, or its time budget spent.
 */
static void
ngx_http_linegate_reconcile_advance(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx)
{
    int64_t                               now;
    ngx_uint_t                            room;
    ngx_http_linegate_reconcile_t        *rc;
    ngx_http_linegate_main_conf_t        *lmcf;
    ngx_http_linegate_reconcile_entry_t  *e;

    rc = ctx->data;
    lmcf = ngx_http_get_module_main_conf(r, ngx_http_linegate_module);

    for ( ;; ) {
        now = ngx_http_linegate_now_ms();

        if (rc->stop
            || ngx_http_linegate_reconcile_since(rc->begun)
               > NGX_HTTP_LINEGATE_RECONCILE_BUDGET_MS)
        {
            ngx_http_linegate_reconcile_next(r, ctx,
                                          NGX_HTTP_LINEGATE_RECONCILE_UNLEASE);
            return;
        }

        if (rc->i >= rc->n) {
            /* the next batch, past the entries left where they are */
            room = rc->n + NGX_HTTP_LINEGATE_RECONCILE_BATCH
                   <= NGX_HTTP_LINEGATE_RECONCILE_MAX;

            if ((!rc->pending || rc->young) && !rc->wrapped
                && rc->cursor.len && room)
            {
                /*
                 * the end, or entries too recent from here on: round to
                 * the oldest, which the run before did not come back to
                 */
                rc->wrapped = 1;
                rc->young = 0;
                rc->pending = 1;
                rc->after.len = 0;
            }

            ngx_http_linegate_reconcile_next(r, ctx,
                                     rc->pending && !rc->young && room
                                     ? NGX_HTTP_LINEGATE_RECONCILE_READ
                                     : NGX_HTTP_LINEGATE_RECONCILE_UNLEASE);
            return;
        }

        e = &rc->entry[rc->i];

        if (e->hold.len) {
            /*
             * held for a human by a run before (op_reconcile_resolve's
             * hold): its answer will not change by asking Stripe again,
             * nor is it queued or logged as new; it waits, counted in
             * the backlog, until removed by hand (operator.md)
             */
            rc->last = e->id;
            e->outcome = NULL;
            e->detail = ngx_http_linegate_reconcile_is(&e->hold,
                                                       "named_missing")
                        ? "named_missing" : "held";
            ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                          NGX_HTTP_LINEGATE_LOG "reconciliation: %s %V of "
                          "%s \"%V\" (%V, at Stripe \"%V\") held for a "
                          "human: %V", NGX_HTTP_LINEGATE_RECONCILE_NAMES(e),
                          &e->reason, &e->subscription, &e->hold);
            rc->i++;
            continue;
        }

        if (now - e->queued_ms < (int64_t) lmcf->reconcile_delay) {
            /* Stripe may still be working on the call that queued it */
            e->detail = "too_recent";
            rc->young = 1;
            rc->i++;
            continue;
        }

        /* looked at, whatever comes of it: the next run starts past it */
        rc->last = e->id;

        if (e->subscription.len == 0 && e->line_request.len
            && e->customer.len == 0 && !e->customer_read)
        {
            /* queued with none: the workspace's (CUSTOMER) */
            ngx_http_linegate_reconcile_next(r, ctx,
                                         NGX_HTTP_LINEGATE_RECONCILE_CUSTOMER);
            return;
        }

        if (e->subscription.len == 0
            && !ngx_http_linegate_stripe_id_valid(&e->customer))
        {
            /*
             * nothing to look for at Stripe (a workspace or an account
             * with no customer any more): a human's call, and no reason
             * to hold back the entries behind it
             */
            ngx_http_linegate_reconcile_leave(r, e, "no_customer");
            rc->i++;
            continue;
        }

        ngx_http_linegate_reconcile_next(r, ctx,
                                         NGX_HTTP_LINEGATE_RECONCILE_LOOKUP);
        return;
    }
}


/*
 * The entry's outcome is decided: a purchase undone with no line has its
 * paid invoices refunded first (INVOICES, REFUND), then it is written
 * down, then the next entry
 */
static void
ngx_http_linegate_reconcile_settle(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, const char *outcome)
{
    ngx_http_linegate_reconcile_t        *rc;
    ngx_http_linegate_reconcile_entry_t  *e;

    rc = ctx->data;
    e = &rc->entry[rc->i];
    e->outcome = outcome;

    if (e->undone && !e->kept && e->refund.len == 0) {
        rc->npaid = 0;
        rc->pi = 0;
        ngx_str_null(&rc->paid_after);
        rc->paid_pages = 0;
        ngx_http_linegate_reconcile_next(r, ctx,
                                         NGX_HTTP_LINEGATE_RECONCILE_INVOICES);
        return;
    }

    ngx_http_linegate_reconcile_next(r, ctx,
                                     NGX_HTTP_LINEGATE_RECONCILE_RESOLVE);
}


/* the entry stays for a later run; stop: no other entry in this one */
static void
ngx_http_linegate_reconcile_defer(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, const char *detail, ngx_uint_t stop)
{
    ngx_http_linegate_reconcile_t  *rc;

    rc = ctx->data;

    ngx_http_linegate_reconcile_leave(r, &rc->entry[rc->i], detail);

    if (stop) {
        rc->stop = 1;
    }

    rc->i++;
    ngx_http_linegate_reconcile_advance(r, ctx);
}


/* the entry is left where it is, and the log says why */
static void
ngx_http_linegate_reconcile_leave(ngx_http_request_t *r,
    ngx_http_linegate_reconcile_entry_t *e, const char *detail)
{
    e->outcome = NULL;
    e->detail = detail;

    ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                  NGX_HTTP_LINEGATE_LOG "reconciliation: %s %V of %s "
                  "\"%V\" (%V, at Stripe \"%V\") left for a later run: %s",
                  NGX_HTTP_LINEGATE_RECONCILE_NAMES(e), &e->reason,
                  e->found.len ? &e->found : &e->subscription, detail);
}


/* LEASE, UNLEASE */

static ngx_int_t
ngx_http_linegate_reconcile_lease(ngx_http_request_t *r,
    ngx_http_linegate_reconcile_t *rc, const char *how)
{
    ngx_http_linegate_reconcile_lease_args(r, rc, &rc->args, how);

    return ngx_http_linegate_reconcile_script(r, rc,
                                    NGX_HTTP_LINEGATE_SCRIPT_OP_RECONCILE_LEASE,
                                    2);
}


/* op_reconcile_lease.lua's: take, renew, give */
static void
ngx_http_linegate_reconcile_lease_args(ngx_http_request_t *r,
    ngx_http_linegate_reconcile_t *rc, ngx_http_linegate_redis_args_t *a,
    const char *how)
{
    ngx_http_linegate_redis_args_init(a);
    ngx_http_linegate_redis_arg_str(a,
        ngx_http_linegate_key_fixed(NGX_HTTP_LINEGATE_KEY_RECONCILE_LEASE));
    ngx_http_linegate_redis_arg_str(a,
        ngx_http_linegate_key_fixed(NGX_HTTP_LINEGATE_KEY_RECONCILE_CURSOR));
    ngx_http_linegate_redis_arg_str(a, &rc->token);
    ngx_http_linegate_redis_arg_cstr(a, how);
    ngx_http_linegate_redis_arg_int(r, a,
                                    NGX_HTTP_LINEGATE_RECONCILE_LEASE_MS);
    /* give: the next run starts past the last entry this one looked at */
    ngx_http_linegate_redis_arg_str(a, &rc->last);
}


/*
 * SWEEP, SWEEP_READ, SWEEP_SETTLE: the Lines API's journal. A paid
 * add-on's worker writes "<W> <id>" in lg:{fleet}:lr:inflight (scored by
 * the reservation's time) before any Stripe call and removes it once its
 * store or release answered; a member older than
 * linegate_reconcile_lost_after is one whose worker died in between (or
 * whose removal was lost). One batch a run, the oldest first; each
 * member's request is read in its workspace, then the member is settled
 * in the fleet (lr_journal_settle): a request awaiting payment with no
 * invoice is queued as worker_lost (Stripe may hold an invoice no
 * request names), once; any other state, or gone, queues nothing. A
 * failed read or settle leaves the member for the next run.
 */

static ngx_int_t
ngx_http_linegate_reconcile_sweep(ngx_http_request_t *r,
    ngx_http_linegate_reconcile_t *rc)
{
    ngx_http_linegate_main_conf_t  *lmcf;

    lmcf = ngx_http_get_module_main_conf(r, ngx_http_linegate_module);

    return ngx_http_linegate_reconcile_batch(r, rc,
                                       NGX_HTTP_LINEGATE_KEY_LR_INFLIGHT,
                                       lmcf->reconcile_lost, 0);
}


/*
 * A batch of a fleet's sorted set (the journals, the set-up members, the
 * claims): the members scored `older` ms or more before the run's start,
 * from offset on (those this run left where they were), oldest first
 */
static ngx_int_t
ngx_http_linegate_reconcile_batch(ngx_http_request_t *r,
    ngx_http_linegate_reconcile_t *rc, ngx_http_linegate_key_e key,
    ngx_msec_t older, ngx_uint_t offset)
{
    ngx_http_linegate_redis_args_t  *a;

    a = &rc->args;
    ngx_http_linegate_redis_args_init(a);
    ngx_http_linegate_redis_arg_cstr(a, "ZRANGEBYSCORE");
    ngx_http_linegate_redis_arg_str(a, ngx_http_linegate_key_fixed(key));
    ngx_http_linegate_redis_arg_cstr(a, "-inf");
    ngx_http_linegate_redis_arg_int(r, a, rc->started_ms - (int64_t) older);
    ngx_http_linegate_redis_arg_cstr(a, "LIMIT");
    ngx_http_linegate_redis_arg_int(r, a, (int64_t) offset);
    ngx_http_linegate_redis_arg_int(r, a, NGX_HTTP_LINEGATE_RECONCILE_BATCH);

    return ngx_http_linegate_redis_command(r, a,
                                        ngx_http_linegate_reconcile_stored);
}


/* on to the next member, or to the claims once the batch is done */
static void
ngx_http_linegate_reconcile_lost_next(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx)
{
    u_char                              *sp;
    ngx_str_t                           *m;
    ngx_http_linegate_reconcile_t       *rc;
    ngx_http_linegate_reconcile_lost_t  *l;

    rc = ctx->data;
    l = &rc->lost;

    if (rc->ci < rc->nmembers) {
        ngx_memzero(l, sizeof(ngx_http_linegate_reconcile_lost_t));

        m = &rc->members[rc->ci];
        l->member = *m;
        sp = ngx_strlchr(m->data, m->data + m->len, ' ');

        if (sp != NULL) {
            l->workspace.data = m->data;
            l->workspace.len = sp - m->data;
            l->id.data = sp + 1;
            l->id.len = m->data + m->len - l->id.data;

            /* a reissue claim's: "<W> <id> r<invoiceSeq>" */
            sp = ngx_strlchr(l->id.data, l->id.data + l->id.len, ' ');

            if (sp != NULL) {
                l->seq.data = sp + 1;
                l->seq.len = l->id.data + l->id.len - l->seq.data;
                l->id.len = sp - l->id.data;
                l->reissue = 1;

                if (l->seq.len < 2 || l->seq.data[0] != 'r'
                    || ngx_atoi(l->seq.data + 1, l->seq.len - 1) <= 0)
                {
                    l->malformed = 1;
                }
            }
        }

        /* malformed: no request to read, the member just goes */
        ngx_http_linegate_reconcile_next(r, ctx,
            ngx_http_linegate_reconcile_lost_valid(l)
            ? NGX_HTTP_LINEGATE_RECONCILE_SWEEP_READ
            : NGX_HTTP_LINEGATE_RECONCILE_SWEEP_SETTLE);
        return;
    }

    if (rc->lost_queued) {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      NGX_HTTP_LINEGATE_LOG "reconciliation: %ui line "
                      "request(s) in flight past "
                      "linegate_reconcile_lost_after (their worker died) "
                      "queued as worker_lost or reissue_lapsed",
                      rc->lost_queued);
    }

    ngx_http_linegate_reconcile_next(r, ctx,
                                     NGX_HTTP_LINEGATE_RECONCILE_SETUP);
}


/*
 * "<W> <id>" as lr_create's worker wrote it: two printable words, the
 * workspace without braces (the keys read must keep its hash tag)
 */
static ngx_uint_t
ngx_http_linegate_reconcile_lost_valid(ngx_http_linegate_reconcile_lost_t *l)
{
    u_char      *p;
    ngx_str_t   *part[2];
    ngx_uint_t   i;

    part[0] = &l->workspace;
    part[1] = &l->id;

    if (l->malformed) {
        return 0;
    }

    for (i = 0; i < 2; i++) {
        if (part[i]->len == 0
            || part[i]->len > NGX_HTTP_LINEGATE_RECONCILE_ID_MAX)
        {
            return 0;
        }

        for (p = part[i]->data; p < part[i]->data + part[i]->len; p++) {
            if (!ngx_http_linegate_char_is(*p, NGX_HTTP_LINEGATE_CHARS_PRINT)
                || *p == ' ' || *p == '{' || *p == '}')
            {
                return 0;
            }
        }
    }

    return 1;
}


/*
 * SWEEP_READ: the request and the customer, the workspace's slot; the
 * member's score, the fleet's (the time it was written, before any
 * Stripe call, unless a run scored it again: with the id's time, the
 * only times of purchase left once the request is gone)
 */
static ngx_int_t
ngx_http_linegate_reconcile_lost_read(ngx_http_request_t *r,
    ngx_http_linegate_reconcile_lost_t *l)
{
    ngx_str_t                       key[2];
    ngx_http_linegate_redis_args_t  a[3];

    if (ngx_http_linegate_key(r->pool, NGX_HTTP_LINEGATE_KEY_WS_LR,
                              &l->workspace, &l->id, &key[0])
        != NGX_OK
        || ngx_http_linegate_key(r->pool, NGX_HTTP_LINEGATE_KEY_WS,
                                 &l->workspace, NULL, &key[1])
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    ngx_http_linegate_redis_args_init(&a[0]);
    ngx_http_linegate_redis_arg_cstr(&a[0], "HMGET");
    ngx_http_linegate_redis_arg_str(&a[0], &key[0]);
    ngx_http_linegate_redis_arg_cstr(&a[0], "provisioningStatus");
    ngx_http_linegate_redis_arg_cstr(&a[0], "invoiceId");
    ngx_http_linegate_redis_arg_cstr(&a[0], "createdAt");
    ngx_http_linegate_redis_arg_cstr(&a[0], "idem");
    ngx_http_linegate_redis_arg_cstr(&a[0], "customer");
    /* a reissue claim's member: the claim, as lr_reissue_claim keeps it */
    ngx_http_linegate_redis_arg_cstr(&a[0], "reissueAt");
    ngx_http_linegate_redis_arg_cstr(&a[0], "sweepFrom");
    ngx_http_linegate_redis_arg_cstr(&a[0], "sweepTo");

    ngx_http_linegate_redis_args_init(&a[1]);
    ngx_http_linegate_redis_arg_cstr(&a[1], "HGET");
    ngx_http_linegate_redis_arg_str(&a[1], &key[1]);
    ngx_http_linegate_redis_arg_cstr(&a[1], "stripeCustomerId");

    ngx_http_linegate_redis_args_init(&a[2]);
    ngx_http_linegate_redis_arg_cstr(&a[2], "ZSCORE");
    ngx_http_linegate_redis_arg_str(&a[2],
        ngx_http_linegate_key_fixed(NGX_HTTP_LINEGATE_KEY_LR_INFLIGHT));
    ngx_http_linegate_redis_arg_str(&a[2], &l->member);

    return ngx_http_linegate_redis_pipeline(r, 3, a,
                                        ngx_http_linegate_reconcile_stored);
}


/*
 * What SWEEP_READ found: a request awaiting payment with no invoice gets
 * its worker_lost entry (idempotency_key: the digest of the key it
 * holds, freed with the reservation by the run's lr_release), and so
 * does one that is gone: a later creation of the workspace dropped it as
 * abandoned (lr_create: 10 minutes without an invoice), and Stripe may
 * still hold the open invoice its worker made before it died. Its `at`,
 * from which the run looks for that invoice: the request's createdAt, or
 * for one gone the member's score or the id's time, the earlier (a run
 * that could not settle the member scored it again). NGX_ERROR: not
 * understood, the member stays.
 */
static ngx_int_t
ngx_http_linegate_reconcile_lost_found(ngx_http_request_t *r,
    ngx_http_linegate_reconcile_lost_t *l, redisReply *reply)
{
    u_char       iso[NGX_HTTP_LINEGATE_ISO_LEN];
    ngx_int_t    ms, made;
    ngx_str_t    s, *f;
    ngx_uint_t   i, at[3];
    redisReply  *lr, *from[3];

    static ngx_str_t   name[] = {
        ngx_string("workspace"), ngx_string("line_request_id"),
        ngx_string("reason"), ngx_string("idempotency_key"),
        ngx_string("customer"), ngx_string("at")
    };

    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY
        || reply->elements != 3
        || reply->element[0]->type != REDIS_REPLY_ARRAY
        || reply->element[0]->elements != 8)
    {
        return NGX_ERROR;
    }

    if (l->reissue) {
        return ngx_http_linegate_reconcile_lapsed_found(r, l, reply);
    }

    lr = reply->element[0];

    if (lr->element[0]->type != REDIS_REPLY_NIL
        && (ngx_http_linegate_reply_str(lr, 0, &s) != NGX_OK
            || !ngx_http_linegate_reconcile_is(&s, "awaiting_payment")
            || lr->element[1]->type != REDIS_REPLY_NIL))
    {
        /* settled, or its invoice stored: nothing to queue */
        return NGX_OK;
    }

    f = l->fields;

    for (i = 0; i < NGX_HTTP_LINEGATE_RECONCILE_LOST / 2; i++) {
        f[2 * i] = name[i];
    }

    f[1] = l->workspace;
    f[3] = l->id;
    ngx_str_set(&f[5], "worker_lost");

    /*
     * the customer the reservation was billed to (lr_create keeps it);
     * the workspace's for a request gone, or kept before it did
     */
    /* idempotency_key, customer, at: which reply, where in it */
    from[0] = lr;
    at[0] = 3;
    from[1] = lr;
    at[1] = 4;
    from[2] = lr;
    at[2] = 2;

    if (lr->element[4]->type != REDIS_REPLY_STRING) {
        from[1] = reply;
        at[1] = 1;
    }

    /* copied (the reply is freed after its handler); absent: "" */
    for (i = 0; i < 3; i++) {
        if (ngx_http_linegate_reply_str(from[i], at[i], &s) != NGX_OK) {
            ngx_str_set(&s, "");
        }

        if (i == 2 && s.len == 0
            && ngx_http_linegate_reply_str(reply, 2, &s) == NGX_OK)
        {
            /*
             * gone (dropped as abandoned): the member's score, ms, or the
             * second the id was made in (its first 8 hex digits), if
             * earlier: a run that could not settle the member scored it
             * again with its own time. Left empty, the entry would be
             * timed by its queuing, and the lookup, from 10 minutes
             * before that, would miss an invoice made more than 10
             * minutes before the sweep
             */
            ms = ngx_atoi(s.data, s.len);
            made = ngx_http_linegate_id_valid(&l->id)
                   ? ngx_hextoi(l->id.data, 8) : NGX_ERROR;

            if (made > 0 && (ms <= 0 || made * 1000 < ms)) {
                ms = made * 1000;
            }

            ngx_str_set(&s, "");

            if (ms > 0) {
                s.data = iso;
                s.len = ngx_http_linegate_iso8601(iso, ms) - iso;
            }
        }

        if (s.len > NGX_HTTP_LINEGATE_RECONCILE_FIELD_MAX
            || ngx_http_linegate_pstr(r->pool, &f[7 + 2 * i], s.data, s.len)
               == NULL)
        {
            return NGX_ERROR;
        }
    }

    l->nfields = NGX_HTTP_LINEGATE_RECONCILE_LOST;

    return NGX_OK;
}


/*
 * What SWEEP_READ found of a reissue claim's member "<W> <id> r<seq>"
 * (line_manage.c, LINK_JOURNAL): the claim's worker wrote it before the
 * claim's first Stripe call, and removes it once the claim's store or
 * release answered. Still there past linegate_reconcile_lost_after, the
 * request is read for what its claims left:
 *
 *   no reissueAt (stored, or released with nothing left to look for), or
 *   the request gone: nothing to queue, the member goes;
 *   the request ended (paid, canceled): its lapsed claims are its
 *   sweepPending mark's (lr_settle), queued as reissue_lapsed by the
 *   step that ended it or by its next read (lines_lapsed), once: the
 *   member goes, nothing queued twice;
 *   a claim held (reissueAt younger than its hold, the claim's or one
 *   that took it over): its worker may be alive, Stripe slow, and must
 *   not have its invoice voided under it: the member stays for a later
 *   run (NGX_DECLINED, scored again with the run's time);
 *   a claim lapsed (its hold passed) or released lapsed (reissueAt 0):
 *   Stripe may hold an invoice the dead worker made and no request
 *   names, which only a read of the request would sweep: queued as
 *   reissue_lapsed, for the run to fence and discard each of the
 *   request's draft and open invoices (and read a paid one against
 *   it: one the request, awaiting payment, does not name is adopted,
 *   NAMED; once it ended, a human's, invoice_paid).
 *
 * The entry's `at`, from which the run lists the customer's invoices:
 * the earliest claim not swept (sweepFrom, or reissueAt when earlier),
 * else the member's score; its `to`: the latest (sweepTo, or reissueAt
 * when later), as payment_link's own sweep lists.
 */
static ngx_int_t
ngx_http_linegate_reconcile_lapsed_found(ngx_http_request_t *r,
    ngx_http_linegate_reconcile_lost_t *l, redisReply *reply)
{
    u_char       iso[NGX_HTTP_LINEGATE_ISO_LEN];
    int64_t      at, from, to, v;
    ngx_str_t    s, *f;
    ngx_uint_t   i;
    redisReply  *lr;

    lr = reply->element[0];

    if (lr->element[5]->type == REDIS_REPLY_NIL
        || ngx_http_linegate_reply_str(lr, 0, &s) != NGX_OK
        || !ngx_http_linegate_reconcile_is(&s, "awaiting_payment"))
    {
        /* no claim left unswept, gone, or ended: nothing to queue */
        return NGX_OK;
    }

    if (ngx_http_linegate_reply_str(lr, 5, &s) != NGX_OK
        || (at = ngx_atoi(s.data, s.len)) == NGX_ERROR)
    {
        return NGX_ERROR;
    }

    if (at > 0
        && ngx_http_linegate_now_ms() - at < NGX_HTTP_LINEGATE_LR_REISSUE_HOLD)
    {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      NGX_HTTP_LINEGATE_LOG "reconciliation: the reissue "
                      "claim of line request \"%V\" of workspace \"%V\" "
                      "is still held: its journal member left for a later "
                      "run", &l->id, &l->workspace);
        return NGX_DECLINED;
    }

    from = 0;
    to = at;

    if (ngx_http_linegate_reply_str(lr, 6, &s) == NGX_OK
        && (v = ngx_atoi(s.data, s.len)) > 0)
    {
        from = v;
    }

    if (at > 0 && (from == 0 || at < from)) {
        from = at;
    }

    if (from == 0
        && ngx_http_linegate_reply_str(reply, 2, &s) == NGX_OK
        && (v = ngx_atoi(s.data, s.len)) > 0)
    {
        /* released lapsed with no time kept: the member's, before it */
        from = v;
    }

    if (ngx_http_linegate_reply_str(lr, 7, &s) == NGX_OK
        && (v = ngx_atoi(s.data, s.len)) > to)
    {
        to = v;
    }

    f = l->fields;

    ngx_str_set(&f[0], "workspace");
    f[1] = l->workspace;
    ngx_str_set(&f[2], "line_request_id");
    f[3] = l->id;
    ngx_str_set(&f[4], "reason");
    ngx_str_set(&f[5], "reissue_lapsed");
    ngx_str_set(&f[6], "customer");
    ngx_str_set(&f[8], "at");
    ngx_str_set(&f[10], "to");

    /* the customer the request was billed to, else the workspace's */
    if (ngx_http_linegate_reply_str(lr, 4, &s) != NGX_OK
        && ngx_http_linegate_reply_str(reply, 1, &s) != NGX_OK)
    {
        ngx_str_set(&s, "");
    }

    if (s.len > NGX_HTTP_LINEGATE_RECONCILE_FIELD_MAX
        || ngx_http_linegate_pstr(r->pool, &f[7], s.data, s.len) == NULL)
    {
        return NGX_ERROR;
    }

    /* copied: the reply is freed after its handler, iso is this frame's */
    for (i = 0; i < 2; i++) {
        v = (i == 0) ? from : to;
        ngx_str_set(&s, "");

        if (v > 0) {
            s.data = iso;
            s.len = ngx_http_linegate_iso8601(iso, v) - iso;
        }

        if (ngx_http_linegate_pstr(r->pool, &f[9 + 2 * i], s.data, s.len)
            == NULL)
        {
            return NGX_ERROR;
        }
    }

    /* no claim's time known: no 'to', the run lists until now */
    l->nfields = (to > 0) ? 12 : 10;

    return NGX_OK;
}


/* SWEEP_SETTLE: lr_journal_settle.lua in the fleet's slot */
static ngx_int_t
ngx_http_linegate_reconcile_lost_settle(ngx_http_request_t *r,
    ngx_http_linegate_reconcile_t *rc, ngx_http_linegate_reconcile_lost_t *l)
{
    ngx_http_linegate_redis_args_t  *a;

    a = &rc->args;
    ngx_http_linegate_redis_args_init(a);
    ngx_http_linegate_redis_arg_str(a,
        ngx_http_linegate_key_fixed(NGX_HTTP_LINEGATE_KEY_LR_INFLIGHT));
    ngx_http_linegate_redis_arg_str(a,
        ngx_http_linegate_key_fixed(NGX_HTTP_LINEGATE_KEY_RECONCILE));
    ngx_http_linegate_redis_arg_str(a, &l->member);
    ngx_http_linegate_redis_arg_strs(a, l->fields, l->nfields);

    return ngx_http_linegate_reconcile_script(r, rc,
                                    NGX_HTTP_LINEGATE_SCRIPT_LR_JOURNAL_SETTLE,
                                    2);
}


/* lr_journal_settle's answer {removed, queued}: on to the next member */
static void
ngx_http_linegate_reconcile_lost_settled(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, redisReply *reply)
{
    int64_t                              removed, queued;
    ngx_http_linegate_reconcile_t       *rc;
    ngx_http_linegate_reconcile_lost_t  *l;

    rc = ctx->data;
    l = &rc->lost;

    if (reply != NULL && reply->type == REDIS_REPLY_ARRAY
        && ngx_http_linegate_reply_int(reply, 0, &removed) == NGX_OK
        && ngx_http_linegate_reply_int(reply, 1, &queued) == NGX_OK)
    {
        if (queued == 1) {
            rc->lost_queued++;

            ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                          NGX_HTTP_LINEGATE_LOG "reconciliation: line "
                          "request \"%V\" of workspace \"%V\" in flight "
                          "past linegate_reconcile_lost_after: queued as "
                          "%s", &l->id, &l->workspace,
                          l->reissue ? "reissue_lapsed" : "worker_lost");
        }

    } else {
        /* it may have run: a later run finds the member, or not */
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      NGX_HTTP_LINEGATE_LOG "reconciliation: the journal's "
                      "member of line request \"%V\" left for a later "
                      "run: store_unavailable", &l->id);
        ngx_http_linegate_reconcile_lost_later(r, rc);
    }

    rc->ci++;

    ngx_http_linegate_reconcile_lost_next(r, ctx);
}


/*
 * A member this run could not settle (its workspace unreadable, its
 * settle unanswered) is scored with the run's time, if it is still
 * there (XX): tried again linegate_reconcile_lost_after later, behind
 * the members that were newer. Left at the head, ten such members would
 * fill every run's batch and hide the lost requests behind them. Not
 * waited for: unsent or lost, the member only stays where it was.
 */
static void
ngx_http_linegate_reconcile_lost_later(ngx_http_request_t *r,
    ngx_http_linegate_reconcile_t *rc)
{
    ngx_http_linegate_reconcile_later(r, rc,
                                      NGX_HTTP_LINEGATE_KEY_LR_INFLIGHT,
                                      &rc->lost.member);
}


/* member of journal scored with the run's time, if still there (XX) */
static void
ngx_http_linegate_reconcile_later(ngx_http_request_t *r,
    ngx_http_linegate_reconcile_t *rc, ngx_http_linegate_key_e journal,
    ngx_str_t *member)
{
    ngx_http_linegate_redis_args_t  a;

    ngx_http_linegate_redis_args_init(&a);
    ngx_http_linegate_redis_arg_cstr(&a, "ZADD");
    ngx_http_linegate_redis_arg_str(&a,
                                    ngx_http_linegate_key_fixed(journal));
    ngx_http_linegate_redis_arg_cstr(&a, "XX");
    ngx_http_linegate_redis_arg_int(r, &a, rc->started_ms);
    ngx_http_linegate_redis_arg_str(&a, member);

    (void) ngx_http_linegate_redis_command(r, &a, NULL);
}


/*
 * SETUP, SETUP_READ: the set-up relay's journal (lr_setup.h). On a
 * cluster a worker writes "<W> <id> <nonce>" in lg:{fleet}:lr:setup
 * before a step that may promote a line to provisioning, and, once the
 * step answered, appends the line's set-up entry (if it made one) and
 * removes the member. A member older than linegate_reconcile_lost_after
 * (and 60 s at least, far beyond any command timeout: its worker is not
 * still at it) lost its relay: the request is read in its workspace; if
 * it is provisioning, the entry is appended (it may have been already:
 * the set-up workers de-duplicate), then the member goes; else the
 * member just goes. The writes are durable, not waited for. A member
 * whose read fails is scored with the run's time, as the journal's.
 */

static ngx_int_t
ngx_http_linegate_reconcile_setup(ngx_http_request_t *r,
    ngx_http_linegate_reconcile_t *rc)
{
    ngx_msec_t                      after;
    ngx_http_linegate_main_conf_t  *lmcf;

    lmcf = ngx_http_get_module_main_conf(r, ngx_http_linegate_module);

    after = ngx_max(lmcf->reconcile_lost, NGX_HTTP_LINEGATE_LR_SETUP_AFTER);

    return ngx_http_linegate_reconcile_batch(r, rc,
                                             NGX_HTTP_LINEGATE_KEY_LR_SETUP,
                                             after, 0);
}


/* on to the next member, or to the claims once the batch is done */
static void
ngx_http_linegate_reconcile_setup_next(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx)
{
    ngx_http_linegate_reconcile_t  *rc;

    rc = ctx->data;

    while (rc->ci < rc->nmembers) {
        rc->setup = rc->members[rc->ci];

        if (ngx_http_linegate_lr_setup_parse(&rc->setup, &rc->setup_ws,
                                             &rc->setup_id)
            == NGX_OK)
        {
            ngx_http_linegate_reconcile_next(r, ctx,
                                       NGX_HTTP_LINEGATE_RECONCILE_SETUP_READ);
            return;
        }

        /* no request to read: it just goes */
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      NGX_HTTP_LINEGATE_LOG "reconciliation: a member of "
                      "%V is not \"<workspace> <id> <nonce>\": removed",
                      ngx_http_linegate_key_fixed(
                          NGX_HTTP_LINEGATE_KEY_LR_SETUP));

        (void) ngx_http_linegate_lr_setup_drop(r->connection->log,
                                               &rc->setup);
        rc->ci++;
    }

    if (rc->setup_relayed) {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      NGX_HTTP_LINEGATE_LOG "reconciliation: %ui line(s) "
                      "whose set-up entry may have been lost appended to "
                      "%V", rc->setup_relayed,
                      ngx_http_linegate_key_fixed(
                          NGX_HTTP_LINEGATE_KEY_PROVISIONING));
    }

    ngx_http_linegate_reconcile_next(r, ctx,
                                     NGX_HTTP_LINEGATE_RECONCILE_CLAIMS);
}


/* SETUP_READ: the request, the workspace's slot */
static ngx_int_t
ngx_http_linegate_reconcile_setup_read(ngx_http_request_t *r,
    ngx_http_linegate_reconcile_t *rc)
{
    ngx_str_t                        key;
    ngx_http_linegate_redis_args_t  *a;

    if (ngx_http_linegate_key(r->pool, NGX_HTTP_LINEGATE_KEY_WS_LR,
                              &rc->setup_ws, &rc->setup_id, &key)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    a = &rc->args;
    ngx_http_linegate_redis_args_init(a);
    ngx_http_linegate_redis_arg_cstr(a, "HMGET");
    ngx_http_linegate_redis_arg_str(a, &key);
    ngx_http_linegate_redis_arg_cstr(a, "provisioningStatus");
    ngx_http_linegate_redis_arg_cstr(a, "channelType");
    ngx_http_linegate_redis_arg_cstr(a, "lineType");
    ngx_http_linegate_redis_arg_cstr(a, "updatedAt");

    return ngx_http_linegate_redis_command(r, a,
                                        ngx_http_linegate_reconcile_stored);
}


/*
 * What SETUP_READ found: provisioning, the entry as the step would have
 * appended it ("at": the request's updatedAt, the step's time) and then
 * the member goes; anything else, the member goes; no answer, it stays
 */
static void
ngx_http_linegate_reconcile_setup_found(ngx_http_request_t *r,
    ngx_http_linegate_reconcile_t *rc, redisReply *reply)
{
    ngx_str_t                      status;
    ngx_http_linegate_lr_setup_t   e;

    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY
        || reply->elements != 4)
    {
        ngx_http_linegate_reconcile_later(r, rc,
                                          NGX_HTTP_LINEGATE_KEY_LR_SETUP,
                                          &rc->setup);
        return;
    }

    if (ngx_http_linegate_reply_str(reply, 0, &status) != NGX_OK
        || !ngx_http_linegate_reconcile_is(&status, "provisioning"))
    {
        (void) ngx_http_linegate_lr_setup_drop(r->connection->log,
                                               &rc->setup);
        return;
    }

    e.workspace = rc->setup_ws;
    e.id = rc->setup_id;

    if (ngx_http_linegate_reply_str(reply, 1, &e.channel_type) != NGX_OK) {
        ngx_str_set(&e.channel_type, "");
    }

    if (ngx_http_linegate_reply_str(reply, 2, &e.line_type) != NGX_OK) {
        ngx_str_set(&e.line_type, "");
    }

    if (ngx_http_linegate_reply_str(reply, 3, &e.at) != NGX_OK) {
        ngx_str_set(&e.at, "");
    }

    if (ngx_http_linegate_lr_setup_relay(r->connection->log, &e,
                                         &rc->setup)
        != NGX_OK)
    {
        ngx_http_linegate_reconcile_later(r, rc,
                                          NGX_HTTP_LINEGATE_KEY_LR_SETUP,
                                          &rc->setup);
        return;
    }

    rc->setup_relayed++;

    ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                  NGX_HTTP_LINEGATE_LOG "reconciliation: line request "
                  "\"%V\" of workspace \"%V\" provisioning with its set-up "
                  "relay unsettled: its entry appended", &rc->setup_id,
                  &rc->setup_ws);
}


/* a batch of members of a journal, copied: how many were read */
static ngx_uint_t
ngx_http_linegate_reconcile_members(ngx_http_request_t *r,
    ngx_http_linegate_reconcile_t *rc, redisReply *reply)
{
    ngx_str_t   m;
    ngx_uint_t  i;

    rc->nmembers = 0;
    rc->ci = 0;

    for (i = 0;
         i < reply->elements && i < NGX_HTTP_LINEGATE_RECONCILE_BATCH;
         i++)
    {
        /* the reply is freed when its handler returns: copied */
        if (ngx_http_linegate_reply_str(reply, i, &m) != NGX_OK
            || ngx_http_linegate_pstr(r->pool, &rc->members[rc->nmembers],
                                      m.data, m.len)
               == NULL)
        {
            /* not a string (or no memory): left where it is */
            continue;
        }

        rc->nmembers++;
    }

    return i;
}


/*
 * CLAIMS, INSPECT, SETTLE: the sweep of lost purchases. A confirm claims
 * its number in lg:{fleet}:pv:inflight ("<A> <worker> <number>", scored
 * by the claim's time) and settles the claim when it records or releases
 * the purchase; a claim older than linegate_reconcile_lost_after is one
 * whose worker died (or whose settle was lost). Each is looked at in the
 * account (pv_inspect), then settled in the fleet (pv_settle), the
 * number going to its next home in the step that drops the claim:
 *
 *   an outbox (the entry pv_record or pv_release wrote for the run, not
 *     yet queued): queued once; a record_failed entry holds the number
 *     (the purchase is still reserved: the run records or releases it),
 *     else the number returns unless a line holds it;
 *   a reservation, no outbox: the confirm died before its record or
 *     release: queued as worker_lost with the claim's number, for the
 *     run to undo at Stripe and release;
 *   a line: recorded, its number is the line's: the claim is dropped;
 *   nothing: released, or never reserved: the number returns.
 *
 * An intent ("<A> <worker> -", written with the reservation or before
 * it, and replaced by the claim) is a confirm that died before it claimed a
 * number, so before Stripe: its reservation, if any, is released by
 * pv_inspect itself, and the intent is dropped.
 *
 * A step that fails leaves the claim where it is, for the next run; a
 * malformed member is left for a human, named in the log.
 */

static ngx_int_t
ngx_http_linegate_reconcile_claims(ngx_http_request_t *r,
    ngx_http_linegate_reconcile_t *rc)
{
    ngx_http_linegate_main_conf_t  *lmcf;

    lmcf = ngx_http_get_module_main_conf(r, ngx_http_linegate_module);

    /* past the ones this run left where they were */
    return ngx_http_linegate_reconcile_batch(r, rc,
                                       NGX_HTTP_LINEGATE_KEY_PV_INFLIGHT,
                                       lmcf->reconcile_lost, rc->claims_left);
}


static void
ngx_http_linegate_reconcile_claims_read(ngx_http_request_t *r,
    ngx_http_linegate_reconcile_t *rc, redisReply *reply)
{
    ngx_uint_t  n;

    rc->claims_more = reply->elements == NGX_HTTP_LINEGATE_RECONCILE_BATCH;

    n = ngx_http_linegate_reconcile_members(r, rc, reply);

    rc->claims_read += n;
    rc->claims_left += n - rc->nmembers;
}


/* on to the next claim, the next batch, or the entries of the stream */
static void
ngx_http_linegate_reconcile_claim_next(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx)
{
    u_char                               *p, *last;
    ngx_http_linegate_reconcile_t        *rc;
    ngx_http_linegate_reconcile_claim_t  *c;

    rc = ctx->data;
    c = &rc->claim;

    while (rc->ci < rc->nmembers) {
        ngx_memzero(c, sizeof(ngx_http_linegate_reconcile_claim_t));

        if (ngx_http_linegate_reconcile_claim_parse(c, &rc->members[rc->ci])
            == NGX_OK)
        {
            ngx_http_linegate_reconcile_next(r, ctx,
                                          NGX_HTTP_LINEGATE_RECONCILE_INSPECT);
            return;
        }

        /* named in the log, where no byte may pass for another line */
        last = c->member.data
               + ngx_min(c->member.len, NGX_HTTP_LINEGATE_RECONCILE_LOG_MAX);

        for (p = c->member.data; p < last; p++) {
            if (!ngx_http_linegate_char_is(*p, NGX_HTTP_LINEGATE_CHARS_PRINT)
                || *p == '"')
            {
                *p = '?';
            }
        }

        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      NGX_HTTP_LINEGATE_LOG "reconciliation: the claim "
                      "\"%*s%s\" of %V is not \"<account> <worker> "
                      "<number>\" nor \"<account> <worker> -\": skipped, "
                      "left for a human",
                      (size_t) (last - c->member.data), c->member.data,
                      c->member.len > NGX_HTTP_LINEGATE_RECONCILE_LOG_MAX
                      ? "..." : "",
                      ngx_http_linegate_key_fixed(
                          NGX_HTTP_LINEGATE_KEY_PV_INFLIGHT));

        rc->claims_left++;
        rc->ci++;
    }

    if (rc->claims_more
        && rc->claims_read + NGX_HTTP_LINEGATE_RECONCILE_BATCH
           <= NGX_HTTP_LINEGATE_RECONCILE_MAX
        && ngx_http_linegate_reconcile_since(rc->begun)
           <= NGX_HTTP_LINEGATE_RECONCILE_BUDGET_MS)
    {
        ngx_http_linegate_reconcile_next(r, ctx,
                                         NGX_HTTP_LINEGATE_RECONCILE_CLAIMS);
        return;
    }

    /* a full batch last: more may wait for the next run */
    rc->claims_unread = rc->claims_more;

    if (rc->claims_returned + rc->claims_queued + rc->claims_kept
        + rc->claims_released)
    {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      NGX_HTTP_LINEGATE_LOG "reconciliation: %ui "
                      "purchase(s) in flight past "
                      "linegate_reconcile_lost_after (their worker died): "
                      "%ui number(s) back in the inventory, %ui queued for "
                      "reconciliation, %ui recorded on their line, %ui "
                      "reservation(s) released before a number was claimed",
                      rc->claims_returned + rc->claims_queued
                      + rc->claims_kept + rc->claims_released,
                      rc->claims_returned, rc->claims_queued,
                      rc->claims_kept, rc->claims_released);
    }

    ngx_http_linegate_reconcile_next(r, ctx,
                                     NGX_HTTP_LINEGATE_RECONCILE_READ);
}


/*
 * "<account> <worker id> <number>": ids a key may hold, an E.164 number;
 * or "<account> <worker id> -", an intent
 */
static ngx_int_t
ngx_http_linegate_reconcile_claim_parse(
    ngx_http_linegate_reconcile_claim_t *c, ngx_str_t *member)
{
    u_char      *p, *last, *sp;
    ngx_str_t   *part[3];
    ngx_uint_t   i;

    c->member = *member;

    part[0] = &c->account;
    part[1] = &c->worker_id;
    part[2] = &c->number;

    p = member->data;
    last = member->data + member->len;

    for (i = 0; i < 3; i++) {
        sp = (i < 2) ? ngx_strlchr(p, last, ' ') : last;

        if (sp == NULL) {
            return NGX_ERROR;
        }

        part[i]->data = p;
        part[i]->len = sp - p;
        p = sp + 1;
    }

    for (i = 0; i < 2; i++) {
        if (part[i]->len == 0
            || part[i]->len > NGX_HTTP_LINEGATE_RECONCILE_ID_MAX
            || !ngx_http_linegate_chars_are(part[i]->data, part[i]->len,
                                            NGX_HTTP_LINEGATE_CHARS_ID))
        {
            return NGX_ERROR;
        }
    }

    if (c->number.len == 1 && c->number.data[0] == '-') {
        c->intent = 1;
        return NGX_OK;
    }

    /* the shape alone: a "+0..." number loaded before 2026-11-28 */
    return ngx_http_linegate_e164_shape(c->number.data, c->number.len)
           ? NGX_OK : NGX_ERROR;
}


/* the claim at work stays for the next run: logged, on to the next */
static void
ngx_http_linegate_reconcile_claim_left(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, const char *why)
{
    ngx_http_linegate_reconcile_t        *rc;
    ngx_http_linegate_reconcile_claim_t  *c;

    rc = ctx->data;
    c = &rc->claim;

    ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                  NGX_HTTP_LINEGATE_LOG "reconciliation: purchase %V of "
                  "account \"%V\" (number \"%V\"), in flight past "
                  "linegate_reconcile_lost_after, left for a later run: %s",
                  &c->worker_id, &c->account, &c->number, why);

    rc->claims_left++;
    rc->ci++;

    ngx_http_linegate_reconcile_claim_next(r, ctx);
}


/* INSPECT: pv_inspect.lua in the account's slot */
static ngx_int_t
ngx_http_linegate_reconcile_inspect(ngx_http_request_t *r,
    ngx_http_linegate_reconcile_t *rc, ngx_http_linegate_reconcile_claim_t *c)
{
    ngx_str_t                        keys[
                                        NGX_HTTP_LINEGATE_KEYS_PV_PURCHASE];
    ngx_http_linegate_redis_args_t  *a;

    if (ngx_http_linegate_key_purchase(r->pool, &c->account, &c->worker_id,
                                       keys)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    a = &rc->args;
    ngx_http_linegate_redis_args_init(a);
    ngx_http_linegate_redis_arg_strs(a, keys,
                                     NGX_HTTP_LINEGATE_KEYS_PV_PURCHASE);
    ngx_http_linegate_redis_arg_str(a, &c->worker_id);
    ngx_http_linegate_redis_arg_cstr(a, c->intent ? "1" : "0");
    /* a claim taken for a dead worker's: its outbox, the fence */
    ngx_http_linegate_redis_arg_str(a, &c->account);
    ngx_http_linegate_redis_arg_str(a, &c->number);

    return ngx_http_linegate_reconcile_script(r, rc,
                                          NGX_HTTP_LINEGATE_SCRIPT_PV_INSPECT,
                                          NGX_HTTP_LINEGATE_KEYS_PV_INSPECT);
}


/* pv_inspect's answer, copied into the claim: NGX_OK, or NGX_ERROR */
static ngx_int_t
ngx_http_linegate_reconcile_inspected(ngx_http_request_t *r,
    ngx_http_linegate_reconcile_claim_t *c, redisReply *reply)
{
    int64_t      line, resv, released;
    ngx_str_t    s, *dst;
    ngx_uint_t   i;
    redisReply  *ob;

    /*
     * {line, reservation, {outbox}, customer, reservation's createdAt,
     * released}
     */
    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY
        || reply->elements < 6
        || ngx_http_linegate_reply_int(reply, 0, &line) != NGX_OK
        || ngx_http_linegate_reply_int(reply, 1, &resv) != NGX_OK
        || ngx_http_linegate_reply_int(reply, 5, &released) != NGX_OK
        || reply->element[2]->type != REDIS_REPLY_ARRAY)
    {
        return NGX_ERROR;
    }

    c->line = (line == 1);
    c->resv = (resv == 1);
    c->released = (released == 1);

    for (i = 3; i < 5; i++) {
        dst = (i == 3) ? &c->customer : &c->at;

        if (ngx_http_linegate_reply_str(reply, i, &s) != NGX_OK
            || s.len > NGX_HTTP_LINEGATE_RECONCILE_FIELD_MAX
            || ngx_http_linegate_pstr(r->pool, dst, s.data, s.len) == NULL)
        {
            return NGX_ERROR;
        }
    }

    /* the outbox: {name, value, ...}, or empty */
    ob = reply->element[2];

    if (ob->elements % 2
        || ob->elements > 2 * NGX_HTTP_LINEGATE_RECONCILE_OUTBOX)
    {
        return NGX_ERROR;
    }

    for (i = 0; i < ob->elements; i++) {
        if (ngx_http_linegate_reply_str(ob, i, &s) != NGX_OK
            || s.len > NGX_HTTP_LINEGATE_RECONCILE_FIELD_MAX
            || ngx_http_linegate_pstr(r->pool, &c->outbox[i], s.data, s.len)
               == NULL)
        {
            return NGX_ERROR;
        }

        if (i % 2 && ngx_http_linegate_reconcile_is(&c->outbox[i - 1],
                                                    "reason"))
        {
            c->reason = c->outbox[i];
        }
    }

    c->nfields = ob->elements;

    /* an outbox names why it waits for the run (in a key name, too) */
    if (c->nfields
        && (c->reason.len == 0
            || c->reason.len > NGX_HTTP_LINEGATE_RECONCILE_ID_MAX
            || !ngx_http_linegate_chars_are(c->reason.data, c->reason.len,
                                        NGX_HTTP_LINEGATE_CHARS_LOWER_WORD)))
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* SETTLE: pv_settle.lua in the fleet's slot, its policy above */
static ngx_int_t
ngx_http_linegate_reconcile_settle_claim(ngx_http_request_t *r,
    ngx_http_linegate_reconcile_t *rc, ngx_http_linegate_reconcile_claim_t *c)
{
    ngx_uint_t                       back, hold;
    ngx_http_linegate_redis_args_t  *a;
    ngx_http_linegate_pv_settle_t    st;

    if (c->intent) {
        /*
         * no number was claimed, so nothing was bought: the intent goes
         * (none of the confirm's steps before CLAIM writes a line or an
         * outbox; were there one, it is left as it is)
         */
        ngx_str_null(&c->reason);
        c->nfields = 0;
        back = 0;
        c->settled = c->released
                     ? "its reservation released, no number was claimed"
                     : "no number was claimed, nothing was reserved";

    } else if (c->nfields) {
        /*
         * its record or release wrote down why: queued once. The entry
         * of a purchase still reserved holds the number (the run returns
         * it when it releases the purchase, or records it), as the
         * confirm's own settle leaves it; else the number returns unless
         * a line holds it.
         */
        hold = ngx_http_linegate_reconcile_is(&c->reason, "record_failed")
               || ngx_http_linegate_reconcile_is(&c->reason, "worker_lost");
        back = !hold && !c->line;
        c->settled = back ? ", its number back in the inventory"
                     : c->line ? ", its number the line's"
                     : ", its number held by the entry";

    } else if (c->resv) {
        /* the confirm died between its reservation and its record */
        ngx_str_set(&c->reason, "worker_lost");
        back = 0;
        c->settled = ", its number held by the entry";

    } else if (c->line) {
        back = 0;
        c->settled = "recorded on its line";

    } else {
        back = 1;
        c->settled = "released, its number back in the inventory";
    }

    c->returned = back;

    ngx_memzero(&st, sizeof(ngx_http_linegate_pv_settle_t));

    st.claim = c->member;
    st.giveback = back;
    st.entry.account = c->account;
    st.entry.number = c->number;
    st.entry.worker_id = c->worker_id;
    st.entry.reason = c->reason;
    st.entry.customer = c->customer;
    st.entry.at = c->at;

    if (c->nfields) {
        /* the entry the confirm's record or release wrote, as it is */
        st.fields = c->outbox;
        st.nfields = c->nfields;
    }

    if (c->reason.len) {
        st.room = ngx_pnalloc(r->pool,
                              ngx_http_linegate_pv_settle_room(&c->account,
                                                           &c->worker_id,
                                                           c->reason.len));
        if (st.room == NULL) {
            return NGX_ERROR;
        }
    }

    a = &rc->args;
    ngx_http_linegate_redis_args_init(a);
    ngx_http_linegate_pv_settle_args(a, &st);

    return ngx_http_linegate_reconcile_script(r, rc,
                                          NGX_HTTP_LINEGATE_SCRIPT_PV_SETTLE,
                                          NGX_HTTP_LINEGATE_KEYS_PV_SETTLE);
}


/* pv_settle's answer {claimed, queued}: the claim is done, the next one */
static void
ngx_http_linegate_reconcile_claim_settled(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, redisReply *reply)
{
    int64_t                               claimed, queued;
    ngx_http_linegate_reconcile_t        *rc;
    ngx_http_linegate_reconcile_claim_t  *c;

    static ngx_str_t                      none = ngx_string("");

    rc = ctx->data;
    c = &rc->claim;

    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY
        || ngx_http_linegate_reply_int(reply, 0, &claimed) != NGX_OK
        || ngx_http_linegate_reply_int(reply, 1, &queued) != NGX_OK)
    {
        /* it may have run: idempotent, the next run settles it again */
        ngx_http_linegate_reconcile_claim_left(r, ctx, "store_unavailable");
        return;
    }

    ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                  NGX_HTTP_LINEGATE_LOG "reconciliation: purchase %V of "
                  "account \"%V\" (number \"%V\") in flight past "
                  "linegate_reconcile_lost_after: %s%V%s%s%s",
                  &c->worker_id, &c->account, &c->number,
                  c->reason.len ? "queued as " : "",
                  c->reason.len ? &c->reason : &none,
                  c->reason.len && queued == 0 ? " (queued before)" : "",
                  c->settled,
                  claimed == 0 ? " (its claim settled meanwhile)" : "");

    if (claimed == 0) {
        /* its confirm settled it meanwhile: that one's home stands */

    } else if (c->intent) {
        rc->claims_released += c->released;

    } else if (c->reason.len) {
        rc->claims_queued++;

    } else if (c->returned) {
        rc->claims_returned++;

    } else {
        rc->claims_kept++;
    }

    rc->ci++;

    ngx_http_linegate_reconcile_claim_next(r, ctx);
}


/* READ */

static ngx_int_t
ngx_http_linegate_reconcile_read(ngx_http_request_t *r,
    ngx_http_linegate_reconcile_t *rc)
{
    ngx_http_linegate_redis_args_t  *a;

    /* oldest first, from the start or past the last entry read */
    a = &rc->args;
    ngx_http_linegate_redis_args_init(a);
    ngx_http_linegate_redis_arg_cstr(a, "XRANGE");
    ngx_http_linegate_redis_arg_str(a,
        ngx_http_linegate_key_fixed(NGX_HTTP_LINEGATE_KEY_RECONCILE));

    if (rc->after.len) {
        ngx_http_linegate_redis_arg_str(a, &rc->after);

    } else {
        ngx_http_linegate_redis_arg_cstr(a, "-");
    }

    if (rc->wrapped) {
        /* round from the oldest to where the run before left off */
        ngx_http_linegate_redis_arg_str(a, &rc->cursor);

    } else {
        ngx_http_linegate_redis_arg_cstr(a, "+");
    }
    ngx_http_linegate_redis_arg_cstr(a, "COUNT");
    ngx_http_linegate_redis_arg_int(r, a, NGX_HTTP_LINEGATE_RECONCILE_BATCH);

    return ngx_http_linegate_redis_command(r, a,
                                        ngx_http_linegate_reconcile_stored);
}


static void
ngx_http_linegate_reconcile_entries(ngx_http_request_t *r,
    ngx_http_linegate_reconcile_t *rc, redisReply *reply)
{
    ngx_str_t                             id;
    ngx_uint_t                            i;
    redisReply                           *last;
    ngx_http_linegate_reconcile_entry_t  *e;

    /* a whole batch: more may follow, read past its last entry */
    rc->pending = reply->elements == NGX_HTTP_LINEGATE_RECONCILE_BATCH;

    if (reply->elements) {
        last = reply->element[reply->elements - 1];

        if (last->type != REDIS_REPLY_ARRAY || last->elements != 2
            || ngx_http_linegate_reply_str(last, 0, &id) != NGX_OK
            || (rc->after.data = ngx_pnalloc(r->pool, id.len + 1)) == NULL)
        {
            rc->pending = 0;

        } else {
            rc->after.data[0] = '(';
            ngx_memcpy(rc->after.data + 1, id.data, id.len);
            rc->after.len = id.len + 1;
        }
    }

    for (i = 0; i < reply->elements; i++) {

        if (rc->n == NGX_HTTP_LINEGATE_RECONCILE_MAX) {
            break;
        }

        e = &rc->entry[rc->n];

        if (ngx_http_linegate_reconcile_entry(r, e, reply->element[i])
            != NGX_OK)
        {
            /* not one of ours: for a human, named in the log */
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          NGX_HTTP_LINEGATE_LOG "reconciliation: entry "
                          "%uz of the reconcile stream is not a purchase: "
                          "skipped",
                          i);
            continue;
        }

        rc->n++;
    }
}


/* one XRANGE element: [id, [field, value, ...]], copied */
static ngx_int_t
ngx_http_linegate_reconcile_entry(ngx_http_request_t *r,
    ngx_http_linegate_reconcile_entry_t *e, redisReply *reply)
{
    u_char      *p;
    ngx_str_t    name, value, *dst;
    ngx_uint_t   j;
    redisReply  *f;

    /*
     * the slot may hold an entry skipped part-way: an entry writes only
     * the fields it has, and must inherit none (another's workspace would
     * make a purchase a Lines entry, another's subscription a Lines
     * invoice)
     */
    ngx_memzero(e, sizeof(ngx_http_linegate_reconcile_entry_t));

    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2
        || ngx_http_linegate_reply_str(reply, 0, &value) != NGX_OK
        || reply->element[1]->type != REDIS_REPLY_ARRAY)
    {
        return NGX_ERROR;
    }

    p = ngx_strlchr(value.data, value.data + value.len, '-');

    e->queued_ms = ngx_atoi(value.data, p ? (size_t) (p - value.data)
                                          : value.len);

    if (ngx_http_linegate_pstr(r->pool, &e->id, value.data, value.len)
        == NULL
        || e->queued_ms == NGX_ERROR)
    {
        return NGX_ERROR;
    }

    f = reply->element[1];

    for (j = 0; j + 1 < f->elements; j += 2) {
        if (ngx_http_linegate_reply_str(f, j, &name) != NGX_OK
            || ngx_http_linegate_reply_str(f, j + 1, &value) != NGX_OK
            || value.len > NGX_HTTP_LINEGATE_RECONCILE_FIELD_MAX)
        {
            return NGX_ERROR;
        }

        if (ngx_http_linegate_reconcile_is(&name, "account")) {
            dst = &e->account;

        } else if (ngx_http_linegate_reconcile_is(&name, "subscription_id")
                   || ngx_http_linegate_reconcile_is(&name, "invoice_id"))
        {
            dst = &e->subscription;

        } else if (ngx_http_linegate_reconcile_is(&name, "phone_number")) {
            dst = &e->number;

        } else if (ngx_http_linegate_reconcile_is(&name, "worker_id")) {
            dst = &e->worker_id;

        } else if (ngx_http_linegate_reconcile_is(&name, "reason")) {
            dst = &e->reason;

        } else if (ngx_http_linegate_reconcile_is(&name, "idempotency_key")) {
            dst = &e->idempotency_key;

        } else if (ngx_http_linegate_reconcile_is(&name, "customer")) {
            dst = &e->customer;

        } else if (ngx_http_linegate_reconcile_is(&name, "workspace")) {
            dst = &e->workspace;

        } else if (ngx_http_linegate_reconcile_is(&name, "line_request_id")) {
            dst = &e->line_request;

        } else if (ngx_http_linegate_reconcile_is(&name, "hold")) {
            dst = &e->hold;

        } else if (ngx_http_linegate_reconcile_is(&name, "at")) {
            e->at = ngx_http_linegate_reconcile_time(&value);
            continue;

        } else if (ngx_http_linegate_reconcile_is(&name, "to")) {
            e->to = ngx_http_linegate_reconcile_time(&value);
            continue;

        } else {
            continue;
        }

        if (ngx_http_linegate_pstr(r->pool, dst, value.data, value.len)
            == NULL)
        {
            return NGX_ERROR;
        }
    }

    if (e->at <= 0) {
        /* no time of purchase: the queuing's, a bound it cannot pass */
        e->at = e->queued_ms / 1000;
    }

    if (e->line_request.len) {
        e->lapsed = ngx_http_linegate_reconcile_is(&e->reason,
                                                   "reissue_lapsed");

        return e->workspace.len && e->reason.len ? NGX_OK : NGX_ERROR;
    }

    return e->account.len && e->worker_id.len && e->reason.len
           ? NGX_OK : NGX_ERROR;
}


/*
 * CUSTOMER: a Lines API entry with no invoice to name was queued with no
 * customer, which only a module before 2026-11-29 did (a GET's or a
 * webhook's reissue_lapsed of a request made before requests kept their
 * customer: d06d64b). Such a request was billed, and is reissued and
 * swept by payment_link and cancel, under the workspace's
 * stripeCustomerId (lr_manage), and an entry queued for it now carries
 * that one (lines_lapsed): the run reads it as the queuing would have
 * now. Safe to look under: the run takes only invoices whose
 * metadata[line_request_id] is the entry's request, whatever the
 * customer, so a customer the workspace moved to since finds none of
 * them (settled as no_invoice, as an entry queued today would be); the
 * workspace has none: left (no_customer), as before. Read each run, not
 * written back: the entry stays as queued.
 */
static ngx_int_t
ngx_http_linegate_reconcile_customer(ngx_http_request_t *r,
    ngx_http_linegate_reconcile_entry_t *e)
{
    ngx_str_t                       key;
    ngx_http_linegate_redis_args_t  a;

    e->customer_read = 1;

    if (ngx_http_linegate_key(r->pool, NGX_HTTP_LINEGATE_KEY_WS,
                              &e->workspace, NULL, &key)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    ngx_http_linegate_redis_args_init(&a);
    ngx_http_linegate_redis_arg_cstr(&a, "HGET");
    ngx_http_linegate_redis_arg_str(&a, &key);
    ngx_http_linegate_redis_arg_cstr(&a, "stripeCustomerId");

    return ngx_http_linegate_redis_command(r, &a,
                                          ngx_http_linegate_reconcile_stored);
}


/* LOOKUP */

static ngx_int_t
ngx_http_linegate_reconcile_lookup(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, ngx_http_linegate_reconcile_entry_t *e)
{
    u_char     *p;
    size_t      len;
    ngx_str_t   path;

    if (e->subscription.len) {
        if (!ngx_http_linegate_stripe_id_valid(&e->subscription)) {
            return NGX_ERROR;
        }

        len = sizeof("v1/subscriptions/") - 1 + e->subscription.len;

        path.data = ngx_pnalloc(r->pool, len);
        if (path.data == NULL) {
            return NGX_ERROR;
        }

        path.len = ngx_sprintf(path.data, e->line_request.len
                                          ? "v1/invoices/%V"
                                          : "v1/subscriptions/%V",
                               &e->subscription)
                   - path.data;

        return ngx_http_linegate_reconcile_stripe(r, ctx, NGX_HTTP_GET,
                                        &path, NULL, NULL,
                                        ngx_http_linegate_reconcile_looked_up);
    }

    /* ids are [A-Za-z0-9_]: nothing in the query needs encoding */
    if (!ngx_http_linegate_stripe_id_valid(&e->customer)) {
        return NGX_ERROR;
    }

    len = sizeof("v1/subscriptions?customer=&status=all&limit="
                 "&created[gte]=&created[lte]=&starting_after=") - 1
          + e->customer.len + 3 * NGX_INT64_LEN + e->page_after.len;

    path.data = ngx_pnalloc(r->pool, len);
    if (path.data == NULL) {
        return NGX_ERROR;
    }

    /* a Lines API add-on's invoice, or a provisioning subscription */
    p = ngx_sprintf(path.data, e->line_request.len
                               ? "v1/invoices?customer=%V"
                               : "v1/subscriptions?customer=%V&status=all",
                    &e->customer);
    p = ngx_sprintf(p, "&limit=%d&created[gte]=%T",
                    NGX_HTTP_LINEGATE_RECONCILE_PAGE,
                    e->at - NGX_HTTP_LINEGATE_RECONCILE_LOOKBACK);

    /*
     * reissue_lapsed: until an hour after the latest claim (its 'to'), as
     * payment_link's sweep lists (line_manage.c): a window ending now
     * grew with the time since, and with it the invoices of a customer
     * billed often, until the entry could never be listed whole
     */
    if (e->lapsed && e->to > 0) {
        p = ngx_sprintf(p, "&created[lte]=%T",
                        e->to + NGX_HTTP_LINEGATE_RECONCILE_LOOKAHEAD);
    }

    return ngx_http_linegate_reconcile_page(r, ctx, &path, p, &e->page_after,
                                        ngx_http_linegate_reconcile_looked_up);
}


/* a page of a Stripe list, past `after` when one is named */
static ngx_int_t
ngx_http_linegate_reconcile_page(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, ngx_str_t *path, u_char *p,
    ngx_str_t *after, ngx_http_linegate_resume_pt resume)
{
    if (after->len) {
        p = ngx_sprintf(p, "&starting_after=%V", after);
    }

    path->len = p - path->data;

    return ngx_http_linegate_reconcile_stripe(r, ctx, NGX_HTTP_GET, path,
                                              NULL, NULL, resume);
}


static void
ngx_http_linegate_reconcile_looked_up(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx)
{
    ngx_int_t                             rv;
    ngx_http_linegate_reconcile_t        *rc;
    ngx_http_linegate_reconcile_entry_t  *e;

    rc = ctx->data;
    e = &rc->entry[rc->i];

    switch (ngx_http_linegate_stripe_result(ctx)) {

    case NGX_HTTP_LINEGATE_STRIPE_OK:
        break;

    case NGX_HTTP_LINEGATE_STRIPE_REFUSED:
        if (ctx->stripe_status == NGX_HTTP_NOT_FOUND && e->subscription.len) {
            e->state = NGX_HTTP_LINEGATE_RECONCILE_ABSENT;
            ngx_http_linegate_reconcile_decide(r, ctx, e);
            return;
        }

        /*
         * this entry's lookup (a customer Stripe does not know): a
         * human's call; the entries behind it are looked up
         */

        /* fall through */

    default:
        ngx_http_linegate_reconcile_stripe_failed(r, ctx, "the lookup", NULL,
                                                  "stripe_refused",
                                                  "stripe_unavailable");
        return;
    }

    if (e->subscription.len) {
        e->found = e->subscription;
        ngx_http_linegate_reconcile_object(e, ctx->stripe_json);
        ngx_http_linegate_reconcile_decide(r, ctx, e);
        return;
    }

    rv = ngx_http_linegate_reconcile_find(ctx, e);

    if (rv == NGX_AGAIN) {
        /* on the next page */
        if (++e->pages < NGX_HTTP_LINEGATE_RECONCILE_PAGES) {
            if (ngx_http_linegate_pstr(r->pool, &e->page_after,
                                       e->page_after.data, e->page_after.len))
            {
                ngx_http_linegate_reconcile_next(r, ctx,
                                          NGX_HTTP_LINEGATE_RECONCILE_LOOKUP);
                return;
            }
        }

        ngx_http_linegate_reconcile_defer(r, ctx, "too_many_subscriptions",
                                          0);
        return;
    }

    if (rv == NGX_ERROR) {
        ngx_http_linegate_reconcile_defer(r, ctx, "stripe_unavailable", 1);
        return;
    }

    ngx_http_linegate_reconcile_decide(r, ctx, e);
}


/*
 * The purchase among a page of the customer's subscriptions, by
 * metadata[worker_id]: NGX_OK (e->found and e->state set, or ABSENT),
 * NGX_AGAIN (not on this page, more follow: e->page_after names the
 * last one, in Stripe's JSON), NGX_ERROR (not a list).
 */
static ngx_int_t
ngx_http_linegate_reconcile_find(ngx_http_linegate_ctx_t *ctx,
    ngx_http_linegate_reconcile_entry_t *e)
{
    size_t       i, n;
    json_t      *data, *sub, *worker, *id;
    ngx_str_t   *want, found;
    const char  *s, *field;

    data = json_object_get(ctx->stripe_json, "data");
    if (!json_is_array(data)) {
        return NGX_ERROR;
    }

    n = json_array_size(data);
    id = NULL;

    /* confirm and create name their purchase in the object's metadata */
    if (e->line_request.len) {
        field = "line_request_id";
        want = &e->line_request;

    } else {
        field = "worker_id";
        want = &e->worker_id;
    }

    for (i = 0; i < n; i++) {
        sub = json_array_get(data, i);
        id = json_object_get(sub, "id");
        worker = json_object_get(json_object_get(sub, "metadata"), field);

        if (!json_is_string(id) || !json_is_string(worker)) {
            continue;
        }

        s = json_string_value(worker);

        if (json_string_length(worker) != want->len
            || ngx_strncmp(s, want->data, want->len) != 0)
        {
            continue;
        }

        if (ngx_http_linegate_reconcile_passed(e, sub)) {
            /* another entry presents it to a human (MARK) */
            continue;
        }

        ngx_http_linegate_reconcile_object(e, sub);

        if (e->lapsed && ngx_http_linegate_reconcile_lapsed_skip(e, sub)) {
            continue;
        }

        if (e->line_request.len && !e->draft
            && ngx_http_linegate_reconcile_is(&e->reason,
                                              "invoice_unrepaired"))
        {
            /*
             * a draft whose id was never seen: a finalized invoice of the
             * request is the one it stored (payment_link's reissues)
             */
            continue;
        }

        /* an id Stripe should not send is not the entry's to name */
        found.data = (u_char *) json_string_value(id);
        found.len = json_string_length(id);

        if (!ngx_http_linegate_stripe_id_valid(&found)) {
            return NGX_ERROR;
        }

        e->found = found;

        return NGX_OK;
    }

    e->state = NGX_HTTP_LINEGATE_RECONCILE_ABSENT;
    e->draft = 0;
    e->url.len = 0;

    if (!json_is_true(json_object_get(ctx->stripe_json, "has_more"))) {
        return NGX_OK;
    }

    if (!json_is_string(id)) {
        return NGX_ERROR;
    }

    found.data = (u_char *) json_string_value(id);
    found.len = json_string_length(id);

    if (!ngx_http_linegate_stripe_id_valid(&found)) {
        return NGX_ERROR;
    }

    /* still Stripe's JSON, freed with the next call: copied by the caller */
    e->page_after = found;

    return NGX_AGAIN;
}


/* a paid invoice MARK passed over (another entry presents it) */
static ngx_uint_t
ngx_http_linegate_reconcile_passed(ngx_http_linegate_reconcile_entry_t *e,
    json_t *sub)
{
    json_t      *id;
    ngx_uint_t   i;

    id = json_object_get(sub, "id");

    for (i = 0; json_is_string(id) && i < e->npassed; i++) {
        if (json_string_length(id) == e->passed[i].len
            && ngx_strncmp(json_string_value(id), e->passed[i].data,
                           e->passed[i].len)
               == 0)
        {
            return 1;
        }
    }

    return 0;
}


/*
 * reissue_lapsed: a request that ended names its own invoice, void,
 * uncollectible (payable on purpose) or paid; the one a lapsed claim left
 * unstored is a draft or open, or paid (at finalization, from the
 * customer's credit balance, or before the run voided it): a paid one is
 * read against the request (FENCE, check), and passed over once the
 * request is found to name it
 */
static ngx_uint_t
ngx_http_linegate_reconcile_lapsed_skip(
    ngx_http_linegate_reconcile_entry_t *e, json_t *sub)
{
    json_t  *id;

    id = json_object_get(sub, "id");

    if (e->named.len && json_is_string(id)
        && json_string_length(id) == e->named.len
        && ngx_strncmp(json_string_value(id), e->named.data, e->named.len)
           == 0)
    {
        /*
         * the request's own, whatever its status: one still awaiting
         * payment (a journal's entry, reconcile_lapsed_found) may name
         * an open invoice a payment_link stored since, never discarded
         */
        return 1;
    }

    if (e->draft || ngx_http_linegate_reconcile_is_status(sub, "open")) {
        return 0;
    }

    /* a paid one left for a human already: the others' turn */
    return e->state != NGX_HTTP_LINEGATE_RECONCILE_PAID || e->left.len;
}


static ngx_uint_t
ngx_http_linegate_reconcile_is_status(json_t *obj, const char *status)
{
    const char  *s;

    s = json_string_value(json_object_get(obj, "status"));

    return s != NULL && ngx_strcmp(s, status) == 0;
}


/* what a Stripe object's status says of the purchase */
static void
ngx_http_linegate_reconcile_object(ngx_http_linegate_reconcile_entry_t *e,
    json_t *obj)
{
    const char  *status;

    e->state = ngx_http_linegate_reconcile_status(obj);

    status = json_string_value(json_object_get(obj, "status"));
    e->draft = status != NULL && ngx_strcmp(status, "draft") == 0;

    /* an invoice's link: a paid one stored on its request keeps it */
    e->url.data = (u_char *) json_string_value(json_object_get(obj,
                                                  "hosted_invoice_url"));
    e->url.len = e->url.data ? ngx_strlen(e->url.data) : 0;

    /* no link rather than one not fit to replay to clients */
    if (e->url.len && !ngx_http_linegate_stripe_url_valid(&e->url)) {
        ngx_str_null(&e->url);
    }

    e->made_seq = ngx_http_linegate_lines_invoice_seq(obj);
    e->made_at = ngx_http_linegate_lines_created(obj);
}


static ngx_http_linegate_reconcile_found_e
ngx_http_linegate_reconcile_status(json_t *sub)
{
    const char  *status;

    status = json_string_value(json_object_get(sub, "status"));

    if (status == NULL) {
        /* no status: taken as live, so that it is never left charging */
        return NGX_HTTP_LINEGATE_RECONCILE_LIVE;
    }

    if (ngx_strcmp(status, "canceled") == 0
        || ngx_strcmp(status, "incomplete_expired") == 0
        || ngx_strcmp(status, "void") == 0)
    {
        return NGX_HTTP_LINEGATE_RECONCILE_CANCELED;
    }

    if (ngx_strcmp(status, "paid") == 0) {
        return NGX_HTTP_LINEGATE_RECONCILE_PAID;
    }

    return NGX_HTTP_LINEGATE_RECONCILE_LIVE;
}


/* the policy: what Stripe has, and why the entry was queued */
static void
ngx_http_linegate_reconcile_decide(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, ngx_http_linegate_reconcile_entry_t *e)
{
    if (e->found.len) {
        /* Stripe's JSON is freed with the next call */
        if (ngx_http_linegate_pstr(r->pool, &e->found, e->found.data,
                                   e->found.len)
            == NULL
            || (e->url.len
                && ngx_http_linegate_pstr(r->pool, &e->url, e->url.data,
                                          e->url.len)
                   == NULL))
        {
            e->found.len = 0;
            ngx_http_linegate_reconcile_defer(r, ctx, "no_memory", 1);
            return;
        }

    } else {
        e->url.len = 0;
    }

    /*
     * a purchase's subscription cancelled before this run (by an earlier
     * one whose refund failed, by someone at Stripe): no line came of it,
     * so what it paid is refunded as if this run had cancelled it
     */
    e->undone = e->line_request.len == 0 && e->found.len
                && e->state == NGX_HTTP_LINEGATE_RECONCILE_CANCELED;

    if (e->state == NGX_HTTP_LINEGATE_RECONCILE_PAID) {
        if (e->line_request.len) {
            /* its store may have landed late: read again (FENCE, check) */
            ngx_http_linegate_reconcile_next(r, ctx,
                                          NGX_HTTP_LINEGATE_RECONCILE_FENCE);
            return;
        }

        /* the customer paid what no purchase names: a human's call */
        ngx_http_linegate_reconcile_defer(r, ctx, "invoice_paid", 0);
        return;
    }

    if (ngx_http_linegate_reconcile_is(&e->reason, "record_failed")) {

        if (e->state == NGX_HTTP_LINEGATE_RECONCILE_LIVE) {
            ngx_http_linegate_reconcile_next(r, ctx,
                                          NGX_HTTP_LINEGATE_RECONCILE_RECORD);
            return;
        }

        /* nothing is charging: nothing is owed */
        ngx_http_linegate_reconcile_next(r, ctx,
                                         NGX_HTTP_LINEGATE_RECONCILE_RELEASE);
        return;
    }

    /*
     * stripe_outcome_unknown, reservation_missing: no line was given;
     * worker_lost: nor was any answer, and the number is still held
     */

    if (e->lapsed && e->state == NGX_HTTP_LINEGATE_RECONCILE_LIVE
        && e->discarded >= NGX_HTTP_LINEGATE_RECONCILE_LAPSED_MAX)
    {
        /* one more than it discards at most: a human's */
        ngx_http_linegate_reconcile_defer(r, ctx, "too_many_invoices", 0);
        return;
    }

    if (e->state == NGX_HTTP_LINEGATE_RECONCILE_LIVE) {
        /* a Lines invoice: not before its request is read again, fenced */
        ngx_http_linegate_reconcile_next(r, ctx,
                                         e->line_request.len
                                         ? NGX_HTTP_LINEGATE_RECONCILE_FENCE
                                         : NGX_HTTP_LINEGATE_RECONCILE_CANCEL);
        return;
    }

    if (e->lapsed && e->left.len) {
        /*
         * none payable left: the paid one a human is to look at (logged
         * when found), held once (named_missing) or deferred every run
         */
        e->found = e->left;
        e->url.len = 0;

        if (e->hold_as) {
            e->outcome = "held";
            ngx_http_linegate_reconcile_next(r, ctx,
                                         NGX_HTTP_LINEGATE_RECONCILE_RESOLVE);
            return;
        }

        ngx_http_linegate_reconcile_defer(r, ctx, "invoice_paid", 0);
        return;
    }

    if (e->lapsed && e->adopted.len) {
        /* the lapsed claim's paid invoice adopted: the entry names it */
        e->found = e->adopted;
        e->url.len = 0;
        ngx_http_linegate_reconcile_settle(r, ctx, "settled");
        return;
    }

    if (e->lapsed) {
        /* none (left): what became of those it discarded, if any */
        ngx_http_linegate_reconcile_unbilled(r, ctx, e,
                                             e->discarded_as
                                             ? e->discarded_as
                                             : "no_invoice");
        return;
    }

    if (e->line_request.len) {
        ngx_http_linegate_reconcile_unbilled(r, ctx, e,
                                  e->state
                                  == NGX_HTTP_LINEGATE_RECONCILE_CANCELED
                                  ? "already_void" : "no_invoice");
        return;
    }

    ngx_http_linegate_reconcile_unbilled(r, ctx, e,
                                  e->state
                                  == NGX_HTTP_LINEGATE_RECONCILE_CANCELED
                                  ? "already_canceled" : "no_subscription");
}


/* nothing charges (any more): settled, once a held number is released */
static void
ngx_http_linegate_reconcile_unbilled(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, ngx_http_linegate_reconcile_entry_t *e,
    const char *outcome)
{
    if (ngx_http_linegate_reconcile_is(&e->reason, "worker_lost")
        || (e->line_request.len == 0
            && ngx_http_linegate_reconcile_is(&e->reason, "record_failed")))
    {
        /* the reservation a dead worker held, or a paid one: dropped */
        e->released = outcome;
        ngx_http_linegate_reconcile_next(r, ctx,
                                         NGX_HTTP_LINEGATE_RECONCILE_RELEASE);
        return;
    }

    ngx_http_linegate_reconcile_settle(r, ctx, outcome);
}


/*
 * reissue_lapsed: one of the request's invoices discarded (as: voided,
 * deleted; NULL: gone already); the list is read again from its first
 * page for the next, until none is left (decide settles it then, the
 * entry naming the last one found). The dead worker may have indexed it
 * (lg:invoice:<X>, LINK_INDEX) before it died: no request names it, so
 * the index goes (a durable DEL).
 */
static void
ngx_http_linegate_reconcile_swept(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, ngx_http_linegate_reconcile_entry_t *e,
    const char *as)
{
    ngx_http_linegate_lines_invoice_unindex(r, &e->found);

    e->discarded_as = as;
    e->discarded++;

    ngx_str_null(&e->page_after);
    e->pages = 0;

    ngx_http_linegate_reconcile_next(r, ctx,
                                     NGX_HTTP_LINEGATE_RECONCILE_LOOKUP);
}


/* RECORD */

static ngx_int_t
ngx_http_linegate_reconcile_record(ngx_http_request_t *r,
    ngx_http_linegate_reconcile_t *rc, ngx_http_linegate_reconcile_entry_t *e)
{
    ngx_str_t                        keys[
                                        NGX_HTTP_LINEGATE_KEYS_PV_PURCHASE];
    ngx_http_linegate_redis_args_t  *a;

    if (ngx_http_linegate_reconcile_keys(r, e, keys) != NGX_OK) {
        return NGX_ERROR;
    }

    /* pv_record.lua's arguments, as confirm sends them: the entry's number */
    a = &rc->args;
    ngx_http_linegate_redis_args_init(a);
    ngx_http_linegate_redis_arg_strs(a, keys,
                                     NGX_HTTP_LINEGATE_KEYS_PV_PURCHASE);
    ngx_http_linegate_redis_arg_str(a, &e->worker_id);
    ngx_http_linegate_redis_arg_str(a, &e->found);
    ngx_http_linegate_redis_arg_int(r, a, ngx_http_linegate_now_ms());
    ngx_http_linegate_redis_arg_str(a, &e->account);
    ngx_http_linegate_redis_arg_str(a, &e->idempotency_key);
    ngx_http_linegate_redis_arg_str(a, &e->customer);
    ngx_http_linegate_redis_arg(a, rc->iso, NGX_HTTP_LINEGATE_ISO_LEN);
    ngx_http_linegate_redis_arg_str(a, &e->number);

    return ngx_http_linegate_reconcile_script(r, rc,
                                          NGX_HTTP_LINEGATE_SCRIPT_PV_RECORD,
                                          NGX_HTTP_LINEGATE_KEYS_PV_RECORD);
}


/* RELEASE */

static ngx_int_t
ngx_http_linegate_reconcile_release(ngx_http_request_t *r,
    ngx_http_linegate_reconcile_t *rc, ngx_http_linegate_reconcile_entry_t *e)
{
    ngx_str_t                        keys[
                                        NGX_HTTP_LINEGATE_KEYS_PV_PURCHASE];
    ngx_http_linegate_redis_args_t  *a;
    ngx_http_linegate_main_conf_t   *lmcf;

    lmcf = ngx_http_get_module_main_conf(r, ngx_http_linegate_module);

    a = &rc->args;

    if (e->line_request.len) {
        /*
         * lr_release.lua, as the request's own failure step sends it: the
         * reservation dropped, the idempotency key it holds freed (the
         * entry's idempotency_key is the key's digest)
         */
        ngx_http_linegate_lines_release_args(r, a, &e->workspace,
                                             &e->line_request,
                                             &e->idempotency_key,
                                        NGX_HTTP_LINEGATE_RECONCILE_LR_MARK);

        /* its keys could not be named (no memory) */
        if (a->argc < 0) {
            return NGX_ERROR;
        }

        return ngx_http_linegate_reconcile_script(r, rc,
                                          NGX_HTTP_LINEGATE_SCRIPT_LR_RELEASE,
                                          a->nkeys);
    }

    if (ngx_http_linegate_reconcile_keys(r, e, keys) != NGX_OK) {
        return NGX_ERROR;
    }

    /* pv_release.lua's arguments, with no reason: no outbox */
    ngx_http_linegate_redis_args_init(a);
    ngx_http_linegate_redis_arg_strs(a, keys,
                                     NGX_HTTP_LINEGATE_KEYS_PV_PURCHASE);
    ngx_http_linegate_redis_arg_str(a, &e->worker_id);
    ngx_http_linegate_redis_arg_int(r, a, ngx_http_linegate_now_ms());
    ngx_http_linegate_redis_arg_int(r, a, lmcf->prov_daily);
    ngx_http_linegate_redis_arg_int(r, a, lmcf->prov_monthly);
    ngx_http_linegate_redis_arg_cstr(a, "");
    ngx_http_linegate_redis_arg_str(a, &e->account);
    ngx_http_linegate_redis_arg_str(a, &e->idempotency_key);
    ngx_http_linegate_redis_arg_str(a, &e->customer);
    ngx_http_linegate_redis_arg(a, rc->iso, NGX_HTTP_LINEGATE_ISO_LEN);
    ngx_http_linegate_redis_arg_str(a, &e->number);

    return ngx_http_linegate_reconcile_script(r, rc,
                                          NGX_HTTP_LINEGATE_SCRIPT_PV_RELEASE,
                                          NGX_HTTP_LINEGATE_KEYS_PV_RELEASE);
}


/*
 * FENCE: lr_void_fence.lua, the workspace's slot, before a Lines invoice
 * is voided or deleted. The entry was queued from what the sweep read,
 * but the request's worker may have been alive, cut off from Redis: its
 * store, sent again after its reply was lost, can land any time after.
 * Read again here, a request that names the invoice keeps it; one that
 * does not is marked in the same step, so that a store landing later is
 * refused (its worker then discards the invoice too) rather than naming
 * an invoice this run voids.
 */
static ngx_int_t
ngx_http_linegate_reconcile_fence(ngx_http_request_t *r,
    ngx_http_linegate_reconcile_t *rc, ngx_http_linegate_reconcile_entry_t *e)
{
    ngx_str_t                        key;
    ngx_http_linegate_redis_args_t  *a;

    if (ngx_http_linegate_key(r->pool, NGX_HTTP_LINEGATE_KEY_WS_LR,
                              &e->workspace, &e->line_request, &key)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    a = &rc->args;
    ngx_http_linegate_redis_args_init(a);
    ngx_http_linegate_redis_arg_str(a, &key);
    ngx_http_linegate_redis_arg_str(a, &e->workspace);
    ngx_http_linegate_redis_arg_str(a, &e->line_request);
    ngx_http_linegate_redis_arg_str(a, &e->found);

    if (e->state == NGX_HTTP_LINEGATE_RECONCILE_PAID) {
        /* not discarded: read only, nothing fenced */
        ngx_http_linegate_redis_arg_cstr(a, "check");
    }

    return ngx_http_linegate_reconcile_script(r, rc,
                                  NGX_HTTP_LINEGATE_SCRIPT_LR_VOID_FENCE, 1);
}


/*
 * FENCE answered: 0, the request names the invoice (stored late; a paid
 * one, read only: its status after the code); 1, discard it (a paid one:
 * the request moved on, a human's); 2 (a paid invoice, read only), the
 * request still awaits payment with no invoice, its hash after the code;
 * 4 (the same), it awaits payment on another invoice, named after the
 * code, and the request's invoiceSeq: a reissue_lapsed entry's paid
 * invoice is the lapsed claim's if a claim made it (metadata
 * [invoice_seq], none past invoiceSeq; NAMED checks it is past the
 * named one's), the customer paid it, and it is adopted (NAMED) unless
 * the named one is paid too; any other, a human's.
 */
static void
ngx_http_linegate_reconcile_fenced(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, redisReply *reply, int64_t code)
{
    ngx_str_t                             named;
    const char                           *why;
    ngx_http_linegate_reconcile_t        *rc;
    ngx_http_linegate_reconcile_entry_t  *e;

    rc = ctx->data;
    e = &rc->entry[rc->i];

    if (code == 0
        && (e->state == NGX_HTTP_LINEGATE_RECONCILE_PAID || e->lapsed))
    {
        /*
         * reissue_lapsed: the request's own invoice, open too when it
         * still awaits payment (a journal's entry, a payment_link having
         * stored a new one since): passed over, the others looked for
         */
        ngx_http_linegate_reconcile_fenced_named(r, ctx, reply);
        return;
    }

    if (code == 0) {
        /*
         * its store landed after the sweep: the request awaits payment
         * on this invoice, a normal one; nothing to release either
         */
        ngx_http_linegate_reconcile_settle(r, ctx, "stored_late");
        return;
    }

    if (e->state != NGX_HTTP_LINEGATE_RECONCILE_PAID) {
        if (code == 1) {
            ngx_http_linegate_reconcile_next(r, ctx,
                                          NGX_HTTP_LINEGATE_RECONCILE_CANCEL);
            return;
        }

        ngx_http_linegate_reconcile_defer(r, ctx, "store_unavailable", 1);
        return;
    }

    if (code == 2 && reply->elements < 2) {
        ngx_http_linegate_reconcile_defer(r, ctx, "store_unavailable", 1);
        return;
    }

    if (code == 2
        && ngx_http_linegate_reconcile_is(&e->reason, "worker_lost"))
    {
        /*
         * the customer paid for this request, whose creation died before
         * it stored the invoice: stored on it and promoted, as a live
         * creation does with an invoice Stripe paid at finalization
         */
        if (ngx_http_linegate_reconcile_paid_body(r, rc, e,
                                                  reply->element[1])
            != NGX_OK)
        {
            ngx_http_linegate_reconcile_defer(r, ctx, "no_memory", 1);
            return;
        }

        ngx_http_linegate_reconcile_next(r, ctx,
                                      NGX_HTTP_LINEGATE_RECONCILE_PAID_INDEX);
        return;
    }

    if (code == 4 && e->lapsed) {
        if (reply->elements < 3
            || ngx_http_linegate_reply_str(reply, 1, &named) != NGX_OK
            || !ngx_http_linegate_stripe_id_valid(&named)
            || ngx_http_linegate_reply_int(reply, 2, &e->claims.last_seq)
               != NGX_OK
            || ngx_http_linegate_pstr(r->pool, &e->replaced, named.data,
                                      named.len)
               == NULL)
        {
            ngx_http_linegate_reconcile_defer(r, ctx, "store_unavailable", 1);
            return;
        }

        /* what needs no named invoice first: NAMED reads it */
        e->claims.named_seq = 0;
        e->claims.named_at = NGX_HTTP_LINEGATE_LAPSED_UNREAD;
        e->claims.from = e->at;
        e->claims.to = e->to;

        why = ngx_http_linegate_lines_lapsed_made(&e->claims, e->made_seq,
                                                  e->made_at);
        if (why != NULL) {
            ngx_http_linegate_reconcile_not_made(r, ctx, why);
            return;
        }

        ngx_http_linegate_reconcile_next(r, ctx,
                                         NGX_HTTP_LINEGATE_RECONCILE_NAMED);
        return;
    }

    if (code == 1 || code == 2 || code == 4) {
        ngx_http_linegate_reconcile_paid_left(r, ctx,
                                  code == 2 ? "awaits payment with no "
                                              "invoice, and its entry is "
                                              "not a lost creation's"
                                  : e->lapsed ? "does not name it (made "
                                              "by a reissue whose claim "
                                              "lapsed, and paid)"
                                            : "no longer awaits payment "
                                              "without an invoice "
                                              "(released, or naming "
                                              "another invoice)");
        return;
    }

    ngx_http_linegate_reconcile_defer(r, ctx, "store_unavailable", 1);
}


/*
 * FENCE (check) answered {0, status}: the request names the paid invoice.
 * Settled by its payment (provisioning, active...), it is stored late;
 * still awaiting payment, its payment never reached it (the invoice.paid
 * webhook came before the index, and was acknowledged as unknown; the
 * store then landed, sent again after its reply was lost): promoted, as
 * PAID_SETTLE does (the index again first). reissue_lapsed: the request's
 * own invoice (paid, or open: FENCE 0 of a request awaiting payment),
 * passed over; its other invoices are looked for.
 */
static void
ngx_http_linegate_reconcile_fenced_named(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, redisReply *reply)
{
    ngx_str_t                             status;
    ngx_http_linegate_reconcile_t        *rc;
    ngx_http_linegate_reconcile_entry_t  *e;

    rc = ctx->data;
    e = &rc->entry[rc->i];

    if (e->lapsed) {
        e->named = e->found;
        ngx_str_null(&e->page_after);
        e->pages = 0;

        ngx_http_linegate_reconcile_next(r, ctx,
                                         NGX_HTTP_LINEGATE_RECONCILE_LOOKUP);
        return;
    }

    if (ngx_http_linegate_reply_str(reply, 1, &status) != NGX_OK) {
        /* a draft or open invoice the request names: its own */
        ngx_http_linegate_reconcile_settle(r, ctx, "stored_late");
        return;
    }

    if (ngx_http_linegate_reconcile_is(&status, "awaiting_payment")) {
        /* the request names it: no 201 to keep, the promotion alone */
        ngx_str_set(&rc->paid_body, "");

        ngx_http_linegate_reconcile_next(r, ctx,
                                      NGX_HTTP_LINEGATE_RECONCILE_PAID_INDEX);
        return;
    }

    if (ngx_http_linegate_reconcile_is(&status, "canceled")) {
        /*
         * paid, and nothing gives the line: never reopened by a run. Its
         * payment is a paid_after_cancel's (the webhook's, a GET's):
         * MARK looks at that marker
         */
        e->canceled = 1;
        ngx_http_linegate_reconcile_paid_left(r, ctx, "was canceled");
        return;
    }

    /* settled already (its payment reached it): nothing left to do */
    ngx_http_linegate_reconcile_settle(r, ctx, "stored_late");
}


/*
 * The 201 of a creation whose invoice Stripe paid at finalization, the
 * request paid (lines-api.md): what a retry with the key the dead
 * creation held replays once PAID_SETTLE kept it. From the request's hash
 * as FENCE read it, before the step that promotes it.
 */
static ngx_int_t
ngx_http_linegate_reconcile_paid_body(ngx_http_request_t *r,
    ngx_http_linegate_reconcile_t *rc, ngx_http_linegate_reconcile_entry_t *e,
    redisReply *flat)
{
    u_char                    *p;
    ngx_http_linegate_lr_t    *lr;
    ngx_http_linegate_line_t   line;

    /* what line_parse reads of a request: its workspace, today */
    lr = ngx_pcalloc(r->pool, sizeof(ngx_http_linegate_lr_t));
    p = ngx_pnalloc(r->pool, NGX_HTTP_LINEGATE_ISO_LEN);

    if (lr == NULL || p == NULL) {
        return NGX_ERROR;
    }

    lr->ws = e->workspace;
    lr->id = e->line_request;
    lr->date.data = p;
    lr->date.len = ngx_http_linegate_utc_date(p, ngx_http_linegate_now_ms())
                   - p;

    if (ngx_http_linegate_line_parse(r, lr, flat, &line) != NGX_OK) {
        return NGX_ERROR;
    }

    ngx_str_set(&line.status, "provisioning");
    ngx_str_set(&line.payment_status, "paid");
    line.invoice_id = e->found;
    line.payment_url = e->url;

    return ngx_http_linegate_line_status_body(r, &line, &rc->paid_body);
}


/*
 * PAID_INDEX: the invoice's webhook index, answered OK before the step
 * that makes the request name it, as for any store; on a cluster the
 * set-up member in the same round trip (lr_setup.h), the promotion's
 * entry being relayed after the step
 */
static ngx_int_t
ngx_http_linegate_reconcile_paid_index(ngx_http_request_t *r,
    ngx_http_linegate_reconcile_t *rc, ngx_http_linegate_reconcile_entry_t *e)
{
    ngx_http_linegate_redis_args_t  *a;
    ngx_http_linegate_main_conf_t   *lmcf;

    lmcf = ngx_http_get_module_main_conf(r, ngx_http_linegate_module);

    ngx_str_null(&rc->paid_setup);

    a = ngx_palloc(r->pool, 2 * sizeof(ngx_http_linegate_redis_args_t));

    if (a == NULL
        || ngx_http_linegate_lines_invoice_index(r->pool, &e->found,
                                                 &e->workspace,
                                                 &e->line_request, &a[0])
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (!lmcf->redis_cluster) {
        return ngx_http_linegate_redis_command(r, &a[0],
                                          ngx_http_linegate_reconcile_stored);
    }

    if (ngx_http_linegate_lr_setup_member(r->pool, &e->workspace,
                                          &e->line_request, &rc->paid_setup)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    ngx_http_linegate_lr_setup_add_args(r, &a[1], &rc->paid_setup);

    if (ngx_http_linegate_redis_pipeline(r, 2, a,
                                         ngx_http_linegate_reconcile_stored)
        != NGX_OK)
    {
        /* not sent: no member */
        ngx_str_null(&rc->paid_setup);
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* PAID_SETTLE: lr_invoice_settle.lua, the workspace's slot */
static ngx_int_t
ngx_http_linegate_reconcile_paid_settle(ngx_http_request_t *r,
    ngx_http_linegate_reconcile_t *rc, ngx_http_linegate_reconcile_entry_t *e)
{
    ngx_http_linegate_redis_args_t  *a;
    ngx_http_linegate_main_conf_t   *lmcf;

    lmcf = ngx_http_get_module_main_conf(r, ngx_http_linegate_module);

    a = &rc->args;
    ngx_http_linegate_redis_args_init(a);
    ngx_http_linegate_redis_arg_str(a, &e->workspace);
    ngx_http_linegate_redis_arg_str(a, &e->line_request);
    ngx_http_linegate_redis_arg_str(a, &e->found);
    ngx_http_linegate_redis_arg_str(a, &e->url);
    ngx_http_linegate_redis_arg_int(r, a, ngx_http_linegate_now_ms());
    ngx_http_linegate_redis_arg(a, rc->iso, NGX_HTTP_LINEGATE_ISO_LEN);
    /* the entry's idempotency_key is the digest the request held */
    ngx_http_linegate_redis_arg_str(a, &e->idempotency_key);
    ngx_http_linegate_redis_arg_int(r, a, NGX_HTTP_CREATED);
    ngx_http_linegate_redis_arg_str(a, &rc->paid_body);
    ngx_http_linegate_redis_arg_int(r, a, lmcf->idempotency_ttl);
    ngx_http_linegate_redis_arg_cstr(a, lmcf->redis_cluster ? "c" : "w");
    /* reissue_lapsed: the invoice the paid one replaces ("": none) */
    ngx_http_linegate_redis_arg_str(a, &e->replaced);
    /* adopted: the claim's fields go, unless one is held this long */
    ngx_http_linegate_redis_arg_int(r, a, NGX_HTTP_LINEGATE_LR_REISSUE_HOLD);

    /* KEYS[1..5] the request's, KEYS[6] the set-up stream (one Redis) */
    ngx_http_linegate_lines_request_keys(r->pool, a, &e->workspace,
                                         &e->line_request,
                                         &e->idempotency_key);

    if (!lmcf->redis_cluster) {
        ngx_http_linegate_redis_arg_key(a,
            ngx_http_linegate_key_fixed(NGX_HTTP_LINEGATE_KEY_PROVISIONING));
    }

    if (a->argc < 0) {
        return NGX_ERROR;
    }

    return ngx_http_linegate_reconcile_script(r, rc,
                                  NGX_HTTP_LINEGATE_SCRIPT_LR_INVOICE_SETTLE,
                                  a->nkeys);
}


/*
 * PAID_SETTLE answered: {1, changed, channelType, lineType}, the request
 * names the paid invoice and is promoted (a cluster's set-up entry then
 * relayed, if this step made it); {0}, it moved on since FENCE read it:
 * a human's. No answer: the entry stays; the next run finds the request
 * naming the invoice (stored_late) or not, and a set-up member written
 * is the sweep's.
 */
static void
ngx_http_linegate_reconcile_paid_settled(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, redisReply *reply)
{
    int64_t                               code, changed;
    ngx_http_linegate_lr_setup_t          setup;
    ngx_http_linegate_reconcile_t        *rc;
    ngx_http_linegate_reconcile_entry_t  *e;

    rc = ctx->data;
    e = &rc->entry[rc->i];

    if (ngx_http_linegate_reply_int(reply, 0, &code) != NGX_OK) {
        ngx_http_linegate_reconcile_defer(r, ctx, "store_unavailable", 1);
        return;
    }

    if (code != 1) {
        (void) ngx_http_linegate_lr_setup_drop(r->connection->log,
                                               &rc->paid_setup);
        ngx_http_linegate_reconcile_paid_left(r, ctx,
                                  "moved on since it was read (released, "
                                  "or naming another invoice)");
        return;
    }

    if (rc->paid_setup.len) {
        if (ngx_http_linegate_reply_int(reply, 1, &changed) == NGX_OK
            && changed == 1
            && ngx_http_linegate_reply_str(reply, 2, &setup.channel_type)
               == NGX_OK
            && ngx_http_linegate_reply_str(reply, 3, &setup.line_type)
               == NGX_OK)
        {
            setup.workspace = e->workspace;
            setup.id = e->line_request;
            setup.at.data = rc->iso;
            setup.at.len = NGX_HTTP_LINEGATE_ISO_LEN;

            (void) ngx_http_linegate_lr_setup_relay(r->connection->log,
                                                    &setup, &rc->paid_setup);

        } else {
            (void) ngx_http_linegate_lr_setup_drop(r->connection->log,
                                                   &rc->paid_setup);
        }

        ngx_str_null(&rc->paid_setup);
    }

    if (e->lapsed) {
        if (e->replaced.len) {
            /*
             * the request names the adopted invoice: the replaced one's
             * index goes, as after payment_link's store (LINK_STORE)
             */
            ngx_http_linegate_lines_invoice_unindex(r, &e->replaced);
            e->adopted = e->found;
            ngx_str_null(&e->replaced);
        }

        /*
         * the request's other invoices: the replaced one discarded if
         * still payable; another paid one (both paid) is a human's
         */
        e->named = e->found;
        ngx_http_linegate_reconcile_relist(r, ctx, e);
        return;
    }

    ngx_http_linegate_reconcile_settle(r, ctx, "settled");
}


/*
 * NAMED: reissue_lapsed, a paid invoice of the request's that it does not
 * name, while it awaits payment on another (FENCE 4): the lapsed claim's
 * worker made it and died before its store, and the customer paid it.
 * Before it is adopted, the named one is read at Stripe: paid too (both
 * links mailed, both paid), the named one is kept, as payment_link keeps
 * it (LINK_CHECK resolves a named paid invoice, its sweep leaves a second
 * paid one to a human): the request promoted on it (PAID_INDEX,
 * PAID_SETTLE), then the list read again finds the other one paid and
 * not named, a human's (invoice_paid, a refund). Not paid: the paid one
 * is adopted in its place as payment_link's sweep adopts it (LINK_INDEX,
 * LINK_STORE, LINK_RESOLVE: here PAID_INDEX, then PAID_SETTLE, one step
 * that stores it only while the request still names the one read here,
 * and promotes it), and the list read again discards the replaced one
 * if payable (FENCE, CANCEL). A payment of the named one landing after
 * this read settles the request first (its webhook; PAID_SETTLE then
 * refuses: the paid one a human's), or, after the store, finds its void
 * refused and is a human's on the next run: never two lines.
 */
static ngx_int_t
ngx_http_linegate_reconcile_named(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, ngx_http_linegate_reconcile_entry_t *e)
{
    ngx_str_t  path;

    path.data = ngx_pnalloc(r->pool,
                            sizeof("v1/invoices/") - 1 + e->replaced.len);
    if (path.data == NULL) {
        return NGX_ERROR;
    }

    path.len = ngx_sprintf(path.data, "v1/invoices/%V", &e->replaced)
               - path.data;

    return ngx_http_linegate_reconcile_stripe(r, ctx, NGX_HTTP_GET, &path,
                                    NULL, NULL,
                                    ngx_http_linegate_reconcile_named_read);
}


static void
ngx_http_linegate_reconcile_named_read(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx)
{
    const char                           *why;
    ngx_http_linegate_reconcile_t        *rc;
    ngx_http_linegate_reconcile_entry_t  *e;

    rc = ctx->data;
    e = &rc->entry[rc->i];

    if (ngx_http_linegate_stripe_result(ctx)
        == NGX_HTTP_LINEGATE_STRIPE_REFUSED
        && ctx->stripe_status == NGX_HTTP_NOT_FOUND)
    {
        /*
         * Stripe has no invoice by the id the request names (another
         * account's or mode's, or removed): nothing the run can adopt
         * over, and asking again every run would change nothing, only
         * log it again. Held for a human once: the entry queued again
         * in its place with 'hold' (RESOLVE, op_reconcile_resolve), which
         * later runs leave without a Stripe call
         */
        e->missing = e->replaced;
        ngx_str_null(&e->replaced);
        e->hold_as = "named_missing";

        /*
         * held once the others are discarded (decide), as paid_left,
         * unless another entry presents the paid one (MARK): said then,
         * by the entry that holds it. Until 2026-11-29 it was said here,
         * before MARK, also by an entry MARK then passed over
         */
        ngx_http_linegate_reconcile_next(r, ctx,
                                         NGX_HTTP_LINEGATE_RECONCILE_MARK);
        return;
    }

    if (ngx_http_linegate_stripe_result(ctx) != NGX_HTTP_LINEGATE_STRIPE_OK) {
        /* nothing written: the next run reads it again */
        ngx_http_linegate_reconcile_stripe_failed(r, ctx,
                                                  "the named invoice",
                                                  &e->replaced,
                                                  "stripe_refused",
                                                  "stripe_unavailable");
        return;
    }

    if (!json_is_string(json_object_get(ctx->stripe_json, "status"))) {
        /* not known unpaid: nothing adopted over it */
        ngx_http_linegate_reconcile_defer(r, ctx, "stripe_unavailable", 1);
        return;
    }

    if (ngx_http_linegate_reconcile_status(ctx->stripe_json)
        != NGX_HTTP_LINEGATE_RECONCILE_PAID)
    {
        /*
         * the named invoice read: a paid one made by a claim no later
         * than the one that made it is an earlier reissue's (superseded,
         * paid out of band); with no invoice_seq (an old node's), one
         * made no later than it at Stripe is not the lapsed claim's
         */
        e->claims.named_seq = ngx_max(
            ngx_http_linegate_lines_invoice_seq(ctx->stripe_json), 0);
        e->claims.named_at = ngx_http_linegate_lines_created(
                                 ctx->stripe_json);

        why = ngx_http_linegate_lines_lapsed_made(&e->claims, e->made_seq,
                                                  e->made_at);
        if (why != NULL) {
            ngx_http_linegate_reconcile_not_made(r, ctx, why);
            return;
        }
    }

    /* no 201 to keep: the request's creation answered long ago */
    ngx_str_set(&rc->paid_body, "");

    if (ngx_http_linegate_reconcile_status(ctx->stripe_json)
        == NGX_HTTP_LINEGATE_RECONCILE_PAID)
    {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      NGX_HTTP_LINEGATE_LOG "reconciliation: line request "
                      "\"%V\" of workspace \"%V\": its invoice \"%V\" and "
                      "its lapsed reissue's \"%V\" are both paid: the "
                      "request is settled on its own, the other left for a "
                      "human", &e->line_request, &e->workspace, &e->replaced,
                      &e->found);

        /* the request's own link, as it names it: nothing to store */
        e->found = e->replaced;
        ngx_str_null(&e->url);
        ngx_str_null(&e->replaced);
    }

    ngx_http_linegate_reconcile_next(r, ctx,
                                     NGX_HTTP_LINEGATE_RECONCILE_PAID_INDEX);
}


/* reissue_lapsed: the request's invoices listed again from the first page */
static void
ngx_http_linegate_reconcile_relist(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, ngx_http_linegate_reconcile_entry_t *e)
{
    ngx_str_null(&e->page_after);
    e->pages = 0;

    ngx_http_linegate_reconcile_next(r, ctx,
                                     NGX_HTTP_LINEGATE_RECONCILE_LOOKUP);
}


/*
 * reissue_lapsed: a paid invoice the request does not name, and no lapsed
 * claim made (lines_lapsed_made says why): a human's
 */
static void
ngx_http_linegate_reconcile_not_made(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, const char *why)
{
    u_char                               *p;
    ngx_http_linegate_reconcile_t        *rc;
    ngx_http_linegate_reconcile_entry_t  *e;

    static const char  head[] = "does not name it, and it is no lapsed "
                                "claim's (";

    rc = ctx->data;
    e = &rc->entry[rc->i];

    ngx_str_null(&e->replaced);

    p = ngx_pnalloc(r->pool, sizeof(head) + ngx_strlen(why) + 1);

    if (p != NULL) {
        ngx_sprintf(p, "%s%s)%Z", head, why);
    }

    ngx_http_linegate_reconcile_paid_left(r, ctx,
                                          p ? (const char *) p
                                            : "does not name it");
}


/* a paid invoice no request can take: a human's, and the log says why */
static void
ngx_http_linegate_reconcile_paid_left(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, const char *why)
{
    ngx_http_linegate_reconcile_t        *rc;
    ngx_http_linegate_reconcile_entry_t  *e;

    rc = ctx->data;
    e = &rc->entry[rc->i];

    /*
     * reissue_lapsed: the request's other draft and open invoices (an
     * older lapsed claim's) are still discarded first: deferred here,
     * this one would come first again every run, and once a human
     * removed the entry no run would find them, left payable. decide
     * says invoice_paid when none is left, naming this one.
     *
     * Not before MARK, for an entry that found the invoice by its
     * metadata (reissue_lapsed, worker_lost): a sweep, a refused store
     * or a webhook may have queued it for a human already, under its
     * own entry. One that names it (invoice_unrepaired,
     * paid_after_cancel) was queued under that invoice's marker: it is
     * the one presenting it. Until 2026-11-29 a worker_lost entry did
     * not look, and two entries presented one payment.
     */
    e->left_why = why;

    if (e->lapsed || e->subscription.len == 0) {
        ngx_http_linegate_reconcile_next(r, ctx,
                                         NGX_HTTP_LINEGATE_RECONCILE_MARK);
        return;
    }

    ngx_http_linegate_reconcile_paid_said(r, e);
    ngx_http_linegate_reconcile_defer(r, ctx, "invoice_paid", 0);
}


/* a paid invoice left for a human (deferred, invoice_paid): at warn */
static void
ngx_http_linegate_reconcile_paid_said(ngx_http_request_t *r,
    ngx_http_linegate_reconcile_entry_t *e)
{
    ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                  NGX_HTTP_LINEGATE_LOG "reconciliation: line request "
                  "\"%V\" of workspace \"%V\" (%V): its invoice \"%V\" is "
                  "paid, but the request %s: left for a human (give the "
                  "line, or refund the invoice at Stripe)",
                  &e->line_request, &e->workspace, &e->reason, &e->found,
                  e->left_why ? e->left_why : "does not name it");
}


/*
 * MARK: reissue_lapsed or worker_lost, a paid invoice it would leave for
 * a human (or hold, named_missing), e->found. The invoice's marker,
 * lg:{fleet}:q:<W>:inv_<in>, is the one lr_invoice_orphan queues it
 * under when a payment_link, cancel or GET sweep leaves it for a human,
 * or a creation's store refused once a run fenced its request;
 * paid_<in> for an invoice its canceled request names, the one the
 * invoice.paid webhook (or a GET's check) queues its payment under as
 * paid_after_cancel: lr_paid_claim takes it for this entry (its stream
 * id, the same every run; a held copy is never looked at again), or
 * answers that another entry has it. Until 2026-11-29 both entries
 * presented one paid invoice to a human.
 */
static ngx_int_t
ngx_http_linegate_reconcile_mark(ngx_http_request_t *r,
    ngx_http_linegate_reconcile_t *rc, ngx_http_linegate_reconcile_entry_t *e)
{
    ngx_str_t                        which, key;
    ngx_http_linegate_redis_args_t  *a;

    which.len = sizeof(NGX_HTTP_LINEGATE_LR_PAID_MARKER) - 1 + e->found.len;

    which.data = ngx_pnalloc(r->pool, which.len);
    if (which.data == NULL) {
        return NGX_ERROR;
    }

    which.len = ngx_sprintf(which.data,
                            e->canceled ? NGX_HTTP_LINEGATE_LR_PAID_MARKER "%V"
                                        : "inv_%V",
                            &e->found)
                - which.data;

    if (ngx_http_linegate_key(r->pool, NGX_HTTP_LINEGATE_KEY_FLEET_Q,
                              &e->workspace, &which, &key)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    a = &rc->args;
    ngx_http_linegate_redis_args_init(a);
    ngx_http_linegate_redis_arg_str(a, &key);
    ngx_http_linegate_redis_arg_str(a, &e->id);

    return ngx_http_linegate_reconcile_script(r, rc,
                                  NGX_HTTP_LINEGATE_SCRIPT_LR_PAID_CLAIM, 1);
}


/*
 * MARK answered: 1, this entry's: left for a human (reissue_lapsed: held
 * once the others are discarded, or invoice_paid; worker_lost:
 * invoice_paid now); 0, another entry presents it (its own
 * invoice_unrepaired or paid_after_cancel): passed over, the request's
 * other invoices still looked for (none: settled on that, a worker_lost
 * entry's reservation dropped if still there, as for no invoice)
 */
static void
ngx_http_linegate_reconcile_marked(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, int64_t code)
{
    ngx_uint_t                            canceled;
    ngx_http_linegate_reconcile_t        *rc;
    ngx_http_linegate_reconcile_entry_t  *e;

    rc = ctx->data;
    e = &rc->entry[rc->i];

    /* for this invoice only */
    canceled = e->canceled;
    e->canceled = 0;

    if (code == 1 && !e->lapsed) {
        ngx_http_linegate_reconcile_paid_said(r, e);
        ngx_http_linegate_reconcile_defer(r, ctx, "invoice_paid", 0);
        return;
    }

    if (code == 1) {
        if (e->hold_as == NULL) {
            ngx_http_linegate_reconcile_paid_said(r, e);

        } else {
            ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                          NGX_HTTP_LINEGATE_LOG "reconciliation: line "
                          "request \"%V\" of workspace \"%V\" names invoice "
                          "\"%V\", which Stripe does not know (404), and its "
                          "lapsed reissue's \"%V\" is paid: held for a human "
                          "(named_missing; give the line, or refund the "
                          "invoice at Stripe, then remove the entry)",
                          &e->line_request, &e->workspace, &e->missing,
                          &e->found);
        }

        e->left = e->found;
        ngx_http_linegate_reconcile_relist(r, ctx, e);
        return;
    }

    if (code != 0
        || e->npassed == NGX_HTTP_LINEGATE_RECONCILE_LAPSED_MAX)
    {
        ngx_http_linegate_reconcile_defer(r, ctx, "store_unavailable", 1);
        return;
    }

    ngx_log_error(NGX_LOG_NOTICE, r->connection->log, 0,
                  NGX_HTTP_LINEGATE_LOG "reconciliation: line request "
                  "\"%V\" of workspace \"%V\" (%V): its invoice \"%V\" is "
                  "paid, and queued before for a human under its own entry "
                  "(%s): passed over", &e->line_request, &e->workspace,
                  &e->reason, &e->found,
                  canceled ? NGX_HTTP_LINEGATE_LR_PAID_REASON
                           : "invoice_unrepaired");

    /* the pool's: e->found is a copy (decide) */
    e->passed[e->npassed++] = e->found;
    e->hold_as = NULL;
    ngx_str_null(&e->missing);
    ngx_http_linegate_reconcile_relist(r, ctx, e);
}


/* CANCEL */

static ngx_int_t
ngx_http_linegate_reconcile_cancel(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, ngx_http_linegate_reconcile_entry_t *e)
{
    size_t     len;
    ngx_str_t  path;

    len = sizeof("v1/subscriptions//void") - 1 + e->found.len;

    path.data = ngx_pnalloc(r->pool, len);
    if (path.data == NULL) {
        return NGX_ERROR;
    }

    if (e->line_request.len == 0) {
        path.len = ngx_sprintf(path.data, "v1/subscriptions/%V", &e->found)
                   - path.data;

        return ngx_http_linegate_reconcile_stripe(r, ctx, NGX_HTTP_DELETE,
                                        &path, NULL, NULL,
                                        ngx_http_linegate_reconcile_canceled);
    }

    /* an invoice: Stripe deletes a draft, voids an open one */
    path.len = ngx_sprintf(path.data, e->draft ? "v1/invoices/%V"
                                               : "v1/invoices/%V/void",
                           &e->found)
               - path.data;

    return ngx_http_linegate_reconcile_stripe(r, ctx,
                                         e->draft ? NGX_HTTP_DELETE
                                                  : NGX_HTTP_POST,
                                         &path, NULL, NULL,
                                         ngx_http_linegate_reconcile_canceled);
}


static void
ngx_http_linegate_reconcile_canceled(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx)
{
    ngx_http_linegate_reconcile_t        *rc;
    ngx_http_linegate_reconcile_entry_t  *e;

    rc = ctx->data;
    e = &rc->entry[rc->i];

    switch (ngx_http_linegate_stripe_result(ctx)) {

    case NGX_HTTP_LINEGATE_STRIPE_OK:
        if (e->lapsed) {
            ngx_http_linegate_reconcile_swept(r, ctx, e,
                                              e->draft ? "deleted"
                                                       : "voided");
            return;
        }

        if (e->line_request.len == 0) {
            /* what it paid is refunded before the entry resolves */
            e->undone = 1;
        }

        ngx_http_linegate_reconcile_unbilled(r, ctx, e,
                                             e->line_request.len == 0
                                             ? "canceled"
                                             : e->draft ? "deleted"
                                             : "voided");
        return;

    case NGX_HTTP_LINEGATE_STRIPE_REFUSED:
        if (ctx->stripe_status == NGX_HTTP_NOT_FOUND && e->lapsed) {
            /* gone meanwhile: any other is looked for all the same */
            ngx_http_linegate_reconcile_swept(r, ctx, e, e->discarded_as);
            return;
        }

        if (ctx->stripe_status == NGX_HTTP_NOT_FOUND) {
            ngx_http_linegate_reconcile_unbilled(r, ctx, e,
                                                 e->line_request.len
                                                 ? "no_invoice"
                                                 : "no_subscription");
            return;
        }

        /* e.g. cancelled meanwhile: the next run looks again */

        /* fall through */

    default:
        /* a lost answer may have cancelled it: the next run sees it */
        ngx_http_linegate_reconcile_stripe_failed(r, ctx, "the cancellation",
                                                  NULL, "cancel_refused",
                                                  "stripe_unavailable");
        return;
    }
}


/*
 * INVOICES, REFUND, REFUND_CHECK: what a purchase undone paid. Its
 * subscription was created with its first invoice charged at once, and
 * may have renewed before the run (an entry left while Stripe was down);
 * the run cancelled it (or found it cancelled: by hand at Stripe, maybe
 * with a final invoice crediting the unused time) and no line came of
 * it, so every invoice it paid is given back. They are listed by the
 * subscription, paid ones only, their payments expanded: since Stripe's
 * 2025-03-31 version an invoice names its payment intent there
 * (payments.data[].payment), before it in payment_intent (or charge);
 * either is taken. The first is the one billed for the subscription's
 * creation (billing_reason subscription_create), or else the oldest.
 */

static ngx_int_t
ngx_http_linegate_reconcile_invoices(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, ngx_http_linegate_reconcile_entry_t *e)
{
    u_char                         *p;
    size_t                          len;
    ngx_str_t                       path;
    ngx_http_linegate_reconcile_t  *rc;

    rc = ctx->data;

    if (!ngx_http_linegate_stripe_id_valid(&e->found)) {
        return NGX_ERROR;
    }

    len = sizeof("v1/invoices?subscription=&status=paid&limit="
                 "&expand[]=data.payments&starting_after=") - 1
          + e->found.len + NGX_INT_T_LEN + rc->paid_after.len;

    path.data = ngx_pnalloc(r->pool, len);
    if (path.data == NULL) {
        return NGX_ERROR;
    }

    p = ngx_sprintf(path.data, "v1/invoices?subscription=%V&status=paid"
                    "&limit=%d&expand[]=data.payments", &e->found,
                    NGX_HTTP_LINEGATE_RECONCILE_INVOICE_PAGE);

    return ngx_http_linegate_reconcile_page(r, ctx, &path, p,
                                    &rc->paid_after,
                                    ngx_http_linegate_reconcile_invoices_read);
}


static void
ngx_http_linegate_reconcile_invoices_read(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx)
{
    ngx_uint_t                            i;
    const char                           *why;
    ngx_http_linegate_reconcile_t        *rc;
    ngx_http_linegate_reconcile_paid_t   *first;
    ngx_http_linegate_reconcile_entry_t  *e;

    rc = ctx->data;
    e = &rc->entry[rc->i];

    if (ngx_http_linegate_stripe_result(ctx) != NGX_HTTP_LINEGATE_STRIPE_OK) {
        /* refused: a human's call; else the next run lists them again */
        ngx_http_linegate_reconcile_stripe_failed(r, ctx,
                                                  "the invoices of "
                                                  "subscription", &e->found,
                                                  "refund_refused",
                                                  "refund_unavailable");
        return;
    }

    why = ngx_http_linegate_reconcile_paid(r, rc, e, ctx->stripe_json);

    if (why != NULL) {
        /* this entry's own (a human's call), or the run stops */
        ngx_http_linegate_reconcile_defer(r, ctx, why,
                                    ngx_strcmp(why, "payment_not_found") != 0
                                    && ngx_strcmp(why, "too_many_invoices")
                                       != 0
                                    && ngx_strcmp(why, "credited") != 0);
        return;
    }

    if (rc->paid_after.len) {
        /* on the next page */
        ngx_http_linegate_reconcile_next(r, ctx,
                                         NGX_HTTP_LINEGATE_RECONCILE_INVOICES);
        return;
    }

    /*
     * the first: the creation's (the oldest of them, were there two), or
     * else the oldest paid; the list is newest first
     */
    first = NULL;

    for (i = rc->npaid; i-- > 0; /* void */) {
        if (first == NULL && rc->paid[i].first) {
            first = &rc->paid[i];

        } else {
            rc->paid[i].first = 0;
        }
    }

    if (first == NULL && rc->npaid) {
        rc->paid[rc->npaid - 1].first = 1;
    }

    rc->pi = 0;
    ngx_http_linegate_reconcile_refund_next(r, ctx);
}


/*
 * A page of the subscription's paid invoices, added to rc->paid (copied:
 * Stripe's JSON is freed with the next call): NULL, and rc->paid_after
 * names the last one when more follow; or why the entry stays
 */
static const char *
ngx_http_linegate_reconcile_paid(ngx_http_request_t *r,
    ngx_http_linegate_reconcile_t *rc, ngx_http_linegate_reconcile_entry_t *e,
    json_t *list)
{
    size_t                               i, n;
    json_t                              *data, *inv, *id, *amount, *total;
    ngx_str_t                            s;
    const char                          *status, *reason;
    ngx_http_linegate_reconcile_paid_t  *p;

    data = json_object_get(list, "data");
    if (!json_is_array(data)) {
        return "refund_unavailable";
    }

    n = json_array_size(data);
    ngx_str_null(&rc->paid_after);

    for (i = 0; i < n; i++) {
        inv = json_array_get(data, i);
        id = json_object_get(inv, "id");
        status = json_string_value(json_object_get(inv, "status"));

        if (!json_is_string(id)) {
            return "refund_unavailable";
        }

        s.data = (u_char *) json_string_value(id);
        s.len = json_string_length(id);

        if (!ngx_http_linegate_stripe_id_valid(&s)) {
            return "refund_unavailable";
        }

        if (status == NULL || ngx_strcmp(status, "paid") != 0) {
            /* draft, open, void, uncollectible: nothing was charged */
            continue;
        }

        total = json_object_get(inv, "total");

        if (json_is_integer(total) && json_integer_value(total) < 0) {
            /*
             * a credit (a cancellation prorated at Stripe): part of what
             * was paid went to the customer's balance, so a whole refund
             * would pay it twice; how much to refund is a human's call
             */
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          NGX_HTTP_LINEGATE_LOG "reconciliation: invoice "
                          "\"%V\" of subscription \"%V\" credits the "
                          "customer: nothing refunded, left for a human",
                          &s, &e->found);
            return "credited";
        }

        if (rc->npaid == NGX_HTTP_LINEGATE_RECONCILE_PAID_MAX) {
            goto too_many;
        }

        p = &rc->paid[rc->npaid];
        ngx_memzero(p, sizeof(ngx_http_linegate_reconcile_paid_t));

        if (ngx_http_linegate_pstr(r->pool, &p->id, s.data, s.len) == NULL) {
            return "no_memory";
        }

        reason = json_string_value(json_object_get(inv, "billing_reason"));
        p->first = reason != NULL
                   && ngx_strcmp(reason, "subscription_create") == 0;

        /* no amount said: refunded all the same, never kept */
        amount = json_object_get(inv, "amount_paid");
        p->paid = !json_is_integer(amount) || json_integer_value(amount) > 0;

        if (p->paid
            && (ngx_http_linegate_reconcile_payment(p, inv) != NGX_OK
                || ngx_http_linegate_pstr(r->pool, &p->payment,
                                          p->payment.data, p->payment.len)
                   == NULL))
        {
            /*
             * paid, and no payment of it named (paid out of band, or a
             * shape this code does not know): the entry stays, named in
             * the log, rather than be settled with the money kept
             */
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          NGX_HTTP_LINEGATE_LOG "reconciliation: invoice "
                          "\"%V\" of subscription \"%V\" is paid, and names "
                          "no payment to refund", &p->id, &e->found);
            return "payment_not_found";
        }

        rc->npaid++;
    }

    if (!json_is_true(json_object_get(list, "has_more"))) {
        return NULL;
    }

    if (n == 0) {
        /* more, after nothing: not a list this code understands */
        return "refund_unavailable";
    }

    if (rc->npaid == NGX_HTTP_LINEGATE_RECONCILE_PAID_MAX) {
        goto too_many;
    }

    if (++rc->paid_pages == NGX_HTTP_LINEGATE_RECONCILE_INVOICE_PAGES) {
        /* else read on for as long as Stripe says there is more */
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      NGX_HTTP_LINEGATE_LOG "reconciliation: the paid "
                      "invoices of subscription \"%V\" go on past %d "
                      "pages with %ui of them: not the list asked for",
                      &e->found, NGX_HTTP_LINEGATE_RECONCILE_INVOICE_PAGES,
                      rc->npaid);
        return "refund_unavailable";
    }

    /* the last one of the page, paid or not: where the next one starts */
    return ngx_http_linegate_pstr(r->pool, &rc->paid_after, s.data, s.len)
           ? NULL : "no_memory";

too_many:

    ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                  NGX_HTTP_LINEGATE_LOG "reconciliation: subscription \"%V\" "
                  "paid more than %d invoices: none refunded, left for a "
                  "human", &e->found, NGX_HTTP_LINEGATE_RECONCILE_PAID_MAX);

    return "too_many_invoices";
}


/* a paid invoice's payment intent, or its charge, in Stripe's JSON */
static ngx_int_t
ngx_http_linegate_reconcile_payment(ngx_http_linegate_reconcile_paid_t *p,
    json_t *inv)
{
    size_t       i, n;
    json_t      *id, *data, *pay;
    ngx_uint_t   k;
    const char  *status;

    static const char  *field[] = { "payment_intent", "charge" };

    data = json_object_get(json_object_get(inv, "payments"), "data");
    n = json_is_array(data) ? json_array_size(data) : 0;

    for (k = 0; k < 2; k++) {
        /* before 2025-03-31: on the invoice itself */
        id = json_object_get(inv, field[k]);

        /* since: on its payments, the one paid */
        for (i = 0; !json_is_string(id) && !json_is_object(id) && i < n;
             i++)
        {
            pay = json_array_get(data, i);
            status = json_string_value(json_object_get(pay, "status"));

            if (status != NULL && ngx_strcmp(status, "paid") == 0) {
                id = json_object_get(json_object_get(pay, "payment"),
                                     field[k]);
            }
        }

        if (json_is_object(id)) {
            id = json_object_get(id, "id");
        }

        if (json_is_string(id)) {
            p->payment.data = (u_char *) json_string_value(id);
            p->payment.len = json_string_length(id);
            p->by_charge = (k == 1);

            return ngx_http_linegate_stripe_id_valid(&p->payment)
                   ? NGX_OK : NGX_ERROR;
        }
    }

    return NGX_ERROR;
}


/* the next paid invoice to refund, or, all refunded, the entry resolves */
static void
ngx_http_linegate_reconcile_refund_next(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx)
{
    ngx_http_linegate_reconcile_t        *rc;
    ngx_http_linegate_reconcile_entry_t  *e;

    rc = ctx->data;
    e = &rc->entry[rc->i];

    /* one that paid nothing (a final invoice that credited) needs none */
    while (rc->pi < rc->npaid && !rc->paid[rc->pi].paid) {
        rc->pi++;
    }

    if (rc->pi < rc->npaid) {
        ngx_http_linegate_reconcile_next(r, ctx,
                                         NGX_HTTP_LINEGATE_RECONCILE_REFUND);
        return;
    }

    if (ngx_http_linegate_reconcile_refunds_named(r, rc, e) != NGX_OK) {
        ngx_http_linegate_reconcile_defer(r, ctx, "no_memory", 1);
        return;
    }

    ngx_http_linegate_reconcile_next(r, ctx,
                                     NGX_HTTP_LINEGATE_RECONCILE_RESOLVE);
}


/*
 * What the entry resolves with: the first invoice's refund ("none" when
 * it paid nothing, or there was none), the later ones' after it
 */
static ngx_int_t
ngx_http_linegate_reconcile_refunds_named(ngx_http_request_t *r,
    ngx_http_linegate_reconcile_t *rc, ngx_http_linegate_reconcile_entry_t *e)
{
    u_char                              *q;
    size_t                               len;
    ngx_uint_t                           i;
    ngx_http_linegate_reconcile_paid_t  *p;

    ngx_str_set(&e->refund, "none");
    len = 0;

    for (i = 0; i < rc->npaid; i++) {
        p = &rc->paid[i];

        if (p->first && p->paid) {
            e->refund = p->refund;

        } else if (p->paid) {
            len += p->refund.len + 1;
        }
    }

    ngx_str_null(&e->later);

    if (len == 0) {
        return NGX_OK;
    }

    q = ngx_pnalloc(r->pool, len);
    if (q == NULL) {
        return NGX_ERROR;
    }

    e->later.data = q;

    for (i = 0; i < rc->npaid; i++) {
        p = &rc->paid[i];

        if (p->paid && !p->first) {
            if (q != e->later.data) {
                *q++ = ' ';
            }

            q = ngx_cpymem(q, p->refund.data, p->refund.len);
        }
    }

    e->later.len = q - e->later.data;

    return NGX_OK;
}


static ngx_int_t
ngx_http_linegate_reconcile_refund(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, ngx_http_linegate_reconcile_entry_t *e)
{
    ngx_str_t                            form, key, *of;
    ngx_http_linegate_reconcile_t       *rc;
    ngx_http_linegate_reconcile_paid_t  *p;
    ngx_str_t                            path = ngx_string("v1/refunds");

    rc = ctx->data;
    p = &rc->paid[rc->pi];

    ngx_str_null(&form);

    /*
     * the whole of it (no amount); the body is the same on every run, so
     * that Stripe replays the first refund under the key
     */
    if (ngx_http_linegate_form_add(r->pool, &form,
                                   p->by_charge ? "charge" : "payment_intent",
                                   &p->payment)
        != NGX_OK
        || ngx_http_linegate_form_add(r->pool, &form,
                                      "metadata[subscription_id]", &e->found)
           != NGX_OK
        || ngx_http_linegate_form_add(r->pool, &form, "metadata[worker_id]",
                                      &e->worker_id)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    /*
     * one refund per invoice, however many runs try: the first invoice's
     * key is the subscription's, as before later invoices were refunded
     * (a run of that code replays under it)
     */
    of = p->first ? &e->found : &p->id;

    key.len = sizeof("lg-refund-") - 1 + of->len;
    key.data = ngx_pnalloc(r->pool, key.len);
    if (key.data == NULL) {
        return NGX_ERROR;
    }

    (void) ngx_sprintf(key.data, "lg-refund-%V", of);

    return ngx_http_linegate_reconcile_stripe(r, ctx, NGX_HTTP_POST, &path,
                                         &form, &key,
                                         ngx_http_linegate_reconcile_refunded);
}


static void
ngx_http_linegate_reconcile_refunded(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx)
{
    json_t                               *id;
    ngx_str_t                             s;
    const char                           *code, *status;
    ngx_http_linegate_reconcile_t        *rc;
    ngx_http_linegate_reconcile_paid_t   *p;

    rc = ctx->data;
    p = &rc->paid[rc->pi];

    switch (ngx_http_linegate_stripe_result(ctx)) {

    case NGX_HTTP_LINEGATE_STRIPE_OK:
        break;

    case NGX_HTTP_LINEGATE_STRIPE_REFUSED:
        code = ngx_http_linegate_stripe_error_code(ctx);

        if (code != NULL && ngx_strcmp(code, "charge_already_refunded") == 0)
        {
            /*
             * by an earlier run whose key expired, or by hand: done, once
             * no refund of it is still on its way
             */
            ngx_str_null(&rc->refund);
            ngx_http_linegate_reconcile_next(r, ctx,
                                     NGX_HTTP_LINEGATE_RECONCILE_REFUND_CHECK);
            return;
        }

        /* e.g. disputed meanwhile: a human's call, named in the log */

        /* fall through */

    default:
        /*
         * a lost answer may have refunded: the next run sends the same
         * key, and Stripe answers with the refund it made
         */
        ngx_http_linegate_reconcile_stripe_failed(r, ctx,
                                                  "the refund of invoice",
                                                  &p->id, "refund_refused",
                                                  "refund_unavailable");
        return;
    }

    id = json_object_get(ctx->stripe_json, "id");
    status = json_string_value(json_object_get(ctx->stripe_json, "status"));

    if (!json_is_string(id)) {
        /* may have refunded: the key replays it on the next run */
        ngx_http_linegate_reconcile_defer(r, ctx, "refund_unavailable", 1);
        return;
    }

    s.data = (u_char *) json_string_value(id);
    s.len = json_string_length(id);

    if (!ngx_http_linegate_stripe_id_valid(&s)
        || ngx_http_linegate_pstr(r->pool, &rc->refund, s.data, s.len)
           == NULL)
    {
        ngx_http_linegate_reconcile_defer(r, ctx, "refund_unavailable", 1);
        return;
    }

    if (ngx_http_linegate_reconcile_refund_status(r, ctx, status)
        == NGX_DECLINED)
    {
        /*
         * not through yet: a replay answers as the refund was first
         * made, so what became of it since is read
         */
        ngx_http_linegate_reconcile_next(r, ctx,
                                     NGX_HTTP_LINEGATE_RECONCILE_REFUND_CHECK);
    }
}


/*
 * What the status of the invoice's refund (rc->refund) says: succeeded,
 * the invoice is done, on to the next; failed or canceled, the money did
 * not go back: a human's call; NGX_DECLINED, nothing done: not through
 * yet (pending, requires_action, or a status this code does not know)
 */
static ngx_int_t
ngx_http_linegate_reconcile_refund_status(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, const char *status)
{
    ngx_http_linegate_reconcile_t       *rc;
    ngx_http_linegate_reconcile_paid_t  *p;

    rc = ctx->data;
    p = &rc->paid[rc->pi];

    if (status == NULL) {
        return NGX_DECLINED;
    }

    if (ngx_strcmp(status, "succeeded") == 0) {
        p->refund = rc->refund;
        rc->pi++;
        ngx_http_linegate_reconcile_refund_next(r, ctx);
        return NGX_OK;
    }

    if (ngx_strcmp(status, "failed") == 0
        || ngx_strcmp(status, "canceled") == 0)
    {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      NGX_HTTP_LINEGATE_LOG "reconciliation: refund \"%V\" "
                      "of invoice \"%V\" is %s", &rc->refund, &p->id, status);
        ngx_http_linegate_reconcile_defer(r, ctx, "refund_failed", 0);
        return NGX_OK;
    }

    return NGX_DECLINED;
}


/* the refunds of the invoice's payment, newest first */
static ngx_int_t
ngx_http_linegate_reconcile_refund_check(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx)
{
    size_t                               len;
    ngx_str_t                            path;
    ngx_http_linegate_reconcile_t       *rc;
    ngx_http_linegate_reconcile_paid_t  *p;

    rc = ctx->data;
    p = &rc->paid[rc->pi];

    len = sizeof("v1/refunds?payment_intent=&limit=") - 1 + p->payment.len
          + NGX_INT_T_LEN;

    path.data = ngx_pnalloc(r->pool, len);
    if (path.data == NULL) {
        return NGX_ERROR;
    }

    path.len = ngx_sprintf(path.data, "v1/refunds?%s=%V&limit=%d",
                           p->by_charge ? "charge" : "payment_intent",
                           &p->payment,
                           NGX_HTTP_LINEGATE_RECONCILE_REFUND_PAGE)
               - path.data;

    return ngx_http_linegate_reconcile_stripe(r, ctx, NGX_HTTP_GET, &path,
                                 NULL, NULL,
                                 ngx_http_linegate_reconcile_refund_checked);
}


static void
ngx_http_linegate_reconcile_refund_checked(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx)
{
    size_t                                i, n;
    json_t                               *data, *re, *id;
    const char                           *status, *ours, *pending;
    ngx_http_linegate_reconcile_t        *rc;
    ngx_http_linegate_reconcile_paid_t   *p;
    ngx_http_linegate_reconcile_entry_t  *e;

    rc = ctx->data;
    e = &rc->entry[rc->i];
    p = &rc->paid[rc->pi];

    if (ngx_http_linegate_stripe_result(ctx) != NGX_HTTP_LINEGATE_STRIPE_OK) {
        ngx_http_linegate_reconcile_stripe_failed(r, ctx,
                                                  "the refunds of invoice",
                                                  &p->id, "refund_refused",
                                                  "refund_unavailable");
        return;
    }

    data = json_object_get(ctx->stripe_json, "data");
    if (!json_is_array(data)) {
        ngx_http_linegate_reconcile_defer(r, ctx, "refund_unavailable", 1);
        return;
    }

    n = json_array_size(data);
    ours = NULL;
    pending = NULL;

    for (i = 0; i < n; i++) {
        re = json_array_get(data, i);
        id = json_object_get(re, "id");
        status = json_string_value(json_object_get(re, "status"));

        if (status == NULL) {
            continue;
        }

        if (ngx_strcmp(status, "pending") == 0
            || ngx_strcmp(status, "requires_action") == 0)
        {
            pending = status;
        }

        if (rc->refund.len && json_is_string(id)
            && json_string_length(id) == rc->refund.len
            && ngx_strncmp(json_string_value(id), rc->refund.data,
                           rc->refund.len)
               == 0)
        {
            ours = status;
        }
    }

    if (pending == NULL && rc->refund.len == 0) {
        /* charge_already_refunded, and nothing on its way: done */
        ngx_str_set(&p->refund, "already_refunded");
        rc->pi++;
        ngx_http_linegate_reconcile_refund_next(r, ctx);
        return;
    }

    if (pending == NULL
        && ngx_http_linegate_reconcile_refund_status(r, ctx, ours) == NGX_OK)
    {
        return;
    }

    /*
     * on its way (or ours not among the payment's last refunds): the
     * entry stays, and the next run asks again; the refund's id is kept
     * by Stripe, under the key and in the payment's refunds
     */
    ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                  NGX_HTTP_LINEGATE_LOG "reconciliation: a refund of invoice "
                  "\"%V\" of subscription \"%V\" is %s%s%V%s: the entry "
                  "waits for it", &p->id, &e->found,
                  pending ? pending : "not through",
                  rc->refund.len ? " (" : "", &rc->refund,
                  rc->refund.len ? ")" : "");
    ngx_http_linegate_reconcile_defer(r, ctx, "refund_pending", 0);
}


/*
 * A Stripe step of the entry at work that brought nothing to act on:
 * refused (a 4xx with Stripe's error, not a 429), its message logged,
 * the entry stays (refused) and the run goes on with the next one: a
 * human's call; anything else (unreachable, a timeout, a 5xx, a 429, a
 * cut answer) leaves it (unavailable) and stops the run: Stripe is
 * likely down for the next entry too
 */
static void
ngx_http_linegate_reconcile_stripe_failed(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, const char *what, ngx_str_t *of,
    const char *refused, const char *unavailable)
{
    if (ngx_http_linegate_stripe_result(ctx)
        != NGX_HTTP_LINEGATE_STRIPE_REFUSED)
    {
        ngx_http_linegate_reconcile_defer(r, ctx, unavailable, 1);
        return;
    }

    if (of != NULL) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      NGX_HTTP_LINEGATE_LOG "reconciliation: Stripe refused "
                      "%s \"%V\": %s", what, of,
                      ngx_http_linegate_stripe_error_message(ctx));

    } else {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      NGX_HTTP_LINEGATE_LOG "reconciliation: Stripe refused "
                      "%s: %s", what,
                      ngx_http_linegate_stripe_error_message(ctx));
    }

    ngx_http_linegate_reconcile_defer(r, ctx, refused, 0);
}


/*
 * Every Stripe call of the run goes through here: while it is in flight
 * (bounded only by the Stripe location's timeouts) the run makes no step,
 * so the step renewal of the lease cannot run; a timer of the request
 * renews it (KEEP_MS, compare-and-renew as RENEW) until the call ends,
 * and is deleted then, or with the request.
 */
static ngx_int_t
ngx_http_linegate_reconcile_stripe(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, ngx_uint_t method, ngx_str_t *path,
    ngx_str_t *form, ngx_str_t *idempotency_key,
    ngx_http_linegate_resume_pt resume)
{
    ngx_pool_cleanup_t             *cln;
    ngx_http_linegate_reconcile_t  *rc;

    rc = ctx->data;

    if (!rc->keep_armed) {
        cln = ngx_pool_cleanup_add(r->pool, 0);
        if (cln == NULL) {
            return NGX_ERROR;
        }

        cln->handler = ngx_http_linegate_reconcile_unkeep;
        cln->data = rc;

        rc->keep.handler = ngx_http_linegate_reconcile_keep;
        /*
         * nginx's debug log reads a timer's ev->data as a connection: the
         * run's own; the run is found from the event itself
         */
        rc->keep.data = r->connection;
        rc->keeper = r;
        rc->keep.log = r->connection->log;
        rc->keep_armed = 1;
    }

    rc->resume = resume;

    if (ngx_http_linegate_stripe_call(r, ctx, method, path, form,
                                      idempotency_key,
                                      ngx_http_linegate_reconcile_stripe_done)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    ngx_add_timer(&rc->keep, NGX_HTTP_LINEGATE_RECONCILE_KEEP_MS);

    return NGX_OK;
}


/* the call ended, however: no renewal any more, on to its step */
static void
ngx_http_linegate_reconcile_stripe_done(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx)
{
    ngx_http_linegate_reconcile_t  *rc;

    rc = ctx->data;

    if (rc->keep.timer_set) {
        ngx_del_timer(&rc->keep);
    }

    rc->resume(r, ctx);
}


/*
 * The keep-alive timer: the lease renewed if still the run's (one renewal
 * at a time), and the timer set again while the call lasts
 */
static void
ngx_http_linegate_reconcile_keep(ngx_event_t *ev)
{
    ngx_http_request_t             *r;
    ngx_http_linegate_reconcile_t  *rc;

    /* ev->data is the connection (nginx's debug log): the run, around ev */
    rc = (ngx_http_linegate_reconcile_t *)
             ((u_char *) ev - offsetof(ngx_http_linegate_reconcile_t, keep));
    r = rc->keeper;

    if (!rc->keep_sent) {
        ngx_http_linegate_reconcile_lease_args(r, rc, &rc->keep_args,
                                               "renew");
        rc->keep_ms = ngx_current_msec;

        if (ngx_http_linegate_redis_script(r,
                                    NGX_HTTP_LINEGATE_SCRIPT_OP_RECONCILE_LEASE,
                                    2, &rc->keep_args,
                                    ngx_http_linegate_reconcile_kept)
            == NGX_OK)
        {
            rc->keep_sent = 1;
        }
    }

    ngx_add_timer(ev, NGX_HTTP_LINEGATE_RECONCILE_KEEP_MS);
}


/*
 * The keep-alive's renewal answered. Renewed: the lease counts from when
 * it was sent. Expired (another run may hold it): nothing is undone, the
 * call in flight goes on, but the lease is left as old as it was, so the
 * step renewal before the next Stripe call finds it lost and stops the
 * run (lease_lost). No answer: the next tick asks again.
 */
static void
ngx_http_linegate_reconcile_kept(ngx_http_request_t *r, redisReply *reply)
{
    ngx_http_linegate_ctx_t        *ctx;
    ngx_http_linegate_reconcile_t  *rc;

    ctx = ngx_http_linegate_get_ctx(r);
    rc = ctx->data;

    rc->keep_sent = 0;

    if (reply == NULL || reply->type != REDIS_REPLY_INTEGER) {
        return;
    }

    if (reply->integer == 1) {
        if ((ngx_msec_int_t) (rc->keep_ms - rc->leased_ms) > 0) {
            rc->leased_ms = rc->keep_ms;
        }

        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      NGX_HTTP_LINEGATE_LOG "reconciliation: the run's "
                      "lease renewed while Stripe holds its call (%M ms "
                      "into the run)", rc->keep_ms - rc->begun);
        return;
    }

    ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                  NGX_HTTP_LINEGATE_LOG "reconciliation: the run's lease "
                  "expired while Stripe held its call (%M ms since it was "
                  "taken or renewed): no Stripe call after this one",
                  rc->keep_ms - rc->leased_ms);

    if (rc->keep.timer_set) {
        ngx_del_timer(&rc->keep);
    }
}


/* the request freed, a call maybe still in flight: the timer goes */
static void
ngx_http_linegate_reconcile_unkeep(void *data)
{
    ngx_http_linegate_reconcile_t  *rc = data;

    if (rc->keep.timer_set) {
        ngx_del_timer(&rc->keep);
    }
}


/* RESOLVE */

static ngx_int_t
ngx_http_linegate_reconcile_resolve(ngx_http_request_t *r,
    ngx_http_linegate_reconcile_t *rc, ngx_http_linegate_reconcile_entry_t *e)
{
    ngx_http_linegate_redis_args_t  *a;

    a = &rc->args;
    ngx_http_linegate_redis_args_init(a);
    ngx_http_linegate_redis_arg_str(a,
        ngx_http_linegate_key_fixed(NGX_HTTP_LINEGATE_KEY_RECONCILE));
    ngx_http_linegate_redis_arg_str(a,
        ngx_http_linegate_key_fixed(NGX_HTTP_LINEGATE_KEY_RECONCILED));
    ngx_http_linegate_redis_arg_str(a,
        ngx_http_linegate_key_fixed(NGX_HTTP_LINEGATE_KEY_INVENTORY));
    ngx_http_linegate_redis_arg_str(a,
        ngx_http_linegate_key_fixed(NGX_HTTP_LINEGATE_KEY_HELD));
    ngx_http_linegate_redis_arg_str(a, &e->id);
    ngx_http_linegate_redis_arg_cstr(a, e->outcome);
    ngx_http_linegate_redis_arg_str(a, &e->found);
    ngx_http_linegate_redis_arg(a, rc->iso, NGX_HTTP_LINEGATE_ISO_LEN);
    ngx_http_linegate_redis_arg_cstr(a, e->line_request.len
                                        ? "invoice_id" : "subscription_id");
    ngx_http_linegate_redis_arg_cstr(a, e->giveback ? "1" : "0");
    ngx_http_linegate_redis_arg_str(a, &e->refund);
    ngx_http_linegate_redis_arg_str(a, &e->later);

    if (e->hold_as) {
        /* not settled: queued again in its place, held for a human */
        ngx_http_linegate_redis_arg_cstr(a, e->hold_as);
    }

    return ngx_http_linegate_reconcile_script(r, rc,
                                  NGX_HTTP_LINEGATE_SCRIPT_OP_RECONCILE_RESOLVE,
                                  4);
}


/* every Redis step resumes here, as every Stripe step in its callback */
static void
ngx_http_linegate_reconcile_stored(ngx_http_request_t *r, redisReply *reply)
{
    int64_t                               code;
    ngx_str_t                             s;
    ngx_http_linegate_ctx_t              *ctx;
    ngx_http_linegate_reconcile_t        *rc;
    ngx_http_linegate_reconcile_entry_t  *e;

    ctx = ngx_http_linegate_get_ctx(r);
    rc = ctx->data;
    e = &rc->entry[rc->i];

    code = -1;

    if (reply != NULL && reply->type == REDIS_REPLY_INTEGER) {
        code = reply->integer;

    } else if (reply != NULL && reply->type == REDIS_REPLY_ARRAY) {
        (void) ngx_http_linegate_reply_int(reply, 0, &code);
    }

    switch (ctx->state) {

    case NGX_HTTP_LINEGATE_RECONCILE_LEASE:
        if (reply == NULL || code < 0) {
            /* taken or not, it expires by itself */
            ngx_http_linegate_store_unavailable(r);
            return;
        }

        if (code == 0) {
            ngx_str_set(&ctx->outcome, "reconciliation_running");
            ngx_http_linegate_error(r, NGX_HTTP_CONFLICT,
                                    "RECONCILIATION_RUNNING",
                                    "Another reconciliation run holds the "
                                    "lease; try again later");
            return;
        }

        /* the cursor (an entry id, or "" for the start) */
        if (reply->type == REDIS_REPLY_ARRAY
            && ngx_http_linegate_reply_str(reply, 1, &s) == NGX_OK
            && s.len <= NGX_HTTP_LINEGATE_RECONCILE_FIELD_MAX
            && ngx_http_linegate_pstr(r->pool, &rc->cursor, s.data, s.len)
               == NULL)
        {
            ngx_http_linegate_internal_error(r);
            return;
        }

        if (rc->cursor.len) {
            /* the first batch: past it ("(<id>", exclusive) */
            rc->after.data = ngx_pnalloc(r->pool, rc->cursor.len + 1);
            if (rc->after.data == NULL) {
                ngx_http_linegate_internal_error(r);
                return;
            }

            rc->after.data[0] = '(';
            ngx_memcpy(rc->after.data + 1, rc->cursor.data, rc->cursor.len);
            rc->after.len = rc->cursor.len + 1;
        }

        /* (taken after the run began: its start is on the safe side) */
        rc->leased_ms = rc->begun;

        ngx_http_linegate_reconcile_next(r, ctx,
                                         NGX_HTTP_LINEGATE_RECONCILE_SWEEP);
        return;

    case NGX_HTTP_LINEGATE_RECONCILE_SWEEP:
        if (reply == NULL || reply->type != REDIS_REPLY_ARRAY) {
            rc->status = NGX_HTTP_SERVICE_UNAVAILABLE;
            ngx_http_linegate_reconcile_next(r, ctx,
                                          NGX_HTTP_LINEGATE_RECONCILE_UNLEASE);
            return;
        }

        (void) ngx_http_linegate_reconcile_members(r, rc, reply);
        ngx_http_linegate_reconcile_lost_next(r, ctx);
        return;

    case NGX_HTTP_LINEGATE_RECONCILE_SWEEP_READ:
        if (ngx_http_linegate_reconcile_lost_found(r, &rc->lost, reply)
            != NGX_OK)
        {
            /* the member stays for a later run, behind the newer ones */
            ngx_http_linegate_reconcile_lost_later(r, rc);
            rc->ci++;
            ngx_http_linegate_reconcile_lost_next(r, ctx);
            return;
        }

        ngx_http_linegate_reconcile_next(r, ctx,
                                     NGX_HTTP_LINEGATE_RECONCILE_SWEEP_SETTLE);
        return;

    case NGX_HTTP_LINEGATE_RECONCILE_SWEEP_SETTLE:
        ngx_http_linegate_reconcile_lost_settled(r, ctx, reply);
        return;

    case NGX_HTTP_LINEGATE_RECONCILE_SETUP:
        if (reply == NULL || reply->type != REDIS_REPLY_ARRAY) {
            /* the members wait for the next run */
            ngx_http_linegate_reconcile_next(r, ctx,
                                          NGX_HTTP_LINEGATE_RECONCILE_CLAIMS);
            return;
        }

        (void) ngx_http_linegate_reconcile_members(r, rc, reply);
        ngx_http_linegate_reconcile_setup_next(r, ctx);
        return;

    case NGX_HTTP_LINEGATE_RECONCILE_SETUP_READ:
        ngx_http_linegate_reconcile_setup_found(r, rc, reply);
        rc->ci++;
        ngx_http_linegate_reconcile_setup_next(r, ctx);
        return;

    case NGX_HTTP_LINEGATE_RECONCILE_CLAIMS:
        if (reply == NULL || reply->type != REDIS_REPLY_ARRAY) {
            if (rc->claims_read) {
                /* a later batch: the rest waits for the next run */
                rc->claims_unread = 1;
                ngx_http_linegate_reconcile_next(r, ctx,
                                             NGX_HTTP_LINEGATE_RECONCILE_READ);
                return;
            }

            rc->status = NGX_HTTP_SERVICE_UNAVAILABLE;
            ngx_http_linegate_reconcile_next(r, ctx,
                                          NGX_HTTP_LINEGATE_RECONCILE_UNLEASE);
            return;
        }

        ngx_http_linegate_reconcile_claims_read(r, rc, reply);
        ngx_http_linegate_reconcile_claim_next(r, ctx);
        return;

    case NGX_HTTP_LINEGATE_RECONCILE_INSPECT:
        if (ngx_http_linegate_reconcile_inspected(r, &rc->claim, reply)
            != NGX_OK)
        {
            ngx_http_linegate_reconcile_claim_left(r, ctx,
                                                   reply ? "not_understood"
                                                   : "store_unavailable");
            return;
        }

        ngx_http_linegate_reconcile_next(r, ctx,
                                         NGX_HTTP_LINEGATE_RECONCILE_SETTLE);
        return;

    case NGX_HTTP_LINEGATE_RECONCILE_SETTLE:
        ngx_http_linegate_reconcile_claim_settled(r, ctx, reply);
        return;

    case NGX_HTTP_LINEGATE_RECONCILE_READ:
        if ((reply == NULL || reply->type != REDIS_REPLY_ARRAY) && rc->n) {
            /* a later batch: what was done is answered */
            rc->stop = 1;
            ngx_http_linegate_reconcile_advance(r, ctx);
            return;
        }

        if (reply == NULL || reply->type != REDIS_REPLY_ARRAY) {
            rc->status = NGX_HTTP_SERVICE_UNAVAILABLE;
            ngx_http_linegate_reconcile_next(r, ctx,
                                          NGX_HTTP_LINEGATE_RECONCILE_UNLEASE);
            return;
        }

        ngx_http_linegate_reconcile_entries(r, rc, reply);
        ngx_http_linegate_reconcile_advance(r, ctx);
        return;

    case NGX_HTTP_LINEGATE_RECONCILE_RECORD:
        if (code == 1) {
            ngx_http_linegate_reconcile_settle(r, ctx, "recorded");
            return;
        }

        if (code == 0 && ngx_http_linegate_reply_str(reply, 1, &s) == NGX_OK
            && ngx_http_linegate_reconcile_is(&s, "reservation_missing"))
        {
            /* the number was released meanwhile: the purchase is undone */
            ngx_http_linegate_reconcile_next(r, ctx,
                                          NGX_HTTP_LINEGATE_RECONCILE_CANCEL);
            return;
        }

        ngx_http_linegate_reconcile_defer(r, ctx,
                                          reply ? "record_failed"
                                                : "store_unavailable",
                                          reply == NULL);
        return;

    case NGX_HTTP_LINEGATE_RECONCILE_RELEASE:
        if (reply == NULL) {
            ngx_http_linegate_reconcile_defer(r, ctx, "store_unavailable", 1);
            return;
        }

        /*
         * pv_release: {released, w[1..6], account, line exists}. The
         * number the entry held returns unless a line holds it.
         */
        if (e->line_request.len && code == 1) {
            /* lr_release: no request of this id any more: its index goes */
            ngx_http_linegate_line_unindex(r, &e->line_request);
        }

        if (e->line_request.len == 0
            && (ngx_http_linegate_reconcile_is(&e->reason, "worker_lost")
                || ngx_http_linegate_reconcile_is(&e->reason,
                                                  "record_failed")))
        {
            if (ngx_http_linegate_reply_int(reply, 8, &code) == NGX_OK
                && code == 0)
            {
                e->giveback = 1;

            } else {
                /*
                 * a line holds the purchase (or the answer does not say
                 * it does not): it was given, it is not refunded
                 */
                e->kept = 1;
            }
        }

        ngx_http_linegate_reconcile_settle(r, ctx,
                                           e->released ? e->released
                                                       : "released");
        return;

    case NGX_HTTP_LINEGATE_RECONCILE_FENCE:
        ngx_http_linegate_reconcile_fenced(r, ctx, reply, code);
        return;

    case NGX_HTTP_LINEGATE_RECONCILE_PAID_INDEX:
        if (rc->paid_setup.len) {
            /*
             * a cluster's pipeline: the index, then the set-up member,
             * which the promotion's entry stands on: both, as a
             * creation's (an error in place of the ZADD's count: no
             * member, the relay would have nothing behind it)
             */
            reply = (reply != NULL && reply->type == REDIS_REPLY_ARRAY
                     && reply->elements == 2
                     && reply->element[1]->type == REDIS_REPLY_INTEGER)
                    ? reply->element[0] : NULL;
        }

        if (reply == NULL || reply->type != REDIS_REPLY_STATUS) {
            /* nothing names the invoice: a member written goes again */
            (void) ngx_http_linegate_lr_setup_drop(r->connection->log,
                                                   &rc->paid_setup);
            ngx_str_null(&rc->paid_setup);
            ngx_http_linegate_reconcile_defer(r, ctx, "store_unavailable", 1);
            return;
        }

        ngx_http_linegate_reconcile_next(r, ctx,
                                     NGX_HTTP_LINEGATE_RECONCILE_PAID_SETTLE);
        return;

    case NGX_HTTP_LINEGATE_RECONCILE_PAID_SETTLE:
        ngx_http_linegate_reconcile_paid_settled(r, ctx, reply);
        return;

    case NGX_HTTP_LINEGATE_RECONCILE_MARK:
        ngx_http_linegate_reconcile_marked(r, ctx, reply ? code : -1);
        return;

    case NGX_HTTP_LINEGATE_RECONCILE_CUSTOMER:
        if (reply == NULL
            || (reply->type != REDIS_REPLY_STRING
                && reply->type != REDIS_REPLY_NIL))
        {
            ngx_http_linegate_reconcile_defer(r, ctx, "store_unavailable", 1);
            return;
        }

        /* none (or not an id): left as no_customer (advance) */
        if (reply->type == REDIS_REPLY_STRING
            && reply->len <= NGX_HTTP_LINEGATE_RECONCILE_FIELD_MAX
            && ngx_http_linegate_pstr(r->pool, &e->customer,
                                      (u_char *) reply->str, reply->len)
               == NULL)
        {
            ngx_http_linegate_reconcile_defer(r, ctx, "no_memory", 1);
            return;
        }

        /* the same entry again, now with a customer */
        ngx_http_linegate_reconcile_advance(r, ctx);
        return;

    case NGX_HTTP_LINEGATE_RECONCILE_RESOLVE:
        if (reply == NULL || code < 0) {
            /* settled at Stripe or in Redis: the next run sees that */
            ngx_http_linegate_reconcile_defer(r, ctx, "store_unavailable", 1);
            return;
        }

        if (e->hold_as) {
            /* held (or by another run): waits for a human, not settled */
            e->outcome = NULL;
            e->detail = e->hold_as;
            rc->i++;
            ngx_http_linegate_reconcile_advance(r, ctx);
            return;
        }

        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      NGX_HTTP_LINEGATE_LOG "reconciliation: %s %V of %s "
                      "\"%V\" (%V, number \"%V\", at Stripe \"%V\"): "
                      "%s%s%V%s%V%s",
                      NGX_HTTP_LINEGATE_RECONCILE_NAMES(e),
                      &e->reason, &e->number,
                      e->found.len ? &e->found : &e->subscription,
                      e->outcome, e->refund.len ? ", refund " : "",
                      &e->refund,
                      e->later.len ? ", later refunds " : "", &e->later,
                      code == 0 ? " (settled by another run)" : "");
        rc->i++;
        ngx_http_linegate_reconcile_advance(r, ctx);
        return;

    case NGX_HTTP_LINEGATE_RECONCILE_RENEW:
        if (code == 1) {
            rc->leased_ms = rc->renew_ms;
            ngx_http_linegate_reconcile_next(r, ctx, rc->renewing);
            return;
        }

        if (code != 0) {
            /* not known to be lost: no Stripe call without knowing */
            ngx_http_linegate_reconcile_defer(r, ctx, "store_unavailable", 1);
            return;
        }

        /*
         * expired: another run may hold the lease, and be at this very
         * entry; this one calls Stripe no more, and leaves the cursor
         */
        rc->lease_lost = 1;

        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      NGX_HTTP_LINEGATE_LOG "reconciliation: the run's "
                      "lease expired (%M ms since it was taken or "
                      "renewed, %M ms into the run): stopped before its "
                      "next Stripe call",
                      rc->renew_ms - rc->leased_ms,
                      rc->renew_ms - rc->begun);

        ngx_http_linegate_reconcile_defer(r, ctx, "lease_lost", 1);
        return;

    default: /* NGX_HTTP_LINEGATE_RECONCILE_UNLEASE */
        if (code == 0 && !rc->lease_lost) {
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          NGX_HTTP_LINEGATE_LOG "reconciliation: the run's "
                          "lease expired before it ended (%M ms into the "
                          "run): the cursor is not written",
                          ngx_current_msec - rc->begun);
        }

        ngx_http_linegate_reconcile_next(r, ctx,
                                         NGX_HTTP_LINEGATE_RECONCILE_DONE);
        return;
    }
}


/* DONE: {"entries": [...], "more": bool} */
static void
ngx_http_linegate_reconcile_answer(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, ngx_http_linegate_reconcile_t *rc)
{
    ngx_str_t                            *owner, *item, *sub;
    ngx_uint_t                            i, invoice;
    ngx_http_linegate_json_write_t        jw;
    ngx_http_linegate_reconcile_entry_t  *e;

    if (rc->status != NGX_HTTP_OK) {
        ngx_http_linegate_store_unavailable(r);
        return;
    }

    (void) ngx_http_linegate_json_write_init(&jw, r->pool, 1024);
    ngx_http_linegate_json_write_object(&jw);
    ngx_http_linegate_json_write_key(&jw, "entries");
    ngx_http_linegate_json_write_array(&jw);

    for (i = 0; i < rc->n; i++) {
        e = &rc->entry[i];

        /* what Stripe held is an invoice, or a subscription */
        invoice = (e->line_request.len != 0);
        owner = invoice ? &e->workspace : &e->account;
        item = invoice ? &e->line_request : &e->worker_id;
        sub = e->found.len ? &e->found : &e->subscription;

        /* an entry read without one of its fields is left out */
        if (e->id.data == NULL || owner->data == NULL || item->data == NULL
            || e->reason.data == NULL)
        {
            continue;
        }

        ngx_http_linegate_json_write_object(&jw);
        ngx_http_linegate_json_write_key(&jw, "id");
        ngx_http_linegate_json_write_str(&jw, e->id.data, e->id.len);

        if (invoice) {
            ngx_http_linegate_json_write_key(&jw, "workspace");
            ngx_http_linegate_json_write_str(&jw, owner->data, owner->len);
            ngx_http_linegate_json_write_key(&jw, "line_request_id");
            ngx_http_linegate_json_write_str(&jw, item->data, item->len);
            ngx_http_linegate_json_write_key(&jw, "reason");
            ngx_http_linegate_json_write_str(&jw, e->reason.data,
                                             e->reason.len);
            ngx_http_linegate_json_write_key(&jw, "invoice_id");

        } else {
            ngx_http_linegate_json_write_key(&jw, "account");
            ngx_http_linegate_json_write_str(&jw, owner->data, owner->len);
            ngx_http_linegate_json_write_key(&jw, "worker_id");
            ngx_http_linegate_json_write_str(&jw, item->data, item->len);
            ngx_http_linegate_json_write_key(&jw, "reason");
            ngx_http_linegate_json_write_str(&jw, e->reason.data,
                                             e->reason.len);
            ngx_http_linegate_json_write_key(&jw, "subscription_id");
        }

        ngx_http_linegate_json_write_str_or_null(&jw, sub);
        ngx_http_linegate_json_write_key(&jw, "outcome");
        ngx_http_linegate_json_write_cstr(&jw, e->outcome ? e->outcome
                                                          : "deferred");
        ngx_http_linegate_json_write_key(&jw, "detail");

        if (e->detail) {
            ngx_http_linegate_json_write_cstr(&jw, e->detail);

        } else {
            ngx_http_linegate_json_write_null(&jw);
        }

        if (!invoice) {
            /*
             * a settled purchase undone: what its first invoice became,
             * and its later paid ones
             */
            ngx_http_linegate_json_write_key(&jw, "refund");

            if (e->outcome && e->refund.len) {
                ngx_http_linegate_json_write_str(&jw, e->refund.data,
                                                 e->refund.len);

            } else {
                ngx_http_linegate_json_write_null(&jw);
            }

            ngx_http_linegate_json_write_key(&jw, "later_refunds");

            if (e->outcome && e->refund.len) {
                ngx_http_linegate_reconcile_words(&jw, &e->later);

            } else {
                ngx_http_linegate_json_write_null(&jw);
            }
        }

        ngx_http_linegate_json_write_end(&jw, '}');
    }

    ngx_http_linegate_json_write_end(&jw, ']');
    ngx_http_linegate_json_write_key(&jw, "more");
    ngx_http_linegate_json_write_bool(&jw, rc->pending || rc->i < rc->n
                                           || rc->claims_unread);
    ngx_http_linegate_json_write_end(&jw, '}');

    ngx_str_set(&ctx->outcome, "reconciled");

    ngx_http_linegate_send_jw(r, NGX_HTTP_OK, &jw);
}


/* "re_a re_b" as ["re_a", "re_b"] */
static void
ngx_http_linegate_reconcile_words(ngx_http_linegate_json_write_t *jw,
    ngx_str_t *words)
{
    u_char  *p, *last, *end;

    ngx_http_linegate_json_write_array(jw);

    p = words->data;
    last = words->data + words->len;

    while (p < last) {
        end = ngx_strlchr(p, last, ' ');

        if (end == NULL) {
            end = last;
        }

        ngx_http_linegate_json_write_str(jw, p, end - p);
        p = end + 1;
    }

    ngx_http_linegate_json_write_end(jw, ']');
}


static ngx_int_t
ngx_http_linegate_reconcile_script(ngx_http_request_t *r,
    ngx_http_linegate_reconcile_t *rc, ngx_http_linegate_script_id_e script,
    int nkeys)
{
    return ngx_http_linegate_redis_script(r, script, nkeys, &rc->args,
                                          ngx_http_linegate_reconcile_stored);
}


/* the keys of the entry's purchase in its account (keys.h) */
static ngx_int_t
ngx_http_linegate_reconcile_keys(ngx_http_request_t *r,
    ngx_http_linegate_reconcile_entry_t *e, ngx_str_t *keys)
{
    return ngx_http_linegate_key_purchase(r->pool, &e->account,
                                          &e->worker_id, keys);
}


static ngx_uint_t
ngx_http_linegate_reconcile_is(ngx_str_t *s, const char *value)
{
    size_t  len;

    len = ngx_strlen(value);

    return s->len == len && ngx_strncmp(s->data, value, len) == 0;
}


/* "2026-05-18T14:30:00.000Z" (the module's own format), or 0 */
static time_t
ngx_http_linegate_reconcile_time(ngx_str_t *iso)
{
    u_char      *p;
    ngx_int_t    y, m, d, hh, mm, ss, days;

    p = iso->data;

    if (iso->len < 20 || p[4] != '-' || p[7] != '-' || p[10] != 'T'
        || p[13] != ':' || p[16] != ':')
    {
        return 0;
    }

    y = ngx_atoi(p, 4);
    m = ngx_atoi(p + 5, 2);
    d = ngx_atoi(p + 8, 2);
    hh = ngx_atoi(p + 11, 2);
    mm = ngx_atoi(p + 14, 2);
    ss = ngx_atoi(p + 17, 2);

    if (y < 1970 || m < 1 || m > 12 || d < 1 || d > 31 || hh < 0 || hh > 23
        || mm < 0 || mm > 59 || ss < 0 || ss > 60)
    {
        return 0;
    }

    /* days since 1970-01-01 of a proleptic Gregorian date */
    if (m <= 2) {
        y--;
        m += 12;
    }

    days = 365 * y + y / 4 - y / 100 + y / 400 + (153 * (m - 3) + 2) / 5
           + d - 719469;

    return (time_t) days * 86400 + hh * 3600 + mm * 60 + ss;
}
