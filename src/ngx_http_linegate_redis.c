
/*
 * linegate: one asynchronous Redis connection per worker.
 *
 * hiredis (async API) runs on nginx's event loop: the socket is wrapped in
 * an ngx_connection_t with level-triggered events, so a reply larger than
 * one hiredis read is never stranded. All requests of a worker share the
 * connection, so their commands pipeline. hiredis 0.14 has no timeouts of
 * its own: the connect timeout, the per-command timeout, the keepalive PING
 * and the reconnect backoff are nginx timers owned here.
 *
 * Every command in flight holds a non-cancelable timer, so a graceful
 * reload waits for it; the keepalive and reconnect timers are cancelable
 * and do not keep an exiting worker alive.
 */


#include "ngx_http_linegate_redis.h"
#include "ngx_http_linegate_scripts.h"
#include "ngx_http_linegate_metrics.h"

#include "ngx_http_linegate_redis_event.h"
#include "ngx_http_linegate_redis_sentinel.h"


#define NGX_HTTP_LINEGATE_BACKOFF_MIN  100
#define NGX_HTTP_LINEGATE_BACKOFF_MAX  2000

/* durable writes: how many wait at most, how long a draining worker
 * stays alive for them */
#define NGX_HTTP_LINEGATE_DURABLE_MAX    1024
#define NGX_HTTP_LINEGATE_DURABLE_DRAIN  30000


typedef enum {
    NGX_HTTP_LINEGATE_REDIS_DISCONNECTED = 0,
    NGX_HTTP_LINEGATE_REDIS_CONNECTING,
    NGX_HTTP_LINEGATE_REDIS_CONNECTED
} ngx_http_linegate_redis_state_e;


typedef struct {
    redisAsyncContext                  *ac;
    ngx_http_linegate_redis_state_e     state;
    ngx_uint_t                          attempts;
    ngx_uint_t                          ping_pending;
    ngx_uint_t                          exiting;
    ngx_uint_t                          connected_before;
    ngx_uint_t                          counted;  /* in the gauge */
    ngx_event_t                         connect_timer;
    ngx_event_t                         reconnect_timer;
    ngx_event_t                         keepalive_timer;
    ngx_http_linegate_main_conf_t      *lmcf;

    /* the server reached: linegate_redis's, or the master Sentinel named */
    ngx_str_t                           host;
    ngx_int_t                           port;
    ngx_uint_t                          sentinel;
    ngx_uint_t                          master_known;
    ngx_event_t                         rediscover;  /* posted */
    u_char                              node[NGX_SOCKADDR_STRLEN + 8];
    size_t                              node_len;   /* of the gauge */
    ngx_log_t                          *log;

    /* durable writes waiting for an answer, oldest first */
    ngx_queue_t                         durable;
    ngx_uint_t                          ndurable;
    ngx_uint_t                          durable_attempts;
    ngx_msec_t                          drain_start;  /* 0: not draining */
    ngx_event_t                         durable_timer;
} ngx_http_linegate_redis_t;


/* a write that must happen: its arguments copied, resent until done */
typedef struct {
    ngx_queue_t                         queue;
    ngx_int_t                           script;  /* -1: plain command */
    int                                 nkeys;
    ngx_uint_t                          attempts;
    ngx_uint_t                          eval;    /* NOSCRIPT: send EVAL */
    ngx_uint_t                          sent;    /* hiredis owes a reply */
    ngx_uint_t                          done;    /* given up: free on reply */
    char                               *what;
    ngx_http_linegate_redis_args_t      args;
} ngx_http_linegate_redis_durable_t;


typedef struct {
    ngx_http_request_t                 *r;      /* NULL: request gave up */
    ngx_pool_cleanup_t                 *cln;    /* detaches it from r */
    ngx_http_linegate_redis_handler_pt  handler;
    ngx_event_t                         timer;
    ngx_int_t                           script; /* -1: plain command */
    int                                 nkeys;
    ngx_http_linegate_redis_args_t     *args;
    ngx_uint_t                          retried;
    uint64_t                            sent_us;  /* for the metrics */

    /* linegate_redis_wait: WAIT sent after the script */
    ngx_uint_t                          waits;    /* WAIT replies owed */
    ngx_uint_t                          have;     /* the script answered */
    redisReply                         *stash;    /* its reply, or NULL */
} ngx_http_linegate_redis_cmd_t;


/* commands written back to back, answered to one handler */
typedef struct {
    ngx_http_linegate_redis_cmd_t       cmd;    /* first: freed as one */
    ngx_uint_t                          queued; /* callbacks hiredis owes */
    ngx_uint_t                          received;
    ngx_uint_t                          lost;   /* a reply never came */
    ngx_uint_t                          failed; /* a command failed */
    redisReply                         *element[
                                        NGX_HTTP_LINEGATE_REDIS_MAX_PIPELINE];
    redisReply                          array;
} ngx_http_linegate_redis_pipeline_t;


static void ngx_http_linegate_redis_connect(void);
static void ngx_http_linegate_redis_connect_to(void);
static void ngx_http_linegate_redis_master_found(ngx_int_t rc,
    ngx_str_t *host, ngx_int_t port);
static void ngx_http_linegate_redis_master_switched(void);
static void ngx_http_linegate_redis_rediscover(ngx_event_t *ev);
static void ngx_http_linegate_redis_auth(void);
static void ngx_http_linegate_redis_role_cb(redisAsyncContext *ac,
    void *reply, void *privdata);
static void ngx_http_linegate_redis_ready(void);
static void ngx_http_linegate_redis_lost(void);
static void ngx_http_linegate_redis_connect_cb(const redisAsyncContext *ac,
    int status);
static void ngx_http_linegate_redis_disconnect_cb(
    const redisAsyncContext *ac, int status);
static void ngx_http_linegate_redis_setup(void);
static void ngx_http_linegate_redis_setup_cb(redisAsyncContext *ac,
    void *reply, void *privdata);
static void ngx_http_linegate_redis_reply_cb(redisAsyncContext *ac,
    void *reply, void *privdata);
static void ngx_http_linegate_redis_pipeline_cb(redisAsyncContext *ac,
    void *reply, void *privdata);
static ngx_uint_t ngx_http_linegate_redis_acknowledged(ngx_int_t script);
static ngx_int_t ngx_http_linegate_redis_send_wait(
    ngx_http_linegate_redis_cmd_t *cmd);
static void ngx_http_linegate_redis_wait_cb(redisAsyncContext *ac,
    void *reply, void *privdata);
static void ngx_http_linegate_redis_pipeline_drop(
    ngx_http_linegate_redis_pipeline_t *pl);
static redisReply *ngx_http_linegate_redis_copy(ngx_pool_t *pool,
    redisReply *src);
static void ngx_http_linegate_redis_finish(ngx_http_linegate_redis_cmd_t *cmd,
    redisReply *reply);
static ngx_int_t ngx_http_linegate_redis_append(ngx_pool_t *pool, int argc,
    const char **argv, const size_t *argvlen, redisCallbackFn *fn,
    void *privdata);
static void ngx_http_linegate_redis_log_error(ngx_log_t *log,
    redisReply *reply);
static ngx_int_t ngx_http_linegate_redis_unavailable(redisReply *reply);
static void ngx_http_linegate_redis_drop(const char *why);
static ngx_int_t ngx_http_linegate_redis_send(
    ngx_http_linegate_redis_cmd_t *cmd, ngx_uint_t eval);
static void ngx_http_linegate_redis_cmd_timeout(ngx_event_t *ev);
static void ngx_http_linegate_redis_connect_timeout(ngx_event_t *ev);
static void ngx_http_linegate_redis_reconnect(ngx_event_t *ev);
static void ngx_http_linegate_redis_keepalive(ngx_event_t *ev);
static void ngx_http_linegate_redis_backlog_cb(redisAsyncContext *ac,
    void *data, void *privdata);
static void ngx_http_linegate_redis_gauge(ngx_int_t n);
static void ngx_http_linegate_redis_ping_cb(redisAsyncContext *ac,
    void *reply, void *privdata);

static ngx_int_t ngx_http_linegate_redis_attach(
    ngx_http_linegate_redis_cmd_t *cmd);
static void ngx_http_linegate_redis_detach(void *data);
static void ngx_http_linegate_redis_release(
    ngx_http_linegate_redis_cmd_t *cmd);
static ngx_int_t ngx_http_linegate_redis_durable_queue(ngx_log_t *log,
    ngx_int_t script, int nkeys, ngx_http_linegate_redis_args_t *args,
    const char *what);
static void ngx_http_linegate_redis_durable_flush(void);
static ngx_int_t ngx_http_linegate_redis_durable_send(
    ngx_http_linegate_redis_durable_t *d);
static void ngx_http_linegate_redis_durable_cb(redisAsyncContext *ac,
    void *reply, void *privdata);
