
/*
 * linegate: the operator API (SPEC section 5).
 *
 * Mounted with "linegate_api operator;" on a prefix location such as
 * /_linegate/, which the operator also protects with allow/deny. Every
 * call carries the operator token. Routes are matched on the URI after the
 * location's name; each route checks its input, then runs one Redis
 * script (or one read command), so a check and its write are atomic and
 * a failed call has written nothing.
 *
 * Keys and secrets issued here are shown once and stored only as SHA-256
 * digests; they are never logged.
 */


#include "ngx_http_linegate_module.h"
#include "ngx_http_linegate_auth.h"
#include "ngx_http_linegate_crypto.h"
#include "ngx_http_linegate_json.h"
#include "ngx_http_linegate_redis.h"
#include "ngx_http_linegate_reply.h"
#include "ngx_http_linegate_util.h"


#define NGX_HTTP_LINEGATE_ADMIN_ARGS        2
#define NGX_HTTP_LINEGATE_ADMIN_ID_MAX      64
#define NGX_HTTP_LINEGATE_INVENTORY_MAX     1000
#define NGX_HTTP_LINEGATE_STREAM_DEFAULT    100
#define NGX_HTTP_LINEGATE_STREAM_MAX        1000
#define NGX_HTTP_LINEGATE_REASON_MAX        500
#define NGX_HTTP_LINEGATE_COUNTER_MAX       1000000
#define NGX_HTTP_LINEGATE_USAGE_TTL         (3 * 86400)

/* "tuco_" + 40, "key_" + 16 hex, "sbk_" + 24 hex, "sbs_" + 40 */
#define NGX_HTTP_LINEGATE_API_KEY_CHARS     40
#define NGX_HTTP_LINEGATE_KEY_ID_BYTES      8
#define NGX_HTTP_LINEGATE_SB_KEY_ID_BYTES   12
#define NGX_HTTP_LINEGATE_SB_SECRET_CHARS   40


typedef struct ngx_http_linegate_admin_s  ngx_http_linegate_admin_t;

typedef void (*ngx_http_linegate_admin_pt)(ngx_http_request_t *r,
    ngx_http_linegate_admin_t *adm);


typedef struct {
    const char                     *pattern;   /* "*" matches one segment */
    ngx_uint_t                      methods;
    ngx_http_linegate_admin_pt      handler;
} ngx_http_linegate_admin_route_t;


struct ngx_http_linegate_admin_s {
    ngx_http_linegate_ctx_t        *ctx;
    ngx_str_t                       arg[NGX_HTTP_LINEGATE_ADMIN_ARGS];

    /* what the answer shows once: a new key id and its key or secret */
    ngx_str_t                       key_id;
    ngx_str_t                       secret;

    const char                     *target;    /* line: active, failed */
    ngx_str_t                       status;    /* line: health reported */
    ngx_str_t                       date;      /* usage: YYYY-MM-DD */
    int64_t                         now_ms;
    u_char                          now[NGX_HTTP_LINEGATE_ISO_LEN];

    /* kept for the life of the request: redis.c may resend them */
    ngx_http_linegate_redis_args_t  args;
};


static ngx_uint_t ngx_http_linegate_admin_match(const char *pattern,
    ngx_str_t *path, ngx_str_t *arg);
static void ngx_http_linegate_admin_run(ngx_http_request_t *r,
    ngx_http_linegate_admin_t *adm, ngx_int_t script, int nkeys,
    ngx_http_linegate_redis_handler_pt handler);
static ngx_http_linegate_admin_t *ngx_http_linegate_admin_get(
    ngx_http_request_t *r);
static ngx_int_t ngx_http_linegate_admin_reply_ok(ngx_http_request_t *r,
    redisReply *reply, int type);

static ngx_uint_t ngx_http_linegate_admin_name_valid(ngx_str_t *s);
static ngx_uint_t ngx_http_linegate_admin_e164_valid(ngx_str_t *s);
static ngx_uint_t ngx_http_linegate_admin_chars_valid(ngx_str_t *s,
    size_t skip, const char *set);
static ngx_uint_t ngx_http_linegate_admin_one_of(ngx_str_t *s,
    const char **set);
static ngx_int_t ngx_http_linegate_admin_field(json_t *body,
    const char *name, json_t **value);
static void ngx_http_linegate_admin_invalid_id(ngx_http_request_t *r,
    const char *message);
static void ngx_http_linegate_admin_not_found(ngx_http_request_t *r,
    const char *message);
static void ngx_http_linegate_admin_key(ngx_http_linegate_admin_t *adm,
    ngx_http_request_t *r, const char *fmt, ngx_str_t *id);
static ngx_int_t ngx_http_linegate_admin_generate(ngx_http_request_t *r,
    ngx_str_t *out, const char *prefix, size_t n, ngx_uint_t hex);
static ngx_int_t ngx_http_linegate_admin_digest(ngx_http_request_t *r,
    ngx_str_t *in, ngx_str_t *out);

static ngx_int_t ngx_http_linegate_admin_hash_get(redisReply *hash,
    const char *field, ngx_str_t *value);
static void ngx_http_linegate_admin_set_str(json_t *obj, const char *name,
    redisReply *hash, const char *field);
static void ngx_http_linegate_admin_set_int(json_t *obj, const char *name,
    redisReply *hash, const char *field);
static json_t *ngx_http_linegate_admin_workspace_json(ngx_str_t *id,
    redisReply *hash);
static json_t *ngx_http_linegate_admin_account_json(ngx_http_request_t *r,
    ngx_str_t *id, redisReply *hash);
static json_t *ngx_http_linegate_admin_line_json(ngx_str_t *id,
    redisReply *ws, redisReply *hash);

static void ngx_http_linegate_admin_workspace_put(ngx_http_request_t *r,
    ngx_http_linegate_admin_t *adm);
static void ngx_http_linegate_admin_workspace_get(ngx_http_request_t *r,
    ngx_http_linegate_admin_t *adm);
static void ngx_http_linegate_admin_workspace_done(ngx_http_request_t *r,
    redisReply *reply);
static void ngx_http_linegate_admin_key_create(ngx_http_request_t *r,
    ngx_http_linegate_admin_t *adm);
static void ngx_http_linegate_admin_key_created(ngx_http_request_t *r,
    redisReply *reply);
static void ngx_http_linegate_admin_key_list(ngx_http_request_t *r,
    ngx_http_linegate_admin_t *adm);
static void ngx_http_linegate_admin_key_listed(ngx_http_request_t *r,
    redisReply *reply);
static void ngx_http_linegate_admin_key_revoke(ngx_http_request_t *r,
    ngx_http_linegate_admin_t *adm);
static void ngx_http_linegate_admin_key_revoked(ngx_http_request_t *r,
    redisReply *reply);
static void ngx_http_linegate_admin_account_put(ngx_http_request_t *r,
    ngx_http_linegate_admin_t *adm);
static ngx_int_t ngx_http_linegate_admin_account_limit(ngx_http_request_t *r,
    ngx_http_linegate_admin_t *adm, const char *name, const char *field);
static void ngx_http_linegate_admin_account_get(ngx_http_request_t *r,
    ngx_http_linegate_admin_t *adm);
static void ngx_http_linegate_admin_account_done(ngx_http_request_t *r,
    redisReply *reply);
static void ngx_http_linegate_admin_credentials(ngx_http_request_t *r,
    ngx_http_linegate_admin_t *adm);
static void ngx_http_linegate_admin_credentials_done(ngx_http_request_t *r,
    redisReply *reply);
static ngx_int_t ngx_http_linegate_admin_upsert_common(ngx_http_request_t *r,
    ngx_http_linegate_admin_t *adm, const char *key_fmt, ngx_str_t *plan);
static void ngx_http_linegate_admin_upsert_field(ngx_http_request_t *r,
    ngx_http_linegate_admin_t *adm, const char *field, json_t *value);
static void ngx_http_linegate_admin_inventory_add(ngx_http_request_t *r,
    ngx_http_linegate_admin_t *adm);
static void ngx_http_linegate_admin_inventory_added(ngx_http_request_t *r,
    redisReply *reply);
static void ngx_http_linegate_admin_inventory_list(ngx_http_request_t *r,
    ngx_http_linegate_admin_t *adm);
static void ngx_http_linegate_admin_inventory_listed(ngx_http_request_t *r,
    redisReply *reply);
static void ngx_http_linegate_admin_inventory_remove(ngx_http_request_t *r,
    ngx_http_linegate_admin_t *adm);
static void ngx_http_linegate_admin_inventory_removed(ngx_http_request_t *r,
    redisReply *reply);
static ngx_int_t ngx_http_linegate_admin_line_id(ngx_http_request_t *r,
    ngx_http_linegate_admin_t *adm);
static void ngx_http_linegate_admin_line_active(ngx_http_request_t *r,
    ngx_http_linegate_admin_t *adm);
static void ngx_http_linegate_admin_line_failed(ngx_http_request_t *r,
    ngx_http_linegate_admin_t *adm);
