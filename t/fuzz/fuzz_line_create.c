
/*
 * Fuzz target: the body of POST /api/line-requests, as the module reads
 * it: ngx_http_linegate_lines_parse() (src/ngx_http_linegate_lines.c, on
 * ngx_http_linegate_json_parse()) then the field validation of
 * src/ngx_http_linegate_line_create.c (names, channelType, lineType,
 * email, phone and forwardCallsTo as E.164, zipcode, state,
 * profileImageUrl), included here so its static validators run as they
 * are.  The same body is then read as a PATCH /api/line-requests/:id
 * reads it: its "action" (manage_action of
 * src/ngx_http_linegate_line_manage.c, included too).  The input is the
 * raw body.
 *
 * Invariants: an error names a field and a message; an accepted line
 * satisfies the SPEC's rules as re-checked here; the action taken is
 * payment_link or cancel exactly when "action" is that string, a
 * non-string action is a field error on "action", anything else
 * "Unsupported action"; a body parsed again is the same body (no leak).
 */


#include "fuzz_ngx.h"
#include "ngx_http_linegate_line_create.c"
#include "ngx_http_linegate_line_manage.c"


static int
fuzz_e164(ngx_str_t *s)
{
    size_t  i;

    /* and no country code starting with 0 */
    if (s->len < 9 || s->len > 16 || s->data[0] != '+'
        || s->data[1] == '0')
    {
        return 0;
    }

    for (i = 1; i < s->len; i++) {
        if (s->data[i] < '0' || s->data[i] > '9') {
            return 0;
        }
    }

    return 1;
}


/* the body's "action", read by PATCH */
static void
fuzz_action(ngx_http_request_t *r)
{
    json_t                  *a;
    ngx_http_linegate_lr_t   lr;

    ngx_memzero(&lr, sizeof(ngx_http_linegate_lr_t));
    lr.ctx = &fuzz_ctx;
    fuzz_ctx.data = &lr;

    ngx_http_linegate_manage_action(r, &lr);

    a = json_object_get(fuzz_ctx.body, "action");

    if (json_is_string(a) && json_string_length(a) == 12
        && memcmp(json_string_value(a), "payment_link", 12) == 0)
    {
        if (lr.deferred || lr.action != NGX_HTTP_LINEGATE_ACTION_PAYMENT_LINK)
        {
            __builtin_trap();
        }

    } else if (json_is_string(a) && json_string_length(a) == 6
               && memcmp(json_string_value(a), "cancel", 6) == 0)
    {
        if (lr.deferred || lr.action != NGX_HTTP_LINEGATE_ACTION_CANCEL) {
            __builtin_trap();
        }

    } else if (a != NULL && !json_is_null(a) && !json_is_string(a)) {
        if (lr.deferred != NGX_HTTP_LINEGATE_LR_DEFER_FIELD
            || lr.deferred_field == NULL
            || strcmp(lr.deferred_field, "action") != 0)
        {
            __builtin_trap();
        }

    } else if (lr.deferred != NGX_HTTP_LINEGATE_LR_DEFER_PLAIN
               || lr.deferred_message == NULL || lr.action != 0)
    {
        __builtin_trap();
    }

    if (fuzz_answer.calls != 0) {
        /* deferred: answered once the credential is known good */
        __builtin_trap();
    }
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ngx_http_request_t        *r;
    ngx_http_linegate_lr_t     lr;
    ngx_http_linegate_line_t  *l;
    json_t                    *body;
    const char                *why;

    r = fuzz_request();

    ngx_memzero(&lr, sizeof(ngx_http_linegate_lr_t));
    lr.ctx = &fuzz_ctx;
    fuzz_ctx.data = &lr;
    ngx_str_set(&lr.id, "0123456789abcdef01234567");
    ngx_str_set(&lr.now_iso, "2023-11-14T22:13:20.000Z");
    ngx_str_set(&lr.date, "2023-11-14");

    /* the body as nginx hands it over: an exact-size copy */
    fuzz_ctx.raw.data = size ? fuzz_strdup(r, data, size) : NULL;
    fuzz_ctx.raw.len = size;

    if (ngx_http_linegate_lines_parse(r, &lr) != NGX_OK) {
        if (!lr.deferred || lr.deferred_message == NULL) {
            __builtin_trap();
        }

        goto done;
    }

    /*
     * A body parsed once stays the request's: a second parse keeps it
     * (overwritten, the first would leak, LeakSanitizer's find)
     */
    body = fuzz_ctx.body;

    if (ngx_http_linegate_json_parse(r, &fuzz_ctx, 0, &why) != NGX_OK
        || fuzz_ctx.body != body)
    {
        __builtin_trap();
    }

    fuzz_action(r);
    fuzz_ctx.data = &lr;

    if (ngx_http_linegate_create_validate(r, &lr) != NGX_OK) {
        if (!lr.deferred || lr.deferred_field == NULL
            || lr.deferred_message == NULL)
        {
            __builtin_trap();
        }

        goto done;
    }

    l = &lr.line;

    if (l->first_name.len == 0 || l->last_name.len == 0
        || (!ngx_http_linegate_line_is(&l->channel_type, "phone")
            && !ngx_http_linegate_line_is(&l->channel_type, "email"))
        || (l->phone.len && !fuzz_e164(&l->phone))
        || (l->forward_calls_to.len && !fuzz_e164(&l->forward_calls_to))
        || (l->state.len && (l->state.len != 2
                             || l->state.data[0] < 'A'
                             || l->state.data[0] > 'Z'
                             || l->state.data[1] < 'A'
                             || l->state.data[1] > 'Z'))
        || (l->email.len > 254)
        || (l->profile_image_url.len > 2048))
    {
        __builtin_trap();
    }

done:

    fuzz_request_done(r);

    return 0;
}
