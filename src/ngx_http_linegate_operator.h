
/*
 * linegate: the operator API (SPEC section 5). Shared by its files:
 * admin.c (routing, the operator token, and what every route uses: path
 * ids, body fields, running its Redis call and answering the reply),
 * admin_tenants.c (workspaces, API keys, accounts, credentials) and
 * admin_ops.c (inventory, lines, the provisioning and reconciliation
 * streams).
 *
 * A route is a row of a table: the router checks the ids in its path and
 * the fields of its body, has the route's call build its Redis arguments
 * and runs it. The reply's code is looked up in the route's table of
 * codes that are errors (404, 409, 400); any other is answered by the
 * call's answer.
 */


#ifndef _NGX_HTTP_LINEGATE_OPERATOR_H_INCLUDED_
#define _NGX_HTTP_LINEGATE_OPERATOR_H_INCLUDED_


#include "ngx_http_linegate_module.h"
#include "ngx_http_linegate_redis.h"
#include "ngx_http_linegate_keys.h"
#include "ngx_http_linegate_clock.h"
#include "ngx_http_linegate_ids.h"
#include "ngx_http_linegate_chars.h"
#include "ngx_http_linegate_json_write.h"
#include "ngx_http_linegate_idempotency.h"


#define NGX_HTTP_LINEGATE_OPERATOR_ARGS     2    /* "*" of a route */
#define NGX_HTTP_LINEGATE_OPERATOR_COMMAND  (-1) /* not a script */
#define NGX_HTTP_LINEGATE_OPERATOR_FIELDS   8    /* body fields of a route */
#define NGX_HTTP_LINEGATE_COUNTER_MAX       1000000
/* API keys a workspace may hold (op_key_create.lua reads it) */
#define NGX_HTTP_LINEGATE_WS_KEYS_MAX       100



/* how a body field is read: ngx_http_linegate_operator_field_t.flags */
#define NGX_HTTP_LINEGATE_OPERATOR_REQUIRED  0x01  /* absent, null: refused */
#define NGX_HTTP_LINEGATE_OPERATOR_NULLABLE  0x02  /* null kept: deletes */
#define NGX_HTTP_LINEGATE_OPERATOR_STRICT    0x04  /* null: a wrong type */
#define NGX_HTTP_LINEGATE_OPERATOR_TRIM      0x08
#define NGX_HTTP_LINEGATE_OPERATOR_INTEGER   0x10  /* 0 to COUNTER_MAX */

/* what a body field came to: ngx_http_linegate_operator_value_t.state */
#define NGX_HTTP_LINEGATE_OPERATOR_ABSENT   0
#define NGX_HTTP_LINEGATE_OPERATOR_NULL     1
#define NGX_HTTP_LINEGATE_OPERATOR_SET      2


/*
 * What a call's reply is, and so where its code comes from:
 * INTEGER  the integer is the code;
 * ARRAY    not empty, its first element is the code;
 * HASH     an HGETALL: code 0 when empty (no such hash), else 1;
 * LIST     an array, maybe empty: code 1; nil (a script's false) is 0.
 */
typedef enum {
    NGX_HTTP_LINEGATE_OPERATOR_REPLY_INTEGER = 0,
    NGX_HTTP_LINEGATE_OPERATOR_REPLY_ARRAY,
    NGX_HTTP_LINEGATE_OPERATOR_REPLY_HASH,
    NGX_HTTP_LINEGATE_OPERATOR_REPLY_LIST
} ngx_http_linegate_operator_reply_e;


typedef struct ngx_http_linegate_operator_s  ngx_http_linegate_operator_t;

/*
 * The roles of the functions the tables name, as function types: the
 * files declare theirs with them ("static ..._args_t  name;"), so a
 * table and a function cannot disagree on a signature.
 */

/* the Redis arguments of a route's call; NGX_ERROR: it has answered */
typedef ngx_int_t ngx_http_linegate_operator_args_t(ngx_http_request_t *r,
    ngx_http_linegate_operator_t *adm);

/*
 * the body of a 200 or 201, written to jw (no memory: jw's error, which
 * is answered 500)
 */
typedef void ngx_http_linegate_operator_answer_t(ngx_http_request_t *r,
    ngx_http_linegate_operator_t *adm, redisReply *reply,
    ngx_http_linegate_json_write_t *jw);

