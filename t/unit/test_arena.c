
/*
 * src/ngx_http_linegate_redis_arena.c: hiredis' reader with the arena's
 * object functions parses the replies linegate reads (strings, nil,
 * integers, statuses, errors, nested arrays, replies larger than a
 * block, replies fed a byte at a time), each the same as hiredis' own
 * objects would be, and frees them the way hiredis does: top-level only,
 * one reply at a time, a partial one when the reader is freed.
 */


#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ngx_http_linegate_redis_arena.h"
#include "tap.h"


static redisReader *
reader(void)
{
    redisReader  *r;

    r = redisReaderCreate();

    if (r == NULL || ngx_http_linegate_redis_arena_attach(r) != 0) {
        printf("Bail out! no reader\n");
        return NULL;
    }

    return r;
}


/* as the event cleanup, then hiredis' own free, do */
static void
done(redisReader *r)
{
    ngx_http_linegate_redis_arena_detach(r);
    redisReaderFree(r);
}


/* one reply from the protocol text, fed in pieces of step bytes */
static redisReply *
parse(redisReader *r, const char *proto, size_t len, size_t step)
{
    size_t   i, n;
    void    *reply;

    reply = NULL;

    for (i = 0; i < len; i += n) {
        n = len - i < step ? len - i : step;

        if (redisReaderFeed(r, proto + i, n) != REDIS_OK
            || redisReaderGetReply(r, &reply) != REDIS_OK)
        {
            return NULL;
        }

        if (reply != NULL && i + n < len) {
            return NULL;    /* complete too early */
        }
    }

    return reply;
}


static int
str_is(redisReply *e, int type, const char *s)
{
    return e != NULL && e->type == type && e->len == strlen(s)
           && memcmp(e->str, s, e->len) == 0 && e->str[e->len] == '\0';
}


static void
test_shapes(size_t step)
{
    char          name[96];
    redisReply   *v;
    redisReader  *r;

    static const char  proto[] =
        "*6\r\n"
        "$5\r\nhello\r\n"
        "$-1\r\n"
        ":-42\r\n"
        "+OK\r\n"
        "-ERR wrong\r\n"
        "*2\r\n*1\r\n$0\r\n\r\n*0\r\n";

    r = reader();
    if (r == NULL) {
        return;
    }

    v = parse(r, proto, sizeof(proto) - 1, step);

    snprintf(name, sizeof(name), "every type of reply, fed %zu byte(s) at "
             "a time", step);

    ok(v != NULL && v->type == REDIS_REPLY_ARRAY && v->elements == 6
       && str_is(v->element[0], REDIS_REPLY_STRING, "hello")
       && v->element[1]->type == REDIS_REPLY_NIL
       && v->element[2]->type == REDIS_REPLY_INTEGER
       && v->element[2]->integer == -42
       && str_is(v->element[3], REDIS_REPLY_STATUS, "OK")
       && str_is(v->element[4], REDIS_REPLY_ERROR, "ERR wrong")
       && v->element[5]->type == REDIS_REPLY_ARRAY
       && v->element[5]->elements == 2
       && v->element[5]->element[0]->elements == 1
       && str_is(v->element[5]->element[0]->element[0], REDIS_REPLY_STRING,
                 "")
       && v->element[5]->element[1]->type == REDIS_REPLY_ARRAY
       && v->element[5]->element[1]->elements == 0,
       name);

    if (v != NULL) {
        r->fn->freeObject(v);
    }

    done(r);
}


/* replies one after another: each freed before the next is parsed */
static void
test_sequence(void)
{
    int           i, good;
    char          proto[64];
    redisReply   *v;
    redisReader  *r;

    r = reader();
    if (r == NULL) {
        return;
    }

    good = 1;

    for (i = 0; i < 10000; i++) {
        snprintf(proto, sizeof(proto), "*2\r\n:%d\r\n$3\r\nabc\r\n", i);
        v = parse(r, proto, strlen(proto), 7);

        if (v == NULL || v->elements != 2 || v->element[0]->integer != i
            || !str_is(v->element[1], REDIS_REPLY_STRING, "abc"))
        {
            good = 0;
        }

        if (v != NULL) {
            r->fn->freeObject(v);
        }
    }

    ok(good, "10000 replies in turn, each right after the last was freed");

    done(r);
}


/* a reply larger than the kept block: blocks of its own */
static void
test_large(void)
{
    int           good;
    char         *proto, *p;
    size_t        i, n, big;
    redisReply   *v;
    redisReader  *r;

    n = 20000;
    big = 3 * NGX_HTTP_LINEGATE_REDIS_ARENA_BLOCK;

    proto = malloc(n * 32 + big + 64);
    if (proto == NULL) {
        return;
    }

    p = proto + sprintf(proto, "*%zu\r\n$%zu\r\n", n + 1, big);
    memset(p, 'x', big);
    p += big;
    p += sprintf(p, "\r\n");

    for (i = 0; i < n; i++) {
        p += sprintf(p, "$%zu\r\nv%zu\r\n", 1 + (size_t) snprintf(NULL, 0,
                     "%zu", i), i);
    }

    r = reader();
    if (r == NULL) {
        free(proto);
        return;
    }

    for (int round = 0; round < 3; round++) {
        v = parse(r, proto, (size_t) (p - proto), 4096);
        good = v != NULL && v->elements == n + 1
               && v->element[0]->len == big && v->element[0]->str[0] == 'x'
               && v->element[0]->str[big - 1] == 'x';

        for (i = 0; good && i < n; i++) {
            char  want[32];

            snprintf(want, sizeof(want), "v%zu", i);
            good = str_is(v->element[i + 1], REDIS_REPLY_STRING, want);
        }

        ok(good, round == 0 ? "a reply of 20001 elements and a 96 kB string"
                            : "the same again, the arena reset between");

        if (v != NULL) {
            r->fn->freeObject(v);
        }
    }

    done(r);
    free(proto);
}


