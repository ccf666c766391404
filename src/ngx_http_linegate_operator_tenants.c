
/*
 * linegate: the operator API's tenants: workspaces and their API keys,
 * provisioning accounts and their credentials.
 *
 * Keys and secrets issued here are shown once and stored only as SHA-256
 * digests; they are never logged.
 */


#include "ngx_http_linegate_operator.h"
#include "ngx_http_linegate_crypto.h"
#include "ngx_http_linegate_reply.h"
#include "ngx_http_linegate_str.h"


/* a workspace or an account: a hash op_upsert creates and updates */
typedef struct {
    const char                           *name;       /* in the logs */
    ngx_http_linegate_key_e               key;
    ngx_http_linegate_operator_answer_t  *json;       /* of its hash */
} ngx_http_linegate_operator_tenant_t;


/* a workspace's API key, an account's key id and secret */
typedef struct {
    const char                          *what;       /* in the logs */
    const char                          *owner;
    const char                          *name[2];    /* in the answer */
    const char                          *prefix[2];  /* id, key */
    size_t                               size[2];    /* hex bytes, chars */
    ngx_http_linegate_operator_args_t   *args;
} ngx_http_linegate_operator_credential_t;


static ngx_http_linegate_operator_args_t
    ngx_http_linegate_operator_upsert_args;
static ngx_http_linegate_operator_answer_t
    ngx_http_linegate_operator_tenant_saved;
static ngx_http_linegate_operator_args_t
    ngx_http_linegate_operator_hgetall_args;
static ngx_http_linegate_operator_answer_t
    ngx_http_linegate_operator_workspace_json;
static ngx_http_linegate_operator_answer_t
    ngx_http_linegate_operator_account_json;
static ngx_http_linegate_operator_args_t    ngx_http_linegate_operator_issue;
static ngx_http_linegate_operator_args_t
    ngx_http_linegate_operator_api_key_args;
static ngx_http_linegate_operator_args_t
    ngx_http_linegate_operator_sb_key_args;
static ngx_http_linegate_operator_answer_t  ngx_http_linegate_operator_issued;
static ngx_http_linegate_operator_after_t
    ngx_http_linegate_operator_sb_rotated;
static void ngx_http_linegate_operator_sb_stored(ngx_http_request_t *r,
    redisReply *reply);
static ngx_http_linegate_operator_after_t
    ngx_http_linegate_operator_key_listed;
static void ngx_http_linegate_operator_key_stored(ngx_http_request_t *r,
    redisReply *reply);
static ngx_http_linegate_operator_args_t
    ngx_http_linegate_operator_key_revoke;
static ngx_http_linegate_operator_args_t
    ngx_http_linegate_operator_key_read;
static ngx_http_linegate_operator_read_t
    ngx_http_linegate_operator_key_digest;
static ngx_http_linegate_operator_lost_t
    ngx_http_linegate_operator_key_lost;
static void ngx_http_linegate_operator_key_drop(ngx_http_request_t *r,
    ngx_http_linegate_operator_t *adm, ngx_str_t *digest);
static ngx_http_linegate_operator_after_t
    ngx_http_linegate_operator_key_unlisted;
static void ngx_http_linegate_operator_key_dropped(ngx_http_request_t *r,
    redisReply *reply);
static ngx_http_linegate_operator_answer_t
    ngx_http_linegate_operator_key_revoked;
static ngx_http_linegate_operator_args_t    ngx_http_linegate_operator_key_list;
static ngx_http_linegate_operator_answer_t
    ngx_http_linegate_operator_keys_listed;

static ngx_http_linegate_operator_valid_t   ngx_http_linegate_operator_filled;
static ngx_http_linegate_operator_valid_t
    ngx_http_linegate_operator_customer_valid;
static ngx_http_linegate_operator_valid_t
    ngx_http_linegate_operator_ws_plan_valid;
static ngx_http_linegate_operator_valid_t
    ngx_http_linegate_operator_status_valid;
static ngx_http_linegate_operator_valid_t
    ngx_http_linegate_operator_sb_plan_valid;
static ngx_http_linegate_operator_valid_t
    ngx_http_linegate_operator_key_id_valid;

static void ngx_http_linegate_operator_upsert_field(ngx_http_request_t *r,
    ngx_http_linegate_operator_t *adm, ngx_http_linegate_operator_value_t *v);
static void ngx_http_linegate_operator_changes(ngx_http_request_t *r,
    ngx_http_linegate_operator_t *adm, ngx_str_t *out);
static ngx_int_t ngx_http_linegate_operator_generate(ngx_http_request_t *r,
    ngx_str_t *out, const char *prefix, size_t n, ngx_uint_t hex);
static ngx_int_t ngx_http_linegate_operator_digest(ngx_http_request_t *r,
    ngx_str_t *in, ngx_str_t *out);


static ngx_http_linegate_operator_id_t
    ngx_http_linegate_operator_workspace_id = {
    ngx_http_linegate_operator_name_valid, "Invalid workspace id", 1
};

static ngx_http_linegate_operator_id_t
    ngx_http_linegate_operator_account_id = {
    ngx_http_linegate_operator_name_valid, "Invalid account id", 1
};

static ngx_http_linegate_operator_id_t  ngx_http_linegate_operator_key_id = {
    ngx_http_linegate_operator_key_id_valid, "Invalid key id", 0
};


/*
 * What PUT of a workspace and of an account share. The plan is read in
 * two steps: a string here, a plan name of the tenant's kind after
 * stripeCustomerId, the order in which errors have always been reported.
 */
