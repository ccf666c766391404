
/*
 * linegate: line-provisioning APIs served from inside nginx.
 *
 * Types shared by every file of the module: the configuration, the
 * per-request context and the endpoint ids.
 */


#ifndef _NGX_HTTP_LINEGATE_MODULE_H_INCLUDED_
#define _NGX_HTTP_LINEGATE_MODULE_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include <jansson.h>


#define NGX_HTTP_LINEGATE_LOG  "linegate: "

/* statuses nginx has no names for */
#define NGX_HTTP_LINEGATE_PAYMENT_REQUIRED  402
#define NGX_HTTP_LINEGATE_UNPROCESSABLE     422

/* linegate_lines_cache: at least this many bytes (a few answers) */
#define NGX_HTTP_LINEGATE_LINES_CACHE_MIN  (64 * 1024)

/*
 * the largest sizes nginx -t takes, each worker's: a typo ("8192m", an
 * extra digit) would otherwise take gigabytes in every worker
 * (docs/directives.md)
 */
#define NGX_HTTP_LINEGATE_LINES_CACHE_MAX  (256 * 1024 * 1024)
#define NGX_HTTP_LINEGATE_APIKEY_CACHE_MAX  1048576    /* ~120 MB */

/* linegate_inventory_cache: at most this long (ms) */
#define NGX_HTTP_LINEGATE_INVENTORY_CACHE_MAX  60000

/* the largest times nginx -t takes (ms), docs/directives.md */
#define NGX_HTTP_LINEGATE_REDIS_TIMEOUT_MAX       60000      /* 1m */
#define NGX_HTTP_LINEGATE_REDIS_KEEPALIVE_MAX     600000     /* 10m */
#define NGX_HTTP_LINEGATE_RECONCILE_INTERVAL_MAX  3600000    /* 1h */
/* linegate_reconcile_delay, _lost_after, _auto's interval= */
#define NGX_HTTP_LINEGATE_RECONCILE_TIME_MAX      86400000   /* 1d */
/* linegate_stripe_timeout: one Stripe call as a whole (ms) */
#define NGX_HTTP_LINEGATE_STRIPE_TIMEOUT_MIN      1000       /* 1s */
#define NGX_HTTP_LINEGATE_STRIPE_TIMEOUT_MAX      300000     /* 5m */


typedef enum {
    NGX_HTTP_LINEGATE_API_NONE = 0,
    NGX_HTTP_LINEGATE_API_LINE_REQUEST_CREATE,
    NGX_HTTP_LINEGATE_API_LINE_REQUEST,
    NGX_HTTP_LINEGATE_API_LINES_BY_USER,
    NGX_HTTP_LINEGATE_API_LINE_AVAILABILITY,
    NGX_HTTP_LINEGATE_API_PROVISION_PREVIEW,
    NGX_HTTP_LINEGATE_API_PROVISION_CONFIRM,
    NGX_HTTP_LINEGATE_API_ACCOUNT_LIMITS,
    NGX_HTTP_LINEGATE_API_OPERATOR,
    NGX_HTTP_LINEGATE_API_STRIPE_WEBHOOK,
    NGX_HTTP_LINEGATE_API_METRICS
} ngx_http_linegate_api_e;


/* how a caller was authenticated, for $linegate_auth */
typedef enum {
    NGX_HTTP_LINEGATE_AUTH_NONE = 0,
    NGX_HTTP_LINEGATE_AUTH_API_KEY,
    NGX_HTTP_LINEGATE_AUTH_CLERK,
    NGX_HTTP_LINEGATE_AUTH_SB_KEY,
    NGX_HTTP_LINEGATE_AUTH_OPERATOR,
    NGX_HTTP_LINEGATE_AUTH_STRIPE
} ngx_http_linegate_auth_e;


typedef struct {
    ngx_str_t                       price;
    ngx_str_t                       plan;
} ngx_http_linegate_plan_price_t;


/* a Redis address, resolved at load */
typedef struct {
    ngx_str_t                       host;    /* an IP, NUL-terminated */
    ngx_int_t                       port;
} ngx_http_linegate_redis_addr_t;


