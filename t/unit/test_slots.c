
/*
 * Unit tests for src/ngx_http_linegate_redis_slots.c, TAP output: key
 * slots (the CRC table against the bitwise CRC, Redis's vectors, the
 * hash tags of linegate's keys), MOVED/ASK redirects, CLUSTER SLOTS
 * replies read by hiredis's own reader from RESP bytes (some of them as
 * a Redis 7.0 cluster sent them), the complete-map check, and the
 * masters of CLUSTER NODES.
 */


#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ngx_http_linegate_redis_slots.h"
#include "tap.h"


#define RANGES_MAX  8

/* hosts of 46 bytes (the longest allowed) and 47 */
#define A23         "aaaaaaaaaaaaaaaaaaaaaaa"
#define HOST46      A23 A23
#define HOST47      A23 A23 "a"


/* CRC16 XMODEM by its definition, a bit at a time */
static unsigned
crc16_bitwise(const unsigned char *p, size_t len)
{
    int       bit;
    size_t    i;
    unsigned  crc;

    crc = 0;

    for (i = 0; i < len; i++) {
        crc ^= (unsigned) p[i] << 8;

        for (bit = 0; bit < 8; bit++) {
            crc = (crc & 0x8000) ? ((crc << 1) ^ 0x1021) : (crc << 1);
            crc &= 0xffff;
        }
    }

    return crc;
}


static unsigned
slot_of(const char *key)
{
    return ngx_http_linegate_redis_keyslot((const unsigned char *) key,
                                           strlen(key));
}


static void
test_crc_table(void)
{
    unsigned       a, b, wrong;
    unsigned char  key[2];

    /*
     * Every key of one and two bytes: the second byte's lookup reaches
     * every entry of the table with every high byte of the first's CRC.
     * None has a hash tag ("{}" is an empty one): the whole key hashes.
     */
    wrong = 0;

    for (a = 0; a < 256; a++) {
        key[0] = (unsigned char) a;

        if (ngx_http_linegate_redis_keyslot(key, 1)
            != crc16_bitwise(key, 1) % 16384)
        {
            wrong++;
        }

        for (b = 0; b < 256; b++) {
            key[1] = (unsigned char) b;

            if (ngx_http_linegate_redis_keyslot(key, 2)
                != crc16_bitwise(key, 2) % 16384)
            {
                wrong++;
            }
        }
    }

    ok(wrong == 0, "keyslot of every 1- and 2-byte key is the bitwise CRC");

    ok(crc16_bitwise((const unsigned char *) "123456789", 9) == 0x31c3,
       "the bitwise CRC16 XMODEM of \"123456789\" is 0x31c3");
}


static void
test_keyslot(void)
{
    /* the values a Redis 7.0.15 cluster node gave to CLUSTER KEYSLOT */
    static const struct {
        const char  *key;
        unsigned     slot;
    } vectors[] = {
        { "123456789", 12739 },
        { "foo", 12182 },
        { "bar", 5061 },
        { "{user1000}.following", 3443 },
        { "{user1000}.followers", 3443 },
        { "foo{}{bar}", 8363 },
        { "foo{{bar}}zap", 4015 },
        { "foo{bar}{zap}", 5061 },
        { "lg:{ws:org_1}:gcra", 14153 },
        { "lg:{ws:org_1}", 14153 },
        { "lg:{acct:acct_1}:prov", 8062 },
        { "lg:apikey:abc", 11492 },
        { "{", 4092 },
        { "}", 12090 },
        { "{}", 15257 },
        { "a{b", 13340 },
        { "x}{y}", 12222 },
        { "", 0 },
    };

    char    name[80];
    size_t  i;

    for (i = 0; i < sizeof(vectors) / sizeof(vectors[0]); i++) {
        snprintf(name, sizeof(name), "keyslot(\"%s\") is %u",
                 vectors[i].key, vectors[i].slot);
        ok(slot_of(vectors[i].key) == vectors[i].slot, name);
    }

    ok(slot_of("foo{}{bar}")
       == crc16_bitwise((const unsigned char *) "foo{}{bar}", 10) % 16384,
       "foo{}{bar}: an empty first tag, the whole key hashes");
    ok(slot_of("foo{{bar}}zap") == slot_of("{bar"),
       "foo{{bar}}zap hashes \"{bar\"");
    ok(slot_of("foo{bar}{zap}") == slot_of("bar"),
       "foo{bar}{zap} hashes \"bar\"");
    ok(slot_of("{user1000}.following") == slot_of("user1000"),
       "{user1000}.following hashes user1000");

    /* the workspace's and the account's keys: one script touches them */
    ok(slot_of("lg:{ws:org_1}:gcra") == slot_of("lg:{ws:org_1}")
       && slot_of("lg:{ws:org_1}:keys") == slot_of("lg:{ws:org_1}")
       && slot_of("lg:{ws:org_1}:lr:lr_abc") == slot_of("lg:{ws:org_1}")
       && slot_of("lg:{ws:org_1}:idem:k1") == slot_of("lg:{ws:org_1}"),
       "every lg:{ws:org_1}... key has the workspace's slot");
    ok(slot_of("lg:{acct:acct_1}:prov") == slot_of("lg:{acct:acct_1}"),
       "lg:{acct:acct_1}:prov has the account's slot");
    ok(slot_of("lg:{ws:org_1}") != slot_of("lg:{ws:org_2}"),
       "two workspaces' tags differ (here, not in general)");

    /* a key's bytes past len are not read */
    ok(ngx_http_linegate_redis_keyslot((const unsigned char *) "foo{bar}",
                                       3)
       == 12182,
       "keyslot reads len bytes only");
    ok(ngx_http_linegate_redis_keyslot((const unsigned char *) "{bar}", 4)
       == slot_of("{bar"),
       "a '}' past len closes no tag");
}