static ngx_http_linegate_operator_field_t
    ngx_http_linegate_operator_tenant_put[] = {
    { "plan", NGX_HTTP_LINEGATE_OPERATOR_STRICT,
      ngx_http_linegate_operator_filled, "plan is empty", "plan" },
    { "stripeCustomerId", NGX_HTTP_LINEGATE_OPERATOR_NULLABLE,
      ngx_http_linegate_operator_customer_valid,
      "stripeCustomerId must be a Stripe customer id (cus_...)",
      "stripeCustomerId" },
    ngx_http_linegate_operator_null_field
};

static ngx_http_linegate_operator_field_t
    ngx_http_linegate_operator_ws_put[] = {
    { "plan", 0, ngx_http_linegate_operator_ws_plan_valid,
      "plan must be mini, starter or growth", NULL },
    { "subscriptionStatus", NGX_HTTP_LINEGATE_OPERATOR_NULLABLE,
      ngx_http_linegate_operator_status_valid,
      "subscriptionStatus must be a Stripe subscription status",
      "subscriptionStatus" },
    ngx_http_linegate_operator_null_field
};

/* Sendblue plan names: inbound_only (the Agent plan) and others */
static ngx_http_linegate_operator_field_t
    ngx_http_linegate_operator_acct_put[] = {
    { "plan", 0, ngx_http_linegate_operator_sb_plan_valid,
      "plan must be a plan name such as inbound_only ([a-z0-9_], at most 32)",
      NULL },
    /* overrides of the rolling limits; null: the configured default */
    { "api_provision_daily",
      NGX_HTTP_LINEGATE_OPERATOR_INTEGER|NGX_HTTP_LINEGATE_OPERATOR_NULLABLE,
      NULL, NULL, "daily_limit" },
    { "api_provision_monthly",
      NGX_HTTP_LINEGATE_OPERATOR_INTEGER|NGX_HTTP_LINEGATE_OPERATOR_NULLABLE,
      NULL, NULL, "monthly_limit" },
    ngx_http_linegate_operator_null_field
};


/* 0: there is none (no hash, a script's 0 or nil); -1: op_upsert's */
static ngx_http_linegate_operator_code_t
    ngx_http_linegate_operator_ws_codes[] = {
    { 0, NGX_HTTP_NOT_FOUND, "NOT_FOUND", NULL, "Workspace not found", 0 },
    { -1, NGX_HTTP_BAD_REQUEST, NULL, "plan",
      "plan is required to create a workspace", 0 },
    ngx_http_linegate_operator_null_code
};

static ngx_http_linegate_operator_code_t
    ngx_http_linegate_operator_acct_codes[] = {
    { 0, NGX_HTTP_NOT_FOUND, "NOT_FOUND", NULL, "Account not found", 0 },
    { -1, NGX_HTTP_BAD_REQUEST, NULL, "plan",
      "plan is required to create an account", 0 },
    ngx_http_linegate_operator_null_code
};

/* op_key_create */
static ngx_http_linegate_operator_code_t
    ngx_http_linegate_operator_issue_codes[] = {
    { 0, NGX_HTTP_NOT_FOUND, "NOT_FOUND", NULL, "Workspace not found", 0 },
    { -1, NGX_HTTP_CONFLICT, "KEY_LIMIT_REACHED", NULL,
      "The workspace has 100 API keys, the most it may have: revoke one "
      "first", 0 },
    ngx_http_linegate_operator_null_code
};

static ngx_http_linegate_operator_code_t
    ngx_http_linegate_operator_key_codes[] = {
    { 0, NGX_HTTP_NOT_FOUND, "NOT_FOUND", NULL, "API key not found", 0 },
    ngx_http_linegate_operator_null_code
};


static ngx_http_linegate_operator_tenant_t
    ngx_http_linegate_operator_workspace = {
    "workspace", NGX_HTTP_LINEGATE_KEY_WS,
    ngx_http_linegate_operator_workspace_json
};

static ngx_http_linegate_operator_tenant_t
    ngx_http_linegate_operator_account = {
    "account", NGX_HTTP_LINEGATE_KEY_ACCT,
    ngx_http_linegate_operator_account_json
};


/* "key_" + 16 hex, the key "tuco_" + 40; "sbk_" + 24 hex, "sbs_" + 40 */
static ngx_http_linegate_operator_credential_t
    ngx_http_linegate_operator_api_key = {
    "API key", "workspace", { "keyId", "key" }, { "key_", "tuco_" },
    { 8, 40 }, ngx_http_linegate_operator_api_key_args
};

static ngx_http_linegate_operator_credential_t
    ngx_http_linegate_operator_sb_key = {
    "key id", "account", { "key_id", "secret" }, { "sbk_", "sbs_" },
    { 12, 40 }, ngx_http_linegate_operator_sb_key_args
};


/* op_upsert: {-1}, or {1, created, HGETALL}; HGETALL of each kind */
static ngx_http_linegate_operator_call_t  ngx_http_linegate_operator_upsert = {
    ngx_http_linegate_operator_upsert_args,
    NGX_HTTP_LINEGATE_SCRIPT_OP_UPSERT, 1,
    NGX_HTTP_LINEGATE_OPERATOR_REPLY_ARRAY, "iia", NGX_HTTP_OK,
    ngx_http_linegate_operator_tenant_saved,
    0,
    NULL,
    0,
    NULL, NULL, NULL,
    NULL
};

static ngx_http_linegate_operator_call_t  ngx_http_linegate_operator_ws_get = {
    ngx_http_linegate_operator_hgetall_args,
    NGX_HTTP_LINEGATE_OPERATOR_COMMAND, 0,
    NGX_HTTP_LINEGATE_OPERATOR_REPLY_HASH, "", NGX_HTTP_OK,
    ngx_http_linegate_operator_workspace_json,
    0,
    NULL,
    0,
    NULL, NULL, NULL,
    NULL
};

