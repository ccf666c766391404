
/*
 * linegate: Redis Sentinel. A worker finds the master by asking the
 * sentinels (SENTINEL get-master-addr-by-name) over short-lived
 * asynchronous connections, one sentinel after the other, and keeps one
 * more connection subscribed to +switch-master, so that a failover is
 * noticed even while the old master still answers. The store's
 * connection (ngx_http_linegate_redis.c) asks again whenever it has to
 * reconnect, and checks the ROLE of what it reached.
 *
 *   QUERY   connect to sentinel i, [AUTH], SENTINEL get-master-addr-by-name
 *   then    found(host, port); PSUBSCRIBE +switch-master there if
 *           not yet; moved there once its master is reached (ROLE)
 *   else    (refused, timed out, no such master, an error) the next
 *           sentinel; all of them: found(NGX_ERROR), the store backs off
 *
 * Each query has the connect and command timeouts; while the store's
 * first connection is made (requests wait for it, each within the
 * command timeout), a third of the command timeout: one sentinel that
 * takes the connection and never answers leaves the next time to.
 *
 * What a sentinel named and could not be reached (refused, timed out)
 * or ROLE says is not a master: that sentinel is asked last by the next
 * discovery (sentinel_refused()), on the first connection as on every
 * reconnect. One that named a master reached stays first until it
 * misses: the order moves only on a miss, so two sentinels naming two
 * reachable masters (a split) do not take turns (Redis's client
 * guidance: ask in order, the one that answered right to the front).
 * After +switch-master, the sentinel subscribed to, which announced it,
 * is asked first, and a query in flight is asked again there: its
 * answer may name the master of before the switch. What the master
 * named before it does then (dropped for the new one, refused, a
 * replica) is the failover's, no miss: the store neither moves the
 * cursor nor counts it against its first connection's wait
 * (ngx_http_linegate_redis.c, t/056).
 *
 * The subscription keeps its own place in the list (sub_at), apart from
 * the query's: the store's connection, and so the query's cursor, may
 * stay put for days while the subscribed sentinel is gone. It follows
 * the sentinel whose answer is in use: made on the one that has just
 * answered a query when there is none, and moved to the one that named
 * the master the store reached (sentinel_reached(), its ROLE checked)
 * when it is on another: the query's cursor moved on a miss, or the
 * subscription was lost and made on the next one meanwhile. A stale
 * sentinel, cut off from the others, keeps answering PSUBSCRIBE and
 * PING and never publishes their failover: left there once its answer
 * was a miss, the worker would not hear of the next failover (before
 * 2026-11-29 the subscription stayed on the first sentinel that
 * answered, t/045). An answer alone does not move it: one that misses
 * may be the stale sentinel's. Lost (refused, closed, an error), its
 * cursor moves to the next sentinel and the store's next keepalive
 * subscribes there, round robin, until a master reached brings it back
 * to the sentinel that named it; a subscription there stays put.
 *
 * A sentinel that refuses the subscription (answers PSUBSCRIBE, or the
 * AUTH before it, with an error: an ACL that denies it, maxclients; or
 * closes the connection made before answering it) while it answers
 * queries would otherwise get it back at each reconnect whose master it
 * named (sentinel_reached()), and at each discovery it answers with no
 * subscription: one connection refused per reconnect, for good. It is
 * held (holds[]): not subscribed to again for 30 s, doubled at each
 * refusal in a row up to 10 minutes, and a subscription made there
 * clears it. Meanwhile the subscription goes to the next sentinel not
 * held (round robin) and stays there; with every sentinel held there is
 * none until a hold ends. A sentinel down, or one that leaves PSUBSCRIBE
 * unanswered, is not held: the round robin passes it anyway, and it is
 * not the one that answers queries (before 2026-11-29 a refusal was
 * tried again at every reconnect, t/045).
 *
 * A sentinel that neither answers nor closes (its process stopped, its
 * host hung: the kernel still completes a handshake and answers TCP
 * keepalive probes; or packets dropped, the connect left in SYN_SENT)
 * would hold the subscription, deaf, for good. So one timer (sub_timer)
 * bounds it: the subscription is lost unless PSUBSCRIBE's answer comes
 * within linegate_redis_connect_timeout + linegate_redis_command_timeout,
 * and, once subscribed, unless each keepalive's PING on it is answered
 * within linegate_redis_command_timeout. It is a PSUBSCRIBE to the
 * channel's own name for that PING's answer (redis_event.h says why).
 */


