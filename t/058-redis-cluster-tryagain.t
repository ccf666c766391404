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
#
# A step refused so until its deadline never ran: nothing to release. A
# creation (lr_create) and a confirm (pv_reserve, the account's slot in
# migration) answer 503 at the timeout, within 1.5 times it, nothing of
# them left in Redis, and the same Idempotency-Key or preview token works
# once the migration ended. Before 2026-11-29 the release of what the
# step might have reserved met the same migration: 503 after twice the
# timeout, and the creation's owner index, journal member and release
# mark left behind.
use strict;
use warnings;
use lib 't/lib';

use Test::More;
use LG::Stack;
use LG::Lines qw(body);
use LG::RedisCluster;
use LG::Provision;
use LG::Test qw(eventually);
use Time::HiRes qw(sleep time);

my $s = LG::Stack->new(redis => 'cluster', REDIS_COMMAND_TIMEOUT => '3s')
    ->start;
my $l = LG::Lines->new($s);
my $p = LG::Provision->new($s);
my $r = $s->redis;

# linegate_redis_command_timeout, s: a refused step answers within 1.5
# times it (twice it before 2026-11-29), after it was waited for
my $TIMEOUT = 3;

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
    # times: lr_create, then the release of what it may have reserved,
    # 12 in all (lr_create alone since: refused, it reserved nothing)
    cmp_ok($n, '>', 12, "sent again past the old 6 tries each ($n times)");
    is($s->cluster_master_of("lg:{ws:$w->{id}}"), $to,
       'the slot moved after it');
    my $b = $l->answer($l->create($w, body()), 201,
                       'a creation after the migration');
    ok($b->{line}{_id}, 'served again');
};

# the members and keys a creation of workspace $ws writes before
# lr_create, other than those of the requests @ids: the owner index
# lg:line:<id>, the set-up member "<W> <id> <nonce>", the journal's
# "<W> <id>"; and the release mark lg:{ws:W}:lrvoid:<id>
sub creation_left {
    my ($ws, @ids) = @_;
    my %req = map { $_ => 1 } @ids;
    my @left = grep { !$req{(split / /)[1]} }
               grep { /^\Q$ws\E / }
               map { $r->zrange($_, 0, -1) }
               'lg:{fleet}:lr:setup', 'lg:{fleet}:lr:inflight';
    push @left, grep { ($r->get($_) // '') eq $ws && !$req{substr $_, 8} }
                $r->keys('lg:line:*');
    push @left, $r->keys("lg:{ws:$ws}:lrvoid:*");
    return @left;
}

subtest 'a creation refused past the timeout: 503 at once, nothing held'
    => sub {
    my ($w, $slot, $from, $to) = ws_moving('org_tryagain_held');
    my $ws = $w->{id};
    my @ids = $l->request_ids($w);
    my %idem = ('Idempotency-Key' => 'tryagain-held-1');
    start_migration($slot, $from, $to);
    my $t0 = time;
    my ($tx) = $l->during([$w, POST => $LG::Lines::CREATE, body(), %idem],
                          sub { 0 }, 10);
    my $took = time - $t0;
    finish_migration($slot, $from, $to);
    ok($tx, 'answered') or return;
    is($tx->res->code, 503, 'the creation: 503')
        or diag($tx->res->code . ' ' . $tx->res->body);
    ok(defined $tx->res->headers->header('Retry-After'), 'with Retry-After');
    cmp_ok($took, '>', $TIMEOUT * 0.8,
           sprintf('after lr_create was sent again (%.2f s)', $took));
    cmp_ok($took, '<', $TIMEOUT * 1.5,
           sprintf('within 1.5 times the timeout: no release waited for '
                   . '(%.2f s)', $took));
    is($s->cluster_master_of("lg:{ws:$ws}"), $to, 'the slot moved after it');
    # the writes sent after the answer (durable DEL and ZREMs) land
    my @left;
    ok(eventually(sub { !(@left = creation_left($ws, @ids)) }, 5),
       'no owner index, set-up or journal member, release mark left')
        or diag("@left");
    ok(!defined $l->pending($w), 'no pending marker');
    is_deeply([$r->keys("lg:{ws:$ws}:idem:*")], [],
              'the idempotency key not held');
    is_deeply([$l->request_ids($w)], \@ids, 'no request made');
    my $b = $l->answer($l->create($w, body(), %idem), 201,
                       'the same Idempotency-Key after the migration');
    ok($b->{line}{_id}, 'its request made');
    $b = $l->answer($l->create($w, body()), 201, 'a new creation');
    ok($b->{line}{_id}, 'served');
};

subtest 'a confirm refused past the timeout: 503 at once, nothing held'
    => sub {
    my $fleet = $s->cluster_master_of('lg:{fleet}:inventory');
    my $a;
    for my $i (1 .. 200) {
        my $id = "acct_tryagain_$i";
        next if $s->cluster_master_of("lg:{acct:$id}") eq $fleet;
        $a = $p->account($id, daily => 5, card => 1);
        last;
    }
    ok($a, 'an account apart from the fleet\'s master') or return;
    $p->inventory($p->numbers(2, 628561));
    my $akey = "lg:{acct:$a->{id}}";
    my $slot = LG::RedisCluster::keyslot($akey);
    my $from = $s->cluster_master_of($akey);
    my ($to) = grep { $_ ne $from && $_ ne $fleet } $s->cluster_masters;
    my $tok = $p->token($a);
    # pv_reserve names the account's five keys, some not written yet: the
    # migrating node says TRYAGAIN until the slot has moved
    ok($r->exists($akey) && !$r->exists("$akey:prov"),
       'the account exists, its windows not yet');
    start_migration($slot, $from, $to);
    my $t0 = time;
    my ($tx) = $p->during($p->confirm_req($a, $tok), sub { 0 }, 10);
    my $took = time - $t0;
    finish_migration($slot, $from, $to);
    ok($tx, 'answered') or return;
    is($tx->res->code, 503, 'the confirm: 503')
        or diag($tx->res->code . ' ' . $tx->res->body);
    ok(defined $tx->res->headers->header('Retry-After'), 'with Retry-After');
    cmp_ok($took, '>', $TIMEOUT * 0.8,
           sprintf('after pv_reserve was sent again (%.2f s)', $took));
    cmp_ok($took, '<', $TIMEOUT * 1.5,
           sprintf('within 1.5 times the timeout: no release waited for '
                   . '(%.2f s)', $took));
    ok(eventually(sub { !@{ $p->intents($a->{id}) } }, 5),
       'its intent dropped');
    $p->nothing_held($a->{id}, 'after the 503');
    my $c = $p->answer($p->confirm($a, $tok), 200,
                       'the same token after the migration');
    my ($line) = values %{ $p->lines($a->{id}) };
    ok($line && $c->{phone_number}
       && $line->{phone_number} eq $c->{phone_number}, 'its line recorded');
};

diag(substr($s->error_log, -3000))
    unless Test::More->builder->is_passing;

done_testing;
