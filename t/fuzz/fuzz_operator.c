
/*
 * Fuzz target: a call of the operator API (SPEC section 5), with the
 * operator token, as ngx_http_linegate_operator_handler() takes it: the
 * router (the path after the location's name against every route's
 * pattern, then the method), the ids of the path, the body's fields
 * (strings, integers, null, trimmed, each route's checks), the query of
 * the reads ("?count=", "?cursor=", "?after="), the inventory's
 * "numbers", the Redis arguments each route builds, then the replies of
 * its steps (the line's owner, the script or command, the steps after
 * it) as the answers read them.
 *
 * src/ngx_http_linegate_operator.c (router, fields, replies) and
 * _operator_tenants.c (whose steps call Redis themselves) are included;
 * _operator_ops.c (inventory, lines, streams) and _operator_fields.c are
 * linked as they are.  Redis calls are recorded instead of sent and
 * answered in turn from the input; the reconciliation run (a state
 * machine of its own) is recorded and not run.
 *
 * Input: a byte (the method, GET HEAD POST PUT PATCH DELETE: modulo 6;
 * 0x80: a wrong token), the URI (path and query) up to a newline, the
 * body up to a NUL byte, then RESP bytes: the replies of the steps, one
 * after the other (hiredis's reader builds them; none left: the store
 * is down).
 *
 * Invariants: every call is answered exactly once (or handed to the
 * reconciliation run), with no more than 4 Redis steps; every argument
 * of a Redis call is readable as sent; a page's count is 1 to 1000, a
 * cursor 1 to 19 digits, an "after" a stream entry id, every number
 * added or removed E.164, as re-checked here; a wrong token is a 401
 * with no Redis call.
 */


#include "fuzz_ngx.h"

#include "ngx_http_linegate_redis.h"


#define FUZZ_TOKEN      "op-token-0123456789abcdef0123456789"
#define FUZZ_STEPS_MAX  4


static ngx_int_t fuzz_redis_script(ngx_http_request_t *r,
    ngx_http_linegate_script_id_e script, int nkeys,
    ngx_http_linegate_redis_args_t *args,
    ngx_http_linegate_redis_handler_pt handler);
static ngx_int_t fuzz_redis_command(ngx_http_request_t *r,
    ngx_http_linegate_redis_args_t *args,
    ngx_http_linegate_redis_handler_pt handler);
static ngx_int_t fuzz_redis_get(ngx_http_request_t *r, ngx_str_t *key,
    ngx_http_linegate_redis_handler_pt handler);
static ngx_int_t fuzz_redis_durable(ngx_log_t *log,
    ngx_http_linegate_script_id_e script, int nkeys,
    ngx_http_linegate_redis_args_t *args, const char *what);
static ngx_int_t fuzz_redis_durable_command(ngx_log_t *log,
    ngx_http_linegate_redis_args_t *args, const char *what);
static void fuzz_reconcile_run(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx);

#define ngx_http_linegate_redis_script            fuzz_redis_script
#define ngx_http_linegate_redis_command           fuzz_redis_command
#define ngx_http_linegate_redis_get               fuzz_redis_get
#define ngx_http_linegate_redis_durable           fuzz_redis_durable
#define ngx_http_linegate_redis_durable_command   fuzz_redis_durable_command
#define ngx_http_linegate_reconcile_run           fuzz_reconcile_run
#include "ngx_http_linegate_operator.c"
#include "ngx_http_linegate_operator_tenants.c"
#undef ngx_http_linegate_redis_script
#undef ngx_http_linegate_redis_command
#undef ngx_http_linegate_redis_get
#undef ngx_http_linegate_redis_durable
#undef ngx_http_linegate_redis_durable_command
#undef ngx_http_linegate_reconcile_run


static ngx_http_linegate_redis_handler_pt   fuzz_handler;
static ngx_uint_t                           fuzz_calls;
static ngx_uint_t                           fuzz_reconciles;
static ngx_http_request_t                  *fuzz_r;

static ngx_uint_t  fuzz_methods[] = {
    NGX_HTTP_GET, NGX_HTTP_HEAD, NGX_HTTP_POST, NGX_HTTP_PUT,
    NGX_HTTP_PATCH, NGX_HTTP_DELETE
};


/* "+" and 8 to 15 digits */
static int
fuzz_e164(const u_char *p, size_t len)
{
    size_t  i;

    if (len < 9 || len > 16 || p[0] != '+') {
        return 0;
    }

    for (i = 1; i < len; i++) {
        if (p[i] < '0' || p[i] > '9') {
            return 0;
        }
    }

    return 1;
}


