# linegate_redis_wait with no replica answering: at most one WAIT in
# flight on a worker's connection. Redis runs a connection's WAIT to its
# end (its whole timeout, when no replica answers) before any command
# written after it. With one WAIT per acknowledged write, eight creations
# at once held the connection for eight timeouts in a row, and a read
# behind them waited for the sum: past linegate_redis_command_timeout it
# answered 503. Now a write made while a WAIT is in flight joins the
# next one, written when that one answers: the read waits for one WAIT,
# each creation for two at most. Each creation is still answered as an
# unknown outcome (no replica has it), and its retry with the same
# Idempotency-Key, once a replica is back, names the line it committed.
use strict;
use warnings;
use lib 't/lib';

use Test::More;
use Time::HiRes qw(time sleep);
use Mojo::Promise;
use Mojo::UserAgent;
use LG::Stack;
use LG::Test qw(:DEFAULT eventually);
use LG::Lines qw(body);

my $N = 8;             # creations at once, on the one worker
my $WAIT_MS = 250;     # linegate_redis_wait's timeout

# one worker: every request on the same Redis connection; the command
# timeout (1 s) above two WAITs (0.5 s), below the eight (2 s) that ran
# in a row before
my $s = LG::Stack->new(redis => 'sentinel', WORKERS => 1,
                       REDIS_COMMAND_TIMEOUT => '1000ms',
                       HTTP_EXTRA => "linegate_redis_wait 1 ${WAIT_MS}ms;")
                ->start;
my $l = LG::Lines->new($s);

ok($s->wait_sentinels_ready(30, 1), 'the sentinels see a replica in sync')
    or BAIL_OUT('no replica');
$s->follow_master;
my $r = $s->redis;

my @ws = map { $l->workspace("org_wait$_", plan => 'mini', customer => '') }
         1 .. $N;
my $reader = $l->workspace('org_wait_reader', plan => 'mini',
                           customer => '');
my $id = $l->created($reader, channelType => 'email',
                     email => 'reader@example.com');
# every API key met by the worker: the creations' first command is then
# their script, not a key's lookup
is($l->list($_)->res->code, 200, "$_->{id}: its key known") for @ws, $reader;
is($l->get($reader, $id)->res->code, 200, 'the read answers before');

