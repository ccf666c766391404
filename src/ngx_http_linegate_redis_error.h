
/*
 * linegate: what a Redis error reply says, whichever Redis wrote it.
 *
 * Redis 7 answers a script whose redis.call met an error with that
 * error, its code first ("READONLY You can't write against a read only
 * replica. script: ..."). Redis 6 (Debian 11, Ubuntu 22.04, managed
 * Redis 6.x) wraps it: "ERR Error running script (call to f_<sha>):
 * @user_script:50: @user_script: 50: -READONLY You can't write ...".
 * Read by its first word, every such error was a script's own (a bug:
 * 500), and a demoted master's READONLY sent no worker to the sentinels.
 *
 * Pure C: no nginx headers, unit-tested in t/unit/test_redis_error.c,
 * fuzzed by fuzz_redis_error.
 */


#ifndef _NGX_HTTP_LINEGATE_REDIS_ERROR_H_INCLUDED_
#define _NGX_HTTP_LINEGATE_REDIS_ERROR_H_INCLUDED_


#include <stddef.h>


/*
 * The error an error reply's text (str, len) reports: the text itself,
 * or, in a script's error wrapped by Redis 6, the error redis.call met
 * (its text from the code on, without the '-'). *out and *out_len are
 * set either way; out points into str.
 */
void ngx_http_linegate_redis_error_unwrap(const char *str, size_t len,
    const char **out, size_t *out_len);

/* 1: the error (unwrapped) is code: its first word, exactly */
int ngx_http_linegate_redis_error_is(const char *str, size_t len,
    const char *code);

/*
 * 1: the error of a script stopped by SCRIPT KILL (FUNCTION KILL), whose
 * code is ERR: Redis 7 "ERR Script killed by user with SCRIPT KILL...
 * script: <sha>, on @user_script:1.", Redis 6 wrapping it as a script's
 * own error "ERR Error running script (call to f_<sha>): @user_script:3:
 * Script killed by user with SCRIPT KILL... ". Redis kills no script
 * that wrote (SCRIPT KILL answers UNKILLABLE), so nothing of it was
 * written: Redis busy for a moment, not a bug of ours.
 */
int ngx_http_linegate_redis_error_killed(const char *str, size_t len);


#endif /* _NGX_HTTP_LINEGATE_REDIS_ERROR_H_INCLUDED_ */
