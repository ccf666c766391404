
/*
 * linegate: the subscriber connection of a worker
 * (ngx_http_linegate_redis_pubsub.h).
 *
 * One hiredis async context on nginx's event loop, apart from the
 * worker's command connection (a subscribed connection takes no other
 * command but PING). It connects where the command connection is up
 * (ngx_http_linegate_redis_server(): the one Redis or the master
 * Sentinel named; never a cluster, whose bus may drop a PUBLISH of
 * another master: module.c turns the pushed time and the lines cache
 * off there), authenticates as it does, and SUBSCRIBEs
 * to the channel of revoked keys. A timer of its own, every 300 ms:
 * connects again after a loss (backoff 100 ms to 2 s), sends a PING
 * and drops a connection whose PING went unanswered for
 * linegate_redis_command_timeout, or whose server is no longer the one
 * the command connection is up with (a Sentinel failover): subscribed
 * again to the new master.
 *
 * The link is live while a PING sent less than 1 s ago was answered:
 * Redis writes to a connection in order, so every message published
 * before that PING reached the worker before its answer.
 *
 * Why PSUBSCRIBE to a pattern that is the channel's own name (it has no
 * glob character, so it matches that channel alone): hiredis 0.14 hands
 * a subscribed context's replies to the callback of the channel or
 * pattern their second element names, looking among the patterns when
 * the first one starts with 'p' -- "pmessage", "psubscribe", and the
 * answer to "PING <name>", ["pong", "<name>"]. With SUBSCRIBE, the PONG
 * would be looked for among the patterns and lost. hiredis also keeps
 * the PING's callback, which it never calls, on its list of "invalid"
 * commands until the context is freed: the answer frees it here.
 */


#include "ngx_http_linegate_redis.h"
#include "ngx_http_linegate_redis_event.h"
#include "ngx_http_linegate_redis_pubsub.h"
#include "ngx_http_linegate_keys.h"


#define NGX_HTTP_LINEGATE_PUBSUB_TICK         300
#define NGX_HTTP_LINEGATE_PUBSUB_LIVE         1000
#define NGX_HTTP_LINEGATE_PUBSUB_BACKOFF_MIN  100
#define NGX_HTTP_LINEGATE_PUBSUB_BACKOFF_MAX  2000

/* Redis's channel of client tracking's invalidations (RESP2) */
#define NGX_HTTP_LINEGATE_PUBSUB_INVALIDATE   "__redis__:invalidate"


typedef enum {
    NGX_HTTP_LINEGATE_PUBSUB_IDLE = 0,
    NGX_HTTP_LINEGATE_PUBSUB_CONNECTING,
    NGX_HTTP_LINEGATE_PUBSUB_SUBSCRIBING,
    NGX_HTTP_LINEGATE_PUBSUB_SUBSCRIBED
} ngx_http_linegate_pubsub_state_e;


typedef struct {
    redisAsyncContext                          *ac;
    ngx_http_linegate_pubsub_state_e            state;
    ngx_uint_t                                  gen;
    ngx_uint_t                                  seq;
    ngx_uint_t                                  exiting;
    ngx_uint_t                                  attempts;
    ngx_msec_t                                  since;     /* of state */
    ngx_msec_t                                  retry_at;
    ngx_uint_t                                  ping_pending;
    ngx_msec_t                                  ping_sent;
    ngx_uint_t                                  answered_set;
    ngx_msec_t                                  answered;  /* its PING */
    ngx_event_t                                 timer;
    ngx_str_t                                   host;
    ngx_int_t                                   port;
    u_char                                      host_buf[
                                                    NGX_SOCKADDR_STRLEN + 1];
    ngx_log_t                                  *log;
    ngx_http_linegate_main_conf_t              *lmcf;
    ngx_http_linegate_redis_pubsub_handler_pt   handler;
    ngx_http_linegate_redis_pubsub_handler_pt   invalidate;
    int64_t                                     client_id;
    ngx_uint_t                                  client_id_set;
    ngx_uint_t                                  tracked; /* channel on */
    /* PINGs sent and answered on this subscription; the keepalive's */
    ngx_uint_t                                  pings;
    ngx_uint_t                                  pongs;
    ngx_uint_t                                  keepalive;
    ngx_event_t                                 barrier;   /* posted */
    void                                      (*pong)(void);
} ngx_http_linegate_pubsub_t;


