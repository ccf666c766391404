
/*
 * linegate: the subscriber connections of a worker
 * (ngx_http_linegate_redis_pubsub.h).
 *
 * A hiredis async context on nginx's event loop, apart from the worker's
 * command connections (a subscribed connection takes no other command
 * but PING). On one Redis or Sentinel it connects where the command
 * connection is up (ngx_http_linegate_redis_server(): the one Redis or
 * the master Sentinel named), authenticates as it does, and SUBSCRIBEs
 * to the channel of revoked keys. On a Redis Cluster there is one such
 * subscription per master of the worker's slot map: a revocation is
 * published by a script on its workspace's master, whose own
 * subscribers have it from that master, in order with the PINGs, never
 * over the cluster's bus (which drops what a broken link held). A timer
 * of its own, every 300 ms: matches the subscriptions to the masters of
 * CLUSTER NODES (redis.c), connects again after a loss (backoff 100 ms
 * to 2 s), sends a PING and drops a connection whose PING went
 * unanswered for linegate_redis_command_timeout, or whose server is no
 * longer the one the command connection is up with (a Sentinel
 * failover): subscribed again to the new master.
 *
 * The link is live while a PING sent less than 1 s ago was answered:
 * Redis writes to a connection in order, so every message published
 * before that PING reached the worker before its answer. On a cluster,
 * while that holds on every master of a CLUSTER NODES sent less than 1 s
 * ago: a master the worker did not know of (a failover, a node added) is
 * found within that second (as soon as the node asked knows it), and its
 * new subscription starts a new generation.
 *
 * Why PSUBSCRIBE to a pattern that is the channel's own name (it has no
 * glob character, so it matches that channel alone): the answer to
 * "PING <name>" reaches the pattern's callback, where a SUBSCRIBE's
 * channel would lose it (ngx_http_linegate_redis_event_ping(), whose
 * pong() also frees what hiredis 0.14 keeps of each PING).
 */


#include "ngx_http_linegate_redis.h"
#include "ngx_http_linegate_redis_event.h"
#include "ngx_http_linegate_redis_pubsub.h"
#include "ngx_http_linegate_keys.h"


#define NGX_HTTP_LINEGATE_PUBSUB_TICK           300
#define NGX_HTTP_LINEGATE_PUBSUB_LIVE           1000
#define NGX_HTTP_LINEGATE_PUBSUB_BACKOFF_MIN    100
#define NGX_HTTP_LINEGATE_PUBSUB_BACKOFF_MAX    2000
/* the revocations' channel refused by the server (an ACL) */
#define NGX_HTTP_LINEGATE_PUBSUB_REFUSED_DELAY  30000

/* Redis's channel of client tracking's invalidations (RESP2) */
#define NGX_HTTP_LINEGATE_PUBSUB_INVALIDATE   "__redis__:invalidate"


typedef enum {
    NGX_HTTP_LINEGATE_PUBSUB_IDLE = 0,
    NGX_HTTP_LINEGATE_PUBSUB_CONNECTING,
    NGX_HTTP_LINEGATE_PUBSUB_SUBSCRIBING,
    NGX_HTTP_LINEGATE_PUBSUB_SUBSCRIBED
} ngx_http_linegate_pubsub_state_e;


/* one subscription: a connection to one server */
typedef struct {
    redisAsyncContext                          *ac;
    ngx_http_linegate_pubsub_state_e            state;
    ngx_uint_t                                  in_use;
    ngx_uint_t                                  attempts;
    ngx_msec_t                                  since;     /* of state */
    ngx_msec_t                                  retry_at;
    ngx_uint_t                                  ping_pending;
    ngx_msec_t                                  ping_sent;
    ngx_uint_t                                  answered_set;
    ngx_msec_t                                  answered;  /* its PING */
    ngx_str_t                                   host;
    ngx_int_t                                   port;
    u_char                                      host_buf[
                                                    NGX_SOCKADDR_STRLEN + 1];
    int64_t                                     client_id;
    ngx_uint_t                                  client_id_set;
    ngx_uint_t                                  tracked; /* channel on */
    /* the channel asked for on this connection; refused on the last one */
    ngx_uint_t                                  tracking;
    ngx_uint_t                                  channel_refused;
    /* the revocations' pattern refused on the last connection */
    ngx_uint_t                                  revocations_refused;
    /* PINGs sent and answered on this subscription; the keepalive's */
    ngx_uint_t                                  pings;
    ngx_uint_t                                  pongs;
    ngx_uint_t                                  keepalive;
} ngx_http_linegate_pubsub_t;


