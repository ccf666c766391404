
/*
 * linegate: the operator API's operations: the phone-number inventory
 * and its quarantine, line set-up (active / failed), health and usage,
 * and the streams of work waiting for set-up and for reconciliation.
 */


#include "ngx_http_linegate_operator.h"
#include "ngx_http_linegate_reply.h"
#include "ngx_http_linegate_str.h"


#define NGX_HTTP_LINEGATE_INVENTORY_MAX     1000
#define NGX_HTTP_LINEGATE_STREAM_DEFAULT    100
#define NGX_HTTP_LINEGATE_STREAM_MAX        1000
/* a page of the inventory: as many as one POST adds */
#define NGX_HTTP_LINEGATE_INV_PAGE_MAX      1000
/* SSCAN's cursors: a table's slot, far below 2^63 */
#define NGX_HTTP_LINEGATE_CURSOR_MAX_LEN    19
#define NGX_HTTP_LINEGATE_REASON_MAX        500
#define NGX_HTTP_LINEGATE_USAGE_TTL         (3 * 86400)
/*
 * an entry of the quarantine, as the operator names it: whatever the
 * inventory held (pv_claim, pv_stock set it aside as it was), bounded
 */
#define NGX_HTTP_LINEGATE_QUARANTINE_ENTRY_MAX  256


static void ngx_http_linegate_operator_line_args(ngx_http_request_t *r,
    ngx_http_linegate_operator_t *adm, ngx_str_t *day, ngx_uint_t live);
static ngx_int_t ngx_http_linegate_operator_page_size(ngx_http_request_t *r,
    ngx_int_t dflt, ngx_int_t max, ngx_int_t *count);

static ngx_http_linegate_operator_args_t    ngx_http_linegate_operator_inv_add;
static ngx_http_linegate_operator_answer_t
    ngx_http_linegate_operator_inv_added;
static ngx_http_linegate_operator_args_t    ngx_http_linegate_operator_inv_list;
static ngx_http_linegate_operator_answer_t
    ngx_http_linegate_operator_inv_listed;
static ngx_http_linegate_operator_args_t
    ngx_http_linegate_operator_inv_remove;
static ngx_http_linegate_operator_answer_t
    ngx_http_linegate_operator_inv_removed;
static ngx_http_linegate_operator_args_t
    ngx_http_linegate_operator_qr_release;
static ngx_http_linegate_operator_answer_t
    ngx_http_linegate_operator_qr_released;
static ngx_http_linegate_operator_args_t
    ngx_http_linegate_operator_qr_drop;
static ngx_http_linegate_operator_answer_t
    ngx_http_linegate_operator_qr_dropped;
static ngx_http_linegate_operator_args_t
    ngx_http_linegate_operator_line_move;
static ngx_http_linegate_operator_answer_t
    ngx_http_linegate_operator_line_moved;
static ngx_http_linegate_operator_args_t
    ngx_http_linegate_operator_line_health;
static ngx_http_linegate_operator_args_t
    ngx_http_linegate_operator_line_usage;
static ngx_http_linegate_operator_args_t
    ngx_http_linegate_operator_usage_check;
static ngx_http_linegate_operator_answer_t
    ngx_http_linegate_operator_line_checked;
static ngx_http_linegate_operator_answer_t
    ngx_http_linegate_operator_line_counted;
static ngx_http_linegate_operator_args_t    ngx_http_linegate_operator_stream;
static ngx_http_linegate_operator_answer_t
    ngx_http_linegate_operator_stream_read;

static ngx_http_linegate_operator_valid_t
    ngx_http_linegate_operator_line_id_valid;
static ngx_http_linegate_operator_valid_t
    ngx_http_linegate_operator_entry_valid;
static ngx_http_linegate_operator_valid_t
    ngx_http_linegate_operator_reason_valid;
static ngx_http_linegate_operator_valid_t
    ngx_http_linegate_operator_health_valid;


static ngx_http_linegate_operator_id_t  ngx_http_linegate_operator_line_id = {
    ngx_http_linegate_operator_line_id_valid, "Invalid line id", 0
};

/* nginx has decoded the URI: %2B is already "+" */
static ngx_http_linegate_operator_id_t  ngx_http_linegate_operator_number = {
    ngx_http_linegate_operator_e164_valid,
    "Invalid phone number (+ and 8 to 15 digits)", 0
};


/*
 * a quarantine's entry, and what it goes back to the inventory as: the
 * entry itself when absent (it must then be an E.164 number)
 */
static ngx_http_linegate_operator_field_t
    ngx_http_linegate_operator_release[] = {
    { "number", NGX_HTTP_LINEGATE_OPERATOR_REQUIRED
                |NGX_HTTP_LINEGATE_OPERATOR_STRICT,
      ngx_http_linegate_operator_entry_valid,
      "number is required: an entry of the quarantine, 1 to 256 bytes",
      NULL },
    { "as", NGX_HTTP_LINEGATE_OPERATOR_STRICT,
      ngx_http_linegate_operator_number_valid,
      "as must be an E.164 number (+ and 8 to 15 digits, the first not 0)",
      NULL },
    ngx_http_linegate_operator_null_field
};

static ngx_http_linegate_operator_field_t
    ngx_http_linegate_operator_drop[] = {
    { "number", NGX_HTTP_LINEGATE_OPERATOR_REQUIRED
                |NGX_HTTP_LINEGATE_OPERATOR_STRICT,
      ngx_http_linegate_operator_entry_valid,
      "number is required: an entry of the quarantine, 1 to 256 bytes",
      NULL },
    ngx_http_linegate_operator_null_field
};

/* a purchased phone line needs one, unless it has its number already */
static ngx_http_linegate_operator_field_t
    ngx_http_linegate_operator_phone[] = {
    { "phone", 0, ngx_http_linegate_operator_number_valid,
      "phone must be an E.164 number (+ and 8 to 15 digits, the first not "
      "0)", NULL },
    ngx_http_linegate_operator_null_field
};

