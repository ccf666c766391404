
/*
 * linegate_limit: fleet-wide rate limiting for any nginx location.
 *
 *   linegate_limit_zone api key=$http_x_api_key rate=100r/s burst=50;
 *   location /api/ { linegate_limit zone=api; proxy_pass ...; }
 *
 * Each zone is a GCRA (src/lua/rl_gcra.lua): one Redis key per limited
 * value holds its theoretical arrival time on Redis's clock. A request of
 * a limited location sends one EVALSHA per zone, all in one pipeline on
 * the worker's shared connection, from the preaccess phase (or, with
 * linegate_limit_phase precontent, after the access phase, so that
 * auth_request, deny or limit_req refuse first and cost nothing); the
 * phase engine resumes from the reply. A header filter adds RateLimit-Policy,
 * RateLimit and Retry-After to whatever answers the request (proxy_pass,
 * static files, return, linegate's own APIs).
 *
 * When Redis does not answer, linegate_limit_on_error decides: closed
 * (503), open (let through) or local (a share of each zone enforced in
 * this node's shared memory). The phase handlers, the header filter and
 * the shared memory exist only when some location uses linegate_limit,
 * each phase's handler only when some location decides in it.
 */


#include "ngx_http_linegate_limit.h"
#include "ngx_http_linegate_redis.h"
#include "ngx_http_linegate_keys.h"
#include "ngx_http_linegate_scripts.h"
#include "ngx_http_linegate_metrics.h"
#include "ngx_http_linegate_chars.h"
#include "ngx_http_linegate_lease.h"
#include "ngx_http_linegate_ratelimit.h"
#include "ngx_http_linegate_conf.h"
#include "ngx_http_linegate_crypto.h"

#include <ngx_md5.h>


#define NGX_HTTP_LINEGATE_LIMIT_SHM_SIZE     (4 * 1024 * 1024)
#define NGX_HTTP_LINEGATE_LIMIT_MAX_RATE     1000000


typedef struct {
    ngx_array_t                     zones;      /* of zone_t * */
    ngx_uint_t                      used;       /* some linegate_limit */
    ngx_uint_t                      phases;     /* bits: 1 << _phase_e */
    ngx_uint_t                      local;      /* some on_error local */
    ngx_shm_zone_t                 *shm_zone;
} ngx_http_linegate_limit_main_conf_t;


typedef struct {
    ngx_array_t                    *limits;     /* of zone_t *; NULL: unset */
    ngx_str_t                       policy;     /* RateLimit-Policy, all */
    ngx_uint_t                      status;
    ngx_flag_t                      dry_run;
    ngx_flag_t                      headers;
    ngx_uint_t                      on_error;
    ngx_uint_t                      share;
    ngx_uint_t                      log_level;  /* of a rejection */
    ngx_uint_t                      phase;      /* _phase_e */
} ngx_http_linegate_limit_loc_conf_t;


/*
 * Where a location decides. precontent is after the access phase, not in
 * it: there, under "satisfy any", an OK of this handler would grant
 * access that auth_request or deny refused.
 */
typedef enum {
    NGX_HTTP_LINEGATE_LIMIT_PREACCESS = 0,
    NGX_HTTP_LINEGATE_LIMIT_PRECONTENT
} ngx_http_linegate_limit_phase_e;


/*
 * The local fallback: GCRA states in this node's shared memory, keyed by
 * 64 bits of MD5. As in limit_req, a state begins at the color of its
 * ngx_rbtree_node_t: 64 bytes a key.
 */
typedef struct {
    u_char                          color;
    u_char                          dummy;
    ngx_queue_t                     queue;
    uint64_t                        tat;        /* microseconds */
} ngx_http_linegate_limit_node_t;

#define NGX_HTTP_LINEGATE_LIMIT_NODE_SIZE                                    \
    (offsetof(ngx_rbtree_node_t, color)                                      \
     + sizeof(ngx_http_linegate_limit_node_t))


typedef struct {
    ngx_rbtree_t                    rbtree;
    ngx_rbtree_node_t               sentinel;
    ngx_queue_t                     queue;      /* LRU */
} ngx_http_linegate_limit_shctx_t;


typedef struct {
    ngx_http_linegate_limit_shctx_t *sh;
    ngx_slab_pool_t                *shpool;
} ngx_http_linegate_limit_shm_t;


typedef struct {
    ngx_http_linegate_limit_zone_t *zone;
    ngx_str_t                       value;      /* the key's value */
    ngx_str_t                       rkey;       /* the Redis key */
    unsigned                        limited:1;  /* value not empty */
    unsigned                        known:1;    /* numbers below are set */
    unsigned                        allowed:1;
    int64_t                         granted;    /* admitted by Redis */
    int64_t                         remaining;
    int64_t                         reset_ms;
    int64_t                         retry_ms;
} ngx_http_linegate_limit_result_t;


/*
 * A worker's cache of rejections: Redis said when the key of a zone can
 * pass again, and no node can admit it before then (its TAT only grows
 * while it is rejected), so until then this worker answers the rejection
 * itself. Not for a zone some location uses with another one: a refund
 * lowers its TAT, from any worker or node, and one in flight when Redis
 * rejected (another request's admission that a second zone rejected)
 * lands after the rejection. Whether a zone is used with another is this
 * node's configuration, and another node's may differ (a rolling
 * deploy, server groups sharing a zone name): an entry is trusted for
 * NGX_HTTP_LINEGATE_LIMIT_CACHE_TRUST at most, then Redis is asked
 * again. 2-way set-associative by the Redis key's SipHash under a key
 * the worker draws with its cache, compared in full: the keys are a
 * client's (key=$arg_... or a header), and with nginx's MurmurHash2 a
 * client could pick one that shares a rejected key's slot and evict it
 * at every request (a Redis decision per rejection again), as the lease
 * table's comment says. A new rejection takes a free or lapsed slot of
 * its set, else the one that lapses first.
 */
#define NGX_HTTP_LINEGATE_LIMIT_CACHE_SETS   1024
#define NGX_HTTP_LINEGATE_LIMIT_CACHE_WAYS   2
#define NGX_HTTP_LINEGATE_LIMIT_CACHE_KEY    144
#define NGX_HTTP_LINEGATE_LIMIT_CACHE_TRUST  1000

typedef struct {
    ngx_msec_t                      until;      /* ngx_current_msec */
    ngx_msec_t                      ask;        /* Redis again from then */
    ngx_msec_t                      reset;
    u_short                         len;
    u_char                          key[NGX_HTTP_LINEGATE_LIMIT_CACHE_KEY];
} ngx_http_linegate_limit_cached_t;


/* the fields the limiter sends: their index in _field_names */
typedef enum {
    NGX_HTTP_LINEGATE_LIMIT_RETRY = 0,
    NGX_HTTP_LINEGATE_LIMIT_POLICY,
    NGX_HTTP_LINEGATE_LIMIT_STATE,
    NGX_HTTP_LINEGATE_LIMIT_FIELDS
} ngx_http_linegate_limit_field_e;


/* an answer's lines of those fields: ngx_http_linegate_limit_fields() */
typedef struct {
    ngx_table_elt_t                *own[NGX_HTTP_LINEGATE_LIMIT_FIELDS];
    size_t                          len[NGX_HTTP_LINEGATE_LIMIT_FIELDS];
} ngx_http_linegate_limit_fields_t;


typedef struct {
    ngx_uint_t                      status;     /* _status_e */
    ngx_int_t                       rc;         /* for the phase engine */
    ngx_int_t                       retry_after;    /* seconds, -1: none */
    ngx_uint_t                      n;
    ngx_msec_t                      sent;       /* when asked */
    int64_t                         now;        /* the GCRA's clock, us */
    ngx_http_linegate_lease_t      *lease;      /* asked for a lease */
    ngx_uint_t                      lease_seq;
    ngx_http_linegate_limit_loc_conf_t *llcf;
    ngx_http_linegate_limit_result_t res[NGX_HTTP_LINEGATE_LIMIT_MAX_ZONES];
    unsigned                        waiting:1;
    unsigned                        done:1;
} ngx_http_linegate_limit_ctx_t;


static ngx_int_t ngx_http_linegate_limit_preaccess_handler(
    ngx_http_request_t *r);
static ngx_int_t ngx_http_linegate_limit_precontent_handler(
    ngx_http_request_t *r);
static ngx_int_t ngx_http_linegate_limit_handler(ngx_http_request_t *r,
    ngx_uint_t phase);
static ngx_int_t ngx_http_linegate_limit_start(ngx_http_request_t *r,
    ngx_http_linegate_limit_ctx_t *ctx);
static ngx_uint_t ngx_http_linegate_limit_refused(
    ngx_http_linegate_limit_ctx_t *ctx);
static void ngx_http_linegate_limit_reply(ngx_http_request_t *r,
    redisReply *reply);
static void ngx_http_linegate_limit_reply1(ngx_http_request_t *r,
    redisReply *reply);
static void ngx_http_linegate_limit_decide(ngx_http_request_t *r,
    ngx_http_linegate_limit_ctx_t *ctx);
static void ngx_http_linegate_limit_refund(ngx_http_request_t *r,
    ngx_http_linegate_limit_ctx_t *ctx);
static void ngx_http_linegate_limit_uncharge(
    ngx_http_linegate_limit_result_t *res, uint64_t interval);
static ngx_http_linegate_limit_cached_t *ngx_http_linegate_limit_cached(
    ngx_str_t *rkey, ngx_uint_t create);
static ngx_http_linegate_limit_cached_t *ngx_http_linegate_limit_cache_set(
    ngx_str_t *rkey, ngx_uint_t create);
static ngx_uint_t ngx_http_linegate_limit_cache_check(ngx_http_request_t *r,
    ngx_http_linegate_limit_ctx_t *ctx);
static void ngx_http_linegate_limit_fallback(ngx_http_request_t *r,
    ngx_http_linegate_limit_ctx_t *ctx);
static void ngx_http_linegate_limit_local(ngx_http_request_t *r,
    ngx_http_linegate_limit_ctx_t *ctx);
static void ngx_http_linegate_limit_log(ngx_http_request_t *r,
    ngx_http_linegate_limit_ctx_t *ctx, ngx_http_linegate_limit_result_t *res,
    const char *how);
static ngx_http_linegate_limit_node_t *ngx_http_linegate_limit_node(
    ngx_http_linegate_limit_shm_t *shm, ngx_rbtree_key_t key,
    uint64_t now, ngx_http_linegate_limit_node_t **held, ngx_uint_t nheld);
static ngx_uint_t ngx_http_linegate_limit_evict(
    ngx_http_linegate_limit_shm_t *shm, uint64_t before,
    ngx_http_linegate_limit_node_t **held, ngx_uint_t nheld);
static ngx_http_linegate_limit_ctx_t *ngx_http_linegate_limit_get_ctx(
    ngx_http_request_t *r);
static void ngx_http_linegate_limit_cleanup(void *data);
static ngx_uint_t ngx_http_linegate_limit_zone_status(
    ngx_http_linegate_limit_ctx_t *ctx,
    ngx_http_linegate_limit_result_t *res);
static ngx_int_t ngx_http_linegate_limit_redis_key(ngx_http_request_t *r,
    ngx_http_linegate_limit_result_t *res);
static ngx_int_t ngx_http_linegate_limit_header_filter(
    ngx_http_request_t *r);
static ngx_uint_t ngx_http_linegate_limit_retry_status(ngx_http_request_t *r,
    ngx_http_linegate_limit_loc_conf_t *llcf);
static ngx_int_t ngx_http_linegate_limit_ratelimit(ngx_http_request_t *r,
    ngx_http_linegate_limit_ctx_t *ctx, ngx_http_linegate_limit_fields_t *f);
static int64_t ngx_http_linegate_limit_next(
    ngx_http_linegate_limit_ctx_t *ctx, ngx_http_linegate_limit_result_t *res);
static ngx_uint_t ngx_http_linegate_limit_fields(ngx_http_request_t *r,
    ngx_http_linegate_limit_fields_t *f);
