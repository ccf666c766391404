# The set-up stream lg:provisioning on a Redis Cluster (issue 10): a line
# entering provisioning gets exactly one entry there. On one Redis (or
# Sentinel) the script that promotes it appends the entry in its own
# step, as before, and lg:{fleet}:lr:setup is never written. On a cluster
# (LG_REDIS=cluster) no script names the stream (another slot): the
# worker writes "<W> <id> <nonce>" in lg:{fleet}:lr:setup first (a
# creation: in the round trip of the owner index's SET), the script
# reports the entry, the worker appends it (a durable XADD) and then
# removes its member (a durable ZREM). A member whose relay was lost is
# relayed by a reconciliation run's sweep, and removed.
use strict;
use warnings;
use lib 't/lib';

use Test::More;
use Time::HiRes qw(time);
use Digest::SHA qw(hmac_sha256_hex);
use Mojo::JSON qw(encode_json);
use LG::Stack;
use LG::Test qw(:DEFAULT eventually);
use LG::Lines qw(body);

# members are swept once older than linegate_reconcile_lost_after, and
# 60 s at least (far beyond any command timeout)
my $s = LG::Stack->new(HTTP_EXTRA => 'linegate_reconcile_lost_after 1s;')
                 ->start;
my $l = LG::Lines->new($s);
my $r = $s->redis;
my $CLUSTER = $s->topology eq 'cluster';
my $SETUP = 'lg:{fleet}:lr:setup';

# the stream's entries of a request, as hashes
sub entries {
    my ($ws, $id) = @_;
    return grep { $_->{workspace} eq $ws && $_->{id} eq $id } $l->stream;
}

sub members {
    my ($ws) = @_;
    return grep { index($_, "$ws ") == 0 } $r->zrange($SETUP, 0, -1);
}

# "<1.2> [0 127.0.0.1:1] "EVALSHA" "sha" "2" "k1" "k2" ...": its KEYS[]
sub script_keys {
    my ($line) = @_;
    my @a = map { s/\\"/"/gr } $line =~ /"((?:[^"\\]|\\.)*)"/g;
    return () unless @a > 2 && $a[0] =~ /^EVAL(?:SHA)?$/i;
    return @a[3 .. 2 + $a[2]];
}

