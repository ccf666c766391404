
/*
 * linegate: the operator API (SPEC section 5): authentication, routing,
 * input, the run of a route's script and its answer. The routes are in
 * ngx_http_linegate_operator_ops.c and _operator_tenants.c; what they
 * share in ngx_http_linegate_operator_fields.c.
 *
 * Mounted with "linegate_api operator;" on a prefix location such as
 * /_linegate/, which the operator also protects with allow/deny. Every
 * call carries the operator token. Routes are matched on the URI after the
 * location's name; each route checks its input, then runs one Redis
 * script (or one read command), so a check and its write are atomic and
 * a failed call has written nothing. Every script touches one hash slot
 * (a Redis Cluster's rule): a line's call reads the line's owner first
 * (operator_owner), and a call whose write spans slots goes on in steps
 * of one slot each (the call's after hook: API keys, credentials).
 */


#include "ngx_http_linegate_operator.h"
#include "ngx_http_linegate_auth.h"
#include "ngx_http_linegate_json.h"
#include "ngx_http_linegate_reconcile.h"
#include "ngx_http_linegate_reply.h"
#include "ngx_http_linegate_str.h"


static ngx_http_linegate_operator_route_t *ngx_http_linegate_operator_route(
    ngx_http_request_t *r, ngx_http_linegate_operator_t *adm);
static ngx_uint_t ngx_http_linegate_operator_match(const char *pattern,
    ngx_str_t *path, ngx_str_t *arg);
static ngx_int_t ngx_http_linegate_operator_input(ngx_http_request_t *r,
    ngx_http_linegate_operator_t *adm);
static ngx_int_t ngx_http_linegate_operator_value(json_t *body,
    ngx_http_linegate_operator_field_t *f,
    ngx_http_linegate_operator_value_t *v);
static const char *ngx_http_linegate_operator_field_message(
    ngx_http_request_t *r, ngx_http_linegate_operator_field_t *f, ngx_int_t rc);

static void ngx_http_linegate_operator_owner(ngx_http_request_t *r,
    ngx_http_linegate_operator_t *adm);
static void ngx_http_linegate_operator_owned(ngx_http_request_t *r,
    redisReply *reply);
static void ngx_http_linegate_operator_go(ngx_http_request_t *r,
    ngx_http_linegate_operator_t *adm);
static void ngx_http_linegate_operator_read(ngx_http_request_t *r,
    redisReply *reply);
static void ngx_http_linegate_operator_run(ngx_http_request_t *r,
    ngx_http_linegate_operator_t *adm);
static void ngx_http_linegate_operator_done(ngx_http_request_t *r,
    redisReply *reply);
static ngx_int_t ngx_http_linegate_operator_reply_code(ngx_http_request_t *r,
    ngx_http_linegate_operator_call_t *call, redisReply *reply, int64_t *code);
static ngx_uint_t ngx_http_linegate_operator_shape(redisReply *reply,
    const char *shape);
static void ngx_http_linegate_operator_refuse(ngx_http_request_t *r,
    ngx_http_linegate_operator_code_t *ec, redisReply *reply);
static void ngx_http_linegate_operator_unexpected(ngx_http_request_t *r,
    redisReply *reply);


/* the route tables of the operator API's files, searched in order */
static ngx_http_linegate_operator_route_t
    *ngx_http_linegate_operator_tables[] = {
    ngx_http_linegate_operator_tenant_routes,
    ngx_http_linegate_operator_ops_routes,
    NULL
};


