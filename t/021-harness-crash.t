# The harness fails a file whose nginx worker crashed (died of a signal
# other than the SIGKILL of LG::Stack::kill_workers), even when each of
# its checks passed: a crash otherwise shows only as a closed connection
# or a 503 while the respawned worker connects to Redis.
use strict;
use warnings;
use lib 't/lib';

use Test::More;

my $child = 't/harness/worker-signal.pl';

sub run_child {
    my ($signal) = @_;
    local $ENV{LG_SIGNAL} = $signal;
    my $out = `$^X $child 2>&1`;
    return ($? >> 8, $out);
}

my ($rc, $out) = run_child('SEGV');
isnt($rc, 0, 'a worker killed by SIGSEGV fails the file');
like($out, qr/^ok 2 - the master saw it exit/m, 'though its checks passed');
like($out, qr/a worker crashed .*\n.*exited on signal 11/,
     'the crash is printed');

($rc, $out) = run_child('KILL');
is($rc, 0, 'a worker SIGKILLed (as kill_workers does) does not')
    or diag($out);
unlike($out, qr/a worker crashed/, 'nothing printed');

done_testing;
