
/*
 * Fuzz target: linegate_limit, the gateway's rate limiter, as a location
 * of up to 8 zones runs it for a few requests in turn
 * (src/ngx_http_linegate_limit.c and the leases of _lease.c, included):
 * the phase handler (each zone's key evaluated: empty, short and
 * printable, long, binary; the Redis key made of it, raw or its MD5),
 * the cached rejections and the leases, the call (a script call for one
 * limited zone, a pipeline of EVALSHA for several), its reply as the
 * handler reads it (lease grants, refusals, refunds), the fallback of
 * linegate_limit_on_error (open, closed, local: the shared memory of one
 * node, 16 states), the phase engine resumed with the decision, then the
 * header filter (Retry-After, RateLimit-Policy, RateLimit), twice, as
 * nginx may send an answer's header through the filters again (one line
 * of each all the same), and for a refusal once more on a 200 (what
 * error_page 429 =200 makes of it), and the $linegate_limit_status
 * variable.
 *
 * The zones' keys are what ngx_http_complex_value() would give, and the
 * Redis calls are recorded, not sent, and answered from the input as
 * src/ngx_http_linegate_redis.c hands replies over: an error reply, a
 * lost connection or a timeout (no reply left) is NULL; a pipeline's is
 * the array of its commands' replies, NULL for one not answered
 * (ngx_http_linegate_redis_pipeline_each).
 *
 * Input: 3 bytes, then the requests, then RESP bytes:
 *   byte 0  zones 1 + (b & 7); on_error (b >> 3) & 3 (open, closed,
 *           local, open); 0x20 dry run; 0x40 headers off; 0x80 the
 *           zones have lease=200ms
 *   byte 1  the location's zone i is (b + i) % 8 of the table below;
 *           0x08 every zone used with another elsewhere (refundable);
 *           0x10 Redis Cluster; 0x20 some other location falls back
 *           to local (the shared memory exists); 0x40 status 599
 *   byte 2  requests 1 + (b & 3)
 *   each request: a byte (0x01 Redis known down, 0x02 the call is not
 *           sent, (b >> 2) * 16 ms pass before it), then each zone's
 *           key: its length in a byte (0xff: in the next two, big
 *           endian) and its bytes
 *   then the replies of the calls, in turn (hiredis's reader builds
 *   them; a pipeline takes one per command).
 *
 * Invariants, re-checked here: the Redis key is lg:rl:{<zone>:h:<md5
 * hex>} whatever the key (never the key itself), an empty key is not
 * limited; each call's
 * arguments are the zone's; a reply the limiter reads is an array of 4
 * numbers per zone, each 0 to 2^53, anything else falls back as
 * linegate_limit_on_error says (open: passed, closed: 503 and
 * Retry-After 1, local: the node's share); a zone Redis refused is
 * never admitted but by a lease Redis granted before (no more admissions
 * without a Redis grant than the grants held beyond their own request),
 * a rejection answered from the worker's cache only for a key Redis
 * rejected in a zone used alone, no later than it said the key could
 * pass nor a second after; a refund only of a zone Redis admitted in a
 * request it rejected; Retry-After is sent exactly with a rejection, its
 * value the rounded-up seconds of the largest retry Redis gave, and not
 * when error_page made the refusal a 200;
 * RateLimit's r and t are never negative.
 */


#include "fuzz_ngx.h"
#include "ngx_http_linegate_redis.h"
#include "ngx_http_linegate_scripts.h"

#include <openssl/evp.h>


static ngx_int_t fuzz_complex_value(ngx_http_request_t *r,
    ngx_http_complex_value_t *val, ngx_str_t *value);
static ngx_uint_t fuzz_redis_connected(void);
static ngx_int_t fuzz_redis_script(ngx_http_request_t *r,
    ngx_http_linegate_script_id_e script, int nkeys,
    ngx_http_linegate_redis_args_t *args,
    ngx_http_linegate_redis_handler_pt handler);
static ngx_int_t fuzz_redis_pipeline(ngx_http_request_t *r,
    ngx_uint_t ncmds, ngx_http_linegate_redis_args_t *args,
    ngx_http_linegate_redis_handler_pt handler);

#define ngx_http_complex_value             fuzz_complex_value
#define ngx_http_linegate_redis_connected  fuzz_redis_connected
#define ngx_http_linegate_redis_script     fuzz_redis_script
#define ngx_http_linegate_redis_pipeline   fuzz_redis_pipeline
#define ngx_http_linegate_redis_pipeline_each  fuzz_redis_pipeline
#include "ngx_http_linegate_limit.c"
#include "ngx_http_linegate_lease.c"
#undef ngx_http_complex_value
#undef ngx_http_linegate_redis_connected
#undef ngx_http_linegate_redis_script
#undef ngx_http_linegate_redis_pipeline
#undef ngx_http_linegate_redis_pipeline_each


#define FUZZ_ZONES      NGX_HTTP_LINEGATE_LIMIT_MAX_ZONES
#define FUZZ_REQUESTS   4
#define FUZZ_RKEY_MAX   160
#define FUZZ_STATES     16
#define FUZZ_LEASE      200


/* the zones of the configuration: name, n r/unit, burst */
static struct {
    const char                      *name;
    ngx_uint_t                       rate;
    time_t                           unit;
    ngx_uint_t                       burst;
} fuzz_zone_conf[FUZZ_ZONES] = {
    { "api", 100, 1, 50 },
    { "day", 100000, 86400, 99999 },
    { "z", 1, 3600, 5 },
    { "burst0", 10, 1, 0 },
    { "a123456789b123456789c123456789d123456789e123456789f123456789g123",
      1000000, 1, 0 },
    { "d1", 1, 86400, 100000000 },
    { "m", 60, 60, 10 },
    { "h-2", 7, 3600, 3 }
};


static ngx_http_linegate_limit_zone_t       fuzz_zones[FUZZ_ZONES];
static ngx_http_linegate_limit_zone_t      *fuzz_zonep[FUZZ_ZONES];
static ngx_array_t                          fuzz_limits;
static ngx_http_linegate_limit_main_conf_t  fuzz_llmcf;
static ngx_http_linegate_limit_loc_conf_t   fuzz_llcf;
static u_char                               fuzz_policy[FUZZ_ZONES * 128];

static ngx_time_t                           fuzz_now;
static ngx_cycle_t                          fuzz_cycle;
volatile ngx_cycle_t                       *ngx_cycle = &fuzz_cycle;
/* the cycle's http configuration: the requests' (the local zone's) */
static void                                *fuzz_cycle_main_conf[2];
static ngx_http_conf_ctx_t                  fuzz_cycle_http;
static void                                *fuzz_cycle_conf_ctx[1];

