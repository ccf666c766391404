
/*
 * linegate: the set-up relay's writes (ngx_http_linegate_lr_setup.h):
 * the journal member of a call, the entry appended to lg:provisioning
 * with the fields lg_lr_provision writes (include/lr_settle.lua), the
 * member removed after it. Creation (line_create.c), the reconciliation
 * on read and the payment link (lr_resolve, lines_request.c), the
 * invoice webhook (webhook.c) and the reconciliation's sweep
 * (reconcile.c) build them here only, so that the entry is one.
 */


#include "ngx_http_linegate_module.h"

#include "ngx_http_linegate_keys.h"
#include "ngx_http_linegate_chars.h"
#include "ngx_http_linegate_clock.h"
#include "ngx_http_linegate_lr_setup.h"


static void ngx_http_linegate_lr_setup_relayed(redisReply *reply,
    ngx_http_linegate_redis_args_t *args, ngx_str_t *member);
static ngx_uint_t ngx_http_linegate_lr_setup_word(ngx_str_t *s);


/*
 * this worker's calls so far and a random number drawn once: the nonce,
 * with its pid (pids repeat across hosts, containers above all)
 */
static ngx_uint_t  ngx_http_linegate_lr_setup_calls;
static ngx_uint_t  ngx_http_linegate_lr_setup_seed;


ngx_int_t
ngx_http_linegate_lr_setup_member(ngx_pool_t *pool, ngx_str_t *ws,
    ngx_str_t *id, ngx_str_t *member)
{
    u_char  *p;

    p = ngx_pnalloc(pool, ws->len + 1 + id->len + 1 + NGX_INT64_LEN
                          + 2 * (1 + NGX_INT_T_LEN));
    if (p == NULL) {
        return NGX_ERROR;
    }

    if (ngx_http_linegate_lr_setup_seed == 0) {
        ngx_http_linegate_lr_setup_seed = (ngx_uint_t) ngx_random() + 1;
    }

    member->data = p;
    member->len = ngx_sprintf(p, "%V %V %P.%ui.%ui", ws, id, ngx_pid,
                              ngx_http_linegate_lr_setup_seed,
                              ++ngx_http_linegate_lr_setup_calls)
                  - p;

    return NGX_OK;
}


void
ngx_http_linegate_lr_setup_add_args(ngx_http_request_t *r,
    ngx_http_linegate_redis_args_t *a, ngx_str_t *member)
{
    ngx_http_linegate_lr_journal_add_args(r, a,
                                          NGX_HTTP_LINEGATE_KEY_LR_SETUP,
                                          member);
}


void
ngx_http_linegate_lr_journal_add_args(ngx_http_request_t *r,
    ngx_http_linegate_redis_args_t *a, ngx_http_linegate_key_e journal,
    ngx_str_t *member)
{
    ngx_http_linegate_redis_args_init(a);

    /*
     * acknowledged with linegate_redis_wait, alone or in a pipeline (the
     * creation's, with the index): lost with its master, the step it
     * covers, unfinished by a dead worker, has nothing for the sweep to
     * find
     */
    a->acknowledged = 1;

    ngx_http_linegate_redis_arg_cstr(a, "ZADD");
    ngx_http_linegate_redis_arg_str(a, ngx_http_linegate_key_fixed(journal));

    /*
     * scored when written, not when the request began: written after
     * Stripe calls, a member must not look older to the sweep than it is
     */
    ngx_http_linegate_redis_arg_int(r, a, ngx_http_linegate_now_ms());
    ngx_http_linegate_redis_arg_str(a, member);
}


