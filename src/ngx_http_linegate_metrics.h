
/*
 * linegate: counters for Prometheus, kept in shared memory for every
 * worker of one nginx, served by "linegate_api metrics;" in Prometheus's
 * text format (no Redis call).
 */


#ifndef _NGX_HTTP_LINEGATE_METRICS_H_INCLUDED_
#define _NGX_HTTP_LINEGATE_METRICS_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>


/* the families: one Prometheus metric name each */
typedef enum {
    NGX_HTTP_LINEGATE_M_ANSWERS = 0,      /* api, class */
    NGX_HTTP_LINEGATE_M_OUTCOMES,         /* api, outcome */
    NGX_HTTP_LINEGATE_M_REDIS_LATENCY,    /* histogram */
    NGX_HTTP_LINEGATE_M_REDIS_ERRORS,     /* kind */
    NGX_HTTP_LINEGATE_M_REDIS_RECONNECTS,
    NGX_HTTP_LINEGATE_M_REDIS_CONNECTED,  /* gauge: workers connected */
    NGX_HTTP_LINEGATE_M_STRIPE_CALLS,     /* endpoint, outcome */
    NGX_HTTP_LINEGATE_M_STRIPE_LATENCY,   /* histogram, endpoint */
    NGX_HTTP_LINEGATE_M_CACHE,            /* cache, result */
    NGX_HTTP_LINEGATE_M_RATELIMIT,        /* zone, status */
    NGX_HTTP_LINEGATE_M_WEBHOOKS,         /* type, result */
    NGX_HTTP_LINEGATE_M_RECONCILE_BACKLOG,  /* gauge */
    NGX_HTTP_LINEGATE_M_LAST
} ngx_http_linegate_metric_e;


/*
 * Add n to the series of family m whose labels are the given pairs
 * (names and values, nlabels of each; values are escaped here). Does
 * nothing when no metrics zone exists (no API configured).
 */
void ngx_http_linegate_metrics_add(ngx_http_linegate_metric_e m,
    ngx_uint_t nlabels, const char **names, ngx_str_t *values,
    ngx_atomic_int_t n);

/* a monotonic clock in microseconds, for durations */
uint64_t ngx_http_linegate_metrics_now_us(void);

/* a gauge without labels set to n */
void ngx_http_linegate_metrics_set(ngx_http_linegate_metric_e m,
    ngx_atomic_int_t n);

/* a histogram observation of ms milliseconds, with one optional label */
void ngx_http_linegate_metrics_observe(ngx_http_linegate_metric_e m,
    const char *name, ngx_str_t *value, ngx_msec_int_t ms);

/* shortcuts for the families with one or two labels */
void ngx_http_linegate_metrics_inc1(ngx_http_linegate_metric_e m,
    const char *name, const char *value);
void ngx_http_linegate_metrics_inc2(ngx_http_linegate_metric_e m,
    const char *name1, ngx_str_t *value1, const char *name2,
    ngx_str_t *value2);

/*
 * An answer of a linegate API (reply layer). A webhook's outcome is its
 * event type: it is also counted by type and result (the answer's class).
 */
void ngx_http_linegate_metrics_answer(ngx_uint_t api, ngx_str_t *name,
    ngx_uint_t status, ngx_str_t *outcome);

/* a lookup in a per-worker cache: "api_key", "account", "clerk" */
void ngx_http_linegate_metrics_cache(const char *cache, ngx_uint_t hit);

/* a rate-limit decision of a zone: "PASSED", "REJECTED", ... */
void ngx_http_linegate_metrics_ratelimit(const char *zone,
    const char *status);

/* configuration time: the zone, once some location serves an API */
ngx_int_t ngx_http_linegate_metrics_zone(ngx_conf_t *cf, void *tag);

/*
 * A process's start (any: a worker, a cache manager or loader): counts
 * into its cycle's zone, or nowhere; a dead process's share of the
 * gauges, left in the same process slot, is taken off.
 */
void ngx_http_linegate_metrics_init_process(ngx_cycle_t *cycle);

/* the text "linegate_api metrics;" serves, in pool; NULL: no memory */
ngx_buf_t *ngx_http_linegate_metrics_text(ngx_pool_t *pool);


#endif /* _NGX_HTTP_LINEGATE_METRICS_H_INCLUDED_ */
