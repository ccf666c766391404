
/*
 * linegate: the Lines API (SPEC 2). This file dispatches its endpoints
 * and serves the reads (GET /api/line-requests/:id with reconciliation,
 * GET /api/lines/by-user, GET /api/lines/check-availability). What every
 * endpoint of the family shares (the common head of the scripts, the
 * line object, the error bodies) is in ngx_http_linegate_lines_request.c;
 * the writes are in ngx_http_linegate_line_create.c and _line_manage.c.
 *
 * Every endpoint is one script for its state step: the credential, the
 * workspace's request rate and the work share one Redis round trip. The
 * hot read, GET by id with the workspace already known (a cached API key
 * or a Clerk token), is a pipeline instead, still one round trip: the
 * workspace's rate (rl_gcra.lua, the script linegate_limit runs) and
 * plain commands, as Redis runs a script's commands ~4x slower.
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


static void ngx_http_linegate_lines_key_lookup(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr);
static void ngx_http_linegate_lines_key_read(ngx_http_request_t *r,
    redisReply *reply);
static void ngx_http_linegate_lines_dispatch(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr);
static ngx_uint_t ngx_http_linegate_lines_revalidates(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr);
static void ngx_http_linegate_lines_clock(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr);
static ngx_int_t ngx_http_linegate_lines_path_id(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr);

static void ngx_http_linegate_lines_read_resume(ngx_http_request_t *r,
    redisReply *reply);
static void ngx_http_linegate_lines_read_stripe_done(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx);
static void ngx_http_linegate_lines_read_fail(ngx_http_request_t *r,
    ngx_http_linegate_lr_fail_e fail);

static void ngx_http_linegate_lr_get(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr);
static void ngx_http_linegate_lr_script(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr);
static void ngx_http_linegate_lr_get_script(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, ngx_http_linegate_read_step_e step);
static ngx_int_t ngx_http_linegate_lr_get_line(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, redisReply *reply);
static void ngx_http_linegate_lr_get_tx(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr);
static void ngx_http_linegate_lr_get_tx_done(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, redisReply *reply);
static ngx_uint_t ngx_http_linegate_lr_get_tx_broken(redisReply *reply);
static void ngx_http_linegate_lr_get_tx_undo(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, redisReply *reply);
static void ngx_http_linegate_lr_rate_refund(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr);
static ngx_uint_t ngx_http_linegate_lr_lease(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr);
static ngx_uint_t ngx_http_linegate_lr_idle(ngx_http_linegate_lr_t *lr,
    ngx_uint_t want);
static void ngx_http_linegate_lr_idle_set(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, ngx_uint_t want,
    ngx_http_linegate_redis_args_t *a);
static ngx_int_t ngx_http_linegate_lr_idle_reply(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, redisReply *reply);
static ngx_int_t ngx_http_linegate_lr_rate_reply(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, redisReply *reply);
static ngx_int_t ngx_http_linegate_lr_get_tx_failed(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr);
static ngx_int_t ngx_http_linegate_lr_revalidated(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, redisReply *ws, redisReply *digests,
    ngx_uint_t admitted);
static void ngx_http_linegate_lr_read(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, redisReply *flat);
static ngx_uint_t ngx_http_linegate_lr_due(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, redisReply *flat);
static void ngx_http_linegate_lr_claim(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, redisReply *flat);
static void ngx_http_linegate_lr_claim_done(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, redisReply *reply);
static void ngx_http_linegate_lr_get_done(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, redisReply *reply);
static void ngx_http_linegate_lr_reconciled(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr);
static void ngx_http_linegate_lr_resolved(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, redisReply *reply);

static void ngx_http_linegate_lines_list(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr);
static void ngx_http_linegate_lines_list_done(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, redisReply *reply);
static void ngx_http_linegate_lines_list_indexed(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, redisReply *reply);
static void ngx_http_linegate_lines_list_index(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, redisReply *index);
static ngx_uint_t ngx_http_linegate_lines_list_listed(
    ngx_http_linegate_lr_t *lr, redisReply *index, ngx_uint_t i);
static ngx_int_t ngx_http_linegate_lines_list_cursor(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, redisReply *index);
static void ngx_http_linegate_lines_list_page(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr);
static void ngx_http_linegate_lines_list_page_args(ngx_http_request_t *r,
    ngx_http_linegate_redis_args_t *a, ngx_str_t *key, ngx_str_t *from,
    ngx_uint_t nties);
static void ngx_http_linegate_lines_list_read(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr);
static void ngx_http_linegate_lines_list_lines(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, redisReply *reply);
static ngx_int_t ngx_http_linegate_lines_list_cached(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr);
static void ngx_http_linegate_lines_list_woken(ngx_http_request_t *r);
static void ngx_http_linegate_lines_list_fetch(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr);
static void ngx_http_linegate_lines_list_tracked(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr);
static ngx_int_t ngx_http_linegate_lines_list_fill_reply(
    ngx_http_request_t *r, ngx_http_linegate_lr_t *lr, redisReply *reply);
static void ngx_http_linegate_lines_list_send(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, redisReply *index);
static void ngx_http_linegate_lines_list_drop(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, ngx_str_t *ids, ngx_uint_t n);

/* by-user's first page read again with its scores (a full one) */
static ngx_str_t  ngx_http_linegate_lines_list_start = ngx_string("-inf");

static void ngx_http_linegate_line_check(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr);
static ngx_int_t ngx_http_linegate_line_check_id(ngx_http_request_t *r,
    ngx_str_t *id);
static void ngx_http_linegate_line_check_done(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, redisReply *reply);
static void ngx_http_linegate_line_check_jw(ngx_http_linegate_json_write_t *jw,
    ngx_http_request_t *r, ngx_http_linegate_line_t *line);



void
ngx_http_linegate_lines_handler(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx)
{
    ngx_uint_t               clerk_only;
    ngx_http_linegate_lr_t  *lr;

    lr = ngx_pcalloc(r->pool, sizeof(ngx_http_linegate_lr_t));
    if (lr == NULL) {
        ngx_http_linegate_internal_error(r);
        return;
    }

    lr->ctx = ctx;
    lr->pool = r->pool;
    ctx->data = lr;

    clerk_only = (ctx->api == NGX_HTTP_LINEGATE_API_LINE_AVAILABILITY);

    if (ngx_http_linegate_auth_workspace(r, ctx, clerk_only, &lr->who)
        != NGX_OK)
    {
        ngx_http_linegate_refuse(r);
        return;
    }

    /* an API key not in the cache: its lookup is read first */
    lr->caller = (lr->who.kind == NGX_HTTP_LINEGATE_AUTH_API_KEY
                  && !lr->who.cached)
                 ? NGX_HTTP_LINEGATE_LR_CALLER_KEY
                 : NGX_HTTP_LINEGATE_LR_CALLER_WS;

    ngx_http_linegate_lines_clock(r, lr);

    if (lr->now_iso.data == NULL || lr->date.data == NULL) {
        ngx_http_linegate_internal_error(r);
        return;
    }

    /*
     * Every script touches the workspace's slot only: the lookup of an
     * API key no cache knows is its own step first (lines_key_lookup). The
     * reads of a key whose entry has expired check it in their pipeline
     * instead (READ_REVALIDATE).
     */
    if (lr->caller == NGX_HTTP_LINEGATE_LR_CALLER_KEY
        && !(lr->who.stale.len && ngx_http_linegate_lines_revalidates(r, lr)))
    {
        ngx_http_linegate_lines_key_lookup(r, lr);
        return;
    }

    ngx_http_linegate_lines_dispatch(r, lr);
}


/*
 * An API key no worker cache knows (lr->caller KEY, who.value its
 * digest): its lookup lg:apikey:<digest> (one key, its own slot) is read
 * before the endpoint's first step, which then runs its script in 'w'
 * mode on the workspace, as for a cached key, and checks that the
 * workspace still lists the key (lines_args). An unknown key is answered
 * 401 here: no script runs, nothing is counted. The endpoint is then
 * dispatched again from its start (a read whose cache entry had expired
 * comes back here too, and goes the script's way: lr->resolved).
 */
static void
ngx_http_linegate_lines_key_lookup(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr)
{
    ngx_str_t                       key;

    lr->key_digest = lr->who.value;

    if (ngx_http_linegate_key(r->pool, NGX_HTTP_LINEGATE_KEY_APIKEY,
                              &lr->key_digest, NULL, &key)
        != NGX_OK)
    {
        ngx_http_linegate_internal_error(r);
        return;
    }

    if (ngx_http_linegate_redis_get(r, &key, ngx_http_linegate_lines_key_read)
        != NGX_OK)
    {
        ngx_http_linegate_store_unavailable(r);
    }
}


static void
ngx_http_linegate_lines_key_read(ngx_http_request_t *r, redisReply *reply)
{
    ngx_http_linegate_lr_t  *lr;

    lr = ngx_http_linegate_lines_lr(r);

    if (reply == NULL) {
        ngx_http_linegate_store_unavailable(r);
        return;
    }

    if (reply->type == REDIS_REPLY_NIL) {
        ngx_http_linegate_lines_unauthorized(r, lr);
        return;
    }

    if (reply->type != REDIS_REPLY_STRING || reply->len == 0
        || ngx_http_linegate_pstr(r->pool, &lr->who.value,
                                  (u_char *) reply->str, reply->len)
           == NULL)
    {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      NGX_HTTP_LINEGATE_LOG "unexpected API key lookup "
                      "reply of type %d", reply->type);
        ngx_http_linegate_internal_error(r);
        return;
    }

    lr->caller = NGX_HTTP_LINEGATE_LR_CALLER_WS;
    lr->resolved = 1;
    lr->lookups++;

    ngx_http_linegate_lines_dispatch(r, lr);
}


/* the reads whose pipeline checks a key's workspace (READ_REVALIDATE) */
static ngx_uint_t
ngx_http_linegate_lines_revalidates(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr)
{
    return lr->ctx->api == NGX_HTTP_LINEGATE_API_LINES_BY_USER
           || (lr->ctx->api == NGX_HTTP_LINEGATE_API_LINE_REQUEST
               && (r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD)));
}


static void
ngx_http_linegate_lines_dispatch(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr)
{
    ngx_http_linegate_ctx_t  *ctx;

    ctx = lr->ctx;

    switch (ctx->api) {

    case NGX_HTTP_LINEGATE_API_LINE_REQUEST_CREATE:
        ngx_http_linegate_line_create(r, lr);
        return;

    case NGX_HTTP_LINEGATE_API_LINE_REQUEST:
        if (ngx_http_linegate_lines_path_id(r, lr) != NGX_OK) {
            ngx_http_linegate_lines_defer(lr,
                                          NGX_HTTP_LINEGATE_LR_DEFER_PLAIN,
                                          NULL, "Invalid line request id");
        }

        /* HEAD is a read: never the manage path, which writes */
        if (r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD)) {
            ngx_http_linegate_lr_get(r, lr);

        } else {
            ngx_http_linegate_line_manage(r, lr);
        }

        return;

    case NGX_HTTP_LINEGATE_API_LINES_BY_USER:
        /*
         * a known workspace: plain commands; else lr_list.lua's gate,
         * then the same plain reads
         */
        ngx_http_linegate_lr_get(r, lr);
        return;

    default: /* NGX_HTTP_LINEGATE_API_LINE_AVAILABILITY */
        ngx_http_linegate_line_check(r, lr);
        return;
    }
}