typedef struct {
    /* Redis: an IP address (resolved at load) or a unix socket */
    ngx_str_t                       redis_host;
    ngx_int_t                       redis_port;
    ngx_str_t                       redis_unix;
    /* or Redis Sentinel: the master's name and the sentinels */
    ngx_str_t                       redis_sentinel_master;
    ngx_array_t                    *redis_sentinels;
    ngx_str_t                       redis_sentinel_password;
    /* or Redis Cluster (cluster=on): the seed nodes */
    ngx_flag_t                      redis_cluster;
    ngx_array_t                    *redis_seeds;
    /*
     * how often a worker asks for the slot map again, and whether it asks
     * for CLUSTER NODES's masters too (the subscribers'): not directives
     */
    ngx_msec_t                      redis_cluster_refresh;
    ngx_flag_t                      redis_cluster_nodes;
    ngx_str_t                       redis_user;      /* ACL user, or none */
    ngx_str_t                       redis_password;
    ngx_int_t                       redis_db;
    ngx_msec_t                      redis_connect_timeout;
    ngx_msec_t                      redis_command_timeout;
    ngx_msec_t                      redis_keepalive;
    /* linegate_redis_wait: replicas that acknowledge a money-path write */
    ngx_int_t                       redis_wait_replicas;
    ngx_msec_t                      redis_wait_timeout;
    ngx_flag_t                      redis_configured;

    /* Stripe, reached through an internal location */
    ngx_str_t                       stripe_location;
    ngx_str_t                       stripe_version;
    /*
     * linegate_stripe_key_file: the secret key, and the Authorization
     * header every call carries ("Bearer <key>", made at load)
     */
    ngx_str_t                       stripe_key;
    ngx_str_t                       stripe_auth;
    /* linegate_stripe_timeout: the most one call lasts, whatever drips */
    ngx_msec_t                      stripe_timeout;
    /* the servers of the APIs that call Stripe (stripe_conf.c checks) */
    ngx_array_t                    *stripe_servers;
    ngx_str_t                       price_phone;
    ngx_str_t                       price_email;
    ngx_str_t                       price_agent_line;
    ngx_array_t                    *plan_prices;
    ngx_str_t                       webhook_secret;
    time_t                          webhook_tolerance;
    ngx_msec_t                      reconcile_interval;
    /* lg:{fleet}:reconcile: entries younger are left for a later run */
    ngx_msec_t                      reconcile_delay;
    /* a confirm in flight for longer: its worker died */
    ngx_msec_t                      reconcile_lost;
    /* the operator API a worker calls by itself, NULL: off */
    ngx_url_t                      *reconcile_auto;
    ngx_msec_t                      reconcile_auto_interval;
    ngx_msec_t                      reconcile_auto_timeout;

    /* credentials */
    ngx_str_t                       operator_token;
    ngx_str_t                       clerk_key_file;
    struct ngx_http_linegate_jwt_keys_s  *clerk_keys;    /* jwt.h */
    ngx_str_t                       clerk_issuer;
    ngx_array_t                    *clerk_azp;       /* of char * */
    time_t                          clerk_leeway;
    ngx_msec_t                      apikey_cache_ttl;
    /* an API key's entry while revocations are pushed (pubsub), 0: off */
    ngx_msec_t                      apikey_cache_pushed;
    ngx_int_t                       apikey_cache_size;  /* entries */
    /* shared by the workers: bumped by operator writes (key revocation) */
    ngx_atomic_t                   *apikey_epoch;

    /* limits and defaults */
    ngx_uint_t                      ws_rate;         /* requests ... */
    time_t                          ws_rate_window;  /* ... per window */
    /* GCRA (rl_gcra.lua): T = window / ws_rate, tau = (ws_rate - 1) T */
    int64_t                         ws_rate_interval;   /* T, us */
    ngx_str_t                       ws_rate_interval_arg;
    ngx_str_t                       ws_rate_tolerance_arg;
    /* linegate_workspace_rate lease=: 0, off; admissions in a lease */
    ngx_msec_t                      ws_rate_lease;
    ngx_uint_t                      ws_rate_lease_max;
    ngx_uint_t                      prov_daily;
    ngx_uint_t                      prov_monthly;
    time_t                          preview_ttl;
    /* linegate_inventory_cache: 0, off; how long "in stock" is trusted */
    ngx_msec_t                      inventory_cache;
    /* linegate_lines_cache: 0, off; bytes of answers kept per worker */
    size_t                          lines_cache;
    ngx_uint_t                      line_daily_conversations;
    ngx_uint_t                      line_daily_messages;
    time_t                          idempotency_ttl;

    /* $request_id made per worker (ngx_http_linegate_request_id.c) */
    ngx_flag_t                      fast_request_id;

    /* which APIs some location serves: what must be configured */
    unsigned                        uses_lines:1;
    unsigned                        uses_provision:1;
    unsigned                        uses_operator:1;
    unsigned                        uses_webhook:1;
    unsigned                        uses_stripe:1;
    unsigned                        uses_metrics:1;

    ngx_int_t                       request_id_index;
} ngx_http_linegate_main_conf_t;


