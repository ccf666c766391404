
/*
 * linegate: Redis Cluster's slots, redirects and slot map
 * (ngx_http_linegate_redis_slots.h).
 */


#include <string.h>

#include "ngx_http_linegate_chars.h"
#include "ngx_http_linegate_redis_slots.h"


#define NGX_HTTP_LINEGATE_REDIS_PORT_MAX  65535


static unsigned ngx_http_linegate_redis_crc16(const unsigned char *p,
    size_t len);
static int ngx_http_linegate_redis_number(const char *p, const char *last,
    unsigned max, unsigned *value);
static int ngx_http_linegate_redis_host(char *host, size_t *host_len,
    const char *p, size_t len);
static int ngx_http_linegate_redis_slot_get(const redisReply *r,
    unsigned *slot);
static int ngx_http_linegate_redis_range_parse(const redisReply *r,
    ngx_http_linegate_redis_range_t *range);
static int ngx_http_linegate_redis_node_line(const char *p,
    const char *last, ngx_http_linegate_redis_master_t *m);
static int ngx_http_linegate_redis_flag(const char *p, const char *last,
    const char *flag);
static int ngx_http_linegate_redis_addr(const char *p, const char *last,
    char *host, size_t *host_len, int *port);


/*
 * CRC16-CCITT (XMODEM: poly 0x1021, init 0, no reflection), a byte at a
 * time; generated, and t/unit/test_slots.c checks it against the bitwise
 * definition.
 */
static const uint16_t  ngx_http_linegate_redis_crc16_table[256] = {
    0x0000, 0x1021, 0x2042, 0x3063, 0x4084, 0x50a5, 0x60c6, 0x70e7,
    0x8108, 0x9129, 0xa14a, 0xb16b, 0xc18c, 0xd1ad, 0xe1ce, 0xf1ef,
    0x1231, 0x0210, 0x3273, 0x2252, 0x52b5, 0x4294, 0x72f7, 0x62d6,
    0x9339, 0x8318, 0xb37b, 0xa35a, 0xd3bd, 0xc39c, 0xf3ff, 0xe3de,
    0x2462, 0x3443, 0x0420, 0x1401, 0x64e6, 0x74c7, 0x44a4, 0x5485,
    0xa56a, 0xb54b, 0x8528, 0x9509, 0xe5ee, 0xf5cf, 0xc5ac, 0xd58d,
    0x3653, 0x2672, 0x1611, 0x0630, 0x76d7, 0x66f6, 0x5695, 0x46b4,
    0xb75b, 0xa77a, 0x9719, 0x8738, 0xf7df, 0xe7fe, 0xd79d, 0xc7bc,
    0x48c4, 0x58e5, 0x6886, 0x78a7, 0x0840, 0x1861, 0x2802, 0x3823,
    0xc9cc, 0xd9ed, 0xe98e, 0xf9af, 0x8948, 0x9969, 0xa90a, 0xb92b,
    0x5af5, 0x4ad4, 0x7ab7, 0x6a96, 0x1a71, 0x0a50, 0x3a33, 0x2a12,
    0xdbfd, 0xcbdc, 0xfbbf, 0xeb9e, 0x9b79, 0x8b58, 0xbb3b, 0xab1a,
    0x6ca6, 0x7c87, 0x4ce4, 0x5cc5, 0x2c22, 0x3c03, 0x0c60, 0x1c41,
    0xedae, 0xfd8f, 0xcdec, 0xddcd, 0xad2a, 0xbd0b, 0x8d68, 0x9d49,
    0x7e97, 0x6eb6, 0x5ed5, 0x4ef4, 0x3e13, 0x2e32, 0x1e51, 0x0e70,
    0xff9f, 0xefbe, 0xdfdd, 0xcffc, 0xbf1b, 0xaf3a, 0x9f59, 0x8f78,
    0x9188, 0x81a9, 0xb1ca, 0xa1eb, 0xd10c, 0xc12d, 0xf14e, 0xe16f,
    0x1080, 0x00a1, 0x30c2, 0x20e3, 0x5004, 0x4025, 0x7046, 0x6067,
    0x83b9, 0x9398, 0xa3fb, 0xb3da, 0xc33d, 0xd31c, 0xe37f, 0xf35e,
    0x02b1, 0x1290, 0x22f3, 0x32d2, 0x4235, 0x5214, 0x6277, 0x7256,
    0xb5ea, 0xa5cb, 0x95a8, 0x8589, 0xf56e, 0xe54f, 0xd52c, 0xc50d,
    0x34e2, 0x24c3, 0x14a0, 0x0481, 0x7466, 0x6447, 0x5424, 0x4405,
    0xa7db, 0xb7fa, 0x8799, 0x97b8, 0xe75f, 0xf77e, 0xc71d, 0xd73c,
    0x26d3, 0x36f2, 0x0691, 0x16b0, 0x6657, 0x7676, 0x4615, 0x5634,
    0xd94c, 0xc96d, 0xf90e, 0xe92f, 0x99c8, 0x89e9, 0xb98a, 0xa9ab,
    0x5844, 0x4865, 0x7806, 0x6827, 0x18c0, 0x08e1, 0x3882, 0x28a3,
    0xcb7d, 0xdb5c, 0xeb3f, 0xfb1e, 0x8bf9, 0x9bd8, 0xabbb, 0xbb9a,
    0x4a75, 0x5a54, 0x6a37, 0x7a16, 0x0af1, 0x1ad0, 0x2ab3, 0x3a92,
    0xfd2e, 0xed0f, 0xdd6c, 0xcd4d, 0xbdaa, 0xad8b, 0x9de8, 0x8dc9,
    0x7c26, 0x6c07, 0x5c64, 0x4c45, 0x3ca2, 0x2c83, 0x1ce0, 0x0cc1,
    0xef1f, 0xff3e, 0xcf5d, 0xdf7c, 0xaf9b, 0xbfba, 0x8fd9, 0x9ff8,
    0x6e17, 0x7e36, 0x4e55, 0x5e74, 0x2e93, 0x3eb2, 0x0ed1, 0x1ef0,
};


