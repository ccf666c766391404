
/*
 * linegate: one connection's WAITs, at most one in flight (the header
 * says why).
 */


#include <stdlib.h>

#include "ngx_http_linegate_redis_wait.h"


typedef struct {
    ngx_http_linegate_redis_wait_fn       *fn;
    void                                  *privdata;
} ngx_http_linegate_redis_waiter_t;


/*
 * The writes one WAIT answers for. Written: its WAIT is in flight;
 * else it waits for the one written before it, its follower's.
 */
struct ngx_http_linegate_redis_wait_batch_s {
    ngx_http_linegate_redis_waits_t       *w;
    struct redisAsyncContext              *ac;
    int                                    written;
    ngx_http_linegate_redis_wait_batch_t  *follower;
    ngx_http_linegate_redis_waiter_t      *waiter;
    unsigned                               n;
    unsigned                               size;
};


static ngx_http_linegate_redis_wait_batch_t *
    ngx_http_linegate_redis_wait_batch(ngx_http_linegate_redis_waits_t *w,
    struct redisAsyncContext *ac);
static int ngx_http_linegate_redis_wait_join(
    ngx_http_linegate_redis_wait_batch_t *b,
    ngx_http_linegate_redis_wait_fn *fn, void *privdata);
static void ngx_http_linegate_redis_wait_cb(struct redisAsyncContext *ac,
    void *reply, void *privdata);
static void ngx_http_linegate_redis_wait_end(
    ngx_http_linegate_redis_wait_batch_t *b, void *reply);


int
ngx_http_linegate_redis_waits_add(ngx_http_linegate_redis_waits_t *w,
    struct redisAsyncContext *ac, ngx_http_linegate_redis_wait_fn *fn,
    void *privdata)
{
    ngx_http_linegate_redis_wait_batch_t  *b, *t;

    t = w->tail;

    /*
     * a batch of another connection (one lost: its WAIT's reply, NULL,
     * is still owed) says nothing of this one's
     */
    if (t != NULL && t->ac == ac) {

        if (!t->written) {
            /* its WAIT is written after the one in flight answers */
            return ngx_http_linegate_redis_wait_join(t, fn, privdata);
        }

        b = ngx_http_linegate_redis_wait_batch(w, ac);
        if (b == NULL) {
            return -1;
        }

        if (ngx_http_linegate_redis_wait_join(b, fn, privdata) != 0) {
            free(b);
            return -1;
        }

        t->follower = b;
        w->tail = b;
        return 0;
    }

    /* no WAIT in flight on ac: this one is written now */
    b = ngx_http_linegate_redis_wait_batch(w, ac);
    if (b == NULL) {
        return -1;
    }

    if (ngx_http_linegate_redis_wait_join(b, fn, privdata) != 0
        || w->send(ac, ngx_http_linegate_redis_wait_cb, b) != 0)
    {
        free(b->waiter);
        free(b);
        return -1;
    }

    b->written = 1;
    w->tail = b;

    return 0;
}


static ngx_http_linegate_redis_wait_batch_t *
ngx_http_linegate_redis_wait_batch(ngx_http_linegate_redis_waits_t *w,
    struct redisAsyncContext *ac)
{
    ngx_http_linegate_redis_wait_batch_t  *b;

    b = calloc(1, sizeof(ngx_http_linegate_redis_wait_batch_t));
    if (b == NULL) {
        return NULL;
    }

    b->w = w;
    b->ac = ac;

    return b;
}


static int
ngx_http_linegate_redis_wait_join(ngx_http_linegate_redis_wait_batch_t *b,
    ngx_http_linegate_redis_wait_fn *fn, void *privdata)
{
    unsigned                           size;
    ngx_http_linegate_redis_waiter_t  *waiter;

    if (b->n == b->size) {
        size = b->size ? 2 * b->size : 4;
        waiter = realloc(b->waiter, size * sizeof(*waiter));
        if (waiter == NULL) {
            return -1;
        }

        b->waiter = waiter;
        b->size = size;
    }

    b->waiter[b->n].fn = fn;
    b->waiter[b->n].privdata = privdata;
    b->n++;

    return 0;
}


/*
 * A WAIT's reply: the batch behind it gets its WAIT first (written now,
 * after every write of its members), then this batch's writes get the
 * reply; their callbacks may add writes of their own.
 */
static void
ngx_http_linegate_redis_wait_cb(struct redisAsyncContext *ac, void *reply,
    void *privdata)
{
    ngx_http_linegate_redis_waits_t       *w;
    ngx_http_linegate_redis_wait_batch_t  *b, *f;

    b = privdata;
    w = b->w;
    f = b->follower;

    if (w->tail == b) {
        w->tail = NULL;
    }

    if (f != NULL) {
        /* no reply: the connection is gone, and the follower's WAIT too */
        if (reply != NULL
            && w->send(ac, ngx_http_linegate_redis_wait_cb, f) == 0)
        {
            f->written = 1;

        } else {
            if (w->tail == f) {
                w->tail = NULL;
            }

            ngx_http_linegate_redis_wait_end(f, NULL);
        }
    }

    ngx_http_linegate_redis_wait_end(b, reply);
}


/* each write of b gets reply; b is freed */
static void
ngx_http_linegate_redis_wait_end(ngx_http_linegate_redis_wait_batch_t *b,
    void *reply)
{
    unsigned  i;

    for (i = 0; i < b->n; i++) {
        b->waiter[i].fn(b->ac, reply, b->waiter[i].privdata);
    }

    free(b->waiter);
    free(b);
}
