
/*
 * linegate: what every route of the operator API shares, below the
 * routes: Redis keys and arguments built in the request pool, the
 * validation of ids, E.164 numbers and enumerations, and answers built
 * from hashes and lists. The routes (ngx_http_linegate_operator_ops.c,
 * _operator_tenants.c) and the router (ngx_http_linegate_operator.c)
 * call this file; it calls none of them.
 */


#include "ngx_http_linegate_operator.h"
#include "ngx_http_linegate_json.h"




static ngx_int_t ngx_http_linegate_operator_hash_get(redisReply *hash,
    const char *field, ngx_str_t *value);


/* Redis keys and arguments built in the request pool */

void
ngx_http_linegate_operator_key(ngx_http_request_t *r,
    ngx_http_linegate_operator_t *adm, ngx_http_linegate_key_e kind,
    ngx_str_t *id)
{
    ngx_str_t  key;

    if (ngx_http_linegate_key(r->pool, kind, id, NULL, &key) != NGX_OK) {
        /* redis.c refuses a negative argc: the call answers 503 */
        adm->args.argc = -1;
        return;
    }

    ngx_http_linegate_redis_arg_str(&adm->args, &key);
}


/* validation */

ngx_uint_t
ngx_http_linegate_operator_name_valid(ngx_str_t *s)
{
    return ngx_http_linegate_tenant_id_valid(s->data, s->len);
}


/*
 * A removal's number: the shape alone, so that a "+0..." number loaded
 * before the load refused one can still go
 */
ngx_uint_t
ngx_http_linegate_operator_e164_valid(ngx_str_t *s)
{
    return ngx_http_linegate_e164_shape(s->data, s->len);
}


/*
 * A number the operator gives the fleet (a load, a line's phone): E.164
 * (chars.c: its country code not starting with 0, "+0..." a typo, and a
 * number loaded is sold to a purchase and charged for)
 */
ngx_uint_t
ngx_http_linegate_operator_number_valid(ngx_str_t *s)
{
    return ngx_http_linegate_e164_valid(s->data, s->len);
}


ngx_uint_t
ngx_http_linegate_operator_one_of(ngx_str_t *s, const char **set)
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


/* answers built from replies (hashes are flat HGETALL arrays) */

void
ngx_http_linegate_operator_object(ngx_http_linegate_json_write_t *jw,
    ngx_str_t *id)
{
    ngx_http_linegate_json_write_object(jw);
    ngx_http_linegate_json_write_key(jw, "id");
    ngx_http_linegate_json_write_str(jw, id->data, id->len);
}


void
ngx_http_linegate_operator_set_strs(ngx_http_linegate_json_write_t *jw,
    redisReply *hash, const char **fields)
{
    ngx_str_t  v;

    for ( /* void */ ; *fields; fields++) {
        if (ngx_http_linegate_operator_hash_get(hash, *fields, &v) != NGX_OK) {
            v.len = 0;
        }

        ngx_http_linegate_json_write_keyn(jw, *fields, ngx_strlen(*fields));
        ngx_http_linegate_json_write_str_or_null(jw, &v);
    }
}


ngx_int_t
ngx_http_linegate_operator_set_int(ngx_http_linegate_json_write_t *jw,
    const char *name, redisReply *hash, const char *field)
{
    ngx_int_t  n;
    ngx_str_t  v;

    n = NGX_ERROR;

    if (ngx_http_linegate_operator_hash_get(hash, field, &v) == NGX_OK) {
        n = ngx_atoi(v.data, v.len);
    }

    ngx_http_linegate_json_write_keyn(jw, name, ngx_strlen(name));

    if (n == NGX_ERROR) {
        ngx_http_linegate_json_write_null(jw);

    } else {
        ngx_http_linegate_json_write_int(jw, n);
    }

    return n;
}


static ngx_int_t
ngx_http_linegate_operator_hash_get(redisReply *hash, const char *field,
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


ngx_uint_t
ngx_http_linegate_operator_strings(ngx_http_linegate_json_write_t *jw,
    redisReply *reply, const char *name)
{
    ngx_uint_t   i, n;
    redisReply  *e;

    ngx_http_linegate_json_write_array(jw);

    for (i = 0, n = 0; i < reply->elements; i++) {
        e = reply->element[i];

        if (e->type != REDIS_REPLY_STRING) {
            continue;
        }

        if (name) {
            ngx_http_linegate_json_write_object(jw);
            ngx_http_linegate_json_write_keyn(jw, name, ngx_strlen(name));
        }

        ngx_http_linegate_json_write_str(jw, (u_char *) e->str, e->len);

        if (name) {
            ngx_http_linegate_json_write_end(jw, '}');
        }

        n++;
    }

    ngx_http_linegate_json_write_end(jw, ']');

    return n;
}
