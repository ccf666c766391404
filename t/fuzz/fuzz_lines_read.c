
/*
 * Fuzz target: a line request as GET /api/line-requests/:id reads it
 * (src/ngx_http_linegate_lines.c, included): the id taken from the path
 * (lines_path_id), the line's hash from Redis (HGETALL, parsed by
 * line_parse), the reconciliation check on it (lr_due), and the line
 * written back as JSON (line_jw).
 *
 * Then GET /api/lines/check-availability?id= (line_check): the "id"
 * argument of the query, as nginx 1.22's ngx_http_arg() finds it
 * (fuzz_ngx.c), checked and handed to lr_get.lua's CHECK step, whose
 * call is recorded here instead of sent (lines_script).
 *
 * Input: the request path, optionally '?' and its query, a newline,
 * then RESP bytes: the flat hash reply (hiredis's reader builds it).
 * Invariants: an accepted id is 24 lowercase hex, and the check's the
 * value of the query's first "id=" (at its start or after '&'), its %XX
 * escapes decoded, which every other "id=" decodes to as well; a
 * refused one is a deferred 400 with a message, and the check's script
 * is called once all the same (the credential is checked first); the
 * JSON written is valid whatever Redis held (what the module stores is
 * UTF-8; other bytes are written as U+FFFD).
 */


#include "fuzz_ngx.h"

#define ngx_http_linegate_lines_script  fuzz_lines_script
#include "ngx_http_linegate_lines.c"
#undef ngx_http_linegate_lines_script


static ngx_uint_t                     fuzz_scripts;
static ngx_http_linegate_script_id_e  fuzz_script;


void
fuzz_lines_script(ngx_http_request_t *r, ngx_http_linegate_lr_t *lr,
    ngx_http_linegate_script_id_e script,
    ngx_http_linegate_redis_handler_pt handler)
{
    int  i;

    if (lr->args.argc < 0 || lr->args.argc > NGX_HTTP_LINEGATE_REDIS_MAX_ARGS
        || handler == NULL)
    {
        __builtin_trap();
    }

    /* every argument must be readable as it would be sent */
    for (i = 0; i < lr->args.argc; i++) {
        if (lr->args.argvlen[i] && lr->args.argv[i] == NULL) {
            __builtin_trap();
        }

        (void) ngx_hash_key((u_char *) lr->args.argv[i], lr->args.argvlen[i]);
    }

    fuzz_scripts++;
    fuzz_script = script;
}


static int
fuzz_hex(u_char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }

    c |= 0x20;

    return (c >= 'a' && c <= 'f') ? c - 'a' + 10 : -1;
}


/*
 * The value of the i-th "id=" (any case) at the query's start or after
 * a '&', %XX escapes decoded into buf (room for the query): 1, or 0 when
 * there is no i-th
 */
static int
fuzz_query_id(ngx_str_t *args, ngx_uint_t i, u_char *buf, ngx_str_t *id)
{
    int      hi, lo;
    u_char  *p, *last, *v;

    last = args->data + args->len;

    for (p = args->data; p + 3 <= last; p++) {
        if ((p == args->data || p[-1] == '&')
            && (p[0] | 0x20) == 'i' && (p[1] | 0x20) == 'd' && p[2] == '='
            && i-- == 0)
        {
            id->data = buf;
            v = buf;

            for (p += 3; p < last && *p != '&'; p++) {
                if (*p == '%' && last - p >= 3
                    && (hi = fuzz_hex(p[1])) >= 0
                    && (lo = fuzz_hex(p[2])) >= 0)
                {
                    *v++ = (u_char) (hi << 4 | lo);
                    p += 2;
                    continue;
                }

                *v++ = *p;
            }

            id->len = v - buf;

            return 1;
        }
    }

    return 0;
}


