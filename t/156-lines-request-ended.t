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
my $s = LG::Stack->new(STRIPE_TIMEOUT => '5s', REDIS_COMMAND_TIMEOUT => '5s',
                       MAIN_EXTRA => 'worker_shutdown_timeout 500ms;')
            ->start;
my $l = LG::Lines->new($s);
my $r = $s->redis;

my $EMAIL = body(channelType => 'email', email => 'x@example.com');

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

# Ended while the index of an invoice Stripe paid at finalization (a
# price of 0) is held at Redis: released, the paid invoice would be a
# human's (its void refused) and the key free for a retry to bill again.
# The request is left as a dead worker's instead, for the journal's sweep
# to store the invoice and promote it (t/235): its reservation, its key
# and its member kept, nothing queued. The module before released it and
# queued the paid invoice (invoice_unrepaired).
subtest 'ended while its paid invoice is indexed: left for the sweep' => sub {
    my $w = $l->workspace('org_cut_paid');
    my $price = sub {
        $s->stub(POST => '/_stub/prices', {id => 'price_email_addon',
                                           unit_amount => $_[0]});
    };
    $price->(0);
    $l->fault(path_prefix => '/v1/invoices/', latency_ms => 1500,
              after_commit => 1);
    my $logoff = length $s->error_log;

    my $ua = $s->ua;
    my ($tx, $err, $in, $step);
    my $pr = $ua->start_p($ua->build_tx(POST => $s->url('/api/line-requests')
                          => {%{ $w->{auth} }, 'Idempotency-Key' => 'cut-2'}
                          => json => $EMAIL))
        ->then(sub { $tx = shift })->catch(sub { $err = shift });

    # the invoice paid (its answer held): writes paused; its index's SET
    # held at Redis: reloaded
    $step = 0;
    my $until = time + 8;
    my $id = Mojo::IOLoop->recurring(0.01 => sub {
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
        kill 'HUP', $s->{pids}{nginx};
        $step = 2;
    });
    $pr->wait;
    Mojo::IOLoop->remove($id);
    is($step, 2, 'reloaded with the paid invoice\'s index held');
    my $left = qr/ended while its paid invoice "\Q$in\E" was indexed: /
               . qr/left to the reconciliation's sweep/;
    ok(eventually(sub { substr($s->error_log, $logoff) =~ $left }, 10),
       'logged') or diag grep { /linegate: line request/ }
                            split /^/, substr($s->error_log, $logoff);
    $l->release_writes;
    $l->clear_faults;
    $price->(1500);

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

done_testing;