static void ngx_http_linegate_pubsub_tick(ngx_event_t *ev);
static void ngx_http_linegate_pubsub_connect(void);
static void ngx_http_linegate_pubsub_ping(void);
static void ngx_http_linegate_pubsub_keepalive(void);
static void ngx_http_linegate_pubsub_barrier_ping(ngx_event_t *ev);
static void ngx_http_linegate_pubsub_connect_cb(const redisAsyncContext *ac,
    int status);
static void ngx_http_linegate_pubsub_disconnect_cb(
    const redisAsyncContext *ac, int status);
static void ngx_http_linegate_pubsub_auth_cb(redisAsyncContext *ac,
    void *data, void *privdata);
static void ngx_http_linegate_pubsub_message_cb(redisAsyncContext *ac,
    void *data, void *privdata);
static void ngx_http_linegate_pubsub_drop(const char *why);
static void ngx_http_linegate_pubsub_lost(void);
static void ngx_http_linegate_pubsub_forget_ping(redisAsyncContext *ac);
static void ngx_http_linegate_pubsub_client_id_cb(redisAsyncContext *ac,
    void *data, void *privdata);
static void ngx_http_linegate_pubsub_tracking_cb(redisAsyncContext *ac,
    void *data, void *privdata);
static void ngx_http_linegate_pubsub_invalidate_cb(redisAsyncContext *ac,
    void *data, void *privdata);


static ngx_http_linegate_pubsub_t  ngx_http_linegate_pubsub;

/* the timer's ev->data (nginx's debug log reads it as a connection) */
static ngx_connection_t  ngx_http_linegate_pubsub_dummy;


ngx_int_t
ngx_http_linegate_redis_pubsub_init_process(ngx_cycle_t *cycle,
    ngx_http_linegate_main_conf_t *lmcf,
    ngx_http_linegate_redis_pubsub_handler_pt handler,
    ngx_http_linegate_redis_pubsub_handler_pt invalidate)
{
    ngx_http_linegate_pubsub_t  *ps;

    ps = &ngx_http_linegate_pubsub;
    ngx_memzero(ps, sizeof(ngx_http_linegate_pubsub_t));

    ps->log = cycle->log;
    ps->lmcf = lmcf;
    ps->handler = handler;
    ps->invalidate = invalidate;
    ps->gen = 1;
    ps->seq = 1;

    ngx_http_linegate_pubsub_dummy.fd = (ngx_socket_t) -1;

    ps->timer.data = &ngx_http_linegate_pubsub_dummy;
    ps->timer.handler = ngx_http_linegate_pubsub_tick;
    ps->timer.log = cycle->log;
    ps->timer.cancelable = 1;

    ps->barrier.data = &ngx_http_linegate_pubsub_dummy;
    ps->barrier.handler = ngx_http_linegate_pubsub_barrier_ping;
    ps->barrier.log = cycle->log;

    /* the command connection connects first: asked on the first tick */
    ngx_add_timer(&ps->timer, NGX_HTTP_LINEGATE_PUBSUB_BACKOFF_MIN);

    return NGX_OK;
}


void
ngx_http_linegate_redis_pubsub_exit_process(ngx_cycle_t *cycle)
{
    redisAsyncContext           *ac;
    ngx_http_linegate_pubsub_t  *ps;

    ps = &ngx_http_linegate_pubsub;

    if (ps->lmcf == NULL) {
        return;
    }

    ps->exiting = 1;

    if (ps->timer.timer_set) {
        ngx_del_timer(&ps->timer);
    }

    if (ps->barrier.posted) {
        ngx_delete_posted_event(&ps->barrier);
    }

    if (ps->ac) {
        ac = ps->ac;
        ps->ac = NULL;
        ps->state = NGX_HTTP_LINEGATE_PUBSUB_IDLE;
        redisAsyncFree(ac);
    }
}


ngx_uint_t
ngx_http_linegate_redis_pubsub_gen(void)
{
    return ngx_http_linegate_pubsub.gen;
}


ngx_uint_t
ngx_http_linegate_redis_pubsub_seq(void)
{
    return ngx_http_linegate_pubsub.seq;
}