static void
ngx_http_linegate_lines_clock(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr)
{
    u_char  *p;

    lr->now_ms = ngx_http_linegate_now_ms();

    p = ngx_pnalloc(r->pool, NGX_HTTP_LINEGATE_ISO_LEN + 10);
    if (p == NULL) {
        return;
    }

    lr->now_iso.data = p;
    lr->now_iso.len = ngx_http_linegate_iso8601(p, lr->now_ms) - p;

    p += lr->now_iso.len;
    lr->date.data = p;
    lr->date.len = ngx_http_linegate_utc_date(p, lr->now_ms) - p;
}


/*
 * The id is what follows the location's prefix (/api/line-requests/);
 * for a location that is not a prefix, the last path segment.
 */
static ngx_int_t
ngx_http_linegate_lines_path_id(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr)
{
    u_char                    *p;
    ngx_str_t                  id;
    ngx_http_core_loc_conf_t  *clcf;

    clcf = ngx_http_get_module_loc_conf(r, ngx_http_core_module);

    if (r->uri.len >= clcf->name.len
        && ngx_strncmp(r->uri.data, clcf->name.data, clcf->name.len) == 0
        && clcf->name.len && clcf->name.data[clcf->name.len - 1] == '/')
    {
        id.data = r->uri.data + clcf->name.len;
        id.len = r->uri.len - clcf->name.len;

    } else {
        p = r->uri.data + r->uri.len;

        while (p > r->uri.data && p[-1] != '/') {
            p--;
        }

        id.data = p;
        id.len = r->uri.data + r->uri.len - p;
    }

    if (!ngx_http_linegate_id_valid(&id)) {
        return NGX_ERROR;
    }

    lr->id = id;
    lr->ctx->path_id = id;

    return NGX_OK;
}


/* GET /api/line-requests/:id */

/*
 * The reads' steps (ngx_http_linegate_read_step_e, lines.h):
 *
 *   PIPELINE   the workspace is known: rate + hash, one write
 *   REVALIDATE the key's cache entry expired: the same with the key's
 *              entry, checked -> PIPELINE's answer, or SCRIPT
 *   SCRIPT     lr_get.lua (an API key to resolve, an error deferred, a
 *              pipeline that failed)
 *   CLAIM      either read found a check due (lr_due, the one place that
 *              rule is written): lr_claim.lua claims it atomically
 *   STRIPE     claimed: Stripe GET the invoice
 *   RESOLVE    lr_resolve.lua: paid or void -> the line as it is now
 *   LIST       by-user where SCRIPT would be: lr_list.lua, the gate
 *              alone; LIST_INDEX after it: the index's first page
 *              (ZRANGEBYSCORE, LIST_PAGE ids), and each next one
 *   LIST_LINES by-user after PIPELINE, REVALIDATE or LIST_INDEX (each
 *              read a page of the index of its requests): HGETALL of
 *              each, pipelined; then LIST_INDEX while pages remain
 *   CHECK      lr_get.lua (availability)
 *
 * Every Redis callback enters lines_read_resume, every Stripe answer too
 * (lines_read_stripe_done); every failure goes to lines_read_fail.
 */
static void
ngx_http_linegate_lines_read_resume(ngx_http_request_t *r, redisReply *reply)
{
    ngx_http_linegate_lr_t  *lr;

    lr = ngx_http_linegate_lines_lr(r);

    switch ((ngx_http_linegate_read_step_e) lr->ctx->state) {

    case NGX_HTTP_LINEGATE_READ_PIPELINE:
    case NGX_HTTP_LINEGATE_READ_REVALIDATE:
        ngx_http_linegate_lr_get_tx_done(r, lr, reply);
        return;

    case NGX_HTTP_LINEGATE_READ_SCRIPT:
        ngx_http_linegate_lr_get_done(r, lr, reply);
        return;

    case NGX_HTTP_LINEGATE_READ_CLAIM:
        ngx_http_linegate_lr_claim_done(r, lr, reply);
        return;

    case NGX_HTTP_LINEGATE_READ_STRIPE:
        ngx_http_linegate_lr_reconciled(r, lr);
        return;

    case NGX_HTTP_LINEGATE_READ_RESOLVE:
        ngx_http_linegate_lr_resolved(r, lr, reply);
        return;

    case NGX_HTTP_LINEGATE_READ_LIST:
        ngx_http_linegate_lines_list_done(r, lr, reply);
        return;

    case NGX_HTTP_LINEGATE_READ_LIST_INDEX:
        ngx_http_linegate_lines_list_indexed(r, lr, reply);
        return;

    case NGX_HTTP_LINEGATE_READ_LIST_LINES:
        ngx_http_linegate_lines_list_lines(r, lr, reply);
        return;

    default: /* NGX_HTTP_LINEGATE_READ_CHECK */
        ngx_http_linegate_line_check_done(r, lr, reply);
        return;
    }
}


static void
ngx_http_linegate_lines_read_stripe_done(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx)
{
    /* the answer is in ctx->stripe_* */
    ngx_http_linegate_lines_read_resume(r, NULL);
}


/* the failure step of the reads */
static void
ngx_http_linegate_lines_read_fail(ngx_http_request_t *r,
    ngx_http_linegate_lr_fail_e fail)
{
    if (fail == NGX_HTTP_LINEGATE_LR_FAIL_STORE) {
        ngx_http_linegate_store_unavailable(r);
        return;
    }

    ngx_http_linegate_internal_error(r);
}


/*
 * GET by id and by-user: the pipeline of a known workspace (for a key
 * just read from its lookup, with the checks of an expired entry), or
 * the script (an error deferred, a key looked up twice: it checks the
 * workspace still lists the key)
 */
static void
ngx_http_linegate_lr_get(ngx_http_request_t *r, ngx_http_linegate_lr_t *lr)
{
    if (lr->resolved && lr->lookups == 1 && !lr->deferred) {
        /*
         * GET by id or by-user with a key just read from its lookup:
         * checked as an expired entry of its workspace is, by the
         * pipeline's plain commands rather than the script
         * (docs/performance.md); a key that passes is learned, one that
         * does not is looked up again and goes the script's way. by-user
         * pays a round trip more than lr_list.lua did when its one
         * command read every line of the workspace with Redis blocked
         * meanwhile (2,000 lines: 42 ms, t/190); its pipelines read 64
         * at most (and so does the script's way now, after its gate).
         */
        lr->ctx->state = NGX_HTTP_LINEGATE_READ_REVALIDATE;
        ngx_http_linegate_lr_get_tx(r, lr);
        return;
    }

    if (lr->deferred && !lr->resolved
        && lr->caller == NGX_HTTP_LINEGATE_LR_CALLER_KEY)
    {
        /*
         * an expired entry's key (who.value its digest, not a workspace)
         * and an error to answer: looked up first, as a key never seen,
         * so that the gate checks it against its own workspace's list
         * (the script alone would take the digest for the workspace,
         * admit it there, and teach the cache so)
         */
        ngx_http_linegate_lines_key_lookup(r, lr);
        return;
    }

    if (lr->deferred || lr->resolved) {
        ngx_http_linegate_lr_script(r, lr);
        return;
    }

    if (lr->caller == NGX_HTTP_LINEGATE_LR_CALLER_KEY) {
        /*
         * The key's cache entry has expired: rather than the script, the
         * pipeline, which also reads the key and checks the workspace
         */
        lr->key_digest = lr->who.value;
        lr->who.value = lr->who.stale;
        lr->ctx->state = NGX_HTTP_LINEGATE_READ_REVALIDATE;

    } else {
        lr->ctx->state = NGX_HTTP_LINEGATE_READ_PIPELINE;
    }

    ngx_http_linegate_lr_get_tx(r, lr);
}


/*
 * the script of the read: an error deferred, a key looked up again, a
 * pipeline that failed
 */
static void
ngx_http_linegate_lr_script(ngx_http_request_t *r, ngx_http_linegate_lr_t *lr)
{
    if (lr->ctx->api == NGX_HTTP_LINEGATE_API_LINES_BY_USER) {
        ngx_http_linegate_lines_list(r, lr);
        return;
    }

    ngx_http_linegate_lr_get_script(r, lr, NGX_HTTP_LINEGATE_READ_SCRIPT);
}


/*
 * What lr_get.lua does with lr_gate in 'w' mode, pipelined in one write:
 * the workspace's rate, rl_gcra.lua on lg:{ws:W}:gcra (the one GCRA,
 * which sets the key with its expiry in the write that admits, and
 * writes nothing when it refuses), and the hash as a plain command. The
 * hash comes last: the pipeline copies the replies before the last.
 * With linegate_workspace_rate lease=, a request the worker's lease of
 * the rate admits sends no EVALSHA; one that asks Redis asks for the
 * next lease (want, ARGV[3]), with a plain SET ... NX when the worker's
 * last decision of the key is over (lr_idle).
 * by-user reads the index of the workspace's requests instead of a hash
 * (its first page, as LIST_INDEX after lr_list.lua), then the hashes
 * (LIST_LINES).
 * Each part's reply is kept when another fails (_pipeline_each, as
 * linegate_limit's): on a cluster the key's lookup may be on another
 * master than the workspace, whose rate admitted (lr_get_tx_undo).
 */