static ngx_http_linegate_operator_field_t
    ngx_http_linegate_operator_reason[] = {
    { "reason",
      NGX_HTTP_LINEGATE_OPERATOR_REQUIRED|NGX_HTTP_LINEGATE_OPERATOR_TRIM,
      ngx_http_linegate_operator_reason_valid,
      "reason is required: 1 to 500 bytes of text, no control character",
      NULL },
    ngx_http_linegate_operator_null_field
};

static ngx_http_linegate_operator_field_t
    ngx_http_linegate_operator_health[] = {
    { "status", NGX_HTTP_LINEGATE_OPERATOR_REQUIRED,
      ngx_http_linegate_operator_health_valid,
      "status must be healthy or unhealthy", NULL },
    ngx_http_linegate_operator_null_field
};

/* increments of today's counters: absent is 0 */
static ngx_http_linegate_operator_field_t
    ngx_http_linegate_operator_usage[] = {
    { "newConversations", NGX_HTTP_LINEGATE_OPERATOR_INTEGER,
      NULL, NULL, NULL },
    { "totalMessages", NGX_HTTP_LINEGATE_OPERATOR_INTEGER, NULL, NULL, NULL },
    ngx_http_linegate_operator_null_field
};


/*
 * op_inventory_add: {1, added, total, held}; op_inventory_page: {1,
 * cursor, total, numbers}; SREM: 0 when not there
 */
static ngx_http_linegate_operator_call_t  ngx_http_linegate_operator_adder = {
    ngx_http_linegate_operator_inv_add,
    NGX_HTTP_LINEGATE_SCRIPT_OP_INVENTORY_ADD, 2,
    NGX_HTTP_LINEGATE_OPERATOR_REPLY_ARRAY, "iiii", NGX_HTTP_OK,
    ngx_http_linegate_operator_inv_added,
    0,
    NULL,
    0,
    NULL, NULL, NULL,
    NULL
};

static ngx_http_linegate_operator_call_t  ngx_http_linegate_operator_page = {
    ngx_http_linegate_operator_inv_list,
    NGX_HTTP_LINEGATE_SCRIPT_OP_INVENTORY_PAGE, 1,
    NGX_HTTP_LINEGATE_OPERATOR_REPLY_ARRAY, "isia", NGX_HTTP_OK,
    ngx_http_linegate_operator_inv_listed,
    0,
    NULL,
    0,
    NULL, NULL, NULL,
    NULL
};

static ngx_http_linegate_operator_call_t  ngx_http_linegate_operator_srem = {
    ngx_http_linegate_operator_inv_remove,
    NGX_HTTP_LINEGATE_OPERATOR_COMMAND, 0,
    NGX_HTTP_LINEGATE_OPERATOR_REPLY_INTEGER, "", NGX_HTTP_OK,
    ngx_http_linegate_operator_inv_removed,
    0,
    NULL,
    0,
    NULL, NULL, NULL,
    NULL
};

/*
 * {1, workspace, HGETALL}; 1 (or 0, unknown line); {1, today's two}:
 * each after the line's owner (line_owner), on the workspace's slot
 */
static ngx_http_linegate_operator_call_t  ngx_http_linegate_operator_move = {
    ngx_http_linegate_operator_line_move,
    NGX_HTTP_LINEGATE_SCRIPT_OP_LINE_TRANSITION, 2,
    NGX_HTTP_LINEGATE_OPERATOR_REPLY_ARRAY, "isa", NGX_HTTP_OK,
    ngx_http_linegate_operator_line_moved,
    1,
    NULL,
    0,
    NULL, NULL, NULL,
    NULL
};

static ngx_http_linegate_operator_call_t  ngx_http_linegate_operator_check = {
    ngx_http_linegate_operator_line_health,
    NGX_HTTP_LINEGATE_SCRIPT_OP_LINE_HEALTH, 1,
    NGX_HTTP_LINEGATE_OPERATOR_REPLY_INTEGER, "", NGX_HTTP_OK,
    ngx_http_linegate_operator_line_checked,
    1,
    NULL,
    0,
    NULL, NULL, NULL,
    NULL
};

/* {1 (2: a replay), today's two, the day} */
static ngx_http_linegate_operator_call_t  ngx_http_linegate_operator_count = {
    ngx_http_linegate_operator_line_usage,
    NGX_HTTP_LINEGATE_SCRIPT_OP_LINE_USAGE, 3,
    NGX_HTTP_LINEGATE_OPERATOR_REPLY_ARRAY, "iiis", NGX_HTTP_OK,
    ngx_http_linegate_operator_line_counted,
    1,
    NULL,
    0,
    NULL, NULL, NULL,
    ngx_http_linegate_operator_usage_check
};

/* op_quarantine_release: {1, the inventory's size}, or a code alone */
static ngx_http_linegate_operator_call_t  ngx_http_linegate_operator_qr_back = {
    ngx_http_linegate_operator_qr_release,
    NGX_HTTP_LINEGATE_SCRIPT_OP_QUARANTINE_RELEASE, 3,
    NGX_HTTP_LINEGATE_OPERATOR_REPLY_ARRAY, "ii", NGX_HTTP_OK,
    ngx_http_linegate_operator_qr_released,
    0,
    NULL,
    0,
    NULL, NULL, NULL,
    NULL
};

/* SREM: 0 when not there */
static ngx_http_linegate_operator_call_t  ngx_http_linegate_operator_qr_srem = {
    ngx_http_linegate_operator_qr_drop,
    NGX_HTTP_LINEGATE_OPERATOR_COMMAND, 0,
    NGX_HTTP_LINEGATE_OPERATOR_REPLY_INTEGER, "", NGX_HTTP_OK,
    ngx_http_linegate_operator_qr_dropped,
    0,
    NULL,
    0,
    NULL, NULL, NULL,
    NULL
};

/* XRANGE */
static ngx_http_linegate_operator_call_t  ngx_http_linegate_operator_xrange = {
    ngx_http_linegate_operator_stream,
    NGX_HTTP_LINEGATE_OPERATOR_COMMAND, 0,
    NGX_HTTP_LINEGATE_OPERATOR_REPLY_LIST, "", NGX_HTTP_OK,
    ngx_http_linegate_operator_stream_read,
    0,
    NULL,
    0,
    NULL, NULL, NULL,
    NULL
};


