
/*
 * linegate: the hash of a short key (a Redis key name, a metrics label
 * set) for the worker's fixed tables: the leases, the gateway limiter's
 * refusals, the metrics series. Eight bytes a step: crc32 takes a byte a
 * step through a table, and was a tenth of a GET's lease lookup. Not a
 * defence against chosen keys: every table that uses it compares the
 * whole key, so keys that collide only share a set, as in any table.
 *
 * Pure C: no nginx headers, unit-tested in t/unit/test_hash.c.
 */


#ifndef _NGX_HTTP_LINEGATE_HASH_H_INCLUDED_
#define _NGX_HTTP_LINEGATE_HASH_H_INCLUDED_


#include <stddef.h>
#include <stdint.h>


/* every bit of the result depends on every byte of data[0 .. len) */
uint32_t ngx_http_linegate_hash(const unsigned char *data, size_t len);


#endif /* _NGX_HTTP_LINEGATE_HASH_H_INCLUDED_ */
