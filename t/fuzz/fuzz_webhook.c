
/*
 * Fuzz target: Stripe webhook deliveries as src/ngx_http_linegate_
 * webhook.c (included here) reads them: the event (id, type,
 * data.object), invoices (id) and subscriptions (metadata.workspace_id,
 * status, items.data[].price.id / plan.id against the configured price
 * map, created: an integer, not past now and the tolerance, or a 400),
 * then the Redis replies: an invoice's index (webhook_owner), the
 * script's (webhook_done).
 *
 * Input: the body, then optionally a NUL byte and RESP bytes: the reply
 * each Redis step gets (parsed by hiredis's reader).  The harness signs each
 * body with the endpoint secret, so every input passes the signature
 * check (t/fuzz/fuzz_stripe_signature.c fuzzes the header itself).
 * Script calls and the index's GET are recorded instead of sent, and
 * answered in turn (at most 3 steps: the index, the script, and for a
 * payment of a canceled request its queuing, lr_invoice_orphan); an
 * answer must be given exactly once, whatever the path.
 */


#include "fuzz_ngx.h"

#include "ngx_http_linegate_redis.h"

#include <openssl/hmac.h>


static ngx_int_t fuzz_redis_script(ngx_http_request_t *r,
    ngx_http_linegate_script_id_e script, int nkeys,
    ngx_http_linegate_redis_args_t *args,
    ngx_http_linegate_redis_handler_pt handler);

static ngx_int_t fuzz_redis_get(ngx_http_request_t *r, ngx_str_t *key,
    ngx_http_linegate_redis_handler_pt handler);

#define ngx_http_linegate_redis_script  fuzz_redis_script
#define ngx_http_linegate_redis_get     fuzz_redis_get
#include "ngx_http_linegate_webhook.c"
#undef ngx_http_linegate_redis_script
#undef ngx_http_linegate_redis_get


#define FUZZ_SECRET  "whsec_fuzz0123456789abcdef"


static ngx_http_linegate_redis_handler_pt   fuzz_handler;
static ngx_http_linegate_plan_price_t       fuzz_prices[2] = {
    { ngx_string("price_basic"), ngx_string("basic") },
    { ngx_string("price_pro"), ngx_string("pro") }
};
static ngx_array_t                          fuzz_price_map = {
    fuzz_prices, 2, sizeof(ngx_http_linegate_plan_price_t), 2, NULL
};


static ngx_int_t
fuzz_redis_script(ngx_http_request_t *r,
    ngx_http_linegate_script_id_e script, int nkeys,
    ngx_http_linegate_redis_args_t *args,
    ngx_http_linegate_redis_handler_pt handler)
{
    int      i;
    json_t  *created;

    if (args->argc < 0 || args->argc > NGX_HTTP_LINEGATE_REDIS_MAX_ARGS) {
        __builtin_trap();
    }

    /* every argument must be readable as sent */
    for (i = 0; i < args->argc; i++) {
        if (args->argvlen[i] && args->argv[i] == NULL) {
            __builtin_trap();
        }

        (void) ngx_hash_key((u_char *) args->argv[i], args->argvlen[i]);
    }

    /*
     * a subscription's events are ordered by created: only an integer
     * one, not past now (1700000000) and the tolerance, is applied
     */
    if (script == NGX_HTTP_LINEGATE_SCRIPT_WH_SUBSCRIPTION) {
        created = json_object_get(fuzz_ctx.body, "created");

        if (!json_is_integer(created)
            || json_integer_value(created) > 1700000000 + 300)
        {
            __builtin_trap();
        }
    }

    fuzz_handler = handler;

    return NGX_OK;
}


static ngx_int_t
fuzz_redis_get(ngx_http_request_t *r, ngx_str_t *key,
    ngx_http_linegate_redis_handler_pt handler)
{
    if (key->len == 0 || key->data == NULL) {
        __builtin_trap();
    }

    (void) ngx_hash_key(key->data, key->len);

    fuzz_handler = handler;

    return NGX_OK;
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t                               i, step;
    u_char                               sig[128], *p, *msg;
    ngx_str_t                            body, resp;
    unsigned int                         maclen;
    unsigned char                        mac[32];
    redisReply                          *reply;
    ngx_http_request_t                  *r;
    ngx_http_linegate_redis_handler_pt   h;

    r = fuzz_request();
    fuzz_handler = NULL;

    ngx_str_set(&fuzz_lmcf.webhook_secret, FUZZ_SECRET);
    fuzz_lmcf.webhook_tolerance = 300;
    fuzz_lmcf.plan_prices = (size && data[0] == ' ') ? NULL
                                                     : &fuzz_price_map;

    (void) fuzz_split(data, size, '\0', &body, &resp);

    fuzz_ctx.raw.data = body.len ? fuzz_strdup(r, body.data, body.len)
                                 : NULL;
    fuzz_ctx.raw.len = body.len;

    /* Stripe-Signature: t=<now>,v1=HMAC(secret, "t.body") */
    msg = ngx_pnalloc(r->pool, 11 + body.len);
    p = ngx_cpymem(msg, "1700000000.", 11);
    p = ngx_cpymem(p, body.data, body.len);
    HMAC(EVP_sha256(), FUZZ_SECRET, sizeof(FUZZ_SECRET) - 1, msg, p - msg,
         mac, &maclen);

    p = ngx_cpymem(sig, "t=1700000000,v1=", 16);
    for (i = 0; i < 32; i++) {
        p = ngx_sprintf(p, "%02xd", mac[i]);
    }

    fuzz_header(r, "Stripe-Signature", sig, p - sig);

    ngx_http_linegate_webhook_handler(r, &fuzz_ctx);

    for (step = 0; fuzz_handler != NULL; step++) {
        if (fuzz_answer.calls != 0 || step == 3) {
            __builtin_trap();
        }

        h = fuzz_handler;
        fuzz_handler = NULL;

        reply = resp.len ? fuzz_redis_reply(resp.data, resp.len) : NULL;
        h(r, reply);

        if (reply) {
            freeReplyObject(reply);
        }
    }

    if (fuzz_answer.calls != 1) {
        __builtin_trap();
    }

    fuzz_request_done(r);

    return 0;
}
