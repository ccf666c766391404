# A create ended with a Stripe step in flight (issue 13): after a reload,
# worker_shutdown_timeout terminates the requests the draining worker
# still holds, so no step of the create runs any more. Its reservation and
# idempotency key must not stay: the request's cleanup hands the release
# to the worker's durable writes.
use strict;
use warnings;
use lib 't/lib';

use Test::More;
use Time::HiRes qw(sleep time);
use Mojo::IOLoop;
use LG::Stack;
use LG::Test;
use LG::Lines qw(body);

# (the Redis command timeout outlasts worker_shutdown_timeout: a step
# held at Redis is ended by the reload, not by its own timeout)
# (linegate_reconcile_delay 0: a run settles the entry its own sweep of
# the journal queued, as t/235's do)
my $s = LG::Stack->new(STRIPE_TIMEOUT => '5s', REDIS_COMMAND_TIMEOUT => '5s',
                       MAIN_EXTRA => 'worker_shutdown_timeout 500ms;',
                       HTTP_EXTRA => 'linegate_reconcile_delay 0;')
            ->start;
my $l = LG::Lines->new($s);
my $r = $s->redis;

my $EMAIL = body(channelType => 'email', email => 'x@example.com');

# the email add-on's price at the Stripe stub (0: Stripe pays the
# invoice at finalization)
sub addon_price {
    $s->stub(POST => '/_stub/prices', {id => 'price_email_addon',
                                       unit_amount => $_[0]});
}

