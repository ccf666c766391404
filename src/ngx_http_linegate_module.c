
/*
 * linegate: line-provisioning APIs served from inside nginx.
 *
 * This file holds the directives, the configuration, the content handler
 * that reads the body and dispatches to an endpoint, and the $linegate_*
 * variables. Each endpoint family lives in its own file.
 */


#include "ngx_http_linegate_module.h"
#include "ngx_http_linegate_jwt.h"
#include "ngx_http_linegate_redis.h"
#include "ngx_http_linegate_redis_pubsub.h"
#include "ngx_http_linegate_lines_cache.h"
#include "ngx_http_linegate_redis_slots.h"
#include "ngx_http_linegate_reply.h"
#include "ngx_http_linegate_scripts.h"
#include "ngx_http_linegate_request_id.h"
#include "ngx_http_linegate_crypto.h"
#include "ngx_http_linegate_chars.h"
#include "ngx_http_linegate_auth.h"
#include "ngx_http_linegate_metrics.h"
#include "ngx_http_linegate_reconcile.h"
#include "ngx_http_linegate_lease.h"
#include "ngx_http_linegate_conf.h"
#include "ngx_http_linegate_stripe_conf.h"
#include "ngx_http_linegate_provision.h"


typedef struct {
    ngx_str_t                       name;
    ngx_uint_t                      api;
    ngx_uint_t                      methods;
} ngx_http_linegate_api_t;


static ngx_int_t ngx_http_linegate_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_linegate_rewrite_handler(ngx_http_request_t *r);
static void ngx_http_linegate_body_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_linegate_body_limit(ngx_http_request_t *r,
    ngx_chain_t *in);