static void ngx_http_linegate_admin_line_transition(ngx_http_request_t *r,
    ngx_http_linegate_admin_t *adm, const char *target, ngx_str_t *phone,
    ngx_str_t *reason);
static void ngx_http_linegate_admin_line_moved(ngx_http_request_t *r,
    redisReply *reply);
static void ngx_http_linegate_admin_line_health(ngx_http_request_t *r,
    ngx_http_linegate_admin_t *adm);
static void ngx_http_linegate_admin_line_checked(ngx_http_request_t *r,
    redisReply *reply);
static void ngx_http_linegate_admin_line_usage(ngx_http_request_t *r,
    ngx_http_linegate_admin_t *adm);
static ngx_int_t ngx_http_linegate_admin_counter(ngx_http_request_t *r,
    json_t *body, const char *name, json_int_t *n);
static void ngx_http_linegate_admin_line_counted(ngx_http_request_t *r,
    redisReply *reply);
static void ngx_http_linegate_admin_provisioning(ngx_http_request_t *r,
    ngx_http_linegate_admin_t *adm);
static void ngx_http_linegate_admin_reconciliation(ngx_http_request_t *r,
    ngx_http_linegate_admin_t *adm);
static void ngx_http_linegate_admin_stream(ngx_http_request_t *r,
    ngx_http_linegate_admin_t *adm, const char *key);
static void ngx_http_linegate_admin_stream_read(ngx_http_request_t *r,
    redisReply *reply);


static ngx_http_linegate_admin_route_t  ngx_http_linegate_admin_routes[] = {

    { "workspaces/*", NGX_HTTP_PUT,
      ngx_http_linegate_admin_workspace_put },
    { "workspaces/*", NGX_HTTP_GET,
      ngx_http_linegate_admin_workspace_get },
    { "workspaces/*/keys", NGX_HTTP_POST,
      ngx_http_linegate_admin_key_create },
    { "workspaces/*/keys", NGX_HTTP_GET,
      ngx_http_linegate_admin_key_list },
    { "workspaces/*/keys/*", NGX_HTTP_DELETE,
      ngx_http_linegate_admin_key_revoke },

    { "accounts/*", NGX_HTTP_PUT,
      ngx_http_linegate_admin_account_put },
    { "accounts/*", NGX_HTTP_GET,
      ngx_http_linegate_admin_account_get },
    { "accounts/*/credentials", NGX_HTTP_POST,
      ngx_http_linegate_admin_credentials },

    { "inventory", NGX_HTTP_POST,
      ngx_http_linegate_admin_inventory_add },
    { "inventory", NGX_HTTP_GET,
      ngx_http_linegate_admin_inventory_list },
    { "inventory/*", NGX_HTTP_DELETE,
      ngx_http_linegate_admin_inventory_remove },

    { "lines/*/active", NGX_HTTP_POST,
      ngx_http_linegate_admin_line_active },
    { "lines/*/failed", NGX_HTTP_POST,
      ngx_http_linegate_admin_line_failed },
    { "lines/*/health", NGX_HTTP_POST,
      ngx_http_linegate_admin_line_health },
    { "lines/*/usage", NGX_HTTP_POST,
      ngx_http_linegate_admin_line_usage },

    { "provisioning", NGX_HTTP_GET,
      ngx_http_linegate_admin_provisioning },
    { "reconciliation", NGX_HTTP_GET,
      ngx_http_linegate_admin_reconciliation },

    { NULL, 0, NULL }
};


static const char  *ngx_http_linegate_admin_plans[] = {
    "mini", "starter", "growth", NULL
};

/* Stripe's subscription statuses */
static const char  *ngx_http_linegate_admin_sub_statuses[] = {
    "active", "trialing", "past_due", "unpaid", "canceled", "incomplete",
    "incomplete_expired", "paused", NULL
};

static const char  *ngx_http_linegate_admin_health[] = {
    "healthy", "unhealthy", NULL
};

static const char  *ngx_http_linegate_admin_ws_fields[] = {
    "plan", "subscriptionStatus", "stripeCustomerId", "createdAt",
    "updatedAt", NULL
};


#define NGX_HTTP_LINEGATE_ID_CHARS                                          \
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"
#define NGX_HTTP_LINEGATE_HEX_CHARS  "0123456789abcdef"


void
ngx_http_linegate_operator_handler(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx)
{
    ngx_str_t                         path;
    ngx_uint_t                        found;
    ngx_http_core_loc_conf_t         *clcf;
    ngx_http_linegate_admin_t        *adm;
    ngx_http_linegate_admin_route_t  *rt;

    if (ngx_http_linegate_auth_operator(r, ctx) != NGX_OK) {
        return;
    }

    adm = ngx_pcalloc(r->pool, sizeof(ngx_http_linegate_admin_t));
    if (adm == NULL) {
        ngx_http_linegate_internal_error(r);
        return;
    }

    adm->ctx = ctx;
    ctx->data = adm;

    clcf = ngx_http_get_module_loc_conf(r, ngx_http_core_module);

    /* routes are relative to the prefix location, e.g. /_linegate/ */
    path.len = 0;

    if (r->uri.len >= clcf->name.len
        && ngx_strncmp(r->uri.data, clcf->name.data, clcf->name.len) == 0)
    {
        path.data = r->uri.data + clcf->name.len;
        path.len = r->uri.len - clcf->name.len;
    }

    found = 0;

    for (rt = ngx_http_linegate_admin_routes; rt->pattern; rt++) {
        if (path.len == 0
            || !ngx_http_linegate_admin_match(rt->pattern, &path, adm->arg))
        {
            continue;
        }

        found = 1;

        if (r->method & rt->methods) {
            break;
        }
    }

    if (rt->pattern == NULL) {
        if (found) {
            ngx_str_set(&ctx->outcome, "method_not_allowed");
            ngx_http_linegate_error(r, NGX_HTTP_NOT_ALLOWED, NULL,
                                    "Method not allowed");
            return;
        }

        ngx_str_set(&ctx->outcome, "not_found");
        ngx_http_linegate_error(r, NGX_HTTP_NOT_FOUND, NULL, "Not found");
        return;
    }

    if ((r->method & (NGX_HTTP_POST|NGX_HTTP_PUT))
        && ngx_http_linegate_json_body(r, ctx, 1) != NGX_OK)
    {
        return;
    }

    /* one clock for the whole call: every time it writes is the same */
    adm->now_ms = ngx_http_linegate_now_ms();
    (void) ngx_http_linegate_iso8601(adm->now, adm->now_ms);

    ngx_http_linegate_redis_args_init(&adm->args);

    rt->handler(r, adm);
}


/*
 * Match path against a pattern of segments; "*" takes one non-empty
 * segment into arg[], in order.
 */
static ngx_uint_t
ngx_http_linegate_admin_match(const char *pattern, ngx_str_t *path,
    ngx_str_t *arg)
{
    u_char      *p, *last, *start;
    ngx_uint_t   n;
    const char  *q;

    p = path->data;
    last = p + path->len;
    q = pattern;
    n = 0;

    for ( ;; ) {

        if (*q == '*') {
            start = p;

            while (p < last && *p != '/') {
                p++;
            }

            if (p == start || n == NGX_HTTP_LINEGATE_ADMIN_ARGS) {
                return 0;
            }

            arg[n].data = start;
            arg[n].len = p - start;
            n++;
            q++;

        } else {
            while (*q != '\0' && *q != '/') {
                if (p == last || *p != (u_char) *q) {
                    return 0;
                }

                p++;
                q++;
            }
        }

        if (*q == '\0') {
            return p == last;
        }

        /* *q == '/' */

        if (p == last || *p != '/') {
            return 0;
        }

        p++;
        q++;
    }
}


static ngx_http_linegate_admin_t *
ngx_http_linegate_admin_get(ngx_http_request_t *r)
{
    return ngx_http_linegate_get_ctx(r)->data;
}


static void
ngx_http_linegate_admin_run(ngx_http_request_t *r,
    ngx_http_linegate_admin_t *adm, ngx_int_t script, int nkeys,
    ngx_http_linegate_redis_handler_pt handler)
{
    ngx_int_t  rc;

    if (script >= 0) {
        rc = ngx_http_linegate_redis_script(r,
                 (ngx_http_linegate_script_id_e) script, nkeys, &adm->args,
                 handler);

    } else {
        rc = ngx_http_linegate_redis_command(r, &adm->args, handler);
    }

    if (rc != NGX_OK) {
        ngx_http_linegate_store_unavailable(r);
    }
}


/*
 * Common checks of a Redis reply: NULL is "store unavailable" (answered),
 * a reply of another type than expected is a bug (answered 500).
 */
