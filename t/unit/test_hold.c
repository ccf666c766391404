
/*
 * src/ngx_http_linegate_redis_hold.c: a cluster node's queued commands
 * wait while each turn queues more, and are written on the first turn
 * that queues none, after NGX_HTTP_LINEGATE_REDIS_HOLD_TURNS turns, or
 * once NGX_HTTP_LINEGATE_REDIS_HOLD_BATCH commands wait, whichever comes
 * first; each write starts a new batch.
 */


#include <stdio.h>
#include <string.h>

#include "ngx_http_linegate_redis_hold.h"
#include "tap.h"


static void
queue(ngx_http_linegate_redis_hold_t *h, unsigned n)
{
    while (n--) {
        ngx_http_linegate_redis_hold_queued(h);
    }
}


/* turns waited until the write, with n commands queued in each turn */
static unsigned
turns_with(unsigned n, unsigned first)
{
    unsigned                        turns;
    ngx_http_linegate_redis_hold_t  h;

    memset(&h, 0, sizeof(h));
    queue(&h, first);

    for (turns = 0; ngx_http_linegate_redis_hold_wait(&h); turns++) {
        queue(&h, n);

        if (turns > 1000) {
            break;
        }
    }

    return turns;
}


static void
test_idle(void)
{
    /* one command, nothing after it: one turn, then written */
    ok(turns_with(0, 1) == 1, "a lone command waits one turn");
    ok(turns_with(0, 5) == 1, "a turn's batch with nothing after it: one");
}


static void
test_arriving(void)
{
    ngx_http_linegate_redis_hold_t  h;

    memset(&h, 0, sizeof(h));
    queue(&h, 2);
    ok(ngx_http_linegate_redis_hold_wait(&h), "held at the first turn");
    queue(&h, 3);
    ok(ngx_http_linegate_redis_hold_wait(&h), "more came: held again");
    queue(&h, 1);
    ok(ngx_http_linegate_redis_hold_wait(&h), "one more came: held again");
    ok(!ngx_http_linegate_redis_hold_wait(&h), "none came: written");
}


static void
test_bounds(void)
{
    ok(turns_with(1, 1) == NGX_HTTP_LINEGATE_REDIS_HOLD_TURNS,
       "commands every turn: written after the turns' bound");
    ok(turns_with(20, 1) == (NGX_HTTP_LINEGATE_REDIS_HOLD_BATCH + 19) / 20,
       "20 commands a turn: written once the batch is full");
    ok(turns_with(0, NGX_HTTP_LINEGATE_REDIS_HOLD_BATCH) == 0,
       "a full batch in one turn: written at its end");
}


static void
test_reset(void)
{
    ngx_http_linegate_redis_hold_t  h;

    memset(&h, 0, sizeof(h));
    queue(&h, NGX_HTTP_LINEGATE_REDIS_HOLD_BATCH);
    ok(!ngx_http_linegate_redis_hold_wait(&h), "full: written");

    ngx_http_linegate_redis_hold_reset(&h);
    queue(&h, 1);
    ok(ngx_http_linegate_redis_hold_wait(&h),
       "after the write a new batch is held again");

    memset(&h, 0, sizeof(h));
    queue(&h, 1);

    while (ngx_http_linegate_redis_hold_wait(&h)) {
        queue(&h, 1);
    }

    ngx_http_linegate_redis_hold_reset(&h);
    queue(&h, 1);
    ok(ngx_http_linegate_redis_hold_wait(&h),
       "after the turns' bound a new batch gets its turns again");
}


int
main(void)
{
    test_idle();
    test_arriving();
    test_bounds();
    test_reset();

    return tap_done();
}
