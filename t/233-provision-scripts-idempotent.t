# pv_record, pv_release and pv_settle are sent again after a lost answer
# (durable writes, issue 13): each must be safe to run twice, or after a
# first run whose answer never came. Run here straight on Redis (EVAL of
# the scripts as the module embeds them), twice each, with every key they
# touch in KEYS[] and one hash slot each (issue 10): the account's for
# pv_record and pv_release (the purchase's five keys, the outbox
# lg:{acct:A}:reconcile:w:<worker> among them), the fleet's for pv_settle
# (the claim, the inventory, the stream).
use strict;
use warnings;
use lib 't/lib';

use Test::More;
use LG::Stack;
use LG::Test qw(lua_script);
use LG::RedisCluster;

my $s = LG::Stack->new(stub => 0)->start;
my $r = $s->redis;

my $RECORD = lua_script('pv_record');
my $RELEASE = lua_script('pv_release');
my $SETTLE = lua_script('pv_settle');
my $TOKEN = lua_script('pv_token');
my $RESERVE = lua_script('pv_reserve');
my $CLAIM = lua_script('pv_claim');
my $INSPECT = lua_script('pv_inspect');
my $ISO = '2026-05-18T14:30:00.000Z';

# a purchase's five keys in its account, as the module passes them
# (ngx_http_linegate_key_purchase()): 5, then the names
sub pkeys {
    my ($acct, $w) = @_;
    my $a = "lg:{acct:$acct}";
    return (5, $a, "$a:prov", "$a:resv:$w", "$a:line:$w",
            "$a:reconcile:w:$w");
}

sub record {
    my ($acct, $w, $sub, $number) = @_;
    return [$r->eval($RECORD, pkeys($acct, $w), $w, $sub, 1000, $acct,
                     'lg-confirm-x', "cus_$acct", $ISO, $number)];
}