static ngx_int_t ngx_http_linegate_take_body(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx);
static char *ngx_http_linegate_apikey_cache_size(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_linegate_apikey_cache(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static ngx_int_t ngx_http_linegate_init_epoch(ngx_shm_zone_t *shm_zone,
    void *data);

static ngx_int_t ngx_http_linegate_add_variables(ngx_conf_t *cf);
static ngx_int_t ngx_http_linegate_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);

static void *ngx_http_linegate_create_main_conf(ngx_conf_t *cf);
static char *ngx_http_linegate_init_main_conf(ngx_conf_t *cf, void *conf);
static void *ngx_http_linegate_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_linegate_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);
static char *ngx_http_linegate_api(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_linegate_redis_conf(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static ngx_int_t ngx_http_linegate_redis_address(ngx_conf_t *cf,
    ngx_str_t *value, ngx_str_t *host, ngx_int_t *port);
static ngx_uint_t ngx_http_linegate_redis_address_shaped(ngx_str_t *value);
static ngx_array_t *ngx_http_linegate_redis_addresses(ngx_conf_t *cf,
    ngx_str_t *value, ngx_uint_t n, const char *what);
static char *ngx_http_linegate_lines_cache_conf(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_linegate_redis_cluster_conf(ngx_conf_t *cf,
    ngx_http_linegate_main_conf_t *lmcf, ngx_str_t *value,
    ngx_uint_t naddrs);
static char *ngx_http_linegate_redis_secret(ngx_conf_t *cf, ngx_str_t *v,
    size_t skip, ngx_str_t *secret, const char *whose, const char *option,
    const char *file_directive);
static char *ngx_http_linegate_redis_option(ngx_conf_t *cf,
    ngx_http_linegate_main_conf_t *lmcf, ngx_str_t *v, ngx_uint_t *seen);
static char *ngx_http_linegate_redis_wait_conf(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static ngx_int_t ngx_http_linegate_reconcile_lost_check(ngx_conf_t *cf,
    ngx_http_linegate_main_conf_t *lmcf);
static ngx_int_t ngx_http_linegate_stripe_key_check(ngx_conf_t *cf,
    ngx_http_linegate_main_conf_t *lmcf);
static char *ngx_http_linegate_plan_price(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_linegate_rate(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_linegate_clerk_key(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_linegate_clerk_azp(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static ngx_uint_t ngx_http_linegate_clerk_origin(ngx_str_t *v);
static char *ngx_http_linegate_provision_limits(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_linegate_line_limits(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_linegate_secret_file(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_linegate_require(ngx_conf_t *cf, ngx_str_t *value,
    const char *directive, const char *why);
static void ngx_http_linegate_free_keys(void *data);
static ngx_int_t ngx_http_linegate_metrics_api(ngx_http_request_t *r);
static ngx_int_t ngx_http_linegate_stripe_server(ngx_conf_t *cf);
static ngx_int_t ngx_http_linegate_init(ngx_conf_t *cf);
static ngx_int_t ngx_http_linegate_init_process(ngx_cycle_t *cycle);
static void ngx_http_linegate_exit_process(ngx_cycle_t *cycle);


/* how often a worker asks a Redis Cluster for its slot map (ms) */
#define NGX_HTTP_LINEGATE_CLUSTER_REFRESH         10000
#define NGX_HTTP_LINEGATE_CLUSTER_REFRESH_PUSHED  500

/*
 * RFC 9110 9.3.2: what serves GET serves HEAD, the same answer without
 * its body (nginx's header filter sets r->header_only, reply.c stops)
 */
#define NGX_HTTP_LINEGATE_GET   (NGX_HTTP_GET|NGX_HTTP_HEAD)
#define NGX_HTTP_LINEGATE_POST  NGX_HTTP_POST
#define NGX_HTTP_LINEGATE_ANY   (NGX_HTTP_GET|NGX_HTTP_HEAD|NGX_HTTP_POST  \
                                 |NGX_HTTP_PUT|NGX_HTTP_DELETE)


static ngx_http_linegate_api_t  ngx_http_linegate_apis[] = {
    { ngx_string("line_request_create"),
      NGX_HTTP_LINEGATE_API_LINE_REQUEST_CREATE, NGX_HTTP_LINEGATE_POST },
    { ngx_string("line_request"),
      NGX_HTTP_LINEGATE_API_LINE_REQUEST,
      NGX_HTTP_LINEGATE_GET|NGX_HTTP_LINEGATE_POST },
    { ngx_string("lines_by_user"),
      NGX_HTTP_LINEGATE_API_LINES_BY_USER, NGX_HTTP_LINEGATE_GET },
    { ngx_string("line_availability"),
      NGX_HTTP_LINEGATE_API_LINE_AVAILABILITY, NGX_HTTP_LINEGATE_GET },
    { ngx_string("provision_preview"),
      NGX_HTTP_LINEGATE_API_PROVISION_PREVIEW, NGX_HTTP_LINEGATE_POST },
    { ngx_string("provision_confirm"),
      NGX_HTTP_LINEGATE_API_PROVISION_CONFIRM, NGX_HTTP_LINEGATE_POST },
    { ngx_string("account_limits"),
      NGX_HTTP_LINEGATE_API_ACCOUNT_LIMITS, NGX_HTTP_LINEGATE_GET },
    { ngx_string("operator"),
      NGX_HTTP_LINEGATE_API_OPERATOR, NGX_HTTP_LINEGATE_ANY },
    { ngx_string("stripe_webhook"),
      NGX_HTTP_LINEGATE_API_STRIPE_WEBHOOK, NGX_HTTP_LINEGATE_POST },
    { ngx_string("metrics"),
      NGX_HTTP_LINEGATE_API_METRICS, NGX_HTTP_LINEGATE_GET },
    { ngx_null_string, 0, 0 }
};


static char *ngx_http_linegate_check_sec_bounds(ngx_conf_t *cf, void *post,
    void *data);

static ngx_conf_num_bounds_t  ngx_http_linegate_tolerance_bounds = {
    ngx_http_linegate_check_sec_bounds, 1, 3600
};

/* a small clock skew (SPEC 4): past it, an expired session is valid */
static ngx_conf_num_bounds_t  ngx_http_linegate_leeway_bounds = {
    ngx_http_linegate_check_sec_bounds, 0, 60
};

/* a preview's token: "SET ... EX 0" is refused, so every preview would be */
static ngx_conf_num_bounds_t  ngx_http_linegate_preview_ttl_bounds = {
    ngx_http_linegate_check_sec_bounds, 1, 86400
};

/*
 * a creation's key: it also bounds the "running" record, which must
 * outlive the creation's Stripe calls (a shorter one lets a retry create
 * a second request while the first still runs)
 */
static ngx_conf_num_bounds_t  ngx_http_linegate_idempotency_ttl_bounds = {
    ngx_http_linegate_check_sec_bounds, 60, 2592000
};

/*
 * Times a timer is armed with or a clock compared to (ms): past these
 * they mean nothing (a request waiting minutes for one Redis reply), and
 * a large one wrapped ngx_msec_t added to ngx_current_msec (the timer
 * fired at once). 0 is refused by init_main_conf for the Redis ones.
 */
static ngx_conf_num_bounds_t  ngx_http_linegate_redis_timeout_bounds = {
    ngx_http_linegate_conf_check_msec_bounds, 0,
    NGX_HTTP_LINEGATE_REDIS_TIMEOUT_MAX
};

static ngx_conf_num_bounds_t  ngx_http_linegate_keepalive_bounds = {
    ngx_http_linegate_conf_check_msec_bounds, 0,
    NGX_HTTP_LINEGATE_REDIS_KEEPALIVE_MAX
};

static ngx_conf_num_bounds_t  ngx_http_linegate_reconcile_interval_bounds = {
    ngx_http_linegate_conf_check_msec_bounds, 0,
    NGX_HTTP_LINEGATE_RECONCILE_INTERVAL_MAX
};

/*
 * linegate_stripe_timeout: under a second a slow but healthy Stripe call
 * fails; past minutes it bounds nothing a client waits for
 */
static ngx_conf_num_bounds_t  ngx_http_linegate_stripe_timeout_bounds = {
    ngx_http_linegate_conf_check_msec_bounds,
    NGX_HTTP_LINEGATE_STRIPE_TIMEOUT_MIN, NGX_HTTP_LINEGATE_STRIPE_TIMEOUT_MAX
};

/*
 * linegate_reconcile_delay, _lost_after (at least 1s, and longer than a
 * confirm can last: linegate_init)
 */
static ngx_conf_num_bounds_t  ngx_http_linegate_reconcile_bounds = {
    ngx_http_linegate_conf_check_msec_bounds, 0,
    NGX_HTTP_LINEGATE_RECONCILE_TIME_MAX
};


/* the request body filter after linegate_max_body's count */
static ngx_http_request_body_filter_pt
    ngx_http_linegate_next_request_body_filter;


static ngx_command_t  ngx_http_linegate_commands[] = {

    { ngx_string("linegate_api"),
      NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_linegate_api,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("linegate_max_body"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_linegate_loc_conf_t, max_body),
      NULL },

    { ngx_string("linegate_redis"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_1MORE,
      ngx_http_linegate_redis_conf,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("linegate_redis_password_file"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_linegate_secret_file,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_linegate_main_conf_t, redis_password),
      NULL },

    { ngx_string("linegate_redis_sentinel_password_file"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_linegate_secret_file,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_linegate_main_conf_t, redis_sentinel_password),
      NULL },

    { ngx_string("linegate_redis_connect_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_linegate_main_conf_t, redis_connect_timeout),
      &ngx_http_linegate_redis_timeout_bounds },

    { ngx_string("linegate_redis_command_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_linegate_main_conf_t, redis_command_timeout),
      &ngx_http_linegate_redis_timeout_bounds },

    { ngx_string("linegate_redis_keepalive"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_linegate_main_conf_t, redis_keepalive),
      &ngx_http_linegate_keepalive_bounds },

    { ngx_string("linegate_redis_wait"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE2,
      ngx_http_linegate_redis_wait_conf,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("linegate_stripe_location"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_linegate_main_conf_t, stripe_location),
      NULL },

    { ngx_string("linegate_stripe_version"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_linegate_main_conf_t, stripe_version),
      NULL },

    { ngx_string("linegate_stripe_key_file"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_linegate_secret_file,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_linegate_main_conf_t, stripe_key),
      NULL },

    { ngx_string("linegate_stripe_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_linegate_main_conf_t, stripe_timeout),
      &ngx_http_linegate_stripe_timeout_bounds },

    { ngx_string("linegate_price_phone"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_linegate_main_conf_t, price_phone),
      NULL },

    { ngx_string("linegate_price_email"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_linegate_main_conf_t, price_email),
      NULL },

    { ngx_string("linegate_price_agent_line"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_linegate_main_conf_t, price_agent_line),
      NULL },

    { ngx_string("linegate_plan_price"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE2,
      ngx_http_linegate_plan_price,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("linegate_webhook_secret"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_linegate_main_conf_t, webhook_secret),
      NULL },

    { ngx_string("linegate_webhook_secret_file"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_linegate_secret_file,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_linegate_main_conf_t, webhook_secret),
      NULL },

    { ngx_string("linegate_webhook_tolerance"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_sec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_linegate_main_conf_t, webhook_tolerance),
      &ngx_http_linegate_tolerance_bounds },

    { ngx_string("linegate_reconcile_interval"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_linegate_main_conf_t, reconcile_interval),
      &ngx_http_linegate_reconcile_interval_bounds },

    { ngx_string("linegate_reconcile_delay"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_linegate_main_conf_t, reconcile_delay),
      &ngx_http_linegate_reconcile_bounds },

    { ngx_string("linegate_reconcile_lost_after"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_linegate_main_conf_t, reconcile_lost),
      &ngx_http_linegate_reconcile_bounds },

    { ngx_string("linegate_reconcile_auto"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE123,
      ngx_http_linegate_reconcile_auto_conf,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("linegate_operator_token"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_linegate_main_conf_t, operator_token),
      NULL },

    { ngx_string("linegate_operator_token_file"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_linegate_secret_file,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_linegate_main_conf_t, operator_token),
      NULL },

    { ngx_string("linegate_clerk_key"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_linegate_clerk_key,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("linegate_clerk_issuer"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_linegate_main_conf_t, clerk_issuer),
      NULL },

    { ngx_string("linegate_clerk_authorized_parties"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_1MORE,
      ngx_http_linegate_clerk_azp,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("linegate_clerk_leeway"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_sec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_linegate_main_conf_t, clerk_leeway),
      &ngx_http_linegate_leeway_bounds },

    { ngx_string("linegate_api_key_cache"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE12,
      ngx_http_linegate_apikey_cache,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("linegate_api_key_cache_size"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_linegate_apikey_cache_size,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_linegate_main_conf_t, apikey_cache_size),
      NULL },

    { ngx_string("linegate_workspace_rate"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE12,
      ngx_http_linegate_rate,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("linegate_provision_limits"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE2,
      ngx_http_linegate_provision_limits,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("linegate_preview_ttl"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_sec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_linegate_main_conf_t, preview_ttl),
      &ngx_http_linegate_preview_ttl_bounds },

    { ngx_string("linegate_inventory_cache"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_linegate_main_conf_t, inventory_cache),
      NULL },

    { ngx_string("linegate_lines_cache"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_linegate_lines_cache_conf,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_linegate_main_conf_t, lines_cache),
      NULL },

    { ngx_string("linegate_line_daily_limits"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE2,
      ngx_http_linegate_line_limits,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("linegate_idempotency_ttl"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_sec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_linegate_main_conf_t, idempotency_ttl),
      &ngx_http_linegate_idempotency_ttl_bounds },

    { ngx_string("linegate_fast_request_id"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_linegate_main_conf_t, fast_request_id),
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_linegate_module_ctx = {
    ngx_http_linegate_add_variables,        /* preconfiguration */
    ngx_http_linegate_init,                 /* postconfiguration */

    ngx_http_linegate_create_main_conf,     /* create main configuration */
    ngx_http_linegate_init_main_conf,       /* init main configuration */

    NULL,                                   /* create server configuration */
    NULL,                                   /* merge server configuration */

    ngx_http_linegate_create_loc_conf,      /* create location configuration */
    ngx_http_linegate_merge_loc_conf        /* merge location configuration */
};


ngx_module_t  ngx_http_linegate_module = {
    NGX_MODULE_V1,
    &ngx_http_linegate_module_ctx,          /* module context */
    ngx_http_linegate_commands,             /* module directives */
    NGX_HTTP_MODULE,                        /* module type */
    NULL,                                   /* init master */
    NULL,                                   /* init module */
    ngx_http_linegate_init_process,         /* init process */
    NULL,                                   /* init thread */
    NULL,                                   /* exit thread */
    ngx_http_linegate_exit_process,         /* exit process */
    NULL,                                   /* exit master */
    NGX_MODULE_V1_PADDING
};


enum {
    NGX_HTTP_LINEGATE_VAR_TENANT = 0,
    NGX_HTTP_LINEGATE_VAR_AUTH,
    NGX_HTTP_LINEGATE_VAR_OUTCOME
};


static ngx_http_variable_t  ngx_http_linegate_vars[] = {

    { ngx_string("linegate_tenant"), NULL, ngx_http_linegate_variable,
      NGX_HTTP_LINEGATE_VAR_TENANT, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("linegate_auth"), NULL, ngx_http_linegate_variable,
      NGX_HTTP_LINEGATE_VAR_AUTH, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("linegate_outcome"), NULL, ngx_http_linegate_variable,
      NGX_HTTP_LINEGATE_VAR_OUTCOME, NGX_HTTP_VAR_NOCACHEABLE, 0 },

      ngx_http_null_variable
};


static ngx_str_t  ngx_http_linegate_auth_names[] = {
    ngx_string("none"),
    ngx_string("api_key"),
    ngx_string("clerk"),
    ngx_string("sb_key"),
    ngx_string("operator"),
    ngx_string("stripe_signature")
};


/* the request */

/*
 * Registered last, so run first of the phase: before "return" and the
 * access phases. A "rewrite ... last" into another location keeps the
 * ctx (an internal redirect clears it): it takes that location's API.
 */
static ngx_int_t
ngx_http_linegate_rewrite_handler(ngx_http_request_t *r)
{
    ngx_http_linegate_ctx_t       *ctx;
    ngx_http_linegate_loc_conf_t  *llcf;

    llcf = ngx_http_get_module_loc_conf(r, ngx_http_linegate_module);

    if (llcf->api == NGX_HTTP_LINEGATE_API_NONE
        || llcf->api == NGX_HTTP_LINEGATE_API_METRICS
        || r != r->main)
    {
        return NGX_DECLINED;
    }

    ctx = ngx_http_get_module_ctx(r, ngx_http_linegate_module);

    if (ctx != NULL) {
        ctx->api = llcf->api;
        ctx->api_name = &llcf->api_name;
        return NGX_DECLINED;
    }

    if (ngx_http_linegate_ctx_create(r, llcf) == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return NGX_DECLINED;
}


static ngx_int_t
ngx_http_linegate_handler(ngx_http_request_t *r)
{
    ngx_int_t                      rc;
    ngx_http_linegate_ctx_t       *ctx;
    ngx_http_linegate_api_t       *api;
    ngx_http_linegate_loc_conf_t  *llcf;

    llcf = ngx_http_get_module_loc_conf(r, ngx_http_linegate_module);

    if (r != r->main) {
        return NGX_DECLINED;
    }

    if (llcf->api == NGX_HTTP_LINEGATE_API_METRICS) {
        return ngx_http_linegate_metrics_api(r);
    }

    /* made in the rewrite phase unless nginx has not run it here */
    ctx = ngx_http_get_module_ctx(r, ngx_http_linegate_module);

    if (ctx == NULL) {
        ctx = ngx_http_linegate_ctx_create(r, llcf);
        if (ctx == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    ctx->api = llcf->api;

    for (api = ngx_http_linegate_apis; api->name.len; api++) {
        if (api->api == llcf->api) {
            break;
        }
    }

    ctx->api_name = &api->name;

    if (!(r->method & api->methods)) {
        /* the body is discarded, then the answer names the problem */
        rc = ngx_http_discard_request_body(r);
        if (rc != NGX_OK) {
            return rc;
        }

        /* finalizing below drops this reference, NGX_DONE the last */
        r->main->count++;

        ngx_str_set(&ctx->outcome, "method_not_allowed");
        ngx_http_linegate_not_allowed(r, api->methods);
        return NGX_DONE;
    }

    if (r->headers_in.content_length_n > (off_t) llcf->max_body) {
        rc = ngx_http_discard_request_body(r);
        if (rc != NGX_OK) {
            return rc;
        }

        r->main->count++;

        ngx_http_linegate_field_error(r, NULL, "Request body too large");
        return NGX_DONE;
    }

    /* the whole body in one memory buffer: JSON and signatures need it */
    r->request_body_in_single_buf = 1;

    rc = ngx_http_read_client_request_body(r,
                                           ngx_http_linegate_body_handler);

    if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
        return rc;
    }

    return NGX_DONE;
}


/*
 * A body without a length (chunked, or HTTP/2 without content-length)
 * is refused once more of it has come than linegate_max_body: the 400
 * "Request body too large" that a Content-Length over the limit gets
 * from the handler (SPEC 1), in the API's JSON (reply.c writes nginx's
 * page of this request with the module's words), and the connection
 * closed after it as nginx closes it after any 400. Before, it was read
 * whole, past client_body_buffer_size into a temporary file, up to
 * client_max_body_size (unbounded with "client_max_body_size 0"),
 * before the credential was checked, then refused.
 */
static ngx_int_t
ngx_http_linegate_body_limit(ngx_http_request_t *r, ngx_chain_t *in)
{
    ngx_chain_t                   *cl;
    ngx_http_linegate_ctx_t       *ctx;
    ngx_http_linegate_loc_conf_t  *llcf;

    llcf = ngx_http_get_module_loc_conf(r, ngx_http_linegate_module);
    ctx = ngx_http_get_module_ctx(r, ngx_http_linegate_module);

    if (r != r->main || ctx == NULL
        || llcf->api == NGX_HTTP_LINEGATE_API_NONE
        || llcf->api == NGX_HTTP_LINEGATE_API_METRICS)
    {
        return ngx_http_linegate_next_request_body_filter(r, in);
    }

    for (cl = in; cl; cl = cl->next) {
        ctx->body_read += ngx_buf_size(cl->buf);
    }

    if (ctx->body_read > (off_t) llcf->max_body) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      NGX_HTTP_LINEGATE_LOG "request body over "
                      "linegate_max_body (%uz bytes): refused",
                      llcf->max_body);
        ctx->body_over = 1;

        /*
         * no error_page of the operator's: the JSON 400 of SPEC 1, as the
         * handler's own answer to a Content-Length over the limit (an
         * error_page to a linegate location would also run the endpoint
         * on the body's first part, read again as if whole)
         */
        r->error_page = 1;

        return NGX_HTTP_BAD_REQUEST;
    }

    return ngx_http_linegate_next_request_body_filter(r, in);
}


static void
ngx_http_linegate_body_handler(ngx_http_request_t *r)
{
    ngx_http_linegate_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_linegate_module);

    if (ngx_http_linegate_take_body(r, ctx) != NGX_OK) {
        return;
    }

    switch (ctx->api) {

    case NGX_HTTP_LINEGATE_API_OPERATOR:
        ngx_http_linegate_operator_handler(r, ctx);
        return;

    case NGX_HTTP_LINEGATE_API_STRIPE_WEBHOOK:
        ngx_http_linegate_webhook_handler(r, ctx);
        return;

    case NGX_HTTP_LINEGATE_API_PROVISION_PREVIEW:
    case NGX_HTTP_LINEGATE_API_PROVISION_CONFIRM:
    case NGX_HTTP_LINEGATE_API_ACCOUNT_LIMITS:
        ngx_http_linegate_provision_handler(r, ctx);
        return;

    default:
        ngx_http_linegate_lines_handler(r, ctx);
        return;
    }
}


/* "linegate_api metrics;": the counters as Prometheus text */
static ngx_int_t
ngx_http_linegate_metrics_api(ngx_http_request_t *r)
{
    ngx_int_t   rc;
    ngx_buf_t  *b;

    static ngx_str_t  type =
        ngx_string("text/plain; version=0.0.4; charset=utf-8");

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    b = ngx_http_linegate_metrics_text(r->pool);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_linegate_send_text(r, NGX_HTTP_OK, &type, b);
}


/*
 * Collect the body into ctx->raw. It is in memory, in one buffer or a
 * short chain; a body spooled to a file is larger than we accept.
 */
static ngx_int_t
ngx_http_linegate_take_body(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx)
{
    size_t                         len;
    u_char                        *p;
    ngx_chain_t                   *cl;
    ngx_http_linegate_loc_conf_t  *llcf;

    llcf = ngx_http_get_module_loc_conf(r, ngx_http_linegate_module);

    if (r->request_body == NULL || r->request_body->bufs == NULL) {
        return NGX_OK;
    }

    if (r->request_body->temp_file) {
        ngx_http_linegate_field_error(r, NULL, "Request body too large");
        return NGX_ERROR;
    }

    len = 0;
    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        if (cl->buf->in_file) {
            ngx_http_linegate_field_error(r, NULL, "Request body too large");
            return NGX_ERROR;
        }

        len += cl->buf->last - cl->buf->pos;
    }

    if (len > llcf->max_body) {
        ngx_http_linegate_field_error(r, NULL, "Request body too large");
        return NGX_ERROR;
    }

    if (len == 0) {
        return NGX_OK;
    }

    p = ngx_pnalloc(r->pool, len + 1);
    if (p == NULL) {
        ngx_http_linegate_internal_error(r);
        return NGX_ERROR;
    }

    ctx->raw.data = p;

    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        /* a chunked body ends with an empty buffer: pos may be NULL */
        if (cl->buf->last != cl->buf->pos) {
            p = ngx_cpymem(p, cl->buf->pos, cl->buf->last - cl->buf->pos);
        }
    }

    *p = '\0';
    ctx->raw.len = len;

    return NGX_OK;
}


/* linegate_api_key_cache time [pushed_time] */
static char *
ngx_http_linegate_apikey_cache(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_linegate_main_conf_t  *lmcf = conf;

    ngx_str_t   *value;
    ngx_msec_t   ttl, pushed;

    if (lmcf->apikey_cache_ttl != NGX_CONF_UNSET_MSEC) {
        return "is duplicate";
    }

    value = cf->args->elts;

    ttl = ngx_parse_time(&value[1], 0);
    if (ttl == (ngx_msec_t) NGX_ERROR) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"linegate_api_key_cache\": invalid time "
                           "\"%V\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    pushed = 0;

    if (cf->args->nelts == 3) {
        pushed = ngx_parse_time(&value[2], 0);
        if (pushed == (ngx_msec_t) NGX_ERROR) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"linegate_api_key_cache\": invalid pushed "
                               "time \"%V\"", &value[2]);
            return NGX_CONF_ERROR;
        }
    }

    lmcf->apikey_cache_ttl = ttl;
    lmcf->apikey_cache_pushed = pushed;

    return NGX_CONF_OK;
}


/* linegate_api_key_cache_size number: allocated whole in every worker */
static char *
ngx_http_linegate_apikey_cache_size(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_linegate_main_conf_t  *lmcf = conf;

    ngx_int_t   n;
    ngx_str_t  *value;

    if (lmcf->apikey_cache_size != NGX_CONF_UNSET) {
        return "is duplicate";
    }

    value = cf->args->elts;

    n = ngx_http_linegate_conf_number(cf, &value[1], 0, 2,
                                      NGX_HTTP_LINEGATE_APIKEY_CACHE_MAX,
                                      "linegate_api_key_cache_size",
                                      "entries, ");
    if (n == NGX_ERROR) {
        return NGX_CONF_ERROR;
    }

    lmcf->apikey_cache_size = n;

    return NGX_CONF_OK;
}


/* the key caches' epoch: one word, kept across reloads */
static ngx_int_t
ngx_http_linegate_init_epoch(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_slab_pool_t                *sp;
    ngx_http_linegate_main_conf_t  *lmcf = shm_zone->data;

    sp = (ngx_slab_pool_t *) shm_zone->shm.addr;

    if (data == NULL && sp->data == NULL) {
        sp->data = ngx_slab_calloc(sp, sizeof(ngx_atomic_t));
        if (sp->data == NULL) {
            return NGX_ERROR;
        }
    }

    lmcf->apikey_epoch = sp->data;

    return NGX_OK;
}


/* variables */

static ngx_int_t
ngx_http_linegate_add_variables(ngx_conf_t *cf)
{
    ngx_http_variable_t  *var, *v;

    for (v = ngx_http_linegate_vars; v->name.len; v++) {
        var = ngx_http_add_variable(cf, &v->name, v->flags);
        if (var == NULL) {
            return NGX_ERROR;
        }

        var->get_handler = v->get_handler;
        var->data = v->data;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_linegate_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_str_t                *s;
    ngx_http_linegate_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r->main, ngx_http_linegate_module);

    if (ctx == NULL) {
        v->not_found = 1;
        return NGX_OK;
    }

    switch (data) {

    case NGX_HTTP_LINEGATE_VAR_TENANT:
        s = &ctx->tenant;
        break;

    case NGX_HTTP_LINEGATE_VAR_AUTH:
        s = &ngx_http_linegate_auth_names[ctx->auth];
        break;

    default: /* NGX_HTTP_LINEGATE_VAR_OUTCOME */
        s = &ctx->outcome;
        break;
    }

    if (s->len == 0) {
        v->not_found = 1;
        return NGX_OK;
    }

    v->data = s->data;
    v->len = s->len;
    v->valid = 1;
    v->no_cacheable = 1;
    v->not_found = 0;

    return NGX_OK;
}


/* configuration */

static void *
ngx_http_linegate_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_linegate_main_conf_t  *lmcf;

    lmcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_linegate_main_conf_t));
    if (lmcf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     lmcf->redis_host = { 0, NULL };
     *     lmcf->stripe_location = { 0, NULL };
     *     lmcf->price_* = { 0, NULL };
     *     lmcf->plan_prices = NULL;
     *     lmcf->clerk_keys = NULL;
     *     lmcf->uses_* = 0;
     */

    lmcf->redis_port = NGX_CONF_UNSET;
    lmcf->redis_db = NGX_CONF_UNSET;
    lmcf->redis_connect_timeout = NGX_CONF_UNSET_MSEC;
    lmcf->redis_command_timeout = NGX_CONF_UNSET_MSEC;
    lmcf->redis_keepalive = NGX_CONF_UNSET_MSEC;
    lmcf->redis_wait_replicas = NGX_CONF_UNSET;
    lmcf->redis_wait_timeout = NGX_CONF_UNSET_MSEC;
    lmcf->stripe_timeout = NGX_CONF_UNSET_MSEC;
    lmcf->webhook_tolerance = NGX_CONF_UNSET;
    lmcf->reconcile_interval = NGX_CONF_UNSET_MSEC;
    lmcf->reconcile_delay = NGX_CONF_UNSET_MSEC;
    lmcf->reconcile_lost = NGX_CONF_UNSET_MSEC;
    lmcf->reconcile_auto = NGX_CONF_UNSET_PTR;
    lmcf->clerk_leeway = NGX_CONF_UNSET;
    lmcf->apikey_cache_ttl = NGX_CONF_UNSET_MSEC;
    lmcf->apikey_cache_pushed = NGX_CONF_UNSET_MSEC;
    lmcf->apikey_cache_size = NGX_CONF_UNSET;
    lmcf->ws_rate = NGX_CONF_UNSET_UINT;
    lmcf->ws_rate_window = NGX_CONF_UNSET;
    lmcf->ws_rate_lease = NGX_CONF_UNSET_MSEC;
    lmcf->prov_daily = NGX_CONF_UNSET_UINT;
    lmcf->prov_monthly = NGX_CONF_UNSET_UINT;
    lmcf->preview_ttl = NGX_CONF_UNSET;
    lmcf->inventory_cache = NGX_CONF_UNSET_MSEC;
    lmcf->lines_cache = NGX_CONF_UNSET_SIZE;
    lmcf->line_daily_conversations = NGX_CONF_UNSET_UINT;
    lmcf->line_daily_messages = NGX_CONF_UNSET_UINT;
    lmcf->idempotency_ttl = NGX_CONF_UNSET;
    lmcf->fast_request_id = NGX_CONF_UNSET;

    return lmcf;
}


static char *
ngx_http_linegate_init_main_conf(ngx_conf_t *cf, void *conf)
{
    ngx_http_linegate_main_conf_t  *lmcf = conf;

    u_char          *p;
    ngx_shm_zone_t  *shm;
    ngx_str_t        request_id = ngx_string("request_id");
    ngx_str_t        epoch = ngx_string("linegate_api_key_epoch");

    ngx_conf_init_value(lmcf->redis_db, 0);
    ngx_conf_init_msec_value(lmcf->redis_connect_timeout, 1000);
    ngx_conf_init_msec_value(lmcf->redis_command_timeout, 1000);
    ngx_conf_init_msec_value(lmcf->redis_keepalive, 2000);
    ngx_conf_init_value(lmcf->redis_wait_replicas, 0);
    ngx_conf_init_msec_value(lmcf->redis_wait_timeout, 0);
    ngx_conf_init_value(lmcf->webhook_tolerance, 300);
    ngx_conf_init_msec_value(lmcf->reconcile_interval, 5000);
    ngx_conf_init_msec_value(lmcf->reconcile_delay, 60000);
    ngx_conf_init_msec_value(lmcf->reconcile_lost, 600000);
    ngx_conf_init_ptr_value(lmcf->reconcile_auto, NULL);
    ngx_conf_init_value(lmcf->clerk_leeway, 5);
    ngx_conf_init_msec_value(lmcf->apikey_cache_ttl, 500);
    ngx_conf_init_msec_value(lmcf->apikey_cache_pushed, 0);
    ngx_conf_init_value(lmcf->apikey_cache_size, 4096);
    ngx_conf_init_uint_value(lmcf->ws_rate, 200);
    ngx_conf_init_value(lmcf->ws_rate_window, 60);
    /*
     * off unless asked for: a lease admits up to its time after Redis
     * counted it, and loses what the worker does not spend in time
     */
    ngx_conf_init_msec_value(lmcf->ws_rate_lease, 0);

    /* linegate_rate checked that T is at least 1 us, and kept within 1% */
    lmcf->ws_rate_interval = ((int64_t) lmcf->ws_rate_window * 1000000
                              + (int64_t) lmcf->ws_rate - 1)
                             / (int64_t) lmcf->ws_rate;

    p = ngx_pnalloc(cf->pool, 2 * NGX_INT64_LEN);
    if (p == NULL) {
        return NGX_CONF_ERROR;
    }

    lmcf->ws_rate_interval_arg.data = p;
    p = ngx_sprintf(p, "%L", lmcf->ws_rate_interval);
    lmcf->ws_rate_interval_arg.len = p - lmcf->ws_rate_interval_arg.data;

    lmcf->ws_rate_tolerance_arg.data = p;
    p = ngx_sprintf(p, "%L", lmcf->ws_rate_interval
                             * (int64_t) (lmcf->ws_rate - 1));
    lmcf->ws_rate_tolerance_arg.len = p - lmcf->ws_rate_tolerance_arg.data;

    lmcf->ws_rate_lease_max = ngx_http_linegate_lease_max(
                                  lmcf->ws_rate_lease,
                                  (uint64_t) lmcf->ws_rate_interval);
    ngx_conf_init_uint_value(lmcf->prov_daily, 3);
    ngx_conf_init_uint_value(lmcf->prov_monthly, 10);
    ngx_conf_init_value(lmcf->preview_ttl, 600);
    ngx_conf_init_msec_value(lmcf->inventory_cache, 0);

    /* a preview's "a number is available" may be this late, no later */
    if (lmcf->inventory_cache > NGX_HTTP_LINEGATE_INVENTORY_CACHE_MAX) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"linegate_inventory_cache\" must be at most "
                           "%Mms, not %Mms", (ngx_msec_t)
                           NGX_HTTP_LINEGATE_INVENTORY_CACHE_MAX,
                           lmcf->inventory_cache);
        return NGX_CONF_ERROR;
    }

    ngx_conf_init_size_value(lmcf->lines_cache, 0);

    if (lmcf->lines_cache && lmcf->redis_cluster) {
        /*
         * client tracking redirects a node's invalidations to a client of
         * that node: the subscriber is on one master only
         */
        ngx_conf_log_error(NGX_LOG_WARN, cf, 0,
                           "\"linegate_lines_cache\" is not used with "
                           "\"linegate_redis ... cluster=on\"");
        lmcf->lines_cache = 0;
    }

    ngx_conf_init_uint_value(lmcf->line_daily_conversations, 20);
    ngx_conf_init_uint_value(lmcf->line_daily_messages, 50);
    ngx_conf_init_value(lmcf->idempotency_ttl, 86400);
    ngx_conf_init_value(lmcf->fast_request_id, 0);

    ngx_conf_init_msec_value(lmcf->stripe_timeout, 30000);

    if (lmcf->stripe_version.len == 0) {
        ngx_str_set(&lmcf->stripe_version, "2025-03-31.basil");
    }

    if (lmcf->apikey_cache_ttl > 1000) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"linegate_api_key_cache\" must be at most 1s: "
                           "a revoked key must be refused within a second");
        return NGX_CONF_ERROR;
    }

    if (lmcf->apikey_cache_pushed
        && (lmcf->apikey_cache_ttl == 0
            || lmcf->apikey_cache_pushed <= lmcf->apikey_cache_ttl
            || lmcf->apikey_cache_pushed > 600000))
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"linegate_api_key_cache\" pushed time %M ms "
                           "must be longer than its time (%M ms, not off) "
                           "and at most 10m: a key deleted from Redis "
                           "without a revocation is refused within it",
                           lmcf->apikey_cache_pushed,
                           lmcf->apikey_cache_ttl);
        return NGX_CONF_ERROR;
    }

    /*
     * A Redis Cluster's map is asked for again every 10 s; with pushed
     * revocations every 500 ms, with CLUSTER NODES: a worker subscribes
     * on every master (redis_pubsub.c), and trusts its subscriptions only
     * while that list is less than a second old, so that a master it
     * does not know yet (a failover, a node added) is found within that
     * second. Only where revocations are subscribed to, with the Lines
     * API (auth.c): else the map was polled 20 times as often for
     * nothing, and a Provisioning-only ACL user's refused CLUSTER NODES
     * logged as if it mattered.
     */
    lmcf->redis_cluster_nodes = lmcf->apikey_cache_pushed
                                && lmcf->uses_lines
                                && lmcf->redis_cluster;
    lmcf->redis_cluster_refresh = lmcf->apikey_cache_pushed
                                  && lmcf->uses_lines
                                  ? NGX_HTTP_LINEGATE_CLUSTER_REFRESH_PUSHED
                                  : NGX_HTTP_LINEGATE_CLUSTER_REFRESH;

    if (lmcf->redis_sentinel_password.data != NULL
        && lmcf->redis_sentinel_master.len == 0)
    {
        /*
         * Only the sentinels are asked with it: without "sentinel=" it
         * would be silently ignored (often the Redis password given to
         * the wrong directive, Redis then refusing every connection).
         * linegate_redis refused an inline "sentinel_password=" already:
         * this is the file directive, before or after linegate_redis.
         */
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"linegate_redis_sentinel_password_file\" "
                           "needs \"linegate_redis ... "
                           "sentinel=<master name>\": it is the "
                           "sentinels' password (the Redis password is "
                           "\"linegate_redis_password_file\")");
        return NGX_CONF_ERROR;
    }

    if (lmcf->redis_user.len && lmcf->redis_password.len == 0) {
        /*
         * AUTH is sent only with a password (redis.c, redis_pubsub.c):
         * a user without one would be silently ignored, every worker
         * running as Redis's "default" user, with its rights
         */
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"linegate_redis ... user=%V\" needs a "
                           "password: \"password=\" or "
                           "\"linegate_redis_password_file\" (without "
                           "one no AUTH is sent, and the workers would "
                           "run as Redis's \"default\" user)",
                           &lmcf->redis_user);
        return NGX_CONF_ERROR;
    }

    if (lmcf->redis_command_timeout == 0 || lmcf->redis_connect_timeout == 0
        || lmcf->redis_keepalive == 0)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "linegate: Redis timeouts must be greater than 0 "
                           "(\"linegate_redis_%s\" is 0)",
                           lmcf->redis_connect_timeout == 0
                           ? "connect_timeout"
                           : lmcf->redis_command_timeout == 0
                           ? "command_timeout" : "keepalive");
        return NGX_CONF_ERROR;
    }

    if (lmcf->redis_wait_replicas > 0
        && lmcf->redis_wait_timeout >= lmcf->redis_command_timeout)
    {
        /* else the command's timer answers first, and WAIT never decides */
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"linegate_redis_wait\" timeout %M ms must be "
                           "shorter than linegate_redis_command_timeout "
                           "(%M ms)", lmcf->redis_wait_timeout,
                           lmcf->redis_command_timeout);
        return NGX_CONF_ERROR;
    }

    /*
     * A configuration without "linegate_api" is left as it is: no shared
     * zone, no indexed variable, no variable taken over.
     */
    if (!(lmcf->uses_lines || lmcf->uses_provision || lmcf->uses_operator
          || lmcf->uses_webhook || lmcf->uses_metrics))
    {
        lmcf->request_id_index = NGX_ERROR;
        return NGX_CONF_OK;
    }

    lmcf->request_id_index = ngx_http_get_variable_index(cf, &request_id);
    if (lmcf->request_id_index == NGX_ERROR) {
        return NGX_CONF_ERROR;
    }

    if (!(lmcf->uses_lines || lmcf->uses_provision || lmcf->uses_operator
          || lmcf->uses_webhook))
    {
        /* only metrics: no API key is cached */
        return NGX_CONF_OK;
    }

    if (lmcf->apikey_cache_ttl) {
        /* the smallest zone nginx's slab allocator takes */
        shm = ngx_shared_memory_add(cf, &epoch, 8 * ngx_pagesize,
                                    &ngx_http_linegate_module);
        if (shm == NULL) {
            return NGX_CONF_ERROR;
        }

        shm->init = ngx_http_linegate_init_epoch;
        shm->data = lmcf;
    }

    return NGX_CONF_OK;
}


static void *
ngx_http_linegate_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_linegate_loc_conf_t  *llcf;

    llcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_linegate_loc_conf_t));
    if (llcf == NULL) {
        return NULL;
    }

    llcf->api = NGX_CONF_UNSET_UINT;
    llcf->max_body = NGX_CONF_UNSET_SIZE;

    return llcf;
}


static char *
ngx_http_linegate_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_linegate_loc_conf_t *prev = parent;
    ngx_http_linegate_loc_conf_t *conf = child;

    ngx_http_core_loc_conf_t  *clcf;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    /*
     * As nginx's content handlers (proxy_pass...): a nested location
     * does not serve its parent's API, which would otherwise answer its
     * error pages in JSON without ever serving the API there. An "if"
     * or "limit_except" block inside the location does serve it.
     */
    if (conf->api == NGX_CONF_UNSET_UINT && !clcf->noname) {
        conf->api = NGX_HTTP_LINEGATE_API_NONE;
        ngx_str_set(&conf->api_name, "");
    }

    ngx_conf_merge_uint_value(conf->api, prev->api,
                              NGX_HTTP_LINEGATE_API_NONE);
    ngx_conf_merge_str_value(conf->api_name, prev->api_name, "");

    /*
     * nginx chooses limit_except's configuration for the methods it
     * names, and takes the content handler from it: without one the
     * request would reach the static module instead of the API
     */
    if (clcf->lmt_excpt && clcf->handler == NULL
        && conf->api != NGX_HTTP_LINEGATE_API_NONE)
    {
        clcf->handler = ngx_http_linegate_handler;
    }

    /* one content handler a location: the last one given would win */
    if (conf->api != NGX_HTTP_LINEGATE_API_NONE && !clcf->noname
        && clcf->handler != ngx_http_linegate_handler)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"linegate_api %V\" and another content "
                           "handler (proxy_pass, fastcgi_pass...) in "
                           "location \"%V\": one would never serve",
                           &conf->api_name, &clcf->name);
        return NGX_CONF_ERROR;
    }

    /* a server whose requests call Stripe: init checks where they go */
    if (!clcf->noname
        && (conf->api == NGX_HTTP_LINEGATE_API_LINE_REQUEST_CREATE
            || conf->api == NGX_HTTP_LINEGATE_API_LINE_REQUEST
            || conf->api == NGX_HTTP_LINEGATE_API_PROVISION_CONFIRM
            || conf->api == NGX_HTTP_LINEGATE_API_OPERATOR)
        && ngx_http_linegate_stripe_server(cf) != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    ngx_conf_merge_size_value(conf->max_body, prev->max_body, 16384);

    if (conf->max_body == 0 || conf->max_body > 1024 * 1024) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"linegate_max_body\" must be between 1 and 1m, "
                           "not %uz", conf->max_body);
        return NGX_CONF_ERROR;
    }

    /*
     * The body is read into one memory buffer: a body larger than
     * client_body_buffer_size would go to a temporary file instead.
     */
    if (conf->api != NGX_HTTP_LINEGATE_API_NONE
        && clcf->client_body_buffer_size < conf->max_body)
    {
        clcf->client_body_buffer_size = conf->max_body;
    }

    /*
     * nginx refuses a body over client_max_body_size before the module
     * reads it: one between the two limits would get nginx's 413 where
     * the operator's linegate_max_body promises it is taken
     */
    if (conf->api != NGX_HTTP_LINEGATE_API_NONE
        && clcf->client_max_body_size != 0
        && clcf->client_max_body_size < (off_t) conf->max_body)
    {
        ngx_conf_log_error(NGX_LOG_WARN, cf, 0,
                           "\"client_max_body_size\" %O is below "
                           "\"linegate_max_body\" %uz in location \"%V\": "
                           "bodies between them are refused by nginx "
                           "with 413", clcf->client_max_body_size,
                           conf->max_body, &clcf->name);
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_linegate_api(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_linegate_loc_conf_t *llcf = conf;

    ngx_str_t                      *value;
    ngx_http_linegate_api_t        *api;
    ngx_http_core_loc_conf_t       *clcf;
    ngx_http_linegate_main_conf_t  *lmcf;

    if (llcf->api != NGX_CONF_UNSET_UINT) {
        return "is duplicate";
    }

    value = cf->args->elts;

    for (api = ngx_http_linegate_apis; api->name.len; api++) {
        if (api->name.len == value[1].len
            && ngx_strcmp(api->name.data, value[1].data) == 0)
        {
            break;
        }
    }

    if (api->name.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "unknown linegate API \"%V\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    llcf->api = api->api;
    llcf->api_name = api->name;

    lmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_linegate_module);

    switch (api->api) {

    case NGX_HTTP_LINEGATE_API_OPERATOR:
        lmcf->uses_operator = 1;
        break;

    case NGX_HTTP_LINEGATE_API_STRIPE_WEBHOOK:
        lmcf->uses_webhook = 1;
        break;

    case NGX_HTTP_LINEGATE_API_PROVISION_PREVIEW:
    case NGX_HTTP_LINEGATE_API_PROVISION_CONFIRM:
    case NGX_HTTP_LINEGATE_API_ACCOUNT_LIMITS:
        lmcf->uses_provision = 1;
        break;

    case NGX_HTTP_LINEGATE_API_METRICS:
        lmcf->uses_metrics = 1;
        break;

    default:
        lmcf->uses_lines = 1;
        break;
    }

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    if (clcf->handler != NULL) {
        /* merge_loc_conf refuses the other order */
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"linegate_api %V\" and another content "
                           "handler (proxy_pass, fastcgi_pass...) in "
                           "location \"%V\": one would never serve",
                           &value[1], &clcf->name);
        return NGX_CONF_ERROR;
    }

    /*
     * the operator API routes on the URI after the location's name
     * (operator.c): a regex, exact or named location has no such prefix,
     * and every call would be a 404
     */
    if (api->api == NGX_HTTP_LINEGATE_API_OPERATOR
        && (clcf->exact_match || clcf->named
#if (NGX_PCRE)
            || clcf->regex != NULL
#endif
           ))
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"linegate_api operator\" must be in a prefix "
                           "location (\"location /_linegate/\"), not in "
                           "location \"%V\": its routes follow the prefix",
                           &clcf->name);
        return NGX_CONF_ERROR;
    }

    clcf->handler = ngx_http_linegate_handler;

    return NGX_CONF_OK;
}


