
/*
 * linegate: linegate_lines_cache, a worker's answers of GET
 * /api/lines/by-user kept while Redis's client tracking says that nothing
 * they were read from has changed.
 *
 * A fill reads the workspace's index and hashes after CLIENT TRACKING on
 * REDIRECT <the subscriber> OPTIN and a CLIENT CACHING yes before each
 * read, so Redis tells the worker's subscriber (redis_pubsub.c) of the
 * next change to any of them, whoever makes it: a script, the operator
 * API, another nginx, redis-cli, an expiry. The change drops the
 * workspace's answer. An answer is served only while the connection it
 * was tracked on and the subscriber are the ones it was filled with, the
 * subscriber is live, and the index read by the request is the one it
 * was built from.
 */


#ifndef _NGX_HTTP_LINEGATE_LINES_CACHE_H_INCLUDED_
#define _NGX_HTTP_LINEGATE_LINES_CACHE_H_INCLUDED_


#include "ngx_http_linegate_module.h"
#include "ngx_http_linegate_redis_pubsub.h"
#include <hiredis/hiredis.h>


/* a workspace with more live lines is not kept (its fill: 3 + 2n cmds) */
#define NGX_HTTP_LINEGATE_LINES_CACHE_LINES  30


/* what a fill was sent under: its answer is kept only if still so */
typedef struct {
    ngx_uint_t                      pubsub_gen;
    ngx_uint_t                      seq;       /* of invalidations */
    ngx_uint_t                      conn_gen;
    int64_t                         redirect;   /* the subscriber's id */
} ngx_http_linegate_lines_cache_fill_t;


/*
 * The worker's table (linegate_lines_cache bytes): NGX_OK, and *invalidate
 * the handler of the subscriber's invalidations, or NULL when off
 */
ngx_int_t ngx_http_linegate_lines_cache_init_process(ngx_cycle_t *cycle,
    ngx_http_linegate_main_conf_t *lmcf,
    ngx_http_linegate_redis_pubsub_handler_pt *invalidate);

/*
 * A by-user arrived: the barrier its answer from the table waits for (a
 * PING of the subscriber's sent after now: once it is answered, every
 * invalidation of a write finished before the request is handled)
 */
void ngx_http_linegate_lines_cache_barrier(
    ngx_http_linegate_redis_pubsub_barrier_t *b);

/* the ids of an index reply (ZRANGE), in order, as one CRC-32 */
ngx_int_t ngx_http_linegate_lines_cache_index(redisReply *index,
    uint32_t *crc);

/*
 * The answer kept for workspace ws on day date, built from the index
 * the request read (n ids, their crc), once b passed: NGX_OK and body
 * (the table's own bytes: copy them before anything else runs);
 * NGX_AGAIN: there is one, b has not passed yet (the barrier's PING is
 * on its way: _wait()); NGX_DECLINED: none may be served (read Redis).
 */
ngx_int_t ngx_http_linegate_lines_cache_find(ngx_str_t *ws,
    ngx_str_t *date, uint32_t crc, ngx_uint_t n,
    ngx_http_linegate_redis_pubsub_barrier_t *b, ngx_str_t *body);

typedef void (*ngx_http_linegate_lines_cache_wake_pt)(ngx_http_request_t *r);

typedef struct {
    ngx_queue_t                     queue;
    ngx_http_request_t             *r;
    ngx_http_linegate_redis_pubsub_barrier_t  *barrier;
    ngx_http_linegate_lines_cache_wake_pt      wake;
    ngx_pool_cleanup_t             *cln;
} ngx_http_linegate_lines_cache_wait_t;

/*
 * After NGX_AGAIN: wake(r) is called once, when the barrier passed or
 * the subscriber was lost (then find() declines), unless the request is
 * freed first. NGX_ERROR: could not wait (read Redis).
 */
ngx_int_t ngx_http_linegate_lines_cache_wait(ngx_http_request_t *r,
    ngx_http_linegate_lines_cache_wait_t *w,
    ngx_http_linegate_redis_pubsub_barrier_t *b,
    ngx_http_linegate_lines_cache_wake_pt wake);

/* the subscriber is up: its PONGs wake the requests waiting */
void ngx_http_linegate_lines_cache_attach(void);

/* NGX_OK and f when a fill may be sent now (see the header's comment) */
ngx_int_t ngx_http_linegate_lines_cache_fill(
    ngx_http_linegate_lines_cache_fill_t *f);

/* a fill's answer: kept if nothing changed since f (else dropped) */
void ngx_http_linegate_lines_cache_store(
    ngx_http_linegate_lines_cache_fill_t *f, ngx_str_t *ws, ngx_str_t *date,
    redisReply *index, ngx_str_t *body);


#endif /* _NGX_HTTP_LINEGATE_LINES_CACHE_H_INCLUDED_ */
