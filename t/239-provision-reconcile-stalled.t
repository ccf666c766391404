# A confirm stalled between RESERVE and CLAIM for longer than
# linegate_reconcile_lost_after, while a reconciliation sweep takes its
# intent "<A> <worker> -" for a dead worker's. The sweep releases the
# reservation in the account's slot (pv_inspect) one step before it drops
# the intent in the fleet's (pv_settle): a CLAIM landing in between found
# the intent still there, took a number with no reservation behind it,
# and the purchase was charged at Stripe before RECORD found the slot
# gone (500 provisioning_failed, reservation_missing, a refund for a later
# run). CLAIM now refuses an intent that old (pv_claim's {3}): nothing is
# taken, Stripe is never asked, 503 (docs/provisioning-api.md, CLAIM).
#
# The stall: Redis holds the RESERVE (CLIENT PAUSE WRITE) until the one
# worker is stopped (SIGSTOP); then the RESERVE runs, its answer waits in
# the socket; once the intent is older than lost_after, the sweep's
# account step runs (pv_inspect, as a run would); the worker goes on
# (SIGCONT) and sends CLAIM. The command timeout is longer than the
# stall, so that the worker reads the answer first.
use strict;
use warnings;
use lib 't/lib';

use Test::More;
use LG::Stack;
use LG::Test qw(:DEFAULT eventually lua_script scored_before);
use LG::Provision;

# One Redis (or Sentinel's master): RESERVE writes the intent in its own
# step, and one CLIENT PAUSE holds it. On a cluster INTENT is a step of
# its own, on the fleet's master, and the pause would hold another step
# than this one (the script's answer: t/233).
plan skip_all => 'the stall is staged on one Redis'
    if ($ENV{LG_REDIS} // 'single') eq 'cluster';

# A keepalive tick longer than the stall: a PING the worker wrote behind
# its held write, before the SIGSTOP, is answered only after it, and a
# worker woken by SIGCONT (epoll_wait's EINTR) runs its expired timers
# before it reads: the harness's 1 s tick dropped the connection as
# "keepalive PING unanswered" (t/127 once), the request failing for that
# rather than for its age.
my $s = LG::Stack->new(WORKERS => 1, REDIS_COMMAND_TIMEOUT => '5s',
                       REDIS_KEEPALIVE => '10s',
                       HTTP_EXTRA => 'linegate_reconcile_delay 0; '
                           . 'linegate_reconcile_lost_after 1s;')->start;
my $p = LG::Provision->new($s);
my $r = $s->redis;

$p->inventory($p->numbers(5));

subtest 'a confirm stalled past lost_after: its late claim takes nothing'
=> sub {
    my $a = $p->account('acct_stall');
    # the worker knows the pair: AUTH needs no Redis
    $p->answer($p->limits($a), 200, "warm $_") for 1 .. 5;
    my $tok = $p->token($a);
    my $inv = $r->scard('lg:{fleet}:inventory');
    my ($worker) = split ' ', `pgrep -P $s->{pids}{nginx}`;
    ok($worker, 'the worker');

    # Staged on what Redis shows, not on time (a sleep of 0.3 s for "the
    # RESERVE is sent" was flaky under load): paused until the worker's
    # RESERVE is held, unpaused once the worker is stopped
    my ($stopped, $released, $list) = (0, undef, '');
    $r->client('PAUSE', 10_000, 'WRITE');
    my ($tx) = $p->during($p->confirm_req($a, $tok), sub {
        # the RESERVE sent, held by Redis, then run (its intent written)
        return 0 unless $s->stop_held_worker(
            sub { @{ $p->intents('acct_stall') } > 0 }, 10_000, \$list);
        $stopped = 1;
        # the RESERVE ran (its answer waits in the socket), its intent
        # older than lost_after (1 s) by its score, the clock CLAIM's
        # age is measured with
        my $intent = scored_before($r, 'lg:{fleet}:pv:inflight',
                                   sub { $_[0] =~ /^acct_stall \S+ -$/ },
                                   1000, 10);
        my ($w) = (split ' ', $intent // '')[1];
        if ($w) {
            my $k = 'lg:{acct:acct_stall}';
            my $res = [$r->eval(lua_script('pv_inspect'), 5, $k, "$k:prov",
                                "$k:resv:$w", "$k:line:$w",
                                "$k:reconcile:w:$w", $w, '1', 'acct_stall',
                                '-')];
            $released = $res->[5];
        }
        kill 'CONT', $worker;
        return 1;
    }, 15);
    $r->client('UNPAUSE');

    ok($stopped, 'the worker was stopped with its RESERVE in flight')
        or diag $list;
    is($released, 1, 'the sweep released the intent\'s reservation');
    ok($tx, 'answered');
    is($tx->res->code, 503, 'the late claim refused: 503')
        or diag $tx->res->body;
    is(scalar $p->subs_of('acct_stall'), 0, 'nothing charged at Stripe');
    is($r->scard('lg:{fleet}:inventory'), $inv, 'no number taken');
    is_deeply($p->claims('acct_stall'), [], 'no claim');
    ok(eventually(sub { !@{ $p->intents('acct_stall') } }, 10),
       'the intent settled');
    is_deeply($p->reservations('acct_stall'), [], 'nothing reserved');
    is($r->zcard('lg:{acct:acct_stall}:prov'), 0, 'no slot held');
    is_deeply([$p->queued_of('acct_stall')], [], 'nothing to reconcile');
    my $late = 'of account "acct_stall" outlived'
               . ' linegate_reconcile_lost_after before it claimed a number';
    like($s->error_log, qr/purchase \S+ \Q$late\E/, 'logged');

    # a confirm that is not late buys as before
    $p->answer($p->confirm($a, $p->token($a)), 200, 'an ordinary confirm');
};

done_testing;
