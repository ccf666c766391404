
/*
 * linegate: the Line Provisioning API (Sendblue-compatible), SPEC 3.
 *
 * Shared by the preview/limits file and the confirm file: the two rolling
 * windows as the scripts report them, and the answers every provisioning
 * script can lead to.
 */


#ifndef _NGX_HTTP_LINEGATE_PROVISION_H_INCLUDED_
#define _NGX_HTTP_LINEGATE_PROVISION_H_INCLUDED_


#include "ngx_http_linegate_module.h"
#include "ngx_http_linegate_redis.h"
#include "ngx_http_linegate_keys.h"
#include "ngx_http_linegate_redis_slots.h"
#include "ngx_http_linegate_auth.h"


/* statuses nginx has no names for */
#define NGX_HTTP_LINEGATE_GONE              410

#define NGX_HTTP_LINEGATE_PV_DAY        86400
#define NGX_HTTP_LINEGATE_PV_MONTH      2592000

/*
 * The reply of a provisioning script once it knows the account:
 * {code, six window numbers, account, extra...}.
 */
#define NGX_HTTP_LINEGATE_PV_STATE      1
#define NGX_HTTP_LINEGATE_PV_ACCOUNT    7
#define NGX_HTTP_LINEGATE_PV_EXTRA      8

/* "lpv_" and the random part of a preview token */
#define NGX_HTTP_LINEGATE_PV_PREFIX     "lpv_"
/*
 * lpv_<tag><random>: the tag (3 characters) names the slot of the
 * minting account's keys (ngx_http_linegate_key_pv_tag()); 40 characters
 * of [A-Za-z0-9] after "lpv_" in all, 37 of them random (~220 bits)
 */
#define NGX_HTTP_LINEGATE_PV_TAG        NGX_HTTP_LINEGATE_REDIS_SLOT_TAG_LEN
#define NGX_HTTP_LINEGATE_PV_RANDOM     37
#define NGX_HTTP_LINEGATE_PV_TOKEN_LEN                                       \
    (4 + NGX_HTTP_LINEGATE_PV_TAG + NGX_HTTP_LINEGATE_PV_RANDOM)


typedef struct {
    int64_t                         limit;
    int64_t                         used;
    int64_t                         free_at;  /* Unix ms, 0: none */
} ngx_http_linegate_pv_window_t;


typedef struct {
    ngx_http_linegate_pv_window_t   daily;
    ngx_http_linegate_pv_window_t   monthly;
    int64_t                         now;      /* when they were read */
} ngx_http_linegate_pv_state_t;


/* a preview or a limits request */
typedef struct {
    ngx_http_linegate_redis_args_t  args;    /* pv_account.lua's */
    ngx_http_linegate_principal_t   who;     /* cached: value = account */
    ngx_str_t                       key_id;
    ngx_str_t                       digest;  /* the secret's, for the script */
    int64_t                         now;
    u_char                          token[NGX_HTTP_LINEGATE_PV_TOKEN_LEN];
    unsigned                        preview:1;
    unsigned                        confirming:1;

    /* the decision's (ngx_http_linegate_provision_plain.c) */
    ngx_http_linegate_pv_state_t    st;
    int64_t                         inventory;      /* 1: one to sell */
    unsigned                        eligible:1;
    unsigned                        stock_known:1;  /* no look sent */
    /* READ's sample was no E.164 number: STOCK decides (pv_stock.lua) */
    unsigned                        stock_check:1;
    unsigned                        counted:1;      /* READ counted */
    uint32_t                        long_hash;      /* the account's */
    /* a refusal, answered once the token written ahead is deleted */
    ngx_int_t                       refused;
    ngx_str_t                       refused_error;

    /* a body refused: its 400, answered once the key id is checked */
    const char                     *bad_field;
    const char                     *bad_why;

    /* a confirm: its own state (ngx_http_linegate_provision_confirm.c) */
    void                           *confirm;
} ngx_http_linegate_pv_request_t;


/*
 * POST /accounts/lines/provision-confirm, once the credentials are
 * checked (401 first, as every Provisioning call): its state and its
 * body. NGX_DECLINED: answered (500); NGX_ABORT: the body is refused
 * (pv->bad_field, pv->bad_why), not answered yet.
 */