void
ngx_http_linegate_redis_pubsub_on_pong(void (*pong)(void))
{
    ngx_http_linegate_pubsub.pong = pong;
}


ngx_int_t
ngx_http_linegate_redis_pubsub_tracking_id(int64_t *id)
{
    ngx_str_t                    host;
    ngx_int_t                    port;
    ngx_http_linegate_pubsub_t  *ps;

    ps = &ngx_http_linegate_pubsub;

    if (ps->invalidate == NULL || !ps->tracked || !ps->client_id_set
        || !ngx_http_linegate_redis_pubsub_live())
    {
        return NGX_DECLINED;
    }

    /*
     * a client id names a client of one server: where the commands go
     * now (a Sentinel failover moves them before the tick moves the
     * subscriber)
     */
    if (ngx_http_linegate_redis_server(&host, &port) != NGX_OK
        || port != ps->port || host.len != ps->host.len
        || ngx_strncmp(host.data, ps->host.data, host.len) != 0)
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
    ngx_http_linegate_pubsub_t  *ps;

    ps = &ngx_http_linegate_pubsub;

    b->gen = ps->gen;
    b->ping = ps->pings + 1;

    /* one PING at the end of this turn of the event loop for them all */
    if (ps->state == NGX_HTTP_LINEGATE_PUBSUB_SUBSCRIBED
        && !ps->barrier.posted)
    {
        ngx_post_event(&ps->barrier, &ngx_posted_events);
    }
}


ngx_uint_t
ngx_http_linegate_redis_pubsub_passed(
    ngx_http_linegate_redis_pubsub_barrier_t *b)
{
    ngx_http_linegate_pubsub_t  *ps;

    ps = &ngx_http_linegate_pubsub;

    return b->gen == ps->gen
           && ps->state == NGX_HTTP_LINEGATE_PUBSUB_SUBSCRIBED
           && ps->pongs >= b->ping;
}


static void
ngx_http_linegate_pubsub_barrier_ping(ngx_event_t *ev)
{
    ngx_http_linegate_pubsub_t  *ps;

    ps = &ngx_http_linegate_pubsub;

    if (ps->ac != NULL && !ps->exiting
        && ps->state == NGX_HTTP_LINEGATE_PUBSUB_SUBSCRIBED)
    {
        ngx_http_linegate_pubsub_ping();
    }
}


void
ngx_http_linegate_redis_pubsub_read(void)
{
    ngx_http_linegate_pubsub_t  *ps;

    ps = &ngx_http_linegate_pubsub;

    /* the subscriber's socket: what Redis wrote there so far */
    if (ps->ac != NULL && ps->state == NGX_HTTP_LINEGATE_PUBSUB_SUBSCRIBED) {
        redisAsyncHandleRead(ps->ac);
    }
}


ngx_uint_t
ngx_http_linegate_redis_pubsub_live(void)
{
    ngx_http_linegate_pubsub_t  *ps;

    ps = &ngx_http_linegate_pubsub;

    return ps->state == NGX_HTTP_LINEGATE_PUBSUB_SUBSCRIBED
           && ps->answered_set
           && ngx_current_msec - ps->answered
              < NGX_HTTP_LINEGATE_PUBSUB_LIVE;
}


