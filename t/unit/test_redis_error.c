
/*
 * src/ngx_http_linegate_redis_error.c: an error reply read by its code,
 * Redis 7's as it is, Redis 6's script errors unwrapped (the texts below
 * are Redis 6.0-6.2's and 7.0's own, as clients have reported them);
 * a script stopped by SCRIPT KILL told from a script's own ERR.
 */


#include <string.h>

#include "ngx_http_linegate_redis_error.h"
#include "tap.h"


static int
is(const char *text, const char *code)
{
    return ngx_http_linegate_redis_error_is(text, strlen(text), code);
}


static int
killed(const char *text)
{
    return ngx_http_linegate_redis_error_killed(text, strlen(text));
}


static int
unwraps_to(const char *text, const char *expect)
{
    size_t       n;
    const char  *e;

    ngx_http_linegate_redis_error_unwrap(text, strlen(text), &e, &n);

    return n == strlen(expect) && memcmp(e, expect, n) == 0;
}


int
main(void)
{
    const char  *v6_readonly, *v6_oom, *v6_lua, *v7_readonly, *v6_noperm;

    v6_readonly = "ERR Error running script (call to f_f3a0c1): "
                  "@user_script:50: @user_script: 50: -READONLY You "
                  "can't write against a read only replica.";
    v6_oom = "ERR Error running script (call to f_1028a5): "
             "@user_script:4: @user_script: 4: -OOM command not allowed "
             "when used memory > 'maxmemory'.";
    v6_noperm = "ERR Error running script (call to f_99): @user_script:1: "
                "@user_script: 1: -NOPERM this user has no permissions "
                "to access one of the keys used as arguments";
    v6_lua = "ERR Error running script (call to f_ab): @user_script:12: "
             "user_script:12: attempt to compare nil with number";
    v7_readonly = "READONLY You can't write against a read only replica. "
                  "script: 6b8184, on @user_script:1.";

    ok(is(v6_readonly, "READONLY"), "Redis 6: a script's READONLY");
    ok(unwraps_to(v6_readonly, "READONLY You can't write against a read "
                               "only replica."),
       "Redis 6: the error redis.call met, from its code on");
    ok(is(v6_oom, "OOM"), "Redis 6: a script's OOM");
    ok(is(v6_noperm, "NOPERM"), "Redis 6: a script's NOPERM");
    ok(!is(v6_readonly, "ERR"), "Redis 6: not read as ERR");

    ok(!is(v6_lua, "READONLY") && is(v6_lua, "ERR"),
       "a script's own error stays ERR");
    ok(unwraps_to(v6_lua, v6_lua), "and is not unwrapped");

    ok(is(v7_readonly, "READONLY"), "Redis 7: READONLY as it is");
    ok(unwraps_to(v7_readonly, v7_readonly), "Redis 7: not unwrapped");
    ok(is("BUSY Redis is busy running a script.", "BUSY"), "BUSY");
    ok(is("LOADING", "LOADING"), "a code alone");

    ok(!is("READONLYX no", "READONLY"), "a code is a whole word");
    ok(!is("READ", "READONLY"), "shorter than the code");
    ok(!is("ERR Error running script: -", "READONLY"),
       "a prefix with nothing after");
    ok(unwraps_to("ERR Error running script (x): -oom lower",
                  "ERR Error running script (x): -oom lower"),
       "a code is capitals");
    ok(!is("", "OOM"), "empty");

    /*
     * a script stopped by SCRIPT KILL: Redis 7.0's text as Redis 7.0.15
     * answers it (t/032 takes it from the Redis it runs), a function's
     * (FCALL), Redis 6's wrapped
     */
    ok(killed("ERR Script killed by user with SCRIPT KILL... script: "
              "653db1ceb7ef061910af88dc7ebf80737358169d, on "
              "@user_script:1."), "Redis 7: killed");
    ok(killed("ERR Script killed by user with SCRIPT KILL... script: "
              "ns_step, on @user_function:1."), "Redis 7: a function killed");
    ok(killed("ERR Script killed by user with FUNCTION KILL..."),
       "FUNCTION KILL's wording");
    ok(killed("ERR Error running script (call to f_2817d960235dc23d2cea9cc2"
              "c716a0b123b56be8): @user_script:3: Script killed by user "
              "with SCRIPT KILL... "), "Redis 6: killed, wrapped");
    ok(killed("ERR Error running script (call to f_ab): Script killed by "
              "user with SCRIPT KILL..."), "Redis 6: no line known");
    ok(is("ERR Error running script (call to f_ab): @user_script:3: "
          "Script killed by user with SCRIPT KILL... ", "ERR"),
       "Redis 6: its code stays ERR");

    ok(!killed(v6_lua), "a script's own error: not killed");
    ok(!killed(v6_readonly), "a wrapped READONLY: not killed");
    ok(!killed("BUSY Redis is busy running a script. You can only call "
               "SCRIPT KILL or SHUTDOWN NOSAVE."), "BUSY: not killed");
    ok(!killed("UNKILLABLE Sorry the script already executed write "
               "commands against the dataset."),
       "UNKILLABLE (SCRIPT KILL's own answer): not killed");
    ok(!killed("NOTBUSY No scripts in execution right now."), "NOTBUSY");
    ok(!killed("ERR Error running script (call to f_ab): @user_script:12: "
               "user_script:12: Script killed by user with SCRIPT KILL"),
       "Redis 6: the words inside a script's own error: not killed");
    ok(!killed("ERR Error running script (call to f_ab): @user_script:: "
               "Script killed by user with SCRIPT KILL..."),
       "Redis 6: a line of no digits");
    ok(!killed("ERR Error running script (call to f_ab): @user_script:3"),
       "Redis 6: cut after the line");
    ok(!killed("ERR Error running script (call to f_ab"),
       "Redis 6: cut in the call");
    ok(!killed("ERR Script killed by user with"), "Redis 7: cut");
    ok(!killed("WRONGTYPE Script killed by user with SCRIPT KILL..."),
       "another code");
    ok(!killed(""), "empty");

    return tap_done();
}