#include "ngx_http_linegate_redis_sentinel.h"
#include "ngx_http_linegate_redis_event.h"


/* a sentinel that refused the subscription: held this long, doubled */
#define NGX_HTTP_LINEGATE_SENTINEL_HOLD_MIN  30000
#define NGX_HTTP_LINEGATE_SENTINEL_HOLD_MAX  600000


typedef struct {
    ngx_msec_t                              until;
    ngx_uint_t                              refusals;  /* in a row */
} ngx_http_linegate_sentinel_hold_t;


typedef struct {
    ngx_http_linegate_main_conf_t          *lmcf;
    ngx_log_t                              *log;
    ngx_http_linegate_sentinel_found_pt     found;
    ngx_http_linegate_sentinel_switched_pt  switched;

    redisAsyncContext                      *query;
    redisAsyncContext                      *sub;
    ngx_uint_t                              busy;
    ngx_uint_t                              next;     /* sentinel to ask */
    ngx_uint_t                              asking;   /* being asked */
    ngx_uint_t                              sub_at;   /* subscribed to,
                                                         or to be next */
    ngx_uint_t                              answered; /* named the master
                                                         found last */
    ngx_uint_t                              tried;
    uintptr_t                               gen;      /* of the query */
    ngx_uint_t                              subscribed; /* answered */
    ngx_uint_t                              exiting;
    /* the store's first connection: requests wait for its answer */
    ngx_uint_t                              first;
    /* +switch-master since the last answer: its sentinel is next, and
     * stays so whatever the master named before it becomes */
    ngx_uint_t                              announced;
    ngx_event_t                             timer;    /* the query's */
    ngx_event_t                             sub_timer; /* its PSUBSCRIBE
                                                          or its PING */
    /* per sentinel (its place in the list): the subscription refused */
    ngx_http_linegate_sentinel_hold_t      *holds;

    u_char                                  host[NGX_SOCKADDR_STRLEN + 1];
} ngx_http_linegate_sentinel_t;


static void ngx_http_linegate_sentinel_ask_next(void);
static redisAsyncContext *ngx_http_linegate_sentinel_connect(
    ngx_http_linegate_redis_addr_t *a);
static void ngx_http_linegate_sentinel_reply(redisAsyncContext *ac,
    void *data, void *privdata);
static ngx_int_t ngx_http_linegate_sentinel_address(redisReply *reply,
    ngx_str_t *host, ngx_int_t *port);
static ngx_int_t ngx_http_linegate_sentinel_switch_address(u_char *p,
    u_char *end, ngx_str_t *host, ngx_int_t *port);
static void ngx_http_linegate_sentinel_failed(const char *why);
static void ngx_http_linegate_sentinel_timeout(ngx_event_t *ev);
static void ngx_http_linegate_sentinel_subscribe(void);
static void ngx_http_linegate_sentinel_sub_open(void);
static ngx_uint_t ngx_http_linegate_sentinel_held(ngx_uint_t i);
static void ngx_http_linegate_sentinel_sub_timeout(ngx_event_t *ev);
static void ngx_http_linegate_sentinel_sub_close(void);
static void ngx_http_linegate_sentinel_sub_lost(const char *why,
    ngx_uint_t refused);
static void ngx_http_linegate_sentinel_message(redisAsyncContext *ac,
    void *data, void *privdata);
static void ngx_http_linegate_sentinel_closed(const redisAsyncContext *ac,
    int status);
static void ngx_http_linegate_sentinel_requery(void);


static ngx_http_linegate_sentinel_t  ngx_http_linegate_sentinel;

/* the channel, and the pattern subscribed to (no glob: that channel) */
static ngx_str_t  ngx_http_linegate_sentinel_channel =
    ngx_string("+switch-master");

/* nginx's debug log reads a timer's ev->data as a connection */
static ngx_connection_t  ngx_http_linegate_sentinel_dummy;

/* the holds, made once for the worker's life (never freed) */
static ngx_http_linegate_sentinel_hold_t  *ngx_http_linegate_sentinel_holds;
static ngx_uint_t                          ngx_http_linegate_sentinel_nholds;


