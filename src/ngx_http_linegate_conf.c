
/*
 * linegate: what the directives of every file check the same way
 * (ngx_http_linegate_conf.h).
 */


#include "ngx_http_linegate_conf.h"


ngx_int_t
ngx_http_linegate_conf_param(ngx_conf_t *cf, ngx_str_t *value,
    const char *const *names, ngx_uint_t n, ngx_uint_t *seen)
{
    u_char      *eq;
    size_t       len;
    ngx_uint_t   i;

    for (i = 0; i < n; i++) {
        len = ngx_strlen(names[i]);

        if (value->len < len
            || ngx_strncmp(value->data, names[i], len) != 0)
        {
            continue;
        }

        if (*seen & ((ngx_uint_t) 1 << i)) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "duplicate \"%s\" parameter", names[i]);
            return NGX_ERROR;
        }

        *seen |= (ngx_uint_t) 1 << i;

        return i;
    }

    /* the name and its "=" alone: a misspelt "password=" holds a secret */
    eq = ngx_strlchr(value->data, value->data + value->len, '=');
    len = (eq == NULL) ? value->len : (size_t) (eq + 1 - value->data);

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "invalid parameter \"%*s\"",
                       len, value->data);

    return NGX_DECLINED;
}


char *
ngx_http_linegate_conf_check_msec_bounds(ngx_conf_t *cf, void *post,
    void *data)
{
    ngx_conf_num_bounds_t  *bounds = post;
    ngx_msec_t             *msp = data;

    ngx_str_t  *value;

    if (*msp >= (ngx_msec_t) bounds->low
        && *msp <= (ngx_msec_t) bounds->high)
    {
        return NGX_CONF_OK;
    }

    /* called by the directive's handler: its name and value are there */
    value = cf->args->elts;

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "\"%V\" must be at %s %i ms, not \"%V\"", &value[0],
                       *msp > (ngx_msec_t) bounds->high ? "most" : "least",
                       *msp > (ngx_msec_t) bounds->high ? bounds->high
                                                        : bounds->low,
                       &value[1]);

    return NGX_CONF_ERROR;
}
