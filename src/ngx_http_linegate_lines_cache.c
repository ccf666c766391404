
/*
 * linegate: linegate_lines_cache (ngx_http_linegate_lines_cache.h).
 *
 * One table per worker: a red-black tree by workspace, the least recently
 * served answer dropped first once the answers' bytes pass the directive's
 * size. An entry is one allocation: the workspace's id and the answer.
 */


#include "ngx_http_linegate_redis.h"
#include "ngx_http_linegate_redis_pubsub.h"
#include "ngx_http_linegate_lines_cache.h"
#include "ngx_http_linegate_keys.h"


/* the workspaces of the latest invalidations, for the fills in flight */
#define NGX_HTTP_LINEGATE_LINES_CACHE_RECENT 64

/* "YYYY-MM-DD" */
#define NGX_HTTP_LINEGATE_LINES_CACHE_DATE   10


typedef struct {
    ngx_str_node_t                  sn;         /* the workspace, hashed */
    ngx_queue_t                     queue;      /* most recent first */
    u_char                          date[NGX_HTTP_LINEGATE_LINES_CACHE_DATE];
    uint32_t                        index_crc;
    ngx_uint_t                      index_n;
    ngx_uint_t                      pubsub_gen;
    ngx_uint_t                      conn_gen;
    size_t                          size;
    ngx_str_t                       body;
} ngx_http_linegate_lines_cache_entry_t;


typedef struct {
    ngx_rbtree_t                    tree;
    ngx_rbtree_node_t               sentinel;
    ngx_queue_t                     lru;
    size_t                          size;       /* of the entries */
    size_t                          max;
    ngx_log_t                      *log;
    /*
     * invalidations handled (a workspace's key: one; all: a flush), the
     * hashes of the latest workspaces, at seq % RECENT
     */
    ngx_uint_t                      seq;
    ngx_uint_t                      flushed;    /* seq of the last flush */
    ngx_uint_t                      recent[
                                        NGX_HTTP_LINEGATE_LINES_CACHE_RECENT];
    ngx_queue_t                     waiting;
    /*
     * the waiting requests are woken from a posted event, never inside
     * one of the subscriber's hiredis callbacks (a woken request reads
     * the subscriber's socket: ngx_http_linegate_redis_pubsub_read())
     */
    ngx_event_t                     wake;
    ngx_uint_t                      wake_all;
} ngx_http_linegate_lines_cache_t;


static void ngx_http_linegate_lines_cache_invalidate(u_char *key,
    size_t len);
static ngx_http_linegate_lines_cache_entry_t *
    ngx_http_linegate_lines_cache_lookup(ngx_str_t *ws);
static void ngx_http_linegate_lines_cache_drop(
    ngx_http_linegate_lines_cache_entry_t *e);
static void ngx_http_linegate_lines_cache_flush(void);
static void ngx_http_linegate_lines_cache_pong(void);
static void ngx_http_linegate_lines_cache_post_wake(ngx_uint_t all);
static void ngx_http_linegate_lines_cache_wake_handler(ngx_event_t *ev);
static void ngx_http_linegate_lines_cache_wake(ngx_uint_t all);
static void ngx_http_linegate_lines_cache_gone(void *data);
static ngx_uint_t ngx_http_linegate_lines_cache_changed(ngx_uint_t seq,
    ngx_uint_t hash);


static ngx_http_linegate_lines_cache_t  ngx_http_linegate_lines_cache;

/* the wake event's data (nginx's debug log reads it as a connection) */
static ngx_connection_t  ngx_http_linegate_lines_cache_dummy;


ngx_int_t
ngx_http_linegate_lines_cache_init_process(ngx_cycle_t *cycle,
    ngx_http_linegate_main_conf_t *lmcf,
    ngx_http_linegate_redis_pubsub_handler_pt *invalidate)
{
    ngx_http_linegate_lines_cache_t  *c;

    c = &ngx_http_linegate_lines_cache;
    *invalidate = NULL;

    /* off, or a cluster (init_main_conf turned it off and said why) */
    if (lmcf->lines_cache == 0 || !lmcf->uses_lines) {
        return NGX_OK;
    }

    ngx_rbtree_init(&c->tree, &c->sentinel, ngx_str_rbtree_insert_value);
    ngx_queue_init(&c->lru);
    ngx_queue_init(&c->waiting);
    c->max = lmcf->lines_cache;
    c->log = cycle->log;

    ngx_http_linegate_lines_cache_dummy.fd = (ngx_socket_t) -1;
    c->wake.data = &ngx_http_linegate_lines_cache_dummy;
    c->wake.handler = ngx_http_linegate_lines_cache_wake_handler;
    c->wake.log = cycle->log;

    *invalidate = ngx_http_linegate_lines_cache_invalidate;

    return NGX_OK;
}


