
/*
 * Fuzz target: request header values and path ids, as the module reads
 * them.  Input: up to nine values separated by newlines:
 *
 *   1. Authorization      ngx_http_linegate_bearer(), then
 *                         ngx_http_linegate_is_api_key() on the token
 *   2. sb-api-key-id      ngx_http_linegate_auth_account() (with 3.)
 *   3. sb-api-secret-key
 *   4. Idempotency-Key    ngx_http_linegate_idem_key_valid()
 *   5. a path id          ngx_http_linegate_id_valid() (line requests)
 *                         and ngx_http_linegate_stripe_id_valid()
 *   6. Cookie             one header per '\r'-separated part (none when
 *                         empty, at most 3)
 *   7. Content-Type       (none when empty)
 *   8. Origin             one header per '\r'-separated part (none when
 *                         empty, at most 3)
 *   9. two bytes          the method (GET, HEAD, POST, PUT, PATCH,
 *                         DELETE: the first byte modulo 6); flags: 1 no
 *                         Authorization header, 2 the authorized
 *                         parties configured, 4 a Clerk-only API
 *
 * Then ngx_http_linegate_auth_workspace() on the whole request: a bearer
 * token (API key or Clerk), else the __session cookie and, for a write,
 * the cookie write gate (cookie_write: the Content-Type and the Origin
 * list).  No Clerk key is configured here, so a Clerk token or cookie
 * ends in a 401 once the gate let it through (t/fuzz/fuzz_jwt.c fuzzes
 * the token itself); the cookie is found by linegate's own parser
 * (session_cookie, cookie_find), whose value is re-checked: it lies in
 * one Cookie header, after exactly "__session" (case-sensitive, RFC
 * 6265: "__SESSION" is another cookie) at the start of a pair, and holds
 * no ';'.
 *
 * src/ngx_http_linegate_auth.c and src/ngx_http_linegate_idempotency.c
 * are included, so their static parsers run as they are.  Each value is
 * an exact-size copy.  Invariants: what is accepted has the documented
 * shape (re-checked here), a refusal of the credentials is a 401 in
 * ctx->refusal and answers nothing (the endpoint answers it); a refused
 * cookie write is a 415 exactly when the Content-Type is not
 * application/json (docs/lines-api.md, "Cookie-authenticated writes"),
 * else a 403 exactly when the authorized parties are configured and the
 * request has two Origins or one not among them.
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


#define FUZZ_NO_AUTHORIZATION  0x01
#define FUZZ_AZP               0x02
#define FUZZ_CLERK_ONLY        0x04


static char        *fuzz_azp_list[] = {
    "https://app.example.com", "http://localhost:3000"
};
static ngx_array_t  fuzz_azp = {
    fuzz_azp_list, 2, sizeof(char *), 2, NULL
};
static ngx_uint_t   fuzz_methods[] = {
    NGX_HTTP_GET, NGX_HTTP_HEAD, NGX_HTTP_POST, NGX_HTTP_PUT,
    NGX_HTTP_PATCH, NGX_HTTP_DELETE
};


/* up to max headers, one a '\r'-separated part of v (none if v is empty) */
static ngx_uint_t
fuzz_headers_of(ngx_http_request_t *r, const char *name, ngx_str_t *v,
    ngx_table_elt_t **h, ngx_uint_t max)
{
    ngx_uint_t  n;
    ngx_str_t   rest, part;

    rest = *v;

    for (n = 0; rest.len && n < max; n++) {
        (void) fuzz_split(rest.data, rest.len, '\r', &part, &rest);
        h[n] = fuzz_header(r, name, fuzz_strdup(r, part.data, part.len),
                           part.len);
    }

    return n;
}


/*
 * A value found for the cookie "__session": within one of the headers,
 * no ';' in it, and before it (spaces and the '=' skipped back)
 * exactly "__session" at the start of the header or of a pair (after a
 * ';' and spaces or tabs).
 */
static int
fuzz_cookie_named(ngx_table_elt_t **h, ngx_uint_t n, ngx_str_t *value)
{
    u_char      *start, *p;
    ngx_uint_t   i;

    for (i = 0; i < n; i++) {
        start = h[i]->value.data;

        if (value->data >= start
            && value->data + value->len <= start + h[i]->value.len)
        {
            break;
        }
    }

    if (i == n || memchr(value->data, ';', value->len) != NULL) {
        return 0;
    }

    p = value->data;

    while (p > start && p[-1] == ' ') {
        p--;
    }

    if (p == start || *--p != '=') {
        return 0;
    }

    while (p > start && p[-1] == ' ') {
        p--;
    }

    if (p - start < 9 || memcmp(p - 9, "__session", 9) != 0) {
        return 0;
    }

    for (p -= 9; p > start && (p[-1] == ' ' || p[-1] == '\t'); p--) {
        /* void */
    }

    return p == start || p[-1] == ';';
}


