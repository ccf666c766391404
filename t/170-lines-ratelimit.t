# The workspace request rate (SPEC 2.7): GCRA in Redis for the whole
# fleet (the one implementation linegate_limit uses, rl_gcra), atomically
# with each endpoint's work, shared by every Lines API endpoint and
# credential of a workspace; RateLimit-Policy and RateLimit on every
# answer, 429 RATE_LIMITED with Retry-After.
#
# 10r/m: the emission interval T is 6 s and the tolerance 9 T, so a full
# burst of 10 passes at once, the 11th waits for the next token (T after
# the first), and the key always expires when the workspace is back to a
# full burst.
use strict;
use warnings;
use lib 't/lib';

use POSIX qw(ceil);
use Test::More;
use Time::HiRes qw(sleep);
use LG::Stack;
use LG::Test;
use LG::Lines qw(body);

my $s = LG::Stack->new(WS_RATE => '10r/m')->start;
my $l = LG::Lines->new($s);
my $r = $s->redis;
my $n = 0;

my $T = 6_000_000;          # us
my $TAU = 9 * $T;

sub ws { return $l->workspace('org_rl' . ++$n, @_) }

sub gcra_key { return "lg:{ws:$_[0]{id}}:gcra" }

sub redis_now {
    my ($sec, $usec) = $r->time;
    return $sec * 1_000_000 + $usec;
}

# the workspace as another nginx left it: its burst used but $left
sub used_but {
    my ($w, $left) = @_;
    my $tat = redis_now() + $TAU + $T - $left * $T;
    $r->set(gcra_key($w), $tat, 'PX', 61_000);
}