static void ngx_http_linegate_redis_durable_retry(ngx_event_t *ev);
static void ngx_http_linegate_redis_durable_arm(void);



static ngx_http_linegate_redis_t  ngx_http_linegate_redis;

/*
 * nginx's debug log reads ev->data as a connection for every timer: the
 * module's timers point at this one (fd -1) and find their owner by
 * other means.
 */
static ngx_connection_t  ngx_http_linegate_redis_dummy;


/* replies that mean "the store cannot serve now", not "a bug of ours" */
static ngx_str_t  ngx_http_linegate_redis_unavailable_errors[] = {
    ngx_string("LOADING"),
    ngx_string("NOAUTH"),
    ngx_string("WRONGPASS"),
    ngx_string("MOVED"),
    ngx_string("ASK"),
    ngx_string("CLUSTERDOWN"),
    ngx_string("TRYAGAIN"),
    ngx_string("READONLY"),
    ngx_string("MASTERDOWN"),
    ngx_string("BUSY"),
    ngx_string("OOM"),
    ngx_null_string
};


/* arguments */

void
ngx_http_linegate_redis_args_init(ngx_http_linegate_redis_args_t *a)
{
    a->argc = 0;
    a->nkeys = 0;
}


void
ngx_http_linegate_redis_arg_key(ngx_http_linegate_redis_args_t *a,
    ngx_str_t *key)
{
    int  n;

    ngx_http_linegate_redis_arg(a, key->data, key->len);

    if (a->argc < 0) {
        return;
    }

    /* rotate it from the end to just after the other keys */
    n = a->argc - 1 - a->nkeys;

    if (n > 0) {
        ngx_memmove(&a->argv[a->nkeys + 1], &a->argv[a->nkeys],
                    n * sizeof(const char *));
        ngx_memmove(&a->argvlen[a->nkeys + 1], &a->argvlen[a->nkeys],
                    n * sizeof(size_t));
        a->argv[a->nkeys] = (const char *) key->data;
        a->argvlen[a->nkeys] = key->len;
    }

    a->nkeys++;
}


void
ngx_http_linegate_redis_arg(ngx_http_linegate_redis_args_t *a,
    const void *data, size_t len)
{
    if (a->argc == NGX_HTTP_LINEGATE_REDIS_MAX_ARGS) {
        /* too many arguments is a bug: send_cmd refuses argc < 0 */
        a->argc = -1;
        return;
    }

    if (a->argc < 0) {
        return;
    }

    a->argv[a->argc] = data;
    a->argvlen[a->argc] = len;
    a->argc++;
}


void
ngx_http_linegate_redis_arg_str(ngx_http_linegate_redis_args_t *a,
    ngx_str_t *s)
{
    ngx_http_linegate_redis_arg(a, s->data, s->len);
}


void
ngx_http_linegate_redis_arg_cstr(ngx_http_linegate_redis_args_t *a,
    const char *s)
{
    ngx_http_linegate_redis_arg(a, s, ngx_strlen(s));
}


void
ngx_http_linegate_redis_arg_int(ngx_http_request_t *r,
    ngx_http_linegate_redis_args_t *a, int64_t n)
{
    u_char  *p, *last;

    p = ngx_pnalloc(r->pool, NGX_INT64_LEN);
    if (p == NULL) {
        a->argc = -1;
        return;
    }

    last = ngx_sprintf(p, "%L", n);
    ngx_http_linegate_redis_arg(a, p, last - p);
}


/* commands */

ngx_int_t
ngx_http_linegate_redis_script(ngx_http_request_t *r,
    ngx_http_linegate_script_id_e script, int nkeys,
    ngx_http_linegate_redis_args_t *args,
    ngx_http_linegate_redis_handler_pt handler)
{
    ngx_http_linegate_redis_cmd_t  *cmd;

    if (args->argc < 0 || args->argc + 3 > NGX_HTTP_LINEGATE_REDIS_MAX_ARGS
        || nkeys > args->argc)
    {
        ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                      NGX_HTTP_LINEGATE_LOG "bad arguments for script \"%V\"",
                      ngx_http_linegate_script_name(script));
        return NGX_ERROR;
    }

    cmd = ngx_alloc(sizeof(ngx_http_linegate_redis_cmd_t),
                    r->connection->log);
    if (cmd == NULL) {
        return NGX_ERROR;
    }

    ngx_memzero(cmd, sizeof(ngx_http_linegate_redis_cmd_t));
    cmd->r = r;
    cmd->handler = handler;
    cmd->script = script;
    cmd->nkeys = nkeys;
    cmd->args = args;

    if (ngx_http_linegate_redis_attach(cmd) != NGX_OK
        || ngx_http_linegate_redis_send(cmd, 0) != NGX_OK)
    {
        ngx_http_linegate_redis_release(cmd);
        ngx_free(cmd);
        return NGX_ERROR;
    }

    return NGX_OK;
}


ngx_int_t
ngx_http_linegate_redis_command(ngx_http_request_t *r,
    ngx_http_linegate_redis_args_t *args,
    ngx_http_linegate_redis_handler_pt handler)
{
    ngx_http_linegate_redis_cmd_t  *cmd;

    if (args->argc <= 0) {
        return NGX_ERROR;
    }

    cmd = ngx_alloc(sizeof(ngx_http_linegate_redis_cmd_t),
                    r->connection->log);
    if (cmd == NULL) {
        return NGX_ERROR;
    }

    ngx_memzero(cmd, sizeof(ngx_http_linegate_redis_cmd_t));
    cmd->r = r;
    cmd->handler = handler;
    cmd->script = -1;
    cmd->args = args;

    if ((handler != NULL && ngx_http_linegate_redis_attach(cmd) != NGX_OK)
        || ngx_http_linegate_redis_send(cmd, 0) != NGX_OK)
    {
        ngx_http_linegate_redis_release(cmd);
        ngx_free(cmd);
        return NGX_ERROR;
    }

    if (handler == NULL) {
        /*
         * Nobody waits: the reply callback drops the reply as a late
         * one. The timer outlives r, so it must not log through r.
         */
        cmd->r = NULL;
        cmd->timer.log = ngx_cycle->log;
    }

    return NGX_OK;
}


ngx_int_t
ngx_http_linegate_redis_pipeline(ngx_http_request_t *r,
    ngx_uint_t ncmds, ngx_http_linegate_redis_args_t *args,
    ngx_http_linegate_redis_handler_pt handler)
{
    ngx_uint_t                           i;
    ngx_http_linegate_redis_t           *rd;
    ngx_http_linegate_redis_pipeline_t  *pl;

    rd = &ngx_http_linegate_redis;

    for (i = 0; i < ncmds; i++) {
        if (args[i].argc <= 0) {
            break;
        }
    }

    if (ncmds == 0 || ncmds > NGX_HTTP_LINEGATE_REDIS_MAX_PIPELINE
        || i < ncmds)
    {
        ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                      NGX_HTTP_LINEGATE_LOG "bad arguments for a pipeline");
        return NGX_ERROR;
    }

    if (rd->state != NGX_HTTP_LINEGATE_REDIS_CONNECTED) {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      NGX_HTTP_LINEGATE_LOG "redis not connected");
        return NGX_ERROR;
    }

    pl = ngx_alloc(sizeof(ngx_http_linegate_redis_pipeline_t),
                   r->connection->log);
    if (pl == NULL) {
        return NGX_ERROR;
    }

    ngx_memzero(pl, sizeof(ngx_http_linegate_redis_pipeline_t));
    pl->cmd.r = r;
    pl->cmd.handler = handler;
    pl->cmd.script = -1;

    if (ngx_http_linegate_redis_attach(&pl->cmd) != NGX_OK) {
        ngx_free(pl);
        return NGX_ERROR;
    }

    /*
     * hiredis appends them to its output buffer now and writes them with
     * the other requests' commands at the next turn of the event loop.
     */
    for (i = 0; i < ncmds; i++) {
        if (ngx_http_linegate_redis_append(r->pool, args[i].argc,
                                           args[i].argv, args[i].argvlen,
                                           ngx_http_linegate_redis_pipeline_cb,
                                           pl)
            != NGX_OK)
        {
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          NGX_HTTP_LINEGATE_LOG "redis pipeline not sent");

            /* the commands already queued still call back: they free it */
            ngx_http_linegate_redis_release(&pl->cmd);

            if (pl->queued == 0) {
                ngx_free(pl);
            }

            return NGX_ERROR;
        }

        pl->queued++;
    }

    pl->cmd.timer.handler = ngx_http_linegate_redis_cmd_timeout;
    pl->cmd.timer.data = &ngx_http_linegate_redis_dummy;
    pl->cmd.timer.log = r->connection->log;
    ngx_add_timer(&pl->cmd.timer, rd->lmcf->redis_command_timeout);

    return NGX_OK;
}


