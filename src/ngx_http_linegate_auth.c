
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


#include "ngx_http_linegate_module.h"
#include "ngx_http_linegate_auth.h"
#include "ngx_http_linegate_metrics.h"
#include "ngx_http_linegate_crypto.h"
#include "ngx_http_linegate_jwt.h"
#include "ngx_http_linegate_headers.h"
#include "ngx_http_linegate_cache.h"
#include "ngx_http_linegate_chars.h"
#include "ngx_http_linegate_str.h"
#include "ngx_http_linegate_redis_pubsub.h"


#define NGX_HTTP_LINEGATE_TOKEN_MAX       8192
#define NGX_HTTP_LINEGATE_API_KEY_MIN     (5 + 32)
#define NGX_HTTP_LINEGATE_API_KEY_MAX     256
#define NGX_HTTP_LINEGATE_KEY_ID_MAX      128
#define NGX_HTTP_LINEGATE_SECRET_MAX      256
/*
 * Per-worker caches (cache.h), allocated when the worker starts, holding
 * ids of at most NGX_HTTP_LINEGATE_CACHED_ID_MAX bytes (longer ones are
 * served, never cached): Clerk tokens (8,192 entries of the user and the
 * organization, ~1.5 MB) and API keys and provisioning credentials
 * (linegate_api_key_cache_size entries of the workspace or account,
 * 4,096 by default, ~0.5 MB).
 */
#define NGX_HTTP_LINEGATE_JWT_CACHE_SIZE     8192
#define NGX_HTTP_LINEGATE_CACHED_ID_MAX      64
#define NGX_HTTP_LINEGATE_JWT_HAS_ORG        0x01  /* cache entry flags */
#define NGX_HTTP_LINEGATE_APIKEY_PUSHED      0x01


/* a verified token */
typedef struct {
    u_char                          digest[32];
    time_t                          exp;
    ngx_uint_t                      has_org;
    size_t                          org_len;
    size_t                          sub_len;
    u_char                          org[256];
    u_char                          sub[256];
} ngx_http_linegate_jwt_verified_t;


static ngx_int_t ngx_http_linegate_bearer(ngx_http_request_t *r,
    ngx_str_t *token);
static ngx_int_t ngx_http_linegate_session_cookie(ngx_http_request_t *r,
    ngx_str_t *name, ngx_str_t *value);
static ngx_int_t ngx_http_linegate_cookie_find(ngx_str_t *line,
    ngx_str_t *name, ngx_str_t *value);
static ngx_int_t ngx_http_linegate_cookie_write(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx);
static ngx_int_t ngx_http_linegate_is_api_key(ngx_str_t *token);
static ngx_int_t ngx_http_linegate_clerk(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, ngx_str_t *token,
    ngx_http_linegate_principal_t *p);
static ngx_int_t ngx_http_linegate_clerk_verify(ngx_http_request_t *r,
    ngx_str_t *token, ngx_http_linegate_jwt_verified_t *v);
static ngx_int_t ngx_http_linegate_apikey_cached(ngx_http_request_t *r,
    ngx_http_linegate_principal_t *p);
static ngx_uint_t ngx_http_linegate_apikey_fresh(
    ngx_http_linegate_main_conf_t *lmcf, ngx_http_linegate_cache_entry_t *e,
    ngx_http_linegate_principal_t *p);
static void ngx_http_linegate_apikey_revoked(u_char *data, size_t len);
static ngx_int_t ngx_http_linegate_unauthorized(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, const char *why);
static ngx_int_t ngx_http_linegate_refused(ngx_http_linegate_ctx_t *ctx,
    ngx_uint_t status, const char *code, const char *message);


/* per worker: tokens verified once, remembered until they expire */
static ngx_http_linegate_cache_t  ngx_http_linegate_jwt_cache;

/* per worker: API key -> workspace, for linegate_api_key_cache */
static ngx_http_linegate_cache_t  ngx_http_linegate_apikey_cache;


