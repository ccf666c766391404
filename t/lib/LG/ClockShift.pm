package LG::ClockShift;

# nginx's wall clock moved by a small LD_PRELOAD library, built here, that
# adds the milliseconds written in a file to gettimeofday() in nginx only
# (its cached time, $r->... and the Date header come from it; its timers
# from CLOCK_MONOTONIC, left alone). For what a test would otherwise wait
# for in real time (a 60 s hold) or cannot make happen (a step of the
# host's clock mid-run). Use it before the stack starts:
#
#   use LG::ClockShift qw(shift_clock);   # builds it, or skips the file
#   shift_clock(61_000);                  # nginx 61 s ahead from now on
#   shift_clock(0);

use strict;
use warnings;

use Exporter qw(import);
use LG::Preload;

our @EXPORT_OK = qw(shift_clock);

my $preload;

sub shift_clock {
    my ($ms) = @_;
    $preload->set($ms);
}

$preload = LG::Preload->new(name => 'shift', env => 'LG_CLOCK_SHIFT',
                            libs => ['-ldl'],
                            what => 'the clock shifter', source => <<'C');
#include <dlfcn.h>

/* struct timeval's layout, without <sys/time.h>'s prototype */
struct lg_tv { long sec; long usec; };

int
gettimeofday(struct lg_tv *tv, void *tz)
{
    static int  (*real)(struct lg_tv *, void *);
    char         buf[32];
    int          rc;
    long long    us;

    if (real == NULL) {
        real = (int (*)(struct lg_tv *, void *)) dlsym(RTLD_NEXT,
                                                      "gettimeofday");
    }

    rc = real(tv, tz);

    if (rc != 0 || tv == NULL || lg_file == NULL) {
        return rc;
    }

    if (lg_read(buf, sizeof(buf)) > 0) {
        us = tv->sec * 1000000LL + tv->usec + atoll(buf) * 1000LL;
        tv->sec = (long) (us / 1000000);
        tv->usec = (long) (us % 1000000);
    }

    return rc;
}
C
shift_clock(0);

1;
