
/*
 * linegate: RS256 verification of Clerk session tokens (SPEC section 4).
 *
 * Keys come from a JWKS or PEM file read at configuration load; tokens
 * are checked without any network access.
 */


/* open(), O_CLOEXEC, fdopen() under t/unit's -std=c99 -pedantic too */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

#include "ngx_http_linegate_crypto.h"
#include "ngx_http_linegate_jwt.h"


#define NGX_HTTP_LINEGATE_JWT_KID_MAX   255


typedef struct {
    char                         *kid;      /* NULL: matches any token kid */
    size_t                        kidlen;
    EVP_PKEY                     *pkey;
} ngx_http_linegate_jwt_key_t;


struct ngx_http_linegate_jwt_keys_s {
    ngx_http_linegate_jwt_key_t  *key;
    size_t                        nkeys;
    size_t                        nalloc;
};


/* a token split at its dots, segments decoded into one buffer */
typedef struct {
    const char                   *signing_input;   /* "header.payload" */
    size_t                        signing_len;
    unsigned char                *buf;
    unsigned char                *hdr;
    size_t                        hdrlen;
    unsigned char                *pay;
    size_t                        paylen;
    unsigned char                *sig;
    size_t                        siglen;
} ngx_http_linegate_jwt_parts_t;


static void ngx_http_linegate_jwt_error(char *err, size_t errlen,
    const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
static char *ngx_http_linegate_jwt_read_file(const char *path, size_t *len,
    char *err, size_t errlen);
static int ngx_http_linegate_jwt_load_pem(ngx_http_linegate_jwt_keys_t *keys,
    const char *path, const char *data, size_t len, char *err,
    size_t errlen);
static int ngx_http_linegate_jwt_pem_block(ngx_http_linegate_jwt_keys_t *keys,
    const char *path, BIO *bio, char *err, size_t errlen);
static int ngx_http_linegate_jwt_load_jwks(
    ngx_http_linegate_jwt_keys_t *keys, const char *path, const char *data,
    size_t len, char *err, size_t errlen);
static int ngx_http_linegate_jwt_load_jwk(ngx_http_linegate_jwt_keys_t *keys,
    const char *path, json_t *jwk, size_t i, char *err, size_t errlen);
static int ngx_http_linegate_jwt_jwk_meta(const char *path,
    const char *label, json_t *jwk, char *err, size_t errlen);
static BIGNUM *ngx_http_linegate_jwt_jwk_bn(json_t *jwk, const char *name);
static EVP_PKEY *ngx_http_linegate_jwt_rsa_from_bn(BIGNUM *n, BIGNUM *e);
static int ngx_http_linegate_jwt_add_key(ngx_http_linegate_jwt_keys_t *keys,
    const char *path, const char *label, const char *kid, EVP_PKEY *pkey,
    char *err, size_t errlen);
static int ngx_http_linegate_jwt_check_key(const char *path,
    const char *label, EVP_PKEY *pkey, char *err, size_t errlen);
static int ngx_http_linegate_jwt_split(const char *token, size_t len,
    ngx_http_linegate_jwt_parts_t *parts);
static int ngx_http_linegate_jwt_decode(const char *in, size_t len,
    unsigned char **pos, unsigned char *end, unsigned char **out,
    size_t *outlen);
static json_t *ngx_http_linegate_jwt_parse(const unsigned char *buf,
    size_t len);
static const char *ngx_http_linegate_jwt_check_header(json_t *hdr,
    const char **kid, size_t *kidlen);
static const char *ngx_http_linegate_jwt_check_signature(
    const ngx_http_linegate_jwt_keys_t *keys, const char *kid, size_t kidlen,
    const ngx_http_linegate_jwt_parts_t *parts);
static int ngx_http_linegate_jwt_rs256(EVP_PKEY *pkey,
    const ngx_http_linegate_jwt_parts_t *parts);
static const char *ngx_http_linegate_jwt_check_kind(json_t *hdr);
static const char *ngx_http_linegate_jwt_check_claims(json_t *pay,
    const ngx_http_linegate_jwt_params_t *p,
    ngx_http_linegate_jwt_claims_t *out);
static int ngx_http_linegate_jwt_number(json_t *obj, const char *name,
    double *v);
static const char *ngx_http_linegate_jwt_check_times(json_t *pay,
    const ngx_http_linegate_jwt_params_t *p, double *exp);
static const char *ngx_http_linegate_jwt_check_parties(json_t *pay,
    const ngx_http_linegate_jwt_params_t *p);
static const char *ngx_http_linegate_jwt_check_subject(json_t *pay,
    ngx_http_linegate_jwt_claims_t *out);
static void ngx_http_linegate_jwt_copy_org(json_t *pay,
    ngx_http_linegate_jwt_claims_t *out);
static int ngx_http_linegate_jwt_string_is(json_t *v, const char *s);
static int ngx_http_linegate_jwt_string_nocase(json_t *v, const char *s);
static int ngx_http_linegate_jwt_copy(json_t *v, char *dst, size_t size);
static long ngx_http_linegate_jwt_clamp(double v);


ngx_http_linegate_jwt_keys_t *
ngx_http_linegate_jwt_keys_load(const char *path, char *err, size_t errlen)
{
    int                            rc;
    char                          *data;
    size_t                         len, i;
    ngx_http_linegate_jwt_keys_t  *keys;

    if (err != NULL && errlen > 0) {
        err[0] = '\0';
    }

    data = ngx_http_linegate_jwt_read_file(path, &len, err, errlen);
    if (data == NULL) {
        return NULL;
    }

    keys = calloc(1, sizeof(ngx_http_linegate_jwt_keys_t));
    if (keys == NULL) {
        ngx_http_linegate_jwt_error(err, errlen, "%s: out of memory", path);
        free(data);
        return NULL;
    }

    for (i = 0; i < len; i++) {
        if (data[i] != ' ' && data[i] != '\t' && data[i] != '\r'
            && data[i] != '\n')
        {
            break;
        }
    }

    if (len - i >= 11 && memcmp(data + i, "-----BEGIN ", 11) == 0) {
        rc = ngx_http_linegate_jwt_load_pem(keys, path, data, len, err,
                                            errlen);

    } else if (i < len && data[i] == '{') {
        rc = ngx_http_linegate_jwt_load_jwks(keys, path, data, len, err,
                                             errlen);

    } else {
        ngx_http_linegate_jwt_error(err, errlen,
                                    "%s: neither a JWKS (JSON) nor a PEM "
                                    "public key file", path);
        rc = -1;
    }

    free(data);

    if (rc != 0) {
        ngx_http_linegate_jwt_keys_free(keys);
        return NULL;
    }

    return keys;
}


void
ngx_http_linegate_jwt_keys_free(ngx_http_linegate_jwt_keys_t *keys)
{
    size_t  i;

    if (keys == NULL) {
        return;
    }

    for (i = 0; i < keys->nkeys; i++) {
        EVP_PKEY_free(keys->key[i].pkey);
        free(keys->key[i].kid);
    }

    free(keys->key);
    free(keys);
}


int
ngx_http_linegate_jwt_verify(const ngx_http_linegate_jwt_keys_t *keys,
    const char *token, size_t len, const ngx_http_linegate_jwt_params_t *p,
    ngx_http_linegate_jwt_claims_t *out, const char **reason)
{
    size_t                          kidlen;
    json_t                         *hdr, *pay;
    const char                     *why, *kid;
    ngx_http_linegate_jwt_parts_t   parts;

    hdr = NULL;
    pay = NULL;
    parts.buf = NULL;

    memset(out, 0, sizeof(ngx_http_linegate_jwt_claims_t));

    if (len > NGX_HTTP_LINEGATE_JWT_MAX_LEN) {
        why = "token too long";
        goto done;
    }

    why = "malformed";

    if (token == NULL || ngx_http_linegate_jwt_split(token, len, &parts) != 0)
    {
        goto done;
    }

    hdr = ngx_http_linegate_jwt_parse(parts.hdr, parts.hdrlen);
    if (hdr == NULL) {
        goto done;
    }

    why = ngx_http_linegate_jwt_check_header(hdr, &kid, &kidlen);
    if (why != NULL) {
        goto done;
    }

    /* nothing from the payload is read before this succeeds */
    why = ngx_http_linegate_jwt_check_signature(keys, kid, kidlen, &parts);
    if (why != NULL) {
        goto done;
    }

    why = ngx_http_linegate_jwt_check_kind(hdr);
    if (why != NULL) {
        goto done;
    }

    pay = ngx_http_linegate_jwt_parse(parts.pay, parts.paylen);
    if (pay == NULL) {
        why = "malformed";
        goto done;
    }

    why = ngx_http_linegate_jwt_check_claims(pay, p, out);

done:

    json_decref(hdr);
    json_decref(pay);
    free(parts.buf);

    if (why != NULL) {
        /* a refused token must not leave half-filled claims behind */
        memset(out, 0, sizeof(ngx_http_linegate_jwt_claims_t));
        *reason = why;
        return -1;
    }

    *reason = "ok";

    return 0;
}


static void
ngx_http_linegate_jwt_error(char *err, size_t errlen, const char *fmt, ...)
{
    va_list  args;

    if (err == NULL || errlen == 0) {
        return;
    }

    va_start(args, fmt);
    (void) vsnprintf(err, errlen, fmt, args);
    va_end(args);
}


static char *
ngx_http_linegate_jwt_read_file(const char *path, size_t *len, char *err,
    size_t errlen)
{
    int           fd;
    char         *data;
    FILE         *f;
    size_t        n, cap;
    struct stat   st;

    /*
     * Not fopen(): a FIFO blocked the master (nginx -t, a reload) until
     * something wrote to it.  Opened without blocking, and read only if
     * it is a regular file, as the secret files are (module.c).
     */
    fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd == -1) {
        ngx_http_linegate_jwt_error(err, errlen, "%s: cannot open: %s", path,
                                    strerror(errno));
        return NULL;
    }

    if (fstat(fd, &st) == -1) {
        ngx_http_linegate_jwt_error(err, errlen, "%s: cannot stat: %s", path,
                                    strerror(errno));
        close(fd);
        return NULL;
    }

    if (!S_ISREG(st.st_mode)) {
        ngx_http_linegate_jwt_error(err, errlen, "%s: not a regular file",
                                    path);
        close(fd);
        return NULL;
    }

    f = fdopen(fd, "rb");
    if (f == NULL) {
        ngx_http_linegate_jwt_error(err, errlen, "%s: cannot open: %s", path,
                                    strerror(errno));
        close(fd);
        return NULL;
    }

    /* one byte more than allowed tells "exactly 1 MiB" from "larger" */
    cap = NGX_HTTP_LINEGATE_JWT_MAX_FILE + 1;

    data = malloc(cap + 1);
    if (data == NULL) {
        ngx_http_linegate_jwt_error(err, errlen, "%s: out of memory", path);
        fclose(f);
        return NULL;
    }

    *len = 0;

    while (*len < cap && (n = fread(data + *len, 1, cap - *len, f)) > 0) {
        *len += n;
    }

    if (ferror(f)) {
        ngx_http_linegate_jwt_error(err, errlen, "%s: cannot read: %s", path,
                                    strerror(errno));
        goto failed;
    }

    if (*len > NGX_HTTP_LINEGATE_JWT_MAX_FILE) {
        ngx_http_linegate_jwt_error(err, errlen,
                                    "%s: larger than %d bytes", path,
                                    NGX_HTTP_LINEGATE_JWT_MAX_FILE);
        goto failed;
    }

    if (*len == 0) {
        ngx_http_linegate_jwt_error(err, errlen, "%s: empty file", path);
        goto failed;
    }

    fclose(f);
    data[*len] = '\0';

    return data;

failed:

    fclose(f);
    free(data);

    return NULL;
}


