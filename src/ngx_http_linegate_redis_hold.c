
/*
 * linegate: how long a Redis Cluster node's queued commands are held
 * (the header says the rule).
 */


#include "ngx_http_linegate_redis_hold.h"


void
ngx_http_linegate_redis_hold_queued(ngx_http_linegate_redis_hold_t *h)
{
    h->queued++;
}


int
ngx_http_linegate_redis_hold_wait(ngx_http_linegate_redis_hold_t *h)
{
    if (h->queued == h->seen
        || h->queued >= NGX_HTTP_LINEGATE_REDIS_HOLD_BATCH
        || h->turns >= NGX_HTTP_LINEGATE_REDIS_HOLD_TURNS)
    {
        return 0;
    }

    h->turns++;
    h->seen = h->queued;

    return 1;
}


void
ngx_http_linegate_redis_hold_reset(ngx_http_linegate_redis_hold_t *h)
{
    h->turns = 0;
    h->queued = 0;
    h->seen = 0;
}
