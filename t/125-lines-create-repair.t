# Every step of a creation is repairable whichever way it went (issue 13):
# the idempotent answer is kept in the step that commits the outcome (not
# a second round trip that can be lost), and a creation whose lr_create
# timed out (Redis stalled past the command timeout, the script run when
# Redis resumed) leaves nothing blocking the workspace or the key.
use strict;
use warnings;
use lib 't/lib';

use Test::More;
use Digest::SHA ();
use Time::HiRes qw(sleep time);
use LG::Stack;
use LG::Test;
use LG::Lines qw(body);

my $s = LG::Stack->new->start;
my $l = LG::Lines->new($s);
my $r = $s->redis;
my $n = 0;
my $cli = "redis-cli -p @{[ $s->redis_port ]}";

sub ws { return $l->workspace('org_rp' . ++$n, @_) }

sub key { return ('Idempotency-Key' => $_[0]) }

sub idem {
    my ($w, $key) = @_;
    return {$r->hgetall("lg:{ws:$w->{id}}:idem:"
                        . Digest::SHA::sha256_hex($key))};
}

sub scripts { return scalar grep { /"EVAL(?:SHA)?"/i } @{ $_[0] } }

my $EMAIL = body(channelType => 'email', email => 'r@example.com');

subtest 'the answer is kept in the step that commits the outcome' => sub {
    my $w = ws();
    my $tx;
    my ($cmds) = $s->redis_traffic(sub {
        $tx = $l->create($w, body(), key('a-1'));
    });
    $l->answer($tx, 201, 'included line');
    is(scripts($cmds), 1, 'one script: the line and its answer')
        or diag "@$cmds";
    is(idem($w, 'a-1')->{state}, 'done', 'the answer is kept');
    is(idem($w, 'a-1')->{body}, $tx->res->body, 'byte for byte');

    my $m = ws(plan => 'mini');
    ($cmds) = $s->redis_traffic(sub {
        $tx = $l->create($m, body(), key('a-2'));
    });
    $l->answer($tx, 403, 'forbidden');
    is(scripts($cmds), 1, '403: one script') or diag "@$cmds";
    is(idem($m, 'a-2')->{body}, $tx->res->body, '403 kept byte for byte');

    my $x = ws();
    my ($pending) = $l->awaiting($x);
    ($cmds) = $s->redis_traffic(sub {
        $tx = $l->create($x, body(), key('a-3'));
    });
    my $b = $l->answer($tx, 409, 'pending');
    is($b->{pendingRequestId}, $pending, 'names the pending request');
    is(scripts($cmds), 1, '409: one script') or diag "@$cmds";

    # the workspace's id in the stored 201 is the one the key resolved to
    my $first = $l->create($w, body(), key('a-4'));
    my $c = $l->answer($first, 201, 'by API key');
    is($c->{line}{workspaceId}, $w->{id}, 'workspaceId');
};

