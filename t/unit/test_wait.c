
/*
 * src/ngx_http_linegate_redis_wait.c: at most one WAIT in flight on a
 * connection. A write made while one is in flight joins the next WAIT,
 * written when that one answers, after every write made meanwhile; a
 * WAIT's reply reaches each write it answers for, in order; a lost
 * connection (no reply) ends the next one too, unwritten; a WAIT that
 * cannot be written is said at once, or (the next one) as no reply.
 */


#include <stdio.h>
#include <string.h>

#include "ngx_http_linegate_redis_wait.h"
#include "tap.h"


/* a connection as the tests see it: WAITs written, and whether it can */
typedef struct redisAsyncContext {
    int                               refuse;
    unsigned                          written;
    ngx_http_linegate_redis_wait_fn  *fn[16];
    void                             *privdata[16];
} conn_t;

/* a write's WAIT replies, in the order they came */
typedef struct {
    unsigned                          n;
    void                             *reply[4];
    struct redisAsyncContext         *ac[4];
} write_t;


static ngx_http_linegate_redis_waits_t  waits;
static ngx_http_linegate_redis_wait_fn  waited;

/* a write whose reply adds another write, on the same connection */
static write_t  *chained;


static int
send_wait(struct redisAsyncContext *ac, ngx_http_linegate_redis_wait_fn *fn,
    void *privdata)
{
    if (ac->refuse || ac->written == 16) {
        return -1;
    }

    ac->fn[ac->written] = fn;
    ac->privdata[ac->written] = privdata;
    ac->written++;

    return 0;
}


static void
waited(struct redisAsyncContext *ac, void *reply, void *privdata)
{
    write_t  *w;

    w = privdata;

    if (w->n < 4) {
        w->reply[w->n] = reply;
        w->ac[w->n] = ac;
    }

    w->n++;

    if (chained != NULL && w != chained) {
        write_t  *c = chained;

        chained = NULL;
        ok(ngx_http_linegate_redis_waits_add(&waits, ac, waited, c) == 0,
           "a write added from a WAIT's reply is taken");
    }
}


/* w was called back once, with reply */
static int
once(write_t *w, void *reply)
{
    return w->n == 1 && w->reply[0] == reply;
}


/* the i-th WAIT written on ac answers reply */
static void
answer(conn_t *c, unsigned i, void *reply)
{
    c->fn[i](c, reply, c->privdata[i]);
}


/* a test's start: no WAIT anywhere, its connections and writes new */
static void
fresh(conn_t *c, unsigned nc, write_t *w, unsigned nw)
{
    memset(&waits, 0, sizeof(waits));
    waits.send = send_wait;
    chained = NULL;
    memset(c, 0, nc * sizeof(conn_t));
    memset(w, 0, nw * sizeof(write_t));
}


static void
test_one_in_flight(void)
{
    int      two = 2, one = 1;
    conn_t   c;
    write_t  w[3];

    fresh(&c, 1, w, 3);

    ok(ngx_http_linegate_redis_waits_add(&waits, &c, waited, &w[0]) == 0,
       "the first write is taken");
    ok(c.written == 1, "its WAIT is written at once");

    ok(ngx_http_linegate_redis_waits_add(&waits, &c, waited, &w[1]) == 0
       && ngx_http_linegate_redis_waits_add(&waits, &c, waited, &w[2]) == 0,
       "two more writes while it is in flight are taken");
    ok(c.written == 1, "no WAIT written for them while one is in flight");

    answer(&c, 0, &two);
    ok(once(&w[0], &two) && w[0].ac[0] == &c,
       "the first write gets its WAIT's reply");
    ok(w[1].n == 0 && w[2].n == 0,
       "the others do not: it was written before them");
    ok(c.written == 2, "one WAIT written for both once the first answered");

    answer(&c, 1, &one);
    ok(once(&w[1], &one) && once(&w[2], &one),
       "both get the second WAIT's reply");
    ok(waits.tail == NULL, "nothing in flight any more");

    ok(ngx_http_linegate_redis_waits_add(&waits, &c, waited, &w[0]) == 0
       && c.written == 3, "the next write's WAIT is written at once again");
    answer(&c, 2, &one);
    ok(w[0].n == 2 && waits.tail == NULL, "and answered");
}