ngx_int_t
ngx_http_linegate_sentinel_init(ngx_http_linegate_main_conf_t *lmcf,
    ngx_log_t *log, ngx_http_linegate_sentinel_found_pt found,
    ngx_http_linegate_sentinel_switched_pt switched)
{
    ngx_uint_t                          n;
    ngx_http_linegate_sentinel_t       *s;
    ngx_http_linegate_sentinel_hold_t  *holds;

    s = &ngx_http_linegate_sentinel;
    ngx_memzero(s, sizeof(ngx_http_linegate_sentinel_t));

    n = lmcf->redis_sentinels->nelts;
    holds = ngx_http_linegate_sentinel_holds;

    if (holds == NULL || ngx_http_linegate_sentinel_nholds < n) {
        holds = ngx_calloc(n * sizeof(ngx_http_linegate_sentinel_hold_t),
                           log);
        if (holds == NULL) {
            return NGX_ERROR;
        }

        ngx_http_linegate_sentinel_holds = holds;
        ngx_http_linegate_sentinel_nholds = n;

    } else {
        ngx_memzero(holds, n * sizeof(ngx_http_linegate_sentinel_hold_t));
    }

    s->holds = holds;

    s->lmcf = lmcf;
    s->log = log;
    s->found = found;
    s->switched = switched;

    ngx_http_linegate_sentinel_dummy.fd = (ngx_socket_t) -1;
    s->timer.data = &ngx_http_linegate_sentinel_dummy;
    s->timer.handler = ngx_http_linegate_sentinel_timeout;
    s->timer.log = log;
    s->timer.cancelable = 1;

    s->sub_timer.data = &ngx_http_linegate_sentinel_dummy;
    s->sub_timer.handler = ngx_http_linegate_sentinel_sub_timeout;
    s->sub_timer.log = log;
    s->sub_timer.cancelable = 1;

    /* the sentinels are asked in the configured order, from the first */

    return NGX_OK;
}


void
ngx_http_linegate_sentinel_discover(ngx_uint_t first)
{
    ngx_http_linegate_sentinel_t  *s;

    s = &ngx_http_linegate_sentinel;

    if (s->busy || s->exiting) {
        return;
    }

    s->busy = 1;
    s->tried = 0;
    s->first = first;

    ngx_http_linegate_sentinel_ask_next();
}


void
ngx_http_linegate_sentinel_exit(void)
{
    redisAsyncContext             *ac;
    ngx_http_linegate_sentinel_t  *s;

    s = &ngx_http_linegate_sentinel;
    s->exiting = 1;

    if (s->timer.timer_set) {
        ngx_del_timer(&s->timer);
    }

    if (s->sub_timer.timer_set) {
        ngx_del_timer(&s->sub_timer);
    }

    if (s->query) {
        ac = s->query;
        s->query = NULL;
        redisAsyncFree(ac);
    }

    if (s->sub) {
        ac = s->sub;
        s->sub = NULL;
        redisAsyncFree(ac);
    }
}


static void
ngx_http_linegate_sentinel_ask_next(void)
{
    redisAsyncContext               *ac;
    ngx_http_linegate_sentinel_t    *s;
    ngx_msec_t                       timeout;
    ngx_http_linegate_redis_addr_t  *addrs;

    s = &ngx_http_linegate_sentinel;
    addrs = s->lmcf->redis_sentinels->elts;

    timeout = s->lmcf->redis_connect_timeout
              + s->lmcf->redis_command_timeout;

    if (s->first) {
        /*
         * The requests waiting for the first connection wait the command
         * timeout: a sentinel that takes the connection and never
         * answers (or whose SYNs are dropped) would outlast them before
         * the next one is asked. A third of it each leaves the next
         * sentinels time to answer (before 2026-11-29 every request of a
         * new worker was answered 503, t/054)
         */
        timeout = ngx_max(s->lmcf->redis_command_timeout / 3, 1);
    }

    while (s->tried < s->lmcf->redis_sentinels->nelts) {
        s->asking = s->next;
        s->next = (s->next + 1) % s->lmcf->redis_sentinels->nelts;
        s->tried++;

        ac = ngx_http_linegate_sentinel_connect(&addrs[s->asking]);
        if (ac == NULL) {
            continue;
        }

        s->gen++;

        if (redisAsyncCommand(ac, ngx_http_linegate_sentinel_reply,
                              (void *) s->gen,
                              "SENTINEL get-master-addr-by-name %b",
                              s->lmcf->redis_sentinel_master.data,
                              s->lmcf->redis_sentinel_master.len)
            != REDIS_OK)
        {
            redisAsyncFree(ac);
            continue;
        }

        s->query = ac;
        ngx_add_timer(&s->timer, timeout);
        return;
    }

    s->busy = 0;

    ngx_log_error(NGX_LOG_ERR, s->log, 0,
                  NGX_HTTP_LINEGATE_LOG "redis sentinel: no sentinel "
                  "named the master \"%V\"", &s->lmcf->redis_sentinel_master);

    s->found(NGX_ERROR, NULL, 0);
}


