
/*
 * linegate: idempotent creation of line requests (SPEC 2.4), Stripe's
 * semantics: the key is scoped to the workspace, a call in flight holds a
 * lock, a business outcome is written in the step that makes it (lr_create
 * for included lines and refusals, lr_invoice_store for an add-on), the
 * same key with another body is refused, and a failed call frees the key
 * (lr_release, which also drops its reservation).
 *
 * The fingerprint is SHA-256 of the body in canonical form (keys sorted,
 * compact, without idempotencyKey), so the same request sent with other
 * spacing or key order is the same request.
 */


#include "ngx_http_linegate_module.h"
#include "ngx_http_linegate_lines.h"
#include "ngx_http_linegate_crypto.h"
#include "ngx_http_linegate_json.h"


#define NGX_HTTP_LINEGATE_IDEM_KEY_MAX  255


static ngx_int_t ngx_http_linegate_idem_header(ngx_http_request_t *r,
    ngx_str_t *key);
static ngx_int_t ngx_http_linegate_idem_key_valid(ngx_str_t *key);
static ngx_int_t ngx_http_linegate_idem_fingerprint(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr);
static u_char *ngx_http_linegate_idem_sha256(ngx_pool_t *pool, u_char *data,
    size_t len);


ngx_int_t
ngx_http_linegate_idem_prepare(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr)
{
    ngx_int_t   rc, in_header;
    ngx_str_t   header, field, *key;

    in_header = ngx_http_linegate_idem_header(r, &header);
    rc = ngx_http_linegate_json_str(lr->ctx->body, "idempotencyKey", &field);

    if (rc == NGX_ERROR) {
        ngx_http_linegate_lines_defer(lr, NGX_HTTP_LINEGATE_LR_DEFER_FIELD,
                                      "idempotencyKey",
                                      "idempotencyKey must be a string");
        return NGX_ERROR;
    }

    if (in_header == NGX_OK && rc == NGX_OK
        && (header.len != field.len
            || ngx_memcmp(header.data, field.data, field.len) != 0))
    {
        ngx_http_linegate_lines_defer(lr, NGX_HTTP_LINEGATE_LR_DEFER_FIELD,
                                      "idempotencyKey",
                                      "The Idempotency-Key header and the "
                                      "idempotencyKey field differ");
        return NGX_ERROR;
    }

    if (in_header == NGX_OK) {
        key = &header;

    } else if (rc == NGX_OK) {
        key = &field;

    } else {
        return NGX_OK;
    }

    if (!ngx_http_linegate_idem_key_valid(key)) {
        ngx_http_linegate_lines_defer(lr, NGX_HTTP_LINEGATE_LR_DEFER_FIELD,
                                      "idempotencyKey",
                                      "An idempotency key is 1 to 255 "
                                      "printable ASCII characters");
        return NGX_ERROR;
    }

    lr->idem.digest.data = ngx_http_linegate_idem_sha256(r->pool, key->data,
                                                         key->len);
    if (lr->idem.digest.data == NULL
        || ngx_http_linegate_idem_fingerprint(r, lr) != NGX_OK)
    {
        ngx_str_null(&lr->idem.digest);
        ngx_http_linegate_lines_defer(lr, NGX_HTTP_LINEGATE_LR_DEFER_FIELD,
                                      NULL, "The request body could not be "
                                      "processed");
        return NGX_ERROR;
    }

    lr->idem.digest.len = 64;

    return NGX_OK;
}


/* NGX_OK: the header is present (possibly empty, which is invalid) */
static ngx_int_t
ngx_http_linegate_idem_header(ngx_http_request_t *r, ngx_str_t *key)
{
    ngx_http_variable_value_t  *vv;

    static ngx_str_t   name = ngx_string("http_idempotency_key");
    static ngx_uint_t  hash;

    if (hash == 0) {
        hash = ngx_hash_key(name.data, name.len);
    }

    vv = ngx_http_get_variable(r, &name, hash);

    if (vv == NULL || vv->not_found) {
        return NGX_DECLINED;
    }

    key->data = vv->data;
    key->len = vv->len;

    return NGX_OK;
}


static ngx_int_t
ngx_http_linegate_idem_key_valid(ngx_str_t *key)
{
    size_t  i;

    if (key->len == 0 || key->len > NGX_HTTP_LINEGATE_IDEM_KEY_MAX) {
        return 0;
    }

    for (i = 0; i < key->len; i++) {
        if (key->data[i] < 0x20 || key->data[i] > 0x7e) {
            return 0;
        }
    }

    return 1;
}


static ngx_int_t
ngx_http_linegate_idem_fingerprint(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr)
{
    size_t   len;
    u_char  *buf;
    json_t  *copy;

    /* shallow: only the top-level idempotencyKey is left out */
    copy = json_copy(lr->ctx->body);
    if (copy == NULL) {
        return NGX_ERROR;
    }

    (void) json_object_del(copy, "idempotencyKey");

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

    lr->idem.fp.data = ngx_http_linegate_idem_sha256(r->pool, buf, len);
    if (lr->idem.fp.data == NULL) {
        return NGX_ERROR;
    }

    lr->idem.fp.len = 64;

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


void
ngx_http_linegate_idem_release(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, ngx_http_linegate_idem_next_pt next)
{
    ngx_http_linegate_idem_release_args(r, lr, &lr->args);

    /* handed to the durable writes: the request's cleanup has no more to do */
    lr->settled = 1;

    ngx_http_linegate_lines_durable(r, lr,
                                    NGX_HTTP_LINEGATE_SCRIPT_LR_RELEASE,
                                    "lr_release", next);
}


void
ngx_http_linegate_idem_release_args(ngx_http_request_t *r,
    ngx_http_linegate_lr_t *lr, ngx_http_linegate_redis_args_t *a)
{
    ngx_str_t  ws;

    /* an API key lr_create was to resolve: the request's owner index */
    ws = lr->ws;

    if (ws.len == 0
        && !(lr->who.kind == NGX_HTTP_LINEGATE_AUTH_API_KEY
             && !lr->who.cached))
    {
        ws = lr->who.value;
    }

    ngx_http_linegate_redis_args_init(a);

    ngx_http_linegate_redis_arg_str(a, &ws);
    ngx_http_linegate_redis_arg_str(a, &lr->id);
    ngx_http_linegate_redis_arg_str(a, &lr->idem.digest);
    ngx_http_linegate_redis_arg_int(r, a, NGX_HTTP_LINEGATE_LR_STALE);
}