static void
test_lost(void)
{
    int      one = 1;
    conn_t   c;
    write_t  w[2];

    fresh(&c, 1, w, 2);

    (void) ngx_http_linegate_redis_waits_add(&waits, &c, waited, &w[0]);
    (void) ngx_http_linegate_redis_waits_add(&waits, &c, waited, &w[1]);

    /* the connection lost: hiredis calls back with no reply */
    answer(&c, 0, NULL);
    ok(once(&w[0], NULL), "lost: the write in flight gets none");
    ok(once(&w[1], NULL) && w[1].ac[0] == &c,
       "the write waiting for the next WAIT gets none too");
    ok(c.written == 1, "and no WAIT is written on the lost connection");
    ok(waits.tail == NULL, "nothing left");

    /* the next WAIT cannot be written (the connection is closing) */
    memset(w, 0, sizeof(w));
    (void) ngx_http_linegate_redis_waits_add(&waits, &c, waited, &w[0]);
    (void) ngx_http_linegate_redis_waits_add(&waits, &c, waited, &w[1]);
    c.refuse = 1;
    answer(&c, 1, &one);
    ok(once(&w[0], &one), "the WAIT in flight answers its own");
    ok(once(&w[1], NULL),
       "the next one, not written: no reply, not acknowledged");
    ok(waits.tail == NULL, "nothing left after it");

    ok(ngx_http_linegate_redis_waits_add(&waits, &c, waited, &w[0]) == -1,
       "a WAIT that cannot be written now is said at once");
    ok(w[0].n == 1 && waits.tail == NULL,
       "and its write is never called back");
}


static void
test_connections(void)
{
    int      one = 1;
    conn_t   c[2];    /* the connection lost, the new one */
    write_t  w[3];

    fresh(c, 2, w, 3);

    (void) ngx_http_linegate_redis_waits_add(&waits, &c[0], waited, &w[0]);
    (void) ngx_http_linegate_redis_waits_add(&waits, &c[0], waited, &w[1]);

    /* the node connected again: the old connection's reply still owed */
    ok(ngx_http_linegate_redis_waits_add(&waits, &c[1], waited, &w[2]) == 0
       && c[1].written == 1,
       "a new connection's WAIT is written at once, another's in flight");

    answer(&c[0], 0, NULL);
    ok(once(&w[0], NULL) && once(&w[1], NULL),
       "the old connection's writes end with no reply");
    ok(w[2].n == 0 && waits.tail != NULL,
       "the new one's WAIT still in flight");

    answer(&c[1], 0, &one);
    ok(once(&w[2], &one) && w[2].ac[0] == &c[1],
       "and answers its own write");
    ok(waits.tail == NULL, "nothing left");
}


static void
test_chained(void)
{
    int      one = 1;
    conn_t   c;
    write_t  w[3];

    fresh(&c, 1, w, 3);

    (void) ngx_http_linegate_redis_waits_add(&waits, &c, waited, &w[0]);
    (void) ngx_http_linegate_redis_waits_add(&waits, &c, waited, &w[1]);

    /* the first's reply makes another write (a redirect, a durable
     * write sent again) */
    chained = &w[2];
    answer(&c, 0, &one);
    ok(c.written == 2,
       "the second write's WAIT written before the first hears");
    ok(w[2].n == 0, "the write its reply made joins the WAIT after that one");

    answer(&c, 1, &one);
    ok(w[1].n == 1 && w[2].n == 0 && c.written == 3,
       "the second answered, the third's WAIT written then");
    answer(&c, 2, &one);
    ok(once(&w[2], &one) && waits.tail == NULL,
       "the third answered");
}


static void
test_many(void)
{
    int       one = 1;
    unsigned  i, all;
    conn_t    c;
    write_t   w[40];

    fresh(&c, 1, w, 40);

    for (i = 0; i < 40; i++) {
        (void) ngx_http_linegate_redis_waits_add(&waits, &c, waited, &w[i]);
    }

    ok(c.written == 1, "40 writes, one WAIT in flight");
    answer(&c, 0, &one);
    ok(c.written == 2, "then one for the other 39");
    answer(&c, 1, &one);

    for (all = 1, i = 0; i < 40; i++) {
        all = all && w[i].n == 1 && w[i].reply[0] == &one;
    }

    ok(all, "each of the 40 answered once");
}


int
main(void)
{
    test_one_in_flight();
    test_lost();
    test_connections();
    test_chained();
    test_many();

    return tap_done();
}