static ngx_int_t
ngx_http_linegate_admin_reply_ok(ngx_http_request_t *r, redisReply *reply,
    int type)
{
    if (reply == NULL) {
        ngx_http_linegate_store_unavailable(r);
        return NGX_ERROR;
    }

    if (reply->type != type
        || (type == REDIS_REPLY_ARRAY && reply->elements == 0))
    {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      NGX_HTTP_LINEGATE_LOG "operator: unexpected Redis "
                      "reply of type %d", reply->type);
        ngx_http_linegate_internal_error(r);
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* validation */

/* workspace and account ids: [A-Za-z0-9_-]{1,64} */
static ngx_uint_t
ngx_http_linegate_admin_name_valid(ngx_str_t *s)
{
    return s->len >= 1 && s->len <= NGX_HTTP_LINEGATE_ADMIN_ID_MAX
           && ngx_http_linegate_admin_chars_valid(s, 0,
                                                  NGX_HTTP_LINEGATE_ID_CHARS);
}


/* "+" and 8 to 15 digits */
static ngx_uint_t
ngx_http_linegate_admin_e164_valid(ngx_str_t *s)
{
    return s->len >= 9 && s->len <= 16 && s->data[0] == '+'
           && ngx_http_linegate_admin_chars_valid(s, 1, "0123456789");
}


/* every byte of s after the first skip ones is in set */
static ngx_uint_t
ngx_http_linegate_admin_chars_valid(ngx_str_t *s, size_t skip,
    const char *set)
{
    size_t  i;

    for (i = skip; i < s->len; i++) {
        if (s->data[i] == '\0' || ngx_strchr(set, s->data[i]) == NULL) {
            return 0;
        }
    }

    return 1;
}


static ngx_uint_t
ngx_http_linegate_admin_one_of(ngx_str_t *s, const char **set)
{
    for ( /* void */ ; *set; set++) {
        if (ngx_strlen(*set) == s->len
            && ngx_strncmp(s->data, *set, s->len) == 0)
        {
            return 1;
        }
    }

    return 0;
}


/*
 * A body field, telling absent from null: NGX_DECLINED absent, NGX_DONE
 * null, NGX_OK a value in *value.
 */
static ngx_int_t
ngx_http_linegate_admin_field(json_t *body, const char *name,
    json_t **value)
{
    json_t  *v;

    v = json_object_get(body, name);

    if (v == NULL) {
        return NGX_DECLINED;
    }

    if (json_is_null(v)) {
        return NGX_DONE;
    }

    *value = v;

    return NGX_OK;
}


static void
ngx_http_linegate_admin_invalid_id(ngx_http_request_t *r,
    const char *message)
{
    ngx_http_linegate_error(r, NGX_HTTP_BAD_REQUEST, "INVALID_ID", message);
}


static void
ngx_http_linegate_admin_not_found(ngx_http_request_t *r, const char *message)
{
    ngx_http_linegate_error(r, NGX_HTTP_NOT_FOUND, "NOT_FOUND", message);
}


/* Redis keys and arguments built in the request pool */

static void
ngx_http_linegate_admin_key(ngx_http_linegate_admin_t *adm,
    ngx_http_request_t *r, const char *fmt, ngx_str_t *id)
{
    u_char  *p, *last;
    size_t   len;

    len = ngx_strlen(fmt) + id->len;

    p = ngx_pnalloc(r->pool, len);
    if (p == NULL) {
        /* redis.c refuses a negative argc: the call answers 503 */
        adm->args.argc = -1;
        return;
    }

    last = ngx_snprintf(p, len, fmt, id);

    ngx_http_linegate_redis_arg(&adm->args, p, last - p);
}


/* prefix followed by n random characters ([A-Za-z0-9]) or n bytes of hex */
static ngx_int_t
ngx_http_linegate_admin_generate(ngx_http_request_t *r, ngx_str_t *out,
    const char *prefix, size_t n, ngx_uint_t hex)
{
    int      rc;
    u_char  *p;
    size_t   plen, len;

    plen = ngx_strlen(prefix);
    len = plen + (hex ? 2 * n : n);

    p = ngx_pnalloc(r->pool, len + 1);
    if (p == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(p, prefix, plen);

    rc = hex ? ngx_http_linegate_random_hex((char *) p + plen, n)
             : ngx_http_linegate_random_token((char *) p + plen, n);

    if (rc != 0) {
        ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                      NGX_HTTP_LINEGATE_LOG "no randomness for a credential");
        return NGX_ERROR;
    }

    out->data = p;
    out->len = len;

    return NGX_OK;
}


static ngx_int_t
ngx_http_linegate_admin_digest(ngx_http_request_t *r, ngx_str_t *in,
    ngx_str_t *out)
{
    u_char  *p;

    p = ngx_pnalloc(r->pool, 65);
    if (p == NULL) {
        return NGX_ERROR;
    }

    ngx_http_linegate_sha256_hex(in->data, in->len, (char *) p);

    if (p[0] == '\0') {
        return NGX_ERROR;
    }

    out->data = p;
    out->len = 64;

    return NGX_OK;
}


/* answers built from hashes (flat HGETALL arrays) */

static ngx_int_t
ngx_http_linegate_admin_hash_get(redisReply *hash, const char *field,
    ngx_str_t *value)
{
    size_t       len;
    ngx_uint_t   i;
    redisReply  *k, *v;

    len = ngx_strlen(field);

    for (i = 0; i + 1 < hash->elements; i += 2) {
        k = hash->element[i];
        v = hash->element[i + 1];

        if (k->type == REDIS_REPLY_STRING && v->type == REDIS_REPLY_STRING
            && k->len == len && ngx_strncmp(k->str, field, len) == 0)
        {
            value->data = (u_char *) v->str;
            value->len = v->len;
            return NGX_OK;
        }
    }

    return NGX_DECLINED;
}


static void
ngx_http_linegate_admin_set_str(json_t *obj, const char *name,
    redisReply *hash, const char *field)
{
    ngx_str_t  v;

    if (ngx_http_linegate_admin_hash_get(hash, field, &v) != NGX_OK) {
        v.len = 0;
    }

    json_object_set_new(obj, name,
                        ngx_http_linegate_json_strn_or_null(v.data, v.len));
}


static void
ngx_http_linegate_admin_set_int(json_t *obj, const char *name,
    redisReply *hash, const char *field)
{
    ngx_int_t  n;
    ngx_str_t  v;

    n = NGX_ERROR;

    if (ngx_http_linegate_admin_hash_get(hash, field, &v) == NGX_OK) {
        n = ngx_atoi(v.data, v.len);
    }

    json_object_set_new(obj, name,
                        n == NGX_ERROR ? json_null() : json_integer(n));
}


static json_t *
ngx_http_linegate_admin_workspace_json(ngx_str_t *id, redisReply *hash)
{
    json_t       *obj;
    const char  **f;

    obj = json_object();
    if (obj == NULL) {
        return NULL;
    }

    json_object_set_new(obj, "id",
                        json_stringn((const char *) id->data, id->len));

    for (f = ngx_http_linegate_admin_ws_fields; *f; f++) {
        ngx_http_linegate_admin_set_str(obj, *f, hash, *f);
    }

    return obj;
}


static json_t *
ngx_http_linegate_admin_account_json(ngx_http_request_t *r, ngx_str_t *id,
    redisReply *hash)
{
    json_t                         *obj, *daily, *monthly;
    ngx_http_linegate_main_conf_t  *lmcf;

    lmcf = ngx_http_get_module_main_conf(r, ngx_http_linegate_module);

    obj = json_object();
    if (obj == NULL) {
        return NULL;
    }

    json_object_set_new(obj, "id",
                        json_stringn((const char *) id->data, id->len));
    ngx_http_linegate_admin_set_str(obj, "plan", hash, "plan");
    ngx_http_linegate_admin_set_str(obj, "stripeCustomerId", hash,
                                    "stripeCustomerId");
    ngx_http_linegate_admin_set_str(obj, "key_id", hash, "key_id");
    ngx_http_linegate_admin_set_int(obj, "api_provision_daily", hash,
                                    "daily_limit");
    ngx_http_linegate_admin_set_int(obj, "api_provision_monthly", hash,
                                    "monthly_limit");

    /* what applies: the override, else the configured default */
    daily = json_object_get(obj, "api_provision_daily");
    monthly = json_object_get(obj, "api_provision_monthly");

    json_object_set_new(obj, "limits",
        json_pack("{s:I,s:I}",
                  "daily", json_is_integer(daily)
                           ? json_integer_value(daily)
                           : (json_int_t) lmcf->prov_daily,
                  "monthly", json_is_integer(monthly)
                             ? json_integer_value(monthly)
                             : (json_int_t) lmcf->prov_monthly));

    ngx_http_linegate_admin_set_str(obj, "createdAt", hash, "createdAt");
    ngx_http_linegate_admin_set_str(obj, "updatedAt", hash, "updatedAt");

    return obj;
}


static json_t *
ngx_http_linegate_admin_line_json(ngx_str_t *id, redisReply *ws,
    redisReply *hash)
{
    json_t  *obj;

    obj = json_object();
    if (obj == NULL) {
        return NULL;
    }

    json_object_set_new(obj, "id",
                        json_stringn((const char *) id->data, id->len));
    json_object_set_new(obj, "workspaceId",
                        json_stringn(ws->str, ws->len));
    ngx_http_linegate_admin_set_str(obj, "provisioningStatus", hash,
                                    "provisioningStatus");
    ngx_http_linegate_admin_set_str(obj, "paymentStatus", hash,
                                    "paymentStatus");
    ngx_http_linegate_admin_set_str(obj, "channelType", hash,
                                    "channelType");
    ngx_http_linegate_admin_set_str(obj, "lineType", hash, "lineType");
    ngx_http_linegate_admin_set_str(obj, "phone", hash, "phone");
    ngx_http_linegate_admin_set_str(obj, "email", hash, "email");
    ngx_http_linegate_admin_set_str(obj, "failureReason", hash,
                                    "failureReason");
    ngx_http_linegate_admin_set_str(obj, "updatedAt", hash, "updatedAt");

    return obj;
}


/* workspaces */

static void
ngx_http_linegate_admin_workspace_put(ngx_http_request_t *r,
    ngx_http_linegate_admin_t *adm)
{
    json_t     *v;
    ngx_str_t   s;
    ngx_int_t   rc;

    if (!ngx_http_linegate_admin_name_valid(&adm->arg[0])) {
        ngx_http_linegate_admin_invalid_id(r, "Invalid workspace id");
        return;
    }

    if (ngx_http_linegate_admin_upsert_common(r, adm, "lg:{ws:%V}", &s)
        != NGX_OK)
    {
        return;
    }

    if (s.len && !ngx_http_linegate_admin_one_of(&s,
                                              ngx_http_linegate_admin_plans))
    {
        ngx_http_linegate_field_error(r, "plan",
                                "plan must be mini, starter or growth");
        return;
    }

    rc = ngx_http_linegate_admin_field(adm->ctx->body, "subscriptionStatus",
                                       &v);

    if (rc == NGX_OK) {
        s.len = json_is_string(v) ? json_string_length(v) : 0;
        s.data = (u_char *) json_string_value(v);

        if (!ngx_http_linegate_admin_one_of(&s,
                                     ngx_http_linegate_admin_sub_statuses))
        {
            ngx_http_linegate_field_error(r, "subscriptionStatus",
                                    "subscriptionStatus must be a Stripe "
                                    "subscription status");
            return;
        }
    }

    if (rc != NGX_DECLINED) {
        ngx_http_linegate_admin_upsert_field(r, adm, "subscriptionStatus",
                                             rc == NGX_OK ? v : NULL);
    }

    adm->ctx->tenant = adm->arg[0];

    ngx_http_linegate_admin_run(r, adm, NGX_HTTP_LINEGATE_SCRIPT_OP_UPSERT,
                                1, ngx_http_linegate_admin_workspace_done);
}


/*
 * What workspaces and accounts share: the key and the clock, the plan
 * (required on creation, checked by the caller against its own list and
 * returned in *plan, empty when absent) and stripeCustomerId.
 */
static ngx_int_t
ngx_http_linegate_admin_upsert_common(ngx_http_request_t *r,
    ngx_http_linegate_admin_t *adm, const char *key_fmt, ngx_str_t *plan)
{
    json_t     *v, *body;
    ngx_str_t   s;
    ngx_int_t   rc;

    body = adm->ctx->body;
    plan->len = 0;

    ngx_http_linegate_admin_key(adm, r, key_fmt, &adm->arg[0]);
    ngx_http_linegate_redis_arg(&adm->args, adm->now,
                                NGX_HTTP_LINEGATE_ISO_LEN);
    ngx_http_linegate_redis_arg_cstr(&adm->args, "plan");

    rc = ngx_http_linegate_admin_field(body, "plan", &v);

    if (rc == NGX_DONE || (rc == NGX_OK && !json_is_string(v))) {
        ngx_http_linegate_field_error(r, "plan", "plan must be a string");
        return NGX_ERROR;
    }

    if (rc == NGX_OK) {
        plan->data = (u_char *) json_string_value(v);
        plan->len = json_string_length(v);

        if (plan->len == 0) {
            ngx_http_linegate_field_error(r, "plan", "plan is empty");
            return NGX_ERROR;
        }

        ngx_http_linegate_admin_upsert_field(r, adm, "plan", v);
    }

    rc = ngx_http_linegate_admin_field(body, "stripeCustomerId", &v);

    if (rc == NGX_OK) {
        s.len = json_is_string(v) ? json_string_length(v) : 0;
        s.data = (u_char *) json_string_value(v);

        if (s.len < 5 || s.len > 255 || ngx_strncmp(s.data, "cus_", 4) != 0
            || !ngx_http_linegate_admin_chars_valid(&s, 4,
                                                 NGX_HTTP_LINEGATE_ID_CHARS))
        {
            ngx_http_linegate_field_error(r, "stripeCustomerId",
                                    "stripeCustomerId must be a Stripe "
                                    "customer id (cus_...)");
            return NGX_ERROR;
        }
    }

    if (rc != NGX_DECLINED) {
        ngx_http_linegate_admin_upsert_field(r, adm, "stripeCustomerId",
                                             rc == NGX_OK ? v : NULL);
    }

    return NGX_OK;
}


/* a field triple for op_upsert: value NULL deletes the field */
static void
ngx_http_linegate_admin_upsert_field(ngx_http_request_t *r,
    ngx_http_linegate_admin_t *adm, const char *field, json_t *value)
{
    ngx_http_linegate_redis_args_t  *a;

    a = &adm->args;

    ngx_http_linegate_redis_arg_cstr(a, field);

    if (value == NULL) {
        ngx_http_linegate_redis_arg_cstr(a, "del");
        ngx_http_linegate_redis_arg(a, "", 0);
        return;
    }

    ngx_http_linegate_redis_arg_cstr(a, "set");

    if (json_is_integer(value)) {
        ngx_http_linegate_redis_arg_int(r, a, json_integer_value(value));
        return;
    }

    /* the string lives in ctx->body until the request ends */
    ngx_http_linegate_redis_arg(a, json_string_value(value),
                                json_string_length(value));
}


static void
ngx_http_linegate_admin_workspace_get(ngx_http_request_t *r,
    ngx_http_linegate_admin_t *adm)
{
    if (!ngx_http_linegate_admin_name_valid(&adm->arg[0])) {
        ngx_http_linegate_admin_invalid_id(r, "Invalid workspace id");
        return;
    }

    adm->ctx->tenant = adm->arg[0];

    ngx_http_linegate_redis_arg_cstr(&adm->args, "HGETALL");
    ngx_http_linegate_admin_key(adm, r, "lg:{ws:%V}", &adm->arg[0]);

    ngx_http_linegate_admin_run(r, adm, -1, 0,
                                ngx_http_linegate_admin_workspace_done);
}


/* HGETALL (GET) or {created, HGETALL} / {-1} (PUT) */
static void
ngx_http_linegate_admin_workspace_done(ngx_http_request_t *r,
    redisReply *reply)
{
    redisReply                 *hash;
    ngx_http_linegate_admin_t  *adm;

    adm = ngx_http_linegate_admin_get(r);

    if (reply != NULL && reply->type == REDIS_REPLY_ARRAY
        && reply->elements == 0)
    {
        ngx_http_linegate_admin_not_found(r, "Workspace not found");
        return;
    }

    if (ngx_http_linegate_admin_reply_ok(r, reply, REDIS_REPLY_ARRAY)
        != NGX_OK)
    {
        return;
    }

    hash = reply;

    if (r->method == NGX_HTTP_PUT) {
        if (reply->element[0]->type == REDIS_REPLY_INTEGER
            && reply->element[0]->integer < 0)
        {
            ngx_http_linegate_field_error(r, "plan",
                                "plan is required to create a workspace");
            return;
        }

        if (reply->elements != 2
            || reply->element[1]->type != REDIS_REPLY_ARRAY)
        {
            ngx_http_linegate_internal_error(r);
            return;
        }

        hash = reply->element[1];

        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      NGX_HTTP_LINEGATE_LOG "operator: workspace \"%V\" %s",
                      &adm->arg[0],
                      reply->element[0]->integer ? "created" : "updated");
    }

    ngx_http_linegate_send_json(r, NGX_HTTP_OK,
                    ngx_http_linegate_admin_workspace_json(&adm->arg[0],
                                                           hash));
}