/*
 * Every "PUBLIC KEY" block of the file is loaded, without a kid, so an
 * operator may list the old and the new key while rotating.  Any other
 * block (a private key, a certificate) refuses the file: it is almost
 * certainly the wrong file, and a private key does not belong here.
 */

static int
ngx_http_linegate_jwt_load_pem(ngx_http_linegate_jwt_keys_t *keys,
    const char *path, const char *data, size_t len, char *err, size_t errlen)
{
    int             rc;
    BIO            *bio;
    unsigned long   e;

    bio = BIO_new_mem_buf(data, (int) len);
    if (bio == NULL) {
        ngx_http_linegate_jwt_error(err, errlen, "%s: out of memory", path);
        return -1;
    }

    ERR_clear_error();

    while ((rc = ngx_http_linegate_jwt_pem_block(keys, path, bio, err,
                                                 errlen))
           == 1)
    {
        /* next block */
    }

    BIO_free(bio);

    if (rc < 0) {
        ERR_clear_error();
        return -1;
    }

    /* the reader must have stopped because no block was left */
    e = ERR_peek_last_error();
    ERR_clear_error();

    if (ERR_GET_LIB(e) != ERR_LIB_PEM
        || ERR_GET_REASON(e) != PEM_R_NO_START_LINE)
    {
        ngx_http_linegate_jwt_error(err, errlen,
                                    "%s: invalid PEM after %lu good key(s)",
                                    path, (unsigned long) keys->nkeys);
        return -1;
    }

    if (keys->nkeys == 0) {
        ngx_http_linegate_jwt_error(err, errlen,
                                    "%s: no \"-----BEGIN PUBLIC KEY-----\" "
                                    "block", path);
        return -1;
    }

    return 0;
}


