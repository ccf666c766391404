
/*
 * linegate: one asynchronous Redis connection per worker, on nginx's
 * event loop (hiredis async with an nginx adapter).
 */


#ifndef _NGX_HTTP_LINEGATE_REDIS_H_INCLUDED_
#define _NGX_HTTP_LINEGATE_REDIS_H_INCLUDED_


#include "ngx_http_linegate_module.h"
#include <hiredis/hiredis.h>
#include "ngx_http_linegate_lua.h"


#define NGX_HTTP_LINEGATE_REDIS_MAX_ARGS      64
#define NGX_HTTP_LINEGATE_REDIS_MAX_PIPELINE  64
/* a cluster's nodes a worker connects to (and masters it subscribes on) */
#define NGX_HTTP_LINEGATE_REDIS_MAX_NODES     64


/*
 * Called exactly once per command, while the request lives: a request
 * freed first (finalized, terminated, its client gone) detaches its
 * commands (a pool cleanup), whose replies are then dropped. reply is
 * NULL when Redis could not answer (not connected, timed out, connection
 * lost, or an error such as LOADING, NOAUTH or BUSY that makes the store
 * unavailable, a script stopped by SCRIPT KILL: all answered 503; any
 * other error reply, WRONGTYPE, a script's own, marks the request's
 * ctx->store_fault, and its 503 is a 500: no retry changes it). NULL
 * after the command was sent means "unknown", not "nothing happened": a
 * timed-out command may still run. Except when the handler finds
 * ctx->store_not_run set: Redis refused the command before running any
 * of it (a cluster's TRYAGAIN once its deadline came, CLUSTERDOWN, a
 * MOVED or ASK past the redirections followed), and it will not run
 * (the flag is cleared when the request's next command is sent).
 * A write that must happen anyway goes through
 * ngx_http_linegate_redis_durable() (idempotent). The reply is freed
 * when the handler returns: copy what is needed.
 */
typedef void (*ngx_http_linegate_redis_handler_pt)(ngx_http_request_t *r,
    redisReply *reply);


typedef struct {
    int                             argc;
    int                             nkeys;     /* the first nkeys: KEYS */
    /*
     * a plain command a 2xx stands on, as the scripts of
     * ngx_http_linegate_redis_acknowledged(): linegate_redis_wait's WAIT
     * follows it (set after _args_init(), which clears it); a script
     * acknowledged by some calls only (the confirm's RESERVE, on a
     * cluster) sets it too
     */
    unsigned                        acknowledged:1;
    const char                     *argv[NGX_HTTP_LINEGATE_REDIS_MAX_ARGS];
    size_t                          argvlen[NGX_HTTP_LINEGATE_REDIS_MAX_ARGS];
} ngx_http_linegate_redis_args_t;


void ngx_http_linegate_redis_args_init(ngx_http_linegate_redis_args_t *a);
void ngx_http_linegate_redis_arg(ngx_http_linegate_redis_args_t *a,
    const void *data, size_t len);
void ngx_http_linegate_redis_arg_str(ngx_http_linegate_redis_args_t *a,
    ngx_str_t *s);
void ngx_http_linegate_redis_arg_cstr(ngx_http_linegate_redis_args_t *a,
    const char *s);
/* n strings, in order (a script's keys built together) */
void ngx_http_linegate_redis_arg_strs(ngx_http_linegate_redis_args_t *a,
    ngx_str_t *s, ngx_uint_t n);
void ngx_http_linegate_redis_arg_int(ngx_http_request_t *r,
    ngx_http_linegate_redis_args_t *a, int64_t n);
/*
 * A script's key (keys.c names it): inserted after the keys already
 * given, before any ARGV, so a caller may add a key after the arguments
 * of a shared builder; a->nkeys counts them.
 */
void ngx_http_linegate_redis_arg_key(ngx_http_linegate_redis_args_t *a,
    ngx_str_t *key);

/*
 * Run a script: args hold KEYS then ARGV; nkeys says how many are keys.
 * Returns NGX_OK when the command was sent (the handler will be called
 * later), NGX_ERROR when it could not be (the handler is not called).
 *
 * handler NULL: fire and forget. The arguments are copied (args may be
 * freed once this returns) and the script outlives its request as a
 * request's would not: NOSCRIPT gets the EVAL with the script's source,
 * a cluster's MOVED, ASK and TRYAGAIN are followed; an error reply is
 * logged. Never sent again after no answer (it may have run): for a
 * write whose loss is tolerable but whose silent loss is not (a
 * linegate_limit refund); ngx_http_linegate_redis_durable() for one
 * that must happen.
 */