static ngx_int_t
ngx_http_linegate_redis_send(ngx_http_linegate_redis_cmd_t *cmd,
    ngx_uint_t eval)
{
    int                              i, argc;
    u_char                           nkeys[NGX_INT_T_LEN];
    ngx_str_t                        src, *sha;
    const char                      *argv[NGX_HTTP_LINEGATE_REDIS_MAX_ARGS];
    size_t                           argvlen[NGX_HTTP_LINEGATE_REDIS_MAX_ARGS];
    ngx_http_linegate_redis_t       *rd;
    ngx_http_linegate_redis_args_t  *a;

    rd = &ngx_http_linegate_redis;

    if (rd->state != NGX_HTTP_LINEGATE_REDIS_CONNECTED) {
        ngx_log_error(NGX_LOG_WARN, cmd->r->connection->log, 0,
                      NGX_HTTP_LINEGATE_LOG "redis not connected");
        return NGX_ERROR;
    }

    a = cmd->args;
    argc = 0;

    if (cmd->script >= 0) {
        if (eval) {
            ngx_http_linegate_script_source(cmd->script, &src);
            argv[argc] = "EVAL";
            argvlen[argc++] = 4;
            argv[argc] = (const char *) src.data;
            argvlen[argc++] = src.len;

        } else {
            sha = ngx_http_linegate_script_sha(cmd->script);
            argv[argc] = "EVALSHA";
            argvlen[argc++] = 7;
            argv[argc] = (const char *) sha->data;
            argvlen[argc++] = sha->len;
        }

        argv[argc] = (const char *) nkeys;
        argvlen[argc++] = ngx_sprintf(nkeys, "%d", cmd->nkeys) - nkeys;
    }

    for (i = 0; i < a->argc; i++) {
        argv[argc] = a->argv[i];
        argvlen[argc++] = a->argvlen[i];
    }

    if (ngx_http_linegate_redis_append(cmd->r->pool, argc, argv, argvlen,
                                       ngx_http_linegate_redis_reply_cb, cmd)
        != NGX_OK)
    {
        ngx_log_error(NGX_LOG_ERR, cmd->r->connection->log, 0,
                      NGX_HTTP_LINEGATE_LOG "redis command not sent");
        return NGX_ERROR;
    }

    if (cmd->script >= 0 && rd->lmcf->redis_wait_replicas > 0
        && ngx_http_linegate_redis_acknowledged(cmd->script))
    {
        /* written with the script: same round trip */
        (void) ngx_http_linegate_redis_send_wait(cmd);
    }

    if (!cmd->timer.timer_set) {
        cmd->timer.handler = ngx_http_linegate_redis_cmd_timeout;
        cmd->timer.data = &ngx_http_linegate_redis_dummy;
        cmd->timer.log = cmd->r->connection->log;
        ngx_add_timer(&cmd->timer, rd->lmcf->redis_command_timeout);
    }

    return NGX_OK;
}


/*
 * A command in the Redis protocol, formatted in the request's pool and
 * handed to hiredis as is: hiredis's own formatting (sds strings grown
 * with printf-like calls, a malloc or two per argument) was ~10% of a
 * worker's CPU on the preview.
 */
static ngx_int_t
ngx_http_linegate_redis_append(ngx_pool_t *pool, int argc, const char **argv,
    const size_t *argvlen, redisCallbackFn *fn, void *privdata)
{
    int      i, rc;
    size_t   len;
    u_char  *buf, *p;

    /* "*<argc>\r\n", then "$<len>\r\n<bytes>\r\n" per argument */
    len = 1 + NGX_INT_T_LEN + 2;

    for (i = 0; i < argc; i++) {
        len += 1 + NGX_SIZE_T_LEN + 2 + argvlen[i] + 2;
    }

    /* no pool: a durable write, formatted in memory freed right after */
    buf = pool ? ngx_pnalloc(pool, len) : ngx_alloc(len, ngx_cycle->log);
    if (buf == NULL) {
        return NGX_ERROR;
    }

    p = ngx_sprintf(buf, "*%d\r\n", argc);

    for (i = 0; i < argc; i++) {
        p = ngx_sprintf(p, "$%uz\r\n", argvlen[i]);

        if (argvlen[i]) {   /* an empty argument may be NULL */
            p = ngx_cpymem(p, argv[i], argvlen[i]);
        }

        *p++ = '\r';
        *p++ = '\n';
    }

    /* hiredis copies the bytes into its output buffer */
    rc = redisAsyncFormattedCommand(ngx_http_linegate_redis.ac, fn, privdata,
                                    (const char *) buf, p - buf);

    if (pool == NULL) {
        ngx_free(buf);
    }

    return rc == REDIS_OK ? NGX_OK : NGX_ERROR;
}


static void
ngx_http_linegate_redis_reply_cb(redisAsyncContext *ac, void *data,
    void *privdata)
{
    redisReply                          *reply;
    ngx_http_request_t                  *r;
    ngx_http_linegate_redis_cmd_t       *cmd;

    cmd = privdata;
    reply = data;
    r = cmd->r;

    if (r == NULL || ngx_http_linegate_redis.exiting) {
        if (cmd->waits) {
            /* freed by the last WAIT's callback, owed after this one */
            cmd->have = 1;
            cmd->stash = NULL;
            return;
        }

        /* a late reply for a request that timed out: nobody waits */
        if (cmd->timer.timer_set) {
            ngx_del_timer(&cmd->timer);
        }
        ngx_http_linegate_redis_release(cmd);
        ngx_free(cmd);
        return;
    }

    if (reply != NULL && reply->type == REDIS_REPLY_ERROR
        && cmd->script >= 0 && !cmd->retried
        && ngx_strncmp(reply->str, "NOSCRIPT", 8) == 0)
    {
        /* the script cache was flushed or Redis failed over: send it */
        cmd->retried = 1;

        if (ngx_http_linegate_redis_send(cmd, 1) == NGX_OK) {
            return;
        }

        reply = NULL;
    }

    if (reply == NULL) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      NGX_HTTP_LINEGATE_LOG "redis connection lost "
                      "with a command in flight");

    } else if (reply->type == REDIS_REPLY_ERROR) {
        ngx_http_linegate_redis_log_error(r->connection->log, reply);
        reply = NULL;
    }

    if (cmd->waits) {
        /* answered once the replicas have acknowledged it, or not */
        cmd->have = 1;
        cmd->stash = (reply != NULL)
                     ? ngx_http_linegate_redis_copy(r->pool, reply) : NULL;
        return;
    }

    ngx_http_linegate_redis_finish(cmd, reply);
}


/*
 * The writes a 200 stands on (linegate_redis_wait): the creation's commit
 * and the invoice it is billed by, the confirm's recorded line, the
 * settlements of a payment (GET's reconciliation, the webhooks).
 */
static ngx_uint_t
ngx_http_linegate_redis_acknowledged(ngx_int_t script)
{
    switch (script) {

    case NGX_HTTP_LINEGATE_SCRIPT_LR_CREATE:
    case NGX_HTTP_LINEGATE_SCRIPT_LR_INVOICE_STORE:
    case NGX_HTTP_LINEGATE_SCRIPT_LR_RESOLVE:
    case NGX_HTTP_LINEGATE_SCRIPT_PV_RECORD:
    case NGX_HTTP_LINEGATE_SCRIPT_WH_INVOICE:
    case NGX_HTTP_LINEGATE_SCRIPT_WH_SUBSCRIPTION:
        return 1;

    default:
        return 0;
    }
}


static ngx_int_t
ngx_http_linegate_redis_send_wait(ngx_http_linegate_redis_cmd_t *cmd)
{
    int                             argc;
    u_char                          n[NGX_INT_T_LEN], ms[NGX_INT_T_LEN];
    const char                     *argv[3];
    size_t                          argvlen[3];
    ngx_http_linegate_main_conf_t  *lmcf;

    lmcf = ngx_http_linegate_redis.lmcf;

    argc = 0;
    argv[argc] = "WAIT";
    argvlen[argc++] = 4;
    argv[argc] = (const char *) n;
    argvlen[argc++] = ngx_sprintf(n, "%i", lmcf->redis_wait_replicas) - n;
    argv[argc] = (const char *) ms;
    argvlen[argc++] = ngx_sprintf(ms, "%M", lmcf->redis_wait_timeout) - ms;

    if (ngx_http_linegate_redis_append(cmd->r->pool, argc, argv, argvlen,
                                       ngx_http_linegate_redis_wait_cb, cmd)
        != NGX_OK)
    {
        /* not sent: the answer does not wait for replicas, say so */
        ngx_log_error(NGX_LOG_ERR, cmd->r->connection->log, 0,
                      NGX_HTTP_LINEGATE_LOG "redis WAIT not sent");
        return NGX_ERROR;
    }

    cmd->waits++;

    return NGX_OK;
}


