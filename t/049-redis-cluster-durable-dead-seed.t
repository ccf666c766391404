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
                       HTTP_EXTRA => 'linegate_redis_wait 1 100ms;')->start;
$s->cluster_wait_ok;
my $dead = $s->{dead_port};
my $p = LG::Provision->new($s);
$p->inventory($p->numbers(5));
my $acct = $p->account('acct_seed');
my $tok = $p->token($acct);

my @pids = map { $s->{pids}{"redis_$_"} // () } $s->cluster_replicas;
ok(@pids, 'the replicas\' processes: ' . scalar @pids) or BAIL_OUT('none');

# the confirm's Stripe call takes 1.5 s: the replicas stop meanwhile,
# its record is not acknowledged and is re-sent as a durable write
$p->fault(latency_ms => 1500);
my $from = length $s->error_log;
my $ua = $s->ua;
my $tx = $ua->build_tx(POST => $s->url('/accounts/lines/provision-confirm')
                       => $p->headers($acct)
                       => json => {preview_token => $tok});
my $done;
$ua->start_p($tx)->then(sub { $done = 1 });
Mojo::IOLoop->timer(0.7 => sub { kill 'STOP', @pids });
Mojo::IOLoop->one_tick until $done;
diag('the confirm answered ' . ($tx->res->code // 'none'));
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
