
/*
 * linegate: the settle of a Provisioning claim (pv_settle.lua, the
 * fleet's slot): the claim "<A> <worker> <number>" leaves the claims
 * journal, the number goes back to the inventory or not, and a
 * reconciliation entry is queued once. Two callers tell it the same
 * things: the confirm, when its record or release has answered
 * (ngx_http_linegate_provision_confirm.c), and the reconciliation sweep,
 * for a claim a confirm left (ngx_http_linegate_reconcile.c). The
 * arguments are built here only, so that the entry both queue is one.
 */


#ifndef _NGX_HTTP_LINEGATE_PV_SETTLE_H_INCLUDED_
#define _NGX_HTTP_LINEGATE_PV_SETTLE_H_INCLUDED_


#include "ngx_http_linegate_module.h"
#include "ngx_http_linegate_redis.h"


/* a reconciliation entry, as pv_record and pv_release write the outbox */
typedef struct {
    ngx_str_t                       account;
    ngx_str_t                       subscription;
    ngx_str_t                       number;
    ngx_str_t                       worker_id;
    ngx_str_t                       reason;     /* empty: no entry */
    ngx_str_t                       idempotency_key;
    ngx_str_t                       customer;
    ngx_str_t                       at;
} ngx_http_linegate_pv_entry_t;


typedef struct {
    ngx_str_t                       claim;      /* "" when unknown */
    ngx_uint_t                      giveback;   /* the number returns */
    ngx_http_linegate_pv_entry_t    entry;

    /*
     * the entry as an outbox holds it, {name, value, ...}, when the
     * caller read one (the sweep): sent as read; NULL: entry's fields
     */
    ngx_str_t                      *fields;
    ngx_uint_t                      nfields;

    /*
     * ngx_http_linegate_pv_settle_room() bytes: the queued marker and
     * the other reason's
     */
    u_char                         *room;
} ngx_http_linegate_pv_settle_t;


/*
 * the room the marker lg:{fleet}:q:<A>:<worker>:<reason> needs, with the
 * marker of the reason whose entry would hold the same number
 */
size_t ngx_http_linegate_pv_settle_room(ngx_str_t *account,
    ngx_str_t *worker_id, size_t reason_len);

/*
 * pv_settle's keys and arguments into a (initialized by the caller);
 * nothing is allocated (the confirm builds them in its cleanup too)
 */
void ngx_http_linegate_pv_settle_args(ngx_http_linegate_redis_args_t *a,
    ngx_http_linegate_pv_settle_t *st);


#endif /* _NGX_HTTP_LINEGATE_PV_SETTLE_H_INCLUDED_ */
