
/*
 * linegate: where the Redis master is, asked of Redis Sentinel
 * (linegate_redis ... sentinel=<master name>), without blocking.
 */


#ifndef _NGX_HTTP_LINEGATE_REDIS_SENTINEL_H_INCLUDED_
#define _NGX_HTTP_LINEGATE_REDIS_SENTINEL_H_INCLUDED_


#include "ngx_http_linegate_module.h"


/* the master's address (host: an IP, NUL-terminated), or NGX_ERROR */
typedef void (*ngx_http_linegate_sentinel_found_pt)(ngx_int_t rc,
    ngx_str_t *host, ngx_int_t port);

/*
 * a sentinel announced a new master (+switch-master), at host:port as
 * the message wrote it (host not NUL-terminated, at most
 * NGX_SOCKADDR_STRLEN bytes); host NULL when it gave none readable
 */
typedef void (*ngx_http_linegate_sentinel_switched_pt)(ngx_str_t *host,
    ngx_int_t port);


/* NGX_ERROR: out of memory */
ngx_int_t ngx_http_linegate_sentinel_init(
    ngx_http_linegate_main_conf_t *lmcf, ngx_log_t *log,
    ngx_http_linegate_sentinel_found_pt found,
    ngx_http_linegate_sentinel_switched_pt switched);

/*
 * Asks the sentinels in turn, starting with the last one that answered
 * (or the one that announced +switch-master),
 * SENTINEL get-master-addr-by-name, each within the connect and command
 * timeouts (first: the store's first connection, requests waiting for
 * it: a third of the command timeout); found() is called once, with the
 * first address given, or NGX_ERROR when none answered. Also opens the
 * subscription to +switch-master, when there is none, on the sentinel
 * that answered, or the next one when that one refused it lately (lost
 * unless subscribed within the connect and command timeouts).
 */
void ngx_http_linegate_sentinel_discover(ngx_uint_t first);

/*
 * what the last discovery found is reached and is the master (its
 * ROLE): the +switch-master subscription moves to the sentinel that
 * named it when it is on another (stale, perhaps: it missed before),
 * unless that one refused the subscription lately
 */
void ngx_http_linegate_sentinel_reached(void);

/*
 * what the last discovery found could not be reached (refused, timed
 * out, closed before its ROLE) or is not the master (its ROLE): the
 * sentinel that named it is asked last by the next one. Not called for
 * a master reached and lost later: its sentinel stays first
 */
void ngx_http_linegate_sentinel_refused(void);

/*
 * the store's keepalive: reopens a lost +switch-master subscription, on
 * the sentinel after the one it was lost on (round robin; one that
 * refused it lately passed over), or PINGs the one made, lost unless
 * answered within linegate_redis_command_timeout
 */
void ngx_http_linegate_sentinel_keepalive(void);

void ngx_http_linegate_sentinel_exit(void);


#endif /* _NGX_HTTP_LINEGATE_REDIS_SENTINEL_H_INCLUDED_ */
