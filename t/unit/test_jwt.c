
/*
 * Unit tests for src/ngx_http_linegate_jwt.c, TAP output.
 *
 * RSA keys are generated at run time; tokens are signed here.
 */


#define _POSIX_C_SOURCE 200809L

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>

#include "ngx_http_linegate_jwt.h"
#include "tap.h"


#define NOW      1700000000L
#define LEEWAY   5L

#define ISS      "\"iss\":\"https://clerk.example.com\""
#define AZP      "\"azp\":\"https://app.example.com\""
#define SUB      "\"sub\":\"user_2abc\""
#define STD      ISS "," AZP "," SUB

#define HDR_K1   "{\"alg\":\"RS256\",\"kid\":\"k1\",\"typ\":\"JWT\"}"
#define HDR_K2   "{\"alg\":\"RS256\",\"kid\":\"k2\",\"typ\":\"JWT\"}"


static char                             dir[256];
static char                             files[32][300];
static int                              nfiles;

static EVP_PKEY                        *k1, *k2, *rogue, *weak;
static ngx_http_linegate_jwt_keys_t    *jwks, *pem;

static const char                      *parties[] = {
    "http://localhost:3000", "https://app.example.com"
};

static ngx_http_linegate_jwt_params_t   params = {
    "https://clerk.example.com", parties, 2, LEEWAY, NOW
};


static void
diag(const char *fmt, ...)
{
    va_list  args;

    printf("# ");
    va_start(args, fmt);
    vprintf(fmt, args);
    va_end(args);
    printf("\n");
}


static const char *
fmt(const char *f, ...)
{
    static char  buf[4][20000];
    static int   i;
    va_list      args;

    i = (i + 1) % 4;
    va_start(args, f);
    vsnprintf(buf[i], sizeof(buf[i]), f, args);
    va_end(args);

    return buf[i];
}


static char *
b64url(const unsigned char *in, size_t len)
{
    static const char  a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                             "abcdefghijklmnopqrstuvwxyz0123456789-_";
    char              *out, *p;
    size_t             i;
    unsigned long      v;

    out = malloc(len * 4 / 3 + 4);
    p = out;

    for (i = 0; i + 3 <= len; i += 3) {
        v = (unsigned long) in[i] << 16 | in[i + 1] << 8 | in[i + 2];
        *p++ = a[v >> 18];
        *p++ = a[(v >> 12) & 63];
        *p++ = a[(v >> 6) & 63];
        *p++ = a[v & 63];
    }

    if (len - i == 1) {
        v = (unsigned long) in[i] << 16;
        *p++ = a[v >> 18];
        *p++ = a[(v >> 12) & 63];

    } else if (len - i == 2) {
        v = (unsigned long) in[i] << 16 | in[i + 1] << 8;
        *p++ = a[v >> 18];
        *p++ = a[(v >> 12) & 63];
        *p++ = a[(v >> 6) & 63];
    }

    *p = '\0';

    return out;
}


static char *
b64s(const char *s)
{
    return b64url((const unsigned char *) s, strlen(s));
}


/* header.payload, both base64url-encoded, malloc'd */

static char *
signing_input(const char *hdr, const char *pay)
{
    char  *h, *p, *out;

    h = b64s(hdr);
    p = b64s(pay);
    out = malloc(strlen(h) + strlen(p) + 2);
    sprintf(out, "%s.%s", h, p);
    free(h);
    free(p);

    return out;
}


static char *
join(char *input, const unsigned char *sig, size_t siglen)
{
    char  *s, *out;

    s = b64url(sig, siglen);
    out = malloc(strlen(input) + strlen(s) + 2);
    sprintf(out, "%s.%s", input, s);
    free(s);
    free(input);

    return out;
}


static char *
sign_md(const char *hdr, const char *pay, EVP_PKEY *key, const EVP_MD *md)
{
    char           *input;
    size_t          siglen;
    EVP_MD_CTX     *ctx;
    unsigned char   sig[1024];

    input = signing_input(hdr, pay);
    siglen = sizeof(sig);

    ctx = EVP_MD_CTX_new();
    if (EVP_DigestSignInit(ctx, NULL, md, NULL, key) != 1
        || EVP_DigestSign(ctx, sig, &siglen, (unsigned char *) input,
                          strlen(input)) != 1)
    {
        diag("signing failed");
        siglen = 0;
    }

    EVP_MD_CTX_free(ctx);

    return join(input, sig, siglen);
}


static char *
sign(const char *hdr, const char *pay, EVP_PKEY *key)
{
    return sign_md(hdr, pay, key, EVP_sha256());
}


