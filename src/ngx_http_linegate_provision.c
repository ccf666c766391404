
/*
 * linegate: the Line Provisioning API (Sendblue-compatible), SPEC 3.
 *
 * This file dispatches the three endpoints and authenticates them all
 * (the confirm's AUTH step too): the account of the key id comes from
 * the worker's cache, or, when the worker does not know the credentials,
 * from pv_account.lua (the secret's digest, compared in constant time
 * inside the script; its own slot, lg:sbkey:<key id>): one more round
 * trip on a cache miss only, as the worker learns the credentials from
 * it. Preview and limits are then decided by one path, the plain
 * commands of ngx_http_linegate_provision_plain.c (one round trip); the
 * confirm's steps follow in ngx_http_linegate_provision_confirm.c; the
 * answers they share are in ngx_http_linegate_provision_script.c. This
 * file is the only one of the four that calls the others.
 */


#include "ngx_http_linegate_module.h"
#include "ngx_http_linegate_provision.h"
#include "ngx_http_linegate_auth.h"
#include "ngx_http_linegate_crypto.h"
#include "ngx_http_linegate_reply.h"
#include "ngx_http_linegate_clock.h"
#include "ngx_http_linegate_str.h"


static void ngx_http_linegate_pv_preview(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx);
static void ngx_http_linegate_pv_limits(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx);
static void ngx_http_linegate_pv_confirm(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx);
static void ngx_http_linegate_pv_known(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, ngx_http_linegate_pv_request_t *pv);
static ngx_int_t ngx_http_linegate_pv_start(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, ngx_http_linegate_pv_request_t **pvp);
static void ngx_http_linegate_pv_account(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, ngx_http_linegate_pv_request_t *pv);
static void ngx_http_linegate_pv_account_done(ngx_http_request_t *r,
    redisReply *reply);


void
ngx_http_linegate_provision_handler(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx)
{
    switch (ctx->api) {

    case NGX_HTTP_LINEGATE_API_PROVISION_PREVIEW:
        ngx_http_linegate_pv_preview(r, ctx);
        return;

    case NGX_HTTP_LINEGATE_API_PROVISION_CONFIRM:
        ngx_http_linegate_pv_confirm(r, ctx);
        return;

    default: /* NGX_HTTP_LINEGATE_API_ACCOUNT_LIMITS */
        ngx_http_linegate_pv_limits(r, ctx);
        return;
    }
}


/* POST /accounts/lines/provision-preview */

static void
ngx_http_linegate_pv_preview(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx)
{
    ngx_http_linegate_pv_request_t  *pv;

    if (ngx_http_linegate_pv_start(r, ctx, &pv) != NGX_OK) {
        return;
    }

    ngx_memcpy(pv->token, NGX_HTTP_LINEGATE_PV_PREFIX, 4);

    /* the tag follows once the account is known: pv_known() */
    if (ngx_http_linegate_random_token((char *) pv->token + 4
                                       + NGX_HTTP_LINEGATE_PV_TAG,
                                       NGX_HTTP_LINEGATE_PV_RANDOM)
        != 0)
    {
        ngx_http_linegate_internal_error(r);
        return;
    }

    pv->preview = 1;

    if (pv->who.cached) {
        ngx_http_linegate_pv_known(r, ctx, pv);
        return;
    }

    ngx_http_linegate_pv_account(r, ctx, pv);
}


/* GET /accounts/limits */

static void
ngx_http_linegate_pv_limits(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx)
{
    ngx_http_linegate_pv_request_t  *pv;

    if (ngx_http_linegate_pv_start(r, ctx, &pv) != NGX_OK) {
        return;
    }

    if (pv->who.cached) {
        ngx_http_linegate_pv_known(r, ctx, pv);
        return;
    }

    ngx_http_linegate_pv_account(r, ctx, pv);
}


/* POST /accounts/lines/provision-confirm: AUTH, then its own steps */

static void
ngx_http_linegate_pv_confirm(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx)
{
    ngx_http_linegate_pv_request_t  *pv;

    if (ngx_http_linegate_pv_start(r, ctx, &pv) != NGX_OK) {
        return;
    }

    /* the body (400) once the credentials are checked (401) */
    pv->confirming = 1;

    if (pv->who.cached) {
        ngx_http_linegate_pv_known(r, ctx, pv);
        return;
    }

    ngx_http_linegate_pv_account(r, ctx, pv);
}


/*
 * The account is known (pv->who.value): the endpoint's own work. The
 * body is judged only now: a caller that is not one gets 401, whatever
 * it sent (docs/provisioning-api.md, the order of checks).
 */
