
/*
 * linegate unit tests: the TAP output every test file prints (ok N,
 * then the plan), one copy for all of them.
 */


#ifndef _LINEGATE_UNIT_TAP_H_INCLUDED_
#define _LINEGATE_UNIT_TAP_H_INCLUDED_


#include <stdio.h>


static int  tests_run;
static int  tests_failed;


static void
ok(int cond, const char *name)
{
    tests_run++;

    if (!cond) {
        tests_failed++;
    }

    printf("%sok %d - %s\n", cond ? "" : "not ", tests_run, name);
}


/* the plan, and main()'s exit status */
static int
tap_done(void)
{
    printf("1..%d\n", tests_run);

    return tests_failed ? 1 : 0;
}


#endif /* _LINEGATE_UNIT_TAP_H_INCLUDED_ */
