
/*
 * Fuzz target: what a worker reads on its subscribed connections, as the
 * callbacks hiredis would call take it:
 *
 *   0  the subscriber's pattern (redis_pubsub.c, pubsub_message_cb):
 *      "pmessage"s of lg:keys:revoked, whose payload is a revoked API
 *      key's digest (auth.c's apikey_revoked drops it from the worker's
 *      cache), "psubscribe", the keepalive's "pong";
 *   1  client tracking's __redis__:invalidate (pubsub_invalidate_cb):
 *      "message"s with the keys changed, or nil, read by
 *      lines_cache.c's invalidate (ngx_http_linegate_key_workspace_of(),
 *      keys.c);
 *   2  a Sentinel's +switch-master subscription (redis_sentinel.c,
 *      sentinel_message);
 *   3  a Sentinel's answer to SENTINEL get-master-addr-by-name
 *      (sentinel_reply, sentinel_address).
 *
 * Those files, redis_event.c (PING, PONG), auth.c and lines_cache.c are
 * included; the callbacks run on a fake hiredis context whose commands
 * are recorded (hiredis's async functions are redirected); a Sentinel
 * the query falls back to cannot be reached.  The API-key cache and the
 * lines cache are the module's own, made by their init_process; the
 * lines cache holds no answer (its tree is nginx's red-black tree, which
 * the shim does not have): an invalidation is read and counted, and
 * looked up in an empty table.
 *
 * Input: a byte (the reader, modulo 4; 0x10: the subscription is
 * answered already, and the Sentinel's), then RESP bytes: up to 16
 * replies, each handed to the reader in turn (hiredis's reader builds
 * them).
 *
 * Invariants, re-checked here: the cached key is dropped exactly when a
 * pmessage's payload is its digest in hex (either case); each
 * invalidation message counts one per key of the lg:{ws:<id>} form
 * ("lg:{ws:", an id of at least one byte, '}'), the last one's id
 * recorded, or a flush for nil; +switch-master is acted on exactly for
 * a pmessage about the configured master, given the new master's
 * address (a slice of the message) exactly when the rest of it is
 * "<ip> <port> <ip> <port>" with a new port of 1 to 65535 and a new ip
 * of at most NGX_SOCKADDR_STRLEN bytes, else none; the query finds the master
 * (once) exactly for ["host", "port"], host 1 to NGX_SOCKADDR_STRLEN
 * bytes, port 1 to 65535, and copies it whole; anything else is one
 * failure.
 */


#include "fuzz_ngx.h"

#include <hiredis/async.h>


static int fuzz_redisAsyncCommand(redisAsyncContext *ac,
    redisCallbackFn *fn, void *privdata, const char *format, ...);
static void fuzz_redisAsyncDisconnect(redisAsyncContext *ac);
static void fuzz_redisAsyncFree(redisAsyncContext *ac);
static redisAsyncContext *fuzz_redisAsyncConnect(const char *ip, int port);

#define redisAsyncCommand     fuzz_redisAsyncCommand
#define redisAsyncDisconnect  fuzz_redisAsyncDisconnect
#define redisAsyncFree        fuzz_redisAsyncFree
#define redisAsyncConnect     fuzz_redisAsyncConnect
#include "ngx_http_linegate_redis_pubsub.c"
#include "ngx_http_linegate_redis_sentinel.c"
#include "ngx_http_linegate_redis_event.c"
#include "ngx_http_linegate_auth.c"
#include "ngx_http_linegate_lines_cache.c"
#undef redisAsyncCommand
#undef redisAsyncDisconnect
#undef redisAsyncFree
#undef redisAsyncConnect


#define FUZZ_REPLIES_MAX  16
#define FUZZ_ANSWERED     0x10


static ngx_log_t                                  fuzz_plog;
static ngx_cycle_t                                fuzz_cycle;
static redisAsyncContext                          fuzz_ac;
static ngx_uint_t                                 fuzz_commands;
static ngx_http_linegate_redis_pubsub_handler_pt  fuzz_revoked;
static ngx_http_linegate_redis_pubsub_handler_pt  fuzz_invalidate;

static ngx_http_linegate_redis_addr_t  fuzz_sentinel_addrs[2] = {
    { ngx_string("127.0.0.1"), 26379 },
    { ngx_string("127.0.0.2"), 26379 }
};
static ngx_array_t                     fuzz_sentinels = {
    fuzz_sentinel_addrs, 2, sizeof(ngx_http_linegate_redis_addr_t), 2, NULL
};

