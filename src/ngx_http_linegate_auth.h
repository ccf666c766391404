
/*
 * linegate: who is calling. Every check here is synchronous: API keys and
 * provisioning credentials are reduced to digests that the endpoint's
 * Redis script resolves (one round trip for auth and work together);
 * Clerk tokens are verified locally against the configured keys.
 */


#ifndef _NGX_HTTP_LINEGATE_AUTH_H_INCLUDED_
#define _NGX_HTTP_LINEGATE_AUTH_H_INCLUDED_


#include "ngx_http_linegate_module.h"
#include "ngx_http_linegate_redis_pubsub.h"


typedef struct {
    ngx_uint_t                      kind;   /* NGX_HTTP_LINEGATE_AUTH_* */
    /*
     * API_KEY: sha256hex of the presented key (64 characters), to be
     * resolved by the script through lg:apikey:<digest>; when the key
     * is in the per-worker cache (cached set), its workspace id.
     * CLERK: the workspace id (the token's active organization).
     */
    ngx_str_t                       value;
    ngx_str_t                       subject;  /* CLERK: the user id */
    /*
     * API_KEY: SHA-256 of the key; SB_KEY: of "<key id>\n<secret>";
     * cached: value is its workspace or account
     */
    u_char                          digest[32];
    ngx_uint_t                      cached;
    /*
     * API_KEY, not cached: the workspace of an entry of this key that
     * has expired (or predates an operator write). Only the GET by id
     * uses it, checking it with the store in the same pipeline.
     */
    ngx_str_t                       stale;
    ngx_atomic_uint_t               epoch;    /* of the key caches */
    /* revocations pushed: the subscriber's sequence before the lookup */
    ngx_uint_t                      seq;
    /*
     * when the credential was read, before any Redis step: a learned
     * entry's time counts from here, not from the answer's arrival (a
     * revocation while the answer was on its way is within the time)
     */
    ngx_msec_t                      asked;
} ngx_http_linegate_principal_t;


/*
 * Lines API: "Authorization: Bearer <tuco_ key | Clerk JWT>" or the
 * __session cookie. clerk_only refuses API keys (check-availability).
 * NGX_OK: p is filled in. NGX_DECLINED: ctx->refusal says why (401,
 * 400 "No active workspace", 403, 415 or 500), for the caller to answer
 * (ngx_http_linegate_refuse(), reply.h).
 */
ngx_int_t ngx_http_linegate_auth_workspace(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, ngx_uint_t clerk_only,
    ngx_http_linegate_principal_t *p);

/*
 * The store resolved p's API key to ws, or p's provisioning credentials
 * to an account (the answer of the endpoint's script): remember it for
 * linegate_api_key_cache. Clerk tokens, credentials already cached and
 * unknown ones are not touched.
 */
void ngx_http_linegate_auth_learn(ngx_http_request_t *r,
    ngx_http_linegate_principal_t *p, ngx_str_t *ws);

/*
 * The store no longer vouches for p's API key (its expired entry's
 * workspace, revalidated, no longer lists it): the entry goes, so that
 * the next request with the key is not sent to that workspace again.
 */
void ngx_http_linegate_auth_unlearn(ngx_http_linegate_principal_t *p);

/*
 * Provisioning API: sb-api-key-id and sb-api-secret-key. key_id is the
 * presented id (bounded, [A-Za-z0-9_-]). With p, the per-worker cache is
 * asked first (keyed by the digest of the id and the secret together, so
 * a hit proves the secret): p->cached set, p->value the account.
 * Otherwise, when secret_digest is not NULL, it is set to the sha256hex
 * of the secret, which the script compares in constant time with the
 * stored one. NGX_DECLINED: ctx->refusal says why (401 or 500).
 */
ngx_int_t ngx_http_linegate_auth_account(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, ngx_http_linegate_principal_t *p,
    ngx_str_t *key_id, ngx_str_t *secret_digest);

/*
 * a worker starts: the key cache of linegate_api_key_cache_size;
 * *revoked, the subscriber's handler of revocations (NULL: none pushed)
 */
ngx_int_t ngx_http_linegate_auth_init_process(ngx_cycle_t *cycle,
    ngx_http_linegate_main_conf_t *lmcf,
    ngx_http_linegate_redis_pubsub_handler_pt *revoked);

/*
 * operator API: Bearer token, constant time. NGX_DECLINED: a 401 in
 * ctx->refusal.
 */
ngx_int_t ngx_http_linegate_auth_operator(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx);
/*
 * an operator call that takes a credential away: every worker's
 * credential caches forget what they learned, before and while it runs
 */
void ngx_http_linegate_auth_forget(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx);

/*
 * The key caches' epoch in the running cycle's zone, NULL: none (a
 * request's own configuration may be an older cycle's, see auth.c)
 */
ngx_atomic_t *ngx_http_linegate_auth_epoch(void);


#endif /* _NGX_HTTP_LINEGATE_AUTH_H_INCLUDED_ */
