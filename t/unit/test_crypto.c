
/*
 * Unit tests for src/ngx_http_linegate_crypto.c, TAP output.
 */


#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "ngx_http_linegate_crypto.h"
#include "tap.h"


#define NOW      1700000000L
#define SECRET   "whsec_test_5WbX5kEWLlfzsGNjH64I8lOOqUB6e8FH"
#define BODY     "{\"id\":\"evt_1\",\"type\":\"invoice.paid\"}"


static void
test_sha256(void)
{
    char            out[65];
    char           *million;
    unsigned char   md[32], whole[32];

    ngx_http_linegate_sha256_hex((const unsigned char *) "", 0, out);
    ok(strcmp(out, "e3b0c44298fc1c149afbf4c8996fb924"
                   "27ae41e4649b934ca495991b7852b855") == 0,
       "sha256 of empty string");

    ngx_http_linegate_sha256_hex((const unsigned char *) "abc", 3, out);
    ok(strcmp(out, "ba7816bf8f01cfea414140de5dae2223"
                   "b00361a396177a9cb410ff61f20015ad") == 0,
       "sha256 of abc");

    ngx_http_linegate_sha256_hex((const unsigned char *)
        "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq", 56, out);
    ok(strcmp(out, "248d6a61d20638b8e5c026930c3e6039"
                   "a33ce45964ff2167f6ecedd419db06c1") == 0,
       "sha256 of the 448-bit FIPS 180 vector");

    /* two parts (a key id and its secret, auth.c): one digest of both */
    ok(ngx_http_linegate_sha256((const unsigned char *) "ab", 2,
                                (const unsigned char *) "c", 1, md) == 0
       && ngx_http_linegate_sha256((const unsigned char *) "abc", 3, NULL, 0,
                                   whole) == 0
       && memcmp(md, whole, sizeof(md)) == 0,
       "sha256 of two parts: the digest of both");

    million = malloc(1000000);
    if (million == NULL) {
        ok(0, "sha256 of a million a");
        return;
    }

    memset(million, 'a', 1000000);
    ngx_http_linegate_sha256_hex((const unsigned char *) million, 1000000,
                                 out);
    ok(strcmp(out, "cdc76e5c9914fb9281a1c7e284d73e67"
                   "f1809a48a497200e046d39ccc7112cd0") == 0,
       "sha256 of a million a");
    free(million);
}


static void
test_ct_equal(void)
{
    ok(ngx_http_linegate_ct_equal("abcdef", 6, "abcdef", 6) == 1,
       "ct_equal: same content");
    ok(ngx_http_linegate_ct_equal("abcdef", 6, "abcdeg", 6) == 0,
       "ct_equal: last byte differs");
    ok(ngx_http_linegate_ct_equal("xbcdef", 6, "abcdef", 6) == 0,
       "ct_equal: first byte differs");
    ok(ngx_http_linegate_ct_equal("abc", 3, "abcdef", 6) == 0,
       "ct_equal: prefix of different length");
    ok(ngx_http_linegate_ct_equal("", 0, "", 0) == 1,
       "ct_equal: both empty");
    ok(ngx_http_linegate_ct_equal("a", 1, "", 0) == 0,
       "ct_equal: one empty");

    ok(ngx_http_linegate_secret_equal("s3cret-token", 12, "s3cret-token", 12)
       == 1, "secret_equal: same secret");
    ok(ngx_http_linegate_secret_equal("s3cret-tokem", 12, "s3cret-token", 12)
       == 0, "secret_equal: last byte differs");
    ok(ngx_http_linegate_secret_equal("s3cret", 6, "s3cret-token", 12) == 0,
       "secret_equal: a prefix of the secret");
    ok(ngx_http_linegate_secret_equal("s3cret-token-", 13, "s3cret-token",
                                      12) == 0,
       "secret_equal: the secret and one byte more");
    ok(ngx_http_linegate_secret_equal("", 0, "", 0) == 0,
       "secret_equal: no configured secret matches nothing");
}


static int
b64_is(const char *in, const char *expect, size_t expect_len)
{
    unsigned char  out[64];
    ssize_t        n;

    n = ngx_http_linegate_base64url_decode(in, strlen(in), out, sizeof(out));

    return n == (ssize_t) expect_len && memcmp(out, expect, expect_len) == 0;
}


static int
b64_bad(const char *in, size_t len)
{
    unsigned char  out[64];

    return ngx_http_linegate_base64url_decode(in, len, out, sizeof(out))
           == -1;
}