static ngx_http_linegate_operator_call_t
    ngx_http_linegate_operator_acct_get = {
    ngx_http_linegate_operator_hgetall_args,
    NGX_HTTP_LINEGATE_OPERATOR_COMMAND, 0,
    NGX_HTTP_LINEGATE_OPERATOR_REPLY_HASH, "", NGX_HTTP_OK,
    ngx_http_linegate_operator_account_json,
    0,
    NULL,
    0,
    NULL, NULL, NULL,
    NULL
};

/* op_key_create, op_credentials: 0 when there is no such owner */
static ngx_http_linegate_operator_call_t
    ngx_http_linegate_operator_key_create = {
    ngx_http_linegate_operator_issue,
    NGX_HTTP_LINEGATE_SCRIPT_OP_KEY_CREATE, 2,
    NGX_HTTP_LINEGATE_OPERATOR_REPLY_INTEGER, "", NGX_HTTP_CREATED,
    ngx_http_linegate_operator_issued,
    0,
    ngx_http_linegate_operator_key_listed,
    0,
    NULL, NULL, NULL,
    NULL
};

static ngx_http_linegate_operator_call_t
    ngx_http_linegate_operator_sb_create = {
    ngx_http_linegate_operator_issue,
    NGX_HTTP_LINEGATE_SCRIPT_OP_CREDENTIALS, 1,
    NGX_HTTP_LINEGATE_OPERATOR_REPLY_ARRAY, "ia", NGX_HTTP_CREATED,
    ngx_http_linegate_operator_issued,
    0,
    ngx_http_linegate_operator_sb_rotated,
    1,
    NULL, NULL, NULL,
    NULL
};

/* op_key_list: the key ids, nil without the workspace; op_key_revoke */
static ngx_http_linegate_operator_call_t
    ngx_http_linegate_operator_key_lister = {
    ngx_http_linegate_operator_key_list,
    NGX_HTTP_LINEGATE_SCRIPT_OP_KEY_LIST, 2,
    NGX_HTTP_LINEGATE_OPERATOR_REPLY_LIST, "", NGX_HTTP_OK,
    ngx_http_linegate_operator_keys_listed,
    0,
    NULL,
    0,
    NULL, NULL, NULL,
    NULL
};

static ngx_http_linegate_operator_call_t
    ngx_http_linegate_operator_key_revoker = {
    ngx_http_linegate_operator_key_revoke,
    NGX_HTTP_LINEGATE_SCRIPT_OP_KEY_REVOKE, 1,
    NGX_HTTP_LINEGATE_OPERATOR_REPLY_ARRAY, "is", NGX_HTTP_OK,
    ngx_http_linegate_operator_key_revoked,
    0,
    ngx_http_linegate_operator_key_unlisted,
    1,
    ngx_http_linegate_operator_key_read,
    ngx_http_linegate_operator_key_digest,
    ngx_http_linegate_operator_key_lost,
    NULL
};


/* one row a path and method: the order of the rows does not matter */
ngx_http_linegate_operator_route_t
    ngx_http_linegate_operator_tenant_routes[] = {

    { "workspaces/*", NGX_HTTP_GET,
      { &ngx_http_linegate_operator_workspace_id, NULL }, { NULL, NULL },
      &ngx_http_linegate_operator_ws_get, ngx_http_linegate_operator_ws_codes,
      &ngx_http_linegate_operator_workspace },
    { "workspaces/*", NGX_HTTP_PUT,
      { &ngx_http_linegate_operator_workspace_id, NULL },
      { ngx_http_linegate_operator_tenant_put,
        ngx_http_linegate_operator_ws_put },
      &ngx_http_linegate_operator_upsert, ngx_http_linegate_operator_ws_codes,
      &ngx_http_linegate_operator_workspace },
    { "workspaces/*/keys/*", NGX_HTTP_DELETE,
      { &ngx_http_linegate_operator_workspace_id,
        &ngx_http_linegate_operator_key_id }, { NULL, NULL },
      &ngx_http_linegate_operator_key_revoker,
      ngx_http_linegate_operator_key_codes, NULL },
    { "workspaces/*/keys", NGX_HTTP_GET,
      { &ngx_http_linegate_operator_workspace_id, NULL }, { NULL, NULL },
      &ngx_http_linegate_operator_key_lister,
      ngx_http_linegate_operator_ws_codes, NULL },
    { "workspaces/*/keys", NGX_HTTP_POST,
      { &ngx_http_linegate_operator_workspace_id, NULL }, { NULL, NULL },
      &ngx_http_linegate_operator_key_create,
      ngx_http_linegate_operator_issue_codes,
      &ngx_http_linegate_operator_api_key },

    { "accounts/*", NGX_HTTP_PUT,
      { &ngx_http_linegate_operator_account_id, NULL },
      { ngx_http_linegate_operator_tenant_put,
        ngx_http_linegate_operator_acct_put },
      &ngx_http_linegate_operator_upsert, ngx_http_linegate_operator_acct_codes,
      &ngx_http_linegate_operator_account },
    { "accounts/*", NGX_HTTP_GET,
      { &ngx_http_linegate_operator_account_id, NULL }, { NULL, NULL },
      &ngx_http_linegate_operator_acct_get,
      ngx_http_linegate_operator_acct_codes,
      &ngx_http_linegate_operator_account },
    { "accounts/*/credentials", NGX_HTTP_POST,
      { &ngx_http_linegate_operator_account_id, NULL }, { NULL, NULL },
      &ngx_http_linegate_operator_sb_create,
      ngx_http_linegate_operator_acct_codes,
      &ngx_http_linegate_operator_sb_key },

    { NULL, 0, { NULL, NULL }, { NULL, NULL }, NULL, NULL, NULL }
};