# the first command (of @$cmds, in time order) matching $re: its index
sub first_at {
    my ($cmds, $re) = @_;
    my @sorted = sort { ($a =~ /^\s*\+?([\d.]+)/)[0]
                        <=> ($b =~ /^\s*\+?([\d.]+)/)[0] } @$cmds;
    @$cmds = @sorted;
    return (grep { $sorted[$_] =~ $re } 0 .. $#sorted)[0];
}

subtest 'an included line: one entry, no member left' => sub {
    my $w = $l->workspace('org_su1');
    my $tx;
    my ($cmds) = $s->redis_traffic(sub { $tx = $l->create($w, body()) });
    my $b = $l->answer($tx, 201, 'an included line');
    my $id = $b->{line}{_id};

    ok(eventually(sub { entries('org_su1', $id) == 1 }, 5),
       'one entry on lg:provisioning');
    my ($e) = entries('org_su1', $id);
    is_deeply([@$e{qw(channelType lineType)}], [qw(phone purchased)],
              'its channelType and lineType');
    like($e->{at} // '', qr/^\d{4}-\d\d-\d\dT[\d:.]+Z$/, 'its time');
    ok(eventually(sub { !members('org_su1') }, 5), 'no member left');

    my @create = grep { /"EVALSHA"/i && grep { /:lrvoid:/ } script_keys($_) }
                 @$cmds;
    is(scalar @create, 1, 'one lr_create') or diag "@$cmds";
    my @keys = script_keys($create[0] // '');
    if ($CLUSTER) {
        ok(!grep({ $_ eq 'lg:provisioning' } @keys),
           'lr_create does not name the stream') or diag "@keys";
        my $zadd = first_at($cmds, qr/"zadd" "\Q$SETUP\E" "\d+" "org_su1 /i);
        my $eval = first_at($cmds, qr/"EVALSHA".*:lrvoid:/i);
        my $xadd = first_at($cmds, qr/"xadd" "lg:provisioning"/i);
        ok(defined $zadd && defined $eval && $zadd < $eval,
           'the member written before lr_create') or diag "@$cmds";
        ok(!defined $xadd || $xadd > $eval,
           'the entry appended after it') or diag "@$cmds";
        my @set = grep { /"SET" "lg:line:\Q$id\E"/i } @$cmds;
        is(scalar @set, 1, 'the owner index beside it');
    } else {
        # then the journal (a reservation's member, written with it)
        is($keys[-2], 'lg:provisioning', 'lr_create names the stream');
        is_deeply([grep { /\Q$SETUP\E/ } @$cmds], [],
                  'one Redis: no set-up member');
    }

    # a replay makes no entry
    $l->answer($l->create($w, body(), 'Idempotency-Key' => 'su1'), 201,
               'with a key');
    # on a cluster its entry is relayed after the answer
    ok(eventually(sub { !members('org_su1') }, 5), 'relayed');
    my $n = () = $l->stream;
    $l->answer($l->create($w, body(), 'Idempotency-Key' => 'su1'), 201,
               'replayed');
    ok(eventually(sub { !members('org_su1') }, 5), 'no member left');
    is(scalar(() = $l->stream), $n, 'no entry for the replay');
};

subtest 'a refused creation: no entry, no member' => sub {
    my $w = $l->workspace('org_su2', plan => 'mini');
    my $n = () = $l->stream;
    $l->answer($l->create($w, body()), 403, 'mini: no phone line');
    ok(eventually(sub { !members('org_su2') }, 5), 'no member left');
    is(scalar(() = $l->stream), $n, 'no entry');
};

# a request awaiting payment on invoice $inv, as its store left it
sub awaiting {
    my ($ws, $id, $inv) = @_;
    $r->hset("lg:{ws:$ws}", plan => 'growth', subscriptionStatus => 'active');
    $r->hset("lg:{ws:$ws}:lr:$id", provisioningStatus => 'awaiting_payment',
             paymentStatus => 'unpaid', channelType => 'email',
             lineType => 'purchased', invoiceId => $inv);
    $r->zadd("lg:{ws:$ws}:lines", 1, $id);
    $r->set("lg:{ws:$ws}:pending", $id);
    $r->set("lg:invoice:$inv", "$ws:$id");
}

sub deliver {
    my ($event) = @_;
    my $body = encode_json($event);
    my $t = time;
    my $sig = hmac_sha256_hex(int($t) . ".$body", $s->webhook_secret);
    return $s->ua->post($s->url('/webhooks/stripe') =>
        {'Content-Type' => 'application/json',
         'Stripe-Signature' => 't=' . int($t) . ",v1=$sig"} => $body);
}

subtest 'a paid webhook: one entry, no member left' => sub {
    my $id = '6a092ebde4a7fbddc8a8e101';
    awaiting('org_su3', $id, 'in_su3');
    my $ev = {id => 'evt_su3', object => 'event', type => 'invoice.paid',
              api_version => '2025-03-31.basil', created => time,
              livemode => \0,
              data => {object => {id => 'in_su3', object => 'invoice',
                                  status => 'paid'}}};
    my $tx;
    my ($cmds) = $s->redis_traffic(sub { $tx = deliver($ev) });
    answer_is($tx, 200, 'invoice.paid');
    is($r->hget("lg:{ws:org_su3}:lr:$id", 'provisioningStatus'),
       'provisioning', 'promoted');
    ok(eventually(sub { entries('org_su3', $id) == 1 }, 5),
       'one entry on lg:provisioning');
    my ($e) = entries('org_su3', $id);
    is_deeply([@$e{qw(channelType lineType)}], [qw(email purchased)],
              'its channelType and lineType');
    ok(eventually(sub { !members('org_su3') }, 5), 'no member left');
    if ($CLUSTER) {
        my $zadd = first_at($cmds, qr/"zadd" "\Q$SETUP\E" "\d+" "org_su3 /i);
        my $eval = first_at($cmds, qr/"EVALSHA".*:event:evt_su3/i);
        ok(defined $zadd && defined $eval && $zadd < $eval,
           'the member written before wh_invoice') or diag "@$cmds";
    }

    answer_is(deliver($ev), 200, 'redelivered');
    ok(eventually(sub { !members('org_su3') }, 5), 'no member left');
    is(scalar(entries('org_su3', $id)), 1, 'still one entry');

    # a voided invoice makes no entry, and writes no member
    my $id2 = '6a092ebde4a7fbddc8a8e102';
    awaiting('org_su4', $id2, 'in_su4');
    ($cmds) = $s->redis_traffic(sub {
        answer_is(deliver({%$ev, id => 'evt_su4', type => 'invoice.voided',
                           data => {object => {id => 'in_su4',
                                               object => 'invoice'}}}),
                  200, 'invoice.voided');
    });
    is(scalar(entries('org_su4', $id2)), 0, 'voided: no entry');
    is_deeply([grep { /"zadd" "\Q$SETUP\E"/i } @$cmds], [],
              'voided: no member');
};

# an invoice at the stub, finalized (open), for $w's customer
sub stub_invoice {
    my ($w) = @_;
    my $h = {Authorization => 'Bearer sk_test_relay'};
    my $tx = $s->ua->post($s->stub_url('/v1/invoices') => $h =>
        form => {customer => $w->{customer},
                 collection_method => 'send_invoice', days_until_due => 7});
    my $id = eval { $tx->res->json->{id} } or die 'invoice: '
        . $tx->res->body;
    $tx = $s->ua->post($s->stub_url("/v1/invoices/$id/finalize") => $h);
    die 'finalize: ' . $tx->res->body unless $tx->res->is_success;
    return $id;
}

subtest 'paid, found on read (lr_resolve): one entry, no member left'
=> sub {
    my $w = $l->workspace('org_su7');
    my $inv = stub_invoice($w);
    my $id = '6a092ebde4a7fbddc8a8e301';
    awaiting('org_su7', $id, $inv);
    $r->hset("lg:{ws:org_su7}:lr:$id", createdAt => '2026-01-01T00:00:00.000Z',
             updatedAt => '2026-01-01T00:00:00.000Z', firstName => 'A',
             lastName => 'B', email => 'a@example.com');
    $l->invoice_do($inv, 'pay');

    my $tx;
    my ($cmds) = $s->redis_traffic(sub { $tx = $l->get($w, $id) });
    my $b = $l->answer($tx, 200, 'read');
    is($r->hget("lg:{ws:org_su7}:lr:$id", 'provisioningStatus'),
       'provisioning', 'promoted from Stripe') or diag $tx->res->body;
    ok(eventually(sub { entries('org_su7', $id) == 1 }, 5),
       'one entry on lg:provisioning');
    ok(eventually(sub { !members('org_su7') }, 5), 'no member left');
    if ($CLUSTER) {
        my $zadd = first_at($cmds, qr/"zadd" "\Q$SETUP\E" "\d+" "org_su7 /i);
        my $eval = first_at($cmds,
            qr/"EVALSHA" "\w+" "4" "\Qlg:{ws:org_su7}:lr:$id\E"/i);
        ok(defined $zadd && defined $eval && $zadd < $eval,
           'the member written before lr_resolve') or diag "@$cmds";
    }

    $l->answer($l->get($w, $id), 200, 'read again');
    ok(eventually(sub { !members('org_su7') }, 5), 'no member left');
    is(scalar(entries('org_su7', $id)), 1, 'still one entry');
};

subtest 'a lost relay: the sweep appends it, once, and removes it' => sub {
    # members whose worker died after the step (the relay never sent):
    # older than any command timeout (the sweep waits 60 s at least)
    my $old = int(time * 1000) - 120_000;
    my %lr = (provisioningStatus => 'provisioning', paymentStatus => 'paid',
              channelType => 'email', lineType => 'purchased',
              updatedAt => '2026-01-02T03:04:05.000Z');
    my $id = '6a092ebde4a7fbddc8a8e201';
    $r->hset("lg:{ws:org_su5}:lr:$id", %lr);
    $r->zadd($SETUP, $old, "org_su5 $id 1.1");
    # another call's member of the same request (a poll racing the
    # webhook): removed with it
    $r->zadd($SETUP, $old, "org_su5 $id 2.1");
    # a request that made no entry (still awaiting payment), one gone
    my $id2 = '6a092ebde4a7fbddc8a8e202';
    $r->hset("lg:{ws:org_su5}:lr:$id2", %lr,
             provisioningStatus => 'awaiting_payment');
    $r->zadd($SETUP, $old, "org_su5 $id2 1.2");
    $r->zadd($SETUP, $old, "org_su5 6a092ebde4a7fbddc8a8e203 1.3");
    # a young member (past lost_after, not 60 s): its worker may still
    # be relaying it
    my $id4 = '6a092ebde4a7fbddc8a8e204';
    $r->hset("lg:{ws:org_su6}:lr:$id4", %lr);
    $r->zadd($SETUP, int(time * 1000) - 30_000, "org_su6 $id4 1.4");

    my $tx = $s->op(POST => '/reconciliation/run');
    is($tx->res->code, 200, 'a run') or diag $tx->res->body;

    ok(eventually(sub { !members('org_su5') }, 5), 'every old member gone');
    my @e = entries('org_su5', $id);
    ok(@e >= 1 && @e <= 2, 'the provisioning request appended')
        or diag scalar @e;
    is_deeply([@{ $e[0] }{qw(channelType lineType at)}],
              [qw(email purchased 2026-01-02T03:04:05.000Z)],
              'as the step would have');
    is(scalar(entries('org_su5', $id2)), 0, 'awaiting payment: no entry');
    is_deeply([members('org_su6')], ["org_su6 $id4 1.4"],
              'the young member left alone');
    is(scalar(entries('org_su6', $id4)), 0, 'and not appended');

    my $n = () = $l->stream;
    $tx = $s->op(POST => '/reconciliation/run');
    is($tx->res->code, 200, 'another run');
    is(scalar(() = $l->stream), $n, 'appends nothing more');
    $r->del($SETUP);
};

done_testing;
