
/*
 * linegate: nginx -t's check of the location the Stripe calls reach.
 *
 * stripe.c makes the calls as subrequests to linegate_stripe_location;
 * nginx looks their URIs up among the locations of the server of the
 * request that makes them. Whatever that location does with the answer
 * (cut it, abort the call when the client leaves) is found here, once,
 * before any call is made.
 */


#include "ngx_http_linegate_module.h"
#include "ngx_http_linegate_stripe_conf.h"


/*
 * The least subrequest_output_buffer_size nginx -t takes for the Stripe
 * location: an answer over it is cut, and a cut answer is no answer (a
 * POST's outcome unknown, a purchase queued). The largest the module
 * asks for are lists (reconcile.c's pages: 10 subscriptions, 5 invoices
 * with their lines and payments); docs/directives.md says 64k.
 */
#define NGX_HTTP_LINEGATE_STRIPE_BUFFER_MIN  (64 * 1024)


static ngx_int_t ngx_http_linegate_stripe_conf_location(ngx_conf_t *cf,
    ngx_http_core_srv_conf_t *cscf, ngx_str_t *uri,
    ngx_http_core_loc_conf_t **found);
static ngx_int_t ngx_http_linegate_stripe_conf_find(
    ngx_http_core_loc_conf_t *pclcf, ngx_str_t *uri,
    ngx_http_core_loc_conf_t **cur);
static ngx_int_t ngx_http_linegate_stripe_conf_find_static(
    ngx_http_location_tree_node_t *node, ngx_str_t *uri,
    ngx_http_core_loc_conf_t **cur);
static ngx_http_upstream_conf_t *ngx_http_linegate_stripe_conf_upstream(
    ngx_conf_t *cf, ngx_http_core_loc_conf_t *clcf, const char *module);
static const char *ngx_http_linegate_stripe_conf_other_pass(ngx_conf_t *cf,
    ngx_http_core_loc_conf_t *clcf);


/*
 * The upstream modules other than the proxy whose "*_pass" makes a
 * location's content: each one's loc conf begins with
 * ngx_http_upstream_conf_t, as the proxy's, whose upstream a "*_pass"
 * without variables sets.
 */
static const char  *ngx_http_linegate_stripe_conf_passes[][2] = {
    { "ngx_http_fastcgi_module", "fastcgi_pass" },
    { "ngx_http_uwsgi_module", "uwsgi_pass" },
    { "ngx_http_scgi_module", "scgi_pass" },
    { "ngx_http_grpc_module", "grpc_pass" },
    { "ngx_http_memcached_module", "memcached_pass" },
    { NULL, NULL }
};


/*
 * nginx -t: where each server's Stripe calls go. A subrequest's URI is
 * looked up among the locations of the server of the request that makes
 * it, so every server with an API that calls Stripe is checked, for the
 * path of every kind of call (a location may take one apart). Each is
 * found as ngx_http_core_find_location finds it at run time (static,
 * nested, then regex locations). What would lose a money step's answer
 * is refused, naming the directive: subrequest_output_buffer_size under
 * 64k (an answer cut is no answer), proxy_ignore_client_abort off (a
 * client leaving aborts a POST half-way, its outcome unknown), a
 * location that passes the calls with another module than the proxy
 * (fastcgi_pass...: the calls are HTTPS requests to Stripe, and only
 * the proxy's handling of a client leaving is known here). A path
 * that reaches no proxied location (none, an API's own, or one that
 * nginx redirects to) is only warned of, and the other paths still
 * checked: every call fails there, cleanly, with 502.
 */