void
ngx_http_linegate_operator_handler(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx)
{
    ngx_http_linegate_operator_t        *adm;
    ngx_http_linegate_operator_route_t  *rt;

    if (ngx_http_linegate_auth_operator(r, ctx) != NGX_OK) {
        ngx_http_linegate_refuse(r);
        return;
    }

    adm = ngx_pcalloc(r->pool, sizeof(ngx_http_linegate_operator_t));
    if (adm == NULL) {
        ngx_http_linegate_internal_error(r);
        return;
    }

    /* one clock for the whole call: every time it writes is the same */
    adm->now_ms = ngx_http_linegate_now_ms();
    (void) ngx_http_linegate_iso8601(adm->iso, adm->now_ms);
    adm->now.data = adm->iso;
    adm->now.len = NGX_HTTP_LINEGATE_ISO_LEN;

    adm->ctx = ctx;
    ctx->data = adm;

    rt = ngx_http_linegate_operator_route(r, adm);
    if (rt == NULL) {
        return;
    }

    adm->route = rt;

    if (rt->call != NULL && rt->call->revokes) {
        ngx_http_linegate_auth_forget(r, ctx);
    }

    if (rt->call == NULL) {
        ngx_http_linegate_reconcile_run(r, ctx);
        return;
    }

    if ((r->method & (NGX_HTTP_POST|NGX_HTTP_PUT))
        && ngx_http_linegate_json_body(r, ctx, 1) != NGX_OK)
    {
        return;
    }

    ngx_http_linegate_redis_args_init(&adm->args);

    if (ngx_http_linegate_operator_input(r, adm) != NGX_OK) {
        return;
    }

    /* the workspace or account the call is about, once its input is good */
    if (rt->id[0] != NULL && rt->id[0]->tenant) {
        ctx->tenant = adm->arg[0];
    }

    if (rt->call->check != NULL && rt->call->check(r, adm) != NGX_OK) {
        return;
    }

    if (rt->call->line_owner) {
        ngx_http_linegate_operator_owner(r, adm);
        return;
    }

    if (rt->call->args(r, adm) != NGX_OK) {
        return;
    }

    ngx_http_linegate_operator_go(r, adm);
}


/*
 * A line's call, first step: its owner (GET lg:line:<id>, the index's
 * slot), then the script on the workspace's (operator_owned). Nothing is
 * written here: a line the index does not know is the route's code 0.
 */
static void
ngx_http_linegate_operator_owner(ngx_http_request_t *r,
    ngx_http_linegate_operator_t *adm)
{
    ngx_str_t                       key;

    if (ngx_http_linegate_key(r->pool, NGX_HTTP_LINEGATE_KEY_LINE,
                              &adm->arg[0], NULL, &key)
        != NGX_OK)
    {
        ngx_http_linegate_internal_error(r);
        return;
    }

    if (ngx_http_linegate_redis_get(r, &key, ngx_http_linegate_operator_owned)
        != NGX_OK)
    {
        ngx_http_linegate_store_unavailable(r);
    }
}


static void
ngx_http_linegate_operator_owned(ngx_http_request_t *r, redisReply *reply)
{
    ngx_http_linegate_operator_t       *adm;
    ngx_http_linegate_operator_code_t  *ec;

    adm = ngx_http_linegate_get_ctx(r)->data;

    if (reply == NULL) {
        ngx_http_linegate_store_unavailable(r);
        return;
    }

    if (reply->type == REDIS_REPLY_NIL) {
        for (ec = adm->route->codes; ec != NULL && ec->status; ec++) {
            if (ec->code == 0) {
                ngx_http_linegate_operator_refuse(r, ec, reply);
                return;
            }
        }
    }

    if (reply->type != REDIS_REPLY_STRING || reply->len == 0) {
        ngx_http_linegate_operator_unexpected(r, reply);
        return;
    }

    if (ngx_http_linegate_pstr(r->pool, &adm->ws, (u_char *) reply->str,
                               reply->len)
        == NULL)
    {
        ngx_http_linegate_internal_error(r);
        return;
    }

    if (adm->route->call->args(r, adm) != NGX_OK) {
        return;
    }

    ngx_http_linegate_operator_go(r, adm);
}


