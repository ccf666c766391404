#!/usr/bin/perl
# Redis failures around a purchase (issue 13, DESIGN 7): a write that must
# happen is sent again until Redis answers (a durable write), also after
# Redis was down and came back; a worker draining after a reload keeps
# (and re-establishes) its Redis connection to finish the requests it
# still holds.
use strict;
use warnings;
use lib 't/lib';

use Mojo::IOLoop;
use Mojo::JSON qw(encode_json);
use Test::More;
use Time::HiRes qw(sleep time);
use LG::Stack;
use LG::Test;
use LG::Provision;

sub wait_for {
    my ($cond, $secs) = @_;
    my $until = time + ($secs // 30);
    while (time < $until) {
        my $ok = eval { $cond->() };
        return 1 if $ok;
        sleep 0.1;
    }
    return 0;
}

sub reconcile_of {
    my ($p, $id) = @_;
    return grep { $_->{account} eq $id } @{ $p->reconcile };
}

# run the event loop until stopped, at most $secs (the guard timer is
# removed: a later loop must not be stopped by it)
sub run_loop {
    my ($secs) = @_;
    my $guard = Mojo::IOLoop->timer($secs => sub { Mojo::IOLoop->stop });
    Mojo::IOLoop->start;
    Mojo::IOLoop->remove($guard);
}

# once the purchase holds its reservation (it then waits on Stripe),
# run $code once
sub once_reserved {
    my ($s, $id, $code) = @_;
    my $r = Redis->new(server => '127.0.0.1:' . $s->redis_port);
    my $t;
    $t = Mojo::IOLoop->recurring(0.05 => sub {
        return unless eval { $r->zcard("lg:{acct:$id}:prov") };
        Mojo::IOLoop->remove($t);
        $code->();
    });
}

# a confirm sent without waiting; $done->($tx) when it is answered
sub confirm_later {
    my ($s, $p, $a, $tok, $done) = @_;
    my $ua = Mojo::UserAgent->new(inactivity_timeout => 20,
                                  request_timeout => 20);
    my $tx = $ua->build_tx(POST => $s->url('/accounts/lines/provision-confirm')
                           => $p->headers($a)
                           => json => {preview_token => $tok});
    $ua->start($tx => sub { $done->($_[1]); Mojo::IOLoop->stop });
    return $ua;
}

subtest 'Redis down when the purchase is recorded: the reconcile entry '
      . 'lands once Redis is back' => sub {
    my $s = LG::Stack->new(STRIPE_TIMEOUT => '5s')->start;
    my $p = LG::Provision->new($s);
    $p->inventory($p->numbers(5));
    my $id = 'acct_durable';
    my $a = $p->account($id);
    my $tok = $p->token($a);

    # Stripe creates the subscription, answers after 1.5 s; meanwhile
    # Redis goes away: neither the record nor the reconcile entry can be
    # written while the request lives
    $p->fault(latency_ms => 1500, after_commit => 1);

    my $res;
    my $ua = confirm_later($s, $p, $a, $tok, sub { $res = $_[0]->res });
    once_reserved($s, $id, sub { $s->stop_redis });
    run_loop(15);

    is($res && $res->code, 500, 'answered 500');
    is($res && $res->json->{error}, 'provisioning_failed',
       'provisioning_failed, with the subscription id')
        or diag($res && $res->body);
    my $sub = $res && $res->json->{subscription_id};
    like($sub // '', qr/^sub_/, 'the subscription id');

    like($s->error_log,
         qr/not recorded yet: the record is re-sent until Redis answers/,
         'logged: waits for Redis');
    unlike($s->error_log, qr/neither recorded nor queued/, 'no alert');

    # Redis comes back empty: the entry is written all the same
    $s->start_redis;
    ok(wait_for(sub { scalar reconcile_of($p, $id) }, 30),
       'the reconcile entry landed');
    my @q = reconcile_of($p, $id);
    is($q[0]{subscription_id}, $sub, 'for the subscription');
    # the record ran on the empty Redis: no reservation to turn into a
    # line, so it queued the purchase (pv_record, one step)
    is($q[0]{reason}, 'reservation_missing', 'reason');
    like($s->error_log, qr/durable write "the record of a paid line" done/,
         'logged: done');
};

subtest 'a draining worker reconnects to finish its request' => sub {
    my $s = LG::Stack->new(WORKERS => 1, STRIPE_TIMEOUT => '5s')->start;
    my $p = LG::Provision->new($s);
    $p->inventory($p->numbers(5));
    my $id = 'acct_drain';
    my $a = $p->account($id);
    my $tok = $p->token($a);
    my $from = length $s->error_log;

    # the request waits on Stripe; nginx reloads (the old worker drains
    # with the request), then Redis drops every client connection
    $p->fault(latency_ms => 3000, after_commit => 1);

    my $res;
    my $ua = confirm_later($s, $p, $a, $tok, sub { $res = $_[0]->res });
    once_reserved($s, $id, sub {
        kill 'HUP', $s->{pids}{nginx};
        Mojo::IOLoop->timer(0.6 => sub {
            my $r = Redis->new(server => '127.0.0.1:' . $s->redis_port);
            $r->client_kill('TYPE', 'normal');
        });
    });
    run_loop(15);

    like(substr($s->error_log, $from), qr/gracefully shutting down/,
         'the old worker drained');
    is($res && $res->code, 200, 'the purchase is answered 200')
        or diag($res && $res->body);
    my $b = ($res && $res->json) // {};
    delete $s->{redis};
    is($p->lines($id)->{$b->{worker_id} // '-'}{subscription_id},
       $b->{subscription_id}, 'and recorded');
    is_deeply($p->reservations($id), [], 'no reservation left');
};

subtest 'a draining worker, Redis restarted: the writes still land' => sub {
    my $s = LG::Stack->new(WORKERS => 1, STRIPE_TIMEOUT => '5s')->start;
    my $p = LG::Provision->new($s);
    $p->inventory($p->numbers(5));
    my $id = 'acct_drain2';
    my $a = $p->account($id);
    my $tok = $p->token($a);
    my $from = length $s->error_log;

    $p->fault(latency_ms => 3000, after_commit => 1);

    my $res;
    my $ua = confirm_later($s, $p, $a, $tok, sub { $res = $_[0]->res });
    once_reserved($s, $id, sub {
        kill 'HUP', $s->{pids}{nginx};
        Mojo::IOLoop->timer(0.6 => sub { $s->stop_redis; $s->start_redis });
    });
    run_loop(15);

    # the restarted Redis lost the reservation: the old worker queues
    # the paid subscription for reconciliation instead of losing it
    like(substr($s->error_log, $from), qr/gracefully shutting down/,
         'the old worker drained');
    is($res && $res->code, 500, 'answered 500') or diag('no answer');
    my $b = ($res && $res->json) // {};
    is($b->{error}, 'provisioning_failed', 'provisioning_failed')
        or diag($res && $res->body);
    like($b->{message} // '', qr/has been queued for reconciliation/,
         'queued, says the answer');
    my $sub = $b->{subscription_id};
    like($sub // '', qr/^sub_/, 'the subscription id is answered');
    my $logged = quotemeta($sub // '-') . qr/ of account "$id" \(\w+\)/
                 . qr/ not recorded \(reservation_missing\)/;
    like(substr($s->error_log, $from), qr/subscription $logged/,
         'logged: the reservation was lost with the restart');
    ok(wait_for(sub { scalar reconcile_of($p, $id) }, 30),
       'its reconcile entry is written');
    my @q = reconcile_of($p, $id);
    is(scalar @q, 1, 'one entry');
    is($q[0]{subscription_id}, $sub, 'for the subscription');
    is($q[0]{reason}, 'reservation_missing', 'reason: reservation_missing');
    unlike($s->error_log, qr/neither recorded nor queued/, 'no alert');
};

subtest 'a request freed with its command in flight: the reply goes nowhere'
    => sub {
    # freed memory is overwritten: a reply handed to a freed request
    # crashes the worker instead of passing unnoticed
    local $ENV{MALLOC_PERTURB_} = 165;
    my $s = LG::Stack->new(WORKERS => 1, stub => 0,
                           MAIN_EXTRA => 'worker_shutdown_timeout 100ms;')
        ->start;
    my $from = length $s->error_log;

    # the command waits on a paused Redis; the reload's shutdown timer
    # closes the request's connection (the request is freed) before
    # Redis answers
    $s->redis->client_pause(700);

    my $done;
    my $ua = Mojo::UserAgent->new(request_timeout => 5);
    $ua->get($s->url('/_linegate/inventory') =>
             {Authorization => 'Bearer ' . $s->operator_token} =>
             sub { $done = 1 });
    Mojo::IOLoop->timer(0.1 => sub { kill 'HUP', $s->{pids}{nginx} });
    run_loop(1.5);

    ok(wait_for(sub { $s->error_log =~ /worker process \d+ exited/ }, 20),
       'the old worker exited');
    my $log = substr $s->error_log, $from;
    unlike($log, qr/exited on signal/, 'without crashing');
    like($log, qr/gracefully shutting down/, 'after draining');

    # and the new worker serves
    my $ok = wait_for(sub {
        Mojo::UserAgent->new->get($s->url('/_linegate/inventory') =>
            {Authorization => 'Bearer ' . $s->operator_token})
            ->res->code == 200
    }, 5);
    ok($ok, 'the new worker answers');
};

done_testing;
