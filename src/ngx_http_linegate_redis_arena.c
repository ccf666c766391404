
/*
 * linegate: hiredis reply objects from a per-connection arena
 * (ngx_http_linegate_redis_arena.h says why and when it is reset).
 */


#include <stdlib.h>
#include <string.h>

#include "ngx_http_linegate_redis_arena.h"


typedef struct ngx_http_linegate_redis_block_s
    ngx_http_linegate_redis_block_t;

/* a block of a large reply, freed when the reply is */
struct ngx_http_linegate_redis_block_s {
    ngx_http_linegate_redis_block_t  *next;
    size_t                            size;
};

typedef struct {
    char                             *pos;
    char                             *end;
    ngx_http_linegate_redis_block_t  *extra;
    unsigned                          live;     /* top-level replies */
    unsigned                          closing;  /* its context is freed */
    /* the kept block follows: ngx_http_linegate_redis_arena_first() */
} ngx_http_linegate_redis_arena_t;

/* before a top-level reply: its arena, for freeObject (no privdata) */
typedef struct {
    ngx_http_linegate_redis_arena_t  *arena;
    void                             *pad;
} ngx_http_linegate_redis_root_t;


static void *ngx_http_linegate_redis_arena_string(const redisReadTask *task,
    char *str, size_t len);
static void *ngx_http_linegate_redis_arena_array(const redisReadTask *task,
    int elements);
static void *ngx_http_linegate_redis_arena_integer(const redisReadTask *task,
    long long value);
static void *ngx_http_linegate_redis_arena_nil(const redisReadTask *task);
static void ngx_http_linegate_redis_arena_free(void *obj);
static redisReply *ngx_http_linegate_redis_arena_reply(
    const redisReadTask *task, int type);
static void *ngx_http_linegate_redis_arena_alloc(
    ngx_http_linegate_redis_arena_t *a, size_t size);
static void ngx_http_linegate_redis_arena_reset(
    ngx_http_linegate_redis_arena_t *a);


static redisReplyObjectFunctions  ngx_http_linegate_redis_arena_functions = {
    ngx_http_linegate_redis_arena_string,
    ngx_http_linegate_redis_arena_array,
    ngx_http_linegate_redis_arena_integer,
    ngx_http_linegate_redis_arena_nil,
    ngx_http_linegate_redis_arena_free
};


static char *
ngx_http_linegate_redis_arena_first(ngx_http_linegate_redis_arena_t *a)
{
    return (char *) (a + 1);
}


int
ngx_http_linegate_redis_arena_attach(redisReader *reader)
{
    ngx_http_linegate_redis_arena_t  *a;

    a = malloc(sizeof(ngx_http_linegate_redis_arena_t)
               + NGX_HTTP_LINEGATE_REDIS_ARENA_BLOCK);
    if (a == NULL) {
        return -1;
    }

    a->extra = NULL;
    a->live = 0;
    a->closing = 0;
    ngx_http_linegate_redis_arena_reset(a);

    reader->fn = &ngx_http_linegate_redis_arena_functions;
    reader->privdata = a;

    return 0;
}


void
ngx_http_linegate_redis_arena_detach(redisReader *reader)
{
    ngx_http_linegate_redis_arena_t  *a;

    if (reader == NULL
        || reader->fn != &ngx_http_linegate_redis_arena_functions
        || reader->privdata == NULL)
    {
        return;
    }

    a = reader->privdata;
    reader->privdata = NULL;

    if (a->live) {
        /* redisReaderFree() frees the partial reply: the arena then */
        a->closing = 1;
        return;
    }

    ngx_http_linegate_redis_arena_reset(a);
    free(a);
}


static void *
ngx_http_linegate_redis_arena_string(const redisReadTask *task, char *str,
    size_t len)
{
    char        *buf;
    redisReply  *r;

    r = ngx_http_linegate_redis_arena_reply(task, task->type);
    if (r == NULL) {
        return NULL;
    }

    buf = ngx_http_linegate_redis_arena_alloc(task->privdata, len + 1);
    if (buf == NULL) {
        return NULL;
    }

    memcpy(buf, str, len);
    buf[len] = '\0';

    r->str = buf;
    r->len = len;

    return r;
}