static void
ngx_http_linegate_lr_get_tx(ngx_http_request_t *r, ngx_http_linegate_lr_t *lr)
{
    u_char                          *p;
    size_t                           len;
    ngx_str_t                        key;
    ngx_uint_t                       n, list, want;
    ngx_http_linegate_redis_args_t   tx[4];
    ngx_http_linegate_main_conf_t   *lmcf;

    lmcf = ngx_http_get_module_main_conf(r, ngx_http_linegate_module);

    list = (lr->ctx->api == NGX_HTTP_LINEGATE_API_LINES_BY_USER);

    /*
     * [lg:apikey:<digest>, lg:{ws:W}:keys], lg:{ws:W}:gcra,
     * lg:{ws:W}:lr:<id> or :lines
     */
    len = ngx_http_linegate_key_len(NGX_HTTP_LINEGATE_KEY_APIKEY,
                                    &lr->key_digest, NULL)
          + ngx_http_linegate_key_len(NGX_HTTP_LINEGATE_KEY_WS_KEYS,
                                      &lr->who.value, NULL)
          + ngx_http_linegate_key_len(NGX_HTTP_LINEGATE_KEY_WS_GCRA,
                                      &lr->who.value, NULL)
          + (list ? ngx_http_linegate_key_len(NGX_HTTP_LINEGATE_KEY_WS_LINES,
                                              &lr->who.value, NULL)
                  : ngx_http_linegate_key_len(NGX_HTTP_LINEGATE_KEY_WS_LR,
                                              &lr->who.value, &lr->id));

    p = ngx_pnalloc(r->pool, len);
    if (p == NULL) {
        ngx_http_linegate_lines_read_fail(r,
                                          NGX_HTTP_LINEGATE_LR_FAIL_INTERNAL);
        return;
    }

    n = 0;

    if (lr->ctx->state == NGX_HTTP_LINEGATE_READ_REVALIDATE) {
        key.data = p;
        p = ngx_http_linegate_key_write(p, NGX_HTTP_LINEGATE_KEY_APIKEY,
                                        &lr->key_digest, NULL);
        key.len = p - key.data;

        ngx_http_linegate_redis_args_init(&tx[n]);
        ngx_http_linegate_redis_arg_cstr(&tx[n], "GET");
        ngx_http_linegate_redis_arg_str(&tx[n], &key);
        n++;

        /*
         * the workspace must still list the key (a revocation's first
         * step removes the entry, its second the lookup)
         */
        key.data = p;
        p = ngx_http_linegate_key_write(p, NGX_HTTP_LINEGATE_KEY_WS_KEYS,
                                        &lr->who.value, NULL);
        key.len = p - key.data;

        ngx_http_linegate_redis_args_init(&tx[n]);
        ngx_http_linegate_redis_arg_cstr(&tx[n], "HVALS");
        ngx_http_linegate_redis_arg_str(&tx[n], &key);
        n++;
    }

    lr->rate_key.data = p;
    p = ngx_http_linegate_key_write(p, NGX_HTTP_LINEGATE_KEY_WS_GCRA,
                                    &lr->who.value, NULL);
    lr->rate_key.len = p - lr->rate_key.data;

    /* busy: the same decision, that the idle SET could not make */
    want = lr->busy ? lr->idle_n : ngx_http_linegate_lr_lease(r, lr);

    lr->idle = ngx_http_linegate_lr_idle(lr, want);

    if (lr->idle) {
        ngx_http_linegate_lr_idle_set(r, lr, want, &tx[n]);
        n++;

    } else if (want) {
        ngx_http_linegate_redis_args_init(&tx[n]);
        ngx_http_linegate_redis_arg_cstr(&tx[n], "EVALSHA");
        ngx_http_linegate_redis_arg_str(&tx[n],
            ngx_http_linegate_script_sha(NGX_HTTP_LINEGATE_SCRIPT_RL_GCRA));
        ngx_http_linegate_redis_arg_cstr(&tx[n], "1");
        ngx_http_linegate_redis_arg_str(&tx[n], &lr->rate_key);
        ngx_http_linegate_redis_arg_str(&tx[n], &lmcf->ws_rate_interval_arg);
        ngx_http_linegate_redis_arg_str(&tx[n],
                                        &lmcf->ws_rate_tolerance_arg);

        if (want > 1) {
            ngx_http_linegate_redis_arg_int(r, &tx[n], want);
        }

        n++;
    }

    key.data = p;

    if (list) {
        p = ngx_http_linegate_key_write(p, NGX_HTTP_LINEGATE_KEY_WS_LINES,
                                        &lr->who.value, NULL);
        key.len = p - key.data;

        ngx_http_linegate_redis_args_init(&tx[n]);
        ngx_http_linegate_lines_list_page_args(r, &tx[n], &key, NULL, 0);

    } else {
        p = ngx_http_linegate_key_write(p, NGX_HTTP_LINEGATE_KEY_WS_LR,
                                        &lr->who.value, &lr->id);
        key.len = p - key.data;

        ngx_http_linegate_redis_args_init(&tx[n]);
        ngx_http_linegate_redis_arg_cstr(&tx[n], "HGETALL");
        ngx_http_linegate_redis_arg_str(&tx[n], &key);
    }

    n++;

    lr->tx_sent = ngx_current_msec;

    if (list) {
        /* what an answer from linegate_lines_cache will wait for */
        ngx_http_linegate_lines_cache_barrier(&lr->list_barrier);
    }

    if (ngx_http_linegate_redis_pipeline_each(r, n, tx,
                                          ngx_http_linegate_lines_read_resume)
        != NGX_OK)
    {
        /* none written: nothing decided */
        ngx_http_linegate_lease_done(lr->lease, lr->lease_seq);
        ngx_http_linegate_lines_read_fail(r, NGX_HTTP_LINEGATE_LR_FAIL_STORE);
    }
}


/*
 * linegate_workspace_rate lease=: 0 when the worker's lease of the
 * workspace's rate admits the request (lr->remaining: what Redis last
 * said would pass, plus the admissions the worker still holds; reset_ms
 * as Redis last said), else how many admissions to ask rl_gcra for (1
 * without a lease)
 */
static ngx_uint_t
ngx_http_linegate_lr_lease(ngx_http_request_t *r, ngx_http_linegate_lr_t *lr)
{
    ngx_uint_t                      want;
    ngx_http_linegate_lease_t      *l;
    ngx_http_linegate_main_conf_t  *lmcf;

    lmcf = ngx_http_get_module_main_conf(r, ngx_http_linegate_module);

    lr->lease = NULL;
    lr->lease_seq = 0;
    lr->leased = 0;

    if (lmcf->ws_rate_lease == 0) {
        return 1;
    }

    l = ngx_http_linegate_lease_get(&lr->rate_key);
    if (l == NULL) {
        return 1;
    }

    want = ngx_http_linegate_lease_spend(l, lmcf->ws_rate_lease,
                                         lmcf->ws_rate_lease_max,
                                         &lr->lease_seq);

    if (want == 0) {
        lr->leased = 1;
        lr->remaining = ngx_http_linegate_lease_left(l, &lr->rate_key,
                                                     l->remaining);
        lr->reset_ms = ngx_http_linegate_lease_reset(l);
        lr->retry_ms = 0;
        return 0;
    }

    /*
     * lease_seq: the worker's next lease, the reply records it; 0: a
     * decision alone, whose refusal the reply answers from the lease if
     * its next one came meanwhile (lr_rate_reply)
     */
    lr->lease = l;

    return want;
}


/*
 * The pipeline failed before its timeout: an error reply, most likely
 * NOSCRIPT after a SCRIPT FLUSH (a pipeline does not send a script
 * again; the redis client, on that NOSCRIPT, has sent every script again
 * to every node it is connected to, for the next GETs on every master of
 * a cluster). This one goes the script's way (lr_get, which sends itself
 * again on NOSCRIPT). Any other error (the key's lookup on a master that
 * is down, WRONGTYPE of the hash) after the rate admitted: the admission
 * was given back first (lr_get_tx_undo), the request is counted once.
 */
static ngx_int_t
ngx_http_linegate_lr_get_tx_failed(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr)
{
    ngx_http_linegate_main_conf_t  *lmcf;

    lmcf = ngx_http_get_module_main_conf(r, ngx_http_linegate_module);

    if (ngx_current_msec - lr->tx_sent >= lmcf->redis_command_timeout
        || !ngx_http_linegate_redis_connected())
    {
        return NGX_DECLINED;
    }

    if (lr->ctx->state == NGX_HTTP_LINEGATE_READ_REVALIDATE) {
        /* the key resolved first, as for a key not in the cache */
        lr->who.value = lr->key_digest;
        ngx_http_linegate_lines_key_lookup(r, lr);
        return NGX_OK;
    }

    ngx_http_linegate_lr_script(r, lr);

    return NGX_OK;
}


/*
 * The idle path of the workspace's rate: a worker whose lease decision
 * of the key finds the last one over (the key back to its full burst as
 * Redis said, or none) expects the key gone: rl_gcra writes it with an
 * expiry just past its theoretical arrival time (TAT), so gone means
 * idle. Then what lg_rl_gcra does for an idle key, one plain SET ... NX,
 * admits: n = the lease asked for (at most the burst), the TAT now (this
 * worker's clock, as linegate_limit's decisions use) plus n T, expiring
 * as the script's would. The script's call costs Redis ~10 us, the SET
 * ~1 us: at many workspaces, each seen by a worker every few seconds,
 * every GET took the script. A key that is there (busy, or written by
 * another worker) is left alone: the request is sent again with rl_gcra
 * (lr->busy). Not without lease=: a worker then keeps nothing of its
 * decisions to tell an idle key by.
 */
static ngx_uint_t
ngx_http_linegate_lr_idle(ngx_http_linegate_lr_t *lr, ngx_uint_t want)
{
    /* a lease decision (lease_seq): one alone is sent to rl_gcra */
    return want >= 1
           && !lr->busy
           && lr->lease_seq != 0
           && ngx_http_linegate_lease_reset(lr->lease) == 0;
}


static void
ngx_http_linegate_lr_idle_set(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, ngx_uint_t want,
    ngx_http_linegate_redis_args_t *a)
{
    int64_t                         tat, span;
    ngx_time_t                     *tp;
    ngx_http_linegate_main_conf_t  *lmcf;

    lmcf = ngx_http_get_module_main_conf(r, ngx_http_linegate_module);

    /* the burst (tau / T + 1) is the rate's count */
    lr->idle_n = ngx_min(want, lmcf->ws_rate);
    span = (int64_t) lr->idle_n * lmcf->ws_rate_interval;

    tp = ngx_timeofday();
    tat = (int64_t) tp->sec * 1000000 + (int64_t) tp->msec * 1000 + span;

    ngx_http_linegate_redis_args_init(a);
    ngx_http_linegate_redis_arg_cstr(a, "SET");
    ngx_http_linegate_redis_arg_str(a, &lr->rate_key);
    ngx_http_linegate_redis_arg_int(r, a, tat);
    ngx_http_linegate_redis_arg_cstr(a, "PX");
    ngx_http_linegate_redis_arg_int(r, a, (span + 999) / 1000 + 1);
    ngx_http_linegate_redis_arg_cstr(a, "NX");
}


/*
 * The idle SET's answer: OK admitted idle_n, as lg_rl_gcra would have
 * (the rest of the burst left, back in full in idle_n T; beyond this
 * request, the worker's next lease, which r counts as rl_gcra's grant
 * does); NGX_DECLINED: the key is there, rl_gcra decides
 */
static ngx_int_t
ngx_http_linegate_lr_idle_reply(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, redisReply *reply)
{
    ngx_http_linegate_main_conf_t  *lmcf;

    if (reply->type == REDIS_REPLY_NIL) {
        return NGX_DECLINED;
    }

    if (reply->type != REDIS_REPLY_STATUS) {
        return NGX_ERROR;
    }

    lmcf = ngx_http_get_module_main_conf(r, ngx_http_linegate_module);

    lr->remaining = (int64_t) (lmcf->ws_rate - lr->idle_n);
    lr->reset_ms = ((int64_t) lr->idle_n * lmcf->ws_rate_interval + 999)
                   / 1000;
    lr->retry_ms = 0;

    (void) ngx_http_linegate_lease_granted(lr->lease, lr->lease_seq,
                                           (int64_t) lr->idle_n,
                                           lr->remaining, lr->reset_ms,
                                           lr->tx_sent, lmcf->ws_rate_lease);

    lr->remaining = ngx_http_linegate_lease_left(lr->lease, &lr->rate_key,
                                                 lr->remaining);

    return NGX_OK;
}


/*
 * lg_rl_gcra's {admitted, remaining, reset_ms, retry_after_ms}; what it
 * admitted beyond this request is the worker's next lease. A refusal
 * takes one of the worker's admissions if it holds one: the lease
 * decision's own, or a decision alone's, asked while the next lease was
 * in flight, whose reply, just before, took the workspace's last
 * admissions (they were paid for in Redis, and would expire unused).
 */