/* a test name for bytes that may have control characters: they as \xNN */
static void
name_of(char *name, size_t size, const char *prefix, const char *s)
{
    size_t  n;

    n = (size_t) snprintf(name, size, "%s", prefix);

    for ( /* void */ ; *s && n + 5 < size; s++) {
        n += (size_t) snprintf(name + n, size - n,
                               (*s < 0x20 || *s == 0x7f) ? "\\x%02x" : "%c",
                               (unsigned char) *s);
    }
}


static int
redirect(const char *s, ngx_http_linegate_redis_redirect_t *rd)
{
    return ngx_http_linegate_redis_redirect_parse(s, strlen(s), rd);
}


static void
test_redirect_good(void)
{
    static const struct {
        const char  *text;
        unsigned     ask;
        unsigned     slot;
        const char  *host;       /* "": host_len 0, the node that answered */
        int          port;
        const char  *name;
    } good[] = {
        /* the first four as a Redis 7.0 cluster sent them */
        { "MOVED 12182 127.0.0.1:35817", 0, 12182, "127.0.0.1", 35817,
          "MOVED to an IPv4 address" },
        { "ASK 12182 127.0.0.1:45121", 1, 12182, "127.0.0.1", 45121,
          "ASK" },
        { "MOVED 12182 :35817", 0, 12182, "", 35817,
          "unknown endpoint (empty host)" },
        { "MOVED 12182 ?:35817", 0, 12182, "", 35817,
          "no hostname (\"?\")" },
        { "MOVED 1 ::1:7000", 0, 1, "::1", 7000,
          "IPv6, the port after the last colon" },
        { "MOVED 5 :7000", 0, 5, "", 7000, "empty host" },
        { "MOVED 0 redis-0.example:1", 0, 0, "redis-0.example", 1,
          "slot 0, port 1, a hostname" },
        { "ASK 16383 10.0.0.1:65535", 1, 16383, "10.0.0.1", 65535,
          "slot 16383, port 65535" },
        { "MOVED 7 ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255:6379", 0, 7,
          "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255", 6379,
          "the longest IPv6 text (45 bytes)" },
        { "MOVED 7 " HOST46 ":6379", 0, 7, HOST46, 6379, "a 46-byte host" },
    };

    char                                 name[120];
    size_t                               i;
    ngx_http_linegate_redis_redirect_t   rd;

    for (i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        snprintf(name, sizeof(name), "%s: %s", good[i].text, good[i].name);
        ok(redirect(good[i].text, &rd) == 0
           && rd.ask == good[i].ask && rd.slot == good[i].slot
           && rd.port == good[i].port
           && rd.host_len == strlen(good[i].host)
           && strcmp(rd.host, good[i].host) == 0,
           name);
    }
}