ngx_int_t ngx_http_linegate_redis_script(ngx_http_request_t *r,
    ngx_http_linegate_script_id_e script, int nkeys,
    ngx_http_linegate_redis_args_t *args,
    ngx_http_linegate_redis_handler_pt handler);

/*
 * A plain command: args hold the command name and its arguments (they
 * may be freed once this returns). handler NULL: fire and forget, as a
 * script's: its arguments copied, a cluster's MOVED, ASK and TRYAGAIN
 * followed after its request is gone, an error reply logged, the reply
 * dropped (the command still holds a timer, so that a graceful reload
 * sends it before the worker exits).
 */
ngx_int_t ngx_http_linegate_redis_command(ngx_http_request_t *r,
    ngx_http_linegate_redis_args_t *args,
    ngx_http_linegate_redis_handler_pt handler);

/*
 * AUTH [user] password of linegate_redis into argv (3 places): the
 * count, 0 when no password is configured
 */
int ngx_http_linegate_redis_auth_args(const char **argv, size_t *argvlen);

/* GET key (a lookup read as its own step), as redis_command */
ngx_int_t ngx_http_linegate_redis_get(ngx_http_request_t *r, ngx_str_t *key,
    ngx_http_linegate_redis_handler_pt handler);

/*
 * The ncmds commands of args[] written back to back: one round trip,
 * without MULTI/EXEC (two commands fewer for Redis, no QUEUED replies),
 * so not atomic: for reads, and counters whose interleaving with other
 * clients does not matter. The handler gets an array reply with one
 * element per command, or NULL as for a command: also when any command
 * failed (its error is logged). args may be freed once this returns. At
 * most NGX_HTTP_LINEGATE_REDIS_MAX_PIPELINE commands.
 */
ngx_int_t ngx_http_linegate_redis_pipeline(ngx_http_request_t *r,
    ngx_uint_t ncmds, ngx_http_linegate_redis_args_t *args,
    ngx_http_linegate_redis_handler_pt handler);
/*
 * The same, for a caller that must undo what the commands that ran did
 * when another failed (linegate_limit's refunds, the Lines API's GET
 * pipeline giving its workspace's admission back): the handler always
 * gets an array of ncmds elements, element i command i's reply (an error
 * reply included), or NULL when its outcome is not known (its connection
 * lost, the command timeout came first, linegate_redis_wait's WAIT
 * counted too few replicas), or when it could not be written; a command
 * whose element is NULL may still run. NGX_ERROR only when none was
 * written: once one is, its reply is waited for, even if a later one
 * cannot be written. The elements are valid while the handler runs.
 */
ngx_int_t ngx_http_linegate_redis_pipeline_each(ngx_http_request_t *r,
    ngx_uint_t ncmds, ngx_http_linegate_redis_args_t *args,
    ngx_http_linegate_redis_handler_pt handler);
/*
 * As _pipeline(): one command "name key" per key (e.g. HGETALL of each
 * of nkeys hashes), without an args structure per command.
 */
ngx_int_t ngx_http_linegate_redis_pipeline_keys(ngx_http_request_t *r,
    const char *name, ngx_uint_t nkeys, ngx_str_t *keys,
    ngx_http_linegate_redis_handler_pt handler);

/*
 * A durable write: a write that must happen whatever becomes of the
 * request that asked for it (its client gone, its Redis command timed
 * out, the worker draining after a reload). The arguments (and what) are
 * copied into the worker's memory: args may be freed once this returns,
 * and no request is ever called back. The write is sent now, or when
 * Redis is connected again, and sent again (backoff 100 ms to 2 s, after
 * every reconnect) until Redis answers anything but an error; an
 * "unavailable" error (LOADING, BUSY, READONLY, MISCONF...) is retried
 * too, any other error (a script's own) is final and logged at alert.
 * A cluster's MOVED and ASK are followed at once, as a request's are
 * (ASK: ASKING, then the write, on the node named).
 *
 * Because "no answer" is not "nothing happened" (a timed-out command may
 * still run, a connection may drop after Redis ran it), a durable write
 * may run more than once: SCRIPTS AND COMMANDS SENT THIS WAY MUST BE
 * IDEMPOTENT (a release by request id, HSET of fixed values; not INCR,
 * not XADD with "*" unless a duplicate entry is harmless).
 *
 * The log says what became of it, naming it by what (never put a secret
 * in it): info "durable write \"<what>\" done (attempt N)", error "...
 * not answered (attempt N), will retry", alert "... refused by redis",
 * "... lost: N writes already wait for Redis" (at most 1024 wait per
 * worker; NGX_ERROR is returned and nothing is queued), "... lost: the
 * worker exits with Redis unreachable" (a draining worker waits at most
 * 30 s for Redis). ngx_http_linegate_redis_durable_command(): a plain
 * command, args holding its name. NGX_ERROR: not queued (logged).
 */
