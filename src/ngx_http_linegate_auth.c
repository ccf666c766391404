
/*
 * linegate: credentials. API keys become SHA-256 digests (the script of
 * the endpoint resolves them in the same round trip as its work), Clerk
 * tokens are verified here against keys read at load, provisioning
 * secrets become digests compared in constant time inside Redis, and the
 * operator token is compared in constant time here.
 *
 * A verified Clerk token is remembered per worker by the digest of the
 * token until it expires, so a client polling with the same session token
 * pays for one RSA verification, not one per request.
 */


#include <openssl/sha.h>

#include "ngx_http_linegate_module.h"
#include "ngx_http_linegate_auth.h"
#include "ngx_http_linegate_crypto.h"
#include "ngx_http_linegate_reply.h"
#include "ngx_http_linegate_util.h"


#define NGX_HTTP_LINEGATE_TOKEN_MAX       8192
#define NGX_HTTP_LINEGATE_API_KEY_MIN     (5 + 32)
#define NGX_HTTP_LINEGATE_API_KEY_MAX     256
#define NGX_HTTP_LINEGATE_KEY_ID_MAX      128
#define NGX_HTTP_LINEGATE_SECRET_MAX      256
#define NGX_HTTP_LINEGATE_JWT_CACHE_SIZE  1024


typedef struct {
    u_char                          digest[32];
    time_t                          exp;
    ngx_uint_t                      has_org;
    ngx_uint_t                      used;
    size_t                          org_len;
    size_t                          sub_len;
    u_char                          org[256];
    u_char                          sub[256];
} ngx_http_linegate_jwt_cache_t;


static ngx_int_t ngx_http_linegate_bearer(ngx_http_request_t *r,
    ngx_str_t *token);
static ngx_int_t ngx_http_linegate_is_api_key(ngx_str_t *token);
static ngx_int_t ngx_http_linegate_clerk(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, ngx_str_t *token,
    ngx_http_linegate_principal_t *p);
static ngx_int_t ngx_http_linegate_clerk_verify(ngx_http_request_t *r,
    ngx_str_t *token, ngx_http_linegate_jwt_cache_t *entry);
static ngx_int_t ngx_http_linegate_unauthorized(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, const char *why);
static ngx_int_t ngx_http_linegate_pstrdup(ngx_pool_t *pool, ngx_str_t *dst,
    u_char *src, size_t len);


/* per worker: tokens verified once, remembered until they expire */
static ngx_http_linegate_jwt_cache_t
    ngx_http_linegate_jwt_cache[NGX_HTTP_LINEGATE_JWT_CACHE_SIZE];


ngx_int_t
ngx_http_linegate_auth_workspace(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, ngx_uint_t clerk_only,
    ngx_http_linegate_principal_t *p)
{
    u_char     *digest;
    ngx_str_t   token;
    ngx_str_t   cookie = ngx_string("__session");

    if (ngx_http_linegate_bearer(r, &token) != NGX_OK) {

        /* a dashboard sends its Clerk session as a cookie instead */
        if (r->headers_in.authorization != NULL
            || ngx_http_parse_multi_header_lines(&r->headers_in.cookies,
                                                 &cookie, &token)
               == NGX_DECLINED)
        {
            return ngx_http_linegate_unauthorized(r, ctx, "no credential");
        }

        return ngx_http_linegate_clerk(r, ctx, &token, p);
    }

    if (!ngx_http_linegate_is_api_key(&token)) {
        return ngx_http_linegate_clerk(r, ctx, &token, p);
    }

    if (clerk_only) {
        return ngx_http_linegate_unauthorized(r, ctx,
                                              "API key on a Clerk-only API");
    }

    digest = ngx_pnalloc(r->pool, 65);
    if (digest == NULL) {
        ngx_http_linegate_internal_error(r);
        return NGX_DECLINED;
    }

    ngx_http_linegate_sha256_hex(token.data, token.len, (char *) digest);

    p->kind = NGX_HTTP_LINEGATE_AUTH_API_KEY;
    p->value.data = digest;
    p->value.len = 64;
    ngx_str_null(&p->subject);

    ctx->auth = NGX_HTTP_LINEGATE_AUTH_API_KEY;

    return NGX_OK;
}