static void
test_redirect_bad(void)
{
    static const char  *bad[] = {
        "",
        "MOVED",
        "MOVED ",
        "MOVED12182 127.0.0.1:7000",
        "MOVEDX 1 127.0.0.1:7000",
        "moved 1 127.0.0.1:7000",
        "ASK",
        "ASKING 1 127.0.0.1:7000",
        "ERR unknown command",
        "CLUSTERDOWN Hash slot not served",
        "MOVED 1",
        "MOVED 1 ",
        "MOVED 127.0.0.1:7000",
        "MOVED  1 127.0.0.1:7000",
        "MOVED 1  127.0.0.1:7000",
        "MOVED -1 127.0.0.1:7000",
        "MOVED +1 127.0.0.1:7000",
        "MOVED 1x 127.0.0.1:7000",
        "MOVED 16384 127.0.0.1:7000",
        "MOVED 99999999999999999999 127.0.0.1:7000",
        "MOVED 1 127.0.0.1:0",
        "MOVED 1 127.0.0.1:70000",
        "MOVED 1 127.0.0.1:65536",
        "MOVED 1 127.0.0.1:",
        "MOVED 1 127.0.0.1",
        "MOVED 1 7000",
        "MOVED 1 127.0.0.1:7000x",
        "MOVED 1 127.0.0.1:7000 ",
        "MOVED 1 127.0.0.1:7000\r\n",
        "MOVED 1 127.0.0.1:-7000",
        "MOVED 1 127.0.0.1:+7000",
        "MOVED 1 127.0.0.1:99999999999999999999",
        "MOVED 1 a b:7000",
        "MOVED 1 a\tb:7000",
        "MOVED 1 " HOST47 ":7000",
        "MOVED 1 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff:1",
        "ASK 1 127.0.0.1:7000 extra",
    };

    char                                 name[120];
    size_t                               i;
    ngx_http_linegate_redis_redirect_t   rd;

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        name_of(name, sizeof(name), "refused: ", bad[i]);
        ok(redirect(bad[i], &rd) == -1, name);
    }

    /* a NUL inside the host: the copy would be a shorter C string */
    ok(ngx_http_linegate_redis_redirect_parse("MOVED 1 a\0b:7000", 16, &rd)
       == -1,
       "refused: a NUL inside the host");

    /* the length is the reply's, not the C string's */
    ok(ngx_http_linegate_redis_redirect_parse("MOVED 1 h:7000", 12, &rd)
       == 0 && rd.port == 70,
       "parses len bytes only (\"MOVED 1 h:70\")");
    ok(ngx_http_linegate_redis_redirect_parse(NULL, 0, &rd) == -1,
       "refused: NULL");

    /* a refused redirect leaves the caller's struct as it was */
    memset(&rd, 0x5a, sizeof(rd));
    rd.port = 1234;
    ok(redirect("MOVED 1 host:0", &rd) == -1 && rd.port == 1234
       && (unsigned char) rd.host[0] == 0x5a,
       "a refused redirect writes nothing");
}


/* a reply read from RESP bytes by hiredis's reader, as the async context */
static redisReply *
resp(const char *bytes)
{
    void         *reply;
    redisReader  *reader;

    reader = redisReaderCreate();
    if (reader == NULL) {
        return NULL;
    }

    reply = NULL;

    if (redisReaderFeed(reader, bytes, strlen(bytes)) != REDIS_OK
        || redisReaderGetReply(reader, &reply) != REDIS_OK)
    {
        reply = NULL;
    }

    redisReaderFree(reader);

    return reply;
}


/* slots_parse of the reply of these RESP bytes; -2: hiredis refused them */
static int
slots(const char *bytes, ngx_http_linegate_redis_range_t *ranges,
    size_t max, size_t *n)
{
    int          rc;
    redisReply  *reply;

    reply = resp(bytes);
    if (reply == NULL) {
        return -2;
    }

    rc = ngx_http_linegate_redis_slots_parse(reply, ranges, max, n);

    freeReplyObject(reply);

    return rc;
}


/* a node [host, port]: host is a bulk string's header and bytes */
#define NODE(host, port)  "*2\r\n" host "\r\n:" #port "\r\n"

/* a range [first, last] whose master is node: RESP of 3 elements */
#define RANGE(first, last, node)                                            \
    "*3\r\n:" #first "\r\n:" #last "\r\n" node

/* three masters, each with one replica, as Redis 6 answers */
#define THREE                                                               \
    "*3\r\n"                                                                \
    "*4\r\n:0\r\n:5460\r\n"                                                 \
    "*3\r\n$8\r\n10.0.0.1\r\n:7000\r\n$4\r\nid-a\r\n"                       \
    "*3\r\n$8\r\n10.0.0.4\r\n:7003\r\n$4\r\nid-d\r\n"                       \
    "*4\r\n:5461\r\n:10922\r\n"                                             \
    "*3\r\n$8\r\n10.0.0.2\r\n:7001\r\n$4\r\nid-b\r\n"                       \
    "*3\r\n$8\r\n10.0.0.5\r\n:7004\r\n$4\r\nid-e\r\n"                       \
    "*4\r\n:10923\r\n:16383\r\n"                                            \
    "*3\r\n$8\r\n10.0.0.3\r\n:7002\r\n$4\r\nid-c\r\n"                       \
    "*3\r\n$8\r\n10.0.0.6\r\n:7005\r\n$4\r\nid-f\r\n"