/* the worker's subscriptions: sub[0] alone unless a cluster */
typedef struct {
    ngx_http_linegate_pubsub_t                  sub[
                                           NGX_HTTP_LINEGATE_REDIS_MAX_NODES];
    ngx_uint_t                                  nsub;  /* high-water */
    ngx_uint_t                                  cluster;
    /* redis.c's list of masters the subscriptions were matched to */
    ngx_uint_t                                  masters_gen;
    ngx_uint_t                                  masters_set;
    ngx_uint_t                                  gen;
    ngx_uint_t                                  seq;
    ngx_uint_t                                  exiting;
    ngx_event_t                                 timer;
    ngx_event_t                                 barrier;   /* posted */
    ngx_log_t                                  *log;
    ngx_http_linegate_main_conf_t              *lmcf;
    ngx_http_linegate_redis_pubsub_handler_pt   handler;
    ngx_http_linegate_redis_pubsub_handler_pt   invalidate;
    void                                      (*pong)(void);
} ngx_http_linegate_pubsubs_t;


static void ngx_http_linegate_pubsub_tick(ngx_event_t *ev);
static void ngx_http_linegate_pubsub_sub_tick(ngx_http_linegate_pubsub_t *ps);
static void ngx_http_linegate_pubsub_match(void);
static ngx_uint_t ngx_http_linegate_pubsub_is(ngx_http_linegate_pubsub_t *ps,
    ngx_str_t *host, ngx_int_t port);
static ngx_int_t ngx_http_linegate_pubsub_add(
    ngx_http_linegate_redis_addr_t *a);
static ngx_uint_t ngx_http_linegate_pubsub_sub_live(
    ngx_http_linegate_pubsub_t *ps);
static void ngx_http_linegate_pubsub_connect(ngx_http_linegate_pubsub_t *ps);
static void ngx_http_linegate_pubsub_ping(ngx_http_linegate_pubsub_t *ps);
static void ngx_http_linegate_pubsub_keepalive(
    ngx_http_linegate_pubsub_t *ps);
static void ngx_http_linegate_pubsub_barrier_ping(ngx_event_t *ev);
static void ngx_http_linegate_pubsub_connect_cb(const redisAsyncContext *ac,
    int status);
static void ngx_http_linegate_pubsub_disconnect_cb(
    const redisAsyncContext *ac, int status);
static void ngx_http_linegate_pubsub_auth_cb(redisAsyncContext *ac,
    void *data, void *privdata);
static void ngx_http_linegate_pubsub_message_cb(redisAsyncContext *ac,
    void *data, void *privdata);
static void ngx_http_linegate_pubsub_drop(ngx_http_linegate_pubsub_t *ps,
    const char *why);
static void ngx_http_linegate_pubsub_close(ngx_http_linegate_pubsub_t *ps);
static void ngx_http_linegate_pubsub_lost(ngx_http_linegate_pubsub_t *ps);
static void ngx_http_linegate_pubsub_client_id_cb(redisAsyncContext *ac,
    void *data, void *privdata);
static void ngx_http_linegate_pubsub_tracking_cb(redisAsyncContext *ac,
    void *data, void *privdata);
static void ngx_http_linegate_pubsub_invalidate_cb(redisAsyncContext *ac,
    void *data, void *privdata);


static ngx_http_linegate_pubsubs_t  ngx_http_linegate_pubsubs;

/* the timers' ev->data (nginx's debug log reads it as a connection) */
static ngx_connection_t  ngx_http_linegate_pubsub_dummy;


ngx_int_t
ngx_http_linegate_redis_pubsub_init_process(ngx_cycle_t *cycle,
    ngx_http_linegate_main_conf_t *lmcf,
    ngx_http_linegate_redis_pubsub_handler_pt handler,
    ngx_http_linegate_redis_pubsub_handler_pt invalidate)
{
    ngx_http_linegate_pubsubs_t  *all;

    all = &ngx_http_linegate_pubsubs;
    ngx_memzero(all, sizeof(ngx_http_linegate_pubsubs_t));

    all->log = cycle->log;
    all->lmcf = lmcf;
    all->handler = handler;
    all->invalidate = invalidate;
    all->cluster = lmcf->redis_cluster ? 1 : 0;
    all->gen = 1;
    all->seq = 1;

    if (!all->cluster) {
        /* its server is asked for at each connect */
        all->sub[0].in_use = 1;
        all->nsub = 1;
    }

    ngx_http_linegate_pubsub_dummy.fd = (ngx_socket_t) -1;

    all->timer.data = &ngx_http_linegate_pubsub_dummy;
    all->timer.handler = ngx_http_linegate_pubsub_tick;
    all->timer.log = cycle->log;
    all->timer.cancelable = 1;

    all->barrier.data = &ngx_http_linegate_pubsub_dummy;
    all->barrier.handler = ngx_http_linegate_pubsub_barrier_ping;
    all->barrier.log = cycle->log;

    /* the command connection connects first: asked on the first tick */
    ngx_add_timer(&all->timer, NGX_HTTP_LINEGATE_PUBSUB_BACKOFF_MIN);

    return NGX_OK;
}