ngx_int_t
ngx_http_linegate_stripe_conf_check(ngx_conf_t *cf, ngx_str_t *location,
    ngx_array_t *servers)
{
    /*
     * every path the module calls, an id standing for every id: a
     * location may take the calls on one object (".../in_X/void") and
     * not the bare path, or the other way round
     */
    static const char  *paths[] = {
        "v1/customers/cus_0", "v1/subscriptions", "v1/subscriptions/sub_0",
        "v1/invoices", "v1/invoices/in_0", "v1/invoices/in_0/finalize",
        "v1/invoices/in_0/void", "v1/invoiceitems", "v1/refunds", NULL
    };

    u_char                         *p;
    ngx_str_t                       uri;
    ngx_uint_t                      i;
    const char                    **path, *pass;
    ngx_http_core_srv_conf_t      **cscfp;
    ngx_http_core_loc_conf_t       *clcf;
    ngx_http_upstream_conf_t       *ucf;
    ngx_http_linegate_loc_conf_t   *llcf;

    if (servers == NULL || location->len == 0) {
        return NGX_OK;
    }

    cscfp = servers->elts;

    for (i = 0; i < servers->nelts; i++) {
        for (path = paths; *path; path++) {
            uri.len = location->len + ngx_strlen(*path);
            uri.data = ngx_pnalloc(cf->temp_pool, uri.len);
            if (uri.data == NULL) {
                return NGX_ERROR;
            }

            p = ngx_cpymem(uri.data, location->data, location->len);
            ngx_memcpy(p, *path, ngx_strlen(*path));

            if (ngx_http_linegate_stripe_conf_location(cf, cscfp[i], &uri,
                                                       &clcf)
                != NGX_OK)
            {
                return NGX_ERROR;
            }

            llcf = (clcf != NULL)
                   ? clcf->loc_conf[ngx_http_linegate_module.ctx_index]
                   : NULL;

            if (clcf == NULL || clcf->handler == NULL
                || (llcf != NULL && llcf->api != NGX_HTTP_LINEGATE_API_NONE))
            {
                ngx_conf_log_error(NGX_LOG_WARN, cf, 0,
                                   "\"linegate_stripe_location %V\": "
                                   "\"%V\" of server \"%V\" reaches no "
                                   "location that passes it to Stripe: "
                                   "every such call fails",
                                   location, &uri, &cscfp[i]->server_name);

                /* the other paths may reach a location to check */
                continue;
            }

            if (clcf->subrequest_output_buffer_size
                < NGX_HTTP_LINEGATE_STRIPE_BUFFER_MIN)
            {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "\"subrequest_output_buffer_size\" "
                                   "%uz of location \"%V\" (the Stripe "
                                   "calls of \"linegate_stripe_location "
                                   "%V\", server \"%V\") must be at least "
                                   "64k: a larger answer is cut, and a "
                                   "purchase's answer lost",
                                   clcf->subrequest_output_buffer_size,
                                   &clcf->name, location,
                                   &cscfp[i]->server_name);
                return NGX_ERROR;
            }

            ucf = ngx_http_linegate_stripe_conf_upstream(cf, clcf,
                                                    "ngx_http_proxy_module");

            /*
             * proxy_pass without variables sets the proxy's upstream;
             * with variables (production.conf.example's), nothing this
             * module can read: a location without the one may have the
             * other, or be another module's (fastcgi_pass, js_content)
             */
            pass = (ucf == NULL || ucf->upstream == NULL)
                   ? ngx_http_linegate_stripe_conf_other_pass(cf, clcf)
                   : NULL;

            if (pass != NULL) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "location \"%V\" (the Stripe calls of "
                                   "\"linegate_stripe_location %V\", "
                                   "server \"%V\") passes them with "
                                   "\"%s\": it must be a \"proxy_pass\" "
                                   "location to Stripe, with "
                                   "\"proxy_ignore_client_abort on\" "
                                   "(only the proxy's settings say that a "
                                   "client leaving does not abort a "
                                   "purchase's call half-way)",
                                   &clcf->name, location,
                                   &cscfp[i]->server_name, pass);
                return NGX_ERROR;
            }

            if (ucf != NULL && ucf->ignore_client_abort != 1) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "\"proxy_ignore_client_abort\" must be "
                                   "on in location \"%V\" (the Stripe "
                                   "calls of \"linegate_stripe_location "
                                   "%V\", server \"%V\")%s: a client "
                                   "leaving would abort a purchase's call "
                                   "half-way, its outcome unknown",
                                   &clcf->name, location,
                                   &cscfp[i]->server_name,
                                   ucf->upstream == NULL
                                   ? ", which must pass them with "
                                     "\"proxy_pass\" (not js_content, "
                                     "nor a *_pass with variables)"
                                   : "");
                return NGX_ERROR;
            }
        }
    }

    return NGX_OK;
}


/* the location uri maps to in the server; NULL: none, or a redirect */
static ngx_int_t
ngx_http_linegate_stripe_conf_location(ngx_conf_t *cf,
    ngx_http_core_srv_conf_t *cscf, ngx_str_t *uri,
    ngx_http_core_loc_conf_t **found)
{
    ngx_int_t                  rc;
    ngx_http_core_loc_conf_t  *pclcf, *cur;

    pclcf = cscf->ctx->loc_conf[ngx_http_core_module.ctx_index];
    cur = pclcf;

    rc = ngx_http_linegate_stripe_conf_find(pclcf, uri, &cur);

    if (rc == NGX_ERROR) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "cannot match \"%V\" against the locations "
                           "of server \"%V\"", uri, &cscf->server_name);
        return NGX_ERROR;
    }

    /*
     * NGX_DONE: the URI is a prefix location's name without its "/"
     * (auto_redirect, as proxy_pass sets): nginx answers the call with
     * its own 301, never passing it on
     */
    *found = (cur == pclcf || rc == NGX_DONE) ? NULL : cur;

    return NGX_OK;
}


