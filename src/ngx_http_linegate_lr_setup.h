
/*
 * linegate: the set-up relay of the Lines API on a Redis Cluster. A line
 * entering provisioning gets one entry in the set-up stream
 * lg:provisioning (a plain key, its own slot). On one Redis (or
 * Sentinel's master) the script that promotes the line appends it in
 * the same step; on a cluster no script may touch two slots, so the
 * step only reports it, and nginx appends it after, under a journal in
 * the fleet's slot that covers a worker dying in between:
 *
 *   before the step  ZADD lg:{fleet}:lr:setup <now ms> "<W> <id> <nonce>"
 *                    (the nonce is the call's: a webhook and a poll of
 *                    one request each remove only their own member)
 *   the step         lr_create, lr_resolve or wh_invoice ('c': no XADD)
 *   made an entry    durable XADD lg:provisioning, then durable ZREM of
 *                    the member (ngx_http_linegate_lr_setup_relay())
 *   made none        durable ZREM (ngx_http_linegate_lr_setup_drop())
 *   no answer        the member stays: a reconciliation run's sweep
 *                    (reconcile.c) reads the request and relays it if it
 *                    is provisioning, then removes the member
 *
 * Delivery is therefore at least once on a cluster (a worker dying
 * between the XADD and the ZREM, or a sweep racing a late relay, gives a
 * duplicate entry; set-up workers de-duplicate by workspace and id).
 */


#ifndef _NGX_HTTP_LINEGATE_LR_SETUP_H_INCLUDED_
#define _NGX_HTTP_LINEGATE_LR_SETUP_H_INCLUDED_


#include "ngx_http_linegate_module.h"
#include "ngx_http_linegate_redis.h"
#include "ngx_http_linegate_keys.h"


/*
 * The sweep leaves a member alone this long at least (ms), whatever
 * linegate_reconcile_lost_after says: far beyond any command timeout,
 * so that it never relays a line its own worker is still relaying
 */
#define NGX_HTTP_LINEGATE_LR_SETUP_AFTER  60000

/* a member's parts at most (the workspace, the id, the nonce) */
#define NGX_HTTP_LINEGATE_LR_SETUP_PART_MAX  64


/* a set-up entry: lg_lr_provision's fields (include/lr_settle.lua) */
typedef struct {
    ngx_str_t                       workspace;
    ngx_str_t                       id;
    ngx_str_t                       channel_type;
    ngx_str_t                       line_type;
    ngx_str_t                       at;         /* ISO 8601 */
} ngx_http_linegate_lr_setup_t;


/* the member "<W> <id> <pid>.<random>.<n>" of this call, into the pool */
ngx_int_t ngx_http_linegate_lr_setup_member(ngx_pool_t *pool, ngx_str_t *ws,
    ngx_str_t *id, ngx_str_t *member);

/*
 * "ZADD lg:{fleet}:lr:setup <now, ms> <member>" into a (initialized
 * here), acknowledged (linegate_redis_wait) where sent alone
 */
void ngx_http_linegate_lr_setup_add_args(ngx_http_request_t *r,
    ngx_http_linegate_redis_args_t *a, ngx_str_t *member);

/*
 * "ZADD <journal> <now, ms> <member>" into a, acknowledged: a member of
 * one of the fleet's journals written before the step it covers (the
 * set-up relay's, a creation's lg:{fleet}:lr:inflight on a cluster)
 */
void ngx_http_linegate_lr_journal_add_args(ngx_http_request_t *r,
    ngx_http_linegate_redis_args_t *a, ngx_http_linegate_key_e journal,
    ngx_str_t *member);

/*
 * The entry was made: a durable XADD to lg:provisioning, then, once it
 * is done, a durable ZREM of member (none when member is empty).
 * NGX_ERROR: not queued (logged); the member stays for the sweep.
 */
ngx_int_t ngx_http_linegate_lr_setup_relay(ngx_log_t *log,
    ngx_http_linegate_lr_setup_t *e, ngx_str_t *member);

/* no entry was made: the member goes (a durable ZREM) */
ngx_int_t ngx_http_linegate_lr_setup_drop(ngx_log_t *log,
    ngx_str_t *member);

/*
 * A member read back (the sweep): its workspace and id, NGX_ERROR when
 * it is not "<W> <id> <nonce>" of printable words without braces
 */
ngx_int_t ngx_http_linegate_lr_setup_parse(ngx_str_t *member, ngx_str_t *ws,
    ngx_str_t *id);


#endif /* _NGX_HTTP_LINEGATE_LR_SETUP_H_INCLUDED_ */
