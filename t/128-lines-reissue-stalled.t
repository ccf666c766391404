# A payment_link reissue stalled past its claim's 60 s hold before its
# new invoice was filled and finalized (here: Stripe slow to answer its
# draft), while another payment_link took the claim over, swept (nothing
# of the stalled one's at Stripe yet) and stored an invoice of its own.
# The stalled one used to go on all the same: item, finalize; an invoice
# Stripe paid at finalization (an amount due of 0: the customer's credit
# balance) then met a refused store (LR_BUSY) and could be neither voided
# nor deleted: queued as invoice_unrepaired, a charge with no line. The
# reissue now makes, fills or finalizes no invoice once its claim is past
# its hold: the draft deleted, the claim left to the one that took it
# over, 409 "being issued" with Retry-After (docs/lines-api.md).
#
# The hold is 60 s: nginx's clock is moved 61 s ahead while the draft is
# held (LG::ClockShift), rather than waited for (this file took 65 s).
use strict;
use warnings;
use lib 't/lib';

use Test::More;
use Time::HiRes qw(sleep time);
use Mojo::UserAgent;
use LG::ClockShift qw(shift_clock);
use LG::Stack;
use LG::Test qw(:DEFAULT eventually);
use LG::Lines qw(body);

# the stalled draft's call outlives the hold (on nginx's clock, moved
# ahead meanwhile): the Stripe location's timeout longer than its latency
my $s = LG::Stack->new(STRIPE_TIMEOUT => '30s')->start;
my $l = LG::Lines->new($s);
my $r = $s->redis;

sub price {
    my $tx = $s->stub(POST => '/_stub/prices',
                      {id => 'price_email_addon', unit_amount => shift});
    ok($tx->res->is_success, 'the add-on priced') or diag $tx->res->body;
}

subtest 'a reissue stalled past its hold: not filled, deleted, 409' => sub {
    my $w = $l->workspace('org_reissue_stall');
    my ($id, $c) = $l->awaiting($w);
    my $old = $c->{invoiceId};
    $l->invoice_do($old, 'void');
    price(1500);
    my $lkey = "lg:{ws:$w->{id}}:lr:$id";

    # the stalled reissue's draft: answered (and made) 4 s later, by
    # when nginx's clock is 61 s ahead: past the hold
    $l->fault(path_prefix => '/v1/invoices', latency_ms => 4000);

    my $ua = Mojo::UserAgent->new(inactivity_timeout => 30,
                                  request_timeout => 30);
    my ($tx, $second, $taken);
    my $p = $ua->start_p($ua->build_tx(POST =>
                $s->url("/api/line-requests/$id")
                => {Authorization => "Bearer $w->{key}"}
                => json => {action => 'payment_link'}))
        ->then(sub { $tx = shift }, sub { undef $tx });

    my ($done, $until) = (0, time + 20);
    my $poll = Mojo::IOLoop->recurring(0.05 => sub {
        return if $done;
        if (time > $until) {
            $done = 1;
            return;
        }
        return unless $s->stub_held(qr{^/v1/invoices$});
        $done = 1;
        $taken = $r->hget($lkey, 'reissueAt');
        # the claim aged past its hold, rather than waited for: the next
        # payment_link takes it over, sweeps (nothing yet), issues its own
        $r->hset($lkey, reissueAt => $taken - 60001);
        # and the stalled one's own hold, on nginx's clock, ends
        shift_clock(61_000);
        $second = $l->manage($w, $id, 'payment_link');
        # the stalled one's item would be of 0: paid at finalization
        price(0);
    });
    $p->wait;
    Mojo::IOLoop->remove($poll);
    $l->clear_faults;

    ok($taken, 'the stalled reissue held the claim');
    my $b = $l->answer($second, 200, 'the next payment_link took it over');
    my $new = $b->{invoiceId} // '';
    ok($new && $new ne $old, 'and issued a new invoice');

    ok($tx, 'the stalled reissue answered');
    my $late = $l->answer($tx, 409, 'the stalled reissue: 409');
    is($late->{status}, 'awaiting_payment', 'awaiting_payment');
    like($late->{message} // '', qr/being issued/, 'being issued');
    is($tx && $tx->res->headers->header('Retry-After'), 1,
       'with Retry-After');

    my @mine = $l->invoices($w->{customer});
    is_deeply([map { $_->{id} } grep { $_->{status} eq 'paid' } @mine], [],
              'no invoice paid (nothing finalized past the hold)')
        or diag explain [map { [$_->{id}, $_->{status}] } @mine];
    is_deeply([map { $_->{id} } grep { $_->{status} eq 'open' } @mine],
              [$new], 'the one open invoice is the request\'s');
    is_deeply([map { $_->{id} } grep { $_->{status} eq 'draft' } @mine], [],
              'the stalled draft deleted');
    my $h = $l->lr($w, $id);
    is($h->{invoiceId}, $new, 'the request names the new invoice');
    is($h->{provisioningStatus}, 'awaiting_payment', 'still awaiting');
    my @queued = grep { ($_->{line_request_id} // '') eq $id }
                 map { +{ @{ $_->[1] } } }
                 $r->xrange('lg:{fleet}:reconcile', '-', '+');
    is_deeply(\@queued, [], 'nothing queued for a human')
        or diag explain \@queued;
    my $log = 'outlived its reissue claim\'s hold before its invoice was'
              . ' filled';
    like($s->error_log, qr/line request "\Q$id\E" \Q$log\E/, 'logged');

    price(1500);
    my $again = $l->answer($l->manage($w, $id, 'payment_link'), 200,
                           'the retry');
    is($again->{invoiceId}, $new, 'finds the new link');
    is($again->{reused}, Mojo::JSON->true, 'reused');
};

shift_clock(0);

done_testing;