/* a connection to a sentinel, AUTH queued when it has a password */
static redisAsyncContext *
ngx_http_linegate_sentinel_connect(ngx_http_linegate_redis_addr_t *a)
{
    redisAsyncContext             *ac;
    ngx_http_linegate_sentinel_t  *s;

    s = &ngx_http_linegate_sentinel;

    /* an IP address, resolved at load: no DNS on the event loop */
    ac = redisAsyncConnect((char *) a->host.data, (int) a->port);
    if (ac == NULL) {
        return NULL;
    }

    if (ac->err) {
        ngx_log_error(NGX_LOG_ERR, s->log, 0,
                      NGX_HTTP_LINEGATE_LOG "redis sentinel %V:%i: %s",
                      &a->host, a->port, ac->errstr);
        redisAsyncFree(ac);
        return NULL;
    }

    /*
     * TCP keepalive (hiredis: idle 15 s, then probes): a host gone
     * without a FIN or RST, between the subscription's PINGs (sent only
     * while the store's connection is up); a sentinel that hangs on a
     * live kernel answers the probes, its PING does not
     */
    (void) redisEnableKeepAlive(&ac->c);

    if (ngx_http_linegate_redis_event_attach(ac, s->log, 0) != NGX_OK) {
        redisAsyncFree(ac);
        return NULL;
    }

    redisAsyncSetDisconnectCallback(ac, ngx_http_linegate_sentinel_closed);

    if (s->lmcf->redis_sentinel_password.len) {
        /* its answer is not read: a refusal fails the next command */
        (void) redisAsyncCommand(ac, NULL, NULL, "AUTH %b",
                                 s->lmcf->redis_sentinel_password.data,
                                 s->lmcf->redis_sentinel_password.len);
    }

    return ac;
}


static void
ngx_http_linegate_sentinel_reply(redisAsyncContext *ac, void *data,
    void *privdata)
{
    ngx_str_t                        host;
    ngx_int_t                        port;
    redisReply                      *reply;
    ngx_http_linegate_sentinel_t    *s;
    ngx_http_linegate_redis_addr_t  *addrs;

    s = &ngx_http_linegate_sentinel;
    reply = data;

    if (s->exiting || (uintptr_t) privdata != s->gen || s->query != ac) {
        /* a query given up (timed out): its answer is not needed */
        return;
    }

    s->query = NULL;

    if (s->timer.timer_set) {
        ngx_del_timer(&s->timer);
    }

    if (reply == NULL) {
        /* hiredis frees the context after this callback */
        ngx_http_linegate_sentinel_failed(ac->errstr[0] ? ac->errstr
                                                        : "connection lost");
        return;
    }

    redisAsyncDisconnect(ac);

    if (reply->type == REDIS_REPLY_ERROR) {
        ngx_http_linegate_sentinel_failed(reply->str);
        return;
    }

    if (ngx_http_linegate_sentinel_address(reply, &host, &port) != NGX_OK) {
        ngx_http_linegate_sentinel_failed("it does not know the master");
        return;
    }

    s->busy = 0;
    s->next = s->asking;    /* it answered: ask it first next time */
    s->announced = 0;

    addrs = s->lmcf->redis_sentinels->elts;

    /* the subscription goes there once what it named is reached */
    s->answered = s->asking;

    if (s->sub == NULL) {
        /*
         * a sentinel known to be up, whatever the cursor said, unless it
         * refused the subscription lately: then the cursor's next one
         */
        if (!ngx_http_linegate_sentinel_held(s->asking)) {
            s->sub_at = s->asking;
        }

        ngx_http_linegate_sentinel_sub_open();
    }

    ngx_log_error(NGX_LOG_INFO, s->log, 0,
                  NGX_HTTP_LINEGATE_LOG "redis sentinel %V:%i: master "
                  "\"%V\" is %V:%i", &addrs[s->asking].host,
                  addrs[s->asking].port, &s->lmcf->redis_sentinel_master,
                  &host, port);

    s->found(NGX_OK, &host, port);
}


