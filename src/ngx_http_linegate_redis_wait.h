
/*
 * linegate: one connection's WAITs (linegate_redis_wait), at most one in
 * flight. Redis runs a connection's WAIT to its end before the commands
 * written after it: written one per acknowledged write, they ran one
 * after another, each for its whole timeout while no replica answered,
 * and the reads behind them waited for the sum. Here an acknowledged
 * write made while a WAIT is in flight on its connection joins the
 * next WAIT instead, written when that one answers: a WAIT counts the
 * replicas that have every write its connection made before it, so one
 * answers for all of them. A write then waits for two WAITs at most,
 * and any command for one.
 *
 * Pure C: no nginx nor hiredis headers (the WAIT is written by the
 * caller's send function), unit-tested in t/unit/test_wait.c.
 */


#ifndef _NGX_HTTP_LINEGATE_REDIS_WAIT_H_INCLUDED_
#define _NGX_HTTP_LINEGATE_REDIS_WAIT_H_INCLUDED_


struct redisAsyncContext;


/* hiredis's redisCallbackFn: a WAIT's reply (NULL: none came) */
typedef void ngx_http_linegate_redis_wait_fn(struct redisAsyncContext *ac,
    void *reply, void *privdata);

/* writes "WAIT ..." on ac, fn(ac, reply, privdata) its reply: 0, or -1 */
typedef int ngx_http_linegate_redis_wait_send_fn(struct redisAsyncContext *ac,
    ngx_http_linegate_redis_wait_fn *fn, void *privdata);

typedef struct ngx_http_linegate_redis_wait_batch_s
    ngx_http_linegate_redis_wait_batch_t;

/* a connection's WAITs: the newest batch, written or waiting its turn */
typedef struct {
    ngx_http_linegate_redis_wait_batch_t  *tail;
    ngx_http_linegate_redis_wait_send_fn  *send;
} ngx_http_linegate_redis_waits_t;


/*
 * An acknowledged write was just written on ac: fn(ac, reply, privdata)
 * gets the reply of a WAIT written after it (NULL when none came: the
 * connection was lost, or the WAIT could not be written). 0: it will;
 * -1: no WAIT could be written now, and fn will not be called.
 */
int ngx_http_linegate_redis_waits_add(ngx_http_linegate_redis_waits_t *w,
    struct redisAsyncContext *ac, ngx_http_linegate_redis_wait_fn *fn,
    void *privdata);


#endif /* _NGX_HTTP_LINEGATE_REDIS_WAIT_H_INCLUDED_ */
