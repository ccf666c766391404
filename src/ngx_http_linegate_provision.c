
/*
 * linegate: the Line Provisioning API (Sendblue-compatible), SPEC 3.
 *
 * This file dispatches the three endpoints and starts two of them:
 * POST /accounts/lines/provision-preview and GET /accounts/limits. Each
 * is one Redis round trip, by one of two paths: when the worker knows the
 * credentials, the plain commands of ngx_http_linegate_provision_plain.c;
 * otherwise the endpoint's script (ngx_http_linegate_provision_script.c),
 * which checks the credentials (the secret's digest, compared in constant
 * time inside the script), the plan and both rolling windows, and for a
 * preview stores its token, all in one atomic step. The confirm is in
 * ngx_http_linegate_provision_confirm.c. This file is the only one of
 * the four that calls the others.
 */


#include "ngx_http_linegate_module.h"
#include "ngx_http_linegate_provision.h"
#include "ngx_http_linegate_auth.h"
#include "ngx_http_linegate_crypto.h"
#include "ngx_http_linegate_reply.h"
#include "ngx_http_linegate_clock.h"


static void ngx_http_linegate_pv_preview(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx);
static void ngx_http_linegate_pv_limits(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx);
static ngx_int_t ngx_http_linegate_pv_start(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, ngx_http_linegate_pv_request_t **pvp);


void
ngx_http_linegate_provision_handler(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx)
{
    switch (ctx->api) {

    case NGX_HTTP_LINEGATE_API_PROVISION_PREVIEW:
        ngx_http_linegate_pv_preview(r, ctx);
        return;

    case NGX_HTTP_LINEGATE_API_PROVISION_CONFIRM:
        ngx_http_linegate_provision_confirm(r, ctx);
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

    /* no body is expected; one that is sent must still be a JSON object */
    if (ctx->raw.len && ngx_http_linegate_json_body(r, ctx, 1) != NGX_OK) {
        return;
    }

    ngx_memcpy(pv->token, NGX_HTTP_LINEGATE_PV_PREFIX, 4);

    /* 40 characters of [A-Za-z0-9]: about 238 bits from the CSPRNG */
    if (ngx_http_linegate_random_token((char *) pv->token + 4,
                                       NGX_HTTP_LINEGATE_PV_RANDOM)
        != 0)
    {
        ngx_http_linegate_internal_error(r);
        return;
    }

    pv->preview = 1;

    if (pv->who.cached) {
        ngx_http_linegate_pv_plain(r, ctx, pv);
        return;
    }

    ngx_http_linegate_pv_script(r, ctx, pv);
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
        ngx_http_linegate_pv_plain(r, ctx, pv);
        return;
    }

    ngx_http_linegate_pv_script(r, ctx, pv);
}


/* shared by preview and limits */

/*
 * The request's state, and whether the worker knows the credentials
 * (pv->who.cached: the plain commands of ngx_http_linegate_provision_
 * plain.c follow; otherwise the script). NGX_DECLINED: answered (401).
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