static void
test_base64url(void)
{
    unsigned char  out[8];

    ok(b64_is("", "", 0), "b64url: empty");
    ok(b64_is("Zg", "f", 1), "b64url: Zg");
    ok(b64_is("Zm8", "fo", 2), "b64url: Zm8");
    ok(b64_is("Zm9v", "foo", 3), "b64url: Zm9v");
    ok(b64_is("Zm9vYg", "foob", 4), "b64url: Zm9vYg");
    ok(b64_is("Zm9vYmE", "fooba", 5), "b64url: Zm9vYmE");
    ok(b64_is("Zm9vYmFy", "foobar", 6), "b64url: Zm9vYmFy");
    ok(b64_is("-_8", "\xfb\xff", 2), "b64url: - and _ map to 62 and 63");

    ok(b64_bad("Zg==", 4), "b64url: padding refused");
    ok(b64_bad("Zg=", 3), "b64url: single pad refused");
    ok(b64_bad("Zm9v+w", 6), "b64url: '+' refused");
    ok(b64_bad("Zm9v/w", 6), "b64url: '/' refused");
    ok(b64_bad("Zm9 v", 5), "b64url: inner space refused");
    ok(b64_bad("Zm9v\n", 5), "b64url: newline refused");
    ok(b64_bad("Zm9v\0Zg", 7), "b64url: NUL refused");
    ok(b64_bad("Zm9vY", 5), "b64url: length % 4 == 1 refused");
    ok(b64_bad("Z", 1), "b64url: single character refused");
    ok(b64_bad("Zh", 2), "b64url: non-zero trailing bits (2 chars)");
    ok(b64_bad("Zm9", 3), "b64url: non-zero trailing bits (3 chars)");
    ok(b64_bad("Zm9v\xc3\xa9", 6), "b64url: non-ASCII refused");

    ok(ngx_http_linegate_base64url_decode("Zm9vYmFy", 8, out, 5) == -1,
       "b64url: output buffer too small refused");
    ok(ngx_http_linegate_base64url_decode("Zm9vYmFy", 8, out, 6) == 6,
       "b64url: output buffer exactly large enough");
}


static const char  alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";


static int
token_alphabet_ok(const char *s, size_t n)
{
    size_t  i;

    for (i = 0; i < n; i++) {
        if (!((s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= 'a' && s[i] <= 'z')
              || (s[i] >= '0' && s[i] <= '9')))
        {
            return 0;
        }
    }

    return 1;
}


static void
test_random(void)
{
    int            seen[256], all, fair, c, first8;
    char           a[65], b[65], big[62 * 1000 + 1], hex[201];
    size_t         i, same;
    unsigned char  r1[3000], r2[3000], span[10000];

    /* the per-process buffer of 4096 bytes: draws across refills */
    ok(ngx_http_linegate_random_bytes(r1, sizeof(r1)) == 0
       && ngx_http_linegate_random_bytes(r2, sizeof(r2)) == 0,
       "random_bytes: two draws, the second across a refill");

    for (same = 0, i = 0; i < sizeof(r1); i++) {
        same += r1[i] == r2[i];
    }

    /* ~12 equal bytes expected (1/256 each) */
    ok(same < 60, "random_bytes: the draws are not the same bytes");

    ok(ngx_http_linegate_random_bytes(span, sizeof(span)) == 0,
       "random_bytes: more than the buffer in one call");

    memset(seen, 0, sizeof(seen));

    for (i = 0; i < sizeof(span); i++) {
        seen[span[i]]++;
    }

    for (all = 1, i = 0; i < 256; i++) {
        all = all && seen[i] > 0;
    }

    ok(all, "random_bytes: every byte value in 10000 bytes");

    ngx_http_linegate_random_reset();
    ok(ngx_http_linegate_random_bytes(r2, 16) == 0
       && memcmp(r2, r1, 16) != 0,
       "random_bytes: after a reset, fresh bytes");

    memset(a, '#', sizeof(a));
    ok(ngx_http_linegate_random_token(a, 64) == 0
       && token_alphabet_ok(a, 64),
       "random_token: 64 chars of [A-Za-z0-9]");

    /* the preview token's random part fills its buffer to the end */
    ok(a[64] == '#', "random_token: writes nchars bytes, nothing after");

    memset(b, '#', sizeof(b));
    ok(ngx_http_linegate_random_token(b, 64) == 0
       && memcmp(a, b, 64) != 0,
       "random_token: two tokens differ");

    a[0] = '#';
    ok(ngx_http_linegate_random_token(a, 0) == 0 && a[0] == '#',
       "random_token: zero length writes nothing");

    memset(seen, 0, sizeof(seen));
    ok(ngx_http_linegate_random_token(big, sizeof(big) - 1) == 0
       && token_alphabet_ok(big, sizeof(big) - 1),
       "random_token: 62000 chars, alphabet");

    for (i = 0; i < sizeof(big) - 1; i++) {
        seen[(unsigned char) big[i]]++;
    }

    /* 1000 expected per symbol; +-30% is > 9 sigma */
    all = 1;
    fair = 1;
    first8 = 0;

    for (i = 0; i < 62; i++) {
        c = seen[(unsigned char) alphabet[i]];
        all = all && c > 0;
        fair = fair && c > 700 && c < 1300;
        first8 += (i < 8) ? c : 0;
    }

    ok(all, "random_token: every symbol appears");
    ok(fair, "random_token: no symbol grossly over- or under-represented");

    /*
     * A plain "byte % 62" gives the first 8 symbols 5/256 instead of
     * 4/256: about 9690 instead of 8000 here (sigma ~ 90).
     */
    ok(first8 < 8800, "random_token: no modulo bias on the first symbols");

    ok(ngx_http_linegate_random_hex(hex, 16) == 0 && strlen(hex) == 32
       && strspn(hex, "0123456789abcdef") == 32,
       "random_hex: 16 bytes -> 32 lowercase hex chars");

    ok(ngx_http_linegate_random_hex(hex, 100) == 0 && strlen(hex) == 200
       && strspn(hex, "0123456789abcdef") == 200,
       "random_hex: 100 bytes (several RAND_bytes calls)");
}


