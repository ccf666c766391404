
/*
 * linegate: hashing, constant-time comparison, random tokens, strict
 * base64url and Stripe webhook signatures (SPEC section 5).
 */


#include <string.h>

/* SHA256_Init() and its kin, as nginx's own ngx_event_openssl.h does */
#define OPENSSL_SUPPRESS_DEPRECATED

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include "ngx_http_linegate_crypto.h"


/* 4 * 62: bytes at or above it would favour the first 8 symbols */
#define NGX_HTTP_LINEGATE_TOKEN_LIMIT   248

/* 12 digits reach the year 33658 and keep every difference in a long */
#define NGX_HTTP_LINEGATE_STRIPE_T_MAX_DIGITS   12

#define NGX_HTTP_LINEGATE_SHA256_LEN   32


typedef struct {
    const char  *key;
    size_t       klen;
    const char  *val;
    size_t       vlen;
} ngx_http_linegate_stripe_item_t;


typedef struct {
    long         t;
    const char  *tval;      /* digits of t exactly as sent: they are signed */
    size_t       tlen;
    size_t       nv1;
} ngx_http_linegate_stripe_hdr_t;


static void ngx_http_linegate_hex(const unsigned char *in, size_t n,
    char *out);
static int ngx_http_linegate_hex_value(unsigned char c);
static int ngx_http_linegate_hex_decode(const char *in, size_t len,
    unsigned char *out, size_t outlen);
static int ngx_http_linegate_b64url_value(unsigned char c);
static int ngx_http_linegate_b64url_group(const char *in, size_t n,
    unsigned char *out);
static int ngx_http_linegate_stripe_next(const char **pos, const char *end,
    ngx_http_linegate_stripe_item_t *it);
static int ngx_http_linegate_stripe_is(ngx_http_linegate_stripe_item_t *it,
    const char *key);
static int ngx_http_linegate_stripe_parse_t(
    ngx_http_linegate_stripe_item_t *it, long *t);
static int ngx_http_linegate_stripe_scan(const char *header, size_t hlen,
    ngx_http_linegate_stripe_hdr_t *h);
static int ngx_http_linegate_stripe_mac(ngx_http_linegate_stripe_hdr_t *h,
    const unsigned char *body, size_t blen, const char *secret, size_t slen,
    unsigned char *mac);
static int ngx_http_linegate_stripe_match(const char *header, size_t hlen,
    const unsigned char *mac);
static int ngx_http_linegate_stripe_fresh(long t, long tolerance, long now);


static const char  ngx_http_linegate_hex_digits[] = "0123456789abcdef";

static const char  ngx_http_linegate_token_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";


/*
 * SHA-256 by OpenSSL's own functions (deprecated in 3.0, kept by every
 * build of it that nginx fleets run): OpenSSL 3.0's EVP_DigestInit_ex2()
 * allocates and frees the provider's context at every call, and the
 * one-shot SHA256()/EVP_Digest() also look the algorithm up by name;
 * either showed in the profile of the hot read (1.4% of a GET's worker,
 * a malloc and a free each). The context is on the stack, and
 * SHA256_Final() wipes the input block it kept.
 */
int
ngx_http_linegate_sha256(const unsigned char *data, size_t len,
    const unsigned char *data2, size_t len2, unsigned char out[32])
{
    SHA256_CTX  ctx;

    if (SHA256_Init(&ctx) != 1
        || SHA256_Update(&ctx, data, len) != 1
        || (len2 && SHA256_Update(&ctx, data2, len2) != 1)
        || SHA256_Final(out, &ctx) != 1)
    {
        ERR_clear_error();
        return -1;
    }

    return 0;
}


void
ngx_http_linegate_sha256_hex(const unsigned char *data, size_t len,
    char out[65])
{
    unsigned char  md[NGX_HTTP_LINEGATE_SHA256_LEN];

    if (ngx_http_linegate_sha256(data, len, NULL, 0, md) != 0) {
        /* an empty string never equals a stored digest */
        out[0] = '\0';
        return;
    }

    ngx_http_linegate_hex(md, NGX_HTTP_LINEGATE_SHA256_LEN, out);
}


