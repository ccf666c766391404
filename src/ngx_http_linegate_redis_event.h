
/*
 * linegate: the hiredis adapter for nginx's event loop, shared by every
 * asynchronous Redis connection of a worker (the store's, and the ones
 * that ask Redis Sentinel where the master is).
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


#endif /* _NGX_HTTP_LINEGATE_REDIS_EVENT_H_INCLUDED_ */