void
ngx_http_linegate_redis_pubsub_exit_process(ngx_cycle_t *cycle)
{
    ngx_uint_t                    i;
    redisAsyncContext            *ac;
    ngx_http_linegate_pubsub_t   *ps;
    ngx_http_linegate_pubsubs_t  *all;

    all = &ngx_http_linegate_pubsubs;

    if (all->lmcf == NULL) {
        return;
    }

    all->exiting = 1;

    if (all->timer.timer_set) {
        ngx_del_timer(&all->timer);
    }

    if (all->barrier.posted) {
        ngx_delete_posted_event(&all->barrier);
    }

    for (i = 0; i < all->nsub; i++) {
        ps = &all->sub[i];

        if (ps->ac) {
            ac = ps->ac;
            ps->ac = NULL;
            ps->state = NGX_HTTP_LINEGATE_PUBSUB_IDLE;
            redisAsyncFree(ac);
        }
    }
}


ngx_uint_t
ngx_http_linegate_redis_pubsub_gen(void)
{
    return ngx_http_linegate_pubsubs.gen;
}


ngx_uint_t
ngx_http_linegate_redis_pubsub_seq(void)
{
    return ngx_http_linegate_pubsubs.seq;
}


void
ngx_http_linegate_redis_pubsub_on_pong(void (*pong)(void))
{
    ngx_http_linegate_pubsubs.pong = pong;
}


/* client tracking: one Redis or Sentinel's master (sub[0]) only */
ngx_int_t
ngx_http_linegate_redis_pubsub_tracking_id(int64_t *id)
{
    ngx_str_t                     host;
    ngx_int_t                     port;
    ngx_http_linegate_pubsub_t   *ps;
    ngx_http_linegate_pubsubs_t  *all;

    all = &ngx_http_linegate_pubsubs;
    ps = &all->sub[0];

    if (all->cluster || all->invalidate == NULL || !ps->tracked
        || !ps->client_id_set || !ngx_http_linegate_redis_pubsub_live())
    {
        return NGX_DECLINED;
    }

    /*
     * a client id names a client of one server: where the commands go
     * now (a Sentinel failover moves them before the tick moves the
     * subscriber)
     */
    if (ngx_http_linegate_redis_server(&host, &port) != NGX_OK
        || !ngx_http_linegate_pubsub_is(ps, &host, port))
    {
        return NGX_DECLINED;
    }

    *id = ps->client_id;

    return NGX_OK;
}


void
ngx_http_linegate_redis_pubsub_barrier(
    ngx_http_linegate_redis_pubsub_barrier_t *b)
{
    ngx_http_linegate_pubsub_t   *ps;
    ngx_http_linegate_pubsubs_t  *all;

    all = &ngx_http_linegate_pubsubs;
    ps = &all->sub[0];

    b->gen = all->gen;
    b->ping = ps->pings + 1;

    /* one PING at the end of this turn of the event loop for them all */
    if (!all->cluster && ps->state == NGX_HTTP_LINEGATE_PUBSUB_SUBSCRIBED
        && !all->barrier.posted)
    {
        ngx_post_event(&all->barrier, &ngx_posted_events);
    }
}


ngx_uint_t
ngx_http_linegate_redis_pubsub_passed(
    ngx_http_linegate_redis_pubsub_barrier_t *b)
{
    ngx_http_linegate_pubsub_t   *ps;
    ngx_http_linegate_pubsubs_t  *all;

    all = &ngx_http_linegate_pubsubs;
    ps = &all->sub[0];

    return !all->cluster
           && b->gen == all->gen
           && ps->state == NGX_HTTP_LINEGATE_PUBSUB_SUBSCRIBED
           && ps->pongs >= b->ping;
}


static void
ngx_http_linegate_pubsub_barrier_ping(ngx_event_t *ev)
{
    ngx_http_linegate_pubsub_t   *ps;
    ngx_http_linegate_pubsubs_t  *all;

    all = &ngx_http_linegate_pubsubs;
    ps = &all->sub[0];

    if (ps->ac != NULL && !all->exiting
        && ps->state == NGX_HTTP_LINEGATE_PUBSUB_SUBSCRIBED)
    {
        ngx_http_linegate_pubsub_ping(ps);
    }
}


void
ngx_http_linegate_redis_pubsub_read(void)
{
    ngx_uint_t                    i;
    ngx_http_linegate_pubsub_t   *ps;
    ngx_http_linegate_pubsubs_t  *all;

    all = &ngx_http_linegate_pubsubs;

    /* the subscribers' sockets: what Redis wrote there so far */
    for (i = 0; i < all->nsub; i++) {
        ps = &all->sub[i];

        if (ps->ac != NULL
            && ps->state == NGX_HTTP_LINEGATE_PUBSUB_SUBSCRIBED)
        {
            redisAsyncHandleRead(ps->ac);
        }
    }
}


ngx_uint_t
ngx_http_linegate_redis_pubsub_live(void)
{
    ngx_uint_t                    i, n;
    ngx_http_linegate_pubsubs_t  *all;

    all = &ngx_http_linegate_pubsubs;

    /* a cluster: subscribed to every master of a list younger than 1 s */
    if (all->cluster
        && (!all->masters_set
            || all->masters_gen != ngx_http_linegate_redis_masters_gen()
            || !ngx_http_linegate_redis_masters_fresh(
                                            NGX_HTTP_LINEGATE_PUBSUB_LIVE)))
    {
        return 0;
    }

    n = 0;

    for (i = 0; i < all->nsub; i++) {
        if (!all->sub[i].in_use) {
            continue;
        }

        if (!ngx_http_linegate_pubsub_sub_live(&all->sub[i])) {
            return 0;
        }

        n++;
    }

    return n > 0;
}