static char *
ngx_http_linegate_redis_conf(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_linegate_main_conf_t *lmcf = conf;

    ngx_str_t                        *value;
    ngx_uint_t                        i, naddrs, sentinel_pw, seen;

    if (lmcf->redis_configured) {
        return "is duplicate";
    }

    value = cf->args->elts;

    /* the addresses come first, the name=value options after them */
    for (naddrs = 0; naddrs + 1 < cf->args->nelts; naddrs++) {
        if (ngx_strlchr(value[naddrs + 1].data,
                        value[naddrs + 1].data + value[naddrs + 1].len, '=')
            != NULL)
        {
            break;
        }
    }

    if (naddrs == 0) {
        return "needs an address";
    }

    /* set already: by linegate_redis_sentinel_password_file */
    sentinel_pw = (lmcf->redis_sentinel_password.data != NULL);

    seen = 0;

    for (i = naddrs + 1; i < cf->args->nelts; i++) {
        if (ngx_http_linegate_redis_option(cf, lmcf, &value[i], &seen)
            != NGX_CONF_OK)
        {
            return NGX_CONF_ERROR;
        }
    }

    if (!sentinel_pw && lmcf->redis_sentinel_password.data != NULL
        && lmcf->redis_sentinel_master.len == 0)
    {
        /* the file directive's twin: init_main_conf */
        return "takes \"sentinel_password=\" only with "
               "\"sentinel=<master name>\": it is the sentinels' "
               "password, and these are no sentinels (the Redis "
               "password is \"password=\")";
    }

    if (lmcf->redis_cluster) {
        return ngx_http_linegate_redis_cluster_conf(cf, lmcf, &value[1],
                                                    naddrs);
    }

    if (lmcf->redis_sentinel_master.len == 0) {
        if (naddrs > 1) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "several Redis addresses need "
                               "\"sentinel=<master name>\" (they are the "
                               "sentinels) or \"cluster=on\" (they are "
                               "seed nodes of a Redis Cluster)");
            return NGX_CONF_ERROR;
        }

        if (ngx_strncmp(value[1].data, "unix:", 5) == 0) {
            if (value[1].len <= 5) {
                return "has an empty unix socket path";
            }

            lmcf->redis_unix.data = value[1].data + 5;
            lmcf->redis_unix.len = value[1].len - 5;

        } else if (ngx_http_linegate_redis_address(cf, &value[1],
                                                   &lmcf->redis_host,
                                                   &lmcf->redis_port)
                   != NGX_OK)
        {
            return NGX_CONF_ERROR;
        }

        lmcf->redis_configured = 1;
        return NGX_CONF_OK;
    }

    lmcf->redis_sentinels = ngx_http_linegate_redis_addresses(cf, &value[1],
                                                      naddrs, "a sentinel");
    if (lmcf->redis_sentinels == NULL) {
        return NGX_CONF_ERROR;
    }

    lmcf->redis_configured = 1;

    return NGX_CONF_OK;
}