ngx_int_t
ngx_http_linegate_auth_workspace(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, ngx_uint_t clerk_only,
    ngx_http_linegate_principal_t *p)
{
    u_char                         *digest;
    ngx_str_t                       token;
    ngx_atomic_t                   *epoch;
    ngx_http_linegate_main_conf_t  *lmcf;

    ngx_str_t  cookie = ngx_string("__session");

    ngx_str_null(&p->stale);

    if (ngx_http_linegate_bearer(r, &token) != NGX_OK) {

        /* a dashboard sends its Clerk session as a cookie instead */
        if (r->headers_in.authorization != NULL
            || ngx_http_linegate_session_cookie(r, &cookie, &token)
               != NGX_OK)
        {
            return ngx_http_linegate_unauthorized(r, ctx, "no credential");
        }

        if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))
            && ngx_http_linegate_cookie_write(r, ctx) != NGX_OK)
        {
            return NGX_DECLINED;
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

    p->kind = NGX_HTTP_LINEGATE_AUTH_API_KEY;
    ngx_str_null(&p->subject);
    ctx->auth = NGX_HTTP_LINEGATE_AUTH_API_KEY;

    if (ngx_http_linegate_sha256(token.data, token.len, NULL, 0, p->digest)
        != 0)
    {
        return ngx_http_linegate_refused(ctx, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                        NULL, NULL);
    }

    lmcf = ngx_http_get_module_main_conf(r, ngx_http_linegate_module);
    epoch = ngx_http_linegate_auth_epoch();
    p->epoch = epoch ? *epoch : 0;
    p->asked = ngx_current_msec;
    p->seq = lmcf->apikey_cache_pushed ? ngx_http_linegate_redis_pubsub_seq()
                                       : 0;

    if (ngx_http_linegate_apikey_cached(r, p) == NGX_OK) {
        ngx_http_linegate_metrics_cache("api_key", 1);
        return NGX_OK;
    }

    ngx_http_linegate_metrics_cache("api_key", 0);

    digest = ngx_pnalloc(r->pool, 64);
    if (digest == NULL) {
        return ngx_http_linegate_refused(ctx, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                        NULL, NULL);
    }

    (void) ngx_hex_dump(digest, p->digest, 32);

    p->cached = 0;
    p->value.data = digest;
    p->value.len = 64;

    return NGX_OK;
}


/*
 * A write authenticated by the __session cookie alone: a browser sends
 * the cookie with any form another site posts (application/x-www-form-
 * urlencoded, multipart/form-data, text/plain need no CORS preflight).
 * Such a write must be JSON (which a form cannot send, and a foreign
 * page cannot send without a preflight that nginx answers 405), and, when
 * linegate_clerk_authorized_parties lists the dashboard's origins, its
 * Origin, when the browser sends one, must be one of them. Checked before
 * the token: a forged request costs no signature check.
 */
static ngx_int_t
ngx_http_linegate_cookie_write(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx)
{
    char                          **azp;
    size_t                          len;
    u_char                         *ct;
    ngx_uint_t                      i;
    ngx_table_elt_t                *origin;
    ngx_http_linegate_main_conf_t  *lmcf;

    len = 0;
    ct = NULL;

    if (r->headers_in.content_type != NULL) {
        ct = r->headers_in.content_type->value.data;
        len = r->headers_in.content_type->value.len;
    }

    if (len < sizeof("application/json") - 1
        || ngx_strncasecmp(ct, (u_char *) "application/json",
                           sizeof("application/json") - 1) != 0
        || (len > sizeof("application/json") - 1
            && ct[sizeof("application/json") - 1] != ';'
            && ct[sizeof("application/json") - 1] != ' '
            && ct[sizeof("application/json") - 1] != '\t'))
    {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      NGX_HTTP_LINEGATE_LOG "cookie-authenticated write "
                      "refused: not application/json");
        return ngx_http_linegate_refused(ctx, NGX_HTTP_UNSUPPORTED_MEDIA_TYPE,
                                         "UNSUPPORTED_MEDIA_TYPE",
                                         "A write authenticated by the "
                                         "session cookie must be "
                                         "application/json");
    }

    lmcf = ngx_http_get_module_main_conf(r, ngx_http_linegate_module);

    if (lmcf->clerk_azp == NULL) {
        return NGX_OK;
    }

    switch (ngx_http_linegate_find_header_once(&r->headers_in.headers,
                                               "Origin", 0, &origin))
    {
    case NGX_DECLINED:
        return NGX_OK;

    case NGX_ERROR:
        /* two Origin headers: none of them is trusted */
        goto refused;

    default: /* NGX_OK */
        break;
    }

    azp = lmcf->clerk_azp->elts;

    for (i = 0; i < lmcf->clerk_azp->nelts; i++) {
        len = ngx_strlen(azp[i]);

        if (len == origin->value.len
            && ngx_strncasecmp(origin->value.data, (u_char *) azp[i], len)
               == 0)
        {
            return NGX_OK;
        }
    }