/* a Redis 7.0.15 cluster of two masters, as it answered (ip endpoints) */
#define REDIS7                                                              \
    "*2\r\n*3\r\n:0\r\n:8191\r\n*4\r\n$9\r\n127.0.0.1\r\n:45121\r\n"        \
    "$40\r\nacbfb86f86833c715f8e4f9187daa417565af722\r\n*0\r\n"             \
    "*3\r\n:8192\r\n:16383\r\n*4\r\n$9\r\n127.0.0.1\r\n:35817\r\n"          \
    "$40\r\nd8b11732622527a6764c01104f03274abdcc5586\r\n*0\r\n"

/* the same, cluster-preferred-endpoint-type unknown-endpoint: nil hosts */
#define REDIS7_NIL                                                          \
    "*2\r\n*3\r\n:0\r\n:8191\r\n*4\r\n$-1\r\n:45121\r\n"                    \
    "$40\r\nacbfb86f86833c715f8e4f9187daa417565af722\r\n"                   \
    "*2\r\n$2\r\nip\r\n$9\r\n127.0.0.1\r\n"                                 \
    "*3\r\n:8192\r\n:16383\r\n*4\r\n$-1\r\n:35817\r\n"                      \
    "$40\r\nd8b11732622527a6764c01104f03274abdcc5586\r\n"                   \
    "*2\r\n$2\r\nip\r\n$9\r\n127.0.0.1\r\n"

/* hostname endpoints, one node with an announced hostname, one with "?" */
#define REDIS7_NAMES                                                        \
    "*2\r\n*3\r\n:0\r\n:8191\r\n*4\r\n$14\r\nnode-a.example\r\n:45121\r\n"  \
    "$40\r\nacbfb86f86833c715f8e4f9187daa417565af722\r\n"                   \
    "*2\r\n$2\r\nip\r\n$9\r\n127.0.0.1\r\n"                                 \
    "*3\r\n:8192\r\n:16383\r\n*4\r\n$1\r\n?\r\n:35817\r\n"                  \
    "$40\r\nd8b11732622527a6764c01104f03274abdcc5586\r\n"                   \
    "*2\r\n$2\r\nip\r\n$9\r\n127.0.0.1\r\n"


static void
test_slots_good(void)
{
    size_t                            n;
    ngx_http_linegate_redis_range_t   r[RANGES_MAX];

    ok(slots(THREE, r, RANGES_MAX, &n) == 0 && n == 3
       && r[0].first == 0 && r[0].last == 5460
       && strcmp(r[0].host, "10.0.0.1") == 0 && r[0].host_len == 8
       && r[0].port == 7000
       && r[1].first == 5461 && r[1].last == 10922
       && strcmp(r[1].host, "10.0.0.2") == 0 && r[1].port == 7001
       && r[2].first == 10923 && r[2].last == 16383
       && strcmp(r[2].host, "10.0.0.3") == 0 && r[2].port == 7002,
       "three masters: their ranges and addresses, replicas ignored");
    ok(ngx_http_linegate_redis_slots_complete(r, n) == 1,
       "three masters: complete");

    ok(slots(THREE, r, 3, &n) == 0 && n == 3, "exactly max ranges");

    ok(slots(REDIS7, r, RANGES_MAX, &n) == 0 && n == 2
       && r[0].first == 0 && r[0].last == 8191 && r[0].port == 45121
       && strcmp(r[0].host, "127.0.0.1") == 0
       && r[1].first == 8192 && r[1].last == 16383 && r[1].port == 35817
       && strcmp(r[1].host, "127.0.0.1") == 0,
       "Redis 7: node id and metadata after the port");
    ok(ngx_http_linegate_redis_slots_complete(r, n) == 1,
       "Redis 7: complete");

    ok(slots(REDIS7_NIL, r, RANGES_MAX, &n) == 0 && n == 2
       && r[0].host_len == 0 && r[0].host[0] == '\0' && r[0].port == 45121
       && r[1].host_len == 0 && r[1].port == 35817,
       "Redis 7, unknown endpoints (nil): host_len 0");

    ok(slots(REDIS7_NAMES, r, RANGES_MAX, &n) == 0 && n == 2
       && strcmp(r[0].host, "node-a.example") == 0 && r[0].host_len == 14
       && r[1].host_len == 0 && r[1].host[0] == '\0' && r[1].port == 35817,
       "Redis 7, hostnames: a name, and \"?\" as host_len 0");

    ok(slots("*1\r\n" RANGE(0, 16383, NODE("$0\r\n", 6379)),
             r, RANGES_MAX, &n) == 0
       && n == 1 && r[0].host_len == 0 && r[0].port == 6379,
       "an empty host: host_len 0");
    ok(slots("*1\r\n" RANGE(0, 16383, NODE("$3\r\n::1", 7000)),
             r, RANGES_MAX, &n) == 0
       && strcmp(r[0].host, "::1") == 0 && r[0].port == 7000,
       "an IPv6 host");
    ok(slots("*1\r\n" RANGE(7, 7, NODE("$1\r\nh", 1)),
             r, RANGES_MAX, &n) == 0
       && n == 1 && r[0].first == 7 && r[0].last == 7 && r[0].port == 1,
       "a range of one slot, port 1");
    ok(slots("*1\r\n" RANGE(0, 16383, NODE("$1\r\nh", 65535)),
             r, RANGES_MAX, &n) == 0 && r[0].port == 65535,
       "port 65535");
    ok(slots("*1\r\n" RANGE(0, 16383, NODE("$46\r\n" HOST46, 6379)),
             r, RANGES_MAX, &n) == 0 && r[0].host_len == 46,
       "a 46-byte host");
}


