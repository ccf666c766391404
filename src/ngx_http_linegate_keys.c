
/*
 * linegate: the one place that names Redis keys (docs/data-model.md).
 * Every C place that sends a key name builds it here; the scripts get
 * their keys in KEYS[] (each script's header says which), and the keys a
 * script derives from data stay under the hash tag of one of its KEYS[],
 * or are listed in docs/data-model.md as issue 10's.
 */


#include "ngx_http_linegate_keys.h"
#include "ngx_http_linegate_crypto.h"
#include "ngx_http_linegate_redis_slots.h"


typedef struct {
    ngx_str_t  head;
    ngx_str_t  mid;
    ngx_str_t  tail;
} ngx_http_linegate_key_form_t;


#define ngx_http_linegate_key_none  ngx_null_string


static ngx_http_linegate_key_form_t
    ngx_http_linegate_key_forms[NGX_HTTP_LINEGATE_KEY_COUNT] = {

    /* NGX_HTTP_LINEGATE_KEY_WS ... _WS_SUBEND */
    { ngx_string("lg:{ws:"), ngx_string("}"), ngx_http_linegate_key_none },
    { ngx_string("lg:{ws:"), ngx_string("}:keys"),
      ngx_http_linegate_key_none },
    { ngx_string("lg:{ws:"), ngx_string("}:gcra"),
      ngx_http_linegate_key_none },
    { ngx_string("lg:{ws:"), ngx_string("}:lr:"),
      ngx_http_linegate_key_none },
    { ngx_string("lg:{ws:"), ngx_string("}:idem:"),
      ngx_http_linegate_key_none },
    { ngx_string("lg:{ws:"), ngx_string("}:lines"),
      ngx_http_linegate_key_none },
    { ngx_string("lg:{ws:"), ngx_string("}:usage:"),
      ngx_http_linegate_key_none },
    { ngx_string("lg:{ws:"), ngx_string("}:lrvoid:"),
      ngx_http_linegate_key_none },
    { ngx_string("lg:{ws:"), ngx_string("}:event:"),
      ngx_http_linegate_key_none },
    { ngx_string("lg:{ws:"), ngx_string("}:pending"),
      ngx_http_linegate_key_none },
    { ngx_string("lg:{ws:"), ngx_string("}:ack"),
      ngx_http_linegate_key_none },
    { ngx_string("lg:{ws:"), ngx_string("}:usageidem:"),
      ngx_http_linegate_key_none },
    { ngx_string("lg:{ws:"), ngx_string("}:live"),
      ngx_http_linegate_key_none },
    { ngx_string("lg:{ws:"), ngx_string("}:subend"),
      ngx_http_linegate_key_none },

    /* NGX_HTTP_LINEGATE_KEY_ACCT ... _ACCT_OUTBOX */
    { ngx_string("lg:{acct:"), ngx_string("}"),
      ngx_http_linegate_key_none },
    { ngx_string("lg:{acct:"), ngx_string("}:prov"),
      ngx_http_linegate_key_none },
    { ngx_string("lg:{acct:"), ngx_string("}:resv:"),
      ngx_http_linegate_key_none },
    { ngx_string("lg:{acct:"), ngx_string("}:line:"),
      ngx_http_linegate_key_none },
    { ngx_string("lg:{acct:"), ngx_string("}:reconcile:w:"),
      ngx_http_linegate_key_none },

    /* NGX_HTTP_LINEGATE_KEY_APIKEY ... _PV */
    { ngx_string("lg:apikey:"), ngx_http_linegate_key_none,
      ngx_http_linegate_key_none },
    { ngx_string("lg:sbkey:"), ngx_http_linegate_key_none,
      ngx_http_linegate_key_none },
    { ngx_string("lg:line:"), ngx_http_linegate_key_none,
      ngx_http_linegate_key_none },
    { ngx_string("lg:invoice:"), ngx_http_linegate_key_none,
      ngx_http_linegate_key_none },
    { ngx_string("lg:pv:{"), ngx_string("}:"),
      ngx_http_linegate_key_none },

    /* NGX_HTTP_LINEGATE_KEY_RL_HASH */
    { ngx_string("lg:rl:{"), ngx_string(":h:"), ngx_string("}") },

    /* NGX_HTTP_LINEGATE_KEY_INVENTORY ... _QUARANTINE */
    { ngx_string("lg:{fleet}:inventory"), ngx_http_linegate_key_none,
      ngx_http_linegate_key_none },
    { ngx_string("lg:provisioning"), ngx_http_linegate_key_none,
      ngx_http_linegate_key_none },
    { ngx_string("lg:{fleet}:reconcile"), ngx_http_linegate_key_none,
      ngx_http_linegate_key_none },
    { ngx_string("lg:{fleet}:reconciled"), ngx_http_linegate_key_none,
      ngx_http_linegate_key_none },
    { ngx_string("lg:{fleet}:reconcile:lease"), ngx_http_linegate_key_none,
      ngx_http_linegate_key_none },
    { ngx_string("lg:{fleet}:pv:inflight"), ngx_http_linegate_key_none,
      ngx_http_linegate_key_none },
    { ngx_string("lg:{fleet}:lr:inflight"), ngx_http_linegate_key_none,
      ngx_http_linegate_key_none },
    { ngx_string("lg:{fleet}:lr:setup"), ngx_http_linegate_key_none,
      ngx_http_linegate_key_none },
    { ngx_string("lg:{fleet}:held"), ngx_http_linegate_key_none,
      ngx_http_linegate_key_none },
    { ngx_string("lg:{fleet}:reconcile:cursor"), ngx_http_linegate_key_none,
      ngx_http_linegate_key_none },
    { ngx_string("lg:{fleet}:inventory:quarantine"),
      ngx_http_linegate_key_none, ngx_http_linegate_key_none },

    /* NGX_HTTP_LINEGATE_KEY_FLEET_Q, _FLEET_Q_NONE */
    { ngx_string("lg:{fleet}:q:"), ngx_string(":"),
      ngx_http_linegate_key_none },
    { ngx_string("lg:{fleet}:q:-"), ngx_http_linegate_key_none,
      ngx_http_linegate_key_none },
};