static ngx_http_linegate_operator_code_t
    ngx_http_linegate_operator_inv_codes[] = {
    { 0, NGX_HTTP_NOT_FOUND, "NOT_FOUND", NULL,
      "Number not in the inventory", 0 },
    ngx_http_linegate_operator_null_code
};

/* see op_quarantine_release.lua; the drop's SREM: 0 */
static ngx_http_linegate_operator_code_t
    ngx_http_linegate_operator_qr_codes[] = {
    { 0, NGX_HTTP_NOT_FOUND, "NOT_FOUND", NULL,
      "Number not in the quarantine", 0 },
    { -1, NGX_HTTP_BAD_REQUEST, NULL, "as",
      "as must be an E.164 number (+ and 8 to 15 digits, the first not 0)",
      0 },
    { -2, NGX_HTTP_CONFLICT, "NUMBER_HELD", NULL,
      "The number is handed out (a purchase's claim, a line or a "
      "reconciliation entry): it cannot be sold again", 0 },
    { -3, NGX_HTTP_CONFLICT, "NUMBER_IN_INVENTORY", NULL,
      "The number is in the inventory already: drop the entry instead", 0 },
    ngx_http_linegate_operator_null_code
};

static ngx_http_linegate_operator_code_t
    ngx_http_linegate_operator_line_codes[] = {
    { 0, NGX_HTTP_NOT_FOUND, "NOT_FOUND", NULL, "Line not found", 0 },
    ngx_http_linegate_operator_null_code
};

/* see op_line_usage.lua: as the Lines API answers a key reused */
static ngx_http_linegate_operator_code_t
    ngx_http_linegate_operator_usage_codes[] = {
    { 0, NGX_HTTP_NOT_FOUND, "NOT_FOUND", NULL, "Line not found", 0 },
    { -1, NGX_HTTP_LINEGATE_UNPROCESSABLE, "IDEMPOTENCY_KEY_MISMATCH", NULL,
      "This Idempotency-Key was used with a different request body", 0 },
    ngx_http_linegate_operator_null_code
};

/* see op_line_transition.lua */
static ngx_http_linegate_operator_code_t
    ngx_http_linegate_operator_move_codes[] = {
    { 0, NGX_HTTP_NOT_FOUND, "NOT_FOUND", NULL, "Line not found", 0 },
    { -1, NGX_HTTP_CONFLICT, "INVALID_TRANSITION", NULL, "Line is", 1 },
    { -2, NGX_HTTP_BAD_REQUEST, NULL, "phone",
      "phone is required: this phone line has no number yet", 0 },
    { -3, NGX_HTTP_BAD_REQUEST, NULL, "phone",
      "only phone lines have a phone number", 0 },
    ngx_http_linegate_operator_null_code
};

/* the sets a page is read from: the data of their routes */
static ngx_http_linegate_key_e  ngx_http_linegate_operator_sets[] = {
    NGX_HTTP_LINEGATE_KEY_INVENTORY,
    NGX_HTTP_LINEGATE_KEY_QUARANTINE
};

/* the streams the operator API reads: the data of their routes */
static ngx_http_linegate_key_e  ngx_http_linegate_operator_streams[] = {
    NGX_HTTP_LINEGATE_KEY_PROVISIONING,
    NGX_HTTP_LINEGATE_KEY_RECONCILE,
    NGX_HTTP_LINEGATE_KEY_RECONCILED
};


ngx_http_linegate_operator_route_t  ngx_http_linegate_operator_ops_routes[] = {

    { "inventory", NGX_HTTP_POST, { NULL, NULL }, { NULL, NULL },
      &ngx_http_linegate_operator_adder, NULL, NULL },
    { "inventory", NGX_HTTP_GET, { NULL, NULL }, { NULL, NULL },
      &ngx_http_linegate_operator_page, NULL,
      &ngx_http_linegate_operator_sets[0] },

    /* before the removal's route: "quarantine" is no number */
    { "inventory/quarantine", NGX_HTTP_GET, { NULL, NULL }, { NULL, NULL },
      &ngx_http_linegate_operator_page, NULL,
      &ngx_http_linegate_operator_sets[1] },
    { "inventory/quarantine/release", NGX_HTTP_POST, { NULL, NULL },
      { ngx_http_linegate_operator_release, NULL },
      &ngx_http_linegate_operator_qr_back,
      ngx_http_linegate_operator_qr_codes, NULL },
    { "inventory/quarantine/drop", NGX_HTTP_POST, { NULL, NULL },
      { ngx_http_linegate_operator_drop, NULL },
      &ngx_http_linegate_operator_qr_srem,
      ngx_http_linegate_operator_qr_codes, NULL },

    { "inventory/*", NGX_HTTP_DELETE,
      { &ngx_http_linegate_operator_number, NULL }, { NULL, NULL },
      &ngx_http_linegate_operator_srem, ngx_http_linegate_operator_inv_codes,
      NULL },

    /* the data of a transition: the status it sets */
    { "lines/*/active", NGX_HTTP_POST,
      { &ngx_http_linegate_operator_line_id, NULL },
      { ngx_http_linegate_operator_phone, NULL },
      &ngx_http_linegate_operator_move, ngx_http_linegate_operator_move_codes,
      "active" },
    { "lines/*/failed", NGX_HTTP_POST,
      { &ngx_http_linegate_operator_line_id, NULL },
      { ngx_http_linegate_operator_reason, NULL },
      &ngx_http_linegate_operator_move, ngx_http_linegate_operator_move_codes,
      "failed" },
    { "lines/*/health", NGX_HTTP_POST,
      { &ngx_http_linegate_operator_line_id, NULL },
      { ngx_http_linegate_operator_health, NULL },
      &ngx_http_linegate_operator_check, ngx_http_linegate_operator_line_codes,
      NULL },
    { "lines/*/usage", NGX_HTTP_POST,
      { &ngx_http_linegate_operator_line_id, NULL },
      { ngx_http_linegate_operator_usage, NULL },
      &ngx_http_linegate_operator_count,
      ngx_http_linegate_operator_usage_codes, NULL },

    /* the data of a stream read: its key */
    { "provisioning", NGX_HTTP_GET, { NULL, NULL }, { NULL, NULL },
      &ngx_http_linegate_operator_xrange, NULL,
      &ngx_http_linegate_operator_streams[0] },
    { "reconciliation", NGX_HTTP_GET, { NULL, NULL }, { NULL, NULL },
      &ngx_http_linegate_operator_xrange, NULL,
      &ngx_http_linegate_operator_streams[1] },
    { "reconciliation/resolved", NGX_HTTP_GET, { NULL, NULL },
      { NULL, NULL }, &ngx_http_linegate_operator_xrange, NULL,
      &ngx_http_linegate_operator_streams[2] },

    /* no call: a state machine of its own (ngx_http_linegate_reconcile.c) */
    { "reconciliation/run", NGX_HTTP_POST, { NULL, NULL }, { NULL, NULL },
      NULL, NULL, NULL },

    { NULL, 0, { NULL, NULL }, { NULL, NULL }, NULL, NULL, NULL }
};