static ngx_uint_t
ngx_http_linegate_pubsub_sub_live(ngx_http_linegate_pubsub_t *ps)
{
    ngx_str_t                     host;
    ngx_int_t                     port;
    ngx_http_linegate_pubsubs_t  *all;

    all = &ngx_http_linegate_pubsubs;

    if (ps->state != NGX_HTTP_LINEGATE_PUBSUB_SUBSCRIBED
        || !ps->answered_set
        || ngx_current_msec - ps->answered >= NGX_HTTP_LINEGATE_PUBSUB_LIVE)
    {
        return 0;
    }

    /*
     * Sentinel: live only on the master the commands go to. After a
     * failover the old master, still up, answers the PINGs until the
     * next tick moves the subscription; what the new one publishes
     * meanwhile (a revocation) would not be heard
     */
    if (!all->cluster && all->lmcf->redis_sentinels != NULL
        && (ngx_http_linegate_redis_server(&host, &port) != NGX_OK
            || !ngx_http_linegate_pubsub_is(ps, &host, port)))
    {
        return 0;
    }

    return 1;
}


static void
ngx_http_linegate_pubsub_tick(ngx_event_t *ev)
{
    ngx_uint_t                    i;
    ngx_http_linegate_pubsubs_t  *all;

    all = &ngx_http_linegate_pubsubs;

    if (all->exiting || ngx_exiting || ngx_terminate || ngx_quit) {
        /*
         * no more PINGs: nothing is served from a table now, and no
         * request waits for an answer that may not come
         */
        if (all->invalidate) {
            all->invalidate(NULL, 0);
        }

        return;
    }

    if (all->cluster) {
        ngx_http_linegate_pubsub_match();
    }

    for (i = 0; i < all->nsub; i++) {
        if (all->sub[i].in_use) {
            ngx_http_linegate_pubsub_sub_tick(&all->sub[i]);
        }
    }

    if (!all->exiting && !all->timer.timer_set) {
        ngx_add_timer(&all->timer, NGX_HTTP_LINEGATE_PUBSUB_TICK);
    }
}


static void
ngx_http_linegate_pubsub_sub_tick(ngx_http_linegate_pubsub_t *ps)
{
    ngx_str_t                     host;
    ngx_int_t                     port;
    ngx_msec_t                    now;
    ngx_http_linegate_pubsubs_t  *all;

    all = &ngx_http_linegate_pubsubs;
    now = ngx_current_msec;

    switch (ps->state) {

    case NGX_HTTP_LINEGATE_PUBSUB_IDLE:
        if ((ngx_msec_int_t) (now - ps->retry_at) >= 0) {
            ngx_http_linegate_pubsub_connect(ps);
        }
        break;

    case NGX_HTTP_LINEGATE_PUBSUB_CONNECTING:
    case NGX_HTTP_LINEGATE_PUBSUB_SUBSCRIBING:
        if (now - ps->since > all->lmcf->redis_connect_timeout
                              + all->lmcf->redis_command_timeout)
        {
            ngx_http_linegate_pubsub_drop(ps, "subscribe timed out");
        }
        break;

    case NGX_HTTP_LINEGATE_PUBSUB_SUBSCRIBED:
        if (ps->ping_pending
            && now - ps->ping_sent > all->lmcf->redis_command_timeout)
        {
            ngx_http_linegate_pubsub_drop(ps, "PING unanswered");
            break;
        }

        /* Sentinel: subscribed where the commands go, a new master too */
        if (!all->cluster && all->lmcf->redis_unix.len == 0
            && ngx_http_linegate_redis_server(&host, &port) == NGX_OK
            && !ngx_http_linegate_pubsub_is(ps, &host, port))
        {
            ngx_http_linegate_pubsub_drop(ps, "server changed");
            break;
        }

        if (!ps->ping_pending) {
            ngx_http_linegate_pubsub_keepalive(ps);
        }

        break;
    }
}


/*
 * A cluster: one subscription per master of redis.c's list (CLUSTER
 * NODES's masters, with or without slots: one importing a slot runs the
 * scripts of its keys already), matched again whenever the list changed.
 * A master without one gets one, and a subscription to a node no longer
 * a master is closed; either starts a new generation: what the new one
 * published before, or the closed one published last, is not known to
 * have come.
 */
