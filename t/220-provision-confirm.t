# POST /accounts/lines/provision-confirm (SPEC 3.4, 3.5): the purchase,
# the token's life, the re-checks, cards and declines. Stripe failures
# are in 230, races in 240.
use strict;
use warnings;
use lib 't/lib';

use Test::More;
use Digest::SHA qw(sha256_hex);
use LG::Stack;
use LG::Test;
use LG::Provision qw(now_ms);
use LG::RedisCluster;

my $s = LG::Stack->new->start;
my $p = LG::Provision->new($s);
my $r = $s->redis;

my $DAY = 86_400_000;

$p->inventory($p->numbers(20));

# the stub's answers to /v1/subscriptions since the last call
my $seen = 0;
sub sub_calls {
    my $log = $p->stub_state->{log} // [];
    my @new = grep { $_->{path} eq '/v1/subscriptions' } @$log[$seen .. $#$log];
    $seen = @$log;
    return @new;
}

# number back in the inventory, no slot, no reservation, no line
sub nothing_kept {
    my ($id, $count, $name) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    is($r->scard('lg:{fleet}:inventory'), $count, "$name: the number is back");
    is($r->zcard("lg:{acct:$id}:prov"), 0, "$name: the slot is free");
    is_deeply($p->reservations($id), [], "$name: no reservation left");
    is_deeply($p->lines($id), {}, "$name: no line");
}

subtest 'a purchase' => sub {
    my $a = $p->account('acct_ok');
    my $tok = $p->token($a);
    my $inv = $r->scard('lg:{fleet}:inventory');
    sub_calls();

    my $t0 = now_ms();
    my $tx = $p->confirm($a, $tok);
    my $b = $p->answer($tx, 200, 'confirm');

    is($b->{status}, 'OK', 'status OK');
    like($b->{phone_number}, qr/^\+1415555\d{4}$/, 'a number of ours');
    like($b->{worker_id}, qr/^worker_[0-9a-f]{24}$/, 'worker_id');
    like($b->{subscription_id}, qr/^sub_\w+$/, 'subscription_id');
    is_deeply([sort keys %$b],
              [qw(phone_number status subscription_id worker_id)], 'fields');
    is($tx->res->headers->header('RateLimit-Policy'),
       '"daily";q=3;w=86400, "monthly";q=10;w=2592000', 'RateLimit-Policy');
    like($tx->res->headers->header('RateLimit'),
         qr/^"daily";r=2;t=864\d\d, "monthly";r=9;t=25920\d\d$/,
         'RateLimit: the new line counts');

    # Redis: the data model's keys
    ok(!$r->sismember('lg:{fleet}:inventory', $b->{phone_number}),
       'the number left the inventory');
    is($r->scard('lg:{fleet}:inventory'), $inv - 1, 'exactly one number taken');
    my $line = {$r->hgetall("lg:{acct:acct_ok}:line:$b->{worker_id}")};
    is($line->{phone_number}, $b->{phone_number}, 'line: phone_number');
    is($line->{subscription_id}, $b->{subscription_id},
       'line: subscription_id');
    like($line->{createdAt}, qr/^\d{4}-\d\d-\d\dT[\d:]{8}\.\d{3}Z$/,
         'line: createdAt');
    my $score = $r->zscore('lg:{acct:acct_ok}:prov', $b->{worker_id});
    ok($score >= $t0 && $score <= now_ms(),
       'counted from the moment the confirm succeeded');
    is_deeply($p->reservations('acct_ok'), [], 'no reservation left');
    ok(!$r->exists($p->token_key($a, $tok)), 'the token is gone');

    # Stripe: one subscription, the agent-line price, card on file
    my @calls = sub_calls();
    is(scalar @calls, 1, 'one POST /v1/subscriptions');
    my $c = $calls[0];
    is($c->{method}, 'POST', 'POST');
    is($c->{idempotency_key},
       'lg-confirm-' . substr(sha256_hex($tok), 0, 32),
       'Idempotency-Key derived from the token');
    is($c->{params}{customer}, 'cus_acct_ok', 'customer');
    is($c->{params}{items}[0]{price}, 'price_agent_line', 'agent-line price');
    is($c->{params}{payment_behavior}, 'error_if_incomplete',
       'payment_behavior');
    is_deeply($c->{params}{metadata}, {account_id => 'acct_ok',
              phone_number => $b->{phone_number},
              worker_id => $b->{worker_id}}, 'metadata');
    my ($sub) = grep { $_->{id} eq $b->{subscription_id} }
                $p->subscriptions;
    ok($sub, 'the subscription exists at Stripe');
    is($sub->{customer}, 'cus_acct_ok', 'for the account\'s customer');
    my ($get) = grep { $_->{path} eq '/v1/customers/cus_acct_ok' }
                @{ $p->stub_state->{log} };
    is($get->{method}, 'GET', 'the customer was read first');

    my $l = $p->answer($p->limits($a), 200, 'limits');
    is($l->{limits}{daily}{used}, 1, 'limits: 1 used today');
};

# the number in flight: a claim of lg:{fleet}:pv:inflight ("<account>
# <worker> <number>") while Stripe works, settled with the line
# an operator posting the number list again (docs: numbers already there
# count once) must not put a number back that a line holds: a second
# purchase would get it too
subtest 'a number on a line is left out of an inventory load' => sub {
    my $a = $p->account('acct_again');
    my $b = $p->answer($p->confirm($a, $p->token($a)), 200, 'confirm');
    my $n = $b->{phone_number};
    ok(!$r->sismember('lg:{fleet}:inventory', $n), 'out of the inventory');

    my $free = '+14155559876';
    my $tx = $s->op(POST => '/inventory', {numbers => [$n, $free]});
    is($tx->res->code, 200, 'the list posted again');
    is_deeply($tx->res->json, {added => 1, held => 1,
                               total => $r->scard('lg:{fleet}:inventory')},
              'the free number added, the one on a line left out');
    ok(!$r->sismember('lg:{fleet}:inventory', $n), 'still out');
    $r->srem('lg:{fleet}:inventory', $free);
};

subtest 'the purchase that fills a window: RateLimit says when it frees' => sub {
    # pv_reserve.lua counts the new line in both windows and looks up only
    # the line that frees a slot: the limit-th newest for the full daily
    # window, the oldest for the monthly one
    my $a = $p->account('acct_fill');
    my $now = now_ms();
    $r->zadd('lg:{acct:acct_fill}:prov', $now - 5 * 3_600_000, 'w_old',
             $now - 4 * 3_600_000, 'w_mid');
    my $tx = $p->confirm($a, $p->token($a));
    $p->answer($tx, 200, 'the third line of the day');
    my ($dr, $dt, $mr, $mt) = ($tx->res->headers->header('RateLimit') // '')
        =~ /^"daily";r=(\d+);t=(\d+), "monthly";r=(\d+);t=(\d+)$/;
    is($dr, 0, 'daily: none left');
    ok(defined $dt && abs($dt - 19 * 3600) <= 5,
       'daily: frees when the oldest of the three leaves (19 h)')
        or diag $tx->res->headers->header('RateLimit');
    is($mr, 7, 'monthly: 7 left');
    ok(defined $mt && abs($mt - (30 * 86400 - 5 * 3600)) <= 5,
       'monthly: resets when its oldest leaves')
        or diag $tx->res->headers->header('RateLimit');
};

# pv_reserve.lua's answer reuses the windows' oldest line it read
# before the purchase unless the new line is older: a window whose only
# line another nginx scored ahead of this one's clock (2 h) resets when
# the new line leaves, not that one
subtest 'a window whose oldest line is ahead of the clock' => sub {
    my $a = $p->account('acct_ahead');
    my $now = now_ms();
    $r->zadd('lg:{acct:acct_ahead}:prov', $now + 2 * 3_600_000, 'w_ahead');
    my $tx = $p->confirm($a, $p->token($a));
    $p->answer($tx, 200, 'a purchase beside a line scored ahead');
    my ($dr, $dt, $mr, $mt) = ($tx->res->headers->header('RateLimit') // '')
        =~ /^"daily";r=(\d+);t=(\d+), "monthly";r=(\d+);t=(\d+)$/;
    is($dr, 1, 'daily: both lines count');
    ok(defined $dt && abs($dt - 86400) <= 5,
       'daily: frees when the new line leaves (24 h, not 26 h)')
        or diag $tx->res->headers->header('RateLimit');
    is($mr, 8, 'monthly: both lines count');
    ok(defined $mt && abs($mt - 30 * 86400) <= 5,
       'monthly: the same')
        or diag $tx->res->headers->header('RateLimit');
};

subtest 'the claim while Stripe works, gone after the 200' => sub {
    my $a = $p->account('acct_claim');
    my $tok = $p->token($a);
    $p->fault(latency_ms => 800);

    my $claims;
    my ($tx, $seen) = $p->during($p->confirm_req($a, $tok), sub {
        $claims = $p->claims('acct_claim');
        return scalar @$claims;
    });
    ok($seen, 'a claim while the subscription is held');
    my $b = $p->answer($tx, 200, 'confirmed');
    is(scalar @$claims, 1, 'one claim');
    is($claims->[0][0], $b->{worker_id}, 'of the purchase\'s worker');
    is($claims->[0][1], $b->{phone_number}, 'holding the number sold');
    ok(!$r->sismember('lg:{fleet}:inventory', $b->{phone_number}),
       'out of the inventory meanwhile');
    is_deeply($p->claims('acct_claim'), [], 'no claim after the 200');
    is($p->lines('acct_claim')->{ $b->{worker_id} }{phone_number},
       $b->{phone_number}, 'the number on the line');
    $p->clear_faults;
};

subtest 'a default source is a card on file too' => sub {
    my $a = $p->account('acct_src', card => 0, source => 1);
    $p->answer($p->confirm($a, $p->token($a)), 200, 'confirm');
};

subtest '410: used, unknown, malformed, expired' => sub {
    my $a = $p->account('acct_410');
    my $tok = $p->token($a);
    $p->answer($p->confirm($a, $tok), 200, 'first confirm');
    my $tx = $p->confirm($a, $tok);
    $p->error_is($tx, 410, 'token_expired', 'used',
                 qr/expired, was already used, or is unknown/);
    ok($tx->res->headers->header('RateLimit'), 'RateLimit headers');

    $p->error_is($p->confirm($a, 'lpv_' . 'A' x 40), 410, 'token_expired',
                 'unknown');
    $p->error_is($p->confirm($a, 'lpv_short'), 410, 'token_expired',
                 'too short');
    $p->error_is($p->confirm($a, 'xyz_' . 'A' x 40), 410, 'token_expired',
                 'no lpv_');
    $p->error_is($p->confirm($a, 'lpv_' . 'A' x 40 . '*'), 410,
                 'token_expired', 'odd characters');
    $p->error_is($p->confirm($a, 'lpv_' . 'A' x 500), 410, 'token_expired',
                 'very long');
    $p->error_is($p->confirm($a, ''), 410, 'token_expired', 'empty string');
    # valid JSON ("\u0000"), but no token holds a NUL: not cut short there
    $tok = $p->token($a);
    $p->error_is($p->confirm($a, {preview_token => "$tok\0x"}), 410,
                 'token_expired', 'a NUL after a token');
    $p->answer($p->confirm($a, $tok), 200, 'that token is still good');

    # expired by Redis
    $tok = $p->token($a);
    $r->pexpire($p->token_key($a, $tok), 1);
    select undef, undef, undef, 0.05;
    $p->error_is($p->confirm($a, $tok), 410, 'token_expired',
                 'expired (TTL)');

    # expired by its own expires_at (a clock a bit ahead of Redis's)
    $tok = $p->token($a);
    my $key = $p->token_key($a, $tok);
    (my $pv = $r->get($key)) =~ s/"expires_at":\d+/"expires_at":1/;
    $r->set($key, $pv, 'EX', 60);
    $p->error_is($p->confirm($a, $tok), 410, 'token_expired',
                 'expired (expires_at)');
    ok(!$r->exists($key), 'and consumed');
};

# the token is a bearer secret: a key name is shown by MONITOR, SLOWLOG,
# keyspace events, SCAN and RDB dumps, so it is stored under its digest
# (docs/security.md), in no name and no value, before the confirm and
# after it; the confirm still finds it, once
subtest 'the token is in no key name and no value in Redis' => sub {
    my $a = $p->account('acct_digest');
    my $tok = $p->token($a);
    # past "lpv_" and the tag (the account's slot names it): the random
    # part, which no name or value may hold either
    my $secret = substr($tok, 7);
    my $key = $p->token_key($a, $tok);

    for my $when ('after the preview', 'after the confirm') {
        my $kv = $p->stored;
        ok(scalar keys %$kv, "$when: the keyspace read");
        is_deeply([grep { index($_, $secret) >= 0 } sort keys %$kv], [],
                  "$when: no key name holds the token");
        is_deeply([grep { index($kv->{$_}, $secret) >= 0 } sort keys %$kv],
                  [], "$when: no value holds the token");
        if ($when =~ /preview/) {
            ok(exists $kv->{$key}, "$when: stored as lg:pv:{<tag>}:<digest>")
                or diag explain [grep { /^lg:pv:/ } sort keys %$kv];
            $p->answer($p->confirm($a, $tok), 200, 'the confirm finds it');
        }
    }

    ok(!$r->exists($key), 'the token is spent');
    $p->error_is($p->confirm($a, $tok), 410, 'token_expired',
                 'a second confirm: 410, as before');
};

subtest '403: another account\'s token; the owner can still use it' => sub {
    my $a = $p->account('acct_owner');
    my $b = $p->account('acct_thief');
    my $tok = $p->token($a);
    my $inv = $r->scard('lg:{fleet}:inventory');

    my $tx = $p->confirm($b, $tok);
    $p->error_is($tx, 403, undef, 'another account',
                 qr/belongs to another account/);
    is($r->scard('lg:{fleet}:inventory'), $inv, 'nothing taken');
    is($r->zcard('lg:{acct:acct_thief}:prov'), 0, 'nothing counted');
    ok($s->access_log =~ /tenant=acct_thief auth=sb_key outcome=token_foreign/,
       'access log names the caller and the outcome');

    $p->answer($p->confirm($a, $tok), 200, 'the owner confirms');
    $p->error_is($p->confirm($b, $tok), 410, 'token_expired',
                 'used: 410 for anyone');
};

# the account's own previews put their tokens in its slot: the
# reservation's step spends the token, no step of its own (one round
# trip less); another account's token takes a step of its own first
subtest 'the account\'s own token: spent by the reservation\'s step' => sub {
    plan skip_all => 'MONITOR read on one Redis (t/038 runs the cluster)'
        if $s->topology eq 'cluster';
    my $a = $p->account('acct_onestep');
    my $b = $p->account('acct_twostep');
    my $tok = $p->token($a);
    my $key = $p->token_key($a, $tok);
    $p->answer($p->limits($_), 200, "warm $_->{id}") for ($a, $b) x 4;

    my ($cmds) = $s->redis_traffic(sub {
        $p->answer($p->confirm($a, $tok), 200, 'confirm');
    });
    my @ev = grep { /"EVALSHA"/i && /acct_onestep/ } @$cmds;
    like($ev[0] // '', qr/"EVALSHA" "[0-9a-f]{40}" "7" "lg:\{acct:acct_onestep\}".*"lg:\{fleet\}:pv:inflight" "\Q$key\E" "acct_onestep"/,
         'the first step: the reservation, the journal its 6th key, the'
         . ' token its 7th') or diag "@$cmds";
    ok(!grep({ /"EVALSHA" "[0-9a-f]{40}" "1" "\Q$key\E"/ } @$cmds),
       'no step of the token alone');
    # the settle of a recorded purchase is a plain ZREM of its claim
    # (pv_settle.lua would do nothing else), sent by nginx, not a script
    is(scalar @ev, 3, 'three scripts: reserve, claim, record')
        or diag "@ev";
    my $zrem = qr/"ZREM" "lg:\{fleet\}:pv:inflight" "acct_onestep worker_/;
    is(scalar(grep { !/ lua\]/ && /$zrem/ } @$cmds), 1,
       'then the settle: one ZREM of the claim, from nginx')
        or diag "@$cmds";
    # with the reservation, in the same step (one Redis), the purchase's
    # intent in the fleet's journal: a worker dying after the reservation
    # leaves it to the sweep (a cluster writes it in a step before: t/038)
    like($ev[0] // '', qr/ "acct_onestep worker_[0-9a-f]{24} -"/,
         'the reservation\'s step names the intent') or diag "@ev";
    ok(!grep({ /"ZADD" "lg:\{fleet\}:pv:inflight"/ } @$cmds),
       'no step of its own on one Redis');

    my $tok2 = $p->token($a);
    my $key2 = $p->token_key($a, $tok2);
    ($cmds) = $s->redis_traffic(sub {
        $p->error_is($p->confirm($b, $tok2), 403, undef, 'another account');
    });
    @ev = grep { /"EVALSHA"/i } @$cmds;
    like($ev[0] // '', qr/"EVALSHA" "[0-9a-f]{40}" "1" "\Q$key2\E" "acct_twostep"/,
         'another account\'s token: a step of its own first')
        or diag "@$cmds";
    like($ev[1] // '', qr/"EVALSHA" "[0-9a-f]{40}" "5" "lg:\{acct:acct_twostep\}"/,
         'then the account\'s, five keys') or diag "@$cmds";
    ok(!grep({ /"ZADD" "lg:\{fleet\}:pv:inflight"/ } @$cmds),
       'a refused token: nothing to reserve, no intent');
    $p->answer($p->confirm($a, $tok2), 200, 'the owner still can');
};

# an account whose keys share the slot of another's: the other's token
# is in its slot too, and the reservation's step refuses it (403) and
# keeps it for its owner
subtest '403 from the reservation\'s step: a token of the same slot' => sub {
    my $a = $p->account('acct_slotowner');
    my $slot = $s->cluster_keyslot('lg:{acct:acct_slotowner}');
    my ($twin) = grep { $s->cluster_keyslot("lg:{acct:acct_slot$_}") == $slot }
                 0 .. 200_000;
    ok(defined $twin, "an account id of slot $slot: acct_slot$twin");
    my $b = $p->account("acct_slot$twin");
    my $tok = $p->token($a);
    my $inv = $r->scard('lg:{fleet}:inventory');

    $p->error_is($p->confirm($b, $tok), 403, undef, 'the twin',
                 qr/belongs to another account/);
    is($r->scard('lg:{fleet}:inventory'), $inv, 'nothing taken');
    is($r->zcard("lg:{acct:acct_slot$twin}:prov"), 0, 'nothing counted');
    ok($r->exists($p->token_key($a, $tok)), 'the token kept');
    $p->answer($p->confirm($a, $tok), 200, 'the owner confirms');
    $p->error_is($p->confirm($b, $tok), 410, 'token_expired', 'then 410');
};

subtest '400: body' => sub {
    my $a = $p->account('acct_400');
    my $tok = $p->token($a);
    my @cases = (
        ['no body', \''],
        ['not JSON', \'preview_token=lpv_x'],
        ['truncated JSON', \'{"preview_token": "lpv_'],
        ['an array', [$tok]],
        ['a string', \'"lpv_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"'],
        ['missing', {token => $tok}],
        ['null', {preview_token => undef}],
        ['a number', {preview_token => 42}],
        ['an object', {preview_token => {value => $tok}}],
        ['an array value', {preview_token => [$tok]}],
        ['not UTF-8', \"{\"preview_token\": \"lpv_\xff\xfe\"}"],
    );
    for my $c (@cases) {
        my $b = $p->error_is($p->confirm($a, $c->[1]), 400, undef, $c->[0]);
    }
    like($p->confirm($a, {})->res->json->{message}, qr/preview_token/,
         'the message names preview_token');

    # "\u0000" is valid JSON: in a field not read it is ignored (SPEC)
    $p->answer($p->confirm($a, {preview_token => $tok, note => "a\0b"}),
               200, 'the token was not consumed; a NUL elsewhere ignored');
};

subtest '401 before anything else' => sub {
    my $a = $p->account('acct_401');
    my $tok = $p->token($a);
    my $tx = $p->confirm({key_id => $a->{key_id}, secret => 'wrong'}, $tok);
    $p->error_is($tx, 401, undef, 'wrong secret');

    # the credentials before the body: a caller who is not one learns
    # nothing of what the body should be (docs/provisioning-api.md)
    my $bad = {%$a, secret => 'wrong' . $a->{secret}};
    for my $body (\'not json', \'', {token => $tok}) {
        $p->error_is($p->confirm($bad, $body), 401, undef,
                     'wrong secret and a bad body: 401');
        $p->error_is($p->confirm({key_id => 'sbk_' . '0' x 24,
                                  secret => $a->{secret}}, $body), 401,
                     undef, 'unknown key id and a bad body: 401');
    }
    $p->answer($p->confirm($a, $tok), 200, 'the token survived');
};

# A credentials rotation (the operator API) writes the account's key_id
# first, then the new lg:sbkey:<id>, then deletes the old one: between
# the steps (or when a worker died between them) the old lookup still
# names the account with the right digest. The account's step refuses
# any key id but its key_id, on both credential paths: a worker that
# never saw the old pair (pv_account.lua, then the account's step) and
# one that has it cached (LG::Provision known mode, then no lookup).
# The account's own token is spent in the account's step, after the key
# id's check: a live token of the account presented with the old pair is
# kept (a 401 never consumes a token), and nothing is written.
for my $mode (qw(lookup cached)) {
    subtest "401: a key id the account no longer names ($mode)" => sub {
        my $q = $mode eq 'cached' ? LG::Provision->new($s, known => 1) : $p;
        my $id = "acct_rot_$mode";
        my $a = $q->account($id);
        my $tok;
        if ($mode eq 'cached') {
            $tok = $q->token($a);
            $q->answer($q->limits($a), 200, 'limits with the pair (learnt)');
        } else {
            # no call yet: the first one below takes pv_account.lua. The
            # token is the account's, as a preview would write it: its tag
            # (the 3 characters after lpv_) puts it in the account's slot
            my $slot = LG::RedisCluster::keyslot("lg:{acct:$id}");
            my @c = (0 .. 9, 'a' .. 'z', 'A' .. 'Z');
            my $tag;
            TAG: for my $x (@c) {
                for my $y (@c) {
                    for my $z (@c) {
                        next if LG::RedisCluster::keyslot("{$x$y$z}")
                                != $slot;
                        $tag = "$x$y$z";
                        last TAG;
                    }
                }
            }
            $tok = 'lpv_' . $tag . 'r' x 37;
            $r->set($q->token_key($a, $tok), qq({"account":"$id","key_id":)
                     . qq("$a->{key_id}","created_at":1,)
                     . qq("expires_at":9999999999999}), 'EX', 600);
        }

        # the rotation's first two steps; the old lookup is left behind
        my $new = {id => $id, key_id => "sbk_new_$mode",
                   secret => 'sbs_' . 'n' x 40};
        $r->hset("lg:{acct:$id}", key_id => $new->{key_id});
        $r->hset("lg:sbkey:$new->{key_id}", account => $id,
                 secret_sha256 => sha256_hex($new->{secret}));
        ok($r->exists("lg:sbkey:$a->{key_id}"), 'the old lookup is kept');

        my $inv = $r->scard('lg:{fleet}:inventory');
        my $before = redis_dump($r);
        sub_calls();
        my $ua = $s->ua;
        for my $c (['preview', sub { $ua->post($s->url(
                         $LG::Provision::PREVIEW) => $q->headers($a)) }],
                   ['limits', sub { $ua->get($s->url(
                         $LG::Provision::LIMITS) => $q->headers($a)) }],
                   ['confirm', sub { $ua->post($s->url(
                         $LG::Provision::CONFIRM) => $q->headers($a)
                         => json => {preview_token => $tok}) }])
        {
            # twice: the second on a worker that may have learnt the pair
            for my $n (1, 2) {
                my $tx = $c->[1]->();
                $q->error_is($tx, 401, undef, "$c->[0] ($n)",
                             qr/^Invalid API credentials$/);
                ok(!defined $tx->res->headers->header('RateLimit'),
                   "$c->[0] ($n): no RateLimit headers, as for a bad "
                   . 'secret');
            }
        }
        # the credentials before the body (docs/provisioning-api.md):
        # the previous key id with a body that is refused is a 401 too
        # (before 2026-11-28 a 400: the body was judged before the
        # account's step, the one that refuses that key id)
        my $url = sub { $s->url($_[0]) };
        for my $c (['preview, not JSON', $LG::Provision::PREVIEW,
                    'not json'],
                   ['preview, an array', $LG::Provision::PREVIEW, '[1]'],
                   ['confirm, not JSON', $LG::Provision::CONFIRM,
                    'not json'],
                   ['confirm, no preview_token', $LG::Provision::CONFIRM,
                    '{}'],
                   ['confirm, preview_token a number',
                    $LG::Provision::CONFIRM, '{"preview_token":5}'])
        {
            my $tx = $ua->post($url->($c->[1]) => $q->headers($a)
                               => $c->[2]);
            $q->error_is($tx, 401, undef, "previous key id, $c->[0]",
                         qr/^Invalid API credentials$/);
        }

        # a 401 never consumes a token (docs/provisioning-api.md): the
        # caller is refused before the token is looked at
        ok($r->exists($q->token_key($a, $tok)), 'the token: kept');
        is_deeply(redis_dump($r), $before, 'nothing written');
        is($r->scard('lg:{fleet}:inventory'), $inv, 'no number taken');
        is(scalar sub_calls(), 0, 'no charge');

        # the new pair with a refused body: the 400, after the key id
        for my $c (['preview, not JSON', $LG::Provision::PREVIEW,
                    'not json'],
                   ['confirm, no preview_token', $LG::Provision::CONFIRM,
                    '{}'])
        {
            my $tx = $ua->post($url->($c->[1]) => $q->headers($new)
                               => $c->[2]);
            $q->error_is($tx, 400, undef, "the new key id, $c->[0]");
        }

        # the new pair works
        $q->answer($q->limits($new), 200, 'limits with the new pair');
        $q->answer($q->confirm($new, $q->token($new)), 200,
                   'preview and confirm with the new pair');

        # an account without key_id takes the lookup's word
        $r->hdel("lg:{acct:$id}", 'key_id');
        $q->answer($q->limits($a), 200, 'no key_id: the old pair works');
    };
}

subtest '403: plan changed after the preview (token consumed)' => sub {
    my $a = $p->account('acct_plan');
    my $tok = $p->token($a);
    my $inv = $r->scard('lg:{fleet}:inventory');
    $r->hset('lg:{acct:acct_plan}', plan => 'standard');
    $p->error_is($p->confirm($a, $tok), 403, undef, 'plan',
                 qr/inbound_only/);
    $r->hset('lg:{acct:acct_plan}', plan => 'inbound_only');
    $p->error_is($p->confirm($a, $tok), 410, 'token_expired',
                 'the token was consumed');
    is($r->scard('lg:{fleet}:inventory'), $inv, 'no number taken');
};

subtest '429: limits checked again at confirm' => sub {
    my $now = now_ms();
    my $a = $p->account('acct_429d', daily => 2);
    my $tok = $p->token($a);
    $r->zadd('lg:{acct:acct_429d}:prov', $now - 7_200_000, 'w1',
             $now - 3_600_000, 'w2');
    my $inv = $r->scard('lg:{fleet}:inventory');
    my $tx = $p->confirm($a, $tok);
    $p->error_is($tx, 429, 'daily_limit_reached', 'daily',
                 qr/^Maximum 2 lines can be added per day via API$/);
    my $ra = $tx->res->headers->header('Retry-After');
    ok(abs($ra - 22 * 3600) <= 1, "Retry-After ($ra)");
    is($r->scard('lg:{fleet}:inventory'), $inv, 'no number taken');
    is($r->zcard('lg:{acct:acct_429d}:prov'), 2, 'no slot taken');
    $p->error_is($p->confirm($a, $tok), 410, 'token_expired',
                 'the token was consumed');

    $a = $p->account('acct_429m', monthly => 1);
    $tok = $p->token($a);
    $r->zadd('lg:{acct:acct_429m}:prov', $now - 29 * $DAY, 'w1');
    $tx = $p->confirm($a, $tok);
    $p->error_is($tx, 429, 'monthly_limit_reached', 'monthly',
                 qr/^Maximum 1 lines can be added per month via API$/);
    $ra = $tx->res->headers->header('Retry-After');
    ok(abs($ra - 86400) <= 1, "Retry-After: a day ($ra)");

    # the edges, at confirm
    $a = $p->account('acct_429e', daily => 1);
    $tok = $p->token($a);
    $r->zadd('lg:{acct:acct_429e}:prov', now_ms() - $DAY + 1000, 'w1');
    $p->error_is($p->confirm($a, $tok), 429, 'daily_limit_reached',
                 '24 h - 1 s ago still counts');
    $r->zadd('lg:{acct:acct_429e}:prov', now_ms() - $DAY - 1000, 'w1');
    $tok = $p->token($a);
    $p->answer($p->confirm($a, $tok), 200, '24 h + 1 s ago no longer does');
};

# docs/provisioning-api.md: a limit that is not a non-negative number
# falls back to the default, at confirm as in the preview. Lua's
# tonumber() reads "inf", "nan" and "1e400" as numbers no count reaches
subtest '429: a limit that is no number is the default at confirm too' =>
sub {
    my $now = now_ms();
    for my $v ('inf', 'nan', '1e400', '-inf') {
        (my $id = "acct_lim_$v") =~ s/[^a-z0-9_]/_/g;
        my $a = $p->account($id);
        my $tok = $p->token($a);
        $r->hset("lg:{acct:$id}", daily_limit => $v);
        $r->zadd("lg:{acct:$id}:prov", $now - 3_600_000, 'w1',
                 $now - 2_400_000, 'w2', $now - 1_200_000, 'w3');
        my $inv = $r->scard('lg:{fleet}:inventory');
        my $tx = $p->confirm($a, $tok);
        $p->error_is($tx, 429, 'daily_limit_reached', "daily_limit $v",
                     qr/^Maximum 3 lines can be added per day via API$/);
        is($r->scard('lg:{fleet}:inventory'), $inv, "$v: no number taken");
        is($r->zcard("lg:{acct:$id}:prov"), 3, "$v: no slot taken");
    }

    my $a = $p->account('acct_lim_mnan');
    my $tok = $p->token($a);
    $r->hset('lg:{acct:acct_lim_mnan}', monthly_limit => 'nan');
    $r->zadd('lg:{acct:acct_lim_mnan}:prov',
             map { ($now - ($_ + 1) * $DAY - 1000, "w$_") } 1 .. 10);
    $p->error_is($p->confirm($a, $tok), 429, 'monthly_limit_reached',
                 'monthly_limit nan',
                 qr/^Maximum 10 lines can be added per month via API$/);
};

subtest '503: no number left at confirm (token consumed)' => sub {
    my $a = $p->account('acct_503');
    my $tok = $p->token($a);
    my @all = $r->smembers('lg:{fleet}:inventory');
    $r->del('lg:{fleet}:inventory');
    $p->error_is($p->confirm($a, $tok), 503, 'no_lines_available',
                 'inventory empty', qr/^No lines are currently available$/);
    # the slot was reserved (RESERVE, the account's slot) before the
    # claim found nothing (CLAIM, the fleet's): released before the 503
    is($r->zcard('lg:{acct:acct_503}:prov'), 0, 'no slot taken');
    is_deeply($p->reservations('acct_503'), [], 'no reservation');
    is_deeply($p->claims('acct_503'), [], 'no claim');
    $r->sadd('lg:{fleet}:inventory', @all);
    $p->error_is($p->confirm($a, $tok), 410, 'token_expired', 'consumed');
};

subtest '402 no_card_on_file: number and slot given back' => sub {
    my $a = $p->account('acct_nocard', card => 0);
    my $tok = $p->token($a);
    my $inv = $r->scard('lg:{fleet}:inventory');
    sub_calls();
    my $tx = $p->confirm($a, $tok);
    $p->error_is($tx, 402, 'no_card_on_file', 'no card', qr/payment method/);
    nothing_kept('acct_nocard', $inv, 'no card');
    is(scalar sub_calls(), 0, 'no subscription was attempted');
    like($tx->res->headers->header('RateLimit'), qr/^"daily";r=3;/,
         'RateLimit counts the freed slot');
    $p->error_is($p->confirm($a, $tok), 410, 'token_expired', 'consumed');

    # no Stripe customer at all
    $a = $p->account('acct_nocus', customer => '');
    $p->error_is($p->confirm($a, $p->token($a)), 402, 'no_card_on_file',
                 'no customer id');
    nothing_kept('acct_nocus', $inv, 'no customer id');

    # a customer Stripe does not know
    $a = $p->account('acct_ghost', customer => 'cus_ghost',
                     no_stub_customer => 1);
    $p->error_is($p->confirm($a, $p->token($a)), 402, 'no_card_on_file',
                 'unknown customer');
    nothing_kept('acct_ghost', $inv, 'unknown customer');

    # a customer id that cannot be one
    $a = $p->account('acct_badcus', customer => 'cus/../x',
                     no_stub_customer => 1);
    $p->error_is($p->confirm($a, $p->token($a)), 402, 'no_card_on_file',
                 'malformed customer id');
    nothing_kept('acct_badcus', $inv, 'malformed customer id');

    # the card disappeared between the read and the charge
    $a = $p->account('acct_gone');
    $p->fault(status => 400, body => {error => {
        type => 'invalid_request_error', code => 'resource_missing',
        message => 'This customer has no attached payment source or '
                   . 'default payment method.'}});
    $p->error_is($p->confirm($a, $p->token($a)), 402, 'no_card_on_file',
                 'Stripe: no payment source');
    nothing_kept('acct_gone', $inv, 'Stripe: no payment source');
    $p->clear_faults;
};

subtest '402 payment_failed: Stripe\'s message, number and slot back' => sub {
    my $a = $p->account('acct_decline', decline => 1);
    my $tok = $p->token($a);
    my $inv = $r->scard('lg:{fleet}:inventory');
    sub_calls();
    my $tx = $p->confirm($a, $tok);
    $p->error_is($tx, 402, 'payment_failed', 'declined',
                 qr/^Your card was declined\.$/);
    nothing_kept('acct_decline', $inv, 'declined');
    my @calls = sub_calls();
    is(scalar @calls, 1, 'one attempt: a decline is not retried');
    is($calls[0]{status}, 402, 'Stripe said 402');
    is(scalar(grep { $_->{customer} eq 'cus_acct_decline' }
              $p->subscriptions), 0, 'no subscription');
    is_deeply($p->reconcile, [], 'nothing to reconcile');

    # once the card works, a new preview buys the line
    $s->stub(POST => '/_stub/customers', {id => 'cus_acct_decline',
                                          card => 1});
    $p->answer($p->confirm($a, $p->token($a)), 200, 'new card, new token');

    # a decline whose message is empty or missing still says what
    # happened: Sendblue's format (and openapi.yaml) has a message, and
    # "" passed on told the client nothing
    for my $m (['empty', ''], ['missing', undef]) {
        my $d = $p->account("acct_decline_$m->[0]");
        my $left = $r->scard('lg:{fleet}:inventory');
        my %err = (type => 'card_error', code => 'card_declined');
        $err{message} = $m->[1] if defined $m->[1];
        $p->fault(status => 402, body => {error => \%err});
        $p->error_is($p->confirm($d, $p->token($d)), 402, 'payment_failed',
                     "a decline with its message $m->[0]",
                     qr/^Your card was declined\.$/);
        nothing_kept("acct_decline_$m->[0]", $left, "message $m->[0]");
        $p->clear_faults;
    }
};

# numbers loaded before the loader refused a country code of 0 ("+0...",
# no E.164 number) are still in the inventory: the claim that draws one
# moves it aside (lg:{fleet}:inventory:quarantine, logged), and draws
# again; a confirm never hands it out, and neither a preview counts it
subtest 'a "+0..." number left in the inventory is never sold' => sub {
    my @all = $r->smembers('lg:{fleet}:inventory');
    my @bad = ('+04155550001', '+04155550002', '+0415555', '+1234');
    $r->del('lg:{fleet}:inventory', 'lg:{fleet}:inventory:quarantine');
    $r->sadd('lg:{fleet}:inventory', @bad, '+14155550999');
    my $a = $p->account('acct_bad_nr');
    # a preview looks for a number to sell (t/200): it hands none out
    my @tok = ($p->token($a), $p->token($a));
    my $b = $p->answer($p->confirm($a, $tok[0]), 200, 'confirm');
    is($b->{phone_number}, '+14155550999', 'the one good number is sold');
    $p->error_is($p->confirm($a, $tok[1]), 503, 'no_lines_available',
                 'then none is left', qr/^No lines are currently available$/);
    is($r->scard('lg:{fleet}:inventory'), 0, 'the inventory emptied');
    is_deeply([sort $r->smembers('lg:{fleet}:inventory:quarantine')],
              [sort @bad], 'every bad number set aside');
    ok(!$r->sismember('lg:{fleet}:held', $_), "$_ is not held") for @bad;
    is_deeply([sort map { $_->{phone_number} } values %{ $p->lines($a->{id}) }],
              ['+14155550999'], 'the account\'s lines: the good number');
    is($r->zcard('lg:{acct:acct_bad_nr}:prov'), 1, 'one slot counted');
    is_deeply($p->claims('acct_bad_nr'), [], 'no claim left');
    my $log = $s->error_log;
    like($log, qr/inventory number "\Q$_\E" is not an E\.164 number/,
         "$_ logged") for @bad;
    $r->del('lg:{fleet}:inventory:quarantine');
    $r->sadd('lg:{fleet}:inventory', @all);
};

# the operator takes a number set aside back (POST
# /_linegate/inventory/quarantine/release, corrected): the next confirm
# sells it; one dropped is gone for good
subtest 'a number released from the quarantine is sold' => sub {
    my @all = $r->smembers('lg:{fleet}:inventory');
    my $Q = 'lg:{fleet}:inventory:quarantine';
    $r->del('lg:{fleet}:inventory', $Q);
    $r->sadd('lg:{fleet}:inventory', '+04155550777', '+04155550778');
    my $a = $p->account('acct_q_back');
    $p->error_is($p->preview($a), 503, 'no_lines_available',
                 'nothing to sell');
    is_deeply([sort $r->smembers($Q)], ['+04155550777', '+04155550778'],
              'both set aside');

    my $body = answer_is($s->op(GET => '/inventory/quarantine'), 200,
                         'the operator lists them');
    is_deeply($body->{numbers}, ['+04155550777', '+04155550778'], 'listed');
    answer_is($s->op(POST => '/inventory/quarantine/drop',
                     {number => '+04155550778'}), 200, 'one dropped');
    $body = answer_is($s->op(POST => '/inventory/quarantine/release',
                             {number => '+04155550777',
                              as => '+14155550777'}),
                      200, 'the other released, corrected');
    is($body->{total}, 1, 'the inventory holds it');

    my $b = $p->answer($p->confirm($a, $p->token($a)), 200, 'confirm');
    is($b->{phone_number}, '+14155550777', 'the released number is sold');
    ok($r->sismember('lg:{fleet}:held', '+14155550777'), 'held');
    is($r->scard($Q), 0, 'the quarantine is empty');

    # sold, it cannot be released again as another entry's correction
    $r->sadd($Q, '+04155550779');
    json_error_is($s->op(POST => '/inventory/quarantine/release',
                         {number => '+04155550779', as => '+14155550777'}),
                  409, 'NUMBER_HELD', 'a sold number is not released again');
    ok(!$r->sismember('lg:{fleet}:inventory', '+14155550777'),
       'not back in the inventory');
    $r->del($Q);
    $r->sadd('lg:{fleet}:inventory', @all);
};

subtest 'a line never leaves the inventory twice' => sub {
    my %seen;
    my @nums = map { $_->{phone_number} }
               map { values %{ $p->lines($_) } }
               map { /^lg:\{acct:(.+)\}$/ ? $1 : () } $r->keys('lg:{acct:*}');
    $seen{$_}++ for @nums;
    ok(@nums > 3, scalar(@nums) . ' lines bought');
    is(scalar(grep { $seen{$_} > 1 } keys %seen), 0, 'each number once');
    ok(!$r->sismember('lg:{fleet}:inventory', $_), "$_ not in the inventory")
        for @nums;
};

done_testing();