/* 1: a key was added, 0: no block left (or a PEM error), -1: refused */

static int
ngx_http_linegate_jwt_pem_block(ngx_http_linegate_jwt_keys_t *keys,
    const char *path, BIO *bio, char *err, size_t errlen)
{
    int                   rc;
    long                  len;
    char                 *name, *header, label[32];
    EVP_PKEY             *pkey;
    unsigned char        *der;
    const unsigned char  *p;

    if (!PEM_read_bio(bio, &name, &header, &der, &len)) {
        return 0;
    }

    (void) snprintf(label, sizeof(label), "key #%lu",
                    (unsigned long) keys->nkeys + 1);

    rc = -1;

    if (strcmp(name, PEM_STRING_PUBLIC) != 0) {
        ngx_http_linegate_jwt_error(err, errlen,
                                    "%s: found a \"%.40s\" block, only "
                                    "\"PUBLIC KEY\" is accepted", path,
                                    name);
        goto done;
    }

    p = der;
    pkey = d2i_PUBKEY(NULL, &p, len);

    if (pkey == NULL || p != der + len) {
        EVP_PKEY_free(pkey);
        ngx_http_linegate_jwt_error(err, errlen,
                                    "%s: %s is not a valid public key",
                                    path, label);
        goto done;
    }

    if (ngx_http_linegate_jwt_add_key(keys, path, label, NULL, pkey, err,
                                      errlen)
        == 0)
    {
        rc = 1;
    }

done:

    OPENSSL_free(name);
    OPENSSL_free(header);
    OPENSSL_free(der);

    return rc;
}