ngx_int_t
ngx_http_linegate_lr_setup_relay(ngx_log_t *log,
    ngx_http_linegate_lr_setup_t *e, ngx_str_t *member)
{
    ngx_http_linegate_redis_args_t  a;

    /* lg_lr_provision's XADD, field for field */
    ngx_http_linegate_redis_args_init(&a);
    ngx_http_linegate_redis_arg_cstr(&a, "XADD");
    ngx_http_linegate_redis_arg_str(&a,
        ngx_http_linegate_key_fixed(NGX_HTTP_LINEGATE_KEY_PROVISIONING));
    ngx_http_linegate_redis_arg_cstr(&a, "MAXLEN");
    ngx_http_linegate_redis_arg_cstr(&a, "~");
    ngx_http_linegate_redis_arg_cstr(&a, "100000");
    ngx_http_linegate_redis_arg_cstr(&a, "*");
    ngx_http_linegate_redis_arg_cstr(&a, "workspace");
    ngx_http_linegate_redis_arg_str(&a, &e->workspace);
    ngx_http_linegate_redis_arg_cstr(&a, "id");
    ngx_http_linegate_redis_arg_str(&a, &e->id);
    ngx_http_linegate_redis_arg_cstr(&a, "channelType");
    ngx_http_linegate_redis_arg_str(&a, &e->channel_type);
    ngx_http_linegate_redis_arg_cstr(&a, "lineType");
    ngx_http_linegate_redis_arg_str(&a, &e->line_type);
    ngx_http_linegate_redis_arg_cstr(&a, "at");
    ngx_http_linegate_redis_arg_str(&a, &e->at);

    /*
     * done (and its member removed) only once a replica has it, with
     * linegate_redis_wait: as the script's own XADD on one Redis
     */
    a.acknowledged = 1;

    /*
     * Not idempotent: sent again after a lost answer it may append the
     * entry twice, which the set-up workers' de-duplication absorbs (at
     * least once); the member goes only once the entry is there.
     */
    return ngx_http_linegate_redis_durable_command_then(log, &a,
                                            "a line's set-up entry",
                                            ngx_http_linegate_lr_setup_relayed,
                                            member);
}


/* the entry is appended: its member goes */
static void
ngx_http_linegate_lr_setup_relayed(redisReply *reply,
    ngx_http_linegate_redis_args_t *args, ngx_str_t *member)
{
    (void) ngx_http_linegate_lr_setup_drop(ngx_cycle->log, member);
}


ngx_int_t
ngx_http_linegate_lr_setup_drop(ngx_log_t *log, ngx_str_t *member)
{
    ngx_http_linegate_redis_args_t  a;

    if (member == NULL || member->len == 0) {
        return NGX_OK;
    }

    ngx_http_linegate_redis_args_init(&a);
    ngx_http_linegate_redis_arg_cstr(&a, "ZREM");
    ngx_http_linegate_redis_arg_str(&a,
        ngx_http_linegate_key_fixed(NGX_HTTP_LINEGATE_KEY_LR_SETUP));
    ngx_http_linegate_redis_arg_str(&a, member);

    return ngx_http_linegate_redis_durable_command(log, &a,
                                                   "a set-up member's "
                                                   "removal");
}


ngx_int_t
ngx_http_linegate_lr_setup_parse(ngx_str_t *member, ngx_str_t *ws,
    ngx_str_t *id)
{
    u_char     *sp, *end;
    ngx_str_t   nonce;

    end = member->data + member->len;

    sp = ngx_strlchr(member->data, end, ' ');
    if (sp == NULL) {
        return NGX_ERROR;
    }

    ws->data = member->data;
    ws->len = sp - member->data;
    id->data = sp + 1;

    sp = ngx_strlchr(id->data, end, ' ');
    if (sp == NULL) {
        return NGX_ERROR;
    }

    id->len = sp - id->data;
    nonce.data = sp + 1;
    nonce.len = end - nonce.data;

    /* the keys read must keep the workspace's hash tag */
    return ngx_http_linegate_lr_setup_word(ws)
           && ngx_http_linegate_lr_setup_word(id)
           && ngx_http_linegate_lr_setup_word(&nonce)
           ? NGX_OK : NGX_ERROR;
}


/* one printable word without braces, not empty, not too long */
static ngx_uint_t
ngx_http_linegate_lr_setup_word(ngx_str_t *s)
{
    u_char  *p;

    if (s->len == 0 || s->len > NGX_HTTP_LINEGATE_LR_SETUP_PART_MAX) {
        return 0;
    }

    for (p = s->data; p < s->data + s->len; p++) {
        if (!ngx_http_linegate_char_is(*p, NGX_HTTP_LINEGATE_CHARS_PRINT)
            || *p == ' ' || *p == '{' || *p == '}')
        {
            return 0;
        }
    }

    return 1;
}
