# Races with real parallel requests (SPEC 2.2-2.6): concurrent creations
# against the plan's capacity and the "one request awaits payment" rule,
# invoice.paid webhooks, polls and payment_link racing cancel, parallel
# payment_link on a void invoice.
use strict;
use warnings;
use lib 't/lib';

use Test::More;
use Mojo::IOLoop;
use Mojo::Promise;
use Mojo::UserAgent;
use Time::HiRes ();
use LG::Stack;
use LG::Test qw(:DEFAULT eventually);
use LG::Lines qw(body);

my $s = LG::Stack->new(RECONCILE_INTERVAL => '0')->start;
my $l = LG::Lines->new($s);
my $r = $s->redis;
my $n = 0;

sub ws { return $l->workspace('org_x' . ++$n, @_) }

my $CREATE = '/api/line-requests';
my $EMAIL = body(channelType => 'email', email => 'x@example.com');

sub codes {
    my %c;
    $c{ $_->res->code // 'none' }++ for @_;
    return \%c;
}

sub json_of { return $_[0]->res->json // {} }

subtest '20 concurrent add-on requests: one awaits payment, one invoice'
    => sub {
    my $w = ws();
    my @txs = $l->parallel(map { [$w, POST => $CREATE, $EMAIL] } 1 .. 20);
    is_deeply(codes(@txs), {201 => 1, 409 => 19}, 'one 201, nineteen 409')
        or diag explain codes(@txs);

    my ($won) = grep { $_->res->code == 201 } @txs;
    my $id = json_of($won)->{line}{_id};
    is(json_of($won)->{status}, 'awaiting_payment', 'the 201 awaits payment');
    my @pending = map { json_of($_)->{pendingRequestId} }
                  grep { $_->res->code == 409 } @txs;
    is(scalar(grep { $_ eq $id } @pending), 19,
       'every 409 names the one pending request');
    $l->answer($_, $_->res->code, 'schema') for @txs[0 .. 2];

    my @ids = $l->request_ids($w);
    is_deeply(\@ids, [$id], 'one request stored');
    is($l->pending($w), $id, 'the pending marker');
    my @inv = $l->invoices($w->{customer});
    is(scalar @inv, 1, 'exactly one invoice at Stripe');
    is($inv[0]{status}, 'open', 'open');
    is($inv[0]{metadata}{line_request_id}, $id, 'for that request');
};

subtest 'concurrent included requests never exceed the plan' => sub {
    for my $round (1 .. 3) {
        my $w = ws(plan => 'growth');
        my @txs = $l->parallel(map { [$w, POST => $CREATE, body()] } 1 .. 12);
        my %st;
        $st{ $_->res->code . ' ' . (json_of($_)->{status} // '') }++
            for @txs;
        is_deeply(\%st, {'201 provisioning' => 2,
                         '201 awaiting_payment' => 1,
                         '409 awaiting_payment' => 9},
                  "growth round $round: 2 included, 1 paid, 9 refused")
            or diag explain \%st;
        my @live = grep { $l->lr($w, $_)->{provisioningStatus}
                          eq 'provisioning' } $l->request_ids($w);
        is(scalar @live, 2, "round $round: 2 live phone lines stored");
        # a cluster's entries are relayed after the answers
        my $entries = sub {
            scalar grep { $_->{workspace} eq $w->{id} } $l->stream;
        };
        eventually(sub { $entries->() >= 2 }, 5);
        is($entries->(), 2, "round $round: 2 set-up entries");
    }

    my $w = ws(plan => 'starter');
    my @txs = $l->parallel(map { [$w, POST => $CREATE, body()] } 1 .. 12);
    my %st;
    $st{ $_->res->code . ' ' . (json_of($_)->{status} // '') }++ for @txs;
    is_deeply(\%st, {'201 provisioning' => 1, '403 forbidden_line_type' => 11},
              'starter: 1 included, 11 forbidden') or diag explain \%st;

    $w = ws(plan => 'mini');
    @txs = $l->parallel(map { [$w, POST => $CREATE, $EMAIL] } 1 .. 12);
    %st = ();
    $st{ $_->res->code . ' ' . (json_of($_)->{status} // '') }++ for @txs;
    is_deeply(\%st, {'201 provisioning' => 1, '201 awaiting_payment' => 1,
                     '409 awaiting_payment' => 10},
              'mini email: 1 included, 1 paid, 10 refused')
        or diag explain \%st;
};

# The customer pays on the hosted page (the stub marks the invoice paid and
# delivers invoice.paid to our webhook) while the client cancels.
sub pay_p {
    my ($ua, $inv) = @_;
    return $ua->post_p($s->stub_url("/_stub/invoices/$inv/pay")
                       => json => {webhook_url => $s->url('/webhooks/stripe')});
}

sub cancel_p {
    my ($ua, $w, $id) = @_;
    return $ua->post_p($s->url("$CREATE/$id") => $w->{auth}
                       => json => {action => 'cancel'});
}

sub outcome_consistent {
    my ($w, $id, $inv, $cancel, $pay, $name) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;

    my $st = $l->invoice($inv)->{status};
    my $h = $l->lr($w, $id);
    # a paid request's entry is relayed after the answer on a cluster
    my $in_stream = sub { scalar grep { $_->{id} eq $id } $l->stream };
    eventually($in_stream, 5) if $st eq 'paid';
    $in_stream = $in_stream->();

    if ($st eq 'paid') {
        is($h->{provisioningStatus}, 'provisioning', "$name: paid: promoted");
        is($h->{paymentStatus}, 'paid', "$name: paid");
        is($in_stream, 1, "$name: set up exactly once");
        is($cancel->res->code, 409, "$name: the cancel lost (409)");
        is(json_of($cancel)->{status}, 'provisioning',
           "$name: 409 says provisioning");
    } else {
        is($st, 'void', "$name: void at Stripe");
        is($h->{provisioningStatus}, 'canceled', "$name: canceled");
        is($h->{paymentStatus}, 'failed', "$name: failed");
        is($in_stream, 0, "$name: never set up");
        is($cancel->res->code, 200, "$name: the cancel won");
        is($pay->res->code, 409, "$name: the payment was refused");
    }
    ok(!defined $l->pending($w), "$name: the workspace is free");
    return $st;
}

subtest 'invoice.paid webhook racing a cancel: one outcome' => sub {
    my $ua = Mojo::UserAgent->new(inactivity_timeout => 20);
    my %seen;
    for my $round (1 .. 12) {
        my $w = ws();
        my ($id, $c) = $l->awaiting($w);
        my ($pay, $cancel);
        my @p = $round % 2
              ? (pay_p($ua, $c->{invoiceId}), cancel_p($ua, $w, $id))
              : (cancel_p($ua, $w, $id), pay_p($ua, $c->{invoiceId}));
        Mojo::Promise->all(@p)->then(sub {
            ($pay, $cancel) = $round % 2 ? ($_[0][0], $_[1][0])
                                         : ($_[1][0], $_[0][0]);
        })->wait;
        my $st = outcome_consistent($w, $id, $c->{invoiceId}, $cancel, $pay,
                                    "round $round");
        $seen{$st}++;
        if ($st eq 'paid') {
            my $d = $pay->res->json;
            ok($d->{delivered}, "round $round: the webhook was delivered");
            is($d->{status}, 200, "round $round: and answered 200");
        }
    }
    note explain \%seen;
};

# The race above goes whichever way the machine makes it go (often the
# same way every round): here each order is forced once, the one
# answered before the other is sent, so that both outcomes are seen.
subtest 'invoice.paid and a cancel, each order forced once' => sub {
    my $ua = Mojo::UserAgent->new(inactivity_timeout => 20);
    my $hook = {webhook_url => $s->url('/webhooks/stripe')};

    my $w = ws();
    my ($id, $c) = $l->awaiting($w);
    my $pay = $ua->post($s->stub_url("/_stub/invoices/$c->{invoiceId}/pay")
                        => json => $hook);
    my $cancel = $ua->post($s->url("$CREATE/$id") => $w->{auth}
                           => json => {action => 'cancel'});
    is(outcome_consistent($w, $id, $c->{invoiceId}, $cancel, $pay,
                          'paid first'), 'paid', 'paid first: paid');
    my $d = $pay->res->json // {};
    ok($d->{delivered}, 'paid first: the webhook was delivered');
    is($d->{status}, 200, 'paid first: and answered 200');

    $w = ws();
    ($id, $c) = $l->awaiting($w);
    $cancel = $ua->post($s->url("$CREATE/$id") => $w->{auth}
                        => json => {action => 'cancel'});
    $pay = $ua->post($s->stub_url("/_stub/invoices/$c->{invoiceId}/pay")
                     => json => $hook);
    is(outcome_consistent($w, $id, $c->{invoiceId}, $cancel, $pay,
                          'canceled first'), 'void', 'canceled first: void');
};

subtest 'a paid invoice: polls and payment_link racing a cancel' => sub {
    for my $round (1 .. 5) {
        my $w = ws();
        my ($id, $c) = $l->awaiting($w);
        $l->invoice_do($c->{invoiceId}, 'pay');    # no webhook
        my @txs = $l->parallel(
            [$w, POST => "$CREATE/$id", {action => 'cancel'}],
            (map { [$w, GET => "$CREATE/$id"] } 1 .. 4),
            [$w, POST => "$CREATE/$id", {action => 'payment_link'}],
        );
        my $cancel = shift @txs;
        outcome_consistent($w, $id, $c->{invoiceId}, $cancel, undef,
                           "round $round");
        my $link = pop @txs;
        for my $tx (@txs) {
            my $b = json_of($tx);
            ok($tx->res->code == 200
               && $b->{status} =~ /^(awaiting_payment|provisioning)$/,
               "round $round: GET answered $b->{status}");
        }
        my $lb = json_of($link);
        ok(($link->res->code == 200 || $link->res->code == 409)
           && $lb->{status} eq 'provisioning',
           "round $round: payment_link: provisioning ("
           . $link->res->code . ')');
        my $g = $l->answer($l->get($w, $id), 200, "round $round: GET");
        is($g->{status}, 'provisioning', "round $round: provisioning at last");
    }
};

# A payment_link that reads the invoice after the cancel voided it claims
# a reissue. A cancel whose void is answered after that claim is told to
# retry (409 awaiting_payment "being issued", Retry-After), not canceled
# under it (the next subtests); its retry cancels the new invoice too.
subtest 'an open invoice: payment_link racing a cancel' => sub {
    my %seen;
    for my $round (1 .. 5) {
        my $w = ws();
        my ($id, $c) = $l->awaiting($w);
        my ($cancel, @links) = $l->parallel(
            [$w, POST => "$CREATE/$id", {action => 'cancel'}],
            map { [$w, POST => "$CREATE/$id", {action => 'payment_link'}] }
                1 .. 3,
        );
        my $busy = $cancel->res->code == 409
                   && json_of($cancel)->{status} eq 'awaiting_payment'
                   && ($cancel->res->headers->header('Retry-After') // 0)
                      >= 1;
        ok($cancel->res->code == 200 || $busy,
           "round $round: canceled, or told to retry during a reissue")
            or diag($cancel->res->code . ' ' . $cancel->res->body);
        $seen{ $busy ? 'cancel retried' : 'canceled at once' }++;
        for my $tx (@links) {
            my $b = json_of($tx);
            # a payment_link that saw the invoice already voided by the
            # cancel claims a reissue; one racing it is told to retry
            my $retry = $tx->res->code == 409
                        && $b->{status} eq 'awaiting_payment'
                        && ($tx->res->headers->header('Retry-After') // '')
                           eq '1';
            ok(($tx->res->code == 200 && ($b->{reused} || $busy))
               || ($tx->res->code == 409 && $b->{status} eq 'canceled')
               || $retry,
               "round $round: payment_link reused the link, issued one "
               . "while the cancel waited, saw canceled, or was told to "
               . "retry during a reissue")
                or diag($tx->res->code . " " . $tx->res->body);
        }
        for (1 .. 20) {
            last unless $busy;
            sleep 1;
            my $tx = $l->manage($w, $id, 'cancel');
            $busy = $tx->res->code == 409
                    && json_of($tx)->{status} eq 'awaiting_payment';
            ok(!$busy && $tx->res->code == 200,
               "round $round: the retried cancel canceled") unless $busy;
        }
        is($l->lr($w, $id)->{provisioningStatus}, 'canceled',
           "round $round: canceled");
        my @open = grep { $_->{status} eq 'open' }
                   $l->invoices($w->{customer});
        is(scalar @open, 0, "round $round: no open invoice");
    }
    note explain \%seen;
};

subtest 'parallel payment_link on a void invoice: one new invoice' => sub {
    my $w = ws();
    my ($id, $c) = $l->awaiting($w);
    $l->invoice_do($c->{invoiceId}, 'void');
    my @txs = $l->parallel(map {
        [$w, POST => "$CREATE/$id", {action => 'payment_link'}]
    } 1 .. 8);

    my @new = grep { $_->res->code == 200 && !json_of($_)->{reused} } @txs;
    is(scalar @new, 1, 'one call issued the new invoice');
    for my $tx (grep { $_ != $new[0] } @txs) {
        my $b = json_of($tx);
        ok(($tx->res->code == 409 && $b->{status} eq 'awaiting_payment')
           || ($tx->res->code == 200 && $b->{reused}),
           'the others: busy (409) or the new link') or diag $tx->res->body;
    }
    my @open = grep { $_->{status} eq 'open' } $l->invoices($w->{customer});
    is(scalar @open, 1, 'one open invoice');
    is($open[0]{id}, json_of($new[0])->{invoiceId}, 'the one answered');
    is($l->lr($w, $id)->{invoiceId}, $open[0]{id}, 'and stored');
};

subtest 'parallel cancels: canceled once' => sub {
    my $w = ws();
    my ($id, $c) = $l->awaiting($w);
    my @txs = $l->parallel(map {
        [$w, POST => "$CREATE/$id", {action => 'cancel'}]
    } 1 .. 6);
    for my $tx (@txs) {
        my $b = json_of($tx);
        ok(($tx->res->code == 200 || $tx->res->code == 409)
           && $b->{status} eq 'canceled', 'canceled (200 or 409)')
            or diag $tx->res->body;
    }
    ok(scalar(grep { $_->res->code == 200 } @txs) >= 1, 'at least one 200');
    is($l->lr($w, $id)->{provisioningStatus}, 'canceled', 'canceled');
    # each cancel that found the request awaiting payment voids with the
    # same key (docs/lines-api.md: <prefix>-void): Stripe voided once,
    # the others were its replays
    my @void = $l->stripe_log(qr{^/v1/invoices/\Q$c->{invoiceId}\E/void$});
    cmp_ok(scalar @void, '>=', 1, 'the invoice voided at Stripe');
    is(scalar(grep { !$_->{replayed} } @void), 1,
       'once: ' . scalar(@void) . ' void calls, the others replays')
        or diag explain \@void;
    my %keys = map { ($_->{idempotency_key} // '') => 1 } @void;
    is(scalar keys %keys, 1, 'every void call with the same key')
        or diag explain [keys %keys];
    is($l->invoice($c->{invoiceId})->{status}, 'void', 'void at Stripe');
    ok(!defined $l->pending($w), 'the workspace is free');
};

# A cancel or a GET's check read the invoice before a payment_link's
# reissue claim was taken, and Stripe's answer (void) comes after it: the
# claim's payment_link is making the next invoice, which Stripe may pay
# at its finalize (a credit balance). Canceled under the claim, its store
# was refused and that payment left to a human. The claim is staged as
# lr_reissue_claim writes it, while Stripe holds the first call's answer
# (the void done, or the invoice read void). Before 2026-11-28 both
# canceled the request.
sub claim_meanwhile {
    my ($w, $id, $tx_p) = @_;
    my $key = "lg:{ws:$w->{id}}:lr:$id";
    my $tx;
    Mojo::IOLoop->timer(0.6 => sub {
        $r->hset($key, reissueAt => int(Time::HiRes::time() * 1000),
                 reissueBy => "test-$$");
        $r->hincrby($key, 'invoiceSeq', 1);
    });
    $tx_p->then(sub { $tx = shift })->wait;
    return $tx;
}

subtest 'a cancel whose void answers after a reissue claim: not canceled'
    => sub {
    my $w = ws();
    my ($id, $c) = $l->awaiting($w);
    my $old = $c->{invoiceId};
    $l->fault(path_prefix => "/v1/invoices/$old/void", latency_ms => 1500,
              after_commit => 1);
    my $ua = Mojo::UserAgent->new(inactivity_timeout => 20);
    my $tx = claim_meanwhile($w, $id, $ua->post_p($s->url("$CREATE/$id")
                             => $w->{auth} => json => {action => 'cancel'}));
    is($l->invoice($old)->{status}, 'void', 'Stripe voided it');
    is($tx->res->code, 409, 'the cancel answers 409')
        or diag $tx->res->body;
    is(json_of($tx)->{status}, 'awaiting_payment', 'awaiting payment');
    ok(($tx->res->headers->header('Retry-After') // 0) >= 1,
       'with Retry-After');
    my $h = $l->lr($w, $id);
    is($h->{provisioningStatus}, 'awaiting_payment',
       'not canceled under the claim');
    is($l->pending($w), $id, 'still the pending request');
    $l->clear_faults;
};

subtest "a GET's check answered void after a reissue claim: not canceled"
    => sub {
    my $w = ws();
    my ($id, $c) = $l->awaiting($w);
    my $old = $c->{invoiceId};
    $l->invoice_do($old, 'void');    # no webhook
    $l->fault(method => 'GET', path_prefix => "/v1/invoices/$old",
              latency_ms => 1500);
    my $ua = Mojo::UserAgent->new(inactivity_timeout => 20);
    my $tx = claim_meanwhile($w, $id,
        $ua->get_p($s->url("$CREATE/$id") => $w->{auth}));
    ok(scalar(grep { $_->{method} eq 'GET' }
              $l->stripe_log(qr{^/v1/invoices/\Q$old\E$})),
       'the GET checked the invoice at Stripe');
    is($tx->res->code, 200, 'the GET answers 200') or diag $tx->res->body;
    is(json_of($tx)->{status}, 'awaiting_payment', 'the stored state');
    is($l->lr($w, $id)->{provisioningStatus}, 'awaiting_payment',
       'not canceled under the claim');
    $l->clear_faults;
};

done_testing;
