
/*
 * Fuzz target: the body of POST /provisioning/confirm as read by
 * ngx_http_linegate_confirm_token() (src/ngx_http_linegate_provision_
 * confirm.c, included here): JSON object, "preview_token" present and a
 * string, then shaped as "lpv_" and alphanumerics or treated as unknown.
 * The input is the raw body.
 *
 * Invariants: a refused body is NGX_ABORT with why it is refused, and
 * is not answered (the caller answers its 400 once the account's key id
 * is checked: the credentials before the body); an accepted one leaves
 * either "-" (unknown token) or a well-formed token.
 */


#include "fuzz_ngx.h"
#include "ngx_http_linegate_provision_confirm.c"


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t                        i;
    ngx_int_t                     rc;
    ngx_http_request_t           *r;
    ngx_http_linegate_confirm_t   cf;

    r = fuzz_request();
    ngx_memzero(&cf, sizeof(ngx_http_linegate_confirm_t));

    fuzz_ctx.raw.data = size ? fuzz_strdup(r, data, size) : NULL;
    fuzz_ctx.raw.len = size;

    rc = ngx_http_linegate_confirm_token(r, &fuzz_ctx, &cf);

    if (rc != NGX_OK) {
        if (rc != NGX_ABORT || fuzz_answer.calls != 0
            || cf.bad_why == NULL || cf.bad_why[0] == '\0')
        {
            __builtin_trap();
        }

        goto done;
    }

    if (fuzz_answer.calls != 0 || cf.token.len == 0) {
        __builtin_trap();
    }

    if (!(cf.token.len == 1 && cf.token.data[0] == '-')) {
        if (cf.token.len < NGX_HTTP_LINEGATE_PV_TOKEN_MIN
            || cf.token.len > NGX_HTTP_LINEGATE_PV_TOKEN_MAX
            || ngx_strncmp(cf.token.data, "lpv_", 4) != 0)
        {
            __builtin_trap();
        }

        for (i = 4; i < cf.token.len; i++) {
            if (!isalnum(cf.token.data[i])) {
                __builtin_trap();
            }
        }
    }

done:

    fuzz_request_done(r);

    return 0;
}
