/* TEMPORARY stand-in until h-slots lands */
#include <string.h>
#include <stdlib.h>
#include "ngx_http_linegate_redis_slots.h"

static unsigned
crc16(const unsigned char *p, size_t n)
{
    unsigned crc = 0; size_t i; int b;
    for (i = 0; i < n; i++) {
        crc ^= (unsigned) p[i] << 8;
        for (b = 0; b < 8; b++) {
            crc = (crc & 0x8000) ? ((crc << 1) ^ 0x1021) : (crc << 1);
            crc &= 0xffff;
        }
    }
    return crc;
}

unsigned
ngx_http_linegate_redis_keyslot(const unsigned char *key, size_t len)
{
    size_t s, e;
    for (s = 0; s < len; s++) if (key[s] == '{') break;
    if (s < len) {
        for (e = s + 1; e < len; e++) if (key[e] == '}') break;
        if (e < len && e != s + 1) return crc16(key + s + 1, e - s - 1) & 16383;
    }
    return crc16(key, len) & 16383;
}

static int
hostport(const char *p, size_t n, char *host, size_t *hl, int *port)
{
    size_t i, c = n; long v = 0;
    for (i = 0; i < n; i++) if (p[i] == ':') c = i;
    if (c == n || c + 1 == n || c > 46) return -1;
    for (i = c + 1; i < n; i++) { if (p[i] < '0' || p[i] > '9') return -1; v = v * 10 + (p[i] - '0'); if (v > 65535) return -1; }
    if (v < 1) return -1;
    memcpy(host, p, c); host[c] = 0; *hl = c; *port = (int) v;
    return 0;
}

int
ngx_http_linegate_redis_redirect_parse(const char *str, size_t len,
    ngx_http_linegate_redis_redirect_t *rd)
{
    size_t i, k; long slot = 0;
    if (len > 6 && memcmp(str, "MOVED ", 6) == 0) { rd->ask = 0; i = 6; }
    else if (len > 4 && memcmp(str, "ASK ", 4) == 0) { rd->ask = 1; i = 4; }
    else return -1;
    for (k = i; k < len && str[k] >= '0' && str[k] <= '9'; k++) { slot = slot * 10 + (str[k] - '0'); if (slot >= 16384) return -1; }
    if (k == i || k >= len || str[k] != ' ') return -1;
    rd->slot = (unsigned) slot;
    return hostport(str + k + 1, len - k - 1, rd->host, &rd->host_len, &rd->port);
}

int
ngx_http_linegate_redis_slots_parse(const redisReply *reply,
    ngx_http_linegate_redis_range_t *ranges, size_t max, size_t *n)
{
    size_t i;
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements == 0 || reply->elements > max) return -1;
    for (i = 0; i < reply->elements; i++) {
        redisReply *r = reply->element[i], *m;
        if (r->type != REDIS_REPLY_ARRAY || r->elements < 3) return -1;
        if (r->element[0]->type != REDIS_REPLY_INTEGER || r->element[1]->type != REDIS_REPLY_INTEGER) return -1;
        if (r->element[0]->integer < 0 || r->element[1]->integer >= 16384 || r->element[0]->integer > r->element[1]->integer) return -1;
        m = r->element[2];
        if (m->type != REDIS_REPLY_ARRAY || m->elements < 2 || m->element[0]->type != REDIS_REPLY_STRING || m->element[1]->type != REDIS_REPLY_INTEGER) return -1;
        if (m->element[0]->len > 46 || m->element[1]->integer < 1 || m->element[1]->integer > 65535) return -1;
        ranges[i].first = (unsigned) r->element[0]->integer;
        ranges[i].last = (unsigned) r->element[1]->integer;
        if (m->element[0]->len == 1 && m->element[0]->str[0] == '?') ranges[i].host_len = 0;
        else ranges[i].host_len = m->element[0]->len;
        memcpy(ranges[i].host, m->element[0]->str, ranges[i].host_len);
        ranges[i].host[ranges[i].host_len] = 0;
        ranges[i].port = (int) m->element[1]->integer;
    }
    *n = reply->elements;
    return 0;
}

int
ngx_http_linegate_redis_slots_complete(
    const ngx_http_linegate_redis_range_t *ranges, size_t n)
{
    static unsigned char seen[16384]; size_t i, s;
    memset(seen, 0, sizeof(seen));
    for (i = 0; i < n; i++) for (s = ranges[i].first; s <= ranges[i].last; s++) { if (seen[s]) return 0; seen[s] = 1; }
    for (s = 0; s < 16384; s++) if (!seen[s]) return 0;
    return 1;
}