/* what the Sentinel's callbacks were told */
static ngx_uint_t   fuzz_found, fuzz_switched;
static ngx_str_t    fuzz_switched_host;   /* data NULL: none given */
static ngx_int_t    fuzz_switched_port;
static ngx_int_t    fuzz_found_rc, fuzz_found_port;
static ngx_str_t    fuzz_found_host;

/* the API key in the worker's cache, and its digest as published */
static u_char       fuzz_digest[32];


static int
fuzz_redisAsyncCommand(redisAsyncContext *ac, redisCallbackFn *fn,
    void *privdata, const char *format, ...)
{
    if (ac != &fuzz_ac) {
        __builtin_trap();
    }

    fuzz_commands++;

    return REDIS_OK;
}


static void
fuzz_redisAsyncDisconnect(redisAsyncContext *ac)
{
    if (ac != &fuzz_ac) {
        __builtin_trap();
    }
}


static void
fuzz_redisAsyncFree(redisAsyncContext *ac)
{
    /* freed only by timers and exits, which no reply here reaches */
    __builtin_trap();
}


static redisAsyncContext *
fuzz_redisAsyncConnect(const char *ip, int port)
{
    /* the other sentinels cannot be reached */
    return NULL;
}


static void
fuzz_found_cb(ngx_int_t rc, ngx_str_t *host, ngx_int_t port)
{
    fuzz_found++;
    fuzz_found_rc = rc;
    fuzz_found_port = port;

    if (host != NULL) {
        fuzz_found_host = *host;
    }
}


static void
fuzz_switched_cb(ngx_str_t *host, ngx_int_t port)
{
    fuzz_switched++;
    fuzz_switched_port = port;

    if (host != NULL) {
        fuzz_switched_host = *host;

    } else {
        ngx_str_null(&fuzz_switched_host);
    }
}


/*
 * The new master's address in "<old ip> <old port> <new ip> <new port>"
 * (the message after "mymaster "), read apart from the module: 1 when
 * there are exactly four fields, none empty, the third at most
 * NGX_SOCKADDR_STRLEN bytes, the fourth a port 1 to 65535
 */
static ngx_uint_t
fuzz_switch_address(const char *p, size_t len, const char **host,
    size_t *host_len, ngx_int_t *port)
{
    size_t       at[5], n, i;

    n = 0;
    at[n++] = 0;

    for (i = 0; i < len; i++) {
        if (p[i] == ' ') {
            if (n == 4) {
                return 0;
            }

            at[n++] = i + 1;
        }
    }

    if (n != 4) {
        return 0;
    }

    at[4] = len + 1;

    for (i = 0; i < 4; i++) {
        if (at[i + 1] - 1 == at[i]) {
            return 0;
        }
    }

    *host = p + at[2];
    *host_len = at[3] - 1 - at[2];
    *port = ngx_atoi((u_char *) p + at[3], len - at[3]);

    return *host_len <= NGX_SOCKADDR_STRLEN && *port >= 1 && *port <= 65535;
}


static int
fuzz_is(redisReply *r, const char *s)
{
    size_t  n;

    n = strlen(s);

    return r->type == REDIS_REPLY_STRING && r->len == n
           && strncasecmp(r->str, s, n) == 0;
}


static void
fuzz_init(void)
{
    u_char  *p;

    fuzz_plog.log_level = NGX_LOG_DEBUG;
    fuzz_cycle.log = &fuzz_plog;

    /* a worker of one Redis behind Sentinels, API keys pushed */
    fuzz_lmcf.uses_lines = 1;
    fuzz_lmcf.apikey_cache_ttl = 60000;
    fuzz_lmcf.apikey_cache_pushed = 600000;
    fuzz_lmcf.apikey_cache_size = 64;
    fuzz_lmcf.lines_cache = 1 << 20;
    ngx_str_set(&fuzz_lmcf.redis_sentinel_master, "mymaster");
    fuzz_lmcf.redis_sentinels = &fuzz_sentinels;
    fuzz_lmcf.redis_connect_timeout = 1000;
    fuzz_lmcf.redis_command_timeout = 1000;

    if (ngx_http_linegate_auth_init_process(&fuzz_cycle, &fuzz_lmcf,
                                            &fuzz_revoked)
        != NGX_OK
        || fuzz_revoked == NULL
        || ngx_http_linegate_lines_cache_init_process(&fuzz_cycle,
                                                      &fuzz_lmcf,
                                                      &fuzz_invalidate)
           != NGX_OK
        || fuzz_invalidate == NULL)
    {
        abort();
    }

    /* the digest the seeds publish: 0123456789abcdef, four times */
    for (p = fuzz_digest; p < fuzz_digest + 32; p += 8) {
        ngx_memcpy(p, "\x01\x23\x45\x67\x89\xab\xcd\xef", 8);
    }
}


