
/*
 * linegate: linegate_reconcile_auto, reconciliation without an operator.
 *
 * A run needs Stripe, and Stripe is reached through nginx subrequests,
 * which need a request: so one worker of each nginx (worker 0) calls the
 * operator API's POST reconciliation/run over HTTP, on a timer, as an
 * operator would. The run's Redis lease makes it one run at a time for
 * the whole fleet; a run held elsewhere answers 409, which is normal.
 * The connection is nginx's own (non-blocking, on the event loop); the
 * address is resolved when the configuration is read, never in a worker.
 */


#include "ngx_http_linegate_reconcile.h"
#include "ngx_http_linegate_conf.h"


/*
 * How long a call waits for its answer by default (timeout=): a run's
 * 30 s budget plus 35 s for its last entry's Stripe calls. That is no
 * bound on a run: each Stripe call is bounded only by the Stripe
 * location's timeouts (the operator's, 60 s each by default) and the
 * lease is renewed while they last (t/238), so a run may well answer
 * later. Past this the call is closed and the run goes on (the Stripe
 * location ignores the client's leaving: proxy_ignore_client_abort on,
 * docs/operator.md). Logged at warn, not error: nothing is known to have
 * failed (t/237).
 */
#define NGX_HTTP_LINEGATE_AUTO_TIMEOUT   65000
#define NGX_HTTP_LINEGATE_AUTO_STATUS    32      /* "HTTP/1.1 200 ..." */
/* a worker 0's first call: after this, spread over the next this much */
#define NGX_HTTP_LINEGATE_AUTO_FIRST     1000
#define NGX_HTTP_LINEGATE_AUTO_SPREAD    10000


typedef struct {
    ngx_event_t                      timer;
    /* nginx's debug log reads every timer's ev->data as a connection */
    ngx_connection_t                 dummy;
    ngx_peer_connection_t            peer;
    ngx_str_t                        request;
    size_t                           sent;
    u_char                           head[NGX_HTTP_LINEGATE_AUTO_STATUS];
    size_t                           received;
    ngx_msec_t                       interval;
    ngx_msec_t                       timeout;
    ngx_url_t                       *url;
} ngx_http_linegate_auto_t;


static void ngx_http_linegate_auto_tick(ngx_event_t *ev);
static void ngx_http_linegate_auto_write(ngx_event_t *wev);
static void ngx_http_linegate_auto_read(ngx_event_t *rev);
static void ngx_http_linegate_auto_noop(ngx_event_t *ev);
static void ngx_http_linegate_auto_done(ngx_http_linegate_auto_t *au,
    const char *failure);
static void ngx_http_linegate_auto_arm(ngx_http_linegate_auto_t *au,
    ngx_msec_t delay);
static ngx_msec_t ngx_http_linegate_reconcile_auto_time(ngx_conf_t *cf,
    ngx_str_t *value, size_t skip);
static ngx_uint_t ngx_http_linegate_reconcile_auto_loopback(ngx_url_t *u);


static ngx_http_linegate_auto_t  ngx_http_linegate_auto;


/*
 * linegate_reconcile_auto http://<address>[:port]/<prefix>/ [interval=]
 *     [timeout=]
 */