static const char  *ngx_http_linegate_operator_plans[] = {
    "mini", "starter", "growth", NULL
};

/* Stripe's subscription statuses */
static const char  *ngx_http_linegate_operator_sub_statuses[] = {
    "active", "trialing", "past_due", "unpaid", "canceled", "incomplete",
    "incomplete_expired", "paused", NULL
};

static const char  *ngx_http_linegate_operator_ws_shown[] = {
    "plan", "subscriptionStatus", "stripeCustomerId", "createdAt",
    "updatedAt", NULL
};

static const char  *ngx_http_linegate_operator_acct_shown[] = {
    "plan", "stripeCustomerId", "key_id", NULL
};

static const char  *ngx_http_linegate_operator_dates[] = {
    "createdAt", "updatedAt", NULL
};


/* workspaces and accounts */

static ngx_int_t
ngx_http_linegate_operator_upsert_args(ngx_http_request_t *r,
    ngx_http_linegate_operator_t *adm)
{
    ngx_uint_t                            i;
    ngx_http_linegate_operator_tenant_t  *tenant;

    tenant = adm->route->data;

    ngx_http_linegate_operator_key(r, adm, tenant->key, &adm->arg[0]);
    ngx_http_linegate_redis_arg_str(&adm->args, &adm->now);

    /* the field a creation must set */
    ngx_http_linegate_redis_arg_cstr(&adm->args, "plan");

    for (i = 0; i < NGX_HTTP_LINEGATE_OPERATOR_FIELDS; i++) {
        if (adm->value[i].field == NULL) {
            break;
        }

        if (adm->value[i].field->stored != NULL
            && adm->value[i].state != NGX_HTTP_LINEGATE_OPERATOR_ABSENT)
        {
            ngx_http_linegate_operator_upsert_field(r, adm, &adm->value[i]);
        }
    }

    return NGX_OK;
}


/* a field triple for op_upsert: null deletes the field */
static void
ngx_http_linegate_operator_upsert_field(ngx_http_request_t *r,
    ngx_http_linegate_operator_t *adm, ngx_http_linegate_operator_value_t *v)
{
    ngx_http_linegate_redis_args_t  *a;

    a = &adm->args;

    ngx_http_linegate_redis_arg_cstr(a, v->field->stored);

    if (v->state == NGX_HTTP_LINEGATE_OPERATOR_NULL) {
        ngx_http_linegate_redis_arg_cstr(a, "del");
        ngx_http_linegate_redis_arg(a, "", 0);
        return;
    }

    ngx_http_linegate_redis_arg_cstr(a, "set");

    if (v->field->flags & NGX_HTTP_LINEGATE_OPERATOR_INTEGER) {
        ngx_http_linegate_redis_arg_int(r, a, v->n);
        return;
    }

    /* the string lives in ctx->body until the request ends */
    ngx_http_linegate_redis_arg_str(a, &v->str);
}


/*
 * The fields a PUT wrote, for its log line: "plan=growth
 * stripeCustomerId=null ...", or "" (no memory, or none). Every value
 * passed its check (enumerations, ids of word characters, integers):
 * none is a secret, none can break the line.
 */
static void
ngx_http_linegate_operator_changes(ngx_http_request_t *r,
    ngx_http_linegate_operator_t *adm, ngx_str_t *out)
{
    u_char                              *p;
    size_t                               len;
    ngx_uint_t                           i;
    ngx_http_linegate_operator_value_t  *v;

    ngx_str_set(out, "");

    len = 0;

    for (i = 0; i < NGX_HTTP_LINEGATE_OPERATOR_FIELDS; i++) {
        v = &adm->value[i];

        if (v->field == NULL) {
            break;
        }

        if (v->field->stored != NULL
            && v->state != NGX_HTTP_LINEGATE_OPERATOR_ABSENT)
        {
            len += 1 + ngx_strlen(v->field->name) + 1 + v->str.len
                   + NGX_INT64_LEN;
        }
    }

    if (len == 0) {
        return;
    }

    p = ngx_pnalloc(r->pool, len);
    if (p == NULL) {
        return;
    }

    out->data = p;

    for (i = 0; i < NGX_HTTP_LINEGATE_OPERATOR_FIELDS; i++) {
        v = &adm->value[i];

        if (v->field == NULL) {
            break;
        }

        if (v->field->stored == NULL
            || v->state == NGX_HTTP_LINEGATE_OPERATOR_ABSENT)
        {
            continue;
        }

        p = ngx_sprintf(p, " %s=", v->field->name);

        if (v->state == NGX_HTTP_LINEGATE_OPERATOR_NULL) {
            p = ngx_cpymem(p, "null", 4);

        } else if (v->field->flags & NGX_HTTP_LINEGATE_OPERATOR_INTEGER) {
            p = ngx_sprintf(p, "%L", (int64_t) v->n);

        } else {
            p = ngx_cpymem(p, v->str.data, v->str.len);
        }
    }

    out->len = p - out->data;
}