static int
ngx_http_linegate_jwt_load_jwks(ngx_http_linegate_jwt_keys_t *keys,
    const char *path, const char *data, size_t len, char *err, size_t errlen)
{
    int            rc;
    json_t        *root, *arr;
    size_t         i;
    json_error_t   jerr;

    root = json_loadb(data, len, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL) {
        ngx_http_linegate_jwt_error(err, errlen,
                                    "%s: invalid JSON at line %d: %s", path,
                                    jerr.line, jerr.text);
        return -1;
    }

    arr = json_object_get(root, "keys");
    if (!json_is_array(arr)) {
        ngx_http_linegate_jwt_error(err, errlen,
                                    "%s: no \"keys\" array (not a JWKS)",
                                    path);
        json_decref(root);
        return -1;
    }

    rc = 0;

    for (i = 0; i < json_array_size(arr) && rc == 0; i++) {
        rc = ngx_http_linegate_jwt_load_jwk(keys, path,
                                            json_array_get(arr, i), i, err,
                                            errlen);
    }

    json_decref(root);

    if (rc == 0 && keys->nkeys == 0) {
        ngx_http_linegate_jwt_error(err, errlen, "%s: no usable key", path);
        return -1;
    }

    return rc;
}


static int
ngx_http_linegate_jwt_load_jwk(ngx_http_linegate_jwt_keys_t *keys,
    const char *path, json_t *jwk, size_t i, char *err, size_t errlen)
{
    char         label[NGX_HTTP_LINEGATE_JWT_KID_MAX + 16];
    BIGNUM      *n, *e;
    json_t      *kid;
    EVP_PKEY    *pkey;
    const char  *kidstr;

    (void) snprintf(label, sizeof(label), "keys[%lu]", (unsigned long) i);

    if (!json_is_object(jwk)) {
        ngx_http_linegate_jwt_error(err, errlen, "%s: %s is not an object",
                                    path, label);
        return -1;
    }

    kid = json_object_get(jwk, "kid");
    kidstr = NULL;

    if (kid != NULL) {
        if (!json_is_string(kid) || json_string_length(kid) == 0
            || json_string_length(kid) > NGX_HTTP_LINEGATE_JWT_KID_MAX)
        {
            ngx_http_linegate_jwt_error(err, errlen,
                                        "%s: %s has an invalid \"kid\" "
                                        "(a string of 1 to %d characters)",
                                        path, label,
                                        NGX_HTTP_LINEGATE_JWT_KID_MAX);
            return -1;
        }

        kidstr = json_string_value(kid);
        (void) snprintf(label, sizeof(label), "key \"%s\"", kidstr);
    }

    if (ngx_http_linegate_jwt_jwk_meta(path, label, jwk, err, errlen) != 0) {
        return -1;
    }

    n = ngx_http_linegate_jwt_jwk_bn(jwk, "n");
    e = ngx_http_linegate_jwt_jwk_bn(jwk, "e");

    if (n == NULL || e == NULL) {
        ngx_http_linegate_jwt_error(err, errlen,
                                    "%s: %s needs \"n\" and \"e\" in strict "
                                    "base64url", path, label);
        BN_free(n);
        BN_free(e);
        return -1;
    }

    pkey = ngx_http_linegate_jwt_rsa_from_bn(n, e);

    BN_free(n);
    BN_free(e);

    if (pkey == NULL) {
        ngx_http_linegate_jwt_error(err, errlen,
                                    "%s: %s is not a valid RSA public key",
                                    path, label);
        return -1;
    }

    return ngx_http_linegate_jwt_add_key(keys, path, label, kidstr, pkey,
                                         err, errlen);
}


/* refuses rather than skips keys it cannot use: a typo must not pass */

static int
ngx_http_linegate_jwt_jwk_meta(const char *path, const char *label,
    json_t *jwk, char *err, size_t errlen)
{
    json_t  *v;

    v = json_object_get(jwk, "kty");
    if (!ngx_http_linegate_jwt_string_is(v, "RSA")) {
        ngx_http_linegate_jwt_error(err, errlen,
                                    "%s: %s has kty \"%.32s\", only \"RSA\" "
                                    "is supported", path, label,
                                    json_is_string(v) ? json_string_value(v)
                                                      : "(none)");
        return -1;
    }

    v = json_object_get(jwk, "alg");
    if (v != NULL && !ngx_http_linegate_jwt_string_is(v, "RS256")) {
        ngx_http_linegate_jwt_error(err, errlen,
                                    "%s: %s has alg \"%.32s\", only "
                                    "\"RS256\" is supported", path, label,
                                    json_is_string(v) ? json_string_value(v)
                                                      : "(not a string)");
        return -1;
    }

    v = json_object_get(jwk, "use");
    if (v != NULL && !ngx_http_linegate_jwt_string_is(v, "sig")) {
        ngx_http_linegate_jwt_error(err, errlen,
                                    "%s: %s is not a signing key (\"use\" "
                                    "is not \"sig\")", path, label);
        return -1;
    }

    return 0;
}


