# Confirm when the request itself is ended with a step in flight: nginx's
# worker_shutdown_timeout, after a reload, terminates the requests the
# draining worker still holds. What the step in flight left unsettled is
# settled anyway (issue 13): the reservation released, queued on
# lg:{fleet}:reconcile when Stripe may have charged, by a durable write.
use strict;
use warnings;
use lib 't/lib';

use Test::More;
use Time::HiRes qw(sleep time);
use Mojo::IOLoop;
use LG::Stack;
use LG::Test;
use LG::Provision qw(now_ms);

my $s = LG::Stack->new(STRIPE_TIMEOUT => '5s',
                       MAIN_EXTRA => 'worker_shutdown_timeout 500ms;')
            ->start;
my $p = LG::Provision->new($s);
my $r = $s->redis;

my $TOTAL = 10;
$p->inventory($p->numbers($TOTAL));

sub subs_of {
    my ($id) = @_;
    return grep { ($_->{metadata}{account_id} // '') eq $id }
           $p->subscriptions;
}

# poll $cond for at most 30 s: generous, as a loaded machine runs the
# workers' steps (a reload, a reconnect, a durable write) seconds late
sub eventually { return LG::Test::eventually($_[0], 30) }

# Start a confirm, reload once its number is reserved; the answer: a
# transaction, or undef when the connection was closed unanswered.
sub confirm_cut_by_reload {
    my ($a, $tok) = @_;

    my ($method, $path, $headers, @content) = @{ $p->confirm_req($a, $tok) };
    my $ua = $s->ua;
    my ($tx, $err, $reloaded);
    my $pr = $ua->start_p($ua->build_tx($method => $s->url($path)
                                        => $headers => @content))
        ->then(sub { $tx = shift })->catch(sub { $err = shift });

    my $until = time + 8;
    my $id = Mojo::IOLoop->recurring(0.01 => sub {
        return if $reloaded || time > $until;
        return unless @{ $p->reservations($a->{id}) };
        kill 'HUP', $s->{pids}{nginx};
        $reloaded = 1;
    });
    $pr->wait;
    Mojo::IOLoop->remove($id);

    ok($reloaded, 'reloaded while Stripe worked');
    return $err ? undef : $tx;
}

subtest 'ended during the subscription: released and queued' => sub {
    my $a = $p->account('acct_cut');
    my $tok = $p->token_once_answering($a);
    $p->fault(latency_ms => 3000, after_commit => 1);

    my $tx = confirm_cut_by_reload($a, $tok);
    ok(!$tx || !$tx->res->code, 'no answer: the request was ended');

    my @q;
    ok(eventually(sub {
        @q = grep { $_->{account} eq 'acct_cut' } @{ $p->reconcile };
        @q && !@{ $p->reservations('acct_cut') };
    }), 'settled by the draining worker');
    is(scalar @q, 1, 'one lg:{fleet}:reconcile entry');
    is($q[0]{reason}, 'stripe_outcome_unknown', 'reason');
    is($r->zcard('lg:{acct:acct_cut}:prov'), 0, 'the slot freed');

    my @subs = subs_of('acct_cut');
    is(scalar @subs, 1, 'Stripe charged');
    is($q[0]{worker_id}, $subs[0]{metadata}{worker_id},
       'the entry names the subscription Stripe made');
    $p->numbers_accounted('ended during the subscription', $TOTAL);
    like($s->error_log, qr/ended before it was settled/, 'logged');
    $p->clear_faults;
};

subtest 'ended while reading the customer: released' => sub {
    my $a = $p->account('acct_cut2');
    my $tok = $p->token_once_answering($a);
    $p->fault(method => 'GET', path_prefix => '/v1/customers',
              latency_ms => 3000);

    my $tx = confirm_cut_by_reload($a, $tok);
    # released in the account's step; the claim leaves
    # lg:{fleet}:pv:inflight and the number returns to the inventory in
    # the fleet's, after it: a count of the homes made meanwhile read the
    # claim, then the inventory the settle had filled (11 of 10 once,
    # under load)
    ok(eventually(sub {
        !@{ $p->reservations('acct_cut2') }
            && !$r->zcard('lg:{acct:acct_cut2}:prov')
            && !@{ $p->claims('acct_cut2') }
    }), 'released by the draining worker');
    is(scalar(grep { $_->{account} eq 'acct_cut2' } @{ $p->reconcile }), 0,
       'nothing to reconcile: nothing was bought');
    $p->numbers_accounted('ended while reading the customer', $TOTAL);
    $p->clear_faults;
};

done_testing();
