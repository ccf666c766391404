#!/usr/bin/perl
# Stripe webhooks: the signature is checked on the raw body before parsing,
# events are applied once, invoice events settle the request they pay,
# subscription events set the workspace's status and plan (both payload
# shapes), and anything else is acknowledged and ignored.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";

use Digest::SHA qw(hmac_sha256_hex);
use Mojo::JSON qw(encode_json decode_json);
use Test::More;

use LG::Lines;
use LG::Stack;
use LG::Test qw(:DEFAULT eventually);

my $s = LG::Stack->new->start;
my $r = $s->redis;
my $secret = $s->webhook_secret;
my $n = 0;

# a subscription naming a workspace is its customer's, cus_<W>, unless
# the object says otherwise (the workspaces here have that customer)
sub event {
    my ($type, $object, %o) = @_;
    if ($type =~ /^customer\.subscription\./ && ref $object->{metadata}
        && defined $object->{metadata}{workspace_id}
        && !exists $object->{customer})
    {
        $object = {%$object,
                   customer => "cus_$object->{metadata}{workspace_id}"};
    }
    return {
        id => $o{id} // 'evt_test' . ++$n, object => 'event', type => $type,
        api_version => $o{api_version} // '2025-03-31.basil',
        created => $o{created} // time, livemode => \0,
        data => {object => $object},
    };
}