/* ["ip", "port"] into the worker's buffer */
static ngx_int_t
ngx_http_linegate_sentinel_address(redisReply *reply, ngx_str_t *host,
    ngx_int_t *port)
{
    ngx_http_linegate_sentinel_t  *s;

    s = &ngx_http_linegate_sentinel;

    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2
        || reply->element[0]->type != REDIS_REPLY_STRING
        || reply->element[1]->type != REDIS_REPLY_STRING
        || reply->element[0]->len == 0
        || reply->element[0]->len > NGX_SOCKADDR_STRLEN)
    {
        return NGX_ERROR;
    }

    *port = ngx_atoi((u_char *) reply->element[1]->str,
                     reply->element[1]->len);
    if (*port < 1 || *port > 65535) {
        return NGX_ERROR;
    }

    host->len = reply->element[0]->len;
    host->data = s->host;
    ngx_memcpy(s->host, reply->element[0]->str, host->len);
    s->host[host->len] = '\0';

    return NGX_OK;
}


static void
ngx_http_linegate_sentinel_failed(const char *why)
{
    ngx_http_linegate_sentinel_t    *s;
    ngx_http_linegate_redis_addr_t  *addrs;

    s = &ngx_http_linegate_sentinel;
    addrs = s->lmcf->redis_sentinels->elts;

    ngx_log_error(NGX_LOG_WARN, s->log, 0,
                  NGX_HTTP_LINEGATE_LOG "redis sentinel %V:%i: no master "
                  "\"%V\": %s", &addrs[s->asking].host,
                  addrs[s->asking].port, &s->lmcf->redis_sentinel_master,
                  why);

    ngx_http_linegate_sentinel_ask_next();
}


static void
ngx_http_linegate_sentinel_timeout(ngx_event_t *ev)
{
    redisAsyncContext             *ac;
    ngx_http_linegate_sentinel_t  *s;

    s = &ngx_http_linegate_sentinel;

    if (s->query == NULL) {
        return;
    }

    /* the reply callback sees another generation and ignores the NULL */
    ac = s->query;
    s->query = NULL;
    s->gen++;
    redisAsyncFree(ac);

    ngx_http_linegate_sentinel_failed("timed out");
}


/*
 * PSUBSCRIBE +switch-master on the sentinel of the cursor (sub_at),
 * answered within the connect and command timeouts or lost
 */
static void
ngx_http_linegate_sentinel_subscribe(void)
{
    redisAsyncContext               *ac;
    ngx_http_linegate_sentinel_t    *s;
    ngx_http_linegate_redis_addr_t  *addrs;

    s = &ngx_http_linegate_sentinel;
    addrs = s->lmcf->redis_sentinels->elts;

    ac = ngx_http_linegate_sentinel_connect(&addrs[s->sub_at]);
    if (ac == NULL) {
        ngx_http_linegate_sentinel_sub_lost("not connected", 0);
        return;
    }

    if (redisAsyncCommand(ac, ngx_http_linegate_sentinel_message, NULL,
                          "PSUBSCRIBE %b",
                          ngx_http_linegate_sentinel_channel.data,
                          ngx_http_linegate_sentinel_channel.len)
        != REDIS_OK)
    {
        redisAsyncFree(ac);
        ngx_http_linegate_sentinel_sub_lost("PSUBSCRIBE not sent", 0);
        return;
    }

    s->sub = ac;
    s->subscribed = 0;

    ngx_add_timer(&s->sub_timer, s->lmcf->redis_connect_timeout
                                 + s->lmcf->redis_command_timeout);
}


/*
 * The subscription made on the cursor's sentinel (sub_at) or, when it
 * is held, the next one not held; none while every one is
 */
static void
ngx_http_linegate_sentinel_sub_open(void)
{
    ngx_uint_t                     n;
    ngx_http_linegate_sentinel_t  *s;

    s = &ngx_http_linegate_sentinel;

    for (n = 0; n < s->lmcf->redis_sentinels->nelts; n++) {
        if (!ngx_http_linegate_sentinel_held(s->sub_at)) {
            ngx_http_linegate_sentinel_subscribe();
            return;
        }

        s->sub_at = (s->sub_at + 1) % s->lmcf->redis_sentinels->nelts;
    }
}


/* sentinel i refused the subscription, and its hold is not over */
static ngx_uint_t
ngx_http_linegate_sentinel_held(ngx_uint_t i)
{
    ngx_http_linegate_sentinel_hold_t  *h;

    h = &ngx_http_linegate_sentinel.holds[i];

    return h->refusals
           && (ngx_msec_int_t) (h->until - ngx_current_msec) > 0;
}


/*
 * The subscription's PSUBSCRIBE or PING unanswered in time: the sentinel
 * hangs, or cannot be reached
 */