/* the expected v1, computed independently of the code under test */

static void
stripe_v1(const char *secret, const char *t, const char *body, char *out)
{
    char           payload[4096];
    unsigned int   len, i;
    unsigned char  md[EVP_MAX_MD_SIZE];

    snprintf(payload, sizeof(payload), "%s.%s", t, body);
    HMAC(EVP_sha256(), secret, (int) strlen(secret),
         (const unsigned char *) payload, strlen(payload), md, &len);

    for (i = 0; i < len; i++) {
        sprintf(out + 2 * i, "%02x", md[i]);
    }
}


static int
stripe(const char *header, const char *body, const char *secret, long now)
{
    return ngx_http_linegate_stripe_signature_verify(header, strlen(header),
               (const unsigned char *) body, strlen(body), secret,
               strlen(secret), 300, now);
}


static void
test_stripe(void)
{
    int     rc;
    char    good[65], bad[65], hdr[8192], upper[65];
    size_t  i;

    stripe_v1(SECRET, "1700000000", BODY, good);
    stripe_v1("whsec_other", "1700000000", BODY, bad);

    snprintf(hdr, sizeof(hdr), "t=1700000000,v1=%s", good);
    ok(stripe(hdr, BODY, SECRET, NOW) == 0, "stripe: single v1");

    snprintf(hdr, sizeof(hdr), "t=1700000000,v1=%s,v1=%s,v0=%s", bad, good,
             bad);
    ok(stripe(hdr, BODY, SECRET, NOW) == 0,
       "stripe: several v1, the second one matches");

    snprintf(hdr, sizeof(hdr), "t=1700000000,v1=%s,v1=%s", good, bad);
    ok(stripe(hdr, BODY, SECRET, NOW) == 0,
       "stripe: a later non-matching v1 does not undo a match");

    snprintf(hdr, sizeof(hdr), "v0=%s,v1=%s,scheme9=x,t=1700000000", bad,
             good);
    ok(stripe(hdr, BODY, SECRET, NOW) == 0,
       "stripe: any order, unknown schemes ignored");

    snprintf(hdr, sizeof(hdr), "t=1700000000, v1=%s", good);
    ok(stripe(hdr, BODY, SECRET, NOW) == 0,
       "stripe: space after comma tolerated");

    for (i = 0; i < 64; i++) {
        upper[i] = (good[i] >= 'a') ? (char) (good[i] - 32) : good[i];
    }

    upper[64] = '\0';
    snprintf(hdr, sizeof(hdr), "t=1700000000,v1=%s", upper);
    ok(stripe(hdr, BODY, SECRET, NOW) == 0, "stripe: uppercase hex v1");

    snprintf(hdr, sizeof(hdr), "t=1700000000,v1=%s", good);
    ok(stripe(hdr, BODY, "whsec_other", NOW) == -2, "stripe: wrong secret");
    ok(stripe(hdr, "{\"id\":\"evt_2\"}", SECRET, NOW) == -2,
       "stripe: tampered body");
    ok(stripe(hdr, BODY, "", NOW) == -2, "stripe: empty secret never matches");

    snprintf(hdr, sizeof(hdr), "t=1700000001,v1=%s", good);
    ok(stripe(hdr, BODY, SECRET, NOW) == -2,
       "stripe: timestamp is part of the signed payload");

    snprintf(hdr, sizeof(hdr), "t=1700000000,v0=%s", good);
    ok(stripe(hdr, BODY, SECRET, NOW) == -2, "stripe: v0 alone not accepted");

    snprintf(hdr, sizeof(hdr), "t=1700000000,v1=%.62s", good);
    ok(stripe(hdr, BODY, SECRET, NOW) == -2, "stripe: truncated v1");

    snprintf(hdr, sizeof(hdr), "t=1700000000,v1=%s", good);
    ok(stripe(hdr, BODY, SECRET, NOW + 300) == 0,
       "stripe: exactly 300 s old accepted");
    ok(stripe(hdr, BODY, SECRET, NOW + 301) == -3,
       "stripe: 301 s old refused");
    ok(stripe(hdr, BODY, SECRET, NOW - 301) == -3,
       "stripe: 301 s in the future refused");
    ok(stripe(hdr, "{}", SECRET, NOW + 301) == -2,
       "stripe: bad signature reported before the timestamp");

    ok(stripe("", BODY, SECRET, NOW) == -1, "stripe: empty header");
    ok(stripe("garbage", BODY, SECRET, NOW) == -1, "stripe: no key=value");

    snprintf(hdr, sizeof(hdr), "v1=%s", good);
    ok(stripe(hdr, BODY, SECRET, NOW) == -1, "stripe: missing t");

    snprintf(hdr, sizeof(hdr), "t=17000x0000,v1=%s", good);
    ok(stripe(hdr, BODY, SECRET, NOW) == -1, "stripe: non-numeric t");

    snprintf(hdr, sizeof(hdr), "t=-1700000000,v1=%s", good);
    ok(stripe(hdr, BODY, SECRET, NOW) == -1, "stripe: negative t");

    snprintf(hdr, sizeof(hdr), "t=,v1=%s", good);
    ok(stripe(hdr, BODY, SECRET, NOW) == -1, "stripe: empty t");

    snprintf(hdr, sizeof(hdr), "t=1700000000,t=1700000000,v1=%s", good);
    ok(stripe(hdr, BODY, SECRET, NOW) == -1, "stripe: duplicate t");

    snprintf(hdr, sizeof(hdr), "t=1700000000,v1=%s,", good);
    ok(stripe(hdr, BODY, SECRET, NOW) == -1, "stripe: trailing comma");

    snprintf(hdr, sizeof(hdr), "t=99999999999999999999,v1=%s", good);
    ok(stripe(hdr, BODY, SECRET, NOW) == -1, "stripe: overlong t");

    snprintf(hdr, sizeof(hdr), "t=1700000000,v1=%s", good);
    rc = (int) strlen(hdr);
    memset(hdr + rc, 'x', 4097 - rc);
    hdr[4097] = '\0';
    hdr[rc] = ',';
    hdr[rc + 1] = 'x';
    hdr[rc + 2] = '=';
    ok(stripe(hdr, BODY, SECRET, NOW) == -1, "stripe: header > 4096 refused");

    hdr[4096] = '\0';
    ok(stripe(hdr, BODY, SECRET, NOW) == 0,
       "stripe: header of exactly 4096 accepted");
}


