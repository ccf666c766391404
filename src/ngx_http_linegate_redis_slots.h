
/*
 * linegate: Redis Cluster's arithmetic and the replies that route a
 * command. The slot of a key (CRC16 of its hash tag), the MOVED and ASK
 * redirects of an error reply, and the CLUSTER SLOTS map, with a check
 * that a map covers every slot once before anyone installs it.
 *
 * Pure C: no nginx headers (hiredis for redisReply only), so it is
 * unit-tested outside nginx (t/unit/test_slots.c) and fuzzed
 * (t/fuzz/fuzz_redis_slots.c). The connections and the routing that use
 * it are src/ngx_http_linegate_redis.c's.
 */


#ifndef _NGX_HTTP_LINEGATE_REDIS_SLOTS_H_INCLUDED_
#define _NGX_HTTP_LINEGATE_REDIS_SLOTS_H_INCLUDED_


#include <stddef.h>
#include <stdint.h>

#include <hiredis/hiredis.h>


#define NGX_HTTP_LINEGATE_REDIS_SLOTS      16384
#define NGX_HTTP_LINEGATE_REDIS_HOST_MAX   46   /* an IPv6 text address */


/*
 * Redis Cluster's slot of a key: CRC16 (XMODEM) of the hash tag, the
 * bytes between the first '{' and the next '}' when that is not empty,
 * else of the whole key; mod 16384.
 */
unsigned ngx_http_linegate_redis_keyslot(const unsigned char *key,
    size_t len);


/*
 * A hash tag for every slot: 3 characters of [0-9A-Za-z] whose CRC16
 * is that slot (the 238,328 such strings cover all 16384 slots). A key
 * "...{<tag>}..." lands in the slot asked for, so that a preview token
 * can name the slot of the account that minted it (docs/data-model.md).
 * _init() fills the table (once per process; ~1 ms); _tag() needs it.
 */
#define NGX_HTTP_LINEGATE_REDIS_SLOT_TAG_LEN  3

void ngx_http_linegate_redis_slot_tags_init(void);
const unsigned char *ngx_http_linegate_redis_slot_tag(unsigned slot);


/*
 * "MOVED <slot> <host>:<port>" or "ASK <slot> <host>:<port>" (a reply
 * error's text, as hiredis gives it: reply->str, reply->len). host is
 * copied NUL-terminated into the struct; an empty host (Redis 7 sends
 * ":<port>" when the node's address is unknown to it) gives host_len 0,
 * meaning "the node that answered"; so does "?" (Redis 7's unknown
 * hostname). IPv6 hosts have colons: the port is after the LAST colon.
 * Returns 0 when parsed, -1 otherwise (not a redirect, slot out of range,
 * port not 1..65535, host too long or not printable).
 */
typedef struct {
    unsigned   ask;        /* 1: ASK, 0: MOVED */
    unsigned   slot;
    char       host[NGX_HTTP_LINEGATE_REDIS_HOST_MAX + 1];
    size_t     host_len;
    int        port;
} ngx_http_linegate_redis_redirect_t;

int ngx_http_linegate_redis_redirect_parse(const char *str, size_t len,
    ngx_http_linegate_redis_redirect_t *rd);


/*
 * One range of a CLUSTER SLOTS reply: its master only (element 2 of each
 * range; replicas, elements 3+, are ignored: linegate writes and reads on
 * masters). host as above (empty, nil or "?": the node asked, host_len
 * 0).
 */
typedef struct {
    unsigned   first;
    unsigned   last;
    char       host[NGX_HTTP_LINEGATE_REDIS_HOST_MAX + 1];
    size_t     host_len;
    int        port;
} ngx_http_linegate_redis_range_t;

/*
 * Parses a CLUSTER SLOTS reply into at most max ranges (*n set). Every
 * malformed element fails the whole reply (-1): wrong types, first >
 * last, a slot >= 16384, a port out of range, a host too long, more than
 * max ranges, or an empty reply (a cluster with no slots assigned). 0
 * when parsed. It does not check overlaps or coverage: see below.
 */
int ngx_http_linegate_redis_slots_parse(const redisReply *reply,
    ngx_http_linegate_redis_range_t *ranges, size_t max, size_t *n);

/*
 * 1 when the ranges cover every slot exactly once (no gap, no overlap):
 * a map worth installing; 0 otherwise (a cluster being set up, or a
 * reply from a node that does not know the whole map yet).
 */
int ngx_http_linegate_redis_slots_complete(
    const ngx_http_linegate_redis_range_t *ranges, size_t n);


/*
 * a master of CLUSTER NODES; host_len 0: the node asked (its own line);
 * its config epoch
 */
typedef struct {
    char       host[NGX_HTTP_LINEGATE_REDIS_HOST_MAX + 1];
    size_t     host_len;
    int        port;
    uint64_t   epoch;
} ngx_http_linegate_redis_master_t;

/*
 * CLUSTER NODES, its text: one line per node, "<id> <ip:port@cport
 * [,hostname]> <flags> <master> <ping-sent> <pong-recv> <config-epoch>
 * <link-state> [<slot> ...]". 0 and the n masters (at most max) that may
 * take a write, with or without slots: flagged "master"; one also
 * flagged "fail" (a master replaced, or gone), "handshake" or "noaddr"
 * only while it has slots ("fail?", not yet agreed on, is kept). -1 for
 * anything else (a line without those 8 fields, an address without a
 * port, a config epoch not a number, a noaddr master with slots, more
 * than max masters), *n then 0.
 */
int ngx_http_linegate_redis_nodes_masters(const char *text, size_t len,
    ngx_http_linegate_redis_master_t *masters, size_t max, size_t *n);


#endif /* _NGX_HTTP_LINEGATE_REDIS_SLOTS_H_INCLUDED_ */