/* a partial reply when its context goes: freed by the reader, then it */
static void
test_partial(void)
{
    void         *reply;
    redisReader  *r;

    static const char  proto[] = "*3\r\n$3\r\nabc\r\n:1\r\n";

    r = reader();
    if (r == NULL) {
        return;
    }

    reply = NULL;
    ok(redisReaderFeed(r, proto, sizeof(proto) - 1) == REDIS_OK
       && redisReaderGetReply(r, &reply) == REDIS_OK && reply == NULL,
       "a partial reply is held by the reader");

    ngx_http_linegate_redis_arena_detach(r);
    redisReaderFree(r);
    ok(1, "the reader freed after the arena's detach, its reply held");

    r = reader();
    if (r == NULL) {
        return;
    }

    ngx_http_linegate_redis_arena_detach(r);
    ngx_http_linegate_redis_arena_detach(r);
    redisReaderFree(r);
    ok(1, "an idle arena detached (twice), then its reader freed");
}


/* resident memory, kB (/proc/self/statm's second field is pages) */
static long
resident_kb(void)
{
    long   pages;
    FILE  *f;

    pages = -1;
    f = fopen("/proc/self/statm", "r");

    if (f != NULL) {
        if (fscanf(f, "%*s %ld", &pages) != 1) {
            pages = -1;
        }

        fclose(f);
    }

    return pages < 0 ? -1 : pages * 4;
}


/*
 * An array's header alone commits no memory, and one announcing more
 * than NGX_HTTP_LINEGATE_REDIS_ARRAY_MAX elements is an error: hiredis
 * allocates the array when it reads "*<n>", so a few bytes of a broken
 * or hostile peer asked for 8 * n bytes, zeroed (783 MB for n = 10^8).
 */
static void
test_huge_header(void)
{
    long          before, after;
    char          head[32];
    void         *reply;
    redisReader  *r;

    r = reader();
    if (r == NULL) {
        return;
    }

    before = resident_kb();
    snprintf(head, sizeof(head), "*%d\r\n", NGX_HTTP_LINEGATE_REDIS_ARRAY_MAX);
    reply = NULL;
    ok(redisReaderFeed(r, head, strlen(head)) == REDIS_OK
       && redisReaderGetReply(r, &reply) == REDIS_OK && reply == NULL,
       "the largest array's header is read, the reply partial");
    after = resident_kb();
    ok(before > 0 && after - before < 1024,
       "and commits no memory before its elements come");
    if (!(before > 0 && after - before < 1024)) {
        printf("# resident %ld kB -> %ld kB\n", before, after);
    }

    done(r);

    r = reader();
    if (r == NULL) {
        return;
    }

    snprintf(head, sizeof(head), "*%d\r\n",
             NGX_HTTP_LINEGATE_REDIS_ARRAY_MAX + 1);
    reply = NULL;
    ok(redisReaderFeed(r, head, strlen(head)) == REDIS_OK
       && redisReaderGetReply(r, &reply) == REDIS_ERR && reply == NULL,
       "one element more is an error (the connection is dropped)");

    done(r);

    r = reader();
    if (r == NULL) {
        return;
    }

    reply = NULL;
    ok(redisReaderFeed(r, "*100000000\r\n", 13) == REDIS_OK
       && redisReaderGetReply(r, &reply) == REDIS_ERR && reply == NULL,
       "*100000000 is an error");

    done(r);
}


/* a protocol error: hiredis frees the partial reply, the arena resets */
static void
test_error(void)
{
    void         *reply;
    redisReader  *r;

    static const char  bad[] = "*2\r\n$3\r\nabc\r\n!what\r\n";
    static const char  good[] = "+PONG\r\n";

    r = reader();
    if (r == NULL) {
        return;
    }

    reply = NULL;
    ok(redisReaderFeed(r, bad, sizeof(bad) - 1) == REDIS_OK
       && redisReaderGetReply(r, &reply) == REDIS_ERR && reply == NULL,
       "a protocol error is an error");

    done(r);

    r = reader();
    if (r == NULL) {
        return;
    }

    reply = parse(r, good, sizeof(good) - 1, 1);
    ok(str_is(reply, REDIS_REPLY_STATUS, "PONG"), "a new reader parses");

    if (reply != NULL) {
        r->fn->freeObject(reply);
    }

    done(r);
}


int
main(void)
{
    test_shapes(1);
    test_shapes(3);
    test_shapes(1000);
    test_sequence();
    test_large();
    test_partial();
    test_error();
    test_huge_header();

    return tap_done();
}