static void
ngx_http_linegate_pubsub_match(void)
{
    ngx_uint_t                       i, j, n, gen, found;
    ngx_http_linegate_pubsub_t      *ps;
    ngx_http_linegate_pubsubs_t     *all;
    ngx_http_linegate_redis_addr_t   masters[
                                         NGX_HTTP_LINEGATE_REDIS_MAX_NODES];

    all = &ngx_http_linegate_pubsubs;
    gen = ngx_http_linegate_redis_masters_gen();

    if (all->masters_set && all->masters_gen == gen) {
        return;
    }

    /* none yet: not live (masters_gen differs), asked again next tick */
    if (ngx_http_linegate_redis_cluster_masters(masters,
                                          NGX_HTTP_LINEGATE_REDIS_MAX_NODES,
                                          &n)
        != NGX_OK)
    {
        return;
    }

    if (all->masters_set) {
        /*
         * the list changed, if only in a master's epoch: a failover and
         * back between two readings keeps every address, but a
         * revocation published on the master in between reached no
         * subscription of ours
         */
        all->gen++;
        all->seq++;
    }

    for (i = 0; i < all->nsub; i++) {
        ps = &all->sub[i];

        if (!ps->in_use) {
            continue;
        }

        found = 0;

        for (j = 0; j < n; j++) {
            if (ngx_http_linegate_pubsub_is(ps, &masters[j].host,
                                            masters[j].port))
            {
                found = 1;
                break;
            }
        }

        if (!found) {
            ngx_log_error(NGX_LOG_NOTICE, all->log, 0,
                          NGX_HTTP_LINEGATE_LOG "redis subscriber %V:%i: "
                          "no longer a master, unsubscribed", &ps->host,
                          ps->port);
            ngx_http_linegate_pubsub_close(ps);
        }
    }

    for (j = 0; j < n; j++) {
        found = 0;

        for (i = 0; i < all->nsub; i++) {
            if (all->sub[i].in_use
                && ngx_http_linegate_pubsub_is(&all->sub[i],
                                               &masters[j].host,
                                               masters[j].port))
            {
                found = 1;
                break;
            }
        }

        if (!found && ngx_http_linegate_pubsub_add(&masters[j]) != NGX_OK) {
            /* a master without a subscription: not live, again later */
            return;
        }
    }

    all->masters_gen = gen;
    all->masters_set = 1;
}


static ngx_uint_t
ngx_http_linegate_pubsub_is(ngx_http_linegate_pubsub_t *ps, ngx_str_t *host,
    ngx_int_t port)
{
    return port == ps->port && host->len == ps->host.len
           && ngx_strncmp(host->data, ps->host.data, host->len) == 0;
}


/* a subscription to a master of the map, made on this tick */
static ngx_int_t
ngx_http_linegate_pubsub_add(ngx_http_linegate_redis_addr_t *a)
{
    ngx_uint_t                    i;
    ngx_http_linegate_pubsub_t   *ps;
    ngx_http_linegate_pubsubs_t  *all;

    all = &ngx_http_linegate_pubsubs;

    if (a->host.len > NGX_SOCKADDR_STRLEN) {
        return NGX_ERROR;
    }

    /* as many places as redis.c's list has masters at most */
    for (i = 0; i < NGX_HTTP_LINEGATE_REDIS_MAX_NODES; i++) {
        if (!all->sub[i].in_use) {
            break;
        }
    }

    if (i == NGX_HTTP_LINEGATE_REDIS_MAX_NODES) {
        return NGX_ERROR;
    }

    ps = &all->sub[i];
    ngx_memzero(ps, sizeof(ngx_http_linegate_pubsub_t));

    ngx_memcpy(ps->host_buf, a->host.data, a->host.len);
    ps->host_buf[a->host.len] = '\0';
    ps->host.data = ps->host_buf;
    ps->host.len = a->host.len;
    ps->port = a->port;
    ps->in_use = 1;
    ps->retry_at = ngx_current_msec;

    all->nsub = ngx_max(all->nsub, i + 1);
    all->gen++;
    all->seq++;

    return NGX_OK;
}


/*
 * "PING <channel>": a subscribed Redis answers ["pong", "<channel>"],
 * which hiredis hands to the channel's callback
 */
static void
ngx_http_linegate_pubsub_ping(ngx_http_linegate_pubsub_t *ps)
{
    /* answered in order: the n-th PONG answers the n-th PING */
    if (ngx_http_linegate_redis_event_ping(ps->ac,
                                     ngx_http_linegate_key_channel_revoked())
        == NGX_OK)
    {
        ps->pings++;
    }
}


/* the PING whose answer keeps the link live */
static void
ngx_http_linegate_pubsub_keepalive(ngx_http_linegate_pubsub_t *ps)
{
    ngx_uint_t  pings;

    pings = ps->pings;

    ngx_http_linegate_pubsub_ping(ps);

    if (ps->pings != pings) {
        ps->keepalive = ps->pings;
        ps->ping_pending = 1;
        ps->ping_sent = ngx_current_msec;
    }
}


