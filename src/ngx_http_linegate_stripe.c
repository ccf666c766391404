
/*
 * linegate: Stripe calls as nginx subrequests.
 *
 * The operator's internal location (linegate_stripe_location) holds the
 * proxy_pass, TLS and the secret key; the module only builds the method,
 * path, form body and headers. The subrequest's answer is kept in memory
 * and handed to the waiting request, which resumes from its write event
 * handler once the subrequest is done, or linegate_stripe_timeout ended
 * it. nginx -t's check of the location the calls reach is stripe_conf.c.
 */


#include "ngx_http_linegate_module.h"
#include "ngx_http_linegate_stripe.h"
#include "ngx_http_linegate_metrics.h"
#include "ngx_http_linegate_ids.h"
#include "ngx_http_linegate_headers.h"
#include "ngx_http_linegate_chars.h"


#define NGX_HTTP_LINEGATE_STRIPE_BODY_MAX  (256 * 1024)

/*
 * The most of Stripe's Retry-After passed on: its rate limits are per
 * second, and a client told to wait for hours (a proxy's mistake, a
 * clock far off) would stop buying for nothing; a retry too early only
 * gets another 503.
 */
#define NGX_HTTP_LINEGATE_STRIPE_RETRY_AFTER_MAX  60

/*
 * Past linegate_stripe_timeout, how soon the call is ended again when
 * nginx is still at it: a timed-out connection is handed to the next
 * server of the upstream (proxy_next_upstream), or there was neither a
 * connection nor a name being resolved to end (the subrequest not yet
 * at its proxy_pass).
 */
#define NGX_HTTP_LINEGATE_STRIPE_DEADLINE_AGAIN  100


static ngx_int_t ngx_http_linegate_stripe_done(ngx_http_request_t *sr,
    void *data, ngx_int_t rc);
static void ngx_http_linegate_stripe_record(ngx_http_request_t *sr,
    ngx_http_linegate_ctx_t *ctx, ngx_int_t rc);
static ngx_uint_t ngx_http_linegate_stripe_whole(ngx_http_request_t *sr,
    size_t len);
static void ngx_http_linegate_stripe_resume(ngx_http_request_t *r);
static void ngx_http_linegate_stripe_count(ngx_http_linegate_ctx_t *ctx);
static ngx_int_t ngx_http_linegate_stripe_headers(ngx_http_request_t *sr,
    ngx_str_t *idempotency_key, ngx_http_linegate_main_conf_t *lmcf,
    ngx_uint_t form);
static ngx_int_t ngx_http_linegate_stripe_header(ngx_http_request_t *sr,
    const char *name, ngx_str_t *value);
static ngx_uint_t ngx_http_linegate_stripe_retry_after(ngx_str_t *value);
static ngx_int_t ngx_http_linegate_stripe_body(ngx_http_request_t *sr,
    ngx_str_t *form);
static ngx_int_t ngx_http_linegate_stripe_deadline_cleanup_add(
    ngx_http_request_t *r, ngx_http_linegate_ctx_t *ctx);
static void ngx_http_linegate_stripe_deadline_arm(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, ngx_http_request_t *sr,
    ngx_msec_t timeout);
static void ngx_http_linegate_stripe_deadline_handler(ngx_event_t *ev);
static void ngx_http_linegate_stripe_deadline_cleanup(void *data);


static ngx_str_t  ngx_http_linegate_post = ngx_string("POST");
static ngx_str_t  ngx_http_linegate_get = ngx_string("GET");
static ngx_str_t  ngx_http_linegate_delete = ngx_string("DELETE");


