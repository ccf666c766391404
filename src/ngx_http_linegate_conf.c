
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

    if (eq == NULL) {
        /* no name at all: a secret given without "password=" */
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid parameter (argument %ui): not "
                           "name=value",
                           (ngx_uint_t) (value
                                         - (ngx_str_t *) cf->args->elts));
        return NGX_DECLINED;
    }

    len = (size_t) (eq + 1 - value->data);

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "invalid parameter \"%*s\"",
                       len, value->data);

    return NGX_DECLINED;
}


ngx_int_t
ngx_http_linegate_conf_number(ngx_conf_t *cf, ngx_str_t *value, size_t skip,
    ngx_int_t min, ngx_int_t max, const char *what, const char *hint)
{
    ngx_int_t  n;

    n = ngx_atoi(value->data + skip, value->len - skip);

    /* ngx_atoi: NGX_ERROR for "", "-1", "1x" and an overflow */
    if (n == NGX_ERROR || n < min || n > max) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid %s \"%V\" (%s%i to %i)", what, value,
                           hint, min, max);
        return NGX_ERROR;
    }

    return n;
}


char *
ngx_http_linegate_conf_set_enum_slot(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    char  *p = conf;

    u_char           *s, *last;
    size_t            len;
    ngx_str_t        *value, list;
    ngx_uint_t       *np, i;
    ngx_conf_enum_t  *e;

    np = (ngx_uint_t *) (p + cmd->offset);

    if (*np != NGX_CONF_UNSET_UINT) {
        return "is duplicate";
    }

    value = cf->args->elts;
    e = cmd->post;

    for (i = 0; e[i].name.len != 0; i++) {
        if (e[i].name.len == value[1].len
            && ngx_strcasecmp(e[i].name.data, value[1].data) == 0)
        {
            *np = e[i].value;
            return NGX_CONF_OK;
        }
    }

    /* "a", "b" or "c" */
    len = 0;

    for (i = 0; e[i].name.len != 0; i++) {
        len += e[i].name.len + sizeof("\"\" or ");
    }

    s = ngx_pnalloc(cf->temp_pool, len);
    if (s == NULL) {
        return NGX_CONF_ERROR;
    }

    list.data = s;
    last = s;

    for (i = 0; e[i].name.len != 0; i++) {
        if (i) {
            last = (e[i + 1].name.len == 0) ? ngx_cpymem(last, " or ", 4)
                                            : ngx_cpymem(last, ", ", 2);
        }

        last = ngx_sprintf(last, "\"%V\"", &e[i].name);
    }

    list.len = last - s;

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid value \"%V\" in \"%V\" directive, "
                       "it must be %V", &value[1], &cmd->name, &list);

    return NGX_CONF_ERROR;
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