/*
 * a map of one range a slot (slot i on master i % 3), the most ranges a
 * map can have: redis.c makes room for that many (a cluster whose slots
 * were moved one by one; it used to refuse more than 1024)
 */
static void
test_slots_interleaved(void)
{
    int                                     rc;
    char                                   *bytes, *p;
    size_t                                  i, n, size;
    static ngx_http_linegate_redis_range_t  r[NGX_HTTP_LINEGATE_REDIS_SLOTS];

    size = 16 + NGX_HTTP_LINEGATE_REDIS_SLOTS * 64;
    bytes = malloc(size);
    if (bytes == NULL) {
        ok(0, "16384 ranges: memory");
        return;
    }

    p = bytes + sprintf(bytes, "*%d\r\n", NGX_HTTP_LINEGATE_REDIS_SLOTS);

    for (i = 0; i < NGX_HTTP_LINEGATE_REDIS_SLOTS; i++) {
        p += sprintf(p, "*3\r\n:%zu\r\n:%zu\r\n*2\r\n$8\r\n10.0.0.%zu"
                     "\r\n:%zu\r\n", i, i, i % 3 + 1, 7000 + i % 3);
    }

    rc = slots(bytes, r, NGX_HTTP_LINEGATE_REDIS_SLOTS, &n);

    ok(rc == 0 && n == NGX_HTTP_LINEGATE_REDIS_SLOTS
       && r[16383].first == 16383 && r[16383].last == 16383
       && strcmp(r[16383].host, "10.0.0.1") == 0 && r[16383].port == 7000,
       "16384 ranges, one a slot: parsed");
    ok(rc == 0 && ngx_http_linegate_redis_slots_complete(r, n) == 1,
       "16384 ranges, one a slot: complete");
    ok(slots(bytes, r, NGX_HTTP_LINEGATE_REDIS_SLOTS - 1, &n) == -1
       && n == 0, "16384 ranges, room for 16383: refused");

    free(bytes);
}