static ngx_int_t
ngx_http_linegate_lr_rate_reply(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, redisReply *reply)
{
    int64_t                         v[4];
    ngx_uint_t                      i;
    ngx_http_linegate_main_conf_t  *lmcf;

    if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 3) {
        return NGX_ERROR;
    }

    for (i = 0; i < 4; i++) {
        v[i] = 0;

        /* rl_gcra's numbers, checked before the lease keeps any */
        if (i < reply->elements
            && (ngx_http_linegate_reply_int(reply, i, &v[i]) != NGX_OK
                || !ngx_http_linegate_gcra_valid(v[i])))
        {
            return NGX_ERROR;
        }
    }

    lmcf = ngx_http_get_module_main_conf(r, ngx_http_linegate_module);

    if (ngx_http_linegate_lease_granted(lr->lease, lr->lease_seq, v[0], v[1],
                                        v[2], lr->tx_sent,
                                        lmcf->ws_rate_lease)
        || (v[0] < 1
            && ngx_http_linegate_lease_take(lr->lease, &lr->rate_key)))
    {
        /* refused, but the worker's lease admits it */
        v[0] = 1;
        v[1] = 0;
        v[3] = 0;
    }

    if (v[0] >= 1) {
        /*
         * r: what Redis said would pass (rl_gcra counts the lease's
         * admissions as spent), and the admissions the worker holds
         */
        v[1] = ngx_http_linegate_lease_left(lr->lease, &lr->rate_key, v[1]);
    }

    lr->remaining = v[1];
    lr->reset_ms = v[2];
    lr->retry_ms = v[3];

    return v[0] >= 1 ? NGX_OK : NGX_DECLINED;
}


/* PIPELINE, REVALIDATE */
static void
ngx_http_linegate_lr_get_tx_done(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, redisReply *reply)
{
    size_t                           o, rated;
    int64_t                          code;
    ngx_int_t                        rc, admitted;
    redisReply                      *h;
    ngx_http_linegate_line_t        *line;

    if (ngx_http_linegate_lr_get_tx_broken(reply)) {
        ngx_http_linegate_lr_get_tx_undo(r, lr, reply);

        if (ngx_http_linegate_lr_get_tx_failed(r, lr) != NGX_OK) {
            ngx_http_linegate_lines_read_fail(r,
                                              NGX_HTTP_LINEGATE_LR_FAIL_STORE);
        }

        return;
    }

    /* [GET, HVALS], [EVALSHA rl_gcra], HGETALL */
    o = (lr->ctx->state == NGX_HTTP_LINEGATE_READ_REVALIDATE) ? 2 : 0;
    rated = lr->leased ? 0 : 1;

    admitted = NGX_ERROR;

    if (reply->elements == o + rated + 1) {
        if (lr->idle) {
            admitted = ngx_http_linegate_lr_idle_reply(r, lr,
                                                       reply->element[o]);

            if (admitted == NGX_DECLINED) {
                /* the key is there: rl_gcra decides, the reads again */
                lr->busy = 1;
                ngx_http_linegate_lr_get_tx(r, lr);
                return;
            }

        } else {
            admitted = rated
                       ? ngx_http_linegate_lr_rate_reply(r, lr,
                                                         reply->element[o])
                       : NGX_OK;
        }
    }

    if (admitted == NGX_ERROR
        || reply->element[o + rated]->type != REDIS_REPLY_ARRAY)
    {
        ngx_http_linegate_lease_done(lr->lease, lr->lease_seq);
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      NGX_HTTP_LINEGATE_LOG "unexpected pipeline reply");
        ngx_http_linegate_lines_read_fail(r,
                                          NGX_HTTP_LINEGATE_LR_FAIL_INTERNAL);
        return;
    }

    h = reply->element[o + rated];

    if (o
        && ngx_http_linegate_lr_revalidated(r, lr, reply->element[0],
                                            reply->element[1],
                                            admitted == NGX_OK)
           != NGX_OK)
    {
        return;
    }

    if (admitted != NGX_OK) {
        /* GCRA wrote nothing: nothing to take back */
        code = NGX_HTTP_LINEGATE_LR_RATE_LIMITED;

    } else if (lr->ctx->api == NGX_HTTP_LINEGATE_API_LINES_BY_USER) {
        /* h: the index */
        code = NGX_HTTP_LINEGATE_LR_OK;

    } else {
        code = h->elements ? NGX_HTTP_LINEGATE_LR_OK
                           : NGX_HTTP_LINEGATE_LR_NOT_FOUND;
    }

    if (lr->ctx->api == NGX_HTTP_LINEGATE_API_LINES_BY_USER) {
        if (ngx_http_linegate_lines_admit(r, lr, code, &lr->who.value)
            != NGX_DONE)
        {
            ngx_http_linegate_lines_list_index(r, lr, h);
        }

        return;
    }

    line = &lr->line;

    if (code == NGX_HTTP_LINEGATE_LR_OK) {
        /* the hash, with what lr_line appends as _id */
        lr->ws = lr->who.value;

        if (ngx_http_linegate_line_parse(r, lr, h, line) != NGX_OK) {
            ngx_http_linegate_lines_read_fail(r,
                                          NGX_HTTP_LINEGATE_LR_FAIL_INTERNAL);
            return;
        }

        line->id = lr->id;
    }

    rc = ngx_http_linegate_lines_admit(r, lr, code, &lr->who.value);

    if (rc == NGX_DONE) {
        return;
    }

    if (rc == NGX_HTTP_LINEGATE_LR_NOT_FOUND) {
        ngx_http_linegate_lines_not_found(r);
        return;
    }

    ngx_http_linegate_lr_read(r, lr, h);
}


/* a part of the pipeline answered an error, or nothing (NULL) */
static ngx_uint_t
ngx_http_linegate_lr_get_tx_broken(redisReply *reply)
{
    size_t  i;

    if (reply == NULL) {
        return 1;
    }

    for (i = 0; i < reply->elements; i++) {
        if (reply->element[i] == NULL
            || reply->element[i]->type == REDIS_REPLY_ERROR)
        {
            return 1;
        }
    }

    return 0;
}


/*
 * The pipeline failed (a part's error reply, or none: its master down,
 * LOADING, BUSY, the connection lost, the command timeout), and what the
 * rate part did is undone where it is known, as linegate_limit does for
 * a zone when another has no decision: the request is not charged. An
 * admission (Redis's, or the worker's lease's) is given back
 * (lr_rate_refund); a lease decision's grant beyond this request is kept
 * (lr_rate_reply, lr_idle_reply: lease_granted), it was paid for in Redis
 * and is the worker's next lease. A rate part with no reply may have run:
 * its admission stays charged, and the lease decision is over without
 * an answer (lease_done).
 */
static void
ngx_http_linegate_lr_get_tx_undo(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, redisReply *reply)
{
    size_t       o;
    ngx_int_t    admitted;
    redisReply  *rate;

    /* [GET, HVALS], [EVALSHA rl_gcra or the idle SET], HGETALL */
    o = (lr->ctx->state == NGX_HTTP_LINEGATE_READ_REVALIDATE) ? 2 : 0;

    admitted = NGX_ERROR;

    if (lr->leased) {
        admitted = NGX_OK;

    } else if (reply != NULL && reply->elements > o) {
        rate = reply->element[o];

        if (rate != NULL && rate->type != REDIS_REPLY_ERROR) {
            /* NGX_DECLINED: refused, or (idle) the key there: no write */
            admitted = lr->idle ? ngx_http_linegate_lr_idle_reply(r, lr, rate)
                                : ngx_http_linegate_lr_rate_reply(r, lr, rate);
        }
    }

    /* after lease_granted(), which ended the decision, a no-op */
    ngx_http_linegate_lease_done(lr->lease, lr->lease_seq);

    if (admitted == NGX_OK) {
        ngx_http_linegate_lr_rate_refund(r, lr);
    }
}


/*
 * The store's answer for a key whose cache entry had expired: the same
 * workspace, still listing the key, renews the entry and the GET goes on;
 * anything else (the key revoked, even halfway) gives the workspace's
 * admission back (rl_refund.lua, when the rate admitted it), drops the
 * entry (a revoked key's next request would be revalidated against the
 * same workspace, costing it an admission, every time) and resolves
 * the key as for a key never seen (lines_key_lookup, then the script:
 * 401 for a revoked key).
 */
static ngx_int_t
ngx_http_linegate_lr_revalidated(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, redisReply *ws, redisReply *digests,
    ngx_uint_t admitted)
{
    size_t       i;
    redisReply  *d;

    if (ws->type == REDIS_REPLY_STRING
        && ws->len == lr->who.value.len
        && ngx_strncmp(ws->str, lr->who.value.data, ws->len) == 0
        && digests->type == REDIS_REPLY_ARRAY)
    {
        for (i = 0; i < digests->elements; i++) {
            d = digests->element[i];

            if (d->type == REDIS_REPLY_STRING
                && d->len == lr->key_digest.len
                && ngx_strncmp(d->str, lr->key_digest.data, d->len) == 0)
            {
                ngx_http_linegate_auth_learn(r, &lr->who, &lr->who.value);
                return NGX_OK;
            }
        }
    }

    if (admitted) {
        ngx_http_linegate_lr_rate_refund(r, lr);
    }

    /* not this workspace's any more: the next request is not sent there */
    ngx_http_linegate_auth_unlearn(&lr->who);

    lr->who.value = lr->key_digest;

    ngx_http_linegate_lines_key_lookup(r, lr);

    return NGX_DECLINED;
}


/*
 * The refund linegate_limit gives a zone that admitted a request another
 * zone refused (rl_refund.lua), sent without waiting, as linegate_limit's
 * own: a script call without a handler, so that a NOSCRIPT (a SCRIPT
 * FLUSH) gets the script's source and a cluster's MOVED or ASK is
 * followed. Lost with the connection, the admission only stays charged
 * (the key keeps its expiry).
 */
static void
ngx_http_linegate_lr_rate_refund(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr)
{
    ngx_http_linegate_redis_args_t  a;
    ngx_http_linegate_main_conf_t  *lmcf;

    lmcf = ngx_http_get_module_main_conf(r, ngx_http_linegate_module);

    ngx_http_linegate_redis_args_init(&a);
    ngx_http_linegate_redis_arg_str(&a, &lr->rate_key);
    ngx_http_linegate_redis_arg_str(&a, &lmcf->ws_rate_interval_arg);

    if (ngx_http_linegate_redis_script(r, NGX_HTTP_LINEGATE_SCRIPT_RL_REFUND,
                                       1, &a, NULL)
        != NGX_OK)
    {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      NGX_HTTP_LINEGATE_LOG "refund of \"%V\" not sent",
                      &lr->rate_key);
    }
}


/*
 * The request read (lr->line, and its hash flat), by the pipeline or by
 * lr_get.lua: answered, or first checked with Stripe when it is due.
 */
static void
ngx_http_linegate_lr_read(ngx_http_request_t *r, ngx_http_linegate_lr_t *lr,
    redisReply *flat)
{
    /*
     * ended with a claim in place, not queued yet (lr_settle's mark):
     * queued now (at most once: its marker), whatever the check does
     */
    ngx_http_linegate_lines_pending(r, lr, flat);

    if (ngx_http_linegate_lr_due(r, lr, flat)) {
        ngx_http_linegate_lr_claim(r, lr, flat);
        return;
    }

    ngx_http_linegate_lines_send_status(r, lr);
}


/*
 * SPEC 2.5, whether a read checks the invoice with Stripe: awaiting
 * payment with an invoice, not checked within linegate_reconcile_interval
 * (reconciledAt), not being reissued (reissueAt). The one place this rule
 * is written, for both paths of the read; lr_claim.lua only makes the
 * claim atomic.
 */