/* linegate_lines_cache off | size */
static char *
ngx_http_linegate_lines_cache_conf(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_linegate_main_conf_t  *lmcf = conf;

    ssize_t     size;
    ngx_str_t  *value;

    if (lmcf->lines_cache != NGX_CONF_UNSET_SIZE) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (ngx_strcmp(value[1].data, "off") == 0) {
        lmcf->lines_cache = 0;
        return NGX_CONF_OK;
    }

    size = ngx_parse_size(&value[1]);

    /* at most: each worker's table grows to it */
    if (size == NGX_ERROR
        || size < NGX_HTTP_LINEGATE_LINES_CACHE_MIN
        || size > NGX_HTTP_LINEGATE_LINES_CACHE_MAX)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid \"linegate_lines_cache\" \"%V\": "
                           "\"off\" or a size from %uzk to %uzm",
                           &value[1],
                           (size_t) NGX_HTTP_LINEGATE_LINES_CACHE_MIN / 1024,
                           (size_t) NGX_HTTP_LINEGATE_LINES_CACHE_MAX
                           / (1024 * 1024));
        return NGX_CONF_ERROR;
    }

    lmcf->lines_cache = (size_t) size;

    return NGX_CONF_OK;
}


/* linegate_redis <seed>... cluster=on: a Redis Cluster */
static char *
ngx_http_linegate_redis_cluster_conf(ngx_conf_t *cf,
    ngx_http_linegate_main_conf_t *lmcf, ngx_str_t *value, ngx_uint_t naddrs)
{
    if (lmcf->redis_sentinel_master.len) {
        return "takes \"sentinel=\" or \"cluster=on\", not both";
    }

    if (lmcf->redis_db > 0) {
        /* a cluster has database 0 only */
        return "cannot select a database (\"db=\") with \"cluster=on\": "
               "a Redis Cluster has database 0 only";
    }

    lmcf->redis_seeds = ngx_http_linegate_redis_addresses(cf, value, naddrs,
                                                   "a Redis Cluster node");
    if (lmcf->redis_seeds == NULL) {
        return NGX_CONF_ERROR;
    }

    lmcf->redis_configured = 1;

    return NGX_CONF_OK;
}


