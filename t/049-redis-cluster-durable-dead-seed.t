# A durable write waiting on a Redis Cluster does not reconnect nodes
# that serve no slot. lost() leaves such a node alone on purpose (a dead
# seed, a master failed over); the durable writes' retry timer, meant
# for a draining worker's lost connections, reconnected every
# disconnected node without a reconnect timer: while any durable write
# waited, each worker connected to the dead address again about every
# 2 s and logged "connect failed" each time. Here a confirm's reservation
# release (acknowledged, linegate_redis_wait) waits while no replica
# acknowledges, and the dead seed is not connected meanwhile.
use strict;
use warnings;
use lib 't/lib';

use Test::More;
use Time::HiRes qw(sleep);
use LG::Stack;
use LG::Test;
use LG::Provision;
use Mojo::IOLoop;

my $s = LG::Stack->new(redis => 'cluster', dead_seed => 1, WORKERS => 1,
                       REDIS_COMMAND_TIMEOUT => '2s',
                       HTTP_EXTRA => 'linegate_redis_wait 1 500ms;')->start;
$s->cluster_wait_ok;
# every master's replica online (its first sync done): WAIT counts it
for (1 .. 100) {
    last unless grep {
        qx{redis-cli -p $_ INFO replication 2>&1} !~ /slave0:.*state=online/
    } $s->cluster_masters;
    sleep 0.1;
}
my $dead = $s->{dead_port};
my $p = LG::Provision->new($s);
$p->inventory($p->numbers(5));
my @pids = map { $s->{pids}{"redis_$_"} // () } $s->cluster_replicas;
ok(@pids, 'the replicas\' processes: ' . scalar @pids) or BAIL_OUT('none');

# A confirm whose Stripe call takes 2 s: the replicas stop meanwhile,
# once the number is claimed (acknowledged), and its record, not
# acknowledged, is re-sent as a durable write. (A replica slow to
# acknowledge a step before, on a loaded box, is another 503: tried
# again, with another account.)
my ($from, $tx);
for my $try (1 .. 3) {
    my $acct = $p->account("acct_seed$try");
    my $tok = $p->token($acct);
    $p->fault(latency_ms => 2000);
    $from = length $s->error_log;
    my $ua = $s->ua;
    $tx = $ua->build_tx(POST => $s->url('/accounts/lines/provision-confirm')
                        => $p->headers($acct)
                        => json => {preview_token => $tok});
    my ($done, $stopped, $stop);
    $ua->start_p($tx)->then(sub { $done = 1 });
    my $poll;
    $poll = Mojo::IOLoop->recurring(0.02 => sub {
        return unless grep { /^acct_seed$try .* \+\d+$/ }
            $s->redis->zrange('lg:{fleet}:pv:inflight', 0, -1);
        Mojo::IOLoop->remove($poll);
        $stop = Mojo::IOLoop->timer(0.3 => sub {
            kill 'STOP', @pids;
            $stopped = 1;
        });
    });
    Mojo::IOLoop->one_tick until $done;
    Mojo::IOLoop->remove($_) for grep { defined } $poll, $stop;
    $p->clear_faults;
    diag("try $try: the confirm answered " . ($tx->res->code // 'none'));
    last if (substr $s->error_log, $from) =~ /not recorded yet/;
    kill 'CONT', @pids if $stopped;
    sleep 1;
}
my $log;
for (1 .. 40) {
    $log = substr $s->error_log, $from;
    last if $log =~ /durable write .* will retry/;
    sleep 0.1;
}
like($log, qr/durable write .* will retry/, 'a durable write waits');
my $mark = length $s->error_log;
sleep 5;
$log = substr $s->error_log, $mark;
kill 'CONT', @pids;
like($log, qr/durable write .* will retry/, 'it still waits 5 s later');
my $dials = () = $log =~ /redis 127\.0\.0\.1:$dead connect failed/g;
is($dials, 0, 'the dead seed (no slot) not connected meanwhile')
    or diag($log);
# the replicas back: the durable record is acknowledged and done
for (1 .. 100) {
    last if (substr $s->error_log, $mark)
        =~ /durable write "the record of a paid line" done/;
    sleep 0.1;
}
like(substr($s->error_log, $mark),
     qr/durable write "the record of a paid line" done/,
     'the replicas back: the durable record done');

done_testing;