static const char  *ngx_http_linegate_operator_statuses[] = {
    "healthy", "unhealthy", NULL
};

static const char  *ngx_http_linegate_operator_line_shown[] = {
    "provisioningStatus", "paymentStatus", "channelType", "lineType",
    "phone", "email", "failureReason", "updatedAt", NULL
};


/* inventory */

static ngx_int_t
ngx_http_linegate_operator_inv_add(ngx_http_request_t *r,
    ngx_http_linegate_operator_t *adm)
{
    u_char     *p, *msg;
    size_t      len, i, n;
    json_t     *numbers, *v;
    ngx_str_t   s;

    numbers = json_object_get(adm->ctx->body, "numbers");
    n = json_is_array(numbers) ? json_array_size(numbers) : 0;

    if (n == 0 || n > NGX_HTTP_LINEGATE_INVENTORY_MAX) {
        ngx_http_linegate_field_error(r, "numbers",
                                "numbers must be an array of 1 to 1000 "
                                "E.164 numbers");
        return NGX_ERROR;
    }

    len = 0;

    for (i = 0; i < n; i++) {
        v = json_array_get(numbers, i);

        s.len = json_is_string(v) ? json_string_length(v) : 0;
        s.data = (u_char *) json_string_value(v);

        if (!ngx_http_linegate_operator_number_valid(&s)) {
            msg = ngx_pnalloc(r->pool, 96);
            if (msg == NULL) {
                ngx_http_linegate_internal_error(r);
                return NGX_ERROR;
            }

            (void) ngx_snprintf(msg, 96, "numbers[%uz] is not an E.164 "
                                "number (+ and 8 to 15 digits, the first "
                                "not 0)%Z", i);
            ngx_http_linegate_field_error(r, "numbers", (char *) msg);
            return NGX_ERROR;
        }

        len += s.len + 1;
    }

    /* one argument: a script has at most 64, a call up to 1000 numbers */
    p = ngx_pnalloc(r->pool, len);
    if (p == NULL) {
        ngx_http_linegate_internal_error(r);
        return NGX_ERROR;
    }

    s.data = p;

    for (i = 0; i < n; i++) {
        v = json_array_get(numbers, i);
        p = ngx_cpymem(p, json_string_value(v), json_string_length(v));
        *p++ = ',';
    }

    s.len = p - s.data - 1;

    ngx_http_linegate_redis_arg_str(&adm->args,
        ngx_http_linegate_key_fixed(NGX_HTTP_LINEGATE_KEY_INVENTORY));
    ngx_http_linegate_redis_arg_str(&adm->args,
        ngx_http_linegate_key_fixed(NGX_HTTP_LINEGATE_KEY_HELD));
    ngx_http_linegate_redis_arg_str(&adm->args, &s);

    return NGX_OK;
}


static void
ngx_http_linegate_operator_inv_added(ngx_http_request_t *r,
    ngx_http_linegate_operator_t *adm, redisReply *reply,
    ngx_http_linegate_json_write_t *jw)
{
    int64_t  added, total, held;

    added = reply->element[1]->integer;
    total = reply->element[2]->integer;
    held = reply->element[3]->integer;

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  NGX_HTTP_LINEGATE_LOG "operator: %L numbers added to the "
                  "inventory, %L in it, %L left out (handed out)", added,
                  total, held);

    ngx_http_linegate_json_write_object(jw);
    ngx_http_linegate_json_write_key(jw, "added");
    ngx_http_linegate_json_write_int(jw, added);
    ngx_http_linegate_json_write_key(jw, "total");
    ngx_http_linegate_json_write_int(jw, total);
    ngx_http_linegate_json_write_key(jw, "held");
    ngx_http_linegate_json_write_int(jw, held);
    ngx_http_linegate_json_write_end(jw, '}');
}


/*
 * A page of the inventory or of its quarantine (the route's data):
 * "?cursor=" (from the answer before; "0", the default: the first page),
 * "?count=" the page's size (a hint: SSCAN may give a few more)
 */