static int
fuzz_digits(const u_char *p, size_t len, size_t max)
{
    size_t  i;

    if (len == 0 || len > max) {
        return 0;
    }

    for (i = 0; i < len; i++) {
        if (p[i] < '0' || p[i] > '9') {
            return 0;
        }
    }

    return 1;
}


/* the first "name=" of the query (at its start or after '&') */
static int
fuzz_query(ngx_http_request_t *r, const char *name, ngx_str_t *v)
{
    size_t   n;
    u_char  *p, *last;

    if (r->args.len == 0) {
        return 0;
    }

    n = strlen(name);
    last = r->args.data + r->args.len;

    for (p = r->args.data; p + n < last; p++) {
        if ((p == r->args.data || p[-1] == '&') && p[n] == '='
            && strncasecmp((char *) p, name, n) == 0)
        {
            v->data = p + n + 1;

            for (p += n + 1; p < last && *p != '&'; p++) { /* void */ }

            v->len = p - v->data;

            return 1;
        }
    }

    return 0;
}


/* ?count=, when the query has one: 1 to 1000 */
static void
fuzz_check_count(ngx_http_request_t *r)
{
    ngx_int_t  n;
    ngx_str_t  v;

    /* digits (leading zeros are no harm) worth 1 to 1000 */
    if (fuzz_query(r, "count", &v)) {
        n = fuzz_digits(v.data, v.len, v.len) ? ngx_atoi(v.data, v.len) : 0;

        if (n < 1 || n > 1000) {
            __builtin_trap();
        }
    }
}


static void
fuzz_check_args(ngx_http_linegate_redis_args_t *args)
{
    int  i;

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
}


static void
fuzz_step(ngx_http_linegate_redis_handler_pt handler)
{
    if (handler == NULL || fuzz_handler != NULL) {
        __builtin_trap();
    }

    fuzz_handler = handler;
    fuzz_calls++;
}


static ngx_int_t
fuzz_redis_script(ngx_http_request_t *r,
    ngx_http_linegate_script_id_e script, int nkeys,
    ngx_http_linegate_redis_args_t *args,
    ngx_http_linegate_redis_handler_pt handler)
{
    size_t      i;
    json_t     *numbers, *n;
    ngx_str_t   v;

    /* redis.c refuses a call whose arguments could not be built */
    if (args->argc < 0) {
        return NGX_ERROR;
    }

    fuzz_check_args(args);

    if (nkeys < 0 || nkeys > args->argc) {
        __builtin_trap();
    }

    switch (script) {

    case NGX_HTTP_LINEGATE_SCRIPT_OP_INVENTORY_ADD:
        numbers = json_object_get(fuzz_ctx.body, "numbers");

        if (!json_is_array(numbers) || json_array_size(numbers) == 0
            || json_array_size(numbers) > 1000)
        {
            __builtin_trap();
        }

        for (i = 0; i < json_array_size(numbers); i++) {
            n = json_array_get(numbers, i);

            if (!json_is_string(n)
                || !fuzz_e164((u_char *) json_string_value(n),
                              json_string_length(n)))
            {
                __builtin_trap();
            }
        }

        break;

    case NGX_HTTP_LINEGATE_SCRIPT_OP_INVENTORY_PAGE:
        fuzz_check_count(r);

        if (fuzz_query(r, "cursor", &v) && !fuzz_digits(v.data, v.len, 19)) {
            __builtin_trap();
        }

        break;

    default:
        break;
    }

    fuzz_step(handler);

    return NGX_OK;
}


static ngx_int_t
fuzz_redis_command(ngx_http_request_t *r,
    ngx_http_linegate_redis_args_t *args,
    ngx_http_linegate_redis_handler_pt handler)
{
    u_char     *p, *dash;
    ngx_str_t   v;

    if (args->argc < 0) {
        return NGX_ERROR;
    }

    fuzz_check_args(args);

    if (args->argc == 0) {
        __builtin_trap();
    }

    if (args->argvlen[0] == 6 && memcmp(args->argv[0], "XRANGE", 6) == 0) {
        fuzz_check_count(r);

        /* "<ms>" or "<ms>-<seq>", each 1 to 19 digits */
        if (fuzz_query(r, "after", &v)) {
            p = v.data;
            dash = memchr(p, '-', v.len);

            if (dash == NULL) {
                dash = p + v.len;
            }

            if (!fuzz_digits(p, dash - p, 19)
                || (dash != p + v.len
                    && !fuzz_digits(dash + 1, p + v.len - dash - 1, 19)))
            {
                __builtin_trap();
            }
        }
    }

    if (args->argvlen[0] == 4 && memcmp(args->argv[0], "SREM", 4) == 0
        && (args->argc != 3
            || !fuzz_e164((u_char *) args->argv[2], args->argvlen[2])))
    {
        __builtin_trap();
    }

    fuzz_step(handler);

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

    fuzz_step(handler);

    return NGX_OK;
}