static BIGNUM *
ngx_http_linegate_jwt_jwk_bn(json_t *jwk, const char *name)
{
    BIGNUM         *bn;
    json_t         *v;
    size_t          len;
    ssize_t         n;
    unsigned char  *buf;

    v = json_object_get(jwk, name);
    if (!json_is_string(v) || json_string_length(v) == 0) {
        return NULL;
    }

    len = json_string_length(v);

    buf = malloc(len);
    if (buf == NULL) {
        return NULL;
    }

    n = ngx_http_linegate_base64url_decode(json_string_value(v), len, buf,
                                           len);

    bn = (n > 0 && n <= INT_MAX) ? BN_bin2bn(buf, (int) n, NULL) : NULL;

    free(buf);

    return bn;
}


static EVP_PKEY *
ngx_http_linegate_jwt_rsa_from_bn(BIGNUM *n, BIGNUM *e)
{
    EVP_PKEY        *pkey;
    OSSL_PARAM      *params;
    EVP_PKEY_CTX    *ctx;
    OSSL_PARAM_BLD  *bld;

    pkey = NULL;
    params = NULL;
    ctx = NULL;

    bld = OSSL_PARAM_BLD_new();
    if (bld == NULL
        || OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, n) != 1
        || OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, e) != 1)
    {
        goto done;
    }

    params = OSSL_PARAM_BLD_to_param(bld);
    if (params == NULL) {
        goto done;
    }

    ctx = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL);
    if (ctx == NULL
        || EVP_PKEY_fromdata_init(ctx) != 1
        || EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) != 1)
    {
        pkey = NULL;
    }

done:

    ERR_clear_error();
    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);

    return pkey;
}


/* takes ownership of pkey, even on failure */

static int
ngx_http_linegate_jwt_add_key(ngx_http_linegate_jwt_keys_t *keys,
    const char *path, const char *label, const char *kid, EVP_PKEY *pkey,
    char *err, size_t errlen)
{
    size_t                        i, n;
    ngx_http_linegate_jwt_key_t  *key;

    if (ngx_http_linegate_jwt_check_key(path, label, pkey, err, errlen) != 0)
    {
        goto failed;
    }

    for (i = 0; kid != NULL && i < keys->nkeys; i++) {
        if (keys->key[i].kid != NULL && strcmp(keys->key[i].kid, kid) == 0) {
            ngx_http_linegate_jwt_error(err, errlen,
                                        "%s: kid \"%s\" appears twice",
                                        path, kid);
            goto failed;
        }
    }

    if (keys->nkeys == keys->nalloc) {
        n = keys->nalloc ? 2 * keys->nalloc : 4;

        key = realloc(keys->key, n * sizeof(ngx_http_linegate_jwt_key_t));
        if (key == NULL) {
            goto nomem;
        }

        keys->key = key;
        keys->nalloc = n;
    }

    key = &keys->key[keys->nkeys];
    key->kid = NULL;
    key->kidlen = 0;

    if (kid != NULL) {
        key->kidlen = strlen(kid);
        key->kid = malloc(key->kidlen + 1);
        if (key->kid == NULL) {
            goto nomem;
        }

        memcpy(key->kid, kid, key->kidlen + 1);
    }

    key->pkey = pkey;
    keys->nkeys++;

    return 0;

nomem:

    ngx_http_linegate_jwt_error(err, errlen, "%s: out of memory", path);

failed:

    EVP_PKEY_free(pkey);

    return -1;
}


