
/*
 * Fuzz target: the Stripe-Signature header and its check
 * (ngx_http_linegate_stripe_signature_verify(), src/ngx_http_linegate_
 * crypto.c, called by webhook.c), and the strict base64url decoder.
 *
 * Input: the header value, a newline, the raw body.  Each input is
 * checked three times: as given; with a correct ",v1=" for its own t=
 * appended (so the match and the timestamp tolerance are reached); and
 * the base64url decoder on the header.  Invariants: a header that does
 * not carry the right MAC is never accepted; a well-formed header with
 * the right MAC and a fresh t= always is.
 */


#include <openssl/hmac.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ngx_http_linegate_crypto.h"


#define FUZZ_SECRET  "whsec_fuzz0123456789abcdef"
#define FUZZ_NOW     1700000000L


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int             rc;
    char           *hdr, *signed_hdr, *tail, tbuf[32];
    long            t;
    size_t          hlen, blen, i, n;
    unsigned int    maclen;
    const uint8_t  *nl, *body;
    unsigned char   mac[32], *out, *msg;

    nl = memchr(data, '\n', size);
    hlen = nl ? (size_t) (nl - data) : size;
    body = nl ? nl + 1 : data + size;
    blen = size - (body - data);

    /* exact-size copies: ASan sees any read past either end */
    hdr = malloc(hlen ? hlen : 1);
    memcpy(hdr, data, hlen);

    rc = ngx_http_linegate_stripe_signature_verify(hdr, hlen, body, blen,
             FUZZ_SECRET, sizeof(FUZZ_SECRET) - 1, 300, FUZZ_NOW);

    if (rc != NGX_HTTP_LINEGATE_SIG_OK && rc != NGX_HTTP_LINEGATE_SIG_MALFORMED
        && rc != NGX_HTTP_LINEGATE_SIG_NO_MATCH
        && rc != NGX_HTTP_LINEGATE_SIG_TOO_OLD)
    {
        __builtin_trap();
    }

    /* no secret: never a match */
    if (ngx_http_linegate_stripe_signature_verify(hdr, hlen, body, blen,
            NULL, 0, 300, FUZZ_NOW) == NGX_HTTP_LINEGATE_SIG_OK)
    {
        __builtin_trap();
    }

    out = malloc(hlen ? hlen : 1);
    (void) ngx_http_linegate_base64url_decode(hdr, hlen, out, hlen);
    free(out);

    /* the t= of the header as the module reads it: digits after "t=" */
    t = -1;
    if (hlen > 2 && memcmp(hdr, "t=", 2) == 0) {
        t = 0;
        for (i = 2; i < hlen && i < 14 && hdr[i] >= '0' && hdr[i] <= '9';
             i++)
        {
            t = t * 10 + (hdr[i] - '0');
        }

        tail = memchr(hdr, ',', hlen);
        if (i == 2 || (i < hlen && hdr[i] != ',') || tail == NULL) {
            t = -1;
        }
    }

    if (t >= 0) {
        /* sign "t.body" as Stripe does, append v1=<hex> */
        n = i - 2;
        memcpy(tbuf, hdr + 2, n);
        tbuf[n++] = '.';
        msg = malloc(n + blen + 1);
        memcpy(msg, tbuf, n);
        memcpy(msg + n, body, blen);

        HMAC(EVP_sha256(), FUZZ_SECRET, sizeof(FUZZ_SECRET) - 1, msg,
             n + blen, mac, &maclen);
        free(msg);

        signed_hdr = malloc(hlen + 4 + 64 + 1);
        memcpy(signed_hdr, hdr, hlen);
        n = hlen;
        memcpy(signed_hdr + n, ",v1=", 4);
        n += 4;

        for (i = 0; i < 32; i++) {
            snprintf(signed_hdr + n + 2 * i, 3, "%02x", mac[i]);
        }

        n += 64;

        rc = ngx_http_linegate_stripe_signature_verify(signed_hdr, n, body,
                 blen, FUZZ_SECRET, sizeof(FUZZ_SECRET) - 1, 300, FUZZ_NOW);

        if (rc == NGX_HTTP_LINEGATE_SIG_OK
            && (t < FUZZ_NOW - 300 || t > FUZZ_NOW + 300))
        {
            __builtin_trap();
        }

        free(signed_hdr);
    }

    free(hdr);

    return 0;
}