void
ngx_http_linegate_lines_cache_barrier(
    ngx_http_linegate_redis_pubsub_barrier_t *b)
{
    if (ngx_http_linegate_lines_cache.max) {
        ngx_http_linegate_redis_pubsub_barrier(b);
    }
}


void
ngx_http_linegate_lines_cache_attach(void)
{
    if (ngx_http_linegate_lines_cache.max) {
        ngx_http_linegate_redis_pubsub_on_pong(
            ngx_http_linegate_lines_cache_pong);
    }
}


ngx_int_t
ngx_http_linegate_lines_cache_find(ngx_str_t *ws, ngx_str_t *date,
    uint32_t crc, ngx_uint_t n, ngx_http_linegate_redis_pubsub_barrier_t *b,
    ngx_str_t *body)
{
    ngx_http_linegate_lines_cache_t        *c;
    ngx_http_linegate_lines_cache_entry_t  *e;

    c = &ngx_http_linegate_lines_cache;

    if (c->max == 0 || date->len != NGX_HTTP_LINEGATE_LINES_CACHE_DATE) {
        return NGX_DECLINED;
    }

    e = ngx_http_linegate_lines_cache_lookup(ws);

    if (e == NULL) {
        return NGX_DECLINED;
    }

    /*
     * What the subscriber has been sent so far, then the barrier: its
     * PING answered, every write finished before the request arrived has
     * had its invalidation handled (a write the client saw finish is
     * never hidden by the table). The PING was sent with the request's
     * reads, and is most often answered with them.
     */
    ngx_http_linegate_redis_pubsub_read();

    e = ngx_http_linegate_lines_cache_lookup(ws);

    if (e == NULL
        || e->pubsub_gen != ngx_http_linegate_redis_pubsub_gen()
        || e->conn_gen != ngx_http_linegate_redis_conn_gen()
        || !ngx_http_linegate_redis_pubsub_live())
    {
        return NGX_DECLINED;
    }

    if (ngx_memcmp(e->date, date->data, NGX_HTTP_LINEGATE_LINES_CACHE_DATE)
        != 0
        || n != e->index_n || crc != e->index_crc)
    {
        /* another day, or the index moved: filled again */
        ngx_http_linegate_lines_cache_drop(e);
        return NGX_DECLINED;
    }

    if (!ngx_http_linegate_redis_pubsub_passed(b)) {
        return NGX_AGAIN;
    }

    ngx_queue_remove(&e->queue);
    ngx_queue_insert_head(&c->lru, &e->queue);

    *body = e->body;

    return NGX_OK;
}


ngx_int_t
ngx_http_linegate_lines_cache_fill(ngx_http_linegate_lines_cache_fill_t *f)
{
    ngx_http_linegate_lines_cache_t  *c;

    c = &ngx_http_linegate_lines_cache;

    if (c->max == 0) {
        return NGX_DECLINED;
    }

    if (!ngx_http_linegate_redis_connected()
        || ngx_http_linegate_redis_pubsub_tracking_id(&f->redirect)
           != NGX_OK)
    {
        return NGX_DECLINED;
    }

    f->pubsub_gen = ngx_http_linegate_redis_pubsub_gen();
    f->seq = c->seq;
    f->conn_gen = ngx_http_linegate_redis_conn_gen();

    return NGX_OK;
}