/*
 * The n TCP addresses of value[] (sentinels, a cluster's seeds), each
 * resolved at load; NULL when one is a unix socket or invalid (logged,
 * naming what it is).
 */
static ngx_array_t *
ngx_http_linegate_redis_addresses(ngx_conf_t *cf, ngx_str_t *value,
    ngx_uint_t n, const char *what)
{
    ngx_uint_t                       i;
    ngx_array_t                     *addrs;
    ngx_http_linegate_redis_addr_t  *addr;

    addrs = ngx_array_create(cf->pool, n,
                             sizeof(ngx_http_linegate_redis_addr_t));
    if (addrs == NULL) {
        return NULL;
    }

    for (i = 0; i < n; i++) {
        addr = ngx_array_push(addrs);
        if (addr == NULL) {
            return NULL;
        }

        if (ngx_strncmp(value[i].data, "unix:", 5) == 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "%s is reached over TCP, not \"%V\"", what,
                               &value[i]);
            return NULL;
        }

        if (ngx_http_linegate_redis_address(cf, &value[i], &addr->host,
                                            &addr->port)
            != NGX_OK)
        {
            return NULL;
        }
    }

    return addrs;
}


/*
 * hiredis resolves names with a blocking call: an address is resolved
 * here, at load, and the worker connects to the IP.
 */
static ngx_int_t
ngx_http_linegate_redis_address(ngx_conf_t *cf, ngx_str_t *value,
    ngx_str_t *host, ngx_int_t *port)
{
    u_char     *p;
    size_t      n;
    ngx_url_t   u;

    if (!ngx_http_linegate_redis_address_shaped(value)) {
        /*
         * neither printed nor resolved: a secret given without its
         * "password=" ("password hunter2") would be taken for an address,
         * and reach the error log and the DNS
         */
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid Redis address (argument %ui): expected "
                           "ip:port, host:port or unix:/path (a secret "
                           "takes \"password=\")",
                           (ngx_uint_t) (value
                                         - (ngx_str_t *) cf->args->elts));
        return NGX_ERROR;
    }

    ngx_memzero(&u, sizeof(ngx_url_t));
    u.url = *value;
    u.no_resolve = 0;

    if (ngx_parse_url(cf->pool, &u) != NGX_OK || u.no_port || u.naddrs == 0)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid Redis address \"%V\"%s%s",
                           value, u.err ? ": " : "",
                           u.err ? u.err : " (expected ip:port or "
                           "unix:/path)");
        return NGX_ERROR;
    }

    p = ngx_pnalloc(cf->pool, NGX_SOCKADDR_STRLEN + 1);
    if (p == NULL) {
        return NGX_ERROR;
    }

    n = ngx_sock_ntop(u.addrs[0].sockaddr, u.addrs[0].socklen, p,
                      NGX_SOCKADDR_STRLEN, 0);
    p[n] = '\0';

    host->data = p;
    host->len = n;
    *port = u.port;

    return NGX_OK;
}


/*
 * Whether value has an address's shape, host:port (a name or IPv4 of
 * letters, digits, "." and "-", or an [IPv6]) and a port of digits, or
 * an IPv4 alone (its port forgotten): only such a value is printed when
 * refused, or resolved.
 */
