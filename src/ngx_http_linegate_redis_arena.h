
/*
 * linegate: the reply objects of one hiredis connection, allocated from
 * an arena instead of one malloc() and one free() per element (a line
 * request's HGETALL is ~40 objects, by-user's ten of them ~400: malloc
 * and free were ~11% of a by-user worker, docs/performance.md).
 *
 * hiredis parses one reply at a time and frees it (its freeObject, on
 * the top-level object only) before it parses the next, so one arena per
 * connection is reset when its reply is freed. Nothing in linegate keeps
 * a reply past its callback (a pipeline copies to the request's pool).
 *
 * Pure C over hiredis: no nginx headers, unit-tested in
 * t/unit/test_arena.c.
 */


#ifndef _NGX_HTTP_LINEGATE_REDIS_ARENA_H_INCLUDED_
#define _NGX_HTTP_LINEGATE_REDIS_ARENA_H_INCLUDED_


#include <hiredis/hiredis.h>


/* the block an arena keeps; a larger reply takes blocks of its own */
#define NGX_HTTP_LINEGATE_REDIS_ARENA_BLOCK  (32 * 1024)

/*
 * The most elements an array reply may announce. hiredis 0.14 allocates
 * an array as soon as its header "*<n>" is read, and sets no bound: a
 * few bytes from a broken or hostile peer would ask for 8 * n bytes. A
 * larger count is a protocol error (the connection is dropped). The
 * largest replies linegate asks for are pages of 1000 entries and
 * CLUSTER SLOTS (at most 16384 ranges).
 */
#define NGX_HTTP_LINEGATE_REDIS_ARRAY_MAX    (1024 * 1024)


/*
 * Gives the reader of a context its arena and object functions: 0, or
 * -1 without memory (the reader keeps hiredis' own functions).
 */
int ngx_http_linegate_redis_arena_attach(redisReader *reader);

/*
 * The reader's context is being freed: the arena goes now, or with the
 * partial reply the reader still holds (hiredis frees that one last).
 */
void ngx_http_linegate_redis_arena_detach(redisReader *reader);


#endif /* _NGX_HTTP_LINEGATE_REDIS_ARENA_H_INCLUDED_ */