static void
ngx_http_linegate_sentinel_sub_timeout(ngx_event_t *ev)
{
    const char                    *why;
    ngx_http_linegate_sentinel_t  *s;

    s = &ngx_http_linegate_sentinel;

    if (s->sub == NULL || s->exiting) {
        return;
    }

    why = s->subscribed ? "PING unanswered" : "PSUBSCRIBE unanswered";

    ngx_http_linegate_sentinel_sub_close();

    /* a sentinel that hangs, or cannot be reached: no refusal */
    ngx_http_linegate_sentinel_sub_lost(why, 0);
}


/*
 * The subscription's connection freed (given up: timed out, or moved to
 * the sentinel whose master is reached). Never called inside one of its
 * own callbacks; they and the disconnect callback, called by the free,
 * see it is no longer s->sub
 */
static void
ngx_http_linegate_sentinel_sub_close(void)
{
    redisAsyncContext             *ac;
    ngx_http_linegate_sentinel_t  *s;

    s = &ngx_http_linegate_sentinel;

    if (s->sub_timer.timer_set) {
        ngx_del_timer(&s->sub_timer);
    }

    s->subscribed = 0;

    ac = s->sub;
    s->sub = NULL;
    redisAsyncFree(ac);
}


/*
 * The subscription failed or ended (s->sub already cleared): the next
 * keepalive subscribes on the next sentinel, so that one that is down
 * is not tried again and again while the others could tell us of a
 * failover (a master reached brings it to the sentinel that named it).
 * Refused (an error answered, or closed, before PSUBSCRIBE was answered
 * on a connection made): that sentinel is held, see above
 */
static void
ngx_http_linegate_sentinel_sub_lost(const char *why, ngx_uint_t refused)
{
    ngx_msec_t                          hold;
    ngx_uint_t                          lost, n;
    ngx_http_linegate_sentinel_t       *s;
    ngx_http_linegate_sentinel_hold_t  *h;
    ngx_http_linegate_redis_addr_t     *addrs;

    s = &ngx_http_linegate_sentinel;
    addrs = s->lmcf->redis_sentinels->elts;
    n = s->lmcf->redis_sentinels->nelts;

    if (s->sub_timer.timer_set) {
        ngx_del_timer(&s->sub_timer);
    }

    s->subscribed = 0;

    lost = s->sub_at;
    s->sub_at = (s->sub_at + 1) % n;

    if (!refused) {
        ngx_log_error(NGX_LOG_WARN, s->log, 0,
                      NGX_HTTP_LINEGATE_LOG "redis sentinel %V:%i: no "
                      "+switch-master subscription: %s; next tried: %V:%i",
                      &addrs[lost].host, addrs[lost].port, why,
                      &addrs[s->sub_at].host, addrs[s->sub_at].port);
        return;
    }

    h = &s->holds[lost];

    hold = (ngx_msec_t) NGX_HTTP_LINEGATE_SENTINEL_HOLD_MIN
           << ngx_min(h->refusals, 5);
    hold = ngx_min(hold, NGX_HTTP_LINEGATE_SENTINEL_HOLD_MAX);

    h->refusals++;
    h->until = ngx_current_msec + hold;

    ngx_log_error(NGX_LOG_WARN, s->log, 0,
                  NGX_HTTP_LINEGATE_LOG "redis sentinel %V:%i: no "
                  "+switch-master subscription: %s; next tried: %V:%i "
                  "(refused: not subscribed to there again for %M s)",
                  &addrs[lost].host, addrs[lost].port, why,
                  &addrs[s->sub_at].host, addrs[s->sub_at].port,
                  hold / 1000);
}


/*
 * every reply on the pattern: "psubscribe", "pong", and the "pmessage"s
 * "+switch-master" "+switch-master"
 * "<name> <old ip> <old port> <new ip> <new port>"
 */
