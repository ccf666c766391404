# POST /api/line-requests/:id (SPEC 2.6): payment_link (open, paid, void,
# uncollectible), cancel (voided, paid meanwhile, void already, Stripe
# unreachable), the 409 of other states, 402/403, and unsupported actions.
use strict;
use warnings;
use lib 't/lib';

use Test::More;
use Time::HiRes qw(sleep time);
use LG::Stack;
use LG::Test qw(:DEFAULT eventually lua_script);
use LG::Lines qw(body);

my $s = LG::Stack->new->start;
my $l = LG::Lines->new($s);
my $r = $s->redis;
my $n = 0;

sub ws { return $l->workspace('org_m' . ++$n, @_) }

sub link_is {
    my ($tx, $reused, $name) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    my $b = $l->answer($tx, 200, $name);
    is_deeply([sort keys %$b],
              [qw(invoiceId paymentUrl reused status success)],
              "$name: fields");
    is($b->{status}, 'awaiting_payment', "$name: awaiting_payment");
    is($b->{reused}, $reused ? Mojo::JSON->true : Mojo::JSON->false,
       "$name: reused " . ($reused ? 'true' : 'false'));
    return $b;
}

sub conflict {
    my ($tx, $state, $name) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    my $b = $l->answer($tx, 409, $name);
    is($b->{success}, Mojo::JSON->false, "$name: success false");
    is($b->{status}, $state, "$name: status $state");
    like($b->{message} // '', qr/\w/, "$name: message");
    return $b;
}

# A request awaiting payment seeded in Redis (its invoice made at the
# stub), so that the reissue runs without a creation first: on a cluster
# (LG_REDIS=cluster) its claim, the new index's SET, its store and the old
# index's DEL each touch one slot (before issue 10's change the claim
# named the index: CROSSSLOT, 503). The new invoice, paid, is settled by
# its webhook through the new index. First: it needs no creation.
my $seeded = 0;
sub seeded {
    my ($w) = @_;
    my $id = sprintf '6a0b00000000000000%06d', ++$seeded;
    my $stripe = sub {
        my ($path, %form) = @_;
        my $tx = $s->ua->post($s->stub_url($path)
                              => {Authorization => 'Bearer sk_test_x'}
                              => form => \%form);
        return $tx->res->json // {};
    };
    my $in = $stripe->('/v1/invoices', customer => $w->{customer},
                       collection_method => 'send_invoice',
                       days_until_due => 7, auto_advance => 'false');
    # an item: Stripe marks a zero-total invoice paid when finalized
    $stripe->('/v1/invoiceitems', customer => $w->{customer},
              price => 'price_email_line', invoice => $in->{id});
    $stripe->("/v1/invoices/$in->{id}/finalize", auto_advance => 'false');
    my $now = '2026-05-18T14:30:00.000Z';
    $r->hset("lg:{ws:$w->{id}}:lr:$id", firstName => 'Ada',
             lastName => 'Lovelace', channelType => 'email',
             lineType => 'purchased', email => 'ada@example.com',
             provisioningStatus => 'awaiting_payment',
             paymentStatus => 'unpaid', invoiceId => $in->{id},
             paymentUrl => $s->stub_url("/i/$in->{id}"),
             reconciledAt => int(time * 1000), createdAt => $now,
             updatedAt => $now);
    $r->zadd("lg:{ws:$w->{id}}:lines", int(time * 1000), $id);
    $r->set("lg:{ws:$w->{id}}:pending", $id);
    $r->set("lg:line:$id", $w->{id});
    $r->set("lg:invoice:$in->{id}", "$w->{id}:$id");
    return ($id, $in->{id});
}

subtest 'payment_link: a seeded request reissued, paid by webhook' => sub {
    my $w = ws();
    my ($id, $old) = seeded($w);
    ok($old, 'an invoice at the stub') or return;
    $l->invoice_do($old, 'mark_uncollectible');

    my $b = link_is($l->manage($w, $id, 'payment_link'), 0, 'reissued');
    my $new = $b->{invoiceId} // '';
    isnt($new, $old, 'a new invoice');
    is($l->lr($w, $id)->{invoiceId}, $new, 'the request names it');
    is($r->get("lg:invoice:$new"), "$w->{id}:$id", 'indexed');
    # kept while the claim held; a durable DEL once the store named the new
    ok(eventually(sub { !$r->exists("lg:invoice:$old") }, 5),
       'the old one not, once stored');
    is($l->invoice($old)->{status}, 'void', 'the old one voided');

    my $ev = $l->invoice_do($new, 'pay', $s->url('/webhooks/stripe'));
    is($ev->{status}, 200, 'the webhook answered 200');
    ok(!($ev->{json} // {})->{unknown}, 'the invoice is known');
    my $h = $l->lr($w, $id);
    is("$h->{provisioningStatus}/$h->{paymentStatus}", 'provisioning/paid',
       'settled by its webhook');
    ok(!defined $l->pending($w), 'the workspace is free');
};

subtest 'payment_link: an open invoice is reused' => sub {
    my $w = ws();
    my ($id, $c) = $l->awaiting($w);
    my $before = $l->state_keys($w);
    my $b = link_is($l->manage($w, $id, 'payment_link'), 1, 'open');
    is($b->{paymentUrl}, $c->{paymentUrl}, 'the same link');
    is($b->{invoiceId}, $c->{invoiceId}, 'the same invoice');
    $l->state_unchanged($w, $before, 'nothing changed');
    is(scalar($l->invoices($w->{customer})), 1, 'no new invoice');
};

subtest 'payment_link: a paid invoice promotes the request' => sub {
    my $w = ws();
    my ($id, $c) = $l->awaiting($w);
    $l->invoice_do($c->{invoiceId}, 'pay');

    my $b = $l->answer($l->manage($w, $id, 'payment_link'), 200, 'paid');
    is($b->{status}, 'provisioning', 'the 2.5 body for provisioning');
    is($b->{paymentStatus}, 'paid', 'paid');
    is($b->{line}{_id}, $id, 'with its line');
    ok(!exists $b->{paymentUrl}, 'no paymentUrl');
    ok(!defined $l->pending($w), 'the workspace is free');
    ok(eventually(sub { grep { $_->{id} eq $id } $l->stream }, 5),
       'in the provisioning stream');

    conflict($l->manage($w, $id, 'payment_link'), 'provisioning',
             'once provisioning: 409');
};

# The new invoice of a reissue paid at finalization (amount due 0: a
# price of 0 here): the request is stored naming it and promoted, and
# the answer is the 2.5 body for provisioning, as for a paid one found;
# its invoice.paid finds the request paid already. The same when the
# finalize's answer is lost: the discard learns it is paid, and keeps it.
for my $lost (0, 1) {
    my $how = $lost ? ', the answer lost' : '';
    subtest "payment_link: a new invoice paid at finalize$how" => sub {
        my $w = ws();
        my ($id, $c) = $l->awaiting($w);
        $l->invoice_do($c->{invoiceId}, 'void');
        my $price = sub {
            $s->stub(POST => '/_stub/prices',
                     {id => 'price_email_addon', unit_amount => shift});
        };
        $price->(0);
        my $before = $r->xlen('lg:{fleet}:reconcile') // 0;
        # the finalize's answer lost: void and delete refused, a GET finds
        # it paid, and it is kept as the request's new invoice
        $l->fault(path_prefix => '/v1/invoices/', status => 500,
                  after_commit => 1) if $lost;

        my $b = $l->answer($l->manage($w, $id, 'payment_link'), 200,
                           'a zero-total invoice');
        is($b->{status}, 'provisioning', 'the 2.5 body for provisioning');
        is($b->{paymentStatus}, 'paid', 'paid');
        is($b->{paymentRequired}, Mojo::JSON->false, 'no payment required');
        is($b->{line}{_id}, $id, 'with its line');
        ok(!exists $b->{paymentUrl}, 'no paymentUrl');

        my @new = grep { $_->{id} ne $c->{invoiceId} }
                  $l->invoices($w->{customer});
        is(scalar @new, 1, 'one new invoice');
        is($new[0]{status} // '', 'paid', 'paid at Stripe');
        my $h = $l->lr($w, $id);
        is("$h->{provisioningStatus}/$h->{paymentStatus}", 'provisioning/paid',
           'stored provisioning/paid');
        is($h->{invoiceId}, $new[0]{id}, 'naming the new invoice');
        ok(!defined $l->pending($w), 'the workspace is free');
        ok(eventually(sub { grep { $_->{id} eq $id } $l->stream }, 5),
           'in the provisioning stream');

        my $ev = $s->stub(POST => '/_stub/webhook', {
            url => $s->url('/webhooks/stripe'), type => 'invoice.paid',
            object_id => $new[0]{id}})->res->json // {};
        is($ev->{status}, 200, 'its invoice.paid acknowledged');
        ok($ev->{json} && !$ev->{json}{unknown}, 'not unknown')
            or diag $ev->{body};
        is(scalar(grep { $_->{id} eq $id } $l->stream), 1, 'one set-up entry');

        is(($r->xlen('lg:{fleet}:reconcile') // 0) - $before, 0,
           'nothing queued for reconciliation');

        conflict($l->manage($w, $id, 'payment_link'), 'provisioning',
                 'once provisioning: 409');
        $l->clear_faults;
        $price->(1500);
    };
}

subtest 'payment_link: a void invoice is replaced' => sub {
    my $w = ws();
    my ($id, $c) = $l->awaiting($w);
    my $old = $c->{invoiceId};
    $l->invoice_do($old, 'void');

    my $b = link_is($l->manage($w, $id, 'payment_link'), 0, 'void');
    my $new = $b->{invoiceId};
    isnt($new, $old, 'a new invoice');
    isnt($b->{paymentUrl}, $c->{paymentUrl}, 'a new link');
    my $inv = $l->invoice($new);
    is($inv->{status}, 'open', 'open at Stripe');
    is($inv->{customer}, $w->{customer}, 'for the customer');
    # its claim's invoiceSeq: what a reconciliation run adopts it by
    # (t/235), line_request_id being every invoice of the request's
    is_deeply($inv->{metadata}, {workspace_id => $w->{id},
                                 line_request_id => $id, invoice_seq => 1},
              'its metadata: the claim\'s invoice_seq');
    is_deeply($l->invoice($old)->{metadata},
              {workspace_id => $w->{id}, line_request_id => $id},
              'the creation\'s: none');

    my @keys = map { $_->{idempotency_key} }
               grep { ($_->{idempotency_key} // '') =~ /^lg-\Q$id\E-r/ }
               $l->stripe_log(qr{^/v1/});
    is_deeply(\@keys, ["lg-$id-r1-invoice", "lg-$id-r1-item",
                       "lg-$id-r1-finalize"], 'new idempotency keys');

    my $h = $l->lr($w, $id);
    is($h->{provisioningStatus}, 'awaiting_payment', 'still awaiting');
    is($h->{invoiceId}, $new, 'the new invoice stored');
    is($h->{paymentUrl}, $b->{paymentUrl}, 'its link');
    is($h->{invoiceSeq}, 1, 'invoiceSeq 1');
    ok(!exists $h->{reissueAt}, 'the claim is released');
    is($r->get("lg:invoice:$new"), "$w->{id}:$id", 'indexed for webhooks');
    ok(eventually(sub { !$r->exists("lg:invoice:$old") }, 5),
       'the old one is not, once stored');
    is($l->pending($w), $id, 'still the pending request');

    my $g = $l->answer($l->get($w, $id), 200, 'GET');
    is($g->{invoiceId}, $new, 'GET shows the new invoice');

    link_is($l->manage($w, $id, 'payment_link'), 1, 'and reuses it next');

    # a second replacement gets other keys
    $l->invoice_do($new, 'void');
    $b = link_is($l->manage($w, $id, 'payment_link'), 0, 'void again');
    ok(grep({ ($_->{idempotency_key} // '') eq "lg-$id-r2-invoice" }
            $l->stripe_log(qr{^/v1/invoices$})), 'r2 keys');
    is($l->invoice($b->{invoiceId})->{metadata}{invoice_seq}, 2,
       'invoice_seq 2');
};

subtest 'payment_link: an uncollectible invoice is voided, then replaced'
    => sub {
    my $w = ws();
    my ($id, $c) = $l->awaiting($w);
    $l->invoice_do($c->{invoiceId}, 'mark_uncollectible');

    my $b = link_is($l->manage($w, $id, 'payment_link'), 0, 'uncollectible');
    is($l->invoice($c->{invoiceId})->{status}, 'void',
       'the old invoice can no longer be paid');
    is($l->invoice($b->{invoiceId})->{status}, 'open', 'the new one is open');
};

# Issue 10: the reissue's scripts touch the workspace's slot only; the
# new invoice's webhook index is written and answered before the store
# names the new invoice (SET, a step of its own); the old one's is kept
# while the claim is held (a worker that dies then has nothing to give
# back) and goes once the store answered (DEL, a durable write of its
# own). Order within one Redis's MONITOR (a cluster's masters each have
# their own).
subtest 'payment_link: the invoice indexes are steps of their own' => sub {
    plan skip_all => 'the order of one MONITOR: one Redis'
        if $s->topology eq 'cluster';
    my $w = ws();
    my ($id, $c) = $l->awaiting($w);
    my $old = $c->{invoiceId};
    $l->invoice_do($old, 'void');

    my $tx;
    my ($cmds) = $s->redis_traffic(sub {
        $tx = $l->manage($w, $id, 'payment_link');
    });
    my $b = link_is($tx, 0, 'void');
    my $new = $b->{invoiceId} // '';
    my $lr = qr/"EVALSHA" "[0-9a-f]{40}" "1" "\Qlg:{ws:$w->{id}}:lr:$id\E"/i;
    my @at = map { my $re = $_; (grep { $cmds->[$_] =~ $re } 0 .. $#$cmds)[0] }
             qr/$lr "\Q$w->{id}\E" "\Q$id\E" "\Q$old\E"/,
             qr/"set" "lg:invoice:\Q$new\E" "\Q$w->{id}:$id\E"/i,
             qr/$lr "\Q$w->{id}\E" "\Q$id\E" "1" "\Q$new\E"/,
             qr/"del" "lg:invoice:\Q$old\E"/i;
    ok(!grep({ !defined } @at), 'the claim, the SET, the store, the DEL')
        or diag "@$cmds";
    ok(!grep({ !defined } @at) && $at[0] < $at[1] && $at[1] < $at[2]
       && $at[2] < $at[3], 'in that order') or diag "@$cmds";
    is(scalar(grep { /"EVAL(?:SHA)?"/i && /"lg:invoice:/ } @$cmds), 0,
       'no script names an index');
    is($r->get("lg:invoice:$new"), "$w->{id}:$id", 'the new one indexed');
    ok(!$r->exists("lg:invoice:$old"), 'the old one not');
};

# The new invoice's index refused (an ACL: writes to lg:invoice:* denied,
# the old invoice's too: a reissue that stores nothing never writes it):
# the store is never sent, the new invoice is voided, the claim released;
# the request names the old invoice, still indexed.
subtest 'payment_link: the new index refused, nothing names it' => sub {
    plan skip_all => 'an ACL of one Redis' if $s->topology eq 'cluster';
    my $cli = 'redis-cli -p ' . $s->redis_port;
    my $w = ws();
    my ($id, $c) = $l->awaiting($w);
    my $old = $c->{invoiceId};
    $l->invoice_do($old, 'void');

    my $acl = "'~lg:[^i]*' '%R~*'";
    like(qx{$cli ACL SETUSER default resetkeys $acl 2>&1}, qr/^OK/,
         'writes to lg:invoice:* refused');
    my $tx = $l->manage($w, $id, 'payment_link');
    like(qx{$cli ACL SETUSER default allkeys 2>&1}, qr/^OK/,
         'every key allowed again');
    $l->error_is($tx, 503, 'STORE_UNAVAILABLE', 'the reissue failed');

    my $h = $l->lr($w, $id);
    is($h->{invoiceId}, $old, 'the old invoice still named');
    ok(!exists $h->{reissueAt}, 'the claim is released');
    is($r->get("lg:invoice:$old"), "$w->{id}:$id", 'and still indexed');
    my @new = grep { $_->{id} ne $old } $l->invoices($w->{customer});
    is(scalar @new, 1, 'one new invoice made');
    is($new[0]{status} // '', 'void', 'and voided');
    ok(!$r->exists('lg:invoice:' . ($new[0]{id} // '')), 'not indexed');

    my $b = link_is($l->manage($w, $id, 'payment_link'), 0, 'retried');
    is($r->get("lg:invoice:$b->{invoiceId}"), "$w->{id}:$id",
       'replaced and indexed');
};

# the check's answer about another invoice (void, so the link would be
# reissued) or another object: 502, the request and its open invoice as
# they were, no invoice made
subtest 'payment_link: an answer about something else: 502' => sub {
    my $w = ws();
    my ($id, $c) = $l->awaiting($w);
    my $inv = $c->{invoiceId};
    for my $f (['another invoice, void',
                {id => 'in_another', object => 'invoice', status => 'void'}],
               ['a credit note, void',
                {id => $inv, object => 'credit_note', status => 'void'}]) {
        my ($what, $shape) = @$f;
        my $before = $l->state_keys($w);
        $l->fault(method => 'GET', path_prefix => "/v1/invoices/$inv",
                  status => 200, body => $shape);
        $l->error_is($l->manage($w, $id, 'payment_link'), 502,
                     'BILLING_UNAVAILABLE', $what);
        $l->state_unchanged($w, $before, "$what: nothing changed");
        is(scalar($l->invoices($w->{customer})), 1,
           "$what: no new invoice");
        is($l->invoice($inv)->{status}, 'open', "$what: still open");
        $l->clear_faults;
    }
    link_is($l->manage($w, $id, 'payment_link'), 1, 'then reused');
};

subtest 'payment_link: Stripe failures' => sub {
    my $w = ws();
    my ($id, $c) = $l->awaiting($w);
    my $before = $l->state_keys($w);

    $l->fault(method => 'GET', path_prefix => '/v1/invoices/', status => 500);
    $l->error_is($l->manage($w, $id, 'payment_link'), 502,
                 'BILLING_UNAVAILABLE', 'Stripe 500');
    $l->fault(method => 'GET', path_prefix => '/v1/invoices/', status => 429);
    my $tx = $l->manage($w, $id, 'payment_link');
    $l->error_is($tx, 503, 'BILLING_UNAVAILABLE', 'Stripe 429');
    ok($tx->res->headers->header('Retry-After'), 'Retry-After');
    $l->state_unchanged($w, $before, 'nothing changed');

    # the replacement fails: the claim is released, the old index was
    # never removed
    $l->invoice_do($c->{invoiceId}, 'mark_uncollectible');
    $l->fault(method => 'POST', path_prefix => '/v1/invoiceitems',
              status => 500);
    $l->error_is($l->manage($w, $id, 'payment_link'), 502,
                 'BILLING_UNAVAILABLE', 'the new invoice failed');
    my $h = $l->lr($w, $id);
    is($h->{invoiceId}, $c->{invoiceId}, 'the old invoice still named');
    ok(!exists $h->{reissueAt}, 'the claim is released');
    is($r->get("lg:invoice:$c->{invoiceId}"), "$w->{id}:$id",
       'the old invoice still indexed');
    my @open = grep { $_->{status} eq 'open' } $l->invoices($w->{customer});
    is(scalar @open, 0, 'no open invoice left behind');

    my $b = link_is($l->manage($w, $id, 'payment_link'), 0, 'retried');
    is($l->lr($w, $id)->{invoiceId}, $b->{invoiceId}, 'now replaced');
};

# The worker dies (SIGKILL: no cleanup runs) while its reissue of an
# uncollectible invoice holds the claim, before Stripe voided the old
# invoice: the customer can still pay it with its first link. Its webhook
# index stays in place throughout a reissue (nothing to give back), so
# the payment settles the request; the dead worker's claim just lapses.
# Once the claim muted the index, only that worker gave it back: the
# payment was acknowledged as unknown, the request left awaiting payment.
subtest 'payment_link: the worker killed mid-reissue, the old invoice paid'
    => sub {
    my $w = ws();
    my ($id, $c) = $l->awaiting($w);
    my $old = $c->{invoiceId};
    $l->invoice_do($old, 'mark_uncollectible');

    # the old invoice's void held at Stripe, then dropped undone
    $l->fault(path_prefix => "/v1/invoices/$old/void", latency_ms => 30000,
              drop => 1);
    my $killed = 0;
    my (undef, $done) = $l->during([$w, POST => "/api/line-requests/$id",
                                    {action => 'payment_link'}], sub {
        return 0 unless $s->stub_held(qr{^/v1/invoices/\Q$old\E/void$});
        $killed = $s->kill_workers;
        return 1;
    }, 60);
    $l->clear_faults;
    ok($done && $killed, 'the workers were killed while the claim held')
        or return;
    my $h = $l->lr($w, $id);
    ok(exists $h->{reissueAt}, 'the dead worker\'s claim is left');
    is($h->{invoiceId}, $old, 'the old invoice still named');
    is($l->invoice($old)->{status}, 'uncollectible', 'and still payable');

    my $ev = $l->invoice_do($old, 'pay', $s->url('/webhooks/stripe'));
    is($ev->{status}, 200, 'the webhook answered 200');
    ok(!($ev->{json} // {})->{unknown}, 'the old invoice is known')
        or diag explain $ev;
    $h = $l->lr($w, $id);
    is("$h->{provisioningStatus}/$h->{paymentStatus}", 'provisioning/paid',
       'settled by its payment');
    ok(!defined $l->pending($w), 'the workspace is free');
    # settled with the dead worker's claim in place: what it may have
    # left at Stripe is a reconciliation run's to look for
    ok(eventually(sub { grep { $_->{reason} eq 'reissue_lapsed' }
                        queued($id) }, 5),
       'queued for reconciliation (reissue_lapsed)');
};

# The worker dies (SIGKILL) once Stripe finalized its new invoice and
# before lr_reissue_store named it: that invoice is open at Stripe, its
# link given to no one. The dead worker's claim (reissueAt, invoiceSeq) is
# the record of it. Returns the request, its old invoice and the one left
# unstored, or () when the kill did not happen as planned.
# With $paid, the new invoice's total is 0: Stripe marks it paid at its
# finalize (as a customer's credit balance would), a charge already.
sub killed_after_finalize {
    my ($w, $paid) = @_;
    my ($id, $c) = $l->awaiting($w);
    my $old = $c->{invoiceId};
    $l->invoice_do($old, 'void');
    $s->stub(POST => '/_stub/prices',
             {id => 'price_email_addon', unit_amount => 0}) if $paid;

    # the new invoice's finalize done at Stripe, its answer held, dropped
    $l->fault(path_prefix => '/v1/invoices/', latency_ms => 30000,
              after_commit => 1, drop => 1);
    my $killed = 0;
    my (undef, $done) = $l->during([$w, POST => "/api/line-requests/$id",
                                    {action => 'payment_link'}], sub {
        return 0 unless $s->stub_held(qr{^/v1/invoices/in_\w+/finalize$});
        $killed = $s->kill_workers;
        return 1;
    }, 60);
    $l->clear_faults;
    $s->stub(POST => '/_stub/prices',
             {id => 'price_email_addon', unit_amount => 1500}) if $paid;
    ok($done && $killed, 'the workers were killed after the finalize')
        or return;
    # the held call went with them: the next test's wait for a held
    # finalize must not take this one for its own (it did, under load)
    ok(eventually(sub { !$s->stub_held(qr{/finalize$}) }, 5),
       'the held finalize gone with the killed worker');
    my @made = grep { $_->{id} ne $old } $l->invoices($w->{customer});
    is(scalar @made, 1, 'one new invoice made') or return;
    is($made[0]{status}, $paid ? 'paid' : 'open',
       $paid ? 'paid at its finalize' : 'open at Stripe');
    my $h = $l->lr($w, $id);
    is($h->{invoiceId}, $old, 'the request does not name it');
    ok(exists $h->{reissueAt}, 'the dead worker\'s claim is left');
    return ($id, $old, $made[0]{id});
}

# the entries of lg:{fleet}:reconcile naming request $id, as hashes
sub queued {
    my ($id) = @_;
    return grep { ($_->{line_request_id} // '') eq $id }
           map { +{ @{ $_->[1] } } }
           $r->xrange('lg:{fleet}:reconcile', '-', '+');
}

# the stub's log: its latest seq, and the lists of invoices made since
sub stub_seq {
    my $log = $s->stub(GET => '/_stub/state')->res->json->{log} // [];
    return @$log ? $log->[-1]{seq} : 0;
}

sub listed_since {
    my ($seq) = @_;
    my $log = $s->stub(GET => '/_stub/state')->res->json->{log} // [];
    return grep { $_->{seq} > $seq && $_->{method} eq 'GET'
                  && $_->{path} eq '/v1/invoices' } @$log;
}

sub created_gte {
    my ($e) = @_;
    my $p = $e->{params} // {};
    return ref $p->{created} eq 'HASH' ? $p->{created}{gte}
                                       : $p->{'created[gte]'};
}

# ms since the epoch as nginx writes an ISO 8601 time
sub iso_ms {
    my ($ms) = @_;
    my @t = gmtime int($ms / 1000);
    return sprintf '%04d-%02d-%02dT%02d:%02d:%02d.%03dZ', $t[5] + 1900,
                   $t[4] + 1, @t[3, 2, 1, 0], $ms % 1000;
}

# the claim aged past its 60 s hold in Redis, rather than waited for
sub lapse {
    my ($w, $id) = @_;
    my $lkey = "lg:{ws:$w->{id}}:lr:$id";
    $r->hset($lkey, reissueAt => $r->hget($lkey, 'reissueAt') - 60001);
}

# The lookup of what a lapsed claim left fails: the check of the invoice
# the request names passes (a 1 ms fault, used up), the list of the
# customer's invoices then fails (Stripe 500). The same for the sweep of
# a payment_link, a cancel and a GET.
sub lookup_fails {
    $l->fault(method => 'GET', path_prefix => '/v1/invoices/',
              latency_ms => 1);
    $l->fault(method => 'GET', path_prefix => '/v1/invoices',
              status => 500);
}

# A request whose reissue claim lapsed (killed_after_finalize, then
# lapse) with the read's check due (no reconciledAt: within
# linegate_reconcile_interval a GET would not look), as the GET sweeps
# below stage it: (id, old invoice, the claim's invoice, the hash's key),
# or an empty list when the staging failed.
sub lapsed_request {
    my ($w, $paid) = @_;
    my ($id, $old, $made) = killed_after_finalize($w, $paid) or return;
    lapse($w, $id);
    my $lkey = "lg:{ws:$w->{id}}:lr:$id";
    $r->hdel($lkey, 'reconciledAt');
    return ($id, $old, $made, $lkey);
}

# Once the claim lapsed, the next payment_link takes it over and, before
# it issues its own invoice, voids every invoice of the request that the
# request does not name (Stripe's list, by metadata[line_request_id]):
# the customer is left with one payable invoice, the one the request
# names. Before, the orphan stayed open beside the new one.
subtest 'payment_link: an invoice its dead worker never stored is voided'
    => sub {
    my $w = ws();
    my ($id, $old, $orphan) = killed_after_finalize($w) or return;
    my $before = $r->xlen('lg:{fleet}:reconcile') // 0;
    # as LINK_INDEX writes it, had the worker died after it
    $r->set("lg:invoice:$orphan", "$w->{id}:$id");
    lapse($w, $id);
    my $claimed = $r->hget("lg:{ws:$w->{id}}:lr:$id", 'reissueAt');
    my $seq = stub_seq();

    my $b = link_is($l->manage($w, $id, 'payment_link'), 0,
                    'the next payment_link');
    my $new = $b->{invoiceId} // '';
    ok($new ne $old && $new ne $orphan, 'a new invoice');
    is($l->invoice($orphan)->{status}, 'void', 'the orphan is void');
    ok(eventually(sub { !$r->exists("lg:invoice:$orphan") }, 5),
       'and its webhook index gone');
    # from the lapsed claim on (its time less 10 minutes for Stripe's
    # clock), not over the request's whole life
    is_deeply([map { created_gte($_) } listed_since($seq)],
              [int($claimed / 1000) - 600], 'listed from the lapsed claim');
    my @open = map { $_->{id} } grep { $_->{status} eq 'open' }
               $l->invoices($w->{customer});
    is_deeply(\@open, [$new], 'the only open invoice is the new one');
    is(scalar(() = $l->invoices($w->{customer})), 3,
       'no other invoice issued');
    my $h = $l->lr($w, $id);
    is($h->{invoiceId}, $new, 'the request names it');
    is($h->{invoiceSeq}, 2, 'under the second claim');
    ok(!exists $h->{reissueAt}, 'the claim released');
    # the orphan's mark (lr_void_fence) goes with the store of the new
    # invoice, as a creation's store drops them: before, it was left
    ok(!exists $h->{voidingInvoice}, 'the fence\'s marks gone with it');
    is($r->get("lg:invoice:$new"), "$w->{id}:$id", 'indexed');
    is(($r->xlen('lg:{fleet}:reconcile') // 0) - $before, 0,
       'nothing queued for reconciliation');

    link_is($l->manage($w, $id, 'payment_link'), 1, 'and reused next');
    is(scalar(() = $l->invoices($w->{customer})), 3, 'nothing more issued');
};

# The customer paid the orphan (Stripe's hosted page) before the claim
# lapsed: it is not voided but kept, the request named it and settled by
# it, as for an invoice paid at finalization; nothing else is issued.
subtest 'payment_link: an unstored invoice paid meanwhile settles it' => sub {
    my $w = ws();
    my ($id, $old, $orphan) = killed_after_finalize($w) or return;
    $l->invoice_do($orphan, 'pay');
    lapse($w, $id);

    my $b = $l->answer($l->manage($w, $id, 'payment_link'), 200,
                       'the next payment_link');
    is($b->{status}, 'provisioning', 'the 2.5 body for provisioning');
    is($b->{paymentStatus}, 'paid', 'paid');
    is($l->invoice($orphan)->{status}, 'paid', 'the orphan kept, paid');
    is(scalar(() = $l->invoices($w->{customer})), 2, 'nothing issued');
    my $h = $l->lr($w, $id);
    is("$h->{provisioningStatus}/$h->{paymentStatus}", 'provisioning/paid',
       'settled');
    is($h->{invoiceId}, $orphan, 'naming the invoice paid');
    is($r->get("lg:invoice:$orphan"), "$w->{id}:$id", 'indexed');
    ok(!defined $l->pending($w), 'the workspace is free');
    ok(eventually(sub { grep { $_->{id} eq $id } $l->stream }, 5),
       'in the provisioning stream');
};

# Which paid invoice is the lapsed claim's: metadata[line_request_id] is
# on every invoice of the request (its creation's, each reissue's, one
# made by hand with it), so the sweep adopts a paid one only if a claim
# made it since the invoice the request names (its metadata[invoice_seq]
# past the named one's, none: 0) and before the sweeper's own claim; with
# no invoice_seq at all (an old node's reissue, a rolling upgrade), only
# if Stripe made it within the claims' time and after the named invoice:
# the rule a reconciliation run's reissue_lapsed follows (t/235), one
# function of both. Any other paid one is queued for a human
# (invoice_unrepaired; a run finds it paid, not named: invoice_paid) and
# a new invoice is issued. Before, the first paid one found was stored
# over the named invoice and the request promoted on it; and until
# 2026-11-29 an old node's was left for a human by the sweep while a run
# adopted it. The named invoice is made a minute before the claims
# ($ago s ago, 120 by default) at Stripe; $back: B made that long ago.
subtest 'payment_link: a paid invoice no lapsed claim made' => sub {
    for my $case ({what => 'no invoice_seq, made before the named one',
                   claims => 1, back => 300},
                  {what => 'no invoice_seq, made past the claims\' time',
                   claims => 1, ago => 1000},
                  {what => 'a malformed invoice_seq', seq => 'x1',
                   claims => 1},
                  {what => 'the sweeper\'s own claim', seq => 2,
                   claims => 1},
                  {what => 'older than the named invoice', seq => 1,
                   claims => 3, named => 2},
                  {what => 'a claim past the named invoice', seq => 3,
                   claims => 3, named => 2, adopted => 1},
                  {what => 'no invoice_seq, an old node\'s in its claims\' '
                           . 'time', claims => 1, adopted => 1})
    {
        my ($what, $seq, $named) = @$case{qw(what seq named)};
        my $ago = $case->{ago} // 120;
        my $w = ws();
        my ($id, $c) = $l->awaiting($w);
        my $old = $c->{invoiceId};
        my $lkey = "lg:{ws:$w->{id}}:lr:$id";
        if (defined $named) {
            # the request names a reissue's invoice, made by claim $named
            $old = $l->request_invoice($w, $id, 'open', $named);
            $r->hset($lkey, invoiceId => $old);
            $r->set("lg:invoice:$old", "$w->{id}:$id");
        }
        $s->stub(POST => "/_stub/invoices/$old/backdate",
                 {seconds => $ago + 60});
        $l->invoice_do($old, 'void');
        # the claims so far, the latest lapsed (its hold passed)
        my $at = int(time * 1000) - $ago * 1000;
        $r->hset($lkey, reissueAt => $at, sweepFrom => $at, sweepTo => $at,
                 reissueBy => 'dead', invoiceSeq => $case->{claims});
        my $paid = $l->request_invoice($w, $id, 'paid', $seq,
                                       $case->{back});
        my $before = scalar queued($id);
        my $logoff = length $s->error_log;

        my $tx = $l->manage($w, $id, 'payment_link');
        my $h = $l->lr($w, $id);
        if ($case->{adopted}) {
            my $b = $l->answer($tx, 200, "$what: adopted");
            is($b->{status}, 'provisioning', "$what: provisioning");
            is($h->{invoiceId}, $paid, "$what: naming the paid one");
            is(scalar(queued($id)) - $before, 0, "$what: nothing queued");
            next;
        }
        my $b = link_is($tx, 0, "$what: a new invoice issued");
        ok(($b->{invoiceId} // '') ne $paid, "$what: not the paid one");
        is("$h->{provisioningStatus}/$h->{invoiceId}",
           "awaiting_payment/$b->{invoiceId}",
           "$what: still awaiting payment, on the new invoice");
        is($l->invoice($paid)->{status}, 'paid', "$what: left paid");
        ok(eventually(sub { grep { ($_->{invoice_id} // '') eq $paid }
                            queued($id) }, 5),
           "$what: queued for a human");
        my ($e) = grep { ($_->{invoice_id} // '') eq $paid } queued($id);
        is($e->{reason}, 'invoice_unrepaired', "$what: invoice_unrepaired");
        is(scalar(queued($id)) - $before, 1, "$what: once");
        my $of = qr/invoice "\Q$paid\E" of line request "\Q$id\E"/;
        like(substr($s->error_log, $logoff),
             qr/$of is paid and no request names it, and no lapsed claim /,
             "$what: logged");
    }
};

# A paid invoice the sweep does not adopt is left for a human once per
# invoice, whichever sweeps find it: here a second claim lapses after the
# first sweep, and the next payment_link sweeps the same window again
# (as a retry after a failed sweep, a GET's, a cancel's would). Each sweep
# used to queue it again and log it at warn again, twice (the entry
# itself written once, by its marker); now the queuing's answer says it:
# warn once when queued, notice ("queued before") at every later sweep.
subtest 'payment_link: a paid invoice left for a human, queued once' => sub {
    my $w = ws();
    my ($id, $c) = $l->awaiting($w);
    my $lkey = "lg:{ws:$w->{id}}:lr:$id";
    $l->invoice_do($c->{invoiceId}, 'void');
    # a malformed invoice_seq: never a claim's, whatever the sweep
    my $paid = $l->request_invoice($w, $id, 'paid', 'x1');
    my $before = scalar queued($id);
    my $logoff = length $s->error_log;
    my $of = qr/invoice "\Q$paid\E" of line request "\Q$id\E"/;

    for my $n (1, 2) {
        # a claim lapsed (its hold passed), its window B's
        my $at = int(time * 1000) - 120000;
        $r->hset($lkey, reissueAt => $at, sweepFrom => $at, sweepTo => $at,
                 reissueBy => 'dead');
        my $b = link_is($l->manage($w, $id, 'payment_link'), 0,
                        "sweep $n: a new invoice issued");
        is($l->invoice($paid)->{status}, 'paid', "sweep $n: B left paid");
        like(substr($s->error_log, $logoff),
             qr/$of is paid and no request names it, and no lapsed claim /,
             "sweep $n: why logged") if $n == 1;
        ok(eventually(sub { grep { ($_->{invoice_id} // '') eq $paid }
                            queued($id) }, 5), "sweep $n: queued");
        # the next claim's: the request's invoice void again
        $l->invoice_do($b->{invoiceId}, 'void');
    }
    ok(eventually(sub { substr($s->error_log, $logoff)
                        =~ /$of of workspace .* queued before / }, 5),
       'the second sweep found it queued before');
    is(scalar(grep { ($_->{invoice_id} // '') eq $paid } queued($id)), 1,
       'one entry for it');
    is(scalar(queued($id)) - $before, 1, 'nothing else queued');
    my @warn = grep { /\[warn\]/ && /"\Q$paid\E"/ }
               split /\n/, substr($s->error_log, $logoff);
    is(scalar @warn, 1, 'one warn naming it') or diag join "\n", @warn;
    my $ws = qr/of workspace "\Q$w->{id}\E"/;
    like($warn[0] // '',
         qr/$of $ws is paid, and no request takes it: queued for recon/,
         'the warn: queued for a human');
    # queued once for as long as the request exists: the marker never
    # expires (it lasted 7 days, and a sweep after that queued it again)
    is($r->ttl("lg:{fleet}:q:$w->{id}:inv_$paid"), -1,
       'its marker never expires');
};

# The lookup fails (Stripe 500): nothing is issued, and the claim is
# released lapsed (reissueAt 0), so that the next payment_link looks
# again rather than forgetting the orphan.
subtest 'payment_link: the lookup of unstored invoices fails' => sub {
    my $w = ws();
    my ($id, $old, $orphan) = killed_after_finalize($w) or return;
    lapse($w, $id);

    lookup_fails();
    $l->error_is($l->manage($w, $id, 'payment_link'), 502,
                 'BILLING_UNAVAILABLE', 'the lookup failed');
    $l->clear_faults;
    my $h = $l->lr($w, $id);
    is($h->{invoiceId}, $old, 'the old invoice still named');
    is($h->{reissueAt}, 0, 'the claim released, lapsed');
    is(scalar(() = $l->invoices($w->{customer})), 2, 'nothing issued');
    is($l->invoice($orphan)->{status}, 'open', 'the orphan still open');

    my $b = link_is($l->manage($w, $id, 'payment_link'), 0, 'retried');
    is($l->invoice($orphan)->{status}, 'void', 'the orphan voided then');
    my @open = map { $_->{id} } grep { $_->{status} eq 'open' }
               $l->invoices($w->{customer});
    is_deeply(\@open, [$b->{invoiceId}], 'one open invoice, the new one');
};

# Stripe fails the void of the invoice the sweep found (a 5xx, a reset
# connection: tried again for 8 s, then queued as invoice_unrepaired):
# it is still payable, so nothing is issued beside it. The claim is
# released lapsed (reissueAt 0, sweepFrom kept) and the answer is 502;
# the retry sweeps again, voids it and issues the one open invoice.
# Before, the sweep went on: a new invoice was issued and answered 200
# while the orphan stayed open at Stripe, two payable invoices.
for my $f ([500 => {status => 500}], [reset => {drop => 1}]) {
    my ($kind, $fault) = @$f;
    subtest "payment_link: the sweep's void of an orphan fails ($kind)"
        => sub {
        my $w = ws();
        my ($id, $old, $orphan) = killed_after_finalize($w) or return;
        my $lkey = "lg:{ws:$w->{id}}:lr:$id";
        lapse($w, $id);
        my $claimed = $r->hget($lkey, 'reissueAt');

        # its void, and a delete too, fail for good
        $l->fault(path_prefix => "/v1/invoices/$orphan", method => '',
                  count => -1, %$fault);
        $l->error_is($l->manage($w, $id, 'payment_link'), 502,
                     'BILLING_UNAVAILABLE', 'the orphan not voided');
        $l->clear_faults;
        my $h = $l->lr($w, $id);
        is($h->{invoiceId}, $old, 'the old invoice still named');
        is($h->{reissueAt}, 0, 'the claim released, lapsed');
        is($h->{sweepFrom}, $claimed, 'the next sweep from the lapsed claim');
        is($h->{invoiceSeq}, 2, 'the sweeper\'s claim');
        is($l->invoice($orphan)->{status}, 'open', 'the orphan still open');
        is(scalar(() = $l->invoices($w->{customer})), 2, 'nothing issued');

        my $b = link_is($l->manage($w, $id, 'payment_link'), 0, 'retried');
        my $new = $b->{invoiceId} // '';
        is($l->invoice($orphan)->{status}, 'void', 'the orphan voided then');
        my @open = map { $_->{id} } grep { $_->{status} eq 'open' }
                   $l->invoices($w->{customer});
        is_deeply(\@open, [$new], 'one open invoice, the new one');
        is(scalar(() = $l->invoices($w->{customer})), 3,
           'one invoice issued in all');
        $h = $l->lr($w, $id);
        is($h->{invoiceId}, $new, 'the request names it');
        ok(!exists $h->{reissueAt} && !exists $h->{sweepFrom},
           'the claim released, swept');
        ok(eventually(sub { !$r->exists("lg:invoice:$orphan") }, 5),
           'no index of the orphan');
    };
}

# The sweep's void of the orphan gets one 500 that Stripe keeps under its
# key (see void_keys below): the machine's next try goes under a key of
# its own and voids it, and the sweep goes on within the request. Before,
# every try got the kept 500: 502 after 8 s, and every sweep's the same
# for a day.
subtest 'payment_link: the sweep\'s void gets a 500 Stripe keeps' => sub {
    $l->clear_faults;
    my $w = ws();
    my ($id, $old, $orphan) = killed_after_finalize($w) or return;
    lapse($w, $id);

    $l->fault(path_prefix => "/v1/invoices/$orphan/void", status => 500,
              saved => 1);
    my $b = link_is($l->manage($w, $id, 'payment_link'), 0,
                    'swept within the request');
    $l->clear_faults;
    is($l->invoice($orphan)->{status}, 'void', 'the orphan voided');
    is($l->lr($w, $id)->{invoiceId}, $b->{invoiceId} // '',
       'the request names the new one');
    my @k = void_keys($orphan);
    is($k[0], "lg-$id-$orphan-void", 'the first try under the plain key');
    like($k[1] // '', qr/^lg-\Q$id-$orphan\E-void-\d+-\d+-\d+$/,
         'the next under a key of its own');
};

# The invoice the sweep found is voided by someone else while the
# sweep's own void is on its way (a reconciliation run working its
# invoice_unrepaired entry, a person at Stripe): Stripe refuses the void
# and the delete of a void invoice, and the check reads it void. It is
# discarded, by whoever did it: the sweep goes on and issues the one open
# invoice, nothing queued. Before, anything not paid at the check was
# "could not be discarded": 502 (the sweep stopped) and an
# invoice_unrepaired entry for an invoice already void.
subtest 'payment_link: the orphan voided by someone else mid-sweep'
    => sub {
    my $w = ws();
    my ($id, $old, $orphan) = killed_after_finalize($w) or return;
    lapse($w, $id);
    my @before = queued($id);

    $l->fault(method => 'POST', path_prefix => "/v1/invoices/$orphan/void",
              latency_ms => 1500, count => 1);
    my $voided = 0;
    my ($tx) = $l->during([$w, POST => "/api/line-requests/$id",
                           {action => 'payment_link'}], sub {
        return 0 unless $s->stub_held(qr{^/v1/invoices/\Q$orphan\E/void$});
        $l->invoice_do($orphan, 'void');
        return $voided = 1;
    }, 20);
    $l->clear_faults;
    ok($voided, 'voided while the sweep\'s void was held') or return;
    my $b = link_is($tx, 0, 'the sweep goes on');
    is($l->invoice($orphan)->{status}, 'void', 'the orphan void');
    my @open = map { $_->{id} } grep { $_->{status} eq 'open' }
               $l->invoices($w->{customer});
    is_deeply(\@open, [$b->{invoiceId} // ''],
              'one open invoice, the new one');
    is($l->lr($w, $id)->{invoiceId}, $b->{invoiceId}, 'the request names it');
    is(scalar(() = queued($id)), scalar @before, 'nothing queued');
};

# Redis does not answer the fence of the invoice the sweep found (every
# master's writes paused once Stripe's list, slowed, is on its way):
# nothing is voided or issued, 503, the claim is released lapsed once
# Redis answers again (a durable write), and the retry sweeps again.
subtest 'payment_link: the sweep\'s fence not answered' => sub {
    my $w = ws();
    my ($id, $old, $orphan) = killed_after_finalize($w) or return;
    my $lkey = "lg:{ws:$w->{id}}:lr:$id";
    lapse($w, $id);
    my $claimed = $r->hget($lkey, 'reissueAt');

    # the check of the invoice named passes; the list is held 1 s
    $l->fault(method => 'GET', path_prefix => '/v1/invoices/',
              latency_ms => 1);
    $l->fault(method => 'GET', path_prefix => '/v1/invoices',
              latency_ms => 1000);
    my $paused = 0;
    my ($tx) = $l->during([$w, POST => "/api/line-requests/$id",
                           {action => 'payment_link'}], sub {
        return 0 unless $s->stub_held(qr{^/v1/invoices$});
        # past the command timeout (1 s) after the list's answer
        $l->pause_writes(3000);
        return $paused = 1;
    }, 10);
    $l->clear_faults;
    ok($paused, 'writes paused while the list was held') or return;
    $l->error_is($tx, 503, 'STORE_UNAVAILABLE', 'the fence not answered');
    # the release is a durable write: it lands once the pause is over
    ok(eventually(sub { ($r->hget($lkey, 'reissueAt') // '') eq '0' }, 10),
       'the claim released, lapsed');
    my $h = $l->lr($w, $id);
    is($h->{invoiceId}, $old, 'the old invoice still named');
    is($h->{sweepFrom}, $claimed, 'the next sweep from the lapsed claim');
    is($l->invoice($orphan)->{status}, 'open', 'the orphan not voided');
    is(scalar(() = $l->invoices($w->{customer})), 2, 'nothing issued');

    my $b = link_is($l->manage($w, $id, 'payment_link'), 0, 'retried');
    is($l->invoice($orphan)->{status}, 'void', 'the orphan voided then');
    my @open = map { $_->{id} } grep { $_->{status} eq 'open' }
               $l->invoices($w->{customer});
    is_deeply(\@open, [$b->{invoiceId}], 'one open invoice, the new one');
    is($l->lr($w, $id)->{invoiceId}, $b->{invoiceId}, 'the request names it');
};

# The claim lapsed long ago and the customer was billed often since (101
# invoices of other kinds): the sweep lists a window of the customer's
# invoices around the lapsed claim (sweepTo, the latest claim not swept,
# plus an hour), which does not grow with the time since. Before, it
# listed every invoice made since the claim, found more than its 10 pages
# hold, answered 502 and kept sweepFrom: every later payment_link of the
# request failed alike, for good.
subtest 'payment_link: a customer billed often since a lapsed claim'
    => sub {
    my $w = ws();
    my ($id, $old, $orphan) = killed_after_finalize($w) or return;
    my $lkey = "lg:{ws:$w->{id}}:lr:$id";
    my $ago = 7200;
    # the dead worker's claim and its invoices, two hours old
    $r->hset($lkey, reissueAt => $r->hget($lkey, 'reissueAt')
                                 - $ago * 1000 - 60001);
    for my $in ($old, $orphan) {
        $s->stub(POST => "/_stub/invoices/$in/backdate",
                 {seconds => $ago});
    }
    for (1 .. 101) {
        $s->ua->post($s->stub_url('/v1/invoices')
                     => {Authorization => 'Bearer sk_test_x'}
                     => form => {customer => $w->{customer},
                                 collection_method => 'send_invoice',
                                 days_until_due => 7});
    }
    my $seq = stub_seq();

    my $b = link_is($l->manage($w, $id, 'payment_link'), 0,
                    'the next payment_link');
    is($l->invoice($orphan)->{status}, 'void', 'the orphan is void');
    my @lists = listed_since($seq);
    is(scalar @lists, 1, 'one page of the customer\'s invoices listed');
    my $p = ($lists[0] // {})->{params} // {};
    my $lte = ref $p->{created} eq 'HASH' ? $p->{created}{lte}
                                          : $p->{'created[lte]'};
    ok(defined $lte && $lte < time - $ago + 3700,
       'up to an hour after the lapsed claim')
        or diag explain $p;
    my $h = $l->lr($w, $id);
    is($h->{invoiceId}, $b->{invoiceId}, 'the request names the new one');
    ok(!exists $h->{sweepFrom} && !exists $h->{sweepTo},
       'the sweep\'s window gone with the store');
};

# The workspace moved to another Stripe customer after a claim lapsed:
# the invoices of the request, and the one the dead worker left, are the
# first customer's. A reissue bills the customer the request was billed
# to (its customer), so the sweep looks there. Before, it looked under
# the workspace's new customer alone and left the orphan open, payable.
subtest 'payment_link: the workspace moved to another customer' => sub {
    my $w = ws();
    my ($id, $old, $orphan) = killed_after_finalize($w) or return;
    my $moved = "$w->{customer}_moved";
    $s->stub(POST => '/_stub/customers', {id => $moved, card => 1});
    my $tx = $s->op(PUT => "/workspaces/$w->{id}",
                    {plan => 'growth', subscriptionStatus => 'active',
                     stripeCustomerId => $moved});
    ok($tx->res->is_success, 'the workspace names another customer')
        or return;
    lapse($w, $id);

    my $b = link_is($l->manage($w, $id, 'payment_link'), 0,
                    'the next payment_link');
    is($l->invoice($orphan)->{status}, 'void', 'the orphan is void');
    my @open = map { $_->{id} } grep { $_->{status} eq 'open' }
               $l->invoices($w->{customer}), $l->invoices($moved);
    is_deeply(\@open, [$b->{invoiceId}], 'one open invoice, the new one');
    is($l->invoice($b->{invoiceId})->{customer}, $w->{customer},
       'billed to the customer the request was billed to');
};

# A sweeper that outlived its own hold mid-sweep (Stripe's list slow) is
# taken over by another payment_link (invoiceSeq + 1): the invoice it
# found unstored may then be the live claim's own, about to be stored.
# Its fence (lr_void_fence with its invoiceSeq) is refused: it marks
# nothing, voids nothing, and answers as a claim taken over (409). Before,
# it fenced and voided it, and the live claim's store was refused.
subtest 'payment_link: a sweeper taken over fences nothing' => sub {
    my $w = ws();
    my ($id, $old, $orphan) = killed_after_finalize($w) or return;
    lapse($w, $id);
    my $lkey = "lg:{ws:$w->{id}}:lr:$id";

    # the check of the old invoice passes (a 1 ms fault, used up), the
    # list of the customer's invoices is slow
    $l->fault(method => 'GET', path_prefix => '/v1/invoices/',
              latency_ms => 1);
    $l->fault(method => 'GET', path_prefix => '/v1/invoices',
              latency_ms => 1500);
    my $at = 0;
    my ($tx) = $l->during([$w, POST => "/api/line-requests/$id",
                           {action => 'payment_link'}], sub {
        return 0 unless ($l->lr($w, $id)->{invoiceSeq} // 0) == 2;
        $r->hincrby($lkey, 'invoiceSeq', 1);
        my ($sec, $usec) = $r->time;
        $at = int($sec * 1000 + $usec / 1000);
        $r->hset($lkey, reissueAt => $at);
        return 1;
    }, 5);
    $l->clear_faults;
    ok($at, 'taken over mid-sweep') or return;

    conflict($tx, 'awaiting_payment', 'the sweeper');
    my $h = $l->lr($w, $id);
    ok(!exists $h->{voidingInvoice}, 'nothing marked')
        or diag explain $h;
    is($l->invoice($orphan)->{status}, 'open',
       'the invoice found left to the live claim');
    is(scalar(() = $l->invoices($w->{customer})), 2, 'nothing issued');
    is($h->{invoiceSeq}, 3, 'the live claim\'s invoiceSeq');
    is($h->{reissueAt}, $at, 'and its reissueAt, left alone');
    like($s->error_log, qr/the sweep of line request "\Q$id\E" stopped/,
         'logged');
};

# The claim's time (reissueAt) is when the claim is taken, not when the
# request came: a slow check of the old invoice (LINK_CHECK) ate the hold
# before, and another payment_link could take a live claim over.
subtest 'payment_link: a slow check does not eat the claim\'s hold' => sub {
    my $w = ws();
    my ($id, $c) = $l->awaiting($w);
    my $old = $c->{invoiceId};
    $l->invoice_do($old, 'void');
    my $lkey = "lg:{ws:$w->{id}}:lr:$id";

    $l->fault(method => 'GET', path_prefix => "/v1/invoices/$old",
              latency_ms => 1500);
    $l->fault(path_prefix => '/v1/invoiceitems', latency_ms => 1000);
    my $age;
    my ($tx) = $l->during([$w, POST => "/api/line-requests/$id",
                           {action => 'payment_link'}], sub {
        my $at = $r->hget($lkey, 'reissueAt') or return 0;
        my ($sec, $usec) = $r->time;
        $age = int($sec * 1000 + $usec / 1000) - $at;
        return 1;
    }, 10);
    $l->clear_faults;
    ok(defined $age, 'the claim seen while held') or return;
    cmp_ok($age, '<', 1000, 'reissueAt: when it was claimed, not before');
    link_is($tx, 0, 'the payment_link');
};

# A GET's check finds the invoice the request names void while the
# claim lapsed: the read sweeps what the claim left under a claim of its
# own, as payment_link and cancel do (the orphan voided, its index
# gone), releases the claim swept and cancels, as a GET does with a void
# invoice and no claim: nothing left for a run. Before, the GET answered
# awaiting_payment and left the orphan open until a payment_link or
# cancel came (for a client that only polls, never); before 2026-11-28
# it canceled at once and queued the request for a run (reissue_lapsed)
# with the orphan open meanwhile.
subtest 'a GET over a lapsed claim sweeps it, then cancels' => sub {
    my $w = ws();
    my ($id, $old, $orphan) = killed_after_finalize($w) or return;
    # as LINK_INDEX writes it, had the worker died after it
    $r->set("lg:invoice:$orphan", "$w->{id}:$id");
    lapse($w, $id);
    my $lkey = "lg:{ws:$w->{id}}:lr:$id";
    $r->hset($lkey, reconciledAt => 0);    # its check due

    my $g = $l->answer($l->get($w, $id), 200, 'GET');
    is($g->{status}, 'canceled', 'canceled once swept');
    is($l->invoice($orphan)->{status}, 'void', 'the orphan voided');
    ok(eventually(sub { !$r->exists("lg:invoice:$orphan") }, 5),
       'the orphan\'s index gone');
    my $h = $l->lr($w, $id);
    is("$h->{provisioningStatus}/$h->{invoiceId}", "canceled/$old",
       'canceled, naming its invoice');
    is($h->{invoiceSeq}, 2, 'swept under a claim of its own');
    ok(!exists $h->{reissueAt} && !exists $h->{sweepPending},
       'no claim, nothing to sweep');
    is(scalar(() = $l->invoices($w->{customer})), 2, 'nothing issued');
    sleep 0.3;
    is(scalar(() = queued($id)), 0, 'nothing queued for a run');
    is($l->answer($l->get($w, $id), 200, 'GET again')->{status},
       'canceled', 'GET again: canceled');
};

# The same over a request made before requests kept their customer (no
# `customer` in its hash): payment_link and cancel bill and sweep it
# under the workspace's (lr_manage), and so does the GET now, reading
# the workspace's itself. Before 2026-11-29 the GET swept nothing and
# answered awaiting_payment over its void invoice, poll after poll.
subtest 'a GET over a lapsed claim, no customer kept: swept' => sub {
    my $w = ws();
    my ($id, $old, $orphan) = killed_after_finalize($w) or return;
    $r->set("lg:invoice:$orphan", "$w->{id}:$id");
    lapse($w, $id);
    my $lkey = "lg:{ws:$w->{id}}:lr:$id";
    $r->hset($lkey, reconciledAt => 0);    # its check due
    $r->hdel($lkey, 'customer');

    my $g = $l->answer($l->get($w, $id), 200, 'GET');
    is($g->{status}, 'canceled', 'canceled once swept');
    is($l->invoice($orphan)->{status}, 'void', 'the orphan voided');
    my $h = $l->lr($w, $id);
    is("$h->{provisioningStatus}/$h->{invoiceId}", "canceled/$old",
       'canceled, naming its invoice');
    ok(!exists $h->{reissueAt} && !exists $h->{sweepPending},
       'no claim, nothing to sweep');
};

# The request ends while the claim lapsed, but the answer of what ended
# it is lost: lr_resolve (a cancel's) ran and its reply never came
# (the client got 503), or wh_invoice recorded the event (a payment of
# the invoice it names) and nginx never saw its answer (Stripe's
# redelivery is a seen event). lr_settle marked the request sweepPending
# in the same step, so the next read of it (a GET, the redelivery)
# queues it, and the mark goes once queued. Before, only the answer that
# ended it queued it: nothing was queued.
sub lapsed_settled {
    my ($w, $id, $old) = @_;
    my $lkey = "lg:{ws:$w->{id}}:lr:$id";
    my ($sec, $usec) = $r->time;
    my $now = int($sec * 1000 + $usec / 1000);
    return ($lkey, $now, iso_ms($now),
            $lkey, "lg:{ws:$w->{id}}:lines", "lg:{ws:$w->{id}}:live",
            "lg:{ws:$w->{id}}:pending", 'lg:provisioning');
}

subtest 'a settle whose reply was lost: the next GET queues it' => sub {
    plan skip_all => 'its script run from the tree with one Redis\'s keys'
        if $s->topology eq 'cluster';
    my $w = ws();
    my ($id, $old, $orphan) = killed_after_finalize($w) or return;
    lapse($w, $id);
    my ($lkey, $now, $iso, @keys) = lapsed_settled($w, $id, $old);
    my $from = $r->hget($lkey, 'reissueAt');

    # lr_resolve as a GET's check sends it, its reply lost
    $r->eval(lua_script('lr_resolve'), 5, @keys, $w->{id}, $id, $old,
             'void', $now, $iso, substr($iso, 0, 10), 'w');
    is($r->hget($lkey, 'provisioningStatus'), 'canceled', 'canceled');
    is($r->hget($lkey, 'sweepPending'), $from, 'marked: from its claim');
    is(scalar(() = queued($id)), 0, 'nothing queued yet');

    is($l->answer($l->get($w, $id), 200, 'a GET')->{status}, 'canceled',
       'the GET after it');
    ok(eventually(sub { queued($id) }, 5), 'queued then');
    my @e = queued($id);
    is(scalar @e, 1, 'once');
    is($e[0]{reason}, 'reissue_lapsed', 'reissue_lapsed');
    is($e[0]{at}, iso_ms($from), 'from the lapsed claim');
    ok(eventually(sub { !$r->hexists($lkey, 'sweepPending') }, 5),
       'the mark cleared');
    $l->answer($l->get($w, $id), 200, 'GET again');
    sleep 0.3;
    is(scalar(() = queued($id)), 1, 'nothing more queued');
};

subtest 'a webhook whose answer was lost: its redelivery queues it' => sub {
    plan skip_all => 'its script run from the tree with one Redis\'s keys'
        if $s->topology eq 'cluster';
    my $w = ws();
    my ($id, $old, $orphan) = killed_after_finalize($w) or return;
    lapse($w, $id);
    my ($lkey, $now, $iso, @keys) = lapsed_settled($w, $id, $old);
    my $evt = 'evt_lost' . $id;

    # wh_invoice as nginx sends it for invoice.paid, its answer lost (a
    # void over the lapsed claim is refused since 2026-11-28: t/300)
    my $got = [$r->eval(lua_script('wh_invoice'), 7,
                        "lg:{ws:$w->{id}}:event:$evt", @keys[0 .. 3],
                        "lg:{ws:$w->{id}}", $keys[4], $old, 'paid',
                        $now, $iso, 86400, $w->{id}, $id, 'w')];
    is($got->[0], 3, 'applied');
    is($r->hget($lkey, 'provisioningStatus'), 'provisioning', 'promoted');
    ok($r->hexists($lkey, 'sweepPending'), 'marked');
    is(scalar(() = queued($id)), 0, 'nothing queued yet');

    my $ev = $s->stub(POST => '/_stub/webhook', {
        url => $s->url('/webhooks/stripe'), type => 'invoice.paid',
        object_id => $old, event_id => $evt})->res->json // {};
    is($ev->{status}, 200, 'the redelivery answered 200');
    ok(eventually(sub { queued($id) }, 5), 'queued then');
    ok(eventually(sub { !$r->hexists($lkey, 'sweepPending') }, 5),
       'the mark cleared');
};

# A request made before requests kept their customer (no `customer` in
# its hash) ended while a lapsed claim of it was in its hash: marked
# sweepPending. payment_link billed it (and sweeps) under the workspace's
# customer (lr_manage), where a run must look too. A GET reads the
# request alone: before 2026-11-29 it queued it under no customer, which
# a run leaves to a human (no_customer) without looking, the claim's
# invoices left payable. Now the workspace's is read after the GET's
# answer (it waits for no extra round trip), then the request queued.
subtest 'a GET of a request keeping no customer: the workspace\'s' => sub {
    my $w = ws();
    my ($id, $c) = $l->awaiting($w);
    $l->answer($l->manage($w, $id, 'cancel'), 200, 'canceled');
    my $lkey = "lg:{ws:$w->{id}}:lr:$id";
    ok($r->hexists($lkey, 'customer'), 'made keeping its customer');
    $r->hdel($lkey, 'customer');
    my $from = int(time * 1000) - 120_000;
    $r->hset($lkey, sweepPending => $from);
    is(scalar(() = queued($id)), 0, 'nothing queued yet');

    is($l->answer($l->get($w, $id), 200, 'a GET')->{status}, 'canceled',
       'the GET answers the request');
    ok(eventually(sub { queued($id) }, 5), 'queued then');
    my @e = queued($id);
    is(scalar @e, 1, 'once');
    is($e[0]{reason}, 'reissue_lapsed', 'reissue_lapsed');
    is($e[0]{at}, iso_ms($from), 'from the mark');
    is($e[0]{customer}, $w->{customer},
       'under the workspace\'s customer, where the run looks');
    ok(eventually(sub { !$r->hexists($lkey, 'sweepPending') }, 5),
       'the mark cleared');
};

# A claim outlives its hold (Stripe slow: the hold is 60 s) and a second
# payment_link claims the reissue (invoiceSeq 2, its own reissueAt): the
# first one's store is refused, it voids its own invoice and answers as a
# parallel caller is answered (409 "being issued", Retry-After), and
# leaves the second claim alone: its reissueAt (a late void of the old
# invoice must not cancel the request: wh_invoice refuses it while that
# claim holds), the old invoice's index untouched, nothing queued for
# reconciliation.
subtest 'payment_link: a claim taken over, its store refused' => sub {
    my $w = ws();
    my ($id, $c) = $l->awaiting($w);
    my $old = $c->{invoiceId};
    $l->invoice_do($old, 'void');
    my $lkey = "lg:{ws:$w->{id}}:lr:$id";
    my $before = $r->xlen('lg:{fleet}:reconcile') // 0;
    my $logoff = length $s->error_log;

    # the item step slow: meanwhile the second claim, as lr_reissue_claim
    # makes it once the first one's hold is over
    $l->fault(path_prefix => '/v1/invoiceitems', latency_ms => 1500);
    my ($claimed, $at) = (0, 0);
    my ($tx) = $l->during([$w, POST => "/api/line-requests/$id",
                           {action => 'payment_link'}], sub {
        return 0 unless ($l->lr($w, $id)->{invoiceSeq} // 0) == 1;
        $r->hincrby($lkey, 'invoiceSeq', 1);
        my ($sec, $usec) = $r->time;
        $at = int($sec * 1000 + $usec / 1000);
        $r->hset($lkey, reissueAt => $at);
        $claimed = 1;
        return 1;
    }, 5);
    $l->clear_faults;
    ok($claimed, 'a second claim taken meanwhile') or return;

    my $b = conflict($tx, 'awaiting_payment', 'the first one');
    like($b->{message} // '', qr/being issued/, 'told it is being issued');
    is($tx->res->headers->header('Retry-After'), 1, 'Retry-After: 1');

    # what the first one's pool cleanup used to undo: give it time
    sleep 1;
    my $h = $l->lr($w, $id);
    is($h->{reissueAt} // 'gone', $at, 'the second claim is left alone');
    is($h->{invoiceSeq}, 2, 'its invoiceSeq');
    is($h->{invoiceId}, $old, 'the old invoice still named');
    is($r->get("lg:invoice:$old"), "$w->{id}:$id",
       'the old index untouched');
    my @new = grep { $_->{id} ne $old } $l->invoices($w->{customer});
    is(scalar @new, 1, 'the first one made an invoice');
    is($new[0]{status} // '', 'void', 'and voided it');
    ok(!$r->exists('lg:invoice:' . ($new[0]{id} // '')), 'not indexed');
    is(($r->xlen('lg:{fleet}:reconcile') // 0) - $before, 0,
       'nothing queued for reconciliation');
    my $log = substr $s->error_log, $logoff;
    unlike($log, qr/ended while its invoice was reissued/,
           'the first one\'s cleanup has nothing to do');

    # a late void of the old invoice (the second claim voiding an
    # uncollectible one): its index kept, it reaches wh_invoice, which
    # refuses it while the second claim holds (Stripe delivers it again);
    # the request still awaits payment
    my $ev = $s->stub(POST => '/_stub/webhook', {
        url => $s->url('/webhooks/stripe'), type => 'invoice.voided',
        object_id => $old})->res->json // {};
    is($ev->{status}, 409, 'the old invoice\'s void refused for now');
    is(($ev->{json} // {})->{code} // '', 'REISSUE_PENDING',
       'the reissue named');
    $h = $l->lr($w, $id);
    is("$h->{provisioningStatus}/$h->{paymentStatus}",
       'awaiting_payment/unpaid', 'the request still awaits payment');

    # the second claim holds: a payment_link waits for it
    $tx = $l->manage($w, $id, 'payment_link');
    conflict($tx, 'awaiting_payment', 'while the second claim holds');
    is($tx->res->headers->header('Retry-After'), 1, 'Retry-After: 1');
};

# The claim is still its own, but its new invoice was fenced meanwhile
# (voidingInvoice: a reconciliation run, or a sweeper this claim took
# over from, found it unstored and is voiding it): lr_reissue_store
# refuses it (LR_FENCED). The worker voids its own invoice and releases
# its claim lapsed (reissueAt 0), so that the retry the 409 asks for
# sweeps at once. Before, it was taken for a claim taken over: the claim
# was never released, and every payment_link got 409 for the hold.
subtest 'payment_link: its store refused by a fence: released lapsed'
    => sub {
    my $w = ws();
    my ($id, $c) = $l->awaiting($w);
    my $old = $c->{invoiceId};
    $l->invoice_do($old, 'void');
    my $lkey = "lg:{ws:$w->{id}}:lr:$id";

    # the item step slow: meanwhile the new draft is marked, as
    # lr_void_fence marks it
    $l->fault(path_prefix => '/v1/invoiceitems', latency_ms => 1500);
    my ($made, $claimed) = ('', 0);
    my ($tx) = $l->during([$w, POST => "/api/line-requests/$id",
                           {action => 'payment_link'}], sub {
        my $now = $l->lr($w, $id);
        return 0 unless ($now->{invoiceSeq} // 0) == 1;
        $claimed = $now->{reissueAt};
        my ($new) = grep { $_->{id} ne $old } $l->invoices($w->{customer});
        return 0 unless $new;
        $made = $new->{id};
        $r->hset($lkey, voidingInvoice => $made);
        return 1;
    }, 5);
    $l->clear_faults;
    ok($made, 'its new invoice fenced meanwhile') or return;

    my $b = conflict($tx, 'awaiting_payment', 'the payment_link');
    is($tx->res->headers->header('Retry-After'), 1, 'Retry-After: 1');
    my $h;
    ok(eventually(sub { $h = $l->lr($w, $id);
                        defined $h->{reissueAt} && $h->{reissueAt} == 0 },
                  5), 'its claim released lapsed (reissueAt 0)')
        or diag explain $h;
    is($h->{invoiceSeq}, 1, 'no other claim');
    ok($claimed, 'the claim\'s time seen');
    is($h->{sweepFrom}, $claimed,
       'the next sweep starts at its time (it took over nothing)');
    is($h->{invoiceId}, $old, 'the old invoice still named');
    is($l->invoice($made)->{status} // '', 'void', 'its invoice voided');
    ok(!$r->exists("lg:invoice:$made"), 'not indexed');
    my $want = qq{the store of invoice "$made" of line request "$id" }
               . 'was refused: the invoice is being voided';
    like($s->error_log, qr/\Q$want\E/, 'logged as fenced');

    my $n = link_is($l->manage($w, $id, 'payment_link'), 0, 'retried');
    ok($n->{invoiceId} ne $made && $n->{invoiceId} ne $old,
       'a new invoice');
    my @open = map { $_->{id} } grep { $_->{status} eq 'open' }
               $l->invoices($w->{customer});
    is_deeply(\@open, [$n->{invoiceId}], 'the only open invoice');
};

# The same refusal met by the store sent again: the first store's reply
# is lost (held by Redis past linegate_redis_command_timeout: LG::Lines,
# hold_after_index), so the step goes to the durable writes
# (LINK_STORE_AGAIN), and the request answers 503. The fence was written
# after nginx decided the store, before Redis ran it: the store sent
# again is refused (LR_FENCED) with the claim still this one's. Its
# invoice is queued (invoice_unrepaired) and its claim released lapsed
# (reissueAt 0), as after the first store's refusal, so that the next
# payment_link sweeps at once. It was left to lapse: every payment_link
# got 409 "being issued" for the 60 s hold.
subtest 'payment_link: its store sent again refused by a fence' => sub {
    my $w = ws();
    my ($id, $c) = $l->awaiting($w);
    my $old = $c->{invoiceId};
    $l->invoice_do($old, 'void');
    my $before = $r->xlen('lg:{fleet}:reconcile') // 0;

    # the new draft fenced, then its store held
    my $g = $l->link_store_sent_again($w, $id, $old, fence => 1);
    my ($tx, $made, $claimed) = @$g{qw(tx made claimed)};
    ok($made && $g->{held}, 'its new invoice fenced, its store held')
        or return;

    $l->error_is($tx, 503, 'STORE_UNAVAILABLE', 'the store\'s reply lost');
    like($g->{log},
         qr/lr_reissue_store of line request "\Q$id\E" not answered yet/,
         'sent again (LINK_STORE_AGAIN)');
    my $want = qq{the store of invoice "$made" sent again was refused: }
               . qq{line request "$id" is voiding it};
    ok(eventually(sub { $s->error_log =~ /\Q$want\E/ }, 10),
       'refused by the fence once sent again');
    my $h;
    ok(eventually(sub { $h = $l->lr($w, $id);
                        defined $h->{reissueAt} && $h->{reissueAt} == 0 },
                  5), 'its claim released lapsed (reissueAt 0)')
        or diag explain $h;
    is($h->{invoiceSeq}, 1, 'no other claim');
    is($h->{sweepFrom}, $claimed, 'the next sweep starts at its time');
    is($h->{invoiceId}, $old, 'the old invoice still named');
    ok(eventually(sub { !$r->exists("lg:invoice:$made") }, 5),
       'its index gone');
    # its own slot (on a cluster another node than the claim's release)
    my $queued = 0;
    eventually(sub {
        $queued = ($r->xlen('lg:{fleet}:reconcile') // 0) - $before;
        $queued >= 1 }, 5);
    is($queued, 1, 'queued for reconciliation (invoice_unrepaired)');

    # the retry the 503 asks for: no hold to wait out, the sweep voids
    # what the fenced claim left and issues anew
    my $n = link_is($l->manage($w, $id, 'payment_link'), 0, 'retried');
    ok($n->{invoiceId} ne $made && $n->{invoiceId} ne $old,
       'a new invoice');
    is($l->invoice($made)->{status} // '', 'void', 'the fenced one voided');
    my @open = map { $_->{id} } grep { $_->{status} eq 'open' }
               $l->invoices($w->{customer});
    is_deeply(\@open, [$n->{invoiceId}], 'the only open invoice');
};

# The store's reply lost the same way, with no fence: Redis runs the
# store, then the one sent again (a durable write) and the request's own
# copy of it, which find the invoice stored (LR_OK). The payment_link
# answers as after a first store: 200 with the new link, reused false
# (the 2.5 body for provisioning when Stripe paid the new invoice at
# finalization: promoted then and there). It answered 503, whose retry
# then found the link (reused true), or the request left awaiting
# payment on its paid invoice until a GET or its webhook settled it.
for my $paid (0, 1) {
    my $how = $paid ? 'paid at finalize' : 'its link';
    subtest "payment_link: its store sent again answered stored: $how"
        => sub {
        my $w = ws();
        my ($id, $c) = $l->awaiting($w);
        my $old = $c->{invoiceId};
        $l->invoice_do($old, 'void');
        my $price = sub {
            $s->stub(POST => '/_stub/prices',
                     {id => 'price_email_addon', unit_amount => shift});
        };
        $price->(0) if $paid;
        my $before = $r->xlen('lg:{fleet}:reconcile') // 0;

        my $g = $l->link_store_sent_again($w, $id, $old, answered => 1);
        $price->(1500) if $paid;
        my $made = $g->{made};
        ok($made && $g->{held}, 'its store held past the command timeout')
            or return;
        like($g->{log}, qr/durable write "lr_reissue_store \Q$id\E" done/,
             'the store was sent again');

        my $h = $l->lr($w, $id);
        is($h->{invoiceId}, $made, 'the request names the new invoice');
        ok(!exists $h->{reissueAt}, 'its claim gone with the store');
        is($r->get("lg:invoice:$made"), "$w->{id}:$id", 'indexed');
        ok(eventually(sub { !$r->exists("lg:invoice:$old") }, 5),
           'the old index gone');
        if ($paid) {
            my $b = $l->answer($g->{tx}, 200, 'the payment_link');
            is($b->{status}, 'provisioning', 'the 2.5 body, provisioning');
            is($b->{paymentStatus}, 'paid', 'paid');
            is($b->{line}{_id}, $id, 'with its line');
            is("$h->{provisioningStatus}/$h->{paymentStatus}",
               'provisioning/paid', 'stored provisioning/paid');
            ok(!defined $l->pending($w), 'the workspace is free');
        } else {
            my $b = link_is($g->{tx}, 0, 'the payment_link');
            is($b->{invoiceId}, $made, 'the new invoice');
            is($b->{paymentUrl}, $h->{paymentUrl}, 'its link, stored');
            is($l->invoice($made)->{status} // '', 'open', 'open at Stripe');
            my $again = link_is($l->manage($w, $id, 'payment_link'), 1,
                                'a retry');
            is($again->{paymentUrl}, $h->{paymentUrl}, 'the same link');
        }
        is(scalar(grep { $_->{id} ne $old } $l->invoices($w->{customer})),
           1, 'one new invoice');
        is(($r->xlen('lg:{fleet}:reconcile') // 0) - $before, 0,
           'nothing queued for reconciliation');
    };
}

# A claim taken over, at the scripts' level (and lr_reissue_store sent
# again after its reply was lost, refused then: nginx unindexes and
# queues the new invoice; a request test above holds a store for the
# fence's refusal): a claim is its own while invoiceSeq is.
subtest 'lr_reissue_store, lr_reissue_abort: a claim taken over' => sub {
    my $store = lua_script('lr_reissue_store');
    my $abort = lua_script('lr_reissue_abort');
    my $k = 'lg:{ws:org_take}:lr:0123456789abcdef01234567';
    my @who = ('org_take', '0123456789abcdef01234567');
    $r->del($k);
    $r->hset($k, provisioningStatus => 'awaiting_payment',
             invoiceId => 'in_old', invoiceSeq => 2, reissueAt => 7);

    is_deeply([$r->eval($store, 1, $k, @who, 1, 'in_new1', 'u', 1, 'd',
                       'cus_x')], [13], 'store of claim 1: LR_BUSY');
    is_deeply([$r->eval($abort, 1, $k, @who, 1, 'cus_x', '', 'in_new1')],
              [0, 0],
              'abort of claim 1: not its own');
    is($r->hget($k, 'reissueAt'), 7, 'the claim of 2 left alone');
    is_deeply([$r->eval($abort, 1, $k, @who, 2, 'cus_x', '')], [1, 0],
              'abort of claim 2: its own');
    ok(!$r->hexists($k, 'reissueAt'), 'released');
    is_deeply([$r->eval($abort, 1, $k, @who, 2, 'cus_x', '')], [1, 0],
              'the same abort again: the same answer');

    $r->hset($k, reissueAt => 8);
    is_deeply([$r->eval($store, 1, $k, @who, 2, 'in_new2', 'u', 1, 'd',
                       'cus_x')], [1], 'store of claim 2: LR_OK');
    is_deeply([$r->eval($abort, 1, $k, @who, 2, 'cus_x', '', 'in_new2')],
              [1, 1], 'an abort after it: stored');
    # released lapsed (ARGV[5] '1') after its store: the store released
    # the claim, nothing is left to look for. It wrote reissueAt 0, a
    # lapsed claim made up on a request that names its new invoice:
    # wh_invoice then refused that invoice's void (409) and the next
    # payment_link or cancel swept the customer's invoices for nothing
    is_deeply([$r->eval($abort, 1, $k, @who, 2, 'cus_x', '1', 'in_new2')],
              [1, 1], 'a lapsed release after it: stored');
    ok(!$r->hexists($k, 'reissueAt'), 'no lapsed claim made up');
    $r->hset($k, provisioningStatus => 'canceled');
    is_deeply([$r->eval($store, 1, $k, @who, 2, 'in_new3', 'u', 1, 'd',
                       'cus_x')], [12, 'canceled'],
              'moved on: LR_WRONG_STATE');
    $r->del($k);
};

# A claim that lapsed (its worker died before its store): the next claim
# is told so, and looks for what it left at Stripe; released before it
# looked, it leaves the claim lapsed (reissueAt 0), not gone. Each
# invoice it then discards is fenced first (lr_void_fence): a store of it
# by a claim that took this one over meanwhile is refused, unless paid
# (a paid invoice is never voided).
subtest 'lr_reissue_claim, lr_void_fence: a lapsed claim' => sub {
    my $claim = lua_script('lr_reissue_claim');
    my $store = lua_script('lr_reissue_store');
    my $abort = lua_script('lr_reissue_abort');
    my $fence = lua_script('lr_void_fence');
    my $k = 'lg:{ws:org_lapse}:lr:0123456789abcdef01234568';
    my @who = ('org_lapse', '0123456789abcdef01234568');
    $r->del($k);
    $r->hset($k, provisioningStatus => 'awaiting_payment',
             invoiceId => 'in_old');

    is_deeply([$r->eval($claim, 1, $k, @who, 'in_old', 100000, 60000, 'c1')],
              [1, 1, 0, 0, 0], 'a first claim: none lapsed');
    is_deeply([$r->eval($claim, 1, $k, @who, 'in_old', 159999, 60000, 'c2')],
              [13], 'held: LR_BUSY');
    is_deeply([$r->eval($claim, 1, $k, @who, 'in_old', 160000, 60000, 'c2')],
              [1, 2, 1, 100000, 100000],
              'past its hold: taken over, lapsed, from its claim');
    is_deeply([$r->eval($abort, 1, $k, @who, 2, 'cus_x', '1')], [1, 0],
              'released before it looked');
    is($r->hget($k, 'reissueAt'), 0, 'lapsed, not gone');
    is($r->hget($k, 'sweepFrom'), 100000, 'sweepFrom kept: the first claim');
    # the sweep's window ends after the latest claim not swept: its own
    is($r->hget($k, 'sweepTo'), 160000, 'sweepTo: the latest claim');
    is_deeply([$r->eval($claim, 1, $k, @who, 'in_old', 160001, 60000, 'c3')],
              [1, 3, 1, 100000, 160000],
              'the next claim at once, told it lapsed, from the first');
    is($r->eval($fence, 1, $k, @who, 'in_left', '', 2), 3,
       'a sweeper taken over (invoiceSeq 2): refused');
    ok(!$r->hexists($k, 'voidingInvoice'), 'nothing marked');

    is($r->eval($fence, 1, $k, @who, 'in_left', '', 3), 1,
       'fenced: discard it');
    is($r->hget($k, 'voidingInvoice'), 'in_left', 'marked');
    is_deeply([$r->eval($store, 1, $k, @who, 3, 'in_left', 'u', 1, 'd',
                       'cus_x', 'in_old', 'open')], [15],
              'its store refused: LR_FENCED');
    is($r->hget($k, 'invoiceId'), 'in_old', 'not named');
    is_deeply([$r->eval($store, 1, $k, @who, 3, 'in_left', 'u', 1, 'd',
                       'cus_x', 'in_old', 'paid')], [1],
              'paid: stored (never voided)');
    ok(!$r->hexists($k, 'voidingInvoice'), 'stored: the marks gone');
    ok(!$r->hexists($k, 'sweepFrom') && !$r->hexists($k, 'sweepTo'),
       'and the sweep\'s window');
    is($r->eval($fence, 1, $k, @who, 'in_left'), 0,
       'named: kept, not fenced again');
    $r->del($k);
};

# A claim whose caller does not know whether Redis took it (its reply
# lost, or no replica acknowledged it) is released by its name
# (reissueBy), lapsed: it may have taken over a lapsed claim whose
# invoices the next claim must still look for. Another caller's claim
# is never released so.
subtest 'lr_reissue_claim, lr_reissue_abort: a claim released by its name'
    => sub {
    my $claim = lua_script('lr_reissue_claim');
    my $abort = lua_script('lr_reissue_abort');
    my $k = 'lg:{ws:org_unclaim}:lr:0123456789abcdef01234569';
    my @who = ('org_unclaim', '0123456789abcdef01234569');
    $r->del($k);
    $r->hset($k, provisioningStatus => 'awaiting_payment',
             invoiceId => 'in_old');

    is_deeply([$r->eval($claim, 1, $k, @who, 'in_old', 100000, 60000, 'a')],
              [1, 1, 0, 0, 0], 'claimed by a');
    is($r->hget($k, 'reissueBy'), 'a', 'its name kept');
    is_deeply([$r->eval($abort, 1, $k, @who, '', 'cus_x', '1', '', 'b')],
              [0, 0], 'released by the name b: not its own');
    is($r->hget($k, 'reissueAt'), 100000, 'held still');
    is_deeply([$r->eval($abort, 1, $k, @who, '', 'cus_x', '1', '', 'a')],
              [1, 0], 'released by the name a: its own');
    is($r->hget($k, 'reissueAt'), 0, 'lapsed, not gone');
    is($r->hget($k, 'sweepFrom'), 100000, 'the next sweep from its claim');
    ok(!$r->hexists($k, 'reissueBy'), 'the name gone');
    is_deeply([$r->eval($abort, 1, $k, @who, '', 'cus_x', '1', '', 'a')],
              [0, 0], 'the same release again: nothing to release');
    is_deeply([$r->eval($claim, 1, $k, @who, 'in_old', 100001, 60000, 'c')],
              [1, 2, 1, 100000, 100000],
              'the next claim at once, told it lapsed');
    is_deeply([$r->eval($abort, 1, $k, @who, '', 'cus_x', '1', '', 'a')],
              [0, 0], 'a late release by the name a: not its own');
    is($r->hget($k, 'reissueAt'), 100001, 'the claim of c left alone');
    $r->del($k);
};

# The claim's reply lost (Redis paused past the command timeout while it
# waits): 503, nothing issued, and the claim Redis took once it ran is
# released by its name right after it, so that the retry gets its link at
# once instead of 409 "being issued" until the claim's 60 s hold lapsed.
subtest 'payment_link: a claim whose reply was lost is released' => sub {
    my $w = ws();
    my ($id, $c) = $l->awaiting($w);
    my $old = $c->{invoiceId};
    $l->invoice_do($old, 'void');
    my $lkey = "lg:{ws:$w->{id}}:lr:$id";
    my $from = length $s->error_log;

    # the claim comes once the check's Stripe call answers (held 1 s):
    # writes are paused before that, and lifted once the claim timed out
    # (500 ms: the 503), not at a fixed time a loaded box could miss
    # either way (the claim sent after the pause ended, or a keepalive
    # PING behind the held claim unanswered for a whole interval, 1 s,
    # which drops the connection and the claim with it: it never ran)
    $l->fault(method => 'GET', path_prefix => "/v1/invoices/$old",
              latency_ms => 1000);
    my ($tx, $paused) = $l->during([$w, POST => "/api/line-requests/$id",
                                    {action => 'payment_link'}], sub {
        return 0 unless $s->stub_held(qr{^/v1/invoices/\Q$old\E$});
        $l->pause_writes(10000);
        return 1;
    }, 10);
    $l->release_writes;
    $l->clear_faults;
    ok($paused, 'writes paused while the check waited') or return;
    is($tx->res->code, 503, 'the claim not answered: 503')
        or diag($tx->res->body);
    is(scalar $l->invoices($w->{customer}), 1, 'nothing issued');

    my $said = qq{reissue claim of line request "$id" whose reply was not }
               . 'known is released lapsed';
    ok(eventually(sub { index($s->error_log, $said, $from) >= 0 }, 10),
       'the claim Redis took released by its name')
        or diag(substr($s->error_log, $from));
    is($r->hget($lkey, 'reissueAt'), '0', 'lapsed: the next claim looks');
    link_is($l->manage($w, $id, 'payment_link'), 0,
            'asked again: a new link at once');
    isnt($l->lr($w, $id)->{invoiceId}, $old, 'the request names a new one');
};

subtest 'payment_link: subscription required, read-only' => sub {
    my $w = ws();
    my ($id) = $l->awaiting($w);

    $l->set_workspace($w, subscriptionStatus => 'canceled');
    my $b = $l->answer($l->manage($w, $id, 'payment_link'), 403,
                       'canceled subscription');
    is_deeply([@$b{qw(success status redirect)}],
              [Mojo::JSON->false, 'subscription_required', '/billing'],
              'subscription_required');

    $l->set_workspace($w, subscriptionStatus => 'past_due');
    $b = $l->answer($l->manage($w, $id, 'payment_link'), 402, 'past_due');
    is_deeply($b, {error => 'READ_ONLY', code => 'READ_ONLY',
                   reason => 'past_due'}, 'READ_ONLY');
    $b = $l->answer($l->manage($w, $id, 'cancel'), 402, 'cancel past_due');
    $l->set_workspace($w, subscriptionStatus => 'unpaid');
    $b = $l->answer($l->manage($w, $id, 'cancel'), 402, 'cancel unpaid');
    is($b->{reason}, 'unpaid', 'reason unpaid');
    $l->answer($l->get($w, $id), 200, 'reads still work');
    is($l->lr($w, $id)->{provisioningStatus}, 'awaiting_payment',
       'nothing changed');

    $l->set_workspace($w, subscriptionStatus => 'canceled');
    $b = $l->answer($l->manage($w, $id, 'cancel'), 200,
                    'cancel without a subscription is allowed');
    is($b->{status}, 'canceled', 'canceled');
};

subtest 'cancel: the invoice is voided first' => sub {
    my $w = ws();
    my ($id, $c) = $l->awaiting($w);
    my $b = $l->answer($l->manage($w, $id, 'cancel'), 200, 'cancel');
    is_deeply($b, {success => Mojo::JSON->true, status => 'canceled',
                   line => {_id => $id, provisioningStatus => 'canceled',
                            paymentStatus => 'failed'}}, 'body');
    is($l->invoice($c->{invoiceId})->{status}, 'void', 'void at Stripe');
    my ($void) = $l->stripe_log(qr{^/v1/invoices/\Q$c->{invoiceId}\E/void$});
    is($void->{idempotency_key}, "lg-$id-$c->{invoiceId}-void",
       "with its key (the invoice's)");
    my $h = $l->lr($w, $id);
    is($h->{provisioningStatus}, 'canceled', 'stored canceled');
    is($h->{paymentStatus}, 'failed', 'paymentStatus failed');
    ok(!defined $l->pending($w), 'the workspace is free');
    $l->answer($l->create($w, body(channelType => 'email',
                                   email => 'n@example.com')), 201,
               'a new request');

    conflict($l->manage($w, $id, 'cancel'), 'canceled', 'cancel again');
    conflict($l->manage($w, $id, 'payment_link'), 'canceled',
             'payment_link on canceled');
    my $g = $l->answer($l->get($w, $id), 200, 'GET');
    is($g->{status}, 'canceled', 'GET says canceled');
    my $list = $l->answer($l->list($w), 200, 'by-user');
    ok(!grep({ $_->{_id} eq $id } @{ $list->{lines} }), 'not listed');
};

subtest 'cancel: paid meanwhile -> 409 provisioning' => sub {
    my $w = ws();
    my ($id, $c) = $l->awaiting($w);
    $l->invoice_do($c->{invoiceId}, 'pay');
    my $b = conflict($l->manage($w, $id, 'cancel'), 'provisioning',
                     'paid before the cancel');
    is($l->lr($w, $id)->{paymentStatus}, 'paid', 'promoted, paid');
    is($l->invoice($c->{invoiceId})->{status}, 'paid', 'still paid');
    ok(eventually(sub { grep { $_->{id} eq $id } $l->stream }, 5),
       'in the provisioning stream');
};

subtest 'cancel: voided elsewhere already' => sub {
    my $w = ws();
    my ($id, $c) = $l->awaiting($w);
    $l->invoice_do($c->{invoiceId}, 'void');
    my $b = $l->answer($l->manage($w, $id, 'cancel'), 200, 'void already');
    is($b->{status}, 'canceled', 'canceled');
};

# A payment_link stored a new invoice while the cancel's void of the old
# one was in flight: the cancel changed nothing (the request names another
# invoice), and the request still awaits payment. It is answered as a
# request whose invoice is being issued (409, Retry-After: 1), whose retry
# voids the new invoice. Before, it was the 409 of a request in another
# state ("applies only to a request awaiting payment"), with the status
# awaiting_payment and no Retry-After.
subtest 'cancel: the invoice reissued while its void was in flight' => sub {
    my $w = ws();
    my ($id, $c) = $l->awaiting($w);
    my $lkey = "lg:{ws:$w->{id}}:lr:$id";
    $l->fault(path_prefix => "/v1/invoices/$c->{invoiceId}/void",
              latency_ms => 1500);
    my $moved = 0;
    my ($tx) = $l->during([$w, POST => "/api/line-requests/$id",
                           {action => 'cancel'}], sub {
        return 0 unless $s->stub_held(qr{/void$});
        $r->hset($lkey, invoiceId => 'in_reissued');
        return $moved = 1;
    }, 5);
    $l->clear_faults;
    ok($moved, 'reissued while the void was in flight') or return;
    my $b = conflict($tx, 'awaiting_payment', 'the cancel');
    like($b->{message}, qr/being issued/, 'as a request being issued');
    is($tx->res->headers->header('Retry-After'), '1', 'Retry-After: 1');
    my $h = $l->lr($w, $id);
    is("$h->{provisioningStatus}/$h->{invoiceId}",
       'awaiting_payment/in_reissued', 'the request left as it is');
};

# A reservation whose creation never stored its invoice (its worker died
# between lr_create and the store) stays so until a reconciliation run
# (linegate_reconcile_lost_after, 10 min here) or the workspace's next
# creation settles it: a payment_link or cancel meanwhile is 409 "being
# issued". Retry-After is 1 while a live creation may still store it (the
# reservation younger than one linegate_stripe_timeout, 30 s here), then
# the seconds until it may be settled, then 60 (a run's). Before, it was
# Retry-After: 1 throughout: a client polled every second for 10 minutes.
subtest 'a reservation left by a dead worker: an honest Retry-After' => sub {
    my $w = ws();
    my ($id) = $l->awaiting($w);
    my $lkey = "lg:{ws:$w->{id}}:lr:$id";
    $r->hdel($lkey, 'invoiceId', 'paymentUrl');
    my $now = int(time * 1000);
    for my $case ([0, 1, 1, 'a live creation\'s'],
                  [60_000, 538, 541, '60 s old'],
                  [700_000, 60, 60, 'past lost_after'])
    {
        my ($age, $lo, $hi, $name) = @$case;
        $r->hset($lkey, reservedAt => $now - $age);
        for my $action (qw(payment_link cancel)) {
            my $tx = $l->manage($w, $id, $action);
            my $b = conflict($tx, 'awaiting_payment', "$name, $action");
            like($b->{message}, qr/being issued/, "$name, $action: busy");
            my $ra = $tx->res->headers->header('Retry-After') // '';
            ok($ra =~ /^\d+$/ && $ra >= $lo && $ra <= $hi,
               "$name, $action: Retry-After $ra in [$lo, $hi]");
        }
    }
    my $h = $l->lr($w, $id);
    ok(!exists $h->{invoiceId} && $h->{provisioningStatus}
       eq 'awaiting_payment', 'the request left as it is');
};

# A reissue claim whose worker died (killed after its finalize) holds
# for 60 s, after which the next payment_link takes it over: a
# payment_link or cancel meanwhile is 409 "being issued". Retry-After is
# 1 while a live reissue may still store its invoice (the claim younger
# than one linegate_stripe_timeout, 30 s here, the default), then the
# seconds left on the claim, as for a dead worker's reservation (above).
# Before, it was Retry-After: 1 throughout: a client polled every second
# for a minute.
subtest 'a reissue claim left by a dead worker: an honest Retry-After'
    => sub {
    my $w = ws();
    my ($id, $old, $orphan) = killed_after_finalize($w) or return;
    my $lkey = "lg:{ws:$w->{id}}:lr:$id";
    my $seq = $r->hget($lkey, 'invoiceSeq');
    # the claim aged in Redis rather than waited for
    for my $case ([0, 'a live reissue\'s'], [40_000, '40 s old'],
                  [58_500, 'about to lapse'])
    {
        my ($age, $name) = @$case;
        my $at = int(time * 1000) - $age;
        $r->hset($lkey, reissueAt => $at);
        for my $action (qw(payment_link cancel)) {
            my $before = time;
            my $tx = $l->manage($w, $id, $action);
            my $after = time;
            my $b = conflict($tx, 'awaiting_payment', "$name, $action");
            like($b->{message}, qr/being issued/, "$name, $action: busy");
            my ($lo, $hi) = $age < 30_000 ? (1, 1)
                : (int(($at + 60_000) / 1000 - $after),
                   int(($at + 60_000) / 1000 - $before) + 1);
            $lo = 1 if $lo < 1;
            my $ra = $tx->res->headers->header('Retry-After') // '';
            ok($ra =~ /^\d+$/ && $ra >= $lo && $ra <= $hi,
               "$name, $action: Retry-After $ra in [$lo, $hi]");
        }
    }
    my $h = $l->lr($w, $id);
    is("$h->{provisioningStatus}/$h->{invoiceId}/$h->{invoiceSeq}",
       "awaiting_payment/$old/$seq", 'the request left as it is');

    # once the hold is over, the next payment_link takes the claim over
    lapse($w, $id);
    my $b = link_is($l->manage($w, $id, 'payment_link'), 0,
                    'the payment_link after the hold');
    isnt($b->{invoiceId}, $orphan, 'a new invoice');
    is($l->invoice($orphan)->{status}, 'void',
       'the dead worker\'s invoice voided by the sweep');
};

# A cancel of a request whose reissue claim lapsed (its worker killed
# after its finalize, before its store) looks for what the claim left at
# Stripe before it cancels, as the next payment_link would (the sweep):
# an invoice Stripe paid at its finalize (a credit balance) is a payment
# of the request, which is then promoted, never canceled: 409
# provisioning, as for an invoice paid before the cancel. Before, the
# cancel canceled the request and the reconciliation run left the
# payment for a human: a customer who had paid got neither the line nor
# the money back.
subtest 'cancel: a lapsed reissue left an invoice paid at its finalize'
    => sub {
    my $w = ws();
    my ($id, $old, $paid) = killed_after_finalize($w, 1) or return;
    lapse($w, $id);
    my $b = conflict($l->manage($w, $id, 'cancel'), 'provisioning',
                     'the cancel');
    like($b->{message}, qr/paid/, 'the invoice was paid');
    my $h = $l->lr($w, $id);
    is("$h->{provisioningStatus}/$h->{paymentStatus}/$h->{invoiceId}",
       "provisioning/paid/$paid", 'promoted, naming the paid invoice');
    ok(!exists $h->{reissueAt}, 'the claim gone');
    is($l->invoice($paid)->{status}, 'paid', 'still paid at Stripe');
    is($r->get("lg:invoice:$paid"), "$w->{id}:$id", 'its webhook index');
    ok(!defined $l->pending($w), 'the workspace is free');
    ok(eventually(sub { grep { $_->{id} eq $id } $l->stream }, 5),
       'in the provisioning stream');
    sleep 0.3;
    is(scalar(queued($id)), 0, 'nothing queued for reconciliation');
    conflict($l->manage($w, $id, 'cancel'), 'provisioning', 'cancel again');
};

# The same with the invoice it left open (no credit): the cancel voids it
# as the sweep does (no payable invoice of a canceled request is left at
# Stripe), then voids the one the request names and cancels: 200, and
# nothing is left for a reconciliation run. Before, it was queued
# (reissue_lapsed) and stayed payable at Stripe until a run voided it.
subtest 'cancel: a lapsed reissue left an open invoice: voided first'
    => sub {
    my $w = ws();
    my ($id, $old, $orphan) = killed_after_finalize($w) or return;
    lapse($w, $id);
    my $b = $l->answer($l->manage($w, $id, 'cancel'), 200, 'the cancel');
    is($b->{status}, 'canceled', 'canceled');
    is($l->invoice($orphan)->{status}, 'void', 'the orphan voided');
    is($l->invoice($old)->{status}, 'void', 'the old invoice void');
    my $h = $l->lr($w, $id);
    is("$h->{provisioningStatus}/$h->{invoiceId}", "canceled/$old",
       'canceled, naming its invoice');
    ok(!exists $h->{reissueAt} && !exists $h->{sweepPending},
       'no claim, nothing to sweep');
    ok(eventually(sub { !$r->exists("lg:invoice:$orphan") }, 5),
       'the orphan\'s index gone');
    sleep 0.3;
    is(scalar(queued($id)), 0, 'nothing queued for reconciliation');
};

# The lookup of what the lapsed claim left fails (Stripe down): 502,
# nothing changed but the cancel's own claim, released lapsed (reissueAt
# 0: the next caller looks again at once); the retry sweeps and cancels.
subtest 'cancel: the lookup of a lapsed reissue\'s invoices fails' => sub {
    my $w = ws();
    my ($id, $old, $orphan) = killed_after_finalize($w) or return;
    lapse($w, $id);

    lookup_fails();
    $l->error_is($l->manage($w, $id, 'cancel'), 502,
                 'BILLING_UNAVAILABLE', 'the lookup failed');
    $l->clear_faults;
    my $h = $l->lr($w, $id);
    is("$h->{provisioningStatus}/$h->{invoiceId}", "awaiting_payment/$old",
       'still awaiting payment, naming its invoice');
    is($h->{reissueAt}, 0, 'the claim released, lapsed');
    is($l->invoice($orphan)->{status}, 'open', 'the orphan still open');

    my $b = $l->answer($l->manage($w, $id, 'cancel'), 200, 'retried');
    is($b->{status}, 'canceled', 'canceled');
    is($l->invoice($orphan)->{status}, 'void', 'the orphan voided then');
    $h = $l->lr($w, $id);
    ok(!exists $h->{reissueAt}, 'no claim left');
};

# Stripe fails the void of the invoice the cancel's sweep found (5xx for
# 8 s): 502, still awaiting payment, the claim released lapsed; the retry
# voids it and cancels. Before, the cancel answered 200 canceled with the
# orphan left open at Stripe (queued), payable on a canceled request.
subtest 'cancel: the void of a lapsed reissue\'s orphan fails' => sub {
    my $w = ws();
    my ($id, $old, $orphan) = killed_after_finalize($w) or return;
    lapse($w, $id);

    $l->fault(path_prefix => "/v1/invoices/$orphan", method => '',
              count => -1, status => 500);
    $l->error_is($l->manage($w, $id, 'cancel'), 502,
                 'BILLING_UNAVAILABLE', 'the orphan not voided');
    $l->clear_faults;
    my $h = $l->lr($w, $id);
    is("$h->{provisioningStatus}/$h->{invoiceId}", "awaiting_payment/$old",
       'still awaiting payment, naming its invoice');
    is($h->{reissueAt}, 0, 'the claim released, lapsed');
    ok(exists $h->{sweepFrom}, 'its sweep\'s window kept');
    is($l->invoice($orphan)->{status}, 'open', 'the orphan still open');

    my $b = $l->answer($l->manage($w, $id, 'cancel'), 200, 'retried');
    is($b->{status}, 'canceled', 'canceled');
    is($l->invoice($orphan)->{status}, 'void', 'the orphan voided then');
    is(scalar(grep { $_->{status} eq 'open' }
              $l->invoices($w->{customer})), 0, 'no invoice left open');
    ok(!exists $l->lr($w, $id)->{reissueAt}, 'no claim left');
};

# The invoice the request names was paid (from Stripe's own pages, its
# event not delivered yet) while a lapsed claim is in the hash: the
# cancel's void under its claim is refused, its check finds it paid, and
# the request is promoted as any cancel of a paid request is (409
# provisioning); the claim, not swept, is released lapsed, and the
# request queued for a run (reissue_lapsed) as any that ends so.
subtest 'cancel: a lapsed claim, the invoice it names paid' => sub {
    my $w = ws();
    my ($id, $c) = $l->awaiting($w);
    my $lkey = "lg:{ws:$w->{id}}:lr:$id";
    # a claim that lapsed: its worker died before it made anything
    $r->hset($lkey, reissueAt => int(time * 1000) - 60001,
             invoiceSeq => 1, reissueBy => 'gone.1.1');
    $l->invoice_do($c->{invoiceId}, 'pay');
    my $b = conflict($l->manage($w, $id, 'cancel'), 'provisioning',
                     'the cancel');
    like($b->{message}, qr/paid/, 'the invoice was paid');
    my $h = $l->lr($w, $id);
    is("$h->{provisioningStatus}/$h->{paymentStatus}/$h->{invoiceId}",
       "provisioning/paid/$c->{invoiceId}", 'promoted for its invoice');
    is($h->{invoiceSeq}, 2, 'looked at under a claim of its own');
    ok(eventually(sub { grep { $_->{id} eq $id } $l->stream }, 5),
       'in the provisioning stream');
    ok(eventually(sub { grep { $_->{reason} eq 'reissue_lapsed' }
                        queued($id) }, 5),
       'queued for reconciliation (reissue_lapsed)');
};

# A GET whose check finds the invoice the request names void while a
# lapsed claim is in the hash sweeps what the claim left: an invoice
# Stripe paid at its finalize (a credit balance) is a payment of the
# request, kept and made its own, and the poll alone promotes it (200
# provisioning, as a GET answers it). Before, the GET answered
# awaiting_payment for ever (only a cancel or payment_link swept); before
# 2026-11-28 it canceled the request and left the payment to a human.
subtest 'GET: a lapsed reissue left a paid invoice: the poll promotes'
    => sub {
    my $w = ws();
    my ($id, $old, $paid) = lapsed_request($w, 1) or return;
    my $b = $l->answer($l->get($w, $id), 200, 'the GET');
    is($b->{status}, 'provisioning', 'promoted');
    is($b->{paymentStatus}, 'paid', 'paid');
    my $h = $l->lr($w, $id);
    is("$h->{provisioningStatus}/$h->{paymentStatus}/$h->{invoiceId}",
       "provisioning/paid/$paid", 'promoted, naming the paid invoice');
    ok(!exists $h->{reissueAt}, 'the claim gone');
    is($l->invoice($paid)->{status}, 'paid', 'still paid at Stripe');
    is($r->get("lg:invoice:$paid"), "$w->{id}:$id", 'its webhook index');
    is(scalar(() = $l->invoices($w->{customer})), 2, 'nothing issued');
    ok(!defined $l->pending($w), 'the workspace is free');
    ok(eventually(sub { grep { $_->{id} eq $id } $l->stream }, 5),
       'in the provisioning stream');
    sleep 0.3;
    is(scalar(queued($id)), 0, 'nothing queued for reconciliation');
    conflict($l->manage($w, $id, 'cancel'), 'provisioning', 'a cancel then');
};

# The GET's sweep fails: the list of the customer's invoices (Stripe
# 500), or the void of the orphan it found (Stripe 500 for 8 s). A read
# answers the stored state (200 awaiting_payment, not the 502 of
# payment_link or cancel), logged at warn, nothing changed but its claim,
# released lapsed (reissueAt 0: the next caller sweeps at once), the
# request not canceled; the next payment_link sweeps. Before, the GET did
# not sweep at all; then, when the void failed, it went on as if it had
# voided and canceled the request, the orphan left open at Stripe.
for my $f (['the lookup of a lapsed reissue\'s invoices fails',
            sub { lookup_fails() }],
           ['the void of a lapsed reissue\'s orphan fails',
            sub { $l->fault(path_prefix => "/v1/invoices/$_[0]", method => '',
                            count => -1, status => 500) }]) {
    my ($name, $fail) = @$f;
    subtest "GET: $name" => sub {
        my $w = ws();
        my ($id, $old, $orphan) = lapsed_request($w) or return;
        my $mark = length $s->error_log;

        $fail->($orphan);
        my $b = $l->answer($l->get($w, $id), 200, 'the GET');
        $l->clear_faults;
        is($b->{status}, 'awaiting_payment', 'the stored state');
        my $h = $l->lr($w, $id);
        is("$h->{provisioningStatus}/$h->{invoiceId}",
           "awaiting_payment/$old",
           'still awaiting payment, naming its invoice');
        is($h->{reissueAt}, 0, 'its claim released, lapsed');
        is($l->invoice($orphan)->{status}, 'open', 'the orphan still open');
        is(scalar(() = $l->invoices($w->{customer})), 2, 'nothing issued');
        my $why = 'a reissue claim lapsed: not swept by this read '
                  . '(Stripe failed)';
        like(substr($s->error_log, $mark),
             qr/\[warn\].*"\Q$id\E" is void, \Q$why\E/, 'logged at warn');

        my $l2 = link_is($l->manage($w, $id, 'payment_link'), 0,
                         'the next payment_link');
        is($l->invoice($orphan)->{status}, 'void',
           'sweeps: the orphan voided');
        my @open = map { $_->{id} } grep { $_->{status} eq 'open' }
                   $l->invoices($w->{customer});
        is_deeply(\@open, [$l2->{invoiceId}],
                  'one open invoice, the new one');
    };
}

# Parallel polls over one lapsed claim: one sweeps (the check's claim,
# lr_claim, then the reissue claim), the others answer the stored state
# or, once it swept, the request canceled; one list of the customer's
# invoices, one claim, nothing issued, no error.
subtest 'GET: parallel polls over a lapsed claim, one sweeps' => sub {
    my $w = ws();
    my ($id, $old, $orphan, $lkey) = lapsed_request($w) or return;
    my $seq = stub_seq();

    # the list slow, so that the polls overlap the sweep
    $l->fault(method => 'GET', path_prefix => '/v1/invoices/',
              latency_ms => 1);
    $l->fault(method => 'GET', path_prefix => '/v1/invoices',
              latency_ms => 500);
    my @tx = $l->parallel(map { [$w, GET => "/api/line-requests/$id"] }
                          1 .. 6);
    $l->clear_faults;
    my @st = map { $l->answer($_, 200, 'a poll')->{status} // '' } @tx;
    note "the polls: @st";
    is(scalar(grep { $_ eq 'canceled' || $_ eq 'awaiting_payment' } @st),
       6, 'each answered awaiting_payment or canceled');
    ok((grep { $_ eq 'canceled' } @st), 'one swept and canceled');
    is(scalar(() = listed_since($seq)), 1,
       'one list of the customer\'s invoices');
    my $h = $l->lr($w, $id);
    is("$h->{provisioningStatus}/$h->{invoiceId}", "canceled/$old",
       'canceled, naming its invoice');
    is($h->{invoiceSeq}, 2, 'one claim');
    ok(!exists $h->{reissueAt}, 'no claim left');
    is($l->invoice($orphan)->{status}, 'void', 'the orphan voided');
    is(scalar(() = $l->invoices($w->{customer})), 2, 'nothing issued');
};

# Another caller (a payment_link, a cancel) claims the reissue while a
# GET's check is in flight: the GET's claim is refused (lr_reissue_claim
# LR_BUSY) and it answers the stored state, 200, leaving that caller's
# claim alone: one sweeper per claim.
subtest 'GET: the claim taken by another caller meanwhile' => sub {
    my $w = ws();
    my ($id, $old, $orphan, $lkey) = lapsed_request($w) or return;
    my $mark = length $s->error_log;
    my $at;

    # the GET's check of the invoice held while another caller claims
    $l->fault(method => 'GET', path_prefix => '/v1/invoices/',
              latency_ms => 1500);
    my ($tx, $done) = $l->during([$w, GET => "/api/line-requests/$id"], sub {
        return 0 unless $s->stub_held(qr{^/v1/invoices/in_\w+$});
        $at = int(time * 1000);
        $r->hset($lkey, reissueAt => $at, reissueBy => 'other.1.1');
        $r->hincrby($lkey, 'invoiceSeq', 1);
        return 1;
    }, 10);
    $l->clear_faults;
    ok($done && $at, 'claimed by another caller meanwhile') or return;
    is($l->answer($tx, 200, 'the GET')->{status}, 'awaiting_payment',
       'the stored state');
    my $h = $l->lr($w, $id);
    is("$h->{reissueAt}/$h->{reissueBy}/$h->{invoiceSeq}",
       "$at/other.1.1/2", 'the other caller\'s claim left alone');
    is($l->invoice($orphan)->{status}, 'open', 'nothing swept by the GET');
    my $why = 'not swept by this read (another caller holds the claim)';
    like(substr($s->error_log, $mark), qr/\[warn\].*\Q$why\E/,
         'logged at warn');
};

# Redis does not answer the GET's claim (writes paused past the command
# timeout, as for payment_link's claim above): the stored state, 200,
# not payment_link's 503; the claim Redis took once it ran is released
# lapsed by its name, so that the next poll sweeps and cancels.
subtest 'GET: its sweep\'s claim not answered: the stored state' => sub {
    my $w = ws();
    my ($id, $old, $orphan, $lkey) = lapsed_request($w) or return;
    my $from = length $s->error_log;

    $l->fault(method => 'GET', path_prefix => "/v1/invoices/$old",
              latency_ms => 1000);
    my ($tx, $paused) = $l->during([$w, GET => "/api/line-requests/$id"],
                                   sub {
        return 0 unless $s->stub_held(qr{^/v1/invoices/\Q$old\E$});
        $l->pause_writes(10000);
        return 1;
    }, 10);
    $l->release_writes;
    $l->clear_faults;
    ok($paused, 'writes paused while the check waited') or return;
    is($l->answer($tx, 200, 'the GET')->{status}, 'awaiting_payment',
       'the stored state');
    my $why = 'not swept by this read (Redis did not answer)';
    like(substr($s->error_log, $from), qr/\[warn\].*\Q$why\E/,
         'logged at warn');
    my $said = qq{reissue claim of line request "$id" whose reply was not }
               . 'known is released lapsed';
    ok(eventually(sub { index($s->error_log, $said, $from) >= 0 }, 10),
       'the claim Redis took released by its name')
        or diag(substr($s->error_log, $from));
    is($r->hget($lkey, 'reissueAt'), '0', 'lapsed: the next one sweeps');
    is($l->invoice($orphan)->{status}, 'open', 'nothing swept yet');

    $r->hdel($lkey, 'reconciledAt');
    is($l->answer($l->get($w, $id), 200, 'the next GET')->{status},
       'canceled', 'the next poll sweeps and cancels');
    is($l->invoice($orphan)->{status}, 'void', 'the orphan voided');
};

# A claim (invoiceSeq 1) that voided an invoice of its own under its
# seq's key ("lg-<id>-r1-void": a discard, its store refused) and was
# released lapsed (reissueAt 0): the cancel's void of the invoice the
# request names has a key of its own ("lg-<id>-<invoice>-void"). Before,
# it was built from invoiceSeq, the claim's key: Stripe refused it (400
# idempotency_error, other parameters) and the cancel answered 502.
subtest 'cancel: its void key is the invoice\'s, not the lapsed claim\'s'
    => sub {
    my $w = ws();
    my ($id, $c) = $l->awaiting($w);
    my $lkey = "lg:{ws:$w->{id}}:lr:$id";
    my $post = sub {
        my ($path, $key, %form) = @_;
        my %h = (Authorization => 'Bearer sk_test_linegate');
        $h{'Idempotency-Key'} = $key if defined $key;
        return $s->ua->post($s->stub_url($path) => \%h => form => \%form)
                  ->res;
    };
    # the claim's own invoice, voided under its seq's key
    my $in = $post->('/v1/invoices', undef, customer => $w->{customer},
                     collection_method => 'send_invoice',
                     days_until_due => 7, auto_advance => 'false')->json;
    $post->('/v1/invoiceitems', undef, customer => $w->{customer},
            price => 'price_email_line', invoice => $in->{id});
    $post->("/v1/invoices/$in->{id}/finalize", undef,
            auto_advance => 'false');
    is($post->("/v1/invoices/$in->{id}/void", "lg-$id-r1-void")->code, 200,
       'the claim\'s invoice voided under lg-<id>-r1-void');
    $r->hset($lkey, reissueAt => 0, invoiceSeq => 1,
             reissueBy => 'gone.1.1');

    my $b = $l->answer($l->manage($w, $id, 'cancel'), 200, 'the cancel');
    is($b->{status}, 'canceled', 'canceled');
    is($l->invoice($c->{invoiceId})->{status}, 'void',
       'the invoice it names voided');
    my $h = $l->lr($w, $id);
    ok(!exists $h->{reissueAt}, 'no claim left');
};

subtest 'cancel: Stripe unreachable changes nothing' => sub {
    my $w = ws();
    my ($id, $c) = $l->awaiting($w);
    my $before = $l->state_keys($w);

    # a 5xx is tried once more under a key of its own (below): both fail
    for my $f ([status => 500, count => 2], [status => 503, count => 2],
               [drop => 1]) {
        $l->fault(path_prefix => '/v1/invoices/', @$f);
        $l->error_is($l->manage($w, $id, 'cancel'), 502,
                     'BILLING_UNAVAILABLE', "Stripe @$f");
    }
    $l->fault(path_prefix => '/v1/invoices/', status => 429);
    my $tx = $l->manage($w, $id, 'cancel');
    $l->error_is($tx, 503, 'BILLING_UNAVAILABLE', 'Stripe 429');
    is($tx->res->headers->header('Retry-After'), '1', 'Retry-After');

    $l->state_unchanged($w, $before, 'nothing changed in Redis');
    is($l->invoice($c->{invoiceId})->{status}, 'open', 'nor at Stripe');

    $l->clear_faults;
    $l->answer($l->manage($w, $id, 'cancel'), 200, 'Stripe back');
};

# Stripe keeps the first answer under an Idempotency-Key, a 500 too, for
# a day (saved: the stub does so): a void retried under its key gets the
# 500 again, and every cancel with it answered 502 for a day. After a 5xx
# the void goes again under a key never used; the first try's key is the
# plain one (concurrent cancels share it, t/160).
sub void_keys {
    my ($inv) = @_;
    return map { $_->{idempotency_key} // '' }
           $l->stripe_log(qr{^/v1/invoices/\Q$inv\E/void$});
}

subtest 'cancel: a void\'s 500 Stripe keeps under its key' => sub {
    $l->clear_faults;
    my $w = ws();
    my ($id, $c) = $l->awaiting($w);
    my $inv = $c->{invoiceId};
    $l->fault(path_prefix => "/v1/invoices/$inv/void", status => 500,
              saved => 1);

    my $b = $l->answer($l->manage($w, $id, 'cancel'), 200, 'the cancel');
    is($b->{status}, 'canceled', 'canceled');
    is($l->invoice($inv)->{status}, 'void', 'the invoice voided');
    my @k = void_keys($inv);
    is($k[0], "lg-$id-$inv-void", 'the first try under the plain key');
    like($k[1] // '', qr/^lg-\Q$id-$inv\E-void-\d+-\d+-\d+$/,
         'the next under a key of its own');
    is(scalar @k, 2, 'two tries');
    is($l->lr($w, $id)->{provisioningStatus}, 'canceled', 'stored canceled');
    $l->clear_faults;
};

subtest 'payment_link: a void\'s 500 Stripe keeps under its key' => sub {
    $l->clear_faults;
    my $w = ws();
    my ($id, $c) = $l->awaiting($w);
    my $inv = $c->{invoiceId};
    $l->invoice_do($inv, 'mark_uncollectible');
    $l->fault(path_prefix => "/v1/invoices/$inv/void", status => 500,
              saved => 1);

    my $b = link_is($l->manage($w, $id, 'payment_link'), 0,
                    'payment_link over an uncollectible invoice');
    is($l->invoice($inv)->{status}, 'void', 'the old invoice voided');
    isnt($b->{invoiceId}, $inv, 'a new invoice');
    my @k = void_keys($inv);
    is($k[0], "lg-$id-$inv-void", 'the first try under the plain key');
    like($k[1] // '', qr/^lg-\Q$id-$inv\E-void-\d+-\d+-\d+$/,
         'the next under a key of its own');
    $l->clear_faults;
};

subtest 'only requests awaiting payment: 409 with the current status'
    => sub {
    my $w = ws();
    my $id = $l->created($w);
    conflict($l->manage($w, $id, 'cancel'), 'provisioning',
             'cancel a provisioning request');
    conflict($l->manage($w, $id, 'payment_link'), 'provisioning',
             'payment_link on it');
    $l->activate($id);
    conflict($l->manage($w, $id, 'cancel'), 'active', 'cancel active');
};

subtest 'actions and bodies' => sub {
    my $w = ws();
    my ($id) = $l->awaiting($w);
    my $before = $l->state_keys($w);

    for my $case ([{action => 'refund'}, 'refund'], [{}, 'no action'],
                  [{action => undef}, 'null action'],
                  [{action => 'CANCEL'}, 'case matters'],
                  # valid JSON: "cancel" and a NUL is no action, never
                  # taken for "cancel" cut short at the NUL
                  [{action => "cancel\0"}, 'a NUL after cancel'])
    {
        my $b = $l->answer($l->manage($w, $id, $case->[0]), 400, $case->[1]);
        is_deeply($b, {error => 'Unsupported action'}, "$case->[1]: body");
    }

    $l->invalid_field($l->manage($w, $id, {action => 5}), 'action',
                      'action a number');
    $l->invalid_field($l->manage($w, $id, \'{"action":'), undef,
                      'malformed JSON');
    $l->invalid_field($l->manage($w, $id, \'["cancel"]'), undef,
                      'not an object');

    my $b = $l->answer($l->manage($w, 'bad', 'refund'), 400,
                       'bad id and bad action');
    is_deeply($b, {error => 'Invalid line request id'}, 'the id first');
    $b = $l->answer($l->manage($w, 'f' x 24, 'refund'), 400,
                    'unknown id and bad action');
    is_deeply($b, {error => 'Unsupported action'}, 'the action before 404');
    $l->state_unchanged($w, $before, 'nothing changed');

    # a NUL in a field that is not read is ignored (SPEC)
    $b = $l->answer($l->manage($w, $id, {action => 'cancel',
                                         note => "a\0b"}), 200,
                    'a NUL in an unknown field');
    is($b->{status}, 'canceled', 'canceled');
};

done_testing;
