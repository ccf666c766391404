
/*
 * linegate: idempotent creation of line requests (SPEC 2.4). The key is
 * scoped to the workspace; the lock of a call in flight, the replay and
 * the fingerprint comparison happen inside lr_create's script, the
 * answer is kept in the step that commits the outcome (lr_create, or
 * lr_invoice_store for an add-on), the lock of a failed call is freed by
 * lr_release (ngx_http_linegate_line_create.c).
 */


#ifndef _NGX_HTTP_LINEGATE_IDEMPOTENCY_H_INCLUDED_
#define _NGX_HTTP_LINEGATE_IDEMPOTENCY_H_INCLUDED_


#include "ngx_http_linegate_module.h"


/* a reservation whose invoice never came is abandoned after this (ms) */
#define NGX_HTTP_LINEGATE_LR_STALE  600000


typedef struct {
    ngx_str_t                       digest;     /* sha256hex of the key */
    ngx_str_t                       fp;         /* of the canonical body */
} ngx_http_linegate_idem_t;


/*
 * The key from the Idempotency-Key header or the idempotencyKey field of
 * body, and the fingerprint of the body, into idem. NGX_OK (no key is
 * fine: idem->digest stays empty), or NGX_ERROR with the 400's field (NULL
 * when the body as a whole failed) and message, for the caller to answer;
 * message NULL: memory ran out, a 500.
 */
ngx_int_t ngx_http_linegate_idem_prepare(ngx_http_request_t *r, json_t *body,
    ngx_http_linegate_idem_t *idem, const char **field, const char **message);


#endif /* _NGX_HTTP_LINEGATE_IDEMPOTENCY_H_INCLUDED_ */