static void *
ngx_http_linegate_redis_arena_array(const redisReadTask *task, int elements)
{
    size_t       size;
    redisReply  *r;

    if (elements > NGX_HTTP_LINEGATE_REDIS_ARRAY_MAX) {
        return NULL;
    }

    r = ngx_http_linegate_redis_arena_reply(task, REDIS_REPLY_ARRAY);
    if (r == NULL) {
        return NULL;
    }

    if (elements > 0) {
        size = (size_t) elements * sizeof(redisReply *);

        /*
         * not zeroed: each slot is written as its element is read, and
         * nothing walks a partial reply (the arena frees it whole); so a
         * large header commits no memory before its elements come
         */
        r->element = ngx_http_linegate_redis_arena_alloc(task->privdata,
                                                         size);
        if (r->element == NULL) {
            return NULL;
        }

        r->elements = (size_t) elements;
    }

    return r;
}


static void *
ngx_http_linegate_redis_arena_integer(const redisReadTask *task,
    long long value)
{
    redisReply  *r;

    r = ngx_http_linegate_redis_arena_reply(task, REDIS_REPLY_INTEGER);
    if (r == NULL) {
        return NULL;
    }

    r->integer = value;

    return r;
}


static void *
ngx_http_linegate_redis_arena_nil(const redisReadTask *task)
{
    return ngx_http_linegate_redis_arena_reply(task, REDIS_REPLY_NIL);
}


/*
 * hiredis frees top-level replies only (the reader on an error or when
 * it is freed, the async layer after the callback): the arena is reset
 * once none of its replies is alive
 */
static void
ngx_http_linegate_redis_arena_free(void *obj)
{
    ngx_http_linegate_redis_root_t   *root;
    ngx_http_linegate_redis_arena_t  *a;

    if (obj == NULL) {
        return;
    }

    root = (ngx_http_linegate_redis_root_t *) obj - 1;
    a = root->arena;

    if (a->live && --a->live) {
        return;
    }

    ngx_http_linegate_redis_arena_reset(a);

    if (a->closing) {
        free(a);
    }
}


/* an object, hooked to its parent array as hiredis' own functions do */
static redisReply *
ngx_http_linegate_redis_arena_reply(const redisReadTask *task, int type)
{
    redisReply                       *r, *parent;
    ngx_http_linegate_redis_root_t   *root;
    ngx_http_linegate_redis_arena_t  *a;

    a = task->privdata;

    if (task->parent == NULL) {
        root = ngx_http_linegate_redis_arena_alloc(a,
                   sizeof(ngx_http_linegate_redis_root_t)
                   + sizeof(redisReply));
        if (root == NULL) {
            return NULL;
        }

        root->arena = a;
        a->live++;
        r = (redisReply *) (root + 1);

    } else {
        r = ngx_http_linegate_redis_arena_alloc(a, sizeof(redisReply));
        if (r == NULL) {
            return NULL;
        }
    }

    memset(r, 0, sizeof(redisReply));
    r->type = type;

    if (task->parent != NULL) {
        parent = task->parent->obj;
        parent->element[task->idx] = r;
    }

    return r;
}


static void *
ngx_http_linegate_redis_arena_alloc(ngx_http_linegate_redis_arena_t *a,
    size_t size)
{
    char                             *p;
    size_t                            n;
    ngx_http_linegate_redis_block_t  *b;

    size = (size + 15) & ~(size_t) 15;

    if ((size_t) (a->end - a->pos) < size) {
        /* a block of this reply's own, freed with it */
        n = size > NGX_HTTP_LINEGATE_REDIS_ARENA_BLOCK
            ? size : NGX_HTTP_LINEGATE_REDIS_ARENA_BLOCK;

        b = malloc(sizeof(ngx_http_linegate_redis_block_t) + n);
        if (b == NULL) {
            return NULL;
        }

        b->next = a->extra;
        b->size = n;
        a->extra = b;
        a->pos = (char *) (b + 1);
        a->end = a->pos + n;
    }

    p = a->pos;
    a->pos += size;

    return p;
}


static void
ngx_http_linegate_redis_arena_reset(ngx_http_linegate_redis_arena_t *a)
{
    ngx_http_linegate_redis_block_t  *b;

    while (a->extra) {
        b = a->extra;
        a->extra = b->next;
        free(b);
    }

    a->live = 0;
    a->pos = ngx_http_linegate_redis_arena_first(a);
    a->end = a->pos + NGX_HTTP_LINEGATE_REDIS_ARENA_BLOCK;
}
