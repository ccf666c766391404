
/*
 * Fuzz target: Clerk session tokens (src/ngx_http_linegate_jwt.c),
 * ngx_http_linegate_jwt_verify() against a JWKS of two 2048-bit keys.
 *
 * The input is the token, as it follows "Bearer " or sits in the
 * __session cookie.  A fuzzer cannot forge RS256, so in this build a
 * signature that starts with the bytes "FUZZ" (and is as long as the
 * modulus) is taken as valid: the header, kid, payload and claim checks
 * behind the signature are fuzzed too.  Any other signature goes to
 * OpenSSL as in the module.
 */


#include <openssl/evp.h>

#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>


static int fuzz_digest_verify(EVP_MD_CTX *ctx, const unsigned char *sig,
    size_t siglen, const unsigned char *tbs, size_t tbslen);

#define EVP_DigestVerify  fuzz_digest_verify
#include "ngx_http_linegate_jwt.c"
#undef EVP_DigestVerify

#include "fuzz_keys.h"


static ngx_http_linegate_jwt_keys_t  *fuzz_keys;

static const char  *fuzz_parties[] = {
    "http://localhost:3000", "https://app.example.com"
};

static ngx_http_linegate_jwt_params_t  fuzz_params = {
    "https://clerk.example.com", fuzz_parties, 2, 5, 1700000000L
};


static int
fuzz_digest_verify(EVP_MD_CTX *ctx, const unsigned char *sig, size_t siglen,
    const unsigned char *tbs, size_t tbslen)
{
    if (siglen >= 4 && memcmp(sig, "FUZZ", 4) == 0) {
        return 1;
    }

    return EVP_DigestVerify(ctx, sig, siglen, tbs, tbslen);
}


int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    fuzz_keys = fuzz_keys_jwks();

    return 0;
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int                              rc;
    const char                      *reason;
    ngx_http_linegate_jwt_claims_t   claims;

    reason = NULL;

    rc = ngx_http_linegate_jwt_verify(fuzz_keys, (const char *) data, size,
                                      &fuzz_params, &claims, &reason);

    /* the contract of jwt.h: a reason always; claims only when valid */
    if (reason == NULL
        || (rc == 0 && (claims.sub[0] == '\0'
                        || memchr(claims.sub, 0, sizeof(claims.sub)) == NULL
                        || memchr(claims.org, 0, sizeof(claims.org)) == NULL
                        || memchr(claims.sid, 0, sizeof(claims.sid)) == NULL))
        || (rc != 0 && (claims.sub[0] || claims.org[0] || claims.has_org)))
    {
        __builtin_trap();
    }

    return 0;
}