/*
 * WAIT's answer, after the script's: the script's reply goes to the
 * handler only when enough replicas have it. Fewer is an unknown outcome
 * (NULL), exactly as a lost connection: the write may or may not survive
 * a failover, and every handler repairs an unknown outcome already.
 */
static void
ngx_http_linegate_redis_wait_cb(redisAsyncContext *ac, void *data,
    void *privdata)
{
    redisReply                     *reply;
    ngx_http_request_t             *r;
    ngx_http_linegate_redis_cmd_t  *cmd;
    ngx_http_linegate_main_conf_t  *lmcf;

    cmd = privdata;
    reply = data;
    lmcf = ngx_http_linegate_redis.lmcf;

    cmd->waits--;

    if (!cmd->have || cmd->waits) {
        /* the WAIT of an EVALSHA answered NOSCRIPT: the EVAL has its own */
        return;
    }

    r = cmd->r;

    if (r == NULL || ngx_http_linegate_redis.exiting) {
        if (cmd->timer.timer_set) {
            ngx_del_timer(&cmd->timer);
        }

        ngx_http_linegate_redis_release(cmd);
        ngx_free(cmd);
        return;
    }

    if (reply == NULL || reply->type != REDIS_REPLY_INTEGER
        || reply->integer < lmcf->redis_wait_replicas)
    {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      NGX_HTTP_LINEGATE_LOG "redis: %V acknowledged by %i "
                      "of %i replicas within %M ms: its outcome is unknown",
                      ngx_http_linegate_script_name(cmd->script),
                      (reply != NULL && reply->type == REDIS_REPLY_INTEGER)
                      ? (ngx_int_t) reply->integer : (ngx_int_t) 0,
                      lmcf->redis_wait_replicas, lmcf->redis_wait_timeout);

        ngx_http_linegate_metrics_inc1(NGX_HTTP_LINEGATE_M_REDIS_ERRORS,
                                       "kind", "unacknowledged");

        ngx_http_linegate_redis_finish(cmd, NULL);
        return;
    }

    ngx_http_linegate_redis_finish(cmd, cmd->stash);
}


/* the one answer to a command or a pipeline; cmd is freed */
static void
ngx_http_linegate_redis_finish(ngx_http_linegate_redis_cmd_t *cmd,
    redisReply *reply)
{
    ngx_connection_t    *c;
    ngx_http_request_t  *r;

    r = cmd->r;
    c = r->connection;

    if (cmd->timer.timer_set) {
        ngx_del_timer(&cmd->timer);
    }

    ngx_http_linegate_redis_release(cmd);

    if (reply != NULL) {
        ngx_http_linegate_metrics_observe(NGX_HTTP_LINEGATE_M_REDIS_LATENCY,
            NULL, NULL,
            (ngx_msec_int_t) (ngx_http_linegate_metrics_now_us()
                              - cmd->sent_us));

    } else {
        ngx_http_linegate_metrics_inc1(NGX_HTTP_LINEGATE_M_REDIS_ERRORS,
                                       "kind", "failed");
    }

    /* after the handler: a pipeline's array reply lives in cmd */
    cmd->handler(r, reply);
    ngx_free(cmd);

    ngx_http_run_posted_requests(c);
}


/*
 * One reply of a pipeline, in order. Those before the last are copied to
 * the request's pool (hiredis frees a reply when its callback returns);
 * the last one is hiredis's own, valid while the handler runs.
 */
static void
ngx_http_linegate_redis_pipeline_cb(redisAsyncContext *ac, void *data,
    void *privdata)
{
    redisReply                          *reply;
    ngx_http_request_t                  *r;
    ngx_http_linegate_redis_pipeline_t  *pl;

    reply = data;
    pl = privdata;
    pl->queued--;
    r = pl->cmd.r;

    if (r == NULL || ngx_http_linegate_redis.exiting) {
        /* the request gave up (timed out, or was never answered here) */
        ngx_http_linegate_redis_release(&pl->cmd);
        ngx_http_linegate_redis_pipeline_drop(pl);
        return;
    }

    if (reply == NULL) {
        pl->lost = 1;

    } else if (reply->type == REDIS_REPLY_ERROR) {
        /* as for a command: logged, and the handler is told NULL */
        ngx_http_linegate_redis_log_error(r->connection->log, reply);
        pl->failed = 1;

    } else if (pl->queued) {
        reply = ngx_http_linegate_redis_copy(r->pool, reply);
        if (reply == NULL) {
            pl->failed = 1;
        }
    }

    pl->element[pl->received++] = reply;

    if (pl->queued) {
        return;
    }

    if (pl->lost) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      NGX_HTTP_LINEGATE_LOG "redis connection lost "
                      "with a command in flight");
    }

    if (pl->lost || pl->failed) {
        reply = NULL;

    } else {
        pl->array.type = REDIS_REPLY_ARRAY;
        pl->array.elements = pl->received;
        pl->array.element = pl->element;
        reply = &pl->array;
    }

    ngx_http_linegate_redis_finish(&pl->cmd, reply);
}


/* nobody waits for this pipeline: freed with its last callback */
static void
ngx_http_linegate_redis_pipeline_drop(ngx_http_linegate_redis_pipeline_t *pl)
{
    if (pl->queued) {
        return;
    }

    if (pl->cmd.timer.timer_set) {
        ngx_del_timer(&pl->cmd.timer);
    }

    ngx_free(pl);
}


/* a reply tree into a pool: strings keep hiredis's trailing NUL */
static redisReply *
ngx_http_linegate_redis_copy(ngx_pool_t *pool, redisReply *src)
{
    size_t       i;
    redisReply  *dst;

    dst = ngx_palloc(pool, sizeof(redisReply));
    if (dst == NULL) {
        return NULL;
    }

    *dst = *src;

    if (src->str != NULL) {
        dst->str = ngx_pnalloc(pool, src->len + 1);
        if (dst->str == NULL) {
            return NULL;
        }

        ngx_memcpy(dst->str, src->str, src->len + 1);
    }

    if (src->element == NULL) {
        return dst;
    }

    dst->element = ngx_palloc(pool, src->elements * sizeof(redisReply *));
    if (dst->element == NULL) {
        return NULL;
    }

    for (i = 0; i < src->elements; i++) {
        dst->element[i] = ngx_http_linegate_redis_copy(pool, src->element[i]);
        if (dst->element[i] == NULL) {
            return NULL;
        }
    }

    return dst;
}


static void
ngx_http_linegate_redis_log_error(ngx_log_t *log, redisReply *reply)
{
    ngx_http_linegate_redis_t  *rd;

    rd = &ngx_http_linegate_redis;

    if (rd->sentinel && ngx_strncmp(reply->str, "READONLY", 8) == 0
        && !rd->rediscover.posted)
    {
        /* the master became a replica: find the new one (out of hiredis's
         * callback: the connection is freed there) */
        ngx_post_event(&rd->rediscover, &ngx_posted_events);
    }

    if (ngx_http_linegate_redis_unavailable(reply)) {
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      NGX_HTTP_LINEGATE_LOG "redis unavailable: \"%*s\"",
                      (size_t) ngx_min(reply->len, 200), reply->str);

    } else {
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      NGX_HTTP_LINEGATE_LOG "redis error: \"%*s\"",
                      (size_t) ngx_min(reply->len, 300), reply->str);
    }
}


static ngx_int_t
ngx_http_linegate_redis_unavailable(redisReply *reply)
{
    ngx_str_t  *e;

    for (e = ngx_http_linegate_redis_unavailable_errors; e->len; e++) {
        if (reply->len >= e->len
            && ngx_strncmp(reply->str, e->data, e->len) == 0
            && (reply->len == e->len || reply->str[e->len] == ' '))
        {
            return 1;
        }
    }

    return 0;
}


static void
ngx_http_linegate_redis_cmd_timeout(ngx_event_t *ev)
{
    ngx_connection_t                    *c;
    ngx_http_request_t                  *r;
    ngx_http_linegate_redis_cmd_t       *cmd;

    cmd = (ngx_http_linegate_redis_cmd_t *)
          ((u_char *) ev - offsetof(ngx_http_linegate_redis_cmd_t, timer));
    r = cmd->r;

    /*
     * The command stays queued in hiredis: its reply, if it ever comes, is
     * dropped by the reply callback, which frees cmd. It may still run:
     * the handler's NULL means "unknown", not "nothing happened".
     */
    ngx_http_linegate_redis_release(cmd);

    ngx_http_linegate_metrics_inc1(NGX_HTTP_LINEGATE_M_REDIS_ERRORS, "kind",
                                   "timeout");

    if (r == NULL) {
        return;
    }

    c = r->connection;

    ngx_log_error(NGX_LOG_ERR, c->log, 0,
                  NGX_HTTP_LINEGATE_LOG "redis command timed out");

    cmd->handler(r, NULL);
    ngx_http_run_posted_requests(c);
}