static ngx_int_t
ngx_http_linegate_operator_inv_list(ngx_http_request_t *r,
    ngx_http_linegate_operator_t *adm)
{
    ngx_int_t   count;
    ngx_str_t   cursor;

    if (ngx_http_linegate_operator_page_size(r,
            NGX_HTTP_LINEGATE_INV_PAGE_MAX, NGX_HTTP_LINEGATE_INV_PAGE_MAX,
            &count)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    ngx_str_set(&cursor, "0");

    if (ngx_http_arg(r, (u_char *) "cursor", 6, &cursor) == NGX_OK
        && (cursor.len == 0 || cursor.len > NGX_HTTP_LINEGATE_CURSOR_MAX_LEN
            || !ngx_http_linegate_chars_are(cursor.data, cursor.len,
                                          NGX_HTTP_LINEGATE_CHARS_DIGIT)))
    {
        ngx_http_linegate_field_error(r, "cursor",
                                "cursor must be the cursor of the page "
                                "before (digits), or 0");
        return NGX_ERROR;
    }

    ngx_http_linegate_redis_arg_str(&adm->args,
        ngx_http_linegate_key_fixed(
            *(ngx_http_linegate_key_e *) adm->route->data));
    ngx_http_linegate_redis_arg_str(&adm->args, &cursor);
    ngx_http_linegate_redis_arg_int(r, &adm->args, count);

    return NGX_OK;
}


/*
 * {"count": the whole set, "numbers": this page, "cursor": the next
 * page's, or null after the last}
 */
static void
ngx_http_linegate_operator_inv_listed(ngx_http_request_t *r,
    ngx_http_linegate_operator_t *adm, redisReply *reply,
    ngx_http_linegate_json_write_t *jw)
{
    redisReply  *next;

    next = reply->element[1];

    ngx_http_linegate_json_write_object(jw);
    ngx_http_linegate_json_write_key(jw, "count");
    ngx_http_linegate_json_write_int(jw, reply->element[2]->integer);
    ngx_http_linegate_json_write_key(jw, "numbers");
    (void) ngx_http_linegate_operator_strings(jw, reply->element[3], NULL);
    ngx_http_linegate_json_write_key(jw, "cursor");

    if (next->len == 1 && next->str[0] == '0') {
        ngx_http_linegate_json_write_null(jw);

    } else {
        ngx_http_linegate_json_write_str(jw, (u_char *) next->str,
                                         next->len);
    }

    ngx_http_linegate_json_write_end(jw, '}');
}


static ngx_int_t
ngx_http_linegate_operator_inv_remove(ngx_http_request_t *r,
    ngx_http_linegate_operator_t *adm)
{
    ngx_http_linegate_redis_arg_cstr(&adm->args, "SREM");
    ngx_http_linegate_redis_arg_str(&adm->args,
        ngx_http_linegate_key_fixed(NGX_HTTP_LINEGATE_KEY_INVENTORY));
    ngx_http_linegate_redis_arg_str(&adm->args, &adm->arg[0]);

    /*
     * the operator acts on the 200 (the number goes back to its carrier):
     * lost with its master, the number would be back in the inventory,
     * for a purchase to be sold it (as a claim lost with it would)
     */
    adm->args.acknowledged = 1;

    return NGX_OK;
}


static void
ngx_http_linegate_operator_inv_removed(ngx_http_request_t *r,
    ngx_http_linegate_operator_t *adm, redisReply *reply,
    ngx_http_linegate_json_write_t *jw)
{
    /* as a load is: the number leaves what purchases are sold from */
    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  NGX_HTTP_LINEGATE_LOG "operator: number \"%V\" removed "
                  "from the inventory", &adm->arg[0]);

    ngx_http_linegate_json_write_object(jw);
    ngx_http_linegate_json_write_key(jw, "number");
    ngx_http_linegate_json_write_str(jw, adm->arg[0].data, adm->arg[0].len);
    ngx_http_linegate_json_write_key(jw, "removed");
    ngx_http_linegate_json_write_bool(jw, 1);
    ngx_http_linegate_json_write_end(jw, '}');
}


/* the quarantine */

/*
 * number: the entry as the quarantine holds it; as: what it goes back
 * to the inventory as, the entry itself when absent (then it must be an
 * E.164 number: one that is not was set aside for that)
 */
static ngx_int_t
ngx_http_linegate_operator_qr_release(ngx_http_request_t *r,
    ngx_http_linegate_operator_t *adm)
{
    ngx_str_t  *number, *as;

    number = &adm->value[0].str;
    as = &adm->value[1].str;

    if (adm->value[1].state != NGX_HTTP_LINEGATE_OPERATOR_SET) {
        if (!ngx_http_linegate_operator_number_valid(number)) {
            ngx_http_linegate_field_error(r, "as",
                                "number is no E.164 number: as, the "
                                "corrected one, is required (+ and 8 to "
                                "15 digits, the first not 0)");
            return NGX_ERROR;
        }

        as = number;
    }

    ngx_http_linegate_redis_arg_str(&adm->args,
        ngx_http_linegate_key_fixed(NGX_HTTP_LINEGATE_KEY_QUARANTINE));
    ngx_http_linegate_redis_arg_str(&adm->args,
        ngx_http_linegate_key_fixed(NGX_HTTP_LINEGATE_KEY_INVENTORY));
    ngx_http_linegate_redis_arg_str(&adm->args,
        ngx_http_linegate_key_fixed(NGX_HTTP_LINEGATE_KEY_HELD));
    ngx_http_linegate_redis_arg_str(&adm->args, number);
    ngx_http_linegate_redis_arg_str(&adm->args, as);

    /* the answer's "released" */
    adm->value[1].str = *as;

    return NGX_OK;
}


/* {"number": the entry, "released": the number sold from now, "total"} */
static void
ngx_http_linegate_operator_qr_released(ngx_http_request_t *r,
    ngx_http_linegate_operator_t *adm, redisReply *reply,
    ngx_http_linegate_json_write_t *jw)
{
    ngx_str_t  *number, *as;

    number = &adm->value[0].str;
    as = &adm->value[1].str;

    /* the entry may be anything: named by the number it became */
    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  NGX_HTTP_LINEGATE_LOG "operator: a quarantined number "
                  "(%uz bytes) released to the inventory as \"%V\", %L "
                  "in it", number->len, as, reply->element[1]->integer);

    ngx_http_linegate_json_write_object(jw);
    ngx_http_linegate_json_write_key(jw, "number");
    ngx_http_linegate_json_write_str(jw, number->data, number->len);
    ngx_http_linegate_json_write_key(jw, "released");
    ngx_http_linegate_json_write_str(jw, as->data, as->len);
    ngx_http_linegate_json_write_key(jw, "total");
    ngx_http_linegate_json_write_int(jw, reply->element[1]->integer);
    ngx_http_linegate_json_write_end(jw, '}');
}