#define NGX_HTTP_LINEGATE_SIP_ROTL(x, b)  (((x) << (b)) | ((x) >> (64 - (b))))

#define NGX_HTTP_LINEGATE_SIP_ROUND                                           \
    v0 += v1; v1 = NGX_HTTP_LINEGATE_SIP_ROTL(v1, 13); v1 ^= v0;              \
    v0 = NGX_HTTP_LINEGATE_SIP_ROTL(v0, 32);                                  \
    v2 += v3; v3 = NGX_HTTP_LINEGATE_SIP_ROTL(v3, 16); v3 ^= v2;              \
    v0 += v3; v3 = NGX_HTTP_LINEGATE_SIP_ROTL(v3, 21); v3 ^= v0;              \
    v2 += v1; v1 = NGX_HTTP_LINEGATE_SIP_ROTL(v1, 17); v1 ^= v2;              \
    v2 = NGX_HTTP_LINEGATE_SIP_ROTL(v2, 32)


/*
 * The reference siphash.c: outlen 8 (out[0]), or 16 (out[0], out[1]),
 * which starts and finishes with other constants.
 */
static void
ngx_http_linegate_siphash_out(uint64_t k0, uint64_t k1,
    const unsigned char *data, size_t len, int wide, uint64_t *out)
{
    size_t    i;
    uint64_t  v0, v1, v2, v3, m, b;

    v0 = 0x736f6d6570736575ULL ^ k0;
    v1 = 0x646f72616e646f6dULL ^ k1;
    v2 = 0x6c7967656e657261ULL ^ k0;
    v3 = 0x7465646279746573ULL ^ k1;

    if (wide) {
        v1 ^= 0xee;
    }

    b = (uint64_t) len << 56;

    for ( /* void */ ; len >= 8; data += 8, len -= 8) {
        m = 0;

        for (i = 0; i < 8; i++) {
            m |= (uint64_t) data[i] << (8 * i);
        }

        v3 ^= m;
        NGX_HTTP_LINEGATE_SIP_ROUND;
        NGX_HTTP_LINEGATE_SIP_ROUND;
        v0 ^= m;
    }

    /* the last 0 to 7 bytes, under the length's low byte */
    for (i = 0; i < len; i++) {
        b |= (uint64_t) data[i] << (8 * i);
    }

    v3 ^= b;
    NGX_HTTP_LINEGATE_SIP_ROUND;
    NGX_HTTP_LINEGATE_SIP_ROUND;
    v0 ^= b;

    v2 ^= wide ? 0xee : 0xff;
    NGX_HTTP_LINEGATE_SIP_ROUND;
    NGX_HTTP_LINEGATE_SIP_ROUND;
    NGX_HTTP_LINEGATE_SIP_ROUND;
    NGX_HTTP_LINEGATE_SIP_ROUND;
    out[0] = v0 ^ v1 ^ v2 ^ v3;

    if (!wide) {
        return;
    }

    v1 ^= 0xdd;
    NGX_HTTP_LINEGATE_SIP_ROUND;
    NGX_HTTP_LINEGATE_SIP_ROUND;
    NGX_HTTP_LINEGATE_SIP_ROUND;
    NGX_HTTP_LINEGATE_SIP_ROUND;
    out[1] = v0 ^ v1 ^ v2 ^ v3;
}


uint64_t
ngx_http_linegate_siphash(uint64_t k0, uint64_t k1, const unsigned char *data,
    size_t len)
{
    uint64_t  out;

    ngx_http_linegate_siphash_out(k0, k1, data, len, 0, &out);

    return out;
}


void
ngx_http_linegate_siphash128(uint64_t k0, uint64_t k1,
    const unsigned char *data, size_t len, uint64_t out[2])
{
    ngx_http_linegate_siphash_out(k0, k1, data, len, 1, out);
}