char *
ngx_http_linegate_reconcile_auto_conf(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_linegate_main_conf_t *lmcf = conf;

    ngx_str_t   *value;
    ngx_url_t   *u;
    ngx_int_t    n;
    ngx_msec_t   interval, timeout, *set;
    ngx_uint_t   i, seen;

    static const char *const  names[] = { "interval=", "timeout=" };

    if (lmcf->reconcile_auto != NGX_CONF_UNSET_PTR) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (cf->args->nelts == 2 && ngx_strcmp(value[1].data, "off") == 0) {
        lmcf->reconcile_auto = NULL;
        return NGX_CONF_OK;
    }

    interval = 30000;
    timeout = NGX_HTTP_LINEGATE_AUTO_TIMEOUT;
    seen = 0;

    /* each parameter once (bit n of seen): a second one would win */
    for (i = 2; i < cf->args->nelts; i++) {

        n = ngx_http_linegate_conf_param(cf, &value[i], names,
                                         sizeof(names) / sizeof(names[0]),
                                         &seen);
        if (n < 0) {
            return NGX_CONF_ERROR;
        }

        set = (n == 0) ? &interval : &timeout;

        *set = ngx_http_linegate_reconcile_auto_time(cf, &value[i],
                                                     ngx_strlen(names[n]));
        if (*set == (ngx_msec_t) NGX_ERROR) {
            return NGX_CONF_ERROR;
        }
    }

    if (value[1].len <= 7
        || ngx_strncasecmp(value[1].data, (u_char *) "http://", 7) != 0)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\" is not an http:// URL of the operator "
                           "API's location, such as "
                           "http://127.0.0.1:8080/_linegate/", &value[1]);
        return NGX_CONF_ERROR;
    }

    u = ngx_pcalloc(cf->pool, sizeof(ngx_url_t));
    if (u == NULL) {
        return NGX_CONF_ERROR;
    }

    u->url.data = value[1].data + 7;
    u->url.len = value[1].len - 7;
    u->default_port = 80;
    u->uri_part = 1;

    /* resolved now, when the configuration is read: never in a worker */
    if (ngx_parse_url(cf->pool, u) != NGX_OK || u->naddrs == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "%s in \"%V\"",
                           u->err ? u->err : "no address", &value[1]);
        return NGX_CONF_ERROR;
    }

    if (u->uri.len == 0 || u->uri.data[u->uri.len - 1] != '/') {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\" must end with the operator API's prefix, "
                           "such as /_linegate/", &value[1]);
        return NGX_CONF_ERROR;
    }

    if (!ngx_http_linegate_reconcile_auto_loopback(u)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\" is not a loopback address: the operator "
                           "token is sent in plain HTTP, to this nginx only "
                           "(127.0.0.1, ::1)", &value[1]);
        return NGX_CONF_ERROR;
    }

    lmcf->reconcile_auto = u;
    lmcf->reconcile_auto_interval = interval;
    lmcf->reconcile_auto_timeout = timeout;

    return NGX_CONF_OK;
}


/*
 * The time of an interval= or timeout= parameter, from 1 s to 1 day: past
 * a day a timer's ngx_msec_t could wrap (it fired at once). NGX_ERROR,
 * logged, when it is not one.
 */
static ngx_msec_t
ngx_http_linegate_reconcile_auto_time(ngx_conf_t *cf, ngx_str_t *value,
    size_t skip)
{
    ngx_str_t   s;
    ngx_msec_t  t;

    s.data = value->data + skip;
    s.len = value->len - skip;

    t = ngx_parse_time(&s, 0);

    if (t == (ngx_msec_t) NGX_ERROR || t < 1000
        || t > NGX_HTTP_LINEGATE_RECONCILE_TIME_MAX)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid %*s \"%V\": at least 1s, at most 1d",
                           skip - 1, value->data, value);
        return (ngx_msec_t) NGX_ERROR;
    }

    return t;
}


/* every address the name resolved to is this host's loopback */
static ngx_uint_t
ngx_http_linegate_reconcile_auto_loopback(ngx_url_t *u)
{
    ngx_uint_t            i;
    struct sockaddr_in   *sin;
#if (NGX_HAVE_INET6)
    struct sockaddr_in6  *sin6;
#endif

    for (i = 0; i < u->naddrs; i++) {

        switch (u->addrs[i].sockaddr->sa_family) {

#if (NGX_HAVE_INET6)
        case AF_INET6:
            sin6 = (struct sockaddr_in6 *) u->addrs[i].sockaddr;

            if (!IN6_IS_ADDR_LOOPBACK(&sin6->sin6_addr)) {
                return 0;
            }

            break;
#endif

        case AF_INET:
            sin = (struct sockaddr_in *) u->addrs[i].sockaddr;

            if ((ntohl(sin->sin_addr.s_addr) >> 24) != 127) {
                return 0;
            }

            break;

        default:
            return 0;
        }
    }

    return u->naddrs > 0;
}


