
/*
 * linegate: a worker's leases of a GCRA key (rl_gcra.lua's want): several
 * admissions reserved in Redis by one decision and spent by this worker,
 * each within the lease time of that decision. Used by linegate_limit
 * (linegate_limit_zone lease=) and by the Lines API's workspace rate
 * (linegate_workspace_rate lease=). Per worker, no locking.
 */

#ifndef _NGX_HTTP_LINEGATE_LEASE_H_INCLUDED_
#define _NGX_HTTP_LINEGATE_LEASE_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>


/*
 * 4096 sets of 2 leases (about 2 MB a worker, allocated by its first
 * lease): a thousand busy keys share a set three at a time in about 9
 * sets (a direct-mapped table of 2048 had about 40% of them collide,
 * every collision a Redis decision per request)
 */
#define NGX_HTTP_LINEGATE_LEASE_SETS   4096
#define NGX_HTTP_LINEGATE_LEASE_WAYS   2
#define NGX_HTTP_LINEGATE_LEASE_KEY    144
/* the longest lease: its admissions are counted up to this much early */
#define NGX_HTTP_LINEGATE_LEASE_MAX    1000


/*
 * The next lease is asked for when this one starts being spent (one
 * decision in flight per key and worker), and kept apart until this one
 * is spent or over: the requests meanwhile spend what is left instead of
 * all asking Redis at once.
 */
typedef struct {
    ngx_msec_t                      until;      /* spend before */
    ngx_msec_t                      next_until;
    ngx_msec_t                      reset;
    ngx_msec_t                      asked;      /* the decision in flight */
    ngx_uint_t                      tokens;     /* left to spend */
    ngx_uint_t                      next;       /* the next lease's */
    ngx_uint_t                      size;       /* what to ask next */
    ngx_uint_t                      seq;        /* of the decision asked */
    ngx_uint_t                      seen;       /* requests since asked */
    ngx_msec_t                      used;       /* last asked for */
    int64_t                         remaining;  /* Redis's, last said */
    unsigned                        pending:1;  /* a decision in flight */
    unsigned                        slow:1;     /* round trip >= lease/2 */
    u_short                         len;
    u_char                          key[NGX_HTTP_LINEGATE_LEASE_KEY];
} ngx_http_linegate_lease_t;


/*
 * The worker's lease of a Redis key (a slot of its set: a new key takes
 * the slot of the set's key asked for least recently, whose lease is
 * dropped), NULL when there is none to be had (a key too long, no
 * memory, no random bytes for the table's hash key).
 */
ngx_http_linegate_lease_t *ngx_http_linegate_lease_get(ngx_str_t *key);

/* the worker's lease of key if it has one, no slot taken (NULL: none) */
ngx_http_linegate_lease_t *ngx_http_linegate_lease_find(ngx_str_t *key);

/*
 * A request of the key: 0 when the lease admits it (l->remaining, or
 * ngx_http_linegate_lease_left(), and ngx_http_linegate_lease_reset() for
 * its headers), else how many
 * admissions to ask Redis for; *seq is then that decision's (0: not a
 * lease, one decision alone), for _granted() or _done(). lease: the
 * lease time, ms; max: the most admissions a lease may hold.
 */
ngx_uint_t ngx_http_linegate_lease_spend(ngx_http_linegate_lease_t *l,
    ngx_msec_t lease, ngx_uint_t max, ngx_uint_t *seq);

/*
 * Redis's answer to the decision seq (rl_gcra's admitted, remaining,
 * reset_ms), asked at sent: what it granted beyond this request becomes
 * the next lease; a refusal's reset_ms is kept too (the key is busy until
 * then). Returns 1 when Redis refused and the current lease admits the
 * request instead, else 0. Ends the decision (_done()).
 */
ngx_uint_t ngx_http_linegate_lease_granted(ngx_http_linegate_lease_t *l,
    ngx_uint_t seq, int64_t granted, int64_t remaining, int64_t reset_ms,
    ngx_msec_t sent, ngx_msec_t lease);

/*
 * Redis refused a request of key (NULL: the key the slot holds): none
 * pass there now (l->remaining 0), and the request takes one admission of
 * the worker's lease of the key, if it still holds one that has not
 * expired: 1 when it did.
 * For a request Redis refused while the worker's lease, paid for in
 * Redis, still had admissions (a decision alone, asked while the next
 * lease was in flight, whose reply took the key's last admissions).
 */
ngx_uint_t ngx_http_linegate_lease_take(ngx_http_linegate_lease_t *l,
    ngx_str_t *key);

/* the admissions the worker holds, not expired: this lease's and the next */
ngx_uint_t ngx_http_linegate_lease_tokens(ngx_http_linegate_lease_t *l);

/*
 * RateLimit's r for a request of key: remaining, what Redis last said
 * would pass after this request (rl_gcra's remaining; l->remaining for
 * a request the lease admitted), plus the admissions the worker holds
 * (they pass here without asking Redis): one less with every one spent.
 * Other workers' admissions since Redis said it are not seen; neither is
 * what the rate gave back since (at most the lease time's worth).
 * remaining as it is when the slot no longer holds key. A remaining
 * below l->remaining (a decision alone's) lowers it.
 */
int64_t ngx_http_linegate_lease_left(ngx_http_linegate_lease_t *l,
    ngx_str_t *key, int64_t remaining);

/* the decision seq is over without an answer: another may be asked */
void ngx_http_linegate_lease_done(ngx_http_linegate_lease_t *l,
    ngx_uint_t seq);

/* ms until the key is back to its full burst, as Redis last said */
int64_t ngx_http_linegate_lease_reset(ngx_http_linegate_lease_t *l);

/* a lease holds at most what the rate (interval T, us) gives in it */
ngx_uint_t ngx_http_linegate_lease_max(ngx_msec_t lease, uint64_t interval);

/* "lease=time" of a directive: 1ms to 1s, or an error naming the value */
char *ngx_http_linegate_lease_parse(ngx_conf_t *cf, ngx_str_t *value,
    ngx_msec_t *lease);


#endif /* _NGX_HTTP_LINEGATE_LEASE_H_INCLUDED_ */