static char *
sign_hs256(const char *hdr, const char *pay, const unsigned char *secret,
    size_t slen)
{
    char           *input;
    unsigned int    len;
    unsigned char   md[EVP_MAX_MD_SIZE];

    input = signing_input(hdr, pay);
    HMAC(EVP_sha256(), secret, (int) slen, (unsigned char *) input,
         strlen(input), md, &len);

    return join(input, md, len);
}


static const char *
path(const char *name)
{
    const char  *p;

    p = fmt("%s/%s", dir, name);
    snprintf(files[nfiles++ % 32], sizeof(files[0]), "%s", p);

    return p;
}


static const char *
write_file(const char *name, const char *data, size_t len)
{
    FILE        *f;
    const char  *p;

    p = path(name);
    f = fopen(p, "wb");
    fwrite(data, 1, len, f);
    fclose(f);

    return p;
}


static const char *
write_pem(const char *name, EVP_PKEY *key, int private)
{
    FILE        *f;
    const char  *p;

    p = path(name);
    f = fopen(p, "w");

    if (private) {
        PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL);

    } else {
        PEM_write_PUBKEY(f, key);
    }

    fclose(f);

    return p;
}


static char *
bn_param(EVP_PKEY *key, const char *name)
{
    int             n;
    char           *s;
    BIGNUM         *bn;
    unsigned char   buf[2048];

    bn = NULL;
    EVP_PKEY_get_bn_param(key, name, &bn);
    n = BN_bn2bin(bn, buf);
    BN_free(bn);
    s = b64url(buf, (size_t) n);

    return s;
}


/* {"kty":"RSA","kid":..,"n":..,"e":..}, extra members appended */

static const char *
jwk(EVP_PKEY *key, const char *kid, const char *extra)
{
    char        *n, *e;
    const char  *s;

    n = bn_param(key, OSSL_PKEY_PARAM_RSA_N);
    e = bn_param(key, OSSL_PKEY_PARAM_RSA_E);
    s = fmt("{\"kty\":\"RSA\",\"kid\":\"%s\",\"n\":\"%s\",\"e\":\"%s\"%s}",
            kid, n, e, extra);
    free(n);
    free(e);

    return s;
}


static const char *
write_jwks(const char *name, const char *keys)
{
    const char  *s;

    s = fmt("{\"keys\":[%s]}", keys);

    return write_file(name, s, strlen(s));
}


static ngx_http_linegate_jwt_keys_t *
load(const char *p, char *err, size_t errlen)
{
    ngx_http_linegate_jwt_keys_t  *keys;

    keys = ngx_http_linegate_jwt_keys_load(p, err, errlen);
    if (keys == NULL) {
        diag("load: %s", err);
    }

    return keys;
}


static void
refused_load(const char *p, const char *expect, const char *name)
{
    char                           err[512];
    ngx_http_linegate_jwt_keys_t  *keys;

    err[0] = '\0';
    keys = ngx_http_linegate_jwt_keys_load(p, err, sizeof(err));

    ok(keys == NULL && strstr(err, expect) != NULL
       && strstr(err, dir) != NULL, name);

    if (keys != NULL || strstr(err, expect) == NULL) {
        diag("expected \"%s\", got \"%s\"", expect, err);
    }

    ngx_http_linegate_jwt_keys_free(keys);
}


