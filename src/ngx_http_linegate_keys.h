
/*
 * linegate: the names of the Redis keys, built in one place from ids the
 * caller has validated (docs/data-model.md lists every key, its slot and
 * the scripts that touch it). A name is written into the caller's buffer
 * or the request's pool: no allocation of its own.
 */


#ifndef _NGX_HTTP_LINEGATE_KEYS_H_INCLUDED_
#define _NGX_HTTP_LINEGATE_KEYS_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>


/* each name is head, a, mid, b, tail (a and b: ids, NULL when unused) */
typedef enum {
    /* a workspace: lg:{ws:<W>}..., one hash tag */
    NGX_HTTP_LINEGATE_KEY_WS = 0,           /* a = W */
    NGX_HTTP_LINEGATE_KEY_WS_KEYS,          /* a = W */
    NGX_HTTP_LINEGATE_KEY_WS_GCRA,          /* a = W */
    NGX_HTTP_LINEGATE_KEY_WS_LR,            /* a = W, b = request id */
    NGX_HTTP_LINEGATE_KEY_WS_IDEM,          /* a = W, b = key digest */
    NGX_HTTP_LINEGATE_KEY_WS_LINES,         /* a = W: its live requests */
    NGX_HTTP_LINEGATE_KEY_WS_USAGE,         /* a = W, b = "<id>:<day>" */
    NGX_HTTP_LINEGATE_KEY_WS_LRVOID,        /* a = W, b = request id */
    NGX_HTTP_LINEGATE_KEY_WS_EVENT,         /* a = W, b = Stripe event id */
    NGX_HTTP_LINEGATE_KEY_WS_PENDING,       /* a = W: its awaiting_payment */
    NGX_HTTP_LINEGATE_KEY_WS_ACK,           /* a = W: a write for WAIT */
    /* a = W, b = "<id>:<digest>": a usage report's idempotency key */
    NGX_HTTP_LINEGATE_KEY_WS_USAGE_IDEM,
    /*
     * a = W: its awaiting_payment, provisioning and active requests, what
     * a creation counts (:lines keeps the failed ones too, for by-user)
     */
    NGX_HTTP_LINEGATE_KEY_WS_LIVE,
    /* a = W: its Stripe subscriptions seen ended (wh_subscription) */
    NGX_HTTP_LINEGATE_KEY_WS_SUBEND,

    /* a provisioning account: lg:{acct:<A>}..., one hash tag */
    NGX_HTTP_LINEGATE_KEY_ACCT,             /* a = A */
    NGX_HTTP_LINEGATE_KEY_ACCT_PROV,        /* a = A */
    NGX_HTTP_LINEGATE_KEY_ACCT_RESV,        /* a = A, b = worker id */
    NGX_HTTP_LINEGATE_KEY_ACCT_LINE,        /* a = A, b = worker id */
    NGX_HTTP_LINEGATE_KEY_ACCT_OUTBOX,      /* a = A, b = worker id */

    /* global lookups, one key each (issue 10: their slots) */
    NGX_HTTP_LINEGATE_KEY_APIKEY,           /* a = sha256hex of the key */
    NGX_HTTP_LINEGATE_KEY_SBKEY,            /* a = key id */
    NGX_HTTP_LINEGATE_KEY_LINE,             /* a = request id */
    NGX_HTTP_LINEGATE_KEY_INVOICE,          /* a = invoice id */
    NGX_HTTP_LINEGATE_KEY_PV,               /* ngx_http_linegate_key_pv() */

    /* linegate_limit: lg:rl:{<zone>:h:<md5 hex of the value>} */
    NGX_HTTP_LINEGATE_KEY_RL_HASH,          /* a = zone, b = md5 hex */

    /* the fleet's own keys: no id */
    NGX_HTTP_LINEGATE_KEY_INVENTORY,
    NGX_HTTP_LINEGATE_KEY_PROVISIONING,
    NGX_HTTP_LINEGATE_KEY_RECONCILE,
    NGX_HTTP_LINEGATE_KEY_RECONCILED,
    NGX_HTTP_LINEGATE_KEY_RECONCILE_LEASE,
    NGX_HTTP_LINEGATE_KEY_PV_INFLIGHT,
    NGX_HTTP_LINEGATE_KEY_LR_INFLIGHT,
    NGX_HTTP_LINEGATE_KEY_LR_SETUP,
    NGX_HTTP_LINEGATE_KEY_HELD,
    NGX_HTTP_LINEGATE_KEY_RECONCILE_CURSOR,
    /* the numbers pv_claim drew that are no E.164 number, set aside */
    NGX_HTTP_LINEGATE_KEY_QUARANTINE,

    /*
     * the fleet's "queued once" marker of a reconcile entry:
     * lg:{fleet}:q:<A>:<worker id>:<reason> (pv_settle), a = A, b =
     * "<worker>:<reason>"; lg:{fleet}:q:<W>:inv_<...> (lr_invoice_orphan),
     * a = W, b = "inv_<invoice id>", "inv_draft_<request id>",
     * "lapsed_<request id>" (reissue_lapsed) or "paid_<invoice id>"
     * (paid_after_cancel); an invoice's never expires, and a run's
     * reissue_lapsed or worker_lost takes "inv_<invoice id>" or
     * "paid_<invoice id>" (lr_paid_claim);
     * _FLEET_Q_NONE, lg:{fleet}:q:-, when there is no reason (never set)
     */
    NGX_HTTP_LINEGATE_KEY_FLEET_Q,
    NGX_HTTP_LINEGATE_KEY_FLEET_Q_NONE,

    NGX_HTTP_LINEGATE_KEY_COUNT
} ngx_http_linegate_key_e;


