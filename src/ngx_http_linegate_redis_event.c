
/*
 * linegate: the hiredis adapter for nginx's event loop. hiredis asks to
 * watch or stop watching each direction of its socket; nginx tells it
 * when the socket is readable or writable.
 *
 * Writes: a command queued on a connected socket is not a reason to ask
 * epoll whether the socket is writable (an epoll_ctl to watch, a wake-up,
 * an epoll_ctl to stop): the connection's write event is posted instead,
 * and runs once at the end of this turn of the event loop, sending every
 * command queued meanwhile in one write. Only a write that could not send
 * everything (the socket's buffer full) and the non-blocking connect
 * watch the socket through epoll.
 *
 * A connection attached with defer (a cluster's nodes) holds its
 * commands while requests keep arriving (src/ngx_http_linegate_redis_hold.c
 * counts: a few turns at most). A worker's requests of one turn spread
 * over the masters, so each master would be woken for a third of what
 * one Redis is, and on a busy box those wake-ups (a context switch, an
 * epoll_wait, a read and a write on each side) cost more than the
 * commands. The turns waited are nginx's posted "next" events: while one
 * waits the loop polls without sleeping (its timer 0), so an idle worker
 * sends at the next poll, never after a timeout.
 *
 * The PING of a subscribed connection and its answer: the header says
 * why the connection PSUBSCRIBEs.
 */


#include "ngx_http_linegate_redis_event.h"
#include "ngx_http_linegate_redis_arena.h"
#include "ngx_http_linegate_redis_hold.h"


typedef struct {
    ngx_connection_t                *connection;
    ngx_uint_t                       defer;
    ngx_http_linegate_redis_hold_t   hold;
} ngx_http_linegate_redis_event_conn_t;


static void ngx_http_linegate_redis_event_read(ngx_event_t *ev);
static void ngx_http_linegate_redis_event_write(ngx_event_t *ev);
static void ngx_http_linegate_redis_event_watch(ngx_event_t *ev,
    ngx_int_t event, ngx_uint_t on);
static void ngx_http_linegate_redis_event_add_read(void *privdata);
static void ngx_http_linegate_redis_event_del_read(void *privdata);
static void ngx_http_linegate_redis_event_add_write(void *privdata);
static void ngx_http_linegate_redis_event_del_write(void *privdata);
static void ngx_http_linegate_redis_event_cleanup(void *privdata);


/* set while hiredis writes: an addWrite then means "not all was sent" */
static ngx_uint_t  ngx_http_linegate_redis_event_writing;


ngx_int_t
ngx_http_linegate_redis_event_attach(redisAsyncContext *ac, ngx_log_t *log,
    ngx_uint_t defer)
{
    ngx_connection_t                      *c;
    ngx_http_linegate_redis_event_conn_t  *ec;

    ec = ngx_calloc(sizeof(ngx_http_linegate_redis_event_conn_t), log);
    if (ec == NULL) {
        return NGX_ERROR;
    }

    c = ngx_get_connection(ac->c.fd, log);
    if (c == NULL) {
        ngx_free(ec);
        return NGX_ERROR;
    }

    ec->connection = c;
    ec->defer = defer;

    c->data = ac;
    c->read->handler = ngx_http_linegate_redis_event_read;
    c->write->handler = ngx_http_linegate_redis_event_write;
    c->read->log = log;
    c->write->log = log;

    ac->ev.data = ec;
    ac->ev.addRead = ngx_http_linegate_redis_event_add_read;
    ac->ev.delRead = ngx_http_linegate_redis_event_del_read;
    ac->ev.addWrite = ngx_http_linegate_redis_event_add_write;
    ac->ev.delWrite = ngx_http_linegate_redis_event_del_write;
    ac->ev.cleanup = ngx_http_linegate_redis_event_cleanup;

    /* without memory for it, hiredis' own objects: nothing else changes */
    (void) ngx_http_linegate_redis_arena_attach(ac->c.reader);

    /* writability tells that the non-blocking connect finished */
    ngx_http_linegate_redis_event_watch(c->write, NGX_WRITE_EVENT, 1);

    return NGX_OK;
}


redisAsyncContext *
ngx_http_linegate_redis_event_connect(ngx_str_t *path, ngx_str_t *host,
    ngx_int_t port, ngx_log_t *log, ngx_uint_t defer, const char *who,
    void *data, redisConnectCallback *connected,
    redisDisconnectCallback *disconnected)
{
    redisAsyncContext  *ac;

    if (path->len) {
        ac = redisAsyncConnectUnix((char *) path->data);

    } else {
        ac = redisAsyncConnect((char *) host->data, (int) port);
    }

    if (ac == NULL) {
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      NGX_HTTP_LINEGATE_LOG "%s: out of memory", who);
        return NULL;
    }

    if (ac->err) {
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      NGX_HTTP_LINEGATE_LOG "%s connect failed: %s", who,
                      ac->errstr);
        redisAsyncFree(ac);
        return NULL;
    }

    if (ngx_http_linegate_redis_event_attach(ac, log, defer) != NGX_OK) {
        redisAsyncFree(ac);
        return NULL;
    }

    /* every callback of the context finds its owner here */
    ac->data = data;

    redisAsyncSetConnectCallback(ac, connected);
    redisAsyncSetDisconnectCallback(ac, disconnected);

    return ac;
}


static void
ngx_http_linegate_redis_event_read(ngx_event_t *ev)
{
    ngx_connection_t  *c;

    c = ev->data;
    redisAsyncHandleRead(c->data);
}