/* a call's steps after its script: they answer the request themselves */
typedef void ngx_http_linegate_operator_after_t(ngx_http_request_t *r,
    ngx_http_linegate_operator_t *adm, redisReply *reply);

/*
 * a call's read before its script taken: NGX_OK runs the script, else it
 * has answered
 */
typedef ngx_int_t ngx_http_linegate_operator_read_t(ngx_http_request_t *r,
    ngx_http_linegate_operator_t *adm, redisReply *reply);

/* a call's script unanswered (it may have run), before its 503 */
typedef void ngx_http_linegate_operator_lost_t(ngx_http_request_t *r,
    ngx_http_linegate_operator_t *adm);

/* a check of a path id or of a string field */
typedef ngx_uint_t ngx_http_linegate_operator_valid_t(ngx_str_t *s);


/* a path id: refused with a 400 INVALID_ID and message */
typedef struct {
    ngx_http_linegate_operator_valid_t  *valid;
    const char                          *message;
    ngx_uint_t                           tenant;    /* $linegate_tenant */
} ngx_http_linegate_operator_id_t;


/*
 * A body field. A refused one is answered with its message; without one
 * (integers), or for a STRICT field that is not a string, the message
 * names the type the field must have.
 */
typedef struct {
    const char                          *name;
    ngx_uint_t                           flags;
    ngx_http_linegate_operator_valid_t  *valid;     /* of a string, or NULL */
    const char                          *message;
    const char                          *stored;    /* op_upsert's field */
} ngx_http_linegate_operator_field_t;

#define ngx_http_linegate_operator_null_field  { NULL, 0, NULL, NULL, NULL }


typedef struct {
    ngx_http_linegate_operator_field_t  *field;     /* NULL: past the last */
    ngx_uint_t                           state;
    ngx_str_t                            str;       /* "" unless a string */
    json_int_t                           n;         /* 0 unless an integer */
} ngx_http_linegate_operator_value_t;


/*
 * A reply code that is an error: a 400 VALIDATION_ERROR naming field, or
 * status with the code error; detail appends the reply's second element.
 */
typedef struct {
    int64_t                             code;
    ngx_uint_t                          status;    /* 0 ends a table */
    const char                         *error;
    const char                         *field;
    const char                         *message;
    ngx_uint_t                          detail;
} ngx_http_linegate_operator_code_t;

#define ngx_http_linegate_operator_null_code  { 0, 0, NULL, NULL, NULL, 0 }


/* one Redis script (or command) and how its reply is answered */
typedef struct {
    ngx_http_linegate_operator_args_t  *args;
    ngx_int_t                           script;    /* or COMMAND */
    int                                 nkeys;
    ngx_http_linegate_operator_reply_e  reply;
    /* ARRAY: the types of the elements of an answered reply, e.g. "isa" */
    const char                           *shape;     /* "": any */
    ngx_uint_t                            status;
    ngx_http_linegate_operator_answer_t  *answer;
    /*
     * 1: the owner of the path's line is read first (GET lg:line:<id>,
     * one slot; docs/data-model.md, "Scripts and slots"), into adm->ws,
     * and the script then runs on the workspace's slot; no owner is the
     * route's code 0
     */
    ngx_uint_t                            line_owner;
    /*
     * NULL, or the call's next steps once its script succeeded: they
     * answer (credentials: the new lookup, then the old one's deletion;
     * API keys: the lookup written, or deleted)
     */
    ngx_http_linegate_operator_after_t   *after;
    /*
     * 1: the call may take a credential away (a key's revocation, a
     * provisioning credential's rotation): every worker's credential
     * caches forget what they learned (ngx_http_linegate_auth_forget())
     */
    ngx_uint_t                            revokes;
    /*
     * NULL, or a command read before the script (no write: its lost
     * reply is a 503 and nothing else), its arguments put in adm->cmd;
     * its reply goes to taken
     */
    ngx_http_linegate_operator_args_t    *read;
    ngx_http_linegate_operator_read_t    *taken;
    /*
     * NULL, or what the call does when its script's reply is lost: it
     * may have run (a key's revocation drops the lookup all the same)
     */
    ngx_http_linegate_operator_lost_t    *lost;
    /*
     * NULL, or the request's own checks (a header, the body beyond its
     * fields), made before any Redis step (the owner's read included),
     * as every endpoint judges its request first: NGX_ERROR once the
     * 400 is answered
     */
    ngx_http_linegate_operator_args_t    *check;
} ngx_http_linegate_operator_call_t;


