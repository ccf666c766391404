
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

#include "ngx_http_linegate_redis_error.h"
#include "ngx_http_linegate_redis_event.h"
#include "ngx_http_linegate_redis_sentinel.h"
#include "ngx_http_linegate_redis_slots.h"
#include "ngx_http_linegate_redis_wait.h"
#include "ngx_http_linegate_keys.h"


#define NGX_HTTP_LINEGATE_BACKOFF_MIN  100
#define NGX_HTTP_LINEGATE_BACKOFF_MAX  2000

/* durable writes: how many wait at most, how long a draining worker
 * stays alive for them */
#define NGX_HTTP_LINEGATE_DURABLE_MAX    1024
#define NGX_HTTP_LINEGATE_DURABLE_DRAIN  30000

/*
 * requests' commands that wait for the worker's first connection (at
 * start, after a reload) per worker: past it they fail at once, as when
 * Redis is down
 */
#define NGX_HTTP_LINEGATE_REDIS_WAITING_MAX  1024

/* Redis Cluster: the ranges of a map (as many as there are slots: a
 * cluster whose slots were moved one by one may have each in a range of
 * its own), how many redirections one command follows */
#define NGX_HTTP_LINEGATE_CLUSTER_RANGES      NGX_HTTP_LINEGATE_REDIS_SLOTS
#define NGX_HTTP_LINEGATE_CLUSTER_REDIRECTS   5

/* a script that met a slot in migration (TRYAGAIN): sent again until
 * its command's deadline (linegate_redis_command_timeout from its first
 * send), the first delay doubled each time up to the longest; no try
 * sent later than LAST_MS before the deadline, so that its refusal comes
 * back before the timeout and says that nothing ran (tryagain_delay) */
#define NGX_HTTP_LINEGATE_CLUSTER_TRYAGAIN_MS      10
#define NGX_HTTP_LINEGATE_CLUSTER_TRYAGAIN_MAX_MS  100
#define NGX_HTTP_LINEGATE_CLUSTER_TRYAGAIN_LAST_MS 50

/* the node whose timer ev is */
#define ngx_http_linegate_redis_node_of(ev, timer)                           \
    ((ngx_http_linegate_redis_node_t *)                                      \
     ((u_char *) (ev) - offsetof(ngx_http_linegate_redis_node_t, timer)))


typedef enum {
    NGX_HTTP_LINEGATE_REDIS_DISCONNECTED = 0,
    NGX_HTTP_LINEGATE_REDIS_CONNECTING,
    NGX_HTTP_LINEGATE_REDIS_CONNECTED
} ngx_http_linegate_redis_state_e;


/*
 * One Redis server of the worker: linegate_redis's, the master Sentinel
 * named, or one master of a Redis Cluster. Each has its own connection,
 * timers and backoff.
 */
typedef struct {
    redisAsyncContext                  *ac;
    ngx_http_linegate_redis_state_e     state;
    ngx_uint_t                          attempts;
    ngx_uint_t                          ping_pending;
    /*
     * a WAIT holds the replies of the commands after it on its connection
     * until it answers (linegate_redis_wait's timeout at most): at most
     * one in flight (redis_wait.c), the last one's deadline, and the
     * PING's, which counts from the WAIT before it
     */
    ngx_http_linegate_redis_waits_t     waits;
    ngx_msec_t                          wait_until;
    ngx_msec_t                          ping_deadline;
    ngx_uint_t                          connected_before;
    /*
     * its first connection is over: made, or failed with nothing left to
     * try (0 while a request's command waits for it: _first_connect())
     */
    ngx_uint_t                          cold;
    /* a cluster's CLUSTER SLOTS failed here before any map: not waited
     * for again on this node (another node is asked) */
    ngx_uint_t                          slots_failed;
    /* CLUSTER SLOTS given up here (its deadline), their replies owed on
     * late_ac: ignored when they come */
    ngx_uint_t                          slots_late;
    /* the CLUSTER NODES written with such a CLUSTER SLOTS, owed there */
    ngx_uint_t                          nodes_late;
    redisAsyncContext                  *late_ac;
    /*
     * its CLUSTER SLOTS timed out, and it has not answered anything
     * since: asked last (a hung host, kept by a long keepalive or
     * reconnected once dropped, would cost every refresh that comes to
     * its turn a whole command timeout)
     */
    ngx_uint_t                          slots_stalled;
    ngx_uint_t                          counted;  /* in the gauge */
    ngx_uint_t                          loading;  /* SCRIPT LOADs owed */
    ngx_event_t                         connect_timer;
    ngx_event_t                         reconnect_timer;
    ngx_event_t                         keepalive_timer;

    ngx_str_t                           host;
    ngx_int_t                           port;
    u_char                              host_buf[NGX_SOCKADDR_STRLEN + 1];
    u_char                              label[NGX_SOCKADDR_STRLEN + 8];
    size_t                              label_len;   /* of the gauge */
} ngx_http_linegate_redis_node_t;


typedef struct {
    ngx_http_linegate_redis_node_t     *nodes;    /* [0] unless a cluster */
    ngx_uint_t                          nnodes;
    ngx_uint_t                          exiting;
    ngx_http_linegate_main_conf_t      *lmcf;
    ngx_log_t                          *log;

    /* Sentinel: nodes[0] is the master it named */
    ngx_uint_t                          sentinel;
    ngx_uint_t                          master_known;
    /*
     * the master a sentinel named is being connected to, its ROLE not yet
     * "master": lost before ready(), a miss of that sentinel's (_lost());
     * cleared by +switch-master, which makes its loss the failover's
     */
    ngx_uint_t                          named;
    ngx_event_t                         rediscover;  /* posted */
    /* masters named and not reached (or not a master) during the first
     * connection: the wait goes on while a sentinel is left to ask */
    ngx_uint_t                          warm_misses;

    /*
     * rediscover posted for +switch-master alone, which named this new
     * master (as the sentinel wrote it): a connection already there is
     * kept. Cleared by any other cause (-READONLY, ROLE), which drops
     */
    ngx_uint_t                          switch_only;
    ngx_int_t                           switch_port;
    size_t                              switch_len;
    u_char                              switch_host[NGX_SOCKADDR_STRLEN];

    /* Redis Cluster: the slot map is asked for again on this timer */
    ngx_uint_t                          cluster;
    ngx_uint_t                          refreshing;  /* CLUSTER SLOTS sent */
    ngx_uint_t                          moved_since;  /* a MOVED since */
    ngx_uint_t                          refresh_attempts;
    ngx_uint_t                          refresh_next;  /* node to ask */
    ngx_msec_t                          refresh_last;  /* when sent */
    ngx_msec_t                          refresh_period;
    ngx_event_t                         refresh_timer;
    /* the CLUSTER SLOTS out (refreshing): its node, its deadline */
    ngx_http_linegate_redis_node_t     *slots_asked;
    ngx_event_t                         slots_timer;
    time_t                              slot_logged;  /* a slot's master
                                                         down, logged */
    /*
     * The masters of CLUSTER NODES (with linegate_api_key_cache's pushed
     * time: the subscribers'), asked with each CLUSTER SLOTS: masters_gen
     * changes with their set; masters_at: when the CLUSTER NODES they
     * came from was sent
     */
    ngx_uint_t                          nodes_pending;
    ngx_http_linegate_redis_node_t     *nodes_asked;
    ngx_msec_t                          nodes_sent;
    ngx_uint_t                          slots_taken;  /* in that write */
    ngx_uint_t                          nodes_failed; /* logged */
    ngx_uint_t                          masters_gen;
    ngx_msec_t                          masters_at;
    ngx_uint_t                          masters_set;

    /* durable writes waiting for an answer, oldest first */
    ngx_queue_t                         durable;
    ngx_uint_t                          ndurable;
    ngx_uint_t                          durable_attempts;
    ngx_msec_t                          drain_start;  /* 0: not draining */
    ngx_event_t                         durable_timer;
    /* each connection made or lost: what client tracking stands on */
    ngx_uint_t                          conn_gen;

    /*
     * requests' commands (and pipelines) that came while the worker's
     * first connection was being made, oldest first: sent when it is
     * up, failed when it fails (wake, posted, looks at each)
     */
    ngx_queue_t                         waiting;
    ngx_uint_t                          nwaiting;
    time_t                              waiting_logged;
    ngx_event_t                         wake;
} ngx_http_linegate_redis_t;


/* a write that must happen: its arguments copied, resent until done */
typedef struct {
    ngx_queue_t                         queue;
    ngx_int_t                           script;  /* -1: plain command */
    ngx_uint_t                          acked;   /* WAIT follows it */
    int                                 nkeys;
    ngx_uint_t                          attempts;
    ngx_uint_t                          eval;    /* NOSCRIPT: send EVAL */
    ngx_uint_t                          sent;    /* replies hiredis owes */
    ngx_uint_t                          done;    /* given up: free on reply */
    /* where it was last written (a cluster's MOVED or ASK, followed) */
    ngx_http_linegate_redis_node_t     *node;
    ngx_uint_t                          redirects;

    /*
     * linegate_redis_wait: an acknowledged script's answer counts once
     * WAIT says enough replicas have it (its reply stashed meanwhile);
     * fewer, and the script is sent again (every durable script is
     * idempotent)
     */
    ngx_uint_t                          waited;  /* WAIT sent after it */
    /* its WAIT ended with no reply before the script's came (a WAIT
     * that could not be written after the one in flight) */
    ngx_uint_t                          wait_lost;
    ngx_uint_t                          have;    /* the script answered */
    ngx_pool_t                         *pool;    /* of the stash */
    redisReply                         *stash;
    char                               *what;
    ngx_str_t                           note;    /* then's, copied */
    ngx_http_linegate_redis_then_pt     then;    /* NULL: none */
    ngx_http_linegate_redis_args_t      args;
} ngx_http_linegate_redis_durable_t;


typedef struct {
    ngx_http_request_t                 *r;      /* NULL: request gave up */
    ngx_pool_cleanup_t                 *cln;    /* detaches it from r */
    ngx_http_linegate_redis_handler_pt  handler;
    ngx_event_t                         timer;
    ngx_int_t                           script; /* -1: plain command */
    ngx_uint_t                          acked;  /* WAIT follows it */
    int                                 nkeys;
    ngx_http_linegate_redis_args_t     *args;
    ngx_uint_t                          retried;
    /* answered an error no retry changes (request_error) */
    ngx_uint_t                          refused;
    /* answered an error Redis gives before running anything (not_run) */
    ngx_uint_t                          not_run;
    /*
     * a script or command nobody waits for (handler NULL): its
     * arguments and bytes are its own, as the request may be freed
     * before a NOSCRIPT's EVAL or a cluster's redirection sends them
     * again
     */
    ngx_uint_t                          forget;
    uint64_t                            sent_us;  /* for the metrics */

    /* where it went, and its bytes (the request's pool) to send again
     * after a cluster's MOVED or ASK */
    ngx_http_linegate_redis_node_t     *node;
    u_char                             *buf;
    size_t                              len;
    ngx_uint_t                          redirects;

    /* TRYAGAIN: sent again to node, after ASKING, when again fires */
    ngx_event_t                         again;
    ngx_uint_t                          tryagains;
    ngx_uint_t                          tryagain;  /* once WAITs are in */

    /*
     * linegate_redis_wait: WAIT sent after the script. Only the WAIT of
     * the node the script was last sent to decides, the last to answer
     * there (a redirect's first node had nothing to acknowledge); short:
     * it counted too few replicas (wait_count), or ended before the
     * script answered; unsent: the last script's could not be written
     * (no answer, even one that comes first, is trusted)
     */
    ngx_uint_t                          waits;    /* WAIT replies owed */
    ngx_uint_t                          have;     /* the script answered */
    ngx_uint_t                          wait_short;
    ngx_uint_t                          wait_unsent;
    ngx_int_t                           wait_count;
    /* that WAIT answered an error (logged): refused, one no retry changes */
    ngx_uint_t                          wait_error;
    ngx_uint_t                          wait_refused;
    redisReply                         *stash;    /* its reply, or NULL */

    /* in rd->waiting: not written yet, its connection being made; its
     * bytes in buf, its key's slot */
    ngx_queue_t                         wait_link;
    ngx_uint_t                          slot;
    ngx_uint_t                          waiting;
    ngx_uint_t                          pipeline;  /* a pipeline's cmd */
} ngx_http_linegate_redis_cmd_t;


typedef struct ngx_http_linegate_redis_pipeline_s
    ngx_http_linegate_redis_pipeline_t;


/* one command of a pipeline: its reply's place, its bytes, its node */
typedef struct {
    ngx_http_linegate_redis_pipeline_t *pl;
    ngx_uint_t                          index;
    ngx_http_linegate_redis_node_t     *node;
    u_char                             *buf;
    size_t                              len;
    ngx_uint_t                          redirects;
    /* its key's, NGX_HTTP_LINEGATE_REDIS_SLOTS: none (node once routed) */
    ngx_uint_t                          slot;

    /*
     * linegate_redis_wait: WAIT written after an acknowledged command, on
     * its node (again on the node a redirect names); short: the last
     * WAIT of that node counted too few replicas, or was not sent.
     * covered: a later acknowledged command of the pipeline goes to the
     * same node (its one connection), and the WAIT after that one
     * acknowledges this one too: none of its own, so that two WAITs in
     * a row never take twice linegate_redis_wait's timeout (a redirect
     * still gets its WAIT on the node it names).
     */
    ngx_uint_t                          acked;
    ngx_uint_t                          covered;
    ngx_uint_t                          wait_short;
} ngx_http_linegate_redis_part_t;


/*
 * Commands written back to back, answered to one handler. On one Redis
 * they share a write; on a cluster each goes to its slot's node, all in
 * the same turn of the event loop: one round trip either way.
 */
struct ngx_http_linegate_redis_pipeline_s {
    ngx_http_linegate_redis_cmd_t       cmd;    /* first: freed as one */
    ngx_uint_t                          queued; /* callbacks hiredis owes */
    ngx_uint_t                          received;
    ngx_uint_t                          lost;   /* a reply never came */
    ngx_uint_t                          failed; /* a command failed */
    ngx_uint_t                          each;   /* _pipeline_each() */
    ngx_uint_t                          n;
    ngx_http_linegate_redis_part_t     *part;    /* n, after the struct */
    redisReply                        **element; /* n, after the parts */
    redisReply                          array;
};


static ngx_http_linegate_redis_node_t *ngx_http_linegate_redis_node(
    ngx_str_t *host, ngx_int_t port);
static void ngx_http_linegate_redis_connect(
    ngx_http_linegate_redis_node_t *node);
static ngx_uint_t ngx_http_linegate_redis_is_ip(ngx_str_t *host);
static ngx_http_linegate_redis_node_t *
    ngx_http_linegate_redis_node_idle(void);
static void ngx_http_linegate_redis_connect_to(
    ngx_http_linegate_redis_node_t *node);
static void ngx_http_linegate_redis_master_found(ngx_int_t rc,
    ngx_str_t *host, ngx_int_t port);
static void ngx_http_linegate_redis_master_switched(ngx_str_t *host,
    ngx_int_t port);
static void ngx_http_linegate_redis_post_rediscover(void);
static void ngx_http_linegate_redis_rediscover(ngx_event_t *ev);
static void ngx_http_linegate_redis_auth(
    ngx_http_linegate_redis_node_t *node);
static void ngx_http_linegate_redis_role_cb(redisAsyncContext *ac,
    void *reply, void *privdata);
static void ngx_http_linegate_redis_ready(
    ngx_http_linegate_redis_node_t *node);
static void ngx_http_linegate_redis_lost(
    ngx_http_linegate_redis_node_t *node);
static void ngx_http_linegate_redis_connect_cb(const redisAsyncContext *ac,
    int status);
static void ngx_http_linegate_redis_disconnect_cb(
    const redisAsyncContext *ac, int status);
static void ngx_http_linegate_redis_setup(
    ngx_http_linegate_redis_node_t *node);
static void ngx_http_linegate_redis_reload(void);
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
static ngx_int_t ngx_http_linegate_redis_pipeline_checked(
    ngx_http_request_t *r, ngx_uint_t ncmds,
    ngx_http_linegate_redis_args_t *args,
    ngx_http_linegate_redis_handler_pt handler, ngx_uint_t each);
static ngx_int_t ngx_http_linegate_redis_pipeline_send(
    ngx_http_request_t *r, ngx_uint_t ncmds,
    ngx_http_linegate_redis_args_t *args, const char *name, ngx_str_t *keys,
    ngx_http_linegate_redis_handler_pt handler, ngx_uint_t each);
static ngx_uint_t ngx_http_linegate_redis_waited(redisReply *reply);
static ngx_uint_t ngx_http_linegate_redis_wait_error(ngx_log_t *log,
    ngx_str_t *after, redisReply *reply);
static void ngx_http_linegate_redis_pipeline_unsent(
    ngx_http_linegate_redis_pipeline_t *pl, ngx_uint_t from);
static void ngx_http_linegate_redis_pipeline_cover(
    ngx_http_linegate_redis_pipeline_t *pl, ngx_uint_t ncmds);
static ngx_int_t ngx_http_linegate_redis_pipeline_wait(
    ngx_http_linegate_redis_part_t *part);
static void ngx_http_linegate_redis_pipeline_wait_cb(redisAsyncContext *ac,
    void *data, void *privdata);
static void ngx_http_linegate_redis_pipeline_done(
    ngx_http_linegate_redis_pipeline_t *pl);
static void ngx_http_linegate_redis_pipeline_drop(
    ngx_http_linegate_redis_pipeline_t *pl);
static void ngx_http_linegate_redis_pipeline_timeout(ngx_event_t *ev);
static redisReply *ngx_http_linegate_redis_pipeline_known(
    ngx_http_linegate_redis_pipeline_t *pl);
static redisReply *ngx_http_linegate_redis_copy(ngx_pool_t *pool,
    redisReply *src);
static void ngx_http_linegate_redis_finish(ngx_http_linegate_redis_cmd_t *cmd,
    redisReply *reply);
static void ngx_http_linegate_redis_finish_as(
    ngx_http_linegate_redis_cmd_t *cmd, redisReply *reply, ngx_uint_t ok);
static u_char *ngx_http_linegate_redis_format(ngx_pool_t *pool, int argc,
    const char **argv, const size_t *argvlen, size_t *n);
static ngx_uint_t ngx_http_linegate_redis_up(
    ngx_http_linegate_redis_node_t *node);
static ngx_int_t ngx_http_linegate_redis_write(
    ngx_http_linegate_redis_node_t *node, redisCallbackFn *fn,
    void *privdata, u_char *buf, size_t len);
static void ngx_http_linegate_redis_backlog(
    ngx_http_linegate_redis_node_t *node);
static ngx_uint_t ngx_http_linegate_redis_slot_of(int argc,
    const char **argv, const size_t *argvlen);
static ngx_http_linegate_redis_node_t *ngx_http_linegate_redis_route_slot(
    ngx_log_t *log, ngx_uint_t slot);
static ngx_uint_t ngx_http_linegate_redis_first_connect(
    ngx_http_linegate_redis_node_t *node);
static ngx_uint_t ngx_http_linegate_redis_warming(ngx_uint_t slot);
static ngx_int_t ngx_http_linegate_redis_wait_connect(
    ngx_http_linegate_redis_cmd_t *cmd, ngx_event_handler_pt timeout);
static void ngx_http_linegate_redis_unwait(
    ngx_http_linegate_redis_cmd_t *cmd);
static void ngx_http_linegate_redis_wake_soon(void);
static void ngx_http_linegate_redis_wake(ngx_event_t *ev);
static ngx_int_t ngx_http_linegate_redis_send_formatted(
    ngx_http_linegate_redis_cmd_t *cmd, ngx_http_linegate_redis_node_t *node);
static ngx_int_t ngx_http_linegate_redis_pipeline_write(
    ngx_http_linegate_redis_pipeline_t *pl);
static ngx_http_linegate_redis_node_t *ngx_http_linegate_redis_route(
    ngx_log_t *log, int argc, const char **argv, const size_t *argvlen);
static ngx_uint_t ngx_http_linegate_redis_key_index(int argc,
    const char **argv, const size_t *argvlen);
static void ngx_http_linegate_redis_log_error(ngx_log_t *log,
    redisReply *reply, u_char *what, size_t len);
static ngx_uint_t ngx_http_linegate_redis_request_error(
    ngx_http_request_t *r, ngx_int_t script, u_char *buf, size_t len,
    redisReply *reply);
static u_char *ngx_http_linegate_redis_describe(u_char *p, u_char *last,
    ngx_int_t script, u_char *buf, size_t len);
static void ngx_http_linegate_redis_demoted(redisReply *reply);
static ngx_int_t ngx_http_linegate_redis_unavailable(redisReply *reply);
static ngx_uint_t ngx_http_linegate_redis_not_run(redisReply *reply);
static void ngx_http_linegate_redis_note_not_run(ngx_http_request_t *r,
    ngx_uint_t not_run);
static void ngx_http_linegate_redis_drop(
    ngx_http_linegate_redis_node_t *node, const char *why);
static ngx_int_t ngx_http_linegate_redis_send(
    ngx_http_linegate_redis_cmd_t *cmd, ngx_uint_t eval);
static void ngx_http_linegate_redis_cmd_timeout(ngx_event_t *ev);
static ngx_http_linegate_redis_cmd_t *ngx_http_linegate_redis_cmd_alloc(
    ngx_http_request_t *r, ngx_http_linegate_redis_args_t *args,
    ngx_http_linegate_redis_handler_pt handler);
static ngx_int_t ngx_http_linegate_redis_cmd_start(
    ngx_http_linegate_redis_cmd_t *cmd);
static ngx_http_request_t *ngx_http_linegate_redis_timed_out(ngx_event_t *ev,
    ngx_http_linegate_redis_cmd_t **cmdp);
static ngx_uint_t ngx_http_linegate_redis_tryagain(
    ngx_http_linegate_redis_cmd_t *cmd, redisReply *reply);
static ngx_msec_t ngx_http_linegate_redis_tryagain_delay(
    ngx_http_linegate_redis_cmd_t *cmd);
static void ngx_http_linegate_redis_tryagain_later(
    ngx_http_linegate_redis_cmd_t *cmd);
static void ngx_http_linegate_redis_tryagain_handler(ngx_event_t *ev);
static void ngx_http_linegate_redis_connect_timeout(ngx_event_t *ev);
static void ngx_http_linegate_redis_reconnect(ngx_event_t *ev);
static void ngx_http_linegate_redis_keepalive(ngx_event_t *ev);
static void ngx_http_linegate_redis_backlog_cb(redisAsyncContext *ac,
    void *data, void *privdata);
static void ngx_http_linegate_redis_gauge(
    ngx_http_linegate_redis_node_t *node, ngx_int_t n);
static void ngx_http_linegate_redis_ping_cb(redisAsyncContext *ac,
    void *reply, void *privdata);

static ngx_http_linegate_redis_node_t *ngx_http_linegate_redis_slot_node(
    ngx_uint_t slot);
static void ngx_http_linegate_redis_refresh_soon(ngx_msec_t delay);
static ngx_uint_t ngx_http_linegate_redis_serves(
    ngx_http_linegate_redis_node_t *node);