# Issue 10: the owner index lg:line:<id> is written in its own step (its
# own slot) before the workspace's step; lr_create touches the
# workspace's keys (its release mark lg:{ws:W}:lrvoid:<id> among them),
# the in-flight index and the stream only. A creation that makes no line
# takes its index back; a released one too.
subtest 'the owner index is its own step, before the workspace\'s' => sub {
    my $w = ws();
    my $tx;
    my ($cmds) = $s->redis_traffic(sub {
        $tx = $l->create($w, body(), key('ix-1'));
    });
    my $b = $l->answer($tx, 201, 'included line');
    my $id = $b->{line}{_id} // '';
    my ($set) = grep {
        $cmds->[$_] =~ /"set" "lg:line:\Q$id\E" "\Q$w->{id}\E"/i
    } 0 .. $#$cmds;
    my ($script) = grep { $cmds->[$_] =~ /"EVALSHA"/i } 0 .. $#$cmds;
    ok(defined $set, 'SET lg:line:<id> W, a plain command') or diag "@$cmds";
    ok(defined $set && defined $script && $set < $script,
       'before the script') or diag "@$cmds";
    my $ev = defined $script ? $cmds->[$script] : '';
    unlike($ev, qr/"lg:line:/, 'lr_create names no owner index');
    unlike($ev, qr/"lg:lrvoid:/, 'nor a global release mark');
    like($ev, qr/"lg:\{ws:\Q$w->{id}\E\}:lrvoid:\Q$id\E"/,
         'its mark under the workspace\'s tag');
    is($r->get("lg:line:$id"), $w->{id}, 'the index names the workspace');

    # a refusal: no line, and its index goes (a durable DEL after it)
    my $m = ws(plan => 'mini');
    my $before = () = $r->keys('lg:line:*');
    ($cmds) = $s->redis_traffic(sub {
        $tx = $l->create($m, body(), key('ix-2'));
    });
    $l->answer($tx, 403, 'forbidden');
    my ($rid) = map { /"set" "lg:line:(\w+)"/i ? $1 : () } @$cmds;
    ok($rid, 'the index was written first') or diag "@$cmds";
    my $by = time + 10;
    sleep 0.1 while $rid && $r->exists("lg:line:$rid") && time < $by;
    ok(!$rid || !$r->exists("lg:line:$rid"), 'and taken back');

    # a Stripe refusal releases the reservation: the release's mark is
    # under the workspace's tag, and the index goes with the request
    my $x = ws();
    $l->fault(path_prefix => '/v1/invoices', status => 400);
    ($cmds) = $s->redis_traffic(sub {
        $tx = $l->create($x, $EMAIL, key('ix-3'));
    });
    $l->error_is($tx, 502, 'BILLING_UNAVAILABLE', 'Stripe 400');
    $l->clear_faults;
    ($rid) = map { /"set" "lg:line:(\w+)"/i ? $1 : () } @$cmds;
    ok($rid && $r->exists("lg:{ws:$x->{id}}:lrvoid:$rid"),
       'the release mark lg:{ws:W}:lrvoid:<id>') or diag "@$cmds";
    is(scalar(my @g = $r->keys('lg:lrvoid:*')), 0, 'no global mark');
    $by = time + 10;
    sleep 0.1 while $rid && $r->exists("lg:line:$rid") && time < $by;
    ok(!$rid || !$r->exists("lg:line:$rid"), 'the index went');
    is(scalar(my @ids = $l->request_ids($x)), 0, 'no request left');
};

# On one Redis the index's SET and lr_create go in one write on one
# connection, run in that order: a creation is one round trip, as before
# the index had a step of its own (on a cluster, t/038: two)
subtest 'one Redis: the index and lr_create in one round trip' => sub {
    plan skip_all => 'the index is its own step on a cluster'
        if $s->topology eq 'cluster';
    my $w = ws();
    my ($tx, $cmds, $trips);
    for (1 .. 5) {
        # every worker holds the API key: no lookup step
        $l->list($w) for 1 .. 4;
        ($cmds, $trips) = $s->redis_traffic(sub {
            $tx = $l->create($w, body(), key('rt-' . $_));
        }, again => 1);
        last unless grep { /"GET" "lg:apikey:/i } @$cmds;
    }
    my $b = $l->answer($tx, 201, 'included line');
    my $id = $b->{line}{_id} // '';
    my @names = map { /"(\w+)"/ ? uc $1 : '?' } @$cmds;
    is_deeply([@names[0, 1]], [qw(SET EVALSHA)],
              'the index, then lr_create') or diag "@$cmds";
    is($trips, 1, 'one round trip') or diag "@$cmds";
    is($r->get("lg:line:$id"), $w->{id}, 'the index names the workspace');
    is($r->hget("lg:{ws:$w->{id}}:lr:$id", 'provisioningStatus'),
       'provisioning', 'the line');
};

# A pause from before the call holds its first step, the owner index
# (then taken back); lr_create's own timeout (the release and its mark)
# is reached when the pause starts between the two steps.
subtest 'Redis stalls past the command timeout during an add-on create' => sub {
    my $w = ws();
    my $lines = () = $r->keys('lg:line:*');
    like(qx{$cli CLIENT PAUSE 900}, qr/^OK/, 'Redis paused');
    $l->error_is($l->create($w, $EMAIL, key('st-1')), 503,
                 'STORE_UNAVAILABLE', 'timed out');
    # Redis resumed and ran what it held, and the worker undid it: at
    # most 30 s on a loaded machine (1 s on a quiet one)
    my $by = time + 30;
    sleep 0.1 until (!defined $l->pending($w) && !(() = $l->request_ids($w))
                     && !%{ idem($w, 'st-1') }) || time > $by;

    ok(!defined $l->pending($w), 'no reservation blocks the workspace');
    is(scalar(my @ids = $l->request_ids($w)), 0, 'no request left');
    ok(!%{ idem($w, 'st-1') }, 'the key is free');
    $by = time + 10;
    sleep 0.1 while (() = $r->keys('lg:line:*')) > $lines && time < $by;
    is(scalar(() = $r->keys('lg:line:*')), $lines, 'no owner index left');

    my $b = $l->answer($l->create($w, $EMAIL, key('st-1')), 201,
                       'the same key, retried');
    is($b->{status}, 'awaiting_payment', 'billed');
    is(scalar(@ids = $l->request_ids($w)), 1, 'one request');
    is(scalar(my @inv = $l->invoices($w->{customer})), 1, 'one invoice');
};

subtest 'Redis stalls during an included create: the retry replays' => sub {
    my $w = ws();
    like(qx{$cli CLIENT PAUSE 900}, qr/^OK/, 'Redis paused');
    $l->error_is($l->create($w, body(), key('st-2')), 503,
                 'STORE_UNAVAILABLE', 'timed out');
    sleep 1;

    # the line was made when Redis resumed, with its answer: the same key
    # gets that answer, and no second line
    my @ids = $l->request_ids($w);
    my $tx = $l->create($w, body(), key('st-2'));
    my $b = $l->answer($tx, 201, 'the same key, retried');
    if (@ids) {
        is($tx->res->headers->header('Idempotent-Replayed'), 'true',
           'a replay of the line made meanwhile');
        is($b->{line}{_id}, $ids[0], 'that line');
    }
    is(scalar(@ids = $l->request_ids($w)), 1, 'one line');
};

subtest 'the invoice is final, the reply of its store lost' => sub {
    # finalize is done at Stripe and answered a second late; Redis stalls
    # from then on past the command timeout, so lr_invoice_store's reply
    # is lost; the invoice must not be voided (Redis may name it)
    my $w = ws();
    $l->fault(path_prefix => '/v1/invoices/', latency_ms => 1000,
              after_commit => 1);
    my ($tx) = $l->during(
        [$w, POST => '/api/line-requests', $EMAIL, key('is-1')],
        sub {
            my @open = grep { $_->{status} eq 'open' }
                       $l->invoices($w->{customer});
            return 0 unless @open;
            qx{$cli CLIENT PAUSE 2000};
            return 1;
        });
    $l->error_is($tx, 503, 'STORE_UNAVAILABLE', 'the store timed out');

    # the store is re-sent (a durable write, backoff up to 2 s) once the
    # pause is over: wait for it rather than for a fixed second
    my $until = time + 10;
    until (time > $until) {
        my @r = $l->request_ids($w);
        last if @r && ($l->lr($w, $r[0])->{invoiceId} // '') ne '';
        select undef, undef, undef, 0.1;
    }

    my @ids = $l->request_ids($w);
    is(scalar @ids, 1, 'the request stays');
    my $lr = @ids ? $l->lr($w, $ids[0]) : {};
    my @inv = $l->invoices($w->{customer});
    is(scalar @inv, 1, 'one invoice');
    is($inv[0]{status}, 'open', 'still open: not voided');
    is($lr->{invoiceId}, $inv[0]{id}, 'and stored');

    my $again = $l->create($w, $EMAIL, key('is-1'));
    my $b = $l->answer($again, 201, 'the same key');
    is($again->res->headers->header('Idempotent-Replayed'), 'true',
       'replays the 201');
    is($b->{invoiceId}, $inv[0]{id}, 'with the open invoice');
    $l->clear_faults;
};

subtest 'parallel calls with one key: one does the work' => sub {
    my $w = ws();
    my @txs = $l->parallel(map { [$w, POST => '/api/line-requests', $EMAIL,
                                  key('par-1')] } 1 .. 12);
    my @created = grep { $_->res->code == 201 } @txs;
    my @busy = grep { $_->res->code == 409 } @txs;
    is(@created + @busy, 12, 'each 201 or 409')
        or diag join ' ', map { $_->res->code } @txs;
    my @first = grep { !$_->res->headers->header('Idempotent-Replayed') }
                @created;
    is(scalar @first, 1, 'one did the work');
    is(scalar(grep { $_->res->body ne $first[0]->res->body } @created), 0,
       'the others replay it') if @first;
    is(scalar(grep { ($_->res->json->{code} // '') ne
                     'IDEMPOTENCY_KEY_IN_USE' } @busy), 0,
       'or are told it is in use');
    is(scalar(my @ids = $l->request_ids($w)), 1, 'one request');
    is(scalar(my @inv = $l->invoices($w->{customer})), 1, 'one invoice');
};

done_testing;