static void
test_load(void)
{
    char         err[512], *big;
    size_t       n;
    EVP_PKEY    *ec;
    const char  *p;

    p = write_jwks("jwks.json", fmt("%s,%s", jwk(k1, "k1", ""),
                                    jwk(k2, "k2",
                                        ",\"alg\":\"RS256\",\"use\":\"sig\"")));
    jwks = load(p, err, sizeof(err));
    ok(jwks != NULL, "load: JWKS with two 2048-bit keys");

    pem = load(write_pem("k1.pem", k1, 0), err, sizeof(err));
    ok(pem != NULL, "load: PEM public key");

    refused_load(path("missing.json"), "cannot open",
                 "load: missing file refused");

    p = write_file("bad.json", "{\"keys\":[", 9);
    refused_load(p, "invalid JSON", "load: bad JSON refused");

    p = write_file("dup.json", "{\"keys\":[],\"keys\":[]}", 21);
    refused_load(p, "invalid JSON", "load: duplicate JSON members refused");

    p = write_file("empty.json", "{\"keys\":[]}", 11);
    refused_load(p, "no usable key", "load: empty key set refused");

    p = write_file("nokeys.json", "{\"kty\":\"RSA\"}", 13);
    refused_load(p, "no \"keys\" array", "load: not a JWKS refused");

    p = write_file("zero", "", 0);
    refused_load(p, "empty file", "load: empty file refused");

    /* only a regular file is read (t/010: a FIFO, which hung nginx -t) */
    refused_load(dir, "not a regular file", "load: a directory refused");

    p = write_file("junk", "hello", 5);
    refused_load(p, "neither a JWKS", "load: neither JSON nor PEM refused");

    p = write_jwks("weak.json", jwk(weak, "weak1", ""));
    refused_load(p, "key \"weak1\" is 1024 bits, at least 2048 required",
                 "load: 1024-bit JWK refused with a clear message");

    p = write_jwks("weakmix.json",
                   fmt("%s,%s", jwk(k1, "k1", ""), jwk(weak, "w", "")));
    refused_load(p, "is 1024 bits", "load: one weak key refuses the file");

    refused_load(write_pem("weak.pem", weak, 0), "key #1 is 1024 bits",
                 "load: 1024-bit PEM refused");

    p = write_jwks("ec.json", "{\"kty\":\"EC\",\"kid\":\"e1\","
                              "\"crv\":\"P-256\",\"x\":\"AA\",\"y\":\"AA\"}");
    refused_load(p, "kty \"EC\"", "load: non-RSA kty refused");

    p = write_jwks("rs512.json", jwk(k1, "k1", ",\"alg\":\"RS512\""));
    refused_load(p, "alg \"RS512\"", "load: JWK with alg RS512 refused");

    p = write_jwks("enc.json", jwk(k1, "k1", ",\"use\":\"enc\""));
    refused_load(p, "not a signing key", "load: JWK with use enc refused");

    p = write_jwks("dupkid.json",
                   fmt("%s,%s", jwk(k1, "k1", ""), jwk(k2, "k1", "")));
    refused_load(p, "appears twice", "load: duplicate kid refused");

    p = write_jwks("badn.json", "{\"kty\":\"RSA\",\"kid\":\"k1\","
                                "\"n\":\"AQAB==\",\"e\":\"AQAB\"}");
    refused_load(p, "strict base64url", "load: padded n refused");

    refused_load(write_pem("priv.pem", k1, 1), "\"PRIVATE KEY\" block",
                 "load: PEM private key refused");

    p = write_file("c2.pem", "-----BEGIN PUBLIC KEY-----\nAAAA\n"
                   "-----END PUBLIC KEY-----\n", 56);
    refused_load(p, "key #1 is not a valid public key",
                 "load: PEM block that is not a key refused");

    p = write_file("c3.pem", "-----BEGIN PUBLIC KEY-----\nA#AA\n"
                   "-----END PUBLIC KEY-----\n", 56);
    refused_load(p, "invalid PEM", "load: bad base64 in PEM refused");

    ec = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    refused_load(write_pem("ec.pem", ec, 0), "key #1 is not an RSA key",
                 "load: EC PEM key refused");
    EVP_PKEY_free(ec);

    n = NGX_HTTP_LINEGATE_JWT_MAX_FILE + 1;
    big = malloc(n);
    memset(big, ' ', n);
    memcpy(big, "{\"keys\":[]}", 11);
    p = write_file("big.json", big, n);
    free(big);
    refused_load(p, "larger than", "load: file over 1 MiB refused");
}


/* NULL when accepted, else the reason */

static const char *
check_with(const ngx_http_linegate_jwt_keys_t *keys, const char *token,
    const ngx_http_linegate_jwt_params_t *p,
    ngx_http_linegate_jwt_claims_t *c)
{
    const char  *reason;

    reason = NULL;

    if (ngx_http_linegate_jwt_verify(keys, token, strlen(token), p, c,
                                     &reason)
        == 0)
    {
        return NULL;
    }

    return reason ? reason : "(null reason)";
}


static void
accepted(const char *token, const char *name)
{
    const char                      *why;
    ngx_http_linegate_jwt_claims_t   c;

    why = check_with(jwks, token, &params, &c);
    ok(why == NULL, name);

    if (why != NULL) {
        diag("refused: %s", why);
    }
}


static void
refused_with(const ngx_http_linegate_jwt_keys_t *keys, const char *token,
    const ngx_http_linegate_jwt_params_t *p, const char *expect,
    const char *name)
{
    const char                      *why;
    ngx_http_linegate_jwt_claims_t   c;

    memset(&c, 'x', sizeof(c));
    why = check_with(keys, token, p, &c);

    ok(why != NULL && strcmp(why, expect) == 0 && c.sub[0] == '\0', name);

    if (why == NULL || strcmp(why, expect) != 0) {
        diag("expected \"%s\", got \"%s\"", expect, why ? why : "accepted");
    }
}