/*
 * ngx_http_core_find_location's walk (static to ngx_http_core_module.c),
 * on a URI alone: *cur is the location matched, as r->loc_conf there.
 */
static ngx_int_t
ngx_http_linegate_stripe_conf_find(ngx_http_core_loc_conf_t *pclcf,
    ngx_str_t *uri, ngx_http_core_loc_conf_t **cur)
{
    ngx_int_t                   rc;
#if (NGX_PCRE)
    ngx_int_t                   n;
    ngx_uint_t                  noregex;
    ngx_http_core_loc_conf_t  **clcfp;

    noregex = 0;
#endif

    rc = ngx_http_linegate_stripe_conf_find_static(pclcf->static_locations, uri,
                                              cur);

    if (rc == NGX_AGAIN) {
#if (NGX_PCRE)
        noregex = (*cur)->noregex;
#endif

        /* nested locations */
        rc = ngx_http_linegate_stripe_conf_find(*cur, uri, cur);
    }

    if (rc == NGX_OK || rc == NGX_DONE) {
        return rc;
    }

#if (NGX_PCRE)

    if (noregex == 0 && pclcf->regex_locations) {

        for (clcfp = pclcf->regex_locations; *clcfp; clcfp++) {

            n = ngx_regex_exec((*clcfp)->regex->regex, uri, NULL, 0);

            if (n == NGX_REGEX_NO_MATCHED) {
                continue;
            }

            if (n < 0) {
                return NGX_ERROR;
            }

            *cur = *clcfp;

            rc = ngx_http_linegate_stripe_conf_find(*clcfp, uri, cur);

            return (rc == NGX_ERROR) ? rc : NGX_OK;
        }
    }

#endif

    return rc;
}


/* ngx_http_core_find_static_location's, on a URI alone */
static ngx_int_t
ngx_http_linegate_stripe_conf_find_static(ngx_http_location_tree_node_t *node,
    ngx_str_t *uri, ngx_http_core_loc_conf_t **cur)
{
    u_char     *u;
    size_t      len, n;
    ngx_int_t   rc, rv;

    len = uri->len;
    u = uri->data;

    rv = NGX_DECLINED;

    while (node != NULL) {

        n = (len <= (size_t) node->len) ? len : node->len;

        rc = ngx_filename_cmp(u, node->name, n);

        if (rc != 0) {
            node = (rc < 0) ? node->left : node->right;
            continue;
        }

        if (len > (size_t) node->len) {

            if (node->inclusive) {
                *cur = node->inclusive;
                rv = NGX_AGAIN;

                node = node->tree;
                u += n;
                len -= n;

                continue;
            }

            /* exact only */

            node = node->right;
            continue;
        }

        if (len == (size_t) node->len) {

            if (node->exact) {
                *cur = node->exact;
                return NGX_OK;
            }

            *cur = node->inclusive;
            return NGX_AGAIN;
        }

        /* len < node->len */

        if (len + 1 == (size_t) node->len && node->auto_redirect) {
            *cur = node->exact ? node->exact : node->inclusive;
            rv = NGX_DONE;
        }

        node = node->left;
    }

    return rv;
}


/*
 * The settings of an upstream module (the proxy, fastcgi...) in a
 * location: its loc conf begins with ngx_http_upstream_conf_t (each
 * module keeps its type to its .c). Found by name, so that an nginx
 * built without the module still loads this one; NULL then.
 */
static ngx_http_upstream_conf_t *
ngx_http_linegate_stripe_conf_upstream(ngx_conf_t *cf,
    ngx_http_core_loc_conf_t *clcf, const char *module)
{
    ngx_uint_t     i;
    ngx_module_t  *m;

    for (i = 0; cf->cycle->modules[i]; i++) {
        m = cf->cycle->modules[i];

        if (m->type == NGX_HTTP_MODULE && ngx_strcmp(m->name, module) == 0)
        {
            return clcf->loc_conf[m->ctx_index];
        }
    }

    return NULL;
}


/* the "*_pass" of another module than the proxy the location has; NULL */
static const char *
ngx_http_linegate_stripe_conf_other_pass(ngx_conf_t *cf,
    ngx_http_core_loc_conf_t *clcf)
{
    const char                *(*pass)[2];
    ngx_http_upstream_conf_t  *ucf;

    for (pass = ngx_http_linegate_stripe_conf_passes; (*pass)[0]; pass++) {
        ucf = ngx_http_linegate_stripe_conf_upstream(cf, clcf, (*pass)[0]);

        if (ucf != NULL && ucf->upstream != NULL) {
            return (*pass)[1];
        }
    }

    return NULL;
}