static ngx_uint_t
ngx_http_linegate_lr_due(ngx_http_request_t *r, ngx_http_linegate_lr_t *lr,
    redisReply *flat)
{
    size_t                          i;
    int64_t                         n, reconciled, reissue;
    ngx_uint_t                      invoice;
    redisReply                     *k, *v, *customer;
    ngx_http_linegate_main_conf_t  *lmcf;

    if (!ngx_http_linegate_line_is(&lr->line.status,
                                   NGX_HTTP_LINEGATE_LR_AWAITING))
    {
        return 0;
    }

    lmcf = ngx_http_get_module_main_conf(r, ngx_http_linegate_module);

    invoice = 0;
    reconciled = 0;
    reissue = 0;
    customer = NULL;

    /* line_parse checked the pairs are strings */
    for (i = 0; i + 1 < flat->elements; i += 2) {
        k = flat->element[i];
        v = flat->element[i + 1];

        if (k->len == sizeof("invoiceId") - 1
            && ngx_strncmp(k->str, "invoiceId", k->len) == 0)
        {
            invoice = 1;
            continue;
        }

        if (k->len == sizeof("reconciledAt") - 1
            && ngx_strncmp(k->str, "reconciledAt", k->len) == 0)
        {
            n = ngx_atoi((u_char *) v->str, v->len);
            reconciled = n == NGX_ERROR ? 0 : n;
            continue;
        }

        if (k->len == sizeof("reissueAt") - 1
            && ngx_strncmp(k->str, "reissueAt", k->len) == 0)
        {
            n = ngx_atoi((u_char *) v->str, v->len);
            reissue = n == NGX_ERROR ? 0 : n;
            lr->reissue_claim = 1;
            continue;
        }

        if (k->len == sizeof("customer") - 1
            && ngx_strncmp(k->str, "customer", k->len) == 0)
        {
            customer = v;
        }
    }

    if (!invoice
        || lr->now_ms - reconciled < (int64_t) lmcf->reconcile_interval
        || lr->now_ms - reissue < NGX_HTTP_LINEGATE_LR_REISSUE_HOLD)
    {
        return 0;
    }

    /*
     * a lapsed claim: whom the request was billed, where its sweep looks
     * (none: line_sweep reads the workspace's)
     */
    if (lr->reissue_claim && customer != NULL) {
        (void) ngx_http_linegate_pstr(r->pool, &lr->customer,
                                      (u_char *) customer->str,
                                      customer->len);
    }

    return 1;
}


/*
 * CLAIM: the check found due, claimed (lr_claim.lua: reconciledAt = now)
 * if the fields the decision read are still as read, so that parallel
 * polls of one request make one Stripe call per interval: one round trip
 * before the Stripe call, on either path.
 */
static void
ngx_http_linegate_lr_claim(ngx_http_request_t *r, ngx_http_linegate_lr_t *lr,
    redisReply *flat)
{
    size_t                           i, f;
    ngx_str_t                        key, v;
    redisReply                      *k, *val;
    ngx_http_linegate_redis_args_t  *a;

    static ngx_str_t  fields[] = {
        ngx_string("provisioningStatus"),
        ngx_string("invoiceId"),
        ngx_string("reconciledAt"),
        ngx_string("reissueAt")
    };

    if (ngx_http_linegate_key(r->pool, NGX_HTTP_LINEGATE_KEY_WS_LR, &lr->ws,
                              &lr->id, &key)
        != NGX_OK)
    {
        ngx_http_linegate_lines_read_fail(r,
                                          NGX_HTTP_LINEGATE_LR_FAIL_INTERNAL);
        return;
    }

    /* lr_get's command, if any, is over: its arguments are free */
    a = &lr->args;

    ngx_http_linegate_redis_args_init(a);
    ngx_http_linegate_redis_arg_str(a, &key);
    ngx_http_linegate_redis_arg_int(r, a, lr->now_ms);

    for (f = 0; f < sizeof(fields) / sizeof(fields[0]); f++) {
        ngx_str_null(&v);

        /* line_parse checked the pairs are strings */
        for (i = 0; i + 1 < flat->elements; i += 2) {
            k = flat->element[i];
            val = flat->element[i + 1];

            if (k->len != fields[f].len
                || ngx_strncmp(k->str, fields[f].data, k->len) != 0)
            {
                continue;
            }

            /* the reply is freed once the handler returns */
            if (ngx_http_linegate_pstr(r->pool, &v, (u_char *) val->str,
                                       val->len)
                == NULL)
            {
                ngx_http_linegate_lines_read_fail(r,
                                          NGX_HTTP_LINEGATE_LR_FAIL_INTERNAL);
                return;
            }

            break;
        }

        ngx_http_linegate_redis_arg_str(a, &fields[f]);
        ngx_http_linegate_redis_arg_str(a, &v);
    }

    lr->ctx->state = NGX_HTTP_LINEGATE_READ_CLAIM;

    if (ngx_http_linegate_redis_script(r, NGX_HTTP_LINEGATE_SCRIPT_LR_CLAIM,
                                       1, a,
                                       ngx_http_linegate_lines_read_resume)
        != NGX_OK)
    {
        /* not claimed: the stored state is a true answer */
        ngx_http_linegate_lines_send_status(r, lr);
    }
}


/* CLAIM's answer: 1, claimed */
static void
ngx_http_linegate_lr_claim_done(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, redisReply *reply)
{
    if (reply == NULL || reply->type != REDIS_REPLY_INTEGER
        || reply->integer != 1)
    {
        /* claimed by another poll, changed meanwhile, or not reached */
        ngx_http_linegate_lines_send_status(r, lr);
        return;
    }

    /* SPEC 2.5: ask Stripe how the invoice stands before answering */
    lr->ctx->state = NGX_HTTP_LINEGATE_READ_STRIPE;

    if (ngx_http_linegate_lines_invoice_get(r, lr,
                                      ngx_http_linegate_lines_read_stripe_done)
        != NGX_OK)
    {
        ngx_http_linegate_lines_send_status(r, lr);
    }
}


/*
 * lr_get.lua, SCRIPT or CHECK: the credential, the rate and the read,
 * nothing decided
 */
static void
ngx_http_linegate_lr_get_script(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, ngx_http_linegate_read_step_e step)
{
    ngx_http_linegate_redis_args_t  *a;

    lr->ctx->state = step;

    ngx_http_linegate_lines_args(r, lr);
    a = &lr->args;

    ngx_http_linegate_redis_arg_str(a, &lr->id);
    ngx_http_linegate_redis_arg_str(a, &lr->date);
    ngx_http_linegate_lines_key(lr, a, NGX_HTTP_LINEGATE_KEY_WS_LR,
                                &lr->who.value, &lr->id);

    ngx_http_linegate_lines_script(r, lr, NGX_HTTP_LINEGATE_SCRIPT_LR_GET,
                                   ngx_http_linegate_lines_read_resume);
}


/*
 * lr_get's reply {code, ws, remaining, line}: the line read into
 * lr->line (NGX_OK), or the request answered (NGX_DONE)
 */
static ngx_int_t
ngx_http_linegate_lr_get_line(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, redisReply *reply)
{
    ngx_int_t  code;

    code = ngx_http_linegate_lines_gate(r, lr, reply);

    if (code == NGX_DONE) {
        return NGX_DONE;
    }

    if (code == NGX_HTTP_LINEGATE_LR_NOT_FOUND) {
        ngx_http_linegate_lines_not_found(r);
        return NGX_DONE;
    }

    if (code != NGX_HTTP_LINEGATE_LR_OK || reply->elements < 4
        || ngx_http_linegate_line_parse(r, lr, reply->element[3], &lr->line)
           != NGX_OK)
    {
        ngx_http_linegate_lines_read_fail(r,
                                          NGX_HTTP_LINEGATE_LR_FAIL_INTERNAL);
        return NGX_DONE;
    }

    return NGX_OK;
}


/* SCRIPT */
static void
ngx_http_linegate_lr_get_done(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, redisReply *reply)
{
    if (ngx_http_linegate_lr_get_line(r, lr, reply) != NGX_OK) {
        return;
    }

    ngx_http_linegate_lr_read(r, lr, reply->element[3]);
}


/* STRIPE */
static void
ngx_http_linegate_lr_reconciled(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr)
{
    ngx_http_linegate_ctx_t  *ctx;

    ctx = lr->ctx;

    if (ngx_http_linegate_stripe_result(ctx) != NGX_HTTP_LINEGATE_STRIPE_OK
        || ngx_http_linegate_lines_invoice_read(r, lr, &lr->line.invoice_id)
           != NGX_OK)
    {
        /* the stored state is answered, never an error */
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      NGX_HTTP_LINEGATE_LOG "reconciliation of invoice "
                      "\"%V\" failed (Stripe status %i): stored state "
                      "answered", &lr->line.invoice_id, ctx->stripe_status);
        ngx_http_linegate_lines_send_status(r, lr);
        return;
    }

    if (ngx_http_linegate_line_is(&lr->invoice.status, "paid")) {
        ctx->state = NGX_HTTP_LINEGATE_READ_RESOLVE;
        ngx_http_linegate_lines_resolve(r, lr, "paid",
                                        ngx_http_linegate_lines_read_resume);
        return;
    }

    if (ngx_http_linegate_line_is(&lr->invoice.status, "void")
        || ngx_http_linegate_line_is(&lr->invoice.status, "uncollectible"))
    {
        if (lr->reissue_claim) {
            /*
             * a claim that lapsed (its worker died, maybe after Stripe
             * finalized an invoice it never stored, maybe paid at its
             * finalize): canceled at once, that payment would be left
             * to a human. The read sweeps first, as payment_link and
             * cancel do (line_manage.c): a paid one promotes, else
             * canceled; a sweep that fails answers the stored state.
             * Before, it only answered, and a client that only polled
             * saw a void invoice awaiting payment for ever.
             */
            ngx_http_linegate_line_sweep(r, lr);
            return;
        }

        ctx->state = NGX_HTTP_LINEGATE_READ_RESOLVE;
        ngx_http_linegate_lines_resolve(r, lr, "void",
                                        ngx_http_linegate_lines_read_resume);
        return;
    }

    ngx_http_linegate_lines_send_status(r, lr);
}


/* RESOLVE */
static void
ngx_http_linegate_lr_resolved(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, redisReply *reply)
{
    if (reply == NULL) {
        /* what was read before is still a true answer */
        ngx_http_linegate_lines_send_status(r, lr);
        return;
    }

    switch (ngx_http_linegate_lines_resolved(r, lr, reply)) {

    case NGX_OK:
        break;

    case NGX_DECLINED:
        ngx_http_linegate_lines_not_found(r);
        return;

    default:
        /* the request exists: what was stored is not understood */
        ngx_http_linegate_internal_error(r);
        return;
    }

    ngx_http_linegate_lines_send_status(r, lr);
}


/* GET /api/lines/by-user */

/*
 * Where GET by id takes lr_get.lua (a pipeline that failed before its
 * timeout, a key looked up twice, an error deferred): lr_list.lua, the
 * gate alone (the key still listed, the rate), then the index and the
 * hashes in plain commands, as after the pipeline (LIST_INDEX). The
 * script read every line itself until 2026-11-29: one command as long
 * as the workspace's :lines, whose failed lines stay there for ever
 * (SPEC 2.8), every other client of Redis waiting (~2 us a line and
 * more: docs/performance.md, stop 46; t/192).
 */
static void
ngx_http_linegate_lines_list(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr)
{
    lr->ctx->state = NGX_HTTP_LINEGATE_READ_LIST;

    ngx_http_linegate_lines_args(r, lr);

    ngx_http_linegate_lines_script(r, lr, NGX_HTTP_LINEGATE_SCRIPT_LR_LIST,
                                   ngx_http_linegate_lines_read_resume);
}