static void ngx_http_linegate_redis_refresh(ngx_event_t *ev);
static ngx_int_t ngx_http_linegate_redis_slots_ask(
    ngx_http_linegate_redis_node_t *node);
static void ngx_http_linegate_redis_slots_timeout(ngx_event_t *ev);
static void ngx_http_linegate_redis_slots_failed(
    ngx_http_linegate_redis_node_t *asked);
static void ngx_http_linegate_redis_slots_cb(redisAsyncContext *ac,
    void *reply, void *privdata);
static ngx_int_t ngx_http_linegate_redis_install(
    ngx_http_linegate_redis_node_t *asked, redisReply *reply);
static void ngx_http_linegate_redis_nodes_cb(redisAsyncContext *ac,
    void *reply, void *privdata);
static ngx_int_t ngx_http_linegate_redis_masters_take(
    ngx_http_linegate_redis_node_t *asked,
    ngx_http_linegate_redis_master_t *m, ngx_uint_t n);
static ngx_uint_t ngx_http_linegate_redis_masters_same(
    ngx_http_linegate_redis_master_t *a, ngx_uint_t na,
    ngx_http_linegate_redis_master_t *b, ngx_uint_t nb);
static ngx_int_t ngx_http_linegate_redis_redirect(
    ngx_http_linegate_redis_node_t *from, redisReply *reply, u_char *buf,
    size_t len, ngx_uint_t *redirects, redisCallbackFn *fn, void *privdata,
    ngx_http_linegate_redis_node_t **to);

static ngx_int_t ngx_http_linegate_redis_attach(
    ngx_http_linegate_redis_cmd_t *cmd);
static void ngx_http_linegate_redis_detach(void *data);
static void ngx_http_linegate_redis_release(
    ngx_http_linegate_redis_cmd_t *cmd);
static void ngx_http_linegate_redis_cmd_free(
    ngx_http_linegate_redis_cmd_t *cmd);
static ngx_int_t ngx_http_linegate_redis_durable_queue(ngx_log_t *log,
    ngx_http_linegate_redis_then_pt then, ngx_str_t *note,
    ngx_int_t script, int nkeys, ngx_http_linegate_redis_args_t *args,
    const char *what);
static void ngx_http_linegate_redis_durable_flush(void);
static ngx_int_t ngx_http_linegate_redis_durable_send(
    ngx_http_linegate_redis_durable_t *d);
static int ngx_http_linegate_redis_argv(ngx_int_t script, ngx_uint_t eval,
    int nk, ngx_http_linegate_redis_args_t *a, const char **argv,
    size_t *argvlen, u_char *nkeys);
static int ngx_http_linegate_redis_durable_argv(
    ngx_http_linegate_redis_durable_t *d, const char **argv,
    size_t *argvlen, u_char *nkeys);
static void ngx_http_linegate_redis_durable_wait(
    ngx_http_linegate_redis_durable_t *d);
static ngx_int_t ngx_http_linegate_redis_durable_redirect(
    ngx_http_linegate_redis_durable_t *d, redisAsyncContext *ac,
    redisReply *reply);
static void ngx_http_linegate_redis_durable_cb(redisAsyncContext *ac,
    void *reply, void *privdata);
static void ngx_http_linegate_redis_durable_wait_cb(redisAsyncContext *ac,
    void *reply, void *privdata);
static void ngx_http_linegate_redis_durable_done(
    ngx_http_linegate_redis_durable_t *d, redisReply *reply);
static void ngx_http_linegate_redis_durable_unstash(
    ngx_http_linegate_redis_durable_t *d);
static ngx_uint_t ngx_http_linegate_redis_durable_owed(
    ngx_http_linegate_redis_durable_t *d);
static int ngx_http_linegate_redis_wait_send(redisAsyncContext *ac,
    redisCallbackFn *fn, void *privdata);
static void ngx_http_linegate_redis_unacknowledged(
    ngx_http_linegate_redis_cmd_t *cmd);
static ngx_int_t ngx_http_linegate_redis_write_wait(
    ngx_http_linegate_redis_node_t *node, redisCallbackFn *fn,
    void *privdata);
static void ngx_http_linegate_redis_durable_retry(ngx_event_t *ev);
static void ngx_http_linegate_redis_durable_arm(void);


/* what the log calls a plain command (it keeps no copy of its name) */
static ngx_str_t  ngx_http_linegate_redis_plain = ngx_string("a command");
static ngx_str_t  ngx_http_linegate_redis_pl =
    ngx_string("a pipeline's command");


static ngx_http_linegate_redis_t  ngx_http_linegate_redis;

/* a cluster's slot map: the node index + 1 serving each slot, 0: none */
static uint16_t    ngx_http_linegate_redis_slots[
                                          NGX_HTTP_LINEGATE_REDIS_SLOTS];
static ngx_uint_t  ngx_http_linegate_redis_map_ready;

/*
 * The slots a MOVED moved while a CLUSTER SLOTS was out (rd->moved_since):
 * its reply may have been made before the move, and would put the old
 * owner back; those slots keep what the MOVED said, and the map is asked
 * for again at once.
 */
static uint8_t     ngx_http_linegate_redis_moved[
                                      NGX_HTTP_LINEGATE_REDIS_SLOTS / 8];

/* the masters of the last CLUSTER NODES taken (rd->masters_set) */
static ngx_http_linegate_redis_master_t  ngx_http_linegate_redis_masters[
                                         NGX_HTTP_LINEGATE_REDIS_MAX_NODES];
static ngx_uint_t                        ngx_http_linegate_redis_nmasters;

/*
 * nginx's debug log reads ev->data as a connection for every timer: the
 * module's timers point at this one (fd -1) and find their owner by
 * other means.
 */
static ngx_connection_t  ngx_http_linegate_redis_dummy;


/* the step a SCRIPT LOAD's callback is told: also how it is recognised */
static char  ngx_http_linegate_redis_script_load[] = "SCRIPT LOAD";


/*
 * Replies that mean "the store cannot serve now", not "a bug of ours": a
 * request answers 503 with Retry-After, a durable write is sent again
 * (and a script killed by SCRIPT KILL: redis_unavailable()).
 * MISCONF: writes refused after a failed RDB save
 * (stop-writes-on-bgsave-error) until a save succeeds; NOREPLICAS: fewer
 * replicas than min-replicas-to-write are connected. Both end without
 * anything of ours changing.
 */
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
    ngx_string("MISCONF"),
    ngx_string("NOREPLICAS"),
    /*
     * NOAUTH in another form: a connection not authenticated yet (a
     * password set on Redis under running workers) that sends more than
     * 10 arguments is refused with this, and closed, before anything
     * runs (a purchase's pv_record has 16)
     */
    ngx_string("ERR Protocol error: unauthenticated"),
    ngx_null_string
};


/*
 * An error reply is logged once a second per worker for each error code
 * (its first word: OOM, LOADING, WRONGTYPE...), with how many were not:
 * while Redis refuses everything (out of memory, loading, a replica),
 * every request would log one otherwise. A few codes at a time; the
 * least recently logged gives its place.
 */
#define NGX_HTTP_LINEGATE_REDIS_ERR_CODES     8
#define NGX_HTTP_LINEGATE_REDIS_ERR_CODE_LEN  24

typedef struct {
    time_t                          logged;
    ngx_uint_t                      more;       /* not logged since */
    size_t                          len;
    u_char                          code[NGX_HTTP_LINEGATE_REDIS_ERR_CODE_LEN];
} ngx_http_linegate_redis_err_code_t;

static ngx_http_linegate_redis_err_code_t
    ngx_http_linegate_redis_err_codes[NGX_HTTP_LINEGATE_REDIS_ERR_CODES];


/* arguments */

void
ngx_http_linegate_redis_args_init(ngx_http_linegate_redis_args_t *a)
{
    a->argc = 0;
    a->nkeys = 0;
    a->acknowledged = 0;
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

    /* an empty ngx_str_t may have no data: hiredis copies from it */
    a->argv[a->argc] = data != NULL ? data : "";
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
ngx_http_linegate_redis_arg_strs(ngx_http_linegate_redis_args_t *a,
    ngx_str_t *s, ngx_uint_t n)
{
    ngx_uint_t  i;

    for (i = 0; i < n; i++) {
        ngx_http_linegate_redis_arg(a, s[i].data, s[i].len);
    }
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

    cmd = ngx_http_linegate_redis_cmd_alloc(r, args, handler);
    if (cmd == NULL) {
        return NGX_ERROR;
    }

    cmd->script = script;
    /* or acknowledged for this call only (the confirm's RESERVE) */
    cmd->acked = ngx_http_linegate_redis_acknowledged(script)
                 || args->acknowledged;
    cmd->nkeys = nkeys;

    return ngx_http_linegate_redis_cmd_start(cmd);
}


ngx_int_t
ngx_http_linegate_redis_get(ngx_http_request_t *r, ngx_str_t *key,
    ngx_http_linegate_redis_handler_pt handler)
{
    ngx_http_linegate_redis_args_t  a;

    ngx_http_linegate_redis_args_init(&a);
    ngx_http_linegate_redis_arg_cstr(&a, "GET");
    ngx_http_linegate_redis_arg_str(&a, key);

    return ngx_http_linegate_redis_command(r, &a, handler);
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

    cmd = ngx_http_linegate_redis_cmd_alloc(r, args, handler);
    if (cmd == NULL) {
        return NGX_ERROR;
    }

    cmd->acked = args->acknowledged;

    return ngx_http_linegate_redis_cmd_start(cmd);
}


/*
 * A command in one block: the command, then for one nobody waits for
 * (handler NULL) its own copy of the arguments, as its request may be
 * freed before a NOSCRIPT's EVAL or a cluster's MOVED, ASK or TRYAGAIN
 * sends it again (cmd->forget: its bytes are its own too)
 */
static ngx_http_linegate_redis_cmd_t *
ngx_http_linegate_redis_cmd_alloc(ngx_http_request_t *r,
    ngx_http_linegate_redis_args_t *args,
    ngx_http_linegate_redis_handler_pt handler)
{
    int                              i;
    size_t                           len;
    u_char                          *p;
    ngx_http_linegate_redis_cmd_t   *cmd;
    ngx_http_linegate_redis_args_t  *a;

    len = sizeof(ngx_http_linegate_redis_cmd_t);

    if (handler == NULL) {
        len += sizeof(ngx_http_linegate_redis_args_t);

        for (i = 0; i < args->argc; i++) {
            len += args->argvlen[i];
        }
    }

    cmd = ngx_alloc(len, r->connection->log);
    if (cmd == NULL) {
        return NULL;
    }

    ngx_memzero(cmd, sizeof(ngx_http_linegate_redis_cmd_t));
    cmd->r = r;
    cmd->handler = handler;
    cmd->script = -1;
    cmd->args = args;

    if (handler != NULL) {
        return cmd;
    }

    a = (ngx_http_linegate_redis_args_t *) (cmd + 1);
    ngx_http_linegate_redis_args_init(a);
    p = (u_char *) (a + 1);
    a->argc = args->argc;
    a->nkeys = args->nkeys;

    for (i = 0; i < args->argc; i++) {
        a->argv[i] = (const char *) p;
        a->argvlen[i] = args->argvlen[i];

        if (args->argvlen[i]) {     /* an empty argument may be NULL */
            p = ngx_cpymem(p, args->argv[i], args->argvlen[i]);
        }
    }

    cmd->args = a;
    cmd->forget = 1;

    return cmd;
}


/*
 * Send a command ngx_http_linegate_redis_cmd_alloc() made. One nobody
 * waits for outlives its request: its timer logs through the cycle
 */
static ngx_int_t
ngx_http_linegate_redis_cmd_start(ngx_http_linegate_redis_cmd_t *cmd)
{
    ngx_int_t  rc;

    if (cmd->forget) {
        /* no WAIT: nobody would act on what it says */
        cmd->acked = 0;
        cmd->sent_us = ngx_http_linegate_metrics_now_us();

        if (ngx_http_linegate_redis_send(cmd, 0) != NGX_OK) {
            ngx_http_linegate_redis_cmd_free(cmd);
            return NGX_ERROR;
        }

        cmd->r = NULL;
        cmd->timer.log = ngx_cycle->log;

        return NGX_OK;
    }

    if (ngx_http_linegate_redis_attach(cmd) != NGX_OK) {
        ngx_http_linegate_redis_release(cmd);
        ngx_free(cmd);
        return NGX_ERROR;
    }

    rc = ngx_http_linegate_redis_send(cmd, 0);

    if (rc == NGX_AGAIN) {
        /* the worker's first connection is being made: sent once up */
        rc = ngx_http_linegate_redis_wait_connect(cmd,
                                         ngx_http_linegate_redis_cmd_timeout);
    }

    if (rc != NGX_OK) {
        ngx_http_linegate_redis_release(cmd);
        ngx_free(cmd);
        return NGX_ERROR;
    }

    return NGX_OK;
}


ngx_int_t
ngx_http_linegate_redis_pipeline(ngx_http_request_t *r,
    ngx_uint_t ncmds, ngx_http_linegate_redis_args_t *args,
    ngx_http_linegate_redis_handler_pt handler)
{
    return ngx_http_linegate_redis_pipeline_checked(r, ncmds, args, handler,
                                                    0);
}


ngx_int_t
ngx_http_linegate_redis_pipeline_each(ngx_http_request_t *r,
    ngx_uint_t ncmds, ngx_http_linegate_redis_args_t *args,
    ngx_http_linegate_redis_handler_pt handler)
{
    return ngx_http_linegate_redis_pipeline_checked(r, ncmds, args, handler,
                                                    1);
}


/* every command of the pipeline has arguments, and there are not too many */
static ngx_int_t
ngx_http_linegate_redis_pipeline_checked(ngx_http_request_t *r,
    ngx_uint_t ncmds, ngx_http_linegate_redis_args_t *args,
    ngx_http_linegate_redis_handler_pt handler, ngx_uint_t each)
{
    ngx_uint_t  i;

    for (i = 0; i < ncmds && i < NGX_HTTP_LINEGATE_REDIS_MAX_PIPELINE; i++) {
        if (args[i].argc <= 0) {
            break;
        }
    }

    if (i < ncmds) {
        ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                      NGX_HTTP_LINEGATE_LOG "bad arguments for a pipeline");
        return NGX_ERROR;
    }

    return ngx_http_linegate_redis_pipeline_send(r, ncmds, args, NULL, NULL,
                                                 handler, each);
}


ngx_int_t
ngx_http_linegate_redis_pipeline_keys(ngx_http_request_t *r,
    const char *name, ngx_uint_t nkeys, ngx_str_t *keys,
    ngx_http_linegate_redis_handler_pt handler)
{
    return ngx_http_linegate_redis_pipeline_send(r, nkeys, NULL, name, keys,
                                                 handler, 0);
}


/*
 * The commands of a pipeline: args[i], or (args NULL) "name keys[i]".
 * The pipeline is allocated with room for its n parts and replies.
 */
static ngx_int_t
ngx_http_linegate_redis_pipeline_send(ngx_http_request_t *r,
    ngx_uint_t ncmds, ngx_http_linegate_redis_args_t *args,
    const char *name, ngx_str_t *keys,
    ngx_http_linegate_redis_handler_pt handler, ngx_uint_t each)
{
    int                                  argc;
    size_t                               argvlen[2];
    ngx_uint_t                           i, unready;
    ngx_event_handler_pt                 timeout;
    const char                          *argv[2];
    const char                         **av;
    const size_t                        *al;
    ngx_http_linegate_redis_part_t      *part;
    ngx_http_linegate_redis_pipeline_t  *pl;

    if (ncmds == 0 || ncmds > NGX_HTTP_LINEGATE_REDIS_MAX_PIPELINE) {
        ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                      NGX_HTTP_LINEGATE_LOG "bad arguments for a pipeline");
        return NGX_ERROR;
    }

    pl = ngx_alloc(sizeof(ngx_http_linegate_redis_pipeline_t)
                   + ncmds * (sizeof(ngx_http_linegate_redis_part_t)
                              + sizeof(redisReply *)),
                   r->connection->log);
    if (pl == NULL) {
        return NGX_ERROR;
    }

    ngx_memzero(pl, sizeof(ngx_http_linegate_redis_pipeline_t)
                    + ncmds * (sizeof(ngx_http_linegate_redis_part_t)
                               + sizeof(redisReply *)));

    pl->part = (ngx_http_linegate_redis_part_t *) (pl + 1);
    pl->element = (redisReply **) (pl->part + ncmds);

    if (name != NULL) {
        argv[0] = name;
        argvlen[0] = ngx_strlen(name);
    }

    unready = 0;

    /*
     * every command's node first: all are sent, or none; all wait when
     * one's node is being connected to for the first time (the node of
     * each is then found when it is up)
     */
    for (i = 0; i < ncmds; i++) {
        part = &pl->part[i];

        if (args != NULL) {
            argc = args[i].argc;
            av = args[i].argv;
            al = args[i].argvlen;

        } else {
            argc = 2;
            argv[1] = (const char *) keys[i].data;
            argvlen[1] = keys[i].len;
            av = argv;
            al = argvlen;
        }

        part->slot = ngx_http_linegate_redis_slot_of(argc, av, al);
        part->node = ngx_http_linegate_redis_route_slot(r->connection->log,
                                                        part->slot);
        if (part->node == NULL) {
            if (!ngx_http_linegate_redis_warming(part->slot)) {
                ngx_free(pl);
                return NGX_ERROR;
            }

            unready = 1;
        }

        /* the request's pool: args may be gone when it is written */
        part->buf = ngx_http_linegate_redis_format(r->pool, argc, av, al,
                                                   &part->len);
        if (part->buf == NULL) {
            ngx_free(pl);
            return NGX_ERROR;
        }

        part->acked = (args != NULL && args[i].acknowledged
                       && ngx_http_linegate_redis.lmcf->redis_wait_replicas
                          > 0);
    }

    pl->cmd.r = r;
    pl->cmd.handler = handler;
    pl->cmd.script = -1;
    pl->cmd.pipeline = 1;
    pl->n = ncmds;
    pl->each = each;

    if (ngx_http_linegate_redis_attach(&pl->cmd) != NGX_OK) {
        ngx_free(pl);
        return NGX_ERROR;
    }

    if (unready) {
        timeout = each ? ngx_http_linegate_redis_pipeline_timeout
                       : ngx_http_linegate_redis_cmd_timeout;

        if (ngx_http_linegate_redis_wait_connect(&pl->cmd, timeout)
            != NGX_OK)
        {
            ngx_http_linegate_redis_release(&pl->cmd);
            ngx_free(pl);
            return NGX_ERROR;
        }

        return NGX_OK;
    }

    return ngx_http_linegate_redis_pipeline_write(pl);
}


/*
 * A pipeline's commands written, each on its node (found now for one
 * that waited for its connection). NGX_AGAIN: a node is still being
 * connected to (nothing written); NGX_ERROR: pl released, and freed
 * unless a command written owes a callback.
 */
static ngx_int_t
ngx_http_linegate_redis_pipeline_write(ngx_http_linegate_redis_pipeline_t *pl)
{
    ngx_uint_t                       i;
    ngx_http_request_t              *r;
    ngx_http_linegate_redis_part_t  *part;

    r = pl->cmd.r;

    for (i = 0; i < pl->n; i++) {
        part = &pl->part[i];

        if (part->node != NULL) {
            continue;
        }

        part->node = ngx_http_linegate_redis_route_slot(r->connection->log,
                                                        part->slot);
        if (part->node == NULL) {
            if (ngx_http_linegate_redis_warming(part->slot)) {
                return NGX_AGAIN;
            }

            ngx_http_linegate_redis_release(&pl->cmd);

            if (pl->cmd.timer.timer_set) {
                ngx_del_timer(&pl->cmd.timer);
            }

            ngx_free(pl);
            return NGX_ERROR;
        }
    }

    ngx_http_linegate_redis_pipeline_cover(pl, pl->n);

    /*
     * hiredis appends them to its output buffers now and writes them with
     * the other requests' commands at the next turn of the event loop.
     */
    for (i = 0; i < pl->n; i++) {
        part = &pl->part[i];
        part->pl = pl;
        part->index = i;

        if (ngx_http_linegate_redis_write(part->node,
                                          ngx_http_linegate_redis_pipeline_cb,
                                          part, part->buf, part->len)
            != NGX_OK)
        {
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          NGX_HTTP_LINEGATE_LOG "redis pipeline not sent");

            if (pl->each && pl->queued) {
                /*
                 * those queued may run, and a caller that undoes what
                 * ran (a refund) must hear of them: their replies are
                 * waited for, the commands not written are NULL
                 */
                ngx_http_linegate_redis_pipeline_unsent(pl, i);
                break;
            }

            /* the commands already queued still call back: they free it */
            ngx_http_linegate_redis_release(&pl->cmd);

            if (pl->queued == 0) {
                if (pl->cmd.timer.timer_set) {
                    ngx_del_timer(&pl->cmd.timer);
                }

                ngx_free(pl);
            }

            return NGX_ERROR;
        }

        pl->queued++;

        /* written with the command: the same round trip */
        if (part->acked && !part->covered) {
            (void) ngx_http_linegate_redis_pipeline_wait(part);
        }
    }

    /* one that waited for its connection keeps its deadline */
    if (!pl->cmd.timer.timer_set) {
        pl->cmd.timer.handler = pl->each
                                ? ngx_http_linegate_redis_pipeline_timeout
                                : ngx_http_linegate_redis_cmd_timeout;
        pl->cmd.timer.data = &ngx_http_linegate_redis_dummy;
        pl->cmd.timer.log = r->connection->log;
        ngx_add_timer(&pl->cmd.timer,
                      ngx_http_linegate_redis.lmcf->redis_command_timeout);
    }

    return NGX_OK;
}


/*
 * _pipeline_each(): command "from" and those after it could not be
 * written (the node's context freeing, out of memory), and will never
 * answer: NULL in the array (zeroed), the pipeline failed. An
 * acknowledged command that counted on the WAIT of one of them (covered)
 * has none: its outcome is not known either.
 */
static void
ngx_http_linegate_redis_pipeline_unsent(ngx_http_linegate_redis_pipeline_t *pl,
    ngx_uint_t from)
{
    ngx_uint_t  i, j;

    pl->failed = 1;

    for (i = 0; i < from; i++) {
        if (!pl->part[i].covered) {
            continue;
        }

        /* the WAIT written for it: after the last acknowledged one sent */
        for (j = i + 1; j < from; j++) {
            if (pl->part[j].acked && !pl->part[j].covered
                && pl->part[j].node == pl->part[i].node)
            {
                break;
            }
        }

        if (j == from) {
            pl->part[i].wait_short = 1;
        }
    }
}


/*
 * an acknowledged command whose node takes a later acknowledged one:
 * covered by that one's WAIT
 */
static void
ngx_http_linegate_redis_pipeline_cover(ngx_http_linegate_redis_pipeline_t *pl,
    ngx_uint_t ncmds)
{
    ngx_uint_t  i, j;

    for (i = 0; i < ncmds; i++) {
        for (j = i + 1; pl->part[i].acked && j < ncmds; j++) {
            if (pl->part[j].acked && pl->part[j].node == pl->part[i].node) {
                pl->part[i].covered = 1;
                break;
            }
        }
    }
}