refused:

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  NGX_HTTP_LINEGATE_LOG "cookie-authenticated write "
                  "refused: Origin not among the authorized parties");
    return ngx_http_linegate_refused(ctx, NGX_HTTP_FORBIDDEN,
                                     "FORBIDDEN_ORIGIN",
                                     "The request's Origin is not an "
                                     "authorized party");
}


/*
 * The value of the named cookie, found by its exact name. nginx's cookie
 * parsers match names case-insensitively, but RFC 6265 cookie names are
 * case-sensitive and Clerk sets exactly "__session": "__SESSION" is
 * another cookie (one a subdomain or a script may set without touching
 * the session), so they are not used. nginx 1.23.0 replaced the array of
 * Cookie headers by a linked list; the headers are read in order, the
 * first cookie of the name wins.
 */
static ngx_int_t
ngx_http_linegate_session_cookie(ngx_http_request_t *r, ngx_str_t *name,
    ngx_str_t *value)
{
#if (nginx_version >= 1023000)

    ngx_table_elt_t  *h;

    for (h = r->headers_in.cookie; h != NULL; h = h->next) {
        if (ngx_http_linegate_cookie_find(&h->value, name, value) == NGX_OK)
        {
            return NGX_OK;
        }
    }

#else

    ngx_uint_t         i;
    ngx_table_elt_t  **h;

    h = r->headers_in.cookies.elts;

    for (i = 0; i < r->headers_in.cookies.nelts; i++) {
        if (ngx_http_linegate_cookie_find(&h[i]->value, name, value)
            == NGX_OK)
        {
            return NGX_OK;
        }
    }

#endif

    return NGX_DECLINED;
}


/*
 * One Cookie header's "name=value" pairs, separated by ';' (RFC 6265
 * 5.4, as nginx 1.29.6's own cookie parser splits them: a ',' is part
 * of a value), spaces and tabs around a pair skipped and, as nginx
 * does, spaces around the '='. The value runs to the next ';'.
 */
static ngx_int_t
ngx_http_linegate_cookie_find(ngx_str_t *line, ngx_str_t *name,
    ngx_str_t *value)
{
    u_char  *p, *v, *end;

    p = line->data;
    end = p + line->len;

    while (p < end) {

        while (p < end && (*p == ' ' || *p == '\t')) {
            p++;
        }

        if ((size_t) (end - p) > name->len
            && ngx_memcmp(p, name->data, name->len) == 0)
        {
            v = p + name->len;

            while (v < end && *v == ' ') {
                v++;
            }

            if (v < end && *v == '=') {
                v++;

                while (v < end && *v == ' ') {
                    v++;
                }

                value->data = v;

                while (v < end && *v != ';') {
                    v++;
                }

                value->len = v - value->data;

                return NGX_OK;
            }
        }

        p = ngx_strlchr(p, end, ';');

        if (p == NULL) {
            break;
        }

        p++;
    }

    return NGX_DECLINED;
}


/*
 * An API key seen within linegate_api_key_cache: p->value is its
 * workspace (the script checks it in 'w' mode, no GET lg:apikey:*).
 * Only keys the store resolved are remembered; an entry is not renewed
 * by its hits, so a revoked key is refused once its entry expires, or at
 * once when it was revoked through this nginx's operator API (epoch).
 * An entry past either is a miss; its workspace is left in p->stale for
 * the GET by id, which checks it with the store in its own round trip.
 *
 * With a pushed time (linegate_api_key_cache's second), an API key
 * learned while the worker's subscription was live is kept beyond the
 * plain time, up to the pushed one, as long as the subscription has
 * stayed up since (same generation) and is live now: a revocation
 * (op_key_revoke publishes its digest) drops the entry at once, and a
 * revocation not heard of within a second means the link is not live,
 * so the plain time rules again. Provisioning credentials keep the
 * plain time (their entries are not keyed by what Redis knows).
 */