static unsigned
ngx_http_linegate_redis_crc16(const unsigned char *p, size_t len)
{
    size_t    i;
    unsigned  crc;

    crc = 0;

    for (i = 0; i < len; i++) {
        crc = ((crc << 8) & 0xffff)
              ^ ngx_http_linegate_redis_crc16_table[((crc >> 8) ^ p[i])
                                                   & 0xff];
    }

    return crc;
}


unsigned
ngx_http_linegate_redis_keyslot(const unsigned char *key, size_t len)
{
    size_t  open, close;

    /*
     * The hash tag: a key's part between its first '{' and the first '}'
     * after it, so that keys of one tag (all of a workspace's, lg:{ws:W}
     * and lg:{ws:W}:...) share a slot and one script may touch them all;
     * an empty tag ("{}") is no tag.
     */
    for (open = 0; open < len; open++) {
        if (key[open] == '{') {
            break;
        }
    }

    for (close = open + 1; close < len; close++) {
        if (key[close] == '}') {
            break;
        }
    }

    if (close < len && close > open + 1) {
        key += open + 1;
        len = close - open - 1;
    }

    /* 16384 is a power of two: the modulo keeps the CRC's low 14 bits */
    return ngx_http_linegate_redis_crc16(key, len)
           & (NGX_HTTP_LINEGATE_REDIS_SLOTS - 1);
}


static unsigned char  ngx_http_linegate_redis_slot_tags[
    NGX_HTTP_LINEGATE_REDIS_SLOTS][NGX_HTTP_LINEGATE_REDIS_SLOT_TAG_LEN];
static unsigned       ngx_http_linegate_redis_slot_tags_ready;