static void
test_slots_bad(void)
{
    static const struct {
        const char  *resp;
        const char  *name;
    } bad[] = {
        { "*0\r\n", "an empty reply (no slot assigned)" },
        { "*-1\r\n", "a nil array" },
        { "$-1\r\n", "nil" },
        { "+OK\r\n", "a status" },
        { ":1\r\n", "an integer" },
        { "$5\r\nhello\r\n", "a string" },
        { "-ERR This instance has cluster support disabled\r\n",
          "an error (not a cluster)" },
        { "*1\r\n:0\r\n", "a range that is not an array" },
        { "*1\r\n*2\r\n:0\r\n:16383\r\n", "a range without its master" },
        { "*1\r\n*0\r\n", "an empty range" },
        { "*1\r\n" RANGE(0, 16384, NODE("$1\r\nh", 7000)), "slot 16384" },
        { "*1\r\n" RANGE(16384, 16384, NODE("$1\r\nh", 7000)),
          "first slot 16384" },
        { "*1\r\n" RANGE(-1, 16383, NODE("$1\r\nh", 7000)), "slot -1" },
        { "*1\r\n" RANGE(9223372036854775807, 16383, NODE("$1\r\nh", 7000)),
          "slot 2^63-1" },
        { "*1\r\n" RANGE(10, 9, NODE("$1\r\nh", 7000)), "first > last" },
        { "*1\r\n*3\r\n$1\r\n0\r\n:16383\r\n" NODE("$1\r\nh", 7000),
          "a first slot as a string" },
        { "*1\r\n*3\r\n:0\r\n$5\r\n16383\r\n" NODE("$1\r\nh", 7000),
          "a last slot as a string" },
        { "*1\r\n*3\r\n:0\r\n$-1\r\n" NODE("$1\r\nh", 7000),
          "a nil last slot" },
        { "*1\r\n*3\r\n:0\r\n:16383\r\n:7000\r\n", "a master not an array" },
        { "*1\r\n*3\r\n:0\r\n:16383\r\n$-1\r\n", "a nil master" },
        { "*1\r\n*3\r\n:0\r\n:16383\r\n*1\r\n$1\r\nh\r\n",
          "a master without its port" },
        { "*1\r\n*3\r\n:0\r\n:16383\r\n*0\r\n", "an empty master" },
        { "*1\r\n" RANGE(0, 16383, NODE("$1\r\nh", 0)), "port 0" },
        { "*1\r\n" RANGE(0, 16383, NODE("$1\r\nh", 70000)), "port 70000" },
        { "*1\r\n" RANGE(0, 16383, NODE("$1\r\nh", 65536)), "port 65536" },
        { "*1\r\n" RANGE(0, 16383, NODE("$1\r\nh", -1)), "port -1" },
        { "*1\r\n*3\r\n:0\r\n:16383\r\n*2\r\n$1\r\nh\r\n$4\r\n7000\r\n",
          "a port as a string" },
        { "*1\r\n*3\r\n:0\r\n:16383\r\n*2\r\n$1\r\nh\r\n$-1\r\n",
          "a nil port" },
        { "*1\r\n*3\r\n:0\r\n:16383\r\n*2\r\n:1\r\n:7000\r\n",
          "a host as an integer" },
        { "*1\r\n*3\r\n:0\r\n:16383\r\n*2\r\n+h\r\n:7000\r\n",
          "a host as a status" },
        { "*1\r\n*3\r\n:0\r\n:16383\r\n*2\r\n*0\r\n:7000\r\n",
          "a host as an array" },
        { "*1\r\n" RANGE(0, 16383, NODE("$47\r\n" HOST47, 7000)),
          "a 47-byte host" },
        { "*1\r\n" RANGE(0, 16383, NODE("$3\r\na b", 7000)),
          "a host with a space" },
        { "*1\r\n" RANGE(0, 16383, NODE("$3\r\na\nb", 7000)),
          "a host with a newline" },
        { "*2\r\n" RANGE(0, 8191, NODE("$1\r\nh", 7000))
          RANGE(8192, 16384, NODE("$1\r\nh", 7001)),
          "a good range, then a bad one" },
    };

    char                              name[120];
    size_t                            i, n;
    ngx_http_linegate_redis_range_t   r[RANGES_MAX];

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(name, sizeof(name), "refused: %s", bad[i].name);
        n = 99;
        ok(slots(bad[i].resp, r, RANGES_MAX, &n) == -1 && n == 0, name);
    }

    n = 99;
    ok(slots(THREE, r, 2, &n) == -1 && n == 0,
       "refused: three ranges, room for two");
    ok(slots(THREE, r, 0, &n) == -1 && n == 0,
       "refused: any range, room for none");

    n = 99;
    ok(ngx_http_linegate_redis_slots_parse(NULL, r, RANGES_MAX, &n) == -1
       && n == 0,
       "refused: no reply");
}


static void
test_complete(void)
{
    /* maps of up to four ranges [first, last], and whether each is whole */
    static const struct {
        size_t       n;
        unsigned     range[4][2];
        int          complete;
        const char  *name;
    } maps[] = {
        { 1, { { 0, 16383 } }, 1, "one range of every slot" },
        { 3, { { 10923, 16383 }, { 0, 5460 }, { 5461, 10922 } }, 1,
          "three ranges out of order" },
        { 4, { { 0, 4095 }, { 4096, 8191 }, { 8192, 12287 },
               { 12288, 16383 } }, 1,
          "four ranges of 4096" },
        { 2, { { 10923, 16383 }, { 0, 5460 } }, 0,
          "a master's range missing" },
        { 0, { { 0, 0 } }, 0, "no range" },
        { 2, { { 0, 5460 }, { 5462, 16383 } }, 0,
          "a gap of one slot (5461)" },
        { 1, { { 0, 16382 } }, 0, "slot 16383 missing" },
        { 1, { { 1, 16383 } }, 0, "slot 0 missing" },
        { 2, { { 0, 5461 }, { 5461, 16383 } }, 0,
          "an overlap of one slot" },
        /* as many slots as the map has, one twice and one never */
        { 2, { { 0, 8191 }, { 8191, 16382 } }, 0,
          "16384 slots counted, one twice, one missing" },
        { 2, { { 0, 16383 }, { 0, 16383 } }, 0, "the whole map twice" },
        { 1, { { 0, 16384 } }, 0, "a slot >= 16384" },
        { 2, { { 16383, 0 }, { 0, 16383 } }, 0, "first > last" },
    };

    char                              name[120];
    size_t                            i, j;
    ngx_http_linegate_redis_range_t   r[4];

    for (i = 0; i < sizeof(maps) / sizeof(maps[0]); i++) {
        memset(r, 0, sizeof(r));

        for (j = 0; j < maps[i].n; j++) {
            r[j].first = maps[i].range[j][0];
            r[j].last = maps[i].range[j][1];
            r[j].port = 6379;
        }

        snprintf(name, sizeof(name), "%s: %s", maps[i].name,
                 maps[i].complete ? "complete" : "not complete");
        ok(ngx_http_linegate_redis_slots_complete(r, maps[i].n)
           == maps[i].complete,
           name);
    }
}