/* the local fallback's shared memory: one node's, FUZZ_STATES states */
static ngx_http_linegate_limit_shctx_t      fuzz_sh;
static ngx_slab_pool_t                      fuzz_shpool;
static ngx_http_linegate_limit_shm_t        fuzz_shm;
static ngx_shm_zone_t                       fuzz_shm_zone;
static void                                *fuzz_states[FUZZ_STATES];

/* this request's keys, one per zone of the location */
static ngx_str_t                            fuzz_key[FUZZ_ZONES];

/* what the limiter asked of Redis in this request */
static struct {
    ngx_uint_t                          down;
    ngx_uint_t                          fail;
    ngx_uint_t                          calls;
    ngx_uint_t                          ncmds;
    ngx_http_linegate_redis_handler_pt  handler;
    int64_t                             want;
    ngx_uint_t                          refunds;
    ngx_str_t                           refunded[FUZZ_ZONES];
} fuzz_redis;

/* the Redis keys of the request's limited zones, in zone order */
static u_char      fuzz_rkey[FUZZ_ZONES][FUZZ_RKEY_MAX];
static size_t      fuzz_rkey_len[FUZZ_ZONES];
static ngx_uint_t  fuzz_limited[FUZZ_ZONES];

/*
 * The keys of this input, and what its Redis said of each: its grants
 * held beyond their request (a lease's), its last rejection (when sent,
 * and the retry it gave)
 */
typedef struct {
    u_char          key[FUZZ_RKEY_MAX];
    size_t          len;
    int64_t         credit;
    ngx_uint_t      rejected;
    ngx_msec_t      sent;
    int64_t         retry;
} fuzz_seen_t;

static fuzz_seen_t  fuzz_seen[FUZZ_REQUESTS * FUZZ_ZONES];
static ngx_uint_t   fuzz_nseen;

static ngx_uint_t   fuzz_posted;


/* the shared memory: one process, no lock; an rbtree as a plain BST */

void
ngx_shmtx_lock(ngx_shmtx_t *mtx)
{
}


void
ngx_shmtx_unlock(ngx_shmtx_t *mtx)
{
}


void *
ngx_slab_alloc_locked(ngx_slab_pool_t *pool, size_t size)
{
    ngx_uint_t  i;

    if (pool != &fuzz_shpool) {
        __builtin_trap();
    }

    for (i = 0; i < FUZZ_STATES; i++) {
        if (fuzz_states[i] == NULL) {
            fuzz_states[i] = malloc(size);
            if (fuzz_states[i] == NULL) {
                abort();
            }

            return fuzz_states[i];
        }
    }

    /* full */
    return NULL;
}


void
ngx_slab_free_locked(ngx_slab_pool_t *pool, void *p)
{
    ngx_uint_t  i;

    for (i = 0; i < FUZZ_STATES; i++) {
        if (fuzz_states[i] == p) {
            free(p);
            fuzz_states[i] = NULL;
            return;
        }
    }

    /* not a state of this memory */
    __builtin_trap();
}


/*
 * nginx's ordering (ngx_rbtree_insert_value: less to the left), not its
 * balancing: the limiter's lookups walk any binary search tree alike
 */
void
ngx_rbtree_insert(ngx_rbtree_t *tree, ngx_rbtree_node_t *node)
{
    ngx_rbtree_node_t  **p, *parent, *sentinel;

    sentinel = tree->sentinel;
    node->left = sentinel;
    node->right = sentinel;

    if (tree->root == sentinel) {
        node->parent = NULL;
        tree->root = node;
        return;
    }

    parent = tree->root;

    for ( ;; ) {
        p = (node->key < parent->key) ? &parent->left : &parent->right;

        if (*p == sentinel) {
            break;
        }

        parent = *p;
    }

    *p = node;
    node->parent = parent;
}


static void
fuzz_rbtree_replace(ngx_rbtree_t *tree, ngx_rbtree_node_t *node,
    ngx_rbtree_node_t *by)
{
    if (node == tree->root) {
        tree->root = by;

    } else if (node == node->parent->left) {
        node->parent->left = by;

    } else {
        node->parent->right = by;
    }

    if (by != tree->sentinel) {
        by->parent = node->parent;
    }
}


void
ngx_rbtree_delete(ngx_rbtree_t *tree, ngx_rbtree_node_t *node)
{
    ngx_rbtree_node_t  *m, *sentinel;

    sentinel = tree->sentinel;

    if (node->left == sentinel) {
        fuzz_rbtree_replace(tree, node, node->right);

    } else if (node->right == sentinel) {
        fuzz_rbtree_replace(tree, node, node->left);

    } else {
        for (m = node->right; m->left != sentinel; m = m->left) {
            /* void */
        }

        if (m != node->right) {
            fuzz_rbtree_replace(tree, m, m->right);
            m->right = node->right;
            m->right->parent = m;
        }

        fuzz_rbtree_replace(tree, node, m);
        m->left = node->left;
        m->left->parent = m;
    }

    node->left = NULL;
    node->right = NULL;
    node->parent = NULL;
}


/* the phase engine: the limiter posts the request once it decided */
ngx_int_t
ngx_http_post_request(ngx_http_request_t *r, ngx_http_posted_request_t *pr)
{
    fuzz_posted++;

    return NGX_OK;
}


/* the zone's key, as its variables give it */
static ngx_int_t
fuzz_complex_value(ngx_http_request_t *r, ngx_http_complex_value_t *val,
    ngx_str_t *value)
{
    ngx_uint_t  i;

    for (i = 0; i < fuzz_limits.nelts; i++) {
        if (val == &fuzz_zonep[i]->key) {
            *value = fuzz_key[i];
            return NGX_OK;
        }
    }

    __builtin_trap();
}


static ngx_uint_t
fuzz_redis_connected(void)
{
    return !fuzz_redis.down;
}


static int
fuzz_arg_is(ngx_http_linegate_redis_args_t *a, int i, const void *s,
    size_t len)
{
    return a->argvlen[i] == len && memcmp(a->argv[i], s, len) == 0;
}


static int
fuzz_arg_cstr(ngx_http_linegate_redis_args_t *a, int i, const char *s)
{
    return fuzz_arg_is(a, i, s, strlen(s));
}


/* a decimal integer argument: its value, or -1 */
static int64_t
fuzz_arg_int(ngx_http_linegate_redis_args_t *a, int i)
{
    size_t   k;
    int64_t  v;

    if (a->argvlen[i] == 0 || a->argvlen[i] > 18) {
        return -1;
    }

    v = 0;

    for (k = 0; k < a->argvlen[i]; k++) {
        if (a->argv[i][k] < '0' || a->argv[i][k] > '9') {
            return -1;
        }

        v = v * 10 + (a->argv[i][k] - '0');
    }

    return v;
}


