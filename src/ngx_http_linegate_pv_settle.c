
/*
 * linegate: pv_settle.lua's arguments (ngx_http_linegate_pv_settle.h).
 * KEYS: the claims journal, the inventory, the reconcile stream, the
 * queued marker of the entry (lg:{fleet}:q:- without one); ARGV: the
 * claim, "1" when the number returns, the reason, the entry's fields.
 */


#include "ngx_http_linegate_module.h"

#include "ngx_http_linegate_keys.h"
#include "ngx_http_linegate_pv_settle.h"


static void ngx_http_linegate_pv_settle_entry(
    ngx_http_linegate_redis_args_t *a, ngx_http_linegate_pv_entry_t *e);


size_t
ngx_http_linegate_pv_settle_room(ngx_str_t *account, ngx_str_t *worker_id,
    size_t reason_len)
{
    return ngx_http_linegate_key_len(NGX_HTTP_LINEGATE_KEY_FLEET_Q,
                                     account, worker_id)
           + 1 + reason_len;
}


void
ngx_http_linegate_pv_settle_args(ngx_http_linegate_redis_args_t *a,
    ngx_http_linegate_pv_settle_t *st)
{
    u_char                        *p;
    ngx_str_t                      qkey;
    ngx_uint_t                     i;
    ngx_http_linegate_pv_entry_t  *e;

    e = &st->entry;

    ngx_http_linegate_redis_arg_str(a,
        ngx_http_linegate_key_fixed(NGX_HTTP_LINEGATE_KEY_PV_INFLIGHT));
    ngx_http_linegate_redis_arg_str(a,
        ngx_http_linegate_key_fixed(NGX_HTTP_LINEGATE_KEY_INVENTORY));
    ngx_http_linegate_redis_arg_str(a,
        ngx_http_linegate_key_fixed(NGX_HTTP_LINEGATE_KEY_RECONCILE));

    if (e->reason.len == 0) {
        ngx_http_linegate_redis_arg_str(a,
            ngx_http_linegate_key_fixed(NGX_HTTP_LINEGATE_KEY_FLEET_Q_NONE));

    } else {
        /* lg:{fleet}:q:<A>:<worker>:<reason> */
        qkey.data = st->room;
        p = ngx_http_linegate_key_write(st->room,
                                        NGX_HTTP_LINEGATE_KEY_FLEET_Q,
                                        &e->account, &e->worker_id);
        *p++ = ':';
        p = ngx_cpymem(p, e->reason.data, e->reason.len);
        qkey.len = p - qkey.data;
        ngx_http_linegate_redis_arg_str(a, &qkey);
    }

    ngx_http_linegate_redis_arg_str(a,
        ngx_http_linegate_key_fixed(NGX_HTTP_LINEGATE_KEY_HELD));

    ngx_http_linegate_redis_arg_str(a, &st->claim);
    ngx_http_linegate_redis_arg_cstr(a, st->giveback ? "1" : "0");
    ngx_http_linegate_redis_arg_str(a, &e->reason);

    if (e->reason.len == 0) {
        return;
    }

    if (st->fields == NULL) {
        ngx_http_linegate_pv_settle_entry(a, e);
        return;
    }

    for (i = 0; i < st->nfields; i++) {
        ngx_http_linegate_redis_arg_str(a, &st->fields[i]);
    }
}


/* the entry's fields, in the order pv_record and pv_release write them */
static void
ngx_http_linegate_pv_settle_entry(ngx_http_linegate_redis_args_t *a,
    ngx_http_linegate_pv_entry_t *e)
{
    ngx_http_linegate_redis_arg_cstr(a, "account");
    ngx_http_linegate_redis_arg_str(a, &e->account);
    ngx_http_linegate_redis_arg_cstr(a, "subscription_id");
    ngx_http_linegate_redis_arg_str(a, &e->subscription);
    ngx_http_linegate_redis_arg_cstr(a, "phone_number");
    ngx_http_linegate_redis_arg_str(a, &e->number);
    ngx_http_linegate_redis_arg_cstr(a, "worker_id");
    ngx_http_linegate_redis_arg_str(a, &e->worker_id);
    ngx_http_linegate_redis_arg_cstr(a, "reason");
    ngx_http_linegate_redis_arg_str(a, &e->reason);
    ngx_http_linegate_redis_arg_cstr(a, "idempotency_key");
    ngx_http_linegate_redis_arg_str(a, &e->idempotency_key);
    ngx_http_linegate_redis_arg_cstr(a, "customer");
    ngx_http_linegate_redis_arg_str(a, &e->customer);
    ngx_http_linegate_redis_arg_cstr(a, "at");
    ngx_http_linegate_redis_arg_str(a, &e->at);
}