/* queued for later: nothing answers them in this request */
static ngx_int_t
fuzz_redis_durable(ngx_log_t *log, ngx_http_linegate_script_id_e script,
    int nkeys, ngx_http_linegate_redis_args_t *args, const char *what)
{
    if (args->argc < 0) {
        return NGX_ERROR;
    }

    fuzz_check_args(args);

    return NGX_OK;
}


static ngx_int_t
fuzz_redis_durable_command(ngx_log_t *log,
    ngx_http_linegate_redis_args_t *args, const char *what)
{
    if (args->argc < 0) {
        return NGX_ERROR;
    }

    fuzz_check_args(args);

    return NGX_OK;
}


static void
fuzz_reconcile_run(ngx_http_request_t *r, ngx_http_linegate_ctx_t *ctx)
{
    fuzz_reconciles++;
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    u_char                              *q;
    void                                *stream;
    ngx_str_t                            uri, rest, body, resp;
    ngx_uint_t                           steps, wrong;
    redisReply                          *reply;
    ngx_http_request_t                  *r;
    ngx_http_core_loc_conf_t             clcf;
    ngx_http_linegate_redis_handler_pt   h;
    void                                *loc_conf[1];

    if (size == 0) {
        return 0;
    }

    r = fuzz_request();
    fuzz_r = r;
    fuzz_handler = NULL;
    fuzz_calls = 0;
    fuzz_reconciles = 0;

    ngx_str_set(&fuzz_lmcf.operator_token, FUZZ_TOKEN);
    fuzz_lmcf.apikey_epoch = NULL;

    r->method = fuzz_methods[(data[0] & 0x7f) % 6];
    wrong = data[0] & 0x80;

    (void) fuzz_split(data + 1, size - 1, '\n', &uri, &rest);
    (void) fuzz_split(rest.data, rest.len, '\0', &body, &resp);

    /* the location /_linegate/; the query split off at the first '?' */
    ngx_memzero(&clcf, sizeof(ngx_http_core_loc_conf_t));
    ngx_str_set(&clcf.name, "/_linegate/");
    loc_conf[0] = &clcf;
    r->loc_conf = loc_conf;

    r->uri.data = fuzz_strdup(r, uri.data, uri.len);
    r->uri.len = uri.len;

    q = memchr(r->uri.data, '?', r->uri.len);

    if (q != NULL) {
        r->args.data = fuzz_strdup(r, q + 1, r->uri.data + r->uri.len - q - 1);
        r->args.len = r->uri.data + r->uri.len - q - 1;
        r->uri.len = q - r->uri.data;
    }

    r->headers_in.authorization =
        fuzz_header(r, "Authorization",
                    (u_char *) (wrong ? "Bearer op-token"
                                      : "Bearer " FUZZ_TOKEN),
                    wrong ? sizeof("Bearer op-token") - 1
                          : sizeof("Bearer " FUZZ_TOKEN) - 1);

    /* the body as nginx hands it over: an exact-size copy */
    fuzz_ctx.raw.data = body.len ? fuzz_strdup(r, body.data, body.len) : NULL;
    fuzz_ctx.raw.len = body.len;

    ngx_http_linegate_operator_handler(r, &fuzz_ctx);

    stream = fuzz_redis_open(resp.data, resp.len);

    for (steps = 0; fuzz_handler != NULL; steps++) {
        if (fuzz_answer.calls != 0 || steps == FUZZ_STEPS_MAX) {
            __builtin_trap();
        }

        h = fuzz_handler;
        fuzz_handler = NULL;

        reply = fuzz_redis_take(stream);
        h(r, reply);

        if (reply) {
            freeReplyObject(reply);
        }
    }

    fuzz_redis_close(stream);

    if (fuzz_answer.calls + fuzz_reconciles != 1
        || (wrong && (fuzz_calls || fuzz_answer.status != 401)))
    {
        __builtin_trap();
    }

    fuzz_request_done(r);

    return 0;
}