size_t
ngx_http_linegate_key_len(ngx_http_linegate_key_e kind, ngx_str_t *a,
    ngx_str_t *b)
{
    ngx_http_linegate_key_form_t  *f;

    f = &ngx_http_linegate_key_forms[kind];

    return f->head.len + (a ? a->len : 0) + f->mid.len + (b ? b->len : 0)
           + f->tail.len;
}


u_char *
ngx_http_linegate_key_write(u_char *p, ngx_http_linegate_key_e kind,
    ngx_str_t *a, ngx_str_t *b)
{
    ngx_http_linegate_key_form_t  *f;

    f = &ngx_http_linegate_key_forms[kind];

    /* an empty part has no data: memcpy() must not see its NULL */
    p = ngx_cpymem(p, f->head.data, f->head.len);

    if (a && a->len) {
        p = ngx_cpymem(p, a->data, a->len);
    }

    if (f->mid.len) {
        p = ngx_cpymem(p, f->mid.data, f->mid.len);
    }

    if (b && b->len) {
        p = ngx_cpymem(p, b->data, b->len);
    }

    if (f->tail.len) {
        p = ngx_cpymem(p, f->tail.data, f->tail.len);
    }

    return p;
}


ngx_int_t
ngx_http_linegate_key(ngx_pool_t *pool, ngx_http_linegate_key_e kind,
    ngx_str_t *a, ngx_str_t *b, ngx_str_t *key)
{
    key->len = ngx_http_linegate_key_len(kind, a, b);

    key->data = ngx_pnalloc(pool, key->len);
    if (key->data == NULL) {
        key->len = 0;
        return NGX_ERROR;
    }

    (void) ngx_http_linegate_key_write(key->data, kind, a, b);

    return NGX_OK;
}