static void
ngx_http_linegate_pubsub_tick(ngx_event_t *ev)
{
    ngx_str_t                    host;
    ngx_int_t                    port;
    ngx_msec_t                   now;
    ngx_http_linegate_pubsub_t  *ps;

    ps = &ngx_http_linegate_pubsub;
    now = ngx_current_msec;

    if (ps->exiting || ngx_exiting || ngx_terminate || ngx_quit) {
        /*
         * no more PINGs: nothing is served from a table now, and no
         * request waits for an answer that may not come
         */
        if (ps->invalidate) {
            ps->invalidate(NULL, 0);
        }

        return;
    }

    switch (ps->state) {

    case NGX_HTTP_LINEGATE_PUBSUB_IDLE:
        if ((ngx_msec_int_t) (now - ps->retry_at) >= 0) {
            ngx_http_linegate_pubsub_connect();
        }
        break;

    case NGX_HTTP_LINEGATE_PUBSUB_CONNECTING:
    case NGX_HTTP_LINEGATE_PUBSUB_SUBSCRIBING:
        if (now - ps->since > ps->lmcf->redis_connect_timeout
                              + ps->lmcf->redis_command_timeout)
        {
            ngx_http_linegate_pubsub_drop("subscribe timed out");
        }
        break;

    case NGX_HTTP_LINEGATE_PUBSUB_SUBSCRIBED:
        if (ps->ping_pending
            && now - ps->ping_sent > ps->lmcf->redis_command_timeout)
        {
            ngx_http_linegate_pubsub_drop("PING unanswered");
            break;
        }

        /* Sentinel: subscribed where the commands go, a new master too */
        if (ps->lmcf->redis_unix.len == 0
            && ngx_http_linegate_redis_server(&host, &port) == NGX_OK
            && (port != ps->port || host.len != ps->host.len
                || ngx_strncmp(host.data, ps->host.data, host.len) != 0))
        {
            ngx_http_linegate_pubsub_drop("server changed");
            break;
        }

        if (!ps->ping_pending) {
            ngx_http_linegate_pubsub_keepalive();
        }

        break;
    }

    if (!ps->exiting && !ps->timer.timer_set) {
        ngx_add_timer(&ps->timer, NGX_HTTP_LINEGATE_PUBSUB_TICK);
    }
}


/*
 * "PING <channel>": a subscribed Redis answers ["pong", "<channel>"],
 * which hiredis hands to the channel's callback
 */
static void
ngx_http_linegate_pubsub_ping(void)
{
    ngx_str_t                   *ch;
    ngx_http_linegate_pubsub_t  *ps;

    ps = &ngx_http_linegate_pubsub;
    ch = ngx_http_linegate_key_channel_revoked();

    /* answered in order: the n-th PONG answers the n-th PING */
    if (redisAsyncCommand(ps->ac, NULL, NULL, "PING %b", ch->data, ch->len)
        == REDIS_OK)
    {
        ps->pings++;
    }
}


/* the PING whose answer keeps the link live */
static void
ngx_http_linegate_pubsub_keepalive(void)
{
    ngx_uint_t                   pings;
    ngx_http_linegate_pubsub_t  *ps;

    ps = &ngx_http_linegate_pubsub;
    pings = ps->pings;

    ngx_http_linegate_pubsub_ping();

    if (ps->pings != pings) {
        ps->keepalive = ps->pings;
        ps->ping_pending = 1;
        ps->ping_sent = ngx_current_msec;
    }
}


static void
ngx_http_linegate_pubsub_connect(void)
{
    ngx_str_t                    host;
    ngx_int_t                    port;
    redisAsyncContext           *ac;
    ngx_http_linegate_pubsub_t  *ps;

    ps = &ngx_http_linegate_pubsub;

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

    if (ps->lmcf->redis_unix.len) {
        ac = redisAsyncConnectUnix((char *) ps->lmcf->redis_unix.data);

    } else {
        ac = redisAsyncConnect((char *) ps->host.data, (int) ps->port);
    }

    if (ac == NULL) {
        ngx_http_linegate_pubsub_lost();
        return;
    }

    if (ac->err) {
        ngx_log_error(NGX_LOG_ERR, ps->log, 0,
                      NGX_HTTP_LINEGATE_LOG "redis subscriber connect "
                      "failed: %s", ac->errstr);
        redisAsyncFree(ac);
        ngx_http_linegate_pubsub_lost();
        return;
    }

    if (ngx_http_linegate_redis_event_attach(ac, ps->log, 0) != NGX_OK) {
        redisAsyncFree(ac);
        ngx_http_linegate_pubsub_lost();
        return;
    }

    ac->data = ps;

    redisAsyncSetConnectCallback(ac, ngx_http_linegate_pubsub_connect_cb);
    redisAsyncSetDisconnectCallback(ac,
                                    ngx_http_linegate_pubsub_disconnect_cb);

    ps->ac = ac;
    ps->state = NGX_HTTP_LINEGATE_PUBSUB_CONNECTING;
    ps->since = ngx_current_msec;
}