sub release {
    my ($acct, $w, $reason, $number) = @_;
    return [$r->eval($RELEASE, pkeys($acct, $w), $w, 1000, 3, 10,
                     $reason // '', $acct, 'lg-confirm-x', "cus_$acct", $ISO,
                     $number // '')];
}

# the entry's fields, as the confirm sends them with a reason
sub fields {
    my ($acct, $w, $number, $reason, $sub) = @_;
    return (account => $acct, subscription_id => $sub // '',
            phone_number => $number, worker_id => $w, reason => $reason,
            idempotency_key => 'lg-confirm-x', customer => "cus_$acct",
            at => $ISO);
}

# the reason whose entry would hold the same number: its marker is
# pv_settle's KEYS[6] (ngx_http_linegate_pv_settle.c pairs them)
my %holds = (record_failed => 'worker_lost', worker_lost => 'record_failed');

sub settle {
    my ($acct, $w, $number, $giveback, $reason, $sub) = @_;
    my $q = $reason ? "lg:{fleet}:q:$acct:$w:$reason" : 'lg:{fleet}:q:-';
    my $other = $reason && $holds{$reason}
                ? "lg:{fleet}:q:$acct:$w:$holds{$reason}" : 'lg:{fleet}:q:-';
    return [$r->eval($SETTLE, 6, 'lg:{fleet}:pv:inflight',
                     'lg:{fleet}:inventory', 'lg:{fleet}:reconcile', $q,
                     'lg:{fleet}:held', $other,
                     "$acct $w $number", $giveback, $reason // '',
                     $reason ? fields($acct, $w, $number, $reason, $sub)
                             : ())];
}

# a reservation and its claim, as pv_reserve and pv_claim leave them
sub reserve {
    my ($acct, $w, $number) = @_;
    $r->hset("lg:{acct:$acct}", plan => 'inbound_only');
    $r->zadd("lg:{acct:$acct}:prov", 500, $w);
    $r->hset("lg:{acct:$acct}:resv:$w", createdAt => $ISO);
    $r->zadd('lg:{fleet}:pv:inflight', 500, "$acct $w $number");
}

sub entries {
    my ($w) = @_;
    return grep { my %f = @{ $_->[1] }; $f{worker_id} eq $w }
           $r->xrange('lg:{fleet}:reconcile', '-', '+');
}

sub outbox {
    my ($acct, $w) = @_;
    return {$r->hgetall("lg:{acct:$acct}:reconcile:w:$w")};
}

subtest 'record twice: one line, the second run says recorded' => sub {
    reserve('acct_r', 'worker_r1', '+15550001');
    is_deeply(record('acct_r', 'worker_r1', 'sub_1', '+15550001'),
              [1, '+15550001'], 'recorded');
    is_deeply(record('acct_r', 'worker_r1', 'sub_1', '+15550001'),
              [1, '+15550001'],
              'run again: recorded, not "reservation missing"');
    is($r->hget('lg:{acct:acct_r}:line:worker_r1', 'subscription_id'),
       'sub_1', 'the line');
    is($r->hget('lg:{acct:acct_r}:line:worker_r1', 'phone_number'),
       '+15550001', 'with the claimed number');
    is($r->zscore('lg:{acct:acct_r}:prov', 'worker_r1'), 1000,
       'the slot counts from the record');
    is_deeply(outbox('acct_r', 'worker_r1'), {}, 'no outbox');

    is_deeply(settle('acct_r', 'worker_r1', '+15550001', 0),
              [1, 0], 'settled: the claim goes');
    is_deeply(settle('acct_r', 'worker_r1', '+15550001', 0),
              [0, 0], 'settled again: nothing left');
    ok(!$r->sismember('lg:{fleet}:inventory', '+15550001'),
       'the number stays with the line');
    is(scalar entries('worker_r1'), 0, 'nothing queued');

    # a release sent after the record (a confirm ended meanwhile)
    my $rel = release('acct_r', 'worker_r1', 'stripe_outcome_unknown',
                      '+15550001');
    is($rel->[8], 1, 'release: the line exists');
    ok($r->exists('lg:{acct:acct_r}:line:worker_r1'), 'the line stays');
    is($r->zscore('lg:{acct:acct_r}:prov', 'worker_r1'), 1000,
       'and its slot');
    ok(!$r->sismember('lg:{fleet}:inventory', '+15550001'),
       'its number is not sold again');
};

subtest 'record that cannot write the line: the outbox, queued once' => sub {
    reserve('acct_f', 'worker_f1', '+15550002');
    $r->set('lg:{acct:acct_f}:line:worker_f1', 'not a hash');
    is_deeply(record('acct_f', 'worker_f1', 'sub_2', '+15550002'),
              [0, 'record_failed'], 'written to the outbox');
    is_deeply(record('acct_f', 'worker_f1', 'sub_2', '+15550002'),
              [0, 'record_failed'], 'run again: the same');
    my $o = outbox('acct_f', 'worker_f1');
    is($o->{reason}, 'record_failed', 'the outbox: its reason');
    is($o->{subscription_id}, 'sub_2', 'naming the subscription');
    is($o->{phone_number}, '+15550002', 'and the number');
    is(scalar entries('worker_f1'), 0, 'no stream write in the account');
    ok($r->exists('lg:{acct:acct_f}:resv:worker_f1'),
       'the paid purchase stays reserved');
    is($r->zcard('lg:{acct:acct_f}:prov'), 1, 'the slot counts');

    my @f = ('acct_f', 'worker_f1', '+15550002', 0, 'record_failed',
             'sub_2');
    is_deeply(settle(@f), [1, 1], 'settled: claim gone, entry queued');
    is_deeply(settle(@f), [0, 0], 'settled again: nothing twice');
    my @e = entries('worker_f1');
    is(scalar @e, 1, 'one lg:{fleet}:reconcile entry');
    my %f = @{ $e[0][1] };
    is($f{phone_number}, '+15550002', 'holding the number');
    ok(!$r->sismember('lg:{fleet}:inventory', '+15550002'),
       'which is not in the inventory');
};

subtest 'record after the reservation was released: outbox once' => sub {
    is_deeply(record('acct_m', 'worker_m1', 'sub_3', '+15550004'),
              [0, 'reservation_missing'], 'written to the outbox');
    record('acct_m', 'worker_m1', 'sub_3', '+15550004');
    is(outbox('acct_m', 'worker_m1')->{reason}, 'reservation_missing',
       'one outbox');
};

subtest 'release twice, settle twice: the number back once' => sub {
    reserve('acct_l', 'worker_l1', '+15550003');
    $r->sadd('lg:{fleet}:held', '+15550003');    # pv_claim's
    my $inv = $r->scard('lg:{fleet}:inventory');
    my $rel = release('acct_l', 'worker_l1', 'stripe_outcome_unknown',
                      '+15550003');
    is($rel->[0], 1, 'released');
    is($rel->[8], 0, 'no line');
    is(release('acct_l', 'worker_l1', 'stripe_outcome_unknown',
               '+15550003')->[0], 0, 'run again: nothing left to release');
    is($r->zcard('lg:{acct:acct_l}:prov'), 0, 'the slot freed');
    is(outbox('acct_l', 'worker_l1')->{reason}, 'stripe_outcome_unknown',
       'the outbox');
    is($r->scard('lg:{fleet}:inventory'), $inv, 'nothing back yet');

    my @f = ('acct_l', 'worker_l1', '+15550003', 1,
             'stripe_outcome_unknown');
    is_deeply(settle(@f), [1, 1], 'settled');
    is_deeply(settle(@f), [0, 0], 'settled again');
    is($r->scard('lg:{fleet}:inventory'), $inv + 1, 'the number back, once');
    ok($r->sismember('lg:{fleet}:inventory', '+15550003'), 'that number');
    ok(!$r->sismember('lg:{fleet}:held', '+15550003'), 'no longer held');
    is(scalar entries('worker_l1'), 1, 'one lg:{fleet}:reconcile entry');
    is($r->zcard('lg:{fleet}:pv:inflight'), 0, 'no claim left');
};

# A day passes: the keys of one purchase that Redis expires age together
# (each TTL shortened by the time, gone once it runs out)
sub age {
    my ($secs, @keys) = @_;
    for my $k (@keys) {
        my $ttl = $r->pttl($k);
        next if $ttl < 0;
        if ($ttl <= $secs * 1000) {
            $r->del($k);
        } else {
            $r->pexpire($k, $ttl - $secs * 1000);
        }
    }
}

# the sweep settles a claim (the outbox's entry queued, the claim gone);
# the confirm's own settle, a durable write of a worker cut off from
# Redis, arrives more than a day later: while the outbox it settles can
# still be there (7 days), so is the marker that it was queued
subtest 'a settle a day late: the entry still queued once' => sub {
    reserve('acct_d', 'worker_d1', '+15550008');
    release('acct_d', 'worker_d1', 'stripe_outcome_unknown', '+15550008');
    my @f = ('acct_d', 'worker_d1', '+15550008', 1,
             'stripe_outcome_unknown');
    is_deeply(settle(@f), [1, 1], 'settled, queued');
    my $q = 'lg:{fleet}:q:acct_d:worker_d1:stripe_outcome_unknown';
    my $o = 'lg:{acct:acct_d}:reconcile:w:worker_d1';
    cmp_ok($r->ttl($q), '>=', $r->ttl($o),
           'the marker outlives the outbox');
    age(86400 + 1, $q, $o);
    ok($r->exists($o), 'a day later the outbox is still there');
    is_deeply(settle(@f), [0, 0], 'the late settle: nothing queued');
    is(scalar entries('worker_d1'), 1, 'one lg:{fleet}:reconcile entry');
    age(6 * 86400, $q, $o);
    ok(!$r->exists($o), 'the outbox gone after 7 days');
};

subtest 'the sweep settles a claim first: the confirm queues nothing' => sub {
    reserve('acct_s', 'worker_s1', '+15550005');
    my @f = ('acct_s', 'worker_s1', '+15550005', 0, 'worker_lost');
    is_deeply(settle(@f), [1, 1], 'the sweep: worker_lost queued');
    is_deeply(settle('acct_s', 'worker_s1', '+15550005', 0,
                     'record_failed', 'sub_5'),
              [0, 0], 'the confirm, late: no claim, no second entry');
    is(scalar entries('worker_s1'), 1, 'one entry for the purchase');
};

# a live worker settled first (its late record refused by the sweep's
# outbox: reservation_missing, its number back): the sweep's settle,
# after it, must not queue a worker_lost entry that would return the
# number again
subtest 'the confirm settles a claim first: the sweep queues nothing' => sub {
    reserve('acct_s', 'worker_s2', '+15550006');
    my $inv = $r->scard('lg:{fleet}:inventory');
    is_deeply(settle('acct_s', 'worker_s2', '+15550006', 1,
                     'reservation_missing', 'sub_6'),
              [1, 1], 'the confirm, late: its number back, its entry');
    is_deeply(settle('acct_s', 'worker_s2', '+15550006', 0, 'worker_lost'),
              [0, 0], 'the sweep, after it: no claim, nothing queued');
    is_deeply([map { +{@{ $_->[1] }}->{reason} } entries('worker_s2')],
              ['reservation_missing'], 'one entry for the purchase');
    is($r->scard('lg:{fleet}:inventory'), $inv + 1, 'the number back, once');
};

# TOKEN, the confirm's first step (the token's own slot): sent once per
# confirm, but parallel confirms of one token, or a confirm re-sent by a
# client after a lost answer, run it again: the second run finds nothing
# an intent ("<A> <worker> -"): settled, it returns no number
subtest 'settle of an intent: dropped, nothing back in the inventory' => sub {
    $r->zadd('lg:{fleet}:pv:inflight', 500, 'acct_i worker_i1 -');
    my $before = $r->scard('lg:{fleet}:inventory');
    is_deeply(settle('acct_i', 'worker_i1', '-', 1), [1, 0], 'dropped');
    is_deeply(settle('acct_i', 'worker_i1', '-', 1), [0, 0], 'once');
    is($r->scard('lg:{fleet}:inventory'), $before, 'nothing returned');
    ok(!$r->sismember('lg:{fleet}:inventory', '-'), 'no "-" in stock');
};

# the sweep's look at a purchase: an intent's bare reservation released
# in the same step; a numbered claim's kept for the run, its outbox
# written as worker_lost (the fence a live worker's late record meets)
subtest 'inspect: an intent\'s reservation released, once' => sub {
    for my $w (qw(worker_i2 worker_i3)) {
        $r->zadd('lg:{acct:acct_i}:prov', 500, $w);
        $r->hset("lg:{acct:acct_i}:resv:$w", createdAt => $ISO);
    }
    $r->hset('lg:{acct:acct_i}', stripeCustomerId => 'cus_i');
    my @fence = (account => 'acct_i', subscription_id => '',
                 phone_number => '+15550042', worker_id => 'worker_i2',
                 reason => 'worker_lost', idempotency_key => '',
                 customer => 'cus_i', at => $ISO);
    my $numbered = [$r->eval($INSPECT, pkeys('acct_i', 'worker_i2'),
                             'worker_i2', '0', 'acct_i', '+15550042')];
    is_deeply($numbered, [0, 1, \@fence, 'cus_i', $ISO, 0],
              'a numbered claim\'s: kept, its outbox written: worker_lost');
    ok($r->exists('lg:{acct:acct_i}:resv:worker_i2'), 'still reserved');
    is_deeply({$r->hgetall('lg:{acct:acct_i}:reconcile:w:worker_i2')},
              {@fence}, 'the outbox holds the entry');
    is_deeply([$r->eval($INSPECT, pkeys('acct_i', 'worker_i2'),
                        'worker_i2', '0', 'acct_i', '+15550042')],
              [0, 1, \@fence, 'cus_i', $ISO, 0], 'again: the same, once');
    my $intent = [$r->eval($INSPECT, pkeys('acct_i', 'worker_i3'),
                           'worker_i3', '1', 'acct_i', '-')];
    is_deeply($intent, [0, 1, [], 'cus_i', $ISO, 1], 'an intent\'s: released');
    ok(!$r->exists('lg:{acct:acct_i}:resv:worker_i3'), 'the reservation gone');
    is_deeply([$r->zrange('lg:{acct:acct_i}:prov', 0, -1)], ['worker_i2'],
              'its slot freed, the other\'s kept');
    is_deeply([$r->eval($INSPECT, pkeys('acct_i', 'worker_i3'),
                        'worker_i3', '1', 'acct_i', '-')],
              [0, 0, [], 'cus_i', '', 0],
              'again: nothing found, nothing released');
    # an intent whose purchase wrote a line: nothing is released
    $r->hset('lg:{acct:acct_i}:line:worker_i4', phone_number => '+1555');
    $r->hset('lg:{acct:acct_i}:resv:worker_i4', createdAt => $ISO);
    is([$r->eval($INSPECT, pkeys('acct_i', 'worker_i4'), 'worker_i4',
                 '1', 'acct_i', '-')]->[5], 0,
       'a reservation with a line: kept');
    ok($r->exists('lg:{acct:acct_i}:resv:worker_i4'), 'still reserved');
    ok(!$r->exists('lg:{acct:acct_i}:reconcile:w:worker_i4'),
       'no outbox written for it');

    # the worker of worker_i2 was alive, cut off from Redis: its record,
    # re-sent once Redis is back, meets the fence
    is_deeply(record('acct_i', 'worker_i2', 'sub_late', '+15550042'),
              [0, 'reservation_missing'],
              'a late record after the sweep: refused, reservation_missing');
    ok(!$r->exists('lg:{acct:acct_i}:line:worker_i2'), 'no line made');
    ok(!$r->exists('lg:{acct:acct_i}:resv:worker_i2'),
       'the reservation gone');
    is($r->zscore('lg:{acct:acct_i}:prov', 'worker_i2'), undef,
       'its slot freed');
    is($r->hget('lg:{acct:acct_i}:reconcile:w:worker_i2', 'reason'),
       'worker_lost', 'the outbox still the sweep\'s');
    is_deeply(record('acct_i', 'worker_i2', 'sub_late', '+15550042'),
              [0, 'reservation_missing'], 'again: the same');
};

sub token {
    my ($tok, $acct, $now) = @_;
    return [$r->eval($TOKEN, 1, "lg:pv:$tok", $acct, $now // 1000)];
}

subtest 'the token: spent once, another account\'s kept' => sub {
    $r->set('lg:pv:lpv_t1', '{"account":"acct_t","expires_at":5000}');
    is_deeply(token('lpv_t1', 'acct_u'), [403], 'another account: 403');
    is_deeply(token('lpv_t1', 'acct_u'), [403], 'again: 403, still kept');
    ok($r->exists('lg:pv:lpv_t1'), 'kept for its owner');
    is_deeply(token('lpv_t1', 'acct_t'), [200], 'the owner: spent');
    ok(!$r->exists('lg:pv:lpv_t1'), 'consumed');
    is_deeply(token('lpv_t1', 'acct_t'), [410], 'run twice: 410');
    is_deeply(token('lpv_t1', 'acct_u'), [410], 'then 410 for anyone');

    $r->set('lg:pv:lpv_t2', '{"account":"acct_t","expires_at":1000}');
    is_deeply(token('lpv_t2', 'acct_t', 1000), [410], 'expired: 410');
    ok(!$r->exists('lg:pv:lpv_t2'), 'and consumed');
    is_deeply(token('lpv_t2', 'acct_t', 1000), [410], 'run twice: 410');

    $r->set('lg:pv:lpv_t3', 'not json');
    is_deeply(token('lpv_t3', 'acct_t'), [410], 'malformed: 410');
    ok(!$r->exists('lg:pv:lpv_t3'), 'and consumed');
    is_deeply(token('lpv_t3', 'acct_t'), [410], 'run twice: 410');
};

# RESERVE with the token as KEYS[6] (a token of the account's slot):
# spent before the key id's check, once; a retry finds it spent (410)
# a 3-character tag of the account's slot, as the module's table holds
# (on a cluster the script's six keys must share one slot)
sub slot_tag {
    my ($acct) = @_;
    my $want = LG::RedisCluster::keyslot("lg:{acct:$acct}");
    my @c = ('a' .. 'z', 'A' .. 'Z', '0' .. '9');
    for my $x (@c) { for my $y (@c) { for my $z (@c) {
        my $tag = "$x$y$z";
        return $tag if LG::RedisCluster::keyslot("{$tag}") == $want;
    } } }
    die "no tag in the slot of $acct";
}

subtest 'reserve spends a token of its slot: once' => sub {
    my $tag = slot_tag('acct_k');
    my $tk = "lg:pv:{$tag}:lpv_${tag}s1";
    $r->hset('lg:{acct:acct_k}', plan => 'inbound_only',
             stripeCustomerId => 'cus_k', key_id => 'sbk_k');
    my @k = pkeys('acct_k', 'worker_k1');
    $k[0] = 6;
    my $reserve = sub {
        my ($kid, @keys) = @_;
        return [$r->eval($RESERVE, @keys, $tk, 'acct_k', 1000, 3, 10,
                         $keys[3] =~ s/.*://r, $ISO, $kid, '')];
    };

    $r->set($tk, '{"account":"acct_other","expires_at":5000}');
    is($reserve->('sbk_k', @k)->[0], 403, 'another account\'s: 403');
    ok($r->exists($tk), 'kept for its owner');
    ok(!$r->exists('lg:{acct:acct_k}:resv:worker_k1'), 'nothing reserved');

    $r->set($tk, '{"account":"acct_k","expires_at":5000}');
    is($reserve->('sbk_old', @k)->[0], 401, 'a previous key id: 401');
    ok($r->exists($tk), 'the token kept (a 401 never consumes one)');

    $r->set($tk, '{"account":"acct_k","expires_at":5000}');
    my $res = $reserve->('sbk_k', @k);
    is($res->[0], 200, 'the account\'s: reserved');
    ok(!$r->exists($tk), 'and spent');
    ok($r->exists('lg:{acct:acct_k}:resv:worker_k1'), 'the reservation');
    is($reserve->('sbk_k', @k)->[0], 410, 'run twice: 410');
    is($r->zcard('lg:{acct:acct_k}:prov'), 1, 'one slot counted');

    $r->set($tk, '{"account":"acct_k","expires_at":500}');
    my @k2 = pkeys('acct_k', 'worker_k2');
    $k2[0] = 6;
    is($reserve->('sbk_k', @k2)->[0], 410, 'expired: 410');
    ok(!$r->exists('lg:{acct:acct_k}:resv:worker_k2'), 'nothing reserved');
};

subtest 'reserve then claim: one slot each, the inventory empty' => sub {
    $r->hset('lg:{acct:acct_c}', plan => 'inbound_only',
             stripeCustomerId => 'cus_c', key_id => 'sbk_c');
    $r->set('lg:pv:lpv_c1',
            '{"account":"acct_c","expires_at":9999999999999}');
    $r->del('lg:{fleet}:inventory');
    is_deeply(token('lpv_c1', 'acct_c'), [200], 'the token: spent');
    is([$r->eval($RESERVE, pkeys('acct_c', 'worker_c0'), 'acct_c', 1000, 3,
                 10, 'worker_c0', $ISO, 'sbk_old', '')]->[0], 401,
       'another key id: 401');
    ok(!$r->exists('lg:{acct:acct_c}:resv:worker_c0'), 'nothing reserved');
    my $res = [$r->eval($RESERVE, pkeys('acct_c', 'worker_c1'), 'acct_c',
                        1000, 3, 10, 'worker_c1', $ISO, 'sbk_c', '')];
    is($res->[0], 200, 'reserved');
    is($res->[8], 'cus_c', 'the customer');
    is_deeply([$r->zrange('lg:{fleet}:pv:inflight', 0, -1)], [],
              'no intent named: none written');
    # one Redis: the intent written by the reservation's own step (two
    # slots: a cluster writes it in a step of its own, t/038)
    if ($s->topology ne 'cluster') {
        my $ri = [$r->eval($RESERVE, 6, (pkeys('acct_c', 'worker_c9'))[1 .. 5],
                           'lg:{fleet}:pv:inflight', 'acct_c', 1000, 3, 10,
                           'worker_c9', $ISO, 'sbk_c', '',
                           'acct_c worker_c9 -')];
        is($ri->[0], 200, 'reserved with its intent');
        is($r->zscore('lg:{fleet}:pv:inflight', 'acct_c worker_c9 -'), 1000,
           'the intent, in the same step');
        $r->hset('lg:{acct:acct_c}', plan => 'none');
        $ri = [$r->eval($RESERVE, 6, (pkeys('acct_c', 'worker_c8'))[1 .. 5],
                        'lg:{fleet}:pv:inflight', 'acct_c', 1000, 3, 10,
                        'worker_c8', $ISO, 'sbk_c', '', 'acct_c worker_c8 -')];
        is($ri->[0], 403, 'refused (plan)');
        is($r->zscore('lg:{fleet}:pv:inflight', 'acct_c worker_c8 -'), undef,
           'a refusal writes no intent');
        $r->hset('lg:{acct:acct_c}', plan => 'inbound_only');
        $r->zrem('lg:{fleet}:pv:inflight', 'acct_c worker_c9 -');
        $r->zrem('lg:{acct:acct_c}:prov', 'worker_c9');
        $r->del('lg:{acct:acct_c}:resv:worker_c9');
    }
    ok(!defined $r->hget('lg:{acct:acct_c}:resv:worker_c1', 'phone_number'),
       'the reservation holds no number');
    my @claim = (4, 'lg:{fleet}:inventory', 'lg:{fleet}:pv:inflight',
                 'lg:{fleet}:held', 'lg:{fleet}:inventory:quarantine',
                 'acct_c', 'worker_c1', 1000);
    $r->sadd('lg:{fleet}:inventory', '+15550007');
    is_deeply([$r->eval($CLAIM, @claim)], [2],
              'claim with no intent: refused');
    is($r->scard('lg:{fleet}:inventory'), 1, 'nothing taken');
    is_deeply([$r->zrange('lg:{fleet}:pv:inflight', 0, -1)], [],
              'nothing in the journal');
    $r->del('lg:{fleet}:inventory');
    # INTENT's ZADD, before the reserve
    $r->zadd('lg:{fleet}:pv:inflight', 900, 'acct_c worker_c1 -');
    is_deeply([$r->eval($CLAIM, @claim)], [0], 'claim: inventory empty');
    is($r->zscore('lg:{fleet}:pv:inflight', 'acct_c worker_c1 -'), 900,
       'the intent stays, for the settle after the release');
    $r->sadd('lg:{fleet}:inventory', '+15550006');
    is_deeply([$r->eval($CLAIM, @claim)], [1, '+15550006'], 'claimed');
    is_deeply([$r->zrange('lg:{fleet}:pv:inflight', 0, -1, 'WITHSCORES')],
              ['acct_c worker_c1 +15550006', 1000],
              'the claim, in the journal, in the intent\'s place');
    is($r->scard('lg:{fleet}:inventory'), 0, 'out of the inventory');
    ok($r->sismember('lg:{fleet}:held', '+15550006'),
       'held: an inventory load leaves it out');
    is_deeply(token('lpv_c1', 'acct_c'), [410], 'the token: used');
    my $before = $r->zcard('lg:{acct:acct_c}:prov');
    for my $code (410, 403) {
        $res = [$r->eval($RESERVE, pkeys('acct_c', 'worker_c2'), 'acct_c',
                         1000, 3, 10, 'worker_c2', $ISO, 'sbk_c', $code)];
        is($res->[0], $code, "TOKEN's $code: the reserve's answer");
        is(scalar @$res, $code == 403 ? 9 : 8, "$code: with the windows");
    }
    is($r->zcard('lg:{acct:acct_c}:prov'), $before, 'nothing counted');
    ok(!$r->exists('lg:{acct:acct_c}:resv:worker_c2'), 'nothing reserved');
};

# A sweep takes an intent older than linegate_reconcile_lost_after for a
# dead worker's: pv_inspect releases its reservation (the account's slot)
# one step before pv_settle drops it (the fleet's). A confirm stalled as
# long whose CLAIM lands in between must take nothing: no number with no
# reservation behind it, no charge (t/239 with nginx).
subtest 'claim of an intent past lost_after: refused, the intent kept' =>
sub {
    my $f = 'lg:{fleet}';
    $r->del("$f:inventory", "$f:pv:inflight", "$f:held");
    $r->sadd("$f:inventory", '+15550031');
    $r->zadd("$f:pv:inflight", 1000, 'acct_late worker_late1 -');
    $r->hset('lg:{acct:acct_late}:resv:worker_late1', createdAt => $ISO);
    my $res = [$r->eval($INSPECT, pkeys('acct_late', 'worker_late1'),
                        'worker_late1', '1', 'acct_late', '-')];
    is($res->[5], 1, 'the sweep released the reservation');
    my @claim = (4, "$f:inventory", "$f:pv:inflight", "$f:held",
                 "$f:inventory:quarantine", 'acct_late', 'worker_late1');
    is_deeply([$r->eval($CLAIM, @claim, 1000 + 600000, 600000)], [3],
              'the late claim: refused');
    is($r->scard("$f:inventory"), 1, 'nothing taken');
    is($r->zscore("$f:pv:inflight", 'acct_late worker_late1 -'), 1000,
       'the intent stays, for a settle');
    is_deeply([$r->eval($SETTLE, 6, "$f:pv:inflight", "$f:inventory",
                        "$f:reconcile", "$f:q:-", "$f:held", "$f:q:-",
                        'acct_late worker_late1 -', '0', '')], [1, 0],
              'the sweep\'s settle drops it');
    # younger than lost_after by 1 ms: claimed as before; no age given
    # (a caller of before): not looked at
    $r->zadd("$f:pv:inflight", 1000, 'acct_late worker_late2 -');
    is_deeply([$r->eval($CLAIM, @claim[0 .. 5], 'worker_late2',
                        1000 + 599999, 600000)], [1, '+15550031'],
              'a claim on time: the number');
    $r->sadd("$f:inventory", '+15550032');
    $r->zadd("$f:pv:inflight", 1000, 'acct_late worker_late3 -');
    is_deeply([$r->eval($CLAIM, @claim[0 .. 5], 'worker_late3', 10 ** 12)],
              [1, '+15550032'], 'no age given: claimed');
    $r->del("$f:inventory", "$f:pv:inflight", "$f:held");
};

# numbers no E.164 number (a country code of 0, loaded before the loader
# refused it): set aside, never claimed; at most 100 a step, so that a
# long bad list costs one confirm a 503 (the intent kept), not Redis a
# stall, and the next claim goes on
subtest 'claim: numbers that are no E.164 number set aside' => sub {
    my $f = 'lg:{fleet}';
    $r->del("$f:inventory", "$f:pv:inflight", "$f:held",
            "$f:inventory:quarantine");
    my @bad = map { sprintf '+0%010d', $_ } 1 .. 101;
    $r->sadd("$f:inventory", @bad);
    $r->zadd("$f:pv:inflight", 1000, 'acct_q worker_q1 -');
    my @claim = (4, "$f:inventory", "$f:pv:inflight", "$f:held",
                 "$f:inventory:quarantine", 'acct_q', 'worker_q1', 1000);
    my $res = [$r->eval($CLAIM, @claim)];
    is($res->[0], 0, '101 bad numbers: none claimed this step');
    is(scalar @$res, 101, 'the 100 set aside, named');
    is($r->scard("$f:inventory:quarantine"), 100, 'in the quarantine');
    is($r->scard("$f:inventory"), 1, 'one left for the next step');
    is($r->zscore("$f:pv:inflight", 'acct_q worker_q1 -'), 1000,
       'the intent kept');
    $r->sadd("$f:inventory", '+15550050');
    $res = [$r->eval($CLAIM, @claim)];
    is($res->[0], 1, 'the next step: claimed');
    is($res->[1], '+15550050', 'the good number');
    is($r->scard("$f:inventory:quarantine") + $r->scard("$f:inventory"),
       101, 'the last bad number set aside (if drawn first) or left');
    is($r->scard("$f:held"), 1, 'only the good number held');
    $r->del("$f:inventory", "$f:pv:inflight", "$f:held",
            "$f:inventory:quarantine");
};

done_testing();
