# A reconciliation run's lease (lg:{fleet}:reconcile:lease, 60 s) while
# one of its Stripe calls is in flight. The run renews it before each
# Stripe step once 5 s old, but a single call is bounded only by the
# Stripe location's timeouts: a call longer than about 55 s outlived the
# lease, and another run could take it and be at the same entry (two
# cancellations, two refunds under one Idempotency-Key). While a call is
# in flight a timer of the run renews the lease every 20 s, only while it
# is still the run's (docs/operator.md, "Reconciliation"), and stops with
# the call (or the request).
#
# Stripe holds one lookup 24 s here (the Stripe location waits 60 s): 21 s
# into it the lease has been renewed once (its time to live back near
# 60 s, where it was about 39 s), still the run's.
use strict;
use warnings;
use lib 't/lib';

use Test::More;
use Time::HiRes qw(sleep time);
use LG::Stack;
use LG::Provision;

my $HOLD = 24;      # s, the lookup Stripe holds
my $LOOK = 21;      # s into it: one renewal (20 s) behind, not two
my $LEASE = 'lg:{fleet}:reconcile:lease';

my $s = LG::Stack->new(STRIPE_TIMEOUT => '60s',
                       HTTP_EXTRA => 'linegate_reconcile_delay 0;')->start;
my $p = LG::Provision->new($s);
my $r = $s->redis;
$s->ua->request_timeout(90)->inactivity_timeout(90);

subtest 'a Stripe call longer than the lease: renewed while it lasts' =>
sub {
    # a purchase whose outcome was unknown: its lookup is the one call
    $r->xadd('lg:{fleet}:reconcile', '*', account => 'acct_slow',
             subscription_id => 'sub_slowlookup', phone_number => '',
             worker_id => 'worker_' . ('0' x 23) . '2',
             reason => 'stripe_outcome_unknown', idempotency_key => '',
             customer => 'cus_slow', at => '2026-01-01T00:00:00.000Z');
    $p->fault(method => 'GET', path_prefix => '/v1/subscriptions/sub_slow',
              latency_ms => $HOLD * 1000);

    my ($held, $holder, $ttl, $still);
    my ($tx, $done) = $p->during(
        [POST => '/_linegate/reconciliation/run',
         {Authorization => 'Bearer ' . $s->operator_token}],
        sub {
            unless ($held) {
                return 0 unless $s->stub_held(qr{^/v1/subscriptions/sub_s});
                $held = time;
                $holder = $r->get($LEASE);
            }
            return 0 if time - $held < $LOOK;
            $ttl = $r->pttl($LEASE);
            $still = $r->get($LEASE);
            return 1;
        }, 60);
    my $ended = time;
    $p->clear_faults;

    ok($done && $held, 'Stripe held the lookup') or return;
    ok(defined $holder, 'the run held the lease when the call began');
    cmp_ok($ttl, '>', 45000,
           "$LOOK s into the call the lease has been renewed (TTL $ttl ms)");
    is($still, $holder, 'still the run\'s own');

    is($tx->res->code, 200, 'the run answered 200');
    my $e = $p->entry_of($tx->res->json // {}, 'acct_slow');
    is($e->{outcome}, 'no_subscription', 'its entry settled after the call')
        or diag explain $tx->res->json;
    is($r->get($LEASE), undef, 'the lease given back');
    like($s->error_log, qr/lease renewed while Stripe holds its call/,
         'the renewal logged');

    # the timer stopped with the call: 40 s after the call began it would
    # have fired again, on a request freed since
    sleep($held + 41 - time) if time < $held + 41;
    my @renewals = $s->error_log =~ /lease renewed while Stripe holds/g;
    is(scalar @renewals, 1, 'renewed once, nothing after the call');
    is($r->get($LEASE), undef, 'no lease taken again');
    unlike($s->error_log, qr/exited on signal/,
           'no worker crashed');
    ok($ended - $held < $HOLD + 10, 'the call ended when Stripe answered');
    $r->del('lg:{fleet}:reconcile');
};

done_testing;