/* workspace API keys */

static void
ngx_http_linegate_admin_key_create(ngx_http_request_t *r,
    ngx_http_linegate_admin_t *adm)
{
    ngx_str_t  digest;

    if (!ngx_http_linegate_admin_name_valid(&adm->arg[0])) {
        ngx_http_linegate_admin_invalid_id(r, "Invalid workspace id");
        return;
    }

    adm->ctx->tenant = adm->arg[0];

    if (ngx_http_linegate_admin_generate(r, &adm->key_id, "key_",
                                         NGX_HTTP_LINEGATE_KEY_ID_BYTES, 1)
        != NGX_OK
        || ngx_http_linegate_admin_generate(r, &adm->secret, "tuco_",
                                     NGX_HTTP_LINEGATE_API_KEY_CHARS, 0)
           != NGX_OK
        || ngx_http_linegate_admin_digest(r, &adm->secret, &digest)
           != NGX_OK)
    {
        ngx_http_linegate_internal_error(r);
        return;
    }

    ngx_http_linegate_admin_key(adm, r, "lg:{ws:%V}", &adm->arg[0]);
    ngx_http_linegate_admin_key(adm, r, "lg:{ws:%V}:keys", &adm->arg[0]);
    ngx_http_linegate_admin_key(adm, r, "lg:apikey:%V", &digest);
    ngx_http_linegate_redis_arg_str(&adm->args, &adm->key_id);
    ngx_http_linegate_redis_arg_str(&adm->args, &digest);
    ngx_http_linegate_redis_arg_str(&adm->args, &adm->arg[0]);

    ngx_http_linegate_admin_run(r, adm,
                                NGX_HTTP_LINEGATE_SCRIPT_OP_KEY_CREATE, 3,
                                ngx_http_linegate_admin_key_created);
}


