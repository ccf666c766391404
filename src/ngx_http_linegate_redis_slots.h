/* TEMPORARY stand-in until h-slots lands (same API) */
#ifndef _NGX_HTTP_LINEGATE_REDIS_SLOTS_H_INCLUDED_
#define _NGX_HTTP_LINEGATE_REDIS_SLOTS_H_INCLUDED_
#include <stddef.h>
#include <stdint.h>
#include <hiredis/hiredis.h>
#define NGX_HTTP_LINEGATE_REDIS_SLOTS      16384
#define NGX_HTTP_LINEGATE_REDIS_HOST_MAX   46
unsigned ngx_http_linegate_redis_keyslot(const unsigned char *key,
    size_t len);
typedef struct {
    unsigned   ask;
    unsigned   slot;
    char       host[NGX_HTTP_LINEGATE_REDIS_HOST_MAX + 1];
    size_t     host_len;
    int        port;
} ngx_http_linegate_redis_redirect_t;
int ngx_http_linegate_redis_redirect_parse(const char *str, size_t len,
    ngx_http_linegate_redis_redirect_t *rd);
typedef struct {
    unsigned   first;
    unsigned   last;
    char       host[NGX_HTTP_LINEGATE_REDIS_HOST_MAX + 1];
    size_t     host_len;
    int        port;
} ngx_http_linegate_redis_range_t;
int ngx_http_linegate_redis_slots_parse(const redisReply *reply,
    ngx_http_linegate_redis_range_t *ranges, size_t max, size_t *n);
int ngx_http_linegate_redis_slots_complete(
    const ngx_http_linegate_redis_range_t *ranges, size_t n);
#endif
