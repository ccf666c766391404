
/*
 * linegate: pv_settle.lua's arguments (ngx_http_linegate_pv_settle.h).
 * KEYS: the claims journal, the inventory, the reconcile stream, the
 * queued marker of the entry (lg:{fleet}:q:- without one), the numbers
 * held, the marker of the reason whose entry would hold the same number
 * (lg:{fleet}:q:- when the reason has none); ARGV: the claim, "1" when
 * the number returns, the reason, the entry's fields.
 */


#include "ngx_http_linegate_module.h"

#include "ngx_http_linegate_keys.h"
#include "ngx_http_linegate_pv_settle.h"


static ngx_str_t *ngx_http_linegate_pv_settle_other(ngx_str_t *reason);
static u_char *ngx_http_linegate_pv_settle_marker(
    ngx_http_linegate_redis_args_t *a, u_char *p,
    ngx_http_linegate_pv_entry_t *e, ngx_str_t *reason);
static void ngx_http_linegate_pv_settle_entry(
    ngx_http_linegate_redis_args_t *a, ngx_http_linegate_pv_entry_t *e);


/*
 * The two reasons whose entry holds the purchase's number (the
 * reservation was kept): the confirm's record_failed, the sweep's
 * worker_lost. Only the first queued is: pv_settle.lua looks at the
 * other's marker, which it is given as a key of its own (KEYS[6]), so
 * that every key it touches is declared and named here (t/016).
 */
static ngx_str_t  ngx_http_linegate_pv_settle_record_failed =
    ngx_string("record_failed");
static ngx_str_t  ngx_http_linegate_pv_settle_worker_lost =
    ngx_string("worker_lost");


size_t
ngx_http_linegate_pv_settle_room(ngx_str_t *account, ngx_str_t *worker_id,
    size_t reason_len)
{
    size_t  marker;

    marker = ngx_http_linegate_key_len(NGX_HTTP_LINEGATE_KEY_FLEET_Q,
                                       account, worker_id)
             + 1;

    /* the entry's marker, then the other reason's (the longer of two) */
    return marker + reason_len
           + marker + ngx_http_linegate_pv_settle_record_failed.len;
}


void
ngx_http_linegate_pv_settle_args(ngx_http_linegate_redis_args_t *a,
    ngx_http_linegate_pv_settle_t *st)
{
    u_char                        *p;
    ngx_str_t                     *other;
    ngx_uint_t                     i;
    ngx_http_linegate_pv_entry_t  *e;

    e = &st->entry;

    ngx_http_linegate_redis_arg_str(a,
        ngx_http_linegate_key_fixed(NGX_HTTP_LINEGATE_KEY_PV_INFLIGHT));
    ngx_http_linegate_redis_arg_str(a,
        ngx_http_linegate_key_fixed(NGX_HTTP_LINEGATE_KEY_INVENTORY));
    ngx_http_linegate_redis_arg_str(a,
        ngx_http_linegate_key_fixed(NGX_HTTP_LINEGATE_KEY_RECONCILE));

    p = st->room;

    if (e->reason.len == 0) {
        ngx_http_linegate_redis_arg_str(a,
            ngx_http_linegate_key_fixed(NGX_HTTP_LINEGATE_KEY_FLEET_Q_NONE));

    } else {
        p = ngx_http_linegate_pv_settle_marker(a, p, e, &e->reason);
    }

    ngx_http_linegate_redis_arg_str(a,
        ngx_http_linegate_key_fixed(NGX_HTTP_LINEGATE_KEY_HELD));

    other = ngx_http_linegate_pv_settle_other(&e->reason);

    if (other == NULL) {
        /* never set, never looked at: KEYS[] are fixed in number */
        ngx_http_linegate_redis_arg_str(a,
            ngx_http_linegate_key_fixed(NGX_HTTP_LINEGATE_KEY_FLEET_Q_NONE));

    } else {
        (void) ngx_http_linegate_pv_settle_marker(a, p, e, other);
    }

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


/* the reason whose entry would hold the same number, NULL: none */
static ngx_str_t *
ngx_http_linegate_pv_settle_other(ngx_str_t *reason)
{
    ngx_str_t  *rf, *wl;

    rf = &ngx_http_linegate_pv_settle_record_failed;
    wl = &ngx_http_linegate_pv_settle_worker_lost;

    if (reason->len == rf->len
        && ngx_strncmp(reason->data, rf->data, rf->len) == 0)
    {
        return wl;
    }

    if (reason->len == wl->len
        && ngx_strncmp(reason->data, wl->data, wl->len) == 0)
    {
        return rf;
    }

    return NULL;
}


/*
 * lg:{fleet}:q:<A>:<worker>:<reason> written at p (in st->room) and
 * added to a; the end of what was written
 */
static u_char *
ngx_http_linegate_pv_settle_marker(ngx_http_linegate_redis_args_t *a,
    u_char *p, ngx_http_linegate_pv_entry_t *e, ngx_str_t *reason)
{
    ngx_str_t  key;

    key.data = p;
    p = ngx_http_linegate_key_write(p, NGX_HTTP_LINEGATE_KEY_FLEET_Q,
                                    &e->account, &e->worker_id);
    *p++ = ':';
    p = ngx_cpymem(p, reason->data, reason->len);
    key.len = p - key.data;

    ngx_http_linegate_redis_arg_str(a, &key);

    return p;
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
