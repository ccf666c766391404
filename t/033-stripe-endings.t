#!/usr/bin/perl
# Every ending of a Stripe subrequest reaches the request's step (issue 13,
# DESIGN 7): an answer over subrequest_output_buffer_size, an answer cut
# in the middle, a dropped connection, and the client leaving while the
# call runs (HTTP/1 close, HTTP/2 stream gone). nginx ends such a
# subrequest with NGX_ERROR, 499 or the connection's error flag, which
# used to terminate the waiting request: no answer, and a purchase neither
# recorded nor released. Here each one gets the API's JSON answer, or,
# when the client left, its steps still run to the end.
use strict;
use warnings;
use lib 't/lib';

use IO::Socket::INET;
use POSIX ();
use Mojo::JSON qw(encode_json);
use Test::More;
use Time::HiRes qw(sleep time);
use LG::Stack;
use LG::Test;
use LG::Provision;

my $have_curl = -x '/usr/bin/curl';
my ($h2port) = LG::Stack::_free_ports(1);

my $s = LG::Stack->new(
    STRIPE_TIMEOUT => '2s',
    SERVER_EXTRA   => "listen 127.0.0.1:$h2port http2;",
)->start;
my $p = LG::Provision->new($s);
my $r = $s->redis;

my $TOTAL = 20;
$p->inventory($p->numbers($TOTAL));

# the location's subrequest_output_buffer_size is 64k
my $OVER = 100_000;

# the sockets of nginx's end of a connection on port $port that the
# client closed and nginx has not
sub close_wait {
    my ($port) = @_;
    my @l = grep { /:$port\b/ } `ss -tnH state close-wait`;
    return scalar @l;
}