static int
ngx_http_linegate_jwt_check_key(const char *path, const char *label,
    EVP_PKEY *pkey, char *err, size_t errlen)
{
    int            bits, ok;
    EVP_PKEY_CTX  *ctx;

    /* "RSA" only: an RSA-PSS key would not verify PKCS#1 v1.5 */
    if (!EVP_PKEY_is_a(pkey, "RSA")) {
        ngx_http_linegate_jwt_error(err, errlen, "%s: %s is not an RSA key",
                                    path, label);
        return -1;
    }

    bits = EVP_PKEY_get_bits(pkey);

    if (bits < NGX_HTTP_LINEGATE_JWT_MIN_BITS) {
        ngx_http_linegate_jwt_error(err, errlen,
                                    "%s: %s is %d bits, at least %d "
                                    "required", path, label, bits,
                                    NGX_HTTP_LINEGATE_JWT_MIN_BITS);
        return -1;
    }

    if (bits > NGX_HTTP_LINEGATE_JWT_MAX_BITS) {
        ngx_http_linegate_jwt_error(err, errlen,
                                    "%s: %s is %d bits, at most %d "
                                    "supported", path, label, bits,
                                    NGX_HTTP_LINEGATE_JWT_MAX_BITS);
        return -1;
    }

    /* catches an even modulus, a bad exponent and other broken keys */
    ctx = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL);
    ok = ctx != NULL && EVP_PKEY_public_check(ctx) == 1;
    EVP_PKEY_CTX_free(ctx);
    ERR_clear_error();

    if (!ok) {
        ngx_http_linegate_jwt_error(err, errlen,
                                    "%s: %s is not a valid RSA public key",
                                    path, label);
        return -1;
    }

    return 0;
}


static int
ngx_http_linegate_jwt_split(const char *token, size_t len,
    ngx_http_linegate_jwt_parts_t *parts)
{
    const char     *d1, *d2, *end;
    unsigned char  *pos, *last;

    end = token + len;

    d1 = memchr(token, '.', len);
    if (d1 == NULL) {
        return -1;
    }

    d2 = memchr(d1 + 1, '.', (size_t) (end - d1 - 1));
    if (d2 == NULL || memchr(d2 + 1, '.', (size_t) (end - d2 - 1)) != NULL) {
        return -1;
    }

    parts->signing_input = token;
    parts->signing_len = (size_t) (d2 - token);

    /* decoded segments are shorter than the token they come from */
    parts->buf = malloc(len + 1);
    if (parts->buf == NULL) {
        return -1;
    }

    pos = parts->buf;
    last = parts->buf + len + 1;

    if (ngx_http_linegate_jwt_decode(token, (size_t) (d1 - token), &pos,
                                     last, &parts->hdr, &parts->hdrlen)
        != 0
        || ngx_http_linegate_jwt_decode(d1 + 1, (size_t) (d2 - d1 - 1), &pos,
                                        last, &parts->pay, &parts->paylen)
           != 0
        || ngx_http_linegate_jwt_decode(d2 + 1, (size_t) (end - d2 - 1), &pos,
                                        last, &parts->sig, &parts->siglen)
           != 0)
    {
        return -1;
    }

    return 0;
}


/*
 * An empty segment decodes to nothing: an empty header or payload then
 * fails as JSON, an empty signature ("alg": "none") fails verification.
 */

static int
ngx_http_linegate_jwt_decode(const char *in, size_t len, unsigned char **pos,
    unsigned char *end, unsigned char **out, size_t *outlen)
{
    ssize_t  n;

    n = ngx_http_linegate_base64url_decode(in, len, *pos,
                                           (size_t) (end - *pos));
    if (n < 0) {
        return -1;
    }

    *out = *pos;
    *outlen = (size_t) n;
    *pos += n;

    return 0;
}


static json_t *
ngx_http_linegate_jwt_parse(const unsigned char *buf, size_t len)
{
    json_t  *v;

    v = json_loadb((const char *) buf, len, JSON_REJECT_DUPLICATES, NULL);

    if (v != NULL && !json_is_object(v)) {
        json_decref(v);
        return NULL;
    }

    return v;
}


/*
 * The algorithm is pinned: whatever the header says, only RS256 with
 * a configured key is tried.  "jku", "x5u" and "jwk" are never used.
 */

static const char *
ngx_http_linegate_jwt_check_header(json_t *hdr, const char **kid,
    size_t *kidlen)
{
    json_t  *v;

    if (!ngx_http_linegate_jwt_string_is(json_object_get(hdr, "alg"),
                                         "RS256"))
    {
        return "alg not RS256";
    }

    /* RFC 7515 4.1.11: extensions we do not understand must be refused */
    if (json_object_get(hdr, "crit") != NULL) {
        return "unsupported crit";
    }

    v = json_object_get(hdr, "kid");

    if (v == NULL) {
        *kid = NULL;
        *kidlen = 0;
        return NULL;
    }

    if (!json_is_string(v)) {
        return "malformed";
    }

    *kid = json_string_value(v);
    *kidlen = json_string_length(v);

    return NULL;
}


static const char *
ngx_http_linegate_jwt_check_signature(
    const ngx_http_linegate_jwt_keys_t *keys, const char *kid, size_t kidlen,
    const ngx_http_linegate_jwt_parts_t *parts)
{
    int                                 found;
    size_t                              i;
    const ngx_http_linegate_jwt_key_t  *key;

    found = 0;

    for (i = 0; keys != NULL && i < keys->nkeys; i++) {
        key = &keys->key[i];

        /* a key without kid (PEM) stands for any kid */
        if (key->kid != NULL
            && (kid == NULL || key->kidlen != kidlen
                || memcmp(key->kid, kid, kidlen) != 0))
        {
            continue;
        }

        found = 1;

        if (ngx_http_linegate_jwt_rs256(key->pkey, parts)) {
            return NULL;
        }
    }

    return found ? "bad signature" : "unknown kid";
}


