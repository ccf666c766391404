
/*
 * linegate: hashing, constant-time comparison, random tokens, strict
 * base64url and Stripe webhook signatures.
 *
 * Pure C on top of OpenSSL 3: no nginx headers, so it can be unit-tested
 * outside nginx (t/unit/test_crypto.c).
 */


#ifndef _NGX_HTTP_LINEGATE_CRYPTO_H_INCLUDED_
#define _NGX_HTTP_LINEGATE_CRYPTO_H_INCLUDED_


#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>


/* longest Stripe-Signature header value accepted */
#define NGX_HTTP_LINEGATE_SIG_HEADER_MAX   4096

/* results of ngx_http_linegate_stripe_signature_verify() */
#define NGX_HTTP_LINEGATE_SIG_OK           0
#define NGX_HTTP_LINEGATE_SIG_MALFORMED   -1
#define NGX_HTTP_LINEGATE_SIG_NO_MATCH    -2
#define NGX_HTTP_LINEGATE_SIG_TOO_OLD     -3


/*
 * SHA-256 of data followed by data2 (len2 may be 0) into out. 0, or -1
 * when OpenSSL failed.
 */
int ngx_http_linegate_sha256(const unsigned char *data, size_t len,
    const unsigned char *data2, size_t len2, unsigned char out[32]);

/* lowercase hex SHA-256 of data, NUL-terminated; "" if OpenSSL fails */
void ngx_http_linegate_sha256_hex(const unsigned char *data, size_t len,
    char out[65]);

/*
 * SipHash-2-4 (Aumasson and Bernstein, 64-bit output) of data under the
 * 128-bit key k0, k1 (the key's two little-endian halves): a hash whose
 * collisions cannot be chosen without the key, for tables filled with
 * keys a client picks (ngx_murmur_hash2's can be, whatever its seed).
 */
uint64_t ngx_http_linegate_siphash(uint64_t k0, uint64_t k1,
    const unsigned char *data, size_t len);

/* the same with a 128-bit output: out[0], out[1] as the reference's words */
void ngx_http_linegate_siphash128(uint64_t k0, uint64_t k1,
    const unsigned char *data, size_t len, uint64_t out[2]);

/*
 * 1 when both buffers have the same length and content, else 0.
 * The content comparison takes the same time whatever the bytes are.
 */
int ngx_http_linegate_ct_equal(const void *a, size_t alen, const void *b,
    size_t blen);

/*
 * 1 when a presented secret equals the configured one, else 0, in a time
 * that tells neither the configured secret's bytes nor its length: both
 * are compared as SHA-256 digests (an operator token has no public size).
 */
int ngx_http_linegate_secret_equal(const void *given, size_t glen,
    const void *secret, size_t slen);

/*
 * n bytes of OpenSSL's CSPRNG, buffered per process: 0 or -1. A process
 * that may have drawn before a fork calls random_reset() in the child.
 */
int ngx_http_linegate_random_bytes(unsigned char *out, size_t n);
void ngx_http_linegate_random_reset(void);

/*
 * exactly nchars characters of [A-Za-z0-9] into out, no NUL after them
 * (a token's random part ends its buffer); 0 or -1
 */
int ngx_http_linegate_random_token(char *out, size_t nchars);

/* 2 * nbytes lowercase hex characters + NUL into out; 0 or -1 */
int ngx_http_linegate_random_hex(char *out, size_t nbytes);

/*
 * Strict base64url (RFC 4648 section 5, no padding): decoded length,
 * or -1 on any stray character, '=', impossible length, non-zero unused
 * bits, or when the result would not fit in outcap bytes.
 */
ssize_t ngx_http_linegate_base64url_decode(const char *in, size_t len,
    unsigned char *out, size_t outcap);

/*
 * Stripe-Signature check: HMAC-SHA256 of "t.body" keyed by the whole
 * endpoint secret ("whsec_..."), any v1 may match, |now - t| must be
 * within tolerance seconds. Returns one of NGX_HTTP_LINEGATE_SIG_*.
 */
int ngx_http_linegate_stripe_signature_verify(const char *header,
    size_t hlen, const unsigned char *body, size_t blen, const char *secret,
    size_t slen, long tolerance, long now);


#endif /* _NGX_HTTP_LINEGATE_CRYPTO_H_INCLUDED_ */