int
ngx_http_linegate_ct_equal(const void *a, size_t alen, const void *b,
    size_t blen)
{
    /*
     * Lengths are not secret here (digests, hex MACs, stored keys have
     * fixed or public sizes); only the content comparison must not leak.
     */
    if (alen != blen) {
        return 0;
    }

    if (alen == 0) {
        return 1;
    }

    return CRYPTO_memcmp(a, b, alen) == 0;
}


int
ngx_http_linegate_secret_equal(const void *given, size_t glen,
    const void *secret, size_t slen)
{
    int            equal;
    unsigned char  gmd[NGX_HTTP_LINEGATE_SHA256_LEN];
    unsigned char  smd[NGX_HTTP_LINEGATE_SHA256_LEN];

    if (slen == 0
        || ngx_http_linegate_sha256(given, glen, NULL, 0, gmd) != 0
        || ngx_http_linegate_sha256(secret, slen, NULL, 0, smd) != 0)
    {
        return 0;
    }

    /* equal digests and equal lengths: the length check tells nothing more */
    equal = CRYPTO_memcmp(gmd, smd, NGX_HTTP_LINEGATE_SHA256_LEN) == 0;

    OPENSSL_cleanse(smd, sizeof(smd));

    return equal && glen == slen;
}


/*
 * Bytes of OpenSSL's CSPRNG, drawn 4 KB at a time: every RAND_bytes()
 * call costs a lock and a getpid() system call (OpenSSL's fork check),
 * whatever its size, and a preview token takes one call. Bytes handed out
 * are wiped from the buffer at once. A worker never forks; bytes drawn
 * before a fork are thrown away by ngx_http_linegate_random_reset(),
 * called when a worker starts, so no two processes share them.
 */
static unsigned char  ngx_http_linegate_random_pool[4096];
static size_t         ngx_http_linegate_random_avail;


void
ngx_http_linegate_random_reset(void)
{
    OPENSSL_cleanse(ngx_http_linegate_random_pool,
                    sizeof(ngx_http_linegate_random_pool));
    ngx_http_linegate_random_avail = 0;
}


int
ngx_http_linegate_random_bytes(unsigned char *out, size_t n)
{
    size_t          k;
    unsigned char  *src;

    while (n) {
        if (ngx_http_linegate_random_avail == 0) {
            if (RAND_bytes(ngx_http_linegate_random_pool,
                           (int) sizeof(ngx_http_linegate_random_pool))
                != 1)
            {
                ERR_clear_error();
                return -1;
            }

            ngx_http_linegate_random_avail =
                sizeof(ngx_http_linegate_random_pool);
        }

        k = n < ngx_http_linegate_random_avail
            ? n : ngx_http_linegate_random_avail;
        src = ngx_http_linegate_random_pool
              + sizeof(ngx_http_linegate_random_pool)
              - ngx_http_linegate_random_avail;

        memcpy(out, src, k);
        OPENSSL_cleanse(src, k);

        ngx_http_linegate_random_avail -= k;
        out += k;
        n -= k;
    }

    return 0;
}


int
ngx_http_linegate_random_token(char *out, size_t nchars)
{
    unsigned char  buf[64];
    size_t         n, k;

    n = 0;

    while (n < nchars) {
        if (ngx_http_linegate_random_bytes(buf, sizeof(buf)) != 0) {
            OPENSSL_cleanse(out, n);
            return -1;
        }

        for (k = 0; k < sizeof(buf) && n < nchars; k++) {
            /* rejection sampling: "% 62" alone would be biased */
            if (buf[k] >= NGX_HTTP_LINEGATE_TOKEN_LIMIT) {
                continue;
            }

            out[n++] = ngx_http_linegate_token_alphabet[buf[k] % 62];
        }
    }

    OPENSSL_cleanse(buf, sizeof(buf));

    return 0;
}


