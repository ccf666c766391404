# Redis Cluster: a script that meets its slot in migration (TRYAGAIN:
# some of its declared keys on the node, some not) is sent again until
# its command's deadline (linegate_redis_command_timeout, 3 s here,
# counted from its first send), then answered 503 with Retry-After as an
# unavailable store. Before 2026-11-29 it was sent again 6 times 10 ms
# apart, doubling (630 ms in all), whatever the timeout said: a
# workspace's slot that stayed in migration longer than that (a reshard
# moving a slot of many keys) answered the creation 503 well within the
# timeout.
#
# The migration is set by hand (as t/038 does): the workspace's slot
# MIGRATING on its master, IMPORTING on another, no key moved yet. The
# creation's lr_create declares the workspace's keys (some exist) and the
# new request's (not yet): the migrating node answers TRYAGAIN until the
# slot has moved, then MOVED, which is followed.
use strict;
use warnings;
use lib 't/lib';

use Test::More;
use LG::Stack;
use LG::Lines qw(body);
use LG::RedisCluster;
use Time::HiRes qw(sleep time);

my $s = LG::Stack->new(redis => 'cluster', REDIS_COMMAND_TIMEOUT => '3s')
    ->start;
my $l = LG::Lines->new($s);
my $r = $s->redis;

# $slot set migrating from $from to $to, no key moved
sub start_migration {
    my ($slot, $from, $to) = @_;
    my %id = map { $_ => scalar $r->node($_)->cluster('myid') } $from, $to;
    $r->node($to)->cluster('setslot', $slot, 'importing', $id{$from});
    $r->node($from)->cluster('setslot', $slot, 'migrating', $id{$to});
}

# the rest of a slot's migration from $from to $to: its keys, then its
# owner, told to every master
sub finish_migration {
    my ($slot, $from, $to) = @_;
    my $src = $r->node($from);
    my $tid = $r->node($to)->cluster('myid');
    while (my @keys = $src->cluster('getkeysinslot', $slot, 100)) {
        $src->migrate('127.0.0.1', $to, '', 0, 5000, 'KEYS', @keys);
    }
    $r->node($_)->cluster('setslot', $slot, 'node', $tid)
        for $to, $from, grep { $_ ne $to && $_ ne $from } $s->cluster_masters;
}

sub tryagains {
    my ($port) = @_;
    my $e = $r->node($port)->info('errorstats')->{errorstat_TRYAGAIN} // '';
    return $e =~ /count=(\d+)/ ? $1 : 0;
}

# the ASKINGs a node was sent: each try sent again to the node that said
# TRYAGAIN follows one (an ASK's goes to the importing node)
sub askings {
    my ($port) = @_;
    my $c = $r->node($port)->info('commandstats')->{cmdstat_asking} // '';
    return $c =~ /calls=(\d+)/ ? $1 : 0;
}

# a workspace, its slot, its master and another master
sub ws_moving {
    my ($id) = @_;
    my $w = $l->workspace($id);
    my $key = "lg:{ws:$id}";
    my $slot = LG::RedisCluster::keyslot($key);
    my $from = $s->cluster_master_of($key);
    my ($to) = grep { $_ ne $from } $s->cluster_masters;
    # a first creation: the workspace's keys exist, some of them
    $l->answer($l->create($w, body()), 201, 'a first creation');
    return ($w, $slot, $from, $to);
}

subtest 'a migration of 1.5 s within a timeout of 3 s: 201' => sub {
    my ($w, $slot, $from, $to) = ws_moving('org_tryagain_short');
    my $before = tryagains($from);
    start_migration($slot, $from, $to);
    my $t0 = time;
    my ($tx, $done) = $l->during([$w, POST => $LG::Lines::CREATE, body()],
                                 sub {
        return 0 if time - $t0 < 1.5;
        finish_migration($slot, $from, $to);
        return 1;
    }, 10);
    ok($done, 'the migration ended while the creation ran')
        or finish_migration($slot, $from, $to);
    cmp_ok(tryagains($from), '>', $before,
           'the workspace\'s node said TRYAGAIN meanwhile');
    ok($tx, 'answered') or return;
    is($tx->res->code, 201, 'the creation: 201 once the slot moved')
        or diag($tx->res->code . ' ' . $tx->res->body);
    is($s->cluster_master_of("lg:{ws:$w->{id}}"), $to, 'the slot moved');
    my $id = eval { $tx->res->json->{line}{_id} } // '';
    ok(length $id && $r->exists("lg:{ws:$w->{id}}:lr:$id"),
       'its request stored, on the new node');
};

subtest 'a migration longer than the timeout: 503, Retry-After' => sub {
    my ($w, $slot, $from, $to) = ws_moving('org_tryagain_long');
    my $before = askings($from);
    start_migration($slot, $from, $to);
    my ($tx, $done) = $l->during([$w, POST => $LG::Lines::CREATE, body()],
                                 sub { 0 }, 10);
    my $n = askings($from) - $before;
    finish_migration($slot, $from, $to);
    ok($tx, 'answered') or return;
    is($tx->res->code, 503, 'the creation: 503')
        or diag($tx->res->code . ' ' . $tx->res->body);
    ok(defined $tx->res->headers->header('Retry-After'), 'with Retry-After');
    # the module before sent each of the creation's two commands again 6
    # times: lr_create, then the release of what it may have reserved (a
    # TRYAGAIN is a store unavailable, whose outcome the creation does
    # not know), 12 in all
    cmp_ok($n, '>', 12, "sent again past the old 6 tries each ($n times)");
    is($s->cluster_master_of("lg:{ws:$w->{id}}"), $to,
       'the slot moved after it');
    my $b = $l->answer($l->create($w, body()), 201,
                       'a creation after the migration');
    ok($b->{line}{_id}, 'served again');
};

diag(substr($s->error_log, -3000))
    unless Test::More->builder->is_passing;

done_testing;