ngx_int_t ngx_http_linegate_provision_confirm(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, ngx_http_linegate_pv_request_t *pv);

/* the confirm's account is known (pv->who.value): its steps follow */
void ngx_http_linegate_provision_confirm_known(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, ngx_http_linegate_pv_request_t *pv);

/*
 * The longest a confirm holds a claimed number before its record runs
 * (ms), for those timeouts: what linegate_reconcile_lost_after must
 * exceed (nginx -t), else a run's sweep takes a live confirm for a dead
 * worker's. Its calls and waits in *calls and *waits (for the message).
 */
ngx_msec_t ngx_http_linegate_provision_confirm_longest(
    ngx_msec_t stripe_timeout, ngx_msec_t command_timeout,
    ngx_uint_t *calls, ngx_msec_t *waits);

/*
 * Preview and limits of a known account (pv->who.value), as plain
 * commands (ngx_http_linegate_provision_plain.c) in one round trip: the
 * reads and, for a preview, the token written ahead, pipelined; then the
 * one decision of both endpoints; a refused preview deletes its token
 * before it answers.
 */
void ngx_http_linegate_pv_plain(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, ngx_http_linegate_pv_request_t *pv);

/*
 * A preview's or a confirm's body refused (pv->bad_why): the account's
 * key_id first, one HGET, as READ and pv_reserve.lua check it: 401 for a
 * key id the account no longer names (a rotation's previous one), else
 * the 400. Only a refused body pays that round trip.
 */
void ngx_http_linegate_pv_plain_bad_body(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, ngx_http_linegate_pv_request_t *pv);

/*
 * linegate_inventory_cache: what this worker last learned of the
 * inventory. _known(): a preview may skip its look at the inventory (a
 * number to sell was there less than the directive's time ago); _seen():
 * what a preview's look found (1: a number to sell), or a confirm's
 * CLAIM that found none (0: previews ask again at once)
 */
ngx_uint_t ngx_http_linegate_pv_stock_known(ngx_http_request_t *r);
void ngx_http_linegate_pv_stock_seen(ngx_http_request_t *r, int64_t n);

/*
 * The numbers a step set aside in the quarantine (pv_claim, pv_stock),
 * the reply's elements from "from" on: each logged at error
 */
void ngx_http_linegate_pv_aside(ngx_http_request_t *r, redisReply *reply,
    size_t from);

/* the 200 answers of preview (token stored) and limits */
void ngx_http_linegate_pv_preview_ok(ngx_http_request_t *r,
    ngx_http_linegate_pv_request_t *pv);
void ngx_http_linegate_pv_limits_ok(ngx_http_request_t *r,
    ngx_http_linegate_pv_state_t *st);

/*
 * Read the two windows of a script reply (as of now, Unix ms), set the
 * RateLimit-Policy and RateLimit headers of the answer from them, and
 * $linegate_tenant from the account the script found.
 */
ngx_int_t ngx_http_linegate_pv_state(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, redisReply *reply, int64_t now,
    ngx_http_linegate_pv_state_t *st);

/* RateLimit-Policy and RateLimit of both windows, from st */
ngx_int_t ngx_http_linegate_pv_headers(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, ngx_http_linegate_pv_state_t *st);

/* seconds until free_at (at least 1), 0 when free_at is 0 */
time_t ngx_http_linegate_pv_wait(int64_t free_at, int64_t now);

/*
 * RateLimit's t of window w (window: its seconds) and a 429's
 * Retry-After: pv_wait(), or the whole window when w is full and no slot
 * of it ever frees (a limit of 0)
 */
time_t ngx_http_linegate_pv_reset(ngx_http_linegate_pv_window_t *w,
    int64_t now, time_t window);

/*
 * Answer a script's refusal shared by preview, confirm and limits: 401,
 * 403 (plan), 429 (code names the window), 503 (inventory empty).
 * NGX_DECLINED when code is none of these (nothing was sent).
 */
ngx_int_t ngx_http_linegate_pv_refuse(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, int64_t code, ngx_str_t *error,
    ngx_http_linegate_pv_state_t *st);


#endif /* _NGX_HTTP_LINEGATE_PROVISION_H_INCLUDED_ */
