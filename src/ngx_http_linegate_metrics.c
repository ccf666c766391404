
/*
 * linegate: counters for Prometheus.
 *
 * One shared-memory zone holds a fixed table of series: a family (the
 * metric name), its label pairs as the text Prometheus shows, and the
 * values (a counter or gauge uses one word, a histogram its buckets, sum
 * and count). Workers find a series without a lock (open addressing over
 * entries that, once published, never change) and add to it atomically;
 * only the first use of a new label set takes the zone's mutex. Label
 * values are reduced to a safe alphabet, so the output needs no escaping
 * and an untrusted value (a webhook's event type) cannot break the format;
 * a full table counts into linegate_metrics_dropped_total instead.
 *
 * The zone exists only when some location serves a linegate API, and is
 * kept across reloads (counters are monotonic for Prometheus). A gauge
 * that processes move up and down (linegate_redis_connected) is also
 * noted by the process's slot in nginx's process table: a process that
 * dies without taking its share off (a crash, kill -9) would otherwise
 * leave it there for the zone's life, and its replacement, which the
 * master starts in the same slot, takes it off when it starts.
 *
 * A series is never removed nor reused, not even a gauge at 0 whose
 * Redis node is gone: a worker may hold it without the lock (between its
 * lookup and its addition, or in its memo) while another rewrote it, and
 * the slots' shares name it by index, so an addition meant for the old
 * node would land on the new one. Changing node addresses can fill the
 * table: docs/operator.md ("Metrics") gives the bound and the remedy.
 */


#include "ngx_http_linegate_module.h"
#include "ngx_http_linegate_metrics.h"
#include "ngx_http_linegate_chars.h"


#define NGX_HTTP_LINEGATE_M_SERIES     1024
#define NGX_HTTP_LINEGATE_M_LABELS     160
#define NGX_HTTP_LINEGATE_M_VALUE      48
#define NGX_HTTP_LINEGATE_M_BUCKETS    12
#define NGX_HTTP_LINEGATE_M_ZONE_SIZE  (512 * 1024)
#define NGX_HTTP_LINEGATE_M_APIS       32
#define NGX_HTTP_LINEGATE_M_MEMO       64
/* process slots noted, gauge series noted per slot (>= Redis nodes) */
#define NGX_HTTP_LINEGATE_M_PROCS      256
#define NGX_HTTP_LINEGATE_M_HELD       64


typedef struct {
    ngx_atomic_t                    ready;
    ngx_uint_t                      family;
    uint32_t                        hash;
    size_t                          len;
    u_char                          labels[NGX_HTTP_LINEGATE_M_LABELS];
    /* buckets, then the sum in microseconds, then the count */
    ngx_atomic_t                    v[NGX_HTTP_LINEGATE_M_BUCKETS + 2];
} ngx_http_linegate_series_t;


/* a process's share of a gauge series; written only by its slot's process */
typedef struct {
    uint16_t                        series;   /* its index + 1, 0: none */
    int16_t                         n;
} ngx_http_linegate_held_t;


typedef struct {
    ngx_atomic_t                    dropped;
    ngx_http_linegate_series_t      series[NGX_HTTP_LINEGATE_M_SERIES];
    ngx_http_linegate_held_t        held[NGX_HTTP_LINEGATE_M_PROCS]
                                        [NGX_HTTP_LINEGATE_M_HELD];
} ngx_http_linegate_metrics_shm_t;


typedef struct {
    const char                     *name;
    const char                     *type;
    const char                     *help;
} ngx_http_linegate_family_t;


static ngx_int_t ngx_http_linegate_metrics_init_zone(
    ngx_shm_zone_t *shm_zone, void *data);
static void ngx_http_linegate_metrics_detach(void *data);
static ngx_http_linegate_series_t *ngx_http_linegate_metrics_series(
    ngx_uint_t family, u_char *labels, size_t len);
static ngx_http_linegate_series_t *ngx_http_linegate_metrics_lookup(
    ngx_uint_t family, u_char *labels, size_t len);
static void ngx_http_linegate_metrics_hold(ngx_http_linegate_series_t *s,
    ngx_atomic_int_t n);
static u_char *ngx_http_linegate_metrics_label(u_char *p, u_char *last,
    const char *name, u_char *value, size_t len);