int
ngx_http_linegate_random_hex(char *out, size_t nbytes)
{
    unsigned char  buf[32];
    size_t         done, n;

    for (done = 0; done < nbytes; done += n) {
        n = nbytes - done;
        if (n > sizeof(buf)) {
            n = sizeof(buf);
        }

        if (ngx_http_linegate_random_bytes(buf, n) != 0) {
            out[0] = '\0';
            return -1;
        }

        ngx_http_linegate_hex(buf, n, out + 2 * done);
    }

    out[2 * nbytes] = '\0';
    OPENSSL_cleanse(buf, sizeof(buf));

    return 0;
}


ssize_t
ngx_http_linegate_base64url_decode(const char *in, size_t len,
    unsigned char *out, size_t outcap)
{
    size_t  rem, need, i, o;

    rem = len % 4;

    /* one character carries 6 bits: never a whole byte */
    if (rem == 1) {
        return -1;
    }

    need = len / 4 * 3 + (rem ? rem - 1 : 0);

    /* (size_t) -1 / 2 is SSIZE_MAX, which strict C99 does not declare */
    if (need > outcap || need > (size_t) -1 / 2) {
        return -1;
    }

    o = 0;

    for (i = 0; i < len; i += 4) {
        rem = (len - i < 4) ? len - i : 4;

        if (ngx_http_linegate_b64url_group(in + i, rem, out + o) != 0) {
            return -1;
        }

        o += rem - 1;
    }

    return (ssize_t) o;
}


int
ngx_http_linegate_stripe_signature_verify(const char *header, size_t hlen,
    const unsigned char *body, size_t blen, const char *secret, size_t slen,
    long tolerance, long now)
{
    int                             rc;
    unsigned char                   mac[NGX_HTTP_LINEGATE_SHA256_LEN];
    ngx_http_linegate_stripe_hdr_t  h;

    if (header == NULL || hlen == 0
        || hlen > NGX_HTTP_LINEGATE_SIG_HEADER_MAX)
    {
        return NGX_HTTP_LINEGATE_SIG_MALFORMED;
    }

    rc = ngx_http_linegate_stripe_scan(header, hlen, &h);
    if (rc != NGX_HTTP_LINEGATE_SIG_OK) {
        return rc;
    }

    if (h.nv1 == 0 || secret == NULL || slen == 0) {
        return NGX_HTTP_LINEGATE_SIG_NO_MATCH;
    }

    if (ngx_http_linegate_stripe_mac(&h, body, blen, secret, slen, mac) != 0)
    {
        return NGX_HTTP_LINEGATE_SIG_NO_MATCH;
    }

    rc = ngx_http_linegate_stripe_match(header, hlen, mac);
    OPENSSL_cleanse(mac, sizeof(mac));

    if (!rc) {
        return NGX_HTTP_LINEGATE_SIG_NO_MATCH;
    }

    /*
     * Checked after the signature so that "too old" is only ever
     * reported for a genuine (replayed or delayed) Stripe event.
     */
    if (!ngx_http_linegate_stripe_fresh(h.t, tolerance, now)) {
        return NGX_HTTP_LINEGATE_SIG_TOO_OLD;
    }

    return NGX_HTTP_LINEGATE_SIG_OK;
}


static void
ngx_http_linegate_hex(const unsigned char *in, size_t n, char *out)
{
    size_t  i;

    for (i = 0; i < n; i++) {
        out[2 * i] = ngx_http_linegate_hex_digits[in[i] >> 4];
        out[2 * i + 1] = ngx_http_linegate_hex_digits[in[i] & 0x0f];
    }

    out[2 * n] = '\0';
}


static int
ngx_http_linegate_hex_value(unsigned char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }

    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }

    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }

    return -1;
}


static int
ngx_http_linegate_hex_decode(const char *in, size_t len, unsigned char *out,
    size_t outlen)
{
    int     hi, lo;
    size_t  i;

    if (len != 2 * outlen) {
        return -1;
    }

    for (i = 0; i < outlen; i++) {
        hi = ngx_http_linegate_hex_value((unsigned char) in[2 * i]);
        lo = ngx_http_linegate_hex_value((unsigned char) in[2 * i + 1]);

        if (hi < 0 || lo < 0) {
            return -1;
        }

        out[i] = (unsigned char) (hi << 4 | lo);
    }

    return 0;
}


