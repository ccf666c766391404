
/*
 * linegate fuzzing: RSA keys made at start-up, as the JWKS file the
 * module loads (kids "k1" and "k2").
 */


#ifndef _FUZZ_KEYS_H_INCLUDED_
#define _FUZZ_KEYS_H_INCLUDED_


#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ngx_http_linegate_jwt.h"


static void
fuzz_b64url(const unsigned char *in, size_t n, char *out)
{
    size_t       i;
    unsigned     v;
    const char  *a;

    a = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

    for (i = 0; i + 2 < n; i += 3) {
        v = in[i] << 16 | in[i + 1] << 8 | in[i + 2];
        *out++ = a[v >> 18];
        *out++ = a[(v >> 12) & 63];
        *out++ = a[(v >> 6) & 63];
        *out++ = a[v & 63];
    }

    if (n - i == 1) {
        v = in[i] << 16;
        *out++ = a[v >> 18];
        *out++ = a[(v >> 12) & 63];

    } else if (n - i == 2) {
        v = in[i] << 16 | in[i + 1] << 8;
        *out++ = a[v >> 18];
        *out++ = a[(v >> 12) & 63];
        *out++ = a[(v >> 6) & 63];
    }

    *out = '\0';
}


static void
fuzz_jwk(FILE *f, EVP_PKEY *k, const char *kid)
{
    int             len;
    char            b64[1024];
    BIGNUM         *n, *e;
    unsigned char   buf[600];

    n = NULL;
    e = NULL;

    if (!EVP_PKEY_get_bn_param(k, OSSL_PKEY_PARAM_RSA_N, &n)
        || !EVP_PKEY_get_bn_param(k, OSSL_PKEY_PARAM_RSA_E, &e))
    {
        abort();
    }

    len = BN_bn2bin(n, buf);
    fuzz_b64url(buf, len, b64);
    fprintf(f, "{\"kty\":\"RSA\",\"kid\":\"%s\",\"use\":\"sig\","
            "\"alg\":\"RS256\",\"n\":\"%s\",", kid, b64);

    len = BN_bn2bin(e, buf);
    fuzz_b64url(buf, len, b64);
    fprintf(f, "\"e\":\"%s\"}", b64);

    BN_free(n);
    BN_free(e);
}


static ngx_http_linegate_jwt_keys_t *
fuzz_keys_jwks(void)
{
    int                            fd;
    char                           path[] = "/tmp/linegate-fuzz-jwks-XXXXXX";
    char                           err[512];
    FILE                          *f;
    EVP_PKEY                      *k1, *k2;
    ngx_http_linegate_jwt_keys_t  *keys;

    k1 = EVP_RSA_gen(2048);
    k2 = EVP_RSA_gen(2048);
    fd = mkstemp(path);

    if (k1 == NULL || k2 == NULL || fd == -1) {
        abort();
    }

    f = fdopen(fd, "w");
    fputs("{\"keys\":[", f);
    fuzz_jwk(f, k1, "k1");
    fputs(",", f);
    fuzz_jwk(f, k2, "k2");
    fputs("]}", f);
    fclose(f);

    keys = ngx_http_linegate_jwt_keys_load(path, err, sizeof(err));
    unlink(path);

    if (keys == NULL) {
        fprintf(stderr, "fuzz: %s\n", err);
        abort();
    }

    EVP_PKEY_free(k1);
    EVP_PKEY_free(k2);

    return keys;
}


#endif /* _FUZZ_KEYS_H_INCLUDED_ */