static void
ngx_http_linegate_admin_key_created(ngx_http_request_t *r,
    redisReply *reply)
{
    ngx_http_linegate_admin_t  *adm;

    adm = ngx_http_linegate_admin_get(r);

    if (ngx_http_linegate_admin_reply_ok(r, reply, REDIS_REPLY_INTEGER)
        != NGX_OK)
    {
        return;
    }

    if (reply->integer == 0) {
        ngx_http_linegate_admin_not_found(r, "Workspace not found");
        return;
    }

    /* the key id identifies the key; the key itself is never logged */
    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  NGX_HTTP_LINEGATE_LOG "operator: API key \"%V\" issued "
                  "for workspace \"%V\"", &adm->key_id, &adm->arg[0]);

    ngx_http_linegate_send_json(r, NGX_HTTP_CREATED,
                    json_pack("{s:s%,s:s%}",
                              "keyId", adm->key_id.data, adm->key_id.len,
                              "key", adm->secret.data, adm->secret.len));
}


static void
ngx_http_linegate_admin_key_list(ngx_http_request_t *r,
    ngx_http_linegate_admin_t *adm)
{
    if (!ngx_http_linegate_admin_name_valid(&adm->arg[0])) {
        ngx_http_linegate_admin_invalid_id(r, "Invalid workspace id");
        return;
    }

    adm->ctx->tenant = adm->arg[0];

    ngx_http_linegate_admin_key(adm, r, "lg:{ws:%V}", &adm->arg[0]);
    ngx_http_linegate_admin_key(adm, r, "lg:{ws:%V}:keys", &adm->arg[0]);

    ngx_http_linegate_admin_run(r, adm, NGX_HTTP_LINEGATE_SCRIPT_OP_KEY_LIST,
                                2, ngx_http_linegate_admin_key_listed);
}


static void
ngx_http_linegate_admin_key_listed(ngx_http_request_t *r, redisReply *reply)
{
    json_t      *keys;
    ngx_uint_t   i;
    redisReply  *e;

    if (reply != NULL && reply->type == REDIS_REPLY_NIL) {
        ngx_http_linegate_admin_not_found(r, "Workspace not found");
        return;
    }

    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY) {
        /* an empty array is a workspace without keys: not an error */
        (void) ngx_http_linegate_admin_reply_ok(r, reply,
                                                REDIS_REPLY_ARRAY);
        return;
    }

    keys = json_array();

    for (i = 0; keys != NULL && i < reply->elements; i++) {
        e = reply->element[i];

        if (e->type == REDIS_REPLY_STRING) {
            json_array_append_new(keys, json_pack("{s:s%}", "keyId",
                                                  e->str, e->len));
        }
    }

    ngx_http_linegate_send_json(r, NGX_HTTP_OK,
                                keys ? json_pack("{s:o}", "keys", keys)
                                     : NULL);
}


static void
ngx_http_linegate_admin_key_revoke(ngx_http_request_t *r,
    ngx_http_linegate_admin_t *adm)
{
    if (!ngx_http_linegate_admin_name_valid(&adm->arg[0])) {
        ngx_http_linegate_admin_invalid_id(r, "Invalid workspace id");
        return;
    }

    if (adm->arg[1].len != 4 + 2 * NGX_HTTP_LINEGATE_KEY_ID_BYTES
        || ngx_strncmp(adm->arg[1].data, "key_", 4) != 0
        || !ngx_http_linegate_admin_chars_valid(&adm->arg[1], 4,
                                                NGX_HTTP_LINEGATE_HEX_CHARS))
    {
        ngx_http_linegate_admin_invalid_id(r, "Invalid key id");
        return;
    }

    adm->ctx->tenant = adm->arg[0];

    ngx_http_linegate_admin_key(adm, r, "lg:{ws:%V}:keys", &adm->arg[0]);
    ngx_http_linegate_redis_arg_str(&adm->args, &adm->arg[1]);

    ngx_http_linegate_admin_run(r, adm,
                                NGX_HTTP_LINEGATE_SCRIPT_OP_KEY_REVOKE, 1,
                                ngx_http_linegate_admin_key_revoked);
}


static void
ngx_http_linegate_admin_key_revoked(ngx_http_request_t *r,
    redisReply *reply)
{
    ngx_http_linegate_admin_t  *adm;

    adm = ngx_http_linegate_admin_get(r);

    if (ngx_http_linegate_admin_reply_ok(r, reply, REDIS_REPLY_INTEGER)
        != NGX_OK)
    {
        return;
    }

    if (reply->integer == 0) {
        ngx_http_linegate_admin_not_found(r, "API key not found");
        return;
    }

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  NGX_HTTP_LINEGATE_LOG "operator: API key \"%V\" of "
                  "workspace \"%V\" revoked", &adm->arg[1], &adm->arg[0]);

    ngx_http_linegate_send_json(r, NGX_HTTP_OK,
                                json_pack("{s:b}", "revoked", 1));
}


/* provisioning accounts */

static void
ngx_http_linegate_admin_account_put(ngx_http_request_t *r,
    ngx_http_linegate_admin_t *adm)
{
    ngx_str_t  plan;

    if (!ngx_http_linegate_admin_name_valid(&adm->arg[0])) {
        ngx_http_linegate_admin_invalid_id(r, "Invalid account id");
        return;
    }

    if (ngx_http_linegate_admin_upsert_common(r, adm, "lg:{acct:%V}", &plan)
        != NGX_OK)
    {
        return;
    }

    /* Sendblue plan names: inbound_only (the Agent plan) and others */
    if (plan.len > 32
        || !ngx_http_linegate_admin_chars_valid(&plan, 0,
               "abcdefghijklmnopqrstuvwxyz0123456789_"))
    {
        ngx_http_linegate_field_error(r, "plan",
                                "plan must be a plan name such as "
                                "inbound_only ([a-z0-9_], at most 32)");
        return;
    }

    if (ngx_http_linegate_admin_account_limit(r, adm, "api_provision_daily",
                                              "daily_limit")
        != NGX_OK
        || ngx_http_linegate_admin_account_limit(r, adm,
                                                 "api_provision_monthly",
                                                 "monthly_limit")
           != NGX_OK)
    {
        return;
    }

    adm->ctx->tenant = adm->arg[0];

    ngx_http_linegate_admin_run(r, adm, NGX_HTTP_LINEGATE_SCRIPT_OP_UPSERT,
                                1, ngx_http_linegate_admin_account_done);
}


/* a limit override: an integer >= 0, or null to use the default */
static ngx_int_t
ngx_http_linegate_admin_account_limit(ngx_http_request_t *r,
    ngx_http_linegate_admin_t *adm, const char *name, const char *field)
{
    u_char     *msg;
    json_t     *v;
    ngx_int_t   rc;

    rc = ngx_http_linegate_admin_field(adm->ctx->body, name, &v);

    if (rc == NGX_DECLINED) {
        return NGX_OK;
    }

    if (rc == NGX_OK
        && (!json_is_integer(v) || json_integer_value(v) < 0
            || json_integer_value(v) > NGX_HTTP_LINEGATE_COUNTER_MAX))
    {
        msg = ngx_pnalloc(r->pool, 128);
        if (msg == NULL) {
            ngx_http_linegate_internal_error(r);
            return NGX_ERROR;
        }

        (void) ngx_snprintf(msg, 128, "%s must be an integer from 0 to %d, "
                            "or null%Z", name, NGX_HTTP_LINEGATE_COUNTER_MAX);
        ngx_http_linegate_field_error(r, name, (char *) msg);
        return NGX_ERROR;
    }

    ngx_http_linegate_admin_upsert_field(r, adm, field,
                                         rc == NGX_OK ? v : NULL);

    return NGX_OK;
}