static int
ngx_http_linegate_b64url_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z') {
        return c - 'A';
    }

    if (c >= 'a' && c <= 'z') {
        return c - 'a' + 26;
    }

    if (c >= '0' && c <= '9') {
        return c - '0' + 52;
    }

    if (c == '-') {
        return 62;
    }

    if (c == '_') {
        return 63;
    }

    return -1;
}


/*
 * Decodes one group of n (2..4) characters into n - 1 bytes.  A short
 * final group leaves 4 or 2 bits unused; they must be zero, otherwise
 * several encodings would map to the same bytes.
 */

static int
ngx_http_linegate_b64url_group(const char *in, size_t n, unsigned char *out)
{
    int            v;
    size_t         i, nbytes, unused;
    unsigned long  acc;

    acc = 0;

    for (i = 0; i < n; i++) {
        v = ngx_http_linegate_b64url_value((unsigned char) in[i]);
        if (v < 0) {
            return -1;
        }

        acc = acc << 6 | (unsigned long) v;
    }

    nbytes = n - 1;
    unused = 6 * n - 8 * nbytes;

    if (acc & ((1UL << unused) - 1)) {
        return -1;
    }

    acc >>= unused;

    for (i = nbytes; i > 0; i--) {
        out[i - 1] = (unsigned char) (acc & 0xff);
        acc >>= 8;
    }

    return 0;
}


/*
 * Iterates over "key=value" items separated by ','.  Returns 1 with an
 * item, 0 at the end, -1 on an empty item or one without "key=".
 * Spaces around items are tolerated.
 */

static int
ngx_http_linegate_stripe_next(const char **pos, const char *end,
    ngx_http_linegate_stripe_item_t *it)
{
    const char  *p, *q, *eq;

    p = *pos;
    if (p == NULL) {
        return 0;
    }

    q = memchr(p, ',', (size_t) (end - p));
    if (q == NULL) {
        q = end;
    }

    *pos = (q < end) ? q + 1 : NULL;

    while (p < q && (*p == ' ' || *p == '\t')) {
        p++;
    }

    while (q > p && (q[-1] == ' ' || q[-1] == '\t')) {
        q--;
    }

    eq = memchr(p, '=', (size_t) (q - p));
    if (eq == NULL || eq == p) {
        return -1;
    }

    it->key = p;
    it->klen = (size_t) (eq - p);
    it->val = eq + 1;
    it->vlen = (size_t) (q - eq - 1);

    return 1;
}


static int
ngx_http_linegate_stripe_is(ngx_http_linegate_stripe_item_t *it,
    const char *key)
{
    return it->klen == strlen(key) && memcmp(it->key, key, it->klen) == 0;
}


static int
ngx_http_linegate_stripe_parse_t(ngx_http_linegate_stripe_item_t *it,
    long *t)
{
    long    v;
    size_t  i;

    if (it->vlen == 0 || it->vlen > NGX_HTTP_LINEGATE_STRIPE_T_MAX_DIGITS) {
        return -1;
    }

    v = 0;

    for (i = 0; i < it->vlen; i++) {
        if (it->val[i] < '0' || it->val[i] > '9') {
            return -1;
        }

        v = v * 10 + (it->val[i] - '0');
    }

    *t = v;

    return 0;
}


/* first pass: exactly one valid "t", well-formed items, count of v1 */

