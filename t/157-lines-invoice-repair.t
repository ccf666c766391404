# A repair step of an add-on's invoice that fails once more is tried
# again (docs/lines-api.md, "Repairing an invoice"): the void or delete of
# an invoice nobody will pay, and the draft asked again (same
# Idempotency-Key) when its answer was lost, cut, or met Stripe's 409
# while its first call was still in flight. Whatever the fault, no draft
# or open invoice is left at Stripe without the request that names it.
use strict;
use warnings;
use lib 't/lib';

use Test::More;
use Time::HiRes qw(sleep);
use LG::Stack;
use LG::Test;
use LG::Lines qw(body);

my $s = LG::Stack->new(STRIPE_TIMEOUT => '1s')->start;
my $l = LG::Lines->new($s);
my $r = $s->redis;
my $n = 0;

sub ws { return $l->workspace('org_r' . ++$n, @_) }

my $EMAIL = body(channelType => 'email', email => 'e@example.com');

sub clean {
    my ($w, $name) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;

    ok(!defined $l->pending($w), "$name: no pending marker");
    my @ids = $l->request_ids($w);
    is(scalar @ids, 0, "$name: no request left") or diag "@ids";
    my @idem = $r->keys("lg:{ws:$w->{id}}:idem:*");
    is(scalar @idem, 0, "$name: no idempotency key held");
    my @left = grep { $_->{status} =~ /^(?:draft|open)$/ }
               $l->invoices($w->{customer});
    is(scalar @left, 0, "$name: no draft or open invoice left")
        or diag explain [map { "$_->{id} $_->{status}" } @left];
}

my @CASES = (
    ['finalize 500, then the void 500' =>
     [path_prefix => '/v1/invoices/', status => 500, count => 2]],
    ['finalize 502, the void 409 (a draft), the delete 503 x3' =>
     [path_prefix => '/v1/invoices/', status => 502],
     [method => 'DELETE', path_prefix => '/v1/invoices/', status => 503,
      count => 3]],
    ['finalize dropped, the void 429 then dropped' =>
     [path_prefix => '/v1/invoices/', drop => 1],
     [path_prefix => '/v1/invoices/', status => 429],
     [path_prefix => '/v1/invoices/', drop => 1]],
    ['the draft timed out, asked again while in flight (409)' =>
     [path_prefix => '/v1/invoices', latency_ms => 1800]],
    ['the draft timed out, and timed out again when asked again' =>
     [path_prefix => '/v1/invoices', latency_ms => 1800, count => 2]],
    ['the draft cut, and cut again twice when asked again' =>
     [path_prefix => '/v1/invoices', cut => 1, after_commit => 1,
      count => 3]],
    ['the draft 500 after commit, asked again: 503 x2' =>
     [path_prefix => '/v1/invoices', status => 500, after_commit => 1],
     [path_prefix => '/v1/invoices', status => 503, count => 2]],
);

for my $case (@CASES) {
    my ($name, @faults) = @$case;
    subtest $name => sub {
        my $w = ws();
        $l->fault(@$_) for @faults;
        $l->error_is($l->create($w, $EMAIL, 'Idempotency-Key' => 'k'),
                     502, 'BILLING_UNAVAILABLE', $name);
        clean($w, $name);
        $l->clear_faults;
        # the delayed first call of the timeout case has ended by now
        sleep 0.1 for 1 .. 10;
        clean($w, "$name, later");
        my $b = $l->answer($l->create($w, $EMAIL, 'Idempotency-Key' => 'k2'),
                           201, "$name: a new request succeeds");
        is($b->{status}, 'awaiting_payment', "$name: billed");
    };
}

subtest 'payment_link: the new draft timed out, then 409' => sub {
    my $w = ws();
    my ($id, $c) = $l->awaiting($w);
    $l->invoice_do($c->{invoiceId}, 'void');
    $l->fault(path_prefix => '/v1/invoices', method => 'POST',
              latency_ms => 1800);
    $l->error_is($l->manage($w, $id, 'payment_link'), 502,
                 'BILLING_UNAVAILABLE', 'timeout');
    sleep 0.1 for 1 .. 10;
    my @left = grep { $_->{status} =~ /^(?:draft|open)$/ }
               $l->invoices($w->{customer});
    is(scalar @left, 0, 'no draft or open invoice left')
        or diag explain [map { "$_->{id} $_->{status}" } @left];
    $l->clear_faults;
    my $b = $l->answer($l->manage($w, $id, 'payment_link'), 200, 'retried');
    @left = grep { $_->{status} eq 'open' } $l->invoices($w->{customer});
    is(scalar @left, 1, 'one open invoice');
};

unlike($s->error_log, qr/\[(?:alert|crit|emerg)\]|exited on signal/,
       'no alerts, no crash');

done_testing;
