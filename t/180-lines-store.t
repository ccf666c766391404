# Redis unavailable (SPEC 1): every Lines API endpoint answers 503
# STORE_UNAVAILABLE with Retry-After, nothing half-written; answers come
# back once Redis does.
use strict;
use warnings;
use lib 't/lib';

use Test::More;
use Time::HiRes qw(sleep);
use LG::Stack;
use LG::Test;
use LG::Lines qw(body);

my $s = LG::Stack->new->start;
my $l = LG::Lines->new($s);

my $w = $l->workspace('org_store');
my $id = $l->created($w);
my ($pending) = $l->awaiting($w);

my @calls = (
    ['create', sub { $l->create($w, body()) }],
    ['create with a key', sub { $l->create($w, body(), 'Idempotency-Key'
                                           => 'st-1') }],
    ['GET', sub { $l->get($w, $id) }],
    ['GET, Clerk', sub { $l->req($w->{clerk}, GET =>
                                 "/api/line-requests/$id") }],
    ['GET, bad id', sub { $l->get($w, 'bad') }],
    ['by-user', sub { $l->list($w) }],
    ['check-availability', sub { $l->check($w, $id) }],
    ['cancel', sub { $l->manage($w, $pending, 'cancel') }],
    ['payment_link', sub { $l->manage($w, $pending, 'payment_link') }],
);

# The hot GET: with the key cached by every worker, plain commands
# pipelined (EVALSHA rl_gcra, HGETALL), answered to one handler.
$l->get($w, $id) for 1 .. 4;
my $good = $l->answer($l->get($w, $id), 200, 'hot GET');
my $redis_cli = "redis-cli -p @{[ $s->redis_port ]}";