/* the index of the zone whose Redis key this is (limited), or -1 */
static int
fuzz_rkey_zone(const void *key, size_t len)
{
    ngx_uint_t  i;

    for (i = 0; i < fuzz_llcf.limits->nelts; i++) {
        if (fuzz_limited[i] && fuzz_rkey_len[i] == len
            && memcmp(fuzz_rkey[i], key, len) == 0)
        {
            return (int) i;
        }
    }

    return -1;
}


/* key, interval, tolerance of zone i at args[from...] */
static void
fuzz_check_zone_args(ngx_http_linegate_redis_args_t *a, int from,
    ngx_uint_t i)
{
    ngx_http_linegate_limit_zone_t  *z;

    z = fuzz_zonep[i];

    if (!fuzz_arg_is(a, from, fuzz_rkey[i], fuzz_rkey_len[i])
        || !fuzz_arg_is(a, from + 1, z->interval_arg.data,
                        z->interval_arg.len)
        || !fuzz_arg_is(a, from + 2, z->tolerance_arg.data,
                        z->tolerance_arg.len))
    {
        __builtin_trap();
    }
}


static ngx_int_t
fuzz_redis_script(ngx_http_request_t *r,
    ngx_http_linegate_script_id_e script, int nkeys,
    ngx_http_linegate_redis_args_t *args,
    ngx_http_linegate_redis_handler_pt handler)
{
    int                              z;
    ngx_uint_t                       i, n;
    ngx_http_linegate_limit_zone_t  *zone;

    if (nkeys != 1 || args->argc < 3) {
        __builtin_trap();
    }

    z = fuzz_rkey_zone(args->argv[0], args->argvlen[0]);

    if (z < 0) {
        __builtin_trap();
    }

    zone = fuzz_zonep[z];

    if (script == NGX_HTTP_LINEGATE_SCRIPT_RL_REFUND) {
        /* fire and forget, once per zone */
        if (handler != NULL || args->argc != 3
            || !fuzz_arg_is(args, 1, zone->interval_arg.data,
                            zone->interval_arg.len)
            || fuzz_arg_int(args, 2) < 0
            || fuzz_redis.refunds == FUZZ_ZONES)
        {
            __builtin_trap();
        }

        for (i = 0; i < fuzz_redis.refunds; i++) {
            if (fuzz_redis.refunded[i].data == (u_char *) args->argv[0]) {
                __builtin_trap();
            }
        }

        fuzz_redis.refunded[fuzz_redis.refunds].data =
                                                  (u_char *) args->argv[0];
        fuzz_redis.refunded[fuzz_redis.refunds++].len = args->argvlen[0];

        return NGX_OK;
    }

    /* the decision of the one limited zone */
    for (i = 0, n = 0; i < fuzz_llcf.limits->nelts; i++) {
        n += fuzz_limited[i];
    }

    if (script != NGX_HTTP_LINEGATE_SCRIPT_RL_GCRA || handler == NULL
        || n != 1 || args->argc != 5 || fuzz_redis.calls)
    {
        __builtin_trap();
    }

    fuzz_check_zone_args(args, 0, z);

    fuzz_redis.want = fuzz_arg_int(args, 3);

    /* 1, or a lease: at most what the rate gives in the lease time */
    if (fuzz_redis.want < 1
        || (fuzz_redis.want > 1
            && (zone->lease == 0 || fuzz_llcf.dry_run
                || (ngx_uint_t) fuzz_redis.want > zone->lease_max))
        || fuzz_arg_int(args, 4) < 0)
    {
        __builtin_trap();
    }

    if (fuzz_redis.fail) {
        return NGX_ERROR;
    }

    fuzz_redis.calls++;
    fuzz_redis.ncmds = 1;
    fuzz_redis.handler = handler;

    return NGX_OK;
}


static ngx_int_t
fuzz_redis_pipeline(ngx_http_request_t *r, ngx_uint_t ncmds,
    ngx_http_linegate_redis_args_t *args,
    ngx_http_linegate_redis_handler_pt handler)
{
    ngx_str_t   *sha;
    ngx_uint_t   i, k;

    sha = ngx_http_linegate_script_sha(NGX_HTTP_LINEGATE_SCRIPT_RL_GCRA);

    if (handler == NULL || ncmds < 2 || ncmds > FUZZ_ZONES
        || fuzz_redis.calls)
    {
        __builtin_trap();
    }

    /* one EVALSHA per limited zone, in the zones' order */
    for (i = 0, k = 0; i < fuzz_llcf.limits->nelts; i++) {
        if (!fuzz_limited[i]) {
            continue;
        }

        if (k == ncmds || args[k].argc != 8
            || !fuzz_arg_cstr(&args[k], 0, "EVALSHA")
            || !fuzz_arg_is(&args[k], 1, sha->data, sha->len)
            || !fuzz_arg_cstr(&args[k], 2, "1")
            || !fuzz_arg_cstr(&args[k], 6, "1")
            || fuzz_arg_int(&args[k], 7) < 0)
        {
            __builtin_trap();
        }

        fuzz_check_zone_args(&args[k], 3, i);
        k++;
    }

    if (k != ncmds) {
        __builtin_trap();
    }

    if (fuzz_redis.fail) {
        return NGX_ERROR;
    }

    fuzz_redis.calls++;
    fuzz_redis.ncmds = ncmds;
    fuzz_redis.want = 1;
    fuzz_redis.handler = handler;

    return NGX_OK;
}


