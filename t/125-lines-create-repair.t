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
use Time::HiRes qw(sleep);
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

subtest 'Redis stalls past the command timeout during an add-on create' => sub {
    my $w = ws();
    like(qx{$cli CLIENT PAUSE 900}, qr/^OK/, 'Redis paused');
    $l->error_is($l->create($w, $EMAIL, key('st-1')), 503,
                 'STORE_UNAVAILABLE', 'timed out');
    sleep 1;    # Redis resumed and ran what it held

    ok(!defined $l->pending($w), 'no reservation blocks the workspace');
    is(scalar(my @ids = $l->request_ids($w)), 0, 'no request left');
    ok(!%{ idem($w, 'st-1') }, 'the key is free');

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

done_testing;