static void
ngx_http_linegate_redis_event_write(ngx_event_t *ev)
{
    ngx_uint_t                             writing;
    ngx_connection_t                      *c;
    redisAsyncContext                     *ac;
    ngx_http_linegate_redis_event_conn_t  *ec;

    c = ev->data;
    ac = c->data;
    ec = ac->ev.data;

    /* never the connect, nor a write epoll woke (the socket was full) */
    if (ec->defer && !ev->active
        && ngx_http_linegate_redis_hold_wait(&ec->hold))
    {
        ngx_post_event(ev, &ngx_posted_next_events);
        return;
    }

    ngx_http_linegate_redis_hold_reset(&ec->hold);

    writing = ngx_http_linegate_redis_event_writing;
    ngx_http_linegate_redis_event_writing = 1;

    redisAsyncHandleWrite(ac);

    ngx_http_linegate_redis_event_writing = writing;
}


static void
ngx_http_linegate_redis_event_watch(ngx_event_t *ev, ngx_int_t event,
    ngx_uint_t on)
{
    if (on && !ev->active) {
        (void) ngx_add_event(ev, event, NGX_LEVEL_EVENT);

    } else if (!on && ev->active) {
        (void) ngx_del_event(ev, event, 0);
    }
}


static void
ngx_http_linegate_redis_event_add_read(void *privdata)
{
    ngx_http_linegate_redis_event_conn_t  *ec = privdata;

    ngx_http_linegate_redis_event_watch(ec->connection->read, NGX_READ_EVENT,
                                        1);
}


static void
ngx_http_linegate_redis_event_del_read(void *privdata)
{
    ngx_http_linegate_redis_event_conn_t  *ec = privdata;

    ngx_http_linegate_redis_event_watch(ec->connection->read, NGX_READ_EVENT,
                                        0);
}


static void
ngx_http_linegate_redis_event_add_write(void *privdata)
{
    ngx_http_linegate_redis_event_conn_t  *ec = privdata;

    ngx_connection_t   *c;
    redisAsyncContext  *ac;

    c = ec->connection;
    ac = c->data;

    if ((ac->c.flags & REDIS_CONNECTED)
        && !ngx_http_linegate_redis_event_writing)
    {
        /* a command queued: sent at the end of this turn, with the rest */
        ngx_http_linegate_redis_hold_queued(&ec->hold);
        ngx_post_event(c->write, &ngx_posted_events);
        return;
    }

    ngx_http_linegate_redis_event_watch(c->write, NGX_WRITE_EVENT, 1);
}


static void
ngx_http_linegate_redis_event_del_write(void *privdata)
{
    ngx_http_linegate_redis_event_conn_t  *ec = privdata;

    ngx_http_linegate_redis_event_watch(ec->connection->write,
                                        NGX_WRITE_EVENT, 0);
}


/* hiredis closes the socket itself: release only nginx's view of it */
static void
ngx_http_linegate_redis_event_cleanup(void *privdata)
{
    ngx_http_linegate_redis_event_conn_t  *ec = privdata;

    ngx_connection_t   *c;
    redisAsyncContext  *ac;

    c = ec->connection;
    ac = c->data;
    ngx_http_linegate_redis_arena_detach(ac->c.reader);

    ngx_http_linegate_redis_event_del_read(ec);
    ngx_http_linegate_redis_event_del_write(ec);

    if (c->read->timer_set) {
        ngx_del_timer(c->read);
    }

    if (c->write->timer_set) {
        ngx_del_timer(c->write);
    }

    if (c->read->posted) {
        ngx_delete_posted_event(c->read);
    }

    if (c->write->posted) {
        ngx_delete_posted_event(c->write);
    }

    /*
     * as ngx_close_connection(): freed while it still names its fd, so
     * that the event modules that keep a table by fd (poll, /dev/poll,
     * event ports: ngx_cycle->files) forget it; with -1 first they read
     * files[-1] and kept pointing at this connection, and a later one
     * given the same fd had its events handed to the freed one
     */
    ngx_free_connection(c);
    c->fd = (ngx_socket_t) -1;
    ngx_free(ec);
}


ngx_int_t
ngx_http_linegate_redis_event_ping(redisAsyncContext *ac, ngx_str_t *name)
{
    if (redisAsyncCommand(ac, NULL, NULL, "PING %b", name->data, name->len)
        != REDIS_OK)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


ngx_uint_t
ngx_http_linegate_redis_event_pong(redisAsyncContext *ac, redisReply *reply)
{
    redisReply     *kind;
#if (HIREDIS_MAJOR == 0)
    redisCallback  *cb;
#endif

    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY
        || reply->elements < 2
        || reply->element[0]->type != REDIS_REPLY_STRING)
    {
        return 0;
    }

    kind = reply->element[0];

    if (!ngx_http_linegate_redis_event_kind(kind, "pong")) {
        return 0;
    }

#if (HIREDIS_MAJOR == 0)
    cb = ac->sub.invalid.head;

    if (cb != NULL) {
        ac->sub.invalid.head = cb->next;

        if (ac->sub.invalid.tail == cb) {
            ac->sub.invalid.tail = NULL;
        }

        free(cb);
    }
#endif

    return 1;
}


ngx_uint_t
ngx_http_linegate_redis_event_kind(const redisReply *kind, const char *word)
{
    size_t  len;

    len = ngx_strlen(word);

    return kind->type == REDIS_REPLY_STRING
           && kind->len == len
           && ngx_strncasecmp((u_char *) kind->str, (u_char *) word, len)
              == 0;
}