static ngx_uint_t
ngx_http_linegate_redis_address_shaped(ngx_str_t *value)
{
    u_char  *p, *colon, *last;

    last = value->data + value->len;

    /* "127.0.0.1": digits and dots, a dot between two digits */
    for (p = value->data; p < last; p++) {
        if (!((*p >= '0' && *p <= '9') || *p == '.')) {
            break;
        }
    }

    if (p == last && value->len >= 7
        && ngx_strlchr(value->data, last, '.') != NULL)
    {
        return 1;
    }

    for (colon = last; colon > value->data; colon--) {
        if (colon[-1] == ':') {
            break;
        }
    }

    /* a port of 1 to 5 digits after the last ":" */
    if (colon == value->data || last - colon == 0 || last - colon > 5) {
        return 0;
    }

    for (p = colon; p < last; p++) {
        if (*p < '0' || *p > '9') {
            return 0;
        }
    }

    /* the host before it: not empty */
    last = colon - 1;

    if (last == value->data) {
        return 0;
    }

    if (value->data[0] == '[') {
        if (last[-1] != ']' || last - value->data < 3) {
            return 0;
        }

        for (p = value->data + 1; p < last - 1; p++) {
            if (!((*p >= '0' && *p <= '9') || ((*p | 0x20) >= 'a'
                                                && (*p | 0x20) <= 'f')
                  || *p == ':' || *p == '.'))
            {
                return 0;
            }
        }

        return 1;
    }

    for (p = value->data; p < last; p++) {
        if (!((*p >= '0' && *p <= '9') || ((*p | 0x20) >= 'a'
                                            && (*p | 0x20) <= 'z')
              || *p == '.' || *p == '-'))
        {
            return 0;
        }
    }

    return 1;
}


/*
 * "password=" or "sentinel_password=" of linegate_redis, the value after
 * skip bytes: refused when its _file directive set it already
 */
static char *
ngx_http_linegate_redis_secret(ngx_conf_t *cf, ngx_str_t *v, size_t skip,
    ngx_str_t *secret, const char *whose, const char *option,
    const char *file_directive)
{
    if (secret->data != NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "the %s password is set twice (\"%s\" and "
                           "\"%s\")", whose, option, file_directive);
        return NGX_CONF_ERROR;
    }

    if (v->len == skip) {
        /* else no AUTH at all, and "user=" silently unused */
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "the %s password \"%s\" is empty", whose,
                           option);
        return NGX_CONF_ERROR;
    }

    secret->data = v->data + skip;
    secret->len = v->len - skip;

    return NGX_CONF_OK;
}


/*
 * one name=value option of linegate_redis, each once: a second one would
 * silently win (a second "password=" was reported as one given in a file
 * too)
 */
static char *
ngx_http_linegate_redis_option(ngx_conf_t *cf,
    ngx_http_linegate_main_conf_t *lmcf, ngx_str_t *v, ngx_uint_t *seen)
{
    ngx_int_t                 n;
    static const char *const  names[] = { "password=", "user=", "sentinel=",
                                          "sentinel_password=", "cluster=",
                                          "db=" };

    n = ngx_http_linegate_conf_param(cf, v, names,
                                     sizeof(names) / sizeof(names[0]),
                                     seen);

    switch (n) {

    case 0: /* password= */
        return ngx_http_linegate_redis_secret(cf, v, 9,
                                              &lmcf->redis_password,
                                              "Redis", "password=",
                                              "linegate_redis_password_file");

    case 1: /* user= */
        if (v->len == 5) {
            break;
        }

        lmcf->redis_user.data = v->data + 5;
        lmcf->redis_user.len = v->len - 5;
        return NGX_CONF_OK;

    case 2: /* sentinel= */
        if (v->len == 9) {
            break;
        }

        lmcf->redis_sentinel_master.data = v->data + 9;
        lmcf->redis_sentinel_master.len = v->len - 9;
        return NGX_CONF_OK;

    case 3: /* sentinel_password= */
        return ngx_http_linegate_redis_secret(cf, v, 18,
                   &lmcf->redis_sentinel_password, "Sentinel",
                   "sentinel_password=",
                   "linegate_redis_sentinel_password_file");

    case 4: /* cluster= */
        if (ngx_strcmp(v->data + 8, "on") == 0) {
            lmcf->redis_cluster = 1;
            return NGX_CONF_OK;
        }

        if (ngx_strcmp(v->data + 8, "off") == 0) {
            return NGX_CONF_OK;
        }

        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid value \"%V\" (cluster=on or off)", v);
        return NGX_CONF_ERROR;

    case 5: /* db= */
        n = ngx_http_linegate_conf_number(cf, v, 3, 0, 255, "Redis db", "");
        if (n == NGX_ERROR) {
            return NGX_CONF_ERROR;
        }

        lmcf->redis_db = n;
        return NGX_CONF_OK;

    default: /* NGX_ERROR, NGX_DECLINED: logged */
        return NGX_CONF_ERROR;
    }

    /* "user=", "sentinel=" without a name */
    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "invalid parameter \"%V\"", v);
    return NGX_CONF_ERROR;
}


/* linegate_redis_wait replicas timeout */
static char *
ngx_http_linegate_redis_wait_conf(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_linegate_main_conf_t *lmcf = conf;

    ngx_int_t    n;
    ngx_str_t   *value;
    ngx_msec_t   ms;

    if (lmcf->redis_wait_replicas != NGX_CONF_UNSET) {
        return "is duplicate";
    }

    value = cf->args->elts;

    n = ngx_http_linegate_conf_number(cf, &value[1], 0, 1, 64,
                                      "number of replicas", "");
    if (n == NGX_ERROR) {
        return NGX_CONF_ERROR;
    }

    ms = ngx_parse_time(&value[2], 0);
    if (ms == (ngx_msec_t) NGX_ERROR || ms == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid timeout \"%V\"", &value[2]);
        return NGX_CONF_ERROR;
    }

    lmcf->redis_wait_replicas = n;
    lmcf->redis_wait_timeout = ms;

    return NGX_CONF_OK;
}


/*
 * linegate_stripe_key_file: the Authorization header of every Stripe call
 * made at load, so that the secret key can stay out of the configuration
 * (and of nginx -T), as the other secrets can; a proxy_set_header
 * Authorization in the Stripe location would still win over it. A key is
 * one word of Stripe's (sk_live_..., rk_live_...): a space or a character
 * no header can carry would have every call refused by Stripe. The key is
 * never printed.
 */
static ngx_int_t
ngx_http_linegate_stripe_key_check(ngx_conf_t *cf,
    ngx_http_linegate_main_conf_t *lmcf)
{
    u_char  *p;

    if (lmcf->stripe_key.len == 0) {
        return NGX_OK;
    }

    if (!ngx_http_linegate_chars_are(lmcf->stripe_key.data,
                                     lmcf->stripe_key.len,
                                     NGX_HTTP_LINEGATE_CHARS_GRAPH))
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"linegate_stripe_key_file\": the key holds a "
                           "space or a character that is not printable "
                           "ASCII (a Stripe key is sk_live_... or "
                           "rk_live_...)");
        return NGX_ERROR;
    }

    lmcf->stripe_auth.len = sizeof("Bearer ") - 1 + lmcf->stripe_key.len;

    p = ngx_pnalloc(cf->pool, lmcf->stripe_auth.len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    lmcf->stripe_auth.data = p;
    ngx_memcpy(ngx_cpymem(p, "Bearer ", sizeof("Bearer ") - 1),
               lmcf->stripe_key.data, lmcf->stripe_key.len);

    return NGX_OK;
}


/*
 * At least 1 s; and longer than a confirm can last, or a warning: a
 * reconciliation run takes a claim that old for a dead worker's, and
 * settles it as lost (a live confirm's purchase, once Stripe made it, is
 * then refused its record and refunded). What a confirm can last follows
 * from the configuration: provision_confirm.c counts its calls and
 * waits. A warning, not a refusal: a configuration that loaded before
 * still loads after an upgrade (a fleet is not stopped by a reload
 * refused), and a test stack makes workers' deaths the sweep's within
 * seconds on purpose.
 */
static ngx_int_t
ngx_http_linegate_reconcile_lost_check(ngx_conf_t *cf,
    ngx_http_linegate_main_conf_t *lmcf)
{
    ngx_uint_t  calls;
    ngx_msec_t  longest, waits;

    if (lmcf->reconcile_lost < 1000) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"linegate_reconcile_lost_after\" must be at "
                           "least 1s, and should be longer than a confirm "
                           "can last (its Stripe calls and Redis steps)");
        return NGX_ERROR;
    }

    longest = ngx_http_linegate_provision_confirm_longest(
                  lmcf->stripe_timeout, lmcf->redis_command_timeout,
                  &calls, &waits);

    if (lmcf->reconcile_lost > longest) {
        return NGX_OK;
    }

    ngx_conf_log_error(NGX_LOG_WARN, cf, 0,
                       "\"linegate_reconcile_lost_after\" %M ms is not "
                       "longer than a provisioning confirm can last, "
                       "%M ms (%ui Stripe calls of linegate_stripe_timeout "
                       "%M ms, %M ms of waits for 409s, 2 Redis steps of "
                       "linegate_redis_command_timeout %M ms): a "
                       "reconciliation run may take a slow confirm for "
                       "a dead worker's and refund its purchase; raise it "
                       "above %M ms or lower linegate_stripe_timeout",
                       lmcf->reconcile_lost, longest, calls,
                       lmcf->stripe_timeout, waits,
                       lmcf->redis_command_timeout, longest);

    return NGX_OK;
}


static char *
ngx_http_linegate_plan_price(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_linegate_main_conf_t *lmcf = conf;

    ngx_str_t                       *value;
    ngx_uint_t                       i;
    ngx_http_linegate_plan_price_t  *pp;

    value = cf->args->elts;

    if (ngx_strcmp(value[2].data, "mini") != 0
        && ngx_strcmp(value[2].data, "starter") != 0
        && ngx_strcmp(value[2].data, "growth") != 0)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "unknown plan \"%V\" (mini, starter or growth)",
                           &value[2]);
        return NGX_CONF_ERROR;
    }

    if (lmcf->plan_prices == NULL) {
        lmcf->plan_prices = ngx_array_create(cf->pool, 4,
                                  sizeof(ngx_http_linegate_plan_price_t));
        if (lmcf->plan_prices == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    /* the webhook takes the first: a second mapping would never apply */
    pp = lmcf->plan_prices->elts;

    for (i = 0; i < lmcf->plan_prices->nelts; i++) {
        if (pp[i].price.len == value[1].len
            && ngx_strcmp(pp[i].price.data, value[1].data) == 0)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "price \"%V\" is mapped to \"%V\" already",
                               &value[1], &pp[i].plan);
            return NGX_CONF_ERROR;
        }
    }

    pp = ngx_array_push(lmcf->plan_prices);
    if (pp == NULL) {
        return NGX_CONF_ERROR;
    }

    pp->price = value[1];
    pp->plan = value[2];

    return NGX_CONF_OK;
}