static ngx_int_t
ngx_http_linegate_apikey_cached(ngx_http_request_t *r,
    ngx_http_linegate_principal_t *p)
{
    ngx_str_t                         ws;
    ngx_http_linegate_cache_entry_t  *e;

    ngx_str_null(&p->stale);

    e = ngx_http_linegate_cache_find(&ngx_http_linegate_apikey_cache,
                                     p->digest);
    if (e == NULL) {
        return NGX_DECLINED;
    }

    if (ngx_http_linegate_pstr(r->pool, &ws, e->value, e->len[0]) == NULL) {
        return NGX_ERROR;
    }

    if (!ngx_http_linegate_apikey_fresh(
             ngx_http_get_module_main_conf(r, ngx_http_linegate_module),
             e, p))
    {
        p->stale = ws;
        return NGX_DECLINED;
    }

    p->value = ws;
    p->cached = 1;

    return NGX_OK;
}


void
ngx_http_linegate_auth_learn(ngx_http_request_t *r,
    ngx_http_linegate_principal_t *p, ngx_str_t *ws)
{
    ngx_uint_t                        pushed;
    ngx_http_linegate_cache_entry_t  *e;
    ngx_http_linegate_main_conf_t    *lmcf;

    if ((p->kind != NGX_HTTP_LINEGATE_AUTH_API_KEY
         && p->kind != NGX_HTTP_LINEGATE_AUTH_SB_KEY)
        || p->cached || ws->len == 0)
    {
        return;
    }

    lmcf = ngx_http_get_module_main_conf(r, ngx_http_linegate_module);

    /*
     * pushed: no revocation reached the worker since the lookup was sent
     * (the same sequence), and the link is live now
     */
    pushed = lmcf->apikey_cache_pushed
             && p->kind == NGX_HTTP_LINEGATE_AUTH_API_KEY
             && p->seq == ngx_http_linegate_redis_pubsub_seq()
             && ngx_http_linegate_redis_pubsub_live();

    if (ngx_http_linegate_cache_put(&ngx_http_linegate_apikey_cache,
                                    p->digest, p->asked,
                                    p->asked
                                    + (pushed ? lmcf->apikey_cache_pushed
                                              : lmcf->apikey_cache_ttl),
                                    p->epoch,
                                    pushed ? NGX_HTTP_LINEGATE_APIKEY_PUSHED
                                           : 0,
                                    ws->data, ws->len, NULL, 0)
        != 0
        || !pushed)
    {
        return;
    }

    e = ngx_http_linegate_cache_find(&ngx_http_linegate_apikey_cache,
                                     p->digest);
    if (e != NULL) {
        e->gen = ngx_http_linegate_redis_pubsub_gen();
    }
}


void
ngx_http_linegate_auth_unlearn(ngx_http_linegate_principal_t *p)
{
    if (p->kind == NGX_HTTP_LINEGATE_AUTH_API_KEY) {
        ngx_http_linegate_cache_drop(&ngx_http_linegate_apikey_cache,
                                     p->digest);
    }
}


/*
 * An entry is fresh for the current epoch until its expiry; one kept
 * for the pushed time, past its plain time (it was stored at expires -
 * pushed), only while the subscription is the one it was learned in
 * and live.
 */
static ngx_uint_t
ngx_http_linegate_apikey_fresh(ngx_http_linegate_main_conf_t *lmcf,
    ngx_http_linegate_cache_entry_t *e, ngx_http_linegate_principal_t *p)
{
    if (!ngx_http_linegate_cache_fresh(e, ngx_current_msec, p->epoch)) {
        return 0;
    }

    if (!(e->flags & NGX_HTTP_LINEGATE_APIKEY_PUSHED)) {
        return 1;
    }

    if ((ngx_msec_int_t) (e->expires - lmcf->apikey_cache_pushed
                          + lmcf->apikey_cache_ttl - ngx_current_msec)
        > 0)
    {
        return 1;
    }

    return e->gen == ngx_http_linegate_redis_pubsub_gen()
           && ngx_http_linegate_redis_pubsub_live();
}


/* a revoked key's digest (sha256hex) published: forgotten at once */
static void
ngx_http_linegate_apikey_revoked(u_char *data, size_t len)
{
    u_char     key[32];
    ngx_int_t  n;
    ngx_uint_t i;

    if (len != 64) {
        return;
    }

    for (i = 0; i < 32; i++) {
        n = ngx_hextoi(data + 2 * i, 2);
        if (n == NGX_ERROR) {
            return;
        }

        key[i] = (u_char) n;
    }

    ngx_http_linegate_cache_drop(&ngx_http_linegate_apikey_cache, key);
}