void
ngx_http_linegate_redis_slot_tags_init(void)
{
    size_t          i, j, k, n;
    unsigned        slot, filled;
    unsigned char   t[NGX_HTTP_LINEGATE_REDIS_SLOT_TAG_LEN];
    static const char  alnum[] = "0123456789"
                                 "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                 "abcdefghijklmnopqrstuvwxyz";

    if (ngx_http_linegate_redis_slot_tags_ready) {
        return;
    }

    n = sizeof(alnum) - 1;
    filled = 0;

    /* the first tag of each slot, in this order: the same in every run */
    for (i = 0; i < n && filled < NGX_HTTP_LINEGATE_REDIS_SLOTS; i++) {
        for (j = 0; j < n; j++) {
            for (k = 0; k < n; k++) {
                t[0] = alnum[i];
                t[1] = alnum[j];
                t[2] = alnum[k];

                slot = ngx_http_linegate_redis_crc16(t, sizeof(t))
                       & (NGX_HTTP_LINEGATE_REDIS_SLOTS - 1);

                if (ngx_http_linegate_redis_slot_tags[slot][0] == 0) {
                    memcpy(ngx_http_linegate_redis_slot_tags[slot], t,
                           sizeof(t));
                    filled++;
                }
            }
        }
    }

    ngx_http_linegate_redis_slot_tags_ready = 1;
}


const unsigned char *
ngx_http_linegate_redis_slot_tag(unsigned slot)
{
    return ngx_http_linegate_redis_slot_tags[slot
                                & (NGX_HTTP_LINEGATE_REDIS_SLOTS - 1)];
}


/* [p, last) is a decimal number of at most max, nothing else: 0 */
static int
ngx_http_linegate_redis_number(const char *p, const char *last,
    unsigned max, unsigned *value)
{
    unsigned  n;

    if (p == last) {
        return -1;
    }

    for (n = 0; p < last; p++) {
        if (*p < '0' || *p > '9') {
            return -1;
        }

        /* checked at each digit: a long number cannot wrap around */
        n = n * 10 + (unsigned) (*p - '0');

        if (n > max) {
            return -1;
        }
    }

    *value = n;

    return 0;
}


/*
 * A node's address as Redis names it, copied NUL-terminated: an IP
 * address or (Redis 7, cluster-preferred-endpoint-type hostname) a name.
 * Empty and "?" are Redis 7's "unknown": host_len 0, the node asked. Only
 * printable bytes without spaces: the copy is a C string for a resolver
 * and a log line, and a NUL inside would cut it silently.
 */
static int
ngx_http_linegate_redis_host(char *host, size_t *host_len, const char *p,
    size_t len)
{
    if (len == 1 && p[0] == '?') {
        len = 0;
    }

    if (len > NGX_HTTP_LINEGATE_REDIS_HOST_MAX
        || !ngx_http_linegate_chars_are((const unsigned char *) p, len,
                                        NGX_HTTP_LINEGATE_CHARS_GRAPH))
    {
        return -1;
    }

    if (len) {
        memcpy(host, p, len);
    }

    host[len] = '\0';
    *host_len = len;

    return 0;
}


int
ngx_http_linegate_redis_redirect_parse(const char *str, size_t len,
    ngx_http_linegate_redis_redirect_t *rd)
{
    unsigned                             slot;
    const char                          *p, *last, *sp;
    ngx_http_linegate_redis_redirect_t   r;

    if (str == NULL) {
        return -1;
    }

    p = str;
    last = str + len;

    if (len > 6 && memcmp(p, "MOVED ", 6) == 0) {
        r.ask = 0;
        p += 6;

    } else if (len > 4 && memcmp(p, "ASK ", 4) == 0) {
        r.ask = 1;
        p += 4;

    } else {
        return -1;
    }

    sp = memchr(p, ' ', (size_t) (last - p));

    if (sp == NULL
        || ngx_http_linegate_redis_number(p, sp,
                                          NGX_HTTP_LINEGATE_REDIS_SLOTS - 1,
                                          &slot)
           != 0)
    {
        return -1;
    }

    if (ngx_http_linegate_redis_addr(sp + 1, last, r.host, &r.host_len,
                                     &r.port)
        != 0)
    {
        return -1;
    }

    r.slot = slot;

    /* a caller's struct is written only with a whole redirect */
    *rd = r;

    return 0;
}