static void
refused(const char *token, const char *expect, const char *name)
{
    refused_with(jwks, token, &params, expect, name);
}


static void
test_valid(void)
{
    char                            *t;
    const char                      *why;
    ngx_http_linegate_jwt_claims_t   c;

    t = sign(HDR_K1, fmt("{" STD ",\"exp\":%ld,\"iat\":%ld,\"nbf\":%ld,"
                         "\"sid\":\"sess_9\",\"org_id\":\"org_v1\"}",
                         NOW + 60, NOW - 10, NOW - 10), k1);
    why = check_with(jwks, t, &params, &c);
    ok(why == NULL && strcmp(c.sub, "user_2abc") == 0 && c.has_org
       && strcmp(c.org, "org_v1") == 0 && c.exp == NOW + 60
       && strcmp(c.sid, "sess_9") == 0, "valid v1 token with org_id");
    free(t);

    t = sign(HDR_K2, fmt("{" STD ",\"exp\":%ld,\"v\":2,"
                         "\"o\":{\"id\":\"org_v2\",\"rol\":\"admin\"}}",
                         NOW + 60), k2);
    why = check_with(jwks, t, &params, &c);
    ok(why == NULL && c.has_org && strcmp(c.org, "org_v2") == 0,
       "valid v2 token with o.id (second key)");
    free(t);

    t = sign(HDR_K1, fmt("{" STD ",\"exp\":%ld,\"v\":2,"
                         "\"org_id\":\"org_old\"}", NOW + 60), k1);
    why = check_with(jwks, t, &params, &c);
    ok(why == NULL && !c.has_org && c.org[0] == '\0',
       "v2 token ignores org_id");
    free(t);

    t = sign(HDR_K1, fmt("{" STD ",\"exp\":%ld}", NOW + 60), k1);
    why = check_with(jwks, t, &params, &c);
    ok(why == NULL && !c.has_org && c.sid[0] == '\0',
       "valid token without organization");
    free(t);

    t = sign(HDR_K1, fmt("{" STD ",\"exp\":%ld,\"org_id\":42}", NOW + 60),
             k1);
    why = check_with(jwks, t, &params, &c);
    ok(why == NULL && !c.has_org, "non-string org_id: no organization");
    free(t);

    t = sign(HDR_K1, fmt("{" STD ",\"exp\":%ld,\"org_id\":\"%0256d\"}",
                         NOW + 60, 0), k1);
    why = check_with(jwks, t, &params, &c);
    ok(why == NULL && !c.has_org, "256-char org_id: no organization");
    free(t);

    t = sign(HDR_K1, fmt("{" STD ",\"exp\":%ld,\"sts\":\"active\"}",
                         NOW + 60), k1);
    accepted(t, "sts active accepted");
    free(t);

    t = sign("{\"alg\":\"RS256\",\"kid\":\"k1\"}",
             fmt("{" STD ",\"exp\":%ld}", NOW + 60), k1);
    accepted(t, "typ absent accepted");
    free(t);
}


static void
test_times(void)
{
    char                            *t;
    const char                      *why;
    ngx_http_linegate_jwt_claims_t   c;

    /* RFC 7519 4.1.4: valid only while now < exp + leeway */
    t = sign(HDR_K1, fmt("{" STD ",\"exp\":%ld}", NOW - LEEWAY + 1), k1);
    accepted(t, "exp = now - leeway + 1 accepted");
    free(t);

    t = sign(HDR_K1, fmt("{" STD ",\"exp\":%ld.5}", NOW - LEEWAY), k1);
    accepted(t, "fractional exp half a second inside the leeway accepted");
    free(t);

    t = sign(HDR_K1, fmt("{" STD ",\"exp\":%ld}", NOW - LEEWAY), k1);
    refused(t, "expired", "exp = now - leeway expired");
    free(t);

    t = sign(HDR_K1, fmt("{" STD ",\"exp\":%ld}", NOW - LEEWAY - 1), k1);
    refused(t, "expired", "exp = now - leeway - 1 expired");
    free(t);

    t = sign(HDR_K1, fmt("{" STD ",\"exp\":%ld.5}", NOW - LEEWAY - 1), k1);
    refused(t, "expired", "fractional exp just past leeway expired");
    free(t);

    t = sign(HDR_K1, "{" STD "}", k1);
    refused(t, "exp missing", "exp missing refused");
    free(t);

    t = sign(HDR_K1, fmt("{" STD ",\"exp\":\"%ld\"}", NOW + 60), k1);
    refused(t, "malformed", "exp as string refused");
    free(t);

    /* the caller adds its leeway to claims.exp: that must not overflow */
    t = sign(HDR_K1, "{" STD ",\"exp\":1e300}", k1);
    why = check_with(jwks, t, &params, &c);
    ok(why == NULL && c.exp == NGX_HTTP_LINEGATE_JWT_EXP_MAX,
       "exp 1e300 accepted, claims.exp is at most JWT_EXP_MAX");
    free(t);

    t = sign(HDR_K1, fmt("{" STD ",\"exp\":%ld}", NOW + 60), k1);
    why = check_with(jwks, t, &params, &c);
    ok(why == NULL && c.exp == NOW + 60, "claims.exp is the token's exp");
    free(t);

    t = sign(HDR_K1, fmt("{" STD ",\"exp\":%ld,\"nbf\":%ld}", NOW + 60,
                         NOW + LEEWAY), k1);
    accepted(t, "nbf = now + leeway accepted");
    free(t);

    t = sign(HDR_K1, fmt("{" STD ",\"exp\":%ld,\"nbf\":%ld}", NOW + 60,
                         NOW + LEEWAY + 1), k1);
    refused(t, "not yet valid", "nbf = now + leeway + 1 not yet valid");
    free(t);

    t = sign(HDR_K1, fmt("{" STD ",\"exp\":%ld,\"iat\":%ld}", NOW + 60,
                         NOW + LEEWAY), k1);
    accepted(t, "iat = now + leeway accepted");
    free(t);

    t = sign(HDR_K1, fmt("{" STD ",\"exp\":%ld,\"iat\":%ld}", NOW + 60,
                         NOW + LEEWAY + 1), k1);
    refused(t, "issued in the future", "iat = now + leeway + 1 refused");
    free(t);
}


