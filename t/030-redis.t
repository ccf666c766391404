# Redis down or too slow: 503 with Retry-After, quickly, in the API's
# format; the stack recovers by itself when Redis is back. Last, the
# harness's own Redis client refusing an undef argument.
use strict;
use warnings;
use lib 't/lib';

use Test::More;
use LG::Stack;
use LG::Test;

my $s = LG::Stack->new(stub => 0)->start;

# new connections every time, so both workers get calls
$s->ua->max_connections(0);

sub unavailable_ok {
    my ($tx, $secs, $name) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;

    json_error_is($tx, 503, 'STORE_UNAVAILABLE', $name);
    like($tx->res->headers->header('Retry-After') // '', qr/^[1-9]\d*$/,
         "$name: Retry-After");
    cmp_ok($secs, '<', 2, "$name: answered in under 2 s");
}

# poll an operator call until it succeeds; seconds it took, or undef
sub recovers_within {
    my ($limit) = @_;
    my $t0 = Time::HiRes::time();
    while (Time::HiRes::time() - $t0 < $limit) {
        my $tx = $s->op(GET => '/inventory');
        return Time::HiRes::time() - $t0 if $tx->res->code == 200;
        select undef, undef, undef, 0.05;
    }
    return undef;
}

answer_is($s->op(GET => '/inventory'), 200, 'Redis up');

subtest 'Redis stopped' => sub {
    my $mark = length $s->error_log;
    $s->stop_redis;

    my ($secs, $tx) = timed { $s->op(GET => '/inventory') };
    unavailable_ok($tx, $secs, 'a read');

    ($secs, $tx) = timed {
        $s->op(PUT => '/workspaces/org_down', {plan => 'mini'})
    };
    unavailable_ok($tx, $secs, 'a write');

    ($secs, $tx) = timed { $s->op(POST => '/workspaces/org_down/keys') };
    unavailable_ok($tx, $secs, 'a key');
    unlike($tx->res->body, qr/tuco_/, 'no key shown when none was stored');

    like(substr($s->error_log, $mark), qr/linegate: redis/,
         'the error log says redis');
};

subtest 'Redis back on the same port' => sub {
    my $mark = length $s->error_log;
    $s->start_redis;

    my $secs = recovers_within(30);
    ok(defined $secs, 'a call succeeds again without reloading nginx');
    diag(sprintf 'recovered in %.2f s', $secs) if defined $secs;

    ok($s->wait_redis_connected($mark, 30), 'every worker reconnected');
    my @codes = map { $s->op(GET => '/inventory')->res->code } 1 .. 10;
    is_deeply(\@codes, [(200) x 10], 'ten calls on new connections');

    my $body = answer_is($s->op(PUT => '/workspaces/org_back',
                                {plan => 'mini'}),
                         200, 'a write');
    is($s->redis->hget('lg:{ws:org_back}', 'plan'), 'mini', 'written');
};

subtest 'Redis too slow' => sub {
    my $mark = length $s->error_log;

    # every client of Redis waits 2 s: the command timeout (500ms) answers
    my $ok = qx{redis-cli -p @{[ $s->redis_port ]} CLIENT PAUSE 2000};
    $ok =~ /^OK/ or BAIL_OUT('redis-cli CLIENT PAUSE failed');

    my ($secs, $tx) = timed { $s->op(GET => '/inventory') };
    unavailable_ok($tx, $secs, 'a call while Redis hangs');
    cmp_ok($secs, '<', 1.5, 'within the command timeout');
    like(substr($s->error_log, $mark), qr/linegate: redis command timed out/,
         'the error log says the command timed out');

    $secs = recovers_within(30);
    ok(defined $secs, 'the stack recovers after the pause');

    # a PING unanswered for a whole keepalive interval (1s) drops the
    # connection: each worker reconnects on its own
    ok($s->wait_redis_connected($mark, 30), 'every worker reconnected');
    my @codes = map { $s->op(GET => '/inventory')->res->code } 1 .. 10;
    is_deeply(\@codes, [(200) x 10], 'ten calls after the pause');

    # one drop, one line: the worker closing the connection is not told
    # again by hiredis's disconnect callback ("redis disconnected")
    my $log = substr($s->error_log, $mark);
    my $drops = () = $log =~ /linegate: redis keepalive PING unanswered, /g;
    my $lines = () =
        $log =~ /linegate: redis (?:disconnected|.*, reconnecting)/g;
    cmp_ok($drops, '>=', 1, "the keepalive dropped the connection ($drops)");
    is($lines, $drops, 'one error-log line a drop')
        or diag(join "\n", grep { /linegate: redis/ } split /\n/, $log);
};

# The harness's own client (LG::Redis): a command with an undef argument
# dies naming it, unsent. Redis.pm sent it as a null bulk, Redis answered
# "ERR Protocol error: invalid bulk length" and closed the connection,
# and every later command of the file failed (t/235, a setup step that
# had failed, its id undef). t/037 checks the cluster client.
subtest 'the harness client: an undef argument is not sent' => sub {
    my $r = $s->redis;
    ok(!eval { $r->set('lg:t:undef', undef); 1 }, 'SET k undef dies');
    like($@, qr/^\[set\] argument 2 is undef: not sent .* at \Q$0\E line/,
         'naming the command, the argument and the caller');
    unlike($@, qr/Protocol error/, 'not sent to Redis');
    is(eval { $r->ping }, 'PONG', 'the connection still serves');
    ok(!$r->exists('lg:t:undef'), 'nothing written');
};

done_testing;
