
/*
 * linegate: what the directives of every file check the same way: a
 * directive's name=value parameters, each given once; a number within
 * bounds; an enum's refusal that names the directive and its values; a
 * time within bounds.
 */


#ifndef _NGX_HTTP_LINEGATE_CONF_H_INCLUDED_
#define _NGX_HTTP_LINEGATE_CONF_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>


/*
 * The "name=value" parameter value of a directive, among the n names
 * (each with its "="): its index in names. Each once (bit i of *seen: a
 * second one would silently win), else NGX_ERROR, logged. NGX_DECLINED,
 * logged as "invalid parameter" with its name alone (the value may be a
 * secret: "passwd=..." must not reach the error log), or by its argument
 * number when it has no "=" (a secret given without its name), for any
 * other. value is one of cf->args.
 */
ngx_int_t ngx_http_linegate_conf_param(ngx_conf_t *cf, ngx_str_t *value,
    const char *const *names, ngx_uint_t n, ngx_uint_t *seen);

/*
 * The number in value after skip bytes, from min to max (min >= 0:
 * NGX_ERROR is -1); else NGX_ERROR, logged as 'invalid <what> "<value>"
 * (<hint>min to max)'.
 */
ngx_int_t ngx_http_linegate_conf_number(ngx_conf_t *cf, ngx_str_t *value,
    size_t skip, ngx_int_t min, ngx_int_t max, const char *what,
    const char *hint);

/*
 * ngx_conf_set_enum_slot, whose refusal names the directive and every
 * value it takes, as a flag's does ('it must be "on" or "off"'); nginx's
 * says 'invalid value "x"' alone
 */
char *ngx_http_linegate_conf_set_enum_slot(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);

/*
 * The post handler of ngx_conf_set_msec_slot with ngx_conf_num_bounds_t
 * in ms: a time past high (a timer's ngx_msec_t would wrap, or the
 * setting means nothing) or under low is refused, naming both.
 */
char *ngx_http_linegate_conf_check_msec_bounds(ngx_conf_t *cf, void *post,
    void *data);


#endif /* _NGX_HTTP_LINEGATE_CONF_H_INCLUDED_ */