static void
ngx_http_linegate_operator_tenant_saved(ngx_http_request_t *r,
    ngx_http_linegate_operator_t *adm, redisReply *reply,
    ngx_http_linegate_json_write_t *jw)
{
    ngx_str_t                             changes;
    const char                           *done;
    ngx_http_linegate_operator_tenant_t  *tenant;

    tenant = adm->route->data;
    done = reply->element[1]->integer ? "created" : "updated";

    /* what was set, so that a plan or a subscription given by hand shows */
    ngx_http_linegate_operator_changes(r, adm, &changes);

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  NGX_HTTP_LINEGATE_LOG "operator: %s \"%V\" %s%s%V",
                  tenant->name, &adm->arg[0], done,
                  changes.len ? ":" : "", &changes);

    tenant->json(r, adm, reply->element[2], jw);
}


static ngx_int_t
ngx_http_linegate_operator_hgetall_args(ngx_http_request_t *r,
    ngx_http_linegate_operator_t *adm)
{
    ngx_http_linegate_operator_tenant_t  *tenant;

    tenant = adm->route->data;

    ngx_http_linegate_redis_arg_cstr(&adm->args, "HGETALL");
    ngx_http_linegate_operator_key(r, adm, tenant->key, &adm->arg[0]);

    return NGX_OK;
}


static void
ngx_http_linegate_operator_workspace_json(ngx_http_request_t *r,
    ngx_http_linegate_operator_t *adm, redisReply *hash,
    ngx_http_linegate_json_write_t *jw)
{
    ngx_http_linegate_operator_object(jw, &adm->arg[0]);
    ngx_http_linegate_operator_set_strs(jw, hash,
                                        ngx_http_linegate_operator_ws_shown);
    ngx_http_linegate_json_write_end(jw, '}');
}


static void
ngx_http_linegate_operator_account_json(ngx_http_request_t *r,
    ngx_http_linegate_operator_t *adm, redisReply *hash,
    ngx_http_linegate_json_write_t *jw)
{
    ngx_int_t                       daily, monthly;
    ngx_http_linegate_main_conf_t  *lmcf;

    lmcf = ngx_http_get_module_main_conf(r, ngx_http_linegate_module);

    ngx_http_linegate_operator_object(jw, &adm->arg[0]);
    ngx_http_linegate_operator_set_strs(jw, hash,
                                        ngx_http_linegate_operator_acct_shown);
    daily = ngx_http_linegate_operator_set_int(jw, "api_provision_daily",
                                               hash, "daily_limit");
    monthly = ngx_http_linegate_operator_set_int(jw, "api_provision_monthly",
                                                 hash, "monthly_limit");

    /* what applies: the override, else the configured default */
    ngx_http_linegate_json_write_key(jw, "limits");
    ngx_http_linegate_json_write_object(jw);
    ngx_http_linegate_json_write_key(jw, "daily");
    ngx_http_linegate_json_write_int(jw, daily != NGX_ERROR
                                         ? (int64_t) daily
                                         : (int64_t) lmcf->prov_daily);
    ngx_http_linegate_json_write_key(jw, "monthly");
    ngx_http_linegate_json_write_int(jw, monthly != NGX_ERROR
                                         ? (int64_t) monthly
                                         : (int64_t) lmcf->prov_monthly);
    ngx_http_linegate_json_write_end(jw, '}');

    ngx_http_linegate_operator_set_strs(jw, hash,
                                        ngx_http_linegate_operator_dates);
    ngx_http_linegate_json_write_end(jw, '}');
}


/* API keys and credentials */

static ngx_int_t
ngx_http_linegate_operator_issue(ngx_http_request_t *r,
    ngx_http_linegate_operator_t *adm)
{
    ngx_http_linegate_operator_credential_t  *cred;

    cred = adm->route->data;

    if (ngx_http_linegate_operator_generate(r, &adm->key_id, cred->prefix[0],
                                            cred->size[0], 1)
        != NGX_OK
        || ngx_http_linegate_operator_generate(r, &adm->secret, cred->prefix[1],
                                               cred->size[1], 0)
           != NGX_OK
        || ngx_http_linegate_operator_digest(r, &adm->secret, &adm->digest)
           != NGX_OK)
    {
        ngx_http_linegate_internal_error(r);
        return NGX_ERROR;
    }

    return cred->args(r, adm);
}


/* prefix followed by n random characters ([A-Za-z0-9]) or n bytes of hex */
static ngx_int_t
ngx_http_linegate_operator_generate(ngx_http_request_t *r, ngx_str_t *out,
    const char *prefix, size_t n, ngx_uint_t hex)
{
    int      rc;
    u_char  *p;
    size_t   plen, len;

    plen = ngx_strlen(prefix);
    len = plen + (hex ? 2 * n : n);

    p = ngx_pnalloc(r->pool, len + 1);
    if (p == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(p, prefix, plen);

    rc = hex ? ngx_http_linegate_random_hex((char *) p + plen, n)
             : ngx_http_linegate_random_token((char *) p + plen, n);

    if (rc != 0) {
        ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                      NGX_HTTP_LINEGATE_LOG "no randomness for a credential");
        return NGX_ERROR;
    }

    out->data = p;
    out->len = len;

    return NGX_OK;
}


static ngx_int_t
ngx_http_linegate_operator_digest(ngx_http_request_t *r, ngx_str_t *in,
    ngx_str_t *out)
{
    u_char  *p;

    p = ngx_pnalloc(r->pool, 65);
    if (p == NULL) {
        return NGX_ERROR;
    }

    ngx_http_linegate_sha256_hex(in->data, in->len, (char *) p);

    if (p[0] == '\0') {
        return NGX_ERROR;
    }

    out->data = p;
    out->len = 64;

    return NGX_OK;
}