static ngx_int_t
ngx_http_linegate_redis_send(ngx_http_linegate_redis_cmd_t *cmd,
    ngx_uint_t eval)
{
    int                              argc;
    u_char                           nkeys[NGX_INT_T_LEN];
    ngx_log_t                       *log;
    ngx_uint_t                       slot;
    ngx_pool_t                      *pool;
    const char                      *argv[NGX_HTTP_LINEGATE_REDIS_MAX_ARGS];
    size_t                           argvlen[NGX_HTTP_LINEGATE_REDIS_MAX_ARGS];
    ngx_http_linegate_redis_node_t  *node;

    /* a fire-and-forget script may be sent again after its request */
    log = (cmd->r != NULL) ? cmd->r->connection->log : ngx_cycle->log;
    pool = cmd->forget ? NULL : cmd->r->pool;

    argc = ngx_http_linegate_redis_argv(cmd->script, eval, cmd->nkeys,
                                        cmd->args, argv, argvlen, nkeys);

    slot = ngx_http_linegate_redis_slot_of(argc, argv, argvlen);

    node = ngx_http_linegate_redis_route_slot(log, slot);
    if (node == NULL && !ngx_http_linegate_redis_warming(slot)) {
        return NGX_ERROR;
    }

    if (cmd->forget && cmd->buf != NULL) {
        /* the EVALSHA's bytes, hiredis has its copy */
        ngx_free(cmd->buf);
    }

    cmd->buf = ngx_http_linegate_redis_format(pool, argc, argv, argvlen,
                                              &cmd->len);
    if (cmd->buf == NULL) {
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      NGX_HTTP_LINEGATE_LOG "redis command not sent");
        return NGX_ERROR;
    }

    if (node == NULL) {
        /*
         * its connection being made: formatted now, as a plain
         * command's args may be the caller's (gone once it returns)
         */
        cmd->slot = slot;
        return NGX_AGAIN;
    }

    return ngx_http_linegate_redis_send_formatted(cmd, node);
}


/* cmd->buf written on node (for one that waited: found now) */
static ngx_int_t
ngx_http_linegate_redis_send_formatted(ngx_http_linegate_redis_cmd_t *cmd,
    ngx_http_linegate_redis_node_t *node)
{
    ngx_log_t                  *log;
    ngx_http_linegate_redis_t  *rd;

    rd = &ngx_http_linegate_redis;
    log = (cmd->r != NULL) ? cmd->r->connection->log : ngx_cycle->log;

    if (node == NULL) {
        node = ngx_http_linegate_redis_route_slot(log, cmd->slot);
        if (node == NULL) {
            return ngx_http_linegate_redis_warming(cmd->slot) ? NGX_AGAIN
                                                              : NGX_ERROR;
        }
    }

    if (ngx_http_linegate_redis_write(node, ngx_http_linegate_redis_reply_cb,
                                      cmd, cmd->buf, cmd->len)
        != NGX_OK)
    {
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      NGX_HTTP_LINEGATE_LOG "redis command not sent");
        return NGX_ERROR;
    }

    cmd->node = node;

    if (cmd->acked && rd->lmcf->redis_wait_replicas > 0) {
        /* written with the command: same round trip */
        (void) ngx_http_linegate_redis_send_wait(cmd);
    }

    if (!cmd->timer.timer_set) {
        cmd->timer.handler = ngx_http_linegate_redis_cmd_timeout;
        cmd->timer.data = &ngx_http_linegate_redis_dummy;
        cmd->timer.log = log;
        ngx_add_timer(&cmd->timer, rd->lmcf->redis_command_timeout);
    }

    return NGX_OK;
}


/*
 * The node a command goes to: the only one, or on a cluster the master
 * of its key's slot (a script's first key, a command's first argument);
 * a command without a key goes to any master up. NULL: none connected
 * (the caller answers 503), logged unless log is NULL, or (not logged)
 * its node is being connected to for the first time (_warming()).
 */
static ngx_http_linegate_redis_node_t *
ngx_http_linegate_redis_route(ngx_log_t *log, int argc, const char **argv,
    const size_t *argvlen)
{
    return ngx_http_linegate_redis_route_slot(log,
                       ngx_http_linegate_redis_slot_of(argc, argv, argvlen));
}


/* a command's key's slot; NGX_HTTP_LINEGATE_REDIS_SLOTS: none, or no
 * cluster */
static ngx_uint_t
ngx_http_linegate_redis_slot_of(int argc, const char **argv,
    const size_t *argvlen)
{
    ngx_uint_t  i;

    if (!ngx_http_linegate_redis.cluster) {
        return NGX_HTTP_LINEGATE_REDIS_SLOTS;
    }

    i = ngx_http_linegate_redis_key_index(argc, argv, argvlen);

    if (i == 0) {
        return NGX_HTTP_LINEGATE_REDIS_SLOTS;
    }

    return ngx_http_linegate_redis_keyslot((u_char *) argv[i], argvlen[i]);
}


static ngx_http_linegate_redis_node_t *
ngx_http_linegate_redis_route_slot(ngx_log_t *log, ngx_uint_t slot)
{
    ngx_uint_t                       i;
    ngx_http_linegate_redis_t       *rd;
    ngx_http_linegate_redis_node_t  *node;

    rd = &ngx_http_linegate_redis;

    if (rd->nodes == NULL) {
        /* no linegate_redis in this configuration */
        return NULL;
    }

    if (!rd->cluster) {
        node = &rd->nodes[0];

        if (!ngx_http_linegate_redis_up(node)) {
            if (log && !ngx_http_linegate_redis_warming(slot)) {
                ngx_log_error(NGX_LOG_WARN, log, 0,
                              NGX_HTTP_LINEGATE_LOG "redis not connected");
            }

            return NULL;
        }

        return node;
    }

    if (slot == NGX_HTTP_LINEGATE_REDIS_SLOTS) {
        for (i = 0; i < rd->nnodes; i++) {
            if (ngx_http_linegate_redis_up(&rd->nodes[i])) {
                return &rd->nodes[i];
            }
        }

        if (log && !ngx_http_linegate_redis_warming(slot)) {
            ngx_log_error(NGX_LOG_WARN, log, 0,
                          NGX_HTTP_LINEGATE_LOG "redis cluster: no node "
                          "connected");
        }

        return NULL;
    }

    node = ngx_http_linegate_redis_slot_node(slot);

    if (node == NULL || !ngx_http_linegate_redis_up(node)) {
        if (ngx_http_linegate_redis_warming(slot)) {
            /* the map, or the slot's master, is on its way */
            return NULL;
        }

        /*
         * Once a second at most: while a master is down, every request
         * of its slots comes here (linegate_limit's fall back and log
         * that once a second themselves)
         */
        if (log && ngx_time() != rd->slot_logged) {
            rd->slot_logged = ngx_time();
            ngx_log_error(NGX_LOG_WARN, log, 0,
                          NGX_HTTP_LINEGATE_LOG "redis cluster: the master "
                          "of slot %ui is not connected (logged once a "
                          "second)", slot);
        }

        /* its master may have changed: ask */
        ngx_http_linegate_redis_refresh_soon(0);
        return NULL;
    }

    return node;
}


/*
 * Being connected to for the first time (at start, after a reload), and
 * not given up: behind Sentinel, a master named that could not be
 * reached (or was not a master) leaves the other sentinels to ask, with
 * a reconnect on its way (_lost()). A reconnect after a loss, or after
 * every attempt failed, is not waited for: Redis is down or was.
 */
static ngx_uint_t
ngx_http_linegate_redis_first_connect(ngx_http_linegate_redis_node_t *node)
{
    return !node->cold && node->state != NGX_HTTP_LINEGATE_REDIS_CONNECTED;
}


/*
 * 1: a command for slot (NGX_HTTP_LINEGATE_REDIS_SLOTS: any) cannot be
 * sent yet only because the worker's first connection is being made:
 * the connect itself, Sentinel asked for the master and its ROLE
 * checked, or a cluster's first map (CLUSTER SLOTS), then the first
 * connect to the slot's master. Nothing has failed: a request waits for
 * it rather than be answered as if Redis were down.
 */
static ngx_uint_t
ngx_http_linegate_redis_warming(ngx_uint_t slot)
{
    ngx_uint_t                       i;
    ngx_http_linegate_redis_t       *rd;
    ngx_http_linegate_redis_node_t  *node;

    rd = &ngx_http_linegate_redis;

    if (rd->nodes == NULL || rd->exiting) {
        return 0;
    }

    if (!rd->cluster) {
        return ngx_http_linegate_redis_first_connect(&rd->nodes[0]);
    }

    if (!ngx_http_linegate_redis_map_ready) {
        if (rd->refreshing) {
            return 1;
        }

        /*
         * Not over while a seed is still being connected to, or one up
         * has not failed CLUSTER SLOTS yet (asked in turn): one seed
         * refused, or failing the map, leaves the others (before
         * 2026-11-29 the first CLUSTER SLOTS failed, or found no seed up
         * yet, ended the wait: 503 though another seed was coming, t/055)
         */
        for (i = 0; i < rd->nnodes; i++) {
            node = &rd->nodes[i];

            if (ngx_http_linegate_redis_first_connect(node)
                || (node->state == NGX_HTTP_LINEGATE_REDIS_CONNECTED
                    && !node->slots_failed))
            {
                return 1;
            }
        }

        return 0;
    }

    if (slot == NGX_HTTP_LINEGATE_REDIS_SLOTS) {
        for (i = 0; i < rd->nnodes; i++) {
            if (ngx_http_linegate_redis_first_connect(&rd->nodes[i])) {
                return 1;
            }
        }

        return 0;
    }

    node = ngx_http_linegate_redis_slot_node(slot);

    return node != NULL && ngx_http_linegate_redis_first_connect(node);
}


/*
 * cmd (attached to its request) waits for its connection, within its
 * command timeout as when sent. Bounded: past
 * NGX_HTTP_LINEGATE_REDIS_WAITING_MAX, NGX_ERROR (answered at once).
 */
static ngx_int_t
ngx_http_linegate_redis_wait_connect(ngx_http_linegate_redis_cmd_t *cmd,
    ngx_event_handler_pt timeout)
{
    ngx_http_linegate_redis_t  *rd;

    rd = &ngx_http_linegate_redis;

    if (rd->nwaiting >= NGX_HTTP_LINEGATE_REDIS_WAITING_MAX) {
        if (ngx_time() != rd->waiting_logged) {
            rd->waiting_logged = ngx_time();
            ngx_log_error(NGX_LOG_WARN, cmd->r->connection->log, 0,
                          NGX_HTTP_LINEGATE_LOG "redis not connected yet, "
                          "and %ui commands wait for it already (logged "
                          "once a second)", rd->nwaiting);
        }

        return NGX_ERROR;
    }

    ngx_queue_insert_tail(&rd->waiting, &cmd->wait_link);
    rd->nwaiting++;
    cmd->waiting = 1;

    cmd->timer.handler = timeout;
    cmd->timer.data = &ngx_http_linegate_redis_dummy;
    cmd->timer.log = cmd->r->connection->log;
    ngx_add_timer(&cmd->timer, rd->lmcf->redis_command_timeout);

    return NGX_OK;
}


static void
ngx_http_linegate_redis_unwait(ngx_http_linegate_redis_cmd_t *cmd)
{
    ngx_queue_remove(&cmd->wait_link);
    ngx_http_linegate_redis.nwaiting--;
    cmd->waiting = 0;
}


/* a connection made or failed, a map taken or not: look at the waiting */
static void
ngx_http_linegate_redis_wake_soon(void)
{
    ngx_http_linegate_redis_t  *rd;

    rd = &ngx_http_linegate_redis;

    /* posted: out of hiredis's callbacks, as a handler may send again */
    if (rd->nwaiting && !rd->exiting && !rd->wake.posted) {
        ngx_post_event(&rd->wake, &ngx_posted_events);
    }
}


/*
 * Each waiting command sent if its node is up now, kept while it is
 * still being connected to, failed (its handler called NULL, as for a
 * command not sent) if that failed.
 */
static void
ngx_http_linegate_redis_wake(ngx_event_t *ev)
{
    ngx_int_t                            rc;
    ngx_uint_t                           n, each;
    ngx_queue_t                          now, *q;
    redisReply                          *reply, **element;
    ngx_connection_t                    *c;
    ngx_http_request_t                  *r;
    ngx_http_linegate_redis_t           *rd;
    ngx_http_linegate_redis_cmd_t       *cmd;
    ngx_http_linegate_redis_handler_pt   handler;
    ngx_http_linegate_redis_pipeline_t  *pl;

    rd = &ngx_http_linegate_redis;

    if (rd->exiting || rd->nwaiting == 0) {
        return;
    }

    /*
     * those waiting now, apart: a handler may add new ones (to
     * rd->waiting), and a request finalized by one detaches its own
     * commands from whichever list holds them
     */
    ngx_queue_init(&now);

    while (!ngx_queue_empty(&rd->waiting)) {
        q = ngx_queue_head(&rd->waiting);
        ngx_queue_remove(q);
        ngx_queue_insert_tail(&now, q);
    }

    while (!ngx_queue_empty(&now)) {
        q = ngx_queue_head(&now);
        cmd = ngx_queue_data(q, ngx_http_linegate_redis_cmd_t, wait_link);

        /* out of any list while written: a failed pipeline is freed */
        ngx_http_linegate_redis_unwait(cmd);

        r = cmd->r;
        handler = cmd->handler;
        pl = (ngx_http_linegate_redis_pipeline_t *) cmd;
        n = cmd->pipeline ? pl->n : 0;
        each = cmd->pipeline && pl->each;

        rc = cmd->pipeline
             ? ngx_http_linegate_redis_pipeline_write(pl)
             : ngx_http_linegate_redis_send_formatted(cmd, NULL);

        if (rc == NGX_AGAIN) {
            ngx_queue_insert_tail(&rd->waiting, q);
            rd->nwaiting++;
            cmd->waiting = 1;
            continue;
        }

        if (rc == NGX_OK) {
            continue;
        }

        /* a pipeline that failed is released, and freed, already */
        if (!cmd->pipeline) {
            if (cmd->timer.timer_set) {
                ngx_del_timer(&cmd->timer);
            }

            ngx_http_linegate_redis_release(cmd);
            ngx_free(cmd);
        }

        c = r->connection;
        reply = NULL;

        if (each) {
            /* _pipeline_each() answers an array: nothing was written */
            element = ngx_pcalloc(r->pool, n * sizeof(redisReply *));
            reply = ngx_pcalloc(r->pool, sizeof(redisReply));

            if (element != NULL && reply != NULL) {
                reply->type = REDIS_REPLY_ARRAY;
                reply->elements = n;
                reply->element = element;

            } else {
                reply = NULL;
            }
        }

        handler(r, reply);
        ngx_http_run_posted_requests(c);
    }
}


/*
 * Where a command's key is among its arguments: EVAL and EVALSHA name
 * theirs after the key count, other commands first; 0 for a command
 * without a key (SCRIPT, PING, a script without keys).
 */
static ngx_uint_t
ngx_http_linegate_redis_key_index(int argc, const char **argv,
    const size_t *argvlen)
{
    ngx_int_t  nkeys;

    if (argc < 2) {
        return 0;
    }

    if ((argvlen[0] == 4 && ngx_strncasecmp((u_char *) argv[0],
                                            (u_char *) "EVAL", 4) == 0)
        || (argvlen[0] == 7 && ngx_strncasecmp((u_char *) argv[0],
                                               (u_char *) "EVALSHA", 7)
                               == 0))
    {
        if (argc < 4) {
            return 0;
        }

        nkeys = ngx_atoi((u_char *) argv[2], argvlen[2]);

        return (nkeys > 0) ? 3 : 0;
    }

    if ((argvlen[0] == 6 && ngx_strncasecmp((u_char *) argv[0],
                                            (u_char *) "SCRIPT", 6) == 0)
        || (argvlen[0] == 4 && ngx_strncasecmp((u_char *) argv[0],
                                               (u_char *) "INFO", 4) == 0))
    {
        return 0;
    }

    return 1;
}


/*
 * A command in the Redis protocol, formatted in the request's pool (kept
 * there: a cluster's redirection sends the same bytes again) and handed
 * to hiredis as is: hiredis's own formatting (sds strings grown
 * with printf-like calls, a malloc or two per argument) was ~10% of a
 * worker's CPU on the preview.
 */
static u_char *
ngx_http_linegate_redis_format(ngx_pool_t *pool, int argc, const char **argv,
    const size_t *argvlen, size_t *n)
{
    int      i;
    size_t   len;
    u_char  *buf, *p;

    /* "*<argc>\r\n", then "$<len>\r\n<bytes>\r\n" per argument */
    len = 1 + NGX_INT_T_LEN + 2;

    for (i = 0; i < argc; i++) {
        len += 1 + NGX_SIZE_T_LEN + 2 + argvlen[i] + 2;
    }

    /*
     * no pool: a durable write or a script without a handler (it outlives
     * its request), in memory its owner frees
     */
    buf = pool ? ngx_pnalloc(pool, len) : ngx_alloc(len, ngx_cycle->log);
    if (buf == NULL) {
        return NULL;
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

    *n = p - buf;

    return buf;
}


/*
 * Connected, and not being closed: hiredis answers the commands of a
 * connection it closes (the server gone) NULL before its disconnect
 * callback tells us, and refuses any command sent meanwhile (a caller
 * that tries again from that NULL): not connected, not "not sent"
 */
static ngx_uint_t
ngx_http_linegate_redis_up(ngx_http_linegate_redis_node_t *node)
{
    return node->state == NGX_HTTP_LINEGATE_REDIS_CONNECTED
           && node->ac != NULL
           && !(node->ac->c.flags & (REDIS_DISCONNECTING | REDIS_FREEING));
}


/* hiredis copies the bytes into the node's output buffer */
static ngx_int_t
ngx_http_linegate_redis_write(ngx_http_linegate_redis_node_t *node,
    redisCallbackFn *fn, void *privdata, u_char *buf, size_t len)
{
    if (redisAsyncFormattedCommand(node->ac, fn, privdata,
                                   (const char *) buf, len)
        != REDIS_OK)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
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

    if ((r == NULL && !cmd->forget) || ngx_http_linegate_redis.exiting) {
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
        ngx_http_linegate_redis_cmd_free(cmd);
        return;
    }

    if (ngx_http_linegate_redis_redirect(ac->data, reply, cmd->buf,
                                         cmd->len, &cmd->redirects,
                                         ngx_http_linegate_redis_reply_cb,
                                         cmd, &cmd->node)
        == NGX_OK)
    {
        /*
         * a cluster's MOVED or ASK: the node named answers instead. The
         * WAIT written after the first try counts that node's replicas,
         * which had nothing to acknowledge: the write now made on
         * another node is waited for there.
         */
        if (cmd->waits) {
            (void) ngx_http_linegate_redis_send_wait(cmd);
        }

        return;
    }

    if (ngx_http_linegate_redis_tryagain(cmd, reply)) {
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

    if (r == NULL) {
        /*
         * a fire-and-forget script, redirected and given its source
         * above as a request's would be; its error is logged, a lost
         * connection is not (the connection's loss is, once)
         */
        if (reply != NULL && reply->type == REDIS_REPLY_ERROR) {
            ngx_http_linegate_redis_log_error(ngx_cycle->log, reply, NULL,
                                              0);
            reply = NULL;
        }

        ngx_http_linegate_redis_finish(cmd, reply);
        return;
    }

    if (reply == NULL) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      NGX_HTTP_LINEGATE_LOG "redis connection lost "
                      "with a command in flight");

    } else if (reply->type == REDIS_REPLY_ERROR) {
        cmd->not_run = ngx_http_linegate_redis_not_run(reply);
        cmd->refused = ngx_http_linegate_redis_request_error(r, cmd->script,
                                                             cmd->buf,
                                                             cmd->len, reply);
        reply = NULL;
    }

    if (cmd->waits) {
        /* answered once the replicas have acknowledged it, or not */
        cmd->have = 1;
        cmd->stash = (reply != NULL)
                     ? ngx_http_linegate_redis_copy(r->pool, reply) : NULL;
        return;
    }

    if (reply != NULL && cmd->acked && (cmd->wait_short || cmd->wait_unsent))
    {
        /* its WAIT was not written, or ended before the script answered */
        ngx_http_linegate_redis_unacknowledged(cmd);
        return;
    }

    ngx_http_linegate_redis_finish(cmd, reply);
}


/*
 * The writes a 200 stands on (linegate_redis_wait): the creation's commit
 * (on one Redis with the journal member that has a worker's death while
 * it bills swept) and the invoice it is billed by (and the one a
 * payment_link replaces it with: lost with its master, the request would
 * name the void invoice again, and the new link's payment be unknown to
 * the webhook), the confirm's claim
 * of its number (a claim lost with its master would put the number back
 * in the inventory while the line holds it) and its recorded line, the
 * settlements of a payment (GET's reconciliation, the webhooks). And a
 * reservation's release (the confirm's, the sweep's in pv_inspect, the
 * run's), which a settle in another slot follows on a cluster: released
 * on the account's master, lost with it, the reservation would come
 * back with nothing left in the journal to find it by. A run's fence
 * before it voids a Lines invoice (lr_void_fence): lost with its master,
 * a late store would name the void invoice. A payment_link's claim of
 * a reissue (lr_reissue_claim): lost with its master, another
 * payment_link could claim the reissue too, and both issue invoices for
 * one request. A run's settle of a paid
 * invoice on its request (lr_invoice_settle): the run removes its entry
 * once it answered, so lost with its master the paid invoice would be
 * named by nothing. And the operator's
 * writes a caller acts on: a key's revocation (a security answer: lost
 * with its master, the key would authenticate again), an API key's
 * issue (its entry here, its lookup by its caller: the 201 shows the
 * key, which lost with its master would never authenticate), a
 * provisioning credential's rotation, a line's move to active or failed
 * (its set-up worker has acknowledged the stream's entry by then), a
 * workspace's or an account's PUT (a subscription canceled, a plan
 * changed: lost with its master, the old hash would serve again).
 * Not here: the confirm's reservation (pv_reserve), which CLAIM's WAIT
 * covers on one Redis and which acknowledges itself on a cluster (its
 * args' flag: its master is not the fleet's).
 */
static ngx_uint_t
ngx_http_linegate_redis_acknowledged(ngx_int_t script)
{
    switch (script) {

    case NGX_HTTP_LINEGATE_SCRIPT_LR_CREATE:
    case NGX_HTTP_LINEGATE_SCRIPT_LR_INVOICE_STORE:
    case NGX_HTTP_LINEGATE_SCRIPT_LR_INVOICE_SETTLE:
    /* its answer deletes what would queue it again (sweepPending) */
    case NGX_HTTP_LINEGATE_SCRIPT_LR_INVOICE_ORPHAN:
    case NGX_HTTP_LINEGATE_SCRIPT_LR_REISSUE_CLAIM:
    case NGX_HTTP_LINEGATE_SCRIPT_LR_REISSUE_STORE:
    case NGX_HTTP_LINEGATE_SCRIPT_LR_RESOLVE:
    case NGX_HTTP_LINEGATE_SCRIPT_LR_VOID_FENCE:
    case NGX_HTTP_LINEGATE_SCRIPT_PV_CLAIM:
    case NGX_HTTP_LINEGATE_SCRIPT_PV_RECORD:
    case NGX_HTTP_LINEGATE_SCRIPT_PV_RELEASE:
    case NGX_HTTP_LINEGATE_SCRIPT_PV_INSPECT:
    case NGX_HTTP_LINEGATE_SCRIPT_WH_INVOICE:
    case NGX_HTTP_LINEGATE_SCRIPT_WH_SUBSCRIPTION:
    case NGX_HTTP_LINEGATE_SCRIPT_OP_KEY_CREATE:
    case NGX_HTTP_LINEGATE_SCRIPT_OP_KEY_REVOKE:
    case NGX_HTTP_LINEGATE_SCRIPT_OP_CREDENTIALS:
    case NGX_HTTP_LINEGATE_SCRIPT_OP_LINE_TRANSITION:
    case NGX_HTTP_LINEGATE_SCRIPT_OP_UPSERT:
        return 1;

    default:
        return 0;
    }
}


