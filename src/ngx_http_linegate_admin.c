
/* linegate: placeholder until this endpoint family lands. */


#include "ngx_http_linegate_module.h"
#include "ngx_http_linegate_reply.h"


void
ngx_http_linegate_operator_handler(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx)
{
    ngx_http_linegate_error(r, NGX_HTTP_NOT_IMPLEMENTED, NULL,
                            "Not implemented");
}