/* op_key_create: the workspace, its keys; the key id and its digest */
static ngx_int_t
ngx_http_linegate_operator_api_key_args(ngx_http_request_t *r,
    ngx_http_linegate_operator_t *adm)
{
    ngx_http_linegate_operator_key(r, adm, NGX_HTTP_LINEGATE_KEY_WS,
                                   &adm->arg[0]);
    ngx_http_linegate_operator_key(r, adm, NGX_HTTP_LINEGATE_KEY_WS_KEYS,
                                   &adm->arg[0]);
    ngx_http_linegate_redis_arg_str(&adm->args, &adm->key_id);
    ngx_http_linegate_redis_arg_str(&adm->args, &adm->digest);

    return NGX_OK;
}


/*
 * An API key's issue, next step, each one slot (a Redis Cluster's rule):
 * the workspace lists the key (op_key_create, done), then its lookup
 * lg:apikey:<digest> is written, and only then is the key answered;
 * with linegate_redis_wait, each once a replica has it (redis.c). A
 * failure of the lookup's write is a 503: the key was never shown, its
 * entry is listed and revocable, and it never authenticates (a lookup
 * whose write did land is checked against the entry: include/lr_gate).
 */
static void
ngx_http_linegate_operator_key_listed(ngx_http_request_t *r,
    ngx_http_linegate_operator_t *adm, redisReply *reply)
{
    /* op_key_create's arguments are answered: the lookup's replace them */
    ngx_http_linegate_redis_args_init(&adm->args);
    ngx_http_linegate_redis_arg_cstr(&adm->args, "SET");
    ngx_http_linegate_operator_key(r, adm, NGX_HTTP_LINEGATE_KEY_APIKEY,
                                   &adm->digest);
    ngx_http_linegate_redis_arg_str(&adm->args, &adm->arg[0]);

    /* the 201 gives a key that works: lost with its master, it would not */
    adm->args.acknowledged = 1;

    if (ngx_http_linegate_redis_command(r, &adm->args,
                                        ngx_http_linegate_operator_key_stored)
        != NGX_OK)
    {
        ngx_http_linegate_store_unavailable(r);
    }
}


static void
ngx_http_linegate_operator_key_stored(ngx_http_request_t *r,
    redisReply *reply)
{
    ngx_http_linegate_operator_t    *adm;
    ngx_http_linegate_json_write_t   jw;

    adm = ngx_http_linegate_get_ctx(r)->data;

    if (reply == NULL || reply->type != REDIS_REPLY_STATUS) {
        ngx_http_linegate_store_unavailable(r);
        return;
    }

    (void) ngx_http_linegate_json_write_init(&jw, r->pool, 512);
    ngx_http_linegate_operator_issued(r, adm, NULL, &jw);

    ngx_http_linegate_send_jw(r, NGX_HTTP_CREATED, &jw);
}


/* op_credentials: the account, the new key id; it also dates the change */
static ngx_int_t
ngx_http_linegate_operator_sb_key_args(ngx_http_request_t *r,
    ngx_http_linegate_operator_t *adm)
{
    ngx_http_linegate_operator_key(r, adm, NGX_HTTP_LINEGATE_KEY_ACCT,
                                   &adm->arg[0]);
    ngx_http_linegate_redis_arg_str(&adm->args, &adm->key_id);
    ngx_http_linegate_redis_arg_str(&adm->args, &adm->now);

    return NGX_OK;
}


/*
 * A rotation's next steps, each one slot (a Redis Cluster's rule): the
 * account names its new key id (op_credentials, done: it refuses the
 * others from now on), then the new key id's lookup is written, then the
 * lookups of the key ids it retired (the previous one, and those of the
 * last rotations, op_credentials.lua) are deleted by durable writes. A
 * failure of the lookup's write is a 503: the account then takes no key
 * until the operator rotates again, never the old one.
 */
static void
ngx_http_linegate_operator_sb_rotated(ngx_http_request_t *r,
    ngx_http_linegate_operator_t *adm, redisReply *reply)
{
    size_t       i;
    redisReply  *ids, *id;

    ids = reply->element[1];

    adm->retired = ngx_pcalloc(r->pool, (ids->elements + 1)
                                        * sizeof(ngx_str_t));
    if (adm->retired == NULL) {
        ngx_http_linegate_internal_error(r);
        return;
    }

    for (i = 0; i < ids->elements; i++) {
        id = ids->element[i];

        if (id->type != REDIS_REPLY_STRING || id->len == 0) {
            continue;
        }

        adm->retired[adm->nretired].data = ngx_pnalloc(r->pool, id->len);
        if (adm->retired[adm->nretired].data == NULL) {
            ngx_http_linegate_internal_error(r);
            return;
        }

        ngx_memcpy(adm->retired[adm->nretired].data, id->str, id->len);
        adm->retired[adm->nretired++].len = id->len;
    }

    /* op_credentials' arguments are answered: the lookup's replace them */
    ngx_http_linegate_redis_args_init(&adm->args);
    ngx_http_linegate_redis_arg_cstr(&adm->args, "HSET");
    ngx_http_linegate_operator_key(r, adm, NGX_HTTP_LINEGATE_KEY_SBKEY,
                                   &adm->key_id);
    ngx_http_linegate_redis_arg_cstr(&adm->args, "account");
    ngx_http_linegate_redis_arg_str(&adm->args, &adm->arg[0]);
    ngx_http_linegate_redis_arg_cstr(&adm->args, "secret_sha256");
    ngx_http_linegate_redis_arg_str(&adm->args, &adm->digest);

    /* the 201 gives a key that works: lost with its master, it would not */
    adm->args.acknowledged = 1;

    if (ngx_http_linegate_redis_command(r, &adm->args,
                                        ngx_http_linegate_operator_sb_stored)
        != NGX_OK)
    {
        ngx_http_linegate_store_unavailable(r);
    }
}