/* the rule of docs/lines-api.md, written again */
static int
fuzz_json_type(ngx_table_elt_t *ct)
{
    u_char  c;

    if (ct == NULL || ct->value.len < 16
        || strncasecmp((char *) ct->value.data, "application/json", 16) != 0)
    {
        return 0;
    }

    c = ct->value.len > 16 ? ct->value.data[16] : ';';

    return c == ';' || c == ' ' || c == '\t';
}


static int
fuzz_origin_listed(ngx_table_elt_t *origin)
{
    ngx_uint_t  i;

    for (i = 0; i < fuzz_azp.nelts; i++) {
        if (origin->value.len == strlen(fuzz_azp_list[i])
            && strncasecmp((char *) origin->value.data, fuzz_azp_list[i],
                           origin->value.len) == 0)
        {
            return 1;
        }
    }

    return 0;
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
    u_char                          flags;
    ngx_int_t                       rc;
    ngx_str_t                       rest, auth, id, secret, idem, path, token;
    ngx_str_t                       key_id, digest, cookie, ctype, origin;
    ngx_str_t                       control, session;
    ngx_uint_t                      ncookies, norigins, write, gate;
    ngx_table_elt_t                *h, *cookies[3], *origins[3];
    ngx_http_request_t             *r;
    ngx_http_linegate_principal_t   p;

    ngx_str_t  session_name = ngx_string("__session");

    r = fuzz_request();

    rest.data = (u_char *) data;
    rest.len = size;

    auth = fuzz_next(r, &rest);
    id = fuzz_next(r, &rest);
    secret = fuzz_next(r, &rest);
    idem = fuzz_next(r, &rest);
    path = fuzz_next(r, &rest);
    cookie = fuzz_next(r, &rest);
    ctype = fuzz_next(r, &rest);
    origin = fuzz_next(r, &rest);
    control = fuzz_next(r, &rest);

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

    /* the whole request: ngx_http_linegate_auth_workspace() */
    flags = control.len > 1 ? control.data[1] : 0;
    r->method = fuzz_methods[control.len ? control.data[0] % 6 : 0];
    write = !(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD));

    if (flags & FUZZ_NO_AUTHORIZATION) {
        r->headers_in.authorization = NULL;
    }

    ncookies = fuzz_headers_of(r, "Cookie", &cookie, cookies, 3);
    r->headers_in.cookies.elts = cookies;
    r->headers_in.cookies.nelts = ncookies;
    r->headers_in.cookies.size = sizeof(ngx_table_elt_t *);
    r->headers_in.cookies.nalloc = 3;
    r->headers_in.cookies.pool = r->pool;

    if (ctype.len) {
        r->headers_in.content_type = fuzz_header(r, "Content-Type",
                                                 ctype.data, ctype.len);
    }

    norigins = fuzz_headers_of(r, "Origin", &origin, origins, 3);

    fuzz_lmcf.clerk_azp = (flags & FUZZ_AZP) ? &fuzz_azp : NULL;
    fuzz_lmcf.clerk_keys = NULL;
    ngx_memzero(&fuzz_ctx.refusal, sizeof(fuzz_ctx.refusal));
    ngx_memzero(&p, sizeof(ngx_http_linegate_principal_t));

    rc = ngx_http_linegate_auth_workspace(r, &fuzz_ctx,
                                          (flags & FUZZ_CLERK_ONLY) ? 1 : 0,
                                          &p);

    /* the cookie's path: no Authorization, a __session cookie */
    gate = r->headers_in.authorization == NULL
           && ngx_http_linegate_session_cookie(r, &session_name, &session)
              == NGX_OK;

    if (gate && !fuzz_cookie_named(cookies, ncookies, &session)) {
        __builtin_trap();
    }

    if (fuzz_answer.calls != 0) {
        __builtin_trap();
    }

    if (rc == NGX_OK) {
        /* only an API key is accepted here (no Clerk key configured) */
        if (r->headers_in.authorization == NULL
            || ngx_http_linegate_bearer(r, &token) != NGX_OK
            || !ngx_http_linegate_is_api_key(&token)
            || (flags & FUZZ_CLERK_ONLY)
            || p.kind != NGX_HTTP_LINEGATE_AUTH_API_KEY
            || p.value.len != 64 || !fuzz_charset(&p.value, 0, ""))
        {
            __builtin_trap();
        }

    } else if (gate && write && !fuzz_json_type(r->headers_in.content_type))
    {
        if (fuzz_ctx.refusal.status != NGX_HTTP_UNSUPPORTED_MEDIA_TYPE) {
            __builtin_trap();
        }

    } else if (gate && write && (flags & FUZZ_AZP)
               && (norigins > 1
                   || (norigins == 1 && !fuzz_origin_listed(origins[0]))))
    {
        if (fuzz_ctx.refusal.status != NGX_HTTP_FORBIDDEN) {
            __builtin_trap();
        }

    } else if (fuzz_ctx.refusal.status != NGX_HTTP_UNAUTHORIZED
               && fuzz_ctx.refusal.status != NGX_HTTP_INTERNAL_SERVER_ERROR)
    {
        /* a bearer or a cookie the gate let through: not verified here */
        __builtin_trap();
    }

    fuzz_request_done(r);

    return 0;
}
