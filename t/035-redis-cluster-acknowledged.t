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
# With the workspace master's replica stopped instead, lr_create's own
# WAIT falls short: 503, the line released (lr_release), and its set-up
# member dropped at once, not left for the sweep's 60 s. The set-up
# entry's durable XADD, met with ASK (its slot migrating), follows it at
# once and is acknowledged on the node it went to.
use strict;
use warnings;
use lib 't/lib';

use Test::More;
use LG::Stack;
use LG::Lines qw(body);
use LG::Test qw(eventually);
use LG::RedisCluster;
use Redis;

# as t/038: WAIT's timeout 2 s within a command timeout of 3 s (a loaded
# machine's replica may take longer to acknowledge)
my $s = LG::Stack->new(redis => 'cluster', REDIS_COMMAND_TIMEOUT => '3s',
                       HTTP_EXTRA => 'linegate_redis_wait 1 2s;')
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

sub lines_of { scalar @{ $l->list($_[0])->res->json->{lines} // [] } }

# a creation with the replica of $master stopped (SIGSTOP): its answer
sub create_held {
    my ($master, $key, $ws) = @_;
    my $replica = replica_of($master);
    ok($replica, "master $master has replica $replica") or return;
    my $pid = $s->{pids}{"redis_$replica"};
    kill 'STOP', $pid;
    my $tx = $l->create($ws // $w, body(channelType => 'phone'),
                        'Idempotency-Key' => $key);
    kill 'CONT', $pid;
    return $tx;
}

subtest 'the fleet master\'s replica stopped: the member not acknowledged'
    => sub {
    my $tx = $l->create($w, body(channelType => 'phone'),
                        'Idempotency-Key' => 'ack-1');
    is($tx->res->code, 201, 'replicas up: 201');
    ok(eventually(sub { $l->redis->zcard($SETUP) == 0 }, 10),
       'no set-up member left once relayed');

    my $held = create_held($fleet, 'ack-2') or return;
    is($held->res->code, 503,
       'the member not on a replica within 2 s: 503 (before: 201)');
    ok($held->res->headers->header('Retry-After'), 'with Retry-After');
    like($s->error_log,
         qr/a pipeline's command not acknowledged by 1 replicas/,
         'logged: the pipeline\'s command not acknowledged');
    ok(eventually(sub { $l->redis->zcard($SETUP) == 0 }, 10),
       'the member dropped');
    is(lines_of($w), 1, 'no line made: still one');

    ok($s->cluster_wait_ok(30, replicas => 1), 'the replica back');
    $tx = $l->create($w, body(channelType => 'phone'),
                     'Idempotency-Key' => 'ack-2');
    is($tx->res->code, 201, 'the same key once the replica is back: 201');
    is(lines_of($w), 2, 'two lines');
    ok(eventually(sub { $l->redis->zcard($SETUP) == 0 }, 10),
       'no set-up member left');
};

subtest 'the workspace master\'s replica stopped: released, member dropped'
    => sub {
    my $held = create_held($s->cluster_master_of("lg:{ws:$w->{id}}"),
                           'ack-3') or return;
    is($held->res->code, 503, 'lr_create not on a replica: 503');
    like($s->error_log, qr/lr_create acknowledged by 0 of 1 replicas/,
         'logged');
    # the sweep (linegate_reconcile's, 60 s at least for these members)
    # would take it too: at once here, once lr_release answered
    ok(eventually(sub { $l->redis->zcard($SETUP) == 0 }, 5),
       'the set-up member dropped within 5 s, not left for the sweep');
    is(lines_of($w), 2, 'the line released: still two');

    ok($s->cluster_wait_ok(30, replicas => 1), 'the replica back');
    my $tx = $l->create($w, body(channelType => 'phone'),
                        'Idempotency-Key' => 'ack-3');
    is($tx->res->code, 201, 'the same key: 201');
    is(lines_of($w), 3, 'three lines');
};

# A pipeline's acknowledged command covered by a later one on its node
# (the set-up member, covered by the journal member's ZADD on the fleet's
# master) has no WAIT of its own: the later one's answers for both. When
# that later command is redirected (ASK: the fleet's slot in migration,
# the journal's key moved already, the set-up key not yet), its WAIT on
# the first node still answers for the member written there. It used to
# be dropped (it answers for a node the redirected command left), so the
# member went unacknowledged and the creation answered 201 with the
# fleet master's replica stopped.
subtest 'a covering command redirected: its first node\'s WAIT still counts'
    => sub {
    my $r = $l->redis;
    # a workspace of its own, its slot away from the fleet's master
    my $v;
    for (my $i = 1; !$v; $i++) {
        $v = $l->workspace("org_ackmig$i")
            if $s->cluster_master_of("lg:{ws:org_ackmig$i}") ne $fleet;
    }
    my $slot = LG::RedisCluster::keyslot($SETUP);
    my ($to) = grep { $_ ne $fleet } $s->cluster_masters;
    my $from_id = $r->node($fleet)->cluster('myid');
    my $to_id = $r->node($to)->cluster('myid');

    # the set-up key on the fleet's master, the journal's key not there
    $r->zadd($SETUP, 4102444800000, 'org_none 000000000000000000000000');
    $r->del('lg:{fleet}:lr:inflight');
    $r->node($to)->cluster('setslot', $slot, 'importing', $from_id);
    $r->node($fleet)->cluster('setslot', $slot, 'migrating', $to_id);

    my $from_log = length $s->error_log;
    my $held = create_held($fleet, 'ack-mig', $v);
    my $code = $held ? $held->res->code : 0;

    # the rest of the migration: every key of the slot, then its owner
    my $src = $r->node($fleet);
    while (my @keys = $src->cluster('getkeysinslot', $slot, 100)) {
        $src->migrate('127.0.0.1', $to, '', 0, 5000, 'KEYS', @keys);
    }
    $r->node($_)->cluster('setslot', $slot, 'node', $to_id)
        for $to, $fleet, grep { $_ ne $to && $_ ne $fleet }
                          $s->cluster_masters;

    is($code, 503, 'the member not on the first node\'s replica: 503 '
                   . '(before: 201)');
    like(substr($s->error_log, $from_log),
         qr/a pipeline's command not acknowledged by 1 replicas/, 'logged');
    $r->zrem($SETUP, 'org_none 000000000000000000000000');
    ok($s->cluster_wait_ok(30, replicas => 1), 'the replica back');
    my $tx = $l->create($v, body(channelType => 'phone'),
                        'Idempotency-Key' => 'ack-mig');
    is($tx->res->code, 201, 'the same key, the slot moved: 201')
        or note $tx->res->body;
};

# On a cluster nginx relays an included line's set-up entry itself: a
# durable XADD to lg:provisioning, acknowledged (WAIT on its master). The
# stream's slot migrating, the stream moved already, its master answers
# ASK: the write follows it at once (ASKING, then the XADD, on the
# importing node), and its WAIT goes with it, the first node's WAIT (a
# node without the write) not counted. Before: sent again every 100 ms to
# 2 s to the first node, answered ASK each time until the migration
# ended.
subtest 'a set-up entry meets ASK: followed, acknowledged there' => sub {
    my $r = $l->redis;
    my $STREAM = 'lg:provisioning';
    ok($s->cluster_wait_ok(30, replicas => 1), 'every master has a replica');
    my $v;
    for (my $i = 1; !$v; $i++) {
        $v = $l->workspace("org_ackask$i")
            if $s->cluster_master_of("lg:{ws:org_ackask$i}")
               ne $s->cluster_master_of($STREAM);
    }
    my $slot = LG::RedisCluster::keyslot($STREAM);
    my $from = $s->cluster_master_of($STREAM);
    my ($to) = grep { $_ ne $from } $s->cluster_masters;
    my %id = map { $_ => scalar $r->node($_)->cluster('myid') } $from, $to;
    # the stream (one entry if none yet) moved to the importing node
    $r->xadd($STREAM, '*', probe => 1) unless $r->exists($STREAM);
    $r->node($to)->cluster('setslot', $slot, 'importing', $id{$from});
    $r->node($from)->cluster('setslot', $slot, 'migrating', $id{$to});
    $r->node($from)->migrate('127.0.0.1', $to, '', 0, 5000, 'KEYS', $STREAM);
    my $before = $r->xlen($STREAM);

    my $mark = length $s->error_log;
    my $tx = $l->create($v, body(channelType => 'phone'));
    is($tx->res->code, 201, 'an included line: 201') or diag($tx->res->body);
    my $lid = eval { $tx->res->json->{line}{_id} } // '-';
    my $entry = qr/durable write "a line's set-up entry"/;
    ok(eventually(sub { substr($s->error_log, $mark)
                        =~ /$entry done \(attempt 1\)/ }, 5),
       'its set-up entry written at the first attempt, the slot migrating')
        or diag(substr $s->error_log, $mark);
    unlike(substr($s->error_log, $mark), qr/$entry (?:not answered|acknow)/,
           'never sent again');
    is($r->xlen($STREAM), $before + 1, "one entry more, on $to");
    ok(grep({ ($_->[1][3] // '') eq $lid } $r->xrange($STREAM, '-', '+')),
       'the line\'s');
    ok(eventually(sub { !grep { /\Q$lid\E/ } $r->zrange($SETUP, 0, -1) },
                  5), 'its set-up member dropped once it was there');

    # the end of the migration: the slot's other keys, then its owner
    my $src = $r->node($from);
    while (my @keys = $src->cluster('getkeysinslot', $slot, 100)) {
        $src->migrate('127.0.0.1', $to, '', 0, 5000, 'KEYS', @keys);
    }
    $r->node($_)->cluster('setslot', $slot, 'node', $id{$to})
        for $to, $from, grep { $_ ne $to && $_ ne $from }
                        $s->cluster_masters;
    ok($s->cluster_wait_ok(30), 'the cluster is ok');
};

# A pipeline's WAIT answered with an error (the fleet master's ACL
# without +wait: NOPERM), as t/048 for a single command: the error is
# logged as the error it is, naming WAIT and the pipeline, not read as
# "0 replicas" (the "unacknowledged" metric); the pipeline fails, so the
# creation answers 503 with Retry-After before lr_create runs, and what
# the pipeline wrote (the index, the set-up and journal members) is taken
# back: nothing of the request stays. WAIT allowed again, the same key
# gets its 201.
subtest 'a pipeline\'s WAIT answers an error: 503, nothing left' => sub {
    my $r = $l->redis;
    my $INFLIGHT = 'lg:{fleet}:lr:inflight';
    ok($s->cluster_wait_ok(30, replicas => 1), 'every master has a replica');
    # the fleet's master again (the migration above may have moved it)
    my $fm = $s->cluster_master_of($SETUP);
    my $v;
    for (my $i = 1; !$v; $i++) {
        $v = $l->workspace("org_ackerr$i")
            if $s->cluster_master_of("lg:{ws:org_ackerr$i}") ne $fm;
    }
    my $metric = sub {
        $s->ua->get($s->url('/metrics'))->res->body
            =~ /^linegate_redis_errors_total\{kind="unacknowledged"\} (\d+)/m;
        return $1 // 0;
    };
    ok(eventually(sub { $r->zcard($SETUP) == 0 }, 10),
       'no set-up member before');
    my %before = (lines => lines_of($v), index => scalar $r->keys('lg:line:*'),
                  inflight => $r->zcard($INFLIGHT),
                  unacked => $metric->());

    is($r->node($fm)->acl('setuser', 'default', '-wait'), 'OK',
       "WAIT refused to linegate's user on the fleet's master $fm");
    my $mark = length $s->error_log;
    my $tx = $l->create($v, body(channelType => 'phone'),
                        'Idempotency-Key' => 'ack-err');
    my $log = substr $s->error_log, $mark;
    $l->error_is($tx, 503, 'STORE_UNAVAILABLE', 'the pipeline failed');
    ok($tx->res->headers->header('Retry-After'), 'with Retry-After');
    like($log, qr/redis\ error:\ "NOPERM[^"]*wait[^"]*"
                  \ on\ WAIT\ after\ a\ pipeline's\ command/x,
         'the log names the error, WAIT and the pipeline');
    unlike($log, qr/a pipeline's command not acknowledged/,
           'not "not acknowledged" (0 replicas)');
    is($metric->(), $before{unacked}, 'not counted as unacknowledged');
    unlike($log, qr/lr_create/, 'lr_create never ran');
    ok(eventually(sub { $r->zcard($SETUP) == 0 }, 5),
       'the set-up member taken back');
    ok(eventually(sub { $r->zcard($INFLIGHT) == $before{inflight} }, 5),
       'the journal member taken back');
    ok(eventually(sub { $r->keys('lg:line:*') == $before{index} }, 5),
       'the index taken back');
    is(lines_of($v), $before{lines}, 'no line made');
    unlike(substr($s->error_log, $mark), qr/durable write .* given up/,
           'the removals done, none given up');

    is($r->node($fm)->acl('setuser', 'default', '+wait'), 'OK',
       'WAIT allowed again');
    $tx = $l->create($v, body(channelType => 'phone'),
                     'Idempotency-Key' => 'ack-err');
    is($tx->res->code, 201, 'the same key: 201') or diag($tx->res->body);
    is(lines_of($v), $before{lines} + 1, 'one line');
};

# a WAIT holds the replies of the commands after it on its connection,
# the keepalive PING's too: a PING behind a WAIT is given until that
# WAIT's timeout, plus the interval, before the connection is called hung
# (before: dropped and reconnected, failing every command in flight on it)
unlike($s->error_log, qr/keepalive PING unanswered/,
       'no connection dropped for a PING held behind a WAIT');

done_testing();
