
/*
 * linegate: $request_id without OpenSSL on every request.
 *
 * nginx fills $request_id with 16 bytes of RAND_bytes() per request. On
 * the hot GET that call (a DRBG behind a lock, plus a getpid() system call
 * for fork safety, which also gives the scheduler a chance to preempt the
 * worker) measured ~10% of a worker's CPU. With "linegate_fast_request_id
 * on" (the default) the variable keeps its name, its format (32 lowercase
 * hex) and every use (X-Request-Id, error and access logs), but its value
 * is made per worker: 8 random bytes drawn once at worker start, followed
 * by a 64-bit counter passed through a bijective mixer keyed with 8 more
 * random bytes. Ids never repeat within a worker (a bijection of a
 * counter) and differ across workers and hosts as much as 64 random bits
 * make them; they are identifiers, not secrets, as nginx's are.
 */


#include "ngx_http_linegate_module.h"
#include "ngx_http_linegate_request_id.h"

#include <openssl/rand.h>
#include <openssl/err.h>


#define NGX_HTTP_LINEGATE_REQUEST_ID_LEN  32


typedef struct {
    uint64_t                        prefix;
    uint64_t                        key;
    uint64_t                        counter;
} ngx_http_linegate_request_id_t;


static ngx_int_t ngx_http_linegate_request_id_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static uint64_t ngx_http_linegate_request_id_mix(uint64_t x);
static void ngx_http_linegate_request_id_put(u_char *p, uint64_t x);


static ngx_http_linegate_request_id_t  ngx_http_linegate_request_id_state;


/*
 * Called from postconfiguration, before nginx copies the handlers of
 * indexed variables: every user of $request_id gets this handler.
 */
ngx_int_t
ngx_http_linegate_request_id_install(ngx_conf_t *cf)
{
    ngx_uint_t                  i;
    ngx_hash_key_t             *key;
    ngx_http_variable_t        *v;
    ngx_http_core_main_conf_t  *cmcf;

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    if (cmcf->variables_keys == NULL) {
        return NGX_OK;
    }

    key = cmcf->variables_keys->keys.elts;

    for (i = 0; i < cmcf->variables_keys->keys.nelts; i++) {
        if (key[i].key.len == sizeof("request_id") - 1
            && ngx_strncmp(key[i].key.data, "request_id",
                           sizeof("request_id") - 1) == 0)
        {
            v = key[i].value;
            v->get_handler = ngx_http_linegate_request_id_variable;
            v->data = 0;
            return NGX_OK;
        }
    }

    ngx_conf_log_error(NGX_LOG_WARN, cf, 0,
                       NGX_HTTP_LINEGATE_LOG "no $request_id variable "
                       "to take over: nginx's is used");
    return NGX_OK;
}


/* a new worker: new random halves, the counter from zero */
void
ngx_http_linegate_request_id_init_process(ngx_cycle_t *cycle)
{
    uint64_t                         seed[2];
    ngx_http_linegate_request_id_t  *st;

    st = &ngx_http_linegate_request_id_state;

    if (RAND_bytes((u_char *) seed, sizeof(seed)) != 1) {
        ERR_clear_error();
        ngx_log_error(NGX_LOG_WARN, cycle->log, 0,
                      NGX_HTTP_LINEGATE_LOG "RAND_bytes() failed: request "
                      "ids seeded from the time and the pid");

        seed[0] = ((uint64_t) ngx_random() << 32) ^ (uint64_t) ngx_pid
                  ^ (uint64_t) ngx_time();
        seed[1] = ((uint64_t) ngx_random() << 32) ^ (uint64_t) ngx_random();
    }

    st->prefix = seed[0];
    st->key = seed[1];
    st->counter = 0;
}


static ngx_int_t
ngx_http_linegate_request_id_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    u_char                          *id;
    ngx_http_linegate_request_id_t  *st;

    st = &ngx_http_linegate_request_id_state;

    id = ngx_pnalloc(r->pool, NGX_HTTP_LINEGATE_REQUEST_ID_LEN);
    if (id == NULL) {
        return NGX_ERROR;
    }

    ngx_http_linegate_request_id_put(id, st->prefix);
    ngx_http_linegate_request_id_put(id + 16,
        ngx_http_linegate_request_id_mix(st->key + st->counter++));

    v->valid = 1;
    v->no_cacheable = 0;
    v->not_found = 0;
    v->len = NGX_HTTP_LINEGATE_REQUEST_ID_LEN;
    v->data = id;

    return NGX_OK;
}


/*
 * The finalizer of splitmix64: xor-shifts and odd multipliers, each step
 * invertible, so distinct inputs give distinct outputs; it spreads a
 * counter over all 64 bits so that consecutive ids do not look alike.
 */
static uint64_t
ngx_http_linegate_request_id_mix(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;

    return x;
}


/* 16 lowercase hex digits, most significant first */
static void
ngx_http_linegate_request_id_put(u_char *p, uint64_t x)
{
    ngx_int_t            i;
    static const u_char  hex[] = "0123456789abcdef";

    for (i = 15; i >= 0; i--) {
        p[i] = hex[x & 0xf];
        x >>= 4;
    }
}