/* the payload is the cached key's digest: 64 hex digits, either case */
static int
fuzz_revokes(redisReply *payload)
{
    size_t  i;
    int     hi, lo;
    char    c;

    if (payload->type != REDIS_REPLY_STRING || payload->len != 64) {
        return 0;
    }

    for (i = 0; i < 64; i += 2) {
        c = payload->str[i];
        hi = isdigit((u_char) c) ? c - '0'
             : (isxdigit((u_char) c) ? (tolower(c) - 'a' + 10) : -1);
        c = payload->str[i + 1];
        lo = isdigit((u_char) c) ? c - '0'
             : (isxdigit((u_char) c) ? (tolower(c) - 'a' + 10) : -1);

        if (hi < 0 || lo < 0 || (hi << 4 | lo) != fuzz_digest[i / 2]) {
            return 0;
        }
    }

    return 1;
}


/* 0: the revocations' pattern; returns 1 when the reply revokes the key */
static int
fuzz_pattern(redisReply *reply)
{
    ngx_http_linegate_pubsubs_t  *all;

    all = &ngx_http_linegate_pubsubs;

    ngx_http_linegate_pubsub_message_cb(&fuzz_ac, reply, NULL);

    if (all->sub[0].ac != &fuzz_ac) {
        __builtin_trap();
    }

    return reply->type == REDIS_REPLY_ARRAY && reply->elements >= 4
           && fuzz_is(reply->element[0], "pmessage")
           && fuzz_revokes(reply->element[3]);
}


/* 1: the invalidations: their count and the last workspace, re-read */
static void
fuzz_tracking(redisReply *reply)
{
    size_t                            i;
    u_char                           *close;
    ngx_uint_t                        seq, want, hash;
    redisReply                       *k;
    ngx_http_linegate_lines_cache_t  *c;

    c = &ngx_http_linegate_lines_cache;
    seq = c->seq;
    want = 0;
    hash = 0;

    if (reply->type == REDIS_REPLY_ARRAY && reply->elements >= 3
        && fuzz_is(reply->element[0], "message"))
    {
        if (reply->element[2]->type != REDIS_REPLY_ARRAY) {
            want = 1;

        } else {
            for (i = 0; i < reply->element[2]->elements; i++) {
                k = reply->element[2]->element[i];

                if (k->type != REDIS_REPLY_STRING || k->len < 9
                    || memcmp(k->str, "lg:{ws:", 7) != 0)
                {
                    continue;
                }

                close = memchr(k->str + 7, '}', k->len - 7);

                if (close == NULL || close == (u_char *) k->str + 7) {
                    continue;
                }

                want++;
                hash = ngx_hash_key((u_char *) k->str + 7,
                                    close - (u_char *) k->str - 7);
            }
        }
    }

    ngx_http_linegate_pubsub_invalidate_cb(&fuzz_ac, reply, NULL);

    if (c->seq - seq != want
        || (hash && c->recent[c->seq % NGX_HTTP_LINEGATE_LINES_CACHE_RECENT]
                    != hash))
    {
        __builtin_trap();
    }
}


/* 2: +switch-master for "mymaster" */
static void
fuzz_switch(redisReply *reply)
{
    size_t       host_len;
    ngx_int_t    port;
    ngx_uint_t   before;
    const char  *host;
    redisReply  *m;

    before = fuzz_switched;

    ngx_http_linegate_sentinel_message(&fuzz_ac, reply, NULL);

    m = reply->elements == 4 ? reply->element[3] : NULL;

    if ((fuzz_switched != before)
        != (reply->type == REDIS_REPLY_ARRAY && reply->elements == 4
            && !fuzz_is(reply->element[0], "pong")
            && reply->element[0]->type == REDIS_REPLY_STRING
            && strcmp(reply->element[0]->str, "pmessage") == 0
            && m->type == REDIS_REPLY_STRING && m->len > 8
            && memcmp(m->str, "mymaster ", 9) == 0))
    {
        __builtin_trap();
    }

    if (fuzz_switched == before) {
        return;
    }

    /* the new master's address exactly when the message has one */
    if (fuzz_switch_address(m->str + 9, m->len - 9, &host, &host_len,
                            &port))
    {
        if (fuzz_switched_host.data != (u_char *) host
            || fuzz_switched_host.len != host_len
            || fuzz_switched_port != port)
        {
            __builtin_trap();
        }

    } else if (fuzz_switched_host.data != NULL) {
        __builtin_trap();
    }
}