/* a slot number of CLUSTER SLOTS: an integer 0..16383 */
static int
ngx_http_linegate_redis_slot_get(const redisReply *r, unsigned *slot)
{
    if (r->type != REDIS_REPLY_INTEGER
        || r->integer < 0
        || r->integer >= NGX_HTTP_LINEGATE_REDIS_SLOTS)
    {
        return -1;
    }

    *slot = (unsigned) r->integer;

    return 0;
}


/*
 * [first, last, [host, port, ...], replicas...]: Redis 7 adds the node's
 * id and a metadata map (an array in RESP2) after the port; they and the
 * replicas are not read.
 */
static int
ngx_http_linegate_redis_range_parse(const redisReply *r,
    ngx_http_linegate_redis_range_t *range)
{
    const redisReply  *node, *host, *port;

    if (r->type != REDIS_REPLY_ARRAY
        || r->elements < 3
        || ngx_http_linegate_redis_slot_get(r->element[0], &range->first)
           != 0
        || ngx_http_linegate_redis_slot_get(r->element[1], &range->last)
           != 0
        || range->first > range->last)
    {
        return -1;
    }

    node = r->element[2];

    if (node->type != REDIS_REPLY_ARRAY || node->elements < 2) {
        return -1;
    }

    host = node->element[0];
    port = node->element[1];

    if (port->type != REDIS_REPLY_INTEGER
        || port->integer < 1
        || port->integer > NGX_HTTP_LINEGATE_REDIS_PORT_MAX)
    {
        return -1;
    }

    range->port = (int) port->integer;

    /* nil: Redis 7's unknown endpoint (cluster-preferred-endpoint-type) */
    if (host->type == REDIS_REPLY_NIL) {
        return ngx_http_linegate_redis_host(range->host, &range->host_len,
                                            "", 0);
    }

    if (host->type != REDIS_REPLY_STRING) {
        return -1;
    }

    return ngx_http_linegate_redis_host(range->host, &range->host_len,
                                        host->str, host->len);
}


int
ngx_http_linegate_redis_slots_parse(const redisReply *reply,
    ngx_http_linegate_redis_range_t *ranges, size_t max, size_t *n)
{
    size_t  i;

    *n = 0;

    if (reply == NULL
        || reply->type != REDIS_REPLY_ARRAY
        || reply->elements == 0
        || reply->elements > max)
    {
        return -1;
    }

    for (i = 0; i < reply->elements; i++) {
        if (ngx_http_linegate_redis_range_parse(reply->element[i],
                                                &ranges[i])
            != 0)
        {
            return -1;
        }
    }

    *n = reply->elements;

    return 0;
}


int
ngx_http_linegate_redis_slots_complete(
    const ngx_http_linegate_redis_range_t *ranges, size_t n)
{
    size_t    i, covered;
    unsigned  s;
    uint8_t   seen[NGX_HTTP_LINEGATE_REDIS_SLOTS / 8];

    memset(seen, 0, sizeof(seen));
    covered = 0;

    for (i = 0; i < n; i++) {
        if (ranges[i].first > ranges[i].last
            || ranges[i].last >= NGX_HTTP_LINEGATE_REDIS_SLOTS)
        {
            return 0;
        }

        for (s = ranges[i].first; s <= ranges[i].last; s++) {
            if (seen[s >> 3] & (1u << (s & 7))) {
                return 0;
            }

            seen[s >> 3] |= (uint8_t) (1u << (s & 7));
        }

        covered += ranges[i].last - ranges[i].first + 1;
    }

    /* no slot twice: as many slots as there are means every one */
    return covered == NGX_HTTP_LINEGATE_REDIS_SLOTS;
}


int
ngx_http_linegate_redis_nodes_masters(const char *text, size_t len,
    ngx_http_linegate_redis_master_t *masters, size_t max, size_t *n)
{
    int                                rc;
    size_t                             found;
    const char                        *p, *last, *eol;
    ngx_http_linegate_redis_master_t   m;

    *n = 0;

    if (text == NULL) {
        return -1;
    }

    found = 0;
    last = text + len;

    for (p = text; p < last; p = eol + 1) {
        eol = memchr(p, '\n', (size_t) (last - p));

        if (eol == NULL) {
            eol = last;
        }

        if (eol == p) {
            continue;
        }

        rc = ngx_http_linegate_redis_node_line(p, eol, &m);

        if (rc == -1 || (rc == 1 && found == max)) {
            return -1;
        }

        if (rc == 1) {
            masters[found++] = m;
        }
    }

    *n = found;

    return 0;
}


