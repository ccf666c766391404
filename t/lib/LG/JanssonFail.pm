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
#include <jansson.h>

/* a size the file lists */
static int
lg_listed(size_t size)
{
    char   buf[256], *p, *end;
    long   v;

    if (lg_read(buf, sizeof(buf)) <= 0) {
        return 0;
    }

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
 * jansson's own allocator hook, in the one libjansson the module loads
 * later (this library's dependency, already mapped)
 */
__attribute__((constructor)) static void
lg_init(void)
{
    if (lg_file != NULL) {
        json_set_alloc_funcs(lg_malloc, free);
    }
}
C
jansson_fail();

1;
