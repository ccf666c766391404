# A durable write's continuation at a full durable queue. durable_done()
# ran the write's `then` (which queues the chain's next write) before it
# took the finished write out of the queue: the bound (1024) still
# counted it, and at a full queue draining (the replicas back) the next
# step was lost ("1024 writes already wait for Redis") although it
# replaces its parent. Here, with linegate_redis_wait and the replicas
# stopped, confirms fill the queue with their reservations' releases
# (acknowledged durable writes, each followed by its claim's
# settlement); once the replicas are back every release is done, and so
# is every settlement, none lost.
use strict;
use warnings;
use lib 't/lib';

use Test::More;
use Time::HiRes qw(sleep time);
use Mojo::Promise;
use Mojo::UserAgent;
use LG::Stack;
use LG::Test;
use LG::Provision;

my $s = LG::Stack->new(redis => 'sentinel', WORKERS => 1,
                       REDIS_COMMAND_TIMEOUT => '2s',
                       HTTP_EXTRA => 'linegate_redis_wait 1 50ms;')->start;
ok($s->wait_sentinels_ready(30, 1), 'the sentinels see a replica in sync')
    or BAIL_OUT('no replica');
$s->follow_master;
my $r = $s->redis;
my $p = LG::Provision->new($s);
$p->inventory($p->numbers(1300));
my $ua = Mojo::UserAgent->new(inactivity_timeout => 60, request_timeout => 60,
                              max_connections => 0);

my $t0 = time;
# 1200 preview tokens (12 accounts), each for one confirm
my @jobs;    # [account, token]
for my $i (1 .. 12) {
    my $a = $p->account("acct_full$i", daily => 100000, monthly => 100000);
    my @tx = map {
        $ua->start_p($ua->build_tx(
            POST => $s->url('/accounts/lines/provision-preview')
            => $p->headers($a)));
    } 1 .. 100;
    Mojo::Promise->all(@tx)->then(sub {
        for (@_) {
            my $b = $_->[0]->res->json // {};
            push @jobs, [$a, $b->{preview_token}] if $b->{preview_token};
        }
    })->wait;
}
diag(sprintf '%d tokens in %.1f s', scalar @jobs, time - $t0);

my @pids = map { my $q = $_; map { $s->{pids}{$_} }
                 grep { /^redis_$q$/ } keys %{ $s->{pids} } }
           map { /port=(\d+)/ ? $1 : () }
           grep { defined }
           map { $r->info('replication')->{"slave$_"} } 0 .. 3;
ok(@pids, 'the replicas\' processes: ' . scalar @pids) or BAIL_OUT('none');
# confirms while no replica acknowledges: each claim and each release
# unacknowledged, the release queued as a durable write
my $from = length $s->error_log;
kill 'STOP', @pids;
$t0 = time;
my $n = 0;
while (@jobs) {
    my @batch = splice @jobs, 0, 50;
    my @tx = map {
        $ua->start_p($ua->build_tx(
            POST => $s->url('/accounts/lines/provision-confirm')
            => $p->headers($_->[0]) => json => {preview_token => $_->[1]}));
    } @batch;
    $n += @batch;
    Mojo::Promise->all(@tx)->wait;
    last if (substr $s->error_log, $from) =~ /writes already wait for Redis/;
}
diag(sprintf '%d confirms in %.1f s', $n, time - $t0);
like(substr($s->error_log, $from), qr/writes already wait for Redis/,
     'the durable queue is full');
my $mark = length $s->error_log;
kill 'CONT', @pids;
my ($log, %done);
for (1 .. 100) {
    $log = substr $s->error_log, $mark;
    %done = ();
    $done{$1}++ while $log =~ /durable write "([^"]*)" done/g;
    last if ($done{"a reservation's release"} // 0) >= 1024
        && ($done{"a claim's settlement"} // 0)
           >= $done{"a reservation's release"};
    sleep 0.2;
}
diag(join ', ', map { "$_: $done{$_} done" } sort keys %done);
cmp_ok($done{"a reservation's release"} // 0, '>=', 1024,
       'the replicas back: the queued releases done');
is($done{"a claim's settlement"} // 0, $done{"a reservation's release"},
   'each followed by its claim\'s settlement, done');
my @lost = $log =~ /(durable write "a claim's settlement" lost[^\n]*)/g;
is(scalar @lost, 0, 'none lost at the full queue') or diag($lost[0]);
done_testing;
