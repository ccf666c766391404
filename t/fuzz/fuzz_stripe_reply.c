
/*
 * Fuzz target: Stripe's answers as the module reads them.  A subrequest
 * ends with the fuzzed status, Retry-After and body; src/ngx_http_
 * linegate_stripe.c (included here) takes them in (stripe_done: status,
 * Retry-After, JSON body) and resumes the request, whose resume handler
 * then reads what the callers read: the result class, the error's
 * message, code and type, a customer's card on file (provision_confirm.c
 * confirm_has_card, included), a subscription's id and whether it is
 * live (confirm_live), an invoice's id, status and hosted_invoice_url
 * (lines.c lines_invoice_read, with and without the id asked for).
 *
 * Input: two bytes of HTTP status (big endian, modulo 600; an odd first
 * byte ends the subrequest with NGX_ERROR, else NGX_OK: a status 0 with
 * NGX_OK is an answer whose status line was "000", which must resume
 * the request all the same), the Retry-After value up to a newline, then
 * the body.
 */


#include "fuzz_ngx.h"
#include "ngx_http_linegate_lines.h"
#include "ngx_http_linegate_stripe.c"
#include "ngx_http_linegate_provision_confirm.c"


static ngx_uint_t  fuzz_resumed;


static void
fuzz_resume(ngx_http_request_t *r, ngx_http_linegate_ctx_t *ctx)
{
    ngx_str_t                           id;
    const char                         *s;
    static ngx_str_t                    asked = ngx_string("in_1");
    ngx_http_linegate_lr_t              lr;
    ngx_http_linegate_stripe_result_e   res;

    fuzz_resumed++;

    res = ngx_http_linegate_stripe_result(ctx);

    if (res == NGX_HTTP_LINEGATE_STRIPE_OK && ctx->stripe_json == NULL) {
        __builtin_trap();
    }

    s = ngx_http_linegate_stripe_error_message(ctx);
    if (s == NULL) {
        __builtin_trap();
    }

    (void) ngx_http_linegate_stripe_error_code(ctx);
    (void) ngx_http_linegate_stripe_error_field(ctx, "type");
    (void) ngx_http_linegate_confirm_has_card(ctx->stripe_json);
    (void) ngx_http_linegate_confirm_live(ctx->stripe_json);

    if (ngx_http_linegate_json_str(ctx->stripe_json, "id", &id) == NGX_OK) {
        (void) ngx_http_linegate_stripe_id_valid(&id);
    }

    ngx_memzero(&lr, sizeof(ngx_http_linegate_lr_t));
    lr.ctx = ctx;

    if (ngx_http_linegate_lines_invoice_read(r, &lr, NULL) == NGX_OK
        && (lr.invoice.id.len == 0 || lr.invoice.id.len > 255))
    {
        __builtin_trap();
    }

    ngx_memzero(&lr, sizeof(ngx_http_linegate_lr_t));
    lr.ctx = ctx;

    if (ngx_http_linegate_lines_invoice_read(r, &lr, &asked) == NGX_OK
        && (lr.invoice.id.len != asked.len
            || ngx_strncmp(lr.invoice.id.data, asked.data, asked.len) != 0))
    {
        __builtin_trap();
    }
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ngx_buf_t            b;
    ngx_str_t            rest, retry, body;
    ngx_uint_t           status;
    ngx_chain_t          out;
    ngx_table_elt_t      h;
    ngx_http_request_t  *r, sr;

    if (size < 2) {
        return 0;
    }

    r = fuzz_request();
    fuzz_resumed = 0;

    status = ((data[0] << 8) | data[1]) % 600;
    rest.data = (u_char *) data + 2;
    rest.len = size - 2;

    (void) fuzz_split(rest.data, rest.len, '\n', &retry, &body);

    /* the subrequest as nginx leaves it: status, headers, body buffer */
    ngx_memzero(&sr, sizeof(ngx_http_request_t));
    sr.connection = r->connection;
    sr.pool = r->pool;
    sr.parent = r;
    sr.main = r;
    sr.headers_out.status = status;

    ngx_memzero(&h, sizeof(ngx_table_elt_t));
    h.hash = 1;
    ngx_str_set(&h.key, "Retry-After");
    h.value.data = fuzz_strdup(r, retry.data, retry.len);
    h.value.len = retry.len;

    sr.headers_out.headers.part.elts = &h;
    sr.headers_out.headers.part.nelts = retry.len ? 1 : 0;
    sr.headers_out.headers.last = &sr.headers_out.headers.part;
    sr.headers_out.headers.size = sizeof(ngx_table_elt_t);
    sr.headers_out.headers.nalloc = 1;

    ngx_memzero(&b, sizeof(ngx_buf_t));
    b.pos = fuzz_strdup(r, body.data, body.len);
    b.last = b.pos + body.len;
    out.buf = &b;
    out.next = NULL;
    sr.out = &out;

    /* what stripe_call() leaves for the answer (metrics read it) */
    fuzz_ctx.resume = fuzz_resume;
    ngx_str_set(&fuzz_ctx.stripe_path, "v1/customers/cus_1");

    (void) ngx_http_linegate_stripe_done(&sr, &fuzz_ctx,
                                         (data[0] & 1) ? NGX_ERROR : NGX_OK);

    if (r->write_event_handler == ngx_http_linegate_stripe_resume) {
        r->write_event_handler(r);
    }

    if (fuzz_resumed != 1) {
        __builtin_trap();
    }

    fuzz_request_done(r);

    return 0;
}