static void
fuzz_init(void)
{
    u_char                          *p;
    ngx_uint_t                       i;
    ngx_http_linegate_limit_zone_t  *z;

    if (ngx_http_linegate_scripts_init(&fuzz_cycle.new_log) != NGX_OK) {
        abort();
    }

    fuzz_cycle.log = &fuzz_cycle.new_log;
    fuzz_cycle.new_log.log_level = NGX_LOG_DEBUG;

    /* r->ctx[1], r->main_conf[1], r->loc_conf[1] */
    ngx_http_linegate_limit_module.ctx_index = 1;

    /* ngx_cycle's (ngx_http_module's index: 0, as its stub) */
    fuzz_cycle_main_conf[0] = &fuzz_lmcf;
    fuzz_cycle_main_conf[1] = &fuzz_llmcf;
    fuzz_cycle_http.main_conf = fuzz_cycle_main_conf;
    fuzz_cycle_conf_ctx[0] = &fuzz_cycle_http;
    fuzz_cycle.conf_ctx = (void ****) fuzz_cycle_conf_ctx;

    /* as linegate_limit_zone makes them */
    for (i = 0; i < FUZZ_ZONES; i++) {
        z = &fuzz_zones[i];

        z->name.data = (u_char *) fuzz_zone_conf[i].name;
        z->name.len = strlen(fuzz_zone_conf[i].name);
        z->rate = fuzz_zone_conf[i].rate;
        z->unit = fuzz_zone_conf[i].unit;
        z->burst = fuzz_zone_conf[i].burst;
        z->interval = ((uint64_t) z->unit * 1000000 + z->rate - 1) / z->rate;
        z->defined = 1;

        p = malloc(2 * NGX_INT64_LEN);
        if (p == NULL) {
            abort();
        }

        z->interval_arg.data = p;
        z->interval_arg.len = ngx_sprintf(p, "%uL", z->interval) - p;
        p += NGX_INT64_LEN;
        z->tolerance_arg.data = p;
        z->tolerance_arg.len = ngx_sprintf(p, "%uL", z->interval * z->burst)
                               - p;
    }
}


/* the location of this input, as the configuration would merge it */
static void
fuzz_configure(const uint8_t *cfg)
{
    u_char                          *p;
    ngx_uint_t                       i, n, on_error;
    ngx_http_linegate_limit_zone_t  *z;

    n = 1 + (cfg[0] & 7);
    on_error = (cfg[0] >> 3) & 3;

    for (i = 0; i < n; i++) {
        z = &fuzz_zones[(cfg[1] + i) % FUZZ_ZONES];
        fuzz_zonep[i] = z;

        z->lease = (cfg[0] & 0x80) ? FUZZ_LEASE : 0;
        z->lease_max = ngx_http_linegate_lease_max(z->lease, z->interval);
        z->refundable = (n > 1 || (cfg[1] & 0x08)) ? 1 : 0;
    }

    fuzz_limits.elts = fuzz_zonep;
    fuzz_limits.nelts = n;
    fuzz_limits.size = sizeof(ngx_http_linegate_limit_zone_t *);
    fuzz_limits.nalloc = FUZZ_ZONES;

    ngx_memzero(&fuzz_llcf, sizeof(fuzz_llcf));
    fuzz_llcf.limits = &fuzz_limits;
    fuzz_llcf.status = (cfg[1] & 0x40) ? 599 : NGX_HTTP_TOO_MANY_REQUESTS;
    fuzz_llcf.dry_run = (cfg[0] & 0x20) ? 1 : 0;
    fuzz_llcf.headers = (cfg[0] & 0x40) ? 0 : 1;
    fuzz_llcf.on_error = (on_error == 3)
                         ? NGX_HTTP_LINEGATE_LIMIT_ON_ERROR_OPEN : on_error;
    fuzz_llcf.share = 1 + cfg[2] % 3;

    p = fuzz_policy;

    for (i = 0; i < n; i++) {
        if (i) {
            p = ngx_cpymem(p, ", ", 2);
        }

        p = ngx_sprintf(p, "\"%V\";q=%ui;w=%T", &fuzz_zonep[i]->name,
                        fuzz_zonep[i]->rate, fuzz_zonep[i]->unit);
    }

    fuzz_llcf.policy.data = fuzz_policy;
    fuzz_llcf.policy.len = p - fuzz_policy;

    /* the shared memory, fresh: this input's node */
    ngx_memzero(&fuzz_llmcf, sizeof(fuzz_llmcf));
    fuzz_llmcf.used = 1;

    if (fuzz_llcf.on_error == NGX_HTTP_LINEGATE_LIMIT_ON_ERROR_LOCAL
        || (cfg[1] & 0x20))
    {
        ngx_memzero(&fuzz_sh, sizeof(fuzz_sh));
        ngx_rbtree_init(&fuzz_sh.rbtree, &fuzz_sh.sentinel,
                        ngx_rbtree_insert_value);
        ngx_queue_init(&fuzz_sh.queue);
        fuzz_shm.sh = &fuzz_sh;
        fuzz_shm.shpool = &fuzz_shpool;
        fuzz_shm_zone.data = &fuzz_shm;
        fuzz_llmcf.local = 1;
        fuzz_llmcf.shm_zone = &fuzz_shm_zone;
    }

    fuzz_lmcf.redis_cluster = (cfg[1] & 0x10) ? 1 : 0;
    fuzz_lmcf.redis_command_timeout = 1000;
}


/* lg:rl:{<zone>:h:<md5 hex of the key>}, whatever the key */
static void
fuzz_redis_key(ngx_uint_t i)
{
    u_char          *p, md[16];
    ngx_str_t       *v, *name;
    unsigned int     mdlen;

    v = &fuzz_key[i];
    name = &fuzz_zonep[i]->name;

    p = ngx_cpymem(fuzz_rkey[i], "lg:rl:{", 7);
    p = ngx_cpymem(p, name->data, name->len);

    if (EVP_Digest(v->data, v->len, md, &mdlen, EVP_md5(), NULL) != 1) {
        abort();
    }

    p = ngx_cpymem(p, ":h:", 3);
    p = ngx_hex_dump(p, md, 16);

    *p++ = '}';
    fuzz_rkey_len[i] = p - fuzz_rkey[i];
}


static fuzz_seen_t *
fuzz_seen_of(ngx_uint_t i)
{
    ngx_uint_t    k;
    fuzz_seen_t  *s;

    for (k = 0; k < fuzz_nseen; k++) {
        s = &fuzz_seen[k];

        if (s->len == fuzz_rkey_len[i]
            && memcmp(s->key, fuzz_rkey[i], s->len) == 0)
        {
            return s;
        }
    }

    if (fuzz_nseen == FUZZ_REQUESTS * FUZZ_ZONES) {
        __builtin_trap();
    }

    s = &fuzz_seen[fuzz_nseen++];
    ngx_memzero(s, sizeof(fuzz_seen_t));
    ngx_memcpy(s->key, fuzz_rkey[i], fuzz_rkey_len[i]);
    s->len = fuzz_rkey_len[i];

    return s;
}


/* a count of the reply as the limiter may read it: an integer, digits */
static int
fuzz_int(redisReply *e, int64_t *v)
{
    size_t  k;

    if (e->type == REDIS_REPLY_INTEGER) {
        *v = e->integer;
        return 1;
    }

    if (e->type != REDIS_REPLY_STRING || e->len == 0) {
        return 0;
    }

    *v = 0;

    for (k = 0; k < e->len; k++) {
        if (e->str[k] < '0' || e->str[k] > '9'
            || *v > (INT64_MAX - (e->str[k] - '0')) / 10)
        {
            return 0;
        }

        *v = *v * 10 + (e->str[k] - '0');
    }

    return 1;
}