ngx_int_t
ngx_http_linegate_reply_int(redisReply *reply, ngx_uint_t i, int64_t *n)
{
    redisReply  *e;

    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY
        || i >= reply->elements)
    {
        return NGX_ERROR;
    }

    e = reply->element[i];

    if (e->type == REDIS_REPLY_INTEGER) {
        *n = e->integer;
        return NGX_OK;
    }

    if (e->type == REDIS_REPLY_STRING) {
        *n = ngx_atoi((u_char *) e->str, e->len);
        return *n == NGX_ERROR ? NGX_ERROR : NGX_OK;
    }

    return NGX_ERROR;
}


ngx_int_t
ngx_http_linegate_reply_str(redisReply *reply, ngx_uint_t i, ngx_str_t *s)
{
    redisReply  *e;

    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY
        || i >= reply->elements)
    {
        return NGX_ERROR;
    }

    e = reply->element[i];

    if (e->type != REDIS_REPLY_STRING && e->type != REDIS_REPLY_STATUS) {
        return NGX_ERROR;
    }

    s->data = (u_char *) e->str;
    s->len = e->len;

    return NGX_OK;
}


/* requests and their commands */

/*
 * A command answers its request only while the request lives: the
 * request's pool cleanup (run however the request ends: finalized,
 * terminated, its client gone) detaches it, so that a late reply or a
 * timeout never touches freed memory.
 */
static ngx_int_t
ngx_http_linegate_redis_attach(ngx_http_linegate_redis_cmd_t *cmd)
{
    ngx_pool_cleanup_t  *cln;

    cln = ngx_pool_cleanup_add(cmd->r->pool, 0);
    if (cln == NULL) {
        return NGX_ERROR;
    }

    cln->handler = ngx_http_linegate_redis_detach;
    cln->data = cmd;
    cmd->cln = cln;
    cmd->sent_us = ngx_http_linegate_metrics_now_us();

    return NGX_OK;
}


static void
ngx_http_linegate_redis_detach(void *data)
{
    ngx_http_linegate_redis_cmd_t  *cmd = data;

    ngx_log_debug0(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                   NGX_HTTP_LINEGATE_LOG "request freed with a redis "
                   "command in flight: its reply is dropped");

    /* the pool's cleanup entry itself is being run: just forget it */
    cmd->cln = NULL;
    cmd->r = NULL;
    cmd->timer.log = ngx_cycle->log;
}


/* the command no longer answers its request (answered, or gave up) */
static void
ngx_http_linegate_redis_release(ngx_http_linegate_redis_cmd_t *cmd)
{
    if (cmd->cln != NULL) {
        cmd->cln->handler = NULL;
        cmd->cln = NULL;
    }

    cmd->r = NULL;
    cmd->timer.log = ngx_cycle->log;
}


/* durable writes */

ngx_int_t
ngx_http_linegate_redis_durable(ngx_log_t *log,
    ngx_http_linegate_script_id_e script, int nkeys,
    ngx_http_linegate_redis_args_t *args, const char *what)
{
    return ngx_http_linegate_redis_durable_queue(log, script, nkeys, args,
                                                 what);
}


ngx_int_t
ngx_http_linegate_redis_durable_command(ngx_log_t *log,
    ngx_http_linegate_redis_args_t *args, const char *what)
{
    return ngx_http_linegate_redis_durable_queue(log, -1, 0, args, what);
}


/* script: an ngx_http_linegate_script_id_e, or -1 for a plain command */
static ngx_int_t
ngx_http_linegate_redis_durable_queue(ngx_log_t *log, ngx_int_t script,
    int nkeys, ngx_http_linegate_redis_args_t *args, const char *what)
{
    int                                 i;
    size_t                              len, wlen;
    u_char                             *p;
    ngx_http_linegate_redis_t          *rd;
    ngx_http_linegate_redis_durable_t  *d;

    rd = &ngx_http_linegate_redis;

    if (args->argc <= 0
        || (script >= 0
            && (args->argc + 3 > NGX_HTTP_LINEGATE_REDIS_MAX_ARGS
                || nkeys > args->argc)))
    {
        ngx_log_error(NGX_LOG_ALERT, log, 0,
                      NGX_HTTP_LINEGATE_LOG "bad arguments for durable "
                      "write \"%s\"", what);
        return NGX_ERROR;
    }

    if (rd->lmcf == NULL) {
        ngx_log_error(NGX_LOG_ALERT, log, 0,
                      NGX_HTTP_LINEGATE_LOG "durable write \"%s\" without "
                      "linegate_redis", what);
        return NGX_ERROR;
    }

    if (rd->ndurable >= NGX_HTTP_LINEGATE_DURABLE_MAX) {
        ngx_log_error(NGX_LOG_ALERT, log, 0,
                      NGX_HTTP_LINEGATE_LOG "durable write \"%s\" lost: "
                      "%ui writes already wait for Redis", what,
                      rd->ndurable);
        return NGX_ERROR;
    }

    /* one block: the entry, the arguments' bytes, what */
    wlen = ngx_strlen(what);
    len = sizeof(ngx_http_linegate_redis_durable_t) + wlen + 1;

    for (i = 0; i < args->argc; i++) {
        len += args->argvlen[i];
    }

    d = ngx_alloc(len, log);
    if (d == NULL) {
        ngx_log_error(NGX_LOG_ALERT, log, 0,
                      NGX_HTTP_LINEGATE_LOG "durable write \"%s\" lost: "
                      "out of memory", what);
        return NGX_ERROR;
    }

    ngx_memzero(d, sizeof(ngx_http_linegate_redis_durable_t));
    d->script = script;
    d->nkeys = nkeys;

    p = (u_char *) (d + 1);
    d->args.argc = args->argc;

    for (i = 0; i < args->argc; i++) {
        d->args.argv[i] = (const char *) p;
        d->args.argvlen[i] = args->argvlen[i];

        if (args->argvlen[i]) {     /* an empty argument may be NULL */
            p = ngx_cpymem(p, args->argv[i], args->argvlen[i]);
        }
    }

    d->what = (char *) p;
    ngx_memcpy(p, what, wlen + 1);

    ngx_queue_insert_tail(&rd->durable, &d->queue);
    rd->ndurable++;

    if (rd->state == NGX_HTTP_LINEGATE_REDIS_CONNECTED) {
        (void) ngx_http_linegate_redis_durable_send(d);
    }

    ngx_http_linegate_redis_durable_arm();

    return NGX_OK;
}


ngx_uint_t
ngx_http_linegate_redis_connected(void)
{
    return ngx_http_linegate_redis.state == NGX_HTTP_LINEGATE_REDIS_CONNECTED;
}


ngx_uint_t
ngx_http_linegate_redis_durable_pending(void)
{
    return ngx_http_linegate_redis.ndurable;
}


/* send every write that waits and is not in flight */
static void
ngx_http_linegate_redis_durable_flush(void)
{
    ngx_queue_t                        *q;
    ngx_http_linegate_redis_t          *rd;
    ngx_http_linegate_redis_durable_t  *d;

    rd = &ngx_http_linegate_redis;

    for (q = ngx_queue_head(&rd->durable);
         q != ngx_queue_sentinel(&rd->durable);
         q = ngx_queue_next(q))
    {
        if (rd->state != NGX_HTTP_LINEGATE_REDIS_CONNECTED) {
            return;
        }

        d = ngx_queue_data(q, ngx_http_linegate_redis_durable_t, queue);

        if (!d->sent) {
            (void) ngx_http_linegate_redis_durable_send(d);
        }
    }
}


