
/*
 * Fuzz target: Redis replies as the module reads them.  hiredis's own
 * reader (redisReaderCreate/redisReaderFeed, as the async context uses
 * it) builds the reply tree from the input's RESP bytes; then:
 *
 *   - ngx_http_linegate_reply_int() and _reply_str() (src/ngx_http_
 *     linegate_redis.c, included) at every index of the reply and of
 *     each nested array, the way every handler reads its script's reply;
 *   - the provisioning fast path's reader of its pipeline (src/ngx_http_
 *     linegate_provision_plain.c, included: account limits as numbers,
 *     the 30-day window's [member, score...] list, the inventory), as a
 *     preview and as a limits request, down to the answer or the write.
 *
 * The pipeline reader gets an array of 2 to 4 elements, with any
 * content, as a preview (4 commands: the reads and the token's SET) and
 * as a limits request (2), whichever count it has: a count that is not
 * its own must be refused too.  Redis is not connected in this build: a
 * command the reader sends (a refused preview's DEL, the second read of
 * a window too long for one, pv_stock after a number drawn that is no
 * E.164 number) fails as a lost connection would.
 * Invariant: an answer, exactly one.
 */


#include "fuzz_ngx.h"
#include "ngx_http_linegate_redis.c"
#include "ngx_http_linegate_provision.h"
#include "ngx_http_linegate_reply.h"


/*
 * A command the fast path sends (a refused preview's DEL of its token):
 * not sent, as with a lost connection; the reader must answer anyway.
 */
static ngx_uint_t  fuzz_commands;

static ngx_int_t
fuzz_redis_command(ngx_http_request_t *r,
    ngx_http_linegate_redis_args_t *args,
    ngx_http_linegate_redis_handler_pt handler)
{
    fuzz_commands++;
    return NGX_ERROR;
}

/* the LONG read of a window over 1,000 lines: not sent either */
static ngx_int_t
fuzz_redis_pipeline(ngx_http_request_t *r, ngx_uint_t n,
    ngx_http_linegate_redis_args_t *args,
    ngx_http_linegate_redis_handler_pt handler)
{
    fuzz_commands++;
    return NGX_ERROR;
}

/* pv_stock, a preview's draw again past a number set aside: nor this */
static ngx_int_t
fuzz_redis_script(ngx_http_request_t *r,
    ngx_http_linegate_script_id_e script, int nkeys,
    ngx_http_linegate_redis_args_t *args,
    ngx_http_linegate_redis_handler_pt handler)
{
    fuzz_commands++;
    return NGX_ERROR;
}

#define ngx_http_linegate_redis_command  fuzz_redis_command
#define ngx_http_linegate_redis_pipeline  fuzz_redis_pipeline
#define ngx_http_linegate_redis_script  fuzz_redis_script
#include "ngx_http_linegate_provision_plain.c"
#undef ngx_http_linegate_redis_script
#undef ngx_http_linegate_redis_pipeline
#undef ngx_http_linegate_redis_command


static void
fuzz_read(redisReply *reply, ngx_uint_t depth)
{
    int64_t     n;
    ngx_str_t   s;
    ngx_uint_t  i;

    if (reply == NULL || depth > 4) {
        return;
    }

    for (i = 0; i < 3 || (reply->type == REDIS_REPLY_ARRAY
                          && i <= reply->elements); i++)
    {
        if (ngx_http_linegate_reply_int(reply, i, &n) == NGX_OK
            && reply->element[i]->type == REDIS_REPLY_STRING
            && n < 0)
        {
            __builtin_trap();
        }

        if (ngx_http_linegate_reply_str(reply, i, &s) == NGX_OK
            && s.len && s.data == NULL)
        {
            __builtin_trap();
        }
    }

    if (reply->type == REDIS_REPLY_ARRAY) {
        for (i = 0; i < reply->elements; i++) {
            (void) ngx_http_linegate_pv_plain_limit(reply->element[i], 5);
            fuzz_read(reply->element[i], depth + 1);
        }
    }
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ngx_uint_t                       preview;
    redisReply                      *reply;
    ngx_http_request_t              *r;
    ngx_http_linegate_pv_request_t   pv;

    reply = fuzz_redis_reply(data, size);
    if (reply == NULL) {
        return 0;
    }

    fuzz_read(reply, 0);

    /* READ's replies: 2 to 4 elements, 5 to 7 when the windows are
     * counted (an account the worker knows to have a long window) */
    if (reply->type == REDIS_REPLY_ARRAY && reply->elements >= 2
        && reply->elements <= 7)
    {
        fuzz_lmcf.prov_daily = 5;
        fuzz_lmcf.prov_monthly = 20;
        fuzz_lmcf.preview_ttl = 600;

        for (preview = 0; preview < 2; preview++) {
            r = fuzz_request();

            ngx_memzero(&pv, sizeof(ngx_http_linegate_pv_request_t));
            pv.now = 1700000000000LL;
            pv.preview = preview;
            pv.counted = reply->elements >= 5;
            ngx_str_set(&pv.who.value, "acct_1");
            ngx_str_set(&pv.key_id, "sbk_1");
            ngx_memset(pv.token, 'a', NGX_HTTP_LINEGATE_PV_TOKEN_LEN);
            fuzz_ctx.data = &pv;

            ngx_http_linegate_pv_plain_read_done(r, reply);

            if (fuzz_answer.calls != 1) {
                __builtin_trap();
            }

            fuzz_request_done(r);
        }
    }

    freeReplyObject(reply);

    return 0;
}