/*
 * A zone's reply as the limiter must read it: 4 counts, each 0 to 2^53
 * (rl_gcra's numbers are Lua's), or 0
 */
static int
fuzz_zone_reply(redisReply *e, int64_t *v)
{
    ngx_uint_t  k;

    if (e->type != REDIS_REPLY_ARRAY || e->elements != 4) {
        return 0;
    }

    for (k = 0; k < 4; k++) {
        if (!fuzz_int(e->element[k], &v[k]) || v[k] < 0
            || v[k] > ((int64_t) 1 << 53))
        {
            return 0;
        }
    }

    return 1;
}


/*
 * The reply's values as read, each zone's (ok[i]): 1 when every zone's
 * was, and the limiter must decide on them
 */
static int
fuzz_read_reply(redisReply *reply, int64_t v[][4], ngx_uint_t *ok)
{
    int         all;
    ngx_uint_t  i, j;

    all = 1;

    for (i = 0, j = 0; i < fuzz_llcf.limits->nelts; i++) {
        if (!fuzz_limited[i]) {
            continue;
        }

        ok[i] = (j < reply->elements && reply->element[j] != NULL
                 && fuzz_zone_reply(reply->element[j], v[i]));
        all = all && ok[i];
        j++;
    }

    return all;
}


/* a header's value as digits: its value, or -1 */
static int64_t
fuzz_digits(u_char *p, size_t len)
{
    size_t   k;
    int64_t  v;

    if (len == 0 || len > 19) {
        return -1;
    }

    for (k = 0, v = 0; k < len; k++) {
        if (p[k] < '0' || p[k] > '9'
            || v > (INT64_MAX - (p[k] - '0')) / 10)
        {
            return -1;
        }

        v = v * 10 + (p[k] - '0');
    }

    return v;
}


/* RateLimit: "name";r=<digits>;t=<digits>, ", " between, known zones */
static void
fuzz_check_state(ngx_http_linegate_limit_ctx_t *ctx, ngx_str_t *h)
{
    u_char      *p, *last, *q;
    ngx_uint_t   i;
    ngx_str_t   *name;

    p = h->data;
    last = p + h->len;

    for (i = 0; i < ctx->n; i++) {
        if (!ctx->res[i].limited || !ctx->res[i].known) {
            continue;
        }

        name = &ctx->res[i].zone->name;

        if (p != h->data) {
            if (last - p < 2 || p[0] != ',' || p[1] != ' ') {
                __builtin_trap();
            }

            p += 2;
        }

        if ((size_t) (last - p) < name->len + 5 || *p != '"'
            || memcmp(p + 1, name->data, name->len) != 0
            || memcmp(p + 1 + name->len, "\";r=", 4) != 0)
        {
            __builtin_trap();
        }

        p += name->len + 5;

        for (q = p; q < last && *q != ';'; q++) { /* void */ }

        if (fuzz_digits(p, q - p) < 0 || last - q < 3
            || memcmp(q, ";t=", 3) != 0)
        {
            __builtin_trap();
        }

        p = q + 3;

        for (q = p; q < last && *q != ','; q++) { /* void */ }

        if (fuzz_digits(p, q - p) < 0) {
            __builtin_trap();
        }

        p = q;
    }

    if (p != last) {
        __builtin_trap();
    }
}


/* the headers of the answer; Retry-After's value, or -1 */
static int64_t
fuzz_headers(ngx_http_request_t *r, ngx_http_linegate_limit_ctx_t *ctx)
{
    int64_t           retry;
    ngx_uint_t        i, n, policy, state;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    retry = -1;
    policy = 0;
    state = 0;

    for (part = &r->headers_out.headers.part; part; part = part->next) {
        h = part->elts;

        for (i = 0; i < part->nelts; i++) {
            if (h[i].hash == 0) {
                /* dropped */
                continue;
            }

            if (h[i].key.len == 11
                && memcmp(h[i].key.data, "Retry-After", 11) == 0)
            {
                if (retry >= 0) {
                    /* a second Retry-After */
                    __builtin_trap();
                }

                retry = fuzz_digits(h[i].value.data, h[i].value.len);

                if (retry < 0) {
                    __builtin_trap();
                }

            } else if (h[i].key.len == 16
                       && memcmp(h[i].key.data, "RateLimit-Policy", 16)
                          == 0)
            {
                policy++;

            } else if (h[i].key.len == 9
                       && memcmp(h[i].key.data, "RateLimit", 9) == 0)
            {
                fuzz_check_state(ctx, &h[i].value);
                state++;

            } else {
                __builtin_trap();
            }
        }
    }

    for (i = 0, n = 0; i < ctx->n; i++) {
        n += ctx->res[i].limited;
    }

    if (policy != (fuzz_llcf.headers && n) || state > fuzz_llcf.headers) {
        __builtin_trap();
    }

    return retry;
}


/* a request's decision made without Redis: a cached rejection */
static void
fuzz_check_cached(ngx_http_linegate_limit_ctx_t *ctx)
{
    int64_t       left, most;
    ngx_uint_t    i;
    fuzz_seen_t  *s;

    most = -1;

    for (i = 0; i < ctx->n; i++) {
        if (!fuzz_limited[i]) {
            continue;
        }

        s = fuzz_seen_of(i);

        /* never after Redis said it passes, nor past a second of trust */
        left = (int64_t) (s->sent + s->retry) - (int64_t) ngx_current_msec;

        if (s->rejected && !fuzz_zonep[i]->refundable && left > 0
            && ngx_current_msec < s->sent + 1000)
        {
            most = ngx_max(most, left);
        }
    }

    if (most < 0 || ctx->retry_after < 0
        || ctx->retry_after > (most + 999) / 1000)
    {
        __builtin_trap();
    }
}


/* a key's length: a byte (0xff: the next two, big endian) */
static size_t
fuzz_key_len(const u_char **in, const u_char *last)
{
    size_t  len;

    if (*in == last) {
        return 0;
    }

    len = *(*in)++;

    if (len == 0xff && last - *in >= 2) {
        len = (size_t) (*in)[0] << 8 | (*in)[1];
        *in += 2;
    }

    return ngx_min(len, (size_t) (last - *in));
}


/* past a request: its byte and its keys */
static const u_char *
fuzz_skip_request(const u_char *in, const u_char *last)
{
    ngx_uint_t  i;

    if (in < last) {
        in++;
    }

    for (i = 0; i < fuzz_llcf.limits->nelts; i++) {
        in += fuzz_key_len(&in, last);
    }

    return in;
}