static void
test_alg(void)
{
    char           *t, *pub;
    long            len;
    BIO            *bio;
    const char     *pay;
    unsigned char  *data;

    pay = fmt("{" STD ",\"exp\":%ld}", NOW + 60);

    t = join(signing_input("{\"alg\":\"none\",\"kid\":\"k1\"}", pay),
             (const unsigned char *) "", 0);
    refused(t, "alg not RS256", "alg none with empty signature refused");
    free(t);

    t = sign("{\"alg\":\"none\",\"kid\":\"k1\"}", pay, k1);
    refused(t, "alg not RS256", "alg none with a real signature refused");
    free(t);

    t = sign("{\"kid\":\"k1\"}", pay, k1);
    refused(t, "alg not RS256", "alg missing refused");
    free(t);

    t = sign("{\"alg\":\"rs256\",\"kid\":\"k1\"}", pay, k1);
    refused(t, "alg not RS256", "alg in lowercase refused");
    free(t);

    t = sign_md("{\"alg\":\"RS512\",\"kid\":\"k1\"}", pay, k1, EVP_sha512());
    refused(t, "alg not RS256", "RS512 refused");
    free(t);

    /* the classic confusion attack: HMAC keyed with the public key */
    bio = BIO_new(BIO_s_mem());
    PEM_write_bio_PUBKEY(bio, k1);
    len = BIO_get_mem_data(bio, &pub);
    data = (unsigned char *) pub;

    t = sign_hs256("{\"alg\":\"HS256\",\"kid\":\"k1\"}", pay, data,
                   (size_t) len);
    refused(t, "alg not RS256", "HS256 signed with the public key refused");
    refused_with(pem, t, &params, "alg not RS256",
                 "HS256 signed with the public key refused (PEM set)");
    free(t);
    BIO_free(bio);

    t = sign("{\"alg\":\"RS256\",\"kid\":\"k1\",\"crit\":[\"b64\"],"
             "\"b64\":false}", pay, k1);
    refused(t, "unsupported crit", "crit header refused");
    free(t);
}


static void
test_kid(void)
{
    char        *t;
    const char  *pay;

    pay = fmt("{" STD ",\"exp\":%ld}", NOW + 60);

    t = sign("{\"alg\":\"RS256\",\"kid\":\"k9\"}", pay, k1);
    refused(t, "unknown kid", "unknown kid refused");
    refused_with(NULL, t, &params, "unknown kid", "no key set: unknown kid");
    free(t);

    t = sign("{\"alg\":\"RS256\"}", pay, k1);
    refused(t, "unknown kid", "missing kid with a kid'ed key set refused");
    free(t);

    t = sign("{\"alg\":\"RS256\",\"kid\":7}", pay, k1);
    refused(t, "malformed", "non-string kid refused");
    free(t);

    t = sign(HDR_K2, pay, k1);
    refused(t, "bad signature", "signed by k1 but kid k2 refused");
    free(t);

    t = sign(HDR_K1, pay, rogue);
    refused(t, "bad signature", "signed by an unknown key refused");
    free(t);
}