static ngx_int_t
ngx_http_linegate_bearer(ngx_http_request_t *r, ngx_str_t *token)
{
    ngx_str_t  *h;

    if (r->headers_in.authorization == NULL) {
        return NGX_DECLINED;
    }

    h = &r->headers_in.authorization->value;

    if (h->len <= 7 || ngx_strncasecmp(h->data, (u_char *) "Bearer ", 7) != 0)
    {
        return NGX_DECLINED;
    }

    token->data = h->data + 7;
    token->len = h->len - 7;

    while (token->len && token->data[0] == ' ') {
        token->data++;
        token->len--;
    }

    return token->len ? NGX_OK : NGX_DECLINED;
}


/* "tuco_" and at least 32 URL-safe characters */
static ngx_int_t
ngx_http_linegate_is_api_key(ngx_str_t *token)
{
    size_t  i;

    if (token->len < NGX_HTTP_LINEGATE_API_KEY_MIN
        || token->len > NGX_HTTP_LINEGATE_API_KEY_MAX
        || ngx_strncmp(token->data, "tuco_", 5) != 0)
    {
        return 0;
    }

    for (i = 5; i < token->len; i++) {
        if (!(isalnum(token->data[i]) || token->data[i] == '-'
              || token->data[i] == '_'))
        {
            return 0;
        }
    }

    return 1;
}


static ngx_int_t
ngx_http_linegate_clerk(ngx_http_request_t *r, ngx_http_linegate_ctx_t *ctx,
    ngx_str_t *token, ngx_http_linegate_principal_t *p)
{
    ngx_uint_t                       slot;
    ngx_http_linegate_jwt_cache_t    fresh, *e;
    ngx_http_linegate_main_conf_t   *lmcf;

    lmcf = ngx_http_get_module_main_conf(r, ngx_http_linegate_module);

    if (lmcf->clerk_keys == NULL) {
        return ngx_http_linegate_unauthorized(r, ctx,
                                              "no Clerk key configured");
    }

    if (token->len > NGX_HTTP_LINEGATE_TOKEN_MAX) {
        return ngx_http_linegate_unauthorized(r, ctx, "token too long");
    }

    (void) SHA256(token->data, token->len, fresh.digest);

    slot = (fresh.digest[0] | (fresh.digest[1] << 8))
           % NGX_HTTP_LINEGATE_JWT_CACHE_SIZE;
    e = &ngx_http_linegate_jwt_cache[slot];

    /* a remembered token is still checked against its expiry */
    if (!(e->used
          && ngx_memcmp(e->digest, fresh.digest, 32) == 0
          && ngx_time() <= e->exp + lmcf->clerk_leeway))
    {
        if (ngx_http_linegate_clerk_verify(r, token, &fresh) != NGX_OK) {
            return ngx_http_linegate_unauthorized(r, ctx, NULL);
        }

        *e = fresh;
    }

    if (!e->has_org) {
        ngx_str_set(&ctx->outcome, "no_active_workspace");
        ngx_http_linegate_error(r, NGX_HTTP_BAD_REQUEST, NULL,
                                "No active workspace");
        return NGX_DECLINED;
    }

    if (ngx_http_linegate_pstrdup(r->pool, &p->value, e->org, e->org_len)
        != NGX_OK
        || ngx_http_linegate_pstrdup(r->pool, &p->subject, e->sub,
                                     e->sub_len)
           != NGX_OK)
    {
        ngx_http_linegate_internal_error(r);
        return NGX_DECLINED;
    }

    p->kind = NGX_HTTP_LINEGATE_AUTH_CLERK;
    ctx->auth = NGX_HTTP_LINEGATE_AUTH_CLERK;
    ctx->tenant = p->value;

    return NGX_OK;
}