static ngx_int_t
fuzz_next_header_filter(ngx_http_request_t *r)
{
    return NGX_OK;
}


/* one request of the location, as it goes */
typedef struct {
    ngx_http_request_t             *r;
    ngx_http_linegate_limit_ctx_t  *ctx;
    ngx_uint_t                      n;          /* zones limited */
    ngx_uint_t                      one;        /* the one, when n is 1 */
    ngx_int_t                       rc;
    redisReply                     *el[FUZZ_ZONES];
    ngx_uint_t                      nel;
    ngx_uint_t                      lost;       /* answered NULL */
    ngx_uint_t                      got;        /* v read, as it must be */
    ngx_uint_t                      ok[FUZZ_ZONES];  /* v[i] read */
    int64_t                         v[FUZZ_ZONES][4];
    ngx_uint_t                      refused;    /* some zone by Redis */
    int64_t                         retry;      /* the largest refused */
    ngx_uint_t                      lease;      /* a lease's decision */
    void                           *ctxs[2];
    void                           *main_conf[2];
    void                           *loc_conf[2];
} fuzz_req_t;


/* the request: its byte (time, Redis), its keys and their Redis keys */
static void
fuzz_request_start(fuzz_req_t *q, const u_char **in, const u_char *last)
{
    size_t               len;
    ngx_uint_t           i, flags, step;
    ngx_http_request_t  *r;

    flags = (*in < last) ? *(*in)++ : 0;

    r = fuzz_request();
    q->r = r;

    q->ctxs[0] = &fuzz_ctx;
    r->ctx = q->ctxs;
    q->main_conf[0] = &fuzz_lmcf;
    q->main_conf[1] = &fuzz_llmcf;
    r->main_conf = q->main_conf;
    q->loc_conf[1] = &fuzz_llcf;
    r->loc_conf = q->loc_conf;

    if (ngx_list_init(&r->headers_out.headers, r->pool, 2,
                      sizeof(ngx_table_elt_t))
        != NGX_OK)
    {
        abort();
    }

    /* time passes, the same for nginx's two clocks */
    step = (flags >> 2) * 16;
    ngx_current_msec += step;
    fuzz_now.sec += (fuzz_now.msec + step) / 1000;
    fuzz_now.msec = (fuzz_now.msec + step) % 1000;

    ngx_memzero(&fuzz_redis, sizeof(fuzz_redis));
    fuzz_redis.down = flags & 0x01;
    fuzz_redis.fail = flags & 0x02;

    for (i = 0; i < fuzz_llcf.limits->nelts; i++) {
        len = fuzz_key_len(in, last);

        fuzz_key[i].data = fuzz_strdup(r, *in, len);
        fuzz_key[i].len = len;
        *in += len;

        fuzz_limited[i] = (len != 0);

        if (len) {
            fuzz_redis_key(i);
            q->one = i;
            q->n++;

            /* every key of the input: forgotten by the worker after it */
            (void) fuzz_seen_of(i);
        }
    }
}


/* the call answered from the stream, as redis.c hands replies over */
static void
fuzz_request_reply(fuzz_req_t *q, void *stream)
{
    ngx_uint_t   j;
    redisReply  *reply, array;

    q->nel = fuzz_redis.ncmds;

    for (j = 0; j < q->nel; j++) {
        q->el[j] = fuzz_redis_take(stream);
    }

    for (j = 0; j < q->nel; j++) {
        if (q->el[j] == NULL || q->el[j]->type == REDIS_REPLY_ERROR) {
            break;
        }
    }

    /* a pipeline's: the array of its commands' replies */
    ngx_memzero(&array, sizeof(redisReply));
    array.type = REDIS_REPLY_ARRAY;
    array.elements = q->nel;
    array.element = q->el;

    /* one script call: NULL unless answered; a pipeline: its array */
    reply = (q->nel > 1) ? &array : (j == q->nel) ? q->el[0] : NULL;

    q->lost = (j != q->nel);
    q->lease = (q->ctx->lease != NULL && q->ctx->lease_seq != 0);

    if ((q->nel == 1) != (fuzz_redis.handler
                          == ngx_http_linegate_limit_reply1)
        || (q->lease && q->nel != 1))
    {
        __builtin_trap();
    }

    fuzz_redis.handler(q->r, reply);

    q->got = fuzz_read_reply(&array, q->v, q->ok) && !q->lost;
}


/* the phase handler until the request goes on, or is answered */
static void
fuzz_request_run(fuzz_req_t *q, void *stream)
{
    ngx_uint_t                      i;
    ngx_http_linegate_limit_ctx_t  *ctx;

    fuzz_posted = 0;

    q->rc = ngx_http_linegate_limit_preaccess_handler(q->r);

    ctx = ngx_http_get_module_ctx(q->r, ngx_http_linegate_limit_module);
    q->ctx = ctx;

    if (ctx == NULL || ctx->n != fuzz_llcf.limits->nelts) {
        __builtin_trap();
    }

    for (i = 0; i < ctx->n; i++) {
        if (ctx->res[i].limited != fuzz_limited[i]
            || (fuzz_limited[i]
                && (ctx->res[i].rkey.len != fuzz_rkey_len[i]
                    || memcmp(ctx->res[i].rkey.data, fuzz_rkey[i],
                              fuzz_rkey_len[i])
                       != 0)))
        {
            __builtin_trap();
        }
    }

    if (q->rc != NGX_AGAIN) {
        if (fuzz_redis.calls || !ctx->done || fuzz_posted) {
            __builtin_trap();
        }

        return;
    }

    if (fuzz_redis.calls != 1 || fuzz_redis.ncmds != q->n || !ctx->waiting
        /* another event of the client's connection meanwhile */
        || ngx_http_linegate_limit_preaccess_handler(q->r) != NGX_AGAIN)
    {
        __builtin_trap();
    }

    fuzz_request_reply(q, stream);

    if (ctx->waiting || !ctx->done || fuzz_posted != 1
        || q->r->write_event_handler != ngx_http_core_run_phases)
    {
        __builtin_trap();
    }

    /* resumed with the decision */
    q->rc = ngx_http_linegate_limit_preaccess_handler(q->r);
}


/*
 * What the reply said: some zone refused (read: the request is refused
 * whatever became of the others), the largest retry of those
 */
static void
fuzz_request_refused(fuzz_req_t *q)
{
    ngx_uint_t  i;

    for (i = 0; i < fuzz_llcf.limits->nelts; i++) {
        if (fuzz_limited[i] && q->ok[i] && q->v[i][0] < 1) {
            q->refused = 1;
            q->retry = ngx_max(q->retry, q->v[i][3]);
        }
    }
}