static void
ngx_http_linegate_admin_account_get(ngx_http_request_t *r,
    ngx_http_linegate_admin_t *adm)
{
    if (!ngx_http_linegate_admin_name_valid(&adm->arg[0])) {
        ngx_http_linegate_admin_invalid_id(r, "Invalid account id");
        return;
    }

    adm->ctx->tenant = adm->arg[0];

    ngx_http_linegate_redis_arg_cstr(&adm->args, "HGETALL");
    ngx_http_linegate_admin_key(adm, r, "lg:{acct:%V}", &adm->arg[0]);

    ngx_http_linegate_admin_run(r, adm, -1, 0,
                                ngx_http_linegate_admin_account_done);
}


static void
ngx_http_linegate_admin_account_done(ngx_http_request_t *r,
    redisReply *reply)
{
    redisReply                 *hash;
    ngx_http_linegate_admin_t  *adm;

    adm = ngx_http_linegate_admin_get(r);

    if (reply != NULL && reply->type == REDIS_REPLY_ARRAY
        && reply->elements == 0)
    {
        ngx_http_linegate_admin_not_found(r, "Account not found");
        return;
    }

    if (ngx_http_linegate_admin_reply_ok(r, reply, REDIS_REPLY_ARRAY)
        != NGX_OK)
    {
        return;
    }

    hash = reply;

    if (r->method == NGX_HTTP_PUT) {
        if (reply->element[0]->type == REDIS_REPLY_INTEGER
            && reply->element[0]->integer < 0)
        {
            ngx_http_linegate_field_error(r, "plan",
                                "plan is required to create an account");
            return;
        }

        if (reply->elements != 2
            || reply->element[1]->type != REDIS_REPLY_ARRAY)
        {
            ngx_http_linegate_internal_error(r);
            return;
        }

        hash = reply->element[1];

        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      NGX_HTTP_LINEGATE_LOG "operator: account \"%V\" %s",
                      &adm->arg[0],
                      reply->element[0]->integer ? "created" : "updated");
    }

    ngx_http_linegate_send_json(r, NGX_HTTP_OK,
                    ngx_http_linegate_admin_account_json(r, &adm->arg[0],
                                                         hash));
}


static void
ngx_http_linegate_admin_credentials(ngx_http_request_t *r,
    ngx_http_linegate_admin_t *adm)
{
    ngx_str_t  digest;

    if (!ngx_http_linegate_admin_name_valid(&adm->arg[0])) {
        ngx_http_linegate_admin_invalid_id(r, "Invalid account id");
        return;
    }

    adm->ctx->tenant = adm->arg[0];

    if (ngx_http_linegate_admin_generate(r, &adm->key_id, "sbk_",
                                         NGX_HTTP_LINEGATE_SB_KEY_ID_BYTES, 1)
        != NGX_OK
        || ngx_http_linegate_admin_generate(r, &adm->secret, "sbs_",
                                     NGX_HTTP_LINEGATE_SB_SECRET_CHARS, 0)
           != NGX_OK
        || ngx_http_linegate_admin_digest(r, &adm->secret, &digest)
           != NGX_OK)
    {
        ngx_http_linegate_internal_error(r);
        return;
    }

    ngx_http_linegate_admin_key(adm, r, "lg:{acct:%V}", &adm->arg[0]);
    ngx_http_linegate_admin_key(adm, r, "lg:sbkey:%V", &adm->key_id);
    ngx_http_linegate_redis_arg_str(&adm->args, &adm->key_id);
    ngx_http_linegate_redis_arg_str(&adm->args, &digest);
    ngx_http_linegate_redis_arg_str(&adm->args, &adm->arg[0]);
    ngx_http_linegate_redis_arg(&adm->args, adm->now,
                                NGX_HTTP_LINEGATE_ISO_LEN);

    ngx_http_linegate_admin_run(r, adm,
                                NGX_HTTP_LINEGATE_SCRIPT_OP_CREDENTIALS, 2,
                                ngx_http_linegate_admin_credentials_done);
}


static void
ngx_http_linegate_admin_credentials_done(ngx_http_request_t *r,
    redisReply *reply)
{
    ngx_http_linegate_admin_t  *adm;

    adm = ngx_http_linegate_admin_get(r);

    if (ngx_http_linegate_admin_reply_ok(r, reply, REDIS_REPLY_INTEGER)
        != NGX_OK)
    {
        return;
    }

    if (reply->integer == 0) {
        ngx_http_linegate_admin_not_found(r, "Account not found");
        return;
    }

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  NGX_HTTP_LINEGATE_LOG "operator: key id \"%V\" issued "
                  "for account \"%V\"", &adm->key_id, &adm->arg[0]);

    ngx_http_linegate_send_json(r, NGX_HTTP_CREATED,
                    json_pack("{s:s%,s:s%}",
                              "key_id", adm->key_id.data, adm->key_id.len,
                              "secret", adm->secret.data, adm->secret.len));
}


/* inventory */

static void
ngx_http_linegate_admin_inventory_add(ngx_http_request_t *r,
    ngx_http_linegate_admin_t *adm)
{
    u_char     *p, *msg;
    size_t      len, i, n;
    json_t     *numbers, *v;
    ngx_str_t   s;

    numbers = json_object_get(adm->ctx->body, "numbers");
    n = json_is_array(numbers) ? json_array_size(numbers) : 0;

    if (n == 0 || n > NGX_HTTP_LINEGATE_INVENTORY_MAX) {
        ngx_http_linegate_field_error(r, "numbers",
                                "numbers must be an array of 1 to 1000 "
                                "E.164 numbers");
        return;
    }

    len = 0;

    for (i = 0; i < n; i++) {
        v = json_array_get(numbers, i);

        s.len = json_is_string(v) ? json_string_length(v) : 0;
        s.data = (u_char *) json_string_value(v);

        if (!ngx_http_linegate_admin_e164_valid(&s)) {
            msg = ngx_pnalloc(r->pool, 80);
            if (msg == NULL) {
                ngx_http_linegate_internal_error(r);
                return;
            }

            (void) ngx_snprintf(msg, 80, "numbers[%uz] is not an E.164 "
                                "number (+ and 8 to 15 digits)%Z", i);
            ngx_http_linegate_field_error(r, "numbers", (char *) msg);
            return;
        }

        len += s.len + 1;
    }

    /* one argument: a script has at most 64, a call up to 1000 numbers */
    p = ngx_pnalloc(r->pool, len);
    if (p == NULL) {
        ngx_http_linegate_internal_error(r);
        return;
    }

    s.data = p;

    for (i = 0; i < n; i++) {
        v = json_array_get(numbers, i);
        p = ngx_cpymem(p, json_string_value(v), json_string_length(v));
        *p++ = ',';
    }

    s.len = p - s.data - 1;

    ngx_http_linegate_redis_arg_cstr(&adm->args, "lg:inventory");
    ngx_http_linegate_redis_arg_str(&adm->args, &s);

    ngx_http_linegate_admin_run(r, adm,
                                NGX_HTTP_LINEGATE_SCRIPT_OP_INVENTORY_ADD, 1,
                                ngx_http_linegate_admin_inventory_added);
}


static void
ngx_http_linegate_admin_inventory_added(ngx_http_request_t *r,
    redisReply *reply)
{
    int64_t  added, total;

    if (ngx_http_linegate_admin_reply_ok(r, reply, REDIS_REPLY_ARRAY)
        != NGX_OK)
    {
        return;
    }

    if (ngx_http_linegate_reply_int(reply, 0, &added) != NGX_OK
        || ngx_http_linegate_reply_int(reply, 1, &total) != NGX_OK)
    {
        ngx_http_linegate_internal_error(r);
        return;
    }

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  NGX_HTTP_LINEGATE_LOG "operator: %L numbers added to the "
                  "inventory, %L in it", added, total);

    ngx_http_linegate_send_json(r, NGX_HTTP_OK,
                                json_pack("{s:I,s:I}", "added",
                                          (json_int_t) added, "total",
                                          (json_int_t) total));
}


static void
ngx_http_linegate_admin_inventory_list(ngx_http_request_t *r,
    ngx_http_linegate_admin_t *adm)
{
    ngx_http_linegate_redis_args_t  *a;

    a = &adm->args;

    ngx_http_linegate_redis_arg_cstr(a, "SORT");
    ngx_http_linegate_redis_arg_cstr(a, "lg:inventory");
    ngx_http_linegate_redis_arg_cstr(a, "ALPHA");

    ngx_http_linegate_admin_run(r, adm, -1, 0,
                                ngx_http_linegate_admin_inventory_listed);
}


static void
ngx_http_linegate_admin_inventory_listed(ngx_http_request_t *r,
    redisReply *reply)
{
    json_t      *numbers;
    ngx_uint_t   i;
    redisReply  *e;

    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY) {
        (void) ngx_http_linegate_admin_reply_ok(r, reply,
                                                REDIS_REPLY_ARRAY);
        return;
    }

    numbers = json_array();

    for (i = 0; numbers != NULL && i < reply->elements; i++) {
        e = reply->element[i];

        if (e->type == REDIS_REPLY_STRING) {
            json_array_append_new(numbers, json_stringn(e->str, e->len));
        }
    }

    ngx_http_linegate_send_json(r, NGX_HTTP_OK,
                    numbers ? json_pack("{s:I,s:o}",
                                        "count", (json_int_t)
                                                 json_array_size(numbers),
                                        "numbers", numbers)
                            : NULL);
}


