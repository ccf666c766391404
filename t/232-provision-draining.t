# Confirm on a draining worker (issue 13): nginx is reloaded while Stripe
# works on a subscription, and Redis goes away and comes back (restarted
# from its dump) before the confirm can write what Stripe did. The old
# worker keeps the request's work: the paid line is recorded, a declined
# purchase's number and slot are given back, once Redis is back; the
# answer never claims what did not happen.
use strict;
use warnings;
use lib 't/lib';

use Test::More;
use Time::HiRes qw(sleep time);
use LG::Stack;
use LG::Test;
use LG::Provision qw(now_ms);

# Redis stays down for seconds here: on Sentinel (LG_REDIS=sentinel) that
# is a failover, which t/036 covers; this file keeps one Redis
my $s = LG::Stack->new(STRIPE_TIMEOUT => '3s', redis => 'single')->start;
my $p = LG::Provision->new($s);
my $r = $s->redis;

$p->inventory($p->numbers(10));

sub subs_of {
    my ($id) = @_;
    return grep { ($_->{metadata}{account_id} // '') eq $id }
           $p->subscriptions;
}

# Start a confirm; once its number is reserved (Stripe is working on
# the subscription), reload nginx and take Redis away (saved first, so it
# comes back with its data); bring Redis back after $down seconds.
sub confirm_through_outage {
    my ($a, $tok, $down) = @_;

    my $reloaded = 0;
    my ($tx, $done) = $p->during($p->confirm_req($a, $tok), sub {
        return 0 unless @{ $p->reservations($a->{id}) };
        kill 'HUP', $s->{pids}{nginx};
        $s->redis->save;
        $s->stop_redis;
        $reloaded = time;
        return 1;
    }, 5);
    ok($done, 'reloaded and Redis stopped while Stripe worked');

    # the answer came while Redis was down (or it is back already)
    my $left = $reloaded + $down - time;
    sleep $left if $left > 0;
    my $from = length $s->error_log;
    $s->start_redis;
    $r = $s->redis;
    $s->wait_redis_connected($from, 30);

    return $tx;
}

# poll $cond for at most 30 s: generous, as a loaded machine runs the
# workers' steps (a reload, a reconnect, a durable write) seconds late
sub eventually { return LG::Test::eventually($_[0], 30) }

# Only the new workers left (the reload's old ones exited) and both
# connected to Redis again (their backoff after a restart), as the
# metrics' gauge says: the next confirm meets a connected worker
# whichever it reaches.
sub both_connected {
    my $series = 'linegate_redis_connected{node="127.0.0.1:'
        . $s->redis_port . '"} 2';
    return eventually(sub {
        my @workers = split ' ', `pgrep -P $s->{pids}{nginx}`;
        return 0 unless @workers == 2;
        my $m = $s->ua->get($s->url('/metrics'))->res->body // '';
        index($m, "\n$series\n") >= 0;
    });
}

subtest 'paid while Redis was gone: recorded once it is back' => sub {
    my $a = $p->account('acct_drain');
    my $tok = $p->token_once_answering($a);
    $p->fault(latency_ms => 600, after_commit => 1);

    my $tx = confirm_through_outage($a, $tok, 2);
    my $b = $p->error_is($tx, 500, 'provisioning_failed', 'Redis gone');
    unlike($b->{message}, qr/has been queued/,
           'does not claim it was queued');
    my @subs = subs_of('acct_drain');
    is(scalar @subs, 1, 'Stripe charged');
    is($b->{subscription_id}, $subs[0]{id}, 'the answer names it');

    ok(eventually(sub {
        my $l = $p->lines('acct_drain')->{ $subs[0]{metadata}{worker_id} };
        $l && ($l->{subscription_id} // '') eq $subs[0]{id};
    }), 'the draining worker recorded the line once Redis was back');
    is_deeply($p->reservations('acct_drain'), [], 'no reservation left');
    is($r->zcard('lg:{acct:acct_drain}:prov'), 1, 'the slot counts');
    unlike($s->error_log, qr/\[alert\].*acct_drain/, 'no alert');
    $p->clear_faults;
};

subtest 'declined while Redis was gone: number and slot given back' => sub {
    ok(both_connected(), 'both workers connected to Redis');
    my $a = $p->account('acct_decl', decline => 1);
    my $tok = $p->token_once_answering($a);
    my $inv = $r->scard('lg:{fleet}:inventory');
    $p->fault(latency_ms => 600);

    my $tx = confirm_through_outage($a, $tok, 2);
    $p->error_is($tx, 402, 'payment_failed', 'declined');
    # the release, then the claim's settlement: two durable writes
    ok(eventually(sub {
        !@{ $p->reservations('acct_decl') }
            && !$r->zcard('lg:{acct:acct_decl}:prov')
            && !@{ $p->claims('acct_decl') }
    }), 'released once Redis was back');
    is($r->scard('lg:{fleet}:inventory'), $inv, 'the number is back');
    is(scalar subs_of('acct_decl'), 0, 'nothing charged');
    $p->clear_faults;
};

# RESERVE (pv_reserve.lua, the account's slot) spends the account's own
# token and reserves in one step, with the purchase's intent on one Redis,
# the confirm's first Redis step once the worker knows the credentials:
# its answer lost is a 503 after the release (then the intent's settle);
# the token was spent or not (the script may have run), never twice
subtest 'the reservation\'s step unanswered: 503, released' => sub {
    ok(both_connected(), 'both workers connected to Redis');
    my $a = $p->account('acct_tokpause');
    my $tok = $p->token_once_answering($a);
    # every worker knows the pair: AUTH needs no Redis
    $p->answer($p->limits($a), 200, "warm $_") for 1 .. 20;
    my $inv = $r->scard('lg:{fleet}:inventory');
    my $from = length $s->error_log;

    # scripts wait (they may write), longer than the command timeout
    $r->client('PAUSE', 1600, 'WRITE');
    my $t0 = time;
    $p->error_is($p->confirm($a, $tok), 503, 'store_unavailable',
                 'RESERVE unanswered');
    like(substr($s->error_log, $from),
         qr/no answer to the reservation step of account "acct_tokpause"/,
         'the reservation\'s step it was');
    my $left = $t0 + 1.7 - time;
    sleep $left if $left > 0;

    ok(eventually(sub { !@{ $p->reservations('acct_tokpause') } }),
       'nothing reserved once the release is answered');
    is($r->zcard('lg:{acct:acct_tokpause}:prov'), 0, 'no slot');
    is_deeply($p->claims('acct_tokpause'), [], 'no claim');
    ok(eventually(sub { !@{ $p->intents('acct_tokpause') } }),
       'no intent once its settle is answered');
    is($r->scard('lg:{fleet}:inventory'), $inv, 'no number taken');
    is(scalar subs_of('acct_tokpause'), 0, 'no charge');

    ok(both_connected(), 'both workers connected again');
    my $tx = $p->confirm($a, $tok);
    ok($tx->res->code == 200 || $tx->res->code == 410,
       'spent or not: the next confirm buys once or finds it used ('
       . $tx->res->code . ')');
};

# TOKEN (pv_token.lua, the token's own slot) runs first for a token of
# another slot (another account's): its answer lost is a 503 with
# nothing reserved, and the token, another account's, is kept
subtest 'the token\'s own step unanswered: 503, nothing reserved' => sub {
    ok(both_connected(), 'both workers connected to Redis');
    my $owner = $p->account('acct_tokowner');
    my $a = $p->account('acct_tokother');
    my $tok = $p->token_once_answering($owner);
    isnt($s->cluster_keyslot($p->token_key($owner, $tok)),
         $s->cluster_keyslot("lg:{acct:$a->{id}}"),
         'the token is not in the other account\'s slot');
    $p->answer($p->limits($a), 200, "warm $_") for 1 .. 20;
    my $from = length $s->error_log;

    $r->client('PAUSE', 1600, 'WRITE');
    my $t0 = time;
    $p->error_is($p->confirm($a, $tok), 503, 'store_unavailable',
                 'TOKEN unanswered');
    like(substr($s->error_log, $from),
         qr/no answer to the preview token's step of account "acct_tokother"/,
         'the token\'s step it was');
    my $left = $t0 + 1.7 - time;
    sleep $left if $left > 0;

    is_deeply($p->reservations('acct_tokother'), [], 'nothing reserved');
    is($r->zcard('lg:{acct:acct_tokother}:prov'), 0, 'no slot');
    ok($r->exists($p->token_key($owner, $tok)), 'the owner\'s token kept');

    ok(both_connected(), 'both workers connected again');
    $p->answer($p->confirm($owner, $tok), 200, 'its owner buys with it');
};

subtest 'Redis paused twice over: the record lands when it answers' => sub {
    ok(both_connected(), 'both workers connected to Redis');
    my $a = $p->account('acct_pause');
    my $tok = $p->token_once_answering($a);
    # Stripe slow enough that the reservation is seen on a loaded machine
    $p->fault(latency_ms => 1200);

    # the record times out (1 s), and so would a second write right after
    # it: the pause outlasts both
    my ($tx, $done) = $p->during($p->confirm_req($a, $tok), sub {
        return 0 unless @{ $p->reservations('acct_pause') };
        $r->client('PAUSE', 2600, 'ALL');
        return 1;
    });
    ok($done, 'Redis paused after the reservation');
    my $b = $p->error_is($tx, 500, 'provisioning_failed', 'Redis paused');
    unlike($b->{message}, qr/has been queued/, 'no false claim');

    ok(eventually(sub {
        my %l = map { ($_->{subscription_id} => 1) }
                values %{ $p->lines('acct_pause') };
        $l{ $b->{subscription_id} };
    }), 'recorded once Redis answered');
    is_deeply($p->reservations('acct_pause'), [], 'no reservation left');
    is(scalar(grep { $_->{account} eq 'acct_pause' } @{ $p->reconcile }), 0,
       'nothing to reconcile');
    unlike($s->error_log, qr/\[alert\].*acct_pause/, 'no alert');
    $p->clear_faults;
};

done_testing();
