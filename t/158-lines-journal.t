# The Lines API's journal of paid add-ons in flight (issue 10, the
# Provisioning API's claims journal applied to the Lines API): no
# reservation is ever without its member "<W> <id>" of
# lg:{fleet}:lr:inflight. On one Redis lr_create writes it with the
# reservation; on a cluster (another slot) nginx writes it before
# lr_create, with the owner index, and removes it when lr_create answers
# anything but a reservation. It is removed (a durable ZREM) once
# lr_invoice_store or lr_release answered. A refused journal write
# reserves nothing and makes no Stripe call (503). A worker killed
# anywhere after lr_create ran (even with lr_create still queued at a
# stalled Redis, which runs it after the worker died) is swept by a
# reconciliation run one slot a step (the members, the workspace's read,
# lr_journal_settle) into exactly one worker_lost entry.
use strict;
use warnings;
use lib 't/lib';

use Test::More;
use Digest::SHA ();
use Time::HiRes qw(sleep time);
use Redis;
use POSIX ();
use Time::Local qw(timegm);
use LG::Stack;
use LG::Test qw(:DEFAULT eventually);
use LG::Lines qw(body);

# the finalize held by the stub while the workers are killed (t/235 says
# why it outlasts any slow machine); the entries a run queues are left on
# the stream (linegate_reconcile_delay), so that two runs can be counted
my $HOLD = 8000;
# (the Redis command timeout outlasts the last subtest's busy Redis:
# lr_create must still be in flight, not timed out, when its worker dies)
my $s = LG::Stack->new(STRIPE_TIMEOUT => '15s', REDIS_COMMAND_TIMEOUT => '5s',
                       HTTP_EXTRA => 'linegate_reconcile_delay 1h; '
                           . 'linegate_reconcile_lost_after 1s;')->start;
my $l = LG::Lines->new($s);
my $r = $s->redis;
my $J = 'lg:{fleet}:lr:inflight';
my $EMAIL = body(channelType => 'email', email => 'j@example.com');

sub members {
    my ($w) = @_;
    return grep { index($_, "$w->{id} ") == 0 } $r->zrange($J, 0, -1);
}

sub lost_of {
    my ($w) = @_;
    return grep { ($_->{workspace} // '') eq $w->{id} }
           map { +{ @{ $_->[1] } } }
           $r->xrange('lg:{fleet}:reconcile', '-', '+');
}

sub run {
    my $tx = $s->op(POST => '/reconciliation/run');
    is($tx->res->code, 200, 'run answered 200') or diag $tx->res->body;
    return $tx;
}

# "<1.2> [0 127.0.0.1:1] "EVALSHA" "sha" "2" "k1" "k2" ...": its KEYS[]
sub script_keys {
    my ($line) = @_;
    my @a = map { s/\\"/"/gr } $line =~ /"((?:[^"\\]|\\.)*)"/g;
    return () unless @a > 2 && $a[0] =~ /^EVAL(?:SHA)?$/i;
    return @a[3 .. 2 + $a[2]];
}