static void
ngx_http_linegate_sentinel_message(redisAsyncContext *ac, void *data,
    void *privdata)
{
    ngx_int_t                        port;
    ngx_str_t                       *name, host;
    redisReply                      *reply, *msg;
    ngx_http_linegate_sentinel_t    *s;
    ngx_http_linegate_redis_addr_t  *addrs;

    s = &ngx_http_linegate_sentinel;
    reply = data;

    if (s->exiting || ac != s->sub) {
        return;
    }

    if (reply == NULL) {
        /*
         * refused, closed, or an error answered (hiredis then closes):
         * before PSUBSCRIBE was answered on a connection made, the
         * subscription is refused there
         */
        s->sub = NULL;
        ngx_http_linegate_sentinel_sub_lost(ac->errstr[0]
                                            ? ac->errstr
                                            : "connection lost",
                                            !s->subscribed
                                            && (ac->c.flags
                                                & REDIS_CONNECTED));
        return;
    }

    if (ngx_http_linegate_redis_event_pong(ac, reply)) {
        /* the keepalive's PING, the one in flight: alive */
        if (s->subscribed && s->sub_timer.timer_set) {
            ngx_del_timer(&s->sub_timer);
        }

        return;
    }

    if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 3
        || reply->element[0]->type != REDIS_REPLY_STRING)
    {
        return;
    }

    if (ngx_strcmp(reply->element[0]->str, "psubscribe") == 0) {
        if (s->subscribed) {
            return;
        }

        s->subscribed = 1;
        s->holds[s->sub_at].refusals = 0;

        if (s->sub_timer.timer_set) {
            ngx_del_timer(&s->sub_timer);
        }

        addrs = s->lmcf->redis_sentinels->elts;

        ngx_log_error(NGX_LOG_INFO, s->log, 0,
                      NGX_HTTP_LINEGATE_LOG "redis sentinel %V:%i: "
                      "subscribed to +switch-master",
                      &addrs[s->sub_at].host, addrs[s->sub_at].port);
        return;
    }

    if (ngx_strcmp(reply->element[0]->str, "pmessage") != 0
        || reply->elements != 4
        || reply->element[3]->type != REDIS_REPLY_STRING)
    {
        return;
    }

    msg = reply->element[3];
    name = &s->lmcf->redis_sentinel_master;

    if (msg->len <= name->len || msg->str[name->len] != ' '
        || ngx_strncmp(msg->str, name->data, name->len) != 0)
    {
        return;
    }

    ngx_log_error(NGX_LOG_NOTICE, s->log, 0,
                  NGX_HTTP_LINEGATE_LOG "redis sentinel: +switch-master "
                  "%*s", (size_t) ngx_min(msg->len, 200), msg->str);

    /*
     * asked first: it knows the new master. The one that answered last
     * may not have heard yet (the others learn the failover from its
     * leader's hellos, a second or two later), and would name the old
     * master, still up and a master until it is made a replica: the
     * writes made there meanwhile would be lost
     */
    s->next = s->sub_at;
    s->announced = 1;

    if (s->query != NULL) {
        ngx_http_linegate_sentinel_requery();
    }

    if (ngx_http_linegate_sentinel_switch_address(
            (u_char *) msg->str + name->len + 1,
            (u_char *) msg->str + msg->len, &host, &port)
        != NGX_OK)
    {
        /* the failover is known, not where to: acted on as any */
        ngx_log_error(NGX_LOG_WARN, s->log, 0,
                      NGX_HTTP_LINEGATE_LOG "redis sentinel: +switch-master "
                      "gives no new master's address");
        s->switched(NULL, 0);
        return;
    }

    s->switched(&host, port);
}


/*
 * What follows the master's name in +switch-master:
 * "<old ip> <old port> <new ip> <new port>", from a peer, so read within
 * its bounds: the new address, or NGX_ERROR for anything else
 */
static ngx_int_t
ngx_http_linegate_sentinel_switch_address(u_char *p, u_char *end,
    ngx_str_t *host, ngx_int_t *port)
{
    u_char      *field[4];
    size_t       len[4];
    ngx_uint_t   n;

    for (n = 0; n < 4; n++) {
        field[n] = p;

        while (p < end && *p != ' ') {
            p++;
        }

        len[n] = p - field[n];

        if (len[n] == 0) {
            return NGX_ERROR;
        }

        if (n < 3) {
            if (p == end) {
                return NGX_ERROR;
            }

            p++;
        }
    }

    if (p != end || len[2] > NGX_SOCKADDR_STRLEN) {
        return NGX_ERROR;
    }

    *port = ngx_atoi(field[3], len[3]);

    if (*port < 1 || *port > 65535) {
        return NGX_ERROR;
    }

    host->data = field[2];
    host->len = len[2];

    return NGX_OK;
}


/*
 * A query asked before +switch-master: its sentinel may not have heard
 * of the failover yet, and its answer, come after the switch, would send
 * the worker to the old master. Given up (its answer, of an older
 * generation, is ignored) and asked again, of the announcing sentinel
 * first
 */
