# Redis Cluster: a map of more than 1024 slot ranges is a map. A cluster
# whose slots were moved one by one (rebalances, per-slot moves) gives a
# CLUSTER SLOTS of as many ranges as it has runs of slots, up to 16384.
# A worker kept room for 1024 and refused every larger map ("gave no
# complete slot map", with no reason, asked again every 2 s or less): a
# worker started so never had a map (every request 503), one running
# kept its old map for good. Here slot i is master i % 3's: 16384
# ranges. Requests are served from the start, and a map asked for again
# (after a MOVED, or its period) is taken: after two slots move, the
# second one's key needs no MOVED.
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

# one worker: its map is the one the MOVED counts below are about
my $s = LG::Stack->new(redis => 'cluster', cluster_interleaved => 1,
                       stub => 0, WORKERS => 1,
                       HTTP_EXTRA => $http, SERVER_EXTRA => $server)
    ->start;
my $r = $s->redis;

sub get { return limit_status($s, $_[0]) }

sub moved_on {
    my ($port) = @_;
    my $info = $r->node($port)->info('errorstats');
    return (($info->{errorstat_MOVED} // '') =~ /count=(\d+)/)[0] // 0;
}

# a client key whose limit key is in $slot
sub key_in {
    my ($slot, $prefix) = @_;
    my ($v) = grep { LG::RedisCluster::keyslot(rl_key('hot', $_)) == $slot }
              map { "$prefix$_" } 1 .. 400_000;
    return $v;
}

subtest 'a map of 16384 ranges' => sub {
    my @m = $s->cluster_masters;
    is(scalar @m, 3, 'three masters');
    my $ranges = $r->node($m[0])->cluster('slots');
    is(scalar @$ranges, 16384, 'CLUSTER SLOTS: 16384 ranges');

    # keys over every master: each served, none refused
    my %codes;
    my %masters;
    for my $i (1 .. 150) {
        $codes{get("/hot/?k=many$i")}++;
        # (slot i is master i % 3's)
        $masters{ LG::RedisCluster::keyslot(rl_key('hot', "many$i")) % 3 }++;
    }
    is(scalar keys %masters, 3, 'the keys are on the 3 masters');
    is_deeply(\%codes, {'200 PASSED' => 150}, '150 requests, all served')
        or diag(explain \%codes);

    my $log = $s->error_log;
    like($log, qr/redis cluster: 16384 slot ranges, from /,
         'the worker took the map');
    unlike($log, qr/no complete slot map/, 'no map refused');
};

subtest 'a map asked for again is taken' => sub {
    my @m = $s->cluster_masters;
    my %id = map { $_ => $r->node($_)->cluster('myid') } @m;
    my ($A, $B) = @m;

    # two slots of A, X and Y, and a key of each
    my ($x, $y) = ($s->cluster_slots_of($A))[10, 20];
    my $kx = key_in($x, 'x');
    my $ky = key_in($y, 'y');
    ok(defined $kx && defined $ky, "keys in slots $x and $y of A ($A)");

    # both (empty: never requested) to B on every master, B's claim made newest: every node agrees
    for my $slot ($x, $y) {
        $r->node($_)->cluster('setslot', $slot, 'node', $id{$B}) for @m;
    }
    $r->node($B)->cluster('bumpepoch');
    ok($s->cluster_wait_ok(30), 'the cluster agrees on the move');
    $r->node($A)->config('resetstat');

    # X: A says MOVED, the worker learns it and asks for the map again
    # (no MOVED if the worker's own refresh, every 10 s, came first)
    is(get("/hot/?k=$kx"), '200 PASSED', 'X: on B');
    my $moved = moved_on($A);
    ok($moved <= 1, "MOVED from A: $moved");
    sleep 1;

    # Y: the new map has it on B
    is(get("/hot/?k=$ky"), '200 PASSED', 'Y: on B');
    is(moved_on($A), $moved, 'straight to B: a map asked for after the '
       . 'move was installed');
    unlike($s->error_log, qr/no complete slot map/, 'no map refused');
};

diag(substr($s->error_log, -3000))
    unless Test::More->builder->is_passing;

done_testing;