/* the fallback of linegate_limit_on_error: Redis gave nothing to read */
static void
fuzz_check_fallback(fuzz_req_t *q)
{
    ngx_uint_t                      s;
    ngx_http_linegate_limit_ctx_t  *ctx;

    ctx = q->ctx;
    s = ctx->status;

    /* Redis asked and not read, none refused; or down, or not sent */
    if (q->got || q->refused
        || (!fuzz_redis.calls && !fuzz_redis.down && !fuzz_redis.fail))
    {
        __builtin_trap();
    }

    switch (fuzz_llcf.on_error) {

    case NGX_HTTP_LINEGATE_LIMIT_ON_ERROR_CLOSED:
        if (s != NGX_HTTP_LINEGATE_LIMIT_CLOSED
            || q->rc != (fuzz_llcf.dry_run ? NGX_DECLINED
                                           : NGX_HTTP_SERVICE_UNAVAILABLE)
            || ctx->retry_after != (fuzz_llcf.dry_run ? -1 : 1))
        {
            __builtin_trap();
        }

        return;

    case NGX_HTTP_LINEGATE_LIMIT_ON_ERROR_LOCAL:
        if ((s != NGX_HTTP_LINEGATE_LIMIT_LOCAL_PASSED
             && s != NGX_HTTP_LINEGATE_LIMIT_LOCAL_REJECTED)
            || q->rc != ((s == NGX_HTTP_LINEGATE_LIMIT_LOCAL_PASSED
                          || fuzz_llcf.dry_run)
                         ? NGX_DECLINED : (ngx_int_t) fuzz_llcf.status)
            || (q->rc == NGX_DECLINED) != (ctx->retry_after == -1))
        {
            __builtin_trap();
        }

        return;

    default:
        if (s != NGX_HTTP_LINEGATE_LIMIT_OPEN || q->rc != NGX_DECLINED
            || ctx->retry_after != -1)
        {
            __builtin_trap();
        }
    }
}


/* the decision, against the reply (or the lease, or the cache) */
static void
fuzz_check_decision(fuzz_req_t *q)
{
    ngx_http_linegate_limit_ctx_t  *ctx;

    ctx = q->ctx;

    /* once per request: an internal redirect does not decide again */
    if (ngx_http_linegate_limit_preaccess_handler(q->r) != NGX_DECLINED) {
        __builtin_trap();
    }

    fuzz_request_refused(q);

    switch (ctx->status) {

    case NGX_HTTP_LINEGATE_LIMIT_NONE:
        if (q->n != 0 || q->rc != NGX_DECLINED || ctx->retry_after != -1) {
            __builtin_trap();
        }

        return;

    case NGX_HTTP_LINEGATE_LIMIT_PASSED:
        if (q->rc != NGX_DECLINED || ctx->retry_after != -1
            || (fuzz_redis.calls && !q->got))
        {
            __builtin_trap();
        }

        /* without a call, or refused: the lease's (checked after) */
        return;

    case NGX_HTTP_LINEGATE_LIMIT_REJECTED:
        if (fuzz_llcf.dry_run || q->rc != (ngx_int_t) fuzz_llcf.status) {
            __builtin_trap();
        }

        if (!fuzz_redis.calls) {
            fuzz_check_cached(ctx);
            return;
        }

        if (!q->refused
            || ctx->retry_after != (ngx_int_t) ((q->retry + 999) / 1000))
        {
            __builtin_trap();
        }

        return;

    case NGX_HTTP_LINEGATE_LIMIT_REJECTED_DRY_RUN:
        if (!fuzz_llcf.dry_run || q->rc != NGX_DECLINED
            || !q->refused || ctx->retry_after != -1)
        {
            __builtin_trap();
        }

        return;

    default:
        fuzz_check_fallback(q);
    }
}


/*
 * What came of it beyond the answer: the refunds, what leases spent and
 * were granted, the rejections Redis gave
 */
static void
fuzz_check_effects(fuzz_req_t *q)
{
    int64_t       granted;
    ngx_uint_t    i, j, leased;
    fuzz_seen_t  *s;

    /*
     * refunds: of the zones Redis admitted in a request it rejected, or
     * that another zone's failure took to the fallback
     */
    for (j = 0; j < fuzz_redis.refunds; j++) {
        i = fuzz_rkey_zone(fuzz_redis.refunded[j].data,
                           fuzz_redis.refunded[j].len);

        if (!q->ok[i] || q->v[i][0] < 1 || (q->got && !q->refused)) {
            __builtin_trap();
        }
    }

    /* admitted by a lease: without a call, or though Redis refused */
    leased = q->ctx->status == NGX_HTTP_LINEGATE_LIMIT_PASSED
             && (!fuzz_redis.calls || q->refused);

    if (leased) {
        s = (q->n == 1 && fuzz_zonep[q->one]->lease && !fuzz_llcf.dry_run)
            ? fuzz_seen_of(q->one) : NULL;

        /* only what Redis granted beyond the requests that asked */
        if (s == NULL || s->credit < 1) {
            __builtin_trap();
        }

        s->credit--;
    }

    if (q->got && q->lease && q->v[q->one][0] > 1) {
        s = fuzz_seen_of(q->one);
        granted = q->v[q->one][0] - 1;
        s->credit = (granted > INT64_MAX - s->credit)
                    ? INT64_MAX : s->credit + granted;
    }

    /* Redis's rejections, which the cache may answer again */
    for (i = 0; i < fuzz_llcf.limits->nelts; i++) {
        if (fuzz_limited[i] && q->ok[i] && q->v[i][0] < 1
            && !fuzz_llcf.dry_run)
        {
            s = fuzz_seen_of(i);
            s->rejected = 1;
            s->sent = q->ctx->sent;
            s->retry = q->v[i][3];
        }
    }
}


/*
 * An error_page 416 location's answer after a range filter's 416 (the
 * headers kept): its own Retry-After, RateLimit-Policy and RateLimit
 * lines, pushed before the filter runs once more. One live line of each
 * after: the limiter's Retry-After if it sent one, else the answer's;
 * the answer's items first in the limiter's lists, or alone.
 */
