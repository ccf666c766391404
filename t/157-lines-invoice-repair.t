# A repair step of an add-on's invoice that fails once more is tried
# again (docs/lines-api.md, "Repairing an invoice"): the void or delete of
# an invoice nobody will pay, and the draft asked again (same
# Idempotency-Key) when its answer was lost, cut, or met Stripe's 409
# while its first call was still in flight. Whatever the fault, no draft
# or open invoice is left at Stripe without the request that names it,
# or without an entry of lg:{fleet}:reconcile that a run settles.
use strict;
use warnings;
use lib 't/lib';

use Test::More;
use Time::HiRes qw(sleep);
use LG::Stack;
use LG::Test qw(:DEFAULT eventually);
use LG::Lines qw(body);

# a reconciliation run settles at once what a request queued
my $s = LG::Stack->new(STRIPE_TIMEOUT => '1s',
                       HTTP_EXTRA => 'linegate_reconcile_delay 0;')->start;
my $l = LG::Lines->new($s);
my $r = $s->redis;
my $n = 0;

sub ws { return $l->workspace('org_r' . ++$n, @_) }

my $EMAIL = body(channelType => 'email', email => 'e@example.com');

sub clean {
    my ($w, $name) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;

    $l->left_no_request($w, $name);
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

# The call asked again after a lost answer (the draft, the void) refused
# with anything but its own replayed result: a 401 or 403 (a key rolled
# or restricted between the two) is decided before Stripe looks at the
# Idempotency-Key, so it says nothing of what the first call did. The
# request never takes it as "nothing made": what the first call may have
# left is queued (invoice_unrepaired: by the request's id when the
# draft's id was never seen), then the reservation is released; a
# reconciliation run discards it.

# the entries of lg:{fleet}:reconcile of a line request
sub queued {
    my ($id) = @_;
    return grep { ($_->{line_request_id} // '') eq $id }
           map { +{ @{ $_->[1] } } }
           $r->xrange('lg:{fleet}:reconcile', '-', '+');
}

# a reconciliation run: its entry of the line request
sub run_for {
    my ($id) = @_;
    my $tx = $s->op(POST => '/reconciliation/run');
    is($tx->res->code, 200, 'the run answered 200')
        or diag $tx->res->body;
    my ($e) = grep { ($_->{line_request_id} // '') eq $id }
              @{ ($tx->res->json // {})->{entries} // [] };
    return $e // {};
}

sub released {
    my ($w, $name) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;

    ok(!defined $l->pending($w), "$name: no pending marker");
    is(scalar(my @ids = $l->request_ids($w)), 0, "$name: released");
    is(scalar(my @k = $r->keys("lg:{ws:$w->{id}}:idem:*")), 0,
       "$name: the key is free");
}

for my $st (401, 403) {
    subtest "the draft lost, then $st when asked again: queued" => sub {
        my $w = ws();
        $l->fault(status => 500, after_commit => 1);
        $l->fault(status => $st);
        $l->error_is($l->create($w, $EMAIL, 'Idempotency-Key' => 'k'),
                     502, 'BILLING_UNAVAILABLE', "lost, then $st");
        is(scalar(grep { ($_->{params}{customer} // '') eq $w->{customer} }
                  $l->stripe_log(qr{^/v1/invoices$})), 2, 'asked twice');
        released($w, "lost, then $st");

        my @drafts = grep { $_->{status} eq 'draft' }
                     $l->invoices($w->{customer});
        is(scalar @drafts, 1, 'the first call made a draft, unseen');
        my $id = $drafts[0]{metadata}{line_request_id} // '-';
        # the queuing is a durable write of the fleet's slot: on a
        # cluster another node than the release the answer waited for
        my @q;
        ok(eventually(sub { @q = queued($id) }, 5),
           'queued for reconciliation');
        is(scalar @q, 1, 'once');
        is($q[0]{reason}, 'invoice_unrepaired', 'invoice_unrepaired');
        is($q[0]{invoice_id} // '', '', 'by the request: no id seen');

        is(run_for($id)->{outcome}, 'deleted', 'the run deletes it');
        ok(!$l->invoice($drafts[0]{id}), 'gone from Stripe');
        is(scalar(my @left = queued($id)), 0, 'the entry settled');
    };
}

for my $st (401, 403) {
    subtest "finalize lost, the void lost, then $st: queued" => sub {
        my $w = ws();
        $l->fault(path_prefix => '/v1/invoices/', status => 500,
                  after_commit => 1);
        $l->fault(path_prefix => '/v1/invoices/', status => 500);
        $l->fault(path_prefix => '/v1/invoices/', status => $st);
        $l->error_is($l->create($w, $EMAIL, 'Idempotency-Key' => 'k'),
                     502, 'BILLING_UNAVAILABLE', "void lost, then $st");
        released($w, "void lost, then $st");

        my @open = grep { $_->{status} eq 'open' }
                   $l->invoices($w->{customer});
        is(scalar @open, 1, 'the invoice is open: neither void worked');
        my $id = $open[0]{metadata}{line_request_id} // '-';
        # the queuing is a durable write of the fleet's slot: on a
        # cluster another node than the release the answer waited for
        my @q;
        ok(eventually(sub { @q = queued($id) }, 5),
           'queued for reconciliation');
        is(scalar @q, 1, 'once');
        is($q[0]{invoice_id}, $open[0]{id}, 'naming the invoice');

        is(run_for($id)->{outcome}, 'voided', 'the run voids it');
        is($l->invoice($open[0]{id})->{status}, 'void', 'void at Stripe');
    };
}

subtest 'payment_link: the new draft lost, then 401: queued' => sub {
    my $w = ws();
    my ($id, $c) = $l->awaiting($w);
    $l->invoice_do($c->{invoiceId}, 'void');
    $l->fault(status => 500, after_commit => 1);
    $l->fault(status => 401);
    $l->error_is($l->manage($w, $id, 'payment_link'), 502,
                 'BILLING_UNAVAILABLE', 'lost, then 401');
    is($l->lr($w, $id)->{invoiceId}, $c->{invoiceId},
       'the request names its old invoice');
    my @drafts = grep { $_->{status} eq 'draft' }
                 $l->invoices($w->{customer});
    is(scalar @drafts, 1, 'the first call made a draft, unseen');
    my @q;
    ok(eventually(sub { @q = queued($id) }, 5), 'queued for reconciliation');
    is(scalar @q, 1, 'once');
    is($q[0]{reason}, 'invoice_unrepaired', 'invoice_unrepaired');

    is(run_for($id)->{outcome}, 'deleted', 'the run deletes it');
    ok(!$l->invoice($drafts[0]{id}), 'gone from Stripe');
    my $b = $l->answer($l->manage($w, $id, 'payment_link'), 200,
                       'a retry issues anew');
    ok(!$b->{reused}, 'a new link');
};

unlike($s->error_log, qr/\[(?:alert|crit|emerg)\]|exited on signal/,
       'no alerts, no crash');

done_testing;