static int
ngx_http_linegate_jwt_rs256(EVP_PKEY *pkey,
    const ngx_http_linegate_jwt_parts_t *parts)
{
    int            ok;
    EVP_MD_CTX    *md;
    EVP_PKEY_CTX  *pctx;

    /* RFC 7518 3.3: the signature is exactly as long as the modulus */
    if (parts->siglen != (size_t) EVP_PKEY_get_size(pkey)) {
        return 0;
    }

    md = EVP_MD_CTX_new();
    if (md == NULL) {
        ERR_clear_error();
        return 0;
    }

    ok = EVP_DigestVerifyInit(md, &pctx, EVP_sha256(), NULL, pkey) == 1
         && EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PADDING) > 0
         && EVP_DigestVerify(md, parts->sig, parts->siglen,
                             (const unsigned char *) parts->signing_input,
                             parts->signing_len)
            == 1;

    EVP_MD_CTX_free(md);

    /* a failed verification leaves errors nginx would report later */
    ERR_clear_error();

    return ok;
}


/*
 * Only session tokens are credentials here.  Whatever else Clerk signs
 * with the same key is refused: a JWT template's token (made for another
 * service, maybe long-lived), a machine token, an OAuth access token
 * (RFC 9068 "typ": "at+jwt", held by a third-party OAuth client, with an
 * "org_id" claim when granted user:org:read).  As Clerk's own SDK does,
 * "cat" may be absent (tokens minted before categories), the session's
 * or the "ignore" one; "typ", when present, must say a plain JWT (RFC
 * 7515 4.1.9: compared without case).  Checked after the signature, so
 * that these reasons are only logged for tokens Clerk made.
 */

static const char *
ngx_http_linegate_jwt_check_kind(json_t *hdr)
{
    int      machine;
    json_t  *v;

    v = json_object_get(hdr, "cat");

    if (v != NULL
        && !ngx_http_linegate_jwt_string_is(v,
                                            NGX_HTTP_LINEGATE_JWT_SESSION_CAT)
        && !ngx_http_linegate_jwt_string_is(v,
                                            NGX_HTTP_LINEGATE_JWT_IGNORE_CAT))
    {
        machine = ngx_http_linegate_jwt_string_is(v,
                                        NGX_HTTP_LINEGATE_JWT_MACHINE_CAT);

        return machine ? "machine token" : "not a session token";
    }

    v = json_object_get(hdr, "typ");

    if (v != NULL
        && !ngx_http_linegate_jwt_string_nocase(v, "jwt")
        && !ngx_http_linegate_jwt_string_nocase(v, "application/jwt"))
    {
        return "not a session token";
    }

    return NULL;
}


static const char *
ngx_http_linegate_jwt_check_claims(json_t *pay,
    const ngx_http_linegate_jwt_params_t *p,
    ngx_http_linegate_jwt_claims_t *out)
{
    double       exp;
    const char  *why;

    why = ngx_http_linegate_jwt_check_times(pay, p, &exp);
    if (why != NULL) {
        return why;
    }

    why = ngx_http_linegate_jwt_check_parties(pay, p);
    if (why != NULL) {
        return why;
    }

    why = ngx_http_linegate_jwt_check_subject(pay, out);
    if (why != NULL) {
        return why;
    }

    out->exp = ngx_http_linegate_jwt_clamp(exp);
    ngx_http_linegate_jwt_copy_org(pay, out);

    if (ngx_http_linegate_jwt_copy(json_object_get(pay, "sid"), out->sid,
                                   sizeof(out->sid))
        != 0)
    {
        out->sid[0] = '\0';
    }

    return NULL;
}


/* 0: absent, 1: a number in *v, -1: present but not a number */

static int
ngx_http_linegate_jwt_number(json_t *obj, const char *name, double *v)
{
    json_t  *n;

    n = json_object_get(obj, name);
    if (n == NULL) {
        return 0;
    }

    if (!json_is_number(n)) {
        return -1;
    }

    *v = json_number_value(n);

    return 1;
}


/* in doubles: NumericDate may be fractional and must not overflow a long */

static const char *
ngx_http_linegate_jwt_check_times(json_t *pay,
    const ngx_http_linegate_jwt_params_t *p, double *exp)
{
    int     rc;
    double  now, leeway, v;

    now = (double) p->now;
    leeway = (p->leeway > 0) ? (double) p->leeway : 0.0;

    rc = ngx_http_linegate_jwt_number(pay, "exp", exp);
    if (rc == 0) {
        return "exp missing";
    }

    if (rc < 0) {
        return "malformed";
    }

    /* RFC 7519 4.1.4: valid only before exp (here exp + leeway) */
    if (now >= *exp + leeway) {
        return "expired";
    }

    rc = ngx_http_linegate_jwt_number(pay, "nbf", &v);
    if (rc < 0) {
        return "malformed";
    }

    if (rc > 0 && now < v - leeway) {
        return "not yet valid";
    }

    rc = ngx_http_linegate_jwt_number(pay, "iat", &v);
    if (rc < 0) {
        return "malformed";
    }

    if (rc > 0 && v > now + leeway) {
        return "issued in the future";
    }

    return NULL;
}