/*
 * A page of the index (PIPELINE or REVALIDATE of by-user, admitted, or
 * LIST_INDEX): id and score of the workspace's requests that are not
 * canceled, oldest first, from the score the page starts at. Its ids
 * not listed yet are read next, in pipelines of at most LIST_CHUNK,
 * then the next page if this one was full: no command of Redis is as
 * long as the workspace's failed lines, which stay in the index for
 * ever (SPEC 2.8 lists them; until 2026-11-29 one ZRANGE read them all).
 */
static void
ngx_http_linegate_lines_list_index(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, redisReply *index)
{
    size_t       len;
    u_char      *p;
    ngx_int_t    rc;
    ngx_str_t    id, *key;
    ngx_uint_t   i, m, n, first, stride;
    redisReply  *e;

    /* [id, id...] (ZRANGE), or [id, score, id, score...] when scored */
    for (i = 0; i < index->elements; i++) {
        if (index->element[i]->type != REDIS_REPLY_STRING) {
            break;
        }
    }

    stride = lr->list_scored ? 2 : 1;

    if (i < index->elements || index->elements % stride) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      NGX_HTTP_LINEGATE_LOG "unexpected pipeline reply");
        ngx_http_linegate_lines_read_fail(r,
                                          NGX_HTTP_LINEGATE_LR_FAIL_INTERNAL);
        return;
    }

    m = index->elements / stride;

    if (!lr->list_scored && m == NGX_HTTP_LINEGATE_LIST_PAGE) {
        /*
         * A page or more: the first page again, with the scores the next
         * pages start from. A workspace of fewer lines (nearly all) is
         * read by ids alone: WITHSCORES made Redis format each score, 4x
         * the time of the ZRANGE (7.3 against 1.8 us with 10 lines), and
         * by-user 0.83x as fast (performance.md, stop 47).
         */
        lr->list_scored = 1;
        ngx_http_linegate_lines_list_page(r, lr);
        return;
    }

    first = (lr->list_pages++ == 0);

    if (first) {
        (void) ngx_http_linegate_json_write_init(&lr->list_jw, r->pool,
                                16 + ngx_min(m, NGX_HTTP_LINEGATE_LIST_CHUNK)
                                     * NGX_HTTP_LINEGATE_LINE_JSON_SIZE);
        ngx_http_linegate_json_write_object(&lr->list_jw);
        ngx_http_linegate_json_write_key(&lr->list_jw, "lines");
        ngx_http_linegate_json_write_array(&lr->list_jw);
    }

    /*
     * the ids new to the answer (those of the first score that the page
     * before listed are skipped); the index is freed once this returns:
     * their hashes' keys, in one
     */
    len = 0;
    n = 0;

    for (i = 0; i < m; i++) {
        if (ngx_http_linegate_lines_list_listed(lr, index, i)) {
            continue;
        }

        e = index->element[stride * i];
        id.data = (u_char *) e->str;
        id.len = e->len;

        len += ngx_http_linegate_key_len(NGX_HTTP_LINEGATE_KEY_WS_LR, &lr->ws,
                                         &id);
        n++;
    }

    /*
     * a page as long as asked for: another may follow. A full one
     * brings LIST_PAGE new ids at least (it skips list_nties at most)
     */
    lr->list_more = (n && m == lr->list_nties + NGX_HTTP_LINEGATE_LIST_PAGE);

    if (n == 0) {
        if (!first) {
            ngx_http_linegate_lines_list_send(r, lr, NULL);
            return;
        }

        ngx_http_linegate_json_write_end(&lr->list_jw, ']');
        ngx_http_linegate_json_write_end(&lr->list_jw, '}');
        ngx_http_linegate_send_jw(r, NGX_HTTP_OK, &lr->list_jw);
        return;
    }

    key = ngx_palloc(r->pool, n * sizeof(ngx_str_t));
    p = ngx_pnalloc(r->pool, len);

    if (key == NULL || p == NULL) {
        ngx_http_linegate_lines_read_fail(r,
                                          NGX_HTTP_LINEGATE_LR_FAIL_INTERNAL);
        return;
    }

    n = 0;

    for (i = 0; i < m; i++) {
        if (ngx_http_linegate_lines_list_listed(lr, index, i)) {
            continue;
        }

        e = index->element[stride * i];
        id.data = (u_char *) e->str;
        id.len = e->len;

        key[n].data = p;
        p = ngx_http_linegate_key_write(p, NGX_HTTP_LINEGATE_KEY_WS_LR,
                                        &lr->ws, &id);
        key[n].len = p - key[n].data;
        n++;
    }

    lr->list_keys = key;
    lr->list_n = n;
    lr->list_next = 0;

    if (lr->list_more
        && ngx_http_linegate_lines_list_cursor(r, lr, index) != NGX_OK)
    {
        ngx_http_linegate_lines_read_fail(r,
                                          NGX_HTTP_LINEGATE_LR_FAIL_INTERNAL);
        return;
    }

    if (!first) {
        ngx_http_linegate_lines_list_read(r, lr);
        return;
    }

    if (lr->list_more || lr->list_scored) {
        /* more lines than linegate_lines_cache keeps */
        ngx_http_linegate_lines_list_fetch(r, lr);
        return;
    }

    if (ngx_http_linegate_lines_cache_index(index, &lr->list_crc) != NGX_OK) {
        ngx_http_linegate_lines_read_fail(r,
                                          NGX_HTTP_LINEGATE_LR_FAIL_INTERNAL);
        return;
    }

    rc = ngx_http_linegate_lines_list_cached(r, lr);

    if (rc == NGX_OK) {
        return;
    }

    if (rc == NGX_AGAIN
        && ngx_http_linegate_lines_cache_wait(r, &lr->list_wait,
                                          &lr->list_barrier,
                                          ngx_http_linegate_lines_list_woken)
           == NGX_OK)
    {
        return;
    }

    ngx_http_linegate_lines_list_fetch(r, lr);
}


/*
 * 1 when the page's i-th id was listed by the page before: of the score
 * this page starts at, which the page before ended with. Skipped by id,
 * not by count: one of them canceled meanwhile (lr_unlist, sent as its
 * hash was read) has left the index, and the others are no longer its
 * first ones. Redis writes a score the same way each time.
 */
static ngx_uint_t
ngx_http_linegate_lines_list_listed(ngx_http_linegate_lr_t *lr,
    redisReply *index, ngx_uint_t i)
{
    ngx_uint_t   j;
    redisReply  *id, *score;

    if (lr->list_nties == 0) {
        return 0;
    }

    id = index->element[2 * i];
    score = index->element[2 * i + 1];

    if (score->len != lr->list_from.len
        || ngx_memcmp(score->str, lr->list_from.data, score->len) != 0)
    {
        return 0;
    }

    for (j = 0; j < lr->list_nties; j++) {
        if (lr->list_ties[j].len == id->len
            && ngx_memcmp(lr->list_ties[j].data, id->str, id->len) == 0)
        {
            return 1;
        }
    }

    return 0;
}


/*
 * A full page: the next starts at its last score (inclusive: more ids
 * of the same ms may follow) and skips the ids of that score this one
 * holds, copied (the reply is freed once the page is read)
 */
static ngx_int_t
ngx_http_linegate_lines_list_cursor(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, redisReply *index)
{
    u_char      *p;
    ngx_str_t   *ties;
    ngx_uint_t   i, j, m;
    redisReply  *last, *e;

    m = index->elements / 2;
    last = index->element[index->elements - 1];

    for (i = m; i > 0; i--) {
        e = index->element[2 * (i - 1) + 1];

        if (e->len != last->len
            || ngx_memcmp(e->str, last->str, last->len) != 0)
        {
            break;
        }
    }

    /* i: the first id of the last score */
    ties = ngx_palloc(r->pool, (m - i) * sizeof(ngx_str_t));
    p = ngx_pnalloc(r->pool, last->len);

    if (ties == NULL || p == NULL) {
        return NGX_ERROR;
    }

    lr->list_from.data = p;
    lr->list_from.len = last->len;
    ngx_memcpy(p, last->str, last->len);

    for (j = 0; i < m; i++, j++) {
        e = index->element[2 * i];

        ties[j].data = ngx_pnalloc(r->pool, e->len);
        if (ties[j].data == NULL) {
            return NGX_ERROR;
        }

        ties[j].len = e->len;
        ngx_memcpy(ties[j].data, e->str, e->len);
    }

    lr->list_ties = ties;
    lr->list_nties = j;

    return NGX_OK;
}


/*
 * The index's page: the first by ids alone (from NULL: ZRANGE 0 to
 * LIST_PAGE - 1, as cheap as the whole index was for the workspaces
 * that fit), or from score from (inclusive, "-inf" for the first page
 * again), the nties ids of that score already listed and LIST_PAGE
 * more, with their scores: ZRANGEBYSCORE, in the order of a ZRANGE (by
 * score, then by id; ZRANGE ... BYSCORE needs Redis 6.2)
 */
static void
ngx_http_linegate_lines_list_page_args(ngx_http_request_t *r,
    ngx_http_linegate_redis_args_t *a, ngx_str_t *key, ngx_str_t *from,
    ngx_uint_t nties)
{
    if (from == NULL) {
        ngx_http_linegate_redis_arg_cstr(a, "ZRANGE");
        ngx_http_linegate_redis_arg_str(a, key);
        ngx_http_linegate_redis_arg_cstr(a, "0");
        ngx_http_linegate_redis_arg_int(r, a,
                                        NGX_HTTP_LINEGATE_LIST_PAGE - 1);
        return;
    }

    ngx_http_linegate_redis_arg_cstr(a, "ZRANGEBYSCORE");
    ngx_http_linegate_redis_arg_str(a, key);
    ngx_http_linegate_redis_arg_str(a, from);
    ngx_http_linegate_redis_arg_cstr(a, "+inf");
    ngx_http_linegate_redis_arg_cstr(a, "WITHSCORES");
    ngx_http_linegate_redis_arg_cstr(a, "LIMIT");
    ngx_http_linegate_redis_arg_cstr(a, "0");
    ngx_http_linegate_redis_arg_int(r, a,
                                    nties + NGX_HTTP_LINEGATE_LIST_PAGE);
}


/*
 * LIST_INDEX: the index's next page (the first after lr_list.lua's
 * gate), a plain command
 */
static void
ngx_http_linegate_lines_list_page(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr)
{
    ngx_str_t                       *from, key;
    ngx_http_linegate_redis_args_t   a;

    /* lr->ws: the workspace the gate admitted (lines_admit) */
    if (ngx_http_linegate_key(r->pool, NGX_HTTP_LINEGATE_KEY_WS_LINES,
                              &lr->ws, NULL, &key)
        != NGX_OK)
    {
        ngx_http_linegate_lines_read_fail(r,
                                          NGX_HTTP_LINEGATE_LR_FAIL_INTERNAL);
        return;
    }

    if (!lr->list_scored) {
        from = NULL;

    } else if (lr->list_pages) {
        from = &lr->list_from;

    } else {
        from = &ngx_http_linegate_lines_list_start;
    }

    ngx_http_linegate_redis_args_init(&a);
    ngx_http_linegate_lines_list_page_args(r, &a, &key, from,
                                           lr->list_nties);

    lr->ctx->state = NGX_HTTP_LINEGATE_READ_LIST_INDEX;

    if (ngx_http_linegate_redis_command(r, &a,
                                        ngx_http_linegate_lines_read_resume)
        != NGX_OK)
    {
        ngx_http_linegate_lines_read_fail(r, NGX_HTTP_LINEGATE_LR_FAIL_STORE);
    }
}


