
/*
 * Fuzz target: Redis Cluster's replies and slots (src/ngx_http_linegate_
 * redis_slots.c, included).  The input is, at once:
 *
 *   - RESP bytes: hiredis's reader (as the async context uses it) builds
 *     the reply; a CLUSTER SLOTS reader runs on it with room for 64
 *     ranges and for 1, and the complete-map check on what it parsed; an
 *     error reply's text goes to the redirect parser, as redis.c gets a
 *     MOVED or an ASK;
 *   - an error's text: the raw bytes to the redirect parser;
 *   - CLUSTER NODES's text: the raw bytes (and a bulk string reply's) to
 *     its masters' reader, with room for 64 masters and for 1;
 *   - a key: its slot.
 *
 * Invariants: a parsed redirect or range holds a slot below 16384, a
 * port of 1..65535 and a NUL-terminated host of host_len <= 46 bytes; a
 * redirect written back as text parses to the same; a refused reply
 * or CLUSTER NODES leaves *n at 0, a master read has a port of 1..65535; slots_complete agrees with a count of each slot; a key
 * with a hash tag has the tag's slot.  (The CRC table is checked against
 * the bitwise CRC by t/unit/test_slots.c, over every 1- and 2-byte key.)
 */


#include "fuzz_ngx.h"
#include "ngx_http_linegate_redis_slots.c"


#define FUZZ_RANGES  64


/* a key with a tag ("{...}" not empty) has the tag's slot, all < 16384 */
static void
fuzz_keyslot(const unsigned char *key, size_t len)
{
    unsigned              slot;
    const unsigned char  *open, *close;

    slot = ngx_http_linegate_redis_keyslot(key, len);

    if (slot >= NGX_HTTP_LINEGATE_REDIS_SLOTS) {
        __builtin_trap();
    }

    open = memchr(key, '{', len);
    if (open == NULL) {
        return;
    }

    close = memchr(open + 1, '}', len - (size_t) (open + 1 - key));

    if (close != NULL && close > open + 1
        && slot != ngx_http_linegate_redis_keyslot(open + 1,
                                                   close - open - 1))
    {
        __builtin_trap();
    }
}


static void
fuzz_host(const char *host, size_t host_len)
{
    if (host_len > NGX_HTTP_LINEGATE_REDIS_HOST_MAX
        || host[host_len] != '\0'
        || strlen(host) != host_len)
    {
        __builtin_trap();
    }
}


static void
fuzz_redirect(const char *str, size_t len)
{
    int                                  n;
    char                                 text[128];
    ngx_http_linegate_redis_redirect_t   rd, again;

    if (ngx_http_linegate_redis_redirect_parse(str, len, &rd) != 0) {
        return;
    }

    if (rd.ask > 1 || rd.slot >= NGX_HTTP_LINEGATE_REDIS_SLOTS
        || rd.port < 1 || rd.port > 65535)
    {
        __builtin_trap();
    }

    fuzz_host(rd.host, rd.host_len);

    n = snprintf(text, sizeof(text), "%s %u %s:%d", rd.ask ? "ASK" : "MOVED",
                 rd.slot, rd.host, rd.port);

    if (n < 0 || (size_t) n >= sizeof(text)
        || ngx_http_linegate_redis_redirect_parse(text, (size_t) n, &again)
           != 0
        || again.ask != rd.ask || again.slot != rd.slot
        || again.port != rd.port || again.host_len != rd.host_len
        || memcmp(again.host, rd.host, rd.host_len + 1) != 0)
    {
        __builtin_trap();
    }
}


/* slots_complete against a count of each slot */
static void
fuzz_complete(const ngx_http_linegate_redis_range_t *ranges, size_t n)
{
    size_t          i;
    unsigned        s, whole;
    static uint8_t  count[NGX_HTTP_LINEGATE_REDIS_SLOTS];

    memset(count, 0, sizeof(count));

    for (i = 0; i < n; i++) {
        for (s = ranges[i].first; s <= ranges[i].last; s++) {
            if (count[s] < 2) {
                count[s]++;
            }
        }
    }

    whole = 1;

    for (s = 0; s < NGX_HTTP_LINEGATE_REDIS_SLOTS; s++) {
        if (count[s] != 1) {
            whole = 0;
            break;
        }
    }

    if ((unsigned) ngx_http_linegate_redis_slots_complete(ranges, n)
        != whole)
    {
        __builtin_trap();
    }
}


static void
fuzz_slots(const redisReply *reply, size_t max)
{
    size_t                            i, n;
    ngx_http_linegate_redis_range_t   ranges[FUZZ_RANGES];

    n = 99;

    if (ngx_http_linegate_redis_slots_parse(reply, ranges, max, &n) != 0) {
        if (n != 0) {
            __builtin_trap();
        }

        return;
    }

    if (n == 0 || n > max) {
        __builtin_trap();
    }

    for (i = 0; i < n; i++) {
        if (ranges[i].first > ranges[i].last
            || ranges[i].last >= NGX_HTTP_LINEGATE_REDIS_SLOTS
            || ranges[i].port < 1 || ranges[i].port > 65535)
        {
            __builtin_trap();
        }

        fuzz_host(ranges[i].host, ranges[i].host_len);
    }

    fuzz_complete(ranges, n);
}


static void
fuzz_nodes(const char *text, size_t len, size_t max)
{
    size_t                            i, n;
    ngx_http_linegate_redis_master_t  masters[FUZZ_RANGES];

    n = 99;

    if (ngx_http_linegate_redis_nodes_masters(text, len, masters, max, &n)
        != 0)
    {
        if (n != 0) {
            __builtin_trap();
        }

        return;
    }

    if (n > max) {
        __builtin_trap();
    }

    for (i = 0; i < n; i++) {
        if (masters[i].port < 1 || masters[i].port > 65535) {
            __builtin_trap();
        }

        fuzz_host(masters[i].host, masters[i].host_len);
    }
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    redisReply  *reply;

    fuzz_keyslot(data, size);
    fuzz_redirect((const char *) data, size);
    fuzz_nodes((const char *) data, size, FUZZ_RANGES);
    fuzz_nodes((const char *) data, size, 1);

    reply = fuzz_redis_reply(data, size);
    if (reply == NULL) {
        return 0;
    }

    fuzz_slots(reply, FUZZ_RANGES);
    fuzz_slots(reply, 1);

    if (reply->type == REDIS_REPLY_ERROR) {
        fuzz_redirect(reply->str, reply->len);
    }

    if (reply->type == REDIS_REPLY_STRING) {
        fuzz_nodes(reply->str, reply->len, FUZZ_RANGES);
    }

    freeReplyObject(reply);

    return 0;
}