static const char *
ngx_http_linegate_jwt_check_parties(json_t *pay,
    const ngx_http_linegate_jwt_params_t *p)
{
    size_t   i;
    json_t  *azp;

    if (p->issuer != NULL
        && !ngx_http_linegate_jwt_string_is(json_object_get(pay, "iss"),
                                            p->issuer))
    {
        return "wrong issuer";
    }

    if (p->nazp == 0) {
        return NULL;
    }

    azp = json_object_get(pay, "azp");
    if (!json_is_string(azp)) {
        return "azp missing";
    }

    for (i = 0; i < p->nazp; i++) {
        if (ngx_http_linegate_jwt_string_is(azp, p->azp[i])) {
            return NULL;
        }
    }

    return "azp not allowed";
}


static const char *
ngx_http_linegate_jwt_check_subject(json_t *pay,
    ngx_http_linegate_jwt_claims_t *out)
{
    json_t  *sub;

    sub = json_object_get(pay, "sub");
    if (!json_is_string(sub) || json_string_length(sub) == 0) {
        return "sub missing";
    }

    if (ngx_http_linegate_jwt_copy(sub, out->sub, sizeof(out->sub)) != 0) {
        return "claim too long";
    }

    /* a machine token of an instance that puts no category on it */
    if (strncmp(out->sub, NGX_HTTP_LINEGATE_JWT_MACHINE_SUB,
                sizeof(NGX_HTTP_LINEGATE_JWT_MACHINE_SUB) - 1)
        == 0)
    {
        return "machine token";
    }

    /* a session still waiting for a second factor or similar step */
    if (ngx_http_linegate_jwt_string_is(json_object_get(pay, "sts"),
                                        "pending"))
    {
        return "pending session";
    }

    return NULL;
}


/* Clerk session token v2 nests the organization as {"o": {"id": ...}} */

static void
ngx_http_linegate_jwt_copy_org(json_t *pay,
    ngx_http_linegate_jwt_claims_t *out)
{
    json_t  *v, *org;

    v = json_object_get(pay, "v");

    if (json_is_number(v) && json_number_value(v) == 2.0) {
        org = json_object_get(json_object_get(pay, "o"), "id");

    } else {
        org = json_object_get(pay, "org_id");
    }

    out->has_org = json_is_string(org) && json_string_length(org) > 0
                   && ngx_http_linegate_jwt_copy(org, out->org,
                                                 sizeof(out->org))
                      == 0;

    if (!out->has_org) {
        out->org[0] = '\0';
    }
}


/* compares with the length: jansson strings may hold NUL bytes */

static int
ngx_http_linegate_jwt_string_is(json_t *v, const char *s)
{
    size_t  len;

    if (!json_is_string(v)) {
        return 0;
    }

    len = strlen(s);

    return json_string_length(v) == len
           && memcmp(json_string_value(v), s, len) == 0;
}


/* as string_is(), ASCII letters in any case; s is lowercase */

static int
ngx_http_linegate_jwt_string_nocase(json_t *v, const char *s)
{
    size_t       i, len;
    const char  *p;

    if (!json_is_string(v)) {
        return 0;
    }

    len = strlen(s);

    if (json_string_length(v) != len) {
        return 0;
    }

    p = json_string_value(v);

    for (i = 0; i < len; i++) {
        if ((p[i] >= 'A' && p[i] <= 'Z' ? p[i] + ('a' - 'A') : p[i]) != s[i])
        {
            return 0;
        }
    }

    return 1;
}


/* -1 unless v is a string that fits in dst with its NUL */

static int
ngx_http_linegate_jwt_copy(json_t *v, char *dst, size_t size)
{
    size_t  len;

    if (!json_is_string(v)) {
        return -1;
    }

    len = json_string_length(v);

    if (len >= size || memchr(json_string_value(v), '\0', len) != NULL) {
        return -1;
    }

    memcpy(dst, json_string_value(v), len + 1);

    return 0;
}


/*
 * Not up to LONG_MAX: auth.c keeps a verified token until exp + leeway,
 * which a Clerk-signed "exp" of 1e19 would overflow (undefined in C)
 */

static long
ngx_http_linegate_jwt_clamp(double v)
{
    if (v >= (double) NGX_HTTP_LINEGATE_JWT_EXP_MAX) {
        return NGX_HTTP_LINEGATE_JWT_EXP_MAX;
    }

    if (v <= (double) LONG_MIN) {
        return LONG_MIN;
    }

    return (long) v;
}