/* every slot has a tag of [0-9A-Za-z]{3}, and a key with it is there */
static void
test_slot_tags(void)
{
    char                  key[16];
    unsigned              slot, wrong, bad;
    const unsigned char  *t;

    ngx_http_linegate_redis_slot_tags_init();
    ngx_http_linegate_redis_slot_tags_init();   /* a second call: no-op */

    wrong = 0;
    bad = 0;

    for (slot = 0; slot < NGX_HTTP_LINEGATE_REDIS_SLOTS; slot++) {
        t = ngx_http_linegate_redis_slot_tag(slot);

        if (!isalnum(t[0]) || !isalnum(t[1]) || !isalnum(t[2])) {
            bad++;
            continue;
        }

        snprintf(key, sizeof(key), "lg:pv:{%c%c%c}:x", t[0], t[1], t[2]);

        if (ngx_http_linegate_redis_keyslot((const unsigned char *) key,
                                            strlen(key))
            != slot)
        {
            wrong++;
        }
    }

    ok(bad == 0, "every slot has a tag of 3 characters [0-9A-Za-z]");
    ok(wrong == 0, "a key with a slot's tag is in that slot");
}


/* CLUSTER NODES of a Redis 7.0 cluster being made (two masters without
 * slots yet, about to be replicas), as a node answered it */
#define NODES7                                                               \
    "d592ad2c854ab65638b8796182e8e3f2c5287ed8 127.0.0.1:28023@24186 "       \
    "myself,master - 0 1795716817000 1 connected 0-5460\n"                  \
    "8a25345f15a5d4de5707f46c2cc8185675216a7b 127.0.0.1:26309@31131 "       \
    "master - 0 1795716817321 5 connected\n"                                \
    "b217ee16dfb75df4a76ab9b57296cc4c82bc797a 127.0.0.1:29525@32363 "       \
    "slave 092c851da9114285fffa66cc112eaa6cd0899621 0 1795716817321 3 "     \
    "connected\n"                                                           \
    "092c851da9114285fffa66cc112eaa6cd0899621 127.0.0.1:25647@28074 "       \
    "master - 0 1795716817321 3 connected 10923-16383\n"                    \
    "75126fae08e285a8fae0615acb88f26b5bba10cb 127.0.0.1:28908@22640 "       \
    "master - 0 1795716817523 2 connected 5461-10922\n"

#define NODE_LINE(addr, flags)                                               \
    "0123456789012345678901234567890123456789 " addr " " flags              \
    " - 0 0 1 connected\n"

#define MASTERS_MAX  8


static int
masters(const char *text, ngx_http_linegate_redis_master_t *m, size_t max,
    size_t *n)
{
    return ngx_http_linegate_redis_nodes_masters(text, strlen(text), m, max,
                                                 n);
}