typedef struct {
    ngx_uint_t                      api;
    ngx_str_t                       api_name;  /* for reply.c's filter */
    size_t                          max_body;
} ngx_http_linegate_loc_conf_t;


/*
 * Why a service (auth.c) refused a request: the endpoint answers it with
 * ngx_http_linegate_refuse() (reply.h). 500: an internal error.
 */
typedef struct {
    ngx_uint_t                      status;
    const char                     *code;      /* NULL: none */
    const char                     *message;
} ngx_http_linegate_refusal_t;


typedef struct ngx_http_linegate_ctx_s  ngx_http_linegate_ctx_t;

typedef void (*ngx_http_linegate_resume_pt)(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx);


struct ngx_http_linegate_ctx_s {
    ngx_uint_t                      api;
    ngx_str_t                      *api_name;    /* the metrics' label */
    ngx_uint_t                      state;       /* endpoint's own enum */

    /* the request body: raw bytes and, for JSON APIs, the parsed object */
    ngx_str_t                       raw;
    json_t                         *body;
    /* the body's bytes read so far (the request body filter's count) */
    off_t                           body_read;
    /* refused by that filter: its 400 says "Request body too large" */
    unsigned                        body_over:1;

    /* who is calling */
    ngx_uint_t                      auth;
    ngx_str_t                       tenant;      /* workspace or account */
    ngx_str_t                       outcome;     /* $linegate_outcome */
    ngx_http_linegate_refusal_t     refusal;
    ngx_str_t                       path_id;

    /* the last Stripe subrequest: filled before resume is called */
    ngx_http_linegate_resume_pt     resume;
    ngx_int_t                       stripe_status;
    ngx_str_t                       stripe_body;
    json_t                         *stripe_json;
    ngx_uint_t                      stripe_retry_after;  /* s, 0: none */
    ngx_str_t                       stripe_path;     /* for the metrics */
    uint64_t                        stripe_sent_us;
    /* linegate_stripe_timeout's timer of the call in flight, its sr */
    ngx_event_t                     stripe_deadline;
    ngx_http_request_t             *stripe_sr;
    /* no whole answer came: the call may have run (ngx_..._stripe.h) */
    unsigned                        stripe_unknown:1;
    /* the call outlasted linegate_stripe_timeout and was ended */
    unsigned                        stripe_expired:1;
    /* the pool cleanup that deletes stripe_deadline is added */
    unsigned                        stripe_cleanup:1;
    /* the client's connection ended while a call ran (stripe.c) */
    unsigned                        stripe_client_gone:1;

    /* headers the answer must carry besides the common ones */
    ngx_str_t                       rl_policy;
    ngx_str_t                       rl_state;
    ngx_int_t                       retry_after;   /* -1: none */
    /* an operator's write: the key caches' epoch moves again at the end */
    unsigned                        bump_epoch:1;
    unsigned                        replayed:1;
    unsigned                        answered:1;    /* the module's answer */
    /* nginx's own error page, answered in the API's JSON (reply.c) */
    unsigned                        nginx_page:1;
    /*
     * Redis refused one of its commands with an error no retry changes
     * (WRONGTYPE, a script's own error: redis.c): what would be a 503
     * "retry shortly" is a 500 (reply.c)
     */
    unsigned                        store_fault:1;
    /*
     * the Redis command whose handler runs (reply NULL) was refused
     * before anything of it ran: a cluster's TRYAGAIN, CLUSTERDOWN, a
     * MOVED or ASK past the redirections (redis.c, redis.h); a step
     * that would undo what it may have done has nothing to undo
     */
    unsigned                        store_not_run:1;

    /* endpoint-specific state */
    void                           *data;

    ngx_http_log_handler_pt         log_handler;
};


extern ngx_module_t  ngx_http_linegate_module;


/* the main request's ctx, NULL before the content handler made it */
static ngx_inline ngx_http_linegate_ctx_t *
ngx_http_linegate_get_ctx(ngx_http_request_t *r)
{
    return ngx_http_get_module_ctx(r->main, ngx_http_linegate_module);
}


/* endpoint entry points: called once the body has been read */
void ngx_http_linegate_operator_handler(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx);
void ngx_http_linegate_lines_handler(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx);
void ngx_http_linegate_provision_handler(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx);
void ngx_http_linegate_webhook_handler(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx);


#endif /* _NGX_HTTP_LINEGATE_MODULE_H_INCLUDED_ */