static void
ngx_http_linegate_pv_known(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, ngx_http_linegate_pv_request_t *pv)
{
    ngx_int_t  rc;

    if (pv->confirming) {
        rc = ngx_http_linegate_provision_confirm(r, ctx, pv);

        if (rc == NGX_ABORT) {
            /* the 400 after the account's key id (a rotation's: 401) */
            ngx_http_linegate_pv_plain_bad_body(r, ctx, pv);
            return;
        }

        if (rc != NGX_OK) {
            return;
        }

        ngx_http_linegate_provision_confirm_known(r, ctx, pv);
        return;
    }

    /* no body is expected; one that is sent must still be a JSON object */
    if (pv->preview && ctx->raw.len
        && ngx_http_linegate_json_parse(r, ctx, 1, &pv->bad_why) != NGX_OK)
    {
        if (pv->bad_why == NULL) {
            ngx_http_linegate_internal_error(r);
            return;
        }

        ngx_http_linegate_pv_plain_bad_body(r, ctx, pv);
        return;
    }

    /* the token's key goes beside the account's: one slot to confirm */
    if (pv->preview
        && ngx_http_linegate_key_pv_tag(r->pool, &pv->who.value,
                                        pv->token + 4)
           != NGX_OK)
    {
        ngx_http_linegate_internal_error(r);
        return;
    }

    ngx_http_linegate_pv_plain(r, ctx, pv);
}


/* shared by preview, limits and confirm */

/*
 * The request's state, and whether the worker knows the credentials
 * (pv->who.cached: the plain commands of ngx_http_linegate_provision_
 * plain.c follow; otherwise pv_account.lua first). NGX_DECLINED:
 * answered (401).
 */
static ngx_int_t
ngx_http_linegate_pv_start(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, ngx_http_linegate_pv_request_t **pvp)
{
    ngx_str_t                        key_id;
    ngx_http_linegate_pv_request_t  *pv;

    pv = ngx_pcalloc(r->pool, sizeof(ngx_http_linegate_pv_request_t));
    if (pv == NULL) {
        ngx_http_linegate_internal_error(r);
        return NGX_DECLINED;
    }

    /* the secret's digest only when the worker does not know the pair */
    if (ngx_http_linegate_auth_account(r, ctx, &pv->who, &key_id,
                                       &pv->digest)
        != NGX_OK)
    {
        ngx_http_linegate_refuse(r);
        return NGX_DECLINED;
    }

    pv->key_id = key_id;
    pv->now = ngx_http_linegate_now_ms();
    ctx->data = pv;

    if (pv->who.cached) {
        ctx->tenant = pv->who.value;
    }

    *pvp = pv;

    return NGX_OK;
}


/*
 * pv_account.lua: the account of credentials the worker does not know
 * (KEYS[1] lg:sbkey:<key id>, the secret's digest), then the endpoint's
 * work, as for a known account.
 */
static void
ngx_http_linegate_pv_account(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, ngx_http_linegate_pv_request_t *pv)
{
    ngx_str_t                        sbkey;
    ngx_http_linegate_redis_args_t  *a;

    if (ngx_http_linegate_key(r->pool, NGX_HTTP_LINEGATE_KEY_SBKEY,
                              &pv->key_id, NULL, &sbkey)
        != NGX_OK)
    {
        ngx_http_linegate_internal_error(r);
        return;
    }

    a = &pv->args;

    ngx_http_linegate_redis_args_init(a);
    ngx_http_linegate_redis_arg_str(a, &sbkey);
    ngx_http_linegate_redis_arg_str(a, &pv->digest);

    if (ngx_http_linegate_redis_script(r, NGX_HTTP_LINEGATE_SCRIPT_PV_ACCOUNT,
                                       1, a,
                                       ngx_http_linegate_pv_account_done)
        != NGX_OK)
    {
        ngx_http_linegate_store_unavailable(r);
    }
}


static void
ngx_http_linegate_pv_account_done(ngx_http_request_t *r, redisReply *reply)
{
    ngx_str_t                        acct;
    ngx_http_linegate_ctx_t         *ctx;
    ngx_http_linegate_pv_request_t  *pv;

    ctx = ngx_http_linegate_get_ctx(r);
    pv = ctx->data;

    if (reply == NULL) {
        ngx_http_linegate_store_unavailable(r);
        return;
    }

    if (reply->type == REDIS_REPLY_NIL) {
        ngx_str_null(&acct);

        if (ngx_http_linegate_pv_refuse(r, ctx, NGX_HTTP_UNAUTHORIZED, &acct,
                                        &pv->st)
            != NGX_OK)
        {
            ngx_http_linegate_internal_error(r);
        }

        return;
    }

    if (reply->type != REDIS_REPLY_STRING || reply->len == 0) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      NGX_HTTP_LINEGATE_LOG "unexpected reply to the "
                      "credentials' check");
        ngx_http_linegate_internal_error(r);
        return;
    }

    /* the reply is freed once this handler returns */
    if (ngx_http_linegate_pstr(r->pool, &acct, (u_char *) reply->str,
                               reply->len)
        == NULL)
    {
        ngx_http_linegate_internal_error(r);
        return;
    }

    /* the store accepted the credentials: the next call is a known one */
    ngx_http_linegate_auth_learn(r, &pv->who, &acct);

    pv->who.value = acct;
    ctx->tenant = acct;

    ngx_http_linegate_pv_known(r, ctx, pv);
}