static ngx_int_t
ngx_http_linegate_redis_send_wait(ngx_http_linegate_redis_cmd_t *cmd)
{
    if (ngx_http_linegate_redis_write_wait(cmd->node,
                                           ngx_http_linegate_redis_wait_cb,
                                           cmd)
        != NGX_OK)
    {
        /* not sent: no replica can be said to have it, say so */
        ngx_log_error(NGX_LOG_ERR, cmd->r->connection->log, 0,
                      NGX_HTTP_LINEGATE_LOG "redis WAIT not sent");
        cmd->wait_unsent = 1;
        cmd->wait_count = 0;
        return NGX_ERROR;
    }

    cmd->waits++;
    cmd->wait_unsent = 0;

    return NGX_OK;
}


/*
 * fn(ac, WAIT's reply, privdata) after an acknowledged write just written
 * to node: the WAIT written after it, or (one in flight on the node's
 * connection) after that one answers, for every write made meanwhile
 */
static ngx_int_t
ngx_http_linegate_redis_write_wait(ngx_http_linegate_redis_node_t *node,
    redisCallbackFn *fn, void *privdata)
{
    if (node->ac == NULL
        || ngx_http_linegate_redis_waits_add(&node->waits, node->ac, fn,
                                             privdata)
           != 0)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* WAIT <linegate_redis_wait's replicas> <timeout>, on ac (its node's) */
static int
ngx_http_linegate_redis_wait_send(redisAsyncContext *ac, redisCallbackFn *fn,
    void *privdata)
{
    int                              argc, rc;
    u_char                           n[NGX_INT_T_LEN], ms[NGX_INT_T_LEN];
    u_char                          *buf;
    size_t                           len;
    const char                      *argv[3];
    size_t                           argvlen[3];
    ngx_http_linegate_redis_node_t  *node;
    ngx_http_linegate_main_conf_t   *lmcf;

    lmcf = ngx_http_linegate_redis.lmcf;

    argc = 0;
    argv[argc] = "WAIT";
    argvlen[argc++] = 4;
    argv[argc] = (const char *) n;
    argvlen[argc++] = ngx_sprintf(n, "%i", lmcf->redis_wait_replicas) - n;
    argv[argc] = (const char *) ms;
    argvlen[argc++] = ngx_sprintf(ms, "%M", lmcf->redis_wait_timeout) - ms;

    buf = ngx_http_linegate_redis_format(NULL, argc, argv, argvlen, &len);
    if (buf == NULL) {
        return -1;
    }

    /* on ac itself: one lost (node's no more) refuses it */
    rc = redisAsyncFormattedCommand(ac, fn, privdata, (const char *) buf,
                                    len);
    ngx_free(buf);

    if (rc != REDIS_OK) {
        return -1;
    }

    node = ac->data;
    node->wait_until = ngx_current_msec + lmcf->redis_wait_timeout;

    return 0;
}


/*
 * WAIT's answer, after the script's: the script's reply goes to the
 * handler only when enough replicas have it. Fewer is an unknown outcome
 * (NULL), exactly as a lost connection: the write may or may not survive
 * a failover, and every handler repairs an unknown outcome already.
 */
/* WAIT's answer: as many replicas as linegate_redis_wait asks have it */
static ngx_uint_t
ngx_http_linegate_redis_waited(redisReply *reply)
{
    return reply != NULL && reply->type == REDIS_REPLY_INTEGER
           && reply->integer
              >= (long long) ngx_http_linegate_redis.lmcf->redis_wait_replicas;
}


/*
 * An error answered to a WAIT (an ACL user without +wait: NOPERM; a
 * proxy that does not know WAIT). Read as "0 replicas", it hid a
 * configuration error behind an endless unknown outcome: it is logged
 * as the error it is, naming WAIT and the write it follows. 1: an
 * error no retry changes, as a command's (request_error); NOPERM, as a
 * script's, is Redis's configuration (a 503 until it is fixed), and an
 * "unavailable" one (LOADING, BUSY...) a retry. So is a replica's
 * refusal: the node the write went to was demoted since (a failover),
 * the write's outcome is unknown, as any unacknowledged one's.
 */
static ngx_uint_t
ngx_http_linegate_redis_wait_error(ngx_log_t *log, ngx_str_t *after,
    redisReply *reply)
{
    u_char     *p;
    u_char      what[128];
    ngx_str_t   replica = ngx_string("ERR WAIT cannot be used with replica");

    p = ngx_slprintf(what, what + sizeof(what), "WAIT after %V", after);

    ngx_http_linegate_redis_log_error(log, reply, what, p - what);

    return !ngx_http_linegate_redis_unavailable(reply)
           && !ngx_http_linegate_redis_error_is(reply->str, reply->len,
                                                "NOPERM")
           && !(reply->len >= replica.len
                && ngx_strncmp(reply->str, replica.data, replica.len) == 0);
}


static void
ngx_http_linegate_redis_wait_cb(redisAsyncContext *ac, void *data,
    void *privdata)
{
    redisReply                     *reply;
    ngx_http_request_t             *r;
    ngx_http_linegate_redis_cmd_t  *cmd;

    cmd = privdata;
    reply = data;

    cmd->waits--;

    if (ac->data == cmd->node) {
        /* replies on one connection come in order: the last one decides */
        cmd->wait_short = !ngx_http_linegate_redis_waited(reply);
        cmd->wait_count = (reply != NULL
                           && reply->type == REDIS_REPLY_INTEGER)
                          ? (ngx_int_t) reply->integer : 0;
        cmd->wait_error = (reply != NULL
                           && reply->type == REDIS_REPLY_ERROR);
        cmd->wait_refused = cmd->wait_error
            && ngx_http_linegate_redis_wait_error(
                   cmd->r ? cmd->r->connection->log : ngx_cycle->log,
                   (cmd->script >= 0)
                   ? ngx_http_linegate_script_name(cmd->script)
                   : &ngx_http_linegate_redis_plain,
                   reply);
    }

    if (cmd->tryagain) {
        /* the script met a slot in migration: sent again once all in */
        if (cmd->waits == 0) {
            ngx_http_linegate_redis_tryagain_later(cmd);
        }

        return;
    }

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
        ngx_http_linegate_redis_cmd_free(cmd);
        return;
    }

    if (cmd->wait_short || cmd->wait_unsent) {
        ngx_http_linegate_redis_unacknowledged(cmd);
        return;
    }

    ngx_http_linegate_redis_finish(cmd, cmd->stash);
}


/* an acknowledged command's WAIT counted too few: an unknown outcome */
static void
ngx_http_linegate_redis_unacknowledged(ngx_http_linegate_redis_cmd_t *cmd)
{
    ngx_http_linegate_ctx_t        *ctx;
    ngx_http_linegate_main_conf_t  *lmcf;

    lmcf = ngx_http_linegate_redis.lmcf;

    if (cmd->wait_error) {
        /* the WAIT's error, logged (wait_cb): counted as a command's */
        if (cmd->wait_refused) {
            cmd->refused = 1;

            ctx = ngx_http_linegate_get_ctx(cmd->r);
            if (ctx != NULL) {
                ctx->store_fault = 1;
            }
        }

        ngx_http_linegate_redis_finish(cmd, NULL);
        return;
    }

    ngx_log_error(NGX_LOG_ERR, cmd->r->connection->log, 0,
                  NGX_HTTP_LINEGATE_LOG "redis: %V acknowledged by %i "
                  "of %i replicas within %M ms: its outcome is unknown",
                  (cmd->script >= 0)
                  ? ngx_http_linegate_script_name(cmd->script)
                  : &ngx_http_linegate_redis_plain,
                  cmd->wait_count, lmcf->redis_wait_replicas,
                  lmcf->redis_wait_timeout);

    ngx_http_linegate_metrics_inc1(NGX_HTTP_LINEGATE_M_REDIS_ERRORS,
                                   "kind", "unacknowledged");

    ngx_http_linegate_redis_finish(cmd, NULL);
}


/* the one answer to a command or a pipeline; cmd is freed */
static void
ngx_http_linegate_redis_finish(ngx_http_linegate_redis_cmd_t *cmd,
    redisReply *reply)
{
    ngx_http_linegate_redis_finish_as(cmd, reply, reply != NULL);
}


/* ok 0: a failure, though reply holds what did answer (_pipeline_each) */
static void
ngx_http_linegate_redis_finish_as(ngx_http_linegate_redis_cmd_t *cmd,
    redisReply *reply, ngx_uint_t ok)
{
    ngx_connection_t    *c;
    ngx_http_request_t  *r;

    r = cmd->r;

    if (cmd->timer.timer_set) {
        ngx_del_timer(&cmd->timer);
    }

    ngx_http_linegate_redis_release(cmd);

    if (ok) {
        ngx_http_linegate_metrics_observe(NGX_HTTP_LINEGATE_M_REDIS_LATENCY,
            NULL, NULL,
            (ngx_msec_int_t) (ngx_http_linegate_metrics_now_us()
                              - cmd->sent_us));

    } else {
        ngx_http_linegate_metrics_inc1(NGX_HTTP_LINEGATE_M_REDIS_ERRORS,
                                       "kind",
                                       cmd->refused ? "refused" : "failed");
    }

    if (r == NULL) {
        /* a fire-and-forget script: nobody to answer */
        ngx_http_linegate_redis_cmd_free(cmd);
        return;
    }

    c = r->connection;

    ngx_http_linegate_redis_note_not_run(r, reply == NULL && cmd->not_run);

    /* after the handler: a pipeline's array reply lives in cmd */
    cmd->handler(r, reply);
    ngx_free(cmd);

    ngx_http_run_posted_requests(c);
}


/*
 * One reply of a pipeline, in its command's place. Those before the last
 * to come are copied to the request's pool (hiredis frees a reply when
 * its callback returns); the last one is hiredis's own, valid while the
 * handler runs.
 */
static void
ngx_http_linegate_redis_pipeline_cb(redisAsyncContext *ac, void *data,
    void *privdata)
{
    redisReply                          *reply;
    ngx_http_request_t                  *r;
    ngx_http_linegate_redis_part_t      *part;
    ngx_http_linegate_redis_pipeline_t  *pl;

    reply = data;
    part = privdata;
    pl = part->pl;
    r = pl->cmd.r;

    if (r != NULL && !ngx_http_linegate_redis.exiting
        && ngx_http_linegate_redis_redirect(ac->data, reply, part->buf,
                                            part->len, &part->redirects,
                                            ngx_http_linegate_redis_pipeline_cb,
                                            part, &part->node)
           == NGX_OK)
    {
        /*
         * a cluster's MOVED or ASK: still owed, by the node named; an
         * acknowledged command's WAIT is written there too (the first
         * one counts replicas of a node that had nothing to acknowledge)
         */
        if (part->acked) {
            (void) ngx_http_linegate_redis_pipeline_wait(part);
        }

        return;
    }

    pl->queued--;

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
        if (ngx_http_linegate_redis_request_error(r, -1, part->buf,
                                                  part->len, reply))
        {
            pl->cmd.refused = 1;
        }

        pl->failed = 1;

        if (ngx_strncmp(reply->str, "NOSCRIPT", 8) == 0) {
            /*
             * the node lost its scripts (SCRIPT FLUSH, a restart, a
             * promoted replica): the next requests find them again, on
             * every node (a SCRIPT LOAD with no key would reach one
             * node of a cluster); the limit's and Lines' pipelines,
             * which do not send a script again, count on it (t/400)
             */
            ngx_http_linegate_redis_reload();
        }

        if (pl->each && pl->queued) {
            /* _pipeline_each(): the handler sees which one failed */
            reply = ngx_http_linegate_redis_copy(r->pool, reply);
        }

    } else if (pl->queued) {
        reply = ngx_http_linegate_redis_copy(r->pool, reply);
        if (reply == NULL) {
            pl->failed = 1;
        }
    }

    pl->element[part->index] = reply;
    pl->received++;

    if (pl->queued) {
        return;
    }

    ngx_http_linegate_redis_pipeline_done(pl);
}


/* WAIT after an acknowledged command of a pipeline, to its node */
static ngx_int_t
ngx_http_linegate_redis_pipeline_wait(ngx_http_linegate_redis_part_t *part)
{
    ngx_http_linegate_redis_pipeline_t  *pl;

    pl = part->pl;

    if (ngx_http_linegate_redis_write_wait(part->node,
                                      ngx_http_linegate_redis_pipeline_wait_cb,
                                      part)
        != NGX_OK)
    {
        /* not sent: the pipeline cannot say a replica has it */
        ngx_log_error(NGX_LOG_ERR, pl->cmd.r->connection->log, 0,
                      NGX_HTTP_LINEGATE_LOG "redis WAIT not sent");
        part->wait_short = 1;
        return NGX_ERROR;
    }

    pl->queued++;

    return NGX_OK;
}


/*
 * A WAIT's answer. Only the node the command was last sent to counts:
 * the WAIT a redirect left behind answers for a node without the write.
 * Replies on one connection come in order, so that node's last WAIT
 * answers after the command's own reply.
 *
 * It answers too for the commands it covered on that node (written
 * before it there: a WAIT counts every write before it on its
 * connection), whether or not the command it was written for has since
 * been redirected away: those commands have no WAIT of their own.
 */
static void
ngx_http_linegate_redis_pipeline_wait_cb(redisAsyncContext *ac, void *data,
    void *privdata)
{
    ngx_uint_t                           i, unacked, counts;
    redisReply                          *reply;
    ngx_http_linegate_ctx_t             *ctx;
    ngx_http_linegate_redis_part_t      *part, *p;
    ngx_http_linegate_redis_pipeline_t  *pl;

    reply = data;
    part = privdata;
    pl = part->pl;

    pl->queued--;

    if (pl->cmd.r == NULL || ngx_http_linegate_redis.exiting) {
        ngx_http_linegate_redis_release(&pl->cmd);
        ngx_http_linegate_redis_pipeline_drop(pl);
        return;
    }

    unacked = !ngx_http_linegate_redis_waited(reply);

    /*
     * Does it answer for any write? Not when a redirect took its command
     * away and no command it covered is still on that node: a WAIT left
     * on a master that a failover made a replica (its command answered
     * MOVED) is answered "ERR WAIT cannot be used with replica
     * instances", which failed the pipeline as an error no retry
     * changes, a creation's 500 under a failover (t/039). Ignored, as a
     * command's (wait_cb) and a durable write's are.
     */
    counts = (ac->data == part->node);

    for (i = 0; !counts && i < pl->n && i < part->index; i++) {
        p = &pl->part[i];
        counts = p->acked && p->covered && p->node == ac->data;
    }

    if (counts && reply != NULL && reply->type == REDIS_REPLY_ERROR) {
        /* not "0 replicas": the error, logged, fails the pipeline */
        if (ngx_http_linegate_redis_wait_error(pl->cmd.r->connection->log,
                                               &ngx_http_linegate_redis_pl,
                                               reply))
        {
            pl->cmd.refused = 1;

            ctx = ngx_http_linegate_get_ctx(pl->cmd.r);
            if (ctx != NULL) {
                ctx->store_fault = 1;
            }
        }

        pl->failed = 1;
    }

    if (ac->data == part->node) {
        part->wait_short = unacked;
    }

    for (i = 0; i < pl->n && i < part->index; i++) {
        p = &pl->part[i];

        if (p->acked && p->covered && p->node == ac->data && unacked) {
            p->wait_short = 1;
        }
    }

    if (pl->queued) {
        return;
    }

    ngx_http_linegate_redis_pipeline_done(pl);
}


/*
 * Every callback in: the handler gets the replies as one array (the last
 * to come hiredis's own, valid while it runs), or NULL when one was lost,
 * failed, or (linegate_redis_wait) is not on enough replicas.
 */
static void
ngx_http_linegate_redis_pipeline_done(ngx_http_linegate_redis_pipeline_t *pl)
{
    ngx_uint_t                      i;
    redisReply                     *reply;
    ngx_http_request_t             *r;
    ngx_http_linegate_main_conf_t  *lmcf;

    r = pl->cmd.r;
    lmcf = ngx_http_linegate_redis.lmcf;

    for (i = 0; i < pl->n; i++) {
        if (!pl->part[i].wait_short || pl->lost || pl->failed) {
            continue;
        }

        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      NGX_HTTP_LINEGATE_LOG "redis: a pipeline's "
                      "command not acknowledged by %i replicas within "
                      "%M ms: its outcome is unknown",
                      lmcf->redis_wait_replicas, lmcf->redis_wait_timeout);

        ngx_http_linegate_metrics_inc1(NGX_HTTP_LINEGATE_M_REDIS_ERRORS,
                                       "kind", "unacknowledged");
        pl->failed = 1;
        break;
    }

    if (pl->lost) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      NGX_HTTP_LINEGATE_LOG "redis connection lost "
                      "with a command in flight");
    }

    if (pl->each) {
        ngx_http_linegate_redis_finish_as(&pl->cmd,
                                  ngx_http_linegate_redis_pipeline_known(pl),
                                  !pl->lost && !pl->failed);
        return;
    }

    if (pl->lost || pl->failed) {
        reply = NULL;

    } else {
        pl->array.type = REDIS_REPLY_ARRAY;
        pl->array.elements = pl->n;
        pl->array.element = pl->element;
        reply = &pl->array;
    }

    ngx_http_linegate_redis_finish(&pl->cmd, reply);
}


/*
 * _pipeline_each(): the replies as one array, NULL where the outcome is
 * not known (none came, or linegate_redis_wait's WAIT counted too few
 * replicas)
 */
static redisReply *
ngx_http_linegate_redis_pipeline_known(ngx_http_linegate_redis_pipeline_t *pl)
{
    ngx_uint_t  i;

    for (i = 0; i < pl->n; i++) {
        if (pl->part[i].wait_short) {
            pl->element[i] = NULL;
        }
    }

    pl->array.type = REDIS_REPLY_ARRAY;
    pl->array.elements = pl->n;
    pl->array.element = pl->element;

    return &pl->array;
}


/*
 * _pipeline_each()'s timeout: as a command's, but the handler gets the
 * replies that came (copies in the request's pool: the pipeline was not
 * complete when each came), NULL for the others, which may still run.
 * An acknowledged command's WAIT may not have answered: unknown too.
 */
static void
ngx_http_linegate_redis_pipeline_timeout(ngx_event_t *ev)
{
    ngx_uint_t                           i;
    ngx_connection_t                    *c;
    ngx_http_request_t                  *r;
    ngx_http_linegate_redis_cmd_t       *cmd;
    ngx_http_linegate_redis_pipeline_t  *pl;

    /* the replies still owed are dropped, and free pl with the last */
    r = ngx_http_linegate_redis_timed_out(ev, &cmd);

    if (r == NULL) {
        return;
    }

    c = r->connection;
    pl = (ngx_http_linegate_redis_pipeline_t *) cmd;

    for (i = 0; i < pl->n; i++) {
        if (pl->part[i].acked) {
            pl->element[i] = NULL;
        }
    }

    cmd->handler(r, ngx_http_linegate_redis_pipeline_known(pl));

    if (cmd->waiting) {
        ngx_free(pl);
    }

    ngx_http_run_posted_requests(c);
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
ngx_http_linegate_redis_log_error(ngx_log_t *log, redisReply *reply,
    u_char *what, size_t what_len)
{
    size_t                               len;
    ngx_uint_t                           i, more;
    ngx_http_linegate_redis_err_code_t  *e, *oldest;

    /* every reply: a demoted master is looked for again at once */
    ngx_http_linegate_redis_demoted(reply);

    for (len = 0;
         len < reply->len && len < NGX_HTTP_LINEGATE_REDIS_ERR_CODE_LEN
         && reply->str[len] != ' ';
         len++)
    {
        /* void */
    }

    e = NULL;
    oldest = &ngx_http_linegate_redis_err_codes[0];

    for (i = 0; i < NGX_HTTP_LINEGATE_REDIS_ERR_CODES; i++) {
        if (ngx_http_linegate_redis_err_codes[i].len == len
            && ngx_strncmp(ngx_http_linegate_redis_err_codes[i].code,
                           reply->str, len)
               == 0)
        {
            e = &ngx_http_linegate_redis_err_codes[i];
            break;
        }

        if (ngx_http_linegate_redis_err_codes[i].logged < oldest->logged) {
            oldest = &ngx_http_linegate_redis_err_codes[i];
        }
    }

    if (e == NULL) {
        e = oldest;
        e->logged = 0;
        e->more = 0;
        e->len = len;
        ngx_memcpy(e->code, reply->str, len);
    }

    if (e->logged == ngx_time()) {
        e->more++;
        return;
    }

    more = e->more;
    e->more = 0;
    e->logged = ngx_time();

    if (ngx_http_linegate_redis_error_killed(reply->str, reply->len)) {
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      NGX_HTTP_LINEGATE_LOG "redis unavailable: a script "
                      "stopped by SCRIPT KILL, nothing written: \"%*s\" "
                      "(logged once a second, %ui more since)",
                      (size_t) ngx_min(reply->len, 200), reply->str, more);

    } else if (ngx_http_linegate_redis_unavailable(reply)) {
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      NGX_HTTP_LINEGATE_LOG "redis unavailable: \"%*s\" "
                      "(logged once a second, %ui more since)",
                      (size_t) ngx_min(reply->len, 200), reply->str, more);

    } else if (what_len) {
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      NGX_HTTP_LINEGATE_LOG "redis error: \"%*s\" on %*s "
                      "(logged once a second, %ui more since)",
                      (size_t) ngx_min(reply->len, 300), reply->str,
                      what_len, what, more);

    } else {
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      NGX_HTTP_LINEGATE_LOG "redis error: \"%*s\" "
                      "(logged once a second, %ui more since)",
                      (size_t) ngx_min(reply->len, 300), reply->str, more);
    }
}


/*
 * A request's command answered with an error. Redis cannot serve now
 * (LOADING, OOM...: the list above) or a pipeline's NOSCRIPT (the scripts
 * are loaded again meanwhile): a retry succeeds, the request answers 503
 * with Retry-After (so after a NOPERM: below). Any other error no retry
 * changes: WRONGTYPE (a key of another type where ours should be:
 * corrupted data), a script's own error (a bug). A client told "retry
 * shortly" would retry for ever: the request's ctx is marked and its 503
 * becomes a 500 (reply.c). The line names the script and the kinds of
 * its keys, never their ids (an API key's digest). 1: such a fault.
 */
