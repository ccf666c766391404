
/*
 * linegate: $request_id without OpenSSL on every request (opt-in).
 *
 * nginx fills $request_id with 16 bytes of RAND_bytes() per request. On
 * the hot GET that call (a DRBG behind a lock, plus a getpid() system call
 * for fork safety, which also gives the scheduler a chance to preempt the
 * worker) measured ~10% of a worker's CPU. With "linegate_fast_request_id
 * on" (off by default) the variable keeps its name, its format (32
 * lowercase hex) and every use (X-Request-Id, error and access logs), but
 * its value is SipHash-2-4 with a 128-bit output (a keyed pseudo-random
 * function) of a per-worker 64-bit counter, under a 128-bit key drawn from
 * OpenSSL's CSPRNG when the worker starts. Without the key, ids cannot be
 * told from random ones: an observed id gives neither the key nor the
 * counter, nor the next id. A worker whose CSPRNG fails keeps nginx's own
 * generator.
 */


#include "ngx_http_linegate_module.h"
#include "ngx_http_linegate_crypto.h"
#include "ngx_http_linegate_request_id.h"

#include <openssl/rand.h>
#include <openssl/err.h>


#define NGX_HTTP_LINEGATE_REQUEST_ID_LEN  32


typedef struct {
    uint64_t                        k0;
    uint64_t                        k1;
    uint64_t                        counter;
    ngx_uint_t                      keyed;   /* unsigned  keyed:1; */
    ngx_http_get_variable_pt        nginx_handler;
    uintptr_t                       nginx_data;
} ngx_http_linegate_request_id_t;


static ngx_int_t ngx_http_linegate_request_id_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_uint_t ngx_http_linegate_request_id_ours(ngx_cycle_t *cycle);
static void ngx_http_linegate_request_id_hash(uint64_t k0, uint64_t k1,
    uint64_t m, uint64_t out[2]);
static void ngx_http_linegate_request_id_hex(u_char *p, uint64_t out[2]);


static ngx_http_linegate_request_id_t  ngx_http_linegate_request_id_state;


/*
 * Called from postconfiguration, before nginx copies the handlers of
 * indexed variables: every user of $request_id gets this handler. nginx's
 * own handler is kept for a worker without a key.
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

            if (v->get_handler != ngx_http_linegate_request_id_variable) {
                ngx_http_linegate_request_id_state.nginx_handler =
                                                             v->get_handler;
                ngx_http_linegate_request_id_state.nginx_data = v->data;
            }

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


/* a new worker: a new key from the CSPRNG, the counter from zero */
void
ngx_http_linegate_request_id_init_process(ngx_cycle_t *cycle)
{
    uint64_t                         key[2], out[2];
    ngx_http_linegate_request_id_t  *st;

    st = &ngx_http_linegate_request_id_state;
    st->keyed = 0;
    st->counter = 0;

    if (st->nginx_handler == NULL || !ngx_http_linegate_request_id_ours(cycle))
    {
        return;
    }

    /* the reference vector: key 00..0f, message 00..07 */
    ngx_http_linegate_request_id_hash(0x0706050403020100ULL,
                                      0x0f0e0d0c0b0a0908ULL,
                                      0x0706050403020100ULL, out);

    if (out[0] != 0x61f55862baa9623bULL || out[1] != 0xb49714f364e2830fULL) {
        ngx_log_error(NGX_LOG_ALERT, cycle->log, 0,
                      NGX_HTTP_LINEGATE_LOG "SipHash self-test failed: "
                      "nginx's $request_id is used");
        return;
    }

    if (RAND_bytes((u_char *) key, sizeof(key)) != 1) {
        ERR_clear_error();
        ngx_log_error(NGX_LOG_WARN, cycle->log, 0,
                      NGX_HTTP_LINEGATE_LOG "RAND_bytes() failed: "
                      "nginx's $request_id is used");
        return;
    }

    st->k0 = key[0];
    st->k1 = key[1];
    st->keyed = 1;

    ngx_explicit_memzero(key, sizeof(key));

    /* the ids look like nginx's: the log says which generator makes them */
    ngx_log_error(NGX_LOG_INFO, cycle->log, 0,
                  NGX_HTTP_LINEGATE_LOG "$request_id made by this worker "
                  "(linegate_fast_request_id)");
}


/*
 * The $request_id of this cycle has linegate's handler: the state above
 * is the master's, kept over a reload that turned the directive off.
 */
static ngx_uint_t
ngx_http_linegate_request_id_ours(ngx_cycle_t *cycle)
{
    ngx_uint_t                  key;
    ngx_http_variable_t        *v;
    ngx_http_core_main_conf_t  *cmcf;

    cmcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_http_core_module);
    if (cmcf == NULL) {
        return 0;
    }

    key = ngx_hash_key((u_char *) "request_id", sizeof("request_id") - 1);
    v = ngx_hash_find(&cmcf->variables_hash, key, (u_char *) "request_id",
                      sizeof("request_id") - 1);

    return v != NULL && v->get_handler == ngx_http_linegate_request_id_variable;
}


static ngx_int_t
ngx_http_linegate_request_id_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    u_char                          *id;
    uint64_t                         out[2];
    ngx_http_linegate_request_id_t  *st;

    st = &ngx_http_linegate_request_id_state;

    if (!st->keyed) {
        return st->nginx_handler(r, v, st->nginx_data);
    }

    id = ngx_pnalloc(r->pool, NGX_HTTP_LINEGATE_REQUEST_ID_LEN);
    if (id == NULL) {
        return NGX_ERROR;
    }

    ngx_http_linegate_request_id_hash(st->k0, st->k1, st->counter++, out);
    ngx_http_linegate_request_id_hex(id, out);

    v->valid = 1;
    v->no_cacheable = 0;
    v->not_found = 0;
    v->len = NGX_HTTP_LINEGATE_REQUEST_ID_LEN;
    v->data = id;

    return NGX_OK;
}


/*
 * SipHash-2-4 with a 128-bit output (crypto.c) of one 8-byte message,
 * the little-endian m.
 */
static void
ngx_http_linegate_request_id_hash(uint64_t k0, uint64_t k1, uint64_t m,
    uint64_t out[2])
{
    u_char      msg[8];
    ngx_uint_t  i;

    for (i = 0; i < 8; i++) {
        msg[i] = (u_char) (m >> (8 * i));
    }

    ngx_http_linegate_siphash128(k0, k1, msg, sizeof(msg), out);
}


/* 32 lowercase hex digits: the 16 output bytes, each word little-endian */
static void
ngx_http_linegate_request_id_hex(u_char *p, uint64_t out[2])
{
    ngx_uint_t           i, j;
    uint64_t             x;
    static const u_char  hex[] = "0123456789abcdef";

    for (i = 0; i < 2; i++) {
        x = out[i];

        for (j = 0; j < 8; j++) {
            *p++ = hex[(x >> 4) & 0xf];
            *p++ = hex[x & 0xf];
            x >>= 8;
        }
    }
}


ngx_int_t
ngx_http_linegate_request_id(ngx_http_request_t *r, ngx_str_t *id)
{
    ngx_http_variable_value_t      *vv;
    ngx_http_linegate_main_conf_t  *lmcf;

    lmcf = ngx_http_get_module_main_conf(r, ngx_http_linegate_module);

    if (lmcf->request_id_index == NGX_ERROR) {
        return NGX_ERROR;
    }

    vv = ngx_http_get_indexed_variable(r->main, lmcf->request_id_index);
    if (vv == NULL || vv->not_found) {
        return NGX_ERROR;
    }

    id->data = vv->data;
    id->len = vv->len;

    return NGX_OK;
}