void
ngx_http_linegate_lines_cache_store(ngx_http_linegate_lines_cache_fill_t *f,
    ngx_str_t *ws, ngx_str_t *date, redisReply *index, ngx_str_t *body)
{
    u_char                                 *p;
    size_t                                  size;
    uint32_t                                crc;
    ngx_queue_t                            *q;
    ngx_http_linegate_lines_cache_t        *c;
    ngx_http_linegate_lines_cache_entry_t  *e;

    c = &ngx_http_linegate_lines_cache;

    /*
     * an invalidation of the workspace since the fill was sent may be of
     * what it read (Redis tracked the keys when it read them, and told
     * the subscriber of every change after)
     */
    if (c->max == 0
        || f->pubsub_gen != ngx_http_linegate_redis_pubsub_gen()
        || f->conn_gen != ngx_http_linegate_redis_conn_gen()
        || ngx_http_linegate_lines_cache_changed(f->seq,
                                         ngx_hash_key(ws->data, ws->len))
        || date->len != NGX_HTTP_LINEGATE_LINES_CACHE_DATE
        || ngx_http_linegate_lines_cache_index(index, &crc) != NGX_OK)
    {
        return;
    }

    size = sizeof(ngx_http_linegate_lines_cache_entry_t) + ws->len
           + body->len;

    if (size > c->max / 4) {
        return;
    }

    e = ngx_http_linegate_lines_cache_lookup(ws);

    if (e != NULL) {
        ngx_http_linegate_lines_cache_drop(e);
    }

    while (c->size + size > c->max && !ngx_queue_empty(&c->lru)) {
        q = ngx_queue_last(&c->lru);
        e = ngx_queue_data(q, ngx_http_linegate_lines_cache_entry_t, queue);
        ngx_http_linegate_lines_cache_drop(e);
    }

    e = ngx_alloc(size, c->log);
    if (e == NULL) {
        return;
    }

    p = (u_char *) (e + 1);

    e->sn.str.data = p;
    e->sn.str.len = ws->len;
    p = ngx_cpymem(p, ws->data, ws->len);

    e->body.data = p;
    e->body.len = body->len;
    ngx_memcpy(p, body->data, body->len);

    ngx_memcpy(e->date, date->data, NGX_HTTP_LINEGATE_LINES_CACHE_DATE);
    e->index_crc = crc;
    e->index_n = index->elements;
    e->pubsub_gen = f->pubsub_gen;
    e->conn_gen = f->conn_gen;
    e->size = size;

    e->sn.node.key = (uint32_t) ngx_hash_key(ws->data, ws->len);
    ngx_rbtree_insert(&c->tree, &e->sn.node);
    ngx_queue_insert_head(&c->lru, &e->queue);
    c->size += size;
}


/* the subscriber's handler: a key changed, or NULL: all may have */
static void
ngx_http_linegate_lines_cache_invalidate(u_char *key, size_t len)
{
    ngx_str_t                               ws;
    ngx_http_linegate_lines_cache_t        *c;
    ngx_http_linegate_lines_cache_entry_t  *e;

    c = &ngx_http_linegate_lines_cache;

    if (key == NULL) {
        c->seq++;
        c->flushed = c->seq;
        ngx_http_linegate_lines_cache_flush();
        return;
    }

    if (ngx_http_linegate_key_workspace_of(key, len, &ws) != NGX_OK) {
        return;
    }

    c->seq++;
    c->recent[c->seq % NGX_HTTP_LINEGATE_LINES_CACHE_RECENT] =
        ngx_hash_key(ws.data, ws.len);

    e = ngx_http_linegate_lines_cache_lookup(&ws);

    if (e != NULL) {
        ngx_http_linegate_lines_cache_drop(e);
    }
}


static ngx_http_linegate_lines_cache_entry_t *
ngx_http_linegate_lines_cache_lookup(ngx_str_t *ws)
{
    /* sn is the entry's first member; keys are 32-bit as lookup's */
    return (ngx_http_linegate_lines_cache_entry_t *)
               ngx_str_rbtree_lookup(&ngx_http_linegate_lines_cache.tree, ws,
                                     (uint32_t) ngx_hash_key(ws->data,
                                                             ws->len));
}


static void
ngx_http_linegate_lines_cache_drop(ngx_http_linegate_lines_cache_entry_t *e)
{
    ngx_http_linegate_lines_cache_t  *c;

    c = &ngx_http_linegate_lines_cache;

    ngx_rbtree_delete(&c->tree, &e->sn.node);
    ngx_queue_remove(&e->queue);
    c->size -= e->size;
    ngx_free(e);
}


static void
ngx_http_linegate_lines_cache_flush(void)
{
    ngx_queue_t                            *q;
    ngx_http_linegate_lines_cache_t        *c;
    ngx_http_linegate_lines_cache_entry_t  *e;

    c = &ngx_http_linegate_lines_cache;

    if (c->max == 0) {
        return;
    }

    while (!ngx_queue_empty(&c->lru)) {
        q = ngx_queue_head(&c->lru);
        e = ngx_queue_data(q, ngx_http_linegate_lines_cache_entry_t, queue);
        ngx_http_linegate_lines_cache_drop(e);
    }

    /* those waiting for the subscriber find nothing now: read Redis */
    ngx_http_linegate_lines_cache_post_wake(1);
}


ngx_int_t
ngx_http_linegate_lines_cache_wait(ngx_http_request_t *r,
    ngx_http_linegate_lines_cache_wait_t *w,
    ngx_http_linegate_redis_pubsub_barrier_t *b,
    ngx_http_linegate_lines_cache_wake_pt wake)
{
    ngx_pool_cleanup_t  *cln;

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NGX_ERROR;
    }

    cln->handler = ngx_http_linegate_lines_cache_gone;
    cln->data = w;

    w->r = r;
    w->barrier = b;
    w->wake = wake;
    w->cln = cln;

    ngx_queue_insert_tail(&ngx_http_linegate_lines_cache.waiting, &w->queue);

    return NGX_OK;
}