ngx_int_t
ngx_http_linegate_reconcile_auto_init_process(ngx_cycle_t *cycle)
{
    u_char                         *p;
    size_t                          len;
    ngx_url_t                      *u;
    ngx_http_linegate_auto_t       *au;
    ngx_http_linegate_main_conf_t  *lmcf;

    lmcf = ngx_http_cycle_get_module_main_conf(cycle,
                                               ngx_http_linegate_module);

    if (lmcf == NULL || lmcf->reconcile_auto == NULL
        || lmcf->reconcile_auto == NGX_CONF_UNSET_PTR)
    {
        return NGX_OK;
    }

    /* one caller per nginx: the Redis lease makes one run per fleet */
    if (!(ngx_process == NGX_PROCESS_SINGLE
          || (ngx_process == NGX_PROCESS_WORKER && ngx_worker == 0)))
    {
        return NGX_OK;
    }

    u = lmcf->reconcile_auto;
    au = &ngx_http_linegate_auto;
    ngx_memzero(au, sizeof(ngx_http_linegate_auto_t));

    au->url = u;
    au->interval = lmcf->reconcile_auto_interval;
    au->timeout = lmcf->reconcile_auto_timeout;

    len = sizeof("POST reconciliation/run HTTP/1.0" CRLF
                 "Host: " CRLF
                 "Authorization: Bearer " CRLF
                 "User-Agent: linegate-reconcile" CRLF
                 "Content-Length: 0" CRLF CRLF) - 1
          + u->uri.len + u->host.len + NGX_INT_T_LEN
          + lmcf->operator_token.len;

    p = ngx_pnalloc(cycle->pool, len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    au->request.data = p;
    p = ngx_sprintf(p, "POST %Vreconciliation/run HTTP/1.0" CRLF
                    "Host: %V", &u->uri, &u->host);

    if (u->port != 80) {
        p = ngx_sprintf(p, ":%d", (int) u->port);
    }

    p = ngx_sprintf(p, CRLF "Authorization: Bearer %V" CRLF
                    "User-Agent: linegate-reconcile" CRLF
                    "Content-Length: 0" CRLF CRLF, &lmcf->operator_token);

    au->request.len = p - au->request.data;

    au->dummy.fd = (ngx_socket_t) -1;
    au->timer.handler = ngx_http_linegate_auto_tick;
    au->timer.data = &au->dummy;
    au->timer.log = cycle->log;
    /* a timer alone never keeps an exiting worker alive */
    au->timer.cancelable = 1;

    /*
     * The first call within seconds, whatever the interval: every reload
     * starts a new worker 0, and a first call an interval away (or half
     * of one) was put off for ever by reloads more frequent than that.
     * After a second at least (the workers' Redis connections), spread
     * over the next ten at most; a run held elsewhere answers 409.
     */
    ngx_http_linegate_auto_arm(au, NGX_HTTP_LINEGATE_AUTO_FIRST
                                   + (ngx_msec_t) ngx_random()
                                     % ngx_min(au->interval,
                                               NGX_HTTP_LINEGATE_AUTO_SPREAD));

    return NGX_OK;
}


/*
 * The worker exits: a call still in flight is closed here. Its read timer
 * is cancelable, so a quitting worker does not wait for the answer; but
 * nginx takes a socket still open at exit for a leak ("open socket #N
 * left in connection M", then "aborting", both alerts). The run goes on
 * in the worker that serves it; only its answer is not read.
 */
void
ngx_http_linegate_reconcile_auto_exit_process(ngx_cycle_t *cycle)
{
    ngx_http_linegate_auto_t  *au;

    au = &ngx_http_linegate_auto;

    if (au->timer.timer_set) {
        ngx_del_timer(&au->timer);
    }

    if (au->peer.connection == NULL) {
        return;
    }

    ngx_log_error(NGX_LOG_INFO, cycle->log, 0,
                  NGX_HTTP_LINEGATE_LOG "linegate_reconcile_auto: the "
                  "worker exits, the answer of http://%V%Vreconciliation/run "
                  "is not read", &au->url->host, &au->url->uri);

    /* its timers and events too */
    ngx_close_connection(au->peer.connection);
    au->peer.connection = NULL;
}


static void
ngx_http_linegate_auto_arm(ngx_http_linegate_auto_t *au, ngx_msec_t delay)
{
    if (ngx_exiting || ngx_quit || ngx_terminate) {
        return;
    }

    ngx_add_timer(&au->timer, delay);
}


static void
ngx_http_linegate_auto_tick(ngx_event_t *ev)
{
    ngx_int_t                  rc;
    ngx_connection_t          *c;
    ngx_http_linegate_auto_t  *au;

    au = &ngx_http_linegate_auto;

    if (ngx_exiting || ngx_quit || ngx_terminate) {
        return;
    }

    ngx_memzero(&au->peer, sizeof(ngx_peer_connection_t));

    au->peer.sockaddr = au->url->addrs[0].sockaddr;
    au->peer.socklen = au->url->addrs[0].socklen;
    au->peer.name = &au->url->addrs[0].name;
    au->peer.get = ngx_event_get_peer;
    au->peer.log = ev->log;
    au->peer.log_error = NGX_ERROR_ERR;

    au->sent = 0;
    au->received = 0;

    rc = ngx_event_connect_peer(&au->peer);

    if (rc == NGX_ERROR || rc == NGX_BUSY || rc == NGX_DECLINED) {
        ngx_http_linegate_auto_done(au, "could not connect");
        return;
    }

    c = au->peer.connection;
    c->data = au;
    c->log = ev->log;
    c->read->log = ev->log;
    c->write->log = ev->log;
    c->read->handler = ngx_http_linegate_auto_read;
    c->write->handler = ngx_http_linegate_auto_write;

    /*
     * One clock for the whole call: connect, send, the run, the answer.
     * It never holds an exiting worker: the run goes on in the worker
     * that serves it, whoever reads its answer.
     */
    c->read->cancelable = 1;
    ngx_add_timer(c->read, au->timeout);

    if (rc == NGX_OK) {
        ngx_http_linegate_auto_write(c->write);
    }
}


static void
ngx_http_linegate_auto_write(ngx_event_t *wev)
{
    ssize_t                    n;
    ngx_connection_t          *c;
    ngx_http_linegate_auto_t  *au;

    c = wev->data;
    au = c->data;

    while (au->sent < au->request.len) {
        n = c->send(c, au->request.data + au->sent,
                    au->request.len - au->sent);

        if (n == NGX_ERROR) {
            ngx_http_linegate_auto_done(au, "could not send the call");
            return;
        }

        if (n == NGX_AGAIN || n == 0) {
            if (ngx_handle_write_event(wev, 0) != NGX_OK) {
                ngx_http_linegate_auto_done(au, "could not send the call");
            }
            return;
        }

        au->sent += n;
    }

    wev->handler = ngx_http_linegate_auto_noop;

    /* the answer may be there already */
    if (c->read->ready) {
        ngx_http_linegate_auto_read(c->read);
    }
}


/* the answer: its status line is kept, the rest read until the close */
static void
ngx_http_linegate_auto_read(ngx_event_t *rev)
{
    size_t                     keep;
    ssize_t                    n;
    u_char                     buf[1024];
    ngx_connection_t          *c;
    ngx_http_linegate_auto_t  *au;

    c = rev->data;
    au = c->data;

    if (rev->timedout) {
        ngx_log_error(NGX_LOG_WARN, au->timer.log, 0,
                      NGX_HTTP_LINEGATE_LOG "linegate_reconcile_auto: no "
                      "answer of http://%V%Vreconciliation/run in %M ms, "
                      "no longer awaited; the run may go on (its Stripe "
                      "calls are bounded by the Stripe location's "
                      "timeouts), each entry logs itself",
                      &au->url->host, &au->url->uri,
                      au->timeout);
        ngx_http_linegate_auto_done(au, "");
        return;
    }

    for ( ;; ) {
        n = c->recv(c, buf, sizeof(buf));

        if (n == NGX_AGAIN) {
            if (ngx_handle_read_event(rev, 0) != NGX_OK) {
                ngx_http_linegate_auto_done(au, "could not read the answer");
            }
            return;
        }

        if (n == NGX_ERROR) {
            ngx_http_linegate_auto_done(au, "could not read the answer");
            return;
        }

        if (n == 0) {
            ngx_http_linegate_auto_done(au, NULL);
            return;
        }

        keep = ngx_min((size_t) n, sizeof(au->head) - au->received);
        ngx_memcpy(au->head + au->received, buf, keep);
        au->received += keep;
    }
}


static void
ngx_http_linegate_auto_noop(ngx_event_t *ev)
{
}


/*
 * the call is over (failure: why it failed, "" when its caller logged it):
 * logged, the next one armed
 */
static void
ngx_http_linegate_auto_done(ngx_http_linegate_auto_t *au,
    const char *failure)
{
    ngx_int_t    status;
    ngx_uint_t   level;
    ngx_log_t   *log;

    log = au->timer.log;
    status = 0;

    if (au->peer.connection) {
        ngx_close_connection(au->peer.connection);
        au->peer.connection = NULL;
    }

    /* "HTTP/1.x NNN" */
    if (failure == NULL && au->received >= 12
        && ngx_strncmp(au->head, "HTTP/1.", 7) == 0)
    {
        status = ngx_atoi(au->head + 9, 3);
    }

    if (failure == NULL && status <= 0) {
        failure = "no HTTP answer";
    }

    if (failure != NULL && failure[0] == '\0') {
        /* logged by the caller already (a call no longer awaited) */

    } else if (failure != NULL) {
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      NGX_HTTP_LINEGATE_LOG "linegate_reconcile_auto: the "
                      "call of http://%V%Vreconciliation/run failed: %s",
                      &au->url->host, &au->url->uri, failure);

    } else {
        /* 409: another run holds the lease; each entry logs itself */
        level = (status == NGX_HTTP_OK || status == NGX_HTTP_CONFLICT)
                ? NGX_LOG_INFO : NGX_LOG_ERR;

        ngx_log_error(level, log, 0,
                      NGX_HTTP_LINEGATE_LOG "linegate_reconcile_auto: "
                      "reconciliation/run answered %i", status);
    }

    ngx_http_linegate_auto_arm(au, au->interval);
}
