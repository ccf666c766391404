
/*
 * linegate: idempotent creation of line requests (SPEC 2.4), Stripe's
 * semantics: the key is scoped to the workspace, a call in flight holds a
 * lock, a business outcome is written in the step that makes it (lr_create
 * for included lines and refusals, lr_invoice_store for an add-on), the
 * same key with another body is refused, and a failed call frees the key
 * (lr_release, which also drops its reservation: line_create.c sends it).
 *
 * This file reads the key and makes the fingerprint; a bad key is a
 * status and a message, which the endpoint answers.
 *
 * The fingerprint is SHA-256 of the body in canonical form (keys sorted,
 * compact, without idempotencyKey, nor a member whose value is null), so
 * the same request sent with other spacing or key order is the same
 * request, and so is one that sends "field": null for a field it leaves
 * out: the bodies fingerprinted (a creation, a usage report) read null
 * as absent in every field (json.c), the same parameters (Stripe's rule).
 */


#include "ngx_http_linegate_module.h"
#include "ngx_http_linegate_idempotency.h"
#include "ngx_http_linegate_crypto.h"
#include "ngx_http_linegate_json.h"
#include "ngx_http_linegate_chars.h"
#include "ngx_http_linegate_headers.h"


#define NGX_HTTP_LINEGATE_IDEM_KEY_MAX  255


static ngx_int_t ngx_http_linegate_idem_header(ngx_http_request_t *r,
    ngx_str_t *key);
static ngx_int_t ngx_http_linegate_idem_key_valid(ngx_str_t *key);
static ngx_int_t ngx_http_linegate_idem_fingerprint(ngx_http_request_t *r,
    json_t *body, ngx_http_linegate_idem_t *idem);
static u_char *ngx_http_linegate_idem_sha256(ngx_pool_t *pool, u_char *data,
    size_t len);


ngx_int_t
ngx_http_linegate_idem_prepare(ngx_http_request_t *r, json_t *body,
    ngx_http_linegate_idem_t *idem, const char **field, const char **message)
{
    ngx_int_t   rc, in_header;
    ngx_str_t   header, value, *key;

    *field = "idempotencyKey";

    in_header = ngx_http_linegate_idem_header(r, &header);

    if (in_header == NGX_ERROR) {
        *message = "Two Idempotency-Key headers with different values";
        return NGX_ERROR;
    }

    rc = ngx_http_linegate_json_str(body, "idempotencyKey", &value);

    if (rc == NGX_ERROR) {
        /* a string refused holds a NUL (json.c): not a printable key */
        *message = json_is_string(json_object_get(body, "idempotencyKey"))
                   ? "An idempotency key is 1 to 255 printable ASCII "
                     "characters"
                   : "idempotencyKey must be a string";
        return NGX_ERROR;
    }

    if (in_header == NGX_OK && rc == NGX_OK
        && (header.len != value.len
            || ngx_memcmp(header.data, value.data, value.len) != 0))
    {
        *message = "The Idempotency-Key header and the idempotencyKey "
                   "field differ";
        return NGX_ERROR;
    }

    if (in_header == NGX_OK) {
        key = &header;

    } else if (rc == NGX_OK) {
        key = &value;

    } else {
        return NGX_OK;
    }

    if (!ngx_http_linegate_idem_key_valid(key)) {
        *message = "An idempotency key is 1 to 255 printable ASCII "
                   "characters";
        return NGX_ERROR;
    }

    idem->digest.data = ngx_http_linegate_idem_sha256(r->pool, key->data,
                                                      key->len);
    if (idem->digest.data == NULL
        || ngx_http_linegate_idem_fingerprint(r, body, idem) != NGX_OK)
    {
        /* memory ran out: no message, the caller answers 500 */
        ngx_str_null(&idem->digest);
        *field = NULL;
        *message = NULL;
        return NGX_ERROR;
    }

    idem->digest.len = 64;

    return NGX_OK;
}


/*
 * NGX_OK: the header is present (possibly empty, which is invalid);
 * NGX_ERROR: given twice with different values. Read from the list, not
 * $http_idempotency_key, which is the first of them up to nginx 1.23
 * and all of them joined with ", " since: the key of a request must not
 * depend on the nginx it reached, nor a second key be ignored.
 */
static ngx_int_t
ngx_http_linegate_idem_header(ngx_http_request_t *r, ngx_str_t *key)
{
    ngx_int_t         rc;
    ngx_table_elt_t  *h;

    rc = ngx_http_linegate_find_header_once(&r->headers_in.headers,
                                            "Idempotency-Key", 1, &h);
    if (rc == NGX_OK) {
        *key = h->value;
    }

    return rc;
}


static ngx_int_t
ngx_http_linegate_idem_key_valid(ngx_str_t *key)
{
    return key->len > 0 && key->len <= NGX_HTTP_LINEGATE_IDEM_KEY_MAX
           && ngx_http_linegate_chars_are(key->data, key->len,
                                          NGX_HTTP_LINEGATE_CHARS_PRINT);
}


static ngx_int_t
ngx_http_linegate_idem_fingerprint(ngx_http_request_t *r, json_t *body,
    ngx_http_linegate_idem_t *idem)
{
    void        *tmp;
    size_t       len;
    u_char      *buf;
    json_t      *copy, *value;
    const char  *key;

    /* shallow: only top-level members are left out */
    copy = json_copy(body);
    if (copy == NULL) {
        return NGX_ERROR;
    }

    (void) json_object_del(copy, "idempotencyKey");

    /* null is absent: the same parameters as a body without the field */
    json_object_foreach_safe(copy, tmp, key, value) {
        if (json_is_null(value)) {
            (void) json_object_del(copy, key);
        }
    }

    len = json_dumpb(copy, NULL, 0, JSON_SORT_KEYS|JSON_COMPACT);
    buf = len ? ngx_pnalloc(r->pool, len) : NULL;

    if (buf == NULL
        || json_dumpb(copy, (char *) buf, len, JSON_SORT_KEYS|JSON_COMPACT)
           != len)
    {
        json_decref(copy);
        return NGX_ERROR;
    }

    json_decref(copy);

    idem->fp.data = ngx_http_linegate_idem_sha256(r->pool, buf, len);
    if (idem->fp.data == NULL) {
        return NGX_ERROR;
    }

    idem->fp.len = 64;

    return NGX_OK;
}


static u_char *
ngx_http_linegate_idem_sha256(ngx_pool_t *pool, u_char *data, size_t len)
{
    u_char  *hex;

    hex = ngx_pnalloc(pool, 65);
    if (hex == NULL) {
        return NULL;
    }

    ngx_http_linegate_sha256_hex(data, len, (char *) hex);

    return hex[0] ? hex : NULL;
}