ngx_int_t
ngx_http_linegate_auth_init_process(ngx_cycle_t *cycle,
    ngx_http_linegate_main_conf_t *lmcf,
    ngx_http_linegate_redis_pubsub_handler_pt *revoked)
{
    void    *mem;
    size_t   size;

    *revoked = NULL;

    if (lmcf->clerk_keys != NULL) {
        size = ngx_http_linegate_cache_bytes(
                   NGX_HTTP_LINEGATE_JWT_CACHE_SIZE,
                   2 * NGX_HTTP_LINEGATE_CACHED_ID_MAX);

        mem = ngx_calloc(size, cycle->log);
        if (mem == NULL) {
            return NGX_ERROR;
        }

        ngx_http_linegate_cache_init(&ngx_http_linegate_jwt_cache, mem,
                                     NGX_HTTP_LINEGATE_JWT_CACHE_SIZE,
                                     2 * NGX_HTTP_LINEGATE_CACHED_ID_MAX);
    }

    /*
     * only the Lines API (API keys) and the Provisioning API (key id and
     * secret) fill it: up to ~120 MB a worker allocated for nothing
     * where only linegate_limit, operator or webhooks were served
     */
    if (lmcf->apikey_cache_ttl == 0 || lmcf->apikey_cache_size < 2
        || !(lmcf->uses_lines || lmcf->uses_provision))
    {
        return NGX_OK;
    }

    size = ngx_http_linegate_cache_bytes(lmcf->apikey_cache_size,
                                         NGX_HTTP_LINEGATE_CACHED_ID_MAX);

    mem = ngx_calloc(size, cycle->log);
    if (mem == NULL) {
        return NGX_ERROR;
    }

    ngx_http_linegate_cache_init(&ngx_http_linegate_apikey_cache, mem,
                                 lmcf->apikey_cache_size,
                                 NGX_HTTP_LINEGATE_CACHED_ID_MAX);

    /*
     * revocations pushed: only where API keys are taken (the Lines API);
     * no subscriber connection otherwise
     */
    if (lmcf->apikey_cache_pushed && lmcf->uses_lines) {
        *revoked = ngx_http_linegate_apikey_revoked;
    }

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
    return token->len >= NGX_HTTP_LINEGATE_API_KEY_MIN
           && token->len <= NGX_HTTP_LINEGATE_API_KEY_MAX
           && ngx_strncmp(token->data, "tuco_", 5) == 0
           && ngx_http_linegate_chars_are(token->data + 5, token->len - 5,
                                          NGX_HTTP_LINEGATE_CHARS_ID);
}