# poll $cond for at most $timeout s (30 unless told): generous, as a
# loaded machine runs the workers' steps seconds late
sub eventually {
    my ($cond, $timeout) = @_;
    my $until = time + ($timeout // 30);
    until ($cond->()) {
        return 0 if time > $until;
        sleep 0.05;
    }
    return 1;
}

subtest 'ended while Stripe adds the item: released' => sub {
    my $w = $l->workspace('org_cut');
    $l->fault(path_prefix => '/v1/invoiceitems', latency_ms => 3000);

    my $ua = $s->ua;
    my ($tx, $err, $reloaded);
    my $pr = $ua->start_p($ua->build_tx(POST => $s->url('/api/line-requests')
                          => {%{ $w->{auth} }, 'Idempotency-Key' => 'cut-1'}
                          => json => $EMAIL))
        ->then(sub { $tx = shift })->catch(sub { $err = shift });

    my $until = time + 8;
    my $id = Mojo::IOLoop->recurring(0.01 => sub {
        return if $reloaded || time > $until;
        return unless $l->pending($w);
        kill 'HUP', $s->{pids}{nginx};
        $reloaded = 1;
    });
    $pr->wait;
    Mojo::IOLoop->remove($id);
    ok($reloaded, 'reloaded while Stripe worked');

    ok(eventually(sub { !defined $l->pending($w) }),
       'the reservation is released');
    is(scalar(my @ids = $l->request_ids($w)), 0, 'no request left');
    ok(eventually(sub { !$r->keys("lg:{ws:org_cut}:idem:*") }),
       'the key is free');
    like($s->error_log, qr/ended while billed: its claim is released/,
         'logged');
    # the draft it made: no request holds it once released, queued for a
    # reconciliation run to delete
    my @draft = grep { $_->{status} eq 'draft' }
                $l->invoices($w->{customer});
    is(scalar @draft, 1, 'its draft at Stripe');
    ok(eventually(sub {
        grep { my %e = @{ $_->[1] };
               ($e{invoice_id} // '') eq ($draft[0]{id} // '-')
               && $e{reason} eq 'invoice_unrepaired' }
             $r->xrange('lg:{fleet}:reconcile', '-', '+');
    }), 'the draft queued for a reconciliation run');

    $l->clear_faults;
    my $b = $l->answer($l->create($w, $EMAIL, 'Idempotency-Key' => 'cut-1'),
                       201, 'the same key, retried');
    is($b->{status}, 'awaiting_payment', 'billed');
    unlike($s->error_log, qr/exited on signal/, 'no worker crashed');
};

# the error log, past $logoff, says request $id ended after its new
# invoice $in was finalized and its reissue claim is left to lapse
sub claim_left_logged {
    my ($id, $in, $logoff) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    my $left = qr/"\Q$id\E" ended after its new invoice "\Q$in\E" was /
               . qr/finalized, perhaps paid: its reissue claim is left /
               . qr/to lapse/;
    ok(eventually(sub { substr($s->error_log, $logoff) =~ $left }, 10),
       'logged') or diag grep { /linegate: line request/ }
                            split /^/, substr($s->error_log, $logoff);
}

# $tx sent; once Stripe (its answer held by the test's fault) has paid
# an invoice of $w at finalization, Redis's writes are paused, and once
# that invoice's index (its SET) is held at Redis, nginx is reloaded:
# the request ends there. ($in, the paid invoice, and the error log's
# length at the reload; $hupoff undef: no reload within 8 s)
sub reload_while_paid_indexed {
    my ($w, $tx) = @_;
    my ($in, $hupoff, $step) = (undef, undef, 0);
    my $until = time + 8;
    my $pr = $s->ua->start_p($tx)->catch(sub { });
    my $tid = Mojo::IOLoop->recurring(0.01 => sub {
        return if $step == 2 || time > $until;
        if ($step == 0) {
            my ($paid) = grep { $_->{status} eq 'paid' }
                         $l->invoices($w->{customer});
            return unless $paid;
            $in = $paid->{id};
            $l->pause_writes(4000);
            $step = 1;
            return;
        }
        my $port = $l->_master_of("lg:invoice:$in");
        return unless LG::Lines::_held_sets($port);
        $hupoff = length $s->error_log;
        kill 'HUP', $s->{pids}{nginx};
        $step = 2;
    });
    $pr->wait;
    Mojo::IOLoop->remove($tid);
    return ($in, $hupoff);
}

# Ended while the index of an invoice Stripe paid at finalization (a
# price of 0) is held at Redis: released, the paid invoice would be a
# human's (its void refused) and the key free for a retry to bill again.
# The request is left as a dead worker's instead, for the journal's sweep
# to store the invoice and promote it (t/235): its reservation, its key
# and its member kept, nothing queued. The module before released it and
# queued the paid invoice (invoice_unrepaired).
subtest 'ended while its paid invoice is indexed: left for the sweep' => sub {
    my $w = $l->workspace('org_cut_paid');
    addon_price(0);
    $l->fault(path_prefix => '/v1/invoices/', latency_ms => 1500,
              after_commit => 1);
    my $logoff = length $s->error_log;

    my ($in, $hupoff) = reload_while_paid_indexed($w,
        $s->ua->build_tx(POST => $s->url('/api/line-requests')
                         => {%{ $w->{auth} }, 'Idempotency-Key' => 'cut-2'}
                         => json => $EMAIL));
    ok(defined $hupoff, 'reloaded with the paid invoice\'s index held');
    my $left = qr/ended while its paid invoice "\Q$in\E" was indexed: /
               . qr/left to the reconciliation's sweep/;
    ok(eventually(sub { substr($s->error_log, $logoff) =~ $left }, 10),
       'logged') or diag grep { /linegate: line request/ }
                            split /^/, substr($s->error_log, $logoff);
    $l->release_writes;
    $l->clear_faults;
    addon_price(1500);

    my ($rid) = $l->request_ids($w);
    $rid //= '';
    sleep 1;    # what a release would have done, done by now
    is($l->lr($w, $rid)->{provisioningStatus} // '', 'awaiting_payment',
       'the request kept');
    ok(defined $l->pending($w), 'its reservation kept');
    is(scalar(grep { index($_, "org_cut_paid ") == 0 }
              $r->zrange('lg:{fleet}:lr:inflight', 0, -1)), 1,
       'its journal member kept');
    ok(scalar $r->keys("lg:{ws:org_cut_paid}:idem:*"), 'its key kept');
    is(scalar(grep { my %e = @{ $_->[1] };
                     ($e{invoice_id} // '') eq ($in // '-') }
              $r->xrange('lg:{fleet}:reconcile', '-', '+')), 0,
       'the paid invoice not queued');
    unlike(substr($s->error_log, $logoff),
           qr/ended while billed: .*\Q$in\E/, 'not released');
    my $busy = $l->create($w, $EMAIL, 'Idempotency-Key' => 'cut-2');
    is($busy->res->code, 409, 'the key still in use: no second invoice')
        or diag $busy->res->body;
    is(scalar(() = $l->invoices($w->{customer})), 1, 'one invoice');
    unlike($s->error_log, qr/exited on signal/, 'no worker crashed');
};

subtest 'ended while payment_link reissues: the claim released' => sub {
    my $w = $l->workspace('org_cut_link');
    my ($id, $c) = $l->awaiting($w);
    my $old = $c->{invoiceId};
    $l->invoice_do($old, 'mark_uncollectible');
    $l->fault(path_prefix => "/v1/invoices/$old/void", latency_ms => 3000);

    my $ua = $s->ua;
    my ($tx, $err, $reloaded);
    my $url = $s->url("/api/line-requests/$id");
    my $pr = $ua->start_p($ua->build_tx(POST => $url
                          => $w->{auth} => json => {action => 'payment_link'}))
        ->then(sub { $tx = shift })->catch(sub { $err = shift });

    my $until = time + 8;
    my $tid = Mojo::IOLoop->recurring(0.01 => sub {
        return if $reloaded || time > $until;
        return unless $l->lr($w, $id)->{reissueAt};
        kill 'HUP', $s->{pids}{nginx};
        $reloaded = 1;
    });
    $pr->wait;
    Mojo::IOLoop->remove($tid);
    ok($reloaded, 'reloaded while Stripe worked');

    ok(eventually(sub { !defined $l->lr($w, $id)->{reissueAt} }),
       'the claim is released');
    # never removed for the claim: nothing to give back
    is($r->get("lg:invoice:$old") // '', "org_cut_link:$id",
       'the old invoice\'s webhook index kept');
    like($s->error_log, qr/ended while its invoice was reissued/, 'logged');

    $l->clear_faults;
    # the held void lands at Stripe (3 s after it was sent; later on a
    # loaded machine)
    eventually(sub {
        grep { $_->{id} eq $old && $_->{status} eq 'void' }
             $l->invoices($w->{customer});
    }, 30);
    my $b = $l->answer($l->manage($w, $id, 'payment_link'), 200, 'retried');
    is($b->{reused}, Mojo::JSON->false, 'a new invoice');
    unlike($s->error_log, qr/exited on signal/, 'no worker crashed');
};

# Ended (a reload's worker_shutdown_timeout) while Stripe holds the answer
# of the finalize of payment_link's new invoice: with an amount due of 0
# (a price of 0 here, a credit balance in life) Stripe paid it at
# finalization, and the request never learns it. The module before
# released the claim and queued the new invoice (invoice_unrepaired): the
# payment a human's, and the request, its old invoice void with no claim,
# canceled by its next read. Now the claim is left as a dead worker's;
# past its hold the next read sweeps it (t/140's lapsed claims): a paid
# invoice stored and the request promoted; an open one voided (the
# request then canceled as a read cancels one whose invoice is void).
for my $paid (1, 0) {
    my $how = $paid ? 'paid' : 'open';
    subtest "ended while its new invoice's finalize is held ($how): "
            . 'the claim left to the sweep' => sub {
        my $w = $l->workspace("org_cut_relink_$how");
        my ($id, $c) = $l->awaiting($w);
        my $old = $c->{invoiceId};
        $l->invoice_do($old, 'void');
        addon_price(0) if $paid;
        # the finalize done at Stripe, its answer held past the reload
        $l->fault(path_prefix => '/v1/invoices/', latency_ms => 3000,
                  after_commit => 1);
        my $logoff = length $s->error_log;
        my $lkey = "lg:{ws:$w->{id}}:lr:$id";

        my $ua = $s->ua;
        my ($tx, $err, $reloaded, $hupoff);
        my $url = $s->url("/api/line-requests/$id");
        my $pr = $ua->start_p($ua->build_tx(POST => $url
                              => $w->{auth}
                              => json => {action => 'payment_link'}))
            ->then(sub { $tx = shift })->catch(sub { $err = shift });

        my $until = time + 8;
        my $tid = Mojo::IOLoop->recurring(0.01 => sub {
            return if $reloaded || time > $until;
            return unless $s->stub_held(qr{^/v1/invoices/in_\w+/finalize$});
            $hupoff = length $s->error_log;
            kill 'HUP', $s->{pids}{nginx};
            $reloaded = 1;
        });
        $pr->wait;
        Mojo::IOLoop->remove($tid);
        $l->clear_faults;
        addon_price(1500) if $paid;
        ok($reloaded, 'reloaded while Stripe held the finalize') or return;
        ok($s->wait_redis_connected($hupoff, 60), 'the new workers up');

        my @made = grep { $_->{id} ne $old } $l->invoices($w->{customer});
        is(scalar @made, 1, 'one new invoice') or return;
        my $in = $made[0]{id};
        is($made[0]{status}, $how, "$how at Stripe");
        claim_left_logged($id, $in, $logoff);
        sleep 1;    # what a release would have done, done by now
        my $h = $l->lr($w, $id);
        ok($h->{reissueAt}, 'the claim kept') or diag explain $h;
        is("$h->{provisioningStatus}/$h->{invoiceId}",
           "awaiting_payment/$old", 'the request as it was');
        ok(substr($s->error_log, $logoff)
           !~ /ended while its invoice was reissued/, 'not released');
        is(scalar(grep { my %e = @{ $_->[1] };
                         ($e{invoice_id} // '') eq $in }
                  $r->xrange('lg:{fleet}:reconcile', '-', '+')), 0,
           'the new invoice not queued');
        my $busy = $l->manage($w, $id, 'payment_link');
        is($busy->res->code, 409, 'a payment_link meanwhile: 409')
            or diag $busy->res->body;

        # the claim past its 60 s hold (if kept), the read's check due
        $r->hset($lkey, reissueAt => $h->{reissueAt} - 60001)
            if $h->{reissueAt};
        $r->hdel($lkey, 'reconciledAt');
        my $b = $l->answer($l->get($w, $id), 200, 'the next read');
        $h = $l->lr($w, $id);
        if ($paid) {
            is("$b->{status}/$b->{paymentStatus}", 'provisioning/paid',
               'promoted');
            is("$h->{provisioningStatus}/$h->{paymentStatus}/"
               . ($h->{invoiceId} // ''), "provisioning/paid/$in",
               'stored naming the paid invoice');
            is($r->get("lg:invoice:$in") // '', "$w->{id}:$id",
               'its webhook index');
            ok(eventually(sub { grep { $_->{id} eq $id } $l->stream }, 5),
               'in the provisioning stream');
        } else {
            is($l->invoice($in)->{status}, 'void', 'the open one voided');
            is($h->{provisioningStatus}, 'canceled',
               'the request canceled, its invoice void');
        }
        ok(!exists $h->{reissueAt}, 'the claim gone');
        ok(!defined $l->pending($w), 'the workspace is free');
        is(scalar(() = $l->invoices($w->{customer})), 2, 'nothing issued');
        unlike($s->error_log, qr/exited on signal/, 'no worker crashed');
    };
}

# The same once the finalize answered paid, while the new invoice's index
# (LINK_INDEX) is held at Redis: released, the claim left that invoice
# queued for a human, as above; left as a dead worker's, the next read
# past the claim's hold stores it and promotes the request.
subtest 'ended while its new paid invoice is indexed: left to the sweep'
    => sub {
    my $w = $l->workspace('org_cut_relink_index');
    my ($id, $c) = $l->awaiting($w);
    my $old = $c->{invoiceId};
    $l->invoice_do($old, 'void');
    addon_price(0);
    $l->fault(path_prefix => '/v1/invoices/', latency_ms => 1500,
              after_commit => 1);
    my $logoff = length $s->error_log;
    my $lkey = "lg:{ws:$w->{id}}:lr:$id";

    my ($in, $hupoff) = reload_while_paid_indexed($w,
        $s->ua->build_tx(POST => $s->url("/api/line-requests/$id")
                         => $w->{auth} => json => {action => 'payment_link'}));
    ok(defined $hupoff, 'reloaded with the new paid invoice\'s index held')
        or do { $l->release_writes; $l->clear_faults; addon_price(1500);
                return };
    claim_left_logged($id, $in, $logoff);
    $l->release_writes;
    $l->clear_faults;
    addon_price(1500);
    ok($s->wait_redis_connected($hupoff, 60), 'the new workers up');

    sleep 1;    # what a release would have done, done by now
    my $h = $l->lr($w, $id);
    ok($h->{reissueAt}, 'the claim kept');
    is("$h->{provisioningStatus}/$h->{invoiceId}", "awaiting_payment/$old",
       'the request as it was');
    is(scalar(grep { my %e = @{ $_->[1] };
                     ($e{invoice_id} // '') eq $in }
              $r->xrange('lg:{fleet}:reconcile', '-', '+')), 0,
       'the paid invoice not queued');

    $r->hset($lkey, reissueAt => $h->{reissueAt} - 60001)
        if $h->{reissueAt};
    $r->hdel($lkey, 'reconciledAt');
    my $b = $l->answer($l->get($w, $id), 200, 'the next read');
    is("$b->{status}/$b->{paymentStatus}", 'provisioning/paid', 'promoted');
    $h = $l->lr($w, $id);
    is($h->{invoiceId} // '', $in, 'naming the paid invoice');
    ok(!exists $h->{reissueAt}, 'the claim gone');
    ok(!defined $l->pending($w), 'the workspace is free');
    is(scalar(() = $l->invoices($w->{customer})), 2, 'nothing issued');
    unlike($s->error_log, qr/exited on signal/, 'no worker crashed');
};

# The same dead worker (ended while Stripe held its new invoice's
# finalize, open at Stripe, the claim left), and nobody ever reads the
# request again: no GET, no cancel, no payment_link. The claim's member
# of the journal lg:{fleet}:lr:inflight ("<W> <id> r<invoiceSeq>",
# written before the reissue's first Stripe call) is what a
# reconciliation run finds: while the claim holds (its worker may be
# alive, Stripe slow) the run leaves it; past its hold and
# linegate_reconcile_lost_after the run queues reissue_lapsed and voids
# the open invoice, the request untouched (it names its old invoice, the
# claim lapsed for the next payment_link to take over). The module before
# wrote no member: the invoice stayed payable, its webhook answered 409
# INVOICE_PENDING, and no run ever looked.
subtest 'a lapsed claim nobody reads: swept by a run from the journal'
    => sub {
    my $w = $l->workspace('org_cut_relink_run');
    my ($id, $c) = $l->awaiting($w);
    my $old = $c->{invoiceId};
    $l->invoice_do($old, 'void');
    $l->fault(path_prefix => '/v1/invoices/', latency_ms => 3000,
              after_commit => 1);
    my $logoff = length $s->error_log;
    my $lkey = "lg:{ws:$w->{id}}:lr:$id";
    my $J = 'lg:{fleet}:lr:inflight';

    my ($reloaded, $hupoff);
    my $pr = $s->ua->start_p($s->ua->build_tx(
                 POST => $s->url("/api/line-requests/$id") => $w->{auth}
                 => json => {action => 'payment_link'}))->catch(sub { });
    my $until = time + 8;
    my $tid = Mojo::IOLoop->recurring(0.01 => sub {
        return if $reloaded || time > $until;
        return unless $s->stub_held(qr{^/v1/invoices/in_\w+/finalize$});
        $hupoff = length $s->error_log;
        kill 'HUP', $s->{pids}{nginx};
        $reloaded = 1;
    });
    $pr->wait;
    Mojo::IOLoop->remove($tid);
    $l->clear_faults;
    ok($reloaded, 'reloaded while Stripe held the finalize') or return;
    ok($s->wait_redis_connected($hupoff, 60), 'the new workers up');

    my @made = grep { $_->{id} ne $old } $l->invoices($w->{customer});
    is(scalar @made, 1, 'one new invoice') or return;
    my $in = $made[0]{id};
    is($made[0]{status}, 'open', 'open at Stripe');
    claim_left_logged($id, $in, $logoff);
    sleep 1;    # what a release would have done, done by now
    my $h = $l->lr($w, $id);
    ok($h->{reissueAt}, 'the claim kept') or return;
    my @m = grep { index($_, "$w->{id} $id ") == 0 } $r->zrange($J, 0, -1);
    is_deeply(\@m, ["$w->{id} $id r$h->{invoiceSeq}"],
              'the claim\'s journal member')
        or diag explain [$r->zrange($J, 0, -1)];

    # the member past linegate_reconcile_lost_after (10 minutes)
    my $aged = sub {
        $r->zadd($J, $r->zscore($J, $_) - 600001, $_) for @m;
    };
    my $entry_of = sub {
        my ($b) = @_;
        my ($e) = grep { ($_->{line_request_id} // '') eq $id }
                  @{ $b->{entries} // [] };
        return $e;
    };

    # the claim still held: its worker may be alive, the member left
    $aged->();
    my $tx = $s->op(POST => '/reconciliation/run');
    is($tx->res->code, 200, 'a run') or diag $tx->res->body;
    ok(!$entry_of->($tx->res->json // {}), 'nothing of it settled');
    is_deeply([grep { index($_, "$w->{id} $id ") == 0 }
               $r->zrange($J, 0, -1)], \@m, 'the held claim\'s member left');
    is($l->invoice($in)->{status}, 'open', 'its invoice left');

    # past its 60 s hold: lapsed
    $r->hset($lkey, reissueAt => $h->{reissueAt} - 60001);
    $aged->();
    $tx = $s->op(POST => '/reconciliation/run');
    is($tx->res->code, 200, 'a run past the hold') or diag $tx->res->body;
    my $e = $entry_of->($tx->res->json // {});
    is($e->{reason} // '', 'reissue_lapsed', 'queued as reissue_lapsed')
        or diag explain $tx->res->json;
    is($e->{outcome} // '', 'voided', 'settled: voided');
    is($l->invoice($in)->{status}, 'void', 'the open invoice voided');
    ok(!defined $r->get("lg:invoice:$in"), 'no webhook index of it');
    is_deeply([grep { index($_, "$w->{id} $id ") == 0 }
               $r->zrange($J, 0, -1)], [], 'the member gone');
    $h = $l->lr($w, $id);
    is("$h->{provisioningStatus}/$h->{invoiceId}", "awaiting_payment/$old",
       'the request untouched: nobody read it');

    # the next payment_link takes the lapsed claim over: a new invoice
    my $b = $l->answer($l->manage($w, $id, 'payment_link'), 200,
                       'payment_link');
    is($b->{reused}, Mojo::JSON->false, 'a new link');
    is(scalar(grep { $_->{status} eq 'open' } $l->invoices($w->{customer})),
       1, 'one payable invoice');
    ok(eventually(sub { !grep { index($_, "$w->{id} $id ") == 0 }
                             $r->zrange($J, 0, -1) }, 5),
       'its member removed once stored');
    unlike($s->error_log, qr/exited on signal/, 'no worker crashed');
};

# A reissue_lapsed entry of a request still awaiting payment (what the
# journal's sweep queues) may be settled after a payment_link took the
# lapsed claim over and stored a new invoice, open: the run reads it
# against the request (lr_void_fence), which names it, and passes over
# it, leaving it payable, to look for the lapsed claim's: none here,
# no_invoice. The module before settled the entry stored_late at the
# named one, and never looked at the request's other invoices, among
# them the one the dead worker left.
subtest 'reissue_lapsed of a request naming an open invoice: left payable'
    => sub {
    my $w = $l->workspace('org_lapsed_named_open');
    my ($id, $c) = $l->awaiting($w);
    my $in = $c->{invoiceId};
    is($l->invoice($in)->{status}, 'open', 'its invoice open');
    $l->lapsed_entry($w, $id);
    my $tx = $s->op(POST => '/reconciliation/run');
    is($tx->res->code, 200, 'a run') or diag $tx->res->body;
    my ($e) = grep { ($_->{line_request_id} // '') eq $id }
              @{ ($tx->res->json // {})->{entries} // [] };
    is($e->{outcome} // '', 'no_invoice', 'settled: nothing to discard')
        or diag explain $e;
    is($l->invoice($in)->{status}, 'open', 'the named invoice left payable');
    is($l->lr($w, $id)->{invoiceId}, $in, 'still named');
    ok(!grep({ ($_->{line_request_id} // '') eq $id
               && ($_->{reason} // '') eq 'reissue_lapsed' }
             map { +{ @{ $_->[1] } } }
             $r->xrange('lg:{fleet}:reconcile', '-', '+')),
       'off lg:{fleet}:reconcile');
};

done_testing;
