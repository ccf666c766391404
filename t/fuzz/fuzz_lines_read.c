
/*
 * Fuzz target: a line request as GET /api/line-requests/:id reads it
 * (src/ngx_http_linegate_lines.c, included): the id taken from the path
 * (lines_path_id), the line's hash from Redis (HGETALL, parsed by
 * line_parse), the reconciliation check on it (lr_due), and the line
 * written back as JSON (line_jw).
 *
 * Input: the request path, a newline, then RESP bytes: the flat hash
 * reply (hiredis's reader builds it).  Invariants: an accepted id is 24
 * lowercase hex; the JSON written is valid whenever what Redis held was
 * valid UTF-8 (what the module stores always is).
 */


#include "fuzz_ngx.h"
#include "ngx_http_linegate_lines.c"


static int
fuzz_utf8_clean(redisReply *flat)
{
    size_t  i, j;

    for (i = 0; i < flat->elements; i++) {
        for (j = 0; j < flat->element[i]->len; j++) {
            if ((u_char) flat->element[i]->str[j] >= 0x80) {
                return 0;
            }
        }
    }

    return 1;
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_t                         *json;
    ngx_str_t                       uri, resp, out;
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

            if (json == NULL && fuzz_utf8_clean(flat)) {
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

    fuzz_request_done(r);

    return 0;
}