static void
ngx_http_linegate_pubsub_connect(ngx_http_linegate_pubsub_t *ps)
{
    ngx_str_t                     host;
    ngx_int_t                     port;
    redisAsyncContext            *ac;
    ngx_http_linegate_pubsubs_t  *all;

    all = &ngx_http_linegate_pubsubs;

    if (!all->cluster) {
        if (ngx_http_linegate_redis_server(&host, &port) != NGX_OK) {
            /* the command connection is not up: asked again next tick */
            return;
        }

        if (host.len > NGX_SOCKADDR_STRLEN) {
            return;
        }

        ngx_memcpy(ps->host_buf, host.data, host.len);
        ps->host_buf[host.len] = '\0';
        ps->host.data = ps->host_buf;
        ps->host.len = host.len;
        ps->port = port;
    }

    ac = ngx_http_linegate_redis_event_connect(&all->lmcf->redis_unix,
                                   &ps->host, ps->port, all->log, 0,
                                   "redis subscriber", ps,
                                   ngx_http_linegate_pubsub_connect_cb,
                                   ngx_http_linegate_pubsub_disconnect_cb);
    if (ac == NULL) {
        ngx_http_linegate_pubsub_lost(ps);
        return;
    }

    ps->ac = ac;
    ps->state = NGX_HTTP_LINEGATE_PUBSUB_CONNECTING;
    ps->since = ngx_current_msec;
}


static void
ngx_http_linegate_pubsub_connect_cb(const redisAsyncContext *ac, int status)
{
    int                            n;
    ngx_str_t                     *ch;
    const char                    *argv[3];
    size_t                         argvlen[3];
    ngx_http_linegate_pubsub_t    *ps;
    ngx_http_linegate_pubsubs_t   *all;

    all = &ngx_http_linegate_pubsubs;
    ps = ac->data;

    if (ps == NULL || ac != ps->ac) {
        return;
    }

    if (status != REDIS_OK) {
        /* hiredis frees the context after this callback */
        ngx_log_error(NGX_LOG_ERR, all->log, 0,
                      NGX_HTTP_LINEGATE_LOG "redis subscriber %V:%i "
                      "connect failed: %s", &ps->host, ps->port,
                      ac->errstr);
        ps->ac = NULL;
        ngx_http_linegate_pubsub_lost(ps);
        return;
    }

    n = ngx_http_linegate_redis_auth_args(argv, argvlen);

    if (n) {
        (void) redisAsyncCommandArgv(ps->ac,
                                     ngx_http_linegate_pubsub_auth_cb, NULL,
                                     n, argv, argvlen);
    }

    /*
     * The channel refused by the last connection (an ACL: hiredis drops a
     * subscribed connection on an error reply no command waits for): the
     * revocations alone this time; asked again after its next loss
     */
    ps->tracking = all->invalidate != NULL && !ps->channel_refused;
    ps->channel_refused = 0;

    if (ps->tracking) {
        /*
         * Client tracking (ngx_http_linegate_lines_cache.c): the id the
         * command connection redirects its invalidations to, then their
         * channel, before the pattern, so that the pattern's answer
         * (SUBSCRIBED) comes after both
         */
        (void) redisAsyncCommand(ps->ac,
                                 ngx_http_linegate_pubsub_client_id_cb,
                                 NULL, "CLIENT ID");
        /* Redis 6 or later, the ACL allowing it: else no tracking */
        (void) redisAsyncCommand(ps->ac,
                                 ngx_http_linegate_pubsub_tracking_cb,
                                 NULL, "CLIENT TRACKING off");
        (void) redisAsyncCommand(ps->ac,
                                 ngx_http_linegate_pubsub_invalidate_cb,
                                 NULL, "SUBSCRIBE %s",
                                 NGX_HTTP_LINEGATE_PUBSUB_INVALIDATE);
    }

    ch = ngx_http_linegate_key_channel_revoked();

    /* not sent: the tick drops the connection once it times out */
    (void) redisAsyncCommand(ps->ac, ngx_http_linegate_pubsub_message_cb,
                             NULL, "PSUBSCRIBE %b", ch->data, ch->len);

    ps->state = NGX_HTTP_LINEGATE_PUBSUB_SUBSCRIBING;
    ps->since = ngx_current_msec;
}


static void
ngx_http_linegate_pubsub_auth_cb(redisAsyncContext *ac, void *data,
    void *privdata)
{
    redisReply  *reply = data;

    if (reply != NULL && reply->type == REDIS_REPLY_ERROR) {
        /* the password is never logged; the SUBSCRIBE times out */
        ngx_log_error(NGX_LOG_ERR, ngx_http_linegate_pubsubs.log, 0,
                      NGX_HTTP_LINEGATE_LOG "redis subscriber AUTH failed: "
                      "\"%*s\"", (size_t) ngx_min(reply->len, 200),
                      reply->str);
    }
}