# where lr_create's EVALSHA is in $cmds, its id known: KEYS[4] its mark
sub create_at {
    my ($cmds, $w, $id) = @_;
    return (grep { my @k = script_keys($cmds->[$_]);
                   @k > 3 && $k[3] eq "lg:{ws:$w->{id}}:lrvoid:$id" }
            0 .. $#$cmds)[0];
}

my $CLUSTER = $s->topology eq 'cluster';

# a paid add-on of $w created with Idempotency-Key $key, its workers
# killed while the stub holds its finalize (then drops the answer;
# %fault: after_commit => 1 has Stripe finalize it first): 1 when so.
# The creation must reach its finalize within linegate_reconcile_lost_after
# (1 s here), or it gives up by design (released, its draft discarded,
# its key freed) and no worker is killed: on a loaded machine that
# happens (t/235 met it), and the round is set up again once the release
# is done, at most 3 rounds.
sub killed_finalizing {
    my ($w, $key, %fault) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    my ($killed, $done);
    for my $round (1 .. 3) {
        my $from = length $s->error_log;
        $l->fault(path_prefix => '/v1/invoices/', latency_ms => $HOLD,
                  drop => 1, %fault);
        $killed = 0;
        (undef, $done) = $l->during([$w, POST => '/api/line-requests',
                                     $EMAIL, 'Idempotency-Key' => $key],
                                    sub {
            return 0 unless members($w) && $s->stub_held(qr{/finalize$});
            $killed = $s->kill_workers;
            return 1;
        }, 60);
        $l->clear_faults;
        last if $done && $killed;
        last unless !$done && $round < 3 && substr($s->error_log, $from)
            =~ /outlived linegate_reconcile_lost_after before its invoice/;
        diag("round $round: the creation outlived "
             . 'linegate_reconcile_lost_after before its finalize (a slow '
             . 'machine), released: set up again');
        last unless eventually(sub {
            !(() = $l->request_ids($w)) && !members($w)
            && !(() = $r->keys("lg:{ws:$w->{id}}:idem:*")) }, 30);
    }
    return ok($done && $killed, 'the workers were killed while Stripe billed');
}

subtest 'the journal: paid add-ons only, with the reservation, gone after '
      . 'the store' => sub {
    my $w = $l->workspace('org_j1');
    $l->answer($l->create($w, body()), 201, 'an included line');
    ok(eventually(sub { !members($w) }, 5),
       'an included line: no journal member left');

    my $tx;
    my ($cmds) = $s->redis_traffic(sub {
        $tx = $l->create($w, $EMAIL);
    });
    $l->answer($tx, 201, 'a paid add-on');
    my $id = $tx->res->json->{line}{_id};
    my $create = create_at($cmds, $w, $id);
    ok(defined $create, 'lr_create seen') or diag "@$cmds";
    my @ck = defined $create ? script_keys($cmds->[$create]) : ();
    my @own = grep { my @k = script_keys($_); "@k" eq $J } @$cmds;
    is(scalar @own, 0, 'no one-key journal step of its own');
    my @zadd = grep { /"zadd" "\Q$J\E" "\d+" "\Q$w->{id} $id\E"/i } @$cmds;
    my $zadd = (grep { $cmds->[$_] =~ /"zadd" "\Q$J\E"/i } 0 .. $#$cmds)[0];
    if ($CLUSTER) {
        ok(!grep({ $_ eq $J } @ck),
           'a cluster: lr_create does not declare the journal (its slot)');
        is(scalar @zadd, 1, 'the member written once, by nginx')
            or diag "@$cmds";
        ok(defined $zadd && defined $create && $zadd < $create,
           'before lr_create (with the owner index)') or diag "@$cmds";
    } else {
        is($ck[-1], $J, 'one Redis: lr_create declares the journal');
        is(scalar @zadd, 0, 'and writes the member itself: no ZADD of it')
            or diag "@$cmds";
    }
    my @at = map { my $i = $_; (grep { $cmds->[$_] =~ $i } 0 .. $#$cmds)[0] }
             # the store (lr_invoice_store: the request, then its key)
             qr/"\Qlg:{ws:$w->{id}}:lr:$id\E" "\Qlg:{ws:$w->{id}}:idem:\E/,
             qr/"zrem" "\Q$J\E" "\Q$w->{id} $id\E"/i;
    ok(defined $create && defined $at[0] && $create < $at[0],
       'written before the store') or diag "@$cmds";
    ok(defined $at[1] && $at[1] > $at[0],
       'removed by a ZREM of its member after the store');
    is_deeply([members($w)], [], 'gone');

    # held at Stripe: the member is there while the invoice is made
    my $v = $l->workspace('org_j2');
    $l->fault(path_prefix => '/v1/invoices/', latency_ms => 1500);
    my $seen = 0;
    ($tx) = $l->during([$v, POST => '/api/line-requests', $EMAIL], sub {
        $seen = 1 if members($v) && $s->stub_held(qr{^/v1/invoices/});
        return $seen;
    }, 10);
    $l->clear_faults;
    $l->answer($tx, 201, 'billed slowly');
    ok($seen, 'in the journal while Stripe bills');
    ok(eventually(sub { !members($v) }, 5), 'gone once stored');
    is($l->lr($v, $tx->res->json->{line}{_id})->{provisioningStatus},
       'awaiting_payment', 'the request awaits payment');
};

subtest 'a refused journal write: nothing reserved, no Stripe call, 500'
=> sub {
    my $w = $l->workspace('org_j3');
    # the ZADD is refused (WRONGTYPE): on one Redis inside lr_create,
    # before the reservation is written; on a cluster in the index's
    # pipeline, before lr_create is sent
    $r->del($J);
    $r->set($J, 'not a sorted set');
    my $tx;
    my ($cmds) = $s->redis_traffic(sub {
        $tx = $l->create($w, $EMAIL, 'Idempotency-Key' => 'jk');
    });
    $r->del($J);
    # a key of another type is no retry's to mend: 500, not the 503 of a
    # store that did not answer (docs/operator.md, "Redis error replies")
    $l->error_is($tx, 500, 'INTERNAL_ERROR', '500, undone as a failed store');
    is($tx->res->headers->header('Retry-After'), undef, 'no Retry-After');
    my $create = (grep { my @k = script_keys($cmds->[$_]);
                         @k > 3 && $k[3] =~ /^\Qlg:{ws:$w->{id}}:lrvoid:\E/ }
                  0 .. $#$cmds)[0];
    if ($CLUSTER) {
        ok(!defined $create, 'a cluster: lr_create never sent')
            or diag "@$cmds";
    } else {
        # lr_create failed at its ZADD; then lr_release (its first key
        # the release mark)
        my $release = (grep { $cmds->[$_] =~
                                /"EVALSHA" "\w+" "\d+" "\Qlg:{ws:$w->{id}}:lrvoid:\E/i }
                       0 .. $#$cmds)[0];
        ok(defined $create && defined $release && $create < $release,
           'lr_create, then the release') or diag "@$cmds";
    }
    is(scalar $l->invoices($w->{customer}), 0, 'no invoice at Stripe');
    is_deeply([$l->request_ids($w)], [], 'nothing reserved');
    is_deeply([$r->keys("lg:{ws:$w->{id}}:lr:*")], [], 'no request hash');
    ok(!defined $l->pending($w), 'the workspace not blocked');
    is_deeply([$r->keys("lg:{ws:$w->{id}}:idem:*")], [],
              'the Idempotency-Key free');
    ok(eventually(sub {
           !grep { ($r->get($_) // '') eq $w->{id} } $r->keys('lg:line:*')
       }, 5), 'no owner index left');
    is_deeply([members($w)], [], 'nothing in the journal');
    $l->answer($l->create($w, $EMAIL, 'Idempotency-Key' => 'jk'), 201,
               'the same key is served again');
    ok(eventually(sub { !members($w) }, 5), 'and settled');
};

subtest 'killed after the journal, before the store: one worker_lost'
=> sub {
    my $w = $l->workspace('org_j4');
    # the finalize held, then dropped: a draft no request names
    killed_finalizing($w, 'jw') or return;
    my ($id) = $l->request_ids($w);
    ok($id, 'the reservation is left');
    is_deeply([members($w)], ["$w->{id} $id"], 'its journal member too');

    sleep 1.1;    # linegate_reconcile_lost_after
    my ($cmds) = $s->redis_traffic(sub { run() });
    my @split = grep {
        my %tag = map { /\{([^}]*)\}/ ? ($1 => 1) : () } script_keys($_);
        keys %tag > 1;
    } @$cmds;
    is_deeply(\@split, [], 'every script of the run: one slot')
        or diag "@split";
    my @e = lost_of($w);
    is(scalar @e, 1, 'queued once');
    my $lr = $l->lr($w, $id);
    is_deeply($e[0], {
        workspace => $w->{id}, line_request_id => $id,
        reason => 'worker_lost',
        idempotency_key => Digest::SHA::sha256_hex('jw'),
        customer => $w->{customer}, at => $lr->{createdAt},
    }, 'the entry as before: the request, its key, customer, time');
    is_deeply([members($w)], [], 'the member settled');
    is_deeply([$r->keys("lg:{ws:$w->{id}}:reconcile:*")], [],
              'no marker under the workspace: the ZREM de-duplicates');

    # the entry still waits on the stream (linegate_reconcile_delay)
    sleep 1.1;
    run();
    is(scalar lost_of($w), 1, 'a second run queues nothing more');

    # a member whose request is awaiting payment on its invoice just goes
    my $v = $l->workspace('org_j5');
    my ($paid) = $l->awaiting($v);
    $r->zadd($J, 1, "$v->{id} $paid");
    run();
    is_deeply([members($v)], [], 'invoiced: the member goes');
    is(scalar lost_of($v), 0, 'and nothing is queued');

    # a reservation held by no Idempotency-Key whose invoice was never
    # stored (the paid request's, its invoice id taken away)
    my $u = $l->workspace('org_j6');
    my ($rid) = $l->awaiting($u);
    $r->hdel("lg:{ws:$u->{id}}:lr:$rid", 'invoiceId');
    $r->zadd($J, 1, "$u->{id} $rid");
    run();
    my @u = lost_of($u);
    is(scalar @u, 1, 'no key: queued');
    is($u[0]{idempotency_key}, '', 'its idempotency_key empty');
    is($u[0]{customer}, $u->{customer}, 'its customer');
};

# A reservation whose worker died after Stripe finalized its invoice,
# then dropped as abandoned by a later creation of its workspace (10
# minutes without an invoice) before a run swept its member: the invoice
# is still open at Stripe, payable, and no request names it.
subtest 'dropped as abandoned before the sweep: queued' => sub {
    # (the run's discard of its invoice: t/235)
    my $w = $l->workspace('org_j9');
    # the finalize applied at Stripe, its answer held, then dropped
    killed_finalizing($w, 'ja', after_commit => 1) or return;
    my ($id) = $l->request_ids($w);
    ok($id, 'the reservation is left');
    my @open = grep { $_->{status} eq 'open' } $l->invoices($w->{customer});
    is(scalar @open, 1, 'its invoice open at Stripe');

    # ten minutes later (reservedAt), the same key again: lr_create drops
    # the reservation as abandoned and makes a new one
    $r->hset("lg:{ws:$w->{id}}:lr:$id", 'reservedAt', 1);
    my $tx = $l->create($w, $EMAIL, 'Idempotency-Key' => 'ja');
    is($tx->res->code, 201, 'the retry makes a new request')
        or diag $tx->res->body;
    ok(!$r->exists("lg:{ws:$w->{id}}:lr:$id"), 'the old one dropped');
    is_deeply([members($w)], ["$w->{id} $id"], 'its member still there');
    # its purchase began 15 minutes ago (as the reservedAt above says)
    my $score = int((time - 900) * 1000);
    $r->zadd($J, $score, "$w->{id} $id");

    sleep 1.1;    # linegate_reconcile_lost_after
    run();
    my @e = lost_of($w);
    is(scalar @e, 1, 'the gone request queued as worker_lost');
    is($e[0]{line_request_id}, $id, 'named');
    is($e[0]{customer}, $w->{customer}, 'with its customer');
    # the time the run looks for its invoice from: the member's, not the
    # queuing's (10 minutes before which the invoice would be missed)
    my ($y, $mo, $d, $h, $mi, $sec) =
        ($e[0]{at} // '') =~ /^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)/;
    ok(defined $y, 'its at set') or diag explain $e[0];
    ok(defined $y && abs(timegm($sec, $mi, $h, $d, $mo - 1, $y)
                         - $score / 1000) <= 1,
       'its at: the member\'s score') or diag "$e[0]{at} vs $score";
    is_deeply([members($w)], [], 'the member swept');
};

# The same, when a run could not settle the member first (a failed read
# scores it again with the run's time): the time of purchase is the
# id's (its first 8 hex digits, the second it was made in), earlier than
# that score, not the score.
subtest 'dropped as abandoned, its member scored again: the id\'s time' =>
sub {
    my $w = $l->workspace('org_j10');
    killed_finalizing($w, 'jb', after_commit => 1) or return;
    my ($id) = $l->request_ids($w);
    ok($id, 'the reservation is left') or return;
    my $made = hex substr $id, 0, 8;
    $r->hset("lg:{ws:$w->{id}}:lr:$id", 'reservedAt', 1);
    is($l->create($w, $EMAIL, 'Idempotency-Key' => 'jb')->res->code, 201,
       'the retry makes a new request');
    sleep 3;
    # what a run that could not read the request left (reconcile_later)
    $r->zadd($J, int(time * 1000), "$w->{id} $id");
    sleep 1.1;    # linegate_reconcile_lost_after
    run();
    my ($e) = lost_of($w);
    my ($y, $mo, $d, $h, $mi, $sec) =
        (($e // {})->{at} // '') =~ /^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)/;
    ok(defined $y, 'queued, its at set') or diag explain $e;
    my $at = defined $y ? timegm($sec, $mi, $h, $d, $mo - 1, $y) : 0;
    ok(abs($at - $made) <= 1, "its at: the id's time ($at vs $made)");
    is_deeply([members($w)], [], 'the member swept');
};

# Members a run cannot settle (here: their request's key of the wrong
# type, so the workspace's read fails) go behind the newer ones: ten of
# them would otherwise fill every run's batch (10, the oldest first) and
# hide the lost reservations behind them for good.
subtest 'members a run cannot read do not hide the others' => sub {
    my @bad = map { "org_jbad$_ lr_bad$_" } 1 .. 10;
    for my $i (1 .. 10) {
        $r->set("lg:{ws:org_jbad$i}:lr:lr_bad$i", 'not a hash');
        $r->zadd($J, $i, $bad[$i - 1]);
    }
    my $u = $l->workspace('org_j7');
    my ($rid) = $l->awaiting($u);
    $r->hdel("lg:{ws:$u->{id}}:lr:$rid", 'invoiceId');
    $r->zadd($J, 100, "$u->{id} $rid");

    run();
    is(scalar lost_of($u), 0, 'the first run reads the ten only');
    ok(eventually(sub { !grep { ($r->zscore($J, $_) // 0) <= 10 } @bad },
                  10),
       'they are scored with the run\'s time');
    run();
    is(scalar lost_of($u), 1, 'the next run reaches the lost request');
    is_deeply([members($u)], [], 'its member settled');
    is(scalar(grep { defined $r->zscore($J, $_) } @bad), 10,
       'the ten stay for a later run');
    $r->zrem($J, @bad);
};

# The gap a separate journal step left: a worker killed after its
# lr_create was written to Redis, before the member was. Redis is held
# by a busy script (another connection); the creation's index and
# lr_create wait in its socket; the workers are killed; Redis then runs
# what the dead worker wrote. The reservation must have its member, for
# the sweep to settle it. One Redis (and Sentinel's master): on a cluster
# the index's own step may wait on the held node, and lr_create is then
# never sent (the member's order before lr_create: the first subtest).
subtest 'killed with lr_create queued at a busy Redis: swept' => sub {
    plan skip_all => 'a cluster: lr_create waits for the index step'
        if $CLUSTER;
    my $w = $l->workspace('org_j8');
    my $port = $s->topology eq 'sentinel' ? $s->sentinel_master_port
                                          : $s->redis_port;
    my $HELD_MS = 2500;
    pipe(my $ready_r, my $ready_w) or die "pipe: $!";
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        close $ready_r;
        my $busy = Redis->new(server => "127.0.0.1:$port",
                              read_timeout => 30);
        syswrite $ready_w, "1";
        close $ready_w;
        $busy->eval(<<'LUA', 0, $HELD_MS);
local t = redis.call('TIME')
local start = t[1] * 1000000 + t[2]
repeat
  t = redis.call('TIME')
until t[1] * 1000000 + t[2] - start >= tonumber(ARGV[1]) * 1000
return 1
LUA
        POSIX::_exit(0);
    }
    close $ready_w;
    sysread $ready_r, my $ready, 1;
    sleep 0.2;    # the script sent: Redis is held
    my $t0 = time;
    my $killed = 0;
    # a Clerk token: no key lookup, lr_create is written at once
    my (undef, $done) = $l->during([$w->{clerk}, POST => '/api/line-requests',
                                    $EMAIL, 'Idempotency-Key' => 'jq'],
                                   sub {
        return 0 if time < $t0 + 0.2;
        $killed = $s->kill_workers;
        return 1;
    }, 60);
    waitpid $pid, 0;
    ok($done && $killed, 'the workers were killed while Redis was held');
    ok(eventually(sub { $l->request_ids($w) }, 5),
       'Redis ran the dead worker\'s lr_create: a reservation');
    my ($id) = $l->request_ids($w);
    is($l->lr($w, $id)->{provisioningStatus}, 'awaiting_payment',
       'awaiting payment');
    ok(!defined $l->lr($w, $id)->{invoiceId}, 'no invoice named');
    is(scalar $l->invoices($w->{customer}), 0, 'none made at Stripe');
    is_deeply([members($w)], ["$w->{id} $id"],
              'its journal member written with it');
    sleep 1.1;    # linegate_reconcile_lost_after
    run();
    my @e = lost_of($w);
    is(scalar @e, 1, 'the sweep queues it once');
    is($e[0]{reason}, 'worker_lost', 'as worker_lost');
    is($e[0]{idempotency_key}, Digest::SHA::sha256_hex('jq'),
       'with the key it holds');
    is_deeply([members($w)], [], 'the member settled');
    unlike($s->error_log, qr/exited on signal (?:6|11)\b/,
           'no worker crashed');
};

# killed_finalizing on a machine too slow for linegate_reconcile_lost_after
# (the invoice item answered 1.5 s late): the first creation gives up
# before its finalize, the second is the one killed
subtest 'killed_finalizing on a slow machine: set up again' => sub {
    my $w = $l->workspace('org_j_slow');
    my $from = length $s->error_log;
    $l->fault(path_prefix => '/v1/invoiceitems', latency_ms => 1500);
    killed_finalizing($w, 'js') or return;
    like(substr($s->error_log, $from),
         qr/outlived linegate_reconcile_lost_after before its invoice/,
         'the first creation gave up before its finalize');
    my @ids = $l->request_ids($w);
    is(scalar @ids, 1, 'one reservation left: the second creation\'s');
    is_deeply([members($w)], ["$w->{id} $ids[0]"], 'its journal member');
};

done_testing;