static void ngx_http_linegate_metrics_answer_class(ngx_uint_t api,
    ngx_str_t *name, ngx_uint_t cls, ngx_str_t *c);
static ngx_str_t *ngx_http_linegate_metrics_webhook_type(
    ngx_str_t *outcome);
static u_char *ngx_http_linegate_metrics_render(u_char *p, u_char *last,
    ngx_uint_t family, uint8_t *live);
static u_char *ngx_http_linegate_metrics_histogram(u_char *p, u_char *last,
    const char *name, ngx_http_linegate_series_t *s);


static ngx_http_linegate_family_t  ngx_http_linegate_families[] = {
    { "linegate_http_answers_total", "counter",
      "Answers of linegate's APIs by API and status class." },
    { "linegate_http_outcomes_total", "counter",
      "Answers of linegate's APIs by API and outcome ($linegate_outcome)." },
    { "linegate_redis_command_duration_seconds", "histogram",
      "Time from sending a Redis command or pipeline to its reply." },
    { "linegate_redis_errors_total", "counter",
      "Redis commands that got no usable answer, by kind." },
    { "linegate_redis_reconnects_total", "counter",
      "Redis connections established after the first one of a worker." },
    { "linegate_redis_connected", "gauge",
      "Workers whose Redis connection is established, by node." },
    { "linegate_stripe_requests_total", "counter",
      "Stripe subrequests by endpoint and outcome." },
    { "linegate_stripe_request_duration_seconds", "histogram",
      "Time of Stripe subrequests by endpoint." },
    { "linegate_cache_requests_total", "counter",
      "Lookups in the per-worker credential caches by cache and result." },
    { "linegate_ratelimit_decisions_total", "counter",
      "Rate-limit decisions by zone and status." },
    { "linegate_webhook_events_total", "counter",
      "Stripe webhook events by type and result." },
    { "linegate_reconcile_backlog", "gauge",
      "Entries on lg:{fleet}:reconcile, as last read by a worker's keepalive." }
};


/* upper bounds of the histograms' buckets, in microseconds */
static ngx_uint_t  ngx_http_linegate_bounds[NGX_HTTP_LINEGATE_M_BUCKETS] = {
    250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000,
    500000, 1000000
};


static ngx_http_linegate_metrics_shm_t  *ngx_http_linegate_metrics;
static ngx_slab_pool_t                  *ngx_http_linegate_metrics_pool;
static ngx_cycle_t                      *ngx_http_linegate_metrics_cycle;

/*
 * This process's memos of series (pointers into the zone): forgotten
 * with the zone whenever the cycle changes, see attach()
 */
static ngx_http_linegate_series_t *ngx_http_linegate_metrics_memo[
    NGX_HTTP_LINEGATE_M_MEMO];
static ngx_http_linegate_series_t *ngx_http_linegate_metrics_known[
    NGX_HTTP_LINEGATE_M_APIS][6];


ngx_int_t
ngx_http_linegate_metrics_zone(ngx_conf_t *cf, void *tag)
{
    ngx_shm_zone_t  *shm;
    ngx_str_t        name = ngx_string("linegate_metrics");

    shm = ngx_shared_memory_add(cf, &name,
                                NGX_HTTP_LINEGATE_M_ZONE_SIZE, tag);
    if (shm == NULL) {
        return NGX_ERROR;
    }

    shm->init = ngx_http_linegate_metrics_init_zone;

    return NGX_OK;
}


/*
 * The zone of a cycle, or none. The pointers are found again whenever
 * ngx_cycle is not the cycle they were found in, not only set by the
 * zone's init: they outlive a reload, and a configuration that no longer
 * serves an API has no zone, whose old one the master unmaps. A worker
 * finds them at its start (its cycle never changes); nginx without a
 * master (master_process off) serves on in its one process after a
 * reload, and finds them at its first count in the new cycle (a reload
 * that failed keeps the old cycle, and them). The memos of series go
 * with them: after a reload without a zone they pointed into unmapped
 * memory (an answer on a connection kept from the old cycle crashed the
 * process), and a zone made again later may be elsewhere.
 *
 * The cycle is remembered by its address, which a later cycle may get
 * once this one is freed (without a master, nginx frees an old cycle
 * when its last connection is gone): the cycle's pool forgets it first.
 */
