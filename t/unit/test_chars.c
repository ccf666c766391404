
/*
 * Unit tests for src/ngx_http_linegate_chars.c, TAP output: the table
 * against each class's definition, and E.164 numbers.
 */


#include <stdio.h>
#include <string.h>

#include "ngx_http_linegate_chars.h"
#include "tap.h"


#define LOWER   "abcdefghijklmnopqrstuvwxyz"
#define UPPER   "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
#define DIGITS  "0123456789"


/* c is one of the set's bytes (not its NUL) */
static int
in(int c, const char *set)
{
    return c != 0 && strchr(set, c) != NULL;
}


static int
member(unsigned cls, int c)
{
    switch (cls) {

    case NGX_HTTP_LINEGATE_CHARS_DIGIT:
        return in(c, DIGITS);
    case NGX_HTTP_LINEGATE_CHARS_HEX:
        return in(c, DIGITS "abcdef");
    case NGX_HTTP_LINEGATE_CHARS_ALPHA:
        return in(c, LOWER UPPER);
    case NGX_HTTP_LINEGATE_CHARS_ALNUM:
        return in(c, LOWER UPPER DIGITS);
    case NGX_HTTP_LINEGATE_CHARS_ID:
        return in(c, LOWER UPPER DIGITS "_-");
    case NGX_HTTP_LINEGATE_CHARS_WORD:
        return in(c, LOWER UPPER DIGITS "_");
    case NGX_HTTP_LINEGATE_CHARS_LOWER_WORD:
        return in(c, LOWER DIGITS "_");
    case NGX_HTTP_LINEGATE_CHARS_DIGIT_DASH:
        return in(c, DIGITS "-");
    case NGX_HTTP_LINEGATE_CHARS_PRINT:
        return c >= 0x20 && c <= 0x7e;
    case NGX_HTTP_LINEGATE_CHARS_GRAPH:
        return c >= 0x21 && c <= 0x7e;
    case NGX_HTTP_LINEGATE_CHARS_TEXT:
        return (c >= 0x20 && c <= 0x7e) || c >= 0x80;
    case NGX_HTTP_LINEGATE_CHARS_LABEL:
        return in(c, LOWER UPPER DIGITS "_.:/-");
    case NGX_HTTP_LINEGATE_CHARS_ATEXT:
        return in(c, LOWER UPPER DIGITS "!#$%&'*+/=?^_`{|}~-");
    }

    return -1;
}


static void
test_table(void)
{
    int       c, wrong;
    char      name[64];
    unsigned  cls;

    for (cls = 1; cls <= NGX_HTTP_LINEGATE_CHARS_ATEXT; cls <<= 1) {
        wrong = 0;

        for (c = 0; c < 256; c++) {
            if (!ngx_http_linegate_char_is(c, cls) != !member(cls, c)) {
                wrong++;
            }
        }

        snprintf(name, sizeof(name), "class 0x%04x: the table is right",
                 cls);
        ok(wrong == 0, name);
    }

    for (c = 0, wrong = 0; c < 256; c++) {
        if (ngx_http_linegate_chars[c] >= NGX_HTTP_LINEGATE_CHARS_ATEXT << 1)
        {
            wrong++;
        }
    }

    ok(wrong == 0, "no bit of an undefined class");
}


static void
test_are(void)
{
    ok(ngx_http_linegate_chars_are((unsigned char *) "", 0,
                                   NGX_HTTP_LINEGATE_CHARS_DIGIT),
       "empty: every byte is of the class");
    ok(ngx_http_linegate_chars_are((unsigned char *) "ab_C-9", 6,
                                   NGX_HTTP_LINEGATE_CHARS_ID),
       "an id");
    ok(!ngx_http_linegate_chars_are((unsigned char *) "ab.c", 4,
                                    NGX_HTTP_LINEGATE_CHARS_ID),
       "a dot is not of an id");
    ok(!ngx_http_linegate_chars_are((unsigned char *) "ab\0c", 4,
                                    NGX_HTTP_LINEGATE_CHARS_ID),
       "a NUL is not of an id");
    ok(!ngx_http_linegate_chars_are((unsigned char *) "\xc3\xa9", 2,
                                    NGX_HTTP_LINEGATE_CHARS_ALNUM),
       "UTF-8 letters are not ASCII alnum");
    ok(ngx_http_linegate_chars_are((unsigned char *) "deadBEEF", 8,
                                   NGX_HTTP_LINEGATE_CHARS_DIGIT
                                   | NGX_HTTP_LINEGATE_CHARS_ALPHA),
       "a mask of two classes");
    ok(!ngx_http_linegate_chars_are((unsigned char *) "deadBEEF", 8,
                                    NGX_HTTP_LINEGATE_CHARS_HEX),
       "hex is lowercase");
}


static void
test_e164(void)
{
    ok(ngx_http_linegate_e164_valid((unsigned char *) "+15551234", 9),
       "+ and 8 digits");
    ok(ngx_http_linegate_e164_valid((unsigned char *) "+123456789012345",
                                    16),
       "+ and 15 digits");
    ok(!ngx_http_linegate_e164_valid((unsigned char *) "+1555123", 8),
       "+ and 7 digits");
    ok(!ngx_http_linegate_e164_valid((unsigned char *) "+1234567890123456",
                                     17),
       "+ and 16 digits");
    ok(!ngx_http_linegate_e164_valid((unsigned char *) "155512345", 9),
       "no +");
    ok(!ngx_http_linegate_e164_valid((unsigned char *) "+1555 1234", 10),
       "a space");
    ok(!ngx_http_linegate_e164_valid((unsigned char *) "++15551234", 10),
       "two +");
    ok(!ngx_http_linegate_e164_valid((unsigned char *) "", 0), "empty");

    /* no country code starts with 0: valid refuses it, shape does not */
    ok(!ngx_http_linegate_e164_valid((unsigned char *) "+04155550100", 12),
       "a country code starting with 0");
    ok(ngx_http_linegate_e164_shape((unsigned char *) "+04155550100", 12),
       "the shape of one stored before");
    ok(ngx_http_linegate_e164_shape((unsigned char *) "+15551234", 9),
       "shape: + and 8 digits");
    ok(!ngx_http_linegate_e164_shape((unsigned char *) "+0555123", 8),
       "shape: + and 7 digits");
    ok(!ngx_http_linegate_e164_shape((unsigned char *) "0155512345", 10),
       "shape: no +");
}


int
main(void)
{
    test_table();
    test_are();
    test_e164();

    return tap_done();
}
