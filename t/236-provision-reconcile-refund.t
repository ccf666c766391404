# Reconciliation refunds what it undoes: a Line Provisioning purchase
# whose outcome the worker never learnt (both subscription POSTs lost
# their answer after Stripe billed, or the worker died) was charged its
# first invoice at once, and its client was told to retry (or got no
# answer). The run cancels the subscription, and, no line having come of
# it, refunds that first invoice: a client that followed the advice paid
# once for one line, not twice (docs/operator.md, "Reconciliation").
# Before, the run only cancelled: the invoice stayed paid. Then it
# refunded the subscription's latest invoice, not its first (a renewal,
# or the final credit invoice of a cancellation with invoice_now), and
# took a refund Stripe had not made yet (pending) for done.
use strict;
use warnings;
use lib 't/lib';

use Test::More;
use Time::HiRes qw(time);
use POSIX qw(strftime);
use Mojo::UserAgent;
use LG::Stack;
use LG::Test qw(:DEFAULT);
use LG::Provision;

my $s = LG::Stack->new(HTTP_EXTRA => 'linegate_reconcile_delay 0; '
                           . 'linegate_reconcile_lost_after 1s;')->start;
my $p = LG::Provision->new($s);
my $r = $s->redis;

$p->inventory($p->numbers(30));

my %AUTH = (Authorization => 'Bearer sk_test_linegate');

sub subs_of { return $p->subs_of(@_) }

sub queued_of { return $p->queued_of(@_) }