static ngx_int_t
ngx_http_linegate_clerk(ngx_http_request_t *r, ngx_http_linegate_ctx_t *ctx,
    ngx_str_t *token, ngx_http_linegate_principal_t *p)
{
    u_char                            *org, *sub;
    size_t                             org_len, sub_len;
    time_t                             now;
    ngx_uint_t                         has_org;
    ngx_http_linegate_cache_entry_t   *e;
    ngx_http_linegate_jwt_verified_t   fresh;
    ngx_http_linegate_main_conf_t     *lmcf;

    lmcf = ngx_http_get_module_main_conf(r, ngx_http_linegate_module);

    if (lmcf->clerk_keys == NULL) {
        return ngx_http_linegate_unauthorized(r, ctx,
                                              "no Clerk key configured");
    }

    if (token->len > NGX_HTTP_LINEGATE_TOKEN_MAX) {
        return ngx_http_linegate_unauthorized(r, ctx, "token too long");
    }

    if (ngx_http_linegate_sha256(token->data, token->len, NULL, 0,
                                 fresh.digest)
        != 0)
    {
        return ngx_http_linegate_refused(ctx, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                        NULL, NULL);
    }

    /*
     * a remembered token is still checked against its expiry: an entry
     * is fresh while now < exp + leeway, as a verification would say
     */
    now = ngx_time();
    e = ngx_http_linegate_cache_find(&ngx_http_linegate_jwt_cache,
                                     fresh.digest);

    if (e != NULL && !ngx_http_linegate_cache_fresh(e, (uintptr_t) now, 0)) {
        e = NULL;
    }

    ngx_http_linegate_metrics_cache("clerk", e != NULL);

    if (e == NULL) {
        if (ngx_http_linegate_clerk_verify(r, token, &fresh) != NGX_OK) {
            return ngx_http_linegate_unauthorized(r, ctx, NULL);
        }

        has_org = fresh.has_org;
        org = fresh.org;
        org_len = fresh.org_len;

        /*
         * the organization becomes the workspace, and so part of Redis
         * keys: one a workspace could not be named is refused, not cached
         */
        if (has_org
            && !ngx_http_linegate_tenant_id_valid(org, org_len))
        {
            return ngx_http_linegate_unauthorized(r, ctx,
                       "Clerk organization id is not a workspace id");
        }
        sub = fresh.sub;
        sub_len = fresh.sub_len;

        /*
         * ids too long for an entry are served, not remembered; exp is at
         * most NGX_HTTP_LINEGATE_JWT_EXP_MAX, so exp + leeway fits
         */
        if (org_len <= NGX_HTTP_LINEGATE_CACHED_ID_MAX
            && sub_len <= NGX_HTTP_LINEGATE_CACHED_ID_MAX)
        {
            (void) ngx_http_linegate_cache_put(&ngx_http_linegate_jwt_cache,
                       fresh.digest, (uintptr_t) now,
                       (uintptr_t) (fresh.exp + lmcf->clerk_leeway), 0,
                       has_org ? NGX_HTTP_LINEGATE_JWT_HAS_ORG : 0,
                       org, org_len, sub, sub_len);
        }

    } else {
        has_org = e->flags & NGX_HTTP_LINEGATE_JWT_HAS_ORG;
        org = e->value;
        org_len = e->len[0];
        sub = ngx_http_linegate_cache_value2(e);
        sub_len = e->len[1];
    }

    if (!has_org) {
        ngx_str_set(&ctx->outcome, "no_active_workspace");
        return ngx_http_linegate_refused(ctx, NGX_HTTP_BAD_REQUEST, NULL,
                                         "No active workspace");
    }

    if (ngx_http_linegate_pstr(r->pool, &p->value, org, org_len) == NULL
        || ngx_http_linegate_pstr(r->pool, &p->subject, sub, sub_len)
           == NULL)
    {
        return ngx_http_linegate_refused(ctx, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                        NULL, NULL);
    }

    p->kind = NGX_HTTP_LINEGATE_AUTH_CLERK;
    ctx->auth = NGX_HTTP_LINEGATE_AUTH_CLERK;
    ctx->tenant = p->value;

    return NGX_OK;
}


static ngx_int_t
ngx_http_linegate_clerk_verify(ngx_http_request_t *r, ngx_str_t *token,
    ngx_http_linegate_jwt_verified_t *entry)
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
    entry->org_len = ngx_strlen(claims.org);
    entry->sub_len = ngx_strlen(claims.sub);
    ngx_memcpy(entry->org, claims.org, entry->org_len);
    ngx_memcpy(entry->sub, claims.sub, entry->sub_len);

    return NGX_OK;
}


