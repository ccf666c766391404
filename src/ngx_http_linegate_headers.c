
/*
 * linegate: header lookup in a request's or a subrequest's headers list.
 */


#include <ngx_config.h>
#include <ngx_core.h>

#include "ngx_http_linegate_headers.h"


/* the next header named name (any case) from (*part, *i) on, or NULL */
static ngx_table_elt_t *
ngx_http_linegate_header_next(ngx_list_part_t **part, ngx_uint_t *i,
    const char *name, size_t len)
{
    ngx_table_elt_t  *h;

    h = (*part)->elts;

    for ( /* void */ ; /* void */ ; (*i)++) {

        if (*i >= (*part)->nelts) {
            if ((*part)->next == NULL) {
                return NULL;
            }

            *part = (*part)->next;
            h = (*part)->elts;
            *i = 0;
        }

        if (h[*i].hash != 0 && h[*i].key.len == len
            && ngx_strncasecmp(h[*i].key.data, (u_char *) name, len) == 0)
        {
            return &h[(*i)++];
        }
    }
}


ngx_table_elt_t *
ngx_http_linegate_find_header(ngx_list_t *headers, const char *name)
{
    ngx_uint_t        i;
    ngx_list_part_t  *part;

    part = &headers->part;
    i = 0;

    return ngx_http_linegate_header_next(&part, &i, name, ngx_strlen(name));
}


/*
 * A header a request may carry once: a second one (of another value,
 * when same_value_ok) makes the request ambiguous, and the caller refuses
 * it rather than pick one.
 */
ngx_int_t
ngx_http_linegate_find_header_once(ngx_list_t *headers, const char *name,
    ngx_uint_t same_value_ok, ngx_table_elt_t **found)
{
    size_t            len;
    ngx_uint_t        i;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    len = ngx_strlen(name);
    part = &headers->part;
    i = 0;

    *found = ngx_http_linegate_header_next(&part, &i, name, len);

    if (*found == NULL) {
        return NGX_DECLINED;
    }

    while ((h = ngx_http_linegate_header_next(&part, &i, name, len))
           != NULL)
    {
        if (!same_value_ok
            || h->value.len != (*found)->value.len
            || ngx_memcmp(h->value.data, (*found)->value.data,
                          h->value.len)
               != 0)
        {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}