sub resolved_of {
    my ($id) = @_;
    return grep { ($_->{account} // '') eq $id }
           map { +{ @{ $_->[1] } } }
           $r->xrange('lg:{fleet}:reconciled', '-', '+');
}

sub run {
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    return $p->reconcile_run(@_);
}

sub entry_of { return $p->entry_of(@_) }

# the first invoice of the account's (only) subscription, as Stripe has it
# (the one billed at its creation), or the one of that billing_reason
sub invoice_of {
    my ($id, $why) = @_;
    my $st = $p->stub_state;
    my ($sub) = grep { ($_->{metadata}{account_id} // '') eq $id }
                values %{ $st->{subscriptions} };
    return {} unless $sub;
    my ($inv) = sort { $a->{created} <=> $b->{created} }
                grep { ($_->{subscription} // '') eq $sub->{id}
                       && $_->{billing_reason}
                          eq ($why // 'subscription_create') }
                values %{ $st->{invoices} };
    return $inv // {};
}

# a call to the stub's control API
sub control {
    my ($path, $body) = @_;
    my $tx = $s->stub(POST => $path, $body // {});
    ok($tx->res->is_success, "stub: $path") or diag $tx->res->body;
    return $tx->res->json // {};
}

# the refund POSTs Stripe answered 200 for this payment intent, and the
# refunds it holds of it (a replay under the same key is no new one)
sub refund_posts {
    my ($pi) = @_;
    return grep { $_->{method} eq 'POST' && $_->{path} eq '/v1/refunds'
                  && ($_->{params}{payment_intent} // '') eq $pi
                  && ($_->{status} // 0) == 200 }
           @{ $p->stub_state->{log} };
}

sub refunds_of {
    my ($pi) = @_;
    return grep { ($_->{payment_intent} // '') eq $pi }
           values %{ $p->stub_state->{refunds} // {} };
}

# a purchase Stripe billed though its answer was lost twice: queued as
# stripe_outcome_unknown, the client told to retry
sub lost_purchase {
    my ($id) = @_;
    $p->clear_faults;    # one a subtest queued and did not use
    my $a = $p->account($id);
    $p->fault(drop => 1, count => 2, after_commit => 1);
    my $tx = $p->confirm($a, $p->token($a));
    $p->error_is($tx, 502, 'billing_unavailable', "$id: answer lost");
    my @q = queued_of($id);
    is(scalar @q, 1, "$id: queued");
    is($q[0]{reason}, 'stripe_outcome_unknown', "$id: outcome unknown");
    my $inv = invoice_of($id);
    is($inv->{status}, 'paid', "$id: its first invoice was charged");
    like($inv->{payment_intent} // '', qr/^pi_/, "$id: by a payment intent");
    return ($q[0], $inv);
}

# a list of paid invoices that never ends (has_more always true, nothing
# paid on it: a filter not applied): 3 pages at most, the entry left
# (refund_unavailable) and the run stopped, as for Stripe failing; the
# next run refunds. Before, the run read page after page for as long as
# Stripe said there was more, and never answered (found by
# t/fuzz/fuzz_reconcile_list.c). First: the entries other subtests leave
# for a human would take the endless list before this one
subtest 'paid invoices without end: 3 pages, left, the next run refunds'
    => sub {
    my ($q, $inv) = lost_purchase('acct_rf_endless');
    my ($sub) = subs_of('acct_rf_endless');
    $p->fault(method => 'GET', path_prefix => '/v1/invoices',
              status => 200, count => -1, body => {
                  object => 'list', has_more => \1, data => [{
                  id => 'in_notpaid', object => 'invoice',
                  status => 'open'}]});
    my $ua = Mojo::UserAgent->new(request_timeout => 15);
    my $tx = $ua->post($s->url('/_linegate/reconciliation/run') =>
                       {Authorization => 'Bearer ' . $s->operator_token});
    $p->clear_faults;
    is($tx->res->code, 200, 'the run answers')
        or diag($tx->error ? $tx->error->{message} : $tx->res->body);
    my $e = entry_of($tx->res->json // {}, 'acct_rf_endless');
    is($e->{outcome}, 'deferred', 'the entry stays');
    is($e->{detail}, 'refund_unavailable', 'refund_unavailable');
    my @pages = grep { $_->{path} eq '/v1/invoices'
                       && ($_->{params}{subscription} // '') eq $sub->{id} }
                @{ $p->stub_state->{log} };
    is(scalar @pages, 3, 'three pages read');
    is($pages[-1]{params}{starting_after}, 'in_notpaid',
       'each past the last one of the page before');
    like($s->error_log, qr/subscription "\Q$sub->{id}\E" go on past 3 pages/,
         'logged');

    my $b = run();
    $e = entry_of($b, 'acct_rf_endless');
    is($e->{outcome}, 'already_canceled', 'the next run: cancelled before');
    like($e->{refund} // '', qr/^re_/, 'and refunded');
    is(invoice_of('acct_rf_endless')->{amount_refunded},
       $inv->{amount_paid}, 'the first invoice, whole');
};

# the customer's subscriptions listed with the purchase's under an id
# that is no Stripe id: the entry stays (stripe_unavailable) naming
# none, as when Stripe fails. Before, the answer named that id as the
# entry's subscription_id, though the run refused it (found by
# t/fuzz/fuzz_reconcile_list.c); the next run settles it
subtest 'a purchase listed under an id that is no Stripe id: not named'
    => sub {
    my ($q, $inv) = lost_purchase('acct_rf_badid');
    my ($sub) = subs_of('acct_rf_badid');
    $p->fault(method => 'GET', path_prefix => '/v1/subscriptions',
              status => 200, count => 1, body => {
                  object => 'list', has_more => \0, data => [{
                  id => "sub_1\n2\"", object => 'subscription',
                  status => 'active', metadata => $sub->{metadata}}]});
    my $b = run();
    $p->clear_faults;
    my $e = entry_of($b, 'acct_rf_badid');
    is($e->{detail}, 'stripe_unavailable', 'the entry stays');
    is($e->{subscription_id}, undef, 'naming no subscription');

    $b = run();
    $e = entry_of($b, 'acct_rf_badid');
    is($e->{outcome}, 'canceled', 'the next run: cancelled');
    is($e->{subscription_id}, $sub->{id}, 'the one Stripe holds');
    like($e->{refund} // '', qr/^re_/, 'and refunded');
};

subtest 'outcome unknown, Stripe did bill: cancelled and refunded' => sub {
    my ($q, $inv) = lost_purchase('acct_rf_billed');
    my ($sub) = subs_of('acct_rf_billed');

    my $b = run();
    my $e = entry_of($b, 'acct_rf_billed');
    is($e->{outcome}, 'canceled', 'outcome: canceled');
    like($e->{refund} // '', qr/^re_\w+$/, 'the answer names the refund');
    is((subs_of('acct_rf_billed'))[0]{status}, 'canceled',
       'cancelled at Stripe');

    my $now = invoice_of('acct_rf_billed');
    is($now->{amount_refunded}, $inv->{amount_paid},
       'the first invoice refunded whole');
    ok($now->{refunded}, 'and marked refunded');
    my @posts = refund_posts($inv->{payment_intent});
    is(scalar @posts, 1, 'one refund asked for');
    is($posts[0]{idempotency_key}, "lg-refund-$sub->{id}",
       'under a key derived from the subscription');
    my @re = refunds_of($inv->{payment_intent});
    is(scalar @re, 1, 'one refund made');
    is($re[0]{id}, $e->{refund}, 'the one named');
    is($re[0]{amount}, $inv->{amount_paid}, 'of the amount paid');

    is_deeply([queued_of('acct_rf_billed')], [], 'off lg:{fleet}:reconcile');
    my ($done) = resolved_of('acct_rf_billed');
    is($done->{outcome}, 'canceled', 'on lg:{fleet}:reconciled');
    is($done->{refund}, $e->{refund}, 'with its refund');
    like($s->error_log,
         qr/reconciliation: purchase \Q$q->{worker_id}\E .*: canceled, refund \Q$e->{refund}\E/,
         'logged with its refund');
    is_deeply($p->lines('acct_rf_billed'), {}, 'no line');

    $b = run();
    is_deeply($b->{entries}, [], 'a second run: nothing left');
    is(scalar refunds_of($inv->{payment_intent}), 1, 'refunded once');
};

subtest 'the refund fails: the entry stays, the next run refunds' => sub {
    my ($q, $inv) = lost_purchase('acct_rf_5xx');
    $p->fault(path_prefix => '/v1/refunds', status => 500, count => 1);

    my $b = run();
    my $e = entry_of($b, 'acct_rf_5xx');
    is($e->{outcome}, 'deferred', 'deferred');
    is($e->{detail}, 'refund_unavailable', 'the refund unavailable');
    is($e->{refund}, undef, 'no refund named');
    is(scalar queued_of('acct_rf_5xx'), 1, 'still on lg:{fleet}:reconcile');
    is((subs_of('acct_rf_5xx'))[0]{status}, 'canceled',
       'the cancellation itself was made');
    is(invoice_of('acct_rf_5xx')->{amount_refunded}, 0, 'nothing refunded');
    is($r->get('lg:{fleet}:reconcile:lease'), undef, 'the lease given back');

    $b = run();
    $e = entry_of($b, 'acct_rf_5xx');
    is($e->{outcome}, 'already_canceled',
       'the next run finds it cancelled');
    like($e->{refund} // '', qr/^re_/, 'and refunds it');
    is(invoice_of('acct_rf_5xx')->{amount_refunded}, $inv->{amount_paid},
       'the invoice refunded whole');
    is(scalar refunds_of($inv->{payment_intent}), 1, 'once');
    is_deeply([queued_of('acct_rf_5xx')], [], 'off lg:{fleet}:reconcile');
    is((resolved_of('acct_rf_5xx'))[0]{refund}, $e->{refund},
       'resolved with its refund');
};

subtest 'the refund\'s answer lost: the next run replays it, once' => sub {
    my ($q, $inv) = lost_purchase('acct_rf_lost');
    $p->fault(path_prefix => '/v1/refunds', drop => 1, after_commit => 1,
              count => 1);

    my $b = run();
    is(entry_of($b, 'acct_rf_lost')->{detail}, 'refund_unavailable',
       'deferred: the answer was lost');
    my @re = refunds_of($inv->{payment_intent});
    is(scalar @re, 1, 'though Stripe refunded');

    $b = run();
    my $e = entry_of($b, 'acct_rf_lost');
    is($e->{outcome}, 'already_canceled', 'the next run settles it');
    is($e->{refund}, $re[0]{id}, 'naming the refund Stripe made');
    is(scalar refunds_of($inv->{payment_intent}), 1, 'refunded once');
    is(invoice_of('acct_rf_lost')->{amount_refunded}, $inv->{amount_paid},
       'not twice');
};

subtest 'a refund made by hand before the run: done, not twice' => sub {
    my ($q, $inv) = lost_purchase('acct_rf_hand');
    my $tx = $s->ua->post($s->stub_url('/v1/refunds') => \%AUTH
        => form => {payment_intent => $inv->{payment_intent}});
    is($tx->res->code, 200, 'refunded by hand');

    my $b = run();
    my $e = entry_of($b, 'acct_rf_hand');
    is($e->{outcome}, 'canceled', 'cancelled');
    is($e->{refund}, 'already_refunded', 'the refund found made');
    is(scalar refunds_of($inv->{payment_intent}), 1, 'no second refund');
    is(invoice_of('acct_rf_hand')->{amount_refunded}, $inv->{amount_paid},
       'the amount paid, once');
    is((resolved_of('acct_rf_hand'))[0]{refund}, 'already_refunded',
       'resolved');
};

# Stripe 2025-03-31 (basil, the default linegate_stripe_version) names an
# invoice's payment intent only in its payments, expanded: the invoice is
# answered in that shape alone here
subtest 'the payment intent named in the invoice\'s payments: refunded' =>
sub {
    my ($q, $inv) = lost_purchase('acct_rf_basil');
    $p->fault(method => 'GET', path_prefix => '/v1/invoices',
              status => 200, count => 1, body => {
                  object => 'list', has_more => \0, data => [{
                  id => $inv->{id}, object => 'invoice', status => 'paid',
                  amount_paid => $inv->{amount_paid},
                  billing_reason => 'subscription_create',
                  payments => {object => 'list', has_more => \0, data => [
                      {object => 'invoice_payment', status => 'canceled',
                       payment => {type => 'payment_intent',
                                   payment_intent => 'pi_notthisone'}},
                      {object => 'invoice_payment', status => 'paid',
                       payment => {type => 'payment_intent',
                                   payment_intent =>
                                       $inv->{payment_intent}}}]}}]});
    my $b = run();
    my $e = entry_of($b, 'acct_rf_basil');
    is($e->{outcome}, 'canceled', 'cancelled');
    like($e->{refund} // '', qr/^re_/, 'refunded');
    is(scalar refunds_of($inv->{payment_intent}), 1,
       'the payment that was paid, once');
    my ($sub) = subs_of('acct_rf_basil');
    my ($get) = grep { $_->{method} eq 'GET' && $_->{path} eq '/v1/invoices'
                       && ($_->{params}{subscription} // '') eq $sub->{id} }
                @{ $p->stub_state->{log} };
    is_deeply($get->{params}{expand}, ['data.payments'],
              'the invoices listed with their payments expanded');
    is($get->{params}{status}, 'paid', 'the paid ones');
};

# an entry of a purchase whose subscription's first invoice is still open
# (no payment was attempted): written as a lost purchase leaves it
subtest 'a subscription whose invoice was never paid: no refund' => sub {
    my $a = $p->account('acct_rf_unpaid');
    my $w = 'worker_unpaid00000000000000000';
    my $tx = $s->ua->post($s->stub_url('/v1/subscriptions') => \%AUTH
        => form => {customer => $a->{customer},
                    'items[0][price]' => 'price_line',
                    payment_behavior => 'default_incomplete',
                    'metadata[worker_id]' => $w,
                    'metadata[account_id]' => 'acct_rf_unpaid'});
    is($tx->res->code, 200, 'a subscription, its invoice unpaid')
        or diag $tx->res->body;
    my $inv = invoice_of('acct_rf_unpaid');
    is($inv->{status}, 'open', 'open');
    $r->xadd('lg:{fleet}:reconcile', '*', account => 'acct_rf_unpaid',
             subscription_id => '', phone_number => '', worker_id => $w,
             reason => 'stripe_outcome_unknown', idempotency_key => 'k',
             customer => $a->{customer},
             at => strftime('%Y-%m-%dT%H:%M:%S.000Z', gmtime time));

    my $asked = sub { scalar grep { $_->{path} eq '/v1/refunds' }
                             @{ $p->stub_state->{log} } };
    my $before = $asked->();
    my $b = run();
    my $e = entry_of($b, 'acct_rf_unpaid');
    is($e->{outcome}, 'canceled', 'cancelled');
    is($e->{refund}, 'none', 'nothing to refund');
    is((subs_of('acct_rf_unpaid'))[0]{status}, 'canceled', 'at Stripe');
    is($asked->(), $before, 'no refund asked for');
    is((resolved_of('acct_rf_unpaid'))[0]{refund}, 'none',
       'resolved: refund none');
};

subtest 'record failed, number released meanwhile: cancelled, refunded' =>
sub {
    my $a = $p->account('acct_rf_num');
    my $tok = $p->token($a);
    $p->fault(latency_ms => 500);
    my ($tx, $done) = $p->during($p->confirm_req($a, $tok), sub {
        my ($w) = $r->zrange('lg:{acct:acct_rf_num}:prov', 0, 0);
        return 0 unless $w;
        $r->set("lg:{acct:acct_rf_num}:line:$w", 'not a hash');
        return 1;
    });
    ok($done, 'the line key was broken in time');
    $p->error_is($tx, 500, 'provisioning_failed', 'not recorded');
    my ($q) = queued_of('acct_rf_num');
    is($q->{reason}, 'record_failed', 'record_failed');
    $r->del("lg:{acct:acct_rf_num}:line:$q->{worker_id}");
    # an operator put the number back meanwhile
    $r->del("lg:{acct:acct_rf_num}:resv:$q->{worker_id}");
    $r->sadd('lg:{fleet}:inventory', $q->{phone_number});
    my $inv = invoice_of('acct_rf_num');

    my $b = run();
    my $e = entry_of($b, 'acct_rf_num');
    is($e->{outcome}, 'canceled', 'cancelled');
    like($e->{refund} // '', qr/^re_/, 'and refunded');
    is(invoice_of('acct_rf_num')->{amount_refunded}, $inv->{amount_paid},
       'whole');
    is_deeply($p->lines('acct_rf_num'), {}, 'no line');
};

subtest 'a worker lost after Stripe billed: cancelled, released, refunded'
=> sub {
    # what a confirm that died after Stripe billed leaves: its claim and
    # reservation, and a subscription no record names
    my $a = $p->account('acct_rf_dead');
    my $w = 'worker_dead000000000000000000';
    my $n = $r->spop('lg:{fleet}:inventory');
    $r->zadd('lg:{fleet}:pv:inflight', $p->now_ms - 5000,
             "acct_rf_dead $w $n");
    $r->hset("lg:{acct:acct_rf_dead}:resv:$w",
             createdAt => strftime('%Y-%m-%dT%H:%M:%S.000Z', gmtime time),
             customer => $a->{customer});
    $r->zadd('lg:{acct:acct_rf_dead}:prov', $p->now_ms, $w);
    my $tx = $s->ua->post($s->stub_url('/v1/subscriptions') => \%AUTH
        => form => {customer => $a->{customer},
                    'items[0][price]' => 'price_line',
                    'metadata[worker_id]' => $w,
                    'metadata[account_id]' => 'acct_rf_dead'});
    is($tx->res->code, 200, 'Stripe billed') or diag $tx->res->body;
    my $inv = invoice_of('acct_rf_dead');
    is($inv->{status}, 'paid', 'its invoice paid');

    my $b = run();
    my $e = entry_of($b, 'acct_rf_dead');
    is($e->{reason}, 'worker_lost', 'worker_lost');
    is($e->{outcome}, 'canceled', 'cancelled');
    like($e->{refund} // '', qr/^re_/, 'and refunded');
    is(invoice_of('acct_rf_dead')->{amount_refunded}, $inv->{amount_paid},
       'whole');
    ok($r->sismember('lg:{fleet}:inventory', $n), 'the number back');
    is($r->zcard('lg:{acct:acct_rf_dead}:prov'), 0, 'the slot freed');
};

# the subscription renewed before the run (an entry left while Stripe was
# down): its first invoice is the one billed at its creation, not its
# latest; the renewal, paid while no line existed, is refunded too
subtest 'renewed before the run: the first invoice and the renewal refunded'
=> sub {
    my ($q, $inv) = lost_purchase('acct_rf_renew');
    my ($sub) = subs_of('acct_rf_renew');
    my $renewal = control("/_stub/subscriptions/$sub->{id}/renew")->{invoice};
    is($renewal->{status}, 'paid', 'a renewal paid');
    is((subs_of('acct_rf_renew'))[0]{latest_invoice}, $renewal->{id},
       'the subscription\'s latest invoice');

    my $b = run();
    my $e = entry_of($b, 'acct_rf_renew');
    is($e->{outcome}, 'canceled', 'cancelled');
    my @re = refunds_of($inv->{payment_intent});
    is(scalar @re, 1, 'the first invoice refunded');
    is($e->{refund}, $re[0]{id}, 'the answer names that refund');
    is(invoice_of('acct_rf_renew')->{amount_refunded}, $inv->{amount_paid},
       'whole');
    my ($post) = refund_posts($inv->{payment_intent});
    is($post->{idempotency_key}, "lg-refund-$sub->{id}",
       'under the subscription\'s key, as before');
    my @later = refunds_of($renewal->{payment_intent});
    is(scalar @later, 1, 'the renewal refunded too');
    is_deeply($e->{later_refunds}, [$later[0]{id}], 'named after it');
    ($post) = refund_posts($renewal->{payment_intent});
    is($post->{idempotency_key}, "lg-refund-$renewal->{id}",
       'under the renewal\'s own key');
    is(invoice_of('acct_rf_renew', 'subscription_cycle')->{amount_refunded},
       $renewal->{amount_paid}, 'whole');
    my ($done) = resolved_of('acct_rf_renew');
    is($done->{refund}, $e->{refund}, 'resolved with the first\'s refund');
    is($done->{later_refunds}, $later[0]{id}, 'and the renewal\'s');
    my $both = "canceled, refund $e->{refund}, later refunds $later[0]{id}";
    like($s->error_log, qr/: \Q$both\E/, 'logged with both');
};

# cancelled at Stripe (a human, the dashboard) with invoice_now: the
# subscription's latest invoice is a final one, paid, of 0; the first one
# is refunded whole. With prorate as well, that final invoice credits the
# unused time to the customer's balance: a whole refund would pay the
# customer twice, so nothing is refunded and the entry is left for a
# human (credited)
subtest 'cancelled at Stripe with a final invoice: the first one refunded'
=> sub {
    my ($q, $inv) = lost_purchase('acct_rf_final');
    my ($sub) = subs_of('acct_rf_final');
    my $tx = $s->ua->delete(
        $s->stub_url("/v1/subscriptions/$sub->{id}") => \%AUTH
        => form => {invoice_now => 'true'});
    is($tx->res->code, 200, 'cancelled at Stripe') or diag $tx->res->body;
    my $final = $p->stub_state->{invoices}{ $tx->res->json->{latest_invoice} };
    is($final->{status}, 'paid', 'its final invoice paid');
    is($final->{amount_paid}, 0, 'nothing');

    my $b = run();
    my $e = entry_of($b, 'acct_rf_final');
    is($e->{outcome}, 'already_canceled', 'found cancelled');
    like($e->{refund} // '', qr/^re_/, 'the first invoice refunded');
    is(invoice_of('acct_rf_final')->{amount_refunded}, $inv->{amount_paid},
       'whole');
    is_deeply($e->{later_refunds}, [], 'nothing else to refund');
};

subtest 'cancelled at Stripe, prorated: credited, left for a human' => sub {
    my ($q, $inv) = lost_purchase('acct_rf_prorated');
    my ($sub) = subs_of('acct_rf_prorated');
    my $tx = $s->ua->delete(
        $s->stub_url("/v1/subscriptions/$sub->{id}") => \%AUTH
        => form => {invoice_now => 'true', prorate => 'true'});
    is($tx->res->code, 200, 'cancelled at Stripe') or diag $tx->res->body;
    my $final = $p->stub_state->{invoices}{ $tx->res->json->{latest_invoice} };
    cmp_ok($final->{total}, '<', 0, 'its final invoice a credit');

    my $b = run();
    my $e = entry_of($b, 'acct_rf_prorated');
    is($e->{outcome}, 'deferred', 'deferred');
    is($e->{detail}, 'credited', 'the customer credited');
    is(invoice_of('acct_rf_prorated')->{amount_refunded} // 0, 0,
       'nothing refunded');
    is(scalar queued_of('acct_rf_prorated'), 1,
       'still on lg:{fleet}:reconcile');
    like($s->error_log, qr/credits the customer: nothing refunded/,
         'logged');
    $r->xdel('lg:{fleet}:reconcile', $e->{id});
};

# a refund Stripe has not made yet (a bank's): the entry resolves only
# once it succeeded; until then each run looks at it again
subtest 'a refund pending: the entry waits, resolved once it succeeded'
=> sub {
    my ($q, $inv) = lost_purchase('acct_rf_pend');
    control('/_stub/refund_status', {status => 'pending'});
    my $b = run();
    control('/_stub/refund_status', {status => 'succeeded'});
    my $e = entry_of($b, 'acct_rf_pend');
    is($e->{outcome}, 'deferred', 'deferred');
    is($e->{detail}, 'refund_pending', 'the refund pending');
    is($e->{refund}, undef, 'no refund named');
    is(scalar queued_of('acct_rf_pend'), 1, 'still on lg:{fleet}:reconcile');
    my @re = refunds_of($inv->{payment_intent});
    is(scalar @re, 1, 'one refund made');
    is($re[0]{status}, 'pending', 'pending');
    my $pend = qr/is pending \(\Q$re[0]{id}\E\)/;
    like($s->error_log, qr/refund of invoice "\Q$inv->{id}\E" .* $pend/,
         'logged');

    $b = run();
    is(entry_of($b, 'acct_rf_pend')->{detail}, 'refund_pending',
       'still pending: the next run waits too');
    is(scalar refunds_of($inv->{payment_intent}), 1, 'no second refund');

    control("/_stub/refunds/$re[0]{id}/succeed");
    $b = run();
    $e = entry_of($b, 'acct_rf_pend');
    is($e->{outcome}, 'already_canceled', 'then settled');
    is($e->{refund}, $re[0]{id}, 'with the refund made');
    is(scalar refunds_of($inv->{payment_intent}), 1, 'once');
    is_deeply([queued_of('acct_rf_pend')], [], 'off lg:{fleet}:reconcile');
    is((resolved_of('acct_rf_pend'))[0]{refund}, $re[0]{id},
       'resolved with it');
};

subtest 'a refund that needs action, then fails: left for a human' => sub {
    my ($q, $inv) = lost_purchase('acct_rf_act');
    control('/_stub/refund_status', {status => 'requires_action'});
    my $b = run();
    control('/_stub/refund_status', {status => 'succeeded'});
    is(entry_of($b, 'acct_rf_act')->{detail}, 'refund_pending',
       'requires_action: pending');
    my ($re) = refunds_of($inv->{payment_intent});
    control("/_stub/refunds/$re->{id}/fail");

    $b = run();
    my $e = entry_of($b, 'acct_rf_act');
    is($e->{outcome}, 'deferred', 'deferred');
    is($e->{detail}, 'refund_failed', 'the refund failed');
    is(scalar queued_of('acct_rf_act'), 1, 'still on lg:{fleet}:reconcile');
    like($s->error_log,
         qr/refund "\Q$re->{id}\E" of invoice "\Q$inv->{id}\E" is failed/,
         'logged');
};

subtest 'more than 10 paid invoices: none refunded, left for a human' => sub {
    my ($q, $inv) = lost_purchase('acct_rf_many');
    my ($sub) = subs_of('acct_rf_many');
    control("/_stub/subscriptions/$sub->{id}/renew") for 1 .. 10;
    my $b = run();
    my $e = entry_of($b, 'acct_rf_many');
    is($e->{detail}, 'too_many_invoices', 'deferred: too many invoices');
    is(scalar(grep { $_->{path} eq '/v1/refunds'
                     && ($_->{params}{metadata}{subscription_id} // '')
                        eq $sub->{id} }
              @{ $p->stub_state->{log} }), 0, 'no refund asked for');
    is(invoice_of('acct_rf_many')->{amount_refunded}, 0, 'none made');
    my @pages = grep { $_->{path} eq '/v1/invoices'
                       && ($_->{params}{subscription} // '') eq $sub->{id} }
                @{ $p->stub_state->{log} };
    is(scalar @pages, 2, 'two pages read');
    is($pages[0]{params}{limit}, 5, 'of 5');
    like($s->error_log,
         qr/subscription "\Q$sub->{id}\E" paid more than 10 invoices/,
         'logged');
};

done_testing;