/* the reference vectors (vectors.h): key 00..0f, message 00..len-1 */
static void
test_siphash(void)
{
    size_t          i;
    unsigned char   msg[64];
    uint64_t        k0, k1, out[2];

    for (i = 0; i < sizeof(msg); i++) {
        msg[i] = (unsigned char) i;
    }

    k0 = 0x0706050403020100ULL;
    k1 = 0x0f0e0d0c0b0a0908ULL;

    ok(ngx_http_linegate_siphash(k0, k1, msg, 0) == 0x726fdb47dd0e0e31ULL,
       "siphash: empty message");
    ok(ngx_http_linegate_siphash(k0, k1, msg, 1) == 0x74f839c593dc67fdULL,
       "siphash: one byte");
    ok(ngx_http_linegate_siphash(k0, k1, msg, 15) == 0xa129ca6149be45e5ULL,
       "siphash: 15 bytes (the paper's example)");
    ok(ngx_http_linegate_siphash(k0, k1, msg, 15)
       != ngx_http_linegate_siphash(k0 + 1, k1, msg, 15),
       "siphash: another key, another hash");

    /* vectors_sip128: the output's two words, each little-endian */
    ngx_http_linegate_siphash128(k0, k1, msg, 0, out);
    ok(out[0] == 0xe6a825ba047f81a3ULL && out[1] == 0x930255c71472f66dULL,
       "siphash128: empty message");
    ngx_http_linegate_siphash128(k0, k1, msg, 8, out);
    ok(out[0] == 0x61f55862baa9623bULL && out[1] == 0xb49714f364e2830fULL,
       "siphash128: 8 bytes (the request id's message)");
}


int
main(void)
{
    test_sha256();
    test_siphash();
    test_ct_equal();
    test_base64url();
    test_random();
    test_stripe();

    return tap_done();
}