static void
ngx_http_linegate_operator_sb_stored(ngx_http_request_t *r,
    redisReply *reply)
{
    ngx_uint_t                       i;
    ngx_http_linegate_operator_t    *adm;
    ngx_http_linegate_json_write_t   jw;

    adm = ngx_http_linegate_get_ctx(r)->data;

    if (reply == NULL || reply->type != REDIS_REPLY_INTEGER) {
        ngx_http_linegate_store_unavailable(r);
        return;
    }

    /*
     * the retired keys are refused already (the account's key_id): their
     * lookups are garbage, deleted even when the request ends now
     */
    for (i = 0; i < adm->nretired; i++) {
        ngx_http_linegate_redis_args_init(&adm->args);
        ngx_http_linegate_operator_key(r, adm, NGX_HTTP_LINEGATE_KEY_SBKEY,
                                       &adm->retired[i]);
        ngx_http_linegate_redis_arg_str(&adm->args, &adm->arg[0]);

        (void) ngx_http_linegate_redis_durable(r->connection->log,
                   NGX_HTTP_LINEGATE_SCRIPT_OP_SBKEY_DROP, 1, &adm->args,
                   "retired key id's lookup");
    }

    (void) ngx_http_linegate_json_write_init(&jw, r->pool, 512);
    ngx_http_linegate_operator_issued(r, adm, NULL, &jw);

    ngx_http_linegate_send_jw(r, NGX_HTTP_CREATED, &jw);
}


static void
ngx_http_linegate_operator_issued(ngx_http_request_t *r,
    ngx_http_linegate_operator_t *adm, redisReply *reply,
    ngx_http_linegate_json_write_t *jw)
{
    ngx_http_linegate_operator_credential_t  *cred;

    cred = adm->route->data;

    /* the key id identifies the key; the key itself is never logged */
    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  NGX_HTTP_LINEGATE_LOG "operator: %s \"%V\" issued "
                  "for %s \"%V\"", cred->what, &adm->key_id, cred->owner,
                  &adm->arg[0]);

    ngx_http_linegate_json_write_object(jw);
    ngx_http_linegate_json_write_keyn(jw, cred->name[0],
                                      ngx_strlen(cred->name[0]));
    ngx_http_linegate_json_write_str(jw, adm->key_id.data, adm->key_id.len);
    ngx_http_linegate_json_write_keyn(jw, cred->name[1],
                                      ngx_strlen(cred->name[1]));
    ngx_http_linegate_json_write_str(jw, adm->secret.data, adm->secret.len);
    ngx_http_linegate_json_write_end(jw, '}');
}


static ngx_int_t
ngx_http_linegate_operator_key_revoke(ngx_http_request_t *r,
    ngx_http_linegate_operator_t *adm)
{
    ngx_http_linegate_operator_key(r, adm, NGX_HTTP_LINEGATE_KEY_WS_KEYS,
                                   &adm->arg[0]);
    ngx_http_linegate_redis_arg_str(&adm->args, &adm->arg[1]);

    return NGX_OK;
}


/*
 * A revocation reads the key's digest first (HGET, the workspace's slot,
 * no write): op_key_revoke's reply may be lost after it ran (a timeout),
 * and without the digest nothing could delete the lookup any more (a
 * retry finds no entry: 404). The lookup of a key without its entry never
 * authenticates (include/lr_gate): it would only be garbage, for good.
 */
static ngx_int_t
ngx_http_linegate_operator_key_read(ngx_http_request_t *r,
    ngx_http_linegate_operator_t *adm)
{
    ngx_str_t  key;

    if (ngx_http_linegate_key(r->pool, NGX_HTTP_LINEGATE_KEY_WS_KEYS,
                              &adm->arg[0], NULL, &key)
        != NGX_OK)
    {
        ngx_http_linegate_internal_error(r);
        return NGX_ERROR;
    }

    ngx_http_linegate_redis_arg_cstr(&adm->cmd, "HGET");
    ngx_http_linegate_redis_arg_str(&adm->cmd, &key);
    ngx_http_linegate_redis_arg_str(&adm->cmd, &adm->arg[1]);

    return NGX_OK;
}


/* the digest read (nil: no such key, which op_key_revoke answers 404) */
static ngx_int_t
ngx_http_linegate_operator_key_digest(ngx_http_request_t *r,
    ngx_http_linegate_operator_t *adm, redisReply *reply)
{
    ngx_str_null(&adm->digest);

    if (reply->type == REDIS_REPLY_NIL) {
        return NGX_OK;
    }

    if (reply->type != REDIS_REPLY_STRING || reply->len == 0) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      NGX_HTTP_LINEGATE_LOG "unexpected API key entry "
                      "reply of type %d", reply->type);
        ngx_http_linegate_internal_error(r);
        return NGX_ERROR;
    }

    if (ngx_http_linegate_pstr(r->pool, &adm->digest, (u_char *) reply->str,
                               reply->len)
        == NULL)
    {
        ngx_http_linegate_internal_error(r);
        return NGX_ERROR;
    }

    return NGX_OK;
}


/*
 * op_key_revoke unanswered: it may have run (a timeout), so the lookup is
 * dropped all the same, a durable write, before the call's 503. Had the
 * script not run, the key stays listed without its lookup: refused by
 * every worker that does not cache it (a revocation was asked for),
 * revoked by the retry.
 */
static void
ngx_http_linegate_operator_key_lost(ngx_http_request_t *r,
    ngx_http_linegate_operator_t *adm)
{
    if (adm->digest.len) {
        ngx_http_linegate_operator_key_drop(r, adm, &adm->digest);
    }
}


