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

my $s = LG::Stack->new(STRIPE_TIMEOUT => '5s',
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
