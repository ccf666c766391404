
/*
 * Fuzz target: request header values and path ids, as the module reads
 * them.  Input: up to five values separated by newlines:
 *
 *   1. Authorization      ngx_http_linegate_bearer(), then
 *                         ngx_http_linegate_is_api_key() on the token
 *   2. sb-api-key-id      ngx_http_linegate_auth_account() (with 3.)
 *   3. sb-api-secret-key
 *   4. Idempotency-Key    ngx_http_linegate_idem_key_valid()
 *   5. a path id          ngx_http_linegate_id_valid() (line requests)
 *                         and ngx_http_linegate_stripe_id_valid()
 *
 * src/ngx_http_linegate_auth.c and src/ngx_http_linegate_idempotency.c
 * are included, so their static parsers run as they are.  Each value is
 * an exact-size copy.  Invariants: what is accepted has the documented
 * shape (re-checked here), a refusal of the credentials is a 401 in
 * ctx->refusal and answers nothing (the endpoint answers it).
 */


#include "fuzz_ngx.h"
#include "ngx_http_linegate_auth.c"
#include "ngx_http_linegate_idempotency.c"
#include "ngx_http_linegate_ids.h"
#include "ngx_http_linegate_stripe.h"


static ngx_str_t
fuzz_next(ngx_http_request_t *r, ngx_str_t *rest)
{
    ngx_str_t  v, tail;

    (void) fuzz_split(rest->data, rest->len, '\n', &v, &tail);
    *rest = tail;

    /* exact size: a read past the value is seen */
    v.data = fuzz_strdup(r, v.data, v.len);

    return v;
}


static int
fuzz_charset(ngx_str_t *s, size_t from, const char *extra)
{
    size_t  i;

    for (i = from; i < s->len; i++) {
        if (!isalnum(s->data[i]) && strchr(extra, s->data[i]) == NULL) {
            return 0;
        }
    }

    return 1;
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ngx_int_t            rc;
    ngx_str_t            rest, auth, id, secret, idem, path, token;
    ngx_str_t            key_id, digest;
    ngx_table_elt_t     *h;
    ngx_http_request_t  *r;

    r = fuzz_request();

    rest.data = (u_char *) data;
    rest.len = size;

    auth = fuzz_next(r, &rest);
    id = fuzz_next(r, &rest);
    secret = fuzz_next(r, &rest);
    idem = fuzz_next(r, &rest);
    path = fuzz_next(r, &rest);

    /* Authorization */
    h = fuzz_header(r, "Authorization", auth.data, auth.len);
    r->headers_in.authorization = h;

    if (ngx_http_linegate_bearer(r, &token) == NGX_OK) {
        if (token.len == 0 || token.data[0] == ' '
            || token.data + token.len != auth.data + auth.len)
        {
            __builtin_trap();
        }

        if (ngx_http_linegate_is_api_key(&token)
            && (token.len < NGX_HTTP_LINEGATE_API_KEY_MIN
                || ngx_strncmp(token.data, "tuco_", 5) != 0
                || !fuzz_charset(&token, 5, "-_")))
        {
            __builtin_trap();
        }
    }

    /* sb-api-key-id, sb-api-secret-key */
    fuzz_header(r, "sb-api-key-id", id.data, id.len);
    fuzz_header(r, "sb-api-secret-key", secret.data, secret.len);

    rc = ngx_http_linegate_auth_account(r, &fuzz_ctx, NULL, &key_id, &digest);

    if (rc == NGX_OK) {
        if (fuzz_answer.calls != 0 || key_id.len == 0
            || !fuzz_charset(&key_id, 0, "-_") || digest.len != 64
            || !fuzz_charset(&digest, 0, ""))
        {
            __builtin_trap();
        }

    } else if (fuzz_answer.calls != 0
               || fuzz_ctx.refusal.status != NGX_HTTP_UNAUTHORIZED)
    {
        /* a refusal is returned in the ctx, the endpoint answers it */
        __builtin_trap();
    }

    /* Idempotency-Key */
    if (ngx_http_linegate_idem_key_valid(&idem)
        && (idem.len == 0 || idem.len > NGX_HTTP_LINEGATE_IDEM_KEY_MAX))
    {
        __builtin_trap();
    }

    /* path ids */
    if (ngx_http_linegate_id_valid(&path)
        && (path.len != NGX_HTTP_LINEGATE_ID_LEN
            || !fuzz_charset(&path, 0, "")))
    {
        __builtin_trap();
    }

    if (ngx_http_linegate_stripe_id_valid(&path)
        && (path.len == 0 || !fuzz_charset(&path, 0, "_")))
    {
        __builtin_trap();
    }

    fuzz_request_done(r);

    return 0;
}