/*
 * One line: 1 and *m, a master that may take a write; 0 another node.
 * A master flagged fail, handshake or noaddr is left out while it has no
 * slot; with slots (still routed to, and writable again once its link
 * is back, before the flag is cleared), a fail or handshake one is kept
 * (its subscription fails while it is down: not live), a noaddr one
 * cannot be subscribed on (-1).
 */
static int
ngx_http_linegate_redis_node_line(const char *p, const char *last,
    ngx_http_linegate_redis_master_t *m)
{
    int          down;
    size_t       i;
    uint64_t     epoch;
    const char  *field[8], *end[8], *sp, *d;

    if (last > p && last[-1] == '\r') {
        last--;
    }

    for (i = 0; i < 8; i++) {
        if (p >= last) {
            return -1;
        }

        sp = memchr(p, ' ', (size_t) (last - p));

        field[i] = p;
        end[i] = sp ? sp : last;
        p = sp ? sp + 1 : last;
    }

    if (!ngx_http_linegate_redis_flag(field[2], end[2], "master")) {
        return 0;
    }

    /* p < last: slot fields follow the 8 others */
    if (ngx_http_linegate_redis_flag(field[2], end[2], "noaddr")) {
        return p < last ? -1 : 0;
    }

    down = ngx_http_linegate_redis_flag(field[2], end[2], "fail")
           || ngx_http_linegate_redis_flag(field[2], end[2], "handshake");

    if (down && p >= last) {
        return 0;
    }

    /* the config epoch: a failover (and back) changes it */
    epoch = 0;

    for (d = field[6]; d < end[6]; d++) {
        if (*d < '0' || *d > '9' || d - field[6] >= 19) {
            return -1;
        }

        epoch = epoch * 10 + (uint64_t) (*d - '0');
    }

    if (d == field[6]) {
        return -1;
    }

    m->epoch = epoch;

    /* ip:port, then "@cport" (Redis 4 and later), then ",hostname" (7) */
    for (sp = field[1]; sp < end[1] && *sp != '@' && *sp != ','; sp++) {
        /* void */
    }

    return ngx_http_linegate_redis_addr(field[1], sp, m->host, &m->host_len,
                                        &m->port) == 0 ? 1 : -1;
}


/*
 * "host:port" in [p, last): the port (1..65535) after the last colon (an
 * IPv6 address has its own), the host before it (ngx_http_linegate_redis_
 * host()'s rules)
 */
static int
ngx_http_linegate_redis_addr(const char *p, const char *last, char *host,
    size_t *host_len, int *port)
{
    unsigned     n;
    const char  *colon;

    for (colon = last; colon > p && colon[-1] != ':'; colon--) {
        /* void */
    }

    if (colon == p
        || ngx_http_linegate_redis_number(colon, last,
                                          NGX_HTTP_LINEGATE_REDIS_PORT_MAX,
                                          &n)
           != 0
        || n == 0
        || ngx_http_linegate_redis_host(host, host_len, p,
                                        (size_t) (colon - 1 - p))
           != 0)
    {
        return -1;
    }

    *port = (int) n;

    return 0;
}


/* flags: a comma-separated list; 1 when flag is one of them */
static int
ngx_http_linegate_redis_flag(const char *p, const char *last,
    const char *flag)
{
    size_t       len;
    const char  *comma;

    len = strlen(flag);

    while (p < last) {
        comma = memchr(p, ',', (size_t) (last - p));

        if (comma == NULL) {
            comma = last;
        }

        if ((size_t) (comma - p) == len && memcmp(p, flag, len) == 0) {
            return 1;
        }

        p = comma + 1;
    }

    return 0;
}