static ngx_int_t ngx_http_linegate_limit_fold(ngx_http_request_t *r,
    ngx_http_linegate_limit_fields_t *f);
static void ngx_http_linegate_limit_merge(ngx_http_request_t *r,
    ngx_http_linegate_limit_fields_t *f, u_char **buf, u_char **end);
static ngx_uint_t ngx_http_linegate_limit_field(ngx_table_elt_t *h,
    ngx_uint_t *own);
static ngx_int_t ngx_http_linegate_limit_add_header(ngx_http_request_t *r,
    ngx_str_t *name, u_char *value, size_t len);
static ngx_int_t ngx_http_linegate_limit_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);

static ngx_int_t ngx_http_linegate_limit_add_variables(ngx_conf_t *cf);
static ngx_int_t ngx_http_linegate_limit_init(ngx_conf_t *cf);
static ngx_http_linegate_limit_shm_t *ngx_http_linegate_limit_shm(void);
static ngx_int_t ngx_http_linegate_limit_init_shm(ngx_shm_zone_t *shm_zone,
    void *data);
static void *ngx_http_linegate_limit_create_main_conf(ngx_conf_t *cf);
static char *ngx_http_linegate_limit_init_main_conf(ngx_conf_t *cf,
    void *conf);
static void *ngx_http_linegate_limit_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_linegate_limit_merge_loc_conf(ngx_conf_t *cf,
    void *parent, void *child);
static ngx_http_linegate_limit_zone_t *ngx_http_linegate_limit_zone_get(
    ngx_conf_t *cf, ngx_http_linegate_limit_main_conf_t *lmcf,
    ngx_str_t *name);