static ngx_uint_t
ngx_http_linegate_redis_request_error(ngx_http_request_t *r,
    ngx_int_t script, u_char *buf, size_t len, redisReply *reply)
{
    u_char                   *p;
    ngx_http_linegate_ctx_t  *ctx;
    u_char                    what[256];

    if (ngx_http_linegate_redis_unavailable(reply)
        || (reply->len >= 8 && ngx_strncmp(reply->str, "NOSCRIPT", 8) == 0))
    {
        ngx_http_linegate_redis_log_error(r->connection->log, reply, NULL, 0);
        return 0;
    }

    p = ngx_http_linegate_redis_describe(what, what + sizeof(what), script,
                                         buf, len);

    ngx_http_linegate_redis_log_error(r->connection->log, reply, what,
                                      p - what);

    if (ngx_http_linegate_redis_error_is(reply->str, reply->len, "NOPERM")) {
        /*
         * an ACL refusing our user a key or command: Redis's
         * configuration, which the operator fixes, as NOAUTH's
         * password: a retry then succeeds, a 503 (durable writes keep
         * their alert, t/125)
         */
        return 0;
    }

    ctx = ngx_http_linegate_get_ctx(r);
    if (ctx != NULL) {
        ctx->store_fault = 1;
    }

    return 1;
}


/*
 * What a command touched, read back from its bytes as sent (buf, len:
 * "*<argc>\r\n", then "$<len>\r\n<bytes>\r\n" per argument): its
 * script's name (a plain command's name), then the kinds of its keys
 * (keys.c: ids written as "*")
 */
static u_char *
ngx_http_linegate_redis_describe(u_char *p, u_char *last, ngx_int_t script,
    u_char *buf, size_t len)
{
    int          argc, i, first, n;
    u_char      *b, *nl, *end;
    ngx_int_t    nkeys, size;
    const char  *argv[NGX_HTTP_LINEGATE_REDIS_MAX_ARGS];
    size_t       argvlen[NGX_HTTP_LINEGATE_REDIS_MAX_ARGS];

    argc = 0;
    b = buf;
    end = buf + len;

    if (buf != NULL && b < end && *b == '*') {
        b = ngx_strlchr(b, end, '\n');

        while (b != NULL && ++b < end && *b == '$'
               && argc < NGX_HTTP_LINEGATE_REDIS_MAX_ARGS)
        {
            nl = ngx_strlchr(b, end, '\r');
            if (nl == NULL) {
                break;
            }

            size = ngx_atoi(b + 1, nl - b - 1);
            if (size < 0 || (size_t) (end - nl) < 2 + (size_t) size + 2) {
                break;
            }

            argv[argc] = (const char *) nl + 2;
            argvlen[argc] = size;
            argc++;

            b = nl + 2 + size + 1;
        }
    }

    if (script >= 0) {
        p = ngx_slprintf(p, last, "%V",
                         ngx_http_linegate_script_name(script));

    } else if (argc > 0) {
        p = ngx_slprintf(p, last, "%*s", ngx_min(argvlen[0], 32), argv[0]);
    }

    first = (int) ngx_http_linegate_redis_key_index(argc, argv, argvlen);

    if (first == 0) {
        return p;
    }

    if (first == 3) {
        /* EVAL, EVALSHA: the key count first */
        nkeys = ngx_atoi((u_char *) argv[2], argvlen[2]);
        n = (nkeys > argc - 3) ? argc - 3 : (int) nkeys;

    } else {
        n = 1;
    }

    p = ngx_slprintf(p, last, " of key%s ", n > 1 ? "s" : "");

    for (i = first; i < first + n; i++) {
        if (i > first) {
            p = ngx_slprintf(p, last, ", ");
        }

        p = ngx_http_linegate_key_kind_write(p, last, (u_char *) argv[i],
                                             argvlen[i]);
    }

    return p;
}


/*
 * An error reply, a request's or a durable write's: -READONLY means the
 * master we are connected to became a replica (a failover, the old
 * master still up). With Sentinel, find the new one: posted, out of
 * hiredis's callback, as the drop frees the connection that answered.
 */
static void
ngx_http_linegate_redis_demoted(redisReply *reply)
{
    ngx_http_linegate_redis_t  *rd;

    rd = &ngx_http_linegate_redis;

    if (rd->sentinel
        && ngx_http_linegate_redis_error_is(reply->str, reply->len,
                                            "READONLY"))
    {
        ngx_http_linegate_redis_post_rediscover();
    }
}


static ngx_int_t
ngx_http_linegate_redis_unavailable(redisReply *reply)
{
    ngx_str_t  *e;

    /* Redis 6 wraps the error a script's redis.call met: unwrapped */
    for (e = ngx_http_linegate_redis_unavailable_errors; e->len; e++) {
        if (ngx_http_linegate_redis_error_is(reply->str, reply->len,
                                             (const char *) e->data))
        {
            return 1;
        }
    }

    /*
     * a script of ours an operator stopped with SCRIPT KILL: its code is
     * ERR, but Redis kills only a script that wrote nothing (UNKILLABLE
     * otherwise), so this is BUSY's moment, not a bug: a retry succeeds
     */
    return ngx_http_linegate_redis_error_killed(reply->str, reply->len);
}


/*
 * Errors a cluster answers instead of running a command, nothing of it
 * run: TRYAGAIN (a multi-key command's slot in migration: the last try's,
 * after tryagain() sent it again until its deadline), CLUSTERDOWN, and a
 * MOVED or ASK left after the redirections followed (redirect()). Read
 * as they came, first word exact: an error Redis 6 wraps ("ERR Error
 * running script...") is one a script's redis.call met, maybe after it
 * wrote, and a script's redis.call meets none of these (a key of another
 * slot is an ERR). A script of ours answers TRYAGAIN itself only before
 * it writes (lr_here.lua: the gate's admission given back): the same.
 */
static ngx_str_t  ngx_http_linegate_redis_not_run_errors[] = {
    ngx_string("TRYAGAIN"),
    ngx_string("CLUSTERDOWN"),
    ngx_string("MOVED"),
    ngx_string("ASK"),
    ngx_null_string
};


static ngx_uint_t
ngx_http_linegate_redis_not_run(redisReply *reply)
{
    ngx_str_t  *e;

    for (e = ngx_http_linegate_redis_not_run_errors; e->len; e++) {
        if (reply->len >= e->len
            && ngx_strncmp(reply->str, e->data, e->len) == 0
            && (reply->len == e->len || reply->str[e->len] == ' '))
        {
            return 1;
        }
    }

    return 0;
}


/*
 * ctx->store_not_run for the handler about to run: 1 only when its
 * command was refused before it ran (redis.h). Cleared whenever another
 * command of the request is sent (attach), so that a step that reads it
 * never reads an earlier command's.
 */
static void
ngx_http_linegate_redis_note_not_run(ngx_http_request_t *r, ngx_uint_t not_run)
{
    ngx_http_linegate_ctx_t  *ctx;

    ctx = ngx_http_linegate_get_ctx(r);

    if (ctx != NULL) {
        ctx->store_not_run = not_run ? 1 : 0;
    }
}


/*
 * A cluster's TRYAGAIN: a script of several keys met its slot in
 * migration, some of its keys moved, some not yet (or, on the importing
 * node, not all arrived). Nothing ran. It is sent again to the node that
 * said so, after ASKING (the importing node serves it once the keys are
 * in; the other answers ASK or MOVED, which are followed), the delay
 * doubling from 10 ms up to 100 ms, for as long as the migration lasts
 * within its command's deadline (cmd->timer, set at its first send), the
 * last try sent 50 ms before it at the latest: its TRYAGAIN comes back
 * before the timeout, and the caller knows that nothing ran (not_run: a
 * creation then has nothing to release), where a timeout would be an
 * unknown outcome.
 * Until 2026-11-29 it was sent again 6 times (630 ms in all), whatever
 * linegate_redis_command_timeout said: a slot that stayed in migration
 * longer (a workspace's of many requests) answered 503 before the
 * timeout. 1: it will be; 0: the TRYAGAIN is the answer (the 503 of an
 * unavailable store), no room being left for another try.
 */
static ngx_uint_t
ngx_http_linegate_redis_tryagain(ngx_http_linegate_redis_cmd_t *cmd,
    redisReply *reply)
{
    if (!ngx_http_linegate_redis.cluster || reply == NULL
        || reply->type != REDIS_REPLY_ERROR || reply->len < 8
        || ngx_strncmp(reply->str, "TRYAGAIN", 8) != 0
        || cmd->buf == NULL || cmd->node == NULL
        || ngx_http_linegate_redis_tryagain_delay(cmd) == 0)
    {
        return 0;
    }

    cmd->tryagain = 1;

    if (cmd->waits == 0) {
        ngx_http_linegate_redis_tryagain_later(cmd);
    }

    /* else: the WAIT written after it answers first (wait_cb) */

    return 1;
}


/*
 * The delay before the next try: the backoff, cut so that the try is
 * sent 50 ms before the command's deadline at the latest; 0: less than
 * that is left (or the deadline passed: a forgotten command's timer
 * fired), no next try.
 */
static ngx_msec_t
ngx_http_linegate_redis_tryagain_delay(ngx_http_linegate_redis_cmd_t *cmd)
{
    ngx_msec_t      delay;
    ngx_msec_int_t  left;

    if (!cmd->timer.timer_set) {
        return 0;
    }

    left = (ngx_msec_int_t) (cmd->timer.timer.key - ngx_current_msec);

    if (left <= NGX_HTTP_LINEGATE_CLUSTER_TRYAGAIN_LAST_MS) {
        return 0;
    }

    /* 10, 20, 40, 80, then 100 ms: the shift bounded, never overflows */
    delay = (ngx_msec_t) NGX_HTTP_LINEGATE_CLUSTER_TRYAGAIN_MS
            << ngx_min(cmd->tryagains, 4);
    delay = ngx_min(delay, NGX_HTTP_LINEGATE_CLUSTER_TRYAGAIN_MAX_MS);

    return ngx_min(delay, (ngx_msec_t) left
                          - NGX_HTTP_LINEGATE_CLUSTER_TRYAGAIN_LAST_MS);
}


static void
ngx_http_linegate_redis_tryagain_later(ngx_http_linegate_redis_cmd_t *cmd)
{
    ngx_msec_t  delay;

    cmd->again.handler = ngx_http_linegate_redis_tryagain_handler;
    cmd->again.data = &ngx_http_linegate_redis_dummy;
    cmd->again.log = ngx_cycle->log;

    /*
     * after a WAIT (wait_cb), the deadline may have come nearer: none
     * left, the command's timeout fires first, which ends it (the
     * handler frees a command whose request is gone)
     */
    delay = ngx_http_linegate_redis_tryagain_delay(cmd);

    ngx_add_timer(&cmd->again, delay ? delay : 1);
    cmd->tryagains++;
}


/*
 * No reply is owed while the delay runs: if the request is gone (its
 * command timed out, or it ended), cmd is freed here.
 */
static void
ngx_http_linegate_redis_tryagain_handler(ngx_event_t *ev)
{
    ngx_http_request_t             *r;
    ngx_http_linegate_redis_cmd_t  *cmd;

    static char  asking[] = "*1\r\n$6\r\nASKING\r\n";

    cmd = (ngx_http_linegate_redis_cmd_t *)
          ((u_char *) ev - offsetof(ngx_http_linegate_redis_cmd_t, again));
    r = cmd->r;

    cmd->tryagain = 0;

    if ((r == NULL && !cmd->forget) || ngx_http_linegate_redis.exiting) {
        if (cmd->timer.timer_set) {
            ngx_del_timer(&cmd->timer);
        }

        ngx_http_linegate_redis_release(cmd);
        ngx_http_linegate_redis_cmd_free(cmd);
        return;
    }

    if (cmd->node->state != NGX_HTTP_LINEGATE_REDIS_CONNECTED
        || ngx_http_linegate_redis_write(cmd->node, NULL, NULL,
                                         (u_char *) asking,
                                         sizeof(asking) - 1)
           != NGX_OK
        || ngx_http_linegate_redis_write(cmd->node,
                                         ngx_http_linegate_redis_reply_cb,
                                         cmd, cmd->buf, cmd->len)
           != NGX_OK)
    {
        ngx_log_error(NGX_LOG_ERR, r ? r->connection->log : ngx_cycle->log,
                      0, NGX_HTTP_LINEGATE_LOG "redis command not sent "
                      "again after TRYAGAIN");
        ngx_http_linegate_redis_finish(cmd, NULL);
        return;
    }

    if (cmd->acked && ngx_http_linegate_redis.lmcf->redis_wait_replicas > 0)
    {
        (void) ngx_http_linegate_redis_send_wait(cmd);
    }
}


/*
 * A command's (or a pipeline's) timeout, the part both handlers share:
 * cmd released, counted and logged; the request waiting for it, if any.
 */
static ngx_http_request_t *
ngx_http_linegate_redis_timed_out(ngx_event_t *ev,
    ngx_http_linegate_redis_cmd_t **cmdp)
{
    ngx_http_request_t             *r;
    ngx_http_linegate_redis_cmd_t  *cmd;

    cmd = (ngx_http_linegate_redis_cmd_t *)
          ((u_char *) ev - offsetof(ngx_http_linegate_redis_cmd_t, timer));
    r = cmd->r;
    *cmdp = cmd;

    if (cmd->waiting) {
        /* never written: the caller frees it once its handler ran */
        ngx_http_linegate_redis_unwait(cmd);
        ngx_http_linegate_redis_release(cmd);

        ngx_http_linegate_metrics_inc1(NGX_HTTP_LINEGATE_M_REDIS_ERRORS,
                                       "kind", "timeout");

        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      NGX_HTTP_LINEGATE_LOG "redis not connected within "
                      "linegate_redis_command_timeout");

        cmd->waiting = 1;    /* (to the caller: free it) */
        return r;
    }

    /*
     * The command stays queued in hiredis: its reply, if it ever comes, is
     * dropped by the reply callback, which frees cmd. It may still run:
     * the handler's NULL means "unknown", not "nothing happened".
     */
    ngx_http_linegate_redis_release(cmd);

    ngx_http_linegate_metrics_inc1(NGX_HTTP_LINEGATE_M_REDIS_ERRORS, "kind",
                                   "timeout");

    if (r != NULL) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      NGX_HTTP_LINEGATE_LOG "redis command timed out");
    }

    return r;
}


static void
ngx_http_linegate_redis_cmd_timeout(ngx_event_t *ev)
{
    ngx_connection_t               *c;
    ngx_http_request_t             *r;
    ngx_http_linegate_redis_cmd_t  *cmd;

    r = ngx_http_linegate_redis_timed_out(ev, &cmd);

    if (r == NULL) {
        return;
    }

    c = r->connection;

    /* it may still run */
    ngx_http_linegate_redis_note_not_run(r, 0);

    cmd->handler(r, NULL);

    if (cmd->waiting) {
        ngx_free(cmd);
    }

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

    /* a new command: an earlier one's refusal says nothing of it */
    ngx_http_linegate_redis_note_not_run(cmd->r, 0);

    return NGX_OK;
}


static void
ngx_http_linegate_redis_detach(void *data)
{
    ngx_http_linegate_redis_cmd_t  *cmd = data;

    if (cmd->waiting) {
        /* never written: nothing owes it a callback */
        ngx_http_linegate_redis_unwait(cmd);

        if (cmd->timer.timer_set) {
            ngx_del_timer(&cmd->timer);
        }

        ngx_free(cmd);
        return;
    }

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


/* a fire-and-forget script's bytes are its own, a request's its pool's */
static void
ngx_http_linegate_redis_cmd_free(ngx_http_linegate_redis_cmd_t *cmd)
{
    if (cmd->forget && cmd->buf != NULL) {
        ngx_free(cmd->buf);
    }

    ngx_free(cmd);
}


/* durable writes */

ngx_int_t
ngx_http_linegate_redis_durable(ngx_log_t *log,
    ngx_http_linegate_script_id_e script, int nkeys,
    ngx_http_linegate_redis_args_t *args, const char *what)
{
    return ngx_http_linegate_redis_durable_queue(log, NULL, NULL, script,
                                                 nkeys, args, what);
}


ngx_int_t
ngx_http_linegate_redis_durable_command(ngx_log_t *log,
    ngx_http_linegate_redis_args_t *args, const char *what)
{
    return ngx_http_linegate_redis_durable_queue(log, NULL, NULL, -1, 0,
                                                 args, what);
}


ngx_int_t
ngx_http_linegate_redis_durable_then(ngx_log_t *log,
    ngx_http_linegate_script_id_e script, int nkeys,
    ngx_http_linegate_redis_args_t *args, const char *what,
    ngx_http_linegate_redis_then_pt then)
{
    return ngx_http_linegate_redis_durable_queue(log, then, NULL, script,
                                                 nkeys, args, what);
}


ngx_int_t
ngx_http_linegate_redis_durable_command_then(ngx_log_t *log,
    ngx_http_linegate_redis_args_t *args, const char *what,
    ngx_http_linegate_redis_then_pt then, ngx_str_t *note)
{
    return ngx_http_linegate_redis_durable_queue(log, then, note, -1, 0,
                                                 args, what);
}


/* script: an ngx_http_linegate_script_id_e, or -1 for a plain command */
static ngx_int_t
ngx_http_linegate_redis_durable_queue(ngx_log_t *log,
    ngx_http_linegate_redis_then_pt then, ngx_str_t *note, ngx_int_t script,
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

    /* one block: the entry, the arguments' bytes, what, the note */
    wlen = ngx_strlen(what);
    len = sizeof(ngx_http_linegate_redis_durable_t) + wlen + 1
          + (note ? note->len : 0);

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
    d->acked = (script >= 0) ? ngx_http_linegate_redis_acknowledged(script)
                             : args->acknowledged;
    d->nkeys = nkeys;
    d->then = then;

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
    p = ngx_cpymem(p, what, wlen + 1);

    if (note != NULL && note->len) {
        d->note.data = p;
        d->note.len = note->len;
        ngx_memcpy(p, note->data, note->len);
    }

    ngx_queue_insert_tail(&rd->durable, &d->queue);
    rd->ndurable++;

    /* not sent when its node is down: the retry timer sends it */
    (void) ngx_http_linegate_redis_durable_send(d);

    ngx_http_linegate_redis_durable_arm();

    return NGX_OK;
}


ngx_uint_t
ngx_http_linegate_redis_connected(void)
{
    ngx_http_linegate_redis_t  *rd;

    rd = &ngx_http_linegate_redis;

    if (rd->cluster) {
        /* per slot, a command learns it: here, whether a map is known */
        return ngx_http_linegate_redis_map_ready;
    }

    return rd->nodes != NULL && ngx_http_linegate_redis_up(&rd->nodes[0]);
}


ngx_uint_t
ngx_http_linegate_redis_connecting(void)
{
    return ngx_http_linegate_redis_warming(NGX_HTTP_LINEGATE_REDIS_SLOTS);
}


ngx_uint_t
ngx_http_linegate_redis_conn_gen(void)
{
    return ngx_http_linegate_redis.conn_gen;
}


/*
 * The address of a server the worker's own connection is up with: the
 * one Redis, the master Sentinel named (and the connection checked with
 * ROLE), or a connected master of a cluster. The host is the node's own
 * buffer: copy it.
 */
ngx_int_t
ngx_http_linegate_redis_server(ngx_str_t *host, ngx_int_t *port)
{
    ngx_uint_t                       i;
    ngx_http_linegate_redis_t       *rd;
    ngx_http_linegate_redis_node_t  *node;

    rd = &ngx_http_linegate_redis;

    for (i = 0; rd->nodes != NULL && i < rd->nnodes; i++) {
        node = &rd->nodes[i];

        if (node->state == NGX_HTTP_LINEGATE_REDIS_CONNECTED
            && (!rd->cluster || ngx_http_linegate_redis_serves(node)))
        {
            *host = node->host;
            *port = node->port;
            return NGX_OK;
        }
    }

    return NGX_DECLINED;
}


ngx_int_t
ngx_http_linegate_redis_cluster_masters(ngx_http_linegate_redis_addr_t *addr,
    ngx_uint_t max, ngx_uint_t *n)
{
    ngx_uint_t                         i;
    ngx_http_linegate_redis_master_t  *m;

    *n = 0;

    if (!ngx_http_linegate_redis.masters_set
        || ngx_http_linegate_redis_nmasters > max)
    {
        return NGX_DECLINED;
    }

    for (i = 0; i < ngx_http_linegate_redis_nmasters; i++) {
        m = &ngx_http_linegate_redis_masters[i];
        addr[i].host.data = (u_char *) m->host;
        addr[i].host.len = m->host_len;
        addr[i].port = m->port;
    }

    *n = ngx_http_linegate_redis_nmasters;

    return NGX_OK;
}


ngx_uint_t
ngx_http_linegate_redis_masters_gen(void)
{
    return ngx_http_linegate_redis.masters_gen;
}


ngx_uint_t
ngx_http_linegate_redis_masters_fresh(ngx_msec_t within)
{
    ngx_http_linegate_redis_t  *rd;

    rd = &ngx_http_linegate_redis;

    return rd->masters_set && ngx_current_msec - rd->masters_at < within;
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
        d = ngx_queue_data(q, ngx_http_linegate_redis_durable_t, queue);

        if (!d->sent) {
            (void) ngx_http_linegate_redis_durable_send(d);
        }
    }
}


static ngx_int_t
ngx_http_linegate_redis_durable_send(ngx_http_linegate_redis_durable_t *d)
{
    int                              argc;
    u_char                           nkeys[NGX_INT_T_LEN], *buf;
    size_t                           len;
    ngx_int_t                        rc;
    const char                      *argv[NGX_HTTP_LINEGATE_REDIS_MAX_ARGS];
    size_t                           argvlen[NGX_HTTP_LINEGATE_REDIS_MAX_ARGS];
    ngx_http_linegate_redis_node_t  *node;

    argc = ngx_http_linegate_redis_durable_argv(d, argv, argvlen, nkeys);

    /* quietly: a write waiting for its node is retried, and logged then */
    node = ngx_http_linegate_redis_route(NULL, argc, argv, argvlen);
    if (node == NULL) {
        return NGX_ERROR;
    }

    buf = ngx_http_linegate_redis_format(NULL, argc, argv, argvlen, &len);
    if (buf == NULL) {
        return NGX_ERROR;
    }

    rc = ngx_http_linegate_redis_write(node,
                                       ngx_http_linegate_redis_durable_cb, d,
                                       buf, len);
    ngx_free(buf);

    if (rc != NGX_OK) {
        return NGX_ERROR;
    }

    d->sent++;
    d->attempts++;
    d->node = node;
    d->redirects = 0;

    ngx_http_linegate_redis_durable_wait(d);

    return NGX_OK;
}


/* d's command as sent: EVALSHA (EVAL after a NOSCRIPT), or its own */
static int
ngx_http_linegate_redis_durable_argv(ngx_http_linegate_redis_durable_t *d,
    const char **argv, size_t *argvlen, u_char *nkeys)
{
    return ngx_http_linegate_redis_argv(d->script, d->eval, d->nkeys,
                                        &d->args, argv, argvlen, nkeys);
}


/*
 * A command's words, a request's and a durable write's alike: script's
 * EVALSHA (EVAL: eval) with its number of keys, then its arguments; a
 * plain command (script -1), the arguments only. nkeys_buf holds the
 * number's text (NGX_INT_T_LEN). The count of words.
 */
