package LG::Preload;

# A small LD_PRELOAD library built for a test, and the file through which
# the test tells it what to do (LG::ClockShift, LG::JanssonFail). Use it
# before the stack starts: the library is loaded by every process the
# test starts from then on, and acts only where its source says.
#
#   my $p = LG::Preload->new(name => 'shift', env => 'LG_CLOCK_SHIFT',
#                            source => $c, libs => ['-ldl'],
#                            what => 'the clock shifter');
#   $p->set('61000');     # the file's new content, whole (a rename)

use strict;
use warnings;

use File::Temp qw(tempdir);
use Test::More;

# Builds the library, or skips the test file; the file starts empty and
# its path is in $ENV{<env>}.
sub new {
    my ($class, %o) = @_;
    my $dir = tempdir(CLEANUP => 1);
    # the workers may run as another user (nginx's "user")
    chmod 0755, $dir;

    open my $src, '>', "$dir/$o{name}.c" or die "$dir/$o{name}.c: $!";
    print $src prelude($o{env}), $o{source};
    close $src;

    my $cc = $ENV{CC} // 'cc';
    system($cc, '-shared', '-fPIC', '-O1', '-o', "$dir/$o{name}.so",
           "$dir/$o{name}.c", @{ $o{libs} // [] }) == 0
        or plan skip_all => "$cc could not build $o{what}";

    my $self = bless { file => "$dir/$o{name}.in" }, $class;
    $self->set('');
    $ENV{$o{env}} = $self->{file};
    $ENV{LD_PRELOAD} = join ' ', "$dir/$o{name}.so", $ENV{LD_PRELOAD} // ();
    return $self;
}

# What every such library starts with: lg_file, the file's path, set in
# nginx only (its workers are forks; its setproctitle overwrites the
# environment) before the library's own constructors run; lg_read(), the
# file's content read at each call (the test rewrites it).
sub prelude {
    my ($env) = @_;
    return <<"C";
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

extern char  *program_invocation_short_name;
static char  *lg_file;

__attribute__((constructor(101))) static void
lg_preload_init(void)
{
    const char  *f = getenv("$env");

    if (f && strcmp(program_invocation_short_name, "nginx") == 0) {
        lg_file = strdup(f);
    }
}

/* the file's content, NUL-terminated in buf: its length, or -1 */
static int
lg_read(char *buf, size_t size)
{
    int  fd, n, err;

    err = errno;
    fd = open(lg_file, O_RDONLY);
    n = fd < 0 ? -1 : (int) read(fd, buf, size - 1);
    if (fd >= 0) {
        close(fd);
    }
    errno = err;

    if (n >= 0) {
        buf[n] = '\\0';
    }

    return n;
}

C
}

# written whole, then renamed: the library never reads half of it
sub set {
    my ($self, $content) = @_;
    my $file = $self->{file};
    open my $fh, '>', "$file.new" or die "$file.new: $!";
    print $fh $content;
    close $fh;
    rename "$file.new", $file or die "rename: $!";
}

1;