# answers again (a worker may reconnect first), then six times the same
sub answers_again {
    my ($name) = @_;
    my $tx;
    my $by = Time::HiRes::time() + 30;    # generous: a loaded machine
    while (1) {
        $tx = $l->get($w, $id);
        last if $tx->res->code == 200 || Time::HiRes::time() > $by;
        sleep 0.1;
    }
    my @same = grep { ($l->answer($l->get($w, $id), 200, "$name, after")
                       ->{line}{_id} // '') eq $id } 1 .. 6;
    is(scalar @same, 6, "$name: every answer about the right request");
    unlike($s->error_log, qr/exited on signal/, "$name: no worker crashed");
}

subtest 'hot GET: a command of the pipeline fails' => sub {
    # the workspace's request line made a string: HGETALL fails (after
    # the rate admitted the request; the script path it then tries fails
    # on it too)
    my $r = $s->redis;
    my $key = "lg:{ws:$w->{id}}:lr:$id";
    my %h = @{ $r->hgetall($key) };
    $r->del($key);
    $r->set($key, 'x');

    my $tx = $l->get($w, $id);
    # no retry mends a key of another type: 500, no Retry-After (a 503
    # told the client to retry for ever)
    $l->error_is($tx, 500, 'INTERNAL_ERROR', 'HGETALL on a string');
    is($tx->res->headers->header('Retry-After'), undef, 'no Retry-After');
    my $rid = $tx->res->headers->header('X-Request-Id');
    like($s->error_log,
         qr/linegate:\ redis\ error:\ "WRONGTYPE[^"]*"\ on\ \w+\ of
            \ keys?\ [^(]*\Qlg:{ws:*}:lr:*\E.*\Q$rid\E/x,
         'the error log says which command failed, on which kind of key');
    $r->del($key);
    $r->hset($key, %h);
    is_deeply($l->answer($l->get($w, $id), 200, 'fixed'), $good,
              'the same answer as before');
};

subtest 'hot GET after SCRIPT FLUSH: answered, and the script loaded again'
    => sub {
    my $r = $s->redis;
    like(qx{$redis_cli SCRIPT FLUSH}, qr/^OK/, 'scripts flushed');
    # the workspace's TAT 10 s ahead: each admission moves it by T
    # (60 s / 100000 = 600 us), nothing expires meanwhile
    my $gcra = "lg:{ws:$w->{id}}:gcra";
    my ($sec, $usec) = $r->time;
    my $tat = $sec * 1_000_000 + $usec + 10_000_000;
    $r->set($gcra, $tat, 'PX', 70_000);
    for my $i (1 .. 4) {
        is_deeply($l->answer($l->get($w, $id), 200, "GET $i"), $good,
                  "GET $i: the same answer");
    }
    # each GET admitted once, the first too: the pipeline failed on
    # NOSCRIPT, before the rate admitted it, and the script that
    # answered it (lr_get, sent again whole) went through the same GCRA
    is($r->get($gcra) - $tat, 4 * 600, 'every GET counted once');
    my ($cmds) = $s->redis_traffic(sub { $l->get($w, $id) for 1 .. 4 });
    is(scalar(grep /"EVAL"/i, @$cmds), 0, 'then the pipeline again')
        or diag "@$cmds";
};

subtest 'hot GET: Redis hangs, its replies come late' => sub {
    plan skip_all => 'pauses and kills the one Redis: on a cluster, '
        . 't/037 pauses and kills a master' if $s->topology eq 'cluster';
    like(qx{$redis_cli CLIENT PAUSE 1200}, qr/^OK/, 'Redis paused');
    my ($secs, $tx) = timed { $l->get($w, $id) };
    $l->error_is($tx, 503, 'STORE_UNAVAILABLE', 'Redis paused');
    cmp_ok($secs, '<', 1.1, 'answered at the command timeout');

    # the late replies are dropped, not handed to later requests
    sleep 1.3;
    answers_again('late replies');
};

subtest 'hot GET: Redis dies with the pipeline in flight' => sub {
    plan skip_all => 'pauses and kills the one Redis: on a cluster, '
        . 't/037 pauses and kills a master' if $s->topology eq 'cluster';
    # Redis holds the GET's commands unanswered, then is killed
    like(qx{$redis_cli CLIENT PAUSE 2000}, qr/^OK/, 'Redis paused');

    my ($tx, $t0, $secs);
    $t0 = Time::HiRes::time();
    $s->ua->get($s->url("/api/line-requests/$id") =>
                {Authorization => "Bearer $w->{key}"} => sub {
        (undef, $tx) = @_;
        $secs = Time::HiRes::time() - $t0;
        Mojo::IOLoop->stop;
    });
    Mojo::IOLoop->timer(0.15 => sub { kill 'KILL', $s->{pids}{redis} });
    Mojo::IOLoop->start;

    $l->error_is($tx, 503, 'STORE_UNAVAILABLE', 'connection lost');
    cmp_ok($secs, '<', 0.45, 'at once, not at the command timeout');
    like($s->error_log, qr/redis connection lost with a command in flight/,
         'the error log says the connection was lost');

    $s->stop_redis;
    my $mark = length $s->error_log;
    $s->start_redis;
    ok($s->wait_redis_connected($mark, 30), 'the workers reconnect');
    $w = $l->workspace('org_store_pipe');
    $id = $l->created($w);
    $l->get($w, $id) for 1 .. 4;
    answers_again('Redis restarted');
};

# the one Redis down and back (a cluster's masters: t/037)
if ($s->topology eq 'cluster') {
    done_testing;
    exit 0;
}

$w = $l->workspace('org_store');
$id = $l->created($w);
($pending) = $l->awaiting($w);

$s->stop_redis;

for my $c (@calls) {
    my ($name, $call) = @$c;
    my $tx = $call->();
    my $b = $l->error_is($tx, 503, 'STORE_UNAVAILABLE', "$name, Redis down");
    is($tx->res->headers->header('Retry-After'), '1', "$name: Retry-After");
}

my $offset = length $s->error_log;
$s->start_redis;
ok($s->wait_redis_connected($offset, 30), 'the workers reconnect');

# the Redis of the test was empty again: set the workspace up anew
my $again = $l->workspace('org_store_2');
$l->answer($l->list($again), 200, 'answers again');
$l->answer($l->create($again, body()), 201, 'creates again');

done_testing;
