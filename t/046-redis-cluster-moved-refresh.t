# Redis Cluster: a CLUSTER SLOTS answered after a MOVED does not put the
# slot's old owner back. A worker asks a master (C) for the map; before
# C answers (C SIGSTOPped, the request in its socket), a slot moves from
# A to B and a request for a key of it is answered MOVED by A, which the
# worker follows and learns. C's reply, when it comes, still names A (C
# does not know of the move: B's claim has an older config epoch than
# A's, so C keeps A until B's epoch is bumped). The next request for the
# key goes to B at once: A answers no second MOVED.
use strict;
use warnings;
use lib 't/lib';

use Test::More;
use Time::HiRes qw(sleep);
use LG::Stack;
use LG::Test ();
use LG::Limit qw(rl_key hot_location_conf limit_status);
use LG::RedisCluster;

my $dir = LG::Test::public_dir('file.txt' => "ok\n");

my ($http, $server) = hot_location_conf($dir);

# one worker: one map, one CLUSTER SLOTS out at a time. C is stopped
# for up to a refresh round (10 s a node, 3 nodes; longer on a loaded
# machine): no node may be declared failed meanwhile, and the worker
# neither times the CLUSTER SLOTS out nor drops C for an unanswered
# keepalive PING (which would also be bytes waiting in C's socket).
my $s = LG::Stack->new(redis => 'cluster', stub => 0, WORKERS => 1,
                       cluster_node_timeout => 120000,
                       REDIS_COMMAND_TIMEOUT => '60s',
                       REDIS_KEEPALIVE => '60s',
                       HTTP_EXTRA => $http, SERVER_EXTRA => $server)
    ->start;
my $r = $s->redis;

sub get { return limit_status($s, $_[0]) }

# a node's config epoch and id, from its own line of CLUSTER NODES
sub me {
    my ($port) = @_;
    my ($line) = grep { /\bmyself\b/ }
                 split /\n/, $r->node($port)->cluster('nodes');
    my @f = split ' ', $line;
    return ($f[0], $f[6]);
}

sub moved_on {
    my ($port) = @_;
    my $info = $r->node($port)->info('errorstats');
    return (($info->{errorstat_MOVED} // '') =~ /count=(\d+)/)[0] // 0;
}

# unread bytes in C's end of a worker's connection: a command waiting
# (a replica's REPLCONF ACKs wait there too: only nginx's count)
sub waiting_on {
    my ($port) = @_;
    my %nginx = map { /:(\d+)\s+\S+:$port\s.*"nginx"/ ? ($1 => 1) : () }
                `ss -tnpH state established '( dport = :$port )'`;
    for (`ss -tnH state established '( sport = :$port )'`) {
        my ($recvq, undef, undef, $peer) = split ' ';
        return 1 if $recvq && $peer =~ /:(\d+)$/ && $nginx{$1};
    }
    return 0;
}

my $C_PID;
END { kill 'CONT', $C_PID if $C_PID }

subtest 'a late CLUSTER SLOTS after a MOVED' => sub {
    ok($s->cluster_wait_ok(30), 'the cluster is ok');
    my @m = $s->cluster_masters;
    is(scalar @m, 3, 'three masters');

    # A: the master with the newest config epoch (it keeps its slot in
    # C's view when B takes it without a bump), B another one, C the third
    my %id;
    my %epoch;
    ($id{$_}, $epoch{$_}) = me($_) for @m;
    my ($A, $B, $C) = sort { $epoch{$b} <=> $epoch{$a} } @m;
    ok($epoch{$A} > $epoch{$B}, "A $A (epoch $epoch{$A}) newer than "
       . "B $B ($epoch{$B}); C $C");

    # a key of A's first slot, never written (A may give an empty slot)
    my $slot = ($s->cluster_slots_of($A))[0];
    my ($v) = grep { LG::RedisCluster::keyslot(rl_key('hot', $_)) == $slot }
              map { "k$_" } 1 .. 200_000;
    ok(defined $v, "a key in slot $slot of A");
    # a key of B's, to see that the worker has its map
    my $bslot = ($s->cluster_slots_of($B))[0];
    my ($w) = grep { LG::RedisCluster::keyslot(rl_key('hot', $_)) == $bslot }
              map { "w$_" } 1 .. 200_000;
    ok(LG::Test::eventually(sub { get("/hot/?k=$w") eq '200 PASSED' }, 15),
       'the worker has the map');

    # C stopped, until the worker's CLUSTER SLOTS waits in its socket
    $C_PID = $s->{pids}{"redis_$C"};
    kill 'STOP', $C_PID;
    ok(LG::Test::eventually(sub { waiting_on($C) }, 60),
       'a CLUSTER SLOTS waits on the stopped C') or return;

    # the slot to B: B claims it (its epoch unchanged), A gives it up
    $r->node($B)->cluster('setslot', $slot, 'node', $id{$B});
    $r->node($A)->cluster('setslot', $slot, 'node', $id{$B});
    $r->node($A)->config('resetstat');

    is(get("/hot/?k=$v"), '200 PASSED', 'the key: A said MOVED, B answered');
    is(moved_on($A), 1, 'one MOVED from A');

    # C answers the CLUSTER SLOTS asked before the move: slot -> A
    kill 'CONT', $C_PID;
    undef $C_PID;
    ok(LG::Test::eventually(sub { !waiting_on($C) }, 15), 'C answered');
    sleep 0.5;
    my ($c_view) = grep { $_->[0] <= $slot && $slot <= $_->[1] }
                   @{ $r->node($C)->cluster('slots') };
    is($c_view->[2][1], $A, 'C still names A for the slot (a stale map)');

    is(get("/hot/?k=$v"), '200 PASSED', 'the key again');
    is(moved_on($A), 1, 'straight to B: no second MOVED from A (the late '
       . 'reply did not put A back)')
        or diag(join ', ', map { my $p = $_; "$p sees " . join '/',
                    map { "$_->[0]-$_->[1]:$_->[2][1]" }
                    grep { $_->[0] <= $slot && $slot <= $_->[1] }
                    @{ $r->node($p)->cluster('slots') } } $A, $B, $C);

    # B's claim made newest: C learns the move, the cluster agrees again
    $r->node($B)->cluster('bumpepoch');
    ok($s->cluster_wait_ok(30), 'the cluster is ok after');
};

diag(substr($s->error_log, -3000))
    unless Test::More->builder->is_passing;

done_testing;