/*
 * The route of the URI and method, its "*" segments in adm->arg; or NULL,
 * answered: 404 for a path no route has, 405 for a method it has not.
 * Paths are relative to the prefix location, e.g. /_linegate/ (a regex
 * or exact location is refused by nginx -t: it has no prefix).
 */
static ngx_http_linegate_operator_route_t *
ngx_http_linegate_operator_route(ngx_http_request_t *r,
    ngx_http_linegate_operator_t *adm)
{
    ngx_str_t                             path;
    ngx_uint_t                            found;
    ngx_http_core_loc_conf_t             *clcf;
    ngx_http_linegate_operator_route_t  **t, *rt;

    clcf = ngx_http_get_module_loc_conf(r, ngx_http_core_module);

    path.len = 0;

    if (r->uri.len >= clcf->name.len
        && ngx_strncmp(r->uri.data, clcf->name.data, clcf->name.len) == 0)
    {
        path.data = r->uri.data + clcf->name.len;
        path.len = r->uri.len - clcf->name.len;

        /*
         * a prefix without its trailing '/' ("location /_linegate"): the
         * routes start after the '/' that follows it, and a URI going on
         * without one ("/_linegateinventory") names no route
         */
        if (clcf->name.len == 0
            || clcf->name.data[clcf->name.len - 1] != '/')
        {
            if (path.len && path.data[0] == '/') {
                path.data++;
                path.len--;

            } else {
                path.len = 0;
            }
        }
    }

    found = 0;

    for (t = ngx_http_linegate_operator_tables; path.len && *t; t++) {

        for (rt = *t; rt->pattern; rt++) {
            if (!ngx_http_linegate_operator_match(rt->pattern, &path,
                                                  adm->arg))
            {
                continue;
            }

            /* every method of the path, for a 405's Allow */
            found |= rt->methods;

            /* HEAD is GET's answer without the body (RFC 9110 9.3.2) */
            if ((r->method & rt->methods)
                || (r->method == NGX_HTTP_HEAD
                    && (rt->methods & NGX_HTTP_GET)))
            {
                return rt;
            }
        }
    }

    if (found) {
        ngx_str_set(&adm->ctx->outcome, "method_not_allowed");
        ngx_http_linegate_not_allowed(r, found);
        return NULL;
    }

    ngx_str_set(&adm->ctx->outcome, "not_found");
    ngx_http_linegate_error(r, NGX_HTTP_NOT_FOUND, NULL, "Not found");

    return NULL;
}


/*
 * Match path against a pattern of segments; "*" takes one non-empty
 * segment into arg[], in order.
 */
