#!/usr/bin/perl
# linegate_stripe_timeout: one Stripe call as a whole. nginx's proxy
# timeouts bound each read, so an answer that drips (Stripe, or a proxy
# between, one byte every few hundred ms, each read well within
# proxy_read_timeout) used to hold the request, its number and its slot
# for as long as it dripped (minutes here; the client gave up first).
# Now the call is ended at the deadline as proxy_read_timeout ends it,
# and the endpoint takes its "no answer from Stripe" branch: a confirm
# asks again with the same Idempotency-Key, then answers 502 and queues
# the purchase (stripe_outcome_unknown), its number and slot back; a
# Lines creation answers 502 BILLING_UNAVAILABLE, its reservation gone.
use strict;
use warnings;
use lib 't/lib';

use Test::More;
use IO::Socket::INET;
use Mojo::JSON ();
use POSIX qw(WNOHANG);
use Time::HiRes qw(sleep time);
use LG::Stack;
use LG::Test;
use LG::Provision;
use LG::Lines qw(body);

# a call ends after 1 s whatever drips; each read waits at most 3 s
my $s = LG::Stack->new(
    STRIPE_TIMEOUT => '3s',
    HTTP_EXTRA     => 'linegate_stripe_timeout 1s;',
)->start;
my $p = LG::Provision->new($s);
my $l = LG::Lines->new($s);
my $r = $s->redis;

my $TOTAL = 10;
$p->inventory($p->numbers($TOTAL));

# one byte every 200 ms: a Stripe answer of a kilobyte or more takes
# minutes to come whole
my @DRIP = (drip_ms => 200, drip_bytes => 1, count => -1);

# two calls of the confirm (the first and its retry), each ended at 1 s:
# well under the client's 10 s. nginx arms proxy_read_timeout once for
# all the headers: headers that drip took 3 s a call (6 s) before, a
# body that drips as long as it dripped (the client gave up at 10 s).
my $WITHIN = 5;