static ngx_int_t
ngx_http_linegate_operator_qr_drop(ngx_http_request_t *r,
    ngx_http_linegate_operator_t *adm)
{
    ngx_http_linegate_redis_arg_cstr(&adm->args, "SREM");
    ngx_http_linegate_redis_arg_str(&adm->args,
        ngx_http_linegate_key_fixed(NGX_HTTP_LINEGATE_KEY_QUARANTINE));
    ngx_http_linegate_redis_arg_str(&adm->args, &adm->value[0].str);

    return NGX_OK;
}


static void
ngx_http_linegate_operator_qr_dropped(ngx_http_request_t *r,
    ngx_http_linegate_operator_t *adm, redisReply *reply,
    ngx_http_linegate_json_write_t *jw)
{
    ngx_str_t  *number;

    number = &adm->value[0].str;

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  NGX_HTTP_LINEGATE_LOG "operator: a quarantined number "
                  "(%uz bytes) dropped", number->len);

    ngx_http_linegate_json_write_object(jw);
    ngx_http_linegate_json_write_key(jw, "number");
    ngx_http_linegate_json_write_str(jw, number->data, number->len);
    ngx_http_linegate_json_write_key(jw, "dropped");
    ngx_http_linegate_json_write_bool(jw, 1);
    ngx_http_linegate_json_write_end(jw, '}');
}


/* lines */

/*
 * what every line script starts with: KEYS[1] lg:{ws:W}:lr:<id>, W the
 * owner operator_owner read from lg:line:<id>; then, for a move (live),
 * KEYS[2] the workspace's index of live requests, which a line that
 * fails leaves; for usage (day not NULL), KEYS[2] the day's counters
 * and KEYS[3] the record of its Idempotency-Key (adm->idem; "<id>:"
 * alone without one); ARGV[1] id
 */
static void
ngx_http_linegate_operator_line_args(ngx_http_request_t *r,
    ngx_http_linegate_operator_t *adm, ngx_str_t *day, ngx_uint_t live)
{
    u_char     *p;
    ngx_str_t   key, b;

    if (ngx_http_linegate_key(r->pool, NGX_HTTP_LINEGATE_KEY_WS_LR,
                              &adm->ws, &adm->arg[0], &key)
        != NGX_OK)
    {
        adm->args.argc = -1;
        return;
    }

    ngx_http_linegate_redis_arg_str(&adm->args, &key);

    if (live) {
        if (ngx_http_linegate_key(r->pool, NGX_HTTP_LINEGATE_KEY_WS_LIVE,
                                  &adm->ws, NULL, &key)
            != NGX_OK)
        {
            adm->args.argc = -1;
            return;
        }

        ngx_http_linegate_redis_arg_str(&adm->args, &key);
    }

    if (day != NULL) {
        /* "<id>:<day>" */
        p = ngx_pnalloc(r->pool, adm->arg[0].len + 1 + day->len);
        if (p == NULL) {
            adm->args.argc = -1;
            return;
        }

        b.data = p;
        p = ngx_cpymem(p, adm->arg[0].data, adm->arg[0].len);
        *p++ = ':';
        p = ngx_cpymem(p, day->data, day->len);
        b.len = p - b.data;

        if (ngx_http_linegate_key(r->pool, NGX_HTTP_LINEGATE_KEY_WS_USAGE,
                                  &adm->ws, &b, &key)
            != NGX_OK)
        {
            adm->args.argc = -1;
            return;
        }

        ngx_http_linegate_redis_arg_str(&adm->args, &key);

        /* "<id>:<digest>" */
        p = ngx_pnalloc(r->pool, adm->arg[0].len + 1 + adm->idem.digest.len);
        if (p == NULL) {
            adm->args.argc = -1;
            return;
        }

        b.data = p;
        p = ngx_cpymem(p, adm->arg[0].data, adm->arg[0].len);
        *p++ = ':';

        /* no key: no digest, whose NULL memcpy() must not see */
        if (adm->idem.digest.len) {
            p = ngx_cpymem(p, adm->idem.digest.data, adm->idem.digest.len);
        }

        b.len = p - b.data;

        if (ngx_http_linegate_key(r->pool,
                                  NGX_HTTP_LINEGATE_KEY_WS_USAGE_IDEM,
                                  &adm->ws, &b, &key)
            != NGX_OK)
        {
            adm->args.argc = -1;
            return;
        }

        ngx_http_linegate_redis_arg_str(&adm->args, &key);
    }

    ngx_http_linegate_redis_arg_str(&adm->args, &adm->arg[0]);
}


/* provisioning -> active (with the phone, or "") or failed (the reason) */
static ngx_int_t
ngx_http_linegate_operator_line_move(ngx_http_request_t *r,
    ngx_http_linegate_operator_t *adm)
{
    ngx_http_linegate_operator_line_args(r, adm, NULL, 1);
    ngx_http_linegate_redis_arg_cstr(&adm->args, adm->route->data);
    ngx_http_linegate_redis_arg_str(&adm->args, &adm->now);
    ngx_http_linegate_redis_arg_str(&adm->args, &adm->value[0].str);
    ngx_http_linegate_redis_arg_str(&adm->args, &adm->ws);

    return NGX_OK;
}


static void
ngx_http_linegate_operator_line_moved(ngx_http_request_t *r,
    ngx_http_linegate_operator_t *adm, redisReply *reply,
    ngx_http_linegate_json_write_t *jw)
{
    ngx_str_t    tenant;
    redisReply  *ws;

    /* the owner, for $linegate_tenant: the reply is freed on return */
    ws = reply->element[1];

    if (ngx_http_linegate_pstr(r->pool, &tenant, (u_char *) ws->str,
                               ws->len)
        != NULL)
    {
        adm->ctx->tenant = tenant;
    }

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  NGX_HTTP_LINEGATE_LOG "operator: line %V of workspace "
                  "\"%*s\" is now %s", &adm->arg[0], ws->len, ws->str,
                  (char *) adm->route->data);

    ngx_http_linegate_operator_object(jw, &adm->arg[0]);
    ngx_http_linegate_json_write_key(jw, "workspaceId");
    ngx_http_linegate_json_write_str(jw, (u_char *) ws->str, ws->len);
    ngx_http_linegate_operator_set_strs(jw, reply->element[2],
                                        ngx_http_linegate_operator_line_shown);
    ngx_http_linegate_json_write_end(jw, '}');
}