ngx_int_t
ngx_http_linegate_form_add(ngx_pool_t *pool, ngx_str_t *form,
    const char *name, ngx_str_t *value)
{
    size_t   nlen, len;
    u_char  *p;

    nlen = ngx_strlen(name);

    /* every byte may become %XX */
    len = form->len + 1 + 3 * nlen + 1 + 3 * value->len;

    p = ngx_pnalloc(pool, len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    if (form->len) {    /* an empty form may have no data */
        ngx_memcpy(p, form->data, form->len);
    }

    form->data = p;
    p += form->len;

    if (form->len) {
        *p++ = '&';
    }

    p = (u_char *) ngx_escape_uri(p, (u_char *) name, nlen,
                                  NGX_ESCAPE_ARGS);
    *p++ = '=';
    p = (u_char *) ngx_escape_uri(p, value->data, value->len,
                                  NGX_ESCAPE_ARGS);

    form->len = p - form->data;

    return NGX_OK;
}


ngx_int_t
ngx_http_linegate_form_add_cstr(ngx_pool_t *pool, ngx_str_t *form,
    const char *name, const char *value)
{
    ngx_str_t  v;

    v.data = (u_char *) value;
    v.len = ngx_strlen(value);

    return ngx_http_linegate_form_add(pool, form, name, &v);
}


ngx_int_t
ngx_http_linegate_stripe_id_valid(ngx_str_t *id)
{
    return id->len > 0 && id->len <= 255
           && ngx_http_linegate_chars_are(id->data, id->len,
                                          NGX_HTTP_LINEGATE_CHARS_WORD);
}


/*
 * A hosted invoice page is replayed to clients as paymentUrl and shown
 * to people as a link to pay: what Stripe answered is trusted no further
 * than an https URL of bounded length, with no control character, space,
 * quote or angle bracket that could break out of where it is shown.
 */
ngx_int_t
ngx_http_linegate_stripe_url_valid(ngx_str_t *url)
{
    u_char      c;
    ngx_uint_t  i;

    if (url->len <= sizeof("https://") - 1
        || url->len > NGX_HTTP_LINEGATE_STRIPE_URL_MAX
        || ngx_strncmp(url->data, "https://", sizeof("https://") - 1) != 0
        || url->data[sizeof("https://") - 1] == '/')
    {
        return 0;
    }

    for (i = 0; i < url->len; i++) {
        c = url->data[i];

        if (c <= 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '\''
            || c == '<' || c == '>' || c == '`')
        {
            return 0;
        }
    }

    return 1;
}


/* the statuses Stripe gives an invoice; any other is no answer we know */
ngx_int_t
ngx_http_linegate_stripe_invoice_status_valid(ngx_str_t *status)
{
    static const char  *known[] = {
        "draft", "open", "paid", "uncollectible", "void", NULL
    };

    const char  **k;

    for (k = known; *k; k++) {
        if (status->len == ngx_strlen(*k)
            && ngx_strncmp(status->data, *k, status->len) == 0)
        {
            return 1;
        }
    }

    return 0;
}


ngx_int_t
ngx_http_linegate_stripe_call(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, ngx_uint_t method, ngx_str_t *path,
    ngx_str_t *form, ngx_str_t *idempotency_key,
    ngx_http_linegate_resume_pt resume)
{
    u_char                         *q;
    ngx_str_t                       uri, args, *argsp;
    ngx_http_request_t             *sr;
    ngx_http_post_subrequest_t     *ps;
    ngx_http_linegate_main_conf_t  *lmcf;

    lmcf = ngx_http_get_module_main_conf(r, ngx_http_linegate_module);

    /*
     * A query string goes to the subrequest's arguments: in its URI the
     * proxy module would escape the "?" of an internal request.
     */
    q = ngx_strlchr(path->data, path->data + path->len, '?');
    argsp = NULL;

    uri.len = lmcf->stripe_location.len
              + (q ? (size_t) (q - path->data) : path->len);
    uri.data = ngx_pnalloc(r->pool, uri.len);
    if (uri.data == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(ngx_cpymem(uri.data, lmcf->stripe_location.data,
                          lmcf->stripe_location.len),
               path->data, uri.len - lmcf->stripe_location.len);

    if (q) {
        args.data = q + 1;
        args.len = path->data + path->len - args.data;
        argsp = &args;
    }

    ps = ngx_palloc(r->pool, sizeof(ngx_http_post_subrequest_t));
    if (ps == NULL) {
        return NGX_ERROR;
    }

    ps->handler = ngx_http_linegate_stripe_done;
    ps->data = ctx;

    if (ctx->stripe_json) {
        json_decref(ctx->stripe_json);
        ctx->stripe_json = NULL;
    }

    ctx->stripe_status = 0;
    ngx_str_null(&ctx->stripe_body);
    ctx->stripe_retry_after = 0;
    ctx->stripe_unknown = 0;
    ctx->stripe_expired = 0;
    ctx->resume = resume;
    ctx->stripe_path = *path;
    ctx->stripe_sent_us = ngx_http_linegate_metrics_now_us();

    /* all that can fail, before the subrequest that cannot be withdrawn */
    if (ngx_http_linegate_stripe_deadline_cleanup_add(r, ctx) != NGX_OK) {
        return NGX_ERROR;
    }

    if (ngx_http_subrequest(r, &uri, argsp, &sr, ps,
                            NGX_HTTP_SUBREQUEST_IN_MEMORY
                            |NGX_HTTP_SUBREQUEST_WAITED)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    switch (method) {

    case NGX_HTTP_POST:
        sr->method = NGX_HTTP_POST;
        sr->method_name = ngx_http_linegate_post;
        break;

    case NGX_HTTP_DELETE:
        sr->method = NGX_HTTP_DELETE;
        sr->method_name = ngx_http_linegate_delete;
        break;

    default:
        sr->method = NGX_HTTP_GET;
        sr->method_name = ngx_http_linegate_get;
        break;
    }

    /* never forward the client's headers (its credentials) to Stripe */
    if (ngx_http_linegate_stripe_headers(sr, idempotency_key, lmcf,
                                         form != NULL)
        != NGX_OK
        || ngx_http_linegate_stripe_body(sr, form) != NGX_OK)
    {
        /*
         * Out of memory with the subrequest posted, which nginx cannot
         * take back: it goes as a GET without a body, which changes
         * nothing at Stripe (a POST half built could lack its
         * Idempotency-Key), and resumes no request that was answered.
         */
        sr->method = NGX_HTTP_GET;
        sr->method_name = ngx_http_linegate_get;
        sr->request_body = NULL;
        sr->headers_in.content_length_n = 0;
        ctx->resume = NULL;
        return NGX_ERROR;
    }

    ngx_http_linegate_stripe_deadline_arm(r, ctx, sr, lmcf->stripe_timeout);

    /* the waiting request resumes here when the subrequest is done */
    r->write_event_handler = ngx_http_linegate_stripe_resume;

    return NGX_OK;
}


static ngx_int_t
ngx_http_linegate_stripe_headers(ngx_http_request_t *sr,
    ngx_str_t *idempotency_key, ngx_http_linegate_main_conf_t *lmcf,
    ngx_uint_t form)
{
    ngx_str_t  type = ngx_string("application/x-www-form-urlencoded");

    ngx_memzero(&sr->headers_in, sizeof(ngx_http_headers_in_t));

    if (ngx_list_init(&sr->headers_in.headers, sr->pool, 4,
                      sizeof(ngx_table_elt_t))
        != NGX_OK)
    {
        return NGX_ERROR;
    }

#if (nginx_version < 1023000)
    /* before 1.23.0 the Cookie headers were an array nginx expects set up */
    if (ngx_array_init(&sr->headers_in.cookies, sr->pool, 1,
                       sizeof(ngx_table_elt_t *))
        != NGX_OK)
    {
        return NGX_ERROR;
    }
#endif

    sr->headers_in.content_length_n = -1;
    sr->headers_in.keep_alive_n = -1;
    sr->headers_in.server = sr->main->headers_in.server;

    /* linegate_stripe_key_file's; a proxy_set_header Authorization wins */
    if (lmcf->stripe_auth.len
        && ngx_http_linegate_stripe_header(sr, "Authorization",
                                           &lmcf->stripe_auth)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (lmcf->stripe_version.len
        && ngx_http_linegate_stripe_header(sr, "Stripe-Version",
                                           &lmcf->stripe_version)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (idempotency_key != NULL && idempotency_key->len
        && ngx_http_linegate_stripe_header(sr, "Idempotency-Key",
                                           idempotency_key)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (form
        && ngx_http_linegate_stripe_header(sr, "Content-Type", &type)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_linegate_stripe_header(ngx_http_request_t *sr, const char *name,
    ngx_str_t *value)
{
    ngx_table_elt_t  *h;

    h = ngx_list_push(&sr->headers_in.headers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    h->key.data = (u_char *) name;
    h->key.len = ngx_strlen(name);
    h->value = *value;
    h->hash = 1;

    h->lowcase_key = ngx_pnalloc(sr->pool, h->key.len);
    if (h->lowcase_key == NULL) {
        return NGX_ERROR;
    }

    ngx_strlow(h->lowcase_key, h->key.data, h->key.len);

    return NGX_OK;
}


static ngx_int_t
ngx_http_linegate_stripe_body(ngx_http_request_t *sr, ngx_str_t *form)
{
    ngx_buf_t                 *b;
    ngx_http_request_body_t   *rb;

    if (form == NULL) {
        /* no body, whatever the client sent to us */
        sr->request_body = NULL;
        sr->headers_in.content_length_n = 0;
        return NGX_OK;
    }

    rb = ngx_pcalloc(sr->pool, sizeof(ngx_http_request_body_t));
    if (rb == NULL) {
        return NGX_ERROR;
    }

    b = ngx_calloc_buf(sr->pool);
    if (b == NULL) {
        return NGX_ERROR;
    }

    b->pos = form->data;
    b->last = form->data + form->len;
    b->start = b->pos;
    b->end = b->last;
    b->memory = 1;
    b->last_buf = 1;

    rb->bufs = ngx_alloc_chain_link(sr->pool);
    if (rb->bufs == NULL) {
        return NGX_ERROR;
    }

    rb->bufs->buf = b;
    rb->bufs->next = NULL;
    rb->rest = 0;

    sr->request_body = rb;
    sr->headers_in.content_length_n = form->len;

    return NGX_OK;
}


/*
 * linegate_stripe_timeout. nginx's proxy timeouts bound each read and
 * write, not the call: an answer that drips (Stripe, or a proxy between)
 * holds the request, its reservation and its slot for as long as it
 * drips. A timer of the waiting request bounds the whole call; the pool
 * cleanup deletes it when the request goes first (terminated, its
 * client's HTTP/2 stream reset), stripe_done when the call ends.
 */
static ngx_int_t
ngx_http_linegate_stripe_deadline_cleanup_add(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx)
{
    ngx_pool_cleanup_t  *cln;

    if (ctx->stripe_cleanup) {
        return NGX_OK;
    }

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NGX_ERROR;
    }

    cln->handler = ngx_http_linegate_stripe_deadline_cleanup;
    cln->data = ctx;
    ctx->stripe_cleanup = 1;

    return NGX_OK;
}


/* the cleanup is added first (deadline_cleanup_add): this cannot fail */
static void
ngx_http_linegate_stripe_deadline_arm(ngx_http_request_t *r,
    ngx_http_linegate_ctx_t *ctx, ngx_http_request_t *sr, ngx_msec_t timeout)
{
    ctx->stripe_deadline.handler = ngx_http_linegate_stripe_deadline_handler;
    ctx->stripe_deadline.data = ctx;
    ctx->stripe_deadline.log = r->connection->log;
    ctx->stripe_sr = sr;

    ngx_add_timer(&ctx->stripe_deadline, timeout);
}


/*
 * The call outlasted linegate_stripe_timeout: it is ended as
 * proxy_read_timeout ends it, by the upstream connection's read event,
 * timed out and posted. nginx's upstream then does what it does on a
 * timeout: before the answer's headers, the next server if
 * proxy_next_upstream allows (ended again 100 ms later), else 504;
 * after them, the answer is cut. Either reaches stripe_done, which
 * records no whole answer (an unknown outcome once the request was
 * sent): the endpoint's step takes its "no answer from Stripe" branch.
 *
 * A proxy_pass with a variable host has no connection while nginx
 * resolves the name (resolver, per call), and resolver_timeout (30 s by
 * default) is no part of linegate_stripe_timeout: the resolution is
 * ended as resolver_timeout ends it (ngx_resolver_timeout_handler), its
 * context timed out and handed to its handler, the upstream's. That
 * ends the subrequest with 502 ("could not be resolved (110: Operation
 * timed out)"), nothing sent to Stripe, and frees the context
 * (ngx_resolve_name_done). It runs the requests posted meanwhile, the
 * waiting one among them, which may start its next call on this very
 * event or be freed with ctx: nothing here is touched after it.
 */
static void
ngx_http_linegate_stripe_deadline_handler(ngx_event_t *ev)
{
    ngx_event_t                    *rev;
    ngx_connection_t               *pc;
    ngx_resolver_ctx_t             *rctx;
    ngx_http_request_t             *sr;
    ngx_http_upstream_t            *u;
    ngx_http_linegate_ctx_t        *ctx;
    ngx_http_linegate_main_conf_t  *lmcf;

    ctx = ev->data;
    sr = ctx->stripe_sr;

    if (sr == NULL) {
        return;
    }

    if (!ctx->stripe_expired) {
        ctx->stripe_expired = 1;

        lmcf = ngx_http_get_module_main_conf(sr, ngx_http_linegate_module);

        ngx_log_error(NGX_LOG_ERR, ev->log, 0,
                      NGX_HTTP_LINEGATE_LOG "Stripe %V \"%V\" still "
                      "unanswered after linegate_stripe_timeout (%M ms): "
                      "ended", &sr->method_name, &sr->uri,
                      lmcf->stripe_timeout);
    }

    u = sr->upstream;
    pc = (u != NULL) ? u->peer.connection : NULL;

    rctx = (u != NULL && pc == NULL && u->resolved != NULL)
           ? u->resolved->ctx : NULL;

    if (rctx != NULL && rctx->state == NGX_AGAIN) {
        rctx->state = NGX_RESOLVE_TIMEDOUT;
        rctx->handler(rctx);
        return;
    }

    if (pc != NULL) {
        rev = pc->read;

        if (rev->timer_set) {
            ngx_del_timer(rev);
        }

        /* a delayed event (proxy_limit_rate) takes timedout for its end */
        rev->delayed = 0;
        rev->timedout = 1;

        ngx_post_event(rev, &ngx_posted_events);
    }

    ngx_add_timer(ev, NGX_HTTP_LINEGATE_STRIPE_DEADLINE_AGAIN);
}


static void
ngx_http_linegate_stripe_deadline_cleanup(void *data)
{
    ngx_http_linegate_ctx_t  *ctx = data;

    if (ctx->stripe_deadline.timer_set) {
        ngx_del_timer(&ctx->stripe_deadline);
    }

    ctx->stripe_sr = NULL;
}


/*
 * Every ending of the subrequest comes here: a whole answer, an error
 * status of nginx's own (502 unreachable, 504 timed out: called again
 * with the error page nginx then makes), or NGX_ERROR (the answer over
 * subrequest_output_buffer_size, cut, reset or timed out after its
 * headers) and the client's leaving (its connection's error flag, a 499).
 * The first call records what came of the call; none lets nginx
 * terminate the waiting request (ngx_http_finalize_request terminates
 * the main request on NGX_ERROR, 408, 499, 444 or c->error): the
 * waiting request resumes and its step decides, whatever happened.
 */
static ngx_int_t
ngx_http_linegate_stripe_done(ngx_http_request_t *sr, void *data,
    ngx_int_t rc)
{
    ngx_connection_t         *c;
    ngx_http_linegate_ctx_t  *ctx = data;

    c = sr->connection;

    if (ctx->stripe_sr == sr) {
        /* the call ended, whichever way: its deadline is no longer */
        if (ctx->stripe_deadline.timer_set) {
            ngx_del_timer(&ctx->stripe_deadline);
        }

        ctx->stripe_sr = NULL;
    }

    if (ctx->resume == NULL) {
        /* the waiting request gave up on this call: nothing to resume */
        return rc;
    }

    if (ctx->stripe_status == 0) {
        ngx_http_linegate_stripe_record(sr, ctx, rc);
        ngx_http_linegate_stripe_count(ctx);
        sr->parent->write_event_handler = ngx_http_linegate_stripe_resume;
    }

    /*
     * The connection's error flag: the client left (its HTTP/2 stream was
     * reset, nginx saw its connection close), or a filter of the
     * subrequest failed (an answer over subrequest_output_buffer_size).
     * The request still finishes its steps; writing its answer tells
     * whether the client is still there. But a connection nginx read
     * the end of (the read event's eof: the HTTP/2 connection it gave
     * up, its streams' frames no longer sent) gets the flag back when
     * the request resumes (stripe_resume): an answer queued there would
     * hold its stream, the request and the client's socket open until
     * the worker exits.
     */
    if (c->error && c->read->eof) {
        ctx->stripe_client_gone = 1;
    }

    c->error = 0;

    if (rc == NGX_ERROR || rc == NGX_HTTP_REQUEST_TIME_OUT
        || rc == NGX_HTTP_CLIENT_CLOSED_REQUEST || rc == NGX_HTTP_CLOSE)
    {
        /* the subrequest ends as if answered; its failure is recorded */
        return NGX_OK;
    }

    return rc;
}


static void
ngx_http_linegate_stripe_record(ngx_http_request_t *sr,
    ngx_http_linegate_ctx_t *ctx, ngx_int_t rc)
{
    size_t                    len;
    json_t                   *json;
    ngx_buf_t                *b;
    ngx_table_elt_t          *h;
    ngx_http_upstream_t      *u;

    ctx->stripe_status = sr->headers_out.status;
    ctx->stripe_unknown = 0;

    b = (sr->out != NULL) ? sr->out->buf : NULL;
    len = (b != NULL) ? (size_t) (b->last - b->pos) : 0;

    /*
     * A status under 100 is no HTTP status: nginx's parser takes any
     * three digits, "000" too (a broken proxy before Stripe), and 0 is
     * also what tells stripe_done and stripe_resume that nothing is
     * recorded yet: kept, the waiting request would wait forever.
     *
     * Past linegate_stripe_timeout nothing is a whole answer: nginx ends
     * an answer read as it comes (proxy_buffering off, X-Accel-Buffering:
     * no) whose end is its connection's close with NGX_OK and no sign of
     * the cut for stripe_whole to read.
     */
    if (ctx->stripe_expired
        || rc == NGX_ERROR || rc == NGX_HTTP_REQUEST_TIME_OUT
        || rc == NGX_HTTP_CLIENT_CLOSED_REQUEST || rc == NGX_HTTP_CLOSE
        || (rc >= NGX_HTTP_SPECIAL_RESPONSE
            && ctx->stripe_status < NGX_HTTP_SPECIAL_RESPONSE)
        || ctx->stripe_status < 100
        || !ngx_http_linegate_stripe_whole(sr, len))
    {
        /*
         * No whole answer from Stripe. Unless nothing of the request was
         * written to it (refused connection), the call may have run.
         */
        u = sr->upstream;
        ctx->stripe_unknown = (u == NULL || u->request_sent);

        ctx->stripe_status = (rc >= NGX_HTTP_SPECIAL_RESPONSE
                              && rc != NGX_HTTP_CLIENT_CLOSED_REQUEST
                              && rc != NGX_HTTP_CLOSE)
                             ? rc : NGX_HTTP_BAD_GATEWAY;

        ngx_log_error(NGX_LOG_ERR, sr->connection->log, 0,
                      NGX_HTTP_LINEGATE_LOG "Stripe %V \"%V\" got no whole "
                      "answer (%i, status %ui, %uz bytes), its outcome "
                      "is %s", &sr->method_name, &sr->uri, rc,
                      sr->headers_out.status, len,
                      ctx->stripe_unknown ? "unknown" : "nothing done");

        /* a part of an answer is not an answer */
        return;
    }

    h = ngx_http_linegate_find_header(&sr->headers_out.headers,
                                      "Retry-After");
    if (h != NULL) {
        ctx->stripe_retry_after =
            ngx_http_linegate_stripe_retry_after(&h->value);
    }

    if (b != NULL) {
        if (len > 0 && len <= NGX_HTTP_LINEGATE_STRIPE_BODY_MAX) {
            ctx->stripe_body.data = b->pos;
            ctx->stripe_body.len = len;

            json = json_loadb((const char *) b->pos, len, 0, NULL);

            if (json != NULL && !json_is_object(json)) {
                json_decref(json);
                json = NULL;
            }

            ctx->stripe_json = json;
        }
    }

    if (ctx->stripe_json == NULL && ctx->stripe_status >= 200
        && ctx->stripe_status < 300)
    {
        /*
         * A 2xx says the call ran, and nothing in it can be read: it may
         * be a part of the answer taken for all of it (one without a
         * length, read as it comes, cut by proxy_read_timeout: nginx
         * ends it as if whole, and no sign of the cut is left for
         * stripe_whole), or a proxy's page. Its outcome is unknown, as
         * for an answer that never came: a POST is asked again with its
         * Idempotency-Key, or its purchase queued.
         */
        ctx->stripe_unknown = 1;

        ngx_log_error(NGX_LOG_ERR, sr->connection->log, 0,
                      NGX_HTTP_LINEGATE_LOG "Stripe %V \"%V\" answered %ui "
                      "with no JSON object (%uz bytes), its outcome is "
                      "unknown", &sr->method_name, &sr->uri,
                      ctx->stripe_status, len);
    }

    /* the card-related body is never logged, only what came of the call */
    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, sr->connection->log, 0,
                   NGX_HTTP_LINEGATE_LOG "stripe answered %i (json: %d)",
                   ctx->stripe_status, ctx->stripe_json != NULL);
}


/*
 * Retry-After as seconds: delta-seconds or an HTTP-date (RFC 9110
 * 10.2.3; a proxy before Stripe may send either), at most
 * NGX_HTTP_LINEGATE_STRIPE_RETRY_AFTER_MAX. 0 when it is neither: a sign,
 * a space, anything but digits, or digits past NGX_MAX_INT_T_VALUE
 * (ngx_atoi's NGX_ERROR); the callers then answer 1.
 */
static ngx_uint_t
ngx_http_linegate_stripe_retry_after(ngx_str_t *value)
{
    time_t     at, now;
    ngx_int_t  n;

    n = ngx_atoi(value->data, value->len);

    if (n == NGX_ERROR) {
        at = ngx_parse_http_time(value->data, value->len);

        if (at == NGX_ERROR) {
            return 0;
        }

        now = ngx_time();
        n = at > now ? at - now : 1;
    }

    return (ngx_uint_t) ngx_min(n, NGX_HTTP_LINEGATE_STRIPE_RETRY_AFTER_MAX);
}


/*
 * Did the whole body come? nginx ends a subrequest whose answer was cut
 * after its headers with NGX_OK (ngx_http_upstream_finalize_request
 * flushes what it has): the upstream's own bookkeeping tells, as in
 * ngx_http_upstream_process_request, and the Content-Length.
 */
static ngx_uint_t
ngx_http_linegate_stripe_whole(ngx_http_request_t *sr, size_t len)
{
    ngx_event_pipe_t     *p;
    ngx_http_upstream_t  *u;

    u = sr->upstream;

    if (u == NULL) {
        /* not proxied: nginx's own answer (a misconfigured location) */
        return 1;
    }

    if (sr->headers_out.content_length_n >= 0
        && (off_t) len != sr->headers_out.content_length_n)
    {
        return 0;
    }

    if (u->buffering) {
        p = u->pipe;

        return p != NULL
               && (p->upstream_done
                   || (p->upstream_eof && p->length == -1));
    }

    return u->length == 0 || u->length == -1;
}


/*
 * The call in the metrics: its endpoint is the first segment of the path
 * after "v1/" (customers, invoices, subscriptions...), never an id.
 */
static void
ngx_http_linegate_stripe_count(ngx_http_linegate_ctx_t *ctx)
{
    u_char     *p, *last;
    ngx_str_t   endpoint, outcome;

    p = ctx->stripe_path.data;
    last = p + ctx->stripe_path.len;

    if (last - p > 3 && ngx_strncmp(p, "v1/", 3) == 0) {
        p += 3;
    }

    endpoint.data = p;

    while (p < last && *p != '/' && *p != '?') {
        p++;
    }

    endpoint.len = p - endpoint.data;

    if (ctx->stripe_unknown) {
        ngx_str_set(&outcome, "unknown");

    } else if (ctx->stripe_json == NULL) {
        ngx_str_set(&outcome, "no_answer");

    } else if (ctx->stripe_status < 300) {
        ngx_str_set(&outcome, "ok");

    } else if (ctx->stripe_status == 429) {
        ngx_str_set(&outcome, "rate_limited");

    } else if (ctx->stripe_status < 500) {
        ngx_str_set(&outcome, "refused");

    } else {
        ngx_str_set(&outcome, "failed");
    }

    ngx_http_linegate_metrics_inc2(NGX_HTTP_LINEGATE_M_STRIPE_CALLS,
                                   "endpoint", &endpoint, "outcome",
                                   &outcome);

    ngx_http_linegate_metrics_observe(NGX_HTTP_LINEGATE_M_STRIPE_LATENCY,
        "endpoint", &endpoint,
        (ngx_msec_int_t) (ngx_http_linegate_metrics_now_us()
                          - ctx->stripe_sent_us));
}


static void
ngx_http_linegate_stripe_resume(ngx_http_request_t *r)
{
    ngx_http_linegate_ctx_t      *ctx;
    ngx_http_linegate_resume_pt   resume;

    ctx = ngx_http_get_module_ctx(r, ngx_http_linegate_module);

    if (ctx == NULL || ctx->resume == NULL || ctx->stripe_status == 0) {
        /* a write event before the subrequest finished: keep waiting */
        return;
    }

    resume = ctx->resume;
    ctx->resume = NULL;
    r->write_event_handler = ngx_http_request_empty_handler;

    if (ctx->stripe_client_gone) {
        /* the steps run on; the answer's writing sees the client gone */
        r->connection->error = 1;
    }

    resume(r, ctx);
}


ngx_http_linegate_stripe_result_e
ngx_http_linegate_stripe_result(ngx_http_linegate_ctx_t *ctx)
{
    if (ctx->stripe_status == NGX_HTTP_TOO_MANY_REQUESTS) {
        return NGX_HTTP_LINEGATE_STRIPE_RATE_LIMITED;
    }

    if (ctx->stripe_json == NULL || ctx->stripe_status >= 500
        || ctx->stripe_status < 200)
    {
        return NGX_HTTP_LINEGATE_STRIPE_UNAVAILABLE;
    }

    if (ctx->stripe_status >= 300) {
        /* a 4xx that is not Stripe's own error shape came from a proxy */
        return json_is_object(json_object_get(ctx->stripe_json, "error"))
               ? NGX_HTTP_LINEGATE_STRIPE_REFUSED
               : NGX_HTTP_LINEGATE_STRIPE_UNAVAILABLE;
    }

    return NGX_HTTP_LINEGATE_STRIPE_OK;
}


const char *
ngx_http_linegate_stripe_error_field(ngx_http_linegate_ctx_t *ctx,
    const char *field)
{
    json_t  *err, *v;

    err = ctx->stripe_json ? json_object_get(ctx->stripe_json, "error")
                           : NULL;
    v = err ? json_object_get(err, field) : NULL;

    return json_is_string(v) ? json_string_value(v) : NULL;
}


const char *
ngx_http_linegate_stripe_error_message(ngx_http_linegate_ctx_t *ctx)
{
    const char  *msg;

    msg = ngx_http_linegate_stripe_error_field(ctx, "message");

    return msg ? msg : "The payment provider refused the request";
}


const char *
ngx_http_linegate_stripe_error_code(ngx_http_linegate_ctx_t *ctx)
{
    return ngx_http_linegate_stripe_error_field(ctx, "code");
}