/* 3: the master's address; only the first reply is the query's */
static void
fuzz_query(redisReply *reply, ngx_uint_t first)
{
    ngx_int_t    port;
    redisReply  *h, *p;

    ngx_http_linegate_sentinel_reply(&fuzz_ac, reply, (void *) 7);

    if (!first) {
        if (fuzz_found != 1) {
            __builtin_trap();
        }

        return;
    }

    h = reply->elements == 2 ? reply->element[0] : NULL;
    p = reply->elements == 2 ? reply->element[1] : NULL;
    port = (p && p->type == REDIS_REPLY_STRING)
           ? ngx_atoi((u_char *) p->str, p->len) : NGX_ERROR;

    if (fuzz_found != 1) {
        __builtin_trap();
    }

    if (reply->type == REDIS_REPLY_ARRAY && reply->elements == 2
        && h->type == REDIS_REPLY_STRING && p->type == REDIS_REPLY_STRING
        && h->len >= 1 && h->len <= NGX_SOCKADDR_STRLEN
        && port >= 1 && port <= 65535)
    {
        if (fuzz_found_rc != NGX_OK || fuzz_found_port != port
            || fuzz_found_host.len != h->len
            || memcmp(fuzz_found_host.data, h->str, h->len) != 0
            || fuzz_found_host.data[h->len] != '\0')
        {
            __builtin_trap();
        }

    } else if (fuzz_found_rc != NGX_ERROR) {
        __builtin_trap();
    }
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    void                          *stream;
    ngx_uint_t                     n, which, revoked;
    redisReply                    *reply;
    ngx_http_linegate_pubsub_t    *ps;
    ngx_http_linegate_pubsubs_t   *all;
    ngx_http_linegate_sentinel_t  *s;

    static ngx_uint_t  inited;

    if (!inited) {
        fuzz_init();
        inited = 1;
    }

    if (size == 0) {
        return 0;
    }

    which = data[0] % 4;

    ngx_memzero(&fuzz_ac, sizeof(redisAsyncContext));
    fuzz_ac.errstr = fuzz_ac.c.errstr;
    fuzz_commands = 0;

    /* the worker's subscriber, subscribing or subscribed */
    all = &ngx_http_linegate_pubsubs;
    ngx_memzero(all, sizeof(ngx_http_linegate_pubsubs_t));
    all->log = &fuzz_plog;
    all->lmcf = &fuzz_lmcf;
    all->handler = fuzz_revoked;
    all->invalidate = fuzz_invalidate;
    all->gen = 1;
    all->seq = 1;
    all->nsub = 1;

    ps = &all->sub[0];
    ps->in_use = 1;
    ps->ac = &fuzz_ac;
    ps->state = (data[0] & FUZZ_ANSWERED)
                ? NGX_HTTP_LINEGATE_PUBSUB_SUBSCRIBED
                : NGX_HTTP_LINEGATE_PUBSUB_SUBSCRIBING;
    ngx_str_set(&ps->host, "127.0.0.1");
    ps->port = 6379;
    fuzz_ac.data = ps;

    /* the API key the revocations are about, learned */
    if (ngx_http_linegate_cache_put(&ngx_http_linegate_apikey_cache,
                                    fuzz_digest, 0, 1000000, 0, 0,
                                    (u_char *) "org_1", 5, NULL, 0)
        != 0)
    {
        abort();
    }

    /* the Sentinel: subscribed (2), or asked (3) */
    if (ngx_http_linegate_sentinel_init(&fuzz_lmcf, &fuzz_plog,
                                        fuzz_found_cb, fuzz_switched_cb)
        != NGX_OK)
    {
        abort();
    }

    s = &ngx_http_linegate_sentinel;
    s->sub = &fuzz_ac;
    s->subscribed = (data[0] & FUZZ_ANSWERED) ? 1 : 0;

    if (which == 3) {
        s->query = &fuzz_ac;
        s->gen = 7;
        s->busy = 1;
        s->tried = 1;
    }

    fuzz_found = 0;
    fuzz_switched = 0;
    ngx_str_null(&fuzz_found_host);

    stream = fuzz_redis_open(data + 1, size - 1);
    revoked = 0;

    for (n = 0; n < FUZZ_REPLIES_MAX; n++) {
        reply = fuzz_redis_take(stream);
        if (reply == NULL) {
            break;
        }

        switch (which) {
        case 0:
            revoked |= fuzz_pattern(reply);
            break;
        case 1:
            fuzz_tracking(reply);
            break;
        case 2:
            fuzz_switch(reply);
            break;
        default:
            fuzz_query(reply, n == 0);
        }

        freeReplyObject(reply);
    }

    fuzz_redis_close(stream);

    if ((ngx_http_linegate_cache_find(&ngx_http_linegate_apikey_cache,
                                      fuzz_digest)
         == NULL)
        != (revoked != 0))
    {
        __builtin_trap();
    }

    return 0;
}
