
/*
 * linegate: how long a Redis Cluster node's queued commands are held
 * before they are written (src/ngx_http_linegate_redis_event.c says why).
 * Counted in turns of nginx's event loop: a held write waits one more
 * turn each time the last turn queued more commands, up to
 * NGX_HTTP_LINEGATE_REDIS_HOLD_TURNS turns or _BATCH commands; the
 * first turn that queued none sends them.
 *
 * Pure C: no nginx headers, unit-tested in t/unit/test_hold.c.
 */


#ifndef _NGX_HTTP_LINEGATE_REDIS_HOLD_H_INCLUDED_
#define _NGX_HTTP_LINEGATE_REDIS_HOLD_H_INCLUDED_


/* turns a batch may wait beyond the one its first command came in */
#define NGX_HTTP_LINEGATE_REDIS_HOLD_TURNS  8

/* commands that, queued, are written at the end of the turn */
#define NGX_HTTP_LINEGATE_REDIS_HOLD_BATCH  64


typedef struct {
    unsigned                        turns;   /* waited, this batch */
    unsigned                        queued;  /* commands, this batch */
    unsigned                        seen;    /* queued, the last turn */
} ngx_http_linegate_redis_hold_t;


/* a command was queued */
void ngx_http_linegate_redis_hold_queued(ngx_http_linegate_redis_hold_t *h);

/* the write's turn has come: 1, it waits another turn; 0, write now */
int ngx_http_linegate_redis_hold_wait(ngx_http_linegate_redis_hold_t *h);

/* the queued commands were written: a new batch */
void ngx_http_linegate_redis_hold_reset(ngx_http_linegate_redis_hold_t *h);


#endif /* _NGX_HTTP_LINEGATE_REDIS_HOLD_H_INCLUDED_ */