static ngx_int_t
ngx_http_linegate_clerk_verify(ngx_http_request_t *r, ngx_str_t *token,
    ngx_http_linegate_jwt_cache_t *entry)
{
    const char                      *reason;
    ngx_http_linegate_jwt_params_t   params;
    ngx_http_linegate_jwt_claims_t   claims;
    ngx_http_linegate_main_conf_t   *lmcf;

    lmcf = ngx_http_get_module_main_conf(r, ngx_http_linegate_module);

    params.issuer = (const char *) lmcf->clerk_issuer.data;
    params.azp = lmcf->clerk_azp ? lmcf->clerk_azp->elts : NULL;
    params.nazp = lmcf->clerk_azp ? lmcf->clerk_azp->nelts : 0;
    params.leeway = lmcf->clerk_leeway;
    params.now = ngx_time();

    reason = "refused";

    if (ngx_http_linegate_jwt_verify(lmcf->clerk_keys,
                                     (const char *) token->data, token->len,
                                     &params, &claims, &reason)
        != 0)
    {
        /* the reason is a fixed text: no part of the token is logged */
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      NGX_HTTP_LINEGATE_LOG "Clerk token refused: %s",
                      reason);
        return NGX_ERROR;
    }

    entry->exp = claims.exp;
    entry->has_org = claims.has_org ? 1 : 0;
    entry->used = 1;
    entry->org_len = ngx_strlen(claims.org);
    entry->sub_len = ngx_strlen(claims.sub);
    ngx_memcpy(entry->org, claims.org, entry->org_len);
    ngx_memcpy(entry->sub, claims.sub, entry->sub_len);

    return NGX_OK;
}


ngx_int_t
ngx_http_linegate_auth_account(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, ngx_str_t *key_id,
    ngx_str_t *secret_digest)
{
    size_t            i;
    u_char           *digest;
    ngx_table_elt_t  *id, *secret;

    id = ngx_http_linegate_find_header(&r->headers_in.headers,
                                       "sb-api-key-id");
    secret = ngx_http_linegate_find_header(&r->headers_in.headers,
                                           "sb-api-secret-key");

    if (id == NULL || secret == NULL
        || id->value.len == 0 || id->value.len > NGX_HTTP_LINEGATE_KEY_ID_MAX
        || secret->value.len == 0
        || secret->value.len > NGX_HTTP_LINEGATE_SECRET_MAX)
    {
        return ngx_http_linegate_unauthorized(r, ctx, "missing credentials");
    }

    for (i = 0; i < id->value.len; i++) {
        if (!(isalnum(id->value.data[i]) || id->value.data[i] == '_'
              || id->value.data[i] == '-'))
        {
            return ngx_http_linegate_unauthorized(r, ctx, "bad key id");
        }
    }

    digest = ngx_pnalloc(r->pool, 65);
    if (digest == NULL) {
        ngx_http_linegate_internal_error(r);
        return NGX_DECLINED;
    }

    ngx_http_linegate_sha256_hex(secret->value.data, secret->value.len,
                                 (char *) digest);

    *key_id = id->value;
    secret_digest->data = digest;
    secret_digest->len = 64;

    ctx->auth = NGX_HTTP_LINEGATE_AUTH_SB_KEY;

    return NGX_OK;
}


ngx_int_t
ngx_http_linegate_auth_operator(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx)
{
    ngx_str_t                       token;
    ngx_http_linegate_main_conf_t  *lmcf;

    lmcf = ngx_http_get_module_main_conf(r, ngx_http_linegate_module);

    if (ngx_http_linegate_bearer(r, &token) != NGX_OK
        || !ngx_http_linegate_ct_equal(token.data, token.len,
                                       lmcf->operator_token.data,
                                       lmcf->operator_token.len))
    {
        return ngx_http_linegate_unauthorized(r, ctx, "bad operator token");
    }

    ctx->auth = NGX_HTTP_LINEGATE_AUTH_OPERATOR;

    return NGX_OK;
}


static ngx_int_t
ngx_http_linegate_unauthorized(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, const char *why)
{
    if (why != NULL) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      NGX_HTTP_LINEGATE_LOG "unauthorized: %s", why);
    }

    ngx_str_set(&ctx->outcome, "unauthorized");

    if (ctx->api == NGX_HTTP_LINEGATE_API_PROVISION_PREVIEW
        || ctx->api == NGX_HTTP_LINEGATE_API_PROVISION_CONFIRM
        || ctx->api == NGX_HTTP_LINEGATE_API_ACCOUNT_LIMITS)
    {
        ngx_http_linegate_error(r, NGX_HTTP_UNAUTHORIZED, NULL,
                                "Invalid API credentials");

    } else {
        ngx_http_linegate_error(r, NGX_HTTP_UNAUTHORIZED, NULL,
                                "Unauthorized");
    }

    return NGX_DECLINED;
}


static ngx_int_t
ngx_http_linegate_pstrdup(ngx_pool_t *pool, ngx_str_t *dst, u_char *src,
    size_t len)
{
    dst->data = ngx_pnalloc(pool, len ? len : 1);
    if (dst->data == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(dst->data, src, len);
    dst->len = len;

    return NGX_OK;
}