static void
ngx_http_linegate_sentinel_requery(void)
{
    redisAsyncContext             *ac;
    ngx_http_linegate_sentinel_t  *s;

    s = &ngx_http_linegate_sentinel;

    ac = s->query;
    s->query = NULL;
    s->gen++;

    if (s->timer.timer_set) {
        ngx_del_timer(&s->timer);
    }

    redisAsyncFree(ac);

    s->tried = 0;
    ngx_http_linegate_sentinel_ask_next();
}


static void
ngx_http_linegate_sentinel_closed(const redisAsyncContext *ac, int status)
{
    const char                    *why;
    ngx_http_linegate_sentinel_t  *s;

    s = &ngx_http_linegate_sentinel;

    if (ac != s->sub) {
        return;
    }

    /*
     * hiredis calls the channel's callback with NULL first, which clears
     * s->sub: this is for a context closed without it
     */
    s->sub = NULL;

    why = "closed";

    if (status != REDIS_OK) {
        why = ac->errstr[0] ? ac->errstr : "connection lost";
    }

    /* (called only for a connection made) */
    ngx_http_linegate_sentinel_sub_lost(why, !s->subscribed);
}


void
ngx_http_linegate_sentinel_refused(void)
{
    ngx_http_linegate_sentinel_t  *s;

    s = &ngx_http_linegate_sentinel;

    if (s->busy || s->exiting) {
        /* a discovery under way has moved on already */
        return;
    }

    if (s->announced) {
        /*
         * the master named before +switch-master, dropped for it or
         * failing meanwhile: the announcing sentinel stays next, the
         * others may not have heard yet (t/045, t/053)
         */
        return;
    }

    /*
     * the sentinel that named it is asked last: one whose configuration
     * is stale (cut off from the others, it keeps naming the master it
     * knew) would name the same dead master or replica to every
     * discovery, and the worker would never reach the master the others
     * name
     */
    s->next = (s->asking + 1) % s->lmcf->redis_sentinels->nelts;
}


void
ngx_http_linegate_sentinel_reached(void)
{
    ngx_http_linegate_sentinel_t    *s;
    ngx_http_linegate_redis_addr_t  *addrs;

    s = &ngx_http_linegate_sentinel;

    if (s->exiting || s->sub == NULL || s->sub_at == s->answered) {
        /* none (the next keepalive makes it), or where it belongs */
        return;
    }

    if (ngx_http_linegate_sentinel_held(s->answered)) {
        /*
         * it refused the subscription lately: the one made elsewhere
         * stays. Moved there at every reconnect, it would be refused
         * again each time (before 2026-11-29)
         */
        return;
    }

    /*
     * Subscribed to another sentinel than the one whose master the
     * worker is on: that one may be stale (what it named missed, so the
     * cursor moved on) and would not tell of a failover the others make.
     * Moved only once a master is reached, not on any answer: an answer
     * that misses would take it to a stale sentinel, and every discovery
     * through a failover would drag it from one sentinel to the next
     */
    addrs = s->lmcf->redis_sentinels->elts;

    ngx_log_error(NGX_LOG_NOTICE, s->log, 0,
                  NGX_HTTP_LINEGATE_LOG "redis sentinel %V:%i: "
                  "+switch-master subscription moved to %V:%i, whose "
                  "master is reached", &addrs[s->sub_at].host,
                  addrs[s->sub_at].port, &addrs[s->answered].host,
                  addrs[s->answered].port);

    ngx_http_linegate_sentinel_sub_close();

    s->sub_at = s->answered;
    ngx_http_linegate_sentinel_subscribe();
}


void
ngx_http_linegate_sentinel_keepalive(void)
{
    ngx_http_linegate_sentinel_t  *s;

    s = &ngx_http_linegate_sentinel;

    if (s->exiting) {
        return;
    }

    if (s->sub == NULL) {
        /* a discovery under way subscribes on the sentinel that answers */
        if (!s->busy) {
            ngx_http_linegate_sentinel_sub_open();
        }

        return;
    }

    /*
     * subscribed, nothing in flight: a PING, answered within the command
     * timeout or the subscription is lost (a sentinel that hangs keeps
     * its connection open; a failover it would not tell of)
     */
    if (s->subscribed && !s->sub_timer.timer_set
        && ngx_http_linegate_redis_event_ping(s->sub,
                                           &ngx_http_linegate_sentinel_channel)
           == NGX_OK)
    {
        ngx_add_timer(&s->sub_timer, s->lmcf->redis_command_timeout);
    }
}