static int
ngx_http_linegate_redis_argv(ngx_int_t script, ngx_uint_t eval, int nk,
    ngx_http_linegate_redis_args_t *a, const char **argv, size_t *argvlen,
    u_char *nkeys)
{
    int         i, argc;
    ngx_str_t   src, *sha;

    argc = 0;

    if (script >= 0) {
        if (eval) {
            ngx_http_linegate_script_source(script, &src);
            argv[argc] = "EVAL";
            argvlen[argc++] = 4;
            argv[argc] = (const char *) src.data;
            argvlen[argc++] = src.len;

        } else {
            sha = ngx_http_linegate_script_sha(script);
            argv[argc] = "EVALSHA";
            argvlen[argc++] = 7;
            argv[argc] = (const char *) sha->data;
            argvlen[argc++] = sha->len;
        }

        argv[argc] = (const char *) nkeys;
        argvlen[argc++] = ngx_sprintf(nkeys, "%d", nk) - nkeys;
    }

    for (i = 0; i < a->argc; i++) {
        argv[argc] = a->argv[i];
        argvlen[argc++] = a->argvlen[i];
    }

    return argc;
}


/* WAIT after an acknowledged script, on its node: without it, not trusted */
static void
ngx_http_linegate_redis_durable_wait(ngx_http_linegate_redis_durable_t *d)
{
    d->waited = 0;
    d->wait_lost = 0;

    if (d->acked
        && ngx_http_linegate_redis.lmcf->redis_wait_replicas > 0
        && ngx_http_linegate_redis_write_wait(d->node,
                                      ngx_http_linegate_redis_durable_wait_cb,
                                      d)
           == NGX_OK)
    {
        d->sent++;
        d->waited = 1;
    }
}


/*
 * A cluster's MOVED or ASK, followed at once as a request's command is
 * (ASK: once, after ASKING, on the importing node). Sent again by the
 * retry timer instead, to the node of the map, a write would meet ASK
 * again for as long as its slot migrates. Its WAIT goes with it: the
 * one written on the first node counts replicas of a node the write did
 * not reach (durable_wait_cb ignores it). NGX_OK: sent there.
 */
