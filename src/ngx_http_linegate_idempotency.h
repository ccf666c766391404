
/*
 * linegate: idempotent creation of line requests (SPEC 2.4). The key is
 * scoped to the workspace; the lock of a call in flight, the replay and
 * the fingerprint comparison happen inside lr_create's script, the
 * answer is kept in the step that commits the outcome (lr_create, or
 * lr_invoice_store for an add-on), the lock of a failed call is freed by
 * lr_release.
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


struct ngx_http_linegate_lr_s;

typedef void (*ngx_http_linegate_idem_next_pt)(ngx_http_request_t *r,
    struct ngx_http_linegate_lr_s *lr);


/*
 * The key from the Idempotency-Key header or the idempotencyKey field of
 * ctx->body, and the fingerprint of the body. NGX_OK (no key is fine:
 * digest stays empty) or NGX_ERROR with a 400 deferred in lr.
 */
ngx_int_t ngx_http_linegate_idem_prepare(ngx_http_request_t *r,
    struct ngx_http_linegate_lr_s *lr);

/*
 * A creation failed after lr_create was sent (its reply too may have been
 * lost): drop its reservation (if it made one that still has no invoice),
 * free the lock, and mark the request released so that an lr_create still
 * queued in Redis does nothing; then call next whatever Redis said.
 */
void ngx_http_linegate_idem_release(ngx_http_request_t *r,
    struct ngx_http_linegate_lr_s *lr, ngx_http_linegate_idem_next_pt next);
/* the arguments of that release (lr_release.lua), in r's pool */
void ngx_http_linegate_idem_release_args(ngx_http_request_t *r,
    struct ngx_http_linegate_lr_s *lr, ngx_http_linegate_redis_args_t *a);


#endif /* _NGX_HTTP_LINEGATE_IDEMPOTENCY_H_INCLUDED_ */