static ngx_int_t
ngx_http_linegate_operator_line_health(ngx_http_request_t *r,
    ngx_http_linegate_operator_t *adm)
{
    ngx_http_linegate_operator_line_args(r, adm, NULL, 0);
    ngx_http_linegate_redis_arg_str(&adm->args, &adm->value[0].str);
    ngx_http_linegate_redis_arg_str(&adm->args, &adm->now);

    return NGX_OK;
}


/*
 * A stream entry id Redis takes: "<ms>" or "<ms>-<seq>", each part 1 to
 * 19 digits (below 2^64 whatever they are); anything else Redis refuses
 * as an error, which would be answered 500
 */
static ngx_uint_t
ngx_http_linegate_operator_stream_id(ngx_str_t *v)
{
    u_char  *dash, *end;

    end = v->data + v->len;
    dash = ngx_strlchr(v->data, end, '-');

    if (dash == NULL) {
        dash = end;
    }

    return dash - v->data >= 1 && dash - v->data <= 19
           && ngx_http_linegate_chars_are(v->data, dash - v->data,
                                          NGX_HTTP_LINEGATE_CHARS_DIGIT)
           && (dash == end
               || (end - dash - 1 >= 1 && end - dash - 1 <= 19
                   && ngx_http_linegate_chars_are(dash + 1, end - dash - 1,
                                             NGX_HTTP_LINEGATE_CHARS_DIGIT)));
}


/*
 * An optional Idempotency-Key (or idempotencyKey field), read as the
 * Lines API reads its own (idempotency.c): a report sent again after a
 * 503 whose script ran adds nothing twice (op_line_usage.lua). Judged
 * before the line's owner is read: a bad key is a 400 whatever the line
 * (before, an unknown line's 404 came first)
 */
static ngx_int_t
ngx_http_linegate_operator_usage_check(ngx_http_request_t *r,
    ngx_http_linegate_operator_t *adm)
{
    const char  *field, *message;

    if (ngx_http_linegate_idem_prepare(r, adm->ctx->body, &adm->idem,
                                       &field, &message)
        != NGX_OK)
    {
        if (message == NULL) {
            ngx_http_linegate_internal_error(r);

        } else {
            ngx_http_linegate_field_error(r, field, message);
        }

        return NGX_ERROR;
    }

    if (adm->idem.digest.len == 0) {
        /* ARGV[6] "": no key, nothing recorded */
        ngx_str_set(&adm->idem.fp, "");
    }

    return NGX_OK;
}


/* today's increments, once the owner is known */
static ngx_int_t
ngx_http_linegate_operator_line_usage(ngx_http_request_t *r,
    ngx_http_linegate_operator_t *adm)
{
    u_char  *p;

    p = ngx_pnalloc(r->pool, sizeof("YYYY-MM-DD") - 1);
    if (p == NULL) {
        ngx_http_linegate_internal_error(r);
        return NGX_ERROR;
    }

    /* the UTC day of this call's clock, the one adm->now shows */
    adm->date.data = p;
    adm->date.len = ngx_http_linegate_utc_date(p, adm->now_ms) - p;

    ngx_http_linegate_operator_line_args(r, adm, &adm->date, 0);
    ngx_http_linegate_redis_arg_str(&adm->args, &adm->date);
    ngx_http_linegate_redis_arg_int(r, &adm->args, adm->value[0].n);
    ngx_http_linegate_redis_arg_int(r, &adm->args, adm->value[1].n);
    ngx_http_linegate_redis_arg_int(r, &adm->args,
                                    NGX_HTTP_LINEGATE_USAGE_TTL);
    ngx_http_linegate_redis_arg_str(&adm->args, &adm->idem.fp);

    return NGX_OK;
}


static void
ngx_http_linegate_operator_line_checked(ngx_http_request_t *r,
    ngx_http_linegate_operator_t *adm, redisReply *reply,
    ngx_http_linegate_json_write_t *jw)
{
    ngx_str_t  *status;

    /* the status reported, as the body had it */
    status = &adm->value[0].str;

    ngx_http_linegate_operator_object(jw, &adm->arg[0]);
    ngx_http_linegate_json_write_key(jw, "healthCheck");
    ngx_http_linegate_json_write_object(jw);
    ngx_http_linegate_json_write_key(jw, "status");
    ngx_http_linegate_json_write_str(jw, status->data, status->len);
    ngx_http_linegate_json_write_key(jw, "lastCheckedAt");
    ngx_http_linegate_json_write_str(jw, adm->now.data, adm->now.len);
    ngx_http_linegate_json_write_end(jw, '}');
    ngx_http_linegate_json_write_end(jw, '}');
}


static void
ngx_http_linegate_operator_line_counted(ngx_http_request_t *r,
    ngx_http_linegate_operator_t *adm, redisReply *reply,
    ngx_http_linegate_json_write_t *jw)
{
    redisReply  *day;

    /* a key used before: its first answer, whose day it was */
    if (reply->element[0]->integer == 2) {
        adm->ctx->replayed = 1;
        ngx_str_set(&adm->ctx->outcome, "replayed");
    }

    day = reply->element[3];

    ngx_http_linegate_operator_object(jw, &adm->arg[0]);
    ngx_http_linegate_json_write_key(jw, "usage");
    ngx_http_linegate_json_write_object(jw);
    ngx_http_linegate_json_write_key(jw, "date");
    ngx_http_linegate_json_write_str(jw, (u_char *) day->str, day->len);
    ngx_http_linegate_json_write_key(jw, "newConversationsCount");
    ngx_http_linegate_json_write_int(jw, reply->element[1]->integer);
    ngx_http_linegate_json_write_key(jw, "totalMessagesCount");
    ngx_http_linegate_json_write_int(jw, reply->element[2]->integer);
    ngx_http_linegate_json_write_end(jw, '}');
    ngx_http_linegate_json_write_end(jw, '}');
}