/*
 * How many KEYS[] the scripts sent from several places take (the keys
 * first, in the order their headers give).
 */
#define NGX_HTTP_LINEGATE_KEYS_PV_TOKEN     1
#define NGX_HTTP_LINEGATE_KEYS_PV_CLAIM     4
#define NGX_HTTP_LINEGATE_KEYS_PV_SETTLE    6

/*
 * A purchase's keys in its account (ngx_http_linegate_key_purchase()):
 * pv_reserve, pv_record, pv_release and pv_inspect take all five, so
 * that a cluster checks every key a step touches before it runs (during
 * a migration of the account's slot: TRYAGAIN, never a half-run step)
 */
#define NGX_HTTP_LINEGATE_KEYS_PV_PURCHASE  5
#define NGX_HTTP_LINEGATE_KEYS_PV_RESERVE   NGX_HTTP_LINEGATE_KEYS_PV_PURCHASE
#define NGX_HTTP_LINEGATE_KEYS_PV_RECORD    NGX_HTTP_LINEGATE_KEYS_PV_PURCHASE
#define NGX_HTTP_LINEGATE_KEYS_PV_RELEASE   NGX_HTTP_LINEGATE_KEYS_PV_PURCHASE
#define NGX_HTTP_LINEGATE_KEYS_PV_INSPECT   NGX_HTTP_LINEGATE_KEYS_PV_PURCHASE


/*
 * A line request's keys in its workspace (ngx_http_linegate_key_request()):
 * the scripts that settle, drop or create it name the request, the
 * index, the index of live requests and the pending marker, so that a
 * cluster checks them before the step runs; those that keep an answer
 * under the idempotency key name it too
 */
#define NGX_HTTP_LINEGATE_KEYS_LR_REQUEST   4
#define NGX_HTTP_LINEGATE_KEYS_LR_IDEM      5


/* the length of the name, for a caller's buffer */
size_t ngx_http_linegate_key_len(ngx_http_linegate_key_e kind,
    ngx_str_t *a, ngx_str_t *b);

/* writes the name at p (key_len bytes), returns its end */
u_char *ngx_http_linegate_key_write(u_char *p, ngx_http_linegate_key_e kind,
    ngx_str_t *a, ngx_str_t *b);

/* the name in the pool: NGX_OK, or NGX_ERROR without memory */
ngx_int_t ngx_http_linegate_key(ngx_pool_t *pool,
    ngx_http_linegate_key_e kind, ngx_str_t *a, ngx_str_t *b,
    ngx_str_t *key);

/*
 * The keys of account's purchase worker_id, in the pool, in the order
 * the scripts take them: lg:{acct:<A>}, :prov, :resv:<worker>,
 * :line:<worker>, :reconcile:w:<worker> (the outbox)
 */
ngx_int_t ngx_http_linegate_key_purchase(ngx_pool_t *pool,
    ngx_str_t *account, ngx_str_t *worker_id, ngx_str_t *keys);

/*
 * A preview token's key, lg:pv:{<tag>}:<digest>, the tag read from the
 * token (its 3 characters after "lpv_"), the digest the token's SHA-256
 * in hex (the token itself is never a key name): NGX_ERROR for a
 * shorter token, without memory or when OpenSSL failed
 */
ngx_int_t ngx_http_linegate_key_pv(ngx_pool_t *pool, ngx_str_t *token,
    ngx_str_t *key);

/*
 * The 3 characters a preview of account writes after "lpv_": a hash tag
 * of the slot of the account's keys (lg:{acct:<A>}), so that the token's
 * key lives beside them and the confirm spends it in the account's step
 */
ngx_int_t ngx_http_linegate_key_pv_tag(ngx_pool_t *pool, ngx_str_t *account,
    u_char *tag);

/* 1 when two keys are in one Redis Cluster slot */
ngx_uint_t ngx_http_linegate_key_same_slot(ngx_str_t *a, ngx_str_t *b);

/*
 * The keys of workspace ws's line request id, in the pool, in the order
 * the scripts take them: lg:{ws:<W>}:lr:<id>, :lines, :live, :pending, and,
 * when digest is not NULL, :idem:<digest> (:idem: alone for an empty
 * digest: a request without an idempotency key declares a key its
 * script never touches, so that its list of keys is one)
 */
ngx_int_t ngx_http_linegate_key_request(ngx_pool_t *pool, ngx_str_t *ws,
    ngx_str_t *id, ngx_str_t *digest, ngx_str_t *keys);

/* the name of a key without id (inventory, streams, indexes): static */
ngx_str_t *ngx_http_linegate_key_fixed(ngx_http_linegate_key_e kind);

/*
 * the pub/sub channel on which revoked API keys' digests (sha256hex)
 * are published: "lg:keys:revoked" (static)
 */
ngx_str_t *ngx_http_linegate_key_channel_revoked(void);

/*
 * The workspace of a key under its tag (lg:{ws:W}...): NGX_OK and W (a
 * view into key), NGX_DECLINED for any other key
 */
ngx_int_t ngx_http_linegate_key_workspace_of(u_char *key, size_t len,
    ngx_str_t *ws);

/*
 * The kind of the key named key (len bytes) written at p, up to last:
 * its form with every id as "*" (lg:{ws:*}:lr:*), for a log line that
 * must say which key Redis refused without its ids (an API key's
 * digest); "lg:?" for a name of no known form. Returns the end.
 */
u_char *ngx_http_linegate_key_kind_write(u_char *p, u_char *last,
    u_char *key, size_t len);


#endif /* _NGX_HTTP_LINEGATE_KEYS_H_INCLUDED_ */