static void
ngx_http_linegate_admin_inventory_remove(ngx_http_request_t *r,
    ngx_http_linegate_admin_t *adm)
{
    /* nginx has decoded the URI: %2B is already "+" */
    if (!ngx_http_linegate_admin_e164_valid(&adm->arg[0])) {
        ngx_http_linegate_admin_invalid_id(r, "Invalid phone number "
                                           "(+ and 8 to 15 digits)");
        return;
    }

    ngx_http_linegate_redis_arg_cstr(&adm->args, "SREM");
    ngx_http_linegate_redis_arg_cstr(&adm->args, "lg:inventory");
    ngx_http_linegate_redis_arg_str(&adm->args, &adm->arg[0]);

    ngx_http_linegate_admin_run(r, adm, -1, 0,
                                ngx_http_linegate_admin_inventory_removed);
}


static void
ngx_http_linegate_admin_inventory_removed(ngx_http_request_t *r,
    redisReply *reply)
{
    ngx_http_linegate_admin_t  *adm;

    adm = ngx_http_linegate_admin_get(r);

    if (ngx_http_linegate_admin_reply_ok(r, reply, REDIS_REPLY_INTEGER)
        != NGX_OK)
    {
        return;
    }

    if (reply->integer == 0) {
        ngx_http_linegate_admin_not_found(r, "Number not in the inventory");
        return;
    }

    ngx_http_linegate_send_json(r, NGX_HTTP_OK,
                    json_pack("{s:s%,s:b}", "number", adm->arg[0].data,
                              adm->arg[0].len, "removed", 1));
}


/* lines */

static ngx_int_t
ngx_http_linegate_admin_line_id(ngx_http_request_t *r,
    ngx_http_linegate_admin_t *adm)
{
    if (!ngx_http_linegate_id_valid(&adm->arg[0])) {
        ngx_http_linegate_admin_invalid_id(r, "Invalid line id");
        return NGX_ERROR;
    }

    ngx_http_linegate_admin_key(adm, r, "lg:line:%V", &adm->arg[0]);
    ngx_http_linegate_redis_arg_str(&adm->args, &adm->arg[0]);

    return NGX_OK;
}


static void
ngx_http_linegate_admin_line_active(ngx_http_request_t *r,
    ngx_http_linegate_admin_t *adm)
{
    ngx_str_t  phone;
    ngx_int_t  rc;

    if (ngx_http_linegate_admin_line_id(r, adm) != NGX_OK) {
        return;
    }

    rc = ngx_http_linegate_json_str(adm->ctx->body, "phone", &phone);

    if (rc == NGX_ERROR
        || (rc == NGX_OK && !ngx_http_linegate_admin_e164_valid(&phone)))
    {
        ngx_http_linegate_field_error(r, "phone",
                                "phone must be an E.164 number "
                                "(+ and 8 to 15 digits)");
        return;
    }

    if (rc == NGX_DECLINED) {
        phone.len = 0;
    }

    ngx_http_linegate_admin_line_transition(r, adm, "active", &phone, NULL);
}


static void
ngx_http_linegate_admin_line_failed(ngx_http_request_t *r,
    ngx_http_linegate_admin_t *adm)
{
    ngx_str_t  reason;

    if (ngx_http_linegate_admin_line_id(r, adm) != NGX_OK) {
        return;
    }

    if (ngx_http_linegate_json_str(adm->ctx->body, "reason", &reason)
        != NGX_OK
        || (ngx_http_linegate_trim(&reason), reason.len == 0)
        || reason.len > NGX_HTTP_LINEGATE_REASON_MAX)
    {
        ngx_http_linegate_field_error(r, "reason",
                                "reason is required: a string of 1 to 500 "
                                "bytes");
        return;
    }

    ngx_http_linegate_admin_line_transition(r, adm, "failed", NULL, &reason);
}


static void
ngx_http_linegate_admin_line_transition(ngx_http_request_t *r,
    ngx_http_linegate_admin_t *adm, const char *target, ngx_str_t *phone,
    ngx_str_t *reason)
{
    ngx_http_linegate_redis_args_t  *a;

    a = &adm->args;
    adm->target = target;

    ngx_http_linegate_redis_arg_cstr(a, target);
    ngx_http_linegate_redis_arg(a, adm->now, NGX_HTTP_LINEGATE_ISO_LEN);

    if (phone != NULL) {
        ngx_http_linegate_redis_arg_str(a, phone);

    } else {
        ngx_http_linegate_redis_arg(a, "", 0);
    }

    if (reason != NULL) {
        ngx_http_linegate_redis_arg_str(a, reason);

    } else {
        ngx_http_linegate_redis_arg(a, "", 0);
    }

    ngx_http_linegate_admin_run(r, adm,
                                NGX_HTTP_LINEGATE_SCRIPT_OP_LINE_TRANSITION,
                                1, ngx_http_linegate_admin_line_moved);
}


static void
ngx_http_linegate_admin_line_moved(ngx_http_request_t *r, redisReply *reply)
{
    u_char                     *msg, *p;
    int64_t                     code;
    ngx_str_t                   status;
    redisReply                 *ws;
    ngx_http_linegate_admin_t  *adm;

    adm = ngx_http_linegate_admin_get(r);

    if (ngx_http_linegate_admin_reply_ok(r, reply, REDIS_REPLY_ARRAY)
        != NGX_OK)
    {
        return;
    }

    if (ngx_http_linegate_reply_int(reply, 0, &code) != NGX_OK) {
        ngx_http_linegate_internal_error(r);
        return;
    }

    switch (code) {

    case 0:
        ngx_http_linegate_admin_not_found(r, "Line not found");
        return;

    case -1:
        if (ngx_http_linegate_reply_str(reply, 1, &status) != NGX_OK) {
            ngx_http_linegate_internal_error(r);
            return;
        }

        msg = ngx_pnalloc(r->pool, sizeof("Line is ") + status.len);
        if (msg == NULL) {
            ngx_http_linegate_internal_error(r);
            return;
        }

        (void) ngx_sprintf(msg, "Line is %V%Z", &status);
        ngx_http_linegate_error(r, NGX_HTTP_CONFLICT, "INVALID_TRANSITION",
                                (char *) msg);
        return;

    case -2:
        ngx_http_linegate_field_error(r, "phone",
                                "phone is required: this phone line has "
                                "no number yet");
        return;

    case -3:
        ngx_http_linegate_field_error(r, "phone",
                                "only phone lines have a phone number");
        return;
    }

    if (reply->elements != 3 || reply->element[1]->type != REDIS_REPLY_STRING
        || reply->element[2]->type != REDIS_REPLY_ARRAY)
    {
        ngx_http_linegate_internal_error(r);
        return;
    }

    /* the owner, for $linegate_tenant: the reply is freed on return */
    ws = reply->element[1];

    p = ngx_pnalloc(r->pool, ws->len);
    if (p != NULL) {
        ngx_memcpy(p, ws->str, ws->len);
        adm->ctx->tenant.data = p;
        adm->ctx->tenant.len = ws->len;
    }

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  NGX_HTTP_LINEGATE_LOG "operator: line %V of workspace "
                  "\"%*s\" is now %s", &adm->arg[0], ws->len, ws->str,
                  adm->target);

    ngx_http_linegate_send_json(r, NGX_HTTP_OK,
                    ngx_http_linegate_admin_line_json(&adm->arg[0],
                                                      reply->element[1],
                                                      reply->element[2]));
}


static void
ngx_http_linegate_admin_line_health(ngx_http_request_t *r,
    ngx_http_linegate_admin_t *adm)
{
    ngx_str_t  status;

    if (ngx_http_linegate_admin_line_id(r, adm) != NGX_OK) {
        return;
    }

    if (ngx_http_linegate_json_str(adm->ctx->body, "status", &status)
        != NGX_OK
        || !ngx_http_linegate_admin_one_of(&status,
                                           ngx_http_linegate_admin_health))
    {
        ngx_http_linegate_field_error(r, "status",
                                "status must be healthy or unhealthy");
        return;
    }

    adm->status = status;

    ngx_http_linegate_redis_arg_str(&adm->args, &status);
    ngx_http_linegate_redis_arg(&adm->args, adm->now,
                                NGX_HTTP_LINEGATE_ISO_LEN);

    ngx_http_linegate_admin_run(r, adm,
                                NGX_HTTP_LINEGATE_SCRIPT_OP_LINE_HEALTH, 1,
                                ngx_http_linegate_admin_line_checked);
}