/* what waits for set-up, and what waits for reconciliation */

/*
 * XRANGE key - + COUNT n; "?after=<stream id>" pages on from an entry
 * (exclusive), "?count=" bounds the page.
 */
static ngx_int_t
ngx_http_linegate_operator_stream(ngx_http_request_t *r,
    ngx_http_linegate_operator_t *adm)
{
    u_char                          *p;
    ngx_int_t                        count;
    ngx_str_t                        value, after;
    ngx_http_linegate_redis_args_t  *a;

    if (ngx_http_linegate_operator_page_size(r,
            NGX_HTTP_LINEGATE_STREAM_DEFAULT, NGX_HTTP_LINEGATE_STREAM_MAX,
            &count)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    ngx_str_set(&after, "-");

    if (ngx_http_arg(r, (u_char *) "after", 5, &value) == NGX_OK) {
        if (!ngx_http_linegate_operator_stream_id(&value)) {
            ngx_http_linegate_field_error(r, "after",
                                    "after must be a stream entry id");
            return NGX_ERROR;
        }

        p = ngx_pnalloc(r->pool, value.len + 1);
        if (p == NULL) {
            ngx_http_linegate_internal_error(r);
            return NGX_ERROR;
        }

        *p = '(';
        ngx_memcpy(p + 1, value.data, value.len);

        after.data = p;
        after.len = value.len + 1;
    }

    a = &adm->args;

    ngx_http_linegate_redis_arg_cstr(a, "XRANGE");
    ngx_http_linegate_redis_arg_str(a,
        ngx_http_linegate_key_fixed(
            *(ngx_http_linegate_key_e *) adm->route->data));
    ngx_http_linegate_redis_arg_str(a, &after);
    ngx_http_linegate_redis_arg_cstr(a, "+");
    ngx_http_linegate_redis_arg_cstr(a, "COUNT");
    ngx_http_linegate_redis_arg_int(r, a, count);

    return NGX_OK;
}


/* "?count=": 1 to max, dflt when absent; refused: a 400 answered */
static ngx_int_t
ngx_http_linegate_operator_page_size(ngx_http_request_t *r, ngx_int_t dflt,
    ngx_int_t max, ngx_int_t *count)
{
    u_char     msg[64];
    ngx_str_t  value;

    *count = dflt;

    if (ngx_http_arg(r, (u_char *) "count", 5, &value) != NGX_OK) {
        return NGX_OK;
    }

    *count = ngx_atoi(value.data, value.len);

    if (*count >= 1 && *count <= max) {
        return NGX_OK;
    }

    (void) ngx_snprintf(msg, sizeof(msg), "count must be an integer from 1 "
                        "to %i%Z", max);
    ngx_http_linegate_field_error(r, "count", (char *) msg);

    return NGX_ERROR;
}


/* a field named twice in an entry is written twice (XADD allows it) */
static void
ngx_http_linegate_operator_stream_read(ngx_http_request_t *r,
    ngx_http_linegate_operator_t *adm, redisReply *reply,
    ngx_http_linegate_json_write_t *jw)
{
    ngx_uint_t   i, j;
    redisReply  *e, *f, *k, *v;

    ngx_http_linegate_json_write_object(jw);
    ngx_http_linegate_json_write_key(jw, "entries");
    ngx_http_linegate_json_write_array(jw);

    for (i = 0; i < reply->elements; i++) {
        e = reply->element[i];

        if (e->type != REDIS_REPLY_ARRAY || e->elements != 2
            || e->element[0]->type != REDIS_REPLY_STRING
            || e->element[1]->type != REDIS_REPLY_ARRAY)
        {
            continue;
        }

        f = e->element[1];

        ngx_http_linegate_json_write_object(jw);
        ngx_http_linegate_json_write_key(jw, "id");
        ngx_http_linegate_json_write_str(jw, (u_char *) e->element[0]->str,
                                         e->element[0]->len);
        ngx_http_linegate_json_write_key(jw, "fields");
        ngx_http_linegate_json_write_object(jw);

        for (j = 0; j + 1 < f->elements; j += 2) {
            k = f->element[j];
            v = f->element[j + 1];

            if (k->type == REDIS_REPLY_STRING
                && v->type == REDIS_REPLY_STRING)
            {
                ngx_http_linegate_json_write_key_str(jw, (u_char *) k->str,
                                                     k->len);
                ngx_http_linegate_json_write_str(jw, (u_char *) v->str,
                                                 v->len);
            }
        }

        ngx_http_linegate_json_write_end(jw, '}');
        ngx_http_linegate_json_write_end(jw, '}');
    }

    ngx_http_linegate_json_write_end(jw, ']');
    ngx_http_linegate_json_write_end(jw, '}');
}


/* validation */

/* 24 lowercase hex */
static ngx_uint_t
ngx_http_linegate_operator_line_id_valid(ngx_str_t *s)
{
    return ngx_http_linegate_id_valid(s);
}


/*
 * an entry of the quarantine: any bytes (the inventory held them; a
 * NUL is refused with every field), at most QUARANTINE_ENTRY_MAX: a
 * name, never a list
 */
static ngx_uint_t
ngx_http_linegate_operator_entry_valid(ngx_str_t *s)
{
    return s->len >= 1 && s->len <= NGX_HTTP_LINEGATE_QUARANTINE_ENTRY_MAX;
}


/*
 * after trimming: 1 to 500 bytes of one line of text. Only spaces and
 * tabs are trimmed, so a CR or LF alone would be a reason, and a control
 * character would be stored and shown as the line's failureReason.
 */
static ngx_uint_t
ngx_http_linegate_operator_reason_valid(ngx_str_t *s)
{
    return s->len >= 1 && s->len <= NGX_HTTP_LINEGATE_REASON_MAX
           && ngx_http_linegate_chars_are(s->data, s->len,
                                          NGX_HTTP_LINEGATE_CHARS_TEXT);
}


static ngx_uint_t
ngx_http_linegate_operator_health_valid(ngx_str_t *s)
{
    return ngx_http_linegate_operator_one_of(s,
               ngx_http_linegate_operator_statuses);
}