static char *ngx_http_linegate_limit_zone(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_linegate_limit(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_linegate_limit_on_error(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_linegate_limit_status(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);


/* as limit_req_log_level's */
static ngx_conf_enum_t  ngx_http_linegate_limit_log_levels[] = {
    { ngx_string("info"), NGX_LOG_INFO },
    { ngx_string("notice"), NGX_LOG_NOTICE },
    { ngx_string("warn"), NGX_LOG_WARN },
    { ngx_string("error"), NGX_LOG_ERR },
    { ngx_null_string, 0 }
};


static ngx_conf_enum_t  ngx_http_linegate_limit_phases[] = {
    { ngx_string("preaccess"), NGX_HTTP_LINEGATE_LIMIT_PREACCESS },
    { ngx_string("precontent"), NGX_HTTP_LINEGATE_LIMIT_PRECONTENT },
    { ngx_null_string, 0 }
};


static ngx_command_t  ngx_http_linegate_limit_commands[] = {

    { ngx_string("linegate_limit_zone"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE3|NGX_CONF_TAKE4|NGX_CONF_TAKE5,
      ngx_http_linegate_limit_zone,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("linegate_limit"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_linegate_limit,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("linegate_limit_status"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_linegate_limit_status,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("linegate_limit_dry_run"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_linegate_limit_loc_conf_t, dry_run),
      NULL },

    { ngx_string("linegate_limit_headers"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_linegate_limit_loc_conf_t, headers),
      NULL },

    { ngx_string("linegate_limit_log_level"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_linegate_conf_set_enum_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_linegate_limit_loc_conf_t, log_level),
      &ngx_http_linegate_limit_log_levels },

    { ngx_string("linegate_limit_phase"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_linegate_conf_set_enum_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_linegate_limit_loc_conf_t, phase),
      &ngx_http_linegate_limit_phases },

    { ngx_string("linegate_limit_on_error"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE12,
      ngx_http_linegate_limit_on_error,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_linegate_limit_module_ctx = {
    ngx_http_linegate_limit_add_variables,  /* preconfiguration */
    ngx_http_linegate_limit_init,           /* postconfiguration */

    ngx_http_linegate_limit_create_main_conf, /* create main configuration */
    ngx_http_linegate_limit_init_main_conf, /* init main configuration */

    NULL,                                   /* create server configuration */
    NULL,                                   /* merge server configuration */

    ngx_http_linegate_limit_create_loc_conf, /* create location configuration */
    ngx_http_linegate_limit_merge_loc_conf  /* merge location configuration */
};


ngx_module_t  ngx_http_linegate_limit_module = {
    NGX_MODULE_V1,
    &ngx_http_linegate_limit_module_ctx,    /* module context */
    ngx_http_linegate_limit_commands,       /* module directives */
    NGX_HTTP_MODULE,                        /* module type */
    NULL,                                   /* init master */
    NULL,                                   /* init module */
    NULL,                                   /* init process */
    NULL,                                   /* init thread */
    NULL,                                   /* exit thread */
    NULL,                                   /* exit process */
    NULL,                                   /* exit master */
    NGX_MODULE_V1_PADDING
};


static ngx_str_t  ngx_http_linegate_limit_statuses[] = {
    ngx_null_string,
    ngx_string("PASSED"),
    ngx_string("REJECTED"),
    ngx_string("REJECTED_DRY_RUN"),
    ngx_string("OPEN"),
    ngx_string("LOCAL_PASSED"),
    ngx_string("LOCAL_REJECTED"),
    ngx_string("CLOSED")
};


static ngx_str_t  ngx_http_linegate_limit_on_errors[] = {
    ngx_string("open"),
    ngx_string("closed"),
    ngx_string("local")
};


/*
 * The names of the limiter's lines, in arrays of their own: the address
 * of a line's name tells the limiter's lines from the answer's, and a
 * string literal is no address of its own, the linker making one of the
 * module's equal literals (reply.c's "RateLimit" for the Lines and
 * Provisioning APIs' fields was ngx_string("RateLimit")'s here).
 */
static u_char  ngx_http_linegate_limit_policy_key[] = "RateLimit-Policy";
static u_char  ngx_http_linegate_limit_state_key[] = "RateLimit";
static u_char  ngx_http_linegate_limit_retry_key[] = "Retry-After";

static ngx_str_t  ngx_http_linegate_limit_policy_name = {
    sizeof(ngx_http_linegate_limit_policy_key) - 1,
    ngx_http_linegate_limit_policy_key
};
static ngx_str_t  ngx_http_linegate_limit_state_name = {
    sizeof(ngx_http_linegate_limit_state_key) - 1,
    ngx_http_linegate_limit_state_key
};
static ngx_str_t  ngx_http_linegate_limit_retry_name = {
    sizeof(ngx_http_linegate_limit_retry_key) - 1,
    ngx_http_linegate_limit_retry_key
};

static ngx_str_t  *ngx_http_linegate_limit_field_names[] = {
    &ngx_http_linegate_limit_retry_name,
    &ngx_http_linegate_limit_policy_name,
    &ngx_http_linegate_limit_state_name
};


static ngx_http_output_header_filter_pt  ngx_http_next_header_filter;

static ngx_http_linegate_limit_cached_t  *ngx_http_linegate_limit_cache;
static uint64_t                           ngx_http_linegate_limit_cache_k[2];

/* the last second this worker logged a fallback: once a second at most */
static time_t  ngx_http_linegate_limit_logged;
/* and a reply it could not read (each is followed by a fallback) */
static time_t  ngx_http_linegate_limit_bad_logged;


/* the request path */

static ngx_int_t
ngx_http_linegate_limit_preaccess_handler(ngx_http_request_t *r)
{
    return ngx_http_linegate_limit_handler(r,
                                           NGX_HTTP_LINEGATE_LIMIT_PREACCESS);
}


/*
 * Registered after try_files and mirror (a dynamic module's
 * postconfiguration comes later), so it runs before them: the decision
 * comes before a mirror's subrequest or a try_files redirect. A pass
 * returns NGX_DECLINED, never NGX_OK, which would skip them.
 */
static ngx_int_t
ngx_http_linegate_limit_precontent_handler(ngx_http_request_t *r)
{
    return ngx_http_linegate_limit_handler(r,
                                           NGX_HTTP_LINEGATE_LIMIT_PRECONTENT);
}


static ngx_int_t
ngx_http_linegate_limit_handler(ngx_http_request_t *r, ngx_uint_t phase)
{
    ngx_int_t                            rc;
    ngx_pool_cleanup_t                  *cln;
    ngx_http_linegate_limit_ctx_t       *ctx;
    ngx_http_linegate_limit_loc_conf_t  *llcf;

    if (r != r->main) {
        return NGX_DECLINED;
    }

    ctx = ngx_http_linegate_limit_get_ctx(r);
    llcf = ngx_http_get_module_loc_conf(r, ngx_http_linegate_limit_module);

    if (ctx != NULL) {
        if (ctx->waiting) {
            /* an event of the client's connection while Redis thinks */
            return NGX_AGAIN;
        }

        if (ctx->status != NGX_HTTP_LINEGATE_LIMIT_NONE
            || ctx->llcf == llcf)
        {
            /* resumed with the decision; once per request (error_page) */
            rc = ctx->rc;
            ctx->rc = NGX_DECLINED;
            return rc;
        }

        /*
         * no zone of the location left applied (every key empty): the
         * location an internal redirect led to decides, as with limit_req
         */
    }

    /* the handler of the other phase decides for this location */
    if (llcf->phase != phase
        || llcf->limits == NULL || llcf->limits->nelts == 0)
    {
        return NGX_DECLINED;
    }

    if (ctx == NULL) {
        /* the pool cleanup finds the context again after redirects */
        cln = ngx_pool_cleanup_add(r->pool,
                                   sizeof(ngx_http_linegate_limit_ctx_t));
        if (cln == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        cln->handler = ngx_http_linegate_limit_cleanup;
        ctx = cln->data;
    }

    ngx_memzero(ctx, sizeof(ngx_http_linegate_limit_ctx_t));
    ctx->llcf = llcf;
    ctx->rc = NGX_DECLINED;
    ctx->retry_after = -1;
    ngx_http_set_ctx(r, ctx, ngx_http_linegate_limit_module);

    rc = ngx_http_linegate_limit_start(r, ctx);

    if (rc == NGX_AGAIN) {
        ctx->waiting = 1;
        return NGX_AGAIN;
    }

    if (rc != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* decided without Redis: nothing limited, or Redis unavailable */
    rc = ctx->rc;
    ctx->rc = NGX_DECLINED;
    return rc;
}


/*
 * The keys of the zones, one EVALSHA per limited zone, all in one
 * pipeline. NGX_AGAIN: sent; NGX_OK: decided now.
 */
static ngx_int_t
ngx_http_linegate_limit_start(ngx_http_request_t *r,
    ngx_http_linegate_limit_ctx_t *ctx)
{
    ngx_int_t                           rc;
    ngx_str_t                          *sha;
    ngx_uint_t                          i, n, want, leased;
    struct timeval                      tv;
    ngx_http_linegate_limit_zone_t    **zones;
    ngx_http_linegate_lease_t          *lease;
    ngx_http_linegate_limit_result_t   *res, *res1;
    ngx_http_linegate_redis_args_t     *args, *a;

    zones = ctx->llcf->limits->elts;
    ctx->n = ctx->llcf->limits->nelts;
    n = 0;
    res1 = NULL;

    for (i = 0; i < ctx->n; i++) {
        res = &ctx->res[i];
        res->zone = zones[i];

        if (ngx_http_complex_value(r, &zones[i]->key, &res->value)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

        if (res->value.len == 0) {
            /* an empty key is not limited, as with limit_req */
            continue;
        }

        if (ngx_http_linegate_limit_redis_key(r, res) != NGX_OK) {
            return NGX_ERROR;
        }

        res->limited = 1;
        res1 = res;
        n++;
    }

    if (n == 0) {
        ctx->done = 1;
        return NGX_OK;
    }

    /*
     * A lease only where the location has one zone (directives.md): not
     * where one of several zones applies because the others' keys are
     * empty, which a client chooses by leaving out a header.
     */
    leased = (ctx->n == 1 && res1->zone->lease && !ctx->llcf->dry_run);

    /*
     * A rejection Redis already gave: no round trip. Not while the
     * worker's lease of the key holds admissions: they were paid for in
     * Redis before that rejection (the lease that took the key's last
     * ones), and would expire unused. Looked up only: a rejected key
     * takes no slot of the lease table from a hot one.
     */
    lease = leased ? ngx_http_linegate_lease_find(&res1->rkey) : NULL;

    if (!ctx->llcf->dry_run
        && (lease == NULL || ngx_http_linegate_lease_tokens(lease) == 0)
        && ngx_http_linegate_limit_cache_check(r, ctx))
    {
        ctx->done = 1;
        return NGX_OK;
    }

    lease = leased ? ngx_http_linegate_lease_get(&res1->rkey) : NULL;

    ctx->sent = ngx_current_msec;
    want = 1;

    /*
     * The deciding worker's clock, not Redis TIME: one command less in
     * the script, and the script is deterministic (docs/gateway.md,
     * "Whose clock": what clock skew between nodes costs).
     */
    ngx_gettimeofday(&tv);
    ctx->now = (int64_t) tv.tv_sec * 1000000 + tv.tv_usec;

    if (lease != NULL) {
        want = ngx_http_linegate_lease_spend(lease, res1->zone->lease,
                                             res1->zone->lease_max,
                                             &ctx->lease_seq);

        if (want == 0) {
            /* admitted by this worker's lease: no round trip */
            res1->known = 1;
            res1->allowed = 1;
            res1->remaining = ngx_http_linegate_lease_left(lease,
                                                           &res1->rkey,
                                                           lease->remaining);
            res1->reset_ms = ngx_http_linegate_lease_reset(lease);
            ctx->status = NGX_HTTP_LINEGATE_LIMIT_PASSED;
            ctx->done = 1;
            return NGX_OK;
        }

        /*
         * lease_seq: the next lease of the worker, decide() records it;
         * 0: a decision alone, whose refusal decide() answers from the
         * lease if its next one came meanwhile
         */
        ctx->lease = lease;
    }

    if (!ngx_http_linegate_redis_connected()
        && !ngx_http_linegate_redis_connecting())
    {
        /*
         * known down: the fallback at once, and no log line per request;
         * a worker's first connection on its way is waited for
         */
        ngx_http_linegate_limit_fallback(r, ctx);
        ctx->done = 1;
        return NGX_OK;
    }

    args = ngx_palloc(r->pool, n * sizeof(ngx_http_linegate_redis_args_t));
    if (args == NULL) {
        return NGX_ERROR;
    }

    if (n == 1) {
        /* one zone: a script call, which survives a SCRIPT FLUSH */
        a = args;
        ngx_http_linegate_redis_args_init(a);
        ngx_http_linegate_redis_arg_str(a, &res1->rkey);
        ngx_http_linegate_redis_arg_str(a, &res1->zone->interval_arg);
        ngx_http_linegate_redis_arg_str(a, &res1->zone->tolerance_arg);
        ngx_http_linegate_redis_arg_int(r, a, want);
        ngx_http_linegate_redis_arg_int(r, a, ctx->now);

        rc = ngx_http_linegate_redis_script(r,
                                            NGX_HTTP_LINEGATE_SCRIPT_RL_GCRA,
                                            1, a,
                                            ngx_http_linegate_limit_reply1);

    } else {
        sha = ngx_http_linegate_script_sha(NGX_HTTP_LINEGATE_SCRIPT_RL_GCRA);
        a = args;

        for (i = 0; i < ctx->n; i++) {
            res = &ctx->res[i];

            if (!res->limited) {
                continue;
            }

            ngx_http_linegate_redis_args_init(a);
            ngx_http_linegate_redis_arg_cstr(a, "EVALSHA");
            ngx_http_linegate_redis_arg_str(a, sha);
            ngx_http_linegate_redis_arg_cstr(a, "1");
            ngx_http_linegate_redis_arg_str(a, &res->rkey);
            ngx_http_linegate_redis_arg_str(a, &res->zone->interval_arg);
            ngx_http_linegate_redis_arg_str(a, &res->zone->tolerance_arg);
            ngx_http_linegate_redis_arg_cstr(a, "1");
            ngx_http_linegate_redis_arg_int(r, a, ctx->now);
            a++;
        }

        /* each reply, also when another failed: refund() needs them */
        rc = ngx_http_linegate_redis_pipeline_each(r, n, args,
                                             ngx_http_linegate_limit_reply);
    }

    if (rc != NGX_OK) {
        ngx_http_linegate_limit_fallback(r, ctx);
        ctx->done = 1;
        return NGX_OK;
    }

    return NGX_AGAIN;
}


/* the reply of one script call: as a pipeline of one */
static void
ngx_http_linegate_limit_reply1(ngx_http_request_t *r, redisReply *reply)
{
    redisReply   array, *element[1];

    if (reply == NULL) {
        ngx_http_linegate_limit_reply(r, NULL);
        return;
    }

    ngx_memzero(&array, sizeof(redisReply));
    element[0] = reply;
    array.type = REDIS_REPLY_ARRAY;
    array.elements = 1;
    array.element = element;

    ngx_http_linegate_limit_reply(r, &array);
}


/*
 * The replies of the zones, in order (a pipeline's array, each element
 * possibly an error or NULL: ngx_http_linegate_redis_pipeline_each()).
 * When some zone has no decision, the request falls back; the zones that
 * admitted it give their admission back first, as when another zone
 * rejects it: a request the limit does not decide is not charged, where
 * what Redis did is known (a command with no reply may have run, and
 * stays charged if it did).
 */
/* a zone Redis answered refused the request */
static ngx_uint_t
ngx_http_linegate_limit_refused(ngx_http_linegate_limit_ctx_t *ctx)
{
    ngx_uint_t  i;

    for (i = 0; i < ctx->n; i++) {
        if (ctx->res[i].known && !ctx->res[i].allowed) {
            return 1;
        }
    }

    return 0;
}


static void
ngx_http_linegate_limit_reply(ngx_http_request_t *r, redisReply *reply)
{
    ngx_uint_t                          i, j, k, failed, bad;
    redisReply                         *e;
    int64_t                             v[4];
    ngx_http_linegate_limit_ctx_t      *ctx;
    ngx_http_linegate_limit_result_t   *res;

    ctx = ngx_http_get_module_ctx(r, ngx_http_linegate_limit_module);

    if (ctx == NULL || !ctx->waiting) {
        return;
    }

    ctx->waiting = 0;
    j = 0;
    failed = 0;
    bad = 0;

    if (reply == NULL) {
        goto fallback;
    }

    for (i = 0; i < ctx->n; i++) {
        res = &ctx->res[i];

        if (!res->limited) {
            continue;
        }

        e = (j < reply->elements) ? reply->element[j] : NULL;
        j++;

        if (e == NULL || e->type == REDIS_REPLY_ERROR) {
            /*
             * unknown (no reply), or not run: logged by the client, which
             * on a NOSCRIPT (a SCRIPT FLUSH, a promoted replica) has
             * already sent every script again to every node it is
             * connected to, so the next requests are Redis's again on
             * every master of a cluster (t/400)
             */
            failed = 1;
            continue;
        }

        if (e->type != REDIS_REPLY_ARRAY || e->elements != 4) {
            bad = 1;
            continue;
        }

        for (k = 0; k < 4; k++) {
            if (ngx_http_linegate_reply_int(e, k, &v[k]) != NGX_OK
                || !ngx_http_linegate_gcra_valid(v[k]))
            {
                break;
            }
        }

        if (k < 4) {
            bad = 1;
            continue;
        }

        res->known = 1;
        res->allowed = (v[0] >= 1);
        res->granted = v[0];
        res->remaining = v[1];
        res->reset_ms = v[2];
        res->retry_ms = v[3];
    }

    if (!failed && !bad) {
        ngx_http_linegate_limit_decide(r, ctx);
        goto resume;
    }

    /* as the fallback that follows: once a second, not per request */
    if (bad && ngx_time() != ngx_http_linegate_limit_bad_logged) {
        ngx_http_linegate_limit_bad_logged = ngx_time();

        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      NGX_HTTP_LINEGATE_LOG "unexpected linegate_limit "
                      "reply (logged once a second)");
    }

    if (ngx_http_linegate_limit_refused(ctx)) {
        /*
         * a zone that answered refused: so is the request, whatever
         * became of the others (the zones that admitted give back what
         * they took, as when all answer), not handed to the fallback,
         * which on_error open would admit
         */
        ngx_http_linegate_limit_decide(r, ctx);
        goto resume;
    }

    /* what the zones that answered took, given back */
    ngx_http_linegate_limit_refund(r, ctx);

fallback:

    for (i = 0; i < ctx->n; i++) {
        ctx->res[i].known = 0;
    }

    ngx_http_linegate_limit_fallback(r, ctx);

resume:

    ctx->done = 1;

    /* the phase engine runs again from this handler, with the decision */
    r->write_event_handler = ngx_http_core_run_phases;
    ngx_http_post_request(r, NULL);
}


/* Redis answered every zone */
static void
ngx_http_linegate_limit_decide(ngx_http_request_t *r,
    ngx_http_linegate_limit_ctx_t *ctx)
{
    int64_t                             retry;
    ngx_uint_t                          i, rejected;
    ngx_http_linegate_limit_cached_t   *cached;
    ngx_http_linegate_limit_result_t   *res;

    rejected = 0;
    retry = 0;

    if (ctx->lease != NULL) {
        /*
         * One zone (a lease is used only then): its grant is the worker's
         * next lease, or its refusal takes one of the worker's admissions
         * (a decision alone refused because the next lease, answered just
         * before, took the key's last ones)
         */
        for (i = 0; i < ctx->n; i++) {
            res = &ctx->res[i];

            if (!res->known) {
                continue;
            }

            if (ngx_http_linegate_lease_granted(ctx->lease, ctx->lease_seq,
                                                res->granted, res->remaining,
                                                res->reset_ms, ctx->sent,
                                                res->zone->lease)
                || (!res->allowed
                    && ngx_http_linegate_lease_take(ctx->lease, &res->rkey)))
            {
                res->allowed = 1;
                res->granted = 0;
                res->remaining = 0;
                res->retry_ms = 0;
            }

            if (res->allowed) {
                /* r: Redis's, and the admissions the worker holds */
                res->remaining = ngx_http_linegate_lease_left(ctx->lease,
                                                              &res->rkey,
                                                              res->remaining);
            }
        }

        ngx_http_linegate_lease_done(ctx->lease, ctx->lease_seq);
    }

    for (i = 0; i < ctx->n; i++) {
        res = &ctx->res[i];

        if (res->known && !res->allowed) {
            rejected = 1;
            retry = ngx_max(retry, res->retry_ms);

            if (!ctx->llcf->dry_run && res->retry_ms > 1
                && !res->zone->refundable)
            {
                cached = ngx_http_linegate_limit_cached(&res->rkey, 1);

                if (cached != NULL) {
                    /*
                     * From when the command was sent, a millisecond short
                     * of Redis's answer (rounded up): never later than the
                     * key can really pass.
                     */
                    cached->until = ctx->sent + res->retry_ms - 1;
                    cached->ask = ctx->sent
                                  + ngx_min(res->retry_ms - 1,
                                      NGX_HTTP_LINEGATE_LIMIT_CACHE_TRUST);
                    cached->reset = ctx->sent + ngx_max(res->reset_ms, 0);
                }
            }

            ngx_http_linegate_limit_log(r, ctx, res, "");
        }
    }

    if (!rejected) {
        ctx->status = NGX_HTTP_LINEGATE_LIMIT_PASSED;
        return;
    }

    /*
     * In dry run too, though the request passes: Redis is then left as
     * the limit would leave it, and the next decisions are the same
     */
    ngx_http_linegate_limit_refund(r, ctx);

    if (ctx->llcf->dry_run) {
        ctx->status = NGX_HTTP_LINEGATE_LIMIT_REJECTED_DRY_RUN;
        return;
    }

    ctx->status = NGX_HTTP_LINEGATE_LIMIT_REJECTED;
    ctx->rc = ctx->llcf->status;
    ctx->retry_after = (ngx_int_t) ((retry + 999) / 1000);
}


static ngx_http_linegate_limit_cached_t *
ngx_http_linegate_limit_cached(ngx_str_t *rkey, ngx_uint_t create)
{
    ngx_uint_t                         i;
    ngx_http_linegate_limit_cached_t  *set, *c;

    set = ngx_http_linegate_limit_cache_set(rkey, create);
    if (set == NULL) {
        return NULL;
    }

    for (i = 0; i < NGX_HTTP_LINEGATE_LIMIT_CACHE_WAYS; i++) {
        if (set[i].len == rkey->len
            && ngx_memcmp(set[i].key, rkey->data, rkey->len) == 0)
        {
            return &set[i];
        }
    }

    if (!create) {
        return NULL;
    }

    c = set;

    for (i = 0; i < NGX_HTTP_LINEGATE_LIMIT_CACHE_WAYS; i++) {
        if (set[i].len == 0
            || (ngx_msec_int_t) (set[i].until - ngx_current_msec) <= 0)
        {
            c = &set[i];
            break;
        }

        if ((ngx_msec_int_t) (set[i].until - c->until) < 0) {
            c = &set[i];
        }
    }

    c->len = (u_short) rkey->len;
    ngx_memcpy(c->key, rkey->data, rkey->len);

    return c;
}


/* rkey's set; the cache made (and its hash key drawn) by the first */
static ngx_http_linegate_limit_cached_t *
ngx_http_linegate_limit_cache_set(ngx_str_t *rkey, ngx_uint_t create)
{
    uint64_t  h;

    if (rkey->len > NGX_HTTP_LINEGATE_LIMIT_CACHE_KEY) {
        return NULL;
    }

    if (ngx_http_linegate_limit_cache == NULL) {
        if (!create) {
            return NULL;
        }

        /* no hash key, no cache: each rejection is Redis's again */
        if (ngx_http_linegate_random_bytes(
                (u_char *) ngx_http_linegate_limit_cache_k,
                sizeof(ngx_http_linegate_limit_cache_k))
            != 0)
        {
            return NULL;
        }

        /* allocated by the first rejection of the worker */
        ngx_http_linegate_limit_cache = ngx_calloc(
            NGX_HTTP_LINEGATE_LIMIT_CACHE_SETS
            * NGX_HTTP_LINEGATE_LIMIT_CACHE_WAYS
            * sizeof(ngx_http_linegate_limit_cached_t), ngx_cycle->log);

        if (ngx_http_linegate_limit_cache == NULL) {
            return NULL;
        }
    }

    h = ngx_http_linegate_siphash(ngx_http_linegate_limit_cache_k[0],
                                  ngx_http_linegate_limit_cache_k[1],
                                  rkey->data, rkey->len);

    return &ngx_http_linegate_limit_cache[
               (h % NGX_HTTP_LINEGATE_LIMIT_CACHE_SETS)
               * NGX_HTTP_LINEGATE_LIMIT_CACHE_WAYS];
}


/* 1: some zone's rejection is still cached, ctx holds the decision */
static ngx_uint_t
ngx_http_linegate_limit_cache_check(ngx_http_request_t *r,
    ngx_http_linegate_limit_ctx_t *ctx)
{
    int64_t                             retry;
    ngx_uint_t                          i, hit;
    ngx_msec_int_t                      left;
    ngx_http_linegate_limit_cached_t   *c;
    ngx_http_linegate_limit_result_t   *res;

    if (ngx_http_linegate_limit_cache == NULL) {
        return 0;
    }

    hit = 0;
    retry = 0;

    for (i = 0; i < ctx->n; i++) {
        res = &ctx->res[i];

        if (!res->limited) {
            continue;
        }

        c = ngx_http_linegate_limit_cached(&res->rkey, 0);
        if (c == NULL) {
            continue;
        }

        left = (ngx_msec_int_t) (c->until - ngx_current_msec);

        if (left <= 0 || (ngx_msec_int_t) (c->ask - ngx_current_msec) <= 0) {
            c->len = 0;
            continue;
        }

        hit = 1;
        res->known = 1;
        res->allowed = 0;
        res->remaining = 0;
        res->retry_ms = left + 1;
        res->reset_ms = ngx_max((ngx_msec_int_t) (c->reset - ngx_current_msec),
                                res->retry_ms);
        retry = ngx_max(retry, res->retry_ms);

        ngx_http_linegate_limit_log(r, ctx, res, " (cached rejection)");
    }

    if (!hit) {
        return 0;
    }

    /* the other zones were not asked: their numbers are unknown */
    for (i = 0; i < ctx->n; i++) {
        if (ctx->res[i].known && ctx->res[i].allowed) {
            ctx->res[i].known = 0;
        }
    }

    ctx->status = NGX_HTTP_LINEGATE_LIMIT_REJECTED;
    ctx->rc = ctx->llcf->status;
    ctx->retry_after = (ngx_int_t) ((retry + 999) / 1000);

    return 1;
}


/*
 * Zones that admitted a request another zone rejected give their
 * admission back, fire and forget (the answer is decided), as a script
 * that outlives the request: after a SCRIPT FLUSH its NOSCRIPT gets the
 * EVAL, on a cluster a MOVED or ASK is followed. A lost connection, a
 * timeout or an error reply (OOM, READONLY...: logged) leaves the key
 * charged (never sent twice: a refund is not idempotent).
 */
static void
ngx_http_linegate_limit_refund(ngx_http_request_t *r,
    ngx_http_linegate_limit_ctx_t *ctx)
{
    ngx_uint_t                          i;
    ngx_http_linegate_limit_result_t   *res;
    ngx_http_linegate_redis_args_t      a;

    for (i = 0; i < ctx->n; i++) {
        res = &ctx->res[i];

        if (!res->known || !res->allowed) {
            continue;
        }

        ngx_http_linegate_redis_args_init(&a);
        ngx_http_linegate_redis_arg_str(&a, &res->rkey);
        ngx_http_linegate_redis_arg_str(&a, &res->zone->interval_arg);
        ngx_http_linegate_redis_arg_int(r, &a, ctx->now);

        if (ngx_http_linegate_redis_script(r,
                                           NGX_HTTP_LINEGATE_SCRIPT_RL_REFUND,
                                           1, &a, NULL)
            == NGX_OK)
        {
            ngx_http_linegate_limit_uncharge(res, res->zone->interval);
        }
    }
}


/*
 * A zone's numbers as they are when its admission is not charged (given
 * back, or never written): the RateLimit header then tells the state the
 * key is really left in. One more would pass, the key is back to full one
 * interval (microseconds) sooner.
 */
static void
ngx_http_linegate_limit_uncharge(ngx_http_linegate_limit_result_t *res,
    uint64_t interval)
{
    res->remaining++;
    res->reset_ms = ngx_max(res->reset_ms - (int64_t) (interval / 1000), 0);
}


/*
 * A zone rejected the request (Redis, the worker's cache of Redis's
 * rejections, or the local fallback): logged at linegate_limit_log_level,
 * a dry run's one level lower (it rejects nothing), as limit_req logs its
 * delays.
 */
static void
ngx_http_linegate_limit_log(ngx_http_request_t *r,
    ngx_http_linegate_limit_ctx_t *ctx, ngx_http_linegate_limit_result_t *res,
    const char *how)
{
    ngx_uint_t  level;

    level = ctx->llcf->log_level;

    if (ctx->llcf->dry_run && level != NGX_LOG_INFO) {
        level++;
    }

    ngx_log_error(level, r->connection->log, 0,
                  NGX_HTTP_LINEGATE_LOG "limiting requests%s by zone "
                  "\"%V\"%s, retry in %L ms",
                  ctx->llcf->dry_run ? ", dry run," : "", &res->zone->name,
                  how, res->retry_ms);
}


/* Redis could not answer: linegate_limit_on_error */
static void
ngx_http_linegate_limit_fallback(ngx_http_request_t *r,
    ngx_http_linegate_limit_ctx_t *ctx)
{
    ngx_http_linegate_limit_loc_conf_t  *llcf;

    llcf = ctx->llcf;

    ngx_http_linegate_lease_done(ctx->lease, ctx->lease_seq);

    if (ngx_time() != ngx_http_linegate_limit_logged) {
        ngx_http_linegate_limit_logged = ngx_time();

        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      NGX_HTTP_LINEGATE_LOG "linegate_limit: Redis did not "
                      "answer, requests fall back to \"%V\" (logged once "
                      "a second)", &ngx_http_linegate_limit_on_errors[
                                       llcf->on_error]);
    }

    switch (llcf->on_error) {

    case NGX_HTTP_LINEGATE_LIMIT_ON_ERROR_CLOSED:
        ctx->status = NGX_HTTP_LINEGATE_LIMIT_CLOSED;

        if (!llcf->dry_run) {
            ctx->rc = NGX_HTTP_SERVICE_UNAVAILABLE;
            ctx->retry_after = 1;
        }

        return;

    case NGX_HTTP_LINEGATE_LIMIT_ON_ERROR_LOCAL:
        ngx_http_linegate_limit_local(r, ctx);
        return;

    default: /* open */
        ctx->status = NGX_HTTP_LINEGATE_LIMIT_OPEN;
        return;
    }
}


/*
 * The local fallback's state in the running cycle's zone, NULL: none.
 * Found through ngx_cycle, never the request's configuration: without a
 * master (master_process off) a connection kept across a reload is
 * served on under the old cycle's, whose zone nginx unmaps when the new
 * configuration has no local fallback (a limited request read freed
 * memory); a zone the new cycle keeps keeps its address. A worker's
 * cycle is its requests': the same zone.
 */
static ngx_http_linegate_limit_shm_t *
ngx_http_linegate_limit_shm(void)
{
    ngx_http_linegate_limit_main_conf_t  *lmcf;

    lmcf = ngx_http_cycle_get_module_main_conf(ngx_cycle,
                                           ngx_http_linegate_limit_module);

    if (lmcf == NULL || lmcf->shm_zone == NULL) {
        return NULL;
    }

    return lmcf->shm_zone->data;
}


/*
 * The local fallback: each zone at rate/share with burst/share, a GCRA
 * per (zone, key) in this node's shared memory, all zones checked before
 * any is charged. A key's state is kept from one outage to the next
 * (_node()).
 */
static void
ngx_http_linegate_limit_local(ngx_http_request_t *r,
    ngx_http_linegate_limit_ctx_t *ctx)
{
    int64_t                             retry;
    uint64_t                            now, T, tau, tat, new_tat[
                                          NGX_HTTP_LINEGATE_LIMIT_MAX_ZONES];
    u_char                              digest[16];
    ngx_md5_t                           md5;
    ngx_uint_t                          i, rejected, share;
    ngx_time_t                         *tp;
    ngx_rbtree_key_t                    key;
    ngx_http_linegate_limit_node_t     *node[
                                          NGX_HTTP_LINEGATE_LIMIT_MAX_ZONES];
    ngx_http_linegate_limit_shm_t      *shm;
    ngx_http_linegate_limit_result_t   *res;

    shm = ngx_http_linegate_limit_shm();

    if (shm == NULL) {
        /* the running configuration has no local state (see _shm()) */
        ctx->status = NGX_HTTP_LINEGATE_LIMIT_OPEN;
        return;
    }

    share = ctx->llcf->share;

    tp = ngx_timeofday();
    now = (uint64_t) tp->sec * 1000000 + (uint64_t) tp->msec * 1000;

    rejected = 0;
    retry = 0;

    ngx_shmtx_lock(&shm->shpool->mutex);

    for (i = 0; i < ctx->n; i++) {
        res = &ctx->res[i];
        node[i] = NULL;

        if (!res->limited) {
            continue;
        }

        ngx_md5_init(&md5);
        ngx_md5_update(&md5, res->zone->name.data, res->zone->name.len);
        ngx_md5_update(&md5, ":", 1);
        ngx_md5_update(&md5, res->value.data, res->value.len);
        ngx_md5_final(digest, &md5);
        ngx_memcpy(&key, digest, sizeof(ngx_rbtree_key_t));

        /* the nodes of the earlier zones are held: never evicted here */
        node[i] = ngx_http_linegate_limit_node(shm, key, now, node, i);

        T = res->zone->interval * share;
        tau = (res->zone->burst / share) * T;

        tat = (node[i] && node[i]->tat > now) ? node[i]->tat : now;
        new_tat[i] = tat + T;

        res->known = 1;

        /*
         * Unsigned: compared as tat > now + tau, never as tat - tau > now
         * (tau may exceed the Unix time in microseconds: a big burst of
         * a daily rate, and the difference would wrap)
         */
        if (tat > now + tau) {
            res->allowed = 0;
            res->remaining = 0;
            res->reset_ms = (tat - now + 999) / 1000;
            res->retry_ms = (tat - tau - now + 999) / 1000;
            retry = ngx_max(retry, res->retry_ms);
            rejected = 1;

        } else {
            res->allowed = 1;
            res->remaining = (now + tau - tat) / T;
            res->reset_ms = (new_tat[i] - now + 999) / 1000;
            res->retry_ms = 0;
        }
    }

    /*
     * Charged only when every zone admits, in dry run too (as with Redis,
     * whose refunds give back what a rejected request was charged)
     */
    for (i = 0; i < ctx->n; i++) {
        if (!ctx->res[i].allowed) {
            continue;
        }

        if (rejected || node[i] == NULL) {
            ngx_http_linegate_limit_uncharge(&ctx->res[i],
                                    ctx->res[i].zone->interval * share);
            continue;
        }

        node[i]->tat = new_tat[i];
    }

    ngx_shmtx_unlock(&shm->shpool->mutex);

    if (!rejected) {
        ctx->status = NGX_HTTP_LINEGATE_LIMIT_LOCAL_PASSED;
        return;
    }

    for (i = 0; i < ctx->n; i++) {
        if (ctx->res[i].known && !ctx->res[i].allowed) {
            ngx_http_linegate_limit_log(r, ctx, &ctx->res[i],
                                        " (local fallback)");
        }
    }

    ctx->status = NGX_HTTP_LINEGATE_LIMIT_LOCAL_REJECTED;

    if (!ctx->llcf->dry_run) {
        ctx->rc = ctx->llcf->status;
        ctx->retry_after = (ngx_int_t) ((retry + 999) / 1000);
    }
}


/*
 * The node of a key, created if need be; the LRU evicts old ones, but
 * never one in held[] (the nodes this request looked up for its other
 * zones: freed, their memory could come back as this node, and the
 * request would then charge one zone's state into another's). A node
 * is kept whatever Redis decided since it was charged: it holds what this
 * node admitted without Redis, never charged there, and is back to empty
 * by itself once its TAT has passed. Emptied when Redis answered again
 * (until 2026-11-29), a Redis that answers some commands and times out
 * others gave every key a new burst about every second.
 */
static ngx_http_linegate_limit_node_t *
ngx_http_linegate_limit_node(ngx_http_linegate_limit_shm_t *shm,
    ngx_rbtree_key_t key, uint64_t now, ngx_http_linegate_limit_node_t **held,
    ngx_uint_t nheld)
{
    ngx_uint_t                       i;
    ngx_rbtree_node_t               *n, *sentinel;
    ngx_http_linegate_limit_node_t  *ln;

    n = shm->sh->rbtree.root;
    sentinel = shm->sh->rbtree.sentinel;

    while (n != sentinel) {
        if (key < n->key) {
            n = n->left;
            continue;
        }

        if (key > n->key) {
            n = n->right;
            continue;
        }

        ln = (ngx_http_linegate_limit_node_t *) &n->color;

        ngx_queue_remove(&ln->queue);
        ngx_queue_insert_head(&shm->sh->queue, &ln->queue);
        return ln;
    }

    /* up to two states back to full (their TAT passed) go first */
    for (i = 0; i < 2; i++) {
        if (!ngx_http_linegate_limit_evict(shm, now, held, nheld)) {
            break;
        }
    }

    n = ngx_slab_alloc_locked(shm->shpool,
                              NGX_HTTP_LINEGATE_LIMIT_NODE_SIZE);

    if (n == NULL
        && ngx_http_linegate_limit_evict(shm, (uint64_t) -1, held, nheld))
    {
        /* full: the least recently used state went */
        n = ngx_slab_alloc_locked(shm->shpool,
                                  NGX_HTTP_LINEGATE_LIMIT_NODE_SIZE);
    }

    if (n == NULL) {
        return NULL;
    }

    ngx_memzero(n, NGX_HTTP_LINEGATE_LIMIT_NODE_SIZE);
    n->key = key;
    ln = (ngx_http_linegate_limit_node_t *) &n->color;
    ln->tat = now;
    ngx_rbtree_insert(&shm->sh->rbtree, n);
    ngx_queue_insert_head(&shm->sh->queue, &ln->queue);

    return ln;
}


/*
 * Frees the least recently used node if its TAT is at most before (back
 * to full) and it is not held. The held nodes were moved to the head of
 * the LRU, one after the other, under the lock: a held node at the tail
 * means every node is held. 1: one freed.
 */
static ngx_uint_t
ngx_http_linegate_limit_evict(ngx_http_linegate_limit_shm_t *shm,
    uint64_t before, ngx_http_linegate_limit_node_t **held, ngx_uint_t nheld)
{
    ngx_uint_t                       i;
    ngx_queue_t                     *q;
    ngx_rbtree_node_t               *n;
    ngx_http_linegate_limit_node_t  *ln;

    if (ngx_queue_empty(&shm->sh->queue)) {
        return 0;
    }

    q = ngx_queue_last(&shm->sh->queue);
    ln = ngx_queue_data(q, ngx_http_linegate_limit_node_t, queue);

    if (ln->tat > before) {
        return 0;
    }

    for (i = 0; i < nheld; i++) {
        if (held[i] == ln) {
            return 0;
        }
    }

    n = (ngx_rbtree_node_t *)
            ((u_char *) ln - offsetof(ngx_rbtree_node_t, color));

    ngx_queue_remove(q);
    ngx_rbtree_delete(&shm->sh->rbtree, n);
    ngx_slab_free_locked(shm->shpool, n);

    return 1;
}


/*
 * lg:rl:{<zone>:h:<md5 hex of the value>}, whatever the value: a key= is
 * often a client's secret (an API key header), and a Redis key name is
 * seen by SCAN, MONITOR, SLOWLOG, the RDB and AOF files and the replicas
 * (docs/security.md: why a digest, and an unkeyed one). The braces are
 * the Redis Cluster hash tag: one slot per value, a zone's values spread.
 */
static ngx_int_t
ngx_http_linegate_limit_redis_key(ngx_http_request_t *r,
    ngx_http_linegate_limit_result_t *res)
{
    u_char      digest[16], hexbuf[32];
    ngx_str_t   hex;
    ngx_md5_t   md5;

    ngx_md5_init(&md5);
    ngx_md5_update(&md5, res->value.data, res->value.len);
    ngx_md5_final(digest, &md5);

    hex.data = hexbuf;
    hex.len = ngx_hex_dump(hexbuf, digest, 16) - hexbuf;

    return ngx_http_linegate_key(r->pool, NGX_HTTP_LINEGATE_KEY_RL_HASH,
                                 &res->zone->name, &hex, &res->rkey);
}


static ngx_http_linegate_limit_ctx_t *
ngx_http_linegate_limit_get_ctx(ngx_http_request_t *r)
{
    ngx_pool_cleanup_t             *cln;
    ngx_http_linegate_limit_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_linegate_limit_module);

    if (ctx != NULL || !(r->internal || r->filter_finalize)) {
        return ctx;
    }

    /*
     * an internal redirect cleared the module contexts, or a filter that
     * refused the answer (ngx_http_filter_finalize_request())
     */
    for (cln = r->pool->cleanup; cln; cln = cln->next) {
        if (cln->handler == ngx_http_linegate_limit_cleanup) {
            ctx = cln->data;
            ngx_http_set_ctx(r, ctx, ngx_http_linegate_limit_module);
            return ctx;
        }
    }

    return NULL;
}


/* the request ends: its decision counted in the metrics, once per zone */
static void
ngx_http_linegate_limit_cleanup(void *data)
{
    ngx_http_linegate_limit_ctx_t  *ctx = data;

    ngx_uint_t                       i, status;
    ngx_http_linegate_limit_zone_t **zones;

    if (ctx->status == 0 || ctx->llcf == NULL || ctx->llcf->limits == NULL) {
        return;
    }

    zones = ctx->llcf->limits->elts;

    for (i = 0; i < ctx->llcf->limits->nelts; i++) {
        status = (i < ctx->n)
                 ? ngx_http_linegate_limit_zone_status(ctx, &ctx->res[i])
                 : ctx->status;

        if (status == NGX_HTTP_LINEGATE_LIMIT_NONE) {
            continue;
        }

        ngx_http_linegate_metrics_inc2(NGX_HTTP_LINEGATE_M_RATELIMIT,
            "zone", &zones[i]->name,
            "status", &ngx_http_linegate_limit_statuses[status]);
    }
}


/*
 * What one zone decided, for its own series: a zone whose key was empty
 * decided nothing, and when another zone rejected the request, a zone
 * that admitted it (its admission given back) passed it; a zone not
 * asked (another's rejection was cached) decided nothing either.
 */
static ngx_uint_t
ngx_http_linegate_limit_zone_status(ngx_http_linegate_limit_ctx_t *ctx,
    ngx_http_linegate_limit_result_t *res)
{
    if (!res->limited) {
        return NGX_HTTP_LINEGATE_LIMIT_NONE;
    }

    switch (ctx->status) {

    case NGX_HTTP_LINEGATE_LIMIT_REJECTED:
    case NGX_HTTP_LINEGATE_LIMIT_REJECTED_DRY_RUN:
        if (!res->known) {
            return NGX_HTTP_LINEGATE_LIMIT_NONE;
        }

        return res->allowed ? NGX_HTTP_LINEGATE_LIMIT_PASSED : ctx->status;

    case NGX_HTTP_LINEGATE_LIMIT_LOCAL_REJECTED:
        if (!res->known) {
            return NGX_HTTP_LINEGATE_LIMIT_NONE;
        }

        return res->allowed ? NGX_HTTP_LINEGATE_LIMIT_LOCAL_PASSED
                            : ctx->status;

    default:
        return ctx->status;
    }
}


/*
 * RateLimit-Policy, RateLimit and Retry-After on the answer, one line of
 * each, however often nginx sends the answer's header through the
 * filters: a filter after this one that refuses the answer
 * (not_modified's 412, image_filter's 415:
 * ngx_http_filter_finalize_request()) clears the headers and the module
 * contexts before the error page goes through every filter again, and
 * a range filter's 416 goes through them again with the headers kept,
 * also after an error_page 416 redirect whose location answers with
 * fields of its own. The answer's own fields of these names (a backend
 * behind error_page 429 = @name, linegate's own APIs): its
 * RateLimit-Policy and RateLimit items come first in the limiter's line,
 * as a client that combines the two lines reads them (RFC 9110, 5.3);
 * its Retry-After gives way to the limiter's on a refusal (the limiter
 * knows when the key passes), and stays when the limiter sends none.
 */

static ngx_int_t
ngx_http_linegate_limit_header_filter(ngx_http_request_t *r)
{
    u_char                             *p;
    size_t                              len;
    ngx_uint_t                          i, retry, limited, known;
    ngx_http_linegate_limit_ctx_t      *ctx;
    ngx_http_linegate_limit_fields_t    f;

    if (r != r->main) {
        return ngx_http_next_header_filter(r);
    }

    ctx = ngx_http_linegate_limit_get_ctx(r);

    if (ctx == NULL || !ctx->done) {
        return ngx_http_next_header_filter(r);
    }

    limited = 0;
    known = 0;

    if (ctx->llcf->headers) {
        for (i = 0; i < ctx->n; i++) {
            limited |= ctx->res[i].limited;
            known |= ctx->res[i].known;
        }
    }

    retry = (ctx->retry_after >= 0
             && ngx_http_linegate_limit_retry_status(r, ctx->llcf));

    if (!limited && !retry) {
        /*
         * nothing to add: headers off, or every key empty, and no
         * refusal or one an error_page made into another answer
         */
        return ngx_http_next_header_filter(r);
    }

    if (ngx_http_linegate_limit_fields(r, &f)) {
        /*
         * sent through the filters again: the lines of the first stand,
         * and take in those of the answer an error_page gave since
         */
        if (ngx_http_linegate_limit_fold(r, &f) != NGX_OK) {
            return NGX_ERROR;
        }

        return ngx_http_next_header_filter(r);
    }

    /* the answer's fields the limiter's lines replace or take in */
    if (!retry) {
        f.len[NGX_HTTP_LINEGATE_LIMIT_RETRY] = 0;
    }

    if (!limited) {
        f.len[NGX_HTTP_LINEGATE_LIMIT_POLICY] = 0;
    }

    if (!known) {
        f.len[NGX_HTTP_LINEGATE_LIMIT_STATE] = 0;
    }

    if (retry) {
        p = ngx_pnalloc(r->pool, NGX_INT_T_LEN);
        if (p == NULL) {
            return NGX_ERROR;
        }

        len = ngx_sprintf(p, "%i", ctx->retry_after) - p;

        if (ngx_http_linegate_limit_add_header(r,
                &ngx_http_linegate_limit_retry_name, p, len)
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    if (limited) {
        if (ngx_http_linegate_limit_ratelimit(r, ctx, &f) != NGX_OK) {
            return NGX_ERROR;
        }

    } else if (f.len[NGX_HTTP_LINEGATE_LIMIT_RETRY]) {
        /* the answer's Retry-After dropped */
        ngx_http_linegate_limit_merge(r, &f, NULL, NULL);
    }

    return ngx_http_next_header_filter(r);
}


/*
 * Retry-After goes with a refusal: RFC 9110 gives it a meaning on a 503
 * and a 3xx, RFC 6585 on a 429, and the location's linegate_limit_status
 * is the refusal its operator chose. An error_page that made the refusal
 * another answer (error_page 429 =200 /fallback) served the request: a
 * Retry-After there would tell the client to wait for what it has got.
 * The answer's status is the final one: ngx_http_send_header() sets
 * error_page's before the filters run.
 */
static ngx_uint_t
ngx_http_linegate_limit_retry_status(ngx_http_request_t *r,
    ngx_http_linegate_limit_loc_conf_t *llcf)
{
    ngx_uint_t  status;

    status = r->headers_out.status;

    return status == llcf->status
           || status == NGX_HTTP_TOO_MANY_REQUESTS
           || status == NGX_HTTP_SERVICE_UNAVAILABLE
           || status / 100 == 3;
}


/*
 * RateLimit-Policy and RateLimit of the zones that limit the request,
 * after the answer's own items where f counts some
 */
static ngx_int_t
ngx_http_linegate_limit_ratelimit(ngx_http_request_t *r,
    ngx_http_linegate_limit_ctx_t *ctx, ngx_http_linegate_limit_fields_t *f)
{
    u_char                             *policy, *state, *pp, *sp;
    u_char                             *buf[NGX_HTTP_LINEGATE_LIMIT_FIELDS];
    u_char                             *end[NGX_HTTP_LINEGATE_LIMIT_FIELDS];
    size_t                              len, plen, slen;
    time_t                              share;
    ngx_uint_t                          i, n, all;
    ngx_http_linegate_limit_result_t   *res;

    plen = f->len[NGX_HTTP_LINEGATE_LIMIT_POLICY];
    slen = f->len[NGX_HTTP_LINEGATE_LIMIT_STATE];

    /*
     * The local fallback enforces each zone at rate/share (its GCRA's
     * interval times share): the policy says so as the same q over
     * share times the window, whole numbers as the draft wants, and the
     * RateLimit state beside it counts against that share
     */
    share = 1;

    if (ctx->status == NGX_HTTP_LINEGATE_LIMIT_LOCAL_PASSED
        || ctx->status == NGX_HTTP_LINEGATE_LIMIT_LOCAL_REJECTED)
    {
        share = (time_t) ctx->llcf->share;
    }

    len = 0;
    all = (share == 1);

    for (i = 0; i < ctx->n; i++) {
        len += ctx->res[i].zone->name.len + 2 + 3 * NGX_INT64_LEN + 16;
        all &= ctx->res[i].limited;
    }

    state = ngx_pnalloc(r->pool, len + slen);
    if (state == NULL) {
        return NGX_ERROR;
    }

    if (all && plen == 0) {
        /* every zone limits the request: the policy made at configuration */
        policy = ctx->llcf->policy.data;
        pp = policy + ctx->llcf->policy.len;

    } else {
        policy = ngx_pnalloc(r->pool, len + plen + ctx->llcf->policy.len);
        if (policy == NULL) {
            return NGX_ERROR;
        }

        pp = policy;
    }

    sp = state;

    if (f->len[NGX_HTTP_LINEGATE_LIMIT_RETRY] || plen || slen) {
        /* the answer's own items first, its Retry-After dropped */
        buf[NGX_HTTP_LINEGATE_LIMIT_RETRY] = NULL;
        buf[NGX_HTTP_LINEGATE_LIMIT_POLICY] = policy;
        buf[NGX_HTTP_LINEGATE_LIMIT_STATE] = state;
        end[NGX_HTTP_LINEGATE_LIMIT_RETRY] = NULL;
        end[NGX_HTTP_LINEGATE_LIMIT_POLICY] = pp;
        end[NGX_HTTP_LINEGATE_LIMIT_STATE] = sp;

        ngx_http_linegate_limit_merge(r, f, buf, end);

        pp = end[NGX_HTTP_LINEGATE_LIMIT_POLICY];
        sp = end[NGX_HTTP_LINEGATE_LIMIT_STATE];
    }

    if (all && plen) {
        if (pp != policy) {
            pp = ngx_cpymem(pp, ", ", 2);
        }

        pp = ngx_cpymem(pp, ctx->llcf->policy.data, ctx->llcf->policy.len);
    }

    n = 0;

    for (i = 0; i < ctx->n; i++) {
        res = &ctx->res[i];

        if (!res->limited) {
            continue;
        }

        if (!all) {
            if (pp != policy) {
                pp = ngx_cpymem(pp, ", ", 2);
            }

            pp = ngx_sprintf(pp, "\"%V\";q=%ui;w=%T", &res->zone->name,
                             res->zone->rate, res->zone->unit * share);
        }

        if (!res->known) {
            continue;
        }

        if (sp != state) {
            sp = ngx_cpymem(sp, ", ", 2);
        }

        /* at most q: ngx_http_linegate_ratelimit_available() says why */
        sp = ngx_sprintf(sp, "\"%V\";r=%L;t=%L", &res->zone->name,
                         ngx_http_linegate_ratelimit_available(
                             res->remaining, res->zone->rate),
                         ngx_http_linegate_limit_next(ctx, res));
        n++;
    }

    if (pp != policy
        && ngx_http_linegate_limit_add_header(r,
               &ngx_http_linegate_limit_policy_name, policy, pp - policy)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (n
        && ngx_http_linegate_limit_add_header(r,
               &ngx_http_linegate_limit_state_name, state, sp - state)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* RateLimit's t: ngx_http_linegate_ratelimit_next() with the zone's GCRA */
static int64_t
ngx_http_linegate_limit_next(ngx_http_linegate_limit_ctx_t *ctx,
    ngx_http_linegate_limit_result_t *res)
{
    uint64_t    T;
    ngx_uint_t  burst;

    T = res->zone->interval;
    burst = res->zone->burst;

    if (ctx->status == NGX_HTTP_LINEGATE_LIMIT_LOCAL_PASSED
        || ctx->status == NGX_HTTP_LINEGATE_LIMIT_LOCAL_REJECTED)
    {
        /* the node's share: ngx_http_linegate_limit_local() */
        T *= ctx->llcf->share;
        burst /= ctx->llcf->share;
    }

    return ngx_http_linegate_ratelimit_next(res->remaining, res->reset_ms,
                                            res->retry_ms, burst + 1,
                                            res->zone->rate, T);
}


/*
 * The answer's fields of the limiter's names, before its lines are put,
 * in one read of a list of a few headers, nothing allocated: each
 * field's lines of the answer, each value and a ", ", counted in
 * f->len, and the limiter's own lines, told by the address of their
 * names, in f->own. 1: the limiter's lines are there already (the filter
 * runs again for an answer whose headers nginx kept; nginx clears the
 * list whole or not at all).
 */
static ngx_uint_t
ngx_http_linegate_limit_fields(ngx_http_request_t *r,
    ngx_http_linegate_limit_fields_t *f)
{
    ngx_uint_t        i, k, own, again;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    ngx_memzero(f, sizeof(ngx_http_linegate_limit_fields_t));
    again = 0;

    for (part = &r->headers_out.headers.part; part; part = part->next) {
        h = part->elts;

        for (i = 0; i < part->nelts; i++) {
            k = ngx_http_linegate_limit_field(&h[i], &own);

            if (k == NGX_HTTP_LINEGATE_LIMIT_FIELDS) {
                continue;
            }

            if (own) {
                f->own[k] = &h[i];
                again = 1;

            } else if (h[i].hash != 0) {
                f->len[k] += h[i].value.len + 2;
            }
        }
    }

    return again;
}


/*
 * The filter runs again for an answer whose headers nginx kept, the
 * limiter's lines of the first run among them: a range filter's 416,
 * and an error_page 416 location's answer after it (nginx clears no
 * header on an internal redirect). Lines of the limiter's names the
 * answer has that are not the limiter's are that location's (those of
 * the first answer were taken in or dropped then): as on a first run,
 * its RateLimit-Policy and RateLimit items come first in the limiter's
 * line and its Retry-After gives way to the limiter's; a field the
 * limiter did not send is the answer's alone. A second run decides
 * nothing: the lines the limiter sent stand.
 */
static ngx_int_t
ngx_http_linegate_limit_fold(ngx_http_request_t *r,
    ngx_http_linegate_limit_fields_t *f)
{
    u_char           *buf[NGX_HTTP_LINEGATE_LIMIT_FIELDS];
    u_char           *end[NGX_HTTP_LINEGATE_LIMIT_FIELDS];
    ngx_uint_t        k, fold;
    ngx_table_elt_t  *own;

    fold = 0;

    for (k = 0; k < NGX_HTTP_LINEGATE_LIMIT_FIELDS; k++) {
        own = f->own[k];
        buf[k] = NULL;

        if (own == NULL) {
            f->len[k] = 0;
        }

        if (f->len[k] == 0) {
            continue;
        }

        fold = 1;

        if (k == NGX_HTTP_LINEGATE_LIMIT_RETRY) {
            /* dropped */
            continue;
        }

        buf[k] = ngx_pnalloc(r->pool, f->len[k] + own->value.len);
        if (buf[k] == NULL) {
            return NGX_ERROR;
        }
    }

    if (!fold) {
        return NGX_OK;
    }

    ngx_memcpy(end, buf, sizeof(end));

    ngx_http_linegate_limit_merge(r, f, buf, end);

    for (k = 0; k < NGX_HTTP_LINEGATE_LIMIT_FIELDS; k++) {
        own = f->own[k];

        if (buf[k] == NULL) {
            continue;
        }

        if (end[k] != buf[k]) {
            end[k] = ngx_cpymem(end[k], ", ", 2);
        }

        end[k] = ngx_cpymem(end[k], own->value.data, own->value.len);

        own->value.data = buf[k];
        own->value.len = end[k] - buf[k];
    }

    return NGX_OK;
}


/*
 * The answer's lines of each field whose f->len is not 0 dropped, their
 * values copied into the limiter's line at end[k] (buf[k] its start)
 * where buf[k] is not NULL; the limiter's own lines left alone
 */
static void
ngx_http_linegate_limit_merge(ngx_http_request_t *r,
    ngx_http_linegate_limit_fields_t *f, u_char **buf, u_char **end)
{
    ngx_uint_t        i, k, own;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    for (part = &r->headers_out.headers.part; part; part = part->next) {
        h = part->elts;

        for (i = 0; i < part->nelts; i++) {
            k = ngx_http_linegate_limit_field(&h[i], &own);

            if (k == NGX_HTTP_LINEGATE_LIMIT_FIELDS || own
                || h[i].hash == 0 || f->len[k] == 0)
            {
                continue;
            }

            h[i].hash = 0;

            if (buf == NULL || buf[k] == NULL || h[i].value.len == 0) {
                continue;
            }

            if (end[k] != buf[k]) {
                end[k] = ngx_cpymem(end[k], ", ", 2);
            }

            end[k] = ngx_cpymem(end[k], h[i].value.data, h[i].value.len);
        }
    }
}


/*
 * Which of the limiter's fields h is (_field_e), _FIELDS for another one;
 * *own: the limiter's line, told by the address of its name
 */
static ngx_uint_t
ngx_http_linegate_limit_field(ngx_table_elt_t *h, ngx_uint_t *own)
{
    ngx_uint_t   k;
    ngx_str_t   *name;

    *own = 0;

    for (k = 0; k < NGX_HTTP_LINEGATE_LIMIT_FIELDS; k++) {
        name = ngx_http_linegate_limit_field_names[k];

        if (h->key.data == name->data) {
            *own = 1;
            return k;
        }

        if (h->key.len == name->len
            && ngx_strncasecmp(h->key.data, name->data, name->len) == 0)
        {
            return k;
        }
    }

    return NGX_HTTP_LINEGATE_LIMIT_FIELDS;
}


static ngx_int_t
ngx_http_linegate_limit_add_header(ngx_http_request_t *r, ngx_str_t *name,
    u_char *value, size_t len)
{
    ngx_table_elt_t  *h;

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    h->hash = 1;
    h->key = *name;
    h->value.data = value;
    h->value.len = len;
#if (nginx_version >= 1023000)
    h->next = NULL;
#endif

    return NGX_OK;
}


static ngx_int_t
ngx_http_linegate_limit_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_http_linegate_limit_ctx_t  *ctx;

    ctx = ngx_http_linegate_limit_get_ctx(r->main);

    if (ctx == NULL || ctx->status == NGX_HTTP_LINEGATE_LIMIT_NONE) {
        v->not_found = 1;
        return NGX_OK;
    }

    v->data = ngx_http_linegate_limit_statuses[ctx->status].data;
    v->len = ngx_http_linegate_limit_statuses[ctx->status].len;
    v->valid = 1;
    v->no_cacheable = 0;
    v->not_found = 0;

    return NGX_OK;
}


/* configuration */

static ngx_int_t
ngx_http_linegate_limit_add_variables(ngx_conf_t *cf)
{
    ngx_http_variable_t  *var;
    ngx_str_t             name = ngx_string("linegate_limit_status");

    var = ngx_http_add_variable(cf, &name, NGX_HTTP_VAR_NOCACHEABLE);
    if (var == NULL) {
        return NGX_ERROR;
    }

    var->get_handler = ngx_http_linegate_limit_variable;

    return NGX_OK;
}


static ngx_int_t
ngx_http_linegate_limit_init(ngx_conf_t *cf)
{
    ngx_str_t                             name = ngx_string("linegate_limit");
    ngx_array_t                          *a;
    ngx_http_handler_pt                  *h;
    ngx_http_core_main_conf_t            *cmcf;
    ngx_http_linegate_main_conf_t        *gmcf;
    ngx_http_linegate_limit_main_conf_t  *lmcf;
    ngx_http_linegate_limit_shm_t        *shm;

    lmcf = ngx_http_conf_get_module_main_conf(cf,
                                              ngx_http_linegate_limit_module);

    if (!lmcf->used) {
        /* loading the module changes nothing where it is not used */
        return NGX_OK;
    }

    gmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_linegate_module);

    if (!gmcf->redis_configured) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"linegate_limit\" needs \"linegate_redis\" in "
                           "the http block");
        return NGX_ERROR;
    }

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    if (lmcf->phases & (1 << NGX_HTTP_LINEGATE_LIMIT_PREACCESS)) {
        /*
         * First in the array, so it runs last in the phase (nginx runs a
         * phase's handlers from the last registered to the first): after
         * realip's location-level handler has set the client's address,
         * which a key of $remote_addr must see and which evaluating
         * $remote_addr before it would cache for the whole request; and
         * after limit_req and limit_conn, whose refusals then cost
         * nothing here. Pushed at the end, as a dynamic module's
         * postconfiguration comes after the static modules', it ran first.
         */
        a = &cmcf->phases[NGX_HTTP_PREACCESS_PHASE].handlers;

        h = ngx_array_push(a);
        if (h == NULL) {
            return NGX_ERROR;
        }

        h = a->elts;
        ngx_memmove(&h[1], &h[0], (a->nelts - 1) * sizeof(*h));
        h[0] = ngx_http_linegate_limit_preaccess_handler;
    }

    if (lmcf->phases & (1 << NGX_HTTP_LINEGATE_LIMIT_PRECONTENT)) {
        h = ngx_array_push(
                &cmcf->phases[NGX_HTTP_PRECONTENT_PHASE].handlers);
        if (h == NULL) {
            return NGX_ERROR;
        }

        *h = ngx_http_linegate_limit_precontent_handler;
    }

    ngx_http_next_header_filter = ngx_http_top_header_filter;
    ngx_http_top_header_filter = ngx_http_linegate_limit_header_filter;

    if (lmcf->local) {
        shm = ngx_pcalloc(cf->pool, sizeof(ngx_http_linegate_limit_shm_t));
        if (shm == NULL) {
            return NGX_ERROR;
        }

        lmcf->shm_zone = ngx_shared_memory_add(cf, &name,
                                           NGX_HTTP_LINEGATE_LIMIT_SHM_SIZE,
                                           &ngx_http_linegate_limit_module);
        if (lmcf->shm_zone == NULL) {
            return NGX_ERROR;
        }

        lmcf->shm_zone->init = ngx_http_linegate_limit_init_shm;
        lmcf->shm_zone->data = shm;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_linegate_limit_init_shm(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_http_linegate_limit_shm_t  *oshm = data;
    ngx_http_linegate_limit_shm_t  *shm;

    shm = shm_zone->data;

    if (oshm) {
        shm->sh = oshm->sh;
        shm->shpool = oshm->shpool;
        return NGX_OK;
    }

    shm->shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    if (shm_zone->shm.exists) {
        shm->sh = shm->shpool->data;
        return NGX_OK;
    }

    shm->sh = ngx_slab_alloc(shm->shpool,
                             sizeof(ngx_http_linegate_limit_shctx_t));
    if (shm->sh == NULL) {
        return NGX_ERROR;
    }

    shm->shpool->data = shm->sh;

    ngx_rbtree_init(&shm->sh->rbtree, &shm->sh->sentinel,
                    ngx_rbtree_insert_value);
    ngx_queue_init(&shm->sh->queue);

    shm->shpool->log_nomem = 0;

    return NGX_OK;
}


static void *
ngx_http_linegate_limit_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_linegate_limit_main_conf_t  *lmcf;

    lmcf = ngx_pcalloc(cf->pool,
                       sizeof(ngx_http_linegate_limit_main_conf_t));
    if (lmcf == NULL) {
        return NULL;
    }

    if (ngx_array_init(&lmcf->zones, cf->pool, 4,
                       sizeof(ngx_http_linegate_limit_zone_t *))
        != NGX_OK)
    {
        return NULL;
    }

    return lmcf;
}


static char *
ngx_http_linegate_limit_init_main_conf(ngx_conf_t *cf, void *conf)
{
    ngx_http_linegate_limit_main_conf_t  *lmcf = conf;

    ngx_uint_t                       i;
    ngx_http_linegate_limit_zone_t **zones;

    zones = lmcf->zones.elts;

    for (i = 0; i < lmcf->zones.nelts; i++) {
        if (!zones[i]->defined) {
            ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                          "linegate_limit zone \"%V\" is used in %s:%ui "
                          "but never defined by \"linegate_limit_zone\"",
                          &zones[i]->name, zones[i]->file, zones[i]->line);
            return NGX_CONF_ERROR;
        }
    }

    return NGX_CONF_OK;
}


static void *
ngx_http_linegate_limit_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_linegate_limit_loc_conf_t  *conf;

    conf = ngx_pcalloc(cf->pool, sizeof(ngx_http_linegate_limit_loc_conf_t));
    if (conf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     conf->limits = NULL;
     */

    conf->status = NGX_CONF_UNSET_UINT;
    conf->dry_run = NGX_CONF_UNSET;
    conf->headers = NGX_CONF_UNSET;
    conf->on_error = NGX_CONF_UNSET_UINT;
    conf->share = NGX_CONF_UNSET_UINT;
    conf->log_level = NGX_CONF_UNSET_UINT;
    conf->phase = NGX_CONF_UNSET_UINT;

    return conf;
}


static char *
ngx_http_linegate_limit_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child)
{
    ngx_http_linegate_limit_loc_conf_t *prev = parent;
    ngx_http_linegate_limit_loc_conf_t *conf = child;

    u_char                               *p;
    size_t                                len;
    ngx_uint_t                            i;
    ngx_http_linegate_limit_zone_t      **zones;
    ngx_http_linegate_limit_main_conf_t  *lmcf;

    /* as limit_req: a level with none inherits its parent's list */
    if (conf->limits == NULL) {
        conf->limits = prev->limits;
    }

    ngx_conf_merge_uint_value(conf->status, prev->status,
                              NGX_HTTP_TOO_MANY_REQUESTS);
    ngx_conf_merge_value(conf->dry_run, prev->dry_run, 0);
    ngx_conf_merge_value(conf->headers, prev->headers, 1);
    ngx_conf_merge_uint_value(conf->log_level, prev->log_level,
                              NGX_LOG_ERR);
    ngx_conf_merge_uint_value(conf->phase, prev->phase,
                              NGX_HTTP_LINEGATE_LIMIT_PREACCESS);

    if (conf->on_error == NGX_CONF_UNSET_UINT) {
        conf->on_error = (prev->on_error == NGX_CONF_UNSET_UINT)
                         ? NGX_HTTP_LINEGATE_LIMIT_ON_ERROR_OPEN
                         : prev->on_error;
        conf->share = prev->share;
    }

    if (conf->share == NGX_CONF_UNSET_UINT) {
        conf->share = 1;
    }

    /* RateLimit-Policy when every zone limits the request, made once */
    if (conf->limits != NULL && conf->limits->nelts) {
        zones = conf->limits->elts;
        len = 0;

        for (i = 0; i < conf->limits->nelts; i++) {
            len += zones[i]->name.len + 2 + 2 * NGX_INT64_LEN + 16;
        }

        p = ngx_pnalloc(cf->pool, len);
        if (p == NULL) {
            return NGX_CONF_ERROR;
        }

        conf->policy.data = p;

        for (i = 0; i < conf->limits->nelts; i++) {
            if (i) {
                p = ngx_cpymem(p, ", ", 2);
            }

            p = ngx_sprintf(p, "\"%V\";q=%ui;w=%T", &zones[i]->name,
                            zones[i]->rate, zones[i]->unit);
        }

        conf->policy.len = p - conf->policy.data;
    }

    lmcf = ngx_http_conf_get_module_main_conf(cf,
                                              ngx_http_linegate_limit_module);

    if (conf->on_error == NGX_HTTP_LINEGATE_LIMIT_ON_ERROR_LOCAL
        && conf->limits != NULL)
    {
        lmcf->local = 1;
    }

    /* the phase handlers that postconfiguration registers */
    if (conf->limits != NULL && conf->limits->nelts) {
        lmcf->phases |= (ngx_uint_t) 1 << conf->phase;
    }

    return NGX_CONF_OK;
}


static ngx_http_linegate_limit_zone_t *
ngx_http_linegate_limit_zone_get(ngx_conf_t *cf,
    ngx_http_linegate_limit_main_conf_t *lmcf, ngx_str_t *name)
{
    ngx_uint_t                        i;
    ngx_http_linegate_limit_zone_t  **zones, *zone, **zp;

    zones = lmcf->zones.elts;

    for (i = 0; i < lmcf->zones.nelts; i++) {
        if (zones[i]->name.len == name->len
            && ngx_strncmp(zones[i]->name.data, name->data, name->len) == 0)
        {
            return zones[i];
        }
    }

    zone = ngx_pcalloc(cf->pool, sizeof(ngx_http_linegate_limit_zone_t));
    if (zone == NULL) {
        return NULL;
    }

    zp = ngx_array_push(&lmcf->zones);
    if (zp == NULL) {
        return NULL;
    }

    zone->name = *name;
    zone->file = cf->conf_file->file.name.data;
    zone->line = cf->conf_file->line;
    *zp = zone;

    return zone;
}


/*
 * linegate_limit_zone name key=<value> rate=<n>r/s|m|h|d [lease=<time>]
 * [burst=<n>]
 */
static char *
ngx_http_linegate_limit_zone(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_linegate_limit_main_conf_t *lmcf = conf;

    u_char                            *p, *last;
    uint64_t                           period;
    ngx_int_t                          n;
    ngx_str_t                         *value, s;
    ngx_uint_t                         i, seen;
    ngx_http_linegate_limit_zone_t    *zone;
    ngx_http_compile_complex_value_t   ccv;
    static const char *const           names[] = { "key=", "rate=", "lease=",
                                                   "burst=" };

    value = cf->args->elts;

    if (!ngx_http_linegate_chars_are(value[1].data, value[1].len,
                                     NGX_HTTP_LINEGATE_CHARS_ID))
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid linegate_limit_zone name \"%V\": "
                           "letters, digits, \"_\" and \"-\" only",
                           &value[1]);
        return NGX_CONF_ERROR;
    }

    if (value[1].len == 0 || value[1].len > 64) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid linegate_limit_zone name \"%V\"",
                           &value[1]);
        return NGX_CONF_ERROR;
    }

    zone = ngx_http_linegate_limit_zone_get(cf, lmcf, &value[1]);
    if (zone == NULL) {
        return NGX_CONF_ERROR;
    }

    if (zone->defined) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "duplicate linegate_limit_zone \"%V\"",
                           &value[1]);
        return NGX_CONF_ERROR;
    }

    seen = 0;

    /* each parameter once (bit i of seen): a second one would silently win */
    for (i = 2; i < cf->args->nelts; i++) {

        switch (ngx_http_linegate_conf_param(cf, &value[i], names,
                                             sizeof(names) / sizeof(names[0]),
                                             &seen))
        {
        case 0: /* key= */
            s.data = value[i].data + 4;
            s.len = value[i].len - 4;

            ngx_memzero(&ccv, sizeof(ngx_http_compile_complex_value_t));
            ccv.cf = cf;
            ccv.value = &s;
            ccv.complex_value = &zone->key;

            if (ngx_http_compile_complex_value(&ccv) != NGX_OK) {
                return NGX_CONF_ERROR;
            }

            if (zone->key.lengths == NULL) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "linegate_limit_zone \"%V\": key \"%V\" "
                                   "has no variables (every request would "
                                   "share one count; for one limit of the "
                                   "whole fleet use a variable such as "
                                   "$server_name)", &value[1], &s);
                return NGX_CONF_ERROR;
            }

            continue;

        case 1: /* rate= */
            p = value[i].data + 5;
            last = value[i].data + value[i].len;

            if (last - p < 4 || ngx_strncmp(last - 3, "r/", 2) != 0) {
                goto bad_rate;
            }

            switch (last[-1]) {
            case 's':
                zone->unit = 1;
                break;
            case 'm':
                zone->unit = 60;
                break;
            case 'h':
                zone->unit = 3600;
                break;
            case 'd':
                zone->unit = 86400;
                break;
            default:
                goto bad_rate;
            }

            n = ngx_atoi(p, last - 3 - p);
            if (n <= 0
                || (ngx_uint_t) n > NGX_HTTP_LINEGATE_LIMIT_MAX_RATE
                                    * (ngx_uint_t) zone->unit)
            {
                goto bad_rate;
            }

            zone->rate = n;
            continue;

        case 2: /* lease= */
            if (ngx_http_linegate_lease_parse(cf, &value[i], &zone->lease)
                != NGX_CONF_OK)
            {
                return NGX_CONF_ERROR;
            }

            continue;

        case 3: /* burst= */
            n = ngx_http_linegate_conf_number(cf, &value[i], 6, 0, 100000000,
                                              "burst value", "");
            if (n == NGX_ERROR) {
                return NGX_CONF_ERROR;
            }

            zone->burst = n;
            continue;

        default: /* NGX_ERROR, NGX_DECLINED: logged */
            return NGX_CONF_ERROR;
        }
    }

    if ((seen & 3) != 3) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "linegate_limit_zone \"%V\" needs key= and rate=",
                           &value[1]);
        return NGX_CONF_ERROR;
    }

    /* T rounded up: the fleet never admits more than the rate */
    period = (uint64_t) zone->unit * 1000000;
    zone->interval = (period + zone->rate - 1) / zone->rate;

    /*
     * T is whole microseconds: a rate it cannot keep within 1% (above
     * 10,000 r/s T is a few us: 750000r/s would be kept as 500000) is
     * refused, not cut without a word
     */
    if ((zone->interval * zone->rate - period) * 100 > period) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "linegate_limit_zone \"%V\": rate %ui r/%s "
                           "cannot be kept: a request's interval is whole "
                           "microseconds, and %uL us is %uL r/s; use a rate "
                           "within 1%% of one such", &value[1], zone->rate,
                           zone->unit == 1 ? "s" : zone->unit == 60 ? "m"
                           : zone->unit == 3600 ? "h" : "d",
                           zone->interval,
                           (uint64_t) 1000000 / zone->interval);
        return NGX_CONF_ERROR;
    }

    /* a lease holds at most what the rate gives in the lease time */
    zone->lease_max = ngx_http_linegate_lease_max(zone->lease,
                                                  zone->interval);

    p = ngx_pnalloc(cf->pool, 2 * NGX_INT64_LEN);
    if (p == NULL) {
        return NGX_CONF_ERROR;
    }

    zone->interval_arg.data = p;
    zone->interval_arg.len = ngx_sprintf(p, "%uL", zone->interval) - p;
    p += NGX_INT64_LEN;
    zone->tolerance_arg.data = p;
    zone->tolerance_arg.len = ngx_sprintf(p, "%uL",
                                          zone->interval * zone->burst)
                              - p;
    zone->defined = 1;

    return NGX_CONF_OK;

