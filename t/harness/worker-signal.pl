# Run by t/021-harness-crash.t: a stack whose worker gets the signal named
# in $ENV{LG_SIGNAL}; its exit status is the harness's verdict.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../lib";

use Test::More;
use Time::HiRes qw(sleep time);
use LG::Stack;

my $s = LG::Stack->new(stub => 0)->start;
my ($worker) = split ' ', `pgrep -P $s->{pids}{nginx}`;
ok($worker, "a worker ($worker)");
kill $ENV{LG_SIGNAL}, $worker;

# until the master has logged the exit
my $until = time + 10;
sleep 0.05 until $s->error_log =~ /exited on signal/ || time > $until;
like($s->error_log, qr/worker process $worker exited on signal/,
     'the master saw it exit');
done_testing;