static void
test_pem(void)
{
    FILE                            *f;
    char                            *t, err[512], pem2_path[300];
    const char                      *pay, *why;
    ngx_http_linegate_jwt_keys_t    *pem2;
    ngx_http_linegate_jwt_claims_t   c;

    snprintf(pem2_path, sizeof(pem2_path), "%s", path("two.pem"));
    f = fopen(pem2_path, "w");
    PEM_write_PUBKEY(f, k1);
    PEM_write_PUBKEY(f, k2);
    fclose(f);

    pay = fmt("{" STD ",\"exp\":%ld}", NOW + 60);

    t = sign("{\"alg\":\"RS256\",\"kid\":\"ins_anything\"}", pay, k1);
    why = check_with(pem, t, &params, &c);
    ok(why == NULL, "PEM key verifies any kid");
    free(t);

    t = sign("{\"alg\":\"RS256\"}", pay, k1);
    why = check_with(pem, t, &params, &c);
    ok(why == NULL, "PEM key verifies a token without kid");
    free(t);

    t = sign(HDR_K2, pay, k2);
    refused_with(pem, t, &params, "bad signature",
                 "PEM key refuses another key's signature");

    pem2 = load(pem2_path, err, sizeof(err));
    why = pem2 ? check_with(pem2, t, &params, &c) : "not loaded";
    ok(why == NULL, "PEM file with two keys: the second one verifies");
    ngx_http_linegate_jwt_keys_free(pem2);
    free(t);
}


static void
test_segments(void)
{
    char    *t, *u, *d1, *d2;
    size_t   len;

    t = sign(HDR_K1, fmt("{" STD ",\"exp\":%ld}", NOW + 60), k1);
    accepted(t, "reference token accepted");

    len = strlen(t);
    d1 = strchr(t, '.');
    d2 = strchr(d1 + 1, '.');

    /* a 2048-bit signature is 342 base64url characters: two pads */
    u = malloc(len + 3);
    sprintf(u, "%s==", t);
    refused(u, "malformed", "padded signature segment refused");

    sprintf(u, "%.*s=%s", (int) (d1 - t), t, d1);
    refused(u, "malformed", "'=' after header segment refused");

    sprintf(u, "%s", t);
    u[d2 - t - 1] = '+';
    refused(u, "malformed", "stray '+' in payload refused");

    sprintf(u, "%s", t);
    u[3] = '/';
    refused(u, "malformed", "stray '/' in header refused");

    sprintf(u, "%s\n", t);
    refused(u, "malformed", "trailing newline refused");

    sprintf(u, " %s", t);
    refused(u, "malformed", "leading space refused");

    sprintf(u, "%s.", t);
    refused(u, "malformed", "four segments refused");

    sprintf(u, "%.*s", (int) (d2 - t), t);
    refused(u, "malformed", "two segments refused");

    refused("", "malformed", "empty token refused");
    refused("..", "malformed", "three empty segments refused");

    sprintf(u, "%s", t);
    u[d2 - t + 10] = (u[d2 - t + 10] == 'A') ? 'B' : 'A';
    refused(u, "bad signature", "flipped signature bit refused");

    free(u);
    free(t);
}


static void
test_tampered(void)
{
    char  *t, *forged, *pay, *d1, *d2;

    t = sign(HDR_K1, fmt("{" STD ",\"exp\":%ld}", NOW + 60), k1);

    /* same header and signature, payload with a different subject */
    pay = b64s(fmt("{" ISS "," AZP ",\"sub\":\"user_admin\",\"exp\":%ld}",
                   NOW + 60));
    d1 = strchr(t, '.');
    d2 = strchr(d1 + 1, '.');

    forged = malloc(strlen(t) + strlen(pay) + 1);
    sprintf(forged, "%.*s.%s%s", (int) (d1 - t), t, pay, d2);
    refused(forged, "bad signature", "tampered payload refused");

    free(forged);
    free(pay);
    free(t);
}