/* DEL lg:apikey:<digest> into adm->args, queued as a durable write */
static void
ngx_http_linegate_operator_key_drop(ngx_http_request_t *r,
    ngx_http_linegate_operator_t *adm, ngx_str_t *digest)
{
    ngx_http_linegate_redis_args_init(&adm->args);
    ngx_http_linegate_redis_arg_cstr(&adm->args, "DEL");
    ngx_http_linegate_operator_key(r, adm, NGX_HTTP_LINEGATE_KEY_APIKEY,
                                   digest);

    (void) ngx_http_linegate_redis_durable_command(r->connection->log,
                                                   &adm->args,
                                                   "revoked API key's lookup");
}


/*
 * A revocation's next step: the workspace no longer lists the key
 * (op_key_revoke, done), which refuses it from now on; its lookup is
 * garbage, deleted by a durable write (idempotent: DEL), and sent for
 * this request too, which is answered once Redis ran it or gave up: the
 * durable write keeps it whatever becomes of the request.
 */
static void
ngx_http_linegate_operator_key_unlisted(ngx_http_request_t *r,
    ngx_http_linegate_operator_t *adm, redisReply *reply)
{
    ngx_str_t    digest;
    redisReply  *d;

    d = reply->element[1];
    digest.data = (u_char *) d->str;
    digest.len = d->len;

    ngx_http_linegate_operator_key_drop(r, adm, &digest);

    if (ngx_http_linegate_redis_command(r, &adm->args,
                                        ngx_http_linegate_operator_key_dropped)
        != NGX_OK)
    {
        ngx_http_linegate_operator_key_dropped(r, NULL);
    }
}


static void
ngx_http_linegate_operator_key_dropped(ngx_http_request_t *r,
    redisReply *reply)
{
    ngx_http_linegate_operator_t    *adm;
    ngx_http_linegate_json_write_t   jw;

    adm = ngx_http_linegate_get_ctx(r)->data;

    (void) ngx_http_linegate_json_write_init(&jw, r->pool, 64);
    ngx_http_linegate_operator_key_revoked(r, adm, NULL, &jw);

    ngx_http_linegate_send_jw(r, NGX_HTTP_OK, &jw);
}


static void
ngx_http_linegate_operator_key_revoked(ngx_http_request_t *r,
    ngx_http_linegate_operator_t *adm, redisReply *reply,
    ngx_http_linegate_json_write_t *jw)
{
    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  NGX_HTTP_LINEGATE_LOG "operator: API key \"%V\" of "
                  "workspace \"%V\" revoked", &adm->arg[1], &adm->arg[0]);

    ngx_http_linegate_json_write_object(jw);
    ngx_http_linegate_json_write_key(jw, "revoked");
    ngx_http_linegate_json_write_bool(jw, 1);
    ngx_http_linegate_json_write_end(jw, '}');
}


static ngx_int_t
ngx_http_linegate_operator_key_list(ngx_http_request_t *r,
    ngx_http_linegate_operator_t *adm)
{
    ngx_http_linegate_operator_key(r, adm, NGX_HTTP_LINEGATE_KEY_WS,
                                   &adm->arg[0]);
    ngx_http_linegate_operator_key(r, adm, NGX_HTTP_LINEGATE_KEY_WS_KEYS,
                                   &adm->arg[0]);

    return NGX_OK;
}


/* an empty list is a workspace without keys */
static void
ngx_http_linegate_operator_keys_listed(ngx_http_request_t *r,
    ngx_http_linegate_operator_t *adm, redisReply *reply,
    ngx_http_linegate_json_write_t *jw)
{
    ngx_http_linegate_json_write_object(jw);
    ngx_http_linegate_json_write_key(jw, "keys");
    (void) ngx_http_linegate_operator_strings(jw, reply, "keyId");
    ngx_http_linegate_json_write_end(jw, '}');
}


/* validation */

static ngx_uint_t
ngx_http_linegate_operator_filled(ngx_str_t *s)
{
    return s->len > 0;
}


/* what every Stripe call accepts as an id (stripe.c): no '-' */
static ngx_uint_t
ngx_http_linegate_operator_customer_valid(ngx_str_t *s)
{
    return s->len >= 5 && s->len <= 255
           && ngx_strncmp(s->data, "cus_", 4) == 0
           && ngx_http_linegate_chars_are(s->data + 4, s->len - 4,
                                          NGX_HTTP_LINEGATE_CHARS_WORD);
}


static ngx_uint_t
ngx_http_linegate_operator_ws_plan_valid(ngx_str_t *s)
{
    return ngx_http_linegate_operator_one_of(s,
               ngx_http_linegate_operator_plans);
}


static ngx_uint_t
ngx_http_linegate_operator_status_valid(ngx_str_t *s)
{
    return ngx_http_linegate_operator_one_of(s,
                                      ngx_http_linegate_operator_sub_statuses);
}


static ngx_uint_t
ngx_http_linegate_operator_sb_plan_valid(ngx_str_t *s)
{
    return s->len <= 32
           && ngx_http_linegate_chars_are(s->data, s->len,
                                          NGX_HTTP_LINEGATE_CHARS_LOWER_WORD);
}


/* "key_" and 16 hex */
static ngx_uint_t
ngx_http_linegate_operator_key_id_valid(ngx_str_t *s)
{
    return s->len == 4 + 16 && ngx_strncmp(s->data, "key_", 4) == 0
           && ngx_http_linegate_chars_are(s->data + 4, s->len - 4,
                                          NGX_HTTP_LINEGATE_CHARS_HEX);
}