ngx_int_t ngx_http_linegate_redis_durable(ngx_log_t *log,
    ngx_http_linegate_script_id_e script, int nkeys,
    ngx_http_linegate_redis_args_t *args, const char *what);
ngx_int_t ngx_http_linegate_redis_durable_command(ngx_log_t *log,
    ngx_http_linegate_redis_args_t *args, const char *what);

/*
 * A durable script whose answer decides a next durable write: then is
 * called once, with Redis's answer and the script's own (copied)
 * arguments, when it is done (not when it is refused or lost: logged
 * as any durable write). The next write is then's to queue.
 */
typedef void (*ngx_http_linegate_redis_then_pt)(redisReply *reply,
    ngx_http_linegate_redis_args_t *args, ngx_str_t *note);
ngx_int_t ngx_http_linegate_redis_durable_then(ngx_log_t *log,
    ngx_http_linegate_script_id_e script, int nkeys,
    ngx_http_linegate_redis_args_t *args, const char *what,
    ngx_http_linegate_redis_then_pt then);
/*
 * The same for a plain command (args hold its name), whose next write
 * needs what the command does not carry: note, copied with it, is
 * handed to then (e.g. the journal member a set-up entry's XADD removes
 * once done). The script variant's then gets an empty note.
 */
ngx_int_t ngx_http_linegate_redis_durable_command_then(ngx_log_t *log,
    ngx_http_linegate_redis_args_t *args, const char *what,
    ngx_http_linegate_redis_then_pt then, ngx_str_t *note);
/* how many durable writes of this worker wait for Redis */
ngx_uint_t ngx_http_linegate_redis_durable_pending(void);
/*
 * Changes whenever the worker's connection (not a cluster's) is made or
 * lost: what Redis keeps per connection (client tracking) holds while it
 * is the same
 */
ngx_uint_t ngx_http_linegate_redis_conn_gen(void);

/* 1 when the worker's connection is up (a command may be sent now) */
ngx_uint_t ngx_http_linegate_redis_connected(void);
/*
 * 1 while the worker's first connection is being made (at start, after
 * a reload: Sentinel asked for the master, a cluster's first map): a
 * request's command sent now waits for it, within
 * linegate_redis_command_timeout, and is answered NULL once nothing is
 * left to try (another sentinel, another seed). A reconnect (after a
 * loss) is not waited for: commands fail at once.
 */
ngx_uint_t ngx_http_linegate_redis_connecting(void);
/*
 * NGX_OK: host:port of a server the worker's connection is up with (the
 * one Redis, Sentinel's master, a cluster's master serving slots), for
 * the subscriber (redis_pubsub.c); host is the node's, copy it.
 * NGX_DECLINED: none now.
 */
ngx_int_t ngx_http_linegate_redis_server(ngx_str_t *host,
    ngx_int_t *port);

/*
 * Redis Cluster, lmcf->redis_cluster_nodes: NGX_OK and the n (at most
 * max) masters of the last CLUSTER NODES taken, slots or not (their
 * hosts are static buffers: copy them); NGX_DECLINED when there is none
 * yet or it names more than max.
 */
ngx_int_t ngx_http_linegate_redis_cluster_masters(
    ngx_http_linegate_redis_addr_t *addr, ngx_uint_t max, ngx_uint_t *n);
/* changes whenever that list of masters changes */
ngx_uint_t ngx_http_linegate_redis_masters_gen(void);
/*
 * 1 while that list came from a CLUSTER NODES sent less than within ms
 * ago (asked with each CLUSTER SLOTS, every lmcf->redis_cluster_refresh)
 */
ngx_uint_t ngx_http_linegate_redis_masters_fresh(ngx_msec_t within);

ngx_int_t ngx_http_linegate_redis_init_process(ngx_cycle_t *cycle);
void ngx_http_linegate_redis_exit_process(ngx_cycle_t *cycle);

/* reply helpers */
ngx_int_t ngx_http_linegate_reply_int(redisReply *reply, ngx_uint_t i,
    int64_t *n);
ngx_int_t ngx_http_linegate_reply_str(redisReply *reply, ngx_uint_t i,
    ngx_str_t *s);


#endif /* _NGX_HTTP_LINEGATE_REDIS_H_INCLUDED_ */
