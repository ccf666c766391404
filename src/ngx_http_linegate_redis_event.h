
/*
 * linegate: the hiredis adapter for nginx's event loop, shared by every
 * asynchronous Redis connection of a worker (the store's, and the ones
 * that ask Redis Sentinel where the master is), and the PING that shows
 * a subscribed connection alive (the subscribers of redis_pubsub.c, the
 * +switch-master subscription of redis_sentinel.c).
 */


#ifndef _NGX_HTTP_LINEGATE_REDIS_EVENT_H_INCLUDED_
#define _NGX_HTTP_LINEGATE_REDIS_EVENT_H_INCLUDED_


#include "ngx_http_linegate_module.h"
#include <hiredis/async.h>


/*
 * Wraps the socket of a new hiredis context in an nginx connection with
 * level-triggered events (a reply larger than one hiredis read is never
 * stranded) and starts watching for the end of the non-blocking connect.
 * defer: its commands may wait a few turns of the event loop, sent
 * together (a cluster's nodes: the file's head says why).
 * NGX_ERROR: no connection or memory left (the caller frees ac). Once
 * attached, hiredis owns the socket and releases nginx's view of it
 * itself.
 */
ngx_int_t ngx_http_linegate_redis_event_attach(redisAsyncContext *ac,
    ngx_log_t *log, ngx_uint_t defer);

/*
 * A new context, attached, with its data and callbacks set: to the Unix
 * socket path when it has a length, else to host (an IP address, NUL
 * terminated: hiredis would resolve a name with a blocking call) and
 * port. NULL when none could be made, what failed logged at error
 * (who: "redis", "redis subscriber"), nothing left to free.
 */
redisAsyncContext *ngx_http_linegate_redis_event_connect(ngx_str_t *path,
    ngx_str_t *host, ngx_int_t port, ngx_log_t *log, ngx_uint_t defer,
    const char *who, void *data, redisConnectCallback *connected,
    redisDisconnectCallback *disconnected);

/*
 * A subscribed connection proves it is alive by answering a PING: its
 * answer comes after every message published before it (Redis answers a
 * connection in order). The connection must have PSUBSCRIBEd to a
 * pattern, name, that is a channel's own name (no glob character: that
 * channel alone): hiredis 0.14 hands a subscribed context's replies to
 * the callback of the channel or pattern their second element names,
 * looking among the patterns when the first one starts with 'p', so the
 * answer to "PING <name>", ["pong", "<name>"], reaches the pattern's
 * callback; with SUBSCRIBE it would be looked for among the patterns
 * and lost.
 *
 * ping() sends "PING <name>" (NGX_ERROR: not sent). pong() is asked by
 * the pattern's callback of each reply: 1 when it answers such a PING
 * (the n-th answers the n-th), and then frees the PING's callback, which
 * hiredis 0.14 keeps on its list of "invalid" commands, never calling
 * it, until the context is freed.
 */
ngx_int_t ngx_http_linegate_redis_event_ping(redisAsyncContext *ac,
    ngx_str_t *name);
ngx_uint_t ngx_http_linegate_redis_event_pong(redisAsyncContext *ac,
    redisReply *reply);

/*
 * 1 when kind, the first element of a subscribed connection's reply
 * ("message", "pmessage", "subscribe", "pong"...), is the word given
 * (Redis's case or not); 0 otherwise, a reply not a string included
 */
ngx_uint_t ngx_http_linegate_redis_event_kind(const redisReply *kind,
    const char *word);


#endif /* _NGX_HTTP_LINEGATE_REDIS_EVENT_H_INCLUDED_ */