static ngx_int_t
ngx_http_linegate_redis_durable_send(ngx_http_linegate_redis_durable_t *d)
{
    int         i, argc;
    u_char      nkeys[NGX_INT_T_LEN];
    ngx_str_t   src, *sha;
    const char *argv[NGX_HTTP_LINEGATE_REDIS_MAX_ARGS];
    size_t      argvlen[NGX_HTTP_LINEGATE_REDIS_MAX_ARGS];

    argc = 0;

    if (d->script >= 0) {
        if (d->eval) {
            ngx_http_linegate_script_source(d->script, &src);
            argv[argc] = "EVAL";
            argvlen[argc++] = 4;
            argv[argc] = (const char *) src.data;
            argvlen[argc++] = src.len;

        } else {
            sha = ngx_http_linegate_script_sha(d->script);
            argv[argc] = "EVALSHA";
            argvlen[argc++] = 7;
            argv[argc] = (const char *) sha->data;
            argvlen[argc++] = sha->len;
        }

        argv[argc] = (const char *) nkeys;
        argvlen[argc++] = ngx_sprintf(nkeys, "%d", d->nkeys) - nkeys;
    }

    for (i = 0; i < d->args.argc; i++) {
        argv[argc] = d->args.argv[i];
        argvlen[argc++] = d->args.argvlen[i];
    }

    if (ngx_http_linegate_redis_append(NULL, argc, argv, argvlen,
                                       ngx_http_linegate_redis_durable_cb, d)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    d->sent = 1;
    d->attempts++;

    return NGX_OK;
}


static void
ngx_http_linegate_redis_durable_cb(redisAsyncContext *ac, void *data,
    void *privdata)
{
    redisReply                         *reply;
    ngx_http_linegate_redis_t          *rd;
    ngx_http_linegate_redis_durable_t  *d;

    rd = &ngx_http_linegate_redis;
    reply = data;
    d = privdata;
    d->sent = 0;

    if (d->done) {
        /* given up on (the worker exits): only its memory remains */
        ngx_free(d);
        return;
    }

    if (reply != NULL && reply->type == REDIS_REPLY_ERROR) {

        if (d->script >= 0 && !d->eval
            && ngx_strncmp(reply->str, "NOSCRIPT", 8) == 0)
        {
            d->eval = 1;

            if (rd->state == NGX_HTTP_LINEGATE_REDIS_CONNECTED
                && ngx_http_linegate_redis_durable_send(d) == NGX_OK)
            {
                return;
            }

            /* the retry timer sends it again */
            return;
        }

        if (!ngx_http_linegate_redis_unavailable(reply)) {
            /* a refusal that no retry changes (a bug of ours, a type) */
            ngx_log_error(NGX_LOG_ALERT, rd->log, 0,
                          NGX_HTTP_LINEGATE_LOG "durable write \"%s\" "
                          "refused by redis: \"%*s\"", d->what,
                          (size_t) ngx_min(reply->len, 200), reply->str);
            goto done;
        }
    }

    if (reply == NULL || reply->type == REDIS_REPLY_ERROR) {
        /* no answer is not "nothing happened": it is sent again */
        ngx_log_error(NGX_LOG_ERR, rd->log, 0,
                      NGX_HTTP_LINEGATE_LOG "durable write \"%s\" not "
                      "answered (attempt %ui%s%*s), will retry", d->what,
                      d->attempts, reply ? ": " : "",
                      reply ? (size_t) ngx_min(reply->len, 200) : 0,
                      reply ? reply->str : "");

        if (!rd->exiting) {
            ngx_http_linegate_redis_durable_arm();
        }

        return;
    }

    ngx_log_error(NGX_LOG_INFO, rd->log, 0,
                  NGX_HTTP_LINEGATE_LOG "durable write \"%s\" done "
                  "(attempt %ui)", d->what, d->attempts);

done:

    ngx_queue_remove(&d->queue);
    rd->ndurable--;
    ngx_free(d);

    if (rd->ndurable == 0) {
        rd->durable_attempts = 0;

        if (rd->durable_timer.timer_set) {
            ngx_del_timer(&rd->durable_timer);
        }
    }
}


/*
 * The retry timer runs while writes wait. It is not cancelable: a worker
 * draining after a reload stays for its durable writes, but only
 * NGX_HTTP_LINEGATE_DURABLE_DRAIN ms; then it becomes cancelable and the
 * writes still waiting are logged at alert when the worker exits.
 */
static void
ngx_http_linegate_redis_durable_arm(void)
{
    ngx_msec_t                  delay;
    ngx_http_linegate_redis_t  *rd;

    rd = &ngx_http_linegate_redis;

    if (rd->ndurable == 0 || rd->exiting || ngx_terminate) {
        return;
    }

    if (ngx_exiting) {
        if (rd->drain_start == 0) {
            rd->drain_start = ngx_current_msec ? ngx_current_msec : 1;
        }

        if (ngx_current_msec - rd->drain_start
            >= NGX_HTTP_LINEGATE_DURABLE_DRAIN)
        {
            rd->durable_timer.cancelable = 1;
        }
    }

    if (rd->durable_timer.timer_set) {
        return;
    }

    delay = NGX_HTTP_LINEGATE_BACKOFF_MIN << ngx_min(rd->durable_attempts, 4);
    delay = ngx_min(delay, NGX_HTTP_LINEGATE_BACKOFF_MAX);
    rd->durable_attempts++;

    ngx_add_timer(&rd->durable_timer, delay);
}


static void
ngx_http_linegate_redis_durable_retry(ngx_event_t *ev)
{
    ngx_http_linegate_redis_t  *rd;

    rd = &ngx_http_linegate_redis;

    if (rd->state == NGX_HTTP_LINEGATE_REDIS_CONNECTED) {
        ngx_http_linegate_redis_durable_flush();

    } else if (rd->state == NGX_HTTP_LINEGATE_REDIS_DISCONNECTED
               && !rd->reconnect_timer.timer_set)
    {
        /* a draining worker's lost connection: it is needed again */
        ngx_http_linegate_redis_connect();
    }

    ngx_http_linegate_redis_durable_arm();
}


/* the connection */

ngx_int_t
ngx_http_linegate_redis_init_process(ngx_cycle_t *cycle)
{
    ngx_http_linegate_redis_t      *rd;
    ngx_http_linegate_main_conf_t  *lmcf;

    lmcf = ngx_http_cycle_get_module_main_conf(cycle,
                                               ngx_http_linegate_module);
    if (lmcf == NULL || !lmcf->redis_configured) {
        return NGX_OK;
    }

    rd = &ngx_http_linegate_redis;
    ngx_memzero(rd, sizeof(ngx_http_linegate_redis_t));

    rd->lmcf = lmcf;
    rd->log = cycle->log;
    rd->host = lmcf->redis_host;
    rd->port = lmcf->redis_port;

    ngx_http_linegate_redis_dummy.fd = (ngx_socket_t) -1;
    rd->connect_timer.data = &ngx_http_linegate_redis_dummy;
    rd->reconnect_timer.data = &ngx_http_linegate_redis_dummy;
    rd->keepalive_timer.data = &ngx_http_linegate_redis_dummy;

    rd->connect_timer.handler = ngx_http_linegate_redis_connect_timeout;
    rd->connect_timer.log = cycle->log;
    rd->connect_timer.cancelable = 1;
    rd->reconnect_timer.handler = ngx_http_linegate_redis_reconnect;
    rd->reconnect_timer.log = cycle->log;
    rd->reconnect_timer.cancelable = 1;
    rd->keepalive_timer.handler = ngx_http_linegate_redis_keepalive;
    rd->keepalive_timer.log = cycle->log;
    rd->keepalive_timer.cancelable = 1;

    /* not cancelable: a draining worker waits for its durable writes */
    ngx_queue_init(&rd->durable);
    rd->durable_timer.data = &ngx_http_linegate_redis_dummy;
    rd->durable_timer.handler = ngx_http_linegate_redis_durable_retry;
    rd->durable_timer.log = cycle->log;

    if (lmcf->redis_sentinels) {
        rd->sentinel = 1;
        rd->rediscover.data = &ngx_http_linegate_redis_dummy;
        rd->rediscover.handler = ngx_http_linegate_redis_rediscover;
        rd->rediscover.log = cycle->log;
        ngx_http_linegate_sentinel_init(lmcf, cycle->log,
                              ngx_http_linegate_redis_master_found,
                              ngx_http_linegate_redis_master_switched);
    }

    ngx_http_linegate_redis_connect();

    return NGX_OK;
}


void
ngx_http_linegate_redis_exit_process(ngx_cycle_t *cycle)
{
    redisAsyncContext                  *ac;
    ngx_queue_t                        *q;
    ngx_http_linegate_redis_t          *rd;
    ngx_http_linegate_redis_durable_t  *d;

    rd = &ngx_http_linegate_redis;
    rd->exiting = 1;

    if (rd->lmcf == NULL) {
        return;
    }

    if (rd->counted) {
        ngx_http_linegate_redis_gauge(-1);
    }

    if (rd->sentinel) {
        ngx_http_linegate_sentinel_exit();

        if (rd->rediscover.posted) {
            ngx_delete_posted_event(&rd->rediscover);
        }
    }

    /* what could not be written: the error log is the last record */
    while (!ngx_queue_empty(&rd->durable)) {
        q = ngx_queue_head(&rd->durable);
        ngx_queue_remove(q);
        d = ngx_queue_data(q, ngx_http_linegate_redis_durable_t, queue);

        ngx_log_error(NGX_LOG_ALERT, cycle->log, 0,
                      NGX_HTTP_LINEGATE_LOG "durable write \"%s\" lost: "
                      "the worker exits with Redis unreachable after %ui "
                      "attempts", d->what, d->attempts);

        if (!d->sent) {
            ngx_free(d);

        } else {
            /* hiredis answers it NULL when the context is freed below */
            d->done = 1;
        }
    }

    if (rd->ac) {
        ac = rd->ac;
        rd->ac = NULL;
        rd->state = NGX_HTTP_LINEGATE_REDIS_DISCONNECTED;
        redisAsyncFree(ac);
    }
}


static void
ngx_http_linegate_redis_connect(void)
{
    ngx_http_linegate_redis_t  *rd;

    rd = &ngx_http_linegate_redis;

    if (rd->sentinel && !rd->master_known) {
        /* requests are answered 503 meanwhile, as while connecting */
        rd->state = NGX_HTTP_LINEGATE_REDIS_CONNECTING;
        ngx_http_linegate_sentinel_discover();
        return;
    }

    ngx_http_linegate_redis_connect_to();
}


static void
ngx_http_linegate_redis_master_found(ngx_int_t rc, ngx_str_t *host,
    ngx_int_t port)
{
    ngx_http_linegate_redis_t  *rd;

    rd = &ngx_http_linegate_redis;

    if (rd->exiting || rd->state != NGX_HTTP_LINEGATE_REDIS_CONNECTING
        || rd->ac != NULL)
    {
        return;
    }

    if (rc != NGX_OK) {
        ngx_http_linegate_redis_lost();
        return;
    }

    rd->host = *host;    /* the sentinel module's buffer, kept until next */
    rd->port = port;
    rd->master_known = 1;

    ngx_http_linegate_redis_connect_to();
}


/* a sentinel announced a failover of our master */
static void
ngx_http_linegate_redis_master_switched(void)
{
    ngx_http_linegate_redis_t  *rd;

    rd = &ngx_http_linegate_redis;

    if (!rd->rediscover.posted) {
        ngx_post_event(&rd->rediscover, &ngx_posted_events);
    }
}


static void
ngx_http_linegate_redis_rediscover(ngx_event_t *ev)
{
    ngx_http_linegate_redis_t  *rd;

    rd = &ngx_http_linegate_redis;

    if (rd->exiting || rd->ac == NULL) {
        /* not connected: the next connect asks the sentinels anyway */
        rd->master_known = 0;
        return;
    }

    ngx_http_linegate_redis_drop("master changed");
}


static void
ngx_http_linegate_redis_connect_to(void)
{
    redisAsyncContext              *ac;
    ngx_http_linegate_redis_t      *rd;
    ngx_http_linegate_main_conf_t  *lmcf;

    rd = &ngx_http_linegate_redis;
    lmcf = rd->lmcf;

    if (lmcf->redis_unix.len) {
        ac = redisAsyncConnectUnix((char *) lmcf->redis_unix.data);

    } else {
        /* an IP address, resolved at load or given by a sentinel */
        ac = redisAsyncConnect((char *) rd->host.data, (int) rd->port);
    }

    if (ac == NULL) {
        ngx_log_error(NGX_LOG_ERR, rd->log, 0,
                      NGX_HTTP_LINEGATE_LOG "redis: out of memory");
        ngx_http_linegate_redis_lost();
        return;
    }

    if (ac->err) {
        ngx_log_error(NGX_LOG_ERR, rd->log, 0,
                      NGX_HTTP_LINEGATE_LOG "redis connect failed: %s",
                      ac->errstr);
        redisAsyncFree(ac);
        ngx_http_linegate_redis_lost();
        return;
    }

    if (ngx_http_linegate_redis_event_attach(ac, rd->log) != NGX_OK) {
        redisAsyncFree(ac);
        ngx_http_linegate_redis_lost();
        return;
    }

    redisAsyncSetConnectCallback(ac, ngx_http_linegate_redis_connect_cb);
    redisAsyncSetDisconnectCallback(ac,
                                    ngx_http_linegate_redis_disconnect_cb);

    rd->ac = ac;
    rd->state = NGX_HTTP_LINEGATE_REDIS_CONNECTING;

    ngx_add_timer(&rd->connect_timer, lmcf->redis_connect_timeout);
}


static void
ngx_http_linegate_redis_connect_cb(const redisAsyncContext *ac, int status)
{
    ngx_http_linegate_redis_t  *rd;

    rd = &ngx_http_linegate_redis;

    if (rd->connect_timer.timer_set) {
        ngx_del_timer(&rd->connect_timer);
    }

    if (status != REDIS_OK) {
        /* hiredis frees the context after this callback */
        ngx_log_error(NGX_LOG_ERR, rd->log, 0,
                      NGX_HTTP_LINEGATE_LOG "redis connect failed: %s",
                      ac->errstr);
        rd->ac = NULL;
        ngx_http_linegate_redis_lost();
        return;
    }

    ngx_http_linegate_redis_auth();

    if (rd->sentinel) {
        /* what a sentinel named may be a replica by now: ask it first */
        if (redisAsyncCommand(rd->ac, ngx_http_linegate_redis_role_cb, NULL,
                              "ROLE")
            != REDIS_OK)
        {
            ngx_http_linegate_redis_drop("ROLE not sent");
            return;
        }

        ngx_add_timer(&rd->connect_timer, rd->lmcf->redis_command_timeout);
        return;
    }

    ngx_http_linegate_redis_ready();
}


static void
ngx_http_linegate_redis_role_cb(redisAsyncContext *ac, void *data,
    void *privdata)
{
    redisReply                 *reply, *role;
    ngx_http_linegate_redis_t  *rd;

    rd = &ngx_http_linegate_redis;
    reply = data;

    if (reply == NULL || rd->exiting || ac != rd->ac
        || rd->state != NGX_HTTP_LINEGATE_REDIS_CONNECTING)
    {
        /* a lost connection is reported by the disconnect callback */
        return;
    }

    if (rd->connect_timer.timer_set) {
        ngx_del_timer(&rd->connect_timer);
    }

    role = (reply->type == REDIS_REPLY_ARRAY && reply->elements > 0)
           ? reply->element[0] : NULL;

    if (role != NULL && role->type == REDIS_REPLY_STRING
        && ngx_strcmp(role->str, "master") == 0)
    {
        ngx_http_linegate_redis_ready();
        return;
    }

    ngx_log_error(NGX_LOG_WARN, rd->log, 0,
                  NGX_HTTP_LINEGATE_LOG "redis %V:%i is not the master "
                  "(role \"%s\"): asking the sentinels again",
                  &rd->host, rd->port,
                  (role != NULL && role->type == REDIS_REPLY_STRING)
                  ? role->str : (reply->type == REDIS_REPLY_ERROR
                                 ? reply->str : "?"));

    /* dropped out of hiredis's callback, where the context is freed */
    rd->master_known = 0;

    if (!rd->rediscover.posted) {
        ngx_post_event(&rd->rediscover, &ngx_posted_events);
    }
}


/* connected to the master: the store serves requests from now on */
static void
ngx_http_linegate_redis_ready(void)
{
    ngx_http_linegate_redis_t  *rd;

    rd = &ngx_http_linegate_redis;

    if (rd->sentinel) {
        ngx_log_error(NGX_LOG_NOTICE, rd->log, 0,
                      NGX_HTTP_LINEGATE_LOG "redis connected to the master "
                      "%V:%i", &rd->host, rd->port);

    } else {
        ngx_log_error(NGX_LOG_NOTICE, rd->log, 0,
                      NGX_HTTP_LINEGATE_LOG "redis connected");
    }

    rd->state = NGX_HTTP_LINEGATE_REDIS_CONNECTED;
    rd->attempts = 0;
    rd->ping_pending = 0;

    ngx_http_linegate_redis_gauge(1);

    if (rd->connected_before) {
        ngx_http_linegate_metrics_add(NGX_HTTP_LINEGATE_M_REDIS_RECONNECTS,
                                      0, NULL, NULL, 1);
    }

    rd->connected_before = 1;

    ngx_http_linegate_redis_setup();

    ngx_add_timer(&rd->keepalive_timer, rd->lmcf->redis_keepalive);

    /* after SCRIPT LOAD: Redis runs them in order */
    ngx_http_linegate_redis_durable_flush();
}


/*
 * AUTH and SELECT go first on a new connection, then (on the master)
 * SCRIPT LOAD; Redis runs commands in order, so requests sent right after
 * them see their effect (or a NOAUTH error, which becomes a 503 and a
 * clear log line).
 */
static void
ngx_http_linegate_redis_auth(void)
{
    int                             n;
    const char                     *argv[3];
    size_t                          argvlen[3];
    u_char                          db[NGX_INT_T_LEN];
    ngx_http_linegate_redis_t      *rd;
    ngx_http_linegate_main_conf_t  *lmcf;

    rd = &ngx_http_linegate_redis;
    lmcf = rd->lmcf;

    if (lmcf->redis_password.len) {
        n = 0;
        argv[n] = "AUTH";
        argvlen[n++] = 4;

        if (lmcf->redis_user.len) {
            /* an ACL user (Redis 6) */
            argv[n] = (const char *) lmcf->redis_user.data;
            argvlen[n++] = lmcf->redis_user.len;
        }

        argv[n] = (const char *) lmcf->redis_password.data;
        argvlen[n++] = lmcf->redis_password.len;
        redisAsyncCommandArgv(rd->ac, ngx_http_linegate_redis_setup_cb,
                              "AUTH", n, argv, argvlen);
    }

    if (lmcf->redis_db > 0) {
        argv[0] = "SELECT";
        argvlen[0] = 6;
        argv[1] = (const char *) db;
        argvlen[1] = ngx_sprintf(db, "%i", lmcf->redis_db) - db;
        redisAsyncCommandArgv(rd->ac, ngx_http_linegate_redis_setup_cb,
                              "SELECT", 2, argv, argvlen);
    }
}


static void
ngx_http_linegate_redis_setup(void)
{
    ngx_uint_t                      i;
    ngx_str_t                       src;
    const char                     *argv[3];
    size_t                          argvlen[3];
    ngx_http_linegate_redis_t      *rd;

    rd = &ngx_http_linegate_redis;

    for (i = 0; i < NGX_HTTP_LINEGATE_SCRIPT_COUNT; i++) {
        ngx_http_linegate_script_source(i, &src);
        argv[0] = "SCRIPT";
        argvlen[0] = 6;
        argv[1] = "LOAD";
        argvlen[1] = 4;
        argv[2] = (const char *) src.data;
        argvlen[2] = src.len;
        redisAsyncCommandArgv(rd->ac, ngx_http_linegate_redis_setup_cb,
                              "SCRIPT LOAD", 3, argv, argvlen);
    }
}


static void
ngx_http_linegate_redis_setup_cb(redisAsyncContext *ac, void *data,
    void *privdata)
{
    redisReply  *reply;

    reply = data;

    if (reply == NULL || ngx_http_linegate_redis.exiting) {
        return;
    }

    if (reply->type == REDIS_REPLY_ERROR) {
        /* the password is never logged, only the step and Redis's answer */
        ngx_log_error(NGX_LOG_ERR, ngx_http_linegate_redis.log, 0,
                      NGX_HTTP_LINEGATE_LOG "redis %s failed: \"%*s\"",
                      (char *) privdata, (size_t) ngx_min(reply->len, 200),
                      reply->str);
    }
}


static void
ngx_http_linegate_redis_disconnect_cb(const redisAsyncContext *ac,
    int status)
{
    ngx_http_linegate_redis_t  *rd;

    rd = &ngx_http_linegate_redis;

    if (rd->exiting) {
        return;
    }

    ngx_log_error(NGX_LOG_ERR, rd->log, 0,
                  NGX_HTTP_LINEGATE_LOG "redis disconnected%s%s",
                  ac->err ? ": " : "", ac->err ? ac->errstr : "");

    rd->ac = NULL;
    ngx_http_linegate_redis_lost();
}


/* forget the context (hiredis frees it) and schedule a reconnect */
static void
ngx_http_linegate_redis_lost(void)
{
    ngx_msec_t                  delay;
    ngx_http_linegate_redis_t  *rd;

    rd = &ngx_http_linegate_redis;

    if (rd->counted) {
        ngx_http_linegate_redis_gauge(-1);
    }

    rd->state = NGX_HTTP_LINEGATE_REDIS_DISCONNECTED;
    rd->ping_pending = 0;

    /* a new connection asks the sentinels where the master is now */
    rd->master_known = 0;

    if (rd->connect_timer.timer_set) {
        ngx_del_timer(&rd->connect_timer);
    }

    if (rd->keepalive_timer.timer_set) {
        ngx_del_timer(&rd->keepalive_timer);
    }

    /*
     * A worker draining after a reload (ngx_exiting) reconnects too: it
     * still finishes its requests and durable writes. The reconnect timer
     * is cancelable: it does not keep an idle draining worker alive.
     */
    if (rd->exiting || ngx_terminate || rd->reconnect_timer.timer_set) {
        return;
    }

    /* exponential backoff with jitter: workers do not reconnect in step */
    delay = NGX_HTTP_LINEGATE_BACKOFF_MIN << ngx_min(rd->attempts, 5);
    delay = ngx_min(delay, NGX_HTTP_LINEGATE_BACKOFF_MAX);
    delay = delay / 2 + (ngx_msec_t) ngx_random() % (delay / 2 + 1);
    rd->attempts++;

    ngx_add_timer(&rd->reconnect_timer, delay);
}


static void
ngx_http_linegate_redis_reconnect(ngx_event_t *ev)
{
    if (ngx_http_linegate_redis.state
        == NGX_HTTP_LINEGATE_REDIS_DISCONNECTED)
    {
        ngx_http_linegate_redis_connect();
    }
}


static void
ngx_http_linegate_redis_drop(const char *why)
{
    redisAsyncContext          *ac;
    ngx_http_linegate_redis_t  *rd;

    rd = &ngx_http_linegate_redis;

    ngx_log_error(NGX_LOG_ERR, rd->log, 0,
                  NGX_HTTP_LINEGATE_LOG "redis %s, reconnecting", why);

    ac = rd->ac;
    rd->ac = NULL;

    if (rd->counted) {
        ngx_http_linegate_redis_gauge(-1);
    }

    rd->state = NGX_HTTP_LINEGATE_REDIS_DISCONNECTED;

    /* pending commands are answered NULL: their requests get 503 */
    redisAsyncFree(ac);

    ngx_http_linegate_redis_lost();
}


static void
ngx_http_linegate_redis_connect_timeout(ngx_event_t *ev)
{
    if (ngx_http_linegate_redis.state
        == NGX_HTTP_LINEGATE_REDIS_CONNECTING)
    {
        ngx_http_linegate_redis_drop("connect timed out");
    }
}


static void
ngx_http_linegate_redis_keepalive(ngx_event_t *ev)
{
    ngx_http_linegate_redis_t  *rd;

    rd = &ngx_http_linegate_redis;

    if (rd->state != NGX_HTTP_LINEGATE_REDIS_CONNECTED) {
        return;
    }

    if (rd->ping_pending) {
        /* the last PING got no answer in a whole interval: hung peer */
        ngx_http_linegate_redis_drop("keepalive PING unanswered");
        return;
    }

    if (redisAsyncCommand(rd->ac, ngx_http_linegate_redis_ping_cb, NULL,
                          "PING")
        == REDIS_OK)
    {
        rd->ping_pending = 1;
    }

    if (rd->sentinel) {
        ngx_http_linegate_sentinel_keepalive();
    }

    if (rd->lmcf->uses_provision) {
        /* the reconciliation backlog, for the metrics: off the request path */
        (void) redisAsyncCommand(rd->ac, ngx_http_linegate_redis_backlog_cb,
                                 NULL, "XLEN lg:reconcile");
    }

    ngx_add_timer(&rd->keepalive_timer, rd->lmcf->redis_keepalive);
}


static void
ngx_http_linegate_redis_backlog_cb(redisAsyncContext *ac, void *data,
    void *privdata)
{
    redisReply  *reply = data;

    if (reply != NULL && reply->type == REDIS_REPLY_INTEGER) {
        ngx_http_linegate_metrics_set(NGX_HTTP_LINEGATE_M_RECONCILE_BACKLOG,
                                      (ngx_atomic_int_t) reply->integer);
    }
}


/* this worker's connection in linegate_redis_connected{node} */
static void
ngx_http_linegate_redis_gauge(ngx_int_t n)
{
    ngx_str_t                       node;
    const char                     *name = "node";
    ngx_http_linegate_redis_t      *rd;

    rd = &ngx_http_linegate_redis;

    if (n > 0) {
        /* the label it is counted under, until it is uncounted */
        if (rd->lmcf->redis_unix.len) {
            rd->node_len = ngx_snprintf(rd->node, sizeof(rd->node), "%V",
                                        &rd->lmcf->redis_unix)
                           - rd->node;

        } else {
            rd->node_len = ngx_snprintf(rd->node, sizeof(rd->node), "%V:%i",
                                        &rd->host, rd->port)
                           - rd->node;
        }
    }

    node.data = rd->node;
    node.len = rd->node_len;

    rd->counted = n > 0;

    ngx_http_linegate_metrics_add(NGX_HTTP_LINEGATE_M_REDIS_CONNECTED, 1,
                                  &name, &node, (ngx_atomic_int_t) n);
}


static void
ngx_http_linegate_redis_ping_cb(redisAsyncContext *ac, void *reply,
    void *privdata)
{
    if (reply != NULL) {
        ngx_http_linegate_redis.ping_pending = 0;
    }
}