static int
ngx_http_linegate_stripe_scan(const char *header, size_t hlen,
    ngx_http_linegate_stripe_hdr_t *h)
{
    int                              rc, have_t;
    const char                      *pos;
    ngx_http_linegate_stripe_item_t  it;

    pos = header;
    have_t = 0;
    h->t = 0;
    h->tval = NULL;
    h->tlen = 0;
    h->nv1 = 0;

    while ((rc = ngx_http_linegate_stripe_next(&pos, header + hlen, &it))
           == 1)
    {
        if (ngx_http_linegate_stripe_is(&it, "t")) {
            /* two timestamps: which one was signed is ambiguous */
            if (have_t || ngx_http_linegate_stripe_parse_t(&it, &h->t) != 0)
            {
                return NGX_HTTP_LINEGATE_SIG_MALFORMED;
            }

            have_t = 1;
            h->tval = it.val;
            h->tlen = it.vlen;

        } else if (ngx_http_linegate_stripe_is(&it, "v1")) {
            h->nv1++;
        }

        /* v0 and unknown schemes are ignored, as Stripe's libraries do */
    }

    if (rc < 0 || !have_t) {
        return NGX_HTTP_LINEGATE_SIG_MALFORMED;
    }

    return NGX_HTTP_LINEGATE_SIG_OK;
}


static int
ngx_http_linegate_stripe_mac(ngx_http_linegate_stripe_hdr_t *h,
    const unsigned char *body, size_t blen, const char *secret, size_t slen,
    unsigned char *mac)
{
    int           rc;
    size_t        maclen;
    EVP_MAC      *hmac;
    OSSL_PARAM    params[2];
    EVP_MAC_CTX  *ctx;

    static char   digest[] = "SHA256";

    rc = -1;
    ctx = NULL;

    hmac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    if (hmac == NULL) {
        goto done;
    }

    ctx = EVP_MAC_CTX_new(hmac);
    if (ctx == NULL) {
        goto done;
    }

    params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST,
                                                 digest, 0);
    params[1] = OSSL_PARAM_construct_end();

    /* the signed payload is "<t>.<body>", with t as sent */
    if (EVP_MAC_init(ctx, (const unsigned char *) secret, slen, params) != 1
        || EVP_MAC_update(ctx, (const unsigned char *) h->tval, h->tlen) != 1
        || EVP_MAC_update(ctx, (const unsigned char *) ".", 1) != 1
        || (blen && EVP_MAC_update(ctx, body, blen) != 1)
        || EVP_MAC_final(ctx, mac, &maclen, NGX_HTTP_LINEGATE_SHA256_LEN)
           != 1
        || maclen != NGX_HTTP_LINEGATE_SHA256_LEN)
    {
        goto done;
    }

    rc = 0;

done:

    if (rc != 0) {
        ERR_clear_error();
    }

    EVP_MAC_CTX_free(ctx);
    EVP_MAC_free(hmac);

    return rc;
}


/* second pass: does any v1 equal the expected MAC */

static int
ngx_http_linegate_stripe_match(const char *header, size_t hlen,
    const unsigned char *mac)
{
    int                              matched;
    const char                      *pos;
    unsigned char                    sig[NGX_HTTP_LINEGATE_SHA256_LEN];
    ngx_http_linegate_stripe_item_t  it;

    pos = header;
    matched = 0;

    while (ngx_http_linegate_stripe_next(&pos, header + hlen, &it) == 1) {
        if (!ngx_http_linegate_stripe_is(&it, "v1")) {
            continue;
        }

        /* a v1 that is not 64 hex digits simply does not match */
        if (ngx_http_linegate_hex_decode(it.val, it.vlen, sig, sizeof(sig))
            != 0)
        {
            continue;
        }

        /* no early exit: every candidate costs the same */
        matched |= ngx_http_linegate_ct_equal(sig, sizeof(sig), mac,
                                              NGX_HTTP_LINEGATE_SHA256_LEN);
    }

    return matched;
}


static int
ngx_http_linegate_stripe_fresh(long t, long tolerance, long now)
{
    long  diff;

    /* t >= 0 by parsing; with now >= 0 the difference cannot overflow */
    if (tolerance < 0 || now < 0) {
        return 0;
    }

    diff = (now >= t) ? now - t : t - now;

    return diff <= tolerance;
}