typedef struct {
    const char                         *pattern;   /* "*": one segment */
    ngx_uint_t                          methods;
    ngx_http_linegate_operator_id_t    *id[NGX_HTTP_LINEGATE_OPERATOR_ARGS];
    /* its body fields: up to two tables (one shared with routes alike) */
    ngx_http_linegate_operator_field_t  *fields[2];
    ngx_http_linegate_operator_call_t   *call;
    ngx_http_linegate_operator_code_t   *codes;     /* that are errors */
    void                                *data;      /* the call's */
} ngx_http_linegate_operator_route_t;


struct ngx_http_linegate_operator_s {
    ngx_http_linegate_ctx_t             *ctx;
    ngx_http_linegate_operator_route_t  *route;

    ngx_str_t                           arg[NGX_HTTP_LINEGATE_OPERATOR_ARGS];
    /* the route's body fields, in the order of its tables */
    ngx_http_linegate_operator_value_t
                              value[NGX_HTTP_LINEGATE_OPERATOR_FIELDS];

    /* what the answer shows once: a new key id and its key or secret */
    ngx_str_t                           key_id;
    ngx_str_t                           secret;
    /* of the secret issued; of the key revoked (read before its script) */
    ngx_str_t                           digest;
    /* the key ids a rotation retired: their lookups go */
    ngx_str_t                          *retired;
    ngx_uint_t                          nretired;

    ngx_str_t                           ws;        /* the line's owner */
    ngx_str_t                           date;      /* usage: YYYY-MM-DD */
    /* usage: its Idempotency-Key's digest and its body's fingerprint */
    ngx_http_linegate_idem_t            idem;
    int64_t                             now_ms;
    ngx_str_t                           now;       /* ISO 8601 */
    u_char                              iso[NGX_HTTP_LINEGATE_ISO_LEN];

    /* kept for the life of the request: redis.c may resend them */
    ngx_http_linegate_redis_args_t      args;
    ngx_http_linegate_redis_args_t      cmd;       /* the call's read */
};


extern ngx_http_linegate_operator_route_t
    ngx_http_linegate_operator_tenant_routes[];
extern ngx_http_linegate_operator_route_t
    ngx_http_linegate_operator_ops_routes[];


/* a key name as a Redis argument (keys.c), built in the request pool */
void ngx_http_linegate_operator_key(ngx_http_request_t *r,
    ngx_http_linegate_operator_t *adm, ngx_http_linegate_key_e kind,
    ngx_str_t *id);

/*
 * ids: [A-Za-z0-9_-]{1,64}; "+" and 8 to 15 digits, any first (a number
 * removed: ngx_http_linegate_e164_shape()), in the signature of a
 * field's check
 */
ngx_uint_t ngx_http_linegate_operator_name_valid(ngx_str_t *s);
ngx_uint_t ngx_http_linegate_operator_e164_valid(ngx_str_t *s);
/* E.164, its country code not starting with 0: a number given (chars.h) */
ngx_uint_t ngx_http_linegate_operator_number_valid(ngx_str_t *s);
/* s is one of the strings of a NULL-terminated set */
ngx_uint_t ngx_http_linegate_operator_one_of(ngx_str_t *s, const char **set);

/*
 * answers: '{' and "id": id (the caller writes the '}'); then fields of
 * a hash by their own names, or null; an integer field as name (its
 * value, NGX_ERROR written as null)
 */
void ngx_http_linegate_operator_object(ngx_http_linegate_json_write_t *jw,
    ngx_str_t *id);
void ngx_http_linegate_operator_set_strs(ngx_http_linegate_json_write_t *jw,
    redisReply *hash, const char **fields);
ngx_int_t ngx_http_linegate_operator_set_int(
    ngx_http_linegate_json_write_t *jw, const char *name, redisReply *hash,
    const char *field);
/* the strings of an array reply, each as it is, or as {name: it}: count */
ngx_uint_t ngx_http_linegate_operator_strings(
    ngx_http_linegate_json_write_t *jw, redisReply *reply, const char *name);


#endif /* _NGX_HTTP_LINEGATE_OPERATOR_H_INCLUDED_ */