static ngx_int_t
ngx_http_linegate_redis_durable_redirect(ngx_http_linegate_redis_durable_t *d,
    redisAsyncContext *ac, redisReply *reply)
{
    int                                  argc;
    u_char                               nkeys[NGX_INT_T_LEN], *buf;
    size_t                               len;
    ngx_int_t                            rc;
    const char                          *argv[NGX_HTTP_LINEGATE_REDIS_MAX_ARGS];
    size_t                               lens[NGX_HTTP_LINEGATE_REDIS_MAX_ARGS];
    ngx_http_linegate_redis_redirect_t   rr;

    /* its bytes are made again only for a redirection */
    if (!ngx_http_linegate_redis.cluster
        || ngx_http_linegate_redis_redirect_parse(reply->str, reply->len,
                                                  &rr)
           != 0)
    {
        return NGX_DECLINED;
    }

    len = 0;
    argc = ngx_http_linegate_redis_durable_argv(d, argv, lens, nkeys);
    buf = ngx_http_linegate_redis_format(NULL, argc, argv, lens, &len);

    /* no bytes (out of memory): a MOVED still teaches the map, and the
     * retry timer sends the write there */
    rc = ngx_http_linegate_redis_redirect(ac->data, reply, buf, len,
                                          &d->redirects,
                                          ngx_http_linegate_redis_durable_cb,
                                          d, &d->node);
    if (buf != NULL) {
        ngx_free(buf);
    }

    if (rc != NGX_OK) {
        return NGX_DECLINED;
    }

    d->sent++;
    ngx_http_linegate_redis_durable_wait(d);

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

    if (ngx_http_linegate_redis_durable_owed(d)) {
        return;
    }

    if (reply != NULL && reply->type == REDIS_REPLY_ERROR) {

        if (d->script >= 0 && !d->eval
            && ngx_strncmp(reply->str, "NOSCRIPT", 8) == 0)
        {
            d->eval = 1;

            if (ngx_http_linegate_redis_durable_send(d) == NGX_OK) {
                return;
            }

            /* the retry timer sends it again */
            return;
        }

        if (ngx_http_linegate_redis_durable_redirect(d, ac, reply)
            == NGX_OK)
        {
            return;
        }

        /*
         * a demoted master's READONLY sends the worker to the sentinels,
         * as a request's does: a worker with only durable writes to make
         * would otherwise retry them on the old master until it closes
         * the connection
         */
        ngx_http_linegate_redis_demoted(reply);

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

    if (d->acked && rd->lmcf->redis_wait_replicas > 0) {
        if (!d->waited || d->wait_lost) {
            ngx_log_error(NGX_LOG_ERR, rd->log, 0,
                          NGX_HTTP_LINEGATE_LOG "durable write \"%s\": "
                          "WAIT not sent (attempt %ui), will retry",
                          d->what, d->attempts);
            ngx_http_linegate_redis_durable_arm();
            return;
        }

        /* its WAIT, written after it, decides (durable_wait_cb) */
        d->pool = ngx_create_pool(1024, rd->log);
        d->stash = d->pool ? ngx_http_linegate_redis_copy(d->pool, reply)
                           : NULL;
        d->have = (d->stash != NULL);

        if (!d->have) {
            ngx_http_linegate_redis_durable_unstash(d);
            ngx_http_linegate_redis_durable_arm();
        }

        return;
    }

    ngx_http_linegate_redis_durable_done(d, reply);
    return;

done:

    ngx_http_linegate_redis_durable_done(d, NULL);
}


/*
 * WAIT's answer after a durable script's: enough replicas have the
 * write, and it is done; fewer (or no answer), and it is sent again.
 */
static void
ngx_http_linegate_redis_durable_wait_cb(redisAsyncContext *ac, void *data,
    void *privdata)
{
    redisReply                         *reply;
    ngx_http_linegate_redis_t          *rd;
    ngx_http_linegate_redis_durable_t  *d;

    rd = &ngx_http_linegate_redis;
    reply = data;
    d = privdata;

    if (ngx_http_linegate_redis_durable_owed(d)) {
        return;
    }

    if (ac->data != d->node) {
        /* the node a MOVED or ASK sent the write away from */
        return;
    }

    if (!d->have) {
        /*
         * the script failed (or this WAIT is an EVALSHA's, NOSCRIPT);
         * or no reply: this WAIT, behind the one in flight, could not be
         * written, and the script's answer still to come is not trusted
         */
        if (reply == NULL) {
            d->wait_lost = 1;
        }

        return;
    }

    d->have = 0;

    if (ngx_http_linegate_redis_waited(reply))
    {
        ngx_http_linegate_redis_durable_done(d, d->stash);
        return;
    }

    if (reply != NULL && reply->type == REDIS_REPLY_ERROR) {

        if (!ngx_http_linegate_redis_unavailable(reply)) {
            /*
             * NOPERM (an ACL without +wait), a proxy that does not know
             * WAIT: no resend is ever acknowledged. Given up on as a
             * refused script is, not sent again for ever (before, read
             * as "0 replicas": the queue filled, later writes lost).
             */
            ngx_log_error(NGX_LOG_ALERT, rd->log, 0,
                          NGX_HTTP_LINEGATE_LOG "durable write \"%s\" "
                          "refused by redis: \"%*s\" on its WAIT "
                          "(linegate_redis_wait): not acknowledged, given "
                          "up", d->what,
                          (size_t) ngx_min(reply->len, 200), reply->str);

            ngx_http_linegate_redis_durable_done(d, NULL);
            return;
        }

        ngx_log_error(NGX_LOG_ERR, rd->log, 0,
                      NGX_HTTP_LINEGATE_LOG "durable write \"%s\": its "
                      "WAIT answered \"%*s\" (attempt %ui), will retry",
                      d->what, (size_t) ngx_min(reply->len, 200),
                      reply->str, d->attempts);

    } else {
        ngx_log_error(NGX_LOG_ERR, rd->log, 0,
                      NGX_HTTP_LINEGATE_LOG "durable write \"%s\" "
                      "acknowledged by %i of %i replicas within %M ms "
                      "(attempt %ui), will retry", d->what,
                      (reply != NULL && reply->type == REDIS_REPLY_INTEGER)
                      ? (ngx_int_t) reply->integer : (ngx_int_t) 0,
                      rd->lmcf->redis_wait_replicas,
                      rd->lmcf->redis_wait_timeout, d->attempts);
    }

    ngx_http_linegate_redis_durable_unstash(d);

    if (!rd->exiting) {
        ngx_http_linegate_redis_durable_arm();
    }
}


/* reply NULL: given up on (refused); else done, its answer to then */
static void
ngx_http_linegate_redis_durable_done(ngx_http_linegate_redis_durable_t *d,
    redisReply *reply)
{
    ngx_http_linegate_redis_t  *rd;

    rd = &ngx_http_linegate_redis;

    /*
     * out of the queue before then runs: the write then queues replaces
     * this one, and the bound (NGX_HTTP_LINEGATE_DURABLE_MAX) counted
     * both; at a full queue draining (Redis back after an outage) the
     * chain's next step was lost ("1024 writes already wait"). d itself
     * (its arguments, its note, the stashed reply) lives until below.
     */
    ngx_queue_remove(&d->queue);
    rd->ndurable--;

    if (reply != NULL) {
        ngx_log_error(NGX_LOG_INFO, rd->log, 0,
                      NGX_HTTP_LINEGATE_LOG "durable write \"%s\" done "
                      "(attempt %ui)", d->what, d->attempts);

        if (d->then) {
            /* its answer decides the next write (queued by then) */
            d->then(reply, &d->args, &d->note);
        }
    }

    ngx_http_linegate_redis_durable_unstash(d);

    if (d->sent == 0) {
        ngx_free(d);

    } else {
        /* a WAIT is still owed (a refused script's): freed by its reply */
        d->done = 1;
    }

    if (rd->ndurable == 0) {
        rd->durable_attempts = 0;

        if (rd->durable_timer.timer_set) {
            ngx_del_timer(&rd->durable_timer);
        }
    }
}


/*
 * A reply hiredis owed d has come. 1: d was given up on (the worker
 * exits, or a refused write's WAIT was still owed), and is freed once
 * nothing more is owed; the reply only ends its wait.
 */
static ngx_uint_t
ngx_http_linegate_redis_durable_owed(ngx_http_linegate_redis_durable_t *d)
{
    d->sent--;

    if (!d->done) {
        return 0;
    }

    if (d->sent == 0) {
        ngx_http_linegate_redis_durable_unstash(d);
        ngx_free(d);
    }

    return 1;
}


static void
ngx_http_linegate_redis_durable_unstash(ngx_http_linegate_redis_durable_t *d)
{
    if (d->pool != NULL) {
        ngx_destroy_pool(d->pool);
        d->pool = NULL;
    }

    d->stash = NULL;
    d->have = 0;
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
    ngx_uint_t                       i;
    ngx_http_linegate_redis_t       *rd;
    ngx_http_linegate_redis_node_t  *node;

    rd = &ngx_http_linegate_redis;

    ngx_http_linegate_redis_durable_flush();

    for (i = 0; i < rd->nnodes; i++) {
        node = &rd->nodes[i];

        if (node->state == NGX_HTTP_LINEGATE_REDIS_DISCONNECTED
            && !node->reconnect_timer.timer_set
            && !(rd->cluster && ngx_http_linegate_redis_map_ready
                 && !ngx_http_linegate_redis_serves(node)))
        {
            /*
             * a draining worker's lost connection: it is needed again.
             * Not a cluster node that serves no slot, which lost() left
             * alone on purpose (a dead seed, a master failed over): no
             * durable write goes there, and each retry connected to the
             * dead address again and logged its failure, every 2 s
             * while any write waited.
             */
            ngx_http_linegate_redis_connect(node);
        }
    }

    ngx_http_linegate_redis_durable_arm();
}


/* the connections */

ngx_int_t
ngx_http_linegate_redis_init_process(ngx_cycle_t *cycle)
{
    ngx_uint_t                       i, n;
    ngx_http_linegate_redis_t       *rd;
    ngx_http_linegate_redis_node_t  *node;
    ngx_http_linegate_redis_addr_t  *seed;
    ngx_http_linegate_main_conf_t   *lmcf;

    lmcf = ngx_http_cycle_get_module_main_conf(cycle,
                                               ngx_http_linegate_module);
    if (lmcf == NULL || !lmcf->redis_configured) {
        return NGX_OK;
    }

    rd = &ngx_http_linegate_redis;
    ngx_memzero(rd, sizeof(ngx_http_linegate_redis_t));

    rd->lmcf = lmcf;
    rd->log = cycle->log;

    ngx_http_linegate_redis_dummy.fd = (ngx_socket_t) -1;

    n = lmcf->redis_cluster ? NGX_HTTP_LINEGATE_REDIS_MAX_NODES : 1;

    rd->nodes = ngx_pcalloc(cycle->pool,
                            n * sizeof(ngx_http_linegate_redis_node_t));
    if (rd->nodes == NULL) {
        return NGX_ERROR;
    }

    ngx_queue_init(&rd->waiting);
    rd->wake.data = &ngx_http_linegate_redis_dummy;
    rd->wake.handler = ngx_http_linegate_redis_wake;
    rd->wake.log = cycle->log;

    /* not cancelable: a draining worker waits for its durable writes */
    ngx_queue_init(&rd->durable);
    rd->durable_timer.data = &ngx_http_linegate_redis_dummy;
    rd->durable_timer.handler = ngx_http_linegate_redis_durable_retry;
    rd->durable_timer.log = cycle->log;

    if (lmcf->redis_cluster) {
        rd->cluster = 1;
        rd->refresh_period = lmcf->redis_cluster_refresh;
        rd->refresh_timer.data = &ngx_http_linegate_redis_dummy;
        rd->refresh_timer.handler = ngx_http_linegate_redis_refresh;
        rd->refresh_timer.log = cycle->log;
        rd->refresh_timer.cancelable = 1;
        rd->slots_timer.data = &ngx_http_linegate_redis_dummy;
        rd->slots_timer.handler = ngx_http_linegate_redis_slots_timeout;
        rd->slots_timer.log = cycle->log;
        rd->slots_timer.cancelable = 1;
        ngx_memzero(ngx_http_linegate_redis_slots,
                    sizeof(ngx_http_linegate_redis_slots));

        /* every seed is connected: the first up is asked for the map */
        seed = lmcf->redis_seeds->elts;

        for (i = 0; i < lmcf->redis_seeds->nelts; i++) {
            (void) ngx_http_linegate_redis_node(&seed[i].host,
                                                seed[i].port);
        }

        return NGX_OK;
    }

    if (lmcf->redis_sentinels) {
        rd->sentinel = 1;
        rd->rediscover.data = &ngx_http_linegate_redis_dummy;
        rd->rediscover.handler = ngx_http_linegate_redis_rediscover;
        rd->rediscover.log = cycle->log;
        if (ngx_http_linegate_sentinel_init(lmcf, cycle->log,
                                  ngx_http_linegate_redis_master_found,
                                  ngx_http_linegate_redis_master_switched)
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    node = ngx_http_linegate_redis_node(&lmcf->redis_host, lmcf->redis_port);

    return node ? NGX_OK : NGX_ERROR;
}


void
ngx_http_linegate_redis_exit_process(ngx_cycle_t *cycle)
{
    ngx_uint_t                          i;
    redisAsyncContext                  *ac;
    ngx_queue_t                        *q;
    ngx_http_linegate_redis_t          *rd;
    ngx_http_linegate_redis_node_t     *node;
    ngx_http_linegate_redis_durable_t  *d;

    rd = &ngx_http_linegate_redis;
    rd->exiting = 1;

    if (rd->lmcf == NULL) {
        return;
    }

    for (i = 0; i < rd->nnodes; i++) {
        if (rd->nodes[i].counted) {
            ngx_http_linegate_redis_gauge(&rd->nodes[i], -1);
        }
    }

    if (rd->wake.posted) {
        ngx_delete_posted_event(&rd->wake);
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

        ngx_http_linegate_redis_durable_unstash(d);

        if (!d->sent) {
            ngx_free(d);

        } else {
            /* hiredis answers it NULL when the context is freed below */
            d->done = 1;
        }
    }

    for (i = 0; i < rd->nnodes; i++) {
        node = &rd->nodes[i];

        if (node->ac) {
            ac = node->ac;
            node->ac = NULL;
            node->state = NGX_HTTP_LINEGATE_REDIS_DISCONNECTED;
            redisAsyncFree(ac);
        }
    }
}


/*
 * The node at host:port, created and connected when new (a cluster's
 * map or a MOVED may name a master not seen yet). NULL: no room left
 * (logged), or the address does not fit.
 */
static ngx_http_linegate_redis_node_t *
ngx_http_linegate_redis_node(ngx_str_t *host, ngx_int_t port)
{
    ngx_uint_t                       i, max;
    ngx_http_linegate_redis_t       *rd;
    ngx_http_linegate_redis_node_t  *node;

    rd = &ngx_http_linegate_redis;

    for (i = 0; i < rd->nnodes; i++) {
        node = &rd->nodes[i];

        if (node->port == port && node->host.len == host->len
            && ngx_strncmp(node->host.data, host->data, host->len) == 0)
        {
            if (node->state == NGX_HTTP_LINEGATE_REDIS_DISCONNECTED
                && !node->reconnect_timer.timer_set && !rd->exiting)
            {
                /* named again after it was left alone */
                ngx_http_linegate_redis_connect(node);
            }

            return node;
        }
    }

    max = rd->cluster ? NGX_HTTP_LINEGATE_REDIS_MAX_NODES : 1;
    node = NULL;

    if (host->len <= NGX_SOCKADDR_STRLEN) {
        node = (rd->nnodes < max) ? &rd->nodes[rd->nnodes++]
                                  : ngx_http_linegate_redis_node_idle();
    }

    if (node == NULL) {
        ngx_log_error(NGX_LOG_ERR, rd->log, 0,
                      NGX_HTTP_LINEGATE_LOG "redis cluster: node %V:%i "
                      "not added (at most %ui nodes, each serving a slot "
                      "or connected)", host, port, max);
        return NULL;
    }

    if (node->host.len) {
        ngx_log_error(NGX_LOG_NOTICE, rd->log, 0,
                      NGX_HTTP_LINEGATE_LOG "redis cluster: node %V:%i "
                      "takes the place of %V:%i, which serves no slot",
                      host, port, &node->host, node->port);
        ngx_memzero(node, sizeof(ngx_http_linegate_redis_node_t));
    }

    /* its own copy: a sentinel's or a reply's buffer does not last */
    ngx_memcpy(node->host_buf, host->data, host->len);
    node->host_buf[host->len] = '\0';
    node->host.data = node->host_buf;
    node->host.len = host->len;
    node->port = port;

    node->connect_timer.data = &ngx_http_linegate_redis_dummy;
    node->reconnect_timer.data = &ngx_http_linegate_redis_dummy;
    node->keepalive_timer.data = &ngx_http_linegate_redis_dummy;

    node->connect_timer.handler = ngx_http_linegate_redis_connect_timeout;
    node->connect_timer.log = rd->log;
    node->connect_timer.cancelable = 1;
    node->reconnect_timer.handler = ngx_http_linegate_redis_reconnect;
    node->reconnect_timer.log = rd->log;
    node->reconnect_timer.cancelable = 1;
    node->keepalive_timer.handler = ngx_http_linegate_redis_keepalive;
    node->keepalive_timer.log = rd->log;
    node->keepalive_timer.cancelable = 1;

    node->waits.send = ngx_http_linegate_redis_wait_send;

    ngx_http_linegate_redis_connect(node);

    return node;
}


/*
 * A full table's entry that a new address may take: past the seeds (the
 * addresses a map is asked of when every other is gone), no slot of the
 * map names it, and it is not connected nor about to be (no connection,
 * no timer). Addresses come and go over a worker's life (masters
 * replaced, pods given new IPs): without this, the 65th would never be
 * connected, and its slots would answer 503 until a reload.
 */
static ngx_http_linegate_redis_node_t *
ngx_http_linegate_redis_node_idle(void)
{
    ngx_uint_t                       i;
    ngx_http_linegate_redis_t       *rd;
    ngx_http_linegate_redis_node_t  *node;

    rd = &ngx_http_linegate_redis;

    if (!rd->cluster) {
        return NULL;
    }

    for (i = rd->lmcf->redis_seeds->nelts; i < rd->nnodes; i++) {
        node = &rd->nodes[i];

        if (node->ac == NULL
            && node->state == NGX_HTTP_LINEGATE_REDIS_DISCONNECTED
            && !node->connect_timer.timer_set
            && !node->reconnect_timer.timer_set
            && !node->keepalive_timer.timer_set
            && node->loading == 0 && !node->counted
            && !ngx_http_linegate_redis_serves(node))
        {
            return node;
        }
    }

    return NULL;
}


static void
ngx_http_linegate_redis_connect(ngx_http_linegate_redis_node_t *node)
{
    ngx_http_linegate_redis_t  *rd;

    rd = &ngx_http_linegate_redis;

    if (rd->sentinel && !rd->master_known) {
        /* requests are answered 503 meanwhile, as while connecting */
        node->state = NGX_HTTP_LINEGATE_REDIS_CONNECTING;
        ngx_http_linegate_sentinel_discover(
                                 ngx_http_linegate_redis_first_connect(node));
        return;
    }

    ngx_http_linegate_redis_connect_to(node);
}


static void
ngx_http_linegate_redis_master_found(ngx_int_t rc, ngx_str_t *host,
    ngx_int_t port)
{
    ngx_http_linegate_redis_t       *rd;
    ngx_http_linegate_redis_node_t  *node;

    rd = &ngx_http_linegate_redis;
    node = &rd->nodes[0];

    if (rd->exiting || node->state != NGX_HTTP_LINEGATE_REDIS_CONNECTING
        || node->ac != NULL)
    {
        return;
    }

    if (rc != NGX_OK) {
        /* every sentinel asked: nothing left to wait for */
        node->cold = 1;
        ngx_http_linegate_redis_lost(node);
        return;
    }

    /* not reached from here on, or not a master: that sentinel's miss */
    rd->named = 1;

    if (host->len > NGX_SOCKADDR_STRLEN) {
        ngx_http_linegate_redis_lost(node);
        return;
    }

    ngx_memcpy(node->host_buf, host->data, host->len);
    node->host_buf[host->len] = '\0';
    node->host.len = host->len;
    node->port = port;
    rd->master_known = 1;

    ngx_http_linegate_redis_connect_to(node);
}


/*
 * A sentinel announced a failover of our master, to host:port (host
 * NULL: the message gave no address we could read). Acted on out of the
 * sentinel's hiredis callback: the drop fails requests, whose handlers
 * may ask the sentinels
 */
static void
ngx_http_linegate_redis_master_switched(ngx_str_t *host, ngx_int_t port)
{
    ngx_http_linegate_redis_t  *rd;

    rd = &ngx_http_linegate_redis;

    /*
     * The master named before the announcement, being connected to, is
     * expected to go (dropped for the new one, refused, a replica by
     * now): no miss of its sentinel's. Counted as one, a +switch-master
     * during the first connection ended its wait with one sentinel
     * configured: no master, every request waiting answered 503 (before
     * 2026-11-29, t/057)
     */
    rd->named = 0;

    if (rd->rediscover.posted && !rd->switch_only) {
        /* posted for a cause that drops whatever the announcement */
        return;
    }

    if (host == NULL || host->len > NGX_SOCKADDR_STRLEN) {
        rd->switch_only = 0;

    } else {
        /* the latest announcement, should two come before the event */
        rd->switch_only = 1;
        rd->switch_len = host->len;
        rd->switch_port = port;
        ngx_memcpy(rd->switch_host, host->data, host->len);
    }

    if (!rd->rediscover.posted) {
        ngx_post_event(&rd->rediscover, &ngx_posted_events);
    }
}


/* the connection to nodes[0] is not the master's: dropped, asked again */
static void
ngx_http_linegate_redis_post_rediscover(void)
{
    ngx_http_linegate_redis_t  *rd;

    rd = &ngx_http_linegate_redis;

    rd->switch_only = 0;

    if (!rd->rediscover.posted) {
        ngx_post_event(&rd->rediscover, &ngx_posted_events);
    }
}


static void
ngx_http_linegate_redis_rediscover(ngx_event_t *ev)
{
    ngx_uint_t                       switch_only;
    ngx_http_linegate_redis_t       *rd;
    ngx_http_linegate_redis_node_t  *node;

    rd = &ngx_http_linegate_redis;
    node = &rd->nodes[0];

    switch_only = rd->switch_only;
    rd->switch_only = 0;

    if (rd->exiting || node->ac == NULL) {
        /* not connected: the next connect asks the sentinels anyway */
        rd->master_known = 0;
        return;
    }

    /*
     * +switch-master may come late: the worker lost the old master (or
     * was answered -READONLY there), asked the sentinels and is on the
     * new one already, connected or checking its ROLE. Dropping that
     * connection would fail every command in flight on it for nothing.
     * The sentinel writes the address as get-master-addr-by-name gives
     * it, which is what the node holds (an IP: a name is never
     * connected to, see connect_to()); case aside, as names are
     */
    if (switch_only
        && node->port == rd->switch_port
        && node->host.len == rd->switch_len
        && ngx_strncasecmp(node->host.data, rd->switch_host,
                           rd->switch_len)
           == 0)
    {
        ngx_log_error(NGX_LOG_NOTICE, rd->log, 0,
                      NGX_HTTP_LINEGATE_LOG "redis already on the master "
                      "%V:%i +switch-master names: connection kept",
                      &node->host, node->port);
        return;
    }

    ngx_http_linegate_redis_drop(node, "master changed");
}


/* an IPv4 or IPv6 address in text, as hiredis connects without a lookup */
static ngx_uint_t
ngx_http_linegate_redis_is_ip(ngx_str_t *host)
{
#if (NGX_HAVE_INET6)
    u_char  addr6[16];
#endif

    if (ngx_inet_addr(host->data, host->len) != INADDR_NONE) {
        return 1;
    }

#if (NGX_HAVE_INET6)
    if (ngx_inet6_addr(host->data, host->len, addr6) == NGX_OK) {
        return 1;
    }
#endif

    return 0;
}


static void
ngx_http_linegate_redis_connect_to(ngx_http_linegate_redis_node_t *node)
{
    ngx_msec_t                      timeout;
    redisAsyncContext              *ac;
    ngx_http_linegate_redis_t      *rd;
    ngx_http_linegate_main_conf_t  *lmcf;

    rd = &ngx_http_linegate_redis;
    lmcf = rd->lmcf;

    if (!lmcf->redis_unix.len && !ngx_http_linegate_redis_is_ip(&node->host))
    {
        /*
         * a name from a cluster's map or a sentinel (Redis's
         * cluster-preferred-endpoint-type hostname, Sentinel's
         * announce-hostnames): hiredis would resolve it with a blocking
         * call, which the worker never makes; asked again with backoff
         */
        ngx_log_error(NGX_LOG_ERR, rd->log, 0,
                      NGX_HTTP_LINEGATE_LOG "redis node \"%V\" is not an "
                      "IP address: names are not resolved at run time "
                      "(cluster-preferred-endpoint-type ip, Sentinel's "
                      "announce-hostnames no)", &node->host);
        ngx_http_linegate_redis_lost(node);
        return;
    }

    /* an IP address: resolved at load, or given by a sentinel or a map */
    ac = ngx_http_linegate_redis_event_connect(&lmcf->redis_unix,
                                   &node->host, node->port, rd->log,
                                   rd->cluster, "redis", node,
                                   ngx_http_linegate_redis_connect_cb,
                                   ngx_http_linegate_redis_disconnect_cb);
    if (ac == NULL) {
        ngx_http_linegate_redis_lost(node);
        return;
    }

    node->ac = ac;
    node->state = NGX_HTTP_LINEGATE_REDIS_CONNECTING;
    node->loading = 0;

    timeout = lmcf->redis_connect_timeout;

    if ((rd->cluster || rd->sentinel) && !node->cold) {
        /*
         * A cluster node's first connect, which the requests of its
         * slots (before the first map: of any) wait for within their
         * command timeout: a third of it at most, as a CLUSTER SLOTS
         * has, so that a node whose connect hangs (its SYNs dropped)
         * is given up while they still wait. They are answered 503
         * then (those after it at once), the other slots served, and
         * it is reconnected with backoff, each attempt within the
         * connect timeout. Before 2026-11-29 the connect timeout held
         * them to the end of their wait (t/056).
         *
         * Behind Sentinel, the master named during the first
         * connection, as a sentinel's query then: given up, it is that
         * sentinel's miss, and the next sentinel is asked while the
         * requests still wait (before 2026-11-29 the connect timeout
         * held them to the end of their wait, t/054).
         */
        timeout = ngx_min(timeout,
                          ngx_max(lmcf->redis_command_timeout / 3, 1));
    }

    ngx_add_timer(&node->connect_timer, timeout);
}


static void
ngx_http_linegate_redis_connect_cb(const redisAsyncContext *ac, int status)
{
    ngx_msec_t                       timeout;
    ngx_http_linegate_redis_t       *rd;
    ngx_http_linegate_redis_node_t  *node;

    rd = &ngx_http_linegate_redis;
    node = ac->data;

    if (node->connect_timer.timer_set) {
        ngx_del_timer(&node->connect_timer);
    }

    if (status != REDIS_OK) {
        /* hiredis frees the context after this callback */
        ngx_log_error(NGX_LOG_ERR, rd->log, 0,
                      NGX_HTTP_LINEGATE_LOG "redis %V:%i connect failed: %s",
                      &node->host, node->port, ac->errstr);
        node->ac = NULL;
        ngx_http_linegate_redis_lost(node);
        return;
    }

    ngx_http_linegate_redis_auth(node);

    if (rd->sentinel) {
        /* what a sentinel named may be a replica by now: ask it first */
        if (redisAsyncCommand(node->ac, ngx_http_linegate_redis_role_cb,
                              NULL, "ROLE")
            != REDIS_OK)
        {
            /*
             * out of memory: dropped by the connect timer, not here,
             * since hiredis goes on with the context once this returns
             */
            ngx_log_error(NGX_LOG_ERR, rd->log, 0,
                          NGX_HTTP_LINEGATE_LOG "redis %V:%i: ROLE not "
                          "sent", &node->host, node->port);
            ngx_add_timer(&node->connect_timer, 1);
            return;
        }

        /*
         * during the first connection, a third of the command timeout
         * too: a master that takes the connection and never answers
         * (stopped, hung) is given up while the requests still wait,
         * and the next sentinel asked (before 2026-11-29 they waited
         * out their command timeout, t/054)
         */
        timeout = rd->lmcf->redis_command_timeout;

        if (!node->cold) {
            timeout = ngx_max(timeout / 3, 1);
        }

        ngx_add_timer(&node->connect_timer, timeout);
        return;
    }

    ngx_http_linegate_redis_ready(node);
}


static void
ngx_http_linegate_redis_role_cb(redisAsyncContext *ac, void *data,
    void *privdata)
{
    redisReply                      *reply, *role;
    ngx_http_linegate_redis_t       *rd;
    ngx_http_linegate_redis_node_t  *node;

    rd = &ngx_http_linegate_redis;
    node = &rd->nodes[0];
    reply = data;

    if (reply == NULL || rd->exiting || ac != node->ac
        || node->state != NGX_HTTP_LINEGATE_REDIS_CONNECTING)
    {
        /* a lost connection is reported by the disconnect callback */
        return;
    }

    if (node->connect_timer.timer_set) {
        ngx_del_timer(&node->connect_timer);
    }

    role = (reply->type == REDIS_REPLY_ARRAY && reply->elements > 0)
           ? reply->element[0] : NULL;

    if (role != NULL && role->type == REDIS_REPLY_STRING
        && ngx_strcmp(role->str, "master") == 0)
    {
        ngx_http_linegate_redis_ready(node);
        return;
    }

    ngx_log_error(NGX_LOG_WARN, rd->log, 0,
                  NGX_HTTP_LINEGATE_LOG "redis %V:%i is not the master "
                  "(role \"%s\"): asking the sentinels again",
                  &node->host, node->port,
                  (role != NULL && role->type == REDIS_REPLY_STRING)
                  ? role->str : (reply->type == REDIS_REPLY_ERROR
                                 ? reply->str : "?"));

    /*
     * dropped out of hiredis's callback, where the context is freed;
     * _lost() then sends the next discovery to another sentinel first
     * (this one may name that replica again)
     */
    rd->master_known = 0;

    ngx_http_linegate_redis_post_rediscover();
}


/* connected to a master: it serves requests from now on */
static void
ngx_http_linegate_redis_ready(ngx_http_linegate_redis_node_t *node)
{
    ngx_http_linegate_redis_t  *rd;

    rd = &ngx_http_linegate_redis;

    if (rd->sentinel) {
        ngx_log_error(NGX_LOG_NOTICE, rd->log, 0,
                      NGX_HTTP_LINEGATE_LOG "redis connected to the master "
                      "%V:%i", &node->host, node->port);

        /* the subscription, to the sentinel that named it (t/045) */
        ngx_http_linegate_sentinel_reached();

    } else if (rd->cluster) {
        ngx_log_error(NGX_LOG_NOTICE, rd->log, 0,
                      NGX_HTTP_LINEGATE_LOG "redis connected to cluster "
                      "node %V:%i", &node->host, node->port);

    } else {
        ngx_log_error(NGX_LOG_NOTICE, rd->log, 0,
                      NGX_HTTP_LINEGATE_LOG "redis connected");
    }

    node->state = NGX_HTTP_LINEGATE_REDIS_CONNECTED;
    node->attempts = 0;
    node->cold = 1;
    rd->named = 0;    /* its sentinel answered right: asked first again */
    node->ping_pending = 0;
    rd->conn_gen++;

    ngx_http_linegate_redis_gauge(node, 1);

    if (node->connected_before) {
        ngx_http_linegate_metrics_add(NGX_HTTP_LINEGATE_M_REDIS_RECONNECTS,
                                      0, NULL, NULL, 1);
    }

    node->connected_before = 1;

    ngx_http_linegate_redis_setup(node);

    ngx_add_timer(&node->keepalive_timer, rd->lmcf->redis_keepalive);

    if (rd->cluster && !ngx_http_linegate_redis_map_ready) {
        /* the first node up tells where every slot is */
        ngx_http_linegate_redis_refresh_soon(0);
    }

    /* after SCRIPT LOAD: Redis runs them in order */
    ngx_http_linegate_redis_durable_flush();

    /* and the requests' commands that waited for it */
    ngx_http_linegate_redis_wake_soon();
}


int
ngx_http_linegate_redis_auth_args(const char **argv, size_t *argvlen)
{
    int                             n;
    ngx_http_linegate_main_conf_t  *lmcf;

    lmcf = ngx_http_linegate_redis.lmcf;

    if (lmcf->redis_password.len == 0) {
        return 0;
    }

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

    return n;
}


/*
 * AUTH and SELECT go first on a new connection, then (on a master)
 * SCRIPT LOAD; Redis runs commands in order, so requests sent right after
 * them see their effect (or a NOAUTH error, which becomes a 503 and a
 * clear log line).
 */
static void
ngx_http_linegate_redis_auth(ngx_http_linegate_redis_node_t *node)
{
    int                             n;
    const char                     *argv[3];
    size_t                          argvlen[3];
    u_char                          db[NGX_INT_T_LEN];
    ngx_http_linegate_main_conf_t  *lmcf;

    lmcf = ngx_http_linegate_redis.lmcf;

    n = ngx_http_linegate_redis_auth_args(argv, argvlen);

    if (n) {
        redisAsyncCommandArgv(node->ac, ngx_http_linegate_redis_setup_cb,
                              "AUTH", n, argv, argvlen);
    }

    if (lmcf->redis_db > 0) {
        argv[0] = "SELECT";
        argvlen[0] = 6;
        argv[1] = (const char *) db;
        argvlen[1] = ngx_sprintf(db, "%i", lmcf->redis_db) - db;
        redisAsyncCommandArgv(node->ac, ngx_http_linegate_redis_setup_cb,
                              "SELECT", 2, argv, argvlen);
    }
}


/*
 * The scripts again after a NOSCRIPT, on every node (a flush of one
 * cluster node is usually a flush of all) whose last SCRIPT LOADs have
 * all been answered: one reload per round trip at most, however many
 * requests meet the NOSCRIPT meanwhile.
 */
static void
ngx_http_linegate_redis_reload(void)
{
    ngx_uint_t                       i;
    ngx_http_linegate_redis_t       *rd;
    ngx_http_linegate_redis_node_t  *node;

    rd = &ngx_http_linegate_redis;

    for (i = 0; i < rd->nnodes; i++) {
        node = &rd->nodes[i];

        if (node->state == NGX_HTTP_LINEGATE_REDIS_CONNECTED
            && node->loading == 0)
        {
            ngx_http_linegate_redis_setup(node);
        }
    }
}


/* every script, on this node: a cluster's nodes each have their cache */
static void
ngx_http_linegate_redis_setup(ngx_http_linegate_redis_node_t *node)
{
    ngx_uint_t   i;
    ngx_str_t    src;
    const char  *argv[3];
    size_t       argvlen[3];

    node->loading += NGX_HTTP_LINEGATE_SCRIPT_COUNT;

    for (i = 0; i < NGX_HTTP_LINEGATE_SCRIPT_COUNT; i++) {
        ngx_http_linegate_script_source(i, &src);
        argv[0] = "SCRIPT";
        argvlen[0] = 6;
        argv[1] = "LOAD";
        argvlen[1] = 4;
        argv[2] = (const char *) src.data;
        argvlen[2] = src.len;
        redisAsyncCommandArgv(node->ac, ngx_http_linegate_redis_setup_cb,
                              ngx_http_linegate_redis_script_load, 3, argv,
                              argvlen);
    }
}


static void
ngx_http_linegate_redis_setup_cb(redisAsyncContext *ac, void *data,
    void *privdata)
{
    redisReply                      *reply;
    ngx_http_linegate_redis_node_t  *node;

    reply = data;
    node = ac->data;

    if (privdata == ngx_http_linegate_redis_script_load && node->loading) {
        node->loading--;
    }

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
    ngx_http_linegate_redis_t       *rd;
    ngx_http_linegate_redis_node_t  *node;

    rd = &ngx_http_linegate_redis;
    node = ac->data;

    /*
     * A context ngx_http_linegate_redis_drop() let go (it clears node->ac
     * first): hiredis's redisAsyncFree() calls this when the context was
     * connected, and the drop logs the loss itself, saying why, and calls
     * _lost(): one drop, one line
     */
    if (rd->exiting || node->ac != ac) {
        return;
    }

    if (rd->cluster) {
        ngx_log_error(NGX_LOG_ERR, rd->log, 0,
                      NGX_HTTP_LINEGATE_LOG "redis cluster node %V:%i "
                      "disconnected%s%s", &node->host, node->port,
                      ac->err ? ": " : "", ac->err ? ac->errstr : "");

    } else {
        ngx_log_error(NGX_LOG_ERR, rd->log, 0,
                      NGX_HTTP_LINEGATE_LOG "redis disconnected%s%s",
                      ac->err ? ": " : "", ac->err ? ac->errstr : "");
    }

    node->ac = NULL;
    ngx_http_linegate_redis_lost(node);
}


/* forget the context (hiredis frees it) and schedule a reconnect */
static void
ngx_http_linegate_redis_lost(ngx_http_linegate_redis_node_t *node)
{
    ngx_uint_t                  missed;
    ngx_msec_t                  delay;
    ngx_http_linegate_redis_t  *rd;

    rd = &ngx_http_linegate_redis;

    if (node->counted) {
        ngx_http_linegate_redis_gauge(node, -1);
    }

    node->state = NGX_HTTP_LINEGATE_REDIS_DISCONNECTED;
    node->ping_pending = 0;
    rd->conn_gen++;

    /* a new connection asks the sentinels where the master is now */
    rd->master_known = 0;

    if (node->connect_timer.timer_set) {
        ngx_del_timer(&node->connect_timer);
    }

    if (node->keepalive_timer.timer_set) {
        ngx_del_timer(&node->keepalive_timer);
    }

    /*
     * Behind Sentinel, a master named and not reached (refused, timed
     * out, closed before ROLE, not an IP) or not a master: the sentinel
     * that named it is asked last by the next discovery, on the first
     * connection as on any reconnect. One stale or cut off keeps naming
     * the master it knew, and would otherwise be asked first again at
     * every attempt while the others name the new one (before
     * 2026-11-29 only the first connection moved on, and a ROLE other
     * than master: t/045). A master reached and then lost is no miss:
     * its sentinel answered right and is asked first again, so two
     * sentinels naming two reachable masters do not take turns.
     */
    missed = 0;

    if (rd->sentinel && rd->named) {
        rd->named = 0;
        missed = 1;
        ngx_http_linegate_sentinel_refused();
    }

    /*
     * The first connection failed: over, unless behind Sentinel a
     * sentinel is left that may name another master (the one that named
     * this one is asked last, above); the requests waiting for it wait
     * on (before 2026-11-29 the first master that could not be reached
     * ended the wait: 503, t/054). A master left for +switch-master is
     * no miss (named cleared): the sentinels are asked again, the
     * announcing one first, and the wait goes on (t/057). A discovery
     * that found nothing set cold itself.
     */
    if (!node->cold) {
        if (!rd->sentinel || rd->exiting || ngx_terminate
            || (missed
                && ++rd->warm_misses >= rd->lmcf->redis_sentinels->nelts))
        {
            node->cold = 1;
        }
    }

    /* the commands waiting for it, failed unless another node takes them */
    ngx_http_linegate_redis_wake_soon();

    if (rd->cluster && !rd->exiting) {
        /* a master gone may be a failover: where are its slots now? */
        ngx_http_linegate_redis_refresh_soon(NGX_HTTP_LINEGATE_BACKOFF_MIN);
    }

    /*
     * A worker draining after a reload (ngx_exiting) reconnects too: it
     * still finishes its requests and durable writes. The reconnect timer
     * is cancelable: it does not keep an idle draining worker alive.
     */
    if (rd->exiting || ngx_terminate || node->reconnect_timer.timer_set) {
        return;
    }

    if (rd->cluster && ngx_http_linegate_redis_map_ready
        && !ngx_http_linegate_redis_serves(node))
    {
        /* a dead seed, or a master failed over: a map naming it again
         * connects it again */
        ngx_log_error(NGX_LOG_NOTICE, rd->log, 0,
                      NGX_HTTP_LINEGATE_LOG "redis cluster node %V:%i "
                      "serves no slot: not reconnected", &node->host,
                      node->port);
        return;
    }

    /* exponential backoff with jitter: workers do not reconnect in step */
    delay = NGX_HTTP_LINEGATE_BACKOFF_MIN << ngx_min(node->attempts, 5);
    delay = ngx_min(delay, NGX_HTTP_LINEGATE_BACKOFF_MAX);
    delay = delay / 2 + (ngx_msec_t) ngx_random() % (delay / 2 + 1);
    node->attempts++;

    ngx_add_timer(&node->reconnect_timer, delay);
}


static void
ngx_http_linegate_redis_reconnect(ngx_event_t *ev)
{
    ngx_http_linegate_redis_node_t  *node;

    node = ngx_http_linegate_redis_node_of(ev, reconnect_timer);

    if (node->state == NGX_HTTP_LINEGATE_REDIS_DISCONNECTED) {
        ngx_http_linegate_redis_connect(node);
    }
}


static void
ngx_http_linegate_redis_drop(ngx_http_linegate_redis_node_t *node,
    const char *why)
{
    redisAsyncContext          *ac;
    ngx_http_linegate_redis_t  *rd;

    rd = &ngx_http_linegate_redis;

    if (rd->cluster) {
        /* which node: its disconnect callback, which named it, is quiet */
        ngx_log_error(NGX_LOG_ERR, rd->log, 0,
                      NGX_HTTP_LINEGATE_LOG "redis cluster node %V:%i: %s, "
                      "reconnecting", &node->host, node->port, why);

    } else {
        ngx_log_error(NGX_LOG_ERR, rd->log, 0,
                      NGX_HTTP_LINEGATE_LOG "redis %s, reconnecting", why);
    }

    ac = node->ac;
    node->ac = NULL;

    if (node->counted) {
        ngx_http_linegate_redis_gauge(node, -1);
    }

    node->state = NGX_HTTP_LINEGATE_REDIS_DISCONNECTED;

    /* pending commands are answered NULL: their requests get 503 */
    redisAsyncFree(ac);

    ngx_http_linegate_redis_lost(node);
}


static void
ngx_http_linegate_redis_connect_timeout(ngx_event_t *ev)
{
    ngx_http_linegate_redis_node_t  *node;

    node = ngx_http_linegate_redis_node_of(ev, connect_timer);

    if (node->state == NGX_HTTP_LINEGATE_REDIS_CONNECTING) {
        ngx_http_linegate_redis_drop(node, "connect timed out");
    }
}


static void
ngx_http_linegate_redis_keepalive(ngx_event_t *ev)
{
    ngx_http_linegate_redis_t       *rd;
    ngx_http_linegate_redis_node_t  *node;

    rd = &ngx_http_linegate_redis;
    node = ngx_http_linegate_redis_node_of(ev, keepalive_timer);

    if (node->state != NGX_HTTP_LINEGATE_REDIS_CONNECTED) {
        return;
    }

    if (node->ping_pending) {
        if ((ngx_msec_int_t) (node->ping_deadline - ngx_current_msec) <= 0) {
            /* no answer in a whole interval (after the WAITs before it) */
            ngx_http_linegate_redis_drop(node, "keepalive PING unanswered");
            return;
        }

        /* behind a WAIT: not answered before that WAIT is */

    } else if (redisAsyncCommand(node->ac, ngx_http_linegate_redis_ping_cb,
                                 NULL, "PING")
               == REDIS_OK)
    {
        node->ping_pending = 1;
        node->ping_deadline = ngx_max(ngx_current_msec, node->wait_until)
                              + rd->lmcf->redis_keepalive;
    }

    if (rd->sentinel) {
        ngx_http_linegate_sentinel_keepalive();
    }

    if (rd->lmcf->uses_provision) {
        ngx_http_linegate_redis_backlog(node);
    }

    ngx_add_timer(&node->keepalive_timer, rd->lmcf->redis_keepalive);
}


/*
 * The reconciliation backlog, for the metrics, off the request path: asked
 * of the one node that holds the stream (on a cluster, the master of the
 * fleet's slot; elsewhere the only node).
 */
static void
ngx_http_linegate_redis_backlog(ngx_http_linegate_redis_node_t *node)
{
    ngx_str_t                  *stream;
    ngx_http_linegate_redis_t  *rd;

    rd = &ngx_http_linegate_redis;
    stream = ngx_http_linegate_key_fixed(NGX_HTTP_LINEGATE_KEY_RECONCILE);

    if (rd->cluster
        && ngx_http_linegate_redis_slot_node(
               ngx_http_linegate_redis_keyslot(stream->data, stream->len))
           != node)
    {
        return;
    }

    (void) redisAsyncCommand(node->ac, ngx_http_linegate_redis_backlog_cb,
                             NULL, "XLEN %b", stream->data, stream->len);
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


/* a connection of this worker in linegate_redis_connected{node} */
static void
ngx_http_linegate_redis_gauge(ngx_http_linegate_redis_node_t *node,
    ngx_int_t n)
{
    ngx_str_t                   label;
    const char                 *name = "node";
    ngx_http_linegate_redis_t  *rd;

    rd = &ngx_http_linegate_redis;

    if (n > 0) {
        /* the label it is counted under, until it is uncounted */
        if (rd->lmcf->redis_unix.len) {
            node->label_len = ngx_snprintf(node->label, sizeof(node->label),
                                           "%V", &rd->lmcf->redis_unix)
                              - node->label;

        } else {
            node->label_len = ngx_snprintf(node->label, sizeof(node->label),
                                           "%V:%i", &node->host, node->port)
                              - node->label;
        }
    }

    label.data = node->label;
    label.len = node->label_len;

    node->counted = n > 0;

    ngx_http_linegate_metrics_add(NGX_HTTP_LINEGATE_M_REDIS_CONNECTED, 1,
                                  &name, &label, (ngx_atomic_int_t) n);
}


static void
ngx_http_linegate_redis_ping_cb(redisAsyncContext *ac, void *reply,
    void *privdata)
{
    ngx_http_linegate_redis_node_t  *node;

    if (reply != NULL && !ngx_http_linegate_redis.exiting) {
        node = ac->data;
        node->ping_pending = 0;

        /*
         * it answers: no longer taken for hung (a CLUSTER SLOTS it
         * stalled on, on this connection, was answered first; on a
         * new one, it may answer now)
         */
        node->slots_stalled = 0;
    }
}


/* Redis Cluster: the slot map */

/* 1 when the map gives node a slot */
static ngx_uint_t
ngx_http_linegate_redis_serves(ngx_http_linegate_redis_node_t *node)
{
    ngx_uint_t  i, index;

    index = (ngx_uint_t) (node - ngx_http_linegate_redis.nodes) + 1;

    for (i = 0; i < NGX_HTTP_LINEGATE_REDIS_SLOTS; i++) {
        if (ngx_http_linegate_redis_slots[i] == index) {
            return 1;
        }
    }

    return 0;
}


/* the node serving a slot, or NULL (no map yet, or a slot not served) */
static ngx_http_linegate_redis_node_t *
ngx_http_linegate_redis_slot_node(ngx_uint_t slot)
{
    ngx_uint_t  i;

    i = ngx_http_linegate_redis_slots[slot];

    return i ? &ngx_http_linegate_redis.nodes[i - 1] : NULL;
}


/*
 * The map asked for again within delay ms, and never more often than
 * every NGX_HTTP_LINEGATE_BACKOFF_MIN ms: every request of a slot with
 * no master asks for it, one CLUSTER SLOTS answers them all.
 */
static void
ngx_http_linegate_redis_refresh_soon(ngx_msec_t delay)
{
    ngx_msec_t                  since;
    ngx_http_linegate_redis_t  *rd;

    rd = &ngx_http_linegate_redis;

    if (rd->exiting || rd->refreshing) {
        return;
    }

    since = ngx_current_msec - rd->refresh_last;

    if (since < NGX_HTTP_LINEGATE_BACKOFF_MIN) {
        delay = ngx_max(delay, NGX_HTTP_LINEGATE_BACKOFF_MIN - since);
    }

    if (rd->refresh_timer.timer_set) {
        if (rd->refresh_timer.timer.key <= ngx_current_msec + delay) {
            return;
        }

        ngx_del_timer(&rd->refresh_timer);
    }

    ngx_add_timer(&rd->refresh_timer, delay);
}


/*
 * CLUSTER SLOTS to the next connected node, in turn; one that stalled on
 * it (slots_stalled) only when no other is up: a refresh is one round
 * trip to a node that answers (before 2026-11-29 a hung node kept its
 * turn, and each refresh that came to it waited a whole
 * linegate_redis_command_timeout before another node was asked: t/056)
 */
static void
ngx_http_linegate_redis_refresh(ngx_event_t *ev)
{
    ngx_uint_t                       i, n, pass;
    ngx_msec_t                       delay;
    ngx_http_linegate_redis_t       *rd;
    ngx_http_linegate_redis_node_t  *node;

    rd = &ngx_http_linegate_redis;

    if (rd->exiting || rd->refreshing) {
        return;
    }

    for (pass = 0; pass < 2; pass++) {
        for (i = 0; i < rd->nnodes; i++) {
            n = (rd->refresh_next + i) % rd->nnodes;
            node = &rd->nodes[n];

            if (node->state != NGX_HTTP_LINEGATE_REDIS_CONNECTED
                || (pass == 0 && node->slots_stalled))
            {
                continue;
            }

            rd->refresh_next = (n + 1) % rd->nnodes;

            if (ngx_http_linegate_redis_slots_ask(node) == NGX_OK) {
                return;
            }
        }
    }

    /* nobody to ask now: again, later (a connect asks at once) */
    delay = NGX_HTTP_LINEGATE_BACKOFF_MIN << ngx_min(rd->refresh_attempts, 4);
    delay = ngx_min(delay, NGX_HTTP_LINEGATE_BACKOFF_MAX);
    rd->refresh_attempts++;
    ngx_http_linegate_redis_wake_soon();

    ngx_add_timer(&rd->refresh_timer, delay);
}


/* CLUSTER SLOTS (and CLUSTER NODES, in the same write) written on node */
static ngx_int_t
ngx_http_linegate_redis_slots_ask(ngx_http_linegate_redis_node_t *node)
{
    ngx_http_linegate_redis_t  *rd;

    rd = &ngx_http_linegate_redis;

    if (redisAsyncCommand(node->ac, ngx_http_linegate_redis_slots_cb, node,
                          "CLUSTER SLOTS")
        != REDIS_OK)
    {
        return NGX_ERROR;
    }

    rd->refreshing = 1;
    rd->refresh_last = ngx_current_msec;
    rd->slots_asked = node;

    /*
     * A node that takes the command and never answers (hung, its
     * packets dropped after the connect) would hold refreshing until
     * the keepalive drops it: no other node asked, no first map, a
     * MOVED's refresh put off. Before the first map the requests
     * waiting for it wait the command timeout: a third of it here
     * leaves the other seeds time to answer (before 2026-11-29 such a
     * seed had every request of a new worker answered 503, t/055)
     */
    ngx_add_timer(&rd->slots_timer, ngx_http_linegate_redis_map_ready
                  ? rd->lmcf->redis_command_timeout
                  : ngx_max(rd->lmcf->redis_command_timeout / 3, 1));

    /* only the MOVEDs after this are newer than its reply */
    ngx_memzero(ngx_http_linegate_redis_moved,
                sizeof(ngx_http_linegate_redis_moved));
    rd->moved_since = 0;

    /* the subscribers' masters, in the same write */
    if (rd->lmcf->redis_cluster_nodes && !rd->nodes_pending
        && redisAsyncCommand(node->ac, ngx_http_linegate_redis_nodes_cb,
                             node, "CLUSTER NODES")
           == REDIS_OK)
    {
        rd->nodes_pending = 1;
        rd->nodes_asked = node;
        rd->nodes_sent = ngx_current_msec;
    }

    return NGX_OK;
}


static void
ngx_http_linegate_redis_slots_cb(redisAsyncContext *ac, void *data,
    void *privdata)
{
    redisReply                      *reply;
    ngx_http_linegate_redis_t       *rd;
    ngx_http_linegate_redis_node_t  *asked;

    rd = &ngx_http_linegate_redis;
    reply = data;
    asked = privdata;

    if (rd->exiting) {
        return;
    }

    if (reply != NULL) {
        /* it answers (again): asked in its turn */
        asked->slots_stalled = 0;
    }

    if (asked->slots_late && asked->late_ac == ac) {
        asked->slots_late--;

        /*
         * given up at its deadline, another node asked since; before
         * any map a slow node's map is still taken: the deadline guesses
         * at a hung node, and a box under load answers late too
         */
        if (ngx_http_linegate_redis_map_ready
            || reply == NULL || reply->type != REDIS_REPLY_ARRAY)
        {
            return;
        }
    }

    if (rd->slots_timer.timer_set) {
        ngx_del_timer(&rd->slots_timer);
    }

    rd->refreshing = 0;
    rd->slots_taken = 0;

    /* a map (the commands waiting for it go), or none (they fail) */
    ngx_http_linegate_redis_wake_soon();

    if (reply != NULL
        && ngx_http_linegate_redis_install(asked, reply) == NGX_OK)
    {
        /* the CLUSTER NODES written after it may be taken */
        rd->slots_taken = 1;
        rd->refresh_attempts = 0;

        /* a slot kept from a MOVED: whether it moved again, ask now */
        ngx_http_linegate_redis_refresh_soon(rd->moved_since
                                             ? 0 : rd->refresh_period);
        rd->moved_since = 0;
        return;
    }

    ngx_http_linegate_redis_slots_failed(asked);
}


/* CLUSTER SLOTS unanswered by its deadline: as if it failed */
static void
ngx_http_linegate_redis_slots_timeout(ngx_event_t *ev)
{
    ngx_http_linegate_redis_t       *rd;
    ngx_http_linegate_redis_node_t  *asked;

    rd = &ngx_http_linegate_redis;
    asked = rd->slots_asked;

    if (rd->exiting || !rd->refreshing || asked == NULL) {
        return;
    }

    rd->refreshing = 0;
    rd->slots_taken = 0;

    ngx_log_error(NGX_LOG_WARN, rd->log, 0,
                  NGX_HTTP_LINEGATE_LOG "redis %V:%i: CLUSTER SLOTS "
                  "timed out, another node asked", &asked->host,
                  asked->port);

    /* asked last from now on, until it answers something */
    asked->slots_stalled = 1;

    if (asked->state == NGX_HTTP_LINEGATE_REDIS_CONNECTED) {
        /* its reply, if it ever comes, answers nothing now */
        if (asked->late_ac != asked->ac) {
            asked->late_ac = asked->ac;
            asked->slots_late = 0;
            asked->nodes_late = 0;
        }

        asked->slots_late++;

        /*
         * and the CLUSTER NODES behind it: asked again with the next
         * CLUSTER SLOTS, of another node (before 2026-11-29 none was
         * until the keepalive dropped this one: the subscribers' list
         * of masters unknown, or aging, meanwhile; t/056)
         */
        if (rd->nodes_pending && rd->nodes_asked == asked) {
            asked->nodes_late++;
            rd->nodes_pending = 0;
        }
    }

    ngx_http_linegate_redis_wake_soon();
    ngx_http_linegate_redis_slots_failed(asked);
}


static void
ngx_http_linegate_redis_slots_failed(ngx_http_linegate_redis_node_t *asked)
{
    ngx_msec_t                  delay;
    ngx_http_linegate_redis_t  *rd;

    rd = &ngx_http_linegate_redis;

    if (!ngx_http_linegate_redis_map_ready) {
        /* the requests waiting for a first map wait for another node's */
        asked->slots_failed = 1;
    }

    delay = NGX_HTTP_LINEGATE_BACKOFF_MIN << ngx_min(rd->refresh_attempts, 4);
    delay = ngx_min(delay, NGX_HTTP_LINEGATE_BACKOFF_MAX);
    rd->refresh_attempts++;

    ngx_http_linegate_redis_refresh_soon(delay);
}


/* a complete CLUSTER SLOTS reply becomes the map; anything else is kept */
static ngx_int_t
ngx_http_linegate_redis_install(ngx_http_linegate_redis_node_t *asked,
    redisReply *reply)
{
    size_t                            i, n, slot;
    u_char                            buf[64];
    ngx_str_t                         host, why;
    ngx_uint_t                        index;
    ngx_http_linegate_redis_t        *rd;
    ngx_http_linegate_redis_node_t   *node;
    ngx_http_linegate_redis_range_t  *range;

    /*
     * Room for the largest map there is, one range a slot: ~1.2 MB of
     * the worker's own (static, so no allocation can fail here; its
     * pages are touched only as far as a reply's ranges go, and a reply
     * of 16384 ranges is itself several times that in hiredis's tree)
     */
    static ngx_http_linegate_redis_range_t
                                 ranges[NGX_HTTP_LINEGATE_CLUSTER_RANGES];

    rd = &ngx_http_linegate_redis;
    n = 0;

    if (reply->type == REDIS_REPLY_ERROR) {
        why.data = (u_char *) (reply->str ? reply->str : "");
        why.len = reply->str ? ngx_min(reply->len, 200) : 0;

    } else if (reply->type != REDIS_REPLY_ARRAY || reply->elements == 0) {
        ngx_str_set(&why, "no slot ranges");

    } else if (reply->elements > NGX_HTTP_LINEGATE_CLUSTER_RANGES) {
        /* each range has a slot of its own: more cannot be a map */
        why.data = buf;
        why.len = ngx_snprintf(buf, sizeof(buf), "too many ranges (%uz, "
                               "at most %d)", reply->elements,
                               NGX_HTTP_LINEGATE_CLUSTER_RANGES)
                  - buf;

    } else if (ngx_http_linegate_redis_slots_parse(reply, ranges,
                   NGX_HTTP_LINEGATE_CLUSTER_RANGES, &n)
               != 0)
    {
        ngx_str_set(&why, "a malformed range");

    } else if (!ngx_http_linegate_redis_slots_complete(ranges, n)) {
        ngx_str_set(&why, "not every slot exactly once");

    } else {
        why.data = NULL;
    }

    /* (an error reply's text may be empty: data, not len, says "refused") */
    if (why.data != NULL) {
        ngx_log_error(NGX_LOG_ERR, rd->log, 0,
                      NGX_HTTP_LINEGATE_LOG "redis cluster: node %V:%i "
                      "gave no complete slot map: %V",
                      &asked->host, asked->port, &why);
        return NGX_ERROR;
    }

    for (i = 0; i < n; i++) {
        range = &ranges[i];

        if (range->host_len == 0) {
            /* the node asked does not know its own address: it is it */
            host = asked->host;

        } else {
            host.data = (u_char *) range->host;
            host.len = range->host_len;
        }

        node = ngx_http_linegate_redis_node(&host, range->port);
        index = node ? (ngx_uint_t) (node - rd->nodes) + 1 : 0;

        for (slot = range->first; slot <= range->last; slot++) {
            if (rd->moved_since
                && (ngx_http_linegate_redis_moved[slot >> 3]
                    & (1u << (slot & 7))))
            {
                /* a MOVED after it was asked: newer than this reply */
                continue;
            }

            ngx_http_linegate_redis_slots[slot] = (uint16_t) index;
        }
    }

    if (!ngx_http_linegate_redis_map_ready) {
        ngx_log_error(NGX_LOG_NOTICE, rd->log, 0,
                      NGX_HTTP_LINEGATE_LOG "redis cluster: %uz slot "
                      "ranges, from %V:%i", n, &asked->host, asked->port);
    }

    ngx_http_linegate_redis_map_ready = 1;

    return NGX_OK;
}


/*
 * CLUSTER NODES: its masters, all of them (a master with no slot yet may
 * be importing one), become the list the subscribers match (masters_gen
 * changes with it), dated from when it was asked; only from a node whose
 * CLUSTER SLOTS, in the same write, gave the map (one that knows the
 * cluster). Anything else is dropped: the list ages, and the subscribers
 * stop trusting it.
 */
static void
ngx_http_linegate_redis_nodes_cb(redisAsyncContext *ac, void *data,
    void *privdata)
{
    size_t                             n;
    const char                        *why;
    redisReply                        *reply;
    ngx_http_linegate_redis_t         *rd;
    ngx_http_linegate_redis_node_t    *asked;
    ngx_http_linegate_redis_master_t  *m;

    static ngx_http_linegate_redis_master_t
                                 masters[NGX_HTTP_LINEGATE_REDIS_MAX_NODES];

    rd = &ngx_http_linegate_redis;
    reply = data;
    m = masters;
    asked = privdata;

    if (asked->nodes_late && asked->late_ac == ac) {
        /* given up with its CLUSTER SLOTS: another may be out now */
        asked->nodes_late--;
        return;
    }

    rd->nodes_pending = 0;

    if (rd->exiting || reply == NULL || !rd->slots_taken) {
        return;
    }

    if (reply->type != REDIS_REPLY_STRING) {
        why = "refused (an ACL?)";

    } else if (ngx_http_linegate_redis_nodes_masters(reply->str, reply->len,
                   m, NGX_HTTP_LINEGATE_REDIS_MAX_NODES, &n)
               != 0)
    {
        why = "unreadable";

    } else if (ngx_http_linegate_redis_masters_take(asked, m, n)
               != NGX_OK)
    {
        why = "names a master by a name, not an IP address";

    } else {
        rd->masters_at = rd->nodes_sent;
        rd->masters_set = 1;
        rd->nodes_failed = 0;
        return;
    }

    /* once until a list is taken again: it is asked every 500 ms */
    if (!rd->nodes_failed) {
        ngx_log_error(NGX_LOG_ERR, rd->log, 0,
                      NGX_HTTP_LINEGATE_LOG "redis cluster: CLUSTER NODES "
                      "%s: revocations are not trusted to be pushed",
                      why);
        rd->nodes_failed = 1;
    }
}


/*
 * The masters of CLUSTER NODES, each an IP address: the list, if new
 * (another address or config epoch: a failover, even one and back)
 */
static ngx_int_t
ngx_http_linegate_redis_masters_take(ngx_http_linegate_redis_node_t *asked,
    ngx_http_linegate_redis_master_t *m, ngx_uint_t n)
{
    ngx_str_t   host;
    ngx_uint_t  i;

    for (i = 0; i < n; i++) {
        if (m[i].host_len == 0) {
            /* its own line, without an address: the node asked */
            if (asked->host.len > NGX_HTTP_LINEGATE_REDIS_HOST_MAX) {
                return NGX_ERROR;
            }

            ngx_memcpy(m[i].host, asked->host.data, asked->host.len);
            m[i].host[asked->host.len] = '\0';
            m[i].host_len = asked->host.len;
        }

        /* subscribed without a resolver (no DNS on a worker) */
        host.data = (u_char *) m[i].host;
        host.len = m[i].host_len;

        if (!ngx_http_linegate_redis_is_ip(&host)) {
            return NGX_ERROR;
        }
    }

    if (!ngx_http_linegate_redis_masters_same(m, n,
                                              ngx_http_linegate_redis_masters,
                                              ngx_http_linegate_redis_nmasters)
        || !ngx_http_linegate_redis_masters_same(
                                              ngx_http_linegate_redis_masters,
                                              ngx_http_linegate_redis_nmasters,
                                              m, n))
    {
        ngx_memcpy(ngx_http_linegate_redis_masters, m,
                   n * sizeof(ngx_http_linegate_redis_master_t));
        ngx_http_linegate_redis_nmasters = n;
        ngx_http_linegate_redis.masters_gen++;
    }

    return NGX_OK;
}


/* every master of a (n of them) is in b: the same address and epoch */
static ngx_uint_t
ngx_http_linegate_redis_masters_same(ngx_http_linegate_redis_master_t *a,
    ngx_uint_t na, ngx_http_linegate_redis_master_t *b, ngx_uint_t nb)
{
    ngx_uint_t  i, j;

    for (i = 0; i < na; i++) {
        for (j = 0; j < nb; j++) {
            if (a[i].port == b[j].port && a[i].epoch == b[j].epoch
                && a[i].host_len == b[j].host_len
                && ngx_memcmp(a[i].host, b[j].host, a[i].host_len) == 0)
            {
                break;
            }
        }

        if (j == nb) {
            return 0;
        }
    }

    return 1;
}


/*
 * A cluster's redirection of a command answered by node from: MOVED (the
 * slot has moved: the map learns it and is asked for again) or ASK (this
 * one command goes to the importing node, after ASKING). The command's
 * bytes are written again to the node named, with the same callback.
 * NGX_OK: sent again, the reply will come there; NGX_DECLINED: not a
 * redirection, or not one that can be followed (the caller fails it).
 */
static ngx_int_t
ngx_http_linegate_redis_redirect(ngx_http_linegate_redis_node_t *from,
    redisReply *reply, u_char *buf, size_t len, ngx_uint_t *redirects,
    redisCallbackFn *fn, void *privdata,
    ngx_http_linegate_redis_node_t **to)
{
    ngx_str_t                            host;
    ngx_http_linegate_redis_t           *rd;
    ngx_http_linegate_redis_node_t      *node;
    ngx_http_linegate_redis_redirect_t   rr;

    static char  asking[] = "*1\r\n$6\r\nASKING\r\n";

    rd = &ngx_http_linegate_redis;

    if (!rd->cluster || reply == NULL || reply->type != REDIS_REPLY_ERROR
        || ngx_http_linegate_redis_redirect_parse(reply->str, reply->len,
                                                  &rr)
           != 0)
    {
        return NGX_DECLINED;
    }

    if (!rr.ask) {
        /* the rest of the map may have changed too */
        ngx_http_linegate_redis_refresh_soon(0);
    }

    if (rr.host_len == 0) {
        host = from->host;

    } else {
        host.data = (u_char *) rr.host;
        host.len = rr.host_len;
    }

    node = ngx_http_linegate_redis_node(&host, rr.port);

    if (node == NULL) {
        return NGX_DECLINED;
    }

    if (!rr.ask) {
        ngx_http_linegate_redis_slots[rr.slot] =
                                   (uint16_t) (node - rd->nodes) + 1;

        if (rd->refreshing) {
            /* the CLUSTER SLOTS out now may answer with the old owner */
            ngx_http_linegate_redis_moved[rr.slot >> 3] |=
                                           (uint8_t) (1u << (rr.slot & 7));
            rd->moved_since = 1;
        }
    }

    if (buf == NULL || *redirects >= NGX_HTTP_LINEGATE_CLUSTER_REDIRECTS
        || node->state != NGX_HTTP_LINEGATE_REDIS_CONNECTED)
    {
        return NGX_DECLINED;
    }

    if ((rr.ask
         && redisAsyncFormattedCommand(node->ac, NULL, NULL, asking,
                                       sizeof(asking) - 1)
            != REDIS_OK)
        || redisAsyncFormattedCommand(node->ac, fn, privdata,
                                      (const char *) buf, len)
           != REDIS_OK)
    {
        return NGX_DECLINED;
    }

    (*redirects)++;
    *to = node;

    return NGX_OK;
}
