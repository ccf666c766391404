package LG::JanssonFail;

# jansson's allocations made to fail in nginx, by a small LD_PRELOAD
# library built here that sets jansson's allocator (json_set_alloc_funcs)
# in nginx only: an allocation fails (NULL, ENOMEM) when its size is one
# written in a file (LG::Preload), so that a test reaches a parse or a
# copy that runs out of memory without starving the rest of the worker
# (nginx's pools, hiredis). Use it before the stack starts:
#
#   use LG::JanssonFail qw(jansson_fail);   # builds it, or skips the file
#   jansson_fail(16384, 9616);              # those sizes fail from now on
#   jansson_fail();                         # none

use strict;
use warnings;

use Exporter qw(import);
use LG::Preload;

our @EXPORT_OK = qw(jansson_fail);

my $preload;

sub jansson_fail {
    my (@sizes) = @_;
    $preload->set(join ' ', @sizes, 0);
}

$preload = LG::Preload->new(name => 'fail', env => 'LG_JANSSON_FAIL',
                            libs => ['-ljansson'],
                            what => 'the allocation failer', source => <<'C');
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <jansson.h>

extern char  *program_invocation_short_name;

static char  *lg_file;

/* a size the file lists, read at each call (the test rewrites it) */
static int
lg_listed(size_t size)
{
    char   buf[256], *p, *end;
    int    fd, n, err;
    long   v;

    err = errno;
    fd = open(lg_file, O_RDONLY);
    n = fd < 0 ? -1 : (int) read(fd, buf, sizeof(buf) - 1);
    if (fd >= 0) {
        close(fd);
    }
    errno = err;

    if (n <= 0) {
        return 0;
    }

    buf[n] = '\0';

    for (p = buf; ; p = end) {
        v = strtol(p, &end, 10);
        if (end == p || v <= 0) {
            return 0;
        }
        if ((size_t) v == size) {
            return 1;
        }
    }
}

static void *
lg_malloc(size_t size)
{
    if (lg_listed(size)) {
        errno = ENOMEM;
        return NULL;
    }

    return malloc(size);
}

/*
 * nginx only (its workers are forks; its setproctitle overwrites env):
 * jansson's own allocator hook, in the one libjansson the module loads
 * later (this library's dependency, already mapped)
 */
__attribute__((constructor)) static void
lg_init(void)
{
    const char  *f = getenv("LG_JANSSON_FAIL");

    if (f && strcmp(program_invocation_short_name, "nginx") == 0) {
        lg_file = strdup(f);
        json_set_alloc_funcs(lg_malloc, free);
    }
}
C
jansson_fail();

1;
