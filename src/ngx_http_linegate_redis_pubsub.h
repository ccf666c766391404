
/*
 * linegate: a worker's subscriber connection (hiredis async on nginx's
 * event loop), SUBSCRIBEd to the channel of revoked API keys
 * (keys.c), so that a key cache may keep an entry past its plain time
 * while the worker is provably told of every revocation.
 */


#ifndef _NGX_HTTP_LINEGATE_REDIS_PUBSUB_H_INCLUDED_
#define _NGX_HTTP_LINEGATE_REDIS_PUBSUB_H_INCLUDED_


#include "ngx_http_linegate_module.h"


/* a PING of the subscriber's, sent after the barrier was taken */
typedef struct {
    ngx_uint_t                      gen;
    ngx_uint_t                      ping;
} ngx_http_linegate_redis_pubsub_barrier_t;


/* a message published on the channel: its payload (a digest, sha256hex) */
typedef void (*ngx_http_linegate_redis_pubsub_handler_pt)(u_char *data,
    size_t len);


/*
 * A worker starts: the subscriber connects once the worker's own
 * connection knows a server (the same address or Sentinel's master,
 * never a cluster; the same password and timeouts), and again after
 * every loss, with a backoff. handler (or NULL) is called for every
 * revocation. invalidate (or NULL): the subscriber also takes client
 * tracking's invalidations (__redis__:invalidate); invalidate is called
 * with each key changed, and with NULL when every key must be taken as
 * changed (Redis flushed its table, the subscriber was lost).
 */
ngx_int_t ngx_http_linegate_redis_pubsub_init_process(ngx_cycle_t *cycle,
    ngx_http_linegate_main_conf_t *lmcf,
    ngx_http_linegate_redis_pubsub_handler_pt handler,
    ngx_http_linegate_redis_pubsub_handler_pt invalidate);

/* called after each PING answered (a barrier may have passed) */
void ngx_http_linegate_redis_pubsub_on_pong(void (*pong)(void));
void ngx_http_linegate_redis_pubsub_exit_process(ngx_cycle_t *cycle);

/*
 * The generation of the subscription: it changes whenever the
 * subscription is lost or made again. An entry learned in generation g
 * was told of every message published since, as long as the generation
 * is still g and the link is live.
 */
ngx_uint_t ngx_http_linegate_redis_pubsub_gen(void);

/*
 * Changes with the generation and with every message received: the same
 * value before a key was looked up and after it was answered means that
 * no revocation reached the worker meanwhile.
 */
ngx_uint_t ngx_http_linegate_redis_pubsub_seq(void);

/*
 * 1 when subscribed and a PING sent on the subscriber connection less
 * than a second ago has been answered: every message published before
 * that PING has been handled (Redis answers a connection in order).
 */
ngx_uint_t ngx_http_linegate_redis_pubsub_live(void);

/*
 * NGX_OK and the subscriber's CLIENT ID, for CLIENT TRACKING ... REDIRECT,
 * while it takes invalidations and is live; NGX_DECLINED otherwise.
 */
ngx_int_t ngx_http_linegate_redis_pubsub_tracking_id(int64_t *id);

/*
 * Handles now what Redis has written to the subscriber so far, without
 * waiting for the event loop: an invalidation Redis sent before it
 * answered a command of the worker's is handled before that answer is
 * trusted.
 */
void ngx_http_linegate_redis_pubsub_read(void);

/*
 * A barrier: the subscriber PINGs Redis at the end of this turn of the
 * event loop (once for every barrier taken in it). Once that PING is
 * answered (_passed(): 1), Redis has written to the subscriber every
 * invalidation of a write it ran before the PING, whatever its backlog
 * was: a connection's replies come in order.
 */
void ngx_http_linegate_redis_pubsub_barrier(
    ngx_http_linegate_redis_pubsub_barrier_t *b);
ngx_uint_t ngx_http_linegate_redis_pubsub_passed(
    ngx_http_linegate_redis_pubsub_barrier_t *b);


#endif /* _NGX_HTTP_LINEGATE_REDIS_PUBSUB_H_INCLUDED_ */