/*
 * linegate_lines_cache's answer, if it has one that may be served now:
 * NGX_OK (sent), NGX_AGAIN (one, once the barrier passed), NGX_DECLINED
 */
static ngx_int_t
ngx_http_linegate_lines_list_cached(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr)
{
    u_char     *p;
    ngx_int_t   rc;
    ngx_str_t   body;

    rc = ngx_http_linegate_lines_cache_find(&lr->ws, &lr->date, lr->list_crc,
                                            lr->list_n, &lr->list_barrier,
                                            &body);
    if (rc != NGX_OK) {
        return rc;
    }

    /* the table's bytes may be dropped while the answer is written */
    p = ngx_pnalloc(r->pool, body.len);
    if (p == NULL) {
        ngx_http_linegate_lines_read_fail(r,
                                          NGX_HTTP_LINEGATE_LR_FAIL_INTERNAL);
        return NGX_OK;
    }

    ngx_memcpy(p, body.data, body.len);
    ngx_http_linegate_metrics_cache("lines", 1);
    ngx_http_linegate_send_body(r, NGX_HTTP_OK, p, body.len);

    return NGX_OK;
}


/* the barrier passed, or the subscriber was lost (nothing kept then) */
static void
ngx_http_linegate_lines_list_woken(ngx_http_request_t *r)
{
    ngx_http_linegate_lr_t  *lr;

    lr = ngx_http_linegate_lines_lr(r);

    if (ngx_http_linegate_lines_list_cached(r, lr) != NGX_OK) {
        ngx_http_linegate_lines_list_fetch(r, lr);
    }
}


/* the hashes from Redis: a fill of the table if it may take one */
static void
ngx_http_linegate_lines_list_fetch(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr)
{
    ngx_http_linegate_main_conf_t  *lmcf;

    lmcf = ngx_http_get_module_main_conf(r, ngx_http_linegate_module);

    if (lmcf->lines_cache) {
        ngx_http_linegate_metrics_cache("lines", 0);
    }

    /* the fill reads the index's first page again: it must be all */
    if (lr->list_n <= NGX_HTTP_LINEGATE_LINES_CACHE_LINES
        && !lr->list_more
        && !lr->list_scored
        && ngx_http_linegate_lines_cache_fill(&lr->list_fill) == NGX_OK)
    {
        ngx_http_linegate_lines_list_tracked(r, lr);
        return;
    }

    ngx_http_linegate_lines_list_read(r, lr);
}


/*
 * LIST_LINES, a fill of linegate_lines_cache: the index and the hashes
 * read again, each after CLIENT CACHING yes, once CLIENT TRACKING sends
 * their next change to the subscriber (lines_cache.h)
 */
static void
ngx_http_linegate_lines_list_tracked(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr)
{
    ngx_str_t                        index;
    ngx_uint_t                       i, n;
    ngx_http_linegate_redis_args_t  *tx;

    n = 3 + 2 * lr->list_n;

    tx = ngx_palloc(r->pool, n * sizeof(ngx_http_linegate_redis_args_t));

    if (tx == NULL
        || ngx_http_linegate_key(r->pool, NGX_HTTP_LINEGATE_KEY_WS_LINES,
                                 &lr->ws, NULL, &index)
           != NGX_OK)
    {
        ngx_http_linegate_lines_read_fail(r,
                                          NGX_HTTP_LINEGATE_LR_FAIL_INTERNAL);
        return;
    }

    ngx_http_linegate_redis_args_init(&tx[0]);
    ngx_http_linegate_redis_arg_cstr(&tx[0], "CLIENT");
    ngx_http_linegate_redis_arg_cstr(&tx[0], "TRACKING");
    ngx_http_linegate_redis_arg_cstr(&tx[0], "on");
    ngx_http_linegate_redis_arg_cstr(&tx[0], "REDIRECT");
    ngx_http_linegate_redis_arg_int(r, &tx[0], lr->list_fill.redirect);
    ngx_http_linegate_redis_arg_cstr(&tx[0], "OPTIN");

    for (i = 1; i < n; i += 2) {
        ngx_http_linegate_redis_args_init(&tx[i]);
        ngx_http_linegate_redis_arg_cstr(&tx[i], "CLIENT");
        ngx_http_linegate_redis_arg_cstr(&tx[i], "CACHING");
        ngx_http_linegate_redis_arg_cstr(&tx[i], "yes");

        ngx_http_linegate_redis_args_init(&tx[i + 1]);

        if (i == 1) {
            /* the page the request read (kept if still the same) */
            ngx_http_linegate_lines_list_page_args(r, &tx[i + 1], &index,
                                                   NULL, 0);

        } else {
            ngx_http_linegate_redis_arg_cstr(&tx[i + 1], "HGETALL");
            ngx_http_linegate_redis_arg_str(&tx[i + 1],
                                            &lr->list_keys[i / 2 - 1]);
        }
    }

    lr->list_tracked = 1;
    lr->list_sent = ngx_current_msec;
    lr->ctx->state = NGX_HTTP_LINEGATE_READ_LIST_LINES;

    if (ngx_http_linegate_redis_pipeline(r, n, tx,
                                         ngx_http_linegate_lines_read_resume)
        != NGX_OK)
    {
        ngx_http_linegate_lines_read_fail(r, NGX_HTTP_LINEGATE_LR_FAIL_STORE);
    }
}


/*
 * A fill's answer: [OK, OK, index, OK, hash, OK, hash...]. NGX_OK: the
 * hashes are read (from element 4 on, every other); NGX_DECLINED: an
 * error, the hashes read again untracked; NGX_ERROR: failed (the
 * request's failure step taken).
 */
static ngx_int_t
ngx_http_linegate_lines_list_fill_reply(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, redisReply *reply)
{
    ngx_uint_t                      i;
    ngx_http_linegate_main_conf_t  *lmcf;

    lmcf = ngx_http_get_module_main_conf(r, ngx_http_linegate_module);

    if (reply == NULL) {
        /*
         * an error answered soon, the connection up (the subscriber
         * REDIRECT names gone since the fill was sent, say): the plain
         * read the fill stood for, once; a timeout is the store's
         */
        if (ngx_http_linegate_redis_connected()
            && ngx_current_msec - lr->list_sent
               < lmcf->redis_command_timeout / 2)
        {
            lr->list_tracked = 0;
            ngx_http_linegate_lines_list_read(r, lr);
            return NGX_DECLINED;
        }

        ngx_http_linegate_lines_read_fail(r, NGX_HTTP_LINEGATE_LR_FAIL_STORE);
        return NGX_ERROR;
    }

    if (reply->elements != 3 + 2 * lr->list_n
        || reply->element[2]->type != REDIS_REPLY_ARRAY)
    {
        goto unexpected;
    }

    for (i = 0; i < reply->elements; i++) {
        if ((i == 0 || (i % 2 == 1))
            && reply->element[i]->type != REDIS_REPLY_STATUS)
        {
            goto unexpected;
        }
    }

    return NGX_OK;

unexpected:

    ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                  NGX_HTTP_LINEGATE_LOG "unexpected pipeline reply");
    ngx_http_linegate_lines_read_fail(r, NGX_HTTP_LINEGATE_LR_FAIL_INTERNAL);

    return NGX_ERROR;
}


/* LIST_LINES: the next hashes, HGETALL of each in one write */
static void
ngx_http_linegate_lines_list_read(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr)
{
    ngx_uint_t  n;

    n = ngx_min(lr->list_n - lr->list_next, NGX_HTTP_LINEGATE_LIST_CHUNK);

    lr->ctx->state = NGX_HTTP_LINEGATE_READ_LIST_LINES;

    if (ngx_http_linegate_redis_pipeline_keys(r, "HGETALL", n,
                                          &lr->list_keys[lr->list_next],
                                          ngx_http_linegate_lines_read_resume)
        != NGX_OK)
    {
        ngx_http_linegate_lines_read_fail(r, NGX_HTTP_LINEGATE_LR_FAIL_STORE);
    }
}


/*
 * LIST_LINES' answer: each line written, those canceled or gone (no
 * status) left out and taken out of the index
 */
static void
ngx_http_linegate_lines_list_lines(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, redisReply *reply)
{
    size_t                     idlen;
    ngx_str_t                 *key, *drop;
    ngx_uint_t                 i, ndrop, first, stride, count;
    redisReply                *h, *index;
    ngx_http_linegate_line_t   line;

    first = 0;
    stride = 1;
    index = NULL;

    if (lr->list_tracked) {
        if (ngx_http_linegate_lines_list_fill_reply(r, lr, reply) != NGX_OK) {
            return;
        }

        first = 4;
        stride = 2;
        index = reply->element[2];

    } else if (reply == NULL) {
        ngx_http_linegate_lines_read_fail(r, NGX_HTTP_LINEGATE_LR_FAIL_STORE);
        return;
    }

    /* a fill: [OK, OK, index, (OK, hash) per line] */
    count = lr->list_tracked ? lr->list_n : reply->elements;

    key = &lr->list_keys[lr->list_next];
    drop = NULL;
    ndrop = 0;

    /* lg:{ws:W}:lr:<id>: the id ends the key */
    idlen = ngx_http_linegate_key_len(NGX_HTTP_LINEGATE_KEY_WS_LR, &lr->ws,
                                      NULL);

    for (i = 0; i < count; i++) {
        h = reply->element[first + i * stride];

        if (ngx_http_linegate_line_view(lr, h, &line) != NGX_OK) {
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          NGX_HTTP_LINEGATE_LOG "unexpected pipeline reply");
            ngx_http_linegate_lines_read_fail(r,
                                          NGX_HTTP_LINEGATE_LR_FAIL_INTERNAL);
            return;
        }

        line.id.data = key[i].data + idlen;
        line.id.len = key[i].len - idlen;

        /* a view: data NULL only when the field is absent */
        if (line.status.data == NULL
            || ngx_http_linegate_line_is(&line.status, "canceled"))
        {
            if (drop == NULL) {
                drop = ngx_palloc(r->pool, count * sizeof(ngx_str_t));
            }

            if (drop != NULL) {
                /* its hash's key: the id ends it */
                drop[ndrop++] = key[i];
            }

            continue;
        }

        ngx_http_linegate_line_jw(&lr->list_jw, r, &line);
    }

    if (ndrop) {
        /* the index changes: not kept (its invalidation would drop it) */
        index = NULL;
        ngx_http_linegate_lines_list_drop(r, lr, drop, ndrop);
    }

    lr->list_next += count;

    if (lr->list_next < lr->list_n) {
        ngx_http_linegate_lines_list_read(r, lr);
        return;
    }

    if (lr->list_more) {
        /* (never a fill's: a fill is of one page, not full) */
        ngx_http_linegate_lines_list_page(r, lr);
        return;
    }

    ngx_http_linegate_lines_list_send(r, lr, index);
}