/* every reply on the pattern: psubscribe, pmessage, pong */
static void
ngx_http_linegate_pubsub_message_cb(redisAsyncContext *ac, void *data,
    void *privdata)
{
    redisReply                   *reply, *kind, *payload;
    ngx_http_linegate_pubsub_t   *ps;
    ngx_http_linegate_pubsubs_t  *all;

    all = &ngx_http_linegate_pubsubs;
    ps = ac->data;
    reply = data;

    if (reply == NULL || ps == NULL || ac != ps->ac || all->exiting) {
        return;
    }

    if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 2
        || reply->element[0]->type != REDIS_REPLY_STRING)
    {
        return;
    }

    kind = reply->element[0];

    if (ngx_http_linegate_redis_event_kind(kind, "pmessage")) {
        if (reply->elements < 4) {
            return;
        }

        payload = reply->element[3];
        all->seq++;

        if (payload->type == REDIS_REPLY_STRING && all->handler) {
            all->handler((u_char *) payload->str, payload->len);
        }

        return;
    }

    if (ngx_http_linegate_redis_event_pong(ac, reply)) {
        ps->pongs++;

        if (ps->ping_pending && ps->pongs >= ps->keepalive) {
            ps->ping_pending = 0;
            ps->answered = ps->ping_sent;
            ps->answered_set = 1;
        }

        if (all->pong) {
            all->pong();
        }

        return;
    }

    if (ngx_http_linegate_redis_event_kind(kind, "psubscribe")
        && ps->state == NGX_HTTP_LINEGATE_PUBSUB_SUBSCRIBING)
    {
        ngx_log_error(NGX_LOG_NOTICE, all->log, 0,
                      NGX_HTTP_LINEGATE_LOG "redis subscriber subscribed "
                      "at %V:%i", &ps->host, ps->port);

        ps->state = NGX_HTTP_LINEGATE_PUBSUB_SUBSCRIBED;
        ps->since = ngx_current_msec;
        ps->attempts = 0;
        all->gen++;
        all->seq++;
        ps->answered_set = 0;
        ps->ping_pending = 0;
        ps->pings = 0;
        ps->pongs = 0;

        /* live once its first PING is answered */
        ngx_http_linegate_pubsub_keepalive(ps);
    }
}


static void
ngx_http_linegate_pubsub_client_id_cb(redisAsyncContext *ac, void *data,
    void *privdata)
{
    redisReply                  *reply;
    ngx_http_linegate_pubsub_t  *ps;

    ps = ac->data;
    reply = data;

    if (reply == NULL || ps == NULL || ac != ps->ac) {
        return;
    }

    if (reply->type != REDIS_REPLY_INTEGER) {
        /* no tracking on this connection (Redis < 5, an ACL): no cache */
        ngx_log_error(NGX_LOG_ERR, ngx_http_linegate_pubsubs.log, 0,
                      NGX_HTTP_LINEGATE_LOG "redis subscriber: CLIENT ID "
                      "refused, linegate_lines_cache unused");
        return;
    }

    ps->client_id = reply->integer;
    ps->client_id_set = 1;
}


/* CLIENT TRACKING off: refused where Redis can track nothing for us */
static void
ngx_http_linegate_pubsub_tracking_cb(redisAsyncContext *ac, void *data,
    void *privdata)
{
    redisReply                  *reply;
    ngx_http_linegate_pubsub_t  *ps;

    ps = ac->data;
    reply = data;

    if (reply == NULL || ps == NULL || ac != ps->ac
        || reply->type != REDIS_REPLY_ERROR)
    {
        return;
    }

    if (ps->client_id_set) {
        ngx_log_error(NGX_LOG_WARN, ngx_http_linegate_pubsubs.log, 0,
                      NGX_HTTP_LINEGATE_LOG "redis refused client tracking "
                      "(\"%*s\"): linegate_lines_cache unused",
                      (size_t) ngx_min(reply->len, 200), reply->str);
    }

    ps->client_id_set = 0;
}


/*
 * Every reply on __redis__:invalidate: "subscribe", then "message"s whose
 * third element is the array of keys changed, or nil when Redis dropped
 * everything it tracked (FLUSHALL, its table full)
 */
static void
ngx_http_linegate_pubsub_invalidate_cb(redisAsyncContext *ac, void *data,
    void *privdata)
{
    size_t                        i;
    redisReply                   *reply, *kind, *keys;
    ngx_http_linegate_pubsub_t   *ps;
    ngx_http_linegate_pubsubs_t  *all;

    all = &ngx_http_linegate_pubsubs;
    ps = ac->data;
    reply = data;

    if (reply == NULL || ps == NULL || ac != ps->ac || all->exiting
        || reply->type != REDIS_REPLY_ARRAY || reply->elements < 3
        || reply->element[0]->type != REDIS_REPLY_STRING)
    {
        return;
    }

    kind = reply->element[0];

    if (ngx_http_linegate_redis_event_kind(kind, "subscribe")) {
        ps->tracked = 1;
        return;
    }

    if (!ngx_http_linegate_redis_event_kind(kind, "message")) {
        return;
    }

    keys = reply->element[2];

    if (keys->type != REDIS_REPLY_ARRAY) {
        all->invalidate(NULL, 0);
        return;
    }

    for (i = 0; i < keys->elements; i++) {
        if (keys->element[i]->type == REDIS_REPLY_STRING) {
            all->invalidate((u_char *) keys->element[i]->str,
                            keys->element[i]->len);
        }
    }
}