# a 429, its Retry-After the exact time to the next token: TAT - tau
# from when Redis decided, rounded up to seconds (Redis's clock read
# before and after the request bounds that moment); nothing written
sub limited {
    my ($w, $send, $name) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    my $tat = $r->get(gcra_key($w));
    my $t0 = redis_now();
    my $tx = $send->();
    my $t1 = redis_now();
    my $b = $l->answer($tx, 429, $name);
    is_deeply($b, {error => 'Rate limit exceeded', code => 'RATE_LIMITED'},
              "$name: body");
    my $h = $tx->res->headers;
    my $ra = $h->header('Retry-After') // '';
    like($ra, qr/^\d+$/, "$name: Retry-After");
    ok($ra >= ceil(($tat - $TAU - $t1) / 1e6)
       && $ra <= ceil(($tat - $TAU - $t0) / 1e6),
       "$name: Retry-After $ra, when the next token comes");
    ok($ra >= 1 && $ra <= 6, "$name: within T");
    # the draft's t (-10 on): until more quota comes, the next token, as
    # Retry-After (not until the whole burst is back)
    my ($t) = ($h->header('RateLimit') // '') =~ /;t=(\d+)$/;
    ok(defined $t && $t >= ceil(($tat - $TAU - $t1) / 1e6)
       && $t <= ceil(($tat - $TAU - $t0) / 1e6),
       "$name: t, when the next token comes") or diag "t=$t";
    like($h->header('RateLimit') // '', qr/^"workspace";r=0;t=\d+$/,
         "$name: nothing remaining");
    is($r->get(gcra_key($w)), $tat, "$name: nothing written");
}

subtest 'a burst of 10 passes, headers count down, then 429' => sub {
    # (the ten requests come well within T = 6 s: none refilled meanwhile)
    my $w = ws();
    my $id = $l->created($w);    # 1

    my @tx = ($l->get($w, $id), $l->list($w), $l->check($w, $id),
              $l->manage($w, $id, 'cancel'), $l->create($w, body()));
    my @codes = map { $_->res->code } @tx;
    is_deeply(\@codes, [200, 200, 200, 409, 201], 'five more calls');
    for my $i (0 .. $#tx) {
        my $h = $tx[$i]->res->headers;
        is($h->header('RateLimit-Policy'), '"workspace";q=10;w=60',
           "call $i: RateLimit-Policy");
        like($h->header('RateLimit'), qr/^"workspace";r=@{[8 - $i]};t=\d+$/,
             "call $i: RateLimit remaining " . (8 - $i));
        ok(!defined $h->header('Retry-After'), "call $i: no Retry-After");
    }
    $l->answer($l->list($w), 200, "call $_") for 6 .. 9;

    my $tat = $r->get(gcra_key($w));
    my $ttl = $r->pttl(gcra_key($w));
    ok($ttl > 0 && $ttl <= 60_001,
       "the key expires when the burst is full again ($ttl ms)");

    limited($w, sub { $l->get($w, $id) }, 'GET');
    limited($w, sub { $l->list($w) }, 'by-user');
    limited($w, sub { $l->check($w, $id) }, 'check-availability (Clerk)');
    limited($w, sub { $l->create($w, body()) }, 'create');
    limited($w, sub { $l->manage($w, $id, 'payment_link') }, 'manage');
    limited($w, sub { $l->get($w, 'bad') }, 'even a bad id');
    my @ids = $l->request_ids($w);
    is(scalar @ids, 2, 'the refused create wrote nothing');
    is($r->get(gcra_key($w)), $tat, 'refusals are not counted');

    my $v = ws();
    $l->answer($l->list($v), 200, 'another workspace is not limited');
};

# the fleet's rate under real parallel requests: both workers (the
# stack's default) answer at once, each decision atomic in Redis, so
# exactly the burst passes whichever worker took which request
subtest 'parallel GETs on two workers: exactly the burst passes' => sub {
    my $w = ws();
    my $id = $l->created($w);    # 1 of 10
    my @tx = $l->parallel(map { [$w, GET => "/api/line-requests/$id"] }
                          1 .. 200);
    my $ok = grep { $_->res->code == 200 } @tx;
    my $no = grep { $_->res->code == 429 } @tx;
    is($ok, 9, 'the rest of the burst, 9, passed');
    is($no, 191, 'every other one 429');
    my @rl = grep { defined }
             map { ($_->res->headers->header('RateLimit') // '')
                   =~ /;r=(\d+);/ ? $1 : undef }
             grep { $_->res->code == 200 } @tx;
    is_deeply([sort { $a <=> $b } @rl], [0 .. 8],
              'each admission\'s r its own: 8 down to 0');
};

subtest 'one token back after T' => sub {
    # time moved by T: the TAT T earlier is the same state
    my $w = ws();
    used_but($w, 0);
    limited($w, sub { $l->list($w) }, 'the burst used');
    $r->set(gcra_key($w), $r->get(gcra_key($w)) - $T, 'PX', 61_000);
    my $tx = $l->list($w);
    $l->answer($tx, 200, 'T later: one passes');
    like($tx->res->headers->header('RateLimit'), qr/;r=0;/, 'none left');
    limited($w, sub { $l->list($w) }, 'and the next waits again');
};

subtest 'refilled on the clock' => sub {
    # 5r/s: T = 200 ms, a burst of 5
    my $f = LG::Stack->new(WS_RATE => '5r/s')->start;
    my $fl = LG::Lines->new($f);
    my $w = $fl->workspace('org_rl_fast');
    my @codes = map { $fl->list($w)->res->code } 1 .. 5;
    is_deeply(\@codes, [(200) x 5], 'a burst of 5 at once');
    # then refused (unless this machine took 200 ms a request: tokens
    # come back meanwhile)
    my $tx;
    for (1 .. 20) {
        $tx = $fl->list($w);
        last if $tx->res->code == 429;
    }
    is($tx->res->code, 429, 'then refused');
    is($tx->res->headers->header('Retry-After'), 1,
       'Retry-After: at most 200 ms, rounded up');
    sleep 0.25;
    is($fl->list($w)->res->code, 200, 'a token back after T');
    $f->stop;
};

subtest 'the state is the fleet\'s: another nginx counted too' => sub {
    my $w = ws();
    used_but($w, 0);
    limited($w, sub { $l->list($w) }, 'at the limit from elsewhere');
    used_but($w, 1);
    my $tx = $l->list($w);
    $l->answer($tx, 200, 'one left');
    like($tx->res->headers->header('RateLimit'), qr/;r=0;/, 'none left now');
};

# A state rl_gcra never writes (another writer's, or damage): a TAT so
# far ahead that the wait is beyond 2^53 ms is no answer of the script,
# and its Retry-After (300,000 years here) is not sent: 500, logged
subtest 'a rate state beyond what rl_gcra answers: 500, not sent' => sub {
    my $w = ws();
    $r->set(gcra_key($w), '1e19', 'PX', 61_000);
    my $off = length $s->error_log;
    for my $send (sub { $l->list($w) }, sub { $l->get($w, 'f' x 24) }) {
        my $tx = $send->();
        is($tx->res->code, 500, 'an internal error');
        is($tx->res->headers->header('Retry-After'), undef, 'no Retry-After');
        is($tx->res->headers->header('RateLimit'), undef, 'no RateLimit');
    }
    like(substr($s->error_log, $off),
         qr/unexpected (?:rate in a script|pipeline) reply/, 'logged');
    $r->del(gcra_key($w));
};

subtest '429 is not kept under an idempotency key' => sub {
    my $w = ws();
    used_but($w, 0);
    limited($w, sub { $l->create($w, body(), 'Idempotency-Key' => 'rl-1') },
            'limited');
    $r->del(gcra_key($w));
    $l->answer($l->create($w, body(), 'Idempotency-Key' => 'rl-1'), 201,
               'the same key later: created');
};

subtest 'a key written while Redis stalls still expires' => sub {
    # the hot GET (key cached by every worker) admits the request; Redis
    # holds its commands past the command timeout (500 ms): 503, and the
    # commands run when Redis resumes
    my $w = ws();
    my $id = $l->created($w);
    $l->get($w, $id) for 1 .. 4;
    $r->del(gcra_key($w));

    # every master, on a cluster: the workspace's slot may be on any (one
    # node's pause held it only while the numbering of ws() put it there)
    ok($r->client('PAUSE', 900), 'Redis paused');
    $l->error_is($l->get($w, $id), 503, 'STORE_UNAVAILABLE', 'timed out');
    sleep 1;

    ok(defined $r->get(gcra_key($w)),
       'the GET was admitted when Redis resumed');
    my $ttl = $r->pttl(gcra_key($w));
    ok($ttl > 0 && $ttl <= 6_001, "and its key expires ($ttl ms)");
};

# EXISTS calls Redis ran (scripts' own included; on a cluster summed
# over the masters): lr_here's check of every request a creation's index
# names is one EXISTS each
sub exists_calls {
    my $st = $r->info('commandstats')->{cmdstat_exists} // '';
    return $st =~ /calls=(\d+)/ ? $1 : 0;
}

# On a Redis Cluster, lr_create checked that every request of the
# workspace's index was on its node (lg_lr_here: an EXISTS each) before
# the gate: a creation the rate refused, and a malformed one (the gate
# alone, for its 400), walked them all the same, and 429s bounded none
# of that work (every request of :lines, failed ones too, while :live is
# not built). The check now follows the gate's admission (which a
# TRYAGAIN gives back): refused or malformed, nothing is walked. One
# Redis never walked there (its creations read the index after the gate).
subtest 'a creation refused or malformed walks no request' => sub {
    my $w = ws();
    my $id = $l->created($w);
    my %tpl = $r->hgetall("lg:{ws:$w->{id}}:lr:$id");
    # 60 live lines (paid add-ons, as the API leaves them), no :live: a
    # workspace written before it
    $r->eval(<<'LUA', 1, "lg:{ws:$w->{id}}", %tpl);
for i = 1, 60 do
    local id = string.format('%024x', 0xc0ffee000 + i)
    redis.call('HSET', KEYS[1] .. ':lr:' .. id, unpack(ARGV))
    redis.call('HSET', KEYS[1] .. ':lr:' .. id, 'channelType', 'email')
    redis.call('ZADD', KEYS[1] .. ':lines', 1700000000000 + i, id)
end
return 1
LUA
    $r->del("lg:{ws:$w->{id}}:live");

    used_but($w, 0);
    my $before = exists_calls();
    limited($w, sub { $l->create($w, body()) }, "create $_") for 1 .. 3;
    is(exists_calls() - $before, 0, 'three creations refused: no EXISTS');

    $r->del(gcra_key($w));
    $before = exists_calls();
    $l->invalid_field($l->create($w, body(firstName => '')), 'firstName',
                      "malformed $_") for 1 .. 3;
    is(exists_calls() - $before, 0, 'three malformed: no EXISTS');

    # a key the workspace no longer lists, its lookup still there (a
    # revocation's first step): refused by the gate of lr_create, and of
    # lr_list (by-user's pipeline refuses it, the key is looked up again
    # and the script answers)
    my $k = $s->op(POST => "/workspaces/$w->{id}/keys")->res->json;
    $r->hdel("lg:{ws:$w->{id}}:keys", $k->{keyId});
    my $auth = {Authorization => "Bearer $k->{key}"};
    $before = exists_calls();
    is($l->create($auth, body())->res->code, 401,
       "a revoked key's create $_") for 1 .. 2;
    is($l->list($auth)->res->code, 401, "a revoked key's by-user $_")
        for 1 .. 2;
    is(exists_calls() - $before, 0, 'a revoked key: no EXISTS');
};

# lg_lr_gate_undo(), what a creation or a listing that meets a request
# on another node (TRYAGAIN) does with its admission: the rate as it was
# before the gate counted it, busy or idle
subtest 'a TRYAGAIN gives its admission back' => sub {
    my $src = "--#include lr_codes\n--#include lr_gate\n"
            . "local ws, code = lg_lr_gate()\n"
            . "if code == LR_GATE_OK then lg_lr_gate_undo() end\n"
            . "return code\n";
    1 while $src =~ s{^--#include ([a-z0-9_]+)[ \t]*$}{
        open my $fh, '<', "$LG::Stack::ROOT/src/lua/include/$1.lua"
            or die "$1: $!";
        local $/;
        <$fh>;
    }gme;

    my $w = ws();
    my $k = gcra_key($w);
    my @keys = ("lg:{ws:$w->{id}}", "lg:{ws:$w->{id}}:keys", $k);
    my @argv = ('w', $w->{id}, $T, $TAU, '', '');

    used_but($w, 4);
    my $tat = $r->get($k);
    is($r->eval($src, 3, @keys, @argv), 0, 'busy: admitted');
    is($r->get($k), $tat, 'busy: the TAT as it was');
    my $ttl = $r->pttl($k);
    ok($ttl > 0 && $ttl <= 60_001, "busy: still expiring ($ttl ms)");

    $r->del($k);
    is($r->eval($src, 3, @keys, @argv), 0, 'idle: admitted');
    ok(!$r->exists($k), 'idle: the key gone, idle again');
};

subtest 'no RateLimit where no workspace is known' => sub {
    my $tx = $l->req({Authorization => 'Bearer tuco_' . 'z' x 40},
                     GET => '/api/lines/by-user');
    $l->answer($tx, 401, 'unknown key');
    ok(!defined $tx->res->headers->header('RateLimit-Policy'),
       '401: no RateLimit-Policy');
};

# The emission interval is whole microseconds, as linegate_limit_zone's:
# a rate it cannot keep within 1% is refused (750000r/s would be kept as
# 1 us, 1,000,000 r/s: a third more than configured), naming the rate;
# one it can keep is rounded up, never admitting more than the rate
subtest 'nginx -t refuses a rate whole microseconds cannot keep' => sub {
    for my $bad ('750000r/s', '300000r/s', '40000000r/m') {
        my ($rc, $out) = $s->nginx_t($s->render(WS_RATE => $bad));
        isnt($rc, 0, "nginx -t refuses $bad");
        like($out, qr/\Q$bad\E/, "the message names $bad");
    }
    for my $good ('1000000r/s', '7r/s', '200r/m', '50000r/s') {
        my ($rc, $out) = $s->nginx_t($s->render(WS_RATE => $good));
        is($rc, 0, "nginx -t takes $good") or diag $out;
    }
};

done_testing;