static void
ngx_http_linegate_metrics_attach(ngx_cycle_t *cycle)
{
    ngx_uint_t           i;
    ngx_list_part_t     *part;
    ngx_shm_zone_t      *zone;
    ngx_slab_pool_t     *sp;
    ngx_pool_cleanup_t  *cln;

    ngx_http_linegate_metrics = NULL;
    ngx_http_linegate_metrics_pool = NULL;
    ngx_http_linegate_metrics_cycle = NULL;

    ngx_memzero(ngx_http_linegate_metrics_memo,
                sizeof(ngx_http_linegate_metrics_memo));
    ngx_memzero(ngx_http_linegate_metrics_known,
                sizeof(ngx_http_linegate_metrics_known));

    cln = ngx_pool_cleanup_add(cycle->pool, 0);
    if (cln == NULL) {
        /* no zone, and attach() again at the next count */
        return;
    }

    cln->handler = ngx_http_linegate_metrics_detach;
    cln->data = cycle;

    ngx_http_linegate_metrics_cycle = cycle;

    part = &cycle->shared_memory.part;
    zone = part->elts;

    for (i = 0; /* void */ ; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                return;
            }

            part = part->next;
            zone = part->elts;
            i = 0;
        }

        if (zone[i].init != ngx_http_linegate_metrics_init_zone) {
            continue;
        }

        sp = (ngx_slab_pool_t *) zone[i].shm.addr;

        ngx_http_linegate_metrics = sp->data;
        ngx_http_linegate_metrics_pool = sp;

        return;
    }
}


/* a cycle freed: its address may be the next one's */
static void
ngx_http_linegate_metrics_detach(void *data)
{
    if (ngx_http_linegate_metrics_cycle == data) {
        ngx_http_linegate_metrics = NULL;
        ngx_http_linegate_metrics_pool = NULL;
        ngx_http_linegate_metrics_cycle = NULL;
    }
}


/* the counters of this cycle, NULL: none */
static ngx_http_linegate_metrics_shm_t *
ngx_http_linegate_metrics_get(void)
{
    if (ngx_http_linegate_metrics_cycle != ngx_cycle) {
        ngx_http_linegate_metrics_attach((ngx_cycle_t *) ngx_cycle);
    }

    return ngx_http_linegate_metrics;
}


/*
 * Any process's start (a worker, a cache manager or loader): what the
 * dead process of its slot still held is taken off. The master starts a
 * process only in a slot whose last process it has reaped.
 */
void
ngx_http_linegate_metrics_init_process(ngx_cycle_t *cycle)
{
    ngx_uint_t                   i;
    ngx_http_linegate_held_t    *h;
    ngx_http_linegate_series_t  *s;

    ngx_http_linegate_metrics_attach(cycle);

    if (ngx_http_linegate_metrics == NULL
        || ngx_process_slot < 0
        || ngx_process_slot >= NGX_HTTP_LINEGATE_M_PROCS)
    {
        return;
    }

    h = ngx_http_linegate_metrics->held[ngx_process_slot];

    for (i = 0; i < NGX_HTTP_LINEGATE_M_HELD; i++) {
        if (h[i].series == 0) {
            continue;
        }

        s = &ngx_http_linegate_metrics->series[h[i].series - 1];
        (void) ngx_atomic_fetch_add(&s->v[0], (ngx_atomic_int_t) -h[i].n);

        h[i].series = 0;
        h[i].n = 0;
    }
}