ngx_int_t
ngx_http_linegate_key_purchase(ngx_pool_t *pool, ngx_str_t *account,
    ngx_str_t *worker_id, ngx_str_t *keys)
{
    ngx_uint_t  i;

    static ngx_http_linegate_key_e  kinds[] = {
        NGX_HTTP_LINEGATE_KEY_ACCT,
        NGX_HTTP_LINEGATE_KEY_ACCT_PROV,
        NGX_HTTP_LINEGATE_KEY_ACCT_RESV,
        NGX_HTTP_LINEGATE_KEY_ACCT_LINE,
        NGX_HTTP_LINEGATE_KEY_ACCT_OUTBOX
    };

    for (i = 0; i < NGX_HTTP_LINEGATE_KEYS_PV_PURCHASE; i++) {
        if (ngx_http_linegate_key(pool, kinds[i], account,
                                  i < 2 ? NULL : worker_id, &keys[i])
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


/*
 * lg:pv:{<tag>}:<digest>, the tag the token's 3 characters after "lpv_":
 * the slot its preview chose (ngx_http_linegate_key_pv_tag()), so that
 * the key is found from the token alone, in the minting account's slot.
 * The rest is the token's SHA-256 (hex), as an API key's lg:apikey:
 * <digest>: a key name is shown by MONITOR, SLOWLOG, keyspace events,
 * SCAN and RDB dumps, and the token is a bearer secret (a confirm that
 * presents it buys a line); the tag alone is no secret, the account's
 * slot names it.
 */
ngx_int_t
ngx_http_linegate_key_pv(ngx_pool_t *pool, ngx_str_t *token, ngx_str_t *key)
{
    u_char     hex[65];
    ngx_str_t  tag, digest;

    if (token->len < 4 + NGX_HTTP_LINEGATE_REDIS_SLOT_TAG_LEN) {
        return NGX_ERROR;
    }

    ngx_http_linegate_sha256_hex(token->data, token->len, (char *) hex);

    if (hex[0] == '\0') {
        /* OpenSSL failed: no key rather than one every token shares */
        return NGX_ERROR;
    }

    tag.data = token->data + 4;
    tag.len = NGX_HTTP_LINEGATE_REDIS_SLOT_TAG_LEN;

    digest.data = hex;
    digest.len = 64;

    return ngx_http_linegate_key(pool, NGX_HTTP_LINEGATE_KEY_PV, &tag,
                                 &digest, key);
}


ngx_int_t
ngx_http_linegate_key_pv_tag(ngx_pool_t *pool, ngx_str_t *account,
    u_char *tag)
{
    ngx_str_t  akey;

    if (ngx_http_linegate_key(pool, NGX_HTTP_LINEGATE_KEY_ACCT, account, NULL,
                              &akey)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    ngx_memcpy(tag,
               ngx_http_linegate_redis_slot_tag(
                   ngx_http_linegate_redis_keyslot(akey.data, akey.len)),
               NGX_HTTP_LINEGATE_REDIS_SLOT_TAG_LEN);

    return NGX_OK;
}


ngx_uint_t
ngx_http_linegate_key_same_slot(ngx_str_t *a, ngx_str_t *b)
{
    return ngx_http_linegate_redis_keyslot(a->data, a->len)
           == ngx_http_linegate_redis_keyslot(b->data, b->len);
}


ngx_int_t
ngx_http_linegate_key_request(ngx_pool_t *pool, ngx_str_t *ws,
    ngx_str_t *id, ngx_str_t *digest, ngx_str_t *keys)
{
    ngx_uint_t  i, n;

    static ngx_http_linegate_key_e  kinds[] = {
        NGX_HTTP_LINEGATE_KEY_WS_LR,
        NGX_HTTP_LINEGATE_KEY_WS_LINES,
        NGX_HTTP_LINEGATE_KEY_WS_LIVE,
        NGX_HTTP_LINEGATE_KEY_WS_PENDING,
        NGX_HTTP_LINEGATE_KEY_WS_IDEM
    };

    n = digest ? NGX_HTTP_LINEGATE_KEYS_LR_IDEM
               : NGX_HTTP_LINEGATE_KEYS_LR_REQUEST;

    for (i = 0; i < n; i++) {
        if (ngx_http_linegate_key(pool, kinds[i], ws,
                                  i == 0 ? id : (i == 4 ? digest : NULL),
                                  &keys[i])
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


ngx_str_t *
ngx_http_linegate_key_fixed(ngx_http_linegate_key_e kind)
{
    return &ngx_http_linegate_key_forms[kind].head;
}


/*
 * The pub/sub channel of API-key revocations (not a key: a cluster
 * delivers a PUBLISH to every node's subscribers). op_key_revoke.lua
 * publishes on it by this same name.
 */
static ngx_str_t  ngx_http_linegate_channel_revoked =
    ngx_string("lg:keys:revoked");


ngx_str_t *
ngx_http_linegate_key_channel_revoked(void)
{
    return &ngx_http_linegate_channel_revoked;
}


ngx_int_t
ngx_http_linegate_key_workspace_of(u_char *key, size_t len, ngx_str_t *ws)
{
    u_char     *end;
    ngx_str_t  *head;

    head = &ngx_http_linegate_key_forms[NGX_HTTP_LINEGATE_KEY_WS].head;

    if (len <= head->len || ngx_strncmp(key, head->data, head->len) != 0) {
        return NGX_DECLINED;
    }

    end = ngx_strlchr(key + head->len, key + len, '}');

    if (end == NULL || end == key + head->len) {
        return NGX_DECLINED;
    }

    ws->data = key + head->len;
    ws->len = end - ws->data;

    return NGX_OK;
}


/* an id follows the head: a head ending "{" or ":" (lg:apikey:<digest>) */
static ngx_uint_t
ngx_http_linegate_key_form_a(ngx_http_linegate_key_form_t *f)
{
    u_char  c;

    c = f->head.data[f->head.len - 1];

    return c == '{' || c == ':';
}


/* a second id follows the mid: a mid ending ":" (}:lr:<id>), or a tail */
static ngx_uint_t
ngx_http_linegate_key_form_b(ngx_http_linegate_key_form_t *f)
{
    return f->mid.len > 0
           && (f->mid.data[f->mid.len - 1] == ':' || f->tail.len > 0);
}


/* 1 when key (len bytes) is of form f */
static ngx_uint_t
ngx_http_linegate_key_form_is(ngx_http_linegate_key_form_t *f, u_char *key,
    size_t len)
{
    u_char  *p, *q, *end;

    if (len < f->head.len || ngx_strncmp(key, f->head.data, f->head.len) != 0)
    {
        return 0;
    }

    p = key + f->head.len;
    end = key + len;

    if (!ngx_http_linegate_key_form_a(f)) {
        return p == end;
    }

    if (f->mid.len == 0) {
        return p < end;
    }

    /* the first id ends at the mid's first place (ids hold none of it) */
    for (q = p + 1; q + f->mid.len <= end; q++) {
        if (ngx_strncmp(q, f->mid.data, f->mid.len) == 0) {
            break;
        }
    }

    if (q + f->mid.len > end) {
        return 0;
    }

    q += f->mid.len;

    if (!ngx_http_linegate_key_form_b(f)) {
        return q == end;
    }

    /* an empty second id too: :idem: of a request without a key */
    return (size_t) (end - q) >= f->tail.len
           && ngx_strncmp(end - f->tail.len, f->tail.data, f->tail.len) == 0;
}


u_char *
ngx_http_linegate_key_kind_write(u_char *p, u_char *last, u_char *key,
    size_t len)
{
    ngx_uint_t                     k;
    ngx_http_linegate_key_form_t  *f;

    for (k = 0; k < NGX_HTTP_LINEGATE_KEY_COUNT; k++) {
        f = &ngx_http_linegate_key_forms[k];

        if (ngx_http_linegate_key_form_is(f, key, len)) {
            return ngx_slprintf(p, last, "%V%s%V%s%V", &f->head,
                                ngx_http_linegate_key_form_a(f) ? "*" : "",
                                &f->mid,
                                ngx_http_linegate_key_form_b(f) ? "*" : "",
                                &f->tail);
        }
    }

    return ngx_slprintf(p, last, "lg:?");
}
