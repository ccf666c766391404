# linegate_redis_wait on a Redis Cluster for a pipeline's acknowledged
# command (issue 10, point 3): a creation's set-up member (ZADD
# lg:{fleet}:lr:setup) is written in one pipeline with the line's index
# (SET lg:line:<id>), each to its slot's master. The member is what the
# reconciliation's sweep finds when a worker dies before relaying the
# line's set-up entry: lost with the fleet's master, an included line
# would never be set up. So it is acknowledged like the commit itself:
# with the fleet master's replica stopped (SIGSTOP), a creation of a
# workspace on another master answers 503 and leaves nothing (no line, no
# member); with the replica back, the same Idempotency-Key gets its 201.
use strict;
use warnings;
use lib 't/lib';

use Test::More;
use LG::Stack;
use LG::Lines qw(body);
use LG::Test qw(eventually);
use Redis;

my $s = LG::Stack->new(redis => 'cluster', REDIS_COMMAND_TIMEOUT => '3s',
                       HTTP_EXTRA => 'linegate_redis_wait 1 300ms;')
    ->start;
my $l = LG::Lines->new($s);

my $SETUP = 'lg:{fleet}:lr:setup';
my $fleet = $s->cluster_master_of($SETUP);

# the replica whose master is $master
sub replica_of {
    my ($master) = @_;
    for my $port ($s->cluster_replicas) {
        my $r = Redis->new(server => "127.0.0.1:$port", reconnect => 0);
        my @role = $r->role;
        $r->quit;
        return $port if $role[0] eq 'slave' && $role[2] == $master;
    }
    return undef;
}

# a workspace whose own slot is not the fleet's master's
my $w;
for (my $i = 1; !$w; $i++) {
    my $id = "org_ack$i";
    $w = $l->workspace($id)
        if $s->cluster_master_of("lg:{ws:$id}") ne $fleet;
}

ok($s->cluster_wait_ok(30, replicas => 1), 'every master has a replica');
my $replica = replica_of($fleet);
ok($replica, "the fleet's master $fleet has replica $replica");

my $tx = $l->create($w, body(channelType => 'phone'),
                    'Idempotency-Key' => 'ack-1');
is($tx->res->code, 201, 'replicas up: 201');
ok(eventually(sub { $l->redis->zcard($SETUP) == 0 }, 10),
   'no set-up member left once relayed');

my $pid = $s->{pids}{"redis_$replica"};
kill 'STOP', $pid;
my $held = $l->create($w, body(channelType => 'phone'),
                      'Idempotency-Key' => 'ack-2');
my $during = $l->redis->zcard($SETUP);
kill 'CONT', $pid;

is($held->res->code, 503,
   'the member not on a replica within 300 ms: 503 (before: 201)');
ok($held->res->headers->header('Retry-After'), 'with Retry-After');
like($s->error_log, qr/a pipeline's command not acknowledged by 1 replicas/,
     'logged: the pipeline\'s command not acknowledged');
ok(eventually(sub { $l->redis->zcard($SETUP) == 0 }, 10),
   "the member dropped (seen $during while the replica was stopped)");
my $list = $l->req($w, GET => '/api/lines/by-user')->res->json;
is(scalar @{ $list->{lines} // [] }, 1, 'no line made: still one');

ok($s->cluster_wait_ok(30, replicas => 1), 'the replica back');
$tx = $l->create($w, body(channelType => 'phone'),
                 'Idempotency-Key' => 'ack-2');
is($tx->res->code, 201, 'the same key once the replica is back: 201');
$list = $l->req($w, GET => '/api/lines/by-user')->res->json;
is(scalar @{ $list->{lines} // [] }, 2, 'two lines');
ok(eventually(sub { $l->redis->zcard($SETUP) == 0 }, 10),
   'no set-up member left');

done_testing();
