# Confirm when Stripe or Redis fails (SPEC 1, 3.4, 3.5): 5xx, 429,
# timeouts, dropped connections, unreachable Stripe, a line that cannot be
# recorded. Nothing is ever charged twice for one purchase, no number is
# lost, and whatever Stripe may have done unseen reaches lg:{fleet}:reconcile.
use strict;
use warnings;
use lib 't/lib';

use Test::More;
use Digest::SHA qw(sha256_hex);
use Time::HiRes qw(sleep time);
use LG::Stack;
use LG::Test qw(:DEFAULT lua_script);
use LG::Provision qw(now_ms);

my $s = LG::Stack->new(STRIPE_TIMEOUT => '1s')->start;
my $p = LG::Provision->new($s);
my $r = $s->redis;

my $TOTAL = 40;
$p->inventory($p->numbers($TOTAL));

# the stub's log entries for a path, since the last call or mark()
sub calls { return $p->stub_calls(@_) }
sub mark  { $p->stub_mark }

sub subs_of {
    my ($id) = @_;
    return grep { ($_->{metadata}{account_id} // '') eq $id }
           $p->subscriptions;
}

# poll $cond every 0.1 s for at most $timeout s: a loaded machine may take
# seconds to run what a quiet one runs at once; true when it held
sub eventually {
    my ($cond, $timeout) = @_;
    my $until = time + $timeout;
    while (time < $until) {
        return 1 if $cond->();
        sleep 0.1;
    }
    return $cond->();
}

sub reconcile_of {
    my ($id) = @_;
    return grep { $_->{account} eq $id } @{ $p->reconcile };
}

subtest 'reading the customer fails: 502, nothing charged or kept' => sub {
    my $a = $p->account('acct_cus5xx');
    my $tok = $p->token($a);
    mark();
    $p->fault(method => 'GET', path_prefix => '/v1/customers', status => 500);
    my $tx = $p->confirm($a, $tok);
    $p->error_is($tx, 502, 'billing_unavailable', 'GET customer 500',
                 qr/new preview/);
    $p->released('acct_cus5xx', 'GET customer 500', $TOTAL);
    is(scalar calls('/v1/subscriptions'), 0, 'no subscription attempted');
    is_deeply([reconcile_of('acct_cus5xx')], [], 'nothing to reconcile');

    $a = $p->account('acct_custo');
    $tok = $p->token($a);
    $p->fault(method => 'GET', path_prefix => '/v1/customers',
              latency_ms => 2500);
    my ($t) = timed { $tx = $p->confirm($a, $tok) };
    $p->error_is($tx, 502, 'billing_unavailable', 'GET customer timeout');
    ok($t >= 0.9 && $t < 2.4, sprintf 'after the 1 s timeout (%.2f s)', $t);
    $p->released('acct_custo', 'GET customer timeout', $TOTAL);

    $a = $p->account('acct_cus429');
    $p->fault(method => 'GET', path_prefix => '/v1/customers', status => 429,
              retry_after => 4);
    $tx = $p->confirm($a, $p->token($a));
    $p->error_is($tx, 503, 'billing_unavailable', 'GET customer 429');
    is($tx->res->headers->header('Retry-After'), 4, "Stripe's Retry-After");
    $p->released('acct_cus429', 'GET customer 429', $TOTAL);
    $p->clear_faults;
};

subtest 'one 5xx: retried with the same key, bought once' => sub {
    my $a = $p->account('acct_5xx1');
    my $tok = $p->token($a);
    mark();
    $p->fault(status => 500);
    my $b = $p->answer($p->confirm($a, $tok), 200, 'confirm');
    my @c = calls('/v1/subscriptions');
    is(scalar @c, 2, 'two POSTs');
    is($c[0]{status}, 500, 'the first got 500');
    is($c[1]{status}, 200, 'the second 200');
    is($c[0]{idempotency_key}, $c[1]{idempotency_key}, 'same key');
    is($c[0]{body}, $c[1]{body}, 'same body');
    is(scalar subs_of('acct_5xx1'), 1, 'one subscription');
    is($p->lines('acct_5xx1')->{$b->{worker_id}}{subscription_id},
       $b->{subscription_id}, 'recorded');
    $p->numbers_accounted('one 5xx', $TOTAL);
};

subtest 'Stripe keeps failing: 502, released, queued' => sub {
    my $a = $p->account('acct_5xx');
    my $tok = $p->token($a);
    mark();
    $p->fault(status => 503, count => 2);
    my $tx = $p->confirm($a, $tok);
    $p->error_is($tx, 502, 'billing_unavailable', 'persistent 5xx');
    ok($tx->res->headers->header('RateLimit'), 'RateLimit headers');
    $p->released('acct_5xx', 'persistent 5xx', $TOTAL);
    is(scalar calls('/v1/subscriptions'), 2, 'tried twice');

    # a 5xx may hide a subscription: the case is queued for an operator
    my @q = reconcile_of('acct_5xx');
    is(scalar @q, 1, 'one lg:{fleet}:reconcile entry');
    is($q[0]{reason}, 'stripe_outcome_unknown', 'reason');
    like($q[0]{worker_id}, qr/^worker_[0-9a-f]{24}$/, 'worker_id');
    is($q[0]{idempotency_key}, 'lg-confirm-' . substr(sha256_hex($tok), 0, 32),
       'the Idempotency-Key, to look the call up at Stripe');
    like($q[0]{phone_number}, qr/^\+1/, 'the number it was for');
    is($q[0]{customer}, 'cus_acct_5xx', 'customer');
    is($q[0]{subscription_id}, '', 'no subscription id known');
    like($q[0]{at}, qr/Z$/, 'at');
    is(scalar subs_of('acct_5xx'), 0, 'and in fact none was created');

    $p->answer($p->confirm($a, $p->token($a)), 200,
               'a new preview buys the line');
};

subtest 'Stripe says 429: 503 with its Retry-After, not queued' => sub {
    my $a = $p->account('acct_429');
    mark();
    $p->fault(status => 429, retry_after => 7);
    my $tx = $p->confirm($a, $p->token($a));
    $p->error_is($tx, 503, 'billing_unavailable', 'Stripe 429');
    is($tx->res->headers->header('Retry-After'), 7, 'Retry-After: 7');
    $p->released('acct_429', 'Stripe 429', $TOTAL);
    is(scalar calls('/v1/subscriptions'), 1, 'not retried');
    is_deeply([reconcile_of('acct_429')], [], 'nothing to reconcile');
};

# RFC 9110 lets Retry-After be an HTTP-date (a proxy before Stripe may
# send one) or something unreadable: the 503 still carries one (SPEC 1),
# the date's seconds, else 1; either form at most 60 seconds
# (docs/provisioning-api.md)
sub http_date {
    my @at = gmtime(time + $_[0]);
    return sprintf '%s, %02d %s %d %02d:%02d:%02d GMT',
        (qw(Sun Mon Tue Wed Thu Fri Sat))[$at[6]], $at[3],
        (qw(Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec))[$at[4]],
        $at[5] + 1900, @at[2, 1, 0];
}

subtest 'Stripe says 429 with a date or junk: 503 with a Retry-After' =>
sub {
    for my $case ([date => http_date(40), 20, 41], [junk => 'soon', 1, 1],
                  [huge => '9' x 30, 1, 1], [negative => '-5', 1, 1],
                  [zero => '0', 1, 1], [unit => '7s', 1, 1],
                  [hours => '86400', 60, 60],
                  [max_int => '9223372036854775807', 60, 60],
                  [date_later => http_date(7200), 60, 60])
    {
        my ($what, $value, $lo, $hi) = @$case;
        my $id = "acct_429_$what";
        my $a = $p->account($id);
        $p->fault(status => 429, retry_after => $value);
        my $tx = $p->confirm($a, $p->token($a));
        $p->error_is($tx, 503, 'billing_unavailable', "Stripe 429, $what");
        my $ra = $tx->res->headers->header('Retry-After');
        ok(defined $ra && $ra =~ /^\d+$/ && $ra >= $lo && $ra <= $hi,
           "$what: Retry-After " . ($ra // 'missing') . " in [$lo, $hi]");
        $p->released($id, "Stripe 429, $what", $TOTAL);
    }
};

subtest 'Stripe refuses our own call: 502, not queued' => sub {
    my $a = $p->account('acct_401');
    $p->fault(status => 401);
    my $tx = $p->confirm($a, $p->token($a));
    $p->error_is($tx, 502, 'billing_unavailable', 'Stripe 401');
    $p->released('acct_401', 'Stripe 401', $TOTAL);
    is_deeply([reconcile_of('acct_401')], [], 'nothing to reconcile');
    like($s->error_log,
         qr/Stripe refused the subscription of account "acct_401"/, 'logged');
};

subtest 'timeout after Stripe created it: the retry finds it' => sub {
    my $a = $p->account('acct_tmo');
    my $tok = $p->token($a);
    mark();
    $p->fault(latency_ms => 2500, after_commit => 1);
    my $tx;
    my ($t) = timed { $tx = $p->confirm($a, $tok) };
    my $b = $p->answer($tx, 200, 'confirm');
    ok($t >= 0.9, sprintf 'one timeout first (%.2f s)', $t);
    my @c = calls('/v1/subscriptions');
    is(scalar @c, 2, 'two POSTs');
    ok($c[1]{replayed}, 'the second was replayed by Stripe');
    my @subs = subs_of('acct_tmo');
    is(scalar @subs, 1, 'exactly one subscription');
    is($subs[0]{id}, $b->{subscription_id}, 'the one answered');
    is($subs[0]{metadata}{worker_id}, $b->{worker_id}, 'for this purchase');
    $p->numbers_accounted('timeout after commit', $TOTAL);
};

subtest 'dropped connection after Stripe created it: found again' => sub {
    my $a = $p->account('acct_drop');
    mark();
    $p->fault(drop => 1, after_commit => 1);
    my $b = $p->answer($p->confirm($a, $p->token($a)), 200, 'confirm');
    my @c = calls('/v1/subscriptions');
    ok($c[0]{dropped}, 'the first answer was dropped');
    is(scalar subs_of('acct_drop'), 1, 'exactly one subscription');
    $p->numbers_accounted('drop after commit', $TOTAL);
};

subtest 'answers lost twice: 502; a fresh token never charges twice' => sub {
    my $a = $p->account('acct_lost');
    my $tok = $p->token($a);
    mark();
    $p->fault(drop => 1, after_commit => 1, count => 2);
    my $tx = $p->confirm($a, $tok);
    $p->error_is($tx, 502, 'billing_unavailable', 'lost twice');
    $p->released('acct_lost', 'lost twice', $TOTAL);

    my @subs = subs_of('acct_lost');
    is(scalar @subs, 1, 'Stripe did create one, unseen');
    my @q = reconcile_of('acct_lost');
    is(scalar @q, 1, 'queued for reconciliation');
    is($q[0]{worker_id}, $subs[0]{metadata}{worker_id},
       'the entry names the purchase Stripe billed (metadata.worker_id)');
    is($q[0]{idempotency_key}, 'lg-confirm-' . substr(sha256_hex($tok), 0, 32),
       'and its Idempotency-Key');

    # the client retries with a new preview
    my $tok2 = $p->token($a);
    my $b = $p->answer($p->confirm($a, $tok2), 200, 'fresh token');
    my @all = subs_of('acct_lost');
    is(scalar @all, 2, 'a second purchase, a second subscription');
    my %by_worker;
    $by_worker{ $_->{metadata}{worker_id} }++ for @all;
    is(scalar(grep { $_ > 1 } values %by_worker), 0,
       'no purchase was charged twice');
    my %line = map { ($_->{subscription_id} => 1) }
               values %{ $p->lines('acct_lost') };
    my %queued = map { ($_->{worker_id} => 1) } reconcile_of('acct_lost');
    for my $sub (@all) {
        ok($line{ $sub->{id} } || $queued{ $sub->{metadata}{worker_id} },
           "$sub->{id}: a recorded line or queued for an operator");
    }
    isnt(substr(sha256_hex($tok2), 0, 32), substr(sha256_hex($tok), 0, 32),
         'the new token has its own Idempotency-Key');
    $p->numbers_accounted('lost twice, then retried', $TOTAL);
};

# the retry's refusal is not Stripe's replay of the first call when it
# is decided before the key is looked at (a key rolled or restricted
# between the two: 401, 403): the first call may have charged, unseen
for my $status (401, 403) {
    subtest "lost, then $status: 502, queued" => sub {
        my $id = "acct_lost_$status";
        my $a = $p->account($id);
        my $tok = $p->token($a);
        mark();
        $p->fault(status => 500, after_commit => 1);
        $p->fault(status => $status);
        my $tx = $p->confirm($a, $tok);
        $p->error_is($tx, 502, 'billing_unavailable', "lost, then $status");
        is(scalar calls('/v1/subscriptions'), 2, 'tried twice');
        $p->released($id, "lost, then $status", $TOTAL);

        my @subs = subs_of($id);
        is(scalar @subs, 1, 'the first call created one, unseen');
        my @q = reconcile_of($id);
        is(scalar @q, 1, 'queued for reconciliation');
        is($q[0]{reason}, 'stripe_outcome_unknown', 'outcome unknown');
        is($q[0]{worker_id}, $subs[0]{metadata}{worker_id},
           'the entry names the purchase Stripe billed');
    };
}

# Stripe's 409 (the key's first call still running) is asked again after
# 250 ms, 500 ms, 1 s, never at once: an immediate retry all but always
# met the first call still running, and the purchase was queued as
# unknown although Stripe finished it a moment later.
sub paid_invoices_of {
    my ($sub) = @_;
    return grep { ($_->{subscription} // '') eq $sub
                  && ($_->{status} // '') eq 'paid' }
           values %{ $p->stub_state->{invoices} // {} };
}

subtest 'Stripe says 409 once: asked again after a wait, bought once' =>
    sub {
    my $a = $p->account('acct_409');
    my $tok = $p->token($a);
    mark();
    $p->fault(status => 409, body => {error => {
        type => 'idempotency_error',
        message => 'There is currently another in-progress request using '
                   . 'this Idempotent Key (stub fault)'}});
    my $tx;
    my ($t) = timed { $tx = $p->confirm($a, $tok) };
    my $b = $p->answer($tx, 200, 'confirm');
    ok($t >= 0.25, sprintf 'the retry waited (%.2f s)', $t);
    my @c = calls('/v1/subscriptions');
    is(scalar @c, 2, 'two POSTs');
    is($c[0]{status}, 409, 'the first got 409');
    is($c[0]{idempotency_key}, $c[1]{idempotency_key}, 'same key');
    my @subs = subs_of('acct_409');
    is(scalar @subs, 1, 'one subscription');
    is($subs[0]{id}, $b->{subscription_id}, 'the one answered');
    is(scalar paid_invoices_of($subs[0]{id}), 1, 'one charge');
    is(scalar reconcile_of('acct_409'), 0, 'nothing queued');
    $p->numbers_accounted('one 409', $TOTAL);
};

subtest 'timeout, then 409 while Stripe finishes: waited out, bought once'
    => sub {
    my $a = $p->account('acct_409slow');
    my $tok = $p->token($a);
    mark();
    # the work happens 1.4 s in: nginx gives up at 1 s, the retry meets
    # the first call still running (409), a later one Stripe's replay
    $p->fault(latency_ms => 1400);
    my $b = $p->answer($p->confirm($a, $tok), 200, 'confirm');
    my @c = calls('/v1/subscriptions');
    ok(@c >= 3, scalar(@c) . ' POSTs');
    is($c[1]{status}, 409, 'the immediate retry met the first call');
    ok($c[-1]{replayed}, 'the last was replayed by Stripe');
    my @subs = subs_of('acct_409slow');
    is(scalar @subs, 1, 'one subscription');
    is($subs[0]{id}, $b->{subscription_id}, 'the one answered');
    is(scalar paid_invoices_of($subs[0]{id}), 1, 'one charge');
    is(scalar reconcile_of('acct_409slow'), 0, 'nothing queued');
    $p->numbers_accounted('409 waited out', $TOTAL);
};

subtest 'timeout while Stripe is still working: 502, queued' => sub {
    my $a = $p->account('acct_slow');
    my $tok = $p->token($a);
    mark();
    # the work happens after the delay: nginx has given up by then, and
    # the same-key retries (at once, then 250 ms, 500 ms, 1 s later) find
    # the first call still in flight (409)
    $p->fault(latency_ms => 5000);
    my $tx = $p->confirm($a, $tok);
    $p->error_is($tx, 502, 'billing_unavailable', 'slow Stripe');
    $p->released('acct_slow', 'slow Stripe', $TOTAL);
    my @q = reconcile_of('acct_slow');
    is(scalar @q, 1, 'queued');

    # Stripe finishes the first call (2 s after it began; later on a
    # loaded machine)
    eventually(sub { subs_of('acct_slow') >= 1 }, 30);
    my @subs = subs_of('acct_slow');
    is(scalar @subs, 1, 'Stripe created it after all');
    is($subs[0]{metadata}{worker_id}, $q[0]{worker_id},
       'the queued entry names it');
    $p->numbers_accounted('slow Stripe', $TOTAL);
};

subtest 'charged but the line cannot be recorded: 500, queued' => sub {
    my $a = $p->account('acct_rec');
    my $tok = $p->token($a);
    $p->fault(latency_ms => 500);

    # while Stripe works, break the key the line will be written to
    my ($tx, $done) = $p->during($p->confirm_req($a, $tok), sub {
        my ($w) = $r->zrange('lg:{acct:acct_rec}:prov', 0, 0);
        return 0 unless $w;
        $r->set("lg:{acct:acct_rec}:line:$w", 'not a hash');
        return 1;
    });
    ok($done, 'the line key was broken in time');

    my $b = $p->error_is($tx, 500, 'provisioning_failed', 'record failed',
                         qr/reconciliation/);
    my @subs = subs_of('acct_rec');
    is(scalar @subs, 1, 'one subscription');
    is($b->{subscription_id}, $subs[0]{id}, 'its id in the answer');

    my @q = reconcile_of('acct_rec');
    is(scalar @q, 1, 'queued on lg:{fleet}:reconcile');
    is($q[0]{subscription_id}, $subs[0]{id}, 'subscription_id');
    is($q[0]{reason}, 'record_failed', 'reason');
    is($q[0]{phone_number}, $subs[0]{metadata}{phone_number},
       'phone_number');
    is($q[0]{worker_id}, $subs[0]{metadata}{worker_id}, 'worker_id');

    # the account's outbox (written with the record, in the account's
    # slot), queued by the settle (the fleet's slot): the claim is gone
    my $w = $q[0]{worker_id};
    my %o = $r->hgetall("lg:{acct:acct_rec}:reconcile:w:$w");
    is($o{reason}, 'record_failed', 'the outbox: reason');
    is($o{phone_number}, $q[0]{phone_number}, 'the outbox: the number');
    is($o{subscription_id}, $subs[0]{id}, 'the outbox: the subscription');
    is_deeply($p->claims('acct_rec'), [], 'no claim left');
    ok($r->exists("lg:{fleet}:q:acct_rec:$w:record_failed"),
       'queued once: its marker');

    # paid for: the number stays out of the inventory, the slot counts
    is(scalar @{ $p->reservations('acct_rec') }, 1, 'reservation kept');
    is($r->zcard('lg:{acct:acct_rec}:prov'), 1, 'the slot counts');
    ok(!$r->sismember('lg:{fleet}:inventory', $q[0]{phone_number}),
       'the number is not sold again');
    like($s->error_log, qr/\Q$subs[0]{id}\E.*queued for reconciliation/,
         'logged with the subscription id');
    $p->numbers_accounted('record failed', $TOTAL);
};

# The sweep took the purchase for a dead worker's while the confirm
# waited on Stripe (past linegate_reconcile_lost_after): its worker_lost
# outbox written (pv_inspect), the claim dropped and the entry queued
# (pv_settle), as a run does. The confirm's record then fails (the line
# key made no hash: record_failed, the sweep's outbox kept) and its settle
# must queue nothing: the worker_lost entry already holds the number. The
# settle looks at the other reason's marker, a key nginx names for it
# (pv_settle's KEYS[6], ngx_http_linegate_pv_settle.c): had nginx named
# the wrong one, a second entry would hold the number.
subtest 'the sweep queued the purchase first: record_failed adds none' =>
    sub {
    my $id = 'acct_swept';
    my $ak = "lg:{acct:$id}";
    my $a = $p->account($id);
    my $tok = $p->token($a);
    $p->fault(latency_ms => 500);

    my ($w, $number, $swept);
    my ($tx, $done) = $p->during($p->confirm_req($a, $tok), sub {
        my ($c) = @{ $p->claims($id) };
        return 0 unless $c;
        ($w, $number) = @$c;

        my @seen = $r->eval(lua_script('pv_inspect'), 5, $ak, "$ak:prov",
                            "$ak:resv:$w", "$ak:line:$w",
                            "$ak:reconcile:w:$w", $w, '0', $id, $number);
        $swept = [ $r->eval(lua_script('pv_settle'), 6,
                            'lg:{fleet}:pv:inflight',
                            'lg:{fleet}:inventory', 'lg:{fleet}:reconcile',
                            "lg:{fleet}:q:$id:$w:worker_lost",
                            'lg:{fleet}:held',
                            "lg:{fleet}:q:$id:$w:record_failed",
                            "$id $w $number", '0', 'worker_lost',
                            @{ $seen[2] }) ];
        # then the line key broken: the record fails (its outbox kept)
        $r->set("$ak:line:$w", 'not a hash');
        return 1;
    });
    ok($done, 'swept while the confirm waited on Stripe');
    is_deeply($swept, [1, 1], 'the sweep: the claim dropped, queued');

    $p->error_is($tx, 500, 'provisioning_failed', 'record failed',
                 qr/reconciliation/);
    like($s->error_log, qr/\(\Q$w\E\) not recorded \(record_failed\)/,
         'the confirm\'s record: record_failed');

    my @q = reconcile_of($id);
    is(scalar @q, 1, 'one entry on lg:{fleet}:reconcile')
        or diag(explain(\@q));
    is($q[0]{reason}, 'worker_lost', 'the sweep\'s');
    ok(!$r->exists("lg:{fleet}:q:$id:$w:record_failed"),
       'no record_failed marker: nothing queued by the confirm');
    is($r->hget("$ak:reconcile:w:$w", 'reason'), 'worker_lost',
       'the outbox: the sweep\'s');
    is_deeply($p->claims($id), [], 'no claim left');
    is(scalar @{ $p->reservations($id) }, 1,
       'the reservation kept for the run');
    ok(!$r->sismember('lg:{fleet}:inventory', $number),
       'the number is not sold again');
    $p->numbers_accounted('swept, then record failed', $TOTAL);
};

# Redis refusing writes for now (here NOREPLICAS: fewer replicas than
# min-replicas-to-write; MISCONF and OOM refuse the same way, at a
# script's first write) is not "the line cannot be recorded": the record
# goes durable and lands once Redis takes writes again. Before, pv_record
# answered record_failed for it, as if its outbox were written, and the
# paid purchase was queued to be cancelled.
subtest 'Redis refuses writes at the record: recorded once it takes them' =>
sub {
    my $a = $p->account('acct_refused');
    my $tok = $p->token($a);
    $p->fault(latency_ms => 500);

    # every master (a cluster's three), and more replicas than any has
    my @masters = $s->topology eq 'cluster'
                ? map { $r->node($_) } $s->cluster_masters : ($r);
    my $refuse = sub {
        $_->config_set('min-replicas-to-write', $_[0]) for @masters;
    };

    # while Stripe works (the number claimed), Redis stops taking writes
    my ($tx, $done) = $p->during($p->confirm_req($a, $tok), sub {
        return 0 unless @{ $p->claims('acct_refused') };
        $refuse->(10);
        return 1;
    });
    ok($done, 'writes refused in time');

    my $b = $p->error_is($tx, 500, 'provisioning_failed', 'record refused',
                         qr/will be recorded/);
    my @subs = subs_of('acct_refused');
    is(scalar @subs, 1, 'one subscription');
    is($b->{subscription_id}, $subs[0]{id}, 'its id in the answer');
    is_deeply($p->lines('acct_refused'), {}, 'no line while refused');

    $refuse->(0);
    ok(eventually(sub { %{ $p->lines('acct_refused') } }, 15),
       'the line is recorded once Redis takes writes');
    my ($line) = values %{ $p->lines('acct_refused') };
    is($line->{subscription_id}, $subs[0]{id}, 'with its subscription');
    is($line->{phone_number}, $subs[0]{metadata}{phone_number},
       'and the number Stripe was told');
    ok(eventually(sub { !@{ $p->claims('acct_refused') } }, 15),
       'the claim settled');
    is(scalar(reconcile_of('acct_refused')), 0, 'nothing queued');
    is(scalar(keys %{ {map { $_ => 1 }
           $r->keys('lg:{acct:acct_refused}:reconcile:w:*')} }), 0,
       'no outbox');
    $p->numbers_accounted('record refused', $TOTAL);
};

subtest 'Redis too slow at the reserve: 503, undone once it catches up' => sub {
    my $a = $p->account('acct_slowredis');
    my $tok = $p->token($a);
    my $inv = $r->scard('lg:{fleet}:inventory');
    mark();
    $r->client('PAUSE', 1500, 'ALL');
    my $tx = $p->confirm($a, $tok);
    $p->error_is($tx, 503, 'store_unavailable', 'reserve timed out');
    is($tx->res->headers->header('Retry-After'), 1, 'Retry-After: 1');
    # the pause ends: the reserve runs, then its release (a slow machine
    # may run them well after the 1.5 s pause)
    eventually(sub {
        $r->scard('lg:{fleet}:inventory') == $inv
            && !$r->zcard('lg:{acct:acct_slowredis}:prov')
            && !@{ $p->reservations('acct_slowredis') }
    }, 30);
    is($r->scard('lg:{fleet}:inventory'), $inv, 'the number is back');
    is($r->zcard('lg:{acct:acct_slowredis}:prov'), 0, 'no slot');
    is_deeply($p->reservations('acct_slowredis'), [], 'no reservation');
    is(scalar calls('/v1/subscriptions'), 0, 'Stripe not called');
    $s->wait_redis_connected(0, 30);
};

subtest 'Redis gone after the charge: 500, no false claim' => sub {
    my $a = $p->account('acct_alert');
    $p->fault(latency_ms => 400);

    # a worker may still be reconnecting after the last subtest's pause
    # (a 503 store_unavailable meanwhile, before anything was claimed:
    # seen in a clean-clone .ci/run, the other worker's keepalive timing
    # out a second after its preview): preview and confirm asked again
    my ($tok, $tx, $done);
    for (1 .. 10) {
        eventually(sub { $tok = eval { $p->token($a) } }, 30);
        ok($tok, 'a preview token') or return;

        # paused once the number is claimed (the reservation alone is too
        # early: a busy worker may not have sent the claim yet, which
        # would then time out before any charge)
        ($tx, $done) = $p->during($p->confirm_req($a, $tok), sub {
            return 0 unless @{ $p->claims('acct_alert') };
            $r->client('PAUSE', 2500, 'ALL');
            return 1;
        });
        last if $done || ($tx->res->code // 0) != 503;
        sleep 0.5;
    }
    ok($done, 'Redis paused after the claim');
    my $b = $p->error_is($tx, 500, 'provisioning_failed', 'Redis gone');
    like($b->{subscription_id}, qr/^sub_/, 'the subscription id');
    unlike($b->{message}, qr/has been queued/,
           'not said to be queued: it was not (yet)');

    my $log = $s->error_log;
    like($log, qr/\[error\].*subscription\ \Q$b->{subscription_id}\E
                  \ of\ account\ "acct_alert".*not\ recorded\ yet/x,
         'logged: the record waits for Redis, naming the subscription');
    unlike($log, qr/\[alert\]/, 'no alert: nothing lost');
    unlike($log, qr/\Q$a->{secret}\E|\Q$tok\E/, 'no secret, no token');

    sleep 2.6;    # the pause ends; the worker reconnects if it dropped
    $s->wait_redis_connected(0, 3);

    # the durable record lands (the timed-out one may have run too)
    my %l;
    eventually(sub {
        %l = map { ($_->{subscription_id} => 1) }
             values %{ $p->lines('acct_alert') };
        $l{ $b->{subscription_id} }
            && !@{ $p->reservations('acct_alert') };
    }, 30);
    ok($l{ $b->{subscription_id} }, 'recorded once Redis answered');
    is_deeply($p->reservations('acct_alert'), [], 'no reservation left');
    is_deeply([reconcile_of('acct_alert')], [], 'nothing to reconcile');
    # the record's answer was lost: the durable record's own answer
    # settles the claim (the line holds the number), once it comes
    ok(eventually(sub { !@{ $p->claims('acct_alert') } }, 30),
       'the claim settled after the durable record');
    my ($w, $line) = %{ $p->lines('acct_alert') };
    ok(!$r->sismember('lg:{fleet}:inventory', $line->{phone_number}),
       'the number stays with the line');
    $p->numbers_accounted('Redis gone after the charge', $TOTAL);
};

subtest 'Redis down: 503, nothing charged' => sub {
    my $a = $p->account('acct_down');
    my $tok = $p->token($a);
    mark();
    $s->stop_redis;
    my $tx = $p->confirm($a, $tok);
    $p->error_is($tx, 503, 'store_unavailable', 'Redis down');
    is($tx->res->headers->header('Retry-After'), 1, 'Retry-After: 1');
    is(scalar calls('/v1/subscriptions'), 0, 'Stripe not called');
    $s->start_redis;
};

subtest 'Stripe unreachable: 502, number and slot back' => sub {
    my $s2 = LG::Stack->new(STRIPE_URL => 'http://127.0.0.1:9',
                            STRIPE_TIMEOUT => '1s')->start;
    my $p2 = LG::Provision->new($s2);
    $p2->inventory('+14155559999');
    my $a = $p2->account('acct_unreach');
    my $tx = $p2->confirm($a, $p2->token($a));
    $p2->error_is($tx, 502, 'billing_unavailable', 'connection refused');
    is($s2->redis->scard('lg:{fleet}:inventory'), 1, 'the number is back');
    is($s2->redis->zcard('lg:{acct:acct_unreach}:prov'), 0, 'slot freed');
    $s2->stop;
};

done_testing();