static void
ngx_http_linegate_pubsub_disconnect_cb(const redisAsyncContext *ac,
    int status)
{
    ngx_http_linegate_pubsub_t   *ps;
    ngx_http_linegate_pubsubs_t  *all;

    all = &ngx_http_linegate_pubsubs;
    ps = ac->data;

    if (all->exiting || ps == NULL || ac != ps->ac) {
        return;
    }

    ngx_log_error(NGX_LOG_ERR, all->log, 0,
                  NGX_HTTP_LINEGATE_LOG "redis subscriber disconnected%s%s",
                  ac->err ? ": " : "", ac->err ? ac->errstr : "");

    /*
     * An error reply while subscribing, the invalidations' channel not
     * confirmed yet: its SUBSCRIBE was refused (the replies before it have
     * callbacks of their own), else the revocations would never be
     * subscribed to while the ACL holds
     */
    if (ac->err == REDIS_ERR_OTHER && ps->tracking && !ps->tracked
        && ps->state == NGX_HTTP_LINEGATE_PUBSUB_SUBSCRIBING)
    {
        ngx_log_error(NGX_LOG_WARN, all->log, 0,
                      NGX_HTTP_LINEGATE_LOG "redis subscriber: the "
                      "invalidations' channel refused, subscribing to the "
                      "revocations alone: linegate_lines_cache unused");
        ps->channel_refused = 1;

    } else if (ac->err == REDIS_ERR_OTHER
               && ps->state == NGX_HTTP_LINEGATE_PUBSUB_SUBSCRIBING)
    {
        /*
         * The revocations' PSUBSCRIBE refused (an ACL without the
         * channel): nothing to subscribe to, and asking again at the
         * backoff's pace would only fill the log; pushed_time goes unused
         * (entries keep linegate_api_key_cache's time), asked again later
         */
        ngx_log_error(NGX_LOG_WARN, all->log, 0,
                      NGX_HTTP_LINEGATE_LOG "redis subscriber: the "
                      "revocations' channel refused, asked again in %M s: "
                      "pushed revocations unused",
                      (ngx_msec_t) NGX_HTTP_LINEGATE_PUBSUB_REFUSED_DELAY
                      / 1000);
        ps->revocations_refused = 1;
    }

    ps->ac = NULL;
    ngx_http_linegate_pubsub_lost(ps);
}


/* from a timer only: never inside one of hiredis's callbacks */
static void
ngx_http_linegate_pubsub_drop(ngx_http_linegate_pubsub_t *ps,
    const char *why)
{
    redisAsyncContext  *ac;

    ngx_log_error(NGX_LOG_ERR, ngx_http_linegate_pubsubs.log, 0,
                  NGX_HTTP_LINEGATE_LOG "redis subscriber %s, subscribing "
                  "again", why);

    ac = ps->ac;
    ps->ac = NULL;

    if (ac != NULL) {
        redisAsyncFree(ac);
    }

    ngx_http_linegate_pubsub_lost(ps);
}


/*
 * A cluster's node that is no longer a master: its subscription goes,
 * from a timer (never inside one of hiredis's callbacks), and with it
 * what it had not read yet: a new generation.
 */
static void
ngx_http_linegate_pubsub_close(ngx_http_linegate_pubsub_t *ps)
{
    redisAsyncContext            *ac;
    ngx_http_linegate_pubsubs_t  *all;

    all = &ngx_http_linegate_pubsubs;
    all->gen++;
    all->seq++;

    ac = ps->ac;
    ps->ac = NULL;
    ps->in_use = 0;
    ps->state = NGX_HTTP_LINEGATE_PUBSUB_IDLE;

    if (ac != NULL) {
        redisAsyncFree(ac);
    }
}


/* the subscription is gone: a new generation, a new connection soon */
static void
ngx_http_linegate_pubsub_lost(ngx_http_linegate_pubsub_t *ps)
{
    ngx_msec_t                    delay;
    ngx_http_linegate_pubsubs_t  *all;

    all = &ngx_http_linegate_pubsubs;

    ps->state = NGX_HTTP_LINEGATE_PUBSUB_IDLE;
    all->gen++;
    all->seq++;
    ps->answered_set = 0;
    ps->ping_pending = 0;
    ps->client_id_set = 0;
    ps->tracked = 0;
    ps->pings = 0;
    ps->pongs = 0;

    if (all->invalidate) {
        /* what the old subscriber was to be told of is lost */
        all->invalidate(NULL, 0);
    }

    delay = NGX_HTTP_LINEGATE_PUBSUB_BACKOFF_MIN
            << ngx_min(ps->attempts, 5);
    delay = ngx_min(delay, NGX_HTTP_LINEGATE_PUBSUB_BACKOFF_MAX);
    delay = delay / 2 + (ngx_msec_t) ngx_random() % (delay / 2 + 1);
    ps->attempts++;

    if (ps->revocations_refused) {
        ps->revocations_refused = 0;
        delay = NGX_HTTP_LINEGATE_PUBSUB_REFUSED_DELAY;
    }

    ps->retry_at = ngx_current_msec + delay;
}