/* the answer written; a fill's (index not NULL) kept if still true */
static void
ngx_http_linegate_lines_list_send(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, redisReply *index)
{
    size_t       i, idlen;
    ngx_str_t   *key, body;
    redisReply  *e;

    ngx_http_linegate_json_write_end(&lr->list_jw, ']');
    ngx_http_linegate_json_write_end(&lr->list_jw, '}');

    if (ngx_http_linegate_json_write_finish(&lr->list_jw, &body) != NGX_OK) {
        ngx_http_linegate_lines_read_fail(r,
                                          NGX_HTTP_LINEGATE_LR_FAIL_INTERNAL);
        return;
    }

    /*
     * the index tracked must be the one the hashes were asked from (a
     * first page read by ids alone: a fill is of no other)
     */
    if (index != NULL && index->elements == lr->list_n) {
        key = lr->list_keys;
        idlen = ngx_http_linegate_key_len(NGX_HTTP_LINEGATE_KEY_WS_LR,
                                          &lr->ws, NULL);

        for (i = 0; i < lr->list_n; i++) {
            e = index->element[i];

            if (e->type != REDIS_REPLY_STRING
                || key[i].len - idlen != e->len
                || ngx_memcmp(key[i].data + idlen, e->str, e->len) != 0)
            {
                break;
            }
        }

        if (i == lr->list_n) {
            ngx_http_linegate_lines_cache_store(&lr->list_fill, &lr->ws,
                                                &lr->date, index, &body);
        }
    }

    ngx_http_linegate_send_body(r, NGX_HTTP_OK, body.data, body.len);
}


/*
 * The requests read canceled or gone leave the index (what lr_list.lua
 * did in its walk), each only if still so when the step runs
 * (lr_unlist.lua: one may have been paid and reopened since it was
 * read). Sent without waiting, as a plain EVALSHA: lost (the
 * connection, a NOSCRIPT), the next by-user reads them again and sends
 * it again; never a durable write, whose queue the money path's repairs
 * need.
 */
static void
ngx_http_linegate_lines_list_drop(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, ngx_str_t *keys, ngx_uint_t n)
{
    size_t                           idlen;
    ngx_str_t                        index, *id;
    ngx_uint_t                       i;
    ngx_http_linegate_redis_args_t  *a;

    a = ngx_palloc(r->pool, sizeof(ngx_http_linegate_redis_args_t));

    if (a == NULL
        || ngx_http_linegate_key(r->pool, NGX_HTTP_LINEGATE_KEY_WS_LINES,
                                 &lr->ws, NULL, &index)
           != NGX_OK)
    {
        return;
    }

    idlen = ngx_http_linegate_key_len(NGX_HTTP_LINEGATE_KEY_WS_LR, &lr->ws,
                                      NULL);

    /* a key and an id each, within a command's arguments: the rest later */
    n = ngx_min(n, (NGX_HTTP_LINEGATE_REDIS_MAX_ARGS - 4) / 2);

    id = ngx_palloc(r->pool, n * sizeof(ngx_str_t));
    if (id == NULL) {
        return;
    }

    ngx_http_linegate_redis_args_init(a);
    ngx_http_linegate_redis_arg_cstr(a, "EVALSHA");
    ngx_http_linegate_redis_arg_str(a,
        ngx_http_linegate_script_sha(NGX_HTTP_LINEGATE_SCRIPT_LR_UNLIST));
    ngx_http_linegate_redis_arg_int(r, a, n + 1);
    ngx_http_linegate_redis_arg_str(a, &index);

    for (i = 0; i < n; i++) {
        ngx_http_linegate_redis_arg_str(a, &keys[i]);
    }

    for (i = 0; i < n; i++) {
        id[i].data = keys[i].data + idlen;
        id[i].len = keys[i].len - idlen;
        ngx_http_linegate_redis_arg_str(a, &id[i]);
    }

    if (ngx_http_linegate_redis_command(r, a, NULL) != NGX_OK) {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      NGX_HTTP_LINEGATE_LOG "lr_unlist of \"%V\" not sent",
                      &index);
    }
}


/* LIST: the gate's answer; admitted, the index's first page */
static void
ngx_http_linegate_lines_list_done(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, redisReply *reply)
{
    ngx_int_t  code;

    code = ngx_http_linegate_lines_gate(r, lr, reply);

    if (code == NGX_DONE) {
        return;
    }

    if (code != NGX_HTTP_LINEGATE_LR_OK) {
        ngx_http_linegate_lines_read_fail(r,
                                          NGX_HTTP_LINEGATE_LR_FAIL_INTERNAL);
        return;
    }

    /* as lr_get_tx: what an answer from linegate_lines_cache waits for */
    ngx_http_linegate_lines_cache_barrier(&lr->list_barrier);

    ngx_http_linegate_lines_list_page(r, lr);
}


/* LIST_INDEX: a page of the index, read on as the pipeline's */
static void
ngx_http_linegate_lines_list_indexed(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, redisReply *reply)
{
    if (reply == NULL) {
        ngx_http_linegate_lines_read_fail(r, NGX_HTTP_LINEGATE_LR_FAIL_STORE);
        return;
    }

    if (reply->type != REDIS_REPLY_ARRAY) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      NGX_HTTP_LINEGATE_LOG "unexpected ZRANGEBYSCORE reply");
        ngx_http_linegate_lines_read_fail(r,
                                          NGX_HTTP_LINEGATE_LR_FAIL_INTERNAL);
        return;
    }

    ngx_http_linegate_lines_list_index(r, lr, reply);
}


/* GET /api/lines/check-availability?id= */

static void
ngx_http_linegate_line_check(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr)
{
    ngx_int_t  rc;
    ngx_str_t  id;

    rc = ngx_http_linegate_line_check_id(r, &id);

    if (rc == NGX_ABORT) {
        ngx_http_linegate_internal_error(r);
        return;
    }

    if (rc == NGX_DECLINED) {
        ngx_http_linegate_lines_defer(lr, NGX_HTTP_LINEGATE_LR_DEFER_PLAIN,
                                      NULL, "Missing required query "
                                      "parameter: id");

    } else if (rc == NGX_ERROR) {
        ngx_http_linegate_lines_defer(lr, NGX_HTTP_LINEGATE_LR_DEFER_PLAIN,
                                      NULL, "Query parameter id given more "
                                      "than once");

    } else if (!ngx_http_linegate_id_valid(&id)) {
        ngx_http_linegate_lines_defer(lr, NGX_HTTP_LINEGATE_LR_DEFER_PLAIN,
                                      NULL, "Invalid line id: expected 24 "
                                      "lowercase hexadecimal characters");

    } else {
        lr->id = id;
        lr->ctx->path_id = id;
    }

    ngx_http_linegate_lr_get_script(r, lr, NGX_HTTP_LINEGATE_READ_CHECK);
}


/*
 * The query's "id" (its name in any case, as ngx_http_arg() finds it),
 * its %-escapes decoded: a client may encode any character of a query
 * (RFC 3986 2.1; nginx decodes the path, and so the id of GET by id),
 * and "%61" is "a". NGX_OK: id, in the query or the pool; NGX_DECLINED:
 * absent or empty; NGX_ERROR: given twice with different values, as
 * decoded (which one the client meant is not known, and a proxy in
 * front may have read the other); NGX_ABORT: no memory.
 */
static ngx_int_t
ngx_http_linegate_line_check_id(ngx_http_request_t *r, ngx_str_t *id)
{
    u_char     *p, *last, *end, *s, *d;
    ngx_int_t   c;
    ngx_str_t   v;
    ngx_uint_t  found;

    found = 0;
    ngx_str_null(id);

    if (r->args.len == 0) {
        return NGX_DECLINED;
    }

    p = r->args.data;
    last = p + r->args.len;

    for ( /* void */ ; p < last; p = end + (end < last)) {
        end = ngx_strlchr(p, last, '&');

        if (end == NULL) {
            end = last;
        }

        if (end - p < 3 || ngx_strncasecmp(p, (u_char *) "id=", 3) != 0) {
            continue;
        }

        v.data = p + 3;
        v.len = end - v.data;

        if (ngx_strlchr(v.data, end, '%') != NULL) {
            d = ngx_pnalloc(r->pool, v.len);
            if (d == NULL) {
                return NGX_ABORT;
            }

            v.data = d;

            for (s = p + 3; s < end; /* void */) {
                c = (*s == '%' && end - s >= 3) ? ngx_hextoi(s + 1, 2)
                                                : NGX_ERROR;

                if (c == NGX_ERROR) {
                    *d++ = *s++;
                    continue;
                }

                *d++ = (u_char) c;
                s += 3;
            }

            v.len = d - v.data;
        }

        if (!found) {
            *id = v;
            found = 1;
            continue;
        }

        if (v.len != id->len || ngx_memcmp(v.data, id->data, v.len) != 0) {
            return NGX_ERROR;
        }
    }

    return id->len ? NGX_OK : NGX_DECLINED;
}


/* CHECK */
static void
ngx_http_linegate_line_check_done(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, redisReply *reply)
{
    ngx_http_linegate_json_write_t  jw;

    if (ngx_http_linegate_lr_get_line(r, lr, reply) != NGX_OK) {
        return;
    }

    (void) ngx_http_linegate_json_write_init(&jw, r->pool, 512);
    ngx_http_linegate_line_check_jw(&jw, r, &lr->line);

    ngx_http_linegate_send_jw(r, NGX_HTTP_OK, &jw);
}


/* SPEC 2.9: active, not reported unhealthy, below both limits today */
static void
ngx_http_linegate_line_check_jw(ngx_http_linegate_json_write_t *jw,
    ngx_http_request_t *r, ngx_http_linegate_line_t *line)
{
    int64_t                         conv, msgs, conv_left, msgs_left;
    const char                     *reason;
    ngx_http_linegate_main_conf_t  *lmcf;

    lmcf = ngx_http_get_module_main_conf(r, ngx_http_linegate_module);

    conv = ngx_http_linegate_line_count(&line->conversations);
    msgs = ngx_http_linegate_line_count(&line->messages);

    conv_left = (int64_t) lmcf->line_daily_conversations - conv;
    msgs_left = (int64_t) lmcf->line_daily_messages - msgs;

    if (!ngx_http_linegate_line_is(&line->status, "active")) {
        reason = "not_active";

    } else if (ngx_http_linegate_line_is(&line->health_status, "unhealthy")) {
        reason = "unhealthy";

    } else if (conv_left <= 0 || msgs_left <= 0) {
        reason = "daily_limit_reached";

    } else {
        reason = NULL;
    }

    ngx_http_linegate_json_write_object(jw);
    ngx_http_linegate_json_write_key(jw, "success");
    ngx_http_linegate_json_write_bool(jw, 1);
    ngx_http_linegate_json_write_key(jw, "lineId");
    ngx_http_linegate_json_write_str_or_null(jw, &line->id);
    ngx_http_linegate_json_write_key(jw, "available");
    ngx_http_linegate_json_write_bool(jw, reason == NULL);
    ngx_http_linegate_json_write_key(jw, "reason");

    if (reason) {
        ngx_http_linegate_json_write_cstr(jw, reason);

    } else {
        ngx_http_linegate_json_write_null(jw);
    }

    ngx_http_linegate_json_write_key(jw, "provisioningStatus");
    ngx_http_linegate_json_write_str_or_null(jw, &line->status);
    ngx_http_linegate_json_write_key(jw, "healthCheck");
    ngx_http_linegate_line_health_jw(jw, line);
    ngx_http_linegate_json_write_key(jw, "usage");
    ngx_http_linegate_line_usage_jw(jw, line);
    ngx_http_linegate_json_write_key(jw, "remaining");
    ngx_http_linegate_json_write_object(jw);
    ngx_http_linegate_json_write_key(jw, "newConversations");
    ngx_http_linegate_json_write_int(jw, conv_left > 0 ? conv_left : 0);
    ngx_http_linegate_json_write_key(jw, "totalMessages");
    ngx_http_linegate_json_write_int(jw, msgs_left > 0 ? msgs_left : 0);
    ngx_http_linegate_json_write_end(jw, '}');
    ngx_http_linegate_json_write_end(jw, '}');
}


/* what the endpoints share: Stripe */