ngx_int_t
ngx_http_linegate_auth_account(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, ngx_http_linegate_principal_t *p,
    ngx_str_t *key_id, ngx_str_t *secret_digest)
{
    u_char                         *digest;
    u_char                          pair[NGX_HTTP_LINEGATE_KEY_ID_MAX + 1];
    ngx_atomic_t                   *epoch;
    ngx_table_elt_t                *id, *secret;

    /*
     * two different values of either header: which pair is meant is
     * unknown, so neither is tried (nginx refuses two Authorization
     * headers the same way)
     */
    if (ngx_http_linegate_find_header_once(&r->headers_in.headers,
                                           "sb-api-key-id", 1, &id)
        == NGX_ERROR
        || ngx_http_linegate_find_header_once(&r->headers_in.headers,
                                              "sb-api-secret-key", 1,
                                              &secret)
           == NGX_ERROR)
    {
        return ngx_http_linegate_unauthorized(r, ctx,
                                              "ambiguous credentials");
    }

    if (id == NULL || secret == NULL
        || id->value.len == 0 || id->value.len > NGX_HTTP_LINEGATE_KEY_ID_MAX
        || secret->value.len == 0
        || secret->value.len > NGX_HTTP_LINEGATE_SECRET_MAX)
    {
        return ngx_http_linegate_unauthorized(r, ctx, "missing credentials");
    }

    if (!ngx_http_linegate_chars_are(id->value.data, id->value.len,
                                     NGX_HTTP_LINEGATE_CHARS_ID))
    {
        return ngx_http_linegate_unauthorized(r, ctx, "bad key id");
    }

    *key_id = id->value;
    ctx->auth = NGX_HTTP_LINEGATE_AUTH_SB_KEY;

    if (p != NULL) {
        /*
         * The cache key is the digest of the pair "<key id>\n<secret>"
         * (the id has no newline): a hit proves the secret as well.
         */
        p->kind = NGX_HTTP_LINEGATE_AUTH_SB_KEY;
        p->cached = 0;
        ngx_str_null(&p->subject);

        epoch = ngx_http_linegate_auth_epoch();
        p->epoch = epoch ? *epoch : 0;
        p->asked = ngx_current_msec;
        p->seq = 0;

        ngx_memcpy(pair, id->value.data, id->value.len);
        pair[id->value.len] = '\n';

        if (ngx_http_linegate_sha256(pair, id->value.len + 1,
                                     secret->value.data, secret->value.len,
                                     p->digest)
            != 0)
        {
            return ngx_http_linegate_refused(ctx,
                                            NGX_HTTP_INTERNAL_SERVER_ERROR,
                                            NULL, NULL);
        }

        if (ngx_http_linegate_apikey_cached(r, p) == NGX_OK) {
            ngx_http_linegate_metrics_cache("account", 1);
            return NGX_OK;
        }

        ngx_http_linegate_metrics_cache("account", 0);
    }

    if (secret_digest == NULL) {
        return NGX_OK;
    }

    digest = ngx_pnalloc(r->pool, 65);
    if (digest == NULL) {
        return ngx_http_linegate_refused(ctx, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                        NULL, NULL);
    }

    ngx_http_linegate_sha256_hex(secret->value.data, secret->value.len,
                                 (char *) digest);

    secret_digest->data = digest;
    secret_digest->len = 64;

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
        || !ngx_http_linegate_secret_equal(token.data, token.len,
                                           lmcf->operator_token.data,
                                           lmcf->operator_token.len))
    {
        return ngx_http_linegate_unauthorized(r, ctx, "bad operator token");
    }

    ctx->auth = NGX_HTTP_LINEGATE_AUTH_OPERATOR;

    return NGX_OK;
}


/*
 * An operator call that takes a credential away (a key's revocation, a
 * provisioning credential's rotation): every worker's credential caches
 * forget what they learned before it started, and (bumped again at its
 * end, module.c's cleanup) while it ran. Only such calls, once the token
 * is good: any other write (usage, health, inventory) leaves the caches
 * warm, and anyone who reaches the location could otherwise empty every
 * worker's cache with each request.
 */
void
ngx_http_linegate_auth_forget(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx)
{
    ngx_atomic_t  *epoch;

    epoch = ngx_http_linegate_auth_epoch();

    if (epoch != NULL) {
        (void) ngx_atomic_fetch_add(epoch, 1);
        ctx->bump_epoch = 1;
    }
}


/*
 * The epoch's zone is found through ngx_cycle, never through the
 * request's configuration. Without a master (master_process off) a
 * connection kept across a reload is served on under the old cycle's
 * configuration, and nginx unmaps that cycle's zone when the new one has
 * none (a request then read freed memory: a crash of the one process); a
 * zone the new cycle keeps keeps its address. A worker's cycle is its
 * requests' cycle: the same pointer.
 */
ngx_atomic_t *
ngx_http_linegate_auth_epoch(void)
{
    ngx_http_linegate_main_conf_t  *lmcf;

    lmcf = ngx_http_cycle_get_module_main_conf(ngx_cycle,
                                               ngx_http_linegate_module);

    return lmcf != NULL ? lmcf->apikey_epoch : NULL;
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
        return ngx_http_linegate_refused(ctx, NGX_HTTP_UNAUTHORIZED, NULL,
                                         "Invalid API credentials");
    }

    return ngx_http_linegate_refused(ctx, NGX_HTTP_UNAUTHORIZED, NULL,
                                     "Unauthorized");
}


/* the endpoint answers it: ngx_http_linegate_refuse() (reply.h) */
static ngx_int_t
ngx_http_linegate_refused(ngx_http_linegate_ctx_t *ctx, ngx_uint_t status,
    const char *code, const char *message)
{
    ctx->refusal.status = status;
    ctx->refusal.code = code;
    ctx->refusal.message = message;

    return NGX_DECLINED;
}