static void
ngx_http_linegate_pubsub_connect_cb(const redisAsyncContext *ac, int status)
{
    int                             n;
    ngx_str_t                      *ch;
    const char                     *argv[3];
    size_t                          argvlen[3];
    ngx_http_linegate_pubsub_t     *ps;

    ps = &ngx_http_linegate_pubsub;

    if (ac != ps->ac) {
        return;
    }

    if (status != REDIS_OK) {
        /* hiredis frees the context after this callback */
        ngx_log_error(NGX_LOG_ERR, ps->log, 0,
                      NGX_HTTP_LINEGATE_LOG "redis subscriber %V:%i "
                      "connect failed: %s", &ps->host, ps->port,
                      ac->errstr);
        ps->ac = NULL;
        ngx_http_linegate_pubsub_lost();
        return;
    }

    n = ngx_http_linegate_redis_auth_args(argv, argvlen);

    if (n) {
        (void) redisAsyncCommandArgv(ps->ac,
                                     ngx_http_linegate_pubsub_auth_cb, NULL,
                                     n, argv, argvlen);
    }

    if (ps->invalidate) {
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
        ngx_log_error(NGX_LOG_ERR, ngx_http_linegate_pubsub.log, 0,
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
    redisReply                  *reply, *kind, *payload;
    ngx_http_linegate_pubsub_t  *ps;

    ps = &ngx_http_linegate_pubsub;
    reply = data;

    if (reply == NULL || ac != ps->ac || ps->exiting) {
        return;
    }

    if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 2
        || reply->element[0]->type != REDIS_REPLY_STRING)
    {
        return;
    }

    kind = reply->element[0];

    if (kind->len == sizeof("pmessage") - 1
        && ngx_strncasecmp((u_char *) kind->str, (u_char *) "pmessage",
                           kind->len) == 0)
    {
        if (reply->elements < 4) {
            return;
        }

        payload = reply->element[3];
        ps->seq++;

        if (payload->type == REDIS_REPLY_STRING && ps->handler) {
            ps->handler((u_char *) payload->str, payload->len);
        }

        return;
    }

    if (kind->len == sizeof("pong") - 1
        && ngx_strncasecmp((u_char *) kind->str, (u_char *) "pong",
                           kind->len) == 0)
    {
        ngx_http_linegate_pubsub_forget_ping(ac);
        ps->pongs++;

        if (ps->ping_pending && ps->pongs >= ps->keepalive) {
            ps->ping_pending = 0;
            ps->answered = ps->ping_sent;
            ps->answered_set = 1;
        }

        if (ps->pong) {
            ps->pong();
        }

        return;
    }

    if (kind->len == sizeof("psubscribe") - 1
        && ngx_strncasecmp((u_char *) kind->str, (u_char *) "psubscribe",
                           kind->len) == 0
        && ps->state == NGX_HTTP_LINEGATE_PUBSUB_SUBSCRIBING)
    {
        ngx_log_error(NGX_LOG_NOTICE, ps->log, 0,
                      NGX_HTTP_LINEGATE_LOG "redis subscriber subscribed "
                      "at %V:%i", &ps->host, ps->port);

        ps->state = NGX_HTTP_LINEGATE_PUBSUB_SUBSCRIBED;
        ps->since = ngx_current_msec;
        ps->attempts = 0;
        ps->gen++;
        ps->seq++;
        ps->answered_set = 0;
        ps->ping_pending = 0;
        ps->pings = 0;
        ps->pongs = 0;

        /* live once its first PING is answered */
        ngx_http_linegate_pubsub_keepalive();
    }
}


static void
ngx_http_linegate_pubsub_client_id_cb(redisAsyncContext *ac, void *data,
    void *privdata)
{
    redisReply                  *reply;
    ngx_http_linegate_pubsub_t  *ps;

    ps = &ngx_http_linegate_pubsub;
    reply = data;

    if (reply == NULL || ac != ps->ac) {
        return;
    }

    if (reply->type != REDIS_REPLY_INTEGER) {
        /* no tracking on this connection (Redis < 5, an ACL): no cache */
        ngx_log_error(NGX_LOG_ERR, ps->log, 0,
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

    ps = &ngx_http_linegate_pubsub;
    reply = data;

    if (reply == NULL || ac != ps->ac
        || reply->type != REDIS_REPLY_ERROR)
    {
        return;
    }

    if (ps->client_id_set) {
        ngx_log_error(NGX_LOG_WARN, ps->log, 0,
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
    size_t                       i;
    redisReply                  *reply, *kind, *keys;
    ngx_http_linegate_pubsub_t  *ps;

    ps = &ngx_http_linegate_pubsub;
    reply = data;

    if (reply == NULL || ac != ps->ac || ps->exiting
        || reply->type != REDIS_REPLY_ARRAY || reply->elements < 3
        || reply->element[0]->type != REDIS_REPLY_STRING)
    {
        return;
    }

    kind = reply->element[0];

    if (kind->len == sizeof("subscribe") - 1
        && ngx_strncasecmp((u_char *) kind->str, (u_char *) "subscribe",
                           kind->len) == 0)
    {
        ps->tracked = 1;
        return;
    }

    if (kind->len != sizeof("message") - 1
        || ngx_strncasecmp((u_char *) kind->str, (u_char *) "message",
                           kind->len) != 0)
    {
        return;
    }

    keys = reply->element[2];

    if (keys->type != REDIS_REPLY_ARRAY) {
        ps->invalidate(NULL, 0);
        return;
    }

    for (i = 0; i < keys->elements; i++) {
        if (keys->element[i]->type == REDIS_REPLY_STRING) {
            ps->invalidate((u_char *) keys->element[i]->str,
                           keys->element[i]->len);
        }
    }
}


/* the callback hiredis 0.14 keeps for a PING of a subscribed context */
static void
ngx_http_linegate_pubsub_forget_ping(redisAsyncContext *ac)
{
#if (HIREDIS_MAJOR == 0)
    redisCallback  *cb;

    cb = ac->sub.invalid.head;

    if (cb == NULL) {
        return;
    }

    ac->sub.invalid.head = cb->next;

    if (ac->sub.invalid.tail == cb) {
        ac->sub.invalid.tail = NULL;
    }

    free(cb);
#endif
}


static void
ngx_http_linegate_pubsub_disconnect_cb(const redisAsyncContext *ac,
    int status)
{
    ngx_http_linegate_pubsub_t  *ps;

    ps = &ngx_http_linegate_pubsub;

    if (ps->exiting || ac != ps->ac) {
        return;
    }

    ngx_log_error(NGX_LOG_ERR, ps->log, 0,
                  NGX_HTTP_LINEGATE_LOG "redis subscriber disconnected%s%s",
                  ac->err ? ": " : "", ac->err ? ac->errstr : "");

    ps->ac = NULL;
    ngx_http_linegate_pubsub_lost();
}


/* from a timer only: never inside one of hiredis's callbacks */
static void
ngx_http_linegate_pubsub_drop(const char *why)
{
    redisAsyncContext           *ac;
    ngx_http_linegate_pubsub_t  *ps;

    ps = &ngx_http_linegate_pubsub;

    ngx_log_error(NGX_LOG_ERR, ps->log, 0,
                  NGX_HTTP_LINEGATE_LOG "redis subscriber %s, subscribing "
                  "again", why);

    ac = ps->ac;
    ps->ac = NULL;

    if (ac != NULL) {
        redisAsyncFree(ac);
    }

    ngx_http_linegate_pubsub_lost();
}


/* the subscription is gone: a new generation, a new connection soon */
static void
ngx_http_linegate_pubsub_lost(void)
{
    ngx_msec_t                   delay;
    ngx_http_linegate_pubsub_t  *ps;

    ps = &ngx_http_linegate_pubsub;

    ps->state = NGX_HTTP_LINEGATE_PUBSUB_IDLE;
    ps->gen++;
    ps->seq++;
    ps->answered_set = 0;
    ps->ping_pending = 0;
    ps->client_id_set = 0;
    ps->tracked = 0;
    ps->pings = 0;
    ps->pongs = 0;

    if (ps->invalidate) {
        /* what the old subscriber was to be told of is lost */
        ps->invalidate(NULL, 0);
    }

    delay = NGX_HTTP_LINEGATE_PUBSUB_BACKOFF_MIN
            << ngx_min(ps->attempts, 5);
    delay = ngx_min(delay, NGX_HTTP_LINEGATE_PUBSUB_BACKOFF_MAX);
    delay = delay / 2 + (ngx_msec_t) ngx_random() % (delay / 2 + 1);
    ps->attempts++;

    ps->retry_at = ngx_current_msec + delay;
}