bad_rate:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid rate \"%V\" (expected <n>r/s, r/m, r/h or "
                       "r/d, at most %ui r/s)", &value[i],
                       (ngx_uint_t) NGX_HTTP_LINEGATE_LIMIT_MAX_RATE);
    return NGX_CONF_ERROR;
}


/* linegate_limit zone=<name> */
static char *
ngx_http_linegate_limit(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_linegate_limit_loc_conf_t *llcf = conf;

    ngx_str_t                             *value, name;
    ngx_uint_t                             i;
    ngx_http_linegate_limit_zone_t        *zone, **zones, **zp;
    ngx_http_linegate_limit_main_conf_t   *lmcf;

    value = cf->args->elts;

    if (ngx_strncmp(value[1].data, "zone=", 5) != 0 || value[1].len == 5) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid parameter \"%V\" (expected zone=<name>)",
                           &value[1]);
        return NGX_CONF_ERROR;
    }

    name.data = value[1].data + 5;
    name.len = value[1].len - 5;

    lmcf = ngx_http_conf_get_module_main_conf(cf,
                                              ngx_http_linegate_limit_module);

    zone = ngx_http_linegate_limit_zone_get(cf, lmcf, &name);
    if (zone == NULL) {
        return NGX_CONF_ERROR;
    }

    if (llcf->limits == NULL) {
        llcf->limits = ngx_array_create(cf->pool,
                           NGX_HTTP_LINEGATE_LIMIT_MAX_ZONES,
                           sizeof(ngx_http_linegate_limit_zone_t *));
        if (llcf->limits == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    zones = llcf->limits->elts;

    for (i = 0; i < llcf->limits->nelts; i++) {
        if (zones[i] == zone) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "duplicate linegate_limit \"%V\"", &value[1]);
            return NGX_CONF_ERROR;
        }
    }

    if (llcf->limits->nelts == NGX_HTTP_LINEGATE_LIMIT_MAX_ZONES) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "too many linegate_limit zones at \"%V\" "
                           "(at most %d per level)", &value[1],
                           NGX_HTTP_LINEGATE_LIMIT_MAX_ZONES);
        return NGX_CONF_ERROR;
    }

    zp = ngx_array_push(llcf->limits);
    if (zp == NULL) {
        return NGX_CONF_ERROR;
    }

    *zp = zone;
    lmcf->used = 1;

    if (llcf->limits->nelts > 1) {
        /* each may admit a request the other rejects, and be refunded */
        zones = llcf->limits->elts;

        for (i = 0; i < llcf->limits->nelts; i++) {
            zones[i]->refundable = 1;
        }
    }

    return NGX_CONF_OK;
}