static void
test_size(void)
{
    char    *t, *big;
    size_t   len;

    /* pad a claim until the token is exactly the limit, then one more */
    t = sign(HDR_K1, fmt("{" STD ",\"exp\":%ld,\"pad\":\"\"}", NOW + 60), k1);
    len = strlen(t);
    free(t);

    big = malloc(NGX_HTTP_LINEGATE_JWT_MAX_LEN);
    memset(big, 'a', NGX_HTTP_LINEGATE_JWT_MAX_LEN);
    big[(NGX_HTTP_LINEGATE_JWT_MAX_LEN - len) / 4 * 3] = '\0';

    t = sign(HDR_K1, fmt("{" STD ",\"exp\":%ld,\"pad\":\"%s\"}", NOW + 60,
                         big), k1);
    ok(strlen(t) <= NGX_HTTP_LINEGATE_JWT_MAX_LEN
       && strlen(t) > NGX_HTTP_LINEGATE_JWT_MAX_LEN - 8,
       "token close to the size limit built");
    accepted(t, "token close to the size limit accepted");
    free(t);

    memset(big, 'a', NGX_HTTP_LINEGATE_JWT_MAX_LEN);
    big[NGX_HTTP_LINEGATE_JWT_MAX_LEN - 1] = '\0';
    t = sign(HDR_K1, fmt("{" STD ",\"exp\":%ld,\"pad\":\"%s\"}", NOW + 60,
                         big), k1);
    refused(t, "token too long", "oversized token refused");
    free(t);

    t = malloc(NGX_HTTP_LINEGATE_JWT_MAX_LEN + 2);
    memset(t, 'a', NGX_HTTP_LINEGATE_JWT_MAX_LEN + 1);
    t[NGX_HTTP_LINEGATE_JWT_MAX_LEN + 1] = '\0';
    refused(t, "token too long", "8193 bytes refused as too long");
    t[NGX_HTTP_LINEGATE_JWT_MAX_LEN] = '\0';
    refused(t, "malformed", "8192 bytes of junk refused as malformed");
    free(t);

    free(big);
}


static void
test_claims(void)
{
    char                            *t;
    const char                      *why;
    ngx_http_linegate_jwt_params_t   p;
    ngx_http_linegate_jwt_claims_t   c;

    t = sign(HDR_K1, fmt("{\"iss\":\"https://evil.example.com\"," AZP ","
                         SUB ",\"exp\":%ld}", NOW + 60), k1);
    refused(t, "wrong issuer", "wrong issuer refused");
    free(t);

    t = sign(HDR_K1, fmt("{" AZP "," SUB ",\"exp\":%ld}", NOW + 60), k1);
    refused(t, "wrong issuer", "missing issuer refused");

    p = params;
    p.issuer = NULL;
    ok(check_with(jwks, t, &p, &c) == NULL,
       "issuer not checked when not configured");
    free(t);

    t = sign(HDR_K1, fmt("{" ISS "," SUB ",\"exp\":%ld}", NOW + 60), k1);
    refused(t, "azp missing", "azp missing refused");

    p = params;
    p.nazp = 0;
    ok(check_with(jwks, t, &p, &c) == NULL,
       "azp not checked when no party is configured");
    free(t);

    t = sign(HDR_K1, fmt("{" ISS ",\"azp\":\"https://evil.example.com\","
                         SUB ",\"exp\":%ld}", NOW + 60), k1);
    refused(t, "azp not allowed", "wrong azp refused");
    free(t);

    t = sign(HDR_K1, fmt("{" ISS ",\"azp\":\"http://localhost:3000\","
                         SUB ",\"exp\":%ld}", NOW + 60), k1);
    accepted(t, "first listed azp accepted");
    free(t);

    t = sign(HDR_K1, fmt("{" ISS "," AZP ",\"exp\":%ld}", NOW + 60), k1);
    refused(t, "sub missing", "sub missing refused");
    free(t);

    t = sign(HDR_K1, fmt("{" ISS "," AZP ",\"sub\":12,\"exp\":%ld}",
                         NOW + 60), k1);
    refused(t, "sub missing", "non-string sub refused");
    free(t);

    t = sign(HDR_K1, fmt("{" ISS "," AZP ",\"sub\":\"user_%0250d\","
                         "\"exp\":%ld}", 0, NOW + 60), k1);
    why = check_with(jwks, t, &params, &c);
    ok(why == NULL && strlen(c.sub) == 255, "255-char sub accepted");
    free(t);

    t = sign(HDR_K1, fmt("{" ISS "," AZP ",\"sub\":\"user_%0251d\","
                         "\"exp\":%ld}", 0, NOW + 60), k1);
    refused(t, "claim too long", "256-char sub refused");
    free(t);

    t = sign(HDR_K1, fmt("{" STD ",\"exp\":%ld,\"sts\":\"pending\"}",
                         NOW + 60), k1);
    refused(t, "pending session", "pending session refused");
    free(t);

    t = sign("{\"alg\":\"RS256\",\"kid\":\"k1\",\"cat\":\"cl_B7d4PD333AAA\"}",
             fmt("{" STD ",\"exp\":%ld}", NOW + 60), k1);
    refused(t, "machine token", "machine token category refused");
    free(t);

    /* what else Clerk signs with the instance key is no session token */
    t = sign("{\"alg\":\"RS256\",\"kid\":\"k1\",\"cat\":\"cl_B7d4PD222AAA\"}",
             fmt("{" STD ",\"exp\":%ld}", NOW + 60), k1);
    refused(t, "not a session token", "JWT template category refused");
    free(t);

    t = sign("{\"alg\":\"RS256\",\"kid\":\"k1\",\"cat\":7}",
             fmt("{" STD ",\"exp\":%ld}", NOW + 60), k1);
    refused(t, "not a session token", "non-string category refused");
    free(t);

    t = sign("{\"alg\":\"RS256\",\"kid\":\"k1\",\"typ\":\"at+jwt\"}",
             fmt("{" ISS "," SUB ",\"exp\":%ld,\"org_id\":\"org_1\"}",
                 NOW + 60), k1);
    refused(t, "not a session token", "OAuth access token (at+jwt) refused");
    free(t);

    t = sign("{\"alg\":\"RS256\",\"kid\":\"k1\","
             "\"typ\":\"application/AT+JWT\"}",
             fmt("{" STD ",\"exp\":%ld}", NOW + 60), k1);
    refused(t, "not a session token", "application/at+jwt refused");
    free(t);

    t = sign(HDR_K1, fmt("{" ISS "," AZP ",\"sub\":\"mch_2abc\","
                         "\"exp\":%ld}", NOW + 60), k1);
    refused(t, "machine token", "machine subject (mch_) refused");
    free(t);

    t = sign("{\"alg\":\"RS256\",\"kid\":\"k1\",\"typ\":\"jwt\","
             "\"cat\":\"cl_B7d4PD111AAA\"}",
             fmt("{" STD ",\"exp\":%ld}", NOW + 60), k1);
    accepted(t, "session category, typ in lowercase accepted");
    free(t);

    t = sign("{\"alg\":\"RS256\",\"kid\":\"k1\",\"cat\":\"cl_I7d4PD111III\","
             "\"typ\":\"application/jwt\"}",
             fmt("{" STD ",\"exp\":%ld}", NOW + 60), k1);
    accepted(t, "ignore category, typ application/jwt accepted");
    free(t);

    t = sign(HDR_K1, "[1,2,3]", k1);
    refused(t, "malformed", "payload not an object refused");
    free(t);

    t = sign(HDR_K1, fmt("{" STD ",\"exp\":%ld,\"sub\":\"user_x\"}",
                         NOW + 60), k1);
    refused(t, "malformed", "duplicate payload member refused");
    free(t);

    t = sign("{\"alg\":\"RS256\",\"alg\":\"RS256\",\"kid\":\"k1\"}",
             fmt("{" STD ",\"exp\":%ld}", NOW + 60), k1);
    refused(t, "malformed", "duplicate header member refused");
    free(t);

    t = sign(HDR_K1, fmt("{" STD ",\"exp\":%ld} ", NOW + 60), k1);
    accepted(t, "trailing white space in JSON accepted");
    free(t);

    t = sign(HDR_K1, fmt("{" STD ",\"exp\":%ld}x", NOW + 60), k1);
    refused(t, "malformed", "trailing garbage after JSON refused");
    free(t);
}