/* GET /api/lines/check-availability with that query */
static void
fuzz_check(ngx_http_request_t *r, ngx_str_t *args)
{
    u_char                 *buf;
    ngx_str_t               want, other;
    ngx_uint_t              i;
    ngx_http_linegate_lr_t  lr;

    ngx_memzero(&lr, sizeof(ngx_http_linegate_lr_t));
    lr.ctx = &fuzz_ctx;
    lr.pool = r->pool;
    ngx_str_set(&lr.who.value, "org_1");
    ngx_str_set(&lr.date, "2023-11-14");

    fuzz_ctx.data = &lr;
    ngx_str_null(&fuzz_ctx.path_id);
    r->args = *args;
    fuzz_scripts = 0;

    ngx_http_linegate_line_check(r, &lr);

    if (fuzz_scripts != 1 || fuzz_script != NGX_HTTP_LINEGATE_SCRIPT_LR_GET
        || fuzz_ctx.state != NGX_HTTP_LINEGATE_READ_CHECK)
    {
        __builtin_trap();
    }

    if (lr.deferred) {
        if (lr.deferred_message == NULL || lr.id.len != 0) {
            __builtin_trap();
        }

        return;
    }

    /* the first id=, decoded; every other one decodes the same */
    buf = ngx_pnalloc(r->pool, args->len + 1);

    if (buf == NULL
        || !ngx_http_linegate_id_valid(&lr.id)
        || !fuzz_query_id(args, 0, buf, &want)
        || want.len != lr.id.len
        || ngx_memcmp(want.data, lr.id.data, want.len) != 0
        || fuzz_ctx.path_id.data != lr.id.data)
    {
        __builtin_trap();
    }

    for (i = 1; fuzz_query_id(args, i, buf, &other); i++) {
        if (other.len != want.len
            || ngx_memcmp(other.data, lr.id.data, want.len) != 0)
        {
            __builtin_trap();
        }
    }
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_t                         *json;
    ngx_str_t                       uri, resp, out, args;
    redisReply                     *flat;
    ngx_http_request_t             *r;
    ngx_http_linegate_json_write_t  jw;
    ngx_http_linegate_lr_t          lr;
    ngx_http_linegate_line_t        line;
    ngx_http_core_loc_conf_t        clcf;
    void                           *loc_conf[1];

    r = fuzz_request();

    ngx_memzero(&lr, sizeof(ngx_http_linegate_lr_t));
    lr.ctx = &fuzz_ctx;
    fuzz_ctx.data = &lr;
    lr.now_ms = 1700000000000LL;
    ngx_str_set(&lr.ws, "org_1");
    ngx_str_set(&lr.date, "2023-11-14");
    ngx_str_set(&lr.now_iso, "2023-11-14T22:13:20.000Z");

    fuzz_lmcf.reconcile_interval = 60000;
    fuzz_lmcf.line_daily_conversations = 100;
    fuzz_lmcf.line_daily_messages = 1000;

    (void) fuzz_split(data, size, '\n', &uri, &resp);

    /* the query as nginx splits it off: what follows the first '?' */
    if (fuzz_split(uri.data, uri.len, '?', &uri, &args) != 0) {
        ngx_str_null(&args);
    }

    /* the path: a prefix location, or (odd byte first) an exact one */
    ngx_memzero(&clcf, sizeof(ngx_http_core_loc_conf_t));
    if (uri.len && (uri.data[0] & 1)) {
        ngx_str_set(&clcf.name, "/api/line-requests");

    } else {
        ngx_str_set(&clcf.name, "/api/line-requests/");
    }

    loc_conf[0] = &clcf;
    r->loc_conf = loc_conf;
    r->uri.data = fuzz_strdup(r, uri.data, uri.len);
    r->uri.len = uri.len;

    if (ngx_http_linegate_lines_path_id(r, &lr) == NGX_OK
        && !ngx_http_linegate_id_valid(&lr.id))
    {
        __builtin_trap();
    }

    flat = fuzz_redis_reply(resp.data, resp.len);

    if (flat != NULL
        && ngx_http_linegate_line_parse(r, &lr, flat, &line) == NGX_OK)
    {
        lr.line = line;
        (void) ngx_http_linegate_lr_due(r, &lr, flat);

        (void) ngx_http_linegate_json_write_init(&jw, r->pool, 64);
        ngx_http_linegate_line_jw(&jw, r, &line);

        if (ngx_http_linegate_json_write_finish(&jw, &out) == NGX_OK) {
            json = json_loadb((const char *) out.data, out.len, JSON_ALLOW_NUL,
                             NULL);

            /* whatever Redis held: bytes not UTF-8 are U+FFFD */
            if (json == NULL) {
                fprintf(stderr, "invalid JSON written: %.*s\n",
                        (int) out.len, out.data);
                __builtin_trap();
            }

            json_decref(json);
        }
    }

    if (flat) {
        freeReplyObject(flat);
    }

    /* exact size: a read past the query is seen */
    args.data = args.len ? fuzz_strdup(r, args.data, args.len) : NULL;
    fuzz_check(r, &args);

    fuzz_request_done(r);

    return 0;
}