/* linegate_limit_on_error closed | open | local [share=<n>] */
static char *
ngx_http_linegate_limit_on_error(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_linegate_limit_loc_conf_t *llcf = conf;

    ngx_int_t   n;
    ngx_str_t  *value;
    ngx_uint_t  i;

    if (llcf->on_error != NGX_CONF_UNSET_UINT) {
        return "is duplicate";
    }

    value = cf->args->elts;

    for (i = 0; i < 3; i++) {
        if (value[1].len == ngx_http_linegate_limit_on_errors[i].len
            && ngx_strncmp(value[1].data,
                           ngx_http_linegate_limit_on_errors[i].data,
                           value[1].len) == 0)
        {
            break;
        }
    }

    if (i == 3) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid value \"%V\" (expected closed, open or "
                           "local)", &value[1]);
        return NGX_CONF_ERROR;
    }

    llcf->on_error = i;
    llcf->share = 1;

    if (cf->args->nelts == 2) {
        return NGX_CONF_OK;
    }

    if (i != NGX_HTTP_LINEGATE_LIMIT_ON_ERROR_LOCAL
        || ngx_strncmp(value[2].data, "share=", 6) != 0)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid parameter \"%V\" (only \"local\" takes "
                           "share=<nodes>)", &value[2]);
        return NGX_CONF_ERROR;
    }

    n = ngx_http_linegate_conf_number(cf, &value[2], 6, 1, 1000, "share",
                                      "the fleet's node count, ");
    if (n == NGX_ERROR) {
        return NGX_CONF_ERROR;
    }

    llcf->share = n;

    return NGX_CONF_OK;
}


static char *
ngx_http_linegate_limit_status(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_linegate_limit_loc_conf_t *llcf = conf;

    ngx_int_t   n;
    ngx_str_t  *value;

    if (llcf->status != NGX_CONF_UNSET_UINT) {
        return "is duplicate";
    }

    value = cf->args->elts;

    n = ngx_http_linegate_conf_number(cf, &value[1], 0, 400, 599,
                                      "linegate_limit_status",
                                      "a status from ");
    if (n == NGX_ERROR) {
        return NGX_CONF_ERROR;
    }

    llcf->status = n;

    return NGX_CONF_OK;
}
