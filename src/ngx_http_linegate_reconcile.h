
/*
 * linegate: reconciliation of the reconcile stream's entries, the purchases
 * whose Stripe subscription and Redis record disagree (or may): the
 * operator API's POST reconciliation/run, and the timer that has a worker
 * call it by itself (linegate_reconcile_auto).
 */


#ifndef _NGX_HTTP_LINEGATE_RECONCILE_H_INCLUDED_
#define _NGX_HTTP_LINEGATE_RECONCILE_H_INCLUDED_


#include "ngx_http_linegate_module.h"


/* POST <operator prefix>reconciliation/run, the caller authenticated */
void ngx_http_linegate_reconcile_run(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx);

/* linegate_reconcile_auto <url> [interval=<time>] */
char *ngx_http_linegate_reconcile_auto_conf(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
ngx_int_t ngx_http_linegate_reconcile_auto_init_process(ngx_cycle_t *cycle);
void ngx_http_linegate_reconcile_auto_exit_process(ngx_cycle_t *cycle);


#endif /* _NGX_HTTP_LINEGATE_RECONCILE_H_INCLUDED_ */