static ngx_uint_t
ngx_http_linegate_operator_match(const char *pattern, ngx_str_t *path,
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

            if (p == start || n == NGX_HTTP_LINEGATE_OPERATOR_ARGS) {
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


/* input: the ids of the path, then the fields of the body, in order */

static ngx_int_t
ngx_http_linegate_operator_input(ngx_http_request_t *r,
    ngx_http_linegate_operator_t *adm)
{
    ngx_int_t                            rc;
    ngx_uint_t                           i, n;
    const char                          *msg;
    ngx_http_linegate_operator_id_t     *id;
    ngx_http_linegate_operator_field_t  *f;

    for (i = 0; i < NGX_HTTP_LINEGATE_OPERATOR_ARGS; i++) {
        id = adm->route->id[i];

        if (id != NULL && !id->valid(&adm->arg[i])) {
            ngx_http_linegate_error(r, NGX_HTTP_BAD_REQUEST, "INVALID_ID",
                                    id->message);
            return NGX_ERROR;
        }
    }

    n = 0;

    for (i = 0; i < 2; i++) {

        for (f = adm->route->fields[i];
             f != NULL && f->name != NULL
             && n < NGX_HTTP_LINEGATE_OPERATOR_FIELDS;
             f++)
        {
            rc = ngx_http_linegate_operator_value(adm->ctx->body, f,
                                                  &adm->value[n++]);

            if (rc == NGX_OK) {
                continue;
            }

            msg = ngx_http_linegate_operator_field_message(r, f, rc);

            if (msg == NULL) {
                ngx_http_linegate_internal_error(r);

            } else {
                ngx_http_linegate_field_error(r, f->name, msg);
            }

            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


/*
 * Read one field into v: NGX_OK, NGX_DECLINED for a value of the wrong
 * type, NGX_ERROR for one its check refuses (or a required one absent).
 */
static ngx_int_t
ngx_http_linegate_operator_value(json_t *body,
    ngx_http_linegate_operator_field_t *f,
    ngx_http_linegate_operator_value_t *v)
{
    json_t  *j;

    v->field = f;
    v->state = NGX_HTTP_LINEGATE_OPERATOR_ABSENT;
    ngx_str_set(&v->str, "");
    v->n = 0;

    j = json_object_get(body, f->name);

    if (j != NULL && json_is_null(j)
        && (f->flags & NGX_HTTP_LINEGATE_OPERATOR_NULLABLE))
    {
        v->state = NGX_HTTP_LINEGATE_OPERATOR_NULL;
        return NGX_OK;
    }

    if (j == NULL
        || (json_is_null(j) && !(f->flags & NGX_HTTP_LINEGATE_OPERATOR_STRICT)))
    {
        return (f->flags & NGX_HTTP_LINEGATE_OPERATOR_REQUIRED) ? NGX_ERROR
                                                             : NGX_OK;
    }

    if (f->flags & NGX_HTTP_LINEGATE_OPERATOR_INTEGER) {
        if (!json_is_integer(j)) {
            return NGX_DECLINED;
        }

        v->state = NGX_HTTP_LINEGATE_OPERATOR_SET;
        v->n = json_integer_value(j);

        return (v->n >= 0 && v->n <= NGX_HTTP_LINEGATE_COUNTER_MAX)
               ? NGX_OK : NGX_ERROR;
    }

    if (!json_is_string(j)) {
        return NGX_DECLINED;
    }

    v->state = NGX_HTTP_LINEGATE_OPERATOR_SET;
    v->str.data = (u_char *) json_string_value(j);
    v->str.len = json_string_length(j);

    /*
     * bodies allow "\u0000" (json.c) for the fields nobody reads; in one
     * that is read it would cut the value short for a C string function
     * or a log line: refused as its check refuses a bad value
     */
    if (ngx_strlchr(v->str.data, v->str.data + v->str.len, '\0') != NULL) {
        return NGX_ERROR;
    }

    if (f->flags & NGX_HTTP_LINEGATE_OPERATOR_TRIM) {
        ngx_http_linegate_trim(&v->str);
    }

    if (f->valid != NULL && !f->valid(&v->str)) {
        return NGX_ERROR;
    }

    return NGX_OK;
}


/*
 * What a refused field is answered: its message, or one that names the
 * type it must have; NULL without memory.
 */
static const char *
ngx_http_linegate_operator_field_message(ngx_http_request_t *r,
    ngx_http_linegate_operator_field_t *f, ngx_int_t rc)
{
    u_char  *msg;

    if (f->message != NULL
        && (rc != NGX_DECLINED
            || !(f->flags & NGX_HTTP_LINEGATE_OPERATOR_STRICT)))
    {
        return f->message;
    }

    msg = ngx_pnalloc(r->pool, 128);
    if (msg == NULL) {
        return NULL;
    }

    if (f->flags & NGX_HTTP_LINEGATE_OPERATOR_INTEGER) {
        (void) ngx_snprintf(msg, 128, "%s must be an integer from 0 to %d%s%Z",
                            f->name, NGX_HTTP_LINEGATE_COUNTER_MAX,
                            (f->flags & NGX_HTTP_LINEGATE_OPERATOR_NULLABLE)
                            ? ", or null" : "");

    } else {
        (void) ngx_snprintf(msg, 128, "%s must be a string%Z", f->name);
    }

    return (const char *) msg;
}


/* the call and its reply */

/* the call's read first, when it has one (call->read), then its script */
static void
ngx_http_linegate_operator_go(ngx_http_request_t *r,
    ngx_http_linegate_operator_t *adm)
{
    ngx_http_linegate_operator_call_t  *call;

    call = adm->route->call;

    if (call->read == NULL) {
        ngx_http_linegate_operator_run(r, adm);
        return;
    }

    ngx_http_linegate_redis_args_init(&adm->cmd);

    if (call->read(r, adm) != NGX_OK) {
        return;
    }

    if (ngx_http_linegate_redis_command(r, &adm->cmd,
                                        ngx_http_linegate_operator_read)
        != NGX_OK)
    {
        ngx_http_linegate_store_unavailable(r);
    }
}


static void
ngx_http_linegate_operator_read(ngx_http_request_t *r, redisReply *reply)
{
    ngx_http_linegate_operator_t  *adm;

    adm = ngx_http_linegate_get_ctx(r)->data;

    if (reply == NULL) {
        /* nothing written yet: the retry does it all */
        ngx_http_linegate_store_unavailable(r);
        return;
    }

    if (adm->route->call->taken(r, adm, reply) != NGX_OK) {
        return;
    }

    ngx_http_linegate_operator_run(r, adm);
}


static void
ngx_http_linegate_operator_run(ngx_http_request_t *r,
    ngx_http_linegate_operator_t *adm)
{
    ngx_int_t                           rc;
    ngx_http_linegate_operator_call_t  *call;

    call = adm->route->call;

    if (call->script != NGX_HTTP_LINEGATE_OPERATOR_COMMAND) {
        rc = ngx_http_linegate_redis_script(r,
                 (ngx_http_linegate_script_id_e) call->script, call->nkeys,
                 &adm->args, ngx_http_linegate_operator_done);

    } else {
        rc = ngx_http_linegate_redis_command(r, &adm->args,
                                             ngx_http_linegate_operator_done);
    }

    if (rc != NGX_OK) {
        ngx_http_linegate_store_unavailable(r);
    }
}


static void
ngx_http_linegate_operator_done(ngx_http_request_t *r, redisReply *reply)
{
    int64_t                             code;
    ngx_int_t                           rc;
    ngx_http_linegate_operator_t       *adm;
    ngx_http_linegate_json_write_t      jw;
    ngx_http_linegate_operator_call_t  *call;
    ngx_http_linegate_operator_code_t  *ec;

    adm = ngx_http_linegate_get_ctx(r)->data;
    call = adm->route->call;

    if (reply == NULL) {
        if (call->lost != NULL) {
            call->lost(r, adm);
        }

        ngx_http_linegate_store_unavailable(r);
        return;
    }

    rc = ngx_http_linegate_operator_reply_code(r, call, reply, &code);

    if (rc == NGX_ERROR) {
        return;
    }

    for (ec = adm->route->codes; ec != NULL && ec->status; ec++) {
        if (ec->code == code) {
            ngx_http_linegate_operator_refuse(r, ec, reply);
            return;
        }
    }

    /* nothing there, and the route does not say what that means */
    if (rc == NGX_DECLINED) {
        ngx_http_linegate_operator_unexpected(r, reply);
        return;
    }

    if (call->shape[0] != '\0'
        && !ngx_http_linegate_operator_shape(reply, call->shape))
    {
        ngx_http_linegate_internal_error(r);
        return;
    }

    if (call->after != NULL) {
        call->after(r, adm, reply);
        return;
    }

    (void) ngx_http_linegate_json_write_init(&jw, r->pool, 512);
    call->answer(r, adm, reply, &jw);

    ngx_http_linegate_send_jw(r, call->status, &jw);
}


/*
 * The code of a reply (see ngx_http_linegate_operator_reply_e): NGX_OK,
 * NGX_DECLINED when there is nothing (code 0), or NGX_ERROR for a reply
 * of another type, answered 500.
 */
static ngx_int_t
ngx_http_linegate_operator_reply_code(ngx_http_request_t *r,
    ngx_http_linegate_operator_call_t *call, redisReply *reply, int64_t *code)
{
    *code = 1;

    switch (call->reply) {

    case NGX_HTTP_LINEGATE_OPERATOR_REPLY_INTEGER:
        if (reply->type == REDIS_REPLY_INTEGER) {
            *code = reply->integer;
            return NGX_OK;
        }

        break;

    case NGX_HTTP_LINEGATE_OPERATOR_REPLY_ARRAY:
        if (reply->type != REDIS_REPLY_ARRAY || reply->elements == 0) {
            break;
        }

        if (ngx_http_linegate_reply_int(reply, 0, code) != NGX_OK) {
            ngx_http_linegate_internal_error(r);
            return NGX_ERROR;
        }

        return NGX_OK;

    case NGX_HTTP_LINEGATE_OPERATOR_REPLY_HASH:
        if (reply->type == REDIS_REPLY_ARRAY) {
            *code = reply->elements ? 1 : 0;
            return reply->elements ? NGX_OK : NGX_DECLINED;
        }

        break;

    default: /* NGX_HTTP_LINEGATE_OPERATOR_REPLY_LIST */
        if (reply->type == REDIS_REPLY_NIL) {
            *code = 0;
            return NGX_DECLINED;
        }

        if (reply->type == REDIS_REPLY_ARRAY) {
            return NGX_OK;
        }
    }

    ngx_http_linegate_operator_unexpected(r, reply);

    return NGX_ERROR;
}


/* shape: a letter an element, "i" integer, "s" string, "a" array */
static ngx_uint_t
ngx_http_linegate_operator_shape(redisReply *reply, const char *shape)
{
    int     type;
    size_t  i;

    if (reply->elements != ngx_strlen(shape)) {
        return 0;
    }

    for (i = 0; i < reply->elements; i++) {

        switch (shape[i]) {

        case 'i':
            type = REDIS_REPLY_INTEGER;
            break;
        case 's':
            type = REDIS_REPLY_STRING;
            break;
        default:
            type = REDIS_REPLY_ARRAY;
        }

        if (reply->element[i]->type != type) {
            return 0;
        }
    }

    return 1;
}


static void
ngx_http_linegate_operator_refuse(ngx_http_request_t *r,
    ngx_http_linegate_operator_code_t *ec, redisReply *reply)
{
    u_char     *msg;
    size_t      len;
    ngx_str_t   detail;

    if (ec->field != NULL) {
        ngx_http_linegate_field_error(r, ec->field, ec->message);
        return;
    }

    if (!ec->detail) {
        ngx_http_linegate_error(r, ec->status, ec->error, ec->message);
        return;
    }

    /* what the reply says, e.g. "Line is" and the line's status */
    if (ngx_http_linegate_reply_str(reply, 1, &detail) != NGX_OK) {
        ngx_http_linegate_internal_error(r);
        return;
    }

    len = ngx_strlen(ec->message) + 1 + detail.len + 1;

    msg = ngx_pnalloc(r->pool, len);
    if (msg == NULL) {
        ngx_http_linegate_internal_error(r);
        return;
    }

    (void) ngx_snprintf(msg, len, "%s %V%Z", ec->message, &detail);
    ngx_http_linegate_error(r, ec->status, ec->error, (char *) msg);
}


/* a reply of another type than expected is a bug: logged, 500 */
static void
ngx_http_linegate_operator_unexpected(ngx_http_request_t *r, redisReply *reply)
{
    ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                  NGX_HTTP_LINEGATE_LOG "operator: unexpected Redis "
                  "reply of type %d", reply->type);
    ngx_http_linegate_internal_error(r);
}


/* answers built from replies (hashes are flat HGETALL arrays) */