sub signature {
    my ($body, %o) = @_;
    my $t = $o{t} // time;
    my $sig = hmac_sha256_hex("$t.$body", $o{secret} // $secret);
    return "t=$t,v1=$sig";
}

# deliver raw bytes with a given Stripe-Signature (or a computed one)
sub deliver {
    my ($event, %o) = @_;
    my $body = ref $event ? encode_json($event) : $event;
    my %h = ('Content-Type' => 'application/json');
    my $sig = exists $o{header} ? $o{header} : signature($body, %o);
    $h{'Stripe-Signature'} = $sig if defined $sig;
    return $s->ua->post($s->url('/webhooks/stripe') => \%h => $body);
}

# a workspace with one request awaiting payment on invoice $inv
sub awaiting {
    my ($ws, $id, $inv) = @_;
    $r->hset("lg:{ws:$ws}", plan => 'growth', subscriptionStatus => 'active');
    $r->hset("lg:{ws:$ws}:lr:$id", provisioningStatus => 'awaiting_payment',
             paymentStatus => 'unpaid', channelType => 'email',
             lineType => 'purchased', invoiceId => $inv);
    $r->set("lg:{ws:$ws}:pending", $id);
    $r->set("lg:invoice:$inv", "$ws:$id");
}

sub status_of {
    my ($ws, $id) = @_;
    return join '/', map { $_ // '-' }
        $r->hmget("lg:{ws:$ws}:lr:$id", 'provisioningStatus',
                  'paymentStatus');
}

sub stream_len { $r->xlen('lg:provisioning') }

my $ID1 = '6a092ebde4a7fbddc8a83201';
my $ID2 = '6a092ebde4a7fbddc8a83202';
my $ID3 = '6a092ebde4a7fbddc8a83203';

subtest 'invoice.paid promotes the request, once' => sub {
    awaiting('org_wh1', $ID1, 'in_wh1');
    my $before = stream_len();

    my $ev = event('invoice.paid', {id => 'in_wh1', object => 'invoice',
                                    status => 'paid'});
    my $body = answer_is(deliver($ev), 200, 'invoice.paid');
    is_deeply($body, {received => \1}, 'acknowledged');
    is(status_of('org_wh1', $ID1), 'provisioning/paid', 'promoted');
    ok(!$r->exists('lg:{ws:org_wh1}:pending'), 'no longer blocks');
    # on a cluster appended by the worker after the step (t/159)
    ok(eventually(sub { stream_len() == $before + 1 }, 5),
       'one entry on the provisioning stream');

    my @e = @{ $r->xrevrange('lg:provisioning', '+', '-', 'COUNT', 1) };
    my %f = @{ $e[0][1] };
    is($f{id}, $ID1, 'stream entry names the request');
    is($f{workspace}, 'org_wh1', 'and its workspace');

    $body = answer_is(deliver($ev), 200, 'redelivered');
    ok($body->{duplicate}, 'recognized as a duplicate');
    is(stream_len(), $before + 1, 'not appended twice');

    # issue 10: the index read in its own step, then the workspace's step,
    # the event's de-duplication under its tag
    ok($r->exists("lg:{ws:org_wh1}:event:$ev->{id}"),
       'remembered as lg:{ws:W}:event:<id>');
    ok(!$r->exists("lg:stripe:event:$ev->{id}"), 'not globally');
    my ($cmds) = $s->redis_traffic(sub { deliver($ev) });
    my @c = grep { /"(?:GET|EVALSHA)"/i } @$cmds;
    like($c[0] // '', qr/"GET" "lg:invoice:in_wh1"\s*$/i,
         'the invoice index first, alone') or diag "@$cmds";
    # on a cluster the set-up stream is another slot: not named (the
    # worker appends the entry itself, t/159)
    my ($n, $stream) = $s->topology eq 'cluster'
        ? (6, '') : (7, ' "lg:provisioning"');
    like($c[1] // '',
         qr/"EVALSHA"\ "[0-9a-f]{40}"\ "$n"
            \ "lg:\{ws:org_wh1\}:event:\Q$ev->{id}\E"
            \ "lg:\{ws:org_wh1\}:lr:\Q$ID1\E" \ "lg:\{ws:org_wh1\}:lines"
            \ "lg:\{ws:org_wh1\}:live" \ "lg:\{ws:org_wh1\}:pending"
            \ "lg:\{ws:org_wh1\}"
            \Q$stream\E\ "in_wh1"/ix,
         'then the script on the workspace\'s keys') or diag "@$cmds";
};

subtest 'invoice.voided and marked_uncollectible cancel' => sub {
    awaiting('org_wh2', $ID2, 'in_wh2');
    answer_is(deliver(event('invoice.voided', {id => 'in_wh2'})), 200,
              'voided');
    is(status_of('org_wh2', $ID2), 'canceled/failed', 'canceled');
    ok(!$r->exists('lg:{ws:org_wh2}:pending'), 'pending marker cleared');

    awaiting('org_wh3', $ID3, 'in_wh3');
    answer_is(deliver(event('invoice.marked_uncollectible',
                            {id => 'in_wh3'})), 200, 'uncollectible');
    is(status_of('org_wh3', $ID3), 'canceled/failed', 'canceled');
};

subtest 'a void while payment_link reissues is its own, not a cancel'
=> sub {
    # the claim held (reissueAt, 60 s) and the old invoice's index back
    # (a late durable write of it, say): the void payment_link sends
    # before issuing the new invoice must not cancel the request
    my $id = '6a092ebde4a7fbddc8a83209';
    awaiting('org_wh9', $id, 'in_wh9');
    my ($sec, $usec) = $r->time;
    $r->hset("lg:{ws:org_wh9}:lr:$id",
             reissueAt => int($sec * 1000 + $usec / 1000));
    my $ev = event('invoice.voided', {id => 'in_wh9'});
    # refused, not acknowledged: Stripe does not deliver a 2xx again
    my $body = answer_is(deliver($ev), 409, 'voided during the reissue');
    is($body->{code}, 'REISSUE_PENDING', 'the reissue named')
        or diag explain $body;
    is(status_of('org_wh9', $id), 'awaiting_payment/unpaid', 'not canceled');
    ok(!$r->exists("lg:{ws:org_wh9}:event:$ev->{id}"),
       'not remembered: delivered again later, it applies');

    # the claim over (aborted or past its hold): the void cancels
    $r->hdel("lg:{ws:org_wh9}:lr:$id", 'reissueAt');
    answer_is(deliver($ev), 200, 'the same event again');
    is(status_of('org_wh9', $id), 'canceled/failed', 'canceled');
};

# A claim past its hold, or released lapsed (reissueAt 0), may be one
# whose worker died after Stripe finalized an invoice it never stored,
# maybe paid at its finalize (a credit balance). The webhook cannot look
# at Stripe: the void of the invoice the request names is refused
# (REISSUE_PENDING, delivered again) and the request left for the sweep
# of the next GET's check, payment_link or cancel, which promotes it on a
# paid invoice (t/140). Before, the void canceled it: a customer who had
# paid got neither the line nor the money back.
subtest 'a void over a lapsed reissue claim is refused, not a cancel'
=> sub {
    my $id = '6a092ebde4a7fbddc8a832f1';
    awaiting('org_whl', $id, 'in_whl');
    my ($sec, $usec) = $r->time;
    $r->hset("lg:{ws:org_whl}:lr:$id", invoiceSeq => 1,
             reissueAt => int($sec * 1000 + $usec / 1000) - 60001);
    my $ev = event('invoice.voided', {id => 'in_whl'});
    my $body = answer_is(deliver($ev), 409, 'voided, the claim lapsed');
    is($body->{code}, 'REISSUE_PENDING', 'the reissue named')
        or diag explain $body;
    is(status_of('org_whl', $id), 'awaiting_payment/unpaid', 'not canceled');
    ok(!$r->exists("lg:{ws:org_whl}:event:$ev->{id}"), 'not remembered');

    # released lapsed: still not swept
    $r->hset("lg:{ws:org_whl}:lr:$id", reissueAt => 0);
    my $unc = event('invoice.marked_uncollectible', {id => 'in_whl'});
    $body = answer_is(deliver($unc), 409, 'uncollectible, released lapsed');
    is($body->{code}, 'REISSUE_PENDING', 'the reissue named');
    is(status_of('org_whl', $id), 'awaiting_payment/unpaid', 'not canceled');

    # swept (the claim gone): the redelivery cancels
    $r->hdel("lg:{ws:org_whl}:lr:$id", 'reissueAt');
    answer_is(deliver($ev), 200, 'the same event again');
    is(status_of('org_whl', $id), 'canceled/failed', 'canceled');
};

# the index is written (and answered) before the store that names the
# invoice: a store lost and sent again (durable) lands seconds later, and
# an event between the two must come again, not be acknowledged as unknown
subtest 'an invoice its request does not name yet: refused, then applied'
=> sub {
    my $id = '6a092ebde4a7fbddc8a8320a';
    awaiting('org_wha', $id, 'in_wa');
    $r->hdel("lg:{ws:org_wha}:lr:$id", 'invoiceId');
    $r->del('lg:invoice:in_wa');
    $r->set('lg:invoice:in_w', "org_wha:$id");
    my $before = stream_len();

    # through the stub, which signs and posts as Stripe does
    my $ev = $s->stub(POST => '/_stub/webhook', {
        url => $s->url('/webhooks/stripe'), type => 'invoice.paid',
        object => {id => 'in_w', object => 'invoice', status => 'paid'},
    })->res->json;
    is($ev->{status}, 409, 'refused: Stripe delivers it again')
        or diag explain $ev;
    is(($ev->{json} // {})->{code} // '', 'INVOICE_PENDING',
       'the invoice pending named');
    is(status_of('org_wha', $id), 'awaiting_payment/unpaid', 'not settled');
    is(stream_len(), $before, 'nothing provisioned');

    # the same event, signed here, while the store is still on its way
    my $paid = event('invoice.paid', {id => 'in_w', object => 'invoice',
                                      status => 'paid'});
    my $body = answer_is(deliver($paid), 409, 'a paid event');
    is($body->{code}, 'INVOICE_PENDING', 'code');
    ok(!$r->exists("lg:{ws:org_wha}:event:$paid->{id}"), 'not remembered');

    # the store landed: the redelivery settles the request
    $r->hset("lg:{ws:org_wha}:lr:$id", invoiceId => 'in_w');
    $body = answer_is(deliver($paid), 200, 'delivered again');
    is_deeply($body, {received => \1}, 'applied');
    is(status_of('org_wha', $id), 'provisioning/paid', 'promoted');

    # payment_link's reissue: the new invoice indexed, its claim held
    my $rid = '6a092ebde4a7fbddc8a8320b';
    awaiting('org_whb', $rid, 'in_wb_old');
    $r->set('lg:invoice:in_wb_new', "org_whb:$rid");
    my ($sec, $usec) = $r->time;
    my $now = int($sec * 1000 + $usec / 1000);
    $r->hset("lg:{ws:org_whb}:lr:$rid", reissueAt => $now);
    $paid = event('invoice.paid', {id => 'in_wb_new', object => 'invoice',
                                   status => 'paid'});
    $body = answer_is(deliver($paid), 409, 'paid while the claim is held');
    is($body->{code}, 'INVOICE_PENDING', 'code');
    is(status_of('org_whb', $rid), 'awaiting_payment/unpaid', 'not settled');

    # the claim past its hold and not taken over: lr_reissue_store checks
    # invoiceSeq, not the hold, so its store may still land; acknowledged
    # as unknown, the payment of the new invoice would be lost
    $r->hset("lg:{ws:org_whb}:lr:$rid", reissueAt => $now - 61000);
    $body = answer_is(deliver($paid), 409, 'the claim past its hold');
    is($body->{code}, 'INVOICE_PENDING', 'code: its store may still land');
    ok(!$r->exists("lg:{ws:org_whb}:event:$paid->{id}"), 'not remembered');
    $r->hset("lg:{ws:org_whb}:lr:$rid", reissueAt => 0);
    $body = answer_is(deliver($paid), 200, 'the claim released lapsed');
    ok($body->{unknown}, 'unknown');

    # the late store landed (the claim past its hold): the redelivery
    # settles the request
    $r->hset("lg:{ws:org_whb}:lr:$rid", invoiceId => 'in_wb_new');
    $r->hdel("lg:{ws:org_whb}:lr:$rid", 'reissueAt');
    $body = answer_is(deliver($paid), 200, 'delivered again, stored');
    is_deeply($body, {received => \1}, 'applied');
    is(status_of('org_whb', $rid), 'provisioning/paid', 'promoted');

    # a void of an invoice a run fences is not waited for: never stored
    my $fid = '6a092ebde4a7fbddc8a8320c';
    awaiting('org_whc', $fid, 'in_wc');
    $r->hdel("lg:{ws:org_whc}:lr:$fid", 'invoiceId');
    $r->hset("lg:{ws:org_whc}:lr:$fid", voidingInvoice => 'in_x in_wc');
    $body = answer_is(deliver(event('invoice.voided', {id => 'in_wc'})),
                      200, 'the void of a fenced invoice');
    ok($body->{unknown}, 'unknown');
    $body = answer_is(deliver(event('invoice.paid', {id => 'in_wc'})),
                      409, 'its payment: a run may settle it');
    is($body->{code}, 'INVOICE_PENDING', 'code');

    # ended: today's answer
    $r->hset("lg:{ws:org_whc}:lr:$fid", provisioningStatus => 'canceled');
    $body = answer_is(deliver(event('invoice.paid', {id => 'in_wc'})),
                      200, 'its request canceled');
    ok($body->{unknown}, 'unknown');
};

# A request whose creation died between the invoice's index and its
# store awaits payment with no invoice: its events are refused (409) so
# that Stripe delivers them again, and only a reconciliation run settles
# it. Without runs that lasts until Stripe gives up (3 days), a paid
# invoice with no line: past linegate_reconcile_lost_after (10 min here)
# each refusal says so at warn, naming the request and what is owed.
subtest 'an invoice whose creation died unstored: refused, and logged' =>
sub {
    my $id = '6a092ebde4a7fbddc8a8320d';
    my ($young, $old) = ('6a092ebde4a7fbddc8a8320e', $id);
    my $now = int(time * 1000);
    for ([$old, 'in_wdead', $now - 20 * 60 * 1000],
         [$young, 'in_wyoung', $now - 5000])
    {
        my ($rid, $inv, $at) = @$_;
        awaiting('org_whd', $rid, $inv);
        $r->hdel("lg:{ws:org_whd}:lr:$rid", 'invoiceId');
        $r->hset("lg:{ws:org_whd}:lr:$rid", reservedAt => $at);
    }
    my $from = length $s->error_log;

    my $body = answer_is(deliver(event('invoice.paid',
                                       {id => 'in_wdead',
                                        object => 'invoice',
                                        status => 'paid'})),
                         409, 'paid, its creation long dead');
    is($body->{code}, 'INVOICE_PENDING', 'refused: a run may settle it');
    is(status_of('org_whd', $old), 'awaiting_payment/unpaid', 'not settled');
    my $owed = 'its creation died before storing it; refused until a'
               . ' reconciliation run settles the request';
    my $of = qq{invoice "in_wdead" (paid) of line request "$old" of}
             . ' workspace "org_whd", reserved ';
    like(substr($s->error_log, $from),
         qr/\[warn\].*\Q$of\E1[12]\d\d s ago: \Q$owed\E/,
         'logged at warn: a run is owed');

    $from = length $s->error_log;
    $body = answer_is(deliver(event('invoice.paid',
                                    {id => 'in_wyoung', object => 'invoice',
                                     status => 'paid'})),
                      409, 'paid, its store maybe on its way');
    is($body->{code}, 'INVOICE_PENDING', 'refused');
    unlike(substr($s->error_log, $from), qr/in_wyoung/,
           'not logged: its creation may still store it');
};

subtest 'a settled request is left alone' => sub {
    my $before = stream_len();
    answer_is(deliver(event('invoice.voided', {id => 'in_wh1'})), 200,
              'a void after the payment');
    is(status_of('org_wh1', $ID1), 'provisioning/paid', 'still promoted');
    answer_is(deliver(event('invoice.marked_uncollectible',
                            {id => 'in_wh2'})), 200,
              'uncollectible after the void');
    is(status_of('org_wh2', $ID2), 'canceled/failed', 'still canceled');
    is(stream_len(), $before, 'nothing provisioned');

    my $body = answer_is(deliver(event('invoice.paid', {id => 'in_nobody'})),
                         200, 'unknown invoice');
    ok($body->{unknown}, 'acknowledged as unknown');
};

# Stripe lets an uncollectible invoice be paid (a voided one never). SPEC
# 2.3 has no way out of canceled: the request stays canceled, out of the
# listing and the counts, and the payment is queued for a human
# (paid_after_cancel: a reconciliation run leaves it, invoice_paid), once
# for all of Stripe's redeliveries. Until 2026-11-29 the webhook reopened
# the request (provisioning/paid, back in the listing), which a poll of
# the same late payment never did.
subtest 'an uncollectible invoice paid later does not reopen its request'
    => sub {
    is(status_of('org_wh3', $ID3), 'canceled/failed',
       'canceled by marked_uncollectible (above)');
    ok(!defined $r->zscore('lg:{ws:org_wh3}:lines', $ID3),
       'out of the index of requests');
    $r->hset("lg:{ws:org_wh3}:lr:$ID3", customer => 'cus_wh3');
    # the workspace's index of live requests, as a creation built it
    # (data-model.md: its marker 'built', score 0)
    $r->zadd('lg:{ws:org_wh3}:live', 0, 'built');
    my $hash = {$r->hgetall("lg:{ws:org_wh3}:lr:$ID3")};
    my $entries = sub {
        return grep { ($_->{line_request_id} // '') eq $ID3 }
               map { +{ @{ $_->[1] } } }
               $r->xrange('lg:{fleet}:reconcile', '-', '+');
    };
    my $before = stream_len();
    my $from = length $s->error_log;

    my $ev = event('invoice.paid', {id => 'in_wh3', object => 'invoice',
                                    status => 'paid'});
    my $body = answer_is(deliver($ev), 200, 'invoice.paid');
    is_deeply($body, {received => \1, unapplied => \1},
              'acknowledged, unapplied');
    is(status_of('org_wh3', $ID3), 'canceled/failed', 'still canceled');
    is_deeply({$r->hgetall("lg:{ws:org_wh3}:lr:$ID3")}, $hash,
              'the request\'s hash untouched');
    ok(!defined $r->zscore('lg:{ws:org_wh3}:lines', $ID3),
       'not back in the index (by-user)');
    is_deeply([$r->zrange('lg:{ws:org_wh3}:live', 0, -1)], ['built'],
              'nor in :live, which a creation counts from');
    ok(!$r->exists('lg:{ws:org_wh3}:pending'), 'blocks nothing');
    is(stream_len(), $before, 'nothing provisioned');
    ok(!$r->exists("lg:{ws:org_wh3}:event:$ev->{id}"),
       'the event not remembered: a redelivery queues it again');

    my @e = $entries->();
    is(scalar @e, 1, 'queued on lg:{fleet}:reconcile') or diag explain \@e;
    is_deeply([@{ $e[0] // {} }{qw(reason workspace invoice_id customer)}],
              ['paid_after_cancel', 'org_wh3', 'in_wh3', 'cus_wh3'],
              'paid_after_cancel, its invoice and customer');
    ok($r->exists('lg:{fleet}:q:org_wh3:paid_in_wh3'), 'its marker');
    my $said = qq{invoice "in_wh3" of line request "$ID3" of workspace }
        . '"org_wh3" is paid, but the request was canceled: not reopened, '
        . 'queued for reconciliation (paid_after_cancel), left for a human';
    like(substr($s->error_log, $from), qr/\[warn\].*\Q$said\E/,
         'logged at warn for the operator');

    # Stripe's redelivery (the answer lost): the same answer, once queued
    $from = length $s->error_log;
    $body = answer_is(deliver($ev), 200, 'redelivered');
    is_deeply($body, {received => \1, unapplied => \1}, 'the same answer');
    is(scalar(my @again = $entries->()), 1, 'not queued twice');
    like(substr($s->error_log, $from),
         qr/\[notice\].*\Q$ID3\E.*not reopened, queued before for/,
         'logged at notice: queued before');
    is(status_of('org_wh3', $ID3), 'canceled/failed', 'still canceled');
    is(stream_len(), $before, 'still nothing provisioned');
    unlike($s->error_log, qr/\Q$secret\E/, 'the secret is never logged');
};

# The same for a request made before requests kept their customer (no
# `customer` in its hash): billed under the workspace's stripeCustomerId,
# as payment_link and cancel bill and sweep it (lr_manage). wh_invoice
# answered the request's own customer, '', and the payment was queued
# under none; it answers the workspace's now, as a GET's, payment_link's
# or cancel's queuing of the same payment does.
subtest 'paid after cancel, the request keeping no customer: the ws\'s' =>
sub {
    my ($ws, $id, $in) = ('org_wh12', '6a092ebde4a7fbddc8a83212',
                          'in_wh12');
    awaiting($ws, $id, $in);
    $r->hset("lg:{ws:$ws}", stripeCustomerId => 'cus_wh12');
    answer_is(deliver(event('invoice.marked_uncollectible', {id => $in})),
              200, 'uncollectible');
    is(status_of($ws, $id), 'canceled/failed', 'canceled');
    ok(!$r->hexists("lg:{ws:$ws}:lr:$id", 'customer'), 'keeping none');

    my $body = answer_is(deliver(event('invoice.paid',
                                       {id => $in, object => 'invoice',
                                        status => 'paid'})),
                         200, 'invoice.paid');
    is_deeply($body, {received => \1, unapplied => \1}, 'unapplied');
    my @e = grep { ($_->{line_request_id} // '') eq $id }
            map { +{ @{ $_->[1] } } }
            $r->xrange('lg:{fleet}:reconcile', '-', '+');
    is(scalar @e, 1, 'queued') or diag explain \@e;
    is(join('/', map { $_ // '-' } @{ $e[0] // {} }{qw(reason customer)}),
       'paid_after_cancel/cus_wh12', 'under the workspace\'s customer');
};

subtest 'signature refusals change nothing' => sub {
    awaiting('org_wh4', '6a092ebde4a7fbddc8a83204', 'in_wh4');
    my $ev = event('invoice.paid', {id => 'in_wh4'});
    my $json = encode_json($ev);

    my @cases = (
        ['wrong secret', secret => 'whsec_wrong'],
        ['no header', header => undef],
        ['malformed header', header => 'garbage'],
        ['v0 only', header => 't=' . time . ',v0=abcd'],
        ['too old', t => time - 400],
        ['from the future', t => time + 400],
    );

    for my $c (@cases) {
        my ($name, %o) = @$c;
        my $body = answer_is(deliver($json, %o), 400, $name);
        is($body->{error}, 'Invalid signature', "$name: error text");
    }

    my $tampered = $json =~ s/in_wh4/in_wh5/r;
    answer_is(deliver($tampered, header => signature($json)), 400,
              'body changed after signing');

    is(status_of('org_wh4', '6a092ebde4a7fbddc8a83204'),
       'awaiting_payment/unpaid', 'request untouched');
    like($s->error_log, qr/Stripe webhook refused/, 'refusals are logged');
    unlike($s->error_log, qr/\Q$secret\E/, 'the secret is never logged');
};

subtest 'any matching v1 is accepted' => sub {
    my $json = encode_json(event('invoice.paid', {id => 'in_wh4'}));
    my $t = time;
    my $good = hmac_sha256_hex("$t.$json", $secret);
    my $header = "t=$t,v1=" . ('0' x 64) . ",v1=$good";
    answer_is(deliver($json, header => $header), 200, 'second v1 matches');
    is(status_of('org_wh4', '6a092ebde4a7fbddc8a83204'), 'provisioning/paid',
       'applied');
};

subtest 'signature before parsing' => sub {
    my $body = answer_is(deliver('{not json', secret => 'whsec_wrong'), 400,
                         'bad JSON, bad signature');
    is($body->{error}, 'Invalid signature', 'the signature is checked first');

    $body = answer_is(deliver('{not json'), 400, 'bad JSON, good signature');
    like($body->{error}, qr/Malformed JSON/, 'then the JSON');

    $body = answer_is(deliver('{"id":"evt_x"}'), 400, 'not an event');
    like($body->{error}, qr/Malformed Stripe event/, 'event shape checked');
};

subtest 'subscription events set status and plan' => sub {
    $r->hset('lg:{ws:org_sub}', stripeCustomerId => 'cus_org_sub',
             plan => 'mini',
             subscriptionStatus => 'active');
    my $t0 = time - 100;

    # current shape: items.data[].price.id
    my $sub = {id => 'sub_1', object => 'subscription', status => 'past_due',
               metadata => {workspace_id => 'org_sub'},
               items => {data => [{price => {id => 'price_plan_growth'}}]}};
    answer_is(deliver(event('customer.subscription.updated', $sub,
                            created => $t0 + 10)), 200, 'updated');
    is_deeply([$r->hmget('lg:{ws:org_sub}', 'plan', 'subscriptionStatus')],
              ['growth', 'past_due'], 'status and plan set');

    # an older event arriving late does not undo the newer one
    my $old = {%$sub, status => 'active'};
    my $body = answer_is(deliver(event('customer.subscription.updated', $old,
                                       created => $t0)), 200, 'stale');
    ok($body->{stale}, 'recognized as stale');
    is($r->hget('lg:{ws:org_sub}', 'subscriptionStatus'), 'past_due',
       'newer status kept');

    # pre-2025 shape: items.data[].plan.id, no price object
    my $legacy = {id => 'sub_1', object => 'subscription', status => 'active',
                  metadata => {workspace_id => 'org_sub'},
                  items => {data => [{plan => {id => 'price_plan_starter'}}]}};
    answer_is(deliver(event('customer.subscription.created', $legacy,
                            created => $t0 + 20,
                            api_version => '2023-10-16')), 200, 'legacy');
    is_deeply([$r->hmget('lg:{ws:org_sub}', 'plan', 'subscriptionStatus')],
              ['starter', 'active'], 'legacy shape read');

    answer_is(deliver(event('customer.subscription.deleted',
                            {%$legacy, status => 'active'},
                            created => $t0 + 30)), 200, 'deleted');
    is($r->hget('lg:{ws:org_sub}', 'subscriptionStatus'), 'canceled',
       'a deleted subscription is canceled');

    $body = answer_is(deliver(event('customer.subscription.updated',
                                    {%$sub, metadata => {}})), 200,
                      'not ours');
    ok($body->{ignored}, 'no workspace_id: ignored');

    # the workspace goes into its keys' hash tag: "acme}x" would write
    # lg:{ws:acme}x}, a key of workspace "acme"'s slot. No workspace has
    # such an id: not ours, acknowledged (a 400 would have Stripe retry
    # it for three days with the same answer, the endpoint failing)
    $r->hset('lg:{ws:acme}', stripeCustomerId => 'cus_acme',
             plan => 'mini', subscriptionStatus => 'active');
    my $keys = join ',', sort $r->keys('*');
    my $from = length $s->error_log;
    for my $bad ('acme}x', 'acme:x', "acme\nx", 'w' x 65) {
        $body = answer_is(deliver(event('customer.subscription.updated',
                                        {%$sub, customer => 'cus_acme',
                                         metadata => {
                                            workspace_id => $bad}})), 200,
                          'workspace_id "' . substr($bad, 0, 8) . '"');
        is_deeply($body, {received => \1, ignored => \1}, 'ignored');
    }
    my $log = substr($s->error_log, $from);
    like($log, qr/\[warn\].*metadata\.workspace_id is no workspace id/,
         'logged');
    unlike($log, qr/acme/, 'without the free text');
    $body = answer_is(deliver(event('customer.subscription.updated',
                                    {%$sub, id => 'sub_1}x'})), 400,
                      'a subscription id that is not a Stripe id');
    is($body->{error}, 'Malformed Stripe subscription', 'its error');
    is(join(',', sort $r->keys('*')), $keys, 'nothing written');
    is($r->hget('lg:{ws:acme}', 'subscriptionStatus'), 'active',
       'workspace "acme" untouched');
};

# Stripe does not promise order, and `created` has a second's resolution:
# Checkout's created ("incomplete") and updated ("active") often share one
subtest 'one second, two events of a subscription, in reverse' => sub {
    $r->hset('lg:{ws:org_sec}', stripeCustomerId => 'cus_org_sec',
             plan => 'mini');
    my $t = time - 50;
    my $sub = {id => 'sub_sec', object => 'subscription',
               metadata => {workspace_id => 'org_sec'},
               items => {data => [{price => {id => 'price_plan_growth'}}]}};
    answer_is(deliver(event('customer.subscription.updated',
                            {%$sub, status => 'active'}, created => $t)),
              200, 'updated (active) first');
    my $body = answer_is(deliver(event('customer.subscription.created',
                                       {%$sub, status => 'incomplete'},
                                       created => $t)),
                         200, 'then created (incomplete), the same second');
    ok($body->{stale}, 'stale: created is a subscription\'s first event');
    is($r->hget('lg:{ws:org_sec}', 'subscriptionStatus'), 'active',
       'still active');

    # deleted is a subscription's last event: it wins its second
    answer_is(deliver(event('customer.subscription.deleted',
                            {%$sub, status => 'canceled'},
                            created => $t + 5)), 200, 'deleted');
    $body = answer_is(deliver(event('customer.subscription.updated',
                                    {%$sub, status => 'active'},
                                    created => $t + 5)),
                      200, 'an update of the same second after it');
    ok($body->{stale}, 'stale');
    is($r->hget('lg:{ws:org_sec}', 'subscriptionStatus'), 'canceled',
       'still canceled');
};

# The workspace's events are ordered by created: before, one without it
# was applied as now, and one from the future was applied and made every
# later event stale until that time (the workspace frozen). Signed by
# the endpoint's secret all the same: 400, nothing written.
subtest 'created missing or from the future: 400, nothing applied' => sub {
    $r->hset('lg:{ws:org_cre}', stripeCustomerId => 'cus_org_cre',
             plan => 'mini', subscriptionStatus => 'active');
    my $sub = {id => 'sub_cre', object => 'subscription',
               status => 'past_due',
               metadata => {workspace_id => 'org_cre'},
               items => {data => [{price => {id => 'price_plan_growth'}}]}};
    my $keys = join ',', sort $r->keys('*');
    my $from = length $s->error_log;

    for my $case (['no created'], ['created null', undef],
                  ['created a string', '' . (time - 10)],
                  ['created not whole', time - 9.5],
                  ['created an object', {}])
    {
        my ($name, @v) = @$case;
        my $ev = event('customer.subscription.updated', $sub);
        delete $ev->{created};
        $ev->{created} = $v[0] if @v;
        my $body = answer_is(deliver($ev), 400, $name);
        is_deeply($body, {error => 'Malformed Stripe event'}, "$name: body");
    }

    my $t = time;
    for my $case (['an hour ahead', $t + 3600],
                  ['a thousand years ahead', $t + 1000 * 365 * 86400],
                  ['2^63 - 1', '9223372036854775807'])
    {
        my ($name, $created) = @$case;
        my $ev = event('customer.subscription.updated', $sub,
                       created => $created);
        my $json = encode_json($ev) =~ s/"created":"(\d+)"/"created":$1/r;
        my $body = answer_is(deliver($json), 400, "created $name");
        is_deeply($body, {error => 'Stripe event created in the future'},
                  "$name: body");
    }
    my $at = $t + 3600;
    like(substr($s->error_log, $from),
         qr/\[warn\].*Stripe\ subscription\ event\ "evt_test\d+"\ created
            \ at\ $at,\ past\ now\ and\ linegate_webhook_tolerance:
            \ refused/x, 'logged at warn');

    is(join(',', sort $r->keys('*')), $keys, 'nothing written');
    is_deeply([$r->hmget('lg:{ws:org_cre}', 'plan', 'subscriptionStatus')],
              ['mini', 'active'], 'status and plan kept');

    # a genuine event after them applies: nothing was frozen
    my $body = answer_is(deliver(event('customer.subscription.updated',
                                       $sub, created => $t)),
                         200, 'a genuine event, now');
    is_deeply($body, {received => \1}, 'applied');
    is_deeply([$r->hmget('lg:{ws:org_cre}', 'plan', 'subscriptionStatus')],
              ['growth', 'past_due'], 'its status and plan');

    # a clock a little ahead of ours, within the signature's tolerance
    $body = answer_is(deliver(event('customer.subscription.updated',
                                    {%$sub, status => 'active'},
                                    created => $t + 60)),
                      200, 'created a minute ahead');
    is_deeply($body, {received => \1}, 'applied');
    is($r->hget('lg:{ws:org_cre}', 'subscriptionStatus'), 'active',
       'its status');
};

# a plan changed by a new subscription, the old one deleted afterwards:
# the old one's end is not the workspace's, in either order
subtest 'a new subscription, the old one deleted' => sub {
    $r->hset('lg:{ws:org_two}', stripeCustomerId => 'cus_org_two',
             plan => 'mini');
    my $t = time - 50;
    my %base = (object => 'subscription',
                metadata => {workspace_id => 'org_two'});
    my $s1 = {%base, id => 'sub_old', status => 'active',
              items => {data => [{price => {id => 'price_plan_starter'}}]}};
    my $s2 = {%base, id => 'sub_new', status => 'active',
              items => {data => [{price => {id => 'price_plan_growth'}}]}};
    answer_is(deliver(event('customer.subscription.created', $s1,
                            created => $t)), 200, 'the first subscription');
    answer_is(deliver(event('customer.subscription.created', $s2,
                            created => $t + 10)), 200, 'a new one');
    is_deeply([$r->hmget('lg:{ws:org_two}', 'plan', 'subscriptionStatus')],
              ['growth', 'active'], 'on the new one');
    my $body = answer_is(deliver(event('customer.subscription.deleted',
                                       {%$s1, status => 'canceled'},
                                       created => $t + 11)),
                         200, 'the old one deleted after');
    ok($body->{stale}, 'not the workspace\'s subscription: stale');
    is_deeply([$r->hmget('lg:{ws:org_two}', 'plan', 'subscriptionStatus')],
              ['growth', 'active'], 'still active on the new one');

    # the other order: the old one's deletion first, then the new one's
    # creation (an older event, of another subscription)
    $r->hset('lg:{ws:org_three}', stripeCustomerId => 'cus_org_three',
             plan => 'mini');
    $_->{metadata} = {workspace_id => 'org_three'} for $s1, $s2;
    answer_is(deliver(event('customer.subscription.created', $s1,
                            created => $t)), 200, 'the first subscription');
    answer_is(deliver(event('customer.subscription.deleted',
                            {%$s1, status => 'canceled'},
                            created => $t + 11)), 200, 'deleted');
    is($r->hget('lg:{ws:org_three}', 'subscriptionStatus'), 'canceled',
       'canceled meanwhile');
    $body = answer_is(deliver(event('customer.subscription.created', $s2,
                                    created => $t + 10)),
                      200, 'the new one\'s creation, older, after');
    ok(!$body->{stale}, 'applied: it follows a subscription that ended');
    is_deeply([$r->hmget('lg:{ws:org_three}', 'plan',
                         'subscriptionStatus')],
              ['growth', 'active'], 'active on the new one');

    # an older event of another live subscription is still stale
    $body = answer_is(deliver(event('customer.subscription.updated',
                                    {%$s1, status => 'active'},
                                    created => $t + 1)),
                      200, 'an old update of the old one');
    ok($body->{stale}, 'stale');
};

# an ended subscription never comes back (canceled, incomplete_expired
# are final at Stripe): a late live event of one the workspace saw end,
# even while it followed another, is stale once that other ended too (a
# Stripe retry, or a delivery resent by hand from the dashboard)
subtest 'a late event of a subscription that ended is stale' => sub {
    $r->hset('lg:{ws:org_gone}', stripeCustomerId => 'cus_org_gone',
             plan => 'mini');
    my $t = time - 50;
    my %base = (object => 'subscription',
                metadata => {workspace_id => 'org_gone'});
    my $b = {%base, id => 'sub_gone_b', status => 'active',
             items => {data => [{price => {id => 'price_plan_starter'}}]}};
    my $a = {%base, id => 'sub_gone_a', status => 'active',
             items => {data => [{price => {id => 'price_plan_growth'}}]}};
    my @f = ('plan', 'subscriptionStatus', 'subscriptionId');
    answer_is(deliver(event('customer.subscription.created', $b,
                            created => $t)), 200, 'B');
    answer_is(deliver(event('customer.subscription.created', $a,
                            created => $t + 10)), 200, 'A, a new one');
    is_deeply([$r->hmget('lg:{ws:org_gone}', @f)],
              ['growth', 'active', 'sub_gone_a'], 'A followed');
    my $body = answer_is(deliver(event('customer.subscription.deleted',
                                       {%$b, status => 'canceled'},
                                       created => $t + 11)),
                         200, 'B deleted');
    ok($body->{stale}, 'not the workspace\'s: stale');
    answer_is(deliver(event('customer.subscription.deleted',
                            {%$a, status => 'canceled'},
                            created => $t + 20)), 200, 'A deleted');
    is_deeply([$r->hmget('lg:{ws:org_gone}', @f)],
              ['growth', 'canceled', 'sub_gone_a'], 'canceled');

    $body = answer_is(deliver(event('customer.subscription.updated', $b,
                                    created => $t + 5)),
                      200, 'a late update of B, active');
    ok($body->{stale}, 'B ended: stale');
    is_deeply([$r->hmget('lg:{ws:org_gone}', @f)],
              ['growth', 'canceled', 'sub_gone_a'], 'still canceled');
    $body = answer_is(deliver(event('customer.subscription.updated',
                                    {%$a, status => 'past_due'},
                                    created => $t + 30)),
                      200, 'a live update of A, newer than its end');
    ok($body->{stale}, 'A ended: stale');
    is($r->hget('lg:{ws:org_gone}', 'subscriptionStatus'), 'canceled',
       'still canceled');

    # one zset under the workspace's tag, bounded by the 30 days of
    # Stripe's retries and resends
    is_deeply([sort $r->zrange('lg:{ws:org_gone}:subend', 0, -1)],
              ['sub_gone_a', 'sub_gone_b'], 'both ends remembered');
    my $ttl = $r->ttl('lg:{ws:org_gone}:subend');
    ok($ttl > 29 * 86400 && $ttl <= 30 * 86400, "expires ($ttl s)");

    # an end seen longer ago than that is forgotten
    $r->zadd('lg:{ws:org_gone}:subend', time - 31 * 86400, 'sub_gone_b');
    $body = answer_is(deliver(event('customer.subscription.updated', $b,
                                    created => $t + 40)),
                      200, 'B again, its end forgotten');
    ok(!$body->{stale}, 'applied: it follows a subscription that ended');
    $r->hset('lg:{ws:org_gone}', subscriptionStatus => 'canceled',
             subscriptionId => 'sub_gone_a');

    # a new subscription after them applies, whatever its time
    my $c = {%base, id => 'sub_gone_c', status => 'trialing',
             items => {data => [{price => {id => 'price_plan_starter'}}]}};
    $body = answer_is(deliver(event('customer.subscription.created', $c,
                                    created => $t + 15)),
                      200, 'a new one, C');
    ok(!$body->{stale}, 'applied');
    is_deeply([$r->hmget('lg:{ws:org_gone}', @f)],
              ['starter', 'trialing', 'sub_gone_c'], 'C followed');

    # the window is kept at each end written: ends older than it go
    $r->zadd('lg:{ws:org_gone}:subend', time - 31 * 86400, 'sub_gone_old');
    answer_is(deliver(event('customer.subscription.deleted',
                            {%$c, status => 'canceled'},
                            created => $t + 50)), 200, 'C deleted');
    is_deeply([sort $r->zrange('lg:{ws:org_gone}:subend', 0, -1)],
              ['sub_gone_a', 'sub_gone_c'], 'the old end pruned');
};

# a plan changed by a new subscription whose first payment is pending
# (3DS): Stripe creates it "incomplete", not in force until paid, and it
# expires ("incomplete_expired") if never paid. Until it is paid the
# workspace keeps the subscription it follows, still active and billed
# (SPEC 2.2: an active base plan may request lines)
subtest 'a new subscription not yet paid leaves the active one' => sub {
    my $l = LG::Lines->new($s);
    my $w = $l->workspace('org_3ds', plan => 'mini', status => undef);
    my $t = time - 50;
    my %base = (object => 'subscription',
                metadata => {workspace_id => 'org_3ds'});
    my $old = {%base, id => 'sub_3ds_old', status => 'active',
               items => {data => [{price => {id => 'price_plan_starter'}}]}};
    my $new = {%base, id => 'sub_3ds_new', status => 'incomplete',
               items => {data => [{price => {id => 'price_plan_growth'}}]}};
    my @f = ('plan', 'subscriptionStatus', 'subscriptionId');
    answer_is(deliver(event('customer.subscription.created', $old,
                            created => $t)), 200, 'the subscription');
    is_deeply([$r->hmget('lg:{ws:org_3ds}', @f)],
              ['starter', 'active', 'sub_3ds_old'], 'followed');

    my $body = answer_is(deliver(event('customer.subscription.created',
                                       $new, created => $t + 10)),
                         200, 'a new one, incomplete');
    ok($body->{stale}, 'not in force: not applied');
    is_deeply([$r->hmget('lg:{ws:org_3ds}', @f)],
              ['starter', 'active', 'sub_3ds_old'], 'still the active one');

    $body = answer_is(deliver(event('customer.subscription.updated',
                                    {%$new, status => 'incomplete_expired'},
                                    created => $t + 20)),
                      200, 'the new one expires unpaid');
    ok($body->{stale}, 'not the workspace\'s: stale');
    is_deeply([$r->hmget('lg:{ws:org_3ds}', @f)],
              ['starter', 'active', 'sub_3ds_old'], 'still the active one');
    $l->answer($l->create($w), 201, 'a line may be requested');

    # the converse: paid, the new one is in force and followed; the old
    # one deleted after it is not the workspace's
    my $w2 = $l->workspace('org_3ds2', plan => 'mini', status => undef);
    $_->{metadata} = {workspace_id => 'org_3ds2'} for $old, $new;
    answer_is(deliver(event('customer.subscription.created', $old,
                            created => $t)), 200, 'the subscription');
    $body = answer_is(deliver(event('customer.subscription.created',
                                    $new, created => $t + 10)),
                      200, 'a new one, incomplete');
    ok($body->{stale}, 'not applied');
    $body = answer_is(deliver(event('customer.subscription.updated',
                                    {%$new, status => 'active'},
                                    created => $t + 10)),
                      200, 'paid (3DS done), the same second');
    ok(!$body->{stale}, 'applied');
    is_deeply([$r->hmget('lg:{ws:org_3ds2}', @f)],
              ['growth', 'active', 'sub_3ds_new'], 'the new one followed');
    $body = answer_is(deliver(event('customer.subscription.deleted',
                                    {%$old, status => 'canceled'},
                                    created => $t + 11)),
                      200, 'the old one deleted');
    ok($body->{stale}, 'stale');
    is_deeply([$r->hmget('lg:{ws:org_3ds2}', @f)],
              ['growth', 'active', 'sub_3ds_new'], 'still the new one');
    $l->answer($l->create($w2), 201, 'a line may be requested');

    # after the followed one ended, an incomplete one is followed (it
    # replaces nothing in force), and its expiry then ends the workspace's
    $_->{metadata} = {workspace_id => 'org_3ds3'} for $old, $new;
    $r->hset('lg:{ws:org_3ds3}', stripeCustomerId => 'cus_org_3ds3',
             plan => 'mini');
    answer_is(deliver(event('customer.subscription.created', $old,
                            created => $t)), 200, 'the subscription');
    answer_is(deliver(event('customer.subscription.deleted',
                            {%$old, status => 'canceled'},
                            created => $t + 5)), 200, 'deleted');
    $body = answer_is(deliver(event('customer.subscription.created',
                                    $new, created => $t + 10)),
                      200, 'a new one, incomplete');
    ok(!$body->{stale}, 'applied');
    is_deeply([$r->hmget('lg:{ws:org_3ds3}', @f)],
              ['growth', 'incomplete', 'sub_3ds_new'], 'followed');
    answer_is(deliver(event('customer.subscription.updated',
                            {%$new, status => 'incomplete_expired'},
                            created => $t + 20)), 200, 'expired');
    is($r->hget('lg:{ws:org_3ds3}', 'subscriptionStatus'),
       'incomplete_expired', 'the workspace\'s ended');
};

subtest 'a subscription event before its workspace: applied on retry' => sub {
    my $sub = {id => 'sub_early', object => 'subscription',
               status => 'active',
               metadata => {workspace_id => 'org_late'},
               items => {data => [{price => {id => 'price_plan_growth'}}]}};
    my $ev = event('customer.subscription.created', $sub);

    my $tx = deliver($ev);
    my $body = answer_is($tx, 409, 'unknown workspace');
    is($body->{code}, 'WORKSPACE_UNKNOWN', 'code');
    ok(!$r->exists('lg:{ws:org_late}'), 'no workspace created');
    ok(!$r->exists("lg:stripe:event:$ev->{id}")
       && !$r->exists("lg:{ws:org_late}:event:$ev->{id}"),
       'the event is not marked');

    # Stripe delivers it again once the operator created the workspace
    $r->hset('lg:{ws:org_late}', stripeCustomerId => 'cus_org_late',
             plan => 'mini');
    $body = answer_is(deliver($ev), 200, 'redelivered');
    ok(!$body->{duplicate}, 'not taken for a duplicate');
    is_deeply([$r->hmget('lg:{ws:org_late}', 'plan', 'subscriptionStatus')],
              ['growth', 'active'], 'applied');
    $body = answer_is(deliver($ev), 200, 'once more');
    ok($body->{duplicate}, 'now a duplicate');
    # the de-duplication under the workspace's tag: one slot (issue 10)
    ok($r->exists("lg:{ws:org_late}:event:$ev->{id}"),
       'remembered as lg:{ws:W}:event:<id>');
    ok(!$r->exists("lg:stripe:event:$ev->{id}"), 'not globally');

    # an unknown invoice is not ours: acknowledged, and not remembered
    my $inv = event('invoice.paid', {id => 'in_foreign'});
    $body = answer_is(deliver($inv), 200, 'unknown invoice');
    ok($body->{unknown}, 'unknown');
    ok(!$r->exists("lg:stripe:event:$inv->{id}"), 'not marked');
};

subtest 'a subscription event of another customer is refused' => sub {
    $r->hset('lg:{ws:org_cus}', stripeCustomerId => 'cus_owner',
             plan => 'mini', subscriptionStatus => 'active');
    my $sub = {id => 'sub_foreign', object => 'subscription',
               status => 'canceled', customer => 'cus_intruder',
               metadata => {workspace_id => 'org_cus'},
               items => {data => [{price => {id => 'price_plan_growth'}}]}};
    my $ev = event('customer.subscription.deleted', $sub);
    my $from = length $s->error_log;
    my $body = answer_is(deliver($ev), 200, 'another customer\'s');
    is_deeply($body, {received => \1, refused => \1},
              'acknowledged, refused: retries cannot change it');
    is_deeply([$r->hmget('lg:{ws:org_cus}', 'plan', 'subscriptionStatus',
                         'subscriptionId')],
              ['mini', 'active', undef], 'the workspace is left alone');
    ok(!$r->exists("lg:{ws:org_cus}:event:$ev->{id}"), 'not remembered');
    like(substr($s->error_log, $from),
         qr/\[warn\].*customer "cus_intruder" for workspace "org_cus"/,
         'logged');

    # no customer in the event, or an expanded one of another customer
    delete $sub->{customer};
    $body = answer_is(deliver(event('customer.subscription.deleted',
                                    {%$sub, customer => undef})),
                      200, 'no customer');
    ok($body->{refused}, 'refused');
    $body = answer_is(deliver(event('customer.subscription.deleted',
                                    {%$sub, customer => {id => 'cus_x'}})),
                      200, 'an expanded customer');
    ok($body->{refused}, 'refused');
    is($r->hget('lg:{ws:org_cus}', 'subscriptionStatus'), 'active',
       'still active');

    # the workspace's own customer, expanded or not: applied
    $body = answer_is(deliver(event('customer.subscription.updated',
                                    {%$sub, status => 'past_due',
                                     customer => {id => 'cus_owner'}})),
                      200, 'its own customer, expanded');
    is_deeply($body, {received => \1}, 'applied');
    is_deeply([$r->hmget('lg:{ws:org_cus}', 'plan', 'subscriptionStatus')],
              ['growth', 'past_due'], 'status and plan set');

    # a workspace with no customer to compare with: Stripe retries
    $r->hset('lg:{ws:org_nocus}', plan => 'mini');
    $ev = event('customer.subscription.created',
                {%$sub, id => 'sub_nocus', status => 'active',
                 customer => 'cus_org_nocus',
                 metadata => {workspace_id => 'org_nocus'}});
    $body = answer_is(deliver($ev), 409, 'no stripeCustomerId');
    is($body->{code}, 'CUSTOMER_UNKNOWN', 'code');
    ok(!$r->hexists('lg:{ws:org_nocus}', 'subscriptionStatus'),
       'not applied');
    ok(!$r->exists("lg:{ws:org_nocus}:event:$ev->{id}"), 'not remembered');
    $r->hset('lg:{ws:org_nocus}', stripeCustomerId => 'cus_org_nocus');
    $body = answer_is(deliver($ev), 200, 'delivered again once set');
    is_deeply($body, {received => \1}, 'applied');
    is($r->hget('lg:{ws:org_nocus}', 'subscriptionStatus'), 'active',
       'active');
};

# Stripe's subscription statuses only: the status is stored and shown
# as sent. Another is acknowledged (a 400 would be retried for three
# days), logged without its bytes, not applied
subtest 'a status Stripe does not have is ignored' => sub {
    $r->hset('lg:{ws:org_st}', stripeCustomerId => 'cus_org_st',
             plan => 'mini', subscriptionStatus => 'active');
    my $sub = {id => 'sub_st', object => 'subscription',
               metadata => {workspace_id => 'org_st'},
               items => {data => [{price => {id => 'price_plan_growth'}}]}};
    my $t = time - 100;
    my $from = length $s->error_log;
    # empty, or too long to be Stripe's: a string all the same, ignored
    for my $bad ('deleted', 'ACTIVE', 'active ', 'x' x 32, '', 'x' x 33,
                 'x' x 5000)
    {
        my $ev = event('customer.subscription.updated',
                       {%$sub, status => $bad}, created => $t++);
        my $body = answer_is(deliver($ev), 200,
                             'status "' . substr($bad, 0, 8) . '" ('
                             . length($bad) . ' bytes)');
        is_deeply($body, {received => \1, ignored => \1}, 'ignored');
        ok(!$r->exists("lg:{ws:org_st}:event:$ev->{id}"), 'not remembered');
    }
    is_deeply([$r->hmget('lg:{ws:org_st}', 'plan', 'subscriptionStatus')],
              ['mini', 'active'], 'workspace untouched');
    my $log = substr($s->error_log, $from);
    like($log, qr/\[warn\].*no Stripe subscription status \(7 bytes\)/,
         'logged');
    like($log, qr/\[warn\].*no Stripe subscription status \(0 bytes\)/,
         'an empty one logged');
    like($log, qr/\[warn\].*no Stripe subscription status \(5000 bytes\)/,
         'a long one logged, by its length');
    unlike($log, qr/ACTIVE|xxxx/, 'without the status sent');

    # no status, or not a string: no subscription of Stripe's
    my $keys = join ',', sort $r->keys('*');
    for my $bad (undef, 5, ['active'], {}) {
        my $ev = event('customer.subscription.updated',
                       {%$sub, status => $bad}, created => $t++);
        my $body = answer_is(deliver($ev), 400,
                             'status ' . (defined $bad ? ref $bad || $bad
                                                       : 'null'));
        is($body->{error}, 'Malformed Stripe subscription', 'its error');
    }
    my %none = %$sub;
    my $body = answer_is(deliver(event('customer.subscription.updated',
                                       \%none, created => $t++)),
                         400, 'no status');
    is($body->{error}, 'Malformed Stripe subscription', 'its error');
    is(join(',', sort $r->keys('*')), $keys, 'nothing written');

    # the ends last: a subscription seen ended takes no live status again
    for my $ok (qw(incomplete trialing active past_due unpaid paused
                   incomplete_expired canceled))
    {
        answer_is(deliver(event('customer.subscription.updated',
                                {%$sub, status => $ok}, created => $t++)),
                  200, $ok);
        is($r->hget('lg:{ws:org_st}', 'subscriptionStatus'), $ok,
           "$ok applied");
    }
};

# "\u0000" is valid JSON: in a field linegate does not read it is
# ignored (SPEC); in one it reads it must not cut the value short
subtest 'a NUL in a subscription event' => sub {
    $r->hset('lg:{ws:org_nul}', stripeCustomerId => 'cus_org_nul',
             plan => 'mini', subscriptionStatus => 'past_due');
    my $sub = {id => 'sub_nul', object => 'subscription',
               metadata => {workspace_id => 'org_nul'},
               description => "a\0b",
               items => {data => [{price => {id => 'price_plan_growth'}}]}};
    my $t = time - 100;
    my $body = answer_is(deliver(event('customer.subscription.updated',
                                       {%$sub, status => 'active'},
                                       created => $t)),
                         200, 'NUL in an unknown field');
    is_deeply($body, {received => \1}, 'applied');
    is_deeply([$r->hmget('lg:{ws:org_nul}', 'plan', 'subscriptionStatus')],
              ['growth', 'active'], 'status and plan set');

    my $keys = join ',', sort $r->keys('*');
    $body = answer_is(deliver(event('customer.subscription.updated',
                                    {%$sub, status => "canceled\0x"},
                                    created => $t + 1)),
                      400, 'NUL in the status');
    is($body->{error}, 'Malformed Stripe subscription', 'its error');
    $body = answer_is(deliver(event('customer.subscription.updated',
                                    {%$sub, status => 'canceled',
                                     metadata => {
                                         workspace_id => "org_nul\0x"}},
                                    created => $t + 2)),
                      200, 'NUL in the workspace id');
    ok($body->{ignored}, 'not ours: ignored');
    is(join(',', sort $r->keys('*')), $keys, 'nothing written');
    is($r->hget('lg:{ws:org_nul}', 'subscriptionStatus'), 'active',
       'status kept');
};

subtest 'other events are acknowledged and ignored' => sub {
    my $body = answer_is(deliver(event('charge.succeeded', {id => 'ch_1'})),
                         200, 'charge.succeeded');
    ok($body->{ignored}, 'ignored');
};

subtest 'delivered by the Stripe stub' => sub {
    $s->stub(POST => '/_stub/customers', {id => 'cus_wh', card => \1});
    my $inv = $s->stub(POST => '/_stub/webhook', {
        url => $s->url('/webhooks/stripe'), type => 'invoice.voided',
        object => {id => 'in_wh9', object => 'invoice'},
    })->res->json;
    is($inv->{status}, 200, 'the stub signs as Stripe does');
};

subtest 'Redis down: 503, Stripe retries later' => sub {
    awaiting('org_wh6', '6a092ebde4a7fbddc8a83206', 'in_wh6');
    $s->stop_redis;
    my $body = answer_is(deliver(event('invoice.paid', {id => 'in_wh6'})),
                         503, 'store unavailable');
    is($body->{code}, 'STORE_UNAVAILABLE', 'code');
    my $from = length $s->error_log;
    $s->start_redis;
    ok($s->wait_redis_connected($from, 30), 'workers reconnected');
    $r = $s->redis;

    # a new, empty Redis: the state is set up again
    awaiting('org_wh6', '6a092ebde4a7fbddc8a83206', 'in_wh6');
    answer_is(deliver(event('invoice.paid', {id => 'in_wh6'})), 200,
              'redelivery after recovery');
    is(status_of('org_wh6', '6a092ebde4a7fbddc8a83206'), 'provisioning/paid',
       'applied on redelivery');
};

done_testing;
