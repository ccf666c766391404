
/*
 * linegate: character classes and E.164 numbers. One table says which
 * classes each byte belongs to; every check of an id, a key id, a token,
 * a hex string, a label or a number asks it.
 *
 * Pure C: no nginx headers, so it is unit-tested outside nginx
 * (t/unit/test_chars.c).
 */


#ifndef _NGX_HTTP_LINEGATE_CHARS_H_INCLUDED_
#define _NGX_HTTP_LINEGATE_CHARS_H_INCLUDED_


#include <stddef.h>
#include <stdint.h>


/* the classes: a byte's entry in ngx_http_linegate_chars[] */
#define NGX_HTTP_LINEGATE_CHARS_DIGIT       0x0001  /* 0-9 */
#define NGX_HTTP_LINEGATE_CHARS_HEX         0x0002  /* 0-9a-f */
#define NGX_HTTP_LINEGATE_CHARS_ALPHA       0x0004  /* A-Za-z */
#define NGX_HTTP_LINEGATE_CHARS_ALNUM       0x0008  /* A-Za-z0-9 */
#define NGX_HTTP_LINEGATE_CHARS_ID          0x0010  /* A-Za-z0-9_- */
#define NGX_HTTP_LINEGATE_CHARS_WORD        0x0020  /* A-Za-z0-9_ */
#define NGX_HTTP_LINEGATE_CHARS_LOWER_WORD  0x0040  /* a-z0-9_ */
#define NGX_HTTP_LINEGATE_CHARS_DIGIT_DASH  0x0080  /* 0-9- */
#define NGX_HTTP_LINEGATE_CHARS_PRINT       0x0100  /* 0x20-0x7e */
#define NGX_HTTP_LINEGATE_CHARS_GRAPH       0x0200  /* 0x21-0x7e */
/* no control character: 0x20-0x7e and 0x80-0xff */
#define NGX_HTTP_LINEGATE_CHARS_TEXT        0x0400
/* a metrics label value: A-Za-z0-9_.:/- */
#define NGX_HTTP_LINEGATE_CHARS_LABEL       0x0800
/* an e-mail address's dot-atom text (RFC 5322), without the dot */
#define NGX_HTTP_LINEGATE_CHARS_ATEXT       0x1000


extern const uint16_t  ngx_http_linegate_chars[256];


/* the byte c is of a class of the mask cls */
#define ngx_http_linegate_char_is(c, cls)                                   \
    (ngx_http_linegate_chars[(unsigned char) (c)] & (cls))

/* 1: every byte of p[0 .. len) is of a class of the mask cls */
int ngx_http_linegate_chars_are(const unsigned char *p, size_t len,
    unsigned cls);

/*
 * 1: an E.164 number, "+" and 8 to 15 digits, the first (the country
 * code's) not 0: a number a client or the operator gives
 */
int ngx_http_linegate_e164_valid(const unsigned char *p, size_t len);

/*
 * 1: "+" and 8 to 15 digits, whatever the first: a number read back
 * that may have been stored before "+0..." was refused (2026-11-28),
 * which must still be settled or removed
 */
int ngx_http_linegate_e164_shape(const unsigned char *p, size_t len);

#define NGX_HTTP_LINEGATE_TENANT_ID_MAX     64

/*
 * 1: a workspace or account id, 1 to 64 of [A-Za-z0-9_-]: it goes into
 * Redis keys between "{ws:" and "}", so "}" or ":" must never be in one
 */
int ngx_http_linegate_tenant_id_valid(const unsigned char *p, size_t len);


#endif /* _NGX_HTTP_LINEGATE_CHARS_H_INCLUDED_ */
