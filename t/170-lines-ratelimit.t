# The workspace request rate (SPEC 2.7): counted in Redis for the whole
# fleet, atomically with each endpoint's work, shared by every Lines API
# endpoint and credential of a workspace; RateLimit-Policy and RateLimit on
# every answer, 429 RATE_LIMITED with Retry-After.
use strict;
use warnings;
use lib 't/lib';

use Test::More;
use Time::HiRes qw(sleep);
use LG::Stack;
use LG::Test;
use LG::Lines qw(body);

my $s = LG::Stack->new(WS_RATE => '10r/m')->start;
my $l = LG::Lines->new($s);
my $r = $s->redis;
my $n = 0;

sub ws { return $l->workspace('org_rl' . ++$n, @_) }

# keep a test's requests inside one window of the minute
sub fresh_window { sleep 0.2 while time % 60 >= 50 }

sub window_key { return "lg:{ws:$_[0]{id}}:rl:" . int(time / 60) }

sub limited {
    my ($tx, $name) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    my $b = $l->answer($tx, 429, $name);
    is_deeply($b, {error => 'Rate limit exceeded', code => 'RATE_LIMITED'},
              "$name: body");
    my $h = $tx->res->headers;
    my ($t) = ($h->header('RateLimit') // '') =~ /;t=(\d+)$/;
    like($h->header('Retry-After') // '', qr/^\d+$/, "$name: Retry-After");
    ok($h->header('Retry-After') >= 1 && $h->header('Retry-After') <= 60,
       "$name: within the window");
    is($h->header('Retry-After'), $t, "$name: when the window ends");
    like($h->header('RateLimit') // '', qr/^"workspace";r=0;t=\d+$/,
         "$name: nothing remaining");
}

subtest 'headers count down, then 429' => sub {
    fresh_window();
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

    limited($l->get($w, $id), 'GET');
    limited($l->list($w), 'by-user');
    limited($l->check($w, $id), 'check-availability (Clerk)');
    limited($l->create($w, body()), 'create');
    limited($l->manage($w, $id, 'payment_link'), 'manage');
    limited($l->get($w, 'bad'), 'even a bad id');
    my @ids = $l->request_ids($w);
    is(scalar @ids, 2, 'the refused create wrote nothing');

    is($r->get(window_key($w)), 10, 'counted in Redis; refusals are not');
    my $ttl = $r->pttl(window_key($w));
    ok($ttl > 0 && $ttl <= 61_000, "the counter expires with its window");

    my $v = ws();
    $l->answer($l->list($v), 200, 'another workspace is not limited');
};

subtest 'the counter is the fleet\'s: another nginx counted too' => sub {
    fresh_window();
    my $w = ws();
    $r->set(window_key($w), 10, 'EX', 60);
    limited($l->list($w), 'at the limit from elsewhere');
    $r->set(window_key($w), 9, 'EX', 60);
    my $tx = $l->list($w);
    $l->answer($tx, 200, 'one left');
    like($tx->res->headers->header('RateLimit'), qr/;r=0;/, 'none left now');
};

subtest '429 is not kept under an idempotency key' => sub {
    fresh_window();
    my $w = ws();
    $r->set(window_key($w), 10, 'EX', 60);
    limited($l->create($w, body(), 'Idempotency-Key' => 'rl-1'), 'limited');
    $r->del(window_key($w));
    $l->answer($l->create($w, body(), 'Idempotency-Key' => 'rl-1'), 201,
               'the same key later: created');
};

subtest 'a window counted while Redis stalls still expires' => sub {
    # the hot GET (key cached by every worker) opens the window; Redis
    # holds its commands past the command timeout (500 ms): 503, and the
    # commands run when Redis resumes
    fresh_window();
    my $w = ws();
    my $id = $l->created($w);
    $l->get($w, $id) for 1 .. 4;
    $r->del(window_key($w));

    my $cli = "redis-cli -p @{[ $s->redis_port ]}";
    like(qx{$cli CLIENT PAUSE 900}, qr/^OK/, 'Redis paused');
    $l->error_is($l->get($w, $id), 503, 'STORE_UNAVAILABLE', 'timed out');
    sleep 1;

    is($r->get(window_key($w)), 1, 'the GET was counted when Redis resumed');
    my $ttl = $r->pttl(window_key($w));
    ok($ttl > 0 && $ttl <= 61_000, "and its counter expires ($ttl ms)");
};

subtest 'no RateLimit where no workspace is known' => sub {
    my $tx = $l->req({Authorization => 'Bearer tuco_' . 'z' x 40},
                     GET => '/api/lines/by-user');
    $l->answer($tx, 401, 'unknown key');
    ok(!defined $tx->res->headers->header('RateLimit-Policy'),
       '401: no RateLimit-Policy');
};

done_testing;