static void
fuzz_check_foreign(fuzz_req_t *q, int64_t retry)
{
    ngx_uint_t        i, k, seen[3];
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    static ngx_str_t  names[3] = {
        ngx_string("Retry-After"),
        ngx_string("RateLimit-Policy"),
        ngx_string("RateLimit")
    };
    static ngx_str_t  values[3] = {
        ngx_string("77"),
        ngx_string("\"x\";q=1;w=1"),
        ngx_string("\"x\";r=0;t=1")
    };

    for (k = 0; k < 3; k++) {
        h = ngx_list_push(&q->r->headers_out.headers);
        if (h == NULL) {
            abort();
        }

        h->hash = 1;
        h->key = names[k];
        h->value = values[k];
#if (nginx_version >= 1023000)
        h->next = NULL;
#endif
    }

    if (ngx_http_linegate_limit_header_filter(q->r) != NGX_OK) {
        __builtin_trap();
    }

    ngx_memzero(seen, sizeof(seen));

    for (part = &q->r->headers_out.headers.part; part; part = part->next) {
        h = part->elts;

        for (i = 0; i < part->nelts; i++) {
            if (h[i].hash == 0) {
                continue;
            }

            for (k = 0; k < 3; k++) {
                if (h[i].key.len == names[k].len
                    && memcmp(h[i].key.data, names[k].data, names[k].len)
                       == 0)
                {
                    break;
                }
            }

            if (k == 3 || seen[k]++) {
                __builtin_trap();
            }

            if (k == 0) {
                if (fuzz_digits(h[i].value.data, h[i].value.len)
                    != (retry >= 0 ? retry : 77))
                {
                    __builtin_trap();
                }

            } else if (h[i].value.len < values[k].len
                       || memcmp(h[i].value.data, values[k].data,
                                 values[k].len) != 0
                       || (h[i].value.len > values[k].len
                           && (h[i].value.len < values[k].len + 3
                               || memcmp(h[i].value.data + values[k].len,
                                         ", \"", 3) != 0)))
            {
                __builtin_trap();
            }
        }
    }

    if (!seen[0] || !seen[1] || !seen[2]) {
        __builtin_trap();
    }
}


/* the answer: its headers, $linegate_limit_status, the metrics */
static void
fuzz_check_answer(fuzz_req_t *q)
{
    ngx_http_variable_value_t  var;

    ngx_http_next_header_filter = fuzz_next_header_filter;

    /* the refusal's own answer, or the one the request was let through to */
    q->r->headers_out.status = (q->rc > 0) ? (ngx_uint_t) q->rc
                                           : NGX_HTTP_OK;

    if (ngx_http_linegate_limit_header_filter(q->r) != NGX_OK
        || fuzz_headers(q->r, q->ctx) != q->ctx->retry_after)
    {
        __builtin_trap();
    }

    /* again, the lines of the first kept: one of each */
    if (ngx_http_linegate_limit_header_filter(q->r) != NGX_OK
        || fuzz_headers(q->r, q->ctx) != q->ctx->retry_after)
    {
        __builtin_trap();
    }

    fuzz_check_foreign(q, q->ctx->retry_after);

    if (q->rc > 0) {
        /*
         * the refusal made a 200 by error_page 429 =200: the same fields
         * but Retry-After, which a served request must not get
         */
        if (ngx_list_init(&q->r->headers_out.headers, q->r->pool, 2,
                          sizeof(ngx_table_elt_t))
            != NGX_OK)
        {
            abort();
        }

        q->r->headers_out.status = NGX_HTTP_OK;

        if (ngx_http_linegate_limit_header_filter(q->r) != NGX_OK
            || fuzz_headers(q->r, q->ctx) != -1)
        {
            __builtin_trap();
        }
    }

    ngx_memzero(&var, sizeof(ngx_http_variable_value_t));

    if (ngx_http_linegate_limit_variable(q->r, &var, 0) != NGX_OK
        || (q->ctx->status == NGX_HTTP_LINEGATE_LIMIT_NONE)
           != var.not_found)
    {
        __builtin_trap();
    }

    if (!var.not_found) {
        (void) ngx_hash_key(var.data, var.len);
    }

    ngx_http_linegate_limit_cleanup(q->ctx);
}


static void
fuzz_request_one(const u_char **in, const u_char *last, void *stream)
{
    ngx_uint_t  j;
    fuzz_req_t  q;

    ngx_memzero(&q, sizeof(fuzz_req_t));

    fuzz_request_start(&q, in, last);
    fuzz_request_run(&q, stream);
    fuzz_check_decision(&q);
    fuzz_check_effects(&q);
    fuzz_check_answer(&q);

    for (j = 0; j < q.nel; j++) {
        if (q.el[j] != NULL) {
            freeReplyObject(q.el[j]);
        }
    }

    fuzz_request_done(q.r);
}


/* the worker's tables, as they were: the entries of this input's keys */
static void
fuzz_forget(void)
{
    ngx_uint_t                         k;
    ngx_str_t                          key;
    ngx_http_linegate_limit_cached_t  *set;

    for (k = 0; k < fuzz_nseen; k++) {
        key.data = fuzz_seen[k].key;
        key.len = fuzz_seen[k].len;

        /* the rejection cache's set of the key, by its keyed hash too */
        set = ngx_http_linegate_limit_cache_set(&key, 0);

        if (set != NULL) {
            ngx_memzero(set, NGX_HTTP_LINEGATE_LIMIT_CACHE_WAYS
                             * sizeof(ngx_http_linegate_limit_cached_t));
        }

        if (ngx_http_linegate_leases != NULL) {
            /* the worker's keyed hash (lease.c), not murmur's */
            ngx_memzero(&ngx_http_linegate_leases[
                            ngx_http_linegate_lease_index(&key)],
                        NGX_HTTP_LINEGATE_LEASE_WAYS
                        * sizeof(ngx_http_linegate_lease_t));
        }
    }

    for (k = 0; k < FUZZ_STATES; k++) {
        free(fuzz_states[k]);
        fuzz_states[k] = NULL;
    }
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    void           *stream;
    ngx_uint_t      i, nreq;
    const u_char   *in, *last, *resp;

    static ngx_uint_t  inited, inputs;

    if (!inited) {
        fuzz_init();
        inited = 1;
    }

    if (size < 3) {
        return 0;
    }

    fuzz_configure(data);
    nreq = 1 + (data[2] & 3);

    /* a second of its own per input: the logs once a second, the reload */
    fuzz_now.sec = 1700000000 + (time_t) (inputs++ % 1000000) * 100;
    fuzz_now.msec = 0;
    ngx_cached_time = &fuzz_now;
    ngx_current_msec = 5000;
    fuzz_nseen = 0;

    /* the requests' keys first, the replies after them */
    last = data + size;
    resp = data + 3;

    for (i = 0; i < nreq; i++) {
        resp = fuzz_skip_request(resp, last);
    }

    stream = fuzz_redis_open(resp, last - resp);
    in = data + 3;

    for (i = 0; i < nreq; i++) {
        fuzz_request_one(&in, resp, stream);
    }

    fuzz_redis_close(stream);
    fuzz_forget();

    return 0;
}