/* "200r/m" or "10r/s": requests per window; [lease=time] */
static char *
ngx_http_linegate_rate(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_linegate_main_conf_t *lmcf = conf;

    size_t      len;
    int64_t     period, interval;
    ngx_int_t   n;
    ngx_str_t  *value;

    if (lmcf->ws_rate != NGX_CONF_UNSET_UINT) {
        return "is duplicate";
    }

    value = cf->args->elts;
    len = value[1].len;

    if (len > 3 && ngx_strncmp(value[1].data + len - 3, "r/s", 3) == 0) {
        lmcf->ws_rate_window = 1;

    } else if (len > 3
               && ngx_strncmp(value[1].data + len - 3, "r/m", 3) == 0)
    {
        lmcf->ws_rate_window = 60;

    } else {
        len = 0;
    }

    n = len ? ngx_atoi(value[1].data, len - 3) : NGX_ERROR;

    if (n == NGX_ERROR || n == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid rate \"%V\" (expected e.g. 200r/m)",
                           &value[1]);
        return NGX_CONF_ERROR;
    }

    /* GCRA's emission interval, window / n, is whole microseconds */
    if ((int64_t) n > (int64_t) lmcf->ws_rate_window * 1000000) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "rate \"%V\" too high (at most 1000000r/s)",
                           &value[1]);
        return NGX_CONF_ERROR;
    }

    /*
     * T rounded up, as linegate_limit_zone's: rounded down, 750000r/s
     * was kept as 1000000r/s, a third more than the rate. A rate that
     * rounding up changes by more than 1% is refused, not cut.
     */
    period = (int64_t) lmcf->ws_rate_window * 1000000;
    interval = (period + n - 1) / n;

    if ((interval * n - period) * 100 > period) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "rate \"%V\" cannot be kept: a request's "
                           "interval is whole microseconds, and %L us is "
                           "%L r/s; use a rate within 1%% of one such",
                           &value[1], interval,
                           (int64_t) 1000000 / interval);
        return NGX_CONF_ERROR;
    }

    lmcf->ws_rate = n;

    if (cf->args->nelts == 2) {
        return NGX_CONF_OK;
    }

    if (ngx_strncmp(value[2].data, "lease=", 6) != 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid parameter \"%V\"", &value[2]);
        return NGX_CONF_ERROR;
    }

    return ngx_http_linegate_lease_parse(cf, &value[2], &lmcf->ws_rate_lease);
}


static char *
ngx_http_linegate_clerk_key(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_linegate_main_conf_t *lmcf = conf;

    char                 err[512];
    ngx_str_t           *value;
    ngx_pool_cleanup_t  *cln;

    if (lmcf->clerk_keys != NULL) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (ngx_conf_full_name(cf->cycle, &value[1], 1) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    /* read at load: nginx -s reload rotates keys, nginx -t checks them */
    err[0] = '\0';
    lmcf->clerk_keys = ngx_http_linegate_jwt_keys_load(
                           (const char *) value[1].data, err, sizeof(err));

    if (lmcf->clerk_keys == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid Clerk key file: %s", err);
        return NGX_CONF_ERROR;
    }

    cln = ngx_pool_cleanup_add(cf->pool, 0);
    if (cln == NULL) {
        ngx_http_linegate_jwt_keys_free(lmcf->clerk_keys);
        return NGX_CONF_ERROR;
    }

    cln->handler = ngx_http_linegate_free_keys;
    cln->data = lmcf->clerk_keys;

    lmcf->clerk_key_file = value[1];

    return NGX_CONF_OK;
}


static void
ngx_http_linegate_free_keys(void *data)
{
    ngx_http_linegate_jwt_keys_free(data);
}


static char *
ngx_http_linegate_clerk_azp(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_linegate_main_conf_t *lmcf = conf;

    char       **azp;
    ngx_str_t   *value;
    ngx_uint_t   i;

    if (lmcf->clerk_azp != NULL) {
        return "is duplicate";
    }

    value = cf->args->elts;

    lmcf->clerk_azp = ngx_array_create(cf->pool, cf->args->nelts,
                                       sizeof(char *));
    if (lmcf->clerk_azp == NULL) {
        return NGX_CONF_ERROR;
    }

    for (i = 1; i < cf->args->nelts; i++) {

        if (!ngx_http_linegate_clerk_origin(&value[i])) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"%V\" is not an origin: scheme://host"
                               "[:port], without a path or a trailing "
                               "\"/\", as browsers send Origin and Clerk "
                               "writes azp", &value[i]);
            return NGX_CONF_ERROR;
        }

        azp = ngx_array_push(lmcf->clerk_azp);
        if (azp == NULL) {
            return NGX_CONF_ERROR;
        }

        /* configuration strings are NUL-terminated */
        *azp = (char *) value[i].data;
    }

    return NGX_CONF_OK;
}


/*
 * An authorized party is compared whole with a token's azp and a
 * cookie-authenticated write's Origin: "https://app.example.com/" (a
 * trailing "/") or a wildcard would match neither, and every Clerk
 * session would be refused with nothing in the configuration saying why.
 * Browsers serialise an origin with a lowercase scheme and host and
 * without the scheme's default port, and Clerk copies it into azp,
 * compared byte for byte: the origin is brought to that form here
 * ("https://App.example.com:443" becomes "https://app.example.com"),
 * as the same origin written otherwise would match no token either.
 */
static ngx_uint_t
ngx_http_linegate_clerk_origin(ngx_str_t *v)
{
    u_char     *p, *host, *last;
    ngx_int_t   port, dflt;

    if (v->len > sizeof("https://") - 1
        && ngx_strncasecmp(v->data, (u_char *) "https://",
                           sizeof("https://") - 1) == 0)
    {
        host = v->data + sizeof("https://") - 1;
        dflt = 443;

    } else if (v->len > sizeof("http://") - 1
               && ngx_strncasecmp(v->data, (u_char *) "http://",
                                  sizeof("http://") - 1) == 0)
    {
        host = v->data + sizeof("http://") - 1;
        dflt = 80;

    } else {
        return 0;
    }

    last = v->data + v->len;

    if (*host == '[') {

        for (p = host + 1; p < last && *p != ']'; p++) {
            if (!ngx_http_linegate_char_is(ngx_tolower(*p),
                                           NGX_HTTP_LINEGATE_CHARS_HEX)
                && *p != ':' && *p != '.')
            {
                return 0;
            }
        }

        if (p == last || p == host + 1) {
            return 0;
        }

        p++;

    } else {

        for (p = host; p < last && *p != ':'; p++) {
            if (!ngx_http_linegate_char_is(*p,
                                           NGX_HTTP_LINEGATE_CHARS_ALNUM)
                && *p != '.' && *p != '-')
            {
                return 0;
            }
        }

        if (p == host) {
            return 0;
        }
    }

    port = 0;

    if (p < last) {

        /* a port as browsers write it: decimal, no leading 0, 1-65535 */

        if (*p != ':' || p + 1 == last || p[1] == '0') {
            return 0;
        }

        port = ngx_atoi(p + 1, last - p - 1);

        if (port == NGX_ERROR || port > 65535) {
            return 0;
        }
    }

    /* the whole origin is case-insensitive: scheme, host, digits */
    ngx_strlow(v->data, v->data, v->len);

    if (port == dflt) {
        /* configuration strings are NUL-terminated, and stay so */
        *p = '\0';
        v->len = p - v->data;
    }

    return 1;
}


static char *
ngx_http_linegate_two_numbers(ngx_conf_t *cf, ngx_uint_t *a, ngx_uint_t *b)
{
    ngx_int_t   n, m;
    ngx_str_t  *value;

    if (*a != NGX_CONF_UNSET_UINT) {
        return "is duplicate";
    }

    value = cf->args->elts;

    n = ngx_atoi(value[1].data, value[1].len);
    m = ngx_atoi(value[2].data, value[2].len);

    if (n == NGX_ERROR || m == NGX_ERROR || n > 1000000 || m > 1000000) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid limits \"%V %V\"", &value[1], &value[2]);
        return NGX_CONF_ERROR;
    }

    *a = n;
    *b = m;

    return NGX_CONF_OK;
}


static char *
ngx_http_linegate_provision_limits(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_linegate_main_conf_t *lmcf = conf;

    return ngx_http_linegate_two_numbers(cf, &lmcf->prov_daily,
                                         &lmcf->prov_monthly);
}


static char *
ngx_http_linegate_line_limits(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_linegate_main_conf_t *lmcf = conf;

    return ngx_http_linegate_two_numbers(cf,
                                         &lmcf->line_daily_conversations,
                                         &lmcf->line_daily_messages);
}


/*
 * "..._file <path>": a secret read from a file at configuration time, so
 * that it stays out of the configuration (and of nginx -T). One trailing
 * newline (LF or CRLF) is dropped; an unreadable, empty or oversized file,
 * or a secret with a control character, fails nginx -t naming the path.
 * The secret takes the same place as the inline directive's value: only
 * one of the two may be given.
 */
static char *
ngx_http_linegate_secret_file(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    char  *p = conf;

    u_char           *buf;
    size_t            len;
    ssize_t           n;
    ngx_fd_t          fd;
    ngx_str_t        *field, *value, path;
    ngx_uint_t        mode;
    ngx_file_info_t   fi;

    field = (ngx_str_t *) (p + cmd->offset);

    if (field->data != NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\": the secret is already set", &cmd->name);
        return NGX_CONF_ERROR;
    }

    value = cf->args->elts;
    path = value[1];

    if (ngx_conf_full_name(cf->cycle, &path, 1) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    /*
     * O_NONBLOCK: a FIFO (or a device) given as the path would block the
     * master until some writer came, hanging nginx -t and a reload; the
     * file type is checked once it is open
     */
    fd = ngx_open_file(path.data, NGX_FILE_RDONLY|NGX_FILE_NONBLOCK,
                       NGX_FILE_OPEN, 0);
    if (fd == NGX_INVALID_FILE) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           "\"%V\": cannot open \"%V\"", &cmd->name, &path);
        return NGX_CONF_ERROR;
    }

    buf = NULL;
    len = 0;

    if (ngx_fd_info(fd, &fi) == NGX_FILE_ERROR) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           "\"%V\": cannot stat \"%V\"", &cmd->name, &path);
        goto failed;
    }

    if (!ngx_is_file(&fi) || ngx_file_size(&fi) > 4096) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\": \"%V\" is not a file of at most 4096 "
                           "bytes", &cmd->name, &path);
        goto failed;
    }

    mode = ngx_file_access(&fi);

    if (mode & S_IROTH) {
        /* a warning: the file may be meant for a test, or a container */
        ngx_conf_log_error(NGX_LOG_WARN, cf, 0,
                           "\"%V\": \"%V\" is readable by every user "
                           "(mode 0%ui%ui%ui): a secret's file is best "
                           "0600 or 0640", &cmd->name, &path,
                           (ngx_uint_t) (mode >> 6) & 7,
                           (ngx_uint_t) (mode >> 3) & 7,
                           (ngx_uint_t) mode & 7);
    }

    len = (size_t) ngx_file_size(&fi);

    buf = ngx_pnalloc(cf->pool, len + 1);
    if (buf == NULL) {
        goto failed;
    }

    n = ngx_read_fd(fd, buf, len);
    if (n == -1 || (size_t) n != len) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, n == -1 ? ngx_errno : 0,
                           "\"%V\": cannot read \"%V\"", &cmd->name, &path);
        goto failed;
    }

    ngx_close_file(fd);
    fd = NGX_INVALID_FILE;

    if (len && buf[len - 1] == LF) {
        len--;

        if (len && buf[len - 1] == CR) {
            len--;
        }
    }

    if (len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\": \"%V\" is empty", &cmd->name, &path);
        goto failed;
    }

    if (!ngx_http_linegate_chars_are(buf, len, NGX_HTTP_LINEGATE_CHARS_TEXT))
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\": \"%V\" has a control character "
                           "(a secret is one line)", &cmd->name, &path);
        goto failed;
    }

    buf[len] = '\0';
    field->data = buf;
    field->len = len;

    return NGX_CONF_OK;

