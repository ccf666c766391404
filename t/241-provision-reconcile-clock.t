# A reconciliation run's own durations on nginx's monotonic clock: its
# 30 s budget and its lease's age (renewed before a Stripe step once 5 s
# old). Before 2026-11-28 both were read on the wall clock, so a step of
# it (NTP, an operator's date) mid-run decided them: an hour forward and
# the run stopped after the entry in hand (its budget "spent"); an hour
# back and it renewed its lease before no Stripe step (the lease "0 ms
# old") and never ran out of budget, so that its 60 s lease could expire
# under it while it went on calling Stripe, and another run take it and
# be at the same entries (docs/operator.md, "Reconciliation").
#
# nginx's wall clock is moved here by LG::ClockShift (an LD_PRELOAD
# library: gettimeofday() in nginx only; its timers are left alone).
use strict;
use warnings;
use lib 't/lib';

use Test::More;
use Mojo::Date;
use Time::HiRes qw(sleep time);
use LG::ClockShift qw(shift_clock);
use LG::Stack;
use LG::Provision;

my $s = LG::Stack->new(STRIPE_TIMEOUT => '30s',
                       HTTP_EXTRA => 'linegate_reconcile_delay 0;')->start;
my $p = LG::Provision->new($s);
my $r = $s->redis;
$s->ua->request_timeout(60)->inactivity_timeout(60);

my $LEASE = 'lg:{fleet}:reconcile:lease';
my $n = 0;

# a purchase whose outcome was unknown, and no subscription at Stripe:
# its lookup is its one Stripe call (no_subscription)
sub queue {
    my ($account, $sub) = @_;
    $r->xadd('lg:{fleet}:reconcile', '*', account => $account,
             subscription_id => $sub, phone_number => '',
             worker_id => sprintf('worker_%024d', ++$n),
             reason => 'stripe_outcome_unknown', idempotency_key => '',
             customer => "cus_$account", at => '2026-01-01T00:00:00.000Z');
}

sub run_during {
    my ($poll) = @_;
    return $p->during(
        [POST => '/_linegate/reconciliation/run',
         {Authorization => 'Bearer ' . $s->operator_token}],
        $poll, 30);
}

subtest 'the clock shifter moves nginx\'s wall clock' => sub {
    shift_clock(3_600_000);
    sleep 0.2;
    my $date = Mojo::Date->new($s->ua->get($s->url('/clock-probe'))
                          ->res->headers->date // "")->epoch;
    shift_clock(0);
    ok($date && $date - time > 3500, 'nginx\'s Date an hour ahead')
        or BAIL_OUT('the clock shifter does not reach nginx');
};

subtest 'the wall clock an hour forward mid-run: the budget unspent' =>
sub {
    queue('acct_fwd1', 'sub_clkfwd1');
    queue('acct_fwd2', 'sub_clkfwd2');
    queue('acct_fwd3', 'sub_clkfwd3');
    $p->fault(method => 'GET', path_prefix => '/v1/subscriptions/sub_clkfwd1',
              latency_ms => 1500);

    my ($tx, $done) = run_during(sub {
        return 0 unless $s->stub_held(qr{^/v1/subscriptions/sub_clkfwd1});
        shift_clock(3_600_000);
        return 1;
    });
    $p->clear_faults;
    shift_clock(0);

    ok($done, 'Stripe held the first lookup') or return;
    is($tx && $tx->res->code, 200, 'the run answered 200') or return;
    my $b = $tx->res->json // {};
    for my $i (1 .. 3) {
        is($p->entry_of($b, "acct_fwd$i")->{outcome}, 'no_subscription',
           "entry $i settled in that run, 2 s into it")
            or diag explain $b;
    }
};

subtest 'the wall clock 5 s back mid-run: the lease still renewed' =>
sub {
    # the first lookup held past the 5 s after which a Stripe step
    # renews the lease: the second one's renews it first. (5 s back,
    # not an hour: the entries' age, linegate_reconcile_delay, is rightly
    # read on the wall clock, against their stream ids, and an entry
    # from the future is left for a later run)
    queue('acct_back1', 'sub_clkback1');
    queue('acct_back2', 'sub_clkback2');
    $p->fault(method => 'GET',
              path_prefix => '/v1/subscriptions/sub_clkback1',
              latency_ms => 6500);
    $p->fault(method => 'GET',
              path_prefix => '/v1/subscriptions/sub_clkback2',
              latency_ms => 2000);

    my ($shifted, $ttl);
    my ($tx, $done) = run_during(sub {
        unless ($shifted) {
            return 0
                unless $s->stub_held(qr{^/v1/subscriptions/sub_clkback1});
            shift_clock(-5000);
            $shifted = 1;
        }
        return 0 unless $s->stub_held(qr{^/v1/subscriptions/sub_clkback2});
        $ttl = $r->pttl($LEASE);
        return 1;
    });
    $p->clear_faults;
    shift_clock(0);

    ok($done && defined $ttl, 'Stripe held the second lookup') or return;
    cmp_ok($ttl, '>', 57000,
           "the lease renewed before it, 6.5 s after it was taken "
           . "(TTL $ttl ms)");
    is($tx && $tx->res->code, 200, 'the run answered 200') or return;
    my $b = $tx->res->json // {};
    is($p->entry_of($b, "acct_back$_")->{outcome}, 'no_subscription',
       "entry $_ settled") for 1 .. 2;
    is($r->get($LEASE), undef, 'the lease given back');
};

$s->stop;

done_testing;