static void
ngx_http_linegate_admin_line_checked(ngx_http_request_t *r,
    redisReply *reply)
{
    ngx_http_linegate_admin_t  *adm;

    adm = ngx_http_linegate_admin_get(r);

    if (ngx_http_linegate_admin_reply_ok(r, reply, REDIS_REPLY_INTEGER)
        != NGX_OK)
    {
        return;
    }

    if (reply->integer == 0) {
        ngx_http_linegate_admin_not_found(r, "Line not found");
        return;
    }

    ngx_http_linegate_send_json(r, NGX_HTTP_OK,
                    json_pack("{s:s%,s:{s:s%,s:s%}}",
                              "id", adm->arg[0].data, adm->arg[0].len,
                              "healthCheck",
                              "status", adm->status.data, adm->status.len,
                              "lastCheckedAt", adm->now,
                              (size_t) NGX_HTTP_LINEGATE_ISO_LEN));
}


static void
ngx_http_linegate_admin_line_usage(ngx_http_request_t *r,
    ngx_http_linegate_admin_t *adm)
{
    u_char      *p;
    json_int_t   conversations, messages;

    if (ngx_http_linegate_admin_line_id(r, adm) != NGX_OK) {
        return;
    }

    if (ngx_http_linegate_admin_counter(r, adm->ctx->body,
                                        "newConversations", &conversations)
        != NGX_OK
        || ngx_http_linegate_admin_counter(r, adm->ctx->body,
                                           "totalMessages", &messages)
           != NGX_OK)
    {
        return;
    }

    p = ngx_pnalloc(r->pool, sizeof("YYYY-MM-DD") - 1);
    if (p == NULL) {
        ngx_http_linegate_internal_error(r);
        return;
    }

    /* the UTC day of this call's clock, the one adm->now shows */
    adm->date.data = p;
    adm->date.len = ngx_http_linegate_utc_date(p, adm->now_ms) - p;

    ngx_http_linegate_redis_arg_str(&adm->args, &adm->date);
    ngx_http_linegate_redis_arg_int(r, &adm->args, conversations);
    ngx_http_linegate_redis_arg_int(r, &adm->args, messages);
    ngx_http_linegate_redis_arg_int(r, &adm->args,
                                    NGX_HTTP_LINEGATE_USAGE_TTL);

    ngx_http_linegate_admin_run(r, adm,
                                NGX_HTTP_LINEGATE_SCRIPT_OP_LINE_USAGE, 1,
                                ngx_http_linegate_admin_line_counted);
}


/* a counter increment: absent is 0, else an integer from 0 to 1000000 */
static ngx_int_t
ngx_http_linegate_admin_counter(ngx_http_request_t *r, json_t *body,
    const char *name, json_int_t *n)
{
    u_char     *msg;
    ngx_int_t   rc;

    *n = 0;

    rc = ngx_http_linegate_json_int(body, name, n);

    if (rc == NGX_DECLINED
        || (rc == NGX_OK && *n >= 0 && *n <= NGX_HTTP_LINEGATE_COUNTER_MAX))
    {
        return NGX_OK;
    }

    msg = ngx_pnalloc(r->pool, 128);
    if (msg == NULL) {
        ngx_http_linegate_internal_error(r);
        return NGX_ERROR;
    }

    (void) ngx_snprintf(msg, 128, "%s must be an integer from 0 to %d%Z",
                        name, NGX_HTTP_LINEGATE_COUNTER_MAX);
    ngx_http_linegate_field_error(r, name, (char *) msg);

    return NGX_ERROR;
}


static void
ngx_http_linegate_admin_line_counted(ngx_http_request_t *r,
    redisReply *reply)
{
    int64_t                     found, conversations, messages;
    ngx_http_linegate_admin_t  *adm;

    adm = ngx_http_linegate_admin_get(r);

    if (ngx_http_linegate_admin_reply_ok(r, reply, REDIS_REPLY_ARRAY)
        != NGX_OK)
    {
        return;
    }

    if (ngx_http_linegate_reply_int(reply, 0, &found) != NGX_OK) {
        ngx_http_linegate_internal_error(r);
        return;
    }

    if (found == 0) {
        ngx_http_linegate_admin_not_found(r, "Line not found");
        return;
    }

    if (ngx_http_linegate_reply_int(reply, 1, &conversations) != NGX_OK
        || ngx_http_linegate_reply_int(reply, 2, &messages) != NGX_OK)
    {
        ngx_http_linegate_internal_error(r);
        return;
    }

    ngx_http_linegate_send_json(r, NGX_HTTP_OK,
                    json_pack("{s:s%,s:{s:s%,s:I,s:I}}",
                              "id", adm->arg[0].data, adm->arg[0].len,
                              "usage",
                              "date", adm->date.data, adm->date.len,
                              "newConversationsCount",
                              (json_int_t) conversations,
                              "totalMessagesCount", (json_int_t) messages));
}


/* what waits for set-up, and what waits for reconciliation */

static void
ngx_http_linegate_admin_provisioning(ngx_http_request_t *r,
    ngx_http_linegate_admin_t *adm)
{
    ngx_http_linegate_admin_stream(r, adm, "lg:provisioning");
}


static void
ngx_http_linegate_admin_reconciliation(ngx_http_request_t *r,
    ngx_http_linegate_admin_t *adm)
{
    ngx_http_linegate_admin_stream(r, adm, "lg:reconcile");
}


/*
 * XRANGE key - + COUNT n; "?after=<stream id>" pages on from an entry
 * (exclusive), "?count=" bounds the page.
 */
static void
ngx_http_linegate_admin_stream(ngx_http_request_t *r,
    ngx_http_linegate_admin_t *adm, const char *key)
{
    u_char                          *p;
    ngx_int_t                        count;
    ngx_str_t                        value, after;
    ngx_http_linegate_redis_args_t  *a;

    count = NGX_HTTP_LINEGATE_STREAM_DEFAULT;

    if (ngx_http_arg(r, (u_char *) "count", 5, &value) == NGX_OK) {
        count = ngx_atoi(value.data, value.len);

        if (count < 1 || count > NGX_HTTP_LINEGATE_STREAM_MAX) {
            ngx_http_linegate_field_error(r, "count",
                                    "count must be an integer from 1 to "
                                    "1000");
            return;
        }
    }

    ngx_str_set(&after, "-");

    if (ngx_http_arg(r, (u_char *) "after", 5, &value) == NGX_OK) {
        if (value.len == 0 || value.len > 41
            || !ngx_http_linegate_admin_chars_valid(&value, 0,
                                                    "0123456789-"))
        {
            ngx_http_linegate_field_error(r, "after",
                                    "after must be a stream entry id");
            return;
        }

        p = ngx_pnalloc(r->pool, value.len + 1);
        if (p == NULL) {
            ngx_http_linegate_internal_error(r);
            return;
        }

        *p = '(';
        ngx_memcpy(p + 1, value.data, value.len);

        after.data = p;
        after.len = value.len + 1;
    }

    a = &adm->args;

    ngx_http_linegate_redis_arg_cstr(a, "XRANGE");
    ngx_http_linegate_redis_arg_cstr(a, key);
    ngx_http_linegate_redis_arg_str(a, &after);
    ngx_http_linegate_redis_arg_cstr(a, "+");
    ngx_http_linegate_redis_arg_cstr(a, "COUNT");
    ngx_http_linegate_redis_arg_int(r, a, count);

    ngx_http_linegate_admin_run(r, adm, -1, 0,
                                ngx_http_linegate_admin_stream_read);
}


static void
ngx_http_linegate_admin_stream_read(ngx_http_request_t *r, redisReply *reply)
{
    json_t      *entries, *fields;
    ngx_uint_t   i, j;
    redisReply  *e, *f, *k, *v;

    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY) {
        (void) ngx_http_linegate_admin_reply_ok(r, reply,
                                                REDIS_REPLY_ARRAY);
        return;
    }

    entries = json_array();

    for (i = 0; entries != NULL && i < reply->elements; i++) {
        e = reply->element[i];

        if (e->type != REDIS_REPLY_ARRAY || e->elements != 2
            || e->element[0]->type != REDIS_REPLY_STRING
            || e->element[1]->type != REDIS_REPLY_ARRAY)
        {
            continue;
        }

        f = e->element[1];
        fields = json_object();

        for (j = 0; fields != NULL && j + 1 < f->elements; j += 2) {
            k = f->element[j];
            v = f->element[j + 1];

            if (k->type == REDIS_REPLY_STRING
                && v->type == REDIS_REPLY_STRING)
            {
                json_object_setn_new(fields, k->str, k->len,
                                     json_stringn(v->str, v->len));
            }
        }

        json_array_append_new(entries,
                              json_pack("{s:s%,s:o*}",
                                        "id", e->element[0]->str,
                                        e->element[0]->len,
                                        "fields", fields));
    }

    ngx_http_linegate_send_json(r, NGX_HTTP_OK,
                                entries ? json_pack("{s:o}", "entries",
                                                    entries)
                                        : NULL);
}