static void
cleanup(void)
{
    int  i;

    for (i = 0; i < nfiles && i < 32; i++) {
        (void) unlink(files[i]);
    }

    (void) rmdir(dir);
}


int
main(void)
{
    const char  *tmp;

    tmp = getenv("TMPDIR");
    snprintf(dir, sizeof(dir), "%s/linegate-jwt-XXXXXX", tmp ? tmp : "/tmp");

    if (mkdtemp(dir) == NULL) {
        printf("Bail out! mkdtemp failed\n");
        return 1;
    }

    k1 = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t) 2048);
    k2 = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t) 2048);
    rogue = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t) 2048);
    weak = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t) 1024);

    if (k1 == NULL || k2 == NULL || rogue == NULL || weak == NULL) {
        printf("Bail out! RSA key generation failed\n");
        cleanup();
        return 1;
    }

    test_load();

    if (jwks == NULL || pem == NULL) {
        printf("Bail out! key sets did not load\n");
        cleanup();
        return 1;
    }

    test_valid();
    test_times();
    test_alg();
    test_kid();
    test_pem();
    test_segments();
    test_tampered();
    test_size();
    test_claims();

    ngx_http_linegate_jwt_keys_free(jwks);
    ngx_http_linegate_jwt_keys_free(pem);
    EVP_PKEY_free(k1);
    EVP_PKEY_free(k2);
    EVP_PKEY_free(rogue);
    EVP_PKEY_free(weak);
    cleanup();

    return tap_done();
}