failed:

    if (buf != NULL) {
        ngx_explicit_memzero(buf, len);
    }

    if (fd != NGX_INVALID_FILE) {
        ngx_close_file(fd);
    }

    return NGX_CONF_ERROR;
}


/*
 * ngx_conf_check_num_bounds() for ngx_conf_set_sec_slot()'s time_t:
 * nginx's reads an ngx_int_t, which a time_t need not be (a 32-bit
 * platform with a 64-bit time_t would read half of it)
 */
static char *
ngx_http_linegate_check_sec_bounds(ngx_conf_t *cf, void *post, void *data)
{
    ngx_conf_num_bounds_t  *bounds = post;
    time_t                 *sp = data;

    ngx_str_t  *value;

    if (*sp >= (time_t) bounds->low && *sp <= (time_t) bounds->high) {
        return NGX_CONF_OK;
    }

    /* called by the directive's handler: its name and value are there */
    value = cf->args->elts;

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "\"%V\" value must be between %i and %i seconds, "
                       "not \"%V\"", &value[0], bounds->low, bounds->high,
                       &value[1]);

    return NGX_CONF_ERROR;
}


static char *
ngx_http_linegate_require(ngx_conf_t *cf, ngx_str_t *value,
    const char *directive, const char *why)
{
    if (value->len) {
        return NGX_CONF_OK;
    }

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "\"%s\" is required when %s", directive, why);

    return NGX_CONF_ERROR;
}


/*
 * The server of the location being merged (cf->ctx's, as nginx merges
 * each server's locations), once in lmcf->stripe_servers.
 */
static ngx_int_t
ngx_http_linegate_stripe_server(ngx_conf_t *cf)
{
    ngx_uint_t                      i;
    ngx_http_core_srv_conf_t       *cscf, **cscfp;
    ngx_http_linegate_main_conf_t  *lmcf;

    lmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_linegate_module);
    cscf = ngx_http_conf_get_module_srv_conf(cf, ngx_http_core_module);

    if (lmcf->stripe_servers == NULL) {
        lmcf->stripe_servers = ngx_array_create(cf->pool, 2,
                                        sizeof(ngx_http_core_srv_conf_t *));
        if (lmcf->stripe_servers == NULL) {
            return NGX_ERROR;
        }
    }

    cscfp = lmcf->stripe_servers->elts;

    for (i = 0; i < lmcf->stripe_servers->nelts; i++) {
        if (cscfp[i] == cscf) {
            return NGX_OK;
        }
    }

    cscfp = ngx_array_push(lmcf->stripe_servers);
    if (cscfp == NULL) {
        return NGX_ERROR;
    }

    *cscfp = cscf;

    return NGX_OK;
}


/*
 * Runs once the whole http{} block is known: every location that serves
 * an API has said so, and what it needs must be configured.
 */
static ngx_int_t
ngx_http_linegate_init(ngx_conf_t *cf)
{
    ngx_str_t                       empty = ngx_null_string;
    ngx_http_handler_pt            *h;
    ngx_http_core_main_conf_t      *cmcf;
    ngx_http_linegate_main_conf_t  *lmcf;

    lmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_linegate_module);

    /*
     * before the returns below: with no API, or only metrics, worker 0
     * still armed its timer (reconcile_auto.c) and called a location
     * that did not exist every interval, with a token nothing checked
     */
    if (lmcf->reconcile_auto != NULL
        && (!lmcf->uses_operator || lmcf->stripe_location.len == 0))
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"linegate_reconcile_auto\" calls the operator "
                           "API, which reconciles through Stripe: it needs "
                           "a \"linegate_api operator;\" location and "
                           "\"linegate_stripe_location\"");
        return NGX_ERROR;
    }

    if (!(lmcf->uses_lines || lmcf->uses_provision || lmcf->uses_operator
          || lmcf->uses_webhook || lmcf->uses_metrics))
    {
        return NGX_OK;
    }

    if (ngx_http_linegate_metrics_zone(cf, &ngx_http_linegate_module)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    /* any linegate_api, the metrics API alone too (docs/directives.md) */
    if (lmcf->fast_request_id
        && ngx_http_linegate_request_id_install(cf) != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (!(lmcf->uses_lines || lmcf->uses_provision || lmcf->uses_operator
          || lmcf->uses_webhook))
    {
        /* only metrics: nothing else to check or start */
        return NGX_OK;
    }

    /* nginx's error pages in the APIs' JSON (reply.c), HTML elsewhere */
    if (ngx_http_linegate_nginx_page_init(cf) != NGX_OK) {
        return NGX_ERROR;
    }

    /* a body without a length bounded by linegate_max_body as it comes */
    ngx_http_linegate_next_request_body_filter =
        ngx_http_top_request_body_filter;
    ngx_http_top_request_body_filter = ngx_http_linegate_body_limit;

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_REWRITE_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_linegate_rewrite_handler;

    if (!lmcf->redis_configured) {
        return ngx_http_linegate_require(cf, &empty, "linegate_redis",
                                         "a location has \"linegate_api\"")
               == NGX_CONF_OK ? NGX_OK : NGX_ERROR;
    }

    if (lmcf->uses_lines
        && (ngx_http_linegate_require(cf, &lmcf->stripe_location,
                "linegate_stripe_location", "the Lines API is served")
            != NGX_CONF_OK
            || ngx_http_linegate_require(cf, &lmcf->price_phone,
                   "linegate_price_phone", "the Lines API is served")
               != NGX_CONF_OK
            || ngx_http_linegate_require(cf, &lmcf->price_email,
                   "linegate_price_email", "the Lines API is served")
               != NGX_CONF_OK))
    {
        return NGX_ERROR;
    }

    if (lmcf->uses_provision
        && (ngx_http_linegate_require(cf, &lmcf->stripe_location,
                "linegate_stripe_location", "the Provisioning API is served")
            != NGX_CONF_OK
            || ngx_http_linegate_require(cf, &lmcf->price_agent_line,
                   "linegate_price_agent_line",
                   "the Provisioning API is served")
               != NGX_CONF_OK))
    {
        return NGX_ERROR;
    }

    if (lmcf->uses_operator
        && ngx_http_linegate_require(cf, &lmcf->operator_token,
               "linegate_operator_token", "the operator API is served")
           != NGX_CONF_OK)
    {
        return NGX_ERROR;
    }

    if (ngx_http_linegate_reconcile_lost_check(cf, lmcf) != NGX_OK) {
        return NGX_ERROR;
    }

    if (lmcf->operator_token.len && lmcf->operator_token.len < 16) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"linegate_operator_token\" must be at least "
                           "16 characters");
        return NGX_ERROR;
    }

    /*
     * what an Authorization header can carry after "Bearer ": nginx
     * drops the spaces and tabs at the end of a header's value, auth.c
     * those after "Bearer ", and a header holds no control character (an
     * inline token can: "\t", "\n"); a token that no header can present
     * would leave every operator call a 401
     */
    if (lmcf->operator_token.len
        && (!ngx_http_linegate_chars_are(lmcf->operator_token.data,
                                         lmcf->operator_token.len,
                                         NGX_HTTP_LINEGATE_CHARS_TEXT)
            || lmcf->operator_token.data[0] == ' '
            || lmcf->operator_token.data[lmcf->operator_token.len - 1]
               == ' '))
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"linegate_operator_token\" must not begin or "
                           "end with a space nor hold a control character: "
                           "no Authorization header could present it");
        return NGX_ERROR;
    }

    if (lmcf->uses_webhook
        && ngx_http_linegate_require(cf, &lmcf->webhook_secret,
               "linegate_webhook_secret", "Stripe webhooks are served")
           != NGX_CONF_OK)
    {
        return NGX_ERROR;
    }

    if (lmcf->clerk_keys != NULL
        && ngx_http_linegate_require(cf, &lmcf->clerk_issuer,
               "linegate_clerk_issuer", "\"linegate_clerk_key\" is set")
           != NGX_CONF_OK)
    {
        return NGX_ERROR;
    }

    if (lmcf->stripe_location.len && lmcf->stripe_location.data[0] != '/') {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"linegate_stripe_location\" must be a URI "
                           "prefix such as /_stripe/, not \"%V\"",
                           &lmcf->stripe_location);
        return NGX_ERROR;
    }

    if (ngx_http_linegate_stripe_key_check(cf, lmcf) != NGX_OK) {
        return NGX_ERROR;
    }

    /* where the Stripe calls of each server go (stripe_conf.c) */
    if (ngx_http_linegate_stripe_conf_check(cf, &lmcf->stripe_location,
                                            lmcf->stripe_servers)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (ngx_http_linegate_scripts_init(cf->log) != NGX_OK) {
        return NGX_ERROR;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_linegate_init_process(ngx_cycle_t *cycle)
{
    ngx_http_linegate_main_conf_t              *lmcf;
    ngx_http_linegate_redis_pubsub_handler_pt   revoked, invalidate;

    /*
     * in any process: its slot in nginx's process table may be a dead
     * worker's, whose share of the gauges it takes off
     */
    ngx_http_linegate_metrics_init_process(cycle);

    /*
     * nginx's cache manager and loader run this too, and never the exit
     * hook: they serve no request, so they get no Redis connection
     */
    if (ngx_process != NGX_PROCESS_WORKER
        && ngx_process != NGX_PROCESS_SINGLE)
    {
        return NGX_OK;
    }

    if (ngx_http_linegate_scripts_init(cycle->log) != NGX_OK) {
        return NGX_ERROR;
    }

    ngx_http_linegate_random_reset();
    ngx_http_linegate_request_id_init_process(cycle);

    lmcf = ngx_http_cycle_get_module_main_conf(cycle,
                                               ngx_http_linegate_module);

    if (lmcf != NULL && lmcf->redis_configured) {
        if (ngx_http_linegate_auth_init_process(cycle, lmcf, &revoked)
            != NGX_OK
            || ngx_http_linegate_lines_cache_init_process(cycle, lmcf,
                                                          &invalidate)
               != NGX_OK)
        {
            return NGX_ERROR;
        }

        /* a subscriber connection only where one of them needs it */
        if ((revoked != NULL || invalidate != NULL)
            && ngx_http_linegate_redis_pubsub_init_process(cycle, lmcf,
                                                           revoked,
                                                           invalidate)
               != NGX_OK)
        {
            return NGX_ERROR;
        }

        ngx_http_linegate_lines_cache_attach();

        /* the preview tokens' slot tags (keys.c) */
        ngx_http_linegate_redis_slot_tags_init();
    }

    if (ngx_http_linegate_redis_init_process(cycle) != NGX_OK) {
        return NGX_ERROR;
    }

    return ngx_http_linegate_reconcile_auto_init_process(cycle);
}


static void
ngx_http_linegate_exit_process(ngx_cycle_t *cycle)
{
    ngx_http_linegate_reconcile_auto_exit_process(cycle);
    ngx_http_linegate_redis_pubsub_exit_process(cycle);
    ngx_http_linegate_redis_exit_process(cycle);
}