for my $case (['headers and body drip', []],
              ['the body drips', [drip_body => 1]])
{
    my ($what, $extra) = @$case;

    subtest "confirm: $what" => sub {
        (my $id = "acct_drip_$what") =~ s/\W+/_/g;
        my $a = $p->account($id);
        my $tok = $p->token($a);
        my $from = length $s->error_log;
        $p->fault(@DRIP, @$extra);

        my $t0 = time;
        my $tx = $p->confirm($a, $tok);
        my $took = time - $t0;
        $p->clear_faults;

        ok(!$tx->error || $tx->res->code, 'answered')
            or diag('error: ' . ($tx->error->{message} // '?'));
        cmp_ok($took, '<', $WITHIN, "within the deadline ($took s)");
        $p->error_is($tx, 502, 'billing_unavailable', $what);
        $p->released($id, $what, $TOTAL);

        my @subs = $p->subs_of($id);
        is(scalar @subs, 1, 'Stripe made one subscription (asked again '
                            . 'with the same key)');
        my @q = $p->queued_of($id);
        is(scalar @q, 1, 'one reconcile entry');
        is($q[0]{reason} // '', 'stripe_outcome_unknown',
           'queued stripe_outcome_unknown');
        like(substr($s->error_log, $from),
             qr/Stripe POST "\/_stripe\/v1\/subscriptions" still unanswered after linegate_stripe_timeout \(1000 ms\): ended/,
             'logged');
    };
}

# the client gone meanwhile (HTTP/1 close): the request's steps still
# run, and the call still ends at the deadline, not when the drip does
subtest 'confirm: the client leaves while the answer drips' => sub {
    my $id = 'acct_drip_gone';
    my $a = $p->account($id);
    my $tok = $p->token($a);
    $p->fault(@DRIP, drip_body => 1);

    my $json = Mojo::JSON::encode_json({preview_token => $tok});
    my $h = $p->headers($a);
    my $c = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                  PeerPort => $s->port) or die $!;
    print $c "POST /accounts/lines/provision-confirm HTTP/1.1\r\n"
        . "Host: 127.0.0.1\r\n"
        . join('', map { "$_: $h->{$_}\r\n" } sort keys %$h)
        . "Content-Type: application/json\r\n"
        . 'Content-Length: ' . length($json) . "\r\n\r\n$json";
    my $t0 = time;
    sleep 0.05 until $r->zcard("lg:{acct:$id}:prov") || time > $t0 + 5;
    close $c;

    sleep 0.1 until ($p->queued_of($id)
                     && !$r->zcard("lg:{acct:$id}:prov"))
                    || time > $t0 + 10;
    my $took = time - $t0;
    $p->clear_faults;
    cmp_ok($took, '<', $WITHIN, "settled within the deadline ($took s)");
    my @q = $p->queued_of($id);
    is($q[0]{reason} // '', 'stripe_outcome_unknown',
       'queued stripe_outcome_unknown');
    $p->released($id, 'client gone', $TOTAL);
};

subtest 'Lines creation: the invoice item drips' => sub {
    my $w = $l->workspace('org_drip');
    my $from = length $s->error_log;
    $l->fault(path_prefix => '/v1/invoiceitems', @DRIP, drip_body => 1);

    my $t0 = time;
    my $tx = $l->create($w, body(channelType => 'email',
                                 email => 'd@example.com'),
                        'Idempotency-Key' => 'drip');
    my $took = time - $t0;
    $l->clear_faults;

    ok(!$tx->error || $tx->res->code, 'answered')
        or diag('error: ' . ($tx->error->{message} // '?'));
    cmp_ok($took, '<', $WITHIN, "within the deadline ($took s)");
    $l->error_is($tx, 502, 'BILLING_UNAVAILABLE', 'dripping item');

    $l->left_no_request($w);
    my @open = grep { $_->{status} =~ /^(?:draft|open)$/ }
               $l->invoices($w->{customer});
    is(scalar @open, 0, 'no draft or open invoice left')
        or diag explain [map { "$_->{id} $_->{status}" } @open];
    like(substr($s->error_log, $from),
         qr/Stripe POST "\/_stripe\/v1\/invoiceitems" still unanswered after linegate_stripe_timeout/,
         'logged');

    my $b = $l->answer($l->create($w, body(channelType => 'email',
                                           email => 'd@example.com'),
                                  'Idempotency-Key' => 'drip'),
                       201, 'the same key, Stripe well again');
    is($b->{status}, 'awaiting_payment', 'billed');
};

# An answer with no Content-Length, read as it comes (proxy_buffering
# off, or a proxy between that says X-Accel-Buffering: no), ends where
# its connection does: ended at the deadline, nginx hands over what came
# as if it were all of it. Before 2026-11-28 that part was taken for
# Stripe's whole answer ("nothing done", not asked again); past the
# deadline nothing is.
subtest 'Lines creation: an answer without a length drips, unbuffered' => sub {
    my $w = $l->workspace('org_drip_close');
    my $from = length $s->error_log;
    $l->fault(path_prefix => '/v1/invoiceitems', @DRIP, drip_body => 1,
              drip_close => 1);

    my $t0 = time;
    my $tx = $l->create($w, body(channelType => 'email',
                                 email => 'c@example.com'),
                        'Idempotency-Key' => 'drip-close');
    my $took = time - $t0;
    $l->clear_faults;

    ok(!$tx->error || $tx->res->code, 'answered')
        or diag('error: ' . ($tx->error->{message} // '?'));
    cmp_ok($took, '<', $WITHIN + 5, "within the deadlines ($took s)");
    $l->error_is($tx, 502, 'BILLING_UNAVAILABLE', 'dripping item');
    my $log = substr($s->error_log, $from);
    like($log, qr/Stripe POST "\/_stripe\/v1\/invoiceitems" still unanswered after linegate_stripe_timeout/,
         'ended at the deadline');
    like($log, qr/Stripe POST "\/_stripe\/v1\/invoiceitems" got no whole answer \(0, status 200, \d+ bytes\), its outcome is unknown/,
         'what came is no whole answer, its outcome unknown');

    my @ids = $l->request_ids($w);
    is(scalar @ids, 0, 'no request left') or diag "@ids";
    my @open = grep { $_->{status} =~ /^(?:draft|open)$/ }
               $l->invoices($w->{customer});
    is(scalar @open, 0, 'no draft or open invoice left')
        or diag explain [map { "$_->{id} $_->{status}" } @open];
};

subtest 'a call answered in time is not ended' => sub {
    my $w = $l->workspace('org_nodrip');
    my $from = length $s->error_log;
    # 500 ms of latency: under the deadline
    $l->fault(path_prefix => '/v1/invoiceitems', latency_ms => 500);
    my $b = $l->answer($l->create($w, body(channelType => 'email',
                                           email => 'n@example.com')),
                       201, 'created');
    is($b->{status}, 'awaiting_payment', 'billed');
    # the deadline's timer went with the call: nothing fires later
    sleep 1.5;
    unlike(substr($s->error_log, $from), qr/still unanswered/,
           'no deadline logged');
    $l->clear_faults;
};

# A graceful quit (SIGQUIT, a reload's old worker) waits for a call in
# flight, which is the request's: the deadline's timer is not
# cancelable, and goes with the call. The worker exits once the confirm
# has answered, within the deadlines, and leaves nothing open. Last: it
# stops this stack.
subtest 'a graceful quit while a call drips' => sub {
    my $id = 'acct_drip_quit';
    my $a = $p->account($id);
    my $tok = $p->token($a);
    $p->fault(@DRIP, drip_body => 1);
    my $master = $s->{pids}{nginx};

    my $t0 = time;
    my $kid = fork // die "fork: $!";
    if ($kid == 0) {
        sleep 0.5;
        kill 'QUIT', $master;
        POSIX::_exit(0);
    }
    my $tx = $p->confirm($a, $tok);
    waitpid $kid, 0;
    $p->error_is($tx, 502, 'billing_unavailable', 'answered');

    my $gone = 0;
    for (1 .. 1000) {
        if (waitpid($master, WNOHANG) == $master) {
            $gone = 1;
            delete $s->{pids}{nginx};
            last;
        }
        sleep 0.01;
    }
    my $took = time - $t0;
    ok($gone, 'nginx exited');
    cmp_ok($took, '<', $WITHIN, "within the deadlines ($took s)");
    unlike($s->error_log, qr/\[alert\]/, 'no alert (no socket left open)');
    my @q = $p->queued_of($id);
    is($q[0]{reason} // '', 'stripe_outcome_unknown',
       'queued stripe_outcome_unknown');
};

# The same answer cut by proxy_read_timeout well before the deadline (a
# byte every 1.5 s, each read waiting at most 1 s): nginx ends the
# subrequest as if its answer were whole (no length to hold it to, no
# sign of the cut left), a 200 with a part of a body. A 2xx says the
# call ran: with nothing of it readable, its outcome is unknown, logged
# and counted so (an operator alerts on unknown outcomes). Before, it
# was a call that did nothing, counted "no_answer".
subtest 'an answer without a length cut by proxy_read_timeout' => sub {
    my $s2 = LG::Stack->new(STRIPE_TIMEOUT => '1s')->start;
    my $l2 = LG::Lines->new($s2);
    my $w = $l2->workspace('org_read_cut');
    my $from = length $s2->error_log;
    $l2->fault(path_prefix => '/v1/invoiceitems', drip_ms => 1500,
               drip_bytes => 1, count => -1, drip_body => 1,
               drip_close => 1);

    my $tx = $l2->create($w, body(channelType => 'email',
                                  email => 'c@example.com'),
                         'Idempotency-Key' => 'read-cut');
    $l2->clear_faults;

    $l2->error_is($tx, 502, 'BILLING_UNAVAILABLE', 'cut item');
    my $log = substr($s2->error_log, $from);
    like($log, qr/Stripe POST "\/_stripe\/v1\/invoiceitems" answered 200 with no JSON object \(\d+ bytes\), its outcome is unknown/,
         'a 200 with nothing readable: its outcome unknown');
    my $m = $s2->ua->get($s2->url('/metrics'))->res->body;
    like($m, qr/^linegate_stripe_requests_total\{endpoint="invoiceitems",outcome="unknown"\} 1$/m,
         'counted as an unknown outcome');

    my @ids = $l2->request_ids($w);
    is(scalar @ids, 0, 'no request left') or diag "@ids";
    my @open = grep { $_->{status} =~ /^(?:draft|open)$/ }
               $l2->invoices($w->{customer});
    is(scalar @open, 0, 'no draft or open invoice left')
        or diag explain [map { "$_->{id} $_->{status}" } @open];
    $s2->stop;
};

# A variable host in the Stripe location's proxy_pass (docs/deploy.md's
# example) is resolved per call through `resolver`, before any
# connection: nginx waits up to resolver_timeout (30 s by default, 8 s
# here) for a resolver that does not answer, and the deadline found no
# connection to end. Before 2026-11-28 such a call lasted
# resolver_timeout whatever linegate_stripe_timeout said: 8 s here for
# each call of a step (a confirm's one call; a Lines creation's invoice
# asked again within its 8 s, three calls, 24 s). Now the resolution is
# ended at the deadline as resolver_timeout ends it: 502 from nginx,
# nothing sent to Stripe, and the endpoint's "Stripe unavailable" branch
# (nothing done: nothing queued; a creation asks again within its 8 s,
# at most 8 s plus two calls' deadlines). The resolver is a UDP socket
# of this test that never answers (its queries read at the end).
subtest 'a resolver that never answers' => sub {
    my $dns = IO::Socket::INET->new(LocalAddr => '127.0.0.1',
                                    LocalPort => 0, Proto => 'udp')
        or die "udp: $!";
    my $dns_port = $dns->sockport;

    # a variable in proxy_pass makes nginx resolve the host per call
    my $s3 = LG::Stack->new(
        STRIPE_URL   => 'http://stripe.test:9$lg_stripe_none',
        HTTP_EXTRA   => 'linegate_stripe_timeout 1s; '
                        . 'map $uri $lg_stripe_none { default ""; }',
        SERVER_EXTRA => "resolver 127.0.0.1:$dns_port ipv6=off; "
                        . 'resolver_timeout 8s;',
    )->start;
    my $p3 = LG::Provision->new($s3);
    my $l3 = LG::Lines->new($s3);
    my $r3 = $s3->redis;
    # the old module's 24 s creation answered, not given up on at 10 s
    $s3->ua->request_timeout(30)->inactivity_timeout(30);

    $p3->inventory('+14155550999');
    my $id = 'acct_resolve';
    my $a = $p3->account($id);
    my $tok = $p3->token($a);
    my $from = length $s3->error_log;

    my $t0 = time;
    my $tx = $p3->confirm($a, $tok);
    my $took = time - $t0;

    ok(!$tx->error || $tx->res->code, 'confirm answered')
        or diag('error: ' . ($tx->error->{message} // '?'));
    cmp_ok($took, '<', 3, "confirm within the deadline ($took s)");
    $p3->error_is($tx, 502, 'billing_unavailable', 'name unresolved');
    is($r3->scard('lg:{fleet}:inventory'), 1, 'the number is back');
    $p3->nothing_held($id, 'name unresolved');
    my @q = $p3->queued_of($id);
    is(scalar @q, 0, 'nothing queued: nothing was sent')
        or diag explain \@q;

    my $log = substr($s3->error_log, $from);
    like($log, qr/Stripe \w+ "\/_stripe\/v1\/[^"]+" still unanswered after linegate_stripe_timeout \(1000 ms\): ended/,
         'ended at the deadline');
    like($log, qr/stripe\.test could not be resolved \(110: Operation timed out\)/,
         'as resolver_timeout ends it');
    like($log, qr/Stripe \w+ "\/_stripe\/v1\/[^"]+" got no whole answer \(502, status 0, 0 bytes\), its outcome is nothing done/,
         'nothing sent, nothing done');

    my $w = $l3->workspace('org_resolve');
    $t0 = time;
    $tx = $l3->create($w, body(channelType => 'email',
                               email => 'r@example.com'),
                      'Idempotency-Key' => 'resolve');
    $took = time - $t0;

    ok(!$tx->error || $tx->res->code, 'creation answered')
        or diag('error: ' . ($tx->error->{message} // '?'));
    # the first failure at 1 s, asked again until 8 s later, the last
    # call ended 1 s after: 10 s, and a little for the box
    cmp_ok($took, '<', 12.5, "creation within its deadlines ($took s)");
    $l3->error_is($tx, 502, 'BILLING_UNAVAILABLE', 'name unresolved');
    $l3->left_no_request($w);

    # nginx did ask the resolver: the deadline ended a real wait
    $dns->blocking(0);
    my ($asked, $buf) = (0, '');
    while (defined $dns->recv($buf, 512)) {
        $asked++ if $buf =~ /\x06stripe\x04test\x00/;
    }
    cmp_ok($asked, '>=', 1, "the resolver was asked ($asked queries)");

    $s3->stop;
};

done_testing;
