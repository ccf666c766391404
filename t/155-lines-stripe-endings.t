# Every ending of a Stripe call goes through the Lines API request's own
# failure step (issue 13): an answer over subrequest_output_buffer_size
# (64k), an answer cut in the middle, the client gone while Stripe is
# asked. Create answers 502 BILLING_UNAVAILABLE, voids or deletes what it
# made (a draft whose answer was lost is asked for again with the same
# Idempotency-Key to learn its id), releases the reservation and the
# idempotency key; payment_link and cancel answer 502 and leave a state a
# retry completes.
use strict;
use warnings;
use lib 't/lib';

use Test::More;
use IO::Socket::INET;
use Mojo::JSON qw(encode_json);
use Time::HiRes qw(sleep time);
use LG::Stack;
use LG::Test;
use LG::Lines qw(body);

my $s = LG::Stack->new->start;
my $l = LG::Lines->new($s);
my $r = $s->redis;
my $n = 0;

sub ws { return $l->workspace('org_e' . ++$n, @_) }

my $EMAIL = body(channelType => 'email', email => 'e@example.com');
my $OVER = 100_000;

my %STEP = (
    invoice  => '/v1/invoices',
    item     => '/v1/invoiceitems',
    finalize => '/v1/invoices/',
);

# nothing left: no reservation, no request, no key, and no draft or open
# invoice that no request names; then a new request succeeds
sub clean {
    my ($w, $name, $key) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;

    my @ids = $l->left_no_request($w, $name);

    my %named = map { ($l->lr($w, $_)->{invoiceId} // '') => 1 } @ids;
    my @left = grep { $_->{status} =~ /^(?:draft|open)$/
                      && !$named{ $_->{id} } }
               $l->invoices($w->{customer});
    is(scalar @left, 0, "$name: no draft or open invoice without a request")
        or diag explain [map { "$_->{id} $_->{status}" } @left];

    my $b = $l->answer($l->create($w, $EMAIL, $key ? ('Idempotency-Key'
                                                      => $key) : ()),
                       201, "$name: a new request succeeds");
    is($b->{status}, 'awaiting_payment', "$name: billed");
}

for my $step (qw(invoice item finalize)) {
    for my $fault ([oversize => $OVER], [cut => 1]) {
        my $name = "$step: $fault->[0]";
        subtest $name => sub {
            my $w = ws();
            $l->fault(path_prefix => $STEP{$step}, @$fault);
            $l->error_is($l->create($w, $EMAIL, 'Idempotency-Key' => 'e'),
                         502, 'BILLING_UNAVAILABLE', $name);
            clean($w, $name, 'e');
            $l->clear_faults;
        };
    }
}

subtest 'the client leaves while Stripe is asked' => sub {
    my $w = ws();
    $l->fault(path_prefix => '/v1/invoiceitems', latency_ms => 1500);

    my $json = encode_json($EMAIL);
    my $c = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                  PeerPort => $s->port) or die $!;
    print $c "POST /api/line-requests HTTP/1.1\r\nHost: x\r\n"
        . "Authorization: Bearer $w->{key}\r\nIdempotency-Key: gone\r\n"
        . "Content-Type: application/json\r\n"
        . 'Content-Length: ' . length($json) . "\r\n\r\n$json";
    sleep 0.1 until $l->pending($w);
    close $c;

    # the call ends (the item added late), its steps run to the end: the
    # reservation stays until the invoice is stored, and nobody reads the
    # 201 (about 1.5 s on a quiet machine: wait at most 30 s)
    my $by = time + 30;
    sleep 0.1 until do {
        my @r = $l->request_ids($w);
        @r == 1 && ($l->lr($w, $r[0])->{invoiceId} // '') =~ /^in_/;
    } || time > $by;
    my @ids = $l->request_ids($w);
    is(scalar @ids, 1, 'the request was completed');
    my $lr = @ids ? $l->lr($w, $ids[0]) : {};
    like($lr->{invoiceId} // '', qr/^in_/, 'its invoice stored');
    my $b = $l->answer($l->create($w, $EMAIL, 'Idempotency-Key' => 'gone'),
                       201, 'the same key');
    is($b->{line}{_id}, $ids[0], 'replays the request made meanwhile');
    $l->clear_faults;
};

subtest 'the client leaves, then Stripe fails' => sub {
    my $w = ws();
    $l->fault(path_prefix => '/v1/invoiceitems', latency_ms => 1500,
              status => 500);

    my $json = encode_json($EMAIL);
    my $c = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                  PeerPort => $s->port) or die $!;
    print $c "POST /api/line-requests HTTP/1.1\r\nHost: x\r\n"
        . "Authorization: Bearer $w->{key}\r\nIdempotency-Key: gone\r\n"
        . "Content-Type: application/json\r\n"
        . 'Content-Length: ' . length($json) . "\r\n\r\n$json";
    sleep 0.1 until $l->pending($w);
    close $c;

    # the failed call's steps undo it (about 1.5 s on a quiet machine:
    # wait at most 30 s)
    my $by = time + 30;
    sleep 0.1 until (!defined $l->pending($w) && !(() = $l->request_ids($w))
                     && !$r->keys("lg:{ws:$w->{id}}:idem:*")
                     && !grep { $_->{status} =~ /^(?:draft|open)$/ }
                        $l->invoices($w->{customer}))
                    || time > $by;
    clean($w, 'client gone', 'gone');
    $l->clear_faults;
};

subtest 'cancel: the void answered over the buffer' => sub {
    my $w = ws();
    my ($id, $c) = $l->awaiting($w);
    $l->fault(path_prefix => "/v1/invoices/$c->{invoiceId}/void",
              oversize => $OVER);
    $l->error_is($l->manage($w, $id, 'cancel'), 502, 'BILLING_UNAVAILABLE',
                 'oversize');
    is($l->lr($w, $id)->{provisioningStatus}, 'awaiting_payment',
       'Redis unchanged: Stripe\'s outcome is not known');
    my $b = $l->answer($l->manage($w, $id, 'cancel'), 200, 'retried');
    is($b->{status}, 'canceled', 'canceled');
    ok(!defined $l->pending($w), 'nothing blocks the workspace');
};

subtest 'cancel: the void cut' => sub {
    my $w = ws();
    my ($id, $c) = $l->awaiting($w);
    $l->fault(path_prefix => "/v1/invoices/$c->{invoiceId}/void", cut => 1);
    $l->error_is($l->manage($w, $id, 'cancel'), 502, 'BILLING_UNAVAILABLE',
                 'cut');
    my $b = $l->answer($l->manage($w, $id, 'cancel'), 200, 'retried');
    is($b->{status}, 'canceled', 'canceled');
};

for my $fault ([oversize => $OVER], [cut => 1]) {
    subtest "payment_link: the new invoice's draft, $fault->[0]" => sub {
        my $w = ws();
        my ($id, $c) = $l->awaiting($w);
        $l->invoice_do($c->{invoiceId}, 'void');
        $l->fault(path_prefix => '/v1/invoices', method => 'POST', @$fault);
        $l->error_is($l->manage($w, $id, 'payment_link'), 502,
                     'BILLING_UNAVAILABLE', $fault->[0]);
        my $lr = $l->lr($w, $id);
        is($lr->{provisioningStatus}, 'awaiting_payment', 'still awaiting');
        ok(!defined $lr->{reissueAt}, 'the reissue claim is released');
        my @left = grep { $_->{status} =~ /^(?:draft|open)$/ }
                   $l->invoices($w->{customer});
        is(scalar @left, 0, 'no draft or open invoice left')
            or diag explain [map { "$_->{id} $_->{status}" } @left];

        my $b = $l->answer($l->manage($w, $id, 'payment_link'), 200,
                           'retried');
        is($b->{reused}, Mojo::JSON->false, 'a new invoice');
        @left = grep { $_->{status} eq 'open' } $l->invoices($w->{customer});
        is(scalar @left, 1, 'one open invoice');
        $l->clear_faults;
    };
}

unlike($s->error_log, qr/\[(?:alert|crit|emerg)\]|exited on signal/,
       'no alerts, no crash');

done_testing;
