
/*
 * linegate: RS256 verification of Clerk session tokens (SPEC section 4).
 *
 * Pure C on top of OpenSSL 3 and jansson: no nginx headers, so it can be
 * unit-tested outside nginx (t/unit/test_jwt.c).
 */


#ifndef _NGX_HTTP_LINEGATE_JWT_H_INCLUDED_
#define _NGX_HTTP_LINEGATE_JWT_H_INCLUDED_


#include <limits.h>
#include <stddef.h>


/* longest token accepted, in bytes */
#define NGX_HTTP_LINEGATE_JWT_MAX_LEN        8192

/* largest key file accepted */
#define NGX_HTTP_LINEGATE_JWT_MAX_FILE       (1024 * 1024)

#define NGX_HTTP_LINEGATE_JWT_MIN_BITS       2048

/* OpenSSL's own ceiling for RSA verification */
#define NGX_HTTP_LINEGATE_JWT_MAX_BITS       16384

/*
 * the latest "exp" claims report: a caller may add a leeway (seconds)
 * to it without overflowing a long
 */
#define NGX_HTTP_LINEGATE_JWT_EXP_MAX        (LONG_MAX / 2)

/*
 * Clerk signs several kinds of token with the instance's key and tells
 * them apart by the header's "cat" (clerk_go's pkg/jwt): a session token,
 * a JWT template's token (for another service), a machine (M2M) token.
 * Instances with use_ignore_jwt_cat put the "ignore" category on all.
 */
#define NGX_HTTP_LINEGATE_JWT_SESSION_CAT    "cl_B7d4PD111AAA"
#define NGX_HTTP_LINEGATE_JWT_MACHINE_CAT    "cl_B7d4PD333AAA"
#define NGX_HTTP_LINEGATE_JWT_IGNORE_CAT     "cl_I7d4PD111III"

/* the "sub" of Clerk's machine tokens starts with it */
#define NGX_HTTP_LINEGATE_JWT_MACHINE_SUB    "mch_"


/* opaque set of (kid, RSA public key); read-only once loaded */
typedef struct ngx_http_linegate_jwt_keys_s  ngx_http_linegate_jwt_keys_t;


typedef struct {
    const char          *issuer;    /* NULL: "iss" not checked */
    const char *const   *azp;       /* authorized parties */
    size_t               nazp;      /* 0: "azp" not checked */
    long                 leeway;    /* seconds, for exp, nbf and iat */
    long                 now;       /* unix time */
} ngx_http_linegate_jwt_params_t;


typedef struct {
    char                 sub[256];
    char                 org[256];  /* active organization, "" if none */
    int                  has_org;
    long                 exp;       /* <= NGX_HTTP_LINEGATE_JWT_EXP_MAX */
    char                 sid[128];  /* "" when absent or too long */
} ngx_http_linegate_jwt_claims_t;


/*
 * Reads a JWKS (JSON) or PEM public key file.  NULL on failure, with a
 * message naming the file and the problem in err.
 */
ngx_http_linegate_jwt_keys_t *ngx_http_linegate_jwt_keys_load(
    const char *path, char *err, size_t errlen);

void ngx_http_linegate_jwt_keys_free(ngx_http_linegate_jwt_keys_t *keys);

/*
 * 0 when the token is valid (claims in out), -1 when refused.  *reason is
 * always set to a static string that is safe to log: it never contains
 * any part of the token.
 */
int ngx_http_linegate_jwt_verify(const ngx_http_linegate_jwt_keys_t *keys,
    const char *token, size_t len, const ngx_http_linegate_jwt_params_t *p,
    ngx_http_linegate_jwt_claims_t *out, const char **reason);


#endif /* _NGX_HTTP_LINEGATE_JWT_H_INCLUDED_ */