sub subs_of {
    my ($id) = @_;
    return grep { ($_->{metadata}{account_id} // '') eq $id }
           $p->subscriptions;
}

sub wait_for {
    my ($cond, $secs) = @_;
    my $until = time + ($secs // 30);
    while (time < $until) {
        return 1 if $cond->();
        sleep 0.1;
    }
    return 0;
}

subtest 'reading the customer: answer over the buffer, answer cut' => sub {
    for my $f ([oversize => $OVER], [cut => 1]) {
        my $id = "acct_cus_$f->[0]";
        my $a = $p->account($id);
        my $tok = $p->token($a);
        my $from = length $s->error_log;
        $p->fault(method => 'GET', path_prefix => '/v1/customers', @$f);
        my $tx = $p->confirm($a, $tok);
        $p->error_is($tx, 502, 'billing_unavailable', "GET customer $f->[0]",
                     qr/new preview/);
        $p->released($id, "GET customer $f->[0]", $TOTAL);
        like(substr($s->error_log, $from),
             qr/Stripe GET "\/_stripe\/v1\/customers\/cus_\Q$id\E" got no whole answer/,
             "$f->[0]: logged");
    }
    $p->clear_faults;
};

subtest 'subscription answer over the buffer once: asked again, bought once'
    => sub {
    my $a = $p->account('acct_sub_over');
    my $tok = $p->token($a);
    $p->fault(oversize => $OVER);
    my $b = $p->answer($p->confirm($a, $tok), 200, 'confirm');
    is(scalar subs_of('acct_sub_over'), 1, 'one subscription');
    is($p->lines('acct_sub_over')->{$b->{worker_id}}{subscription_id},
       $b->{subscription_id}, 'recorded');
    $p->numbers_accounted('oversize once', $TOTAL);
    $p->clear_faults;
};

# docs/provisioning-api.md, "What Stripe's answer leads to": the answer
# lost twice (dropped, cut, over the buffer) is 502 billing_unavailable,
# the number back, and the purchase queued as stripe_outcome_unknown.
# Each of these faults lets Stripe do the work first, so a subscription
# exists: the entry names the worker id of its metadata.
subtest 'subscription answer cut, over the buffer, dropped twice: 502, '
      . 'queued stripe_outcome_unknown' => sub {
    for my $f ([cut => 1], [oversize => $OVER],
               [drop => 1, after_commit => 1]) {
        my $id = "acct_sub2_$f->[0]";
        my $name = "subscription $f->[0] twice";
        my $a = $p->account($id);
        my $tok = $p->token($a);
        $p->fault(@$f, count => 2);
        my $tx = $p->confirm($a, $tok);
        ok(!$tx->error || $tx->res->code, "$name: answered")
            or diag('error: ' . ($tx->error->{message} // '?'));
        $p->error_is($tx, 502, 'billing_unavailable', $name);
        $p->released($id, $name, $TOTAL);

        my @subs = subs_of($id);
        is(scalar @subs, 1, "$name: Stripe made one subscription");
        my @q = $p->queued_of($id);
        is(scalar @q, 1, "$name: one reconcile entry");
        is($q[0]{reason}, 'stripe_outcome_unknown',
           "$name: reason stripe_outcome_unknown");
        ok($q[0]{worker_id}
           && $q[0]{worker_id} eq ($subs[0]{metadata}{worker_id} // ''),
           "$name: the entry's worker id is the subscription's")
            or diag("entry $q[0]{worker_id}, subscription "
                    . ($subs[0]{metadata}{worker_id} // 'none'));
        $p->clear_faults;
    }
};

# the raw bytes of a confirm request
sub confirm_bytes {
    my ($a, $tok) = @_;
    my $body = encode_json({preview_token => $tok});
    my $h = $p->headers($a);
    return "POST /accounts/lines/provision-confirm HTTP/1.1\r\n"
        . "Host: 127.0.0.1\r\n"
        . join('', map { "$_: $h->{$_}\r\n" } sort keys %$h)
        . "Content-Type: application/json\r\n"
        . 'Content-Length: ' . length($body) . "\r\n\r\n$body";
}

subtest 'the client leaves during the subscription (HTTP/1)' => sub {
    my $id = 'acct_gone1';
    my $a = $p->account($id);
    my $tok = $p->token($a);
    $p->fault(latency_ms => 2500, after_commit => 1);

    my $c = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                  PeerPort => $s->port) or die $!;
    print $c confirm_bytes($a, $tok);
    # gone while the purchase waits on Stripe
    wait_for(sub { $r->zcard("lg:{acct:$id}:prov") });
    close $c;

    ok(wait_for(sub { keys %{ $p->lines($id) } }), 'the line is recorded');
    is(scalar subs_of($id), 1, 'one subscription');
    is_deeply($p->reservations($id), [], 'no reservation left');
    $p->numbers_accounted('client gone, HTTP/1', $TOTAL);
    $p->clear_faults;
};

SKIP: {
    skip 'no curl', 1 unless $have_curl;

    subtest 'the client leaves during the subscription (HTTP/2)' => sub {
        my $id = 'acct_gone2';
        my $a = $p->account($id);
        my $tok = $p->token($a);
        my $from = length $s->error_log;
        $p->fault(latency_ms => 2500, after_commit => 1);

        my $h = $p->headers($a);
        my $pid = fork // die "fork: $!";
        if ($pid == 0) {
            open STDOUT, '>', '/dev/null';
            { no warnings 'exec';
            exec '/usr/bin/curl', '-s', '--http2-prior-knowledge',
                 (map { ('-H', "$_: $h->{$_}") } sort keys %$h),
                 '-H', 'Content-Type: application/json',
                 '--data-binary', encode_json({preview_token => $tok}),
                 "http://127.0.0.1:$h2port/accounts/lines/provision-confirm";
            }
            POSIX::_exit(127);
        }
        # gone while the purchase waits on Stripe
        wait_for(sub { $r->zcard("lg:{acct:$id}:prov") });
        kill 'KILL', $pid;
        waitpid $pid, 0;

        ok(wait_for(sub { keys %{ $p->lines($id) } }), 'the line is recorded');
        is(scalar subs_of($id), 1, 'one subscription');
        is_deeply($p->reservations($id), [], 'no reservation left');
        $p->numbers_accounted('client gone, HTTP/2', $TOTAL);
        $p->clear_faults;

        # the answer no one reads is not queued on the connection nginx
        # has given up (before 2026-11-28 stripe_done's clearing of the
        # stream's error flag let it be: its stream never closed, and the
        # socket stayed open, CLOSE-WAIT, until the worker exited with
        # "[alert] open socket #N left in connection M")
        ok(wait_for(sub { !close_wait($h2port) }),
           'the HTTP/2 connection is closed')
            or diag `ss -tn state close-wait`;
    };
}

done_testing;