static void
test_nodes_good(void)
{
    size_t                            n;
    ngx_http_linegate_redis_master_t  m[MASTERS_MAX];

    ok(masters(NODES7, m, MASTERS_MAX, &n) == 0 && n == 4
       && strcmp(m[0].host, "127.0.0.1") == 0 && m[0].host_len == 9
       && m[0].port == 28023 && m[1].port == 26309 && m[2].port == 25647
       && m[3].port == 28908 && m[0].epoch == 1 && m[1].epoch == 5,
       "Redis 7.0: the 4 masters, slots or not, not the replica");

    ok(masters(NODES7, m, 4, &n) == 0 && n == 4, "exactly max masters");

    ok(masters(NODE_LINE("127.0.0.1:7000@17000", "master,fail?")
               NODE_LINE("127.0.0.1:7001@17001", "master,fail")
               NODE_LINE("127.0.0.1:7002@17002", "master,handshake")
               NODE_LINE(":0@0", "master,noaddr")
               NODE_LINE("127.0.0.1:7003@17003", "slave,fail")
               NODE_LINE("127.0.0.1:7004@17004", "myself,slave"),
               m, MASTERS_MAX, &n) == 0
       && n == 1 && m[0].port == 7000,
       "fail? kept; fail, handshake, noaddr and replicas left out");

    ok(masters("a 127.0.0.1:7000@1 master,fail - 0 0 3 disconnected 0-9\n"
               "b 127.0.0.1:7001@1 master,handshake - 0 0 4 connected 10\n"
               "c 127.0.0.1:7002@1 master,fail - 0 0 5 disconnected\n",
               m, MASTERS_MAX, &n) == 0
       && n == 2 && m[0].port == 7000 && m[0].epoch == 3
       && m[1].port == 7001,
       "fail or handshake with slots kept (still routed to), not without");

    ok(masters("d 127.0.0.1:7000@1 master - 0 0 18446744073709551 "
               "connected\n", m, MASTERS_MAX, &n) == 0
       && n == 1 && m[0].epoch == 18446744073709551ULL,
       "a large config epoch");

    ok(masters(NODE_LINE(":6379@16379", "myself,master"), m, MASTERS_MAX,
               &n) == 0
       && n == 1 && m[0].host_len == 0 && m[0].host[0] == '\0'
       && m[0].port == 6379,
       "its own line without an address: host_len 0 (the node asked)");

    ok(masters(NODE_LINE("10.0.0.1:7000", "master")
               NODE_LINE("10.0.0.2:7001@17001,node-b.example", "master")
               NODE_LINE("::1:7002@17002", "master"),
               m, MASTERS_MAX, &n) == 0
       && n == 3 && strcmp(m[0].host, "10.0.0.1") == 0
       && strcmp(m[1].host, "10.0.0.2") == 0 && m[1].port == 7001
       && strcmp(m[2].host, "::1") == 0 && m[2].port == 7002,
       "no cluster port (Redis 3), a hostname (Redis 7), IPv6");

    ok(masters("d 127.0.0.1:7000@1 master - 0 0 1 connected 0-16383\r\n"
               "\n", m, MASTERS_MAX, &n) == 0
       && n == 1 && m[0].port == 7000, "CRLF and an empty line");

    ok(masters("", m, MASTERS_MAX, &n) == 0 && n == 0, "no node: none");
}


static void
test_nodes_bad(void)
{
    size_t                            i, n;
    ngx_http_linegate_redis_master_t  m[MASTERS_MAX];

    static const char  *bad[] = {
        "d 127.0.0.1:7000@1 master - 0 0 1\n",           /* 7 fields */
        NODE_LINE("127.0.0.1:0@17000", "master"),
        NODE_LINE("127.0.0.1:70000@17000", "master"),
        NODE_LINE("127.0.0.1@17000", "master"),
        NODE_LINE("127.0.0.1:@17000", "master"),
        NODE_LINE("127.0.0.1:7x@17000", "master"),
        NODE_LINE(HOST47 ":7000@17000", "master"),
        NODE_LINE("127.0.0.1:7000@1", "master")
        "d 127.0.0.1:7001@1 master\n",
        "d :0@0 master,noaddr - 0 0 1 connected 0-16383\n",
        "d 127.0.0.1:7000@1 master - 0 0 x connected\n",
        "d 127.0.0.1:7000@1 master - 0 0  connected\n",
        "d 127.0.0.1:7000@1 master - 0 0 12345678901234567890 connected\n",
    };

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        n = 99;
        ok(masters(bad[i], m, MASTERS_MAX, &n) == -1 && n == 0,
           "a malformed CLUSTER NODES refused, n 0");
    }

    n = 99;
    ok(masters(NODES7, m, 3, &n) == -1 && n == 0,
       "more masters than max: refused");

    n = 99;
    ok(ngx_http_linegate_redis_nodes_masters(NULL, 0, m, MASTERS_MAX, &n)
       == -1 && n == 0, "NULL refused");

    n = 99;
    ok(masters(NODE_LINE(HOST46 ":7000@1", "master"), m, MASTERS_MAX, &n)
       == 0 && n == 1 && m[0].host_len == 46,
       "a host of 46 bytes taken");
}


int
main(void)
{
    test_crc_table();
    test_keyslot();
    test_slot_tags();
    test_redirect_good();
    test_redirect_bad();
    test_slots_good();
    test_slots_interleaved();
    test_slots_bad();
    test_complete();
    test_nodes_good();
    test_nodes_bad();

    return tap_done();
}