/* the request freed while it waited (its client gone, a reload) */
static void
ngx_http_linegate_lines_cache_gone(void *data)
{
    ngx_http_linegate_lines_cache_wait_t  *w = data;

    ngx_queue_remove(&w->queue);
    w->cln = NULL;
}


static void
ngx_http_linegate_lines_cache_pong(void)
{
    ngx_http_linegate_lines_cache_post_wake(0);
}


static void
ngx_http_linegate_lines_cache_post_wake(ngx_uint_t all)
{
    ngx_http_linegate_lines_cache_t  *c;

    c = &ngx_http_linegate_lines_cache;

    if (ngx_queue_empty(&c->waiting)) {
        return;
    }

    c->wake_all |= all;

    if (!c->wake.posted) {
        ngx_post_event(&c->wake, &ngx_posted_events);
    }
}


static void
ngx_http_linegate_lines_cache_wake_handler(ngx_event_t *ev)
{
    ngx_uint_t                        all;
    ngx_http_linegate_lines_cache_t  *c;

    c = &ngx_http_linegate_lines_cache;

    all = c->wake_all;
    c->wake_all = 0;

    ngx_http_linegate_lines_cache_wake(all);
}


/*
 * Wakes the requests whose barrier passed (all: every one): taken off
 * the queue first, as a woken request may wait again or free another
 */
static void
ngx_http_linegate_lines_cache_wake(ngx_uint_t all)
{
    ngx_queue_t                             ready, *q, *next;
    ngx_connection_t                       *conn;
    ngx_http_request_t                     *r;
    ngx_http_linegate_lines_cache_t        *c;
    ngx_http_linegate_lines_cache_wait_t   *w;

    c = &ngx_http_linegate_lines_cache;

    if (c->max == 0 || ngx_queue_empty(&c->waiting)) {
        return;
    }

    ngx_queue_init(&ready);

    for (q = ngx_queue_head(&c->waiting);
         q != ngx_queue_sentinel(&c->waiting);
         q = next)
    {
        next = ngx_queue_next(q);
        w = ngx_queue_data(q, ngx_http_linegate_lines_cache_wait_t, queue);

        if (all || ngx_http_linegate_redis_pubsub_passed(w->barrier)) {
            ngx_queue_remove(q);
            ngx_queue_insert_tail(&ready, q);
        }
    }

    while (!ngx_queue_empty(&ready)) {
        q = ngx_queue_head(&ready);
        ngx_queue_remove(q);
        w = ngx_queue_data(q, ngx_http_linegate_lines_cache_wait_t, queue);

        /* its cleanup has nothing left to do: off the queues */
        w->cln->handler = NULL;
        w->cln = NULL;

        r = w->r;
        conn = r->connection;
        w->wake(r);
        ngx_http_run_posted_requests(conn);
    }
}


ngx_int_t
ngx_http_linegate_lines_cache_index(redisReply *index, uint32_t *crc)
{
    size_t       i;
    uint32_t     c;
    redisReply  *e;

    if (index->type != REDIS_REPLY_ARRAY) {
        return NGX_ERROR;
    }

    ngx_crc32_init(c);

    for (i = 0; i < index->elements; i++) {
        e = index->element[i];

        if (e->type != REDIS_REPLY_STRING) {
            return NGX_ERROR;
        }

        ngx_crc32_update(&c, (u_char *) e->str, e->len);
        ngx_crc32_update(&c, (u_char *) ",", 1);
    }

    ngx_crc32_final(c);
    *crc = c;

    return NGX_OK;
}


/*
 * 1 when the workspace of that hash may have been invalidated since seq:
 * a flush, more invalidations than the ring holds, or one of its own
 */
static ngx_uint_t
ngx_http_linegate_lines_cache_changed(ngx_uint_t seq, ngx_uint_t hash)
{
    ngx_uint_t                        s;
    ngx_http_linegate_lines_cache_t  *c;

    c = &ngx_http_linegate_lines_cache;

    if (c->flushed > seq
        || c->seq - seq >= NGX_HTTP_LINEGATE_LINES_CACHE_RECENT)
    {
        return c->seq != seq;
    }

    for (s = seq + 1; s <= c->seq; s++) {
        if (c->recent[s % NGX_HTTP_LINEGATE_LINES_CACHE_RECENT] == hash) {
            return 1;
        }
    }

    return 0;
}