my $waits = sub {
    ($r->info('commandstats')->{cmdstat_wait} // '') =~ /calls=(\d+)/;
    return $1 // 0;
};

# the replicas stop acknowledging (a partition, as far as WAIT knows)
my @pids = map { my $p = $_; map { $s->{pids}{$_} }
                 grep { /^redis_$p$/ } keys %{ $s->{pids} } }
           map { /port=(\d+)/ ? $1 : () }
           grep { defined }
           map { $r->info('replication')->{"slave$_"} } 0 .. 3;
ok(@pids, 'the replicas\' processes: ' . scalar @pids) or BAIL_OUT('none');

# $send's answer (a transaction) while no replica runs (SIGSTOP), and
# where the error log was before it
sub replicas_stopped {
    my ($send) = @_;
    my $from = length $s->error_log;
    kill 'STOP', @pids;
    my $tx = $send->();
    kill 'CONT', @pids;
    return ($tx, $from);
}
my $lines = { map { $_->{id} => $r->zcard("lg:{ws:$_->{id}}:lines") } @ws };
my $before = $waits->();
my $from = length $s->error_log;
kill 'STOP', @pids;

my $ua = Mojo::UserAgent->new(inactivity_timeout => 30, request_timeout => 30,
                              max_connections => 0);
my $create = sub {
    my ($w, $n) = @_;
    return $ua->build_tx(POST => $s->url('/api/line-requests') => {
        %{ $w->{auth} }, 'Idempotency-Key' => "wait-$n",
    } => json => body(channelType => 'email',
                      email => "wait$n\@example.com"));
};
my (@created, $read, $read_s);
my @p = map {
    my $i = $_;
    $ua->start_p($create->($ws[$i], $i))->then(sub { $created[$i] = shift });
} 0 .. $N - 1;
# the read once the first creation is committed (its WAIT in flight)
# and the others had 50 ms more to reach the worker: behind their WAITs
my $committed = sub {
    grep { $r->zcard("lg:{ws:$_->{id}}:lines") > $lines->{$_->{id}} } @ws;
};
my $in = Mojo::Promise->new;
my $poll;
$poll = Mojo::IOLoop->recurring(0.005 => sub {
    return unless $committed->();
    Mojo::IOLoop->remove($poll);
    $in->resolve;
});
push @p, $in->then(sub { Mojo::Promise->timer(0.05) })->then(sub {
    my $t0 = time;
    return $ua->start_p($ua->build_tx(GET => $s->url("/api/line-requests/$id")
                                      => $reader->{auth}))
        ->then(sub { $read = shift; $read_s = time - $t0 });
});
Mojo::Promise->all(@p)->wait;
kill 'CONT', @pids;
# every WAIT the worker wrote has run once the count holds still (the
# ones written one per write ran on after their creations timed out)
my $sent = $waits->();
for (1 .. 50) {
    sleep 0.6;
    last if $sent == (my $now = $waits->());
    $sent = $now;
}
$sent -= $before;

is($read->res->code, 200, 'the read behind the creations answers 200')
    or diag('after ' . sprintf('%.2f s: ', $read_s) . $read->res->body);
diag(sprintf 'the read answered in %.2f s', $read_s);
cmp_ok($sent, '<', $N, "fewer WAITs than acknowledged writes ($sent for $N)");
cmp_ok($sent, '>=', 1, 'WAIT was sent');
my @codes = map { $_->res->code // 0 } @created;
is_deeply(\@codes, [(503) x $N], 'each creation: an unknown outcome, 503');
is(scalar(grep { ($_->res->headers->header('Retry-After') // '') =~ /^\d+$/ }
           @created), $N, 'each with Retry-After');
my $log = substr $s->error_log, $from;
my $said = () = $log
    =~ /lr_create acknowledged by 0 of 1 replicas within $WAIT_MS ms/g;
is($said, $N, 'the log says why, for each creation')
    or diag($log);
unlike($log, qr/redis command timed out|WAIT not sent/,
       'none timed out, every WAIT written');

# the retries once a replica has them: the line each first try committed
ok($s->wait_sentinels_ready(30, 1), 'a replica in sync again');
for my $i (0 .. $N - 1) {
    my $w = $ws[$i];
    my $again;
    ok(eventually(sub {
        $again = $ua->start($create->($w, $i));
        $again->res->code == 201;
    }, 20), "$w->{id}: the retry with the same key: 201")
        or diag($again->res->code . ' ' . $again->res->body);
    my @live = $r->zrange("lg:{ws:$w->{id}}:lines", 0, -1);
    is(scalar @live, $lines->{$w->{id}} + 1, "$w->{id}: one line, not two");
}

# a key's revocation is a security answer: a 200 only once a replica has
# it (lost with its master, the key would authenticate again)
{
    my $w = $ws[0]{id};
    my $k = $s->op(POST => "/workspaces/$w/keys")->res->json;
    ok($k && $k->{keyId}, 'a key to revoke');
    my ($tx) = replicas_stopped(sub {
        $s->op(DELETE => "/workspaces/$w/keys/$k->{keyId}")
    });
    is($tx->res->code, 503, 'no replica acknowledged the revocation: 503')
        or diag($tx->res->body);
    ok(!$r->hexists("lg:{ws:$w}:keys", $k->{keyId}),
       'the master has it (an unknown outcome, as any unacknowledged write)');
    ok($s->wait_sentinels_ready(30, 1), 'a replica in sync again');
    is($s->op(DELETE => "/workspaces/$w/keys/$k->{keyId}")->res->code, 404,
       'asked again: revoked');
}

# a key's issue: the 201 hands out a key, so it comes only once a replica
# has the key's entry and its lookup (lost with its master, either one,
# the key shown would never authenticate). It did not wait: a 201 for a
# key no replica had.
{
    my $w = $ws[1]{id};
    my @before = $r->hkeys("lg:{ws:$w}:keys");
    ok($s->wait_sentinels_ready(30, 1), 'a replica in sync');
    my ($tx, $from) = replicas_stopped(sub {
        $s->op(POST => "/workspaces/$w/keys")
    });
    is($tx->res->code, 503, 'no replica acknowledged the key: 503')
        or diag($tx->res->body);
    ok(!defined(eval { $tx->res->json->{key} }), 'no key shown');
    like(substr($s->error_log, $from),
         qr/op_key_create acknowledged by 0 of 1 replicas/,
         'the log says why');
    ok($s->wait_sentinels_ready(30, 1), 'a replica in sync again');
    my $k;
    ok(eventually(sub {
        $k = $s->op(POST => "/workspaces/$w/keys")->res;
        $k->code == 201;
    }, 20), 'asked again: 201') or diag($k->body);
    my ($sent) = grep { $_ ne $k->json->{keyId} }
                 grep { my $x = $_; !grep { $_ eq $x } @before }
                 $r->hkeys("lg:{ws:$w}:keys");
    ok($sent, 'the unanswered one is listed (revocable), never shown');
}

# a workspace's or an account's PUT: the operator acts on the 200 (a
# subscription canceled, a plan changed); lost with its master, the old
# hash would serve again after a failover. It did not wait: a 200 no
# replica had.
ok($s->wait_sentinels_ready(30, 1), 'a replica in sync');
is($s->op(PUT => '/accounts/acct_wait', {plan => 'inbound_only'})->res->code,
   200, 'an account to change');
for my $t (['workspaces', $ws[2]{id}, "lg:{ws:$ws[2]{id}}",
            subscriptionStatus => 'canceled'],
           ['accounts', 'acct_wait', 'lg:{acct:acct_wait}',
            plan => 'agent_plus'])
{
    my ($kind, $name, $key, $field, $value) = @$t;
    ok($s->wait_sentinels_ready(30, 1), "$kind: a replica in sync");
    my ($tx, $from) = replicas_stopped(sub {
        $s->op(PUT => "/$kind/$name", {$field => $value})
    });
    is($tx->res->code, 503, "$kind: no replica acknowledged the PUT: 503")
        or diag($tx->res->body);
    is(eval { $tx->res->json->{code} }, 'STORE_UNAVAILABLE',
       "$kind: STORE_UNAVAILABLE");
    like($tx->res->headers->header('Retry-After') // '', qr/^\d+$/,
         "$kind: with Retry-After");
    like(substr($s->error_log, $from),
         qr/op_upsert acknowledged by 0 of 1 replicas/,
         "$kind: the log says why");
    is($r->hget($key, $field), $value,
       "$kind: the master has it (an unknown outcome)");
    ok($s->wait_sentinels_ready(30, 1), "$kind: a replica in sync again");
    my $again;
    ok(eventually(sub {
        $again = $s->op(PUT => "/$kind/$name", {$field => $value});
        $again->res->code == 200;
    }, 20), "$kind: asked again: 200") or diag($again->res->body);
}

# a number's removal from the inventory: the operator acts on the 200
# (gives the number back to its carrier, say); lost with its master, the
# number would be back in the inventory for a purchase to be sold it, as
# a purchase's claim lost with it would. It did not wait: a 200 no
# replica had.
{
    my $n = '+14155550199';
    ok($s->wait_sentinels_ready(30, 1), 'a replica in sync');
    $r->sadd('lg:{fleet}:inventory', $n);
    ok($s->wait_sentinels_ready(30, 1), 'the number on a replica too');
    my ($tx, $from) = replicas_stopped(sub {
        $s->op(DELETE => "/inventory/$n")
    });
    is($tx->res->code, 503, 'no replica acknowledged the removal: 503')
        or diag($tx->res->body);
    like(substr($s->error_log, $from),
         qr/a command acknowledged by 0 of 1 replicas/, 'the log says why');
    ok(!$r->sismember('lg:{fleet}:inventory', $n),
       'the master has it (an unknown outcome)');
    ok($s->wait_sentinels_ready(30, 1), 'a replica in sync again');
    is($s->op(DELETE => "/inventory/$n")->res->code, 404,
       'asked again: removed');
}

# payment_link answers an open invoice's link again (reused: true) only
# once a replica has every write before it: that link may be a reissue
# whose store the replicas never acknowledged (answered 503). The
# answer was a read, so no WAIT covered it: lost with its master, the
# request would name the old invoice and the new one's payment would
# find no request.
{
    my $w = $l->workspace('org_wait_link');
    my ($id, $c) = $l->awaiting($w);
    ok($id && $c->{paymentUrl}, 'a request awaiting payment') or diag(
        explain $c);
    ok($s->wait_sentinels_ready(30, 1), 'a replica in sync');
    my $before = $waits->();
    my ($tx) = replicas_stopped(sub { $l->manage($w, $id, 'payment_link') });
    is($tx->res->code, 503, 'no replica acknowledged: 503')
        or diag($tx->res->body);
    cmp_ok($waits->() - $before, '>=', 1, 'a WAIT was sent');
    ok($s->wait_sentinels_ready(30, 1), 'a replica in sync again');
    my $again;
    ok(eventually(sub {
        $again = $l->manage($w, $id, 'payment_link');
        $again->res->code == 200;
    }, 20), 'asked again: 200') or diag($again->res->body);
    my $b = $again->res->json // {};
    is($b->{reused}, Mojo::JSON->true, 'the same link, reused');
    is($b->{paymentUrl}, $c->{paymentUrl}, 'the link of the request');
}

# payment_link on a void invoice claims the reissue (lr_reissue_claim)
# before it bills anything. The claim is acknowledged, as the fence of
# an invoice to void is: lost with its master, another payment_link could
# claim the reissue too and both issue invoices. No replica has it: 503
# with Retry-After, and nothing issued at Stripe. It was not acknowledged:
# the new invoice was made, then voided once its index's WAIT failed.
{
    my $w = $l->workspace('org_wait_claim');
    my ($id, $c) = $l->awaiting($w);
    my $old = $c->{invoiceId} // '';
    ok($id && $old, 'a request awaiting payment') or diag(explain $c);
    $l->invoice_do($old, 'void');
    ok($s->wait_sentinels_ready(30, 1), 'a replica in sync');
    my ($tx, $from) = replicas_stopped(sub {
        $l->manage($w, $id, 'payment_link')
    });
    is($tx->res->code, 503, 'no replica acknowledged the claim: 503')
        or diag($tx->res->body);
    is(eval { $tx->res->json->{code} }, 'STORE_UNAVAILABLE',
       'STORE_UNAVAILABLE');
    like($tx->res->headers->header('Retry-After') // '', qr/^\d+$/,
         'with Retry-After');
    is_deeply([map { $_->{id} } $l->invoices($w->{customer})], [$old],
              'no new invoice at Stripe');
    like(substr($s->error_log, $from),
         qr/lr_reissue_claim acknowledged by 0 of 1 replicas/,
         'the log says why');
    is($l->lr($w, $id)->{invoiceId}, $old, 'the request names the old one');

    # the master took the claim (an unknown outcome): released by its
    # name (reissueBy), lapsed, so that a retry need not wait for the
    # claim's 60 s hold; the next claim looks for what it may have left
    ok($s->wait_sentinels_ready(30, 1), 'a replica in sync again');
    my $said = qq{reissue claim of line request "$id" whose reply was not }
               . 'known is released lapsed';
    ok(eventually(sub {
        index($s->error_log, $said) >= 0
    }, 10), 'the claim released by its name') or diag($s->error_log);
    my $h = $l->lr($w, $id);
    is($h->{reissueAt}, '0', 'released lapsed: reissueAt 0');
    ok(!exists $h->{reissueBy}, 'its name gone');
    my $again = $l->manage($w, $id, 'payment_link');
    is($again->res->code, 200, 'asked again: a new link at once, no 409')
        or diag($again->res->body);
    isnt($l->lr($w, $id)->{invoiceId}, $old, 'the request names a new one');
    is(scalar $l->invoices($w->{customer}), 2, 'one issued, by the retry');
}

done_testing;