static ngx_int_t
ngx_http_linegate_metrics_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_slab_pool_t  *sp;

    sp = (ngx_slab_pool_t *) shm_zone->shm.addr;

    if (sp->data == NULL) {
        sp->data = ngx_slab_calloc(sp,
                                   sizeof(ngx_http_linegate_metrics_shm_t));
        if (sp->data == NULL) {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


void
ngx_http_linegate_metrics_add(ngx_http_linegate_metric_e m,
    ngx_uint_t nlabels, const char **names, ngx_str_t *values,
    ngx_atomic_int_t n)
{
    u_char                      *p, *last;
    ngx_uint_t                   i;
    ngx_http_linegate_series_t  *s;
    u_char                       labels[NGX_HTTP_LINEGATE_M_LABELS];

    if (ngx_http_linegate_metrics_get() == NULL) {
        return;
    }

    p = labels;
    last = labels + sizeof(labels);

    for (i = 0; i < nlabels; i++) {
        if (i > 0 && p < last) {
            *p++ = ',';
        }

        p = ngx_http_linegate_metrics_label(p, last, names[i],
                                            values[i].data, values[i].len);
    }

    s = ngx_http_linegate_metrics_series(m, labels, p - labels);
    if (s == NULL) {
        return;
    }

    if (ngx_http_linegate_families[m].type[0] != 'g') {
        (void) ngx_atomic_fetch_add(&s->v[0], n);
        return;
    }

    /*
     * A gauge: this process's share noted too. A death between the two
     * steps leaves one too many, never one too few.
     */
    if (n > 0) {
        (void) ngx_atomic_fetch_add(&s->v[0], n);
        ngx_http_linegate_metrics_hold(s, n);

    } else {
        ngx_http_linegate_metrics_hold(s, n);
        (void) ngx_atomic_fetch_add(&s->v[0], n);
    }
}


/*
 * This process's share of a gauge series, by its slot; none noted when
 * the slot or the series is beyond the table (counted as before).
 */
static void
ngx_http_linegate_metrics_hold(ngx_http_linegate_series_t *s,
    ngx_atomic_int_t n)
{
    ngx_uint_t                 i, idx;
    ngx_http_linegate_held_t  *h, *empty;

    if (ngx_process_slot < 0
        || ngx_process_slot >= NGX_HTTP_LINEGATE_M_PROCS)
    {
        return;
    }

    h = ngx_http_linegate_metrics->held[ngx_process_slot];
    idx = s - ngx_http_linegate_metrics->series + 1;
    empty = NULL;

    for (i = 0; i < NGX_HTTP_LINEGATE_M_HELD; i++) {
        if (h[i].series == idx) {
            h[i].n = (int16_t) (h[i].n + n);

            if (h[i].n == 0) {
                h[i].series = 0;
            }

            return;
        }

        if (h[i].series == 0 && empty == NULL) {
            empty = &h[i];
        }
    }

    if (empty != NULL && n > 0) {
        empty->series = (uint16_t) idx;
        empty->n = (int16_t) n;
    }
}


uint64_t
ngx_http_linegate_metrics_now_us(void)
{
    struct timespec  ts;

    (void) clock_gettime(CLOCK_MONOTONIC, &ts);

    return (uint64_t) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}


void
ngx_http_linegate_metrics_set(ngx_http_linegate_metric_e m,
    ngx_atomic_int_t n)
{
    ngx_http_linegate_series_t  *s;

    if (ngx_http_linegate_metrics_get() == NULL) {
        return;
    }

    s = ngx_http_linegate_metrics_series(m, NULL, 0);
    if (s != NULL) {
        s->v[0] = n;
    }
}


void
ngx_http_linegate_metrics_inc1(ngx_http_linegate_metric_e m,
    const char *name, const char *value)
{
    ngx_str_t  v;

    v.data = (u_char *) value;
    v.len = ngx_strlen(value);

    ngx_http_linegate_metrics_add(m, 1, &name, &v, 1);
}


void
ngx_http_linegate_metrics_inc2(ngx_http_linegate_metric_e m,
    const char *name1, ngx_str_t *value1, const char *name2,
    ngx_str_t *value2)
{
    const char  *names[2];
    ngx_str_t    values[2];

    names[0] = name1;
    names[1] = name2;
    values[0] = *value1;
    values[1] = *value2;

    ngx_http_linegate_metrics_add(m, 2, names, values, 1);
}


void
ngx_http_linegate_metrics_observe(ngx_http_linegate_metric_e m,
    const char *name, ngx_str_t *value, ngx_msec_int_t us)
{
    size_t                       len;
    ngx_uint_t                   b;
    ngx_http_linegate_series_t  *s;
    u_char                       labels[NGX_HTTP_LINEGATE_M_LABELS];

    if (ngx_http_linegate_metrics_get() == NULL) {
        return;
    }

    len = 0;

    if (name != NULL) {
        len = ngx_http_linegate_metrics_label(labels, labels + sizeof(labels),
                                              name, value->data, value->len)
              - labels;
    }

    s = ngx_http_linegate_metrics_series(m, labels, len);
    if (s == NULL) {
        return;
    }

    if (us < 0) {
        us = 0;
    }

    for (b = 0; b < NGX_HTTP_LINEGATE_M_BUCKETS; b++) {
        if ((ngx_uint_t) us <= ngx_http_linegate_bounds[b]) {
            (void) ngx_atomic_fetch_add(&s->v[b], 1);
            break;
        }
    }

    (void) ngx_atomic_fetch_add(&s->v[NGX_HTTP_LINEGATE_M_BUCKETS], us);
    (void) ngx_atomic_fetch_add(&s->v[NGX_HTTP_LINEGATE_M_BUCKETS + 1], 1);
}


void
ngx_http_linegate_metrics_answer(ngx_uint_t api, ngx_str_t *name,
    ngx_uint_t status, ngx_str_t *outcome)
{
    u_char     cls[3];
    ngx_str_t  c;

    if (status < 100 || status > 599
        || ngx_http_linegate_metrics_get() == NULL)
    {
        return;
    }

    cls[0] = (u_char) ('0' + status / 100);
    cls[1] = 'x';
    cls[2] = 'x';
    c.data = cls;
    c.len = 3;

    ngx_http_linegate_metrics_answer_class(api, name, status / 100, &c);

    if (outcome->len == 0) {
        return;
    }

    if (api == NGX_HTTP_LINEGATE_API_STRIPE_WEBHOOK) {
        ngx_http_linegate_metrics_inc2(NGX_HTTP_LINEGATE_M_WEBHOOKS, "type",
            ngx_http_linegate_metrics_webhook_type(outcome), "result", &c);
        return;
    }

    ngx_http_linegate_metrics_inc2(NGX_HTTP_LINEGATE_M_OUTCOMES,
                                   "api", name, "outcome", outcome);
}


/*
 * A webhook's outcome is its event's type once the body is read: Stripe
 * has some 250 of them, and an endpoint subscribed to everything would
 * take a quarter of the table (and a signed body can say anything). The
 * label is one of the types linegate handles, "other" for any other type
 * (Stripe's all have a '.'), or linegate's own outcome (bad_signature,
 * nginx_error, error codes: words without a '.').
 */
static ngx_str_t *
ngx_http_linegate_metrics_webhook_type(ngx_str_t *outcome)
{
    ngx_uint_t  i;

    static ngx_str_t  handled[] = {
        ngx_string("invoice.paid"),
        ngx_string("invoice.voided"),
        ngx_string("invoice.marked_uncollectible"),
        ngx_string("customer.subscription.created"),
        ngx_string("customer.subscription.updated"),
        ngx_string("customer.subscription.deleted")
    };
    static ngx_str_t  other = ngx_string("other");

    for (i = 0; i < sizeof(handled) / sizeof(handled[0]); i++) {
        if (outcome->len == handled[i].len
            && ngx_strncmp(outcome->data, handled[i].data, outcome->len) == 0)
        {
            return outcome;
        }
    }

    if (ngx_strlchr(outcome->data, outcome->data + outcome->len, '.')
        != NULL)
    {
        return &other;
    }

    return outcome;
}


/*
 * Series never move once published: each worker remembers where the
 * answers of an API and class are, so the hottest count is one atomic
 * addition.
 */
static void
ngx_http_linegate_metrics_answer_class(ngx_uint_t api, ngx_str_t *name,
    ngx_uint_t cls, ngx_str_t *c)
{
    u_char                              *p;
    const char                          *names[2];
    ngx_str_t                            values[2];
    ngx_http_linegate_series_t          *s;
    u_char                               labels[NGX_HTTP_LINEGATE_M_LABELS];

    if (api >= NGX_HTTP_LINEGATE_M_APIS) {
        names[0] = "api";
        names[1] = "class";
        values[0] = *name;
        values[1] = *c;
        ngx_http_linegate_metrics_add(NGX_HTTP_LINEGATE_M_ANSWERS, 2, names,
                                      values, 1);
        return;
    }

    s = ngx_http_linegate_metrics_known[api][cls];

    if (s == NULL) {
        p = ngx_http_linegate_metrics_label(labels, labels + sizeof(labels),
                                            "api", name->data, name->len);
        *p++ = ',';
        p = ngx_http_linegate_metrics_label(p, labels + sizeof(labels),
                                            "class", c->data, c->len);

        s = ngx_http_linegate_metrics_series(NGX_HTTP_LINEGATE_M_ANSWERS,
                                             labels, p - labels);
        if (s == NULL) {
            return;
        }

        ngx_http_linegate_metrics_known[api][cls] = s;
    }

    (void) ngx_atomic_fetch_add(&s->v[0], 1);
}


void
ngx_http_linegate_metrics_cache(const char *cache, ngx_uint_t hit)
{
    ngx_str_t  c, result;

    c.data = (u_char *) cache;
    c.len = ngx_strlen(cache);

    if (hit) {
        ngx_str_set(&result, "hit");

    } else {
        ngx_str_set(&result, "miss");
    }

    ngx_http_linegate_metrics_inc2(NGX_HTTP_LINEGATE_M_CACHE, "cache", &c,
                                   "result", &result);
}


void
ngx_http_linegate_metrics_ratelimit(const char *zone, const char *status)
{
    ngx_str_t  z, st;

    z.data = (u_char *) zone;
    z.len = ngx_strlen(zone);
    st.data = (u_char *) status;
    st.len = ngx_strlen(status);

    ngx_http_linegate_metrics_inc2(NGX_HTTP_LINEGATE_M_RATELIMIT, "zone", &z,
                                   "status", &st);
}


/*
 * The series of a family and label set, created on first use. Entries
 * are published (ready) only once complete, and never change after.
 */
static ngx_http_linegate_series_t *
ngx_http_linegate_metrics_series(ngx_uint_t family, u_char *labels,
    size_t len)
{
    ngx_uint_t                   m;
    ngx_http_linegate_series_t  *s;

    if (labels == NULL) {
        /* a family without labels (a gauge): memcmp() wants a pointer */
        labels = (u_char *) "";
        len = 0;
    }

    /*
     * This worker's last series for a cheap digest of the labels: a hit,
     * checked byte for byte, saves the CRC and the probing (most calls
     * repeat a handful of label sets).
     */
    m = (family * 31 + len
         + (len ? labels[len / 2] * 7 + labels[len - 2] * 3 : 0))
        % NGX_HTTP_LINEGATE_M_MEMO;

    s = ngx_http_linegate_metrics_memo[m];

    if (s != NULL && s->family == family && s->len == len
        && ngx_memcmp(s->labels, labels, len) == 0)
    {
        return s;
    }

    s = ngx_http_linegate_metrics_lookup(family, labels, len);

    if (s != NULL) {
        ngx_http_linegate_metrics_memo[m] = s;
    }

    return s;
}


static ngx_http_linegate_series_t *
ngx_http_linegate_metrics_lookup(ngx_uint_t family, u_char *labels,
    size_t len)
{
    uint32_t                     hash;
    ngx_uint_t                   i, n, locked;
    ngx_http_linegate_series_t  *s;

    hash = ngx_murmur_hash2(labels, len) ^ (uint32_t) (family * 2654435761u);
    locked = 0;
    s = NULL;

again:

    i = hash % NGX_HTTP_LINEGATE_M_SERIES;

    for (n = 0; n < NGX_HTTP_LINEGATE_M_SERIES; n++) {
        s = &ngx_http_linegate_metrics->series[i];

        if (!s->ready) {
            break;
        }

        /*
         * ready is read before the entry's fields: without the barrier a
         * weakly ordered CPU (arm64) may read them first, from an entry
         * another worker is still writing (a wrong or torn match); this
         * pairs with the barrier before ready = 1 below. A series found
         * once is kept in this process's memo and read without it.
         */
        ngx_memory_barrier();

        if (s->hash == hash && s->family == family && s->len == len
            && ngx_memcmp(s->labels, labels, len) == 0)
        {
            if (locked) {
                ngx_shmtx_unlock(&ngx_http_linegate_metrics_pool->mutex);
            }

            return s;
        }

        i = (i + 1) % NGX_HTTP_LINEGATE_M_SERIES;
    }

    if (!locked) {
        /* another worker may be adding the same series: look again */
        ngx_shmtx_lock(&ngx_http_linegate_metrics_pool->mutex);
        locked = 1;
        goto again;
    }

    if (n == NGX_HTTP_LINEGATE_M_SERIES) {
        ngx_shmtx_unlock(&ngx_http_linegate_metrics_pool->mutex);
        (void) ngx_atomic_fetch_add(&ngx_http_linegate_metrics->dropped, 1);
        return NULL;
    }

    s->family = family;
    s->hash = hash;
    s->len = len;
    ngx_memcpy(s->labels, labels, len);

    /*
     * the fields are written before ready, for readers without the lock:
     * they pair with a barrier after their read of ready (here, and in
     * the scrape's ngx_http_linegate_metrics_text())
     */
    ngx_memory_barrier();
    s->ready = 1;

    ngx_shmtx_unlock(&ngx_http_linegate_metrics_pool->mutex);

    return s;
}


/*
 * name="value", the value cut to NGX_HTTP_LINEGATE_M_VALUE bytes and
 * reduced to letters, digits and "_.:/-" (others become "_").
 */
static u_char *
ngx_http_linegate_metrics_label(u_char *p, u_char *last, const char *name,
    u_char *value, size_t len)
{
    u_char  c;
    size_t  i, nlen;

    nlen = ngx_strlen(name);

    if (len > NGX_HTTP_LINEGATE_M_VALUE) {
        len = NGX_HTTP_LINEGATE_M_VALUE;
    }

    if ((size_t) (last - p) < nlen + len + 3) {
        return p;
    }

    p = ngx_cpymem(p, name, nlen);
    *p++ = '=';
    *p++ = '"';

    for (i = 0; i < len; i++) {
        c = value[i];

        if (!ngx_http_linegate_char_is(c, NGX_HTTP_LINEGATE_CHARS_LABEL)) {
            c = '_';
        }

        *p++ = c;
    }

    *p++ = '"';

    return p;
}


/*
 * The text of GET /metrics (Prometheus exposition format), in a buffer
 * the size of what the live series print, not of a full table of
 * histograms (3.75 MB a scrape): the series published when the scrape
 * starts are noted, their lines measured, then only they are printed (one
 * published meanwhile waits for the next scrape). A published series
 * never changes but its values, whose digits each line allows for, so
 * the text is whole; ngx_slprintf() keeps it in the buffer regardless.
 */
ngx_buf_t *
ngx_http_linegate_metrics_text(ngx_pool_t *pool)
{
    size_t                       size, name;
    ngx_buf_t                   *b;
    ngx_uint_t                   i, f;
    ngx_http_linegate_series_t  *s;
    ngx_http_linegate_family_t  *fam;
    uint8_t                      live[NGX_HTTP_LINEGATE_M_SERIES / 8];

    static u_char  dropped[] =
        "# HELP linegate_metrics_dropped_total Updates "
        "lost because the series table was full.\n"
        "# TYPE linegate_metrics_dropped_total counter\n"
        "linegate_metrics_dropped_total %uA\n";

    if (ngx_http_linegate_metrics_get() == NULL) {
        /* no zone: nothing to show (an empty answer, as before) */
        return ngx_create_temp_buf(pool, 1);
    }

    ngx_memzero(live, sizeof(live));

    for (i = 0; i < NGX_HTTP_LINEGATE_M_SERIES; i++) {
        if (ngx_http_linegate_metrics->series[i].ready) {
            live[i / 8] |= (uint8_t) (1 << (i % 8));
        }
    }

    /*
     * ready was read before the series' fields: on a weakly ordered CPU
     * (arm64) those reads could otherwise see an entry another worker is
     * still writing; this pairs with lookup()'s barrier before ready = 1
     */
    ngx_memory_barrier();

    size = sizeof(dropped) + NGX_ATOMIC_T_LEN;

    for (f = 0; f < NGX_HTTP_LINEGATE_M_LAST; f++) {
        fam = &ngx_http_linegate_families[f];

        /* HELP and TYPE, and "name 0" for a family without a series */
        size += 3 * ngx_strlen(fam->name) + ngx_strlen(fam->help)
                + ngx_strlen(fam->type) + 32;
    }

    for (i = 0; i < NGX_HTTP_LINEGATE_M_SERIES; i++) {
        if (!(live[i / 8] & (1 << (i % 8)))) {
            continue;
        }

        s = &ngx_http_linegate_metrics->series[i];
        name = ngx_strlen(ngx_http_linegate_families[s->family].name);

        /*
         * a line: the name and a suffix ("_bucket"), the labels with
         * le="..." and its braces, the value (a sum: two numbers)
         */
        size += (name + s->len + 48 + 2 * NGX_ATOMIC_T_LEN)
                * (ngx_http_linegate_families[s->family].type[0] == 'h'
                   ? NGX_HTTP_LINEGATE_M_BUCKETS + 3 : 1);
    }

    b = ngx_create_temp_buf(pool, size);
    if (b == NULL) {
        return NULL;
    }

    for (f = 0; f < NGX_HTTP_LINEGATE_M_LAST; f++) {
        b->last = ngx_http_linegate_metrics_render(b->last, b->end, f, live);
    }

    b->last = ngx_slprintf(b->last, b->end, (char *) dropped,
                           ngx_http_linegate_metrics->dropped);

    return b;
}


static u_char *
ngx_http_linegate_metrics_render(u_char *p, u_char *last, ngx_uint_t family,
    uint8_t *live)
{
    ngx_uint_t                   i, found;
    ngx_http_linegate_series_t  *s;
    ngx_http_linegate_family_t  *f;

    f = &ngx_http_linegate_families[family];
    found = 0;

    for (i = 0; i < NGX_HTTP_LINEGATE_M_SERIES; i++) {
        s = &ngx_http_linegate_metrics->series[i];

        if (!(live[i / 8] & (1 << (i % 8))) || s->family != family) {
            continue;
        }

        if (!found++) {
            p = ngx_slprintf(p, last, "# HELP %s %s\n# TYPE %s %s\n",
                             f->name, f->help, f->name, f->type);
        }

        if (f->type[0] == 'h') {
            p = ngx_http_linegate_metrics_histogram(p, last, f->name, s);
            continue;
        }

        if (s->len) {
            p = ngx_slprintf(p, last, "%s{%*s} %A\n", f->name, s->len,
                             s->labels, (ngx_atomic_int_t) s->v[0]);

        } else {
            p = ngx_slprintf(p, last, "%s %A\n", f->name,
                             (ngx_atomic_int_t) s->v[0]);
        }
    }

    if (!found
        && (family == NGX_HTTP_LINEGATE_M_REDIS_RECONNECTS
            || family == NGX_HTTP_LINEGATE_M_RECONCILE_BACKLOG))
    {
        /* the families without labels always show a value */
        p = ngx_slprintf(p, last, "# HELP %s %s\n# TYPE %s %s\n%s 0\n",
                         f->name, f->help, f->name, f->type, f->name);
    }

    return p;
}


static u_char *
ngx_http_linegate_metrics_histogram(u_char *p, u_char *last,
    const char *name, ngx_http_linegate_series_t *s)
{
    u_char            *sep;
    ngx_uint_t         b;
    ngx_atomic_uint_t  cumulative, us, count;

    sep = (u_char *) (s->len ? "," : "");
    cumulative = 0;

    /* read the count first: buckets are then never below it */
    count = s->v[NGX_HTTP_LINEGATE_M_BUCKETS + 1];
    us = s->v[NGX_HTTP_LINEGATE_M_BUCKETS];

    for (b = 0; b < NGX_HTTP_LINEGATE_M_BUCKETS; b++) {
        cumulative += s->v[b];

        if (cumulative > count) {
            count = cumulative;
        }

        p = ngx_slprintf(p, last, "%s_bucket{%*s%sle=\"%ui.%06ui\"} %uA\n",
                         name, s->len, s->labels, sep,
                         ngx_http_linegate_bounds[b] / 1000000,
                         ngx_http_linegate_bounds[b] % 1000000, cumulative);
    }

    p = ngx_slprintf(p, last, "%s_bucket{%*s%sle=\"+Inf\"} %uA\n",
                     name, s->len, s->labels, sep, count);

    if (s->len) {
        p = ngx_slprintf(p, last,
                         "%s_sum{%*s} %uA.%06uA\n%s_count{%*s} %uA\n",
                         name, s->len, s->labels, us / 1000000,
                         us % 1000000, name, s->len, s->labels, count);

    } else {
        p = ngx_slprintf(p, last, "%s_sum %uA.%06uA\n%s_count %uA\n",
                         name, us / 1000000, us % 1000000, name, count);
    }

    return p;
}
