# Confirm when Stripe's answer is unusable at each Stripe step (issue 13):
# an answer over the subrequest buffer, a body cut short, a dropped
# connection, a timeout; and the client gone while Stripe works. Every
# failure goes through confirm's own failure step: the client gets
# Sendblue's error with the SPEC status, and afterwards every
# subscription at the stub backs a recorded line or an lg:{fleet}:reconcile entry
# naming its worker id, no number is lost and no slot or reservation is
# held by a confirm that failed.
use strict;
use warnings;
use lib 't/lib';

use Test::More;
use IO::Socket::INET;
use Time::HiRes qw(sleep time);
use LG::Stack;
use LG::Test;
use LG::Provision qw(now_ms);

my $s = LG::Stack->new(STRIPE_TIMEOUT => '1s')->start;
my $p = LG::Provision->new($s);
my $r = $s->redis;

my $TOTAL = 40;
$p->inventory($p->numbers($TOTAL));

my $BIG = 200_000;    # over the 64k subrequest_output_buffer_size

sub subs_of {
    my ($id) = @_;
    return grep { ($_->{metadata}{account_id} // '') eq $id }
           $p->subscriptions;
}

# the stub's log entries for a path, since the last call or mark()
sub calls { return $p->stub_calls(@_) }
sub mark  { $p->stub_mark }

sub reconcile_of {
    my ($id) = @_;
    return grep { $_->{account} eq $id } @{ $p->reconcile };
}

# the invariants, once the confirm's work is done (it may finish after
# the answer: durable writes): polled for at most 30 s, as a loaded
# machine may run those writes seconds late
sub settled {
    my ($id, $name, %o) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;

    my $check = sub {
        my %line = map { ($_->{subscription_id} => 1) }
                   values %{ $p->lines($id) };
        my %queued = map { ($_->{worker_id} => 1) } reconcile_of($id);
        my @orphans = grep { !$line{ $_->{id} }
                             && !$queued{ $_->{metadata}{worker_id} } }
                      subs_of($id);
        my $held = @{ $p->reservations($id) };
        my $slots = $r->zcard("lg:{acct:$id}:prov");
        my $lines = keys %{ $p->lines($id) };
        return {
            lost => $TOTAL - $p->accounted,
            orphans => scalar @orphans, held => $held,
            extra_slots => $slots - $lines,
        };
    };

    my $st;
    my $until = time + 30;
    while (1) {
        $st = $check->();
        last if !$st->{lost} && !$st->{orphans} && !$st->{held}
                && !$st->{extra_slots};
        last if time > $until;
        sleep 0.05;
    }
    is($st->{lost}, 0, "$name: no number lost");
    is($st->{orphans}, 0,
       "$name: every subscription backs a line or an lg:{fleet}:reconcile entry");
    is($st->{held}, 0, "$name: no reservation held");
    is($st->{extra_slots}, 0, "$name: no slot held without a line");
}

my $n = 0;

# one fault at the customer read: 502, nothing bought
for my $f (['oversize', oversize => $BIG],
           ['cut body', cut => 1],
           ['dropped', drop => 1],
           ['timeout', latency_ms => 2500]) {
    my ($what, %fault) = @$f;
    subtest "GET customer, $what: 502, released" => sub {
        my $id = 'acct_c' . ++$n;
        my $a = $p->account($id);
        my $tok = $p->token($a);
        $p->fault(method => 'GET', path_prefix => '/v1/customers', %fault);
        my $tx = $p->confirm($a, $tok);
        ok(!$tx->error || $tx->res->code,
           "$what: an answer, not a closed connection")
            or diag(explain($tx->error));
        $p->error_is($tx, 502, 'billing_unavailable', "customer $what");
        is(scalar subs_of($id), 0, 'no subscription');
        settled($id, "customer $what");
        $p->clear_faults;
    };
}

# at the subscription: one fault is asked again with the same key
# (Stripe replays the real answer): bought once
for my $f (['oversize', oversize => $BIG],
           ['cut body', cut => 1],
           ['dropped', drop => 1, after_commit => 1],
           ['timeout', latency_ms => 2500, after_commit => 1]) {
    my ($what, %fault) = @$f;
    subtest "POST subscription, one $what: bought once" => sub {
        my $id = 'acct_s' . ++$n;
        my $a = $p->account($id);
        my $tok = $p->token($a);
        mark();
        $p->fault(%fault);
        my $tx = $p->confirm($a, $tok);
        my $b = $p->answer($tx, 200, "subscription $what once");
        # the fault fired: the stub's log has the first POST faulted
        # (its "fault" field names it) and a second, whole, same key
        my @c = calls('/v1/subscriptions');
        is(scalar @c, 2, 'two POSTs');
        my ($kind) = grep { $_ ne 'after_commit' } sort keys %fault;
        ok($c[0]{fault} && $c[0]{fault}{$kind},
           "the first met the fault ($kind)")
            or diag(explain($c[0]));
        ok(@c == 2 && !$c[1]{fault}, 'the second met none')
            or diag(explain($c[1]));
        ok(@c == 2 && ($c[0]{idempotency_key} // '') ne ''
           && $c[0]{idempotency_key} eq ($c[1]{idempotency_key} // ''),
           'same idempotency key');
        my @subs = subs_of($id);
        is(scalar @subs, 1, 'one subscription');
        is($p->lines($id)->{ $b->{worker_id} // '' }{subscription_id},
           $b->{subscription_id}, 'recorded');
        settled($id, "subscription $what once");
        $p->clear_faults;
    };
}

# twice: the outcome stays unknown, 502, queued with the worker id
for my $f (['oversize', oversize => $BIG],
           ['cut body', cut => 1],
           ['dropped', drop => 1, after_commit => 1],
           ['timeout', latency_ms => 2500, after_commit => 1]) {
    my ($what, %fault) = @$f;
    subtest "POST subscription, $what twice: 502, queued" => sub {
        my $id = 'acct_t' . ++$n;
        my $a = $p->account($id);
        $p->fault(%fault, count => 2);
        my $tx = $p->confirm($a, $p->token($a));
        ok(!$tx->error || $tx->res->code,
           "$what: an answer, not a closed connection")
            or diag(explain($tx->error));
        $p->error_is($tx, 502, 'billing_unavailable', "subscription $what");
        my @subs = subs_of($id);
        is(scalar @subs, 1, 'Stripe did create it');
        my @q = reconcile_of($id);
        is(scalar @q, 1, 'one lg:{fleet}:reconcile entry');
        is($q[0]{reason}, 'stripe_outcome_unknown', 'reason');
        is($q[0]{worker_id}, $subs[0]{metadata}{worker_id},
           'naming the purchase Stripe billed');
        settled($id, "subscription $what twice");
        $p->clear_faults;
    };
}

# a 200 that is not a live subscription: one left incomplete (its first
# payment not made; error_if_incomplete should have answered 402), one
# past due, another object, a status Stripe does not have. Stripe made
# something the line must not be given for: 502, no line, the purchase
# queued as stripe_outcome_unknown (the run finds it by its worker id and
# cancels it, refunding what was paid), not recorded as bought.
for my $f (['incomplete', {object => 'subscription', status => 'incomplete'}],
           ['past_due', {object => 'subscription', status => 'past_due'}],
           ['another object', {object => 'invoice', status => 'paid'}],
           ['no status', {object => 'subscription'}],
           ['status not a string', {object => 'subscription',
                                    status => ['active']}]) {
    my ($what, $shape) = @$f;
    subtest "POST subscription answered 200, $what: 502, queued" => sub {
        my $id = 'acct_w' . ++$n;
        my $a = $p->account($id);
        my $tok = $p->token($a);
        mark();
        $p->fault(method => 'POST', path_prefix => '/v1/subscriptions',
                  status => 200, after_commit => 1,
                  body => {id => "sub_shape$n", %$shape});
        my $tx = $p->confirm($a, $tok);
        $p->error_is($tx, 502, 'billing_unavailable', "200 $what");
        is_deeply($p->lines($id), {}, "$what: no line");
        is(scalar calls('/v1/subscriptions'), 1, "$what: asked once");
        my @q = reconcile_of($id);
        is(scalar @q, 1, "$what: one lg:{fleet}:reconcile entry");
        is($q[0]{reason}, 'stripe_outcome_unknown', "$what: reason");
        settled($id, "200 $what");
        $p->clear_faults;
    };
}

# the client leaves while Stripe works on the subscription
subtest 'the client goes away during the subscription' => sub {
    my $id = 'acct_gone';
    my $a = $p->account($id);
    my $tok = $p->token($a);
    $p->fault(latency_ms => 1500, after_commit => 1);

    my $body = qq({"preview_token":"$tok"});
    my $sock = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                     PeerPort => $s->port) or die $!;
    print $sock "POST /accounts/lines/provision-confirm HTTP/1.1\r\n"
        . "Host: localhost\r\nContent-Type: application/json\r\n"
        . "sb-api-key-id: $a->{key_id}\r\n"
        . "sb-api-secret-key: $a->{secret}\r\n"
        . 'Content-Length: ' . length($body) . "\r\n\r\n$body";

    # once the number is reserved (Stripe is working), hang up
    my $until = time + 5;
    sleep 0.02 until @{ $p->reservations($id) } || time > $until;
    ok(scalar @{ $p->reservations($id) }, 'reserved');
    sleep 0.2;
    close $sock;

    # Stripe answers (or nginx gave up on it): at once after_commit on a
    # quiet machine, seconds later on a loaded one
    my $by = time + 30;
    sleep 0.1 until subs_of($id) || time > $by;
    my @subs = subs_of($id);
    is(scalar @subs, 1, 'Stripe created the subscription');
    settled($id, 'client gone');
    $p->clear_faults;
};

# nginx's own lines about the calls that failed above (timed out, closed
# early, too big a subrequest response) name the subrequest and the
# upstream, never the key the Stripe location sends
subtest 'the Stripe key is in no log line' => sub {
    my $log = $s->error_log;
    like($log, qr/upstream timed out/, "nginx's own lines are there");
    like($log, qr/too big subrequest response/, 'the oversize ones too');
    unlike($log, qr/sk_test_linegate/, 'the key is not');
};

done_testing();
